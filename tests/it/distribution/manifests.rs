//! Manifest `PUT`/`GET`/`HEAD`/`DELETE`: exact bytes, digests, media types, validation,
//! references that must exist, size limit, `Accept` negotiation, tags.

use serde_json::{Value, json};

use super::{Api, expect_error, expect_status, header, header_values};
use crate::support::image::{
    DOCKER_CONFIG, DOCKER_LIST, DOCKER_MANIFEST, DOCKER_SCHEMA1_SIGNED, OCI_INDEX, OCI_LAYER,
    OCI_MANIFEST, Platform, TestImage, descriptor, descriptor_of, docker_list, docker_manifest,
    manifest_bytes, oci_index, oci_manifest, sha256, sha512,
};

/// Pushes a linux/arm64 Docker schema 2 image's blobs and returns the image (its manifest not
/// pushed).
async fn docker_image(api: &Api, repo: &str, seed: &str) -> TestImage {
    let image = TestImage::builder(seed)
        .docker()
        .platform(Platform::new("linux", "arm64"))
        .sized_layers(&[700])
        .build();
    api.push_blobs(repo, &image).await;
    image
}

/// An OCI image listed under linux/arm64, unique to `seed`.
fn arm64_image(seed: &str) -> TestImage {
    TestImage::builder(seed)
        .platform(Platform::new("linux", "arm64"))
        .sized_layers(&[1000])
        .build()
}

/// Asserts a manifest answer: status 200, exact bytes, type and digest headers.
async fn expect_manifest(api: &Api, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
    let path = format!("/v2/{repo}/manifests/{reference}");
    let (headers, body) = expect_status(api.send(api.get(&path)).await, 200).await;
    assert_eq!(body, bytes, "GET {path} returns the exact bytes pushed");
    assert_eq!(header(&headers, "content-type"), media_type, "GET {path}");
    assert_eq!(
        header(&headers, "docker-content-digest"),
        sha256(bytes),
        "GET {path}"
    );
    assert_eq!(
        header(&headers, "content-length"),
        bytes.len().to_string(),
        "GET {path}"
    );

    let (head_headers, head_body) = expect_status(api.send(api.head(&path)).await, 200).await;
    assert!(head_body.is_empty(), "HEAD {path} has no body");
    for name in ["content-type", "docker-content-digest", "content-length"] {
        assert_eq!(
            header(&head_headers, name),
            header(&headers, name),
            "HEAD {path}: {name}"
        );
    }
}

#[tokio::test]
async fn put_by_tag_then_get_by_tag_and_digest() {
    let api = Api::start().await;
    let image = TestImage::new("basic");
    api.push_image("man/basic", "v1", &image).await;
    assert_eq!(image.digest, sha256(&image.manifest));
    expect_manifest(&api, "man/basic", "v1", OCI_MANIFEST, &image.manifest).await;
    expect_manifest(
        &api,
        "man/basic",
        &image.digest,
        OCI_MANIFEST,
        &image.manifest,
    )
    .await;
    let encoded = image.digest.replace(':', "%3A");
    expect_manifest(&api, "man/basic", &encoded, OCI_MANIFEST, &image.manifest).await;
    assert_eq!(api.tags("man/basic").await, ["v1"]);
}

#[tokio::test]
async fn put_by_digest() {
    let api = Api::start().await;
    let image = TestImage::new("by digest");
    api.push_blobs("man/bydigest", &image).await;
    let (manifest, digest) = (image.manifest, image.digest);

    // A digest that does not match the bytes is refused and nothing is stored.
    let wrong = sha256(b"another manifest");
    let response = api
        .put_manifest("man/bydigest", &wrong, OCI_MANIFEST, &manifest)
        .await;
    expect_error(response, 400, "DIGEST_INVALID").await;
    for reference in [&wrong, &digest] {
        let response = api
            .send(api.get(&format!("/v2/man/bydigest/manifests/{reference}")))
            .await;
        expect_error(response, 404, "MANIFEST_UNKNOWN").await;
    }
    let response = api
        .put_manifest("man/bydigest", "sha256:1234", OCI_MANIFEST, &manifest)
        .await;
    expect_error(response, 400, "DIGEST_INVALID").await;

    // The right digest works and creates no tag.
    api.push_manifest("man/bydigest", &digest, OCI_MANIFEST, &manifest)
        .await;
    expect_manifest(&api, "man/bydigest", &digest, OCI_MANIFEST, &manifest).await;
    assert!(api.tags("man/bydigest").await.is_empty());
    assert_eq!(api.catalog().await, ["man/bydigest"]);

    // A sha512 reference is verified with sha512.
    let digest512 = sha512(&manifest);
    let response = api
        .put_manifest("man/bydigest", &digest512, OCI_MANIFEST, &manifest)
        .await;
    let (headers, _) = expect_status(response, 201).await;
    assert_eq!(header(&headers, "docker-content-digest"), digest512);
    assert_eq!(
        header(&headers, "location"),
        api.url(&format!("/v2/man/bydigest/manifests/{digest512}"))
    );
    let (headers, body) = expect_status(
        api.send(api.get(&format!("/v2/man/bydigest/manifests/{digest512}")))
            .await,
        200,
    )
    .await;
    assert_eq!(body, manifest);
    assert_eq!(header(&headers, "docker-content-digest"), digest512);
}

