//! `GET /v2/<name>/referrers/<digest>` (OCI distribution 1.1): the manifests stored in the
//! installer whose `subject` is `<digest>`, as an image index of descriptors with their
//! `artifactType` and `annotations`, so policy controllers find an image's signatures and
//! attestations offline. `?artifactType=T` keeps only descriptors of that type and says so
//! with `OCI-Filters-Applied: artifactType`.
//!
//! The table is built on the first referrers request (it reads every stored manifest once),
//! not at start: most clients never ask.

use std::collections::HashMap;

use airlock_oci::route::{decode, parse_digest};
use airlock_oci::Body;
use airlock_payload::{Payload, Sha256Digest};
use http::{HeaderValue, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::RegistryError;

/// The header that says which filters a referrers answer applied.
pub const FILTERS_APPLIED: &str = "oci-filters-applied";

/// Media type of the answer.
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// One referrer, as the answer lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The referrer manifest's media type.
    pub media_type: String,
    /// Its digest.
    pub digest: String,
    /// Its size.
    pub size: u64,
    /// Its `artifactType`, else its config's media type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Its annotations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Map<String, Value>>,
}

/// (namespace, repository, subject) → referrers, sorted by digest.
pub type Table = HashMap<(String, String, Sha256Digest), Vec<Descriptor>>;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    config: Option<Config>,
    #[serde(default)]
    subject: Option<Subject>,
    #[serde(default)]
    annotations: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Config {
    #[serde(default)]
    media_type: Option<String>,
}

#[derive(Deserialize)]
struct Subject {
    digest: String,
}

/// Reads every stored manifest of `payload`'s images and records those with a `subject`.
/// A manifest that cannot be read (damage) is left out here; serving it reports the damage.
pub fn table(payload: &Payload<'_>) -> Table {
    let mut table: Table = HashMap::new();
    for img in payload.index().images() {
        for m in &img.manifests {
            let Some(blob) = payload.index().blob(&m.digest) else {
                continue;
            };
            if blob.size > 4 << 20 {
                continue;
            }
            let mut bytes = Vec::with_capacity(blob.size as usize);
            if std::io::Read::read_to_end(&mut payload.blob_reader(blob), &mut bytes).is_err() {
                continue;
            }
            let Ok(parsed) = serde_json::from_slice::<Manifest>(&bytes) else {
                continue;
            };
            let Some(subject) = parsed.subject.and_then(|s| s.digest.parse().ok()) else {
                continue;
            };
            let d = Descriptor {
                media_type: parsed.media_type.unwrap_or_else(|| m.media_type.clone()),
                digest: m.digest.to_string(),
                size: blob.size,
                artifact_type: parsed
                    .artifact_type
                    .or_else(|| parsed.config.and_then(|c| c.media_type)),
                annotations: parsed.annotations.filter(|a| !a.is_empty()),
            };
            let list = table
                .entry((img.registry.clone(), img.repository.clone(), subject))
                .or_default();
            if !list.iter().any(|x| x.digest == d.digest) {
                list.push(d);
            }
        }
    }
    for list in table.values_mut() {
        list.sort_by(|a, b| a.digest.cmp(&b.digest));
    }
    table
}

/// `(name, digest)` when `path` is `/v2/<name>/referrers/<digest>`.
pub fn route(path: &str) -> Option<(String, String)> {
    let rest = decode(path.strip_prefix("/v2/")?)?;
    let (front, digest) = rest.rsplit_once('/')?;
    let name = front.strip_suffix("/referrers")?;
    (!name.is_empty()).then(|| (name.to_owned(), digest.to_owned()))
}

/// The `artifactType` query parameter, decoded.
pub fn artifact_type(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "artifactType").then(|| decode(&v.replace('+', " ")))?
    })
}

/// The answer for `subject` in (ns, repo), filtered by `artifact_type`.
pub fn answer(
    table: &Table,
    ns: &str,
    repo: &str,
    subject: &str,
    artifact_type: Option<&str>,
    head: bool,
) -> Result<Response<Body>, RegistryError> {
    let subject = parse_digest(subject)?;
    let all = table
        .get(&(ns.to_owned(), repo.to_owned(), subject))
        .map(Vec::as_slice)
        .unwrap_or_default();
    let manifests: Vec<&Descriptor> = all
        .iter()
        .filter(|d| artifact_type.is_none_or(|t| d.artifact_type.as_deref() == Some(t)))
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    }))
    .expect("an index serializes");
    let len = body.len();
    let mut resp = Response::new(Body::full_unless_head(body, head));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(OCI_INDEX),
    );
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    if artifact_type.is_some() {
        h.insert(FILTERS_APPLIED, HeaderValue::from_static("artifactType"));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referrers_paths_are_recognised_and_others_are_not() {
        assert_eq!(
            route("/v2/team/app/referrers/sha256:ab"),
            Some(("team/app".into(), "sha256:ab".into()))
        );
        assert_eq!(
            route("/v2/example.hub/team/app/referrers/sha256:ab"),
            Some(("example.hub/team/app".into(), "sha256:ab".into()))
        );
        assert_eq!(route("/v2/team/app/manifests/sha256:ab"), None);
        assert_eq!(route("/v2/referrers/sha256:ab"), None);
    }

    #[test]
    fn artifact_type_is_read_from_the_query() {
        assert_eq!(
            artifact_type(Some("n=1&artifactType=application%2Fvnd.dev.cosign")),
            Some("application/vnd.dev.cosign".into())
        );
        assert_eq!(artifact_type(Some("ns=docker.io")), None);
        assert_eq!(artifact_type(None), None);
    }
}
