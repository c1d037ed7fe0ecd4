//! The PostgreSQL store against the conformance suite and what only a shared database shows:
//! two nodes at once, schema versions, failures mapped to `Unavailable`/`Conflict`.
//!
//! Each test works in a schema of its own (`TestSchema`), dropped when the test ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::json;
use sqlx::{AssertSqlSafe, Connection};

use super::*;
use crate::metadata::conformance::{BLOB_SIZE, blob, image, link, manifest, repo};

/// A fresh schema on the test database, dropped with the value.
pub(super) struct TestSchema {
    base_url: String,
    name: String,
}

impl TestSchema {
    /// `None` (the test is skipped) when PostgreSQL is not there; see `testkit`.
    async fn create() -> Option<TestSchema> {
        let base_url = crate::testkit::postgres_url()?;
        let name = crate::testkit::unique_name("aerugo_test_");
        let mut conn = PgConnection::connect(&base_url).await.expect("connect");
        // The name is ours: a prefix and a UUID's hex digits.
        sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&mut conn)
            .await
            .expect("create schema");
        conn.close().await.ok();
        Some(TestSchema { base_url, name })
    }

    /// The database URL with this schema as the search path.
    fn url(&self) -> String {
        let separator = if self.base_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{separator}options=-c%20search_path%3D{}",
            self.base_url, self.name
        )
    }

    fn settings(&self) -> PgSettings {
        PgSettings {
            url: self.url(),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(10),
            statement_timeout: Some(Duration::from_secs(30)),
            migrate: true,
        }
    }

    async fn store(&self) -> PgStore {
        PgStore::connect(&self.settings()).await.expect("connect")
    }

    /// A plain connection into the schema, for looking at the tables directly.
    async fn connection(&self) -> PgConnection {
        PgConnection::connect(&self.url()).await.expect("connect")
    }
}

impl Drop for TestSchema {
    /// On a thread of its own: the test's runtime may be a current-thread one, or gone.
    fn drop(&mut self) {
        let (url, name) = (self.base_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&url).await?;
                sqlx::query(AssertSqlSafe(format!("DROP SCHEMA {name} CASCADE")))
                    .execute(&mut conn)
                    .await?;
                conn.close().await?;
                Ok::<_, sqlx::Error>(())
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test schema {}: {dropped:?}", self.name);
        }
    }
}

async fn fresh_store() -> Option<(Arc<dyn MetadataStore>, TestSchema)> {
    let schema = TestSchema::create().await?;
    let store = schema.store().await;
    Some((Arc::new(store), schema))
}

mod conformance {
    crate::metadata::conformance::metadata_conformance!(super::fresh_store);
}

/// The same store as the account seam (`AccountStore::now` would clash with
/// `MetadataStore::now` if both traits were in scope here).
async fn fresh_account_store() -> Option<(Arc<dyn crate::accounts::AccountStore>, TestSchema)> {
    let schema = TestSchema::create().await?;
    let store = schema.store().await;
    Some((Arc::new(store), schema))
}

mod account_conformance {
    crate::accounts::conformance::account_conformance!(super::fresh_account_store);
}

/// Two nodes on one database.
async fn two_nodes() -> Option<(PgStore, PgStore, TestSchema)> {
    let schema = TestSchema::create().await?;
    let (a, b) = (schema.store().await, schema.store().await);
    Some((a, b, schema))
}

fn backend_source<T: std::fmt::Debug>(
    result: Result<T>,
) -> Box<dyn std::error::Error + Send + Sync> {
    match result {
        Err(MetadataError::Backend(source)) => source,
        other => panic!("expected a backend error, got {other:?}"),
    }
}

async fn count(conn: &mut PgConnection, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(conn)
        .await
        .expect("count")
}

