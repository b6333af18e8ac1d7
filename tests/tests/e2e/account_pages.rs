//! The hosted account pages (issue 15) end to end with real parts: a real browser (Debian's
//! Chromium driven by `playwright-core`, `tests/browser/accounts.mjs`) on the pages through the
//! real gateway (Envoy loading the real `.wasm`, `/auth/account/…`), and a real SMTP server
//! (`aiosmtpd`, `tests/smtp/sink.py`) receiving auth-api's mail, whose links the browser follows.
//!
//! One person's whole life with the pages: sign up, verify the email by the mailed link, sign in,
//! enrol TOTP from the page (the test is the authenticator app: it reads the secret off the page
//! and computes RFC 6238 codes), sign out, sign in with the second factor, then forget the
//! password and reset it by the mailed link, which ends every session: the page session and, at
//! the gateway, the access token it held (through the revocation feed). On the way, what must
//! be refused is: a used verification link, a wrong code, a replayed code, a used reset link, the
//! old password.
//!
//! `cargo xtask test` installs what this needs (`npm ci` in `tests/browser`, Debian's
//! `chromium`, aiosmtpd in `.venv`); a missing part fails the test with the command that
//! installs it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use auth_api::{
    config::EmailVerification,
    domain::{TotpSecret, TOTP_DRIFT_STEPS, TOTP_PERIOD_SECS},
};
use data_encoding::BASE32_NOPAD;
use e2e::{
    browser::{Browser, Page},
    Stack, StackOptions,
};
use serde_json::{json, Value};
use test_support::{
    ports::free_port,
    smtp_sink::{body_of, link_token, SmtpSink},
};

