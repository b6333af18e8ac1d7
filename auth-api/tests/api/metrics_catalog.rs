//! `/metrics` of a real app over real sockets (HTTP and gRPC): the request-duration histograms,
//! the bcrypt timings, and the pool, key-ring and revocation-feed gauges set at scrape time,
//! with plausible values on every store; and every auth-api metric that the dashboard and the
//! alert rules of `deploy/observability` use is one a scrape offers, with the labels they use.

use std::{collections::BTreeMap, path::Path, time::Duration};

use auth_api::grpc::pb::{self, auth_service_client::AuthServiceClient};
use tonic::transport::Endpoint;

use axum::{
    body::Body,
    http::{header, Request, StatusCode},
};

use crate::helpers::{test_config, Backend, TestApp, TestDb};

#[allow(dead_code, reason = "the file is xtask's; this test uses part of it")]
#[path = "../../../xtask/src/observability_catalog.rs"]
mod catalog;

const PASSWORD: &str = "correct horse battery staple";

/// A running app and the scrapes of its `/metrics`.
struct Scraped {
    first: String,
    second: String,
}

/// Starts an app on `backend`, signs up, logs in (once right, once wrong), logs out (a feed
/// entry), validates over gRPC, and scrapes twice, a second logout between the two scrapes.
async fn exercise(backend: Backend) -> Scraped {
    let (_db, url) = TestDb::create(backend).await;
    let app = auth_api::App::build(test_config(url)).await.unwrap();
    let public = app.public_addr().unwrap();
    let grpc = app.grpc_addr().unwrap().expect("the gRPC listener is on");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("http://{public}{path}"))
            .json(&body)
            .send()
    };
    let email = "metrics@example.com";
    let signup = post(
        "/signup",
        serde_json::json!({"email": email, "password": PASSWORD}),
    )
    .await
    .unwrap();
    assert_eq!(signup.status(), 201);
    let login = |password: &'static str| {
        post(
            "/login",
            serde_json::json!({"email": email, "password": password}),
        )
    };
    assert_eq!(
        login("a wrong password, long enough")
            .await
            .unwrap()
            .status(),
        401
    );
    let logout = |refresh: String| post("/logout", serde_json::json!({"refresh_token": refresh}));
    let tokens: serde_json::Value = login(PASSWORD).await.unwrap().json().await.unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(logout(refresh).await.unwrap().status(), 204);
    let channel = Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    let validated = AuthServiceClient::new(channel)
        .validate(pb::ValidateRequest {
            access_token: Some("not a token".to_owned()),
        })
        .await;
    assert_eq!(validated.unwrap_err().code(), tonic::Code::Unauthenticated);
    let scrape = || async {
        let response = http
            .get(format!("http://{public}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    };
    let first = scrape().await;
    // A second revocation, then a scrape at once: the feed's figures are not read again.
    let tokens: serde_json::Value = login(PASSWORD).await.unwrap().json().await.unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(logout(refresh).await.unwrap().status(), 204);
    let second = scrape().await;
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    Scraped { first, second }
}

/// The samples of an exposition by series (`name{labels}`), their values parsed.
fn samples(exposition: &str) -> BTreeMap<String, f64> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {samples:#?}"))
}

async fn histograms_and_scrape_time_gauges_have_plausible_values(backend: Backend) {
    let store = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
        Backend::Mysql => "mysql",
    };

    let Scraped { first, second } = exercise(backend).await;

    let s = samples(&first);
    // Request durations, beside the counters they share labels with.
    let login_ok = r#"{route="/login",method="POST",status="200"}"#;
    assert_eq!(
        value(
            &s,
            &format!("http_request_duration_seconds_count{login_ok}")
        ),
        1.0
    );
    assert_eq!(value(&s, &format!("http_requests_total{login_ok}")), 1.0);
    let login_time = value(&s, &format!("http_request_duration_seconds_sum{login_ok}"));
    assert!(login_time > 0.0 && login_time < 10.0, "{login_time}");
    let signup = r#"{route="/signup",method="POST",status="201"}"#;
    assert_eq!(
        value(&s, &format!("http_request_duration_seconds_count{signup}")),
        1.0
    );
    let validate = r#"{method="auth.v1.AuthService/Validate",code="UNAUTHENTICATED"}"#;
    assert_eq!(
        value(
            &s,
            &format!("grpc_request_duration_seconds_count{validate}")
        ),
        1.0
    );
    assert_eq!(value(&s, &format!("grpc_requests_total{validate}")), 1.0);
    // bcrypt: the signup's hash and two logins' verifies, none shed.
    assert_eq!(value(&s, "auth_hash_duration_seconds_count"), 3.0);
    assert_eq!(value(&s, "auth_hash_queue_wait_seconds_count"), 3.0);
    assert!(value(&s, "auth_hash_duration_seconds_sum") > 0.0);
    assert_eq!(value(&s, "auth_hash_shed_total"), 0.0);
    // The pool: at least one connection open, no more than the pool's bound, idle within open.
    let labels = format!(r#"{{store="{store}"}}"#);
    let open = value(&s, &format!("auth_db_pool_connections{labels}"));
    let idle = value(&s, &format!("auth_db_pool_idle_connections{labels}"));
    let max = value(&s, &format!("auth_db_pool_max_connections{labels}"));
    assert!(
        open >= 1.0 && open <= max && idle <= open,
        "{open} {idle} {max}"
    );
    // The key ring: one active key, just made; read from the database moments ago.
    assert_eq!(value(&s, r#"auth_keyring_keys{state="active"}"#), 1.0);
    assert_eq!(value(&s, r#"auth_keyring_keys{state="revoked"}"#), 0.0);
    let key_age = value(&s, "auth_keyring_active_key_age_seconds");
    assert!((0.0..120.0).contains(&key_age), "{key_age}");
    let refreshed = value(&s, "auth_keyring_refresh_age_seconds");
    assert!((0.0..60.0).contains(&refreshed), "{refreshed}");
    // The feed: the logout's entry, written moments ago.
    assert_eq!(value(&s, "auth_revocation_feed_entries"), 1.0);
    assert_eq!(value(&s, "auth_revocation_feed_head"), 1.0);
    let newest = value(&s, "auth_revocation_feed_newest_age_seconds");
    assert!((0.0..120.0).contains(&newest), "{newest}");

    // The second scrape came at once after a second logout: the feed's figures are the ones
    // read for the first (one query per 5 s, whatever the scrape rate); the rest moved on.
    let s = samples(&second);
    assert_eq!(value(&s, "auth_revocation_feed_entries"), 1.0);
    assert_eq!(value(&s, &format!("http_requests_total{login_ok}")), 2.0);
}

/// A login shed because the bcrypt queue is full is counted as such: in the hasher's shed
/// counter, as `auth_login_total{result="overloaded"}` (what the shedding panel and alert read)
/// and as a 503 of `/login`.
async fn a_shed_login_is_counted_as_overloaded(backend: Backend) {
    // One bcrypt slot, no room to wait, a bcrypt of a few hundred milliseconds.
    let app = TestApp::spawn_with(backend, |c| {
        c.bcrypt_cost = 12;
        c.hash_concurrency = 1;
        c.hash_queue = 0;
    })
    .await;
    let hasher = app.state.hasher.clone();
    let before = hasher.started();
    let first = tokio::spawn({
        let app_router = app.router.clone();
        async move {
            let request = login_json("first@example.com");
            crate::helpers::send(&app_router, request).await.status
        }
    });
    for _ in 0..5000 {
        if hasher.started() > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    let shed = app.request(login_json("second@example.com")).await;

    assert_eq!(shed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.error(), "overloaded");
    assert_eq!(first.await.unwrap(), StatusCode::UNAUTHORIZED);
    let text = app
        .get("/metrics", None)
        .await
        .body
        .as_str()
        .unwrap()
        .to_owned();
    let s = samples(&text);
    assert_eq!(value(&s, r#"auth_login_total{result="overloaded"}"#), 1.0);
    assert_eq!(value(&s, "auth_hash_shed_total"), 1.0);
    // The 503 is told apart from a fault's, for the server-error alert.
    assert_eq!(
        value(&s, r#"http_requests_shed_total{route="/login"}"#),
        1.0
    );
    assert_eq!(
        value(
            &s,
            r#"http_requests_total{route="/login",method="POST",status="503"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&s, "auth_hash_duration_seconds_count"),
        1.0,
        "the shed one hashed nothing"
    );
}

fn login_json(email: &str) -> Request<Body> {
    Request::post("/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            serde_json::json!({"email": email, "password": "wrong password entirely"}).to_string(),
        ))
        .unwrap()
}

/// Every auth-api metric named by the dashboard or the alert rules is offered by a scrape of a
/// real app, and has every label they select, group or match it by: a renamed metric or label,
/// or a typo in a panel or a rule, fails here instead of showing an empty panel or an alert
/// that never fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_auth_api_metric_of_the_dashboard_and_alerts_is_exported() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let Scraped { first, .. } = exercise(Backend::Sqlite).await;
    let exposed = catalog::exposed_names(&first);
    let labels = catalog::exposed_labels(&first);
    // The label check judges this scrape: a misspelt label on a metric it shows is caught.
    let misspelt = catalog::Expression {
        origin: "a misspelt label".to_owned(),
        text: r#"sum by (job) (rate(auth_login_total{reslt="overloaded"}[5m]))"#.to_owned(),
    };
    assert_eq!(
        catalog::label_problems(&misspelt, &labels).unwrap().len(),
        1
    );

    let mut missing = Vec::new();
    let mut checked = 0;
    for expression in catalog::expressions(root).unwrap() {
        missing.extend(catalog::label_problems(&expression, &labels).unwrap());
        for name in catalog::metric_names(&expression).unwrap() {
            if catalog::exporter(&name) == catalog::Exporter::AuthApi {
                checked += 1;
                if !exposed.contains(&name) {
                    missing.push(format!("{}: {name}", expression.origin));
                }
            }
        }
    }

    assert!(
        checked > 20,
        "only {checked} auth-api names in the dashboard and rules"
    );
    assert!(
        missing.is_empty(),
        "not exported, or without the label: {missing:#?}\n{first}"
    );
}

crate::on_every_backend!(
    histograms_and_scrape_time_gauges_have_plausible_values,
    a_shed_login_is_counted_as_overloaded,
);
