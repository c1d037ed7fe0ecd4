//! The schema's versions: the migrations this build carries (`migrations/postgres`) against
//! the ones the database has applied.
//!
//! Nodes of a cluster are upgraded one at a time, so a node can meet a schema migrated by a
//! newer build. It refuses to start then: its queries were written for tables that may have
//! changed under it.

use sqlx::migrate::Migrator;
use sqlx::{PgConnection, PgPool};

use super::errors::to_metadata_error;
use crate::metadata::{MetadataError, Result};

pub(super) static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// The schema does not match this build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the database schema is newer than this build: migrations {unknown:?} were applied by a \
         newer version of aerugo; upgrade this node"
    )]
    Newer { unknown: Vec<i64> },
    #[error(
        "the database schema is behind this build: migrations {pending:?} are not applied; run \
         them (database.migrate = true) before starting"
    )]
    Behind { pending: Vec<i64> },
}

/// Fails with [`SchemaError::Newer`] when the database has migrations this build lacks, and,
/// unless `allow_pending`, with [`SchemaError::Behind`] when it lacks some of this build's.
pub(super) async fn check(conn: &mut PgConnection, allow_pending: bool) -> Result<()> {
    let applied = applied_versions(conn).await?;
    let known: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
    let unknown: Vec<i64> = applied
        .iter()
        .copied()
        .filter(|v| !known.contains(v))
        .collect();
    if !unknown.is_empty() {
        return Err(schema_error(SchemaError::Newer { unknown }));
    }
    let pending: Vec<i64> = known.into_iter().filter(|v| !applied.contains(v)).collect();
    if !pending.is_empty() && !allow_pending {
        return Err(schema_error(SchemaError::Behind { pending }));
    }
    Ok(())
}

/// Applies this build's pending migrations, after making sure the schema is not newer.
///
/// On a connection of its own without the pool's statement timeout (building an index on a
/// large table may take longer than any request should), closed afterwards so the setting
/// never serves a request.
pub(super) async fn migrate(pool: &PgPool) -> Result<()> {
    let mut conn = pool.acquire().await.map_err(to_metadata_error)?;
    conn.close_on_drop();
    sqlx::query("SET statement_timeout = 0")
        .execute(&mut *conn)
        .await
        .map_err(to_metadata_error)?;
    check(&mut conn, true).await?;
    MIGRATOR.run(&mut *conn).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::Execute(e) => to_metadata_error(e),
        other => MetadataError::Backend(Box::new(other)),
    })
}

/// Versions recorded in sqlx's bookkeeping table of the current schema (none before the
/// first migration).
async fn applied_versions(conn: &mut PgConnection) -> Result<Vec<i64>> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await
        .map_err(to_metadata_error)?;
    if !exists {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(&mut *conn)
        .await
        .map_err(to_metadata_error)
}

fn schema_error(e: SchemaError) -> MetadataError {
    MetadataError::Backend(Box::new(e))
}
