//! The install section of the index: which cluster engine `install` runs and the hook
//! scripts it runs before and after. The builder resolves everything the spec leaves out
//! (which payload file is `containerd`, which is `runc` ...), so a reader only checks that
//! every path named is a file of the payload and every hook is a stored blob; what the
//! engine does with them is the stub's business.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;
use crate::entry::{Entry, EntryKind};

/// What `install` does beyond files, registry and mirror config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallConfig {
    /// The cluster engine.
    #[serde(default)]
    pub engine: Engine,
    /// Hook scripts, at most one per stage, in stage order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<Hook>,
}

/// The cluster engine `install` brings up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Engine {
    /// Files, registry and mirror config only.
    #[default]
    None,
    /// containerd and runc from the payload, started with a private config.
    Containerd(ContainerdEngine),
    /// The k3s binary from the payload, `registries.yaml`, auto-deployed manifests.
    K3s(K3sEngine),
    /// `kubeadm init` over the containerd engine, with kubelet and kubectl from the payload.
    Kubeadm(KubeadmEngine),
}

impl Engine {
    /// `none`, `containerd`, `k3s` or `kubeadm`.
    pub fn kind(&self) -> &'static str {
        match self {
            Engine::None => "none",
            Engine::Containerd(_) => "containerd",
            Engine::K3s(_) => "k3s",
            Engine::Kubeadm(_) => "kubeadm",
        }
    }
}

/// The `containerd` engine: payload paths of its programs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerdEngine {
    /// The `containerd` daemon.
    pub containerd: String,
    /// `containerd-shim-runc-v2` (containerd finds it in `PATH`).
    pub shim: String,
    /// `runc` (found in `PATH` by the shim).
    pub runc: String,
    /// `ctr`, used to pre-pull the captured images.
    pub ctr: String,
    /// The containerd namespace images are pulled into (`k8s.io`: the kubelet's).
    pub namespace: String,
    /// Pull every captured image once containerd answers.
    pub pull: bool,
    /// The CRI plugin's `sandbox_image` (the pause image every pod runs), one of the
    /// payload's images; absent: containerd's own default (payloads written before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_image: Option<String>,
}

/// The `k3s` engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K3sEngine {
    /// The `k3s` binary.
    pub binary: String,
    /// A payload folder whose files are copied into k3s's auto-deploy folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifests: Option<String>,
    /// Extra arguments for `k3s server`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// How long to wait for the node to be Ready, in seconds.
    pub ready_timeout_secs: u64,
}

/// The `kubeadm` engine: the containerd engine first (the CRI runtime the kubelet talks
/// to), then the kubelet as a service and `kubeadm init` with the config below.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeadmEngine {
    /// The containerd engine underneath (its namespace is the kubelet's, `k8s.io`).
    pub containerd: ContainerdEngine,
    /// The `kubeadm` binary.
    pub kubeadm: String,
    /// The `kubelet` binary.
    pub kubelet: String,
    /// The `kubectl` binary (the readiness check).
    pub kubectl: String,
    /// The Kubernetes version `kubeadm init` deploys (`v1.31.4`).
    pub kubernetes_version: String,
    /// The user's kubeadm config (YAML documents), merged with ours at install; absent: a
    /// minimal InitConfiguration and ClusterConfiguration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// The control-plane images (all among the payload's images).
    pub images: Vec<String>,
    /// How long to wait for the node to be Ready, in seconds.
    pub ready_timeout_secs: u64,
}

/// The largest kubeadm config an install section may carry.
pub const MAX_KUBEADM_CONFIG: usize = 1 << 20;

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookStage {
    /// After preflight, before anything changes.
    PreInstall,
    /// After the engine is up.
    PostInstall,
}

impl HookStage {
    /// `pre-install` or `post-install`.
    pub fn as_str(self) -> &'static str {
        match self {
            HookStage::PreInstall => "pre-install",
            HookStage::PostInstall => "post-install",
        }
    }
}

impl fmt::Display for HookStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A hook script, stored as a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    /// When it runs.
    pub stage: HookStage,
    /// Where it came from (the spec's path), for messages.
    pub source: String,
    /// Its content: a stored blob.
    pub digest: Sha256Digest,
    /// Its size in bytes (at least 1).
    pub size: u64,
}

