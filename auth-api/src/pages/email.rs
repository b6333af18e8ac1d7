//! `GET/POST /account/verify` (the link of the verification mail) and `GET/POST
//! /account/resend`; adapters of [`service::email_verification`]. The GET of a link only
//! shows a button: mail scanners fetch links, and must not use up the token.

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
    layout::{self, alert, check_email_page, csrf_field, email_input, submit},
    respond, Failure, PostedForm, INVALID_EMAIL_TOKEN,
};
use crate::{service, state::AppState};

/// The query of a mail link, and the form that posts its token.
#[derive(Deserialize, Default)]
pub(super) struct TokenForm {
    #[serde(default)]
    token: String,
}

/// The resend form.
#[derive(Deserialize)]
pub(super) struct EmailForm {
    #[serde(default)]
    email: String,
}

/// `GET /account/verify?token=…`: a button that confirms the address.
pub(super) async fn verify_form(
    headers: HeaderMap,
    query: Result<Query<TokenForm>, QueryRejection>,
) -> Response {
    // A malformed query (a repeated `token`) reads as no token: the POST then says so.
    let Query(query) = query.unwrap_or_default();
    let csrf = Token::of(&headers);
    csrf.set_on(verify_page(&csrf, &query.token, None))
}

/// `POST /account/verify`: the token confirms the address.
pub(super) async fn verify(
    State(state): State<AppState>,
    headers: HeaderMap,
    PostedForm(form): PostedForm<TokenForm>,
) -> Response {
    match service::email_verification::verify_email(&state, &form.token).await {
        Ok(()) => html(
            StatusCode::OK,
            layout::page(
                "Email address confirmed",
                html! {
                    p id="email-verified" { "Thank you: your email address is confirmed." }
                    p { a href="./" { "Go to your account" } }
                },
            ),
        ),
        Err(e) => verify_page(&Token::of(&headers), &form.token, Some(&Failure::from(e))),
    }
}

/// `GET /account/resend`.
pub(super) async fn resend_form(headers: HeaderMap) -> Response {
    let csrf = Token::of(&headers);
    csrf.set_on(resend_page(&csrf, "", None))
}

/// `POST /account/resend`: the same answer for every well-formed email.
pub(super) async fn resend(
    State(state): State<AppState>,
    headers: HeaderMap,
    PostedForm(form): PostedForm<EmailForm>,
) -> Response {
    match service::email_verification::resend_verification(&state, &form.email).await {
        Ok(()) => html(
            StatusCode::OK,
            check_email_page("follow its link to confirm your address."),
        ),
        Err(e) => resend_page(&Token::of(&headers), &form.email, Some(&Failure::from(e))),
    }
}

/// The confirmation button for `token`; after a failure, the way to a new link.
fn verify_page(csrf: &Token, token: &str, failure: Option<&Failure>) -> Response {
    let markup = layout::page(
        "Confirm your email address",
        html! {
            (alert(failure))
            @if failure.is_none_or(|f| f.code != INVALID_EMAIL_TOKEN) {
                form method="post" action="verify" {
                    (csrf_field(csrf.value()))
                    input type="hidden" name="token" value=(token);
                    button id="confirm" type="submit" { "Confirm my email address" }
                }
            }
            p { a href="resend" { "Send a new link" } }
        },
    );
    respond(failure, markup)
}

fn resend_page(csrf: &Token, email: &str, failure: Option<&Failure>) -> Response {
    let markup = layout::page(
        "Send the verification email again",
        html! {
            (alert(failure))
            form method="post" action="resend" {
                (csrf_field(csrf.value()))
                (email_input(email))
                (submit("Send"))
            }
            (layout::signed_out_links())
        },
    );
    respond(failure, markup)
}
