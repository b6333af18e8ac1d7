//! Password hashing: `bcrypt(base64(HMAC-SHA-384(pepper, password)))` on a bounded pool.
//!
//! The HMAC pre-hash is the OWASP recipe against bcrypt's 72-byte truncation: every byte of the
//! password counts, NUL included, and the pepper (if set) keeps a stolen database useless on its
//! own. bcrypt runs on tokio's blocking threads behind a semaphore of `hash_concurrency` permits;
//! at most `hash_queue` callers wait for one, and the rest are told to retry (503) at once
//! instead of queueing without limit.

use std::sync::{
    atomic::{AtomicU64, AtomicUsize, Ordering},
    Arc,
};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha384;
use tokio::sync::{Semaphore, TryAcquireError};

use crate::domain::Password;

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
    permits: Semaphore,
    queue_limit: usize,
    waiting: AtomicUsize,
    /// bcrypt computations started since the start (hashes and verifies).
    started: AtomicU64,
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
                permits: Semaphore::new(concurrency.max(1)),
                queue_limit,
                waiting: AtomicUsize::new(0),
                started: AtomicU64::new(0),
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

    /// Whether `password` matches `stored`; with `None` (no such account) it verifies against
    /// the dummy hash and answers `false`, spending the same time.
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<bool, HashError> {
        let input = prehash(&self.inner.pepper, password.expose());
        let known = stored.is_some();
        let hash = stored.unwrap_or(&self.inner.dummy_hash).to_owned();
        let matched = self
            .run(move || bcrypt::non_truncating_verify(input, &hash))
            .await?;
        Ok(known && matched)
    }

    /// Callers waiting for a permit right now (for metrics).
    pub fn waiting(&self) -> usize {
        self.inner.waiting.load(Ordering::Relaxed)
    }

    /// bcrypt computations started so far: tests use it to show which requests hashed nothing.
    pub fn started(&self) -> u64 {
        self.inner.started.load(Ordering::Relaxed)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, bcrypt::BcryptError> + Send + 'static,
    ) -> Result<T, HashError> {
        let inner = &self.inner;
        let _permit = match inner.permits.try_acquire() {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) => {
                // Join the queue only while it has room; past that, shed the request now.
                if inner.waiting.fetch_add(1, Ordering::AcqRel) >= inner.queue_limit {
                    inner.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(HashError::Overloaded);
                }
                let permit = inner.permits.acquire().await;
                inner.waiting.fetch_sub(1, Ordering::AcqRel);
                permit.map_err(|e| HashError::Failed(e.to_string()))?
            }
            Err(TryAcquireError::Closed) => {
                return Err(HashError::Failed("hash pool closed".to_owned()))
            }
        };
        inner.started.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| HashError::Failed(e.to_string()))?
            .map_err(|e| HashError::Failed(e.to_string()))
    }
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
    async fn unknown_account_never_verifies() {
        assert!(!hasher()
            .await
            .verify(&pw("dummy password for unknown accounts"), None)
            .await
            .unwrap());
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
}
