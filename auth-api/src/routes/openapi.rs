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
    components(schemas(ErrorBody, TokenResponse, AccessClaims, JwksDoc, PublicJwkDoc, jwks::DiscoveryDoc, StatusDoc, sessions::LogoutScope)),
    modifiers(&BearerScheme),
)]
pub struct ApiDoc;

/// `{"keys": [...]}`: a JWK Set (RFC 7517 §5) of public keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct JwksDoc {
    /// Public JWKs; never an `oct` key or a private member.
    pub keys: Vec<PublicJwkDoc>,
}

/// One public JWK (RFC 7517, RFC 7518 §6, RFC 8037 §2).
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicJwkDoc {
    /// `EC` (ES256), `OKP` (EdDSA) or `RSA` (RS256).
    #[schema(pattern = "^(EC|OKP|RSA)$")]
    pub kty: String,
    /// The key id that tokens name in their header.
    pub kid: String,
    /// `ES256`, `EdDSA` or `RS256`.
    #[schema(pattern = "^(ES256|EdDSA|RS256)$")]
    pub alg: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    #[schema(pattern = "^sig$")]
    pub use_: String,
    /// `P-256` (EC) or `Ed25519` (OKP).
    pub crv: Option<String>,
    /// EC x coordinate, or the OKP public key; base64url.
    pub x: Option<String>,
    /// EC y coordinate; base64url.
    pub y: Option<String>,
    /// RSA modulus; base64url.
    pub n: Option<String>,
    /// RSA public exponent; base64url.
    pub e: Option<String>,
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
