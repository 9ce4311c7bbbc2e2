//! A small, blocking CRI client for the end-to-end tests: it talks to containerd's CRI plugin
//! the way a kubelet does, gRPC (`runtime.v1.RuntimeService` and `runtime.v1.ImageService`)
//! over the unix socket, so a test can prove that a node it installed is usable by a kubelet.
//!
//! The messages are the subset of Kubernetes' cri-api `pkg/apis/runtime/v1/api.proto` that the
//! tests send or read, written as prost-derive structs with the field numbers of that file (what
//! protoc codegen would emit): no `protoc` and no build script, so a fresh machine builds the
//! workspace with cargo alone. Fields the tests never use are left out; protobuf skips unknown
//! fields on decode, and an absent field is its default on encode, so the subset stays
//! wire-compatible with the full API.
//!
//! Include it with `#[path = "util/cri.rs"] mod cri_api;` from the test that needs it (it pulls
//! in tonic, so the other test binaries do not compile it).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

/// `runtime.v1.VersionRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionRequest {
    /// The kubelet's runtime API version.
    #[prost(string, tag = "1")]
    pub version: String,
}

/// `runtime.v1.VersionResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionResponse {
    /// Version of the kubelet runtime API.
    #[prost(string, tag = "1")]
    pub version: String,
    /// Name of the container runtime.
    #[prost(string, tag = "2")]
    pub runtime_name: String,
    /// Version of the container runtime.
    #[prost(string, tag = "3")]
    pub runtime_version: String,
    /// API version of the container runtime (`v1`).
    #[prost(string, tag = "4")]
    pub runtime_api_version: String,
}

/// `runtime.v1.StatusRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusRequest {
    /// Ask for extra information in `info`.
    #[prost(bool, tag = "1")]
    pub verbose: bool,
}

/// `runtime.v1.RuntimeCondition`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RuntimeCondition {
    /// `RuntimeReady` or `NetworkReady`, or an optional condition.
    #[prost(string, tag = "1")]
    pub r#type: String,
    /// Whether the condition holds.
    #[prost(bool, tag = "2")]
    pub status: bool,
    /// CamelCase reason of the last transition.
    #[prost(string, tag = "3")]
    pub reason: String,
    /// Human-readable message of the last transition.
    #[prost(string, tag = "4")]
    pub message: String,
}

/// `runtime.v1.RuntimeStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RuntimeStatus {
    /// Observed conditions.
    #[prost(message, repeated, tag = "1")]
    pub conditions: Vec<RuntimeCondition>,
}

/// `runtime.v1.StatusResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusResponse {
    /// The runtime's conditions.
    #[prost(message, optional, tag = "1")]
    pub status: Option<RuntimeStatus>,
    /// Extra information (JSON values) when verbose.
    #[prost(map = "string, string", tag = "2")]
    pub info: HashMap<String, String>,
}

/// `runtime.v1.ImageSpec`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageSpec {
    /// A reference, an image ID or a digest reference.
    #[prost(string, tag = "1")]
    pub image: String,
    /// Annotations.
    #[prost(map = "string, string", tag = "2")]
    pub annotations: HashMap<String, String>,
}

/// `runtime.v1.Int64Value`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Int64Value {
    /// The value.
    #[prost(int64, tag = "1")]
    pub value: i64,
}

/// `runtime.v1.Image`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Image {
    /// The image ID (`sha256:` of the config).
    #[prost(string, tag = "1")]
    pub id: String,
    /// `repo:tag` names.
    #[prost(string, repeated, tag = "2")]
    pub repo_tags: Vec<String>,
    /// `repo@sha256:...` names.
    #[prost(string, repeated, tag = "3")]
    pub repo_digests: Vec<String>,
    /// Size in bytes.
    #[prost(uint64, tag = "4")]
    pub size: u64,
    /// The default UID.
    #[prost(message, optional, tag = "5")]
    pub uid: Option<Int64Value>,
    /// The default user name.
    #[prost(string, tag = "6")]
    pub username: String,
    /// The spec, with annotations.
    #[prost(message, optional, tag = "7")]
    pub spec: Option<ImageSpec>,
    /// Exempt from garbage collection (the sandbox image is).
    #[prost(bool, tag = "8")]
    pub pinned: bool,
}

