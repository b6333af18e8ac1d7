//! Issue 14's flow through the HTTP API, against a scripted provider ([`FakeProvider`]) where the
//! real one of the browser test cannot misbehave on demand: `/authorize` → the provider →
//! `/callback` → `/token`, then the session as any other; and every refusal on the way, each
//! where the flow's contract puts it: an error page when `redirect_to` or the state is the
//! problem (nowhere to send the browser back to), else a redirect to `redirect_to` with `error`
//! (RFC 6749) and `error_code` (ours).
//!
//! auth-api is served on a real loopback port (the provider redirects to its `callback_url`,
//! which must be known before the app starts); the test is the browser: a `reqwest` client that
//! follows no redirect and carries the sign-in cookie by hand. The app's clock is frozen and
//! shared with the provider, so expiry is crossed by moving it, not by sleeping.

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use axum::http::StatusCode;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::{net::TcpListener, task::JoinHandle};
use url::Url;

use crate::fake_provider::{
    self, AuthorizationRequest, Endpoint, Exchange, FakeProvider, Grant, Misbehaviour, Signing,
};
use crate::helpers::{claims_of, Backend, TestApp, TestResponse, TestUser, Tokens};

/// The provider's name in the providers file.
const PROVIDER: &str = "local";
/// The one allow-listed `redirect_to`.
const REDIRECT_TO: &str = "http://127.0.0.1:3000/signed-in";
/// The browser-binding cookie.
const COOKIE: &str = "__Host-auth-sign-in";
/// What a sign-in may take when the provider is down: the contract's ~5 s, plus slack for a
/// loaded machine; never a hang.
const UNAVAILABLE_WITHIN: Duration = Duration::from_secs(10);
/// What it may take when the provider is slow: the 5 s fetch timeout, and slack for a loaded
/// machine that still tells the timeout from the provider's answer at [`SLOW`].
const SLOW_WITHIN: Duration = Duration::from_secs(7);
/// How long the slow provider takes: well past the fetch timeout.
const SLOW: Duration = Duration::from_secs(8);

/// What a test changes in the providers file and the provider.
#[derive(Debug, Clone, Copy)]
struct Setup {
    allow_email_linking: bool,
    iss_parameter_supported: bool,
    userinfo: bool,
    flow_ttl_secs: u64,
    /// `AUTH_IP_LIMIT_PER_MINUTE`; the default when `None`.
    ip_limit_per_minute: Option<u32>,
    /// The provider's `hosted_domain`.
    hosted_domain: Option<&'static str>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            allow_email_linking: false,
            iss_parameter_supported: true,
            userinfo: true,
            flow_ttl_secs: 600,
            ip_limit_per_minute: None,
            hosted_domain: None,
        }
    }
}

/// auth-api on a loopback port with one provider, the fake one.
struct Social {
    app: TestApp,
    provider: FakeProvider,
    /// auth-api's public base URL.
    base: String,
    browser: reqwest::Client,
    server: JoinHandle<()>,
    _providers_dir: tempfile::TempDir,
}

/// A flow started: what the browser and the client hold, and what the provider received.
struct Started {
    state: String,
    /// The sign-in cookie's value.
    cookie: String,
    /// The authorization request as the provider saw it.
    request: AuthorizationRequest,
    /// The client's own PKCE verifier, for `/token`.
    verifier: String,
}

