//! The command line, as clap parses it. `main.rs` parses; [`crate::commands::run`] acts.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const AFTER_HELP: &str = "\
Exit codes: 0 success, 1 error, 2 usage, 3 the installer is corrupt or truncated, or fails \
a signature check.

Signatures: when <root>/etc/airlock/trusted-keys/ (or AIRLOCK_TRUSTED_KEYS=DIR) holds minisign \
public keys (*.pub), install, extract and registry serve refuse a file not signed by one of them.

Debugging: AIRLOCK_INSTALLER=/path/file.run makes this program operate on that file instead \
of itself. RUST_LOG=debug (or -v) prints what it does on stderr.";

/// An airlock installer: one file holding a Kubernetes distribution, its files and images.
///
/// Run without a command to see what this file contains. Nothing is changed unless a
/// command says so.
#[derive(Debug, Parser)]
#[command(version, about, long_about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Print no progress bars and no informational messages.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print debug messages on stderr (RUST_LOG is honoured too).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// The command; without one, a summary and usage are printed.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The commands an installer understands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what this installer is: name, version, platform, sizes, format facts.
    ///
    /// Reads only the metadata record, never the index or content: instant for any size.
    Info(InfoArgs),
    /// List every file, folder and link the installer holds.
    ///
    /// Columns: type, mode (octal), size, content digest (files) and path, with `-> target`
    /// for links.
    List(ListArgs),
    /// Check the integrity of the whole file.
    ///
    /// Checks the program part, the index and every content frame against their SHA-256
    /// digests, in parallel. Exits with 3 and names every damaged item if any is found.
    Verify(VerifyArgs),
    /// Lay out all files, or only the named ones, under a folder.
    ///
    /// Checks free space first, writes into a staging folder inside the target and moves
    /// entries into place only when everything was written and checked: a damaged installer
    /// or a full disk leaves the target as it was. Existing files are replaced; existing
    /// symlinks are never followed.
    Extract(ExtractArgs),
    /// Serve the captured container images as a read-only OCI registry.
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// Install: files, a persistent copy of this installer, the registry as a service and
    /// mirror config for every upstream registry of the captured images.
    ///
    /// Steps, each printing one line: lock, install record, preflight (every problem at
    /// once, before anything changes), files (atomically), persistent copy under
    /// `<root>/var/lib/airlock/`, registry service (a systemd unit where systemd is PID 1
    /// and the root is `/`, else a daemon with a pid file and a log), readiness check,
    /// mirror config (containerd `certs.d/<host>/hosts.toml` and `_default`, k3s
    /// `registries.yaml`), record. Re-running converges; `uninstall` undoes it.
    Install(InstallArgs),
    /// The installer's signatures.
    #[command(subcommand)]
    Signature(SignatureCommand),
    /// Print the software bill of materials (SPDX 2.3 JSON) embedded at build time: every
    /// file with its SHA-256, every image with its digest and purl.
    Sbom(SbomArgs),
    /// Undo an install: stop the registry and remove what `install` created, as its record
    /// under `<root>/var/lib/airlock/` says. What existed before the install is kept.
    Uninstall(UninstallArgs),
    /// Copy this installer to removable media and read it back before it is unplugged.
    ///
    /// Writes the parts (split into parts of 4 GiB - 4096 bytes when the folder is on FAT32,
    /// which holds no bigger file), syncs them, drops their cached pages, then verifies every
    /// frame of the copy as read from the medium and prints "safe to eject". A re-run keeps
    /// the parts already on the medium with the right bytes. Refuses up front when the
    /// medium lacks space.
    Copy(CopyArgs),
    /// Install every host of an inventory over SSH, sending the installer over this
    /// host's link once.
    ///
    /// The inventory has Ansible's YAML shape (`all`, `vars`, `children`, `hosts`,
    /// `ansible_host`, `ansible_user`, `ansible_port`, `ansible_ssh_private_key_file`, and
    /// `airlock_root`, `airlock_listen`); hosts in `servers` and `agents` get those roles.
    /// Steps: verify this file, a remote preflight on every host (before any change),
    /// upload to the first node only, install it, then every other node fetches the file
    /// from the first node's registry (`/airlock/installer`), checks it and installs (k3s:
    /// the first server with `--cluster-init`, servers one at a time, agents in parallel,
    /// joining with the first server's token). One line per node and step, a summary table;
    /// exit code 1 when any node failed. A re-run skips the nodes already at this version.
    Deploy(DeployArgs),
    /// Undo a deploy: the installer's own `uninstall` on every host of the inventory, then
    /// the copy and markers deploy left.
    Undeploy(UndeployArgs),
}

