//! Request coalescing for blob misses: however many clients ask for the same uncached blob,
//! one fetch goes to the origin, and every client is streamed the bytes as they arrive.
//!
//! The fetch runs in its own task (a client hanging up does not cancel it for the others).
//! The origin's bytes go three ways at once, none waiting for another:
//!
//! - to the readers, as the origin's own `Bytes` ([`Arrivals`]): a client keeping up with the
//!   origin gets each chunk the moment it arrived, without a copy or a file read;
//! - to the hash, on another core (the upstream's verifying stream, `digesting`), which gates
//!   only the withheld last byte;
//! - to a temp file in the cache (`fileio`'s double-buffered block writer, each block's
//!   write-back started at once), committed once verified. Readers that fall behind, or start
//!   at an offset the memory no longer holds (`Range`), read the file through a shared
//!   descriptor with positioned reads, and may keep reading after it is renamed into the cache.
//!
//! Guarantee: no reader is ever handed the final byte of its response before the whole blob
//! was verified. On a digest mismatch or a broken origin every reader gets an error instead,
//! which aborts the client connection — never a silently truncated or corrupted body.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::watch;

use super::cache::DiskCache;
use crate::fileio::{self, BlockWriter, ChunkReader, ReadBudget};
use crate::oci::Digest;
use crate::telemetry::metrics;
use crate::upstream::{FetchedBlob, UpstreamError};

/// Bytes written to the temp file (and announced to readers) per block: smaller than the
/// filesystem store's 1 MiB, because coalesced readers follow the fill block by block and a
/// slow origin should not hold their bytes back for long.
const WRITE_STEP: usize = 256 * 1024;
/// Bytes a fill's reader that fell behind the memory reads from the temp file at a time.
const READ_STEP: u64 = 128 * 1024;
/// Read buffers shared by the downloads of cached blobs: each reads `32 MiB / downloads in
/// flight` at a time (counted when it starts), 128–512 KiB. A download holds about one read
/// while pingora writes it, so a few downloads get 512 KiB reads (a third less CPU per GiB than
/// 128 KiB ones: docs/benchmarks.md) and hundreds stay within ~80 MiB of buffers (Σ 32 MiB / k
/// over the downloads started, 128 KiB each beyond 256).
static CACHED_READS: ReadBudget = ReadBudget::new(32 * 1024 * 1024, 128 * 1024, 512 * 1024);

/// Bytes already in the temp file that a fill keeps in memory too, for readers slightly behind
/// the origin; the ones not yet in the file are always kept (at most two blocks and a chunk,
/// since the fill waits for its writer).
const RETAINED_BYTES: usize = 1024 * 1024;

/// Progress of one fill, broadcast to its readers.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Blob size, once the origin answered.
    pub total: Option<u64>,
    /// Bytes arrived from the origin, readable from memory or from the temp file.
    pub received: u64,
    /// `Some` when the fill ended: `Ok` = every byte verified (the cache commit follows).
    pub outcome: Option<Result<(), Arc<FillError>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum FillError {
    #[error("the origin does not have this blob")]
    NotFound,
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("edge cache: {0}")]
    Io(#[from] io::Error),
}

/// One fetch in flight.
pub struct Fill {
    reader: ChunkReader,
    arrivals: Arc<Mutex<Arrivals>>,
    progress: watch::Receiver<Progress>,
}

/// The bytes of a fill held in memory: every arrived byte not yet in the temp file, and the
/// latest [`RETAINED_BYTES`] of those that are. Invariant: every byte below `received` is in
/// `chunks` or below `written` (a chunk leaves only once the file holds it).
#[derive(Default)]
struct Arrivals {
    /// `(offset, bytes)`, contiguous and in order.
    chunks: VecDeque<(u64, Bytes)>,
    held: usize,
    /// Where the temp file's bytes end.
    written: u64,
}

/// Where a reader finds the bytes at its position.
enum Located {
    Memory(Bytes),
    /// In the temp file only: this many of them.
    File(u64),
}

impl Arrivals {
    /// `chunk` arrived at `offset` (right after the previous one).
    fn push(&mut self, offset: u64, chunk: Bytes) {
        self.held += chunk.len();
        self.chunks.push_back((offset, chunk));
    }

    /// The temp file holds the bytes up to `written`: the oldest of them may leave memory.
    fn wrote(&mut self, written: u64) {
        self.written = written;
        while self.held > RETAINED_BYTES
            && let Some((offset, chunk)) = self.chunks.front()
            && offset + chunk.len() as u64 <= written
        {
            self.held -= chunk.len();
            self.chunks.pop_front();
        }
    }

