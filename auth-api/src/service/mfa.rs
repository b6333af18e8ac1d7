//! The second step of a login to an account with a TOTP second factor (issue 15).
//!
//! A right password for such an account opens no session: `login` answers
//! [`Error::MfaRequired`] with a challenge, the `mfa_token` (256 random bits, five minutes,
//! only its SHA-256 stored), and [`complete`] takes it with a TOTP code or a recovery code.
//! The challenge is bound to its user and to the credential state the password was checked
//! against: a password change, a rehash or a "logout everywhere" in between voids it.
//!
//! Throttling: the password's attempt is not cleared by a right password here, only once the
//! second factor is right too; every code tried reserves one more attempt on the same lock
//! (the email's, or the device token's the login sent). So whoever knows the password gets the
//! lock's few free guesses at codes and then waits, doubling, as for passwords, and logging in
//! again does not hand out a fresh series.

use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use super::{
    access::TokenPair,
    accounts::reserve_password_check,
    sessions,
    totp::code_lock_key,
    totp::{check_second_factor, SecondFactor},
    Error, Result,
};
use crate::{
    devices::{DeviceTokens, Holder},
    domain::AuthMethod,
    oidc::pkce,
    state::AppState,
    store::{MfaChallenge, UserRow},
};

/// How long an `mfa_token` can be used: the time to open an authenticator app and type a code.
pub const MFA_CHALLENGE_TTL_SECS: i64 = 5 * 60;

/// Longest `mfa_token` looked up; ours are 43 characters.
const MAX_MFA_TOKEN_LEN: usize = 64;

/// The digest of a stored password hash that a challenge is bound to.
fn password_digest(user: &UserRow) -> Vec<u8> {
    Sha256::digest(user.password_hash.as_bytes()).to_vec()
}

/// Issues a challenge for `user`, whose password was just verified under the login lock
/// `lock_key`: the [`Error::MfaRequired`] that `login` answers.
pub(super) async fn challenge(
    state: &AppState,
    user: &UserRow,
    lock_key: &str,
    now: i64,
) -> Result<Error> {
    let token = pkce::random_secret();
    let challenge = MfaChallenge {
        token_hash: pkce::sha256(token.expose_secret()).to_vec(),
        user_id: user.id.clone(),
        password_digest: password_digest(user),
        tokens_valid_after: user.tokens_valid_after,
        lock_key: lock_key.to_owned(),
        created_at: now,
        expires_at: now.saturating_add(MFA_CHALLENGE_TTL_SECS),
    };
    state.store.insert_mfa_challenge(&challenge).await?;
    Ok(Error::MfaRequired { mfa_token: token })
}

/// Completes a login with the challenge `mfa_token` and a second `factor`: the session (with
/// `amr` `["pwd","otp"]`), its tokens and a new device token, as a login answers.
/// [`Error::InvalidMfaToken`] for a challenge that is unknown, expired, used, or voided by a
/// credential change; [`Error::Locked`] while its lock is; [`Error::InvalidCode`] for a wrong,
/// malformed or used code, counted on the lock; [`Error::AccountDisabled`] for an account
/// disabled since the password.
#[tracing::instrument(skip_all, fields(user_id))]
pub async fn complete(
    state: &AppState,
    mfa_token: &str,
    factor: SecondFactor<'_>,
) -> Result<TokenPair> {
    let now = state.clock.now();
    let is_ours = (1..=MAX_MFA_TOKEN_LEN).contains(&mfa_token.len())
        && mfa_token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !is_ours {
        return Err(Error::InvalidMfaToken);
    }
    let token_hash = pkce::sha256(mfa_token);
    let challenge = state
        .store
        .mfa_challenge(&token_hash, now)
        .await?
        .ok_or(Error::InvalidMfaToken)?;
    tracing::Span::current().record("user_id", challenge.user_id.as_str());
    let user = state.store.user_by_id(&challenge.user_id).await?;
    let Some(user) = user.filter(|user| {
        password_digest(user) == challenge.password_digest
            && user.tokens_valid_after == challenge.tokens_valid_after
    }) else {
        // It can never succeed now: gone, so that it is not tried again.
        state.store.delete_mfa_challenge(&token_hash).await?;
        tracing::info!(
            event = "login_failed",
            reason = "mfa_token_voided",
            "credentials changed since the password"
        );
        return Err(Error::InvalidMfaToken);
    };
    if user.disabled_at.is_some() {
        state.store.delete_mfa_challenge(&token_hash).await?;
        state.metrics.login("account_disabled");
        return Err(Error::AccountDisabled);
    }
    let Some(enrolment) = state
        .store
        .totp_enrolment(&user.id)
        .await?
        .filter(|e| e.is_confirmed())
    else {
        // The factor was disabled meanwhile: the password alone is a login now; log in again.
        state.store.delete_mfa_challenge(&token_hash).await?;
        return Err(Error::InvalidMfaToken);
    };
    let code_lock = code_lock_key(&user.id);
    let failures = match reserve_password_check(state, &code_lock, now).await {
        Ok(failures) => failures,
        Err(e) => {
            if matches!(e, Error::Locked { .. }) {
                state.metrics.login("rate_limited");
            }
            return Err(e);
        }
    };
    if !check_second_factor(state, &enrolment, factor, now).await? {
        state.metrics.login("invalid_code");
        tracing::info!(
            event = "login_failed",
            failures,
            reason = "invalid_code",
            "wrong second factor"
        );
        return Err(Error::InvalidCode);
    }
    if !state.store.take_mfa_challenge(&token_hash, now).await? {
        // Another request completed this challenge first.
        return Err(Error::InvalidMfaToken);
    }
    state.store.clear_login_failures(&code_lock).await?;
    let Some(opened) = sessions::open(state, &user, AuthMethod::PasswordAndTotp, now).await? else {
        // The password changed, or the account was disabled, since the checks above.
        state.metrics.login("invalid_credentials");
        return Err(Error::InvalidMfaToken);
    };
    let session_id = opened.session_id.clone();
    let (mut tokens, user) = opened.issue(state, user, now).await?;
    tokens.device_token = Some(DeviceTokens::new(state.ring.keks()).issue(&Holder::of(&user), now));
    state.metrics.login("success");
    tracing::info!(event = "login", session_id = %session_id, mfa = true, "session opened");
    Ok(tokens)
}
