//! The TOTP second factor through the API (issue 15): enrolment by a signed-in user
//! (`/totp/enroll`, `/totp/confirm`, `/totp/disable`) and a login that answers `mfa_required`
//! and completes at `/login/mfa`. Codes are computed here from the secret the enrolment shows,
//! as an authenticator app would.

use std::{net::SocketAddr, time::Duration};

use auth_api::domain::{TotpSecret, RECOVERY_CODE_COUNT};
use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{header, Request, StatusCode},
};
use data_encoding::BASE32_NOPAD;
use serde_json::{json, Value};

use crate::helpers::{claims_of, Backend, TestApp, TestResponse, TestUser, Tokens};

/// One TOTP period.
const STEP: Duration = Duration::from_secs(30);

/// `POST path` with `Bearer access` and, if any, a JSON body.
async fn post_bearer(app: &TestApp, path: &str, access: &str, body: Option<Value>) -> TestResponse {
    let mut builder = Request::post(path).header(header::AUTHORIZATION, format!("Bearer {access}"));
    let body = match body {
        Some(body) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    app.request(builder.body(body).unwrap()).await
}

/// The secret of an enrolment answer, as an app reads it from the base32 text.
fn secret_of(enrolment: &TestResponse) -> TotpSecret {
    let bytes = BASE32_NOPAD
        .decode(enrolment.str("secret").as_bytes())
        .expect("the secret is base32");
    TotpSecret::from_bytes(&bytes).expect("a secret of 20 bytes")
}

/// The code an app shows now.
fn code_now(app: &TestApp, secret: &TotpSecret) -> String {
    secret.code_at(app.clock.now()).as_str().to_owned()
}

/// A code of the current step that is not the right one.
fn wrong_code(app: &TestApp, secret: &TotpSecret) -> String {
    let right: u32 = code_now(app, secret).parse().unwrap();
    format!("{:06}", (right + 1) % 1_000_000)
}

/// A signed-in user with a confirmed second factor: the user, the session's tokens, the
/// secret and the recovery codes. The clock has moved one step past the confirming code.
struct Enrolled {
    user: TestUser,
    tokens: Tokens,
    secret: TotpSecret,
    recovery_codes: Vec<String>,
}

async fn enrolled(app: &TestApp) -> Enrolled {
    let user = TestUser::random();
    user.register(app).await;
    let tokens = user.login(app).await;
    let enrolment = post_bearer(
        app,
        "/totp/enroll",
        &tokens.access,
        Some(json!({"password": user.password})),
    )
    .await;
    assert_eq!(enrolment.status, StatusCode::OK, "{}", enrolment.body);
    let secret = secret_of(&enrolment);
    let confirmed = post_bearer(
        app,
        "/totp/confirm",
        &tokens.access,
        Some(json!({"code": code_now(app, &secret)})),
    )
    .await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.body);
    let recovery_codes = confirmed.body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    app.advance(STEP);
    Enrolled {
        user,
        tokens,
        secret,
        recovery_codes,
    }
}

/// `/login` with the right password, which must answer `mfa_required`: the challenge.
async fn mfa_token(app: &TestApp, user: &TestUser) -> String {
    let response = app.login(&user.email, &user.password).await;
    assert_eq!(
        response.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        response.body
    );
    assert_eq!(response.error(), "mfa_required");
    assert!(response.body.get("access_token").is_none());
    assert_eq!(response.header("cache-control"), Some("no-store"));
    response.str("mfa_token")
}

async fn login_mfa(app: &TestApp, mfa_token: &str, code: &str) -> TestResponse {
    app.post_json("/login/mfa", json!({"mfa_token": mfa_token, "code": code}))
        .await
}

async fn login_recovery(app: &TestApp, mfa_token: &str, code: &str) -> TestResponse {
    app.post_json(
        "/login/mfa",
        json!({"mfa_token": mfa_token, "recovery_code": code}),
    )
    .await
}

