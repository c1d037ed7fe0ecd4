//! What every SQL store reads back the same way: the row shapes of referrers and upload
//! sessions, and the conversions between database integers and the trait's types. sqlx's
//! `FromRow` is generic over the database, so one row type serves SQLite and PostgreSQL.

use std::collections::BTreeMap;

use super::{DeletedRepository, MetadataError, Referrer, Result, UploadSession};
use crate::oci::{Digest, Tag};

pub(super) fn backend<E: std::error::Error + Send + Sync + 'static>(e: E) -> MetadataError {
    MetadataError::Backend(Box::new(e))
}

pub(super) fn to_db(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(backend)
}

pub(super) fn from_db(n: i64) -> Result<u64> {
    u64::try_from(n).map_err(backend)
}

/// A page size beyond `i64::MAX` means "no limit" to a database anyway.
pub(super) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) fn parse_digest(s: &str) -> Result<Digest> {
    s.parse().map_err(backend)
}

/// A manifest that names a subject, as the referrers query selects it.
#[derive(sqlx::FromRow)]
pub(super) struct ReferrerRow {
    digest: String,
    media_type: String,
    size: i64,
    artifact_type: Option<String>,
    /// A JSON object, as stored.
    annotations: Option<String>,
}

impl ReferrerRow {
    pub(super) fn into_referrer(self) -> Result<Referrer> {
        let annotations = self
            .annotations
            .map(|json| serde_json::from_str::<BTreeMap<String, String>>(&json))
            .transpose()
            .map_err(backend)?;
        Ok(Referrer {
            digest: parse_digest(&self.digest)?,
            media_type: self.media_type,
            size: from_db(self.size)?,
            artifact_type: self.artifact_type,
            annotations,
        })
    }
}

/// An upload session row, its times in seconds since the epoch.
#[derive(sqlx::FromRow)]
pub(super) struct UploadRow {
    id: String,
    repo: String,
    byte_offset: i64,
    hash_state: Vec<u8>,
    created_at: i64,
    updated_at: i64,
}

impl UploadRow {
    pub(super) fn into_session(self) -> Result<UploadSession> {
        Ok(UploadSession {
            id: self.id.parse().map_err(backend)?,
            repo: self.repo.parse().map_err(backend)?,
            offset: from_db(self.byte_offset)?,
            hash_state: self.hash_state,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// The names of a namespace's nested repositories as a range, `ns/` ≤ name < `ns0` (`0`
/// follows `/` in byte order): an index range scan, and no `LIKE` wildcard (`_` is one) to
/// escape.
pub(super) fn namespace_range(namespace: &str) -> (String, String) {
    (format!("{namespace}/"), format!("{namespace}0"))
}

/// What a repository deletion returned, parsed and sorted (before the caller commits, so a
/// row that cannot be named fails the whole deletion).
pub(super) fn deleted_repository(
    manifests: Vec<String>,
    tags: Vec<String>,
    blobs: Vec<String>,
) -> Result<DeletedRepository> {
    let mut deleted = DeletedRepository {
        manifests: manifests
            .iter()
            .map(|d| parse_digest(d))
            .collect::<Result<_>>()?,
        tags: tags
            .iter()
            .map(|t| t.parse::<Tag>().map_err(backend))
            .collect::<Result<_>>()?,
        blobs: blobs
            .iter()
            .map(|d| parse_digest(d))
            .collect::<Result<_>>()?,
    };
    deleted.manifests.sort();
    deleted.tags.sort();
    deleted.blobs.sort();
    Ok(deleted)
}
