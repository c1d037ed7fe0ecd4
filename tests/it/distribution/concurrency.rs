//! Concurrent pushes of the same content: every request succeeds, the store ends consistent.

use std::collections::HashSet;

use futures_util::future::join_all;
use serde_json::{Value, json};

use super::{Api, expect_error, expect_status, header};
use crate::support::image::{OCI_MANIFEST, TestImage, bytes_for, manifest_bytes, sha256};

#[tokio::test]
async fn concurrent_monolithic_pushes_of_one_blob() {
    let api = Api::start().await;
    let bytes = bytes_for("concurrent blob", 4 << 20);
    let digest = sha256(&bytes);
    let pushes = (0..8).map(|i| {
        let repo = if i % 2 == 0 { "conc/even" } else { "conc/odd" };
        let request = api
            .post(&format!("/v2/{repo}/blobs/uploads/?digest={digest}"))
            .body(bytes.clone());
        async move { request.send().await.expect("request") }
    });
    for response in join_all(pushes).await {
        let (headers, _) = expect_status(response, 201).await;
        assert_eq!(header(&headers, "docker-content-digest"), digest);
    }
    assert_eq!(
        api.stored_blobs().await,
        vec![digest.clone()],
        "exactly one stored copy"
    );
    assert!(api.stored_bytes(&digest).await == bytes);
    api.assert_no_uploads_left().await;
    for repo in ["conc/even", "conc/odd"] {
        let (status, body) = api.get_blob(repo, &digest).await;
        assert_eq!(status, 200);
        assert!(body == bytes, "{repo} serves the exact bytes");
    }
}

#[tokio::test]
async fn concurrent_manifest_puts_to_one_tag() {
    let api = Api::start().await;
    let repo = "conc/tag";
    let image = TestImage::new("shared layer");
    api.push_blobs(repo, &image).await;
    let manifests: Vec<Vec<u8>> = (0..8)
        .map(|i| {
            let mut m: Value = serde_json::from_slice(&image.manifest).expect("json");
            m["annotations"] = json!({ "writer": i.to_string() });
            manifest_bytes(&m)
        })
        .collect();
    let digests: HashSet<String> = manifests.iter().map(|m| sha256(m)).collect();
    assert_eq!(digests.len(), 8);

    let puts = manifests.iter().map(|m| {
        let request = api
            .put(&format!("/v2/{repo}/manifests/race"))
            .header("content-type", OCI_MANIFEST)
            .body(m.clone());
        async move { request.send().await.expect("request") }
    });
    for response in join_all(puts).await {
        let (headers, _) = expect_status(response, 201).await;
        assert!(digests.contains(header(&headers, "docker-content-digest")));
    }

    let (status, headers, body) = api.get_manifest(repo, "race").await;
    assert_eq!(status, 200);
    let winner = header(&headers, "docker-content-digest").to_owned();
    assert!(
        digests.contains(&winner),
        "the tag points at one of the pushed manifests"
    );
    assert_eq!(sha256(&body), winner, "and serves that manifest's bytes");
    assert_eq!(api.tags(repo).await, ["race"]);
    // Every manifest was stored and stays reachable by digest.
    for m in &manifests {
        let (status, _, body) = api.get_manifest(repo, &sha256(m)).await;
        assert_eq!((status, &body), (200, m));
    }
}

#[tokio::test]
async fn concurrent_sessions_finishing_the_same_blob() {
    let api = Api::start().await;
    let bytes = bytes_for("concurrent sessions", 3 << 20);
    let digest = sha256(&bytes);
    let mut locations = Vec::new();
    for _ in 0..4 {
        let location = api.start_upload("conc/sessions").await;
        let response = api
            .send(api.patch(&location).body(bytes[..1 << 20].to_vec()))
            .await;
        let (headers, _) = expect_status(response, 202).await;
        locations.push(header(&headers, "location").to_owned());
    }
    let puts = locations.iter().map(|location| {
        let request = api
            .put(&Api::with_digest(location, &digest))
            .body(bytes[1 << 20..].to_vec());
        async move { request.send().await.expect("request") }
    });
    for response in join_all(puts).await {
        expect_status(response, 201).await;
    }
    assert_eq!(api.stored_blobs().await, vec![digest.clone()]);
    assert!(api.stored_bytes(&digest).await == bytes);
    api.assert_no_uploads_left().await;
}

#[tokio::test]
async fn racing_patches_on_one_session_never_mix_bytes() {
    let api = Api::start().await;
    let first = bytes_for("racer one", 2 << 20);
    let second = bytes_for("racer two", 2 << 20);
    let location = api.start_upload("conc/race").await;
    let end = (2 << 20) - 1;
    let patches = [&first, &second].map(|chunk| {
        let request = api
            .patch(&location)
            .header("content-range", format!("0-{end}"))
            .body(chunk.clone());
        async move { request.send().await }
    });
    let mut accepted = 0;
    for result in join_all(patches).await {
        // The loser may be answered before its body is sent, and the connection closed under
        // the rest of it: then the client sees a transport error instead of the answer.
        let Ok(response) = result else { continue };
        let status = response.status().as_u16();
        let (_, body) = expect_status(response, status).await;
        match status {
            202 => accepted += 1,
            // Lost the race: the session was busy, or had already moved past byte 0.
            400 | 416 => {
                let value: serde_json::Value = serde_json::from_slice(&body).expect("error body");
                assert_eq!(value["errors"][0]["code"], "BLOB_UPLOAD_INVALID", "{value}");
            }
            other => panic!(
                "unexpected status {other}: {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }
    assert_eq!(accepted, 1, "exactly one of the chunks was accepted");
    let (headers, _) = expect_status(api.send(api.get(&location)).await, 204).await;
    assert_eq!(
        header(&headers, "range"),
        format!("0-{end}"),
        "exactly one chunk counted"
    );
    // Whichever won, the session holds exactly its bytes: finishing with the first racer's
    // digest either publishes the first racer's bytes or reports the second's as actual.
    let response = api
        .send(api.put(&Api::with_digest(&location, &sha256(&first))))
        .await;
    if response.status() == 201 {
        assert_eq!(
            api.get_blob("conc/race", &sha256(&first)).await,
            (200, first)
        );
    } else {
        let (_, error) = expect_error(response, 400, "DIGEST_INVALID").await;
        assert_eq!(error["detail"]["actual"], sha256(&second), "{error}");
    }
}
