//! The HTTP adapter of the registry core (axum): routes requests to `registry` services and
//! turns their results into responses. Owns no registry rules and touches no storage itself.
//!
//! Routes: `/v2/…` (distribution API, one catch-all dispatched by `oci::path`, every request
//! checked by the `auth` gate first), the token service (`/auth/token`, `/auth/jwks`,
//! `/api/v1/auth/…`), the management API (`manage`: users, organisations, robots, repository
//! settings, quotas, audit; docs/API.md), `/healthz`, `/readyz`, `/metrics`, and
//! `/api/v1/admin/gc` (an admin's, or loopback's while the registry has no users).
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

use crate::auth::{Auth, Credentials};
use crate::registry::{Registry, RegistryError};
use crate::telemetry::metrics;

pub mod auth;
pub mod error;
pub mod manage;
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
    pub auth: Arc<Auth>,
    /// The token endpoint challenges name; `None`: `/auth/token` on the request's origin.
    pub token_realm: Option<String>,
    /// The secret `aerugo admin` commands on this host send in [`LOCAL_ADMIN_HEADER`] (the
    /// server writes it into its data directory).
    pub local_admin_token: String,
}

/// The header carrying the local admin token.
pub const LOCAL_ADMIN_HEADER: &str = "x-aerugo-admin-token";

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
        .route(
            auth::TOKEN_PATH,
            get(auth::token_get).post(auth::token_post),
        )
        .route("/auth/jwks", get(auth::jwks))
        .route("/api/v1/auth/token", post(auth::token_post))
        .route("/api/v1/auth/logout", post(auth::logout))
        .merge(manage::routes())
        .with_state(state)
        .layer(
            tower::ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(TraceLayer::new_for_http())
                .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
        )
}

/// Admin endpoints: a registry admin's once users exist; before that, the registry's own
/// host's (the zero-configuration quick start has no one to sign in as).
async fn require_admin(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    peer: SocketAddr,
) -> Result<(), Response> {
    let refuse = |e: error::AccessError| e.into_response();
    if let Some(token) = headers
        .get(LOCAL_ADMIN_HEADER)
        .and_then(|v| v.to_str().ok())
        && crate::auth::secret::same(token, &state.local_admin_token)
    {
        return Ok(());
    }
    if !state.auth.enforced().await.map_err(|e| refuse(e.into()))? {
        return if peer.ip().is_loopback() {
            Ok(())
        } else {
            Err(error::ManageError::Registry(RegistryError::Unsupported(
                "without users, admin endpoints answer only the registry's own host".into(),
            ))
            .into_response())
        };
    }
    let credentials = auth::credentials(headers).map_err(refuse)?;
    if credentials == Credentials::None {
        return Err(refuse(error::AccessError::Unauthorized {
            challenge: "Basic realm=\"aerugo\"".into(),
        }));
    }
    let identity = state
        .auth
        .identify(
            &credentials,
            Some(origin::client_address(
                peer.ip(),
                headers,
                &state.trusted_proxies,
            )),
        )
        .await
        .map_err(|e| refuse(e.into()))?;
    // A bearer token stands for its subject here: the management API's rights are the
    // account's (re-read from the store), not the token's repository scopes.
    if identity.principal.is_admin() {
        Ok(())
    } else {
        Err(refuse(error::AccessError::Denied {
            actor: identity.principal.subject(),
        }))
    }
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
    headers: axum::http::HeaderMap,
    axum::extract::Query(params): axum::extract::Query<GcParams>,
) -> Response {
    if let Err(refused) = require_admin(&state, &headers, peer).await {
        return refused.into_response();
    }
    let grace = params
        .grace_period_seconds
        .map_or(state.gc_grace, Duration::from_secs);
    match state.registry.collect_garbage(grace).await {
        Ok(report) => axum::Json(report).into_response(),
        Err(e) => error::ManageError::from(e).into_response(),
    }
}
