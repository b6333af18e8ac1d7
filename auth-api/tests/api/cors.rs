//! CORS for browser clients of the JSON API (`AUTH_CORS_ALLOWED_ORIGINS`): preflights answered
//! for listed origins only, the same headers as the gateway's `CorsPolicy`, none on the hosted
//! pages, and nothing at all when the variable is unset.

use std::net::SocketAddr;

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{header, Method, Request, StatusCode},
};
use serde_json::json;

use crate::helpers::{Backend, TestApp, TestResponse, TestUser};

const ORIGIN: &str = "https://app.example.com";

async fn spawn_with_origins() -> TestApp {
    TestApp::spawn_with(Backend::Sqlite, |c| {
        c.cors_allowed_origins = Some(
            format!("{ORIGIN}, http://localhost:*")
                .parse()
                .expect("valid origins"),
        );
    })
    .await
}

/// A preflight from one client address (so the routes' per-address limit could apply).
async fn preflight(app: &TestApp, path: &str, origin: &str) -> TestResponse {
    let mut request = Request::builder()
        .method(Method::OPTIONS)
        .uri(path)
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "content-type, authorization",
        )
        .body(Body::empty())
        .unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([203, 0, 113, 7], 40000))));
    app.request(request).await
}

#[tokio::test]
async fn a_listed_origin_gets_the_gateways_preflight_answer() {
    let app = spawn_with_origins().await;
    for (path, origin) in [
        ("/login", ORIGIN),
        ("/refresh", "http://localhost:5173"),
        ("/signup", "http://localhost"),
    ] {
        let answer = preflight(&app, path, origin).await;
        assert_eq!(answer.status, StatusCode::OK, "{path} {origin}");
        assert_eq!(
            answer.header("access-control-allow-origin"),
            Some(origin),
            "{path}"
        );
        assert_eq!(
            answer.header("access-control-allow-methods"),
            Some("GET,HEAD,POST,PUT,PATCH,DELETE")
        );
        assert_eq!(
            answer.header("access-control-allow-headers"),
            Some("authorization,content-type")
        );
        assert_eq!(answer.header("access-control-max-age"), Some("600"));
        assert_eq!(
            answer.header("access-control-allow-credentials"),
            None,
            "bearer tokens, no cookies: no credentials mode"
        );
        let vary = answer.header("vary").unwrap_or_default();
        assert!(vary.contains("origin"), "{vary}");
    }
}

#[tokio::test]
async fn another_origin_gets_no_cors_header_and_the_preflight_is_not_rate_limited() {
    let app = spawn_with_origins().await;
    // Far more than the per-address bucket of the limited routes (60 a minute).
    for n in 0..80 {
        let answer = preflight(&app, "/login", "https://evil.example").await;
        assert_eq!(answer.status, StatusCode::OK, "preflight {n}");
        assert_eq!(answer.header("access-control-allow-origin"), None);
    }
    let answer = preflight(&app, "/login", ORIGIN).await;
    assert_eq!(answer.header("access-control-allow-origin"), Some(ORIGIN));
}

#[tokio::test]
async fn an_actual_request_carries_the_origin_and_the_readable_headers() {
    let app = spawn_with_origins().await;
    let user = TestUser::random();
    user.register(&app).await;
    let answer = app
        .request(
            Request::post("/login")
                .header(header::ORIGIN, ORIGIN)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    json!({"email": user.email, "password": "not the password"}).to_string(),
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.header("access-control-allow-origin"), Some(ORIGIN));
    let exposed = answer
        .header("access-control-expose-headers")
        .unwrap_or_default();
    for name in ["www-authenticate", "retry-after", "x-request-id"] {
        assert!(exposed.contains(name), "{name} in {exposed}");
    }
}

/// A browser reads an error answer only with the CORS headers: the JSON 404 and 405 carry them.
#[tokio::test]
async fn error_answers_carry_the_cors_headers_too() {
    let app = spawn_with_origins().await;
    for (method, path, status) in [
        (Method::GET, "/nowhere", StatusCode::NOT_FOUND),
        (Method::DELETE, "/login", StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let answer = app
            .request(
                Request::builder()
                    .method(method)
                    .uri(path)
                    .header(header::ORIGIN, ORIGIN)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(answer.status, status, "{path}");
        assert_eq!(
            answer.header("access-control-allow-origin"),
            Some(ORIGIN),
            "{path}"
        );
    }
}

#[tokio::test]
async fn the_hosted_pages_get_no_cors_headers() {
    let app = spawn_with_origins().await;
    let page = app
        .request(
            Request::get("/account/signin")
                .header(header::ORIGIN, ORIGIN)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.header("access-control-allow-origin"), None);
    let preflight = preflight(&app, "/account/signin", ORIGIN).await;
    assert_eq!(preflight.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn without_the_variable_there_is_no_cors_at_all() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let answer = preflight(&app, "/login", ORIGIN).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.error(), "method_not_allowed");
    assert_eq!(answer.header("access-control-allow-origin"), None);
}
