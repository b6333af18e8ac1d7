//! `GET/POST /account/totp` and `POST /account/totp-confirm`: turning on the TOTP second
//! factor for the signed-in visitor; adapters of [`service::totp::enrol`] and
//! [`service::totp::confirm`]. The password is asked again (as at `/totp/enroll`), the secret
//! shown once as an inline QR code and as text, and the recovery codes once at the end.

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::Response,
};
use maud::{html, PreEscaped};
use secrecy::ExposeSecret as _;
use serde::Deserialize;

use super::{
    csrf::Token,
    html,
    layout::{self, alert, code_input, csrf_field, password_input, submit},
    respond,
    session::signed_in,
    Failure, PostedForm,
};
use crate::{service, state::AppState};

/// The enrolment form; deliberately without `Debug`.
#[derive(Deserialize)]
pub(super) struct EnrolForm {
    #[serde(default)]
    password: String,
}

/// The confirmation form; deliberately without `Debug`.
#[derive(Deserialize)]
pub(super) struct ConfirmForm {
    #[serde(default)]
    code: String,
}

/// `GET /account/totp`: the password form.
pub(super) async fn form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(response) = signed_in(&state, &headers).await {
        return response;
    }
    let csrf = Token::of(&headers);
    csrf.set_on(password_page(&csrf, None))
}

/// `POST /account/totp`: a new secret, shown with the form for its first code.
pub(super) async fn enrol(
    State(state): State<AppState>,
    headers: HeaderMap,
    PostedForm(form): PostedForm<EnrolForm>,
) -> Response {
    let visitor = match signed_in(&state, &headers).await {
        Ok(visitor) => visitor,
        Err(response) => return response,
    };
    let csrf = Token::of(&headers);
    let started = match service::totp::enrol(&state, &visitor.token, &form.password).await {
        Ok(started) => started,
        Err(e) => return password_page(&csrf, Some(&Failure::from(e))),
    };
    let markup = layout::page(
        "Scan the code",
        html! {
            p {
                "Scan this QR code with your authenticator app, or type the key below into it. "
                "Then enter the six-digit code the app shows."
            }
            // Our own SVG (`domain::otpauth_qr_svg`): one element, no script, no reference.
            figure class="qr" role="img" aria-label="QR code of the key" {
                (PreEscaped(started.qr_svg.expose_secret()))
            }
            p { "Key: " code id="totp-secret" class="secret" { (started.secret.expose_secret()) } }
            p class="hint" {
                "Link for apps on this device: "
                code id="totp-uri" class="secret" { (started.otpauth_uri.expose_secret()) }
            }
            (code_form(&csrf))
        },
    );
    html(StatusCode::OK, markup)
}

/// `POST /account/totp-confirm`: the first code turns the factor on; the recovery codes, once.
pub(super) async fn confirm(
    State(state): State<AppState>,
    headers: HeaderMap,
    PostedForm(form): PostedForm<ConfirmForm>,
) -> Response {
    let visitor = match signed_in(&state, &headers).await {
        Ok(visitor) => visitor,
        Err(response) => return response,
    };
    let csrf = Token::of(&headers);
    let codes = match service::totp::confirm(&state, &visitor.token, &form.code).await {
        Ok(codes) => codes,
        Err(e) => {
            let failure = Failure::from(e);
            let markup = layout::page(
                "Enter the code",
                html! {
                    (alert(Some(&failure)))
                    (code_form(&csrf))
                    p { a href="totp" { "Start again" } }
                },
            );
            return failure.page(markup);
        }
    };
    let markup = layout::page(
        "Two-step sign-in is on",
        html! {
            p {
                "Keep these recovery codes somewhere safe. Each one signs you in once "
                "if you lose your authenticator app. They are not shown again."
            }
            ol id="recovery-codes" class="secret" {
                @for code in &codes { li { (code.expose_secret()) } }
            }
            p { a href="./" { "Back to your account" } }
        },
    );
    html(StatusCode::OK, markup)
}

/// The form asking for the password again.
fn password_page(csrf: &Token, failure: Option<&Failure>) -> Response {
    let markup = layout::page(
        "Turn on two-step sign-in",
        html! {
            (alert(failure))
            p { "Enter your password to set up an authenticator app." }
            form method="post" action="totp" {
                (csrf_field(csrf.value()))
                (password_input("Password", "current-password"))
                (submit("Continue"))
            }
            p { a href="./" { "Back to your account" } }
        },
    );
    respond(failure, markup)
}

/// The form for the first code of the app.
fn code_form(csrf: &Token) -> maud::Markup {
    html! {
        form method="post" action="totp-confirm" {
            (csrf_field(csrf.value()))
            (code_input())
            (submit("Turn on"))
        }
    }
}
