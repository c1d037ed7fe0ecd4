//! Hashing beside the byte stream instead of in front of it: the push path (`registry`) and the
//! upstream's verifying stream (`upstream`, under the edge's fills) hand each chunk to a
//! [`BackgroundHasher`] and go on reading the socket while SHA-256 runs on another core.
//!
//! In front of the bytes, a stream can never pass the hash rate of one core (SHA-256 with the
//! CPU's SHA instructions does ~1.2–1.5 GB/s here) and every socket read waits for the hash of
//! the one before. Beside them, the socket reads, the file writes and the hash overlap, and only
//! the verdict waits for the hash: the last chunk's.
//!
//! A leaf over `oci`'s [`Hasher`]: it uses nothing else of the crate.

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::oci::Hasher;

/// Bytes hashed inline before the hasher moves to its own thread: a small body (a manifest,
/// a config, a signature) costs less to hash than a thread hand-off.
const INLINE_BYTES: u64 = 1 << 20;
/// Chunks handed over together: the hashing thread wakes once per batch, not once per socket
/// read (hyper's chunks are often 8–64 KiB; a wake-up costs a few microseconds).
const BATCH_BYTES: usize = 256 * 1024;
/// Batches queued for the hashing thread before `update` waits for it: how far the stream may
/// run ahead of the hash (~2 MiB, held as the stream's own `Bytes`, not copies).
const QUEUED_BATCHES: usize = 8;

/// The hashing thread ended without a result (it panicked): the digest is unknown.
#[derive(Debug, thiserror::Error)]
#[error("the hashing task failed: {0}")]
pub struct HashingFailed(String);

/// A [`Hasher`] that runs on tokio's blocking pool once the bytes are many; see the module docs.
pub struct BackgroundHasher {
    state: State,
    /// Chunks not yet handed to the hashing thread.
    batch: Vec<Bytes>,
    batch_bytes: usize,
}

// One per body being hashed, mostly inline: boxing the hash state would cost an allocation
// each for nothing.
#[allow(clippy::large_enum_variant)]
enum State {
    Inline { hasher: Hasher, hashed: u64 },
    Offloaded(Offloaded),
}

struct Offloaded {
    queue: mpsc::Sender<Vec<Bytes>>,
    hashed: JoinHandle<Hasher>,
}

impl Offloaded {
    /// Moves `hasher` to a thread of the blocking pool, which hashes batches until the queue
    /// closes and then hands the hasher back.
    fn start(mut hasher: Hasher) -> Offloaded {
        let (queue, mut batches) = mpsc::channel::<Vec<Bytes>>(QUEUED_BATCHES);
        let hashed = tokio::task::spawn_blocking(move || {
            while let Some(batch) = batches.blocking_recv() {
                for chunk in batch {
                    hasher.update(&chunk);
                }
            }
            hasher
        });
        Offloaded { queue, hashed }
    }
}

impl BackgroundHasher {
    /// Continues `hasher` (fresh, or restored from a chunked upload's saved state).
    pub fn new(hasher: Hasher) -> BackgroundHasher {
        BackgroundHasher {
            state: State::Inline { hasher, hashed: 0 },
            batch: Vec::new(),
            batch_bytes: 0,
        }
    }

    /// Hashes `chunk` (a cheap clone of the bytes the caller keeps streaming): inline while
    /// the body is small, then on the hashing thread, waiting only while that thread is
    /// [`QUEUED_BATCHES`] behind.
    pub async fn update(&mut self, chunk: Bytes) {
        if let State::Inline { hasher, hashed } = &mut self.state {
            if *hashed < INLINE_BYTES {
                hasher.update(&chunk);
                *hashed += chunk.len() as u64;
                return;
            }
            // A clone of the hash state (a few hundred bytes), so the inline one needs no moving.
            self.state = State::Offloaded(Offloaded::start(hasher.clone()));
        }
        self.batch_bytes += chunk.len();
        self.batch.push(chunk);
        if self.batch_bytes >= BATCH_BYTES {
            self.send_batch().await;
        }
    }

    /// The hasher, once every byte handed to [`BackgroundHasher::update`] is in it: to finish
    /// into a digest or to save its state.
    pub async fn finish(mut self) -> Result<Hasher, HashingFailed> {
        self.send_batch().await;
        match self.state {
            State::Inline { hasher, .. } => Ok(hasher),
            State::Offloaded(Offloaded { queue, hashed }) => {
                drop(queue);
                hashed.await.map_err(|e| HashingFailed(e.to_string()))
            }
        }
    }

    async fn send_batch(&mut self) {
        let State::Offloaded(offloaded) = &self.state else {
            return;
        };
        if self.batch.is_empty() {
            return;
        }
        self.batch_bytes = 0;
        let batch = std::mem::take(&mut self.batch);
        // A closed queue means the thread died; `finish` reports it through its join handle.
        let _ = offloaded.queue.send(batch).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::{Algorithm, Digest};

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    async fn digest_in_chunks(bytes: &[u8], chunk: usize) -> Digest {
        let mut hasher = BackgroundHasher::new(Hasher::new(Algorithm::Sha256));
        for part in bytes.chunks(chunk) {
            hasher.update(Bytes::copy_from_slice(part)).await;
        }
        hasher.finish().await.unwrap().finish()
    }

    #[tokio::test]
    async fn small_and_large_bodies_hash_as_one_pass_does() {
        for (len, chunk) in [(0, 1), (5, 2), (3 << 20, 16 << 10), (5 << 20, 1 << 20)] {
            let bytes = pattern(len);
            assert_eq!(
                digest_in_chunks(&bytes, chunk).await,
                Digest::sha256_of(&bytes),
                "{len} bytes in chunks of {chunk}"
            );
        }
    }

    #[tokio::test]
    async fn a_restored_state_continues_across_the_thread_hand_off() {
        let bytes = pattern(4 << 20);
        let (head, tail) = bytes.split_at(1000);
        let mut first = Hasher::new(Algorithm::Sha256);
        first.update(head);
        let restored = Hasher::restore_state(&first.save_state()).unwrap();
        let mut hasher = BackgroundHasher::new(restored);
        for part in tail.chunks(300_000) {
            hasher.update(Bytes::copy_from_slice(part)).await;
        }
        let hasher = hasher.finish().await.unwrap();
        assert_eq!(hasher.algorithm(), Algorithm::Sha256);
        assert_eq!(hasher.finish(), Digest::sha256_of(&bytes));
    }
}
