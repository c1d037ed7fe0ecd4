//! Parsing on the request path: every request parses its route, every manifest push parses JSON.

use aerugo::oci::{manifest, path};
use criterion::{Criterion, criterion_group, criterion_main};

fn parsing(c: &mut Criterion) {
    let digest = format!("sha256:{}", "a".repeat(64));
    let blob_path = format!("/v2/team/sub/app/blobs/{digest}");
    c.bench_function("path_manifest_by_tag", |b| {
        b.iter(|| path::parse(std::hint::black_box("/v2/team/sub/app/manifests/v1.2.3")))
    });
    c.bench_function("path_blob_by_digest", |b| {
        b.iter(|| path::parse(std::hint::black_box(&blob_path)))
    });
    let layers: Vec<String> = (0..20)
        .map(|i| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{:064x}","size":{}}}"#,
                i,
                1000 + i
            )
        })
        .collect();
    let manifest_json = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{digest}","size":1000}},"layers":[{}]}}"#,
        manifest::OCI_MANIFEST,
        layers.join(",")
    );
    c.bench_function("manifest_parse_20_layers", |b| {
        b.iter(|| {
            manifest::parse(
                Some(manifest::OCI_MANIFEST),
                std::hint::black_box(manifest_json.as_bytes()),
            )
        })
    });
}

criterion_group!(benches, parsing);
criterion_main!(benches);
