//! The per-worker cache of token verdicts under the current key set: the tokens that verified,
//! so that a token seen again skips the signature check (whatever its algorithm: a cached ES256
//! or RS256 token costs what a cached HS256 one does) and the JSON parsing; and, in a smaller
//! table, the tokens that were refused for a reason only a new key set could change (a bad
//! signature, an unknown `kid`, a claim that can never be right), so that a client retrying a
//! bad token, or a flood of one, costs a lookup instead of a verification. Only verdicts of
//! `auth_jwt::decode` go in; the cache never decides itself.
//!
//! Entries are found by the token's signature segment, a MAC or signature and so already a
//! uniform key: hashing that is much cheaper than hashing (or SHA-256-ing) the whole token,
//! which on a hit would cost about as much as verifying an HS256 token. The whole token is
//! stored and compared on every hit, so a token that reuses a cached signature with another
//! payload is a miss (and then verified afresh).
//!
//! Bounds: at most `capacity` verified and [`REFUSED_ENTRIES`] refused tokens (none of either
//! when `capacity` is 0); when full, the oldest entry is evicted (FIFO), which is cheap and
//! keeps the hot recent tokens. Every hit re-checks `exp` with the clock skew. The whole cache
//! is cleared when the key set version changes, so a removed key stops working at once and a
//! token naming a key that has just arrived is verified again. A refusal is remembered for
//! [`REFUSAL_SECS`] at most, and only one reached past the size and format checks, at the key
//! lookup or after it (`decide` chooses): never a malformed or oversized token, never one the clock could undo
//! (`nbf` or `iat` in the future, and `exp`, should the host's clock step back). Revocation is not the cache's business: `decide` checks every request, hits
//! included, against the current feed.

use std::{
    collections::{HashMap, VecDeque},
    rc::Rc,
};

use crate::identity::Identity;
use crate::response::DenyReason;

/// Refused tokens remembered at most (when the cache is on): a few per misbehaving client is
/// enough to answer its retries, and a flood of distinct bad tokens only churns this table,
/// never the verified one.
pub(crate) const REFUSED_ENTRIES: usize = 256;

/// Seconds a refusal is remembered at most. The key set makes a refusal final, but not every
/// refusal is the filter's own: Envoy's `verify_signature` answers "does not verify" for any
/// failure of its check, so a valid token it once failed to check would otherwise stay refused
/// until the key set changed. A minute still answers a retrying client from the table.
pub(crate) const REFUSAL_SECS: u64 = 60;

/// A bounded FIFO map from token to a value, found by the token's signature segment.
#[derive(Debug)]
struct Fifo<V> {
    capacity: usize,
    entries: HashMap<Box<str>, (Box<str>, V)>,
    order: VecDeque<Box<str>>,
}

/// The part of a compact JWS the cache is keyed by: its signature.
fn signature(token: &str) -> &str {
    token
        .rsplit_once('.')
        .map_or(token, |(_, signature)| signature)
}

