//! The build cache on disk: compressed frames and a stat cache of source digests, so a
//! rebuild only reads and compresses what changed.
//!
//! Both live in the build cache folder that registry pulls use (`AIRLOCK_CACHE_DIR`, see
//! [`crate::image::RegistryOptions::default_cache_dir`]):
//!
//! - `frames/<2 hex>/<64 hex>`: one [`FrameCache`] entry per frame key (the payload writer
//!   encodes and checks entries). Written to a temporary file in the same folder and renamed,
//!   so concurrent builds never see a torn entry; a use touches the file's times, and
//!   [`prune`] removes the least recently used entries beyond a size.
//! - `stat/<64 hex>`: per build (keyed by the spec's canonical path), a [`StatCache`] mapping a
//!   source path and its (size, mtime, ctime, inode, device) to its SHA-256, like git's index.
//!   An entry whose mtime is within [`RACY_WINDOW_NS`] of when it was recorded is not trusted:
//!   the file could have changed again in the same timestamp tick ("racy git").
//!
//! Neither changes the output: a cached build is byte-identical to a cold one.

use std::collections::HashMap;
use std::fs::{self, File, FileTimes};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use airlock_payload::{FrameCache, FrameKey, Sha256Digest};
use serde::{Deserialize, Serialize};

/// Entries whose mtime is this close to (or after) the time they were recorded are rehashed.
pub const RACY_WINDOW_NS: i128 = 2_000_000_000;

/// The default bound of the frame cache: 10 GiB.
pub const DEFAULT_MAX: u64 = 10 << 30;

/// What went wrong in a cache command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A size such as `--cache-max 5G` could not be read.
    #[error("failed to read size {0:?}: expected a number with an optional K, M, G or T suffix (powers of 1024), e.g. 512M or 10G")]
    BadSize(String),
    /// Reading or writing the cache failed.
    #[error("failed to {context}")]
    Io {
        /// The step.
        context: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// Parses a size: bytes, or a number with a K/M/G/T suffix (powers of 1024; `KiB`, `KB`,
/// `k` are accepted alike).
pub fn parse_size(text: &str) -> Result<u64> {
    let bad = || Error::BadSize(text.to_owned());
    let t = text.trim();
    let digits = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let num: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(bad()),
    };
    let bytes = num * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// The frame cache of a build cache folder (`<cache>/frames/`).
#[derive(Debug, Clone)]
pub struct FrameStore {
    dir: PathBuf,
}

impl FrameStore {
    /// The frame store of build cache folder `cache_dir` (created on first store).
    pub fn new(cache_dir: &Path) -> FrameStore {
        FrameStore {
            dir: cache_dir.join("frames"),
        }
    }

    fn path(&self, key: &FrameKey) -> PathBuf {
        let hex = key.to_hex();
        self.dir.join(&hex[..2]).join(hex)
    }

    fn try_store(&self, key: &FrameKey, entry: &[u8]) -> io::Result<()> {
        let path = self.path(key);
        let dir = path.parent().expect("an entry has a folder");
        fs::create_dir_all(dir)?;
        let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
        tmp.write_all(entry)?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    }
}

impl FrameCache for FrameStore {
    fn load(&self, key: &FrameKey) -> Option<Vec<u8>> {
        let path = self.path(key);
        let bytes = fs::read(&path).ok()?;
        // Mark it used for the LRU order of `prune`.
        let now = SystemTime::now();
        if let Ok(f) = File::options().write(true).open(&path) {
            let _ = f.set_times(FileTimes::new().set_accessed(now).set_modified(now));
        }
        Some(bytes)
    }

    fn store(&self, key: &FrameKey, entry: &[u8]) {
        if let Err(e) = self.try_store(key, entry) {
            tracing::warn!(dir = %self.dir.display(), "failed to store a frame in the build cache: {e}");
        }
    }
}

/// What [`prune`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Entries removed.
    pub removed: u64,
    /// Bytes they held.
    pub freed: u64,
    /// Entries left.
    pub kept: u64,
    /// Bytes left.
    pub kept_bytes: u64,
}

struct CachedFile {
    path: PathBuf,
    size: u64,
    used: SystemTime,
}

/// Files under `dir` (recursively), with size and last use (mtime). Temporary files of a
/// store still in progress (`.tmp-*`) are skipped unless older than an hour (a killed build).
fn files_under(dir: &Path) -> Result<Vec<CachedFile>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    let hour_ago = SystemTime::now() - std::time::Duration::from_secs(3600);
    while let Some(d) = stack.pop() {
        let rd = match fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(format!("list {}", d.display()))(e)),
        };
        for ent in rd {
            let ent = ent.map_err(io_err(format!("list {}", d.display())))?;
            let Ok(md) = ent.metadata() else { continue };
            if md.is_dir() {
                stack.push(ent.path());
                continue;
            }
            let used = md.modified().unwrap_or(UNIX_EPOCH);
            if ent.file_name().to_string_lossy().starts_with(".tmp-") && used > hour_ago {
                continue;
            }
            out.push(CachedFile {
                path: ent.path(),
                size: md.len(),
                used,
            });
        }
    }
    Ok(out)
}

