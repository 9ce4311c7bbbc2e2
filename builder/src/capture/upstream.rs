//! Fetching from upstream registries, with the builder's registry client set-up: oci-client
//! over rustls (ring), bearer-token auth for real registries, credentials from the docker
//! config file, and `--upstream HOST=URL` (an [`image::Mirror`](crate::image::Mirror)) to
//! fetch HOST from URL instead (`http://` means plain HTTP).
//!
//! oci-client fits a proxy: `pull_manifest_raw` returns a manifest's exact bytes (checked
//! against the digest when asked for by digest), and `pull_blob_stream` returns a blob as a
//! stream of chunks with the upstream's `Content-Length`, so the proxy can pass it on while
//! it arrives. Timeouts are short (a connect timeout of a few seconds) so that a client
//! behind the proxy gets a quick `502` from an unreachable upstream instead of hanging.

use std::time::Duration;

use airlock_payload::Sha256Digest;
use bytes::Bytes;
use oci_client::client::{ClientConfig, ClientProtocol, SizedStream};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use airlock_oci::media::MANIFEST_TYPES;
use airlock_oci::name::canonical_host;

use super::error::{chain, ProxyError};
use crate::image::registry::{Credentials, RegistryError};
use crate::image::Mirror;

/// The reference part of a manifest request: a tag is resolved upstream every time (tags
/// move), a digest is served from the capture once stored.
pub use airlock_oci::Reference as ManifestRef;

/// The upstream registries the proxy fetches from.
pub struct Upstream {
    client: Client,
    credentials: Credentials,
    auth_file: String,
    mirrors: Vec<Mirror>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("mirrors", &self.mirrors)
            .finish_non_exhaustive()
    }
}

/// A repository on an upstream: the host clients name (`?ns=`) and the repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repo {
    /// The upstream host as clients name it (`docker.io`, `example.hub`).
    pub host: String,
    /// The repository (`library/busybox`).
    pub name: String,
}

