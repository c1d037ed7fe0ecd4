//! Blob upload sessions: start, chunked append, finish with digest verification, cancel, and
//! the single-request monolithic push.
//!
//! Bytes are hashed as they stream to storage; the hash state is saved with the session after
//! every request, so a chunked upload never re-reads what it already received. A blob becomes
//! visible only when [`Registry::finish_upload`] has matched the client's digest.

use std::time::Duration;

use futures_util::StreamExt;

use super::quota::RequestQuota;
use super::{BodyStream, Registry, RegistryError, Result};
use crate::coordination::LockGuard;
use crate::digesting::BackgroundHasher;
use crate::metadata::UploadSession;
use crate::oci::{Algorithm, ChunkRange, Digest, Hasher, RepoName, UploadId};
use crate::storage::{BlobStoreError, BlobWriter, UploadWriter};
use crate::telemetry::metrics;

/// The blob store's upload areas, walked page by page alongside the sessions: both come in id
/// order, so reconciliation is a merge and holds one page of each at a time.
#[derive(Default)]
struct StoredUploads {
    page: std::collections::VecDeque<UploadId>,
    after: Option<UploadId>,
    exhausted: bool,
}

impl StoredUploads {
    /// Whether the store has an area for `id`; ids must be asked in increasing order.
    async fn contains(&mut self, registry: &Registry, id: &UploadId) -> Result<bool> {
        loop {
            while self.page.front().is_some_and(|s| s.as_str() < id.as_str()) {
                self.page.pop_front();
            }
            if let Some(front) = self.page.front() {
                return Ok(front == id);
            }
            if self.exhausted {
                return Ok(false);
            }
            let next = registry
                .blobs
                .list_uploads(self.after.as_ref(), RECONCILE_PAGE)
                .await?;
            self.exhausted = next.len() < RECONCILE_PAGE;
            self.after = next.last().map(|(id, _)| id.clone());
            self.page.extend(next.into_iter().map(|(id, _)| id));
        }
    }
}

/// How long a request waits for its session's lock before calling the session busy.
const UPLOAD_LOCK_PATIENCE: Duration = Duration::from_secs(2);

/// What the client said about a request body.
#[derive(Debug, Clone, Copy, Default)]
pub struct BodyInfo {
    pub range: Option<ChunkRange>,
    pub content_length: Option<u64>,
}

/// Where an upload's progress is kept, and so where its bytes wait to be published.
enum Tracking {
    /// In a metadata session row, which a client resumes over several requests (and nodes);
    /// the bytes in the session's upload area.
    Recorded,
    /// In the request that carries the whole blob, which nobody resumes; the bytes in the
    /// store's whole-blob writer ([`crate::storage::BlobStore::receive_blob`]).
    InRequest(Box<dyn BlobWriter>),
}

impl Registry {
    /// Opens a session. Hashing uses `algorithm` from the start (`?digest-algorithm=`).
    pub async fn start_upload(
        &self,
        repo: &RepoName,
        algorithm: Algorithm,
    ) -> Result<UploadSession> {
        let id = UploadId::generate();
        self.blobs.create_upload(&id).await?;
        let hash_state = Hasher::new(algorithm).save_state();
        let session = self.meta.create_upload(&id, repo, &hash_state).await?;
        metrics().uploads_started.inc();
        Ok(session)
    }

    pub async fn upload_status(&self, repo: &RepoName, id: &UploadId) -> Result<UploadSession> {
        self.meta
            .get_upload(repo, id)
            .await?
            .ok_or(RegistryError::UploadUnknown)
    }

    /// Appends one chunk (`PATCH`).
    pub async fn append_upload(
        &self,
        repo: &RepoName,
        id: &UploadId,
        info: BodyInfo,
        body: BodyStream,
    ) -> Result<UploadSession> {
        let _busy = self.lock_upload(id).await?;
        let session = self.upload_status(repo, id).await?;
        let mut quota = RequestQuota::default();
        match self
            .receive_recorded(session.clone(), info, body, &mut quota)
            .await
        {
            Err(e) if bytes_are_gone(&e) => Err(self.forget_lost_upload(&session).await),
            other => other,
        }
    }