#[tokio::test]
async fn reconnecting_migrates_idempotently_and_keeps_data() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let r = repo("team/app");
    schema
        .store()
        .await
        .link_blob(&r, &blob("a"), 3)
        .await
        .expect("link");
    let again = schema.store().await;
    assert_eq!(
        again.linked_blob(&r, &blob("a")).await.expect("linked"),
        Some(3)
    );
    let without_migrating = PgStore::connect(&PgSettings {
        migrate: false,
        ..schema.settings()
    })
    .await
    .expect("an up-to-date schema needs no migration");
    without_migrating.ping().await.expect("ping");
}

#[tokio::test]
async fn a_schema_newer_than_this_build_is_refused() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let store = schema.store().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99990001, 'from the future', true, '\\x00', 0),
                (99990002, 'from the future', true, '\\x00', 0)",
    )
    .execute(&store.pool)
    .await
    .expect("pretend a newer node migrated");
    let newer = SchemaError::Newer {
        unknown: vec![99990001, 99990002],
    };
    for migrate in [true, false] {
        let refused = PgStore::connect(&PgSettings {
            migrate,
            ..schema.settings()
        })
        .await;
        let source = backend_source(refused);
        assert_eq!(source.downcast_ref::<SchemaError>(), Some(&newer));
        assert!(source.to_string().contains("99990001"), "{source}");
    }
    let source = backend_source(store.migrate().await);
    assert_eq!(source.downcast_ref::<SchemaError>(), Some(&newer));
}

#[tokio::test]
async fn a_schema_behind_this_build_is_refused_unless_migrating() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let refused = PgStore::connect(&PgSettings {
        migrate: false,
        ..schema.settings()
    })
    .await;
    let all: Vec<i64> = schema::MIGRATOR.iter().map(|m| m.version).collect();
    assert_eq!(
        backend_source(refused).downcast_ref::<SchemaError>(),
        Some(&SchemaError::Behind { pending: all })
    );
    schema
        .store()
        .await
        .ping()
        .await
        .expect("migrated and ready");
}

/// Two nodes pushing different manifests to one tag at once: every push succeeds, the tag
/// ends on one of them, and the tables agree with each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_pushing_one_tag_end_consistent() {
    let Some((a, b, schema)) = two_nodes().await else {
        return;
    };
    let (a, b): (Arc<dyn MetadataStore>, Arc<dyn MetadataStore>) = (Arc::new(a), Arc::new(b));
    let r = repo("app");
    let (config, layer) = (blob("config"), blob("layer"));
    link(&*a, &r, &[&config, &layer]).await;
    let manifests: Vec<NewManifest> = (0..8)
        .map(|i| {
            let mut json = image(&config, &[&layer]);
            json["annotations"] = json!({ "n": i.to_string() });
            manifest(&r, &json, &["latest", "stable"])
        })
        .collect();
    let mut pushes = Vec::new();
    for m in &manifests {
        for node in [&a, &b] {
            let (node, m) = (node.clone(), m.clone());
            pushes.push(tokio::spawn(async move { node.put_manifest(&m).await }));
        }
    }
    for push in pushes {
        push.await.expect("task").expect("put_manifest");
    }

    let latest = a
        .get_manifest(&r, &"latest".parse().expect("tag"))
        .await
        .expect("get")
        .expect("latest");
    assert!(manifests.iter().any(|m| m.digest == latest.digest));
    let stable = b
        .get_manifest(&r, &"stable".parse().expect("tag"))
        .await
        .expect("get")
        .expect("stable");
    assert!(manifests.iter().any(|m| m.digest == stable.digest));

    let mut conn = schema.connection().await;
    assert_eq!(
        count(&mut conn, "SELECT count(*) FROM repositories").await,
        1
    );
    assert_eq!(count(&mut conn, "SELECT count(*) FROM manifests").await, 8);
    assert_eq!(count(&mut conn, "SELECT count(*) FROM tags").await, 2);
    // Config and layer for each manifest, once.
    assert_eq!(
        count(&mut conn, "SELECT count(*) FROM manifest_refs").await,
        16
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) FROM tags t
             WHERE NOT EXISTS (SELECT 1 FROM manifests m
                               WHERE m.repo_id = t.repo_id AND m.digest = t.digest)"
        )
        .await,
        0
    );
}

