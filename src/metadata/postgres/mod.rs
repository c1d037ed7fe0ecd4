//! The shared `MetadataStore`: PostgreSQL, for a cluster of core nodes on one database.
//!
//! # Schema
//! `migrations/postgres` mirrors the SQLite schema table for table (repositories, blobs,
//! repo_blobs, manifests, manifest_refs, tags, uploads, readiness, and the `AccountStore`'s
//! tables: `accounts.rs`), with `timestamptz` times
//! and the "C" collation on every name, so pagination is in byte order whatever the database's
//! locale. [`PgStore::connect`] refuses a schema with migrations this build does not know (a
//! newer node migrated it: [`SchemaError::Newer`]) and, unless it applies them itself
//! (`migrate`), one missing some of this build's ([`SchemaError::Behind`]).
//!
//! # Transactions and locking
//! Every trait method is one statement or one transaction, always at READ COMMITTED (set per
//! connection, whatever the database's default), so concurrent writers wait for each other's
//! row locks instead of failing. Where two nodes could otherwise interleave badly, the
//! statements take row locks in an order that keeps the tables consistent:
//! - `put_manifest` locks what it references (`FOR KEY SHARE` on the repository's links and
//!   child manifests, in the one query that checks them), upserts its manifest row (locking
//!   it, so a concurrent delete of the digest goes first or waits), then upserts its tags in
//!   sorted order. Two pushes of one tag serialise on the tag's row; the later commit wins.
//! - `collect_garbage` locks the candidates of its page `FOR UPDATE SKIP LOCKED` (a push
//!   holding a link is skipped, never waited for), then deletes them in a second statement that re-checks the
//!   conditions on a fresh snapshot: a push that committed a reference between the two is
//!   seen, one that comes later waits for the batch and finds the link gone.
//! - `link_blob` upserts the blob record with a no-op update, so a collection deleting that
//!   record either waits for the link or has committed and the record is re-created. Into an
//!   existing repository it is one statement that locks the repository row like
//!   `ensure_repo`; only a repository's first link (or one racing its deletion) takes the
//!   transaction that creates the row.
//!
//! Deadlocks (40P01) and serialization failures (40001) are retried up to three times, then
//! reported as `MetadataError::Conflict`.
//!
//! # Errors
//! One mapping (`errors::to_metadata_error`): no pooled connection within `acquire_timeout`,
//! I/O and TLS failures, connection exceptions (08), shutdowns (57P01..57P03), statement
//! timeouts (57014), too many connections (53300) and a read-only standby (25006) are
//! `Unavailable`; concurrency aborts left after the retries are `Conflict`; the rest is
//! `Backend`.
//!
//! # Clock
//! Every timestamp is the database's `now()` (the transaction's start), and
//! [`MetadataStore::now`] reads the same clock, so garbage-collection cutoffs computed on any
//! node compare against times written by every node.

mod accounts;
mod errors;
mod schema;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::PgConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use self::errors::{Failed, retrying, to_metadata_error};
pub use self::schema::SchemaError;
use super::rows::{
    ReferrerRow, UploadRow, backend, deleted_repository, from_db, limit, namespace_range,
    parse_digest, to_db,
};
use super::{
    DeletedRepository, GcBatch, GcCursor, GcPage, GcScans, ManifestRecord, MetadataError,
    MetadataStore, NewManifest, Referrer, Result, Timestamp, UploadSession, gc_batch,
};
use crate::oci::manifest::{Descriptor, ManifestInfo};
use crate::oci::{Digest, Reference, RepoName, Tag, UploadId};

/// How to reach the database and how hard to use it.
#[derive(Clone, PartialEq, Eq)]
pub struct PgSettings {
    /// `postgres://user:password@host:port/database?sslmode=...`; a schema other than the
    /// user's default goes in `options=-c search_path=<schema>`.
    pub url: String,
    /// The pool's size: this node's share of the server's `max_connections`.
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before it fails as unavailable.
    pub acquire_timeout: Duration,
    /// The server cancels any statement running longer (then: unavailable); `None` keeps the
    /// server's setting.
    pub statement_timeout: Option<Duration>,
    /// Apply this build's pending migrations at start-up.
    pub migrate: bool,
}

/// Settings end up in logs: the URL's password must not.
impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("url", &without_password(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("migrate", &self.migrate)
            .finish()
    }
}

