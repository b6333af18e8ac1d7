//! Social login (issue 14) end to end with real parts: a real OpenID Provider (`oidc-provider`
//! from npm, `tests/oidc/provider.mjs`) on 127.0.0.2, a real browser (Debian's Chromium driven
//! by `playwright-core`, `tests/oidc/browser.mjs`) that opens our `/auth/authorize` through the
//! gateway on 127.0.0.1, signs in and consents on the provider's own pages and comes back through
//! `/auth/callback` to the client's `redirect_to`; then the client's code exchange, a call through
//! the gateway with the token, refresh, logout and revocation at the edge.
//!
//! The provider and the gateway are on different sites (127.0.0.2 and 127.0.0.1), so the return
//! from the provider is a cross-site navigation: the sign-in cookie, `SameSite=Lax`, must come
//! along on it, as it must with a real provider.
//!
//! The negative scenarios tamper with the browser's navigations where an attacker could: the
//! browser holds the callback back (`stop_at`) so that the test can replay it, change its `state`
//! or open it in another browser; or it answers a navigation with its own redirect (`rewrite`),
//! which sends the authorization request to another provider (a mix-up) or strips the callback's
//! `iss`.
//!
//! The browser is an [`e2e::browser::Driver`]: `tests/oidc/browser.mjs` shares Chromium's launch,
//! the browser contexts, `goto` and the line protocol with the account pages' browser
//! (`tests/browser/chromium.mjs`).
//!
//! `cargo xtask test` installs what this needs (`npm ci` in `tests/oidc` and `tests/browser`,
//! Debian's `chromium`); a missing part fails the test with the command that installs it.

