//! Concurrent pushes of the same content: every request succeeds, the store ends consistent.

use std::collections::HashSet;

use futures_util::future::join_all;
use serde_json::json;

use super::{Api, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, bytes_for, descriptor_of, expect_status, header, manifest_bytes, oci_manifest, sha256};

#[tokio::test]
async fn concurrent_monolithic_pushes_of_one_blob() {
    let api = Api::start().await;
    let bytes = bytes_for("concurrent blob", 4 << 20);
    let digest = sha256(&bytes);
    let pushes = (0..8).map(|i| {
        let repo = if i % 2 == 0 { "conc/even" } else { "conc/odd" };
        let request = api.post(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")).body(bytes.clone());
        async move { request.send().await.expect("request") }
    });
    for response in join_all(pushes).await {
        let (headers, _) = expect_status(response, 201).await;
        assert_eq!(header(&headers, "docker-content-digest"), digest);
    }
    assert_eq!(api.blob_files(), vec![api.blob_file(&digest)], "exactly one stored copy");
    assert_eq!(std::fs::read(api.blob_file(&digest)).expect("blob"), bytes);
    api.assert_no_uploads_left();
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
    let config = manifest_bytes(&json!({ "os": "linux", "architecture": "amd64" }));
    let layer = bytes_for("shared layer", 1000);
    api.push_blob(repo, &config).await;
    api.push_blob(repo, &layer).await;
    let manifests: Vec<Vec<u8>> = (0..8)
        .map(|i| {
            let mut m = oci_manifest(descriptor_of(OCI_CONFIG, &config), vec![descriptor_of(OCI_LAYER, &layer)]);
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
    assert!(digests.contains(&winner), "the tag points at one of the pushed manifests");
    assert_eq!(sha256(&body), winner, "and serves that manifest's bytes");
    assert_eq!(api.tags(repo).await, ["race"]);
    // Every manifest was stored and stays reachable by digest.
    for m in &manifests {
        let (status, _, body) = api.get_manifest(repo, &sha256(m)).await;
        assert_eq!((status, &body), (200, m));
    }
}
