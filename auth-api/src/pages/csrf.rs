//! Login and form CSRF: a double-submit token. A random value in the `__Host-auth-csrf` cookie
//! (HttpOnly, Secure, SameSite=Strict, Path=/: no subdomain can plant it, no other site's
//! request carries it) and the same value in the hidden `csrf` field of every form, compared in
//! constant time. On top, a request that says where it comes from (`Sec-Fetch-Site`, a
//! non-null `Origin`) must come from this origin. Every POST of the pages is checked, the
//! signed-out ones (sign in, sign up, forgot) too: a forged sign-in would sign the victim into
//! the attacker's account.

use axum::{
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::Response,
};
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

use super::{layout, Failure};
use crate::{extract::cookie, oidc::pkce::random_secret};

/// The cookie's name.
pub(super) const COOKIE: &str = "__Host-auth-csrf";

/// Length of a token: 32 random bytes in base64url.
const TOKEN_LEN: usize = 43;

/// The `csrf` field of a posted form.
#[derive(Deserialize)]
pub(super) struct Field {
    #[serde(default)]
    csrf: String,
}

/// The token a form page embeds: the browser's, or a new one to set with the page.
pub(super) struct Token {
    value: String,
    fresh: bool,
}

impl Token {
    /// The request's token when it sent a well-formed one, else a new one.
    pub(super) fn of(headers: &HeaderMap) -> Self {
        match cookie(headers, COOKIE).filter(|value| is_token(value)) {
            Some(value) => Self {
                value: value.to_owned(),
                fresh: false,
            },
            None => Self {
                value: random_secret().expose_secret().to_owned(),
                fresh: true,
            },
        }
    }

    /// The value for the hidden field.
    pub(super) fn value(&self) -> &str {
        &self.value
    }

    /// `response` with the cookie set, when the token is new.
    pub(super) fn set_on(&self, mut response: Response) -> Response {
        if self.fresh {
            let cookie = format!(
                "{COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Strict",
                self.value
            );
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
        }
        response
    }
}

fn is_token(value: &str) -> bool {
    value.len() == TOKEN_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether a request does not come from another site, as far as a browser says: `Sec-Fetch-Site` other
/// than `same-origin` or `none` (typed, bookmarked), or an `Origin` that is not this host.
/// `Origin: null` says nothing (browsers send it for every POST of a `no-referrer` page, as
/// ours are); the token decides.
pub(super) fn is_same_origin(headers: &HeaderMap) -> bool {
    // Every copy counts: a second header must not hide the first.
    let cross_site = headers
        .get_all("sec-fetch-site")
        .iter()
        .any(|site| !matches!(site.as_bytes(), b"same-origin" | b"none"));
    let host = headers.get(header::HOST).map(HeaderValue::as_bytes);
    let foreign_origin = headers
        .get_all(header::ORIGIN)
        .iter()
        .map(HeaderValue::as_bytes)
        .filter(|origin| *origin != b"null")
        .any(|origin| {
            let origin_host = origin
                .windows(3)
                .position(|w| w == b"://")
                .map(|at| &origin[at + 3..]);
            match (origin_host, host) {
                (Some(origin_host), Some(host)) => !origin_host.eq_ignore_ascii_case(host),
                _ => true,
            }
        });
    !cross_site && !foreign_origin
}

/// Whether the form's `csrf` field is the cookie's token.
pub(super) fn token_matches(headers: &HeaderMap, field: &Field) -> bool {
    cookie(headers, COOKIE)
        .filter(|value| is_token(value))
        .is_some_and(|value| bool::from(value.as_bytes().ct_eq(field.csrf.as_bytes())))
}

/// 403: the form is refused.
pub(super) fn refused() -> Response {
    layout::message_page(&Failure::new(
        StatusCode::FORBIDDEN,
        "csrf",
        "This form expired or was sent from another site. Go back, reload the page and try again.",
    ))
}
