//! Hook scripts from the spec (`pre-install`, `post-install`): written from the payload to
//! `<root>/var/lib/airlock/hooks/<name>-<stage>` (mode 0700) and executed directly (their
//! `#!` line picks the interpreter), working folder the root, stdout and stderr into
//! `<root>/var/lib/airlock/<name>-<stage>.log`. A hook that exits non-zero, is killed or
//! runs longer than [`HOOK_TIMEOUT`] stops the install; its output is shown.
//!
//! The environment a hook sees, on top of the installer's:
//!
//! | variable | value |
//! |---|---|
//! | `AIRLOCK_HOOK` | `pre-install` or `post-install` |
//! | `AIRLOCK_NAME`, `AIRLOCK_VERSION` | the installer's name and version |
//! | `AIRLOCK_ROOT` | the install root (`/` or `--root DIR`, absolute) |
//! | `AIRLOCK_REGISTRY` | the registry address, `host:port` (it answers from `post-install` on) |
//! | `AIRLOCK_INSTALLER` | the installer file being run |
//! | `AIRLOCK_INSTALLER_COPY` | the persistent copy (exists from `post-install` on) |
//! | `AIRLOCK_ENGINE` | `none`, `containerd` or `k3s` |
//! | `AIRLOCK_CONTAINERD_SOCKET` | engine `containerd`: its socket |
//! | `KUBECONFIG` | engine `k3s`: the kubeconfig k3s writes |

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use airlock_payload::{Hook, Payload};

use super::fsutil::{resolve, write_atomic, PathKind};
use super::host::{Host, RunEnd, RunSpec};
use super::record::Record;
use super::{Error, Result, STATE_DIR};

/// How long a hook may run.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Where the script of `stage` is written, inside the root.
pub fn script_path(name: &str, hook: &Hook) -> String {
    format!("{STATE_DIR}/hooks/{name}-{}", hook.stage)
}

/// Where its output goes, inside the root.
pub fn log_path(name: &str, hook: &Hook) -> String {
    format!("{STATE_DIR}/{name}-{}.log", hook.stage)
}

/// "exited with code 3", "was killed by a signal", "timed out after 30 min".
pub fn describe_end(end: RunEnd, timeout: Duration) -> String {
    match end {
        RunEnd::Exited(code) => format!("exited with code {code}"),
        RunEnd::Signalled => "was killed by a signal".to_owned(),
        RunEnd::TimedOut => format!("timed out after {} s", timeout.as_secs()),
    }
}

/// The last `lines` lines of a log, each indented by `  | `; a note when it is empty.
pub fn tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read(log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    if all.is_empty() {
        return "  | (no output)".to_owned();
    }
    let skip = all.len().saturating_sub(lines);
    let mut out = String::new();
    if skip > 0 {
        out.push_str(&format!(
            "  | ... ({skip} earlier lines in {})\n",
            log.display()
        ));
    }
    out.push_str(
        &all[skip..]
            .iter()
            .map(|l| format!("  | {l}"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    out
}

/// Writes the hook's script from the payload (noted in the record first) and runs it with
/// `env`. Returns its output (indented) on success.
pub fn run_hook(
    root: &Path,
    name: &str,
    hook: &Hook,
    payload: &Payload<'_>,
    env: &[(String, String)],
    record: &mut Record,
    host: &dyn Host,
) -> Result<String> {
    let script = script_path(name, hook);
    let log = log_path(name, hook);
    record.note_ahead(root, &[(&script, PathKind::File), (&log, PathKind::File)])?;
    let blob = payload
        .index()
        .blob(&hook.digest)
        .ok_or_else(|| Error::Hook {
            stage: hook.stage.to_string(),
            end: "is not stored in the installer".into(),
            log: resolve(root, &log),
            output: String::new(),
        })?;
    let mut bytes = Vec::with_capacity(blob.size as usize);
    payload
        .blob_reader(blob)
        .read_to_end(&mut bytes)
        .map_err(Error::fs(
            "read the hook script from",
            resolve(root, &script),
        ))?;
    write_atomic(root, &script, &bytes, 0o700)?;

    let mut vars = env.to_vec();
    vars.push(("AIRLOCK_HOOK".to_owned(), hook.stage.to_string()));
    let log_real = resolve(root, &log);
    let end = host
        .run_logged(&RunSpec {
            program: &resolve(root, &script),
            args: &[],
            env: &vars,
            cwd: root,
            log: &log_real,
            timeout: HOOK_TIMEOUT,
        })
        .map_err(|e| Error::Hook {
            stage: hook.stage.to_string(),
            end: format!("could not be started ({e})"),
            log: log_real.clone(),
            output: String::new(),
        })?;
    let output = tail(&log_real, 40);
    if end == RunEnd::Exited(0) {
        Ok(output)
    } else {
        Err(Error::Hook {
            stage: hook.stage.to_string(),
            end: describe_end(end, HOOK_TIMEOUT),
            log: log_real,
            output,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines_and_says_how_many_were_cut() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        std::fs::write(&log, "a\nb\nc\n").unwrap();
        assert_eq!(tail(&log, 5), "  | a\n  | b\n  | c");
        let t = tail(&log, 2);
        assert!(t.starts_with("  | ... (1 earlier lines in "), "{t}");
        assert!(t.ends_with("  | b\n  | c"), "{t}");
        std::fs::write(&log, "").unwrap();
        assert_eq!(tail(&log, 2), "  | (no output)");
    }
}
