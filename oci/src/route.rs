//! A `/v2` request parsed into what it asks for ([`Route`]), its query ([`Query`]) and, for
//! manifests, its [`Reference`], with one rule for escapes in every server.
//!
//! **Escapes.** The path after `/v2/` is percent-decoded as a whole (so `%2F` separates name
//! components, as it does for distribution); a `%` not followed by two hex digits, or
//! escapes that do not decode to UTF-8, make the name invalid. `+` in a path is a plus sign.
//! Query values are `application/x-www-form-urlencoded`, as Go's `url.ParseQuery` (which
//! containerd and distribution use) reads them: `+` is a space, then the same escapes.

use airlock_payload::{is_valid_tag, Sha256Digest};
use http::{Method, Uri};
use percent_encoding::percent_decode_str;

use crate::error::{echo, RequestError};

/// What a `/v2` request asks for. Names are decoded and not yet resolved
/// (see [`crate::name::resolve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: the API version check.
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// `/v2/<name>/tags/list`.
    TagsList {
        /// The repository name as the path gives it.
        name: String,
    },
    /// `/v2/<name>/manifests/<reference>`.
    Manifest {
        /// The repository name as the path gives it.
        name: String,
        /// A tag or a digest, not yet checked ([`Reference::parse`]).
        reference: String,
    },
    /// `/v2/<name>/blobs/<digest>`.
    Blob {
        /// The repository name as the path gives it.
        name: String,
        /// The digest, not yet checked ([`parse_digest`]).
        digest: String,
    },
}

impl Route {
    /// Parses a request's method and URI. Errors, in this order: a path outside `/v2` is
    /// `NOT_FOUND`; a method other than GET and HEAD is `UNSUPPORTED`; a bad query value
    /// or bad escapes in the path are `NAME_INVALID`; a path of no endpoint is `NOT_FOUND`.
    pub fn parse(method: &Method, uri: &Uri) -> Result<(Route, Query), RequestError> {
        let path = uri.path();
        let rest = match path.strip_prefix("/v2") {
            Some(r) if r.is_empty() || r.starts_with('/') => r,
            _ => return Err(RequestError::NotFound(echo(path))),
        };
        if *method != Method::GET && *method != Method::HEAD {
            return Err(RequestError::Unsupported(echo(method.as_str())));
        }
        let rest = rest.strip_prefix('/').unwrap_or(rest);
        if rest.is_empty() {
            return Ok((Route::Base, Query::default()));
        }
        let query = Query::parse(uri.query())?;
        let rest = decode(rest).ok_or_else(|| RequestError::NameInvalid(echo(rest)))?;
        if rest == "_catalog" {
            return Ok((Route::Catalog, query));
        }
        let not_found = || RequestError::NotFound(echo(path));
        let (front, last) = rest.rsplit_once('/').ok_or_else(not_found)?;
        if last == "list" {
            if let Some(name) = front.strip_suffix("/tags") {
                let name = name.to_owned();
                return Ok((Route::TagsList { name }, query));
            }
        }
        let (name, kind) = front.rsplit_once('/').ok_or_else(not_found)?;
        let (name, last) = (name.to_owned(), last.to_owned());
        let route = match kind {
            "manifests" => Route::Manifest {
                name,
                reference: last,
            },
            "blobs" => Route::Blob { name, digest: last },
            _ => return Err(not_found()),
        };
        Ok((route, query))
    }
}

/// The query parameters our servers read; others are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// `ns`: the upstream registry (containerd through a mirror).
    pub ns: Option<String>,
    /// `n`: a page size, as sent (only the registry's lists read it).
    pub n: Option<String>,
    /// `last`: where the previous page ended.
    pub last: Option<String>,
}

impl Query {
    /// Reads `query` (the part after `?`), decoding values (module documentation).
    pub fn parse(query: Option<&str>) -> Result<Query, RequestError> {
        let mut q = Query::default();
        for pair in query.unwrap_or_default().split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match key {
                "ns" => &mut q.ns,
                "n" => &mut q.n,
                "last" => &mut q.last,
                _ => continue,
            };
            let spaced = value.replace('+', " ");
            let decoded = decode(&spaced).ok_or_else(|| RequestError::NameInvalid(echo(value)))?;
            *slot = Some(decoded);
        }
        Ok(q)
    }
}

