//! The OpenAPI document of the public API, generated from the handlers' annotations and served
//! at `GET /openapi.json`.

use serde::Serialize;
use utoipa::{
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi, ToSchema,
};

use super::{accounts, health, jwks, password, sessions, validate};
use crate::{error::ErrorBody, state::TokenResponse, tokens::AccessClaims};

/// The public API.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "auth-api", description = "Signup, login, rotating refresh tokens, logout and validation."),
    paths(
        accounts::signup,
        accounts::login,
        sessions::refresh,
        sessions::logout,
        password::change_password,
        validate::validate,
        jwks::public_jwks,
        health::healthz,
        health::readyz,
        health::metrics,
    ),
    components(schemas(ErrorBody, TokenResponse, AccessClaims, JwksDoc, StatusDoc, sessions::LogoutScope)),
    modifiers(&BearerScheme),
)]
pub struct ApiDoc;

/// `{"keys": [...]}`: a JWK Set (RFC 7517 §5).
#[derive(Debug, Serialize, ToSchema)]
pub struct JwksDoc {
    /// Public JWKs.
    pub keys: Vec<serde_json::Value>,
}

/// `{"status": "ok"}` or `{"status": "ready"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusDoc {
    /// `ok` or `ready`.
    pub status: String,
}

#[derive(Debug)]
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// `GET /openapi.json`.
pub(super) async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
