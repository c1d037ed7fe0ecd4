//! Where tests find the external services the production backends need (PostgreSQL, Redis
//! and the `redis-server` program, S3-compatible servers), and what a test does when one is
//! missing.
//!
//! `scripts/services.sh` (run by `scripts/test.sh`) installs and starts them at the defaults
//! below; the `AERUGO_TEST_*` variables point the tests elsewhere. A missing service fails the
//! test when `AERUGO_REQUIRE_TOOLS` is set (the test command and CI set it) and skips it with a
//! message otherwise. Shared by the library's unit tests and the integration tests in `tests/`.
//!
//! [`FaultProxy`] sits between a test and such a service and cuts the line on demand.
//! [`fake_registry`] is the in-process, fault-injecting registry the upstream client's and the
//! edge's tests pull from; [`image`] is the images, blobs and manifests every test builds.

pub mod fake_registry;
pub mod image;

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

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
/// server `scripts/test.sh` starts. It checks signatures, so presigned URLs can be tested.
pub fn s3_endpoint() -> Option<S3Endpoint> {
    s3_endpoint_from(
        "AERUGO_TEST_S3",
        "the S3 server",
        ["http://127.0.0.1:9100", "aerugo", "aerugo-secret"],
    )
}

/// An S3 server that lists multipart uploads (s3s-fs cannot): `AERUGO_TEST_S3_MULTIPART_ENDPOINT`
/// (+ `_REGION`, `_ACCESS_KEY`, `_SECRET_KEY`), default the Garage server `scripts/test.sh`
/// starts.
pub fn multipart_s3_endpoint() -> Option<S3Endpoint> {
    s3_endpoint_from(
        "AERUGO_TEST_S3_MULTIPART",
        "the S3 server with multipart listings (Garage)",
        [
            "http://127.0.0.1:9101",
            "aerugo-garage",
            "aerugo-garage-secret",
        ],
    )
}

/// `<var>_ENDPOINT`, `<var>_REGION`, `<var>_ACCESS_KEY`, `<var>_SECRET_KEY`, or the defaults
/// (endpoint, access key, secret key; region `us-east-1`).
fn s3_endpoint_from(
    var: &str,
    service: &str,
    [endpoint, key, secret]: [&str; 3],
) -> Option<S3Endpoint> {
    let endpoint = S3Endpoint {
        endpoint: env_or(&format!("{var}_ENDPOINT"), endpoint),
        region: env_or(&format!("{var}_REGION"), "us-east-1"),
        access_key: env_or(&format!("{var}_ACCESS_KEY"), key),
        secret_key: env_or(&format!("{var}_SECRET_KEY"), secret),
    };
    available(service, &endpoint.endpoint).then_some(endpoint)
}

/// A name no other test run uses (schemas, buckets, key prefixes).
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The `redis-server` program, for tests that run a Redis of their own (TLS):
/// `AERUGO_TEST_REDIS_SERVER`, default `redis-server` on `PATH` (`scripts/services.sh`
/// installs it).
pub fn redis_server() -> Option<PathBuf> {
    let program = match std::env::var_os("AERUGO_TEST_REDIS_SERVER") {
        Some(path) => Some(PathBuf::from(path)),
        None => std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("redis-server"))
                .find(|candidate| candidate.is_file())
        }),
    };
    match program {
        Some(program) if program.is_file() => Some(program),
        _ => {
            missing(
                "redis-server",
                "is not installed (AERUGO_TEST_REDIS_SERVER, PATH)",
            );
            None
        }
    }
}

/// Whether something accepts TCP connections at the URL's host and port.
fn available(service: &str, url: &str) -> bool {
    let answers = address_of(url)
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok());
    if !answers {
        missing(service, &format!("does not answer at {url}"));
    }
    answers
}

/// A missing service: fails the test under `AERUGO_REQUIRE_TOOLS`, else says it skips.
fn missing(service: &str, problem: &str) {
    assert!(
        std::env::var_os("AERUGO_REQUIRE_TOOLS").is_none(),
        "{service} is required (AERUGO_REQUIRE_TOOLS is set) but {problem}; run ./scripts/test.sh"
    );
    eprintln!("SKIPPED: {service} {problem} (./scripts/test.sh provides it)");
}

/// `scheme://[user[:password]@]host:port[/...]` → the first address of `host:port`.
fn address_of(url: &str) -> Option<SocketAddr> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host_port.to_socket_addrs().ok()?.next()
}

