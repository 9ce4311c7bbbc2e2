//! Turns the spec's `engine:` and `hooks:` into the payload's install section: every program
//! an engine runs is looked up among the installer's files now, at build time, so a missing
//! `runc` fails the build on the release engineer's machine instead of the install in the
//! field.

use std::fs;
use std::path::{Path, PathBuf};

use airlock_payload::{
    BlobInput, ContainerdEngine, Engine, Entry, EntryKind, Hook, HookStage, InstallConfig,
    K3sEngine, KubeadmEngine, Sha256Digest,
};

use crate::spec::{ContainerdSpec, DestPath, EngineSpec, HooksSpec};

/// Why the install section cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A program the engine runs is not among the files.
    #[error("engine {engine}: {what}")]
    Engine {
        /// `containerd`, `k3s` or `kubeadm`.
        engine: &'static str,
        /// What is missing or ambiguous, and what to do.
        what: String,
    },
    /// The kubeadm engine's config or version is not one kubeadm takes.
    #[error(transparent)]
    Kubeadm(#[from] crate::kubeadm::Error),
    /// A hook script could not be read or is empty.
    #[error("hook {stage} ({path}): {what}")]
    Hook {
        /// The stage.
        stage: HookStage,
        /// The script.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

/// The programs of the containerd engine, by the name containerd looks them up with.
pub const CONTAINERD_PROGRAMS: [&str; 4] = ["containerd", "containerd-shim-runc-v2", "runc", "ctr"];

/// Builds the install section for `engine` and `hooks` over the payload's `entries`
/// (sorted by path); hook scripts are added to `blobs` unless their content is stored
/// already.
pub fn install_config(
    engine: &EngineSpec,
    hooks: &HooksSpec,
    base_dir: &Path,
    entries: &[Entry],
    blobs: &mut Vec<BlobInput>,
) -> Result<InstallConfig, Error> {
    let engine = match engine {
        EngineSpec::None => Engine::None,
        EngineSpec::Containerd(c) => {
            Engine::Containerd(containerd_engine(c, entries, "containerd")?)
        }
        EngineSpec::K3s(k) => {
            let err = |what: String| Error::Engine {
                engine: "k3s",
                what,
            };
            let binary = program(
                entries,
                k.binary.as_ref(),
                "k3s",
                "binary",
                "k3s",
                "/usr/local/bin",
            )?;
            let manifests = match &k.manifests {
                None => None,
                Some(m) => Some(dir_entry(entries, m).ok_or_else(|| {
                    err(format!("manifests {m} is not a folder among the files"))
                })?),
            };
            if k.ready_timeout == 0 {
                return Err(err("ready_timeout must be at least 1 second".into()));
            }
            Engine::K3s(K3sEngine {
                binary,
                manifests,
                args: k.args.clone(),
                ready_timeout_secs: k.ready_timeout,
            })
        }
        EngineSpec::Kubeadm(k) => {
            let err = |what: String| Error::Engine {
                engine: "kubeadm",
                what,
            };
            if k.containerd.namespace != "k8s.io" {
                return Err(err(format!(
                    "containerd namespace {:?}: the kubelet uses k8s.io only",
                    k.containerd.namespace
                )));
            }
            if k.ready_timeout == 0 {
                return Err(err("ready_timeout must be at least 1 second".into()));
            }
            if !airlock_payload::is_kubernetes_version(&k.kubernetes_version) {
                return Err(crate::kubeadm::Error::Version(k.kubernetes_version.clone()).into());
            }
            let containerd = containerd_engine(&k.containerd, entries, "kubeadm")?;
            let find = |name: &'static str, explicit: Option<&DestPath>| {
                program(entries, explicit, name, name, "kubeadm", "/usr/bin")
            };
            let kubeadm = find("kubeadm", k.kubeadm.as_ref())?;
            let kubelet = find("kubelet", k.kubelet.as_ref())?;
            let kubectl = find("kubectl", k.kubectl.as_ref())?;
            let config = match &k.config {
                Some(path) => Some(crate::kubeadm::check_config(
                    path.as_path(),
                    &k.kubernetes_version,
                )?),
                None => None,
            };
            Engine::Kubeadm(KubeadmEngine {
                containerd,
                kubeadm,
                kubelet,
                kubectl,
                kubernetes_version: k.kubernetes_version.clone(),
                config,
                // Filled in by the build once it knows them (`crate::kubeadm`).
                images: Vec::new(),
                ready_timeout_secs: k.ready_timeout,
            })
        }
    };
    let mut out = Vec::new();
    for (stage, path) in [
        (HookStage::PreInstall, &hooks.pre_install),
        (HookStage::PostInstall, &hooks.post_install),
    ] {
        if let Some(path) = path {
            out.push(hook(stage, path.as_path(), base_dir, blobs)?);
        }
    }
    Ok(InstallConfig { engine, hooks: out })
}

/// The containerd engine's programs, found in `c.bin_dir` or beside the only `containerd`;
/// errors name `engine` (`containerd`, or `kubeadm` over it).
fn containerd_engine(
    c: &ContainerdSpec,
    entries: &[Entry],
    engine: &'static str,
) -> Result<ContainerdEngine, Error> {
    let err = |what: String| Error::Engine { engine, what };
    let dir = match &c.bin_dir {
        Some(d) => d.as_str().to_owned(),
        None => {
            let found = files_named(entries, "containerd");
            match found.as_slice() {
                [one] => parent(one).to_owned(),
                [] => {
                    return Err(err("the files hold no `containerd`; add containerd, \
                         containerd-shim-runc-v2, runc and ctr to `files` \
                         (e.g. dest: /usr/local/bin/containerd)"
                        .into()))
                }
                many => {
                    return Err(err(format!(
                        "several files are named `containerd` ({}); say which folder \
                         with `bin_dir`",
                        many.join(", ")
                    )))
                }
            }
        }
    };
    let mut paths = CONTAINERD_PROGRAMS.iter().map(|name| {
        let path = join(&dir, name);
        if is_file(entries, &path) {
            Ok(path)
        } else {
            Err(err(format!(
                "/{path} is not among the files; containerd needs {} in one folder",
                CONTAINERD_PROGRAMS.join(", ")
            )))
        }
    });
    let mut next = || paths.next().expect("four programs");
    Ok(ContainerdEngine {
        containerd: next()?,
        shim: next()?,
        runc: next()?,
        ctr: next()?,
        namespace: c.namespace.clone(),
        pull: c.pull,
        sandbox_image: c.sandbox_image.as_ref().map(ToString::to_string),
    })
}

/// The payload path of program `name`: `explicit` (the spec's `field`) when it is among the
/// files, else the only file so named; errors name `engine` and suggest `example_dir`.
fn program(
    entries: &[Entry],
    explicit: Option<&DestPath>,
    name: &str,
    field: &str,
    engine: &'static str,
    example_dir: &str,
) -> Result<String, Error> {
    let err = |what: String| Error::Engine { engine, what };
    match explicit {
        Some(b) if is_file(entries, b.as_str()) => Ok(b.as_str().to_owned()),
        Some(b) => Err(err(format!("{field} {b} is not among the files"))),
        None => match files_named(entries, name).as_slice() {
            [one] => Ok((*one).to_owned()),
            [] => Err(err(format!(
                "the files hold no `{name}` binary; add it to `files` (e.g. src: bin/{name}, \
                 dest: {example_dir}/{name}, mode: \"0755\")"
            ))),
            many => Err(err(format!(
                "several files are named `{name}` ({}); say which with `{field}`",
                many.join(", ")
            ))),
        },
    }
}

fn hook(
    stage: HookStage,
    path: &Path,
    base_dir: &Path,
    blobs: &mut Vec<BlobInput>,
) -> Result<Hook, Error> {
    let err = |what: String| Error::Hook {
        stage,
        path: path.to_owned(),
        what,
    };
    let bytes = fs::read(path).map_err(|e| err(format!("failed to read it: {e}")))?;
    if bytes.is_empty() {
        return Err(err("it is empty".into()));
    }
    if !bytes.starts_with(b"#!") {
        return Err(err(
            "it does not start with `#!` (hooks are executed directly; add e.g. #!/bin/sh)".into(),
        ));
    }
    let digest = Sha256Digest::of(&bytes);
    let size = bytes.len() as u64;
    if !blobs.iter().any(|b| b.digest == digest) {
        blobs.push(BlobInput {
            digest,
            size,
            precompressed: false,
            name: format!("hook {stage} ({})", path.display()),
            source: Box::new(bytes),
        });
    }
    // As the spec names it, not where the build machine keeps it.
    let source = path.strip_prefix(base_dir).unwrap_or(path);
    Ok(Hook {
        stage,
        source: source.display().to_string(),
        digest,
        size,
    })
}

fn parent(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn lookup<'e>(entries: &'e [Entry], path: &str) -> Option<&'e Entry> {
    entries
        .binary_search_by(|e| e.path.as_str().cmp(path))
        .ok()
        .map(|i| &entries[i])
}

