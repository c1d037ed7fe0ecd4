//! A byte stream that checks what passed through it: the count against `Content-Length` and,
//! for whole blobs, the digest.
//!
//! Bytes are handed on as they arrive (a waiting client must not wait for the whole blob), so
//! the verdict can only come at the end: when the bytes fall short or hash to another digest,
//! the stream's last item is an `io::Error` instead of a clean end. A consumer that writes the
//! bytes to a temp file and commits on a clean end, or relays them to a client and aborts the
//! connection on an error, therefore never treats a truncated or corrupted body as complete.

use std::io;

use bytes::Bytes;
use futures_util::StreamExt;

use super::UpstreamError;
use crate::digesting::BackgroundHasher;
use crate::oci::{Digest, Hasher};
use crate::storage::ByteStream;

/// Wraps `inner`; see the module docs. `digest`: the bytes must hash to it (its algorithm picks
/// the hasher; `None` for ranged fetches, whose bytes are a slice of the blob and cannot be
/// checked on their own). `expected_len`: the bytes must number exactly this many.
///
/// The hash runs beside the stream (`digesting`): a chunk is handed on as soon as it is handed
/// to the hasher, and only the verdict waits for the hash to catch up.
pub fn verify(inner: ByteStream, digest: Option<Digest>, expected_len: Option<u64>) -> ByteStream {
    let check = Check {
        inner,
        digest: digest.map(|d| (BackgroundHasher::new(Hasher::new(d.algorithm())), d)),
        expected_len,
        received: 0,
    };
    // `None` after the last item (an error or the verdict), so nothing follows it.
    Box::pin(futures_util::stream::unfold(
        Some(check),
        |check| async move {
            let mut check = check?;
            let item = match check.inner.next().await {
                Some(Ok(chunk)) => match check.take(chunk).await {
                    Ok(chunk) => return Some((Ok(chunk), Some(check))),
                    Err(e) => e,
                },
                Some(Err(e)) => e,
                None => check.verdict().await?,
            };
            Some((Err(item), None))
        },
    ))
}

/// What a verifying stream has seen so far.
struct Check {
    inner: ByteStream,
    digest: Option<(BackgroundHasher, Digest)>,
    expected_len: Option<u64>,
    received: u64,
}

impl Check {
    async fn take(&mut self, chunk: Bytes) -> io::Result<Bytes> {
        self.received += chunk.len() as u64;
        if let Some(expected) = self.expected_len
            && self.received > expected
        {
            // hyper never lets this happen under Content-Length framing; a bug or an exotic
            // transport must still not slip extra bytes through.
            let err = UpstreamError::Protocol(format!(
                "body longer than its Content-Length of {expected} bytes"
            ));
            return Err(err.into_io(io::ErrorKind::InvalidData));
        }
        if let Some((hasher, _)) = &mut self.digest {
            hasher.update(chunk.clone()).await;
        }
        Ok(chunk)
    }

    /// The verdict once the inner stream ended cleanly: `None` when the bytes are right.
    async fn verdict(self) -> Option<io::Error> {
        if let Some(expected) = self.expected_len
            && self.received != expected
        {
            let err = UpstreamError::Truncated {
                expected,
                received: self.received,
            };
            return Some(err.into_io(io::ErrorKind::UnexpectedEof));
        }
        let (hasher, expected) = self.digest?;
        let actual = match hasher.finish().await {
            Ok(hasher) => hasher.finish(),
            Err(e) => return Some(io::Error::other(e)),
        };
        (actual != expected).then(|| {
            UpstreamError::DigestMismatch { expected, actual }.into_io(io::ErrorKind::InvalidData)
        })
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{StreamExt, stream};

    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> ByteStream {
        let items: Vec<io::Result<Bytes>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Box::pin(stream::iter(items))
    }

    async fn collect(s: ByteStream) -> Vec<io::Result<Bytes>> {
        s.collect().await
    }

    #[tokio::test]
    async fn passes_matching_bytes_and_ends_cleanly() {
        let digest = Digest::sha256_of(b"hello world");
        let items = collect(verify(
            chunks(&[b"hello ", b"world"]),
            Some(digest),
            Some(11),
        ))
        .await;
        assert_eq!(items.len(), 2);
        assert!(items.iter().all(Result::is_ok));
    }

    #[tokio::test]
    async fn digest_mismatch_is_the_last_item() {
        let digest = Digest::sha256_of(b"hello world");
        let items = collect(verify(
            chunks(&[b"hello ", b"w0rld"]),
            Some(digest.clone()),
            None,
        ))
        .await;
        assert_eq!(items.len(), 3);
        let err = items[2].as_ref().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        match UpstreamError::from_io(err) {
            Some(UpstreamError::DigestMismatch { expected, actual }) => {
                assert_eq!(expected, &digest);
                assert_eq!(actual, &Digest::sha256_of(b"hello w0rld"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn short_or_long_bodies_fail() {
        let short = collect(verify(chunks(&[b"hello"]), None, Some(11))).await;
        let err = short.last().unwrap().as_ref().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(
            UpstreamError::from_io(err),
            Some(&UpstreamError::Truncated {
                expected: 11,
                received: 5
            })
        );

        let long = collect(verify(chunks(&[b"hello", b"world"]), None, Some(7))).await;
        assert_eq!(
            long.len(),
            2,
            "the overflowing chunk is replaced by the error"
        );
        assert!(long[0].is_ok() && long[1].is_err());
    }

    #[tokio::test]
    async fn inner_errors_end_the_stream() {
        let items: Vec<io::Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"a")),
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset")),
            Ok(Bytes::from_static(b"b")),
        ];
        let s = verify(
            Box::pin(stream::iter(items)),
            Some(Digest::sha256_of(b"ab")),
            None,
        );
        let out = collect(s).await;
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[1].as_ref().unwrap_err().kind(),
            io::ErrorKind::ConnectionReset
        );
    }
}