/// Arguments of `copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The folder to copy into, e.g. a mounted USB stick.
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Parts of this size (`fat32` or SIZE such as 2G, rounded down to a multiple of 4096)
    /// even where the filesystem does not need them.
    #[arg(long, value_name = "fat32|SIZE")]
    pub split: Option<String>,
}

/// How `deploy` and `undeploy` reach hosts.
#[derive(Debug, Args)]
pub struct SshArgs {
    /// The inventory (Ansible's YAML inventory shape).
    #[arg(short, long, value_name = "FILE")]
    pub inventory: PathBuf,
    /// Accept and remember unknown host keys (ssh `StrictHostKeyChecking=accept-new`);
    /// without it an unknown host key is refused.
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// Use this ssh config file instead of ~/.ssh/config (ssh -F).
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
    /// Seconds ssh waits for a host to answer (ssh ConnectTimeout).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub connect_timeout: u32,
}

/// Arguments of `deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Inventory and ssh options.
    #[command(flatten)]
    pub ssh: SshArgs,
    /// At most N nodes fetch the installer from one source at once.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub fanout: u32,
    /// Run the remote preflight, print the plan per node and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Limit each node's fetch to SIZE per second (K, M or G), to spare a shared link.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub limit_rate: Option<u64>,
}

/// Arguments of `undeploy`.
#[derive(Debug, Args)]
pub struct UndeployArgs {
    /// Inventory and ssh options.
    #[command(flatten)]
    pub ssh: SshArgs,
}

/// `signature` subcommands.
#[derive(Debug, Subcommand)]
pub enum SignatureCommand {
    /// Write the signed message and each signature for an independent check:
    /// `DIR/message` and `DIR/<keyid>.minisig`, so that
    /// `minisign -V -p release.pub -m DIR/message -x DIR/<keyid>.minisig` verifies.
    Export {
        /// The folder to write into (created if missing).
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
    },
}

/// Public keys a command requires a signature by.
#[derive(Debug, Args, Default)]
pub struct KeyArgs {
    /// Require a valid signature by this minisign public key (repeatable: any one suffices).
    #[arg(long = "key", value_name = "PUB")]
    pub keys: Vec<PathBuf>,
    /// Require a valid signature by one of the public keys (*.pub) in DIR.
    #[arg(long, value_name = "DIR")]
    pub key_dir: Option<PathBuf>,
}

impl KeyArgs {
    /// True when no key was given.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.key_dir.is_none()
    }
}

/// Arguments of `install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Keys the installer must be signed by (besides the trusted-keys folder).
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Install under this folder instead of `/` (no root privileges needed; created if
    /// missing, its parent must exist). `--root /` is the real root.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Address the registry service listens on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5000")]
    pub listen: SocketAddr,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    pub yes: bool,
    /// Run the preflight checks, print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Runtimes to write mirror config for, comma-separated: containerd, k3s, docker,
    /// podman (also CRI-O). Default: containerd, k3s, and docker/podman when their config
    /// folder or program is on this host.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub mirror_for: Option<Vec<crate::install::runtimes::Runtime>>,
    /// Address of the pull proxy Docker uses as HTTPS_PROXY (default: the registry's port + 1).
    #[arg(long, value_name = "ADDR")]
    pub proxy_listen: Option<SocketAddr>,
    /// Restart Docker (systemd) so it reads the new drop-in now.
    #[arg(long)]
    pub restart_runtimes: bool,
    /// Point the runtimes at this site registry instead of starting the installer's own:
    /// `https://harbor.site[:port][/prefix]`, holding the images as `registry push --to URL`
    /// names them (`<prefix>/<host>/<repository>:<tag>`). containerd and k3s get a mirror
    /// per upstream host (containerd: `override_path`), podman/CRI-O a path mirror; Docker
    /// cannot be pointed at a site registry (it is left out, or an error when named in
    /// --mirror-for).
    #[arg(long, value_name = "URL")]
    pub registry: Option<String>,
    /// The site registry's CA certificate (PEM), copied under the root and referenced by
    /// every runtime's config.
    #[arg(long, value_name = "FILE", requires = "registry")]
    pub ca: Option<PathBuf>,
    /// Push the installer's images into the site registry first (`registry push --to URL`
    /// with --ca; credentials from --user/--password-stdin or the docker config). A failed
    /// push changes nothing on this host.
    #[arg(long, requires = "registry")]
    pub push: bool,
    /// The site registry's user name for --push.
    #[arg(long, value_name = "U", requires = "push", requires = "password_stdin")]
    pub user: Option<String>,
    /// Read the --push password from the first line of stdin.
    #[arg(long, requires = "user")]
    pub password_stdin: bool,
    /// Upgrading: keep the earlier version's persistent copy (it is deleted once this
    /// version is installed and serving).
    #[arg(long)]
    pub keep_previous: bool,
    /// Install even when a newer version of this installer is installed.
    #[arg(long)]
    pub allow_downgrade: bool,
}

