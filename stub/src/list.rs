//! `list`: every entry of the index, as aligned text or JSON.

use std::io::Write;

use airlock_payload::{Entry, EntryKind, Index};
use serde::Serialize;

use crate::{Error, Result};

/// One entry as `list --json` prints it. Every key is always present (`null` when it does
/// not apply): `size` and `digest` for files, `target` for symlinks and hardlinks.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ListRow<'a> {
    /// Relative path.
    pub path: &'a str,
    /// `dir`, `file`, `symlink` or `hardlink`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Permission bits as four octal digits, e.g. `"0755"`.
    pub mode: String,
    /// File size in bytes.
    pub size: Option<u64>,
    /// `sha256:<hex>` of a file's content.
    pub digest: Option<String>,
    /// Link text of a symlink, or the path a hardlink names.
    pub target: Option<&'a str>,
}

impl<'a> ListRow<'a> {
    /// The row for `entry`.
    pub fn new(entry: &'a Entry) -> Self {
        let (size, digest, target) = match &entry.kind {
            EntryKind::Dir => (None, None, None),
            EntryKind::File { size, digest } => (Some(*size), Some(digest.to_string()), None),
            EntryKind::Symlink { target } => (None, None, Some(target.as_str())),
            EntryKind::Hardlink { target } => (None, None, Some(target.as_str())),
        };
        ListRow {
            path: entry.path.as_str(),
            kind: entry.type_name(),
            mode: format!("{:04o}", entry.mode),
            size,
            digest,
            target,
        }
    }
}

/// Writes every entry as one line: type, mode, size, digest, path and `-> target` for
/// symlinks (`=> target` for hardlinks), columns aligned.
pub fn write_text(index: &Index, out: &mut dyn Write) -> Result<()> {
    let rows: Vec<ListRow<'_>> = index.entries().iter().map(ListRow::new).collect();
    let size_width = rows
        .iter()
        .filter_map(|r| r.size)
        .max()
        .unwrap_or(0)
        .to_string()
        .len()
        .max(4);
    let digest_width = if rows.iter().any(|r| r.digest.is_some()) {
        71
    } else {
        1
    };
    for r in &rows {
        let size = r.size.map_or_else(|| "-".to_owned(), |s| s.to_string());
        let digest = r.digest.as_deref().unwrap_or("-");
        let arrow = match (r.kind, r.target) {
            ("hardlink", Some(t)) => format!(" => {t}"),
            (_, Some(t)) => format!(" -> {t}"),
            _ => String::new(),
        };
        writeln!(
            out,
            "{:<8} {} {size:>size_width$} {digest:<digest_width$} {}{arrow}",
            r.kind, r.mode, r.path
        )
        .map_err(Error::Output)?;
    }
    Ok(())
}

/// Writes a JSON array of [`ListRow`]s and a newline.
pub fn write_json(index: &Index, out: &mut dyn Write) -> Result<()> {
    let rows: Vec<ListRow<'_>> = index.entries().iter().map(ListRow::new).collect();
    serde_json::to_writer(&mut *out, &rows)?;
    writeln!(out).map_err(Error::Output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{installer_from_tree, sample_tree};
    use airlock_payload::{Installer, Sha256Digest};

    fn listing(json: bool) -> String {
        let tree = sample_tree();
        let bytes = installer_from_tree(tree.path());
        let payload = Installer::open(&bytes, None).unwrap().load_index().unwrap();
        let mut out = Vec::new();
        if json {
            write_json(payload.index(), &mut out).unwrap();
        } else {
            write_text(payload.index(), &mut out).unwrap();
        }
        crate::testutil::make_removable(tree.path());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_listing_has_one_aligned_line_per_entry() {
        let text = listing(false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 17, "{text}");
        let conf_digest = Sha256Digest::of(b"key = value\n");
        assert!(
            lines.contains(&format!("file     0600      12 {conf_digest} etc/conf").as_str()),
            "{text}"
        );
        let link = lines
            .iter()
            .find(|l| l.ends_with("bin/link -> tool"))
            .expect("symlink line");
        assert!(link.starts_with("symlink  0777       - - "), "{link}");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("hardlink") && l.ends_with("bin/twin => bin/tool")),
            "{text}"
        );
        // Every path starts in the same column.
        let col = |path: &str| {
            lines
                .iter()
                .find(|l| l.ends_with(path))
                .unwrap()
                .find(path)
                .unwrap()
        };
        assert_eq!(col(" etc/conf"), col(" bin/link -> tool"));
        assert_eq!(col(" etc/conf"), col(" deep/a"));
    }

    #[test]
    fn json_listing_is_an_array_of_complete_objects() {
        let v: serde_json::Value = serde_json::from_str(&listing(true)).unwrap();
        let rows = v.as_array().unwrap();
        assert_eq!(rows.len(), 17);
        for row in rows {
            let mut keys: Vec<&str> = row
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            keys.sort_unstable();
            assert_eq!(keys, ["digest", "mode", "path", "size", "target", "type"]);
        }
        let tool = rows.iter().find(|r| r["path"] == "bin/tool").unwrap();
        assert_eq!(tool["type"], "file");
        assert_eq!(tool["mode"], "0755");
        assert_eq!(tool["size"], 10_000);
        assert!(tool["digest"].as_str().unwrap().starts_with("sha256:"));
        assert!(tool["target"].is_null());
        let link = rows.iter().find(|r| r["path"] == "bin/link").unwrap();
        assert_eq!(link["target"], "tool");
        assert!(link["size"].is_null());
    }
}
