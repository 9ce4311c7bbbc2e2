//! Pulling images from registries (`docker://REF`, or no `from`).
//!
//! oci-client does the distribution protocol (token auth, redirects) in a tokio runtime
//! owned by the [`Puller`]; several images are pulled at once from plain threads that
//! `block_on` it. Every config and layer goes into a content-addressed build cache
//! (`<cache>/blobs/sha256/<hex>`): written to a temporary file while it is hashed, renamed
//! into place only when the digest matches, and reused (after re-hashing) by later builds.
//! Manifests are fetched each time (tags move) and verified against their digest.
//!
//! Credentials come from the docker config file (`auths.<host>.auth`, base64 `user:pass`);
//! without one, pulls are anonymous. `--registry-mirror HOST=URL` fetches the images of
//! upstream `HOST` from `URL` (`http://` means plain HTTP).

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};
use std::time::Duration;

use airlock_oci::name::canonical_host;
use airlock_payload::{BlobSource, Sha256Digest};
use base64::Engine as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

pub use super::error::RegistryError;

use super::blob::{verify_bytes, verify_hashed, BlobKind, BlobStore, CapturedImage, FileRange};
use super::collect::{collect, finish, Top};
use super::error::{io_kind, ErrorKind};
use super::media::MANIFEST_TYPES;
use crate::progress::ImageBar;
use crate::reference::ImageRef;
use crate::spec::Platform;

/// Layers of one image downloaded at once.
const PARALLEL_BLOBS: usize = 3;

/// `--registry-mirror HOST=URL`: images of upstream `HOST` are fetched from `URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// The upstream host (`docker.io`, `example.hub`).
    pub host: String,
    /// `host[:port]` of the mirror.
    pub endpoint: String,
    /// `http://`: no TLS.
    pub plain_http: bool,
}

impl FromStr for Mirror {
    type Err = RegistryError;

    fn from_str(text: &str) -> Result<Mirror, RegistryError> {
        let bad = || RegistryError::BadMirror(text.to_owned());
        let (host, url) = text.split_once('=').ok_or_else(bad)?;
        let (plain_http, rest) = if let Some(r) = url.strip_prefix("http://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (false, r)
        } else {
            (false, url)
        };
        let endpoint = rest.strip_suffix('/').unwrap_or(rest);
        if !airlock_payload::is_valid_registry(host)
            || !airlock_payload::is_valid_registry(endpoint)
        {
            return Err(bad());
        }
        Ok(Mirror {
            host: canonical_host(host).to_owned(),
            endpoint: endpoint.to_owned(),
            plain_http,
        })
    }
}

impl fmt::Display for Mirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.plain_http { "http" } else { "https" };
        write!(f, "{}={scheme}://{}", self.host, self.endpoint)
    }
}

/// How registry pulls are made.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// `--registry-mirror` values.
    pub mirrors: Vec<Mirror>,
    /// The build cache folder (blobs go under `blobs/sha256/`).
    pub cache_dir: PathBuf,
    /// The docker config file with credentials, if any.
    pub auth_file: Option<PathBuf>,
    /// Connect timeout (default 15 s).
    pub connect_timeout: Option<Duration>,
}

impl RegistryOptions {
    /// The default cache folder: `AIRLOCK_CACHE_DIR`, else `$XDG_CACHE_HOME/airlock`, else
    /// `~/.cache/airlock`, else a folder under the temporary directory.
    pub fn default_cache_dir() -> PathBuf {
        let env = |k| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(d) = env("AIRLOCK_CACHE_DIR") {
            return d;
        }
        if let Some(d) = env("XDG_CACHE_HOME") {
            return d.join("airlock");
        }
        if let Some(h) = env("HOME") {
            return h.join(".cache").join("airlock");
        }
        std::env::temp_dir().join("airlock-cache")
    }

    /// The credentials file docker and podman use: `REGISTRY_AUTH_FILE`, else
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn default_auth_file() -> Option<PathBuf> {
        let env = |k| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(f) = env("REGISTRY_AUTH_FILE") {
            return Some(f);
        }
        if let Some(d) = env("DOCKER_CONFIG") {
            return Some(d.join("config.json"));
        }
        env("HOME").map(|h| h.join(".docker").join("config.json"))
    }
}

