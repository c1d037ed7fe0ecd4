//! What the S3 store needs to know, as plain data: `config.rs` maps the `[storage]` table onto
//! it, so this module never depends on the configuration layer. The defaults are those of
//! `config::S3StorageConfig`.

use std::fmt;
use std::time::Duration;

/// S3 allows at most this many parts in one multipart upload.
pub const MAX_PARTS: u64 = 10_000;
/// S3's smallest part (every part but the last) and largest part or single copy.
pub const MIN_PART_SIZE: u64 = 5 << 20;
pub const MAX_PART_SIZE: u64 = 5 << 30;
/// Default part size: a session buffers at most this much per request in memory.
pub const DEFAULT_PART_SIZE: u64 = 8 << 20;

/// Where the bucket is and how to talk to it.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    pub region: String,
    /// A custom endpoint (MinIO, Ceph, s3s-fs, a VPC endpoint); AWS's own when `None`.
    pub endpoint: Option<String>,
    /// `https://host/bucket/key` instead of `https://bucket.host/key`; most non-AWS servers
    /// need it.
    pub path_style: bool,
    /// Static credentials, used when both are set; otherwise the SDK's default provider chain
    /// (environment, profile, web identity, ECS/IMDS).
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    /// Prepended to every key, so several registries can share a bucket; a trailing `/` is
    /// added when missing.
    pub prefix: String,
    /// Answer blob `GET`s with a redirect to a presigned URL instead of streaming the bytes.
    pub redirect: bool,
    /// How long a presigned URL stays valid.
    pub redirect_expiry: Duration,
    /// Size of the parts an upload is stored and assembled in (see `docs/s3.md`): the memory
    /// one upload request may buffer, and one ten-thousandth of the largest blob.
    pub part_size: u64,
    /// Deadline of one attempt of an ordinary request (the SDK retries a few times).
    /// Server-side assembly (part copies, completing a multipart upload) gets
    /// [`ASSEMBLY_TIMEOUT_FACTOR`] times as long.
    pub request_timeout: Duration,
}

/// Copying and completing are done by the server and scale with the bytes moved.
pub const ASSEMBLY_TIMEOUT_FACTOR: u32 = 10;

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            bucket: String::new(),
            region: "us-east-1".into(),
            endpoint: None,
            path_style: false,
            access_key: None,
            secret_key: None,
            prefix: String::new(),
            redirect: true,
            redirect_expiry: Duration::from_secs(600),
            part_size: DEFAULT_PART_SIZE,
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// The secret stays out of logs and panics.
impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .field("access_key", &self.access_key)
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "<redacted>"),
            )
            .field("prefix", &self.prefix)
            .field("redirect", &self.redirect)
            .field("redirect_expiry", &self.redirect_expiry)
            .field("part_size", &self.part_size)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidS3Settings {
    #[error("storage.bucket is required for the s3 store")]
    NoBucket,
    #[error("storage.region must not be empty")]
    NoRegion,
    #[error("storage.part_size_bytes must be between 5 MiB and 5 GiB (S3's part limits), not {0}")]
    PartSize(u64),
    #[error("storage.access_key and storage.secret_key must be set together")]
    HalfCredentials,
    #[error("the request timeout must be positive")]
    NoTimeout,
    /// Presigned URLs are valid for at most 7 days.
    #[error("storage.redirect_expiry_seconds must be between 1 s and 7 days")]
    RedirectExpiry,
}

impl S3Settings {
    /// Checks what S3 would otherwise reject later, one request at a time.
    pub fn validate(&self) -> Result<(), InvalidS3Settings> {
        if self.bucket.is_empty() {
            return Err(InvalidS3Settings::NoBucket);
        }
        if self.region.is_empty() {
            return Err(InvalidS3Settings::NoRegion);
        }
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            return Err(InvalidS3Settings::PartSize(self.part_size));
        }
        if self.access_key.is_some() != self.secret_key.is_some() {
            return Err(InvalidS3Settings::HalfCredentials);
        }
        if self.request_timeout.is_zero() {
            return Err(InvalidS3Settings::NoTimeout);
        }
        let week = Duration::from_secs(7 * 24 * 3600);
        if self.redirect_expiry.is_zero() || self.redirect_expiry > week {
            return Err(InvalidS3Settings::RedirectExpiry);
        }
        Ok(())
    }

    /// The key prefix as keys use it: empty, or ending in exactly one `/`.
    pub(super) fn normalized_prefix(&self) -> String {
        let trimmed = self.prefix.trim_matches('/');
        if trimmed.is_empty() {
            String::new()
        } else {
            format!("{trimmed}/")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> S3Settings {
        S3Settings {
            bucket: "b".into(),
            ..S3Settings::default()
        }
    }

    #[test]
    fn validation_catches_what_s3_would_refuse() {
        assert_eq!(valid().validate(), Ok(()));
        let cases = [
            (
                S3Settings {
                    bucket: String::new(),
                    ..valid()
                },
                InvalidS3Settings::NoBucket,
            ),
            (
                S3Settings {
                    part_size: MIN_PART_SIZE - 1,
                    ..valid()
                },
                InvalidS3Settings::PartSize(MIN_PART_SIZE - 1),
            ),
            (
                S3Settings {
                    part_size: MAX_PART_SIZE + 1,
                    ..valid()
                },
                InvalidS3Settings::PartSize(MAX_PART_SIZE + 1),
            ),
            (
                S3Settings {
                    access_key: Some("k".into()),
                    ..valid()
                },
                InvalidS3Settings::HalfCredentials,
            ),
            (
                S3Settings {
                    redirect_expiry: Duration::from_secs(8 * 24 * 3600),
                    ..valid()
                },
                InvalidS3Settings::RedirectExpiry,
            ),
            (
                S3Settings {
                    request_timeout: Duration::ZERO,
                    ..valid()
                },
                InvalidS3Settings::NoTimeout,
            ),
        ];
        for (settings, want) in cases {
            assert_eq!(settings.validate(), Err(want), "{settings:?}");
        }
    }

    #[test]
    fn prefixes_end_in_one_slash() {
        for (given, want) in [("", ""), ("/", ""), ("reg", "reg/"), ("/a/b//", "a/b/")] {
            let settings = S3Settings {
                prefix: given.into(),
                ..valid()
            };
            assert_eq!(settings.normalized_prefix(), want, "{given:?}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let settings = S3Settings {
            access_key: Some("AKIDEXAMPLE".into()),
            secret_key: Some("very-secret".into()),
            ..valid()
        };
        let shown = format!("{settings:?}");
        assert!(
            shown.contains("AKIDEXAMPLE") && !shown.contains("very-secret"),
            "{shown}"
        );
    }
}