#[tokio::test]
async fn all_supported_manifest_types_are_accepted() {
    let api = Api::start().await;
    let repo = "man/types";
    // OCI image manifest.
    let amd64 = TestImage::new("types amd64");
    api.push_image(repo, "oci-amd64", &amd64).await;
    let arm64 = arm64_image("types arm64");
    api.push_image(repo, "oci-arm64", &arm64).await;
    // OCI index over them.
    let index = manifest_bytes(&oci_index(vec![amd64.index_entry(), arm64.index_entry()]));
    api.push_manifest(repo, "oci-index", OCI_INDEX, &index)
        .await;
    expect_manifest(&api, repo, "oci-index", OCI_INDEX, &index).await;
    // Docker schema 2.
    let docker = docker_image(&api, repo, "types docker").await;
    api.push_manifest(repo, "docker", DOCKER_MANIFEST, &docker.manifest)
        .await;
    expect_manifest(&api, repo, "docker", DOCKER_MANIFEST, &docker.manifest).await;
    // Docker manifest list.
    let list = manifest_bytes(&docker_list(vec![docker.index_entry()]));
    api.push_manifest(repo, "docker-list", DOCKER_LIST, &list)
        .await;
    expect_manifest(&api, repo, "docker-list", DOCKER_LIST, &list).await;
    // An index of an index.
    let nested = manifest_bytes(&oci_index(vec![descriptor_of(OCI_INDEX, &index)]));
    api.push_manifest(repo, "nested", OCI_INDEX, &nested).await;

    let mut tags = api.tags(repo).await;
    tags.sort();
    assert_eq!(
        tags,
        [
            "docker",
            "docker-list",
            "nested",
            "oci-amd64",
            "oci-arm64",
            "oci-index"
        ]
    );
}

#[tokio::test]
async fn media_type_from_header_or_body() {
    let api = Api::start().await;
    let repo = "man/mediatype";
    let image = TestImage::new("media type");
    api.push_blobs(repo, &image).await;
    // No mediaType field: the Content-Type says what it is.
    let mut value: Value = serde_json::from_slice(&image.manifest).expect("manifest json");
    value.as_object_mut().expect("object").remove("mediaType");
    let bare = manifest_bytes(&value);
    api.push_manifest(repo, "from-header", OCI_MANIFEST, &bare)
        .await;
    expect_manifest(&api, repo, "from-header", OCI_MANIFEST, &bare).await;

    // mediaType field with a generic Content-Type (with parameters): the field wins.
    let full = image.manifest;
    api.push_manifest(repo, "generic", "application/json; charset=utf-8", &full)
        .await;
    expect_manifest(&api, repo, "generic", OCI_MANIFEST, &full).await;

    // Neither says: an OCI image manifest is recognised by its config.
    let response = api
        .send(
            api.put(&format!("/v2/{repo}/manifests/no-type"))
                .body(bare.clone()),
        )
        .await;
    expect_status(response, 201).await;
    expect_manifest(&api, repo, "no-type", OCI_MANIFEST, &bare).await;
}

#[tokio::test]
async fn foreign_layers_need_no_blob() {
    let api = Api::start().await;
    let repo = "man/foreign";
    let config = manifest_bytes(&json!({ "os": "windows", "architecture": "amd64" }));
    api.push_blob(repo, &config).await;
    let mut foreign = descriptor(
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        &sha256(b"windows base layer"),
        123_456,
    );
    foreign["urls"] = json!(["https://example.invalid/layer"]);
    let manifest = manifest_bytes(&docker_manifest(
        descriptor_of(DOCKER_CONFIG, &config),
        vec![foreign],
    ));
    api.push_manifest(repo, "windows", DOCKER_MANIFEST, &manifest)
        .await;
    expect_manifest(&api, repo, "windows", DOCKER_MANIFEST, &manifest).await;
}

