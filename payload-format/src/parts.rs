//! Split installers: what each part is called and which lengths a complete set of parts
//! has (SPEC.md, "Split installers"). A split installer is the unsplit file cut at multiples
//! of one part size, so `cat edge.run edge.run.0*` gives back the very same bytes. The
//! builder writes parts with these names; the stub finds its parts beside itself and names a
//! missing, cut or extra part before it maps anything.

use std::io;
use std::path::{Path, PathBuf};

/// Every part but the last is a multiple of this many bytes, so a reader can map each part
/// at its offset in one contiguous range.
pub const PART_ALIGN: u64 = 4096;
/// The largest file FAT32 holds: 4 GiB minus one byte.
pub const FAT32_MAX_FILE: u64 = (1 << 32) - 1;
/// The part size of `--split fat32`: the largest multiple of [`PART_ALIGN`] FAT32 holds.
pub const FAT32_PART_SIZE: u64 = (1 << 32) - PART_ALIGN;
/// Parts are numbered `.002` to `.999`, so a shell glob (`edge.run.0*` ... `.9*`) sorts them.
pub const MAX_PARTS: usize = 999;

/// A part that is missing, has the wrong length, or does not fit the installer.
#[derive(Debug, thiserror::Error)]
pub enum PartError {
    /// A part before the last one found, or after it (the lengths say more must follow).
    #[error("{} is missing: the split installer has at least {count} parts; copy every part of it", .path.display())]
    Missing {
        /// The part's expected path.
        path: PathBuf,
        /// How many parts there are at least.
        count: usize,
    },
    /// A part shorter than it must be: a partial copy.
    #[error("{} is truncated: it is {len} bytes but should be {expected}; copy it again", .path.display())]
    Truncated {
        /// The part.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The length it must have.
        expected: u64,
    },
    /// A part longer than every part before the last is.
    #[error("{} is {len} bytes, longer than the {expected} bytes of every part before the last: it is from another installer or another split", .path.display())]
    TooLong {
        /// The part.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The length it must have at most.
        expected: u64,
    },
    /// The first part's length is not a whole number of pages: it was cut.
    #[error("{} is truncated: it is {len} bytes, {detail}; copy it again", .path.display())]
    FirstPart {
        /// The first part.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// Why that length cannot be right.
        detail: String,
    },
    /// More parts than [`MAX_PARTS`], or a part size that would need them.
    #[error("a split installer has at most {MAX_PARTS} parts; {0} would be needed")]
    TooMany(u64),
    /// A part whose bytes do not belong where they are: damaged, swapped, or from another
    /// installer (its frames or the index do not match).
    #[error("{} does not belong to this installer: {detail} (the part is damaged, out of order, or from another installer); copy it again", .path.display())]
    Mismatch {
        /// The part.
        path: PathBuf,
        /// What did not match.
        detail: String,
    },
    /// A part after the end of the installer: left over from another split.
    #[error("{} is not part of this installer: it ends in {}; remove it", .path.display(), .last.display())]
    Extra {
        /// The extra part.
        path: PathBuf,
        /// The real last part.
        last: PathBuf,
    },
    /// Listing the parts failed.
    #[error("failed to look for the parts of {} in its folder", .path.display())]
    List {
        /// The first part.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl PartError {
    /// True when the parts are damaged or incomplete (exit code 3), not an I/O problem.
    pub fn is_corrupt(&self) -> bool {
        !matches!(self, PartError::List { .. } | PartError::TooMany(_))
    }
}

/// The path of part `number` (1-based) of the installer whose first part is `first`:
/// `first` itself, then `first.002`, `first.003`, ...
pub fn part_path(first: &Path, number: usize) -> PathBuf {
    if number <= 1 {
        return first.to_owned();
    }
    let mut name = first.as_os_str().to_owned();
    name.push(format!(".{number:03}"));
    PathBuf::from(name)
}

/// `size` rounded down to a multiple of [`PART_ALIGN`]; `None` below one page.
pub fn align_part_size(size: u64) -> Option<u64> {
    let aligned = size / PART_ALIGN * PART_ALIGN;
    (aligned > 0).then_some(aligned)
}

/// How many parts of `part_size` bytes a file of `len` bytes makes (at least one).
pub fn part_count(len: u64, part_size: u64) -> u64 {
    len.div_ceil(part_size).max(1)
}

/// One file of a split installer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Its path.
    pub path: PathBuf,
    /// Its length.
    pub len: u64,
}

