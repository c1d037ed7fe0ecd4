//! Blob `GET`/`HEAD` (whole and ranged), repository scoping and `DELETE`.

use super::{Api, expect_error, expect_status, header};
use crate::support::image::{OCI_LAYER, TestImage, bytes_for, sha256, sha512};

#[tokio::test]
async fn get_and_head_a_blob() {
    let api = Api::start().await;
    let bytes = bytes_for("get and head", 4321);
    let digest = api.push_blob("blobs/app", &bytes).await;

    let response = api
        .send(api.get(&format!("/v2/blobs/app/blobs/{digest}")))
        .await;
    let (headers, body) = expect_status(response, 200).await;
    assert_eq!(body, bytes);
    assert_eq!(header(&headers, "content-length"), "4321");
    assert_eq!(header(&headers, "docker-content-digest"), digest);
    assert_eq!(
        header(&headers, "docker-distribution-api-version"),
        "registry/2.0"
    );
    assert_eq!(sha256(&body), digest, "the body matches the digest");

    let response = api
        .send(api.head(&format!("/v2/blobs/app/blobs/{digest}")))
        .await;
    let (headers, body) = expect_status(response, 200).await;
    assert!(body.is_empty(), "HEAD has no body");
    assert_eq!(header(&headers, "content-length"), "4321");
    assert_eq!(header(&headers, "docker-content-digest"), digest);

    // The store holds it under its digest, with the exact bytes.
    assert_eq!(api.stored_bytes(&digest).await, bytes);
}

