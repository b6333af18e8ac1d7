//! A plugin configuration that does not parse makes Envoy refuse the filter, naming the field.

use std::collections::HashMap;

use e2e::envoy::{filter_wasm, render_config, Envoy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_plugin_config_is_refused_naming_the_field() {
    let values = HashMap::from([
        ("GATEWAY_PORT", "0".to_owned()),
        ("ADMIN_PORT", "0".to_owned()),
        ("AUTH_API_PORT", "1".to_owned()),
        ("AUTH_INTERNAL_PORT", "1".to_owned()),
        ("UPSTREAM_PORT", "1".to_owned()),
        ("WASM_PATH", filter_wasm().display().to_string()),
        ("INTERNAL_TOKEN", "x".repeat(32)),
        ("ISSUER", "http://127.0.0.1:10000/auth".to_owned()),
        ("POLL_SECONDS", "1".to_owned()),
        ("REVOCATION_POLL_SECONDS", "1".to_owned()),
    ]);
    let config = render_config(&values).replace(r#""audiences": ["api"]"#, r#""audiences": []"#);
    let failed = Envoy::start(&config, 1)
        .await
        .expect_err("Envoy accepted a filter with no audience");
    assert!(
        failed.log.contains("audiences"),
        "the log names the field:\n{}",
        failed.log
    );
}

/// docker-compose's Envoy config carries the same filter configuration and routes as the dev
/// stack's, so that what the tests prove holds for the production-like layout too.
#[test]
fn docker_compose_gateway_matches_the_dev_gateway() {
    let root = e2e::envoy::workspace_root();
    let read = |name: &str| std::fs::read_to_string(root.join("envoy").join(name)).unwrap();
    let section = |yaml: &str, from: &str, to: &str| {
        let start = yaml.find(from).unwrap();
        let end = start + yaml[start..].find(to).unwrap();
        yaml[start..end].to_owned()
    };
    let dev = read("dev.yaml")
        .replace("{{POLL_SECONDS}}", "5")
        .replace("{{REVOCATION_POLL_SECONDS}}", "2");
    let docker = read("docker.yaml");
    for (from, to) in [
        ("configuration:", "- name: envoy.filters.http.router"),
        ("route_config:", "http_filters:"),
    ] {
        assert_eq!(
            section(&dev, from, to),
            section(&docker, from, to),
            "{from}"
        );
    }
}

/// `filter/examples/envoy-local-jwks.yaml`, the smoke test `filter/README.md` points to, works
/// as documented: Envoy loads it, and its rules answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filter_example_config_works() {
    let root = e2e::envoy::workspace_root();
    let example =
        std::fs::read_to_string(root.join("filter/examples/envoy-local-jwks.yaml")).unwrap();
    let wasm = filter_wasm().display().to_string();
    let config = example
        .replace("name: main", "name: gateway")
        .replace("port_value: 10000", "port_value: 0")
        .replace("port_value: 9901", "port_value: 0")
        .replace("target/wasm32-wasip1/wasm/auth_filter.wasm", &wasm);
    assert!(config.contains(&wasm), "the example names the built filter");
    let envoy = Envoy::start(&config, 2)
        .await
        .unwrap_or_else(|failed| panic!("Envoy refused the example:\n{}", failed.log));
    // The example's test key, `k1`.
    let key = auth_jwt::Key::hs256("k1", b"test-secret-test-secret-test-sec").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |roles: &[&str]| {
        serde_json::json!({
            "iss": "auth-service", "aud": "api", "sub": "ada", "exp": now + 600, "iat": now,
            "jti": "j1", "sid": "s1", "client_id": "example", "roles": roles,
        })
    };
    let token = |roles: &[&str]| {
        auth_jwt::encode(&auth_jwt::Header::access_token(&key), &claims(roles), &key).unwrap()
    };
    let client = reqwest::Client::new();
    let status = |path: &str, token: Option<String>| {
        let mut request = client.get(format!("{}{path}", envoy.gateway));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/public/x", None).await, 200);
    assert_eq!(status("/api/orders", None).await, 401);
    assert_eq!(status("/api/orders", Some(token(&["user"]))).await, 200);
    assert_eq!(status("/api/admin/x", Some(token(&["user"]))).await, 403);
    assert_eq!(status("/api/admin/x", Some(token(&["admin"]))).await, 200);
    assert_eq!(
        status("/elsewhere", Some(token(&["admin"]))).await,
        403,
        "no rule"
    );
}