#[derive(Debug, Default, Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Credentials by registry host.
#[derive(Debug, Default, Clone)]
pub struct Credentials(HashMap<String, (String, String)>);

impl Credentials {
    /// Reads a docker config file; a missing file means no credentials.
    pub fn load(path: Option<&Path>) -> Result<Credentials, RegistryError> {
        let Some(path) = path else {
            return Ok(Credentials::default());
        };
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Credentials::default()),
            Err(source) => {
                return Err(RegistryError::AuthFile {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let config: DockerConfig =
            serde_json::from_slice(&text).map_err(|e| RegistryError::AuthFile {
                path: path.to_owned(),
                source: io::Error::new(io::ErrorKind::InvalidData, e),
            })?;
        Ok(Credentials::from_config(config))
    }

    fn from_config(config: DockerConfig) -> Credentials {
        let mut out = HashMap::new();
        for (key, entry) in config.auths {
            let host = key
                .trim_start_matches("https://")
                .trim_start_matches("http://");
            let host = canonical_host(host.split('/').next().unwrap_or(host)).to_owned();
            let pair = match (&entry.auth, &entry.username, &entry.password) {
                (Some(a), _, _) if !a.is_empty() => base64::engine::general_purpose::STANDARD
                    .decode(a.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned()))),
                (_, Some(u), Some(p)) => Some((u.clone(), p.clone())),
                _ => None,
            };
            match pair {
                Some(pair) => {
                    out.insert(host, pair);
                }
                None => {
                    tracing::debug!(%host, "credentials entry without auth or username/password ignored")
                }
            }
        }
        Credentials(out)
    }

    /// The credentials for `host`, else anonymous access.
    pub fn for_host(&self, host: &str) -> RegistryAuth {
        match self.0.get(canonical_host(host)) {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        }
    }
}

/// Pulls images; one per build, shared by the threads that capture images.
pub struct Puller {
    runtime: tokio::runtime::Runtime,
    client: Client,
    credentials: Credentials,
    auth_file: String,
    mirrors: Vec<Mirror>,
    cache: PathBuf,
}

impl Puller {
    /// Starts the runtime and reads credentials.
    pub fn new(options: &RegistryOptions) -> Result<Puller, ErrorKind> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(RegistryError::Runtime)?;
        let plain: Vec<String> = options
            .mirrors
            .iter()
            .filter(|m| m.plain_http)
            .map(|m| m.endpoint.clone())
            .collect();
        let config = ClientConfig {
            protocol: if plain.is_empty() {
                ClientProtocol::Https
            } else {
                ClientProtocol::HttpsExcept(plain)
            },
            platform_resolver: None,
            connect_timeout: Some(options.connect_timeout.unwrap_or(Duration::from_secs(15))),
            read_timeout: Some(Duration::from_secs(120)),
            user_agent: concat!("airlock/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        // rustls needs a process-wide crypto provider; an error only means one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::new(config);
        let credentials = Credentials::load(options.auth_file.as_deref())?;
        let cache = options.cache_dir.join("blobs").join("sha256");
        std::fs::create_dir_all(&cache).map_err(io_kind(format!(
            "create the build cache {}",
            cache.display()
        )))?;
        Ok(Puller {
            runtime,
            client,
            credentials,
            auth_file: options
                .auth_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "nowhere (no docker config)".to_owned()),
            mirrors: options.mirrors.clone(),
            cache,
        })
    }

