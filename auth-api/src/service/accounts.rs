//! Accounts: sign up, log in, change the password, and the per-account lock after consecutive
//! password failures that login and the password change share.

use super::{
    access::{self, TokenPair},
    email_verification, mfa, sessions, Error, Result,
};
use crate::{
    config::EmailVerification,
    devices::{DeviceTokens, Holder},
    domain::{AuthMethod, Email, Password},
    metrics::Metrics,
    passwords::HashError,
    state::AppState,
    store::{InsertUser, LoginReservation, PasswordChange, UserRow},
    throttle::CountOutcome,
};

/// Roles every new account starts with.
pub(super) const DEFAULT_ROLES: [&str; 1] = ["user"];

/// An account just created.
#[derive(Debug)]
pub struct NewAccount {
    /// UUID text.
    pub id: String,
    /// The normalised email.
    pub email: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// What a signup answers.
#[derive(Debug)]
pub enum SignupOutcome {
    /// `AUTH_EMAIL_VERIFICATION=off`: the account was created.
    Created(NewAccount),
    /// Verification on: a new account was created and its link mailed, or the address already
    /// had an account and its owner was told by mail; which one, on purpose, not said (the
    /// answer, and its time, are the same).
    VerificationSent {
        /// The address, normalised.
        email: String,
    },
}

/// Creates an account for `email` with `password`, which must follow the signup policy. With
/// verification off a taken email is [`Error::EmailTaken`]; with it on, a taken email answers
/// as a new one does ([`SignupOutcome::VerificationSent`]): the password is hashed either way,
/// and the mail (a link for a new account, a note to the owner of a taken address) is queued
/// after the answer.
#[tracing::instrument(skip_all, fields(user_id))]
pub async fn signup(state: &AppState, email: &str, password: &str) -> Result<SignupOutcome> {
    let email = Email::parse(email).map_err(Error::InvalidEmail)?;
    let password = Password::for_signup(password, &email, state.config.password_min_chars)?;
    let password_hash = state
        .hasher
        .hash(&password)
        .await
        .inspect_err(|e| count_shed(e, state, Metrics::signup))?;
    let now = state.clock.now();
    let user = UserRow {
        id: uuid::Uuid::new_v4().to_string(),
        email: email.as_str().to_owned(),
        password_hash,
        created_at: now,
        disabled_at: None,
        tokens_valid_after: 0,
        email_verified_at: None,
    };
    let verification = state.config.email_verification.is_on();
    let created = match state.store.insert_user(&user, &DEFAULT_ROLES).await? {
        InsertUser::Created => {
            tracing::Span::current().record("user_id", user.id.as_str());
            tracing::info!(event = "signup", "account created");
            true
        }
        InsertUser::EmailTaken => false,
    };
    if verification {
        // One answer, and one count (`/metrics` must not tell either), for both.
        state.metrics.signup("verification_sent");
        if !created {
            tracing::info!(
                event = "signup_email_taken",
                "signup with a taken email: owner told by mail"
            );
        }
        let normalised = email.as_str().to_owned();
        email_verification::after_signup(state, created.then_some(user), email);
        return Ok(SignupOutcome::VerificationSent { email: normalised });
    }
    if !created {
        state.metrics.signup("email_taken");
        return Err(Error::EmailTaken);
    }
    state.metrics.signup("created");
    Ok(SignupOutcome::Created(NewAccount {
        id: user.id,
        email: user.email,
        created_at: now,
    }))
}

/// Verifies the credentials and opens a session: [`Error::InvalidCredentials`] alike for an
/// unknown email and a wrong password (in about the same time), [`Error::AccountDisabled`] only
/// once the password is right, [`Error::Locked`] while the email is locked after consecutive
/// failures (known or not, right password or not). A success also hands out a new device
/// token. With a `device_token` that this user was given, the attempt counts against that
/// token's own lock instead of the email's ([`crate::devices`], SECURITY.md E 48); any other
/// token, one issued before the user's last password change, rehash, "logout everywhere" or
/// disable, and any token for an unknown email, counts as none. For an account with a
/// confirmed TOTP second factor a right password opens no session: [`Error::MfaRequired`]
/// carries the challenge that [`mfa::complete`] takes with a code.
#[tracing::instrument(skip_all, fields(user_id))]
pub async fn login(
    state: &AppState,
    email: &str,
    password: &str,
    device_token: Option<&str>,
) -> Result<TokenPair> {
    let raw_email = email;
    let email = Email::parse(raw_email).ok();
    let now = state.clock.now();
    let user = match &email {
        Some(email) => state.store.user_by_email(email.as_str()).await?,
        None => None,
    };
    let device_tokens = DeviceTokens::new(state.ring.keks());
    // Checked for every login that sends one, against the user's credential state as stored,
    // or when the email is unknown against nobody (the nil UUID and a dummy hash, as long as
    // an account's), so that the check's cost says nothing either.
    let device = device_token.and_then(|token| {
        let holder = match &user {
            Some(user) => Holder::of(user),
            None => Holder::nobody(),
        };
        device_tokens.recognise(token, &holder, now)
    });
    // The lock's key: the device token's own, else the normalised email, or for a malformed
    // one a bounded digest of it, so that nonsense is throttled like everything else and any
    // engine can index the key. A device login neither counts against nor clears the email's
    // streak, so the owner's logins never hand a guesser a fresh series.
    let lock_key = match &device {
        Some(device) => device.throttle_key().to_owned(),
        None => Email::throttle_key(raw_email),
    };
    // A place in the bcrypt queue first: a login shed for want of one (503) must not count as a
    // wrong password, or whoever retries an overloaded service locks themselves out.
    let checked = Password::for_login(password);
    let admission = checked
        .as_ref()
        .map(|_| state.hasher.admit())
        .transpose()
        .inspect_err(|e| count_shed(e, state, Metrics::login))?;
    let failures = match reserve_password_check(state, &lock_key, now).await {
        Ok(failures) => failures,
        Err(e) => {
            if matches!(e, Error::Locked { .. }) {
                state.metrics.login("rate_limited");
            }
            return Err(e);
        }
    };
    let verified = match (checked, admission) {
        // An unknown or malformed email still costs one bcrypt verify, against a dummy hash.
        (Some(checked), Some(admission)) => {
            let stored = user.as_ref().map(|u| u.password_hash.as_str());
            state
                .hasher
                .verify_admitted(admission, &checked, stored)
                .await?
        }
        // Longer than any password we accept: it cannot be anybody's, whoever they are.
        _ => false,
    };
    // With verification required, an unverified account's right password is answered as a
    // wrong one (and counted as such): otherwise signing up, then logging in with the password
    // one chose, would tell whether the signup made an account or met a taken address.
    let unverified = |user: &UserRow| {
        state.config.email_verification == EmailVerification::Required
            && user.email_verified_at.is_none()
    };
    let Some(user) = user.filter(|user| verified && !unverified(user)) else {
        state.metrics.login("invalid_credentials");
        tracing::info!(
            event = "login_failed",
            failures,
            device = device.is_some(),
            "wrong password"
        );
        return Err(Error::InvalidCredentials);
    };
    // A right password clears the password's streak; with a second factor it opens no
    // session, and code guesses count on the user's own code lock (`totp::code_lock_key`),
    // which only a right code clears: logging in again gives nobody fresh code guesses.
    state.store.clear_login_failures(&lock_key).await?;
    let second_factor = state
        .store
        .totp_enrolment(&user.id)
        .await?
        .is_some_and(|enrolment| enrolment.is_confirmed());
    tracing::Span::current().record("user_id", user.id.as_str());
    if user.disabled_at.is_some() {
        state.metrics.login("account_disabled");
        tracing::info!(
            event = "login_failed",
            reason = "account_disabled",
            "login to a disabled account"
        );
        return Err(Error::AccountDisabled);
    }
    if second_factor {
        // The challenge is bound to the hash stored from now on.
        let rehashed = rehash_if_weaker(state, &user, password).await;
        let user = UserRow {
            password_hash: rehashed.unwrap_or(user.password_hash),
            ..user
        };
        state.metrics.login("mfa_required");
        tracing::info!(
            event = "login_mfa_required",
            "password right; a second factor is required"
        );
        return Err(mfa::challenge(state, &user, &lock_key, now).await?);
    }
    let Some(opened) = sessions::open(state, &user, AuthMethod::Password, now).await? else {
        // The password changed, or the account was disabled, while this login checked the
        // password: no session. Which one only chooses the answer.
        if let Some(now_disabled) = state.store.user_by_id(&user.id).await? {
            if now_disabled.disabled_at.is_some()
                && now_disabled.password_hash == user.password_hash
            {
                state.metrics.login("account_disabled");
                return Err(Error::AccountDisabled);
            }
        }
        state.metrics.login("invalid_credentials");
        return Err(Error::InvalidCredentials);
    };
    let rehashed = rehash_if_weaker(state, &user, password).await;
    let session_id = opened.session_id.clone();
    let (mut tokens, user) = opened.issue(state, user, now).await?;
    // The user as of the session's creation with the hash now stored: the device token is
    // bound to both.
    let user = UserRow {
        password_hash: rehashed.unwrap_or(user.password_hash),
        ..user
    };
    tokens.device_token = Some(device_tokens.issue(&Holder::of(&user), now));
    state.metrics.login("success");
    tracing::info!(event = "login", session_id = %session_id, "session opened");
    Ok(tokens)
}

/// Asks a signed-in `user` for their `current` password again (before a password change, an
/// enrolment of a second factor: an access token alone, perhaps stolen, must not be enough),
/// throttled as a login: a device token this user was given counts the check against its own
/// lock, so an owner whose email a guesser has locked can still act from a device they used
/// before; without one, the email's lock. [`Error::WrongPassword`] when it is wrong.
pub(super) async fn check_current_password(
    state: &AppState,
    user: &UserRow,
    current: &str,
    device_token: Option<&str>,
    now: i64,
) -> Result<()> {
    let device = device_token.and_then(|token| {
        DeviceTokens::new(state.ring.keks()).recognise(token, &Holder::of(user), now)
    });
    let lock_key = device
        .as_ref()
        .map_or_else(|| user.email.clone(), |d| d.throttle_key().to_owned());
    // Admitted to the bcrypt queue before the attempt counts (see `login`).
    let current = Password::for_login(current);
    let admission = current.as_ref().map(|_| state.hasher.admit()).transpose()?;
    let failures = reserve_password_check(state, &lock_key, now).await?;
    let current_is_right = match (current, admission) {
        (Some(current), Some(admission)) => {
            state
                .hasher
                .verify_admitted(admission, &current, Some(&user.password_hash))
                .await?
        }
        _ => false,
    };
    if !current_is_right {
        tracing::info!(event = "login_failed", failures, "wrong password");
        return Err(Error::WrongPassword);
    }
    state.store.clear_login_failures(&lock_key).await?;
    Ok(())
}

/// After a successful login, replaces the user's stored hash with one at the configured cost
/// when it is weaker (a lower cost, or not `$2b$`): so that raising `AUTH_BCRYPT_COST` brings
/// every account that logs in to the dummy hash's cost (SECURITY.md E 46). The write replaces
/// only the hash this login checked; losing that race (a password change or another login came
/// first), a busy hash pool or a store error leaves the old hash and never fails the login.
/// The new hash when this call stored one (device tokens are bound to the stored hash).
async fn rehash_if_weaker(state: &AppState, user: &UserRow, password: &str) -> Option<String> {
    if !state.hasher.is_weaker_than_configured(&user.password_hash) {
        return None;
    }
    let password = Password::for_login(password)?;
    let rehashed = match state.hasher.hash(&password).await {
        Ok(hash) => hash,
        Err(e) => {
            tracing::info!(error = %e, "password not rehashed; next login will");
            return None;
        }
    };
    match state
        .store
        .rehash_password(&user.id, &user.password_hash, &rehashed)
        .await
    {
        Ok(true) => {
            tracing::info!(
                event = "password_rehashed",
                cost = state.hasher.cost(),
                "password rehashed at the configured cost"
            );
            Some(rehashed)
        }
        Ok(false) => {
            tracing::info!("password changed meanwhile; not rehashed");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot store the rehashed password");
            None
        }
    }
}

/// Changes the password of the user of `access_token` (which must validate) from `current` to
/// `new`. The current password is asked again (an access token alone, perhaps stolen, must not
/// be enough to take the account over), and wrong answers count towards the same lock as failed
/// logins. The new password follows the signup policy. With
/// `AUTH_PASSWORD_CHANGE_ENDS_OTHER_SESSIONS` every other session of the user ends; the token's
/// own lives on.
#[tracing::instrument(skip_all, fields(user_id))]
pub async fn change_password(
    state: &AppState,
    access_token: &str,
    current: &str,
    new: &str,
    device_token: Option<&str>,
) -> Result<()> {
    let verified = access::verify(state, access_token).await?;
    access::check_session(state, &verified).await?;
    let claims = &verified.typed;
    tracing::Span::current().record("user_id", claims.sub.as_str());
    let user = state
        .store
        .user_by_id(&claims.sub)
        .await?
        .ok_or_else(|| Error::InvalidToken("the user no longer exists".to_owned()))?;
    let now = state.clock.now();
    check_current_password(state, &user, current, device_token, now).await?;
    let email = Email::parse(&user.email).map_err(|e| Error::Internal(anyhow::anyhow!(e)))?;
    let new_password = Password::for_signup(new, &email, state.config.password_min_chars)?;
    let password_hash = state.hasher.hash(&new_password).await?;
    let end_others = state
        .config
        .password_change_ends_other_sessions
        .then(|| state.revoke_at());
    let outcome = state
        .store
        .change_password(
            &user.id,
            &user.password_hash,
            &password_hash,
            &claims.sid,
            end_others,
        )
        .await?;
    match outcome {
        PasswordChange::Changed {
            other_sessions_ended,
        } => {
            tracing::info!(
                event = "password_changed",
                other_sessions_ended,
                "password changed"
            );
            // The guesses counted so far were against the old password: the email's streak,
            // and its lock, start over (SECURITY.md E 50). The password is changed either way.
            if let Err(e) = state.store.clear_login_failures(&user.email).await {
                tracing::warn!(error = %e, "password changed; the email's failures not cleared");
            }
            Ok(())
        }
        // Another change came first: the current password given is no longer the password.
        PasswordChange::Conflict => Err(Error::WrongPassword),
        PasswordChange::SessionEnded => {
            Err(Error::InvalidToken("the session has ended".to_owned()))
        }
    }
}

/// Reserves one password check for the account `key` (a normalised email) and returns the
/// consecutive failures counting it: [`Error::Locked`] while the key is locked after
/// consecutive failures, so that no password is checked then, right or wrong, for a known
/// email or not. The attempt is counted as a failure before the check, and the lock it earns
/// once the free attempts are used up is set in the same write, so concurrent guesses cannot
/// all pass the check first; a right password clears the count. Login and the password change
/// share one counter, so a stolen access token does not open a second guessing channel.
pub(super) async fn reserve_password_check(state: &AppState, key: &str, now: i64) -> Result<i64> {
    let throttle = state.login_throttle;
    let reservation = state
        .store
        .reserve_login_attempt(key, now, |failures| throttle.delay_after(failures))
        .await?;
    match reservation {
        LoginReservation::Locked { until } => {
            tracing::info!(event = "login_throttled", "password attempt during a lock");
            let retry_after_secs = u64::try_from(until.saturating_sub(now)).unwrap_or(u64::MAX);
            Err(Error::Locked { retry_after_secs })
        }
        LoginReservation::Granted {
            failures,
            locked_until,
        } => {
            if let Some(until) = locked_until {
                tracing::warn!(
                    event = "login_locked",
                    failures,
                    delay_secs = until.saturating_sub(now),
                    "consecutive password failures: locked"
                );
            }
            Ok(failures)
        }
    }
}

/// Counts a hash refused because the bcrypt queue was full (`503 overloaded`) as `overloaded`
/// among the endpoint's outcomes: the shed logins and signups of the dashboard and alerts.
fn count_shed(error: &HashError, state: &AppState, outcomes: CountOutcome) {
    if matches!(error, HashError::Overloaded) {
        outcomes(&state.metrics, "overloaded");
    }
}