/// Removes the least recently used frames of `cache_dir` until they hold at most `max`
/// bytes. Safe while builds run: a build that loses an entry encodes that frame again.
pub fn prune(cache_dir: &Path, max: u64) -> Result<PruneReport> {
    let mut files = files_under(&cache_dir.join("frames"))?;
    files.sort_by(|a, b| b.used.cmp(&a.used).then_with(|| a.path.cmp(&b.path)));
    let mut report = PruneReport::default();
    for f in files {
        if report.kept_bytes + f.size <= max {
            report.kept += 1;
            report.kept_bytes += f.size;
            continue;
        }
        match fs::remove_file(&f.path) {
            Ok(()) => {
                report.removed += 1;
                report.freed += f.size;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("remove {}", f.path.display()))(e)),
        }
    }
    Ok(report)
}

/// What a build cache folder holds (`airlock cache info`).
#[derive(Debug, Clone, Serialize)]
pub struct CacheInfo {
    /// The folder.
    pub dir: PathBuf,
    /// Frame entries and their bytes.
    pub frames: u64,
    /// Bytes of frame entries.
    pub frames_bytes: u64,
    /// Stat cache files (one per spec built).
    pub stat_files: u64,
    /// Bytes of stat cache files.
    pub stat_bytes: u64,
    /// Registry blobs (`blobs/sha256/`).
    pub blobs: u64,
    /// Bytes of registry blobs.
    pub blobs_bytes: u64,
}

/// Counts what `cache_dir` holds.
pub fn info(cache_dir: &Path) -> Result<CacheInfo> {
    let count = |sub: &str| -> Result<(u64, u64)> {
        let files = files_under(&cache_dir.join(sub))?;
        Ok((files.len() as u64, files.iter().map(|f| f.size).sum()))
    };
    let (frames, frames_bytes) = count("frames")?;
    let (stat_files, stat_bytes) = count("stat")?;
    let (blobs, blobs_bytes) = count("blobs")?;
    Ok(CacheInfo {
        dir: cache_dir.to_owned(),
        frames,
        frames_bytes,
        stat_files,
        stat_bytes,
        blobs,
        blobs_bytes,
    })
}

impl std::fmt::Display for CacheInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use airlock_payload::human_bytes as h;
        writeln!(f, "cache:  {}", self.dir.display())?;
        writeln!(f, "frames: {} ({})", self.frames, h(self.frames_bytes))?;
        writeln!(f, "stat:   {} ({})", self.stat_files, h(self.stat_bytes))?;
        write!(f, "blobs:  {} ({})", self.blobs, h(self.blobs_bytes))
    }
}

/// The identity of a source file's content as far as `stat` can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    /// Length.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i128,
    /// Status change time, ns since the epoch.
    pub ctime_ns: i128,
    /// Inode number.
    pub ino: u64,
    /// Device.
    pub dev: u64,
}

