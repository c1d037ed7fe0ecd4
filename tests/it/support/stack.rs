//! The production stack for a test: a fresh PostgreSQL schema, a fresh bucket on the S3
//! server and a fresh Redis key prefix, on the services `scripts/services.sh` starts. Servers
//! configured from one `Stack` are the nodes of one cluster; everything is removed on drop.
//!
//! `AERUGO_TEST_STACK=production` runs every `TestServer` of the API tests on such a stack
//! (`scripts/test.sh` does, once with `AERUGO_TEST_S3_REDIRECT=1` for the real clients), so
//! the same tests prove both stacks.

use aerugo::config::{Config, S3StorageConfig, StorageConfig};
use aerugo::testkit::{self, S3Endpoint};
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

pub struct Stack {
    pub postgres_url: String,
    pub schema: String,
    pub s3: S3Endpoint,
    pub bucket: String,
    pub redis_url: String,
    pub redis_prefix: String,
}

/// Whether the API tests run on the production stack (`AERUGO_TEST_STACK=production`).
pub fn production_requested() -> bool {
    std::env::var("AERUGO_TEST_STACK").is_ok_and(|stack| stack == "production")
}

/// Whether blob `GET`s should redirect to presigned URLs (`AERUGO_TEST_S3_REDIRECT=1`).
fn redirect_requested() -> bool {
    std::env::var("AERUGO_TEST_S3_REDIRECT").is_ok_and(|v| v == "1")
}

impl Stack {
    /// A fresh stack, or `None` (the test skips; it fails under `AERUGO_REQUIRE_TOOLS`) when a
    /// service does not answer.
    pub async fn create() -> Option<Stack> {
        let postgres_url = testkit::postgres_url()?;
        let s3 = testkit::s3_endpoint()?;
        let redis_url = testkit::redis_url()?;
        let schema = testkit::unique_name("aerugo_test_");
        let bucket = short_bucket_name();
        run_sql(&postgres_url, &format!("CREATE SCHEMA {schema}")).await;
        s3_client(&s3)
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .expect("creating the test bucket");
        Some(Stack {
            postgres_url,
            schema,
            s3,
            bucket,
            redis_url,
            redis_prefix: testkit::unique_name("aerugo-test:") + ":",
        })
    }

    /// The stack for a `TestServer` when `AERUGO_TEST_STACK=production`; then a service that
    /// does not answer is a failure, not a skip, since the run asked for it.
    pub async fn requested() -> Option<Stack> {
        if !production_requested() {
            return None;
        }
        let stack = Stack::create().await;
        assert!(
            stack.is_some(),
            "AERUGO_TEST_STACK=production but PostgreSQL, Redis or the S3 server does not answer"
        );
        stack
    }

    /// The database URL of this stack's schema.
    pub fn database_url(&self) -> String {
        let separator = if self.postgres_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{separator}options=-c%20search_path%3D{}",
            self.postgres_url, self.schema
        )
    }

    /// Points `config` at this stack: PostgreSQL, S3 (redirects as the run asked) and Redis.
    pub fn configure(&self, config: &mut Config) {
        config.database.url = Some(self.database_url());
        config.storage = StorageConfig::S3(S3StorageConfig {
            bucket: self.bucket.clone(),
            region: self.s3.region.clone(),
            endpoint: Some(self.s3.endpoint.clone()),
            access_key: Some(self.s3.access_key.clone()),
            secret_key: Some(self.s3.secret_key.clone()),
            redirect: redirect_requested(),
            ..S3StorageConfig::default()
        });
        config.cache.redis_url = Some(self.redis_url.clone());
        config.cache.redis_key_prefix = self.redis_prefix.clone();
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let (url, schema, s3, bucket) = (
            self.postgres_url.clone(),
            self.schema.clone(),
            self.s3.clone(),
            self.bucket.clone(),
        );
        // Drop runs inside or outside a runtime; a thread with its own is safe in both.
        let cleaned = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                run_sql(&url, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
                remove_bucket(&s3, &bucket).await;
            });
        })
        .join();
        if cleaned.is_err() {
            eprintln!(
                "could not remove test schema {} or bucket {}",
                self.schema, self.bucket
            );
        }
    }
}

/// A unique bucket name kept short: s3s-fs names a sidecar file after the base64 of bucket
/// and key together, and with the 44-character names of `unique_name` a sha512 blob's key
/// (`blobs/sha512/xx/<128 hex>`) overflows the 255-byte file-name limit ("File name too
/// long" on CopyObject, a 500). Real S3 takes keys of 1024 bytes; this only fits the test
/// server.
fn short_bucket_name() -> String {
    let unique = testkit::unique_name("");
    format!("aerugo-{}", &unique[..12])
}

pub async fn run_sql(url: &str, statement: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .expect("connecting to the test PostgreSQL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

fn s3_client(s3: &S3Endpoint) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(s3.region.clone()))
        .endpoint_url(&s3.endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(
            &s3.access_key,
            &s3.secret_key,
            None,
            None,
            "aerugo-tests",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Empties and removes a test bucket, best effort.
async fn remove_bucket(s3: &S3Endpoint, bucket: &str) {
    let client = s3_client(s3);
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .into_paginator()
        .send();
    while let Some(Ok(page)) = pages.next().await {
        for object in page.contents() {
            if let Some(key) = object.key() {
                let _ = client.delete_object().bucket(bucket).key(key).send().await;
            }
        }
    }
    let _ = client.delete_bucket().bucket(bucket).send().await;
}
