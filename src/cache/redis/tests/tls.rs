//! The Redis cache over TLS (`rediss://`), against a `redis-server` of each test's own that
//! speaks only TLS, with a certificate from a private CA made here.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

use super::*;
use crate::cache::conformance::cache_conformance;
use crate::testkit::redis_server;

/// A private certificate authority.
struct Ca {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().expect("CA key");
        let pem = params.self_signed(&key).expect("CA certificate").pem();
        Ca {
            pem,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A server certificate for 127.0.0.1 and its key, in PEM.
    fn issue_for_loopback(&self) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("server key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("server params")
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// A `redis-server` that listens only for TLS on a loopback port, its certificate issued by a
/// CA of its own; killed when dropped.
struct TlsRedis {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl TlsRedis {
    /// `None` (the test skips) without a `redis-server`.
    fn start() -> Option<TlsRedis> {
        let program = redis_server()?;
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = Ca::new("aerugo test CA");
        let (cert, key) = ca.issue_for_loopback();
        for (name, pem) in [
            ("ca.pem", &ca.pem),
            ("server.pem", &cert),
            ("server.key", &key),
        ] {
            std::fs::write(dir.path().join(name), pem).expect("writing a PEM file");
        }
        let addr = super::closed_port();
        let file = |name: &str| dir.path().join(name);
        let child = Command::new(program)
            .args(["--port", "0", "--bind", "127.0.0.1", "--tls-port"])
            .arg(addr.port().to_string())
            .arg("--tls-cert-file")
            .arg(file("server.pem"))
            .arg("--tls-key-file")
            .arg(file("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(file("ca.pem"))
            .args([
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(file("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        let mut server = TlsRedis { child, addr, dir };
        server.wait_until_listening();
        Some(server)
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&self.addr, Duration::from_millis(100)).is_err() {
            let exited = self.child.try_wait().expect("redis-server status");
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "redis-server with TLS did not start ({exited:?}); log:\n{}",
                std::fs::read_to_string(self.file("redis.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn url(&self) -> String {
        format!("rediss://{}", self.addr)
    }

    /// A cache on this server trusting the certificates in `ca_file` (`None`: the system's).
    async fn cache(&self, ca_file: Option<&Path>, timeout: Duration) -> RedisCache {
        RedisCache::connect(&RedisSettings {
            ca_file: ca_file.map(Path::to_owned),
            ..settings(&self.url(), &prefix(), timeout)
        })
        .await
        .expect("valid settings")
    }

    async fn trusting_cache(&self) -> RedisCache {
        self.cache(Some(&self.file("ca.pem")), PATIENT).await
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cache that owns the server it talks to, so the server lives as long as the test uses it.
struct CacheOnItsServer {
    cache: RedisCache,
    _server: TlsRedis,
}

#[async_trait]
impl Cache for CacheOnItsServer {
    async fn get(&self, key: &str) -> Option<Bytes> {
        self.cache.get(key).await
    }
    async fn set(&self, key: &str, value: Bytes, ttl: Duration) {
        self.cache.set(key, value, ttl).await;
    }
    async fn delete(&self, key: &str) {
        self.cache.delete(key).await;
    }
    async fn increment(&self, key: &str, ttl: Duration) -> Option<u64> {
        self.cache.increment(key, ttl).await
    }
    async fn set_if_absent(&self, key: &str, value: Bytes, ttl: Duration) -> Option<bool> {
        self.cache.set_if_absent(key, value, ttl).await
    }
}

async fn tls_conformance_cache() -> Option<Box<dyn Cache>> {
    let server = TlsRedis::start()?;
    let cache = server.trusting_cache().await;
    assert!(cache.check().await.is_ok(), "{:?}", cache.check().await);
    Some(Box::new(CacheOnItsServer {
        cache,
        _server: server,
    }))
}

cache_conformance!(tls_conformance_cache);

/// A server whose certificate the cache cannot verify is unavailable, and `check` says it is
/// the certificate: with another CA's file, and with the system's roots (no CA file), which
/// know nothing of a private CA.
#[tokio::test]
async fn a_server_certificate_from_an_untrusted_ca_is_refused_and_said_so() {
    let Some(server) = TlsRedis::start() else {
        return;
    };
    let other_ca = server.file("other-ca.pem");
    std::fs::write(&other_ca, Ca::new("another CA").pem).expect("writing a PEM file");
    for ca_file in [Some(other_ca.as_path()), None] {
        let cache = server.cache(ca_file, TIMEOUT).await;
        cache.set("k", Bytes::from_static(b"v"), LONG).await;
        assert_eq!(cache.get("k").await, None, "{ca_file:?}");
        let error = cache
            .check()
            .await
            .expect_err("an untrusted certificate")
            .to_string();
        assert!(
            error.contains("certificate") && error.contains("UnknownIssuer"),
            "{ca_file:?}: {error}"
        );
    }
    // The right CA on the same server works.
    let cache = server.trusting_cache().await;
    cache.set("k", Bytes::from_static(b"v"), LONG).await;
    assert_eq!(cache.get("k").await, Some(Bytes::from_static(b"v")));
}

#[tokio::test]
async fn a_ca_file_that_is_missing_empty_or_without_tls_is_a_set_up_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let connect = |url: &str, ca_file: PathBuf| {
        let settings = RedisSettings {
            ca_file: Some(ca_file),
            ..settings(url, "p:", TIMEOUT)
        };
        async move { RedisCache::connect(&settings).await }
    };
    let missing = dir.path().join("missing.pem");
    assert!(matches!(
        connect("rediss://127.0.0.1:1", missing).await,
        Err(RedisSetupError::UnreadableCaFile { .. })
    ));
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificate here\n").expect("write");
    assert!(matches!(
        connect("rediss://127.0.0.1:1", empty).await,
        Err(RedisSetupError::NoCertificateInCaFile { .. })
    ));
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, Ca::new("a CA").pem).expect("write");
    assert!(matches!(
        connect("redis://127.0.0.1:1", ca).await,
        Err(RedisSetupError::CaFileWithoutTls)
    ));
}