impl Drop for Social {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Social {
    async fn spawn(backend: Backend, setup: Setup) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let provider = FakeProvider::start(fake_provider::Options {
            redirect_uri: format!("{base}/callback"),
            iss_parameter_supported: setup.iss_parameter_supported,
            userinfo: setup.userinfo,
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("providers.json");
        let document = json!({
            "providers": [{
                "name": PROVIDER, "kind": "oidc", "issuer": provider.issuer(),
                "client_id": fake_provider::CLIENT_ID, "client_secret": fake_provider::CLIENT_SECRET,
                "allow_email_linking": setup.allow_email_linking,
                "hosted_domain": setup.hosted_domain,
            }],
            "redirect_allow_list": [REDIRECT_TO],
            "callback_url": format!("{base}/callback"),
            "flow_ttl_secs": setup.flow_ttl_secs,
        });
        std::fs::write(&path, document.to_string()).unwrap();
        let app = TestApp::spawn_with(backend, |config| {
            config.oidc_providers_file = Some(path.clone());
            if let Some(limit) = setup.ip_limit_per_minute {
                config.ip_limit_per_minute = limit;
            }
        })
        .await;
        provider.use_clock(app.clock.clone());
        let router = app.router.clone();
        let server = tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            app,
            provider,
            base,
            browser,
            server,
            _providers_dir: dir,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> TestResponse {
        let response = request.send().await.expect("auth-api does not answer");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        TestResponse {
            status,
            headers,
            body,
        }
    }

    /// GET `path` with `query`, with the sign-in cookie when given.
    async fn get(&self, path: &str, query: &[(&str, &str)], cookie: Option<&str>) -> TestResponse {
        let mut url = Url::parse(&format!("{}{path}", self.base)).unwrap();
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut request = self.browser.get(url);
        if let Some(cookie) = cookie {
            request = request.header("cookie", format!("{COOKIE}={cookie}"));
        }
        self.send(request).await
    }

    /// `/authorize` as a client sends it, with the client's challenge.
    async fn authorize(&self, redirect_to: &str, challenge: &str) -> TestResponse {
        self.get(
            "/authorize",
            &[
                ("provider", PROVIDER),
                ("redirect_to", redirect_to),
                ("code_challenge", challenge),
                ("code_challenge_method", "S256"),
            ],
            None,
        )
        .await
    }

    /// Starts a flow in a new browser and follows it to the provider, which accepts it.
    async fn start(&self) -> Started {
        self.start_in(None).await
    }

    /// Starts a flow in the browser holding `cookie` (a new one when `None`).
    async fn start_in(&self, cookie: Option<&str>) -> Started {
        let verifier = random();
        let query = [
            ("provider", PROVIDER),
            ("redirect_to", REDIRECT_TO),
            ("code_challenge", &challenge(&verifier)),
            ("code_challenge_method", "S256"),
        ];
        let response = self.get("/authorize", &query, cookie).await;
        assert_eq!(response.status, StatusCode::FOUND, "{}", response.body);
        let location = location(&response);
        assert!(
            location
                .as_str()
                .starts_with(&self.provider.authorization_endpoint()),
            "{location}"
        );
        let set = sign_in_cookie(&response).map(|(value, _)| value);
        let cookie = match (set, cookie) {
            (Some(set), _) => set,
            (None, Some(held)) => held.to_owned(),
            (None, None) => panic!("no {COOKIE} cookie set: {:?}", response.headers),
        };
        let state = query_of(&location)["state"].clone();
        // The browser follows the redirect: the provider checks and records the request.
        let at_provider = self.browser.get(location.clone()).send().await.unwrap();
        assert_eq!(
            at_provider.status(),
            StatusCode::OK,
            "the provider refused the request: {}",
            at_provider.text().await.unwrap()
        );
        Started {
            request: self.provider.authorization(&state),
            state,
            cookie,
            verifier,
        }
    }

    /// `/callback` with `query`.
    async fn callback(&self, query: &[(&str, &str)], cookie: Option<&str>) -> TestResponse {
        self.get("/callback", query, cookie).await
    }

    /// The provider approves `started` for `grant`: its redirect back, with `code`, `state` and
    /// the RFC 9207 `iss`, in the browser that started the flow.
    async fn approve(&self, started: &Started, grant: Grant) -> TestResponse {
        let code = self.provider.issue_code(&started.request, grant);
        let query = [
            ("code", code.as_str()),
            ("state", &started.state),
            ("iss", self.provider.issuer()),
        ];
        self.callback(&query, Some(&started.cookie)).await
    }

    /// A whole sign-in up to the client's one-time code, which must succeed.
    async fn sign_in(&self, grant: Grant) -> (Started, String) {
        let started = self.start().await;
        let response = self.approve(&started, grant).await;
        let code = one_time_code(&response);
        (started, code)
    }

    /// `POST /token?grant_type=…` with a JSON body.
    async fn token_raw(&self, grant_type: Option<&str>, body: String) -> TestResponse {
        let mut url = Url::parse(&format!("{}/token", self.base)).unwrap();
        if let Some(grant_type) = grant_type {
            url.query_pairs_mut().append_pair("grant_type", grant_type);
        }
        let request = self
            .browser
            .post(url)
            .header("content-type", "application/json")
            .body(body);
        self.send(request).await
    }

    /// `POST /token?grant_type=pkce` with the one-time code and a verifier.
    async fn token(&self, code: &str, verifier: &str) -> TestResponse {
        let body = json!({"auth_code": code, "code_verifier": verifier}).to_string();
        self.token_raw(Some("pkce"), body).await
    }

    /// A whole sign-in, exchanged for our tokens.
    async fn tokens(&self, grant: Grant) -> Tokens {
        let (started, code) = self.sign_in(grant).await;
        Tokens::from_response(&self.token(&code, &started.verifier).await)
    }
}

/// 32 random bytes, base64url: a PKCE verifier, a state, a cookie value.
fn random() -> String {
    let mut bytes = [0_u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// RFC 7636's S256 challenge of `verifier`.
fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether `value` is 43 base64url characters (32 random bytes).
fn is_secret_43(value: &str) -> bool {
    value.len() == 43
        && URL_SAFE_NO_PAD
            .decode(value)
            .is_ok_and(|bytes| bytes.len() == 32)
}

fn location(response: &TestResponse) -> Url {
    let location = response
        .header("location")
        .unwrap_or_else(|| panic!("no Location: {} {}", response.status, response.body));
    Url::parse(location).unwrap_or_else(|e| panic!("Location {location}: {e}"))
}

fn query_of(url: &Url) -> HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

/// The sign-in cookie's value and attributes, if the response sets it.
fn sign_in_cookie(response: &TestResponse) -> Option<(String, String)> {
    response
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| {
            let rest = value.strip_prefix(COOKIE)?.strip_prefix('=')?;
            let (value, attributes) = rest.split_once(';').unwrap_or((rest, ""));
            Some((value.to_owned(), attributes.to_owned()))
        })
}

/// A cookie's attributes, trimmed and lowercased (`path=/`, `secure`, …).
fn cookie_attributes(attributes: &str) -> Vec<String> {
    attributes
        .split(';')
        .map(|a| a.trim().to_ascii_lowercase())
        .filter(|a| !a.is_empty())
        .collect()
}

/// Whether `location` is `REDIRECT_TO` (any query): the client's own page.
fn is_redirect_to(location: &Url) -> bool {
    let mut bare = location.clone();
    bare.set_query(None);
    bare.as_str() == REDIRECT_TO
}

/// The one-time code of a successful callback: 302 to `redirect_to?code=…`, no error, no token.
fn one_time_code(response: &TestResponse) -> String {
    assert_eq!(response.status, StatusCode::FOUND, "{}", response.body);
    let location = location(response);
    assert!(is_redirect_to(&location), "{location}");
    let query = query_of(&location);
    assert!(
        !query.contains_key("error"),
        "the sign-in failed: {location}"
    );
    let code = query
        .get("code")
        .unwrap_or_else(|| panic!("no code: {location}"));
    assert!(is_secret_43(code), "{location}");
    code.clone()
}

/// A refusal sent back to the client: 302 to `redirect_to` with `error`, `error_code` and an
/// `error_description`, and no code.
#[track_caller]
fn assert_error_redirect(response: &TestResponse, error: &str, error_code: &str, reason: &str) {
    assert_eq!(
        response.status,
        StatusCode::FOUND,
        "{reason}: {}",
        response.body
    );
    let location = location(response);
    assert!(is_redirect_to(&location), "{reason}: {location}");
    let query = query_of(&location);
    assert_eq!(
        (
            query.get("error").map(String::as_str),
            query.get("error_code").map(String::as_str)
        ),
        (Some(error), Some(error_code)),
        "{reason}: {location}"
    );
    assert!(
        query
            .get("error_description")
            .is_some_and(|d| !d.is_empty()),
        "{reason}: no error_description: {location}"
    );
    assert!(!query.contains_key("code"), "{reason}: {location}");
}

/// A refusal that cannot go back to the client: 400 with `error`, no `Location`.
#[track_caller]
fn assert_error_page(response: &TestResponse, error: &str, reason: &str) {
    assert_eq!(
        response.status,
        StatusCode::BAD_REQUEST,
        "{reason}: {:?} {}",
        response.header("location"),
        response.body
    );
    assert_eq!(response.error(), error, "{reason}: {}", response.body);
    assert!(
        response.body["message"].is_string(),
        "{reason}: {}",
        response.body
    );
    assert_eq!(response.header("location"), None, "{reason}");
}

// ---------------------------------------------------------------------------------------------
// The flow that works.

/// The whole flow on each store: what auth-api sends the provider, the cookie, the code, the
/// tokens (`amr: ["oauth"]`), the account it made, and an ordinary session afterwards.
async fn social_sign_in_ends_in_an_ordinary_session(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    let grant = Grant::random();
    let email = grant.email.clone().unwrap();

    // /authorize: 302 to the provider with our own PKCE, state and nonce; the cookie.
    let verifier = random();
    let client_challenge = challenge(&verifier);
    let authorize = social
        .authorize(&format!("{REDIRECT_TO}?app_state=x%26y"), &client_challenge)
        .await;
    assert_eq!(authorize.status, StatusCode::FOUND, "{}", authorize.body);
    assert_eq!(authorize.header("cache-control"), Some("no-store"));
    let (cookie, attributes) = sign_in_cookie(&authorize).expect("no sign-in cookie");
    assert!(is_secret_43(&cookie), "{cookie}");
    let attributes = cookie_attributes(&attributes);
    for expected in [
        "path=/",
        "secure",
        "httponly",
        "samesite=lax",
        "max-age=600",
    ] {
        assert!(
            attributes.iter().any(|a| a == expected),
            "cookie lacks {expected}: {attributes:?}"
        );
    }
    let to_provider = location(&authorize);
    let sent = query_of(&to_provider);
    assert!(is_secret_43(&sent["state"]), "state {}", sent["state"]);
    assert!(!sent["nonce"].is_empty());
    assert_ne!(sent["state"], sent["nonce"]);
    assert!(
        is_secret_43(&sent["code_challenge"]),
        "{}",
        sent["code_challenge"]
    );
    assert_ne!(
        sent["code_challenge"], client_challenge,
        "auth-api's PKCE with the provider is its own, not the client's"
    );
    assert!(
        to_provider
            .as_str()
            .starts_with(&social.provider.authorization_endpoint()),
        "{to_provider}"
    );
    let at_provider = social.browser.get(to_provider).send().await.unwrap();
    assert_eq!(
        at_provider.status(),
        StatusCode::OK,
        "the provider refused the authorization request: {}",
        at_provider.text().await.unwrap()
    );
    let started = Started {
        request: social.provider.authorization(&sent["state"]),
        state: sent["state"].clone(),
        cookie,
        verifier,
    };
    assert_eq!(started.request.get("response_type"), "code");
    assert_eq!(
        started.request.get("redirect_uri"),
        format!("{}/callback", social.base)
    );

    // /callback: the code exchanged with the provider (which checked our verifier), then 302
    // to redirect_to with its own query and a one-time code; no token in any URL.
    let callback = social.approve(&started, grant.clone()).await;
    assert_eq!(callback.header("cache-control"), Some("no-store"));
    let code = one_time_code(&callback);
    let back = location(&callback);
    assert_eq!(
        query_of(&back).get("app_state").map(String::as_str),
        Some("x&y"),
        "redirect_to's own query is kept: {back}"
    );
    let mut keys: Vec<String> = query_of(&back).into_keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["app_state", "code"],
        "nothing but the code is added: {back}"
    );
    assert_eq!(social.provider.exchanges(), [Exchange::Issued]);

    // The account: a new user without a password, with the provider's verified email and the
    // identity (provider, sub).
    let user = social.app.user(&email).await;
    assert!(!user.has_password(), "a social account has no password");
    let identities = social
        .app
        .state
        .store
        .identities_of(&user.id)
        .await
        .unwrap();
    assert_eq!(identities.len(), 1, "{identities:?}");
    assert_eq!(
        (
            identities[0].provider.as_str(),
            identities[0].subject.as_str()
        ),
        (PROVIDER, grant.subject.as_str())
    );

    // /token: our tokens for the code and the client's verifier.
    let token = social.token(&code, &started.verifier).await;
    assert_eq!(token.status, StatusCode::OK, "{}", token.body);
    assert_eq!(token.header("cache-control"), Some("no-store"));
    assert_eq!(token.str("token_type"), "Bearer");
    assert!(token.body["expires_in"].as_u64().is_some_and(|s| s > 0));
    assert!(token.body["refresh_expires_in"]
        .as_u64()
        .is_some_and(|s| s > 0));
    let tokens = Tokens::from_response(&token);
    let claims = claims_of(&tokens.access);
    assert_eq!(claims["sub"], json!(user.id));
    assert_eq!(claims["email"], json!(email));
    assert_eq!(claims["amr"], json!(["oauth"]));

    // An ordinary session: validate, refresh (keeping amr), logout.
    let validate = social.app.validate(&tokens.access).await;
    assert_eq!(validate.status, StatusCode::OK, "{}", validate.body);
    let refreshed = Tokens::from_response(&social.app.refresh(&tokens.refresh).await);
    assert_eq!(claims_of(&refreshed.access)["amr"], json!(["oauth"]));
    assert_eq!(refreshed.sid(), tokens.sid());
    assert_eq!(
        social
            .app
            .logout_refresh(&refreshed.refresh, false)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        social.app.refresh(&refreshed.refresh).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        social.app.validate(&refreshed.access).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(
        social.app.revoked_sids().await.contains(&tokens.sid()),
        "the gateway learns of the ended session as of any other"
    );
    // A password login still says so.
    let (_, password_tokens) = social.app.logged_in_user().await;
    assert_eq!(claims_of(&password_tokens.access)["amr"], json!(["pwd"]));
}

mod every_store {
    use super::*;

    crate::on_every_backend!(social_sign_in_ends_in_an_ordinary_session);
}

/// A known identity signs in as its user, whatever email the provider asserts now.
async fn the_same_identity_twice_is_the_same_user(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    let grant = Grant::random();
    let first = social.tokens(grant.clone()).await;
    let moved = grant
        .again()
        .email(Some("moved-elsewhere@example.com"), Some(json!(true)));
    let second = social.tokens(moved).await;
    assert_eq!(
        claims_of(&first.access)["sub"],
        claims_of(&second.access)["sub"]
    );
    assert_ne!(first.sid(), second.sid(), "a session per sign-in");
    let third = social.tokens(Grant::random()).await;
    assert_ne!(
        claims_of(&first.access)["sub"],
        claims_of(&third.access)["sub"]
    );
}

/// Two tabs of one browser: the second `/authorize` reuses the cookie, both flows finish.
async fn two_tabs_of_one_browser_sign_in_at_once(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    let first = social.start().await;
    let second = social.start_in(Some(&first.cookie)).await;
    assert_eq!(
        second.cookie, first.cookie,
        "the browser's cookie is reused"
    );
    assert_ne!(second.state, first.state);
    one_time_code(&social.approve(&second, Grant::random()).await);
    one_time_code(&social.approve(&first, Grant::random()).await);
}

// ---------------------------------------------------------------------------------------------
// /authorize refusals.

/// Every `redirect_to` that is not the allow-listed URL (scheme, host, port and path equal, no
/// fragment or userinfo): an error page, no redirect, no cookie, no flow. Checked before
/// anything else, so an unknown provider does not turn it into a redirect.
async fn redirect_to_off_the_allow_list_is_an_error_page(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    let challenge = challenge(&random());
    let refused = [
        ("https://127.0.0.1:3000/signed-in", "other scheme"),
        ("http://127.0.0.2:3000/signed-in", "other host"),
        (
            "http://localhost:3000/signed-in",
            "localhost is not 127.0.0.1",
        ),
        ("http://127.0.0.1:3001/signed-in", "other port"),
        ("http://127.0.0.1/signed-in", "default port"),
        ("http://127.0.0.1:3000/signed-in/", "trailing slash"),
        ("http://127.0.0.1:3000/signed-in/x", "longer path"),
        ("http://127.0.0.1:3000/signed", "shorter path"),
        ("http://127.0.0.1:3000/other", "other path"),
        ("http://127.0.0.1:3000/signed-in#frag", "fragment"),
        ("http://127.0.0.1:3000/signed-in#", "empty fragment"),
        ("http://user@127.0.0.1:3000/signed-in", "userinfo"),
        ("http://user:pw@127.0.0.1:3000/signed-in", "credentials"),
        (
            "http://127.0.0.1:3000@evil.example/signed-in",
            "userinfo trick",
        ),
        ("//127.0.0.1:3000/signed-in", "scheme-relative"),
        ("/signed-in", "relative"),
        (
            "javascript:alert(1)//127.0.0.1:3000/signed-in",
            "javascript",
        ),
        ("", "empty"),
    ];
    for (redirect_to, reason) in refused {
        let response = social.authorize(redirect_to, &challenge).await;
        assert_error_page(&response, "invalid_redirect", reason);
        assert!(sign_in_cookie(&response).is_none(), "{reason}: cookie set");
    }
    let no_redirect = social
        .get(
            "/authorize",
            &[("provider", PROVIDER), ("code_challenge", &challenge)],
            None,
        )
        .await;
    assert_error_page(&no_redirect, "invalid_redirect", "redirect_to missing");
    let unknown_provider_too = social
        .get(
            "/authorize",
            &[
                ("provider", "nope"),
                ("redirect_to", "https://evil.example/"),
            ],
            None,
        )
        .await;
    assert_error_page(
        &unknown_provider_too,
        "invalid_redirect",
        "checked first, before the provider",
    );
    // A browser asking for HTML gets a page.
    let url = format!(
        "{}/authorize?provider={PROVIDER}&redirect_to=https%3A%2F%2Fevil.example%2F",
        social.base
    );
    let page = social
        .browser
        .get(url)
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    assert!(page.headers().get("location").is_none());
    let content_type = page.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
}

/// Refusals after `redirect_to` is known good go back to it.
async fn authorize_refusals_go_back_to_redirect_to(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    let good = challenge(&random());
    type Query<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Query<'_>, &str, &str); 7] = [
        (
            &[
                ("provider", "nope"),
                ("code_challenge", &good),
                ("code_challenge_method", "S256"),
            ],
            "unknown_provider",
            "unknown provider",
        ),
        (
            &[("provider", PROVIDER), ("code_challenge_method", "S256")],
            "invalid_code_challenge",
            "no challenge",
        ),
        (
            &[("provider", PROVIDER), ("code_challenge", &good)],
            "invalid_code_challenge",
            "no method",
        ),
        (
            &[
                ("provider", PROVIDER),
                ("code_challenge", &good),
                ("code_challenge_method", "plain"),
            ],
            "invalid_code_challenge",
            "plain",
        ),
        (
            &[
                ("provider", PROVIDER),
                ("code_challenge", &good),
                ("code_challenge_method", "s256"),
            ],
            "invalid_code_challenge",
            "method is case-sensitive",
        ),
        (
            &[
                ("provider", PROVIDER),
                ("code_challenge", &good[..42]),
                ("code_challenge_method", "S256"),
            ],
            "invalid_code_challenge",
            "42 characters",
        ),
        (
            &[
                ("provider", PROVIDER),
                ("code_challenge", &format!("{}+", &good[..42])),
                ("code_challenge_method", "S256"),
            ],
            "invalid_code_challenge",
            "not base64url",
        ),
    ];
    for (query, error_code, reason) in cases {
        let mut query = query.to_vec();
        query.push(("redirect_to", REDIRECT_TO));
        let response = social.get("/authorize", &query, None).await;
        assert_error_redirect(&response, "invalid_request", error_code, reason);
    }
}

/// The provider down from the start: discovery fails fast, back to the client.
async fn provider_down_at_authorize_is_temporarily_unavailable(backend: Backend) {
    let mut social = Social::spawn(backend, Setup::default()).await;
    social.provider.stop().await;
    let started = Instant::now();
    let response = social.authorize(REDIRECT_TO, &challenge(&random())).await;
    assert!(
        started.elapsed() < UNAVAILABLE_WITHIN,
        "{:?}",
        started.elapsed()
    );
    assert_error_redirect(
        &response,
        "temporarily_unavailable",
        "provider_unavailable",
        "down",
    );
}

/// Discovery answering after the fetch timeout: refused at the timeout, not after.
async fn slow_discovery_is_temporarily_unavailable_at_the_timeout(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    social
        .provider
        .misbehave(Endpoint::Discovery, Misbehaviour::Slow(SLOW));
    let started = Instant::now();
    let response = social.authorize(REDIRECT_TO, &challenge(&random())).await;
    let took = started.elapsed();
    assert!(took < SLOW_WITHIN, "{took:?}");
    assert_error_redirect(
        &response,
        "temporarily_unavailable",
        "provider_unavailable",
        "slow discovery",
    );
}

// ---------------------------------------------------------------------------------------------
// /callback: the state and the browser.

/// A state is taken on first sight: the same callback again is an error page.
async fn replayed_state_is_invalid_state(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    let started = social.start().await;
    let code = social
        .provider
        .issue_code(&started.request, Grant::random());
    let query = [
        ("code", code.as_str()),
        ("state", &started.state),
        ("iss", social.provider.issuer()),
    ];
    one_time_code(&social.callback(&query, Some(&started.cookie)).await);
    let replay = social.callback(&query, Some(&started.cookie)).await;
    assert_error_page(&replay, "invalid_state", "replayed");
    // The browser itself gets a page, not JSON.
    let mut url = Url::parse(&format!("{}/callback", social.base)).unwrap();
    url.query_pairs_mut().extend_pairs(query);
    let page = social
        .browser
        .get(url)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    let content_type = page.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(page.text().await.unwrap().contains("invalid_state"));
}

/// A state we never issued (tampered, made up, missing) is an error page, and spends nothing:
/// the real flow still finishes.
async fn unknown_state_is_invalid_state_and_spends_nothing(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    let started = social.start().await;
    let mut tampered = started.state.clone().into_bytes();
    tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let made_up = random();
    let code = social
        .provider
        .issue_code(&started.request, Grant::random());
    let iss = social.provider.issuer();
    let cases: [(Vec<(&str, &str)>, &str); 5] = [
        (
            vec![("code", &code), ("state", &tampered), ("iss", iss)],
            "tampered",
        ),
        (
            vec![("code", &code), ("state", &made_up), ("iss", iss)],
            "made up",
        ),
        (vec![("code", &code), ("iss", iss)], "missing"),
        (vec![("code", &code), ("state", ""), ("iss", iss)], "empty"),
        (
            vec![
                ("code", &code),
                ("state", &started.state[..42]),
                ("iss", iss),
            ],
            "truncated",
        ),
    ];
    for (query, reason) in cases {
        let response = social.callback(&query, Some(&started.cookie)).await;
        assert_error_page(&response, "invalid_state", reason);
    }
    // Sent twice, even both times right: no copy may pass a check for the other.
    let twice = [
        ("code", code.as_str()),
        ("state", &started.state),
        ("state", &started.state),
        ("iss", iss),
    ];
    let response = social.callback(&twice, Some(&started.cookie)).await;
    assert_error_page(&response, "invalid_state", "state twice");
    let query = [
        ("code", code.as_str()),
        ("state", &started.state),
        ("iss", iss),
    ];
    one_time_code(&social.callback(&query, Some(&started.cookie)).await);
}

/// The flow belongs to the browser that started it: without its cookie, or with another
/// browser's, it is refused back to the client, and spent (a retry finds no flow).
async fn callback_in_another_browser_is_browser_mismatch_and_spends_the_flow(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    let other_browser = social.start().await;
    type Cookie = fn(&Started, &Started) -> Option<String>;
    let cases: [(Cookie, &str); 4] = [
        (|_, _| None, "no cookie"),
        (
            |_, other| Some(other.cookie.clone()),
            "another browser's cookie",
        ),
        (|_, _| Some(random()), "a made-up cookie"),
        (
            // The right one and a planted copy (another site of the same registrable domain
            // can set a cookie of this name without `__Host-`'s guarantees on old browsers):
            // which one counts must not be the planter's choice.
            |mine, _| Some(format!("{}; {COOKIE}={}", mine.cookie, random())),
            "the right cookie and a planted one",
        ),
    ];
    for (cookie, reason) in cases {
        let started = social.start().await;
        let cookie = cookie(&started, &other_browser);
        let code = social
            .provider
            .issue_code(&started.request, Grant::random());
        let query = [
            ("code", code.as_str()),
            ("state", &started.state),
            ("iss", social.provider.issuer()),
        ];
        let response = social.callback(&query, cookie.as_deref()).await;
        assert_error_redirect(&response, "access_denied", "browser_mismatch", reason);
        let retry = social.callback(&query, Some(&started.cookie)).await;
        assert_error_page(&retry, "invalid_state", reason);
    }
    assert_eq!(
        social.provider.exchanges(),
        [],
        "no code was exchanged for a mismatched browser"
    );
}

/// A flow lives `flow_ttl_secs`: the cookie says so, a callback just inside works, one just
/// after is an error page.
async fn flow_past_its_ttl_is_invalid_state(backend: Backend) {
    let social = Social::spawn(
        backend,
        Setup {
            flow_ttl_secs: 60,
            ..Setup::default()
        },
    )
    .await;
    let authorize = social.authorize(REDIRECT_TO, &challenge(&random())).await;
    let (_, attributes) = sign_in_cookie(&authorize).expect("no cookie");
    assert!(
        cookie_attributes(&attributes).contains(&"max-age=60".to_owned()),
        "{attributes}"
    );
    let inside = social.start().await;
    let outside = social.start().await;
    social.app.advance(Duration::from_secs(59));
    one_time_code(&social.approve(&inside, Grant::random()).await);
    social.app.advance(Duration::from_secs(2));
    let response = social.approve(&outside, Grant::random()).await;
    assert_error_page(&response, "invalid_state", "expired");
}

// ---------------------------------------------------------------------------------------------
// /callback: the provider's answers.

/// The user refused consent at the provider: back to the client, the provider's code in the
/// description; the flow is spent.
async fn provider_error_is_provider_error(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    let started = social.start().await;
    let query = [
        ("error", "access_denied"),
        ("error_description", "the user said no"),
        ("state", started.state.as_str()),
        ("iss", social.provider.issuer()),
    ];
    let response = social.callback(&query, Some(&started.cookie)).await;
    assert_error_redirect(&response, "access_denied", "provider_error", "denied");
    let description = query_of(&location(&response))["error_description"].clone();
    assert!(description.contains("access_denied"), "{description}");
    let retry = social.approve(&started, Grant::random()).await;
    assert_error_page(&retry, "invalid_state", "spent by the error");
}

/// The provider refuses to exchange the code (ours is unknown to it).
async fn code_refused_by_the_provider_is_provider_error(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    let started = social.start().await;
    let query = [
        ("code", "a-code-the-provider-never-issued"),
        ("state", started.state.as_str()),
        ("iss", social.provider.issuer()),
    ];
    let response = social.callback(&query, Some(&started.cookie)).await;
    assert_error_redirect(&response, "access_denied", "provider_error", "unknown code");
    assert_eq!(
        social.provider.exchanges(),
        [Exchange::Refused("invalid_grant", "unknown or used code")],
        "refused for the code, not for our client authentication or verifier"
    );
}

/// RFC 9207 where the provider advertises it: `iss` must be there and be the provider's.
async fn advertised_iss_must_be_the_providers(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    let other = FakeProvider::start(fake_provider::Options {
        redirect_uri: format!("{}/callback", social.base),
        iss_parameter_supported: true,
        userinfo: true,
    })
    .await;
    let issuer = social.provider.issuer().to_owned();
    let cases: [(Option<String>, &str); 4] = [
        (None, "missing"),
        (
            Some(other.issuer().to_owned()),
            "another provider's (mix-up)",
        ),
        (Some(format!("{issuer}/")), "trailing slash"),
        (Some(String::new()), "empty"),
    ];
    for (iss, reason) in cases {
        let started = social.start().await;
        let code = social
            .provider
            .issue_code(&started.request, Grant::random());
        let mut query = vec![("code", code.as_str()), ("state", started.state.as_str())];
        if let Some(iss) = &iss {
            query.push(("iss", iss));
        }
        let response = social.callback(&query, Some(&started.cookie)).await;
        assert_error_redirect(&response, "access_denied", "issuer_mismatch", reason);
    }
    // RFC 9207 §2.4: an error response is checked too, before its error is believed.
    let started = social.start().await;
    let query = [
        ("error", "access_denied"),
        ("state", started.state.as_str()),
        ("iss", other.issuer()),
    ];
    let response = social.callback(&query, Some(&started.cookie)).await;
    assert_error_redirect(
        &response,
        "access_denied",
        "issuer_mismatch",
        "an error from another provider",
    );
    assert_eq!(social.provider.exchanges(), [], "no code sent anywhere");
}

/// RFC 9207 where the provider does not advertise it: a callback without `iss` is fine, one
/// with another issuer's is not.
async fn unadvertised_iss_is_optional_but_checked(backend: Backend) {
    let social = Social::spawn(
        backend,
        Setup {
            iss_parameter_supported: false,
            ..Setup::default()
        },
    )
    .await;
    let started = social.start().await;
    let code = social
        .provider
        .issue_code(&started.request, Grant::random());
    let query = [("code", code.as_str()), ("state", started.state.as_str())];
    one_time_code(&social.callback(&query, Some(&started.cookie)).await);

    let started = social.start().await;
    let code = social
        .provider
        .issue_code(&started.request, Grant::random());
    let query = [
        ("code", code.as_str()),
        ("state", started.state.as_str()),
        ("iss", "http://127.0.0.1:1"),
    ];
    let response = social.callback(&query, Some(&started.cookie)).await;
    assert_error_redirect(&response, "access_denied", "issuer_mismatch", "other iss");
}

/// Every way an ID token can be wrong (OIDC Core §3.1.3.7): refused back to the client as
/// `invalid_id_token`, and nobody is signed up.
async fn id_token_that_does_not_verify_is_invalid_id_token(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    let now = social.app.clock.now();
    type Change = fn(Grant) -> Grant;
    let cases: Vec<(Change, &str)> = vec![
        (
            |g| g.claim("nonce", json!("another-flows-nonce")),
            "wrong nonce",
        ),
        (|g| g.without("nonce"), "no nonce"),
        (
            |g| g.claim("iss", json!("http://127.0.0.1:1")),
            "another issuer",
        ),
        (
            |g| g.claim("aud", json!("another-client")),
            "another audience",
        ),
        (
            |g| g.claim("aud", json!([fake_provider::CLIENT_ID, "another-client"])),
            "several audiences without azp",
        ),
        (
            |g| g.claim("azp", json!("another-client")),
            "azp of another client",
        ),
        (|g| g.without("exp"), "no exp"),
        (|g| g.claim("sub", json!("")), "empty sub"),
        (|g| g.without("sub"), "no sub"),
        (|g| g.signed(Signing::None), "alg none"),
        (
            |g| g.signed(Signing::Hs256WithClientSecret),
            "HS256 keyed with the client secret",
        ),
        (|g| g.signed(Signing::OtherKey), "signed by another key"),
        (|g| g.signed(Signing::UnknownKid), "unknown kid"),
        (|g| g.signed(Signing::Typ("at+jwt")), "an access token"),
    ];
    let mut cases: Vec<(Grant, String)> = cases
        .into_iter()
        .map(|(change, reason)| (change(Grant::random()), reason.to_owned()))
        .collect();
    // Past the 60 s leeway either way.
    cases.push((
        Grant::random()
            .claim("exp", json!(now - 61))
            .claim("iat", json!(now - 400)),
        "expired".to_owned(),
    ));
    cases.push((
        Grant::random()
            .claim("iat", json!(now + 3600))
            .claim("exp", json!(now + 4000)),
        "issued in the future".to_owned(),
    ));
    for (grant, reason) in cases {
        let email = grant.email.clone().unwrap();
        let started = social.start().await;
        let response = social.approve(&started, grant).await;
        assert_error_redirect(&response, "access_denied", "invalid_id_token", &reason);
        assert!(
            social
                .app
                .state
                .store
                .user_by_email(&email)
                .await
                .unwrap()
                .is_none(),
            "{reason}: a user was created"
        );
    }
    // The positive control: the same provider, the same flow, a good token.
    social.tokens(Grant::random()).await;
}

/// The token endpoint down after `/authorize` worked: back to the client, quickly.
async fn provider_down_at_callback_is_temporarily_unavailable(backend: Backend) {
    let mut social = Social::spawn(backend, Setup::default()).await;
    let started = social.start().await;
    social.provider.stop().await;
    let clock = Instant::now();
    let response = social.approve(&started, Grant::random()).await;
    assert!(
        clock.elapsed() < UNAVAILABLE_WITHIN,
        "{:?}",
        clock.elapsed()
    );
    assert_error_redirect(
        &response,
        "temporarily_unavailable",
        "provider_unavailable",
        "down at the callback",
    );
}

/// The token endpoint answering after the fetch timeout: refused at the timeout.
async fn slow_token_endpoint_is_temporarily_unavailable_at_the_timeout(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    let started = social.start().await;
    social
        .provider
        .misbehave(Endpoint::Token, Misbehaviour::Slow(SLOW));
    let clock = Instant::now();
    let response = social.approve(&started, Grant::random()).await;
    let took = clock.elapsed();
    assert!(took < SLOW_WITHIN, "{took:?}");
    assert_error_redirect(
        &response,
        "temporarily_unavailable",
        "provider_unavailable",
        "slow token endpoint",
    );
}

/// The JWKS answering after the fetch timeout: the same.
async fn slow_jwks_is_temporarily_unavailable_at_the_timeout(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    let started = social.start().await;
    social
        .provider
        .misbehave(Endpoint::Jwks, Misbehaviour::Slow(SLOW));
    let clock = Instant::now();
    let response = social.approve(&started, Grant::random()).await;
    let took = clock.elapsed();
    assert!(took < SLOW_WITHIN, "{took:?}");
    assert_error_redirect(
        &response,
        "temporarily_unavailable",
        "provider_unavailable",
        "slow JWKS",
    );
}

/// A provider failing (5xx) or answering nonsense at each back-channel step: unavailable is
/// `temporarily_unavailable`, nonsense `server_error`, both back to the client. Nothing of a
/// failed step is kept: once the provider behaves, the same app signs in.
async fn provider_failing_or_answering_nonsense_goes_back_to_the_client(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    let unavailable = ("temporarily_unavailable", "provider_unavailable");
    let nonsense = ("server_error", "provider_invalid_response");
    let down = Misbehaviour::Status(StatusCode::SERVICE_UNAVAILABLE);
    for (misbehaviour, (error, error_code), reason) in [
        (down, unavailable, "discovery 503"),
        (Misbehaviour::Garbage, nonsense, "discovery not JSON"),
    ] {
        social.provider.misbehave(Endpoint::Discovery, misbehaviour);
        let response = social.authorize(REDIRECT_TO, &challenge(&random())).await;
        assert_error_redirect(&response, error, error_code, reason);
    }
    social.provider.behave(Endpoint::Discovery);
    for (endpoint, misbehaviour, (error, error_code), reason) in [
        (Endpoint::Token, down, unavailable, "token endpoint 503"),
        (
            Endpoint::Token,
            Misbehaviour::Garbage,
            nonsense,
            "token response not JSON",
        ),
        (Endpoint::Jwks, down, unavailable, "JWKS 503"),
        (
            Endpoint::Jwks,
            Misbehaviour::Garbage,
            nonsense,
            "JWKS not JSON",
        ),
    ] {
        let started = social.start().await;
        social.provider.misbehave(endpoint, misbehaviour);
        let response = social.approve(&started, Grant::random()).await;
        assert_error_redirect(&response, error, error_code, reason);
        social.provider.behave(endpoint);
    }
    social.tokens(Grant::random()).await;
}

/// `/authorize`, `/callback` and `/token` share the per-address bucket of `/login`: past it, 429 with
/// `Retry-After`, before any flow is stored or any provider asked.
async fn authorize_and_callback_are_limited_per_address(backend: Backend) {
    let social = Social::spawn(
        backend,
        Setup {
            ip_limit_per_minute: Some(2),
            ..Setup::default()
        },
    )
    .await;
    let started = social.start().await;
    let code = social
        .provider
        .issue_code(&started.request, Grant::random());
    let query = [
        ("code", code.as_str()),
        ("state", &started.state),
        ("iss", social.provider.issuer()),
    ];
    one_time_code(&social.callback(&query, Some(&started.cookie)).await);
    let authorize = social.authorize(REDIRECT_TO, &challenge(&random())).await;
    assert_eq!(
        authorize.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        authorize.body
    );
    assert_eq!(authorize.error(), "rate_limited");
    assert!(authorize.header("retry-after").is_some());
    assert!(sign_in_cookie(&authorize).is_none());
    let token = social.token(&random(), &started.verifier).await;
    assert_eq!(
        token.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        token.body
    );
    let callback = social.callback(&query, Some(&started.cookie)).await;
    assert_eq!(
        callback.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        callback.body
    );
}

/// Without `AUTH_OIDC_PROVIDERS_FILE` the routes exist and refuse: no allow-list to send a
/// browser back to, no flow, no code.
async fn without_providers_the_routes_refuse(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let verifier = random();
    let redirect_to: String =
        url::form_urlencoded::byte_serialize(REDIRECT_TO.as_bytes()).collect();
    let authorize = app
        .get(
            &format!(
                "/authorize?provider={PROVIDER}&redirect_to={redirect_to}&code_challenge={}&code_challenge_method=S256",
                challenge(&verifier)
            ),
            None,
        )
        .await;
    assert_error_page(&authorize, "invalid_redirect", "no providers");
    let callback = app
        .get(&format!("/callback?code=c&state={}", random()), None)
        .await;
    assert_error_page(&callback, "invalid_state", "no providers");
    let token = app
        .post_json(
            "/token?grant_type=pkce",
            json!({"auth_code": random(), "code_verifier": verifier}),
        )
        .await;
    assert_eq!(token.status, StatusCode::UNAUTHORIZED, "{}", token.body);
    assert_eq!(token.error(), "invalid_grant");
}

// ---------------------------------------------------------------------------------------------
// /callback: accounts.

/// A new identity needs a verified email: unverified, or "verified" in any form but JSON true,
/// is refused; no email at all (neither in the ID token nor from userinfo) is `email_required`.
async fn new_identity_needs_a_verified_email(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    let unverified: [(Option<Value>, &str); 4] = [
        (Some(json!(false)), "false"),
        (None, "absent"),
        (Some(json!("true")), "the string true"),
        (Some(json!(1)), "the number 1"),
    ];
    for (verified, reason) in unverified {
        let grant = Grant::random();
        let email = grant.email.clone().unwrap();
        let grant = grant.email(Some(&email), verified.clone());
        let started = social.start().await;
        let response = social.approve(&started, grant).await;
        assert_error_redirect(&response, "access_denied", "email_not_verified", reason);
        assert!(
            social
                .app
                .state
                .store
                .user_by_email(&email)
                .await
                .unwrap()
                .is_none(),
            "{reason}"
        );
    }
    let started = social.start().await;
    let response = social
        .approve(&started, Grant::random().email(None, None))
        .await;
    assert_error_redirect(&response, "access_denied", "email_required", "no email");
}

/// An ID token without the email: auth-api asks userinfo (whose `sub` must match).
async fn email_missing_from_the_id_token_comes_from_userinfo(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    let grant = Grant::random();
    let email = grant.email.clone().unwrap();
    let userinfo = json!({"sub": grant.subject, "email": email, "email_verified": true});
    let grant = grant
        .without("email")
        .without("email_verified")
        .userinfo(userinfo);
    let tokens = social.tokens(grant).await;
    assert_eq!(claims_of(&tokens.access)["email"], json!(email));
    assert!(social.provider.userinfo_hits() >= 1);
}

/// The dangerous case, refused by default: an unknown identity whose verified email belongs to
/// a password account does not get into it.
async fn email_of_an_existing_account_is_email_in_use_without_linking(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    let owner = TestUser::random();
    owner.register(&social.app).await;
    let started = social.start().await;
    let grant = Grant::random().email(Some(&owner.email), Some(json!(true)));
    let response = social.approve(&started, grant).await;
    assert_error_redirect(&response, "access_denied", "email_in_use", "linking off");
    let user = social.app.user(&owner.email).await;
    assert_eq!(
        social
            .app
            .state
            .store
            .identities_of(&user.id)
            .await
            .unwrap(),
        [],
        "nothing linked"
    );
}

/// With `allow_email_linking`, a verified email links the identity to an existing account
/// that has no password (one an earlier external sign-in created); an unverified email does
/// not, and neither does an account with a password, which anybody may have opened with the
/// address (signup verifies no email): linking would let them keep a way in (pre-hijacking).
async fn verified_email_links_to_the_existing_account_when_allowed(backend: Backend) {
    let social = Social::spawn(
        backend,
        Setup {
            allow_email_linking: true,
            ..Setup::default()
        },
    )
    .await;
    let store = &social.app.state.store;
    // An account another provider created, with no password.
    let first = Grant::random();
    let email = first.email.clone().unwrap();
    let user_id = uuid::Uuid::new_v4().to_string();
    let now = social.app.clock.now();
    let elsewhere = auth_api::store::ExternalIdentity {
        provider: "elsewhere".to_owned(),
        subject: first.subject.clone(),
        issuer: Some("https://elsewhere.example".to_owned()),
        user_id: user_id.clone(),
        email: Some(email.clone()),
        email_verified: true,
        created_at: now,
        last_used_at: now,
    };
    assert_eq!(
        store
            .insert_passwordless_user(&email, &["user"], &elsewhere)
            .await
            .unwrap(),
        auth_api::store::InsertPasswordlessUser::Created
    );

    for (verified, reason) in [(json!(false), "unverified"), (json!("true"), "string true")] {
        let started = social.start().await;
        let grant = Grant::random().email(Some(&email), Some(verified));
        let response = social.approve(&started, grant).await;
        assert_error_redirect(&response, "access_denied", "email_not_verified", reason);
    }
    assert_eq!(store.identities_of(&user_id).await.unwrap().len(), 1);

    let grant = Grant::random().email(Some(&email), Some(json!(true)));
    let tokens = social.tokens(grant.clone()).await;
    assert_eq!(claims_of(&tokens.access)["sub"], json!(user_id), "linked");
    let identities = store.identities_of(&user_id).await.unwrap();
    assert_eq!(identities.len(), 2);
    assert!(identities.iter().any(
        |i| i.subject == grant.subject && i.issuer.as_deref() == Some(social.provider.issuer())
    ));
    let again = social.tokens(grant.again()).await;
    assert_eq!(claims_of(&again.access)["sub"], json!(user_id));

    // A password account with the address is never linked, whoever opened it.
    let squatter = TestUser::random();
    squatter.register(&social.app).await;
    let started = social.start().await;
    let grant = Grant::random().email(Some(&squatter.email), Some(json!(true)));
    let response = social.approve(&started, grant).await;
    assert_error_redirect(
        &response,
        "access_denied",
        "email_in_use",
        "password account",
    );
    let squatted = social.app.user(&squatter.email).await;
    assert_eq!(store.identities_of(&squatted.id).await.unwrap(), []);
}

/// A provider restricted to a Workspace domain sends `hd` and accepts only ID tokens whose
/// `hd` is that domain: a consumer account with an address there (no `hd`) is refused.
async fn a_hosted_domain_admits_only_its_accounts(backend: Backend) {
    let social = Social::spawn(
        backend,
        Setup {
            hosted_domain: Some("corp.example"),
            ..Setup::default()
        },
    )
    .await;
    let started = social.start().await;
    assert_eq!(started.request.get("hd"), "corp.example");
    let member = Grant::random()
        .email(Some("ada@corp.example"), Some(json!(true)))
        .claim("hd", json!("corp.example"));
    let response = social.approve(&started, member).await;
    one_time_code(&response);
    for (grant, why) in [
        (
            Grant::random().email(Some("bob@corp.example"), Some(json!(true))),
            "no hd: a consumer account with an address at the domain",
        ),
        (
            Grant::random().claim("hd", json!("other.example")),
            "another organisation",
        ),
    ] {
        let started = social.start().await;
        let response = social.approve(&started, grant).await;
        assert_error_redirect(&response, "access_denied", "hosted_domain_mismatch", why);
    }
}

/// An unverified email is refused before it is looked up: the answer is the same whether or
/// not an account has the address.
async fn an_unverified_email_does_not_tell_whether_an_account_has_it(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    let owner = TestUser::random();
    owner.register(&social.app).await;
    for email in [owner.email.clone(), TestUser::random().email] {
        let started = social.start().await;
        let grant = Grant::random().email(Some(&email), Some(json!(false)));
        let response = social.approve(&started, grant).await;
        assert_error_redirect(&response, "access_denied", "email_not_verified", &email);
    }
}

/// A provider name pointed at another issuer does not inherit the identities made at the old
/// one: the same `sub` there is refused, not signed in as the old identity's user.
async fn an_identity_of_another_issuer_is_refused(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    let store = &social.app.state.store;
    let grant = Grant::random();
    let user_id = uuid::Uuid::new_v4().to_string();
    let now = social.app.clock.now();
    let made_elsewhere = auth_api::store::ExternalIdentity {
        provider: PROVIDER.to_owned(),
        subject: grant.subject.clone(),
        issuer: Some("https://the-old-issuer.example".to_owned()),
        user_id: user_id.clone(),
        email: grant.email.clone(),
        email_verified: true,
        created_at: now,
        last_used_at: now,
    };
    store
        .insert_passwordless_user(grant.email.as_deref().unwrap(), &["user"], &made_elsewhere)
        .await
        .unwrap();
    let started = social.start().await;
    let response = social.approve(&started, grant.again()).await;
    assert_error_redirect(
        &response,
        "access_denied",
        "provider_changed",
        "another issuer",
    );
}

/// What a provider asserts about a known identity is stored only if it is an address: an
/// overlong or control-character email is kept as none, and the sign-in still works.
async fn an_unusable_email_of_a_known_identity_is_not_stored(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    let grant = Grant::random();
    let first = social.tokens(grant.clone()).await;
    let odd = format!("{}\u{1b}\u{202e}@example.com", "x".repeat(400));
    let second = social
        .tokens(grant.again().email(Some(&odd), Some(json!(true))))
        .await;
    let user_id = claims_of(&first.access)["sub"].as_str().unwrap().to_owned();
    assert_eq!(claims_of(&second.access)["sub"], json!(user_id));
    let identities = social
        .app
        .state
        .store
        .identities_of(&user_id)
        .await
        .unwrap();
    assert_eq!(identities[0].email, None);
    assert!(!identities[0].email_verified);
}

/// A disabled user cannot sign in through a provider either.
async fn disabled_user_is_account_disabled(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    let grant = Grant::random();
    let tokens = social.tokens(grant.clone()).await;
    let user_id = claims_of(&tokens.access)["sub"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(social
        .app
        .state
        .store
        .disable_user(&user_id, social.app.state.revoke_at())
        .await
        .unwrap());
    let started = social.start().await;
    let response = social.approve(&started, grant.again()).await;
    assert_error_redirect(&response, "access_denied", "account_disabled", "disabled");
}

// ---------------------------------------------------------------------------------------------
// /token.

/// A verifier that does not match the client's challenge: 401, and the code is spent.
async fn token_with_a_wrong_verifier_is_invalid_grant_and_spends_the_code(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    let (started, code) = social.sign_in(Grant::random()).await;
    let wrong = [
        (random(), "another verifier"),
        (challenge(&started.verifier), "the challenge itself"),
        (started.verifier[..42].to_owned(), "truncated"),
        (String::new(), "empty"),
    ];
    let (first, _) = &wrong[0];
    let response = social.token(&code, first).await;
    assert_eq!(
        response.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        response.body
    );
    assert_eq!(response.error(), "invalid_grant");
    let retry = social.token(&code, &started.verifier).await;
    assert_eq!(
        retry.status,
        StatusCode::UNAUTHORIZED,
        "spent: {}",
        retry.body
    );
    assert_eq!(retry.error(), "invalid_grant");
    for (verifier, reason) in &wrong[1..] {
        let (started, code) = social.sign_in(Grant::random()).await;
        let response = social.token(&code, verifier).await;
        assert_eq!(
            response.status,
            StatusCode::UNAUTHORIZED,
            "{reason}: {}",
            response.body
        );
        assert_eq!(response.error(), "invalid_grant", "{reason}");
        let retry = social.token(&code, &started.verifier).await;
        assert_eq!(retry.status, StatusCode::UNAUTHORIZED, "{reason}: spent");
    }
}

/// A code is redeemed once; an unknown one is refused alike.
async fn token_code_replay_is_invalid_grant(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    let (started, code) = social.sign_in(Grant::random()).await;
    let first = social.token(&code, &started.verifier).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let replay = social.token(&code, &started.verifier).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED, "{}", replay.body);
    assert_eq!(replay.error(), "invalid_grant");
    let unknown = social.token(&random(), &started.verifier).await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED, "{}", unknown.body);
    assert_eq!(unknown.error(), "invalid_grant");
}

/// `grant_type` must be `pkce`; the body must be the JSON the contract names. A malformed
/// request does not spend the code.
async fn token_needs_the_pkce_grant_type_and_json(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    let (started, code) = social.sign_in(Grant::random()).await;
    let body = json!({"auth_code": code, "code_verifier": started.verifier}).to_string();
    for (grant_type, reason) in [
        (None, "missing"),
        (Some("authorization_code"), "authorization_code"),
        (Some("password"), "password"),
        (Some("PKCE"), "case"),
        (Some(""), "empty"),
    ] {
        let response = social.token_raw(grant_type, body.clone()).await;
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{reason}: {}",
            response.body
        );
        assert_eq!(response.error(), "unsupported_grant_type", "{reason}");
    }
    for (body, reason) in [
        ("{".to_owned(), "not JSON"),
        ("[]".to_owned(), "not an object"),
        (json!({"auth_code": code}).to_string(), "no verifier"),
        (
            json!({"code_verifier": started.verifier}).to_string(),
            "no code",
        ),
    ] {
        let response = social.token_raw(Some("pkce"), body).await;
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{reason}: {}",
            response.body
        );
        assert_eq!(response.error(), "invalid_request", "{reason}");
    }
    // None of these was an attempt at the code: it still works.
    let response = social.token(&code, &started.verifier).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
}

