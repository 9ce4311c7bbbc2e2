//! The signature section: minisign signatures appended after the trailer (SPEC.md,
//! "Signature section").
//!
//! The signed message is the unsigned installer, bytes `[0, signed_len)`, exactly as the
//! writer produced it. Signatures live after it, so adding, replacing or removing one never
//! changes a byte of the message: `sign` rewrites only the section and its footer. This
//! module holds the byte layout only; the cryptography (minisign) lives in the builder
//! (signing) and the stub (verification), each with the crate it needs.

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};

/// Magic at the start of the signature section.
pub const SIGNATURE_MAGIC: &[u8; 8] = b"AIRLOCKS";
/// Magic at the start of the signature footer.
pub const SIGNATURE_FOOTER_MAGIC: &[u8; 8] = b"AIRLOCKF";
/// Magic at the end of the signature footer: the last bytes of a signed file.
pub const SIGNATURE_END_MAGIC: &[u8; 8] = b"AIRLOCKG";
/// Size of the signature footer.
pub const SIGNATURE_FOOTER_LEN: u64 = 96;
/// Version of the signature section layout.
pub const SIGNATURE_SECTION_VERSION: u32 = 1;
/// Most signatures one file may carry.
pub const MAX_SIGNATURES: usize = 64;
/// Largest record (one `.minisig` text) a reader accepts.
pub const MAX_SIGNATURE_LEN: usize = 4096;

/// Where a file's signed part ends and what signatures follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureSection {
    /// Length of the signed message (the unsigned installer), `[0, signed_len)`.
    pub signed_len: u64,
    /// Each signature as the text of a minisign `.minisig` file, in the order added.
    pub signatures: Vec<String>,
}

impl SignatureSection {
    /// True when `file` ends with a signature footer's end magic (it claims to be signed).
    pub fn is_present(file: &[u8]) -> bool {
        file.ends_with(SIGNATURE_END_MAGIC)
    }

    /// Encodes the section and its footer: the bytes that follow the signed message.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        if self.signatures.len() > MAX_SIGNATURES {
            return Err(Error::Signature(format!(
                "at most {MAX_SIGNATURES} signatures fit in one file"
            )));
        }
        let mut b = Vec::new();
        b.extend_from_slice(SIGNATURE_MAGIC);
        b.extend_from_slice(&SIGNATURE_SECTION_VERSION.to_le_bytes());
        b.extend_from_slice(&(self.signatures.len() as u32).to_le_bytes());
        for s in &self.signatures {
            if s.len() > MAX_SIGNATURE_LEN || s.is_empty() {
                return Err(Error::Signature(format!(
                    "a signature record must be 1 to {MAX_SIGNATURE_LEN} bytes, not {}",
                    s.len()
                )));
            }
            b.extend_from_slice(&(s.len() as u32).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
        }
        let section_len = b.len() as u64;
        let mut f = [0u8; SIGNATURE_FOOTER_LEN as usize];
        f[0..8].copy_from_slice(SIGNATURE_FOOTER_MAGIC);
        f[8..16].copy_from_slice(&self.signed_len.to_le_bytes());
        f[16..24].copy_from_slice(&section_len.to_le_bytes());
        f[24..56].copy_from_slice(&Sha256Digest::of(&b).0);
        let sum = Sha256Digest::of(&f[0..56]);
        f[56..88].copy_from_slice(&sum.0);
        f[88..96].copy_from_slice(SIGNATURE_END_MAGIC);
        b.extend_from_slice(&f);
        Ok(b)
    }

    /// Decodes the section at the end of `file` (the caller has checked
    /// [`SignatureSection::is_present`]). Every check names what is damaged.
    pub fn from_file_end(file: &[u8]) -> Result<Self> {
        let damaged =
            |what: &str| Error::Signature(format!("signature section is damaged: {what}"));
        let len = file.len() as u64;
        if len < SIGNATURE_FOOTER_LEN {
            return Err(damaged("the file is shorter than the signature footer"));
        }
        let f = &file[(len - SIGNATURE_FOOTER_LEN) as usize..];
        if &f[0..8] != SIGNATURE_FOOTER_MAGIC || Sha256Digest::of(&f[0..56]).0 != f[56..88] {
            return Err(damaged("footer checksum mismatch"));
        }
        let signed_len = u64_at(f, 8);
        let section_len = u64_at(f, 16);
        let fits = signed_len
            .checked_add(section_len)
            .and_then(|n| n.checked_add(SIGNATURE_FOOTER_LEN))
            == Some(len);
        if !fits {
            return Err(damaged("footer offsets do not describe this file"));
        }
        let s = &file[signed_len as usize..(signed_len + section_len) as usize];
        if Sha256Digest::of(s).0 != f[24..56] {
            return Err(damaged("section checksum mismatch"));
        }
        if s.len() < 16 || &s[0..8] != SIGNATURE_MAGIC {
            return Err(damaged("missing section magic"));
        }
        let version = u32::from_le_bytes(s[8..12].try_into().expect("4 bytes"));
        if version != SIGNATURE_SECTION_VERSION {
            return Err(Error::Signature(format!(
                "unsupported signature section version {version} (this program reads version {SIGNATURE_SECTION_VERSION})"
            )));
        }
        let count = u32::from_le_bytes(s[12..16].try_into().expect("4 bytes")) as usize;
        if count > MAX_SIGNATURES {
            return Err(damaged("too many signatures"));
        }
        let mut signatures = Vec::with_capacity(count);
        let mut at = 16usize;
        for i in 0..count {
            let n = s
                .get(at..at + 4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
                .ok_or_else(|| damaged(&format!("record {i} is cut short")))?;
            if n == 0 || n > MAX_SIGNATURE_LEN {
                return Err(damaged(&format!("record {i} has an invalid length {n}")));
            }
            let text = s
                .get(at + 4..at + 4 + n)
                .ok_or_else(|| damaged(&format!("record {i} is cut short")))?;
            let text = std::str::from_utf8(text)
                .map_err(|_| damaged(&format!("record {i} is not UTF-8")))?;
            signatures.push(text.to_owned());
            at += 4 + n;
        }
        if at != s.len() {
            return Err(damaged("bytes after the last record"));
        }
        Ok(SignatureSection {
            signed_len,
            signatures,
        })
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<u8>, SignatureSection) {
        let mut file = b"the unsigned installer".to_vec();
        let section = SignatureSection {
            signed_len: file.len() as u64,
            signatures: vec![
                "untrusted comment: a\nAAAA\ntrusted comment: b\nBBBB\n".into(),
                "x".into(),
            ],
        };
        file.extend(section.to_bytes().unwrap());
        (file, section)
    }

    #[test]
    fn section_round_trips_after_the_message() {
        let (file, section) = sample();
        assert!(SignatureSection::is_present(&file));
        assert_eq!(SignatureSection::from_file_end(&file).unwrap(), section);
    }

    #[test]
    fn any_flipped_byte_of_the_section_is_reported_as_damage() {
        let (file, section) = sample();
        for i in section.signed_len as usize..file.len() - 8 {
            let mut f = file.clone();
            f[i] ^= 0x04;
            let err = SignatureSection::from_file_end(&f).unwrap_err();
            assert!(
                err.to_string().contains("signature section is damaged"),
                "{i}: {err}"
            );
            assert!(err.is_corrupt());
        }
    }

    #[test]
    fn a_section_cut_short_is_not_taken_for_a_signed_file() {
        let (file, _) = sample();
        assert!(!SignatureSection::is_present(&file[..file.len() - 1]));
        assert!(SignatureSection::from_file_end(&file[file.len() - 50..]).is_err());
    }
}
