//! Repository names, tags and digests in paths: what is accepted (any depth, names containing
//! route keywords), what is refused with which code, and that no path escapes the data dir.

use reqwest::Method;

use super::{Api, expect_error, expect_status, files_under, header};
use crate::support::image::{OCI_MANIFEST, TestImage, bytes_for, sha256};

#[tokio::test]
async fn deep_names_and_names_containing_route_words() {
    let api = Api::start().await;
    let long_name = format!("long/{}", "n".repeat(250));
    assert_eq!(long_name.len(), 255);
    let repos = [
        "a/b/c/d",
        "a/b/c/d/e/f/g/h",
        "x/blobs",
        "x/manifests",
        "x/blobs/uploads",
        "x/manifests/blobs",
        "team/tags/list",
        "tags/list",
        "blobs/uploads/blobs",
        "a/referrers",
        "v2",
        "my-org/my_app.v2",
        "a__b/c---d",
        long_name.as_str(),
    ];
    for repo in repos {
        let image = TestImage::new(repo);
        api.push_image(repo, "v1", &image).await;
        // A session upload too, so every upload route is exercised under the name.
        let extra = bytes_for(repo, 64);
        let location = api.start_upload(repo).await;
        assert!(
            location.starts_with(&api.url(&format!("/v2/{repo}/blobs/uploads/"))),
            "{repo}: {location}"
        );
        let response = api.send(api.patch(&location).body(extra.clone())).await;
        let (headers, _) = expect_status(response, 202).await;
        let location = header(&headers, "location").to_owned();
        let (headers, _) = expect_status(api.send(api.get(&location)).await, 204).await;
        assert_eq!(header(&headers, "range"), "0-63");
        let response = api
            .send(api.put(&Api::with_digest(&location, &sha256(&extra))))
            .await;
        expect_status(response, 201).await;

        assert_eq!(
            api.get_blob(repo, &sha256(&extra)).await,
            (200, extra),
            "{repo}"
        );
        assert_eq!(
            api.get_blob(repo, &image.layer_digest(0)).await,
            (200, image.layers[0].bytes()),
            "{repo}"
        );
        let (status, _, body) = api.get_manifest(repo, "v1").await;
        assert_eq!((status, body), (200, image.manifest.clone()), "{repo}");
        assert_eq!(api.tags(repo).await, ["v1"], "{repo}");
        let response = api
            .send(api.get(&format!("/v2/{repo}/referrers/{}", image.digest)))
            .await;
        expect_status(response, 200).await;
    }
    let mut expected: Vec<String> = repos.iter().map(|r| (*r).to_owned()).collect();
    expected.sort();
    assert_eq!(api.catalog().await, expected);
    // Each name kept its own content: `x/blobs` is not `x`.
    let response = api.send(api.get("/v2/x/tags/list")).await;
    expect_error(response, 404, "NAME_UNKNOWN").await;
}

#[tokio::test]
async fn invalid_names_are_name_invalid() {
    let api = Api::start().await;
    let too_long = format!("long/{}", "n".repeat(251));
    assert_eq!(too_long.len(), 256);
    let digest = sha256(b"x");
    let names = [
        "Upper/case",
        "team/App",
        "team//app",
        "team/app/", // trailing slash
        "-team/app",
        "team-/app",
        "a___b",
        "a..b",
        "team/app%2Fx",
        "a%20b",
        too_long.as_str(),
    ];
    for name in names {
        let cases = [
            (Method::GET, format!("/v2/{name}/tags/list")),
            (Method::GET, format!("/v2/{name}/manifests/latest")),
            (Method::PUT, format!("/v2/{name}/manifests/latest")),
            (Method::DELETE, format!("/v2/{name}/manifests/{digest}")),
            (Method::GET, format!("/v2/{name}/blobs/{digest}")),
            (Method::DELETE, format!("/v2/{name}/blobs/{digest}")),
            (Method::POST, format!("/v2/{name}/blobs/uploads/")),
            (
                Method::POST,
                format!("/v2/{name}/blobs/uploads/?digest={digest}"),
            ),
            (Method::GET, format!("/v2/{name}/referrers/{digest}")),
        ];
        for (method, path) in cases {
            let response = api
                .send(api.request(method.clone(), &path).body(b"x".to_vec()))
                .await;
            assert_eq!(response.status(), 400, "{method} {path}");
            expect_error(response, 400, "NAME_INVALID").await;
        }
    }
    // Dot segments cannot be sent through a URL library (it resolves them), so raw requests.
    for path in [
        "/v2/../tags/list",
        "/v2/a/../b/tags/list",
        "/v2/%2e%2e/tags/list",
        "/v2/a/%2E%2E/manifests/latest",
    ] {
        let response = api
            .raw(&format!("GET {path} HTTP/1.1"), &[], b"", false)
            .await
            .expect("an answer");
        response.expect_error(400, "NAME_INVALID");
    }
    // `from=` of a mount is a name too.
    let response = api
        .send(api.post(&format!(
            "/v2/ok/blobs/uploads/?mount={digest}&from=Not/Valid"
        )))
        .await;
    expect_error(response, 400, "NAME_INVALID").await;
    assert!(api.catalog().await.is_empty());
    api.assert_no_blobs_stored().await;
    api.assert_no_uploads_left().await;
}

