//! The `kubeadm` engine at build time: which control-plane images `kubeadm init` will ask
//! for, and whether the user's kubeadm config is one kubeadm reads.
//!
//! - Images: the payload's own `kubeadm config images list --kubernetes-version V` when it
//!   runs on the build host ([`control_plane_images`]), else the spec's `images:` in the
//!   engine section; the build says which. Each is captured like the sandbox image (taken
//!   from an `images:` entry with the same ref, else pulled), so one that cannot be had
//!   fails the build naming it.
//! - Config: YAML documents of `apiVersion: kubeadm.k8s.io/v1beta3` or `v1beta4` (kinds
//!   `InitConfiguration`, `ClusterConfiguration`, `JoinConfiguration`, ...) or
//!   `kubelet.config.k8s.io/v1beta1` / `kubeproxy.config.k8s.io/v1alpha1` component
//!   configs ([`check_config`]); the install merges our `criSocket` into it.

use std::path::Path;

use serde::Deserialize;
use serde_yaml_ng::Value;

use crate::reference::ImageRef;
use crate::sandbox::run_on_build_host;

/// The kubeadm API versions the config may use (v1beta4 from Kubernetes 1.31).
pub const KUBEADM_API_VERSIONS: [&str; 2] = ["kubeadm.k8s.io/v1beta3", "kubeadm.k8s.io/v1beta4"];

/// Kinds of the kubeadm API.
const KUBEADM_KINDS: [&str; 5] = [
    "InitConfiguration",
    "ClusterConfiguration",
    "JoinConfiguration",
    "ResetConfiguration",
    "UpgradeConfiguration",
];

/// Component configs kubeadm accepts beside its own documents.
const COMPONENT_CONFIGS: [(&str, &str); 2] = [
    ("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration"),
    ("kubeproxy.config.k8s.io/v1alpha1", "KubeProxyConfiguration"),
];

/// Why the kubeadm engine cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// kubeadm does not run here and the spec lists no images.
    #[error(
        "engine kubeadm: failed to list the control-plane images: {kubeadm} does not run on \
         this build host; list them in the engine section (`images: [registry.k8s.io/\
         kube-apiserver:{version}, ...]`, as `kubeadm config images list --kubernetes-version \
         {version}` prints them)",
        kubeadm = kubeadm.display()
    )]
    CannotList {
        /// The kubeadm binary on the build host.
        kubeadm: std::path::PathBuf,
        /// The Kubernetes version.
        version: String,
    },
    /// kubeadm printed a line that is not an image reference.
    #[error("engine kubeadm: `kubeadm config images list` printed {line:?}, not an image reference: {reason}")]
    BadImage {
        /// The line.
        line: String,
        /// Why it does not parse.
        reason: String,
    },
    /// kubeadm printed no image at all.
    #[error(
        "engine kubeadm: `kubeadm config images list --kubernetes-version {0}` printed no image"
    )]
    NoImages(String),
    /// The config file cannot be read.
    #[error("engine kubeadm: failed to read the config {path}", path = path.display())]
    ReadConfig {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not one kubeadm reads.
    #[error("engine kubeadm: config {path}: {what}", path = path.display())]
    Config {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The Kubernetes version is not a release name.
    #[error("engine kubeadm: kubernetes_version {0:?} is not a version like v1.31.4")]
    Version(String),
}

/// The control-plane images and how they were found (for the build's message): the spec's
/// list when it has one, else what the payload's `kubeadm` (at `kubeadm` on the build host)
/// prints for `config images list --kubernetes-version V`.
pub fn control_plane_images(
    kubeadm: &Path,
    version: &str,
    listed: Option<&[ImageRef]>,
) -> Result<(Vec<ImageRef>, String), Error> {
    if !airlock_payload::is_kubernetes_version(version) {
        return Err(Error::Version(version.to_owned()));
    }
    if let Some(list) = listed {
        return Ok((
            list.to_vec(),
            "listed in the spec's engine section".to_owned(),
        ));
    }
    let args = ["config", "images", "list", "--kubernetes-version", version];
    let Some(text) = run_on_build_host(kubeadm, &args) else {
        return Err(Error::CannotList {
            kubeadm: kubeadm.to_owned(),
            version: version.to_owned(),
        });
    };
    let images = parse_images_list(&text)?;
    if images.is_empty() {
        return Err(Error::NoImages(version.to_owned()));
    }
    Ok((
        images,
        format!(
            "read from `kubeadm config images list --kubernetes-version {version}` of {}",
            kubeadm.display()
        ),
    ))
}

/// The images of `kubeadm config images list` output: one reference per non-empty line.
pub fn parse_images_list(text: &str) -> Result<Vec<ImageRef>, Error> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse()
                .map_err(|e: crate::reference::ReferenceError| Error::BadImage {
                    line: l.to_owned(),
                    reason: e.to_string(),
                })
        })
        .collect()
}

/// The pause image among the control-plane images (repository `pause` or `.../pause`): the
/// containerd engine's default `sandbox_image` under kubeadm, so the kubelet and the CRI
/// agree on it.
pub fn pause_image(images: &[ImageRef]) -> Option<&ImageRef> {
    images
        .iter()
        .find(|i| i.repository() == "pause" || i.repository().ends_with("/pause"))
}

