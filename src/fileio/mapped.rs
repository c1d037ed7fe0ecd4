//! Blob bytes straight from the page cache: windows of a published file mapped into memory and
//! handed on as `Bytes`, so each byte is copied once on its way out (mapping → socket) instead
//! of twice (page cache → buffer → socket), with one blocking-pool hop per window.
//!
//! The crate's one `unsafe` block is here.
//!
//! # Why a mapping is sound here
//!
//! Memory mapped from a file stays valid memory only while no page under it is cut off the
//! file: reading a page past the file's end raises SIGBUS, and a write to the file shows
//! through. So only files that are immutable once published may be mapped: committed blobs
//! (`storage::fs`, the one caller; the edge's cached blobs qualify too, but at 128 KiB
//! steps mapping cost more than it saved). Each appears by `rename` of a complete, fsynced
//! file, is never opened for writing again, and leaves only by `unlink` (delete, GC,
//! eviction), which keeps the inode and its pages until the last mapping is gone; a damaged
//! blob is replaced by renaming a new file over it, never rewritten in place. Writing to or
//! truncating a published file from outside the registry breaks that contract, as editing a
//! database's files would. A file found shorter than the range asked for when a window is
//! mapped fails the stream (`UnexpectedEof`) instead of mapping past its end.
//!
//! Windows are mapped and their pages populated on the blocking pool (a page not in memory is
//! read from the disk there, never in a runtime thread), and unmapped when the last `Bytes` over
//! them is dropped: a stream holds a few windows at most, which bounds what it keeps resident.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;

/// `len` bytes of `file` at `offset`, mapped and populated. Blocking.
fn map_window(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    let end = offset + len as u64;
    let size = file.metadata()?.len();
    if size < end {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("file holds {size} bytes, {end} expected"),
        ));
    }
    // SAFETY: the mapping lies within the file's current length (checked above), and every
    // file mapped here is immutable once published and removed only by unlink (module doc), so
    // no page under the mapping is written or cut off while it lives.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
            .len(len)
            .populate()
            .map(file)?
    };
    Ok(Bytes::from_owner(map))
}

/// Streams `range` of the published `file` in mapped windows of at most `window` bytes.
pub fn mapped_stream(
    file: Arc<File>,
    range: Range<u64>,
    window: usize,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let end = range.end;
    futures_util::stream::try_unfold((file, range.start), move |(file, pos)| async move {
        if pos >= end {
            return Ok(None);
        }
        // Bounded by `window`, so the cast cannot truncate.
        let len = (end - pos).min(window as u64) as usize;
        let mapping = Arc::clone(&file);
        let bytes = tokio::task::spawn_blocking(move || map_window(&mapping, pos, len))
            .await
            .map_err(io::Error::other)??;
        Ok(Some((bytes, (file, pos + len as u64))))
    })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Write;

    use futures_util::StreamExt;

    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf, Arc<File>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        fs::File::create(&path).unwrap().write_all(bytes).unwrap();
        let file = Arc::new(File::open(&path).unwrap());
        (dir, path, file)
    }

    #[tokio::test]
    async fn windows_are_exact_for_any_range() {
        let bytes = pattern(3 * 4096 + 77);
        let (_dir, _path, file) = file_with(&bytes);
        for range in [0..bytes.len() as u64, 5..4096 * 2 + 3, 4095..4097, 100..100] {
            let chunks: Vec<Bytes> = mapped_stream(Arc::clone(&file), range.clone(), 4000)
                .map(Result::unwrap)
                .collect()
                .await;
            assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= 4000));
            assert!(chunks.concat() == bytes[range.start as usize..range.end as usize]);
        }
    }

    /// What GC and eviction do to a file being served: unlink it. Every window, mapped before
    /// or after, keeps the published bytes.
    #[tokio::test]
    async fn an_unlinked_file_streams_whole() {
        let bytes = pattern(64 * 1024 + 5);
        let (_dir, path, file) = file_with(&bytes);
        let mut stream = Box::pin(mapped_stream(file, 0..bytes.len() as u64, 16 * 1024));
        let first = stream.next().await.unwrap().unwrap();
        fs::remove_file(&path).unwrap();
        let mut chunks = vec![first];
        while let Some(chunk) = stream.next().await {
            chunks.push(chunk.unwrap());
        }
        assert!(chunks.concat() == bytes);
    }

    #[tokio::test]
    async fn a_file_shorter_than_the_range_fails_instead_of_mapping_past_its_end() {
        let bytes = pattern(10_000);
        let (_dir, _path, file) = file_with(&bytes);
        let got: Vec<io::Result<Bytes>> = mapped_stream(file, 0..20_000, 8192).collect().await;
        assert_eq!(got.len(), 2);
        assert!(got[0].as_ref().is_ok_and(|c| c[..] == bytes[..8192]));
        let e = got[1].as_ref().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