/// Arguments of `uninstall`.
#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// The folder the install went to (`/` when not given).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

/// `registry` subcommands.
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Serve every captured image over HTTP, straight from this file, until SIGTERM/SIGINT.
    ///
    /// A read-only OCI distribution API (pull side): manifests by tag and digest, blobs with
    /// Range, tags/list, _catalog. Images keep their upstream names: containerd's `?ns=`
    /// query (mirror through hosts.toml) or a path prefix (`/v2/example.hub/team/app/...`)
    /// selects the upstream registry; a bare name means docker.io. The first line printed is
    /// `serving N images on http://ADDR` with the bound address (useful with port 0).
    Serve(ServeArgs),
    /// Push every captured image into a registry (Harbor, Nexus, distribution...) under its
    /// original name below the URL's path: `<prefix>/<host>/<repository>:<tag>`.
    ///
    /// Skips blobs the registry has, mounts blobs across repositories, uploads in chunks,
    /// retries with backoff and continues an interrupted push when run again. Manifests go
    /// last, children before indexes, byte-identical. Credentials: --user with
    /// --password-stdin, else the docker config's `auths` ($DOCKER_CONFIG or ~/.docker).
    Push(PushArgs),
}

/// Arguments of `registry push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The registry and an optional path prefix: `https://harbor.site[:port][/prefix]`.
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Trust the CA certificates in FILE (PEM) besides the system's.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub ca: Option<PathBuf>,
    /// Accept any TLS certificate (testing only).
    #[arg(long)]
    pub insecure: bool,
    /// Drop the upstream host from names (`<prefix>/<repository>`); two images meeting on
    /// one name are an error.
    #[arg(long)]
    pub flatten: bool,
    /// The user name.
    #[arg(long, value_name = "U", requires = "password_stdin")]
    pub user: Option<String>,
    /// Read the password from the first line of stdin.
    #[arg(long, requires = "user")]
    pub password_stdin: bool,
    /// Blobs pushed at once.
    #[arg(long, value_name = "N", default_value_t = crate::registry::push::DEFAULT_JOBS,
          value_parser = clap::value_parser!(usize))]
    pub jobs: usize,
    /// Bytes per upload chunk (`PATCH`): a number with an optional K, M or G (powers of 1024).
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
    pub chunk_size: u64,
    /// Retries of a failed request (connection errors, 5xx, 408, 413, 429), with backoff.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub retries: u32,
    /// Where unfinished upload sessions are recorded for a re-run (default:
    /// $XDG_STATE_HOME or ~/.local/state, `airlock/push-sessions.json`).
    #[arg(long, value_name = "FILE")]
    pub sessions: Option<PathBuf>,
}

/// `64M`, `1G`, `512K` or a plain byte count; at least 1.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("unknown unit in {s:?} (use K, M or G)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 64M"))?;
    match n.checked_mul(mult) {
        Some(0) => Err("the size must be at least 1 byte".into()),
        Some(v) => Ok(v),
        None => Err(format!("{s:?} is too large")),
    }
}

/// Arguments of `registry serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5000")]
    pub listen: SocketAddr,
    /// Write this process's pid to PATH (atomically) once the address is bound, and remove
    /// it on a clean exit: the daemon records itself even if whoever started it is killed.
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<std::path::PathBuf>,
    /// Also serve the TLS-intercepting pull proxy on ADDR (Docker's `HTTPS_PROXY`): `CONNECT`
    /// to an upstream host of the captured images is answered with that host's certificate
    /// from `--intercept-dir` and served from this registry; every other `CONNECT` is
    /// refused at once.
    #[arg(long, value_name = "ADDR", requires = "intercept_dir")]
    pub intercept: Option<SocketAddr>,
    /// The proxy's folder (`install` writes it): `hosts/<host>.crt` and `.key` per host.
    #[arg(long, value_name = "DIR", requires = "intercept")]
    pub intercept_dir: Option<std::path::PathBuf>,
}

