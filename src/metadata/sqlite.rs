//! The embedded `MetadataStore`: one SQLite file (WAL) holding repositories, blob links,
//! manifests and their references, tags and upload sessions.
//!
//! Owns the schema (`migrations/sqlite`) and every SQL statement run against it. Writes go
//! through a single-connection pool, so they queue inside the process instead of failing with
//! `SQLITE_BUSY`; reads use their own pool and, thanks to WAL, never wait for a writer. Each
//! trait method is one statement or one `BEGIN IMMEDIATE` transaction. The same store is the
//! embedded `AccountStore` (`accounts.rs`).

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, Sqlite, Transaction};

use super::rows::{
    ReferrerRow, UploadRow, backend, deleted_repository, from_db, limit, namespace_range,
    parse_digest, to_db,
};
use super::{
    DeletedRepository, GcBatch, GcCursor, GcPage, GcScans, ManifestRecord, MetadataError,
    MetadataStore, NewManifest, Referrer, Result, Timestamp, UploadSession, gc_batch,
    system_now as now,
};
use crate::oci::manifest::Descriptor;
use crate::oci::{Digest, Reference, RepoName, Tag, UploadId};

mod accounts;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// Long enough to ride out another process's checkpoint, short enough to surface a wedged lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// SQLite-backed metadata. Cloning shares the pools.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    read: SqlitePool,
    /// Exactly one connection: the queue that serialises writers.
    write: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path` and brings its schema up to date,
    /// with at most `max_readers` read connections beside the one writer.
    pub async fn open(path: &Path, max_readers: u32) -> Result<SqliteStore> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent).await.map_err(backend)?;
        }
        let base = SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);

        let write_options = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            // A local file does not go stale like a socket; pinging first would only add a
            // round trip to every query.
            .test_before_acquire(false)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .after_release(|conn, _| Box::pin(discard_if_in_transaction(conn)))
            .connect_with(write_options)
            .await
            .map_err(backend)?;
        MIGRATOR.run(&write).await.map_err(backend)?;

        // The file is in WAL mode by now (the mode is persistent); `query_only` keeps a stray
        // write from ever taking the write lock behind the writer pool's back.
        let read_options = base.pragma("query_only", "ON");
        let read = SqlitePoolOptions::new()
            .max_connections(max_readers.max(1))
            .test_before_acquire(false)
            .connect_with(read_options)
            .await
            .map_err(backend)?;
        Ok(SqliteStore { read, write })
    }

    /// A private in-memory database for tests. One connection serves reads and writes, since
    /// every SQLite connection to `:memory:` would otherwise see its own empty database.
    pub async fn in_memory() -> Result<SqliteStore> {
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            // Closing the only connection would drop the database with it.
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(backend)?;
        MIGRATOR.run(&pool).await.map_err(backend)?;
        Ok(SqliteStore {
            read: pool.clone(),
            write: pool,
        })
    }

    /// A write transaction that takes the lock up front, so a read-then-write transaction
    /// cannot fail half way when another process holds the file.
    async fn begin(&self) -> Result<Transaction<'static, Sqlite>> {
        self.write
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)
    }
}

/// `false` (close it; the pool opens a fresh one) for a writer handed back while sqlx still
/// counts it inside a transaction. That happens when SQLite rolled a transaction back by
/// itself (`SQLITE_FULL`, an I/O error) so sqlx's own `ROLLBACK` failed: kept, the connection
/// would refuse every later `BEGIN` until a restart. The ping first lets a rollback queued by
/// a dropped transaction finish.
async fn discard_if_in_transaction(conn: &mut SqliteConnection) -> sqlx::Result<bool> {
    conn.ping().await?;
    let healthy = !conn.is_in_transaction();
    if !healthy {
        tracing::warn!(
            "discarding the metadata writer connection left inside a failed transaction"
        );
    }
    Ok(healthy)
}

/// The repository's id, creating the repository when it is new.
async fn ensure_repo(
    tx: &mut Transaction<'static, Sqlite>,
    repo: &RepoName,
    at: Timestamp,
) -> Result<i64> {
    // The no-op update makes RETURNING yield the id of an existing row too.
    sqlx::query_scalar(
        "INSERT INTO repositories (name, created_at) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET name = excluded.name
         RETURNING id",
    )
    .bind(repo.as_str())
    .bind(at)
    .fetch_one(&mut **tx)
    .await
    .map_err(backend)
}

/// Digests in first-seen order without repeats (a layer may be listed twice).
/// Each descriptor once (a layer listed twice is checked once; the same digest with two
/// sizes is still checked twice, so the wrong one is caught).
fn unique<'a>(descriptors: &'a [Descriptor]) -> impl Iterator<Item = &'a Descriptor> + 'a {
    let mut seen = HashSet::new();
    descriptors.iter().filter(move |d| seen.insert(*d))
}

/// A blob's link as one query, so one round trip to the SQLite worker instead of three (a small
/// push waits for each): the repository, the blob's record (the first wins: same digest, same
/// bytes, and GC ages blobs from their creation), then the link. The statements share the
/// numbered parameters: ?1 repository, ?2 digest, ?3 size, ?4 now. Run inside `BEGIN
/// IMMEDIATE`, which no other writer interleaves with.
const LINK_BLOB: &str = "
    INSERT INTO repositories (name, created_at) VALUES (?1, ?4) ON CONFLICT (name) DO NOTHING;
    INSERT INTO blobs (digest, size, created_at) VALUES (?2, ?3, ?4)
        ON CONFLICT (digest) DO NOTHING;
    INSERT INTO repo_blobs (repo_id, digest, linked_at)
        SELECT id, ?2, ?4 FROM repositories WHERE name = ?1
        ON CONFLICT (repo_id, digest) DO UPDATE SET linked_at = excluded.linked_at;";

