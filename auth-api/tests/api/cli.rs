//! The `auth-api` binary's operator commands, run as an operator would, on each store.

use std::process::{Command, Output};

use auth_api::store::{ExternalIdentity, InsertIdentity, InsertPasswordlessUser};
use axum::http::StatusCode;

use crate::helpers::{claims_of, Backend, TestApp, TestDb, TestUser};

/// Runs `auth-api` with the test apps' key-encryption key.
fn auth_api(database_url: &str, args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_auth-api"))
        .args(args)
        .env("AUTH_DATABASE_URL", database_url)
        .env("AUTH_KEY_ENCRYPTION_KEYS", test_support::TEST_KEK)
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

async fn operator_commands_manage_roles_users_and_keys(backend: Backend) {
    let (db, url) = TestDb::create(backend).await;
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

    assert_eq!(app.user(&user.email).await.email_verified_at, None);
    let verified = stdout(&auth_api(&url, &["users", "verify-email", &user.email]));
    assert!(verified.contains("email verified"), "{verified}");
    assert_eq!(
        claims_of(&user.login(&app).await.access)["email_verified"],
        true
    );
    let again = stdout(&auth_api(&url, &["users", "verify-email", &user.email]));
    assert!(again.contains("already verified"), "{again}");

    let rotated = stdout(&auth_api(&url, &["keys", "rotate", "--alg", "EdDSA"]));
    assert!(
        rotated.contains("new EdDSA key")
            && rotated.contains("pending")
            && rotated.contains("active"),
        "{rotated}"
    );
    let listed = stdout(&auth_api(&url, &["keys", "list"]));
    for column in ["ALG", "KEK", "ES256", "EdDSA", "test-kek"] {
        assert!(listed.contains(column), "{column} missing: {listed}");
    }
    app.state.ring.reload().await.unwrap();
    assert_eq!(app.state.ring.snapshot().keys().len(), 2);

    let signed_by_the_old_key = user.login(&app).await;
    assert_eq!(
        app.validate(&signed_by_the_old_key.access).await.status,
        StatusCode::OK
    );
    let signer = app.signer_kid();
    let revoked = stdout(&auth_api(&url, &["keys", "revoke", &signer]));
    assert!(
        revoked.contains(&format!("key {signer} revoked")),
        "{revoked}"
    );
    // This app's cached ring still holds the key: /validate reads its state from the database.
    let refused = app.validate(&signed_by_the_old_key.access).await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "refused at once, by another process"
    );

    // From here on, tokens signed by the replacement key.
    app.state.ring.reload().await.unwrap();
    let fresh = user.login(&app).await;
    assert_eq!(app.validate(&fresh.access).await.status, StatusCode::OK);
    auth_api(&url, &["users", "logout", &user.email]);
    assert_eq!(
        app.validate(&fresh.access).await.status,
        StatusCode::UNAUTHORIZED
    );

    // SECURITY.md G 73: list a user's sessions and end one of them.
    let phone = user.login(&app).await;
    let laptop = user.login(&app).await;
    let sessions = stdout(&auth_api(&url, &["users", "sessions", &user.email]));
    assert!(
        sessions.contains(&phone.sid()) && sessions.contains(&laptop.sid()),
        "{sessions}"
    );
    assert!(
        !sessions.contains(&fresh.sid()),
        "ended sessions are not listed"
    );
    // Session ids are compared exactly on every store (MySQL's default collations would match
    // another case): the id in upper case names no session.
    let upper = Command::new(env!("CARGO_BIN_EXE_auth-api"))
        .args(["users", "end-session", &phone.sid().to_uppercase()])
        .env("AUTH_DATABASE_URL", &url)
        .env("AUTH_KEY_ENCRYPTION_KEYS", test_support::TEST_KEK)
        .output()
        .unwrap();
    assert!(
        !upper.status.success(),
        "an id in another case ended a session"
    );
    assert_eq!(app.validate(&phone.access).await.status, StatusCode::OK);
    auth_api(&url, &["users", "end-session", &phone.sid()]);
    assert_eq!(
        app.validate(&phone.access).await.status,
        StatusCode::UNAUTHORIZED
    );
    let kept = app.validate(&laptop.access).await;
    assert_eq!(kept.status, StatusCode::OK, "{kept:?}");
    let sessions = stdout(&auth_api(&url, &["users", "sessions", &user.email]));
    assert!(!sessions.contains(&phone.sid()), "{sessions}");
    let again = Command::new(env!("CARGO_BIN_EXE_auth-api"))
        .args(["users", "end-session", &phone.sid()])
        .env("AUTH_DATABASE_URL", &url)
        .env("AUTH_KEY_ENCRYPTION_KEYS", test_support::TEST_KEK)
        .output()
        .unwrap();
    assert!(
        !again.status.success(),
        "ending an ended session is an error"
    );
}

