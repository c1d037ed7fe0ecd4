//! HTTP-level tests of the OCI Distribution API: a real server on a loopback port, driven with
//! reqwest (and raw TCP where a well-behaved client cannot send the request: `..` segments,
//! lying `Content-Length`).
//!
//! This file holds the HTTP side of the tests: [`Api`] (server + client + a look into the
//! server's own blob store, filesystem or S3 alike), blob/manifest/image push helpers and
//! error-body assertions; images and manifests come from the test kit
//! (`crate::support::image`). The submodules hold the tests, one per area of the API.
//!
//! Every test runs on the embedded backends, and again on PostgreSQL + S3 + Redis when
//! `AERUGO_TEST_STACK=production` is set (`scripts/test.sh` does both).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use aerugo::config::Config;
use aerugo::oci::{Digest as StoreDigest, UploadId};
use aerugo::storage::BlobStore;

use super::support::TestServer;
use super::support::image::{TestImage, sha256};

mod base;
mod blobs;
mod concurrency;
mod gc;
mod listing;
mod manifests;
mod names;
mod referrers;
mod uploads;

/// A digest as the store names it.
fn parse_digest(digest: &str) -> StoreDigest {
    digest
        .parse()
        .unwrap_or_else(|e| panic!("{digest} is not a digest: {e:?}"))
}

// ---------------------------------------------------------------------------------------------
// Assertions

/// A header's value as text; panics with the whole header map when it is missing.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("missing header {name}; headers: {headers:?}"))
        .to_str()
        .expect("header is text")
}

