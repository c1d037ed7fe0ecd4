//! The core's listener: an accept loop and one hyper connection (HTTP/1.1, or HTTP/2 with
//! prior knowledge) per client, serving the axum router. It replaces `axum::serve`, which has
//! no knobs, to bound what a client can hold on to:
//!
//! - a connection has `header_read_timeout` from accept (or from the first byte of a later
//!   request) to a complete request head, and `keepalive_idle_timeout` between requests; while
//!   a request is in flight neither runs, so a slow upload or download is never cut;
//! - a request body that stops arriving for `body_idle_timeout` fails the request;
//! - connections are capped in all and per client address; one over a cap is closed at once;
//! - a connection whose last request body was not read to its end (a `413` for a manifest the
//!   handler refused before reading it) is closed gracefully: FIN first, then what the client
//!   still sends is read and discarded for a bounded time, because closing a socket with
//!   unread bytes makes the kernel send a reset, which can destroy the answer before the
//!   client reads it.
//!
//! `clock` times a connection, `stream` is the socket as hyper sees it (with the graceful
//! close); `limits::connections` counts connections against the caps (shared with the edge).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

use super::origin::TrustedProxies;
use crate::limits::connections::{ConnectionLimits, ConnectionPermit};
use crate::telemetry::metrics;

mod clock;
mod stream;

use clock::{ConnectionClock, InFlight};
use stream::ConnectionIo;

/// What a connection may take and hold (the `[server]` settings).
#[derive(Debug, Clone)]
pub struct ConnectionPolicy {
    pub header_read_timeout: Duration,
    pub keepalive_idle_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    /// Peers that carry many clients' traffic (a gateway): only `max_connections` caps them.
    pub uncapped_peers: TrustedProxies,
}

/// Pause after an accept error that is not the peer's doing (no file descriptors left):
/// retrying at once would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionPolicy,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> io::Result<()> {
    let caps = ConnectionLimits::new(limits.max_connections, limits.max_connections_per_client);
    let limits = Arc::new(limits);
    let stopping = CancellationToken::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    pause_after(error).await;
                    continue;
                }
            },
        };
        // A trusted proxy carries many clients: only the total caps it.
        let client = (!limits.uncapped_peers.contains(peer.ip())).then_some(peer.ip());
        let permit = match caps.admit(client) {
            Ok(permit) => permit,
            Err(refusal) => {
                tracing::debug!(%peer, reason = refusal.label(), "connection refused");
                metrics()
                    .connections_refused
                    .with_label_values(&[refusal.label()])
                    .inc();
                continue;
            }
        };
        connections.spawn(serve_connection(
            stream,
            peer,
            router.clone(),
            Arc::clone(&limits),
            stopping.clone(),
            permit,
        ));
    }
    drop(listener);
    stopping.cancel();
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        tracing::warn!(
            ?grace,
            "shutdown grace period over; dropping remaining connections"
        );
    }
    Ok(())
}

/// Accept errors about one connection (the peer gave up) need no pause; the rest (out of file
/// descriptors) do.
async fn pause_after(error: io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    ) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed; pausing");
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Arc<ConnectionPolicy>,
    stopping: CancellationToken,
    _permit: ConnectionPermit,
) {
    let clock = Arc::new(ConnectionClock::new(
        limits.header_read_timeout,
        limits.keepalive_idle_timeout,
    ));
    let unread_body = Arc::new(AtomicBool::new(false));
    let io = TokioIo::new(ConnectionIo::new(
        stream,
        Arc::clone(&clock),
        Arc::clone(&unread_body),
    ));
    let body_idle_timeout = limits.body_idle_timeout;
    let service_clock = Arc::clone(&clock);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let in_flight = service_clock.request_started();
        let mut request = request.map(|body| {
            Body::new(TimeoutBody::new(
                body_idle_timeout,
                TrackedBody::new(body, Arc::clone(&unread_body)),
            ))
        });
        request.extensions_mut().insert(ConnectInfo(peer));
        let router = router.clone();
        let http1 = request.version() < http::Version::HTTP_2;
        let unread_body = Arc::clone(&unread_body);
        async move {
            let mut response = router.oneshot(request).await?;
            // hyper will not read on past a body the handler left unread: it closes the
            // connection after this answer, so the answer says so, and a client does not
            // send its next request down a connection that is going away.
            if http1 && unread_body.load(Ordering::Relaxed) {
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, std::convert::Infallible>(response.map(|body| ResponseBody {
                body,
                _in_flight: in_flight,
            }))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Our clock times request heads; hyper's timer would also run between requests.
    builder.http1().header_read_timeout(None);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut stop_requested = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            () = clock.expired() => {
                tracing::debug!(%peer, "closing a connection that sent no complete request in time");
                return;
            }
            () = stopping.cancelled(), if !stop_requested => {
                stop_requested = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A response body that ends its request (`InFlight`) when hyper is done with it.
struct ResponseBody {
    body: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that records whether it was read to its end: one left unread when the
/// connection closes is what the lingering close is for.
struct TrackedBody {
    body: Incoming,
    unread: Arc<AtomicBool>,
}

impl TrackedBody {
    fn new(body: Incoming, unread: Arc<AtomicBool>) -> TrackedBody {
        unread.store(!hyper::body::Body::is_end_stream(&body), Ordering::Relaxed);
        TrackedBody { body, unread }
    }
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        if frame.is_none() || self.body.is_end_stream() {
            self.unread.store(false, Ordering::Relaxed);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
