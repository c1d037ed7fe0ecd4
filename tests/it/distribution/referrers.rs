//! Manifests with a `subject`: the `OCI-Subject` header and the referrers API.

use serde_json::{Value, json};

use super::{Api, expect_error, expect_status, header};
use crate::support::image::{
    OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, TestImage, bytes_for, descriptor_of, manifest_bytes, sha256,
};

const SBOM: &str = "application/vnd.example.sbom.v1";
const SIGNATURE_CONFIG: &str = "application/vnd.example.signature.config.v1+json";

/// Pushes an artifact manifest (by digest) about `subject`; returns (digest, bytes, size).
async fn push_referrer(api: &Api, repo: &str, manifest: &Value) -> (String, Vec<u8>) {
    let bytes = manifest_bytes(manifest);
    let digest = sha256(&bytes);
    let media_type = manifest["mediaType"].as_str().expect("mediaType");
    let response = api.put_manifest(repo, &digest, media_type, &bytes).await;
    let (headers, _) = expect_status(response, 201).await;
    if let Some(subject) = manifest["subject"]["digest"].as_str() {
        assert_eq!(
            header(&headers, "oci-subject"),
            subject,
            "OCI-Subject names the processed subject"
        );
    } else {
        assert!(
            headers.get("oci-subject").is_none(),
            "no subject, no OCI-Subject: {headers:?}"
        );
    }
    (digest, bytes)
}

/// `GET …/referrers/<digest>[?query]`: asserts 200 and the index shape; returns the headers and
/// the descriptors sorted by digest.
async fn referrers(
    api: &Api,
    repo: &str,
    subject: &str,
    query: &str,
) -> (reqwest::header::HeaderMap, Vec<Value>) {
    let response = api
        .send(api.get(&format!("/v2/{repo}/referrers/{subject}{query}")))
        .await;
    let (headers, body) = expect_status(response, 200).await;
    assert_eq!(header(&headers, "content-type"), OCI_INDEX);
    let index: Value = serde_json::from_slice(&body).expect("referrers body is JSON");
    assert_eq!(index["schemaVersion"], 2, "{index}");
    assert_eq!(index["mediaType"], OCI_INDEX, "{index}");
    let mut manifests = index["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("manifests array: {index}"))
        .clone();
    manifests.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
    (headers, manifests)
}

fn sorted(mut descriptors: Vec<Value>) -> Vec<Value> {
    descriptors.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
    descriptors
}

#[tokio::test]
async fn referrers_api_lists_artifacts_about_a_subject() {
    let api = Api::start().await;
    let repo = "ref/app";
    let subject = TestImage::new("referrers subject");
    api.push_image(repo, "v1", &subject).await;
    let subject_descriptor = descriptor_of(OCI_MANIFEST, &subject.manifest);
    let empty = api.push_blob(repo, b"{}").await;
    assert_eq!(empty, sha256(b"{}"));
    let empty_descriptor = descriptor_of(OCI_EMPTY, b"{}");
    let sbom_layer = bytes_for("sbom content", 200);
    api.push_blob(repo, &sbom_layer).await;
    let signature_config = manifest_bytes(&json!({ "signature": "abc" }));
    api.push_blob(repo, &signature_config).await;

    // An artifact with an explicit artifactType.
    let sbom_annotations = json!({
        "org.opencontainers.image.created": "2024-01-01T00:00:00Z",
        "org.example.sbom.format": "json"
    });
    let sbom = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SBOM,
        "config": empty_descriptor,
        "layers": [descriptor_of("application/spdx+json", &sbom_layer)],
        "subject": subject_descriptor,
        "annotations": sbom_annotations
    });
    let (sbom_digest, sbom_bytes) = push_referrer(&api, repo, &sbom).await;

    // No artifactType: the config's media type stands in for it.
    let signature = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor_of(SIGNATURE_CONFIG, &signature_config),
        "layers": [],
        "subject": subject_descriptor,
        "annotations": { "org.example.signature.fingerprint": "abcd" }
    });
    let (signature_digest, signature_bytes) = push_referrer(&api, repo, &signature).await;

    // An index with a subject and no artifactType: artifactType is omitted.
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor_of(OCI_MANIFEST, &subject.manifest)],
        "subject": subject_descriptor,
        "annotations": { "org.opencontainers.image.created": "2024-02-02T00:00:00Z" }
    });
    let (index_digest, index_bytes) = push_referrer(&api, repo, &index).await;

    // A manifest without subject is nobody's referrer (and gets no OCI-Subject).
    let unrelated = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SBOM,
        "config": empty_descriptor, "layers": []
    });
    push_referrer(&api, repo, &unrelated).await;

    let (headers, listed) = referrers(&api, repo, &subject.digest, "").await;
    assert!(
        headers.get("oci-filters-applied").is_none(),
        "no filter requested: {headers:?}"
    );
    let expected = sorted(vec![
        json!({
            "mediaType": OCI_MANIFEST, "digest": sbom_digest, "size": sbom_bytes.len(),
            "artifactType": SBOM, "annotations": sbom_annotations
        }),
        json!({
            "mediaType": OCI_MANIFEST, "digest": signature_digest, "size": signature_bytes.len(),
            "artifactType": SIGNATURE_CONFIG,
            "annotations": { "org.example.signature.fingerprint": "abcd" }
        }),
        json!({
            "mediaType": OCI_INDEX, "digest": index_digest, "size": index_bytes.len(),
            "annotations": { "org.opencontainers.image.created": "2024-02-02T00:00:00Z" }
        }),
    ]);
    assert_eq!(listed, expected);

    // Filtered by artifactType.
    let (headers, listed) = referrers(
        &api,
        repo,
        &subject.digest,
        &format!("?artifactType={SBOM}"),
    )
    .await;
    assert_eq!(header(&headers, "oci-filters-applied"), "artifactType");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["digest"], sbom_digest);
    // `+` must be percent-encoded in a query (a bare `+` means a space).
    let encoded = SIGNATURE_CONFIG.replace('+', "%2B");
    let (headers, listed) = referrers(
        &api,
        repo,
        &subject.digest,
        &format!("?artifactType={encoded}"),
    )
    .await;
    assert_eq!(header(&headers, "oci-filters-applied"), "artifactType");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["digest"], signature_digest);
    let (headers, listed) = referrers(
        &api,
        repo,
        &subject.digest,
        "?artifactType=application/vnd.example.none",
    )
    .await;
    assert_eq!(header(&headers, "oci-filters-applied"), "artifactType");
    assert!(listed.is_empty());

    // Deleting a referrer takes it off the list.
    expect_status(
        api.send(api.delete(&format!("/v2/{repo}/manifests/{signature_digest}")))
            .await,
        202,
    )
    .await;
    let (_, listed) = referrers(&api, repo, &subject.digest, "").await;
    let digests: Vec<&str> = listed
        .iter()
        .map(|d| d["digest"].as_str().unwrap())
        .collect();
    let mut expected = vec![sbom_digest.as_str(), index_digest.as_str()];
    expected.sort();
    assert_eq!(digests, expected);

    // Referrers belong to their repository.
    api.push_image("ref/other", "v1", &TestImage::new("referrers subject"))
        .await;
    let (_, listed) = referrers(&api, "ref/other", &subject.digest, "").await;
    assert!(listed.is_empty(), "{listed:?}");
}

