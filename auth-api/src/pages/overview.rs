//! `GET /account/`: the signed-in visitor's account (email, whether it is verified, whether
//! the second factor is on), and `POST /account/signout`.

use axum::{
    extract::State,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use maud::html;
use serde::Deserialize;

use super::{
    csrf::Token,
    html,
    layout::{self, csrf_field},
    see_other,
    session::{self, signed_in},
    Failure, PostedForm,
};
use crate::{
    extract::cookie,
    service::{self, LogoutCredential, LogoutScope},
    state::AppState,
};

/// The sign-out form: its `csrf` field only.
#[derive(Deserialize)]
pub(super) struct SignOutForm {}

/// `GET /account`: 308 to `/account/`, under which every relative link of the pages resolves.
pub(super) async fn to_overview() -> Response {
    let mut response = StatusCode::PERMANENT_REDIRECT.into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("account/"));
    response
}

/// `GET /account/`: the overview, or 303 to `signin` when not signed in.
pub(super) async fn overview(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let visitor = match signed_in(&state, &headers).await {
        Ok(visitor) => visitor,
        Err(response) => return response,
    };
    let user_id = &visitor.verified.typed.sub;
    // Read now, not from the token: a verification or an enrolment since the sign-in shows.
    let account = async {
        let user = state.store.user_by_id(user_id).await?;
        let totp = state.store.totp_enrolment(user_id).await?;
        Ok::<_, sqlx::Error>((user, totp))
    };
    let (user, totp) = match account.await {
        Ok((Some(user), totp)) => (user, totp),
        Ok((None, _)) => return session::clear(&state, see_other("signin")),
        Err(e) => return layout::message_page(&Failure::from(service::Error::from(e))),
    };
    let totp_on = totp.is_some_and(|enrolment| enrolment.is_confirmed());
    let csrf = Token::of(&headers);
    let markup = layout::page(
        "Your account",
        html! {
            dl {
                dt { "Email" }
                dd id="email" { (user.email) }
                dt { "Email address" }
                dd id="email-status" {
                    @if user.email_verified_at.is_some() { "verified" } @else { "not verified" }
                }
                dt { "Two-step sign-in (authenticator app)" }
                dd id="totp-status" { @if totp_on { "on" } @else { "off" } }
            }
            @if user.email_verified_at.is_none() {
                p { a href="resend" { "Send the verification email again" } }
            }
            @if !totp_on {
                p { a id="enrol-totp" href="totp" { "Turn on two-step sign-in" } }
            }
            form method="post" action="signout" {
                (csrf_field(csrf.value()))
                button id="sign-out" type="submit" { "Sign out" }
            }
        },
    );
    csrf.set_on(html(StatusCode::OK, markup))
}

/// `POST /account/signout`: ends the session of the cookie (if it still has one), clears the
/// cookie, 303 to `signin`.
pub(super) async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    PostedForm(SignOutForm {}): PostedForm<SignOutForm>,
) -> Response {
    if let Some(token) = cookie(&headers, session::COOKIE) {
        let credential = LogoutCredential::AccessToken(token);
        match service::sessions::logout(&state, credential, LogoutScope::Local).await {
            // A token that no longer verifies has no session to end.
            Ok(()) | Err(service::Error::InvalidToken(_)) => {}
            Err(e) => return layout::message_page(&Failure::from(e)),
        }
    }
    session::clear(&state, see_other("signin"))
}