impl Upstream {
    /// Reads credentials from `auth_file` and sets up the client: `mirrors` with `http://`
    /// are plain HTTP; connections give up after `connect_timeout`.
    pub fn new(
        mirrors: Vec<Mirror>,
        auth_file: Option<&std::path::Path>,
        connect_timeout: Duration,
    ) -> Result<Upstream, RegistryError> {
        let plain: Vec<String> = mirrors
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
            connect_timeout: Some(connect_timeout),
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: concat!("airlock-capture/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        // rustls needs a process-wide crypto provider; an error only means one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(Upstream {
            client: Client::new(config),
            credentials: Credentials::load(auth_file)?,
            auth_file: auth_file
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "nowhere (no docker config)".to_owned()),
            mirrors,
        })
    }

    /// The mirror that serves `host`, if `--upstream` named one.
    fn mirror(&self, host: &str) -> Option<&Mirror> {
        let host = canonical_host(host);
        self.mirrors.iter().find(|m| m.host == host)
    }

    /// How `host` shows up in messages: `example.hub (http://127.0.0.1:5001)`.
    pub fn describe(&self, host: &str) -> String {
        match self.mirror(host) {
            Some(m) => format!(
                "{host} ({}://{})",
                if m.plain_http { "http" } else { "https" },
                m.endpoint
            ),
            None => host.to_owned(),
        }
    }

    /// The oci-client reference for `repo` with `tag` or `digest`, its credentials stored.
    async fn reference(&self, repo: &Repo, tag: Option<&str>, digest: Option<&str>) -> Reference {
        let mut r = match digest {
            Some(d) => Reference::with_digest(repo.host.clone(), repo.name.clone(), d.to_owned()),
            None => Reference::with_tag(
                repo.host.clone(),
                repo.name.clone(),
                tag.unwrap_or("latest").to_owned(),
            ),
        };
        let auth = match self.mirror(&repo.host) {
            Some(m) => {
                r.set_mirror_registry(m.endpoint.clone());
                self.credentials.for_host(&m.endpoint)
            }
            None => self.credentials.for_host(&repo.host),
        };
        // Blob pulls take credentials from the client's store, not from an argument.
        self.client
            .store_auth_if_needed(r.resolve_registry(), &auth)
            .await;
        r
    }

    /// A manifest's exact bytes, by tag or by digest (checked against it).
    pub async fn manifest(
        &self,
        repo: &Repo,
        reference: &ManifestRef,
    ) -> Result<Bytes, ProxyError> {
        let (tag, digest) = match reference {
            ManifestRef::Tag(t) => (Some(t.as_str()), None),
            ManifestRef::Digest(d) => (None, Some(d.to_string())),
        };
        let r = self.reference(repo, tag, digest.as_deref()).await;
        let what = format!("manifest {}/{}{}", repo.host, repo.name, reference.suffix());
        let (bytes, _) = self
            .client
            .pull_manifest_raw(&r, &RegistryAuth::Anonymous, &MANIFEST_TYPES)
            .await
            .map_err(|e| self.classify(repo, &what, "MANIFEST_UNKNOWN", e))?;
        Ok(bytes)
    }

    /// A blob as a stream (oci-client also checks it against `digest` at its end).
    pub async fn blob(&self, repo: &Repo, digest: Sha256Digest) -> Result<SizedStream, ProxyError> {
        let r = self.reference(repo, None, None).await;
        let what = format!("blob {digest} of {}/{}", repo.host, repo.name);
        let desc = oci_client::manifest::OciDescriptor {
            digest: digest.to_string(),
            ..Default::default()
        };
        self.client
            .pull_blob_stream(&r, &desc)
            .await
            .map_err(|e| self.classify(repo, &what, "BLOB_UNKNOWN", e))
    }

    /// Maps oci-client's error onto the answer the client gets.
    fn classify(
        &self,
        repo: &Repo,
        what: &str,
        unknown: &'static str,
        err: OciDistributionError,
    ) -> ProxyError {
        let upstream = self.describe(&repo.host);
        let what = what.to_owned();
        let not_found_code = |code: &OciErrorCode| match code {
            OciErrorCode::ManifestUnknown => Some("MANIFEST_UNKNOWN"),
            OciErrorCode::BlobUnknown => Some("BLOB_UNKNOWN"),
            OciErrorCode::NameUnknown => Some("NAME_UNKNOWN"),
            _ => None,
        };
        match &err {
            OciDistributionError::RequestError(r) if r.is_connect() || r.is_timeout() => {
                ProxyError::UpstreamUnreachable {
                    upstream,
                    cause: chain(&err),
                }
            }
            OciDistributionError::RegistryError { envelope, .. }
                if envelope
                    .errors
                    .iter()
                    .any(|e| not_found_code(&e.code).is_some()) =>
            {
                let code = envelope
                    .errors
                    .iter()
                    .find_map(|e| not_found_code(&e.code))
                    .unwrap_or(unknown);
                ProxyError::UpstreamNotFound {
                    code,
                    what,
                    upstream,
                }
            }
            OciDistributionError::ServerError { code: 404, .. }
            | OciDistributionError::ImageManifestNotFoundError(_) => ProxyError::UpstreamNotFound {
                code: unknown,
                what,
                upstream,
            },
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_)
            | OciDistributionError::ServerError {
                code: 401 | 403, ..
            } => ProxyError::UpstreamDenied {
                upstream,
                what,
                auth_file: self.auth_file.clone(),
            },
            OciDistributionError::RegistryError { envelope, .. }
                if envelope.errors.iter().any(|e| {
                    matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)
                }) =>
            {
                ProxyError::UpstreamDenied {
                    upstream,
                    what,
                    auth_file: self.auth_file.clone(),
                }
            }
            OciDistributionError::DigestError(
                oci_client::errors::DigestError::VerificationError { expected, actual },
            ) => ProxyError::DigestMismatch {
                upstream,
                digest: expected.clone(),
                actual: actual.clone(),
            },
            _ => ProxyError::UpstreamFailed {
                upstream,
                what,
                cause: chain(&err),
            },
        }
    }
}
