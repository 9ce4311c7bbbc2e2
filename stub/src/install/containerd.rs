//! The `containerd` engine: containerd, its runc shim, runc and ctr come from the payload's
//! files; containerd runs with a config of ours (its own root and state under the install
//! root, the socket at `<root>/run/containerd/containerd.sock`, the CRI registry
//! `config_path` = the `certs.d` folder the mirror step wrote), as a service or daemon like
//! the registry; once it answers, every captured image is pulled through the mirror so the
//! node is ready without a network.
//!
//! The config goes to `/etc/containerd/airlock-<name>.toml`, never over a
//! `/etc/containerd/config.toml` someone else wrote; the unit and daemon pass it with
//! `--config`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use airlock_payload::ContainerdEngine;

use super::fsutil::{resolve, PathKind};
use super::host::{Host, RunEnd, RunSpec};
use super::mirror::CERTS_DIR;
use super::service::{unit_text, Daemon, ServiceDef, UnitSpec};
use super::{Error, Result, STATE_DIR};

/// containerd's socket, inside the root.
pub const SOCKET: &str = "/run/containerd/containerd.sock";
/// containerd's persistent root (content store, snapshots), inside the root.
pub const ROOT_DIR: &str = "/var/lib/containerd";
/// containerd's state folder (sockets, runtime state), inside the root.
pub const STATE: &str = "/run/containerd";
/// How long containerd gets to answer `ctr version` after it was started.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one image pull may take (it reads from the local registry).
pub const PULL_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The config file of installer `name`, inside the root.
pub fn config_path(name: &str) -> String {
    format!("/etc/containerd/airlock-{name}.toml")
}

/// The unit name for installer `name`.
pub fn unit_name(name: &str) -> String {
    format!("airlock-containerd-{name}.service")
}

/// The folder holding the engine's programs, inside the root (`/usr/bin`).
fn bin_dir(engine: &ContainerdEngine) -> String {
    let dir = engine.containerd.rsplit_once('/').map_or("", |(d, _)| d);
    format!("/{dir}")
}

/// A payload path as a real path under `root`.
fn program(root: &Path, payload_path: &str) -> PathBuf {
    resolve(root, &format!("/{payload_path}"))
}

/// `PATH` for containerd: its own folder first, so it runs our shim and the shim our runc.
pub fn path_env(root: &Path, engine: &ContainerdEngine) -> String {
    format!(
        "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        resolve(root, &bin_dir(engine)).display()
    )
}

fn toml_string(s: &str) -> String {
    // TOML basic strings: escape backslash and quote; our paths hold no control characters.
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Where runc keeps its container state for the CRI's containers (runc's `--root`), inside
/// the root; runc's default is the host's `/run/containerd/runc`.
pub const RUNC_ROOT: &str = "/run/containerd/runc";

/// The CRI's CNI plugin folder, inside the root.
pub const CNI_BIN_DIR: &str = "/opt/cni/bin";
/// The CRI's CNI config folder, inside the root; containerd creates it when missing.
pub const CNI_CONF_DIR: &str = "/etc/cni/net.d";

/// Linux capability number of `CAP_SYS_RESOURCE` (`linux/capability.h`).
const CAP_SYS_RESOURCE: u32 = 24;

/// Settings of containerd's CRI plugin beyond paths: what a kubelet's pods need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriOptions {
    /// The pause image every pod sandbox runs (`sandbox_image`); `None` leaves containerd's
    /// own default, which the payload must then hold.
    pub sandbox_image: Option<String>,
    /// `restrict_oom_score_adj`: clamp containers' `oom_score_adj` to containerd's own, for
    /// a containerd that cannot lower it (no `CAP_SYS_RESOURCE`, as in many containers and
    /// user namespaces); without it runc fails to start any pod there.
    pub restrict_oom_score_adj: bool,
}

impl CriOptions {
    /// The options for `engine` on a host whose processes have the effective capabilities
    /// of `proc_status` (the text of `/proc/self/status`; containerd inherits ours).
    pub fn new(engine: &ContainerdEngine, proc_status: &str) -> CriOptions {
        CriOptions {
            sandbox_image: engine.sandbox_image.clone(),
            restrict_oom_score_adj: !has_effective_cap(proc_status, CAP_SYS_RESOURCE),
        }
    }

    /// The options for `engine` under this process's capabilities.
    pub fn for_this_process(engine: &ContainerdEngine) -> CriOptions {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        CriOptions::new(engine, &status)
    }

    /// A summary line when a setting differs from containerd's defaults for a reason the
    /// user should know.
    pub fn summary(&self) -> Option<String> {
        self.restrict_oom_score_adj.then(|| {
            "containerd: CRI restrict_oom_score_adj = true (this process lacks \
             CAP_SYS_RESOURCE, so containers cannot get a lower oom_score_adj than containerd)"
                .to_owned()
        })
    }
}