/// `scheme://user:secret@host/...` → `scheme://user:***@host/...`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((credentials, host)) if credentials.contains(':') => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{path}")
        }
        _ => url.to_owned(),
    }
}

/// PostgreSQL-backed metadata. Cloning shares the pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Opens the pool and checks the schema against this build, applying pending migrations
    /// first when `settings.migrate` is set.
    pub async fn connect(settings: &PgSettings) -> Result<PgStore> {
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(connect_options(settings)?)
            .await
            .map_err(to_metadata_error)?;
        let store = PgStore { pool };
        if settings.migrate {
            store.migrate().await?;
        } else {
            let mut conn = store.pool.acquire().await.map_err(to_metadata_error)?;
            schema::check(&mut conn, false).await?;
        }
        Ok(store)
    }

    /// Applies this build's pending migrations (one node at a time: sqlx serialises them with
    /// an advisory lock). Fails with [`SchemaError::Newer`] on a schema a newer build migrated.
    pub async fn migrate(&self) -> Result<()> {
        schema::migrate(&self.pool).await
    }

    async fn link_blob_once(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: i64,
    ) -> Result<(), Failed> {
        if link_in_existing_repo(&self.pool, repo, digest, size).await? {
            return Ok(());
        }
        // The repository's first blob, or its row vanished under a concurrent deletion: the
        // same statement, once this transaction has created the row and holds it.
        let mut tx = self.pool.begin().await?;
        ensure_repo(&mut tx, repo).await?;
        if !link_in_existing_repo(&mut *tx, repo, digest, size).await? {
            return Err(sqlx::Error::RowNotFound.into());
        }
        tx.commit().await?;
        Ok(())
    }

    async fn put_manifest_once(
        &self,
        manifest: &NewManifest,
        row: &ManifestRow<'_>,
    ) -> Result<(), Failed> {
        let mut tx = self.pool.begin().await?;
        let repo_id = ensure_repo(&mut tx, &manifest.repo).await?;
        if let Some(refused) = check_references(&mut tx, repo_id, &manifest.info).await? {
            // Also undoes the repository row ensure_repo may have created.
            tx.rollback().await?;
            return Err(refused.into());
        }
        // The no-op update locks an existing row: a concurrent delete of this digest finishes
        // first (and the insert re-creates the row) or waits for this push. The first
        // stored body wins, as it must: same digest, same bytes.
        sqlx::query(
            "INSERT INTO manifests
                 (repo_id, digest, media_type, artifact_type, subject, annotations, size, body)
             VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8)
             ON CONFLICT (repo_id, digest) DO UPDATE SET media_type = manifests.media_type",
        )
        .bind(repo_id)
        .bind(manifest.digest.as_str())
        .bind(manifest.info.media_type)
        .bind(manifest.info.artifact_type.as_deref())
        .bind(manifest.info.subject.as_ref().map(Digest::as_str))
        .bind(row.annotations.as_deref())
        .bind(row.size)
        .bind(manifest.body.as_ref())
        .execute(&mut *tx)
        .await?;
        // The same digest always has the same references, so a re-put inserts nothing.
        sqlx::query(
            "INSERT INTO manifest_refs (repo_id, manifest_digest, target_digest, kind)
             SELECT $1, $2, r.target, r.kind FROM unnest($3::text[], $4::text[]) AS r(target, kind)
             ON CONFLICT DO NOTHING",
        )
        .bind(repo_id)
        .bind(manifest.digest.as_str())
        .bind(&row.ref_targets)
        .bind(&row.ref_kinds)
        .execute(&mut *tx)
        .await?;
        // Sorted and without repeats: one upsert may touch a row once, and a fixed locking
        // order keeps two pushes naming the same tags from deadlocking.
        sqlx::query(
            "INSERT INTO tags (repo_id, name, digest)
             SELECT $1, t.name, $3 FROM unnest($2::text[]) AS t(name)
             ON CONFLICT (repo_id, name) DO UPDATE SET digest = excluded.digest, updated_at = now()",
        )
        .bind(repo_id)
        .bind(&row.tags)
        .bind(manifest.digest.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_manifest_once(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<Vec<Tag>>, Failed> {
        let mut tx = self.pool.begin().await?;
        // Locking the manifest first orders this delete against a push of the same digest,
        // which locks the same row before its tags.
        let repo_id: Option<i64> = sqlx::query_scalar(
            "SELECT m.repo_id FROM repositories r JOIN manifests m ON m.repo_id = r.id
             WHERE r.name = $1 AND m.digest = $2
             FOR UPDATE OF m",
        )
        .bind(repo.as_str())
        .bind(digest.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(repo_id) = repo_id else {
            return Ok(None);
        };
        let mut tags: Vec<String> = sqlx::query_scalar(
            "DELETE FROM tags WHERE repo_id = $1 AND digest = $2 RETURNING name",
        )
        .bind(repo_id)
        .bind(digest.as_str())
        .fetch_all(&mut *tx)
        .await?;
        // Its references go with it (ON DELETE CASCADE).
        sqlx::query("DELETE FROM manifests WHERE repo_id = $1 AND digest = $2")
            .bind(repo_id)
            .bind(digest.as_str())
            .execute(&mut *tx)
            .await?;
        tags.sort();
        // Parse before committing, so an unnameable tag fails the whole deletion.
        let tags = tags
            .iter()
            .map(|t| t.parse::<Tag>().map_err(backend))
            .collect::<Result<Vec<_>>>()?;
        tx.commit().await?;
        Ok(Some(tags))
    }

    async fn delete_repository_once(
        &self,
        repo: &RepoName,
    ) -> Result<Option<DeletedRepository>, Failed> {
        let mut tx = self.pool.begin().await?;
        // The row lock waits for pushes holding the row (`ensure_repo`) and makes later ones
        // wait: once this commits they find the repository gone and create it anew.
        let repo_id: Option<i64> =
            sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1 FOR UPDATE")
                .bind(repo.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let Some(repo_id) = repo_id else {
            return Ok(None);
        };
        let tags: Vec<String> =
            sqlx::query_scalar("DELETE FROM tags WHERE repo_id = $1 RETURNING name")
                .bind(repo_id)
                .fetch_all(&mut *tx)
                .await?;
        // References go with their manifests (ON DELETE CASCADE).
        let manifests: Vec<String> =
            sqlx::query_scalar("DELETE FROM manifests WHERE repo_id = $1 RETURNING digest")
                .bind(repo_id)
                .fetch_all(&mut *tx)
                .await?;
        let blobs: Vec<String> =
            sqlx::query_scalar("DELETE FROM repo_blobs WHERE repo_id = $1 RETURNING digest")
                .bind(repo_id)
                .fetch_all(&mut *tx)
                .await?;
        sqlx::query("DELETE FROM repositories WHERE id = $1")
            .bind(repo_id)
            .execute(&mut *tx)
            .await?;
        let deleted = deleted_repository(manifests, tags, blobs)?;
        tx.commit().await?;
        Ok(Some(deleted))
    }

    async fn collect_garbage_once(
        &self,
        cutoff: Timestamp,
        batch: i64,
        cursor: &GcCursor,
    ) -> Result<GcBatch, Failed> {
        let mut tx = self.pool.begin().await?;
        let rows = gc_batch(&mut *tx, cursor, cutoff, batch).await?;
        let batch = rows.parsed().map_err(backend)?;
        tx.commit().await?;
        Ok(batch)
    }
}

/// The pool's connection options: the URL's, plus READ COMMITTED whatever the database's
/// default (the locking above is written for it) and the statement timeout.
fn connect_options(settings: &PgSettings) -> Result<PgConnectOptions> {
    let mut options: PgConnectOptions = settings.url.parse().map_err(backend)?;
    if options.get_application_name().is_none() {
        options = options.application_name("aerugo");
    }
    options = options.options([("default_transaction_isolation", "read committed")]);
    if let Some(timeout) = settings.statement_timeout {
        options = options.options([(
            "statement_timeout",
            format!("{}ms", timeout.as_millis().max(1)),
        )]);
    }
    Ok(options)
}

/// A manifest's columns and child rows, computed once for all attempts at the transaction.
struct ManifestRow<'a> {
    size: i64,
    annotations: Option<String>,
    ref_targets: Vec<&'a str>,
    ref_kinds: Vec<&'static str>,
    tags: Vec<&'a str>,
}

impl<'a> ManifestRow<'a> {
    fn of(manifest: &'a NewManifest) -> Result<ManifestRow<'a>> {
        let info = &manifest.info;
        let refs = info
            .blobs
            .iter()
            .map(|d| (d.digest.as_str(), "blob"))
            .chain(
                info.children
                    .iter()
                    .map(|d| (d.digest.as_str(), "manifest")),
            );
        let (ref_targets, ref_kinds) = refs.unzip();
        let mut tags: Vec<&str> = manifest.tags.iter().map(Tag::as_str).collect();
        tags.sort_unstable();
        tags.dedup();
        Ok(ManifestRow {
            size: i64::try_from(manifest.body.len()).map_err(backend)?,
            annotations: info
                .annotations
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(backend)?,
            ref_targets,
            ref_kinds,
            tags,
        })
    }
}

/// The repository's id, creating the repository when it is new.
async fn ensure_repo(conn: &mut PgConnection, repo: &RepoName) -> Result<i64, sqlx::Error> {
    // The key-share lock keeps the row until this transaction ends, and waits for a deletion
    // holding it: once that commits the row is not found and a new one is made, where a bare
    // read would hand out the id of a row about to vanish (a foreign-key failure later).
    const FIND: &str = "SELECT id FROM repositories WHERE name = $1 FOR KEY SHARE";
    const CREATE: &str =
        "INSERT INTO repositories (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id";
    // Another transaction may create the row between the two statements (the insert then
    // does nothing) and a deletion remove it again before the next look: a few rounds settle.
    for _ in 0..ENSURE_REPO_ROUNDS {
        for statement in [FIND, CREATE] {
            let id: Option<i64> = sqlx::query_scalar(statement)
                .bind(repo.as_str())
                .fetch_optional(&mut *conn)
                .await?;
            if let Some(id) = id {
                return Ok(id);
            }
        }
    }
    Err(sqlx::Error::RowNotFound)
}

/// A blob's link into a repository that exists, as one statement (one round trip; the link
/// as a transaction took five). The repository row is locked `FOR KEY SHARE` as in
/// [`ensure_repo`], and both upserts read from it, so nothing is written (and no row comes
/// back) when the repository is missing or a concurrent deletion removed it. The blob record
/// gets a no-op update rather than DO NOTHING: it locks the record, so a collection deleting
/// it either waits for this link or has committed, and then the insert re-creates it. The
/// first record's size wins: same digest, same bytes.
const LINK_IN_EXISTING_REPO: &str = "
    WITH repo AS (
        SELECT id FROM repositories WHERE name = $1 FOR KEY SHARE
    ), blob AS (
        INSERT INTO blobs (digest, size) SELECT $2, $3 FROM repo
        ON CONFLICT (digest) DO UPDATE SET size = blobs.size
        RETURNING digest
    )
    INSERT INTO repo_blobs (repo_id, digest) SELECT repo.id, blob.digest FROM repo, blob
    ON CONFLICT (repo_id, digest) DO UPDATE SET linked_at = now()
    RETURNING repo_id";

/// Runs [`LINK_IN_EXISTING_REPO`]; `false` when the repository was not there to link into.
async fn link_in_existing_repo<'e>(
    db: impl sqlx::PgExecutor<'e>,
    repo: &RepoName,
    digest: &Digest,
    size: i64,
) -> Result<bool, sqlx::Error> {
    let linked: Option<i64> = sqlx::query_scalar(LINK_IN_EXISTING_REPO)
        .bind(repo.as_str())
        .bind(digest.as_str())
        .bind(size)
        .fetch_optional(db)
        .await?;
    Ok(linked.is_some())
}

/// Rounds of [`ensure_repo`] before giving up on a repository created and deleted meanwhile.
const ENSURE_REPO_ROUNDS: usize = 8;

/// Every reference of a manifest in one query: the repository's links with their blob sizes,
/// and its manifests with their sizes, locked against deletion until the push commits.
const REFERENCES_IN_REPO: &str = "
    WITH linked AS (
        SELECT rb.digest, b.size FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest
        WHERE rb.repo_id = $1 AND rb.digest = ANY($2::text[])
        FOR KEY SHARE OF rb
    ), children AS (
        SELECT digest, size FROM manifests
        WHERE repo_id = $1 AND digest = ANY($3::text[])
        FOR KEY SHARE
    )
    SELECT 'blob' AS kind, digest, size FROM linked
    UNION ALL
    SELECT 'manifest' AS kind, digest, size FROM children";

/// Why the manifest cannot be stored, if it cannot: `MissingReferences` for what the
/// repository lacks, else `SizeMismatch` for the first descriptor with the wrong size.
async fn check_references(
    conn: &mut PgConnection,
    repo_id: i64,
    info: &ManifestInfo,
) -> Result<Option<MetadataError>, sqlx::Error> {
    if info.blobs.is_empty() && info.children.is_empty() {
        return Ok(None);
    }
    let digests = |ds: &[Descriptor]| {
        ds.iter()
            .map(|d| d.digest.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    let rows: Vec<(String, String, i64)> = sqlx::query_as(REFERENCES_IN_REPO)
        .bind(repo_id)
        .bind(digests(&info.blobs))
        .bind(digests(&info.children))
        .fetch_all(&mut *conn)
        .await?;
    let stored: HashMap<(String, String), i64> = rows
        .into_iter()
        .map(|(kind, digest, size)| ((kind, digest), size))
        .collect();
    Ok(refusal(info, &stored))
}

/// Each descriptor once (a layer listed twice is checked once; the same digest with two
/// sizes is still checked twice, so the wrong one is caught).
fn unique(descriptors: &[Descriptor]) -> impl Iterator<Item = &Descriptor> {
    let mut seen = HashSet::new();
    descriptors.iter().filter(move |d| seen.insert(*d))
}

fn refusal(info: &ManifestInfo, stored: &HashMap<(String, String), i64>) -> Option<MetadataError> {
    let mut missing = Vec::new();
    let mut wrong_size = None;
    let blobs = unique(&info.blobs).map(|d| ("blob", d));
    let children = unique(&info.children).map(|d| ("manifest", d));
    for (kind, descriptor) in blobs.chain(children) {
        let key = (kind.to_owned(), descriptor.digest.as_str().to_owned());
        match stored.get(&key).and_then(|s| u64::try_from(*s).ok()) {
            None => missing.push(descriptor.digest.clone()),
            Some(size) if size != descriptor.size => {
                wrong_size.get_or_insert(MetadataError::SizeMismatch {
                    digest: descriptor.digest.clone(),
                    declared: descriptor.size,
                    stored: size,
                });
            }
            Some(_) => {}
        }
    }
    if missing.is_empty() {
        wrong_size
    } else {
        Some(MetadataError::MissingReferences(missing))
    }
}

/// Each scan finds the last key of a full page first (where the next batch starts), then in
/// two statements removes what qualifies among the page's rows: the first locks candidates,
/// skipping rows a push holds; the second, on a fresh snapshot taken once the locks are ours,
/// sees every reference committed before and deletes only what is still unreferenced.
impl GcScans for PgConnection {
    type Error = sqlx::Error;

    async fn links_after(
        &mut self,
        cutoff: Timestamp,
        batch: i64,
        after: (i64, &str),
    ) -> Result<GcPage<(String, String), (i64, String)>, sqlx::Error> {
        const PAGE: &str = "SELECT repo_id, digest FROM repo_blobs
            WHERE (repo_id, digest) > ($1, $2) ORDER BY repo_id, digest";
        let last = sqlx::query_as(sqlx::AssertSqlSafe(format!("{PAGE} OFFSET $3 LIMIT 1")))
            .bind(after.0)
            .bind(after.1)
            .bind(batch - 1)
            .fetch_optional(&mut *self)
            .await?;
        let candidates: Vec<(i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT rb.repo_id, rb.digest FROM repo_blobs rb
             WHERE (rb.repo_id, rb.digest) IN (SELECT * FROM ({PAGE} LIMIT $3) AS page)
               AND {}
             FOR UPDATE OF rb SKIP LOCKED",
            unreferenced_link("$4")
        )))
        .bind(after.0)
        .bind(after.1)
        .bind(batch)
        .bind(cutoff)
        .fetch_all(&mut *self)
        .await?;
        if candidates.is_empty() {
            return Ok((Vec::new(), last));
        }
        let (repo_ids, digests): (Vec<i64>, Vec<String>) = candidates.into_iter().unzip();
        let removed = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "DELETE FROM repo_blobs rb
             USING repositories r, unnest($1::bigint[], $2::text[]) AS c(repo_id, digest)
             WHERE rb.repo_id = c.repo_id AND rb.digest = c.digest AND r.id = rb.repo_id
               AND {}
             RETURNING r.name, rb.digest",
            unreferenced_link("$3")
        )))
        .bind(repo_ids)
        .bind(digests)
        .bind(cutoff)
        .fetch_all(&mut *self)
        .await?;
        Ok((removed, last))
    }

    async fn blobs_after(
        &mut self,
        cutoff: Timestamp,
        batch: i64,
        after: &str,
    ) -> Result<GcPage<String, String>, sqlx::Error> {
        const PAGE: &str = "SELECT digest FROM blobs WHERE digest > $1 ORDER BY digest";
        let last = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("{PAGE} OFFSET $2 LIMIT 1")))
            .bind(after)
            .bind(batch - 1)
            .fetch_optional(&mut *self)
            .await?;
        let candidates: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT b.digest FROM blobs b
             WHERE b.digest IN (SELECT * FROM ({PAGE} LIMIT $2) AS page) AND {}
             FOR UPDATE OF b SKIP LOCKED",
            unused_blob("$3")
        )))
        .bind(after)
        .bind(batch)
        .bind(cutoff)
        .fetch_all(&mut *self)
        .await?;
        if candidates.is_empty() {
            return Ok((Vec::new(), last));
        }
        let removed = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "DELETE FROM blobs b WHERE b.digest = ANY($1::text[]) AND {} RETURNING b.digest",
            unused_blob("$2")
        )))
        .bind(candidates)
        .bind(cutoff)
        .fetch_all(&mut *self)
        .await?;
        Ok((removed, last))
    }
}

