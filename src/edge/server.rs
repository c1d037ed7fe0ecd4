//! Builds and runs the pingora server of `aerugo edge`. pingora owns its runtimes and its
//! signals (SIGTERM: graceful; SIGINT: fast; SIGQUIT: hand the listening sockets to a new
//! process, then graceful), so this runs outside any tokio runtime.
//!
//! Graceful restart (pingora's upgrade): `aerugo edge --upgrade` builds everything (cache
//! index, TLS, upstreams), then listens on the upgrade socket and waits (about 5 s) for the
//! running process; that one, on SIGQUIT, sends its listening sockets there, keeps accepting
//! for 5 more seconds (pingora's `CLOSE_TIMEOUT`), then stops accepting and gives in-flight
//! requests `grace_period_seconds`. The listening sockets are never closed, so no connection is
//! refused across the switch.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pingora::apps::HttpServerOptions;
use pingora::lb::LoadBalancer;
use pingora::lb::health_check::TcpHealthCheck;
use pingora::lb::selection::RoundRobin;
use pingora::listeners::tls::TlsSettings;
use pingora::server::ShutdownWatch;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::{BackgroundService, background_service};
use pingora::services::listening::Service;

use super::cache::DiskCache;
use super::confirm::Confirmations;
use super::connection::{AwaitedHeaders, ConnectionTimeouts, EdgeApp, TlsAdmission};
use super::jwks::{HealthyCores, TokenKeys};
use super::mirror::Mirror;
use super::proxy::{EdgeProxy, Mode};
use crate::auth::token::TokenParties;
use crate::config::{Config, EdgeConfig, MirrorUpstream};
use crate::limits::connections::ConnectionLimits;