/// Which rule of SPEC.md an install section breaks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// A program path that is not a (non-empty) file of the payload.
    #[error("engine {engine}: {role} {path:?} is not a file of the payload")]
    NotAFile {
        /// `containerd` or `k3s`.
        engine: &'static str,
        /// The program's role, such as `runc`.
        role: &'static str,
        /// The path given.
        path: String,
    },
    /// A containerd namespace containerd would refuse.
    #[error("engine containerd: namespace {0:?} is not a containerd namespace")]
    Namespace(String),
    /// A k3s manifests path that is not a folder of the payload.
    #[error("engine k3s: manifests {0:?} is not a folder of the payload")]
    ManifestsNotAFolder(String),
    /// A k3s argument with a NUL byte.
    #[error("engine k3s: an argument contains NUL")]
    ArgumentHasNul,
    /// A readiness timeout of zero.
    #[error("engine {0}: ready_timeout_secs is 0")]
    ZeroTimeout(&'static str),
    /// A Kubernetes version that is not `vMAJOR.MINOR.PATCH[-pre]`.
    #[error("engine kubeadm: kubernetes_version {0:?} is not a version like v1.31.4")]
    KubernetesVersion(String),
    /// A kubeadm config over [`MAX_KUBEADM_CONFIG`] bytes or with NUL.
    #[error("engine kubeadm: the config is larger than {MAX_KUBEADM_CONFIG} bytes or holds NUL")]
    KubeadmConfig,
    /// Hooks out of stage order, or two for one stage.
    #[error("hooks are not in stage order or a stage has two")]
    HookOrder,
    /// A hook whose blob is not stored with its size.
    #[error("hook {stage} ({script}) names a blob {digest} of {size} bytes that is not stored")]
    HookBlobMissing {
        /// The hook's stage.
        stage: HookStage,
        /// Where the script came from.
        script: String,
        /// The digest it names.
        digest: Sha256Digest,
        /// The size it names.
        size: u64,
    },
    /// A hook source name that is too long or holds NUL.
    #[error("hook {0} has an invalid source name")]
    HookSource(HookStage),
}

/// Checks the install section against the entries and stored blobs.
pub(crate) fn validate(
    install: &InstallConfig,
    entries: &[Entry],
    blob_sizes: &HashMap<Sha256Digest, u64>,
) -> Result<(), InstallError> {
    let kind_of = |path: &str| {
        entries
            .binary_search_by(|e| e.path.as_str().cmp(path))
            .ok()
            .map(|i| &entries[i].kind)
    };
    let file = |role: &'static str, path: &str| match kind_of(path) {
        Some(EntryKind::File { size, .. }) if *size > 0 => Ok(()),
        Some(EntryKind::Hardlink { .. }) => Ok(()),
        _ => Err(InstallError::NotAFile {
            engine: install.engine.kind(),
            role,
            path: path.to_owned(),
        }),
    };
    match &install.engine {
        Engine::None => {}
        Engine::Containerd(c) => validate_containerd(c, file)?,
        Engine::K3s(k) => {
            file("binary", &k.binary)?;
            if let Some(m) = &k.manifests {
                if !matches!(kind_of(m), Some(EntryKind::Dir)) {
                    return Err(InstallError::ManifestsNotAFolder(m.clone()));
                }
            }
            if k.args.iter().any(|a| a.contains('\0')) {
                return Err(InstallError::ArgumentHasNul);
            }
            if k.ready_timeout_secs == 0 {
                return Err(InstallError::ZeroTimeout("k3s"));
            }
        }
        Engine::Kubeadm(k) => {
            validate_containerd(&k.containerd, file)?;
            for (role, path) in [
                ("kubeadm", &k.kubeadm),
                ("kubelet", &k.kubelet),
                ("kubectl", &k.kubectl),
            ] {
                file(role, path)?;
            }
            if !is_kubernetes_version(&k.kubernetes_version) {
                return Err(InstallError::KubernetesVersion(
                    k.kubernetes_version.clone(),
                ));
            }
            if k.config
                .as_ref()
                .is_some_and(|c| c.len() > MAX_KUBEADM_CONFIG || c.contains('\0'))
            {
                return Err(InstallError::KubeadmConfig);
            }
            if k.ready_timeout_secs == 0 {
                return Err(InstallError::ZeroTimeout("kubeadm"));
            }
        }
    }
    if install.hooks.windows(2).any(|w| w[0].stage >= w[1].stage) {
        return Err(InstallError::HookOrder);
    }
    for h in &install.hooks {
        if blob_sizes.get(&h.digest) != Some(&h.size) {
            return Err(InstallError::HookBlobMissing {
                stage: h.stage,
                script: h.source.clone(),
                digest: h.digest,
                size: h.size,
            });
        }
        if h.source.len() > 4096 || h.source.contains('\0') {
            return Err(InstallError::HookSource(h.stage));
        }
    }
    Ok(())
}

/// Checks the containerd engine's programs (`file` checks one) and namespace.
fn validate_containerd(
    c: &ContainerdEngine,
    file: impl Fn(&'static str, &str) -> Result<(), InstallError>,
) -> Result<(), InstallError> {
    for (role, path) in [
        ("containerd", &c.containerd),
        ("shim", &c.shim),
        ("runc", &c.runc),
        ("ctr", &c.ctr),
    ] {
        file(role, path)?;
    }
    let ok = !c.namespace.is_empty()
        && c.namespace.len() <= 76
        && c.namespace
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(InstallError::Namespace(c.namespace.clone()));
    }
    Ok(())
}