/// `runtime.v1.ImageFilter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageFilter {
    /// Only this image.
    #[prost(message, optional, tag = "1")]
    pub image: Option<ImageSpec>,
}

/// `runtime.v1.ListImagesRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListImagesRequest {
    /// Filter.
    #[prost(message, optional, tag = "1")]
    pub filter: Option<ImageFilter>,
}

/// `runtime.v1.ListImagesResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListImagesResponse {
    /// The images.
    #[prost(message, repeated, tag = "1")]
    pub images: Vec<Image>,
}

/// `runtime.v1.ImageStatusRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageStatusRequest {
    /// The image.
    #[prost(message, optional, tag = "1")]
    pub image: Option<ImageSpec>,
    /// Ask for extra information.
    #[prost(bool, tag = "2")]
    pub verbose: bool,
}

/// `runtime.v1.ImageStatusResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageStatusResponse {
    /// The image; `None` when it is not present.
    #[prost(message, optional, tag = "1")]
    pub image: Option<Image>,
    /// Extra information when verbose.
    #[prost(map = "string, string", tag = "2")]
    pub info: HashMap<String, String>,
}

/// `runtime.v1.PullImageRequest` (without `auth`: the tests pull anonymously).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PullImageRequest {
    /// The image.
    #[prost(message, optional, tag = "1")]
    pub image: Option<ImageSpec>,
    /// The sandbox the pull is for.
    #[prost(message, optional, tag = "3")]
    pub sandbox_config: Option<PodSandboxConfig>,
}

/// `runtime.v1.PullImageResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PullImageResponse {
    /// The image's ID (or digest).
    #[prost(string, tag = "1")]
    pub image_ref: String,
}

/// `runtime.v1.RemoveImageRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RemoveImageRequest {
    /// The image.
    #[prost(message, optional, tag = "1")]
    pub image: Option<ImageSpec>,
}

/// `runtime.v1.RemoveImageResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RemoveImageResponse {}

/// `runtime.v1.NamespaceMode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum NamespaceMode {
    /// Shared by the pod's containers.
    Pod = 0,
    /// The container's own.
    Container = 1,
    /// The node's (host networking).
    Node = 2,
    /// Another container's.
    Target = 3,
}

/// `runtime.v1.NamespaceOption`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamespaceOption {
    /// Network namespace.
    #[prost(enumeration = "NamespaceMode", tag = "1")]
    pub network: i32,
    /// PID namespace.
    #[prost(enumeration = "NamespaceMode", tag = "2")]
    pub pid: i32,
    /// IPC namespace.
    #[prost(enumeration = "NamespaceMode", tag = "3")]
    pub ipc: i32,
    /// The container of `TARGET`.
    #[prost(string, tag = "4")]
    pub target_id: String,
}

/// `runtime.v1.LinuxSandboxSecurityContext` (the fields the tests set).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxSandboxSecurityContext {
    /// Namespaces of the sandbox.
    #[prost(message, optional, tag = "1")]
    pub namespace_options: Option<NamespaceOption>,
    /// Privileged containers may run in it.
    #[prost(bool, tag = "6")]
    pub privileged: bool,
}

/// `runtime.v1.LinuxPodSandboxConfig` (the fields the tests set).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxPodSandboxConfig {
    /// Parent cgroup (cgroupfs syntax).
    #[prost(string, tag = "1")]
    pub cgroup_parent: String,
    /// Security attributes.
    #[prost(message, optional, tag = "2")]
    pub security_context: Option<LinuxSandboxSecurityContext>,
    /// Sysctls.
    #[prost(map = "string, string", tag = "3")]
    pub sysctls: HashMap<String, String>,
}