/// The whole flow: enrol (secret, URI and QR code, not cacheable), confirm (ten recovery
/// codes), log out, log in (`mfa_required`, no tokens), complete with a code: tokens whose
/// `amr` is `["pwd","otp"]`, kept by a refresh, and a device token as a login hands out.
async fn a_second_factor_login_ends_in_a_pwd_otp_session(app: TestApp) {
    // Arrange
    let user = TestUser::random();
    user.register(&app).await;
    let first = user.login(&app).await;
    assert_eq!(claims_of(&first.access)["amr"], json!(["pwd"]));
    assert_eq!(claims_of(&first.access)["acr"], "aal1");

    // Act: enrol and confirm
    let enrolment = post_bearer(
        &app,
        "/totp/enroll",
        &first.access,
        Some(json!({"password": user.password})),
    )
    .await;
    let secret = secret_of(&enrolment);
    let confirmed = post_bearer(
        &app,
        "/totp/confirm",
        &first.access,
        Some(json!({"code": code_now(&app, &secret)})),
    )
    .await;

    // Assert: what the enrolment shows
    assert_eq!(enrolment.status, StatusCode::OK, "{}", enrolment.body);
    assert_eq!(enrolment.header("cache-control"), Some("no-store"));
    assert_eq!(enrolment.str("secret").len(), 32);
    let uri = enrolment.str("otpauth_uri");
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert!(
        uri.contains(&format!("secret={}", enrolment.str("secret"))),
        "{uri}"
    );
    assert!(enrolment.str("qr_svg").starts_with("<svg"));
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.body);
    assert_eq!(confirmed.header("cache-control"), Some("no-store"));
    let codes = confirmed.body["recovery_codes"].as_array().unwrap();
    assert_eq!(codes.len(), RECOVERY_CODE_COUNT);

    // Act: log out, log in again a step later
    assert_eq!(
        app.logout_bearer(&first.access, false).await.status,
        StatusCode::NO_CONTENT
    );
    app.advance(STEP);
    let token = mfa_token(&app, &user).await;
    let completed = login_mfa(&app, &token, &code_now(&app, &secret)).await;

    // Assert
    assert_eq!(completed.status, StatusCode::OK, "{}", completed.body);
    assert_eq!(completed.header("cache-control"), Some("no-store"));
    assert!(completed.body["device_token"].is_string());
    let tokens = Tokens::from_response(&completed);
    assert_eq!(claims_of(&tokens.access)["amr"], json!(["pwd", "otp"]));
    assert_eq!(claims_of(&tokens.access)["acr"], "aal2");
    assert_eq!(app.validate(&tokens.access).await.status, StatusCode::OK);
    let refreshed = app.refresh(&tokens.refresh).await;
    let refreshed = Tokens::from_response(&refreshed);
    assert_eq!(claims_of(&refreshed.access)["amr"], json!(["pwd", "otp"]));
    assert_eq!(claims_of(&refreshed.access)["acr"], "aal2");
}

/// A mistyped code is `invalid_code` and leaves the challenge usable; the right code then
/// completes it, once.
async fn a_wrong_code_is_invalid_code_and_the_challenge_survives_it(app: TestApp) {
    // Arrange
    let enrolled = enrolled(&app).await;
    let token = mfa_token(&app, &enrolled.user).await;

    // Act
    let wrong = login_mfa(&app, &token, &wrong_code(&app, &enrolled.secret)).await;
    let malformed = login_mfa(&app, &token, "12345x").await;
    let right = login_mfa(&app, &token, &code_now(&app, &enrolled.secret)).await;

    // Assert
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.error(), "invalid_code");
    assert!(wrong.header("www-authenticate").is_some());
    assert_eq!(malformed.error(), "invalid_code");
    assert_eq!(right.status, StatusCode::OK, "{}", right.body);
}