/// True for `vMAJOR.MINOR.PATCH` with an optional `-pre` or `+build` suffix of
/// `[0-9A-Za-z.-]` (Kubernetes release names: `v1.31.4`, `v1.32.0-rc.1`).
pub fn is_kubernetes_version(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let (core, suffix) = match rest.find(['-', '+']) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, "x"),
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 6 && p.bytes().all(|b| b.is_ascii_digit()))
        && !suffix.is_empty()
        && suffix.len() <= 64
        && suffix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> Entry {
        Entry {
            path: path.to_owned().try_into().unwrap(),
            mode: 0o755,
            kind: EntryKind::File {
                size: 3,
                digest: Sha256Digest::of(b"abc"),
            },
        }
    }

    fn containerd(runc: &str) -> InstallConfig {
        InstallConfig {
            engine: Engine::Containerd(ContainerdEngine {
                containerd: "containerd".into(),
                shim: "containerd".into(),
                runc: runc.into(),
                ctr: "containerd".into(),
                namespace: "k8s.io".into(),
                pull: true,
                sandbox_image: None,
            }),
            hooks: vec![],
        }
    }

    #[test]
    fn engine_paths_must_be_payload_files_and_hooks_stored_blobs() {
        let entries = vec![file("containerd")];
        let digest = Sha256Digest::of(b"#!/bin/sh\n");
        let sizes = HashMap::from([(digest, 10)]);
        assert!(validate(&containerd("containerd"), &entries, &sizes).is_ok());
        let err = validate(&containerd("../runc"), &entries, &sizes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "engine containerd: runc \"../runc\" is not a file of the payload"
        );

        let hook = |stage, size| Hook {
            stage,
            source: "pre.sh".into(),
            digest,
            size,
        };
        let mut install = InstallConfig {
            hooks: vec![hook(HookStage::PreInstall, 10)],
            ..InstallConfig::default()
        };
        assert!(validate(&install, &entries, &sizes).is_ok());
        install.hooks = vec![hook(HookStage::PreInstall, 11 << 30)];
        assert!(validate(&install, &entries, &sizes)
            .unwrap_err()
            .to_string()
            .contains("that is not stored"));
        install.hooks = vec![
            hook(HookStage::PostInstall, 10),
            hook(HookStage::PreInstall, 10),
        ];
        assert!(validate(&install, &entries, &sizes)
            .unwrap_err()
            .to_string()
            .contains("stage order"));
    }

    #[test]
    fn a_kubeadm_engine_needs_its_programs_and_a_kubernetes_version() {
        let entries = vec![file("containerd"), file("kubeadm"), file("kubelet")];
        let Engine::Containerd(c) = containerd("containerd").engine else {
            unreachable!()
        };
        let mut k = KubeadmEngine {
            containerd: c,
            kubeadm: "kubeadm".into(),
            kubelet: "kubelet".into(),
            kubectl: "kubelet".into(),
            kubernetes_version: "v1.31.4".into(),
            config: Some("kind: InitConfiguration\n".into()),
            images: vec!["registry.k8s.io/pause:3.10".into()],
            ready_timeout_secs: 300,
        };
        let install = |k: &KubeadmEngine| InstallConfig {
            engine: Engine::Kubeadm(k.clone()),
            hooks: vec![],
        };
        let sizes = HashMap::new();
        assert!(validate(&install(&k), &entries, &sizes).is_ok());
        k.kubectl = "kubectl".into();
        assert_eq!(
            validate(&install(&k), &entries, &sizes)
                .unwrap_err()
                .to_string(),
            "engine kubeadm: kubectl \"kubectl\" is not a file of the payload"
        );
        k.kubectl = "kubelet".into();
        k.kubernetes_version = "1.31".into();
        assert!(matches!(
            validate(&install(&k), &entries, &sizes),
            Err(InstallError::KubernetesVersion(_))
        ));
        let json = serde_json::to_string(&install(&k)).unwrap();
        assert!(json.contains("\"kind\":\"kubeadm\""), "{json}");
    }

    #[test]
    fn kubernetes_versions_are_release_names() {
        for ok in ["v1.31.4", "v1.32.0-rc.1", "v1.30.4+k3s1"] {
            assert!(is_kubernetes_version(ok), "{ok}");
        }
        for bad in [
            "1.31.4",
            "v1.31",
            "v1.31.x",
            "v1.31.4-",
            "v1..4",
            "v1.31.4 x",
        ] {
            assert!(!is_kubernetes_version(bad), "{bad}");
        }
    }

    #[test]
    fn the_section_round_trips_through_json_with_kebab_stages() {
        let mut install = containerd("containerd");
        install.hooks.push(Hook {
            stage: HookStage::PostInstall,
            source: "post.sh".into(),
            digest: Sha256Digest::of(b"x"),
            size: 1,
        });
        let json = serde_json::to_string(&install).unwrap();
        assert!(json.contains("\"kind\":\"containerd\""), "{json}");
        assert!(json.contains("\"stage\":\"post-install\""), "{json}");
        assert_eq!(
            serde_json::from_str::<InstallConfig>(&json).unwrap(),
            install
        );
    }
}