/// A code lives 60 s.
async fn token_code_older_than_sixty_seconds_is_invalid_grant(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    let (fresh_started, fresh) = social.sign_in(Grant::random()).await;
    let (old_started, old) = social.sign_in(Grant::random()).await;
    social.app.advance(Duration::from_secs(59));
    let response = social.token(&fresh, &fresh_started.verifier).await;
    assert_eq!(response.status, StatusCode::OK, "59 s: {}", response.body);
    social.app.advance(Duration::from_secs(2));
    let response = social.token(&old, &old_started.verifier).await;
    assert_eq!(
        response.status,
        StatusCode::UNAUTHORIZED,
        "61 s: {}",
        response.body
    );
    assert_eq!(response.error(), "invalid_grant");
}

/// A user disabled between the callback and the exchange gets no tokens.
async fn token_for_a_user_disabled_meanwhile_is_account_disabled(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    let grant = Grant::random();
    let email = grant.email.clone().unwrap();
    let (started, code) = social.sign_in(grant).await;
    let user = social.app.user(&email).await;
    assert!(social
        .app
        .state
        .store
        .disable_user(&user.id, social.app.state.revoke_at())
        .await
        .unwrap());
    let response = social.token(&code, &started.verifier).await;
    assert_eq!(response.status, StatusCode::FORBIDDEN, "{}", response.body);
    assert_eq!(response.error(), "account_disabled");
}

