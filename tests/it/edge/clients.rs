//! Real clients through the edge as a mirror. skopeo reads a `registries.conf` given with
//! `--registries-conf` (it ignores `CONTAINERS_REGISTRIES_CONF`); containerd's `ctr` reads a
//! `hosts.toml` under `--hosts-dir`, talking to a private containerd started by the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::skopeo::skopeo;
use crate::support::distribution::DistributionRegistry;
use crate::support::edge::{CoreProcess, EdgeProcess, metric_sum, upstream};
use crate::support::engines::{as_root, command_as};
use crate::support::image::{TestImage, layout};
use crate::support::process::{read_log, terminate};
use crate::support::require_tool;
use crate::support::seed::Seeder;

/// `skopeo copy docker://UPSTREAM/team/app:1.0 oci:DIR:x` with the edge configured as the
/// upstream's mirror: the image arrives intact, the edge fetched each blob once, and a second
/// copy succeeds from the edge alone once the upstream is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pulls_through_the_edge_as_a_registries_conf_mirror() {
    if !require_tool("skopeo") || !require_tool("docker-registry") {
        return;
    }
    let mut registry = DistributionRegistry::start().await;
    let image = TestImage::with_layers("skopeo through the mirror", &[1 << 20, 4096]);
    Seeder::new(&registry.base_url())
        .push_image("team/app", "1.0", &image)
        .await;
    let mut site = upstream("dist", &registry.base_url());
    site.default = true;
    let edge = EdgeProcess::start(|e| e.upstreams = vec![site]).await;

    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\n\
             prefix = \"{up}\"\n\
             location = \"{up}\"\n\
             insecure = true\n\
             [[registry.mirror]]\n\
             location = \"{edge}\"\n\
             insecure = true\n",
            up = registry.host(),
            edge = edge.host(),
        ),
    )
    .expect("writing registries.conf");
    let source = format!("docker://{}/team/app:1.0", registry.host());
    let copy = |into: &Path| {
        let conf = conf.display().to_string();
        let dest = format!("oci:{}:x", into.display());
        let source = source.clone();
        async move {
            skopeo(&[
                "--registries-conf",
                &conf,
                "copy",
                "--preserve-digests",
                "--src-tls-verify=false",
                "--retry-times=0",
                &source,
                &dest,
            ])
            .await;
        }
    };
    let check = |into: &Path| {
        let desc = layout::resolve_tag(into, "x");
        assert_eq!(desc.digest, image.digest, "manifest digest");
        let pulled = layout::read_image(into, &desc);
        assert!(pulled.manifest == image.manifest, "manifest bytes");
        assert_eq!(pulled.config.digest, image.config_digest());
        let layers: Vec<String> = pulled.layers.iter().map(|l| l.digest.clone()).collect();
        let expected: Vec<String> = (0..image.layers.len())
            .map(|i| image.layer_digest(i))
            .collect();
        assert_eq!(layers, expected, "layer digests");
    };

    let first = dir.path().join("first");
    copy(&first).await;
    check(&first);
    let metrics = edge.metrics().await;
    let m = |name: &str, labels: &[(&str, &str)]| metric_sum(&metrics, name, labels);
    assert_eq!(
        m(
            "aerugo_edge_upstream_fetches_total",
            &[("upstream", "dist"), ("kind", "blob")]
        ),
        image.blobs().len() as f64,
        "skopeo's blobs came through the edge, each fetched once; metrics:\n{metrics}"
    );
    // containers/image asks the mirror for the tag itself (`pull-from-mirror = "all"` is the
    // default), not only for digests.
    assert!(
        m("aerugo_edge_cache_misses_total", &[("kind", "tag")]) >= 1.0,
        "skopeo did not ask the mirror for the tag; metrics:\n{metrics}"
    );

    // Upstream gone: the mirror alone serves the tag (within its TTL) and every blob.
    registry.stop();
    let second = dir.path().join("second");
    copy(&second).await;
    check(&second);
    let metrics = edge.metrics().await;
    assert!(
        metric_sum(
            &metrics,
            "aerugo_edge_cache_hits_total",
            &[("kind", "blob")]
        ) >= image.blobs().len() as f64,
        "the second copy was served from the edge's cache; metrics:\n{metrics}"
    );
}

