//! The hosted pages (issue 15) over HTTP, as a browser without script uses them: headers and
//! markup of every page, the CSRF double submit, the session cookie, a sign-in with the second
//! factor to the overview, sign out, and the error pages. (The real browser is
//! `tests/browser`.)

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use auth_api::{
    config::EmailVerification,
    domain::{TotpSecret, RECOVERY_CODE_COUNT},
    mail::Sender,
};
use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{header, Request, StatusCode},
};
use data_encoding::BASE32_NOPAD;
use test_support::smtp_sink::body_of;
use tokio::sync::watch;
use url::form_urlencoded;

use crate::{
    helpers::{Backend, TestApp, TestResponse, TestUser},
    smtp_sink::SmtpSink,
};

/// One TOTP period.
const STEP: Duration = Duration::from_secs(30);

/// The policy every page answers with.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A browser's cookie jar over the test app, sending what a browser sends with a form of
/// the same origin (`Sec-Fetch-Site: same-origin`, `Origin: null` as under `no-referrer`).
struct Browser<'a> {
    app: &'a TestApp,
    cookies: BTreeMap<String, String>,
    /// The client address the listener sees, if any.
    peer: Option<SocketAddr>,
}

impl<'a> Browser<'a> {
    fn new(app: &'a TestApp) -> Self {
        Self {
            app,
            cookies: BTreeMap::new(),
            peer: None,
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Keeps the cookies a response sets (and drops those it expires).
    fn store(&mut self, response: &TestResponse) {
        for set in response.headers.get_all(header::SET_COOKIE) {
            let set = set.to_str().unwrap();
            let (pair, attributes) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    async fn get(&mut self, path: &str) -> TestResponse {
        let mut request = Request::get(path).header("sec-fetch-site", "none");
        if !self.cookies.is_empty() {
            request = request.header(header::COOKIE, self.cookie_header());
        }
        let response = self.send(request.body(Body::empty()).unwrap()).await;
        self.store(&response);
        response
    }

    /// Posts `fields` plus the CSRF token of the jar.
    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> TestResponse {
        let csrf = self.cookies.get(auth_api::pages::CSRF_COOKIE).cloned();
        let mut all: Vec<(&str, &str)> = fields.to_vec();
        if let Some(csrf) = &csrf {
            all.push(("csrf", csrf));
        }
        self.post_raw(path, &encode(&all), &[("sec-fetch-site", "same-origin")])
            .await
    }

    /// Posts an email and a password, as the sign-up and sign-in forms do.
    async fn post_credentials(&mut self, path: &str, email: &str, password: &str) -> TestResponse {
        self.post(path, &[("email", email), ("password", password)])
            .await
    }

    /// Posts `body` as a form with the jar's cookies and `extra` headers, as given.
    async fn post_raw(&mut self, path: &str, body: &str, extra: &[(&str, &str)]) -> TestResponse {
        let mut request =
            Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if !extra.iter().any(|(name, _)| *name == "origin") {
            request = request.header(header::ORIGIN, "null");
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        if !self.cookies.is_empty() {
            request = request.header(header::COOKIE, self.cookie_header());
        }
        let response = self
            .send(request.body(Body::from(body.to_owned())).unwrap())
            .await;
        self.store(&response);
        response
    }

    async fn send(&self, mut request: Request<Body>) -> TestResponse {
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        self.app.request(request).await
    }

    fn session(&self) -> Option<&String> {
        self.cookies.get(auth_api::pages::SESSION_COOKIE)
    }
}

fn encode(fields: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

/// The HTML of a page.
fn text(response: &TestResponse) -> &str {
    response
        .body
        .as_str()
        .unwrap_or_else(|| panic!("not a page: {}", response.body))
}

/// The value of the hidden input `name` of a page.
fn hidden(response: &TestResponse, name: &str) -> String {
    let page = text(response);
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no field {name} in {page}"))
        + marker.len();
    page[start..][..page[start..].find('"').unwrap()].to_owned()
}

/// The text inside the element `id` (no nested markup).
fn element(response: &TestResponse, id: &str) -> String {
    let page = text(response);
    let marker = format!("id=\"{id}\"");
    let at = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no #{id} in {page}"));
    let start = at + page[at..].find('>').unwrap() + 1;
    page[start..][..page[start..].find('<').unwrap()].to_owned()
}

fn assert_page_headers(response: &TestResponse, what: &str) {
    assert_eq!(
        response.header("content-security-policy"),
        Some(CSP),
        "{what}"
    );
    assert_eq!(
        response.header("referrer-policy"),
        Some("no-referrer"),
        "{what}"
    );
    assert_eq!(response.header("x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(
        response.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(response.header("cache-control"), Some("no-store"), "{what}");
}

/// No script, and every `src`, `href` and `action` relative to the page (no scheme, no
/// `//host`, no absolute path that a gateway's prefix would break).
fn assert_self_contained(response: &TestResponse, what: &str) {
    let page = text(response);
    assert!(!page.contains("<script"), "{what}: {page}");
    assert!(
        page.starts_with("<!DOCTYPE html><html lang=\"en\">"),
        "{what}: {page}"
    );
    for attribute in ["src=\"", "href=\"", "action=\""] {
        for (at, _) in page.match_indices(attribute) {
            let value = &page[at + attribute.len()..];
            let value = &value[..value.find('"').unwrap()];
            let relative = !value.contains(':') && !value.starts_with('/') || value == "data:,";
            assert!(relative, "{what}: {attribute}{value}\" is not relative");
        }
    }
}

/// An error page: its status, the alert, and the form kept when there is one.
fn assert_alert(response: &TestResponse, status: StatusCode, what: &str) {
    assert_eq!(response.status, status, "{what}: {}", response.body);
    assert!(
        text(response).contains("<p role=\"alert\" id=\"error\">"),
        "{what}: {}",
        response.body
    );
    assert_page_headers(response, what);
}

/// A form was taken: 303 See Other (the body, if not).
fn assert_redirected(response: &TestResponse) {
    assert_eq!(response.status, StatusCode::SEE_OTHER, "{}", response.body);
}

/// A refused form keeps the email typed, as the `escaped` value of its field, and never shows
/// the `password`.
fn assert_email_kept_escaped(response: &TestResponse, escaped: &str, password: &str) {
    let value = format!("value=\"{escaped}\"");
    assert!(text(response).contains(&value), "{}", response.body);
    assert!(!text(response).contains(password));
}

/// The code an authenticator app shows now.
fn code_now(app: &TestApp, secret: &TotpSecret) -> String {
    secret.code_at(app.clock.now()).as_str().to_owned()
}

/// Every page a signed-out visitor can open: 200, the headers, a form that posts to a
/// relative action with a CSRF field (and the cookie set), and nothing from elsewhere.
async fn every_page_is_self_contained_with_strict_headers(app: TestApp) {
    for path in [
        "/account/signin",
        "/account/signup",
        "/account/forgot",
        "/account/resend",
        "/account/verify?token=abc",
        "/account/reset?token=abc",
    ] {
        let mut browser = Browser::new(&app);
        let page = browser.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        assert_page_headers(&page, path);
        assert_self_contained(&page, path);
        assert_eq!(
            page.header("content-type"),
            Some("text/html; charset=utf-8"),
            "{path}"
        );
        let csrf = hidden(&page, "csrf");
        assert_eq!(csrf.len(), 43, "{path}");
        let set = page.header("set-cookie").unwrap();
        assert_eq!(
            set,
            format!("__Host-auth-csrf={csrf}; Path=/; Secure; HttpOnly; SameSite=Strict"),
            "{path}"
        );
        // The token stays the browser's: another page embeds the same one.
        let again = browser.get(path).await;
        assert_eq!(hidden(&again, "csrf"), csrf, "{path}");
        assert!(again.header("set-cookie").is_none(), "{path}");
    }
    let style = app.get("/account/style.css", None).await;
    assert_eq!(style.status, StatusCode::OK);
    assert_eq!(
        style.header("content-type"),
        Some("text/css; charset=utf-8")
    );
    assert!(
        !text(&style).contains("url("),
        "no asset from the stylesheet"
    );
    let bare = app.get("/account", None).await;
    assert_eq!(bare.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(bare.header("location"), Some("account/"));
    let overview = app.get("/account/", None).await;
    assert_eq!(overview.status, StatusCode::SEE_OTHER);
    assert_eq!(overview.header("location"), Some("signin"));
    assert_page_headers(&overview, "the redirect");
}

/// A form is refused (403, no session) without the cookie's token, with another token, from
/// another site, or with a body that is not a form (4xx, never 5xx).
async fn forms_without_the_csrf_token_or_from_elsewhere_are_refused(app: TestApp) {
    // Arrange
    let user = TestUser::random();
    user.register(&app).await;
    let mut browser = Browser::new(&app);
    let form = browser.get("/account/signin").await;
    let csrf = hidden(&form, "csrf");
    let credentials = [("email", user.email.as_str()), ("password", &user.password)];
    let same_origin = [("sec-fetch-site", "same-origin")];

    // Act and assert
    let mut fields = credentials.to_vec();
    let no_token = browser
        .post_raw("/account/signin", &encode(&fields), &same_origin)
        .await;
    assert_alert(&no_token, StatusCode::FORBIDDEN, "no csrf field");
    fields.push(("csrf", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
    let wrong = browser
        .post_raw("/account/signin", &encode(&fields), &same_origin)
        .await;
    assert_alert(&wrong, StatusCode::FORBIDDEN, "another token");
    let mut right = credentials.to_vec();
    right.push(("csrf", &csrf));
    let mut stranger = Browser::new(&app);
    let no_cookie = stranger
        .post_raw("/account/signin", &encode(&right), &same_origin)
        .await;
    assert_alert(&no_cookie, StatusCode::FORBIDDEN, "no cookie");
    for (name, value) in [
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
        ("origin", "https://evil.example"),
    ] {
        let forged = browser
            .post_raw("/account/signin", &encode(&right), &[(name, value)])
            .await;
        assert_alert(&forged, StatusCode::FORBIDDEN, value);
    }
    for (content_type, body, status) in [
        ("application/json", "{}", StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (
            "application/x-www-form-urlencoded",
            "csrf=a&csrf=b",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let request = Request::post("/account/signin")
            .header(header::CONTENT_TYPE, content_type)
            .header(header::COOKIE, browser.cookie_header())
            .body(Body::from(body))
            .unwrap();
        let refused = app.request(request).await;
        assert_alert(&refused, status, content_type);
    }
    assert!(browser.session().is_none(), "no refusal signed anybody in");

    // The same form with the token (and Origin: null, as browsers send under no-referrer).
    let signed_in = browser.post("/account/signin", &credentials).await;
    assert_redirected(&signed_in);
    assert!(browser.session().is_some());
}

/// A sign-in sets the session cookie and sees the overview; TOTP is enrolled through the
/// pages; the next sign-in asks for a code (a wrong one is 401 with the form kept) and then
/// reaches the overview; sign out ends the session and clears the cookie.
async fn a_sign_in_with_totp_reaches_the_overview_and_sign_out_ends_it(app: TestApp) {
    // Arrange
    let user = TestUser::random();
    user.register(&app).await;
    let mut browser = Browser::new(&app);
    browser.get("/account/signin").await;

    // Act: sign in with the password
    let signed_in = browser
        .post_credentials("/account/signin", &user.email, &user.password)
        .await;

    // Assert: the cookie and the overview
    assert_redirected(&signed_in);
    assert_eq!(signed_in.header("location"), Some("./"));
    assert_page_headers(&signed_in, "sign-in redirect");
    let set = signed_in.header("set-cookie").unwrap();
    let token = browser.session().unwrap().clone();
    assert_eq!(
        set,
        format!(
            "__Secure-auth-account={token}; Path=/account/; Max-Age=900; Secure; HttpOnly; SameSite=Strict"
        )
    );
    assert_eq!(app.validate(&token).await.status, StatusCode::OK);
    let overview = browser.get("/account/").await;
    assert_eq!(overview.status, StatusCode::OK, "{}", overview.body);
    assert_self_contained(&overview, "overview");
    assert_eq!(element(&overview, "email"), user.email);
    assert_eq!(element(&overview, "email-status"), "not verified");
    assert_eq!(element(&overview, "totp-status"), "off");

    // Act: enrol TOTP (a wrong password first)
    let form = browser.get("/account/totp").await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    let wrong = browser
        .post("/account/totp", &[("password", "not the password")])
        .await;
    assert_alert(&wrong, StatusCode::FORBIDDEN, "wrong password at enrolment");
    assert!(!text(&wrong).contains("not the password"));
    let started = browser
        .post("/account/totp", &[("password", &user.password)])
        .await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    assert_self_contained(&started, "enrolment");
    assert!(text(&started).contains("<svg"));
    let key = element(&started, "totp-secret");
    assert!(element(&started, "totp-uri").starts_with("otpauth://totp/"));
    let secret = TotpSecret::from_bytes(&BASE32_NOPAD.decode(key.as_bytes()).unwrap()).unwrap();
    let confirmed = browser
        .post(
            "/account/totp-confirm",
            &[("code", &code_now(&app, &secret))],
        )
        .await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.body);
    let codes = text(&confirmed)
        .split("<ol id=\"recovery-codes\"")
        .nth(1)
        .unwrap()
        .split("</ol>")
        .next()
        .unwrap()
        .matches("<li>")
        .count();
    assert_eq!(codes, RECOVERY_CODE_COUNT);
    assert_eq!(
        element(&browser.get("/account/").await, "totp-status"),
        "on"
    );

    // Act: sign out
    let signed_out = browser.post("/account/signout", &[]).await;

    // Assert: the session ended, the cookie gone, the overview sends to sign in
    assert_eq!(signed_out.status, StatusCode::SEE_OTHER);
    assert_eq!(signed_out.header("location"), Some("signin"));
    assert!(browser.session().is_none());
    assert_eq!(app.validate(&token).await.status, StatusCode::UNAUTHORIZED);
    let mut replay = Browser::new(&app);
    replay
        .cookies
        .insert(auth_api::pages::SESSION_COOKIE.to_owned(), token.clone());
    let refused = replay.get("/account/").await;
    assert_eq!(refused.status, StatusCode::SEE_OTHER);
    assert_eq!(refused.header("location"), Some("signin"));
    assert!(refused
        .header("set-cookie")
        .unwrap()
        .starts_with("__Secure-auth-account=; Path=/account/; Max-Age=0"));

    // Act: sign in again, a step later: the second factor
    app.advance(STEP);
    let challenge = browser
        .post_credentials("/account/signin", &user.email, &user.password)
        .await;
    assert_eq!(challenge.status, StatusCode::OK, "{}", challenge.body);
    assert!(browser.session().is_none(), "no session before the code");
    assert_self_contained(&challenge, "mfa form");
    let mfa_token = hidden(&challenge, "mfa_token");
    let right: u32 = code_now(&app, &secret).parse().unwrap();
    let wrong_code = format!("{:06}", (right + 1) % 1_000_000);
    let wrong = browser
        .post(
            "/account/mfa",
            &[("mfa_token", &mfa_token), ("code", &wrong_code)],
        )
        .await;
    assert_alert(&wrong, StatusCode::UNAUTHORIZED, "wrong code");
    assert_eq!(hidden(&wrong, "mfa_token"), mfa_token, "the form is kept");
    let completed = browser
        .post(
            "/account/mfa",
            &[
                ("mfa_token", &mfa_token),
                ("code", &code_now(&app, &secret)),
            ],
        )
        .await;

    // Assert
    assert_redirected(&completed);
    assert_eq!(completed.header("location"), Some("./"));
    let overview = browser.get("/account/").await;
    assert_eq!(overview.status, StatusCode::OK);
    assert_eq!(element(&overview, "totp-status"), "on");
    let claims = crate::helpers::claims_of(browser.session().unwrap());
    assert_eq!(claims["amr"], serde_json::json!(["pwd", "otp"]));
}

/// Errors are 4xx pages with an alert, the JSON route's status; what was typed is escaped,
/// and a password is never shown again.
async fn error_pages_are_4xx_with_an_alert_escaped_and_without_the_password(app: TestApp) {
    let mut browser = Browser::new(&app);
    browser.get("/account/signup").await;
    let password = "a secret never echoed 12345";

    let script = "<script>alert(1)</script>";
    let signup = browser
        .post_credentials("/account/signup", script, password)
        .await;
    assert_alert(&signup, StatusCode::UNPROCESSABLE_ENTITY, "malformed email");
    assert!(!text(&signup).contains("<script>"), "{}", signup.body);
    assert_email_kept_escaped(&signup, "&lt;script&gt;alert(1)&lt;/script&gt;", password);

    let weak = browser
        .post_credentials("/account/signup", "weak@example.com", "short")
        .await;
    assert_alert(&weak, StatusCode::UNPROCESSABLE_ENTITY, "weak password");
    assert!(
        text(&weak).contains("value=\"weak@example.com\""),
        "the email is kept"
    );

    let quoted = "\"><b>x</b>@example.com";
    let login = browser
        .post_credentials("/account/signin", quoted, password)
        .await;
    assert_alert(&login, StatusCode::UNAUTHORIZED, "wrong credentials");
    assert_email_kept_escaped(
        &login,
        "&quot;&gt;&lt;b&gt;x&lt;/b&gt;@example.com",
        password,
    );

    let bad_challenge = browser
        .post(
            "/account/mfa",
            &[("mfa_token", "made-up"), ("code", "123456")],
        )
        .await;
    assert_alert(
        &bad_challenge,
        StatusCode::UNAUTHORIZED,
        "unknown challenge",
    );

    let created = browser
        .post_credentials("/account/signup", "new@example.com", password)
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert!(text(&created).contains("id=\"account-created\""));
    let taken = browser
        .post_credentials("/account/signup", "new@example.com", password)
        .await;
    assert_alert(&taken, StatusCode::CONFLICT, "taken, with verification off");

    let garbage = browser.post_raw("/account/totp", "x", &[]).await;
    assert!(garbage.status.is_client_error() || garbage.status == StatusCode::SEE_OTHER);
    let mut forged = Browser::new(&app);
    forged.cookies.insert(
        auth_api::pages::SESSION_COOKIE.to_owned(),
        "not.a.token".to_owned(),
    );
    let page = forged.get("/account/totp").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.header("location"), Some("signin"));
}

crate::on_every_store!(
    every_page_is_self_contained_with_strict_headers,
    forms_without_the_csrf_token_or_from_elsewhere_are_refused,
    a_sign_in_with_totp_reaches_the_overview_and_sign_out_ends_it,
    error_pages_are_4xx_with_an_alert_escaped_and_without_the_password,
);

/// The POSTs that check a password or a code or send mail draw on the per-address bucket of
/// the JSON routes (E 49); the pages themselves and sign out do not.
async fn the_credential_posts_are_in_the_per_address_bucket(backend: Backend) {
    // Arrange
    let app = TestApp::spawn_with(backend, |c| c.ip_limit_per_minute = 2).await;
    let mut browser = Browser::new(&app);
    browser.peer = Some(SocketAddr::from(([198, 51, 100, 7], 50000)));
    browser.get("/account/signin").await;
    let guess = [
        ("email", "someone@example.com"),
        ("password", "a guess of some length"),
    ];

    // Act
    let mut within = Vec::new();
    for _ in 0..2 {
        within.push(browser.post("/account/signin", &guess).await);
    }
    let mut over = Vec::new();
    for (path, fields) in [
        ("/account/signin", &guess[..]),
        (
            "/account/mfa",
            &[("mfa_token", "x"), ("code", "123456")][..],
        ),
        ("/account/signup", &guess[..]),
        ("/account/forgot", &guess[..1]),
        ("/account/resend", &guess[..1]),
        ("/account/verify", &[("token", "x")][..]),
        ("/account/reset", &[("token", "x"), ("password", "p")][..]),
        ("/account/totp", &[("password", "p")][..]),
        ("/account/totp-confirm", &[("code", "123456")][..]),
    ] {
        over.push((path, browser.post(path, fields).await));
    }
    let page = browser.get("/account/signin").await;
    let sign_out = browser.post("/account/signout", &[]).await;

    // Assert
    for response in within {
        assert_alert(&response, StatusCode::UNAUTHORIZED, "within the bucket");
    }
    for (path, response) in over {
        assert_eq!(response.status, StatusCode::TOO_MANY_REQUESTS, "{path}");
        assert!(response.header("retry-after").is_some(), "{path}");
        assert_page_headers(&response, path);
    }
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(sign_out.status, StatusCode::SEE_OTHER);
}

/// How long a test waits for a mail.
const PATIENCE: Duration = Duration::from_secs(15);

/// An app with verification required, its mail going to `sink` and its outbox sender running
/// (until the returned sender drops).
async fn app_mailing_to(backend: Backend, sink: &SmtpSink) -> (TestApp, watch::Sender<bool>) {
    let port = sink.port;
    let app = TestApp::spawn_with(backend, |config| {
        config.smtp_url = Some(format!("smtp://127.0.0.1:{port}").into());
        config.email_from = Some("Accounts <accounts@example.com>".parse().unwrap());
        config.outbox_poll_interval = Duration::from_millis(100);
        config.email_verification = EmailVerification::Required;
        config.public_url = "https://example.com/auth".to_owned();
    })
    .await;
    let (stop, stopped) = watch::channel(false);
    Sender::spawn(
        app.state.clone(),
        app.state.mailer.clone().expect("mail is configured"),
        stopped,
    );
    (app, stop)
}

/// No mail beyond the first `n` arrives within a second (none to an unknown address).
async fn no_more_mail_than(sink: &SmtpSink, n: usize) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.messages().len(), n, "{:#?}", sink.messages());
}

/// The page path and query of the one link to `page` in the mail to `to` (waiting for the
/// `n`th mail of the sink): where the browser lands.
async fn link_in_mail(sink: &SmtpSink, n: usize, to: &str, page: &str) -> String {
    let messages = sink.wait_for(n, PATIENCE).await;
    let prefix = format!("https://example.com/auth/account/{page}?token=");
    let text = messages
        .iter()
        .filter(|message| message["rcpt_tos"][0] == to)
        .map(|message| body_of(message, "text/plain"))
        .find(|text| text.contains(&prefix))
        .unwrap_or_else(|| panic!("no {page} link to {to} in {messages:#?}"));
    let start = text.find(&prefix).unwrap() + prefix.len();
    let token: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    format!("/account/{page}?token={token}")
}

/// With verification required: sign up (the same page for a taken email), sign-in refused
/// as a wrong password with a way to resend, the mail's link (a GET that does not use it up, then the button),
/// signed in and verified; forgot (the same page for an unknown email), the reset link, a
/// weak password refused with the form kept, a new password that ends the old session.
async fn the_mail_links_land_on_pages_that_verify_and_reset(backend: Backend) {
    // Arrange
    let sink = SmtpSink::start();
    let (app, _sender) = app_mailing_to(backend, &sink).await;
    let user = TestUser::random();
    let credentials = [("email", user.email.as_str()), ("password", &user.password)];
    let mut browser = Browser::new(&app);
    browser.get("/account/signup").await;

    // Act and assert: sign up, twice
    let new = browser.post("/account/signup", &credentials).await;
    let verify_link = link_in_mail(&sink, 1, &user.email, "verify").await;
    let taken = browser.post("/account/signup", &credentials).await;
    assert_eq!(new.status, StatusCode::OK, "{}", new.body);
    assert!(text(&new).contains("id=\"check-email\""));
    assert_eq!((taken.status, &taken.body), (new.status, &new.body));
    sink.wait_for(2, PATIENCE).await;

    // Unverified: no sign-in (as with a wrong password), and the way to a new mail
    let refused = browser.post("/account/signin", &credentials).await;
    assert_alert(&refused, StatusCode::UNAUTHORIZED, "unverified");
    assert!(text(&refused).contains("id=\"resend\""));
    assert!(browser.session().is_none());

    // The link: a GET (twice, as a mail scanner and then the owner) and the button
    let token = verify_link.split_once("token=").unwrap().1.to_owned();
    browser.get(&verify_link).await;
    let landing = browser.get(&verify_link).await;
    assert_eq!(landing.status, StatusCode::OK, "{}", landing.body);
    assert_self_contained(&landing, "verify landing");
    assert_eq!(hidden(&landing, "token"), token);
    assert!(text(&landing).contains("id=\"confirm\""));
    let verified = browser.post("/account/verify", &[("token", &token)]).await;
    assert_eq!(verified.status, StatusCode::OK, "{}", verified.body);
    assert!(text(&verified).contains("id=\"email-verified\""));
    let used = browser.post("/account/verify", &[("token", &token)]).await;
    assert_alert(&used, StatusCode::BAD_REQUEST, "a used link");

    // Signed in, verified
    let signed_in = browser.post("/account/signin", &credentials).await;
    assert_redirected(&signed_in);
    let old_session = browser.session().unwrap().clone();
    let overview = browser.get("/account/").await;
    assert_eq!(element(&overview, "email-status"), "verified");

    // Forgot: the same page for an unknown address
    browser.get("/account/forgot").await;
    let known = browser
        .post("/account/forgot", &[("email", &user.email)])
        .await;
    let unknown = browser
        .post("/account/forgot", &[("email", "nobody@example.com")])
        .await;
    assert_eq!(known.status, StatusCode::OK, "{}", known.body);
    assert!(text(&known).contains("id=\"check-email\""));
    assert_eq!((unknown.status, &unknown.body), (known.status, &known.body));
    let reset_link = link_in_mail(&sink, 3, &user.email, "reset").await;
    no_more_mail_than(&sink, 3).await;

    // The reset link: a weak password is refused with the form kept, then a good one
    let token = reset_link.split_once("token=").unwrap().1.to_owned();
    let form = browser.get(&reset_link).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    assert_eq!(hidden(&form, "token"), token);
    let weak = browser
        .post(
            "/account/reset",
            &[("token", &token), ("password", "short")],
        )
        .await;
    assert_alert(&weak, StatusCode::UNPROCESSABLE_ENTITY, "weak new password");
    assert_eq!(hidden(&weak, "token"), token, "the form is kept");
    let new_password = "a brand new passphrase 2026";
    let reset = browser
        .post(
            "/account/reset",
            &[("token", &token), ("password", new_password)],
        )
        .await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.body);
    assert!(text(&reset).contains("id=\"password-reset\""));

    // Every session ended; the new password signs in
    assert_eq!(
        app.validate(&old_session).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(browser.get("/account/").await.status, StatusCode::SEE_OTHER);
    let again = browser
        .post_credentials("/account/signin", &user.email, new_password)
        .await;
    assert_redirected(&again);
}

/// The tests that build their own app (`<store>` beside the `on_every_store!` modules).
mod own_app {
    use super::{
        the_credential_posts_are_in_the_per_address_bucket,
        the_mail_links_land_on_pages_that_verify_and_reset,
    };

    crate::on_every_backend!(
        the_mail_links_land_on_pages_that_verify_and_reset,
        the_credential_posts_are_in_the_per_address_bucket,
    );
}