/// Decodes `%XX` escapes; `None` for a `%` without two hex digits or for bytes that are not
/// UTF-8.
pub fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let broken = b.iter().enumerate().any(|(i, &c)| {
        c == b'%'
            && !b
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if broken {
        return None;
    }
    percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// The reference part of a manifest request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    /// A tag (resolves to a digest; tags move).
    Tag(String),
    /// A digest (content-addressed).
    Digest(Sha256Digest),
}

impl Reference {
    /// A digest when it has a `:` (`DIGEST_INVALID` unless sha256), else a tag
    /// (`TAG_INVALID` unless it follows the tag grammar).
    pub fn parse(reference: &str) -> Result<Reference, RequestError> {
        if reference.contains(':') {
            parse_digest(reference).map(Reference::Digest)
        } else if is_valid_tag(reference) {
            Ok(Reference::Tag(reference.to_owned()))
        } else {
            Err(RequestError::TagInvalid(echo(reference)))
        }
    }

    /// `:tag` or `@sha256:...`, as it follows a repository in an image reference.
    pub fn suffix(&self) -> String {
        match self {
            Reference::Tag(t) => format!(":{t}"),
            Reference::Digest(d) => format!("@{d}"),
        }
    }
}

/// A blob's digest from a request (`DIGEST_INVALID` unless `sha256:` and 64 lowercase hex).
pub fn parse_digest(digest: &str) -> Result<Sha256Digest, RequestError> {
    digest
        .parse()
        .map_err(|_| RequestError::DigestInvalid(echo(digest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(uri: &str) -> Result<(Route, Query), RequestError> {
        Route::parse(&Method::GET, &uri.parse().unwrap())
    }

    fn route(uri: &str) -> Route {
        get(uri).unwrap().0
    }

    #[test]
    fn every_endpoint_of_the_pull_api_is_recognised() {
        assert_eq!(route("/v2"), Route::Base);
        assert_eq!(route("/v2/"), Route::Base);
        assert_eq!(route("/v2/_catalog"), Route::Catalog);
        assert_eq!(
            route("/v2/library/app/tags/list"),
            Route::TagsList {
                name: "library/app".into()
            }
        );
        assert_eq!(
            route("/v2/example.hub/team/app/manifests/1"),
            Route::Manifest {
                name: "example.hub/team/app".into(),
                reference: "1".into()
            }
        );
        assert_eq!(
            route("/v2/a/blobs/sha256:00"),
            Route::Blob {
                name: "a".into(),
                digest: "sha256:00".into()
            }
        );
        // A repository may be called `tags`.
        assert_eq!(
            route("/v2/tags/manifests/list"),
            Route::Manifest {
                name: "tags".into(),
                reference: "list".into()
            }
        );
    }

    #[test]
    fn other_paths_are_not_found_and_writes_unsupported() {
        for uri in [
            "/",
            "/v1/",
            "/v2x",
            "/v2/library",
            "/v2/a/other/1",
            "/v2/a/tags/lists",
            "/v2/tags/list",
        ] {
            assert!(matches!(get(uri), Err(RequestError::NotFound(_))), "{uri}");
        }
        let put = Route::parse(&Method::PUT, &"/v2/a/manifests/1".parse().unwrap());
        assert_eq!(put, Err(RequestError::Unsupported("PUT".into())));
        // Outside /v2 the path is what is wrong, whatever the method.
        let put = Route::parse(&Method::PUT, &"/v1/".parse().unwrap());
        assert!(matches!(put, Err(RequestError::NotFound(_))));
    }

    #[test]
    fn escapes_decode_once_and_plus_is_a_plus_in_paths_and_a_space_in_queries() {
        assert_eq!(
            route("/v2/library%2Fapp/manifests/1"),
            Route::Manifest {
                name: "library/app".into(),
                reference: "1".into()
            }
        );
        assert_eq!(
            route("/v2/a/manifests/1+2"),
            Route::Manifest {
                name: "a".into(),
                reference: "1+2".into()
            }
        );
        assert_eq!(
            route("/v2/a/manifests/%252e").clone(),
            Route::Manifest {
                name: "a".into(),
                reference: "%2e".into(),
            }
        );
        let (_, q) = get("/v2/a/tags/list?ns=example.hub&last=a+b%2Bc&n=5&other=%zz").unwrap();
        assert_eq!(q.ns.as_deref(), Some("example.hub"));
        assert_eq!(q.last.as_deref(), Some("a b+c"));
        assert_eq!(q.n.as_deref(), Some("5"));
        for uri in [
            "/v2/a%zz/manifests/1",
            "/v2/a%ff/manifests/1",
            "/v2/a%2/manifests/1",
            "/v2/a/manifests/1?ns=%zz",
            "/v2/a/blobs/x?last=%c3",
        ] {
            assert!(
                matches!(get(uri), Err(RequestError::NameInvalid(_))),
                "{uri}"
            );
        }
    }

    #[test]
    fn references_are_digests_or_tags() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert!(matches!(Reference::parse(&d), Ok(Reference::Digest(_))));
        assert_eq!(Reference::parse("v1.0").unwrap().suffix(), ":v1.0");
        assert_eq!(Reference::parse(&d).unwrap().suffix(), format!("@{d}"));
        assert!(matches!(
            Reference::parse("sha256:xyz"),
            Err(RequestError::DigestInvalid(_))
        ));
        assert!(matches!(
            Reference::parse("sha512:00"),
            Err(RequestError::DigestInvalid(_))
        ));
        assert!(matches!(
            Reference::parse("-bad"),
            Err(RequestError::TagInvalid(_))
        ));
        assert!(matches!(
            parse_digest("sha256:12"),
            Err(RequestError::DigestInvalid(_))
        ));
    }
}
