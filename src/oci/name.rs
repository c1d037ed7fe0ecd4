//! Repository names, tags, references and upload ids: parsed once at the edge of the system,
//! so no unvalidated string reaches storage (which is what keeps path traversal out).

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;

use super::digest::{Digest, DigestError};
use super::error::ErrorCode;

/// Longest repository name, from the distribution reference grammar.
pub const MAX_NAME_LEN: usize = 255;

/// `path-component ( "/" path-component )*` with components `[a-z0-9]+` joined by
/// `.`, `_`, `__` or any run of `-` (the OCI distribution spec's name regex).
static NAME_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$",
    )
    .expect("static regex")
});

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}` from the spec.
static TAG_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$").expect("static regex"));

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "repository name must match [a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)* and be at most 255 characters"
    )]
    InvalidName,
    #[error("tag must match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    InvalidTag,
    #[error("invalid digest: {0}")]
    InvalidDigest(#[from] DigestError),
    #[error("upload id is not one this registry issues")]
    InvalidUploadId,
}

impl NameError {
    /// The OCI code of a request whose path holds this invalid part. For reads of a
    /// reference that cannot be a tag, see `path::RouteError::code`.
    pub fn code(&self) -> ErrorCode {
        match self {
            NameError::InvalidName => ErrorCode::NameInvalid,
            NameError::InvalidTag => ErrorCode::TagInvalid,
            NameError::InvalidDigest(_) => ErrorCode::DigestInvalid,
            NameError::InvalidUploadId => ErrorCode::BlobUploadUnknown,
        }
    }
}

/// A repository name such as `team/app` (any number of `/` components).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first path component: the user or organisation that owns the repository, whose
    /// permissions and quota apply to it.
    pub fn namespace(&self) -> &str {
        self.0.split('/').next().unwrap_or_default()
    }
}

impl FromStr for RepoName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_NAME_LEN || !NAME_RE.is_match(s) {
            return Err(NameError::InvalidName);
        }
        Ok(RepoName(s.to_owned()))
    }
}

/// A tag such as `1.0` or `latest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !TAG_RE.is_match(s) {
            return Err(NameError::InvalidTag);
        }
        Ok(Tag(s.to_owned()))
    }
}

/// The `<reference>` of a manifest path: a tag or a digest. Anything containing `:` is a digest,
/// since `:` cannot occur in a tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            Ok(Reference::Tag(s.parse()?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t.as_str()),
            Reference::Digest(d) => f.write_str(d.as_str()),
        }
    }
}

/// An upload session id. The registry issues UUIDs; anything else is refused before it can
/// become part of a storage path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UploadId(String);

impl UploadId {
    pub fn generate() -> UploadId {
        UploadId(uuid::Uuid::new_v4().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UploadId {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let uuid = uuid::Uuid::try_parse(s).map_err(|_| NameError::InvalidUploadId)?;
        Ok(UploadId(uuid.hyphenated().to_string()))
    }
}

macro_rules! display_as_str {
    ($($ty:ty),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_as_str!(RepoName, Tag, UploadId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_belongs_to_its_first_path_component() {
        for (repo, namespace) in [
            ("alice/app", "alice"),
            ("acme/team/app", "acme"),
            ("solo", "solo"),
        ] {
            let repo: RepoName = repo.parse().expect("name");
            assert_eq!(repo.namespace(), namespace);
        }
    }

    #[test]
    fn repository_names_follow_the_reference_grammar() {
        let long_ok = format!("a/{}", "b".repeat(253));
        let too_long = format!("a/{}", "b".repeat(254));
        let cases: &[(&str, bool)] = &[
            ("app", true),
            ("team/app", true),
            ("a/b/c/d/e/f/g", true),
            ("my-org/my_app.v2", true),
            ("a__b", true),
            ("a---b", true),
            ("team/blobs/uploads", true),
            (&long_ok, true),
            (&too_long, false),
            ("", false),
            ("App", false),
            ("team//app", false),
            ("/team", false),
            ("team/", false),
            ("a___b", false),
            ("-a", false),
            ("a-", false),
            ("a..b", false),
            ("../etc", false),
            ("team/../app", false),
            ("a%2fb", false),
            ("a b", false),
        ];
        for (input, ok) in cases {
            assert_eq!(input.parse::<RepoName>().is_ok(), *ok, "{input:?}");
        }
    }

    #[test]
    fn tags_follow_the_spec() {
        let max = "t".repeat(128);
        let over = "t".repeat(129);
        let cases: &[(&str, bool)] = &[
            ("latest", true),
            ("1.0", true),
            ("_x", true),
            ("v1.2.3-rc.1_b", true),
            (&max, true),
            (&over, false),
            ("", false),
            (".hidden", false),
            ("-x", false),
            ("a/b", false),
            ("a:b", false),
        ];
        for (input, ok) in cases {
            assert_eq!(input.parse::<Tag>().is_ok(), *ok, "{input:?}");
        }
    }

    #[test]
    fn references_are_tags_or_digests() {
        assert!(matches!("latest".parse(), Ok(Reference::Tag(_))));
        let d = format!("sha256:{}", "0".repeat(64));
        assert!(matches!(d.parse(), Ok(Reference::Digest(_))));
        assert!(matches!(
            "sha256:xyz".parse::<Reference>(),
            Err(NameError::InvalidDigest(_))
        ));
    }

    #[test]
    fn upload_ids_must_be_uuids() {
        assert!(UploadId::generate().as_str().parse::<UploadId>().is_ok());
        assert!("../../x".parse::<UploadId>().is_err());
        assert!("".parse::<UploadId>().is_err());
    }
}
