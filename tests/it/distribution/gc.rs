//! Garbage collection through the loopback admin endpoint `POST /api/v1/admin/gc`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{Api, expect_error, expect_status, header};
use crate::support::image::{OCI_MANIFEST, TestImage, bytes_for, manifest_bytes, sha256};

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Metadata keeps whole-second timestamps and GC removes what is strictly older than its
/// cutoff, so with a zero grace period content becomes collectable in the next second.
async fn wait_for_next_second() {
    let start = now_secs();
    while now_secs() <= start {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn report(blobs: u64, uploads: u64, orphan_blobs: u64, orphan_uploads: u64) -> Value {
    json!({
        "blobs_deleted": blobs,
        "uploads_deleted": uploads,
        "orphan_blobs_deleted": orphan_blobs,
        "orphan_uploads_deleted": orphan_uploads,
        // What an object store keeps for uploads beyond their areas; every session here ends
        // or is collected through its area.
        "leftovers_deleted": 0,
    })
}

#[tokio::test]
async fn gc_collects_unreferenced_content_and_keeps_referenced_blobs() {
    let api = Api::start_with(|config| config.gc.grace_period_seconds = 0).await;
    let repo = "gc/app";
    let image = TestImage::new("gc image");
    api.push_image(repo, "v1", &image).await;
    // Pushed but never referenced.
    let loose = bytes_for("loose blob", 500);
    let loose_digest = api.push_blob(repo, &loose).await;
    // The image's layer, also linked (unreferenced) in another repository.
    api.push_blob("gc/other", &image.layers[0].bytes()).await;
    // An upload session with some bytes, then abandoned.
    let location = api.start_upload(repo).await;
    let response = api
        .send(api.patch(&location).body(b"abandoned bytes".to_vec()))
        .await;
    let (headers, _) = expect_status(response, 202).await;
    let abandoned = header(&headers, "location").to_owned();
    let abandoned_id = header(&headers, "docker-upload-uuid").to_owned();
    // Bytes metadata never heard of: a blob and an upload area left by a crash.
    let orphan_digest = api.store_orphan_blob(&bytes_for("orphan blob", 300)).await;
    let orphan_upload = api
        .store_orphan_upload(b"left by a crash")
        .await
        .to_string();
    assert!(api.has_blob(&orphan_digest).await);
    assert!(api.has_upload(&orphan_upload).await);

    wait_for_next_second().await;
    assert_eq!(api.gc().await, report(1, 1, 1, 1));

    // Gone: the loose blob, the abandoned session, the orphans.
    assert!(
        !api.has_blob(&loose_digest).await,
        "unreferenced blob deleted"
    );
    let response = api
        .send(api.get(&format!("/v2/{repo}/blobs/{loose_digest}")))
        .await;
    expect_error(response, 404, "BLOB_UNKNOWN").await;
    expect_error(
        api.send(api.get(&abandoned)).await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert!(!api.has_upload(&abandoned_id).await);
    assert!(!api.has_blob(&orphan_digest).await, "orphan blob deleted");
    assert!(
        !api.has_upload(&orphan_upload).await,
        "orphan upload area deleted"
    );
    api.assert_no_uploads_left().await;

    // Kept: everything the manifest references, still served.
    for blob in image.blobs() {
        let digest = &blob.digest;
        assert!(api.has_blob(digest).await, "referenced blob {digest} kept");
        assert_eq!(api.get_blob(repo, digest).await, (200, blob.bytes()));
    }
    let (status, _, body) = api.get_manifest(repo, "v1").await;
    assert_eq!((status, body), (200, image.manifest.clone()));
    // The other repository's unreferenced link went, the shared bytes did not.
    let response = api
        .send(api.get(&format!("/v2/gc/other/blobs/{}", image.layer_digest(0))))
        .await;
    expect_error(response, 404, "BLOB_UNKNOWN").await;

    // Nothing left to collect.
    assert_eq!(api.gc().await, report(0, 0, 0, 0));

    // Once the manifest is deleted, its blobs are garbage.
    let response = api
        .send(api.delete(&format!("/v2/{repo}/manifests/{}", image.digest)))
        .await;
    expect_status(response, 202).await;
    assert_eq!(api.gc().await, report(2, 0, 0, 0));
    for digest in [image.config_digest(), image.layer_digest(0)] {
        assert!(
            !api.has_blob(&digest).await,
            "{digest} deleted after its manifest"
        );
        let response = api
            .send(api.get(&format!("/v2/{repo}/blobs/{digest}")))
            .await;
        expect_error(response, 404, "BLOB_UNKNOWN").await;
    }
    api.assert_no_blobs_stored().await;

    // The registry accepts the same content again afterwards.
    api.push_image(repo, "v1", &TestImage::new("gc image"))
        .await;
    let (status, _, body) = api.get_manifest(repo, "v1").await;
    assert_eq!((status, body), (200, image.manifest));
}

#[tokio::test]
async fn gc_keeps_blobs_still_referenced_by_another_manifest() {
    let api = Api::start_with(|config| config.gc.grace_period_seconds = 0).await;
    let repo = "gc/shared";
    let first = TestImage::new("shared gc");
    api.push_image(repo, "a", &first).await;
    // A second manifest over the same blobs (different annotations, so a different digest).
    let mut value: Value = serde_json::from_slice(&first.manifest).expect("json");
    value["annotations"] = json!({ "second": "yes" });
    let second = manifest_bytes(&value);
    api.push_manifest(repo, "b", OCI_MANIFEST, &second).await;

    wait_for_next_second().await;
    expect_status(
        api.send(api.delete(&format!("/v2/{repo}/manifests/{}", first.digest)))
            .await,
        202,
    )
    .await;
    assert_eq!(api.gc().await, report(0, 0, 0, 0));
    assert_eq!(
        api.get_blob(repo, &first.layer_digest(0)).await,
        (200, first.layers[0].bytes())
    );
    assert!(api.has_blob(&first.config_digest()).await);
}

#[tokio::test]
async fn gc_respects_the_grace_period() {
    let api = Api::start_with(|config| config.gc.grace_period_seconds = 3600).await;
    let repo = "gc/grace";
    let fresh = bytes_for("fresh unreferenced blob", 400);
    let digest = api.push_blob(repo, &fresh).await;
    let location = api.start_upload(repo).await;
    let response = api
        .send(api.patch(&location).body(b"in progress".to_vec()))
        .await;
    let (headers, _) = expect_status(response, 202).await;
    let location = header(&headers, "location").to_owned();
    // A fresh orphan blob is also left alone: it may be a push about to be linked.
    let orphan = api.store_orphan_blob(&bytes_for("fresh orphan", 100)).await;

    wait_for_next_second().await;
    assert_eq!(api.gc().await, report(0, 0, 0, 0));
    assert!(api.has_blob(&digest).await);
    assert!(api.has_blob(&orphan).await);
    assert_eq!(api.get_blob(repo, &digest).await, (200, fresh));
    // The session carries on and completes.
    let (headers, _) = expect_status(api.send(api.get(&location)).await, 204).await;
    assert_eq!(header(&headers, "range"), "0-10");
    let response = api
        .send(api.put(&Api::with_digest(&location, &sha256(b"in progress"))))
        .await;
    expect_status(response, 201).await;
}

#[tokio::test]
async fn gc_endpoint_only_accepts_post() {
    let api = Api::start().await;
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let response = api
            .send(api.request(method.clone(), "/api/v1/admin/gc"))
            .await;
        assert_eq!(response.status(), 405, "{method}");
    }
}

#[tokio::test]
async fn gc_is_not_hidden_by_warm_caches() {
    let api = Api::start_with(|config| config.gc.grace_period_seconds = 0).await;
    let image = TestImage::new("warm caches");
    api.push_image("gc/warm", "v1", &image).await;
    let loose = bytes_for("warm loose blob", 100);
    let loose_digest = api.push_blob("gc/warm", &loose).await;
    api.push_blob("gc/warm-other", &image.layers[0].bytes())
        .await;
    // Look everything up first, so any cache in front of metadata is warm.
    for (repo, digest) in [
        ("gc/warm", &loose_digest),
        ("gc/warm-other", &image.layer_digest(0)),
    ] {
        let path = format!("/v2/{repo}/blobs/{digest}");
        expect_status(api.send(api.head(&path)).await, 200).await;
        expect_status(api.send(api.get(&path)).await, 200).await;
    }

    wait_for_next_second().await;
    assert_eq!(api.gc().await, report(1, 0, 0, 0));
    // Collected content is gone at once, for HEAD as much as for GET.
    for (repo, digest) in [
        ("gc/warm", &loose_digest),
        ("gc/warm-other", &image.layer_digest(0)),
    ] {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let response = api.send(api.head(&path)).await;
        assert_eq!(response.status(), 404, "HEAD {path} after GC removed it");
        expect_error(api.send(api.get(&path)).await, 404, "BLOB_UNKNOWN").await;
    }
    assert_eq!(
        api.get_blob("gc/warm", &image.layer_digest(0)).await,
        (200, image.layers[0].bytes())
    );
}

/// A blob GC deletes while a client is downloading it arrives whole: the response streams from
/// the file the request opened (mapped, on the filesystem store), which the delete only unlinks.
/// Big enough that most of it is still unsent (socket buffers hold a few MiB) when GC runs.
#[tokio::test]
async fn a_blob_collected_mid_download_arrives_whole() {
    let api = Api::start_with(|config| config.gc.grace_period_seconds = 0).await;
    let repo = "gc/streaming";
    let blob = bytes_for("collected while streaming", 48 << 20);
    let digest = api.push_blob(repo, &blob).await;
    let mut response = api
        .send(api.get(&format!("/v2/{repo}/blobs/{digest}")))
        .await;
    assert_eq!(response.status(), 200);
    let mut got = response.chunk().await.unwrap().unwrap().to_vec();

    wait_for_next_second().await;
    assert_eq!(api.gc().await["blobs_deleted"], 1);
    assert!(!api.has_blob(&digest).await);
    while let Some(chunk) = response.chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got.len(), blob.len());
    assert!(got == blob, "the download changed under GC");
}
