//! OCI image layouts generated on disk, for real clients (skopeo, podman) to push from and
//! pull into — no internet, no pre-built images.
//!
//! A layout is a directory with an `oci-layout` file, an `index.json` whose entries carry the
//! tag in the `org.opencontainers.image.ref.name` annotation, and `blobs/sha256/<hex>`.
//! Layer bytes are generated and written in 1 MiB pieces while being hashed, so a 256 MiB
//! layer is never held in memory. Every writer returns the descriptors (digests and sizes) so
//! tests can compare what went in with what came back.
//!
//! Layer bytes are deliberately not valid tar/gzip (except [`LayerSpec::tar_file`]): pushes
//! use `--preserve-digests` so clients move them untouched. The first bytes never look like a
//! compression magic number, so clients that sniff content do not try to decompress them.

#![allow(dead_code)] // not every test module uses every helper

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

pub const OCI_LAYOUT_FILE: &str = "oci-layout";
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

pub const MEDIA_TYPE_IMAGE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_IMAGE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_TYPE_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// The OCI "empty" descriptor's content (`{}`) and digest.
pub const EMPTY_JSON: &[u8] = b"{}";
pub const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/// The `artifactType` of the artifacts written by [`write_artifact`].
pub const TEST_ARTIFACT_TYPE: &str = "application/vnd.aerugo.test.sbom.v1+json";

const PIECE: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Descriptors
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn new(os: &str, architecture: &str) -> Platform {
        Platform {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: None,
        }
    }

    pub fn linux_amd64() -> Platform {
        Platform::new("linux", "amd64")
    }

    pub fn linux_arm64() -> Platform {
        Platform {
            variant: Some("v8".to_owned()),
            ..Platform::new("linux", "arm64")
        }
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({ "architecture": self.architecture, "os": self.os });
        if let Some(variant) = &self.variant {
            v["variant"] = json!(variant);
        }
        v
    }

    pub fn from_json(v: &Value) -> Option<Platform> {
        Some(Platform {
            os: v.get("os")?.as_str()?.to_owned(),
            architecture: v.get("architecture")?.as_str()?.to_owned(),
            variant: v.get("variant").and_then(Value::as_str).map(str::to_owned),
        })
    }
}

