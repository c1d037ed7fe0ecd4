//! The edge's content-addressed disk cache: blobs and manifests by digest, tag → digest
//! mappings with the time they were last validated, a size cap with LRU eviction.
//!
//! Layout under the cache directory:
//!
//! ```text
//! blobs/<alg>/<2 hex>/<hex>                   blob bytes, verified before they got here
//! manifests/<alg>/<2 hex>/<hex>               "<media type>\n<manifest bytes>"
//! tags/<upstream>/<repo>/_tags/<tag>          "<digest>"; mtime = last validation
//! tmp/<pid>/                                  fills in progress of the process <pid>
//! ```
//!
//! During a graceful upgrade (`aerugo edge --upgrade`) two processes share the directory for a
//! few seconds: the old one finishes its in-flight fills in its own `tmp/<pid>/` while the new
//! one starts, so start-up removes only the temp directories of processes that are gone.
//!
//! Everything appears by `rename` of a complete, fsynced temp file, so a crash leaves no
//! partial entry; blobs and manifests by `fileio`'s
//! rename, made durable by fsyncing the directories. The LRU index is rebuilt from the directory at start-up (oldest
//! modification first), so a restart keeps the warm cache.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use bytes::Bytes;
use lru::LruCache;

use crate::fileio;
use crate::oci::{Digest, RepoName, Tag};
use crate::telemetry::metrics;

/// What an LRU entry is: the same digest may be cached as a blob and as a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Entry {
    Blob(Digest),
    Manifest(Digest),
}

/// A tag as the cache last validated it with its upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRecord {
    pub upstream: String,
    pub repo: RepoName,
    pub digest: Digest,
    pub validated: SystemTime,
}

struct Index {
    lru: LruCache<Entry, u64>,
    bytes: u64,
}

pub struct DiskCache {
    root: PathBuf,
    /// `tmp/<pid>`: this process's temp files.
    tmp: PathBuf,
    max_bytes: u64,
    index: Mutex<Index>,
}

impl DiskCache {
    /// Opens (creating) the cache at `root` and rebuilds its index. Blocking: call at start-up.
    pub fn open(root: &Path, max_bytes: u64) -> io::Result<DiskCache> {
        for dir in ["blobs", "manifests", "tags"] {
            fs::create_dir_all(root.join(dir))?;
        }
        let tmp = root.join("tmp");
        fs::create_dir_all(&tmp)?;
        remove_orphaned_temp_files(&tmp);
        let tmp = tmp.join(std::process::id().to_string());
        fs::create_dir_all(&tmp)?;
        let mut found = Vec::new();
        scan(&root.join("blobs"), &mut |d, size, t| {
            found.push((t, Entry::Blob(d), size))
        })?;
        scan(&root.join("manifests"), &mut |d, size, t| {
            found.push((t, Entry::Manifest(d), size))
        })?;
        found.sort_by_key(|(t, _, _)| *t);
        let mut index = Index {
            lru: LruCache::unbounded(),
            bytes: 0,
        };
        for (_, entry, size) in found {
            index.bytes += size;
            index.lru.put(entry, size);
        }
        let cache = DiskCache {
            root: root.to_path_buf(),
            tmp,
            max_bytes,
            index: Mutex::new(index),
        };
        cache.evict();
        Ok(cache)
    }

    /// `blobs/` or `manifests/`: where an entry of this kind lives.
    fn kind_dir(&self, entry: &Entry) -> PathBuf {
        self.root.join(match entry {
            Entry::Blob(_) => "blobs",
            Entry::Manifest(_) => "manifests",
        })
    }

    fn path_of(&self, entry: &Entry) -> PathBuf {
        let (Entry::Blob(digest) | Entry::Manifest(digest)) = entry;
        let hex = digest.hex();
        self.kind_dir(entry)
            .join(digest.algorithm().as_str())
            .join(hex.get(..2).unwrap_or(hex))
            .join(hex)
    }

    fn tag_path(&self, upstream: &str, repo: &RepoName, tag: &Tag) -> PathBuf {
        // Repository components match [a-z0-9]+…, so `_tags` can never collide with one; the
        // upstream name comes from configuration and is checked there.
        self.root
            .join("tags")
            .join(upstream)
            .join(repo.as_str())
            .join("_tags")
            .join(tag.as_str())
    }

    /// A fresh temp file inside the cache (same filesystem, so commit is a rename).
    pub fn temp_file(&self) -> io::Result<(PathBuf, fs::File)> {
        let path = self.tmp.join(uuid::Uuid::new_v4().to_string());
        let file = fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok((path, file))
    }

