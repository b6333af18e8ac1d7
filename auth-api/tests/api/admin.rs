//! The Admin API (`/admin/v1/…` on the internal listener): every route behind the internal
//! token, each action's success and refusals, its effect where it matters (refresh, `/validate`,
//! the revocation feed, `/internal/keys`), its audit events, and its OpenAPI document.

use axum::{
    body::Body,
    http::{header, Method, Request, StatusCode},
};
use serde_json::{json, Value};

use crate::{
    helpers::{
        kids, send, Backend, TestApp, TestResponse, TestUser, Tokens, ADMIN_TOKEN, INTERNAL_TOKEN,
    },
    on_every_store, on_server_backends,
};

/// Every route of the Admin API, with ids that need not exist: what the token test calls and
/// what the OpenAPI document must describe.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/admin/v1/users"),
    ("GET", "/admin/v1/users/{id}"),
    ("POST", "/admin/v1/users/{id}/disable"),
    ("POST", "/admin/v1/users/{id}/enable"),
    ("PUT", "/admin/v1/users/{id}/roles/{role}"),
    ("DELETE", "/admin/v1/users/{id}/roles/{role}"),
    ("POST", "/admin/v1/users/{id}/unlock"),
    ("POST", "/admin/v1/users/{id}/verify-email"),
    ("POST", "/admin/v1/users/{id}/logout"),
    ("GET", "/admin/v1/users/{id}/sessions"),
    ("DELETE", "/admin/v1/sessions/{id}"),
    ("GET", "/admin/v1/keys"),
    ("POST", "/admin/v1/keys/rotate"),
    ("POST", "/admin/v1/keys/{kid}/revoke"),
    ("GET", "/admin/v1/openapi.json"),
];

/// A user id that no user has.
const NOBODY: &str = "00000000-0000-4000-8000-000000000000";

/// A call to the internal router with `authorization` (none when `None`) and a JSON body.
async fn call_as(
    app: &TestApp,
    method: &str,
    path: &str,
    body: Option<Value>,
    authorization: Option<&str>,
) -> TestResponse {
    let mut builder = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(path);
    if let Some(value) = authorization {
        builder = builder.header(header::AUTHORIZATION, value);
    }
    let body = match body {
        Some(json) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(json.to_string())
        }
        None => Body::empty(),
    };
    send(&app.internal, builder.body(body).unwrap()).await
}

/// A call with the internal token.
async fn call(app: &TestApp, method: &str, path: &str, body: Option<Value>) -> TestResponse {
    call_as(
        app,
        method,
        path,
        body,
        Some(&format!("Bearer {ADMIN_TOKEN}")),
    )
    .await
}

/// Asserts the status and, for an error, its code.
#[track_caller]
fn expect(response: &TestResponse, status: StatusCode, error: Option<&str>) {
    assert_eq!(response.status, status, "{}", response.body);
    if let Some(code) = error {
        assert_eq!(response.error(), code, "{}", response.body);
    }
}

/// A registered, logged-in user and their id.
async fn user_with_session(app: &TestApp) -> (TestUser, Tokens, String) {
    let (user, tokens) = app.logged_in_user().await;
    let id = app.user(&user.email).await.id;
    (user, tokens, id)
}

/// The session of `tokens` has ended: its refresh token and its access token are refused.
async fn assert_session_ended(app: &TestApp, tokens: &Tokens) {
    let refreshed = app.refresh(&tokens.refresh).await;
    expect(&refreshed, StatusCode::UNAUTHORIZED, Some("invalid_grant"));
    let validated = app.validate(&tokens.access).await;
    expect(&validated, StatusCode::UNAUTHORIZED, Some("invalid_token"));
}

/// The `sub`s the revocation feed lists for user revocations.
async fn revoked_subs(app: &TestApp) -> Vec<String> {
    app.revocation_feed().await.body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["sub"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn every_admin_route_needs_the_admin_token() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for (method, template) in ROUTES {
        let path = template
            .replace("{id}", NOBODY)
            .replace("{role}", "admin")
            .replace("{kid}", "k1");
        for (authorization, code, reason) in [
            (None, "missing_token", "no token"),
            (Some("Bearer wrong-token"), "invalid_token", "a wrong token"),
            (
                Some(&format!("Bearer {INTERNAL_TOKEN}")),
                "invalid_token",
                "the gateway's internal token, which only reads",
            ),
            (
                Some("Basic dXNlcjpwYXNz"),
                "missing_token",
                "another scheme",
            ),
        ] {
            let response = call_as(&app, method, &path, None, authorization).await;
            assert_eq!(
                response.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path}, {reason}: {}",
                response.body
            );
            assert_eq!(response.error(), code, "{method} {path}, {reason}");
            assert!(
                response.header("www-authenticate").is_some(),
                "{method} {path}, {reason}: a challenge"
            );
        }
    }
}