    /// The bytes from `pos` on, short of `end` (which they must not pass): the origin's own
    /// while memory holds them, else how many the file has.
    fn locate(&self, pos: u64, end: u64) -> io::Result<Located> {
        let index = self
            .chunks
            .partition_point(|(offset, chunk)| offset + chunk.len() as u64 <= pos);
        if let Some((offset, chunk)) = self.chunks.get(index)
            && *offset <= pos
        {
            let from = (pos - offset) as usize;
            let to = (end - offset).min(chunk.len() as u64) as usize;
            return Ok(Located::Memory(chunk.slice(from..to)));
        }
        match end.min(self.written).checked_sub(pos) {
            Some(len) if len > 0 => Ok(Located::File(len.min(READ_STEP))),
            // The invariant rules it out; a stream that would stall instead fails.
            _ => Err(io::Error::other(
                "fill: bytes neither in memory nor in the file",
            )),
        }
    }
}

impl Fill {
    /// Waits until the origin answered; the blob's size, or why there is none.
    pub async fn size(&self) -> Result<u64, Arc<FillError>> {
        let mut rx = self.progress.clone();
        let state = rx
            .wait_for(|p| p.total.is_some() || p.outcome.is_some())
            .await
            .map_err(|_| Arc::new(FillError::Io(io::Error::other("fill task vanished"))))?
            .clone();
        match (state.total, state.outcome) {
            (Some(total), _) => Ok(total),
            (None, Some(Err(e))) => Err(e),
            (None, _) => Err(Arc::new(FillError::Io(io::Error::other(
                "fill ended without a size",
            )))),
        }
    }

    /// Whether every byte arrived and matched the digest.
    pub fn is_verified(&self) -> bool {
        matches!(self.progress.borrow().outcome, Some(Ok(())))
    }

    /// Streams `range` of the blob as it arrives. The response's last byte is held back until
    /// the blob is verified; a failed fill ends the stream with an error.
    pub fn read(
        &self,
        range: Range<u64>,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let state = (
            self.reader.clone(),
            Arc::clone(&self.arrivals),
            self.progress.clone(),
            range.start,
        );
        futures_util::stream::unfold(state, move |(reader, arrivals, mut rx, pos)| {
            let end = range.end;
            async move {
                if pos >= end {
                    return None;
                }
                let read = match readable_end(&mut rx, pos, end).await {
                    Ok(readable) => locked(&arrivals).locate(pos, readable),
                    Err(e) => Err(e),
                };
                let read = match read {
                    Ok(Located::Memory(bytes)) => Ok(bytes),
                    // Bounded by READ_STEP, so the cast cannot truncate.
                    Ok(Located::File(len)) => reader.read_at(pos, len as usize).await,
                    Err(e) => Err(e),
                };
                match read {
                    Ok(bytes) => {
                        let next = pos + bytes.len() as u64;
                        Some((Ok(bytes), (reader, arrivals, rx, next)))
                    }
                    Err(e) => Some((Err(e), (reader, arrivals, rx, end))),
                }
            }
        })
    }
}

/// Waits until bytes past `pos` may be handed out, and says where they end: at `end` once the
/// blob is verified, else one byte short of it (the withheld last byte) or where the arrived
/// bytes end. A failed fill is an error.
async fn readable_end(rx: &mut watch::Receiver<Progress>, pos: u64, end: u64) -> io::Result<u64> {
    loop {
        let readable = {
            let p = rx.borrow_and_update();
            match &p.outcome {
                Some(Err(e)) => return Err(io::Error::other(e.to_string())),
                Some(Ok(())) => end,
                None => p.received.min(end.saturating_sub(1)),
            }
        };
        if readable > pos {
            return Ok(readable);
        }
        if rx.changed().await.is_err() {
            return Err(io::Error::other("fill task vanished"));
        }
    }
}

fn locked(arrivals: &Mutex<Arrivals>) -> std::sync::MutexGuard<'_, Arrivals> {
    // Each change to the chunks is one push or pop: a panicking holder leaves them consistent.
    arrivals
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Streams `range` of a complete file (a cached blob). An eviction meanwhile does not matter:
/// the open descriptor keeps the bytes readable. Read in steps of the shared budget
/// ([`CACHED_READS`]), not mapped (`fileio::mapped_stream`): at 128 KiB a map and unmap per
/// window cost more CPU per GiB than the copy they save (docs/benchmarks.md), and mapped
/// windows would count against the budget all the same.
pub fn file_range_stream(
    path: PathBuf,
    range: Range<u64>,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let (share, step) = CACHED_READS.start();
    let opened = async move {
        tokio::task::spawn_blocking(move || File::open(path))
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)))
    };
    share.attach(
        futures_util::stream::once(opened).flat_map(move |opened| match opened {
            Ok(file) => fileio::range_stream(Arc::new(file), range.clone(), step).left_stream(),
            Err(e) => futures_util::stream::once(async move { Err(e) }).right_stream(),
        }),
    )
}

/// The fills in flight, by digest.
#[derive(Default)]
pub struct Fills {
    inflight: Mutex<HashMap<Digest, Arc<Fill>>>,
}

