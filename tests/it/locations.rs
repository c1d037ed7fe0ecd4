//! `Location` headers are absolute URLs on the origin the client used: the request's `Host`,
//! or a trusted proxy's `X-Forwarded-Proto`/`X-Forwarded-Host`.

use reqwest::RequestBuilder;

use super::distribution::{Api, expect_status, header};
use super::support::image::{OCI_MANIFEST, TestImage, sha256};

const HOST: &str = "registry.example:5000";

/// The path and query of an absolute `Location`, to send the next request to the test server.
fn path_of(location: &str) -> String {
    let url = reqwest::Url::parse(location)
        .unwrap_or_else(|e| panic!("Location {location:?} is not an absolute URL: {e}"));
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
}

/// Sends `request` with `headers` added and returns the `Location` of its `status` answer.
async fn location_of(
    api: &Api,
    request: RequestBuilder,
    headers: &[(&str, &str)],
    status: u16,
) -> String {
    let request = headers.iter().fold(request, |request, (name, value)| {
        request.header(*name, *value)
    });
    let (headers, _) = expect_status(api.send(request).await, status).await;
    header(&headers, "location").to_owned()
}

#[tokio::test]
async fn every_location_is_absolute_on_the_host_the_client_asked_for() {
    let api = Api::start().await;
    let host = [("host", HOST)];
    let origin = format!("http://{HOST}");
    let repo = "loc/app";

    let session = location_of(
        &api,
        api.post(&format!("/v2/{repo}/blobs/uploads/")),
        &host,
        202,
    )
    .await;
    assert!(
        session.starts_with(&format!("{origin}/v2/{repo}/blobs/uploads/")),
        "{session}"
    );
    let chunk = b"some bytes".to_vec();
    let digest = sha256(&chunk);
    let patched = location_of(
        &api,
        api.patch(&path_of(&session)).body(chunk.clone()),
        &host,
        202,
    )
    .await;
    assert_eq!(patched, session);
    let status = location_of(&api, api.get(&path_of(&session)), &host, 204).await;
    assert_eq!(status, session);
    let out_of_order = location_of(
        &api,
        api.patch(&path_of(&session))
            .header("content-range", "100-101")
            .body(vec![0u8; 2]),
        &host,
        416,
    )
    .await;
    assert_eq!(
        out_of_order, session,
        "an error answer tells where to resume"
    );
    let blob = location_of(
        &api,
        api.put(&Api::with_digest(&path_of(&session), &digest)),
        &host,
        201,
    )
    .await;
    assert_eq!(blob, format!("{origin}/v2/{repo}/blobs/{digest}"));

    let monolithic = location_of(
        &api,
        api.post(&format!("/v2/{repo}/blobs/uploads/?digest={digest}"))
            .body(chunk.clone()),
        &host,
        201,
    )
    .await;
    assert_eq!(monolithic, blob);
    let mounted = location_of(
        &api,
        api.post(&format!(
            "/v2/loc/other/blobs/uploads/?mount={digest}&from={repo}"
        )),
        &host,
        201,
    )
    .await;
    assert_eq!(mounted, format!("{origin}/v2/loc/other/blobs/{digest}"));

    let image = TestImage::new("locations");
    api.push_blobs(repo, &image).await;
    let manifest_location = location_of(
        &api,
        api.put(&format!("/v2/{repo}/manifests/v1"))
            .header("content-type", OCI_MANIFEST)
            .body(image.manifest.clone()),
        &host,
        201,
    )
    .await;
    assert_eq!(
        manifest_location,
        format!("{origin}/v2/{repo}/manifests/{}", image.digest)
    );
}

const FORWARDED: [(&str, &str); 3] = [
    ("host", HOST),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "public.example"),
];

#[tokio::test]
async fn forwarded_headers_are_honoured_only_from_a_trusted_proxy() {
    // Loopback, where the tests connect from, is trusted by default.
    let behind_proxy = Api::start().await;
    let location = location_of(
        &behind_proxy,
        behind_proxy.post("/v2/loc/fwd/blobs/uploads/"),
        &FORWARDED,
        202,
    )
    .await;
    assert!(
        location.starts_with("https://public.example/v2/loc/fwd/blobs/uploads/"),
        "{location}"
    );

    let exposed = Api::start_with(|config| {
        config.server.trusted_proxies = vec!["10.0.0.0/8".into()];
    })
    .await;
    let location = location_of(
        &exposed,
        exposed.post("/v2/loc/fwd/blobs/uploads/"),
        &FORWARDED,
        202,
    )
    .await;
    assert!(
        location.starts_with(&format!("http://{HOST}/v2/loc/fwd/blobs/uploads/")),
        "an untrusted peer's forwarding headers were believed: {location}"
    );
}