use std::{
    collections::HashMap,
    io::ErrorKind,
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use e2e::{
    browser::{lines_of, Driver, Page},
    envoy::workspace_root,
    Stack, StackOptions,
};
use rand_core::{OsRng, RngCore as _};
use reqwest::Url;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use test_support::ports::{free_port, free_port_on};

/// Our client at the providers.
const CLIENT_ID: &str = "auth-service";
const CLIENT_SECRET: &str = "e2e-oidc-client-secret-0123456789abcdef";
/// Where the providers listen: another site than the gateway's 127.0.0.1.
const OP_HOST: &str = "127.0.0.2";
/// The provider's account the browser signs in as (its login is its `sub`).
const ALICE: &str = "alice";
const ALICE_EMAIL: &str = "alice@op.example";
/// The filter polls the revocation feed every second here (`revocation_poll_seconds: 1`), as in
/// `revocation.rs`; the rest absorbs a busy machine running browsers beside.
const REVOKED_WITHIN: Duration = Duration::from_secs(3);
const STEADY: Duration = Duration::from_millis(600);

/// A sign-in whose provider never answers must end well before this (the contract says ~5 s).
const PROVIDER_DOWN_WITHIN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_through_the_provider_gives_an_ordinary_session_at_the_gateway() {
    let mut social = Social::start(Extras::default()).await;
    let pkce = Pkce::new();
    let page = social.sign_in("first", &pkce, json!({})).await;
    // The whole way: our /authorize, the provider's pages, our /callback, the client's page.
    assert!(page.navigations[0].starts_with(&social.url("/auth/authorize?")));
    assert!(
        page.navigations
            .iter()
            .any(|url| url.starts_with(&social.op.issuer)),
        "never at the provider: {:?}",
        page.navigations
    );
    assert!(
        page.navigations
            .iter()
            .any(|url| url.starts_with(&social.callback_url())),
        "never at the callback: {:?}",
        page.navigations
    );
    assert_eq!(page.status, Some(200), "the client's page: {page:?}");
    // Tokens never travel in a URL: the client's page gets the one-time code and nothing else.
    let mut delivered: Vec<String> = query_of(&page.url).into_keys().collect();
    delivered.sort();
    assert_eq!(delivered, ["code"], "{}", page.url);
    let code = social.code_of(&page);

    let exchanged = social.exchange(&code, &pkce.verifier).await;
    assert_eq!(exchanged.status(), 200);
    assert_eq!(exchanged.headers()["cache-control"], "no-store");
    let tokens: Value = exchanged.json().await.unwrap();
    assert_eq!(tokens["token_type"], "Bearer");
    assert!(tokens["refresh_token"].is_string(), "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    let claims = test_support::jwt_part(access, 1);
    assert_eq!(claims["amr"], json!(["oauth"]), "{claims}");
    let user = social.stack.user(ALICE_EMAIL).await;
    assert_eq!(
        claims["sub"],
        user.id.as_str(),
        "a new user with the provider's email"
    );

    // What is behind the gateway sees an ordinary user.
    let call = social
        .stack
        .gateway
        .get("/api/anything", Some(access))
        .await;
    assert_eq!(call.status(), 200);
    let echoed: Value = call.json().await.unwrap();
    assert_eq!(echoed["headers"]["x-user-email"], ALICE_EMAIL);
    assert_eq!(echoed["headers"]["x-user-id"], claims["sub"]);

    // The code was single use.
    let again = social.exchange(&code, &pkce.verifier).await;
    assert_invalid_grant(again, "a spent code").await;

    // An ordinary session: refresh keeps how the user signed in; logout reaches the edge.
    let refreshed = social.stack.gateway.refresh(&tokens["refresh_token"]).await;
    assert_eq!(refreshed.status(), 200);
    let refreshed: Value = refreshed.json().await.unwrap();
    let new_access = refreshed["access_token"].as_str().unwrap();
    assert_eq!(
        test_support::jwt_part(new_access, 1)["amr"],
        json!(["oauth"])
    );
    assert_eq!(
        social
            .stack
            .gateway
            .status("/api/anything", Some(new_access))
            .await,
        200
    );
    let logout = social
        .stack
        .gateway
        .post_with_token("/auth/logout", new_access)
        .await;
    assert_eq!(logout.status(), 204);
    let refused = social
        .stack
        .gateway
        .answers_by(new_access, 401, Instant::now() + REVOKED_WITHIN, STEADY)
        .await;
    let challenge = refused.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("revoked"), "{challenge}");
    assert_eq!(
        social
            .stack
            .gateway
            .status("/api/anything", Some(access))
            .await,
        401,
        "the session's first access token is revoked too"
    );

    // The same provider account, from another browser, is the same user.
    let pkce = Pkce::new();
    let page = social.sign_in("second", &pkce, json!({})).await;
    let code = social.code_of(&page);
    let exchanged = social.exchange(&code, &pkce.verifier).await;
    assert_eq!(exchanged.status(), 200);
    let tokens: Value = exchanged.json().await.unwrap();
    let again = test_support::jwt_part(tokens["access_token"].as_str().unwrap(), 1);
    assert_eq!(again["sub"], claims["sub"], "the identity maps to its user");
    assert_eq!(
        social
            .stack
            .gateway
            .status("/api/anything", tokens["access_token"].as_str())
            .await,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_exchanged_with_the_wrong_verifier_is_spent() {
    let mut social = Social::start(Extras::default()).await;
    let pkce = Pkce::new();
    let page = social.sign_in("a", &pkce, json!({})).await;
    let code = social.code_of(&page);

    let wrong = Pkce::new();
    let refused = social.exchange(&code, &wrong.verifier).await;
    assert_invalid_grant(refused, "the wrong verifier").await;
    let late = social.exchange(&code, &pkce.verifier).await;
    assert_invalid_grant(late, "the right verifier after a wrong one").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_are_single_use_and_two_tabs_can_sign_in_at_once() {
    let mut social = Social::start(Extras::default()).await;
    let first_pkce = Pkce::new();
    let held = social.hold_callback("a", &first_pkce).await;
    let query = query_of(&held);
    assert_eq!(query["iss"], social.op.issuer, "RFC 9207 iss: {held}");

    // A second sign-in in the same browser while the first is still open (another tab): the
    // browser's sign-in cookie is reused, so both flows finish.
    let second_pkce = Pkce::new();
    let second = social.sign_in("a", &second_pkce, json!({})).await;
    let second_code = social.code_of(&second);
    let first = social.browser.goto("a", &held).await;
    let first_code = social.code_of(&first);
    for (code, pkce) in [(first_code, first_pkce), (second_code, second_pkce)] {
        assert_eq!(social.exchange(&code, &pkce.verifier).await.status(), 200);
    }

    let replayed = social.browser.goto("a", &held).await;
    assert_invalid_state(&social, &replayed, &held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_state_code_or_nonce_is_refused() {
    let mut social = Social::start(Extras::default()).await;
    let pkce = Pkce::new();
    let held = social.hold_callback("a", &pkce).await;

    let tampered = with_param(&held, "state", &tamper(&query_of(&held)["state"]));
    let refused = social.browser.goto("a", &tampered).await;
    assert_invalid_state(&social, &refused, &tampered);
    // An unknown state takes nothing: the genuine callback still signs in.
    let genuine = social.browser.goto("a", &held).await;
    let code = social.code_of(&genuine);
    assert_eq!(social.exchange(&code, &pkce.verifier).await.status(), 200);

    // A changed code: the provider refuses the exchange, and the client hears it.
    let pkce = Pkce::new();
    let held = social.hold_callback("a", &pkce).await;
    let tampered = with_param(&held, "code", &tamper(&query_of(&held)["code"]));
    let page = social.browser.goto("a", &tampered).await;
    social.assert_error(&page, "access_denied", "provider_error");

    // Another nonce in the authorization request: the provider signs an ID token with it, and
    // auth-api refuses that token.
    let pkce = Pkce::new();
    let authorization = format!("{}/auth?", social.op.issuer);
    let page = social
        .sign_in(
            "a",
            &pkce,
            json!({"rewrite": [{"prefix": authorization, "set": {"nonce": "not-the-flows-nonce"}}]}),
        )
        .await;
    social.assert_error(&page, "access_denied", "invalid_id_token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_in_another_browser_is_refused() {
    let mut social = Social::start(Extras::default()).await;
    let pkce = Pkce::new();
    let held = social.hold_callback("attacker", &pkce).await;

    // Login CSRF: the attacker's callback opened in the victim's browser, which is signing in
    // too (its own sign-in cookie, another flow).
    let victim_pkce = Pkce::new();
    social.hold_callback("victim", &victim_pkce).await;
    let page = social.browser.goto("victim", &held).await;
    social.assert_error(&page, "access_denied", "browser_mismatch");

    // A browser without any sign-in cookie.
    let pkce = Pkce::new();
    let held = social.hold_callback("attacker", &pkce).await;
    let page = social.browser.goto("fresh", &held).await;
    social.assert_error(&page, "access_denied", "browser_mismatch");
    // The flow was consumed on first sight: not even its own browser can finish it now.
    let late = social.browser.goto("attacker", &held).await;
    assert_invalid_state(&social, &late, &held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mix_up_with_another_provider_is_refused() {
    let mut social = Social::start(Extras {
        evil: true,
        ..Extras::default()
    })
    .await;
    let local = social.op.issuer.clone();
    let evil = social.evil.as_ref().unwrap().issuer.clone();
    let authorization = format!("{local}/auth?");
    let callback = social.callback_url();

    // The authorization request meant for `local` goes to `evil` (a mix-up attacker's redirect):
    // evil signs the user in and sends its code back with its own iss.
    let pkce = Pkce::new();
    let page = social
        .sign_in(
            "redirected",
            &pkce,
            json!({"rewrite": [{"prefix": authorization, "origin": evil}]}),
        )
        .await;
    assert!(
        page.navigations.iter().any(|url| url.starts_with(&evil)),
        "the browser never reached the other provider: {:?}",
        page.navigations
    );
    social.assert_error(&page, "access_denied", "issuer_mismatch");

    // The same, with the callback's iss forged to local's: local refuses evil's code.
    let pkce = Pkce::new();
    let page = social
        .sign_in(
            "forged-iss",
            &pkce,
            json!({"rewrite": [
                {"prefix": authorization, "origin": evil},
                {"prefix": callback, "set": {"iss": local}},
            ]}),
        )
        .await;
    social.assert_error(&page, "access_denied", "provider_error");

    // local advertises RFC 9207: a callback without iss is refused.
    let pkce = Pkce::new();
    let page = social
        .sign_in(
            "no-iss",
            &pkce,
            json!({"rewrite": [{"prefix": callback, "drop": ["iss"]}]}),
        )
        .await;
    social.assert_error(&page, "access_denied", "issuer_mismatch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_off_the_allow_list_is_refused_with_an_error_page() {
    let mut social = Social::start(Extras::default()).await;
    let pkce = Pkce::new();
    // A server where an open redirect would send the browser: nothing must arrive there.
    let elsewhere = TcpListener::bind("127.0.0.3:0").expect("cannot bind 127.0.0.3");
    elsewhere.set_nonblocking(true).unwrap();
    let foreign = format!(
        "http://127.0.0.3:{}/public/signed-in",
        elsewhere.local_addr().unwrap().port()
    );
    let other_path = social.url("/public/signed-in-elsewhere");
    for redirect_to in [Some(foreign.as_str()), Some(other_path.as_str()), None] {
        let url = social.authorize_url("local", redirect_to, &pkce);
        let page = social.browser.goto("a", &url).await;
        assert_eq!(page.status, Some(400), "{redirect_to:?}: {page:?}");
        assert!(page.text.contains("invalid_redirect"), "{page:?}");
        assert_eq!(
            page.url, url,
            "{redirect_to:?}: the browser stayed on the error page"
        );
        assert_eq!(
            page.navigations,
            [url.as_str()],
            "{redirect_to:?}: no redirect"
        );

        let answer = social
            .stack
            .gateway
            .client
            .get(&url)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400);
        assert!(answer.headers().get("location").is_none());
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"], "invalid_redirect", "{redirect_to:?}: {body}");
    }
    match elsewhere.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("something connected to the foreign redirect_to: {other:?}"),
    }

    // With an allowed redirect_to, every other problem goes back to the client.
    let url = social.authorize_url("nobody", Some(&social.redirect_to), &pkce);
    let page = social.browser.goto("a", &url).await;
    social.assert_error(&page, "invalid_request", "unknown_provider");
    let plain = social
        .authorize_url("local", Some(&social.redirect_to), &pkce)
        .replace("code_challenge_method=S256", "code_challenge_method=plain");
    let page = social.browser.goto("a", &plain).await;
    social.assert_error(&page, "invalid_request", "invalid_code_challenge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_is_down_or_silent_ends_on_the_client_page_quickly() {
    let mut social = Social::start(Extras {
        down: true,
        silent: true,
        ..Extras::default()
    })
    .await;
    for provider in ["down", "silent"] {
        let pkce = Pkce::new();
        let url = social.authorize_url(provider, Some(&social.redirect_to), &pkce);
        let started = Instant::now();
        let page = social.browser.goto(provider, &url).await;
        let took = started.elapsed();
        social.assert_error(&page, "temporarily_unavailable", "provider_unavailable");
        assert!(
            took < PROVIDER_DOWN_WITHIN,
            "{provider}: the client waited {took:?}"
        );
    }

    // The provider goes down between the sign-in and the callback: the code exchange cannot
    // happen, and the client hears so.
    let pkce = Pkce::new();
    let held = social.hold_callback("local", &pkce).await;
    social.op.stop();
    let started = Instant::now();
    let page = social.browser.goto("local", &held).await;
    social.assert_error(&page, "temporarily_unavailable", "provider_unavailable");
    assert!(started.elapsed() < PROVIDER_DOWN_WITHIN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_denied_at_the_provider_ends_on_the_client_page() {
    let mut social = Social::start(Extras::default()).await;
    let pkce = Pkce::new();
    let page = social.sign_in("a", &pkce, json!({"consent": "deny"})).await;
    social.assert_error(&page, "access_denied", "provider_error");
    let query = query_of(&page.url);
    assert!(
        query["error_description"].contains("access_denied"),
        "the provider's error code: {query:?}"
    );
}

/// Which providers besides `local` the providers file names.
#[derive(Debug, Default, Clone, Copy)]
struct Extras {
    /// `evil`: a second real provider with another issuer, where our client is registered too.
    evil: bool,
    /// `down`: an issuer on a closed port.
    down: bool,
    /// `silent`: an issuer whose port takes connections and never answers.
    silent: bool,
}

/// The stack (gateway on a port fixed in advance, auth-api with a providers file), the provider,
/// and a browser.
struct Social {
    stack: Stack,
    op: Provider,
    evil: Option<Provider>,
    /// `tests/oidc/browser.mjs`.
    browser: Driver,
    /// The client's page: the allow-listed `redirect_to`, served by the echo upstream.
    redirect_to: String,
    gateway: String,
    _silent: Option<TcpListener>,
    _providers_file: tempfile::NamedTempFile,
}

impl Social {
    async fn start(extras: Extras) -> Self {
        // auth-api reads callback_url when it is built, before Envoy starts: the gateway's port
        // has to be known first.
        let gateway_port = free_port();
        let gateway = format!("http://127.0.0.1:{gateway_port}");
        let callback = format!("{gateway}/auth/callback");
        let redirect_to = format!("{gateway}/public/signed-in");
        let oidc = oidc_dir();
        let (op, evil, browser) = tokio::join!(
            Provider::start(&callback),
            async {
                if extras.evil {
                    Some(Provider::start(&callback).await)
                } else {
                    None
                }
            },
            Driver::start(&oidc, "browser.mjs"),
        );

        let entry = |name: &str, issuer: &str| {
            json!({"name": name, "kind": "oidc", "issuer": issuer, "client_id": CLIENT_ID,
                   "client_secret": CLIENT_SECRET})
        };
        let mut providers = vec![entry("local", &op.issuer)];
        if let Some(evil) = &evil {
            providers.push(entry("evil", &evil.issuer));
        }
        if extras.down {
            let closed = free_port_on(OP_HOST.parse().expect("OP_HOST is an address"));
            providers.push(entry("down", &format!("http://{OP_HOST}:{closed}")));
        }
        let silent = extras.silent.then(|| {
            // Connections wait in the backlog, accepted by the kernel, never answered.
            TcpListener::bind((OP_HOST, 0)).expect("cannot bind the silent provider")
        });
        if let Some(silent) = &silent {
            let port = silent.local_addr().unwrap().port();
            providers.push(entry("silent", &format!("http://{OP_HOST}:{port}")));
        }
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            file.path(),
            json!({
                "providers": providers,
                "redirect_allow_list": [redirect_to],
                "callback_url": callback,
            })
            .to_string(),
        )
        .unwrap();

        let path = file.path().to_owned();
        let stack = Stack::start_configured(
            StackOptions {
                gateway_port,
                ..StackOptions::default()
            },
            move |config| config.oidc_providers_file = Some(path),
        )
        .await;
        assert_eq!(stack.gateway.envoy.gateway, gateway);
        Self {
            stack,
            op,
            evil,
            browser,
            redirect_to,
            gateway,
            _silent: silent,
            _providers_file: file,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway)
    }

    fn callback_url(&self) -> String {
        self.url("/auth/callback")
    }

    /// `/auth/authorize` through the gateway, as a client page would link to it.
    fn authorize_url(&self, provider: &str, redirect_to: Option<&str>, pkce: &Pkce) -> String {
        let mut url = Url::parse(&self.url("/auth/authorize")).unwrap();
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("provider", provider);
            if let Some(redirect_to) = redirect_to {
                query.append_pair("redirect_to", redirect_to);
            }
            query
                .append_pair("code_challenge", &pkce.challenge)
                .append_pair("code_challenge_method", "S256");
        }
        url.to_string()
    }

    /// Signs in at `local` as [`ALICE`] in the browser context `context` until the browser is
    /// back on `redirect_to`; `extra` adds to the browser's command (`stop_at`, `rewrite`,
    /// `consent`).
    async fn sign_in(&mut self, context: &str, pkce: &Pkce, extra: Value) -> Page {
        let command = self.sign_in_command(context, pkce, extra);
        self.browser.page(command).await
    }

    /// The browser's command for [`Self::sign_in`].
    fn sign_in_command(&self, context: &str, pkce: &Pkce, extra: Value) -> Value {
        let mut command = json!({
            "op": "sign_in",
            "context": context,
            "start": self.authorize_url("local", Some(&self.redirect_to), pkce),
            "until": self.redirect_to,
            "login": ALICE,
            "password": "whatever the provider asks",
        });
        command
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        command
    }

    /// Signs in, but holds the provider's redirect to our callback back; returns its URL. The
    /// browser context keeps its sign-in cookie.
    async fn hold_callback(&mut self, context: &str, pkce: &Pkce) -> String {
        let callback = self.callback_url();
        let command = self.sign_in_command(context, pkce, json!({ "stop_at": callback }));
        let answer = self.browser.send(command).await;
        match answer["stopped_at"].as_str() {
            Some(held) => held.to_owned(),
            None => panic!(
                "the browser never reached the callback: {:?}",
                Page::of_answer(&answer)
            ),
        }
    }

    /// The one-time code on the client's page `page`.
    fn code_of(&self, page: &Page) -> String {
        assert!(
            page.url.starts_with(&format!("{}?", self.redirect_to)),
            "not back on redirect_to: {page:?}"
        );
        let query = query_of(&page.url);
        assert!(!query.contains_key("error"), "{query:?}");
        let code = query
            .get("code")
            .unwrap_or_else(|| panic!("no code: {page:?}"));
        assert_eq!(code.len(), 43, "{code}");
        code.clone()
    }

    /// The page is the client's `redirect_to` with `error` and `error_code`, and no code.
    fn assert_error(&self, page: &Page, error: &str, error_code: &str) {
        assert!(
            page.url.starts_with(&format!("{}?", self.redirect_to)),
            "not back on redirect_to: {page:?}"
        );
        let query = query_of(&page.url);
        assert_eq!(
            (
                query.get("error").map(String::as_str),
                query.get("error_code").map(String::as_str)
            ),
            (Some(error), Some(error_code)),
            "{query:?}"
        );
        assert!(!query.contains_key("code"), "{query:?}");
    }

    /// `POST /auth/token?grant_type=pkce` through the gateway.
    async fn exchange(&self, code: &str, verifier: &str) -> reqwest::Response {
        self.stack
            .gateway
            .post(
                "/auth/token?grant_type=pkce",
                &json!({"auth_code": code, "code_verifier": verifier}),
            )
            .await
    }
}

/// The 400 page of an unknown, used or tampered state: the browser stays on the callback.
fn assert_invalid_state(social: &Social, page: &Page, callback: &str) {
    assert_eq!(page.status, Some(400), "{page:?}");
    assert_eq!(page.url, callback, "no redirect");
    assert!(page.url.starts_with(&social.callback_url()));
    assert!(page.text.contains("invalid_state"), "{page:?}");
}

async fn assert_invalid_grant(answer: reqwest::Response, what: &str) {
    assert_eq!(answer.status(), 401, "{what}");
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant", "{what}: {body}");
}

/// The client's PKCE pair (RFC 7636 S256), its own, not auth-api's.
struct Pkce {
    verifier: String,
    challenge: String,
}

impl Pkce {
    fn new() -> Self {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        let verifier = URL_SAFE_NO_PAD.encode(bytes);
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Self {
            verifier,
            challenge,
        }
    }
}

fn query_of(url: &str) -> HashMap<String, String> {
    Url::parse(url)
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .query_pairs()
        .into_owned()
        .collect()
}

/// `url` with the query parameter `name` set to `value`.
fn with_param(url: &str, name: &str, value: &str) -> String {
    let mut parsed = Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .into_owned()
        .map(|(k, v)| {
            if k == name {
                (k, value.to_owned())
            } else {
                (k, v)
            }
        })
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    parsed.to_string()
}

/// `value` with its first character changed (still base64url).
fn tamper(value: &str) -> String {
    let first = if value.starts_with('A') { 'B' } else { 'A' };
    format!("{first}{}", &value[1..])
}

/// `tests/oidc`, with its npm packages installed.
///
/// # Panics
/// When they are not, saying how to install them.
fn oidc_dir() -> PathBuf {
    let dir = workspace_root().join("tests/oidc");
    assert!(
        dir.join("node_modules/oidc-provider").exists(),
        "oidc-provider is not installed: run `npm ci` in {} (cargo xtask test does it)",
        dir.display()
    );
    dir
}

/// `node <script>` in `tests/oidc`, talking over pipes; its stderr goes to the test's.
fn node(script: &str) -> Command {
    let mut command = Command::new("node");
    command
        .current_dir(oidc_dir())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
}

/// A running `tests/oidc/provider.mjs`; killed when dropped.
struct Provider {
    issuer: String,
    child: Child,
}

impl Provider {
    /// A provider on [`OP_HOST`] where our client is registered with `redirect_uri`, and
    /// [`ALICE`] has a verified email.
    async fn start(redirect_uri: &str) -> Self {
        let config = json!({
            "host": OP_HOST,
            "port": 0,
            "clients": [{
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uris": [redirect_uri],
            }],
            "accounts": [{"sub": ALICE, "email": ALICE_EMAIL, "email_verified": true}],
        });
        // In the environment, not the command line: no client secret in `ps`.
        let mut child = node("provider.mjs")
            .env("OIDC_PROVIDER_CONFIG", config.to_string())
            .spawn()
            .expect("cannot run node (Node.js is needed for the OpenID Provider)");
        let mut lines = lines_of(&mut child);
        let line = tokio::time::timeout(Duration::from_secs(30), lines.recv()).await;
        let issuer = match line {
            Ok(Some(line)) => line
                .strip_prefix("listening ")
                .unwrap_or_else(|| panic!("the provider printed {line:?}"))
                .to_owned(),
            other => panic!("the provider did not start ({other:?}); its stderr is above"),
        };
        Self { issuer, child }
    }

    /// Kills the provider: its port closes.
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop();
    }
}
