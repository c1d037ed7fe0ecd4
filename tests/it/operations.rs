//! The monitoring files against the nodes they watch: every `aerugo_*` metric that an alert
//! rule (`deploy/prometheus/alerts.yml`) or a dashboard panel
//! (`deploy/grafana/aerugo-dashboard.json`) asks for is exported by the node kind that the
//! query selects by its `job`, and promtool accepts the files. A metric renamed in the code
//! would otherwise leave an alert that can never fire and nobody would notice.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::edge::{expect_manifest, fetch};
use crate::support::edge::{
    Closed, EdgeProcess, free_addr, read_response, read_to_close, upstream,
};
use crate::support::image::TestImage;
use crate::support::seed::Seeder;
use crate::support::{TestServer, require_tool};

/// A metric name in PromQL or in a Prometheus text exposition.
static METRIC: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\baerugo_\w+").expect("regex"));
/// The `job` a PromQL selector asks for.
static JOB: LazyLock<Regex> = LazyLock::new(|| Regex::new(r#"\bjob="([^"]*)""#).expect("regex"));

/// The node kinds, by the scrape jobs of `prometheus.yml`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Node {
    Core,
    Edge,
}

impl Node {
    const ALL: [Node; 2] = [Node::Core, Node::Edge];

    fn job(self) -> &'static str {
        match self {
            Node::Core => "aerugo-core",
            Node::Edge => "aerugo-edge",
        }
    }
}

/// PromQL (with whatever surrounds it: an alert rule's labels and annotations) and where it
/// was found, for the failure messages.
struct Query {
    source: String,
    text: String,
}

impl Query {
    /// The node kind the query is about. Every node renders the whole process-wide registry
    /// (an edge shows the core's unlabelled counters at zero), so only the job tells them
    /// apart: a query must name exactly one.
    fn node(&self) -> Result<Node, String> {
        let jobs: BTreeSet<&str> = JOB
            .captures_iter(&self.text)
            .map(|c| c.extract::<1>().1[0])
            .collect();
        let node = match Vec::from_iter(&jobs)[..] {
            [job] => Node::ALL.into_iter().find(|node| node.job() == *job),
            _ => None,
        };
        node.ok_or_else(|| {
            format!(
                "{} selects jobs {jobs:?}; it must select exactly one of {:?}",
                self.source,
                Node::ALL.map(Node::job)
            )
        })
    }

    fn metrics(&self) -> impl Iterator<Item = &str> {
        METRIC.find_iter(&self.text).map(|m| m.as_str())
    }
}

fn deploy_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Each alert rule's text, from its `- alert:` line to the next rule.
fn alert_rules() -> Vec<Query> {
    static RULE_START: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?m)^\s*- alert:").expect("regex"));
    let text = read(&deploy_file("prometheus/alerts.yml"));
    RULE_START
        .split(&text)
        .skip(1)
        .map(|rule| Query {
            source: format!("alert {}", rule.lines().next().unwrap_or("").trim()),
            text: rule.to_owned(),
        })
        .collect()
}

/// Every panel query (`expr`) of the dashboard, named by its panel's title.
fn dashboard_queries() -> Vec<Query> {
    fn collect(value: &Value, title: &str, queries: &mut Vec<Query>) {
        match value {
            Value::Object(fields) => {
                let title = fields.get("title").and_then(Value::as_str).unwrap_or(title);
                if let Some(expr) = fields.get("expr").and_then(Value::as_str) {
                    queries.push(Query {
                        source: format!("dashboard panel {title:?}"),
                        text: expr.to_owned(),
                    });
                }
                fields.values().for_each(|v| collect(v, title, queries));
            }
            Value::Array(items) => items.iter().for_each(|v| collect(v, title, queries)),
            _ => {}
        }
    }
    let path = deploy_file("grafana/aerugo-dashboard.json");
    let dashboard: Value = serde_json::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let mut queries = Vec::new();
    collect(&dashboard, "", &mut queries);
    assert!(!queries.is_empty(), "the dashboard has no panel queries");
    queries
}

/// The sample names of a text exposition. A histogram's samples are its `_bucket`, `_sum` and
/// `_count` series, so these are exactly the names a PromQL selector can match.
fn exported(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_scrape_jobs_are_the_ones_the_queries_select() {
    static JOB_NAME: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r#"(?m)^\s*- job_name:\s*"?([\w-]+)"#).expect("regex"));
    let config = read(&deploy_file("prometheus/prometheus.yml"));
    let jobs: BTreeSet<&str> = JOB_NAME
        .captures_iter(&config)
        .filter_map(|c| c.get(1).map(|m| m.as_str()))
        .collect();
    assert_eq!(jobs, BTreeSet::from(Node::ALL.map(Node::job)));
}

/// A client address the harness does not use (it connects from 127.0.0.1), capped at
/// [`PER_CLIENT_CAP`] connections on the core.
const CAPPED_CLIENT: &str = "127.0.0.2";
const PER_CLIENT_CAP: usize = 2;
const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: aerugo\r\n\r\n";

async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().expect("source address"))
        .expect("binding a loopback source address");
    socket.connect(addr).await.expect("connecting")
}

/// Fills [`CAPPED_CLIENT`]'s connection cap on `addr` and opens one more, which the node
/// closes at accept: `aerugo_connections_refused_total` has a series only after a refusal.
async fn refuse_one_connection(addr: SocketAddr) {
    let mut admitted = Vec::new();
    for _ in 0..PER_CLIENT_CAP {
        let mut stream = connect_from(CAPPED_CLIENT, addr).await;
        stream.write_all(HEALTHZ).await.expect("writing /healthz");
        read_response(&mut stream)
            .await
            .expect("a connection under the cap is served");
        admitted.push(stream);
    }
    let mut over = connect_from(CAPPED_CLIENT, addr).await;
    let _ = over.write_all(HEALTHZ).await;
    let (received, closed) = read_to_close(&mut over).await;
    assert!(
        received.is_empty() && closed != Closed::StillOpen,
        "a connection over the per-client cap of {addr} was served ({closed:?})"
    );
}

