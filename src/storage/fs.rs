//! `FsBlobStore`: the [`BlobStore`] on a local directory tree, laid out as the `storage` module
//! doc describes (`blobs/<algorithm>/<xx>/<hex>`, `uploads/<id>/data`, and `uploads/.held/<id>`
//! for a small whole blob between its creation and its rename, within one blocking task).
//!
//! Owns crash safety on a POSIX filesystem: a blob appears under `blobs/` only by `rename` of an
//! fsynced upload file, so a kill at any instant leaves the whole blob or nothing. Paths are
//! built only from a validated [`Digest`] or [`UploadId`], never from raw request strings.
//!
//! Every filesystem call runs on tokio's blocking pool (`tokio::fs` or `spawn_blocking`). Blob
//! bodies are read and written through `fileio`, the positioned I/O the edge's cache shares.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use super::{BlobMeta, BlobStore, BlobStoreError, BlobWriter, ByteStream, Result, UploadWriter};
use crate::fileio::{self, BlockWriter, DurableDirs, ReadBudget};
use crate::oci::{Algorithm, Digest, UploadId};

const BLOBS: &str = "blobs";
const UPLOADS: &str = "uploads";
const DATA: &str = "data";
/// Under `uploads/`: the files of held whole blobs while their publish writes them (see
/// [`HELD_BLOB`]). Not an upload id, so `list_uploads` never sees it.
const HELD: &str = ".held";

/// Size of the blocks the upload writer hands to the blocking pool. Hyper frames are 16–64 KiB;
/// one blocking task per frame would cap pushes far below disk speed.
const WRITE_BLOCK: usize = 1 << 20;

/// A whole blob (`receive_blob`) up to this size stays in memory until its publish, which then
/// creates, writes, syncs and renames its file in one blocking task: a signature, an SBOM or a
/// config costs one hop to the blocking pool instead of four, and no upload directory is made
/// and removed for it. The same bound as a writer's block buffer, so it holds no more memory.
const HELD_BLOB: usize = WRITE_BLOCK;

/// Chunk size of blob streams. Each chunk costs a blocking-pool hop and a pass through hyper:
/// with 8 concurrent pulls of a cached 1 GiB blob, 64–128 KiB chunks cost 30–50 % more CPU per
/// GiB than 256 KiB–1 MiB, which all cost the same. A stream holds about four of them at most
/// (the one being read, the ones hyper has not written yet, the idle ones in its pool), ~2 MiB.
const READ_CHUNK: usize = 512 * 1024;

/// Windows of committed blobs' mapped streams: each costs a blocking-pool hop, a map with its
/// populate, and an unmap, so fewer and larger windows cost less CPU per GiB (2 MiB windows
/// against 512 KiB ones with 8 clients: −30 %, −4 % pinned to one core; docs/benchmarks.md). A
/// stream keeps about three mapped at once, and mapped page-cache pages count in the process's
/// resident set, so the window is `32 MiB / blob streams in flight` (counted when one starts),
/// 512 KiB–2 MiB: up to 16 downloads get 2 MiB windows, and from 64 on each holds ~1.5 MiB as
/// at a fixed 512 KiB.
static MAPPED_READS: ReadBudget = ReadBudget::new(32 * 1024 * 1024, 512 * 1024, 2 * 1024 * 1024);

/// How long `append_upload`/`commit_upload` wait for another handle on the same upload to let
/// go. A writer dropped mid-request releases within one block write; only a genuinely
/// concurrent request on the same session holds it longer, and that one should fail.
const LOCK_WAIT: Duration = Duration::from_secs(10);
const LOCK_POLL: Duration = Duration::from_millis(2);

/// Blobs and uploads in a directory tree under `root`.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    blobs: PathBuf,
    uploads: PathBuf,
    held: PathBuf,
    /// Publishes into `blobs/`, which no code removes a directory of.
    durable: Arc<DurableDirs>,
}

impl FsBlobStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn new(root: PathBuf) -> io::Result<FsBlobStore> {
        let blobs = root.join(BLOBS);
        let uploads = root.join(UPLOADS);
        let held = uploads.join(HELD);
        fs::create_dir_all(&blobs)?;
        fs::create_dir_all(&held)?;
        Ok(FsBlobStore {
            durable: Arc::new(DurableDirs::new(blobs.clone())),
            blobs,
            uploads,
            held,
        })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        // A parsed Digest always has ≥ 64 hex chars; the fallback only keeps this panic-free.
        let prefix = hex.get(..2).unwrap_or(hex);
        self.blobs
            .join(digest.algorithm().as_str())
            .join(prefix)
            .join(hex)
    }

    fn upload_dir(&self, id: &UploadId) -> PathBuf {
        self.uploads.join(id.as_str())
    }

    fn upload_data(&self, id: &UploadId) -> PathBuf {
        self.upload_dir(id).join(DATA)
    }

    fn publication(&self, id: &UploadId, digest: &Digest) -> Publication {
        Publication {
            data: self.upload_data(id),
            dir: self.upload_dir(id),
            target: self.blob_path(digest),
            durable: self.durable.clone(),
        }
    }
}

