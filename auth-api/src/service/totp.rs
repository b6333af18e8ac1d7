//! The TOTP second factor (issue 15): enrolment by a signed-in user (start, confirm with a
//! first code, disable with a code), what every start does (keep the stored secrets under the
//! current key-encryption key), and checking a code or a recovery code for the second step of
//! a login (`service::mfa`). Codes are throttled like passwords: every check reserves an
//! attempt on the same lock (`accounts::reserve_password_check`), so a stolen access token
//! or a known password is no second guessing channel.

use secrecy::SecretString;

use super::{access, accounts::reserve_password_check, Error, Result};
use crate::{
    domain::{otpauth_qr_svg, Email, RecoveryCode, TotpCode, TotpIssuer, TotpSecret},
    kek::KeyEncryptionKeys,
    state::AppState,
    store::{BeginTotp, Store, TotpEnrolment, UserRow},
};

/// How long an enrolment waits for its first code: the time to scan a QR code and type a code,
/// with room to spare. An older one is not confirmable (start again), so a secret shown on a
/// page left open is not turned into a second factor hours later by whoever finds it.
pub const ENROLMENT_TTL_SECS: i64 = 10 * 60;

/// The issuer shown in authenticator apps when the configured issuer URL has no host that can
/// be one. (A setting of its own, `AUTH_TOTP_ISSUER`, would be the operator's choice; see the
/// lead's notes.)
const FALLBACK_TOTP_ISSUER: &str = "auth-service";

/// What a started enrolment shows the user, once (`Debug` redacts every field).
#[derive(Debug)]
pub struct TotpEnrolmentStarted {
    /// The secret in base32, for typing into an app.
    pub secret: SecretString,
    /// The `otpauth://totp/…` URI.
    pub otpauth_uri: SecretString,
    /// The URI as a QR code: one inline `<svg>` element.
    pub qr_svg: SecretString,
}

/// A second factor presented by the user: a TOTP code or a recovery code, as typed.
#[derive(Clone, Copy)]
pub enum SecondFactor<'a> {
    /// Six digits from the authenticator app.
    Code(&'a str),
    /// One of the recovery codes shown at confirmation.
    RecoveryCode(&'a str),
    /// Either: a TOTP code when it parses as one, else a recovery code (`/totp/disable`).
    Either(&'a str),
}

impl std::fmt::Debug for SecondFactor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Code(_) => "Code([REDACTED])",
            Self::RecoveryCode(_) => "RecoveryCode([REDACTED])",
            Self::Either(_) => "Either([REDACTED])",
        })
    }
}

/// The key of a user's own lock on second-factor codes (in `login_attempts`, beside the
/// emails' and device tokens' password locks, with the same schedule). Every code tried, at
/// `/login/mfa`, `/totp/confirm` or `/totp/disable`, reserves an attempt on it, and only a
/// right code clears it: not a right password (at `/login` or `/password`), not another
/// device token, so nothing resets or multiplies the guesses at a user's codes. Not an
/// email (no `@`), not a digest: no other key can take this form.
pub(super) fn code_lock_key(user_id: &str) -> String {
    format!("totp:{user_id}")
}

/// The user of a valid access token whose session is live (as `/password` checks it).
async fn signed_in_user(state: &AppState, access_token: &str) -> Result<UserRow> {
    let verified = access::verify(state, access_token).await?;
    access::check_session(state, &verified).await?;
    let user_id = &verified.typed.sub;
    tracing::Span::current().record("user_id", user_id.as_str());
    state
        .store
        .user_by_id(user_id)
        .await?
        .ok_or_else(|| Error::InvalidToken("the user no longer exists".to_owned()))
}

/// The issuer label of the `otpauth://` URI: the host of the configured issuer (a URL, whose
/// `:` would split the label), else [`FALLBACK_TOTP_ISSUER`].
fn totp_issuer(state: &AppState) -> Result<TotpIssuer> {
    url::Url::parse(&state.config.issuer)
        .ok()
        .and_then(|url| url.host_str().map(str::to_owned))
        .and_then(|host| TotpIssuer::parse(&host).ok())
        .map_or_else(|| TotpIssuer::parse(FALLBACK_TOTP_ISSUER), Ok)
        .map_err(|e| Error::Internal(anyhow::anyhow!(e)))
}

