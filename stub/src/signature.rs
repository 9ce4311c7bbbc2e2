//! Installer signatures: verification with minisign public keys, the trusted-keys policy,
//! and `signature export`.
//!
//! Signatures are minisign signatures over the installer without its signature section
//! (SPEC.md, "Signature section"); `minisign-verify` (no dependencies) checks them. When
//! `<root>/etc/airlock/trusted-keys/` holds `*.pub` keys, `install`, `extract` and
//! `registry serve` call [`enforce_policy`] before anything is extracted or served: an
//! unsigned file, or one signed by no trusted key, is refused (exit 3).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use airlock_payload::Installer;
use base64::Engine as _;
use serde::Serialize;

/// Where trusted keys live, under the install root.
pub const TRUSTED_KEYS_DIR: &str = "etc/airlock/trusted-keys";
/// Environment variable naming another trusted-keys folder (tests, staged roots).
pub const TRUSTED_KEYS_ENV: &str = "AIRLOCK_TRUSTED_KEYS";

/// What can go wrong with keys and signatures.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// A public key file could not be read.
    #[error("failed to read public key {}", .path.display())]
    ReadKey {
        /// The key file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file is not a minisign public key.
    #[error("failed to use public key {}: {reason}", .path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A key folder holds no `*.pub` file.
    #[error("no public keys (*.pub) in {}", .0.display())]
    NoKeys(PathBuf),
    /// The file carries no signature but one is required.
    #[error("installer is not signed, but {required} requires a signature by {}", .trusted.join(", "))]
    Unsigned {
        /// What requires it (`--key`, or the trusted-keys folder).
        required: String,
        /// Key ids that would be accepted.
        trusted: Vec<String>,
    },
    /// Signed, but by no key that is trusted.
    #[error("installer is signed by {} only, none of them trusted by {required} (trusted: {})", .signed_by.join(", "), .trusted.join(", "))]
    Untrusted {
        /// What requires it.
        required: String,
        /// Key ids that signed.
        signed_by: Vec<String>,
        /// Key ids that would be accepted.
        trusted: Vec<String>,
    },
    /// A signature by a trusted key does not verify: the file or the signature was changed.
    #[error("signature by key {key_id} does not verify: the installer or its signature was modified, or it was signed for another file")]
    BadSignature {
        /// The key id.
        key_id: String,
    },
    /// A signature record is not a minisign signature.
    #[error("signature {index} is damaged: {reason}")]
    BadRecord {
        /// Position in the signature section.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// Writing exported files failed.
    #[error("failed to write {}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl SignatureError {
    /// True when the installer fails verification (exit 3), not a key or output problem.
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self,
            SignatureError::Unsigned { .. }
                | SignatureError::Untrusted { .. }
                | SignatureError::BadSignature { .. }
                | SignatureError::BadRecord { .. }
        )
    }
}

type Result<T, E = SignatureError> = std::result::Result<T, E>;

/// A public key one may trust.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// Key id as minisign shows it.
    pub key_id: String,
    key: minisign_verify::PublicKey,
}

/// A key id as minisign shows it: the 8 bytes as a little-endian u64 in upper-case hex.
fn format_key_id(b: &[u8]) -> String {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    format!("{:016X}", u64::from_le_bytes(a))
}

fn decode_b64(line: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .ok()
}

/// Loads a minisign public key file (`untrusted comment:` line, base64 line).
pub fn load_key(path: &Path) -> Result<TrustedKey> {
    let bad = |reason: &str| SignatureError::BadKey {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let bytes = fs::read(path).map_err(|source| SignatureError::ReadKey {
        path: path.to_owned(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|_| bad("not a minisign public key (not text)"))?;
    let line = text
        .lines()
        .nth(1)
        .ok_or_else(|| bad("not a minisign public key (no key line: truncated?)"))?;
    let bin = decode_b64(line).ok_or_else(|| {
        bad("not a minisign public key (the key line is not base64: truncated or another format)")
    })?;
    if bin.len() != 42 || &bin[0..2] != b"Ed" {
        let hint = if bin.len() > 42 {
            "; is it a secret key?"
        } else {
            ""
        };
        return Err(bad(&format!(
            "not a minisign public key (the key line decodes to {} bytes, 42 expected{hint})",
            bin.len()
        )));
    }
    let key = minisign_verify::PublicKey::decode(&text)
        .map_err(|e| bad(&format!("not a minisign public key ({e})")))?;
    Ok(TrustedKey {
        key_id: format_key_id(&bin[2..10]),
        key,
    })
}

/// Loads every `*.pub` file of `dir`, sorted by name; an error if there is none.
pub fn load_key_dir(dir: &Path) -> Result<Vec<TrustedKey>> {
    let read_err = |source| SignatureError::ReadKey {
        path: dir.to_owned(),
        source,
    };
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(read_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pub"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(SignatureError::NoKeys(dir.to_owned()));
    }
    paths.iter().map(|p| load_key(p)).collect()
}

/// One signature of the file, as `info` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SignatureInfo {
    /// Key id that made it.
    pub key_id: String,
    /// The trusted comment (signed along with the file).
    pub trusted_comment: String,
}

struct Record {
    key_id: String,
    text: String,
    sig: minisign_verify::Signature,
}

fn records(installer: &Installer<'_>) -> Result<Vec<Record>> {
    installer
        .signatures()
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let bad = |reason: String| SignatureError::BadRecord { index, reason };
            let sig = minisign_verify::Signature::decode(text)
                .map_err(|e| bad(format!("not a minisign signature ({e})")))?;
            let bin = text
                .lines()
                .nth(1)
                .and_then(decode_b64)
                .filter(|b| b.len() == 74)
                .ok_or_else(|| bad("no signature line".into()))?;
            Ok(Record {
                key_id: format_key_id(&bin[2..10]),
                text: text.clone(),
                sig,
            })
        })
        .collect()
}

