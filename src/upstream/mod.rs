//! The `Upstream` seam: a registry client for pull-through (the edge cache, and later the
//! core's pull-through service).
//!
//! It owns everything between "give me this manifest / blob of that upstream" and the bytes:
//!
//! - the Docker token dance ([`challenge`] parses `WWW-Authenticate`; [`token_cache`] keeps
//!   bearer tokens per upstream and scope until shortly before they expire), anonymous or with
//!   the upstream's configured credentials, and `Basic` for registries that ask for it;
//! - `Accept` headers listing every manifest media type the registry stores;
//! - retries with backoff on connect errors, timeouts and 5xx, before any byte reached the
//!   caller; `429` is surfaced (never retried blindly) so the edge can serve stale content;
//! - digest verification of everything fetched: manifests are hashed before they are returned,
//!   blob bodies are wrapped in a verifying stream ([`verify()`]) that ends with an error
//!   instead of a clean end when the bytes do not hash to the digest or fall short of
//!   `Content-Length`, hashing beside the stream on another core;
//! - redirects (an origin on S3, Docker Hub's CDN): followed, and our credentials are never
//!   sent to the other host.
//! - for a gateway in front of its own origin, a blob `HEAD` as the gateway's client
//!   ([`UpstreamClient::head_blob_as_client`]): the client's headers, none of ours, and the
//!   origin's refusal returned rather than answered.
//!
//! Depends on `oci` (names, digests, media types) and `storage::ByteStream` only. It names
//! neither axum nor pingora, so the edge and the core can both use it; nothing in `oci` or the
//! storage/metadata seams may depend on it.

pub mod challenge;
pub mod client;
pub mod token_cache;
pub mod verify;

use std::time::Duration;

use crate::oci::Digest;

pub use client::{
    BlobHead, ClientAnswer, FetchedBlob, FetchedManifest, ManifestHead, ServedRange, UpstreamClient,
};
pub use token_cache::TokenCache;
pub use verify::verify;

/// Largest manifest fetched by default: the OCI spec asks registries to accept at least 4 MiB,
/// so nothing a registry serves legitimately is bigger.
pub const DEFAULT_MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// One upstream registry: where it is, how to log in, how patient to be.
///
/// Plain data, deserializable with defaults (every field may be left out), so the config file
/// can embed it as `[[edge.upstream]]` tables later.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Name in logs and token-cache keys, e.g. `docker.io` or `ghcr`.
    pub name: String,
    /// Base URL without `/v2`: scheme, host, optional port and path prefix,
    /// e.g. `https://registry-1.docker.io`.
    pub url: String,
    /// Credentials sent to the token realm (`Bearer`) or the registry (`Basic`) when it asks;
    /// anonymous when absent.
    pub username: Option<String>,
    pub password: Option<String>,
    /// Seconds to establish a TCP (+TLS) connection.
    pub connect_timeout_seconds: f64,
    /// Total deadline of one manifest, `HEAD` or token request, in seconds.
    pub timeout_seconds: f64,
    /// Blob bodies have no total deadline (a large layer takes as long as it takes); instead
    /// the longest silence between two reads, in seconds, before the transfer is abandoned.
    pub read_idle_timeout_seconds: f64,
    /// Extra attempts after the first on connect errors, timeouts and 5xx (2 → 3 attempts).
    pub retries: u32,
    /// Delay before the first retry, in milliseconds; doubled each retry, with jitter.
    pub retry_base_delay_ms: u64,
    /// Manifests larger than this are refused with [`UpstreamError::TooLarge`].
    pub max_manifest_bytes: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            name: "docker.io".into(),
            url: "https://registry-1.docker.io".into(),
            username: None,
            password: None,
            connect_timeout_seconds: 10.0,
            timeout_seconds: 30.0,
            read_idle_timeout_seconds: 60.0,
            retries: 2,
            retry_base_delay_ms: 100,
            max_manifest_bytes: DEFAULT_MAX_MANIFEST_BYTES,
        }
    }
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout_seconds", &self.connect_timeout_seconds)
            .field("timeout_seconds", &self.timeout_seconds)
            .field("read_idle_timeout_seconds", &self.read_idle_timeout_seconds)
            .field("retries", &self.retries)
            .field("retry_base_delay_ms", &self.retry_base_delay_ms)
            .field("max_manifest_bytes", &self.max_manifest_bytes)
            .finish()
    }
}

/// Why an upstream call failed. "Not found" is not an error: the methods return `Ok(None)`.
///
/// Cloneable plain data (no boxed sources) so one failure can be handed to every caller
/// coalesced on the same fetch, and so a verifying stream can carry it inside an
/// `io::Error` (see [`UpstreamError::from_io`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream refused us: `401` after the token dance (or without a usable challenge),
    /// `403`, or the token realm rejected the configured credentials.
    #[error("upstream refused the credentials or the access")]
    Unauthorized,
    /// `429`. Not retried: hammering a rate-limited upstream makes it worse; the edge serves
    /// stale content instead.
    #[error("upstream rate limit reached{}", retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    /// Any other unexpected status (5xx after the retries ran out).
    #[error("upstream answered HTTP {0}")]
    Status(u16),
    /// Connect error, timeout or broken connection, after the retries ran out.
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    /// The bytes do not hash to the digest that was asked for (or that the upstream claimed).
    #[error("digest mismatch: expected {expected}, upstream bytes hash to {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    /// A body ended before `Content-Length` said it would.
    #[error("upstream body truncated: {received} of {expected} bytes")]
    Truncated { expected: u64, received: u64 },
    /// A manifest above [`UpstreamConfig::max_manifest_bytes`].
    #[error("upstream manifest exceeds the {limit}-byte limit")]
    TooLarge { limit: u64 },
    /// The upstream broke the protocol: malformed challenge, header or token response.
    #[error("upstream protocol error: {0}")]
    Protocol(String),
    /// The [`UpstreamConfig`] cannot be used (bad URL, timeouts, credentials).
    #[error("invalid upstream configuration: {0}")]
    Config(String),
}

impl UpstreamError {
    /// Whether trying again later (or serving stale content now) is the right answer: the
    /// upstream is down, slow, overloaded or rate limiting, rather than refusing or lying.
    pub fn is_transient(&self) -> bool {
        match self {
            UpstreamError::Unavailable(_)
            | UpstreamError::RateLimited { .. }
            | UpstreamError::Truncated { .. } => true,
            UpstreamError::Status(code) => (500..600).contains(code),
            _ => false,
        }
    }

    /// The `UpstreamError` inside an `io::Error` yielded by a blob stream, if it carries one.
    pub fn from_io(err: &std::io::Error) -> Option<&UpstreamError> {
        err.get_ref()?.downcast_ref::<UpstreamError>()
    }

    pub(crate) fn into_io(self, kind: std::io::ErrorKind) -> std::io::Error {
        std::io::Error::new(kind, self)
    }
}

#[cfg(test)]
mod tests;
