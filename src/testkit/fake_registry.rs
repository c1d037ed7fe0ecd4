//! An in-process, fault-injecting registry for tests: the upstream client's unit tests and the
//! edge's integration tests both pull from it.
//!
//! It serves manifests (by tag and digest) and blobs from memory, and `/objects/<digest>` as a
//! stand-in object store that redirected blob `GET`s land on. It can require a bearer token
//! from its own `/token` realm or Basic credentials, and misbehaves on demand through
//! [`Knobs`] (or one [`Fault`] at a time): delays, 429s, 500s, truncated, corrupted, stalled
//! or slow bodies, redirects, lying headers, refused connections. It records every request
//! ([`Seen`], [`TokenRequest`], counts by method and path) so tests assert what the client
//! sent, not only what it got back.
//!
//! It runs on its own runtime thread, so a test may block, and stops when dropped.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::image::TestImage;
use crate::oci::Digest;
use crate::oci::manifest::OCI_MANIFEST;

/// The `service` of the bearer challenge.
pub const SERVICE: &str = "fake-registry";

/// Bytes per body chunk the registry sends.
const CHUNK: usize = 256 * 1024;

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
    /// One byte (in the middle) flipped, length intact.
    CorruptByte,
    /// This many bytes, then silence until the blob fault is changed.
    StallAfter(usize),
    /// All the bytes, in 8 pieces 100 ms apart.
    Slow,
}

/// How the registry behaves; change it at any time with [`FakeRegistry::knobs`].
#[derive(Debug, Clone)]
pub struct Knobs {
    pub auth: AuthMode,
    /// Every `/v2` answer waits this long first.
    pub delay: Option<Duration>,
    /// The next this-many `/v2` requests answer 500 (`u32::MAX`: all of them).
    pub fail_500: u32,
    /// Every `/v2` request answers 429 with this `Retry-After` (empty: no header).
    pub rate_limit: Option<String>,
    pub blob_fault: Option<BlobFault>,
    /// Blob `GET`s answer 307 to `<this base URL>/objects/<digest>?signature=…`, as a registry
    /// on object storage does; any fake registry serves its blobs there, unauthenticated.
    pub redirect_blobs_to: Option<String>,
    /// Manifest bodies have one byte flipped (headers unchanged).
    pub corrupt_manifests: bool,
    /// Replaces the manifests' `Docker-Content-Digest` (`Some("")`: header left out).
    pub manifest_digest_header: Option<String>,
    /// Replaces the manifests' `Content-Type`.
    pub manifest_content_type: Option<String>,
    /// 401s carry this raw `WWW-Authenticate` instead of the real challenge.
    pub challenge_override: Option<String>,
    /// Blob `GET`s are counted but not answered while set.
    pub hold_blobs: bool,
    /// The listener is closed (connections are refused) and open connections fail.
    pub down: bool,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            auth: AuthMode::Anonymous,
            delay: None,
            fail_500: 0,
            rate_limit: None,
            blob_fault: None,
            redirect_blobs_to: None,
            corrupt_manifests: false,
            manifest_digest_header: None,
            manifest_content_type: None,
            challenge_override: None,
            hold_blobs: false,
            down: false,
        }
    }
}

/// One misbehaviour at a time, for tests that switch between them ([`FakeRegistry::set_fault`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Behaves.
    None,
    /// [`Knobs::delay`].
    Delay(Duration),
    /// [`BlobFault::ShortWithLength`].
    TruncateBlobs,
    /// [`BlobFault::CorruptByte`].
    CorruptBlobs,
    /// [`Knobs::corrupt_manifests`].
    CorruptManifests,
    /// [`BlobFault::StallAfter`].
    StallBlobsAfter(usize),
    /// [`Knobs::redirect_blobs_to`].
    RedirectBlobs { base: String },
    /// [`Knobs::rate_limit`].
    TooManyRequests { retry_after_seconds: u64 },
    /// Every `/v2` request answers 500.
    ServerError,
    /// [`Knobs::down`].
    Down,
}

/// One request (other than `/token`) as received.
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
struct Content {
    /// (repository, tag) → manifest digest.
    tags: HashMap<(String, String), String>,
    /// digest → (bytes, media type).
    manifests: HashMap<String, (Bytes, String)>,
    blobs: HashMap<String, Bytes>,
}

#[derive(Default)]
struct Log {
    /// (method, path) → requests received, counted on arrival (a held request counts).
    arrived: HashMap<(String, String), u64>,
    requests: Vec<Seen>,
    tokens: Vec<TokenRequest>,
}

