//! Byte ranges in requests: the `Range` of a blob read (RFC 9110 §14) and the `Content-Range`
//! of an upload chunk (OCI distribution, chunked push).
//!
//! The one place both the core and the edge decide what part of a blob to send, so they answer
//! every `Range` alike. `http-range-header` does the strict syntax; satisfiability is decided
//! here, because the crate clamps a range that starts past the end (an empty blob's `0-0`
//! became a one-byte range) and refuses a suffix longer than the blob (which RFC 9110 §14.1.3
//! says is the whole representation).

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use http_range_header::{EndPosition, StartPosition, SyntacticallyCorrectRange};

/// What a `Range` header asks of a representation of a known size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// No header, one to ignore (another unit, bad syntax, `last < first`), a suffix of the
    /// empty blob (all of it, which a `206` cannot express), or several ranges of which at
    /// least one is satisfiable (multipart answers are not offered): `200`.
    Whole,
    /// One satisfiable range: `206` with these bytes, never empty and within the size.
    Part(Range<u64>),
    /// No range overlaps the representation: `416` with [`unsatisfied_content_range`].
    Unsatisfiable,
}

impl RangeRequest {
    /// Decides a `Range` header against a representation of `size` bytes.
    pub fn parse(header: Option<&str>, size: u64) -> RangeRequest {
        let Some(parsed) = header.and_then(|h| http_range_header::parse_range_header(h).ok())
        else {
            return RangeRequest::Whole;
        };
        let specs = parsed.ranges;
        if specs.iter().any(is_reversed) {
            // RFC 9110 §14.1.1: such a range set is invalid, and an invalid Range is ignored.
            return RangeRequest::Whole;
        }
        let mut satisfiable = specs.iter().filter_map(|spec| satisfy(spec, size));
        match (satisfiable.next(), specs.len()) {
            (None, _) if size == 0 && specs.iter().any(is_suffix) => RangeRequest::Whole,
            (None, _) => RangeRequest::Unsatisfiable,
            (Some(part), 1) => RangeRequest::Part(part),
            (Some(_), _) => RangeRequest::Whole,
        }
    }
}

fn is_reversed(spec: &SyntacticallyCorrectRange) -> bool {
    matches!(
        (spec.start, spec.end),
        (StartPosition::Index(first), EndPosition::Index(last)) if last < first
    )
}

fn is_suffix(spec: &SyntacticallyCorrectRange) -> bool {
    matches!(spec.start, StartPosition::FromLast(_))
}

/// The non-empty bytes one range spec selects of `size`, if any (RFC 9110 §14.1.1: a range
/// is satisfiable when its first position is inside the representation or it is a non-zero
/// suffix of a non-empty one; a last position past the end, or a suffix longer than the
/// representation, stops at the end).
fn satisfy(spec: &SyntacticallyCorrectRange, size: u64) -> Option<Range<u64>> {
    let start = match spec.start {
        StartPosition::Index(first) => first,
        StartPosition::FromLast(suffix) if suffix > 0 => size.saturating_sub(suffix),
        StartPosition::FromLast(_) => return None,
    };
    if start >= size {
        return None;
    }
    let end = match spec.end {
        EndPosition::Index(last) => last.saturating_add(1).min(size),
        EndPosition::LastByte => size,
    };
    Some(start..end)
}

/// `Content-Range` of a `206` carrying `part` of a representation of `size` bytes.
pub fn content_range(part: &Range<u64>, size: u64) -> String {
    format!("bytes {}-{}/{size}", part.start, part.end.saturating_sub(1))
}

/// `Content-Range` of a `416`: the representation's size, so a client can ask again.
pub fn unsatisfied_content_range(size: u64) -> String {
    format!("bytes */{size}")
}

/// The bytes an upload chunk says it carries: `Content-Range: <first>-<last>` (inclusive),
/// optionally with a `bytes ` or `bytes=` prefix and a `/<total>` suffix, as clients send it.
/// Never empty, and its length fits a `u64`, so arithmetic on it cannot overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    start: u64,
    /// At least 1; `start + length - 1` is the last byte, so it fits too.
    length: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentRangeError {
    #[error("Content-Range {0:?} is not <first byte>-<last byte>")]
    Malformed(String),
    #[error("Content-Range {0:?} ends before it starts")]
    EndsBeforeStart(String),
    #[error("Content-Range {0:?} covers more bytes than a request can carry")]
    TooLong(String),
}

impl ChunkRange {
    /// Offset of the chunk's first byte in the upload.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Number of bytes the chunk carries (at least 1).
    pub fn length(&self) -> u64 {
        self.length
    }

    /// Offset of the chunk's last byte in the upload.
    pub fn last(&self) -> u64 {
        self.start + (self.length - 1)
    }
}

impl FromStr for ChunkRange {
    type Err = ContentRangeError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let malformed = || ContentRangeError::Malformed(value.to_owned());
        let unprefixed = value
            .trim()
            .strip_prefix("bytes")
            .map_or(value.trim(), |rest| rest.trim_start_matches(['=', ' ']));
        let span = unprefixed.split('/').next().unwrap_or_default();
        let (first, last) = span.split_once('-').ok_or_else(malformed)?;
        let (start, last) = (parse_position(first), parse_position(last));
        let (Some(start), Some(last)) = (start, last) else {
            return Err(malformed());
        };
        let distance = last
            .checked_sub(start)
            .ok_or_else(|| ContentRangeError::EndsBeforeStart(value.to_owned()))?;
        // `0-18446744073709551615` is 2^64 bytes: one more than a u64 counts.
        let length = distance
            .checked_add(1)
            .ok_or_else(|| ContentRangeError::TooLong(value.to_owned()))?;
        Ok(ChunkRange { start, length })
    }
}