    /// The cached blob's path and size, marking it recently used.
    pub fn blob(&self, digest: &Digest) -> Option<(PathBuf, u64)> {
        let entry = Entry::Blob(digest.clone());
        let size = self.lookup(&entry)?;
        Some((self.path_of(&entry), size))
    }

    /// An entry's size, marking it recently used. An entry missing from the index is looked
    /// for on disk: another process sharing the directory (the outgoing edge during an
    /// upgrade) may have committed it after this index was built.
    fn lookup(&self, entry: &Entry) -> Option<u64> {
        if let Some(size) = self.lock().lru.get(entry) {
            return Some(*size);
        }
        let meta = fs::metadata(self.path_of(entry)).ok()?;
        let size = meta.len();
        if !meta.is_file() || size > self.max_bytes {
            return None;
        }
        {
            let mut index = self.lock();
            if let Some(old) = index.lru.put(entry.clone(), size) {
                index.bytes -= old;
            }
            index.bytes += size;
        }
        self.evict();
        Some(size)
    }

    /// Moves a verified temp file into place as `digest`.
    pub fn commit_blob(&self, temp: &Path, digest: &Digest, size: u64) -> io::Result<()> {
        self.commit(temp, Entry::Blob(digest.clone()), size)
    }

    /// A cached manifest: media type and exact bytes.
    pub fn manifest(&self, digest: &Digest) -> Option<(String, Bytes)> {
        let entry = Entry::Manifest(digest.clone());
        self.lookup(&entry)?;
        let raw = Bytes::from(fs::read(self.path_of(&entry)).ok()?);
        let newline = raw.iter().position(|b| *b == b'\n')?;
        let media_type = std::str::from_utf8(&raw[..newline]).ok()?.to_owned();
        Some((media_type, raw.slice(newline + 1..)))
    }

    /// Stores a verified manifest.
    pub fn put_manifest(&self, digest: &Digest, media_type: &str, body: &[u8]) -> io::Result<()> {
        let (temp, mut file) = self.temp_file()?;
        file.write_all(media_type.as_bytes())?;
        file.write_all(b"\n")?;
        file.write_all(body)?;
        file.sync_data()?;
        let size = (media_type.len() + 1 + body.len()) as u64;
        self.commit(&temp, Entry::Manifest(digest.clone()), size)
    }

    /// The digest a tag pointed at when last validated, and when that was.
    pub fn tag(&self, upstream: &str, repo: &RepoName, tag: &Tag) -> Option<(Digest, SystemTime)> {
        let path = self.tag_path(upstream, repo, tag);
        let validated = fs::metadata(&path).ok()?.modified().ok()?;
        let digest = fs::read_to_string(&path).ok()?.trim().parse().ok()?;
        Some((digest, validated))
    }

    /// Records that `tag` points at `digest` as of now.
    pub fn put_tag(
        &self,
        upstream: &str,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
    ) -> io::Result<()> {
        let path = self.tag_path(upstream, repo, tag);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let (temp, mut file) = self.temp_file()?;
        file.write_all(digest.as_str().as_bytes())?;
        drop(file);
        fs::rename(&temp, &path)
    }

    /// Every tag validated at or after `since`, with what it pointed at. Blocking: walks
    /// `tags/` (start-up).
    pub fn tags_validated_since(&self, since: SystemTime) -> Vec<TagRecord> {
        let mut records = Vec::new();
        let Ok(upstreams) = fs::read_dir(self.root.join("tags")) else {
            return records;
        };
        for upstream in upstreams.flatten() {
            let Some(name) = upstream.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            walk_tag_dirs(&upstream.path(), "", &mut |repo, tags_dir| {
                for file in fs::read_dir(tags_dir).into_iter().flatten().flatten() {
                    let validated = file.metadata().and_then(|m| m.modified());
                    let digest = fs::read_to_string(file.path()).ok();
                    if let (Ok(validated), Some(Ok(digest))) =
                        (validated, digest.map(|d| d.trim().parse::<Digest>()))
                        && validated >= since
                    {
                        records.push(TagRecord {
                            upstream: name.clone(),
                            repo: repo.clone(),
                            digest,
                            validated,
                        });
                    }
                }
            });
        }
        records
    }

    /// Bytes currently cached.
    pub fn usage(&self) -> u64 {
        self.lock().bytes
    }