/// A code's step is used once: the confirming code does not log in, and a code that completed
/// one login does not complete the next (RFC 6238 §5.2).
async fn a_code_is_good_once(app: TestApp) {
    // Arrange: a confirmation, and a login in the same step
    let user = TestUser::random();
    user.register(&app).await;
    let tokens = user.login(&app).await;
    let secret = secret_of(
        &post_bearer(
            &app,
            "/totp/enroll",
            &tokens.access,
            Some(json!({"password": user.password})),
        )
        .await,
    );
    let code = code_now(&app, &secret);
    let confirmed = post_bearer(
        &app,
        "/totp/confirm",
        &tokens.access,
        Some(json!({"code": code})),
    )
    .await;
    assert_eq!(confirmed.status, StatusCode::OK);

    // Act
    let token = mfa_token(&app, &user).await;
    let confirming_code_again = login_mfa(&app, &token, &code).await;
    app.advance(STEP);
    let fresh = code_now(&app, &secret);
    let first = login_mfa(&app, &token, &fresh).await;
    let second_token = mfa_token(&app, &user).await;
    let replayed = login_mfa(&app, &second_token, &fresh).await;

    // Assert
    assert_eq!(confirming_code_again.error(), "invalid_code");
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(replayed.status, StatusCode::UNAUTHORIZED);
    assert_eq!(replayed.error(), "invalid_code");
}

/// An `mfa_token` opens one session, for five minutes; made-up ones are refused alike.
async fn an_mfa_token_is_single_use_and_expires(app: TestApp) {
    // Arrange
    let enrolled = enrolled(&app).await;
    let used = mfa_token(&app, &enrolled.user).await;
    assert_eq!(
        login_mfa(&app, &used, &code_now(&app, &enrolled.secret))
            .await
            .status,
        StatusCode::OK
    );
    let late = mfa_token(&app, &enrolled.user).await;

    // Act
    app.advance(STEP);
    let replayed = login_mfa(&app, &used, &code_now(&app, &enrolled.secret)).await;
    app.advance(Duration::from_secs(5 * 60));
    let expired = login_mfa(&app, &late, &code_now(&app, &enrolled.secret)).await;
    let made_up = login_mfa(
        &app,
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "123456",
    )
    .await;
    let nonsense = login_mfa(&app, "not a token!", "123456").await;

    // Assert
    for (response, reason) in [
        (replayed, "used"),
        (expired, "five minutes old"),
        (made_up, "never issued"),
        (nonsense, "not one of ours"),
    ] {
        assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{reason}");
        assert_eq!(response.error(), "invalid_mfa_token", "{reason}");
    }
}

/// A challenge is its user's, for the password it was issued for: another user's code does not
/// complete it, and a password change or a "logout everywhere" since voids it.
async fn an_mfa_token_is_bound_to_its_user_and_credentials(app: TestApp) {
    // Arrange
    let alice = enrolled(&app).await;
    let bob = enrolled(&app).await;
    let alices_token = mfa_token(&app, &alice.user).await;
    let before_change = mfa_token(&app, &bob.user).await;

    // Act: Bob's code for Alice's challenge
    let crossed = login_mfa(&app, &alices_token, &code_now(&app, &bob.secret)).await;
    // Bob changes his password with his signed-in session.
    let new_password = "a brand new passphrase for bob";
    let changed = post_bearer(
        &app,
        "/password",
        &bob.tokens.access,
        Some(json!({"current_password": bob.user.password, "new_password": new_password})),
    )
    .await;
    let after_change = login_mfa(&app, &before_change, &code_now(&app, &bob.secret)).await;
    // Alice ends every session.
    let alices_next = mfa_token(&app, &alice.user).await;
    assert_eq!(
        app.logout_bearer(&alice.tokens.access, true).await.status,
        StatusCode::NO_CONTENT
    );
    app.advance(Duration::from_secs(1));
    let after_logout_all = login_mfa(&app, &alices_next, &code_now(&app, &alice.secret)).await;

    // Assert
    assert_eq!(crossed.error(), "invalid_code");
    assert_eq!(changed.status, StatusCode::NO_CONTENT, "{}", changed.body);
    assert_eq!(after_change.error(), "invalid_mfa_token");
    assert_eq!(after_logout_all.error(), "invalid_mfa_token");
}