impl Fills {
    /// Joins the fill for `digest`, or starts one with `fetch` (called at most once per fill).
    /// Returns the fill and whether this caller started it.
    pub fn join_or_start<F>(
        self: &Arc<Self>,
        digest: &Digest,
        cache: &Arc<DiskCache>,
        fetch: F,
    ) -> io::Result<(Arc<Fill>, bool)>
    where
        F: Future<Output = Result<Option<FetchedBlob>, UpstreamError>> + Send + 'static,
    {
        let mut inflight = self.lock();
        if let Some(fill) = inflight.get(digest) {
            metrics().edge.coalesced_waiters.inc();
            return Ok((Arc::clone(fill), false));
        }
        let (temp, file) = cache.temp_file()?;
        let file = Arc::new(file);
        let (tx, rx) = watch::channel(Progress::default());
        let arrivals = Arc::new(Mutex::new(Arrivals::default()));
        let fill = Arc::new(Fill {
            reader: ChunkReader::new(Arc::clone(&file)),
            arrivals: Arc::clone(&arrivals),
            progress: rx,
        });
        inflight.insert(digest.clone(), Arc::clone(&fill));
        drop(inflight);
        let job = Job {
            fills: Arc::clone(self),
            cache: Arc::clone(cache),
            digest: digest.clone(),
            temp,
            file,
            arrivals,
            tx,
        };
        tokio::spawn(job.run(fetch));
        Ok((fill, true))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<Fill>>> {
        self.inflight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The task behind one fill.
struct Job {
    fills: Arc<Fills>,
    cache: Arc<DiskCache>,
    digest: Digest,
    temp: PathBuf,
    file: Arc<File>,
    arrivals: Arc<Mutex<Arrivals>>,
    tx: watch::Sender<Progress>,
}

impl Job {
    async fn run<F>(self, fetch: F)
    where
        F: Future<Output = Result<Option<FetchedBlob>, UpstreamError>>,
    {
        match self.fetch_into_temp(fetch).await {
            Ok(size) => {
                // The bytes are verified: release every reader's last byte now. Making the cache
                // entry durable (fsync, rename) is the cache's business, not the clients'.
                self.tx.send_modify(|p| p.outcome = Some(Ok(())));
                let (cache, temp, digest) = (
                    Arc::clone(&self.cache),
                    self.temp.clone(),
                    self.digest.clone(),
                );
                let file = Arc::clone(&self.file);
                let committed = tokio::task::spawn_blocking(move || {
                    file.sync_data()?;
                    cache.commit_blob(&temp, &digest, size)
                })
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)));
                if let Err(e) = committed {
                    let _ = std::fs::remove_file(&self.temp);
                    tracing::warn!(digest = %self.digest, error = %e, "verified blob could not be cached");
                }
            }
            Err(e) => {
                let _ = std::fs::remove_file(&self.temp);
                tracing::warn!(digest = %self.digest, error = %e, "blob fill failed; nothing cached");
                self.tx.send_modify(|p| p.outcome = Some(Err(Arc::new(e))));
            }
        }
        // Leave the in-flight map only after the commit, so a newcomer finds either this fill
        // or the cached blob, never neither.
        self.fills.lock().remove(&self.digest);
    }

    async fn fetch_into_temp<F>(&self, fetch: F) -> Result<u64, FillError>
    where
        F: Future<Output = Result<Option<FetchedBlob>, UpstreamError>>,
    {
        let blob = fetch.await?.ok_or(FillError::NotFound)?;
        let total = blob.content_length.ok_or_else(|| {
            FillError::Upstream(UpstreamError::Protocol(
                "the origin sent a blob without Content-Length".into(),
            ))
        })?;
        self.tx.send_modify(|p| p.total = Some(total));
        let mut stream = blob.stream;
        let arrivals = Arc::clone(&self.arrivals);
        let mut writer = BlockWriter::new(Arc::clone(&self.file), 0, WRITE_STEP)
            .on_written(move |written| locked(&arrivals).wrote(written));
        let mut received = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| match UpstreamError::from_io(&e) {
                Some(upstream) => FillError::Upstream(upstream.clone()),
                None => FillError::Io(e),
            })?;
            // The readers first: the chunk is theirs before the writer has it.
            locked(&self.arrivals).push(received, chunk.clone());
            received += chunk.len() as u64;
            self.tx.send_modify(|p| p.received = received);
            writer.write(chunk).await?;
        }
        let written = writer.flush().await?;
        // The verifying stream already checked length and digest; this guards the arithmetic.
        if written != total {
            return Err(FillError::Upstream(UpstreamError::Truncated {
                expected: total,
                received: written,
            }));
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_reads_are_512_kib_for_a_few_downloads_and_128_kib_for_hundreds() {
        const KIB: usize = 1024;
        assert_eq!(CACHED_READS.step(1), 512 * KIB);
        assert_eq!(CACHED_READS.step(64), 512 * KIB);
        assert_eq!(CACHED_READS.step(256), 128 * KIB);
    }
}
