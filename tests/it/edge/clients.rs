//! Real clients through the edge as a mirror. skopeo reads a `registries.conf` given with
//! `--registries-conf` (it ignores `CONTAINERS_REGISTRIES_CONF`). containerd (`ctr`) is not
//! installed here, so there is no `hosts.toml` test.

use std::path::Path;

use crate::skopeo::skopeo;
use crate::support::distribution::DistributionRegistry;
use crate::support::edge::{EdgeProcess, metric_sum, upstream};
use crate::support::oci_layout;
use crate::support::require_tool;
use crate::support::seed::{SeedImage, Seeder};

/// `skopeo copy docker://UPSTREAM/team/app:1.0 oci:DIR:x` with the edge configured as the
/// upstream's mirror: the image arrives intact, the edge fetched each blob once, and a second
/// copy succeeds from the edge alone once the upstream is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pulls_through_the_edge_as_a_registries_conf_mirror() {
    if !require_tool("skopeo") || !require_tool("docker-registry") {
        return;
    }
    let mut registry = DistributionRegistry::start().await;
    let image = SeedImage::new("skopeo through the mirror", &[1 << 20, 4096]);
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
    let check = |layout: &Path| {
        let desc = oci_layout::resolve_tag(layout, "x");
        assert_eq!(desc.digest, image.digest, "manifest digest");
        let pulled = oci_layout::read_image(layout, &desc);
        assert!(pulled.manifest_bytes == image.manifest, "manifest bytes");
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
