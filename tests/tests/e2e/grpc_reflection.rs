//! The gRPC API to a generic client with no `.proto` at hand (what `grpcurl` and Postman do):
//! Python's `grpcio` with `grpcio-reflection` lists the services by server reflection, resolves
//! `auth.v1.AuthService`'s messages (and `google/protobuf/struct.proto`, which they import) from
//! the server's descriptors, and calls it (`tests/interop/grpc_reflection_tool.py`; `cargo xtask
//! test` installs both packages into `.venv`).

use std::{net::SocketAddr, process::Command};

use auth_api::{App, Config};
use e2e::{envoy::workspace_root, Backend};
use serde_json::Value;
use test_support::TestDb;
use tokio::sync::oneshot;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generic_client_lists_and_calls_the_api_by_reflection() {
    let (_db, url) = TestDb::create(Backend::Sqlite).await;
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let config = Config {
        database_url: url,
        listen: loopback,
        grpc_listen: Some(loopback),
        bcrypt_cost: 4,
        key_encryption_keys: Some(test_support::TEST_KEK.parse().unwrap()),
        ..Config::default()
    };
    let app = App::build(config).await.expect("auth-api does not start");
    let grpc = app.grpc_addr().unwrap().expect("the gRPC listener is on");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));

    let root = workspace_root();
    let python = root.join(".venv/bin/python");
    let tool = root.join("tests/interop/grpc_reflection_tool.py");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .arg(tool)
            .arg(grpc.to_string())
            .args(["reflection@example.com", "correct horse battery staple"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()))
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "the reflection client failed (`cargo xtask test` installs grpcio and grpcio-reflection \
         into .venv): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    let services: Vec<&str> = answer["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for service in ["auth.v1.AuthService", "grpc.health.v1.Health"] {
        assert!(
            services.contains(&service),
            "{service} not listed: {services:?}"
        );
    }
    assert_eq!(
        answer["methods"],
        serde_json::json!([
            "Signup",
            "Login",
            "CompleteMfaLogin",
            "Refresh",
            "ExchangeSignInCode",
            "Logout",
            "ChangePassword",
            "EnrollTotp",
            "ConfirmTotp",
            "DisableTotp",
            "VerifyEmail",
            "ResendVerification",
            "RequestPasswordReset",
            "ResetPassword",
            "Validate"
        ])
    );
    assert_eq!(answer["token_type"], "Bearer");
    assert_eq!(answer["validated_email"], "reflection@example.com");
    assert!(answer["claims_sub"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(answer["wrong_password"], "UNAUTHENTICATED");

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
