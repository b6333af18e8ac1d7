//! The revocation feed at 1,000,000 live entries (issue 10): v2 (a cursor into pages of
//! `REVOCATION_FEED_PAGE` entries) against what v1 did (every live entry, merged, hashed into
//! an ETag and sent as one JSON document), in one run on one database.
//!
//! Measured through the internal router (query + JSON encoding + body), no network:
//! - `v2 empty poll at the head`: what a gateway in sync pays every `poll_seconds`;
//! - `v2 one page`: one 10k-entry page from the middle of the feed;
//! - `v2 full sync`: every page from `after` absent until `more` is false (a gateway's start);
//! - `v1 whole feed`: v1's query of every live row, its merge, hash and JSON.
//!
//! The byte sizes of one page, a full sync and the v1 document are printed first.
//! `cargo bench -p auth-api --bench revocation_feed` (SQLite in a temporary directory), or with
//! `FEED_BENCH_DATABASE=postgres` on `AUTH_TEST_POSTGRES_URL`'s server, or `=mysql` on
//! `AUTH_TEST_MYSQL_URL`'s (a fresh database, dropped afterwards). `FEED_BENCH_ENTRIES` changes
//! the 1,000,000.

use std::{collections::BTreeMap, time::Duration};

use auth_api::{clock::Clock, routes::REVOCATION_FEED_PAGE, AppState, Config};
use axum::{
    body::Body,
    http::{header, Request, StatusCode},
    Router,
};
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::BodyExt;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::AnyPool;
use test_support::{Backend, TestDb};
use tower::ServiceExt;

const INTERNAL_TOKEN: &str = "bench-internal-token-0123456789abcdef";