    fn store<'a>(&'a self, pull: &ImageRef, bar: &'a ImageBar) -> RegistryStore<'a> {
        let mut reference = pull.to_oci();
        let mirror = self
            .mirrors
            .iter()
            .find(|m| m.host == canonical_host(pull.registry()));
        if let Some(m) = mirror {
            reference.set_mirror_registry(m.endpoint.clone());
        }
        let host = reference.resolve_registry().to_owned();
        let registry = match mirror {
            Some(m) => format!("{} (mirror of {})", m.endpoint, m.host),
            None => host.clone(),
        };
        let auth = self.credentials.for_host(match mirror {
            Some(m) => &m.endpoint,
            None => pull.registry(),
        });
        RegistryStore {
            puller: self,
            reference,
            auth,
            registry,
            pull: pull.to_string(),
            bar,
        }
    }

    /// The digests of the manifests that refer to `subject` in `pull`'s repository: the OCI
    /// 1.1 referrers API, else the referrers tag schema (an index tagged `sha256-<hex>`);
    /// empty when the registry has neither.
    pub fn referrers(
        &self,
        pull: &ImageRef,
        subject: Sha256Digest,
        bar: &ImageBar,
    ) -> Result<Vec<Sha256Digest>, ErrorKind> {
        let store = self.store(pull, bar);
        // The mirror (when one is set) is the registry asked.
        let host = store.reference.resolve_registry().to_owned();
        let repository = store.reference.repository().to_owned();
        let by_digest = oci_client::Reference::with_digest(
            host.clone(),
            repository.clone(),
            subject.to_string(),
        );
        let api = self
            .runtime
            .block_on(self.client.pull_referrers(&by_digest, None));
        let digests = |manifests: Vec<String>| -> Vec<Sha256Digest> {
            manifests.iter().filter_map(|d| d.parse().ok()).collect()
        };
        match api {
            Ok(index) => {
                return Ok(digests(
                    index.manifests.into_iter().map(|m| m.digest).collect(),
                ))
            }
            Err(e) => {
                tracing::debug!(image = %pull, "no referrers API ({e}); trying the referrers tag")
            }
        }
        let tagged =
            oci_client::Reference::with_tag(host, repository, format!("sha256-{}", subject.hex()));
        let bytes = match store.manifest(&tagged) {
            Ok((bytes, _)) => bytes,
            Err(ErrorKind::Registry(e)) if matches!(*e, RegistryError::NotFound { .. }) => {
                return Ok(Vec::new())
            }
            Err(e) => return Err(e),
        };
        #[derive(serde::Deserialize)]
        struct Index {
            #[serde(default)]
            manifests: Vec<super::manifest::Descriptor>,
        }
        let index: Index = serde_json::from_slice(&bytes).map_err(|source| ErrorKind::Json {
            what: "referrers index",
            digest: Sha256Digest::of(&bytes),
            source,
        })?;
        Ok(digests(
            index.manifests.into_iter().map(|m| m.digest).collect(),
        ))
    }

    /// Pulls `pull` and records it as `served`.
    pub fn capture(
        &self,
        pull: &ImageRef,
        served: &ImageRef,
        platform: &Platform,
        bar: &ImageBar,
    ) -> Result<CapturedImage, ErrorKind> {
        let store = self.store(pull, bar);
        let (bytes, _) = store.manifest(&store.reference)?;
        let digest = Sha256Digest::of(&bytes);
        if let Some(pin) = pull.digest() {
            verify_bytes(&bytes, pin, None)?;
        }
        let top = Top {
            digest,
            size: None,
            media_type: None,
            bytes: Some(bytes),
        };
        let collected = collect(&store, top, platform, bar)?;
        finish(served, digest, collected)
    }
}

struct RegistryStore<'a> {
    puller: &'a Puller,
    reference: oci_client::Reference,
    auth: RegistryAuth,
    registry: String,
    pull: String,
    bar: &'a ImageBar,
}

