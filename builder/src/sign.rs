//! Signing installers with minisign keys: `airlock keygen`, `airlock build --sign KEY` and
//! `airlock sign FILE --key KEY`.
//!
//! Keys and signatures are minisign's own formats (the `minisign` crate, by minisign's
//! author), so teams keep the keys and the tool they know: `minisign -V` verifies what
//! `./x.run signature export` writes. The signed message is the installer without its
//! signature section (SPEC.md, "Signature section"), so signing never changes any other
//! byte of the file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use airlock_payload::{Installer, SignatureSection};
use base64::Engine as _;

/// Environment variable holding the secret key's password.
pub const PASSWORD_ENV: &str = "AIRLOCK_KEY_PASSWORD";

/// What can go wrong while making keys or signing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key file could not be read.
    #[error("failed to read key {}", .path.display())]
    ReadKey {
        /// The key file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file is not a minisign secret key.
    #[error("failed to use key {}: {reason}", .path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The password does not decrypt the key.
    #[error("failed to decrypt key {}: wrong password", .path.display())]
    WrongPassword {
        /// The key file.
        path: PathBuf,
    },
    /// The key is encrypted and no password can be had.
    #[error("failed to decrypt key {}: it is encrypted; set {PASSWORD_ENV} or run on a terminal", .path.display())]
    NoPassword {
        /// The key file.
        path: PathBuf,
    },
    /// `keygen` without a password source.
    #[error("failed to make a key: no password; set {PASSWORD_ENV}, run on a terminal, or pass --no-password")]
    NoNewPassword,
    /// `keygen` would overwrite a key.
    #[error("failed to make a key: {} exists (remove it first)", .0.display())]
    KeyExists(PathBuf),
    /// A minisign operation failed.
    #[error("failed to {step}: {message}")]
    Minisign {
        /// The step.
        step: &'static str,
        /// minisign's message.
        message: String,
    },
    /// The installer to sign is damaged: signing it is refused.
    #[error("refusing to sign {}: it is damaged", .path.display())]
    Damaged {
        /// The installer.
        path: PathBuf,
        /// What is damaged.
        #[source]
        source: airlock_payload::Error,
    },
    /// The installer is version 1, which has no signature section.
    #[error("refusing to sign {}: format version 1 installers cannot carry signatures; rebuild it with this airlock", .0.display())]
    Version1(PathBuf),
    /// Reading or writing failed.
    #[error("failed to {context}")]
    Io {
        /// The step.
        context: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// True when the error means the installer is corrupt (exit code 3).
    pub fn is_corrupt(&self) -> bool {
        matches!(self, Error::Damaged { .. })
    }
}

/// Result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

fn minisign_err(step: &'static str) -> impl FnOnce(minisign::PError) -> Error {
    move |e| Error::Minisign {
        step,
        message: e.to_string(),
    }
}

/// How `keygen` protects the secret key.
#[derive(Debug, Clone)]
pub enum NewPassword {
    /// No encryption (`--no-password`).
    None,
    /// This password (from [`PASSWORD_ENV`]).
    Given(String),
    /// Ask twice on the terminal.
    Prompt,
}

impl NewPassword {
    /// [`PASSWORD_ENV`] if set, else a prompt when stdin is a terminal.
    pub fn from_env(no_password: bool) -> Result<Self> {
        if no_password {
            return Ok(NewPassword::None);
        }
        match std::env::var(PASSWORD_ENV) {
            Ok(p) => Ok(NewPassword::Given(p)),
            Err(_) if io::stdin().is_terminal() => Ok(NewPassword::Prompt),
            Err(_) => Err(Error::NoNewPassword),
        }
    }
}

/// What `keygen` wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeygenReport {
    /// The secret key (mode 0600).
    pub secret: PathBuf,
    /// The public key.
    pub public: PathBuf,
    /// The key id, as minisign shows it.
    pub key_id: String,
}