/// A recovery code completes a login once (as typed: case and hyphens do not matter); the
/// tokens say `otp` like a code's.
async fn a_recovery_code_is_good_once(app: TestApp) {
    // Arrange
    let enrolled = enrolled(&app).await;
    let code = &enrolled.recovery_codes[0];

    // Act
    let first = login_recovery(&app, &mfa_token(&app, &enrolled.user).await, code).await;
    let again = login_recovery(&app, &mfa_token(&app, &enrolled.user).await, code).await;
    let typed = enrolled.recovery_codes[1].replace('-', "").to_uppercase();
    let other = login_recovery(&app, &mfa_token(&app, &enrolled.user).await, &typed).await;
    let both = app
        .post_json(
            "/login/mfa",
            json!({"mfa_token": mfa_token(&app, &enrolled.user).await, "code": "123456",
                   "recovery_code": enrolled.recovery_codes[2]}),
        )
        .await;

    // Assert
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(
        claims_of(&Tokens::from_response(&first).access)["amr"],
        json!(["pwd", "otp"])
    );
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert_eq!(again.error(), "invalid_code");
    assert_eq!(other.status, StatusCode::OK, "{}", other.body);
    assert_eq!(both.status, StatusCode::BAD_REQUEST);
}

/// Every code tried counts on the user's own code lock, with the password's schedule, and
/// only a right code clears it: logging in again with the right password, a right current
/// password at `/password` (even with a new password the policy refuses), another device's
/// token or the user's own factor cycled at `/totp/*` never give fresh guesses; and a right
/// code never clears a password streak.
async fn wrong_codes_lock_the_users_codes_and_nothing_else_resets_it(app: TestApp) {
    // Arrange
    let enrolled = enrolled(&app).await;
    let free = app.state.login_throttle.free_attempts;
    let token = mfa_token(&app, &enrolled.user).await;
    let session = enrolled.tokens.access.clone();

    // Act: guess until refused, resetting what could be reset in between
    let mut guesses = 0;
    let locked = loop {
        let response = login_mfa(&app, &token, &wrong_code(&app, &enrolled.secret)).await;
        guesses += 1;
        if response.status == StatusCode::TOO_MANY_REQUESTS {
            break response;
        }
        assert_eq!(response.error(), "invalid_code");
        assert!(guesses <= free, "no lock after {guesses} wrong codes");
        let again = app
            .login(&enrolled.user.email, &enrolled.user.password)
            .await;
        assert_eq!(again.error(), "mfa_required");
        let weak = post_bearer(
            &app,
            "/password",
            &session,
            Some(json!({"current_password": enrolled.user.password, "new_password": "x"})),
        )
        .await;
        assert_eq!(
            weak.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            weak.body
        );
    };
    let right_code = login_mfa(&app, &token, &code_now(&app, &enrolled.secret)).await;
    let right_password = app
        .login(&enrolled.user.email, &enrolled.user.password)
        .await;
    let wait: u64 = locked.header("retry-after").unwrap().parse().unwrap();
    app.advance(Duration::from_secs(wait));
    let after_wait = login_mfa(&app, &token, &code_now(&app, &enrolled.secret)).await;

    // Assert
    assert_eq!(locked.error(), "rate_limited");
    assert_eq!(right_code.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        right_password.error(),
        "mfa_required",
        "the password has its own lock"
    );
    assert_eq!(after_wait.status, StatusCode::OK, "{}", after_wait.body);

    // Act: the user's own factor enrolled, a password streak, then the factor confirmed
    let user = TestUser::random();
    user.register(&app).await;
    let tokens = user.login(&app).await;
    let secret = secret_of(
        &post_bearer(
            &app,
            "/totp/enroll",
            &tokens.access,
            Some(json!({"password": user.password})),
        )
        .await,
    );
    // Wrong passwords until the email is locked (the clock is frozen: it stays locked).
    let mut tries = 0;
    while app
        .login(&user.email, "a wrong password of length")
        .await
        .status
        != StatusCode::TOO_MANY_REQUESTS
    {
        tries += 1;
        assert!(tries <= free + 1, "no lock after {tries} wrong passwords");
    }
    let confirmed = post_bearer(
        &app,
        "/totp/confirm",
        &tokens.access,
        Some(json!({"code": code_now(&app, &secret)})),
    )
    .await;
    let password_after = app.login(&user.email, &user.password).await;

    // Assert: the right code cleared no password streak
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.body);
    assert_eq!(password_after.status, StatusCode::TOO_MANY_REQUESTS);
}

