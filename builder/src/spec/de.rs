//! Serde plumbing for the spec: how values are deserialized so that every error carries the
//! `file:line:column` of the offending scalar.
//!
//! - [`FromStrVisitor`] and `string_serde!`: `Deserialize` through `FromStr` inside the
//!   visitor (where serde_yaml_ng still knows the scalar's position), `Serialize` through
//!   `Display`.
//! - [`BaseRelativeVisitor`] and [`SourceBase`]: values relative to the spec's folder, which
//!   serde cannot pass down, so it sits in a thread-local while a spec is parsed.
//! - [`located`]: a serde_yaml_ng error as [`Error::Invalid`]; [`chain`]: an error and its
//!   causes as one line (serde messages are text).

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::error::{Error, Result};
use crate::discover::pattern::ImagePattern;

/// Deserializes `T` from a string through `FromStr`, inside the visitor so that serde_yaml_ng
/// attaches the scalar's location to the error.
pub(super) struct FromStrVisitor<T>(pub(super) &'static str, pub(super) PhantomData<T>);

impl<T> Visitor<'_> for FromStrVisitor<T>
where
    T: FromStr,
    T::Err: std::error::Error,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
        value.parse().map_err(|err: T::Err| E::custom(chain(&err)))
    }
}

/// Implements `Deserialize` through [`FromStrVisitor`] and `Serialize` through `Display`.
macro_rules! string_serde {
    ($type:ty, $expecting:literal) => {
        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_str($crate::spec::de::FromStrVisitor::<$type>(
                    $expecting,
                    std::marker::PhantomData,
                ))
            }
        }

        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
    };
}

pub(super) use string_serde;

/// Parses a string that names something relative to the spec's folder (in scope while the
/// spec is parsed), so a missing path is reported at its own line and column.
pub(super) struct BaseRelativeVisitor<T> {
    pub(super) expecting: &'static str,
    pub(super) parse: fn(&Path, &str) -> Result<T>,
}

impl<T> Visitor<'_> for BaseRelativeVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
        let base = SOURCE_BASE.with(|base| base.borrow().clone());
        let result = match base {
            Some(base) => (self.parse)(&base, value),
            None => Err(Error::SourceWithoutBase(value.to_owned())),
        };
        result.map_err(|err| E::custom(chain(&err)))
    }
}

impl<'de> Deserialize<'de> for ImagePattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(FromStrVisitor::<ImagePattern>(
            "an image reference or a pattern such as docker.io/library/*",
            PhantomData,
        ))
    }
}

/// Turns a serde_yaml_ng error into [`Error::Invalid`] with the spec path and the location.
///
/// serde_yaml_ng appends " at line L column C" to its messages; the location moves to the front
/// in the `file:line:column` form editors and terminals recognise, so it is removed from the
/// message. Errors without a location (an empty document) point at 1:1.
pub(super) fn located(spec_path: &Path, err: &serde_yaml_ng::Error) -> Error {
    let mut message = err.to_string();
    let (line, column) = match err.location() {
        Some(location) => {
            let suffix = format!(" at line {} column {}", location.line(), location.column());
            if let Some(start) = message.find(&suffix) {
                message.replace_range(start..start + suffix.len(), "");
            }
            (location.line(), location.column())
        }
        None => (1, 1),
    };
    Error::Invalid {
        file: spec_path.to_owned(),
        line,
        column,
        message,
    }
}

/// Formats an error and its sources as one line, for serde messages (which only take text).
pub(super) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// -------------------------------------------------------------------------------------------
// The folder that `src` paths are resolved against while a spec is deserialized.
//
// serde's `Deserialize` takes no context, and the values it produces carry no positions, so the
// only way to report a missing `src` with serde_yaml_ng's `file:line:column` is to check it while
// the scalar is being deserialized. `Spec::from_str_at` therefore puts the spec's folder into a
// thread-local for the duration of `serde_yaml_ng::from_str` (which runs on the calling thread),
// and `SourcePath`'s visitor reads it. A `DeserializeSeed` chain would avoid the thread-local but
// needs hand-written visitors for every struct down to the file entry, losing the derived
// `deny_unknown_fields` handling. The guard restores the previous value, so nested or panicking
// parses leave no stale folder behind.
// -------------------------------------------------------------------------------------------

thread_local! {
    pub(super) static SOURCE_BASE: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// Sets the thread's source folder until dropped.
pub(super) struct SourceBase {
    previous: Option<PathBuf>,
}

impl SourceBase {
    pub(super) fn enter(dir: PathBuf) -> SourceBase {
        let previous = SOURCE_BASE.with(|base| base.replace(Some(dir)));
        SourceBase { previous }
    }
}

impl Drop for SourceBase {
    fn drop(&mut self) {
        let previous = self.previous.take();
        SOURCE_BASE.with(|base| *base.borrow_mut() = previous);
    }
}
