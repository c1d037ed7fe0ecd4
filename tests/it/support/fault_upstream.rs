//! A scripted, fault-injecting upstream registry for the edge tests: it serves manifests (by
//! tag and digest) and blobs from memory, counts every request by method and path, and can be
//! switched at runtime to misbehave ([`Fault`]), to hold blob `GET`s until released (so a test
//! can line up concurrent clients behind one fetch), or to require bearer tokens from its own
//! `/token` realm with a short life.
//!
//! Runs in-process on its own runtime thread (like `TestServer`), so tests may block.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;

use super::ServerThread;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::seed::SeedImage;
use crate::distribution::{OCI_MANIFEST, sha256};

/// Bytes per body chunk the upstream sends.
const CHUNK: usize = 256 * 1024;

/// How the upstream misbehaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Behaves.
    None,
    /// Every `/v2/` answer waits this long first.
    Delay(Duration),
    /// Blob `GET`s announce the full `Content-Length`, send half the bytes, then close.
    TruncateBlobs,
    /// Blob `GET`s send the full length with one byte (in the middle) flipped.
    CorruptBlobs,
    /// Manifest `GET`s send their bytes with one flipped (headers unchanged, so the
    /// `Docker-Content-Digest` no longer matches the body).
    CorruptManifests,
    /// Blob `GET`s send this many bytes, then pause until the fault is changed.
    StallBlobsAfter(usize),
    /// Blob `GET`s are redirected (`307`) to `{base}/objects/<digest>?signature=…`, as a
    /// registry on object storage does; any fault upstream serves its blobs there, without
    /// authentication.
    RedirectBlobs { base: String },
    /// Every `/v2/` request is answered `429` with `Retry-After`.
    TooManyRequests { retry_after_seconds: u64 },
    /// Every `/v2/` request is answered `500`.
    ServerError,
    /// The listener is closed (connections are refused) and open connections are dropped.
    Down,
}

/// Bearer tokens required on `/v2/`: issued by `/token`, honoured for `lifetime`, advertised
/// with `expires_in` seconds.
#[derive(Debug, Clone, Copy)]
struct TokenPolicy {
    lifetime: Duration,
    expires_in: u64,
}

#[derive(Default)]
struct Content {
    /// (repository, tag) → manifest digest.
    tags: HashMap<(String, String), String>,
    /// digest → (media type, bytes).
    manifests: HashMap<String, (String, Bytes)>,
    blobs: HashMap<String, Bytes>,
}