fn is_file(entries: &[Entry], path: &str) -> bool {
    lookup(entries, path).is_some_and(|e| match e.kind {
        EntryKind::File { size, .. } => size > 0,
        EntryKind::Hardlink { .. } => true,
        _ => false,
    })
}

fn dir_entry(entries: &[Entry], dir: &DestPath) -> Option<String> {
    lookup(entries, dir.as_str())
        .filter(|e| matches!(e.kind, EntryKind::Dir))
        .map(|e| e.path.as_str().to_owned())
}

fn files_named<'e>(entries: &'e [Entry], name: &str) -> Vec<&'e str> {
    entries
        .iter()
        .filter(|e| e.path.file_name() == name && is_file(entries, e.path.as_str()))
        .map(|e| e.path.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ContainerdSpec, K3sSpec};

    fn entries(files: &[&str]) -> Vec<Entry> {
        let mut paths: Vec<String> = Vec::new();
        for f in files {
            let mut acc = String::new();
            for part in f.split('/') {
                if !acc.is_empty() {
                    acc.push('/');
                }
                acc.push_str(part);
                if !paths.contains(&acc) {
                    paths.push(acc.clone());
                }
            }
        }
        paths.sort();
        paths
            .into_iter()
            .map(|p| Entry {
                kind: if files.contains(&p.as_str()) {
                    EntryKind::File {
                        size: 3,
                        digest: Sha256Digest::of(b"abc"),
                    }
                } else {
                    EntryKind::Dir
                },
                path: p.try_into().unwrap(),
                mode: 0o755,
            })
            .collect()
    }

    const BIN: [&str; 4] = [
        "usr/bin/containerd",
        "usr/bin/containerd-shim-runc-v2",
        "usr/bin/ctr",
        "usr/bin/runc",
    ];

    #[test]
    fn containerd_programs_are_found_beside_containerd() {
        let e = entries(&BIN);
        let c = install_config(
            &EngineSpec::Containerd(ContainerdSpec::default()),
            &HooksSpec::default(),
            Path::new("/"),
            &e,
            &mut Vec::new(),
        )
        .unwrap();
        let Engine::Containerd(c) = c.engine else {
            panic!("{c:?}")
        };
        assert_eq!(c.runc, "usr/bin/runc");
        assert_eq!(c.shim, "usr/bin/containerd-shim-runc-v2");
        assert_eq!(c.namespace, "k8s.io");
    }

    #[test]
    fn a_missing_runc_fails_the_build_and_names_it() {
        let e = entries(&BIN[..3]);
        let err = install_config(
            &EngineSpec::Containerd(ContainerdSpec::default()),
            &HooksSpec::default(),
            Path::new("/"),
            &e,
            &mut Vec::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("engine containerd: /usr/bin/runc is not among the files"),
            "{err}"
        );
    }

    #[test]
    fn a_kubeadm_payload_missing_kubelet_fails_the_build_naming_it() {
        let mut files = BIN.to_vec();
        files.extend(["usr/bin/kubeadm", "usr/bin/kubectl"]);
        let e = entries(&files);
        let spec = EngineSpec::Kubeadm(crate::spec::KubeadmSpec {
            kubernetes_version: "v1.31.4".into(),
            config: None,
            images: None,
            kubeadm: None,
            kubelet: None,
            kubectl: None,
            containerd: ContainerdSpec::default(),
            ready_timeout: 300,
        });
        let err = install_config(
            &spec,
            &HooksSpec::default(),
            Path::new("/"),
            &e,
            &mut Vec::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("engine kubeadm: the files hold no `kubelet` binary"),
            "{err}"
        );
        files.push("usr/bin/kubelet");
        let e = entries(&files);
        let c = install_config(
            &spec,
            &HooksSpec::default(),
            Path::new("/"),
            &e,
            &mut Vec::new(),
        )
        .unwrap();
        let Engine::Kubeadm(k) = c.engine else {
            panic!("{c:?}")
        };
        assert_eq!(k.kubelet, "usr/bin/kubelet");
        assert_eq!(k.containerd.runc, "usr/bin/runc");
        assert_eq!(k.kubernetes_version, "v1.31.4");
    }

    #[test]
    fn two_k3s_binaries_need_an_explicit_choice() {
        let e = entries(&["a/k3s", "b/k3s"]);
        let spec = EngineSpec::K3s(K3sSpec::default());
        let err = install_config(
            &spec,
            &HooksSpec::default(),
            Path::new("/"),
            &e,
            &mut Vec::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("several files are named `k3s` (a/k3s, b/k3s)"),
            "{err}"
        );
        let spec = EngineSpec::K3s(K3sSpec {
            binary: Some("/b/k3s".parse().unwrap()),
            manifests: Some("/a".parse().unwrap()),
            ..K3sSpec::default()
        });
        let c = install_config(
            &spec,
            &HooksSpec::default(),
            Path::new("/"),
            &e,
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(
            c.engine,
            Engine::K3s(K3sEngine {
                binary: "b/k3s".into(),
                manifests: Some("a".into()),
                args: vec![],
                ready_timeout_secs: 300
            })
        );
    }
}