/// A link `rb` made before the cutoff (the parameter named) that no manifest of its
/// repository references: its grace period is over and nothing needs it.
fn unreferenced_link(cutoff: &str) -> String {
    format!(
        "rb.linked_at < to_timestamp({cutoff})
         AND NOT EXISTS (SELECT 1 FROM manifest_refs mr
                         WHERE mr.target_digest = rb.digest AND mr.kind = 'blob'
                           AND mr.repo_id = rb.repo_id)"
    )
}

/// A blob record `b` created before the cutoff (the parameter named) that nothing links or
/// references.
fn unused_blob(cutoff: &str) -> String {
    format!(
        "b.created_at < to_timestamp({cutoff})
         AND NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = b.digest)
         AND NOT EXISTS (SELECT 1 FROM manifest_refs mr
                         WHERE mr.target_digest = b.digest AND mr.kind = 'blob')"
    )
}

/// An upload row with its times as [`Timestamp`]s.
const UPLOAD_COLUMNS: &str = "id, repo, byte_offset, hash_state,
    floor(extract(epoch FROM created_at))::bigint AS created_at,
    floor(extract(epoch FROM updated_at))::bigint AS updated_at";

#[async_trait]
impl MetadataStore for PgStore {
    async fn ping(&self) -> Result<()> {
        // A write, so a standby left read-only by a failover is not ready.
        sqlx::query(
            "INSERT INTO readiness (id, checked_at) VALUES (1, now())
             ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
        )
        .execute(&self.pool)
        .await
        .map_err(to_metadata_error)?;
        Ok(())
    }

