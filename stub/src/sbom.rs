//! `sbom`: prints the SPDX 2.3 document the builder embedded in the installer, checked
//! against its digest, so an auditor gets the bill of materials without installing (and
//! without any other tool).

use std::io::Write;
use std::path::Path;

use airlock_payload::Installer;

use crate::{Error, Result};

/// Why `sbom` has nothing to print.
#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    /// The installer carries no SBOM: it was built before airlock embedded one.
    #[error("this installer carries no SBOM (it was built by an airlock that did not embed one)")]
    Missing,
}

/// Writes the installer's SBOM to `output`, or to `out` when no file is given.
pub fn write_sbom(
    installer: &Installer<'_>,
    output: Option<&Path>,
    out: &mut dyn Write,
) -> Result<()> {
    let payload = installer.load_index()?;
    let doc = payload.sbom_document()?.ok_or(SbomError::Missing)?;
    match output {
        Some(path) => std::fs::write(path, &doc).map_err(Error::fs("write the sbom to", path)),
        None => out.write_all(&doc).map_err(Error::Output),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_payload::*;

    fn installer_with(sbom: Option<&[u8]>) -> Vec<u8> {
        let mut blobs = Vec::new();
        let sbom = sbom.map(|doc| {
            let digest = Sha256Digest::of(doc);
            blobs.push(BlobInput {
                digest,
                size: doc.len() as u64,
                precompressed: false,
                name: "the sbom".into(),
                source: Box::new(doc.to_vec()),
            });
            SbomRef {
                digest,
                size: doc.len() as u64,
                media_type: SPDX_JSON_MEDIA_TYPE.into(),
            }
        });
        let info = BuildInfo {
            name: "t".into(),
            version: "1".into(),
            platform: "linux/amd64".into(),
            created: 0,
            mtime: 0,
            builder: "test".into(),
        };
        let mut file = std::io::Cursor::new(Vec::new());
        write_installer(
            &mut file,
            &[0; 100],
            &info,
            PayloadContents {
                blobs,
                sbom,
                ..Default::default()
            },
            WriteOptions::default(),
            &|_| {},
        )
        .unwrap();
        file.into_inner()
    }

    #[test]
    fn sbom_is_printed_as_stored() {
        let bytes = installer_with(Some(b"{\"spdxVersion\":\"SPDX-2.3\"}\n"));
        let installer = Installer::open(&bytes, None).unwrap();
        let mut out = Vec::new();
        write_sbom(&installer, None, &mut out).unwrap();
        assert_eq!(out, b"{\"spdxVersion\":\"SPDX-2.3\"}\n");
    }

    #[test]
    fn installer_without_sbom_says_so() {
        let bytes = installer_with(None);
        let installer = Installer::open(&bytes, None).unwrap();
        let err = write_sbom(&installer, None, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("no SBOM"), "{err}");
        assert!(!err.is_corrupt());
    }

    #[test]
    fn damaged_sbom_is_a_corrupt_error() {
        let doc = b"{\"spdxVersion\":\"SPDX-2.3\"}\n";
        let mut bytes = installer_with(Some(doc));
        // The single frame starts right after the 100-byte stub's padding and the header.
        let at = align_payload(100) as usize + HEADER_LEN as usize;
        bytes[at] ^= 1;
        let installer = Installer::open(&bytes, None).unwrap();
        let err = write_sbom(&installer, None, &mut Vec::new()).unwrap_err();
        assert!(err.is_corrupt(), "{err}");
    }
}
