//! The back-channel calls of a flow: the code exchange at the token endpoint (RFC 6749 §4.1.3
//! with RFC 7636's `code_verifier`, client authentication `client_secret_basic`), OIDC userinfo,
//! and GitHub's user and emails API. Each answer is capped, and nothing secret is logged or
//! put in an error.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Map, Value};
use url::form_urlencoded;
use url::Url;

use crate::oidc::http::check_status;
use crate::oidc::{
    Error, ExternalIdentity, HttpClient, Result, TOKEN_RESPONSE_MAX_BYTES, USERINFO_MAX_BYTES,
};

const TOKEN: &str = "token response";
const USERINFO: &str = "userinfo";
const GITHUB_USER: &str = "GitHub user";
const GITHUB_EMAILS: &str = "GitHub emails";

/// One code exchange.
#[derive(Debug, Clone, Copy)]
pub struct CodeExchange<'a> {
    /// The provider's `token_endpoint`.
    pub token_endpoint: &'a Url,
    /// Our client id.
    pub client_id: &'a str,
    /// Our client secret.
    pub client_secret: &'a SecretString,
    /// The `code` from the callback.
    pub code: &'a SecretString,
    /// The `redirect_uri` sent in the authorization request, identical.
    pub redirect_uri: &'a str,
    /// The flow's PKCE verifier.
    pub code_verifier: &'a SecretString,
}

/// A successful token response. `Debug` shows no token.
#[derive(Debug)]
pub struct TokenResponse {
    /// The provider's access token (for userinfo or GitHub's API).
    pub access_token: SecretString,
    /// The ID token (OIDC providers), still to be verified.
    pub id_token: Option<SecretString>,
    /// The scopes granted, if the provider says.
    pub scope: Option<String>,
}

