//! Registry errors → HTTP responses: the OCI envelope for `/v2`, a small JSON shape for
//! `/api`. Internal failures are logged here with their cause and never shown to clients.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::accounts::AccountError;
use crate::auth::AuthError;
use crate::oci::{ErrorCode, ErrorEnvelope};
use crate::registry::RegistryError;

/// What a `503` asks clients to wait: long enough for a pool or a failover to recover, short
/// enough that a push retried by hand does not notice.
const RETRY_AFTER_SECONDS: &str = "1";

/// A registry error on its way out of a `/v2` handler.
#[derive(Debug)]
pub struct ApiError(pub RegistryError);

impl<E: Into<RegistryError>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(e.into())
    }
}

/// Logs the error and returns its code's HTTP status: the part both error shapes share.
fn log_and_status(error: &RegistryError) -> StatusCode {
    log(error);
    StatusCode::from_u16(error.code().status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn log(error: &RegistryError) {
    if error.is_internal() {
        let mut cause = String::new();
        let mut source = std::error::Error::source(error);
        while let Some(s) = source {
            cause.push_str(&format!(": {s}"));
            source = s.source();
        }
        tracing::error!(error = %error, cause = %cause, "request failed");
    } else {
        tracing::debug!(error = %error, "request rejected");
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = log_and_status(&self.0);
        let code = self.0.code();
        let body = ErrorEnvelope::single(code, self.0.client_message(), self.0.detail()).to_json();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // A backend that is down or busy: clients that honour it back off briefly.
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

/// A management-API error: `{"error": CODE, "message": …}`.
#[derive(Debug)]
pub struct ManageError(pub RegistryError);

impl IntoResponse for ManageError {
    fn into_response(self) -> Response {
        let status = log_and_status(&self.0);
        let code = self.0.code();
        let message = self
            .0
            .client_message()
            .unwrap_or_else(|| code.describe().1.to_owned());
        (
            status,
            axum::Json(serde_json::json!({"error": code.code(), "message": message})),
        )
            .into_response()
    }
}

/// A request refused for want of credentials or permission, or a token request that failed.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// No credentials, bad credentials, or a token without the scope: the challenge tells the
    /// client where to get one (`WWW-Authenticate`).
    #[error("authentication required")]
    Unauthorized { challenge: String },
    /// Signed in, and not allowed. The same answer whether or not the repository exists.
    #[error("requested access to the resource is denied")]
    Denied {
        /// Who was refused, for the audit log.
        actor: String,
    },
    #[error("the Authorization header is neither Basic nor Bearer credentials")]
    Malformed,
    /// A token request the OAuth2 form does not allow.
    #[error("{0}")]
    BadRequest(&'static str),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl AccessError {
    /// The caller the policy refused (as opposed to one asked for credentials).
    pub fn denied_actor(&self) -> Option<&str> {
        match self {
            AccessError::Denied { actor } => Some(actor),
            _ => None,
        }
    }
}

impl From<AccountError> for AccessError {
    fn from(e: AccountError) -> Self {
        AccessError::Auth(AuthError::Store(e))
    }
}

impl IntoResponse for AccessError {
    fn into_response(self) -> Response {
        let (code, message, challenge, retry_after) = match &self {
            AccessError::Unauthorized { challenge } => {
                (ErrorCode::Unauthorized, None, Some(challenge.clone()), None)
            }
            AccessError::Denied { .. } => (ErrorCode::Denied, None, None, None),
            AccessError::Malformed => (ErrorCode::Unauthorized, Some(self.to_string()), None, None),
            AccessError::BadRequest(message) => {
                let body =
                    serde_json::json!({"error": "invalid_request", "error_description": message});
                return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
            }
            AccessError::Auth(AuthError::InvalidCredentials | AuthError::InvalidToken) => {
                (ErrorCode::Unauthorized, Some(self.to_string()), None, None)
            }
            AccessError::Auth(AuthError::TooManyAttempts { retry_after }) => (
                ErrorCode::TooManyRequests,
                Some(self.to_string()),
                None,
                Some(retry_after.as_secs().max(1).to_string()),
            ),
            AccessError::Auth(AuthError::Store(
                AccountError::Unavailable(_) | AccountError::Conflict(_),
            )) => {
                tracing::warn!(error = %self, "account store unavailable");
                (
                    ErrorCode::Unavailable,
                    None,
                    None,
                    Some(RETRY_AFTER_SECONDS.to_owned()),
                )
            }
            AccessError::Auth(_) => {
                tracing::error!(error = %self, "authorization failed");
                (ErrorCode::Unknown, None, None, None)
            }
        };
        let status =
            StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorEnvelope::single(code, message, None).to_json();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        if let Some(value) = retry_after.and_then(|r| HeaderValue::from_str(&r).ok()) {
            headers.insert(header::RETRY_AFTER, value);
        }
        response
    }
}