/// A TCP proxy in front of a service that fails on demand, for "the backend is unreachable"
/// tests: [`FaultProxy::refuse`] (a server that is down: connections reset at once) and
/// [`FaultProxy::blackhole`] (a network partition: nothing answers, so only timeouts end a
/// call). [`FaultProxy::restore`] forwards again. Dropping it closes every connection.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    acceptor: JoinHandle<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    Refuse,
    Blackhole,
}

impl FaultProxy {
    /// Listens on an ephemeral port of 127.0.0.1 and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fault proxy");
        let addr = listener.local_addr().expect("the fault proxy's address");
        let (mode, watch) = watch::channel(Mode::Forward);
        let acceptor = tokio::spawn(accept(listener, upstream, watch));
        FaultProxy {
            addr,
            mode,
            acceptor,
        }
    }

    /// Where clients connect instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `url` with its `host:port` replaced by the proxy's (`scheme://[userinfo@]host:port...`).
    pub fn url_for(&self, url: &str) -> String {
        let Some((scheme, rest)) = url.split_once("://") else {
            return url.to_owned();
        };
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let userinfo = authority.rsplit_once('@').map_or("", |(user, _)| user);
        let at = if userinfo.is_empty() { "" } else { "@" };
        format!("{scheme}://{userinfo}{at}{}{path}", self.addr)
    }

    /// Like a server that went down: open connections are reset, and so is every new one.
    /// Takes effect at once: after it returns, no byte is forwarded.
    pub fn refuse(&self) {
        self.mode.send_replace(Mode::Refuse);
    }

    /// The short name for [`FaultProxy::refuse`].
    pub fn cut(&self) {
        self.refuse();
    }

    /// Like a partition: open connections go silent (nothing is forwarded either way, nothing
    /// is closed) and new ones are accepted and never answered. Takes effect at once.
    pub fn blackhole(&self) {
        self.mode.send_replace(Mode::Blackhole);
    }

    /// Forwards new connections again. Connections silenced by [`FaultProxy::blackhole`] are
    /// closed (their bytes are lost), so clients notice and reconnect.
    pub fn restore(&self) {
        self.mode.send_replace(Mode::Forward);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Dropping `mode` next ends every connection task: each sees its channel close.
        self.acceptor.abort();
    }
}

async fn accept(
    listener: tokio::net::TcpListener,
    upstream: SocketAddr,
    mode: watch::Receiver<Mode>,
) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            // Out of file descriptors and the like: let it pass rather than spin.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let current = *mode.borrow();
        match current {
            Mode::Forward => drop(tokio::spawn(forward(client, upstream, mode.clone()))),
            Mode::Refuse => reset(client),
            Mode::Blackhole => drop(tokio::spawn(silence(client, mode.clone()))),
        }
    }
}

/// Pipes `client` to `upstream` until the mode changes, then resets or silences it.
async fn forward(
    mut client: tokio::net::TcpStream,
    upstream: SocketAddr,
    mut mode: watch::Receiver<Mode>,
) {
    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
        return reset(client);
    };
    {
        let gate = mode.clone();
        let (mut client_read, mut client_write) = client.split();
        let (mut server_read, mut server_write) = server.split();
        let both_ways = async {
            tokio::join!(
                pump(&mut client_read, &mut server_write, &gate),
                pump(&mut server_read, &mut client_write, &gate),
            )
        };
        tokio::select! {
            _ = both_ways => {}
            _ = mode.wait_for(|m| *m != Mode::Forward) => {}
        }
    }
    drop(server);
    let now = *mode.borrow();
    match now {
        Mode::Blackhole => silence(client, mode).await,
        Mode::Refuse => reset(client),
        // Both sides closed (or the proxy is gone): close as they did.
        Mode::Forward => {}
    }
}

/// Copies one direction while the mode is `Forward`. The mode is checked after every read, so
/// once `refuse`/`blackhole` returns, not another byte gets through.
async fn pump(
    from: &mut tokio::net::tcp::ReadHalf<'_>,
    to: &mut tokio::net::tcp::WriteHalf<'_>,
    mode: &watch::Receiver<Mode>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if *mode.borrow() != Mode::Forward || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    // Pass the half-close on, as TCP would.
    let _ = to.shutdown().await;
}

/// Holds `client` open without a byte either way until the black hole ends.
async fn silence(client: tokio::net::TcpStream, mut mode: watch::Receiver<Mode>) {
    let _ = mode.wait_for(|m| *m != Mode::Blackhole).await;
    reset(client);
}

/// Closes with a reset (RST) rather than an orderly FIN, as a dead server's host does.
fn reset(stream: tokio::net::TcpStream) {
    let _ = stream.set_zero_linger();
}