#[tokio::test]
async fn manifest_referencing_unknown_blob_is_refused_and_stores_nothing() {
    let api = Api::start().await;
    let repo = "man/missing";
    let existing = TestImage::new("existing");
    api.push_image(repo, "v1", &existing).await;

    let image = TestImage::new("missing layer");
    let (config, layer, manifest) = (
        image.config.bytes(),
        image.layers[0].bytes(),
        image.manifest,
    );
    api.push_blob(repo, &config).await; // the layer is never pushed
    let response = api.put_manifest(repo, "v2", OCI_MANIFEST, &manifest).await;
    let (_, error) = expect_error(response, 400, "MANIFEST_BLOB_UNKNOWN").await;
    assert_eq!(
        error["detail"]["unknown"],
        json!([sha256(&layer)]),
        "{error}"
    );

    let response = api.send(api.get(&format!("/v2/{repo}/manifests/v2"))).await;
    expect_error(response, 404, "MANIFEST_UNKNOWN").await;
    let response = api
        .send(api.get(&format!("/v2/{repo}/manifests/{}", sha256(&manifest))))
        .await;
    expect_error(response, 404, "MANIFEST_UNKNOWN").await;
    assert_eq!(api.tags(repo).await, ["v1"]);
    expect_manifest(&api, repo, "v1", OCI_MANIFEST, &existing.manifest).await;

    // A blob another repository holds does not count.
    api.push_blob("man/elsewhere", &layer).await;
    let response = api.put_manifest(repo, "v2", OCI_MANIFEST, &manifest).await;
    expect_error(response, 400, "MANIFEST_BLOB_UNKNOWN").await;
    // Pushing by digest fails the same way.
    let response = api
        .put_manifest(repo, &sha256(&manifest), OCI_MANIFEST, &manifest)
        .await;
    expect_error(response, 400, "MANIFEST_BLOB_UNKNOWN").await;

    // In a fresh repository the failed push creates no repository at all.
    let response = api
        .put_manifest("man/fresh", "v1", OCI_MANIFEST, &manifest)
        .await;
    let (_, error) = expect_error(response, 400, "MANIFEST_BLOB_UNKNOWN").await;
    let mut unknown: Vec<String> = error["detail"]["unknown"]
        .as_array()
        .expect("detail.unknown")
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect();
    unknown.sort();
    let mut expected = vec![sha256(&config), sha256(&layer)];
    expected.sort();
    assert_eq!(unknown, expected);
    let response = api.send(api.get("/v2/man/fresh/tags/list")).await;
    expect_error(response, 404, "NAME_UNKNOWN").await;
    let mut catalog = api.catalog().await;
    catalog.sort();
    assert_eq!(catalog, ["man/missing"]);

    // Once the layer arrives the same push succeeds.
    api.push_blob(repo, &layer).await;
    api.push_manifest(repo, "v2", OCI_MANIFEST, &manifest).await;
    assert_eq!(api.tags(repo).await, ["v1", "v2"]);
}

/// The CVE-2021-41190 class over HTTP: `layers` names a pushed blob, `Layers` an absent one
/// that Go clients would pull instead. Refused, like any descriptor whose size is not the
/// stored blob's; nothing is stored either way.
#[tokio::test]
async fn manifests_go_clients_would_read_differently_are_refused() {
    let api = Api::start().await;
    let repo = "man/ambiguous";
    let image = TestImage::new("ambiguous");
    api.push_blobs(repo, &image).await;
    let manifest = image.manifest;
    let mut json: serde_json::Value = serde_json::from_slice(&manifest).expect("manifest json");
    let mut shadow = json["layers"].clone();
    shadow[0]["digest"] = json!(sha256(b"never pushed"));
    json["Layers"] = shadow;
    let body = serde_json::to_vec(&json).expect("json");
    let response = api.put_manifest(repo, "v1", OCI_MANIFEST, &body).await;
    let (_, error) = expect_error(response, 400, "MANIFEST_INVALID").await;
    assert!(
        error["message"].as_str().unwrap_or("").contains("Layers"),
        "{error}"
    );

    let mut json: serde_json::Value = serde_json::from_slice(&manifest).expect("manifest json");
    json["layers"][0]["size"] = json!(999_999);
    let body = serde_json::to_vec(&json).expect("json");
    let response = api.put_manifest(repo, "v1", OCI_MANIFEST, &body).await;
    let (_, error) = expect_error(response, 400, "MANIFEST_INVALID").await;
    assert!(
        error["message"].as_str().unwrap_or("").contains("999999"),
        "{error}"
    );

    assert!(api.tags(repo).await.is_empty());
    api.push_manifest(repo, "v1", OCI_MANIFEST, &manifest).await;
}

