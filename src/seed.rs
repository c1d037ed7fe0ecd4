//! `aerugo admin seed`: fills a registry with synthetic content, to measure how its costs grow
//! with its size (`scripts/bench-scale.sh`, docs/benchmarks.md).
//!
//! Everything is written through the [`Registry`]'s own methods — the records, files and
//! objects the API would leave, digests verified — without HTTP in between, which would
//! make 10⁶ blobs take hours. The layout is fixed, so a measurement knows what to ask for:
//!
//! ```text
//! seed/tags          `tags` tags t0000000…, each its own image manifest (config + layer);
//!                    `referrers` artifact manifests whose subject is t0000000's manifest
//! seed/r0000000…     `repositories` repositories, each with a manifest tagged `latest`
//!                    whose layer is the repository's first blob
//! ```
//!
//! `blobs` distinct small blobs in all (at least `repositories`), dealt round-robin over the
//! repositories; the config blob of every manifest is one shared blob. Running it again adds
//! nothing new (same names, same bytes).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use serde::Serialize;
use serde_json::json;

use crate::oci::{Digest, Reference, RepoName, Tag};
use crate::registry::{BodyStream, Registry, RegistryError, Result, uploads::BodyInfo};

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const ARTIFACT: &str = "application/vnd.aerugo.seed.v1";
const TAGGED: &str = "seed/tags";

/// What to create.
#[derive(Debug, Clone, Copy)]
pub struct SeedPlan {
    pub blobs: u64,
    pub repositories: u64,
    pub tags: u64,
    pub referrers: u64,
    /// Writes in flight at once.
    pub concurrency: usize,
}

/// What was created, and how long each part took.
#[derive(Debug, Default, Serialize)]
pub struct SeedReport {
    pub blobs: u64,
    pub repositories: u64,
    pub tags: u64,
    pub referrers: u64,
    pub blob_seconds: f64,
    pub repository_seconds: f64,
    pub tag_seconds: f64,
    pub referrer_seconds: f64,
}

/// A blob as a manifest refers to it.
#[derive(Clone)]
struct Descriptor {
    media_type: &'static str,
    digest: Digest,
    size: u64,
}

impl Descriptor {
    fn to_json(&self) -> serde_json::Value {
        json!({"mediaType": self.media_type, "digest": self.digest.to_string(), "size": self.size})
    }
}

fn repository(index: u64) -> Result<RepoName> {
    parse_name(&format!("seed/r{index:07}"))
}

fn parse_name(name: &str) -> Result<RepoName> {
    name.parse()
        .map_err(|e| RegistryError::NameInvalid(format!("{name}: {e}")))
}

fn tag(name: &str) -> Result<Tag> {
    name.parse()
        .map_err(|e| RegistryError::TagInvalid(format!("{name}: {e}")))
}

/// The bytes of seeded blob `index`: distinct for every index.
fn blob_bytes(index: u64) -> Bytes {
    Bytes::from(format!("aerugo seed blob {index}\n"))
}

fn one_chunk(bytes: Bytes) -> BodyStream {
    Box::pin(stream::iter([Ok(bytes)]))
}

/// Pushes `bytes` into `repo` as one `POST ?digest=` would.
async fn push(
    registry: &Registry,
    repo: &RepoName,
    bytes: Bytes,
    media_type: &'static str,
) -> Result<Descriptor> {
    let digest = Digest::sha256_of(&bytes);
    let size = bytes.len() as u64;
    let info = BodyInfo {
        range: None,
        content_length: Some(size),
    };
    registry
        .push_blob(repo, &digest, info, one_chunk(bytes))
        .await?;
    Ok(Descriptor {
        media_type,
        digest,
        size,
    })
}

