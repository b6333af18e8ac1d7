//! The internal listener's door: the gateway's internal token opens only the keys and the
//! revocation feed, the admin token only the Admin API, and nothing answers without a token
//! (not even a 404 or a 405, which would list the routes).

use axum::{
    body::Body,
    http::{header, Method, Request, StatusCode},
};

use crate::helpers::{send, Backend, TestApp, TestResponse, ADMIN_TOKEN, INTERNAL_TOKEN};

async fn call(app: &TestApp, method: Method, path: &str, token: Option<&str>) -> TestResponse {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    send(&app.internal, request.body(Body::empty()).unwrap()).await
}

/// Whoever holds a gateway's configuration holds the internal token: it must not change users
/// or keys (with a new HS256 key it could then read the secret from /internal/keys and mint
/// tokens).
#[tokio::test]
async fn the_internal_token_opens_no_admin_route_and_the_admin_token_no_internal_one() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for (method, path) in [
        (Method::GET, "/admin/v1/users"),
        (Method::POST, "/admin/v1/keys/rotate"),
        (Method::GET, "/admin/v1/openapi.json"),
    ] {
        let answer = call(&app, method.clone(), path, Some(INTERNAL_TOKEN)).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(answer.error(), "invalid_token", "{method} {path}");
    }
    for path in ["/internal/keys", "/internal/revocations"] {
        let answer = call(&app, Method::GET, path, Some(ADMIN_TOKEN)).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(
            call(&app, Method::GET, path, Some(INTERNAL_TOKEN))
                .await
                .status,
            StatusCode::OK,
            "{path}"
        );
    }
    assert_eq!(
        call(&app, Method::GET, "/admin/v1/users", Some(ADMIN_TOKEN))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn without_an_admin_token_the_admin_api_is_off() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.admin_token = None).await;
    for token in [None, Some(INTERNAL_TOKEN), Some(ADMIN_TOKEN)] {
        let answer = call(&app, Method::GET, "/admin/v1/users", token).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{token:?}");
        assert_eq!(answer.error(), "not_found");
    }
    assert_eq!(
        call(&app, Method::GET, "/internal/keys", Some(INTERNAL_TOKEN))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn no_route_is_told_apart_without_a_token() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for (method, path) in [
        (Method::GET, "/nowhere"),
        (Method::DELETE, "/internal/keys"),
        (Method::GET, "/admin/v1/nowhere"),
        (Method::PATCH, "/admin/v1/users"),
    ] {
        let answer = call(&app, method.clone(), path, None).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(answer.error(), "missing_token", "{method} {path}");
    }
    // With the right token, the JSON 404 and 405 as before.
    let token = Some(ADMIN_TOKEN);
    let missing = call(&app, Method::GET, "/admin/v1/nowhere", token).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let wrong_method = call(&app, Method::PATCH, "/admin/v1/users", token).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    let internal_missing = call(&app, Method::GET, "/nowhere", Some(INTERNAL_TOKEN)).await;
    assert_eq!(internal_missing.status, StatusCode::NOT_FOUND);
}
