//! Where tests find the external services the production backends need (PostgreSQL, Redis,
//! an S3-compatible server), and what a test does when one is missing.
//!
//! `scripts/test.sh` installs and starts them at the defaults below; the `AERUGO_TEST_*`
//! variables point the tests elsewhere. A missing service fails the test when
//! `AERUGO_REQUIRE_TOOLS` is set (the test command and CI set it) and skips it with a message
//! otherwise. Shared by the library's unit tests and the integration tests in `tests/`.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// `AERUGO_TEST_POSTGRES_URL`, default the database `scripts/test.sh` creates.
pub fn postgres_url() -> Option<String> {
    let url = env_or(
        "AERUGO_TEST_POSTGRES_URL",
        "postgres://aerugo:aerugo@127.0.0.1:5432/aerugo",
    );
    available("PostgreSQL", &url).then_some(url)
}

/// `AERUGO_TEST_REDIS_URL`, default the Redis `scripts/test.sh` starts.
pub fn redis_url() -> Option<String> {
    let url = env_or("AERUGO_TEST_REDIS_URL", "redis://127.0.0.1:6379");
    available("Redis", &url).then_some(url)
}

/// An S3-compatible server and credentials it accepts.
#[derive(Debug, Clone)]
pub struct S3Endpoint {
    pub endpoint: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
}

/// `AERUGO_TEST_S3_ENDPOINT` (+ `_REGION`, `_ACCESS_KEY`, `_SECRET_KEY`), default the s3s-fs
/// server `scripts/test.sh` starts.
pub fn s3_endpoint() -> Option<S3Endpoint> {
    let endpoint = S3Endpoint {
        endpoint: env_or("AERUGO_TEST_S3_ENDPOINT", "http://127.0.0.1:9100"),
        region: env_or("AERUGO_TEST_S3_REGION", "us-east-1"),
        access_key: env_or("AERUGO_TEST_S3_ACCESS_KEY", "aerugo"),
        secret_key: env_or("AERUGO_TEST_S3_SECRET_KEY", "aerugo-secret"),
    };
    available("the S3 server", &endpoint.endpoint).then_some(endpoint)
}

/// A name no other test run uses (schemas, buckets, key prefixes).
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// What a conformance suite's constructor returns: the fixture, or `None` when the service it
/// needs is missing and the case is skipped (see [`postgres_url`]).
pub trait Fixture {
    type Value;
    fn into_option(self) -> Option<Self::Value>;
}

impl<A, B> Fixture for (A, B) {
    type Value = (A, B);
    fn into_option(self) -> Option<(A, B)> {
        Some(self)
    }
}

impl<T> Fixture for Option<T> {
    type Value = T;
    fn into_option(self) -> Option<T> {
        self
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// Whether something accepts TCP connections at the URL's host and port.
fn available(service: &str, url: &str) -> bool {
    if address_of(url)
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok())
    {
        return true;
    }
    assert!(
        std::env::var_os("AERUGO_REQUIRE_TOOLS").is_none(),
        "{service} is required at {url} (AERUGO_REQUIRE_TOOLS is set) but does not answer; \
         run ./scripts/test.sh"
    );
    eprintln!("SKIPPED: {service} does not answer at {url} (./scripts/test.sh starts it)");
    false
}

/// `scheme://[user[:password]@]host:port[/...]` → the first address of `host:port`.
fn address_of(url: &str) -> Option<SocketAddr> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host_port.to_socket_addrs().ok()?.next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_come_from_the_authority() {
        assert_eq!(
            address_of("postgres://u:p@127.0.0.1:5432/db?x=1"),
            Some("127.0.0.1:5432".parse().unwrap())
        );
        assert_eq!(
            address_of("redis://127.0.0.1:6379"),
            Some("127.0.0.1:6379".parse().unwrap())
        );
        assert_eq!(address_of("not a url"), None);
    }
}
