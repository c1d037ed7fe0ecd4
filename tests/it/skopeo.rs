//! Real clients against a real server: skopeo (and podman when present) push to and pull from
//! an in-process Aerugo on a loopback port, with OCI image layouts generated on disk (there is
//! no internet here, so no image is ever fetched from elsewhere).
//!
//! Every push uses `--preserve-digests`: the generated layers are not really gzip, and without
//! it skopeo would recompress them for a `docker://` destination and the digests that come
//! back would differ from the ones written. With it, skopeo moves every byte untouched, so
//! each test compares the digests (and manifest bytes) it wrote with the ones it pulls back.
//!
//! Each test starts its own server (on the production stack too under
//! `AERUGO_TEST_STACK=production`, with presigned blob redirects under
//! `AERUGO_TEST_S3_REDIRECT=1`; `scripts/test.sh` runs all three) and skips (or fails, with `AERUGO_REQUIRE_TOOLS=1`, as in
//! `./scripts/test.sh`) when the client is not installed.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use super::support::engines::Podman;
use super::support::image::{
    Descriptor, EMPTY_DIGEST, OCI_INDEX, OCI_MANIFEST, Platform, TEST_ARTIFACT_TYPE, TestImage,
    TestIndex, fresh_seed, layout, sha256,
};
use super::support::{TestServer, require_tool};

/// Generous: the 256 MiB test on a busy 2-core CI machine must not flake.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(600);

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

// ---------------------------------------------------------------------------------------------
// Running the clients
// ---------------------------------------------------------------------------------------------

/// Runs a client to completion (killed if it outlives [`CLIENT_TIMEOUT`]).
async fn run(program: &str, args: &[String]) -> Output {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        // No credentials from the machine's auth files: the registry runs anonymous here.
        .env("REGISTRY_AUTH_FILE", empty_auth_file());
    match tokio::time::timeout(CLIENT_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("cannot run {program}: {e}"),
        Err(_) => panic!(
            "{program} {} timed out after {CLIENT_TIMEOUT:?}",
            args.join(" ")
        ),
    }
}

/// An auth file without credentials (podman refuses a REGISTRY_AUTH_FILE that does not exist).
fn empty_auth_file() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("aerugo-it-empty-auth-{}.json", std::process::id()));
        std::fs::write(&path, br#"{"auths":{}}"#).expect("writing the empty auth file");
        path
    })
}

