//! `registry serve`: a read-only OCI registry (the pull side of the distribution API) over
//! the images captured in the installer, served straight from the mapped file.
//!
//! [`Registry`] is a plain value: [`Registry::handle`] turns a request into a response
//! without sockets, so tests call it directly; [`serve`] wires it to `airlock-oci`'s server
//! loop (hyper and tokio, with limits for hostile clients and a graceful shutdown), which
//! the builder's capture proxy shares.
//!
//! Endpoints: `GET /v2/`; `GET|HEAD /v2/<name>/manifests/<tag|digest>`;
//! `GET|HEAD /v2/<name>/blobs/<digest>` (with `Range`); `GET /v2/<name>/tags/list`;
//! `GET /v2/_catalog`; `GET /v2/<name>/referrers/<digest>` (OCI 1.1, [`referrers`]).
//! Everything else is `405 UNSUPPORTED` (other methods) or `404`.
//!
//! **The installer file itself**, when given ([`Registry::with_installer_file`]):
//! `GET|HEAD /airlock/installer`, with `Range`, `Content-Length` and the SHA-256 of its
//! trailer in `Airlock-Trailer-Digest`, straight from the mapped file. `deploy` has the
//! other nodes of a site fetch the installer from the first node this way, so it crosses
//! the operator's link once. It serves nothing the images do not already expose.
//!
//! **Namespaces.** One installer may hold `docker.io/library/app:1` and
//! `example.hub/library/app:1` as different images. Names resolve to an upstream registry
//! (the namespace) by [`airlock_oci::name::resolve`]: `?ns=<host>` (what containerd sends
//! through a mirror); else a host-like first path component that is the registry of some
//! captured image (`/v2/example.hub/library/app/manifests/1`: podman/CRI-O mirrors,
//! skopeo); else `docker.io`. Docker Hub's aliases (`index.docker.io`, ...) are `docker.io`.
//!
//! Successful and failed answers about a repository carry `OCI-Namespace: <host>`.

mod body;
mod error;
pub mod push;
mod range;
mod referrers;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;

use airlock_oci::error::echo;
use airlock_oci::headers::{API_VERSION, API_VERSION_VALUE, CONTENT_DIGEST, OCI_NAMESPACE};
use airlock_oci::route::parse_digest;
use airlock_oci::{json_response, media, name, Query, Reference, RequestError, Route};
use airlock_payload::{Payload, Sha256Digest};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::json;
use tokio::net::TcpListener;

pub use airlock_oci::name::DEFAULT_NAMESPACE;
pub use airlock_oci::{shutdown_signal, Body, ServeOptions};
pub use error::RegistryError;
pub use range::RangeRequest;

use body::blob_body;

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

/// What the registry does with the pages of the mapped installer it serves bytes from;
/// see [`Registry::with_pages`].
#[derive(Clone, Copy)]
pub struct Pages {
    /// Told about mapped bytes that are about to be sent, so their pages can be made
    /// resident in one go off the connection's thread (one `madvise`, not a page fault per
    /// 64 KiB in the middle of a TLS encryption or a socket write).
    pub populate: &'static (dyn Fn(&[u8]) + Send + Sync),
    /// Told about mapped bytes that were sent, so their pages can leave resident memory.
    pub release: &'static (dyn Fn(&[u8]) + Send + Sync),
}

impl Pages {
    /// Does nothing to any page (tests, in-memory payloads).
    pub const KEEP: Pages = Pages {
        populate: &keep_pages,
        release: &keep_pages,
    };
}

impl std::fmt::Debug for Pages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pages")
    }
}

fn keep_pages(_: &[u8]) {}

/// A read-only OCI registry over a payload's images. Lookup tables are built once, in
/// [`Registry::new`]; requests only read them.
#[derive(Debug)]
pub struct Registry {
    payload: Arc<Payload<'static>>,
    /// Told about mapped bytes before and after they are sent.
    pages: Pages,
    /// Namespace (upstream host) → repository → tables.
    repos: HashMap<String, HashMap<String, Repo>>,
    /// Every repository as a name without `ns` addresses it, sorted.
    catalog: Vec<String>,
    images: usize,
    /// Manifests with a `subject`, read on the first referrers request.
    referrers: std::sync::OnceLock<referrers::Table>,
    /// The whole installer file and its trailer digest, served at [`INSTALLER_PATH`].
    installer: Option<(&'static [u8], String)>,
}

/// Where the installer file itself is served ([`Registry::with_installer_file`]).
pub const INSTALLER_PATH: &str = "/airlock/installer";
/// The header holding the SHA-256 of the installer's trailer (`sha256:<hex>`).
pub const TRAILER_DIGEST_HEADER: &str = "airlock-trailer-digest";

/// The repository a request is about, once its name is resolved.
struct Target<'r> {
    /// Upstream registry host.
    ns: String,
    /// Repository inside it.
    repo: String,
    /// The name as the path gave it (for `tags/list` and `Link`).
    name: &'r str,
    /// `ns` as the query gave it.
    ns_param: Option<&'r str>,
}

