//! `Range` and `Content-Range` (`oci::range`). The input is 8 bytes choosing the blob size
//! (tiny, near `u64::MAX`, or any) followed by the header value.
//!
//! `Range`: a part is never empty and lies within the size; the empty blob never gets a part;
//! for a single `bytes=<first>-[<last>]` or `bytes=-<suffix>` the answer is the one RFC 9110
//! gives, computed here independently. `Content-Range`: a parsed chunk has a length of at
//! least 1 whose last byte fits a u64, and it displays back to an equal chunk.
#![no_main]

use std::ops::Range;

use aerugo::oci::ChunkRange;
use aerugo::oci::range::{RangeRequest, content_range};
use libfuzzer_sys::fuzz_target;

fn size_from(prefix: [u8; 8]) -> u64 {
    let raw = u64::from_le_bytes(prefix);
    match raw % 4 {
        0 => (raw >> 2) % 32,
        1 => u64::MAX - (raw >> 2) % 32,
        _ => raw >> 2,
    }
}

/// A decimal position as `http-range-header` accepts it: digits, no leading zero.
fn position(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text.len() == 1 || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// RFC 9110 §14.1 for one range, or `None` when the header is not one plain range spec.
fn expected(header: &str, size: u64) -> Option<RangeRequest> {
    let (first, last) = header.strip_prefix("bytes=")?.split_once('-')?;
    if first.is_empty() {
        let suffix = position(last)?;
        if suffix == 0 {
            return None;
        }
        return Some(match size {
            0 => RangeRequest::Whole,
            _ => RangeRequest::Part(size - suffix.min(size)..size),
        });
    }
    let first = position(first)?;
    let end = match last {
        "" => size,
        last => {
            let last = position(last)?;
            if last < first {
                return Some(RangeRequest::Whole);
            }
            last.saturating_add(1).min(size)
        }
    };
    Some(if first < size {
        RangeRequest::Part(first..end)
    } else {
        RangeRequest::Unsatisfiable
    })
}

fn check_part(part: &Range<u64>, size: u64, header: &str) {
    assert!(
        part.start < part.end && part.end <= size,
        "{header:?} on {size} bytes gave {part:?}"
    );
    assert_eq!(
        content_range(part, size),
        format!("bytes {}-{}/{size}", part.start, part.end - 1)
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((prefix, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let Ok(header) = std::str::from_utf8(rest) else {
        return;
    };
    let size = size_from(*prefix);

    let answer = RangeRequest::parse(Some(header), size);
    if let RangeRequest::Part(part) = &answer {
        check_part(part, size, header);
    }
    if let Some(expected) = expected(header, size) {
        assert_eq!(answer, expected, "{header:?} on {size} bytes");
    }

    if let Ok(chunk) = header.parse::<ChunkRange>() {
        assert!(chunk.length() >= 1);
        assert!(chunk.last() >= chunk.start());
        assert_eq!(chunk.last() - chunk.start(), chunk.length() - 1);
        assert_eq!(chunk.to_string().parse::<ChunkRange>(), Ok(chunk));
    }
});