#[tokio::test]
async fn index_referencing_unknown_child_is_refused() {
    let api = Api::start().await;
    let present = TestImage::new("index present");
    api.push_image("man/index", "present", &present).await;
    let elsewhere = arm64_image("index elsewhere");
    api.push_image("man/other", "elsewhere", &elsewhere).await;
    let never_pushed = arm64_image("never pushed child");

    for missing in [&elsewhere, &never_pushed] {
        let index = manifest_bytes(&oci_index(vec![
            present.index_entry(),
            missing.index_entry(),
        ]));
        let response = api
            .put_manifest("man/index", "multi", OCI_INDEX, &index)
            .await;
        let (_, error) = expect_error(response, 400, "MANIFEST_BLOB_UNKNOWN").await;
        assert_eq!(
            error["detail"]["unknown"],
            json!([missing.digest]),
            "{error}"
        );
        let response = api.send(api.get("/v2/man/index/manifests/multi")).await;
        expect_error(response, 404, "MANIFEST_UNKNOWN").await;
    }
    // A Docker manifest list is checked the same way.
    let never_pushed = TestImage::builder("never pushed docker child")
        .docker()
        .sized_layers(&[1000])
        .build();
    let list = manifest_bytes(&docker_list(vec![never_pushed.index_entry()]));
    let response = api
        .put_manifest("man/index", "list", DOCKER_LIST, &list)
        .await;
    expect_error(response, 400, "MANIFEST_BLOB_UNKNOWN").await;
    assert_eq!(api.tags("man/index").await, ["present"]);
}

