//! `/v2/…`: one catch-all handler that parses the path with `oci::path`, picks the handler for
//! (method, route), records metrics and adds the API version header to every answer.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;

use super::AppState;
use super::auth::{ChallengeContext, TOKEN_PATH, admit};
use super::error::{AccessError, ApiError};
use super::origin::{self, TrustedProxies};
use crate::accounts::{AuditEvent, Outcome};
use crate::auth;
use crate::auth::Admission;
use crate::oci::path;
use crate::oci::{RepoName, V2Route};
use crate::registry::{BodyStream, RegistryError};
use crate::telemetry::metrics;

mod blobs;
mod listing;
mod manifests;
mod uploads;

/// The request head: what a handler may need besides the body. Kept apart from the body
/// because `Body` is not `Sync`, and handlers hold `&Request` across awaits.
pub(super) struct Request {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    /// The connection's address (the proxy's, behind one).
    pub peer: Option<IpAddr>,
    /// Who the client is: the peer, or whom a trusted proxy says it asks for.
    pub client: Option<IpAddr>,
    pub trusted_proxies: TrustedProxies,
    /// Who is asking and what the gate allowed beyond the route's own requirement.
    pub admission: Admission,
}

impl Request {
    /// `path` as the absolute URL a `Location` header carries.
    pub fn location(&self, path: &str) -> String {
        origin::absolute_url(
            &self.uri,
            &self.headers,
            self.peer,
            &self.trusted_proxies,
            path,
        )
    }

    /// Query parameters in order, repeated keys kept (`?tag=a&tag=b`).
    pub fn query(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect()
    }