/// Serves `registry` on `listener` with `airlock-oci`'s server loop until `shutdown`
/// completes (see [`airlock_oci::server`] for the limits and the drain).
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let handler = move |req: Request<hyper::body::Incoming>| {
        let registry = registry.clone();
        async move { registry.handle(&req) }
    };
    airlock_oci::serve(listener, handler, opts, shutdown).await;
}

impl Registry {
    /// Builds the lookup tables for the images of `payload`. The payload lives for the rest
    /// of the process: the stub maps the installer once and never unmaps it, so served blob
    /// bytes are slices of that map.
    /// Makes mapped pages resident through `pages.populate` before their bytes are sent and
    /// drops them through `pages.release` once they were handed to a connection (the
    /// installer file's `populate` and `release`), keeping the server's resident memory flat.
    pub fn with_pages(mut self, pages: Pages) -> Self {
        self.pages = pages;
        self
    }

    /// Also serves `file`, the whole installer, at [`INSTALLER_PATH`] (read-only, with
    /// Range); its trailer's SHA-256 goes in [`TRAILER_DIGEST_HEADER`].
    pub fn with_installer_file(mut self, file: &'static [u8]) -> Self {
        let tail = &file[file
            .len()
            .saturating_sub(airlock_payload::TRAILER_LEN as usize)..];
        self.installer = Some((file, Sha256Digest::of(tail).to_string()));
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
            pages: Pages::KEEP,
            payload: Arc::new(payload),
            repos,
            catalog: catalog.into_iter().collect(),
            referrers: std::sync::OnceLock::new(),
            installer: None,
        }
    }

    /// Number of captured images.
    pub fn image_count(&self) -> usize {
        self.images
    }

    /// Answers one request. Never panics on client input; the request body is not read.
    pub fn handle<B>(&self, req: &Request<B>) -> Response<Body> {
        let head = req.method() == Method::HEAD;
        let routed = match (&self.installer, req.uri().path() == INSTALLER_PATH) {
            (Some((file, digest)), true) => installer_file(req, file, digest),
            _ => self.route(req),
        };
        let mut resp = routed.unwrap_or_else(|e| e.into_response(head));
        resp.headers_mut()
            .insert(API_VERSION, HeaderValue::from_static(API_VERSION_VALUE));
        resp
    }

    fn route<B>(&self, req: &Request<B>) -> Result<Response<Body>, RegistryError> {
        let head = req.method() == Method::HEAD;
        if let (true, Some((name, subject))) = (
            req.method() == Method::GET || head,
            referrers::route(req.uri().path()),
        ) {
            return self.referrers(&name, &subject, req.uri().query(), head);
        }
        let (route, query) = Route::parse(req.method(), req.uri())?;
        match route {
            Route::Base => Ok(json_response(StatusCode::OK, &json!({}), head)),
            Route::Catalog => self.catalog(&query, head),
            Route::TagsList { name } => {
                self.in_repo(&name, &query, head, |t| self.tags_list(t, &query, head))
            }
            Route::Manifest { name, reference } => {
                self.in_repo(&name, &query, head, |t| self.manifest(t, &reference, head))
            }
            Route::Blob { name, digest } => self.in_repo(&name, &query, head, |t| {
                let range = req
                    .headers()
                    .get(header::RANGE)
                    .and_then(|v| v.to_str().ok());
                self.blob(t, &digest, range, head)
            }),
        }
    }

    /// `GET /v2/<name>/referrers/<digest>` ([`referrers`]).
    fn referrers(
        &self,
        name: &str,
        subject: &str,
        query: Option<&str>,
        head: bool,
    ) -> Result<Response<Body>, RegistryError> {
        let parsed = Query::parse(query)?;
        let artifact_type = referrers::artifact_type(query);
        self.in_repo(name, &parsed, head, |t| {
            self.repo(t).ok_or_else(|| RegistryError::NameUnknown {
                ns: t.ns.clone(),
                name: t.repo.clone(),
            })?;
            let table = self
                .referrers
                .get_or_init(|| referrers::table(&self.payload));
            referrers::answer(
                table,
                &t.ns,
                &t.repo,
                subject,
                artifact_type.as_deref(),
                head,
            )
        })
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
        let ns = HeaderValue::from_str(&target.ns).expect("a valid registry host is ASCII");
        resp.headers_mut().insert(OCI_NAMESPACE, ns);
        Ok(resp)
    }

    /// Resolves `name` by [`name::resolve`]: a path prefix selects only the registries of
    /// captured images.
    fn resolve<'r>(&self, name: &'r str, ns: Option<&'r str>) -> Result<Target<'r>, RegistryError> {
        let n = name::resolve(name, ns, |host| self.repos.contains_key(host))?;
        Ok(Target {
            ns: n.host,
            repo: n.repository,
            name,
            ns_param: ns,
        })
    }

    fn repo(&self, t: &Target<'_>) -> Option<&Repo> {
        self.repos.get(&t.ns).and_then(|r| r.get(&t.repo))
    }

    fn manifest(
        &self,
        t: &Target<'_>,
        reference: &str,
        head: bool,
    ) -> Result<Response<Body>, RegistryError> {
        let unknown = || RegistryError::ManifestUnknown {
            ns: t.ns.clone(),
            name: t.repo.clone(),
            reference: echo(reference),
        };
        let parsed = Reference::parse(reference)?;
        let repo = self.repo(t).ok_or_else(unknown)?;
        let digest = match parsed {
            Reference::Digest(d) => d,
            Reference::Tag(tag) => *repo.tags.get(&tag).ok_or_else(unknown)?,
        };
        let media_type = repo.manifests.get(&digest).ok_or_else(unknown)?;
        let blob = self.payload.index().blob(&digest).ok_or_else(unknown)?;
        let mut resp = Response::new(if head {
            Body::empty()
        } else {
            blob_body(self.payload.clone(), self.pages, blob.clone(), 0, blob.size)
        });
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(media_type)
                .unwrap_or(HeaderValue::from_static(media::OCTET_STREAM)),
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
        let d = parse_digest(digest)?;
        let unknown = || RegistryError::BlobUnknown {
            ns: t.ns.clone(),
            name: t.repo.clone(),
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
            blob_body(self.payload.clone(), self.pages, blob.clone(), start, len)
        });
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(media::OCTET_STREAM),
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
            ns: t.ns.clone(),
            name: t.repo.clone(),
        })?;
        let (page, next) = paginate(repo.tags.keys().map(String::as_str), query)?;
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
        let (page, next) = paginate(self.catalog.iter().map(String::as_str), query)?;
        let mut resp = json_response(StatusCode::OK, &json!({ "repositories": page }), head);
        if let Some(last) = next {
            let link = format!("</v2/_catalog?last={last}&n={}>; rel=\"next\"", page.len());
            insert_link(&mut resp, &link);
        }
        Ok(resp)
    }
}

