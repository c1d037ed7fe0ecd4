//! The HTTP adapter of the registry core (axum): routes requests to `registry` services and
//! turns their results into responses. Owns no registry rules and touches no storage itself.
//!
//! Routes: `/v2/…` (distribution API, one catch-all dispatched by `oci::path`), `/healthz`,
//! `/readyz`, `/metrics`, and `/api/v1/admin/gc` (loopback only until auth lands).
//! `server` is the listener that serves them (connection timeouts, caps, graceful close).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::registry::{Registry, RegistryError};
use crate::telemetry::metrics;

pub mod error;
pub mod origin;
pub mod server;
mod v2;

pub use server::{ConnectionPolicy, serve};

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    /// Largest page `_catalog` and `tags/list` return.
    pub max_page_size: usize,
    /// Grace period used by the admin GC endpoint.
    pub gc_grace: Duration,
    /// Peers whose `X-Forwarded-*` headers shape absolute `Location` URLs.
    pub trusted_proxies: origin::TrustedProxies,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The complete router of `aerugo serve`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v2", any(v2::dispatch))
        .route("/v2/", any(v2::dispatch))
        .route("/v2/{*rest}", any(v2::dispatch))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(|| async { metrics().render() }))
        .route("/api/v1/admin/gc", post(admin_gc))
        .with_state(state)
        .layer(
            tower::ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(TraceLayer::new_for_http())
                .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
        )
}

async fn ready(State(state): State<AppState>) -> Response {
    match state.registry.ready().await {
        Ok(()) => "ready".into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the metadata or blob store does not answer or take writes",
            )
                .into_response()
        }
    }
}

/// `?grace_period_seconds=N` overrides the configured grace period (what `admin gc
/// --grace-period` sends).
#[derive(serde::Deserialize)]
struct GcParams {
    grace_period_seconds: Option<u64>,
}

async fn admin_gc(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::extract::Query(params): axum::extract::Query<GcParams>,
) -> Response {
    if !peer.ip().is_loopback() {
        return error::ManageError(RegistryError::Unsupported(
            "garbage collection can only be triggered from the registry's own host".into(),
        ))
        .into_response();
    }
    let grace = params
        .grace_period_seconds
        .map_or(state.gc_grace, Duration::from_secs);
    match state.registry.collect_garbage(grace).await {
        Ok(report) => axum::Json(report).into_response(),
        Err(e) => error::ManageError(e).into_response(),
    }
}