/// The file's signatures (unverified), for `info`.
pub fn describe(installer: &Installer<'_>) -> Result<Vec<SignatureInfo>> {
    Ok(records(installer)?
        .into_iter()
        .map(|r| SignatureInfo {
            key_id: r.key_id,
            trusted_comment: r.sig.trusted_comment().to_owned(),
        })
        .collect())
}

/// Checks that a key of `keys` signed the file: every signature by one of `keys` must
/// verify and at least one must exist. `required` names what asks (for messages). Returns
/// the signatures that verified.
pub fn check(
    installer: &Installer<'_>,
    keys: &[TrustedKey],
    required: &str,
) -> Result<Vec<SignatureInfo>> {
    let trusted: Vec<String> = keys.iter().map(|k| k.key_id.clone()).collect();
    let records = records(installer)?;
    if records.is_empty() {
        return Err(SignatureError::Unsigned {
            required: required.to_owned(),
            trusted,
        });
    }
    let message = installer.signed_message();
    let mut good = Vec::new();
    for r in &records {
        if let Some(k) = keys.iter().find(|k| k.key_id == r.key_id) {
            k.key
                .verify(message, &r.sig, false)
                .map_err(|_| SignatureError::BadSignature {
                    key_id: r.key_id.clone(),
                })?;
            good.push(SignatureInfo {
                key_id: r.key_id.clone(),
                trusted_comment: r.sig.trusted_comment().to_owned(),
            });
        }
    }
    if good.is_empty() {
        return Err(SignatureError::Untrusted {
            required: required.to_owned(),
            signed_by: records.iter().map(|r| r.key_id.clone()).collect(),
            trusted,
        });
    }
    Ok(good)
}

/// The trusted-keys folder for an install root: `AIRLOCK_TRUSTED_KEYS` if set, else
/// `<root>/etc/airlock/trusted-keys`.
pub fn trusted_keys_dir(root: &Path) -> PathBuf {
    match std::env::var_os(TRUSTED_KEYS_ENV) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => root.join(TRUSTED_KEYS_DIR),
    }
}

/// The one check `install`, `extract` and `registry serve` run first: when the
/// trusted-keys folder of `root` holds keys, the file must be signed by one of them.
/// Without such keys nothing is required. `explicit` keys (`--key`) are required too.
pub fn enforce_policy(
    installer: &Installer<'_>,
    root: &Path,
    explicit: &[TrustedKey],
) -> Result<()> {
    if !explicit.is_empty() {
        check(installer, explicit, "--key")?;
    }
    let dir = trusted_keys_dir(root);
    match load_key_dir(&dir) {
        Ok(keys) => {
            check(installer, &keys, &dir.display().to_string())?;
            Ok(())
        }
        Err(SignatureError::NoKeys(_)) => Ok(()),
        Err(SignatureError::ReadKey { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// `signature export`: writes `message` (the signed bytes) and `<keyid>.minisig` per
/// signature into `dir` (created if missing), so `minisign -V -p KEY.pub -m DIR/message -x
/// DIR/<keyid>.minisig` verifies the installer without airlock. Returns the files written.
pub fn export(installer: &Installer<'_>, dir: &Path) -> Result<Vec<PathBuf>> {
    let records = records(installer)?;
    let write = |path: PathBuf, bytes: &[u8]| {
        fs::write(&path, bytes)
            .map(|()| path.clone())
            .map_err(|source| SignatureError::Write { path, source })
    };
    fs::create_dir_all(dir).map_err(|source| SignatureError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let mut written = vec![write(dir.join("message"), installer.signed_message())?];
    for r in records {
        written.push(write(
            dir.join(format!("{}.minisig", r.key_id)),
            r.text.as_bytes(),
        )?);
    }
    Ok(written)
}
