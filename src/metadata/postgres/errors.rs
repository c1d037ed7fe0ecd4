//! What a PostgreSQL failure means to the registry, decided in one place, and the retry loop
//! that rides out transactions PostgreSQL aborted to keep concurrent ones consistent.

use std::future::Future;
use std::time::Duration;

use crate::accounts::AccountError;
use crate::metadata::{MetadataError, Result};

/// Retries after the first attempt of a transaction PostgreSQL aborted for a concurrent one.
pub(super) const MAX_RETRIES: u32 = 3;

/// The first pause before a retry; doubled for each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);

/// Why one attempt at a store operation failed; `E` is the seam's error (`MetadataError`,
/// `AccountError`).
#[derive(Debug)]
pub(super) enum Failed<E = MetadataError> {
    /// The database refused or failed a statement.
    Sql(sqlx::Error),
    /// The store itself refused (a missing reference, a row it cannot read, a rule).
    Store(E),
}

impl<E> From<sqlx::Error> for Failed<E> {
    fn from(e: sqlx::Error) -> Failed<E> {
        Failed::Sql(e)
    }
}

impl From<MetadataError> for Failed {
    fn from(e: MetadataError) -> Failed {
        Failed::Store(e)
    }
}

impl From<AccountError> for Failed<AccountError> {
    fn from(e: AccountError) -> Failed<AccountError> {
        Failed::Store(e)
    }
}

impl From<MetadataError> for Failed<AccountError> {
    fn from(e: MetadataError) -> Failed<AccountError> {
        Failed::Store(e.into())
    }
}

/// The SQLSTATE of a database error, if that is what `e` is.
fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// A transaction PostgreSQL aborted so that a concurrent one could finish: serialization
/// failure (40001) or deadlock victim (40P01). Running it again can succeed.
pub(super) fn is_retryable(e: &sqlx::Error) -> bool {
    matches!(sqlstate(e).as_deref(), Some("40001" | "40P01"))
}

/// The database cannot serve us right now, whatever the statement: retrying later can work.
fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(_) => sqlstate(e).is_some_and(|code| {
            // 08: connection exceptions. 57P01..57P03: the server is shutting down, crashed or
            // not accepting connections yet. 57014: statement_timeout cancelled the query.
            // 53300: too many connections. 25006: a read-only transaction, that is a standby
            // answering after a failover.
            code.starts_with("08")
                || matches!(
                    code.as_str(),
                    "57P01" | "57P02" | "57P03" | "57014" | "53300" | "25006"
                )
        }),
        _ => false,
    }
}

/// The one mapping from a PostgreSQL failure to the seam's errors: `Unavailable` for what
/// retrying later can fix, `Conflict` for concurrency aborts the retries did not get past,
/// `Backend` for the rest.
pub(super) fn to_metadata_error(e: sqlx::Error) -> MetadataError {
    if is_retryable(&e) {
        MetadataError::Conflict(Box::new(e))
    } else if is_unavailable(&e) {
        MetadataError::Unavailable(Box::new(e))
    } else {
        MetadataError::Backend(Box::new(e))
    }
}

/// Runs `attempt` (one whole transaction) until it succeeds, fails for another reason than a
/// concurrency abort, or has been retried [`MAX_RETRIES`] times.
pub(super) async fn retrying<T, E, F, Fut>(mut attempt: F) -> Result<T, E>
where
    E: From<MetadataError>,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failed<E>>>,
{
    let mut retries = 0;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(Failed::Sql(e)) if is_retryable(&e) && retries < MAX_RETRIES => {
                // Backing off lets the transaction that won finish before this one tries again.
                tokio::time::sleep(FIRST_BACKOFF * 2u32.pow(retries)).await;
                retries += 1;
                tracing::debug!(error = %e, retries, "retrying a metadata transaction");
            }
            Err(Failed::Sql(e)) => return Err(to_metadata_error(e).into()),
            Err(Failed::Store(e)) => return Err(e),
        }
    }
}
