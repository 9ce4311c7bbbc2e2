//! `verify`: the program part, the index and every frame against their digests.

use std::io::Write;

use airlock_payload::Installer;
use indicatif::ProgressBar;

use crate::{Error, Result};
use airlock_payload::human_bytes;

/// What a clean verification checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifySummary {
    /// Frames checked.
    pub frames: usize,
    /// Stored bytes hashed (frames only; the stub, meta and index are small).
    pub bytes: u64,
    /// Whether every blob was also decoded and checked against its own digest.
    pub deep: bool,
}

/// Checks the stub, the index and every frame (in parallel; with `deep` also every blob's
/// content digest). Fails with [`Error::Damaged`] listing every damaged item, each naming
/// what it affects; prints `ok: ...` to `out` when all is well.
///
/// `release` is called with each frame's bytes once checked, so a mapped file's pages can be
/// dropped from resident memory as the check moves on.
pub fn verify(
    installer: &Installer<'_>,
    deep: bool,
    bar: &ProgressBar,
    release: &(dyn Fn(&[u8]) + Sync),
    out: &mut dyn Write,
) -> Result<VerifySummary> {
    let mut damaged = Vec::new();
    if let Err(e) = installer.verify_stub() {
        damaged.push(e);
    }
    let payload = match installer.load_index() {
        Ok(p) => Some(p),
        Err(e) if e.is_corrupt() => {
            damaged.push(e);
            None
        }
        Err(e) => return Err(e.into()),
    };
    let mut summary = VerifySummary {
        frames: 0,
        bytes: 0,
        deep,
    };
    if let Some(payload) = &payload {
        bar.set_length(payload.index().stored_len());
        let report = payload.verify(deep, &|stored| {
            bar.inc(stored.len() as u64);
            release(stored);
        });
        bar.finish_and_clear();
        summary.frames = report.frames;
        summary.bytes = report.bytes;
        damaged.extend(report.damaged);
    }
    if !damaged.is_empty() {
        return Err(Error::Damaged {
            items: damaged.iter().map(|e| e.to_string()).collect(),
        });
    }
    let depth = if deep {
        ", every content decoded and checked"
    } else {
        ""
    };
    writeln!(
        out,
        "ok: {} frames, {} checked{depth}",
        summary.frames,
        human_bytes(summary.bytes)
    )
    .map_err(Error::Output)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{damage_frame, installer_from_tree, make_removable, sample_tree};

    fn sample_bytes() -> Vec<u8> {
        let tree = sample_tree();
        let bytes = installer_from_tree(tree.path());
        make_removable(tree.path());
        bytes
    }

    #[test]
    fn clean_installer_verifies_and_says_how_much_was_checked() {
        let bytes = sample_bytes();
        let installer = Installer::open(&bytes, None).unwrap();
        let mut out = Vec::new();
        let summary = verify(&installer, true, &ProgressBar::hidden(), &|_| {}, &mut out).unwrap();
        assert_eq!(summary.frames as u64, installer.meta().frame_count);
        assert!(summary.frames >= 2, "the 5 MiB file spans frames");
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(&format!("ok: {} frames, ", summary.frames)),
            "{text}"
        );
    }

    #[test]
    fn damaged_frame_is_reported_with_the_entries_it_holds() {
        let mut bytes = sample_bytes();
        damage_frame(&mut bytes, 0);
        let installer = Installer::open(&bytes, None).unwrap();
        let mut out = Vec::new();
        let err = verify(&installer, false, &ProgressBar::hidden(), &|_| {}, &mut out).unwrap_err();
        assert!(
            matches!(err, Error::Damaged { ref items } if items.len() == 1),
            "{err}"
        );
        assert!(err.is_corrupt());
        assert!(out.is_empty(), "nothing is printed as ok");
        let text = err.to_string();
        assert!(
            text.contains("\n  damaged: installer is corrupt: frame 0 is damaged"),
            "{text}"
        );
        assert!(
            text.contains("bin/tool") || text.contains("big/data.bin"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    #[test]
    fn modified_stub_is_reported_alongside_damaged_frames() {
        let mut bytes = sample_bytes();
        bytes[10] ^= 1;
        damage_frame(&mut bytes, 1);
        let installer = Installer::open(&bytes, None).unwrap();
        let mut out = Vec::new();
        let err = verify(&installer, false, &ProgressBar::hidden(), &|_| {}, &mut out).unwrap_err();
        assert!(
            matches!(err, Error::Damaged { ref items } if items.len() == 2),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains("stub"), "{text}");
        assert!(text.contains("frame 1 is damaged"), "{text}");
    }
}
