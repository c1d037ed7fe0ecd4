//! `RegistryError`: every way a registry operation fails, and the one table mapping each to
//! its OCI error code.

use crate::coordination::CoordinationError;
use crate::metadata::MetadataError;
use crate::oci::{Digest, ErrorCode, NameError, RouteError};
use crate::storage::BlobStoreError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("blob unknown to registry")]
    BlobUnknown,
    #[error("blob upload unknown to registry")]
    UploadUnknown,
    #[error("{0}")]
    UploadInvalid(String),
    #[error("{0}")]
    RangeInvalid(String),
    #[error("provided digest {expected} did not match uploaded content ({actual})")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("{0}")]
    DigestInvalid(String),
    #[error("{0}")]
    SizeInvalid(String),
    #[error("{0}")]
    ManifestInvalid(String),
    #[error("manifest is larger than the {limit}-byte limit")]
    ManifestTooLarge { limit: u64 },
    #[error("manifest unknown to registry")]
    ManifestUnknown,
    #[error("manifest unknown: {0}")]
    ManifestNotAcceptable(String),
    #[error("manifest references blobs or manifests unknown to the repository")]
    ManifestBlobUnknown(Vec<Digest>),
    #[error("descriptor of {digest} says {declared} bytes, the repository holds {stored}")]
    ManifestSizeMismatch {
        digest: Digest,
        declared: u64,
        stored: u64,
    },
    #[error("{0}")]
    NameInvalid(String),
    #[error("repository name not known to registry")]
    NameUnknown,
    #[error("{0}")]
    TagInvalid(String),
    #[error("{0}")]
    PaginationInvalid(String),
    #[error("{0}")]
    Unsupported(String),
    /// Another node (or request) is collecting garbage; one collection runs at a time.
    #[error("another garbage collection is running; retry when it has finished")]
    GcRunning,
    /// The push would take the namespace past its quota (`adding` is 0 for a new upload into
    /// a namespace already full).
    #[error("{}", quota_message(namespace, *quota, *used, *adding))]
    QuotaExceeded {
        namespace: String,
        quota: u64,
        used: u64,
        adding: u64,
    },
    #[error("quota lookup failed")]
    QuotaLookup(#[source] super::quota::QuotaLookupError),
    #[error("storage failure")]
    Storage(#[from] BlobStoreError),
    #[error("metadata failure")]
    Metadata(#[source] MetadataError),
    #[error("coordination failure")]
    Coordination(#[from] CoordinationError),
}

impl RegistryError {
    /// The OCI code (and so the HTTP status) of this error.
    pub fn code(&self) -> ErrorCode {
        use RegistryError::*;
        match self {
            BlobUnknown => ErrorCode::BlobUnknown,
            UploadUnknown => ErrorCode::BlobUploadUnknown,
            UploadInvalid(_) => ErrorCode::BlobUploadInvalid,
            RangeInvalid(_) => ErrorCode::RangeInvalid,
            DigestMismatch { .. } | DigestInvalid(_) => ErrorCode::DigestInvalid,
            SizeInvalid(_) => ErrorCode::SizeInvalid,
            ManifestInvalid(_) | ManifestSizeMismatch { .. } => ErrorCode::ManifestInvalid,
            ManifestTooLarge { .. } => ErrorCode::ManifestTooLarge,
            ManifestUnknown | ManifestNotAcceptable(_) => ErrorCode::ManifestUnknown,
            ManifestBlobUnknown(_) => ErrorCode::ManifestBlobUnknown,
            NameInvalid(_) => ErrorCode::NameInvalid,
            NameUnknown => ErrorCode::NameUnknown,
            TagInvalid(_) => ErrorCode::TagInvalid,
            PaginationInvalid(_) => ErrorCode::PaginationNumberInvalid,
            Unsupported(_) => ErrorCode::Unsupported,
            GcRunning => ErrorCode::Unavailable,
            QuotaExceeded { .. } => ErrorCode::Denied,
            _ if self.is_transient() => ErrorCode::Unavailable,
            Storage(_) | Metadata(_) | Coordination(_) | QuotaLookup(_) => ErrorCode::Unknown,
        }
    }

    /// A backend that cannot answer right now (unreachable, timed out, throttling, a lost
    /// race it could not retry past): `503 UNAVAILABLE`, which clients retry.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Storage(e) => matches!(e, BlobStoreError::Unavailable(_)),
            RegistryError::Metadata(e) => e.is_transient(),
            RegistryError::Coordination(e) => matches!(e, CoordinationError::Unavailable(_)),
            _ => false,
        }
    }

    /// Message for the client; internal failures get the code's generic message only.
    pub fn client_message(&self) -> Option<String> {
        match self {
            RegistryError::Storage(_)
            | RegistryError::Metadata(_)
            | RegistryError::Coordination(_)
            | RegistryError::QuotaLookup(_) => None,
            other => Some(other.to_string()),
        }
    }

    /// Structured `detail` for the error body.
    pub fn detail(&self) -> Option<serde_json::Value> {
        match self {
            RegistryError::ManifestBlobUnknown(digests) => Some(serde_json::json!({
                "unknown": digests.iter().map(Digest::to_string).collect::<Vec<_>>()
            })),
            RegistryError::DigestMismatch { expected, actual } => Some(serde_json::json!({
                "expected": expected.to_string(), "actual": actual.to_string()
            })),
            RegistryError::QuotaExceeded {
                namespace,
                quota,
                used,
                adding,
            } => Some(serde_json::json!({
                "namespace": namespace, "quota_bytes": quota, "used_bytes": used,
                "adding_bytes": adding
            })),
            _ => None,
        }
    }

    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            RegistryError::Storage(_)
                | RegistryError::Metadata(_)
                | RegistryError::Coordination(_)
                | RegistryError::QuotaLookup(_)
        )
    }
}

