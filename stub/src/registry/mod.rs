//! `registry serve`: a read-only OCI registry (the pull side of the distribution API) over
//! the images captured in the installer, served straight from the mapped file.
//!
//! [`Registry`] is a plain value: [`Registry::handle`] turns a request into a response
//! without sockets, so tests call it directly; [`serve`] wires it to hyper and tokio, with
//! limits for hostile clients and a graceful shutdown.
//!
//! Endpoints: `GET /v2/`; `GET|HEAD /v2/<name>/manifests/<tag|digest>`;
//! `GET|HEAD /v2/<name>/blobs/<digest>` (with `Range`); `GET /v2/<name>/tags/list`;
//! `GET /v2/_catalog`. Everything else is `405 UNSUPPORTED` (other methods) or `404`.
//!
//! **Namespaces.** One installer may hold `docker.io/library/app:1` and
//! `example.hub/library/app:1` as different images. Names resolve to an upstream registry
//! (the namespace) this way:
//!
//! 1. `?ns=<host>` (what containerd sends through a mirror) names it; the path holds only the
//!    repository.
//! 2. Without `ns`, a first path component that looks like a host (`.`, `:` or `localhost`)
//!    and is the registry of some captured image selects it:
//!    `/v2/example.hub/library/app/manifests/1` (podman/CRI-O mirrors, skopeo).
//! 3. Otherwise the name is a `docker.io` repository.
//!
//! Successful and failed answers about a repository carry `OCI-Namespace: <host>`.

mod body;
mod error;
mod range;
mod server;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use airlock_payload::{
    is_valid_registry, is_valid_repository, is_valid_tag, Payload, Sha256Digest,
};
use http::{header, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::json;

pub use body::Body;
pub use error::RegistryError;
pub use range::RangeRequest;
pub use server::{serve, shutdown_signal, ServeOptions};

use error::echo;

/// The registry that a name without namespace belongs to.
pub const DEFAULT_NAMESPACE: &str = "docker.io";

/// `Docker-Content-Digest`.
const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
/// `OCI-Namespace`: the upstream registry a repository answer is about.
const OCI_NAMESPACE: HeaderName = HeaderName::from_static("oci-namespace");
/// `Docker-Distribution-API-Version`.
const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");

/// Lookup tables for one repository of one upstream registry.
#[derive(Debug, Default)]
struct Repo {
    /// Tag → top-level manifest digest.
    tags: BTreeMap<String, Sha256Digest>,
    /// Every manifest of every image in the repository → its media type.
    manifests: HashMap<Sha256Digest, String>,
    /// Config and layer blobs of every image in the repository.
    blobs: HashSet<Sha256Digest>,
}

/// Where served bytes of the mapped file are reported; see [`Registry::with_release`].
#[derive(Clone, Copy)]
pub struct Release(pub &'static (dyn Fn(&[u8]) + Send + Sync));

impl Release {
    /// Keeps every page (tests, in-memory payloads).
    pub const KEEP: Release = Release(&keep_pages);

    /// Reports `part` as sent.
    pub fn call(self, part: &[u8]) {
        (self.0)(part)
    }
}

impl std::fmt::Debug for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Release")
    }
}

fn keep_pages(_: &[u8]) {}

/// A read-only OCI registry over a payload's images. Lookup tables are built once, in
/// [`Registry::new`]; requests only read them.
#[derive(Debug)]
pub struct Registry {
    payload: Arc<Payload<'static>>,
    /// Told about mapped bytes that were sent, so their pages can leave resident memory.
    release: Release,
    /// Namespace (upstream host) → repository → tables.
    repos: HashMap<String, HashMap<String, Repo>>,
    /// Every repository as a name without `ns` addresses it, sorted.
    catalog: Vec<String>,
    images: usize,
}

/// The repository a request is about, once its name is resolved.
struct Target<'r> {
    /// Upstream registry host.
    ns: &'r str,
    /// Repository inside it.
    repo: &'r str,
    /// The name as the path gave it (for `tags/list` and `Link`).
    name: &'r str,
    /// `ns` as the query gave it.
    ns_param: Option<&'r str>,
}