/// Whether an upload file's modification time may be older than the publish.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Staleness {
    /// A session's file, possibly idle for hours.
    MayBeOld,
    /// A file written by the request that publishes it: its time is now.
    Fresh,
}

/// An upload file about to become a blob: where it is and where it goes.
struct Publication {
    data: PathBuf,
    dir: PathBuf,
    target: PathBuf,
    durable: Arc<DurableDirs>,
}

impl Publication {
    /// Publishes the first `len` bytes of the (locked or private) upload `file` at `target`
    /// and removes the upload's directory. The rename and any directories just created are
    /// durable before it returns. Blocking.
    fn publish(self, file: &File, len: u64, staleness: Staleness) -> Result<BlobMeta> {
        let actual = file.metadata()?.len();
        if actual < len {
            return Err(BlobStoreError::UploadTooShort {
                expected: len,
                actual,
            });
        }
        if let Some(existing) = stored_copy(&self.target, len)? {
            remove_dir_if_present(&self.dir)?;
            return Ok(existing);
        }
        let now = SystemTime::now();
        if actual > len {
            file.set_len(len)?;
        }
        if actual > len || staleness == Staleness::MayBeOld {
            file.set_modified(now)?;
            file.sync_all()?;
        }
        self.durable.publish(&self.data, &self.target)?;
        let meta = file.metadata()?;
        remove_dir_if_present(&self.dir)?;
        Ok(BlobMeta {
            size: meta.len(),
            modified: meta.modified()?,
        })
    }
}

/// The blob already published at `target` with `len` bytes, touched (the time GC judges by:
/// the blob was just referenced again); `None` when there is none. Same digest means same
/// bytes, so the caller keeps that copy; a size mismatch means the file is damaged, and the
/// caller replaces it. Blocking.
fn stored_copy(target: &Path, len: u64) -> Result<Option<BlobMeta>> {
    match fs::metadata(target) {
        Ok(existing) if existing.is_file() && existing.len() == len => {
            let now = SystemTime::now();
            if let Err(e) = File::open(target).and_then(|f| f.set_modified(now)) {
                tracing::warn!(error = %e, path = %target.display(), "could not touch blob");
            }
            Ok(Some(BlobMeta {
                size: len,
                modified: now,
            }))
        }
        Err(e) if !is_not_found(&e) => Err(e.into()),
        _ => Ok(None),
    }
}

/// Publishes held `bytes` as the blob at `target` (under the store's `blobs/`): written to
/// `file` (under `uploads/.held/`), synced, renamed, and the rename made durable. A failure
/// removes the file. Blocking.
fn publish_held(
    bytes: &[u8],
    file: &Path,
    target: &Path,
    durable: &DurableDirs,
) -> Result<BlobMeta> {
    let len = bytes.len() as u64;
    if let Some(existing) = stored_copy(target, len)? {
        return Ok(existing);
    }
    let written = (|| {
        let mut out = OpenOptions::new().write(true).create_new(true).open(file)?;
        io::Write::write_all(&mut out, bytes)?;
        out.sync_data()?;
        durable.publish(file, target)?;
        out.metadata()
    })();
    match written {
        Ok(meta) => Ok(BlobMeta {
            size: meta.len(),
            modified: meta.modified()?,
        }),
        Err(e) => {
            if let Err(left) = fs::remove_file(file)
                && !is_not_found(&left)
            {
                tracing::warn!(error = %left, path = %file.display(), "held blob file left behind");
            }
            Err(e.into())
        }
    }
}

async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BlobStoreError::Backend(Box::new(e)))?
}

fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

fn upload_not_found(e: io::Error) -> BlobStoreError {
    if is_not_found(&e) {
        BlobStoreError::UploadNotFound
    } else {
        e.into()
    }
}

fn backend(msg: &'static str) -> BlobStoreError {
    BlobStoreError::Backend(Box::new(io::Error::other(msg)))
}

#[cfg(unix)]
fn same_file(a: &Metadata, b: &Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(_: &Metadata, _: &Metadata) -> bool {
    true
}

/// Opens `uploads/<id>/data` for writing and takes an exclusive lock on it.
///
/// The lock is what makes "discard unconfirmed bytes" sound: a writer dropped mid-request may
/// still have a block write in flight on the blocking pool, and truncating before it lands
/// would let those stale bytes overwrite the next request's. The in-flight task owns the locked
/// file, so the lock is released only after its last byte is written.
async fn lock_upload(path: PathBuf) -> Result<File> {
    let deadline = Instant::now() + LOCK_WAIT;
    let mut held: Option<File> = None;
    loop {
        let check = path.clone();
        let (file, locked) = blocking(move || {
            let file = match held {
                Some(file) => file,
                None => OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&check)
                    .map_err(upload_not_found)?,
            };
            match file.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => return Ok((file, false)),
                // Without lock support (some network filesystems) we proceed unguarded, as
                // every store without this lock would.
                Err(fs::TryLockError::Error(e)) if e.kind() == io::ErrorKind::Unsupported => {}
                Err(fs::TryLockError::Error(e)) => return Err(e.into()),
            }
            // While we waited, the file may have been committed (renamed into blobs/) or
            // deleted; locking that inode must not let us write into a published blob.
            let current = fs::metadata(&check).map_err(upload_not_found)?;
            if !same_file(&file.metadata()?, &current) {
                return Err(BlobStoreError::UploadNotFound);
            }
            Ok((file, true))
        })
        .await?;
        if locked {
            return Ok(file);
        }
        if Instant::now() >= deadline {
            return Err(backend("upload is locked by another request"));
        }
        held = Some(file);
        tokio::time::sleep(LOCK_POLL).await;
    }
}