/// A core and an edge mirroring it, after the traffic that gives every labelled metric a
/// series (a push, a miss and a hit of each kind, an origin that is down, a connection the
/// core refuses): their `/metrics`.
async fn scrape_exercised_nodes() -> BTreeMap<Node, String> {
    let core = TestServer::start_with(|config| {
        config.server.max_connections_per_client = PER_CLIENT_CAP;
        // Only the harness and the edge (127.0.0.1) are trusted proxies, which no per-client
        // cap holds.
        config.server.trusted_proxies = vec!["127.0.0.1/32".into()];
    })
    .await;
    let image = TestImage::with_layers("watched by Prometheus", &[4096]);
    Seeder::new(&core.url(""))
        .push_image("team/app", "1.0", &image)
        .await;

    let mut origin = upstream("core", &core.url(""));
    origin.default = true;
    // Nothing listens there: an origin outage.
    let offline = upstream("offline", &format!("http://{}", free_addr()));
    let edge = EdgeProcess::start(|e| e.upstreams = vec![origin, offline]).await;
    let layer = image.layer_digest(0);
    for _ in 0..2 {
        expect_manifest(
            &edge,
            "/v2/team/app/manifests/1.0",
            &image.digest,
            &image.manifest,
        )
        .await;
        fetch(
            &edge.http,
            &edge.url(&format!("/v2/team/app/blobs/{layer}")),
            None,
        )
        .await
        .assert_blob(&layer, image.layers[0].size);
    }
    let failed = edge.get("/v2/offline/team/app/manifests/1.0").await;
    assert!(
        failed.status().is_server_error(),
        "a pull from an origin that is down: {}",
        failed.status()
    );
    refuse_one_connection(core.addr).await;

    let core_metrics = reqwest::get(core.url("/metrics"))
        .await
        .expect("GET /metrics of the core");
    assert_eq!(core_metrics.status(), 200, "core /metrics");
    BTreeMap::from([
        (Node::Core, core_metrics.text().await.expect("metrics text")),
        (Node::Edge, edge.metrics().await),
    ])
}

/// Each (node kind, metric) pair is checked on its own, so a metric both kinds export
/// (`aerugo_connections_open`) can serve both. What this cannot catch: every node also renders
/// the other kind's unlabelled counters and gauges (at zero), so a core query for
/// `aerugo_edge_evictions_total` would pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_dashboard_ask_only_for_metrics_their_nodes_export() {
    // (node kind, metric) → the queries asking for it.
    let mut wanted: BTreeMap<(Node, &str), Vec<&str>> = BTreeMap::new();
    let mut unassigned = Vec::new();
    let mut queries = alert_rules();
    queries.extend(dashboard_queries());
    for query in &queries {
        match query.node() {
            Ok(node) => {
                for metric in query.metrics() {
                    wanted
                        .entry((node, metric))
                        .or_default()
                        .push(&query.source);
                }
            }
            Err(problem) => unassigned.push(problem),
        }
    }
    assert!(unassigned.is_empty(), "{}", unassigned.join("\n"));

    let scraped = scrape_exercised_nodes().await;
    let exported: BTreeMap<Node, BTreeSet<String>> = scraped
        .iter()
        .map(|(&node, text)| (node, exported(text)))
        .collect();
    let missing: Vec<String> = wanted
        .iter()
        .filter(|((node, metric), _)| !exported[node].contains(*metric))
        .map(|((node, metric), sources)| {
            format!("{metric}: not exported by the {node:?} node, asked for by {sources:?}")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{}\n\ncore /metrics:\n{}\nedge /metrics:\n{}",
        missing.join("\n"),
        scraped[&Node::Core],
        scraped[&Node::Edge]
    );
}

/// The dashboard's queries as a rules file, so that promtool parses them too. Grafana's
/// interval variables (`$__rate_interval`) become a duration; the others select instances in
/// regex matchers and become `.*`.
fn dashboard_queries_as_rules() -> String {
    static VARIABLE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\$\{?(\w+)\}?").expect("regex"));
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, query) in dashboard_queries().iter().enumerate() {
        let expr = VARIABLE.replace_all(&query.text, |c: &regex::Captures| {
            if c[1].starts_with("__") { "5m" } else { ".*" }
        });
        // A JSON string is a YAML double-quoted scalar.
        let expr = serde_json::to_string(&expr).expect("a string as JSON");
        rules.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: {expr}\n"
        ));
    }
    rules
}

/// `promtool check WHAT FILES…`, which must succeed.
fn promtool_check(what: &str, files: &[&Path]) {
    let output = Command::new("promtool")
        .arg("check")
        .arg(what)
        .args(files)
        .output()
        .expect("running promtool");
    assert!(
        output.status.success(),
        "promtool check {what} {files:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn promtool_accepts_the_configuration_the_alerts_and_the_dashboard_queries() {
    if !require_tool("promtool") {
        return;
    }
    let work = tempfile::tempdir().expect("temp dir");
    let dashboard_rules = work.path().join("dashboard-queries.yml");
    std::fs::write(&dashboard_rules, dashboard_queries_as_rules()).expect("writing the rules");
    promtool_check("config", &[&deploy_file("prometheus/prometheus.yml")]);
    promtool_check(
        "rules",
        &[&deploy_file("prometheus/alerts.yml"), &dashboard_rules],
    );
}
