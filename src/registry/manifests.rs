//! Manifests, tags, the catalog and referrers.
//!
//! Manifests are kept as the exact bytes pushed. Reads go through the cache: tag → digest
//! (short TTL, invalidated on every tag write here) and repository+digest → bytes (immutable,
//! so it is only ever invalidated by a delete).

use bytes::{Bytes, BytesMut};

use super::{Registry, RegistryError, Result};
use crate::metadata::{ManifestRecord, NewManifest, Referrer};
use crate::oci::manifest::{self, accepts};
use crate::oci::{Digest, Reference, RepoName, Tag};

/// What a successful manifest push reports back to the client.
#[derive(Debug, Clone)]
pub struct PutManifestOutcome {
    pub digest: Digest,
    pub subject: Option<Digest>,
    pub tags: Vec<Tag>,
}

fn tag_key(repo: &RepoName, tag: &Tag) -> String {
    format!("t:{repo}:{tag}")
}

fn manifest_key(repo: &RepoName, digest: &Digest) -> String {
    format!("m:{repo}:{digest}")
}

/// Cache encoding of a manifest: `<media type>\n<bytes>`.
fn encode(record: &ManifestRecord) -> Bytes {
    let mut out = BytesMut::with_capacity(record.media_type.len() + 1 + record.body.len());
    out.extend_from_slice(record.media_type.as_bytes());
    out.extend_from_slice(b"\n");
    out.extend_from_slice(&record.body);
    out.freeze()
}

fn decode(digest: &Digest, cached: Bytes) -> Option<ManifestRecord> {
    let newline = cached.iter().position(|b| *b == b'\n')?;
    let media_type = std::str::from_utf8(&cached[..newline]).ok()?.to_owned();
    Some(ManifestRecord {
        digest: digest.clone(),
        media_type,
        body: cached.slice(newline + 1..),
    })
}

impl Registry {
    /// Validates and stores a manifest pushed to `reference`, plus any extra `?tag=`s.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
        extra_tags: Vec<Tag>,
    ) -> Result<PutManifestOutcome> {
        let limit = self.settings.max_manifest_bytes;
        if body.len() as u64 > limit {
            return Err(RegistryError::ManifestTooLarge { limit });
        }
        let info = manifest::parse(content_type, &body)
            .map_err(|e| RegistryError::ManifestInvalid(e.to_string()))?;
        let digest = match reference {
            Reference::Digest(claimed) => {
                let actual = Digest::of(claimed.algorithm(), &body);
                if actual != *claimed {
                    return Err(RegistryError::DigestMismatch {
                        expected: claimed.clone(),
                        actual,
                    });
                }
                actual
            }
            Reference::Tag(_) => Digest::sha256_of(&body),
        };
        let mut tags = extra_tags;
        if let Reference::Tag(tag) = reference {
            tags.insert(0, tag.clone());
        }
        // `?tag=a&tag=b&tag=a` (or the path's tag repeated) names each tag once.
        let mut seen = std::collections::HashSet::new();
        tags.retain(|tag| seen.insert(tag.clone()));
        let subject = info.subject.clone();
        let new = NewManifest {
            repo: repo.clone(),
            digest: digest.clone(),
            info,
            body,
            tags: tags.clone(),
        };
        self.meta.put_manifest(&new).await?;
        for tag in &tags {
            self.cache.delete(&tag_key(repo, tag)).await;
        }
        Ok(PutManifestOutcome {
            digest,
            subject,
            tags,
        })
    }

    /// The manifest `reference` names. A manifest fetched by tag must be of a type the client
    /// accepts; by digest the client has pinned the exact bytes, so it gets them.
    pub async fn get_manifest<'a>(
        &self,
        repo: &RepoName,
        reference: &Reference,
        accept: impl IntoIterator<Item = &'a str>,
    ) -> Result<ManifestRecord> {
        let record = match reference {
            Reference::Digest(digest) => self.manifest_by_digest(repo, digest).await?,
            Reference::Tag(tag) => self.manifest_by_tag(repo, tag).await?,
        };
        if matches!(reference, Reference::Tag(_)) && !accepts(accept, &record.media_type) {
            return Err(RegistryError::ManifestNotAcceptable(format!(
                "the tag points at a {} manifest, which the Accept header does not allow",
                record.media_type
            )));
        }
        Ok(record)
    }

    async fn manifest_by_digest(&self, repo: &RepoName, digest: &Digest) -> Result<ManifestRecord> {
        let key = manifest_key(repo, digest);
        if let Some(record) = self.cache.get(&key).await.and_then(|c| decode(digest, c)) {
            return Ok(record);
        }
        let record = self
            .meta
            .get_manifest(repo, &Reference::Digest(digest.clone()))
            .await?
            .ok_or(RegistryError::ManifestUnknown)?;
        self.cache
            .set(&key, encode(&record), self.settings.cache_ttl * 60)
            .await;
        Ok(record)
    }

    async fn manifest_by_tag(&self, repo: &RepoName, tag: &Tag) -> Result<ManifestRecord> {
        let key = tag_key(repo, tag);
        let cached_digest = self
            .cache
            .get(&key)
            .await
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<Digest>().ok());
        if let Some(digest) = cached_digest {
            return self.manifest_by_digest(repo, &digest).await;
        }
        let record = self
            .meta
            .get_manifest(repo, &Reference::Tag(tag.clone()))
            .await?
            .ok_or(RegistryError::ManifestUnknown)?;
        self.cache
            .set(
                &key,
                Bytes::from(record.digest.to_string()),
                self.settings.cache_ttl,
            )
            .await;
        self.cache
            .set(
                &manifest_key(repo, &record.digest),
                encode(&record),
                self.settings.cache_ttl * 60,
            )
            .await;
        Ok(record)
    }

    /// Deletes a tag, or a manifest together with every tag pointing at it.
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        match reference {
            Reference::Tag(tag) => {
                let removed = self.meta.delete_tag(repo, tag).await?;
                self.cache.delete(&tag_key(repo, tag)).await;
                if !removed {
                    return Err(RegistryError::ManifestUnknown);
                }
            }
            Reference::Digest(digest) => {
                let removed = self.meta.delete_manifest(repo, digest).await?;
                self.cache.delete(&manifest_key(repo, digest)).await;
                let tags = removed.ok_or(RegistryError::ManifestUnknown)?;
                for tag in &tags {
                    self.cache.delete(&tag_key(repo, tag)).await;
                }
            }
        }
        Ok(())
    }

    pub(super) async fn forget_tag(&self, repo: &RepoName, tag: &Tag) {
        self.cache.delete(&tag_key(repo, tag)).await;
    }

    pub(super) async fn forget_manifest(&self, repo: &RepoName, digest: &Digest) {
        self.cache.delete(&manifest_key(repo, digest)).await;
    }

    /// A page of the repository's tags.
    pub async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        self.meta
            .list_tags(repo, last, limit)
            .await?
            .ok_or(RegistryError::NameUnknown)
    }

    /// A page of repository names.
    pub async fn catalog(&self, last: Option<&str>, limit: usize) -> Result<Vec<String>> {
        Ok(self.meta.list_repositories(last, limit).await?)
    }

    /// Manifests whose subject is `subject`; an unknown subject simply has none.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        Ok(self
            .meta
            .list_referrers(repo, subject, artifact_type)
            .await?)
    }
}
