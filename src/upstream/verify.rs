//! A byte stream that checks what passed through it: the count against `Content-Length` and,
//! for whole blobs, the digest.
//!
//! Bytes are handed on as they arrive (a waiting client must not wait for the whole blob), so
//! the verdict can only come at the end: when the bytes fall short or hash to another digest,
//! the stream's last item is an `io::Error` instead of a clean end. A consumer that writes the
//! bytes to a temp file and commits on a clean end, or relays them to a client and aborts the
//! connection on an error, therefore never treats a truncated or corrupted body as complete.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::Stream;

use super::UpstreamError;
use crate::oci::{Digest, Hasher};
use crate::storage::ByteStream;

/// Wraps a [`ByteStream`]; see the module docs.
pub struct VerifyingStream {
    inner: ByteStream,
    /// The hasher and the digest it must produce; `None` for ranged fetches, whose bytes are
    /// a slice of the blob and cannot be checked on their own.
    digest: Option<(Hasher, Digest)>,
    expected_len: Option<u64>,
    received: u64,
    /// Set after the last item (an error or the verdict), so nothing follows it.
    finished: bool,
}

impl VerifyingStream {
    /// `digest`: the bytes must hash to it (its algorithm picks the hasher).
    /// `expected_len`: the bytes must number exactly this many.
    pub fn new(inner: ByteStream, digest: Option<Digest>, expected_len: Option<u64>) -> Self {
        let digest = digest.map(|d| (Hasher::new(d.algorithm()), d));
        VerifyingStream {
            inner,
            digest,
            expected_len,
            received: 0,
            finished: false,
        }
    }

    pub fn boxed(self) -> ByteStream {
        Box::pin(self)
    }

    /// The verdict once the inner stream ended cleanly.
    fn verdict(&mut self) -> Option<io::Error> {
        if let Some(expected) = self.expected_len
            && self.received != expected
        {
            let err = UpstreamError::Truncated {
                expected,
                received: self.received,
            };
            return Some(err.into_io(io::ErrorKind::UnexpectedEof));
        }
        let (hasher, expected) = self.digest.take()?;
        let actual = hasher.finish();
        (actual != expected).then(|| {
            UpstreamError::DigestMismatch { expected, actual }.into_io(io::ErrorKind::InvalidData)
        })
    }
}

impl Stream for VerifyingStream {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        match ready!(this.inner.as_mut().poll_next(cx)) {
            Some(Ok(chunk)) => {
                this.received += chunk.len() as u64;
                if let Some(expected) = this.expected_len
                    && this.received > expected
                {
                    // hyper never lets this happen under Content-Length framing; a bug or an
                    // exotic transport must still not slip extra bytes through.
                    this.finished = true;
                    let err = UpstreamError::Protocol(format!(
                        "body longer than its Content-Length of {expected} bytes"
                    ));
                    return Poll::Ready(Some(Err(err.into_io(io::ErrorKind::InvalidData))));
                }
                if let Some((hasher, _)) = &mut this.digest {
                    hasher.update(&chunk);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Some(Err(err)) => {
                this.finished = true;
                Poll::Ready(Some(Err(err)))
            }
            None => {
                this.finished = true;
                Poll::Ready(this.verdict().map(Err))
            }
        }
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

    async fn collect(s: VerifyingStream) -> Vec<io::Result<Bytes>> {
        s.collect().await
    }

    #[tokio::test]
    async fn passes_matching_bytes_and_ends_cleanly() {
        let digest = Digest::sha256_of(b"hello world");
        let items = collect(VerifyingStream::new(
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
        let items = collect(VerifyingStream::new(
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
        let short = collect(VerifyingStream::new(chunks(&[b"hello"]), None, Some(11))).await;
        let err = short.last().unwrap().as_ref().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(
            UpstreamError::from_io(err),
            Some(&UpstreamError::Truncated {
                expected: 11,
                received: 5
            })
        );

        let long = collect(VerifyingStream::new(
            chunks(&[b"hello", b"world"]),
            None,
            Some(7),
        ))
        .await;
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
        let s = VerifyingStream::new(
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
