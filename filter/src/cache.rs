//! The per-worker cache of verified tokens, so that a token seen again skips the HMAC and the
//! JSON parsing. It holds what the request path needs (expiry, claim headers, roles, and the
//! claims revocation looks at), keyed by the token's SHA-256 so that tokens themselves are not
//! kept. It never decides whether a token is valid: only tokens that passed `auth_jwt::decode`
//! go in.
//!
//! Bounds: at most `capacity` entries; when full, the oldest entry is evicted (FIFO), which is
//! cheap and keeps the hot recent tokens. Every hit re-checks `exp` with the clock skew, and the
//! whole cache is cleared when the key set version changes, so a removed key stops working at
//! once. Revocation is not the cache's business: `decide` checks every request, hits included,
//! against the current feed.

use std::collections::{HashMap, VecDeque};

use sha2::{Digest, Sha256};

use crate::revocations::TokenIds;

/// What the request path needs from a verified token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The token's `exp`, seconds since the Unix epoch.
    pub exp: u64,
    /// Headers to set upstream, from `claim_to_headers`.
    pub claim_headers: Vec<(String, String)>,
    /// The roles claim.
    pub roles: Vec<String>,
    /// `sub`, if it is a string.
    pub sub: Option<String>,
    /// `sid`, if it is a string.
    pub sid: Option<String>,
    /// `iat` rounded down to whole seconds, if it is a number.
    pub iat: Option<i64>,
}

impl Identity {
    /// The claims the revocation feed is matched against.
    pub fn token_ids(&self) -> TokenIds<'_> {
        TokenIds {
            sub: self.sub.as_deref(),
            sid: self.sid.as_deref(),
            iat: self.iat,
        }
    }
}

type TokenHash = [u8; 32];

/// A bounded FIFO map from token hash to [`Identity`]. Capacity 0 disables it.
#[derive(Debug)]
pub struct TokenCache {
    capacity: usize,
    key_version: Option<u64>,
    entries: HashMap<TokenHash, Identity>,
    order: VecDeque<TokenHash>,
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
    pub fn set_key_version(&mut self, version: Option<u64>) {
        if self.key_version != version {
            self.entries.clear();
            self.order.clear();
            self.key_version = version;
        }
    }

    /// The identity of `token` if it is cached and `exp` plus `skew_secs` is still after `now`;
    /// an expired entry is dropped.
    pub fn get(&mut self, token: &str, now: u64, skew_secs: u64) -> Option<Identity> {
        let hash = hash(token);
        let identity = self.entries.get(&hash)?;
        if u128::from(identity.exp) + u128::from(skew_secs) > u128::from(now) {
            return Some(identity.clone());
        }
        self.entries.remove(&hash);
        self.order.retain(|h| h != &hash);
        None
    }

    /// Remembers a verified token, evicting the oldest entry when full.
    pub fn insert(&mut self, token: &str, identity: Identity) {
        if self.capacity == 0 {
            return;
        }
        let hash = hash(token);
        if self.entries.insert(hash, identity).is_some() {
            return;
        }
        self.order.push_back(hash);
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn identity(exp: u64) -> Identity {
        Identity {
            exp,
            claim_headers: vec![("x-user-id".to_owned(), "u1".to_owned())],
            roles: vec!["user".to_owned()],
            sub: Some("u1".to_owned()),
            sid: Some("s1".to_owned()),
            iat: Some(1),
        }
    }

    #[test]
    fn a_cached_token_is_a_hit_until_it_expires_with_skew() {
        let mut cache = TokenCache::new(4);
        assert_eq!(cache.get("t", NOW, 60), None, "miss before insert");
        cache.insert("t", identity(NOW + 10));
        assert_eq!(cache.get("t", NOW, 60), Some(identity(NOW + 10)));
        assert!(cache.get("t", NOW + 69, 60).is_some(), "inside the skew");
        assert_eq!(cache.get("t", NOW + 70, 60), None, "exp + skew reached");
        assert!(cache.is_empty(), "the expired entry was dropped");
    }

    #[test]
    fn the_oldest_entry_is_evicted_when_full() {
        let mut cache = TokenCache::new(2);
        cache.insert("a", identity(NOW + 100));
        cache.insert("b", identity(NOW + 100));
        cache.insert("c", identity(NOW + 100));
        assert_eq!(cache.len(), 2);
        assert!(cache.get("a", NOW, 0).is_none());
        assert!(cache.get("b", NOW, 0).is_some());
        assert!(cache.get("c", NOW, 0).is_some());
    }

    #[test]
    fn inserting_a_token_twice_keeps_one_entry() {
        let mut cache = TokenCache::new(2);
        cache.insert("a", identity(NOW + 100));
        cache.insert("a", identity(NOW + 200));
        cache.insert("b", identity(NOW + 100));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("a", NOW, 0).map(|i| i.exp), Some(NOW + 200));
    }

    #[test]
    fn a_new_key_version_clears_the_cache() {
        let mut cache = TokenCache::new(2);
        cache.set_key_version(Some(1));
        cache.insert("a", identity(NOW + 100));
        cache.set_key_version(Some(1));
        assert_eq!(cache.len(), 1, "same version keeps entries");
        cache.set_key_version(Some(2));
        assert!(cache.is_empty(), "new version clears");
    }

    #[test]
    fn capacity_zero_disables_the_cache() {
        let mut cache = TokenCache::new(0);
        cache.insert("a", identity(NOW + 100));
        assert!(cache.get("a", NOW, 0).is_none());
    }
}
