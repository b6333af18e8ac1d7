//! `AppState`: what every handler and every operation of [`crate::service`] shares.

use std::sync::Arc;

use anyhow::Context as _;
use auth_jwt::Validation;

use crate::{
    clock::{secs, Clock},
    config::{Config, Lifetimes},
    keyring::{KeyRing, RingPolicy},
    mail::{Mailer, OutboxWake},
    metrics::Metrics,
    oidc::{providers::Providers, registry::Registry, HttpClient},
    passwords::PasswordHasher,
    store::{RevokeAt, StatusBatch, Store},
    throttle::{IpLimiter, LoginThrottle},
    tokens,
};

/// Shared by every handler: one `Arc`, so that a clone is one atomic increment. Every
/// `from_fn_with_state` layer and `State` extractor clones it once per request; cloning the
/// fields one by one (an `Arc` each, some several) cost `/healthz` an eighth of its CPU.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
#[derive(Debug)]
pub struct Shared {
    /// The configuration the app was built with.
    pub config: Arc<Config>,
    /// The configuration's token and session lifetimes, in seconds.
    pub lifetimes: Lifetimes,
    /// The database.
    pub store: Store,
    /// Password hashing pool.
    pub hasher: PasswordHasher,
    /// The signing key ring.
    pub ring: Arc<KeyRing>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The time source.
    pub clock: Clock,
    /// Per-client-IP limits of the credential endpoints.
    pub ip_limiter: Arc<IpLimiter>,
    /// The per-email login throttle's policy.
    pub login_throttle: LoginThrottle,
    /// The rules an access token presented to us must meet.
    pub(crate) validation: Arc<Validation>,
    /// `/validate`'s store reads, batched (`service::access::check_session`).
    pub(crate) statuses: StatusBatch,
    /// The external providers of `AUTH_OIDC_PROVIDERS_FILE`, if set (`service::sign_in`).
    pub oidc: Option<Arc<Registry>>,
    /// SMTP delivery, when `AUTH_SMTP_URL` is set (the outbox sender uses it).
    pub mailer: Option<Mailer>,
    /// Wakes this replica's outbox sender after a commit that queued mail.
    pub outbox_wake: OutboxWake,
}

impl AppState {
    /// Connects to the store, runs migrations, opens the key ring and warms the hasher.
    pub async fn new(config: Config, clock: Clock) -> anyhow::Result<Self> {
        let keks = crate::kek::resolve(&config)?;
        let store = Store::open(&config.database_url).await?;
        let policy = RingPolicy::from_config(&config);
        let ring = KeyRing::open(store.clone(), policy, keks, clock.now())
            .await
            .context("cannot open the key ring")?;
        check_ring(&ring, clock.now())?;
        crate::service::sessions::reseal_rotation_keys(&store, ring.keks())
            .await
            .context("cannot re-seal the sessions' rotation keys")?;
        crate::service::totp::reseal_totp_secrets(&store, ring.keks())
            .await
            .context("cannot re-seal the TOTP secrets")?;
        let hasher = PasswordHasher::new(
            config.bcrypt_cost,
            config.password_pepper.clone(),
            config.hash_concurrency,
            config.hash_queue,
        )
        .await?;
        // The hasher records its queue wait and bcrypt time into histograms the registry exports.
        let metrics = Metrics::new(hasher.timings());
        let validation = Arc::new(tokens::access_validation(&config));
        let ip_limiter = Arc::new(IpLimiter::new(&config).await?);
        let oidc = match &config.oidc_providers_file {
            Some(path) => {
                let providers = Providers::from_file(path)?;
                Some(Arc::new(Registry::new(providers, HttpClient::new()?)))
            }
            None => None,
        };
        let mailer = Mailer::from_config(&config)?;
        let login_throttle = LoginThrottle {
            free_attempts: config.login_free_attempts,
            max_delay_secs: secs(config.login_max_delay),
        };
        Ok(Self(Arc::new(Shared {
            statuses: StatusBatch::start(store.clone()),
            lifetimes: Lifetimes::of(&config),
            config: Arc::new(config),
            store,
            hasher,
            ring: Arc::new(ring),
            metrics: Arc::new(metrics),
            clock,
            ip_limiter,
            login_throttle,
            validation,
            oidc,
            mailer,
            outbox_wake: OutboxWake::default(),
        })))
    }

    /// A revocation happening now, published for as long as a token it refuses could live.
    pub fn revoke_at(&self) -> RevokeAt {
        RevokeAt::new(self.clock.now(), self.ring.policy().retention_secs)
    }
}

/// Refuses to start on a ring that cannot sign (SECURITY.md H77).
fn check_ring(ring: &KeyRing, now: i64) -> anyhow::Result<()> {
    if ring.signer(now).is_none() {
        anyhow::bail!("no signing key is active: run `auth-api keys rotate` to create one");
    }
    Ok(())
}
