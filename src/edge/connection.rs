//! Downstream connections, before and between pingora's HTTP handling: the connection caps,
//! the time a client has to send a request header, and the keep-alive idle timeout, on the
//! plain and the TLS listener alike.
//!
//! pingora has the hooks but not this policy: its `ConnectionFilter` sees each accepted socket
//! but not when it closes, so it cannot count; its read timeout applies per read, so a header
//! trickled a byte at a time never times out; and after the first request of an HTTP/1.1
//! connection it waits for the next one without a timeout. So [`EdgeApp`] is the listening
//! service's application in place of pingora's `HttpProxy`, which it drives one request at a
//! time (pingora's documented custom accept loop, `HttpProxy::process_new_http`):
//!
//! - it holds a plain connection's [`ConnectionPermit`] for the connection's lifetime, or closes
//!   the connection at once when a cap is reached ([`ConnectionLimits`] also refuses at accept,
//!   as pingora's connection filter, so a client at its cap costs no TLS handshake); a TLS
//!   connection was admitted before its handshake ([`TlsAdmission`]);
//! - each request's header must arrive within a deadline — the header-read timeout for the
//!   first request, the keep-alive idle timeout plus that for later ones —, lifted when the
//!   proxy's `early_request_filter` reports the header ([`AwaitedHeaders`]);
//! - every HTTP/1 session gets the keep-alive idle timeout (pingora closes the connection when
//!   no next request starts within it) and pipelining; HTTP/2 gets pingora's idle timeout;
//! - on the TLS listener the connection is counted before its handshake, which pingora gives a
//!   fixed 60 s, for as long as its socket lives, and the client must start the handshake
//!   within the header-read timeout ([`TlsAdmission`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::listeners::{ConnectionFilter, PreTlsProcess};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{ALPN, GetSocketDigest, Peek, Stream};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use pingora::upstreams::peer::{Tracer, Tracing};
use pingora::{Error, ErrorType, Result};
use tokio::sync::oneshot;

use super::proxy::EdgeProxy;
use crate::limits::connections::{ConnectionLimits, ConnectionPermit, Refusal};
use crate::telemetry::metrics;

/// The timeouts of [`EdgeApp`] (`[edge]` `header_read_timeout_seconds`,
/// `keepalive_idle_timeout_seconds`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionTimeouts {
    pub header_read: Duration,
    pub keepalive_idle: Duration,
}

/// The listening service's application: admission and deadlines around pingora's proxy.
pub struct EdgeApp {
    proxy: Arc<HttpProxy<EdgeProxy>>,
    limits: Arc<ConnectionLimits>,
    awaited: Arc<AwaitedHeaders>,
    timeouts: ConnectionTimeouts,
}

impl EdgeApp {
    /// `proxy` must report headers to the same `awaited`.
    pub fn new(
        proxy: HttpProxy<EdgeProxy>,
        limits: Arc<ConnectionLimits>,
        awaited: Arc<AwaitedHeaders>,
        timeouts: ConnectionTimeouts,
    ) -> EdgeApp {
        EdgeApp {
            proxy: Arc::new(proxy),
            limits,
            awaited,
            timeouts,
        }
    }

    /// pingora's HTTP/1 keep-alive loop, with the edge's timeouts on every session.
    async fn serve_http1(
        &self,
        stream: Stream,
        connection: Option<Endpoints>,
        shutdown: &ShutdownWatch,
    ) {
        let mut session = ServerSession::new_http1(stream);
        let mut allowance = self.timeouts.header_read;
        loop {
            self.prepare(&mut session, shutdown);
            let serving = self.proxy.process_new_http(session, shutdown);
            let Some(reused) = self.header_deadline(connection, allowance, serving).await else {
                return;
            };
            let (stream, settings) = reused.consume();
            session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            allowance = self.timeouts.keepalive_idle + self.timeouts.header_read;
        }
    }

    fn prepare(&self, session: &mut ServerSession, shutdown: &ShutdownWatch) {
        // pingora keeps a connection only when `set_keepalive` allowed it, closing it when no
        // next request starts within the timeout; `None` closes it after this request.
        let keepalive = (!*shutdown.borrow()).then_some(self.timeouts.keepalive_idle.as_secs());
        session.set_keepalive(keepalive);
        // Otherwise pingora closes the connection after the first of pipelined requests.
        session.set_pipelining_enabled(true);
    }

    /// Runs `serving` (one request, or an HTTP/2 connection), dropping it — which closes the
    /// connection — when no request header arrived within `allowance`.
    async fn header_deadline<T>(
        &self,
        connection: Option<Endpoints>,
        allowance: Duration,
        serving: impl Future<Output = Option<T>>,
    ) -> Option<T> {
        let Some(connection) = connection else {
            return serving.await;
        };
        let (ticket, arrived) = self.awaited.expect(connection);
        tokio::pin!(serving);
        let result = tokio::select! {
            result = &mut serving => result,
            Ok(()) = arrived => (&mut serving).await,
            () = tokio::time::sleep(allowance) => {
                tracing::debug!(client = %connection.client, ?allowance, "no request header in time; closing the connection");
                None
            }
        };
        self.awaited.forget(connection, ticket);
        result
    }
}

#[async_trait]
impl ServerApp for EdgeApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let connection = endpoints(&*stream);
        // Every TLS stream went through `TlsAdmission`, its permit on its socket.
        let admitted_before_handshake = stream.get_ssl().is_some();
        let _permit = if admitted_before_handshake {
            None
        } else {
            Some(admit(&self.limits, connection)?)
        };
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            let serving = ServerApp::process_new(&self.proxy, stream, shutdown);
            self.header_deadline(connection, self.timeouts.header_read, serving)
                .await;
        } else {
            self.serve_http1(stream, connection, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        // Wakes the sessions waiting for a next request, so shutdown does not wait on them.
        self.proxy.http_cleanup().await;
    }
}

