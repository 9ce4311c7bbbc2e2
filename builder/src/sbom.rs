//! The software bill of materials every build embeds: an SPDX 2.3 JSON document that lists
//! what the installer holds, so that auditors and scanners see every file and image without
//! running it.
//!
//! The document has the installer as its root package (DESCRIBES), every regular file and
//! hard link of the tree as an SPDX file (path, SHA-1 and SHA-256, mode in the comment; engine
//! programs marked), every hook script as a file, every image as a package with its
//! `pkg:oci` purl, and every manifest, config and layer of the images as a package that its
//! image CONTAINS. SPDX 2.3 makes SHA-1 mandatory for files, so file contents are read once
//! more here to compute it.
//!
//! The output is deterministic: the same inputs give the same bytes. `created` is the build's
//! epoch (`SOURCE_DATE_EPOCH`, else 1980-01-01, as everywhere in the installer) and the
//! `documentNamespace` ends in the SHA-256 of the document written without it.

use std::collections::{BTreeMap, HashMap, HashSet};

use airlock_payload::{BlobInput, Engine, Entry, EntryKind, Image, InstallConfig, Sha256Digest};
use rayon::prelude::*;
use serde::Serialize;
use sha1::{Digest as _, Sha1};

/// Why the SBOM could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file's content could not be read to compute its SHA-1.
    #[error("failed to read {name} for the sbom")]
    Read {
        /// The content's name (source path or image blob).
        name: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An index entry names content that is not among the blobs.
    #[error("failed to describe {path} in the sbom: its content {digest} is not stored")]
    MissingContent {
        /// The entry.
        path: String,
        /// The digest it names.
        digest: Sha256Digest,
    },
}

