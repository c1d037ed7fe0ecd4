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

/// A management-API error, rendered `{"error": CODE, "message": …}`. The codes are stable
/// (docs/API.md lists them): `NOT_FOUND`, `ALREADY_EXISTS`, `REFUSED`, `INVALID`,
/// `UNAUTHORIZED`, `DENIED`, `TOO_MANY_REQUESTS`, `UNAVAILABLE`, `UNKNOWN`; registry failures
/// without a management meaning keep their OCI code (`UNSUPPORTED`).
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// No credentials, or ones that do not check out.
    #[error("authentication required: basic credentials or a bearer token")]
    Unauthorized,
    /// Signed in, and not allowed.
    #[error("not allowed")]
    Denied,
    /// Bad input; nothing was changed.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Account(AccountError),
    #[error(transparent)]
    Auth(AuthError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A failure of this node (a task that died); the cause is logged, never shown.
    #[error("{0}")]
    Internal(String),
}

/// The challenge of a management `401`: the API takes basic credentials (or a bearer token).
const BASIC_CHALLENGE: &str = "Basic realm=\"aerugo\"";

impl From<AccountError> for ManageError {
    fn from(e: AccountError) -> Self {
        ManageError::Account(e)
    }
}

impl From<AuthError> for ManageError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Store(e) => ManageError::Account(e),
            AuthError::InvalidCredentials | AuthError::InvalidToken => ManageError::Unauthorized,
            other => ManageError::Auth(other),
        }
    }
}

impl ManageError {
    /// The one table: error → (status, code, whether the message may be shown).
    fn classify(&self) -> (StatusCode, &'static str, bool) {
        match self {
            ManageError::Unauthorized => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED", true),
            ManageError::Denied => (StatusCode::FORBIDDEN, "DENIED", true),
            ManageError::Invalid(_) => (StatusCode::BAD_REQUEST, "INVALID", true),
            ManageError::Account(e) => match e {
                AccountError::NotFound { .. } => (StatusCode::NOT_FOUND, "NOT_FOUND", true),
                AccountError::AlreadyExists { .. } => {
                    (StatusCode::CONFLICT, "ALREADY_EXISTS", true)
                }
                AccountError::Refused(_) => (StatusCode::CONFLICT, "REFUSED", true),
                AccountError::Unavailable(_) | AccountError::Conflict(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", false)
                }
                AccountError::Backend(_) => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", false),
            },
            ManageError::Auth(AuthError::TooManyAttempts { .. }) => {
                (StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS", true)
            }
            ManageError::Auth(_) | ManageError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", false)
            }
            ManageError::Registry(e) => {
                let shown = e.client_message().is_some();
                match e {
                    RegistryError::NameUnknown => (StatusCode::NOT_FOUND, "NOT_FOUND", true),
                    RegistryError::NameInvalid(_)
                    | RegistryError::TagInvalid(_)
                    | RegistryError::PaginationInvalid(_) => {
                        (StatusCode::BAD_REQUEST, "INVALID", true)
                    }
                    _ => {
                        let code = e.code();
                        let status = StatusCode::from_u16(code.status())
                            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                        (status, code.code(), shown)
                    }
                }
            }
        }
    }
}

impl IntoResponse for ManageError {
    fn into_response(self) -> Response {
        let (status, code, shown) = self.classify();
        match &self {
            ManageError::Registry(e) => log(e),
            _ if status.is_server_error() => {
                tracing::error!(error = %self, "management request failed")
            }
            _ => tracing::debug!(error = %self, "management request refused"),
        }
        let message = if shown {
            self.to_string()
        } else {
            match &self {
                ManageError::Registry(e) => e.code().describe().1.to_owned(),
                _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                    "the account store is unavailable; retry shortly".to_owned()
                }
                _ => "internal error".to_owned(),
            }
        };
        let mut response = (
            status,
            axum::Json(serde_json::json!({"error": code, "message": message})),
        )
            .into_response();
        let headers = response.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(BASIC_CHALLENGE),
            );
        }
        let retry_after = match &self {
            ManageError::Auth(AuthError::TooManyAttempts { retry_after }) => {
                HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()).ok()
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                Some(HeaderValue::from_static(RETRY_AFTER_SECONDS))
            }
            _ => None,
        };
        if let Some(value) = retry_after {
            headers.insert(header::RETRY_AFTER, value);
        }
        response
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
