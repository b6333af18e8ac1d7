//! The shell every page shares (language, title, our one stylesheet, a heading) and the
//! stylesheet itself, served at `style.css` so that the CSP needs no `'unsafe-inline'`.

use axum::{
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
};
use maud::{html, Markup, DOCTYPE};

use super::Failure;

/// The stylesheet: system fonts, one narrow column, visible focus, no external asset.
const STYLESHEET: &str = "\
:root{color-scheme:light dark;font-family:system-ui,sans-serif;line-height:1.5}
body{max-width:28rem;margin:2rem auto;padding:0 1rem}
h1{font-size:1.5rem}
label{display:block;margin-top:1rem;font-weight:600}
input{display:block;box-sizing:border-box;width:100%;padding:.5rem;font:inherit;margin-top:.25rem}
button{margin-top:1.25rem;padding:.5rem 1.25rem;font:inherit;cursor:pointer}
:focus-visible{outline:3px solid #2563eb;outline-offset:2px}
[role=alert]{border-left:4px solid #b91c1c;padding:.5rem .75rem;background:#fee2e2;color:#7f1d1d}
.hint{font-size:.9rem;opacity:.8}
code,.secret{font-family:ui-monospace,monospace;word-break:break-all}
.qr svg{width:12rem;height:12rem;background:#fff;padding:.5rem}
nav{margin-top:2rem;font-size:.95rem}
nav a{margin-right:1rem}
";

/// `GET /account/style.css`.
pub(super) async fn stylesheet() -> Response {
    let mut response = STYLESHEET.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    response
}

/// A whole page: `title` as its title and heading, `content` below.
pub(super) fn page(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) }
                link rel="stylesheet" href="style.css";
                // No request for /favicon.ico outside our pages.
                link rel="icon" href="data:,";
            }
            body {
                main {
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
}

/// The error of a form, announced to screen readers; nothing when there is none.
pub(super) fn alert(failure: Option<&Failure>) -> Markup {
    html! {
        @if let Some(failure) = failure {
            p role="alert" id="error" { (failure.message) }
        }
    }
}

/// The hidden CSRF field of every form.
pub(super) fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// The links below the forms of a signed-out visitor.
pub(super) fn signed_out_links() -> Markup {
    html! {
        nav aria-label="Other pages" {
            a href="signin" { "Sign in" }
            a href="signup" { "Create an account" }
            a href="forgot" { "Forgot your password?" }
        }
    }
}

/// A page that only tells `failure`, with its status, and the way back.
pub(super) fn message_page(failure: &Failure) -> Response {
    failure.page(page(
        "Something went wrong",
        html! {
            (alert(Some(failure)))
            (signed_out_links())
        },
    ))
}

/// The `email` field, holding what was typed (never a password).
pub(super) fn email_input(value: &str) -> Markup {
    html! {
        label for="email" { "Email" }
        input id="email" name="email" type="email" autocomplete="email" required
            maxlength="320" value=(value);
    }
}

/// The `password` field: `autocomplete` is `current-password` or `new-password`. Never
/// filled in again.
pub(super) fn password_input(label: &str, autocomplete: &str) -> Markup {
    html! {
        label for="password" { (label) }
        input id="password" name="password" type="password" autocomplete=(autocomplete)
            required;
    }
}

/// The submit button of a form.
pub(super) fn submit(label: &str) -> Markup {
    html! { button id="submit" type="submit" { (label) } }
}

/// The `code` field of a TOTP code: digits, the app's one-time code for autofill.
pub(super) fn code_input() -> Markup {
    html! {
        label for="code" { "Code from your authenticator app" }
        input id="code" name="code" type="text" inputmode="numeric"
            autocomplete="one-time-code" pattern="[0-9 ]*" maxlength="8";
    }
}

/// The answer of the forms that must not tell whether an account exists (sign up with
/// verification on, forgot, resend): the same page, whatever the email.
pub(super) fn check_email_page(what: &str) -> Markup {
    page(
        "Check your email",
        html! {
            p id="check-email" {
                "If the address can receive it, an email is on its way: " (what)
                " The link in it works for a limited time."
            }
            (signed_out_links())
        },
    )
}