/// `runtime.v1.PodSandboxMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxMetadata {
    /// Pod name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Pod UID.
    #[prost(string, tag = "2")]
    pub uid: String,
    /// Pod namespace.
    #[prost(string, tag = "3")]
    pub namespace: String,
    /// Attempt number.
    #[prost(uint32, tag = "4")]
    pub attempt: u32,
}

/// `runtime.v1.PodSandboxConfig` (without DNS, port mappings and Windows settings).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxConfig {
    /// Identity of the sandbox.
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<PodSandboxMetadata>,
    /// Hostname (may be empty with host networking).
    #[prost(string, tag = "2")]
    pub hostname: String,
    /// Folder of the containers' logs, on the host.
    #[prost(string, tag = "3")]
    pub log_directory: String,
    /// Labels.
    #[prost(map = "string, string", tag = "6")]
    pub labels: HashMap<String, String>,
    /// Annotations.
    #[prost(map = "string, string", tag = "7")]
    pub annotations: HashMap<String, String>,
    /// Linux settings.
    #[prost(message, optional, tag = "8")]
    pub linux: Option<LinuxPodSandboxConfig>,
}

/// `runtime.v1.RunPodSandboxRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RunPodSandboxRequest {
    /// The sandbox.
    #[prost(message, optional, tag = "1")]
    pub config: Option<PodSandboxConfig>,
    /// Runtime handler; empty for the default.
    #[prost(string, tag = "2")]
    pub runtime_handler: String,
}

/// `runtime.v1.RunPodSandboxResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RunPodSandboxResponse {
    /// The sandbox's ID.
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

/// `runtime.v1.StopPodSandboxRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StopPodSandboxRequest {
    /// The sandbox's ID.
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

/// `runtime.v1.StopPodSandboxResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StopPodSandboxResponse {}

/// `runtime.v1.RemovePodSandboxRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RemovePodSandboxRequest {
    /// The sandbox's ID.
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

/// `runtime.v1.RemovePodSandboxResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RemovePodSandboxResponse {}

/// `runtime.v1.ContainerMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerMetadata {
    /// Container name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Attempt number.
    #[prost(uint32, tag = "2")]
    pub attempt: u32,
}

/// `runtime.v1.KeyValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    /// Key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `runtime.v1.ContainerConfig` (without mounts, devices, stdin/tty and platform settings).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerConfig {
    /// Identity within the sandbox.
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ContainerMetadata>,
    /// The image.
    #[prost(message, optional, tag = "2")]
    pub image: Option<ImageSpec>,
    /// Entrypoint override; empty: the image's.
    #[prost(string, repeated, tag = "3")]
    pub command: Vec<String>,
    /// Arguments override; empty: the image's.
    #[prost(string, repeated, tag = "4")]
    pub args: Vec<String>,
    /// Working directory.
    #[prost(string, tag = "5")]
    pub working_dir: String,
    /// Environment.
    #[prost(message, repeated, tag = "6")]
    pub envs: Vec<KeyValue>,
    /// Labels.
    #[prost(map = "string, string", tag = "9")]
    pub labels: HashMap<String, String>,
    /// Annotations.
    #[prost(map = "string, string", tag = "10")]
    pub annotations: HashMap<String, String>,
    /// Log file, relative to the sandbox's `log_directory`.
    #[prost(string, tag = "11")]
    pub log_path: String,
}

/// `runtime.v1.CreateContainerRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateContainerRequest {
    /// The sandbox to create it in.
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
    /// The container.
    #[prost(message, optional, tag = "2")]
    pub config: Option<ContainerConfig>,
    /// The sandbox's config, as given to `RunPodSandbox`.
    #[prost(message, optional, tag = "3")]
    pub sandbox_config: Option<PodSandboxConfig>,
}

/// `runtime.v1.CreateContainerResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateContainerResponse {
    /// The container's ID.
    #[prost(string, tag = "1")]
    pub container_id: String,
}

