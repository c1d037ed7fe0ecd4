//! Blob uploads: monolithic `POST`, sessions with chunked `PATCH`es, `PUT` to finish, status,
//! cancel, digest verification (sha256 and sha512), size checks and cross-repository mounts.

use futures_util::stream;
use reqwest::Response;

use super::{Api, expect_error, expect_status, header};
use crate::support::image::{bytes_for, sha256, sha512};

const ZERO_UUID: &str = "00000000-0000-4000-8000-000000000000";

/// `PATCH` of one chunk; `range` is the inclusive `Content-Range` to declare, if any.
async fn patch(api: &Api, location: &str, chunk: &[u8], range: Option<(u64, u64)>) -> Response {
    let mut request = api
        .patch(location)
        .header("content-type", "application/octet-stream")
        .body(chunk.to_vec());
    if let Some((start, end)) = range {
        request = request.header("content-range", format!("{start}-{end}"));
    }
    api.send(request).await
}

/// Asserts a 202 chunk answer with `Range: 0-<end>` and returns the next `Location`.
async fn expect_progress(response: Response, status: u16, end: &str) -> String {
    let (headers, _) = expect_status(response, status).await;
    assert_eq!(header(&headers, "range"), end, "{headers:?}");
    header(&headers, "location").to_owned()
}

/// The upload id at the end of a session `Location`.
fn upload_id(location: &str) -> &str {
    location
        .rsplit('/')
        .next()
        .expect("id")
        .split('?')
        .next()
        .expect("id")
}

#[tokio::test]
async fn monolithic_push() {
    let api = Api::start().await;
    let bytes = bytes_for("monolithic", 3000);
    let digest = sha256(&bytes);
    let response = api
        .send(
            api.post(&format!("/v2/up/mono/blobs/uploads/?digest={digest}"))
                .header("content-type", "application/octet-stream")
                .body(bytes.clone()),
        )
        .await;
    let (headers, _) = expect_status(response, 201).await;
    assert_eq!(header(&headers, "docker-content-digest"), digest);
    let location = header(&headers, "location").to_owned();
    assert_eq!(location, api.url(&format!("/v2/up/mono/blobs/{digest}")));
    // The Location is pullable.
    let (_, body) = expect_status(api.send(api.get(&location)).await, 200).await;
    assert_eq!(body, bytes);
    // The trailing slash of the upload path is optional.
    let other = bytes_for("monolithic, no slash", 10);
    let other_digest = sha256(&other);
    let response = api
        .send(
            api.post(&format!("/v2/up/mono/blobs/uploads?digest={other_digest}"))
                .body(other.clone()),
        )
        .await;
    expect_status(response, 201).await;
    assert_eq!(api.get_blob("up/mono", &other_digest).await, (200, other));
    api.assert_no_uploads_left().await;
}

#[tokio::test]
async fn pushing_the_same_blob_twice_is_idempotent() {
    let api = Api::start().await;
    let bytes = bytes_for("twice", 500);
    let first = api.push_blob("up/twice", &bytes).await;
    let second = api.push_blob("up/twice", &bytes).await;
    assert_eq!(first, second);
    assert_eq!(api.stored_blobs().await, vec![first.clone()]);
    assert_eq!(api.get_blob("up/twice", &first).await, (200, bytes));
    api.assert_no_uploads_left().await;
}

#[tokio::test]
async fn session_start_and_status() {
    let api = Api::start().await;
    let response = api.send(api.post("/v2/up/session/blobs/uploads/")).await;
    let (headers, body) = expect_status(response, 202).await;
    assert!(body.is_empty());
    let location = header(&headers, "location").to_owned();
    let uuid = header(&headers, "docker-upload-uuid").to_owned();
    assert_eq!(header(&headers, "range"), "0-0");
    assert!(
        location.starts_with(&api.url("/v2/up/session/blobs/uploads/")),
        "{location}"
    );
    assert_eq!(upload_id(&location), uuid);
    assert!(
        uuid::Uuid::parse_str(&uuid).is_ok(),
        "upload id {uuid} is a UUID"
    );
    // The session has its byte area in the store, under its id.
    assert!(api.has_upload(&uuid).await);

    let response = api.send(api.get(&location)).await;
    let (headers, body) = expect_status(response, 204).await;
    assert!(body.is_empty());
    assert_eq!(header(&headers, "range"), "0-0");
    assert_eq!(header(&headers, "location"), location);
    assert_eq!(header(&headers, "docker-upload-uuid"), uuid);

    // Starting a session creates no repository.
    assert!(api.catalog().await.is_empty());
    let response = api.send(api.get("/v2/up/session/tags/list")).await;
    expect_error(response, 404, "NAME_UNKNOWN").await;
}

