//! Audit events (SECURITY.md E 51): each login outcome is a structured event, in the JSON form
//! `AUTH_LOG_FORMAT=json` writes, that names the outcome and the ids, never the email, the
//! password or a token.

use serde_json::Value;

use crate::helpers::{Backend, TestApp, TestUser};

pub(crate) use test_support::CapturedLog as Captured;

/// Captures, for this thread until the guard drops, what the service logs at debug level in the
/// JSON form `AUTH_LOG_FORMAT=json` writes (telemetry.rs). Run the test on a current-thread
/// runtime so that every task of the app logs here.
pub(crate) fn json_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

async fn login_outcomes_are_audit_events_without_secrets(backend: Backend) {
    // Arrange: the service's JSON format (telemetry.rs), debug level, for this thread; the test
    // runs on a current-thread runtime, so every task of the app logs here.
    let (captured, _guard) = json_logs();
    let app = TestApp::spawn(backend).await;
    let user = TestUser::random();
    user.register(&app).await;
    let unknown_email = format!("nobody-{}@example.com", uuid::Uuid::new_v4().simple());
    let wrong_password = "a wrong password of some length";

    // Act: a success, a wrong password, an unknown email.
    let tokens = user.login(&app).await;
    assert_eq!(app.login(&user.email, wrong_password).await.status, 401);
    assert_eq!(app.login(&unknown_email, wrong_password).await.status, 401);

    // Assert: one event per outcome, with the outcome and the ids.
    let events = captured.json_lines();
    let named = |name: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| e["event"].as_str() == Some(name))
            .collect()
    };
    let user_id = app.user(&user.email).await.id;
    let successes = named("login");
    assert_eq!(successes.len(), 1, "{events:#?}");
    let success = successes[0];
    assert_eq!(success["level"], "INFO");
    assert_eq!(success["session_id"].as_str(), Some(tokens.sid().as_str()));
    assert!(
        success.to_string().contains(&user_id),
        "the user id is on the event's span: {success}"
    );
    let failures = named("login_failed");
    assert_eq!(failures.len(), 2, "{events:#?}");
    for failure in &failures {
        assert_eq!(failure["level"], "INFO");
        assert!(
            failure["failures"].is_number(),
            "the failure count: {failure}"
        );
    }

    // No secret and no email anywhere in what was logged.
    let text = captured.text();
    for (what, secret) in [
        ("email", user.email.as_str()),
        (
            "the email's local part",
            user.email.split('@').next().unwrap(),
        ),
        ("unknown email", unknown_email.as_str()),
        ("password", user.password.as_str()),
        ("wrong password", wrong_password),
        ("access token", tokens.access.as_str()),
        ("refresh token", tokens.refresh.as_str()),
    ] {
        assert!(!text.contains(secret), "the logs show the {what}:\n{text}");
    }
}

mod sqlite {
    #[tokio::test]
    async fn login_outcomes_are_audit_events_without_secrets() {
        super::login_outcomes_are_audit_events_without_secrets(super::Backend::Sqlite).await;
    }
}

mod postgres {
    #[tokio::test]
    async fn login_outcomes_are_audit_events_without_secrets() {
        super::login_outcomes_are_audit_events_without_secrets(super::Backend::Postgres).await;
    }
}

mod mysql {
    #[tokio::test]
    async fn login_outcomes_are_audit_events_without_secrets() {
        super::login_outcomes_are_audit_events_without_secrets(super::Backend::Mysql).await;
    }
}