/// Every value of a header (repeated header lines and comma-separated lists flattened).
pub fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| {
            v.to_str()
                .expect("header is text")
                .split(',')
                .map(|s| s.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// Asserts the status and returns the body, showing the body when the status is wrong.
pub async fn expect_status(response: Response, status: u16) -> (HeaderMap, Vec<u8>) {
    let actual = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("response body").to_vec();
    assert_eq!(
        actual,
        status,
        "unexpected status; headers: {headers:?}; body: {}",
        String::from_utf8_lossy(&body)
    );
    (headers, body)
}

/// Asserts an OCI error response: the status, `Content-Type: application/json`, and a body
/// `{"errors":[{"code": code, "message": "…"}]}`. Returns the headers and the first error.
pub async fn expect_error(response: Response, status: u16, code: &str) -> (HeaderMap, Value) {
    let (headers, body) = expect_status(response, status).await;
    let error = check_error_body(&headers, &body, code);
    (headers, error)
}

fn check_error_body(headers: &HeaderMap, body: &[u8], code: &str) -> Value {
    let text = String::from_utf8_lossy(body);
    assert!(
        header(headers, "content-type").starts_with("application/json"),
        "error body must be JSON; headers {headers:?}"
    );
    let value: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {text}"));
    let errors = value["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors array: {text}"));
    assert!(!errors.is_empty(), "empty errors array: {text}");
    for e in errors {
        assert!(e["code"].is_string(), "error without code: {text}");
        assert!(e["message"].is_string(), "error without message: {text}");
    }
    assert_eq!(errors[0]["code"], code, "wrong error code: {text}");
    errors[0].clone()
}

// ---------------------------------------------------------------------------------------------
// The registry under test

/// A registry on a loopback port plus a client for it.
pub struct Api {
    pub server: TestServer,
    pub http: reqwest::Client,
    /// The server's blob store, opened on first inspection.
    store: tokio::sync::OnceCell<Arc<dyn BlobStore>>,
}

impl Api {
    pub async fn start() -> Api {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Api {
        Api::on(TestServer::start_with(configure).await)
    }

    /// A node of `stack`'s cluster.
    pub async fn start_on(
        stack: &crate::support::stack::Stack,
        configure: impl FnOnce(&mut Config),
    ) -> Api {
        Api::on(TestServer::start_on(Some(stack), configure).await)
    }

    fn on(server: TestServer) -> Api {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        Api {
            server,
            http,
            store: tokio::sync::OnceCell::new(),
        }
    }

    /// Absolute URL for a path, or the URL itself when a `Location` header was absolute.
    pub fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_owned()
        } else {
            self.server.url(path_or_url)
        }
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path))
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    pub fn head(&self, path: &str) -> RequestBuilder {
        self.request(Method::HEAD, path)
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    pub fn put(&self, path: &str) -> RequestBuilder {
        self.request(Method::PUT, path)
    }

    pub fn patch(&self, path: &str) -> RequestBuilder {
        self.request(Method::PATCH, path)
    }

    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.request(Method::DELETE, path)
    }

    pub async fn send(&self, request: RequestBuilder) -> Response {
        request.send().await.expect("request reaches the registry")
    }

    // ---- what the store holds ----

    /// The blob store the server writes to, opened from the server's own configuration, so
    /// the same inspection works on the filesystem and on S3.
    pub async fn store(&self) -> &dyn BlobStore {
        self.store
            .get_or_init(|| async {
                aerugo::app::build_backends(&self.server.config)
                    .await
                    .expect("opening the server's backends")
                    .blobs
            })
            .await
            .as_ref()
    }

    /// The digest of every committed blob in the store, sorted.
    pub async fn stored_blobs(&self) -> Vec<String> {
        let store = self.store().await;
        let mut out: Vec<StoreDigest> = Vec::new();
        loop {
            let page = store
                .list_blobs(out.last(), 1000)
                .await
                .expect("listing blobs");
            if page.is_empty() {
                break;
            }
            out.extend(page.into_iter().map(|(digest, _)| digest));
        }
        out.iter().map(ToString::to_string).collect()
    }

    /// The size of a committed blob; `None` when the store does not hold it.
    pub async fn stored_size(&self, digest: &str) -> Option<u64> {
        let meta = self.store().await.stat(&parse_digest(digest)).await;
        meta.expect("stat of a blob").map(|meta| meta.size)
    }

    pub async fn has_blob(&self, digest: &str) -> bool {
        self.stored_size(digest).await.is_some()
    }

    /// The bytes the store holds for a blob (read through the store, not the API).
    pub async fn stored_bytes(&self, digest: &str) -> Vec<u8> {
        use futures_util::TryStreamExt as _;
        let stream = self
            .store()
            .await
            .open(&parse_digest(digest), None)
            .await
            .unwrap_or_else(|e| panic!("opening stored blob {digest}: {e}"));
        let chunks: Vec<bytes::Bytes> = stream.try_collect().await.expect("reading stored blob");
        chunks.concat()
    }

    /// The id of every upload area in the store, sorted.
    pub async fn stored_uploads(&self) -> Vec<String> {
        let store = self.store().await;
        let mut out: Vec<UploadId> = Vec::new();
        loop {
            let page = store
                .list_uploads(out.last(), 1000)
                .await
                .expect("listing uploads");
            if page.is_empty() {
                break;
            }
            out.extend(page.into_iter().map(|(id, _)| id));
        }
        out.iter().map(ToString::to_string).collect()
    }

    pub async fn has_upload(&self, id: &str) -> bool {
        self.stored_uploads()
            .await
            .iter()
            .any(|stored| stored == id)
    }

    pub async fn assert_no_uploads_left(&self) {
        let left = self.stored_uploads().await;
        assert!(left.is_empty(), "upload areas left behind: {left:?}");
    }

    pub async fn assert_no_blobs_stored(&self) {
        let stored = self.stored_blobs().await;
        assert!(stored.is_empty(), "blobs stored: {stored:?}");
    }

    /// Writes an upload area holding `bytes` straight into the store, as a crash would leave
    /// it: metadata has no session for it. Returns its id.
    pub async fn store_orphan_upload(&self, bytes: &[u8]) -> UploadId {
        let store = self.store().await;
        let id = UploadId::generate();
        store
            .create_upload(&id)
            .await
            .expect("creating upload area");
        let mut writer = store.append_upload(&id, 0).await.expect("opening upload");
        writer
            .write(bytes::Bytes::copy_from_slice(bytes))
            .await
            .expect("writing upload");
        writer.finish().await.expect("finishing upload");
        self.server.hand_over_data();
        id
    }

    /// Commits `bytes` as a blob straight into the store, never linked in metadata (a push
    /// that crashed between publishing the bytes and recording them). Returns its digest.
    pub async fn store_orphan_blob(&self, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let id = self.store_orphan_upload(bytes).await;
        self.store()
            .await
            .commit_upload(&id, bytes.len() as u64, &parse_digest(&digest))
            .await
            .expect("committing orphan blob");
        self.server.hand_over_data();
        digest
    }

    // ---- blobs ----

    /// Monolithic push (`POST …/blobs/uploads/?digest=`); asserts 201 and returns the digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let response = self
            .send(
                self.post(&format!("/v2/{repo}/blobs/uploads/?digest={digest}"))
                    .body(bytes.to_vec()),
            )
            .await;
        let (headers, _) = expect_status(response, 201).await;
        assert_eq!(header(&headers, "docker-content-digest"), digest);
        digest
    }

    /// `GET` of a blob: status and body.
    pub async fn get_blob(&self, repo: &str, digest: &str) -> (u16, Vec<u8>) {
        let response = self
            .send(self.get(&format!("/v2/{repo}/blobs/{digest}")))
            .await;
        let status = response.status().as_u16();
        (status, response.bytes().await.expect("body").to_vec())
    }

    /// Opens an upload session; asserts 202 and returns its `Location`.
    pub async fn start_upload(&self, repo: &str) -> String {
        let response = self
            .send(self.post(&format!("/v2/{repo}/blobs/uploads/")))
            .await;
        let (headers, _) = expect_status(response, 202).await;
        header(&headers, "location").to_owned()
    }

    /// `location` with `?digest=` (or `&digest=`) appended.
    pub fn with_digest(location: &str, digest: &str) -> String {
        let sep = if location.contains('?') { '&' } else { '?' };
        format!("{location}{sep}digest={digest}")
    }

    // ---- manifests ----

    /// `PUT /v2/<repo>/manifests/<reference>` with `Content-Type: media_type`.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Response {
        self.send(
            self.put(&format!("/v2/{repo}/manifests/{reference}"))
                .header("content-type", media_type)
                .body(body.to_vec()),
        )
        .await
    }

    /// Like [`Api::put_manifest`] but asserts 201 and the digest headers; returns the digest.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let response = self.put_manifest(repo, reference, media_type, body).await;
        let (headers, _) = expect_status(response, 201).await;
        let digest = sha256(body);
        assert_eq!(header(&headers, "docker-content-digest"), digest);
        assert_eq!(
            header(&headers, "location"),
            self.url(&format!("/v2/{repo}/manifests/{digest}"))
        );
        digest
    }

    /// Pushes the config and layers of `image`, not its manifest.
    pub async fn push_blobs(&self, repo: &str, image: &TestImage) {
        for blob in image.blobs() {
            self.push_blob(repo, &blob.bytes()).await;
        }
    }

    /// Pushes every blob of `image`, then its manifest under `tag`.
    pub async fn push_image(&self, repo: &str, tag: &str, image: &TestImage) {
        self.push_blobs(repo, image).await;
        let digest = self
            .push_manifest(repo, tag, &image.media_type, &image.manifest)
            .await;
        assert_eq!(digest, image.digest);
    }

    /// `GET` of a manifest: status, headers, body.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> (u16, HeaderMap, Vec<u8>) {
        let response = self
            .send(self.get(&format!("/v2/{repo}/manifests/{reference}")))
            .await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (
            status,
            headers,
            response.bytes().await.expect("body").to_vec(),
        )
    }

    /// The tags of a repository (asserting 200).
    pub async fn tags(&self, repo: &str) -> Vec<String> {
        let response = self.send(self.get(&format!("/v2/{repo}/tags/list"))).await;
        let (_, body) = expect_status(response, 200).await;
        let value: Value = serde_json::from_slice(&body).expect("tags json");
        assert_eq!(value["name"], repo);
        value["tags"]
            .as_array()
            .unwrap_or_else(|| panic!("tags must be an array: {value}"))
            .iter()
            .map(|t| t.as_str().expect("tag string").to_owned())
            .collect()
    }

    /// The whole catalog (one page of up to 1000 entries).
    pub async fn catalog(&self) -> Vec<String> {
        let response = self.send(self.get("/v2/_catalog")).await;
        let (_, body) = expect_status(response, 200).await;
        let value: Value = serde_json::from_slice(&body).expect("catalog json");
        value["repositories"]
            .as_array()
            .unwrap_or_else(|| panic!("repositories must be an array: {value}"))
            .iter()
            .map(|t| t.as_str().expect("name string").to_owned())
            .collect()
    }

    /// Runs garbage collection through the admin endpoint and returns its report.
    pub async fn gc(&self) -> Value {
        let response = self.send(self.post("/api/v1/admin/gc")).await;
        let (_, body) = expect_status(response, 200).await;
        let report: Value = serde_json::from_slice(&body).expect("gc report json");
        for field in [
            "blobs_deleted",
            "uploads_deleted",
            "orphan_blobs_deleted",
            "orphan_uploads_deleted",
            "leftovers_deleted",
        ] {
            assert!(report[field].is_u64(), "gc report lacks {field}: {report}");
        }
        report
    }

    // ---- raw HTTP ----

    /// Sends `head` (request line and headers, without `Host`/`Connection`) and `body` over a
    /// fresh TCP connection, exactly as given: no normalisation of `..` or `%2e`, no
    /// `Content-Length` fixing. `None` when the server closed without answering.
    pub async fn raw(
        &self,
        request_line: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        half_close: bool,
    ) -> Option<RawResponse> {
        let mut stream = tokio::net::TcpStream::connect(self.server.addr)
            .await
            .expect("connect");
        let mut head = format!(
            "{request_line}\r\nHost: {}\r\nConnection: close\r\n",
            self.server.host()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        // One write, so the body travels with the head: a server that answers from the head
        // alone then finds nothing unread when it closes (unread bytes would make it reset
        // the connection, and a reset can discard its answer before we read it).
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        stream.write_all(&request).await.expect("write request");
        if half_close {
            stream.shutdown().await.expect("shutdown write half");
        }
        let mut received = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut received)).await;
        match read {
            Ok(Ok(_)) | Ok(Err(_)) => {}
            Err(_) => panic!("server neither answered nor closed within 20 s: {request_line}"),
        }
        RawResponse::parse(&received)
    }
}

