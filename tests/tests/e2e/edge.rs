//! The gateway as an edge proxy: CORS preflights are answered by Envoy and never forwarded,
//! public rules open only what they name, method overrides and unverified tokens never reach an
//! upstream, and a client that sends half a request head is cut off.

use std::time::{Duration, Instant};

use e2e::{Stack, StackOptions};
use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Whether `body` is the echo upstream's answer (`{"method","path","headers"}`).
fn is_echo(body: &str) -> bool {
    serde_json::from_str::<Value>(body).is_ok_and(|v| v.get("method").is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cors_preflight_is_answered_by_envoy_and_never_reaches_the_upstream() {
    let stack = Stack::start(StackOptions::default()).await;
    for (origin, allowed) in [
        ("http://localhost:3000", true),
        ("http://127.0.0.1:8080", true),
        ("https://evil.example", false),
    ] {
        let response = stack
            .gateway
            .client
            .request(Method::OPTIONS, stack.gateway.url("/api/admin/x"))
            .header("origin", origin)
            .header("access-control-request-method", "DELETE")
            .header("access-control-request-headers", "authorization")
            .send()
            .await
            .unwrap();
        let status = response.status();
        let allow_origin = response
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.text().await.unwrap();
        assert!(!is_echo(&body), "{origin}: forwarded upstream: {body}");
        assert_eq!(status, 200, "{origin}: Envoy's CORS filter answers: {body}");
        assert_eq!(
            allow_origin.as_deref(),
            allowed.then_some(origin),
            "{origin}: only listed origins are allowed"
        );
    }
    // Envoy answered every preflight itself: none reached the auth filter either.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        stack
            .gateway
            .envoy
            .counter("auth_filter.denied.cors_preflight")
            .await,
        0
    );
    // A cross-origin request that is not a preflight is an ordinary one: it needs a token.
    let actual = stack
        .gateway
        .client
        .get(stack.gateway.url("/api/admin/x"))
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(actual.status(), 401);
}

/// The `access-control-*` headers of an answer but those named in `except`, sorted, as
/// `name: value` lowercase without spaces after commas (Envoy writes the policy's lists as
/// configured, tower-http without spaces). Each line once: through the gateway, Envoy's CORS
/// filter sets what auth-api set already.
fn cors_headers(response: &reqwest::Response, except: &[&str]) -> Vec<String> {
    let mut headers: Vec<String> = response
        .headers()
        .iter()
        .filter(|(name, _)| {
            name.as_str().starts_with("access-control-") && !except.contains(&name.as_str())
        })
        .map(|(name, value)| {
            let value = value
                .to_str()
                .unwrap()
                .to_ascii_lowercase()
                .replace(", ", ",");
            format!("{name}: {value}")
        })
        .collect();
    headers.sort();
    headers
}

/// The CORS headers of the answer to a preflight for a POST from `origin`.
async fn preflight_answer(client: &reqwest::Client, url: String, origin: &str) -> Vec<String> {
    let response = client
        .request(Method::OPTIONS, url)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, authorization",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{origin}");
    // Envoy sends its exposed headers on a preflight too, where browsers ignore them (they count
    // on the actual answer, compared by `cors_of_get`).
    cors_headers(&response, &["access-control-expose-headers"])
}

/// The CORS headers of the answer to a GET from `origin`.
async fn cors_of_get(client: &reqwest::Client, url: String, origin: &str) -> Vec<String> {
    let response = client
        .get(url)
        .header("origin", origin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{origin}");
    cors_headers(&response, &[])
}

/// A front end gets the same CORS answer from auth-api directly (`AUTH_CORS_ALLOWED_ORIGINS`,
/// tower-http) as through the gateway (envoy/dev.yaml's policy, Envoy's CORS filter): the same
/// origins allowed, methods, request and exposed headers, max age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_api_and_the_gateway_answer_a_preflight_alike() {
    let stack = Stack::start_configured(StackOptions::default(), |config| {
        // What `cargo xtask up` and docker-compose.yml set beside envoy/*.yaml.
        config.cors_allowed_origins =
            Some("http://localhost:*,http://127.0.0.1:*".parse().unwrap());
    })
    .await;
    let direct = format!("http://{}/login", stack.public_addr);
    for origin in [
        "http://localhost:3000",
        "http://127.0.0.1",
        "http://localhost:5173",
        "https://localhost:3000",
        "http://localhost.evil.example",
        "https://evil.example",
    ] {
        let through_gateway = preflight_answer(
            &stack.gateway.client,
            stack.gateway.url("/auth/login"),
            origin,
        )
        .await;
        let from_auth_api = preflight_answer(&stack.gateway.client, direct.clone(), origin).await;
        let allowed = !origin.contains("evil") && origin.starts_with("http://");
        if allowed {
            assert!(
                through_gateway.contains(&format!("access-control-allow-origin: {origin}")),
                "{origin}: {through_gateway:?}"
            );
            assert_eq!(through_gateway, from_auth_api, "{origin}");
            let gateway_get = cors_of_get(
                &stack.gateway.client,
                stack.gateway.url("/auth/.well-known/jwks.json"),
                origin,
            )
            .await;
            let direct_get = cors_of_get(
                &stack.gateway.client,
                format!("http://{}/.well-known/jwks.json", stack.public_addr),
                origin,
            )
            .await;
            assert_eq!(gateway_get, direct_get, "{origin}");
            assert_eq!(
                direct_get,
                [
                    format!("access-control-allow-origin: {origin}"),
                    "access-control-expose-headers: www-authenticate,retry-after,x-request-id"
                        .to_owned()
                ]
            );
        } else {
            // Neither names the origin, which is what a browser looks at.
            for answer in [&through_gateway, &from_auth_api] {
                assert!(
                    !answer
                        .iter()
                        .any(|h| h.starts_with("access-control-allow-origin")),
                    "{origin}: {answer:?}"
                );
            }
        }
    }
}

