//! The HTTP surface: the public router, the internal router, and the middleware both share.
//!
//! Each route module is an adapter: it extracts the request, calls one operation of
//! [`crate::service`] and maps the result to a response (errors through [`ApiError`]). No route
//! module uses another; what two of them answer alike (the token body) is here.

mod accounts;
pub mod admin;
mod email;
mod health;
mod internal;
pub mod jwks;
pub mod openapi;
mod password;
mod sessions;
mod sign_in;
mod totp;
mod validate;

pub(crate) use accounts::rfc3339;
pub use internal::PAGE as REVOCATION_FEED_PAGE;

use std::{net::SocketAddr, time::Instant};

use axum::{
    extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State},
    http::{header, HeaderValue, Method},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use tower::{util::MapRequestLayer, ServiceBuilder};
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
};

use serde::Serialize;

use crate::{
    correlation,
    error::{ApiError, ServerFault, Shed},
    metrics::{HttpLabels, Metrics},
    service::TokenPair,
    state::AppState,
    throttle::CountOutcome,
};

/// Largest request body accepted; bigger ones get 413 before any work is done.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The public API (`AUTH_LISTEN`).
pub fn router(state: AppState) -> Router {
    // The credential endpoints, limited per client address (SECURITY.md E 49); each that counts
    // its outcomes counts a refusal with them. `/password` checks a password: in the bucket too.
    // `/logout` is not: a neighbour behind the same address spending the bucket on guesses must
    // never stop anyone from ending their own session, and without a valid token it costs what
    // `/validate` costs (a signature check, no database).
    let limited = |outcomes: Option<CountOutcome>| {
        middleware::from_fn_with_state((state.clone(), outcomes), limit_by_ip)
    };
    let api = Router::new()
        .route(
            "/signup",
            post(accounts::signup).layer(limited(Some(Metrics::signup))),
        )
        .route(
            "/login",
            post(accounts::login).layer(limited(Some(Metrics::login))),
        )
        .route(
            "/login/mfa",
            post(totp::login_mfa).layer(limited(Some(Metrics::login))),
        )
        .route("/verify", post(email::verify).layer(limited(None)))
        .route("/verify/resend", post(email::resend).layer(limited(None)))
        .route("/recover", post(email::recover).layer(limited(None)))
        .route("/reset", post(email::reset).layer(limited(None)))
        .route("/totp/enroll", post(totp::enroll).layer(limited(None)))
        .route("/totp/confirm", post(totp::confirm).layer(limited(None)))
        .route("/totp/disable", post(totp::disable).layer(limited(None)))
        .route(
            "/refresh",
            post(sessions::refresh).layer(limited(Some(Metrics::refresh))),
        )
        .route(
            "/password",
            post(password::change_password).layer(limited(None)),
        )
        .route("/authorize", get(sign_in::authorize).layer(limited(None)))
        .route("/callback", get(sign_in::callback).layer(limited(None)))
        .route(
            "/token",
            post(sign_in::token).layer(limited(Some(Metrics::login))),
        )
        .route("/logout", post(sessions::logout))
        .route("/validate", get(validate::validate))
        .route(jwks::JWKS_PATH, get(jwks::public_jwks))
        .route(
            "/.well-known/openid-configuration",
            get(jwks::openid_configuration),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(jwks::oauth_authorization_server),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .merge(crate::pages::router(limited));
    // Inside `observe` and outside everything else, fallbacks and the 408 and panic answers
    // included, so that a browser reads every error. Not on the hosted pages, which are
    // same-origin forms with cookies.
    let cors = state.config.cors_allowed_origins.clone();
    api.with_common_layers(state, |router| match cors {
        Some(origins) => router.layer(origins.layer(|path| !crate::pages::is_page(path))),
        None => router,
    })
}

/// The internal API (`AUTH_INTERNAL_LISTEN`): the gateway's keys and revocation feed behind
/// `AUTH_INTERNAL_TOKEN`, the Admin API behind `AUTH_ADMIN_TOKEN`, and nothing without a token.
pub fn internal_router(state: AppState) -> Router {
    let door = middleware::from_fn_with_state(state.clone(), internal::require_token);
    Router::new()
        .route("/internal/keys", get(internal::internal_keys))
        .route("/internal/revocations", get(internal::revocations))
        .merge(admin::routes())
        .with_common_layers(state, |router| router.layer(door))
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

trait CommonLayers: Sized {
    /// The JSON fallbacks and the layers both listeners share; `inner` adds the listener's own
    /// layer (CORS, the token check) between them and `observe`, over the fallbacks too.
    fn with_common_layers(self, state: AppState, inner: impl FnOnce(Self) -> Self) -> Router;
}

impl CommonLayers for Router<AppState> {
    fn with_common_layers(self, state: AppState, inner: impl FnOnce(Self) -> Self) -> Router {
        // Each `Router::layer` wraps every route in one more boxed service, cloned and
        // allocated for each request: the layers go on in two `ServiceBuilder`s, one box each.
        // A `ServiceBuilder` lists its layers outermost first.
        let routed = self
            .fallback(|| async { ApiError::NotFound })
            .method_not_allowed_fallback(method_not_allowed)
            .layer(
                ServiceBuilder::new()
                    // Inside `observe`: a timed-out request is counted and answered in JSON.
                    .layer(middleware::from_fn_with_state(state.clone(), time_limit))
                    // Inside `observe` too, so that a panic's 500 is counted and logged like
                    // any other.
                    .layer(CatchPanicLayer::custom(|_| {
                        ApiError::Internal(anyhow::anyhow!("a handler panicked")).into_response()
                    }))
                    .layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
            );
        inner(routed)
            .layer(
                ServiceBuilder::new()
                    // Outermost, the incoming `x-request-id` is checked, made when missing or
                    // unusable, and returned.
                    .layer(MapRequestLayer::new(correlation::drop_invalid_request_id))
                    .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                    .layer(PropagateRequestIdLayer::x_request_id())
                    // Outside `observe`: the request span (correlation.rs), so that its line and
                    // every line and audit event under it carry the request id and trace id.
                    .layer(middleware::from_fn(correlation::in_request_span))
                    .layer(middleware::from_fn_with_state(state.clone(), observe)),
            )
            .with_state(state)
    }
}

/// Answers `408 request_timeout` to a request not answered within `AUTH_REQUEST_TIMEOUT_SECS`
/// of its head (SECURITY.md I 97): a body trickling in, or a backing service that hangs, cannot
/// hold a connection and a task for ever. The handler's future is dropped, as when a client goes
/// away (every operation is cancellation-safe).
async fn time_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(state.config.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_elapsed) => {
            tracing::info!(event = "request_timeout", "request not answered in time");
            let mut response = ApiError::RequestTimeout.into_response();
            // The rest of a body that is still arriving must not be read as the next request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

/// Refuses a client address that has used up its bucket: 429 with `Retry-After`, counted as
/// `rate_limited` by `outcomes` when the endpoint counts its outcomes.
async fn limit_by_ip(
    State((state, outcomes)): State<(AppState, Option<CountOutcome>)>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>();
    let ip = state.ip_limiter.client_ip(peer, request.headers());
    match state.ip_limiter.admit(ip, &state.metrics, outcomes).await {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

/// Counts every response and logs server faults, once, with their detail.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // A fixed set: a made-up method must not create a new time series for every request.
    let method = match *request.method() {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let mut response = next.run(request).await;
    let status = response.status().as_u16();
    if let Some(fault) = response.extensions().get::<ServerFault>() {
        tracing::error!(%route, %method, status, error = %fault.0, "request failed");
    } else {
        tracing::debug!(%route, %method, status, elapsed_ms = started.elapsed().as_millis() as u64, "request");
    }
    // No response of an auth service should be cached by a shared cache unless it says so.
    response
        .headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    if response.extensions().get::<Shed>().is_some() {
        state.metrics.http_shed(route.clone());
    }
    // To the response head: a streamed body's time is the client's as much as ours.
    state.metrics.http_request(
        HttpLabels {
            route,
            method,
            status,
        },
        started.elapsed(),
    );
    response
}

/// The body of a successful login or refresh (RFC 6749 §5.1).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// The JWT access token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// The opaque refresh token.
    pub refresh_token: String,
    /// Seconds until the refresh token expires if unused.
    pub refresh_expires_in: i64,
    /// Login only: a device token for this user (90 days). Send it with the next logins from
    /// this device: they are then throttled on its own lock, not the email's, so whoever locks
    /// the email by guessing does not lock this device out (SECURITY.md E 48).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_token: Option<String>,
}

/// 200 with the token body and the RFC 6749 §5.1 no-cache headers.
fn token_reply(tokens: TokenPair) -> Response {
    let body = TokenResponse {
        access_token: tokens.access_token,
        token_type: "Bearer",
        expires_in: tokens.expires_in,
        refresh_token: tokens.refresh_token.expose().to_owned(),
        refresh_expires_in: tokens.refresh_expires_in,
        device_token: tokens.device_token,
    };
    let mut response = axum::Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}
