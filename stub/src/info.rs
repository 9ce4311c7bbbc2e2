//! `info` and the bare-run summary: what the installer is, from the meta record only.
//!
//! Neither loads the index or touches content, so both take microseconds for any file size.

use std::io::Write;
use std::path::Path;

use airlock_payload::{Installer, Summary};
use serde::Serialize;

use crate::{Error, Result};
use airlock_payload::human_bytes;

/// What `info --json` prints: [`Summary`] (the same object `airlock inspect --json` prints)
/// plus the path of the file. Fields are stable: new ones may be added, none removed.
///
/// | field | meaning |
/// |---|---|
/// | `file` | path of the installer file as opened (`/proc/self/exe` when run directly) |
/// | `file_len` | length of the whole file in bytes |
/// | `format_version` | payload format version (SPEC.md) |
/// | `payload_offset` | where the payload starts (the stub's size rounded up to 4096) |
/// | `entry_count` | entries a full extract creates |
/// | `name`, `version`, `platform`, `created`, `mtime`, `builder` | the meta record |
/// | `files`, `dirs`, `symlinks`, `hardlinks` | entry counts by type |
/// | `total_size` | bytes a full extract writes |
/// | `stored_size` | bytes the content takes in the file |
/// | `blob_count`, `frame_count` | distinct contents, compression frames |
/// | `signed_len`, `signature_count` | length without the signature section; signatures |
/// | `signatures` | `[{key_id, trusted_comment}]`, unverified (`verify --key` checks) |
#[derive(Debug, Clone, Serialize)]
pub struct InfoReport {
    /// Path of the installer file.
    pub file: String,
    /// What `airlock inspect` shows too.
    #[serde(flatten)]
    pub summary: Summary,
    /// Who signed the file (not verified: `verify --key` does that).
    pub signatures: Vec<crate::signature::SignatureInfo>,
}

impl InfoReport {
    /// Gathers the report from an opened installer.
    pub fn new(installer: &Installer<'_>, file: &Path) -> Result<Self> {
        Ok(InfoReport {
            file: file.display().to_string(),
            summary: installer.summary(),
            signatures: crate::signature::describe(installer)?,
        })
    }

    /// Writes the report as aligned `key: value` lines.
    pub fn write_text(&self, out: &mut dyn Write) -> Result<()> {
        writeln!(out, "{}\nfile:      {}", self.summary, self.file).map_err(Error::Output)?;
        for s in &self.signatures {
            writeln!(
                out,
                "signer:    key {} ({})",
                s.key_id,
                s.trusted_comment.replace('\t', " ")
            )
            .map_err(Error::Output)?;
        }
        Ok(())
    }

    /// Writes the report as one JSON object and a newline.
    pub fn write_json(&self, out: &mut dyn Write) -> Result<()> {
        serde_json::to_writer_pretty(&mut *out, self)?;
        writeln!(out).map_err(Error::Output)
    }
}

/// What a bare run prints: the contents in one paragraph and the commands that exist.
pub fn write_summary(installer: &Installer<'_>, program: &str, out: &mut dyn Write) -> Result<()> {
    let m = installer.meta();
    let text = format!(
        "{name} {version} ({platform}): an airlock installer\n\
         {files} files, {dirs} folders, {links} symlinks, {hard} hardlinks; \
         {total} when extracted, {stored} stored\n\
         {images}\
         \n\
         Usage: {program} <COMMAND>\n\
         \n\
         Commands:\n  \
           info                            show metadata and format facts (--json)\n  \
           list                            list every file, folder, link and image (--json)\n  \
           verify                          check the integrity of the whole file (--deep, --key PUB)\n  \
           signature export -o DIR         write the signed message and signatures for minisign\n  \
           extract --target DIR [PATH...]  lay out all files, or the named ones\n  \
           registry serve [--listen ADDR]  serve the images as an OCI registry\n  \
           install [--root DIR] [--dry-run] install files, registry service and mirror config\n  \
           uninstall [--root DIR]          undo what install did\n\
         \n\
         Run `{program} <COMMAND> --help` for details. This summary changed nothing.\n",
        name = m.name,
        version = m.version,
        platform = m.platform,
        files = m.files,
        dirs = m.dirs,
        links = m.symlinks,
        hard = m.hardlinks,
        total = human_bytes(m.total_size),
        stored = human_bytes(m.stored_size),
        images = match m.images {
            0 => String::new(),
            1 => "1 container image\n".to_owned(),
            n => format!("{n} container images\n"),
        },
    );
    out.write_all(text.as_bytes()).map_err(Error::Output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{installer_from_tree, sample_tree};

    #[test]
    fn info_json_has_the_documented_fields() {
        let tree = sample_tree();
        let bytes = installer_from_tree(tree.path());
        let installer = Installer::open(&bytes, None).unwrap();
        let report = InfoReport::new(&installer, Path::new("/x/demo.run")).unwrap();
        let mut out = Vec::new();
        report.write_json(&mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["file"], "/x/demo.run");
        assert_eq!(v["file_len"], bytes.len() as u64);
        assert_eq!(v["format_version"], 2);
        assert_eq!(v["payload_offset"], 8192);
        assert_eq!(v["name"], "demo");
        assert_eq!(v["files"], installer.meta().files);
        for key in [
            "version",
            "platform",
            "created",
            "mtime",
            "builder",
            "dirs",
            "symlinks",
            "hardlinks",
            "total_size",
            "stored_size",
            "blob_count",
            "frame_count",
            "entry_count",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
    }

    #[test]
    fn info_text_names_the_installer_and_its_sizes() {
        let tree = sample_tree();
        let bytes = installer_from_tree(tree.path());
        let installer = Installer::open(&bytes, None).unwrap();
        let mut out = Vec::new();
        InfoReport::new(&installer, Path::new("demo.run"))
            .unwrap()
            .write_text(&mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("name:      demo\n"), "{text}");
        assert!(text.contains("file:      demo.run\n"), "{text}");
        assert!(text.contains("7 files"), "{text}");
    }

    #[test]
    fn summary_lists_the_existing_commands() {
        let tree = sample_tree();
        let bytes = installer_from_tree(tree.path());
        let installer = Installer::open(&bytes, None).unwrap();
        let mut out = Vec::new();
        write_summary(&installer, "./demo.run", &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("demo 1.0 (linux/amd64): an airlock installer\n"),
            "{text}"
        );
        for cmd in [
            "info",
            "list",
            "verify",
            "extract --target DIR",
            "registry serve",
            "install [--root DIR]",
            "uninstall",
        ] {
            assert!(
                text.contains(&format!("\n  {cmd}")),
                "missing {cmd}: {text}"
            );
        }
    }
}
