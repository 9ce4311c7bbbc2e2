//! SSH through the system's OpenSSH client, so `~/.ssh/config`, ProxyJump bastions, agents
//! and `known_hosts` work as users expect.
//!
//! Every host gets one multiplexed connection: `ControlMaster=auto` with its socket in a
//! private temp folder of this run and `ControlPersist`, so the many short commands of a
//! deploy share one TCP connection and one authentication. `BatchMode=yes` (never a
//! password prompt in the middle of a fan-out) and `StrictHostKeyChecking=yes` (an unknown
//! host key is refused) unless the operator passed `--accept-new-host-keys` (then
//! `accept-new`: a new key is learnt, a changed one still refused).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::inventory::Host;

/// How many lines of a remote command's output an error shows.
pub const TAIL_LINES: usize = 12;

/// What can go wrong talking to a host.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// `ssh` could not be started.
    #[error("failed to run {program} (is the OpenSSH client installed?)")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Feeding a remote command's input failed.
    #[error("failed to send {what} to {host}")]
    Send {
        /// The host.
        host: String,
        /// What was sent.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The end of a remote command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The exit code (`None` when killed by a signal); 255 is ssh's own failure.
    pub code: Option<i32>,
    /// Standard output, whole.
    pub stdout: String,
    /// The last [`TAIL_LINES`] lines of standard error.
    pub stderr_tail: String,
}

impl Outcome {
    /// True on exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The last lines of both outputs, indented, for an error message.
    pub fn tail(&self) -> String {
        let mut lines: Vec<&str> = self.stdout.lines().collect();
        lines.extend(self.stderr_tail.lines());
        let skip = lines.len().saturating_sub(TAIL_LINES);
        lines[skip..]
            .iter()
            .map(|l| format!("\n    | {l}"))
            .collect()
    }

    /// "exit code N" or "killed by a signal".
    pub fn status(&self) -> String {
        match self.code {
            Some(255) => "ssh failed (exit code 255)".to_owned(),
            Some(c) => format!("exit code {c}"),
            None => "killed by a signal".to_owned(),
        }
    }
}

/// Options every connection shares.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// The `ssh` program (`ssh` on `PATH` by default).
    pub program: PathBuf,
    /// `accept-new` instead of `yes` for `StrictHostKeyChecking`.
    pub accept_new_host_keys: bool,
    /// An ssh config file (`-F`) instead of `~/.ssh/config`.
    pub config: Option<PathBuf>,
    /// The private folder holding the control sockets.
    pub control_dir: PathBuf,
    /// Seconds to wait for a connection.
    pub connect_timeout: u32,
}

/// One host's multiplexed connection.
#[derive(Debug, Clone)]
pub struct Ssh {
    host: Host,
    opts: SshOptions,
}

