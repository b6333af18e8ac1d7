//! Email verification and password reset (issue 15) against a real SMTP server (`SmtpSink`):
//! the links are read from the mail the sink received and followed. Single use, replaced by a
//! newer link, expiring, voided by a password change; a reset ends every session and clears the
//! login lock; signup, resend and recover answer alike whether or not the address has an
//! account, and the latter two without touching the store before answering.

use std::time::Duration;

use auth_api::{
    config::EmailVerification,
    domain::{totp_step, TotpSecret},
    mail::Sender,
    service::MAX_MAILS_PER_RECIPIENT_HOUR,
    Config,
};
use axum::http::StatusCode;
use serde_json::{json, Value};
use test_support::smtp_sink::{body_of, link_token};
use tokio::sync::watch;

use crate::{
    helpers::{claims_of, Backend, TestApp, TestResponse, Tokens},
    smtp_sink::SmtpSink,
};

/// How long a test waits for a mail.
const PATIENCE: Duration = Duration::from_secs(15);

/// A password the signup policy accepts.
const PASSWORD: &str = "correct horse battery staple";

/// An app with email on (to `sink`), verification in `mode`, and its outbox sender running
/// (stopped when the returned sender drops).
async fn app_with_mail(
    backend: Backend,
    sink: &SmtpSink,
    mode: EmailVerification,
    adjust: impl FnOnce(&mut Config),
) -> (TestApp, watch::Sender<bool>) {
    let port = sink.port;
    let app = TestApp::spawn_with(backend, |config| {
        config.smtp_url = Some(format!("smtp://127.0.0.1:{port}").into());
        config.email_from = Some("Accounts <accounts@example.com>".parse().unwrap());
        config.smtp_timeout = Duration::from_secs(5);
        config.outbox_poll_interval = Duration::from_millis(100);
        config.email_verification = mode;
        config.public_url = "https://example.com/auth".to_owned();
        adjust(config);
    })
    .await;
    let (stop, stop_rx) = watch::channel(false);
    let mailer = app.state.mailer.clone().expect("email is configured");
    Sender::spawn(app.state.clone(), mailer, stop_rx);
    (app, stop)
}

fn fresh_email() -> String {
    format!("user-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// The `n`th message (1-based) once it has arrived.
async fn mail(sink: &SmtpSink, n: usize) -> Value {
    sink.wait_for(n, PATIENCE).await.swap_remove(n - 1)
}

async fn verify(app: &TestApp, token: &str) -> TestResponse {
    app.post_json("/verify", json!({ "token": token })).await
}

async fn reset(app: &TestApp, token: &str, password: &str) -> TestResponse {
    app.post_json("/reset", json!({ "token": token, "password": password }))
        .await
}

/// A login answered with tokens whose access token says the email is verified.
fn assert_logged_in_verified(login: &TestResponse) {
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    assert_eq!(
        claims_of(&login.str("access_token"))["email_verified"],
        true
    );
}

/// No mail beyond the first `n` arrives within a second (what was not sent cannot be awaited).
async fn no_more_mail_than(sink: &SmtpSink, n: usize) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.messages().len(), n, "{:#?}", sink.messages());
}

/// Signup mails a link; it verifies the address once; tokens say so from the next refresh on.
async fn a_signup_link_verifies_the_address_once(backend: Backend) {
    // Arrange
    let sink = SmtpSink::start();
    let (app, _sender) = app_with_mail(backend, &sink, EmailVerification::Optional, |_| {}).await;
    let email = fresh_email();

    // Act
    let signup = app.signup(&email, PASSWORD).await;
    let message = mail(&sink, 1).await;
    let token = link_token(&message, "verify");
    let before = Tokens::from_response(&app.login(&email, PASSWORD).await);
    let first = verify(&app, &token).await;
    let again = verify(&app, &token).await;
    let after = Tokens::from_response(&app.refresh(&before.refresh).await);

    // Assert
    assert_eq!(signup.status, StatusCode::ACCEPTED, "{}", signup.body);
    assert_eq!(
        signup.body,
        json!({"status": "verification_sent", "email": email})
    );
    assert_eq!(message["rcpt_tos"], json!([email]));
    assert!(body_of(&message, "text/plain").contains(&format!(
        "https://example.com/auth/account/verify?token={token}"
    )));
    assert_eq!(message["headers"]["Subject"], "Confirm your email address");
    let claims = claims_of(&before.access);
    assert_eq!(claims["email_verified"], false);
    assert_eq!(claims["acr"], "aal1");
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body, json!({"email_verified": true}));
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.body);
    assert_eq!(again.error(), "invalid_email_token");
    assert_eq!(claims_of(&after.access)["email_verified"], true);
}

