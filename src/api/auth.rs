//! The token protocol over HTTP: `Authorization` headers → [`Credentials`], the `/v2/` gate
//! (the challenge a refused request carries), the token endpoints (`GET /auth/token` with
//! basic credentials or none, `POST /auth/token` with the OAuth2 `password` and
//! `refresh_token` grants, the same at `/api/v1/auth/token`), logout, and the JWK set edges
//! verify tokens with (`GET /auth/jwks`).

use std::net::IpAddr;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use super::AppState;
use super::error::AccessError;
use super::origin::ClientAddress;
use crate::auth::{Admission, Credentials, IssuedToken, Principal, Requirement, Verdict};
use crate::oci::scope::ResourceScope;

/// Path of the token endpoint, under the registry's own origin.
pub const TOKEN_PATH: &str = "/auth/token";

/// The credentials of a request. A header that is neither basic nor bearer, or a basic one
/// that does not decode, is refused rather than treated as anonymous.
pub fn credentials(headers: &HeaderMap) -> Result<Credentials, AccessError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(Credentials::None);
    };
    let malformed = || AccessError::Malformed;
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, rest) = value.trim().split_once(' ').ok_or_else(malformed)?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD.decode(rest).map_err(|_| malformed())?;
        let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
        let (user, password) = decoded.split_once(':').ok_or_else(malformed)?;
        Ok(Credentials::Basic {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    } else if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        Ok(Credentials::Bearer(rest.to_owned()))
    } else {
        Err(malformed())
    }
}

/// The context a challenge needs: where the token service is.
pub struct ChallengeContext {
    pub realm: String,
    pub service: String,
}

impl ChallengeContext {
    /// `Bearer realm=…,service=…[,scope=…][,error=…]`.
    pub fn header(&self, scopes: &[ResourceScope], insufficient: bool) -> String {
        let mut value = format!(
            "Bearer realm=\"{}\",service=\"{}\"",
            self.realm, self.service
        );
        if !scopes.is_empty() {
            let list: Vec<String> = scopes.iter().map(ToString::to_string).collect();
            value.push_str(&format!(",scope=\"{}\"", list.join(" ")));
        }
        if insufficient {
            value.push_str(",error=\"insufficient_scope\"");
        }
        value
    }
}