/// Puts an image manifest into `repo` under `reference`; its descriptor.
async fn put_image(
    registry: &Registry,
    repo: &RepoName,
    reference: &Reference,
    manifest: serde_json::Value,
) -> Result<Descriptor> {
    let body = Bytes::from(manifest.to_string());
    let descriptor = Descriptor {
        media_type: MANIFEST,
        digest: Digest::sha256_of(&body),
        size: body.len() as u64,
    };
    registry
        .put_manifest(repo, reference, Some(MANIFEST), body, Vec::new())
        .await?;
    Ok(descriptor)
}

fn image(config: &Descriptor, layer: &Descriptor, note: &str) -> serde_json::Value {
    json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json()],
        "annotations": {"org.aerugo.seed": note},
    })
}

/// Runs `each` for every index below `count`, `concurrency` at a time; the seconds it took.
async fn for_each<F, Fut>(count: u64, concurrency: usize, each: F) -> Result<f64>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let started = Instant::now();
    stream::iter(0..count)
        .map(each)
        .buffer_unordered(concurrency.max(1))
        .try_collect::<()>()
        .await?;
    Ok(started.elapsed().as_secs_f64())
}

/// Creates what `plan` describes (see the module doc).
pub async fn seed(registry: Arc<Registry>, plan: SeedPlan) -> anyhow::Result<SeedReport> {
    anyhow::ensure!(
        plan.blobs >= plan.repositories,
        "{} blobs cannot give each of {} repositories its own",
        plan.blobs,
        plan.repositories
    );
    let tagged = parse_name(TAGGED)?;
    let config = push(
        &registry,
        &tagged,
        Bytes::from_static(b"{\"architecture\":\"amd64\",\"os\":\"linux\"}"),
        CONFIG,
    )
    .await?;
    let layer = push(&registry, &tagged, blob_bytes(u64::MAX), LAYER).await?;
    let mut report = SeedReport::default();
    let registry = &registry;

    report.blob_seconds = for_each(plan.blobs, plan.concurrency, |i| async move {
        let repo = repository(i % plan.repositories.max(1))?;
        push(registry, &repo, blob_bytes(i), LAYER).await.map(drop)
    })
    .await?;
    report.blobs = plan.blobs;

    let (config_ref, tagged_ref, layer_ref) = (&config, &tagged, &layer);
    report.repository_seconds = for_each(plan.repositories, plan.concurrency, |i| async move {
        let repo = repository(i)?;
        registry
            .mount_blob(&repo, tagged_ref, &config_ref.digest)
            .await?;
        let bytes = blob_bytes(i);
        let own = Descriptor {
            media_type: LAYER,
            size: bytes.len() as u64,
            digest: Digest::sha256_of(&bytes),
        };
        let latest = Reference::Tag(tag("latest")?);
        put_image(registry, &repo, &latest, image(config_ref, &own, "latest"))
            .await
            .map(drop)
    })
    .await?;
    report.repositories = plan.repositories;

    report.tag_seconds = for_each(plan.tags, plan.concurrency, |i| async move {
        let reference = Reference::Tag(tag(&format!("t{i:07}"))?);
        let note = format!("tag {i}");
        put_image(
            registry,
            tagged_ref,
            &reference,
            image(config_ref, layer_ref, &note),
        )
        .await
        .map(drop)
    })
    .await?;
    report.tags = plan.tags;

    if plan.referrers > 0 {
        let subject = put_image(
            registry,
            &tagged,
            &Reference::Tag(tag("t0000000")?),
            image(&config, &layer, "tag 0"),
        )
        .await?;
        let subject = &subject;
        report.referrer_seconds = for_each(plan.referrers, plan.concurrency, |i| async move {
            let mut manifest = image(config_ref, layer_ref, &format!("referrer {i}"));
            manifest["artifactType"] = json!(ARTIFACT);
            manifest["subject"] = subject.to_json();
            let body = manifest.to_string();
            let digest = Reference::Digest(Digest::sha256_of(body.as_bytes()));
            put_image(registry, tagged_ref, &digest, manifest)
                .await
                .map(drop)
        })
        .await?;
        report.referrers = plan.referrers;
    }
    Ok(report)
}
