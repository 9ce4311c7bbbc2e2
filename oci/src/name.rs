//! Which upstream registry (namespace) and repository a request is about, in one function
//! ([`resolve`]) for every server, and the spellings of Docker Hub that all mean `docker.io`
//! ([`canonical_host`]) for every client.
//!
//! One server may hold `docker.io/library/app:1` and `example.hub/library/app:1` as
//! different images, so a name alone does not say what is asked for. The rules:
//!
//! 1. `?ns=<host>` (what containerd sends through a mirror) names the upstream; the path
//!    holds only the repository.
//! 2. Without `ns`, a first path component that looks like a host (it has a `.` or a `:`, or
//!    is `localhost`) and that the server accepts as an upstream selects it:
//!    `/v2/example.hub/library/app/manifests/1` (podman/CRI-O mirrors, skopeo).
//! 3. Otherwise the name is a `docker.io` repository.
//!
//! Either way the host is canonical: `index.docker.io`, `registry-1.docker.io` and
//! `registry.hub.docker.com` are `docker.io`.

use airlock_payload::{is_valid_registry, is_valid_repository};

use crate::error::{echo, RequestError};

/// The registry that a name without namespace belongs to.
pub const DEFAULT_NAMESPACE: &str = "docker.io";

/// Docker Hub's other names, each of which means [`DEFAULT_NAMESPACE`].
pub const DOCKER_HUB_ALIASES: [&str; 3] = [
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];

/// `host` as one name: Docker Hub's aliases are `docker.io`, every other host is itself.
pub fn canonical_host(host: &str) -> &str {
    if DOCKER_HUB_ALIASES.contains(&host) {
        DEFAULT_NAMESPACE
    } else {
        host
    }
}

/// The reference grammar's test for a registry host as the first name component.
pub fn looks_like_host(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

/// A repository of an upstream registry, as [`resolve`] found it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespaced {
    /// The upstream registry host, canonical (`docker.io`, `example.hub`).
    pub host: String,
    /// The repository inside it (`library/app`).
    pub repository: String,
}

impl Namespaced {
    /// The name a client of `docker.io` means: a one-component Docker Hub repository is an
    /// official image under `library/` (`busybox` is `library/busybox`). For proxies that
    /// pass names on to Docker Hub; a server of captured images looks names up as given.
    pub fn with_library_prefix(mut self) -> Namespaced {
        if self.host == DEFAULT_NAMESPACE && !self.repository.contains('/') {
            self.repository = format!("library/{}", self.repository);
        }
        self
    }
}

/// Resolves the (decoded) repository `name` of a request path and its `?ns=` value by the
/// rules of the module documentation. `is_upstream` says whether a host-like first path
/// component (given canonical) selects an upstream: a registry of captured images accepts
/// only the hosts it holds images of, a pull-through proxy any host.
pub fn resolve(
    name: &str,
    ns: Option<&str>,
    is_upstream: impl Fn(&str) -> bool,
) -> Result<Namespaced, RequestError> {
    let (host, repository) = match ns {
        Some(ns) => {
            if !is_valid_registry(ns) {
                return Err(RequestError::NameInvalid(format!("namespace {}", echo(ns))));
            }
            (canonical_host(ns), name)
        }
        None => match name.split_once('/') {
            Some((first, rest))
                if looks_like_host(first)
                    && is_valid_registry(first)
                    && is_upstream(canonical_host(first)) =>
            {
                (canonical_host(first), rest)
            }
            _ => (DEFAULT_NAMESPACE, name),
        },
    };
    if !is_valid_repository(repository) {
        return Err(RequestError::NameInvalid(echo(name)));
    }
    Ok(Namespaced {
        host: host.to_owned(),
        repository: repository.to_owned(),
    })
}