/// A push or delete learns why the tag is invalid; a read is simply of an unknown manifest
/// (the OCI conformance suite's `.INVALID_MANIFEST_NAME` specs).
#[tokio::test]
async fn invalid_tags_are_refused_on_push_and_unknown_on_pull() {
    let api = Api::start().await;
    let image = TestImage::new("tags");
    api.push_image("names/tags", "v1", &image).await;
    let too_long = "t".repeat(129);
    for tag in [
        "-bad",
        ".bad",
        too_long.as_str(),
        "a%2Fb",
        "a%20b",
        "t%C3%A9",
        ".INVALID_MANIFEST_NAME",
    ] {
        let path = format!("/v2/names/tags/manifests/{tag}");
        let response = api
            .put_manifest("names/tags", tag, OCI_MANIFEST, &image.manifest)
            .await;
        expect_error(response, 400, "TAG_INVALID").await;
        expect_error(api.send(api.get(&path)).await, 404, "MANIFEST_UNKNOWN").await;
        expect_error(api.send(api.delete(&path)).await, 400, "TAG_INVALID").await;
        assert_eq!(api.send(api.head(&path)).await.status(), 404, "HEAD {path}");
    }
    // The longest valid tag is fine.
    let longest = "t".repeat(128);
    api.push_manifest("names/tags", &longest, OCI_MANIFEST, &image.manifest)
        .await;
    let mut tags = api.tags("names/tags").await;
    tags.sort();
    assert_eq!(tags, [longest, "v1".to_owned()]);
}

#[tokio::test]
async fn invalid_digests_are_digest_invalid() {
    let api = Api::start().await;
    let image = TestImage::new("digests");
    api.push_image("names/digests", "v1", &image).await;
    let upper = format!("sha256:{}", image.layer_digest(0)[7..].to_uppercase());
    let bad = [
        "sha256:abc".to_owned(),
        "sha256:".to_owned(),
        format!("sha256:{}", "g".repeat(64)),
        upper,
        "md5:d41d8cd98f00b204e9800998ecf8427e".to_owned(),
        format!("sha512:{}", "a".repeat(64)),
        format!("SHA256:{}", "a".repeat(64)),
        ":abc".to_owned(),
    ];
    for digest in &bad {
        for (method, path) in [
            (Method::GET, format!("/v2/names/digests/blobs/{digest}")),
            (Method::DELETE, format!("/v2/names/digests/blobs/{digest}")),
            (Method::GET, format!("/v2/names/digests/manifests/{digest}")),
            (
                Method::DELETE,
                format!("/v2/names/digests/manifests/{digest}"),
            ),
            (Method::GET, format!("/v2/names/digests/referrers/{digest}")),
        ] {
            let response = api.send(api.request(method.clone(), &path)).await;
            expect_error(response, 400, "DIGEST_INVALID").await;
        }
        let response = api
            .put_manifest("names/digests", digest, OCI_MANIFEST, &image.manifest)
            .await;
        expect_error(response, 400, "DIGEST_INVALID").await;
        let response = api
            .send(api.head(&format!("/v2/names/digests/blobs/{digest}")))
            .await;
        assert_eq!(response.status(), 400, "HEAD blob {digest}");
    }
    // Nothing was deleted by any of that.
    assert_eq!(
        api.get_blob("names/digests", &image.layer_digest(0)).await,
        (200, image.layers[0].bytes())
    );
    assert_eq!(api.get_manifest("names/digests", "v1").await.0, 200);
}

