//! The hot paths one at a time, for an instruction counter rather than a clock: hashing a
//! 1 MiB chunk of a push, parsing a blob route and a manifest-by-tag route, and parsing an
//! OCI manifest with 20 layers (the inputs of `benches/digest.rs` and `benches/parse.rs`).
//!
//!     HOT_PATH=path_blob_by_digest HOT_PATH_ITERATIONS=100000 \
//!         valgrind --tool=callgrind target/release/deps/hot_paths-…
//!
//! Without `HOT_PATH` it lists the names. `scripts/bench-callgrind.sh` runs each one with N
//! and 2N iterations: the set-up here is in both runs, so it cancels out of the difference.

use std::hint::black_box;

use aerugo::oci::{Algorithm, Hasher, manifest, path};

/// A hot path by name, as a closure over inputs built once beforehand.
type HotPath = (&'static str, Box<dyn Fn()>);

fn hot_paths() -> Vec<HotPath> {
    let chunk = vec![0x5au8; 1 << 20];
    let blob_path = format!("/v2/team/sub/app/blobs/sha256:{}", "a".repeat(64));
    let manifest_json = manifest_with_layers(20);
    vec![
        (
            "hash_sha256_1mib",
            Box::new(move || {
                let mut hasher = Hasher::new(Algorithm::Sha256);
                hasher.update(black_box(&chunk));
                black_box(hasher.finish());
            }),
        ),
        (
            "path_blob_by_digest",
            Box::new(move || {
                black_box(path::parse(black_box(&blob_path)).expect("a blob route"));
            }),
        ),
        (
            "path_manifest_by_tag",
            Box::new(|| {
                let route = path::parse(black_box("/v2/team/sub/app/manifests/v1.2.3"));
                black_box(route.expect("a manifest route"));
            }),
        ),
        (
            "manifest_parse_20_layers",
            Box::new(move || {
                let parsed = manifest::parse(
                    Some(manifest::OCI_MANIFEST),
                    black_box(manifest_json.as_bytes()),
                );
                black_box(parsed.expect("a valid manifest"));
            }),
        ),
    ]
}

fn manifest_with_layers(count: usize) -> String {
    let layers: Vec<String> = (0..count)
        .map(|i| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{i:064x}","size":{}}}"#,
                1000 + i
            )
        })
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":1000}},"layers":[{}]}}"#,
        manifest::OCI_MANIFEST,
        "a".repeat(64),
        layers.join(",")
    )
}

fn main() {
    let hot_paths = hot_paths();
    let Ok(wanted) = std::env::var("HOT_PATH") else {
        for (name, _) in &hot_paths {
            println!("{name}");
        }
        return;
    };
    let (_, run) = hot_paths
        .iter()
        .find(|(name, _)| *name == wanted)
        .unwrap_or_else(|| {
            let names: Vec<_> = hot_paths.iter().map(|(name, _)| *name).collect();
            panic!("HOT_PATH={wanted}: one of {names:?}")
        });
    // An unreadable count is an error, not a default: a silent default would change the
    // difference between the N and 2N runs without anyone noticing.
    let iterations: u64 = std::env::var("HOT_PATH_ITERATIONS").map_or(1000, |n| {
        n.parse()
            .unwrap_or_else(|_| panic!("HOT_PATH_ITERATIONS={n}: not a count"))
    });
    for _ in 0..iterations {
        run();
    }
}