impl RegistryStore<'_> {
    fn classify(&self, what: &str, err: OciDistributionError) -> ErrorKind {
        let registry = self.registry.clone();
        let reference = what.to_owned();
        let not_found = |code: &OciErrorCode| {
            matches!(
                code,
                OciErrorCode::ManifestUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::BlobUnknown
            )
        };
        let e = match &err {
            OciDistributionError::RequestError(r) if r.is_connect() || r.is_timeout() => {
                RegistryError::Unreachable {
                    registry,
                    source: Box::new(err),
                }
            }
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => RegistryError::Auth {
                registry,
                reference,
                auth_file: self.puller.auth_file.clone(),
                source: Box::new(err),
            },
            OciDistributionError::RegistryError { envelope, .. }
                if envelope.errors.iter().any(|e| not_found(&e.code)) =>
            {
                RegistryError::NotFound {
                    registry,
                    reference,
                    source: Box::new(err),
                }
            }
            OciDistributionError::RegistryError { envelope, .. }
                if envelope.errors.iter().any(|e| {
                    matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)
                }) =>
            {
                RegistryError::Auth {
                    registry,
                    reference,
                    auth_file: self.puller.auth_file.clone(),
                    source: Box::new(err),
                }
            }
            OciDistributionError::ServerError { code: 404, .. }
            | OciDistributionError::ImageManifestNotFoundError(_) => RegistryError::NotFound {
                registry,
                reference,
                source: Box::new(err),
            },
            OciDistributionError::ServerError {
                code: 401 | 403, ..
            } => RegistryError::Auth {
                registry,
                reference,
                auth_file: self.puller.auth_file.clone(),
                source: Box::new(err),
            },
            _ => RegistryError::Other {
                registry,
                reference,
                source: Box::new(err),
            },
        };
        e.into()
    }

    fn manifest(&self, reference: &oci_client::Reference) -> Result<(Vec<u8>, String), ErrorKind> {
        let what = if reference.digest().is_some() && reference.digest() != self.reference.digest()
        {
            format!("{}@{}", self.pull, reference.digest().unwrap_or_default())
        } else {
            self.pull.clone()
        };
        let (bytes, digest) = self
            .puller
            .runtime
            .block_on(
                self.puller
                    .client
                    .pull_manifest_raw(reference, &self.auth, &MANIFEST_TYPES),
            )
            .map_err(|e| self.classify(&what, e))?;
        Ok((bytes.to_vec(), digest))
    }

    fn cached(&self, digest: Sha256Digest) -> PathBuf {
        self.puller.cache.join(digest.hex())
    }

    /// Makes sure the cache holds `digest` (verified) and returns its path.
    fn ensure(&self, digest: Sha256Digest, size: u64) -> Result<PathBuf, ErrorKind> {
        let path = self.cached(digest);
        if path.exists() {
            let range = FileRange::new(path.clone(), 0, u64::MAX)
                .and_then(|r| r.hash())
                .map_err(io_kind(format!("read cached blob {}", path.display())));
            match range {
                Ok((actual, len)) if actual == digest && len == size => {
                    self.bar.add_done(size);
                    return Ok(path);
                }
                _ => {
                    tracing::warn!(path = %path.display(), "cached blob is damaged; downloading it again");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let tmp = tempfile::Builder::new()
            .prefix(".download-")
            .tempfile_in(&self.puller.cache)
            .map_err(io_kind(format!(
                "create a file in the build cache {}",
                self.puller.cache.display()
            )))?;
        let file = tmp
            .as_file()
            .try_clone()
            .map_err(io_kind("open a download file"))?;
        let mut writer = HashingWriter {
            file: io::BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            len: 0,
            bar: self.bar,
        };
        let digest_text = digest.to_string();
        self.puller
            .runtime
            .block_on(self.puller.client.pull_blob(
                &self.reference,
                digest_text.as_str(),
                &mut writer,
            ))
            .map_err(|e| match e {
                OciDistributionError::DigestError(_) => ErrorKind::Io {
                    context: format!("download blob {digest}"),
                    source: io::Error::other(e),
                },
                e => self.classify(&format!("blob {digest} of {}", self.pull), e),
            })?;
        writer
            .file
            .flush()
            .map_err(io_kind(format!("write blob {digest} to the build cache")))?;
        let actual = Sha256Digest(writer.hasher.finalize().into());
        verify_hashed(actual, writer.len, digest, Some(size))?;
        // Images pulled in parallel share layers: when another worker stored this blob
        // first, keep its file. Replacing it would change the file under that worker's reader
        // (which then fails with "changed while the build was reading it").
        match tmp.persist_noclobber(&path) {
            Ok(_) => Ok(path),
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(path),
            Err(e) => Err(ErrorKind::Io {
                context: format!("move blob {digest} into the build cache"),
                source: e.error,
            }),
        }
    }
}

impl BlobStore for RegistryStore<'_> {
    fn read(
        &self,
        kind: BlobKind,
        digest: Sha256Digest,
        size: Option<u64>,
    ) -> Result<Vec<u8>, ErrorKind> {
        let bytes = match kind {
            BlobKind::Manifest => {
                let reference = self.reference.clone_with_digest(digest.to_string());
                self.manifest(&reference)?.0
            }
            BlobKind::Blob => {
                let path = self.ensure(digest, size.unwrap_or(0))?;
                std::fs::read(&path).map_err(io_kind(format!("read {}", path.display())))?
            }
        };
        verify_bytes(&bytes, digest, size)?;
        Ok(bytes)
    }

    fn open(&self, digest: Sha256Digest, size: u64) -> Result<Box<dyn BlobSource>, ErrorKind> {
        let path = self.ensure(digest, size)?;
        let range = FileRange::new(path.clone(), 0, size)
            .map_err(io_kind(format!("open {}", path.display())))?;
        Ok(Box::new(range))
    }

    fn prefetch(&self, blobs: &[(Sha256Digest, u64)]) -> Result<(), ErrorKind> {
        let missing: Vec<(Sha256Digest, u64)> = blobs
            .iter()
            .copied()
            .filter(|(d, _)| !self.cached(*d).exists())
            .collect();
        for chunk in missing.chunks(PARALLEL_BLOBS) {
            let results: Vec<Result<PathBuf, ErrorKind>> = std::thread::scope(|s| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|(d, size)| s.spawn(move || self.ensure(*d, *size)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a download thread does not panic"))
                    .collect()
            });
            for r in results {
                r?;
            }
        }
        Ok(())
    }

    fn reports_progress(&self) -> bool {
        true
    }
}

/// Writes a download to a file, hashing it and advancing the image's bar.
struct HashingWriter<'a> {
    file: io::BufWriter<std::fs::File>,
    hasher: Sha256,
    len: u64,
    bar: &'a ImageBar,
}