impl FileStamp {
    /// The stamp of `md`.
    pub fn of(md: &fs::Metadata) -> FileStamp {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        FileStamp {
            size: md.len(),
            mtime_ns: ns(md.mtime(), md.mtime_nsec()),
            ctime_ns: ns(md.ctime(), md.ctime_nsec()),
            ino: md.ino(),
            dev: md.dev(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StatEntry {
    stamp: FileStamp,
    digest: Sha256Digest,
    /// When the digest was computed, ns since the epoch.
    recorded_ns: i128,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StatFile {
    version: u32,
    entries: HashMap<PathBuf, StatEntry>,
}

const STAT_VERSION: u32 = 1;

/// Source digests of one build, by path and [`FileStamp`] (`<cache>/stat/<key>`).
#[derive(Debug)]
pub struct StatCache {
    path: PathBuf,
    old: HashMap<PathBuf, StatEntry>,
    new: std::sync::Mutex<HashMap<PathBuf, StatEntry>>,
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

impl StatCache {
    /// The stat cache of builds of `spec` in `cache_dir`; an unreadable or damaged file
    /// starts empty.
    pub fn open(cache_dir: &Path, spec: &Path) -> StatCache {
        let canonical = spec.canonicalize().unwrap_or_else(|_| spec.to_owned());
        let key = Sha256Digest::of(canonical.as_os_str().as_encoded_bytes());
        let path = cache_dir.join("stat").join(key.hex());
        let old = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<StatFile>(&b).ok())
            .filter(|f| f.version == STAT_VERSION)
            .map(|f| f.entries)
            .unwrap_or_default();
        StatCache {
            path,
            old,
            new: Default::default(),
        }
    }

    /// The recorded digest of `path` if its stamp is unchanged and was not racy when
    /// recorded.
    pub fn lookup(&self, path: &Path, stamp: &FileStamp) -> Option<Sha256Digest> {
        let e = self.old.get(path)?;
        if e.stamp != *stamp
            || e.recorded_ns - stamp.mtime_ns < RACY_WINDOW_NS
            || e.recorded_ns - stamp.ctime_ns < RACY_WINDOW_NS
        {
            return None;
        }
        self.keep(path, e.clone());
        Some(e.digest)
    }

    /// Records `digest` for `path` with the stamp it had before it was read.
    pub fn record(&self, path: &Path, stamp: FileStamp, digest: Sha256Digest) {
        let entry = StatEntry {
            stamp,
            digest,
            recorded_ns: now_ns(),
        };
        self.keep(path, entry);
    }

    fn keep(&self, path: &Path, entry: StatEntry) {
        self.new
            .lock()
            .expect("stat cache lock")
            .insert(path.to_owned(), entry);
    }

    /// Writes the entries looked up or recorded in this build (atomically), dropping the
    /// rest.
    pub fn save(self) -> Result<()> {
        let dir = self.path.parent().expect("a stat file has a folder");
        fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
        let file = StatFile {
            version: STAT_VERSION,
            entries: self.new.into_inner().expect("stat cache lock"),
        };
        let bytes = serde_json::to_vec(&file).expect("the stat cache serializes");
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(dir)
            .map_err(io_err(format!("create a file in {}", dir.display())))?;
        tmp.write_all(&bytes)
            .map_err(io_err(format!("write {}", self.path.display())))?;
        tmp.persist(&self.path)
            .map_err(|e| io_err(format!("write {}", self.path.display()))(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("4K").unwrap(), 4096);
        assert_eq!(parse_size("1.5MiB").unwrap(), 3 << 19);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("2tb").unwrap(), 2 << 40);
        for bad in ["", "G", "10X", "-1", "1e99999"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    fn key(n: u8) -> FrameKey {
        FrameKey([n; 32])
    }

    #[test]
    fn stored_frames_load_back_and_prune_drops_the_least_recently_used() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FrameStore::new(tmp.path());
        for n in 0..4 {
            store.store(&key(n), &[n; 100]);
            let old = SystemTime::now() - std::time::Duration::from_secs(100 - u64::from(n));
            let f = File::options()
                .write(true)
                .open(store.path(&key(n)))
                .unwrap();
            f.set_times(FileTimes::new().set_modified(old)).unwrap();
        }
        // Using entry 0 makes it the most recent.
        assert_eq!(store.load(&key(0)).unwrap(), vec![0; 100]);
        assert!(store.load(&key(9)).is_none());
        let report = prune(tmp.path(), 250).unwrap();
        assert_eq!(
            (report.removed, report.kept, report.kept_bytes),
            (2, 2, 200)
        );
        assert!(store.load(&key(0)).is_some());
        assert!(store.load(&key(3)).is_some());
        assert!(store.load(&key(1)).is_none() && store.load(&key(2)).is_none());
        assert_eq!(info(tmp.path()).unwrap().frames, 2);
    }

    #[test]
    fn stat_entries_are_trusted_only_when_unchanged_and_not_racy() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = tmp.path().join("airlock.yaml");
        let file = tmp.path().join("f");
        fs::write(&file, b"x").unwrap();
        let digest = Sha256Digest::of(b"x");
        let old = SystemTime::now() - std::time::Duration::from_secs(60);
        File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_times(FileTimes::new().set_modified(old))
            .unwrap();
        let mut stamp = FileStamp::of(&fs::metadata(&file).unwrap());
        // ctime is always "now" after set_times: pretend it is old for the trusted case.
        stamp.ctime_ns = stamp.mtime_ns;
        let c = StatCache::open(tmp.path(), &spec);
        c.record(&file, stamp, digest);
        c.save().unwrap();

        let c = StatCache::open(tmp.path(), &spec);
        assert_eq!(c.lookup(&file, &stamp), Some(digest));
        let changed = FileStamp { size: 2, ..stamp };
        assert_eq!(c.lookup(&file, &changed), None);
        let other_inode = FileStamp {
            ino: stamp.ino + 1,
            ..stamp
        };
        assert_eq!(c.lookup(&file, &other_inode), None);

        // Recorded in the same second the file was written: not trusted.
        let fresh = FileStamp::of(&fs::metadata(&file).unwrap());
        let c = StatCache::open(tmp.path(), &spec);
        c.record(&file, fresh, digest);
        c.save().unwrap();
        assert_eq!(
            StatCache::open(tmp.path(), &spec).lookup(&file, &fresh),
            None
        );
    }
}