/// `runtime.v1.StartContainerRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StartContainerRequest {
    /// The container's ID.
    #[prost(string, tag = "1")]
    pub container_id: String,
}

/// `runtime.v1.StartContainerResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StartContainerResponse {}

/// `runtime.v1.StopContainerRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StopContainerRequest {
    /// The container's ID.
    #[prost(string, tag = "1")]
    pub container_id: String,
    /// Grace period in seconds before it is killed.
    #[prost(int64, tag = "2")]
    pub timeout: i64,
}

/// `runtime.v1.StopContainerResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StopContainerResponse {}

/// `runtime.v1.RemoveContainerRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RemoveContainerRequest {
    /// The container's ID.
    #[prost(string, tag = "1")]
    pub container_id: String,
}

/// `runtime.v1.RemoveContainerResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RemoveContainerResponse {}

/// `runtime.v1.ContainerState` (variant names as prost codegen writes them).
#[allow(clippy::enum_variant_names)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ContainerState {
    /// Created, not started.
    ContainerCreated = 0,
    /// Running.
    ContainerRunning = 1,
    /// Exited.
    ContainerExited = 2,
    /// Unknown.
    ContainerUnknown = 3,
}

/// `runtime.v1.ContainerStatusRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerStatusRequest {
    /// The container's ID.
    #[prost(string, tag = "1")]
    pub container_id: String,
    /// Ask for extra information.
    #[prost(bool, tag = "2")]
    pub verbose: bool,
}

/// `runtime.v1.ContainerStatus` (without mounts, resources and user).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerStatus {
    /// ID.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Identity.
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<ContainerMetadata>,
    /// State.
    #[prost(enumeration = "ContainerState", tag = "3")]
    pub state: i32,
    /// Creation time, ns.
    #[prost(int64, tag = "4")]
    pub created_at: i64,
    /// Start time, ns.
    #[prost(int64, tag = "5")]
    pub started_at: i64,
    /// Finish time, ns.
    #[prost(int64, tag = "6")]
    pub finished_at: i64,
    /// Exit code (when finished).
    #[prost(int32, tag = "7")]
    pub exit_code: i32,
    /// The image.
    #[prost(message, optional, tag = "8")]
    pub image: Option<ImageSpec>,
    /// Digest reference of the image.
    #[prost(string, tag = "9")]
    pub image_ref: String,
    /// Reason of the state.
    #[prost(string, tag = "10")]
    pub reason: String,
    /// Message of the state.
    #[prost(string, tag = "11")]
    pub message: String,
    /// Labels.
    #[prost(map = "string, string", tag = "12")]
    pub labels: HashMap<String, String>,
    /// Annotations.
    #[prost(map = "string, string", tag = "13")]
    pub annotations: HashMap<String, String>,
    /// The log file on the host.
    #[prost(string, tag = "15")]
    pub log_path: String,
    /// The image's ID.
    #[prost(string, tag = "17")]
    pub image_id: String,
}

/// `runtime.v1.ContainerStatusResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerStatusResponse {
    /// The status.
    #[prost(message, optional, tag = "1")]
    pub status: Option<ContainerStatus>,
    /// Extra information when verbose.
    #[prost(map = "string, string", tag = "2")]
    pub info: HashMap<String, String>,
}

const RUNTIME: &str = "runtime.v1.RuntimeService";
const IMAGES: &str = "runtime.v1.ImageService";

/// A connection to a CRI endpoint with its own single-threaded tokio runtime: every call
/// blocks until the answer (or `timeout`) arrives.
pub struct CriClient {
    rt: tokio::runtime::Runtime,
    channel: Channel,
}

