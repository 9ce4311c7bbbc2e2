//! `extract`: lay out all files of the payload, or the named ones, under a folder.
//!
//! The steps, each finished before the next starts:
//!
//! 1. **Preflight**: create the target if missing (its parent must exist), remove staging
//!    folders a killed earlier run left behind, and compare the space the selection needs
//!    (file sizes plus 4 KiB per entry for block rounding and folder blocks; one inode per
//!    entry) with what `statvfs` reports. Too little is refused before anything is written.
//! 2. **Staging**: a fresh `.airlock-extract-*` folder inside the target (same filesystem,
//!    so the final step is a rename). Folders are created owner-writable; every regular file
//!    is created (`O_EXCL`) at its final size.
//! 3. **Content**: the work is grouped by frame. Frames are decoded in parallel, each exactly
//!    once, after its SHA-256 is checked; every slice of every file whose content lives in
//!    the frame is then written with `pwrite` (de-duplicated content goes to each path).
//! 4. **Links and metadata**: symlinks (target verbatim), hardlinks, modes (`mode & 0o7777`)
//!    and mtimes (the meta record's `mtime`; folders last, deepest first; symlinks keep
//!    theirs).
//! 5. **Into place**: every conflict is found before anything moves. A missing destination
//!    is renamed into place; folders merge (and get their mode and mtime); files and
//!    symlinks replace files and symlinks atomically (`rename`). A folder never replaces a
//!    symlink (it is never followed) or a file, and nothing replaces a folder. Then the
//!    staging folder is removed.
//!
//! Any failure before step 5 (a damaged frame, a full disk) removes the staging folder and
//! leaves the target as it was. Each staging folder is locked (`flock`) while its extract
//! runs; only unlocked ones are removed as stale, so two extracts into one target at the same
//! time do not destroy each other's work (the later rename wins).

mod place;
mod select;

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{symlink, DirBuilderExt, FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use airlock_payload::{Installer, Payload};
use indicatif::ProgressBar;
use rayon::prelude::*;

use crate::sys::{self, SpaceProbe};
use crate::{Error, Result};
use airlock_payload::human_bytes;

use select::{select, Item};

/// Name prefix of staging folders inside the target.
pub const STAGING_PREFIX: &str = ".airlock-extract-";

/// Space reserved per entry on top of file sizes: block rounding and folder blocks.
const MARGIN_PER_ENTRY: u64 = 4096;

/// What to extract and where.
pub struct ExtractOptions<'a> {
    /// The target folder; created if missing.
    pub target: &'a Path,
    /// Paths inside the payload; all when empty.
    pub paths: &'a [String],
    /// Where free space comes from ([`sys::Statvfs`] for real).
    pub space: &'a dyn SpaceProbe,
    /// Progress by bytes written; its length is set here.
    pub bar: &'a ProgressBar,
    /// Called with each frame's stored bytes once decoded, so a mapped installer's pages
    /// can leave resident memory (see `InstallerFile::release`); `&|_| {}` otherwise.
    pub release: &'a (dyn Fn(&[u8]) + Sync),
}

/// What an extract did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExtractSummary {
    /// Entries laid out (folders, files, links).
    pub entries: usize,
    /// Regular files among them.
    pub files: usize,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Frames decoded (each needed frame exactly once).
    pub frames_decoded: usize,
}

/// Extracts the selected entries of `payload` into `opts.target` (see the module docs).
pub fn extract(
    installer: &Installer<'_>,
    payload: &Payload<'_>,
    opts: &ExtractOptions<'_>,
) -> Result<ExtractSummary> {
    let items = select(payload.index(), opts.paths)?;
    let created_target = ensure_target(opts.target)?;
    let result = extract_items(installer, payload, &items, opts);
    if result.is_err() && created_target {
        // Leave no trace of a refused or failed extract: the folder we made is empty again.
        let _ = fs::remove_dir(opts.target);
    }
    result
}

