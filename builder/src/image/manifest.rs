//! Manifests and indexes as airlock reads them: [`Descriptor`], [`DescPlatform`], a lenient
//! manifest shape and the platform fields of an image config.

use std::fmt;

use airlock_payload::Sha256Digest;
use serde::{Deserialize, Serialize};

use super::error::ErrorKind;

/// A content descriptor as manifests and indexes write it (only the fields airlock uses;
/// the blobs themselves are kept verbatim).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    /// `sha256:...`.
    pub digest: String,
    /// Length in bytes.
    pub size: u64,
    /// Platform (index entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<DescPlatform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

impl Descriptor {
    /// The digest, if it is a sha256 one.
    pub fn sha256(&self) -> Result<Sha256Digest, ErrorKind> {
        self.digest
            .parse()
            .map_err(|_| ErrorKind::BadDigest(self.digest.clone()))
    }

    /// An annotation's value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }
}

/// The platform of an index entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DescPlatform {
    /// `linux`.
    #[serde(default)]
    pub os: String,
    /// `amd64`.
    #[serde(default)]
    pub architecture: String,
    /// `v8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl fmt::Display for DescPlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A manifest or index, parsed leniently (unknown fields ignored).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AnyManifest {
    #[serde(default)]
    pub(super) schema_version: Option<i64>,
    #[serde(default)]
    pub(super) media_type: Option<String>,
    #[serde(default)]
    pub(super) manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    pub(super) config: Option<Descriptor>,
    #[serde(default)]
    pub(super) layers: Option<Vec<Descriptor>>,
}

/// The parts of an image config airlock reads.
#[derive(Debug, Deserialize)]
pub(crate) struct ConfigPlatform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}
