//! Online garbage collection: removes blobs no manifest references, abandoned upload
//! sessions, and bytes metadata never heard of (left by a crash between publish and link).
//!
//! Safe while pushes run: anything linked or touched within the grace period is kept, and the
//! deletion of a blob's bytes happens under the same per-digest lock a push holds while it
//! publishes and links that digest, with a last check that metadata still does not know it.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{Registry, Result};
use crate::metadata::now;

/// What one collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    /// Blobs whose last link or reference went away.
    pub blobs_deleted: usize,
    /// Upload sessions not touched within the grace period.
    pub uploads_deleted: usize,
    /// Stored blobs metadata did not know at all.
    pub orphan_blobs_deleted: usize,
    /// Upload byte areas without a live session.
    pub orphan_uploads_deleted: usize,
}

impl Registry {
    /// Collects everything unreferenced for longer than `grace`.
    pub async fn collect_garbage(&self, grace: Duration) -> Result<GcReport> {
        let grace_secs = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
        let plan = self
            .meta
            .collect_garbage(now().saturating_sub(grace_secs))
            .await?;
        // Metadata may have removed blob links; none of the cached ones may be served now.
        self.link_generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let mut report = GcReport::default();
        for digest in &plan.blobs {
            if self.delete_if_unknown(digest).await? {
                report.blobs_deleted += 1;
            }
        }
        for id in &plan.uploads {
            self.blobs.delete_upload(id).await?;
            report.uploads_deleted += 1;
        }
        let cutoff = SystemTime::now()
            .checked_sub(grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        for (digest, modified) in self.blobs.list().await? {
            if modified < cutoff && self.delete_if_unknown(&digest).await? {
                report.orphan_blobs_deleted += 1;
            }
        }
        for (id, modified) in self.blobs.list_uploads().await? {
            if modified >= cutoff || plan.uploads.contains(&id) {
                continue;
            }
            // A request holding the session lock is writing right now.
            if let Some(_busy) = self.upload_locks.try_lock(&id) {
                let _ = self.meta.delete_upload(&id).await?;
                self.blobs.delete_upload(&id).await?;
                report.orphan_uploads_deleted += 1;
            }
        }
        tracing::info!(?report, "garbage collection finished");
        Ok(report)
    }

    async fn delete_if_unknown(&self, digest: &crate::oci::Digest) -> Result<bool> {
        let _publishing = self.digest_locks.lock(digest).await;
        if self.meta.blob_known(digest).await? {
            return Ok(false);
        }
        self.blobs.delete(digest).await?;
        Ok(true)
    }
}