/// SECURITY.md I 119: a whole sign-in, exchange and refresh, logged at debug level in the
/// service's JSON form, holds none of the flow's secrets. A current-thread runtime, so that the
/// app's tasks log to this thread's subscriber.
#[tokio::test]
async fn a_whole_sign_in_logs_no_secret() {
    let (captured, _guard) = crate::audit::json_logs();
    let social = Social::spawn(Backend::Sqlite, Setup::default()).await;
    let started = social.start().await;
    let provider_code = social
        .provider
        .issue_code(&started.request, Grant::random());
    let query = [
        ("code", provider_code.as_str()),
        ("state", &started.state),
        ("iss", social.provider.issuer()),
    ];
    let code = one_time_code(&social.callback(&query, Some(&started.cookie)).await);
    let tokens = Tokens::from_response(&social.token(&code, &started.verifier).await);
    let refreshed = Tokens::from_response(&social.app.refresh(&tokens.refresh).await);

    let log = captured.text();
    for event in ["external_sign_in_started", "external_sign_in", "login"] {
        assert!(
            log.contains(&format!("\"event\":\"{event}\"")),
            "the capture works: no {event} event in {log}"
        );
    }
    let mut secrets = vec![
        ("client secret", fake_provider::CLIENT_SECRET.to_owned()),
        ("state", started.state.clone()),
        ("nonce", started.request.get("nonce").to_owned()),
        ("browser cookie", started.cookie.clone()),
        ("provider's code", provider_code.clone()),
        ("one-time code", code.clone()),
        ("client's PKCE verifier", started.verifier.clone()),
        ("access token", tokens.access.clone()),
        ("refresh token", tokens.refresh.clone()),
        ("refreshed refresh token", refreshed.refresh.clone()),
    ];
    let exchanged = social.provider.exchanged_secrets();
    assert_eq!(exchanged.len(), 3, "verifier, ID token, access token");
    secrets.extend(
        [
            "auth-api's PKCE verifier",
            "provider's ID token",
            "provider's access token",
        ]
        .into_iter()
        .zip(exchanged),
    );
    for (what, secret) in secrets {
        assert!(secret.len() >= 20, "{what} is a real secret: {secret:?}");
        assert!(!log.contains(&secret), "the {what} is in the log");
    }
}