fn quota_message(namespace: &str, quota: u64, used: u64, adding: u64) -> String {
    let state = format!("namespace {namespace} holds {used} of its {quota}-byte quota");
    if adding == 0 {
        format!(
            "{state}; free space (delete images, then run garbage collection) or ask an admin for a larger quota"
        )
    } else {
        format!("pushing {adding} more bytes would exceed the quota: {state}")
    }
}

impl From<MetadataError> for RegistryError {
    fn from(e: MetadataError) -> Self {
        match e {
            MetadataError::MissingReferences(digests) => {
                RegistryError::ManifestBlobUnknown(digests)
            }
            MetadataError::SizeMismatch {
                digest,
                declared,
                stored,
            } => RegistryError::ManifestSizeMismatch {
                digest,
                declared,
                stored,
            },
            other => RegistryError::Metadata(other),
        }
    }
}

impl From<NameError> for RegistryError {
    fn from(e: NameError) -> Self {
        match e {
            NameError::InvalidName => RegistryError::NameInvalid(e.to_string()),
            NameError::InvalidTag => RegistryError::TagInvalid(e.to_string()),
            NameError::InvalidDigest(_) => RegistryError::DigestInvalid(e.to_string()),
            NameError::InvalidUploadId => RegistryError::UploadUnknown,
        }
    }
}

impl RegistryError {
    /// A path that does not parse, with the code `RouteError::code` gives it (a read of an
    /// impossible tag is `MANIFEST_UNKNOWN`).
    pub fn from_route(e: RouteError, read: bool) -> Self {
        match e.code(read) {
            Some(ErrorCode::ManifestUnknown) => RegistryError::ManifestUnknown,
            _ => e.into(),
        }
    }
}

impl From<RouteError> for RegistryError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::NotFound => RegistryError::Unsupported("no such endpoint".into()),
            RouteError::Invalid(name) => name.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::DigestError;

    #[test]
    fn unavailable_backends_are_503_and_other_failures_500() {
        let cause = || Box::<dyn std::error::Error + Send + Sync>::from("down");
        let transient = [
            RegistryError::Storage(BlobStoreError::Unavailable(cause())),
            RegistryError::Metadata(MetadataError::Unavailable(cause())),
            RegistryError::Metadata(MetadataError::Conflict(cause())),
            RegistryError::Coordination(CoordinationError::Unavailable(cause())),
        ];
        for e in transient {
            assert_eq!(e.code(), ErrorCode::Unavailable, "{e:?}");
            assert_eq!(e.code().status(), 503);
            assert!(e.client_message().is_none() && e.is_internal());
        }
        let permanent = [
            RegistryError::Storage(BlobStoreError::Backend(cause())),
            RegistryError::Metadata(MetadataError::Backend(cause())),
            RegistryError::Coordination(CoordinationError::Backend(cause())),
        ];
        for e in permanent {
            assert_eq!(e.code(), ErrorCode::Unknown, "{e:?}");
        }
    }

    /// The registry's variants for a bad path carry the code `oci` assigns it, which is what
    /// the edge answers for the same path.
    #[test]
    fn path_errors_have_the_codes_oci_gives_them() {
        let errors = [
            NameError::InvalidName,
            NameError::InvalidTag,
            NameError::InvalidDigest(DigestError::UnsupportedAlgorithm("md5".into())),
            NameError::InvalidUploadId,
        ];
        for e in errors {
            assert_eq!(RegistryError::from(e.clone()).code(), e.code(), "{e:?}");
            for read in [false, true] {
                let route = RouteError::Invalid(e.clone());
                let expected = route.code(read).expect("a code");
                assert_eq!(
                    RegistryError::from_route(route, read).code(),
                    expected,
                    "{e:?}"
                );
            }
        }
    }
}