/// Makes a key pair: `<prefix>.key` (secret, 0600) and `<prefix>.pub`, refusing to
/// overwrite either.
pub fn keygen(prefix: &Path, password: NewPassword) -> Result<KeygenReport> {
    let with_ext = |ext: &str| {
        let mut s = prefix.as_os_str().to_owned();
        s.push(ext);
        PathBuf::from(s)
    };
    let (secret, public) = (with_ext(".key"), with_ext(".pub"));
    for p in [&secret, &public] {
        if p.symlink_metadata().is_ok() {
            return Err(Error::KeyExists(p.clone()));
        }
    }
    let pair = match password {
        NewPassword::None => minisign::KeyPair::generate_unencrypted_keypair(),
        NewPassword::Given(p) => minisign::KeyPair::generate_encrypted_keypair(Some(p)),
        NewPassword::Prompt => minisign::KeyPair::generate_encrypted_keypair(None),
    }
    .map_err(minisign_err("generate a key pair"))?;
    let key_id = format_key_id(pair.pk.keynum());
    let sk_text = pair
        .sk
        .to_box(None)
        .map_err(minisign_err("encode the secret key"))?
        .into_string();
    let pk_text = pair
        .pk
        .to_box()
        .map_err(minisign_err("encode the public key"))?
        .into_string();
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&secret)
        .map_err(io_err(format!("create {}", secret.display())))?;
    f.write_all(sk_text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io_err(format!("write {}", secret.display())))?;
    fs::write(&public, pk_text).map_err(io_err(format!("write {}", public.display())))?;
    Ok(KeygenReport {
        secret,
        public,
        key_id,
    })
}

