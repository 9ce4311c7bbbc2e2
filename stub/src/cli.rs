//! The command line, as clap parses it. `main.rs` parses; [`crate::commands::run`] acts.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const AFTER_HELP: &str = "\
Exit codes: 0 success, 1 error, 2 usage, 3 the installer is corrupt or truncated.

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
}

/// Arguments of `registry serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5000")]
    pub listen: SocketAddr,
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

/// Arguments of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Also decompress every content and check its own digest (slower).
    #[arg(long)]
    pub deep: bool,
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
    fn no_command_is_accepted() {
        assert!(Cli::try_parse_from(["x.run"]).unwrap().command.is_none());
    }
}
