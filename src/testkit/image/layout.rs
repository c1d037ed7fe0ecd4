//! OCI image layouts on disk, for real clients (skopeo, podman) to push from and pull into.
//!
//! A layout is a directory with an `oci-layout` file, an `index.json` whose entries carry the
//! tag in the `org.opencontainers.image.ref.name` annotation, and `blobs/sha256/<hex>`. Blobs
//! are streamed into place (a generated layer is never held in memory) and checked against
//! their digests on the way. Reading a layout back gives a [`TestImage`] whose blobs are the
//! layout's files, every one verified, so a test compares what went in with what came back.

use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{
    Blob, Descriptor, HashingWriter, OCI_INDEX, Platform, TestImage, TestIndex, fresh_seed,
    oci_index, sha256, sha256_file,
};

const OCI_LAYOUT_FILE: &str = "oci-layout";
const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

impl TestImage {
    /// Writes the image into the layout at `dir` (created when missing) and tags it `tag`;
    /// other tags already there are kept.
    pub fn write_layout(&self, dir: &Path, tag: &str) {
        self.write_untagged(dir);
        tag_in_index(dir, &self.descriptor(), tag);
    }

    fn write_untagged(&self, dir: &Path) {
        for blob in self.blobs() {
            write_blob(dir, blob);
        }
        write_bytes(dir, &self.manifest);
    }
}

impl TestIndex {
    /// Writes every image and the index into the layout at `dir` and tags the index `tag`.
    pub fn write_layout(&self, dir: &Path, tag: &str) {
        for image in &self.images {
            image.write_untagged(dir);
        }
        write_bytes(dir, &self.manifest);
        tag_in_index(dir, &self.descriptor(), tag);
    }
}

/// Writes the `oci-layout` file and `blobs/sha256/` when missing.
fn init_layout(dir: &Path) {
    fs::create_dir_all(dir.join("blobs/sha256"))
        .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let layout = dir.join(OCI_LAYOUT_FILE);
    if !layout.exists() {
        fs::write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)
            .unwrap_or_else(|e| panic!("writing {}: {e}", layout.display()));
    }
}

/// The path of a blob in a layout.
fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest
        .split_once(':')
        .unwrap_or_else(|| panic!("not a digest: {digest}"));
    dir.join("blobs").join(alg).join(hex)
}

