//! Abandoned multipart uploads (a commit interrupted before it completed or aborted its
//! upload) against a server that lists them: Garage (`testkit::multipart_s3_endpoint`), since
//! s3s-fs has no `ListMultipartUploads`. What is left is checked with the SDK's own listing,
//! not the store's.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::primitives::ByteStream as SdkByteStream;

use super::*;
use crate::testkit::multipart_s3_endpoint;

/// A store on a new bucket of the Garage server, `None` (the test skips) when it is missing.
async fn fresh_garage_store() -> Option<(S3BlobStore, TestBucket)> {
    Some(fresh_on(&multipart_s3_endpoint()?, |_| {}).await)
}

/// An open multipart upload as the server lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    key: String,
    upload_id: String,
    initiated: SystemTime,
}

/// Every multipart upload open in the bucket, in the server's order.
async fn open_uploads(store: &S3BlobStore) -> Vec<Listed> {
    let mut all = Vec::new();
    let (mut key_marker, mut id_marker) = (None, None);
    loop {
        let page = store
            .bucket
            .client
            .list_multipart_uploads()
            .bucket(&store.bucket.name)
            .set_key_marker(key_marker)
            .set_upload_id_marker(id_marker)
            .send()
            .await
            .expect("ListMultipartUploads");
        all.extend(page.uploads().iter().map(|u| Listed {
            key: u.key().expect("key").to_owned(),
            upload_id: u.upload_id().expect("upload id").to_owned(),
            initiated: SystemTime::try_from(*u.initiated().expect("initiated")).expect("time"),
        }));
        if page.is_truncated() != Some(true) {
            return all;
        }
        key_marker = page.next_key_marker().map(str::to_owned);
        id_marker = page.next_upload_id_marker().map(str::to_owned);
    }
}

/// Starts a multipart upload at `key` and stores one part in it, as a commit does before it
/// completes; returns the upload as the server lists it (with the server's start time).
async fn crashed_commit(store: &S3BlobStore, key: &str) -> Listed {
    let upload_id = store.bucket.start_multipart(key).await.expect("start");
    store
        .bucket
        .client
        .upload_part()
        .bucket(&store.bucket.name)
        .key(key)
        .upload_id(&upload_id)
        .part_number(1)
        .body(SdkByteStream::from_static(b"the first part of a blob"))
        .send()
        .await
        .expect("UploadPart");
    open_uploads(store)
        .await
        .into_iter()
        .find(|u| u.upload_id == upload_id)
        .expect("the new upload is listed")
}

fn blob_key(store: &S3BlobStore, content: &[u8]) -> String {
    store.keys.blob(&Digest::sha256_of(content))
}

/// Waits until the server's clock has moved past `after` (it stamps uploads in milliseconds
/// or seconds), so the next upload starts strictly later.
async fn after_server_tick(after: SystemTime) {
    while SystemTime::now() < after + Duration::from_millis(1100) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An upload older than the cutoff under the store's prefix is aborted; a younger one, and
/// one under another prefix of the bucket, are left alone.
#[tokio::test]
async fn only_multipart_uploads_older_than_the_cutoff_are_aborted() {
    let Some((store, _bucket)) = fresh_garage_store().await else {
        return;
    };
    let old = crashed_commit(&store, &blob_key(&store, b"old")).await;
    let foreign = crashed_commit(&store, "another-registry/blobs/sha256/00/00").await;
    let older = old.initiated.max(foreign.initiated);
    after_server_tick(older).await;
    let young = crashed_commit(&store, &blob_key(&store, b"young")).await;
    let between = young
        .initiated
        .duration_since(older)
        .expect("young is younger");
    let cutoff = older + between / 2;

    assert_eq!(
        store.collect_leftovers(cutoff).await.expect("collect"),
        1,
        "aborted"
    );
    let mut left = open_uploads(&store).await;
    left.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(left, vec![foreign, young]);
    // Nothing more to do a second time.
    assert_eq!(store.collect_leftovers(cutoff).await.expect("collect"), 0);
}

/// Listing goes on past the first page: the markers of a page whose uploads were just
/// aborted still lead to the next one. Three uploads on one key (a blob whose commits
/// crashed more than once) make one page end inside the key (the next starts after an upload
/// id) and another after its last upload (Garage then sends only the key).
#[tokio::test]
async fn abandoned_multipart_uploads_are_collected_across_pages() {
    let Some((store, _bucket)) = fresh_garage_store().await else {
        return;
    };
    // Key order: c (2e7d…) three times, b (3e23…), a (ca97…); pages of two.
    let mut started = Vec::new();
    for content in [&b"a"[..], b"b", b"c", b"c", b"c"] {
        started.push(crashed_commit(&store, &blob_key(&store, content)).await);
    }
    let newest = started.iter().map(|u| u.initiated).max().expect("uploads");
    after_server_tick(newest).await;

    let aborted = store
        .abort_abandoned_multipart(SystemTime::now(), 2)
        .await
        .expect("collect");
    assert_eq!(aborted, 5);
    assert_eq!(open_uploads(&store).await, vec![]);
}