/// Creates an upload area (`dir` and its empty `data` file) and returns the file, open for
/// reading and writing. Nothing is made durable here. Blocking.
fn create_area(dir: &Path) -> io::Result<File> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join(DATA))
}

/// Directory entries, or none when the directory does not exist (or is not a directory).
fn entries(dir: &Path) -> io::Result<Vec<fs::DirEntry>> {
    match fs::read_dir(dir) {
        Ok(iter) => iter.collect(),
        Err(e) if is_not_found(&e) || e.kind() == io::ErrorKind::NotADirectory => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Entries of a directory sorted by name, those with names that are not UTF-8 left out (no
/// key of the layout has one).
fn sorted_entries(dir: &Path) -> io::Result<Vec<(String, fs::DirEntry)>> {
    let mut named: Vec<_> = entries(dir)?
        .into_iter()
        .filter_map(|entry| Some((entry.file_name().into_string().ok()?, entry)))
        .collect();
    named.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(named)
}

/// One page of [`FsBlobStore::list_blobs`]: the tree is walked in name order from the
/// cursor's directories on, so a page costs the directories it touches, not the store.
fn walk_blobs(
    blobs: &Path,
    after: Option<&Digest>,
    limit: usize,
) -> io::Result<Vec<(Digest, SystemTime)>> {
    let after = after.map(ToString::to_string);
    let cursor = after.as_deref().and_then(|d| d.split_once(':'));
    let mut found = Vec::new();
    for (alg_name, alg) in sorted_entries(blobs)? {
        if alg_name.parse::<Algorithm>().is_err()
            || cursor.is_some_and(|(a, _)| alg_name.as_str() < a)
        {
            continue;
        }
        let same_alg = cursor.filter(|(a, _)| *a == alg_name).map(|(_, hex)| hex);
        for (prefix_name, prefix) in sorted_entries(&alg.path())? {
            if same_alg.is_some_and(|hex| prefix_name.as_str() < hex.get(..2).unwrap_or(hex)) {
                continue;
            }
            for (hex, blob) in sorted_entries(&prefix.path())? {
                // A file in the wrong prefix directory is unreachable by stat/open, so listing
                // it would hand GC a digest it cannot act on.
                if prefix_name.len() != 2 || !hex.starts_with(&prefix_name) {
                    continue;
                }
                if same_alg.is_some_and(|after_hex| hex.as_str() <= after_hex) {
                    continue;
                }
                let Ok(digest) = format!("{alg_name}:{hex}").parse::<Digest>() else {
                    continue;
                };
                let meta = match blob.metadata() {
                    Ok(meta) => meta,
                    Err(e) if is_not_found(&e) => continue,
                    Err(e) => return Err(e),
                };
                // Symlinks are skipped: they could point outside the root.
                if !meta.is_file() {
                    continue;
                }
                found.push((digest, meta.modified()?));
                if found.len() >= limit {
                    return Ok(found);
                }
            }
        }
    }
    Ok(found)
}

/// One page of [`FsBlobStore::list_uploads`], in id order.
fn walk_uploads(
    uploads: &Path,
    after: Option<&UploadId>,
    limit: usize,
) -> io::Result<Vec<(UploadId, SystemTime)>> {
    let mut found = Vec::new();
    for (name, entry) in sorted_entries(uploads)? {
        if after.is_some_and(|after| name.as_str() <= after.as_str()) {
            continue;
        }
        // UploadId parsing normalises (braces, upper case); a name that is not already the
        // normal form would map to a different directory than the one we found.
        let Ok(id) = name.parse::<UploadId>() else {
            continue;
        };
        if id.as_str() != name {
            continue;
        }
        let dir_meta = match entry.metadata() {
            Ok(meta) => meta,
            Err(e) if is_not_found(&e) => continue,
            Err(e) => return Err(e),
        };
        if !dir_meta.is_dir() {
            continue;
        }
        let modified = match fs::metadata(entry.path().join(DATA)) {
            Ok(meta) => meta.modified()?,
            Err(e) if is_not_found(&e) => dir_meta.modified()?,
            Err(e) => return Err(e),
        };
        found.push((id, modified));
        if found.len() >= limit {
            break;
        }
    }
    Ok(found)
}

/// Removes the files directly in `dir` last modified before `cutoff`; how many. Blocking.
fn remove_files_older_than(dir: &Path, cutoff: SystemTime) -> io::Result<u64> {
    let mut removed = 0;
    for entry in entries(dir)? {
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            Err(e) if is_not_found(&e) => continue,
            Err(e) => return Err(e),
        };
        if !meta.is_file() || meta.modified()? >= cutoff {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

fn remove_dir_if_present(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if !is_not_found(&e) => Err(e),
        _ => Ok(()),
    }
}

/// Streams `range` of an upload's file (see [`fileio::range_stream`]: exact bytes, never a
/// short body). Upload files are cut back by `append_upload`, so they are read, not mapped.
fn file_stream(file: File, range: Range<u64>) -> ByteStream {
    Box::pin(fileio::range_stream(Arc::new(file), range, READ_CHUNK))
}

/// Streams `range` of a committed blob's file, mapped (see [`fileio::mapped_stream`]) in windows
/// of the shared budget ([`MAPPED_READS`]): blob files are immutable once published and removed
/// only by unlink, so a response streaming one is unaffected by a delete or GC meanwhile.
fn blob_stream(file: File, range: Range<u64>) -> ByteStream {
    let (share, window) = MAPPED_READS.start();
    Box::pin(share.attach(fileio::mapped_stream(Arc::new(file), range, window)))
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<BlobMeta>> {
        match tokio::fs::metadata(self.blob_path(digest)).await {
            Ok(meta) if meta.is_file() => Ok(Some(BlobMeta {
                size: meta.len(),
                modified: meta.modified()?,
            })),
            Ok(_) => Ok(None),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn open(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<ByteStream> {
        let path = self.blob_path(digest);
        let (file, range) = blocking(move || {
            let file = match File::open(path) {
                Ok(file) => file,
                Err(e) if is_not_found(&e) => return Err(BlobStoreError::NotFound),
                Err(e) => return Err(e.into()),
            };
            let size = file.metadata()?.len();
            let (start, len) = match range {
                None => (0, size),
                Some(r) => {
                    if r.start > r.end || r.end > size {
                        return Err(BlobStoreError::Backend(Box::new(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("range {}..{} outside blob of {size} bytes", r.start, r.end),
                        ))));
                    }
                    (r.start, r.end - r.start)
                }
            };
            Ok((file, start..start + len))
        })
        .await?;
        Ok(blob_stream(file, range))
    }

    async fn delete(&self, digest: &Digest) -> Result<()> {
        // The empty prefix directory stays: removing it would race a concurrent commit that
        // has created it and is about to rename into it.
        match tokio::fs::remove_file(self.blob_path(digest)).await {
            Err(e) if !is_not_found(&e) => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<(Digest, SystemTime)>> {
        let blobs = self.blobs.clone();
        let after = after.cloned();
        blocking(move || Ok(walk_blobs(&blobs, after.as_ref(), limit)?)).await
    }

    async fn create_upload(&self, id: &UploadId) -> Result<()> {
        let dir = self.upload_dir(id);
        let uploads = self.uploads.clone();
        blocking(move || {
            create_area(&dir)?;
            // The session row that names this upload is committed right after; the directory
            // must not vanish in a crash while the row survives.
            fileio::sync_dir(&dir)?;
            fileio::sync_dir(&uploads)?;
            Ok(())
        })
        .await
    }

    async fn append_upload(&self, id: &UploadId, offset: u64) -> Result<Box<dyn UploadWriter>> {
        let file = lock_upload(self.upload_data(id)).await?;
        let file = blocking(move || {
            let actual = file.metadata()?.len();
            if actual < offset {
                return Err(BlobStoreError::UploadTooShort {
                    expected: offset,
                    actual,
                });
            }
            if actual > offset {
                file.set_len(offset)?;
            }
            Ok(file)
        })
        .await?;
        Ok(Box::new(FsUploadWriter(BlockWriter::new(
            Arc::new(file),
            offset,
            WRITE_BLOCK,
        ))))
    }

    async fn read_upload(&self, id: &UploadId, len: u64) -> Result<ByteStream> {
        let path = self.upload_data(id);
        let file = blocking(move || {
            let file = File::open(path).map_err(upload_not_found)?;
            let actual = file.metadata()?.len();
            if actual < len {
                return Err(BlobStoreError::UploadTooShort {
                    expected: len,
                    actual,
                });
            }
            Ok(file)
        })
        .await?;
        Ok(file_stream(file, 0..len))
    }

    async fn commit_upload(&self, id: &UploadId, len: u64, digest: &Digest) -> Result<BlobMeta> {
        let area = self.publication(id, digest);
        let file = lock_upload(area.data.clone()).await?;
        // GC keeps blobs younger than a grace period; the upload may have been idle for hours
        // before this commit, so its time is refreshed (and that made durable) first.
        blocking(move || area.publish(&file, len, Staleness::MayBeOld)).await
    }

    async fn receive_blob(&self, id: &UploadId) -> Result<Box<dyn BlobWriter>> {
        Ok(Box::new(FsBlobWriter {
            held: Vec::new(),
            area: None,
            store: self.clone(),
            id: id.clone(),
        }))
    }

    async fn delete_upload(&self, id: &UploadId) -> Result<()> {
        let dir = self.upload_dir(id);
        blocking(move || Ok(remove_dir_if_present(&dir)?)).await
    }

    async fn list_uploads(
        &self,
        after: Option<&UploadId>,
        limit: usize,
    ) -> Result<Vec<(UploadId, SystemTime)>> {
        let uploads = self.uploads.clone();
        let after = after.cloned();
        blocking(move || Ok(walk_uploads(&uploads, after.as_ref(), limit)?)).await
    }

    /// The files of held blobs whose publish a crash interrupted (see [`HELD_BLOB`]).
    async fn collect_leftovers(&self, cutoff: SystemTime) -> Result<u64> {
        let held = self.held.clone();
        blocking(move || Ok(remove_files_older_than(&held, cutoff)?)).await
    }

    async fn check_writable(&self) -> Result<()> {
        // Not an upload id, so `list_uploads` and GC never see it; unique, so concurrent
        // probes do not trip over each other.
        let probe = self
            .uploads
            .join(format!(".write-probe-{}", UploadId::generate().as_str()));
        blocking(move || {
            let written = fs::File::create(&probe).and_then(|mut file| {
                io::Write::write_all(&mut file, &[0; PROBE_BYTES])?;
                file.sync_all()
            });
            let removed = fs::remove_file(&probe);
            written?;
            Ok(removed?)
        })
        .await
    }
}

/// One filesystem block: enough to need a fresh allocation on a full disk.
const PROBE_BYTES: usize = 4096;

/// Appends to one upload file (see [`BlockWriter`]). The writer's blocking tasks hold their
/// own handle on the file, so the upload lock outlives a dropped writer's last write.
struct FsUploadWriter(BlockWriter);

#[async_trait]
impl UploadWriter for FsUploadWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        Ok(self.0.write(chunk).await?)
    }

    /// Dropping the writer afterwards (its last handle on the file) releases the upload lock.
    async fn finish(&mut self) -> Result<()> {
        Ok(self.0.finish().await?)
    }
}

/// A whole blob arriving in one request (private to it): held in memory while it fits in
/// [`HELD_BLOB`], otherwise written to an upload area (`uploads/<id>/data`) like a session's
/// and published by a rename of that file.
struct FsBlobWriter {
    /// The bytes while there is no area; empty once there is one.
    held: Vec<u8>,
    area: Option<WholeArea>,
    store: FsBlobStore,
    id: UploadId,
}

/// The area of a whole blob that outgrew [`HELD_BLOB`]. No fsyncs at its creation: no session
/// row names it, and nothing in it matters until the publish makes the blob durable.
struct WholeArea {
    blocks: BlockWriter,
    file: Arc<File>,
}

impl FsBlobWriter {
    /// Creates the area and moves what is held into it.
    async fn spill(&mut self) -> Result<WholeArea> {
        let dir = self.store.upload_dir(&self.id);
        let file = Arc::new(blocking(move || Ok(create_area(&dir)?)).await?);
        let mut blocks = BlockWriter::new(Arc::clone(&file), 0, WRITE_BLOCK);
        blocks
            .write(Bytes::from(std::mem::take(&mut self.held)))
            .await?;
        Ok(WholeArea { blocks, file })
    }
}

#[async_trait]
impl UploadWriter for FsBlobWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        if self.area.is_none() && self.held.len() + chunk.len() <= HELD_BLOB {
            self.held.extend_from_slice(&chunk);
            return Ok(());
        }
        let area = match self.area.take() {
            Some(area) => area,
            None => self.spill().await?,
        };
        let area = self.area.insert(area);
        Ok(area.blocks.write(chunk).await?)
    }

    /// Held bytes wait for the publish, which syncs them with their file.
    async fn finish(&mut self) -> Result<()> {
        match &mut self.area {
            Some(area) => Ok(area.blocks.finish().await?),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl BlobWriter for FsBlobWriter {
    async fn publish(self: Box<Self>, len: u64, digest: &Digest) -> Result<BlobMeta> {
        let FsBlobWriter {
            mut held,
            area,
            store,
            id,
        } = *self;
        if let Some(WholeArea { file, .. }) = area {
            let area = store.publication(&id, digest);
            return blocking(move || area.publish(&file, len, Staleness::Fresh)).await;
        }
        let actual = held.len() as u64;
        if actual < len {
            return Err(BlobStoreError::UploadTooShort {
                expected: len,
                actual,
            });
        }
        held.truncate(usize::try_from(len).unwrap_or(usize::MAX));
        let file = store.held.join(id.as_str());
        let target = store.blob_path(digest);
        blocking(move || publish_held(&held, &file, &target, &store.durable)).await
    }
}

#[cfg(test)]
mod tests {
    use std::path::Component;

    use super::*;
    use crate::storage::conformance;

    fn store() -> (tempfile::TempDir, FsBlobStore) {
        let dir = tempfile::TempDir::new().unwrap();
        let store = FsBlobStore::new(dir.path().join("root")).unwrap();
        (dir, store)
    }

    fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                out.extend(files_under(&entry.path()));
            } else {
                out.push(entry.path());
            }
        }
        out
    }

    async fn conformance_store() -> Option<(FsBlobStore, tempfile::TempDir)> {
        let (dir, store) = store();
        Some((store, dir))
    }

    conformance::blob_store_conformance!(conformance_store);

    #[tokio::test]
    async fn new_creates_layout() {
        let (dir, _store) = store();
        assert!(dir.path().join("root/blobs").is_dir());
        assert!(dir.path().join("root/uploads").is_dir());
        // Opening an existing root again is fine.
        FsBlobStore::new(dir.path().join("root")).unwrap();
    }

    #[tokio::test]
    async fn nothing_appears_under_blobs_before_commit() {
        let (dir, store) = store();
        let blobs = dir.path().join("root/blobs");
        let bytes = vec![7u8; 3 * WRITE_BLOCK + 5];
        let digest = Digest::sha256_of(&bytes);
        let id = UploadId::generate();
        store.create_upload(&id).await.unwrap();
        let mut writer = store.append_upload(&id, 0).await.unwrap();
        writer.write(Bytes::from(bytes.clone())).await.unwrap();
        writer.finish().await.unwrap();
        assert!(files_under(&blobs).is_empty());
        assert!(store.stat(&digest).await.unwrap().is_none());

        store
            .commit_upload(&id, bytes.len() as u64, &digest)
            .await
            .unwrap();
        let hex = digest.hex();
        let expected = blobs.join("sha256").join(&hex[..2]).join(hex);
        assert_eq!(files_under(&blobs), vec![expected.clone()]);
        assert_eq!(fs::read(&expected).unwrap(), bytes);
        assert!(!dir.path().join("root/uploads").join(id.as_str()).exists());
    }

    /// A whole blob's area is an upload area GC can see (and, while its request holds the
    /// upload lock, leaves alone) until the publish renames its file into `blobs/`.
    #[tokio::test]
    async fn whole_blob_area_is_an_upload_until_published() {
        let (dir, store) = store();
        let blobs = dir.path().join("root/blobs");
        let bytes = vec![9u8; 2 * WRITE_BLOCK + 3];
        let digest = Digest::sha256_of(&bytes);
        let id = UploadId::generate();
        let mut writer = store.receive_blob(&id).await.unwrap();
        writer.write(Bytes::from(bytes.clone())).await.unwrap();
        writer.finish().await.unwrap();
        let area = dir.path().join("root/uploads").join(id.as_str());
        assert_eq!(files_under(&area), vec![area.join(DATA)]);
        let listed = store.list_uploads(None, usize::MAX).await.unwrap();
        assert_eq!(listed.iter().map(|(u, _)| u).collect::<Vec<_>>(), vec![&id]);
        assert!(files_under(&blobs).is_empty());

        writer.publish(bytes.len() as u64, &digest).await.unwrap();
        let hex = digest.hex();
        let expected = blobs.join("sha256").join(&hex[..2]).join(hex);
        assert_eq!(files_under(&blobs), vec![expected.clone()]);
        assert_eq!(fs::read(&expected).unwrap(), bytes);
        assert!(!area.exists());
    }

    /// A small whole blob never has an area: nothing under `uploads/` until its publish, which
    /// leaves only the blob.
    #[tokio::test]
    async fn small_whole_blob_is_held_until_published() {
        let (dir, store) = store();
        let root = dir.path().join("root");
        let bytes = vec![5u8; HELD_BLOB];
        let digest = Digest::sha256_of(&bytes);
        let id = UploadId::generate();
        let mut writer = store.receive_blob(&id).await.unwrap();
        for piece in bytes.chunks(70_000) {
            writer.write(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        writer.finish().await.unwrap();
        assert!(
            files_under(&root).is_empty(),
            "nothing written before the publish"
        );
        assert!(
            store
                .list_uploads(None, usize::MAX)
                .await
                .unwrap()
                .is_empty()
        );

        let meta = writer.publish(bytes.len() as u64, &digest).await.unwrap();
        assert_eq!(meta.size, bytes.len() as u64);
        let hex = digest.hex();
        let expected = root.join("blobs/sha256").join(&hex[..2]).join(hex);
        assert_eq!(files_under(&root), vec![expected.clone()]);
        assert_eq!(fs::read(&expected).unwrap(), bytes);
    }

    /// A held blob's file that a crash left in `uploads/.held/` is not an upload; GC's leftover
    /// pass removes it once older than the cutoff, and keeps a younger one (a publish writing
    /// it now).
    #[tokio::test]
    async fn held_files_a_crash_left_are_collected_as_leftovers() {
        let (dir, store) = store();
        let held = dir.path().join("root/uploads").join(HELD);
        let (old, young) = (held.join(UploadId::generate().as_str()), held.join("young"));
        fs::write(&old, b"half a blob").unwrap();
        fs::write(&young, b"being written").unwrap();
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
        assert!(
            store
                .list_uploads(None, usize::MAX)
                .await
                .unwrap()
                .is_empty()
        );

        let cutoff = SystemTime::now() - Duration::from_secs(60);
        assert_eq!(store.collect_leftovers(cutoff).await.unwrap(), 1);
        assert!(!old.exists());
        assert!(young.exists());
    }

    #[tokio::test]
    async fn leftover_upload_garbage_is_not_listed() {
        let (dir, store) = store();
        let id = UploadId::generate();
        store.create_upload(&id).await.unwrap();
        let mut writer = store.append_upload(&id, 0).await.unwrap();
        writer
            .write(Bytes::from_static(b"half an upload"))
            .await
            .unwrap();
        drop(writer);
        // Debris a crash or another tool might leave behind.
        let root = dir.path().join("root");
        let upload_dir = root.join("uploads").join(id.as_str());
        fs::write(upload_dir.join("data.tmp"), b"garbage").unwrap();
        fs::create_dir_all(root.join("blobs/sha256/ab")).unwrap();
        fs::write(root.join("blobs/sha256/ab/not-a-digest"), b"x").unwrap();
        fs::write(root.join("blobs/sha256/ab/.tmp-123"), b"x").unwrap();
        // A valid digest filed under the wrong prefix cannot be stat'ed, so it is not listed.
        let misplaced = Digest::sha256_of(b"misplaced");
        let wrong = if misplaced.hex().starts_with("ff") {
            "00"
        } else {
            "ff"
        };
        fs::create_dir_all(root.join("blobs/sha256").join(wrong)).unwrap();
        fs::write(
            root.join("blobs/sha256").join(wrong).join(misplaced.hex()),
            b"x",
        )
        .unwrap();
        fs::create_dir_all(root.join("blobs/md5/d4")).unwrap();
        fs::write(
            root.join("blobs/md5/d4/d41d8cd98f00b204e9800998ecf8427e"),
            b"",
        )
        .unwrap();
        fs::write(root.join("blobs/stray-file"), b"x").unwrap();

        assert!(store.list_blobs(None, usize::MAX).await.unwrap().is_empty());
        let uploads = store.list_uploads(None, usize::MAX).await.unwrap();
        assert_eq!(uploads.len(), 1);
        assert_eq!(uploads[0].0, id);
    }

    #[tokio::test]
    async fn list_uploads_skips_foreign_directories() {
        let (dir, store) = store();
        let uploads = dir.path().join("root/uploads");
        let id = UploadId::generate();
        fs::create_dir(uploads.join("not-a-uuid")).unwrap();
        // Parses as an UploadId, but to a different (lower-case) directory name.
        fs::create_dir(uploads.join(id.as_str().to_uppercase())).unwrap();
        fs::write(uploads.join(UploadId::generate().as_str()), b"a file").unwrap();
        assert!(
            store
                .list_uploads(None, usize::MAX)
                .await
                .unwrap()
                .is_empty()
        );

        // An upload directory whose data file is gone is still listed (for GC to remove).
        let bare = UploadId::generate();
        fs::create_dir(uploads.join(bare.as_str())).unwrap();
        let listed = store.list_uploads(None, usize::MAX).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, bare);
    }

    #[tokio::test]
    async fn paths_never_escape_root() {
        let (dir, store) = store();
        let root = dir.path().join("root");
        let digests = [
            Digest::sha256_of(b"a"),
            format!("sha512:{}", "0".repeat(128)).parse().unwrap(),
        ];
        for digest in &digests {
            let path = store.blob_path(digest);
            let rest = path.strip_prefix(root.join("blobs")).unwrap();
            assert_eq!(rest.components().count(), 3, "{}", path.display());
            assert!(
                rest.components().all(|c| matches!(c, Component::Normal(_))),
                "{}",
                path.display()
            );
        }
        let id = UploadId::generate();
        let data = store.upload_data(&id);
        let rest = data.strip_prefix(root.join("uploads")).unwrap();
        assert!(rest.components().all(|c| matches!(c, Component::Normal(_))));
        // Hostile strings never become a Digest or UploadId, hence never a path.
        for hostile in [
            "sha256:../../../../etc/passwd",
            "sha256:/etc/passwd",
            "../sha256:00",
        ] {
            assert!(hostile.parse::<Digest>().is_err(), "{hostile}");
        }
        for hostile in ["..", "../../etc", "/tmp/x", "a/b", ""] {
            assert!(hostile.parse::<UploadId>().is_err(), "{hostile}");
        }
    }

    #[tokio::test]
    async fn append_waits_for_the_previous_writer() {
        let (_dir, store) = store();
        let store = std::sync::Arc::new(store);
        let id = UploadId::generate();
        store.create_upload(&id).await.unwrap();
        let mut first = store.append_upload(&id, 0).await.unwrap();
        first.write(Bytes::from_static(b"first")).await.unwrap();

        let second = tokio::spawn({
            let store = store.clone();
            let id = id.clone();
            async move {
                let mut w = store.append_upload(&id, 5).await?;
                w.write(Bytes::from_static(b"-second")).await?;
                w.finish().await
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !second.is_finished(),
            "second writer must wait for the lock"
        );
        first.finish().await.unwrap();
        second.await.unwrap().unwrap();

        let bytes = b"first-second";
        let digest = Digest::sha256_of(bytes);
        store.commit_upload(&id, 12, &digest).await.unwrap();
        let mut stream = store.open(&digest, None).await.unwrap();
        let mut got = Vec::new();
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(got, bytes);
    }

    #[tokio::test]
    async fn open_rejects_range_past_the_end_and_short_files() {
        let (dir, store) = store();
        let bytes = b"0123456789";
        let digest = Digest::sha256_of(bytes);
        let id = UploadId::generate();
        store.create_upload(&id).await.unwrap();
        let mut w = store.append_upload(&id, 0).await.unwrap();
        w.write(Bytes::from_static(bytes)).await.unwrap();
        w.finish().await.unwrap();
        store.commit_upload(&id, 10, &digest).await.unwrap();
        assert!(matches!(
            store.open(&digest, Some(5..11)).await,
            Err(BlobStoreError::Backend(_))
        ));

        // Truncated behind our back after open: the stream errors instead of ending short.
        let stream = store.open(&digest, None).await.unwrap();
        let hex = digest.hex();
        let path = dir
            .path()
            .join("root/blobs/sha256")
            .join(&hex[..2])
            .join(hex);
        OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(4)
            .unwrap();
        let results: Vec<io::Result<Bytes>> = futures_util::StreamExt::collect(stream).await;
        assert!(results.iter().any(|r| r.is_err()));
    }

    #[tokio::test]
    async fn blob_streams_are_exact_and_fail_when_the_file_shrinks() {
        let (_dir, store) = store();
        // The largest window, a stream's when it is the only one.
        let window = MAPPED_READS.step(1);
        let len = 2 * window + window / 2 + 3;
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let digest = Digest::sha256_of(&bytes);
        let id = UploadId::generate();
        store.create_upload(&id).await.unwrap();
        let mut w = store.append_upload(&id, 0).await.unwrap();
        w.write(Bytes::from(bytes.clone())).await.unwrap();
        w.finish().await.unwrap();
        store.commit_upload(&id, len as u64, &digest).await.unwrap();

        // A range across chunk boundaries: exact bytes, no chunk empty or above the window.
        let range = (window as u64 - 5)..(len as u64 - 1);
        let mut stream = store.open(&digest, Some(range.clone())).await.unwrap();
        let mut got = Vec::new();
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            let chunk = chunk.unwrap();
            assert!(
                !chunk.is_empty() && chunk.len() <= window,
                "{}",
                chunk.len()
            );
            got.extend_from_slice(&chunk);
        }
        assert!(got == bytes[range.start as usize..range.end as usize]);

        // Truncated while a response is under way: the stream fails instead of ending short.
        // (Other tests' streams may shrink this one's window: cut just past the first.)
        let mut stream = store.open(&digest, None).await.unwrap();
        let first = futures_util::StreamExt::next(&mut stream).await.unwrap();
        let first = first.unwrap().len();
        assert!(first <= window && first < len, "{first}");
        OpenOptions::new()
            .write(true)
            .open(store.blob_path(&digest))
            .unwrap()
            .set_len(first as u64 + 10)
            .unwrap();
        let rest: Vec<io::Result<Bytes>> = futures_util::StreamExt::collect(stream).await;
        let (last, before) = rest.split_last().unwrap();
        assert!(before.iter().all(Result::is_ok));
        assert_eq!(
            last.as_ref().unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[tokio::test]
    async fn writes_spanning_many_blocks_round_trip() {
        let (_dir, store) = store();
        // Blocks of odd sizes and offsets (frames straddle them), each with its write-back.
        let len = 40 * WRITE_BLOCK + 17;
        // A period of 251 keeps every block different from its neighbours.
        let period: Vec<u8> = (0..251u8).collect();
        let mut bytes = Vec::with_capacity(len + period.len());
        while bytes.len() < len {
            bytes.extend_from_slice(&period);
        }
        bytes.truncate(len);
        let id = UploadId::generate();
        store.create_upload(&id).await.unwrap();
        let mut writer = store.append_upload(&id, 0).await.unwrap();
        for piece in bytes.chunks(48 * 1024 + 3) {
            writer.write(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        writer.finish().await.unwrap();
        let digest = Digest::sha256_of(&bytes);
        let meta = store.commit_upload(&id, len as u64, &digest).await.unwrap();
        assert_eq!(meta.size, len as u64);
        let mut stream = store.open(&digest, None).await.unwrap();
        let mut hasher = crate::oci::Hasher::new(Algorithm::Sha256);
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            hasher.update(&chunk.unwrap());
        }
        assert_eq!(hasher.finish(), digest);
    }
}