/// `GET /internal/revocations?<query>`: the status, the body's byte size, and the body.
async fn get(router: &Router, query: &str) -> (usize, Value) {
    let request = Request::get(format!("/internal/revocations?{query}"))
        .header(header::AUTHORIZATION, format!("Bearer {INTERNAL_TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (bytes.len(), serde_json::from_slice(&bytes).unwrap())
}

/// The tag of seeded entry `seq` on the wire: the seed tags entry i with i.
fn tag(seq: i64) -> String {
    format!("{seq:016x}")
}

/// The next query after an answer.
fn next(answer: &Value) -> String {
    format!(
        "after={}&epoch={}&tag={}",
        answer["seq"],
        answer["epoch"].as_str().unwrap(),
        answer["tag"].as_str().unwrap()
    )
}

/// Every page from the start: (pages, bytes).
async fn full_sync(router: &Router) -> (usize, usize) {
    let (mut pages, mut total) = (0, 0);
    let mut query = String::new();
    loop {
        let (bytes, answer) = get(router, &query).await;
        pages += 1;
        total += bytes;
        if answer["more"] == false {
            return (pages, total);
        }
        query = next(&answer);
    }
}

#[derive(Serialize)]
struct V1Feed {
    version: String,
    sessions: Vec<V1Session>,
    users: Vec<V1User>,
}

#[derive(Serialize)]
struct V1Session {
    sid: String,
    until: i64,
}

#[derive(Serialize)]
struct V1User {
    sub: String,
    not_before: i64,
    until: i64,
}

/// What v1's handler did (the code removed by feed v2): one query of every live row, a merge
/// into sorted maps, a SHA-256 version over everything, one JSON document. Its byte size.
async fn v1_whole_feed(pool: &AnyPool, backend: Backend, now: i64) -> usize {
    let rows: Vec<(String, String, Option<i64>, i64)> = sqlx::query_as(match backend {
        Backend::Mysql => {
            "SELECT kind, subject, not_before, `until` FROM revocations WHERE `until` > ? ORDER BY id"
        }
        _ => "SELECT kind, subject, not_before, until FROM revocations WHERE until > $1 ORDER BY id",
    })
    .bind(now)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut sessions = BTreeMap::<String, i64>::new();
    let mut users = BTreeMap::<String, (i64, i64)>::new();
    for (kind, subject, not_before, until) in rows {
        match (kind.as_str(), not_before) {
            ("user", Some(nb)) => {
                let e = users.entry(subject).or_insert((nb, until));
                *e = (e.0.max(nb), e.1.max(until));
            }
            _ => {
                let e = sessions.entry(subject).or_insert(until);
                *e = (*e).max(until);
            }
        }
    }
    let sessions: Vec<_> = sessions
        .into_iter()
        .map(|(sid, until)| V1Session { sid, until })
        .collect();
    let users: Vec<_> = users
        .into_iter()
        .map(|(sub, (not_before, until))| V1User {
            sub,
            not_before,
            until,
        })
        .collect();
    let mut hasher = Sha256::new();
    for s in &sessions {
        hasher.update(format!("s\0{}\0{}\n", s.sid, s.until));
    }
    for u in &users {
        hasher.update(format!("u\0{}\0{}\0{}\n", u.sub, u.not_before, u.until));
    }
    let version = hasher
        .finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    serde_json::to_vec(&V1Feed {
        version,
        sessions,
        users,
    })
    .unwrap()
    .len()
}

/// `n` live entries, numbered as the store numbers them: one in ten a user entry, the others
/// sessions, each with a UUID-sized subject.
async fn seed(pool: &AnyPool, backend: Backend, n: i64, until: i64) {
    const ENTRIES: &str = "SELECT CASE WHEN i % 10 = 0 THEN 'user' ELSE 'session' END, {subject}, \
                           CASE WHEN i % 10 = 0 THEN {until} ELSE NULL END, {until}, 0, i, i FROM n";
    let statement = match backend {
        Backend::Sqlite | Backend::Postgres => {
            let subject = if backend == Backend::Sqlite {
                "printf('%08x-0000-4000-8000-%012x', i, i)"
            } else {
                "lpad(to_hex(i), 8, '0') || '-0000-4000-8000-' || lpad(to_hex(i), 12, '0')"
            };
            format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
                 INSERT INTO revocations (kind, subject, not_before, until, created_at, seq, tag) {}",
                ENTRIES
                    .replace("{subject}", subject)
                    .replace("{until}", &until.to_string())
            )
        }
        // MariaDB stops a recursive CTE at 1,000 rows by default: the numbers come from a cross
        // join of digits instead, as many as `n` has.
        Backend::Mysql => {
            let digits = n.max(1).to_string().len();
            let tables: Vec<String> = (0..digits).map(|k| format!("d d{k}")).collect();
            let number: Vec<String> = (0..digits)
                .map(|k| format!("{} * d{k}.x", 10_i64.pow(u32::try_from(k).unwrap())))
                .collect();
            format!(
                "INSERT INTO revocations (kind, subject, not_before, `until`, created_at, seq, tag) \
                 WITH d(x) AS (SELECT 0 UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
                               UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 \
                               UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9), \
                      n(i) AS (SELECT 1 + {} FROM {} WHERE {} < {n}) {}",
                number.join(" + "),
                tables.join(", "),
                number.join(" + "),
                ENTRIES
                    .replace(
                        "{subject}",
                        "LOWER(CONCAT(LPAD(HEX(i), 8, '0'), '-0000-4000-8000-', LPAD(HEX(i), 12, '0')))"
                    )
                    .replace("{until}", &until.to_string())
            )
        }
    };
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(&statement).execute(&mut *tx).await.unwrap();
    // Entry i is tagged i, and the head takes its entry's tag (see `tag`).
    sqlx::query(&format!(
        "UPDATE revocation_feed SET seq = {n}, tag = {n} WHERE id = 1"
    ))
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let analyze = match backend {
        Backend::Postgres => Some("ANALYZE revocations"),
        Backend::Mysql => Some("ANALYZE TABLE revocations"),
        Backend::Sqlite => None,
    };
    if let Some(analyze) = analyze {
        sqlx::query(analyze).execute(pool).await.unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let backend = match std::env::var("FEED_BENCH_DATABASE").as_deref() {
        Ok("postgres") => Backend::Postgres,
        Ok("mysql") => Backend::Mysql,
        _ => Backend::Sqlite,
    };
    let entries: i64 = std::env::var("FEED_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let (_db, router, pool, now) = runtime.block_on(async {
        let (db, url) = TestDb::create(backend).await;
        let config = Config {
            database_url: url.clone(),
            internal_token: Some(INTERNAL_TOKEN.to_owned().into()),
            key_encryption_keys: Some(test_support::TEST_KEK.parse().unwrap()),
            ..Config::default()
        };
        let state = AppState::new(config, Clock::default()).await.unwrap();
        sqlx::any::install_default_drivers();
        let pool = AnyPool::connect(&url).await.unwrap();
        let now = state.clock.now();
        let started = std::time::Instant::now();
        seed(&pool, backend, entries, now + 3600).await;
        println!(
            "{backend:?}: seeded {entries} live entries in {:.1?}",
            started.elapsed()
        );
        (db, auth_api::internal_router(state), pool, now)
    });

    // Sizes, once.
    let (head_query, middle_query) = runtime.block_on(async {
        let (_, head) = get(&router, "").await;
        let epoch = head["epoch"].as_str().unwrap().to_owned();
        let (pages, bytes) = full_sync(&router).await;
        let middle = format!(
            "after={}&epoch={epoch}&tag={}",
            entries / 2,
            tag(entries / 2)
        );
        let (page_bytes, page) = get(&router, &middle).await;
        assert_eq!(page["full"], false, "the cursor resumes");
        let v1_bytes = v1_whole_feed(&pool, backend, now).await;
        println!(
            "{backend:?}: one page of {} entries: {page_bytes} bytes; full sync: {pages} pages, \
             {bytes} bytes; v1 whole feed: {v1_bytes} bytes",
            page["sessions"].as_array().unwrap().len() + page["users"].as_array().unwrap().len(),
        );
        (
            format!("after={entries}&epoch={epoch}&tag={}", tag(entries)),
            middle,
        )
    });
    assert_eq!(REVOCATION_FEED_PAGE, 10_000);

    let mut group = c.benchmark_group(format!("revocation feed, {entries} live entries"));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function(format!("{backend:?}: v2 empty poll at the head"), |b| {
        b.iter(|| runtime.block_on(get(&router, &head_query)))
    });
    group.bench_function(format!("{backend:?}: v2 one page"), |b| {
        b.iter(|| runtime.block_on(get(&router, &middle_query)))
    });
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function(format!("{backend:?}: v2 full sync"), |b| {
        b.iter(|| runtime.block_on(full_sync(&router)))
    });
    group.bench_function(format!("{backend:?}: v1 whole feed"), |b| {
        b.iter(|| runtime.block_on(v1_whole_feed(&pool, backend, now)))
    });
    group.finish();
    runtime.block_on(pool.close());
}

criterion_group!(benches, bench);
criterion_main!(benches);