/// True when `first` has parts beside it: any sibling named `<first>.NNN` (three digits).
pub fn has_parts(first: &Path) -> bool {
    if part_path(first, 2).exists() {
        return true;
    }
    let (Some(name), dir) = (first.file_name(), first.parent()) else {
        return false;
    };
    let dir = match dir {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let prefix = format!("{}.", name.to_string_lossy());
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .is_some_and(|s| s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()))
        })
    })
}

/// The parts of the split installer whose first part is `first`, in order, with their
/// lengths checked: every part but the last as long as the first (a multiple of
/// [`PART_ALIGN`]), the last not empty and not longer, no number left out. Parts are the
/// siblings named `<first>.NNN` (three digits).
pub fn find_parts(first: &Path) -> Result<Vec<Part>, PartError> {
    let list = |source| PartError::List {
        path: first.to_owned(),
        source,
    };
    let dir = match first.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = first.file_name().ok_or_else(|| {
        list(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path has no file name",
        ))
    })?;
    let prefix = format!("{}.", name.to_string_lossy());
    let mut last = 1usize;
    for entry in std::fs::read_dir(&dir).map_err(list)? {
        let entry = entry.map_err(list)?;
        let file_name = entry.file_name();
        let Some(suffix) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        if suffix.len() == 3 && suffix.bytes().all(|b| b.is_ascii_digit()) {
            let n: usize = suffix.parse().expect("three digits");
            last = last.max(n);
        }
    }
    let mut parts = Vec::with_capacity(last);
    for number in 1..=last {
        let path = part_path(first, number);
        match std::fs::metadata(&path) {
            Ok(meta) => parts.push(Part {
                path,
                len: meta.len(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(PartError::Missing { path, count: last })
            }
            Err(e) => return Err(list(e)),
        }
    }
    check_lengths(&parts)?;
    Ok(parts)
}

/// Checks the lengths of `parts` (in order, the first part first) among themselves.
pub fn check_lengths(parts: &[Part]) -> Result<(), PartError> {
    let Some((first, rest)) = parts.split_first() else {
        return Ok(());
    };
    let size = first.len;
    let Some((last, middle)) = rest.split_last() else {
        return Ok(());
    };
    // Equal middle parts that disagree with the first one: the first part was cut.
    if let Some(m) = middle.first() {
        if m.len != size && middle.iter().all(|p| p.len == m.len) {
            return Err(PartError::FirstPart {
                path: first.path.clone(),
                len: size,
                detail: format!("but the parts after it are {} bytes each", m.len),
            });
        }
    }
    if size % PART_ALIGN != 0 {
        return Err(PartError::FirstPart {
            path: first.path.clone(),
            len: size,
            detail: format!("not a multiple of {PART_ALIGN} as the first of several parts is"),
        });
    }
    for p in middle.iter().chain(std::iter::once(last)) {
        let is_last = std::ptr::eq(p, last);
        if p.len > size {
            return Err(PartError::TooLong {
                path: p.path.clone(),
                len: p.len,
                expected: size,
            });
        }
        if (!is_last && p.len < size) || p.len == 0 {
            return Err(PartError::Truncated {
                path: p.path.clone(),
                len: p.len,
                expected: size,
            });
        }
    }
    Ok(())
}

/// Checks `parts` against `file_len`, the installer length its header records (without a
/// signature section): when they hold fewer bytes, names the part that is cut or the first
/// one that is missing.
pub fn check_total(parts: &[Part], file_len: u64) -> Result<(), PartError> {
    let total: u64 = parts.iter().map(|p| p.len).sum();
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return Ok(());
    };
    if total >= file_len {
        return Ok(());
    }
    let size = first.len;
    let count = part_count(file_len, size) as usize;
    if last.len < size {
        let before = total - last.len;
        return Err(PartError::Truncated {
            path: last.path.clone(),
            len: last.len,
            expected: (file_len - before).min(size),
        });
    }
    Err(PartError::Missing {
        path: part_path(&first.path, parts.len() + 1),
        count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(lens: &[u64]) -> Vec<Part> {
        lens.iter()
            .enumerate()
            .map(|(i, &len)| Part {
                path: part_path(Path::new("/m/edge.run"), i + 1),
                len,
            })
            .collect()
    }

    #[test]
    fn parts_are_named_with_three_digits_after_the_first() {
        let first = Path::new("/media/usb/edge.run");
        assert_eq!(part_path(first, 1), first);
        assert_eq!(part_path(first, 2), Path::new("/media/usb/edge.run.002"));
        assert_eq!(part_path(first, 42), Path::new("/media/usb/edge.run.042"));
    }

    #[test]
    fn fat32_parts_fit_fat32_and_are_page_aligned() {
        const { assert!(FAT32_PART_SIZE <= FAT32_MAX_FILE) };
        assert_eq!(FAT32_PART_SIZE % PART_ALIGN, 0);
        assert_eq!(align_part_size(10_000), Some(8192));
        assert_eq!(align_part_size(4095), None);
        assert_eq!(part_count(8192 * 2 + 1, 8192), 3);
        assert_eq!(part_count(0, 8192), 1);
    }

    #[test]
    fn a_short_middle_part_is_named_truncated() {
        let err = check_lengths(&parts(&[8192, 8192, 4096, 100])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/m/edge.run.003 is truncated: it is 4096 bytes but should be 8192"),
            "{err}"
        );
    }

    #[test]
    fn a_cut_first_part_is_named_when_the_others_agree() {
        let err = check_lengths(&parts(&[4096, 8192, 8192, 100])).unwrap_err();
        assert!(
            err.to_string().starts_with("/m/edge.run is truncated"),
            "{err}"
        );
        let err = check_lengths(&parts(&[8000, 100])).unwrap_err();
        assert!(
            err.to_string().starts_with("/m/edge.run is truncated"),
            "{err}"
        );
    }

    #[test]
    fn a_last_part_longer_than_the_first_is_refused() {
        let err = check_lengths(&parts(&[8192, 8192, 9000])).unwrap_err();
        assert!(matches!(err, PartError::TooLong { .. }), "{err}");
        check_lengths(&parts(&[8192, 8192, 8192])).unwrap();
    }

    #[test]
    fn the_header_length_names_a_missing_last_part_or_a_cut_one() {
        let err = check_total(&parts(&[8192, 8192]), 3 * 8192 + 5).unwrap_err();
        assert!(
            err.to_string().starts_with("/m/edge.run.003 is missing"),
            "{err}"
        );
        let err = check_total(&parts(&[8192, 8192, 3]), 2 * 8192 + 5).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/m/edge.run.003 is truncated: it is 3 bytes but should be 5"),
            "{err}"
        );
        check_total(&parts(&[8192, 5]), 8192 + 5).unwrap();
    }

    #[test]
    fn a_gap_in_the_numbers_is_a_missing_part() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("x.run");
        std::fs::write(&first, vec![0u8; 4096]).unwrap();
        std::fs::write(part_path(&first, 3), b"tail").unwrap();
        let err = find_parts(&first).unwrap_err();
        assert!(
            matches!(&err, PartError::Missing { path, count: 3 } if *path == part_path(&first, 2)),
            "{err}"
        );
        std::fs::write(part_path(&first, 2), vec![0u8; 4096]).unwrap();
        let found = find_parts(&first).unwrap();
        assert_eq!(
            found.iter().map(|p| p.len).collect::<Vec<_>>(),
            [4096, 4096, 4]
        );
    }
}
