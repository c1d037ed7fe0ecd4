//! The behaviour every [`BlobStore`] backend must show, written once against the trait
//! (`fs` on a temporary directory, object stores against a test bucket).
//!
//! A backend's tests invoke [`blob_store_conformance!`] with an async constructor; the macro
//! expands to one `#[tokio::test]` per case, each on a fresh store, so one failure does not
//! hide the others. Cases use fresh random ids and contents, so they may share a store with
//! other data (a long-lived bucket) and only ever assert on what they created.

use std::ops::Range;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;

use super::{BlobStore, BlobStoreError, BlobWriter, ByteStream};
use crate::oci::{Digest, UploadId};

/// Expands to one test per conformance case. `$make` is a path to an
/// `async fn() -> Option<(S, G)>` with `S: BlobStore`: `None` skips the case (a test service
/// that is not running, see `testkit`), and the guard `G` is whatever must outlive the store
/// (a temporary directory, a bucket to remove).
macro_rules! blob_store_conformance {
    ($make:path) => {
        $crate::storage::conformance::blob_store_conformance!(@cases $make;
            absent_blob,
            absent_upload,
            chunked_upload_round_trip,
            empty_blob,
            append_beyond_written_is_too_short,
            unconfirmed_bytes_are_discarded,
            commit_discards_unconfirmed_tail,
            duplicate_commit_keeps_one_copy,
            delete_blob,
            delete_upload_is_idempotent,
            list_uploads_shows_live_uploads,
            listings_page_in_order,
            write_probe_leaves_nothing,
            large_blob_round_trips,
            whole_blob_round_trips,
            whole_blob_dropped_unpublished_is_removable,
            whole_blob_of_a_stored_digest_keeps_one_copy,
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test]
            async fn $case() {
                let Some((store, _guard)) = $make().await else {
                    return;
                };
                $crate::storage::conformance::$case(&store).await;
            }
        )*
    };
}
pub(crate) use blob_store_conformance;

/// Pseudo-random bytes, different on every call (xorshift64* seeded from a v4 UUID).
pub(crate) fn random_bytes(len: usize) -> Vec<u8> {
    let mut x = uuid::Uuid::new_v4().as_u64_pair().0 | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub(crate) async fn read_all(mut stream: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("stream chunk"));
    }
    out
}

async fn read_blob(store: &dyn BlobStore, digest: &Digest, range: Option<Range<u64>>) -> Vec<u8> {
    match store.open(digest, range.clone()).await {
        Ok(stream) => read_all(stream).await,
        Err(e) => panic!("open {digest} {range:?}: {e}"),
    }
}

/// Creates an upload and writes `chunks` through one writer, finished.
async fn upload(store: &dyn BlobStore, chunks: &[&[u8]]) -> (UploadId, u64) {
    let id = UploadId::generate();
    store.create_upload(&id).await.expect("create_upload");
    let len = append(store, &id, 0, chunks).await;
    (id, len)
}

/// Appends `chunks` at the confirmed `offset` and finishes; returns the new offset.
async fn append(store: &dyn BlobStore, id: &UploadId, offset: u64, chunks: &[&[u8]]) -> u64 {
    let mut writer = match store.append_upload(id, offset).await {
        Ok(w) => w,
        Err(e) => panic!("append_upload {id} at {offset}: {e}"),
    };
    let mut len = offset;
    for chunk in chunks {
        writer
            .write(Bytes::copy_from_slice(chunk))
            .await
            .expect("write");
        len += chunk.len() as u64;
    }
    writer.finish().await.expect("finish");
    len
}

async fn commit(store: &dyn BlobStore, id: &UploadId, len: u64, bytes: &[u8]) -> Digest {
    let digest = Digest::sha256_of(bytes);
    let meta = store
        .commit_upload(id, len, &digest)
        .await
        .expect("commit_upload");
    assert_eq!(meta.size, bytes.len() as u64, "commit reports the size");
    digest
}