/// A server future running on its own runtime thread, so a test may block without starving
/// it. When dropped, its stop signal fires and the thread is joined.
pub struct ServerThread {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    /// Runs `serve(stop)` on a fresh two-worker runtime; `stop` resolves when this is dropped.
    pub fn spawn<F, Fut>(serve: F) -> ServerThread
    where
        F: FnOnce(tokio::sync::oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(serve(stop));
        });
        ServerThread {
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
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

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A TCP echo server.
    async fn echo_server() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    /// Writes `message` and reads what comes back within `wait`: the bytes, `Err` for a
    /// closed or reset connection, `Ok(None)` for silence.
    async fn round_trip(
        stream: &mut tokio::net::TcpStream,
        message: &[u8],
        wait: Duration,
    ) -> Result<Option<Vec<u8>>, ()> {
        // A write into a reset connection may still succeed locally; the read tells.
        let _ = stream.write_all(message).await;
        let mut buf = vec![0u8; message.len()];
        match tokio::time::timeout(wait, stream.read_exact(&mut buf)).await {
            Ok(Ok(_)) => Ok(Some(buf)),
            Ok(Err(_)) => Err(()),
            Err(_) => Ok(None),
        }
    }

    const WAIT: Duration = Duration::from_secs(2);
    const SILENCE: Duration = Duration::from_millis(300);

    async fn connect(proxy: &FaultProxy) -> tokio::net::TcpStream {
        tokio::net::TcpStream::connect(proxy.addr()).await.unwrap()
    }

    #[tokio::test]
    async fn fault_proxy_forwards_until_refused_then_resets_and_restores() {
        let proxy = FaultProxy::start(echo_server().await).await;
        let mut open = connect(&proxy).await;
        assert_eq!(
            round_trip(&mut open, b"ping", WAIT).await,
            Ok(Some(b"ping".to_vec()))
        );

        proxy.refuse();
        assert_eq!(
            round_trip(&mut open, b"more", WAIT).await,
            Err(()),
            "open one reset"
        );
        let mut new = connect(&proxy).await;
        assert_eq!(
            round_trip(&mut new, b"ping", WAIT).await,
            Err(()),
            "new one reset"
        );

        proxy.restore();
        let mut again = connect(&proxy).await;
        assert_eq!(
            round_trip(&mut again, b"back", WAIT).await,
            Ok(Some(b"back".to_vec()))
        );
    }

    #[tokio::test]
    async fn fault_proxy_blackhole_silences_without_closing_until_restored() {
        let proxy = FaultProxy::start(echo_server().await).await;
        let mut open = connect(&proxy).await;
        assert_eq!(
            round_trip(&mut open, b"ping", WAIT).await,
            Ok(Some(b"ping".to_vec()))
        );

        proxy.blackhole();
        // Let the connection task see the change before the next write.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            round_trip(&mut open, b"lost", SILENCE).await,
            Ok(None),
            "open one silent"
        );
        let mut new = connect(&proxy).await;
        assert_eq!(
            round_trip(&mut new, b"lost", SILENCE).await,
            Ok(None),
            "new one silent"
        );

        proxy.restore();
        // The silenced connections are closed, so their clients notice...
        assert_eq!(round_trip(&mut open, b"x", WAIT).await, Err(()));
        assert_eq!(round_trip(&mut new, b"x", WAIT).await, Err(()));
        // ...and a new connection is forwarded.
        let mut again = connect(&proxy).await;
        assert_eq!(
            round_trip(&mut again, b"back", WAIT).await,
            Ok(Some(b"back".to_vec()))
        );
    }

    #[tokio::test]
    async fn fault_proxy_resets_clients_when_the_upstream_is_down() {
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let proxy = FaultProxy::start(closed).await;
        let mut client = connect(&proxy).await;
        assert_eq!(round_trip(&mut client, b"ping", WAIT).await, Err(()));
    }

    #[tokio::test]
    async fn fault_proxy_urls_keep_everything_but_the_address() {
        let proxy = FaultProxy::start("127.0.0.1:9".parse().unwrap()).await;
        let addr = proxy.addr();
        assert_eq!(
            proxy.url_for("postgres://u:p@127.0.0.1:5432/db?x=1"),
            format!("postgres://u:p@{addr}/db?x=1")
        );
        assert_eq!(
            proxy.url_for("redis://127.0.0.1:6379"),
            format!("redis://{addr}")
        );
        assert_eq!(proxy.url_for("http://h:1/"), format!("http://{addr}/"));
    }
}
