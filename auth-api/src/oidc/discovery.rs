//! Where a provider's endpoints are: OpenID Connect Discovery 1.0 for `oidc` and `google`
//! providers, fixed endpoints for GitHub.

use serde::Deserialize;
use url::Url;

use crate::oidc::http::insecure_reason;
use crate::oidc::providers::{Provider, ProviderKind};
use crate::oidc::{Error, HttpClient, Result, DISCOVERY_MAX_BYTES};

const WHAT: &str = "discovery document";

/// The ID-token algorithms we verify; a provider must offer one of them.
const SUPPORTED_ID_TOKEN_ALGS: [&str; 3] = ["RS256", "ES256", "EdDSA"];

/// A provider's endpoints, checked: each is https (http only on a loopback host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderMetadata {
    /// The issuer, equal to the configured one; `None` for GitHub.
    pub issuer: Option<String>,
    /// Where the browser is sent.
    pub authorization_endpoint: Url,
    /// Where the code is exchanged.
    pub token_endpoint: Url,
    /// The provider's JWK set (OIDC providers).
    pub jwks_uri: Option<Url>,
    /// Userinfo (OIDC), or GitHub's `/user`.
    pub userinfo_endpoint: Option<Url>,
    /// GitHub's `/user/emails`; `None` for OIDC providers.
    pub emails_endpoint: Option<Url>,
    /// Whether the provider promises RFC 9207's `iss` in authorization responses (then a
    /// callback without it must be refused).
    pub authorization_response_iss_parameter_supported: bool,
}

/// The discovery members we read; others are ignored.
#[derive(Deserialize)]
struct Document {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    userinfo_endpoint: Option<String>,
    response_types_supported: Vec<String>,
    id_token_signing_alg_values_supported: Vec<String>,
    #[serde(default)]
    code_challenge_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
}

impl ProviderMetadata {
    /// GitHub's fixed OAuth 2.0 endpoints and API.
    pub fn github() -> Self {
        Self::github_at("https://github.com", "https://api.github.com")
            .unwrap_or_else(|_| unreachable!("the GitHub URLs are valid"))
    }

    /// GitHub's endpoints under other bases (tests, GitHub Enterprise Server).
    pub fn github_at(web: &str, api: &str) -> Result<Self> {
        let join = |base: &str, path: &str| {
            Url::parse(&format!("{}{path}", base.trim_end_matches('/')))
                .map_err(|e| Error::Config(format!("github endpoint: {e}")))
        };
        Ok(Self {
            issuer: None,
            authorization_endpoint: join(web, "/login/oauth/authorize")?,
            token_endpoint: join(web, "/login/oauth/access_token")?,
            jwks_uri: None,
            userinfo_endpoint: Some(join(api, "/user")?),
            emails_endpoint: Some(join(api, "/user/emails")?),
            authorization_response_iss_parameter_supported: false,
        })
    }

    /// The metadata of `provider`: GitHub's preset, or discovery from its issuer.
    pub async fn for_provider(http: &HttpClient, provider: &Provider) -> Result<Self> {
        match (&provider.kind, provider.issuer()) {
            (ProviderKind::Github, _) => Ok(Self::github()),
            (_, Some(issuer)) => discover(http, issuer).await,
            (_, None) => Err(Error::Config(format!(
                "provider `{}` has no issuer",
                provider.name
            ))),
        }
    }
}

/// `<issuer>/.well-known/openid-configuration` (OIDC Discovery §4.1: a trailing `/` of the
/// issuer is not doubled).
pub fn discovery_url(issuer: &str) -> Result<Url> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    Url::parse(&url).map_err(|e| Error::Config(format!("issuer `{issuer}`: {e}")))
}

/// Fetches and checks `issuer`'s discovery document: at most [`DISCOVERY_MAX_BYTES`], no
/// duplicate members, `issuer` equal to `issuer` byte for byte (OIDC Discovery §4.3), the
/// authorization, token and JWKS endpoints present and secure, `code` among the response types,
/// S256 among the PKCE methods when they are listed, and an ID-token algorithm we verify.
pub async fn discover(http: &HttpClient, issuer: &str) -> Result<ProviderMetadata> {
    let url = discovery_url(issuer)?;
    let body = http.get_document(&url, WHAT, DISCOVERY_MAX_BYTES).await?;
    parse_document(&body, issuer)
}

