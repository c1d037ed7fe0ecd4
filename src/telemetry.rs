//! Logs (tracing, pretty or JSON) and Prometheus metrics.
//!
//! Metrics live in one process-wide registry so every layer records into the same place and
//! `/metrics` renders it; nothing here depends on the rest of the crate.

use std::sync::LazyLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The registry's metrics.
pub struct Metrics {
    registry: Registry,
    /// Requests by route kind, method and status code.
    pub http_requests: IntCounterVec,
    /// Request latency by route kind and method.
    pub http_duration: HistogramVec,
    /// Blob bytes accepted from clients.
    pub bytes_received: IntCounter,
    /// Blob and manifest bytes sent to clients.
    pub bytes_sent: IntCounter,
    pub uploads_started: IntCounter,
    pub uploads_completed: IntCounter,
    /// Latency of blob store operations by operation name.
    pub storage_duration: HistogramVec,
    /// Client connections the core has open.
    pub connections_open: IntGauge,
    /// Connections closed at accept, by the cap they hit.
    pub connections_refused: IntCounterVec,
    /// Calls into the `Cache` by backend (`memory`, `redis`), operation and result: `hit` or
    /// `miss` for reads, `ok` for the rest, `error` when the backend failed and `skipped` when
    /// it was not asked (the Redis cache is waiting out a failure).
    pub cache_requests: IntCounterVec,
    pub edge: EdgeMetrics,
}

/// Metrics of the edge cache (`aerugo edge`).
pub struct EdgeMetrics {
    /// Requests answered from the disk cache, by kind (`blob`, `manifest`, `tag`).
    pub cache_hits: IntCounterVec,
    /// Requests that had to go to the origin, by kind.
    pub cache_misses: IntCounterVec,
    /// Body bytes sent to clients, by source (`cache` or `fill`).
    pub bytes_served: IntCounterVec,
    /// Clients that joined a fetch already in flight instead of starting their own.
    pub coalesced_waiters: IntCounter,
    /// Requests sent to an origin, by upstream and kind.
    pub upstream_fetches: IntCounterVec,
    /// Failed origin requests, by upstream and reason.
    pub upstream_errors: IntCounterVec,
    pub evictions: IntCounter,
    pub disk_usage_bytes: IntGauge,
    /// Responses served stale because the origin failed.
    pub stale_serves: IntCounter,
    /// Reads of cached content by how the right to serve it was settled: `hit` (a fresh
    /// confirmation), `miss` (the origin was asked and confirmed), `refused`, `stale` (the
    /// origin could not be asked; an older confirmation served), `unavailable`.
    pub confirmations: IntCounterVec,
}

fn edge_metrics(r: &Registry) -> Result<EdgeMetrics, prometheus::Error> {
    let counter_vec =
        |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            r.register(Box::new(c.clone()))?;
            Ok(c)
        };
    let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
        let c = IntCounter::new(name, help)?;
        r.register(Box::new(c.clone()))?;
        Ok(c)
    };
    let disk_usage_bytes = IntGauge::new("edge_disk_usage_bytes", "Bytes held by the edge cache")?;
    r.register(Box::new(disk_usage_bytes.clone()))?;
    Ok(EdgeMetrics {
        cache_hits: counter_vec(
            "edge_cache_hits_total",
            "Edge cache hits by kind",
            &["kind"],
        )?,
        cache_misses: counter_vec(
            "edge_cache_misses_total",
            "Edge cache misses by kind",
            &["kind"],
        )?,
        bytes_served: counter_vec(
            "edge_bytes_served_total",
            "Bytes sent by the edge by source",
            &["source"],
        )?,
        coalesced_waiters: counter(
            "edge_coalesced_waiters_total",
            "Clients that joined an in-flight fetch",
        )?,
        upstream_fetches: counter_vec(
            "edge_upstream_fetches_total",
            "Requests to origins by upstream and kind",
            &["upstream", "kind"],
        )?,
        upstream_errors: counter_vec(
            "edge_upstream_errors_total",
            "Failed origin requests by upstream and reason",
            &["upstream", "reason"],
        )?,
        evictions: counter(
            "edge_evictions_total",
            "Entries evicted from the edge cache",
        )?,
        disk_usage_bytes,
        stale_serves: counter(
            "edge_stale_serves_total",
            "Responses served stale because the origin failed",
        )?,
        confirmations: counter_vec(
            "edge_confirmations_total",
            "Cached reads by how the origin's confirmation was settled",
            &["outcome"],
        )?,
    })
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new_custom(Some("aerugo".into()), None)?;
    let latency_buckets = vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
    ];
    let metrics = Metrics {
        http_requests: IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )?,
        http_duration: HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency")
                .buckets(latency_buckets.clone()),
            &["route", "method"],
        )?,
        bytes_received: IntCounter::new("bytes_received_total", "Blob bytes received")?,
        bytes_sent: IntCounter::new("bytes_sent_total", "Blob and manifest bytes sent")?,
        uploads_started: IntCounter::new(
            "upload_sessions_started_total",
            "Upload sessions started",
        )?,
        uploads_completed: IntCounter::new(
            "upload_sessions_completed_total",
            "Upload sessions that published a blob",
        )?,
        storage_duration: HistogramVec::new(
            HistogramOpts::new(
                "storage_operation_duration_seconds",
                "Blob store operation latency",
            )
            .buckets(latency_buckets),
            &["operation"],
        )?,
        connections_open: IntGauge::new("connections_open", "Client connections open")?,
        connections_refused: IntCounterVec::new(
            Opts::new(
                "connections_refused_total",
                "Connections closed at accept, by the cap they hit",
            ),
            &["reason"],
        )?,
        cache_requests: IntCounterVec::new(
            Opts::new(
                "cache_requests_total",
                "Cache calls by backend, operation and result",
            ),
            &["backend", "op", "result"],
        )?,
        edge: edge_metrics(&registry)?,
        registry,
    };
    let r = &metrics.registry;
    r.register(Box::new(metrics.http_requests.clone()))?;
    r.register(Box::new(metrics.http_duration.clone()))?;
    r.register(Box::new(metrics.bytes_received.clone()))?;
    r.register(Box::new(metrics.bytes_sent.clone()))?;
    r.register(Box::new(metrics.uploads_started.clone()))?;
    r.register(Box::new(metrics.uploads_completed.clone()))?;
    r.register(Box::new(metrics.storage_duration.clone()))?;
    r.register(Box::new(metrics.connections_open.clone()))?;
    r.register(Box::new(metrics.connections_refused.clone()))?;
    r.register(Box::new(metrics.cache_requests.clone()))?;
    Ok(metrics)
}

static METRICS: LazyLock<Metrics> =
    LazyLock::new(|| build().expect("metric definitions are static and valid"));

pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Installs the global tracing subscriber. `format` is `pretty` or `json`.
pub fn init_logging(filter: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let _ = if format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_registered_metrics() {
        let m = super::metrics();
        m.bytes_received.inc_by(3);
        m.http_requests
            .with_label_values(&["blob", "GET", "200"])
            .inc();
        let text = m.render();
        assert!(text.contains("aerugo_bytes_received_total"));
        assert!(
            text.contains(
                "aerugo_http_requests_total{method=\"GET\",route=\"blob\",status=\"200\"}"
            )
        );
    }
}