#[tokio::test]
async fn subject_need_not_exist() {
    let api = Api::start().await;
    let repo = "ref/dangling";
    api.push_blob(repo, b"{}").await;
    let absent = sha256(b"a manifest pushed later, or never");
    let artifact = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SBOM,
        "config": descriptor_of(OCI_EMPTY, b"{}"), "layers": [],
        "subject": { "mediaType": OCI_MANIFEST, "digest": absent, "size": 1234 }
    });
    let (digest, _) = push_referrer(&api, repo, &artifact).await;
    let (_, listed) = referrers(&api, repo, &absent, "").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["digest"], digest);
    assert_eq!(listed[0]["artifactType"], SBOM);
    assert!(
        listed[0].get("annotations").is_none() || listed[0]["annotations"].is_null(),
        "{listed:?}"
    );
}

#[tokio::test]
async fn referrers_of_unknown_subjects_are_empty_and_bad_digests_400() {
    let api = Api::start().await;
    let image = TestImage::new("no referrers");
    api.push_image("ref/empty", "v1", &image).await;
    for (repo, subject) in [
        ("ref/empty", image.digest.clone()), // exists, nobody refers to it
        ("ref/empty", sha256(b"unknown subject")), // unknown subject
        ("ref/never-created", sha256(b"unknown repo")), // unknown repository: still not a 404
    ] {
        let (_, listed) = referrers(&api, repo, &subject, "").await;
        assert!(listed.is_empty(), "{repo} {subject}: {listed:?}");
    }
    for bad in [
        "sha256:abc",
        "sha256:XYZ",
        "notadigest:",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
    ] {
        let response = api
            .send(api.get(&format!("/v2/ref/empty/referrers/{bad}")))
            .await;
        expect_error(response, 400, "DIGEST_INVALID").await;
    }
    let response = api.send(api.get("/v2/ref/empty/referrers/latest")).await;
    assert_eq!(response.status(), 400, "a tag is not a subject");
}
