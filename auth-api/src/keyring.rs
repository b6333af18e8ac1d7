//! The key ring: which key signs now, which keys verify, and how a rotation moves between them.
//!
//! The ring lives in the database so that every replica agrees on it; each replica keeps a
//! snapshot in memory and re-reads it every `AUTH_KEY_REFRESH_SECS` (and at most once a second
//! when a token names a `kid` it does not know). The signer is a function of the snapshot and
//! the time, not of process state: a rotated-in key is published `AUTH_KEY_PUBLISH_DELAY_SECS`
//! before it activates, so all replicas (and gateways) know it before the moment it signs.
//!
//! A key's life: `pending` (published, not signing) → `active` (signing) → `retired` (verifying
//! the tokens it signed, until `retires_at` + access TTL + clock skew) → `expired`. `revoked`
//! ends it at once.

use std::{
    fmt,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use auth_jwt::{Algorithm, Key, KeySet};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use rand::{rngs::OsRng, RngCore};
use secrecy::{ExposeSecret, SecretSlice};

use crate::{
    clock::secs,
    config::Config,
    store::{Store, StoredKey},
};

/// Bytes of a new HMAC secret: 256 bits, the SHA-256 block strength (RFC 7518 §3.2).
const SECRET_BYTES: usize = 32;
/// Shortest interval between two reloads caused by an unknown `kid`.
const UNKNOWN_KID_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Where a key is in its life at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published, signs later.
    Pending,
    /// The signer.
    Active,
    /// No longer signs; verifies until its last token has expired.
    Retired,
    /// Gone from the published set.
    Expired,
    /// Withdrawn: neither published nor accepted.
    Revoked,
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Retired => "retired",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        })
    }
}

/// How long keys live around their signing window.
#[derive(Debug, Clone, Copy)]
pub struct RingPolicy {
    /// Access-token lifetime plus clock skew: how long a retired key keeps verifying.
    pub retention_secs: i64,
    /// Delay between a rotation and the new key's first signature.
    pub publish_delay_secs: i64,
}

impl RingPolicy {
    /// The policy that follows from the service configuration.
    pub fn from_config(config: &Config) -> Self {
        Self {
            retention_secs: secs(config.access_token_ttl).saturating_add(secs(config.clock_skew)),
            publish_delay_secs: secs(config.key_publish_delay),
        }
    }
}

/// One key with its schedule.
#[derive(Clone)]
pub struct RingKey {
    /// The key as stored.
    pub stored: StoredKey,
    /// The same key, ready to sign and verify.
    pub key: Key,
}

impl fmt::Debug for RingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingKey")
            .field("kid", &self.stored.kid)
            .finish_non_exhaustive()
    }
}

impl RingKey {
    /// The key's state at `now`.
    pub fn state(&self, now: i64, policy: &RingPolicy) -> KeyState {
        let k = &self.stored;
        if k.revoked_at.is_some() {
            KeyState::Revoked
        } else if now < k.activates_at {
            KeyState::Pending
        } else {
            match k.retires_at {
                None => KeyState::Active,
                Some(retires) if now < retires => KeyState::Active,
                Some(retires) if now < retires.saturating_add(policy.retention_secs) => {
                    KeyState::Retired
                }
                Some(_) => KeyState::Expired,
            }
        }
    }
}

/// The ring as read from the database at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    keys: Vec<RingKey>,
    verification: KeySet,
}

impl Snapshot {
    fn new(stored: Vec<StoredKey>) -> anyhow::Result<Self> {
        let mut keys = Vec::with_capacity(stored.len());
        for stored in stored {
            let key = match stored.algorithm.as_str() {
                "HS256" => Key::hs256(stored.kid.clone(), stored.secret.expose_secret())?,
                other => anyhow::bail!("key {} has unsupported algorithm {other}", stored.kid),
            };
            keys.push(RingKey { stored, key });
        }
        let verification = keys
            .iter()
            .filter(|k| k.stored.revoked_at.is_none())
            .map(|k| k.key.clone())
            .collect();
        Ok(Self { keys, verification })
    }

    /// Every key, revoked and expired ones included (for `keys list`).
    pub fn keys(&self) -> &[RingKey] {
        &self.keys
    }