const BLOB_SIZE_IN_REPO: &str =
    "SELECT b.size FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest
     WHERE rb.repo_id = ?1 AND rb.digest = ?2";
const MANIFEST_SIZE_IN_REPO: &str = "SELECT size FROM manifests WHERE repo_id = ?1 AND digest = ?2";

#[async_trait]
impl MetadataStore for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.read)
            .await
            .map_err(backend)?;
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO readiness (id, checked_at) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
        )
        .bind(now())
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    async fn now(&self) -> Result<Timestamp> {
        Ok(now())
    }

    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(LINK_BLOB)
            .bind(repo.as_str())
            .bind(digest.as_str())
            .bind(to_db(size)?)
            .bind(now())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    async fn linked_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let size: Option<i64> = sqlx::query_scalar(
            "SELECT b.size FROM repositories r
             JOIN repo_blobs rb ON rb.repo_id = r.id
             JOIN blobs b ON b.digest = rb.digest
             WHERE r.name = ?1 AND rb.digest = ?2",
        )
        .bind(repo.as_str())
        .bind(digest.as_str())
        .fetch_optional(&self.read)
        .await
        .map_err(backend)?;
        size.map(from_db).transpose()
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM repo_blobs
             WHERE repo_id = (SELECT id FROM repositories WHERE name = ?1) AND digest = ?2",
        )
        .bind(repo.as_str())
        .bind(digest.as_str())
        .execute(&self.write)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn blob_known(&self, digest: &Digest) -> Result<bool> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM blobs WHERE digest = ?1)
                 OR EXISTS (SELECT 1 FROM repo_blobs WHERE digest = ?1)
                 OR EXISTS (SELECT 1 FROM manifest_refs WHERE target_digest = ?1 AND kind = 'blob')",
        )
        .bind(digest.as_str())
        .fetch_one(&self.read)
        .await
        .map_err(backend)
    }

    async fn put_manifest(&self, manifest: &NewManifest) -> Result<()> {
        let info = &manifest.info;
        let size = i64::try_from(manifest.body.len()).map_err(backend)?;
        let annotations = info
            .annotations
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(backend)?;
        let at = now();

        let mut tx = self.begin().await?;
        let repo_id = ensure_repo(&mut tx, &manifest.repo, at).await?;

        let mut missing = Vec::new();
        let mut wrong_size = None;
        let blobs = unique(&info.blobs).map(|d| (d, BLOB_SIZE_IN_REPO));
        let children = unique(&info.children).map(|d| (d, MANIFEST_SIZE_IN_REPO));
        for (descriptor, size_query) in blobs.chain(children) {
            let stored: Option<i64> = sqlx::query_scalar(size_query)
                .bind(repo_id)
                .bind(descriptor.digest.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
            match stored.and_then(|s| u64::try_from(s).ok()) {
                None => missing.push(descriptor.digest.clone()),
                Some(stored) if stored != descriptor.size => {
                    wrong_size.get_or_insert(MetadataError::SizeMismatch {
                        digest: descriptor.digest.clone(),
                        declared: descriptor.size,
                        stored,
                    });
                }
                Some(_) => {}
            }
        }
        let refused = if missing.is_empty() {
            wrong_size
        } else {
            Some(MetadataError::MissingReferences(missing))
        };
        if let Some(refused) = refused {
            // Also undoes the repository row ensure_repo may have created.
            tx.rollback().await.map_err(backend)?;
            return Err(refused);
        }

        sqlx::query(
            "INSERT INTO manifests
                 (repo_id, digest, media_type, artifact_type, subject, annotations, size, body, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (repo_id, digest) DO NOTHING",
        )
        .bind(repo_id)
        .bind(manifest.digest.as_str())
        .bind(info.media_type)
        .bind(info.artifact_type.as_deref())
        .bind(info.subject.as_ref().map(Digest::as_str))
        .bind(annotations)
        .bind(size)
        .bind(manifest.body.as_ref())
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;

        sqlx::query("DELETE FROM manifest_refs WHERE repo_id = ?1 AND manifest_digest = ?2")
            .bind(repo_id)
            .bind(manifest.digest.as_str())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let refs = info
            .blobs
            .iter()
            .map(|d| (&d.digest, "blob"))
            .chain(info.children.iter().map(|d| (&d.digest, "manifest")));
        for (target, kind) in refs {
            sqlx::query(
                "INSERT INTO manifest_refs (repo_id, manifest_digest, target_digest, kind) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT DO NOTHING",
            )
            .bind(repo_id)
            .bind(manifest.digest.as_str())
            .bind(target.as_str())
            .bind(kind)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }

        for tag in &manifest.tags {
            sqlx::query(
                "INSERT INTO tags (repo_id, name, digest, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (repo_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
            )
            .bind(repo_id)
            .bind(tag.as_str())
            .bind(manifest.digest.as_str())
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
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
                 WHERE r.name = ?1 AND t.name = ?2",
            )
            .bind(repo.as_str())
            .bind(tag.as_str()),
            Reference::Digest(digest) => sqlx::query_as(
                "SELECT m.digest, m.media_type, m.body FROM repositories r
                 JOIN manifests m ON m.repo_id = r.id
                 WHERE r.name = ?1 AND m.digest = ?2",
            )
            .bind(repo.as_str())
            .bind(digest.as_str()),
        }
        .fetch_optional(&self.read)
        .await
        .map_err(backend)?;
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
        let mut tx = self.begin().await?;
        let repo_id: Option<i64> =
            sqlx::query_scalar("SELECT id FROM repositories WHERE name = ?1")
                .bind(repo.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        let Some(repo_id) = repo_id else {
            return Ok(None);
        };
        // Tags and refs first: they name the manifest through foreign keys.
        let mut tags: Vec<String> = sqlx::query_scalar(
            "DELETE FROM tags WHERE repo_id = ?1 AND digest = ?2 RETURNING name",
        )
        .bind(repo_id)
        .bind(digest.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        sqlx::query("DELETE FROM manifest_refs WHERE repo_id = ?1 AND manifest_digest = ?2")
            .bind(repo_id)
            .bind(digest.as_str())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let done = sqlx::query("DELETE FROM manifests WHERE repo_id = ?1 AND digest = ?2")
            .bind(repo_id)
            .bind(digest.as_str())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        if done.rows_affected() == 0 {
            // No manifest means no tags could point at it; nothing to keep.
            return Ok(None);
        }
        tags.sort();
        // Parse before committing, so an unnameable tag fails the whole deletion.
        let tags = tags
            .iter()
            .map(|t| t.parse::<Tag>().map_err(backend))
            .collect::<Result<Vec<_>>>()?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(tags))
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM tags WHERE repo_id = (SELECT id FROM repositories WHERE name = ?1) AND name = ?2",
        )
        .bind(repo.as_str())
        .bind(tag.as_str())
        .execute(&self.write)
        .await
        .map_err(backend)?;
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
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM repositories WHERE name = ?1)")
                    .bind(repo.as_str())
                    .fetch_one(&self.read)
                    .await
                    .map_err(backend)?;
            return Ok(exists.then(Vec::new));
        }
        // The outer join tells "no such repository" (no row) from "no tags" (one NULL row) in a
        // single statement. Every tag sorts after '', so that stands in for "from the start".
        let rows: Vec<Option<String>> = sqlx::query_scalar(
            "SELECT t.name FROM repositories r
             LEFT JOIN tags t ON t.repo_id = r.id AND t.name > ?2
             WHERE r.name = ?1
             ORDER BY t.name
             LIMIT ?3",
        )
        .bind(repo.as_str())
        .bind(last.unwrap_or(""))
        .bind(limit(limit_to))
        .fetch_all(&self.read)
        .await
        .map_err(backend)?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(rows.into_iter().flatten().collect()))
    }

    async fn list_repositories(&self, last: Option<&str>, limit_to: usize) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT r.name FROM repositories r
             WHERE r.name > ?1 AND EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = r.id)
             ORDER BY r.name
             LIMIT ?2",
        )
        .bind(last.unwrap_or(""))
        .bind(limit(limit_to))
        .fetch_all(&self.read)
        .await
        .map_err(backend)
    }

    async fn list_referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        let rows: Vec<ReferrerRow> = sqlx::query_as(
            "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations FROM repositories r
             JOIN manifests m ON m.repo_id = r.id
             WHERE r.name = ?1 AND m.subject = ?2 AND (?3 IS NULL OR m.artifact_type = ?3)
             ORDER BY m.digest",
        )
        .bind(repo.as_str())
        .bind(subject.as_str())
        .bind(artifact_type)
        .fetch_all(&self.read)
        .await
        .map_err(backend)?;
        rows.into_iter().map(ReferrerRow::into_referrer).collect()
    }

    async fn create_upload(
        &self,
        id: &UploadId,
        repo: &RepoName,
        hash_state: &[u8],
    ) -> Result<UploadSession> {
        let at = now();
        sqlx::query(
            "INSERT INTO uploads (id, repo, byte_offset, hash_state, created_at, updated_at)
             VALUES (?1, ?2, 0, ?3, ?4, ?4)",
        )
        .bind(id.as_str())
        .bind(repo.as_str())
        .bind(hash_state)
        .bind(at)
        .execute(&self.write)
        .await
        .map_err(backend)?;
        Ok(UploadSession {
            id: id.clone(),
            repo: repo.clone(),
            offset: 0,
            hash_state: hash_state.to_vec(),
            created_at: at,
            updated_at: at,
        })
    }

    async fn list_uploads(
        &self,
        after: Option<&UploadId>,
        limit_to: usize,
    ) -> Result<Vec<UploadSession>> {
        let rows: Vec<UploadRow> = sqlx::query_as(
            "SELECT id, repo, byte_offset, hash_state, created_at, updated_at FROM uploads
             WHERE id > ?1 ORDER BY id LIMIT ?2",
        )
        .bind(after.map_or("", UploadId::as_str))
        .bind(limit(limit_to))
        .fetch_all(&self.read)
        .await
        .map_err(backend)?;
        rows.into_iter().map(UploadRow::into_session).collect()
    }

    async fn get_upload(&self, repo: &RepoName, id: &UploadId) -> Result<Option<UploadSession>> {
        let row: Option<UploadRow> = sqlx::query_as(
            "SELECT id, repo, byte_offset, hash_state, created_at, updated_at FROM uploads
             WHERE id = ?1 AND repo = ?2",
        )
        .bind(id.as_str())
        .bind(repo.as_str())
        .fetch_optional(&self.read)
        .await
        .map_err(backend)?;
        row.map(UploadRow::into_session).transpose()
    }

    async fn advance_upload(
        &self,
        id: &UploadId,
        expected_offset: u64,
        new_offset: u64,
        hash_state: &[u8],
    ) -> Result<bool> {
        // Compare-and-set on the offset: of two requests racing on one session, one wins.
        let done = sqlx::query(
            "UPDATE uploads SET byte_offset = ?1, hash_state = ?2, updated_at = ?3
             WHERE id = ?4 AND byte_offset = ?5",
        )
        .bind(to_db(new_offset)?)
        .bind(hash_state)
        .bind(now())
        .bind(id.as_str())
        .bind(to_db(expected_offset)?)
        .execute(&self.write)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_upload(&self, id: &UploadId) -> Result<bool> {
        let done = sqlx::query("DELETE FROM uploads WHERE id = ?1")
            .bind(id.as_str())
            .execute(&self.write)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn collect_garbage(
        &self,
        cutoff: Timestamp,
        limit_to: usize,
        cursor: &GcCursor,
    ) -> Result<GcBatch> {
        let mut tx = self.begin().await?;
        let rows = gc_batch(&mut *tx, cursor, cutoff, limit(limit_to)).await?;
        let batch = rows.parsed().map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(batch)
    }

    async fn repository_size(&self, repo: &RepoName) -> Result<u64> {
        let size: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(b.size), 0) FROM repositories r
             JOIN repo_blobs rb ON rb.repo_id = r.id
             JOIN blobs b ON b.digest = rb.digest
             WHERE r.name = ?1",
        )
        .bind(repo.as_str())
        .fetch_one(&self.read)
        .await
        .map_err(backend)?;
        from_db(size)
    }

    async fn namespace_usage(&self, namespace: &str) -> Result<u64> {
        let (from, to) = namespace_range(namespace);
        let size: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(size), 0) FROM blobs WHERE digest IN (
                 SELECT rb.digest FROM repositories r JOIN repo_blobs rb ON rb.repo_id = r.id
                 WHERE r.name = ?1 OR (r.name >= ?2 AND r.name < ?3))",
        )
        .bind(namespace)
        .bind(from)
        .bind(to)
        .fetch_one(&self.read)
        .await
        .map_err(backend)?;
        from_db(size)
    }

    async fn namespace_repositories(
        &self,
        namespace: &str,
        limit_to: usize,
    ) -> Result<Vec<String>> {
        let (from, to) = namespace_range(namespace);
        sqlx::query_scalar(
            "SELECT name FROM repositories WHERE name = ?1 OR (name >= ?2 AND name < ?3)
             ORDER BY name LIMIT ?4",
        )
        .bind(namespace)
        .bind(from)
        .bind(to)
        .bind(limit(limit_to))
        .fetch_all(&self.read)
        .await
        .map_err(backend)
    }

    async fn namespace_holds_blob(&self, namespace: &str, digest: &Digest) -> Result<bool> {
        let (from, to) = namespace_range(namespace);
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM repositories r JOIN repo_blobs rb ON rb.repo_id = r.id
                 WHERE rb.digest = ?1 AND (r.name = ?2 OR (r.name >= ?3 AND r.name < ?4)))",
        )
        .bind(digest.as_str())
        .bind(namespace)
        .bind(from)
        .bind(to)
        .fetch_one(&self.read)
        .await
        .map_err(backend)
    }

    async fn delete_repository(&self, repo: &RepoName) -> Result<Option<DeletedRepository>> {
        let mut tx = self.begin().await?;
        let repo_id: Option<i64> =
            sqlx::query_scalar("SELECT id FROM repositories WHERE name = ?1")
                .bind(repo.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        let Some(repo_id) = repo_id else {
            return Ok(None);
        };
        // In foreign-key order: what names a manifest, the manifests, the links, the row.
        let tags: Vec<String> =
            sqlx::query_scalar("DELETE FROM tags WHERE repo_id = ?1 RETURNING name")
                .bind(repo_id)
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?;
        sqlx::query("DELETE FROM manifest_refs WHERE repo_id = ?1")
            .bind(repo_id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let manifests: Vec<String> =
            sqlx::query_scalar("DELETE FROM manifests WHERE repo_id = ?1 RETURNING digest")
                .bind(repo_id)
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?;
        let blobs: Vec<String> =
            sqlx::query_scalar("DELETE FROM repo_blobs WHERE repo_id = ?1 RETURNING digest")
                .bind(repo_id)
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?;
        sqlx::query("DELETE FROM repositories WHERE id = ?1")
            .bind(repo_id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let deleted = deleted_repository(manifests, tags, blobs)?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(deleted))
    }
}

/// Each scan finds the last key of a full page first (that is where the next batch starts),
/// then removes what qualifies among the page's rows, read through the primary key.
impl GcScans for SqliteConnection {
    type Error = MetadataError;

    async fn links_after(
        &mut self,
        cutoff: Timestamp,
        batch: i64,
        after: (i64, &str),
    ) -> Result<GcPage<(String, String), (i64, String)>> {
        let last = sqlx::query_as(
            "SELECT repo_id, digest FROM repo_blobs WHERE (repo_id, digest) > (?1, ?2)
             ORDER BY repo_id, digest LIMIT 1 OFFSET ?3",
        )
        .bind(after.0)
        .bind(after.1)
        .bind(batch - 1)
        .fetch_optional(&mut *self)
        .await
        .map_err(backend)?;
        // A link survives while a manifest of its own repository needs it, or while it is
        // young (an image is pushed blobs first, manifest last).
        let removed = sqlx::query_as(
            "WITH page AS (
                 SELECT repo_id, digest, linked_at FROM repo_blobs
                 WHERE (repo_id, digest) > (?1, ?2) ORDER BY repo_id, digest LIMIT ?3)
             DELETE FROM repo_blobs
             WHERE (repo_id, digest) IN (
                 SELECT p.repo_id, p.digest FROM page p
                 WHERE p.linked_at < ?4
                   AND NOT EXISTS (SELECT 1 FROM manifest_refs mr
                                   WHERE mr.target_digest = p.digest
                                     AND mr.kind = 'blob'
                                     AND mr.repo_id = p.repo_id))
             RETURNING (SELECT name FROM repositories r WHERE r.id = repo_id), digest",
        )
        .bind(after.0)
        .bind(after.1)
        .bind(batch)
        .bind(cutoff)
        .fetch_all(&mut *self)
        .await
        .map_err(backend)?;
        Ok((removed, last))
    }

    async fn blobs_after(
        &mut self,
        cutoff: Timestamp,
        batch: i64,
        after: &str,
    ) -> Result<GcPage<String, String>> {
        let last = sqlx::query_scalar(
            "SELECT digest FROM blobs WHERE digest > ?1 ORDER BY digest LIMIT 1 OFFSET ?2",
        )
        .bind(after)
        .bind(batch - 1)
        .fetch_optional(&mut *self)
        .await
        .map_err(backend)?;
        let removed = sqlx::query_scalar(
            "WITH page AS (
                 SELECT digest, created_at FROM blobs
                 WHERE digest > ?1 ORDER BY digest LIMIT ?2)
             DELETE FROM blobs
             WHERE digest IN (
                 SELECT p.digest FROM page p
                 WHERE p.created_at < ?3
                   AND NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = p.digest)
                   AND NOT EXISTS (SELECT 1 FROM manifest_refs mr
                                   WHERE mr.target_digest = p.digest AND mr.kind = 'blob'))
             RETURNING digest",
        )
        .bind(after)
        .bind(batch)
        .bind(cutoff)
        .fetch_all(&mut *self)
        .await
        .map_err(backend)?;
        Ok((removed, last))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const TEST_READERS: u32 = 4;

    async fn memory_store() -> Option<(Arc<dyn MetadataStore>, ())> {
        let store = SqliteStore::in_memory().await.expect("in-memory store");
        Some((Arc::new(store), ()))
    }

    async fn disk_store() -> Option<(Arc<dyn MetadataStore>, tempfile::TempDir)> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("meta/aerugo.db"), TEST_READERS)
            .await
            .expect("file store");
        Some((Arc::new(store), dir))
    }

    mod in_memory {
        crate::metadata::conformance::metadata_conformance!(super::memory_store);
    }

    mod on_disk {
        crate::metadata::conformance::metadata_conformance!(super::disk_store);
    }

    fn digest(seed: &str) -> Digest {
        Digest::sha256_of(seed.as_bytes())
    }

    #[tokio::test]
    async fn data_survives_reopening() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nested/dir/aerugo.db");
        let repo: RepoName = "team/app".parse().expect("repo");
        {
            let store = SqliteStore::open(&path, TEST_READERS).await.expect("open");
            store.link_blob(&repo, &digest("a"), 3).await.expect("link");
        }
        let store = SqliteStore::open(&path, TEST_READERS)
            .await
            .expect("reopen runs migrations idempotently");
        assert_eq!(
            store
                .linked_blob(&repo, &digest("a"))
                .await
                .expect("linked"),
            Some(3)
        );
    }

    #[tokio::test]
    async fn sizes_beyond_i64_are_errors_not_panics() {
        let store = SqliteStore::in_memory().await.expect("store");
        let repo: RepoName = "app".parse().expect("repo");
        let err = store.link_blob(&repo, &digest("big"), u64::MAX).await;
        assert!(matches!(err, Err(MetadataError::Backend(_))), "{err:?}");
        let id = UploadId::generate();
        store.create_upload(&id, &repo, b"").await.expect("create");
        let err = store.advance_upload(&id, 0, u64::MAX, b"").await;
        assert!(matches!(err, Err(MetadataError::Backend(_))), "{err:?}");
    }

    #[tokio::test]
    async fn writes_are_visible_to_readers_at_once() {
        // Reads and writes use different pools on disk; a commit must be seen by the next read.
        let (store, _dir) = disk_store().await.expect("disk store");
        let repo: RepoName = "app".parse().expect("repo");
        for i in 0..20u64 {
            let d = digest(&format!("blob-{i}"));
            store.link_blob(&repo, &d, i).await.expect("link");
            assert_eq!(store.linked_blob(&repo, &d).await.expect("read"), Some(i));
        }
    }

    /// A full disk (here: `max_page_count` at the current size, which fails writes with
    /// `SQLITE_FULL` just as ENOSPC does) fails the write that hit it, and only that one: once
    /// there is room again, the next write succeeds without a restart.
    #[tokio::test]
    async fn a_write_that_hits_a_full_disk_does_not_break_later_writes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("aerugo.db"), TEST_READERS)
            .await
            .expect("open");
        let repo: RepoName = "app".parse().expect("repo");
        store
            .link_blob(&repo, &digest("first"), 1)
            .await
            .expect("link");
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&store.write)
            .await
            .expect("page_count");
        // An integer read back from SQLite: nothing to inject.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA max_page_count = {pages}"
        )))
        .execute(&store.write)
        .await
        .expect("cap the file");

        let mut failed = false;
        for i in 0..2000 {
            if store
                .link_blob(&repo, &digest(&format!("fill-{i}")), i)
                .await
                .is_err()
            {
                failed = true;
                break;
            }
        }
        assert!(failed, "the capped database never filled up");

        // Room again: on the writer connection, whichever one the pool now holds.
        sqlx::query("PRAGMA max_page_count = 1073741823")
            .execute(&store.write)
            .await
            .expect("uncap the file");
        store
            .link_blob(&repo, &digest("after"), 2)
            .await
            .expect("a write after the disk has room again");
        assert_eq!(
            store
                .linked_blob(&repo, &digest("after"))
                .await
                .expect("read"),
            Some(2)
        );
        store.ping().await.expect("ready again");
    }

    /// `database.max_connections` sizes the read pool; the writer stays a single connection.
    #[tokio::test]
    async fn the_read_pool_has_the_configured_size() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("aerugo.db"), 3)
            .await
            .expect("open");
        assert_eq!(store.read.options().get_max_connections(), 3);
        assert_eq!(store.write.options().get_max_connections(), 1);
    }
}