#[tokio::test]
async fn invalid_manifests_are_manifest_invalid() {
    let api = Api::start().await;
    let repo = "man/invalid";
    let image = TestImage::new("invalid");
    api.push_blobs(repo, &image).await;
    let (config, layer) = (&image.config, &image.layers[0]);
    let cfg = config.descriptor().to_json();
    let lyr = layer.descriptor().to_json();

    let schema1 = json!({
        "schemaVersion": 1,
        "mediaType": DOCKER_SCHEMA1_SIGNED,
        "name": repo, "tag": "v1", "architecture": "amd64",
        "fsLayers": [{ "blobSum": layer.digest }],
        "history": [{ "v1Compatibility": "{}" }],
        "signatures": []
    });
    let schema1_unsigned = json!({
        "schemaVersion": 1, "name": repo, "tag": "v1", "architecture": "amd64",
        "fsLayers": [{ "blobSum": layer.digest }], "history": []
    });
    let mut missing_config = oci_manifest(cfg.clone(), vec![lyr.clone()]);
    missing_config.as_object_mut().unwrap().remove("config");
    let mut missing_layers = oci_manifest(cfg.clone(), vec![lyr.clone()]);
    missing_layers.as_object_mut().unwrap().remove("layers");
    let mut no_schema_version = oci_manifest(cfg.clone(), vec![lyr.clone()]);
    no_schema_version
        .as_object_mut()
        .unwrap()
        .remove("schemaVersion");
    let mut index_with_layers = oci_index(vec![]);
    index_with_layers["layers"] = json!([lyr.clone()]);
    let mut manifest_with_manifests = oci_manifest(cfg.clone(), vec![lyr.clone()]);
    manifest_with_manifests["manifests"] = json!([]);
    let bad_digest = oci_manifest(
        cfg.clone(),
        vec![json!({ "mediaType": OCI_LAYER, "digest": "sha256:nothex", "size": 1 })],
    );
    let no_size = oci_manifest(
        cfg.clone(),
        vec![json!({ "mediaType": OCI_LAYER, "digest": layer.digest })],
    );
    let negative_size = oci_manifest(cfg.clone(), vec![descriptor(OCI_LAYER, &layer.digest, 0)]);
    let mut negative_size = negative_size;
    negative_size["layers"][0]["size"] = json!(-1);
    let no_media_type_descriptor = oci_manifest(
        json!({ "digest": config.digest, "size": config.size }),
        vec![lyr.clone()],
    );
    let mut unsupported_type = oci_manifest(cfg.clone(), vec![lyr.clone()]);
    unsupported_type["mediaType"] = json!("application/vnd.example.unknown+json");

    // (what, Content-Type, body)
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "docker schema1 (signed)",
            DOCKER_SCHEMA1_SIGNED,
            manifest_bytes(&schema1),
        ),
        (
            "docker schema1 (unsigned)",
            "application/vnd.docker.distribution.manifest.v1+json",
            manifest_bytes(&schema1_unsigned),
        ),
        ("garbage", OCI_MANIFEST, b"this is not json {".to_vec()),
        ("empty body", OCI_MANIFEST, Vec::new()),
        ("json array", OCI_MANIFEST, b"[1, 2, 3]".to_vec()),
        (
            "missing config",
            OCI_MANIFEST,
            manifest_bytes(&missing_config),
        ),
        (
            "missing layers",
            OCI_MANIFEST,
            manifest_bytes(&missing_layers),
        ),
        (
            "no schemaVersion",
            OCI_MANIFEST,
            manifest_bytes(&no_schema_version),
        ),
        (
            "index with layers",
            OCI_INDEX,
            manifest_bytes(&index_with_layers),
        ),
        (
            "manifest with manifests",
            OCI_MANIFEST,
            manifest_bytes(&manifest_with_manifests),
        ),
        (
            "descriptor with a bad digest",
            OCI_MANIFEST,
            manifest_bytes(&bad_digest),
        ),
        (
            "descriptor without size",
            OCI_MANIFEST,
            manifest_bytes(&no_size),
        ),
        (
            "descriptor with negative size",
            OCI_MANIFEST,
            manifest_bytes(&negative_size),
        ),
        (
            "descriptor without mediaType",
            OCI_MANIFEST,
            manifest_bytes(&no_media_type_descriptor),
        ),
        (
            "unsupported mediaType",
            "application/vnd.example.unknown+json",
            manifest_bytes(&unsupported_type),
        ),
        // The header and the body disagree about what this is.
        (
            "Content-Type vs mediaType",
            DOCKER_MANIFEST,
            manifest_bytes(&oci_manifest(cfg.clone(), vec![lyr.clone()])),
        ),
        (
            "Content-Type index vs manifest",
            OCI_INDEX,
            manifest_bytes(&oci_manifest(cfg.clone(), vec![lyr.clone()])),
        ),
    ];
    for (what, content_type, body) in cases {
        let response = api.put_manifest(repo, "bad", content_type, &body).await;
        assert_eq!(response.status(), 400, "{what}");
        expect_error(response, 400, "MANIFEST_INVALID").await;
    }
    // A media type that is not a manifest, said only by the header.
    let mut bare = oci_manifest(cfg.clone(), vec![lyr.clone()]);
    bare.as_object_mut().unwrap().remove("mediaType");
    let response = api
        .put_manifest(
            repo,
            "bad",
            "application/vnd.oci.image.layer.v1.tar",
            &manifest_bytes(&bare),
        )
        .await;
    expect_error(response, 400, "MANIFEST_INVALID").await;

    let response = api
        .send(api.get(&format!("/v2/{repo}/manifests/bad")))
        .await;
    expect_error(response, 404, "MANIFEST_UNKNOWN").await;
    assert!(
        api.catalog().await.is_empty(),
        "no invalid manifest was stored"
    );
}

/// `image`'s manifest, padded with an annotation to exactly `len` bytes.
fn manifest_of_len(image: &TestImage, len: usize) -> Vec<u8> {
    let base = |pad: usize| {
        let mut m: Value = serde_json::from_slice(&image.manifest).expect("manifest json");
        m["annotations"] = json!({ "pad": "x".repeat(pad) });
        manifest_bytes(&m)
    };
    let empty = base(0).len();
    assert!(len >= empty, "cannot pad below {empty} bytes");
    let bytes = base(len - empty);
    assert_eq!(bytes.len(), len);
    bytes
}

