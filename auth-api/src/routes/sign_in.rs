//! `GET /authorize`, `GET /callback` and `POST /token?grant_type=pkce`: adapters of
//! [`service::sign_in`] (issue 14). The first two answer browsers: a redirect, or an error page
//! when there is nowhere to redirect to (HTML for a browser, JSON for anything else).

use axum::{
    extract::{RawQuery, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{Html, IntoResponse, Response},
};
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use url::form_urlencoded;
use utoipa::ToSchema;

use super::token_reply;
use crate::{
    error::{ApiError, ErrorBody, Result},
    extract::{cookie, Json},
    service::{
        self,
        sign_in::{Callback, Reason, Refused, StartRequest, BINDING_COOKIE},
    },
    state::AppState,
};

/// `{"auth_code", "code_verifier"}` (GoTrue's names); deliberately without `Debug`.
#[derive(Deserialize, ToSchema)]
pub(super) struct PkceTokenRequest {
    auth_code: String,
    code_verifier: String,
}

/// `GET /authorize`: 302 to the provider with the binding cookie set, or to `redirect_to` with
/// an error, or an error page when `redirect_to` is the problem.
pub(super) async fn authorize(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let params = Params::parse(query.as_deref());
    let request = StartRequest {
        provider: params.get("provider"),
        redirect_to: params.get("redirect_to"),
        code_challenge: params.get("code_challenge"),
        code_challenge_method: params.get("code_challenge_method"),
        binding: cookie(&headers, BINDING_COOKIE),
    };
    match service::sign_in::start(&state, &request).await {
        Ok(started) => {
            let mut response = redirect(started.location.as_str());
            // `__Host-`: Secure, Path=/, no Domain. Browsers treat http://localhost and
            // http://127.0.0.1 as secure contexts, so this works in the dev stack too.
            let cookie = format!(
                "{BINDING_COOKIE}={}; Path=/; Max-Age={}; Secure; HttpOnly; SameSite=Lax",
                started.binding.expose_secret(),
                started.max_age_secs
            );
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(refused) => refusal(&refused, &headers),
    }
}

/// `GET /callback`: 302 to `redirect_to` with a one-time `code`, or with an error, or an error
/// page when the flow is unknown.
pub(super) async fn callback(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let params = Params::parse(query.as_deref());
    let callback = Callback {
        state: params.get("state"),
        code: params.get("code"),
        error: params.get("error"),
        iss: params.get("iss"),
        binding: cookie(&headers, BINDING_COOKIE),
    };
    match service::sign_in::finish(&state, &callback).await {
        Ok(location) => redirect(location.as_str()),
        Err(refused) => refusal(&refused, &headers),
    }
}

/// `POST /token?grant_type=pkce`: the one-time code of `/callback` and the app's PKCE verifier
/// for a session: 200 like `/login`, 401 `invalid_grant`, 403 `account_disabled`, 400
/// `unsupported_grant_type`.
pub(super) async fn token(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    Json(body): Json<PkceTokenRequest>,
) -> Result<Response> {
    if Params::parse(query.as_deref()).get("grant_type") != Some("pkce") {
        return Err(ApiError::UnsupportedGrantType);
    }
    let tokens = service::sign_in::exchange(&state, &body.auth_code, &body.code_verifier).await?;
    Ok(token_reply(tokens))
}

/// A 302 to `location` that no cache keeps and that leaks no URL (the callback's carries the
/// provider's code) to the next page as a referrer.
fn redirect(location: &str) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, value);
    }
    no_store(headers);
    response
}

fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// A refusal: back to the app when it is known, else an error page with the status of
/// [`page_status`].
fn refusal(refused: &Refused, headers: &HeaderMap) -> Response {
    if let Some(location) = refused.location() {
        return redirect(location.as_str());
    }
    let reason = refused.reason;
    let status = page_status(reason);
    let mut response = if wants_html(headers) {
        (status, Html(error_page(reason))).into_response()
    } else {
        let body = ErrorBody {
            error: reason.code().to_owned(),
            message: reason.description().to_owned(),
            reason: None,
            mfa_token: None,
        };
        (status, axum::Json(body)).into_response()
    };
    let headers = response.headers_mut();
    no_store(headers);
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(5));
    }
    response
}

/// The status of an error page.
fn page_status(reason: Reason) -> StatusCode {
    match reason {
        Reason::Unavailable | Reason::ProviderUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        Reason::ProviderInvalidResponse => StatusCode::BAD_GATEWAY,
        Reason::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// Whether the client asked for HTML (a browser's navigation does).
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("text/html"))
}

/// A plain page: no script, no external asset; the text is one of ours, escaped anyway.
fn error_page(reason: Reason) -> String {
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>Sign-in failed</title></head>\
         <body style=\"font-family:sans-serif;max-width:36em;margin:3em auto\">\
         <h1>Sign-in failed</h1><p>{}</p><p><small>Error: <code>{}</code></small></p>\
         </body></html>\n",
        escape(reason.description()),
        escape(reason.code())
    )
}

/// A query's parameters. RFC 6749 §3.1: a parameter sent twice is refused, here by reading it
/// as absent, so that no check can be satisfied by one copy and the other one used.
struct Params(Vec<(String, String)>);

/// The most parameters a query of ours may have: ours are a handful.
const MAX_PARAMS: usize = 64;

impl Params {
    /// A query of more than [`MAX_PARAMS`] parameters reads as empty (every parameter absent),
    /// so that none is judged on a part of the query.
    fn parse(query: Option<&str>) -> Self {
        let params: Vec<(String, String)> =
            form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .take(MAX_PARAMS + 1)
                .map(|(name, value)| (name.into_owned(), value.into_owned()))
                .collect();
        if params.len() > MAX_PARAMS {
            return Self(Vec::new());
        }
        Self(params)
    }

    fn get(&self, name: &str) -> Option<&str> {
        let mut found = self.0.iter().filter(|(key, _)| key == name);
        match (found.next(), found.next()) {
            (Some((_, value)), None) => Some(value),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_parameter_reads_as_absent() {
        let params = Params::parse(Some("state=a&code=b&state=c&x=%20y"));
        assert_eq!(params.get("state"), None);
        assert_eq!(params.get("code"), Some("b"));
        assert_eq!(params.get("x"), Some(" y"));
        assert_eq!(Params::parse(None).get("state"), None);
        let padded = format!("state=s{}", "&x=1".repeat(MAX_PARAMS));
        assert_eq!(Params::parse(Some(&padded)).get("state"), None);
        let full = format!("state=s{}", "&x=1".repeat(MAX_PARAMS - 1));
        assert_eq!(Params::parse(Some(&full)).get("state"), Some("s"));
    }

    #[test]
    fn the_error_page_has_no_markup_from_outside() {
        let page = error_page(Reason::InvalidState);
        assert!(page.contains("invalid_state"));
        assert!(!page.contains("<script"));
    }
}
