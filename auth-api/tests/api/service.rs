//! Health, metrics, unknown routes, and the service over a real socket.

use axum::{
    body::Body,
    http::{Request, StatusCode},
};

use crate::helpers::{test_config, Backend, TestApp, TestDb, TestUser};

async fn healthz_and_readyz_answer_200(app: TestApp) {
    assert_eq!(app.get("/healthz", None).await.status, StatusCode::OK);
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.body["status"], "ready");
}

/// SECURITY.md H 79: liveness does not need the database, readiness does.
async fn without_its_database_the_service_is_alive_but_not_ready(app: TestApp) {
    app.state.store.close().await;
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.error(), "not_ready");
    assert_eq!(app.get("/healthz", None).await.status, StatusCode::OK);
}

async fn metrics_count_logins_and_requests(app: TestApp) {
    let user = TestUser::random();
    user.register(&app).await;
    user.login(&app).await;
    app.login(&user.email, "wrong password entirely").await;
    let response = app.get("/metrics", None).await;
    assert_eq!(response.status, StatusCode::OK);
    let text = response.body.as_str().unwrap();
    assert!(
        text.contains(r#"auth_login_total{result="success"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"auth_login_total{result="invalid_credentials"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"http_requests_total{route="/login",method="POST",status="200"} 1"#),
        "{text}"
    );
    let request = Request::builder()
        .method("BREW")
        .uri("/login")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        app.request(request).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let text = app
        .get("/metrics", None)
        .await
        .body
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        !text.contains("BREW") && text.contains(r#"method="other""#),
        "bounded labels: {text}"
    );
}

async fn unknown_route_and_wrong_method_get_json_errors(app: TestApp) {
    let missing = app.get("/nope", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error(), "not_found");
    let wrong = app
        .request(Request::delete("/login").body(Body::empty()).unwrap())
        .await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.error(), "method_not_allowed");
}

async fn openapi_document_lists_every_public_route(app: TestApp) {
    let response = app.get("/openapi.json", None).await;
    assert_eq!(response.status, StatusCode::OK);
    assert!(response.body["openapi"].as_str().unwrap().starts_with("3."));
    let paths = response.body["paths"].as_object().unwrap();
    for path in [
        "/signup",
        "/login",
        "/refresh",
        "/logout",
        "/validate",
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
        "/healthz",
        "/readyz",
        "/metrics",
        "/authorize",
        "/callback",
        "/token",
        "/login/mfa",
        "/totp/enroll",
        "/totp/confirm",
        "/totp/disable",
    ] {
        assert!(paths.contains_key(path), "{path} is not documented");
    }
    let login = &response.body["paths"]["/login"]["post"]["responses"];
    for status in ["200", "400", "401", "403", "429"] {
        assert!(
            login.get(status).is_some(),
            "/login {status} is not documented"
        );
    }
    for path in [
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let ok = &response.body["paths"][path]["get"]["responses"]["200"];
        assert!(
            ok["headers"].get("cache-control").is_some(),
            "{path}: Cache-Control is not documented: {ok}"
        );
    }
    let scope = &response.body["paths"]["/logout"]["post"]["parameters"][0];
    assert_eq!(scope["name"], "scope");
    assert_eq!(scope["in"], "query");
    // Every `$ref` must resolve, or schemathesis (and any client generator) fails.
    let reference = scope["schema"]["$ref"].as_str().unwrap();
    let name = reference.trim_start_matches("#/components/schemas/");
    let values = &response.body["components"]["schemas"][name]["enum"];
    assert_eq!(
        *values,
        serde_json::json!(["local", "all", "others"]),
        "{scope}"
    );
    let mut references = Vec::new();
    collect_refs(&response.body, &mut references);
    for reference in references {
        let name = reference.trim_start_matches("#/components/schemas/");
        assert!(
            response.body["components"]["schemas"].get(name).is_some(),
            "{reference} does not resolve"
        );
    }
}

fn collect_refs(value: &serde_json::Value, into: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner.as_str()) {
                    ("$ref", Some(reference)) => into.push(reference.to_owned()),
                    _ => collect_refs(inner, into),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_refs(v, into)),
        _ => {}
    }
}

crate::on_every_store!(
    without_its_database_the_service_is_alive_but_not_ready,
    openapi_document_lists_every_public_route,
    healthz_and_readyz_answer_200,
    metrics_count_logins_and_requests,
    unknown_route_and_wrong_method_get_json_errors,
);

/// `App::build` binds real ports, serves both listeners, and stops gracefully (closing its
/// pool, which on a server store must not hang on its connections).
async fn app_serves_over_real_sockets_and_shuts_down(backend: Backend) {
    let (_db, url) = TestDb::create(backend).await;
    let app = auth_api::App::build(test_config(url)).await.unwrap();
    let public = app.public_addr().unwrap();
    let internal = app.internal_addr().unwrap().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let signup = client
        .post(format!("http://{public}/signup"))
        .json(&serde_json::json!({"email": "socket@example.com", "password": "correct horse battery staple"}))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), 201);
    let keys = client
        .get(format!("http://{internal}/internal/keys"))
        .bearer_auth(crate::helpers::INTERNAL_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(keys.status(), 200);
    let _ = stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        client
            .get(format!("http://{public}/healthz"))
            .send()
            .await
            .is_err(),
        "the listener is closed"
    );
}

mod sockets {
    use super::*;

    crate::on_every_backend!(app_serves_over_real_sockets_and_shuts_down);
}