/// An OCI content descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    /// `sha256:<hex>`
    pub digest: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub platform: Option<Platform>,
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: String, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_owned(),
            digest,
            size,
            artifact_type: None,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }

    /// The OCI empty descriptor (`application/vnd.oci.empty.v1+json`, `{}`).
    pub fn empty() -> Descriptor {
        Descriptor::new(MEDIA_TYPE_EMPTY, EMPTY_DIGEST.to_owned(), 2)
    }

    /// The hex part of the digest.
    pub fn hex(&self) -> &str {
        self.digest
            .split_once(':')
            .map_or(&*self.digest, |(_, h)| h)
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        });
        if let Some(t) = &self.artifact_type {
            v["artifactType"] = json!(t);
        }
        if let Some(p) = &self.platform {
            v["platform"] = p.to_json();
        }
        if !self.annotations.is_empty() {
            v["annotations"] = json!(self.annotations);
        }
        v
    }

    /// Parses a descriptor from a manifest, index or `index.json` entry.
    pub fn from_json(v: &Value) -> Descriptor {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        Descriptor {
            media_type: s("mediaType").unwrap_or_default(),
            digest: s("digest").unwrap_or_else(|| panic!("descriptor without digest: {v}")),
            size: v
                .get("size")
                .and_then(Value::as_u64)
                .unwrap_or_else(|| panic!("descriptor without size: {v}")),
            artifact_type: s("artifactType"),
            platform: v.get("platform").and_then(Platform::from_json),
            annotations: v
                .get("annotations")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// What [`write_image`] wrote.
#[derive(Clone, Debug)]
pub struct ImageInfo {
    pub manifest: Descriptor,
    /// The exact manifest bytes (their sha256 is `manifest.digest`).
    pub manifest_bytes: Vec<u8>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

impl ImageInfo {
    /// Manifest, config and layer digests, in that order.
    pub fn digests(&self) -> Vec<String> {
        let mut d = vec![self.manifest.digest.clone(), self.config.digest.clone()];
        d.extend(self.layers.iter().map(|l| l.digest.clone()));
        d
    }

    /// Config and layer descriptors (what a registry must hold besides the manifest).
    pub fn blobs(&self) -> Vec<Descriptor> {
        let mut b = vec![self.config.clone()];
        b.extend(self.layers.iter().cloned());
        b
    }
}

/// What [`write_index`] wrote.
#[derive(Clone, Debug)]
pub struct IndexInfo {
    pub index: Descriptor,
    pub index_bytes: Vec<u8>,
    /// One image per platform, in the order given.
    pub images: Vec<ImageInfo>,
}

impl IndexInfo {
    /// The index digest, then every image's digests.
    pub fn digests(&self) -> Vec<String> {
        let mut d = vec![self.index.digest.clone()];
        for i in &self.images {
            d.extend(i.digests());
        }
        d
    }
}

/// What [`write_artifact`] wrote.
#[derive(Clone, Debug)]
pub struct ArtifactInfo {
    /// The manifest's descriptor, with `artifact_type` set (as a referrers index lists it).
    pub manifest: Descriptor,
    pub manifest_bytes: Vec<u8>,
    pub artifact_type: String,
    /// Always the empty descriptor.
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    pub subject: Descriptor,
}

impl ArtifactInfo {
    pub fn digests(&self) -> Vec<String> {
        let mut d = vec![self.manifest.digest.clone(), self.config.digest.clone()];
        d.extend(self.layers.iter().map(|l| l.digest.clone()));
        d
    }
}

// ---------------------------------------------------------------------------------------------
// Generated bytes
// ---------------------------------------------------------------------------------------------

/// How a layer's bytes are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// Pseudo-random bytes from a fresh seed: every call makes different content.
    Random,
    /// Pseudo-random bytes from this seed: the same seed and size give the same bytes.
    Seeded(u64),
    /// Every byte is this value.
    Byte(u8),
}

/// Layer bytes of a given size.
#[derive(Clone, Debug)]
pub struct LayerSpec {
    pub size: u64,
    pub fill: Fill,
    pub media_type: String,
    /// When set, the layer is a valid uncompressed tar holding one regular file of this name
    /// whose content is `size` generated bytes (the blob is a little larger than `size`).
    pub tar_file: Option<String>,
}

impl LayerSpec {
    /// `size` fresh pseudo-random bytes, typed as a gzip layer.
    pub fn random(size: u64) -> LayerSpec {
        LayerSpec {
            size,
            fill: Fill::Random,
            media_type: MEDIA_TYPE_LAYER_GZIP.to_owned(),
            tar_file: None,
        }
    }

    /// `size` deterministic bytes (the same seed gives the same layer), typed as a gzip layer.
    pub fn seeded(size: u64, seed: u64) -> LayerSpec {
        LayerSpec {
            fill: Fill::Seeded(seed),
            ..LayerSpec::random(size)
        }
    }

    /// `size` copies of `byte`, typed as a gzip layer.
    pub fn pattern(size: u64, byte: u8) -> LayerSpec {
        LayerSpec {
            fill: Fill::Byte(byte),
            ..LayerSpec::random(size)
        }
    }

    /// A real, uncompressed tar layer with one file of `size` random bytes: what a container
    /// engine (podman) can unpack.
    pub fn tar_file(name: &str, size: u64) -> LayerSpec {
        LayerSpec {
            size,
            fill: Fill::Random,
            media_type: MEDIA_TYPE_LAYER_TAR.to_owned(),
            tar_file: Some(name.to_owned()),
        }
    }

    pub fn with_media_type(mut self, media_type: &str) -> LayerSpec {
        self.media_type = media_type.to_owned();
        self
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed that differs between calls, processes and runs.
pub fn fresh_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut s = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0xA24B_AED4_963E_E407);
    splitmix64(&mut s)
}

/// Streams `size` generated bytes in pieces of at most 1 MiB.
///
/// Random content is one pseudo-random 1 MiB block in which the first 8 bytes of piece `k` are
/// XOR-ed with `k`, so no two pieces are equal, generation costs nothing per byte after the
/// first block, and the output starts with `AERU` (no compression magic).
pub struct ByteGen {
    block: Vec<u8>,
    xor_counter: bool,
    size: u64,
    pos: u64,
    piece: u64,
}

impl ByteGen {
    pub fn new(fill: Fill, size: u64) -> ByteGen {
        let (block, xor_counter) = match fill {
            Fill::Byte(b) => (vec![b; PIECE], false),
            Fill::Random | Fill::Seeded(_) => {
                let mut state = match fill {
                    Fill::Seeded(s) => s,
                    _ => fresh_seed(),
                };
                let mut block = Vec::with_capacity(PIECE);
                while block.len() < PIECE {
                    block.extend_from_slice(&splitmix64(&mut state).to_le_bytes());
                }
                block[..4].copy_from_slice(b"AERU");
                (block, true)
            }
        };
        ByteGen {
            block,
            xor_counter,
            size,
            pos: 0,
            piece: 0,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn remaining(&self) -> u64 {
        self.size - self.pos
    }

    /// Fills `buf` with the next piece (at most 1 MiB) and returns its length; 0 at the end.
    pub fn next_into(&mut self, buf: &mut Vec<u8>) -> usize {
        buf.clear();
        let n = self.remaining().min(PIECE as u64) as usize;
        if n == 0 {
            return 0;
        }
        buf.extend_from_slice(&self.block[..n]);
        if self.xor_counter {
            let k = self.piece.to_le_bytes();
            // Keep the "AERU" prefix of piece 0 intact; later pieces differ in bytes 4..12.
            for (i, b) in k.iter().enumerate() {
                if let Some(x) = buf.get_mut(4 + i) {
                    *x ^= b;
                }
            }
        }
        self.pos += n as u64;
        self.piece += 1;
        n
    }

    /// The next piece as a new vector; `None` at the end.
    pub fn next_piece(&mut self) -> Option<Vec<u8>> {
        let mut buf = Vec::with_capacity(PIECE);
        (self.next_into(&mut buf) > 0).then_some(buf)
    }

    /// Writes everything left to `w`, returning the sha256 digest of what was written.
    pub fn write_to(&mut self, w: &mut impl Write) -> io::Result<String> {
        let mut hasher = Sha256::new();
        let mut buf = Vec::with_capacity(PIECE);
        while self.next_into(&mut buf) > 0 {
            hasher.update(&buf);
            w.write_all(&buf)?;
        }
        Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
    }

    /// The whole remaining content in memory (only for small blobs and the crash test).
    pub fn collect_vec(mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.remaining() as usize);
        let mut buf = Vec::with_capacity(PIECE);
        while self.next_into(&mut buf) > 0 {
            out.extend_from_slice(&buf);
        }
        out
    }
}

/// sha256 of generated content without writing it anywhere.
pub fn generated_digest(fill: Fill, size: u64) -> String {
    ByteGen::new(fill, size)
        .write_to(&mut io::sink())
        .expect("hashing to a sink cannot fail")
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// sha256 of a file, read in pieces, and its size.
pub fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; PIECE];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), total))
}