#[tokio::test]
async fn manifest_size_limit_is_413() {
    let api = Api::start_with(|config| config.registry.max_manifest_bytes = 1024).await;
    let repo = "man/limit";
    let image = TestImage::new("limit");
    api.push_blobs(repo, &image).await;

    let at_limit = manifest_of_len(&image, 1024);
    api.push_manifest(repo, "at-limit", OCI_MANIFEST, &at_limit)
        .await;

    let over = manifest_of_len(&image, 1025);
    let response = api.put_manifest(repo, "over", OCI_MANIFEST, &over).await;
    assert_eq!(response.status(), 413);
    expect_error(response, 413, "MANIFEST_INVALID").await;

    // Without a Content-Length (chunked body) the registry stops reading at the limit. Sent
    // raw and in one write: the server may answer and close before reading the rest, which a
    // streaming client would see as a broken pipe instead of the answer.
    let big = manifest_of_len(&image, 3000);
    let mut chunked = Vec::new();
    for piece in big.chunks(500) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let response = api
        .raw(
            &format!("PUT /v2/{repo}/manifests/streamed HTTP/1.1"),
            &[
                ("Content-Type", OCI_MANIFEST),
                ("Transfer-Encoding", "chunked"),
            ],
            &chunked,
            false,
        )
        .await
        .expect("an answer");
    response.expect_error(413, "MANIFEST_INVALID");

    for tag in ["over", "streamed"] {
        let response = api
            .send(api.get(&format!("/v2/{repo}/manifests/{tag}")))
            .await;
        expect_error(response, 404, "MANIFEST_UNKNOWN").await;
    }
    assert_eq!(api.tags(repo).await, ["at-limit"]);
}

#[tokio::test]
async fn default_limit_accepts_a_4_mib_manifest() {
    let api = Api::start().await;
    let repo = "man/big";
    let image = TestImage::new("big");
    api.push_blobs(repo, &image).await;
    let big = manifest_of_len(&image, 4 * 1024 * 1024);
    api.push_manifest(repo, "big", OCI_MANIFEST, &big).await;
    expect_manifest(&api, repo, "big", OCI_MANIFEST, &big).await;
}

#[tokio::test]
async fn accept_negotiation_by_tag_not_by_digest() {
    let api = Api::start().await;
    let repo = "man/accept";
    let docker = docker_image(&api, repo, "accept").await.manifest;
    let digest = api
        .push_manifest(repo, "latest", DOCKER_MANIFEST, &docker)
        .await;
    let by_tag = format!("/v2/{repo}/manifests/latest");
    let by_digest = format!("/v2/{repo}/manifests/{digest}");

    // (Accept header values, served by tag?)
    let cases: Vec<(Vec<&str>, bool)> = vec![
        (vec![OCI_MANIFEST], false),
        (vec![OCI_MANIFEST, OCI_INDEX], false),
        (
            vec![
                "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
            ],
            false,
        ),
        (vec![DOCKER_MANIFEST], true),
        (vec![OCI_MANIFEST, DOCKER_MANIFEST], true),
        (
            vec![
                "application/vnd.oci.image.manifest.v1+json;q=0.9, application/vnd.docker.distribution.manifest.v2+json;q=0.5",
            ],
            true,
        ),
        (vec!["*/*"], true),
        (vec!["application/*"], true),
        (vec![OCI_MANIFEST, "*/*"], true),
    ];
    for (accept, served) in cases {
        let mut get = api.get(&by_tag);
        let mut head = api.head(&by_tag);
        let mut get_digest = api.get(&by_digest);
        for value in &accept {
            get = get.header("accept", *value);
            head = head.header("accept", *value);
            get_digest = get_digest.header("accept", *value);
        }
        let response = api.send(get).await;
        if served {
            let (headers, body) = expect_status(response, 200).await;
            assert_eq!(body, docker, "Accept {accept:?}");
            assert_eq!(header(&headers, "content-type"), DOCKER_MANIFEST);
            assert_eq!(
                api.send(head).await.status(),
                200,
                "HEAD, Accept {accept:?}"
            );
        } else {
            expect_error(response, 404, "MANIFEST_UNKNOWN").await;
            assert_eq!(
                api.send(head).await.status(),
                404,
                "HEAD, Accept {accept:?}"
            );
        }
        // By digest the client pinned the bytes: always served.
        let (headers, body) = expect_status(api.send(get_digest).await, 200).await;
        assert_eq!(body, docker, "by digest, Accept {accept:?}");
        assert_eq!(header(&headers, "content-type"), DOCKER_MANIFEST);
    }

    // No Accept header at all (old clients): whatever is stored.
    let response = api
        .raw(&format!("GET {by_tag} HTTP/1.1"), &[], b"", false)
        .await
        .expect("an answer");
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(response.body, docker);
}