#[tokio::test]
async fn path_traversal_never_leaves_the_data_dir() {
    // The registry's data dir is <tmp>/data; <tmp>/secret sits right next to it.
    let api =
        Api::start_with(|config| config.server.data_dir = config.server.data_dir.join("data"))
            .await;
    let outer = api.server.data_path().to_path_buf();
    let secret = outer.join("secret");
    std::fs::write(&secret, b"TOP SECRET CONTENT").expect("sentinel");
    let digest = sha256(b"x");

    // (request line, expected status, expected code when the answer is an OCI error)
    let cases: Vec<(String, u16, Option<&str>)> = vec![
        (
            "GET /v2/../../secret/tags/list".into(),
            400,
            Some("NAME_INVALID"),
        ),
        (
            "GET /v2/%2e%2e/%2e%2e/secret/tags/list".into(),
            400,
            Some("NAME_INVALID"),
        ),
        (
            "GET /v2/%2E%2E/secret/manifests/latest".into(),
            400,
            Some("NAME_INVALID"),
        ),
        (
            "GET /v2/a/..%2f..%2f..%2fsecret/tags/list".into(),
            400,
            Some("NAME_INVALID"),
        ),
        (
            format!("POST /v2/../../../secret/blobs/uploads/?digest={digest}"),
            400,
            Some("NAME_INVALID"),
        ),
        (
            "GET /v2/a/blobs/sha256:..%2F..%2F..%2Fsecret".into(),
            400,
            Some("DIGEST_INVALID"),
        ),
        (
            "GET /v2/a/blobs/sha256%3A..%2F..%2F..%2F..%2Fsecret".into(),
            400,
            Some("DIGEST_INVALID"),
        ),
        (
            "DELETE /v2/a/blobs/sha256:..%2f..%2f..%2f..%2f..%2fsecret".into(),
            400,
            Some("DIGEST_INVALID"),
        ),
        (
            "GET /v2/a/manifests/sha256:..%2f..%2fsecret".into(),
            400,
            Some("DIGEST_INVALID"),
        ),
        (
            "GET /v2/a/referrers/sha256:..%2F..%2Fsecret".into(),
            400,
            Some("DIGEST_INVALID"),
        ),
        (
            "POST /v2/a/blobs/uploads/?mount=sha256:..%2F..%2Fsecret&from=b".into(),
            400,
            Some("DIGEST_INVALID"),
        ),
        (
            format!("POST /v2/a/blobs/uploads/?mount={digest}&from=..%2F..%2Fsecret"),
            400,
            Some("NAME_INVALID"),
        ),
        (
            "PUT /v2/a/manifests/..%2F..%2Fsecret".into(),
            400,
            Some("TAG_INVALID"),
        ),
        ("DELETE /v2/a/manifests/..".into(), 400, Some("TAG_INVALID")),
        (
            "DELETE /v2/a/blobs/uploads/..%2F..%2F..%2Fsecret".into(),
            404,
            Some("BLOB_UPLOAD_UNKNOWN"),
        ),
        (
            "GET /v2/a/blobs/uploads/%2e%2e".into(),
            404,
            Some("BLOB_UPLOAD_UNKNOWN"),
        ),
        (
            format!("PUT /v2/a/blobs/uploads/..%2f..%2f..%2fsecret?digest={digest}"),
            404,
            Some("BLOB_UPLOAD_UNKNOWN"),
        ),
        (
            "PATCH /v2/a/blobs/uploads/../../../secret".into(),
            404,
            None,
        ),
        (
            "DELETE /v2/a/blobs/sha512:../../../../../secret".into(),
            404,
            None,
        ),
        ("GET /v2/..".into(), 404, None),
    ];
    for (request_line, status, code) in cases {
        let response = api
            .raw(
                &format!("{request_line} HTTP/1.1"),
                &[("Content-Length", "1")],
                b"x",
                false,
            )
            .await
            .unwrap_or_else(|| panic!("no answer to {request_line}"));
        assert_eq!(
            response.status,
            status,
            "{request_line}: {}",
            String::from_utf8_lossy(&response.body)
        );
        if let Some(code) = code {
            response.expect_error(status, code);
        }
        assert!(
            !String::from_utf8_lossy(&response.body).contains("TOP SECRET"),
            "{request_line} leaked the sentinel"
        );
    }

    assert_eq!(
        std::fs::read(&secret).expect("sentinel"),
        b"TOP SECRET CONTENT"
    );
    let mut beside: Vec<String> = std::fs::read_dir(&outer)
        .expect("outer dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    beside.sort();
    // (On the production stack the data dir holds no storage and may never be created.)
    assert!(
        beside.iter().all(|name| name == "data" || name == "secret"),
        "nothing was created next to the data dir: {beside:?}"
    );
    api.assert_no_blobs_stored().await;
    api.assert_no_uploads_left().await;
    // On the filesystem store, not even a stray file under blobs/ or uploads/ (which a
    // listing of well-formed entries would not show).
    if let Some(storage) = api.server.storage_dir() {
        for area in ["blobs", "uploads"] {
            let files = files_under(&storage.join(area));
            assert!(files.is_empty(), "{files:?}");
        }
    }
    // The registry still works normally in this layout.
    let image = TestImage::new("after traversal");
    api.push_image("after/traversal", "v1", &image).await;
    assert!(image.layer_digest(0).starts_with("sha256:"));
    assert!(api.has_blob(&image.layer_digest(0)).await);
}
