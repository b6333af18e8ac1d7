//! `POST /refresh` and `POST /logout`: refresh-token rotation, reuse detection, revocation.

use axum::{
    body::Bytes,
    extract::{
        rejection::{BytesRejection, QueryRejection},
        Query, State,
    },
    http::{header, HeaderMap, StatusCode},
    response::Response,
};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::accounts::token_reply;
use crate::{
    clock::secs,
    error::{ApiError, ErrorBody, Result},
    extract::{bearer_token, Json},
    state::{AppState, TokenResponse},
    store::RefreshLookup,
    tokens::RefreshToken,
};

/// `{"refresh_token"}`; deliberately without `Debug`.
#[derive(Deserialize, ToSchema)]
pub(super) struct RefreshRequest {
    refresh_token: String,
}

/// `{"refresh_token"?, "all"?}`, or nothing when a bearer token is sent. `"all": true` is
/// `?scope=all`.
#[derive(Default, Deserialize, ToSchema)]
pub(super) struct LogoutRequest {
    refresh_token: Option<String>,
    #[serde(default)]
    all: bool,
}

/// Which sessions a logout ends, in GoTrue's vocabulary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogoutScope {
    /// The session of the presented token.
    #[default]
    Local,
    /// Every session of the user (GoTrue's `global` is accepted too).
    #[serde(alias = "global")]
    All,
    /// Every session of the user except the presented token's.
    Others,
}

/// `?scope=local|all|others`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct LogoutQuery {
    /// `local` (default): this session; `all` (or `global`): every session of the user;
    /// `others`: every session but this one.
    scope: Option<LogoutScope>,
}

/// The scope asked for by the query and the body, which must agree.
fn logout_scope(
    query: Result<Query<LogoutQuery>, QueryRejection>,
    body: &LogoutRequest,
) -> Result<LogoutScope> {
    let Query(query) = query.map_err(|_| {
        ApiError::InvalidRequest("scope must be one of local, all, others".to_owned())
    })?;
    match (query.scope, body.all) {
        (None, all) => Ok(if all {
            LogoutScope::All
        } else {
            LogoutScope::Local
        }),
        (Some(scope), false) | (Some(scope @ LogoutScope::All), true) => Ok(scope),
        (Some(_), true) => Err(ApiError::InvalidRequest(
            "\"all\": true contradicts the scope asked for".to_owned(),
        )),
    }
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

/// Rotates a refresh token: 200 with a new pair, or 401 `invalid_grant`.
///
/// The live token rotates to its successor (one conditional update: of concurrent rotations
/// one wins, the others see the new generation and answer with the same successor). Its
/// immediate predecessor, inside `AUTH_REFRESH_REUSE_GRACE_SECS`, answers with the live token
/// again; any other reuse revokes the session.
#[utoipa::path(post, path = "/refresh", request_body = RefreshRequest, responses(
    (status = 200, description = "a new pair, with a new refresh token", body = TokenResponse),
    (status = 400, description = "malformed JSON or a missing field", body = ErrorBody),
    (status = 401, description = "invalid_grant", body = ErrorBody),
    (status = 413, description = "body over 64 KiB", body = ErrorBody),
    (status = 415, description = "not application/json", body = ErrorBody),
    (status = 429, description = "too many attempts", body = ErrorBody, headers(("retry-after" = u64, description = "seconds to wait"))),
))]
#[tracing::instrument(skip_all, fields(session_id))]
pub(super) async fn refresh(
    State(state): State<AppState>,
    Json(body): Json<RefreshRequest>,
) -> Result<Response> {
    let outcome = rotate(&state, &body.refresh_token).await;
    state.metrics.refresh(match &outcome {
        Ok(_) => "success",
        Err(Rejected::Reused) => "reuse_detected",
        Err(Rejected::Invalid(_)) => "invalid_grant",
        Err(Rejected::Error(_)) => "error",
    });
    match outcome {
        Ok(response) => Ok(response),
        Err(Rejected::Invalid(reason)) => {
            tracing::info!(event = "refresh_failed", reason, "refresh refused");
            Err(ApiError::InvalidGrant)
        }
        Err(Rejected::Reused) => Err(ApiError::InvalidGrant),
        Err(Rejected::Error(e)) => Err(e),
    }
}