/// A response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn parse(bytes: &[u8]) -> Option<RawResponse> {
        let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&bytes[..end]).expect("response head is text");
        let mut lines = head.split("\r\n");
        let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let mut headers = HeaderMap::new();
        for line in lines {
            let (name, value) = line.split_once(':')?;
            headers.append(
                reqwest::header::HeaderName::from_bytes(name.trim().as_bytes())
                    .expect("header name"),
                value.trim().parse().expect("header value"),
            );
        }
        let mut body = bytes[end + 4..].to_vec();
        if headers
            .get("transfer-encoding")
            .is_some_and(|v| v == "chunked")
        {
            body = dechunk(&body);
        }
        Some(RawResponse {
            status,
            headers,
            body,
        })
    }

    /// Asserts the status and the OCI error code; returns the first error.
    pub fn expect_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {}",
            String::from_utf8_lossy(&self.body)
        );
        check_error_body(&self.headers, &self.body, code)
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") {
        let size_text = std::str::from_utf8(&body[..line_end]).unwrap_or("0");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        let Some(chunk) = body.get(start..start + size) else {
            break;
        };
        out.extend_from_slice(chunk);
        body = body.get(start + size + 2..).unwrap_or_default();
    }
    out
}

/// Every file below `dir`, recursively, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}
