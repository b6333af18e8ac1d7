//! `AppState`: what every handler shares, and the token operations built on it.

use std::sync::Arc;

use anyhow::Context as _;
use auth_jwt::{ErrorKind, Validation};
use serde::Serialize;

use crate::{
    clock::{secs, Clock},
    config::Config,
    error::{ApiError, Result},
    keyring::{KeyRing, RingPolicy},
    metrics::Metrics,
    passwords::{HashError, PasswordHasher},
    store::{RevokeAt, SessionRow, Store},
    throttle::{IpLimiter, LoginThrottle},
    tokens::{self, AccessClaims, RefreshToken, Subject},
};

/// Shared by every handler; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The configuration the app was built with.
    pub config: Arc<Config>,
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
    validation: Arc<Validation>,
}

/// An access token whose signature and claims checked out.
#[derive(Debug)]
pub struct VerifiedToken {
    /// The key that signed it.
    pub kid: String,
    /// Every claim, as sent.
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// Our claims, typed.
    pub typed: AccessClaims,
}

/// The body of a successful login or refresh (RFC 6749 §5.1).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// The JWT access token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// The opaque refresh token.
    pub refresh_token: String,
    /// Seconds until the refresh token expires if unused.
    pub refresh_expires_in: i64,
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
        let hasher = PasswordHasher::new(
            config.bcrypt_cost,
            config.password_pepper.clone(),
            config.hash_concurrency,
            config.hash_queue,
        )
        .await?;
        let validation = Arc::new(tokens::access_validation(&config));
        let ip_limiter = Arc::new(IpLimiter::new(&config).await?);
        let login_throttle = LoginThrottle {
            free_attempts: config.login_free_attempts,
            max_delay_secs: secs(config.login_max_delay),
        };
        Ok(Self {
            config: Arc::new(config),
            store,
            hasher,
            ring: Arc::new(ring),
            metrics: Arc::new(Metrics::default()),
            clock,
            ip_limiter,
            login_throttle,
            validation,
        })
    }

    /// Verifies an access token's signature and claims (not its session; see `/validate`).
    /// Returns the claims both as JSON (all of them) and typed.
    pub async fn verify_access_token(&self, token: &str) -> Result<VerifiedToken> {
        let now = self.clock.now();
        let now_u64 = u64::try_from(now).unwrap_or(0);
        let mut snapshot = self.ring.snapshot();
        let mut decoded = auth_jwt::decode(
            token,
            snapshot.verification_keys(),
            &self.validation,
            now_u64,
        );
        if matches!(&decoded, Err(e) if matches!(e.kind(), ErrorKind::UnknownKey))
            && self
                .ring
                .reload_for_unknown_kid()
                .await
                .map_err(ApiError::Internal)?
        {
            snapshot = self.ring.snapshot();
            decoded = auth_jwt::decode(
                token,
                snapshot.verification_keys(),
                &self.validation,
                now_u64,
            );
        }
        let data = decoded.map_err(|e| ApiError::InvalidToken(e.to_string()))?;
        let kid = data.header.kid.as_deref().unwrap_or_default();
        if !snapshot.verifies(kid, now, self.ring.policy()) {
            return Err(ApiError::InvalidToken(
                "the signing key is no longer valid".to_owned(),
            ));
        }
        let claims: serde_json::Map<String, serde_json::Value> = data.claims;
        let typed = serde_json::from_value(serde_json::Value::Object(claims.clone()))
            .map_err(|_| ApiError::InvalidToken("the token's claims are not ours".to_owned()))?;
        Ok(VerifiedToken {
            kid: kid.to_owned(),
            claims,
            typed,
        })
    }

    /// The stateful half of `/validate`: the token's session exists, is the token's user's and
    /// is not revoked, the user is not disabled, the signing key is not revoked, and the token
    /// is not older than the user's last "revoke everything". Read from the database on every
    /// call, so a revocation by any replica or the CLI counts at once.
    pub async fn check_session(&self, token: &VerifiedToken) -> Result<()> {
        let invalid = |why: &str| ApiError::InvalidToken(why.to_owned());
        let claims = &token.typed;
        let status = self
            .store
            .token_status(&claims.sid, &token.kid)
            .await?
            .ok_or_else(|| invalid("the session does not exist"))?;
        if status.user_id != claims.sub {
            return Err(invalid("the session belongs to another user"));
        }
        if status.key_revoked_at.is_some() {
            return Err(invalid("the signing key has been revoked"));
        }
        if status.revoked_at.is_some() {
            return Err(invalid("the session has been revoked"));
        }
        if status.disabled_at.is_some() {
            return Err(invalid("the account is disabled"));
        }
        if claims.iat < status.tokens_valid_after {
            return Err(invalid("the token predates a revocation of all sessions"));
        }
        Ok(())
    }

    /// A revocation happening now, published for as long as a token it refuses could live.
    pub fn revoke_at(&self) -> RevokeAt {
        RevokeAt::new(self.clock.now(), self.ring.policy().retention_secs)
    }

    /// Issues an access token for `session` and pairs it with `refresh`, which was issued at
    /// `refresh_issued_at` (now, or earlier for a replay inside the grace window).
    pub async fn token_response(
        &self,
        session: &SessionRow,
        refresh: &RefreshToken,
        refresh_issued_at: i64,
        now: i64,
    ) -> Result<TokenResponse> {
        let user = self
            .store
            .user_by_id(&session.user_id)
            .await?
            .ok_or(ApiError::InvalidGrant)?;
        let roles = self.store.roles(&user.id).await?;
        let signer = self
            .ring
            .signer(now)
            .ok_or_else(|| ApiError::NotReady("no signing key is active".to_owned()))?;
        let subject = Subject {
            user_id: &user.id,
            email: &user.email,
            roles,
            session_id: &session.id,
        };
        // Never before the user's last "revoke everything": such a token would be refused.
        let issued_at = now.max(user.tokens_valid_after);
        let access_token = tokens::issue_access_token(&self.config, &signer, subject, issued_at)
            .map_err(|e| ApiError::Internal(e.into()))?;
        let idle_left =
            refresh_issued_at.saturating_add(secs(self.config.session_idle_timeout)) - now;
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: secs(self.config.access_token_ttl),
            refresh_token: refresh.expose().to_owned(),
            refresh_expires_in: idle_left.min(session.expires_at - now).max(0),
        })
    }
}

/// Refuses to start on a ring that cannot sign (SECURITY.md H77).
fn check_ring(ring: &KeyRing, now: i64) -> anyhow::Result<()> {
    if ring.signer(now).is_none() {
        anyhow::bail!("no signing key is active: run `auth-api keys rotate` to create one");
    }
    Ok(())
}

impl From<HashError> for ApiError {
    fn from(err: HashError) -> Self {
        match err {
            HashError::Overloaded => Self::Overloaded,
            HashError::Failed(detail) => Self::Internal(anyhow::anyhow!(detail)),
        }
    }
}