#[tokio::test]
async fn chunked_upload_with_content_range() {
    let api = Api::start().await;
    let bytes = bytes_for("chunked", 2500);
    let digest = sha256(&bytes);
    let mut location = api.start_upload("up/chunked").await;
    let uuid = upload_id(&location).to_owned();
    for (start, end) in [(0usize, 999usize), (1000, 1999), (2000, 2499)] {
        let response = patch(
            &api,
            &location,
            &bytes[start..=end],
            Some((start as u64, end as u64)),
        )
        .await;
        assert_eq!(header(response.headers(), "docker-upload-uuid"), uuid);
        location = expect_progress(response, 202, &format!("0-{end}")).await;
        assert_eq!(upload_id(&location), uuid);
        let (headers, _) = expect_status(api.send(api.get(&location)).await, 204).await;
        assert_eq!(header(&headers, "range"), format!("0-{end}"));
    }
    // Nothing is visible before the closing PUT.
    let response = api
        .send(api.get(&format!("/v2/up/chunked/blobs/{digest}")))
        .await;
    expect_error(response, 404, "BLOB_UNKNOWN").await;
    api.assert_no_blobs_stored().await;

    let response = api
        .send(api.put(&Api::with_digest(&location, &digest)))
        .await;
    let (headers, _) = expect_status(response, 201).await;
    assert_eq!(
        header(&headers, "location"),
        api.url(&format!("/v2/up/chunked/blobs/{digest}"))
    );
    assert_eq!(header(&headers, "docker-content-digest"), digest);
    assert_eq!(api.get_blob("up/chunked", &digest).await, (200, bytes));
    // The session is over.
    let response = api.send(api.get(&location)).await;
    expect_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
    api.assert_no_uploads_left().await;
}

#[tokio::test]
async fn streamed_patches_without_content_range() {
    let api = Api::start().await;
    let bytes = bytes_for("streamed", 300_000);
    let digest = sha256(&bytes);
    let mut location = api.start_upload("up/streamed").await;
    // A chunk with Content-Length, then one sent with chunked transfer encoding.
    let response = patch(&api, &location, &bytes[..100_000], None).await;
    location = expect_progress(response, 202, "0-99999").await;
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> = bytes[100_000..]
        .chunks(7_000)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let response = api
        .send(
            api.patch(&location)
                .body(reqwest::Body::wrap_stream(stream::iter(pieces))),
        )
        .await;
    location = expect_progress(response, 202, "0-299999").await;
    // An empty PATCH changes nothing.
    let response = patch(&api, &location, b"", None).await;
    location = expect_progress(response, 202, "0-299999").await;
    let response = api
        .send(api.put(&Api::with_digest(&location, &digest)))
        .await;
    expect_status(response, 201).await;
    assert_eq!(api.get_blob("up/streamed", &digest).await, (200, bytes));
}

#[tokio::test]
async fn large_chunks_of_uneven_sizes() {
    let api = Api::start().await;
    let bytes = bytes_for("large uneven chunks", 6_000_000);
    let digest = sha256(&bytes);
    let mut location = api.start_upload("up/large").await;
    let cuts = [0usize, 1_500_001, 3_800_000, 3_800_001, 5_000_000];
    for pair in cuts.windows(2) {
        let (start, end) = (pair[0], pair[1] - 1);
        let response = patch(
            &api,
            &location,
            &bytes[start..=end],
            Some((start as u64, end as u64)),
        )
        .await;
        location = expect_progress(response, 202, &format!("0-{end}")).await;
    }
    let response = api
        .send(
            api.put(&Api::with_digest(&location, &digest))
                .header("content-range", "5000000-5999999")
                .body(bytes[5_000_000..].to_vec()),
        )
        .await;
    expect_status(response, 201).await;
    let (status, body) = api.get_blob("up/large", &digest).await;
    assert_eq!(status, 200);
    assert!(
        body == bytes,
        "the blob is the exact concatenation of the chunks"
    );
    assert_eq!(api.stored_size(&digest).await, Some(6_000_000));
}