fn assert_recent(t: SystemTime, what: &str) {
    // Loose bounds: object stores stamp times with their own clock.
    let now = SystemTime::now();
    assert!(
        t > now - Duration::from_secs(3600) && t < now + Duration::from_secs(300),
        "{what}: modified time {t:?} is not close to now {now:?}"
    );
}

pub(crate) async fn absent_blob(store: &dyn BlobStore) {
    let digest = Digest::sha256_of(&random_bytes(32));
    assert!(store.stat(&digest).await.expect("stat").is_none());
    for range in [None, Some(0..1)] {
        match store.open(&digest, range).await {
            Err(BlobStoreError::NotFound) => {}
            Err(e) => panic!("absent_blob: open gave {e}, want NotFound"),
            Ok(_) => panic!("absent_blob: open of an absent blob succeeded"),
        }
    }
    store.delete(&digest).await.expect("delete absent blob");
    assert!(
        !store
            .list_blobs(None, usize::MAX)
            .await
            .expect("list")
            .iter()
            .any(|(d, _)| *d == digest)
    );
}

pub(crate) async fn absent_upload(store: &dyn BlobStore) {
    let id = UploadId::generate();
    match store.append_upload(&id, 0).await {
        Err(BlobStoreError::UploadNotFound) => {}
        Err(e) => panic!("absent_upload: append_upload gave {e}, want UploadNotFound"),
        Ok(_) => panic!("absent_upload: append_upload of an absent upload succeeded"),
    }
    match store.read_upload(&id, 0).await {
        Err(BlobStoreError::UploadNotFound) => {}
        Err(e) => panic!("absent_upload: read_upload gave {e}, want UploadNotFound"),
        Ok(_) => panic!("absent_upload: read_upload of an absent upload succeeded"),
    }
    let digest = Digest::sha256_of(b"");
    match store.commit_upload(&id, 0, &digest).await {
        Err(BlobStoreError::UploadNotFound) => {}
        Err(e) => panic!("absent_upload: commit_upload gave {e}, want UploadNotFound"),
        Ok(_) => panic!("absent_upload: commit_upload of an absent upload succeeded"),
    }
}

pub(crate) async fn chunked_upload_round_trip(store: &dyn BlobStore) {
    let bytes = random_bytes(300_000);
    let (a, rest) = bytes.split_at(1000);
    let (b, c) = rest.split_at(150_000);

    let id = UploadId::generate();
    store.create_upload(&id).await.expect("create_upload");
    // Each request resumes with a fresh writer at the offset the session confirmed.
    let mut offset = append(store, &id, 0, &[&a[..10], &a[10..]]).await;
    offset = append(store, &id, offset, &[b]).await;
    offset = append(store, &id, offset, &[&c[..1], &c[1..70_000], &c[70_000..]]).await;
    assert_eq!(offset, bytes.len() as u64);

    let stream = store.read_upload(&id, offset).await.expect("read_upload");
    assert_eq!(
        read_all(stream).await,
        bytes,
        "read_upload returns the upload"
    );
    let stream = store.read_upload(&id, 1234).await.expect("read_upload");
    assert_eq!(read_all(stream).await, &bytes[..1234], "read_upload prefix");

    let digest = commit(store, &id, offset, &bytes).await;
    let meta = store.stat(&digest).await.expect("stat").expect("committed");
    assert_eq!(meta.size, bytes.len() as u64);
    assert_recent(meta.modified, "stat");

    assert_eq!(read_blob(store, &digest, None).await, bytes);
    let len = bytes.len() as u64;
    let ranges = [
        0..1,
        0..len,
        0..1000,
        1000..151_000,
        123_456..234_567,
        len - 1..len,
    ];
    for range in ranges {
        let want = &bytes[range.start as usize..range.end as usize];
        assert_eq!(
            read_blob(store, &digest, Some(range.clone())).await,
            want,
            "range {range:?}"
        );
    }

    let listed = store.list_blobs(None, usize::MAX).await.expect("list");
    let (_, modified) = listed
        .iter()
        .find(|(d, _)| *d == digest)
        .expect("list contains the committed blob");
    assert_recent(*modified, "list");

    // Committing consumed the upload.
    assert!(
        !store
            .list_uploads(None, usize::MAX)
            .await
            .expect("list_uploads")
            .iter()
            .any(|(u, _)| *u == id)
    );
    assert!(matches!(
        store.append_upload(&id, offset).await,
        Err(BlobStoreError::UploadNotFound)
    ));
    store.delete(&digest).await.expect("delete");
}

