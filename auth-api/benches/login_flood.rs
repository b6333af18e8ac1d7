//! What a login flood does to the rest of the API: the latency of `/refresh` and `/validate`
//! with the service idle and during a flood of logins that saturates the bcrypt pool, side by
//! side in one run. The flood's own figures (logins served, logins shed with 503) are printed
//! at the end. `cargo bench -p auth-api --bench login_flood`.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use auth_api::{clock::Clock, AppState, Config};
use axum::{
    body::Body,
    http::{header, Request, StatusCode},
    Router,
};
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

async fn post(router: &Router, path: &str, body: Value) -> (StatusCode, Value) {
    let request = Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn validate(router: &Router, token: &str) -> StatusCode {
    let request = Request::get("/validate")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    router.clone().oneshot(request).await.unwrap().status()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        database_url: format!("sqlite://{}", dir.path().join("auth.db").display()),
        bcrypt_cost: 10,
        hash_concurrency: 1,
        hash_queue: 4,
        ..Config::default()
    };
    let router = runtime.block_on(async {
        let state = AppState::new(config, Clock::default()).await.unwrap();
        auth_api::router(state)
    });
    let credentials =
        json!({"email": "bench@example.com", "password": "correct horse battery staple"});
    let (tokens, refresh) = runtime.block_on(async {
        post(&router, "/signup", credentials.clone()).await;
        let (_, login) = post(&router, "/login", credentials).await;
        let access = login["access_token"].as_str().unwrap().to_owned();
        (access, login["refresh_token"].as_str().unwrap().to_owned())
    });
    let refresh = Mutex::new(refresh);
    let mut refresh_once = || {
        runtime.block_on(async {
            let current = refresh.lock().unwrap().clone();
            let (status, body) = post(&router, "/refresh", json!({"refresh_token": current})).await;
            assert_eq!(status, StatusCode::OK);
            *refresh.lock().unwrap() = body["refresh_token"].as_str().unwrap().to_owned();
        })
    };

    let mut group = c.benchmark_group("during a login flood");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("refresh, idle", |b| b.iter(&mut refresh_once));
    group.bench_function("validate, idle", |b| {
        b.iter(|| {
            runtime.block_on(async { assert_eq!(validate(&router, &tokens).await, StatusCode::OK) })
        })
    });

    // Eight clients logging in as fast as they can: the pool (one bcrypt at a time, four
    // waiting) is saturated for the whole measurement.
    let stop = Arc::new(AtomicBool::new(false));
    let (served, shed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    for client in 0..8 {
        let (router, stop, served, shed) = (
            router.clone(),
            Arc::clone(&stop),
            Arc::clone(&served),
            Arc::clone(&shed),
        );
        runtime.spawn(async move {
            let mut i = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body = json!({"email": format!("flood-{client}-{i}@example.com"), "password": "wrong password entirely"});
                match post(&router, "/login", body).await.0 {
                    StatusCode::SERVICE_UNAVAILABLE => shed.fetch_add(1, Ordering::Relaxed),
                    _ => served.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    std::thread::sleep(Duration::from_millis(500));
    group.bench_function("refresh, during the flood", |b| b.iter(&mut refresh_once));
    group.bench_function("validate, during the flood", |b| {
        b.iter(|| {
            runtime.block_on(async { assert_eq!(validate(&router, &tokens).await, StatusCode::OK) })
        })
    });
    group.finish();
    stop.store(true, Ordering::Relaxed);
    println!(
        "login flood: {} logins checked (bcrypt), {} shed at once with 503 overloaded",
        served.load(Ordering::Relaxed),
        shed.load(Ordering::Relaxed)
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
