//! What every OCI server and client of airlock shares, so that the stub's registry and the
//! builder's capture proxy answer the same request the same way.
//!
//! Both speak the pull side of the distribution API over hyper; before this crate each held
//! its own copy of the server loop, the error envelope and the name rules, and the copies
//! drifted (one answered an oversized request head with `431`, the other with `200`). Now
//! each keeps only its handlers:
//!
//! - [`media`]: the media types of OCI and Docker manifests, configs and layers.
//! - [`name`]: Docker Hub's aliases and which upstream registry (namespace) a request is
//!   about: `?ns=`, a path prefix, or `docker.io`.
//! - [`route`]: a `/v2` request parsed into a [`Route`], with one rule for percent escapes.
//! - [`error`]: the [`OciError`] trait (code, status, detail, headers), the JSON error
//!   envelope, and [`RequestError`] for the mistakes any server refuses alike.
//! - [`body`]: the response [`Body`]: empty, in memory, a channel of chunks, or any stream.
//! - [`server`]: one hyper server loop ([`serve`]) with its guards for hostile clients and a
//!   graceful shutdown.
//!
//! ```
//! use airlock_oci::{name, route::Route};
//! let uri = "/v2/example.hub/team/app/manifests/1?ns=quay.io".parse().unwrap();
//! let (route, query) = Route::parse(&http::Method::GET, &uri).unwrap();
//! assert_eq!(query.ns.as_deref(), Some("quay.io"));
//! let Route::Manifest { name, reference } = route else { unreachable!() };
//! let target = name::resolve(&name, None, |_| true).unwrap(); // without the ns
//! assert_eq!((target.host.as_str(), target.repository.as_str(), reference.as_str()),
//!            ("example.hub", "team/app", "1"));
//! ```

#![deny(missing_docs)]

pub mod body;
pub mod error;
pub mod media;
pub mod name;
pub mod route;
pub mod server;
#[cfg(any(test, feature = "testutil"))]
pub mod testutil;

pub use body::Body;
pub use error::{error_response, json_response, OciError, RequestError};
pub use route::{Query, Reference, Route};
pub use server::{
    accept_loop, serve, serve_connection, shutdown_signal, AcceptLimits, ServeOptions,
};

/// Header names both servers send.
pub mod headers {
    use http::HeaderName;

    /// `Docker-Content-Digest`: the digest of a manifest or blob answer.
    pub const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
    /// `OCI-Namespace`: the upstream registry a repository answer is about.
    pub const OCI_NAMESPACE: HeaderName = HeaderName::from_static("oci-namespace");
    /// `Docker-Distribution-API-Version`.
    pub const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
    /// The value of [`API_VERSION`].
    pub const API_VERSION_VALUE: &str = "registry/2.0";
}
