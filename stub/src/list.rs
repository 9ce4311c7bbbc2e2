//! `list`: every entry of the index and every captured image, as aligned text or JSON.

use std::collections::BTreeSet;
use std::io::Write;

use airlock_payload::{Entry, EntryKind, Image, Index};
use serde::Serialize;

use crate::{Error, Result};

/// One entry or image as `list --json` prints it. Every key is always present (`null` when
/// it does not apply): `path` and `mode` for entries, `size` and `digest` for files and
/// images, `target` for symlinks and hardlinks, `reference`, `platforms` and `signatures`
/// for images.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ListRow<'a> {
    /// Relative path of an entry.
    pub path: Option<&'a str>,
    /// `dir`, `file`, `symlink`, `hardlink` or `image`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Permission bits of an entry as four octal digits, e.g. `"0755"`.
    pub mode: Option<String>,
    /// File size in bytes; for an image, the total size of its manifests, config and layers.
    pub size: Option<u64>,
    /// `sha256:<hex>` of a file's content, or of an image's top-level manifest or index.
    pub digest: Option<String>,
    /// Link text of a symlink, or the path a hardlink names.
    pub target: Option<&'a str>,
    /// `registry/repository:tag` (or `@digest`) of an image.
    pub reference: Option<String>,
    /// `os/arch[/variant]` of each platform manifest an image holds.
    pub platforms: Option<Vec<&'a str>>,
    /// For an image: the cosign artifacts stored with it (`sig`, `att`, `sbom`: the tags
    /// `sha256-<hex>.<kind>` in its repository); empty when it carries none.
    pub signatures: Option<Vec<&'static str>>,
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
            path: Some(entry.path.as_str()),
            kind: entry.type_name(),
            mode: Some(format!("{:04o}", entry.mode)),
            size,
            digest,
            target,
            reference: None,
            platforms: None,
            signatures: None,
        }
    }

    /// The row for `image`; sizes come from `index`.
    pub fn image(image: &'a Image, index: &Index) -> Self {
        let digests: BTreeSet<_> = image
            .manifests
            .iter()
            .map(|m| m.digest)
            .chain(image.blobs.iter().copied())
            .collect();
        let size = digests
            .iter()
            .filter_map(|d| index.blob(d))
            .map(|b| b.size)
            .sum();
        let signatures = ["sig", "att", "sbom"]
            .into_iter()
            .filter(|kind| {
                let tag = format!("sha256-{}.{kind}", image.digest.hex());
                index.images().iter().any(|i| {
                    i.registry == image.registry
                        && i.repository == image.repository
                        && i.tag.as_deref() == Some(tag.as_str())
                })
            })
            .collect();
        ListRow {
            path: None,
            kind: "image",
            signatures: Some(signatures),
            mode: None,
            size: Some(size),
            digest: Some(image.digest.to_string()),
            target: None,
            reference: Some(image.reference()),
            platforms: Some(
                image
                    .manifests
                    .iter()
                    .filter_map(|m| m.platform.as_deref())
                    .collect(),
            ),
        }
    }
}

fn rows(index: &Index) -> Vec<ListRow<'_>> {
    let entries = index.entries().iter().map(ListRow::new);
    let images = index.images().iter().map(|i| ListRow::image(i, index));
    entries.chain(images).collect()
}

/// Writes every entry as one line: type, mode, size, digest, path and `-> target` for
/// symlinks (`=> target` for hardlinks), then every image: `image`, `-`, total size, digest,
/// reference and its platforms in brackets; columns aligned.
pub fn write_text(index: &Index, out: &mut dyn Write) -> Result<()> {
    let rows = rows(index);
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
        let mode = r.mode.as_deref().unwrap_or("-");
        let name = match (&r.reference, r.path) {
            (Some(reference), _) => reference.as_str(),
            (None, Some(path)) => path,
            (None, None) => "-",
        };
        let suffix = match (r.kind, r.target, &r.platforms) {
            ("hardlink", Some(t), _) => format!(" => {t}"),
            (_, Some(t), _) => format!(" -> {t}"),
            (_, None, Some(p)) if !p.is_empty() => format!(" [{}]", p.join(", ")),
            _ => String::new(),
        };
        let suffix = match &r.signatures {
            Some(s) if !s.is_empty() => format!("{suffix} (signed: {})", s.join(", ")),
            _ => suffix,
        };
        writeln!(
            out,
            "{:<8} {mode:<4} {size:>size_width$} {digest:<digest_width$} {name}{suffix}",
            r.kind
        )
        .map_err(Error::Output)?;
    }
    Ok(())
}

/// Writes a JSON array of [`ListRow`]s (entries, then images) and a newline.
pub fn write_json(index: &Index, out: &mut dyn Write) -> Result<()> {
    serde_json::to_writer(&mut *out, &rows(index))?;
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
            assert_eq!(
                keys,
                [
                    "digest",
                    "mode",
                    "path",
                    "platforms",
                    "reference",
                    "signatures",
                    "size",
                    "target",
                    "type"
                ]
            );
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