fn parse_document(body: &[u8], issuer: &str) -> Result<ProviderMetadata> {
    let object =
        auth_jwt::parse_json_object(body).map_err(|e| Error::invalid(WHAT, e.to_string()))?;
    let document: Document = serde_json::from_value(serde_json::Value::Object(object))
        .map_err(|e| Error::invalid(WHAT, redact(&e)))?;
    if document.issuer != issuer {
        return Err(Error::invalid(
            WHAT,
            format!(
                "issuer `{}` is not the configured `{issuer}`",
                document.issuer
            ),
        ));
    }
    // Plain http (to a loopback host) only for a provider that is itself on plain http: an
    // https provider must not point our requests, with their credentials, at local services.
    let issuer_is_https = Url::parse(issuer).is_ok_and(|url| url.scheme() == "https");
    let endpoint = |name: &'static str, value: &str| -> Result<Url> {
        let url = Url::parse(value)
            .map_err(|_| Error::invalid(WHAT, format!("{name} is not an absolute URL")))?;
        match insecure_reason(&url) {
            Some(why) => Err(Error::invalid(WHAT, format!("{name} {why}"))),
            None if issuer_is_https && url.scheme() != "https" => Err(Error::invalid(
                WHAT,
                format!("{name} must be https for an https issuer"),
            )),
            None => Ok(url),
        }
    };
    let authorization_endpoint =
        endpoint("authorization_endpoint", &document.authorization_endpoint)?;
    let token_endpoint = endpoint("token_endpoint", &document.token_endpoint)?;
    let jwks_uri = endpoint("jwks_uri", &document.jwks_uri)?;
    let userinfo_endpoint = document
        .userinfo_endpoint
        .as_deref()
        .map(|value| endpoint("userinfo_endpoint", value))
        .transpose()?;
    if !document
        .response_types_supported
        .iter()
        .any(|t| t == "code")
    {
        return Err(Error::invalid(
            WHAT,
            "response type `code` is not supported",
        ));
    }
    if let Some(methods) = &document.code_challenge_methods_supported {
        if !methods.iter().any(|m| m == "S256") {
            return Err(Error::invalid(WHAT, "PKCE method S256 is not supported"));
        }
    }
    if !document
        .id_token_signing_alg_values_supported
        .iter()
        .any(|alg| SUPPORTED_ID_TOKEN_ALGS.contains(&alg.as_str()))
    {
        return Err(Error::invalid(
            WHAT,
            "no ID-token signing algorithm we verify (RS256, ES256, EdDSA)",
        ));
    }
    Ok(ProviderMetadata {
        issuer: Some(document.issuer),
        authorization_endpoint,
        token_endpoint,
        jwks_uri: Some(jwks_uri),
        userinfo_endpoint,
        emails_endpoint: None,
        authorization_response_iss_parameter_supported: document
            .authorization_response_iss_parameter_supported,
    })
}