    /// The key that signs at `now`: the most recently activated key still active.
    pub fn signer(&self, now: i64, policy: &RingPolicy) -> Option<&RingKey> {
        self.keys
            .iter()
            .filter(|k| k.state(now, policy) == KeyState::Active)
            .max_by(|a, b| {
                (a.stored.activates_at, &a.stored.kid).cmp(&(b.stored.activates_at, &b.stored.kid))
            })
    }

    /// Keys the gateway must know at `now`: pending, active and retired ones.
    pub fn published(&self, now: i64, policy: &RingPolicy) -> impl Iterator<Item = &RingKey> {
        let policy = *policy;
        self.keys.iter().filter(move |k| {
            matches!(
                k.state(now, &policy),
                KeyState::Pending | KeyState::Active | KeyState::Retired
            )
        })
    }

    /// Non-revoked keys for signature checks; callers confirm with [`Snapshot::verifies`].
    pub fn verification_keys(&self) -> &KeySet {
        &self.verification
    }

    /// Whether a token signed by `kid` may be accepted at `now`.
    pub fn verifies(&self, kid: &str, now: i64, policy: &RingPolicy) -> bool {
        self.keys.iter().any(|k| {
            k.stored.kid == kid
                && matches!(
                    k.state(now, policy),
                    KeyState::Pending | KeyState::Active | KeyState::Retired
                )
        })
    }

    /// Whether `kid` is in the snapshot at all.
    pub fn knows(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.stored.kid == kid)
    }
}

/// The shared, periodically refreshed view of the ring.
pub struct KeyRing {
    store: Store,
    policy: RingPolicy,
    snapshot: RwLock<Arc<Snapshot>>,
    last_unknown_kid_reload: Mutex<Option<Instant>>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Loads the ring, creating its first key when the database has none.
    pub async fn open(store: Store, policy: RingPolicy, now: i64) -> anyhow::Result<Self> {
        if store.keys().await?.is_empty() && store.bootstrap_key(&new_key(now, now)).await? {
            tracing::info!(event = "key_created", "created the first signing key");
        }
        let ring = Self {
            store,
            policy,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            last_unknown_kid_reload: Mutex::new(None),
        };
        ring.reload().await?;
        Ok(ring)
    }

    /// The ring's timing policy.
    pub fn policy(&self) -> &RingPolicy {
        &self.policy
    }