pub(crate) async fn empty_blob(store: &dyn BlobStore) {
    let id = UploadId::generate();
    store.create_upload(&id).await.expect("create_upload");
    let digest = commit(store, &id, 0, b"").await;
    let meta = store
        .stat(&digest)
        .await
        .expect("stat")
        .expect("empty blob");
    assert_eq!(meta.size, 0);
    assert!(read_blob(store, &digest, None).await.is_empty());
    // Not deleted: the empty blob is shared by everyone and may be in use by a parallel run.
}

pub(crate) async fn append_beyond_written_is_too_short(store: &dyn BlobStore) {
    let bytes = random_bytes(10);
    let (id, len) = upload(store, &[&bytes]).await;
    match store.append_upload(&id, len + 1).await {
        Err(BlobStoreError::UploadTooShort { expected, actual }) => {
            assert_eq!((expected, actual), (len + 1, len));
        }
        Err(e) => panic!("append beyond written gave {e}, want UploadTooShort"),
        Ok(_) => panic!("append beyond written succeeded"),
    }
    let digest = Digest::sha256_of(&bytes);
    assert!(matches!(
        store.commit_upload(&id, len + 1, &digest).await,
        Err(BlobStoreError::UploadTooShort { .. })
    ));
    assert!(matches!(
        store.read_upload(&id, len + 1).await,
        Err(BlobStoreError::UploadTooShort { .. })
    ));
    // The failed calls left the upload intact.
    let stream = store.read_upload(&id, len).await.expect("read_upload");
    assert_eq!(read_all(stream).await, bytes);
    store.delete_upload(&id).await.expect("delete_upload");
}

pub(crate) async fn unconfirmed_bytes_are_discarded(store: &dyn BlobStore) {
    let head = random_bytes(100);
    let (id, confirmed) = upload(store, &[&head]).await;

    // A request that dies mid-body: several MiB written, never finished. The next request must
    // not see them, even if the dead writer's last block is still being written.
    let junk = random_bytes(3 << 20);
    let mut dead = store
        .append_upload(&id, confirmed)
        .await
        .expect("append_upload");
    for piece in junk.chunks(64 * 1024) {
        dead.write(Bytes::copy_from_slice(piece))
            .await
            .expect("write");
    }
    drop(dead);

    let tail = random_bytes(5000);
    let len = append(store, &id, confirmed, &[&tail]).await;
    let mut want = head.clone();
    want.extend_from_slice(&tail);
    let stream = store.read_upload(&id, len).await.expect("read_upload");
    assert_eq!(read_all(stream).await, want, "unconfirmed bytes were kept");
    let digest = commit(store, &id, len, &want).await;
    assert_eq!(read_blob(store, &digest, None).await, want);
    store.delete(&digest).await.expect("delete");
}

pub(crate) async fn commit_discards_unconfirmed_tail(store: &dyn BlobStore) {
    let bytes = random_bytes(4096);
    let (id, len) = upload(store, &[&bytes]).await;
    let mut dead = store.append_upload(&id, len).await.expect("append_upload");
    dead.write(Bytes::from(random_bytes(2 << 20)))
        .await
        .expect("write");
    drop(dead);
    // Completing with an empty final request commits only the confirmed bytes.
    let digest = commit(store, &id, len, &bytes).await;
    let meta = store.stat(&digest).await.expect("stat").expect("committed");
    assert_eq!(meta.size, len);
    assert_eq!(read_blob(store, &digest, None).await, bytes);
    store.delete(&digest).await.expect("delete");
}