/// The repository an image of upstream `host` gets in a site registry below `prefix`
/// (`registry push`, and the mirror config that points runtimes there): `<prefix>/<host>/<repo>`,
/// or `<prefix>/<repo>` when `flatten`. A `:port` in the host becomes `_port` (a colon is not
/// allowed in a repository name; an underscore is not allowed in a host, so no real host
/// collides). Check the result with `is_valid_repository`.
pub fn site_repository(prefix: &str, host: &str, repository: &str, flatten: bool) -> String {
    let host = canonical_host(host).replace(':', "_");
    let mut parts: Vec<&str> = Vec::with_capacity(3);
    let prefix = prefix.trim_matches('/');
    if !prefix.is_empty() {
        parts.push(prefix);
    }
    if !flatten {
        parts.push(&host);
    }
    parts.push(repository);
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_repositories_keep_the_host_below_the_prefix_unless_flattened() {
        assert_eq!(
            site_repository("mirror", "docker.io", "library/app", false),
            "mirror/docker.io/library/app"
        );
        assert_eq!(
            site_repository("", "registry.local:5000", "a/b", false),
            "registry.local_5000/a/b"
        );
        assert_eq!(site_repository("/m/", "quay.io", "x/y", true), "m/x/y");
        assert_eq!(
            site_repository("", "index.docker.io", "library/app", false),
            "docker.io/library/app"
        );
        assert!(is_valid_repository(&site_repository(
            "mirror",
            "registry.local:5000",
            "a/b",
            false
        )));
    }

    fn r(name: &str, ns: Option<&str>) -> String {
        let n = resolve(name, ns, |_| true).unwrap();
        format!("{}/{}", n.host, n.repository)
    }

    #[test]
    fn every_docker_hub_alias_is_docker_io() {
        // Regression (issue 10, bug 1): the stub did not know registry.hub.docker.com.
        for alias in DOCKER_HUB_ALIASES.iter().chain(&["docker.io"]) {
            assert_eq!(canonical_host(alias), "docker.io");
            assert_eq!(r("library/app", Some(alias)), "docker.io/library/app");
            assert_eq!(
                r(&format!("{alias}/library/app"), None),
                "docker.io/library/app"
            );
        }
        assert_eq!(canonical_host("quay.io"), "quay.io");
        assert_eq!(canonical_host("docker.io.example"), "docker.io.example");
    }

    #[test]
    fn ns_then_a_path_prefix_then_docker_io_name_the_upstream() {
        assert_eq!(r("team/app", Some("example.hub")), "example.hub/team/app");
        assert_eq!(r("example.hub/team/app", None), "example.hub/team/app");
        assert_eq!(
            r("registry.local:5000/a/b", None),
            "registry.local:5000/a/b"
        );
        assert_eq!(r("localhost/a", None), "localhost/a");
        assert_eq!(r("team/app", None), "docker.io/team/app");
        // With ns, a host-like first component is part of the repository.
        assert_eq!(
            r("example.hub/app", Some("quay.io")),
            "quay.io/example.hub/app"
        );
    }

    #[test]
    fn a_prefix_the_server_does_not_accept_stays_part_of_a_docker_io_name() {
        let n = resolve("example.hub/team/app", None, |h| h == "quay.io").unwrap();
        assert_eq!(n.host, "docker.io");
        assert_eq!(n.repository, "example.hub/team/app");
    }

    #[test]
    fn official_docker_hub_images_get_library_only_when_asked() {
        let n = resolve("busybox", None, |_| true).unwrap();
        assert_eq!(n.repository, "busybox");
        assert_eq!(n.with_library_prefix().repository, "library/busybox");
        let n = resolve("app", Some("example.hub"), |_| true).unwrap();
        assert_eq!(n.with_library_prefix().repository, "app");
    }

    #[test]
    fn bad_names_and_namespaces_are_name_invalid() {
        for (name, ns) in [
            ("Team/App", None),
            ("app", Some("bad host!")),
            ("app", Some("..")),
            ("", None),
            ("a/../b", None),
            ("registry.local:5001x/a", None),
        ] {
            let err = resolve(name, ns, |_| true).unwrap_err();
            assert!(
                matches!(err, RequestError::NameInvalid(_)),
                "{name} {ns:?}: {err}"
            );
        }
        let long = "n".repeat(10_000);
        let err = resolve("a", Some(&long), |_| true).unwrap_err().to_string();
        assert!(err.len() < 300, "the error repeats a long namespace");
    }
}