impl tokio::io::AsyncWrite for HashingWriter<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = this.file.write(buf)?;
        this.hasher.update(&buf[..n]);
        this.len += n as u64;
        this.bar.add_done(n as u64);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().file.flush())
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().file.flush())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_parse_host_and_url() {
        let m: Mirror = "example.hub=http://127.0.0.1:5001".parse().unwrap();
        assert_eq!(m.host, "example.hub");
        assert_eq!(m.endpoint, "127.0.0.1:5001");
        assert!(m.plain_http);
        let m: Mirror = "index.docker.io=https://mirror.local/".parse().unwrap();
        assert_eq!(m.host, "docker.io");
        assert!(!m.plain_http);
        assert_eq!(m.to_string(), "docker.io=https://mirror.local");
        for bad in ["example.hub", "=http://x", "a=http://x/path", "a=ftp://x"] {
            assert!(bad.parse::<Mirror>().is_err(), "{bad}");
        }
    }

    #[test]
    fn docker_config_credentials_are_found_by_host() {
        let config: DockerConfig = serde_json::from_str(
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},
                "registry.local:5000":{"username":"u","password":"p"},
                "broken.io":{}}}"#,
        )
        .unwrap();
        let creds = Credentials::from_config(config);
        assert!(
            matches!(creds.for_host("docker.io"), RegistryAuth::Basic(u, p) if u == "user" && p == "pass")
        );
        assert!(
            matches!(creds.for_host("registry.local:5000"), RegistryAuth::Basic(u, _) if u == "u")
        );
        assert!(matches!(
            creds.for_host("broken.io"),
            RegistryAuth::Anonymous
        ));
        assert!(matches!(creds.for_host("quay.io"), RegistryAuth::Anonymous));
    }
}