#[tokio::test]
async fn out_of_order_chunks_are_416_with_progress() {
    let api = Api::start().await;
    let bytes = bytes_for("out of order", 30);
    let digest = sha256(&bytes);
    let location = api.start_upload("up/order").await;
    let response = patch(&api, &location, &bytes[..10], Some((0, 9))).await;
    let location = expect_progress(response, 202, "0-9").await;

    // A gap, an overlap, and a restart from zero.
    for (start, end) in [(20u64, 29u64), (5, 14), (0, 9)] {
        let chunk = &bytes[start as usize..=end as usize];
        let response = patch(&api, &location, chunk, Some((start, end))).await;
        assert_eq!(response.status(), 416, "chunk {start}-{end}");
        assert_eq!(
            header(response.headers(), "location"),
            location,
            "416 still tells where the session is"
        );
        assert_eq!(
            header(response.headers(), "range"),
            "0-9",
            "416 still tells the progress"
        );
        expect_error(response, 416, "BLOB_UPLOAD_INVALID").await;
    }
    // The final chunk in the PUT is checked the same way.
    let response = api
        .send(
            api.put(&Api::with_digest(&location, &digest))
                .header("content-range", "20-29")
                .body(bytes[20..].to_vec()),
        )
        .await;
    assert_eq!(header(response.headers(), "range"), "0-9");
    expect_error(response, 416, "BLOB_UPLOAD_INVALID").await;

    let (headers, _) = expect_status(api.send(api.get(&location)).await, 204).await;
    assert_eq!(header(&headers, "range"), "0-9");
    // The session carries on from where it really is.
    let response = patch(&api, &location, &bytes[10..20], Some((10, 19))).await;
    let location = expect_progress(response, 202, "0-19").await;
    let response = api
        .send(
            api.put(&Api::with_digest(&location, &digest))
                .header("content-range", "20-29")
                .body(bytes[20..].to_vec()),
        )
        .await;
    expect_status(response, 201).await;
    assert_eq!(api.get_blob("up/order", &digest).await, (200, bytes));
}

#[tokio::test]
async fn final_chunk_in_put() {
    let api = Api::start().await;
    // Whole blob in the PUT body of a fresh session.
    let bytes = bytes_for("put only", 777);
    let digest = sha256(&bytes);
    let location = api.start_upload("up/put").await;
    let response = api
        .send(
            api.put(&Api::with_digest(&location, &digest))
                .body(bytes.clone()),
        )
        .await;
    let (headers, _) = expect_status(response, 201).await;
    assert_eq!(
        header(&headers, "location"),
        api.url(&format!("/v2/up/put/blobs/{digest}"))
    );
    assert_eq!(api.get_blob("up/put", &digest).await, (200, bytes));

    // PATCH, then the last chunk with Content-Range in the PUT.
    let bytes = bytes_for("patch then put", 64);
    let digest = sha256(&bytes);
    let location = api.start_upload("up/put").await;
    let location = expect_progress(
        patch(&api, &location, &bytes[..40], Some((0, 39))).await,
        202,
        "0-39",
    )
    .await;
    let response = api
        .send(
            api.put(&Api::with_digest(&location, &digest))
                .header("content-type", "application/octet-stream")
                .header("content-range", "40-63")
                .body(bytes[40..].to_vec()),
        )
        .await;
    expect_status(response, 201).await;
    assert_eq!(api.get_blob("up/put", &digest).await, (200, bytes));
    api.assert_no_uploads_left().await;
}