struct Shared {
    addr: SocketAddr,
    knobs: watch::Sender<Knobs>,
    content: Mutex<Content>,
    /// Issued token → when the server stops honouring it.
    tokens: Mutex<HashMap<String, Instant>>,
    log: Mutex<Log>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running fake registry; stops when dropped.
pub struct FakeRegistry {
    shared: Arc<Shared>,
    _thread: super::ServerThread,
}

impl FakeRegistry {
    pub async fn start(knobs: Knobs) -> FakeRegistry {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            addr,
            knobs: watch::channel(knobs).0,
            content: Mutex::default(),
            tokens: Mutex::default(),
            log: Mutex::default(),
        });
        let state = Arc::clone(&shared);
        let thread = super::ServerThread::spawn(move |stopped| async move {
            let listener = DownableListener {
                addr,
                inner: Some(TcpListener::from_std(std_listener).expect("listener")),
                knobs: state.knobs.subscribe(),
            };
            let app = axum::Router::new().fallback(handle).with_state(state);
            // No graceful shutdown: dropping the runtime drops every connection, however
            // busy (a test may end with a client still attached).
            tokio::select! {
                _ = axum::serve(listener, app).into_future() => {}
                _ = stopped => {}
            }
        });
        FakeRegistry {
            shared,
            _thread: thread,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// The knobs, to change: the change takes effect when the guard is dropped.
    pub fn knobs(&self) -> KnobsGuard<'_> {
        KnobsGuard {
            knobs: self.shared.knobs.borrow().clone(),
            shared: &self.shared,
        }
    }

    /// Clears every misbehaviour (not the auth mode), then sets `fault`.
    pub fn set_fault(&self, fault: Fault) {
        let mut knobs = self.knobs();
        let auth = knobs.auth.clone();
        *knobs = Knobs {
            auth,
            hold_blobs: knobs.hold_blobs,
            ..Knobs::default()
        };
        match fault {
            Fault::None => {}
            Fault::Delay(d) => knobs.delay = Some(d),
            Fault::TruncateBlobs => knobs.blob_fault = Some(BlobFault::ShortWithLength),
            Fault::CorruptBlobs => knobs.blob_fault = Some(BlobFault::CorruptByte),
            Fault::CorruptManifests => knobs.corrupt_manifests = true,
            Fault::StallBlobsAfter(at) => knobs.blob_fault = Some(BlobFault::StallAfter(at)),
            Fault::RedirectBlobs { base } => knobs.redirect_blobs_to = Some(base),
            Fault::TooManyRequests {
                retry_after_seconds,
            } => knobs.rate_limit = Some(retry_after_seconds.to_string()),
            Fault::ServerError => knobs.fail_500 = u32::MAX,
            Fault::Down => knobs.down = true,
        }
    }

    /// From now on registry requests need a bearer token from `/token`, honoured for
    /// `lifetime` and advertised as valid for `expires_in` seconds.
    pub fn require_token(&self, lifetime: Duration, expires_in: u64) {
        self.knobs().auth = AuthMode::bearer(Some(expires_in), lifetime);
    }

    /// Blob `GET`s are counted but not answered until [`FakeRegistry::release_blobs`] (so a test
    /// can line up concurrent clients behind one fetch).
    pub fn hold_blobs(&self) {
        self.knobs().hold_blobs = true;
    }

    pub fn release_blobs(&self) {
        self.knobs().hold_blobs = false;
    }

    // ---- content ----

    /// Stores a manifest by digest and, when given, tags it in `name`; returns the digest.
    pub fn put_manifest(
        &self,
        name: &str,
        tag: Option<&str>,
        body: &[u8],
        media_type: &str,
    ) -> Digest {
        let digest = Digest::sha256_of(body);
        lock(&self.shared.content).manifests.insert(
            digest.to_string(),
            (Bytes::copy_from_slice(body), media_type.to_owned()),
        );
        if let Some(tag) = tag {
            self.set_tag(name, tag, digest.as_str());
        }
        digest
    }

    /// Serves `body` under a digest it does not hash to (a lying upstream).
    pub fn put_manifest_at(&self, digest: &str, body: &[u8]) {
        lock(&self.shared.content).manifests.insert(
            digest.to_owned(),
            (Bytes::copy_from_slice(body), OCI_MANIFEST.to_owned()),
        );
    }

    /// Points `repo:tag` at a manifest digest (re-tagging moves it).
    pub fn set_tag(&self, repo: &str, tag: &str, digest: &str) {
        lock(&self.shared.content)
            .tags
            .insert((repo.to_owned(), tag.to_owned()), digest.to_owned());
    }

