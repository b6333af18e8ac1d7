//! The provider's authorization URL (RFC 6749 §4.1.1, OIDC Core §3.1.2.1, RFC 7636 §4.3).

use url::Url;

use crate::oidc::discovery::ProviderMetadata;
use crate::oidc::{Error, Result};

/// RFC 9207 §2.4: the callback's `iss` parameter, if sent, must equal the provider's issuer
/// byte for byte; if the provider advertises
/// `authorization_response_iss_parameter_supported`, it must be sent. Providers without an
/// issuer (GitHub) must not send one. Refusals are [`Error::ResponseIssuer`].
pub fn check_response_issuer(metadata: &ProviderMetadata, iss: Option<&str>) -> Result<()> {
    match (metadata.issuer.as_deref(), iss) {
        (Some(issuer), Some(iss)) if iss == issuer => Ok(()),
        (Some(_), None) if !metadata.authorization_response_iss_parameter_supported => Ok(()),
        (None, None) => Ok(()),
        _ => Err(Error::ResponseIssuer),
    }
}

/// What goes into one authorization request.
#[derive(Debug, Clone, Copy)]
pub struct AuthorizationRequest<'a> {
    /// The provider's `authorization_endpoint`.
    pub endpoint: &'a Url,
    /// Our client id at the provider.
    pub client_id: &'a str,
    /// Our callback, exactly as registered at the provider.
    pub redirect_uri: &'a str,
    /// The scopes, joined with spaces.
    pub scopes: &'a [String],
    /// The flow's `state`.
    pub state: &'a str,
    /// The flow's `nonce`; `None` for plain OAuth 2.0 providers (GitHub).
    pub nonce: Option<&'a str>,
    /// The S256 `code_challenge` of the flow's verifier.
    pub code_challenge: &'a str,
    /// Google's `hd`: the Workspace domain whose accounts the sign-in page offers (a hint: the
    /// ID token's `hd` is what is checked).
    pub hosted_domain: Option<&'a str>,
}

/// Parameters this module sets; the endpoint's own query may not set them too.
const OWN_PARAMETERS: [&str; 9] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "hd",
];