impl<V> Fifo<V> {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }

    fn get(&self, token: &str) -> Option<&V> {
        let (stored, value) = self.entries.get(signature(token))?;
        (**stored == *token).then_some(value)
    }

    fn remove(&mut self, token: &str) {
        let key = signature(token);
        self.entries.remove(key);
        self.order.retain(|k| **k != *key);
    }

    fn insert(&mut self, token: &str, value: V) {
        if self.capacity == 0 {
            return;
        }
        let key: Box<str> = signature(token).into();
        if self
            .entries
            .insert(key.clone(), (token.into(), value))
            .is_some()
        {
            return;
        }
        self.order.push_back(key);
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The verdicts on tokens under one key set version. Capacity 0 disables it.
#[derive(Debug)]
pub struct TokenCache {
    key_version: Option<u64>,
    verified: Fifo<Rc<Identity>>,
    /// Each reason with the second it was remembered.
    refused: Fifo<(DenyReason, u64)>,
}

impl TokenCache {
    /// An empty cache holding at most `capacity` verified tokens (and, unless `capacity` is 0,
    /// `REFUSED_ENTRIES` refused ones).
    pub fn new(capacity: usize) -> Self {
        Self {
            key_version: None,
            verified: Fifo::new(capacity),
            refused: Fifo::new(if capacity == 0 { 0 } else { REFUSED_ENTRIES }),
        }
    }

    /// Clears the cache if `version` differs from the key set version of its entries.
    pub(crate) fn set_key_version(&mut self, version: Option<u64>) {
        if self.key_version != version {
            self.verified.clear();
            self.refused.clear();
            self.key_version = version;
        }
    }

    /// The identity of `token` if it is cached and `exp` plus `skew_secs` is still after `now`;
    /// an expired entry is dropped.
    pub(crate) fn get(&mut self, token: &str, now: u64, skew_secs: u64) -> Option<Rc<Identity>> {
        let identity = self.verified.get(token)?;
        if u128::from(identity.exp) + u128::from(skew_secs) > u128::from(now) {
            return Some(Rc::clone(identity));
        }
        self.verified.remove(token);
        None
    }

    /// Remembers a verified token, evicting the oldest entry when full.
    pub(crate) fn insert(&mut self, token: &str, identity: Rc<Identity>) {
        self.verified.insert(token, identity);
    }

    /// Why `token` was refused, if it was under this key set less than [`REFUSAL_SECS`] before
    /// `now` (a clock that stepped back forgets).
    pub(crate) fn refusal(&self, token: &str, now: u64) -> Option<&DenyReason> {
        let (reason, at) = self.refused.get(token)?;
        (*at <= now && now - at < REFUSAL_SECS).then_some(reason)
    }

    /// Remembers at `now` that `token` is refused for `reason`. The caller passes only
    /// refusals no clock could undo.
    pub(crate) fn refuse(&mut self, token: &str, reason: DenyReason, now: u64) {
        self.refused.insert(token, (reason, now));
    }
}

/// Inspection for tests: the filter itself never asks.
#[cfg(test)]
impl TokenCache {
    /// Number of verified tokens cached.
    pub(crate) fn len(&self) -> usize {
        self.verified.len()
    }

    /// Whether no verified token is cached.
    pub(crate) fn is_empty(&self) -> bool {
        self.verified.len() == 0
    }

    /// Number of refused tokens remembered.
    pub(crate) fn refused_len(&self) -> usize {
        self.refused.len()
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
            acr: Some("aal1".to_owned()),
            email_verified: true,
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

    #[test]
    fn a_refusal_is_remembered_for_that_exact_token_until_the_key_set_changes() {
        let mut cache = TokenCache::new(4);
        cache.set_key_version(Some(1));
        let reason = DenyReason::InvalidToken("invalid signature".to_owned());
        cache.refuse("h.p.sig", reason.clone(), NOW);
        assert_eq!(cache.refusal("h.p.sig", NOW), Some(&reason));
        assert_eq!(
            cache.refusal("h.p.sig", NOW + REFUSAL_SECS - 1),
            Some(&reason)
        );
        assert_eq!(
            cache.refusal("h.p.sig", NOW + REFUSAL_SECS),
            None,
            "for a minute only"
        );
        assert_eq!(
            cache.refusal("h.p.sig", NOW - 1),
            None,
            "a clock that stepped back"
        );
        assert_eq!(
            cache.refusal("h.other.sig", NOW),
            None,
            "same signature, other payload"
        );
        assert!(
            cache.get("h.p.sig", NOW, 0).is_none(),
            "refused is not verified"
        );
        cache.set_key_version(Some(1));
        assert_eq!(cache.refused_len(), 1, "same version keeps refusals");
        cache.set_key_version(Some(2));
        assert_eq!(
            cache.refusal("h.p.sig", NOW),
            None,
            "a new key set forgets refusals"
        );
    }

    #[test]
    fn refusals_are_bounded_apart_from_verified_tokens() {
        let mut cache = TokenCache::new(2);
        cache.insert("a.b.good", Rc::new(identity(NOW + 100)));
        for n in 0..REFUSED_ENTRIES + 10 {
            cache.refuse(&format!("h.p.{n}"), DenyReason::UnknownKey, NOW);
        }
        assert_eq!(cache.refused_len(), REFUSED_ENTRIES);
        assert_eq!(
            cache.refusal("h.p.0", NOW),
            None,
            "the oldest refusal went first"
        );
        assert!(
            cache.get("a.b.good", NOW, 0).is_some(),
            "a flood of refusals keeps it"
        );
    }

    #[test]
    fn capacity_zero_remembers_no_refusal() {
        let mut cache = TokenCache::new(0);
        cache.refuse("h.p.s", DenyReason::UnknownKey, NOW);
        assert_eq!(cache.refusal("h.p.s", NOW), None);
    }
}