impl CriClient {
    /// Connects to the CRI endpoint at unix socket `socket`; each call may take `timeout`.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<CriClient> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("failed to start a tokio runtime")?;
        let uri = format!("unix://{}", socket.display());
        let endpoint = Endpoint::from_shared(uri.clone())
            .with_context(|| format!("bad endpoint {uri}"))?
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10));
        let channel = rt
            .block_on(endpoint.connect())
            .with_context(|| format!("failed to connect to {uri}"))?;
        Ok(CriClient { rt, channel })
    }

    /// One unary call of `service`/`method`.
    fn call<Req, Resp>(&self, service: &str, method: &str, req: Req) -> Result<Resp, tonic::Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let path = PathAndQuery::try_from(format!("/{service}/{method}"))
            .map_err(|e| tonic::Status::internal(format!("bad method path: {e}")))?;
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        self.rt.block_on(async move {
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(format!("channel not ready: {e}")))?;
            let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
            grpc.unary(tonic::Request::new(req), path, codec)
                .await
                .map(tonic::Response::into_inner)
        })
    }

    /// `RuntimeService/Version`.
    pub fn version(&self) -> Result<VersionResponse, tonic::Status> {
        self.call(
            RUNTIME,
            "Version",
            VersionRequest {
                version: "v1".into(),
            },
        )
    }

    /// `RuntimeService/Status`.
    pub fn status(&self) -> Result<StatusResponse, tonic::Status> {
        self.call(RUNTIME, "Status", StatusRequest { verbose: true })
    }

    /// `ImageService/ListImages`, unfiltered.
    pub fn list_images(&self) -> Result<Vec<Image>, tonic::Status> {
        self.call(IMAGES, "ListImages", ListImagesRequest { filter: None })
            .map(|r: ListImagesResponse| r.images)
    }

    /// `ImageService/ImageStatus`: `None` when the image is not present.
    pub fn image_status(&self, image: &str) -> Result<Option<Image>, tonic::Status> {
        self.call(
            IMAGES,
            "ImageStatus",
            ImageStatusRequest {
                image: Some(image_spec(image)),
                verbose: false,
            },
        )
        .map(|r: ImageStatusResponse| r.image)
    }

    /// `ImageService/RemoveImage`.
    pub fn remove_image(&self, image: &str) -> Result<(), tonic::Status> {
        self.call(
            IMAGES,
            "RemoveImage",
            RemoveImageRequest {
                image: Some(image_spec(image)),
            },
        )
        .map(|_: RemoveImageResponse| ())
    }

    /// `ImageService/PullImage`: returns the image reference the runtime reports.
    pub fn pull_image(&self, image: &str) -> Result<String, tonic::Status> {
        self.call(
            IMAGES,
            "PullImage",
            PullImageRequest {
                image: Some(image_spec(image)),
                sandbox_config: None,
            },
        )
        .map(|r: PullImageResponse| r.image_ref)
    }

    /// `RuntimeService/RunPodSandbox`: returns the sandbox ID.
    pub fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String, tonic::Status> {
        self.call(
            RUNTIME,
            "RunPodSandbox",
            RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            },
        )
        .map(|r: RunPodSandboxResponse| r.pod_sandbox_id)
    }

    /// `RuntimeService/CreateContainer`: returns the container ID.
    pub fn create_container(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
        sandbox: &PodSandboxConfig,
    ) -> Result<String, tonic::Status> {
        self.call(
            RUNTIME,
            "CreateContainer",
            CreateContainerRequest {
                pod_sandbox_id: sandbox_id.into(),
                config: Some(config.clone()),
                sandbox_config: Some(sandbox.clone()),
            },
        )
        .map(|r: CreateContainerResponse| r.container_id)
    }

    /// `RuntimeService/StartContainer`.
    pub fn start_container(&self, id: &str) -> Result<(), tonic::Status> {
        self.call(
            RUNTIME,
            "StartContainer",
            StartContainerRequest {
                container_id: id.into(),
            },
        )
        .map(|_: StartContainerResponse| ())
    }

    /// `RuntimeService/ContainerStatus`.
    pub fn container_status(&self, id: &str) -> Result<ContainerStatus, tonic::Status> {
        let r: ContainerStatusResponse = self.call(
            RUNTIME,
            "ContainerStatus",
            ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            },
        )?;
        r.status
            .ok_or_else(|| tonic::Status::not_found(format!("no status for container {id}")))
    }

    /// `RuntimeService/StopContainer` with a grace period of `timeout_secs`.
    pub fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<(), tonic::Status> {
        self.call(
            RUNTIME,
            "StopContainer",
            StopContainerRequest {
                container_id: id.into(),
                timeout: timeout_secs,
            },
        )
        .map(|_: StopContainerResponse| ())
    }

    /// `RuntimeService/RemoveContainer`.
    pub fn remove_container(&self, id: &str) -> Result<(), tonic::Status> {
        self.call(
            RUNTIME,
            "RemoveContainer",
            RemoveContainerRequest {
                container_id: id.into(),
            },
        )
        .map(|_: RemoveContainerResponse| ())
    }

    /// `RuntimeService/StopPodSandbox`.
    pub fn stop_pod_sandbox(&self, id: &str) -> Result<(), tonic::Status> {
        self.call(
            RUNTIME,
            "StopPodSandbox",
            StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            },
        )
        .map(|_: StopPodSandboxResponse| ())
    }

    /// `RuntimeService/RemovePodSandbox`.
    pub fn remove_pod_sandbox(&self, id: &str) -> Result<(), tonic::Status> {
        self.call(
            RUNTIME,
            "RemovePodSandbox",
            RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            },
        )
        .map(|_: RemovePodSandboxResponse| ())
    }
}