/// The session cookie of the pages: the access token.
const SESSION_COOKIE: &str = "__Secure-auth-account";
const PASSWORD: &str = "correct horse battery staple";
const NEW_PASSWORD: &str = "a brand new passphrase for the pages";
/// The person's browser, another browser they sign in from, and the one they reset from.
const BROWSER: &str = "own";
const OTHER_BROWSER: &str = "other";
const RESET_BROWSER: &str = "reset";
/// A mail scanner that opens every link in a mail before the person does.
const SCANNER: &str = "scanner";
/// The outbox hands a message over within its poll (100 ms here) and one SMTP exchange.
const MAIL_WITHIN: Duration = Duration::from_secs(15);
/// The filter polls the revocation feed every second here (`revocation_poll_seconds: 1`); the
/// rest absorbs a busy machine running a browser beside.
const REVOKED_WITHIN: Duration = Duration::from_secs(4);
const STEADY: Duration = Duration::from_millis(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_up_verifies_enrols_totp_and_resets_the_password_in_a_browser() {
    let mut pages = Pages::start().await;
    let email = format!("pages-{}@example.com", uuid::Uuid::new_v4().simple());

    // Sign up: a page that asks to check the mail, served hardened through the gateway.
    let page = pages.goto(BROWSER, "signup").await;
    assert_eq!(page.status, Some(200), "{page:?}");
    assert_hardened(&page);
    let page = pages
        .browser
        .submit(
            BROWSER,
            &[("email", &email), ("password", PASSWORD)],
            "#submit",
        )
        .await;
    assert!(page.has("check-email"), "{page:?}");

    // The verification mail. Opening its link (a mail scanner does) spends nothing; the
    // person's confirmation verifies; the link a second time is refused.
    let verify = pages.link(1, &email, "verify").await;
    let scanned = pages.browser.goto(SCANNER, &verify).await;
    assert_eq!(scanned.status, Some(200), "{scanned:?}");
    let page = pages.browser.goto(BROWSER, &verify).await;
    assert!(page.has("confirm"), "{page:?}");
    let page = pages.browser.submit(BROWSER, &[], "#confirm").await;
    assert!(page.has("email-verified"), "{page:?}");
    let page = pages.browser.submit(SCANNER, &[], "#confirm").await;
    assert_refused(&page, "a used verification link");

    // Sign in: the overview.
    let page = pages.sign_in(BROWSER, &email, PASSWORD).await;
    pages.assert_overview(&page, &email, "verified", "off");

    // Enrol TOTP from the page, as a person with an authenticator app does.
    let page = pages.browser.submit(BROWSER, &[], "#enrol-totp").await;
    assert_eq!(page.url, pages.url("totp"), "{page:?}");
    let page = pages
        .browser
        .submit(BROWSER, &[("password", PASSWORD)], "#submit")
        .await;
    let mut phone = Authenticator::from_page(&page);
    assert!(
        page.id("totp-uri").starts_with("otpauth://totp/"),
        "{page:?}"
    );
    let code = phone.next_code().await;
    let page = pages.submit_code(BROWSER, &code).await;
    let recovery_codes = page
        .id("recovery-codes")
        .lines()
        .filter(|line| !line.trim().is_empty())
        .count();
    assert_eq!(recovery_codes, 10, "{page:?}");
    let page = pages.goto(BROWSER, "").await;
    pages.assert_overview(&page, &email, "verified", "on");

    // Sign out: the cookie goes, and the overview sends to sign in.
    let page = pages.browser.submit(BROWSER, &[], "#sign-out").await;
    assert_eq!(page.url, pages.url("signin"), "{page:?}");
    assert_eq!(pages.browser.cookie(BROWSER, SESSION_COOKIE).await, None);
    let page = pages.goto(BROWSER, "").await;
    assert_eq!(page.url, pages.url("signin"), "{page:?}");

    // Sign in with the second factor: a wrong code is shown as an error, a fresh code signs in.
    pages.sign_in_to_the_code(BROWSER, &email, PASSWORD).await;
    let page = pages.submit_code(BROWSER, &phone.wrong_code()).await;
    assert_refused(&page, "a wrong code");
    pages.sign_in_to_the_code(BROWSER, &email, PASSWORD).await;
    let code = phone.next_code().await;
    let page = pages.submit_code(BROWSER, &code).await;
    pages.assert_overview(&page, &email, "verified", "on");
    // The same code again, from another browser: a replay.
    pages
        .sign_in_to_the_code(OTHER_BROWSER, &email, PASSWORD)
        .await;
    let page = pages.submit_code(OTHER_BROWSER, &code).await;
    assert_refused(&page, "a replayed code");

    // The page session is an access token the gateway takes like any other.
    let token = pages.session_token(BROWSER).await;
    let claims = test_support::jwt_part(&token, 1);
    assert_eq!(claims["amr"], json!(["pwd", "otp"]), "{claims}");
    assert_eq!(claims["acr"], "aal2", "{claims}");
    assert_eq!(claims["email_verified"], true, "{claims}");
    pages.assert_accepted(&token, &email).await;

    // Forgot the password: reset it from another browser by the mailed link, which works once.
    pages.goto(RESET_BROWSER, "forgot").await;
    let page = pages
        .browser
        .submit(RESET_BROWSER, &[("email", &email)], "#submit")
        .await;
    assert!(page.has("check-email"), "{page:?}");
    let reset = pages.link(2, &email, "reset").await;
    let page = pages.browser.goto(RESET_BROWSER, &reset).await;
    assert!(page.has("password"), "{page:?}");
    let page = pages
        .browser
        .submit(RESET_BROWSER, &[("password", NEW_PASSWORD)], "#submit")
        .await;
    assert!(page.has("password-reset"), "{page:?}");
    let mut page = pages.browser.goto(RESET_BROWSER, &reset).await;
    if !page.has("error") {
        // The page may not look at the token before the form is sent.
        page = pages
            .browser
            .submit(
                RESET_BROWSER,
                &[("password", "yet another passphrase for the pages")],
                "#submit",
            )
            .await;
    }
    assert_refused(&page, "a used reset link");
    assert_eq!(
        page.ids.get("password").map(String::as_str).unwrap_or(""),
        "",
        "a refused form is shown again without the password"
    );

    // The reset ended every session: the old access token at the gateway (through the
    // revocation feed), and the page session in the first browser.
    let refused = pages
        .stack
        .gateway
        .answers_by(&token, 401, Instant::now() + REVOKED_WITHIN, STEADY)
        .await;
    let challenge = refused.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("revoked"), "{challenge}");
    let page = pages.goto(BROWSER, "").await;
    assert_eq!(page.url, pages.url("signin"), "{page:?}");

    // The old password is refused; the new one with a code signs in.
    let page = pages.sign_in(BROWSER, &email, PASSWORD).await;
    assert_refused(&page, "the old password");
    pages
        .sign_in_to_the_code(BROWSER, &email, NEW_PASSWORD)
        .await;
    let code = phone.next_code().await;
    let page = pages.submit_code(BROWSER, &code).await;
    pages.assert_overview(&page, &email, "verified", "on");
    let token = pages.session_token(BROWSER).await;
    pages.assert_accepted(&token, &email).await;
    assert_eq!(
        pages.sink.messages().len(),
        2,
        "one verification mail, one reset mail"
    );
}

