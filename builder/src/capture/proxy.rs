//! The pull-through proxy as a value: [`Proxy::handle`] turns a request into a response
//! (fetching upstream when needed), so tests call it without sockets.
//!
//! Endpoints: `GET /v2/`; `GET|HEAD /v2/<name>/manifests/<tag|digest>`;
//! `GET|HEAD /v2/<name>/blobs/<digest>`. Other methods get `405 UNSUPPORTED`, other paths
//! (tag lists, the catalog) `404`. A `Range` header is ignored: the whole blob is sent with
//! `200`, which HTTP allows and containerd handles.
//!
//! **Which upstream.** [`airlock_oci::name::resolve`] says, as for the stub's registry:
//! `?ns=<host>` (what containerd sends through a `hosts.toml` mirror or `_default`) names
//! it, so one proxy serves every upstream at once. Without `ns`, a first path component
//! that looks like a host (`.`, `:` or `localhost`) is the upstream
//! (`/v2/example.hub/team/app/...`), else the name is on `docker.io`. Docker Hub names with
//! one component get `library/`, as everywhere else.
//!
//! **What is recorded.** Manifests by tag are always resolved upstream (tags move), then
//! stored, then recorded in the lock file as `host/repo:tag`. Manifests and blobs by digest
//! are served from the capture folder once stored. A manifest fetched by digest that no
//! recorded reference of its repository leads to (it is neither such a reference's manifest
//! nor a child of its index) was pulled by digest: it is recorded as `host/repo@digest`.
//! Manifests of types airlock cannot build from (Docker schema 1, artifacts) are passed on
//! and stored but not recorded.

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use airlock_oci::error::echo;
use airlock_oci::headers::{API_VERSION, API_VERSION_VALUE, CONTENT_DIGEST};
use airlock_oci::media::{is_index, MANIFEST_TYPES, OCI_INDEX, OCI_MANIFEST, OCTET_STREAM};
use airlock_oci::route::parse_digest;
use airlock_oci::{json_response, name, Body, RequestError, Route};
use airlock_payload::Sha256Digest;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use super::download::{self, Downloads, Joined, Progress};
use super::error::ProxyError;
use super::lock::{Lock, LockEntry};
use super::store::Store;
use super::upstream::{ManifestRef, Repo, Upstream};
use crate::reference::ImageRef;

pub use airlock_oci::name::DEFAULT_NAMESPACE;

