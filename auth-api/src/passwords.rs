//! Password hashing: `bcrypt(base64(HMAC-SHA-384(pepper, password)))` on a bounded pool.
//!
//! The HMAC pre-hash is the OWASP recipe against bcrypt's 72-byte truncation: every byte of the
//! password counts, NUL included, and the pepper (if set) keeps a stolen database useless on its
//! own. bcrypt runs on tokio's blocking threads behind a semaphore of `hash_concurrency` permits;
//! at most `hash_queue` callers wait for one, and the rest are told to retry (503) at once
//! instead of queueing without limit.
//!
//! Both bounds hold when callers are cancelled (a client disconnects, a timeout fires): the
//! permit is owned by the blocking task, so it is released when bcrypt ends, not when the
//! caller stops waiting for the answer, and a place in the queue is a guard that leaves the
//! queue when dropped.

use std::{
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Instant,
};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha384;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::{domain::Password, metrics::HashTimings};

/// Why a hash could not be computed or checked.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// More callers are waiting than the queue bound allows.
    #[error("too many password hashes waiting")]
    Overloaded,
    /// bcrypt itself failed (a malformed stored hash, or a panicked worker).
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// Hashes and verifies passwords; cheap to clone.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    cost: u32,
    pepper: SecretString,
    permits: Arc<Semaphore>,
    queue_limit: usize,
    waiting: AtomicUsize,
    /// bcrypt computations started since the start (hashes and verifies).
    started: AtomicU64,
    /// The queue wait and bcrypt time histograms (exported by [`crate::metrics::Metrics`]).
    timings: HashTimings,
    /// A real hash at the configured cost, verified when the email is unknown so that the
    /// answer takes as long as for a wrong password.
    dummy_hash: String,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("cost", &self.inner.cost)
            .field("queue_limit", &self.inner.queue_limit)
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// Builds the hasher; computes the dummy hash, so it takes one bcrypt's time.
    pub async fn new(
        cost: u32,
        pepper: Option<SecretString>,
        concurrency: usize,
        queue_limit: usize,
    ) -> Result<Self, HashError> {
        let pepper = pepper.unwrap_or_else(|| SecretString::from(String::new()));
        let dummy_input = prehash(&pepper, "dummy password for unknown accounts");
        let dummy_hash = tokio::task::spawn_blocking(move || {
            bcrypt::non_truncating_hash(dummy_input, cost)
                .map_err(|e| HashError::Failed(e.to_string()))
        })
        .await
        .map_err(|e| HashError::Failed(e.to_string()))??;
        Ok(Self {
            inner: Arc::new(Inner {
                cost,
                pepper,
                permits: Arc::new(Semaphore::new(concurrency.max(1))),
                queue_limit,
                waiting: AtomicUsize::new(0),
                started: AtomicU64::new(0),
                timings: HashTimings::default(),
                dummy_hash,
            }),
        })
    }

    /// A new `$2b$<cost>$…` hash of `password`, with a fresh salt.
    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let input = prehash(&self.inner.pepper, password.expose());
        let cost = self.inner.cost;
        self.run(move || bcrypt::non_truncating_hash(input, cost))
            .await
    }

    /// Whether `password` matches `stored`; with `None` (no such account), or a stored value
    /// that is not a bcrypt hash (an account without a password, [`crate::store::NO_PASSWORD`]),
    /// it verifies against the dummy hash and answers `false`, spending the same time.
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<bool, HashError> {
        self.verify_admitted(self.admit()?, password, stored).await
    }

    /// A place for one bcrypt, taken before the work that must happen only if bcrypt will run:
    /// a login counts its attempt against the lock after this, so that a request shed with 503
    /// (the queue full) never counts as a wrong password and a user retrying an overloaded
    /// service is not locked out. [`HashError::Overloaded`] when the queue is full.
    pub fn admit(&self) -> Result<Admission, HashError> {
        let inner = &self.inner;
        match Arc::clone(&inner.permits).try_acquire_owned() {
            // Held through the caller's work before bcrypt (a database round trip): a burst
            // let in while permits were free would otherwise all be admitted past the bound.
            Ok(permit) => Ok(Admission::Permit(permit)),
            Err(TryAcquireError::NoPermits) => {
                // Join the queue only while it has room; past that, shed the request now. The
                // place is left when dropped: on getting a permit, or when the caller is
                // cancelled.
                let place = QueuePlace::join(inner);
                if place.ahead >= inner.queue_limit {
                    inner.timings.shed.inc();
                    return Err(HashError::Overloaded);
                }
                Ok(Admission::Queued(place))
            }
            Err(TryAcquireError::Closed) => Err(HashError::Failed("hash pool closed".to_owned())),
        }
    }

    /// [`PasswordHasher::verify`] with a place taken by [`PasswordHasher::admit`]: never shed.
    pub async fn verify_admitted(
        &self,
        admission: Admission,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<bool, HashError> {
        let input = prehash(&self.inner.pepper, password.expose());
        // bcrypt refuses an unparsable hash at once, with an error: a failed login (500), and
        // faster than a wrong password, which would tell passwordless accounts apart.
        let stored = stored.filter(|hash| cost_of(hash).is_some());
        let known = stored.is_some();
        let hash = stored.unwrap_or(&self.inner.dummy_hash).to_owned();
        let matched = self
            .run_admitted(admission, move || {
                bcrypt::non_truncating_verify(input, &hash)
            })
            .await?;
        Ok(known && matched)
    }

    /// The configured bcrypt cost (`AUTH_BCRYPT_COST`).
    pub fn cost(&self) -> u32 {
        self.inner.cost
    }

    /// Whether `stored`, a hash that just verified, should be replaced by one at the configured
    /// cost: it is not `$2b$`, or its cost is below the configured one. Otherwise a raised
    /// `AUTH_BCRYPT_COST` would leave old accounts answering faster than the dummy hash of an
    /// unknown email, a timing oracle for which emails have accounts (SECURITY.md E 46). A hash
    /// above the configured cost stays: lowering the cost never weakens a stored hash.
    pub fn is_weaker_than_configured(&self, stored: &str) -> bool {
        !stored.starts_with("$2b$") || cost_of(stored).is_none_or(|cost| cost < self.inner.cost)
    }

    /// Callers waiting for a permit right now (for metrics).
    pub fn waiting(&self) -> usize {
        self.inner.waiting.load(Ordering::Relaxed)
    }

    /// The histograms this hasher records into, for the registry to export.
    pub fn timings(&self) -> HashTimings {
        self.inner.timings.clone()
    }

    /// bcrypt computations started so far: tests use it to show which requests hashed nothing.
    pub fn started(&self) -> u64 {
        self.inner.started.load(Ordering::Relaxed)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, bcrypt::BcryptError> + Send + 'static,
    ) -> Result<T, HashError> {
        self.run_admitted(self.admit()?, work).await
    }

    async fn run_admitted<T: Send + 'static>(
        &self,
        admission: Admission,
        work: impl FnOnce() -> Result<T, bcrypt::BcryptError> + Send + 'static,
    ) -> Result<T, HashError> {
        let asked = Instant::now();
        let permit = self.permit(admission).await?;
        let timings = &self.inner.timings;
        timings.queue_wait.observe(asked.elapsed().as_secs_f64());
        self.inner.started.fetch_add(1, Ordering::Relaxed);
        let hash_time = timings.hash.clone();
        tokio::task::spawn_blocking(move || {
            // Held until bcrypt ends, even if the caller is gone by then: a disconnecting client
            // must not let another bcrypt start beside its own.
            let _permit = permit;
            let started = Instant::now();
            let result = work();
            hash_time.observe(started.elapsed().as_secs_f64());
            result
        })
        .await
        .map_err(|e| HashError::Failed(e.to_string()))?
        .map_err(|e| HashError::Failed(e.to_string()))
    }

    /// The admission's permit, or one after waiting in the queue.
    async fn permit(&self, admission: Admission) -> Result<OwnedSemaphorePermit, HashError> {
        match admission {
            Admission::Permit(permit) => Ok(permit),
            Admission::Queued(_place) => Arc::clone(&self.inner.permits)
                .acquire_owned()
                .await
                .map_err(|e| HashError::Failed(e.to_string())),
        }
    }
}