/// An `ImageSpec` naming `image`.
pub fn image_spec(image: &str) -> ImageSpec {
    ImageSpec {
        image: image.into(),
        annotations: HashMap::new(),
    }
}

/// A sandbox config as a kubelet sends it for a pod `name` in namespace `default` with host
/// networking (`hostNetwork: true`), logs under `log_directory`.
pub fn host_network_sandbox(name: &str, uid: &str, log_directory: &Path) -> PodSandboxConfig {
    let node = NamespaceMode::Node as i32;
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: String::new(),
        log_directory: log_directory.to_string_lossy().into_owned(),
        labels: HashMap::from([("io.kubernetes.pod.name".to_owned(), name.to_owned())]),
        annotations: HashMap::new(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: String::new(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: node,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    target_id: String::new(),
                }),
                privileged: false,
            }),
            sysctls: HashMap::new(),
        }),
    }
}

/// A container config running `image` as is (its own entrypoint and command), logging to
/// `<sandbox log_directory>/<name>/0.log`.
pub fn image_container(name: &str, image: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(image_spec(image)),
        command: Vec::new(),
        args: Vec::new(),
        working_dir: String::new(),
        envs: Vec::new(),
        labels: HashMap::new(),
        annotations: HashMap::new(),
        log_path: format!("{name}/0.log"),
    }
}

/// The messages of a CRI log file: each line is `<RFC 3339 time> <stream> <P|F> <text>`
/// (the kubelet's format); returns the texts of full lines, joined with newlines.
pub fn log_messages(log: &str) -> String {
    let mut out = String::new();
    for line in log.lines() {
        let mut parts = line.splitn(4, ' ');
        let (_time, _stream, tag, text) = (parts.next(), parts.next(), parts.next(), parts.next());
        out.push_str(text.unwrap_or(""));
        if tag == Some("F") {
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod wire {
    use super::*;
    use prost::Message as _;

    #[test]
    fn a_version_response_decodes_from_the_field_numbers_of_cri_api() {
        // Field 2 (runtime_name) = "containerd", field 4 (runtime_api_version) = "v1".
        let bytes = [
            0x12, 10, b'c', b'o', b'n', b't', b'a', b'i', b'n', b'e', b'r', b'd', 0x22, 2, b'v',
            b'1',
        ];
        let r = VersionResponse::decode(&bytes[..]).unwrap();
        assert_eq!(r.runtime_name, "containerd");
        assert_eq!(r.runtime_api_version, "v1");
    }
}