/// Garbage collection on one node racing pushes on another: a push that succeeds keeps what
/// it references (its links and blob records); a blob is reported for deletion only when no
/// committed manifest references it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collection_never_takes_what_a_concurrent_push_references() {
    let Some((pusher, collector, schema)) = two_nodes().await else {
        return;
    };
    let r = repo("app");
    for i in 0..20 {
        let (config, layer) = (blob(&format!("config-{i}")), blob(&format!("layer-{i}")));
        link(&pusher, &r, &[&config, &layer]).await;
        let m = manifest(&r, &image(&config, &[&layer]), &[]);
        // Every link is past its grace period for this collection.
        let cutoff = collector.now().await.expect("now") + 10;
        let start = GcCursor::default();
        let (pushed, plan) = tokio::join!(
            pusher.put_manifest(&m),
            collector.collect_garbage(cutoff, 1000, &start)
        );
        let plan = plan.expect("gc").removed;
        match pushed {
            Ok(()) => {
                for d in [&config, &layer] {
                    assert!(
                        !plan.blobs.contains(d),
                        "round {i}: collected a referenced blob"
                    );
                    assert!(!plan.links.contains(&(r.clone(), d.clone())));
                    assert_eq!(
                        pusher.linked_blob(&r, d).await.expect("linked"),
                        Some(BLOB_SIZE)
                    );
                }
            }
            Err(MetadataError::MissingReferences(_)) => {
                // The collection went first: the push saw the links gone, as it must.
            }
            Err(e) => panic!("round {i}: {e:?}"),
        }
    }
    let mut conn = schema.connection().await;
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) FROM manifest_refs mr
             WHERE mr.kind = 'blob'
               AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = mr.target_digest)"
        )
        .await,
        0,
        "a manifest references a blob record collection deleted"
    );
}

/// A blob linked on one node while another collects its unreferenced record: the link
/// never fails (it waits for the collection or re-creates the record).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn linking_while_collection_runs_never_fails() {
    let Some((linker, collector, _schema)) = two_nodes().await else {
        return;
    };
    let (old, new) = (repo("old"), repo("new"));
    for i in 0..20 {
        let d = blob(&format!("blob-{i}"));
        link(&linker, &old, &[&d]).await;
        let cutoff = collector.now().await.expect("now") + 10;
        let start = GcCursor::default();
        let (linked, plan) = tokio::join!(
            linker.link_blob(&new, &d, BLOB_SIZE),
            collector.collect_garbage(cutoff, 1000, &start)
        );
        linked.unwrap_or_else(|e| panic!("round {i}: {e:?}"));
        // The collection may take the new link too when it ran after it: then it says so.
        let plan = plan.expect("gc").removed;
        if !plan.links.contains(&(new.clone(), d.clone())) {
            assert_eq!(
                linker.linked_blob(&new, &d).await.expect("linked"),
                Some(BLOB_SIZE),
                "round {i}: the link vanished unreported"
            );
        }
    }
}

/// A link into a repository another node is deleting waits for the deletion, then finds the
/// row gone and creates the repository anew: the link is never lost, and never lands on the
/// deleted row (a foreign-key failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linking_while_the_repository_is_deleted_creates_it_anew() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let store = schema.store().await;
    let r = repo("app");
    let (old, new) = (blob("old"), blob("new"));
    link(&store, &r, &[&old]).await;
    let mut deleter = schema.connection().await;
    for statement in [
        "BEGIN",
        "SELECT id FROM repositories WHERE name = 'app' FOR UPDATE",
        "DELETE FROM repo_blobs WHERE repo_id = (SELECT id FROM repositories WHERE name = 'app')",
        "DELETE FROM repositories WHERE name = 'app'",
    ] {
        sqlx::query(statement)
            .execute(&mut deleter)
            .await
            .expect("delete the repository");
    }
    let linker = {
        let (store, r, new) = (store.clone(), r.clone(), new.clone());
        tokio::spawn(async move { store.link_blob(&r, &new, BLOB_SIZE).await })
    };
    wait_until_blocked_by(&schema, &mut deleter).await;
    sqlx::query("COMMIT")
        .execute(&mut deleter)
        .await
        .expect("commit");
    linker.await.expect("join").expect("link");
    assert_eq!(
        store.linked_blob(&r, &new).await.expect("new"),
        Some(BLOB_SIZE)
    );
    assert_eq!(store.linked_blob(&r, &old).await.expect("old"), None);
}

