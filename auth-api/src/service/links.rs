//! What email verification and password reset share (issue 15): the single-use tokens of the
//! links they mail, the per-recipient limit on those mails, and the background task that does
//! the work of a request whose answer must not depend on whether the account exists.
//!
//! A token is 256 random bits (base64url, 43 characters) in the link only; the store keeps its
//! SHA-256, bound to the user, the address it was sent to and a digest of the password hash.
//! A newer link of a purpose replaces the older ones; using one deletes it.

use std::future::Future;

use tokio::sync::Semaphore;
use tracing::Instrument as _;

use secrecy::ExposeSecret as _;
use sha2::{Digest as _, Sha256};

use super::{Error, Result};
use crate::{
    mail::Email,
    oidc::pkce,
    state::AppState,
    store::{EmailToken, EmailTokenPurpose, MailLimit, UserRow},
};

/// Mails of one kind a recipient is sent per hour at most, whoever asks: a request past it is
/// answered as usual and sends nothing (the answer must not say whether the address has an
/// account, and so neither whether a mail went out).
pub const MAX_MAILS_PER_RECIPIENT_HOUR: i64 = 5;

/// Longest token looked up; ours are 43 characters.
const MAX_TOKEN_LEN: usize = 64;

/// SHA-256 of the user's stored password hash: what a reset link is bound to, so that any
/// change of the password (by a reset or otherwise) voids the links sent before.
pub(super) fn password_digest(user: &UserRow) -> Vec<u8> {
    Sha256::digest(user.password_hash.as_bytes()).to_vec()
}

/// The live token of `purpose` that `presented` is, or [`Error::InvalidEmailToken`]: anything
/// not shaped like ours is refused before the store is asked.
pub(super) async fn find(
    state: &AppState,
    presented: &str,
    purpose: EmailTokenPurpose,
    now: i64,
) -> Result<EmailToken> {
    let is_ours = (1..=MAX_TOKEN_LEN).contains(&presented.len())
        && presented
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !is_ours {
        return Err(Error::InvalidEmailToken);
    }
    state
        .store
        .email_token(&pkce::sha256(presented), purpose, now)
        .await?
        .ok_or(Error::InvalidEmailToken)
}

/// Mails `user` a new link of `purpose` (replacing the older ones), built by `message` from the
/// link's URL, unless [`MAX_MAILS_PER_RECIPIENT_HOUR`] of that kind went to the address in the
/// last hour. The token and the mail commit together.
pub(super) async fn send(
    state: &AppState,
    user: &UserRow,
    purpose: EmailTokenPurpose,
    message: impl FnOnce(&str) -> Email,
) -> Result<()> {
    let now = state.clock.now();
    let (page, ttl) = match purpose {
        EmailTokenPurpose::Verify => ("verify", state.config.verify_link_ttl),
        EmailTokenPurpose::Reset => ("reset", state.config.reset_link_ttl),
    };
    let secret = pkce::random_secret();
    let link = format!(
        "{}/account/{page}?token={}",
        state.config.public_url,
        secret.expose_secret()
    );
    let email = message(&link);
    let token = EmailToken {
        token_hash: pkce::sha256(secret.expose_secret()).to_vec(),
        user_id: user.id.clone(),
        purpose,
        email: user.email.clone(),
        password_digest: password_digest(user),
        created_at: now,
        expires_at: now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
    };
    let queued = email.seal(state.ring.keks())?;
    if !state
        .store
        .issue_email_token(&token, &queued, limit(now))
        .await?
    {
        limited(state, &email.kind);
        return Ok(());
    }
    state.outbox_wake.wake();
    tracing::info!(event = "email_link_sent", purpose = purpose.as_str(), user_id = %user.id, "link queued");
    Ok(())
}

/// Queues `email` (one that carries no token) about `user` unless the recipient's limit for
/// its kind is used up.
pub(super) async fn notify(state: &AppState, user: &UserRow, email: &Email) -> Result<()> {
    let now = state.clock.now();
    let queued = email.seal(state.ring.keks())?;
    if !state
        .store
        .enqueue_limited_email(&user.id, &queued, limit(now))
        .await?
    {
        limited(state, &email.kind);
        return Ok(());
    }
    state.outbox_wake.wake();
    Ok(())
}

/// The per-recipient limit as of `now`: [`MAX_MAILS_PER_RECIPIENT_HOUR`] in the last hour.
fn limit(now: i64) -> MailLimit {
    MailLimit {
        max: MAX_MAILS_PER_RECIPIENT_HOUR,
        since: now - 3600,
        now,
    }
}

/// Counts and logs a mail not queued for the recipient's limit.
fn limited(state: &AppState, kind: &str) {
    state.metrics.email_sent(kind, "limited");
    tracing::info!(
        event = "email_limited",
        kind,
        "per-recipient mail limit reached: not sent"
    );
}

/// Background mail work in progress at most, per replica: a flood of requests (from many
/// addresses, each within its bucket) must not pile up tasks and database work without bound.
/// Past it a request is answered as usual and dropped (logged): the answer cannot say so.
const MAX_IN_FLIGHT: usize = 256;

static IN_FLIGHT: Semaphore = Semaphore::const_new(MAX_IN_FLIGHT);

/// Runs `work` after the answer: the request is answered alike and at once whether or not the
/// address has an account (the work, which looks the account up and writes only if it exists,
/// cannot be timed from outside). A failure is logged, never answered: the answer is always the
/// same. The work is lost if the replica stops first, or if [`MAX_IN_FLIGHT`] are running; the
/// user asks again.
pub(super) fn in_background(
    what: &'static str,
    work: impl Future<Output = Result<()>> + Send + 'static,
) {
    let Ok(permit) = IN_FLIGHT.try_acquire() else {
        tracing::warn!(
            event = "email_request_dropped",
            what,
            "too many mail requests in progress: dropped"
        );
        return;
    };
    // In the request's span: a failure names the request it came from.
    tokio::spawn(
        async move {
            let _permit = permit;
            if let Err(e) = work.await {
                tracing::warn!(event = "email_request_failed", what, error = %e, "mail not queued");
            }
        }
        .in_current_span(),
    );
}
