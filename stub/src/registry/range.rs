//! The `Range` request header (RFC 9110 §14), single byte ranges only.

/// What a `Range` header asks of a body of some size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: send everything with 200. Also the answer for syntax this server
    /// ignores (several ranges, other units, `b < a`), as RFC 9110 allows.
    Full,
    /// Bytes `start..=end`, both inside the body: 206.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// A well-formed range that selects no byte of the body: 416.
    Unsatisfiable,
}

impl RangeRequest {
    /// Interprets `header` (the `Range` value, if any) for a body of `size` bytes.
    pub fn parse(header: Option<&str>, size: u64) -> RangeRequest {
        let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
            return RangeRequest::Full;
        };
        if spec.contains(',') {
            return RangeRequest::Full;
        }
        let Some((a, b)) = spec.trim().split_once('-') else {
            return RangeRequest::Full;
        };
        let num = |s: &str| -> Option<u64> {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        match (a.trim().is_empty(), num(a), num(b)) {
            // `-n`: the last n bytes.
            (true, _, Some(n)) => {
                if n == 0 || size == 0 {
                    RangeRequest::Unsatisfiable
                } else {
                    RangeRequest::Partial {
                        start: size - n.min(size),
                        end: size - 1,
                    }
                }
            }
            // `a-` and `a-b`.
            (false, Some(start), last) if b.trim().is_empty() || last.is_some() => {
                if last.is_some_and(|l| l < start) {
                    return RangeRequest::Full;
                }
                if start >= size {
                    return RangeRequest::Unsatisfiable;
                }
                let end = last.map_or(size - 1, |l| l.min(size - 1));
                RangeRequest::Partial { start, end }
            }
            _ => RangeRequest::Full,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RangeRequest::{self, *};

    fn p(h: &str, size: u64) -> RangeRequest {
        RangeRequest::parse(Some(h), size)
    }

    #[test]
    fn byte_ranges_follow_rfc_9110() {
        assert_eq!(RangeRequest::parse(None, 10), Full);
        assert_eq!(p("bytes=0-0", 10), Partial { start: 0, end: 0 });
        assert_eq!(p("bytes=2-5", 10), Partial { start: 2, end: 5 });
        assert_eq!(p("bytes=2-", 10), Partial { start: 2, end: 9 });
        assert_eq!(p("bytes=2-100", 10), Partial { start: 2, end: 9 });
        assert_eq!(p("bytes=-3", 10), Partial { start: 7, end: 9 });
        assert_eq!(p("bytes=-30", 10), Partial { start: 0, end: 9 });
        assert_eq!(p("bytes=10-", 10), Unsatisfiable);
        assert_eq!(p("bytes=10-20", 10), Unsatisfiable);
        assert_eq!(p("bytes=-0", 10), Unsatisfiable);
    }

    #[test]
    fn odd_or_unsupported_ranges_are_ignored() {
        for h in [
            "bytes=5-2",
            "bytes=0-1,4-5",
            "items=0-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=1",
            "bytes=+1-2",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(p(h, 10), Full, "{h}");
        }
    }
}