/// Reads the kubeadm config at `path` and checks that kubeadm would read it for
/// Kubernetes `version`: every document has a known `apiVersion` and `kind`, at most one of
/// each kind, and a ClusterConfiguration's `kubernetesVersion`, when set, is `version`.
/// Returns its text.
pub fn check_config(path: &Path, version: &str) -> Result<String, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadConfig {
        path: path.to_owned(),
        source,
    })?;
    let err = |what: String| Error::Config {
        path: path.to_owned(),
        what,
    };
    if text.len() > airlock_payload::MAX_KUBEADM_CONFIG {
        return Err(err(format!(
            "it is larger than {} bytes",
            airlock_payload::MAX_KUBEADM_CONFIG
        )));
    }
    let mut kinds: Vec<String> = Vec::new();
    for (n, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
        let value = Value::deserialize(doc)
            .map_err(|e| err(format!("document {} is not YAML: {e}", n + 1)))?;
        if value.is_null() {
            continue;
        }
        let field = |k: &str| value.get(k).and_then(Value::as_str).map(str::to_owned);
        let (Some(api), Some(kind)) = (field("apiVersion"), field("kind")) else {
            return Err(err(format!(
                "document {} has no apiVersion and kind",
                n + 1
            )));
        };
        let known = (KUBEADM_API_VERSIONS.contains(&api.as_str())
            && KUBEADM_KINDS.contains(&kind.as_str()))
            || COMPONENT_CONFIGS.contains(&(api.as_str(), kind.as_str()));
        if !known {
            return Err(err(format!(
                "document {} is {kind} of {api}: kubeadm reads {} ({}) and the kubelet and \
                 kube-proxy component configs",
                n + 1,
                KUBEADM_API_VERSIONS.join(" or "),
                KUBEADM_KINDS.join(", ")
            )));
        }
        if kinds.contains(&kind) {
            return Err(err(format!("it has two {kind} documents")));
        }
        if kind == "ClusterConfiguration" {
            if let Some(v) = value.get("kubernetesVersion") {
                if v.as_str() != Some(version) {
                    return Err(err(format!(
                        "its ClusterConfiguration says kubernetesVersion {}, the engine \
                         section kubernetes_version {version}: make them agree (or drop the \
                         field)",
                        serde_yaml_ng::to_string(v).unwrap_or_default().trim()
                    )));
                }
            }
        }
        kinds.push(kind);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const V131: &str = "registry.k8s.io/kube-apiserver:v1.31.4\nregistry.k8s.io/kube-controller-manager:v1.31.4\nregistry.k8s.io/kube-scheduler:v1.31.4\nregistry.k8s.io/kube-proxy:v1.31.4\nregistry.k8s.io/coredns/coredns:v1.11.3\nregistry.k8s.io/pause:3.10\nregistry.k8s.io/etcd:3.5.15-0\n";

    fn script(dir: &Path, body: &str) -> std::path::PathBuf {
        let bin = dir.join("kubeadm");
        std::fs::write(&bin, body).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        bin
    }

    #[test]
    fn a_kubeadm_that_runs_here_lists_the_images_and_its_pause_becomes_the_sandbox() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = script(
            tmp.path(),
            &format!("#!/bin/sh\ntest \"$*\" = \"config images list --kubernetes-version v1.31.4\" || exit 2\nprintf '{}'\n", V131.replace('\n', "\\n")),
        );
        let (images, how) = control_plane_images(&bin, "v1.31.4", None).unwrap();
        assert_eq!(images.len(), 7);
        assert!(how.contains("kubeadm config images list"), "{how}");
        assert_eq!(
            pause_image(&images).unwrap().to_string(),
            "registry.k8s.io/pause:3.10"
        );
    }

    #[test]
    fn a_kubeadm_that_does_not_run_here_needs_the_list_in_the_spec() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = script(tmp.path(), "#!/bin/sh\nexit 1\n");
        let err = control_plane_images(&bin, "v1.31.4", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not run on this build host"), "{err}");
        let listed: Vec<ImageRef> = vec!["registry.k8s.io/pause:3.10".parse().unwrap()];
        let (images, how) = control_plane_images(&bin, "v1.31.4", Some(&listed)).unwrap();
        assert_eq!(images, listed);
        assert!(how.contains("listed in the spec"), "{how}");
        assert!(matches!(
            control_plane_images(&bin, "1.31", Some(&listed)),
            Err(Error::Version(_))
        ));
    }

    #[test]
    fn a_config_kubeadm_would_refuse_fails_the_build_naming_the_problem() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("kubeadm.yaml");
        let check = |text: &str| {
            std::fs::write(&path, text).unwrap();
            check_config(&path, "v1.31.4").map_err(|e| e.to_string())
        };
        assert!(check("apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\n---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nkubernetesVersion: v1.31.4\n---\napiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: cgroupfs\n").is_ok());
        let e = check("apiVersion: kubeadm.k8s.io/v1beta2\nkind: InitConfiguration\n").unwrap_err();
        assert!(
            e.contains("InitConfiguration of kubeadm.k8s.io/v1beta2"),
            "{e}"
        );
        let e = check("apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\nkubernetesVersion: v1.30.0\n").unwrap_err();
        assert!(e.contains("kubernetesVersion v1.30.0"), "{e}");
        let e = check("kind: InitConfiguration\n").unwrap_err();
        assert!(e.contains("no apiVersion and kind"), "{e}");
        let e = check("a: [\n").unwrap_err();
        assert!(e.contains("is not YAML"), "{e}");
    }
}