    /// Stores every blob of `image` and its manifest, tagged `tag` in `repo`.
    pub fn put_image(&self, repo: &str, tag: &str, image: &TestImage) {
        for blob in image.blobs() {
            self.put_blob(blob.bytes());
        }
        self.put_manifest(repo, Some(tag), &image.manifest, &image.media_type);
    }

    pub fn put_blob(&self, body: impl AsRef<[u8]>) -> Digest {
        let body = body.as_ref();
        let digest = Digest::sha256_of(body);
        lock(&self.shared.content)
            .blobs
            .insert(digest.to_string(), Bytes::copy_from_slice(body));
        digest
    }

    /// Makes every token issued so far invalid (a revocation, a rotated key).
    pub fn revoke_tokens(&self) {
        lock(&self.shared.tokens).clear();
    }

    // ---- what it saw ----

    /// Every request but `/token`, answered, in order.
    pub fn requests(&self) -> Vec<Seen> {
        lock(&self.shared.log).requests.clone()
    }

    pub fn token_requests(&self) -> Vec<TokenRequest> {
        lock(&self.shared.log).tokens.clone()
    }

    /// How many requests were answered with `status`.
    pub fn answered(&self, status: StatusCode) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.status == status)
            .count()
    }

    /// Requests received with this method and path (answered or not yet).
    pub fn count(&self, method: &str, path: &str) -> u64 {
        lock(&self.shared.log)
            .arrived
            .get(&(method.to_owned(), path.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// `GET`s of a blob, whatever the repository.
    pub fn blob_gets(&self, digest: &str) -> u64 {
        let suffix = format!("/blobs/{digest}");
        lock(&self.shared.log)
            .arrived
            .iter()
            .filter(|((m, p), _)| m == "GET" && p.ends_with(&suffix))
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests with this method of `/v2/{repo}/manifests/{reference}`.
    pub fn manifest_requests(&self, method: &str, repo: &str, reference: &str) -> u64 {
        self.count(method, &format!("/v2/{repo}/manifests/{reference}"))
    }

    /// Tokens requested from `/token`.
    pub fn tokens_issued(&self) -> u64 {
        self.count("GET", "/token")
    }

    /// Every (method, path) received and how often, sorted, for failure messages.
    pub fn request_counts(&self) -> Vec<((String, String), u64)> {
        let mut all: Vec<_> = lock(&self.shared.log)
            .arrived
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        all.sort();
        all
    }
}

/// A copy of the knobs; written back (and announced to waiting requests) when dropped.
pub struct KnobsGuard<'a> {
    knobs: Knobs,
    shared: &'a Shared,
}

impl Deref for KnobsGuard<'_> {
    type Target = Knobs;

    fn deref(&self) -> &Knobs {
        &self.knobs
    }
}

impl DerefMut for KnobsGuard<'_> {
    fn deref_mut(&mut self) -> &mut Knobs {
        &mut self.knobs
    }
}