impl Registry {
    /// Builds the lookup tables for the images of `payload`. The payload lives for the rest
    /// of the process: the stub maps the installer once and never unmaps it, so served blob
    /// bytes are slices of that map.
    /// Drops mapped pages through `release` once their bytes were handed to a connection
    /// (the installer file's `release`), keeping the server's resident memory flat.
    pub fn with_release(mut self, release: Release) -> Self {
        self.release = release;
        self
    }

    /// Builds the lookup tables of `payload`'s images.
    pub fn new(payload: Payload<'static>) -> Self {
        let mut repos: HashMap<String, HashMap<String, Repo>> = HashMap::new();
        let images = payload.index().images();
        for img in images {
            let repo = repos
                .entry(img.registry.clone())
                .or_default()
                .entry(img.repository.clone())
                .or_default();
            if let Some(tag) = &img.tag {
                repo.tags.insert(tag.clone(), img.digest);
            }
            for m in &img.manifests {
                repo.manifests.insert(m.digest, m.media_type.clone());
            }
            repo.blobs.extend(img.blobs.iter().copied());
        }
        let catalog: BTreeSet<String> = images
            .iter()
            .map(|i| {
                if i.registry == DEFAULT_NAMESPACE {
                    i.repository.clone()
                } else {
                    format!("{}/{}", i.registry, i.repository)
                }
            })
            .collect();
        Registry {
            images: images.len(),
            release: Release::KEEP,
            payload: Arc::new(payload),
            repos,
            catalog: catalog.into_iter().collect(),
        }
    }

    /// Number of captured images.
    pub fn image_count(&self) -> usize {
        self.images
    }

    /// Answers one request. Never panics on client input; the request body is not read.
    pub fn handle<B>(&self, req: &Request<B>) -> Response<Body> {
        let head = req.method() == Method::HEAD;
        let mut resp = self.route(req).unwrap_or_else(|e| e.into_response(head));
        resp.headers_mut()
            .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
        resp
    }