/// Whether the `CapEff:` line of `/proc/<pid>/status` text holds capability `cap`. A missing
/// or unreadable line counts as holding it (containerd's defaults then apply).
pub fn has_effective_cap(proc_status: &str, cap: u32) -> bool {
    proc_status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_none_or(|mask| mask & (1u64 << cap) != 0)
}

/// containerd's config (version 2, read by 1.6 and 1.7): root, state and sockets under the
/// install root, the CRI plugin pulling through `certs.d`, running the sandbox image of
/// `cri`, with runc's state under the root too.
pub fn config_toml(root: &Path, name: &str, version: &str, cri: &CriOptions) -> String {
    let p = |logical: &str| toml_string(&resolve(root, logical).to_string_lossy());
    let sandbox = cri
        .sandbox_image
        .as_deref()
        .map(|s| format!("  sandbox_image = {}\n", toml_string(s)))
        .unwrap_or_default();
    format!(
        "# Written by airlock for {name} {version}; `uninstall` removes it.\n\
         version = 2\n\
         root = {}\n\
         state = {}\n\
         \n\
         [grpc]\n  address = {}\n\
         \n\
         [plugins.\"io.containerd.grpc.v1.cri\"]\n\
         {sandbox}\
         \x20 restrict_oom_score_adj = {}\n\
         \x20 # Pod network namespaces under the state folder, not the host's /var/run/netns.\n\
         \x20 netns_mounts_under_state_dir = true\n\
         \n\
         # Pulls go through the local registry: one hosts.toml per upstream and _default.\n\
         [plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = {}\n\
         \n\
         # CNI config and plugins under the root (containerd creates conf_dir when missing).\n\
         [plugins.\"io.containerd.grpc.v1.cri\".cni]\n\
         \x20 bin_dir = {}\n\
         \x20 conf_dir = {}\n\
         \n\
         # runc keeps the CRI containers' state under the root (its default: /run/containerd/runc).\n\
         [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n\
         \x20 runtime_type = \"io.containerd.runc.v2\"\n\
         [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n\
         \x20 Root = {}\n",
        p(ROOT_DIR),
        p(STATE),
        p(SOCKET),
        cri.restrict_oom_score_adj,
        p(CERTS_DIR),
        p(CNI_BIN_DIR),
        p(CNI_CONF_DIR),
        p(RUNC_ROOT),
    )
}

/// containerd as a service of installer `name`.
pub fn service(root: &Path, name: &str, version: &str, engine: &ContainerdEngine) -> ServiceDef {
    let containerd = program(root, &engine.containerd);
    let config = resolve(root, &config_path(name));
    let env = vec![("PATH".to_owned(), path_env(root, engine))];
    let args = vec!["--config".to_owned(), config.to_string_lossy().into_owned()];
    let mut exec = vec![containerd.to_string_lossy().into_owned()];
    exec.extend(args.iter().cloned());
    let unit_text = unit_text(
        name,
        version,
        &UnitSpec {
            description: format!("containerd for {name} {version} (airlock)"),
            exec,
            env: &env,
            after: &format!(
                "local-fs.target {}",
                super::service::registry_unit_name(name)
            ),
            before: "",
            service_type: "notify",
            // As containerd's own unit: the shims keep containers running across restarts.
            extra: "Delegate=yes\nKillMode=process\nLimitNOFILE=infinity\nTasksMax=infinity\n",
        },
    );
    ServiceDef {
        name: "containerd".to_owned(),
        unit: unit_name(name),
        unit_text,
        daemon: Daemon::new(&format!("{name}-containerd"), containerd, args).with_env(env),
        listen: None,
        companions: vec![format!("/{}", engine.shim)],
    }
}

