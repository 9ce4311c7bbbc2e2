//! The meta record (what `info` shows, read without the index) and the rules for the two
//! values in it that name an installer on disk: its [`Name`] and [`Version`].
//!
//! Both end up in file names on the target (`<state>/<name>-<version>.run`, records, logs), so
//! the builder checks them when it reads a spec and the installer checks them again before it
//! uses them; both call the types here, so a name or version one accepts the other accepts
//! too. Each parses through `FromStr`, and `Deserialize` goes through `FromStr` inside a serde
//! visitor, so a value that exists is a valid one and a deserializer that knows positions
//! (serde_yaml_ng) reports the offending scalar's line and column.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The longest name or version accepted, in bytes.
pub const MAX_LABEL_LEN: usize = 128;

/// What `info` shows; stored separately from the index so it reads in microseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Installer name.
    pub name: String,
    /// Installer version.
    pub version: String,
    /// `os/arch[/variant]` the payload is for.
    pub platform: String,
    /// Build time (seconds since the epoch; `SOURCE_DATE_EPOCH` or a fixed date).
    pub created: u64,
    /// Modification time given to every extracted entry.
    pub mtime: u64,
    /// Program and version that wrote the file.
    pub builder: String,
    /// Number of regular files.
    pub files: u64,
    /// Number of folders.
    pub dirs: u64,
    /// Number of symbolic links.
    pub symlinks: u64,
    /// Number of hard links.
    pub hardlinks: u64,
    /// Sum of file sizes.
    pub total_size: u64,
    /// Sum of stored frame lengths.
    pub stored_size: u64,
    /// Number of distinct contents stored.
    pub blob_count: u64,
    /// Number of frames.
    pub frame_count: u64,
    /// Number of captured images.
    #[serde(default)]
    pub images: u64,
}

/// An installer name: `[a-z0-9][a-z0-9-]*`, at most [`MAX_LABEL_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

/// Why a string is not a [`Name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name `{value}`: {reason}")]
pub struct NameError {
    value: String,
    reason: &'static str,
}

impl NameError {
    /// The rejected text.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Why it was rejected, such as "it is empty".
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl Name {
    /// Checks `text` against the name rules without keeping it.
    pub fn validate(text: &str) -> Result<(), NameError> {
        let reason = if text.is_empty() {
            Some("it is empty")
        } else if text.len() > MAX_LABEL_LEN {
            Some("it is longer than 128 bytes")
        } else {
            let mut bytes = text.bytes();
            let first_ok = bytes
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            (!(first_ok && rest_ok))
                .then_some("use lowercase letters, digits and '-', starting with a letter or digit")
        };
        match reason {
            None => Ok(()),
            Some(reason) => Err(NameError {
                value: text.to_owned(),
                reason,
            }),
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Name {
    type Err = NameError;

    fn from_str(text: &str) -> Result<Name, NameError> {
        Name::validate(text).map(|()| Name(text.to_owned()))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An installer version: printable ASCII without blanks, `/`, `\` or `%`, not starting with
/// `.`, at most [`MAX_LABEL_LEN`] bytes (it must be usable as part of a file name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version(String);

/// Why a string is not a [`Version`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version `{value}`: {reason}")]
pub struct VersionError {
    value: String,
    reason: &'static str,
}

impl VersionError {
    /// The rejected text.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Why it was rejected, such as "it contains '/'".
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl Version {
    /// Checks `text` against the version rules without keeping it.
    pub fn validate(text: &str) -> Result<(), VersionError> {
        let bad = |c: char| !c.is_ascii_graphic() || matches!(c, '/' | '\\' | '%');
        let reason = if text.is_empty() {
            Some("it is empty")
        } else if text.len() > MAX_LABEL_LEN {
            Some("it is longer than 128 bytes")
        } else if text.starts_with('.') {
            Some("it starts with '.'")
        } else {
            text.chars().find(|&c| bad(c)).map(|c| match c {
                '/' => "it contains '/'",
                '\\' => "it contains '\\'",
                '%' => "it contains '%'",
                c if c.is_ascii() => "it contains whitespace or a control character",
                _ => "it contains a character outside printable ASCII",
            })
        };
        match reason {
            None => Ok(()),
            Some(reason) => Err(VersionError {
                value: text.to_owned(),
                reason,
            }),
        }
    }

    /// The version as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(text: &str) -> Result<Version, VersionError> {
        Version::validate(text).map(|()| Version(text.to_owned()))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Deserializes `T` from a string through `FromStr`, inside the visitor so that a
/// deserializer that tracks positions attaches the scalar's location to the error.
struct FromStrVisitor<T>(&'static str, std::marker::PhantomData<T>);

impl<T> Visitor<'_> for FromStrVisitor<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
        value.parse().map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(FromStrVisitor::<Name>(
            "a name such as `edge`",
            std::marker::PhantomData,
        ))
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(FromStrVisitor::<Version>(
            "a version such as \"1.30.4-1\"",
            std::marker::PhantomData,
        ))
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_one_rule() {
        for good in ["edge", "0edge", "edge-1-30", &"a".repeat(128)] {
            assert_eq!(good.parse::<Name>().unwrap().as_str(), good);
        }
        for (bad, reason) in [
            ("", "it is empty"),
            (&"a".repeat(129), "it is longer than 128 bytes"),
            ("-edge", "use lowercase"),
            ("Edge", "use lowercase"),
            ("edge.1", "use lowercase"),
            ("../x", "use lowercase"),
            ("edge_1", "use lowercase"),
        ] {
            let err = bad.parse::<Name>().unwrap_err();
            assert!(err.reason().starts_with(reason), "{bad:?}: {err}");
            assert_eq!(err.value(), bad);
        }
        assert_eq!(
            "Edge".parse::<Name>().unwrap_err().to_string(),
            "invalid name `Edge`: use lowercase letters, digits and '-', starting with a letter or digit"
        );
    }

    #[test]
    fn versions_that_cannot_be_part_of_a_file_name_are_rejected() {
        for good in ["1", "1.30.4-1", "v1.2+build.3", "1:2~rc1", "1..2"] {
            assert!(good.parse::<Version>().is_ok(), "{good:?}");
        }
        for (bad, reason) in [
            ("", "it is empty"),
            (&"1".repeat(129), "it is longer than 128 bytes"),
            ("..", "it starts with '.'"),
            (".1", "it starts with '.'"),
            ("1/2", "it contains '/'"),
            ("1\\2", "it contains '\\'"),
            ("1%2", "it contains '%'"),
            ("1 2", "it contains whitespace or a control character"),
            ("1\t2", "it contains whitespace or a control character"),
            ("1\u{7f}", "it contains whitespace or a control character"),
            ("1.0-é", "it contains a character outside printable ASCII"),
        ] {
            let err = bad.parse::<Version>().unwrap_err();
            assert_eq!(err.reason(), reason, "{bad:?}");
        }
        assert_eq!(
            "1%2".parse::<Version>().unwrap_err().to_string(),
            "invalid version `1%2`: it contains '%'"
        );
    }

    #[test]
    fn names_and_versions_deserialize_through_their_rules() {
        let name: Name = serde_json::from_str("\"edge\"").unwrap();
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"edge\"");
        let err = serde_json::from_str::<Version>("\"1%2\"").unwrap_err();
        assert!(err.to_string().contains("invalid version `1%2`"), "{err}");
        assert!(serde_json::from_str::<Name>("\"Edge\"").is_err());
        assert!(serde_json::from_str::<Version>("12").is_err());
    }
}
