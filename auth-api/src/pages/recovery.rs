//! `GET/POST /account/forgot` and `GET/POST /account/reset` (the link of the reset mail):
//! a new password by email; adapters of [`service::recovery`]. "Forgot" answers the same page
//! for every well-formed email; the GET of a link only shows the form (mail scanners fetch
//! links and must not use up the token).

use axum::{
    extract::{rejection::QueryRejection, Query, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use maud::html;
use serde::Deserialize;

use super::{
    csrf::Token,
    html,
    layout::{self, alert, check_email_page, csrf_field, email_input, password_input, submit},
    respond, Failure, PostedForm, INVALID_EMAIL_TOKEN,
};
use crate::{service, state::AppState};

/// The forgot form.
#[derive(Deserialize)]
pub(super) struct EmailForm {
    #[serde(default)]
    email: String,
}

/// The query of a reset link.
#[derive(Deserialize, Default)]
pub(super) struct TokenQuery {
    #[serde(default)]
    token: String,
}

/// The reset form; deliberately without `Debug`.
#[derive(Deserialize)]
pub(super) struct ResetForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
}

/// `GET /account/forgot`.
pub(super) async fn forgot_form(headers: HeaderMap) -> Response {
    let csrf = Token::of(&headers);
    csrf.set_on(forgot_page(&csrf, "", None))
}

/// `POST /account/forgot`: the same answer for every well-formed email.
pub(super) async fn forgot(
    State(state): State<AppState>,
    headers: HeaderMap,
    PostedForm(form): PostedForm<EmailForm>,
) -> Response {
    match service::recovery::request_password_reset(&state, &form.email).await {
        Ok(()) => html(
            StatusCode::OK,
            check_email_page("follow its link to choose a new password."),
        ),
        Err(e) => forgot_page(&Token::of(&headers), &form.email, Some(&Failure::from(e))),
    }
}

/// `GET /account/reset?token=…`: the new-password form.
pub(super) async fn reset_form(
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Response {
    // A malformed query (a repeated `token`) reads as no token: the POST then says so.
    let Query(query) = query.unwrap_or_default();
    let csrf = Token::of(&headers);
    csrf.set_on(reset_page(&csrf, &query.token, None))
}

/// `POST /account/reset`: the new password; every session ends.
pub(super) async fn reset(
    State(state): State<AppState>,
    headers: HeaderMap,
    PostedForm(form): PostedForm<ResetForm>,
) -> Response {
    match service::recovery::reset_password(&state, &form.token, &form.password).await {
        Ok(()) => html(
            StatusCode::OK,
            layout::page(
                "Password changed",
                html! {
                    p id="password-reset" {
                        "Your password is changed, and every device signed in before is signed out."
                    }
                    p { a href="signin" { "Sign in" } }
                },
            ),
        ),
        Err(e) => reset_page(&Token::of(&headers), &form.token, Some(&Failure::from(e))),
    }
}

fn forgot_page(csrf: &Token, email: &str, failure: Option<&Failure>) -> Response {
    let markup = layout::page(
        "Forgot your password?",
        html! {
            (alert(failure))
            p { "Enter your email address: we send a link to choose a new password." }
            form method="post" action="forgot" {
                (csrf_field(csrf.value()))
                (email_input(email))
                (submit("Send the link"))
            }
            (layout::signed_out_links())
        },
    );
    respond(failure, markup)
}

/// The new-password form for `token`; a token that is no good leaves only the way to a new one.
fn reset_page(csrf: &Token, token: &str, failure: Option<&Failure>) -> Response {
    let dead_link = failure.is_some_and(|f| f.code == INVALID_EMAIL_TOKEN);
    let markup = layout::page(
        "Choose a new password",
        html! {
            (alert(failure))
            @if !dead_link {
                form method="post" action="reset" {
                    (csrf_field(csrf.value()))
                    input type="hidden" name="token" value=(token);
                    (password_input("New password", "new-password"))
                    (submit("Change password"))
                }
            }
            p { a href="forgot" { "Send a new link" } }
        },
    );
    respond(failure, markup)
}
