//! The one mapping from S3 request failures to the store's semantic errors.
//!
//! - the server cannot be reached, the request timed out, the answer broke off, or the
//!   server throttles or fails (503 `SlowDown`, 500, 502, 504): `Unavailable`, retryable;
//! - the object (or multipart upload) does not exist: [`S3Failure::Missing`], which each
//!   method turns into what its contract says (`None`, `NotFound`, `UploadNotFound`);
//! - anything else (access denied, a missing bucket, a malformed request): `Backend`.
//!
//! The SDK has already retried the retryable ones a few times when they reach here.

use std::error::Error as StdError;
use std::fmt;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::storage::BlobStoreError;

/// A failed S3 request, sorted for the caller.
#[derive(Debug)]
pub(super) enum S3Failure {
    Missing,
    Failed(BlobStoreError),
}

impl S3Failure {
    /// The error to report when the object turns out to be missing.
    pub(super) fn missing_is(self, missing: BlobStoreError) -> BlobStoreError {
        match self {
            S3Failure::Missing => missing,
            S3Failure::Failed(e) => e,
        }
    }
}

impl From<S3Failure> for BlobStoreError {
    /// For requests where absence is itself a fault (an object the store just listed).
    fn from(failure: S3Failure) -> Self {
        failure.missing_is(backend_error("an object the store relies on is missing"))
    }
}

impl From<BlobStoreError> for S3Failure {
    fn from(e: BlobStoreError) -> Self {
        S3Failure::Failed(e)
    }
}

/// The failure of one request, with the operation's name and the SDK's full error chain in
/// the message (the SDK's own `Display` says little more than "service error").
#[derive(Debug)]
struct RequestError {
    operation: &'static str,
    detail: String,
    source: Box<dyn StdError + Send + Sync>,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S3 {}: {}", self.operation, self.detail)
    }
}

impl StdError for RequestError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(self.source.as_ref())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Missing,
    Unavailable,
    Backend,
}

/// Sorts the failure of `operation`.
pub(super) fn classify<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> S3Failure
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let kind = match &err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => Kind::Unavailable,
        SdkError::DispatchFailure(failure) if !failure.is_user() => Kind::Unavailable,
        SdkError::ServiceError(_) => {
            by_answer(err.raw_response().map(|r| r.status().as_u16()), err.code())
        }
        _ => Kind::Backend,
    };
    if kind == Kind::Missing {
        return S3Failure::Missing;
    }
    let error = RequestError {
        operation,
        detail: DisplayErrorContext(&err).to_string(),
        source: Box::new(err),
    };
    S3Failure::Failed(match kind {
        Kind::Unavailable => unavailable(error),
        _ => BlobStoreError::Backend(Box::new(error)),
    })
}

/// Sorts an error answer by its code, else its status. A `HEAD` answer has no body, hence no
/// code: its 404 is the missing object.
fn by_answer(status: Option<u16>, code: Option<&str>) -> Kind {
    match (code, status) {
        (Some("NoSuchKey" | "NotFound" | "NoSuchUpload"), _) => Kind::Missing,
        (
            Some(
                "SlowDown"
                | "ServiceUnavailable"
                | "InternalError"
                | "RequestTimeout"
                | "Throttling"
                | "ThrottlingException",
            ),
            _,
        ) => Kind::Unavailable,
        (_, Some(500 | 502 | 503 | 504)) => Kind::Unavailable,
        (None, Some(404)) => Kind::Missing,
        _ => Kind::Backend,
    }
}

fn unavailable(error: RequestError) -> BlobStoreError {
    BlobStoreError::Unavailable(Box::new(error))
}

/// The server does not offer the operation at all (s3s-fs has no `ListMultipartUploads`).
pub(super) fn not_implemented<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    err.code() == Some("NotImplemented")
        || err
            .raw_response()
            .is_some_and(|r| r.status().as_u16() == 501)
}

pub(super) fn backend_error(message: impl Into<String>) -> BlobStoreError {
    BlobStoreError::Backend(message.into().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_sort_by_code_then_status() {
        let cases = [
            (Some(404), Some("NoSuchKey"), Kind::Missing),
            (Some(404), Some("NoSuchUpload"), Kind::Missing),
            (Some(404), None, Kind::Missing),
            // A missing bucket is a configuration fault, never "no such blob".
            (Some(404), Some("NoSuchBucket"), Kind::Backend),
            (Some(503), Some("SlowDown"), Kind::Unavailable),
            (Some(503), None, Kind::Unavailable),
            (Some(500), Some("InternalError"), Kind::Unavailable),
            (Some(400), Some("RequestTimeout"), Kind::Unavailable),
            (Some(403), Some("AccessDenied"), Kind::Backend),
            (Some(403), Some("SignatureDoesNotMatch"), Kind::Backend),
            (Some(400), Some("InvalidRange"), Kind::Backend),
        ];
        for (status, code, want) in cases {
            assert_eq!(by_answer(status, code), want, "{status:?} {code:?}");
        }
    }
}