/// The capture proxy. Cheap to clone: clones share the store, the lock and the downloads.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    upstream: Arc<Upstream>,
    store: Store,
    lock: Mutex<Lock>,
    downloads: Arc<Downloads>,
    /// Told about each new lock entry (`airlock capture` prints it).
    on_record: Box<dyn Fn(&LockEntry) + Send + Sync>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("dir", &self.inner.store.dir())
            .field("upstream", &self.inner.upstream)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// A proxy that fetches from `upstream` and stores into `store`, adding to `lock` (the
    /// folder's current lock, so captures into one folder accumulate).
    pub fn new(upstream: Upstream, store: Store, lock: Lock) -> Proxy {
        Proxy {
            inner: Arc::new(Inner {
                upstream: Arc::new(upstream),
                store,
                lock: Mutex::new(lock),
                downloads: Arc::new(Downloads::default()),
                on_record: Box::new(|_| {}),
            }),
        }
    }

    /// Prints `captured REF DIGEST` on stdout for each new lock entry (write errors, such as
    /// a closed pipe, are ignored: printing is a courtesy, the lock file is the record).
    pub fn printing(self) -> Proxy {
        let mut inner = Arc::into_inner(self.inner).expect("not shared yet");
        inner.on_record = Box::new(|e: &LockEntry| {
            let _ = writeln!(std::io::stdout(), "captured {} {}", e.reference, e.digest);
        });
        Proxy {
            inner: Arc::new(inner),
        }
    }

    /// The lock as it is now.
    pub fn lock(&self) -> Lock {
        self.inner
            .lock
            .lock()
            .expect("no panics while locked")
            .clone()
    }

    /// The capture folder.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Upstream blob fetches started so far.
    pub fn blob_fetches(&self) -> usize {
        self.inner.downloads.started()
    }

    /// Answers one request. Never panics on client input; the request body is not read.
    pub async fn handle<B>(&self, req: &Request<B>) -> Response<Body> {
        let head = req.method() == Method::HEAD;
        let mut resp = match self.route(req, head).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("{}: {e}", echo(req.uri().path()));
                e.to_response(head)
            }
        };
        resp.headers_mut()
            .insert(API_VERSION, HeaderValue::from_static(API_VERSION_VALUE));
        resp
    }

    async fn route<B>(&self, req: &Request<B>, head: bool) -> Result<Response<Body>, ProxyError> {
        let (route, query) = Route::parse(req.method(), req.uri())?;
        match route {
            Route::Base => Ok(json_response(StatusCode::OK, &json!({}), head)),
            Route::Manifest { name, reference } => {
                let repo = resolve(&name, query.ns.as_deref())?;
                self.manifest(repo, &reference, head).await
            }
            Route::Blob { name, digest } => {
                let repo = resolve(&name, query.ns.as_deref())?;
                self.blob(repo, &digest, head).await
            }
            Route::TagsList { .. } | Route::Catalog => {
                Err(RequestError::NotFound(echo(req.uri().path())).into())
            }
        }
    }

    async fn manifest(
        &self,
        repo: Repo,
        reference: &str,
        head: bool,
    ) -> Result<Response<Body>, ProxyError> {
        let reference = ManifestRef::parse(reference)?;
        let inner = &self.inner;
        let stored = match &reference {
            ManifestRef::Digest(d) => {
                let (store, d) = (inner.store.clone(), *d);
                blocking(move || store.read(d)).await?
            }
            ManifestRef::Tag(_) => None,
        };
        let bytes = match stored {
            Some(b) => Bytes::from(b),
            None => inner.upstream.manifest(&repo, &reference).await?,
        };
        let digest = Sha256Digest::of(&bytes);
        if let ManifestRef::Digest(d) = &reference {
            if *d != digest {
                return Err(ProxyError::DigestMismatch {
                    upstream: inner.upstream.describe(&repo.host),
                    digest: d.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        let info = ManifestInfo::of(&bytes);
        let this = self.clone();
        let kept = bytes.clone();
        let media_type = info.media_type.clone();
        // Stored first, recorded second: the lock never names a manifest that is not there.
        blocking(move || {
            this.inner.store.put(digest, &kept)?;
            if info.supported {
                this.record(&repo, &reference, digest, &media_type);
            } else {
                tracing::warn!(
                    "{}/{}{}: media type {media_type} is passed on but not recorded",
                    repo.host,
                    repo.name,
                    reference.suffix()
                );
            }
            Ok(())
        })
        .await?;
        let len = bytes.len();
        let mut resp = Response::new(Body::full_unless_head(bytes, head));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&info.media_type)
                .unwrap_or(HeaderValue::from_static(OCTET_STREAM)),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        h.insert(CONTENT_DIGEST, digest_value(&digest));
        Ok(resp)
    }

    /// Adds the lock entry a manifest request earns (see the module documentation) and
    /// writes the lock file when it changed. A failure to write is logged: the client's
    /// pull is not the place to report it, and the previous file stays intact.
    fn record(&self, repo: &Repo, reference: &ManifestRef, digest: Sha256Digest, media_type: &str) {
        let inner = &self.inner;
        let mut lock = inner.lock.lock().expect("no panics while locked");
        let text = match reference {
            ManifestRef::Tag(t) => format!("{}/{}:{t}", repo.host, repo.name),
            ManifestRef::Digest(_) => {
                if self.covered(&lock, repo, digest) {
                    return;
                }
                format!("{}/{}@{digest}", repo.host, repo.name)
            }
        };
        let reference: ImageRef = match text.parse() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("not recorded: {e}");
                return;
            }
        };
        let entry = LockEntry {
            reference,
            digest,
            media_type: media_type.to_owned(),
        };
        if lock.record(entry.clone()) {
            match lock.save(inner.store.dir()) {
                Ok(()) => (inner.on_record)(&entry),
                Err(e) => tracing::error!("{}", super::error::chain(&e)),
            }
        }
    }

    /// True when a recorded reference of `repo` leads to `digest`: its manifest, or a child
    /// (of a child) of its index.
    fn covered(&self, lock: &Lock, repo: &Repo, digest: Sha256Digest) -> bool {
        lock.entries()
            .iter()
            .filter(|e| {
                e.reference.registry() == repo.host && e.reference.repository() == repo.name
            })
            .any(|e| self.leads_to(e.digest, digest, 0))
    }

    fn leads_to(&self, from: Sha256Digest, to: Sha256Digest, depth: usize) -> bool {
        if from == to {
            return true;
        }
        if depth > 2 {
            return false;
        }
        let Ok(Some(bytes)) = self.inner.store.read(from) else {
            return false;
        };
        ManifestInfo::of(&bytes)
            .children
            .into_iter()
            .any(|c| self.leads_to(c, to, depth + 1))
    }

    async fn blob(
        &self,
        repo: Repo,
        digest: &str,
        head: bool,
    ) -> Result<Response<Body>, ProxyError> {
        let digest = parse_digest(digest)?;
        let inner = &self.inner;
        let joined = {
            let (downloads, store) = (inner.downloads.clone(), inner.store.clone());
            blocking(move || downloads.join(&store, digest)).await?
        };
        let (state, rx) = match joined {
            Joined::Stored(state) => {
                let (_, rx) = watch::channel(state.clone());
                (state, rx)
            }
            Joined::Running(rx) => download::answer(rx).await,
            Joined::Start(tx, rx) => {
                tokio::spawn(download::fetch(
                    inner.upstream.clone(),
                    inner.store.clone(),
                    inner.downloads.clone(),
                    repo,
                    digest,
                    tx,
                ));
                download::answer(rx).await
            }
        };
        let (len, file) = match state {
            Progress::Failed(e) => return Ok(e.to_response(head)),
            Progress::Streaming { len, file, .. } => (len, file),
            Progress::Stored { len, file } => (Some(len), file),
            Progress::Waiting => unreachable!("answer() waits past Waiting"),
        };
        let mut resp = Response::new(if head {
            Body::empty()
        } else {
            download::body(file, rx)
        });
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(OCTET_STREAM));
        if let Some(len) = len {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        h.insert(CONTENT_DIGEST, digest_value(&digest));
        Ok(resp)
    }
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ProxyError> + Send + 'static,
) -> Result<T, ProxyError> {
    tokio::task::spawn_blocking(f)
        .await
        .expect("capture file work does not panic")
}