#[tokio::test]
async fn empty_blob_round_trips() {
    let api = Api::start().await;
    let digest = api.push_blob("blobs/empty", b"").await;
    assert_eq!(
        digest,
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let response = api
        .send(api.get(&format!("/v2/blobs/empty/blobs/{digest}")))
        .await;
    let (headers, body) = expect_status(response, 200).await;
    assert!(body.is_empty());
    assert_eq!(header(&headers, "content-length"), "0");
    assert_eq!(header(&headers, "docker-content-digest"), digest);
}

#[tokio::test]
async fn percent_encoded_colon_in_digest_is_accepted() {
    let api = Api::start().await;
    let bytes = b"encoded colon".to_vec();
    let digest = api.push_blob("blobs/enc", &bytes).await;
    let encoded = digest.replace(':', "%3A");
    assert_eq!(api.get_blob("blobs/enc", &encoded).await, (200, bytes));
}

#[tokio::test]
async fn range_requests() {
    let api = Api::start().await;
    let bytes = bytes_for("ranges", 100);
    let digest = api.push_blob("blobs/ranges", &bytes).await;
    let path = format!("/v2/blobs/ranges/blobs/{digest}");

    // (Range header, expected bytes, expected Content-Range)
    let cases: [(&str, std::ops::Range<usize>, &str); 5] = [
        ("bytes=0-9", 0..10, "bytes 0-9/100"),
        ("bytes=10-19", 10..20, "bytes 10-19/100"),
        ("bytes=-5", 95..100, "bytes 95-99/100"),
        ("bytes=90-", 90..100, "bytes 90-99/100"),
        // An end past the size is clamped (RFC 9110).
        ("bytes=50-1000", 50..100, "bytes 50-99/100"),
    ];
    for (range, expected, content_range) in cases {
        let response = api.send(api.get(&path).header("range", range)).await;
        let (headers, body) = expect_status(response, 206).await;
        assert_eq!(body, bytes[expected.clone()], "{range}");
        assert_eq!(header(&headers, "content-range"), content_range, "{range}");
        assert_eq!(
            header(&headers, "content-length"),
            expected.len().to_string(),
            "{range}"
        );
        assert_eq!(header(&headers, "docker-content-digest"), digest);
    }

    // Unsatisfiable: starts at or past the end.
    for range in ["bytes=100-", "bytes=200-300"] {
        let response = api.send(api.get(&path).header("range", range)).await;
        assert_eq!(response.status(), 416, "{range}");
        assert_eq!(
            header(response.headers(), "content-range"),
            "bytes */100",
            "{range}"
        );
        let (_, body) = expect_status(response, 416).await;
        let value: serde_json::Value =
            serde_json::from_slice(&body).expect("416 body is an OCI error");
        assert!(value["errors"][0]["code"].is_string(), "{value}");
    }

    // A header that is not a byte range is ignored: the whole blob.
    let response = api.send(api.get(&path).header("range", "pages=1-2")).await;
    let (_, body) = expect_status(response, 200).await;
    assert_eq!(body, bytes);
}

/// The empty blob has no byte a range could start at: `416` with `bytes */0` (it was a `500`
/// on `GET` and a `206` announcing one byte on `HEAD`). A suffix longer than a blob is the
/// whole blob (RFC 9110 §14.1.3), not a `416`; a suffix of the empty blob is all of it: `200`.
#[tokio::test]
async fn ranges_on_the_empty_blob_and_suffixes_longer_than_the_blob() {
    let api = Api::start().await;
    let empty = format!(
        "/v2/blobs/edges/blobs/{}",
        api.push_blob("blobs/edges", b"").await
    );
    for range in ["bytes=0-0", "bytes=0-", "bytes=0-100"] {
        let response = api.send(api.head(&empty).header("range", range)).await;
        assert_eq!(response.status(), 416, "HEAD {range}");
        assert_eq!(
            header(response.headers(), "content-range"),
            "bytes */0",
            "HEAD {range}"
        );
        let response = api.send(api.get(&empty).header("range", range)).await;
        assert_eq!(
            header(response.headers(), "content-range"),
            "bytes */0",
            "GET {range}"
        );
        expect_error(response, 416, "BLOB_UPLOAD_INVALID").await;
    }
    let response = api.send(api.get(&empty).header("range", "bytes=-5")).await;
    let (headers, body) = expect_status(response, 200).await;
    assert!(body.is_empty());
    assert_eq!(header(&headers, "content-length"), "0");

    let bytes = bytes_for("ten bytes", 10);
    let ten = format!(
        "/v2/blobs/edges/blobs/{}",
        api.push_blob("blobs/edges", &bytes).await
    );
    let response = api.send(api.get(&ten).header("range", "bytes=-11")).await;
    let (headers, body) = expect_status(response, 206).await;
    assert_eq!(body, bytes);
    assert_eq!(header(&headers, "content-range"), "bytes 0-9/10");
    assert_eq!(header(&headers, "content-length"), "10");
}

#[tokio::test]
async fn unknown_blob_is_404_blob_unknown() {
    let api = Api::start().await;
    api.push_blob("blobs/known", b"something").await;
    let unknown = sha256(b"never pushed");
    for repo in ["blobs/known", "blobs/never-created"] {
        let response = api
            .send(api.get(&format!("/v2/{repo}/blobs/{unknown}")))
            .await;
        expect_error(response, 404, "BLOB_UNKNOWN").await;
        let response = api
            .send(api.head(&format!("/v2/{repo}/blobs/{unknown}")))
            .await;
        let (headers, body) = expect_status(response, 404).await;
        assert!(body.is_empty(), "HEAD error has no body");
        assert_eq!(
            header(&headers, "docker-distribution-api-version"),
            "registry/2.0"
        );
    }
    // sha512 digests are addressable too, and unknown ones are just unknown.
    let unknown512 = sha512(b"never pushed");
    let response = api
        .send(api.get(&format!("/v2/blobs/known/blobs/{unknown512}")))
        .await;
    expect_error(response, 404, "BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn blobs_are_scoped_to_their_repository() {
    let api = Api::start().await;
    let bytes = b"only in repo a".to_vec();
    let digest = api.push_blob("scope/a", &bytes).await;
    assert_eq!(api.get_blob("scope/a", &digest).await, (200, bytes.clone()));
    // Same bytes on disk, but repository b never received or mounted them.
    for repo in ["scope/b", "scope", "scope/a/b"] {
        let response = api
            .send(api.get(&format!("/v2/{repo}/blobs/{digest}")))
            .await;
        expect_error(response, 404, "BLOB_UNKNOWN").await;
        let response = api
            .send(api.head(&format!("/v2/{repo}/blobs/{digest}")))
            .await;
        assert_eq!(response.status(), 404, "{repo}");
    }
    // Deleting from b is refused too and leaves a alone.
    let response = api
        .send(api.delete(&format!("/v2/scope/b/blobs/{digest}")))
        .await;
    expect_error(response, 404, "BLOB_UNKNOWN").await;
    assert_eq!(api.get_blob("scope/a", &digest).await, (200, bytes));
}

#[tokio::test]
async fn delete_blob_then_404() {
    let api = Api::start().await;
    let bytes = b"to be deleted".to_vec();
    let digest = api.push_blob("blobs/del", &bytes).await;
    let other = api.push_blob("blobs/keep", &bytes).await;
    assert_eq!(digest, other);

    let response = api
        .send(api.delete(&format!("/v2/blobs/del/blobs/{digest}")))
        .await;
    expect_status(response, 202).await;
    let response = api
        .send(api.get(&format!("/v2/blobs/del/blobs/{digest}")))
        .await;
    expect_error(response, 404, "BLOB_UNKNOWN").await;
    let response = api
        .send(api.head(&format!("/v2/blobs/del/blobs/{digest}")))
        .await;
    assert_eq!(response.status(), 404);
    // A second delete has nothing to delete.
    let response = api
        .send(api.delete(&format!("/v2/blobs/del/blobs/{digest}")))
        .await;
    expect_error(response, 404, "BLOB_UNKNOWN").await;
    // A manifest can no longer reference it in this repository.
    let image = TestImage::builder("deleted layer")
        .layer_of(OCI_LAYER, bytes.clone())
        .build();
    api.push_blob("blobs/del", &image.config.bytes()).await;
    let response = api
        .put_manifest("blobs/del", "v1", &image.media_type, &image.manifest)
        .await;
    expect_error(response, 400, "MANIFEST_BLOB_UNKNOWN").await;
    // The other repository still serves the same bytes.
    assert_eq!(
        api.get_blob("blobs/keep", &digest).await,
        (200, bytes.clone())
    );
    // And the blob can be pushed again.
    api.push_blob("blobs/del", &bytes).await;
    assert_eq!(api.get_blob("blobs/del", &digest).await, (200, bytes));
}