#[tokio::test]
async fn put_without_digest_is_digest_invalid() {
    let api = Api::start().await;
    let location = api.start_upload("up/nodigest").await;
    let location = expect_progress(
        patch(&api, &location, b"abc", Some((0, 2))).await,
        202,
        "0-2",
    )
    .await;
    let response = api.send(api.put(&location)).await;
    expect_error(response, 400, "DIGEST_INVALID").await;
    for bad in [
        "sha256:abc",
        "nonsense",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
    ] {
        let response = api.send(api.put(&Api::with_digest(&location, bad))).await;
        expect_error(response, 400, "DIGEST_INVALID").await;
    }
    // The session survives a request it could not act on.
    let (headers, _) = expect_status(api.send(api.get(&location)).await, 204).await;
    assert_eq!(header(&headers, "range"), "0-2");
    let response = api
        .send(api.put(&Api::with_digest(&location, &sha256(b"abc"))))
        .await;
    expect_status(response, 201).await;
}

#[tokio::test]
async fn digest_mismatch_commits_nothing_and_ends_the_session() {
    let api = Api::start().await;
    let bytes = bytes_for("mismatch", 1234);
    let claimed = sha256(b"something else entirely");
    let location = api.start_upload("up/mismatch").await;
    let location = expect_progress(patch(&api, &location, &bytes, None).await, 202, "0-1233").await;
    let response = api
        .send(api.put(&Api::with_digest(&location, &claimed)))
        .await;
    expect_error(response, 400, "DIGEST_INVALID").await;

    api.assert_no_blobs_stored().await;
    assert!(!api.has_blob(&claimed).await);
    assert!(!api.has_blob(&sha256(&bytes)).await);
    api.assert_no_uploads_left().await;
    for response in [
        api.send(api.get(&location)).await,
        api.send(api.patch(&location).body(b"more".to_vec())).await,
        api.send(api.put(&Api::with_digest(&location, &sha256(&bytes))))
            .await,
    ] {
        expect_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
    }
    for digest in [&claimed, &sha256(&bytes)] {
        let response = api
            .send(api.get(&format!("/v2/up/mismatch/blobs/{digest}")))
            .await;
        expect_error(response, 404, "BLOB_UNKNOWN").await;
    }
}

#[tokio::test]
async fn monolithic_digest_mismatch_commits_nothing() {
    let api = Api::start().await;
    let bytes = bytes_for("mono mismatch", 100);
    let claimed = sha256(b"other");
    let response = api
        .send(
            api.post(&format!("/v2/up/monomis/blobs/uploads/?digest={claimed}"))
                .body(bytes.clone()),
        )
        .await;
    expect_error(response, 400, "DIGEST_INVALID").await;
    api.assert_no_blobs_stored().await;
    api.assert_no_uploads_left().await;
    let response = api
        .send(api.get(&format!("/v2/up/monomis/blobs/{claimed}")))
        .await;
    expect_error(response, 404, "BLOB_UNKNOWN").await;
    // Malformed and unsupported digests never start anything.
    for bad in [
        "sha256:XYZ",
        "sha256",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "sha256:..%2F..%2Fetc",
    ] {
        let response = api
            .send(
                api.post(&format!("/v2/up/monomis/blobs/uploads/?digest={bad}"))
                    .body(bytes.clone()),
            )
            .await;
        expect_error(response, 400, "DIGEST_INVALID").await;
    }
    api.assert_no_blobs_stored().await;
    api.assert_no_uploads_left().await;
}

#[tokio::test]
async fn cancel_upload() {
    let api = Api::start().await;
    let location = api.start_upload("up/cancel").await;
    let location =
        expect_progress(patch(&api, &location, b"partial", None).await, 202, "0-6").await;
    let uuid = upload_id(&location).to_owned();
    assert!(api.has_upload(&uuid).await);
    let response = api.send(api.delete(&location)).await;
    let (_, body) = expect_status(response, 204).await;
    assert!(body.is_empty());
    assert!(!api.has_upload(&uuid).await, "cancelled bytes are removed");
    for response in [
        api.send(api.get(&location)).await,
        api.send(api.delete(&location)).await,
    ] {
        expect_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
    }
    api.assert_no_blobs_stored().await;
}