/// With verification on, a taken email answers exactly as a new one; its owner gets a note,
/// and nothing about the account changes.
async fn a_taken_email_answers_as_a_new_one_and_its_owner_is_told(backend: Backend) {
    // Arrange
    let sink = SmtpSink::start();
    let (app, _sender) = app_with_mail(backend, &sink, EmailVerification::Optional, |_| {}).await;
    let email = fresh_email();
    let new = app.signup(&email, PASSWORD).await;
    mail(&sink, 1).await;

    // Act
    let taken = app
        .signup(&email.to_uppercase(), "another long enough passphrase")
        .await;
    let note = mail(&sink, 2).await;

    // Assert
    assert_eq!(taken.status, new.status);
    assert_eq!(taken.body, new.body);
    assert_eq!(note["rcpt_tos"], json!([email]));
    assert_eq!(note["headers"]["Subject"], "You already have an account");
    assert!(body_of(&note, "text/plain").contains("https://example.com/auth/account/forgot"));
    assert_eq!(app.login(&email, PASSWORD).await.status, StatusCode::OK);
    assert_eq!(
        app.login(&email, "another long enough passphrase")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

/// `required`: an unverified account's right password is answered as a wrong one (so that
/// logging in after a signup does not tell whether the signup made the account); once
/// verified it logs in.
async fn required_verification_answers_an_unverified_login_as_a_wrong_password(backend: Backend) {
    // Arrange
    let sink = SmtpSink::start();
    let (app, _sender) = app_with_mail(backend, &sink, EmailVerification::Required, |_| {}).await;
    let email = fresh_email();
    app.signup(&email, PASSWORD).await;
    let token = link_token(&mail(&sink, 1).await, "verify");

    // Act
    let unverified = app.login(&email, PASSWORD).await;
    let wrong = app.login(&email, "a wrong but long password").await;
    verify(&app, &token).await;
    let verified = app.login(&email, PASSWORD).await;

    // Assert
    assert_eq!(unverified.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unverified.body, wrong.body);
    assert_logged_in_verified(&verified);
}

/// A resend mails a new link and voids the older one; for an address without an account, or
/// one already verified, it answers the same and sends nothing.
async fn a_resend_replaces_the_link_and_answers_alike_for_anyone(backend: Backend) {
    // Arrange
    let sink = SmtpSink::start();
    let (app, _sender) = app_with_mail(backend, &sink, EmailVerification::Optional, |_| {}).await;
    let email = fresh_email();
    app.signup(&email, PASSWORD).await;
    let old = link_token(&mail(&sink, 1).await, "verify");

    // Act
    let known = app
        .post_json("/verify/resend", json!({"email": email}))
        .await;
    let new = link_token(&mail(&sink, 2).await, "verify");
    let unknown = app
        .post_json("/verify/resend", json!({"email": fresh_email()}))
        .await;
    let old_answer = verify(&app, &old).await;
    let new_answer = verify(&app, &new).await;
    let verified = app
        .post_json("/verify/resend", json!({"email": email}))
        .await;

    // Assert
    assert_eq!(known.status, StatusCode::ACCEPTED);
    assert_eq!(known.body, json!({"status": "accepted"}));
    assert_eq!((unknown.status, &unknown.body), (known.status, &known.body));
    assert_eq!(
        (verified.status, &verified.body),
        (known.status, &known.body)
    );
    assert_eq!(old_answer.error(), "invalid_email_token");
    assert_eq!(new_answer.status, StatusCode::OK);
    no_more_mail_than(&sink, 2).await;
}

/// A reset by the mailed link sets the password through the signup policy (a refused password
/// leaves the link usable), ends every session (the feed names the user), clears the lock a
/// guesser caused, verifies the address; the link works once.
async fn a_reset_ends_every_session_and_clears_the_lock(backend: Backend) {
    // Arrange
    let sink = SmtpSink::start();
    let (app, _sender) = app_with_mail(backend, &sink, EmailVerification::Off, |config| {
        config.login_free_attempts = 2;
    })
    .await;
    let email = fresh_email();
    assert_eq!(
        app.signup(&email, PASSWORD).await.status,
        StatusCode::CREATED
    );
    let session = Tokens::from_response(&app.login(&email, PASSWORD).await);
    for _ in 0..3 {
        app.login(&email, "a guess that is wrong").await;
    }
    assert_eq!(
        app.login(&email, PASSWORD).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    // Act
    let asked = app.post_json("/recover", json!({"email": email})).await;
    let message = mail(&sink, 1).await;
    let token = link_token(&message, "reset");
    let weak = reset(&app, &token, "short").await;
    let done = reset(&app, &token, "a brand new passphrase here").await;
    let reused = reset(&app, &token, "yet another new passphrase").await;
    let old_access = app.validate(&session.access).await;
    let old_refresh = app.refresh(&session.refresh).await;
    let old_password = app.login(&email, PASSWORD).await;
    let new_password = app.login(&email, "a brand new passphrase here").await;

    // Assert
    assert_eq!(asked.status, StatusCode::ACCEPTED);
    assert_eq!(message["headers"]["Subject"], "Reset your password");
    assert_eq!(
        weak.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        weak.body
    );
    assert_eq!(done.status, StatusCode::NO_CONTENT, "{}", done.body);
    assert_eq!(reused.error(), "invalid_email_token");
    assert_eq!(old_access.status, StatusCode::UNAUTHORIZED);
    assert_eq!(old_refresh.status, StatusCode::UNAUTHORIZED);
    let user_id = claims_of(&session.access)["sub"].clone();
    let feed = app.revocation_feed().await;
    assert!(
        feed.body["users"]
            .as_array()
            .is_some_and(|users| users.iter().any(|u| u["sub"] == user_id)),
        "{}",
        feed.body
    );
    assert_eq!(old_password.status, StatusCode::UNAUTHORIZED);
    assert_logged_in_verified(&new_password);
}

/// A reset link stops working when a newer one is sent, when the password changes otherwise,
/// and when it expires.
async fn a_reset_link_is_voided_by_a_newer_one_a_password_change_and_time(backend: Backend) {
    // Arrange
    let sink = SmtpSink::start();
    let (app, _sender) = app_with_mail(backend, &sink, EmailVerification::Off, |_| {}).await;
    let email = fresh_email();
    app.signup(&email, PASSWORD).await;
    let recover = || app.post_json("/recover", json!({"email": email}));

    // Act
    recover().await;
    let first = link_token(&mail(&sink, 1).await, "reset");
    recover().await;
    let second = link_token(&mail(&sink, 2).await, "reset");
    let replaced = reset(&app, &first, "a brand new passphrase here").await;
    let session = Tokens::from_response(&app.login(&email, PASSWORD).await);
    let changed = app
        .request(
            axum::http::Request::post("/password")
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {}", session.access))
                .body(axum::body::Body::from(
                    json!({"current_password": PASSWORD, "new_password": "changed the normal way"})
                        .to_string(),
                ))
                .unwrap(),
        )
        .await;
    let after_change = reset(&app, &second, "a brand new passphrase here").await;
    recover().await;
    let third = link_token(&mail(&sink, 3).await, "reset");
    app.advance(app.state.config.reset_link_ttl);
    let expired = reset(&app, &third, "a brand new passphrase here").await;

    // Assert
    assert_eq!(replaced.error(), "invalid_email_token");
    assert_eq!(changed.status, StatusCode::NO_CONTENT, "{}", changed.body);
    assert_eq!(after_change.error(), "invalid_email_token");
    assert_eq!(expired.error(), "invalid_email_token");
    assert_eq!(
        app.login(&email, "changed the normal way").await.status,
        StatusCode::OK
    );
}

/// `/recover` and `/verify/resend` answer before touching the store: with the store closed
/// they still answer 202, alike for every address, so that neither the answer nor its time
/// can depend on whether an account exists. A malformed address is the only other answer.
async fn recover_and_resend_answer_without_the_store(app: TestApp) {
    // Arrange
    let known = fresh_email();
    app.signup(&known, PASSWORD).await;
    app.state.store.close().await;

    // Act
    let answers = [
        app.post_json("/recover", json!({"email": known})).await,
        app.post_json("/recover", json!({"email": fresh_email()}))
            .await,
        app.post_json("/verify/resend", json!({"email": known}))
            .await,
        app.post_json("/verify/resend", json!({"email": fresh_email()}))
            .await,
    ];
    let malformed = app
        .post_json("/recover", json!({"email": "not an email"}))
        .await;

    // Assert
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
        assert_eq!(answer.body, json!({"status": "accepted"}));
    }
    assert_eq!(malformed.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(malformed.error(), "invalid_email");
}

/// A recipient gets at most `MAX_MAILS_PER_RECIPIENT_HOUR` mails of a kind per hour, whoever
/// asks; the answer stays the same and the metric counts the rest as `limited`.
async fn mail_to_one_recipient_is_limited_per_hour(backend: Backend) {
    // Arrange
    let sink = SmtpSink::start();
    let (app, _sender) = app_with_mail(backend, &sink, EmailVerification::Off, |config| {
        config.ip_limit_per_minute = 1000;
    })
    .await;
    let email = fresh_email();
    app.signup(&email, PASSWORD).await;
    let limit = usize::try_from(MAX_MAILS_PER_RECIPIENT_HOUR).unwrap();

    // Act
    let mut answers = Vec::new();
    for n in 1..=limit + 2 {
        answers.push(
            app.post_json("/recover", json!({"email": email}))
                .await
                .status,
        );
        if n <= limit {
            mail(&sink, n).await;
        }
    }
    no_more_mail_than(&sink, limit).await;
    app.advance(Duration::from_secs(3601));
    app.post_json("/recover", json!({"email": email})).await;

    // Assert
    assert!(
        answers.iter().all(|s| *s == StatusCode::ACCEPTED),
        "{answers:?}"
    );
    mail(&sink, limit + 1).await;
    assert!(app
        .state
        .metrics
        .render()
        .contains(r#"auth_email_sent_total{kind="password_reset",result="limited"} 2"#));
}

/// Racing requests cannot pass the per-recipient limit together: it is counted under the
/// user's row lock, in the transaction that queues the mail.
async fn racing_requests_cannot_pass_the_recipient_limit_together(backend: Backend) {
    // Arrange
    let app = TestApp::spawn_with(backend, |config| config.ip_limit_per_minute = 1000).await;
    let email = fresh_email();
    app.signup(&email, PASSWORD).await;
    let recover = || app.post_json("/recover", json!({"email": email}));

    // Act
    let answers = futures_util::future::join_all((0..30).map(|_| recover())).await;
    let mut queued = 0;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        queued = app
            .state
            .store
            .emails_queued_since(&email, "password_reset", 0)
            .await
            .unwrap();
    }

    // Assert
    assert!(answers.iter().all(|a| a.status == StatusCode::ACCEPTED));
    assert!(
        (1..=MAX_MAILS_PER_RECIPIENT_HOUR).contains(&queued),
        "{queued} reset mails queued"
    );
}

/// A reset by someone who proves the address for the first time removes a second factor
/// enrolled before (by whoever signed up with the address first); an account whose address
/// was verified keeps it.
async fn a_reset_of_a_never_verified_account_removes_its_second_factor(backend: Backend) {
    // Arrange
    let sink = SmtpSink::start();
    let (app, _sender) = app_with_mail(backend, &sink, EmailVerification::Off, |_| {}).await;
    let (squatted, verified) = (fresh_email(), fresh_email());
    for email in [&squatted, &verified] {
        app.signup(email, PASSWORD).await;
        let user = app.user(email).await;
        let now = app.clock.now();
        let secret = TotpSecret::generate();
        let sealed = app
            .state
            .ring
            .keks()
            .seal_totp_secret(&user.id, &secret)
            .unwrap();
        let store = &app.state.store;
        store
            .begin_totp_enrolment(&user.id, &sealed, now)
            .await
            .unwrap();
        assert!(store
            .confirm_totp(&user.id, &sealed, totp_step(now), now, &[])
            .await
            .unwrap());
    }
    let raw = app.raw().await;
    sqlx::query(raw.sql(
        "UPDATE users SET email_verified_at = 1 WHERE email = $1",
        "UPDATE users SET email_verified_at = 1 WHERE email = ?",
    ))
    .bind(&verified)
    .execute(&raw.pool)
    .await
    .unwrap();
    raw.close().await;

    // Act
    for (n, email) in [&squatted, &verified].into_iter().enumerate() {
        app.post_json("/recover", json!({"email": email})).await;
        let token = link_token(&mail(&sink, n + 1).await, "reset");
        let done = reset(&app, &token, "a brand new passphrase here").await;
        assert_eq!(done.status, StatusCode::NO_CONTENT, "{}", done.body);
    }

    // Assert
    let factor = |email: &str| {
        let email = email.to_owned();
        let app = &app;
        async move {
            let user = app.user(&email).await;
            app.state.store.totp_enrolment(&user.id).await.unwrap()
        }
    };
    assert_eq!(factor(&squatted).await, None);
    assert!(factor(&verified).await.is_some());
}

crate::on_every_backend!(
    a_signup_link_verifies_the_address_once,
    a_reset_ends_every_session_and_clears_the_lock,
    a_reset_link_is_voided_by_a_newer_one_a_password_change_and_time,
    racing_requests_cannot_pass_the_recipient_limit_together,
    a_reset_of_a_never_verified_account_removes_its_second_factor,
);

/// What depends on no store's own behaviour: on SQLite only.
mod on_sqlite {
    use super::*;

    crate::store_tests!(backend on [sqlite]: (
        a_taken_email_answers_as_a_new_one_and_its_owner_is_told,
        required_verification_answers_an_unverified_login_as_a_wrong_password,
        a_resend_replaces_the_link_and_answers_alike_for_anyone,
        mail_to_one_recipient_is_limited_per_hour,
    ));
}

/// As [`on_sqlite`], for a test on an app of the default configuration.
mod on_sqlite_app {
    use super::*;

    crate::store_tests!(app on [sqlite]: (recover_and_resend_answer_without_the_store));
}
