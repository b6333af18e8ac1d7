//! Sessions after login: refresh-token rotation with reuse detection, and logout.

use std::collections::BTreeSet;

use serde::Deserialize;
use zeroize::Zeroizing;

use super::{
    access::{self, Grant, TokenPair},
    Error, Result,
};
use crate::{
    domain::AuthMethod,
    kek::KeyEncryptionKeys,
    state::AppState,
    store::{NewSession, RefreshLookup, RotationKeyAtRest, SessionRow, Store, UserRow},
    tokens::{new_rotation_key, RefreshToken},
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
        let successor = token.successor(&rotation_key_to_rotate(state, &session).await?);
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
            // The winner derived it with the key now stored; only a key replaced between the
            // two reads (a start re-sealing meanwhile) derives another one, which is not the
            // live token: refused, and a retry meets the grace path below.
            if token
                .successor(&open_as_stored(state, &current)?.key)
                .hash()
                != successor.hash()
            {
                return Err(Rejected::Invalid("rotation key replaced meanwhile"));
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
        // The client retried (lost response, two tabs): answer with the live token again. With
        // the key as stored, never replaced here: the live token was derived with it. Unless a
        // re-seal replaced it since (SECURITY.md I 100): then what it derives is not the live
        // token, and the retry is refused like an unknown token (the session lives on).
        let successor = token.successor(&open_as_stored(state, &session)?.key);
        let live = state
            .store
            .find_refresh_token(&successor.hash())
            .await?
            .is_some_and(|found| {
                found.session.id == session.id && found.token_generation == session.generation
            });
        if !live {
            return Err(Rejected::Invalid(
                "rotation key replaced since the rotation",
            ));
        }
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

/// A session's rotation key as stored, opened.
struct Opened {
    key: Zeroizing<Vec<u8>>,
    /// Where it was not under the current KEK: `plaintext` or the KEK's id.
    stale: Option<String>,
}

/// The rotation key of `session` as stored, opened (SECURITY.md I 100), without replacing it.
///
/// A key that does not open — under a KEK this replica is not given, or altered, or moved from
/// another session (the associated data is the session id) — refuses the refresh as
/// `invalid_grant`, and is logged by session and KEK id (never a byte of it). The session is not
/// revoked: a replica started without one of the KEKs must not end every session it meets.
fn open_as_stored(state: &AppState, session: &SessionRow) -> Result<Opened, Rejected> {
    let keks = state.ring.keks();
    match session.rotation_key_at_rest() {
        RotationKeyAtRest::Sealed(sealed) => match keks.open_rotation_key(&session.id, &sealed) {
            Ok(key) => Ok(Opened {
                key,
                stale: (sealed.kek_id != keks.current_id()).then_some(sealed.kek_id),
            }),
            Err(e) => {
                tracing::error!(
                    event = "rotation_key_unopenable",
                    session_id = %session.id,
                    kek_id = %sealed.kek_id,
                    error = %e,
                    "the session's rotation key does not open: refresh refused"
                );
                Err(Rejected::Invalid("rotation key does not open"))
            }
        },
        RotationKeyAtRest::Clear(key) => Ok(Opened {
            key: Zeroizing::new(key.to_vec()),
            stale: Some("plaintext".to_owned()),
        }),
    }
}

/// The rotation key that derives the successor of `session`'s live token.
///
/// A key in the clear (written before issue 10, or by a replica of an earlier version during a
/// rolling upgrade) or under an older KEK is not re-sealed but replaced: a new random key,
/// sealed under the current KEK, derives this successor and every later one, so that a dump
/// holding the old key (in the clear, or under a KEK that leaks later) plus an old refresh
/// token derives nothing live (SECURITY.md I 100). The successor is computed and stored at
/// rotation, so any key will do for the live token. The start already replaced every row it
/// found ([`reseal_rotation_keys`]); this catches the rows written since. Of two replacing at
/// once, the first wins and the other uses its key. Accepting a key in the clear lets nobody in
/// who could not get in anyway: whoever can write one into the database can as well write the
/// hash of a refresh token of their own.
async fn rotation_key_to_rotate(
    state: &AppState,
    session: &SessionRow,
) -> Result<Zeroizing<Vec<u8>>, Rejected> {
    let opened = open_as_stored(state, session)?;
    let Some(from) = opened.stale else {
        return Ok(opened.key);
    };
    let keks = state.ring.keks();
    let fresh = new_rotation_key();
    let sealed = keks
        .seal_rotation_key(&session.id, &fresh)
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
            "rotation key replaced by a new one under the current key-encryption key"
        );
        return Ok(fresh);
    }
    // Another refresh or a start replaced it first: its key is the one.
    let current = state
        .store
        .session(&session.id)
        .await?
        .ok_or(Rejected::Invalid("session gone"))?;
    Ok(open_as_stored(state, &current)?.key)
}

/// What [`reseal_rotation_keys`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RotationKeyReseal {
    /// Rows given a new key under the current KEK (in the clear or under an older one before).
    pub resealed: u64,
    /// Rows left as they were because they do not open under the configured KEKs; their
    /// sessions cannot refresh (users log in again).
    pub unopenable: u64,
    /// The KEK ids those rows name.
    pub unopenable_keks: BTreeSet<String>,
}