fn describe(program: &str, args: &[String], out: &Output) -> String {
    format!(
        "{program} {}\nexit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    )
}

/// `skopeo --insecure-policy ARGS…`, which must succeed; returns the output.
pub(crate) async fn skopeo(args: &[&str]) -> Output {
    let mut full = vec!["--insecure-policy".to_owned()];
    full.extend(args.iter().map(|a| (*a).to_owned()));
    let out = run("skopeo", &full).await;
    assert!(out.status.success(), "{}", describe("skopeo", &full, &out));
    out
}

fn oci_ref(dir: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", dir.display())
}

/// `skopeo copy` from an OCI layout to the registry.
async fn push(layout: &Path, tag: &str, dest: &str, all: bool) -> Output {
    let src = oci_ref(layout, tag);
    let mut args = vec![
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--retry-times=0",
    ];
    if all {
        args.push("--all");
    }
    args.extend([src.as_str(), dest]);
    skopeo(&args).await
}

/// `skopeo copy` from the registry to an OCI layout.
async fn pull(src: &str, layout: &Path, tag: &str, all: bool) -> Output {
    let dest = oci_ref(layout, tag);
    let mut args = vec![
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--retry-times=0",
    ];
    if all {
        args.push("--all");
    }
    args.extend([src, dest.as_str()]);
    skopeo(&args).await
}

/// `skopeo inspect --raw`: the manifest bytes exactly as the registry serves them.
async fn inspect_raw(reference: &str) -> Vec<u8> {
    skopeo(&["inspect", "--raw", "--tls-verify=false", reference])
        .await
        .stdout
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("reqwest client")
}

/// Percent-encodes a query value (`+` in a media type must not turn into a space).
fn query_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn docker_ref(server: &TestServer, repo_and_ref: &str) -> String {
    format!("docker://{}/{repo_and_ref}", server.host())
}

// ---------------------------------------------------------------------------------------------
// Comparisons
// ---------------------------------------------------------------------------------------------

/// The pulled-back image equals the written one: same manifest bytes and digest, same config
/// and layer digests and sizes, and every blob on disk hashes to its digest.
fn assert_same_image(written: &TestImage, pulled: &TestImage) {
    assert_eq!(pulled.digest, written.digest, "manifest digest");
    assert!(
        pulled.manifest == written.manifest,
        "manifest bytes differ:\nwritten: {}\npulled:  {}",
        String::from_utf8_lossy(&written.manifest),
        String::from_utf8_lossy(&pulled.manifest)
    );
    assert_eq!(pulled.config.digest, written.config.digest, "config digest");
    assert_eq!(pulled.config.size, written.config.size, "config size");
    let digests = |i: &TestImage| -> Vec<(String, u64)> {
        i.layers
            .iter()
            .map(|l| (l.digest.clone(), l.size))
            .collect()
    };
    assert_eq!(digests(pulled), digests(written), "layer digests and sizes");
}

/// Pulls `reference` into a fresh layout and reads the image back (verifying every blob).
async fn pull_image(reference: &str, into: &Path) -> TestImage {
    pull(reference, into, "back", false).await;
    let desc = layout::resolve_tag(into, "back");
    layout::read_image(into, &desc)
}

/// Writes a small two-layer image into `dir` under `tag`.
fn small_image(dir: &Path, tag: &str) -> TestImage {
    let image = TestImage::builder("skopeo small")
        .random_layer(1 << 20)
        .pattern_layer(4096, 0x5a)
        .build();
    image.write_layout(dir, tag);
    image
}

async fn get_manifest_status(server: &TestServer, repo: &str, reference: &str) -> u16 {
    http()
        .get(server.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("Accept", MANIFEST_ACCEPT)
        .send()
        .await
        .expect("GET manifest")
        .status()
        .as_u16()
}

/// A server holding a small image pushed by skopeo as `reference` (e.g. `team/app:1.0`), with
/// the OCI layout it was pushed from.
async fn server_with_image(reference: &str) -> (TestServer, TempDir, TestImage) {
    let server = TestServer::start().await;
    let src = TempDir::new().unwrap();
    let image = small_image(src.path(), "latest");
    push(src.path(), "latest", &docker_ref(&server, reference), false).await;
    (server, src, image)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_push_and_pull_single_image() {
    if !require_tool("skopeo") {
        return;
    }
    let (server, _src, image) = server_with_image("team/app:1.0").await;

    // The registry serves the manifest byte for byte as pushed.
    let raw = inspect_raw(&docker_ref(&server, "team/app:1.0")).await;
    assert_eq!(sha256(&raw), image.digest);

    // Blobs come from the registry, or from the bucket when the run asked for redirects: the
    // pulls below then prove skopeo follows them.
    let layer = &image.layers[0].digest;
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(server.url(&format!("/v2/team/app/blobs/{layer}")))
        .send()
        .await
        .expect("GET blob");
    if server.redirects_blob_gets() {
        assert_eq!(response.status().as_u16(), 307);
        let location = response.headers()["location"].to_str().unwrap();
        assert!(location.contains("X-Amz-Signature="), "{location}");
    } else {
        assert_eq!(response.status().as_u16(), 200);
    }

    let back = TempDir::new().unwrap();
    let pulled = pull_image(&docker_ref(&server, "team/app:1.0"), back.path()).await;
    assert_same_image(&image, &pulled);

    // Pull by digest too.
    let back2 = TempDir::new().unwrap();
    let by_digest = pull_image(
        &docker_ref(&server, &format!("team/app@{}", image.digest)),
        back2.path(),
    )
    .await;
    assert_same_image(&image, &by_digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copy_all_multi_arch_index() {
    if !require_tool("skopeo") {
        return;
    }
    let server = TestServer::start().await;
    let src = TempDir::new().unwrap();
    let platforms = [Platform::linux_amd64(), Platform::linux_arm64()];
    let index = TestIndex::per_platform("skopeo multi", &platforms);
    index.write_layout(src.path(), "multi");
    let dest = docker_ref(&server, "team/multi:1.0");
    push(src.path(), "multi", &dest, true).await;

    let raw = inspect_raw(&dest).await;
    assert_eq!(sha256(&raw), index.digest, "index bytes changed");

    let back = TempDir::new().unwrap();
    pull(&dest, back.path(), "multi", true).await;
    let desc = layout::resolve_tag(back.path(), "multi");
    assert_eq!(desc.digest, index.digest, "index digest");
    let pulled = layout::read_index(back.path(), &desc);
    assert_eq!(pulled.manifest, index.manifest, "index bytes");
    assert_eq!(pulled.images.len(), 2);
    for (written, pulled) in index.images.iter().zip(&pulled.images) {
        assert_same_image(written, pulled);
        assert_eq!(pulled.platform, written.platform);
    }
    assert_eq!(pulled.digests(), index.digests());

    // Each platform's manifest is also reachable by digest on its own.
    for image in &index.images {
        let raw = inspect_raw(&docker_ref(
            &server,
            &format!("team/multi@{}", image.digest),
        ))
        .await;
        assert_eq!(raw, image.manifest);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_artifact_with_subject_and_referrers() {
    if !require_tool("skopeo") {
        return;
    }
    let (server, src, image) = server_with_image("team/app:1.0").await;

    let payload = serde_json::json!({
        "sbom": "test",
        "subject": image.digest,
        "nonce": format!("{:016x}", fresh_seed()),
    });
    let artifact = TestImage::builder("skopeo sbom")
        .artifact(TEST_ARTIFACT_TYPE, &image.descriptor())
        .layer_of(
            TEST_ARTIFACT_TYPE,
            serde_json::to_vec(&payload).expect("json"),
        )
        .build();
    artifact.write_layout(src.path(), "sbom");
    push(
        src.path(),
        "sbom",
        &docker_ref(&server, "team/app:sbom"),
        false,
    )
    .await;

    // Pulled back byte for byte: artifactType and subject survive the round trip.
    let back = TempDir::new().unwrap();
    pull(
        &docker_ref(&server, "team/app:sbom"),
        back.path(),
        "sbom",
        false,
    )
    .await;
    let desc = layout::resolve_tag(back.path(), "sbom");
    assert_eq!(desc.digest, artifact.digest, "artifact digest");
    let bytes = layout::read_blob(back.path(), &desc.digest);
    assert_eq!(bytes, artifact.manifest);
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["artifactType"], TEST_ARTIFACT_TYPE);
    assert_eq!(v["subject"]["digest"], image.digest);
    assert_eq!(layout::read_blob(back.path(), EMPTY_DIGEST), b"{}");
    for l in &artifact.layers {
        layout::verify_blob(back.path(), l);
    }

    // Served by digest with its digest (OCI-Subject belongs to the PUT's answer, which skopeo
    // does not show; the HTTP-level tests check it).
    let resp = http()
        .get(server.url(&format!("/v2/team/app/manifests/{}", artifact.digest)))
        .header("Accept", MANIFEST_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok()),
        Some(artifact.digest.as_str())
    );
    assert_eq!(resp.bytes().await.unwrap(), artifact.manifest);

    // The referrers API lists the artifact.
    let referrers_url = server.url(&format!("/v2/team/app/referrers/{}", image.digest));
    let resp = http().get(&referrers_url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with(OCI_INDEX),
        "referrers Content-Type: {content_type}"
    );
    let index: Value = resp.json().await.unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], OCI_INDEX);
    let listed: Vec<Descriptor> = index["manifests"]
        .as_array()
        .expect("manifests array")
        .iter()
        .map(Descriptor::from_json)
        .collect();
    assert_eq!(listed.len(), 1, "referrers: {index}");
    assert_eq!(listed[0].digest, artifact.digest);
    assert_eq!(listed[0].media_type, OCI_MANIFEST);
    assert_eq!(listed[0].size, artifact.manifest.len() as u64);
    assert_eq!(listed[0].artifact_type.as_deref(), Some(TEST_ARTIFACT_TYPE));

    // With an artifactType filter: kept when it matches, dropped when it does not.
    let resp = http()
        .get(format!(
            "{referrers_url}?artifactType={}",
            query_escape(TEST_ARTIFACT_TYPE)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()
            .get("OCI-Filters-Applied")
            .and_then(|v| v.to_str().ok()),
        Some("artifactType")
    );
    let index: Value = resp.json().await.unwrap();
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(1));
    let resp = http()
        .get(format!(
            "{referrers_url}?artifactType={}",
            query_escape("application/vnd.example.other+json")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let index: Value = resp.json().await.unwrap();
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_list_tags() {
    if !require_tool("skopeo") {
        return;
    }
    let server = TestServer::start().await;
    let src = TempDir::new().unwrap();
    small_image(src.path(), "latest");
    let tags = ["1.0", "1.1", "latest", "v2-rc.1"];
    for tag in tags {
        push(
            src.path(),
            "latest",
            &docker_ref(&server, &format!("team/app:{tag}")),
            false,
        )
        .await;
    }
    // A tag in another repository must not show up.
    push(
        src.path(),
        "latest",
        &docker_ref(&server, "team/other:nope"),
        false,
    )
    .await;

    let out = skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &docker_ref(&server, "team/app"),
    ])
    .await;
    let v: Value = serde_json::from_slice(&out.stdout).expect("list-tags prints JSON");
    let mut listed: Vec<String> = v["Tags"]
        .as_array()
        .expect("Tags array")
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    let mut expected: Vec<String> = tags.iter().map(|t| (*t).to_owned()).collect();
    expected.sort();
    assert_eq!(listed, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_delete_by_digest() {
    if !require_tool("skopeo") {
        return;
    }
    let (server, _src, image) = server_with_image("team/app:1.0").await;
    assert_eq!(
        get_manifest_status(&server, "team/app", &image.digest).await,
        200
    );

    skopeo(&[
        "delete",
        "--tls-verify=false",
        &docker_ref(&server, &format!("team/app@{}", image.digest)),
    ])
    .await;

    let resp = http()
        .get(server.url(&format!("/v2/team/app/manifests/{}", image.digest)))
        .header("Accept", MANIFEST_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let body: Value = resp.json().await.expect("error body is JSON");
    assert_eq!(
        body["errors"][0]["code"], "MANIFEST_UNKNOWN",
        "error body: {body}"
    );

    // A pull by digest now fails.
    let back = TempDir::new().unwrap();
    let dest = oci_ref(back.path(), "back");
    let args: Vec<String> = [
        "--insecure-policy",
        "copy",
        "--src-tls-verify=false",
        "--retry-times=0",
        &docker_ref(&server, &format!("team/app@{}", image.digest)),
        &dest,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let out = run("skopeo", &args).await;
    assert!(
        !out.status.success(),
        "pull of a deleted manifest succeeded:\n{}",
        describe("skopeo", &args, &out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copy_between_repositories_mounts_blobs() {
    if !require_tool("skopeo") {
        return;
    }
    let (server, _src, image) = server_with_image("a/src:1").await;

    // Registry to registry: skopeo knows (from its blob-info cache, filled by the push above)
    // that the layers live in `a/src` on the same registry and asks for a cross-repository
    // mount (`POST /v2/b/dst/blobs/uploads/?mount=…&from=a/src`) instead of uploading them.
    let out = skopeo(&[
        "--debug",
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--retry-times=0",
        &docker_ref(&server, "a/src:1"),
        &docker_ref(&server, "b/dst:1"),
    ])
    .await;
    let log = String::from_utf8_lossy(&out.stderr);
    let mount_requests = log.lines().filter(|l| l.contains("mount=sha256")).count();
    let mounted = log.lines().filter(|l| l.contains("mount OK")).count();
    assert!(
        mount_requests >= 1 && mounted >= 1,
        "skopeo did not mount any blob ({mount_requests} mount requests, {mounted} OK):\n{log}"
    );

    let raw = inspect_raw(&docker_ref(&server, "b/dst:1")).await;
    assert_eq!(raw, image.manifest, "manifest bytes in b/dst");

    // Every blob is now served from the destination repository.
    for blob in image.blobs() {
        let resp = http()
            .head(server.url(&format!("/v2/b/dst/blobs/{}", blob.digest)))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "HEAD {} in b/dst", blob.digest);
        assert_eq!(
            resp.headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok()),
            Some(blob.size)
        );
    }

    let back = TempDir::new().unwrap();
    let pulled = pull_image(&docker_ref(&server, "b/dst:1"), back.path()).await;
    assert_same_image(&image, &pulled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_push_and_pull_256_mib_layer() {
    if !require_tool("skopeo") {
        return;
    }
    const SIZE: u64 = 256 << 20;
    let server = TestServer::start().await;
    let src = TempDir::new().unwrap();
    let dir = src.path().to_owned();
    // Generated and hashed while streamed to disk, off the async workers.
    let image = tokio::task::spawn_blocking(move || {
        let image = TestImage::builder("skopeo big").random_layer(SIZE).build();
        image.write_layout(&dir, "big");
        image
    })
    .await
    .unwrap();
    assert_eq!(image.layers[0].size, SIZE);

    push(src.path(), "big", &docker_ref(&server, "team/big:1"), false).await;

    let resp = http()
        .head(server.url(&format!("/v2/team/big/blobs/{}", image.layers[0].digest)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some(SIZE.to_string().as_str())
    );
    drop(src); // 256 MiB less on disk before pulling

    let back = TempDir::new().unwrap();
    let reference = docker_ref(&server, "team/big:1");
    let back_dir = back.path().to_owned();
    pull(&reference, &back_dir, "back", false).await;
    // read_image re-hashes every blob on disk; do it off the async workers.
    let pulled = tokio::task::spawn_blocking(move || {
        let desc = layout::resolve_tag(&back_dir, "back");
        layout::read_image(&back_dir, &desc)
    })
    .await
    .unwrap();
    assert_same_image(&image, &pulled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_eight_concurrent_pulls() {
    if !require_tool("skopeo") {
        return;
    }
    let server = TestServer::start().await;
    let src = TempDir::new().unwrap();
    let image = TestImage::builder("skopeo popular")
        .random_layer(16 << 20)
        .random_layer(3 << 20)
        .pattern_layer(1000, 1)
        .build();
    image.write_layout(src.path(), "latest");
    let reference = docker_ref(&server, "team/popular:1");
    push(src.path(), "latest", &reference, false).await;

    let dirs: Vec<TempDir> = (0..8).map(|_| TempDir::new().unwrap()).collect();
    let pulls = dirs.iter().map(|d| pull_image(&reference, d.path()));
    let pulled: Vec<TestImage> = futures_util::future::join_all(pulls).await;
    assert_eq!(pulled.len(), 8);
    for p in &pulled {
        assert_same_image(&image, p);
    }
}

/// podman pulls an image into its own (temporary, vfs) storage — which unpacks the layer, so
/// this image has a real tar layer — and pushes it to another repository.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_pull_and_push() {
    if !require_tool("skopeo") || !require_tool("podman") {
        return;
    }
    let server = TestServer::start().await;
    let src = TempDir::new().unwrap();
    let image = TestImage::builder("podman")
        .tar_layer("hello.bin", 64 << 10)
        .tar_layer("world.bin", 3 << 20)
        .build();
    image.write_layout(src.path(), "latest");
    push(
        src.path(),
        "latest",
        &docker_ref(&server, "pod/src:1"),
        false,
    )
    .await;

    // Its own vfs storage, removed (best effort) when dropped.
    let podman = Podman::new();
    let host = server.host().to_string();
    let src_ref = format!("{host}/pod/src:1");
    podman.ok(&["pull", "--tls-verify=false", &src_ref]).await;
    let out = podman
        .ok(&["image", "inspect", "--format", "{{.Id}}", &src_ref])
        .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        image.config.hex(),
        "podman's image id is the config digest"
    );

    podman
        .ok(&[
            "push",
            "--tls-verify=false",
            &src_ref,
            &format!("docker://{host}/pod/dst:1"),
        ])
        .await;
    let raw = inspect_raw(&docker_ref(&server, "pod/dst:1")).await;
    let v: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        v["config"]["digest"], image.config.digest,
        "pushed config digest"
    );
    assert_eq!(v["layers"].as_array().map(Vec::len), Some(2));

    // And what podman pushed pulls back intact.
    let back = TempDir::new().unwrap();
    let desc_ref = docker_ref(&server, "pod/dst:1");
    pull(&desc_ref, back.path(), "back", false).await;
    let desc = layout::resolve_tag(back.path(), "back");
    let pulled = layout::read_image(back.path(), &desc);
    assert_eq!(pulled.config.digest, image.config.digest);
}