/// A caller let in by [`PasswordHasher::admit`]: a permit, or a place in the bounded queue held
/// until it gets one or is dropped.
#[derive(Debug)]
pub enum Admission {
    /// A bcrypt slot, free at once.
    Permit(OwnedSemaphorePermit),
    /// A place in the queue for one.
    Queued(QueuePlace),
}

/// A place in the queue for a permit: counted in `waiting` from [`QueuePlace::join`] until
/// dropped, however the wait ends.
pub struct QueuePlace {
    inner: Arc<Inner>,
    /// Callers that were waiting when this one joined.
    ahead: usize,
}

impl QueuePlace {
    fn join(inner: &Arc<Inner>) -> Self {
        let ahead = inner.waiting.fetch_add(1, Ordering::AcqRel);
        Self {
            inner: Arc::clone(inner),
            ahead,
        }
    }
}

impl std::fmt::Debug for QueuePlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuePlace")
            .field("ahead", &self.ahead)
            .finish_non_exhaustive()
    }
}

impl Drop for QueuePlace {
    fn drop(&mut self) {
        self.inner.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The cost of a bcrypt hash (`$2?$<cost>$…`), `None` when it is not one.
fn cost_of(hash: &str) -> Option<u32> {
    hash.parse::<bcrypt::HashParts>()
        .ok()
        .map(|parts| parts.get_cost())
}

/// `base64(HMAC-SHA-384(pepper, password))`: 64 ASCII characters, under bcrypt's 72-byte limit
/// and free of NUL whatever the password holds.
fn prehash(pepper: &SecretString, password: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail; the fallback keeps it panic-free.
    let mac = <Hmac<Sha384> as Mac>::new_from_slice(pepper.expose_secret().as_bytes())
        .map(|mut mac| {
            mac.update(password.as_bytes());
            mac.finalize().into_bytes().to_vec()
        })
        .unwrap_or_default();
    STANDARD.encode(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn hasher() -> PasswordHasher {
        PasswordHasher::new(4, None, 2, 8).await.unwrap()
    }

    fn pw(text: &str) -> Password {
        Password::for_login(text).unwrap()
    }

    #[tokio::test]
    async fn hash_is_bcrypt_2b_with_the_configured_cost() {
        let hash = hasher().await.hash(&pw("correct horse")).await.unwrap();
        assert!(hash.starts_with("$2b$04$"), "{hash}");
    }

    #[tokio::test]
    async fn same_password_gets_a_different_salt_each_time() {
        let hasher = hasher().await;
        let a = hasher.hash(&pw("correct horse")).await.unwrap();
        let b = hasher.hash(&pw("correct horse")).await.unwrap();
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn passwords_differing_after_byte_72_are_different() {
        let hasher = hasher().await;
        let base = "a".repeat(72);
        let hash = hasher.hash(&pw(&format!("{base}X"))).await.unwrap();
        assert!(hasher
            .verify(&pw(&format!("{base}X")), Some(&hash))
            .await
            .unwrap());
        assert!(!hasher
            .verify(&pw(&format!("{base}Y")), Some(&hash))
            .await
            .unwrap());
        assert!(!hasher.verify(&pw(&base), Some(&hash)).await.unwrap());
    }

    #[tokio::test]
    async fn nul_inside_a_password_is_significant() {
        let hasher = hasher().await;
        let hash = hasher.hash(&pw("abc\u{0}defghij")).await.unwrap();
        assert!(hasher
            .verify(&pw("abc\u{0}defghij"), Some(&hash))
            .await
            .unwrap());
        assert!(!hasher.verify(&pw("abc"), Some(&hash)).await.unwrap());
    }

    #[tokio::test]
    async fn pepper_changes_the_hash_input() {
        let plain = hasher().await;
        let peppered = PasswordHasher::new(4, Some(SecretString::from("pepper".to_owned())), 1, 8)
            .await
            .unwrap();
        let hash = plain.hash(&pw("correct horse")).await.unwrap();
        assert!(!peppered
            .verify(&pw("correct horse"), Some(&hash))
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn dummy_hash_has_the_configured_cost() {
        // Two costs, so that a dummy computed at a fixed cost fails one of them.
        for cost in [4, 5] {
            let hasher = PasswordHasher::new(cost, None, 1, 8).await.unwrap();
            let dummy = &hasher.inner.dummy_hash;
            assert_eq!(cost_of(dummy), Some(cost), "{dummy}");
            assert!(dummy.starts_with("$2b$"), "{dummy}");
            assert!(!hasher.is_weaker_than_configured(dummy));
        }
    }

    #[tokio::test]
    async fn hashes_below_the_configured_cost_or_not_2b_are_weaker() {
        let low = hasher().await.hash(&pw("correct horse")).await.unwrap();
        let high = PasswordHasher::new(5, None, 1, 8).await.unwrap();
        let same = high.hash(&pw("correct horse")).await.unwrap();
        assert!(high.is_weaker_than_configured(&low), "cost 4 under cost 5");
        assert!(
            !high.is_weaker_than_configured(&same),
            "cost 5 under cost 5"
        );
        assert!(
            !hasher().await.is_weaker_than_configured(&same),
            "a higher cost is never lowered"
        );
        let as_2a = same.replacen("$2b$", "$2a$", 1);
        assert!(high.is_weaker_than_configured(&as_2a), "$2a$ is replaced");
        assert!(high.is_weaker_than_configured("not a bcrypt hash"));
    }

    #[tokio::test]
    async fn unknown_account_never_verifies() {
        assert!(!hasher()
            .await
            .verify(&pw("dummy password for unknown accounts"), None)
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn a_stored_value_that_is_no_bcrypt_hash_costs_one_bcrypt_and_never_verifies() {
        let hasher = hasher().await;
        for stored in [crate::store::NO_PASSWORD, "", "$2b$04$short"] {
            let before = hasher.started();
            let verified = hasher.verify(&pw(stored), Some(stored)).await.unwrap();
            assert!(!verified, "{stored:?}");
            assert_eq!(
                hasher.started() - before,
                1,
                "{stored:?}: one bcrypt, on the dummy"
            );
        }
    }

    #[tokio::test]
    async fn full_queue_refuses_at_once() {
        // One permit and no room to wait. The first job holds the permit until released.
        let hasher = PasswordHasher::new(4, None, 1, 0).await.unwrap();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let mut first = Box::pin(hasher.run(move || {
            let _ = released.recv();
            Ok(())
        }));
        tokio::select! {
            biased;
            _ = &mut first => panic!("the first job cannot finish before it is released"),
            () = std::future::ready(()) => {}
        }
        let second = hasher.hash(&pw("other horse")).await;
        assert!(matches!(second.unwrap_err(), HashError::Overloaded));
        release.send(()).unwrap();
        assert!(first.await.is_ok());
        assert!(
            hasher.hash(&pw("other horse")).await.is_ok(),
            "the permit is free again"
        );
    }

    /// A job that counts how many jobs run at once (`running`, highest in `peak`) while it
    /// stands in for a bcrypt of `busy`.
    fn counting_job(
        running: &Arc<AtomicUsize>,
        peak: &Arc<AtomicUsize>,
        busy: std::time::Duration,
    ) -> impl FnOnce() -> Result<(), bcrypt::BcryptError> + Send + 'static {
        let (running, peak) = (Arc::clone(running), Arc::clone(peak));
        move || {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(busy);
            running.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelled_callers_cannot_raise_concurrent_bcrypt_above_the_limit() {
        use std::time::Duration;
        // Arrange: two permits, four places in the queue, jobs far longer than the waves.
        let hasher = PasswordHasher::new(4, None, 2, 4).await.unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let busy = Duration::from_millis(300);
        // Act: three waves of twelve callers each, cancelled mid-flight: half by a client
        // timeout, the other half aborted (a disconnect).
        for _wave in 0..3 {
            let mut callers = tokio::task::JoinSet::new();
            for i in 0..12 {
                let hasher = hasher.clone();
                let job = counting_job(&running, &peak, busy);
                callers.spawn(async move {
                    if i % 2 == 0 {
                        let _ =
                            tokio::time::timeout(Duration::from_millis(5), hasher.run(job)).await;
                    } else {
                        let _ = hasher.run(job).await;
                    }
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            callers.abort_all();
            while callers.join_next().await.is_some() {}
            assert_eq!(hasher.waiting(), 0, "every cancelled waiter left the queue");
        }
        for _ in 0..100 {
            if running.load(Ordering::SeqCst) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Assert: never more jobs at once than permits, and the pool is whole again.
        assert_eq!(running.load(Ordering::SeqCst), 0, "the started jobs ended");
        assert!(
            peak.load(Ordering::SeqCst) <= 2,
            "{} jobs ran at once with 2 permits",
            peak.load(Ordering::SeqCst)
        );
        assert_eq!(hasher.waiting(), 0);
        assert!(hasher.hash(&pw("correct horse")).await.is_ok());
    }
}
