//! Positioned file I/O for blob bodies, shared by the filesystem store (`storage::fs`) and the
//! edge's disk cache (`edge::fill`, `edge::cache`):
//!
//! - [`mapped_stream`]: a published (immutable) file's bytes as mapped windows, one copy on
//!   their way out (`mapped`, the crate's one `unsafe` module, says why that is sound);
//! - [`ChunkReader`] / [`range_stream`]: reads at any offset into a few reused buffers that are
//!   never zeroed, handed on as `Bytes` without a further copy (for files still being written);
//! - [`ReadBudget`]: the read step (or mapped window) of each stream, a budget shared out among
//!   the streams in flight, so a few downloads read large steps and many stay within memory;
//! - [`BlockWriter`]: a double-buffered writer that starts each block's write-back at once;
//! - [`publish`]: rename into place, made durable by fsyncing the directories (also in two
//!   halves, [`rename_into`] and [`sync_parents`], for a caller with work between them), and
//!   [`DurableDirs`], which skips the fsyncs of directories this process already made durable.
//!
//! A leaf: it uses nothing else of the crate. Every call that touches the disk runs on tokio's
//! blocking pool, except [`publish`] and the directory calls, which are blocking themselves.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures_util::Stream;
use tokio::task::JoinHandle;

mod budget;
mod mapped;
pub use budget::{ReadBudget, ReadShare};
pub use mapped::mapped_stream;

/// How many idle buffers a reader keeps: hyper holds one or two chunks while the next is read.
const POOLED_CHUNKS: usize = 3;

/// Idle chunk buffers of one reader.
type ChunkPool = Arc<Mutex<Vec<Vec<u8>>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A pool of spare buffers, or a set of directories known durable, holds no invariant a
    // panicking holder could break.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn join_error(e: tokio::task::JoinError) -> io::Error {
    io::Error::other(e)
}

/// A chunk handed out as `Bytes`: `buf[..len]`. The rest of `buf` holds bytes of earlier reads,
/// kept initialised so the buffer never needs zeroing. Back to its reader's pool when the last
/// `Bytes` over it is dropped (once hyper has written it).
struct PooledChunk {
    buf: Vec<u8>,
    len: usize,
    pool: ChunkPool,
}

impl AsRef<[u8]> for PooledChunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for PooledChunk {
    fn drop(&mut self) {
        let mut pool = lock(&self.pool);
        if pool.len() < POOLED_CHUNKS {
            pool.push(std::mem::take(&mut self.buf));
        }
    }
}

/// Reads chunks of one file at any offset, so several readers may share one descriptor (and
/// keep reading after the file is renamed or unlinked).
///
/// Each chunk is read straight into the buffer that becomes the `Bytes` handed on: every byte
/// is copied once (page cache to chunk) before the socket write. A buffer grows by reading into
/// its spare capacity (`pread` into uninitialised memory, safely through rustix), so it is never
/// zeroed, and a reader reuses a few buffers instead of allocating one per chunk (an allocation
/// this big would often be freshly mapped memory, a page fault per 4 KiB).
#[derive(Clone)]
pub struct ChunkReader {
    file: Arc<File>,
    pool: ChunkPool,
}

impl ChunkReader {
    pub fn new(file: Arc<File>) -> ChunkReader {
        ChunkReader {
            file,
            pool: ChunkPool::default(),
        }
    }

    /// Exactly `len` bytes at `offset`. A file that ends first fails with `UnexpectedEof`: a
    /// response must never be a silently short body.
    pub async fn read_at(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let buf = lock(&self.pool).pop().unwrap_or_default();
        let file = Arc::clone(&self.file);
        let buf = tokio::task::spawn_blocking(move || fill_at(&file, buf, offset, len))
            .await
            .map_err(join_error)??;
        Ok(Bytes::from_owner(PooledChunk {
            buf,
            len,
            pool: Arc::clone(&self.pool),
        }))
    }
}

/// Reads `len` bytes at `offset` into `buf[..len]`: over the bytes `buf` already holds, then
/// into its spare capacity (which may take a few bytes more, kept for the next use).
fn fill_at(file: &File, mut buf: Vec<u8>, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let reused = buf.len().min(len);
    file.read_exact_at(&mut buf[..reused], offset)?;
    if buf.capacity() < len {
        buf.reserve_exact(len - buf.len());
    }
    while buf.len() < len {
        let at = offset + buf.len() as u64;
        match rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), at) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file is shorter than expected",
                ));
            }
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(buf)
}

