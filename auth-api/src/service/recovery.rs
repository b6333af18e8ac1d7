//! Password reset by email (issue 15): the owner's way back from a forgotten password, and from
//! a lockout an attacker caused by guessing.
//!
//! `request_password_reset` answers alike and at once whether or not the address has an account
//! and mails a link only if it has (`links::in_background`). The link's token is single use,
//! lives `AUTH_RESET_LINK_TTL_SECS`, is voided by a newer link and by any password change (it is
//! bound to a digest of the password hash). `reset_password` sets the new password through the
//! signup policy, ends every session (at the gateway too, through the revocation feed), marks
//! the email verified (the link proved it), and clears the email's login lock. A second factor
//! stays on (the next login still asks for it), unless the address had never been verified:
//! then whoever signed up with it first may have enrolled it, and it goes.

use super::{links, Error, Result};
use crate::{
    domain::{Email, Password},
    mail::templates,
    state::AppState,
    store::{EmailTokenPurpose, PasswordReset},
};

/// Mails a reset link to `email` if it has an account (not disabled); answers alike, at once,
/// whether or not it does. [`Error::InvalidEmail`] only for an address that does not parse.
pub async fn request_password_reset(state: &AppState, email: &str) -> Result<()> {
    let email = Email::parse(email).map_err(Error::InvalidEmail)?;
    let state = state.clone();
    links::in_background("password_reset", async move {
        let Some(user) = state.store.user_by_email(email.as_str()).await? else {
            return Ok(());
        };
        if user.disabled_at.is_some() {
            return Ok(());
        }
        let minutes = state.config.reset_link_ttl.as_secs() / 60;
        links::send(&state, &user, EmailTokenPurpose::Reset, |link| {
            templates::password_reset(&user.email, link, minutes)
        })
        .await
    });
    Ok(())
}

/// Sets `new_password` on the account the reset link `token` was sent for. The token is checked
/// before the password (a link is not used up by a password the policy refuses), and taken in the
/// transaction that writes the password. [`Error::InvalidEmailToken`] for a link that is unknown,
/// used, replaced, expired, or voided by a password change since it was sent; the policy's
/// errors as at signup.
#[tracing::instrument(skip_all, fields(user_id))]
pub async fn reset_password(state: &AppState, token: &str, new_password: &str) -> Result<()> {
    let now = state.clock.now();
    let found = links::find(state, token, EmailTokenPurpose::Reset, now).await?;
    tracing::Span::current().record("user_id", found.user_id.as_str());
    let user = state.store.user_by_id(&found.user_id).await?;
    let Some(user) = user.filter(|user| {
        user.email == found.email && links::password_digest(user) == found.password_digest
    }) else {
        // The password (or the address) changed since the link was sent: it can never work.
        state.store.delete_email_token(&found.token_hash).await?;
        return Err(Error::InvalidEmailToken);
    };
    if user.disabled_at.is_some() {
        return Err(Error::AccountDisabled);
    }
    let email = Email::parse(&user.email).map_err(|e| Error::Internal(anyhow::anyhow!(e)))?;
    let password = Password::for_signup(new_password, &email, state.config.password_min_chars)?;
    let new_hash = state.hasher.hash(&password).await?;
    // The guesses counted so far were against the old password, and the lock they earned is
    // what a reset is the way out of: cleared with the password, in its transaction. An address
    // never verified before may have been signed up by someone else, who could have enrolled a
    // factor its owner would be asked for: the factor goes.
    let never_verified = user.email_verified_at.is_none();
    let outcome = state
        .store
        .reset_password(
            &found,
            &user.password_hash,
            &new_hash,
            state.revoke_at(),
            &user.email,
            never_verified,
        )
        .await?;
    if outcome == PasswordReset::Stale {
        return Err(Error::InvalidEmailToken);
    }
    tracing::info!(
        event = "password_reset",
        second_factor_removed = never_verified,
        "password reset by email; every session ended"
    );
    Ok(())
}