/// Rotating the admin token without a gap: the old one opens the Admin API beside the new one
/// while `AUTH_ADMIN_TOKEN_PREVIOUS` names it, each such call is logged (the rotation is over
/// when those lines stop), and neither admin token opens the gateway's routes.
#[tokio::test(flavor = "current_thread")]
async fn the_previous_admin_token_works_until_it_is_dropped() {
    const OLD: &str = "the-old-admin-token-0123456789abcdef0123";
    let (captured, _guard) = crate::audit::json_logs();
    let rotating = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.admin_token_previous = Some(OLD.to_owned().into());
    })
    .await;
    for (token, logged) in [(ADMIN_TOKEN, 0), (OLD, 1)] {
        let before = previous_used(&captured);
        assert_eq!(list_users_as(&rotating, token).await.status, StatusCode::OK);
        assert_eq!(previous_used(&captured) - before, logged, "{token}");
        let keys = rotating
            .get_internal("/internal/keys", Some(&format!("Bearer {token}")))
            .await;
        assert_eq!(
            keys.status,
            StatusCode::UNAUTHORIZED,
            "{token} is no gateway's"
        );
    }
    let close = list_users_as(&rotating, &format!("{OLD}x")).await;
    assert_eq!(close.error(), "invalid_token");
    assert!(
        !captured.text().contains(OLD),
        "a token is never logged: {}",
        captured.text()
    );
    let rotated = TestApp::spawn(Backend::Sqlite).await;
    assert_eq!(
        list_users_as(&rotated, OLD).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// `GET /admin/v1/users` with `token`.
async fn list_users_as(app: &TestApp, token: &str) -> TestResponse {
    let authorization = format!("Bearer {token}");
    call_as(app, "GET", "/admin/v1/users", None, Some(&authorization)).await
}

/// How many `admin_token_previous_used` lines `captured` holds.
fn previous_used(captured: &crate::audit::Captured) -> usize {
    captured
        .json_lines()
        .iter()
        .filter(|line| line["event"] == "admin_token_previous_used")
        .count()
}

#[tokio::test]
async fn unknown_admin_paths_and_methods_answer_in_json() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for (method, path, status, code) in [
        (
            "GET",
            "/admin/v1/nothing",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        ("GET", "/admin/v2/users", StatusCode::NOT_FOUND, "not_found"),
        (
            "PATCH",
            "/admin/v1/users",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "GET",
            "/admin/v1/keys/rotate",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        // Not UTF-8 once percent-decoded: a client's mistake, not ours.
        (
            "GET",
            "/admin/v1/users/%FF",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "GET",
            "/admin/v1/users/'%20OR%201=1",
            StatusCode::NOT_FOUND,
            "user_not_found",
        ),
    ] {
        let response = call(&app, method, path, None).await;
        assert_eq!(
            response.status, status,
            "{method} {path}: {}",
            response.body
        );
        assert_eq!(response.error(), code, "{method} {path}");
    }
}

#[tokio::test]
async fn the_admin_openapi_document_lists_every_admin_route() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let doc = call(&app, "GET", "/admin/v1/openapi.json", None).await;
    expect(&doc, StatusCode::OK, None);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc.body["paths"].as_object().unwrap();
    for (method, path) in ROUTES {
        let operation = &paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} is not documented"))[method.to_lowercase()];
        assert!(operation.is_object(), "{method} {path} is not documented");
        assert!(
            operation["responses"].get("401").is_some(),
            "{method} {path}: 401 is not documented"
        );
        // A path segment that is not UTF-8 is refused before the handler.
        if path.contains('{') {
            assert!(
                operation["responses"].get("400").is_some(),
                "{method} {path}: 400 is not documented"
            );
        }
        for param in operation["parameters"].as_array().into_iter().flatten() {
            if param["name"] == "id" || param["name"] == "after" {
                assert_eq!(
                    param["schema"]["format"], "uuid",
                    "{method} {path}: {param}"
                );
            }
        }
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        documented,
        ROUTES.len(),
        "a documented route the test does not know"
    );
    assert!(
        doc.body["components"]["securitySchemes"]["admin_token"].is_object(),
        "{}",
        doc.body["components"]
    );
    // Every `$ref` resolves, or a client generator fails.
    let text = doc.body.to_string();
    for reference in text.split("\"$ref\":\"").skip(1) {
        let name = reference
            .split('"')
            .next()
            .unwrap()
            .trim_start_matches("#/components/schemas/");
        assert!(
            doc.body["components"]["schemas"][name].is_object(),
            "{name} does not resolve"
        );
    }
    // The public document does not describe the Admin API.
    let public = app.get("/openapi.json", None).await;
    assert!(!public.body.to_string().contains("/admin/v1"));
    // The Admin API is not on the public listener at all.
    let response = app
        .get("/admin/v1/users", Some(&format!("Bearer {ADMIN_TOKEN}")))
        .await;
    assert_eq!(response.status, StatusCode::NOT_FOUND);
}

