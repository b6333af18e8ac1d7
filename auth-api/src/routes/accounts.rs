//! `POST /signup` and `POST /login`.

use axum::{
    extract::State,
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    domain::{Email, Password},
    error::{ApiError, ErrorBody, Result},
    extract::Json,
    state::{AppState, TokenResponse},
    store::{InsertUser, NewSession, UserRow},
    tokens::{new_rotation_key, RefreshToken},
};

/// Roles every new account starts with.
const DEFAULT_ROLES: [&str; 1] = ["user"];

/// `{"email", "password"}`; deliberately without `Debug`, so it cannot be logged.
#[derive(Deserialize, ToSchema)]
pub(super) struct Credentials {
    email: String,
    password: String,
}

#[derive(Serialize, ToSchema)]
pub(super) struct SignupResponse {
    id: String,
    email: String,
    created_at: String,
}

/// Creates an account: 201, 409 `email_taken`, 422 `invalid_email` / `weak_password` /
/// `password_too_long`.
#[utoipa::path(post, path = "/signup", request_body = Credentials, responses(
    (status = 201, description = "account created", body = SignupResponse),
    (status = 400, description = "malformed JSON or a missing field", body = ErrorBody),
    (status = 409, description = "email_taken", body = ErrorBody),
    (status = 413, description = "body over 64 KiB", body = ErrorBody),
    (status = 415, description = "not application/json", body = ErrorBody),
    (status = 422, description = "invalid_email, weak_password (with reason), password_too_long", body = ErrorBody),
    (status = 429, description = "too many attempts", body = ErrorBody, headers(("retry-after" = u64, description = "seconds to wait"))),
    (status = 503, description = "password hashing is saturated", body = ErrorBody),
))]
#[tracing::instrument(skip_all, fields(user_id))]
pub(super) async fn signup(
    State(state): State<AppState>,
    Json(body): Json<Credentials>,
) -> Result<(StatusCode, axum::Json<SignupResponse>)> {
    let email = Email::parse(&body.email).map_err(ApiError::InvalidEmail)?;
    let password = Password::for_signup(&body.password, &email, state.config.password_min_chars)?;
    let password_hash = state.hasher.hash(&password).await?;
    let now = state.clock.now();
    let user = UserRow {
        id: uuid::Uuid::new_v4().to_string(),
        email: email.as_str().to_owned(),
        password_hash,
        created_at: now,
        disabled_at: None,
        tokens_valid_after: 0,
    };
    match state.store.insert_user(&user, &DEFAULT_ROLES).await? {
        InsertUser::Created => {
            tracing::Span::current().record("user_id", user.id.as_str());
            tracing::info!(event = "signup", "account created");
            state.metrics.signup("created");
            let created_at = rfc3339(now)?;
            Ok((
                StatusCode::CREATED,
                axum::Json(SignupResponse {
                    id: user.id,
                    email: user.email,
                    created_at,
                }),
            ))
        }
        InsertUser::EmailTaken => {
            state.metrics.signup("email_taken");
            Err(ApiError::EmailTaken)
        }
    }
}

