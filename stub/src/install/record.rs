//! The install record, `<root>/var/lib/airlock/<name>.json`: what an install created (and
//! whether it existed before), which services it started, which mirror files it wrote and
//! where the persistent installer copy lives.
//!
//! The install saves the record after each step ([`Record::save`]), so a run killed half-way
//! leaves a record of everything it did; a re-run loads it ([`Record::load_or_new`]) and
//! adds to it (the first note of a path wins, so a file created by the first run stays
//! "created by us" on the second). The `undo` module undoes exactly what the record names
//! and nothing else.
//!
//! The record only gathers what the steps below it produce: [`PathRecord`]s from
//! [`super::fsutil`], [`ServiceRecord`]s from [`super::service`]; it imports their types,
//! never the other way round.

use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::fsutil::{check_logical, create_dirs, logical_parent, resolve, write_atomic};
use super::fsutil::{PathKind, PathRecord};
use super::service::{ServiceRecord, Supervision};
use super::{Error, Result, STATE_DIR};

/// The record's format version.
pub const RECORD_FORMAT: u32 = 1;

/// Everything an install did, in the order it did it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// [`RECORD_FORMAT`].
    pub format: u32,
    /// The installer's name.
    pub name: String,
    /// The installer's version (of the last install run).
    pub version: String,
    /// Files and folders written or created, in order.
    pub paths: Vec<PathRecord>,
    /// Services started, in order.
    pub services: Vec<ServiceRecord>,
    /// Mirror config files written.
    pub mirror_files: Vec<String>,
    /// The persistent installer copy.
    pub installer_copy: Option<String>,
}

impl Record {
    /// An empty record.
    pub fn new(name: &str, version: &str) -> Record {
        Record {
            format: RECORD_FORMAT,
            name: name.to_owned(),
            version: version.to_owned(),
            paths: Vec::new(),
            services: Vec::new(),
            mirror_files: Vec::new(),
            installer_copy: None,
        }
    }

    /// Where the record of installer `name` lives, inside the root.
    pub fn logical_path(name: &str) -> String {
        format!("{STATE_DIR}/{name}.json")
    }

    /// Loads the record of `name` under `root`; `None` when there is none.
    pub fn load(root: &Path, name: &str) -> Result<Option<Record>> {
        let path = resolve(root, &Self::logical_path(name));
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::fs("read the install record", path)(e)),
        };
        let record: Record = serde_json::from_slice(&bytes).map_err(|source| Error::Record {
            path: path.clone(),
            source,
        })?;
        // Paths come back from disk: never let one escape the root.
        for p in record
            .paths
            .iter()
            .map(|p| &p.path)
            .chain(&record.mirror_files)
            .chain(&record.installer_copy)
        {
            check_logical(p)?;
        }
        for s in &record.services {
            if let Supervision::Daemon(d) = &s.supervision {
                check_logical(&d.pid_file)?;
                check_logical(&d.log_file)?;
            }
        }
        Ok(Some(record))
    }

    /// Loads the record of a previous (possibly half-finished) install, or starts a new one;
    /// the version is updated to `version`.
    pub fn load_or_new(root: &Path, name: &str, version: &str) -> Result<Record> {
        let mut record = Self::load(root, name)?.unwrap_or_else(|| Record::new(name, version));
        record.version = version.to_owned();
        Ok(record)
    }

    /// Writes the record atomically. Folders it needs are created and noted first.
    pub fn save(&mut self, root: &Path) -> Result<()> {
        let created = create_dirs(root, STATE_DIR)?;
        self.note_paths(created);
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::Record {
            path: resolve(root, &Self::logical_path(&self.name)),
            source: e,
        })?;
        write_atomic(root, &Self::logical_path(&self.name), &json, 0o644)?;
        Ok(())
    }

    /// Notes paths; a path already noted keeps its first note (and so its `existed_before`),
    /// except that a folder noted again as a [`PathKind::Tree`] becomes one.
    pub fn note_paths(&mut self, records: impl IntoIterator<Item = PathRecord>) {
        for r in records {
            match self.paths.iter_mut().find(|p| p.path == r.path) {
                // A folder first noted as a parent, then as a whole tree of ours: a tree.
                Some(p) if p.kind == PathKind::Dir && r.kind == PathKind::Tree => {
                    p.kind = PathKind::Tree
                }
                Some(_) => {}
                None => self.paths.push(r),
            }
        }
    }

    /// Write-ahead: notes `paths` and their missing parent folders *before* they are
    /// created, and saves the record, so a run killed while creating them leaves a record
    /// that names them (a noted path that was never created is skipped by uninstall).
    pub fn note_ahead(&mut self, root: &Path, paths: &[(&str, PathKind)]) -> Result<()> {
        let mut notes = Vec::new();
        for &(logical, kind) in paths {
            check_logical(logical)?;
            let mut ancestors: Vec<&str> = Vec::new();
            let mut cur = logical_parent(logical);
            while let Some(dir) = cur.filter(|d| *d != "/" && !d.is_empty()) {
                ancestors.push(dir);
                cur = logical_parent(dir);
            }
            for dir in ancestors.into_iter().rev() {
                if fs::symlink_metadata(resolve(root, dir)).is_err() {
                    notes.push(PathRecord {
                        path: dir.to_owned(),
                        kind: PathKind::Dir,
                        existed_before: false,
                    });
                }
            }
            notes.push(PathRecord {
                path: logical.to_owned(),
                kind,
                existed_before: fs::symlink_metadata(resolve(root, logical)).is_ok(),
            });
        }
        self.note_paths(notes);
        self.save(root)
    }

    /// Notes a service; one with the same name is replaced (the latest way it runs).
    pub fn note_service(&mut self, service: ServiceRecord) {
        match self.services.iter_mut().find(|s| s.name == service.name) {
            Some(s) => *s = service,
            None => self.services.push(service),
        }
    }

    /// Notes mirror files written (their paths must also be noted with [`Self::note_paths`]).
    pub fn note_mirror_files(&mut self, files: impl IntoIterator<Item = String>) {
        for f in files {
            if !self.mirror_files.contains(&f) {
                self.mirror_files.push(f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_with_a_path_escaping_the_root_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut record = Record::new("edge", "1");
        record.save(root).unwrap();
        record.paths.push(PathRecord {
            path: "/../../etc/passwd".into(),
            kind: PathKind::File,
            existed_before: false,
        });
        let json = serde_json::to_vec(&record).unwrap();
        fs::write(root.join("var/lib/airlock/edge.json"), json).unwrap();
        let err = Record::load(root, "edge").unwrap_err();
        assert!(matches!(err, Error::InvalidPath(_)), "{err}");
    }
}
