//! A short-lived, in-process cache of what every authenticated request reads: the session
//! with its user, and what is derived from them (the user's groups, the current-user
//! body). It saves the database round trips of the most common
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
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
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
    map: Mutex<HashMap<K, Entry<V>, Seeded>>,
}

impl<K: Eq + Hash, V: Clone> Default for TtlMap<K, V> {
    fn default() -> Self {
        TtlMap {
            map: Mutex::new(HashMap::with_hasher(Seeded(rand::random()))),
        }
    }
}

/// The maps' hasher: a multiply-and-rotate mix of the key's bytes with a per-process seed.
/// SipHash over a session's 32-byte digest was about 2 % of a session check. A weak hasher
/// is safe here because the keys are SHA-256 digests, already uniform, and only those of
/// sessions this server issued are ever stored: nobody can fill the map with keys chosen to
/// collide.
#[derive(Clone, Copy)]
struct Seeded(u64);

impl BuildHasher for Seeded {
    type Hasher = Mix;

    fn build_hasher(&self) -> Mix {
        Mix(self.0)
    }
}

struct Mix(u64);

impl Hasher for Mix {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0 ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(26);
        }
    }

    fn finish(&self) -> u64 {
        self.0
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

/// A live session as this instance caches it: the row, its user and the user's groups (read
/// together), plus the answer derived from them, computed once per entry. Everything here
/// lives as long as the entry (at most [`TTL`], and never past a write of this instance).
#[derive(Debug)]
pub struct LiveSession {
    pub session: crate::store::SessionRow,
    pub user: crate::store::User,
    pub groups: Vec<crate::store::Group>,
    /// The `GET /api/user/current` body, serialised by the first request that asks.
    pub current_body: OnceLock<bytes::Bytes>,
}

impl LiveSession {
    pub fn new(
        session: crate::store::SessionRow,
        user: crate::store::User,
        groups: Vec<crate::store::Group>,
    ) -> LiveSession {
        LiveSession {
            session,
            user,
            groups,
            current_body: OnceLock::new(),
        }
    }
}

/// The caches of one server instance.
#[derive(Default)]
pub struct Caches {
    epoch: AtomicU64,
    /// Keyed by the SHA-256 of the session token (`session::token_digest`).
    pub sessions: TtlMap<[u8; 32], Arc<LiveSession>>,
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

    fn live() -> Arc<LiveSession> {
        let session = crate::store::SessionRow {
            id_hash: vec![1; 32],
            user_id: 1,
            created_at: 0,
            expires_at: 1,
            last_seen_at: 0,
            auth_method: "jwt".into(),
        };
        let user = crate::store::User {
            id: 1,
            email: "a@example.com".into(),
            first_name: None,
            last_name: None,
            sso_source: None,
            sso_subject: None,
            is_active: true,
            is_superuser: false,
            login_attributes: Default::default(),
            has_password: false,
            created_at: 0,
            updated_at: 0,
            last_login: None,
        };
        Arc::new(LiveSession::new(session, user, Vec::new()))
    }

    #[test]
    fn entries_are_served_within_their_epoch_only() {
        let caches = Caches::default();
        let before = caches.epoch();
        caches.put(&caches.sessions, [1; 32], before, live());
        assert!(caches.get(&caches.sessions, &[1; 32]).is_some());
        caches.invalidate();
        assert!(
            caches.get(&caches.sessions, &[1; 32]).is_none(),
            "a write forgets what was read before it"
        );
    }

    #[test]
    fn an_entry_read_before_a_write_is_born_stale() {
        let caches = Caches::default();
        let read_at = caches.epoch();
        caches.invalidate(); // a write commits while the read runs
        caches.put(&caches.sessions, [1; 32], read_at, live());
        assert!(caches.get(&caches.sessions, &[1; 32]).is_none());
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