/// Arguments of `info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print a JSON array of {path, type, mode, size, digest, target} objects.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `sbom`.
#[derive(Debug, Args)]
pub struct SbomArgs {
    /// Write the document to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Arguments of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Also decompress every content and check its own digest (slower).
    #[arg(long)]
    pub deep: bool,
    /// Keys the installer must be signed by.
    #[command(flatten)]
    pub keys: KeyArgs,
}

/// Arguments of `extract`.
#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// The folder to extract into; created if missing (its parent must exist).
    #[arg(short, long, value_name = "DIR")]
    pub target: PathBuf,
    /// Paths inside the installer to extract (a folder brings its whole subtree);
    /// all when none are given.
    #[arg(value_name = "PATH")]
    pub paths: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn extract_takes_a_target_and_paths() {
        let cli = Cli::try_parse_from([
            "x.run", "-q", "extract", "--target", "/tmp/t", "usr/bin", "etc",
        ])
        .unwrap();
        assert!(cli.quiet);
        match cli.command {
            Some(Command::Extract(a)) => {
                assert_eq!(a.target, PathBuf::from("/tmp/t"));
                assert_eq!(a.paths, ["usr/bin", "etc"]);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn extract_without_a_target_is_a_usage_error() {
        let err = Cli::try_parse_from(["x.run", "extract"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn registry_serve_listens_on_5000_by_default_or_where_told() {
        let cli = Cli::try_parse_from(["x.run", "registry", "serve"]).unwrap();
        match cli.command {
            Some(Command::Registry(RegistryCommand::Serve(a))) => {
                assert_eq!(a.listen, "127.0.0.1:5000".parse().unwrap());
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli =
            Cli::try_parse_from(["x.run", "registry", "serve", "--listen", "[::1]:0"]).unwrap();
        match cli.command {
            Some(Command::Registry(RegistryCommand::Serve(a))) => {
                assert_eq!(a.listen, "[::1]:0".parse().unwrap());
            }
            other => panic!("parsed as {other:?}"),
        }
        let err =
            Cli::try_parse_from(["x.run", "registry", "serve", "--listen", "nowhere"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn install_takes_root_listen_yes_and_dry_run() {
        let cli = Cli::try_parse_from(["x.run", "install"]).unwrap();
        match cli.command {
            Some(Command::Install(a)) => {
                assert_eq!(a.root, None);
                assert_eq!(a.listen, "127.0.0.1:5000".parse().unwrap());
                assert!(!a.yes && !a.dry_run);
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli = Cli::try_parse_from([
            "x.run",
            "install",
            "--root",
            "/tmp/r",
            "--listen",
            "127.0.0.1:0",
            "-y",
            "--dry-run",
        ])
        .unwrap();
        match cli.command {
            Some(Command::Install(a)) => {
                assert_eq!(a.root, Some(PathBuf::from("/tmp/r")));
                assert_eq!(a.listen, "127.0.0.1:0".parse().unwrap());
                assert!(a.yes && a.dry_run);
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli = Cli::try_parse_from(["x.run", "uninstall", "--root", "/tmp/r"]).unwrap();
        assert!(
            matches!(cli.command, Some(Command::Uninstall(ref a)) if a.root == Some(PathBuf::from("/tmp/r")))
        );
    }

    #[test]
    fn registry_push_takes_a_url_credentials_and_sizes() {
        let cli = Cli::try_parse_from([
            "x.run",
            "registry",
            "push",
            "--to",
            "https://h/m",
            "--user",
            "u",
            "--password-stdin",
            "--chunk-size",
            "8M",
            "--jobs",
            "2",
        ])
        .unwrap();
        match cli.command {
            Some(Command::Registry(RegistryCommand::Push(a))) => {
                assert_eq!(a.to, "https://h/m");
                assert_eq!(a.chunk_size, 8 << 20);
                assert_eq!(a.jobs, 2);
                assert!(a.password_stdin);
            }
            other => panic!("parsed as {other:?}"),
        }
        // A user without a way to give the password is a usage error.
        let err = Cli::try_parse_from(["x.run", "registry", "push", "--to", "h", "--user", "u"])
            .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("3X").is_err());
    }

    #[test]
    fn no_command_is_accepted() {
        assert!(Cli::try_parse_from(["x.run"]).unwrap().command.is_none());
    }
}