    fn commit(&self, temp: &Path, entry: Entry, size: u64) -> io::Result<()> {
        if size > self.max_bytes {
            let _ = fs::remove_file(temp);
            return Ok(());
        }
        let path = self.path_of(&entry);
        let kind_dir = self.kind_dir(&entry);
        // Room is made before the file appears: the bytes are counted (reserved, not yet in
        // the LRU, so never their own victim) and older entries evicted first, so the disk
        // never holds more than the cap, not even between the rename and the eviction. A
        // rename over an entry already there adds nothing to reserve.
        let reserved = {
            let mut index = self.lock();
            let reserved = if index.lru.contains(&entry) { 0 } else { size };
            index.bytes += reserved;
            reserved
        };
        self.evict();
        if let Err(error) = fileio::rename_into(temp, &path) {
            self.lock().bytes -= reserved;
            self.publish_usage();
            return Err(error);
        }
        {
            let mut index = self.lock();
            if let Some(old) = index.lru.put(entry, size) {
                index.bytes -= old;
            }
            index.bytes += size - reserved;
        }
        self.publish_usage();
        // Durable only now: the index and the cap must not wait for the fsyncs, or the disk
        // would hold entries the index does not count meanwhile (a lost rename is a miss).
        fileio::sync_parents(&path, &kind_dir)
    }

    /// Removes least recently used entries until the cache fits its cap. Readers that already
    /// opened an evicted file keep reading it (the inode lives until they close it).
    fn evict(&self) {
        loop {
            let victim = {
                let mut index = self.lock();
                if index.bytes <= self.max_bytes {
                    break;
                }
                let Some((entry, size)) = index.lru.pop_lru() else {
                    break;
                };
                index.bytes -= size;
                entry
            };
            let _ = fs::remove_file(self.path_of(&victim));
            metrics().edge.evictions.inc();
        }
        self.publish_usage();
    }

    fn publish_usage(&self) {
        metrics()
            .edge
            .disk_usage_bytes
            .set(i64::try_from(self.usage()).unwrap_or(i64::MAX));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        // The index holds no invariant a panicking holder could break half-way.
        self.index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Removes what crashed or finished processes left in `tmp/`: everything but the `<pid>`
/// directories of other live processes (an old edge finishing its fills during an upgrade).
/// This process's own pid can only be a leftover of an earlier process that had it.
fn remove_orphaned_temp_files(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let owner = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok());
        if owner.is_some_and(|pid| pid != me && process_alive(pid)) {
            continue;
        }
        let path = entry.path();
        let _ = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
    }
}

/// Whether a process with this id runs (Linux `/proc`; elsewhere every owner counts as gone,
/// which is right but for the upgrade overlap, and pingora's upgrade is Linux-only).
fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Finds every `<repo>/_tags` directory under `dir` (one upstream's `tags/<upstream>/`);
/// `prefix` is the repository path walked so far.
fn walk_tag_dirs(dir: &Path, prefix: &str, found: &mut dyn FnMut(&RepoName, &Path)) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name == "_tags" {
            if let Ok(repo) = prefix.parse::<RepoName>() {
                found(&repo, &entry.path());
            }
        } else if prefix.is_empty() {
            walk_tag_dirs(&entry.path(), &name, found);
        } else {
            walk_tag_dirs(&entry.path(), &format!("{prefix}/{name}"), found);
        }
    }
}

