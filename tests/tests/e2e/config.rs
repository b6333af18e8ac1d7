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