/// serde's message without any quoted input.
fn redact(err: &serde_json::Error) -> String {
    let message = err.to_string();
    if message.starts_with("missing field") {
        return message;
    }
    message
        .split(['"', '`'])
        .next()
        .unwrap_or_default()
        .trim_end()
        .trim_end_matches(':')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use axum::{extract::State, routing::get, Json, Router};
    use serde_json::{json, Value};

    use super::*;

    fn document(issuer: &str) -> Value {
        json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
            "userinfo_endpoint": format!("{issuer}/me"),
            "response_types_supported": ["code"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": true,
            "claims_supported": ["sub", "email"]
        })
    }

    /// A provider at `http://127.0.0.1:<port>` serving `change(document(issuer))`.
    async fn provider(change: fn(&mut Value, &str)) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let mut doc = document(&issuer);
        change(&mut doc, &issuer);
        let router = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(|State(doc): State<Value>| async move { Json(doc) }),
            )
            .with_state(doc);
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        issuer
    }

    #[tokio::test]
    async fn discovery_reads_the_endpoints() {
        let issuer = provider(|_, _| {}).await;
        let metadata = discover(&HttpClient::new().unwrap(), &issuer)
            .await
            .unwrap();
        assert_eq!(metadata.issuer.as_deref(), Some(issuer.as_str()));
        assert_eq!(
            metadata.authorization_endpoint.as_str(),
            format!("{issuer}/auth")
        );
        assert_eq!(metadata.token_endpoint.as_str(), format!("{issuer}/token"));
        assert_eq!(
            metadata.jwks_uri.unwrap().as_str(),
            format!("{issuer}/jwks")
        );
        assert_eq!(
            metadata.userinfo_endpoint.unwrap().as_str(),
            format!("{issuer}/me")
        );
        assert!(metadata.authorization_response_iss_parameter_supported);
    }

    #[tokio::test]
    async fn discovery_refusals() {
        type Change = fn(&mut Value, &str);
        let cases: [(Change, &str, &str); 10] = [
            (
                |d, i| d["issuer"] = json!(format!("{i}/")),
                "is not the configured",
                "issuer with trailing slash",
            ),
            (
                |d, _| d["issuer"] = json!("http://127.0.0.1:1"),
                "is not the configured",
                "another issuer (mix-up)",
            ),
            (
                |d, _| {
                    d.as_object_mut().unwrap().remove("jwks_uri");
                },
                "missing field `jwks_uri`",
                "no jwks_uri",
            ),
            (
                |d, _| {
                    d.as_object_mut().unwrap().remove("token_endpoint");
                },
                "missing field `token_endpoint`",
                "no token endpoint",
            ),
            (
                |d, _| d["token_endpoint"] = json!("http://op.example/token"),
                "token_endpoint must be https",
                "http token endpoint",
            ),
            (
                |d, _| d["jwks_uri"] = json!("/jwks"),
                "jwks_uri is not an absolute URL",
                "relative jwks_uri",
            ),
            (
                |d, _| d["userinfo_endpoint"] = json!("http://op.example/me"),
                "userinfo_endpoint must be https",
                "http userinfo",
            ),
            (
                |d, _| d["response_types_supported"] = json!(["id_token"]),
                "response type `code`",
                "no code flow",
            ),
            (
                |d, _| d["code_challenge_methods_supported"] = json!(["plain"]),
                "S256",
                "no S256",
            ),
            (
                |d, _| {
                    d["id_token_signing_alg_values_supported"] = json!(["HS256", "none", "PS256"])
                },
                "no ID-token signing algorithm",
                "no usable alg",
            ),
        ];
        let http = HttpClient::new().unwrap();
        for (change, expected, reason) in cases {
            let issuer = provider(change).await;
            let err = discover(&http, &issuer).await.unwrap_err();
            assert!(
                matches!(&err, Error::InvalidResponse { why, .. } if why.contains(expected)),
                "{reason}: {err}"
            );
        }
    }

    #[test]
    fn duplicate_members_and_garbage_are_refused() {
        let issuer = "https://op.example";
        let duplicated = br#"{"issuer":"https://op.example","issuer":"https://evil.example"}"#;
        let err = parse_document(duplicated, issuer).unwrap_err();
        assert!(err.to_string().contains("duplicate"), "{err}");
        let err = parse_document(b"[]", issuer).unwrap_err();
        assert!(matches!(err, Error::InvalidResponse { .. }));
        let mut doc = document(issuer);
        doc["response_types_supported"] = json!("code-but-secret-text");
        let err = parse_document(doc.to_string().as_bytes(), issuer).unwrap_err();
        assert!(!err.to_string().contains("secret-text"), "{err}");
    }

    #[test]
    fn an_https_issuer_cannot_send_us_to_plain_http_endpoints() {
        let issuer = "https://op.example";
        for member in ["token_endpoint", "jwks_uri", "userinfo_endpoint"] {
            let mut doc = document(issuer);
            doc[member] = json!("http://127.0.0.1:6379/x");
            let err = parse_document(doc.to_string().as_bytes(), issuer).unwrap_err();
            assert!(
                err.to_string()
                    .contains("must be https for an https issuer"),
                "{member}: {err}"
            );
        }
        assert!(parse_document(document(issuer).to_string().as_bytes(), issuer).is_ok());
    }

    #[test]
    fn discovery_url_does_not_double_the_slash() {
        assert_eq!(
            discovery_url("https://op.example/realms/x/")
                .unwrap()
                .as_str(),
            "https://op.example/realms/x/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_url("https://accounts.google.com")
                .unwrap()
                .as_str(),
            "https://accounts.google.com/.well-known/openid-configuration"
        );
    }

    #[tokio::test]
    async fn provider_down_is_unavailable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let err = discover(&HttpClient::new().unwrap(), &issuer)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    }

    #[test]
    fn github_preset_has_fixed_endpoints_and_no_id_token() {
        let github = ProviderMetadata::github();
        assert_eq!(github.issuer, None);
        assert_eq!(github.jwks_uri, None);
        assert_eq!(
            github.authorization_endpoint.as_str(),
            "https://github.com/login/oauth/authorize"
        );
        assert_eq!(
            github.token_endpoint.as_str(),
            "https://github.com/login/oauth/access_token"
        );
        assert_eq!(
            github.userinfo_endpoint.unwrap().as_str(),
            "https://api.github.com/user"
        );
        assert_eq!(
            github.emails_endpoint.unwrap().as_str(),
            "https://api.github.com/user/emails"
        );
    }
}
