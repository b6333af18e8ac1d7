//! Sessions after login: refresh-token rotation with reuse detection, and logout.

use std::collections::BTreeSet;

use serde::Deserialize;
use zeroize::Zeroizing;

use super::{
    access::{self, Grant, TokenPair},
    Error, Result,
};
use crate::{
    kek::KeyEncryptionKeys,
    state::AppState,
    store::{RefreshLookup, RotationKeyAtRest, SessionRow, Store},
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
    // The rotation key is opened only where a successor is needed: reuse detection below does
    // not depend on it, so an old token still ends the session where the key does not open.
    let lifetimes = &state.lifetimes;
    if found.token_generation == session.generation {
        if now
            >= session
                .refreshed_at
                .saturating_add(lifetimes.session_idle_secs)
        {
            return Err(Rejected::Invalid("idle timeout"));
        }
        let successor = token.successor(&open_rotation_key(state, &session).await?);
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
        let successor = token.successor(&open_rotation_key(state, &session).await?);
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

/// The rotation key of `session`, opened (SECURITY.md I 100).
///
/// A key that does not open — under a KEK this replica is not given, or altered, or moved from
/// another session (the associated data is the session id) — refuses the refresh as
/// `invalid_grant`, and is logged by session and KEK id (never a byte of it). The session is not
/// revoked: a replica started without one of the KEKs must not end every session it meets.
///
/// A key in the clear (written before issue 10, or by a replica of an earlier version during a
/// rolling upgrade) or under an older KEK is used and re-sealed under the current KEK here, so
/// that such a session still refreshes. The start already re-sealed every row it found
/// ([`reseal_rotation_keys`]); this catches the rows written since. Accepting a key in the clear
/// lets nobody in who could not get in anyway: whoever can write one into the database can as
/// well write the hash of a refresh token of their own.
async fn open_rotation_key(
    state: &AppState,
    session: &SessionRow,
) -> Result<Zeroizing<Vec<u8>>, Rejected> {
    let keks = state.ring.keks();
    let (key, from) = match session.rotation_key_at_rest() {
        RotationKeyAtRest::Sealed(sealed) => match keks.open_rotation_key(&session.id, &sealed) {
            Ok(key) if sealed.kek_id == keks.current_id() => return Ok(key),
            Ok(key) => (key, sealed.kek_id),
            Err(e) => {
                tracing::error!(
                    event = "rotation_key_unopenable",
                    session_id = %session.id,
                    kek_id = %sealed.kek_id,
                    error = %e,
                    "the session's rotation key does not open: refresh refused"
                );
                return Err(Rejected::Invalid("rotation key does not open"));
            }
        },
        RotationKeyAtRest::Clear(key) => (Zeroizing::new(key.to_vec()), "plaintext".to_owned()),
    };
    let sealed = keks
        .seal_rotation_key(&session.id, &key)
        .map_err(Error::Internal)?;
    if state
        .store
        .reseal_rotation_key(&session.id, &session.rotation_key, &sealed)
        .await?
    {
        tracing::info!(
            event = "rotation_key_resealed",
            session_id = %session.id,
            from = %from,
            to = keks.current_id(),
            "rotation key encrypted under the current key-encryption key"
        );
    }
    Ok(key)
}

/// What [`reseal_rotation_keys`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RotationKeyReseal {
    /// Rows re-sealed under the current KEK (in the clear or under an older one before).
    pub resealed: u64,
    /// Rows left as they were because they do not open under the configured KEKs; their
    /// sessions cannot refresh (users log in again).
    pub unopenable: u64,
    /// The KEK ids those rows name.
    pub unopenable_keks: BTreeSet<String>,
}

/// Rows read and re-sealed per transaction by [`reseal_rotation_keys`].
const RESEAL_BATCH: i64 = 500;

/// Re-seals, under the current KEK, every session's rotation key that is in the clear (written
/// before issue 10) or sealed under another KEK (after a KEK rotation): at every start and by
/// every `auth-api keys` command, as [`crate::keyring`] does with the signing keys.
///
/// At start rather than only lazily at the next refresh: a session that is never refreshed
/// again would keep its key in the clear (or under a KEK that must then stay configured) until
/// it expires, in every dump taken meanwhile, and `keys list` could not tell when the old KEK may
/// be dropped. Idempotent and safe with several replicas starting at once (each row is replaced
/// only if it still holds what was read); in batches, so memory stays bounded. A row that does
/// not open is counted and logged (by KEK id), not fatal: its session only cannot refresh.
pub async fn reseal_rotation_keys(
    store: &Store,
    keks: &KeyEncryptionKeys,
) -> anyhow::Result<RotationKeyReseal> {
    let mut done = RotationKeyReseal::default();
    let mut after = String::new();
    loop {
        let rows = store
            .rotation_keys_not_under(keks.current_id(), &after, RESEAL_BATCH)
            .await?;
        let Some((last, _, _)) = rows.last() else {
            break;
        };
        after.clone_from(last);
        let mut updates = Vec::with_capacity(rows.len());
        for (session_id, column, kek_id) in rows {
            let key = match RotationKeyAtRest::of(&column, kek_id.as_deref()) {
                RotationKeyAtRest::Clear(key) => Zeroizing::new(key.to_vec()),
                RotationKeyAtRest::Sealed(sealed) => {
                    match keks.open_rotation_key(&session_id, &sealed) {
                        Ok(key) => key,
                        Err(_) => {
                            done.unopenable += 1;
                            done.unopenable_keks.insert(sealed.kek_id);
                            continue;
                        }
                    }
                }
            };
            let sealed = keks.seal_rotation_key(&session_id, &key)?;
            updates.push((session_id, column, sealed));
        }
        done.resealed += store.reseal_rotation_keys(&updates).await?;
    }
    if done.resealed > 0 {
        tracing::info!(
            event = "rotation_keys_resealed",
            count = done.resealed,
            to = keks.current_id(),
            "sessions' rotation keys encrypted under the current key-encryption key"
        );
    }
    if done.unopenable > 0 {
        tracing::warn!(
            event = "rotation_keys_unopenable",
            count = done.unopenable,
            kek_ids = ?done.unopenable_keks,
            configured = ?keks.ids().collect::<Vec<_>>(),
            "sessions' rotation keys that do not open under the configured key-encryption keys \
             were left as they were: those sessions cannot refresh"
        );
    }
    Ok(done)
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