/// Checks a `/v2/` request against what its endpoint requires. A repeat of a request this
/// node admitted (same header, same requirement, same account epoch) is admitted again at
/// once (`auth::admission`).
pub async fn admit(
    state: &AppState,
    headers: &HeaderMap,
    client: Option<IpAddr>,
    challenge: impl FnOnce() -> ChallengeContext,
    requirement: &Requirement,
) -> Result<Admission, AccessError> {
    let auth = &state.auth;
    if !auth.enforced().await? {
        return Ok(Admission {
            identity: None,
            may_mount: true,
        });
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map_or(&b""[..], |value| value.as_bytes());
    let key = auth.admission_key(authorization, requirement).await;
    if let Some(admitted) = key.as_ref().and_then(|key| auth.recall_admission(key)) {
        return Ok(admitted);
    }
    let admission = decide(state, headers, client, challenge, requirement).await?;
    if let Some(key) = key {
        auth.remember_admission(key, &admission);
    }
    Ok(admission)
}

/// The gate's decision from the credentials, the policy and the token's grants.
async fn decide(
    state: &AppState,
    headers: &HeaderMap,
    client: Option<IpAddr>,
    challenge: impl FnOnce() -> ChallengeContext,
    requirement: &Requirement,
) -> Result<Admission, AccessError> {
    let auth = &state.auth;
    let credentials = credentials(headers)?;
    let anonymous = credentials == Credentials::None;
    let identity = match auth.identify(&credentials, client).await {
        Ok(identity) => identity,
        Err(crate::auth::AuthError::InvalidCredentials | crate::auth::AuthError::InvalidToken) => {
            return Err(AccessError::Unauthorized {
                challenge: challenge().header(&requirement.needed, false),
            });
        }
        Err(e) => return Err(e.into()),
    };
    if requirement.needs_identity && anonymous {
        return Err(AccessError::Unauthorized {
            challenge: challenge().header(&[], false),
        });
    }
    for scope in &requirement.needed {
        match auth.permits(&identity, scope).await? {
            Verdict::Granted => {}
            Verdict::NeedsToken => {
                return Err(AccessError::Unauthorized {
                    challenge: challenge().header(&requirement.needed, true),
                });
            }
            // The anonymous caller is asked to sign in; a signed-in one is refused.
            Verdict::Denied if identity.principal == Principal::Anonymous => {
                return Err(AccessError::Unauthorized {
                    challenge: challenge().header(&requirement.needed, false),
                });
            }
            Verdict::Denied => {
                return Err(AccessError::Denied {
                    actor: identity.principal.subject(),
                });
            }
        }
    }
    let may_mount = match &requirement.mount_source {
        Some(from) => {
            let scope = ResourceScope::repository(from.as_str(), [crate::oci::scope::Action::Pull]);
            auth.permits(&identity, &scope).await? == Verdict::Granted
        }
        None => false,
    };
    Ok(Admission {
        identity: Some(std::sync::Arc::new(identity)),
        may_mount,
    })
}

// ---- token endpoints ----

#[derive(Debug, Default, Deserialize)]
pub struct TokenForm {
    grant_type: Option<String>,
    service: Option<String>,
    scope: Option<String>,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    access_type: Option<String>,
    offline_token: Option<String>,
}

/// `GET /auth/token?service=…&scope=…&scope=…[&offline_token=true]`: basic credentials or
/// anonymous (docker-auth-token.md).
pub async fn token_get(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let mut scopes = Vec::new();
    let mut service = None;
    let mut offline = false;
    for (key, value) in form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "scope" => scopes.push(value.into_owned()),
            "service" => service = Some(value.into_owned()),
            "offline_token" => offline = value == "true",
            _ => {}
        }
    }
    let result = async {
        check_service(&state, service.as_deref())?;
        let requested = parse_scopes(&scopes)?;
        let principal = match credentials(&headers)? {
            Credentials::None => Principal::Anonymous,
            Credentials::Basic { user, password } => {
                state.auth.sign_in(&user, &password, client).await?
            }
            Credentials::Bearer(_) => return Err(AccessError::Malformed),
        };
        let token = state.auth.issue(&principal, &requested).await?;
        let refresh = if offline {
            state.auth.start_session(&principal).await?
        } else {
            None
        };
        Ok(token_response(token, refresh))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /auth/token` (and `/api/v1/auth/token`): the OAuth2 form `docker login` sends, with
/// `grant_type=password` or `refresh_token`.
pub async fn token_post(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    axum::Form(form): axum::Form<TokenForm>,
) -> Response {
    let result = async {
        check_service(&state, form.service.as_deref())?;
        let requested = parse_scopes(form.scope.as_slice())?;
        let offline = form.access_type.as_deref() == Some("offline")
            || form.offline_token.as_deref() == Some("true");
        let (principal, refresh) = match form.grant_type.as_deref() {
            Some("password") => {
                let (Some(user), Some(password)) = (&form.username, &form.password) else {
                    return Err(AccessError::BadRequest(
                        "username and password are required",
                    ));
                };
                let principal = state.auth.sign_in(user, password, client).await?;
                let refresh = if offline {
                    state.auth.start_session(&principal).await?
                } else {
                    None
                };
                (principal, refresh)
            }
            Some("refresh_token") => {
                let Some(refresh) = &form.refresh_token else {
                    return Err(AccessError::BadRequest("refresh_token is required"));
                };
                // The same refresh token comes back, as the OAuth spec describes.
                (state.auth.refresh(refresh).await?, Some(refresh.clone()))
            }
            _ => {
                return Err(AccessError::BadRequest(
                    "grant_type must be password or refresh_token",
                ));
            }
        };
        let token = state.auth.issue(&principal, &requested).await?;
        Ok(token_response(token, refresh))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Debug, Deserialize)]
pub struct LogoutRequest {
    refresh_token: String,
}

/// `POST /api/v1/auth/logout`: revokes a refresh token.
pub async fn logout(State(state): State<AppState>, Json(body): Json<LogoutRequest>) -> Response {
    match state.auth.end_session(&body.refresh_token).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => AccessError::from(e).into_response(),
    }
}

/// `GET /auth/jwks`: the public keys tokens are signed with.
pub async fn jwks(State(state): State<AppState>) -> Response {
    Json(state.auth.jwks()).into_response()
}

/// A token asked for another service than this registry's is not ours to issue.
fn check_service(state: &AppState, service: Option<&str>) -> Result<(), AccessError> {
    match service {
        Some(s) if s != state.auth.settings().parties.service => {
            Err(AccessError::BadRequest("unknown service"))
        }
        _ => Ok(()),
    }
}

fn parse_scopes(scopes: &[String]) -> Result<Vec<ResourceScope>, AccessError> {
    let mut parsed = Vec::new();
    for scope in scopes {
        parsed.extend(
            ResourceScope::parse_list(scope)
                .map_err(|_| AccessError::BadRequest("invalid scope"))?,
        );
    }
    Ok(parsed)
}

fn token_response(token: IssuedToken, refresh: Option<String>) -> Response {
    let issued_at = rfc3339(token.issued_at);
    let scope: Vec<String> = token.granted.iter().map(ToString::to_string).collect();
    let mut body = serde_json::json!({
        "token": token.token,
        "access_token": token.token,
        "expires_in": token.expires_in,
        "issued_at": issued_at,
        "scope": scope.join(" "),
    });
    if let Some(refresh) = refresh {
        body["refresh_token"] = serde_json::Value::String(refresh);
    }
    let mut response = Json(body).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

/// RFC 3339 in UTC for a Unix timestamp (empty for one out of range, which the store's
/// clock never gives).
pub(crate) fn rfc3339(seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
