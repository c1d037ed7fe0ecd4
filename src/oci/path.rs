//! `/v2/…` request paths → [`V2Route`]. Shared by the core's router and the edge.
//!
//! Repository names may contain any number of `/` and even the words `blobs` or `manifests`,
//! so routes are recognised from the right-hand end of the path and everything to the left
//! of the suffix is the name.

use super::digest::Digest;
use super::error::ErrorCode;
use super::name::{NameError, Reference, RepoName, UploadId};

/// What a `/v2/` path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V2Route {
    /// `/v2/`: the API version check.
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// `/v2/<name>/tags/list`.
    Tags { name: RepoName },
    /// `/v2/<name>/blobs/uploads/` (trailing slash optional).
    UploadStart { name: RepoName },
    /// `/v2/<name>/blobs/uploads/<id>`.
    Upload { name: RepoName, id: UploadId },
    /// `/v2/<name>/manifests/<reference>`.
    Manifest {
        name: RepoName,
        reference: Reference,
    },
    /// `/v2/<name>/blobs/<digest>`.
    Blob { name: RepoName, digest: Digest },
    /// `/v2/<name>/referrers/<digest>`.
    Referrers { name: RepoName, digest: Digest },
}

impl V2Route {
    /// The repository the route addresses, if any.
    pub fn name(&self) -> Option<&RepoName> {
        match self {
            V2Route::Base | V2Route::Catalog => None,
            V2Route::Tags { name }
            | V2Route::UploadStart { name }
            | V2Route::Upload { name, .. }
            | V2Route::Manifest { name, .. }
            | V2Route::Blob { name, .. }
            | V2Route::Referrers { name, .. } => Some(name),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The path is not an endpoint of the distribution API.
    #[error("no such endpoint")]
    NotFound,
    /// The path has the shape of an endpoint but a part of it is invalid.
    #[error(transparent)]
    Invalid(#[from] NameError),
}

impl RouteError {
    /// The OCI code of a request to this path (`None`: no such endpoint, a plain `404`). A
    /// reference that cannot be a tag names no manifest, so a read of it is
    /// `MANIFEST_UNKNOWN` (what the OCI conformance suite expects of
    /// `GET /v2/<name>/manifests/.INVALID`); a push learns why the tag is invalid.
    pub fn code(&self, read: bool) -> Option<ErrorCode> {
        match self {
            RouteError::NotFound => None,
            RouteError::Invalid(NameError::InvalidTag) if read => Some(ErrorCode::ManifestUnknown),
            RouteError::Invalid(e) => Some(e.code()),
        }
    }
}

/// Parses a request path (as received, before any percent-decoding).
pub fn parse(path: &str) -> Result<V2Route, RouteError> {
    let rest = match path.strip_prefix("/v2") {
        Some("" | "/") => return Ok(V2Route::Base),
        Some(rest) => rest.strip_prefix('/').ok_or(RouteError::NotFound)?,
        None => return Err(RouteError::NotFound),
    };
    if rest == "_catalog" {
        return Ok(V2Route::Catalog);
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let n = segments.len();
    let name_of = |suffix_segments: usize| -> Result<RepoName, RouteError> {
        if n <= suffix_segments {
            return Err(RouteError::NotFound);
        }
        let name = segments[..n - suffix_segments].join("/");
        Ok(name.parse()?)
    };
    let last = segments[n - 1];
    let from_end = |i: usize| if n > i { segments[n - 1 - i] } else { "" };

    if from_end(1) == "tags" && last == "list" {
        return Ok(V2Route::Tags { name: name_of(2)? });
    }
    if from_end(1) == "blobs" && last == "uploads" {
        return Ok(V2Route::UploadStart { name: name_of(2)? });
    }
    if from_end(2) == "blobs" && from_end(1) == "uploads" {
        if last.is_empty() {
            return Ok(V2Route::UploadStart { name: name_of(3)? });
        }
        let name = name_of(3)?;
        return Ok(V2Route::Upload {
            name,
            id: last.parse()?,
        });
    }
    let last = decode_colon(last);
    match from_end(1) {
        "manifests" => Ok(V2Route::Manifest {
            name: name_of(2)?,
            reference: last.parse()?,
        }),
        "blobs" => Ok(V2Route::Blob {
            name: name_of(2)?,
            digest: last.parse().map_err(NameError::from)?,
        }),
        "referrers" => Ok(V2Route::Referrers {
            name: name_of(2)?,
            digest: last.parse().map_err(NameError::from)?,
        }),
        _ => Err(RouteError::NotFound),
    }
}

/// Some clients percent-encode the `:` of a digest; nothing else in a valid reference needs
/// decoding, and anything else with `%` is rejected by the grammar.
fn decode_colon(segment: &str) -> std::borrow::Cow<'_, str> {
    if segment.contains('%') {
        std::borrow::Cow::Owned(segment.replace("%3A", ":").replace("%3a", ":"))
    } else {
        std::borrow::Cow::Borrowed(segment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    fn digest() -> Digest {
        format!("sha256:{}", "a".repeat(64)).parse().unwrap()
    }

    #[test]
    fn routes_table() {
        let d = digest();
        let id = UploadId::generate();
        let cases: Vec<(String, Result<V2Route, RouteError>)> = vec![
            ("/v2".into(), Ok(V2Route::Base)),
            ("/v2/".into(), Ok(V2Route::Base)),
            ("/v2/_catalog".into(), Ok(V2Route::Catalog)),
            (
                "/v2/a/tags/list".into(),
                Ok(V2Route::Tags { name: name("a") }),
            ),
            (
                "/v2/a/b/c/tags/list".into(),
                Ok(V2Route::Tags {
                    name: name("a/b/c"),
                }),
            ),
            (
                "/v2/team/app/blobs/uploads/".into(),
                Ok(V2Route::UploadStart {
                    name: name("team/app"),
                }),
            ),
            (
                "/v2/team/app/blobs/uploads".into(),
                Ok(V2Route::UploadStart {
                    name: name("team/app"),
                }),
            ),
            (
                format!("/v2/team/app/blobs/uploads/{id}"),
                Ok(V2Route::Upload {
                    name: name("team/app"),
                    id: id.clone(),
                }),
            ),
            (
                format!("/v2/team/app/blobs/{d}"),
                Ok(V2Route::Blob {
                    name: name("team/app"),
                    digest: d.clone(),
                }),
            ),
            (
                format!("/v2/team/app/blobs/{}", d.as_str().replace(':', "%3A")),
                Ok(V2Route::Blob {
                    name: name("team/app"),
                    digest: d.clone(),
                }),
            ),
            (
                "/v2/team/app/manifests/latest".into(),
                Ok(V2Route::Manifest {
                    name: name("team/app"),
                    reference: "latest".parse().unwrap(),
                }),
            ),
            (
                "/v2/x/manifests/manifests/v1".into(),
                Ok(V2Route::Manifest {
                    name: name("x/manifests"),
                    reference: "v1".parse().unwrap(),
                }),
            ),
            (
                format!("/v2/x/blobs/blobs/{d}"),
                Ok(V2Route::Blob {
                    name: name("x/blobs"),
                    digest: d.clone(),
                }),
            ),
            (
                format!("/v2/a/referrers/{d}"),
                Ok(V2Route::Referrers {
                    name: name("a"),
                    digest: d.clone(),
                }),
            ),
            ("/v2/a/tags/list/".into(), Err(RouteError::NotFound)),
            ("/v2/a/unknown/x".into(), Err(RouteError::NotFound)),
            ("/v2/manifests/latest".into(), Err(RouteError::NotFound)),
            ("/v3/a/tags/list".into(), Err(RouteError::NotFound)),
            ("/v2x/a/tags/list".into(), Err(RouteError::NotFound)),
            (
                "/v2/A/tags/list".into(),
                Err(RouteError::Invalid(NameError::InvalidName)),
            ),
            (
                "/v2/../../etc/manifests/latest".into(),
                Err(RouteError::Invalid(NameError::InvalidName)),
            ),
            (
                "/v2/a%2Fb/manifests/latest".into(),
                Err(RouteError::Invalid(NameError::InvalidName)),
            ),
            (
                "/v2/a/manifests/-bad".into(),
                Err(RouteError::Invalid(NameError::InvalidTag)),
            ),
            (
                "/v2/a/blobs/uploads/..%2F..%2Fetc".into(),
                Err(RouteError::Invalid(NameError::InvalidUploadId)),
            ),
        ];
        for (path, expected) in cases {
            assert_eq!(parse(&path), expected, "{path}");
        }
        assert!(matches!(
            parse("/v2/a/blobs/sha256:zz"),
            Err(RouteError::Invalid(NameError::InvalidDigest(_)))
        ));
    }
}
