//! The core's listener: an accept loop and one hyper connection (HTTP/1.1, or HTTP/2 with
//! prior knowledge) per client, serving the axum router. It replaces `axum::serve`, which has no knobs, to bound what a client can
//! hold on to:
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

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

use super::origin::TrustedProxies;
use crate::telemetry::metrics;

/// What a connection may take and hold (the `[server]` settings).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub keepalive_idle_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    /// Peers that carry many clients' traffic (a gateway): only `max_connections` caps them.
    pub uncapped_peers: TrustedProxies,
}

/// How long a closing connection reads what the client still sends, and how much of it.
const LINGER_TIME: Duration = Duration::from_secs(10);
const LINGER_BYTES: u64 = 256 << 20;
/// Pause after an accept error that is not the peer's doing (no file descriptors left):
/// retrying at once would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> io::Result<()> {
    let slots = Arc::new(ConnectionSlots::new(&limits));
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
        let slot = match slots.try_acquire(peer.ip()) {
            Ok(slot) => slot,
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
            slot,
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
    limits: Arc<ConnectionLimits>,
    stopping: CancellationToken,
    _slot: Slot,
) {
    let clock = Arc::new(ConnectionClock::new(&limits));
    let unread_body = Arc::new(AtomicBool::new(false));
    let io = TokioIo::new(ConnectionIo {
        stream,
        clock: Arc::clone(&clock),
        unread_body: Arc::clone(&unread_body),
        linger: None,
    });
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
        async move {
            let response = router.oneshot(request).await?;
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

/// The deadline a connection is under: while it waits for a request head, or idles between
/// requests. Requests in flight suspend it.
struct ConnectionClock {
    header_read_timeout: Duration,
    keepalive_idle_timeout: Duration,
    waiting: Mutex<Waiting>,
    changed: Notify,
}

#[derive(Debug, Clone, Copy)]
enum Waiting {
    /// For a complete request head, since the connection opened or the head's first byte came.
    Head { since: Instant },
    /// For the next request, since the last response ended.
    NextRequest { since: Instant },
    /// For requests in flight: no deadline.
    InFlight { requests: usize },
}

impl ConnectionClock {
    fn new(limits: &ConnectionLimits) -> ConnectionClock {
        ConnectionClock {
            header_read_timeout: limits.header_read_timeout,
            keepalive_idle_timeout: limits.keepalive_idle_timeout,
            waiting: Mutex::new(Waiting::Head {
                since: Instant::now(),
            }),
            changed: Notify::new(),
        }
    }

    fn waiting(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn deadline(&self) -> Option<Instant> {
        match *self.waiting() {
            Waiting::Head { since } => since.checked_add(self.header_read_timeout),
            Waiting::NextRequest { since } => since.checked_add(self.keepalive_idle_timeout),
            Waiting::InFlight { .. } => None,
        }
    }

    /// Bytes came in: on an idle connection they start the next request's head.
    fn bytes_arrived(&self) {
        let mut waiting = self.waiting();
        if let Waiting::NextRequest { .. } = *waiting {
            *waiting = Waiting::Head {
                since: Instant::now(),
            };
            drop(waiting);
            self.changed.notify_waiters();
        }
    }

    /// A request head is complete; the returned guard ends the request when dropped.
    fn request_started(self: &Arc<Self>) -> InFlight {
        let mut waiting = self.waiting();
        *waiting = match *waiting {
            Waiting::InFlight { requests } => Waiting::InFlight {
                requests: requests + 1,
            },
            _ => Waiting::InFlight { requests: 1 },
        };
        InFlight(Arc::clone(self))
    }

    fn request_ended(&self) {
        let mut waiting = self.waiting();
        *waiting = match *waiting {
            Waiting::InFlight { requests } if requests > 1 => Waiting::InFlight {
                requests: requests - 1,
            },
            _ => Waiting::NextRequest {
                since: Instant::now(),
            },
        };
        drop(waiting);
        self.changed.notify_waiters();
    }

    /// Resolves once the connection is past its deadline.
    async fn expired(&self) {
        loop {
            // Registered before the state is read, so no change can slip between the two.
            let changed = self.changed.notified();
            match self.deadline() {
                Some(deadline) if deadline <= Instant::now() => return,
                Some(deadline) => {
                    tokio::select! {
                        () = changed => {}
                        () = tokio::time::sleep_until(deadline) => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// A request in flight on a connection, from its complete head to the end of its response.
struct InFlight(Arc<ConnectionClock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
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

/// The TCP stream as hyper sees it: reads tell the clock that a request is coming, and
/// shutting down is the graceful close described in the module documentation.
struct ConnectionIo {
    stream: TcpStream,
    clock: Arc<ConnectionClock>,
    /// Whether the last request's body was left (partly) unread.
    unread_body: Arc<AtomicBool>,
    linger: Option<Linger>,
}

/// The end of a closing connection: FIN sent, what the client still sends read and dropped.
struct Linger {
    fin_sent: bool,
    deadline: Pin<Box<Sleep>>,
    bytes_left: u64,
    scratch: Vec<u8>,
}

impl Linger {
    fn new() -> Linger {
        Linger {
            fin_sent: false,
            deadline: Box::pin(tokio::time::sleep(LINGER_TIME)),
            bytes_left: LINGER_BYTES,
            scratch: vec![0; 64 << 10],
        }
    }

    /// Sends FIN, then reads until the client closes, fails, or a bound is reached.
    fn poll_close(&mut self, stream: &mut TcpStream, cx: &mut Context<'_>) -> Poll<()> {
        if !self.fin_sent {
            if ready!(Pin::new(&mut *stream).poll_shutdown(cx)).is_err() {
                return Poll::Ready(());
            }
            self.fin_sent = true;
        }
        while self.bytes_left > 0 {
            if self.deadline.as_mut().poll(cx).is_ready() {
                break;
            }
            let mut buf = ReadBuf::new(&mut self.scratch);
            match ready!(Pin::new(&mut *stream).poll_read(cx, &mut buf)) {
                Ok(()) if !buf.filled().is_empty() => {
                    self.bytes_left = self.bytes_left.saturating_sub(buf.filled().len() as u64);
                }
                _ => break,
            }
        }
        Poll::Ready(())
    }
}

impl AsyncRead for ConnectionIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = ready!(Pin::new(&mut self.stream).poll_read(cx, buf));
        if buf.filled().len() > before {
            self.clock.bytes_arrived();
        }
        Poll::Ready(result)
    }
}

impl AsyncWrite for ConnectionIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    /// hyper calls this once the last response is flushed: the graceful close when a request
    /// body was left unread, a plain FIN otherwise.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.linger.is_none() && !this.unread_body.load(Ordering::Relaxed) {
            return Pin::new(&mut this.stream).poll_shutdown(cx);
        }
        let linger = this.linger.get_or_insert_with(Linger::new);
        ready!(linger.poll_close(&mut this.stream, cx));
        Poll::Ready(Ok(()))
    }
}

/// Open connections, in all and per client, against their caps.
struct ConnectionSlots {
    max_total: usize,
    max_per_client: usize,
    uncapped: TrustedProxies,
    open: Mutex<OpenConnections>,
}

#[derive(Default)]
struct OpenConnections {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    TooManyConnections,
    TooManyFromClient,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::TooManyConnections => "max_connections",
            Refusal::TooManyFromClient => "max_connections_per_client",
        }
    }
}

/// One open connection's place; dropping it frees the place.
struct Slot {
    slots: Arc<ConnectionSlots>,
    /// `None` for an uncapped peer.
    client: Option<IpAddr>,
}

impl ConnectionSlots {
    fn new(limits: &ConnectionLimits) -> ConnectionSlots {
        ConnectionSlots {
            max_total: limits.max_connections,
            max_per_client: limits.max_connections_per_client,
            uncapped: limits.uncapped_peers.clone(),
            open: Mutex::default(),
        }
    }

    fn open(&self) -> MutexGuard<'_, OpenConnections> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn try_acquire(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, Refusal> {
        let client = (!self.uncapped.contains(peer)).then(|| client_key(peer));
        let mut open = self.open();
        if open.total >= self.max_total {
            return Err(Refusal::TooManyConnections);
        }
        if let Some(client) = client {
            let count = open.per_client.entry(client).or_default();
            if *count >= self.max_per_client {
                return Err(Refusal::TooManyFromClient);
            }
            *count += 1;
        }
        open.total += 1;
        metrics().connections_open.inc();
        Ok(Slot {
            slots: Arc::clone(self),
            client,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open();
        open.total = open.total.saturating_sub(1);
        if let Some(client) = self.client
            && let Some(count) = open.per_client.get_mut(&client)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.per_client.remove(&client);
            }
        }
        metrics().connections_open.dec();
    }
}

/// The address a client is counted under: IPv4 as it is, IPv6 by its /64, which one host
/// usually holds whole.
fn client_key(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            keepalive_idle_timeout: Duration::from_secs(60),
            body_idle_timeout: Duration::from_secs(300),
            max_connections: 1,
            max_connections_per_client: 1,
            uncapped_peers: TrustedProxies::default(),
        }
    }

    fn slots(total: usize, per_client: usize, uncapped: &[&str]) -> Arc<ConnectionSlots> {
        let limits = ConnectionLimits {
            max_connections: total,
            max_connections_per_client: per_client,
            uncapped_peers: TrustedProxies::new(
                uncapped.iter().map(|n| n.parse().unwrap()).collect(),
            ),
            ..limits()
        };
        Arc::new(ConnectionSlots::new(&limits))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn connections_are_capped_per_client_and_in_all() {
        let slots = slots(3, 2, &[]);
        let a1 = slots.try_acquire(ip("192.0.2.1")).unwrap();
        let _a2 = slots.try_acquire(ip("192.0.2.1")).unwrap();
        assert_eq!(
            slots.try_acquire(ip("192.0.2.1")).err(),
            Some(Refusal::TooManyFromClient)
        );
        let _b1 = slots.try_acquire(ip("192.0.2.2")).unwrap();
        assert_eq!(
            slots.try_acquire(ip("192.0.2.3")).err(),
            Some(Refusal::TooManyConnections)
        );
        drop(a1);
        let _a3 = slots.try_acquire(ip("192.0.2.1")).unwrap();
        assert_eq!(slots.open().total, 3);
    }

    #[test]
    fn uncapped_peers_count_only_in_all() {
        let slots = slots(3, 1, &["10.0.0.0/8"]);
        let held: Vec<_> = (0..3)
            .map(|_| slots.try_acquire(ip("10.0.0.7")).unwrap())
            .collect();
        assert_eq!(
            slots.try_acquire(ip("10.0.0.7")).err(),
            Some(Refusal::TooManyConnections)
        );
        drop(held);
        assert_eq!(slots.open().total, 0);
        assert!(slots.open().per_client.is_empty());
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let slots = slots(10, 1, &[]);
        let _first = slots.try_acquire(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            slots.try_acquire(ip("2001:db8:1:2:ffff::9")).err(),
            Some(Refusal::TooManyFromClient)
        );
        assert!(slots.try_acquire(ip("2001:db8:1:3::1")).is_ok());
        assert_eq!(client_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_runs_only_while_no_request_is_in_flight() {
        let clock = Arc::new(ConnectionClock::new(&limits()));
        let opened = Instant::now();
        assert_eq!(clock.deadline(), Some(opened + Duration::from_secs(10)));
        let request = clock.request_started();
        assert_eq!(
            clock.deadline(),
            None,
            "a request in flight has no deadline"
        );
        tokio::time::advance(Duration::from_secs(600)).await;
        drop(request);
        let idle = Instant::now();
        assert_eq!(clock.deadline(), Some(idle + Duration::from_secs(60)));
        tokio::time::advance(Duration::from_secs(5)).await;
        clock.bytes_arrived();
        assert_eq!(
            clock.deadline(),
            Some(idle + Duration::from_secs(15)),
            "the next head has the header timeout from its first byte"
        );
        clock.bytes_arrived();
        assert_eq!(clock.deadline(), Some(idle + Duration::from_secs(15)));
        tokio::time::advance(Duration::from_secs(10)).await;
        clock.expired().await;
    }
}