// ---------------------------------------------------------------------------------------------
// Writing layouts
// ---------------------------------------------------------------------------------------------

/// Writes the `oci-layout` file and `blobs/sha256/` when missing.
pub fn init_layout(dir: &Path) {
    fs::create_dir_all(dir.join("blobs/sha256"))
        .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let layout = dir.join(OCI_LAYOUT_FILE);
    if !layout.exists() {
        fs::write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)
            .unwrap_or_else(|e| panic!("writing {}: {e}", layout.display()));
    }
}

/// The path of a blob in a layout.
pub fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest
        .split_once(':')
        .unwrap_or_else(|| panic!("not a digest: {digest}"));
    dir.join("blobs").join(alg).join(hex)
}

/// Stores in-memory bytes as a blob; returns its descriptor.
pub fn write_blob(dir: &Path, media_type: &str, bytes: &[u8]) -> Descriptor {
    init_layout(dir);
    let digest = sha256_digest(bytes);
    let path = blob_path(dir, &digest);
    fs::write(&path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    Descriptor::new(media_type, digest, bytes.len() as u64)
}

/// Stores generated layer bytes as a blob, streaming: hashed while written to a temporary
/// file, renamed to `blobs/sha256/<hex>` at the end.
pub fn write_layer(dir: &Path, spec: &LayerSpec) -> Descriptor {
    init_layout(dir);
    let tmp =
        dir.join("blobs/sha256")
            .join(format!(".tmp-{}-{:016x}", std::process::id(), fresh_seed()));
    let file = File::create(&tmp).unwrap_or_else(|e| panic!("creating {}: {e}", tmp.display()));
    let mut w = HashingWriter::new(io::BufWriter::with_capacity(PIECE, file));
    let mut gen_ = ByteGen::new(spec.fill, spec.size);
    let result = match &spec.tar_file {
        None => gen_.write_to(&mut w).map(drop),
        Some(name) => write_tar_single_file(&mut w, name, &mut gen_),
    };
    result.unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
    let (digest, size, inner) = w.finish();
    let file = inner
        .into_inner()
        .unwrap_or_else(|e| panic!("flushing {}: {e}", tmp.display()));
    file.sync_all().ok();
    drop(file);
    let path = blob_path(dir, &digest);
    fs::rename(&tmp, &path).unwrap_or_else(|e| panic!("renaming to {}: {e}", path.display()));
    Descriptor::new(&spec.media_type, digest, size)
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    fn finish(self) -> (String, u64, W) {
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.written,
            self.inner,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A real, uncompressed tar layer in memory: one regular file `name` of `size` generated bytes.
pub fn tar_layer_bytes(name: &str, fill: Fill, size: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(size as usize + 2048);
    write_tar_single_file(&mut out, name, &mut ByteGen::new(fill, size))
        .expect("writing a tar archive to memory");
    out
}

/// A ustar archive with one regular file (mode 0644, root-owned, fixed mtime).
fn write_tar_single_file(w: &mut impl Write, name: &str, content: &mut ByteGen) -> io::Result<()> {
    assert!(name.len() < 100, "tar member name too long: {name}");
    let size = content.size();
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |field: &mut [u8], value: u64| {
        let s = format!("{:0width$o}\0", value, width = field.len() - 1);
        field.copy_from_slice(s.as_bytes());
    };
    octal(&mut header[100..108], 0o644); // mode
    octal(&mut header[108..116], 0); // uid
    octal(&mut header[116..124], 0); // gid
    octal(&mut header[124..136], size); // size
    octal(&mut header[136..148], 1_700_000_000); // mtime
    header[156] = b'0'; // regular file
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    // Checksum: computed with the checksum field as eight spaces.
    header[148..156].copy_from_slice(b"        ");
    let sum: u64 = header.iter().map(|&b| u64::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    header[148..156].copy_from_slice(s.as_bytes());
    w.write_all(&header)?;
    content.write_to(w)?;
    let pad = (512 - (size % 512) as usize) % 512;
    w.write_all(&vec![0u8; pad])?;
    w.write_all(&[0u8; 1024])?; // end-of-archive marker
    Ok(())
}

/// Adds (or replaces) the `index.json` entry for `tag`.
pub fn tag_in_index(dir: &Path, descriptor: &Descriptor, tag: &str) {
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
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_IMAGE_INDEX,
        "manifests": manifests,
    });
    fs::write(&path, serde_json::to_vec_pretty(&index).expect("json"))
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Writes the layers, a config and an image manifest for `platform` without tagging them.
pub fn write_image_untagged(dir: &Path, layers: &[LayerSpec], platform: &Platform) -> ImageInfo {
    let layer_descs: Vec<Descriptor> = layers.iter().map(|l| write_layer(dir, l)).collect();
    let config_json = json!({
        "created": "2025-01-01T00:00:00Z",
        "architecture": platform.architecture,
        "os": platform.os,
        "variant": platform.variant,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/true"],
            "Labels": { "org.aerugo.test.nonce": format!("{:016x}", fresh_seed()) },
        },
        "rootfs": {
            "type": "layers",
            // Correct for uncompressed (tar) layers; for generated "gzip" layers there is no
            // uncompressed form, and no client reads it when pushing with preserved digests.
            "diff_ids": layer_descs.iter().map(|l| l.digest.clone()).collect::<Vec<_>>(),
        },
        "history": layer_descs.iter().map(|_| json!({
            "created": "2025-01-01T00:00:00Z",
            "created_by": "aerugo tests/it/support/oci_layout.rs",
        })).collect::<Vec<_>>(),
    });
    let mut config_json = config_json;
    if platform.variant.is_none() {
        config_json.as_object_mut().unwrap().remove("variant");
    }
    let config = write_blob(
        dir,
        MEDIA_TYPE_IMAGE_CONFIG,
        &serde_json::to_vec(&config_json).expect("json"),
    );
    let manifest_json = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_IMAGE_MANIFEST,
        "config": config.to_json(),
        "layers": layer_descs.iter().map(Descriptor::to_json).collect::<Vec<_>>(),
    });
    let manifest_bytes = serde_json::to_vec_pretty(&manifest_json).expect("json");
    let mut manifest = write_blob(dir, MEDIA_TYPE_IMAGE_MANIFEST, &manifest_bytes);
    manifest.platform = Some(platform.clone());
    ImageInfo {
        manifest,
        manifest_bytes,
        config,
        layers: layer_descs,
    }
}

