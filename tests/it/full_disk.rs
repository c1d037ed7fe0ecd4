//! A full disk: the real binary on a small tmpfs. Writes fail while it is full and `/readyz`
//! says so; once space is freed, the very next push works, without a restart.
//!
//! Needs root (to mount the tmpfs). Without it the test fails under `AERUGO_REQUIRE_TOOLS`
//! and is skipped otherwise.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::support::image::{OCI_LAYER_TAR, OCI_MANIFEST, TestImage, sha256};
use super::support::process::{CoreProcess, http_client};

const REPO: &str = "disk/full";

/// A tmpfs mounted for one test, unmounted (lazily, in case a file is still open) on drop.
struct Tmpfs {
    _parent: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    fn mount(megabytes: u32) -> Option<Tmpfs> {
        let parent = tempfile::tempdir().expect("temp dir");
        let path = parent.path().join("data");
        std::fs::create_dir(&path).expect("mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            let why = "mounting a tmpfs needs root";
            assert!(
                std::env::var_os("AERUGO_REQUIRE_TOOLS").is_none(),
                "{why} (AERUGO_REQUIRE_TOOLS is set)"
            );
            eprintln!("skipping: {why}");
            return None;
        }
        Some(Tmpfs {
            _parent: parent,
            path,
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Writes a file until the filesystem refuses another byte.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("filler file");
    for block in [1 << 20, 4096, 512, 1] {
        let bytes = vec![0xa5u8; block];
        while file.write_all(&bytes).and_then(|()| file.flush()).is_ok() {}
    }
    let _ = file.sync_all();
}

async fn push_blob(core: &CoreProcess, bytes: &[u8]) -> u16 {
    let url = core.url(&format!(
        "/v2/{REPO}/blobs/uploads/?digest={}",
        sha256(bytes)
    ));
    let response = http_client().post(url).body(bytes.to_vec()).send().await;
    response.map_or(0, |r| r.status().as_u16())
}

fn manifest(config: &[u8], layer: &[u8]) -> Vec<u8> {
    TestImage::builder("full disk")
        .config(config.to_vec())
        .layer_of(OCI_LAYER_TAR, layer.to_vec())
        .build()
        .manifest
}

async fn put_manifest(core: &CoreProcess, tag: &str, body: Vec<u8>) -> u16 {
    let url = core.url(&format!("/v2/{REPO}/manifests/{tag}"));
    let response = http_client()
        .put(url)
        .header("content-type", OCI_MANIFEST)
        .body(body)
        .send()
        .await;
    response.map_or(0, |r| r.status().as_u16())
}

async fn readyz(core: &CoreProcess) -> u16 {
    let response = http_client().get(core.url("/readyz")).send().await;
    response.map_or(0, |r| r.status().as_u16())
}

#[tokio::test]
async fn a_full_disk_fails_writes_until_space_is_freed_then_pushes_work_again() {
    let Some(disk) = Tmpfs::mount(64) else {
        return;
    };
    let work = tempfile::tempdir().expect("work dir");
    let core = CoreProcess::start_on(work, &disk.path).await;
    let (config, layer) = (
        b"{\"architecture\":\"amd64\"}".to_vec(),
        vec![7u8; 64 << 10],
    );
    assert_eq!(push_blob(&core, &config).await, 201);
    assert_eq!(push_blob(&core, &layer).await, 201);
    assert_eq!(readyz(&core).await, 200);

    let filler = disk.path.join("filler");
    fill(&filler);
    let status = put_manifest(&core, "v1", manifest(&config, &layer)).await;
    assert_eq!(
        status,
        500,
        "a manifest PUT on a full disk; log:\n{}",
        core.log()
    );
    assert_eq!(readyz(&core).await, 503, "a full disk is not ready");

    std::fs::remove_file(&filler).expect("freeing the space");
    assert_eq!(
        readyz(&core).await,
        200,
        "ready again; log:\n{}",
        core.log()
    );
    assert_eq!(
        put_manifest(&core, "v1", manifest(&config, &layer)).await,
        201,
        "the first write after the space came back; log:\n{}",
        core.log()
    );
    let other = vec![9u8; 4096];
    assert_eq!(push_blob(&core, &other).await, 201);
    assert_eq!(
        put_manifest(&core, "v2", manifest(&config, &other)).await,
        201
    );
    let tags = http_client()
        .get(core.url(&format!("/v2/{REPO}/tags/list")))
        .send()
        .await
        .expect("tags/list")
        .text()
        .await
        .expect("tags text");
    assert!(tags.contains("\"v1\"") && tags.contains("\"v2\""), "{tags}");
}