/// Runs `auth-api` expecting it to fail; its standard error.
fn auth_api_fails(database_url: &str, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_auth-api"))
        .args(args)
        .env("AUTH_DATABASE_URL", database_url)
        .env("AUTH_KEY_ENCRYPTION_KEYS", test_support::TEST_KEK)
        .env("RUST_LOG", "warn")
        .output()
        .expect("cannot run auth-api");
    assert!(
        !output.status.success(),
        "auth-api {args:?} succeeded: {}",
        stdout(&output)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// An identity at `provider` for `user_id`, linked at `now` (as a sign-in would write it).
fn identity(provider: &str, subject: &str, user_id: &str, now: i64) -> ExternalIdentity {
    ExternalIdentity {
        provider: provider.to_owned(),
        subject: subject.to_owned(),
        issuer: Some(format!("https://{provider}.example")),
        user_id: user_id.to_owned(),
        email: Some(format!("{subject}@idp.example")),
        email_verified: provider == "google",
        created_at: now,
        last_used_at: now,
    }
}

/// `users identities` lists a user's identities; `users unlink` removes one while the user keeps
/// a way in, refuses the last one of a user without a password, and asks which one when the
/// user has several at the provider (issue 14).
async fn operators_list_and_unlink_external_identities(backend: Backend) {
    // Arrange: Ada signed up through Google and has GitHub linked too; Bob has a password and
    // two GitHub identities.
    let (db, url) = TestDb::create(backend).await;
    auth_api(&url, &["migrate"]);
    let app = TestApp::on_database(db, url.clone(), |_| {}).await;
    let store = &app.state.store;
    let now = app.clock.now();
    let ada = TestUser::random();
    let ada_id = uuid::Uuid::new_v4().to_string();
    let created = store
        .insert_passwordless_user(
            &ada.email,
            &["user"],
            &identity("google", "ada-google", &ada_id, now),
        )
        .await
        .unwrap();
    assert_eq!(created, InsertPasswordlessUser::Created);
    let later = identity("github", "ada-github", &ada_id, now + 60);
    assert_eq!(
        store.insert_identity(&later).await.unwrap(),
        InsertIdentity::Created
    );
    let bob = TestUser::random();
    bob.register(&app).await;
    let bob_id = app.user(&bob.email).await.id;
    for subject in ["-bob-1", "bob-2"] {
        let linked = identity("github", subject, &bob_id, now);
        assert_eq!(
            store.insert_identity(&linked).await.unwrap(),
            InsertIdentity::Created
        );
    }

    // Act and assert: the listing, oldest first.
    let listed = stdout(&auth_api(&url, &["users", "identities", &ada.email]));
    let rows: Vec<&str> = listed.lines().collect();
    assert_eq!(rows.len(), 3, "{listed}");
    for column in ["PROVIDER", "SUBJECT", "EMAIL", "VERIFIED", "LAST USED"] {
        assert!(rows[0].contains(column), "{column} missing: {listed}");
    }
    let linked_at = time::OffsetDateTime::from_unix_timestamp(now)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    assert!(
        rows[1].starts_with("google")
            && rows[1].contains("ada-google@idp.example")
            && rows[1].contains(" yes ")
            && rows[1].contains(&linked_at),
        "{listed}"
    );
    assert!(
        rows[2].starts_with("github") && rows[2].contains(" no "),
        "{listed}"
    );
    let nobody = auth_api_fails(&url, &["users", "identities", "nobody@example.com"]);
    assert!(nobody.contains("no user with email"), "{nobody}");

    // Unlinking: refused for a provider the user has no identity at, done while another way
    // in is left, refused for the last one.
    let elsewhere = auth_api_fails(&url, &["users", "unlink", &ada.email, "gitlab"]);
    assert!(elsewhere.contains("no identity at gitlab"), "{elsewhere}");
    let unlinked = Command::new(env!("CARGO_BIN_EXE_auth-api"))
        .args(["users", "unlink", &ada.email, "github"])
        .env("AUTH_DATABASE_URL", &url)
        .env("AUTH_KEY_ENCRYPTION_KEYS", test_support::TEST_KEK)
        .env("AUTH_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(unlinked.status.success(), "{unlinked:?}");
    assert!(stdout(&unlinked).contains("unlinked"), "{unlinked:?}");
    let log = String::from_utf8_lossy(&unlinked.stderr);
    let event: serde_json::Value = log
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .find(|event: &serde_json::Value| event["event"] == "identity_unlinked")
        .unwrap_or_else(|| panic!("no identity_unlinked event: {log}"));
    assert_eq!(event["user_id"], ada_id.as_str(), "{event}");
    assert_eq!(event["provider"], "github", "{event}");
    assert!(
        !log.contains(&ada.email),
        "an audit event names the email: {log}"
    );
    let last = auth_api_fails(&url, &["users", "unlink", &ada.email, "google"]);
    assert!(last.contains("last way to sign in"), "{last}");
    assert_eq!(
        store.identities_of(&ada_id).await.unwrap(),
        vec![identity("google", "ada-google", &ada_id, now)],
        "the last identity is kept"
    );

    // Bob has a password: both identities may go, each named by its subject (one begins with
    // `-`, as a provider's id may).
    let which = auth_api_fails(&url, &["users", "unlink", &bob.email, "github"]);
    assert!(
        which.contains("--subject") && which.contains("-bob-1") && which.contains("bob-2"),
        "{which}"
    );
    let unknown = auth_api_fails(
        &url,
        &[
            "users",
            "unlink",
            &bob.email,
            "github",
            "--subject",
            "ada-github",
        ],
    );
    assert!(unknown.contains("no identity \"ada-github\""), "{unknown}");
    auth_api(
        &url,
        &[
            "users",
            "unlink",
            &bob.email,
            "github",
            "--subject",
            "-bob-1",
        ],
    );
    auth_api(&url, &["users", "unlink", &bob.email, "github"]);
    assert_eq!(store.identities_of(&bob_id).await.unwrap(), vec![]);
    let listed = stdout(&auth_api(&url, &["users", "identities", &bob.email]));
    assert_eq!(listed.lines().count(), 1, "the header only: {listed}");
    assert_eq!(
        app.login(&bob.email, &bob.password).await.status,
        StatusCode::OK,
        "the password still signs in"
    );
}

mod operator {
    use super::*;

    crate::on_every_backend!(
        operator_commands_manage_roles_users_and_keys,
        operators_list_and_unlink_external_identities,
    );
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
fn rotate_refuses_an_unknown_algorithm_and_new_kek_prints_a_usable_key() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("auth.db").display());
    let bad = Command::new(env!("CARGO_BIN_EXE_auth-api"))
        .args(["keys", "rotate", "--alg", "HS512"])
        .env("AUTH_DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("ES256, EdDSA, RS256 or HS256"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let printed = stdout(&auth_api(&url, &["keys", "new-kek", "--id", "prod-1"]));
    let kek: auth_api::kek::KeyEncryptionKeys = printed.trim().parse().unwrap();
    assert_eq!(kek.current_id(), "prod-1");
    assert!(
        !dir.path().join("auth.db").exists(),
        "new-kek touches no database"
    );
}

#[test]
fn configuration_errors_of_issue_8_name_their_variables() {
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[("AUTH_JWT_ISSUER", "auth-service")], "AUTH_JWT_ISSUER"),
        (&[("AUTH_SIGNING_ALG", "none")], "AUTH_SIGNING_ALG"),
        (
            &[("AUTH_JWKS_MAX_AGE_SECS", "600")],
            "AUTH_KEY_PUBLISH_DELAY_SECS",
        ),
        (
            &[(
                "AUTH_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/postgres",
            )],
            "AUTH_KEY_ENCRYPTION_KEYS",
        ),
    ];
    for (vars, name) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_auth-api"))
            .args(["keys", "list"])
            .envs(vars.iter().copied())
            .env_remove("AUTH_KEY_ENCRYPTION_KEYS")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{vars:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(name), "{vars:?}: {stderr}");
    }
}