/// Writes a linux/amd64 image with these layers and tags it `tag` in the layout at `dir`
/// (created when missing; other tags already there are kept).
pub fn write_image(dir: &Path, tag: &str, layers: &[LayerSpec]) -> ImageInfo {
    let mut info = write_image_untagged(dir, layers, &Platform::linux_amd64());
    tag_in_index(dir, &info.manifest, tag);
    info.manifest.platform = None;
    info
}

/// Writes an image index over one image per platform (each with its own config and one
/// 256 KiB layer) and tags the index `tag`.
pub fn write_index(dir: &Path, tag: &str, platforms: &[Platform]) -> IndexInfo {
    let images: Vec<ImageInfo> = platforms
        .iter()
        .map(|p| write_image_untagged(dir, &[LayerSpec::random(256 << 10)], p))
        .collect();
    let index_json = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_IMAGE_INDEX,
        "manifests": images.iter().map(|i| i.manifest.to_json()).collect::<Vec<_>>(),
    });
    let index_bytes = serde_json::to_vec_pretty(&index_json).expect("json");
    let index = write_blob(dir, MEDIA_TYPE_IMAGE_INDEX, &index_bytes);
    tag_in_index(dir, &index, tag);
    IndexInfo {
        index,
        index_bytes,
        images,
    }
}