fn extract_items(
    installer: &Installer<'_>,
    payload: &Payload<'_>,
    items: &[Item<'_>],
    opts: &ExtractOptions<'_>,
) -> Result<ExtractSummary> {
    let target = opts.target;
    remove_stale_staging(target)?;
    preflight(items, target, opts.space)?;

    let staging = Staging::new(target)?;
    let root_buf = staging.path.clone();
    let root = root_buf.as_path();
    tracing::debug!(staging = %root.display(), entries = items.len(), "staging");
    let mtime = UNIX_EPOCH + Duration::from_secs(installer.meta().mtime);
    let work = || -> Result<(usize, u64)> {
        create_entries(items, root)?;
        let written = write_content(payload, items, root, opts)?;
        finish_entries(items, root, mtime)?;
        place::move_into_place(root, target, mtime)?;
        Ok(written)
    };
    let (frames_decoded, bytes) = match work() {
        Ok(w) => w,
        Err(e) => {
            // Remove the staging folder before the error is reported, so the message may
            // say it is gone.
            drop(staging);
            return Err(space_ran_out(e, target, root));
        }
    };
    staging.remove()?;

    let files = items
        .iter()
        .filter(|i| matches!(i, Item::File { .. }))
        .count();
    Ok(ExtractSummary {
        entries: items.len(),
        files,
        bytes,
        frames_decoded,
    })
}

/// Makes sure `target` is a folder; returns whether it was created.
fn ensure_target(target: &Path) -> Result<bool> {
    match fs::metadata(target) {
        Ok(m) if m.is_dir() => Ok(false),
        Ok(_) => Err(Error::Fs {
            step: "use as the target folder",
            path: target.to_owned(),
            source: io::Error::new(
                io::ErrorKind::NotADirectory,
                "it exists and is not a folder",
            ),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir(target).map_err(Error::fs("create the target folder", target))?;
            Ok(true)
        }
        Err(e) => Err(Error::fs("inspect the target folder", target)(e)),
    }
}

/// Removes `.airlock-extract-*` folders an interrupted earlier run left in `target`.
fn remove_stale_staging(target: &Path) -> Result<()> {
    for child in fs::read_dir(target).map_err(Error::fs("read the target folder", target))? {
        let child = child.map_err(Error::fs("read the target folder", target))?;
        let name = child.file_name();
        if !name
            .as_encoded_bytes()
            .starts_with(STAGING_PREFIX.as_bytes())
        {
            continue;
        }
        let path = child.path();
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            // A folder whose lock is held belongs to an extract running right now.
            let Ok(Some(_lock)) = sys::try_lock_dir(&path) else {
                tracing::debug!(path = %path.display(), "staging folder in use by another extract");
                continue;
            };
            tracing::debug!(path = %path.display(), "removing a staging folder left by an interrupted extract");
            place::remove_tree(&path)
                .map_err(Error::fs("remove the stale staging folder", &path))?;
        }
    }
    Ok(())
}

fn preflight(items: &[Item<'_>], target: &Path, space: &dyn SpaceProbe) -> Result<()> {
    let file_bytes: u64 = items
        .iter()
        .map(|i| {
            if let Item::File { size, .. } = i {
                *size
            } else {
                0
            }
        })
        .sum();
    let need_bytes = file_bytes + MARGIN_PER_ENTRY * items.len() as u64;
    let need_inodes = items.len() as u64;
    let free = space
        .free_space(target)
        .map_err(Error::fs("query free space of", target))?;
    tracing::debug!(need_bytes, need_inodes, ?free, "preflight");
    let bytes_short = need_bytes > free.bytes;
    let inodes_short = free.inodes.is_some_and(|n| need_inodes > n);
    let (need, available) = match (bytes_short, inodes_short, free.inodes) {
        (true, true, Some(n)) => (
            format!("{} and {need_inodes} inodes", human_bytes(need_bytes)),
            format!("{} and {n} inodes", human_bytes(free.bytes)),
        ),
        (false, true, Some(n)) => (format!("{need_inodes} inodes"), format!("{n} inodes")),
        (true, _, _) => (human_bytes(need_bytes), human_bytes(free.bytes)),
        _ => return Ok(()),
    };
    Err(Error::NoSpace {
        dir: target.to_owned(),
        need,
        available,
    })
}

/// Turns a filesystem error caused by a full disk (`ENOSPC`, `EDQUOT`) into
/// [`Error::SpaceRanOut`] naming the target and the entry (relative to the staging folder
/// `staging` or to `target`); any other error is returned unchanged. Preflight makes this
/// rare, but another writer can take the space while we work.
fn space_ran_out(e: Error, target: &Path, staging: &Path) -> Error {
    match e {
        Error::Fs { step, path, source }
            if matches!(
                source.kind(),
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
            ) =>
        {
            let entry = path
                .strip_prefix(staging)
                .or_else(|_| path.strip_prefix(target))
                .unwrap_or(&path)
                .display()
                .to_string();
            Error::SpaceRanOut {
                dir: target.to_owned(),
                step,
                entry,
                source,
            }
        }
        other => other,
    }
}

/// The staging folder; removed when dropped unless [`Staging::remove`] already did.
struct Staging {
    path: PathBuf,
    /// Held while we work, so a concurrent extract does not take our folder for stale.
    _lock: Option<sys::DirLock>,
}

impl Staging {
    fn new(target: &Path) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .tempdir_in(target)
            .map_err(Error::fs("create a staging folder in", target))?;
        let lock = sys::try_lock_dir(dir.path())
            .map_err(Error::fs("lock the staging folder", dir.path()))?;
        // Our own removal copes with read-only folders; TempDir's would not.
        Ok(Staging {
            path: dir.keep(),
            _lock: lock,
        })
    }

    fn remove(mut self) -> Result<()> {
        let path = std::mem::take(&mut self.path);
        place::remove_tree(&path).map_err(Error::fs("remove the staging folder", &path))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        if let Err(e) = place::remove_tree(&self.path) {
            tracing::warn!(
                "failed to remove the staging folder {}: {e}",
                self.path.display()
            );
        }
    }
}

/// Step 2: folders (owner-writable while we work) and every regular file at its size.
fn create_entries(items: &[Item<'_>], root: &Path) -> Result<()> {
    let mut builder = DirBuilder::new();
    builder.mode(0o700);
    for item in items {
        if let Item::Dir { path, .. } = item {
            let p = root.join(path);
            builder.create(&p).map_err(Error::fs("create folder", &p))?;
        }
    }
    items.par_iter().try_for_each(|item| {
        let Item::File { path, size, .. } = item else {
            return Ok(());
        };
        let p = root.join(path);
        let file = sys::create_new_nofollow(&p).map_err(Error::fs("create file", &p))?;
        file.set_len(*size).map_err(Error::fs("size file", &p))
    })
}

/// A piece of a file whose bytes live in one frame.
#[derive(Debug, Clone, Copy)]
struct Slice {
    /// Index into the items.
    item: usize,
    /// Where the piece goes in the file.
    file_offset: u64,
    /// Where the piece starts in the decoded frame.
    frame_offset: usize,
    /// Length of the piece.
    len: usize,
}

/// Step 3: decode every needed frame once (in parallel) and write its slices. Returns the
/// number of frames decoded and the bytes written.
fn write_content(
    payload: &Payload<'_>,
    items: &[Item<'_>],
    root: &Path,
    opts: &ExtractOptions<'_>,
) -> Result<(usize, u64)> {
    let bar = opts.bar;
    let index = payload.index();
    let mut by_frame: BTreeMap<usize, Vec<Slice>> = BTreeMap::new();
    let mut total = 0u64;
    for (n, item) in items.iter().enumerate() {
        let Item::File {
            path, size, digest, ..
        } = item
        else {
            continue;
        };
        if *size == 0 {
            continue;
        }
        let blob = index
            .blob(digest)
            .filter(|b| b.size == *size)
            .ok_or_else(|| {
                Error::Payload(airlock_payload::Error::Corrupt {
                    what: format!("no content stored for {path}"),
                })
            })?;
        let (start, end) = (blob.raw_offset, blob.raw_offset + blob.size);
        for frame in index.frames_for(blob.raw_offset, blob.size) {
            let frame_start = index.frame_raw_start(frame);
            let frame_end = frame_start + index.frames()[frame].raw_len;
            let (from, to) = (start.max(frame_start), end.min(frame_end));
            by_frame.entry(frame).or_default().push(Slice {
                item: n,
                file_offset: from - start,
                frame_offset: (from - frame_start) as usize,
                len: (to - from) as usize,
            });
        }
        total += size;
    }
    bar.set_length(total);
    let decoded = AtomicUsize::new(0);
    let work: Vec<(usize, Vec<Slice>)> = by_frame.into_iter().collect();
    work.par_iter()
        .try_for_each_init(Vec::new, |buf, (frame, slices)| {
            payload
                .decode_frame(*frame, buf)
                .map_err(|source| Error::Content {
                    entries: names(items, slices),
                    source,
                })?;
            (opts.release)(payload.frame_stored(*frame));
            decoded.fetch_add(1, Ordering::Relaxed);
            for s in slices {
                let p = root.join(items[s.item].path());
                let file = sys::open_write_nofollow(&p).map_err(Error::fs("open file", &p))?;
                file.write_all_at(&buf[s.frame_offset..s.frame_offset + s.len], s.file_offset)
                    .map_err(Error::fs("write file", &p))?;
                bar.inc(s.len as u64);
            }
            Ok::<(), Error>(())
        })?;
    bar.finish_and_clear();
    Ok((decoded.into_inner(), total))
}

/// Names the entries a frame's slices belong to: up to three paths and a count.
fn names(items: &[Item<'_>], slices: &[Slice]) -> String {
    let paths: Vec<&str> = slices.iter().map(|s| items[s.item].path()).collect();
    match paths.len() {
        0..=3 => paths.join(", "),
        n => format!("{} and {} more", paths[..3].join(", "), n - 3),
    }
}

/// Step 4: symlinks, hardlinks, file modes and mtimes, then folders deepest first.
fn finish_entries(items: &[Item<'_>], root: &Path, mtime: SystemTime) -> Result<()> {
    for item in items {
        match item {
            Item::Symlink { path, target } => {
                let p = root.join(path);
                symlink(target, &p).map_err(Error::fs("create symlink", &p))?;
            }
            Item::Hardlink { path, target } => {
                let p = root.join(path);
                fs::hard_link(root.join(target), &p).map_err(Error::fs("create hardlink", &p))?;
            }
            _ => {}
        }
    }
    items.par_iter().try_for_each(|item| {
        let Item::File { path, mode, .. } = item else {
            return Ok(());
        };
        let p = root.join(path);
        let file = sys::open_write_nofollow(&p).map_err(Error::fs("open file", &p))?;
        file.set_modified(mtime)
            .map_err(Error::fs("set the modification time of", &p))?;
        file.set_permissions(Permissions::from_mode(mode & 0o7777))
            .map_err(Error::fs("set the mode of", &p))
    })?;
    // Reverse path order puts every folder after all of its descendants.
    for item in items.iter().rev() {
        let Item::Dir { path, mode } = item else {
            continue;
        };
        let p = root.join(path);
        let dir = sys::open_dir_nofollow(&p).map_err(Error::fs("open folder", &p))?;
        dir.set_modified(mtime)
            .map_err(Error::fs("set the modification time of", &p))?;
        dir.set_permissions(Permissions::from_mode(mode & 0o7777))
            .map_err(Error::fs("set the mode of", &p))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