/// A byte position: decimal digits only (no sign, no space), as RFC 9110's `1*DIGIT`.
fn parse_position(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `<first>-<last>`, the canonical form (what `from_str` reads back to the same range).
impl fmt::Display for ChunkRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.last())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(header: &str, size: u64) -> RangeRequest {
        RangeRequest::parse(Some(header), size)
    }

    #[test]
    fn single_satisfiable_ranges_are_parts_within_the_size() {
        let cases: [(&str, u64, Range<u64>); 9] = [
            ("bytes=0-4", 10, 0..5),
            ("bytes=5-", 10, 5..10),
            ("bytes=-3", 10, 7..10),
            ("bytes=9-9", 10, 9..10),
            ("bytes=0-0", 1, 0..1),
            // A last position past the end stops at the end (RFC 9110 §14.1.2).
            ("bytes=5-1000", 10, 5..10),
            ("bytes=0-18446744073709551615", 10, 0..10),
            // A suffix longer than the blob is the whole blob (RFC 9110 §14.1.3), not a 416.
            ("bytes=-11", 10, 0..10),
            ("bytes=-18446744073709551615", 10, 0..10),
        ];
        for (header, size, expected) in cases {
            assert_eq!(part(header, size), RangeRequest::Part(expected), "{header}");
        }
    }

    #[test]
    fn ranges_starting_at_or_past_the_end_are_unsatisfiable() {
        let cases: [(&str, u64); 8] = [
            ("bytes=10-", 10),
            ("bytes=10-12", 10),
            ("bytes=18446744073709551615-", 10),
            // The empty blob has no byte to start at.
            ("bytes=0-0", 0),
            ("bytes=0-", 0),
            ("bytes=0-100", 0),
            // Several ranges, none of them inside.
            ("bytes=10-11,20-", 10),
            ("bytes=0-0,5-", 0),
        ];
        for (header, size) in cases {
            assert_eq!(part(header, size), RangeRequest::Unsatisfiable, "{header}");
        }
    }

    #[test]
    fn absent_invalid_and_multiple_ranges_mean_the_whole_blob() {
        assert_eq!(RangeRequest::parse(None, 10), RangeRequest::Whole);
        let cases: [(&str, u64); 10] = [
            ("pages=1-2", 10),
            ("bytes=a-b", 10),
            ("bytes= 0-1", 10),
            ("bytes=-0", 10),
            // last < first makes the set invalid, so the header is ignored.
            ("bytes=5-3", 10),
            ("bytes=20-3", 10),
            // Multipart answers are not offered; one satisfiable range among several is enough.
            ("bytes=0-1,3-4", 10),
            ("bytes=0-5,3-8", 10),
            ("bytes=0-1,20-30", 10),
            // A suffix of the empty blob selects all of it, which a 206 cannot express.
            ("bytes=-5", 0),
        ];
        for (header, size) in cases {
            assert_eq!(part(header, size), RangeRequest::Whole, "{header}");
        }
    }

    #[test]
    fn content_range_values() {
        assert_eq!(content_range(&(0..10), 100), "bytes 0-9/100");
        assert_eq!(content_range(&(99..100), 100), "bytes 99-99/100");
        assert_eq!(unsatisfied_content_range(0), "bytes */0");
    }

    #[test]
    fn chunk_range_forms() {
        let ok = |s: &str| s.parse::<ChunkRange>().map(|r| (r.start(), r.length()));
        assert_eq!(ok("0-99"), Ok((0, 100)));
        assert_eq!(ok("bytes 100-199/*"), Ok((100, 100)));
        assert_eq!(ok("bytes=5-9"), Ok((5, 5)));
        assert_eq!(ok(" 7-7 "), Ok((7, 1)));
        assert_eq!(ok("0-18446744073709551614"), Ok((0, u64::MAX)));
        for malformed in ["5", "a-b", "-5", "5-", "+5-9", "5--9", "bytes", ""] {
            assert!(
                matches!(ok(malformed), Err(ContentRangeError::Malformed(_))),
                "{malformed:?}"
            );
        }
        assert!(matches!(
            ok("9-5"),
            Err(ContentRangeError::EndsBeforeStart(_))
        ));
    }

    #[test]
    fn chunk_range_whose_length_overflows_is_refused() {
        assert!(matches!(
            "0-18446744073709551615".parse::<ChunkRange>(),
            Err(ContentRangeError::TooLong(_))
        ));
        let widest: ChunkRange = "1-18446744073709551615".parse().expect("2^64 - 1 bytes");
        assert_eq!((widest.length(), widest.last()), (u64::MAX, u64::MAX));
    }

    #[test]
    fn chunk_range_displays_back_to_itself() {
        let range: ChunkRange = "bytes=3-8/*".parse().expect("valid");
        assert_eq!(range.to_string(), "3-8");
        assert_eq!(range.to_string().parse::<ChunkRange>(), Ok(range));
    }
}
