//! The `auth-api` binary's operator commands, run as an operator would, on a SQLite file.

use std::process::{Command, Output};

use axum::http::StatusCode;

use crate::helpers::{claims_of, Backend, TestApp, TestDb, TestUser};

fn auth_api(database_url: &str, args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_auth-api"))
        .args(args)
        .env("AUTH_DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("cannot run auth-api");
    assert!(
        output.status.success(),
        "auth-api {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_manage_roles_users_and_keys() {
    let (db, url) = TestDb::create(Backend::Sqlite).await;
    auth_api(&url, &["migrate"]);
    let app = TestApp::on_database(db, url.clone(), |_| {}).await;
    let user = TestUser::random();
    user.register(&app).await;

    auth_api(
        &url,
        &["users", "grant-role", &user.email.to_uppercase(), "admin"],
    );
    let tokens = user.login(&app).await;
    assert_eq!(
        claims_of(&tokens.access)["roles"],
        serde_json::json!(["admin", "user"])
    );
    let listed = stdout(&auth_api(&url, &["users", "list"]));
    assert!(
        listed.contains(&user.email) && listed.contains("admin,user"),
        "{listed}"
    );

    auth_api(&url, &["users", "revoke-role", &user.email, "admin"]);
    assert_eq!(
        claims_of(&user.login(&app).await.access)["roles"],
        serde_json::json!(["user"])
    );

    auth_api(&url, &["users", "disable", &user.email]);
    assert_eq!(
        app.validate(&tokens.access).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login(&user.email, &user.password).await.status,
        StatusCode::FORBIDDEN
    );
    auth_api(&url, &["users", "enable", &user.email]);
    assert_eq!(
        app.login(&user.email, &user.password).await.status,
        StatusCode::OK
    );

    let rotated = stdout(&auth_api(&url, &["keys", "rotate"]));
    assert!(
        rotated.contains("pending") && rotated.contains("active"),
        "{rotated}"
    );
    app.state.ring.reload().await.unwrap();
    assert_eq!(app.state.ring.snapshot().keys().len(), 2);
}

#[test]
fn invalid_configuration_names_the_variable() {
    let output = Command::new(env!("CARGO_BIN_EXE_auth-api"))
        .args(["migrate"])
        .env("AUTH_ACCESS_TOKEN_TTL_SECS", "fifteen")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("AUTH_ACCESS_TOKEN_TTL_SECS"), "{stderr}");
}

#[test]
fn grant_role_refuses_role_names_that_break_headers() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("auth.db").display());
    let output = Command::new(env!("CARGO_BIN_EXE_auth-api"))
        .args(["users", "grant-role", "a@example.com", "admin,root"])
        .env("AUTH_DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(!output.status.success());
}
