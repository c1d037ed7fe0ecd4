//! The pingora side of the edge: `impl ProxyHttp for EdgeProxy`.
//!
//! Mirror mode answers every `/v2/` request itself from [`Mirror`] (the cache is the origin's
//! stand-in). Gateway mode caches blob `GET`/`HEAD`s the same way, fetching misses from a
//! healthy core, and proxies everything else under `/v2/`, `/auth/` and `/api/` to the cores,
//! load-balanced with health checks. `/healthz` and `/metrics` are the edge's own.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use pingora::http::ResponseHeader;
use pingora::lb::LoadBalancer;
use pingora::lb::selection::RoundRobin;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};

use super::confirm::ClientCredentials;
use super::connection::{AwaitedHeaders, Endpoints};
use super::jwks::TokenKeys;
use super::mirror::{EdgeBody, EdgeRequest, EdgeResponse, Mirror};
use crate::oci::{ErrorCode, V2Route, path};
use crate::telemetry::metrics;

/// How the edge is deployed.
pub enum Mode {
    /// A pull-through mirror of upstream registries (near CI runners).
    Mirror(Arc<Mirror>),
    /// In front of core nodes: `mirror` has one upstream per core, named by its address;
    /// `keys` checks clients' bearer tokens.
    Gateway {
        cores: Arc<LoadBalancer<RoundRobin>>,
        mirror: Arc<Mirror>,
        keys: Arc<TokenKeys>,
        /// How long a proxied request waits to connect to a core.
        connect_timeout: Duration,
    },
}

pub struct EdgeProxy {
    pub mode: Mode,
    /// Told of every request header read, which lifts its connection's header deadline.
    pub awaited: Arc<AwaitedHeaders>,
}

fn edge_request(session: &Session) -> EdgeRequest {
    let req = session.req_header();
    let header = |name: &str| {
        req.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    EdgeRequest {
        method: req.method.clone(),
        path: req.uri.path().to_owned(),
        query: req.uri.query().map(str::to_owned),
        accept: header("accept").collect(),
        range: header("range").next(),
        credentials: ClientCredentials {
            authorization: req.headers.get(http::header::AUTHORIZATION).cloned(),
            forwarded: forwarded_headers(session),
        },
    }
}

/// What the gateway tells a core about how the client reached it, so the absolute URLs the
/// core builds (`Location`, a challenge's realm) point back through the gateway: the scheme
/// (`https` when the edge terminated TLS) and the client's `Host`; and who the client is
/// (`X-Forwarded-For`, the client's address appended), so that the core throttles sign-ins
/// and audits per client rather than per gateway.
fn forwarded_headers(session: &Session) -> Vec<(http::HeaderName, http::HeaderValue)> {
    let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    let proto = http::HeaderValue::from_static(if tls { "https" } else { "http" });
    let mut headers = vec![(http::HeaderName::from_static("x-forwarded-proto"), proto)];
    let request = session.req_header();
    let host = request
        .headers
        .get(http::header::HOST)
        .cloned()
        .or_else(|| {
            request
                .uri
                .authority()
                .and_then(|a| a.as_str().parse().ok())
        });
    if let Some(host) = host {
        headers.push((http::HeaderName::from_static("x-forwarded-host"), host));
    }
    if let Some(client) = session.client_addr().and_then(|a| a.as_inet()) {
        let earlier = request
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.trim().is_empty());
        let chain = match earlier {
            Some(earlier) => format!("{earlier}, {}", client.ip()),
            None => client.ip().to_string(),
        };
        if let Ok(value) = http::HeaderValue::from_str(&chain) {
            headers.push((http::HeaderName::from_static("x-forwarded-for"), value));
        }
    }
    headers
}

/// How much of a request body the edge reads and discards after answering without it (a
/// refused upload), and for how long: a client that sends its whole body before it reads then
/// gets the answer, where closing the connection under its writes would reset it and lose the
/// answer. Past either bound the connection is closed.
const DISCARD_LIMIT_BYTES: usize = 64 << 20;
const DISCARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes an [`EdgeResponse`], then discards the unread request body (bounded). A body stream
/// that fails part-way returns an error, which makes pingora drop the connection: the client
/// sees a short body, never a complete wrong one.
async fn respond(session: &mut Session, response: EdgeResponse) -> Result<()> {
    // pingora would close the connection on an answer sent before the body was read.
    session.set_close_on_response_before_downstream_finish(false);
    write_response(session, response).await?;
    discard_request_body(session).await;
    Ok(())
}

async fn write_response(session: &mut Session, response: EdgeResponse) -> Result<()> {
    let mut header = ResponseHeader::build(response.status, Some(response.headers.len()))?;
    for (name, value) in response.headers {
        // Appended: a relayed refusal may carry several challenges.
        header.append_header(name, value)?;
    }
    match response.body {
        EdgeBody::Empty => session.write_response_header(Box::new(header), true).await,
        EdgeBody::Full(bytes) => {
            session
                .write_response_header(Box::new(header), false)
                .await?;
            session.write_response_body(Some(bytes), true).await
        }
        EdgeBody::Stream(mut stream) => {
            session
                .write_response_header(Box::new(header), false)
                .await?;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| {
                    session.set_keepalive(None);
                    Error::because(
                        ErrorType::WriteError,
                        "blob body failed; aborting the response",
                        e,
                    )
                })?;
                session.write_response_body(Some(chunk), false).await?;
            }
            session.write_response_body(None, true).await
        }
    }
}