enum Rejected {
    Invalid(&'static str),
    Reused,
    Error(ApiError),
}

impl<E: Into<ApiError>> From<E> for Rejected {
    fn from(err: E) -> Self {
        Self::Error(err.into())
    }
}

async fn rotate(state: &AppState, presented: &str) -> Result<Response, Rejected> {
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
    let config = &state.config;
    if found.token_generation == session.generation {
        if now
            >= session
                .refreshed_at
                .saturating_add(secs(config.session_idle_timeout))
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
            return Ok(token_reply(
                state
                    .token_response(&current, &successor, current.refreshed_at, now)
                    .await?,
            ));
        }
        return Ok(token_reply(
            state.token_response(&session, &successor, now, now).await?,
        ));
    }
    let grace_ends = session
        .refreshed_at
        .saturating_add(secs(config.refresh_reuse_grace));
    if found.token_generation + 1 == session.generation && now < grace_ends {
        // The client retried (lost response, two tabs): answer with the live token again.
        return Ok(token_reply(
            state
                .token_response(&session, &successor, session.refreshed_at, now)
                .await?,
        ));
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

/// Ends the session of a refresh token or of a bearer access token; with `?scope=all` (or
/// `"all": true`) every session of the user, with `?scope=others` every other one. 204, also
/// for tokens already revoked or unknown (RFC 7009 §2.2); 400 with neither token or an
/// unknown scope; 401 for a bearer token that does not verify.
#[utoipa::path(post, path = "/logout", params(LogoutQuery), request_body(content = Option<LogoutRequest>, description = "empty when a bearer token is sent"), responses(
    (status = 204, description = "logged out (also for unknown or already revoked tokens)"),
    (status = 400, description = "neither a refresh token nor a bearer token, an unknown scope, or malformed JSON", body = ErrorBody),
    (status = 401, description = "a bearer token that does not verify", body = ErrorBody),
    (status = 413, description = "body over 64 KiB", body = ErrorBody),
    (status = 415, description = "not application/json", body = ErrorBody),
), security((), ("bearer" = [])))]
#[tracing::instrument(skip_all, fields(user_id))]
pub(super) async fn logout(
    State(state): State<AppState>,
    query: Result<Query<LogoutQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode> {
    let request = optional_json_body(&headers, body)?;
    let scope = logout_scope(query, &request)?;
    if let Some(token) = bearer_token(&headers)? {
        let verified = state.verify_access_token(token).await?;
        let claims = &verified.typed;
        tracing::Span::current().record("user_id", claims.sub.as_str());
        // Only a token `/validate` would accept ends sessions: one of an already ended session
        // changes nothing (logout is idempotent) and above all cannot end every other session.
        if state.check_session(&verified).await.is_ok() {
            end_sessions(&state, scope, &claims.sub, &claims.sid).await?;
        }
        return Ok(StatusCode::NO_CONTENT);
    }
    let Some(presented) = request.refresh_token else {
        return Err(ApiError::InvalidRequest(
            "send {\"refresh_token\"} or an Authorization: Bearer access token".to_owned(),
        ));
    };
    let found = match RefreshToken::parse(&presented) {
        Some(token) => state.store.find_refresh_token(&token.hash()).await?,
        None => None,
    };
    let Some(found) = found else {
        return Ok(StatusCode::NO_CONTENT);
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
            secs(state.config.refresh_reuse_grace),
        );
    if allowed {
        end_sessions(&state, scope, &found.session.user_id, &found.session.id).await?;
    }
    Ok(StatusCode::NO_CONTENT)
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

/// The logout body: empty is allowed (bearer logout); otherwise JSON as everywhere else.
fn optional_json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<LogoutRequest> {
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        _ => ApiError::InvalidRequest(rejection.body_text()),
    })?;
    if body.is_empty() {
        return Ok(LogoutRequest::default());
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim();
            mime.eq_ignore_ascii_case("application/json")
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        });
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidRequest(format!("invalid JSON body: {e}")))
}
