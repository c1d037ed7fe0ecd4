//! The edge node (`aerugo edge`) end to end: a subprocess (pingora owns its runtimes and
//! signals) in front of real and scripted upstreams.
//!
//! Upstreams: the CNCF distribution registry (`docker-registry`), Aerugo cores (in-process or
//! `aerugo serve` processes) and the fault-injecting [`FaultUpstream`], which counts what the
//! edge asked it. Every test starts its own processes on free loopback ports.
//!
//! - [`mirror`]: pulls through from the distribution registry and a core, upstream selection
//!   (`?ns=`, path prefix, default), allow/deny, read-only refusals;
//! - [`faults`]: coalescing, corruption, truncation, stale-if-error, tokens, revalidation,
//!   redirects;
//! - [`check_config`]: `aerugo admin check-config` on the `[edge]` section;
//! - [`confirm`]: cached digests served only where (and, in a gateway, to whom) the origin
//!   shows them;
//! - [`tokens`]: a gateway in front of a closed core: bearer tokens checked against the core's
//!   keys, private blobs served to their token holders only (also with the core down), fills
//!   as the gateway's service account;
//! - [`cache`]: the disk cap, restarts with a warm cache, `Range`;
//! - [`connections`]: header and keep-alive timeouts, connection caps;
//! - [`protocol`]: pipelining, methods and unknown endpoints as the core answers them, early
//!   refusals that reach a client still sending;
//! - [`restart`]: graceful restart (`--upgrade` + SIGQUIT) without a failed request;
//! - [`tls`], [`gateway`], [`clients`] (skopeo through a `registries.conf` mirror, containerd
//!   through a `hosts.toml` mirror).
//!
//! [`FaultUpstream`]: crate::support::fault_upstream::FaultUpstream

use reqwest::header::HeaderMap;
use sha2::{Digest as _, Sha256};

use crate::support::edge::{EdgeProcess, upstream};
use crate::support::fault_upstream::{self, FaultUpstream};

use aerugo::config::MirrorUpstream;

mod cache;
mod check_config;
mod clients;
mod confirm;
mod connections;
mod dockerd;
mod faults;
mod gateway;
mod mirror;
mod protocol;
mod restart;
mod tls;
mod tokens;

/// What every manifest request of these tests accepts.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// A response read to its end (or to its failure) without keeping the body: its length and
/// SHA-256 only, so many clients can download large blobs at once.
#[derive(Debug)]
pub struct Fetched {
    pub status: u16,
    pub headers: HeaderMap,
    /// Body bytes received before the end or the error.
    pub received: u64,
    /// `sha256:<hex>` of the bytes received.
    pub digest: String,
    /// Why the body (or the request) failed, if it did.
    pub error: Option<String>,
}

impl Fetched {
    /// `Content-Length` as announced.
    pub fn content_length(&self) -> Option<u64> {
        self.headers
            .get("content-length")
            .and_then(|v| v.to_str().ok()?.parse().ok())
    }