async fn users_are_listed_a_page_at_a_time_and_found_by_email(app: TestApp) {
    let mut ids = Vec::new();
    for _ in 0..3 {
        let user = TestUser::random();
        user.register(&app).await;
        ids.push(app.user(&user.email).await.id);
        // Creation times order the list: make them differ.
        app.advance(std::time::Duration::from_secs(1));
    }

    let first = call(&app, "GET", "/admin/v1/users?limit=2", None).await;
    expect(&first, StatusCode::OK, None);
    let listed = |page: &TestResponse| -> Vec<String> {
        page.body["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(listed(&first), ids[..2]);
    let next = first.str("next");
    assert_eq!(next, ids[1]);
    let second = call(
        &app,
        "GET",
        &format!("/admin/v1/users?limit=2&after={next}"),
        None,
    )
    .await;
    expect(&second, StatusCode::OK, None);
    assert_eq!(listed(&second), ids[2..]);
    assert!(second.body["next"].is_null(), "{}", second.body);
    let all = call(&app, "GET", "/admin/v1/users", None).await;
    assert_eq!(listed(&all), ids, "the default page holds them all");
    let user = &all.body["users"][0];
    assert_eq!(user["roles"], json!(["user"]));
    assert_eq!(user["disabled"], false);
    assert!(
        user["created_at"].as_str().unwrap().ends_with('Z'),
        "{user}"
    );
    assert!(user.get("password_hash").is_none(), "{user}");

    let email = user["email"].as_str().unwrap().to_owned();
    let found = call(
        &app,
        "GET",
        &format!("/admin/v1/users?email=%20{}", email.to_uppercase()),
        None,
    )
    .await;
    expect(&found, StatusCode::OK, None);
    assert_eq!(listed(&found), ids[..1], "case-insensitive and trimmed");
    let none = call(
        &app,
        "GET",
        "/admin/v1/users?email=nobody@example.com",
        None,
    )
    .await;
    expect(&none, StatusCode::OK, None);
    assert_eq!(none.body["users"], json!([]));

    for (query, status, code, reason) in [
        (
            "limit=0",
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "limit 0",
        ),
        (
            "limit=501",
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "limit over 500",
        ),
        (
            "limit=-1",
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "negative limit",
        ),
        (
            "limit=abc",
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "limit not a number",
        ),
        (
            "limit=1&limit=2",
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "limit repeated",
        ),
        (
            &format!("after={NOBODY}"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "after names no user",
        ),
        (
            &format!("email={email}&after={}", ids[0]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "email with after",
        ),
        (
            "email=not-an-email",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_email",
            "an email that does not parse",
        ),
    ] {
        let response = call(&app, "GET", &format!("/admin/v1/users?{query}"), None).await;
        assert_eq!(response.status, status, "{reason}: {}", response.body);
        assert_eq!(response.error(), code, "{reason}");
    }
}

async fn unknown_users_sessions_and_keys_are_404(app: TestApp) {
    for (method, path, code) in [
        ("GET", format!("/admin/v1/users/{NOBODY}"), "user_not_found"),
        (
            "POST",
            format!("/admin/v1/users/{NOBODY}/disable"),
            "user_not_found",
        ),
        (
            "POST",
            format!("/admin/v1/users/{NOBODY}/enable"),
            "user_not_found",
        ),
        (
            "PUT",
            format!("/admin/v1/users/{NOBODY}/roles/admin"),
            "user_not_found",
        ),
        (
            "DELETE",
            format!("/admin/v1/users/{NOBODY}/roles/admin"),
            "user_not_found",
        ),
        (
            "POST",
            format!("/admin/v1/users/{NOBODY}/unlock"),
            "user_not_found",
        ),
        (
            "POST",
            format!("/admin/v1/users/{NOBODY}/verify-email"),
            "user_not_found",
        ),
        (
            "POST",
            format!("/admin/v1/users/{NOBODY}/logout"),
            "user_not_found",
        ),
        (
            "GET",
            format!("/admin/v1/users/{NOBODY}/sessions"),
            "user_not_found",
        ),
        (
            "GET",
            "/admin/v1/users/not-a-uuid".to_owned(),
            "user_not_found",
        ),
        (
            "DELETE",
            format!("/admin/v1/sessions/{NOBODY}"),
            "session_not_found",
        ),
        (
            "POST",
            "/admin/v1/keys/no-such-kid/revoke".to_owned(),
            "key_not_found",
        ),
    ] {
        let response = call(&app, method, &path, None).await;
        assert_eq!(
            response.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {}",
            response.body
        );
        assert_eq!(response.error(), code, "{method} {path}");
    }
}

async fn disabling_a_user_ends_their_tokens_at_once_and_in_the_feed(app: TestApp) {
    let (user, tokens, id) = user_with_session(&app).await;

    let disabled = call(&app, "POST", &format!("/admin/v1/users/{id}/disable"), None).await;
    expect(&disabled, StatusCode::OK, None);
    assert_eq!(disabled.body["disabled"], true);
    assert!(disabled.body["disabled_at"].is_string());

    assert_session_ended(&app, &tokens).await;
    assert!(
        revoked_subs(&app).await.contains(&id),
        "the gateway is told"
    );
    expect(
        &app.login(&user.email, &user.password).await,
        StatusCode::FORBIDDEN,
        Some("account_disabled"),
    );
    let again = call(&app, "POST", &format!("/admin/v1/users/{id}/disable"), None).await;
    expect(&again, StatusCode::OK, None);
    assert_eq!(again.body["disabled"], true, "idempotent");

    let enabled = call(&app, "POST", &format!("/admin/v1/users/{id}/enable"), None).await;
    expect(&enabled, StatusCode::OK, None);
    assert_eq!(enabled.body["disabled"], false);
    assert!(enabled.body["disabled_at"].is_null());
    let fresh = user.login(&app).await;
    expect(&app.validate(&fresh.access).await, StatusCode::OK, None);
    expect(
        &app.validate(&tokens.access).await,
        StatusCode::UNAUTHORIZED,
        Some("invalid_token"),
    );
}

async fn roles_are_granted_and_revoked_and_bad_role_names_are_422(app: TestApp) {
    let (user, _, id) = user_with_session(&app).await;
    let roles = format!("/admin/v1/users/{id}/roles");

    let granted = call(&app, "PUT", &format!("{roles}/admin"), None).await;
    expect(&granted, StatusCode::OK, None);
    assert_eq!(granted.body["roles"], json!(["admin", "user"]));
    let again = call(&app, "PUT", &format!("{roles}/admin"), None).await;
    assert_eq!(again.body["roles"], json!(["admin", "user"]), "idempotent");
    let tokens = user.login(&app).await;
    assert_eq!(
        crate::helpers::claims_of(&tokens.access)["roles"],
        json!(["admin", "user"])
    );

    let revoked = call(&app, "DELETE", &format!("{roles}/admin"), None).await;
    expect(&revoked, StatusCode::OK, None);
    assert_eq!(revoked.body["roles"], json!(["user"]));
    let again = call(&app, "DELETE", &format!("{roles}/admin"), None).await;
    expect(&again, StatusCode::OK, None);

    // Grant enforces the naming rule; revoke takes any name a store can hold (finding 9 of the
    // admin review: a role granted before the rule must stay removable).
    let long = "r".repeat(65);
    for (role, reason) in [
        ("a%2Cb", "a comma splits the gateway's header"),
        ("a%20b", "a space"),
        ("a%22b", "a quote"),
        ("r%C3%B4le", "not ASCII"),
        (long.as_str(), "65 characters"),
    ] {
        let response = call(&app, "PUT", &format!("{roles}/{role}"), None).await;
        expect(
            &response,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("invalid_role"),
        );
        let response = call(&app, "DELETE", &format!("{roles}/{role}"), None).await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{reason}: {}",
            response.body
        );
    }
    let too_long = "r".repeat(256);
    for role in [too_long.as_str(), "a%00b"] {
        let response = call(&app, "DELETE", &format!("{roles}/{role}"), None).await;
        expect(
            &response,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("invalid_role"),
        );
    }
    let legacy = "legacy role,\"x\"";
    let raw = app.raw().await;
    sqlx::query(raw.sql(
        "INSERT INTO user_roles (user_id, role) VALUES ($1, $2)",
        "INSERT INTO user_roles (user_id, role) VALUES (?, ?)",
    ))
    .bind(&id)
    .bind(legacy)
    .execute(&raw.pool)
    .await
    .unwrap();
    raw.close().await;
    let user_now = call(&app, "GET", &format!("/admin/v1/users/{id}"), None).await;
    assert_eq!(user_now.body["roles"], json!([legacy, "user"]));
    let revoked = call(
        &app,
        "DELETE",
        &format!("{roles}/legacy%20role%2C%22x%22"),
        None,
    )
    .await;
    expect(&revoked, StatusCode::OK, None);
    assert_eq!(
        revoked.body["roles"],
        json!(["user"]),
        "a legacy name is removable"
    );
}

/// Ids are UUIDs: anything else names nothing, and is answered as such on every store, without a
/// query (PostgreSQL refuses a NUL byte in text: it answered 500 before; admin review, finding 3).
async fn ids_that_are_not_uuids_name_nothing(app: TestApp) {
    let (_, tokens, id) = user_with_session(&app).await;
    for (method, path, status, code) in [
        ("GET", "/admin/v1/users/%00", 404, "user_not_found"),
        (
            "GET",
            "/admin/v1/users/a%00b/sessions",
            404,
            "user_not_found",
        ),
        ("POST", "/admin/v1/users/%00/disable", 404, "user_not_found"),
        ("POST", "/admin/v1/users/%00/enable", 404, "user_not_found"),
        ("POST", "/admin/v1/users/%00/unlock", 404, "user_not_found"),
        (
            "POST",
            "/admin/v1/users/%00/verify-email",
            404,
            "user_not_found",
        ),
        ("POST", "/admin/v1/users/%00/logout", 404, "user_not_found"),
        (
            "PUT",
            "/admin/v1/users/%00/roles/admin",
            404,
            "user_not_found",
        ),
        (
            "DELETE",
            "/admin/v1/users/%00/roles/admin",
            404,
            "user_not_found",
        ),
        ("GET", "/admin/v1/users/not-a-uuid", 404, "user_not_found"),
        ("DELETE", "/admin/v1/sessions/%00", 404, "session_not_found"),
        (
            "DELETE",
            "/admin/v1/sessions/not-a-uuid",
            404,
            "session_not_found",
        ),
        ("POST", "/admin/v1/keys/%00/revoke", 404, "key_not_found"),
        ("GET", "/admin/v1/users?after=%00", 400, "invalid_request"),
        (
            "GET",
            "/admin/v1/users?after=not-a-uuid",
            400,
            "invalid_request",
        ),
        (
            "GET",
            "/admin/v1/users?email=a%00b%40example.com",
            422,
            "invalid_email",
        ),
    ] {
        let response = call(&app, method, path, None).await;
        assert_eq!(
            response.status.as_u16(),
            status,
            "{method} {path}: {}",
            response.body
        );
        assert_eq!(response.error(), code, "{method} {path}");
    }
    // The ids the service makes are UUIDs, and are found.
    let user = call(&app, "GET", &format!("/admin/v1/users/{id}"), None).await;
    expect(&user, StatusCode::OK, None);
    let page = call(&app, "GET", &format!("/admin/v1/users?after={id}"), None).await;
    expect(&page, StatusCode::OK, None);
    let ended = call(
        &app,
        "DELETE",
        &format!("/admin/v1/sessions/{}", tokens.sid()),
        None,
    )
    .await;
    expect(&ended, StatusCode::NO_CONTENT, None);
}

async fn sessions_are_listed_and_ended_one_at_a_time(app: TestApp) {
    let (user, phone, id) = user_with_session(&app).await;
    let laptop = user.login(&app).await;

    let listed = call(&app, "GET", &format!("/admin/v1/users/{id}/sessions"), None).await;
    expect(&listed, StatusCode::OK, None);
    let sids: Vec<&str> = listed.body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert!(
        sids.contains(&phone.sid().as_str()) && sids.contains(&laptop.sid().as_str()),
        "{}",
        listed.body
    );
    assert!(listed.body["sessions"][0]["expires_at"].is_string());

    let ended = call(
        &app,
        "DELETE",
        &format!("/admin/v1/sessions/{}", phone.sid()),
        None,
    )
    .await;
    expect(&ended, StatusCode::NO_CONTENT, None);
    assert_session_ended(&app, &phone).await;
    assert!(
        app.revoked_sids().await.contains(&phone.sid()),
        "the gateway is told"
    );
    expect(&app.refresh(&laptop.refresh).await, StatusCode::OK, None);

    let again = call(
        &app,
        "DELETE",
        &format!("/admin/v1/sessions/{}", phone.sid()),
        None,
    )
    .await;
    expect(&again, StatusCode::NO_CONTENT, None);
    let upper = call(
        &app,
        "DELETE",
        &format!("/admin/v1/sessions/{}", laptop.sid().to_uppercase()),
        None,
    )
    .await;
    expect(&upper, StatusCode::NOT_FOUND, Some("session_not_found"));
    let listed = call(&app, "GET", &format!("/admin/v1/users/{id}/sessions"), None).await;
    assert_eq!(
        listed.body["sessions"].as_array().unwrap().len(),
        1,
        "{}",
        listed.body
    );
}

async fn logout_everywhere_ends_every_session_of_the_user(app: TestApp) {
    let (user, phone, id) = user_with_session(&app).await;
    let laptop = user.login(&app).await;
    let (_, bystander, _) = user_with_session(&app).await;

    let response = call(&app, "POST", &format!("/admin/v1/users/{id}/logout"), None).await;
    expect(&response, StatusCode::NO_CONTENT, None);
    for tokens in [&phone, &laptop] {
        assert_session_ended(&app, tokens).await;
    }
    assert!(
        revoked_subs(&app).await.contains(&id),
        "the gateway is told"
    );
    expect(&app.refresh(&bystander.refresh).await, StatusCode::OK, None);
    let listed = call(&app, "GET", &format!("/admin/v1/users/{id}/sessions"), None).await;
    assert_eq!(listed.body["sessions"], json!([]));
    expect(
        &app.login(&user.email, &user.password).await,
        StatusCode::OK,
        None,
    );
}

async fn unlock_clears_the_login_lock_and_verify_email_marks_it_verified(app: TestApp) {
    let (user, _, id) = user_with_session(&app).await;
    let mut locked = false;
    for _ in 0..30 {
        if app
            .login(&user.email, "a wrong password of some length")
            .await
            .status
            == StatusCode::TOO_MANY_REQUESTS
        {
            locked = true;
            break;
        }
    }
    assert!(locked, "the failures never locked the email");
    expect(
        &app.login(&user.email, &user.password).await,
        StatusCode::TOO_MANY_REQUESTS,
        Some("rate_limited"),
    );
    let unlocked = call(&app, "POST", &format!("/admin/v1/users/{id}/unlock"), None).await;
    expect(&unlocked, StatusCode::OK, None);
    expect(
        &app.login(&user.email, &user.password).await,
        StatusCode::OK,
        None,
    );

    assert_eq!(unlocked.body["email_verified"], false);
    let verified = call(
        &app,
        "POST",
        &format!("/admin/v1/users/{id}/verify-email"),
        None,
    )
    .await;
    expect(&verified, StatusCode::OK, None);
    assert_eq!(verified.body["email_verified"], true);
    assert!(verified.body["email_verified_at"].is_string());
    let again = call(
        &app,
        "POST",
        &format!("/admin/v1/users/{id}/verify-email"),
        None,
    )
    .await;
    assert_eq!(
        again.body["email_verified_at"],
        verified.body["email_verified_at"]
    );
    assert_eq!(
        crate::helpers::claims_of(&user.login(&app).await.access)["email_verified"],
        true
    );
}

async fn keys_are_listed_rotated_and_revoked_as_internal_keys_shows(app: TestApp) {
    let listed = call(&app, "GET", "/admin/v1/keys", None).await;
    expect(&listed, StatusCode::OK, None);
    let keys = listed.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{}", listed.body);
    assert_eq!(keys[0]["kid"], app.signer_kid().as_str());
    assert_eq!(keys[0]["state"], "active");
    assert_eq!(keys[0]["signing"], true);
    let text = listed.body.to_string();
    for private in ["\"d\"", "\"k\"", "secret", "material"] {
        assert!(!text.contains(private), "{private} in {text}");
    }

    let rotated = call(
        &app,
        "POST",
        "/admin/v1/keys/rotate",
        Some(json!({"alg": "EdDSA"})),
    )
    .await;
    expect(&rotated, StatusCode::CREATED, None);
    assert_eq!(rotated.body["alg"], "EdDSA");
    assert_eq!(rotated.body["state"], "pending");
    assert_eq!(rotated.body["signing"], false);
    let new_kid = rotated.str("kid");
    assert!(
        kids(&app.internal_keys().await).contains(&new_kid),
        "published at once"
    );

    // Gateways verifying with the public JWKS never see an HS256 key (admin review, finding 2).
    let hs256 = call(
        &app,
        "POST",
        "/admin/v1/keys/rotate",
        Some(json!({"alg": "HS256"})),
    )
    .await;
    expect(
        &hs256,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("unsupported_alg"),
    );
    assert!(
        hs256.body["message"]
            .as_str()
            .unwrap()
            .contains("AUTH_SIGNING_ALG=HS256"),
        "{}",
        hs256.body
    );
    let default = call(&app, "POST", "/admin/v1/keys/rotate", None).await;
    expect(&default, StatusCode::CREATED, None);
    assert_eq!(default.body["alg"], app.state.config.signing_alg.as_str());
    for (body, status, code, reason) in [
        (
            json!({"alg": "none"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported_alg",
            "none",
        ),
        (
            json!({"alg": "es256"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported_alg",
            "case matters",
        ),
        (
            json!({"alg": "HS512"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported_alg",
            "not ours",
        ),
        (
            json!({"alg": 256}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "not a string",
        ),
        (
            json!({"algorithm": "ES256"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "unknown field",
        ),
        (
            json!("ES256"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "not an object",
        ),
    ] {
        let response = call(&app, "POST", "/admin/v1/keys/rotate", Some(body)).await;
        assert_eq!(response.status, status, "{reason}: {}", response.body);
        assert_eq!(response.error(), code, "{reason}");
    }
    let huge = json!({"alg": "x".repeat(70 * 1024)});
    let response = call(&app, "POST", "/admin/v1/keys/rotate", Some(huge)).await;
    expect(
        &response,
        StatusCode::PAYLOAD_TOO_LARGE,
        Some("payload_too_large"),
    );
    let plain = send(
        &app.internal,
        Request::post("/admin/v1/keys/rotate")
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from("alg=ES256"))
            .unwrap(),
    )
    .await;
    expect(
        &plain,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Some("unsupported_media_type"),
    );

    let revoked = call(
        &app,
        "POST",
        &format!("/admin/v1/keys/{new_kid}/revoke"),
        None,
    )
    .await;
    expect(&revoked, StatusCode::OK, None);
    assert_eq!(
        revoked.body,
        json!({"kid": new_kid, "revoked": true, "replacement": null})
    );
    assert!(
        !kids(&app.internal_keys().await).contains(&new_kid),
        "withdrawn at once"
    );
    let again = call(
        &app,
        "POST",
        &format!("/admin/v1/keys/{new_kid}/revoke"),
        None,
    )
    .await;
    expect(&again, StatusCode::OK, None);
    assert_eq!(again.body["revoked"], false, "idempotent");

    // Revoking the signer: its tokens are refused, a new key signs at once.
    let (_, tokens) = app.logged_in_user().await;
    let signer = app.signer_kid();
    let revoked = call(
        &app,
        "POST",
        &format!("/admin/v1/keys/{signer}/revoke"),
        None,
    )
    .await;
    expect(&revoked, StatusCode::OK, None);
    let replacement = revoked.str("replacement");
    assert_eq!(app.signer_kid(), replacement);
    assert!(!kids(&app.internal_keys().await).contains(&signer));
    expect(
        &app.validate(&tokens.access).await,
        StatusCode::UNAUTHORIZED,
        Some("invalid_token"),
    );
    let states = call(&app, "GET", "/admin/v1/keys", None).await;
    let revoked_row = states.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == signer.as_str())
        .unwrap()
        .clone();
    assert_eq!(revoked_row["state"], "revoked");
    assert!(revoked_row["revoked_at"].is_string());
}

/// A revocation whose replacement failed (committed, then no new key) left no signer for good:
/// a repeat answered "already revoked". Now the repeat makes the signer (admin review, finding 4).
async fn revoking_again_repairs_a_ring_left_without_a_signer(app: TestApp) {
    let signer = app.signer_kid();
    let raw = app.raw().await;
    sqlx::query(raw.sql(
        "UPDATE signing_keys SET revoked_at = $1 WHERE kid = $2",
        "UPDATE signing_keys SET revoked_at = ? WHERE kid = ?",
    ))
    .bind(app.clock.now())
    .bind(&signer)
    .execute(&raw.pool)
    .await
    .unwrap();
    raw.close().await;
    app.state.ring.reload().await.unwrap();
    assert!(app.state.ring.signer(app.clock.now()).is_none());

    let again = call(
        &app,
        "POST",
        &format!("/admin/v1/keys/{signer}/revoke"),
        None,
    )
    .await;
    expect(&again, StatusCode::OK, None);
    assert_eq!(again.body["revoked"], false, "{}", again.body);
    let replacement = again.str("replacement");
    assert_eq!(app.signer_kid(), replacement);
    let (_, tokens) = app.logged_in_user().await;
    expect(&app.validate(&tokens.access).await, StatusCode::OK, None);

    let third = call(
        &app,
        "POST",
        &format!("/admin/v1/keys/{signer}/revoke"),
        None,
    )
    .await;
    assert_eq!(
        third.body,
        json!({"kid": signer, "revoked": false, "replacement": null}),
        "a signer exists: nothing to repair"
    );
}

/// Two concurrent revocations of one key both answer 200, exactly one of them `revoked: true`
/// (one answered 500 before: admin review, finding 4); of the signer, a key signs after both.
async fn concurrent_revocations_of_one_key_are_idempotent(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for round in 0..4 {
        // Pending keys, then the signer (whose revocation also makes a replacement).
        let kid = if round < 3 {
            let rotated = call(&app, "POST", "/admin/v1/keys/rotate", None).await;
            expect(&rotated, StatusCode::CREATED, None);
            rotated.str("kid")
        } else {
            app.signer_kid()
        };
        let path = format!("/admin/v1/keys/{kid}/revoke");
        let (a, b) = tokio::join!(
            call(&app, "POST", &path, None),
            call(&app, "POST", &path, None)
        );
        for r in [&a, &b] {
            expect(r, StatusCode::OK, None);
        }
        let changed = [&a, &b]
            .iter()
            .filter(|r| r.body["revoked"] == true)
            .count();
        assert_eq!(changed, 1, "{} {}", a.body, b.body);
    }
    app.state.ring.reload().await.unwrap();
    let (_, tokens) = app.logged_in_user().await;
    expect(&app.validate(&tokens.access).await, StatusCode::OK, None);
}

/// In a module of their own: `on_every_store!` below names its modules by store too.
mod races {
    use super::*;

    on_server_backends!(concurrent_revocations_of_one_key_are_idempotent);
}

/// Rotating to HS256 is for an installation that signs HS256 already (its gateways poll
/// `/internal/keys`).
#[tokio::test]
async fn hs256_rotations_are_accepted_while_the_ring_signs_hs256() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.signing_alg = auth_jwt::Algorithm::HS256;
    })
    .await;
    let rotated = call(
        &app,
        "POST",
        "/admin/v1/keys/rotate",
        Some(json!({"alg": "HS256"})),
    )
    .await;
    expect(&rotated, StatusCode::CREATED, None);
    assert_eq!(rotated.body["alg"], "HS256");
}

/// Path and method tricks reach no admin handler without the token (admin review: no finding).
#[tokio::test]
async fn path_tricks_do_not_reach_a_handler_without_the_token() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for (method, path) in [
        ("HEAD", "/admin/v1/users"),
        ("GET", "/admin/v1/users/"),
        ("GET", "//admin/v1/users"),
        ("GET", "/Admin/v1/users"),
        ("GET", "/admin/v1/users;x"),
        ("GET", "/admin/v1/%75sers"),
        ("GET", "/admin/v1/users/x/../../keys"),
        ("POST", "/admin/v1/keys/rotate/"),
        ("OPTIONS", "/admin/v1/keys/rotate"),
    ] {
        let response = call_as(&app, method, path, None, None).await;
        assert!(
            matches!(response.status.as_u16(), 401 | 404 | 405),
            "{method} {path}: {}",
            response.status
        );
    }
}

on_every_store!(
    users_are_listed_a_page_at_a_time_and_found_by_email,
    unknown_users_sessions_and_keys_are_404,
    ids_that_are_not_uuids_name_nothing,
    revoking_again_repairs_a_ring_left_without_a_signer,
    disabling_a_user_ends_their_tokens_at_once_and_in_the_feed,
    roles_are_granted_and_revoked_and_bad_role_names_are_422,
    sessions_are_listed_and_ended_one_at_a_time,
    logout_everywhere_ends_every_session_of_the_user,
    unlock_clears_the_login_lock_and_verify_email_marks_it_verified,
    keys_are_listed_rotated_and_revoked_as_internal_keys_shows,
);

/// Each change is one audit event with the actor and the ids, never an email or a token.
#[tokio::test]
async fn admin_actions_are_audit_events_with_the_actor_and_no_secrets() {
    // Arrange: the JSON logs of this (current-thread) runtime's tasks.
    let (captured, _guard) = crate::audit::json_logs();
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (user, tokens, id) = user_with_session(&app).await;

    // Act: one of each kind of change.
    for (method, path) in [
        ("PUT", format!("/admin/v1/users/{id}/roles/ops")),
        ("DELETE", format!("/admin/v1/users/{id}/roles/ops")),
        ("POST", format!("/admin/v1/users/{id}/verify-email")),
        ("POST", format!("/admin/v1/users/{id}/unlock")),
        ("DELETE", format!("/admin/v1/sessions/{}", tokens.sid())),
        ("POST", format!("/admin/v1/users/{id}/logout")),
        ("POST", format!("/admin/v1/users/{id}/disable")),
        ("POST", format!("/admin/v1/users/{id}/enable")),
    ] {
        let response = call(&app, method, &path, None).await;
        assert!(
            response.status.is_success(),
            "{method} {path}: {}",
            response.body
        );
    }
    let rotated = call(&app, "POST", "/admin/v1/keys/rotate", None).await;
    expect(&rotated, StatusCode::CREATED, None);
    let kid = rotated.str("kid");
    let revoked = call(&app, "POST", &format!("/admin/v1/keys/{kid}/revoke"), None).await;
    expect(&revoked, StatusCode::OK, None);

    // Assert: the events, each with the actor and its ids.
    let events: Vec<Value> = captured
        .text()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|e: &Value| e["event"].as_str().is_some_and(|n| n.starts_with("admin_")))
        .collect();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "admin_role_granted",
            "admin_role_revoked",
            "admin_email_verified",
            "admin_user_unlocked",
            "admin_session_ended",
            "admin_user_logged_out",
            "admin_user_disabled",
            "admin_user_enabled",
            "admin_key_rotated",
            "admin_key_revoked",
        ]
    );
    for event in &events {
        assert_eq!(event["actor"], "admin-token", "{event}");
        assert_eq!(event["level"], "INFO", "{event}");
    }
    for event in &events[..8] {
        assert_eq!(event["user_id"], id.as_str(), "{event}");
    }
    assert_eq!(events[0]["role"], "ops");
    assert_eq!(events[4]["session_id"], tokens.sid().as_str());
    assert_eq!(events[9]["kid"], kid.as_str());
    // What a followed link writes, as the CLI did before the Admin API: counts of
    // verifications keep seeing the operator's.
    let verified: Vec<Value> = captured
        .text()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|e: &Value| e["event"] == "email_verified")
        .collect();
    assert_eq!(verified.len(), 1, "{verified:?}");
    assert_eq!(verified[0]["by"], "operator");
    assert_eq!(verified[0]["user_id"], id.as_str());
    let text = captured.text();
    for (what, secret) in [
        ("email", user.email.as_str()),
        ("password", user.password.as_str()),
        ("admin token", ADMIN_TOKEN),
        ("access token", tokens.access.as_str()),
        ("refresh token", tokens.refresh.as_str()),
    ] {
        assert!(!text.contains(secret), "the logs show the {what}:\n{text}");
    }
}