#[tokio::test]
async fn sizes_beyond_i64_are_errors_not_panics() {
    let Some((store, _schema)) = fresh_store().await else {
        return;
    };
    let r = repo("app");
    let err = store.link_blob(&r, &blob("big"), u64::MAX).await;
    assert!(matches!(err, Err(MetadataError::Backend(_))), "{err:?}");
    let id = UploadId::generate();
    store.create_upload(&id, &r, b"").await.expect("create");
    let err = store.advance_upload(&id, 0, u64::MAX, b"").await;
    assert!(matches!(err, Err(MetadataError::Backend(_))), "{err:?}");
}

#[tokio::test]
async fn the_clock_is_the_databases() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let store = schema.store().await;
    let mut conn = schema.connection().await;
    let db_now: i64 = sqlx::query_scalar("SELECT floor(extract(epoch FROM now()))::bigint")
        .fetch_one(&mut conn)
        .await
        .expect("now");
    let now = store.now().await.expect("now");
    assert!((db_now..db_now + 5).contains(&now), "{now} vs {db_now}");
    let session = store
        .create_upload(&UploadId::generate(), &repo("app"), b"")
        .await
        .expect("create");
    assert!((now..now + 5).contains(&session.created_at));
}

/// Holds the readiness row locked from another connection, so `ping` waits on it until the
/// returned connection is dropped (closing it aborts its transaction).
async fn block_ping(schema: &TestSchema) -> PgConnection {
    schema
        .store()
        .await
        .ping()
        .await
        .expect("the first ping creates the row");
    let mut conn = schema.connection().await;
    for statement in ["BEGIN", "SELECT 1 FROM readiness FOR UPDATE"] {
        sqlx::query(statement)
            .execute(&mut conn)
            .await
            .expect("lock the readiness row");
    }
    conn
}

/// Returns once some session waits for a lock `blocker` holds. Asks on another connection:
/// inside the blocker's transaction, pg_stat_activity would not change.
async fn wait_until_blocked_by(schema: &TestSchema, blocker: &mut PgConnection) {
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *blocker)
        .await
        .expect("pid");
    let mut observer = schema.connection().await;
    for _ in 0..500 {
        let blocked: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE $1 = ANY (pg_blocking_pids(pid)))",
        )
        .bind(pid)
        .fetch_one(&mut observer)
        .await
        .expect("pg_stat_activity");
        if blocked {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("nothing waited for the blocker's lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_is_unavailable() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let mut blocker = block_ping(&schema).await;
    let store = PgStore::connect(&PgSettings {
        max_connections: 1,
        // Also bounds the first connection, which a loaded machine makes slowly.
        acquire_timeout: Duration::from_secs(2),
        statement_timeout: None,
        ..schema.settings()
    })
    .await
    .expect("connect");
    // Waits on the row lock, holding the pool's only connection.
    let waiting = tokio::spawn({
        let store = store.clone();
        async move { store.ping().await }
    });
    wait_until_blocked_by(&schema, &mut blocker).await;
    let err = store.now().await;
    assert!(matches!(err, Err(MetadataError::Unavailable(_))), "{err:?}");
    waiting.abort();
}

#[tokio::test]
async fn a_statement_timeout_is_unavailable() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let _blocker = block_ping(&schema).await;
    let store = PgStore::connect(&PgSettings {
        statement_timeout: Some(Duration::from_millis(200)),
        ..schema.settings()
    })
    .await
    .expect("connect");
    let err = store.ping().await;
    assert!(matches!(err, Err(MetadataError::Unavailable(_))), "{err:?}");
}

