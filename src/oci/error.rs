//! The OCI error codes and their HTTP statuses: the one table every error response is built
//! from (core and edge alike).

use serde::Serialize;

/// Error codes of the distribution spec, plus the codes distribution added that clients know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    TagInvalid,
    /// `n` of a paginated listing is not a number (distribution's code).
    PaginationNumberInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    /// `Range`/`Content-Range` not satisfiable: 416 with the `BLOB_UPLOAD_INVALID`-style body.
    RangeInvalid,
    /// Manifest over the configured size limit: 413.
    ManifestTooLarge,
    Unavailable,
    Unknown,
}

impl ErrorCode {
    /// `(code, default message, HTTP status)`.
    ///
    /// `BLOB_UPLOAD_INVALID` is a 400 here (distribution uses 404): the session exists, the
    /// request about it is wrong, and a 404 would make clients restart the whole upload.
    pub const fn describe(self) -> (&'static str, &'static str, u16) {
        use ErrorCode::*;
        match self {
            BlobUnknown => ("BLOB_UNKNOWN", "blob unknown to registry", 404),
            BlobUploadInvalid => ("BLOB_UPLOAD_INVALID", "blob upload invalid", 400),
            BlobUploadUnknown => (
                "BLOB_UPLOAD_UNKNOWN",
                "blob upload unknown to registry",
                404,
            ),
            DigestInvalid => (
                "DIGEST_INVALID",
                "provided digest did not match uploaded content",
                400,
            ),
            ManifestBlobUnknown => (
                "MANIFEST_BLOB_UNKNOWN",
                "manifest references a manifest or blob unknown to registry",
                400,
            ),
            ManifestInvalid => ("MANIFEST_INVALID", "manifest invalid", 400),
            ManifestUnknown => ("MANIFEST_UNKNOWN", "manifest unknown to registry", 404),
            NameInvalid => ("NAME_INVALID", "invalid repository name", 400),
            NameUnknown => ("NAME_UNKNOWN", "repository name not known to registry", 404),
            SizeInvalid => (
                "SIZE_INVALID",
                "provided length did not match content length",
                400,
            ),
            TagInvalid => ("TAG_INVALID", "invalid tag", 400),
            PaginationNumberInvalid => (
                "PAGINATION_NUMBER_INVALID",
                "invalid number of results requested",
                400,
            ),
            Unauthorized => ("UNAUTHORIZED", "authentication required", 401),
            Denied => ("DENIED", "requested access to the resource is denied", 403),
            Unsupported => ("UNSUPPORTED", "the operation is unsupported", 405),
            TooManyRequests => ("TOOMANYREQUESTS", "too many requests", 429),
            RangeInvalid => (
                "BLOB_UPLOAD_INVALID",
                "requested range not satisfiable",
                416,
            ),
            ManifestTooLarge => ("MANIFEST_INVALID", "manifest exceeds the size limit", 413),
            Unavailable => ("UNAVAILABLE", "service unavailable", 503),
            Unknown => ("UNKNOWN", "unknown error", 500),
        }
    }

    pub const fn code(self) -> &'static str {
        self.describe().0
    }

    pub const fn status(self) -> u16 {
        self.describe().2
    }
}

/// `{"errors":[{"code","message","detail"}]}`, the spec's error body.
#[derive(Debug, Serialize)]
pub struct ErrorEnvelope {
    pub errors: Vec<ErrorEntry>,
}

#[derive(Debug, Serialize)]
pub struct ErrorEntry {
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

impl ErrorEnvelope {
    /// One error; `message` replaces the default message when given.
    pub fn single(
        code: ErrorCode,
        message: Option<String>,
        detail: Option<serde_json::Value>,
    ) -> Self {
        let (code, default_message, _) = code.describe();
        ErrorEnvelope {
            errors: vec![ErrorEntry {
                code,
                message: message.unwrap_or_else(|| default_message.to_owned()),
                detail,
            }],
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| br#"{"errors":[{"code":"UNKNOWN"}]}"#.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_uppercase_identifiers_with_error_statuses() {
        use ErrorCode::*;
        let all = [
            BlobUnknown,
            BlobUploadInvalid,
            BlobUploadUnknown,
            DigestInvalid,
            ManifestBlobUnknown,
            ManifestInvalid,
            ManifestUnknown,
            NameInvalid,
            NameUnknown,
            SizeInvalid,
            TagInvalid,
            PaginationNumberInvalid,
            Unauthorized,
            Denied,
            Unsupported,
            TooManyRequests,
            RangeInvalid,
            ManifestTooLarge,
            Unavailable,
            Unknown,
        ];
        for code in all {
            let (id, _, status) = code.describe();
            assert!(
                id.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "{id}"
            );
            assert!((400..600).contains(&status));
        }
    }

    #[test]
    fn envelope_has_spec_shape() {
        let body = ErrorEnvelope::single(ErrorCode::BlobUnknown, None, None).to_json();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["errors"][0]["code"], "BLOB_UNKNOWN");
        assert_eq!(value["errors"][0]["message"], "blob unknown to registry");
        assert!(value["errors"][0].get("detail").is_none());
    }
}
