//! Request correlation across the gateway (issue 16): the `x-request-id` Envoy makes at the edge
//! is in its access log line and on every log line and audit event auth-api writes for that
//! request, so one id follows a request from the gateway to the audit trail.

use std::time::{Duration, Instant};

use e2e::{gateway::PASSWORD, Stack, StackOptions};
use serde_json::{json, Value};
use test_support::CapturedLog;
use tracing_subscriber::{filter::Targets, layer::SubscriberExt as _};

/// The request id of a JSON line: its outermost span's (the request's).
fn request_id(line: &Value) -> Option<&str> {
    line["spans"].get(0)?.get("request_id")?.as_str()
}

/// The access log line (JSON, envoy/dev.yaml) of the request `id`, once Envoy has written it.
async fn access_log_line(stack: &Stack, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = stack.gateway.envoy.log();
        let found = log
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|line| line["request_id"] == id);
        if let Some(line) = found {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no access log line for {id}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_login_is_followed_by_its_request_id_from_the_access_log_to_the_audit_event() {
    // Arrange: auth-api's lines for the whole process (its tasks run on every worker thread),
    // in its JSON format; a user to log in.
    let captured = CapturedLog::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::registry()
        .with(auth_api::telemetry::json_lines(move || writer.clone()))
        .with("auth_api=debug".parse::<Targets>().unwrap());
    tracing::subscriber::set_global_default(subscriber).expect("another subscriber is set");
    let stack = Stack::start(StackOptions::default()).await;
    let (email, _) = stack.gateway.new_user().await;

    // Act: a login through the gateway (with a query, which the access log must not show).
    let response = stack
        .gateway
        .client
        .post(stack.gateway.url("/auth/login?access_token=never-logged"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .expect("the gateway does not answer");

    // Assert: the id Envoy made is returned, ...
    assert_eq!(response.status(), 200);
    let id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("no x-request-id on the answer")
        .to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "Envoy's UUID: {id}");
    // ... on the request's access log line, path without its query, ...
    let access = access_log_line(&stack, &id).await;
    assert_eq!(access["method"], "POST", "{access}");
    assert_eq!(access["path"], "/auth/login", "{access}");
    assert_eq!(access["status"], 200, "{access}");
    assert_eq!(access["upstream_cluster"], "auth_api", "{access}");
    let log = stack.gateway.envoy.log();
    assert!(!log.contains("never-logged"), "a query is logged:\n{log}");
    // ... and on each line auth-api wrote for it: the request line and the login audit event.
    // Every line written inside a request names its request, and each login its own.
    let lines = captured.json_lines();
    let ours: Vec<&Value> = lines
        .iter()
        .filter(|l| request_id(l) == Some(id.as_str()))
        .collect();
    assert!(
        ours.iter()
            .any(|l| l["event"] == "login" && l["level"] == "INFO"),
        "no login audit event with {id}: {ours:#?}"
    );
    assert!(
        ours.iter()
            .any(|l| l["message"] == "request" && l["status"] == 200),
        "no request line with {id}: {ours:#?}"
    );
    for line in &ours {
        assert_eq!(line["spans"][0]["route"], "/login", "{line}");
    }
    for line in lines.iter().filter(|l| l["spans"].get(0).is_some()) {
        assert!(
            request_id(line).is_some_and(|id| !id.is_empty()),
            "a line of a request without its id: {line}"
        );
    }
    let logins: Vec<Option<&str>> = lines
        .iter()
        .filter(|l| l["event"] == "login")
        .map(request_id)
        .collect();
    assert_eq!(
        logins.len(),
        2,
        "the user's first login and ours: {logins:?}"
    );
    assert_ne!(logins[0], logins[1]);
}