/// Verifies the credentials and opens a session: 200 with tokens, 401 `invalid_credentials`
/// (the same for an unknown email and a wrong password, in about the same time), 403
/// `account_disabled` (only once the password is right), 429 `rate_limited` while the email is
/// locked after consecutive failures (known or not, right password or not).
#[utoipa::path(post, path = "/login", request_body = Credentials, responses(
    (status = 200, description = "a session", body = TokenResponse),
    (status = 400, description = "malformed JSON or a missing field", body = ErrorBody),
    (status = 401, description = "invalid_credentials", body = ErrorBody),
    (status = 403, description = "account_disabled", body = ErrorBody),
    (status = 413, description = "body over 64 KiB", body = ErrorBody),
    (status = 415, description = "not application/json", body = ErrorBody),
    (status = 429, description = "too many attempts", body = ErrorBody, headers(("retry-after" = u64, description = "seconds to wait"))),
    (status = 503, description = "password hashing is saturated", body = ErrorBody),
))]
#[tracing::instrument(skip_all, fields(user_id))]
pub(super) async fn login(
    State(state): State<AppState>,
    Json(body): Json<Credentials>,
) -> Result<Response> {
    let email = Email::parse(&body.email).ok();
    // The throttle's key: the normalised email, or for a malformed one its trimmed lower-case
    // text, so that nonsense is throttled like everything else.
    let throttle_key = email.as_ref().map_or_else(
        || body.email.trim().to_lowercase(),
        |e| e.as_str().to_owned(),
    );
    let now = state.clock.now();
    if let Err(locked) = refuse_while_locked(&state, &throttle_key, now).await {
        state.metrics.login("rate_limited");
        return Err(locked);
    }
    let user = match &email {
        Some(email) => state.store.user_by_email(email.as_str()).await?,
        None => None,
    };
    let verified = match Password::for_login(&body.password) {
        // An unknown or malformed email still costs one bcrypt verify, against a dummy hash.
        Some(password) => {
            state
                .hasher
                .verify(&password, user.as_ref().map(|u| u.password_hash.as_str()))
                .await?
        }
        // Longer than any password we accept: it cannot be anybody's, whoever they are.
        None => false,
    };
    let Some(user) = user.filter(|_| verified) else {
        state.metrics.login("invalid_credentials");
        count_password_failure(&state, &throttle_key, now).await?;
        return Err(ApiError::InvalidCredentials);
    };
    state.store.clear_login_failures(&throttle_key).await?;
    tracing::Span::current().record("user_id", user.id.as_str());
    if user.disabled_at.is_some() {
        state.metrics.login("account_disabled");
        tracing::info!(
            event = "login_failed",
            reason = "account_disabled",
            "login to a disabled account"
        );
        return Err(ApiError::AccountDisabled);
    }
    let refresh = RefreshToken::generate();
    let session = NewSession {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: user.id.clone(),
        created_at: now,
        expires_at: now.saturating_add(crate::clock::secs(state.config.session_ttl)),
        rotation_key: new_rotation_key(),
        first_token_hash: refresh.hash(),
    };
    if !state
        .store
        .create_session(&session, &user.password_hash)
        .await?
    {
        // The password changed while this login checked the old one.
        state.metrics.login("invalid_credentials");
        return Err(ApiError::InvalidCredentials);
    }
    let row = state
        .store
        .session(&session.id)
        .await?
        .ok_or(ApiError::InvalidCredentials)?;
    let tokens = state.token_response(&row, &refresh, now, now).await?;
    state.metrics.login("success");
    tracing::info!(event = "login", session_id = %session.id, "session opened");
    Ok(token_reply(tokens))
}

/// 429 while the account `key` (a normalised email) is locked after consecutive password
/// failures. No password is checked while locked, right or wrong, for a known email or not.
pub(super) async fn refuse_while_locked(state: &AppState, key: &str, now: i64) -> Result<()> {
    match state.store.login_locked_until(key).await? {
        Some(until) if until > now => {
            tracing::info!(event = "login_throttled", "password attempt during a lock");
            let retry_after_secs = u64::try_from(until - now).unwrap_or(u64::MAX);
            Err(ApiError::RateLimited { retry_after_secs })
        }
        _ => Ok(()),
    }
}

/// Counts a wrong password for the account `key`, locking it once the free attempts are used
/// up: login and the password change share one counter, so a stolen access token does not
/// open a second guessing channel.
pub(super) async fn count_password_failure(state: &AppState, key: &str, now: i64) -> Result<()> {
    let failures = state.store.record_login_failure(key, now).await?;
    if let Some(delay) = state.login_throttle.delay_after(failures) {
        state
            .store
            .lock_login(key, now.saturating_add(delay))
            .await?;
        tracing::warn!(
            event = "login_locked",
            failures,
            delay_secs = delay,
            "consecutive password failures: locked"
        );
    }
    tracing::info!(event = "login_failed", failures, "wrong password");
    Ok(())
}

/// 200 with the token body and the RFC 6749 §5.1 no-cache headers.
pub(super) fn token_reply(tokens: crate::state::TokenResponse) -> Response {
    let mut response = axum::Json(tokens).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn rfc3339(unix: i64) -> Result<String> {
    let at = time::OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|e| ApiError::Internal(e.into()))?;
    at.format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| ApiError::Internal(e.into()))
}