/// Disabling needs a code (or a recovery code): an access token alone does not remove the
/// factor. Once disabled, the password alone logs in again (`amr` `["pwd"]`).
async fn disabling_needs_a_code(app: TestApp) {
    // Arrange
    let enrolled = enrolled(&app).await;
    let access = &enrolled.tokens.access;

    // Act
    let without = post_bearer(&app, "/totp/disable", access, Some(json!({}))).await;
    let wrong = post_bearer(
        &app,
        "/totp/disable",
        access,
        Some(json!({"code": wrong_code(&app, &enrolled.secret)})),
    )
    .await;
    let still_required = app
        .login(&enrolled.user.email, &enrolled.user.password)
        .await;
    let disabled = post_bearer(
        &app,
        "/totp/disable",
        access,
        Some(json!({"code": enrolled.recovery_codes[0]})),
    )
    .await;
    let again = post_bearer(
        &app,
        "/totp/disable",
        access,
        Some(json!({"code": code_now(&app, &enrolled.secret)})),
    )
    .await;
    let login = app
        .login(&enrolled.user.email, &enrolled.user.password)
        .await;

    // Assert
    assert_eq!(without.status, StatusCode::BAD_REQUEST);
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.error(), "invalid_code");
    assert_eq!(still_required.error(), "mfa_required");
    assert_eq!(disabled.status, StatusCode::NO_CONTENT, "{}", disabled.body);
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.error(), "totp_not_enabled");
    let tokens = Tokens::from_response(&login);
    assert_eq!(claims_of(&tokens.access)["amr"], json!(["pwd"]));
}

/// One enrolment at a time: enrolling again before confirming replaces the secret (the old
/// one's codes confirm nothing), an enrolment is confirmable for ten minutes, and with a
/// confirmed factor enrolling again is 409 `totp_already_enabled`.
async fn enrolment_is_replaced_until_confirmed_and_refused_after(app: TestApp) {
    // Arrange
    let user = TestUser::random();
    user.register(&app).await;
    let access = user.login(&app).await.access;

    // Act
    let stale = secret_of(
        &post_bearer(
            &app,
            "/totp/enroll",
            &access,
            Some(json!({"password": user.password})),
        )
        .await,
    );
    app.advance(Duration::from_secs(10 * 60));
    let too_late = post_bearer(
        &app,
        "/totp/confirm",
        &access,
        Some(json!({"code": code_now(&app, &stale)})),
    )
    .await;
    let replaced = secret_of(
        &post_bearer(
            &app,
            "/totp/enroll",
            &access,
            Some(json!({"password": user.password})),
        )
        .await,
    );
    let current = secret_of(
        &post_bearer(
            &app,
            "/totp/enroll",
            &access,
            Some(json!({"password": user.password})),
        )
        .await,
    );
    let with_replaced = post_bearer(
        &app,
        "/totp/confirm",
        &access,
        Some(json!({"code": code_now(&app, &replaced)})),
    )
    .await;
    let with_current = post_bearer(
        &app,
        "/totp/confirm",
        &access,
        Some(json!({"code": code_now(&app, &current)})),
    )
    .await;
    let enrol_again = post_bearer(
        &app,
        "/totp/enroll",
        &access,
        Some(json!({"password": user.password})),
    )
    .await;
    let confirm_again = post_bearer(
        &app,
        "/totp/confirm",
        &access,
        Some(json!({"code": code_now(&app, &current)})),
    )
    .await;

    // Assert
    assert_eq!(too_late.status, StatusCode::CONFLICT);
    assert_eq!(too_late.error(), "totp_not_pending");
    assert_eq!(with_replaced.error(), "invalid_code");
    assert_eq!(with_current.status, StatusCode::OK, "{}", with_current.body);
    assert_eq!(enrol_again.status, StatusCode::CONFLICT);
    assert_eq!(enrol_again.error(), "totp_already_enabled");
    assert_eq!(confirm_again.error(), "totp_not_pending");
}