/// Walks `<kind>/<alg>/<xx>/<hex>` and reports every valid entry.
fn scan(dir: &Path, found: &mut dyn FnMut(Digest, u64, SystemTime)) -> io::Result<()> {
    for alg in fs::read_dir(dir)?.flatten() {
        for prefix in fs::read_dir(alg.path())?.flatten() {
            for file in fs::read_dir(prefix.path())?.flatten() {
                let name = format!(
                    "{}:{}",
                    alg.file_name().to_string_lossy(),
                    file.file_name().to_string_lossy()
                );
                let (Ok(digest), Ok(meta)) = (name.parse::<Digest>(), file.metadata()) else {
                    continue;
                };
                found(
                    digest,
                    meta.len(),
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_blob(cache: &DiskCache, bytes: &[u8]) -> Digest {
        let digest = Digest::sha256_of(bytes);
        let (temp, mut file) = cache.temp_file().unwrap();
        file.write_all(bytes).unwrap();
        cache
            .commit_blob(&temp, &digest, bytes.len() as u64)
            .unwrap();
        digest
    }

    #[test]
    fn evicts_least_recently_used_and_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), 250).unwrap();
        let a = put_blob(&cache, &[1u8; 100]);
        let b = put_blob(&cache, &[2u8; 100]);
        assert!(cache.blob(&a).is_some()); // a is now more recent than b
        let c = put_blob(&cache, &[3u8; 100]);
        assert!(cache.blob(&b).is_none(), "b was least recently used");
        assert!(cache.blob(&a).is_some() && cache.blob(&c).is_some());
        assert_eq!(cache.usage(), 200);
        drop(cache);
        let reopened = DiskCache::open(dir.path(), 250).unwrap();
        assert_eq!(reopened.usage(), 200);
        assert_eq!(reopened.blob(&a).map(|(_, s)| s), Some(100));
    }

    #[test]
    fn committing_a_cached_entry_again_evicts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), 250).unwrap();
        let a = put_blob(&cache, &[1u8; 100]);
        let b = put_blob(&cache, &[2u8; 100]);
        assert_eq!(put_blob(&cache, &[1u8; 100]), a);
        assert!(cache.blob(&b).is_some(), "a second fill of a evicted b");
        assert_eq!(cache.usage(), 200);
    }

    #[test]
    fn too_large_entries_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), 10).unwrap();
        let d = put_blob(&cache, &[1u8; 11]);
        assert!(cache.blob(&d).is_none());
        assert_eq!(cache.usage(), 0);
    }

    #[test]
    fn manifests_and_tags_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), 1 << 20).unwrap();
        let body = br#"{"schemaVersion":2}"#;
        let digest = Digest::sha256_of(body);
        cache
            .put_manifest(&digest, "application/vnd.oci.image.index.v1+json", body)
            .unwrap();
        let (media, bytes) = cache.manifest(&digest).unwrap();
        assert_eq!(media, "application/vnd.oci.image.index.v1+json");
        assert_eq!(&bytes[..], body);
        let repo: RepoName = "library/alpine".parse().unwrap();
        let tag: Tag = "latest".parse().unwrap();
        assert!(cache.tag("hub", &repo, &tag).is_none());
        cache.put_tag("hub", &repo, &tag, &digest).unwrap();
        assert_eq!(cache.tag("hub", &repo, &tag).unwrap().0, digest);
    }

    #[test]
    fn tags_validated_since_a_time_are_listed_with_their_repository() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), 1 << 20).unwrap();
        let digest = Digest::sha256_of(b"manifest");
        let before = SystemTime::now() - std::time::Duration::from_secs(1);
        for (upstream, repo, tag) in [
            ("hub", "library/alpine", "3"),
            ("hub", "library/alpine/sub", "latest"),
            ("ghcr", "team", "1.0"),
        ] {
            let (repo, tag) = (repo.parse().unwrap(), tag.parse().unwrap());
            cache.put_tag(upstream, &repo, &tag, &digest).unwrap();
        }
        let mut listed: Vec<_> = cache
            .tags_validated_since(before)
            .into_iter()
            .map(|r| (r.upstream, r.repo.to_string(), r.digest))
            .collect();
        listed.sort();
        let expected = [
            ("ghcr", "team"),
            ("hub", "library/alpine"),
            ("hub", "library/alpine/sub"),
        ]
        .map(|(u, r)| (u.to_owned(), r.to_owned(), digest.clone()));
        assert_eq!(listed, expected);
        let later = SystemTime::now() + std::time::Duration::from_secs(60);
        assert!(cache.tags_validated_since(later).is_empty());
    }

    #[test]
    fn leftover_temp_files_are_cleared_and_junk_ignored() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("tmp")).unwrap();
        fs::write(dir.path().join("tmp/partial"), b"x").unwrap();
        fs::create_dir_all(dir.path().join("blobs/sha256/ab")).unwrap();
        fs::write(dir.path().join("blobs/sha256/ab/not-a-digest"), b"x").unwrap();
        let cache = DiskCache::open(dir.path(), 100).unwrap();
        assert!(!dir.path().join("tmp/partial").exists());
        assert_eq!(cache.usage(), 0);
    }

    #[test]
    fn entries_committed_by_another_process_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let outgoing = DiskCache::open(dir.path(), 1000).unwrap();
        let incoming = DiskCache::open(dir.path(), 1000).unwrap();
        let d = put_blob(&outgoing, &[7u8; 100]);
        assert_eq!(incoming.blob(&d).map(|(_, s)| s), Some(100));
        assert_eq!(incoming.usage(), 100);
        let absent = Digest::sha256_of(b"absent");
        assert!(incoming.blob(&absent).is_none());
        assert_eq!(incoming.usage(), 100);
    }

    #[test]
    fn temp_files_of_live_processes_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        // pid 1 always runs; a pid above the kernel's limit never does.
        for owner in ["1", "4294967295", "not-a-pid"] {
            fs::create_dir_all(dir.path().join("tmp").join(owner)).unwrap();
            fs::write(dir.path().join("tmp").join(owner).join("fill"), b"x").unwrap();
        }
        let cache = DiskCache::open(dir.path(), 100).unwrap();
        assert!(
            dir.path().join("tmp/1/fill").exists(),
            "a live process's fill"
        );
        assert!(!dir.path().join("tmp/4294967295").exists());
        assert!(!dir.path().join("tmp/not-a-pid").exists());
        let (temp, _) = cache.temp_file().unwrap();
        assert!(temp.starts_with(dir.path().join("tmp").join(std::process::id().to_string())));
    }
}
