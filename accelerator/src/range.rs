//! HTTP `Range` header parsing and resolution against a blob's size (RFC 9110, bytes only).
//!
//! overlaybd always sends one closed range and copies the answer from offset 0, so a request
//! with a Range must get exactly the bytes asked for or an error, never the whole blob.
//! A single range of any form is served; several ranges in one header are refused rather
//! than answered with the whole body.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// `bytes=a-b`
    Closed(u64, u64),
    /// `bytes=a-`
    From(u64),
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl RangeSpec {
    /// The first byte asked for, when it does not depend on the blob's size.
    pub fn first(&self) -> Option<u64> {
        match *self {
            RangeSpec::Closed(a, _) | RangeSpec::From(a) => Some(a),
            RangeSpec::Suffix(_) => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RangeError {
    #[error("malformed Range header")]
    Malformed,
    #[error("multiple ranges are not supported")]
    Multiple,
    #[error("range not satisfiable")]
    Unsatisfiable,
}

/// A resolved range: `start..=end` within the blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub end: u64,
}

impl Span {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

fn number(s: &str) -> Result<u64, RangeError> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RangeError::Malformed);
    }
    s.parse().map_err(|_| RangeError::Malformed)
}

pub fn parse(header: &str) -> Result<RangeSpec, RangeError> {
    let header = header.trim();
    let (unit, set) = header.split_once('=').ok_or(RangeError::Malformed)?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Err(RangeError::Malformed);
    }
    if set.contains(',') {
        return Err(RangeError::Multiple);
    }
    let (first, last) = set.trim().split_once('-').ok_or(RangeError::Malformed)?;
    let (first, last) = (first.trim(), last.trim());
    match (first.is_empty(), last.is_empty()) {
        (true, true) => Err(RangeError::Malformed),
        (true, false) => Ok(RangeSpec::Suffix(number(last)?)),
        (false, true) => Ok(RangeSpec::From(number(first)?)),
        (false, false) => {
            let (a, b) = (number(first)?, number(last)?);
            if b < a {
                return Err(RangeError::Malformed);
            }
            Ok(RangeSpec::Closed(a, b))
        }
    }
}

impl RangeSpec {
    /// The bytes this range covers in a blob of `size` bytes, clamped as RFC 9110 says.
    pub fn resolve(self, size: u64) -> Result<Span, RangeError> {
        if size == 0 {
            return Err(RangeError::Unsatisfiable);
        }
        let last = size - 1;
        match self {
            RangeSpec::Closed(a, b) if a <= last => Ok(Span {
                start: a,
                end: b.min(last),
            }),
            RangeSpec::From(a) if a <= last => Ok(Span {
                start: a,
                end: last,
            }),
            RangeSpec::Suffix(n) if n > 0 => Ok(Span {
                start: size - n.min(size),
                end: last,
            }),
            _ => Err(RangeError::Unsatisfiable),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn forms() {
        assert_eq!(parse("bytes=0-0"), Ok(RangeSpec::Closed(0, 0)));
        assert_eq!(parse("bytes=5-"), Ok(RangeSpec::From(5)));
        assert_eq!(parse("bytes=-10"), Ok(RangeSpec::Suffix(10)));
        assert_eq!(parse(" Bytes = 1 - 2 "), Ok(RangeSpec::Closed(1, 2)));
        assert_eq!(parse("bytes=0-1,3-4"), Err(RangeError::Multiple));
        for bad in [
            "",
            "bytes",
            "bytes=",
            "bytes=-",
            "items=0-1",
            "bytes=2-1",
            "bytes=a-b",
            "bytes=+1-2",
        ] {
            assert_eq!(parse(bad), Err(RangeError::Malformed), "{bad}");
        }
        assert_eq!(
            parse("bytes=0-99999999999999999999999"),
            Err(RangeError::Malformed)
        );
    }

    #[test]
    fn resolution() {
        assert_eq!(
            RangeSpec::Closed(0, 0).resolve(10),
            Ok(Span { start: 0, end: 0 })
        );
        assert_eq!(
            RangeSpec::Closed(8, 100).resolve(10),
            Ok(Span { start: 8, end: 9 })
        );
        assert_eq!(
            RangeSpec::From(9).resolve(10),
            Ok(Span { start: 9, end: 9 })
        );
        assert_eq!(
            RangeSpec::Suffix(3).resolve(10),
            Ok(Span { start: 7, end: 9 })
        );
        assert_eq!(
            RangeSpec::Suffix(30).resolve(10),
            Ok(Span { start: 0, end: 9 })
        );
        assert_eq!(
            RangeSpec::Closed(10, 12).resolve(10),
            Err(RangeError::Unsatisfiable)
        );
        assert_eq!(
            RangeSpec::From(10).resolve(10),
            Err(RangeError::Unsatisfiable)
        );
        assert_eq!(
            RangeSpec::Suffix(0).resolve(10),
            Err(RangeError::Unsatisfiable)
        );
        assert_eq!(
            RangeSpec::Closed(0, 0).resolve(0),
            Err(RangeError::Unsatisfiable)
        );
    }

    proptest! {
        #[test]
        fn resolved_spans_lie_inside_the_blob(a in 0u64..1_000, b in 0u64..1_000, size in 0u64..1_000) {
            for spec in [RangeSpec::Closed(a.min(b), a.max(b)), RangeSpec::From(a), RangeSpec::Suffix(b)] {
                if let Ok(span) = spec.resolve(size) {
                    prop_assert!(span.start <= span.end && span.end < size);
                    if let RangeSpec::Closed(x, _) | RangeSpec::From(x) = spec {
                        prop_assert_eq!(span.start, x);
                    }
                }
            }
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = parse(&s);
        }

        #[test]
        fn closed_ranges_round_trip(a in 0u64..u64::MAX / 2, len in 0u64..1_000_000) {
            prop_assert_eq!(parse(&format!("bytes={}-{}", a, a + len)), Ok(RangeSpec::Closed(a, a + len)));
        }
    }
}