impl Drop for KnobsGuard<'_> {
    fn drop(&mut self) {
        self.shared
            .knobs
            .send_replace(std::mem::take(&mut self.knobs));
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

// ---------------------------------------------------------------------------------------------
// The server

fn header_string(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn oci_error(status: StatusCode, code: &str) -> Response {
    let body = format!(r#"{{"errors":[{{"code":"{code}","message":"fake registry"}}]}}"#);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn handle(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().to_owned();
    *lock(&s.log)
        .arrived
        .entry((method.to_string(), path.clone()))
        .or_default() += 1;
    let authorization = header_string(&headers, header::AUTHORIZATION);
    if path == "/token" {
        lock(&s.log).tokens.push(TokenRequest {
            authorization: authorization.clone(),
            query: uri.query().unwrap_or_default().to_owned(),
        });
        return token(&s, authorization.as_deref());
    }
    let response = answer(&s, &method, &path, &headers).await;
    lock(&s.log).requests.push(Seen {
        method,
        path,
        authorization,
        accept: header_string(&headers, header::ACCEPT),
        status: response.status(),
    });
    response
}

fn token(s: &Shared, authorization: Option<&str>) -> Response {
    let AuthMode::Bearer {
        advertised_expires_in,
        actual_ttl,
        credentials,
        access_token_field,
    } = s.knobs.borrow().auth.clone()
    else {
        return oci_error(StatusCode::NOT_FOUND, "UNSUPPORTED");
    };
    if let Some((user, pass)) = credentials
        && authorization != Some(basic(&user, &pass).as_str())
    {
        return oci_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    }
    let token = format!("token-{}", uuid::Uuid::new_v4());
    lock(&s.tokens).insert(token.clone(), Instant::now() + actual_ttl);
    let mut body = serde_json::Map::new();
    let field = if access_token_field {
        "access_token"
    } else {
        "token"
    };
    body.insert(field.into(), token.into());
    if let Some(expires_in) = advertised_expires_in {
        body.insert("expires_in".into(), expires_in.into());
    }
    body.insert("issued_at".into(), "2009-11-10T23:00:00Z".into());
    axum::Json(serde_json::Value::Object(body)).into_response()
}

async fn answer(s: &Shared, method: &Method, path: &str, headers: &HeaderMap) -> Response {
    let head = method == Method::HEAD;
    if let Some(digest) = path.strip_prefix("/objects/") {
        return blob(s, digest, head, None, headers).await;
    }
    let knobs = s.knobs.borrow().clone();
    if let Some(delay) = knobs.delay {
        tokio::time::sleep(delay).await;
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return oci_error(StatusCode::NOT_FOUND, "UNSUPPORTED");
    };
    let route = rest
        .rsplit_once("/manifests/")
        .map(|(repo, reference)| (repo, true, reference))
        .or_else(|| {
            rest.rsplit_once("/blobs/")
                .map(|(repo, digest)| (repo, false, digest))
        });
    if let Some(denied) = check_auth(s, &knobs, headers, route.map(|(repo, _, _)| repo)) {
        return denied;
    }
    if let Some(retry_after) = &knobs.rate_limit {
        let mut response = oci_error(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS");
        if let Ok(value) = HeaderValue::from_str(retry_after)
            && !retry_after.is_empty()
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    if knobs.fail_500 > 0 {
        // `u32::MAX` stands for "every request".
        s.knobs.send_modify(|k| {
            if k.fail_500 != u32::MAX {
                k.fail_500 -= 1;
            }
        });
        return oci_error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN");
    }
    if method != Method::GET && !head {
        return oci_error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED");
    }
    match route {
        None if rest.is_empty() => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{}",
        )
            .into_response(),
        None => oci_error(StatusCode::NOT_FOUND, "UNSUPPORTED"),
        Some((repo, true, reference)) => manifest(s, &knobs, repo, reference, head),
        Some((_, false, digest)) => blob(s, digest, head, Some(&knobs), headers).await,
    }
}

/// `None` when the request may pass; the `401` challenge otherwise.
fn check_auth(
    s: &Shared,
    knobs: &Knobs,
    headers: &HeaderMap,
    repo: Option<&str>,
) -> Option<Response> {
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
            let mut challenge = format!(
                r#"Bearer realm="http://{}/token",service="{SERVICE}""#,
                s.addr
            );
            if let Some(repo) = repo {
                challenge.push_str(&format!(r#",scope="repository:{repo}:pull""#));
            }
            challenge
        }
    };
    let challenge = knobs.challenge_override.clone().unwrap_or(challenge);
    let mut response = oci_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    Some(response)
}

fn manifest(s: &Shared, knobs: &Knobs, repo: &str, reference: &str, head: bool) -> Response {
    let found = {
        let content = lock(&s.content);
        let digest = if reference.contains(':') {
            Some(reference.to_owned())
        } else {
            content
                .tags
                .get(&(repo.to_owned(), reference.to_owned()))
                .cloned()
        };
        digest.and_then(|d| content.manifests.get(&d).cloned())
    };
    let Some((bytes, media_type)) = found else {
        return oci_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    };
    let digest = match &knobs.manifest_digest_header {
        Some(claimed) => claimed.clone(),
        None => Digest::sha256_of(&bytes).to_string(),
    };
    let media_type = knobs.manifest_content_type.clone().unwrap_or(media_type);
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, media_type)
        .header(header::CONTENT_LENGTH, bytes.len());
    if !digest.is_empty() {
        builder = builder.header("docker-content-digest", digest);
    }
    let body = if head {
        Body::empty()
    } else if knobs.corrupt_manifests {
        let mut corrupted = bytes.to_vec();
        corrupted[bytes.len() / 2] ^= 0x01;
        Body::from(corrupted)
    } else {
        Body::from(bytes)
    };
    builder.body(body).unwrap_or_default()
}

/// A blob by digest; `knobs` is `None` for the object-store path, which always behaves.
async fn blob(
    s: &Shared,
    digest: &str,
    head: bool,
    knobs: Option<&Knobs>,
    headers: &HeaderMap,
) -> Response {
    let Some(bytes) = lock(&s.content).blobs.get(digest).cloned() else {
        return oci_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    };
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header("docker-content-digest", digest);
    if head {
        return builder
            .header(header::CONTENT_LENGTH, bytes.len())
            .body(Body::empty())
            .unwrap_or_default();
    }
    let _ = s.knobs.subscribe().wait_for(|k| !k.hold_blobs).await;
    let Some(knobs) = knobs else {
        return builder
            .header(header::CONTENT_LENGTH, bytes.len())
            .body(Body::from_stream(chunked(bytes)))
            .unwrap_or_default();
    };
    if let Some(base) = &knobs.redirect_blobs_to {
        let location = format!("{base}/objects/{digest}?signature=s3cr3t");
        return (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response();
    }
    if let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        return ranged(&bytes, range);
    }
    let len = bytes.len();
    let whole = builder.header(header::CONTENT_LENGTH, len);
    let half = bytes.slice(..len / 2);
    let body = match knobs.blob_fault {
        None => {
            return whole
                .body(Body::from_stream(chunked(bytes)))
                .unwrap_or_default();
        }
        Some(BlobFault::ShortChunked) => {
            return Response::new(Body::from_stream(chunked(half)));
        }
        // The pause lets the headers and the first half leave before the connection dies.
        Some(BlobFault::ShortWithLength) => chunked(half)
            .chain(stream::once(async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(io::Error::other("upstream died"))
            }))
            .boxed(),
        Some(BlobFault::CorruptByte) => {
            let mut corrupted = bytes.to_vec();
            corrupted[len / 2] ^= 0x01;
            chunked(Bytes::from(corrupted)).boxed()
        }
        Some(BlobFault::StallAfter(at)) => {
            let at = at.min(len);
            let mut knobs = s.knobs.subscribe();
            let rest = bytes.slice(at..);
            let resume = async move {
                let _ = knobs
                    .wait_for(|k| !matches!(k.blob_fault, Some(BlobFault::StallAfter(_))))
                    .await;
                chunked(rest)
            };
            chunked(bytes.slice(..at))
                .chain(stream::once(resume).flatten())
                .boxed()
        }
        Some(BlobFault::Slow) => {
            let pieces: Vec<Bytes> = bytes
                .chunks(len.div_ceil(8).max(1))
                .map(Bytes::copy_from_slice)
                .collect();
            stream::iter(pieces)
                .then(|piece| async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(piece)
                })
                .boxed()
        }
    };
    whole.body(Body::from_stream(body)).unwrap_or_default()
}

fn ranged(blob: &Bytes, range: &str) -> Response {
    let spec = range.strip_prefix("bytes=").unwrap_or_default();
    let (first, last) = spec.split_once('-').unwrap_or_default();
    let first: usize = first.parse().unwrap_or(0);
    let last: usize = last
        .parse::<usize>()
        .unwrap_or(usize::MAX)
        .min(blob.len().saturating_sub(1));
    if first > last || blob.is_empty() {
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

/// `bytes` as a body stream of [`CHUNK`]-sized pieces (zero-copy slices).
fn chunked(bytes: Bytes) -> impl Stream<Item = io::Result<Bytes>> + Send {
    let pieces: Vec<io::Result<Bytes>> = (0..bytes.len())
        .step_by(CHUNK)
        .map(|at| Ok(bytes.slice(at..(at + CHUNK).min(bytes.len()))))
        .collect();
    stream::iter(pieces)
}

// ---------------------------------------------------------------------------------------------
// A listener that can go down: while `down`, it holds no socket (connections are refused) and
// the connections it accepted fail their next read or write.

struct DownableListener {
    addr: SocketAddr,
    inner: Option<TcpListener>,
    knobs: watch::Receiver<Knobs>,
}

impl axum::serve::Listener for DownableListener {
    type Io = DownableIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (DownableIo, SocketAddr) {
        loop {
            if self.knobs.borrow_and_update().down {
                self.inner = None;
                let _ = self.knobs.wait_for(|k| !k.down).await;
                continue;
            }
            let listener = match &self.inner {
                Some(l) => l,
                None => match TcpListener::bind(self.addr).await {
                    Ok(l) => self.inner.insert(l),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let io = DownableIo { stream, knobs: self.knobs.clone() };
                        return (io, peer);
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                },
                _ = self.knobs.changed() => {}
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

struct DownableIo {
    stream: TcpStream,
    knobs: watch::Receiver<Knobs>,
}

impl DownableIo {
    fn check(&self) -> io::Result<()> {
        if self.knobs.borrow().down {
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "upstream is down",
            ))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for DownableIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for DownableIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