/// Starts a TOTP enrolment for the user of `access_token`, who gives their `password` again
/// (an access token alone, perhaps stolen, must not be enough to put a factor of the thief's
/// on the account and lock its owner out; checked and throttled as at `/password`): a new
/// secret, replacing one that waits for its first code; [`Error::TotpAlreadyEnabled`] once one
/// is confirmed (a second factor is changed by disabling it, which needs a code, never by
/// enrolling over it); [`Error::TotpUnavailable`] for an account without a password.
#[tracing::instrument(skip_all, fields(user_id))]
pub async fn enrol(
    state: &AppState,
    access_token: &str,
    password: &str,
) -> Result<TotpEnrolmentStarted> {
    let user = signed_in_user(state, access_token).await?;
    if !user.has_password() {
        return Err(Error::TotpUnavailable);
    }
    super::accounts::check_current_password(state, &user, password, None, state.clock.now())
        .await?;
    let account = Email::parse(&user.email).map_err(|e| Error::Internal(anyhow::anyhow!(e)))?;
    let issuer = totp_issuer(state)?;
    let secret = TotpSecret::generate();
    let sealed = state.ring.keks().seal_totp_secret(&user.id, &secret)?;
    let now = state.clock.now();
    match state
        .store
        .begin_totp_enrolment(&user.id, &sealed, now)
        .await?
    {
        BeginTotp::Started => {}
        BeginTotp::AlreadyConfirmed => return Err(Error::TotpAlreadyEnabled),
        BeginTotp::UserNotFound => {
            return Err(Error::InvalidToken("the user no longer exists".to_owned()))
        }
    }
    let otpauth_uri = secret.otpauth_uri(&issuer, &account);
    let qr_svg = otpauth_qr_svg(&otpauth_uri).map_err(|e| Error::Internal(anyhow::anyhow!(e)))?;
    tracing::info!(event = "totp_enrolment_started", "TOTP enrolment started");
    Ok(TotpEnrolmentStarted {
        secret: secret.base32(),
        otpauth_uri,
        qr_svg,
    })
}

/// Confirms the pending enrolment of the user of `access_token` with a first `code`: the
/// factor is on from then on, and the [`crate::domain::RECOVERY_CODE_COUNT`] recovery codes
/// returned (formatted, shown once; only their hashes are stored). A wrong code is
/// [`Error::InvalidCode`] and counts against the email's login lock like a wrong password.
#[tracing::instrument(skip_all, fields(user_id))]
pub async fn confirm(
    state: &AppState,
    access_token: &str,
    code: &str,
) -> Result<Vec<SecretString>> {
    let user = signed_in_user(state, access_token).await?;
    let now = state.clock.now();
    let pending = state
        .store
        .totp_enrolment(&user.id)
        .await?
        .filter(|e| !e.is_confirmed() && now < e.created_at.saturating_add(ENROLMENT_TTL_SECS))
        .ok_or(Error::TotpNotPending)?;
    let code_lock = code_lock_key(&user.id);
    let failures = reserve_password_check(state, &code_lock, now).await?;
    let secret = open_secret(state, &pending)?;
    let step = TotpCode::parse(code)
        .ok()
        .and_then(|code| secret.verify(&code, now));
    let Some(step) = step else {
        tracing::info!(
            event = "totp_code_failed",
            failures,
            "wrong TOTP code at confirmation"
        );
        return Err(Error::InvalidCode);
    };
    let codes = RecoveryCode::generate_set();
    let hashes: Vec<[u8; 32]> = codes.iter().map(RecoveryCode::hash).collect();
    if !state
        .store
        .confirm_totp(&user.id, &pending.secret, step, now, &hashes)
        .await?
    {
        // Confirmed, replaced or disabled meanwhile (another tab).
        return Err(Error::TotpNotPending);
    }
    state.store.clear_login_failures(&code_lock).await?;
    tracing::info!(event = "totp_enabled", "TOTP second factor enabled");
    Ok(codes.iter().map(RecoveryCode::formatted).collect())
}

/// Disables the second factor of the user of `access_token`, which needs a TOTP code or a
/// recovery code (an access token alone, perhaps stolen, must not be enough to remove it),
/// throttled like a password.
#[tracing::instrument(skip_all, fields(user_id))]
pub async fn disable(state: &AppState, access_token: &str, code: &str) -> Result<()> {
    let user = signed_in_user(state, access_token).await?;
    let now = state.clock.now();
    let enrolment = state
        .store
        .totp_enrolment(&user.id)
        .await?
        .filter(TotpEnrolment::is_confirmed)
        .ok_or(Error::TotpNotEnabled)?;
    let code_lock = code_lock_key(&user.id);
    let failures = reserve_password_check(state, &code_lock, now).await?;
    if !check_second_factor(state, &enrolment, SecondFactor::Either(code), now).await? {
        tracing::info!(
            event = "totp_code_failed",
            failures,
            "wrong code to disable TOTP"
        );
        return Err(Error::InvalidCode);
    }
    state.store.clear_login_failures(&code_lock).await?;
    state.store.disable_totp(&user.id).await?;
    tracing::info!(event = "totp_disabled", "TOTP second factor disabled");
    Ok(())
}