#[tokio::test]
async fn extra_tags_on_put_by_digest() {
    let api = Api::start().await;
    let repo = "man/tagparams";
    let image = TestImage::new("tag params");
    api.push_blobs(repo, &image).await;
    let (manifest, digest) = (image.manifest, image.digest);

    let response = api
        .send(
            api.put(&format!(
                "/v2/{repo}/manifests/{digest}?tag=a&tag=b&tag=1.0"
            ))
            .header("content-type", OCI_MANIFEST)
            .body(manifest.clone()),
        )
        .await;
    let (headers, _) = expect_status(response, 201).await;
    assert_eq!(header(&headers, "docker-content-digest"), digest);
    let mut announced = header_values(&headers, "oci-tag");
    announced.sort();
    assert_eq!(
        announced,
        ["1.0", "a", "b"],
        "one OCI-Tag per accepted tag: {headers:?}"
    );
    assert_eq!(api.tags(repo).await, ["1.0", "a", "b"]);
    for tag in ["a", "b", "1.0"] {
        expect_manifest(&api, repo, tag, OCI_MANIFEST, &manifest).await;
    }

    // Repeated tags are accepted once each.
    let response = api
        .send(
            api.put(&format!("/v2/{repo}/manifests/{digest}?tag=c&tag=a&tag=c"))
                .header("content-type", OCI_MANIFEST)
                .body(manifest.clone()),
        )
        .await;
    let (headers, _) = expect_status(response, 201).await;
    let mut announced = header_values(&headers, "oci-tag");
    announced.sort();
    assert_eq!(announced, ["a", "c"], "{headers:?}");
    assert_eq!(api.tags(repo).await, ["1.0", "a", "b", "c"]);

    // An invalid tag refuses the whole request.
    let other = TestImage::new("tag params 2").manifest;
    let response = api
        .send(
            api.put(&format!(
                "/v2/{repo}/manifests/{}?tag=ok&tag=-bad",
                sha256(&other)
            ))
            .header("content-type", OCI_MANIFEST)
            .body(other.clone()),
        )
        .await;
    expect_error(response, 400, "TAG_INVALID").await;
    assert_eq!(api.tags(repo).await, ["1.0", "a", "b", "c"]);
}

