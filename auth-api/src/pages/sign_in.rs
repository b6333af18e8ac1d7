//! `GET/POST /account/signin` and `POST /account/mfa`: a sign-in with the password, then the
//! second factor when the account has one; adapters of [`service::accounts::login`] and
//! [`service::mfa::complete`]. A success sets the session cookie and sees the overview.

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::Response,
};
use maud::html;
use secrecy::ExposeSecret as _;
use serde::Deserialize;

use super::{
    csrf::Token,
    layout::{
        self, alert, code_input, csrf_field, email_input, password_input, signed_out_links, submit,
    },
    respond, see_other, session, Failure, PostedForm,
};
use crate::{
    error::ApiError,
    service::{self, totp::SecondFactor, TokenPair},
    state::AppState,
};

/// The sign-in form; deliberately without `Debug`.
#[derive(Deserialize)]
pub(super) struct SignInForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

/// The second-factor form; deliberately without `Debug`.
#[derive(Deserialize)]
pub(super) struct MfaForm {
    #[serde(default)]
    mfa_token: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    recovery_code: String,
}

/// `GET /account/signin`.
pub(super) async fn form(headers: HeaderMap) -> Response {
    let csrf = Token::of(&headers);
    csrf.set_on(sign_in_page(&csrf, "", None, false))
}

/// `POST /account/signin`: 303 to the overview with the session cookie; the second-factor
/// form when the account has one; else the form again with the error and its status.
pub(super) async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    PostedForm(form): PostedForm<SignInForm>,
) -> Response {
    let csrf = Token::of(&headers);
    match service::accounts::login(&state, &form.email, &form.password, None).await {
        Ok(tokens) => signed_in(&state, &tokens),
        Err(service::Error::MfaRequired { mfa_token }) => {
            mfa_page(&csrf, mfa_token.expose_secret(), None)
        }
        Err(e) => {
            // With verification required, an unverified account's right password is refused
            // as a wrong one (telling them apart would tell which emails have accounts): every
            // refused sign-in shows the way to a new verification mail.
            let resend = matches!(e, service::Error::InvalidCredentials)
                && state.config.email_verification.is_on();
            sign_in_page(&csrf, &form.email, Some(&Failure::from(e)), resend)
        }
    }
}

/// `POST /account/mfa`: the challenge of the sign-in with a TOTP code or a recovery code.
pub(super) async fn mfa(
    State(state): State<AppState>,
    headers: HeaderMap,
    PostedForm(form): PostedForm<MfaForm>,
) -> Response {
    let csrf = Token::of(&headers);
    let factor = match (form.code.trim(), form.recovery_code.trim()) {
        (code, _) if !code.is_empty() => SecondFactor::Code(code),
        ("", recovery) if !recovery.is_empty() => SecondFactor::RecoveryCode(recovery),
        _ => {
            let failure = Failure::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Enter the code of your authenticator app, or a recovery code.",
            );
            return mfa_page(&csrf, &form.mfa_token, Some(&failure));
        }
    };
    match service::mfa::complete(&state, &form.mfa_token, factor).await {
        Ok(tokens) => signed_in(&state, &tokens),
        Err(service::Error::InvalidMfaToken) => {
            let failure = Failure::from(ApiError::InvalidMfaToken);
            sign_in_page(&csrf, "", Some(&failure), false)
        }
        Err(e) => mfa_page(&csrf, &form.mfa_token, Some(&Failure::from(e))),
    }
}

/// 303 to the overview with the session cookie of `tokens`.
fn signed_in(state: &AppState, tokens: &TokenPair) -> Response {
    session::set(
        state,
        see_other("./"),
        &tokens.access_token,
        tokens.expires_in,
    )
}

/// The sign-in form, with `failure` above it (and its status) if any, and a link to `resend`
/// the verification mail when that may be what stands in the way.
fn sign_in_page(csrf: &Token, email: &str, failure: Option<&Failure>, resend: bool) -> Response {
    let markup = layout::page(
        "Sign in",
        html! {
            (alert(failure))
            @if resend {
                p {
                    "Signed up recently? Confirm your email address first: "
                    a id="resend" href="resend" { "send the verification email again" } "."
                }
            }
            form method="post" action="signin" {
                (csrf_field(csrf.value()))
                (email_input(email))
                (password_input("Password", "current-password"))
                (submit("Sign in"))
            }
            (signed_out_links())
        },
    );
    respond(failure, markup)
}

/// The second-factor form for the challenge `mfa_token`.
fn mfa_page(csrf: &Token, mfa_token: &str, failure: Option<&Failure>) -> Response {
    let markup = layout::page(
        "Enter your code",
        html! {
            (alert(failure))
            form method="post" action="mfa" {
                (csrf_field(csrf.value()))
                input type="hidden" name="mfa_token" value=(mfa_token);
                (code_input())
                p class="hint" {
                    "Six digits. Lost your device? Use a recovery code instead."
                }
                label for="recovery_code" { "Or a recovery code" }
                input id="recovery_code" name="recovery_code" type="text" autocomplete="off"
                    spellcheck="false" autocapitalize="none";
                (submit("Continue"))
            }
        },
    );
    respond(failure, markup)
}