pub(crate) async fn duplicate_commit_keeps_one_copy(store: &dyn BlobStore) {
    let bytes = random_bytes(70_000);
    let (first, len) = upload(store, &[&bytes]).await;
    let (second, _) = upload(store, &[&bytes[..5], &bytes[5..]]).await;
    let digest = commit(store, &first, len, &bytes).await;
    let again = commit(store, &second, len, &bytes).await;
    assert_eq!(digest, again);

    let meta = store.stat(&digest).await.expect("stat").expect("committed");
    assert_eq!(meta.size, len);
    assert_eq!(read_blob(store, &digest, None).await, bytes);
    let listed = store.list_blobs(None, usize::MAX).await.expect("list");
    assert_eq!(listed.iter().filter(|(d, _)| *d == digest).count(), 1);
    let uploads = store
        .list_uploads(None, usize::MAX)
        .await
        .expect("list_uploads");
    assert!(
        !uploads.iter().any(|(u, _)| *u == first || *u == second),
        "both uploads are consumed"
    );
    store.delete(&digest).await.expect("delete");
}

pub(crate) async fn delete_blob(store: &dyn BlobStore) {
    let bytes = random_bytes(1000);
    let (id, len) = upload(store, &[&bytes]).await;
    let digest = commit(store, &id, len, &bytes).await;
    assert!(store.stat(&digest).await.expect("stat").is_some());

    store.delete(&digest).await.expect("delete");
    assert!(store.stat(&digest).await.expect("stat").is_none());
    assert!(matches!(
        store.open(&digest, None).await,
        Err(BlobStoreError::NotFound)
    ));
    assert!(
        !store
            .list_blobs(None, usize::MAX)
            .await
            .expect("list")
            .iter()
            .any(|(d, _)| *d == digest)
    );
    store.delete(&digest).await.expect("second delete");

    // The digest can be published again after deletion.
    let (id, len) = upload(store, &[&bytes]).await;
    commit(store, &id, len, &bytes).await;
    assert_eq!(read_blob(store, &digest, None).await, bytes);
    store.delete(&digest).await.expect("delete");
}

pub(crate) async fn delete_upload_is_idempotent(store: &dyn BlobStore) {
    let (id, _) = upload(store, &[b"some bytes"]).await;
    store.delete_upload(&id).await.expect("delete_upload");
    store
        .delete_upload(&id)
        .await
        .expect("second delete_upload");
    assert!(matches!(
        store.append_upload(&id, 0).await,
        Err(BlobStoreError::UploadNotFound)
    ));
    store
        .delete_upload(&UploadId::generate())
        .await
        .expect("delete_upload of a never-created upload");
}

pub(crate) async fn list_uploads_shows_live_uploads(store: &dyn BlobStore) {
    let empty = UploadId::generate();
    store.create_upload(&empty).await.expect("create_upload");
    let (written, _) = upload(store, &[b"abc"]).await;

    let listed = store
        .list_uploads(None, usize::MAX)
        .await
        .expect("list_uploads");
    for id in [&empty, &written] {
        let (_, modified) = listed
            .iter()
            .find(|(u, _)| u == id)
            .unwrap_or_else(|| panic!("list_uploads lacks {id}"));
        assert_recent(*modified, "list_uploads");
    }

    store.delete_upload(&empty).await.expect("delete_upload");
    store.delete_upload(&written).await.expect("delete_upload");
    let listed = store
        .list_uploads(None, usize::MAX)
        .await
        .expect("list_uploads");
    assert!(!listed.iter().any(|(u, _)| *u == empty || *u == written));
}