/// SECURITY.md I 120: what a flow and a code leave in the database is hashes and a sealed
/// verifier: no column holds the state, the cookie, the one-time code or a PKCE verifier.
async fn sign_in_rows_hold_no_usable_secret(backend: Backend) {
    let social = Social::spawn(backend, Setup::default()).await;
    let started = social.start().await;
    let raw = social.app.raw().await;
    let flow_columns = ["state_hash", "pkce_verifier_sealed", "browser_binding_hash"];
    let mut flow = Vec::new();
    for column in flow_columns {
        let values = raw.bytes("sign_in_flows", column).await;
        assert_eq!(values.len(), 1, "one flow");
        flow.push(values.into_iter().next().unwrap());
    }
    assert_eq!(flow[0], Sha256::digest(started.state.as_bytes()).to_vec());
    assert_eq!(flow[2], Sha256::digest(started.cookie.as_bytes()).to_vec());
    assert_eq!(flow[1].len(), 24 + 43 + 16, "nonce, verifier, tag");

    let provider_code = social
        .provider
        .issue_code(&started.request, Grant::random());
    let query = [
        ("code", provider_code.as_str()),
        ("state", &started.state),
        ("iss", social.provider.issuer()),
    ];
    let code = one_time_code(&social.callback(&query, Some(&started.cookie)).await);
    let ours = social.provider.exchanged_secrets()[0].clone();
    assert_eq!(
        ours.len(),
        43,
        "auth-api's verifier, as the provider received it"
    );
    let codes = raw.bytes("sign_in_codes", "code_hash").await;
    assert_eq!(codes, [Sha256::digest(code.as_bytes()).to_vec()]);
    assert!(
        raw.bytes("sign_in_flows", "state_hash").await.is_empty(),
        "the flow was taken"
    );
    for (what, secret) in [
        ("state", started.state.as_bytes()),
        ("cookie", started.cookie.as_bytes()),
        ("auth-api's verifier", ours.as_bytes()),
        ("client's verifier", started.verifier.as_bytes()),
        ("one-time code", code.as_bytes()),
    ] {
        for stored in flow.iter().chain(&codes) {
            assert!(
                !stored
                    .windows(8)
                    .any(|run| secret.windows(8).any(|s| s == run)),
                "a run of the {what} is stored"
            );
        }
    }
    raw.close().await;
}

