//! The pages' session: the access token of a sign-in in the `__Secure-auth-account` cookie
//! (HttpOnly, Secure, SameSite=Strict, for the token's lifetime), validated like a bearer token
//! at `/validate` (signature, claims, and the session in the store) on every signed-in page. No
//! refresh token is kept: when the access token expires, the visitor signs in again.
//!
//! Its `Path` is the pages' own (`/account/` under `AUTH_PUBLIC_URL`'s path, `/auth/account/`
//! behind the dev gateway), not `/`: the token is a bearer token the gateway accepts, and a
//! cookie for `/` would reach every upstream behind the same host, which could replay it (the
//! review's finding). So it cannot be a `__Host-` cookie (those need `Path=/`); `__Secure-`
//! still binds it to HTTPS (browsers treat loopback as secure).

use axum::{
    http::{header, HeaderMap, HeaderValue},
    response::Response,
};

use super::{layout, see_other, Failure};
use crate::{
    extract::cookie,
    service::{self, Error, VerifiedToken},
    state::AppState,
};

/// The cookie's name.
pub(super) const COOKIE: &str = "__Secure-auth-account";

/// The cookie's `Path`: the pages' directory as a browser reaches it, from `AUTH_PUBLIC_URL`.
fn path(state: &AppState) -> String {
    let base = url::Url::parse(&state.config.public_url)
        .map(|url| url.path().trim_end_matches('/').to_owned())
        .unwrap_or_default();
    format!("{base}/account/")
}

/// A visitor whose cookie holds a valid access token of a live session.
pub(super) struct SignedIn {
    /// The access token, for the operations that take one.
    pub(super) token: String,
    /// Its claims.
    pub(super) verified: VerifiedToken,
}

/// The signed-in visitor of `headers`; a 303 to `signin` clearing the cookie when there is
/// none or its token is no longer valid; a page of the failure when it cannot be told.
pub(super) async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<SignedIn, Response> {
    let Some(token) = cookie(headers, COOKIE) else {
        return Err(clear(state, see_other("signin")));
    };
    match service::access::validate(state, token).await {
        Ok(verified) => Ok(SignedIn {
            token: token.to_owned(),
            verified,
        }),
        Err(Error::InvalidToken(_)) => Err(clear(state, see_other("signin"))),
        Err(e) => Err(layout::message_page(&Failure::from(e))),
    }
}

/// `response` setting the cookie to `access_token` for `max_age_secs`.
pub(super) fn set(
    state: &AppState,
    mut response: Response,
    access_token: &str,
    max_age_secs: i64,
) -> Response {
    let path = path(state);
    let cookie = format!(
        "{COOKIE}={access_token}; Path={path}; Max-Age={max_age_secs}; Secure; HttpOnly; SameSite=Strict"
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// `response` removing the cookie.
pub(super) fn clear(state: &AppState, mut response: Response) -> Response {
    let path = path(state);
    let cookie = format!("{COOKIE}=; Path={path}; Max-Age=0; Secure; HttpOnly; SameSite=Strict");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}
