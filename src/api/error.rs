//! Registry errors → HTTP responses: the OCI envelope for `/v2`, a small JSON shape for
//! `/api`. Internal failures are logged here with their cause and never shown to clients.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::oci::ErrorEnvelope;
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