/// The enrolment routes need a signed-in user whose session is live: no token, a forged one
/// and the token of an ended session are refused.
async fn enrolment_needs_a_live_session(app: TestApp) {
    // Arrange
    let user = TestUser::random();
    user.register(&app).await;
    let tokens = user.login(&app).await;
    assert_eq!(
        app.logout_bearer(&tokens.access, false).await.status,
        StatusCode::NO_CONTENT
    );

    // Act
    let ended = post_bearer(
        &app,
        "/totp/enroll",
        &tokens.access,
        Some(json!({"password": user.password})),
    )
    .await;
    let forged = post_bearer(
        &app,
        "/totp/enroll",
        "a.b.c",
        Some(json!({"password": user.password})),
    )
    .await;
    let none = app
        .post_json("/totp/enroll", json!({"password": user.password}))
        .await;
    let confirm_ended = post_bearer(
        &app,
        "/totp/confirm",
        &tokens.access,
        Some(json!({"code": "123456"})),
    )
    .await;

    // Assert
    for (response, reason) in [
        (ended, "ended"),
        (forged, "forged"),
        (confirm_ended, "confirm, ended"),
    ] {
        assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{reason}");
        assert_eq!(response.error(), "invalid_token", "{reason}");
    }
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.error(), "missing_token");
}

/// Of racing completions of one challenge, each with a valid code of its own step, exactly one
/// opens a session, whatever order they run in.
async fn racing_completions_of_one_challenge_open_one_session(app: TestApp) {
    // Arrange: two unused steps in the window (the previous one and the current one)
    let enrolled = enrolled(&app).await;
    app.advance(STEP);
    let now = app.clock.now();
    let previous = enrolled.secret.code_at(now - 30).as_str().to_owned();
    let current = enrolled.secret.code_at(now).as_str().to_owned();
    let token = mfa_token(&app, &enrolled.user).await;

    // Act
    let (a, b) = tokio::join!(
        login_mfa(&app, &token, &previous),
        login_mfa(&app, &token, &current)
    );

    // Assert
    let opened = [&a, &b]
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    assert_eq!(opened, 1, "{} / {}", a.body, b.body);
    let loser = if a.status == StatusCode::OK { &b } else { &a };
    assert_eq!(loser.status, StatusCode::UNAUTHORIZED, "{}", loser.body);
}

/// `POST path` with a JSON `body` from the client address 198.51.100.7 (a direct peer).
async fn post_from_client(app: &TestApp, path: &str, body: Value) -> TestResponse {
    let mut request = Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, "Bearer a.b.c")
        .body(Body::from(body.to_string()))
        .unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([198, 51, 100, 7], 50000))));
    app.request(request).await
}

/// `/login/mfa` and the `/totp` routes draw on the per-address bucket of `/login` (E 49): made-up
/// challenges spend it like guessed passwords, and then every credential route waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_step_and_enrolment_are_in_the_per_address_bucket() {
    // Arrange
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.ip_limit_per_minute = 2).await;
    let made_up =
        json!({"mfa_token": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "code": "123456"});

    // Act
    let mut within = Vec::new();
    for _ in 0..2 {
        within.push(post_from_client(&app, "/login/mfa", made_up.clone()).await);
    }
    let second_step = post_from_client(&app, "/login/mfa", made_up.clone()).await;
    let enrol = post_from_client(&app, "/totp/enroll", json!({"password": "p"})).await;
    let confirm = post_from_client(&app, "/totp/confirm", json!({"code": "123456"})).await;
    let disable = post_from_client(&app, "/totp/disable", json!({"code": "123456"})).await;
    let login = post_from_client(
        &app,
        "/login",
        json!({"email": "someone@example.com", "password": "a password of some length"}),
    )
    .await;

    // Assert
    for response in within {
        assert_eq!(response.error(), "invalid_mfa_token");
    }
    for (response, route) in [
        (second_step, "/login/mfa"),
        (enrol, "/totp/enroll"),
        (confirm, "/totp/confirm"),
        (disable, "/totp/disable"),
        (login, "/login"),
    ] {
        assert_eq!(response.status, StatusCode::TOO_MANY_REQUESTS, "{route}");
        assert!(response.header("retry-after").is_some(), "{route}");
    }
}