/// Runs the edge until a shutdown signal. With `upgrade`, takes the listening sockets over
/// from the edge running on the same upgrade socket instead of binding them.
pub fn run(config: &Config, upgrade: bool) -> anyhow::Result<()> {
    let edge = &config.edge;
    // pingora's TLS uses ring while reqwest and others use aws-lc-rs; name one process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let upgrade_socket = edge.upgrade_socket_path();
    let conf = ServerConf {
        threads: edge.threads,
        grace_period_seconds: Some(edge.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(edge.graceful_shutdown_timeout_seconds),
        upgrade_sock: upgrade_socket.to_string_lossy().into_owned(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    // Everything slow or fallible happens before the sockets are taken over, so the new
    // process accepts as soon as it has them.
    let cache = Arc::new(
        DiskCache::open(&edge.cache_dir, edge.cache_max_bytes)
            .with_context(|| format!("opening the edge cache at {}", edge.cache_dir.display()))?,
    );
    let mode = if edge.gateway.cores.is_empty() {
        Mode::Mirror(Arc::new(Mirror::new(
            &edge.upstreams,
            cache,
            confirmations(edge),
        )?))
    } else {
        gateway(&mut server, edge, cache)?
    };
    let mut service = listening_service(&server, edge, mode);
    service.add_tcp(&edge.listen_address);
    if let (Some(addr), Some(cert), Some(key)) = (
        &edge.tls_listen_address,
        &edge.tls_cert_path,
        &edge.tls_key_path,
    ) {
        let mut tls = TlsSettings::intermediate(&cert.to_string_lossy(), &key.to_string_lossy())
            .map_err(|e| anyhow::anyhow!("loading the TLS certificate and key: {e}"))?;
        tls.enable_h2();
        service.add_tls_with_settings(addr, None, tls);
    }
    server.add_service(service);
    if upgrade {
        if let Some(dir) = upgrade_socket
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating {} for the upgrade socket", dir.display()))?;
        }
        tracing::info!(
            socket = %upgrade_socket.display(),
            "waiting for the running edge to hand over its listening sockets; send it SIGQUIT"
        );
    }
    // Takes the sockets over when upgrading (pingora exits the process when none arrive).
    server.bootstrap();
    tracing::info!(listen = %edge.listen_address, tls = ?edge.tls_listen_address, upgrade, "aerugo edge starting");
    server.run(RunArgs::default());
    Ok(())
}

/// The service on the edge's listeners: [`EdgeApp`] (connection caps and timeouts) around
/// pingora's proxy of [`EdgeProxy`].
fn listening_service(server: &Server, edge: &EdgeConfig, mode: Mode) -> Service<EdgeApp> {
    let timeouts = ConnectionTimeouts {
        header_read: Duration::from_secs(edge.header_read_timeout_seconds),
        keepalive_idle: Duration::from_secs(edge.keepalive_idle_timeout_seconds),
    };
    #[cfg(target_os = "linux")]
    match crate::limits::raise_nofile_limit() {
        // A proxied request holds a second descriptor (its upstream connection), and the
        // cache and fills hold files too.
        Ok(limit) if (edge.max_connections as u64).saturating_mul(2) > limit => tracing::warn!(
            limit,
            max_connections = edge.max_connections,
            "edge.max_connections is more than half the open file limit; accepts may fail \
             with 'Too many open files' before the cap is reached"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "could not raise the open file limit"),
    }
    let awaited = Arc::new(AwaitedHeaders::default());
    let mut proxy = pingora::proxy::http_proxy(
        &server.configuration,
        EdgeProxy {
            mode,
            awaited: Arc::clone(&awaited),
        },
    );
    let mut options = HttpServerOptions::default();
    options.h2_idle_timeout = Some(timeouts.keepalive_idle);
    proxy.server_options = Some(options);
    let limits = ConnectionLimits::new(edge.max_connections, edge.max_connections_per_client);
    let app = EdgeApp::new(proxy, Arc::clone(&limits), awaited, timeouts);
    let mut service = Service::new("aerugo edge".into(), app);
    service.set_connection_filter(limits.clone());
    // Set before the listeners are added, so the TLS one gets it (`EdgeApp` relies on that).
    service
        .endpoints()
        .set_pre_tls_callback(Arc::new(TlsAdmission {
            limits,
            handshake_start_timeout: timeouts.header_read,
        }));
    service
}

/// Gateway mode: a health-checked round robin over the cores, plus a blob cache whose
/// "upstreams" are the cores themselves.
fn gateway(server: &mut Server, edge: &EdgeConfig, cache: Arc<DiskCache>) -> anyhow::Result<Mode> {
    let mut lb = LoadBalancer::try_from_iter(edge.gateway.cores.iter().map(String::as_str))
        .context("resolving the gateway's core addresses")?;
    lb.set_health_check(TcpHealthCheck::new());
    lb.health_check_frequency = Some(Duration::from_secs(
        edge.gateway.health_check_interval_seconds.max(1),
    ));
    let service = background_service("core health check", lb);
    let cores = service.task();
    server.add_service(service);
    let gateway = &edge.gateway;
    let upstreams: Vec<MirrorUpstream> = cores
        .backends()
        .get_backend()
        .iter()
        .map(|backend| {
            let mut upstream = MirrorUpstream::default();
            upstream.client.name = backend.addr.to_string();
            upstream.client.url = format!("http://{}", backend.addr);
            // Fills speak for every client coalesced on them, so as the edge's own account.
            upstream.client.username = gateway.service_username.clone();
            upstream.client.password = gateway.service_password.clone();
            upstream
        })
        .collect();
    let mirror = Arc::new(Mirror::new(&upstreams, cache, confirmations(edge))?);
    let parties = TokenParties {
        issuer: gateway.issuer.clone(),
        service: gateway.service.clone(),
    };
    let keys = Arc::new(
        TokenKeys::open(parties, &edge.cache_dir, healthy_cores(&cores))
            .context("building the token-key client")?,
    );
    let refresh = KeyRefresh {
        keys: Arc::clone(&keys),
        every: Duration::from_secs(gateway.jwks_refresh_seconds.max(1)),
    };
    server.add_service(background_service("token keys", refresh));
    Ok(Mode::Gateway {
        cores,
        mirror,
        keys,
        connect_timeout: Duration::from_secs(gateway.connect_timeout_seconds),
    })
}

/// The cores the health check passes, as base URLs.
fn healthy_cores(cores: &Arc<LoadBalancer<RoundRobin>>) -> HealthyCores {
    let cores = Arc::clone(cores);
    Box::new(move || {
        let backends = cores.backends();
        backends
            .get_backend()
            .iter()
            .filter(|backend| backends.ready(backend))
            .map(|backend| format!("http://{}", backend.addr))
            .collect()
    })
}

/// Fetches the cores' token keys at start, then every `jwks_refresh_seconds`.
struct KeyRefresh {
    keys: Arc<TokenKeys>,
    every: Duration,
}

#[async_trait::async_trait]
impl BackgroundService for KeyRefresh {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tokio::select! {
            () = self.keys.keep_fresh(self.every) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// The store of the origin's confirmations, sized and timed by `[edge]`.
fn confirmations(edge: &EdgeConfig) -> Confirmations {
    Confirmations::new(
        Duration::from_secs(edge.confirm_ttl_seconds),
        Duration::from_secs(edge.confirm_stale_seconds),
        edge.confirm_max_entries,
    )
}