/// `GET|HEAD` [`INSTALLER_PATH`]: the installer file, whole or one range of it.
fn installer_file<B>(
    req: &Request<B>,
    file: &'static [u8],
    digest: &str,
) -> Result<Response<Body>, RegistryError> {
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        ref m => return Err(RequestError::Unsupported(echo(m.as_str())).into()),
    };
    let size = file.len() as u64;
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    let (status, start, len) = match RangeRequest::parse(range, size) {
        RangeRequest::Full => (StatusCode::OK, 0, size),
        RangeRequest::Partial { start, end } => {
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeRequest::Unsatisfiable => {
            return Err(RegistryError::RangeNotSatisfiable {
                range: echo(range.unwrap_or_default()),
                size,
            })
        }
    };
    let part = &file[start as usize..(start + len) as usize];
    let mut resp = Response::new(if head {
        Body::empty()
    } else {
        Body::full(bytes::Bytes::from_static(part))
    });
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(media::OCTET_STREAM),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        TRAILER_DIGEST_HEADER,
        HeaderValue::from_str(digest).expect("a digest is ASCII"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        let value = format!("bytes {start}-{}/{size}", start + len - 1);
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&value).expect("ascii"),
        );
    }
    Ok(resp)
}

/// The page of sorted `items` after `query.last`, at most `query.n` long, and the last item
/// of the page when more follow; `PAGINATION_NUMBER_INVALID` when `n` is not a number.
fn paginate<'a>(
    items: impl Iterator<Item = &'a str>,
    query: &Query,
) -> Result<(Vec<&'a str>, Option<&'a str>), RegistryError> {
    let n = match query.n.as_deref() {
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| RequestError::PaginationInvalid(echo(n)))?,
        ),
        None => None,
    };
    let mut rest = items.filter(|i| query.last.as_deref().is_none_or(|l| *i > l));
    let page: Vec<&str> = match n {
        Some(n) => rest.by_ref().take(n).collect(),
        None => rest.by_ref().collect(),
    };
    let more = rest.next().is_some();
    let next = if more && !page.is_empty() {
        page.last().copied()
    } else {
        None
    };
    Ok((page, next))
}

fn insert_link(resp: &mut Response<Body>, link: &str) {
    // Names, tags and hosts are ASCII by their grammars; skip the header rather than fail.
    if let Ok(v) = HeaderValue::from_str(link) {
        resp.headers_mut().insert(header::LINK, v);
    }
}

fn digest_value(d: &Sha256Digest) -> HeaderValue {
    HeaderValue::from_str(&d.to_string()).expect("a digest is ASCII")
}