    /// The key that signs at `now`, from the current snapshot.
    pub fn signer(&self, now: i64) -> Option<RingKey> {
        self.snapshot().signer(now, &self.policy).cloned()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Re-reads the ring from the database.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let fresh = Arc::new(Snapshot::new(self.store.keys().await?)?);
        match self.snapshot.write() {
            Ok(mut guard) => *guard = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }

    /// Reloads because a token named an unknown `kid`, at most once per second so that a
    /// flood of made-up kids costs one query a second. `true` when it reloaded.
    pub async fn reload_for_unknown_kid(&self) -> anyhow::Result<bool> {
        {
            let Ok(mut last) = self.last_unknown_kid_reload.lock() else {
                return Ok(false);
            };
            if last.is_some_and(|at| at.elapsed() < UNKNOWN_KID_RELOAD_INTERVAL) {
                return Ok(false);
            }
            *last = Some(Instant::now());
        }
        self.reload().await?;
        Ok(true)
    }

    /// Adds a new key that signs from `now + publish delay` (at once when nothing signs now)
    /// and retires the current signer then. Returns the new key's kid and activation time.
    pub async fn rotate(&self, now: i64) -> anyhow::Result<(String, i64)> {
        let key = self.next_key(now).await?;
        self.store.rotate_in_key(&key).await?;
        self.rotated(key).await
    }

    /// Rotates if no key was added during the last `period`; several replicas may call this at
    /// once, and one rotates. Returns the new kid when this call rotated.
    pub async fn rotate_if_due(
        &self,
        now: i64,
        period: Duration,
    ) -> anyhow::Result<Option<String>> {
        let cutoff = now.saturating_sub(i64::try_from(period.as_secs()).unwrap_or(i64::MAX));
        let key = self.next_key(now).await?;
        if !self.store.rotate_in_key_if_due(&key, cutoff).await? {
            return Ok(None);
        }
        Ok(Some(self.rotated(key).await?.0))
    }

    /// Revokes a key (compromise): it leaves the published set and `/validate` refuses its
    /// tokens at once. If it was the signer, a new key signs immediately: there is no time to
    /// pre-publish it, so gateways refuse the new tokens until their next key poll. Returns the
    /// replacement's kid, if one was needed.
    pub async fn revoke(&self, kid: &str, now: i64) -> anyhow::Result<Option<String>> {
        if !self.store.revoke_key(kid, now).await? {
            anyhow::bail!("no key {kid} that is not already revoked");
        }
        tracing::warn!(event = "key_revoked", kid, "signing key revoked");
        self.reload().await?;
        if self.signer(now).is_some() {
            return Ok(None);
        }
        Ok(Some(self.rotate(now).await?.0))
    }

    /// A new key, activating after the publish delay, or at once when nothing signs now.
    async fn next_key(&self, now: i64) -> anyhow::Result<StoredKey> {
        self.reload().await?;
        let activates_at = if self.signer(now).is_some() {
            now.saturating_add(self.policy.publish_delay_secs)
        } else {
            now
        };
        Ok(new_key(now, activates_at))
    }

    async fn rotated(&self, key: StoredKey) -> anyhow::Result<(String, i64)> {
        self.reload().await?;
        tracing::info!(event = "key_rotated", kid = %key.kid, activates_at = key.activates_at, "rotated in a new signing key");
        Ok((key.kid, key.activates_at))
    }
}

/// A fresh HS256 key with a random 256-bit secret and a random kid; the kid says nothing about
/// the secret (a thumbprint of an HMAC key would be a hash of it).
fn new_key(now: i64, activates_at: i64) -> StoredKey {
    let mut secret = vec![0_u8; SECRET_BYTES];
    OsRng.fill_bytes(&mut secret);
    let mut kid = [0_u8; 12];
    OsRng.fill_bytes(&mut kid);
    StoredKey {
        kid: URL_SAFE_NO_PAD.encode(kid),
        algorithm: Algorithm::HS256.as_str().to_owned(),
        secret: SecretSlice::from(secret),
        created_at: now,
        activates_at,
        retires_at: None,
        revoked_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RingPolicy = RingPolicy {
        retention_secs: 960,
        publish_delay_secs: 300,
    };

    fn key(kid: &str, activates_at: i64, retires_at: Option<i64>) -> StoredKey {
        StoredKey {
            kid: kid.to_owned(),
            retires_at,
            ..new_key(0, activates_at)
        }
    }

    #[test]
    fn states_follow_the_schedule() {
        let snapshot = Snapshot::new(vec![key("a", 100, Some(400))]).unwrap();
        let k = &snapshot.keys()[0];
        let cases = [
            (99, KeyState::Pending, "before activation"),
            (100, KeyState::Active, "at activation"),
            (399, KeyState::Active, "just before retirement"),
            (400, KeyState::Retired, "at retirement"),
            (400 + 959, KeyState::Retired, "last second of retention"),
            (400 + 960, KeyState::Expired, "retention over"),
        ];
        for (now, state, reason) in cases {
            assert_eq!(k.state(now, &POLICY), state, "{reason}");
        }
    }

    #[test]
    fn signer_switches_at_the_new_keys_activation() {
        let snapshot =
            Snapshot::new(vec![key("old", 0, Some(300)), key("new", 300, None)]).unwrap();
        assert_eq!(snapshot.signer(299, &POLICY).unwrap().stored.kid, "old");
        assert_eq!(snapshot.signer(300, &POLICY).unwrap().stored.kid, "new");
        let published: Vec<_> = snapshot
            .published(299, &POLICY)
            .map(|k| k.stored.kid.as_str())
            .collect();
        assert_eq!(
            published,
            ["old", "new"],
            "the next key is published before it signs"
        );
    }

    #[test]
    fn revoked_key_neither_signs_nor_verifies() {
        let mut revoked = key("gone", 0, None);
        revoked.revoked_at = Some(10);
        let snapshot = Snapshot::new(vec![revoked]).unwrap();
        assert!(snapshot.signer(20, &POLICY).is_none());
        assert!(!snapshot.verifies("gone", 20, &POLICY));
        assert!(snapshot.verification_keys().is_empty());
    }
}