/// Writes an OCI artifact: an image manifest with `artifactType` [`TEST_ARTIFACT_TYPE`], the
/// empty config, one small JSON layer, and `subject` pointing at `subject`; tags it `tag`.
pub fn write_artifact(dir: &Path, tag: &str, subject: &Descriptor) -> ArtifactInfo {
    let config = write_blob(dir, MEDIA_TYPE_EMPTY, EMPTY_JSON);
    assert_eq!(config.digest, EMPTY_DIGEST);
    let payload = serde_json::to_vec(&json!({
        "sbom": "test",
        "subject": subject.digest,
        "nonce": format!("{:016x}", fresh_seed()),
    }))
    .expect("json");
    let layer = write_blob(dir, TEST_ARTIFACT_TYPE, &payload);
    let mut subject_desc = subject.clone();
    subject_desc.platform = None;
    subject_desc.annotations.remove(REF_NAME_ANNOTATION);
    let manifest_json = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_IMAGE_MANIFEST,
        "artifactType": TEST_ARTIFACT_TYPE,
        "config": config.to_json(),
        "layers": [layer.to_json()],
        "subject": subject_desc.to_json(),
        "annotations": { "org.opencontainers.image.created": "2025-01-01T00:00:00Z" },
    });
    let manifest_bytes = serde_json::to_vec_pretty(&manifest_json).expect("json");
    let mut manifest = write_blob(dir, MEDIA_TYPE_IMAGE_MANIFEST, &manifest_bytes);
    manifest.artifact_type = Some(TEST_ARTIFACT_TYPE.to_owned());
    tag_in_index(dir, &manifest, tag);
    ArtifactInfo {
        manifest,
        manifest_bytes,
        artifact_type: TEST_ARTIFACT_TYPE.to_owned(),
        config,
        layers: vec![layer],
        subject: subject_desc,
    }
}

// ---------------------------------------------------------------------------------------------
// Reading layouts (what a client pulled back)
// ---------------------------------------------------------------------------------------------

/// The `index.json` entry tagged `tag`.
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
    assert_eq!(
        sha256_digest(&bytes),
        digest,
        "{} is corrupt",
        path.display()
    );
    bytes
}

