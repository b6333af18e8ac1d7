//! The OpenAPI document of the public API, generated from the handlers' annotations and served
//! at `GET /openapi.json`. Social login (`/authorize`, `/callback`, `/token`, issue 14) is
//! documented here by [`SocialLoginPaths`]: two of its three answers are redirects whose meaning
//! is in the `Location` query, which the annotations cannot say.

use utoipa::{
    openapi::{
        header::{Header, HeaderBuilder},
        path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn},
        request_body::RequestBodyBuilder,
        schema::{ObjectBuilder, SchemaFormat, Type},
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
        ContentBuilder, Ref, Required, ResponseBuilder,
    },
    Modify, OpenApi,
};

use super::{
    accounts, email, health, jwks, password, sessions, sign_in, totp, validate, TokenResponse,
};
use crate::{error::ErrorBody, service::LogoutScope, tokens::AccessClaims};

/// The public API.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "auth-api", description = "Signup, login, rotating refresh tokens, logout and validation; the public keys and discovery document of the access tokens."),
    paths(
        accounts::signup,
        accounts::login,
        email::verify,
        email::resend,
        email::recover,
        email::reset,
        sessions::refresh,
        sessions::logout,
        password::change_password,
        totp::login_mfa,
        totp::enroll,
        totp::confirm,
        totp::disable,
        validate::validate,
        jwks::public_jwks,
        jwks::openid_configuration,
        jwks::oauth_authorization_server,
        health::healthz,
        health::readyz,
        health::metrics,
    ),
    components(schemas(ErrorBody, TokenResponse, AccessClaims, jwks::JwksDoc, jwks::PublicJwkDoc, jwks::DiscoveryDoc, health::StatusDoc, LogoutScope, sign_in::PkceTokenRequest)),
    modifiers(&BearerScheme, &SocialLoginPaths),
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

/// `GET /authorize`, `GET /callback` and `POST /token?grant_type=pkce` (whose body is the
/// handler's own `PkceTokenRequest`, listed with the components above).
#[derive(Debug)]
struct SocialLoginPaths;

/// A base64url value of 32 random bytes: `state`, the one-time code, a S256 challenge.
const B64URL_43: &str = "^[A-Za-z0-9_-]{43}$";

impl Modify for SocialLoginPaths {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let paths = &mut openapi.paths;
        paths.add_path_operation("/authorize", vec![HttpMethod::Get], authorize());
        paths.add_path_operation("/callback", vec![HttpMethod::Get], callback());
        paths.add_path_operation("/token", vec![HttpMethod::Post], token());
    }
}

fn authorize() -> OperationBuilder {
    OperationBuilder::new()
        .operation_id(Some("authorize"))
        .tag("social login")
        .summary(Some("Start a sign-in at an external provider"))
        .description(Some(
            "Sends the browser to the provider's sign-in page. `redirect_to` is checked first: \
             missing or not on the operator's allow-list (scheme, host, port and path equal, any \
             query) it is 400 `invalid_redirect`, an error page, since there is nowhere safe to \
             send the browser. Every later problem is a 302 to `redirect_to` with \
             `error` (an RFC 6749 code), `error_code` (ours: `unknown_provider`, \
             `invalid_code_challenge`, `provider_unavailable`, `provider_invalid_response`) and \
             `error_description` in its query. The app keeps the PKCE verifier of \
             `code_challenge`: it redeems the one-time code at `POST /token` with it.",
        ))
        .parameter(query(
            "provider",
            "the provider's name in the operator's providers file",
            ObjectBuilder::new().schema_type(Type::String),
        ))
        .parameter(query(
            "redirect_to",
            "where the browser is sent back to, with `code` or `error`: on the allow-list",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::Custom("uri".to_owned()))),
        ))
        .parameter(query(
            "code_challenge",
            "the app's PKCE challenge: BASE64URL(SHA-256(code_verifier)), 43 characters",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(B64URL_43)),
        ))
        .parameter(query(
            "code_challenge_method",
            "`S256` (case-sensitive; `plain` is refused)",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["S256"])),
        ))
        .response(
            "302",
            ResponseBuilder::new()
                .description(
                    "to the provider's authorization endpoint (`response_type=code`, `state`, \
                     `nonce`, our own S256 PKCE challenge), with the browser-binding cookie \
                     `__Host-auth-sign-in` (Secure, HttpOnly, SameSite=Lax); or, for an error \
                     after `redirect_to` was accepted, to `redirect_to?error=…&error_code=…`",
                )
                .header(
                    "location",
                    string_header("the provider, or redirect_to with an error"),
                )
                .header(
                    "set-cookie",
                    string_header("`__Host-auth-sign-in`, when the flow was started"),
                ),
        )
        .response(
            "400",
            error_page("invalid_redirect: redirect_to missing or not allowed"),
        )
        .response("429", rate_limited())
        .response("503", unavailable())
}