/// The request id and the trace context are the gateway's, not the client's: a client's
/// `x-request-id`, `traceparent` and `x-envoy-original-path` never reach an upstream (they would
/// choose the id on every log line, the trace, or the path in the access log), and the id comes
/// back on Envoy's own answers too, so a refused client can quote it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_id_and_trace_context_are_the_gateways() {
    let stack = Stack::start(StackOptions::default()).await;
    let chosen = "chosen-by-the-client";
    let response = stack
        .gateway
        .client
        .get(stack.gateway.url("/public/echo"))
        .header("x-request-id", chosen)
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        )
        .header("tracestate", "vendor=value")
        .header("x-envoy-original-path", "/somewhere/else")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let returned = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let echo: Value = response.json().await.unwrap();
    let forwarded = &echo["headers"];
    assert_ne!(forwarded["x-request-id"], chosen, "{echo}");
    assert_eq!(
        forwarded["x-request-id"].as_str(),
        returned.as_deref(),
        "the id forwarded is the id returned: {echo}"
    );
    for name in ["traceparent", "tracestate", "x-envoy-original-path"] {
        assert!(forwarded.get(name).is_none(), "{name} forwarded: {echo}");
    }
    let denied = stack
        .gateway
        .client
        .get(stack.gateway.url("/api/x"))
        .header("x-request-id", chosen)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    let id = denied
        .headers()
        .get("x-request-id")
        .expect("Envoy's own answers carry the id");
    assert_ne!(id, chosen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_rules_open_only_the_paths_they_name() {
    let stack = Stack::start(StackOptions::default()).await;
    for path in ["/Auth/signup", "/AUTH/x", "/auth", "/PUBLIC/x", "/Public/x"] {
        let response = stack.gateway.get(path, None).await;
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(!is_echo(&body), "{path} reached the upstream: {body}");
        assert_eq!(status, 403, "{path}: no rule covers it: {body}");
    }
    let public = stack.gateway.get("/public/x", None).await;
    assert_eq!(public.status(), 200, "what the public rule names");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_overrides_and_underscored_headers_are_refused() {
    let stack = Stack::start(StackOptions::default()).await;
    let (_, login) = stack.gateway.new_user().await;
    let access = login["access_token"].as_str().unwrap();
    for name in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        let response = stack
            .gateway
            .client
            .post(stack.gateway.url("/api/orders"))
            .bearer_auth(access)
            .header(name, "DELETE")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{name}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{name}");
    }
    // Envoy refuses `_` in header names (`x_user_roles` is `X-User-Roles` to CGI and PHP).
    let underscored = stack
        .gateway
        .client
        .get(stack.gateway.url("/public/info"))
        .header("x_user_roles", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(underscored.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverified_token_on_a_public_route_is_not_forwarded() {
    let stack = Stack::start(StackOptions::default()).await;
    let echo: Value = stack
        .gateway
        .get("/public/info", Some("not-a-verified-token"))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        echo["headers"].get("authorization").is_none(),
        "the unverified token reached the upstream: {echo}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_half_a_request_head_is_disconnected() {
    let stack = Stack::start(StackOptions::default()).await;
    // The shipped configs give a client 10 s for its request head.
    let timeout = Duration::from_secs(10);
    let addr = stack.gateway.address().to_owned();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /public/info HTTP/1.1\r\nhost: gateway\r\nx-slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(timeout * 2, stream.read_to_end(&mut answer)).await;
    let elapsed = started.elapsed();
    assert!(
        read.is_ok(),
        "the connection is still open after {elapsed:?}"
    );
    assert!(
        elapsed >= timeout - Duration::from_secs(1),
        "cut off after {elapsed:?}, before the timeout"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
}
