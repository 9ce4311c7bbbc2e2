//! The spec's value types: each parses through `FromStr`, so an invalid one cannot exist.
//!
//! [`Platform`] (`linux/amd64`, `linux/arm64[/variant]`), [`Mode`] (permission bits),
//! [`DestPath`] (a normalised path inside the target root) and [`SourcePath`] (a path that
//! existed, resolved against the spec's folder). [`Name`] and [`Version`] are the payload
//! format's own, so the builder and the installer apply one rule.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

pub use airlock_payload::{Name, NameError, Version, VersionError};

use super::de::{chain, string_serde, BaseRelativeVisitor};
use super::error::{Error, Result};

/// A target platform in OCI notation, `os/arch[/variant]`; only `linux` on `amd64` or `arm64`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    os: String,
    arch: String,
    variant: Option<String>,
}

impl Platform {
    /// The platform of the running builder, if it is one airlock supports.
    pub fn host() -> Option<Platform> {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            _ => return None,
        };
        if std::env::consts::OS != "linux" {
            return None;
        }
        Some(Platform {
            os: "linux".to_owned(),
            arch: arch.to_owned(),
            variant: None,
        })
    }

    /// The operating system, always `linux`.
    pub fn os(&self) -> &str {
        &self.os
    }

    /// The architecture in Go/OCI naming: `amd64` or `arm64`.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The architecture variant, such as `v8`, if given.
    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }
}

impl FromStr for Platform {
    type Err = Error;

    fn from_str(text: &str) -> Result<Platform> {
        let invalid = || Error::InvalidPlatform(text.to_owned());
        let mut parts = text.split('/');
        let os = parts.next().ok_or_else(invalid)?;
        let arch = parts.next().ok_or_else(invalid)?;
        let variant = parts.next();
        if parts.next().is_some() || os != "linux" || !matches!(arch, "amd64" | "arm64") {
            return Err(invalid());
        }
        if let Some(variant) = variant {
            let token = !variant.is_empty()
                && variant
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            if !token {
                return Err(invalid());
            }
        }
        Ok(Platform {
            os: os.to_owned(),
            arch: arch.to_owned(),
            variant: variant.map(str::to_owned),
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

string_serde!(Platform, "a platform such as linux/amd64");

/// Permission bits, at most `0o7777`.
///
/// In YAML, write it as an octal string (`"0755"`, `"755"`, `"0o755"`; an unquoted `0755` is a
/// string in YAML 1.2 too). A YAML number is taken as the value itself (`493` or `0o755`) but
/// must not exceed 511: a number such as `755` is almost always a mistyped `"0755"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mode(u32);

impl Mode {
    /// The permission bits.
    pub fn bits(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Mode {
    type Error = Error;

    fn try_from(bits: u32) -> Result<Mode> {
        if bits <= 0o7777 {
            Ok(Mode(bits))
        } else {
            Err(Error::InvalidMode(format!("{bits:o}")))
        }
    }
}

impl FromStr for Mode {
    type Err = Error;

    fn from_str(text: &str) -> Result<Mode> {
        let digits = text.strip_prefix("0o").unwrap_or(text);
        let valid = !digits.is_empty() && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
        let bits = valid
            .then(|| u32::from_str_radix(digits, 8).ok())
            .flatten()
            .filter(|bits| *bits <= 0o7777);
        bits.map(Mode)
            .ok_or_else(|| Error::InvalidMode(text.to_owned()))
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl Serialize for Mode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ModeVisitor;

        impl Visitor<'_> for ModeVisitor {
            type Value = Mode;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mode such as \"0755\"")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Mode, E> {
                value.parse().map_err(|err: Error| E::custom(chain(&err)))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Mode, E> {
                if value > 0o777 {
                    return Err(E::custom(Error::AmbiguousMode(value)));
                }
                Ok(Mode(value as u32))
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Mode, E> {
                match u64::try_from(value) {
                    Ok(value) => self.visit_u64(value),
                    Err(_) => Err(E::custom(Error::InvalidMode(value.to_string()))),
                }
            }
        }

        deserializer.deserialize_any(ModeVisitor)
    }
}

/// A normalised path inside the target root.
///
/// Written in the spec as an absolute path; `//` and `.` components collapse, `..` components
/// are rejected. Stored without the leading '/', so the root itself is `""`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestPath(String);

impl DestPath {
    /// The path relative to the target root, '/'-separated, without a leading '/'; `""` for the
    /// root.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the root of the target.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for DestPath {
    type Err = Error;

    fn from_str(text: &str) -> Result<DestPath> {
        if text.contains('\0') {
            return Err(Error::PathHasNul(text.to_owned()));
        }
        let mut parts = Vec::new();
        for part in text.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(Error::DestEscapes(text.to_owned())),
                part => parts.push(part),
            }
        }
        if !text.starts_with('/') {
            return Err(Error::DestNotAbsolute(text.to_owned()));
        }
        Ok(DestPath(parts.join("/")))
    }
}

impl fmt::Display for DestPath {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "/{}", self.0)
    }
}

string_serde!(DestPath, "an absolute path such as /usr/local/bin/tool");

/// A source path that existed when the spec was read, resolved against the spec's folder.
///
/// Deserializing one needs the spec's folder, which only
/// [`Spec::from_str_at`](super::Spec::from_str_at) provides (see the thread-local in
/// `spec/de.rs`); elsewhere use [`SourcePath::resolve`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourcePath(PathBuf);

impl SourcePath {
    /// Resolves `text` against `base` (unless it is absolute) and checks that it exists; a
    /// symlink counts as existing even if its target does not.
    pub fn resolve(base: &Path, text: &str) -> Result<SourcePath> {
        if text.is_empty() {
            return Err(Error::SourceEmpty);
        }
        if text.contains('\0') {
            return Err(Error::PathHasNul(text.to_owned()));
        }
        let path = base.join(text);
        match std::fs::symlink_metadata(&path) {
            Ok(_) => Ok(SourcePath(path)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Err(Error::SourceNotFound(path)),
            Err(source) => Err(Error::SourceInspect { path, source }),
        }
    }

    /// The resolved path.
    pub fn as_path(&self) -> &Path {
        &self.0
    }

    /// The resolved path, by value.
    pub fn into_path_buf(self) -> PathBuf {
        self.0
    }
}

impl<'de> Deserialize<'de> for SourcePath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(BaseRelativeVisitor {
            expecting: "a path relative to the spec's folder",
            parse: |base, value| SourcePath::resolve(base, value),
        })
    }
}