#[tokio::test]
async fn unknown_and_malformed_upload_ids_are_404() {
    let api = Api::start().await;
    api.start_upload("up/ids").await; // a real session exists, but not these
    let digest = sha256(b"x");
    for id in [
        ZERO_UUID,
        "not-a-uuid",
        "12345",
        "00000000-0000-4000-8000-00000000000g",
    ] {
        let location = format!("/v2/up/ids/blobs/uploads/{id}");
        let requests = [
            api.get(&location),
            api.patch(&location).body(b"x".to_vec()),
            api.put(&Api::with_digest(&location, &digest))
                .body(b"x".to_vec()),
            api.delete(&location),
        ];
        for request in requests {
            let response = api.send(request).await;
            expect_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
        }
    }
    api.assert_no_blobs_stored().await;
}

#[tokio::test]
async fn upload_ids_are_bound_to_their_repository() {
    let api = Api::start().await;
    let location = api.start_upload("up/owner").await;
    let location = expect_progress(
        patch(&api, &location, b"0123456789", None).await,
        202,
        "0-9",
    )
    .await;
    let uuid = upload_id(&location).to_owned();
    let digest = sha256(b"0123456789");
    for repo in ["up/other", "up", "up/owner/sub"] {
        let stolen = format!("/v2/{repo}/blobs/uploads/{uuid}");
        let requests = [
            api.get(&stolen),
            api.patch(&stolen).body(b"more".to_vec()),
            api.put(&Api::with_digest(&stolen, &digest)),
            api.delete(&stolen),
        ];
        for request in requests {
            expect_error(api.send(request).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
        }
    }
    // The owner's session is untouched and still completes.
    let (headers, _) = expect_status(api.send(api.get(&location)).await, 204).await;
    assert_eq!(header(&headers, "range"), "0-9");
    expect_status(
        api.send(api.put(&Api::with_digest(&location, &digest)))
            .await,
        201,
    )
    .await;
    let response = api
        .send(api.get(&format!("/v2/up/other/blobs/{digest}")))
        .await;
    expect_error(response, 404, "BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn content_range_must_match_the_body() {
    let api = Api::start().await;
    let bytes = bytes_for("content range checks", 20);
    let digest = sha256(&bytes);
    let location = api.start_upload("up/lengths").await;
    let location = expect_progress(
        patch(&api, &location, &bytes[..5], Some((0, 4))).await,
        202,
        "0-4",
    )
    .await;

    // Content-Range says 10 bytes, Content-Length (and the body) say 5.
    let response = patch(&api, &location, &bytes[5..10], Some((5, 14))).await;
    assert_eq!(header(response.headers(), "range"), "0-4");
    expect_error(response, 416, "BLOB_UPLOAD_INVALID").await;

    // Content-Range says 10 bytes; a chunked body (no Content-Length) carries 5.
    let short: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(bytes[5..10].to_vec())];
    let response = api
        .send(
            api.patch(&location)
                .header("content-range", "5-14")
                .body(reqwest::Body::wrap_stream(stream::iter(short))),
        )
        .await;
    assert_eq!(header(response.headers(), "range"), "0-4");
    expect_error(response, 400, "SIZE_INVALID").await;

    // Content-Range says 5 bytes; a chunked body carries 15.
    let long: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(bytes[5..].to_vec())];
    let response = api
        .send(
            api.patch(&location)
                .header("content-range", "5-9")
                .body(reqwest::Body::wrap_stream(stream::iter(long))),
        )
        .await;
    assert_eq!(header(response.headers(), "range"), "0-4");
    expect_error(response, 400, "SIZE_INVALID").await;

    // A Content-Range that is not start-end, or ends before it starts.
    for bad in ["bytes */20", "5", "9-5", "five-nine"] {
        let response = api
            .send(
                api.patch(&location)
                    .header("content-range", bad)
                    .body(bytes[5..10].to_vec()),
            )
            .await;
        assert_eq!(response.status(), 416, "Content-Range {bad:?}");
        assert_eq!(
            header(response.headers(), "range"),
            "0-4",
            "Content-Range {bad:?}"
        );
    }

    // None of that moved the session or published anything.
    let (headers, _) = expect_status(api.send(api.get(&location)).await, 204).await;
    assert_eq!(header(&headers, "range"), "0-4");
    api.assert_no_blobs_stored().await;
    let location = expect_progress(
        patch(&api, &location, &bytes[5..], Some((5, 19))).await,
        202,
        "0-19",
    )
    .await;
    expect_status(
        api.send(api.put(&Api::with_digest(&location, &digest)))
            .await,
        201,
    )
    .await;
    assert_eq!(api.get_blob("up/lengths", &digest).await, (200, bytes));
}