#[tokio::test]
async fn a_refused_connection_is_unavailable() {
    let settings = PgSettings {
        url: "postgres://aerugo:aerugo@127.0.0.1:1/aerugo".to_owned(),
        max_connections: 1,
        acquire_timeout: Duration::from_secs(2),
        statement_timeout: None,
        migrate: true,
    };
    let err = PgStore::connect(&settings).await;
    assert!(matches!(err, Err(MetadataError::Unavailable(_))), "{err:?}");
}

/// A real database error with the given SQLSTATE.
async fn raised(conn: &mut PgConnection, sqlstate: &str) -> sqlx::Error {
    sqlx::query(AssertSqlSafe(format!(
        "DO $$ BEGIN RAISE EXCEPTION 'raised' USING ERRCODE = '{sqlstate}'; END $$"
    )))
    .execute(conn)
    .await
    .expect_err("raised")
}

#[tokio::test]
async fn errors_map_by_sqlstate() {
    let Some(url) = crate::testkit::postgres_url() else {
        return;
    };
    let mut conn = PgConnection::connect(&url).await.expect("connect");
    for (code, expected) in [
        ("40001", "conflict"),
        ("40P01", "conflict"),
        ("57P01", "unavailable"),
        ("57P03", "unavailable"),
        ("57014", "unavailable"),
        ("08006", "unavailable"),
        ("25006", "unavailable"),
        ("23505", "backend"),
        ("42P01", "backend"),
    ] {
        let mapped = match errors::to_metadata_error(raised(&mut conn, code).await) {
            MetadataError::Conflict(_) => "conflict",
            MetadataError::Unavailable(_) => "unavailable",
            MetadataError::Backend(_) => "backend",
            other => panic!("{code}: {other:?}"),
        };
        assert_eq!(mapped, expected, "SQLSTATE {code}");
    }
    assert!(matches!(
        errors::to_metadata_error(sqlx::Error::PoolTimedOut),
        MetadataError::Unavailable(_)
    ));
}

/// Runs `retrying` over attempts that fail with `sqlstate` the first `failures` times;
/// returns the outcome and how many attempts ran.
async fn retried(url: &str, sqlstate: &str, failures: u32) -> (Result<()>, u32) {
    let attempts = AtomicU32::new(0);
    let outcome = errors::retrying(|| async {
        let n = attempts.fetch_add(1, Ordering::SeqCst);
        if n < failures {
            let mut conn = PgConnection::connect(url).await?;
            return Err(raised(&mut conn, sqlstate).await.into());
        }
        Ok(())
    })
    .await;
    (outcome, attempts.load(Ordering::SeqCst))
}

#[tokio::test]
async fn concurrency_aborts_are_retried_three_times_then_conflict() {
    let Some(url) = crate::testkit::postgres_url() else {
        return;
    };
    let (outcome, attempts) = retried(&url, "40001", u32::MAX).await;
    assert!(
        matches!(outcome, Err(MetadataError::Conflict(_))),
        "{outcome:?}"
    );
    assert_eq!(attempts, 1 + errors::MAX_RETRIES);

    let (outcome, attempts) = retried(&url, "40P01", 2).await;
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(
        attempts, 3,
        "a deadlock victim succeeds on its third attempt"
    );

    let (outcome, attempts) = retried(&url, "23505", u32::MAX).await;
    assert!(
        matches!(outcome, Err(MetadataError::Backend(_))),
        "{outcome:?}"
    );
    assert_eq!(attempts, 1, "other failures are not retried");
}

#[test]
fn settings_never_show_the_password() {
    let settings = PgSettings {
        url: "postgres://aerugo:s3cret@db:5432/aerugo?sslmode=require".to_owned(),
        max_connections: 1,
        acquire_timeout: Duration::from_secs(1),
        statement_timeout: None,
        migrate: false,
    };
    let shown = format!("{settings:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(
        shown.contains("postgres://aerugo:***@db:5432/aerugo?sslmode=require"),
        "{shown}"
    );
    assert_eq!(
        without_password("postgres://db/aerugo"),
        "postgres://db/aerugo"
    );
}
