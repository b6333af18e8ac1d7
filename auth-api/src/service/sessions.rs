//! Sessions after login: refresh-token rotation with reuse detection, and logout.

use serde::Deserialize;

use super::{
    access::{self, Grant, TokenPair},
    Error, Result,
};
use crate::{
    state::AppState,
    store::{RefreshLookup, SessionRow},
    tokens::RefreshToken,
};

/// Which sessions a logout ends, in GoTrue's vocabulary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogoutScope {
    /// The session of the presented token.
    #[default]
    Local,
    /// Every session of the user (GoTrue's `global` is accepted too).
    #[serde(alias = "global")]
    All,
    /// Every session of the user except the presented token's.
    Others,
}

/// The token a logout presents.
#[derive(Debug, Clone, Copy)]
pub enum LogoutCredential<'a> {
    /// An access token: it must verify; it ends sessions only while it validates.
    AccessToken(&'a str),
    /// A refresh token, of any generation: unknown ones change nothing.
    RefreshToken(&'a str),
}

/// Why a refresh was refused, for the metrics and the log.
enum Rejected {
    Invalid(&'static str),
    Reused,
    Error(Error),
}

impl<E: Into<Error>> From<E> for Rejected {
    fn from(err: E) -> Self {
        Self::Error(err.into())
    }
}

/// Rotates a refresh token, or [`Error::InvalidGrant`].
///
/// The live token rotates to its successor (one conditional update: of concurrent rotations
/// one wins, the others see the new generation and answer with the same successor). Its
/// immediate predecessor, inside `AUTH_REFRESH_REUSE_GRACE_SECS`, answers with the live token
/// again; any other reuse revokes the session.
#[tracing::instrument(skip_all, fields(session_id))]
pub async fn refresh(state: &AppState, presented: &str) -> Result<TokenPair> {
    let outcome = rotate(state, presented).await;
    state.metrics.refresh(match &outcome {
        Ok(_) => "success",
        Err(Rejected::Reused) => "reuse_detected",
        Err(Rejected::Invalid(_)) => "invalid_grant",
        Err(Rejected::Error(_)) => "error",
    });
    match outcome {
        Ok(tokens) => Ok(tokens),
        Err(Rejected::Invalid(reason)) => {
            tracing::info!(event = "refresh_failed", reason, "refresh refused");
            Err(Error::InvalidGrant)
        }
        Err(Rejected::Reused) => Err(Error::InvalidGrant),
        Err(Rejected::Error(e)) => Err(e),
    }
}

async fn rotate(state: &AppState, presented: &str) -> Result<TokenPair, Rejected> {
    let token = RefreshToken::parse(presented).ok_or(Rejected::Invalid("malformed"))?;
    let found = state
        .store
        .find_refresh_token(&token.hash())
        .await?
        .ok_or(Rejected::Invalid("unknown"))?;
    let session = found.session;
    tracing::Span::current().record("session_id", session.id.as_str());
    let now = state.clock.now();
    if session.revoked_at.is_some() {
        return Err(Rejected::Invalid("session revoked"));
    }
    if now >= session.expires_at {
        return Err(Rejected::Invalid("session expired"));
    }
    if session.user_disabled_at.is_some() {
        return Err(Rejected::Invalid("account disabled"));
    }
    let successor = token.successor(&session.rotation_key);
    let lifetimes = &state.lifetimes;
    if found.token_generation == session.generation {
        if now
            >= session
                .refreshed_at
                .saturating_add(lifetimes.session_idle_secs)
        {
            return Err(Rejected::Invalid("idle timeout"));
        }
        let won = state
            .store
            .rotate_refresh_token(&session.id, session.generation, &successor.hash(), now)
            .await?;
        if !won {
            // A concurrent rotation of this same token won: it issued this very successor.
            let current = state
                .store
                .session(&session.id)
                .await?
                .ok_or(Rejected::Invalid("session gone"))?;
            if current.revoked_at.is_some() || current.generation != session.generation + 1 {
                return Err(Rejected::Invalid("lost a rotation race"));
            }
            let issued_at = current.refreshed_at;
            return issue(state, &current, successor, issued_at, now).await;
        }
        return issue(state, &session, successor, now, now).await;
    }
    let grace_ends = session
        .refreshed_at
        .saturating_add(lifetimes.refresh_reuse_grace_secs);
    if found.token_generation + 1 == session.generation && now < grace_ends {
        // The client retried (lost response, two tabs): answer with the live token again.
        return issue(state, &session, successor, session.refreshed_at, now).await;
    }
    state
        .store
        .revoke_session(&session.id, state.revoke_at(), "refresh_token_reused")
        .await?;
    tracing::warn!(
        event = "refresh_token_reused",
        session_id = %session.id,
        generation = found.token_generation,
        live_generation = session.generation,
        "refresh token reuse: session revoked"
    );
    Err(Rejected::Reused)
}

/// The pair for `session` with its live `refresh` token, issued at `refresh_issued_at`.
async fn issue(
    state: &AppState,
    session: &SessionRow,
    refresh: RefreshToken,
    refresh_issued_at: i64,
    now: i64,
) -> Result<TokenPair, Rejected> {
    let user = state
        .store
        .user_by_id(&session.user_id)
        .await?
        .ok_or(Error::InvalidGrant)?;
    let grant = Grant {
        user: &user,
        session_id: &session.id,
        session_expires_at: session.expires_at,
        refresh,
        refresh_issued_at,
    };
    Ok(access::issue(state, grant, now).await?)
}

/// Ends the session of `credential` or, with another `scope`, every session (`All`) or every
/// other session (`Others`) of its user. Idempotent (RFC 7009 §2.2): a token already revoked or
/// unknown changes nothing and is no error; only an access token that does not verify is one.
#[tracing::instrument(skip_all, fields(user_id))]
pub async fn logout(
    state: &AppState,
    credential: LogoutCredential<'_>,
    scope: LogoutScope,
) -> Result<()> {
    let presented = match credential {
        LogoutCredential::AccessToken(token) => {
            let verified = access::verify(state, token).await?;
            let claims = &verified.typed;
            tracing::Span::current().record("user_id", claims.sub.as_str());
            // Only a token validation would accept ends sessions: one of an already ended
            // session changes nothing (logout is idempotent) and above all cannot end every
            // other session. Any other failure (the store is down) is the caller's to see: a
            // 204 would claim sessions ended that did not.
            match access::check_session(state, &verified).await {
                Ok(()) => end_sessions(state, scope, &claims.sub, &claims.sid).await?,
                Err(Error::InvalidToken(_)) => {}
                Err(e) => return Err(e),
            }
            return Ok(());
        }
        LogoutCredential::RefreshToken(presented) => presented,
    };
    let found = match RefreshToken::parse(presented) {
        Some(token) => state.store.find_refresh_token(&token.hash()).await?,
        None => None,
    };
    let Some(found) = found else {
        return Ok(());
    };
    tracing::Span::current().record("user_id", found.session.user_id.as_str());
    // Any token of the session ends it: an old one is reuse anyway, which revokes it too. Ending
    // other sessions takes the session's live token (or its predecessor within the grace
    // window): an old token, stolen once, must not log the user out everywhere for the rest of
    // the session's life.
    let allowed = scope == LogoutScope::Local
        || is_live(
            &found,
            state.clock.now(),
            state.lifetimes.refresh_reuse_grace_secs,
        );
    if allowed {
        end_sessions(state, scope, &found.session.user_id, &found.session.id).await?;
    }
    Ok(())
}

/// Ends the sessions `scope` names, for the session `session_id` of `user_id`.
async fn end_sessions(
    state: &AppState,
    scope: LogoutScope,
    user_id: &str,
    session_id: &str,
) -> Result<()> {
    let at = state.revoke_at();
    match scope {
        LogoutScope::Local => {
            state.store.revoke_session(session_id, at, "logout").await?;
        }
        LogoutScope::All => state.store.revoke_all_sessions(user_id, at).await?,
        LogoutScope::Others => {
            state
                .store
                .revoke_other_sessions(user_id, session_id, at, "logout_others")
                .await?;
        }
    }
    tracing::info!(event = "logout", scope = ?scope, "logged out");
    Ok(())
}

/// Whether a presented refresh token is its session's live one, or the immediate predecessor
/// within the grace window, of a session that has not ended.
fn is_live(found: &RefreshLookup, now: i64, grace_secs: i64) -> bool {
    let session = &found.session;
    let current = found.token_generation == session.generation
        || (found.token_generation + 1 == session.generation
            && now < session.refreshed_at.saturating_add(grace_secs));
    current && session.revoked_at.is_none() && now < session.expires_at
}