/// Streams `range` of `file` in chunks of at most `chunk` bytes, one blocking-pool hop each.
/// A file shorter than the range fails the stream with `UnexpectedEof` instead of ending it.
pub fn range_stream(
    file: Arc<File>,
    range: Range<u64>,
    chunk: usize,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let end = range.end;
    futures_util::stream::try_unfold(
        (ChunkReader::new(file), range.start),
        move |(reader, pos)| async move {
            if pos >= end {
                return Ok(None);
            }
            // Bounded by `chunk`, so the cast cannot truncate.
            let len = (end - pos).min(chunk as u64) as usize;
            let bytes = reader.read_at(pos, len).await?;
            Ok(Some((bytes, (reader, pos + len as u64))))
        },
    )
}

/// Called on the blocking pool with the offset the file's bytes reach after each block.
type OnWritten = Arc<dyn Fn(u64) + Send + Sync>;

/// Writes a stream of chunks to a file at increasing offsets, double-buffered: while one block
/// is written on the blocking pool, the next one fills. Each block's write-back starts as soon
/// as it is written (see [`start_writeback`]). Blocking tasks hold their own handle on the
/// file, so a writer dropped mid-block lets that last write land before the file closes.
pub struct BlockWriter {
    /// `None` for good after a failed write: later bytes would land behind a hole.
    file: Option<Arc<File>>,
    /// Bytes per write: the caller's trade between blocking-pool hops and how soon a block's
    /// bytes are in the file.
    block: usize,
    /// File offset where the bytes handed to the blocking pool end.
    pos: u64,
    buf: Vec<u8>,
    /// The buffer of the last finished write, reused to avoid an allocation per block.
    spare: Option<Vec<u8>>,
    in_flight: Option<JoinHandle<io::Result<Vec<u8>>>>,
    on_written: Option<OnWritten>,
}

impl BlockWriter {
    /// Writes from `offset` on, in blocks of `block` bytes.
    pub fn new(file: Arc<File>, offset: u64, block: usize) -> BlockWriter {
        BlockWriter {
            file: Some(file),
            block: block.max(1),
            pos: offset,
            buf: Vec::new(),
            spare: None,
            in_flight: None,
            on_written: None,
        }
    }

    /// Calls `written(end)` each time a block is in the file (the page cache, not yet the
    /// disk), `end` being the offset its bytes reach: readers of the file may read up to it.
    pub fn on_written(mut self, written: impl Fn(u64) + Send + Sync + 'static) -> BlockWriter {
        self.on_written = Some(Arc::new(written));
        self
    }

    pub async fn write(&mut self, mut chunk: Bytes) -> io::Result<()> {
        while !chunk.is_empty() {
            // A chunk of a block or more is written as it is, not copied.
            if self.buf.is_empty() && chunk.len() >= self.block {
                return self.submit(chunk).await;
            }
            if self.buf.capacity() < self.block {
                self.buf
                    .reserve_exact(self.block.saturating_sub(self.buf.len()));
            }
            let n = self.block.saturating_sub(self.buf.len()).min(chunk.len());
            self.buf.extend_from_slice(&chunk.split_to(n));
            if self.buf.len() >= self.block {
                self.submit(Bytes::new()).await?;
            }
        }
        Ok(())
    }

    /// Writes out what is buffered and waits for every write; the offset the bytes reach.
    pub async fn flush(&mut self) -> io::Result<u64> {
        if !self.buf.is_empty() {
            self.submit(Bytes::new()).await?;
        }
        self.settle().await?;
        Ok(self.pos)
    }

    /// [`BlockWriter::flush`], then `fdatasync`: the bytes are on the disk. The writer takes
    /// no more bytes after it.
    pub async fn finish(&mut self) -> io::Result<()> {
        self.flush().await?;
        let file = self.file.take().ok_or_else(failed_earlier)?;
        tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .map_err(join_error)?
    }