/// A secret key ready to sign.
pub struct SigningKey {
    sk: minisign::SecretKey,
    pk: minisign::PublicKey,
    /// The key id, as minisign shows it.
    pub key_id: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Length of a decoded minisign secret key: algorithms, salt, limits, key id, key, checksum.
const SECRET_KEY_LEN: usize = 2 + 2 + 2 + 32 + 8 + 8 + 8 + 64 + 32;
/// Length of a decoded minisign public key.
const PUBLIC_KEY_LEN: usize = 2 + 8 + 32;

/// Loads a minisign secret key, decrypting it with [`PASSWORD_ENV`] or a prompt when it
/// is encrypted. Names the problem for a foreign, truncated or public key file.
pub fn load_secret_key(path: &Path) -> Result<SigningKey> {
    let bytes = fs::read(path).map_err(|source| Error::ReadKey {
        path: path.to_owned(),
        source,
    })?;
    let bad = |reason: &str| Error::BadKey {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let text = String::from_utf8(bytes).map_err(|_| bad("not a minisign secret key (not text)"))?;
    let mut lines = text.lines();
    let comment = lines.next().unwrap_or_default();
    if !comment.starts_with("untrusted comment:") {
        return Err(bad(
            "not a minisign secret key (no `untrusted comment:` line)",
        ));
    }
    let line = lines
        .next()
        .ok_or_else(|| bad("not a minisign secret key (no key line: truncated?)"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .map_err(|_| {
            bad("not a minisign secret key (the key line is not base64: truncated or another format)")
        })?;
    if decoded.len() == PUBLIC_KEY_LEN {
        return Err(bad(
            "this is a public key; signing needs the secret key (.key)",
        ));
    }
    if decoded.len() != SECRET_KEY_LEN || &decoded[0..2] != b"Ed" {
        return Err(bad(&format!(
            "not a minisign secret key (the key line decodes to {} bytes, {SECRET_KEY_LEN} expected: truncated or another format)",
            decoded.len()
        )));
    }
    let sk_box =
        minisign::SecretKeyBox::from_string(&text).map_err(minisign_err("read the key"))?;
    let sk = match &decoded[2..4] {
        [0, 0] => minisign::SecretKey::from_unencrypted_box(sk_box)
            .map_err(|e| bad(&format!("the key is damaged ({e})")))?,
        b"Sc" => {
            let password = match std::env::var(PASSWORD_ENV) {
                Ok(p) => Some(p),
                Err(_) if io::stdin().is_terminal() => None,
                Err(_) => {
                    return Err(Error::NoPassword {
                        path: path.to_owned(),
                    })
                }
            };
            minisign::SecretKey::from_box(sk_box, password).map_err(|e| {
                if matches!(e.kind(), minisign::ErrorKind::Verify) {
                    Error::WrongPassword {
                        path: path.to_owned(),
                    }
                } else {
                    bad(&format!("the key cannot be decrypted ({e})"))
                }
            })?
        }
        _ => return Err(bad("the key uses an unknown encryption algorithm")),
    };
    let pk = minisign::PublicKey::from_secret_key(&sk)
        .map_err(|e| bad(&format!("the key is damaged ({e})")))?;
    Ok(SigningKey {
        key_id: format_key_id(sk.keynum()),
        sk,
        pk,
    })
}

/// A key id as minisign shows it: the 8 bytes as a little-endian u64 in upper-case hex.
pub fn format_key_id(keynum: &[u8]) -> String {
    let mut b = [0u8; 8];
    b.copy_from_slice(&keynum[..8]);
    format!("{:016X}", u64::from_le_bytes(b))
}

/// The key id of a `.minisig` text, `None` when it is not one.
pub fn signature_key_id(minisig: &str) -> Option<String> {
    let line = minisig.lines().nth(1)?;
    let bin = base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .ok()?;
    (bin.len() == 74).then(|| format_key_id(&bin[2..10]))
}

/// Signs `message` with `key`: the text of a `.minisig` file whose trusted comment is
/// `trusted_comment`.
pub fn sign_message(key: &SigningKey, message: impl Read, trusted_comment: &str) -> Result<String> {
    let untrusted = format!("signature from airlock secret key {}", key.key_id);
    let sig = minisign::sign(
        Some(&key.pk),
        &key.sk,
        message,
        Some(trusted_comment),
        Some(&untrusted),
    )
    .map_err(minisign_err("sign the installer"))?;
    Ok(sig.into_string())
}

/// The trusted comment put in every signature: a timestamp, the file name and what the
/// installer is (minisign -V prints it; `info` shows it).
pub fn trusted_comment(timestamp: u64, file_name: &str, name: &str, version: &str) -> String {
    format!("timestamp:{timestamp}\tfile:{file_name}\tinstaller:{name} {version}")
}

/// `existing` signatures with `added` ones: a key that already signed has its record
/// replaced (in place), new keys are appended.
pub fn merge_signatures(existing: &[String], added: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = existing.to_vec();
    for sig in added {
        let id = signature_key_id(&sig);
        match out
            .iter()
            .position(|s| id.is_some() && signature_key_id(s) == id)
        {
            Some(i) => out[i] = sig,
            None => out.push(sig),
        }
    }
    out
}

/// What `sign` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SignReport {
    /// The installer signed.
    pub file: PathBuf,
    /// Key ids that signed now.
    pub signed_by: Vec<String>,
    /// Signatures the file carries now.
    pub signatures: usize,
}

/// Appends a signature section with `signatures` to `file`, which holds exactly the
/// `signed_len` bytes of an unsigned installer (the build's temporary file).
pub fn append_section(file: &mut File, signed_len: u64, signatures: Vec<String>) -> Result<()> {
    let section = SignatureSection {
        signed_len,
        signatures,
    }
    .to_bytes()
    .map_err(|e| Error::Io {
        context: "encode the signature section".into(),
        source: io::Error::other(e),
    })?;
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(signed_len))
        .and_then(|_| file.write_all(&section))
        .and_then(|()| file.set_len(signed_len + section.len() as u64))
        .map_err(io_err("write the signature section"))
}

/// Signs the installer at `path` in place with every key: checks it completely first (a
/// damaged file is refused), then writes the unchanged message plus the new signature
/// section to a temporary file beside it and renames it over the original.
pub fn sign_file(path: &Path, keys: &[SigningKey], timestamp: u64) -> Result<SignReport> {
    let file = File::open(path).map_err(io_err(format!("open {}", path.display())))?;
    let mode = file
        .metadata()
        .map_err(io_err(format!("inspect {}", path.display())))?
        .permissions()
        .mode();
    // SAFETY: a read-only private map of a file we only read; a concurrent truncation
    // would fault (SIGBUS). The replacement is written to another file and renamed, so
    // this map is never written through.
    let map =
        unsafe { memmap2::Mmap::map(&file) }.map_err(io_err(format!("map {}", path.display())))?;
    let damaged = |source| Error::Damaged {
        path: path.to_owned(),
        source,
    };
    let installer =
        Installer::open(&map, airlock_payload::declared_elf_end(&map)).map_err(damaged)?;
    if installer.format_version() < 2 {
        return Err(Error::Version1(path.to_owned()));
    }
    installer.verify_stub().map_err(damaged)?;
    let payload = installer.load_index().map_err(damaged)?;
    if let Some(e) = payload.verify(false, &|_| {}).damaged.into_iter().next() {
        return Err(damaged(e));
    }
    let message = installer.signed_message();
    let meta = installer.meta();
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let comment = trusted_comment(timestamp, &file_name, &meta.name, &meta.version);
    let added = keys
        .iter()
        .map(|k| sign_message(k, message, &comment))
        .collect::<Result<Vec<_>>>()?;
    let signatures = merge_signatures(installer.signatures(), added);
    let count = signatures.len();

    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".airlock-sign-")
        .tempfile_in(dir)
        .map_err(io_err(format!(
            "create a temporary file in {}",
            dir.display()
        )))?;
    tmp.write_all(message)
        .map_err(io_err("copy the installer"))?;
    append_section(tmp.as_file_mut(), message.len() as u64, signatures)?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode & 0o7777))
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io_err("write the signed installer"))?;
    drop(map);
    tmp.persist(path).map_err(|e| Error::Io {
        context: format!("replace {}", path.display()),
        source: e.error,
    })?;
    Ok(SignReport {
        file: path.to_owned(),
        signed_by: keys.iter().map(|k| k.key_id.clone()).collect(),
        signatures: count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unencrypted(dir: &Path, name: &str) -> SigningKey {
        let prefix = dir.join(name);
        keygen(&prefix, NewPassword::None).unwrap();
        load_secret_key(&prefix.with_extension("key")).unwrap()
    }

    #[test]
    fn keygen_writes_a_private_secret_key_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let report = keygen(&dir.path().join("release"), NewPassword::None).unwrap();
        let mode = fs::metadata(&report.secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(fs::read_to_string(&report.public)
            .unwrap()
            .contains(&report.key_id));
        let err = keygen(&dir.path().join("release"), NewPassword::None).unwrap_err();
        assert!(matches!(err, Error::KeyExists(_)), "{err}");
        assert_eq!(
            load_secret_key(&report.secret).unwrap().key_id,
            report.key_id
        );
    }

    #[test]
    fn encrypted_keys_need_the_right_password() {
        let dir = tempfile::tempdir().unwrap();
        let report = keygen(&dir.path().join("k"), NewPassword::Given("right".into())).unwrap();
        let text = fs::read_to_string(&report.secret).unwrap();
        let sk_box = minisign::SecretKeyBox::from_string(&text).unwrap();
        let err = minisign::SecretKey::from_box(sk_box, Some("wrong".into())).unwrap_err();
        assert!(matches!(err.kind(), minisign::ErrorKind::Verify), "{err}");
    }

    #[test]
    fn public_truncated_and_foreign_key_files_are_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let report = keygen(&dir.path().join("k"), NewPassword::None).unwrap();
        let err = load_secret_key(&report.public).unwrap_err().to_string();
        assert!(err.contains("this is a public key"), "{err}");
        let text = fs::read_to_string(&report.secret).unwrap();
        let cut = dir.path().join("cut.key");
        fs::write(&cut, &text[..text.len() - 40]).unwrap();
        let err = load_secret_key(&cut).unwrap_err().to_string();
        assert!(err.contains("truncated or another format"), "{err}");
        let foreign = dir.path().join("id_ed25519");
        fs::write(&foreign, "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n").unwrap();
        let err = load_secret_key(&foreign).unwrap_err().to_string();
        assert!(err.contains("not a minisign secret key"), "{err}");
    }

    #[test]
    fn re_signing_with_a_key_replaces_its_signature_and_keeps_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (unencrypted(dir.path(), "a"), unencrypted(dir.path(), "b"));
        let sa = sign_message(&a, &b"m"[..], "t").unwrap();
        let sb = sign_message(&b, &b"m"[..], "t").unwrap();
        let sa2 = sign_message(&a, &b"m"[..], "t2").unwrap();
        let merged = merge_signatures(&[sa, sb.clone()], vec![sa2.clone()]);
        assert_eq!(merged, vec![sa2, sb]);
        assert_eq!(signature_key_id(&merged[1]).unwrap(), b.key_id);
    }
}