/// Reads the rest of the request body into nothing, within [`DISCARD_LIMIT_BYTES`] and
/// [`DISCARD_TIMEOUT`]; the connection is kept only when the whole body arrived.
async fn discard_request_body(session: &mut Session) {
    if session.is_body_done() {
        return;
    }
    let discard = async {
        let mut discarded = 0;
        while let Some(chunk) = session.read_request_body().await? {
            discarded += chunk.len();
            if discarded > DISCARD_LIMIT_BYTES {
                return Ok(false);
            }
        }
        Ok::<_, Box<Error>>(true)
    };
    if !matches!(
        tokio::time::timeout(DISCARD_TIMEOUT, discard).await,
        Ok(Ok(true))
    ) {
        session.set_keepalive(None);
    }
}

impl EdgeProxy {
    /// Blob reads are served (and cached) by the edge even in gateway mode.
    fn is_blob_read(request: &EdgeRequest) -> bool {
        (request.method == http::Method::GET || request.method == http::Method::HEAD)
            && matches!(path::parse(&request.path), Ok(V2Route::Blob { .. }))
    }
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        let client = session.client_addr().and_then(|a| a.as_inet());
        let server = session.server_addr().and_then(|a| a.as_inet());
        if let (Some(&client), Some(&server)) = (client, server) {
            self.awaited.arrived(&Endpoints { client, server });
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, _ctx: &mut Self::CTX) -> Result<bool> {
        let request = edge_request(session);
        let read = request.method == http::Method::GET || request.method == http::Method::HEAD;
        let local = match request.path.as_str() {
            "/healthz" | "/metrics" if !read => Some(EdgeResponse::error(
                ErrorCode::Unsupported,
                format!("{} is not supported on this endpoint", request.method),
            )),
            "/healthz" => Some(text(200, "ok")),
            "/metrics" => Some(text(200, &metrics().render())),
            _ => None,
        };
        if let Some(response) = local {
            respond(session, response).await?;
            return Ok(true);
        }
        match &self.mode {
            Mode::Mirror(mirror) => {
                let response = if request.path.starts_with("/v2") {
                    mirror.handle(&request).await
                } else {
                    EdgeResponse::not_found()
                };
                respond(session, response).await?;
                Ok(true)
            }
            Mode::Gateway {
                cores,
                mirror,
                keys,
                ..
            } => {
                if Self::is_blob_read(&request) {
                    let core = cores.select(b"", 256).map(|core| core.addr.to_string());
                    let response = mirror
                        .handle_for_client(core.as_deref(), &request, keys)
                        .await;
                    respond(session, response).await?;
                    return Ok(true);
                }
                let routed = ["/v2", "/auth/", "/api/"]
                    .iter()
                    .any(|p| request.path.starts_with(p));
                if !routed {
                    respond(session, EdgeResponse::not_found()).await?;
                    return Ok(true);
                }
                Ok(false)
            }
        }
    }

    /// Tells the core how the client reached the gateway ([`forwarded_headers`]). Whatever a
    /// client sent under these names is replaced, never passed on; the core honours them only
    /// from its `server.trusted_proxies`.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        upstream_request.remove_header("x-forwarded-host");
        for (name, value) in forwarded_headers(session) {
            upstream_request.insert_header(name, value)?;
        }
        Ok(())
    }

    /// A core that cannot be connected to was sent nothing, so any request may go to the next
    /// one (round robin moves on; pingora bounds the retries): a core that died answers
    /// nothing until the health check notices.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        _ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        tracing::debug!(core = %peer._address, error = %e, "cannot connect to a core; trying another");
        e.set_retry(true);
        e
    }

    /// A proxied request that no core answered (none healthy, the chosen one unreachable or
    /// failing before its answer began) gets the error a registry gives when it cannot serve,
    /// `503 UNAVAILABLE` with an OCI body, rather than pingora's bare 500 or 502; a client's own
    /// broken request stays a 400, and an answer already under way is cut off.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        _ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let code = match (e.etype(), e.esource()) {
            (ErrorType::HTTPStatus(code), _) => *code,
            (
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
                ErrorSource::Downstream,
            ) => 0,
            (_, ErrorSource::Downstream) => 400,
            (ErrorType::ConnectNoRoute, _) | (_, ErrorSource::Upstream) => 503,
            _ => 500,
        };
        if code > 0 && session.response_written().is_none() {
            let written = if code == 503 {
                tracing::warn!(error = %e, "no core answered a proxied request");
                let response = EdgeResponse::error(ErrorCode::Unavailable, "no core answered");
                write_response(session, response).await
            } else {
                session.respond_error(code).await
            };
            if let Err(e) = written {
                tracing::debug!(error = %e, "cannot send the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        match &self.mode {
            Mode::Gateway {
                cores,
                connect_timeout,
                ..
            } => {
                let core = cores
                    .select(b"", 256)
                    .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "no healthy core"))?;
                let mut peer = HttpPeer::new(core.addr, false, String::new());
                peer.options.connection_timeout = Some(*connect_timeout);
                Ok(Box::new(peer))
            }
            Mode::Mirror(_) => Err(Error::explain(
                ErrorType::InternalError,
                "the mirror never proxies",
            )),
        }
    }
}

fn text(status: u16, body: &str) -> EdgeResponse {
    let mut response = EdgeResponse::error(ErrorCode::Unknown, "");
    response.status = status;
    response.headers = vec![
        ("content-type", "text/plain; charset=utf-8".into()),
        ("content-length", body.len().to_string()),
    ];
    response.body = EdgeBody::Full(Bytes::from(body.to_owned()));
    response
}
