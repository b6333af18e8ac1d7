//! Email verification (issue 15, `AUTH_EMAIL_VERIFICATION`): signup mails a link that proves the
//! address; `verify_email` takes it; `resend_verification` mails a new one. Access tokens carry
//! the outcome as `email_verified`, and a gateway rule can require it.
//!
//! Neither signup (with verification on) nor a resend tells whether the address has an account:
//! both answer alike, at once, and do the mail's work after the answer (`links::in_background`).

use super::{links, Error, Result};
use crate::{
    domain::Email,
    mail::templates,
    state::AppState,
    store::{EmailTokenPurpose, UserRow},
};

/// Proves the address of the account the link `token` was sent for: single use, and only while
/// the account's email is still the one it was sent to. [`Error::InvalidEmailToken`] for a link
/// that is unknown, used, replaced by a newer one or expired. Verifying an address already
/// verified succeeds (the link is used up either way).
#[tracing::instrument(skip_all, fields(user_id))]
pub async fn verify_email(state: &AppState, token: &str) -> Result<()> {
    let now = state.clock.now();
    let found = links::find(state, token, EmailTokenPurpose::Verify, now).await?;
    tracing::Span::current().record("user_id", found.user_id.as_str());
    if !state.store.verify_email(&found, now).await? {
        // Another request used it first.
        return Err(Error::InvalidEmailToken);
    }
    tracing::info!(event = "email_verified", "email verified");
    Ok(())
}

/// Mails a new verification link to `email` if it has an account whose address is not verified
/// yet; answers alike, at once, whether or not it does. [`Error::InvalidEmail`] only for an
/// address that does not parse (that tells nothing about any account). Nothing is sent while
/// verification is off.
pub async fn resend_verification(state: &AppState, email: &str) -> Result<()> {
    let email = Email::parse(email).map_err(Error::InvalidEmail)?;
    if !state.config.email_verification.is_on() {
        return Ok(());
    }
    let state = state.clone();
    links::in_background("resend_verification", async move {
        let Some(user) = state.store.user_by_email(email.as_str()).await? else {
            return Ok(());
        };
        if user.email_verified_at.is_some() || user.disabled_at.is_some() {
            return Ok(());
        }
        send_link(&state, &user).await
    });
    Ok(())
}

/// What a signup with verification on mails: to a new account its link (after the answer), to
/// the owner of a taken address a note that someone tried (see `accounts::signup`).
pub(super) fn after_signup(state: &AppState, created: Option<UserRow>, email: Email) {
    let state = state.clone();
    links::in_background("signup_mail", async move {
        match created {
            Some(user) => send_link(&state, &user).await,
            None => {
                let Some(owner) = state.store.user_by_email(email.as_str()).await? else {
                    return Ok(());
                };
                let forgot = format!("{}/account/forgot", state.config.public_url);
                let note = templates::account_exists(&owner.email, &forgot);
                links::notify(&state, &owner, &note).await
            }
        }
    });
}

/// Mails `user` a verification link.
async fn send_link(state: &AppState, user: &UserRow) -> Result<()> {
    let hours = state.config.verify_link_ttl.as_secs() / 3600;
    links::send(state, user, EmailTokenPurpose::Verify, |link| {
        templates::verify_email(&user.email, link, hours.max(1))
    })
    .await
}
