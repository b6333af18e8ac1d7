//! The per-worker cache of verified tokens, so that a token seen again skips the signature check
//! (whatever its algorithm: a cached ES256 or RS256 token costs what a cached HS256 one does) and
//! the JSON parsing. It holds each token's [`Identity`] (expiry, claim headers, roles, and the
//! claims revocation looks at). It never decides whether a token is valid: only tokens that
//! passed `auth_jwt::decode` go in.
//!
//! Entries are found by the token's signature segment, a MAC or signature and so already a
//! uniform key: hashing that is much cheaper than hashing (or SHA-256-ing) the whole token, which
//! on a hit would cost about as much as verifying an HS256 token. The whole token is stored and compared on every
//! hit, so a token that reuses a cached signature with another payload is a miss (and then
//! fails verification).
//!
//! Bounds: at most `capacity` entries; when full, the oldest entry is evicted (FIFO), which is
//! cheap and keeps the hot recent tokens. Every hit re-checks `exp` with the clock skew, and the
//! whole cache is cleared when the key set version changes, so a removed key stops working at
//! once. Revocation is not the cache's business: `decide` checks every request, hits included,
//! against the current feed.

use std::{
    collections::{HashMap, VecDeque},
    rc::Rc,
};

use crate::identity::Identity;

#[derive(Debug)]
struct Entry {
    token: Box<str>,
    identity: Rc<Identity>,
}

/// A bounded FIFO map from token to the identity it verified as. Capacity 0 disables it.
#[derive(Debug)]
pub struct TokenCache {
    capacity: usize,
    key_version: Option<u64>,
    /// Keyed by signature segment.
    entries: HashMap<Box<str>, Entry>,
    order: VecDeque<Box<str>>,
}

/// The part of a compact JWS the cache is keyed by: its signature.
fn signature(token: &str) -> &str {
    token
        .rsplit_once('.')
        .map_or(token, |(_, signature)| signature)
}

impl TokenCache {
    /// An empty cache holding at most `capacity` tokens.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            key_version: None,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Clears the cache if `version` differs from the key set version of its entries.
    pub(crate) fn set_key_version(&mut self, version: Option<u64>) {
        if self.key_version != version {
            self.entries.clear();
            self.order.clear();
            self.key_version = version;
        }
    }

    /// The identity of `token` if it is cached and `exp` plus `skew_secs` is still after `now`;
    /// an expired entry is dropped.
    pub(crate) fn get(&mut self, token: &str, now: u64, skew_secs: u64) -> Option<Rc<Identity>> {
        let key = signature(token);
        let entry = self.entries.get(key)?;
        if *entry.token != *token {
            return None;
        }
        if u128::from(entry.identity.exp) + u128::from(skew_secs) > u128::from(now) {
            return Some(Rc::clone(&entry.identity));
        }
        self.entries.remove(key);
        self.order.retain(|k| **k != *key);
        None
    }

    /// Remembers a verified token, evicting the oldest entry when full.
    pub(crate) fn insert(&mut self, token: &str, identity: Rc<Identity>) {
        if self.capacity == 0 {
            return;
        }
        let key: Box<str> = signature(token).into();
        let entry = Entry {
            token: token.into(),
            identity,
        };
        if self.entries.insert(key.clone(), entry).is_some() {
            return;
        }
        self.order.push_back(key);
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
    }
}

/// Inspection for tests: the filter itself never asks.
#[cfg(test)]
impl TokenCache {
    /// Number of cached tokens.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocations::StringClaim;

    const NOW: u64 = 1_700_000_000;

    fn identity(exp: u64) -> Identity {
        Identity {
            exp,
            claim_headers: vec![("x-user-id".to_owned(), "u1".to_owned())],
            roles: vec!["user".to_owned()],
            sub: StringClaim::Text("u1".to_owned()),
            sid: StringClaim::Text("s1".to_owned()),
            iat: Some(1),
        }
    }

    #[test]
    fn a_cached_token_is_a_hit_until_it_expires_with_skew() {
        let mut cache = TokenCache::new(4);
        assert_eq!(cache.get("t", NOW, 60), None, "miss before insert");
        cache.insert("t", Rc::new(identity(NOW + 10)));
        assert_eq!(
            cache.get("t", NOW, 60).as_deref(),
            Some(&identity(NOW + 10))
        );
        assert!(cache.get("t", NOW + 69, 60).is_some(), "inside the skew");
        assert_eq!(cache.get("t", NOW + 70, 60), None, "exp + skew reached");
        assert!(cache.is_empty(), "the expired entry was dropped");
    }

    #[test]
    fn the_oldest_entry_is_evicted_when_full() {
        let mut cache = TokenCache::new(2);
        cache.insert("a", Rc::new(identity(NOW + 100)));
        cache.insert("b", Rc::new(identity(NOW + 100)));
        cache.insert("c", Rc::new(identity(NOW + 100)));
        assert_eq!(cache.len(), 2);
        assert!(cache.get("a", NOW, 0).is_none());
        assert!(cache.get("b", NOW, 0).is_some());
        assert!(cache.get("c", NOW, 0).is_some());
    }

    #[test]
    fn inserting_a_token_twice_keeps_one_entry() {
        let mut cache = TokenCache::new(2);
        cache.insert("a", Rc::new(identity(NOW + 100)));
        cache.insert("a", Rc::new(identity(NOW + 200)));
        cache.insert("b", Rc::new(identity(NOW + 100)));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("a", NOW, 0).map(|i| i.exp), Some(NOW + 200));
    }

    #[test]
    fn a_new_key_version_clears_the_cache() {
        let mut cache = TokenCache::new(2);
        cache.set_key_version(Some(1));
        cache.insert("a", Rc::new(identity(NOW + 100)));
        cache.set_key_version(Some(1));
        assert_eq!(cache.len(), 1, "same version keeps entries");
        cache.set_key_version(Some(2));
        assert!(cache.is_empty(), "new version clears");
    }

    #[test]
    fn capacity_zero_disables_the_cache() {
        let mut cache = TokenCache::new(0);
        cache.insert("a", Rc::new(identity(NOW + 100)));
        assert!(cache.get("a", NOW, 0).is_none());
    }
}
