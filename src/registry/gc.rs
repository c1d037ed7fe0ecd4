//! Online garbage collection: removes blobs no manifest references, abandoned upload
//! sessions, and bytes metadata never heard of (left by a crash between publish and link).
//!
//! Safe while pushes run, on any number of nodes: anything linked or touched within the grace
//! period is kept; a blob's bytes are deleted under the same digest lock a push holds while
//! it publishes and links that digest, after a last check that metadata still does not know
//! it; one collection runs at a time cluster-wide (the coordinator's GC lock). Cutoffs come
//! from the metadata store's clock, the one clock the nodes share. Everything goes in
//! batches, so neither a transaction nor a listing grows with the registry.

use std::time::{Duration, SystemTime};

use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::{Registry, RegistryError, Result};
use crate::metadata::{GcCursor, GcPlan, Timestamp};
use crate::oci::{Digest, UploadId};

/// Rows per metadata transaction and entries per storage listing page.
const BATCH: usize = 1000;

/// Blob deletions in flight at once. Each waits for the store: an object store's round trip,
/// or a filesystem's unlink, which on a disk mounted with `discard` waits for the device to
/// trim the freed blocks (~0.5 ms per blob on the test host): one at a time, a collection of
/// 10⁵ blobs took over a minute.
const DELETING: usize = 16;

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
    /// What the blob store kept for uploads beyond their areas (abandoned multipart uploads,
    /// held blob files a crash interrupted).
    #[serde(default)]
    pub leftovers_deleted: u64,
}

impl Registry {
    /// Collects everything unreferenced for longer than `grace`.
    ///
    /// # Errors
    /// `GcRunning` when a collection is already running (on any node).
    pub async fn collect_garbage(&self, grace: Duration) -> Result<GcReport> {
        let _collecting = self
            .coordinator
            .try_lock_gc()
            .await?
            .ok_or(RegistryError::GcRunning)?;
        let grace_secs = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
        let now = self.meta.now().await?;
        let cutoff = now.saturating_sub(grace_secs);
        let mut report = GcReport::default();
        let mut cursor = Some(GcCursor::default());
        while let Some(from) = cursor {
            let batch = self.meta.collect_garbage(cutoff, BATCH, &from).await?;
            self.apply(&batch.removed, &mut report).await?;
            cursor = batch.next;
        }
        self.collect_stale_sessions(cutoff, &mut report).await?;
        let stored_cutoff =
            SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(cutoff).unwrap_or_default());
        self.collect_orphan_blobs(stored_cutoff, &mut report)
            .await?;
        self.collect_orphan_uploads(stored_cutoff, &mut report)
            .await?;
        report.leftovers_deleted = self.blobs.collect_leftovers(stored_cutoff).await?;
        tracing::info!(?report, "garbage collection finished");
        Ok(report)
    }

    /// Carries out one metadata batch: caches forget the removed links, and the bytes of
    /// removed blobs go.
    async fn apply(&self, plan: &GcPlan, report: &mut GcReport) -> Result<()> {
        for (repo, digest) in &plan.links {
            self.forget_blob_link(repo, digest).await;
        }
        report.blobs_deleted += self.delete_unknown(plan.blobs.clone()).await?;
        Ok(())
    }

    /// [`Registry::delete_if_unknown`] for each digest, [`DELETING`] at a time (each under its
    /// own digest lock); how many were deleted.
    async fn delete_unknown(&self, digests: Vec<Digest>) -> Result<usize> {
        futures_util::stream::iter(digests)
            .map(|digest| async move { self.delete_if_unknown(&digest).await })
            .buffer_unordered(DELETING)
            .try_fold(
                0,
                |deleted, gone| async move { Ok(deleted + usize::from(gone)) },
            )
            .await
    }

    /// Sessions untouched since the cutoff, each ended under its lock after a second look,
    /// so a request writing to one (a long `PATCH` touches it only when it ends) keeps it.
    async fn collect_stale_sessions(&self, cutoff: Timestamp, report: &mut GcReport) -> Result<()> {
        let mut after: Option<UploadId> = None;
        loop {
            let page = self.meta.list_uploads(after.as_ref(), BATCH).await?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some(last.id.clone());
            for session in page.iter().filter(|s| s.updated_at < cutoff) {
                let Some(_idle) = self.coordinator.try_lock_upload(&session.id).await? else {
                    continue;
                };
                let still_stale = self
                    .meta
                    .get_upload(&session.repo, &session.id)
                    .await?
                    .is_some_and(|now| now.updated_at < cutoff);
                if still_stale && self.meta.delete_upload(&session.id).await? {
                    self.blobs.delete_upload(&session.id).await?;
                    report.uploads_deleted += 1;
                }
            }
        }
    }

    /// Stored blobs older than the cutoff that metadata does not know.
    async fn collect_orphan_blobs(&self, cutoff: SystemTime, report: &mut GcReport) -> Result<()> {
        let mut after: Option<Digest> = None;
        loop {
            let page = self.blobs.list_blobs(after.as_ref(), BATCH).await?;
            let Some((last, _)) = page.last() else {
                return Ok(());
            };
            after = Some(last.clone());
            let old = page
                .into_iter()
                .filter_map(|(digest, modified)| (modified < cutoff).then_some(digest));
            report.orphan_blobs_deleted += self.delete_unknown(old.collect()).await?;
        }
    }

    /// Upload areas older than the cutoff whose session is gone or abandoned.
    async fn collect_orphan_uploads(
        &self,
        cutoff: SystemTime,
        report: &mut GcReport,
    ) -> Result<()> {
        let mut after: Option<UploadId> = None;
        loop {
            let page = self.blobs.list_uploads(after.as_ref(), BATCH).await?;
            let Some((last, _)) = page.last() else {
                return Ok(());
            };
            after = Some(last.clone());
            for (id, modified) in &page {
                if *modified >= cutoff {
                    continue;
                }
                // A request holding the session lock is writing right now.
                if let Some(_busy) = self.coordinator.try_lock_upload(id).await? {
                    let _ = self.meta.delete_upload(id).await?;
                    self.blobs.delete_upload(id).await?;
                    report.orphan_uploads_deleted += 1;
                }
            }
        }
    }

    async fn delete_if_unknown(&self, digest: &Digest) -> Result<bool> {
        let _publishing = self.coordinator.lock_digest(digest).await?;
        if self.meta.blob_known(digest).await? {
            return Ok(false);
        }
        self.blobs.delete(digest).await?;
        Ok(true)
    }
}
