//! Per-key async locks that clean up after themselves: upload sessions and digests in the
//! registry, manifest fetches in the edge.

use std::hash::Hash;
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::{Mutex, OwnedMutexGuard};

type LockMap<K> = DashMap<K, Arc<Mutex<()>>>;

/// A lock per key, created on first use and dropped with its last holder, so the map holds
/// only keys someone is using right now.
pub struct KeyedLocks<K: Eq + Hash + Clone> {
    locks: Arc<LockMap<K>>,
}

impl<K: Eq + Hash + Clone> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks {
            locks: Arc::default(),
        }
    }
}

/// Owns its share of the map, so a guard can outlive the borrow that took it (a lock handed
/// across a seam as `Box<dyn Send + Sync>`).
pub struct KeyedGuard<K: Eq + Hash + Clone> {
    owner: Arc<LockMap<K>>,
    key: K,
    guard: Option<OwnedMutexGuard<()>>,
}

impl<K: Eq + Hash + Clone> KeyedLocks<K> {
    fn entry(&self, key: &K) -> Arc<Mutex<()>> {
        self.locks.entry(key.clone()).or_default().clone()
    }

    /// Waits for the key's lock.
    pub async fn lock(&self, key: &K) -> KeyedGuard<K> {
        let guard = self.entry(key).lock_owned().await;
        KeyedGuard {
            owner: Arc::clone(&self.locks),
            key: key.clone(),
            guard: Some(guard),
        }
    }

    /// The key's lock if nobody holds it.
    pub fn try_lock(&self, key: &K) -> Option<KeyedGuard<K>> {
        let guard = self.entry(key).try_lock_owned().ok();
        let held = KeyedGuard {
            owner: Arc::clone(&self.locks),
            key: key.clone(),
            guard,
        };
        if held.guard.is_some() {
            Some(held)
        } else {
            None
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }
}

impl<K: Eq + Hash + Clone> Drop for KeyedGuard<K> {
    fn drop(&mut self) {
        drop(self.guard.take());
        // Removal happens under the shard lock that `entry` also takes, so a waiter that
        // cloned the Arc keeps the entry alive.
        self.owner
            .remove_if(&self.key, |_, lock| Arc::strong_count(lock) == 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn locks_exclude_and_clean_up() {
        let locks = KeyedLocks::<u32>::default();
        let first = locks.lock(&1).await;
        assert!(locks.try_lock(&1).is_none());
        assert!(locks.try_lock(&2).is_some());
        drop(first);
        assert!(locks.try_lock(&1).is_some());
        assert!(locks.is_empty());
    }
}
