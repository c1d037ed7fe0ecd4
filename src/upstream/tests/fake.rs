//! An in-process registry for the upstream client's tests (axum on `127.0.0.1:0`).
//!
//! It serves manifests and blobs, can require a bearer token from its own `/token` realm or
//! Basic credentials, and can misbehave on demand through [`Knobs`]: 429, a number of 500s,
//! truncated, corrupted, stalled or slow blob bodies, redirects to another server, wrong
//! digest headers. Every request is logged ([`Seen`], [`TokenRequest`]) so tests assert what
//! the client sent, not only what it returned.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use bytes::Bytes;
use futures_util::{StreamExt as _, stream};

use crate::oci::Digest;
use crate::oci::manifest::OCI_MANIFEST;

pub const SERVICE: &str = "fake-registry";

#[derive(Debug, Clone)]
pub enum AuthMode {
    /// Everything is public.
    Anonymous,
    /// Registry requests need a token from `/token`.
    Bearer {
        /// `expires_in` in the token response (`None`: left out).
        advertised_expires_in: Option<u64>,
        /// How long the server actually honours a token.
        actual_ttl: Duration,
        /// Basic credentials `/token` requires, if any.
        credentials: Option<(String, String)>,
        /// Answer with `access_token` instead of `token`.
        access_token_field: bool,
    },
    /// Registry requests need these Basic credentials.
    Basic { username: String, password: String },
}

impl AuthMode {
    pub fn bearer(advertised_expires_in: Option<u64>, actual_ttl: Duration) -> AuthMode {
        AuthMode::Bearer {
            advertised_expires_in,
            actual_ttl,
            credentials: None,
            access_token_field: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobFault {
    /// Half the bytes, chunked, then a clean end: only the digest can tell.
    ShortChunked,
    /// `Content-Length` of the whole blob, half the bytes, then the connection dies.
    ShortWithLength,
    /// One byte flipped, length intact.
    CorruptByte,
    /// Half the bytes, then silence.
    Stall,
    /// All the bytes, in 8 pieces 100 ms apart.
    Slow,
}

#[derive(Debug, Clone)]
pub struct Knobs {
    pub auth: AuthMode,
    /// The next this-many `/v2` requests answer 500.
    pub fail_500: u32,
    /// Every `/v2` request answers 429 with this `Retry-After` (empty: no header).
    pub rate_limit: Option<String>,
    pub blob_fault: Option<BlobFault>,
    /// Blob GETs answer 307 to `<this base URL>/v2/<name>/blobs/<digest>`.
    pub redirect_blobs_to: Option<String>,
    /// Replaces the manifests' `Docker-Content-Digest` (`Some("")`: header left out).
    pub manifest_digest_header: Option<String>,
    /// Replaces the manifests' `Content-Type`.
    pub manifest_content_type: Option<String>,
    /// 401s carry this raw `WWW-Authenticate` instead of the real challenge.
    pub challenge_override: Option<String>,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            auth: AuthMode::Anonymous,
            fail_500: 0,
            rate_limit: None,
            blob_fault: None,
            redirect_blobs_to: None,
            manifest_digest_header: None,
            manifest_content_type: None,
            challenge_override: None,
        }
    }
}

/// One `/v2` request as received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub authorization: Option<String>,
    pub accept: Option<String>,
    pub status: StatusCode,
}

/// One `/token` request as received.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub authorization: Option<String>,
    pub query: String,
}

#[derive(Default)]
struct Log {
    requests: Vec<Seen>,
    tokens: Vec<TokenRequest>,
}

