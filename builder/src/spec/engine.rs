//! `engine:` and `hooks:`: what `install` runs besides laying out files and serving images.
//!
//! The spec names the engine and may leave its payload paths out; the builder fills them in
//! from `files` when the installer is built (the builder's `engine` module).

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::values::{DestPath, SourcePath};
use crate::reference::ImageRef;

/// `engine:`: `none`, `containerd`, `k3s`, or a map with `kind` and that engine's options.
///
/// ```yaml
/// engine: containerd
/// engine: {kind: containerd, namespace: k8s.io, pull: true, bin_dir: /usr/local/bin}
/// engine: {kind: k3s, binary: /usr/local/bin/k3s, manifests: /opt/edge/manifests,
///          args: [--disable=traefik], ready_timeout: 300}
/// engine: {kind: kubeadm, kubernetes_version: v1.31.4, config: kubeadm.yaml}
/// ```
///
/// Payload paths left out are found among `files` when the installer is built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum EngineSpec {
    /// Files, registry and mirror config only.
    #[default]
    None,
    /// containerd, containerd-shim-runc-v2, runc and ctr from the payload.
    Containerd(ContainerdSpec),
    /// The k3s binary from the payload.
    K3s(K3sSpec),
    /// kubeadm, kubelet and kubectl from the payload, over the containerd engine.
    Kubeadm(KubeadmSpec),
}

/// Options of the `kubeadm` engine.
///
/// ```yaml
/// engine:
///   kind: kubeadm
///   kubernetes_version: v1.31.4
///   config: kubeadm.yaml            # InitConfiguration/ClusterConfiguration..., optional
///   images: [registry.k8s.io/kube-apiserver:v1.31.4, ...]  # when kubeadm cannot run here
///   containerd: {bin_dir: /usr/local/bin, sandbox_image: registry.k8s.io/pause:3.10}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeadmSpec {
    /// The Kubernetes version `kubeadm init` deploys (`v1.31.4`).
    pub kubernetes_version: String,
    /// The user's kubeadm config file (relative to the spec's folder).
    #[serde(default)]
    pub config: Option<SourcePath>,
    /// The control-plane images, for a kubeadm that cannot run on the build host; default:
    /// what `kubeadm config images list --kubernetes-version V` prints.
    #[serde(default)]
    pub images: Option<Vec<ImageRef>>,
    /// The kubeadm binary among `files`' destinations; default: the only file so named.
    #[serde(default)]
    pub kubeadm: Option<DestPath>,
    /// The kubelet binary; default: the only file named `kubelet`.
    #[serde(default)]
    pub kubelet: Option<DestPath>,
    /// The kubectl binary; default: the only file named `kubectl`.
    #[serde(default)]
    pub kubectl: Option<DestPath>,
    /// The containerd engine underneath (its `namespace` must stay `k8s.io`, the
    /// kubelet's); its `sandbox_image` defaults to the pause image among the control-plane
    /// images.
    #[serde(default)]
    pub containerd: ContainerdSpec,
    /// Seconds to wait for the node to be Ready.
    #[serde(default = "K3sSpec::default_ready_timeout")]
    pub ready_timeout: u64,
}

/// Options of the `containerd` engine.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerdSpec {
    /// The containerd namespace images are pre-pulled into.
    #[serde(default = "ContainerdSpec::default_namespace")]
    pub namespace: String,
    /// Pull every captured image once containerd runs.
    #[serde(default = "ContainerdSpec::default_pull")]
    pub pull: bool,
    /// The folder (among `files`' destinations) holding containerd, containerd-shim-runc-v2,
    /// runc and ctr; default: the folder of the only file named `containerd`.
    #[serde(default)]
    pub bin_dir: Option<DestPath>,
    /// The CRI's `sandbox_image` (every pod's pause image); default: the payload's
    /// containerd's own default (`crate::sandbox`).
    #[serde(default)]
    pub sandbox_image: Option<ImageRef>,
}

impl ContainerdSpec {
    fn default_namespace() -> String {
        "k8s.io".to_owned()
    }
    fn default_pull() -> bool {
        true
    }
}

impl Default for ContainerdSpec {
    fn default() -> Self {
        ContainerdSpec {
            namespace: Self::default_namespace(),
            pull: Self::default_pull(),
            bin_dir: None,
            sandbox_image: None,
        }
    }
}

/// Options of the `k3s` engine.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K3sSpec {
    /// The k3s binary among `files`' destinations; default: the only file named `k3s`.
    #[serde(default)]
    pub binary: Option<DestPath>,
    /// A folder among `files`' destinations whose files go to k3s's auto-deploy folder.
    #[serde(default)]
    pub manifests: Option<DestPath>,
    /// Extra arguments for `k3s server`.
    #[serde(default)]
    pub args: Vec<String>,
    /// Seconds to wait for the node to be Ready.
    #[serde(default = "K3sSpec::default_ready_timeout")]
    pub ready_timeout: u64,
}

impl K3sSpec {
    fn default_ready_timeout() -> u64 {
        300
    }
}

impl Default for K3sSpec {
    fn default() -> Self {
        K3sSpec {
            binary: None,
            manifests: None,
            args: Vec::new(),
            ready_timeout: Self::default_ready_timeout(),
        }
    }
}

impl EngineSpec {
    /// `none`, `containerd`, `k3s` or `kubeadm`.
    pub fn kind(&self) -> &'static str {
        match self {
            EngineSpec::None => "none",
            EngineSpec::Containerd(_) => "containerd",
            EngineSpec::K3s(_) => "k3s",
            EngineSpec::Kubeadm(_) => "kubeadm",
        }
    }
}

/// The map form of `engine:`, tagged by `kind`.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum EngineMap {
    None,
    Containerd(ContainerdSpec),
    K3s(K3sSpec),
    Kubeadm(KubeadmSpec),
}

impl<'de> Deserialize<'de> for EngineSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EngineVisitor;
        impl<'de> Visitor<'de> for EngineVisitor {
            type Value = EngineSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`none`, `containerd`, `k3s`, or a map with `kind` and options (`kubeadm` needs one)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EngineSpec, E> {
                match v {
                    "none" | "" => Ok(EngineSpec::None),
                    "containerd" => Ok(EngineSpec::Containerd(ContainerdSpec::default())),
                    "k3s" => Ok(EngineSpec::K3s(K3sSpec::default())),
                    other => Err(E::unknown_variant(other, &["none", "containerd", "k3s"])),
                }
            }
            fn visit_unit<E: de::Error>(self) -> Result<EngineSpec, E> {
                Ok(EngineSpec::None)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<EngineSpec, A::Error> {
                let m = EngineMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(match m {
                    EngineMap::None => EngineSpec::None,
                    EngineMap::Containerd(c) => EngineSpec::Containerd(c),
                    EngineMap::K3s(k) => EngineSpec::K3s(k),
                    EngineMap::Kubeadm(k) => EngineSpec::Kubeadm(k),
                })
            }
        }
        deserializer.deserialize_any(EngineVisitor)
    }
}

/// `hooks:`: scripts (relative to the spec's folder) `install` runs, each with a shebang
/// line (they are executed directly).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HooksSpec {
    /// Runs after preflight, before any file is laid out.
    #[serde(default)]
    pub pre_install: Option<SourcePath>,
    /// Runs after the engine is up, before the summary.
    #[serde(default)]
    pub post_install: Option<SourcePath>,
}