impl AuthorizationRequest<'_> {
    /// The URL to send the browser to: the endpoint (its own query kept, RFC 6749 §3.1, except
    /// for members named like ours, which are dropped) with `response_type=code`, `client_id`,
    /// `redirect_uri`, `scope`, `state`, `nonce` (when set), `code_challenge` and
    /// `code_challenge_method=S256`.
    pub fn url(&self) -> Url {
        let mut url = self.endpoint.clone();
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(name, _)| !OWN_PARAMETERS.contains(&name.as_ref()))
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
        url.set_query(None);
        {
            let mut query = url.query_pairs_mut();
            query.extend_pairs(kept);
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", self.client_id)
                .append_pair("redirect_uri", self.redirect_uri)
                .append_pair("scope", &self.scopes.join(" "))
                .append_pair("state", self.state);
            if let Some(nonce) = self.nonce {
                query.append_pair("nonce", nonce);
            }
            query
                .append_pair("code_challenge", self.code_challenge)
                .append_pair("code_challenge_method", "S256");
            if let Some(domain) = self.hosted_domain {
                query.append_pair("hd", domain);
            }
        }
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(url: &Url) -> Vec<(String, String)> {
        url.query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    fn request<'a>(
        endpoint: &'a Url,
        scopes: &'a [String],
        nonce: Option<&'a str>,
    ) -> AuthorizationRequest<'a> {
        AuthorizationRequest {
            endpoint,
            client_id: "client 1",
            redirect_uri: "https://auth.example/callback?x=1&y=2",
            scopes,
            state: "st",
            nonce,
            code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            hosted_domain: None,
        }
    }

    #[test]
    fn a_hosted_domain_is_sent_as_hd() {
        let endpoint = Url::parse("https://op.example/authorize?hd=planted").unwrap();
        let scopes = ["openid".to_owned()];
        let url = AuthorizationRequest {
            hosted_domain: Some("corp.example"),
            ..request(&endpoint, &scopes, Some("n0"))
        }
        .url();
        let hd: Vec<_> = pairs(&url).into_iter().filter(|(k, _)| k == "hd").collect();
        assert_eq!(hd, [("hd".to_owned(), "corp.example".to_owned())]);
    }

    #[test]
    fn url_carries_every_parameter_encoded() {
        let endpoint = Url::parse("https://op.example/authorize").unwrap();
        let scopes = ["openid".to_owned(), "email".to_owned()];
        let url = request(&endpoint, &scopes, Some("n0")).url();
        assert_eq!(url.path(), "/authorize");
        assert_eq!(
            pairs(&url),
            [
                ("response_type", "code"),
                ("client_id", "client 1"),
                ("redirect_uri", "https://auth.example/callback?x=1&y=2"),
                ("scope", "openid email"),
                ("state", "st"),
                ("nonce", "n0"),
                (
                    "code_challenge",
                    "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
                ),
                ("code_challenge_method", "S256"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        // The redirect_uri's own `&` and `=` are escaped, not new parameters.
        assert!(
            url.as_str()
                .contains("redirect_uri=https%3A%2F%2Fauth.example%2Fcallback%3Fx%3D1%26y%3D2"),
            "{url}"
        );
    }

    #[test]
    fn url_without_nonce_for_oauth2_providers() {
        let endpoint = Url::parse("https://github.com/login/oauth/authorize").unwrap();
        let scopes = ["read:user".to_owned(), "user:email".to_owned()];
        let url = request(&endpoint, &scopes, None).url();
        let names: Vec<String> = pairs(&url).into_iter().map(|(k, _)| k).collect();
        assert!(!names.contains(&"nonce".to_owned()));
        assert!(
            url.as_str().contains("scope=read%3Auser+user%3Aemail"),
            "{url}"
        );
    }

    #[test]
    fn response_issuer_follows_rfc_9207() {
        let mut oidc = ProviderMetadata::github();
        oidc.issuer = Some("https://op.example".to_owned());
        let mut promising = oidc.clone();
        promising.authorization_response_iss_parameter_supported = true;
        let github = ProviderMetadata::github();
        let cases = [
            (&oidc, Some("https://op.example"), true, "same issuer"),
            (&oidc, None, true, "not promised, not sent"),
            (&oidc, Some("https://evil.example"), false, "another issuer"),
            (&oidc, Some("https://op.example/"), false, "trailing slash"),
            (
                &promising,
                Some("https://op.example"),
                true,
                "promised and sent",
            ),
            (&promising, None, false, "promised, missing"),
            (&github, None, true, "github sends none"),
            (
                &github,
                Some("https://github.com"),
                false,
                "github with an iss",
            ),
        ];
        for (metadata, iss, ok, reason) in cases {
            let result = check_response_issuer(metadata, iss);
            assert_eq!(result.is_ok(), ok, "{reason}");
            if !ok {
                assert!(matches!(result, Err(Error::ResponseIssuer)), "{reason}");
            }
        }
    }

    #[test]
    fn endpoint_query_is_kept_but_cannot_override_ours() {
        let endpoint =
            Url::parse("https://op.example/auth?tenant=a&state=evil&client_id=evil").unwrap();
        let scopes = ["openid".to_owned()];
        let url = request(&endpoint, &scopes, Some("n0")).url();
        let pairs = pairs(&url);
        assert_eq!(pairs[0], ("tenant".to_owned(), "a".to_owned()));
        let states: Vec<_> = pairs.iter().filter(|(k, _)| k == "state").collect();
        assert_eq!(states, [&("state".to_owned(), "st".to_owned())]);
        let clients: Vec<_> = pairs.iter().filter(|(k, _)| k == "client_id").collect();
        assert_eq!(clients.len(), 1);
    }
}