/// Resolves a request's name and `ns` to an upstream repository (module documentation):
/// any host-like first path component is an upstream.
pub fn resolve(name: &str, ns: Option<&str>) -> Result<Repo, ProxyError> {
    let n = name::resolve(name, ns, |_| true)?.with_library_prefix();
    Ok(Repo {
        host: n.host,
        name: n.repository,
    })
}

fn digest_value(d: &Sha256Digest) -> HeaderValue {
    HeaderValue::from_str(&d.to_string()).expect("a digest is ASCII")
}

/// What the proxy reads from a manifest: its media type (given, or inferred like the
/// builder does for OCI manifests that omit it), whether airlock can build from it, and the
/// manifests an index lists.
#[derive(Debug, Clone)]
pub struct ManifestInfo {
    /// The media type clients get as `Content-Type`.
    pub media_type: String,
    /// A schema 2 image manifest or index of a type in [`MANIFEST_TYPES`].
    pub supported: bool,
    /// The manifests an index lists (digest-valid ones).
    pub children: Vec<Sha256Digest>,
}

impl ManifestInfo {
    /// Reads `bytes` leniently; anything unreadable is an unsupported
    /// `application/octet-stream`.
    pub fn of(bytes: &[u8]) -> ManifestInfo {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Raw {
            #[serde(default)]
            schema_version: Option<i64>,
            #[serde(default)]
            media_type: Option<String>,
            #[serde(default)]
            manifests: Option<Vec<Child>>,
            #[serde(default)]
            config: Option<serde_json::Value>,
        }
        #[derive(Deserialize)]
        struct Child {
            digest: String,
        }
        let Ok(raw) = serde_json::from_slice::<Raw>(bytes) else {
            return ManifestInfo {
                media_type: OCTET_STREAM.to_owned(),
                supported: false,
                children: Vec::new(),
            };
        };
        let media_type = match (&raw.media_type, &raw.manifests, &raw.config) {
            (Some(m), _, _) if !m.is_empty() => m.clone(),
            (_, Some(_), _) => OCI_INDEX.to_owned(),
            (_, _, Some(_)) => OCI_MANIFEST.to_owned(),
            _ => OCTET_STREAM.to_owned(),
        };
        let supported =
            raw.schema_version == Some(2) && MANIFEST_TYPES.contains(&media_type.as_str());
        let children = if is_index(&media_type) {
            raw.manifests
                .unwrap_or_default()
                .iter()
                .filter_map(|c| c.digest.parse().ok())
                .collect()
        } else {
            Vec::new()
        };
        ManifestInfo {
            media_type,
            supported,
            children,
        }
    }
}