    fn route<B>(&self, req: &Request<B>) -> Result<Response<Body>, RegistryError> {
        let path = req.uri().path();
        let rest = match path.strip_prefix("/v2") {
            Some(r) if r.is_empty() || r.starts_with('/') => r,
            _ => return Err(RegistryError::NotFound(echo(path))),
        };
        let head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            ref m => return Err(RegistryError::Unsupported(echo(m.as_str()))),
        };
        let rest = rest.strip_prefix('/').unwrap_or(rest);
        if rest.is_empty() {
            return Ok(json_response(StatusCode::OK, &json!({}), head));
        }
        let query = Query::parse(req.uri().query())?;
        let rest = percent_decode(rest).ok_or_else(|| RegistryError::NameInvalid(echo(rest)))?;
        if rest == "_catalog" {
            return self.catalog(&query, head);
        }
        let not_found = || RegistryError::NotFound(echo(path));
        let (front, last) = rest.rsplit_once('/').ok_or_else(not_found)?;
        if last == "list" {
            if let Some(name) = front.strip_suffix("/tags") {
                return self.in_repo(name, &query, head, |t| self.tags_list(t, &query, head));
            }
        }
        let (name, kind) = front.rsplit_once('/').ok_or_else(not_found)?;
        match kind {
            "manifests" => self.in_repo(name, &query, head, |t| self.manifest(t, last, head)),
            "blobs" => self.in_repo(name, &query, head, |t| {
                let range = req
                    .headers()
                    .get(header::RANGE)
                    .and_then(|v| v.to_str().ok());
                self.blob(t, last, range, head)
            }),
            _ => Err(not_found()),
        }
    }

    /// Resolves `name` (and `?ns=`) to a namespace and repository, runs `f` on it and adds
    /// `OCI-Namespace` to whatever it answers.
    fn in_repo(
        &self,
        name: &str,
        query: &Query,
        head: bool,
        f: impl FnOnce(&Target<'_>) -> Result<Response<Body>, RegistryError>,
    ) -> Result<Response<Body>, RegistryError> {
        let target = self.resolve(name, query.ns.as_deref())?;
        let mut resp = f(&target).unwrap_or_else(|e| e.into_response(head));
        let ns = HeaderValue::from_str(target.ns).expect("a valid registry host is ASCII");
        resp.headers_mut().insert(OCI_NAMESPACE, ns);
        Ok(resp)
    }

    /// See the module documentation for the rules.
    fn resolve<'r>(
        &'r self,
        name: &'r str,
        ns: Option<&'r str>,
    ) -> Result<Target<'r>, RegistryError> {
        let (namespace, repo) = match ns {
            Some(ns) => {
                if !is_valid_registry(ns) {
                    return Err(RegistryError::NameInvalid(format!(
                        "namespace {}",
                        echo(ns)
                    )));
                }
                (canonical_namespace(ns), name)
            }
            None => match name.split_once('/') {
                Some((first, rest)) if looks_like_host(first) && self.repos.contains_key(first) => {
                    (first, rest)
                }
                _ => (DEFAULT_NAMESPACE, name),
            },
        };
        if !is_valid_repository(repo) {
            return Err(RegistryError::NameInvalid(echo(name)));
        }
        Ok(Target {
            ns: namespace,
            repo,
            name,
            ns_param: ns,
        })
    }

    fn repo(&self, t: &Target<'_>) -> Option<&Repo> {
        self.repos.get(t.ns).and_then(|r| r.get(t.repo))
    }

    fn manifest(
        &self,
        t: &Target<'_>,
        reference: &str,
        head: bool,
    ) -> Result<Response<Body>, RegistryError> {
        let unknown = || RegistryError::ManifestUnknown {
            ns: t.ns.to_owned(),
            name: t.repo.to_owned(),
            reference: echo(reference),
        };
        let digest = if reference.contains(':') {
            let d: Sha256Digest = reference
                .parse()
                .map_err(|_| RegistryError::DigestInvalid(echo(reference)))?;
            Some(d)
        } else if is_valid_tag(reference) {
            None
        } else {
            return Err(RegistryError::TagInvalid(echo(reference)));
        };
        let repo = self.repo(t).ok_or_else(unknown)?;
        let digest = match digest {
            Some(d) => d,
            None => *repo.tags.get(reference).ok_or_else(unknown)?,
        };
        let media_type = repo.manifests.get(&digest).ok_or_else(unknown)?;
        let blob = self.payload.index().blob(&digest).ok_or_else(unknown)?;
        let mut resp = Response::new(if head {
            Body::empty()
        } else {
            Body::blob(
                self.payload.clone(),
                self.release,
                blob.clone(),
                0,
                blob.size,
            )
        });
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(media_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(blob.size));
        h.insert(CONTENT_DIGEST, digest_value(&digest));
        Ok(resp)
    }

    fn blob(
        &self,
        t: &Target<'_>,
        digest: &str,
        range: Option<&str>,
        head: bool,
    ) -> Result<Response<Body>, RegistryError> {
        let d: Sha256Digest = digest
            .parse()
            .map_err(|_| RegistryError::DigestInvalid(echo(digest)))?;
        let unknown = || RegistryError::BlobUnknown {
            ns: t.ns.to_owned(),
            name: t.repo.to_owned(),
            digest: d.to_string(),
        };
        let repo = self.repo(t).ok_or_else(unknown)?;
        if !repo.blobs.contains(&d) && !repo.manifests.contains_key(&d) {
            return Err(unknown());
        }
        let blob = self.payload.index().blob(&d).ok_or_else(unknown)?;
        let (status, start, len) = match RangeRequest::parse(range, blob.size) {
            RangeRequest::Full => (StatusCode::OK, 0, blob.size),
            RangeRequest::Partial { start, end } => {
                (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
            }
            RangeRequest::Unsatisfiable => {
                return Err(RegistryError::RangeNotSatisfiable {
                    range: echo(range.unwrap_or_default()),
                    size: blob.size,
                })
            }
        };
        let mut resp = Response::new(if head {
            Body::empty()
        } else {
            Body::blob(self.payload.clone(), self.release, blob.clone(), start, len)
        });
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        h.insert(CONTENT_DIGEST, digest_value(&d));
        if status == StatusCode::PARTIAL_CONTENT {
            let value = format!("bytes {start}-{}/{}", start + len - 1, blob.size);
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&value).expect("ascii"),
            );
        }
        Ok(resp)
    }

    fn tags_list(
        &self,
        t: &Target<'_>,
        query: &Query,
        head: bool,
    ) -> Result<Response<Body>, RegistryError> {
        let repo = self.repo(t).ok_or_else(|| RegistryError::NameUnknown {
            ns: t.ns.to_owned(),
            name: t.repo.to_owned(),
        })?;
        let (page, next) = paginate(repo.tags.keys().map(String::as_str), query);
        let mut resp = json_response(
            StatusCode::OK,
            &json!({ "name": t.name, "tags": page }),
            head,
        );
        if let Some(last) = next {
            let mut link = format!("</v2/{}/tags/list?last={last}&n={}", t.name, page.len());
            if let Some(ns) = t.ns_param {
                let _ = write!(link, "&ns={ns}");
            }
            link.push_str(">; rel=\"next\"");
            insert_link(&mut resp, &link);
        }
        Ok(resp)
    }

    fn catalog(&self, query: &Query, head: bool) -> Result<Response<Body>, RegistryError> {
        let (page, next) = paginate(self.catalog.iter().map(String::as_str), query);
        let mut resp = json_response(StatusCode::OK, &json!({ "repositories": page }), head);
        if let Some(last) = next {
            let link = format!("</v2/_catalog?last={last}&n={}>; rel=\"next\"", page.len());
            insert_link(&mut resp, &link);
        }
        Ok(resp)
    }
}