/// Paths the engine creates besides its config: containerd's root and state (whole trees,
/// removed on uninstall unless they existed before) and the CNI config folder the CRI plugin
/// creates (removed when empty).
pub fn trees() -> [(&'static str, PathKind); 4] {
    [
        (ROOT_DIR, PathKind::Tree),
        (STATE, PathKind::Tree),
        ("/etc/cni", PathKind::Dir),
        (CNI_CONF_DIR, PathKind::Dir),
    ]
}

/// A problem preflight should report: a containerd socket at our address that is not the
/// socket of our own containerd (another containerd runs there).
pub fn socket_problem(root: &Path, ours_running: bool) -> Option<String> {
    let sock = resolve(root, SOCKET);
    if ours_running || std::fs::symlink_metadata(&sock).is_err() {
        return None;
    }
    std::os::unix::net::UnixStream::connect(&sock)
        .ok()
        .map(|_| {
            format!(
                "a containerd we did not start already listens on {}: stop it first (this \
             installer brings its own), or install with --root DIR",
                sock.display()
            )
        })
}

/// Waits until containerd answers `ctr version` on its socket.
pub fn wait_ready(
    root: &Path,
    engine: &ContainerdEngine,
    timeout: Duration,
    alive: &dyn Fn() -> bool,
    log: &str,
    host: &dyn Host,
) -> Result<Duration> {
    let ctr = program(root, &engine.ctr);
    let sock = resolve(root, SOCKET);
    let (ctr_s, sock_s) = (ctr.to_string_lossy(), sock.to_string_lossy());
    let start = Instant::now();
    let mut last;
    loop {
        last = match host.run(&ctr_s, &["--address", &sock_s, "version"]) {
            Ok(out) if out.success() => return Ok(start.elapsed()),
            Ok(out) => out.stderr.trim().to_owned(),
            Err(e) => e.to_string(),
        };
        if !alive() {
            last = format!("containerd exited; last attempt: {last}");
            break;
        }
        if start.elapsed() >= timeout {
            break;
        }
        host.sleep(Duration::from_millis(200));
    }
    Err(Error::Engine {
        engine: "containerd",
        what: format!(
            "it did not answer on {} within {} s ({last}); look at {log}",
            sock.display(),
            timeout.as_secs()
        ),
    })
}

/// Pulls `reference` into containerd through the mirror config (`ctr image pull
/// --hosts-dir`), output in `log` (inside the root).
pub fn pull(
    root: &Path,
    engine: &ContainerdEngine,
    reference: &str,
    log: &str,
    host: &dyn Host,
) -> Result<()> {
    let ctr = program(root, &engine.ctr);
    let args: Vec<String> = [
        "--address",
        &resolve(root, SOCKET).to_string_lossy(),
        "--namespace",
        &engine.namespace,
        "image",
        "pull",
        "--hosts-dir",
        &resolve(root, CERTS_DIR).to_string_lossy(),
        reference,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let log_path = resolve(root, log);
    let end = host
        .run_logged(&RunSpec {
            program: &ctr,
            args: &args,
            env: &[],
            cwd: Path::new("/"),
            log: &log_path,
            timeout: PULL_TIMEOUT,
        })
        .map_err(|e| Error::Engine {
            engine: "containerd",
            what: format!("failed to run {}: {e}", ctr.display()),
        })?;
    if end == RunEnd::Exited(0) {
        return Ok(());
    }
    Err(Error::Engine {
        engine: "containerd",
        what: format!(
            "pulling {reference} through the local registry failed ({}):\n{}",
            super::hooks::describe_end(end, PULL_TIMEOUT),
            super::hooks::tail(&log_path, 20)
        ),
    })
}

/// The digest name of a captured image, `registry/repository@sha256:...`: the name the CRI
/// plugin gives every image it pulls besides its tag, shown as `repo_digests` in
/// `ImageStatus`. `None` for an image captured by digest only (its one name is that already).
pub fn digest_name(image: &airlock_payload::Image) -> Option<String> {
    image
        .tag
        .as_ref()
        .map(|_| format!("{}/{}@{}", image.registry, image.repository, image.digest))
}

/// Gives the image `ctr image pull` just pulled its digest name too (`ctr image tag`), as
/// the CRI plugin's own pull does: a kubelet then finds it by `repo@sha256:...` and
/// `ImageStatus` lists the repo digest, so `IfNotPresent` and digest references stay local.
pub fn tag_by_digest(
    root: &Path,
    engine: &ContainerdEngine,
    image: &airlock_payload::Image,
    host: &dyn Host,
) -> Result<()> {
    let Some(by_digest) = digest_name(image) else {
        return Ok(());
    };
    let ctr = program(root, &engine.ctr);
    let sock = resolve(root, SOCKET);
    let reference = image.reference();
    let args = [
        "--address",
        &sock.to_string_lossy(),
        "--namespace",
        &engine.namespace,
        "image",
        "tag",
        "--force",
        &reference,
        &by_digest,
    ]
    .map(str::to_owned);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let why = match host.run(&ctr.to_string_lossy(), &args) {
        Ok(out) if out.success() => return Ok(()),
        Ok(out) => out.stderr.trim().to_owned(),
        Err(e) => e.to_string(),
    };
    Err(Error::Engine {
        engine: "containerd",
        what: format!("failed to name {reference} also {by_digest} ({why})"),
    })
}

/// The log `ctr image pull` writes to, inside the root.
pub fn pull_log(name: &str) -> String {
    format!("{STATE_DIR}/{name}-pull.log")
}

/// The registry address images are pulled from, for messages.
pub fn describe(root: &Path, listen: SocketAddr) -> String {
    format!(
        "containerd socket {}, pulls via http://{listen} (hosts {})",
        resolve(root, SOCKET).display(),
        resolve(root, CERTS_DIR).display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> ContainerdEngine {
        ContainerdEngine {
            containerd: "usr/bin/containerd".into(),
            shim: "usr/bin/containerd-shim-runc-v2".into(),
            runc: "usr/sbin/runc".into(),
            ctr: "usr/bin/ctr".into(),
            namespace: "k8s.io".into(),
            pull: true,
            sandbox_image: Some("registry.k8s.io/pause:3.9".into()),
        }
    }

    #[test]
    fn the_config_keeps_everything_under_the_root_and_points_cri_at_certs_d() {
        let cri = CriOptions {
            sandbox_image: None,
            restrict_oom_score_adj: false,
        };
        let text = config_toml(Path::new("/r"), "edge", "1", &cri);
        assert!(
            text.contains("\nroot = \"/r/var/lib/containerd\"\n"),
            "{text}"
        );
        assert!(text.contains("\nstate = \"/r/run/containerd\"\n"), "{text}");
        assert!(
            text.contains("address = \"/r/run/containerd/containerd.sock\""),
            "{text}"
        );
        assert!(
            text.contains("config_path = \"/r/etc/containerd/certs.d\""),
            "{text}"
        );
        assert!(text.contains("\nversion = 2\n"));
        assert!(
            text.contains("\n  Root = \"/r/run/containerd/runc\"\n"),
            "{text}"
        );
        assert!(
            text.contains("\n  restrict_oom_score_adj = false\n"),
            "{text}"
        );
        assert!(!text.contains("sandbox_image"), "{text}");
        assert!(
            text.contains("\n  conf_dir = \"/r/etc/cni/net.d\"\n"),
            "{text}"
        );
    }

    #[test]
    fn the_config_names_the_payloads_sandbox_image_and_restricts_oom_without_cap_sys_resource() {
        // CapEff of a root process in a container without CAP_SYS_RESOURCE (bit 24).
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n";
        let cri = CriOptions::new(&engine(), status);
        assert!(cri.restrict_oom_score_adj);
        assert!(cri.summary().unwrap().contains("lacks CAP_SYS_RESOURCE"));
        let text = config_toml(Path::new("/r"), "edge", "1", &cri);
        assert!(
            text.contains("\n  sandbox_image = \"registry.k8s.io/pause:3.9\"\n"),
            "{text}"
        );
        assert!(
            text.contains("\n  restrict_oom_score_adj = true\n"),
            "{text}"
        );

        let full = CriOptions::new(&engine(), "CapEff:\t000001ffffffffff\n");
        assert!(!full.restrict_oom_score_adj);
        assert_eq!(full.summary(), None);
    }

    #[test]
    fn a_tagged_image_gets_its_repo_digest_name_and_a_digest_only_image_none() {
        let digest = airlock_payload::Sha256Digest::of(b"manifest");
        let mut image = airlock_payload::Image {
            registry: "example.hub".into(),
            repository: "team/app".into(),
            tag: Some("1.0".into()),
            digest,
            manifests: Vec::new(),
            blobs: Vec::new(),
        };
        assert_eq!(
            digest_name(&image).unwrap(),
            format!("example.hub/team/app@{digest}")
        );
        image.tag = None;
        assert_eq!(digest_name(&image), None);
    }

    #[test]
    fn capabilities_are_read_from_the_effective_set_only() {
        assert!(!has_effective_cap("CapPrm:\tffffffff\nCapEff:\t0\n", 24));
        assert!(has_effective_cap("CapEff:\t01000000\n", 24));
        assert!(has_effective_cap("no such line\n", 24));
    }

    #[test]
    fn the_service_runs_our_containerd_with_our_folder_first_in_path() {
        let def = service(Path::new("/r"), "edge", "1", &engine());
        assert_eq!(def.daemon.program, Path::new("/r/usr/bin/containerd"));
        assert_eq!(
            def.daemon.args,
            ["--config", "/r/etc/containerd/airlock-edge.toml"]
        );
        assert!(
            def.daemon.env[0].1.starts_with("/r/usr/bin:"),
            "{:?}",
            def.daemon.env
        );
        assert_eq!(def.companions, ["/usr/bin/containerd-shim-runc-v2"]);
        assert!(def.unit_text.contains(
            "\nExecStart=/r/usr/bin/containerd --config /r/etc/containerd/airlock-edge.toml\n"
        ));
        assert!(
            def.unit_text.contains("\nEnvironment=PATH=/r/usr/bin:"),
            "{}",
            def.unit_text
        );
        assert!(def
            .unit_text
            .contains("After=local-fs.target airlock-registry-edge.service"));
    }
}