    /// Waits for the block write in flight, if any, and keeps its buffer for the next block.
    async fn settle(&mut self) -> io::Result<()> {
        let Some(job) = self.in_flight.take() else {
            return Ok(());
        };
        match job.await.map_err(join_error).and_then(|written| written) {
            Ok(mut spare) => {
                spare.clear();
                self.spare = Some(spare);
                Ok(())
            }
            Err(e) => {
                self.file = None;
                Err(e)
            }
        }
    }

    /// Starts writing the buffered block followed by `tail` (a chunk too big to be worth
    /// copying), then its write-back.
    async fn submit(&mut self, tail: Bytes) -> io::Result<()> {
        self.settle().await?;
        let file = Arc::clone(self.file.as_ref().ok_or_else(failed_earlier)?);
        let next = self.spare.take().unwrap_or_default();
        let block = std::mem::replace(&mut self.buf, next);
        let offset = self.pos;
        let len = (block.len() + tail.len()) as u64;
        self.pos += len;
        let on_written = self.on_written.clone();
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            file.write_all_at(&block, offset)?;
            file.write_all_at(&tail, offset + block.len() as u64)?;
            start_writeback(&file, offset, len);
            if let Some(written) = on_written {
                written(offset + len);
            }
            Ok(block)
        }));
        Ok(())
    }
}

fn failed_earlier() -> io::Error {
    io::Error::other("a write to this file failed earlier")
}

/// Starts writing `len` bytes at `offset` back to the disk, without waiting for it.
///
/// The kernel would otherwise start write-back only at the final `fdatasync` (or at its
/// dirty-memory threshold, which one blob rarely reaches), so that call would wait for all the
/// bytes to reach the disk after the last one arrived; with each block's write-back started as
/// soon as it is written, it waits for the tail only. A hint: durability comes from that
/// `fdatasync` alone, so a failure here is ignored (this call does not consume write-back
/// errors either: the `fdatasync` reports them).
///
/// `sync_file_range(SYNC_FILE_RANGE_WRITE)` is the call meant for this, but no safe wrapper
/// offers it (nix 0.31, rustix 1.1) and the crate forbids `unsafe`. `posix_fadvise(DONTNEED)`
/// starts the same write-back (Linux's `generic_fadvise` calls `__filemap_fdatawrite_range`
/// with `WB_SYNC_NONE`, as `sync_file_range` does), then drops the range's pages that are
/// already clean: right after writing them, none or few are (they are dirty or under
/// write-back), so the bytes stay in the page cache for readers. PostgreSQL's `pg_flush_data`
/// uses it the same way where `sync_file_range` is missing.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    use nix::libc::off_t;

    // A zero length would mean "to the end of the file".
    if len == 0 {
        return;
    }
    if let (Ok(offset), Ok(len)) = (off_t::try_from(offset), off_t::try_from(len)) {
        let _ = posix_fadvise(file, offset, len, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
    }
}

/// Elsewhere the write-back starts when the kernel sees fit; the `fdatasync` is correct either
/// way.
#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

/// Makes a directory's entries (a rename, a new child) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Renames the (already fsynced) file `from` to `to`, creating `to`'s missing parent
/// directories, and makes the rename durable ([`sync_parents`]). `to` must lie under `root`.
/// Blocking.
pub fn publish(from: &Path, to: &Path, root: &Path) -> io::Result<()> {
    check_under(to, root)?;
    rename_into(from, to)?;
    sync_parents(to, root)
}

/// The first half of [`publish`]: `to`'s parent directories created, the rename done, nothing
/// durable yet.
pub fn rename_into(from: &Path, to: &Path) -> io::Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::rename(from, to)
}

/// The second half of [`publish`]: fsyncs every directory from `to`'s parent up to and
/// including `root`, so a rename into it and the directories just created survive a crash
/// (fsync of an unchanged directory is nearly free).
pub fn sync_parents(to: &Path, root: &Path) -> io::Result<()> {
    for dir in check_under(to, root)?.ancestors() {
        sync_dir(dir)?;
        if dir == root {
            break;
        }
    }
    Ok(())
}

