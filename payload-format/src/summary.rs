//! What `info` (stub) and `inspect` (builder) show: one rendering, so the two never differ.

use std::fmt;

use serde::Serialize;

use crate::meta::Meta;
use crate::reader::Installer;

/// The facts about an installer that are known without loading its index.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The meta record (name, version, platform, counts, sizes).
    #[serde(flatten)]
    pub meta: Meta,
    /// Format version.
    pub format_version: u32,
    /// Length of the whole file.
    pub file_len: u64,
    /// Length of the signed part (the installer without its signature section).
    pub signed_len: u64,
    /// Number of signatures after the installer (not verified here).
    pub signature_count: usize,
    /// Where the payload starts (the stub's length, aligned).
    pub payload_offset: u64,
    /// Number of index entries.
    pub entry_count: u64,
}

impl Installer<'_> {
    /// The facts `info` shows.
    pub fn summary(&self) -> Summary {
        let t = self.trailer();
        Summary {
            meta: self.meta().clone(),
            format_version: self.format_version(),
            file_len: self.bytes().len() as u64,
            signed_len: t.file_len,
            signature_count: self.signatures().len(),
            payload_offset: t.payload_offset,
            entry_count: t.entry_count,
        }
    }
}

/// `n` bytes in decimal units with one decimal: `999 B`, `1.2 kB`, `300.0 MB`, `1.2 GB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1000.0;
    let mut unit = 0;
    while value >= 999.95 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.meta;
        let ratio = if m.total_size == 0 {
            1.0
        } else {
            m.stored_size as f64 / m.total_size as f64
        };
        writeln!(f, "name:      {}", m.name)?;
        writeln!(f, "version:   {}", m.version)?;
        writeln!(f, "platform:  {}", m.platform)?;
        writeln!(
            f,
            "contents:  {} files, {} folders, {} symlinks, {} hardlinks",
            m.files, m.dirs, m.symlinks, m.hardlinks
        )?;
        writeln!(f, "images:    {}", m.images)?;
        writeln!(
            f,
            "size:      {} of files, stored in {} ({:.0}%, {} distinct contents in {} frames)",
            human_bytes(m.total_size),
            human_bytes(m.stored_size),
            ratio * 100.0,
            m.blob_count,
            m.frame_count
        )?;
        writeln!(
            f,
            "file:      {} (program {}, format v{})",
            human_bytes(self.file_len),
            human_bytes(self.payload_offset),
            self.format_version
        )?;
        writeln!(f, "built by:  {} (created {})", m.builder, m.created)?;
        write!(
            f,
            "signed:    {}",
            match self.signature_count {
                0 => "no".to_owned(),
                n => format!("{n} signature{}", if n == 1 { "" } else { "s" }),
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_in_decimal_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_200), "1.2 kB");
        assert_eq!(human_bytes(300_000_000), "300.0 MB");
        assert_eq!(human_bytes(1_200_000_000), "1.2 GB");
        assert_eq!(human_bytes(999_960), "1.0 MB");
        assert_eq!(human_bytes(u64::MAX), "18.4 EB");
    }
}
