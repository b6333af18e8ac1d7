//! The OpenAPI document of the public API, generated from the handlers' annotations and served
//! at `GET /openapi.json`.

use utoipa::{
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi,
};

use super::{accounts, health, jwks, password, sessions, validate, TokenResponse};
use crate::{error::ErrorBody, service::LogoutScope, tokens::AccessClaims};

/// The public API.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "auth-api", description = "Signup, login, rotating refresh tokens, logout and validation; the public keys and discovery document of the access tokens."),
    paths(
        accounts::signup,
        accounts::login,
        sessions::refresh,
        sessions::logout,
        password::change_password,
        validate::validate,
        jwks::public_jwks,
        jwks::openid_configuration,
        jwks::oauth_authorization_server,
        health::healthz,
        health::readyz,
        health::metrics,
    ),
    components(schemas(ErrorBody, TokenResponse, AccessClaims, jwks::JwksDoc, jwks::PublicJwkDoc, jwks::DiscoveryDoc, health::StatusDoc, LogoutScope)),
    modifiers(&BearerScheme),
)]
pub struct ApiDoc;

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