struct Shared {
    addr: SocketAddr,
    content: Mutex<Content>,
    fault: watch::Sender<Fault>,
    /// (method, path) → requests received.
    requests: Mutex<HashMap<(String, String), u64>>,
    token_policy: Mutex<Option<TokenPolicy>>,
    /// Issued token → instant it stops being accepted.
    tokens: Mutex<HashMap<String, Instant>>,
    /// `true` while blob `GET`s may be answered.
    gate: watch::Sender<bool>,
    /// `true` while the upstream is down.
    down: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct FaultUpstream {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<ServerThread>,
}

impl FaultUpstream {
    pub async fn start() -> FaultUpstream {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            addr,
            content: Mutex::default(),
            fault: watch::channel(Fault::None).0,
            requests: Mutex::default(),
            token_policy: Mutex::new(None),
            tokens: Mutex::default(),
            gate: watch::channel(true).0,
            down: watch::channel(false).0,
        });
        let state = Arc::clone(&shared);
        let thread = ServerThread::spawn(move |stop| async move {
            let listener = FaultListener {
                addr,
                inner: Some(TcpListener::from_std(std_listener).expect("listener")),
                down: state.down.subscribe(),
            };
            let app = axum::Router::new().fallback(handle).with_state(state);
            // No graceful shutdown: dropping the runtime drops every connection, however
            // busy (a test may end with a client still attached).
            tokio::select! {
                _ = axum::serve(listener, app).into_future() => {}
                _ = stop => {}
            }
        });
        FaultUpstream {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    // ---- content ----

    /// Stores a blob; returns its digest.
    pub fn add_blob(&self, bytes: impl Into<Bytes>) -> String {
        let bytes = bytes.into();
        let digest = sha256(&bytes);
        lock(&self.shared.content)
            .blobs
            .insert(digest.clone(), bytes);
        digest
    }

    /// Stores a manifest (by digest only); returns its digest.
    pub fn add_manifest(&self, media_type: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        lock(&self.shared.content).manifests.insert(
            digest.clone(),
            (media_type.to_owned(), Bytes::copy_from_slice(bytes)),
        );
        digest
    }

    /// Points `repo:tag` at a manifest digest (re-tagging moves it).
    pub fn set_tag(&self, repo: &str, tag: &str, digest: &str) {
        lock(&self.shared.content)
            .tags
            .insert((repo.to_owned(), tag.to_owned()), digest.to_owned());
    }

    /// Stores every blob of `image`, its manifest, and tags it.
    pub fn add_image(&self, repo: &str, tag: &str, image: &SeedImage) {
        for (_, bytes) in image.blobs() {
            self.add_blob(Bytes::copy_from_slice(bytes));
        }
        let digest = self.add_manifest(OCI_MANIFEST, &image.manifest);
        self.set_tag(repo, tag, &digest);
    }

    // ---- behaviour ----

    pub fn set_fault(&self, fault: Fault) {
        self.shared.down.send_replace(fault == Fault::Down);
        self.shared.fault.send_replace(fault);
    }

    /// Blob `GET`s are counted but not answered until [`FaultUpstream::release_blobs`].
    pub fn hold_blobs(&self) {
        self.shared.gate.send_replace(false);
    }

    pub fn release_blobs(&self) {
        self.shared.gate.send_replace(true);
    }

    /// From now on `/v2/` requires a bearer token from `/token`, accepted for `lifetime` and
    /// advertised as valid for `expires_in` seconds.
    pub fn require_token(&self, lifetime: Duration, expires_in: u64) {
        *lock(&self.shared.token_policy) = Some(TokenPolicy {
            lifetime,
            expires_in,
        });
    }

    /// Forgets every issued token (as if the token server rotated its key).
    pub fn revoke_tokens(&self) {
        lock(&self.shared.tokens).clear();
    }

    // ---- what it saw ----

    /// Requests received with this method and path.
    pub fn count(&self, method: &str, path: &str) -> u64 {
        lock(&self.shared.requests)
            .get(&(method.to_owned(), path.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// `GET`s of a blob, whatever the repository.
    pub fn blob_gets(&self, digest: &str) -> u64 {
        let suffix = format!("/blobs/{digest}");
        lock(&self.shared.requests)
            .iter()
            .filter(|((m, p), _)| m == "GET" && p.ends_with(&suffix))
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests with this method of `/v2/{repo}/manifests/{reference}`.
    pub fn manifest_requests(&self, method: &str, repo: &str, reference: &str) -> u64 {
        self.count(method, &format!("/v2/{repo}/manifests/{reference}"))
    }

    /// Tokens issued by `/token`.
    pub fn tokens_issued(&self) -> u64 {
        self.count("GET", "/token")
    }

    /// Every request so far, for failure messages.
    pub fn requests(&self) -> Vec<((String, String), u64)> {
        let mut all: Vec<_> = lock(&self.shared.requests)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        all.sort();
        all
    }
}

impl Drop for FaultUpstream {
    fn drop(&mut self) {
        self.release_blobs();
        self.shared.down.send_replace(false);
        drop(self.thread.take());
    }
}

// ---------------------------------------------------------------------------------------------
// The server

fn oci_error(status: StatusCode, code: &str) -> Response {
    let body = format!(r#"{{"errors":[{{"code":"{code}","message":"fault upstream"}}]}}"#);
    (status, [("content-type", "application/json")], body).into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().to_owned();
    *lock(&shared.requests)
        .entry((method.to_string(), path.clone()))
        .or_default() += 1;
    if path == "/token" {
        return issue_token(&shared);
    }
    if let Some(digest) = path.strip_prefix("/objects/") {
        return blob(&shared, digest, method == Method::HEAD, &Fault::None).await;
    }
    let fault = shared.fault.borrow().clone();
    match fault {
        Fault::Delay(d) => tokio::time::sleep(d).await,
        Fault::TooManyRequests {
            retry_after_seconds,
        } => {
            let mut r = oci_error(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS");
            r.headers_mut()
                .insert("retry-after", retry_after_seconds.into());
            return r;
        }
        Fault::ServerError => return oci_error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
        _ => {}
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return oci_error(StatusCode::NOT_FOUND, "UNSUPPORTED");
    };
    let scope_repo = rest
        .rsplit_once("/manifests/")
        .or_else(|| rest.rsplit_once("/blobs/"))
        .map(|(repo, _)| repo);
    if let Some(refusal) = check_token(&shared, &headers, scope_repo) {
        return refusal;
    }
    if rest.is_empty() {
        return (StatusCode::OK, [("content-type", "application/json")], "{}").into_response();
    }
    let head = method == Method::HEAD;
    if method != Method::GET && !head {
        return oci_error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED");
    }
    if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
        return manifest(
            &shared,
            repo,
            reference,
            head,
            fault == Fault::CorruptManifests,
        );
    }
    if let Some((_, digest)) = rest.rsplit_once("/blobs/") {
        return blob(&shared, digest, head, &fault).await;
    }
    oci_error(StatusCode::NOT_FOUND, "UNSUPPORTED")
}

fn issue_token(shared: &Shared) -> Response {
    let Some(policy) = *lock(&shared.token_policy) else {
        return oci_error(StatusCode::NOT_FOUND, "UNSUPPORTED");
    };
    let token = uuid::Uuid::new_v4().to_string();
    lock(&shared.tokens).insert(token.clone(), Instant::now() + policy.lifetime);
    let body = format!(
        r#"{{"token":"{token}","expires_in":{}}}"#,
        policy.expires_in
    );
    (StatusCode::OK, [("content-type", "application/json")], body).into_response()
}

/// `None` when no token is required or a valid one was sent; the `401` challenge otherwise.
fn check_token(shared: &Shared, headers: &HeaderMap, repo: Option<&str>) -> Option<Response> {
    lock(&shared.token_policy).as_ref()?;
    let sent = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(token) = sent
        && lock(&shared.tokens)
            .get(token)
            .is_some_and(|until| Instant::now() < *until)
    {
        return None;
    }
    let mut challenge = format!(
        r#"Bearer realm="http://{}/token",service="fault-upstream""#,
        shared.addr
    );
    if let Some(repo) = repo {
        challenge.push_str(&format!(r#",scope="repository:{repo}:pull""#));
    }
    let mut r = oci_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    r.headers_mut()
        .insert("www-authenticate", challenge.parse().expect("header value"));
    Some(r)
}

fn manifest(shared: &Shared, repo: &str, reference: &str, head: bool, corrupt: bool) -> Response {
    let content = lock(&shared.content);
    let digest = if reference.contains(':') {
        reference.to_owned()
    } else {
        match content.tags.get(&(repo.to_owned(), reference.to_owned())) {
            Some(d) => d.clone(),
            None => return oci_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
        }
    };
    let Some((media_type, bytes)) = content.manifests.get(&digest).cloned() else {
        return oci_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    };
    let builder = Response::builder()
        .status(200)
        .header("content-type", media_type)
        .header("content-length", bytes.len())
        .header("docker-content-digest", &digest);
    let body = if head {
        Body::empty()
    } else if corrupt {
        let mut corrupted = bytes.to_vec();
        corrupted[bytes.len() / 2] ^= 0x01;
        Body::from(corrupted)
    } else {
        Body::from(bytes)
    };
    builder.body(body).expect("response")
}

async fn blob(shared: &Shared, digest: &str, head: bool, fault: &Fault) -> Response {
    let bytes = lock(&shared.content).blobs.get(digest).cloned();
    let Some(bytes) = bytes else {
        return oci_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    };
    let builder = Response::builder()
        .status(200)
        .header("content-type", "application/octet-stream")
        .header("content-length", bytes.len())
        .header("docker-content-digest", digest);
    if head {
        return builder.body(Body::empty()).expect("response");
    }
    let mut gate = shared.gate.subscribe();
    let _ = gate.wait_for(|open| *open).await;
    if let Fault::RedirectBlobs { base } = fault {
        let location = format!("{base}/objects/{digest}?signature=s3cr3t");
        return (StatusCode::TEMPORARY_REDIRECT, [("location", location)]).into_response();
    }
    let len = bytes.len();
    let body = match fault {
        Fault::CorruptBlobs => {
            let mut corrupted = bytes.to_vec();
            corrupted[len / 2] ^= 0x01;
            chunked(Bytes::from(corrupted)).boxed()
        }
        Fault::TruncateBlobs => chunked(bytes.slice(..len / 2))
            .chain(futures_util::stream::once(async {
                Err(io::Error::other("truncated on purpose"))
            }))
            .boxed(),
        Fault::StallBlobsAfter(at) => {
            let at = (*at).min(len);
            let mut fault = shared.fault.subscribe();
            let rest = bytes.slice(at..);
            let resume = async move {
                let _ = fault
                    .wait_for(|f| !matches!(f, Fault::StallBlobsAfter(_)))
                    .await;
                chunked(rest)
            };
            chunked(bytes.slice(..at))
                .chain(futures_util::stream::once(resume).flatten())
                .boxed()
        }
        _ => chunked(bytes).boxed(),
    };
    builder.body(Body::from_stream(body)).expect("response")
}

/// `bytes` as a body stream of [`CHUNK`]-sized pieces (zero-copy slices).
fn chunked(bytes: Bytes) -> impl futures_util::Stream<Item = io::Result<Bytes>> + Send {
    let pieces: Vec<io::Result<Bytes>> = (0..bytes.len())
        .step_by(CHUNK)
        .map(|at| Ok(bytes.slice(at..(at + CHUNK).min(bytes.len()))))
        .collect();
    futures_util::stream::iter(pieces)
}

// ---------------------------------------------------------------------------------------------
// A listener that can go down: while `down`, it holds no socket (connections are refused) and
// the connections it accepted fail their next read or write.

struct FaultListener {
    addr: SocketAddr,
    inner: Option<TcpListener>,
    down: watch::Receiver<bool>,
}

impl axum::serve::Listener for FaultListener {
    type Io = FaultIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (FaultIo, SocketAddr) {
        loop {
            if *self.down.borrow_and_update() {
                self.inner = None;
                let _ = self.down.wait_for(|down| !*down).await;
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
                        let io = FaultIo { stream, down: self.down.clone() };
                        return (io, peer);
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                },
                _ = self.down.changed() => {}
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

struct FaultIo {
    stream: TcpStream,
    down: watch::Receiver<bool>,
}

impl FaultIo {
    fn check(&self) -> io::Result<()> {
        if *self.down.borrow() {
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "upstream is down",
            ))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for FaultIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for FaultIo {
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