/// `0-18446744073709551615` is 2^64 bytes, one more than a length can count: the length
/// computation overflowed (a panic with overflow checks, `0` and a `202` without).
#[tokio::test]
async fn content_range_whose_length_overflows_is_416() {
    let api = Api::start().await;
    let location = api.start_upload("up/overflow").await;
    let response = api
        .send(
            api.patch(&location)
                .header("content-range", "0-18446744073709551615")
                .body(Vec::new()),
        )
        .await;
    assert_eq!(header(response.headers(), "range"), "0-0");
    expect_error(response, 416, "BLOB_UPLOAD_INVALID").await;
    let (headers, _) = expect_status(api.send(api.get(&location)).await, 204).await;
    assert_eq!(header(&headers, "range"), "0-0", "the session did not move");
}

#[tokio::test]
async fn content_length_smaller_than_the_body_commits_nothing() {
    let api = Api::start().await;
    let bytes = bytes_for("lying length", 10);
    let digest = sha256(&bytes);
    // The server reads exactly Content-Length bytes: those 5 do not hash to the digest of 10.
    let response = api
        .raw(
            &format!("POST /v2/up/liar/blobs/uploads/?digest={digest} HTTP/1.1"),
            &[
                ("Content-Length", "5"),
                ("Content-Type", "application/octet-stream"),
            ],
            &bytes,
            false,
        )
        .await
        .expect("an answer");
    response.expect_error(400, "DIGEST_INVALID");
    api.assert_no_blobs_stored().await;
    api.assert_no_uploads_left().await;

    // Chunk of a session: Content-Range covers 10 bytes, Content-Length says 5.
    let location = api.start_upload("up/liar").await;
    let response = api
        .raw(
            &format!("PATCH {location} HTTP/1.1"),
            &[("Content-Length", "5"), ("Content-Range", "0-9")],
            &bytes,
            false,
        )
        .await
        .expect("an answer");
    response.expect_error(416, "BLOB_UPLOAD_INVALID");
    let (headers, _) = expect_status(api.send(api.get(&location)).await, 204).await;
    assert_eq!(header(&headers, "range"), "0-0", "nothing was appended");
    let response = api
        .send(api.get(&format!("/v2/up/liar/blobs/{digest}")))
        .await;
    expect_error(response, 404, "BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn body_shorter_than_content_length_commits_nothing() {
    let api = Api::start().await;
    let bytes = bytes_for("truncated", 10);
    let digest = sha256(&bytes);
    // Declares 100 bytes, sends 10, then closes its side: the body fails mid-way.
    let answer = api
        .raw(
            &format!("POST /v2/up/short/blobs/uploads/?digest={digest} HTTP/1.1"),
            &[("Content-Length", "100")],
            &bytes,
            true,
        )
        .await;
    if let Some(response) = answer {
        assert!(
            response.status >= 400,
            "a truncated body must fail: {response:?}"
        );
    }
    let response = api
        .send(api.get(&format!("/v2/up/short/blobs/{digest}")))
        .await;
    expect_error(response, 404, "BLOB_UNKNOWN").await;
    api.assert_no_blobs_stored().await;

    // Same on a session chunk: the session does not advance.
    let location = api.start_upload("up/short").await;
    let answer = api
        .raw(
            &format!("PATCH {location} HTTP/1.1"),
            &[("Content-Length", "100")],
            &bytes,
            true,
        )
        .await;
    if let Some(response) = answer {
        assert!(
            response.status >= 400,
            "a truncated body must fail: {response:?}"
        );
    }
    // The failed request may still be releasing the session when we ask.
    let mut range = String::new();
    for _ in 0..50 {
        let response = api.send(api.get(&location)).await;
        if response.status() == 204 {
            range = header(response.headers(), "range").to_owned();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(range, "0-0", "the truncated chunk was not counted");
    api.assert_no_blobs_stored().await;
}

#[tokio::test]
async fn sha512_uploads() {
    let api = Api::start().await;
    let bytes = bytes_for("sha512 session", 5000);
    let digest = sha512(&bytes);

    // A session hashing with sha512 from the start.
    let response = api
        .send(api.post("/v2/up/sha512/blobs/uploads/?digest-algorithm=sha512"))
        .await;
    let (headers, _) = expect_status(response, 202).await;
    let location = header(&headers, "location").to_owned();
    let location = expect_progress(
        patch(&api, &location, &bytes[..3000], Some((0, 2999))).await,
        202,
        "0-2999",
    )
    .await;
    let location = expect_progress(
        patch(&api, &location, &bytes[3000..], Some((3000, 4999))).await,
        202,
        "0-4999",
    )
    .await;
    let response = api
        .send(api.put(&Api::with_digest(&location, &digest)))
        .await;
    let (headers, _) = expect_status(response, 201).await;
    assert_eq!(header(&headers, "docker-content-digest"), digest);
    assert_eq!(
        header(&headers, "location"),
        api.url(&format!("/v2/up/sha512/blobs/{digest}"))
    );
    assert!(
        api.has_blob(&digest).await,
        "stored under its sha512 digest"
    );
    let response = api
        .send(api.get(&format!("/v2/up/sha512/blobs/{digest}")))
        .await;
    let (headers, body) = expect_status(response, 200).await;
    assert_eq!(body, bytes);
    assert_eq!(header(&headers, "docker-content-digest"), digest);

    // Monolithic sha512 push.
    let other = bytes_for("sha512 monolithic", 100);
    let other_digest = sha512(&other);
    let response = api
        .send(
            api.post(&format!(
                "/v2/up/sha512/blobs/uploads/?digest={other_digest}"
            ))
            .body(other.clone()),
        )
        .await;
    expect_status(response, 201).await;
    assert_eq!(api.get_blob("up/sha512", &other_digest).await, (200, other));

    // An algorithm the registry cannot verify is refused up front.
    let response = api
        .send(api.post("/v2/up/sha512/blobs/uploads/?digest-algorithm=md5"))
        .await;
    expect_error(response, 400, "DIGEST_INVALID").await;
    api.assert_no_uploads_left().await;
}

#[tokio::test]
async fn closing_digest_of_the_other_algorithm_rehashes() {
    let api = Api::start().await;
    // sha256 session (the default), closed with a sha512 digest.
    let bytes = bytes_for("rehash to 512", 4096);
    let location = api.start_upload("up/rehash").await;
    let location = expect_progress(
        patch(&api, &location, &bytes[..1000], None).await,
        202,
        "0-999",
    )
    .await;
    let location = expect_progress(
        patch(&api, &location, &bytes[1000..], None).await,
        202,
        "0-4095",
    )
    .await;
    let digest = sha512(&bytes);
    expect_status(
        api.send(api.put(&Api::with_digest(&location, &digest)))
            .await,
        201,
    )
    .await;
    assert_eq!(
        api.get_blob("up/rehash", &digest).await,
        (200, bytes.clone())
    );

    // sha512 session closed with a sha256 digest.
    let bytes = bytes_for("rehash to 256", 2048);
    let response = api
        .send(api.post("/v2/up/rehash/blobs/uploads/?digest-algorithm=sha512"))
        .await;
    let (headers, _) = expect_status(response, 202).await;
    let location = header(&headers, "location").to_owned();
    let location = expect_progress(patch(&api, &location, &bytes, None).await, 202, "0-2047").await;
    let digest = sha256(&bytes);
    expect_status(
        api.send(api.put(&Api::with_digest(&location, &digest)))
            .await,
        201,
    )
    .await;
    assert_eq!(
        api.get_blob("up/rehash", &digest).await,
        (200, bytes.clone())
    );

    // A wrong digest of the other algorithm is still a mismatch.
    let location = api.start_upload("up/rehash").await;
    let location = expect_progress(patch(&api, &location, &bytes, None).await, 202, "0-2047").await;
    let response = api
        .send(api.put(&Api::with_digest(&location, &sha512(b"not these bytes"))))
        .await;
    expect_error(response, 400, "DIGEST_INVALID").await;
    api.assert_no_uploads_left().await;
}

#[tokio::test]
async fn cross_repository_mount() {
    let api = Api::start().await;
    let bytes = bytes_for("mount me", 2000);
    let digest = api.push_blob("mount/source", &bytes).await;

    let response = api
        .send(api.post(&format!(
            "/v2/mount/target/blobs/uploads/?mount={digest}&from=mount/source"
        )))
        .await;
    let (headers, _) = expect_status(response, 201).await;
    assert_eq!(
        header(&headers, "location"),
        api.url(&format!("/v2/mount/target/blobs/{digest}"))
    );
    assert_eq!(header(&headers, "docker-content-digest"), digest);
    let response = api.send(api.get(header(&headers, "location"))).await;
    let (_, body) = expect_status(response, 200).await;
    assert_eq!(body, bytes);
    // No copy was made.
    assert_eq!(api.stored_blobs().await, vec![digest.clone()]);
    api.assert_no_uploads_left().await;

    // Mounting the same blob again is fine.
    let response = api
        .send(api.post(&format!(
            "/v2/mount/target/blobs/uploads/?mount={digest}&from=mount/source"
        )))
        .await;
    expect_status(response, 201).await;
}

#[tokio::test]
async fn mount_falls_back_to_an_upload_session() {
    let api = Api::start().await;
    let bytes = bytes_for("not mountable", 300);
    let digest = api.push_blob("mount/has", &bytes).await;
    let never = sha256(b"never pushed anywhere");
    let cases = [
        format!("?mount={digest}&from=mount/lacks"), // source repo does not have it
        format!("?mount={never}&from=mount/has"),    // nobody has it
        format!("?mount={digest}"),                  // no source given
        format!("?mount={digest}&from=mount/nothere"), // source repo does not exist
    ];
    for query in cases {
        let response = api
            .send(api.post(&format!("/v2/mount/dest/blobs/uploads/{query}")))
            .await;
        let (headers, _) = expect_status(response, 202).await;
        let location = header(&headers, "location").to_owned();
        assert!(
            location.starts_with(&api.url("/v2/mount/dest/blobs/uploads/")),
            "{query}: {location}"
        );
        assert_eq!(header(&headers, "range"), "0-0");
        assert_eq!(upload_id(&location), header(&headers, "docker-upload-uuid"));
        let (headers, _) = expect_status(api.send(api.get(&location)).await, 204).await;
        assert_eq!(header(&headers, "range"), "0-0");
        let response = api.send(api.delete(&location)).await;
        expect_status(response, 204).await;
    }
    // The fallback session is a normal upload session.
    let response = api
        .send(api.post(&format!(
            "/v2/mount/dest/blobs/uploads/?mount={digest}&from=mount/lacks"
        )))
        .await;
    let (headers, _) = expect_status(response, 202).await;
    let location = header(&headers, "location").to_owned();
    expect_status(
        api.send(
            api.put(&Api::with_digest(&location, &digest))
                .body(bytes.clone()),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(api.get_blob("mount/dest", &digest).await, (200, bytes));

    // A blob whose link was deleted from the source cannot be mounted from there.
    let other = bytes_for("deleted link", 50);
    let other_digest = api.push_blob("mount/deleted", &other).await;
    expect_status(
        api.send(api.delete(&format!("/v2/mount/deleted/blobs/{other_digest}")))
            .await,
        202,
    )
    .await;
    let response = api
        .send(api.post(&format!(
            "/v2/mount/dest2/blobs/uploads/?mount={other_digest}&from=mount/deleted"
        )))
        .await;
    expect_status(response, 202).await;

    // Bad parameters are refused.
    let response = api
        .send(api.post("/v2/mount/dest/blobs/uploads/?mount=sha256:nothex&from=mount/has"))
        .await;
    expect_error(response, 400, "DIGEST_INVALID").await;
    let response = api
        .send(api.post(&format!(
            "/v2/mount/dest/blobs/uploads/?mount={digest}&from=Mount/Has"
        )))
        .await;
    expect_error(response, 400, "NAME_INVALID").await;
}