    pub fn query_param(&self, key: &str) -> Option<String> {
        self.query()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    pub fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_length(&self) -> Option<u64> {
        self.header(header::CONTENT_LENGTH)
            .and_then(|v| v.parse().ok())
    }
}

/// The body as the registry's stream type.
pub(super) fn body_stream(body: Body) -> BodyStream {
    Box::pin(
        body.into_data_stream()
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
    )
}

type HandlerResult = Result<Response, ApiError>;

pub(super) async fn dispatch(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    let client = origin::client_of(&parts, &state.trusted_proxies);
    let route = path::parse(parts.uri.path());
    let route_label = route.as_ref().map(route_kind).unwrap_or("unknown");
    let method_label = parts.method.as_str().to_owned();
    let is_head = parts.method == Method::HEAD;
    let is_read = is_head || parts.method == Method::GET;
    let is_delete = parts.method == Method::DELETE;
    let mut request = Request {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        peer,
        client,
        trusted_proxies: state.trusted_proxies.clone(),
        admission: Admission::default(),
    };
    let mut response = match route {
        Ok(route) => {
            let audited = audited_write(&request.method, &route);
            let presented_credentials = request.headers.contains_key(header::AUTHORIZATION);
            match admit_request(&state, &route, &request).await {
                Ok(admission) => {
                    let actor = audited
                        .as_ref()
                        .and(admission.identity.as_ref())
                        .map(|i| i.principal.subject());
                    request.admission = admission;
                    let response = handle(&state, route, request, body)
                        .await
                        .unwrap_or_else(IntoResponse::into_response);
                    // Writes answer 201, deletes 202; a 202 upload session is no write yet. A
                    // 403 past the gate is the registry refusing (a namespace over quota).
                    let outcome = match response.status() {
                        StatusCode::CREATED => Some(Outcome::Allowed),
                        status if is_delete && status.is_success() => Some(Outcome::Allowed),
                        StatusCode::FORBIDDEN => Some(Outcome::Denied),
                        _ => None,
                    };
                    if let (Some((action, target)), Some(actor), Some(outcome)) =
                        (audited, actor, outcome)
                    {
                        audit(&state, Some(actor), client, action, target, outcome);
                    }
                    response
                }
                Err(refused) => {
                    // Challenges to callers who sent nothing are the protocol's first step,
                    // not refusals: only refused credentials and denials are recorded.
                    let denied = refused.denied_actor().map(str::to_owned);
                    if denied.is_some() || presented_credentials {
                        let target = route.name().map(ToString::to_string).unwrap_or_default();
                        let action = audited.map_or("access", |(action, _)| action);
                        audit(&state, denied, client, action, target, Outcome::Denied);
                    }
                    refused.into_response()
                }
            }
        }
        Err(path::RouteError::NotFound) => not_found(),
        Err(e) => ApiError(RegistryError::from_route(e, is_read)).into_response(),
    };
    if is_head {
        *response.body_mut() = Body::empty();
    }
    response.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    let m = metrics();
    m.http_requests
        .with_label_values(&[route_label, &method_label, response.status().as_str()])
        .inc();
    m.http_duration
        .with_label_values(&[route_label, &method_label])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The writes the audit log records, as (action, target).
fn audited_write(method: &Method, route: &V2Route) -> Option<(&'static str, String)> {
    match (method, route) {
        (&Method::PUT, V2Route::Manifest { name, reference }) => {
            Some(("manifest.put", format!("{name}:{reference}")))
        }
        (&Method::DELETE, V2Route::Manifest { name, reference }) => {
            Some(("manifest.delete", format!("{name}:{reference}")))
        }
        (&Method::DELETE, V2Route::Blob { name, digest }) => {
            Some(("blob.delete", format!("{name}@{digest}")))
        }
        // A finished upload, a monolithic push or a mount (a `202` session start or chunk is
        // not, but a refused one is recorded).
        (&Method::PUT | &Method::PATCH, V2Route::Upload { name, .. })
        | (&Method::POST, V2Route::UploadStart { name }) => Some(("blob.push", name.to_string())),
        _ => None,
    }
}

fn audit(
    state: &AppState,
    actor: Option<String>,
    client: Option<IpAddr>,
    action: &'static str,
    target: String,
    outcome: Outcome,
) {
    state.auth.record(AuditEvent {
        actor: actor.filter(|a| !a.is_empty()),
        client: client.map(|c| c.to_string()),
        action: action.to_owned(),
        target,
        outcome,
        detail: None,
    });
}

/// The gate every `/v2/` request passes before its handler: the route's requirement from
/// `auth::access`, checked against the caller.
async fn admit_request(
    state: &AppState,
    route: &V2Route,
    request: &Request,
) -> Result<Admission, AccessError> {
    let mount_from = match route {
        V2Route::UploadStart { .. } if request.query_param("mount").is_some() => request
            .query_param("from")
            .and_then(|from| from.parse::<RepoName>().ok()),
        _ => None,
    };
    let requirement = auth::required(&request.method, route, mount_from);
    let challenge = || ChallengeContext {
        realm: state
            .token_realm
            .clone()
            .unwrap_or_else(|| request.location(TOKEN_PATH)),
        service: state.auth.settings().parties.service.clone(),
    };
    admit(
        state,
        &request.headers,
        request.client,
        challenge,
        &requirement,
    )
    .await
}

async fn handle(state: &AppState, route: V2Route, request: Request, body: Body) -> HandlerResult {
    let registry = &state.registry;
    match (request.method.clone(), route) {
        (Method::GET | Method::HEAD, V2Route::Base) => {
            Ok(axum::Json(serde_json::json!({})).into_response())
        }
        (Method::GET, V2Route::Catalog) => listing::catalog(state, &request).await,
        (Method::GET, V2Route::Tags { name }) => listing::tags(state, &name, &request).await,
        (Method::GET, V2Route::Referrers { name, digest }) => {
            listing::referrers(registry, &name, &digest, &request).await
        }
        (Method::GET | Method::HEAD, V2Route::Blob { name, digest }) => {
            blobs::get(registry, &name, &digest, request).await
        }
        (Method::DELETE, V2Route::Blob { name, digest }) => {
            blobs::delete(registry, &name, &digest).await
        }
        (Method::POST, V2Route::UploadStart { name }) => {
            uploads::start(registry, &name, request, body).await
        }
        (Method::GET, V2Route::Upload { name, id }) => {
            uploads::status(registry, &name, &id, &request).await
        }
        (Method::PATCH, V2Route::Upload { name, id }) => {
            uploads::patch(registry, &name, &id, request, body).await
        }
        (Method::PUT, V2Route::Upload { name, id }) => {
            uploads::put(registry, &name, &id, request, body).await
        }
        (Method::DELETE, V2Route::Upload { name, id }) => {
            uploads::cancel(registry, &name, &id).await
        }
        (Method::GET | Method::HEAD, V2Route::Manifest { name, reference }) => {
            manifests::get(registry, &name, &reference, request).await
        }
        (Method::PUT, V2Route::Manifest { name, reference }) => {
            manifests::put(registry, &name, &reference, request, body).await
        }
        (Method::DELETE, V2Route::Manifest { name, reference }) => {
            manifests::delete(registry, &name, &reference).await
        }
        (method, _) => Err(ApiError(RegistryError::Unsupported(format!(
            "{method} is not supported on this endpoint"
        )))),
    }
}

fn not_found() -> Response {
    let body = crate::oci::ErrorEnvelope::single(
        crate::oci::ErrorCode::Unsupported,
        Some("no such endpoint in the distribution API".into()),
        None,
    )
    .to_json();
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Label for metrics: the kind of endpoint, never the (unbounded) name.
fn route_kind(route: &V2Route) -> &'static str {
    match route {
        V2Route::Base => "base",
        V2Route::Catalog => "catalog",
        V2Route::Tags { .. } => "tags",
        V2Route::UploadStart { .. } => "upload_start",
        V2Route::Upload { .. } => "upload",
        V2Route::Manifest { .. } => "manifest",
        V2Route::Blob { .. } => "blob",
        V2Route::Referrers { .. } => "referrers",
    }
}

/// Sets a header whose value the registry produced (digests, paths); such values are
/// always valid header text, and one that is not is dropped rather than panicking.
pub(super) fn set_header(response: &mut Response, name: &'static str, value: impl AsRef<str>) {
    if let Ok(value) = HeaderValue::from_str(value.as_ref()) {
        response.headers_mut().insert(name, value);
    }
}

/// Like [`set_header`] but keeps earlier values (headers sent once per item, like `OCI-Tag`).
pub(super) fn append_header(response: &mut Response, name: &'static str, value: impl AsRef<str>) {
    if let Ok(value) = HeaderValue::from_str(value.as_ref()) {
        response.headers_mut().append(name, value);
    }
}