    async fn now(&self) -> Result<Timestamp> {
        sqlx::query_scalar("SELECT floor(extract(epoch FROM now()))::bigint")
            .fetch_one(&self.pool)
            .await
            .map_err(to_metadata_error)
    }

    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<()> {
        let size = to_db(size)?;
        retrying(|| self.link_blob_once(repo, digest, size)).await
    }

    async fn linked_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let size: Option<i64> = sqlx::query_scalar(
            "SELECT b.size FROM repositories r
             JOIN repo_blobs rb ON rb.repo_id = r.id
             JOIN blobs b ON b.digest = rb.digest
             WHERE r.name = $1 AND rb.digest = $2",
        )
        .bind(repo.as_str())
        .bind(digest.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(to_metadata_error)?;
        size.map(from_db).transpose()
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM repo_blobs
             WHERE repo_id = (SELECT id FROM repositories WHERE name = $1) AND digest = $2",
        )
        .bind(repo.as_str())
        .bind(digest.as_str())
        .execute(&self.pool)
        .await
        .map_err(to_metadata_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn blob_known(&self, digest: &Digest) -> Result<bool> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM blobs WHERE digest = $1)
                 OR EXISTS (SELECT 1 FROM repo_blobs WHERE digest = $1)
                 OR EXISTS (SELECT 1 FROM manifest_refs WHERE target_digest = $1 AND kind = 'blob')",
        )
        .bind(digest.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(to_metadata_error)
    }

    async fn put_manifest(&self, manifest: &NewManifest) -> Result<()> {
        let row = ManifestRow::of(manifest)?;
        retrying(|| self.put_manifest_once(manifest, &row)).await
    }

    async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<ManifestRecord>> {
        let row: Option<(String, String, Vec<u8>)> = match reference {
            Reference::Tag(tag) => sqlx::query_as(
                "SELECT m.digest, m.media_type, m.body FROM repositories r
                 JOIN tags t ON t.repo_id = r.id
                 JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest
                 WHERE r.name = $1 AND t.name = $2",
            )
            .bind(repo.as_str())
            .bind(tag.as_str()),
            Reference::Digest(digest) => sqlx::query_as(
                "SELECT m.digest, m.media_type, m.body FROM repositories r
                 JOIN manifests m ON m.repo_id = r.id
                 WHERE r.name = $1 AND m.digest = $2",
            )
            .bind(repo.as_str())
            .bind(digest.as_str()),
        }
        .fetch_optional(&self.pool)
        .await
        .map_err(to_metadata_error)?;
        row.map(|(digest, media_type, body)| {
            Ok(ManifestRecord {
                digest: parse_digest(&digest)?,
                media_type,
                body: Bytes::from(body),
            })
        })
        .transpose()
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<Option<Vec<Tag>>> {
        retrying(|| self.delete_manifest_once(repo, digest)).await
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM tags
             WHERE repo_id = (SELECT id FROM repositories WHERE name = $1) AND name = $2",
        )
        .bind(repo.as_str())
        .bind(tag.as_str())
        .execute(&self.pool)
        .await
        .map_err(to_metadata_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        limit_to: usize,
    ) -> Result<Option<Vec<String>>> {
        if limit_to == 0 {
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM repositories WHERE name = $1)")
                    .bind(repo.as_str())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(to_metadata_error)?;
            return Ok(exists.then(Vec::new));
        }
        // The outer join tells "no such repository" (no row) from "no tags" (one NULL row) in a
        // single statement. Every tag sorts after '', so that stands in for "from the start".
        // The page is a lateral subquery so that it always walks the (repo_id, name) index and
        // stops after `limit` rows: as a plain join, the planner sorted every tag of the
        // repository for the first page (`> ''` matches all), 5 ms at 10,000 tags against
        // 0.3 ms for the last page.
        let rows: Vec<Option<String>> = sqlx::query_scalar(
            "SELECT t.name FROM repositories r
             LEFT JOIN LATERAL (
                 SELECT name FROM tags
                 WHERE repo_id = r.id AND name > $2
                 ORDER BY name
                 LIMIT $3
             ) t ON true
             WHERE r.name = $1
             ORDER BY t.name",
        )
        .bind(repo.as_str())
        .bind(last.unwrap_or(""))
        .bind(limit(limit_to))
        .fetch_all(&self.pool)
        .await
        .map_err(to_metadata_error)?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(rows.into_iter().flatten().collect()))
    }

    async fn list_repositories(&self, last: Option<&str>, limit_to: usize) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT r.name FROM repositories r
             WHERE r.name > $1 AND EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = r.id)
             ORDER BY r.name
             LIMIT $2",
        )
        .bind(last.unwrap_or(""))
        .bind(limit(limit_to))
        .fetch_all(&self.pool)
        .await
        .map_err(to_metadata_error)
    }

    async fn list_referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        let rows: Vec<ReferrerRow> = sqlx::query_as(
            "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations::text AS annotations
             FROM repositories r
             JOIN manifests m ON m.repo_id = r.id
             WHERE r.name = $1 AND m.subject = $2
               AND ($3::text IS NULL OR m.artifact_type = $3)
             ORDER BY m.digest",
        )
        .bind(repo.as_str())
        .bind(subject.as_str())
        .bind(artifact_type)
        .fetch_all(&self.pool)
        .await
        .map_err(to_metadata_error)?;
        rows.into_iter().map(ReferrerRow::into_referrer).collect()
    }

    async fn create_upload(
        &self,
        id: &UploadId,
        repo: &RepoName,
        hash_state: &[u8],
    ) -> Result<UploadSession> {
        let row: UploadRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO uploads (id, repo, byte_offset, hash_state) VALUES ($1, $2, 0, $3)
             RETURNING {UPLOAD_COLUMNS}"
        )))
        .bind(id.as_str())
        .bind(repo.as_str())
        .bind(hash_state)
        .fetch_one(&self.pool)
        .await
        .map_err(to_metadata_error)?;
        row.into_session()
    }

    async fn get_upload(&self, repo: &RepoName, id: &UploadId) -> Result<Option<UploadSession>> {
        let row: Option<UploadRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = $1 AND repo = $2"
        )))
        .bind(id.as_str())
        .bind(repo.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(to_metadata_error)?;
        row.map(UploadRow::into_session).transpose()
    }

    async fn advance_upload(
        &self,
        id: &UploadId,
        expected_offset: u64,
        new_offset: u64,
        hash_state: &[u8],
    ) -> Result<bool> {
        // Compare-and-set on the offset: of two requests racing on one session, the second
        // waits for the first's row lock, re-reads the row and no longer matches.
        let done = sqlx::query(
            "UPDATE uploads SET byte_offset = $1, hash_state = $2, updated_at = now()
             WHERE id = $3 AND byte_offset = $4",
        )
        .bind(to_db(new_offset)?)
        .bind(hash_state)
        .bind(id.as_str())
        .bind(to_db(expected_offset)?)
        .execute(&self.pool)
        .await
        .map_err(to_metadata_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_upload(&self, id: &UploadId) -> Result<bool> {
        let done = sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(to_metadata_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_uploads(
        &self,
        after: Option<&UploadId>,
        limit_to: usize,
    ) -> Result<Vec<UploadSession>> {
        let rows: Vec<UploadRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id > $1 ORDER BY id LIMIT $2"
        )))
        .bind(after.map_or("", UploadId::as_str))
        .bind(limit(limit_to))
        .fetch_all(&self.pool)
        .await
        .map_err(to_metadata_error)?;
        rows.into_iter().map(UploadRow::into_session).collect()
    }

    async fn collect_garbage(
        &self,
        cutoff: Timestamp,
        limit_to: usize,
        cursor: &GcCursor,
    ) -> Result<GcBatch> {
        let batch = limit(limit_to);
        retrying(|| self.collect_garbage_once(cutoff, batch, cursor)).await
    }

    async fn repository_size(&self, repo: &RepoName) -> Result<u64> {
        let size: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(b.size), 0)::bigint FROM repositories r
             JOIN repo_blobs rb ON rb.repo_id = r.id
             JOIN blobs b ON b.digest = rb.digest
             WHERE r.name = $1",
        )
        .bind(repo.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(to_metadata_error)?;
        from_db(size)
    }

    async fn namespace_usage(&self, namespace: &str) -> Result<u64> {
        let (from, to) = namespace_range(namespace);
        let size: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(size), 0)::bigint FROM blobs WHERE digest IN (
                 SELECT rb.digest FROM repositories r JOIN repo_blobs rb ON rb.repo_id = r.id
                 WHERE r.name = $1 OR (r.name >= $2 AND r.name < $3))",
        )
        .bind(namespace)
        .bind(from)
        .bind(to)
        .fetch_one(&self.pool)
        .await
        .map_err(to_metadata_error)?;
        from_db(size)
    }

    async fn namespace_repositories(
        &self,
        namespace: &str,
        limit_to: usize,
    ) -> Result<Vec<String>> {
        let (from, to) = namespace_range(namespace);
        sqlx::query_scalar(
            "SELECT name FROM repositories WHERE name = $1 OR (name >= $2 AND name < $3)
             ORDER BY name LIMIT $4",
        )
        .bind(namespace)
        .bind(from)
        .bind(to)
        .bind(limit(limit_to))
        .fetch_all(&self.pool)
        .await
        .map_err(to_metadata_error)
    }

    async fn namespace_holds_blob(&self, namespace: &str, digest: &Digest) -> Result<bool> {
        let (from, to) = namespace_range(namespace);
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM repositories r JOIN repo_blobs rb ON rb.repo_id = r.id
                 WHERE rb.digest = $1 AND (r.name = $2 OR (r.name >= $3 AND r.name < $4)))",
        )
        .bind(digest.as_str())
        .bind(namespace)
        .bind(from)
        .bind(to)
        .fetch_one(&self.pool)
        .await
        .map_err(to_metadata_error)
    }

    async fn delete_repository(&self, repo: &RepoName) -> Result<Option<DeletedRepository>> {
        retrying(|| self.delete_repository_once(repo)).await
    }
}