/// What the document describes: the parts of the payload, before it is written.
pub struct SbomInput<'a> {
    /// Installer name.
    pub name: &'a str,
    /// Installer version.
    pub version: &'a str,
    /// `os/arch[/variant]`.
    pub platform: &'a str,
    /// Build time, seconds since the epoch.
    pub created: u64,
    /// The tool, as SPDX names it: `airlock-0.1.0`.
    pub tool: &'a str,
    /// The file tree, sorted by path.
    pub entries: &'a [Entry],
    /// Every stored content (file, hook and image blobs).
    pub blobs: &'a [BlobInput],
    /// Captured images, in index order.
    pub images: &'a [Image],
    /// Engine and hooks.
    pub install: &'a InstallConfig,
    /// A folder of SHA-1s by SHA-256 (`<sha256 hex>` holds the SHA-1 hex), so a rebuild
    /// does not read unchanged files again; `None` reads every file.
    pub sha1_cache: Option<&'a std::path::Path>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    spdx_version: &'static str,
    data_license: &'static str,
    #[serde(rename = "SPDXID")]
    spdx_id: &'static str,
    name: String,
    document_namespace: String,
    creation_info: CreationInfo,
    packages: Vec<Package>,
    files: Vec<File>,
    relationships: Vec<Relationship>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreationInfo {
    created: String,
    creators: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Package {
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_info: Option<String>,
    download_location: &'static str,
    files_analyzed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    package_verification_code: Option<VerificationCode>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    checksums: Vec<Checksum>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    external_refs: Vec<ExternalRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    primary_package_purpose: Option<&'static str>,
    license_concluded: &'static str,
    license_declared: &'static str,
    copyright_text: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VerificationCode {
    package_verification_code_value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Checksum {
    algorithm: &'static str,
    checksum_value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalRef {
    reference_category: &'static str,
    reference_type: &'static str,
    reference_locator: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct File {
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    file_name: String,
    checksums: Vec<Checksum>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    file_types: Vec<&'static str>,
    license_concluded: &'static str,
    copyright_text: &'static str,
    comment: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Relationship {
    spdx_element_id: String,
    relationship_type: &'static str,
    related_spdx_element: String,
}

const NOASSERTION: &str = "NOASSERTION";
const ROOT_ID: &str = "SPDXRef-Installer";

fn relation(from: &str, kind: &'static str, to: &str) -> Relationship {
    Relationship {
        spdx_element_id: from.to_owned(),
        relationship_type: kind,
        related_spdx_element: to.to_owned(),
    }
}

/// The image's package URL (purl spec, `oci` type): the repository's last segment as name,
/// the digest as version (its `:` percent-encoded, as the canonical form wants), and the
/// full upstream repository and tag as qualifiers (sorted, as canonical).
pub fn image_purl(image: &Image) -> String {
    let name = image
        .repository
        .rsplit('/')
        .next()
        .unwrap_or(&image.repository)
        .to_ascii_lowercase();
    let mut purl = format!(
        "pkg:oci/{name}@sha256%3A{}?repository_url={}/{}",
        image.digest.hex(),
        image.registry,
        image.repository
    );
    if let Some(tag) = &image.tag {
        purl.push_str("&tag=");
        purl.push_str(tag);
    }
    purl
}

/// `YYYY-MM-DDThh:mm:ssZ` for seconds since the epoch (proleptic Gregorian, UTC).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn sha1_of(blob: &BlobInput) -> Result<String, Error> {
    const CHUNK: u64 = 1 << 20;
    let mut hasher = Sha1::new();
    let mut buf = vec![0u8; CHUNK.min(blob.size) as usize];
    let mut offset = 0;
    while offset < blob.size {
        let n = CHUNK.min(blob.size - offset) as usize;
        blob.source
            .read_at(offset, &mut buf[..n])
            .map_err(|source| Error::Read {
                name: blob.name.clone(),
                source,
            })?;
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The SHA-1 of `blob` from `cache` (content-addressed by SHA-256, so an entry never goes
/// stale), else computed and stored there. A cache that cannot be read or written is
/// only slower.
fn cached_sha1(cache: Option<&std::path::Path>, blob: &BlobInput) -> Result<String, Error> {
    let Some(dir) = cache else {
        return sha1_of(blob);
    };
    let path = dir.join(blob.digest.hex());
    if let Ok(text) = std::fs::read_to_string(&path) {
        if text.len() == 40 && text.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Ok(text);
        }
    }
    let sha1 = sha1_of(blob)?;
    let tmp = dir.join(format!(".{}.tmp{}", blob.digest.hex(), std::process::id()));
    let stored = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&tmp, &sha1))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = stored {
        tracing::debug!("sha1 cache {}: {e}", dir.display());
    }
    Ok(sha1)
}

/// Engine program paths (payload paths) and what each is, for the file comments.
fn engine_programs(install: &InstallConfig) -> HashMap<String, String> {
    let mut programs = HashMap::new();
    let mut containerd = |c: &airlock_payload::ContainerdEngine, kind: &str| {
        for (path, what) in [
            (&c.containerd, "containerd"),
            (&c.shim, "containerd shim"),
            (&c.runc, "runc"),
            (&c.ctr, "ctr"),
        ] {
            programs.insert(path.clone(), format!("{kind} engine program: {what}"));
        }
    };
    match &install.engine {
        Engine::Containerd(c) => containerd(c, "containerd"),
        Engine::Kubeadm(k) => {
            containerd(&k.containerd, "kubeadm");
            for (path, what) in [
                (&k.kubeadm, "kubeadm"),
                (&k.kubelet, "kubelet"),
                (&k.kubectl, "kubectl"),
            ] {
                programs.insert(path.clone(), format!("kubeadm engine program: {what}"));
            }
        }
        Engine::K3s(k) => {
            programs.insert(k.binary.clone(), "k3s engine program: k3s".to_owned());
        }
        _ => {}
    }
    programs
}

/// What a manifest says its blobs are: config or layer, with media types.
fn blob_roles(manifest: &[u8], roles: &mut HashMap<Sha256Digest, String>) {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(manifest) else {
        return;
    };
    let mut note = |d: &serde_json::Value, role: &str| {
        let digest = d.get("digest").and_then(|v| v.as_str());
        let media = d.get("mediaType").and_then(|v| v.as_str()).unwrap_or("");
        if let Some(digest) = digest.and_then(|s| s.parse::<Sha256Digest>().ok()) {
            roles
                .entry(digest)
                .or_insert_with(|| format!("image {role} ({media})"));
        }
    };
    if let Some(config) = json.get("config") {
        note(config, "config");
    }
    for layer in json
        .get("layers")
        .and_then(|l| l.as_array())
        .into_iter()
        .flatten()
    {
        note(layer, "layer");
    }
}

fn read_all(blob: &BlobInput) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; blob.size as usize];
    blob.source
        .read_at(0, &mut buf)
        .map_err(|source| Error::Read {
            name: blob.name.clone(),
            source,
        })?;
    Ok(buf)
}

/// Writes the SPDX 2.3 JSON document for `input` (pretty-printed, newline-terminated).
pub fn spdx_document(input: &SbomInput<'_>) -> Result<Vec<u8>, Error> {
    let by_digest: HashMap<Sha256Digest, &BlobInput> =
        input.blobs.iter().map(|b| (b.digest, b)).collect();

    // SHA-1 of every distinct file and hook content (in parallel).
    let mut wanted: Vec<Sha256Digest> = input
        .entries
        .iter()
        .filter_map(|e| match e.kind {
            EntryKind::File { size, digest } if size > 0 => Some(digest),
            _ => None,
        })
        .chain(input.install.hooks.iter().map(|h| h.digest))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    wanted.sort();
    let sha1s: HashMap<Sha256Digest, String> = wanted
        .par_iter()
        .map(|d| match by_digest.get(d) {
            Some(b) => Ok((*d, cached_sha1(input.sha1_cache, b)?)),
            None => Err(Error::MissingContent {
                path: d.to_string(),
                digest: *d,
            }),
        })
        .collect::<Result<_, _>>()?;
    let empty_sha1 = hex::encode(Sha1::digest(b""));
    let checksums = |digest: &Sha256Digest| {
        let sha1 = if *digest == Sha256Digest::empty() {
            empty_sha1.clone()
        } else {
            sha1s.get(digest).cloned().unwrap_or_default()
        };
        vec![
            Checksum {
                algorithm: "SHA1",
                checksum_value: sha1,
            },
            Checksum {
                algorithm: "SHA256",
                checksum_value: digest.hex(),
            },
        ]
    };

    let programs = engine_programs(input.install);
    let mut files = Vec::new();
    let mut relationships = vec![relation("SPDXRef-DOCUMENT", "DESCRIBES", ROOT_ID)];
    let file_digest: HashMap<&str, Sha256Digest> = input
        .entries
        .iter()
        .filter_map(|e| match e.kind {
            EntryKind::File { digest, .. } => Some((e.path.as_str(), digest)),
            _ => None,
        })
        .collect();
    for (n, e) in input.entries.iter().enumerate() {
        let path = e.path.as_str();
        let (digest, what) = match &e.kind {
            EntryKind::File { digest, .. } => (*digest, String::new()),
            EntryKind::Hardlink { target } => (
                *file_digest
                    .get(target.as_str())
                    .ok_or_else(|| Error::MissingContent {
                        path: path.to_owned(),
                        digest: Sha256Digest::empty(),
                    })?,
                format!(", hard link to /{}", target.as_str()),
            ),
            _ => continue,
        };
        let program = programs.get(path);
        let comment = match program {
            Some(p) => format!("mode {:04o}{what}; {p}", e.mode),
            None => format!("mode {:04o}{what}", e.mode),
        };
        let id = format!("SPDXRef-File-{n}");
        relationships.push(relation(ROOT_ID, "CONTAINS", &id));
        files.push(File {
            spdx_id: id,
            file_name: format!("./{path}"),
            checksums: checksums(&digest),
            file_types: if program.is_some() {
                vec!["BINARY"]
            } else {
                vec![]
            },
            license_concluded: NOASSERTION,
            copyright_text: NOASSERTION,
            comment,
        });
    }
    for hook in &input.install.hooks {
        let id = format!("SPDXRef-Hook-{}", hook.stage.as_str());
        relationships.push(relation(ROOT_ID, "CONTAINS", &id));
        files.push(File {
            spdx_id: id,
            file_name: format!("./{}", hook.source.trim_start_matches("./")),
            checksums: checksums(&hook.digest),
            file_types: vec!["TEXT"],
            license_concluded: NOASSERTION,
            copyright_text: NOASSERTION,
            comment: format!(
                "{} hook: run by install, not extracted",
                hook.stage.as_str()
            ),
        });
    }

    // The package verification code (SPDX 2.3 §7.9): SHA-1 over the sorted SHA-1s of the
    // files the package contains.
    let mut file_sha1s: Vec<&str> = files
        .iter()
        .map(|f| f.checksums[0].checksum_value.as_str())
        .collect();
    file_sha1s.sort_unstable();
    let verification = (!files.is_empty()).then(|| VerificationCode {
        package_verification_code_value: hex::encode(Sha1::digest(file_sha1s.concat())),
    });

    let mut packages = vec![Package {
        spdx_id: ROOT_ID.to_owned(),
        name: input.name.to_owned(),
        version_info: Some(input.version.to_owned()),
        download_location: NOASSERTION,
        files_analyzed: verification.is_some(),
        package_verification_code: verification,
        checksums: vec![],
        external_refs: vec![],
        primary_package_purpose: Some("INSTALL"),
        license_concluded: NOASSERTION,
        license_declared: NOASSERTION,
        copyright_text: NOASSERTION,
        comment: Some(format!(
            "airlock installer for {}; engine {}",
            input.platform,
            input.install.engine.kind()
        )),
    }];

    // Images, then every manifest and blob they name (one package per distinct digest).
    let mut roles: HashMap<Sha256Digest, String> = HashMap::new();
    let mut blob_ids: BTreeMap<Sha256Digest, ()> = BTreeMap::new();
    let mut blob_order: Vec<Sha256Digest> = Vec::new();
    for (n, image) in input.images.iter().enumerate() {
        let id = format!("SPDXRef-Image-{n}");
        relationships.push(relation(ROOT_ID, "CONTAINS", &id));
        let platforms: Vec<&str> = image
            .manifests
            .iter()
            .filter_map(|m| m.platform.as_deref())
            .collect();
        packages.push(Package {
            spdx_id: id.clone(),
            name: format!("{}/{}", image.registry, image.repository),
            version_info: Some(
                image
                    .tag
                    .clone()
                    .unwrap_or_else(|| image.digest.to_string()),
            ),
            download_location: NOASSERTION,
            files_analyzed: false,
            package_verification_code: None,
            checksums: vec![Checksum {
                algorithm: "SHA256",
                checksum_value: image.digest.hex(),
            }],
            external_refs: vec![ExternalRef {
                reference_category: "PACKAGE-MANAGER",
                reference_type: "purl",
                reference_locator: image_purl(image),
            }],
            primary_package_purpose: Some("CONTAINER"),
            license_concluded: NOASSERTION,
            license_declared: NOASSERTION,
            copyright_text: NOASSERTION,
            comment: Some(format!(
                "container image {} ({})",
                image.reference(),
                if platforms.is_empty() {
                    "no platform recorded".to_owned()
                } else {
                    platforms.join(", ")
                }
            )),
        });
        for m in &image.manifests {
            roles
                .entry(m.digest)
                .or_insert_with(|| format!("image manifest ({})", m.media_type));
            if let Some(b) = by_digest.get(&m.digest) {
                blob_roles(&read_all(b)?, &mut roles);
            }
        }
        for d in image
            .manifests
            .iter()
            .map(|m| &m.digest)
            .chain(&image.blobs)
        {
            relationships.push(relation(&id, "CONTAINS", &blob_id(d)));
            if blob_ids.insert(*d, ()).is_none() {
                blob_order.push(*d);
            }
        }
    }
    for d in blob_order {
        packages.push(Package {
            spdx_id: blob_id(&d),
            name: d.to_string(),
            version_info: None,
            download_location: NOASSERTION,
            files_analyzed: false,
            package_verification_code: None,
            checksums: vec![Checksum {
                algorithm: "SHA256",
                checksum_value: d.hex(),
            }],
            external_refs: vec![],
            primary_package_purpose: None,
            license_concluded: NOASSERTION,
            license_declared: NOASSERTION,
            copyright_text: NOASSERTION,
            comment: Some(
                roles
                    .get(&d)
                    .cloned()
                    .unwrap_or_else(|| "image blob".to_owned()),
            ),
        });
    }

    let mut doc = Document {
        spdx_version: "SPDX-2.3",
        data_license: "CC0-1.0",
        spdx_id: "SPDXRef-DOCUMENT",
        name: format!("{}-{}", input.name, input.version),
        document_namespace: String::new(),
        creation_info: CreationInfo {
            created: rfc3339(input.created),
            creators: vec![format!("Tool: {}", input.tool)],
        },
        packages,
        files,
        relationships,
    };
    // The namespace must be unique per document: derive it from everything else in it.
    let without = serde_json::to_vec(&doc).expect("the sbom serializes");
    doc.document_namespace = format!(
        "https://airlock.invalid/spdx/{}/{}/{}",
        input.name,
        input.version,
        Sha256Digest::of(&without).hex()
    );
    let mut out = serde_json::to_vec_pretty(&doc).expect("the sbom serializes");
    out.push(b'\n');
    Ok(out)
}

fn blob_id(d: &Sha256Digest) -> String {
    format!("SPDXRef-Blob-{}", d.hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(315_532_800), "1980-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339(4_102_444_800), "2100-01-01T00:00:00Z");
    }

    #[test]
    fn purl_carries_digest_repository_and_tag() {
        let d = Sha256Digest::of(b"m");
        let image = Image::new(
            "registry.local:5000".into(),
            "team/App".to_ascii_lowercase(),
            Some("1.0".into()),
            d,
            vec![airlock_payload::ManifestRef {
                digest: d,
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                platform: Some("linux/amd64".into()),
            }],
            vec![],
        )
        .unwrap();
        assert_eq!(
            image_purl(&image),
            format!(
                "pkg:oci/app@sha256%3A{}?repository_url=registry.local:5000/team/app&tag=1.0",
                d.hex()
            )
        );
    }
}
