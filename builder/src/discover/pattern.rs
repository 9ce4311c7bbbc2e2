//! `exclude:` entries: an image reference, or a wildcard pattern over normalised references.
//!
//! An entry without `*` or `?` is an image reference, normalised like every other
//! (`busybox` is `docker.io/library/busybox:latest`), and drops exactly that reference. An
//! entry with `*` (any run of characters, `/` and `:` included) or `?` (one character) is
//! matched against the whole normalised reference: `docker.io/library/*` drops every official
//! Docker Hub image, `*:latest` every untagged one, `quay.io/*` everything from quay.io.
//!
//! A hand-written matcher rather than globset: path globs treat `/` specially, references
//! need `*` to cross it, and two wildcards are a dozen lines.

use std::fmt;
use std::str::FromStr;

use crate::reference::{ImageRef, ReferenceError};

/// Why an `exclude:` entry was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// An entry without wildcards that is not a reference.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// A wildcard pattern with characters no reference has.
    #[error(
        "invalid exclude pattern `{0}`: use the characters of image references and `*` or `?`"
    )]
    Invalid(String),
}

/// One `exclude:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImagePattern {
    /// Exactly this reference.
    Exact(ImageRef),
    /// A wildcard pattern over the normalised reference.
    Wildcard(String),
}

impl ImagePattern {
    /// Whether `reference` is dropped by this entry.
    pub fn matches(&self, reference: &ImageRef) -> bool {
        match self {
            ImagePattern::Exact(exact) => exact == reference,
            ImagePattern::Wildcard(pattern) => {
                wildcard_match(pattern.as_bytes(), reference.to_string().as_bytes())
            }
        }
    }
}

impl FromStr for ImagePattern {
    type Err = PatternError;

    fn from_str(text: &str) -> Result<ImagePattern, PatternError> {
        if !text.contains(['*', '?']) {
            return Ok(ImagePattern::Exact(text.parse()?));
        }
        let valid = text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"*?._-/:@".contains(&b));
        if valid {
            Ok(ImagePattern::Wildcard(text.to_owned()))
        } else {
            Err(PatternError::Invalid(text.to_owned()))
        }
    }
}

impl fmt::Display for ImagePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImagePattern::Exact(r) => write!(f, "{r}"),
            ImagePattern::Wildcard(p) => f.write_str(p),
        }
    }
}

/// `*` matches any run of bytes, `?` one byte; iterative with one backtrack point, so linear
/// in practice and never exponential.
fn wildcard_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(text: &str) -> ImageRef {
        text.parse().unwrap()
    }

    #[test]
    fn plain_entries_are_normalised_references_matched_exactly() {
        let p: ImagePattern = "busybox".parse().unwrap();
        assert!(p.matches(&r("docker.io/library/busybox:latest")));
        assert!(!p.matches(&r("busybox:1.36")));
        assert_eq!(p.to_string(), "docker.io/library/busybox:latest");
        assert!(matches!(
            "Busy Box".parse::<ImagePattern>(),
            Err(PatternError::Reference(_))
        ));
    }

    #[test]
    fn wildcards_match_the_whole_normalised_reference() {
        let library: ImagePattern = "docker.io/library/*".parse().unwrap();
        assert!(library.matches(&r("nginx")));
        assert!(library.matches(&r("busybox:1.36")));
        assert!(!library.matches(&r("team/app:1")));
        let latest: ImagePattern = "*:latest".parse().unwrap();
        assert!(latest.matches(&r("quay.io/a/b")));
        assert!(!latest.matches(&r("quay.io/a/b:1")));
        let port: ImagePattern = "registry.local:5000/*".parse().unwrap();
        assert!(port.matches(&r("registry.local:5000/a/b:1")));
        let one: ImagePattern = "quay.io/a/b:?".parse().unwrap();
        assert!(one.matches(&r("quay.io/a/b:1")));
        assert!(!one.matches(&r("quay.io/a/b:10")));
        let bare: ImagePattern = "nginx*".parse().unwrap();
        assert!(
            !bare.matches(&r("nginx")),
            "patterns see the normalised name"
        );
        assert!(matches!(
            "a b*".parse::<ImagePattern>(),
            Err(PatternError::Invalid(_))
        ));
    }

    #[test]
    fn wildcard_matching_backtracks() {
        assert!(wildcard_match(b"a*b*c", b"aXbYbZc"));
        assert!(!wildcard_match(b"a*b*c", b"aXbYbZ"));
        assert!(wildcard_match(b"**", b""));
        assert!(!wildcard_match(b"?", b""));
    }
}