/// A private containerd (run as root) with its configuration, root, state and sockets in a
/// temp dir, and the CRI plugin (and the snapshotters that need kernel modules or special
/// filesystems) disabled. Stopped, and its files removed, when dropped.
struct Containerd {
    dir: tempfile::TempDir,
    /// `[]` as root, `["sudo", "-n"]` otherwise.
    prefix: Vec<&'static str>,
    child: Option<Child>,
}

impl Containerd {
    async fn start(prefix: Vec<&'static str>) -> Containerd {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = |p: &str| dir.path().join(p).display().to_string();
        let config = format!(
            "version = 2\n\
             root = \"{root}\"\n\
             state = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\", \
               \"io.containerd.snapshotter.v1.aufs\", \"io.containerd.snapshotter.v1.btrfs\", \
               \"io.containerd.snapshotter.v1.devmapper\", \"io.containerd.snapshotter.v1.zfs\"]\n\
             [grpc]\n  address = \"{grpc}\"\n\
             [ttrpc]\n  address = \"{ttrpc}\"\n\
             [debug]\n  address = \"\"\n\
             [metrics]\n  address = \"\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n",
            root = path("root"),
            state = path("state"),
            grpc = path("containerd.sock"),
            ttrpc = path("containerd.sock.ttrpc"),
            opt = path("opt"),
        );
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).expect("writing the containerd configuration");
        let log = std::fs::File::create(dir.path().join("containerd.log")).expect("log file");
        let child = command_as(&prefix, "containerd")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("running containerd");
        let mut containerd = Containerd {
            dir,
            prefix,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(Ok(Some(status))) = containerd.child.as_mut().map(Child::try_wait) {
                panic!(
                    "containerd exited during start-up ({status}); log:\n{}",
                    containerd.log()
                );
            }
            if containerd.socket().exists() && containerd.ctr(&["version"]).await.0 {
                return containerd;
            }
            assert!(
                Instant::now() < deadline,
                "containerd not serving on {} after 30 s; log:\n{}",
                containerd.socket().display(),
                containerd.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    fn log(&self) -> String {
        read_log(&self.dir.path().join("containerd.log"))
    }

    /// `ctr --address SOCK ARGS…` (2 minutes at most): whether it succeeded, and its output.
    async fn ctr(&self, args: &[&str]) -> (bool, String) {
        let run = tokio::process::Command::from(command_as(&self.prefix, "ctr"))
            .arg("--address")
            .arg(self.socket())
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(Duration::from_secs(120), run).await {
            Ok(Ok(out)) => (
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            ),
            Ok(Err(e)) => (false, format!("cannot run ctr: {e}")),
            Err(_) => (false, format!("ctr {args:?} took more than 2 minutes")),
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // SIGTERM (sudo relays it), SIGKILL after 10 s.
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(10));
        }
        if !self.prefix.is_empty() {
            // Root's files in the temp dir: remove them as root.
            let _ = command_as(&self.prefix, "rm")
                .arg("-rf")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// `ctr images pull --hosts-dir DIR UPSTREAM/team/app:1.0` with a `hosts.toml` naming the edge
/// as the upstream's mirror, against a private containerd: containerd resolves the tag and
/// fetches every blob through the edge (which selects the upstream by containerd's
/// `?ns=HOST:PORT`, the upstream being no default), unpacks the image, and records the
/// upstream's manifest digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_pulls_through_the_edge_as_a_hosts_toml_mirror() {
    if !require_tool("containerd") || !require_tool("ctr") {
        return;
    }
    let Some(prefix) = as_root() else {
        let why = "containerd needs root: run the test as root or with passwordless sudo";
        assert!(
            std::env::var_os("AERUGO_REQUIRE_TOOLS").is_none(),
            "{why} (AERUGO_REQUIRE_TOOLS is set)"
        );
        eprintln!("SKIPPED: {why}");
        return;
    };
    let core = CoreProcess::start().await;
    let image = TestImage::unpackable("containerd through the mirror", &[1 << 20, 4096]);
    Seeder::new(&core.url(""))
        .push_image("team/app", "1.0", &image)
        .await;
    let site = upstream("core", &core.url(""));
    let edge = EdgeProcess::start(|e| e.upstreams = vec![site]).await;
    let containerd = Containerd::start(prefix).await;

    let hosts = tempfile::tempdir().expect("temp dir");
    let upstream_host = core.addr.to_string();
    std::fs::create_dir_all(hosts.path().join(&upstream_host)).expect("hosts dir");
    std::fs::write(
        hosts.path().join(&upstream_host).join("hosts.toml"),
        format!(
            "server = \"http://{upstream_host}\"\n\n\
             [host.\"http://{edge}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            edge = edge.host(),
        ),
    )
    .expect("writing hosts.toml");
    let reference = format!("{upstream_host}/team/app:1.0");
    let core_blob_gets = [("method", "GET"), ("route", "blob"), ("status", "200")];
    let gets_before = core.requests_served(&core_blob_gets).await;

    let hosts_dir = hosts.path().display().to_string();
    let (ok, output) = containerd
        .ctr(&[
            "images",
            "pull",
            "--hosts-dir",
            &hosts_dir,
            "--plain-http",
            "--snapshotter",
            "native",
            // The seeded image is linux/amd64, whatever this host is.
            "--platform",
            "linux/amd64",
            &reference,
        ])
        .await;
    assert!(
        ok,
        "ctr images pull failed:\n{output}\ncontainerd log:\n{}\nedge log:\n{}",
        containerd.log(),
        edge.log()
    );

    // containerd recorded the upstream's manifest digest and holds every blob.
    let (ok, listed) = containerd.ctr(&["images", "ls"]).await;
    assert!(ok, "ctr images ls: {listed}");
    let digest = listed
        .lines()
        .find_map(|line| {
            let mut columns = line.split_whitespace();
            (columns.next() == Some(reference.as_str()))
                .then(|| columns.nth(1).map(str::to_owned))
                .flatten()
        })
        .unwrap_or_else(|| panic!("{reference} not in ctr images ls:\n{listed}"));
    assert_eq!(digest, image.digest, "containerd's image digest");
    let (ok, content) = containerd.ctr(&["content", "ls", "--quiet"]).await;
    assert!(ok, "ctr content ls: {content}");
    for blob in image.blobs().iter().map(|b| &b.digest) {
        assert!(
            content.lines().any(|l| l.trim() == blob),
            "blob {blob} not in containerd's content store:\n{content}"
        );
    }

    // Everything came through the edge: it resolved the tag and fetched each blob once, and
    // the upstream saw no blob GET but the edge's.
    let metrics = edge.metrics().await;
    let m = |name: &str, labels: &[(&str, &str)]| metric_sum(&metrics, name, labels);
    let blobs = image.blobs().len() as f64;
    assert_eq!(
        m(
            "aerugo_edge_upstream_fetches_total",
            &[("upstream", "core"), ("kind", "blob")]
        ),
        blobs,
        "containerd's blobs came through the edge; metrics:\n{metrics}"
    );
    assert!(
        m("aerugo_edge_cache_misses_total", &[("kind", "tag")]) >= 1.0,
        "containerd did not resolve the tag through the edge; metrics:\n{metrics}"
    );
    assert_eq!(
        core.requests_served(&core_blob_gets).await - gets_before,
        blobs,
        "blob GETs the upstream answered: only the edge's"
    );
}
