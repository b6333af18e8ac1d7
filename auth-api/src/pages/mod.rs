//! The hosted pages (issue 15): plain, server-rendered HTML under `/account/` that an
//! application can link to instead of building its own forms: sign in (with the second
//! factor), sign up, verify the email and resend the mail, forgot and reset the password,
//! enrol TOTP, the overview, sign out. The links of the mails land here.
//!
//! Each page is an adapter of [`crate::service`] as the JSON routes are: it reads a form,
//! calls one operation and renders its outcome; errors keep the status of the JSON route's
//! [`ApiError`]. What every page shares is here and in the submodules it names: the shell and
//! stylesheet ([`layout`]), the double-submit CSRF token ([`csrf`]), the session cookie
//! ([`session`]) and the security headers of every answer ([`security_headers`]).
//!
//! Every link, form action and redirect is relative: a gateway may serve the public listener
//! under a prefix of its own (`/auth/account/…`). No script, no external asset: the one
//! stylesheet is ours (`style.css`), the QR code an inline SVG.

mod csrf;
mod email;
mod layout;
mod overview;
mod recovery;
mod session;
mod sign_in;
mod sign_up;
mod totp;

use std::{convert::Infallible, sync::Arc};

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::{header, HeaderValue, Method, StatusCode},
    middleware,
    response::{Html, IntoResponse, Response},
    routing::{get, post, Route},
    Router,
};
use maud::Markup;
use serde::de::DeserializeOwned;
use tower::{Layer, Service};

use crate::{
    error::{ApiError, ServerFault},
    state::AppState,
    throttle::CountOutcome,
};

/// The CSRF cookie (double submit, see [`csrf`]).
pub const CSRF_COOKIE: &str = csrf::COOKIE;
/// The session cookie: the access token of the sign-in (see [`session`]).
pub const SESSION_COOKIE: &str = session::COOKIE;

/// The Content-Security-Policy of every page: nothing but our own stylesheet, inline images
/// (`data:`, the favicon), forms to ourselves, no framing, no `<base>`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; \
     img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Whether `path` is one of the hosted pages (`/account` and under it): same-origin forms with
/// cookies, which get no CORS headers.
pub fn is_page(path: &str) -> bool {
    path == "/account" || path.starts_with("/account/")
}

/// The pages, for the public router; `limited` is its per-address limiter (SECURITY.md E 49),
/// put on every POST that checks a password or a code or sends mail, as on the JSON routes
/// that do the same.
pub fn router<L>(limited: impl Fn(Option<CountOutcome>) -> L) -> Router<AppState>
where
    L: Layer<Route> + Clone + Send + Sync + 'static,
    L::Service: Service<Request> + Clone + Send + Sync + 'static,
    <L::Service as Service<Request>>::Response: IntoResponse + 'static,
    <L::Service as Service<Request>>::Error: Into<Infallible> + 'static,
    <L::Service as Service<Request>>::Future: Send + 'static,
{
    use crate::metrics::Metrics;
    let login = || limited(Some(Metrics::login));
    Router::new()
        .route("/account", get(overview::to_overview))
        .route("/account/", get(overview::overview))
        .route("/account/style.css", get(layout::stylesheet))
        .route("/account/signin", get(sign_in::form))
        .route("/account/signin", post(sign_in::sign_in).layer(login()))
        .route("/account/mfa", post(sign_in::mfa).layer(login()))
        .route("/account/signup", get(sign_up::form))
        .route(
            "/account/signup",
            post(sign_up::sign_up).layer(limited(Some(Metrics::signup))),
        )
        .route("/account/verify", get(email::verify_form))
        .route("/account/verify", post(email::verify).layer(limited(None)))
        .route("/account/resend", get(email::resend_form))
        .route("/account/resend", post(email::resend).layer(limited(None)))
        .route("/account/forgot", get(recovery::forgot_form))
        .route(
            "/account/forgot",
            post(recovery::forgot).layer(limited(None)),
        )
        .route("/account/reset", get(recovery::reset_form))
        .route("/account/reset", post(recovery::reset).layer(limited(None)))
        .route("/account/totp", get(totp::form))
        .route("/account/totp", post(totp::enrol).layer(limited(None)))
        .route(
            "/account/totp-confirm",
            post(totp::confirm).layer(limited(None)),
        )
        // Like `/logout`: never limited, so that nobody is kept from ending their session.
        .route("/account/signout", post(overview::sign_out))
        .layer(middleware::map_response(security_headers))
}