/// A stack whose auth-api sends mail to a sink, with links to the pages through the gateway, and
/// a browser.
struct Pages {
    stack: Stack,
    sink: SmtpSink,
    browser: Browser,
    /// The gateway's origin.
    gateway: String,
}

impl Pages {
    async fn start() -> Self {
        let sink = SmtpSink::start();
        // auth-api's public URL (in the mail's links) names the gateway: its port is chosen
        // first.
        let gateway_port = free_port();
        let gateway = format!("http://127.0.0.1:{gateway_port}");
        let public_url = format!("{gateway}/auth");
        let smtp_port = sink.port;
        let (stack, browser) = tokio::join!(
            Stack::start_configured(
                StackOptions {
                    gateway_port,
                    ..StackOptions::default()
                },
                move |config| {
                    config.smtp_url = Some(format!("smtp://127.0.0.1:{smtp_port}").into());
                    config.email_from = Some("Accounts <accounts@example.com>".parse().unwrap());
                    config.outbox_poll_interval = Duration::from_millis(100);
                    config.public_url = public_url;
                    config.email_verification = EmailVerification::Optional;
                },
            ),
            Browser::start(),
        );
        assert_eq!(stack.gateway.envoy.gateway, gateway);
        Self {
            stack,
            sink,
            browser,
            gateway,
        }
    }

    /// The gateway URL of the page `path` (`""`: the overview).
    fn url(&self, path: &str) -> String {
        format!("{}/auth/account/{path}", self.gateway)
    }

    /// Opens the page `path` in `context`.
    async fn goto(&mut self, context: &str, path: &str) -> Page {
        let url = self.url(path);
        self.browser.goto(context, &url).await
    }

    /// Opens the sign-in page in `context` and submits `email` and `password`.
    async fn sign_in(&mut self, context: &str, email: &str, password: &str) -> Page {
        let page = self.goto(context, "signin").await;
        assert_eq!(page.status, Some(200), "{page:?}");
        self.browser
            .submit(
                context,
                &[("email", email), ("password", password)],
                "#submit",
            )
            .await
    }

    /// Signs in as an account with a second factor: the password is taken and the code asked
    /// for.
    async fn sign_in_to_the_code(&mut self, context: &str, email: &str, password: &str) {
        let page = self.sign_in(context, email, password).await;
        assert!(page.has("code"), "the second factor is asked for: {page:?}");
    }

    /// Submits `code` on the page open in `context`: the enrolment's or the sign-in's code form.
    async fn submit_code(&mut self, context: &str, code: &str) -> Page {
        self.browser
            .submit(context, &[("code", code)], "#submit")
            .await
    }

    /// The page is the overview of `email`, signed in.
    fn assert_overview(&self, page: &Page, email: &str, email_status: &str, totp_status: &str) {
        assert_eq!(page.url, self.url(""), "{page:?}");
        assert_eq!(page.status, Some(200), "{page:?}");
        assert_eq!(page.id("email"), email, "{page:?}");
        assert_eq!(page.id("email-status"), email_status, "{page:?}");
        assert_eq!(page.id("totp-status"), totp_status, "{page:?}");
    }

    /// The link to the page `path` in the `n`th mail the sink received, which went to `to`:
    /// through the gateway (auth-api's public URL).
    async fn link(&self, n: usize, to: &str, path: &str) -> String {
        let messages = self.sink.wait_for(n, MAIL_WITHIN).await;
        let message = &messages[n - 1];
        assert_eq!(message["rcpt_tos"], json!([to]), "{message:#}");
        let link = format!("{}?token={}", self.url(path), link_token(message, path));
        assert!(
            body_of(message, "text/plain").contains(&link),
            "{link} in {message:#}"
        );
        link
    }

