//! Builds and runs the pingora server of `aerugo edge`. pingora owns its runtimes and its
//! signals (SIGTERM: graceful; SIGINT: fast), so this runs outside any tokio runtime.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pingora::lb::LoadBalancer;
use pingora::lb::health_check::TcpHealthCheck;
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;

use super::cache::DiskCache;
use super::mirror::{Mirror, MirrorUpstream};
use super::proxy::{EdgeProxy, Mode};
use crate::config::{Config, EdgeConfig};

/// Runs the edge until a shutdown signal.
pub fn run(config: &Config) -> anyhow::Result<()> {
    let edge = &config.edge;
    // pingora's TLS uses ring while reqwest and others use aws-lc-rs; name one process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let conf = ServerConf {
        threads: edge.threads,
        grace_period_seconds: Some(edge.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(edge.graceful_shutdown_timeout_seconds),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let cache = Arc::new(
        DiskCache::open(&edge.cache_dir, edge.cache_max_bytes)
            .with_context(|| format!("opening the edge cache at {}", edge.cache_dir.display()))?,
    );
    let mode = if edge.gateway.cores.is_empty() {
        Mode::Mirror(Arc::new(Mirror::new(&edge.upstreams, cache)?))
    } else {
        gateway(&mut server, edge, cache)?
    };
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, EdgeProxy { mode });
    proxy.add_tcp(&edge.listen_address);
    if let (Some(addr), Some(cert), Some(key)) = (
        &edge.tls_listen_address,
        &edge.tls_cert_path,
        &edge.tls_key_path,
    ) {
        check_tls_files(cert, key)?;
        let mut tls = TlsSettings::intermediate(&cert.to_string_lossy(), &key.to_string_lossy())
            .map_err(|e| anyhow::anyhow!("loading the TLS certificate and key: {e}"))?;
        tls.enable_h2();
        proxy.add_tls_with_settings(addr, None, tls);
    }
    server.add_service(proxy);
    tracing::info!(listen = %edge.listen_address, tls = ?edge.tls_listen_address, "aerugo edge starting");
    server.run(RunArgs::default());
    Ok(())
}

/// pingora loads the certificate lazily and panics on a bad file; read both now so a wrong path
/// or a non-PEM file stops start-up with a clear message.
fn check_tls_files(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<()> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("reading TLS certificate {}: {e}", cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "TLS certificate {} holds no certificate",
        cert.display()
    );
    PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("reading TLS key {}: {e}", key.display()))?;
    Ok(())
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
    let upstreams: Vec<MirrorUpstream> = cores
        .backends()
        .get_backend()
        .iter()
        .map(|backend| {
            let mut upstream = MirrorUpstream::default();
            upstream.client.name = backend.addr.to_string();
            upstream.client.url = format!("http://{}", backend.addr);
            upstream
        })
        .collect();
    let mirror = Arc::new(Mirror::new(&upstreams, cache)?);
    Ok(Mode::Gateway { cores, mirror })
}