/// The page of sorted `items` after `query.last`, at most `query.n` long, and the last item
/// of the page when more follow.
fn paginate<'a>(
    items: impl Iterator<Item = &'a str>,
    query: &Query,
) -> (Vec<&'a str>, Option<&'a str>) {
    let mut rest = items.filter(|i| query.last.as_deref().is_none_or(|l| *i > l));
    let page: Vec<&str> = match query.n {
        Some(n) => rest.by_ref().take(n).collect(),
        None => rest.by_ref().collect(),
    };
    let more = rest.next().is_some();
    let next = if more && !page.is_empty() {
        page.last().copied()
    } else {
        None
    };
    (page, next)
}

fn insert_link(resp: &mut Response<Body>, link: &str) {
    // Names, tags and hosts are ASCII by their grammars; skip the header rather than fail.
    if let Ok(v) = HeaderValue::from_str(link) {
        resp.headers_mut().insert(header::LINK, v);
    }
}

/// A JSON answer with `Content-Type` and `Content-Length` (no body for HEAD).
pub(super) fn json_response(
    status: StatusCode,
    value: &serde_json::Value,
    head: bool,
) -> Response<Body> {
    let bytes = serde_json::to_vec(value).expect("a JSON value serializes");
    let len = bytes.len();
    let mut resp = Response::new(if head {
        Body::empty()
    } else {
        Body::full(bytes)
    });
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

fn digest_value(d: &Sha256Digest) -> HeaderValue {
    HeaderValue::from_str(&d.to_string()).expect("a digest is ASCII")
}

/// The spellings of Docker Hub that mean `docker.io`.
fn canonical_namespace(ns: &str) -> &str {
    match ns {
        "index.docker.io" | "registry-1.docker.io" => DEFAULT_NAMESPACE,
        other => other,
    }
}

/// The reference grammar's test for a registry host as the first name component.
fn looks_like_host(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

/// The query parameters the registry reads.
#[derive(Debug, Default)]
struct Query {
    ns: Option<String>,
    n: Option<usize>,
    last: Option<String>,
}

impl Query {
    fn parse(query: Option<&str>) -> Result<Query, RegistryError> {
        let mut q = Query::default();
        for pair in query.unwrap_or_default().split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded =
                || percent_decode(value).ok_or_else(|| RegistryError::NameInvalid(echo(value)));
            match key {
                "ns" => q.ns = Some(decoded()?),
                "last" => q.last = Some(decoded()?),
                "n" => {
                    let n = value
                        .parse()
                        .map_err(|_| RegistryError::PaginationInvalid(echo(value)))?;
                    q.n = Some(n);
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

/// Decodes `%XX` escapes; `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