struct Shared {
    base: String,
    knobs: Mutex<Knobs>,
    /// `"<name>/<reference>"` → (bytes, media type).
    manifests: Mutex<HashMap<String, (Bytes, String)>>,
    blobs: Mutex<HashMap<String, Bytes>>,
    /// Issued token → when the server stops honouring it.
    tokens: Mutex<HashMap<String, Instant>>,
    log: Mutex<Log>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running fake registry; stops when dropped.
pub struct Fake {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    pub async fn start(knobs: Knobs) -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            base: format!("http://{addr}"),
            knobs: Mutex::new(knobs),
            manifests: Mutex::default(),
            blobs: Mutex::default(),
            tokens: Mutex::default(),
            log: Mutex::default(),
        });
        let app = Router::new()
            .route("/token", get(token))
            .route("/v2/{*rest}", any(v2))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Fake { shared, task }
    }

    pub fn url(&self) -> String {
        self.shared.base.clone()
    }

    pub fn knobs(&self) -> MutexGuard<'_, Knobs> {
        lock(&self.shared.knobs)
    }

    /// Stores a manifest under `name` by `tag` (when given) and by its digest; returns the digest.
    pub fn put_manifest(
        &self,
        name: &str,
        tag: Option<&str>,
        body: &[u8],
        media_type: &str,
    ) -> Digest {
        let digest = Digest::sha256_of(body);
        let entry = (Bytes::copy_from_slice(body), media_type.to_owned());
        let mut manifests = lock(&self.shared.manifests);
        if let Some(tag) = tag {
            manifests.insert(format!("{name}/{tag}"), entry.clone());
        }
        manifests.insert(format!("{name}/{digest}"), entry);
        digest
    }

    /// Serves `body` under a reference it does not hash to (a lying upstream).
    pub fn put_manifest_at(&self, name: &str, reference: &str, body: &[u8]) {
        lock(&self.shared.manifests).insert(
            format!("{name}/{reference}"),
            (Bytes::copy_from_slice(body), OCI_MANIFEST.to_owned()),
        );
    }

    pub fn put_blob(&self, body: &[u8]) -> Digest {
        let digest = Digest::sha256_of(body);
        lock(&self.shared.blobs).insert(digest.to_string(), Bytes::copy_from_slice(body));
        digest
    }

    pub fn requests(&self) -> Vec<Seen> {
        lock(&self.shared.log).requests.clone()
    }

    pub fn token_requests(&self) -> Vec<TokenRequest> {
        lock(&self.shared.log).tokens.clone()
    }

    /// How many `/v2` requests were answered with `status`.
    pub fn count(&self, status: StatusCode) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.status == status)
            .count()
    }

    /// Makes every token issued so far invalid (a revocation).
    pub fn revoke_tokens(&self) {
        lock(&self.shared.tokens).clear();
    }
}

/// `Basic <base64(user:pass)>`.
pub fn basic(username: &str, password: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{username}:{password}");
    let mut out = String::from("Basic ");
    for chunk in input.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn header_string(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn token(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let authorization = header_string(&headers, header::AUTHORIZATION);
    lock(&s.log).tokens.push(TokenRequest {
        authorization: authorization.clone(),
        query: query.unwrap_or_default(),
    });
    let AuthMode::Bearer {
        advertised_expires_in,
        actual_ttl,
        credentials,
        access_token_field,
    } = lock(&s.knobs).auth.clone()
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Some((user, pass)) = credentials
        && authorization.as_deref() != Some(basic(&user, &pass).as_str())
    {
        return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
    }
    let token = format!("token-{}", uuid::Uuid::new_v4());
    lock(&s.tokens).insert(token.clone(), Instant::now() + actual_ttl);
    let mut body = serde_json::Map::new();
    body.insert(
        if access_token_field {
            "access_token"
        } else {
            "token"
        }
        .into(),
        token.into(),
    );
    if let Some(expires_in) = advertised_expires_in {
        body.insert("expires_in".into(), expires_in.into());
    }
    body.insert("issued_at".into(), "2009-11-10T23:00:00Z".into());
    axum::Json(serde_json::Value::Object(body)).into_response()
}

async fn v2(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let response = handle(&s, &uri, &headers);
    lock(&s.log).requests.push(Seen {
        method,
        path: uri.path().to_owned(),
        authorization: header_string(&headers, header::AUTHORIZATION),
        accept: header_string(&headers, header::ACCEPT),
        status: response.status(),
    });
    response
}

fn handle(s: &Shared, uri: &Uri, headers: &HeaderMap) -> Response {
    let rest = uri.path().strip_prefix("/v2/").unwrap_or_default();
    let (name, kind, reference) = if let Some((name, r)) = rest.rsplit_once("/manifests/") {
        (name, "manifests", r)
    } else if let Some((name, r)) = rest.rsplit_once("/blobs/") {
        (name, "blobs", r)
    } else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let knobs = lock(&s.knobs).clone();
    if let Some(denied) = check_auth(s, &knobs, headers, name) {
        return denied;
    }
    if let Some(retry_after) = &knobs.rate_limit {
        let mut response = (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response();
        if !retry_after.is_empty() {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(retry_after).unwrap(),
            );
        }
        return response;
    }
    if knobs.fail_500 > 0 {
        lock(&s.knobs).fail_500 -= 1;
        return (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response();
    }
    if kind == "manifests" {
        let Some((body, media_type)) = lock(&s.manifests)
            .get(&format!("{name}/{reference}"))
            .cloned()
        else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let digest = match knobs.manifest_digest_header {
            Some(h) => h,
            None => Digest::sha256_of(&body).to_string(),
        };
        let mut response = Response::new(Body::from(body));
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&knobs.manifest_content_type.unwrap_or(media_type)).unwrap(),
        );
        if !digest.is_empty() {
            h.insert(
                "docker-content-digest",
                HeaderValue::from_str(&digest).unwrap(),
            );
        }
        return response;
    }
    let Some(blob) = lock(&s.blobs).get(reference).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Some(target) = &knobs.redirect_blobs_to {
        let location = format!("{target}/v2/{name}/blobs/{reference}");
        return (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response();
    }
    if let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        return ranged(&blob, range);
    }
    let mut response = match knobs.blob_fault {
        None => Response::new(Body::from(blob.clone())),
        Some(fault) => faulty_body(&blob, fault),
    };
    response.headers_mut().insert(
        "docker-content-digest",
        HeaderValue::from_str(reference).unwrap(),
    );
    response
}

fn check_auth(s: &Shared, knobs: &Knobs, headers: &HeaderMap, name: &str) -> Option<Response> {
    let authorization = header_string(headers, header::AUTHORIZATION);
    let challenge = match &knobs.auth {
        AuthMode::Anonymous => return None,
        AuthMode::Basic { username, password } => {
            if authorization.as_deref() == Some(basic(username, password).as_str()) {
                return None;
            }
            r#"Basic realm="fake""#.to_owned()
        }
        AuthMode::Bearer { .. } => {
            let valid = authorization
                .as_deref()
                .and_then(|a| a.strip_prefix("Bearer "))
                .and_then(|t| lock(&s.tokens).get(t).copied())
                .is_some_and(|until| until > Instant::now());
            if valid {
                return None;
            }
            format!(
                r#"Bearer realm="{}/token",service="{SERVICE}",scope="repository:{name}:pull""#,
                s.base
            )
        }
    };
    let challenge = knobs.challenge_override.clone().unwrap_or(challenge);
    let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
    Some(
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, challenge)],
            body,
        )
            .into_response(),
    )
}