/// Pages of one entry each, followed by their cursors, meet every created entry once and in
/// order, whatever else the store holds.
pub(crate) async fn listings_page_in_order(store: &dyn BlobStore) {
    let mut digests = Vec::new();
    let mut uploads = Vec::new();
    for _ in 0..3 {
        let bytes = random_bytes(16);
        let (id, len) = upload(store, &[&bytes]).await;
        digests.push(commit(store, &id, len, &bytes).await);
        uploads.push(upload(store, &[b"x"]).await.0);
    }
    digests.sort_by_key(ToString::to_string);
    uploads.sort_by(|a, b| a.as_str().cmp(b.as_str()));

    let mut seen_blobs = Vec::new();
    let mut cursor: Option<Digest> = None;
    loop {
        let page = store
            .list_blobs(cursor.as_ref(), 1)
            .await
            .expect("list_blobs");
        assert!(page.len() <= 1, "list_blobs returned more than its limit");
        let Some((digest, _)) = page.into_iter().next() else {
            break;
        };
        if let Some(previous) = &cursor {
            assert!(
                digest.to_string() > previous.to_string(),
                "list_blobs went backwards"
            );
        }
        seen_blobs.push(digest.clone());
        cursor = Some(digest);
    }
    let mine: Vec<_> = seen_blobs
        .iter()
        .filter(|d| digests.contains(d))
        .cloned()
        .collect();
    assert_eq!(mine, digests, "list_blobs pages lost or repeated a blob");

    let mut seen_uploads = Vec::new();
    let mut cursor: Option<UploadId> = None;
    loop {
        let page = store
            .list_uploads(cursor.as_ref(), 1)
            .await
            .expect("list_uploads");
        assert!(page.len() <= 1, "list_uploads returned more than its limit");
        let Some((id, _)) = page.into_iter().next() else {
            break;
        };
        if let Some(previous) = &cursor {
            assert!(
                id.as_str() > previous.as_str(),
                "list_uploads went backwards"
            );
        }
        seen_uploads.push(id.clone());
        cursor = Some(id);
    }
    let mine: Vec<_> = seen_uploads
        .iter()
        .filter(|u| uploads.contains(u))
        .cloned()
        .collect();
    assert_eq!(
        mine, uploads,
        "list_uploads pages lost or repeated an upload"
    );
    for id in &uploads {
        store.delete_upload(id).await.expect("delete_upload");
    }
}

pub(crate) async fn write_probe_leaves_nothing(store: &dyn BlobStore) {
    let uploads_before = store
        .list_uploads(None, usize::MAX)
        .await
        .expect("list_uploads");
    let blobs_before = store.list_blobs(None, usize::MAX).await.expect("list");
    store.check_writable().await.expect("check_writable");
    assert_eq!(
        store
            .list_uploads(None, usize::MAX)
            .await
            .expect("list_uploads"),
        uploads_before
    );
    assert_eq!(
        store.list_blobs(None, usize::MAX).await.expect("list"),
        blobs_before
    );
}

/// Bigger than one part of an object store's area (5 MiB at least) and not a multiple of it.
const LARGE: usize = (9 << 20) + 12_345;

