//! The filter's counters as Prometheus reads them from Envoy (`/stats/prometheus` on the admin
//! port): the names the dashboard and the alert rules use (`deploy/observability/`, checked
//! against `auth_filter::counter_names()` by `cargo xtask check-observability`) are the names a
//! real Envoy exports for the real `.wasm`, so a change in how Envoy maps wasm metrics fails here
//! rather than in a silent panel.

use e2e::{Stack, StackOptions};

/// How Envoy's Prometheus output names a wasm counter: `.` becomes `_`, no `envoy_` prefix (the
/// `wasmcustom.` tag is extracted), no `_total`.
fn prometheus_name(counter: &str) -> String {
    counter.replace('.', "_")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_filter_counter_is_exported_under_the_documented_name() {
    let stack = Stack::start(StackOptions::default()).await;
    // A denial and an allowed public request, so that the request-path counters have moved.
    let denied = stack.gateway.get("/api/x", None).await;
    assert_eq!(denied.status(), 401);
    // Request-path counts reach Envoy on the filter's next tick.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let text = loop {
        let text = stack
            .gateway
            .client
            .get(format!("{}/stats/prometheus", stack.gateway.envoy.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if value_of(&text, "auth_filter_denied_missing_token").is_some_and(|v| v >= 1.0) {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the denial was never counted:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    for counter in auth_filter::counter_names() {
        let name = prometheus_name(counter);
        assert!(
            text.lines()
                .any(|line| line == format!("# TYPE {name} counter")),
            "{counter} is not exported as the counter {name}"
        );
    }
}

/// The value of the sample line of `name` (Envoy writes an empty label set, `name{} 1`), if any.
fn value_of(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix("{} "))
        .and_then(|value| value.trim().parse().ok())
}