fn ranged(blob: &Bytes, range: &str) -> Response {
    let spec = range.strip_prefix("bytes=").unwrap_or_default();
    let (first, last) = spec.split_once('-').unwrap_or_default();
    let first: usize = first.parse().unwrap_or(0);
    let last: usize = last
        .parse::<usize>()
        .unwrap_or(usize::MAX)
        .min(blob.len() - 1);
    if first > last {
        return StatusCode::RANGE_NOT_SATISFIABLE.into_response();
    }
    let content_range = format!("bytes {first}-{last}/{}", blob.len());
    (
        StatusCode::PARTIAL_CONTENT,
        [(header::CONTENT_RANGE, content_range)],
        blob.slice(first..=last),
    )
        .into_response()
}

fn faulty_body(blob: &Bytes, fault: BlobFault) -> Response {
    let half = blob.slice(..blob.len() / 2);
    let whole_length = [(header::CONTENT_LENGTH, blob.len().to_string())];
    match fault {
        BlobFault::ShortChunked => {
            let body = Body::from_stream(stream::iter([Ok::<_, std::io::Error>(half)]));
            Response::new(body)
        }
        BlobFault::ShortWithLength => {
            // The pause lets the headers and the first half leave before the connection dies.
            let body = stream::once(async move { Ok(half) }).chain(stream::once(async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(std::io::Error::other("upstream died"))
            }));
            (whole_length, Body::from_stream(body)).into_response()
        }
        BlobFault::CorruptByte => {
            let mut corrupted = blob.to_vec();
            corrupted[blob.len() / 3] ^= 0x01;
            Response::new(Body::from(corrupted))
        }
        BlobFault::Stall => {
            let body = stream::once(async move { Ok::<_, std::io::Error>(half) }).chain(
                stream::once(async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(Bytes::new())
                }),
            );
            (whole_length, Body::from_stream(body)).into_response()
        }
        BlobFault::Slow => {
            let pieces: Vec<Bytes> = blob
                .chunks(blob.len().div_ceil(8))
                .map(Bytes::copy_from_slice)
                .collect();
            let body = stream::iter(pieces).then(|piece| async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok::<_, std::io::Error>(piece)
            });
            (whole_length, Body::from_stream(body)).into_response()
        }
    }
}