/// The headers of every page, redirect and error of this module.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    // The mail links carry their token in the query: no referrer, ever.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// A rendered page with its status.
fn html(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// `markup` with the status of `failure`, or 200 without one.
fn respond(failure: Option<&Failure>, markup: Markup) -> Response {
    match failure {
        Some(failure) => failure.page(markup),
        None => html(StatusCode::OK, markup),
    }
}

/// A 303 to `location`, relative to the page that answers.
fn see_other(location: &'static str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(location));
    response
}

/// What a failed operation tells a person, and with which status: the JSON route's (so that
/// a page and an API client see the same 4xx or 5xx), `Retry-After` where it has one.
struct Failure {
    status: StatusCode,
    /// The JSON route's `error` code, or one of ours.
    code: &'static str,
    message: String,
    retry_after_secs: Option<u64>,
    /// A server fault's detail, for the `observe` middleware to log (never shown).
    fault: Option<ServerFault>,
}

impl From<ApiError> for Failure {
    fn from(err: ApiError) -> Self {
        let message = match &err {
            ApiError::InvalidCredentials => "The email or the password is wrong.".to_owned(),
            ApiError::RateLimited { .. } => {
                "Too many attempts. Wait a moment and try again.".to_owned()
            }
            ApiError::InvalidCode => "The code is wrong or was already used.".to_owned(),
            ApiError::InvalidMfaToken => {
                "The sign-in took too long or was already completed. Sign in again.".to_owned()
            }
            ApiError::WrongPassword => "The password is wrong.".to_owned(),
            ApiError::TotpNotPending => {
                "No set-up is waiting for a code (it lasts ten minutes). Start again.".to_owned()
            }
            _ if err.code() == INVALID_EMAIL_TOKEN => {
                "This link is no longer valid: it was used already, or it expired. Ask for a new one."
                    .to_owned()
            }
            _ => sentence(&err.client_message()),
        };
        Self {
            status: err.status(),
            code: err.code(),
            message,
            retry_after_secs: err.retry_after_secs(),
            // Logged once, by the `observe` middleware, as for the JSON routes.
            fault: err
                .is_server_fault()
                .then(|| ServerFault(Arc::new(err.to_string()))),
        }
    }
}

impl From<crate::service::Error> for Failure {
    fn from(err: crate::service::Error) -> Self {
        ApiError::from(err).into()
    }
}

impl Failure {
    /// A refusal of ours with its own status, code and text.
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
            fault: None,
        }
    }

    /// The page `markup` (which shows [`Failure::message`]) with this failure's status.
    fn page(&self, markup: Markup) -> Response {
        let mut response = html(self.status, markup);
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(fault) = &self.fault {
            response.extensions_mut().insert(fault.clone());
        }
        response
    }
}

/// The code of a mail link that is unknown, used or expired (`ApiError::InvalidEmailToken`).
const INVALID_EMAIL_TOKEN: &str = "invalid_email_token";

/// `text` as a sentence: a capital first letter and a full stop.
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars
        .next()
        .map(|c| c.to_uppercase().collect())
        .unwrap_or_default();
    out.push_str(chars.as_str());
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

/// A posted form: `application/x-www-form-urlencoded` whose `csrf` field matches the CSRF
/// cookie, sent by a page of this origin (Fetch Metadata and `Origin`, when the browser sends
/// them). Every refusal is a page: a body that does not parse is its 4xx (never a 5xx), a
/// CSRF failure 403.
struct PostedForm<T>(T);

impl<T: DeserializeOwned> FromRequest<AppState> for PostedForm<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let headers = request.headers().clone();
        if !csrf::is_same_origin(&headers) {
            return Err(csrf::refused());
        }
        let content_type = headers.get(header::CONTENT_TYPE).cloned();
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| bad_form(rejection.status()))?;
        let parse = |bytes: Bytes| {
            let mut again = Request::new(axum::body::Body::from(bytes));
            // `Form` reads a GET's query instead of its body.
            *again.method_mut() = Method::POST;
            if let Some(content_type) = content_type.clone() {
                again
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, content_type);
            }
            again
        };
        let axum::Form(token) = axum::Form::<csrf::Field>::from_request(parse(body.clone()), state)
            .await
            .map_err(|rejection| bad_form(rejection.status()))?;
        if !csrf::token_matches(&headers, &token) {
            return Err(csrf::refused());
        }
        let axum::Form(form) = axum::Form::<T>::from_request(parse(body), state)
            .await
            .map_err(|rejection| bad_form(rejection.status()))?;
        Ok(Self(form))
    }
}

/// The page of a body that cannot be read as the form: its 4xx (a 5xx of the extractor, which
/// no form of ours causes, reads as 400).
fn bad_form(status: StatusCode) -> Response {
    let status = if status.is_client_error() {
        status
    } else {
        StatusCode::BAD_REQUEST
    };
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "The form is too large.",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "The form was not sent as a form.",
        _ => "The form could not be read.",
    };
    layout::message_page(&Failure::new(status, "invalid_request", message))
}