fn write_bytes(dir: &Path, bytes: &[u8]) {
    init_layout(dir);
    let path = blob_path(dir, &sha256(bytes));
    fs::write(&path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Streams a blob into a temporary file, hashing it, and renames it to `blobs/sha256/<hex>`.
fn write_blob(dir: &Path, blob: &Blob) {
    init_layout(dir);
    let tmp =
        dir.join("blobs/sha256")
            .join(format!(".tmp-{}-{:016x}", std::process::id(), fresh_seed()));
    let file = File::create(&tmp).unwrap_or_else(|e| panic!("creating {}: {e}", tmp.display()));
    let mut hashing = HashingWriter::new(BufWriter::with_capacity(super::PIECE, file));
    blob.write_to(&mut hashing)
        .unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
    let (digest, size, inner) = hashing.finish();
    assert_eq!(
        (digest.as_str(), size),
        (blob.digest.as_str(), blob.size),
        "the blob's content changed"
    );
    let file = inner
        .into_inner()
        .unwrap_or_else(|e| panic!("flushing {}: {e}", tmp.display()));
    file.sync_all().ok();
    drop(file);
    let path = blob_path(dir, &blob.digest);
    fs::rename(&tmp, &path).unwrap_or_else(|e| panic!("renaming to {}: {e}", path.display()));
}

/// Adds (or replaces) the `index.json` entry for `tag`.
fn tag_in_index(dir: &Path, descriptor: &Descriptor, tag: &str) {
    init_layout(dir);
    let path = dir.join("index.json");
    let mut manifests: Vec<Value> = match fs::read(&path) {
        Ok(bytes) => {
            let v: Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
            v["manifests"].as_array().cloned().unwrap_or_default()
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("reading {}: {e}", path.display()),
    };
    manifests.retain(|m| m["annotations"][REF_NAME_ANNOTATION].as_str() != Some(tag));
    let mut entry = descriptor.clone();
    entry.platform = None;
    entry
        .annotations
        .insert(REF_NAME_ANNOTATION.to_owned(), tag.to_owned());
    manifests.push(entry.to_json());
    let index = oci_index(manifests);
    fs::write(&path, serde_json::to_vec_pretty(&index).expect("json"))
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------------------------
// Reading layouts (what a client pulled back)

/// The `index.json` entry tagged `tag` (or the only entry, which a client may leave untagged).
pub fn resolve_tag(dir: &Path, tag: &str) -> Descriptor {
    let path = dir.join("index.json");
    let bytes = fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let v: Value = serde_json::from_slice(&bytes).expect("index.json is JSON");
    let entries = v["manifests"].as_array().cloned().unwrap_or_default();
    let entry = entries
        .iter()
        .find(|m| m["annotations"][REF_NAME_ANNOTATION].as_str() == Some(tag))
        .or_else(|| (entries.len() == 1).then(|| &entries[0]))
        .unwrap_or_else(|| panic!("no tag {tag} in {}: {v}", path.display()));
    Descriptor::from_json(entry)
}

/// Reads a (small) blob and checks that its bytes hash to `digest`.
pub fn read_blob(dir: &Path, digest: &str) -> Vec<u8> {
    let path = blob_path(dir, digest);
    let bytes = fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert_eq!(sha256(&bytes), digest, "{} is corrupt", path.display());
    bytes
}

/// Checks that the layout holds `blob`: its file hashes (streaming) to the digest and has the
/// size.
pub fn verify_blob(dir: &Path, blob: &Blob) {
    let path = blob_path(dir, &blob.digest);
    let (digest, size) =
        sha256_file(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert_eq!(digest, blob.digest, "{} is corrupt", path.display());
    assert_eq!(size, blob.size, "{} has the wrong size", path.display());
}

/// The image whose manifest `manifest` describes, every blob verified; its blobs are the
/// layout's files, and its platform the one `manifest` (an index entry) or its config names.
pub fn read_image(dir: &Path, manifest: &Descriptor) -> TestImage {
    let bytes = read_blob(dir, &manifest.digest);
    let v: Value = serde_json::from_slice(&bytes).expect("manifest is JSON");
    let blob = |descriptor: &Value| {
        let descriptor = Descriptor::from_json(descriptor);
        let blob = Blob::in_file(&descriptor, blob_path(dir, &descriptor.digest));
        verify_blob(dir, &blob);
        blob
    };
    let config = blob(&v["config"]);
    let platform = manifest.platform.clone().or_else(|| {
        let config: Value = serde_json::from_slice(&config.bytes()).ok()?;
        Platform::from_json(&config)
    });
    let layers = v["layers"]
        .as_array()
        .map(|a| a.iter().map(blob).collect())
        .unwrap_or_default();
    TestImage {
        media_type: v["mediaType"]
            .as_str()
            .unwrap_or(&manifest.media_type)
            .to_owned(),
        digest: manifest.digest.clone(),
        manifest: bytes,
        config,
        layers,
        platform,
        artifact_type: v["artifactType"].as_str().map(str::to_owned),
    }
}

/// The index `index` describes and every image it lists, each under its platform.
pub fn read_index(dir: &Path, index: &Descriptor) -> TestIndex {
    let bytes = read_blob(dir, &index.digest);
    let v: Value = serde_json::from_slice(&bytes).expect("index is JSON");
    let images = v["manifests"]
        .as_array()
        .expect("index has manifests")
        .iter()
        .map(|entry| read_image(dir, &Descriptor::from_json(entry)))
        .collect();
    TestIndex {
        media_type: v["mediaType"].as_str().unwrap_or(OCI_INDEX).to_owned(),
        digest: index.digest.clone(),
        manifest: bytes,
        images,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{EMPTY_DIGEST, TEST_ARTIFACT_TYPE};
    use super::*;

    #[test]
    fn layouts_read_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let image = TestImage::builder("layout")
            .random_layer((3 << 20) | 17)
            .pattern_layer(1000, 7)
            .tar_layer("hello.bin", 700)
            .build();
        image.write_layout(dir.path(), "latest");
        let tagged = resolve_tag(dir.path(), "latest");
        assert_eq!(tagged.digest, image.digest);
        let back = read_image(dir.path(), &tagged);
        assert_eq!(back.digests(), image.digests());
        assert_eq!(back.manifest, image.manifest);
        assert_eq!(back.layers[0].bytes(), image.layers[0].bytes());

        let platforms = [Platform::linux_amd64(), Platform::linux_arm64()];
        let index = TestIndex::per_platform("layout index", &platforms);
        index.write_layout(dir.path(), "multi");
        let back = read_index(dir.path(), &resolve_tag(dir.path(), "multi"));
        assert_eq!(back.digests(), index.digests());
        assert_eq!(back.images[1].platform, Some(Platform::linux_arm64()));
        // The first tag is still there.
        assert_eq!(resolve_tag(dir.path(), "latest").digest, image.digest);

        let artifact = TestImage::builder("sbom")
            .artifact(TEST_ARTIFACT_TYPE, &image.descriptor())
            .layer_of(TEST_ARTIFACT_TYPE, b"{\"sbom\":1}".to_vec())
            .build();
        artifact.write_layout(dir.path(), "sbom");
        let v: Value = serde_json::from_slice(&read_blob(dir.path(), &artifact.digest)).unwrap();
        assert_eq!(v["subject"]["digest"], image.digest);
        assert_eq!(read_blob(dir.path(), EMPTY_DIGEST), b"{}");
        let back = read_image(dir.path(), &resolve_tag(dir.path(), "sbom"));
        assert_eq!(back.artifact_type.as_deref(), Some(TEST_ARTIFACT_TYPE));
    }
}