    /// The access token in `context`'s session cookie, whose attributes keep it from scripts,
    /// other sites, plain HTTP and the upstreams.
    async fn session_token(&mut self, context: &str) -> String {
        let cookie: Value = self
            .browser
            .cookie(context, SESSION_COOKIE)
            .await
            .unwrap_or_else(|| panic!("no {SESSION_COOKIE} cookie in {context}"));
        assert_eq!(cookie["httpOnly"], true, "{cookie}");
        assert_eq!(cookie["secure"], true, "{cookie}");
        assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
        // The pages' directory only: a cookie for `/` would hand the token to every upstream
        // behind the gateway.
        assert_eq!(cookie["path"], "/auth/account/", "{cookie}");
        cookie["value"].as_str().unwrap().to_owned()
    }

    /// The gateway lets `token` through to the upstream as `email`'s.
    async fn assert_accepted(&self, token: &str, email: &str) {
        let call = self.stack.gateway.get("/api/anything", Some(token)).await;
        assert_eq!(call.status(), 200);
        let echoed: Value = call.json().await.unwrap();
        assert_eq!(echoed["headers"]["x-user-email"], email, "{echoed}");
    }
}

/// The pages' headers, as they reach the browser through the gateway.
fn assert_hardened(page: &Page) {
    let header = |name: &str| {
        page.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} on {}: {:?}", page.url, page.headers))
    };
    let csp = header("content-security-policy");
    for directive in [
        "default-src 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing: {csp}");
    }
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("referrer-policy"), "no-referrer");
    assert!(header("cache-control").contains("no-store"));
}

/// The page shows an error (`role="alert" id="error"`) with a 4xx status.
fn assert_refused(page: &Page, what: &str) {
    assert!(
        page.status.is_some_and(|s| (400..500).contains(&s)),
        "{what}: {page:?}"
    );
    assert!(!page.id("error").is_empty(), "{what}: {page:?}");
}

/// The test's authenticator app: the secret read off the enrolment page, and codes that are
/// each good once (a code's time step may not be used again, RFC 6238 §5.2).
struct Authenticator {
    secret: TotpSecret,
    last_step: Option<i64>,
}

impl Authenticator {
    /// The secret in the page's `#totp-secret` (base32, spaces aside).
    fn from_page(page: &Page) -> Self {
        let text: String = page
            .id("totp-secret")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_uppercase();
        let bytes = BASE32_NOPAD
            .decode(text.as_bytes())
            .unwrap_or_else(|e| panic!("#totp-secret {text:?} is not base32: {e}"));
        let secret = TotpSecret::from_bytes(&bytes)
            .unwrap_or_else(|| panic!("#totp-secret has {} bytes", bytes.len()));
        Self {
            secret,
            last_step: None,
        }
    }

    /// A code of a step after every one used so far, that auth-api accepts now: the previous
    /// step (unless it is about to leave the window), the current or the next, waiting for the
    /// next step only when all three are used. Three sign-ins in a row need no wait.
    async fn next_code(&mut self) -> String {
        let period = TOTP_PERIOD_SECS as f64;
        loop {
            let now = unix_now();
            let current = (now / period).floor() as i64;
            let into_step = now - current as f64 * period;
            // The previous step leaves the window at the next boundary: not with a page
            // submission (on a busy machine) still on its way.
            let earliest = if into_step < period - 10.0 {
                current - TOTP_DRIFT_STEPS
            } else {
                current
            };
            let step = self
                .last_step
                .map_or(earliest, |last| earliest.max(last + 1));
            if step <= current + TOTP_DRIFT_STEPS {
                self.last_step = Some(step);
                return self
                    .secret
                    .code_at(step * TOTP_PERIOD_SECS)
                    .as_str()
                    .to_owned();
            }
            tokio::time::sleep(Duration::from_secs_f64(period - into_step + 0.2)).await;
        }
    }

    /// Six digits no step near now has.
    fn wrong_code(&self) -> String {
        let current = (unix_now() / TOTP_PERIOD_SECS as f64).floor() as i64;
        let near: Vec<String> = (current - 3..=current + 3)
            .map(|step| {
                self.secret
                    .code_at(step * TOTP_PERIOD_SECS)
                    .as_str()
                    .to_owned()
            })
            .collect();
        (0..)
            .map(|n| format!("{n:06}"))
            .find(|code| !near.contains(code))
            .unwrap()
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}