/// `bytes` in irregular pieces, including one bigger than any sane write buffer.
fn irregular_pieces(bytes: &[u8]) -> Vec<&[u8]> {
    let sizes = [1, 16 * 1024, 64 * 1024 + 7, 3 << 20, 1, 100_000];
    let mut pieces: Vec<&[u8]> = Vec::new();
    let mut rest = bytes;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at((*size).min(rest.len()));
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

pub(crate) async fn large_blob_round_trips(store: &dyn BlobStore) {
    let bytes = random_bytes(LARGE);
    // Irregular pieces across two requests.
    let pieces = irregular_pieces(&bytes);
    let (first, second) = pieces.split_at(pieces.len() / 2);
    let id = UploadId::generate();
    store.create_upload(&id).await.expect("create_upload");
    let offset = append(store, &id, 0, first).await;
    let len = append(store, &id, offset, second).await;
    assert_eq!(len, bytes.len() as u64);

    let digest = commit(store, &id, len, &bytes).await;
    let got = read_blob(store, &digest, None).await;
    assert_eq!(got.len(), bytes.len());
    assert!(got == bytes, "large blob differs after round trip");
    let range = (256 * 1024 - 3)..(5 << 20) + 11;
    assert!(
        read_blob(store, &digest, Some(range.clone())).await
            == bytes[range.start as usize..range.end as usize],
        "large blob range differs"
    );
    store.delete(&digest).await.expect("delete");
}

/// Writes `pieces` through a fresh whole-blob writer and finishes it.
async fn receive_whole(
    store: &dyn BlobStore,
    pieces: &[&[u8]],
) -> (UploadId, Box<dyn BlobWriter>, u64) {
    let id = UploadId::generate();
    let mut writer = store.receive_blob(&id).await.expect("receive_blob");
    let mut len = 0;
    for piece in pieces {
        writer
            .write(Bytes::copy_from_slice(piece))
            .await
            .expect("write");
        len += piece.len() as u64;
    }
    writer.finish().await.expect("finish");
    (id, writer, len)
}

fn lists_upload(listed: &[(UploadId, SystemTime)], id: &UploadId) -> bool {
    listed.iter().any(|(u, _)| u == id)
}

/// Empty, within one part and over several parts: nothing visible before the publish, the
/// exact bytes after it, no area left.
pub(crate) async fn whole_blob_round_trips(store: &dyn BlobStore) {
    for len in [0, 70_000, LARGE] {
        let bytes = random_bytes(len);
        let digest = Digest::sha256_of(&bytes);
        let (id, writer, written) = receive_whole(store, &irregular_pieces(&bytes)).await;
        assert_eq!(written, len as u64);
        if len > 0 {
            // (The empty blob is shared by everyone and may exist already.)
            assert!(
                store.stat(&digest).await.expect("stat").is_none(),
                "a {len}-byte whole blob is visible before its publish"
            );
        }
        let meta = writer.publish(written, &digest).await.expect("publish");
        assert_eq!(meta.size, written, "publish reports the size");
        assert_recent(meta.modified, "publish");
        let stat = store.stat(&digest).await.expect("stat").expect("published");
        assert_eq!(stat.size, written);
        assert!(
            read_blob(store, &digest, None).await == bytes,
            "a {len}-byte whole blob differs after its publish"
        );
        let uploads = store.list_uploads(None, usize::MAX).await.expect("list");
        assert!(!lists_upload(&uploads, &id), "the publish removes the area");
        if len > 0 {
            store.delete(&digest).await.expect("delete");
        }
    }
}

/// A request that fails before the publish (a bad digest, a broken body) leaves nothing that
/// `delete_upload` does not remove, and no blob.
pub(crate) async fn whole_blob_dropped_unpublished_is_removable(store: &dyn BlobStore) {
    for len in [1_000, LARGE] {
        let bytes = random_bytes(len);
        let (id, writer, _) = receive_whole(store, &irregular_pieces(&bytes)).await;
        drop(writer);
        store.delete_upload(&id).await.expect("delete_upload");
        let uploads = store.list_uploads(None, usize::MAX).await.expect("list");
        assert!(
            !lists_upload(&uploads, &id),
            "delete_upload removes the area"
        );
        let digest = Digest::sha256_of(&bytes);
        assert!(store.stat(&digest).await.expect("stat").is_none());
    }
}

pub(crate) async fn whole_blob_of_a_stored_digest_keeps_one_copy(store: &dyn BlobStore) {
    let bytes = random_bytes(70_000);
    let (session, len) = upload(store, &[&bytes]).await;
    let digest = commit(store, &session, len, &bytes).await;
    let (id, writer, written) = receive_whole(store, &[&bytes[..9], &bytes[9..]]).await;
    let meta = writer.publish(written, &digest).await.expect("publish");
    assert_eq!(meta.size, len);
    assert_eq!(read_blob(store, &digest, None).await, bytes);
    let listed = store.list_blobs(None, usize::MAX).await.expect("list");
    assert_eq!(listed.iter().filter(|(d, _)| *d == digest).count(), 1);
    let uploads = store.list_uploads(None, usize::MAX).await.expect("list");
    assert!(!lists_upload(&uploads, &id), "the publish removes the area");
    store.delete(&digest).await.expect("delete");
}