/// A TCP connection's two ends, which name it while it is open (a client may use one port
/// towards both listeners).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoints {
    pub client: SocketAddr,
    pub server: SocketAddr,
}

fn endpoints(stream: &(impl GetSocketDigest + ?Sized)) -> Option<Endpoints> {
    let digest = stream.get_socket_digest()?;
    Some(Endpoints {
        client: *digest.peer_addr()?.as_inet()?,
        server: *digest.local_addr()?.as_inet()?,
    })
}

/// Counts `connection` against the caps, or logs and counts its refusal.
fn admit(
    limits: &Arc<ConnectionLimits>,
    connection: Option<Endpoints>,
) -> Option<ConnectionPermit> {
    let client = connection.map(|c| c.client.ip());
    limits
        .admit(client)
        .inspect_err(|refusal| count_refusal(client, *refusal))
        .ok()
}

fn count_refusal(client: Option<IpAddr>, refusal: Refusal) {
    tracing::debug!(?client, reason = refusal.label(), "connection refused");
    metrics()
        .connections_refused
        .with_label_values(&[refusal.label()])
        .inc();
}

/// Connections waiting for a request header; the proxy reports each header it reads with
/// [`AwaitedHeaders::arrived`].
#[derive(Debug, Default)]
pub struct AwaitedHeaders {
    waiting: DashMap<Endpoints, (u64, oneshot::Sender<()>)>,
    /// Tells one wait from the next on a connection, so a late `forget` removes only its own.
    tickets: AtomicU64,
}

impl AwaitedHeaders {
    fn expect(&self, connection: Endpoints) -> (u64, oneshot::Receiver<()>) {
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.insert(connection, (ticket, tx));
        (ticket, rx)
    }

    /// A request header was read on `connection`: its deadline is lifted.
    pub fn arrived(&self, connection: &Endpoints) {
        if let Some((_, (_, tx))) = self.waiting.remove(connection) {
            let _ = tx.send(());
        }
    }

    fn forget(&self, connection: Endpoints, ticket: u64) {
        self.waiting
            .remove_if(&connection, |_, (t, _)| *t == ticket);
    }
}

/// Refuses at accept, before any TLS handshake, a connection that [`EdgeApp`] would refuse.
#[async_trait]
impl ConnectionFilter for ConnectionLimits {
    async fn should_accept(&self, addr: Option<&SocketAddr>) -> bool {
        let client = addr.map(SocketAddr::ip);
        let refusal = self.refusal(client);
        if let Some(refusal) = refusal {
            count_refusal(client, refusal);
        }
        refusal.is_none()
    }
}

/// The TLS listener's admission, before the handshake: the connection is counted against the
/// caps (or closed at once), and the client must start its handshake (send the first byte of
/// its ClientHello) within the header-read timeout, or the connection is closed.
///
/// Counting here, not after the handshake, is what bounds a client that starts many handshakes
/// and stalls each for pingora's fixed 60 s. The permit then has to live exactly as long as
/// the socket, and pingora drops a connection whose handshake failed or timed out without
/// telling the application (its `TlsAccept` callbacks run only after a handshake succeeded,
/// its connection filter sees no close). So the permit rides on the L4 stream itself
/// ([`PermitOnSocket`]) and goes with it on every path, rather than in a side table that a
/// timer (locking out a client whose handshake failed) or a sweep of the kernel's socket
/// table would have to clear.
pub struct TlsAdmission {
    pub limits: Arc<ConnectionLimits>,
    pub handshake_start_timeout: Duration,
}

#[async_trait]
impl PreTlsProcess for TlsAdmission {
    async fn process(&self, stream: &mut L4Stream) -> Result<()> {
        let Some(permit) = admit(&self.limits, endpoints(stream)) else {
            return Error::e_explain(ErrorType::AcceptError, "over the connection caps");
        };
        stream.tracer = Some(Tracer(Box::new(PermitOnSocket::new(permit))));
        let mut first = [0u8; 1];
        let first_byte = stream.try_peek(&mut first);
        match tokio::time::timeout(self.handshake_start_timeout, first_byte).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Error::e_because(ErrorType::ReadError, "before the TLS handshake", e),
            Err(_) => Error::e_explain(
                ErrorType::ReadTimedout,
                "no TLS handshake within the header-read timeout",
            ),
        }
    }
}

/// A connection's permit carried by its L4 stream as the stream's tracer, the one piece of
/// application data pingora's `Stream` owns: every path that ends the connection — its end
/// after the handshake (the L4 stream lives inside the TLS stream), a failed, refused or
/// timed-out handshake — drops that stream, and its `Drop` calls `on_disconnected` first, before
/// the socket is closed. Freeing the place there means a client that reconnects as soon as it
/// sees its connection closed finds the place already free.
#[derive(Debug, Clone)]
struct PermitOnSocket(Arc<Mutex<Option<ConnectionPermit>>>);

impl PermitOnSocket {
    fn new(permit: ConnectionPermit) -> PermitOnSocket {
        PermitOnSocket(Arc::new(Mutex::new(Some(permit))))
    }
}

impl Tracing for PermitOnSocket {
    /// Called for upstream connections only.
    fn on_connected(&self) {}

    fn on_disconnected(&self) {
        let permit = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        drop(permit);
    }

    /// A clone shares the one permit (pingora clones only upstream peers' tracers).
    fn boxed_clone(&self) -> Box<dyn Tracing> {
        Box::new(self.clone())
    }
}