/// Quotes `s` for a POSIX shell: `'...'` with every `'` as `'\''`.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:=@,+".contains(&b))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Ssh {
    /// A connection to `host` (nothing connects until the first command).
    pub fn new(host: &Host, opts: &SshOptions) -> Ssh {
        Ssh {
            host: host.clone(),
            opts: opts.clone(),
        }
    }

    /// The host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// `ssh` with the connection's options; `extra` goes right before the destination.
    fn command_with(&self, extra: &[&str]) -> Command {
        let mut c = Command::new(&self.opts.program);
        if let Some(cfg) = &self.opts.config {
            c.arg("-F").arg(cfg);
        }
        let strict = if self.opts.accept_new_host_keys {
            "accept-new"
        } else {
            "yes"
        };
        let control = self.opts.control_dir.join("%C");
        c.args(["-o", "BatchMode=yes"])
            .arg("-o")
            .arg(format!("StrictHostKeyChecking={strict}"))
            .args(["-o", "ControlMaster=auto"])
            .arg("-o")
            .arg(format!("ControlPath={}", control.display()))
            .args(["-o", "ControlPersist=60"])
            .arg("-o")
            .arg(format!("ConnectTimeout={}", self.opts.connect_timeout))
            .args(["-o", "ServerAliveInterval=15"]);
        if let Some(p) = self.host.port {
            c.arg("-p").arg(p.to_string());
        }
        if let Some(k) = &self.host.key {
            c.arg("-i").arg(k);
        }
        if let Some(u) = &self.host.user {
            c.arg("-l").arg(u);
        }
        c.args(extra);
        // `--` ends ssh's options: an address cannot be taken for one.
        c.arg("--").arg(&self.host.address);
        c
    }

    /// `ssh` with the connection's options, before the remote command.
    fn command(&self) -> Command {
        self.command_with(&[])
    }

    /// Runs the shell script `script` on the host (through `sh -c`), with no input.
    pub fn run(&self, script: &str) -> Result<Outcome, SshError> {
        self.run_with_input(script, None::<&mut io::Empty>, "")
    }

    /// Runs `script` on the host with `input` copied to its standard input (`what` names
    /// it in errors); returns when the script ends.
    pub fn run_with_input<R: Read + ?Sized>(
        &self,
        script: &str,
        input: Option<&mut R>,
        what: &str,
    ) -> Result<Outcome, SshError> {
        let mut c = self.command();
        c.arg(format!("sh -c {}", quote(script)));
        c.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        tracing::debug!(host = %self.host.name, %script, "ssh");
        let mut child = c.spawn().map_err(|source| SshError::Spawn {
            program: self.opts.program.display().to_string(),
            source,
        })?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let out_thread = std::thread::spawn(move || read_all(stdout));
        let err_thread = std::thread::spawn(move || read_all(stderr));
        let mut send_error = None;
        if let Some(input) = input {
            let mut stdin = child.stdin.take().expect("piped");
            if let Err(e) = io::copy(input, &mut stdin).and_then(|_| stdin.flush()) {
                send_error = Some(e);
            }
            drop(stdin);
        }
        let status = child.wait().map_err(|source| SshError::Spawn {
            program: self.opts.program.display().to_string(),
            source,
        })?;
        let stdout = out_thread.join().unwrap_or_default();
        let stderr = err_thread.join().unwrap_or_default();
        if let Some(source) = send_error {
            // A broken pipe means the remote side ended: its status and output say why.
            if source.kind() != io::ErrorKind::BrokenPipe || status.success() {
                return Err(SshError::Send {
                    host: self.host.name.clone(),
                    what: what.to_owned(),
                    source,
                });
            }
        }
        let lines: Vec<&str> = stderr.lines().collect();
        let skip = lines.len().saturating_sub(TAIL_LINES);
        Ok(Outcome {
            code: status.code(),
            stdout,
            stderr_tail: lines[skip..].join("\n"),
        })
    }

    /// Closes the multiplexed connection (`ssh -O exit`); errors are ignored, there may be none.
    pub fn close(&self) {
        let _ = self
            .command_with(&["-O", "exit"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn read_all(mut r: impl Read) -> String {
    let mut buf = Vec::new();
    let _ = r.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// A private folder for control sockets: short, since a unix socket path is at most 108
/// bytes (`%C` adds 40).
pub fn control_dir() -> io::Result<tempfile::TempDir> {
    let base = Path::new("/tmp");
    tempfile::Builder::new()
        .prefix("airlock-ssh-")
        .tempdir_in(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::inventory::Role;

    #[test]
    fn quoting_keeps_plain_words_and_wraps_the_rest() {
        assert_eq!(quote("/var/lib/airlock"), "/var/lib/airlock");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }

    #[test]
    fn ssh_gets_batch_mode_strict_keys_a_control_socket_and_the_hosts_values() {
        let host = Host {
            name: "cp1".into(),
            line: 1,
            address: "10.0.0.11".into(),
            user: Some("ops".into()),
            port: Some(2222),
            key: Some("/k/site".into()),
            root: "/".into(),
            listen: "127.0.0.1:5000".parse().unwrap(),
            role: Role::Server,
        };
        let mut opts = SshOptions {
            program: "ssh".into(),
            accept_new_host_keys: false,
            config: None,
            control_dir: "/tmp/c".into(),
            connect_timeout: 10,
        };
        let args = |o: &SshOptions| -> Vec<String> {
            Ssh::new(&host, o)
                .command()
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        let a = args(&opts).join(" ");
        assert!(a.contains("-o BatchMode=yes"), "{a}");
        assert!(a.contains("-o StrictHostKeyChecking=yes"), "{a}");
        assert!(
            a.contains("-o ControlMaster=auto -o ControlPath=/tmp/c/%C -o ControlPersist=60"),
            "{a}"
        );
        assert!(a.ends_with("-p 2222 -i /k/site -l ops -- 10.0.0.11"), "{a}");
        opts.accept_new_host_keys = true;
        opts.config = Some("/etc/site.conf".into());
        let a = args(&opts).join(" ");
        assert!(a.starts_with("-F /etc/site.conf "), "{a}");
        assert!(a.contains("StrictHostKeyChecking=accept-new"), "{a}");
    }

    #[test]
    fn an_outcome_shows_the_last_lines_of_its_output() {
        let o = Outcome {
            code: Some(1),
            stdout: (1..=20).map(|i| format!("line {i}\n")).collect(),
            stderr_tail: "error: boom".into(),
        };
        let t = o.tail();
        assert!(t.ends_with("\n    | line 20\n    | error: boom"), "{t}");
        assert!(!t.contains("line 9\n"), "{t}");
        assert_eq!(o.status(), "exit code 1");
    }
}
