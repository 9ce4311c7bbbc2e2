//! Upload sessions that outlive a push: where each unfinished blob upload lives on the
//! target, so a re-run after a kill continues it instead of sending the blob again.
//!
//! A small JSON file (`{"<endpoint> <repo> <digest>": "<upload URL>"}`) written atomically
//! after every chunk. An upload URL carries the registry's session state, never our
//! credentials. A session the registry has forgotten answers 404 and the upload restarts.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::PushError;

/// The sessions file of `HOME` (`$XDG_STATE_HOME/airlock/push-sessions.json`, else
/// `~/.local/state/airlock/push-sessions.json`).
pub fn default_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("airlock/push-sessions.json"));
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".local/state/airlock/push-sessions.json"))
}

/// The open sessions of one push, kept in memory and in an optional file.
#[derive(Debug, Default)]
pub struct Sessions {
    path: Option<PathBuf>,
    map: Mutex<BTreeMap<String, String>>,
}

impl Sessions {
    /// Sessions kept only in memory.
    pub fn in_memory() -> Sessions {
        Sessions::default()
    }

    /// Sessions read from (and written to) `path`; a missing or unreadable file is empty.
    pub fn load(path: &Path) -> Sessions {
        let map = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Sessions {
            path: Some(path.to_owned()),
            map: Mutex::new(map),
        }
    }

    fn key(endpoint: &str, repo: &str, digest: &str) -> String {
        format!("{endpoint} {repo} {digest}")
    }

    /// The upload URL of an unfinished upload of `digest` into `repo`.
    pub fn get(&self, endpoint: &str, repo: &str, digest: &str) -> Option<String> {
        let map = self.map.lock().expect("not poisoned");
        map.get(&Self::key(endpoint, repo, digest)).cloned()
    }

    /// Records (`Some`) or forgets (`None`) the upload URL of `digest` into `repo`.
    pub fn set(
        &self,
        endpoint: &str,
        repo: &str,
        digest: &str,
        location: Option<&str>,
    ) -> Result<(), PushError> {
        let mut map = self.map.lock().expect("not poisoned");
        let key = Self::key(endpoint, repo, digest);
        let changed = match location {
            Some(l) => map.insert(key, l.to_owned()).as_deref() != Some(l),
            None => map.remove(&key).is_some(),
        };
        match &self.path {
            Some(path) if changed => {
                write_atomically(path, &map).map_err(|source| PushError::Sessions {
                    path: path.clone(),
                    source,
                })
            }
            _ => Ok(()),
        }
    }
}

fn write_atomically(path: &Path, map: &BTreeMap<String, String>) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".push-sessions-")
        .tempfile_in(dir)?;
    serde_json::to_writer(&mut tmp, map)?;
    tmp.flush()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_survive_a_reload_and_are_forgotten_when_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/s.json");
        let s = Sessions::load(&path);
        s.set(
            "https://h",
            "a/b",
            "sha256:1",
            Some("https://h/v2/a/b/blobs/uploads/u?_state=x"),
        )
        .unwrap();
        let again = Sessions::load(&path);
        assert_eq!(
            again.get("https://h", "a/b", "sha256:1").as_deref(),
            Some("https://h/v2/a/b/blobs/uploads/u?_state=x")
        );
        assert_eq!(again.get("https://h", "a/c", "sha256:1"), None);
        again.set("https://h", "a/b", "sha256:1", None).unwrap();
        assert_eq!(
            Sessions::load(&path).get("https://h", "a/b", "sha256:1"),
            None
        );
    }
}