/// Exchanges the code: POSTs `grant_type=authorization_code`, `code`, `redirect_uri` and
/// `code_verifier` with HTTP Basic client authentication (id and secret form-urlencoded first,
/// RFC 6749 §2.3.1), `Accept: application/json` (GitHub answers form-encoded otherwise).
///
/// An RFC 6749 §5.2 error (with status 400 or 401, or with 200 as GitHub sends it) is
/// [`Error::TokenRefused`]; 429 and 5xx are [`Error::Unavailable`]; a 200 without a
/// `bearer` `access_token` is [`Error::InvalidResponse`].
pub async fn exchange_code(
    http: &HttpClient,
    exchange: &CodeExchange<'_>,
) -> Result<TokenResponse> {
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", exchange.code.expose_secret())
        .append_pair("redirect_uri", exchange.redirect_uri)
        .append_pair("code_verifier", exchange.code_verifier.expose_secret())
        .finish();
    let request = http
        .post(exchange.token_endpoint)
        .header(
            AUTHORIZATION,
            basic_auth(exchange.client_id, exchange.client_secret),
        )
        .header(ACCEPT, "application/json")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body);
    let (status, body) = http.send(request, TOKEN, TOKEN_RESPONSE_MAX_BYTES).await?;
    let parsed = auth_jwt::parse_json_object(&body).ok();
    if matches!(
        status,
        StatusCode::OK | StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED
    ) {
        if let Some(error) = parsed.as_ref().and_then(|object| object.get("error")) {
            return Err(Error::TokenRefused {
                error: error_code(error),
            });
        }
    }
    check_status(status, TOKEN)?;
    let object = parsed.ok_or_else(|| Error::invalid(TOKEN, "not a JSON object"))?;
    let access_token = match object.get("access_token") {
        Some(Value::String(token)) if !token.is_empty() => SecretString::from(token.clone()),
        _ => return Err(Error::invalid(TOKEN, "no access_token")),
    };
    match object.get("token_type") {
        Some(Value::String(kind)) if kind.eq_ignore_ascii_case("bearer") => {}
        _ => return Err(Error::invalid(TOKEN, "token_type is not bearer")),
    }
    let id_token = match object.get("id_token") {
        None | Some(Value::Null) => None,
        Some(Value::String(token)) => Some(SecretString::from(token.clone())),
        Some(_) => return Err(Error::invalid(TOKEN, "id_token is not a string")),
    };
    let scope = match object.get("scope") {
        Some(Value::String(scope)) => Some(scope.clone()),
        _ => None,
    };
    Ok(TokenResponse {
        access_token,
        id_token,
        scope,
    })
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))`, RFC 6749 §2.3.1.
fn basic_auth(client_id: &str, client_secret: &SecretString) -> String {
    let encode =
        |value: &str| form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>();
    let pair = zeroize::Zeroizing::new(format!(
        "{}:{}",
        encode(client_id),
        encode(client_secret.expose_secret())
    ));
    format!("Basic {}", STANDARD.encode(pair.as_bytes()))
}

/// The provider's `error` code, kept only if it is made of RFC 6749 §5.2's characters and
/// short; anything else becomes `invalid_error`.
fn error_code(error: &Value) -> String {
    match error {
        Value::String(code)
            if (1..=64).contains(&code.len())
                && code
                    .bytes()
                    .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E)) =>
        {
            code.clone()
        }
        _ => "invalid_error".to_owned(),
    }
}

/// GETs `url` with the access token and reads a JSON object, at most [`USERINFO_MAX_BYTES`].
async fn get_with_token(
    http: &HttpClient,
    url: &Url,
    access_token: &SecretString,
    accept: &str,
    what: &'static str,
) -> Result<Vec<u8>> {
    let request = http
        .get(url)
        .header(
            AUTHORIZATION,
            format!("Bearer {}", access_token.expose_secret()),
        )
        .header(ACCEPT, accept)
        .header("X-GitHub-Api-Version", "2022-11-28");
    let (status, body) = http.send(request, what, USERINFO_MAX_BYTES).await?;
    check_status(status, what)?;
    Ok(body)
}

fn object(body: &[u8], what: &'static str) -> Result<Map<String, Value>> {
    auth_jwt::parse_json_object(body).map_err(|e| Error::invalid(what, e.to_string()))
}

/// OIDC userinfo (Core §5.3): its `sub` must be the ID token's `subject` (§5.3.4, else the
/// answer is refused), then its `email` and `email_verified` (only JSON `true`).
pub async fn userinfo(
    http: &HttpClient,
    endpoint: &Url,
    access_token: &SecretString,
    subject: &str,
) -> Result<ExternalIdentity> {
    let body = get_with_token(http, endpoint, access_token, "application/json", USERINFO).await?;
    let claims = object(&body, USERINFO)?;
    match claims.get("sub") {
        Some(Value::String(sub)) if sub == subject => {}
        _ => return Err(Error::invalid(USERINFO, "sub is not the ID token's")),
    }
    let email = match claims.get("email") {
        Some(Value::String(email)) => Some(email.clone()),
        _ => None,
    };
    Ok(ExternalIdentity {
        subject: subject.to_owned(),
        email_verified: email.is_some() && claims.get("email_verified") == Some(&Value::Bool(true)),
        email,
    })
}

/// GitHub's user: `subject` is the numeric `id` of `/user` (logins can be renamed and reused),
/// the email the primary address of `/user/emails` (scope `user:email`), verified as GitHub
/// says.
pub async fn github_identity(
    http: &HttpClient,
    user_endpoint: &Url,
    emails_endpoint: &Url,
    access_token: &SecretString,
) -> Result<ExternalIdentity> {
    const ACCEPT_GITHUB: &str = "application/vnd.github+json";
    let body = get_with_token(
        http,
        user_endpoint,
        access_token,
        ACCEPT_GITHUB,
        GITHUB_USER,
    )
    .await?;
    let user = object(&body, GITHUB_USER)?;
    let subject = match user.get("id") {
        Some(Value::Number(id)) if id.as_u64().is_some_and(|id| id > 0) => id.to_string(),
        _ => return Err(Error::invalid(GITHUB_USER, "no numeric id")),
    };
    let body = get_with_token(
        http,
        emails_endpoint,
        access_token,
        ACCEPT_GITHUB,
        GITHUB_EMAILS,
    )
    .await?;
    let emails: Vec<Value> = serde_json::from_slice(&body)
        .map_err(|_| Error::invalid(GITHUB_EMAILS, "not a JSON array"))?;
    let primary = emails
        .iter()
        .find(|entry| entry.get("primary") == Some(&Value::Bool(true)));
    let (email, email_verified) = match primary.and_then(|entry| entry.get("email")) {
        Some(Value::String(email)) => (
            Some(email.clone()),
            primary.and_then(|entry| entry.get("verified")) == Some(&Value::Bool(true)),
        ),
        _ => (None, false),
    };
    Ok(ExternalIdentity {
        subject,
        email,
        email_verified,
    })
}

#[cfg(test)]
mod tests {
    use axum::extract::State;
    use axum::http::HeaderMap;
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use serde_json::json;

    use super::*;
    use crate::oidc::test_support::serve;

    fn secret(value: &str) -> SecretString {
        SecretString::from(value.to_owned())
    }

    /// A token endpoint that checks what it gets and answers `answer` with `status`.
    async fn token_endpoint(status: StatusCode, answer: Value) -> Url {
        let handler = |State((status, answer)): State<(StatusCode, Value)>,
                       headers: HeaderMap,
                       body: String| async move {
            let auth = headers[AUTHORIZATION].to_str().unwrap().to_owned();
            let form: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
                .into_owned()
                .collect();
            let expected_form = [
                ("grant_type", "authorization_code"),
                ("code", "the code/+="),
                ("redirect_uri", "https://auth.example/callback"),
                (
                    "code_verifier",
                    "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
                ),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()));
            // RFC 6749 §2.3.1: "client:1" and "s3cr+t p" form-urlencoded, then base64.
            let expected_auth = format!("Basic {}", STANDARD.encode("client%3A1:s3cr%2Bt+p"));
            if auth != expected_auth
                || form != expected_form
                || headers[ACCEPT] != "application/json"
            {
                return (StatusCode::IM_A_TEAPOT, Json(json!({"unexpected": true})));
            }
            (status, Json(answer))
        };
        let router = Router::new()
            .route("/token", post(handler))
            .with_state((status, answer));
        Url::parse(&format!("{}/token", serve(router).await)).unwrap()
    }

    async fn exchange_with(endpoint: &Url) -> Result<TokenResponse> {
        let (client_secret, code, verifier) = (
            secret("s3cr+t p"),
            secret("the code/+="),
            secret("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        );
        let exchange = CodeExchange {
            token_endpoint: endpoint,
            client_id: "client:1",
            client_secret: &client_secret,
            code: &code,
            redirect_uri: "https://auth.example/callback",
            code_verifier: &verifier,
        };
        exchange_code(&HttpClient::new().unwrap(), &exchange).await
    }

    #[tokio::test]
    async fn code_exchange_sends_basic_auth_and_pkce_and_reads_tokens() {
        let answer = json!({"access_token": "at-1", "token_type": "Bearer", "id_token": "h.p.s", "expires_in": 3600, "scope": "openid email"});
        let endpoint = token_endpoint(StatusCode::OK, answer).await;
        let tokens = exchange_with(&endpoint).await.unwrap();
        assert_eq!(tokens.access_token.expose_secret(), "at-1");
        assert_eq!(tokens.id_token.as_ref().unwrap().expose_secret(), "h.p.s");
        assert_eq!(tokens.scope.as_deref(), Some("openid email"));
        let debug = format!("{tokens:?}");
        assert!(
            !debug.contains("at-1") && !debug.contains("h.p.s"),
            "{debug}"
        );
    }

    #[tokio::test]
    async fn code_exchange_refusals() {
        let cases = [
            (
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_grant", "error_description": "used"}),
                "refused invalid_grant",
                "reused code",
            ),
            (
                StatusCode::UNAUTHORIZED,
                json!({"error": "invalid_client"}),
                "refused invalid_client",
                "wrong secret",
            ),
            (
                StatusCode::OK,
                json!({"error": "bad_verification_code"}),
                "refused bad_verification_code",
                "GitHub's 200 error",
            ),
            (
                StatusCode::BAD_REQUEST,
                json!({"error": "evil\"<script>"}),
                "refused invalid_error",
                "error code with bad characters",
            ),
            (
                StatusCode::OK,
                json!({"token_type": "Bearer"}),
                "invalid no access_token",
                "no access token",
            ),
            (
                StatusCode::OK,
                json!({"access_token": "a", "token_type": "mac"}),
                "invalid token_type",
                "not bearer",
            ),
            (
                StatusCode::OK,
                json!({"access_token": "a", "token_type": "bearer", "id_token": 5}),
                "invalid id_token",
                "id_token not a string",
            ),
            (
                StatusCode::BAD_GATEWAY,
                json!({}),
                "unavailable",
                "provider error",
            ),
            (
                StatusCode::FOUND,
                json!({}),
                "invalid status 302",
                "redirect",
            ),
        ];
        for (status, answer, expected, reason) in cases {
            let endpoint = token_endpoint(status, answer).await;
            let err = exchange_with(&endpoint).await.unwrap_err();
            let got = match &err {
                Error::TokenRefused { error } => format!("refused {error}"),
                Error::InvalidResponse { why, .. } => format!("invalid {why}"),
                Error::Unavailable { .. } => "unavailable".to_owned(),
                other => format!("{other}"),
            };
            assert!(got.starts_with(expected), "{reason}: {got}");
        }
    }

    #[tokio::test]
    async fn token_response_over_64_kib_is_refused() {
        let answer = json!({"access_token": "a".repeat(70 * 1024), "token_type": "bearer"});
        let endpoint = token_endpoint(StatusCode::OK, answer).await;
        let err = exchange_with(&endpoint).await.unwrap_err();
        assert!(
            matches!(&err, Error::InvalidResponse { why, .. } if why.contains("larger than")),
            "{err}"
        );
    }

    async fn api(router: Router) -> String {
        serve(router).await
    }

    fn bearer_ok(headers: &HeaderMap) -> bool {
        headers
            .get(AUTHORIZATION)
            .is_some_and(|v| v == "Bearer at-1")
    }

    #[tokio::test]
    async fn userinfo_checks_sub_and_reads_email() {
        let router = Router::new().route(
            "/me",
            get(|headers: HeaderMap| async move {
                if !bearer_ok(&headers) {
                    return (StatusCode::UNAUTHORIZED, Json(json!({})));
                }
                (
                    StatusCode::OK,
                    Json(json!({"sub": "u-1", "email": "a@example.com", "email_verified": true})),
                )
            }),
        );
        let base = api(router).await;
        let endpoint = Url::parse(&format!("{base}/me")).unwrap();
        let http = HttpClient::new().unwrap();
        let identity = userinfo(&http, &endpoint, &secret("at-1"), "u-1")
            .await
            .unwrap();
        assert_eq!(identity.email.as_deref(), Some("a@example.com"));
        assert!(identity.email_verified);
        let err = userinfo(&http, &endpoint, &secret("at-1"), "u-2")
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("sub is not the ID token's"),
            "{err}"
        );
        let err = userinfo(&http, &endpoint, &secret("wrong"), "u-1")
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidResponse { .. }), "{err}");
    }

    #[tokio::test]
    async fn github_identity_uses_numeric_id_and_primary_email() {
        let router = Router::new()
            .route(
                "/user",
                get(|headers: HeaderMap| async move {
                    assert_eq!(headers[ACCEPT], "application/vnd.github+json");
                    assert!(headers.contains_key(reqwest::header::USER_AGENT));
                    Json(json!({"id": 583231, "login": "octocat", "email": null}))
                }),
            )
            .route(
                "/user/emails",
                get(|headers: HeaderMap| async move {
                    assert!(bearer_ok(&headers));
                    Json(json!([
                        {"email": "old@example.com", "primary": false, "verified": true},
                        {"email": "octo@example.com", "primary": true, "verified": true}
                    ]))
                }),
            );
        let base = api(router).await;
        let metadata = crate::oidc::discovery::ProviderMetadata::github_at(&base, &base).unwrap();
        let identity = github_identity(
            &HttpClient::new().unwrap(),
            metadata.userinfo_endpoint.as_ref().unwrap(),
            metadata.emails_endpoint.as_ref().unwrap(),
            &secret("at-1"),
        )
        .await
        .unwrap();
        assert_eq!(
            identity,
            ExternalIdentity {
                subject: "583231".to_owned(),
                email: Some("octo@example.com".to_owned()),
                email_verified: true,
            }
        );
    }

    #[tokio::test]
    async fn github_unverified_primary_and_missing_id() {
        let router = Router::new()
            .route("/ok/user", get(|| async { Json(json!({"id": 1})) }))
            .route("/bad/user", get(|| async { Json(json!({"id": "1"})) }))
            .route(
                "/ok/user/emails",
                get(|| async {
                    Json(json!([{"email": "x@example.com", "primary": true, "verified": false}]))
                }),
            );
        let base = api(router).await;
        let http = HttpClient::new().unwrap();
        let url = |path: &str| Url::parse(&format!("{base}{path}")).unwrap();
        let identity = github_identity(
            &http,
            &url("/ok/user"),
            &url("/ok/user/emails"),
            &secret("t"),
        )
        .await
        .unwrap();
        assert_eq!(
            (identity.email.as_deref(), identity.email_verified),
            (Some("x@example.com"), false)
        );
        let err = github_identity(
            &http,
            &url("/bad/user"),
            &url("/ok/user/emails"),
            &secret("t"),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("no numeric id"), "{err}");
    }
}
