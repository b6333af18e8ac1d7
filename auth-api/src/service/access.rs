//! Access tokens: the pair a session is issued, and the checks a presented token must pass.

use auth_jwt::ErrorKind;
use serde::Deserialize as _;

use super::{Error, Result};
use crate::{
    domain::AuthMethod,
    signatures,
    state::AppState,
    store::{BatchError, UserRow},
    tokens::{self, AccessClaims, RefreshToken, Subject},
};

/// What a login or a refresh hands out.
#[derive(Debug)]
pub struct TokenPair {
    /// The JWT access token.
    pub access_token: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// The session's live refresh token.
    pub refresh_token: RefreshToken,
    /// Seconds until the refresh token expires if unused.
    pub refresh_expires_in: i64,
    /// A login's device token ([`crate::devices`]); `None` from a refresh.
    pub device_token: Option<String>,
}

/// The session a [`TokenPair`] is issued for, and its live refresh token.
#[derive(Debug)]
pub(super) struct Grant<'a> {
    /// The session's user, as read now.
    pub user: &'a UserRow,
    /// The session id.
    pub session_id: &'a str,
    /// The session's absolute end, Unix seconds.
    pub session_expires_at: i64,
    /// The session's live refresh token.
    pub refresh: RefreshToken,
    /// When `refresh` was issued: now, or earlier for a replay inside the grace window.
    pub refresh_issued_at: i64,
    /// How the session's user authenticated.
    pub auth_method: AuthMethod,
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

/// Signs an access token for `grant`'s session with the active key and pairs it with its
/// refresh token.
pub(super) async fn issue(state: &AppState, grant: Grant<'_>, now: i64) -> Result<TokenPair> {
    let user = grant.user;
    let roles = state.store.roles(&user.id).await?;
    let signer = state
        .ring
        .signer(now)
        .ok_or_else(|| Error::NotReady("no signing key is active".to_owned()))?;
    let subject = Subject {
        user_id: &user.id,
        email: &user.email,
        roles,
        session_id: grant.session_id,
        auth_method: grant.auth_method,
        email_verified: user.email_verified_at.is_some(),
    };
    let lifetimes = &state.lifetimes;
    // Never before the user's last "revoke everything": such a token would be refused.
    let issued_at = now.max(user.tokens_valid_after);
    let access_token = tokens::issue_access_token(
        &state.config,
        &signer,
        subject,
        issued_at,
        lifetimes.access_token_secs,
    )
    .map_err(|e| Error::Internal(e.into()))?;
    let idle_left = grant
        .refresh_issued_at
        .saturating_add(lifetimes.session_idle_secs)
        - now;
    Ok(TokenPair {
        access_token,
        expires_in: lifetimes.access_token_secs,
        refresh_token: grant.refresh,
        refresh_expires_in: idle_left.min(grant.session_expires_at - now).max(0),
        device_token: None,
    })
}

/// The whole check of `/validate`: [`verify`], then [`check_session`].
#[tracing::instrument(skip_all)]
pub async fn validate(state: &AppState, token: &str) -> Result<VerifiedToken> {
    let verified = verify(state, token).await?;
    check_session(state, &verified).await?;
    Ok(verified)
}

/// Verifies an access token's signature and claims (not its session: see [`check_session`]).
/// Returns the claims both as JSON (all of them) and typed.
pub async fn verify(state: &AppState, token: &str) -> Result<VerifiedToken> {
    let now = state.clock.now();
    let now_u64 = u64::try_from(now).unwrap_or(0);
    // Every check of `decode` runs on every call; the verifier only remembers which signatures
    // already verified (see `signatures`).
    let verifier = &*signatures::VERIFIER;
    let mut snapshot = state.ring.snapshot();
    let mut decoded = auth_jwt::decode_with_verifier(
        token,
        snapshot.verification_keys(),
        &state.validation,
        now_u64,
        verifier,
    );
    if matches!(&decoded, Err(e) if matches!(e.kind(), ErrorKind::UnknownKey))
        && state.ring.reload_for_unknown_kid().await?
    {
        snapshot = state.ring.snapshot();
        decoded = auth_jwt::decode_with_verifier(
            token,
            snapshot.verification_keys(),
            &state.validation,
            now_u64,
            verifier,
        );
    }
    let data = decoded.map_err(|e| Error::InvalidToken(e.to_string()))?;
    let kid = data.header.kid.as_deref().unwrap_or_default();
    if !snapshot.verifies(kid, now, state.ring.policy()) {
        return Err(Error::InvalidToken(
            "the signing key is no longer valid".to_owned(),
        ));
    }
    let claims: serde_json::Map<String, serde_json::Value> = data.claims;
    let typed = AccessClaims::deserialize(&claims)
        .map_err(|_| Error::InvalidToken("the token's claims are not ours".to_owned()))?;
    Ok(VerifiedToken {
        kid: kid.to_owned(),
        claims,
        typed,
    })
}

/// The stateful half of validation: the token's session exists, is the token's user's, is not
/// revoked and has not reached its absolute end (`expires_at`), the user is not disabled, the signing key is not revoked, and the token is not
/// older than the user's last "revoke everything". Read from the database on every call, so a
/// revocation by any replica or the CLI counts at once: by one query for every call waiting at
/// that moment, always one that started after this call (`store::StatusBatch`).
/// A store that cannot be read answers [`Error::Unavailable`] (503).
pub async fn check_session(state: &AppState, token: &VerifiedToken) -> Result<()> {
    let invalid = |why: &str| Error::InvalidToken(why.to_owned());
    let claims = &token.typed;
    let status = state
        .statuses
        .token_status(&claims.sid, &token.kid)
        .await
        .map_err(batch_error)?
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
    if state.clock.now() >= status.expires_at {
        return Err(invalid("the session has expired"));
    }
    if status.disabled_at.is_some() {
        return Err(invalid("the account is disabled"));
    }
    if claims.iat < status.tokens_valid_after {
        return Err(invalid("the token predates a revocation of all sessions"));
    }
    Ok(())
}

/// A batched read's failure as the service's error: the query's own error mapped as a single
/// query's would be (its `sqlx::Error` is in the chain: 503 when it is an unavailability, else
/// 500); a full queue or a read that ended unanswered is 503.
fn batch_error(err: BatchError) -> Error {
    match err {
        BatchError::Store(_) => Error::from(anyhow::Error::new(err)),
        BatchError::QueueFull | BatchError::Lost | BatchError::TimedOut => {
            Error::Unavailable(err.into())
        }
    }
}