mod at_rest {
    use super::*;

    crate::store_tests!(backend on [sqlite, postgres, mysql]: (sign_in_rows_hold_no_usable_secret));
}

crate::store_tests!(backend on [sqlite]: (
    the_same_identity_twice_is_the_same_user,
    two_tabs_of_one_browser_sign_in_at_once,
    redirect_to_off_the_allow_list_is_an_error_page,
    authorize_refusals_go_back_to_redirect_to,
    provider_down_at_authorize_is_temporarily_unavailable,
    slow_discovery_is_temporarily_unavailable_at_the_timeout,
    replayed_state_is_invalid_state,
    unknown_state_is_invalid_state_and_spends_nothing,
    callback_in_another_browser_is_browser_mismatch_and_spends_the_flow,
    flow_past_its_ttl_is_invalid_state,
    provider_error_is_provider_error,
    code_refused_by_the_provider_is_provider_error,
    advertised_iss_must_be_the_providers,
    unadvertised_iss_is_optional_but_checked,
    id_token_that_does_not_verify_is_invalid_id_token,
    provider_down_at_callback_is_temporarily_unavailable,
    slow_token_endpoint_is_temporarily_unavailable_at_the_timeout,
    slow_jwks_is_temporarily_unavailable_at_the_timeout,
    new_identity_needs_a_verified_email,
    email_missing_from_the_id_token_comes_from_userinfo,
    email_of_an_existing_account_is_email_in_use_without_linking,
    verified_email_links_to_the_existing_account_when_allowed,
    an_unverified_email_does_not_tell_whether_an_account_has_it,
    a_hosted_domain_admits_only_its_accounts,
    an_identity_of_another_issuer_is_refused,
    an_unusable_email_of_a_known_identity_is_not_stored,
    disabled_user_is_account_disabled,
    token_with_a_wrong_verifier_is_invalid_grant_and_spends_the_code,
    token_code_replay_is_invalid_grant,
    token_needs_the_pkce_grant_type_and_json,
    token_code_older_than_sixty_seconds_is_invalid_grant,
    token_for_a_user_disabled_meanwhile_is_account_disabled,
    provider_failing_or_answering_nonsense_goes_back_to_the_client,
    authorize_and_callback_are_limited_per_address,
    without_providers_the_routes_refuse,
));