/// Publishes into a store's fan-out directories (`blobs/<algorithm>/<xx>/`), fsyncing the
/// directories above the target's own only while this process has not yet made that chain
/// durable: once it has, a later rename into the same directory changes no entry above it, and
/// the two fsyncs it would repeat (~60 µs here) are an eighth of a small push's syncs.
///
/// Sound only for directories that nothing removes while the process runs (the stores never
/// remove their fan-out directories). A directory this publish had to create again (removed
/// by hand) is recognised, and its chain is synced anew.
#[derive(Debug)]
pub struct DurableDirs {
    root: PathBuf,
    /// Directories whose chain of entries up to `root` this process fsynced after they existed.
    known: Mutex<HashSet<PathBuf>>,
}

/// How far a [`DurableDirs::publish`] fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// The target's directory only: its chain was known durable.
    Directory,
    /// Every directory up to the root ([`sync_parents`]).
    Chain,
}

impl DurableDirs {
    pub fn new(root: PathBuf) -> DurableDirs {
        DurableDirs {
            root,
            known: Mutex::new(HashSet::new()),
        }
    }

    /// [`publish`] under this root, syncing no more than the rename needs to survive a crash.
    pub fn publish(&self, from: &Path, to: &Path) -> io::Result<Synced> {
        let dir = check_under(to, &self.root)?;
        let created = rename_creating(from, to)?;
        if !created && lock(&self.known).contains(dir) {
            sync_dir(dir)?;
            return Ok(Synced::Directory);
        }
        sync_parents(to, &self.root)?;
        lock(&self.known).insert(dir.to_path_buf());
        Ok(Synced::Chain)
    }
}

/// Renames `from` to `to`, creating `to`'s parent directories only when the rename finds
/// them missing; says whether it had to.
fn rename_creating(from: &Path, to: &Path) -> io::Result<bool> {
    match fs::rename(from, to) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            rename_into(from, to)?;
            Ok(true)
        }
        done => done.map(|()| false),
    }
}

