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
//!
//! Each key has its own algorithm (`AUTH_SIGNING_ALG` for the keys the ring makes itself; any
//! for `keys rotate --alg`), so a ring moves from HS256 to ES256 by an ordinary rotation. Private
//! material is stored sealed under the key-encryption keys ([`crate::kek`]); opening the ring
//! first re-seals rows that are in the clear or under an older KEK. That start-up re-seal is the
//! only place a row in the clear is accepted: a snapshot loads only rows that open under a
//! configured KEK, so a key written into the database in the clear later (by anyone who can
//! write to it) is neither published nor trusted until a restart seals it.

use std::{
    collections::BTreeSet,
    fmt,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use auth_jwt::{Algorithm, Key, KeySet};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use rand::{rngs::OsRng, RngCore};
use secrecy::ExposeSecret as _;

use crate::{
    clock::secs,
    config::Config,
    kek::KeyEncryptionKeys,
    store::{KeyMaterial, Store, StoredKey},
};
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

/// How long keys live around their signing window, and what kind of key the ring makes.
#[derive(Debug, Clone, Copy)]
pub struct RingPolicy {
    /// Access-token lifetime plus clock skew: how long a retired key keeps verifying.
    pub retention_secs: i64,
    /// Delay between a rotation and the new key's first signature.
    pub publish_delay_secs: i64,
    /// The algorithm of the keys the ring creates itself (`AUTH_SIGNING_ALG`): the first key
    /// and scheduled rotations.
    pub signing_alg: Algorithm,
    /// The clock skew tolerated between replicas (`AUTH_CLOCK_SKEW_SECS`).
    pub clock_skew_secs: i64,
}

impl RingPolicy {
    /// The policy that follows from the service configuration.
    pub fn from_config(config: &Config) -> Self {
        Self {
            retention_secs: secs(config.access_token_ttl).saturating_add(secs(config.clock_skew)),
            publish_delay_secs: secs(config.key_publish_delay),
            signing_alg: config.signing_alg,
            clock_skew_secs: secs(config.clock_skew),
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
            .field("alg", &self.stored.algorithm)
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
    /// Kids of rows that were not loaded (in the clear, or not opening under the configured
    /// KEKs): carried from snapshot to snapshot so that each is logged once.
    ignored: BTreeSet<String>,
    /// When it was read from the database (`None` for the empty ring before the first read):
    /// the key-ring age gauge, which shows a replica that has stopped refreshing.
    loaded_at: Option<Instant>,
}

/// A stored row that a snapshot did not load, and why (the message names ids, never material).
#[derive(Debug)]
struct Rejected {
    kid: String,
    /// In the clear: only the start-up re-seal accepts such a row.
    plaintext: bool,
    /// A key this replica opened earlier under the same kid and algorithm is kept instead.
    kept_earlier: bool,
    error: anyhow::Error,
}

impl Snapshot {
    /// Opens every stored key that is sealed under a configured KEK. A key whose sealed
    /// material is unchanged since `previous` is taken from it rather than decrypted and parsed
    /// again.
    ///
    /// A row that does not open — in the clear (`kek_id` NULL), under a KEK that is not
    /// configured, failing authentication, or not a key of its algorithm — is not loaded: it
    /// neither signs nor verifies nor is published, and it is returned among the rejected rows.
    /// If `previous` holds a key of the same kid and algorithm (opened, so authenticated,
    /// then), that key stays with the row's new schedule: a row whose ciphertext changed under
    /// a KEK this replica lacks does not take a working key away, and the row's new material is
    /// never used.
    fn new(
        stored: Vec<StoredKey>,
        keks: &KeyEncryptionKeys,
        previous: &Snapshot,
    ) -> (Self, Vec<Rejected>) {
        let mut keys = Vec::with_capacity(stored.len());
        let mut rejected = Vec::new();
        for stored in stored {
            let earlier = previous
                .keys
                .iter()
                .find(|k| k.stored.kid == stored.kid && k.stored.algorithm == stored.algorithm);
            if let Some(known) =
                earlier.filter(|k| same_material(&k.stored.material, &stored.material))
            {
                keys.push(RingKey {
                    stored,
                    key: known.key.clone(),
                });
                continue;
            }
            match open_key(&stored, keks) {
                Ok(key) => keys.push(RingKey { stored, key }),
                Err(error) => {
                    rejected.push(Rejected {
                        kid: stored.kid.clone(),
                        plaintext: stored.material.kek_id().is_none(),
                        kept_earlier: earlier.is_some(),
                        error,
                    });
                    if let Some(known) = earlier {
                        keys.push(RingKey {
                            stored: StoredKey {
                                material: known.stored.material.clone(),
                                ..stored
                            },
                            key: known.key.clone(),
                        });
                    }
                }
            }
        }
        let verification = keys
            .iter()
            .filter(|k| k.stored.revoked_at.is_none())
            .map(|k| k.key.clone())
            .collect();
        let ignored = rejected.iter().map(|r| r.kid.clone()).collect();
        let snapshot = Self {
            keys,
            verification,
            ignored,
            loaded_at: Some(Instant::now()),
        };
        (snapshot, rejected)
    }

    /// The rejected rows whose kid `previous` did not already ignore.
    fn newly_rejected<'a>(
        rejected: &'a [Rejected],
        previous: &'a Snapshot,
    ) -> impl Iterator<Item = &'a Rejected> {
        rejected
            .iter()
            .filter(|r| !previous.ignored.contains(&r.kid))
    }

    /// Logs each rejected row whose kid `previous` did not already ignore: once per kid.
    fn log_rejected(rejected: &[Rejected], previous: &Snapshot) {
        for r in Self::newly_rejected(rejected, previous) {
            let outcome = if r.kept_earlier {
                "its new material is not loaded; the key opened earlier stays"
            } else {
                "not loaded: neither published, nor signing, nor verifying"
            };
            tracing::error!(
                event = "key_ignored",
                kid = %r.kid,
                plaintext = r.plaintext,
                error = %format!("{:#}", r.error),
                "signing key row ignored: {outcome}"
            );
        }
    }

    /// When this snapshot was read from the database.
    pub fn loaded_at(&self) -> Option<Instant> {
        self.loaded_at
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

/// How [`KeyRing::revoke`] went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// No key has this kid.
    Unknown,
    /// The key is revoked.
    Revoked {
        /// `false` when it was revoked already.
        changed: bool,
        /// The key this call made the signer, because none signed any more.
        replacement: Option<String>,
    },
}

impl Revocation {
    /// The replacement's kid, if this call made one.
    pub fn replacement(self) -> Option<String> {
        match self {
            Self::Unknown => None,
            Self::Revoked { replacement, .. } => replacement,
        }
    }
}

/// The shared, periodically refreshed view of the ring.
pub struct KeyRing {
    store: Store,
    policy: RingPolicy,
    keks: KeyEncryptionKeys,
    snapshot: RwLock<Arc<Snapshot>>,
    last_unknown_kid_reload: Mutex<Option<Instant>>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("policy", &self.policy)
            .field("keks", &self.keks)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Loads the ring: re-seals rows in the clear or under an older KEK, creates the first
    /// key (of `policy.signing_alg`) when the database has none, and reads every key.
    pub async fn open(
        store: Store,
        policy: RingPolicy,
        keks: KeyEncryptionKeys,
        now: i64,
    ) -> anyhow::Result<Self> {
        reseal(&store, &keks).await?;
        if store.keys().await?.is_empty() {
            let first = new_key(&keks, policy.signing_alg, now, now).await?;
            if store.bootstrap_key(&first).await? {
                tracing::info!(event = "key_created", kid = %first.kid, alg = %first.algorithm, "created the first signing key");
            }
        }
        let ring = Self {
            store,
            policy,
            keks,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            last_unknown_kid_reload: Mutex::new(None),
        };
        ring.load(true).await?;
        Ok(ring)
    }

    /// The ring's timing policy.
    pub fn policy(&self) -> &RingPolicy {
        &self.policy
    }

    /// The key-encryption keys the ring seals with.
    pub fn keks(&self) -> &KeyEncryptionKeys {
        &self.keks
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

    /// Re-reads the ring from the database. Rows that do not open under the configured KEKs
    /// (a row in the clear among them: only the start-up re-seal accepts those) are left out
    /// and logged once per kid; see `Snapshot::new`.
    pub async fn reload(&self) -> anyhow::Result<()> {
        self.load(false).await
    }

    /// [`KeyRing::reload`]; with `at_start`, a sealed row that does not open stops the start
    /// instead (a wrong or missing KEK), as the re-seal before it does for other rows.
    async fn load(&self, at_start: bool) -> anyhow::Result<()> {
        let stored = self.store.keys().await?;
        let previous = self.snapshot();
        let (fresh, mut rejected) = Snapshot::new(stored, &self.keks, &previous);
        if at_start {
            if let Some(i) = rejected.iter().position(|r| !r.plaintext) {
                return Err(rejected.swap_remove(i).error);
            }
        }
        Snapshot::log_rejected(&rejected, &previous);
        let fresh = Arc::new(fresh);
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

    /// Adds a new key of the configured algorithm (`AUTH_SIGNING_ALG`) that signs from
    /// `now + publish delay` (at once when nothing signs now) and retires the current signer
    /// then. Returns the new key's kid and activation time.
    pub async fn rotate(&self, now: i64) -> anyhow::Result<(String, i64)> {
        self.rotate_to(now, self.policy.signing_alg).await
    }

    /// [`KeyRing::rotate`] to a key of `alg`, whatever the current signer's: this is how a ring
    /// moves from HS256 to ES256 without logging anybody out.
    pub async fn rotate_to(&self, now: i64, alg: Algorithm) -> anyhow::Result<(String, i64)> {
        let key = self.next_key(now, alg).await?;
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
        let cutoff = now.saturating_sub(secs(period));
        // Checked first so that a key (an RSA key takes a while) is made only when due.
        if self.store.last_key_added_at().await? > cutoff {
            return Ok(None);
        }
        let key = self.next_key(now, self.policy.signing_alg).await?;
        if !self.store.rotate_in_key_if_due(&key, cutoff).await? {
            return Ok(None);
        }
        Ok(Some(self.rotated(key).await?.0))
    }

    /// Revokes a key (compromise): it leaves the published set and `/validate` refuses its
    /// tokens at once. If no key signs afterwards (it was the signer), a new key (of
    /// `AUTH_SIGNING_ALG`) signs immediately: there is no time to pre-publish it, so gateways
    /// refuse the new tokens until their next key poll.
    ///
    /// Idempotent, also under concurrency: a key revoked already (by a concurrent call, or
    /// earlier) is [`Revocation::Revoked`] with `changed: false`, never an error. The
    /// replacement is checked for in that case too: a revocation whose replacement failed (a
    /// database or KEK error after the revocation committed) leaves no signer, and its retry
    /// repairs that instead of reporting "already revoked" for ever.
    pub async fn revoke(&self, kid: &str, now: i64) -> anyhow::Result<Revocation> {
        // Compared here, not in SQL: a kid that no key has (a NUL byte, which PostgreSQL
        // refuses in text, among them) never reaches the database.
        if !self.store.keys().await?.iter().any(|k| k.kid == kid) {
            return Ok(Revocation::Unknown);
        }
        let changed = self.store.revoke_key(kid, now).await?;
        if changed {
            tracing::warn!(event = "key_revoked", kid, "signing key revoked");
        }
        self.reload().await?;
        let replacement = match self.signer(now) {
            Some(_) => None,
            None => Some(self.rotate(now).await?.0),
        };
        Ok(Revocation::Revoked {
            changed,
            replacement,
        })
    }

    /// A new key of `alg`, activating after the publish delay, or at once when nothing signs.
    async fn next_key(&self, now: i64, alg: Algorithm) -> anyhow::Result<StoredKey> {
        self.reload().await?;
        let activates_at = if self.signer(now).is_some() {
            now.saturating_add(self.policy.publish_delay_secs)
        } else {
            // Nothing signs (a first start, or the signer was revoked): the new key must sign on
            // every replica at once, also on one whose clock is behind this one's by up to the
            // tolerated skew, which would otherwise have no signer and answer 503 meanwhile.
            now.saturating_sub(self.policy.clock_skew_secs)
        };
        new_key(&self.keks, alg, now, activates_at).await
    }

    async fn rotated(&self, key: StoredKey) -> anyhow::Result<(String, i64)> {
        self.reload().await?;
        tracing::info!(event = "key_rotated", kid = %key.kid, alg = %key.algorithm, activates_at = key.activates_at, "rotated in a new signing key");
        Ok((key.kid, key.activates_at))
    }
}

/// Re-seals every row that is in the clear (written before encryption at rest) or sealed under
/// a KEK other than the current one. Idempotent, and safe with several replicas starting at
/// once: each row is replaced only if it still holds what was read.
async fn reseal(store: &Store, keks: &KeyEncryptionKeys) -> anyhow::Result<()> {
    for stored in store.keys().await? {
        if stored.material.kek_id() == Some(keks.current_id()) {
            continue;
        }
        let plaintext = open_material(&stored, keks)?;
        let sealed = keks.seal(&stored.kid, &stored.algorithm, &plaintext)?;
        if store
            .reseal_key(&stored.kid, &stored.material, &sealed)
            .await?
        {
            tracing::info!(
                event = "key_resealed",
                kid = %stored.kid,
                from = stored.material.kek_id().unwrap_or("plaintext"),
                to = keks.current_id(),
                "signing key encrypted under the current key-encryption key"
            );
        }
    }
    Ok(())
}

/// The private bytes of a stored key, opened if sealed. For the start-up re-seal only: nothing
/// else may take a row in the clear.
fn open_material(
    stored: &StoredKey,
    keks: &KeyEncryptionKeys,
) -> anyhow::Result<zeroize::Zeroizing<Vec<u8>>> {
    match &stored.material {
        KeyMaterial::Plaintext(secret) => {
            Ok(zeroize::Zeroizing::new(secret.expose_secret().to_vec()))
        }
        KeyMaterial::Sealed(sealed) => Ok(keks.open(&stored.kid, &stored.algorithm, sealed)?),
    }
}

/// The usable key of a stored row, which must be sealed under a configured KEK: a row in the
/// clear is refused (the start-up re-seal is the one place that takes it).
fn open_key(stored: &StoredKey, keks: &KeyEncryptionKeys) -> anyhow::Result<Key> {
    let KeyMaterial::Sealed(sealed) = &stored.material else {
        anyhow::bail!(
            "key {} is stored in the clear (kek_id NULL) and was not written by this version; \
             it is ignored until a restart seals it (a replica of an earlier version may have \
             written it during an upgrade: if none did, delete the row before restarting)",
            stored.kid
        );
    };
    let alg: Algorithm = stored.algorithm.parse().map_err(|_| {
        anyhow::anyhow!(
            "key {} has unsupported algorithm {:?}",
            stored.kid,
            stored.algorithm
        )
    })?;
    let bytes = keks.open(&stored.kid, &stored.algorithm, sealed)?;
    Key::from_private_bytes(stored.kid.clone(), alg, &bytes)
        .with_context(|| format!("key {} ({alg}) does not load", stored.kid))
}

fn same_material(a: &KeyMaterial, b: &KeyMaterial) -> bool {
    match (a, b) {
        (KeyMaterial::Sealed(a), KeyMaterial::Sealed(b)) => a == b,
        _ => false,
    }
}

/// A fresh key of `alg`, sealed, with a random kid; the kid says nothing about the key (a
/// thumbprint of an HMAC key would be a hash of it). Generated on the blocking pool: an RSA
/// key takes a noticeable while.
async fn new_key(
    keks: &KeyEncryptionKeys,
    alg: Algorithm,
    now: i64,
    activates_at: i64,
) -> anyhow::Result<StoredKey> {
    let mut kid = [0_u8; 12];
    OsRng.fill_bytes(&mut kid);
    let kid = URL_SAFE_NO_PAD.encode(kid);
    let key = {
        let kid = kid.clone();
        tokio::task::spawn_blocking(move || Key::generate(kid, alg, &mut OsRng))
            .await
            .context("key generation panicked")??
    };
    let private = key
        .to_private_bytes()
        .context("a generated key has private material")?;
    let material = KeyMaterial::Sealed(keks.seal(&kid, alg.as_str(), &private)?);
    Ok(StoredKey {
        kid,
        algorithm: alg.as_str().to_owned(),
        material,
        created_at: now,
        activates_at,
        retires_at: None,
        revoked_at: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RingPolicy = RingPolicy {
        retention_secs: 960,
        publish_delay_secs: 300,
        signing_alg: Algorithm::ES256,
        clock_skew_secs: 60,
    };

    fn keks() -> KeyEncryptionKeys {
        "test:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
            .parse()
            .unwrap()
    }

    fn key(kid: &str, activates_at: i64, retires_at: Option<i64>) -> StoredKey {
        let secret = [7_u8; 32];
        StoredKey {
            kid: kid.to_owned(),
            algorithm: "HS256".to_owned(),
            material: KeyMaterial::Sealed(keks().seal(kid, "HS256", &secret).unwrap()),
            created_at: 0,
            activates_at,
            retires_at,
            revoked_at: None,
        }
    }

    fn snapshot(keys: Vec<StoredKey>) -> Snapshot {
        let (snapshot, rejected) = Snapshot::new(keys, &keks(), &Snapshot::default());
        assert!(rejected.is_empty(), "{rejected:?}");
        snapshot
    }

    /// `key`, but its secret in the clear (`kek_id` NULL), as rows from before encryption at
    /// rest are, or as anyone who can write to the database could insert it.
    fn plaintext(kid: &str, activates_at: i64) -> StoredKey {
        StoredKey {
            material: KeyMaterial::Plaintext(secrecy::SecretSlice::from(vec![9_u8; 32])),
            ..key(kid, activates_at, None)
        }
    }

    #[test]
    fn states_follow_the_schedule() {
        let snapshot = snapshot(vec![key("a", 100, Some(400))]);
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
        let snapshot = snapshot(vec![key("old", 0, Some(300)), key("new", 300, None)]);
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
        let snapshot = snapshot(vec![revoked]);
        assert!(snapshot.signer(20, &POLICY).is_none());
        assert!(!snapshot.verifies("gone", 20, &POLICY));
        assert!(snapshot.verification_keys().is_empty());
    }

    #[test]
    fn a_key_under_an_unknown_kek_is_rejected_naming_the_variable() {
        let (other, _) = KeyEncryptionKeys::generate("other").unwrap();
        let (snapshot, rejected) =
            Snapshot::new(vec![key("a", 0, None)], &other, &Snapshot::default());
        assert!(snapshot.keys().is_empty());
        assert!(snapshot.verification_keys().is_empty());
        assert_eq!(rejected.len(), 1);
        assert!(!rejected[0].plaintext);
        let err = rejected[0].error.to_string();
        assert!(err.contains("AUTH_KEY_ENCRYPTION_KEYS"), "{err}");
    }

    #[test]
    fn a_key_in_the_clear_is_not_loaded() {
        let (snapshot, rejected) = Snapshot::new(
            vec![key("sealed", 0, Some(100)), plaintext("clear", 100)],
            &keks(),
            &Snapshot::default(),
        );
        assert_eq!(snapshot.keys().len(), 1);
        assert!(!snapshot.knows("clear"));
        assert!(!snapshot.verifies("clear", 150, &POLICY));
        assert!(snapshot.verification_keys().get("clear").is_none());
        assert_eq!(snapshot.published(50, &POLICY).count(), 1);
        assert!(
            snapshot.signer(150, &POLICY).is_none(),
            "the key in the clear does not sign even once its successor retired"
        );
        assert_eq!(rejected.len(), 1);
        assert!(rejected[0].plaintext && !rejected[0].kept_earlier);
        assert_eq!(snapshot.ignored, BTreeSet::from(["clear".to_owned()]));
        let err = rejected[0].error.to_string();
        assert!(err.contains("in the clear"), "{err}");
        assert!(!err.contains("[9, 9"), "{err}");
        assert_eq!(
            Snapshot::newly_rejected(&rejected, &Snapshot::default()).count(),
            1
        );

        let (next, again) = Snapshot::new(vec![plaintext("clear", 100)], &keks(), &snapshot);
        assert!(next.keys().is_empty());
        assert_eq!(again.len(), 1, "still not loaded at the next reload");
        assert_eq!(
            Snapshot::newly_rejected(&again, &snapshot).count(),
            0,
            "logged once per kid"
        );
    }

    #[test]
    fn a_known_key_whose_row_no_longer_opens_keeps_its_earlier_material() {
        let earlier = snapshot(vec![key("a", 0, None)]);
        let mut replaced = plaintext("a", 0);
        replaced.retires_at = Some(50);
        let (snapshot, rejected) = Snapshot::new(vec![replaced], &keks(), &earlier);
        assert_eq!(rejected.len(), 1);
        assert!(rejected[0].kept_earlier);
        let kept = &snapshot.keys()[0];
        assert_eq!(kept.stored.retires_at, Some(50), "the new schedule applies");
        assert_eq!(kept.stored.material.kek_id(), Some("test"));
        assert_eq!(
            kept.key.to_private_bytes().unwrap().as_slice(),
            [7_u8; 32],
            "the earlier, authenticated secret"
        );
    }

    #[tokio::test]
    async fn new_keys_of_every_algorithm_open_and_sign() {
        for alg in Algorithm::ALL {
            let stored = new_key(&keks(), alg, 0, 0).await.unwrap();
            assert_eq!(stored.algorithm, alg.as_str());
            let key = open_key(&stored, &keks()).unwrap();
            assert_eq!(key.algorithm(), alg);
            assert!(key.can_sign(), "{alg}");
        }
    }
}