fn callback() -> OperationBuilder {
    OperationBuilder::new()
        .operation_id(Some("callback"))
        .tag("social login")
        .summary(Some("Where the provider sends the browser back"))
        .description(Some(
            "Not called by apps: the provider redirects the browser here (the providers \
             file's `callback_url`). `state` is single-use and short-lived: missing, unknown, \
             expired or already used it is 400 `invalid_state`, an error page. Otherwise the \
             flow is spent and the browser goes to the flow's `redirect_to`: with \
             `code` (one-time, 60 s) on success, else with `error`, `error_code` \
             (`browser_mismatch`, `provider_error`, `issuer_mismatch`, `provider_unavailable`, \
             `provider_invalid_response`, `invalid_id_token`, `email_required`, \
             `email_not_verified`, `email_in_use`, `account_disabled`) and `error_description`.",
        ))
        .parameter(query(
            "state",
            "the flow's state, as /authorize sent it to the provider",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(B64URL_43)),
        ))
        .parameter(optional_query("code", "the provider's authorization code"))
        .parameter(optional_query(
            "iss",
            "the provider's issuer (RFC 9207), checked where the provider sends it",
        ))
        .parameter(optional_query(
            "error",
            "the provider's error, e.g. access_denied when the user declined",
        ))
        .parameter(optional_query(
            "error_description",
            "the provider's description of its error",
        ))
        .response(
            "302",
            ResponseBuilder::new()
                .description(
                    "to the flow's redirect_to, with `code` (a one-time code for POST /token) or \
                     with `error`, `error_code` and `error_description`",
                )
                .header("location", string_header("redirect_to with code or error")),
        )
        .response(
            "400",
            error_page("invalid_state: state missing, unknown, expired or already used"),
        )
        .response("429", rate_limited())
        .response("502", error_page(BAD_GATEWAY_PAGE))
        .response("503", with_retry_after(error_page(UNAVAILABLE_PAGE)))
}

fn token() -> OperationBuilder {
    OperationBuilder::new()
        .operation_id(Some("token"))
        .tag("social login")
        .summary(Some("Redeem a one-time code for tokens"))
        .description(Some(
            "The app's side of a social login: the `code` its redirect_to received and the \
             PKCE verifier of the `code_challenge` it sent to /authorize. The code is spent by \
             the first attempt, right or wrong. The session is an ordinary one (refresh, logout, \
             revocation as for a password login); its access tokens carry `amr: [\"oauth\"]`.",
        ))
        .parameter(
            ParameterBuilder::new()
                .name("grant_type")
                .parameter_in(ParameterIn::Query)
                .required(Required::True)
                .description(Some("`pkce`"))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(["pkce"])),
                )),
        )
        .request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("PkceTokenRequest")))
                        .build(),
                )
                .build(),
        ))
        .response(
            "200",
            ResponseBuilder::new()
                .description("a session, as /login answers it (no device token)")
                .content("application/json", json_of("TokenResponse"))
                .header("cache-control", string_header("no-store")),
        )
        .response(
            "400",
            error_json(
                "unsupported_grant_type (grant_type missing or not pkce), or invalid_request \
                 (malformed JSON, a missing field)",
            ),
        )
        .response(
            "401",
            error_json(
                "invalid_grant: code unknown, used or expired, or code_verifier not matching \
                 the code_challenge",
            ),
        )
        .response("403", error_json("account_disabled"))
        .response("413", error_json("body over 64 KiB"))
        .response("415", error_json("not application/json"))
        .response("429", rate_limited())
        .response("503", unavailable())
}

/// A required query parameter.
fn query(name: &str, description: &str, schema: ObjectBuilder) -> ParameterBuilder {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(schema))
}

/// An optional string query parameter.
fn optional_query(name: &str, description: &str) -> ParameterBuilder {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
}

fn json_of(schema: &str) -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(schema)))
        .build()
}

fn string_header(description: &str) -> Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some(description))
        .build()
}

fn error_json(description: &str) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", json_of("ErrorBody"))
}

/// An error page: HTML for a browser (`Accept` with `text/html`), else our JSON error.
fn error_page(description: &str) -> ResponseBuilder {
    error_json(description).content(
        "text/html",
        ContentBuilder::new()
            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
            .build(),
    )
}

/// An error page's description when the provider answered nonsense and the flow has no
/// `redirect_to` to report it on.
const BAD_GATEWAY_PAGE: &str =
    "provider_invalid_response, when there is no redirect_to to report it on";
/// An error page's description when our store (or the provider) cannot answer and the flow has
/// no `redirect_to` to report it on.
const UNAVAILABLE_PAGE: &str =
    "unavailable or provider_unavailable, when there is no redirect_to to report it on";

/// The per-address limit of E 49, shared with `/login`.
fn rate_limited() -> ResponseBuilder {
    with_retry_after(error_json(
        "rate_limited: too many requests from this address",
    ))
}

fn unavailable() -> ResponseBuilder {
    with_retry_after(error_json("unavailable: the store cannot be reached"))
}

fn with_retry_after(response: ResponseBuilder) -> ResponseBuilder {
    response.header(
        "retry-after",
        HeaderBuilder::new()
            .schema(ObjectBuilder::new().schema_type(Type::Integer))
            .description(Some("seconds to wait"))
            .build(),
    )
}

/// `GET /openapi.json`.
pub(super) async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