/// `to`'s parent, if it lies under `root`.
fn check_under<'a>(to: &'a Path, root: &Path) -> io::Result<&'a Path> {
    to.parent()
        .filter(|parent| parent.starts_with(root))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not under {}", to.display(), root.display()),
            )
        })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use futures_util::StreamExt;

    use super::*;

    /// Bytes that differ from their neighbours at every offset a chunk could start at.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, Arc<File>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, bytes).unwrap();
        let file = File::options().read(true).write(true).open(path).unwrap();
        (dir, Arc::new(file))
    }

    async fn collect(stream: impl Stream<Item = io::Result<Bytes>>) -> Vec<io::Result<Bytes>> {
        stream.collect().await
    }

    #[tokio::test]
    async fn reads_are_exact_at_any_offset_and_reuse_buffers() {
        let bytes = pattern(300_000);
        let (_dir, file) = file_with(&bytes);
        let reader = ChunkReader::new(file);
        // Big, then small, then big again: a reused buffer holds stale bytes past the chunk.
        for (offset, len) in [(0, 100_000), (7, 10), (123_457, 150_000), (299_999, 1)] {
            let chunk = reader.read_at(offset, len).await.unwrap();
            assert_eq!(chunk.len(), len);
            assert!(chunk[..] == bytes[offset as usize..offset as usize + len]);
            drop(chunk);
        }
        assert!(
            !lock(&reader.pool).is_empty(),
            "buffers go back to the pool"
        );
        assert!(reader.read_at(5, 0).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_read_past_the_end_fails_instead_of_coming_back_short() {
        let (_dir, file) = file_with(&pattern(1000));
        let reader = ChunkReader::new(file);
        let err = reader.read_at(900, 101).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        // Also when a reused buffer already holds enough bytes from an earlier read.
        drop(reader.read_at(0, 1000).await.unwrap());
        let err = reader.read_at(500, 600).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn range_streams_are_chunked_exact_and_fail_on_a_short_file() {
        let bytes = pattern(10_000);
        let (_dir, file) = file_with(&bytes);
        let chunks = collect(range_stream(Arc::clone(&file), 1_001..9_999, 4096)).await;
        let lens: Vec<usize> = chunks.iter().map(|c| c.as_ref().unwrap().len()).collect();
        assert_eq!(lens, [4096, 4096, 806]);
        let got: Vec<u8> = chunks.into_iter().flat_map(|c| c.unwrap()).collect();
        assert!(got == bytes[1_001..9_999]);

        let results = collect(range_stream(file, 5_000..12_000, 4096)).await;
        assert_eq!(results.len(), 2, "the stream ends after its error");
        assert!(results[0].is_ok());
        let err = results[1].as_ref().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn block_writer_round_trips_and_reports_each_block() {
        let (dir, file) = file_with(b"keep");
        let reported = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&reported);
        let mut writer = BlockWriter::new(Arc::clone(&file), 4, 1000).on_written(move |end| {
            // Blocks land in order, each reaching further.
            assert!(seen.fetch_max(end, Ordering::SeqCst) < end);
        });
        // Pieces straddling blocks, and one bigger than a block (written without a copy).
        let bytes = pattern(7_777);
        for piece in [&bytes[..333], &bytes[333..2_900], &bytes[2_900..]] {
            writer.write(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        assert_eq!(writer.flush().await.unwrap(), 4 + 7_777);
        assert_eq!(reported.load(Ordering::SeqCst), 4 + 7_777);
        writer.finish().await.unwrap();
        let written = fs::read(dir.path().join("f")).unwrap();
        assert_eq!(&written[..4], b"keep");
        assert!(written[4..] == bytes[..]);
    }

    #[tokio::test]
    async fn a_failed_block_write_fails_every_later_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("read-only");
        fs::write(&path, b"").unwrap();
        let file = Arc::new(File::open(&path).unwrap());
        let mut writer = BlockWriter::new(file, 0, 4);
        // The first block's write fails on the blocking pool; the next submit reports it.
        writer.write(Bytes::from_static(b"abcd")).await.unwrap();
        assert!(writer.write(Bytes::from_static(b"efgh")).await.is_err());
        assert!(writer.write(Bytes::from_static(b"ijkl")).await.is_err());
        assert!(writer.finish().await.is_err());
    }

    /// A temporary tree: a `blobs` root to publish under, and a temp file's path beside it.
    fn tree_with_root() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("blobs");
        fs::create_dir(&root).unwrap();
        let temp = dir.path().join("temp");
        (dir, root, temp)
    }

    #[test]
    fn publish_renames_into_new_directories_under_root_only() {
        let (dir, root, temp) = tree_with_root();
        fs::write(&temp, b"blob").unwrap();
        let target = root.join("sha256/ab/abcd");
        publish(&temp, &target, &root).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"blob");
        assert!(!temp.exists());

        fs::write(&temp, b"stray").unwrap();
        let outside = dir.path().join("elsewhere/x");
        let err = publish(&temp, &outside, &root).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(temp.exists() && !outside.exists());
    }

    #[test]
    fn durable_dirs_sync_a_chain_once_and_again_after_a_restart_or_a_removal() {
        let (dir, root, temp) = tree_with_root();
        let publish_as = |dirs: &DurableDirs, name: &str| {
            fs::write(&temp, name).unwrap();
            let target = root.join("sha256/ab").join(name);
            let synced = dirs.publish(&temp, &target).unwrap();
            assert_eq!(fs::read(&target).unwrap(), name.as_bytes());
            synced
        };
        let dirs = DurableDirs::new(root.clone());
        assert_eq!(publish_as(&dirs, "ab1"), Synced::Chain, "a new directory");
        assert_eq!(publish_as(&dirs, "ab2"), Synced::Directory, "a known one");
        // Another process (a restart) knows nothing of what the first made durable.
        let restarted = DurableDirs::new(root.clone());
        assert_eq!(
            publish_as(&restarted, "ab3"),
            Synced::Chain,
            "after a restart"
        );
        assert_eq!(publish_as(&restarted, "ab4"), Synced::Directory);
        // Removed by hand: the publish creates it again, and syncs the chain again.
        fs::remove_dir_all(root.join("sha256")).unwrap();
        assert_eq!(
            publish_as(&restarted, "ab5"),
            Synced::Chain,
            "after a removal"
        );

        fs::write(&temp, b"stray").unwrap();
        let err = dirs.publish(&temp, &dir.path().join("elsewhere/x"));
        assert_eq!(err.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        fs::remove_file(&temp).unwrap();
        let err = dirs.publish(&temp, &root.join("sha256/ab/missing"));
        assert_eq!(err.unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