/// The CLI keeps what the Admin API refuses for an operator with database access, with a
/// warning (HS256 on an asymmetric ring), and revokes a role granted before the naming rule
/// (admin review, findings 2 and 9).
#[tokio::test]
async fn revoke_role_takes_a_legacy_name_and_an_hs256_rotation_warns() {
    let (db, url) = TestDb::create(Backend::Sqlite).await;
    auth_api(&url, &["migrate"]);
    let app = TestApp::on_database(db, url.clone(), |_| {}).await;
    let user = TestUser::random();
    user.register(&app).await;
    let id = app.user(&user.email).await.id;
    let raw = app.raw().await;
    sqlx::query("INSERT INTO user_roles (user_id, role) VALUES ($1, 'legacy role')")
        .bind(&id)
        .execute(&raw.pool)
        .await
        .unwrap();
    raw.close().await;
    let revoked = stdout(&auth_api(
        &url,
        &["users", "revoke-role", &user.email, "legacy role"],
    ));
    assert!(revoked.contains("role revoked"), "{revoked}");
    assert_eq!(app.state.store.roles(&id).await.unwrap(), ["user"]);

    let rotated = auth_api(&url, &["keys", "rotate", "--alg", "HS256"]);
    assert!(
        stdout(&rotated).contains("new HS256 key"),
        "{}",
        stdout(&rotated)
    );
    let stderr = String::from_utf8_lossy(&rotated.stderr);
    assert!(
        stderr.contains("warning") && stderr.contains("JWKS"),
        "{stderr}"
    );
    let plain = auth_api(&url, &["keys", "rotate", "--alg", "EdDSA"]);
    assert!(
        !String::from_utf8_lossy(&plain.stderr).contains("warning"),
        "only a downgrade warns"
    );
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

/// Runs `auth-api serve` with debug logs through a whole session and checks that its output
/// never shows the password, a token, the internal token or a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_logs_never_show_a_secret() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("auth.db").display());
    let internal_token = "an-internal-token-that-must-never-be-logged";
    let mut child = Command::new(env!("CARGO_BIN_EXE_auth-api"))
        .arg("serve")
        .env("AUTH_DATABASE_URL", &url)
        .env("AUTH_LISTEN", "127.0.0.1:0")
        .env("AUTH_INTERNAL_LISTEN", "127.0.0.1:0")
        .env("AUTH_GRPC_LISTEN", "127.0.0.1:0")
        .env("AUTH_INTERNAL_TOKEN", internal_token)
        .env("AUTH_BCRYPT_COST", "10")
        .env("AUTH_PASSWORD_PEPPER", "a-pepper-that-must-never-be-logged")
        // HMAC keys, so that /internal/keys hands over a secret to look for in the logs.
        .env("AUTH_SIGNING_ALG", "HS256")
        .env("AUTH_LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut log = Vec::new();
    let address = |log: &[String], message: &str| {
        log.iter().find(|l| l.contains(message)).and_then(|l| {
            let value: serde_json::Value = serde_json::from_str(l).ok()?;
            value["addr"].as_str().map(str::to_owned)
        })
    };
    let (public, internal) = loop {
        let line = lines_rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the server did not start");
        log.push(line);
        if let (Some(p), Some(i)) = (
            address(&log, "public API listening"),
            address(&log, "internal API listening"),
        ) {
            break (p, i);
        }
    };

    let client = reqwest::Client::new();
    let password = "a password that must never be logged";
    let credentials = serde_json::json!({"email": "logs@example.com", "password": password});
    client
        .post(format!("http://{public}/signup"))
        .json(&credentials)
        .send()
        .await
        .unwrap();
    let login: serde_json::Value = client
        .post(format!("http://{public}/login"))
        .json(&credentials)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = login["access_token"].as_str().unwrap().to_owned();
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();
    client
        .post(format!("http://{public}/login"))
        .json(&serde_json::json!({"email": "logs@example.com", "password": "wrong one"}))
        .send()
        .await
        .unwrap();
    client
        .get(format!("http://{public}/validate?access_token={access}"))
        .send()
        .await
        .unwrap();
    client
        .get(format!("http://{public}/validate"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    let refreshed: serde_json::Value = client
        .post(format!("http://{public}/refresh"))
        .json(&serde_json::json!({"refresh_token": refresh}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys: serde_json::Value = client
        .get(format!("http://{internal}/internal/keys"))
        .bearer_auth(internal_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    client
        .post(format!("http://{public}/logout"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();

    let _ = child.kill();
    let _ = child.wait();
    while let Ok(line) = lines_rx.recv_timeout(std::time::Duration::from_secs(2)) {
        log.push(line);
    }
    let log = log.join("\n");
    // The audit trail: one structured event per security-relevant step, as JSON.
    for event in ["signup", "login", "login_failed", "logout"] {
        assert!(
            log.contains(&format!("\"event\":\"{event}\"")),
            "audit event {event} missing: {log}"
        );
    }
    let key = keys["keys"][0]["k"].as_str().unwrap();
    // Without AUTH_KEY_ENCRYPTION_KEYS, the key-encryption key is in a file beside the database.
    let kek_file = std::fs::read_to_string(dir.path().join("auth.db.kek")).unwrap();
    let kek = kek_file.trim().split_once(':').unwrap().1;
    assert!(
        log.contains("AUTH_KEY_ENCRYPTION_KEYS is not set"),
        "the key file is announced: {log}"
    );
    let secrets = [
        kek,
        password,
        "wrong one",
        "a-pepper-that-must-never-be-logged",
        internal_token,
        &access,
        &refresh,
        refreshed["refresh_token"].as_str().unwrap(),
        key,
    ];
    for secret in secrets {
        assert!(!log.contains(secret), "a secret reached the log: {secret}");
    }
}

/// `auth-api healthcheck`, the probe of the distroless image: exit 0 when `/readyz` answers 200
/// on AUTH_LISTEN's port (at loopback when the server listens on every address), 1 otherwise,
/// saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_probes_readyz_on_the_listen_port() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = app.router.clone();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    let probe = |listen: String, args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_auth-api"))
                .arg("healthcheck")
                .args(args)
                .env("AUTH_LISTEN", listen)
                .env("RUST_LOG", "warn")
                .output()
                .expect("cannot run auth-api")
        })
    };
    let ready = probe(format!("0.0.0.0:{port}"), vec![]).await.unwrap();
    assert!(
        ready.status.success(),
        "{}",
        String::from_utf8_lossy(&ready.stderr)
    );
    // An answer that is not 200 (a 404 here, as a 503 would be), and a port nobody listens on.
    let wrong_path = probe(
        "127.0.0.1:8080".to_owned(),
        vec![
            "--url".to_owned(),
            format!("http://127.0.0.1:{port}/nowhere"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(wrong_path.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong_path.stderr).contains("404"));
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let down = probe(format!("127.0.0.1:{closed_port}"), vec![])
        .await
        .unwrap();
    assert_eq!(down.status.code(), Some(1));
}
