//! A short-lived, in-process cache of what every authenticated request reads: the session
//! with its user, and a user's groups. It saves the database round trips of the most common
//! request (a session check) without weakening revocation:
//!
//! - an entry lives at most [`TTL`] (1 s), so a change made on another instance or by the
//!   CLI (a revoked session, a deactivated user) is seen within that second — well inside
//!   the 2 s every instance promises;
//! - every request of this instance that can write (`context::finish` decides) bumps an
//!   epoch after its response is complete, and entries read before the bump are ignored, so
//!   this instance never serves what it has itself just changed.
//!
//! The epoch is read *before* the database read that fills an entry: a write that commits
//! while the read runs bumps the epoch after it, so the entry is born stale rather than
//! outliving the write.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long an entry may be served.
pub const TTL: Duration = Duration::from_secs(1);

/// More entries than this and the map is swept (then emptied if still full): the cache
/// never grows without bound, whatever the number of sessions.
const MAX_ENTRIES: usize = 100_000;

struct Entry<V> {
    at: Instant,
    epoch: u64,
    value: V,
}

/// One map of cached values, valid for one epoch and at most [`TTL`].
pub struct TtlMap<K, V> {
    map: Mutex<HashMap<K, Entry<V>>>,
}

impl<K: Eq + Hash, V: Clone> Default for TtlMap<K, V> {
    fn default() -> Self {
        TtlMap {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, V: Clone> TtlMap<K, V> {
    fn get(&self, key: &K, epoch: u64) -> Option<V> {
        let map = self.map.lock().ok()?;
        let e = map.get(key)?;
        (e.epoch == epoch && e.at.elapsed() < TTL).then(|| e.value.clone())
    }

    fn put(&self, key: K, epoch: u64, value: V) {
        let Ok(mut map) = self.map.lock() else { return };
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, e| e.epoch == epoch && e.at.elapsed() < TTL);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(
            key,
            Entry {
                at: Instant::now(),
                epoch,
                value,
            },
        );
    }

    fn remove(&self, key: &K) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(key);
        }
    }
}

/// The caches of one server instance.
#[derive(Default)]
pub struct Caches {
    epoch: AtomicU64,
    pub sessions: TtlMap<String, (crate::store::SessionRow, crate::store::User)>,
    pub groups: TtlMap<i64, std::sync::Arc<Vec<crate::store::Group>>>,
}

impl Caches {
    /// The current epoch: read it before the database read whose result you will `put`.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Forgets everything read so far (called after every request that may have written).
    pub fn invalidate(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    pub fn get<K: Eq + Hash, V: Clone>(&self, map: &TtlMap<K, V>, key: &K) -> Option<V> {
        map.get(key, self.epoch())
    }

    pub fn put<K: Eq + Hash, V: Clone>(
        &self,
        map: &TtlMap<K, V>,
        key: K,
        read_at_epoch: u64,
        value: V,
    ) {
        map.put(key, read_at_epoch, value);
    }

    pub fn forget<K: Eq + Hash, V: Clone>(&self, map: &TtlMap<K, V>, key: &K) {
        map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_served_within_their_epoch_only() {
        let caches = Caches::default();
        let before = caches.epoch();
        caches.put(&caches.groups, 7, before, std::sync::Arc::new(Vec::new()));
        assert!(caches.get(&caches.groups, &7).is_some());
        caches.invalidate();
        assert!(
            caches.get(&caches.groups, &7).is_none(),
            "a write forgets what was read before it"
        );
    }

    #[test]
    fn an_entry_read_before_a_write_is_born_stale() {
        let caches = Caches::default();
        let read_at = caches.epoch();
        caches.invalidate(); // a write commits while the read runs
        caches.put(&caches.groups, 1, read_at, std::sync::Arc::new(Vec::new()));
        assert!(caches.get(&caches.groups, &1).is_none());
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let map: TtlMap<u8, u8> = TtlMap::default();
        map.put(1, 0, 9);
        assert_eq!(map.get(&1, 0), Some(9));
        if let Ok(mut m) = map.map.lock()
            && let Some(e) = m.get_mut(&1)
        {
            e.at = Instant::now() - TTL;
        }
        assert_eq!(map.get(&1, 0), None);
    }
}
