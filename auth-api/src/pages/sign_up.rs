//! `GET/POST /account/signup`: a new account; an adapter of [`service::accounts::signup`].
//! With email verification on, the answer is the same for a new and a taken email ("check
//! your email"); with it off, the account is made at once and the visitor signs in.

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::Response,
};
use maud::html;
use serde::Deserialize;

use super::{
    csrf::Token,
    html,
    layout::{
        self, alert, check_email_page, csrf_field, email_input, password_input, signed_out_links,
        submit,
    },
    respond, Failure, PostedForm,
};
use crate::{
    service::{self, accounts::SignupOutcome},
    state::AppState,
};

/// The sign-up form; deliberately without `Debug`.
#[derive(Deserialize)]
pub(super) struct SignUpForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

/// How a sign-up ended, as the page tells it.
enum Outcome {
    /// Verification off: the account exists.
    Created,
    /// Verification on: a mail may be on its way (new or taken email alike).
    CheckEmail,
}

/// `GET /account/signup`.
pub(super) async fn form(headers: HeaderMap) -> Response {
    let csrf = Token::of(&headers);
    csrf.set_on(sign_up_page(&csrf, "", None))
}

/// `POST /account/signup`.
pub(super) async fn sign_up(
    State(state): State<AppState>,
    headers: HeaderMap,
    PostedForm(form): PostedForm<SignUpForm>,
) -> Response {
    let csrf = Token::of(&headers);
    match signup(&state, &form).await {
        Ok(Outcome::CheckEmail) => html(
            StatusCode::OK,
            check_email_page("follow its link to confirm your address."),
        ),
        Ok(Outcome::Created) => html(
            StatusCode::CREATED,
            layout::page(
                "Account created",
                html! {
                    p id="account-created" { "Your account is ready." }
                    p { a href="signin" { "Sign in" } }
                },
            ),
        ),
        Err(e) => sign_up_page(&csrf, &form.email, Some(&Failure::from(e))),
    }
}

async fn signup(state: &AppState, form: &SignUpForm) -> Result<Outcome, service::Error> {
    Ok(
        match service::accounts::signup(state, &form.email, &form.password).await? {
            SignupOutcome::Created(_) => Outcome::Created,
            SignupOutcome::VerificationSent { .. } => Outcome::CheckEmail,
        },
    )
}

fn sign_up_page(csrf: &Token, email: &str, failure: Option<&Failure>) -> Response {
    let markup = layout::page(
        "Create an account",
        html! {
            (alert(failure))
            form method="post" action="signup" {
                (csrf_field(csrf.value()))
                (email_input(email))
                (password_input("Password", "new-password"))
                (submit("Create account"))
            }
            (signed_out_links())
        },
    );
    respond(failure, markup)
}