/// Rows read and re-sealed per transaction by [`reseal_rotation_keys`].
const RESEAL_BATCH: i64 = 500;

/// Replaces by a new random key sealed under the current KEK every session's rotation key that
/// is in the clear (written before issue 10) or sealed under another KEK (after a KEK
/// rotation): at every start and by every `auth-api keys` command, as [`crate::keyring`] does
/// with the signing keys.
///
/// A new key, not the old one sealed again: a dump taken before (with the key in the clear) or
/// a leak of the old KEK plus an old refresh token would otherwise still derive the live
/// successor for the rest of the session's life. The live token stays valid (its successor is
/// derived from it with the new key at its next refresh); the only loss is the grace-window
/// retry of its predecessor, for a session refreshed less than `AUTH_REFRESH_REUSE_GRACE_SECS`
/// before: it is refused as `invalid_grant` and the session lives on ([`refresh`]).
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
            // A row under a KEK that is not configured is left as it was: that KEK may only be
            // missing here, and replacing the key would end the session for every replica.
            if let RotationKeyAtRest::Sealed(sealed) =
                RotationKeyAtRest::of(&column, kek_id.as_deref())
            {
                if keks.open_rotation_key(&session_id, &sealed).is_err() {
                    done.unopenable += 1;
                    done.unopenable_keks.insert(sealed.kek_id);
                    continue;
                }
            }
            let sealed = keks.seal_rotation_key(&session_id, &new_rotation_key())?;
            updates.push((session_id, column, sealed));
        }
        done.resealed += store.reseal_rotation_keys(&updates).await?;
    }
    if done.resealed > 0 {
        tracing::info!(
            event = "rotation_keys_resealed",
            count = done.resealed,
            to = keks.current_id(),
            "sessions' rotation keys replaced by new ones under the current key-encryption key"
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

/// A session just opened for a user, with its first refresh token.
#[derive(Debug)]
pub(super) struct OpenedSession {
    /// UUID text.
    pub session_id: String,
    /// The session's absolute end, Unix seconds.
    pub expires_at: i64,
    /// Its generation-0 refresh token.
    pub refresh: RefreshToken,
    /// The user's `tokens_valid_after` as the session was created.
    pub tokens_valid_after: i64,
    /// How the user authenticated.
    pub auth_method: AuthMethod,
}

impl OpenedSession {
    /// The session's first pair, for `user` as read before [`open`]; also that user as of the
    /// session's creation (a "revoke everything" meanwhile moved its `tokens_valid_after`),
    /// which a login binds its device token to.
    pub(super) async fn issue(
        self,
        state: &AppState,
        user: UserRow,
        now: i64,
    ) -> Result<(TokenPair, UserRow)> {
        let user = UserRow {
            tokens_valid_after: self.tokens_valid_after,
            ..user
        };
        let grant = Grant {
            user: &user,
            session_id: &self.session_id,
            session_expires_at: self.expires_at,
            refresh: self.refresh,
            refresh_issued_at: now,
            auth_method: self.auth_method,
        };
        let tokens = access::issue(state, grant, now).await?;
        Ok((tokens, user))
    }
}

/// Opens a session for `user` (as read, with the password hash the caller's check relied on)
/// that `method` authenticated: `None`, and nothing written, when the user's password changed
/// or the account was disabled since it was read. What a password login and an external
/// sign-in's code exchange share.
pub(super) async fn open(
    state: &AppState,
    user: &UserRow,
    method: AuthMethod,
    now: i64,
) -> Result<Option<OpenedSession>> {
    let refresh = RefreshToken::generate();
    let session_id = uuid::Uuid::new_v4().to_string();
    // Sealed for this session: the database alone never holds it (SECURITY.md I 100).
    let rotation_key = state
        .ring
        .keks()
        .seal_rotation_key(&session_id, &new_rotation_key())
        .map_err(Error::Internal)?;
    let session = NewSession {
        id: session_id,
        user_id: user.id.clone(),
        created_at: now,
        expires_at: now.saturating_add(state.lifetimes.session_secs),
        rotation_key,
        first_token_hash: refresh.hash(),
        auth_method: method,
    };
    let created = state
        .store
        .create_session(&session, &user.password_hash)
        .await?;
    Ok(created.map(|tokens_valid_after| OpenedSession {
        session_id: session.id,
        expires_at: session.expires_at,
        refresh,
        tokens_valid_after,
        auth_method: method,
    }))
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
    // Only a later version writes a method this one does not know (a rolling downgrade):
    // no token that would misstate it.
    let auth_method = session.auth_method().ok_or_else(|| {
        Error::Internal(anyhow::anyhow!(
            "session {} has an authentication method this version does not know: {:?}",
            session.id,
            session.auth_method
        ))
    })?;
    let grant = Grant {
        user: &user,
        session_id: &session.id,
        session_expires_at: session.expires_at,
        refresh,
        refresh_issued_at,
        auth_method,
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
