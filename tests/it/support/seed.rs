//! Seeding any registry over HTTP (the distribution registry, Aerugo cores started as
//! processes) with images built from the distribution tests' vocabulary, and the image type the
//! edge tests pull back and compare.
//!
//! Pushes use `POST` + `PUT ?digest=` (the monolithic `POST ?digest=` is optional in the spec,
//! and the distribution registry answers it with a plain upload session).

use reqwest::Url;
use serde_json::json;

use super::oci_layout;
use crate::distribution::{
    OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, bytes_for, descriptor_of, expect_status, header,
    manifest_bytes, oci_manifest, sha256,
};

/// An image: config, layers and an OCI manifest over them, unique to a seed.
#[derive(Debug, Clone)]
pub struct SeedImage {
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
    pub manifest: Vec<u8>,
    /// The manifest's digest.
    pub digest: String,
}

impl SeedImage {
    /// An image whose layers have these sizes; the config lists them as its diff IDs (the
    /// layers are not really compressed, and clients move them untouched).
    pub fn new(seed: &str, layer_sizes: &[usize]) -> SeedImage {
        let layers: Vec<Vec<u8>> = layer_sizes
            .iter()
            .enumerate()
            .map(|(i, size)| bytes_for(&format!("{seed} layer {i}"), *size))
            .collect();
        Self::with_layers(seed, layers, OCI_LAYER)
    }

    /// An image a container engine can unpack (containerd's `ctr images pull`): each layer is
    /// an uncompressed tar holding one file of that size, so its digest is its diff ID.
    pub fn unpackable(seed: &str, file_sizes: &[u64]) -> SeedImage {
        let layers = file_sizes
            .iter()
            .enumerate()
            .map(|(i, size)| {
                let name = format!("layer-{i}.bin");
                oci_layout::tar_layer_bytes(&name, oci_layout::Fill::Random, *size)
            })
            .collect();
        Self::with_layers(seed, layers, oci_layout::MEDIA_TYPE_LAYER_TAR)
    }

    fn with_layers(seed: &str, layers: Vec<Vec<u8>>, layer_media_type: &str) -> SeedImage {
        let config = manifest_bytes(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "Labels": { "seed": seed } },
            "rootfs": {
                "type": "layers",
                "diff_ids": layers.iter().map(|l| sha256(l)).collect::<Vec<_>>(),
            },
        }));
        let manifest = manifest_bytes(&oci_manifest(
            descriptor_of(OCI_CONFIG, &config),
            layers
                .iter()
                .map(|l| descriptor_of(layer_media_type, l))
                .collect(),
        ));
        SeedImage {
            digest: sha256(&manifest),
            config,
            layers,
            manifest,
        }
    }

    pub fn config_digest(&self) -> String {
        sha256(&self.config)
    }

    pub fn layer_digest(&self, index: usize) -> String {
        sha256(&self.layers[index])
    }

    /// Config and layers, as (digest, bytes).
    pub fn blobs(&self) -> Vec<(String, &[u8])> {
        std::iter::once(&self.config)
            .chain(&self.layers)
            .map(|b| (sha256(b), b.as_slice()))
            .collect()
    }
}

/// A client pushing to one registry.
pub struct Seeder {
    base: Url,
    http: reqwest::Client,
}

impl Seeder {
    /// `base`: `http://host:port`.
    pub fn new(base: &str) -> Seeder {
        Seeder {
            base: Url::parse(base).expect("registry base URL"),
            http: super::edge::http_client(),
        }
    }

    fn url(&self, path_or_url: &str) -> Url {
        self.base.join(path_or_url).expect("URL")
    }

    /// Pushes one blob (`POST`, then `PUT ?digest=` with the bytes); returns its digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let started = self
            .http
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/")))
            .send()
            .await
            .expect("POST upload");
        let (headers, _) = expect_status(started, 202).await;
        let mut location = self.url(header(&headers, "location"));
        location.query_pairs_mut().append_pair("digest", &digest);
        let finished = self
            .http
            .put(location)
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .expect("PUT upload");
        let (headers, _) = expect_status(finished, 201).await;
        assert_eq!(header(&headers, "docker-content-digest"), digest);
        digest
    }

    /// `PUT` of a manifest under `reference`; returns the digest the registry reported.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let response = self
            .http
            .put(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .expect("PUT manifest");
        let (headers, _) = expect_status(response, 201).await;
        let digest = header(&headers, "docker-content-digest").to_owned();
        assert_eq!(digest, sha256(body));
        digest
    }

    /// Pushes every blob of `image`, then its manifest tagged `tag`.
    pub async fn push_image(&self, repo: &str, tag: &str, image: &SeedImage) {
        for (_, bytes) in image.blobs() {
            self.push_blob(repo, bytes).await;
        }
        let digest = self
            .push_manifest(repo, tag, OCI_MANIFEST, &image.manifest)
            .await;
        assert_eq!(digest, image.digest);
    }
}
