//! `deploy` and `undeploy`: install a whole site from one operator host over SSH, with the
//! installer crossing the operator's link once.
//!
//! A site is rarely one node. `./edge.run deploy -i nodes.yaml` reads an Ansible-shaped
//! inventory ([`inventory`]), reaches every host through the system's OpenSSH client with
//! one multiplexed connection each ([`ssh`]), and then ([`run`]):
//!
//! 1. verifies the operator's copy of the installer (every byte) before anything is sent;
//! 2. runs a remote preflight on every host (reachable, space under its root, a `curl` or
//!    `wget` to fetch with, the remote user) before any node changes;
//! 3. uploads the installer to the first node only, resuming a partial upload from the
//!    remote size, under a temp name in `<root>/var/lib/airlock/`, renamed to the
//!    persistent copy once its trailer digest matches the operator's;
//! 4. installs the first node: its registry then serves the installer file itself
//!    (`GET /airlock/installer`, with Range, see [`crate::registry`]);
//! 5. every other node fetches the installer from the first node (at most `--fanout` at
//!    once, resumable), checks the trailer digest, and installs; k3s servers one at a
//!    time after the first (`--cluster-init`), agents in parallel, joining with the URL
//!    and token of the first server;
//! 6. prints a summary table and fails when any node failed, naming why with the last
//!    lines of the remote command.
//!
//! A re-run converges: a node whose copy matches and whose deploy marker names this
//! installer, and whose registry answers, is skipped. `undeploy` runs the installer's own
//! `uninstall` on every node and removes what deploy added.

pub mod inventory;
pub mod run;
pub mod ssh;

pub use inventory::{Host, Inventory, InventoryError, Role};
pub use run::{deploy, undeploy, DeployOptions};
pub use ssh::{Ssh, SshError, SshOptions};

/// What can go wrong in `deploy` and `undeploy`.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The inventory is unusable.
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// ssh could not be run.
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// The private folder of the control sockets could not be made.
    #[error("failed to create a private folder for the ssh control sockets")]
    ControlDir(#[source] std::io::Error),
    /// The remote preflight found problems; nothing was changed on any node.
    #[error("preflight failed on {} host(s), nothing was changed:{}", .hosts, .problems.iter().map(|p| format!("\n  - {p}")).collect::<String>())]
    Preflight {
        /// How many hosts have problems.
        hosts: usize,
        /// One line per problem, naming the host.
        problems: Vec<String>,
    },
    /// The inventory asks for something this installer cannot do.
    #[error("{}: {why}", .path.display())]
    Unsupported {
        /// The inventory.
        path: std::path::PathBuf,
        /// What and why.
        why: String,
    },
    /// Some nodes failed (the summary above says why); the others went on.
    #[error("{what} failed on {}: {}", if .failed.len() == 1 { "1 node".to_owned() } else { format!("{} nodes", .failed.len()) }, .failed.join(", "))]
    NodesFailed {
        /// "deploy" or "undeploy".
        what: &'static str,
        /// The failed hosts' names.
        failed: Vec<String>,
    },
}