/// Checks that a blob exists, hashes (streaming) to its digest and has the expected size.
pub fn verify_blob(dir: &Path, desc: &Descriptor) {
    let path = blob_path(dir, &desc.digest);
    let (digest, size) =
        sha256_file(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert_eq!(digest, desc.digest, "{} is corrupt", path.display());
    assert_eq!(size, desc.size, "{} has the wrong size", path.display());
}

/// Parses the image manifest at `manifest` in a layout, verifying every blob it names.
pub fn read_image(dir: &Path, manifest: &Descriptor) -> ImageInfo {
    let manifest_bytes = read_blob(dir, &manifest.digest);
    let v: Value = serde_json::from_slice(&manifest_bytes).expect("manifest is JSON");
    let config = Descriptor::from_json(&v["config"]);
    let layers: Vec<Descriptor> = v["layers"]
        .as_array()
        .map(|a| a.iter().map(Descriptor::from_json).collect())
        .unwrap_or_default();
    verify_blob(dir, &config);
    for l in &layers {
        verify_blob(dir, l);
    }
    ImageInfo {
        manifest: Descriptor::new(
            v["mediaType"].as_str().unwrap_or(&manifest.media_type),
            manifest.digest.clone(),
            manifest_bytes.len() as u64,
        ),
        manifest_bytes,
        config,
        layers,
    }
}

/// Parses the image index at `index` in a layout and every image it lists.
pub fn read_index(dir: &Path, index: &Descriptor) -> IndexInfo {
    let index_bytes = read_blob(dir, &index.digest);
    let v: Value = serde_json::from_slice(&index_bytes).expect("index is JSON");
    let images = v["manifests"]
        .as_array()
        .expect("index has manifests")
        .iter()
        .map(|m| {
            let d = Descriptor::from_json(m);
            let mut image = read_image(dir, &d);
            image.manifest.platform = d.platform;
            image
        })
        .collect();
    IndexInfo {
        index: Descriptor::new(
            MEDIA_TYPE_IMAGE_INDEX,
            index.digest.clone(),
            index_bytes.len() as u64,
        ),
        index_bytes,
        images,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_self_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let img = write_image(
            dir.path(),
            "latest",
            &[
                LayerSpec::random((3 << 20) | 17),
                LayerSpec::pattern(1000, 7),
                LayerSpec::tar_file("hello.bin", 700),
            ],
        );
        let tagged = resolve_tag(dir.path(), "latest");
        assert_eq!(tagged.digest, img.manifest.digest);
        let back = read_image(dir.path(), &tagged);
        assert_eq!(back.digests(), img.digests());
        assert_eq!(back.manifest_bytes, img.manifest_bytes);
        assert_eq!(img.layers[0].size, (3 << 20) | 17);
        assert_eq!(img.layers[2].size, 512 + 1024 + 1024); // header, padded data, trailer

        let idx = write_index(
            dir.path(),
            "multi",
            &[Platform::linux_amd64(), Platform::linux_arm64()],
        );
        let back = read_index(dir.path(), &resolve_tag(dir.path(), "multi"));
        assert_eq!(back.digests(), idx.digests());
        // The first tag is still there.
        assert_eq!(
            resolve_tag(dir.path(), "latest").digest,
            img.manifest.digest
        );

        let art = write_artifact(dir.path(), "sbom", &img.manifest);
        let v: Value =
            serde_json::from_slice(&read_blob(dir.path(), &art.manifest.digest)).unwrap();
        assert_eq!(v["subject"]["digest"], img.manifest.digest);
        assert_eq!(v["artifactType"], TEST_ARTIFACT_TYPE);
        assert_eq!(v["config"]["digest"], EMPTY_DIGEST);
        assert_eq!(read_blob(dir.path(), EMPTY_DIGEST), b"{}");
    }

    #[test]
    fn generated_bytes_are_deterministic_and_distinct() {
        let a = ByteGen::new(Fill::Seeded(1), 3 << 20).collect_vec();
        let b = ByteGen::new(Fill::Seeded(1), 3 << 20).collect_vec();
        let c = ByteGen::new(Fill::Seeded(2), 3 << 20).collect_vec();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a[..PIECE], a[PIECE..2 * PIECE]);
        assert!(a.starts_with(b"AERU"));
        assert_eq!(
            generated_digest(Fill::Seeded(1), 3 << 20),
            sha256_digest(&a)
        );
        assert_ne!(
            generated_digest(Fill::Random, 10),
            generated_digest(Fill::Random, 10)
        );
    }
}