    /// `x-aerugo-cache`, or "" when absent.
    pub fn cache(&self) -> &str {
        self.headers
            .get("x-aerugo-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts a complete `200` body of `size` bytes hashing to `digest`.
    pub fn assert_blob(&self, digest: &str, size: u64) {
        assert_eq!(self.status, 200, "status; {self:?}");
        assert!(self.error.is_none(), "the body failed: {self:?}");
        assert_eq!(
            self.content_length(),
            Some(size),
            "Content-Length; {self:?}"
        );
        assert_eq!(self.received, size, "bytes received; {self:?}");
        assert_eq!(self.digest, digest, "the bytes do not hash to the digest");
    }

    /// Asserts that the client did not get a complete body: the request or the body failed,
    /// or fewer bytes than announced arrived — never a clean end with the full length.
    pub fn assert_incomplete(&self, full_size: u64) {
        let clean_full_body = self.status == 200
            && self.error.is_none()
            && self.received == self.content_length().unwrap_or(u64::MAX);
        assert!(
            !clean_full_body,
            "the client received a complete body from a broken upstream: {self:?}"
        );
        assert!(
            self.received < full_size,
            "the client received all {full_size} bytes of a broken blob: {self:?}"
        );
    }
}

/// `GET url` (with `Range` when given), hashing the body as it streams.
pub async fn fetch(client: &reqwest::Client, url: &str, range: Option<&str>) -> Fetched {
    let mut request = client.get(url);
    if let Some(range) = range {
        request = request.header("range", range);
    }
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(e) => {
            return Fetched {
                status: 0,
                headers: HeaderMap::new(),
                received: 0,
                digest: String::new(),
                error: Some(format!("request failed: {e:?}")),
            };
        }
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    let error = drain(&mut response, &mut hasher, &mut received).await;
    Fetched {
        status,
        headers,
        received,
        digest: format!("sha256:{}", hex::encode(hasher.finalize())),
        error,
    }
}

/// A small response in full: status, headers, body.
pub async fn get_full(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, HeaderMap, Vec<u8>) {
    let mut request = client.get(url).header("accept", MANIFEST_ACCEPT);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body").to_vec();
    (status, headers, body)
}

/// `GET` of a manifest through the edge; asserts `200`, the digest header and the bytes.
pub async fn expect_manifest(
    edge: &EdgeProcess,
    path: &str,
    digest: &str,
    body: &[u8],
) -> HeaderMap {
    let (status, headers, got) = get_full(&edge.http, &edge.url(path), &[]).await;
    assert_eq!(status, 200, "GET {path}: {}", String::from_utf8_lossy(&got));
    assert_eq!(
        crate::distribution::header(&headers, "docker-content-digest"),
        digest,
        "GET {path}"
    );
    assert!(got == body, "GET {path}: manifest bytes differ");
    headers
}

/// Asserts an OCI error whose message names `upstream`.
pub async fn expect_upstream_error(
    edge: &EdgeProcess,
    path: &str,
    status: u16,
    code: &str,
    upstream: &str,
) {
    let response = edge
        .http
        .get(edge.url(path))
        .header("accept", MANIFEST_ACCEPT)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let (_, error) = crate::distribution::expect_error(response, status, code).await;
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(upstream),
        "GET {path}: the error should name upstream {upstream:?}: {error}"
    );
}

/// A fault upstream and an edge whose only (default) upstream it is, named `faulty`;
/// `configure` adjusts that upstream's settings.
pub async fn edge_on_fault_upstream(
    configure: impl FnOnce(&mut MirrorUpstream),
) -> (FaultUpstream, EdgeProcess) {
    edge_on_fault_upstream_with(configure, |_| {}).await
}

/// Like [`edge_on_fault_upstream`], with the rest of the edge configuration adjustable too.
pub async fn edge_on_fault_upstream_with(
    configure: impl FnOnce(&mut MirrorUpstream),
    configure_edge: impl FnOnce(&mut aerugo::config::EdgeConfig),
) -> (FaultUpstream, EdgeProcess) {
    let origin = fault_upstream::start().await;
    let mut site = upstream(FAULTY, &origin.url());
    site.default = true;
    configure(&mut site);
    let edge = EdgeProcess::start(|e| {
        e.upstreams = vec![site];
        configure_edge(e);
    })
    .await;
    (origin, edge)
}

/// The name of the fault upstream in the edge's configuration.
pub const FAULTY: &str = "faulty";

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub async fn eventually<F, Fut>(timeout: std::time::Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Reads the rest of a body into `hasher`, counting bytes; the error that ended it, if any.
pub(crate) async fn drain(
    response: &mut reqwest::Response,
    hasher: &mut Sha256,
    received: &mut u64,
) -> Option<String> {
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                *received += chunk.len() as u64;
                hasher.update(&chunk);
            }
            Ok(None) => return None,
            Err(e) => return Some(format!("{e:?}")),
        }
    }
}