    /// Appends the optional last chunk, verifies the digest and publishes the blob (`PUT`).
    /// On a digest mismatch the session and its bytes are discarded.
    pub async fn finish_upload(
        &self,
        repo: &RepoName,
        id: &UploadId,
        digest: &Digest,
        info: BodyInfo,
        body: BodyStream,
    ) -> Result<u64> {
        let _busy = self.lock_upload(id).await?;
        let session = self.upload_status(repo, id).await?;
        // The exact charge comes with the commit; the body is held to the whole quota.
        let mut quota = RequestQuota::default();
        let received = match self
            .receive_recorded(session.clone(), info, body, &mut quota)
            .await
        {
            Ok(received) => {
                self.commit(received, digest, Tracking::Recorded, quota)
                    .await
            }
            Err(e) => Err(e),
        };
        match received {
            Err(e) if bytes_are_gone(&e) => self.settle_lost_upload(&session, digest).await,
            other => other,
        }
    }

    /// Pushes a whole blob in one request (`POST ?digest=`). Nothing about it is resumable, so
    /// its progress lives in this request only: no session row is written, advanced or
    /// deleted, the blob's link is the one metadata write, and its bytes go to the store's
    /// whole-blob writer (published by one rename or one object put, with the same
    /// durability). GC leaves its area alone while this request holds its lock (taken before
    /// the area exists); one a crash left behind is an orphan GC removes after the grace period.
    pub async fn push_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        info: BodyInfo,
        body: BodyStream,
    ) -> Result<u64> {
        let id = UploadId::generate();
        let _busy = self.lock_upload(&id).await?;
        let mut tracking = Tracking::InRequest(self.blobs.receive_blob(&id).await?);
        metrics().uploads_started.inc();
        let now = crate::metadata::system_now();
        let session = UploadSession {
            id,
            repo: repo.clone(),
            offset: 0,
            hash_state: Hasher::new(digest.algorithm()).save_state(),
            created_at: now,
            updated_at: now,
        };
        let mut quota = RequestQuota::default();
        let received = self
            .receive(
                session.clone(),
                info,
                body,
                Some(digest),
                &mut tracking,
                &mut quota,
            )
            .await;
        match received {
            Ok(session) => self.commit(session, digest, tracking, quota).await,
            Err(e) => {
                self.discard(&session.id).await;
                Err(e)
            }
        }
    }

    /// Ends a session without publishing anything (`DELETE`).
    pub async fn cancel_upload(&self, repo: &RepoName, id: &UploadId) -> Result<()> {
        let _busy = self.lock_upload(id).await?;
        let session = self.upload_status(repo, id).await?;
        self.discard(&session.id).await;
        Ok(())
    }

    /// The session's lock, waiting briefly: a client sends its next request on a session as
    /// soon as the previous one is answered, and a database lock is let go just after the
    /// answer went out. A request still busy after the wait is another one writing.
    async fn lock_upload(&self, id: &UploadId) -> Result<LockGuard> {
        let deadline = tokio::time::Instant::now() + UPLOAD_LOCK_PATIENCE;
        let mut pause = Duration::from_millis(5);
        loop {
            if let Some(guard) = self.coordinator.try_lock_upload(id).await? {
                return Ok(guard);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RegistryError::UploadInvalid(
                    "another request is writing to this upload session".into(),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// [`Registry::receive`] into the session's upload area, the digest not known yet (a
    /// `PATCH`, a finishing `PUT`'s last chunk).
    async fn receive_recorded(
        &self,
        session: UploadSession,
        info: BodyInfo,
        body: BodyStream,
        quota: &mut RequestQuota,
    ) -> Result<UploadSession> {
        let tracking = &mut Tracking::Recorded;
        self.receive(session, info, body, None, tracking, quota)
            .await
    }

    /// Streams a body into the session: checks the range and the quota's cap (see
    /// [`Registry::upload_cap`]; `target` is the blob's digest when already known), hashes and
    /// writes every chunk, makes the bytes durable, then advances the session (its row too,
    /// when `Recorded`). On any failure the session keeps its old offset, so the partial bytes
    /// are ignored.
    async fn receive(
        &self,
        mut session: UploadSession,
        info: BodyInfo,
        mut body: BodyStream,
        target: Option<&Digest>,
        tracking: &mut Tracking,
        quota: &mut RequestQuota,
    ) -> Result<UploadSession> {
        let expected_len = expected_length(&session, info)?;
        // A request declaring no body (the usual finishing `PUT`) adds nothing to hold back.
        let cap = match expected_len {
            Some(0) => None,
            _ => self.upload_cap(&session.repo, target, quota).await?,
        };
        let over_cap = |len: u64| cap.filter(|cap| session.offset + len > cap.bytes);
        if let Some(cap) = expected_len.and_then(over_cap) {
            let size = session.offset + expected_len.unwrap_or_default();
            return Err(self.refuse_upload(&session.repo, cap, size).await);
        }
        // The hash runs beside the socket reads and the file writes, not in front of them.
        let mut hasher = BackgroundHasher::new(saved_hasher(&session)?);
        let mut appending: Box<dyn UploadWriter>;
        let writer: &mut dyn UploadWriter = match tracking {
            Tracking::Recorded => {
                appending = self
                    .blobs
                    .append_upload(&session.id, session.offset)
                    .await?;
                &mut *appending
            }
            Tracking::InRequest(whole) => &mut **whole,
        };
        let mut received: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk
                .map_err(|e| RegistryError::UploadInvalid(format!("request body failed: {e}")))?;
            received += chunk.len() as u64;
            if expected_len.is_some_and(|len| received > len) {
                return Err(size_mismatch(expected_len, received));
            }
            if let Some(cap) = over_cap(received) {
                let size = session.offset + received;
                return Err(self.refuse_upload(&session.repo, cap, size).await);
            }
            hasher.update(chunk.clone()).await;
            writer.write(chunk).await?;
        }
        if expected_len.is_some_and(|len| received != len) {
            return Err(size_mismatch(expected_len, received));
        }
        if received == 0 {
            return Ok(session);
        }
        // The last hash batch and the fsync overlap too.
        let (hasher, written) = tokio::join!(hasher.finish(), writer.finish());
        written?;
        let hasher = hasher.map_err(|e| BlobStoreError::from(std::io::Error::other(e)))?;
        metrics().bytes_received.inc_by(received);
        let new_offset = session.offset + received;
        let state = hasher.save_state();
        if matches!(tracking, Tracking::Recorded)
            && !self
                .meta
                .advance_upload(&session.id, session.offset, new_offset, &state)
                .await?
        {
            return Err(RegistryError::UploadUnknown);
        }
        session.offset = new_offset;
        session.hash_state = state;
        Ok(session)
    }

    async fn commit(
        &self,
        session: UploadSession,
        digest: &Digest,
        tracking: Tracking,
        mut quota: RequestQuota,
    ) -> Result<u64> {
        let actual = self.digest_of_upload(&session, digest.algorithm()).await?;
        if actual != *digest {
            self.discard(&session.id).await;
            return Err(RegistryError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        let size = session.offset;
        let has_row = {
            let _publishing = self.coordinator.lock_digest(digest).await?;
            if let Err(refused) = self.charge(&session.repo, digest, size, &mut quota).await {
                self.discard(&session.id).await;
                return Err(refused);
            }
            let has_row = match tracking {
                Tracking::Recorded => {
                    self.blobs.commit_upload(&session.id, size, digest).await?;
                    true
                }
                Tracking::InRequest(whole) => {
                    whole.publish(size, digest).await?;
                    false
                }
            };
            self.meta.link_blob(&session.repo, digest, size).await?;
            has_row
        };
        if has_row {
            self.meta.delete_upload(&session.id).await?;
        }
        self.close_upload(&session, digest).await;
        Ok(size)
    }

    /// After a blob is linked (and its session row, if any, deleted).
    async fn close_upload(&self, session: &UploadSession, digest: &Digest) {
        self.forget_blob_link(&session.repo, digest).await;
        metrics().uploads_completed.inc();
    }

    /// The `PUT` of a session whose bytes are gone. A `PUT` that published them and died
    /// before closing the session (a crash between the rename and the metadata writes) left
    /// the blob its own saved hash names, of its size: the retry completes it, `201`. Anything
    /// else cannot be resumed: the session ends, `404 BLOB_UPLOAD_UNKNOWN`. The blob is
    /// checked under its digest lock, so GC cannot delete it between the check and the link,
    /// and only the session's own hash counts, so no client links a blob it never sent.
    async fn settle_lost_upload(&self, session: &UploadSession, digest: &Digest) -> Result<u64> {
        if hashed_digest(session).as_ref() == Some(digest) {
            let linked = {
                let _publishing = self.coordinator.lock_digest(digest).await?;
                let complete = self.is_published_as(session, digest).await?;
                if complete {
                    self.meta
                        .link_blob(&session.repo, digest, session.offset)
                        .await?;
                }
                complete
            };
            if linked {
                tracing::info!(upload = %session.id, %digest, "completed an upload published before a crash");
                self.meta.delete_upload(&session.id).await?;
                self.close_upload(session, digest).await;
                return Ok(session.offset);
            }
        }
        Err(self.forget_lost_upload(session).await)
    }

    /// Ends a session whose bytes are gone; the client must start over.
    async fn forget_lost_upload(&self, session: &UploadSession) -> RegistryError {
        tracing::warn!(upload = %session.id, "upload session lost its bytes; ending it");
        self.discard(&session.id).await;
        RegistryError::UploadUnknown
    }

    /// Start-up: ends every session whose bytes are gone and which no retried `PUT` could
    /// complete (see `settle_lost_upload`), so clients see `404` at once instead of a session
    /// that looks alive. Returns how many were ended.
    pub async fn reconcile_uploads(&self) -> Result<usize> {
        let mut stored = StoredUploads::default();
        let mut ended = 0;
        let mut after = None;
        loop {
            let page = self
                .meta
                .list_uploads(after.as_ref(), RECONCILE_PAGE)
                .await?;
            let full = page.len() == RECONCILE_PAGE;
            after = page.last().map(|s| s.id.clone());
            for session in &page {
                if stored.contains(self, &session.id).await? {
                    continue;
                }
                let published = match hashed_digest(session) {
                    Some(digest) => self.is_published_as(session, &digest).await?,
                    None => false,
                };
                if !published {
                    self.discard(&session.id).await;
                    ended += 1;
                }
            }
            if !full {
                return Ok(ended);
            }
        }
    }

    /// Whether blob `digest` is stored with the session's size (an earlier `PUT` of the
    /// session published it).
    async fn is_published_as(&self, session: &UploadSession, digest: &Digest) -> Result<bool> {
        let meta = self.blobs.stat(digest).await?;
        Ok(meta.is_some_and(|meta| meta.size == session.offset))
    }

    /// The digest of everything received, from the saved state when the algorithms agree,
    /// otherwise by re-reading the bytes.
    async fn digest_of_upload(
        &self,
        session: &UploadSession,
        algorithm: Algorithm,
    ) -> Result<Digest> {
        let saved = saved_hasher(session)?;
        if saved.algorithm() == algorithm {
            return Ok(saved.finish());
        }
        let mut hasher = Hasher::new(algorithm);
        let mut bytes = self.blobs.read_upload(&session.id, session.offset).await?;
        while let Some(chunk) = bytes.next().await {
            hasher.update(&chunk.map_err(crate::storage::BlobStoreError::from)?);
        }
        Ok(hasher.finish())
    }

    /// Removes a session and its bytes; failures are logged, GC retries them later.
    async fn discard(&self, id: &UploadId) {
        if let Err(e) = self.meta.delete_upload(id).await {
            tracing::warn!(upload = %id, error = %e, "could not delete upload session");
        }
        if let Err(e) = self.blobs.delete_upload(id).await {
            tracing::warn!(upload = %id, error = %e, "could not delete upload bytes");
        }
    }
}

/// The hasher as it stood after the session's last confirmed byte.
fn saved_hasher(session: &UploadSession) -> Result<Hasher> {
    Hasher::restore_state(&session.hash_state)
        .ok_or_else(|| RegistryError::UploadInvalid("upload session state is unreadable".into()))
}

/// The digest of everything the session received, from its saved hash state.
fn hashed_digest(session: &UploadSession) -> Option<Digest> {
    saved_hasher(session).ok().map(Hasher::finish)
}

/// Sessions read per metadata query during start-up reconciliation.
const RECONCILE_PAGE: usize = 1000;

/// The store no longer has the session's byte area (or fewer bytes than confirmed).
fn bytes_are_gone(e: &RegistryError) -> bool {
    matches!(
        e,
        RegistryError::Storage(
            BlobStoreError::UploadNotFound | BlobStoreError::UploadTooShort { .. }
        )
    )
}

/// How many bytes this request must carry, from `Content-Range` (which must continue the
/// upload exactly) or `Content-Length`.
fn expected_length(session: &UploadSession, info: BodyInfo) -> Result<Option<u64>> {
    let Some(range) = info.range else {
        return Ok(info.content_length);
    };
    if range.start() != session.offset {
        return Err(RegistryError::RangeInvalid(format!(
            "chunk starts at byte {} but the upload holds {} bytes",
            range.start(),
            session.offset
        )));
    }
    let len = range.length();
    if info.content_length.is_some_and(|declared| declared != len) {
        return Err(RegistryError::RangeInvalid(format!(
            "Content-Range covers {len} bytes but Content-Length is {}",
            info.content_length.unwrap_or_default()
        )));
    }
    Ok(Some(len))
}

fn size_mismatch(expected: Option<u64>, received: u64) -> RegistryError {
    RegistryError::SizeInvalid(format!(
        "request declared {} bytes but carried {received}",
        expected.unwrap_or_default()
    ))
}