#[tokio::test]
async fn delete_by_tag_keeps_the_manifest() {
    let api = Api::start().await;
    let repo = "man/deltag";
    let image = TestImage::new("delete tag");
    api.push_image(repo, "v1", &image).await;
    api.push_manifest(repo, "stable", OCI_MANIFEST, &image.manifest)
        .await;
    // Warm any cache first.
    expect_manifest(&api, repo, "v1", OCI_MANIFEST, &image.manifest).await;

    let (_, body) = expect_status(
        api.send(api.delete(&format!("/v2/{repo}/manifests/v1")))
            .await,
        202,
    )
    .await;
    assert!(body.is_empty());
    let response = api.send(api.get(&format!("/v2/{repo}/manifests/v1"))).await;
    expect_error(response, 404, "MANIFEST_UNKNOWN").await;
    expect_manifest(&api, repo, &image.digest, OCI_MANIFEST, &image.manifest).await;
    expect_manifest(&api, repo, "stable", OCI_MANIFEST, &image.manifest).await;
    assert_eq!(api.tags(repo).await, ["stable"]);

    let response = api
        .send(api.delete(&format!("/v2/{repo}/manifests/v1")))
        .await;
    expect_error(response, 404, "MANIFEST_UNKNOWN").await;
    let response = api
        .send(api.delete("/v2/man/nosuchrepo/manifests/v1"))
        .await;
    expect_error(response, 404, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn delete_by_digest_removes_its_tags() {
    let api = Api::start().await;
    let repo = "man/deldigest";
    let doomed = TestImage::new("doomed");
    api.push_image(repo, "v1", &doomed).await;
    api.push_manifest(repo, "latest", OCI_MANIFEST, &doomed.manifest)
        .await;
    let kept = TestImage::new("kept");
    api.push_image(repo, "v2", &kept).await;
    expect_manifest(&api, repo, "latest", OCI_MANIFEST, &doomed.manifest).await;

    let path = format!("/v2/{repo}/manifests/{}", doomed.digest);
    expect_status(api.send(api.delete(&path)).await, 202).await;
    for reference in ["v1", "latest", doomed.digest.as_str()] {
        let response = api
            .send(api.get(&format!("/v2/{repo}/manifests/{reference}")))
            .await;
        expect_error(response, 404, "MANIFEST_UNKNOWN").await;
        let response = api
            .send(api.head(&format!("/v2/{repo}/manifests/{reference}")))
            .await;
        assert_eq!(response.status(), 404, "HEAD {reference}");
    }
    assert_eq!(api.tags(repo).await, ["v2"]);
    expect_manifest(&api, repo, "v2", OCI_MANIFEST, &kept.manifest).await;
    // Deleting a manifest leaves its blobs in the repository.
    assert_eq!(
        api.get_blob(repo, &doomed.layer_digest(0)).await,
        (200, doomed.layers[0].bytes())
    );

    let response = api.send(api.delete(&path)).await;
    expect_error(response, 404, "MANIFEST_UNKNOWN").await;
    // It can be pushed again.
    api.push_manifest(repo, "v1", OCI_MANIFEST, &doomed.manifest)
        .await;
    expect_manifest(&api, repo, "v1", OCI_MANIFEST, &doomed.manifest).await;
}

#[tokio::test]
async fn unknown_manifests_are_404() {
    let api = Api::start().await;
    api.push_image("man/known", "v1", &TestImage::new("known"))
        .await;
    let unknown = sha256(b"unknown manifest");
    for (repo, reference) in [
        ("man/known", "nope"),
        ("man/known", unknown.as_str()),
        ("man/unknownrepo", "v1"),
        ("man/unknownrepo", unknown.as_str()),
    ] {
        let path = format!("/v2/{repo}/manifests/{reference}");
        expect_error(api.send(api.get(&path)).await, 404, "MANIFEST_UNKNOWN").await;
        let (_, body) = expect_status(api.send(api.head(&path)).await, 404).await;
        assert!(body.is_empty(), "HEAD {path}");
        expect_error(api.send(api.delete(&path)).await, 404, "MANIFEST_UNKNOWN").await;
    }
}

#[tokio::test]
async fn repushing_a_manifest_is_idempotent() {
    let api = Api::start().await;
    let repo = "man/idem";
    let image = TestImage::new("idempotent");
    api.push_image(repo, "v1", &image).await;
    for _ in 0..3 {
        let digest = api
            .push_manifest(repo, "v1", OCI_MANIFEST, &image.manifest)
            .await;
        assert_eq!(digest, image.digest);
    }
    assert_eq!(api.tags(repo).await, ["v1"]);
    expect_manifest(&api, repo, "v1", OCI_MANIFEST, &image.manifest).await;
    // By digest too.
    api.push_manifest(repo, &image.digest, OCI_MANIFEST, &image.manifest)
        .await;
    assert_eq!(api.tags(repo).await, ["v1"]);
    expect_manifest(&api, repo, &image.digest, OCI_MANIFEST, &image.manifest).await;
}

#[tokio::test]
async fn moving_a_tag() {
    let api = Api::start().await;
    let repo = "man/move";
    let first = TestImage::new("first");
    api.push_image(repo, "latest", &first).await;
    expect_manifest(&api, repo, "latest", OCI_MANIFEST, &first.manifest).await;
    let second = TestImage::new("second");
    api.push_image(repo, "latest", &second).await;
    assert_ne!(first.digest, second.digest);
    expect_manifest(&api, repo, "latest", OCI_MANIFEST, &second.manifest).await;
    // The old manifest stays reachable by digest.
    expect_manifest(&api, repo, &first.digest, OCI_MANIFEST, &first.manifest).await;
    assert_eq!(api.tags(repo).await, ["latest"]);
    // And moving back works too (by digest with ?tag=).
    let response = api
        .send(
            api.put(&format!("/v2/{repo}/manifests/{}?tag=latest", first.digest))
                .header("content-type", OCI_MANIFEST)
                .body(first.manifest.clone()),
        )
        .await;
    expect_status(response, 201).await;
    expect_manifest(&api, repo, "latest", OCI_MANIFEST, &first.manifest).await;
    // A tag may also move to a manifest of another type.
    let docker = docker_image(&api, repo, "move docker").await.manifest;
    api.push_manifest(repo, "latest", DOCKER_MANIFEST, &docker)
        .await;
    expect_manifest(&api, repo, "latest", DOCKER_MANIFEST, &docker).await;
}

#[tokio::test]
async fn manifests_are_scoped_to_their_repository() {
    let api = Api::start().await;
    let image = TestImage::new("scoped");
    api.push_image("man/scope-a", "v1", &image).await;
    for reference in ["v1", image.digest.as_str()] {
        let response = api
            .send(api.get(&format!("/v2/man/scope-b/manifests/{reference}")))
            .await;
        expect_error(response, 404, "MANIFEST_UNKNOWN").await;
    }
    let response = api
        .send(api.delete(&format!("/v2/man/scope-b/manifests/{}", image.digest)))
        .await;
    expect_error(response, 404, "MANIFEST_UNKNOWN").await;
    expect_manifest(&api, "man/scope-a", "v1", OCI_MANIFEST, &image.manifest).await;
}