mod every_store {
    use super::{
        a_second_factor_login_ends_in_a_pwd_otp_session,
        racing_completions_of_one_challenge_open_one_session,
    };

    crate::on_every_store!(
        a_second_factor_login_ends_in_a_pwd_otp_session,
        racing_completions_of_one_challenge_open_one_session,
    );
}

/// Enrolment asks for the password again: a stolen access token alone cannot put the thief's
/// factor on the account (and lock its owner out). A wrong one is `wrong_password` and counts
/// on the login lock; an account without a password (made by a sign-in through a provider,
/// whose logins never reach a second factor here) is `totp_unavailable`.
async fn enrolment_needs_the_password_and_an_account_that_has_one(app: TestApp) {
    // Arrange
    let user = TestUser::random();
    user.register(&app).await;
    let tokens = user.login(&app).await;
    let now = app.clock.now();
    let passwordless_id = uuid::Uuid::new_v4().to_string();
    let passwordless_email = TestUser::random().email;
    let identity = auth_api::store::ExternalIdentity {
        provider: "local".to_owned(),
        subject: format!("sub-{passwordless_id}"),
        issuer: Some("https://op.example".to_owned()),
        user_id: passwordless_id.clone(),
        email: Some(passwordless_email.clone()),
        email_verified: true,
        created_at: now,
        last_used_at: now,
    };
    app.state
        .store
        .insert_passwordless_user(&passwordless_email, &["user"], &identity)
        .await
        .unwrap();
    // Its session, as a sign-in through the provider opens it: a one-time code exchanged.
    let verifier = "v".repeat(43);
    let digest = |text: &str| {
        use sha2::Digest as _;
        sha2::Sha256::digest(text.as_bytes()).to_vec()
    };
    let code = "c".repeat(43);
    app.state
        .store
        .insert_sign_in_code(&auth_api::store::SignInCode {
            code_hash: digest(&code),
            user_id: passwordless_id.clone(),
            provider: "local".to_owned(),
            amr: "oauth".to_owned(),
            code_challenge: {
                use base64::Engine as _;
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest(&verifier))
            },
            created_at: now,
            expires_at: now + 60,
        })
        .await
        .unwrap();
    let exchanged = app
        .post_json(
            "/token?grant_type=pkce",
            json!({"auth_code": code, "code_verifier": verifier}),
        )
        .await;
    assert_eq!(exchanged.status, StatusCode::OK, "{}", exchanged.body);
    let passwordless_token = exchanged.str("access_token");

    // Act
    let wrong = post_bearer(
        &app,
        "/totp/enroll",
        &tokens.access,
        Some(json!({"password": "not the password at all"})),
    )
    .await;
    let missing = post_bearer(&app, "/totp/enroll", &tokens.access, Some(json!({}))).await;
    let right = post_bearer(
        &app,
        "/totp/enroll",
        &tokens.access,
        Some(json!({"password": user.password})),
    )
    .await;
    let unavailable = post_bearer(
        &app,
        "/totp/enroll",
        &passwordless_token,
        Some(json!({"password": "anything at all here"})),
    )
    .await;

    // Assert
    assert_eq!(wrong.status, StatusCode::FORBIDDEN, "{}", wrong.body);
    assert_eq!(wrong.error(), "wrong_password");
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(right.status, StatusCode::OK, "{}", right.body);
    assert_eq!(
        unavailable.status,
        StatusCode::CONFLICT,
        "{}",
        unavailable.body
    );
    assert_eq!(unavailable.error(), "totp_unavailable");
}

crate::store_tests!(app on [sqlite]: (
    a_wrong_code_is_invalid_code_and_the_challenge_survives_it,
    a_code_is_good_once,
    an_mfa_token_is_single_use_and_expires,
    an_mfa_token_is_bound_to_its_user_and_credentials,
    a_recovery_code_is_good_once,
    wrong_codes_lock_the_users_codes_and_nothing_else_resets_it,
    disabling_needs_a_code,
    enrolment_is_replaced_until_confirmed_and_refused_after,
    enrolment_needs_a_live_session,
    enrolment_needs_the_password_and_an_account_that_has_one,
));