/// Checks `factor` for the confirmed `enrolment` at `now` and uses it up: a TOTP code's step
/// is recorded (a code of that step or an older one is refused from then on, even racing), a
/// recovery code is marked used. `false` for a wrong, malformed or used one. The caller has
/// reserved the attempt on the login lock.
pub(super) async fn check_second_factor(
    state: &AppState,
    enrolment: &TotpEnrolment,
    factor: SecondFactor<'_>,
    now: i64,
) -> Result<bool> {
    let user_id = &enrolment.user_id;
    let (totp, recovery) = match factor {
        SecondFactor::Code(code) => (TotpCode::parse(code).ok(), None),
        SecondFactor::RecoveryCode(code) => (None, RecoveryCode::parse(code).ok()),
        SecondFactor::Either(code) => match TotpCode::parse(code) {
            Ok(totp) => (Some(totp), None),
            Err(_) => (None, RecoveryCode::parse(code).ok()),
        },
    };
    if let Some(code) = totp {
        let secret = open_secret(state, enrolment)?;
        let Some(step) = secret.verify(&code, now) else {
            return Ok(false);
        };
        return Ok(state.store.use_totp_step(user_id, step).await?);
    }
    if let Some(code) = recovery {
        let used = state
            .store
            .use_recovery_code(user_id, &code.hash(), now)
            .await?;
        if used {
            let left = state.store.recovery_codes_left(user_id).await?;
            tracing::info!(event = "recovery_code_used", left, "recovery code used");
        }
        return Ok(used);
    }
    Ok(false)
}

/// The secret of `enrolment`, opened with the configured key-encryption keys.
fn open_secret(state: &AppState, enrolment: &TotpEnrolment) -> Result<TotpSecret> {
    state
        .ring
        .keks()
        .open_totp_secret(&enrolment.user_id, &enrolment.secret)
        .map_err(|e| Error::Internal(anyhow::anyhow!("{e}")))
}

/// Enrolments re-sealed per query.
const RESEAL_BATCH: i64 = 500;

/// Re-seals every TOTP secret stored under an older key-encryption key under the current one
/// (at start, after a KEK rotation), so that the old KEK can be removed without locking those
/// users out: unlike a session's rotation key, a TOTP secret cannot be replaced by a new one,
/// since the user's authenticator holds it. A secret whose KEK is not configured is left as it
/// was (that KEK may only be missing on this replica). How many were re-sealed.
pub async fn reseal_totp_secrets(store: &Store, keks: &KeyEncryptionKeys) -> anyhow::Result<u64> {
    let mut resealed = 0;
    let mut unopenable = 0_u64;
    let mut after = String::new();
    loop {
        let rows = store
            .totp_secrets_not_under(keks.current_id(), &after, RESEAL_BATCH)
            .await?;
        let Some(last) = rows.last() else {
            break;
        };
        after.clone_from(&last.user_id);
        for enrolment in rows {
            let Ok(secret) = keks.open_totp_secret(&enrolment.user_id, &enrolment.secret) else {
                unopenable += 1;
                continue;
            };
            let sealed = keks.seal_totp_secret(&enrolment.user_id, &secret)?;
            // A concurrent re-seal or re-enrolment wins; this one then changes nothing.
            if store
                .reseal_totp_secret(&enrolment.user_id, &enrolment.secret, &sealed)
                .await?
            {
                resealed += 1;
            }
        }
    }
    if resealed > 0 {
        tracing::info!(
            event = "totp_secrets_resealed",
            count = resealed,
            to = keks.current_id(),
            "TOTP secrets re-encrypted under the current key-encryption key"
        );
    }
    if unopenable > 0 {
        tracing::warn!(
            event = "totp_secrets_unopenable",
            count = unopenable,
            configured = ?keks.ids().collect::<Vec<_>>(),
            "TOTP secrets that do not open under the configured key-encryption keys were left \
             as they were: those users cannot pass the second factor here"
        );
    }
    Ok(resealed)
}
