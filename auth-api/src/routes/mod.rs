//! The HTTP surface: the public router, the internal router, and the middleware both share.

mod accounts;
mod health;
mod internal;
pub mod jwks;
pub mod openapi;
mod password;
mod sessions;
mod validate;

use std::{net::SocketAddr, time::Instant};

use axum::{
    extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State},
    http::{header, HeaderValue},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use tower_http::catch_panic::CatchPanicLayer;

use crate::{
    error::{ApiError, ServerFault},
    metrics::HttpLabels,
    state::AppState,
};

/// Largest request body accepted; bigger ones get 413 before any work is done.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The public API (`AUTH_LISTEN`).
pub fn router(state: AppState) -> Router {
    let credentials = Router::new()
        .route("/signup", post(accounts::signup))
        .route("/login", post(accounts::login))
        .route("/refresh", post(sessions::refresh))
        .route("/password", post(password::change_password))
        .route_layer(middleware::from_fn_with_state(state.clone(), limit_by_ip));
    Router::new()
        .merge(credentials)
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
        .with_common_layers(state)
}

/// The internal API (`AUTH_INTERNAL_LISTEN`): every route needs `AUTH_INTERNAL_TOKEN`.
pub fn internal_router(state: AppState) -> Router {
    Router::new()
        .route("/internal/keys", get(internal::internal_keys))
        .route("/internal/revocations", get(internal::revocations))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            internal::require_internal_token,
        ))
        .with_common_layers(state)
}

trait CommonLayers {
    fn with_common_layers(self, state: AppState) -> Router;
}

impl CommonLayers for Router<AppState> {
    fn with_common_layers(self, state: AppState) -> Router {
        self.fallback(|| async { ApiError::NotFound })
            .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            // Inside `observe`, so that a panic's 500 is counted and logged like any other.
            .layer(CatchPanicLayer::custom(|_| {
                ApiError::Internal(anyhow::anyhow!("a handler panicked")).into_response()
            }))
            .layer(middleware::from_fn_with_state(state.clone(), observe))
            .with_state(state)
    }
}

/// Refuses a client address that has used up its bucket: 429 with `Retry-After`.
async fn limit_by_ip(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>();
    let ip = state.ip_limiter.client_ip(peer, request.headers());
    match state.ip_limiter.check(ip).await {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            tracing::info!(
                event = "rate_limited",
                scope = "ip",
                "client address over its limit"
            );
            // Counted with the endpoint's other outcomes, like the per-email lock.
            match request.uri().path() {
                "/login" => state.metrics.login("rate_limited"),
                "/refresh" => state.metrics.refresh("rate_limited"),
                "/signup" => state.metrics.signup("rate_limited"),
                _ => {}
            }
            ApiError::RateLimited {
                retry_after_secs: wait.as_secs().max(1),
            }
            .into_response()
        }
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
    let method = match request.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS") => m,
        _ => "other",
    }
    .to_owned();
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
    state.metrics.http_request(HttpLabels {
        route,
        method,
        status,
    });
    response
}
