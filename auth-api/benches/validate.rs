//! Where the time of `/validate` goes (issue 11), in one run on one database, without HTTP:
//!
//! - one ES256 verification by `auth-jwt`'s pure-Rust `p256` ([`RustCrypto`]), by `ring`
//!   ([`NativeCrypto`]), and a hit of the verified-signature memo ([`SignatureCache`]);
//! - `service::access::verify` (the whole `auth-jwt` decode and claim checks, memo hits);
//! - `service::access::check_session` (the store's `token_status`, one query), one at a time;
//! - `service::access::validate` (both) with `VALIDATE_BENCH_TASKS` (32) concurrent tasks on a
//!   2-thread runtime, over `VALIDATE_BENCH_TOKENS` (64) tokens of as many sessions: requests
//!   per second, the bound of the handler without HTTP;
//! - the store's `token_status` query alone, by as many tasks, through two pools of its own:
//!   sqlx's default (`test_before_acquire`: a ping, one more round trip, before each query),
//!   as `Store` has it, and without that ping.
//!
//! First a criterion group of the per-call costs, then the same measurements alternated in
//! rounds (`VALIDATE_BENCH_ROUNDS`, 5), so that a busy neighbour hits each alike; the medians
//! over rounds are printed. `cargo bench -p auth-api --bench validate` runs on SQLite in a
//! temporary directory; `VALIDATE_BENCH_DATABASE=postgres` on `AUTH_TEST_POSTGRES_URL`'s server
//! (a fresh database, dropped after).

use std::{
    future::Future,
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use auth_api::{
    clock::Clock,
    service::access,
    signatures::{NativeCrypto, SignatureCache},
    AppState, Config,
};
use auth_jwt::{Key, RustCrypto, Verifier};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use criterion::Criterion;
use sqlx::{any::AnyPoolOptions, AnyPool};
use test_support::{Backend, TestDb};

const PASSWORD: &str = "correct horse battery staple";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A state on a fresh database and `n` access tokens, each of its own session.
async fn setup(backend: Backend, n: usize) -> (TestDb, AppState, Vec<String>, String) {
    let (db, url) = TestDb::create(backend).await;
    let config = Config {
        database_url: url.clone(),
        bcrypt_cost: 10,
        key_encryption_keys: Some(test_support::TEST_KEK.parse().unwrap()),
        ..Config::default()
    };
    let state = AppState::new(config, Clock::default()).await.unwrap();
    let email = "bench-validate@example.com";
    auth_api::service::accounts::signup(&state, email, PASSWORD)
        .await
        .unwrap();
    let mut tokens = Vec::with_capacity(n);
    for _ in 0..n {
        let pair = auth_api::service::accounts::login(&state, email, PASSWORD, None)
            .await
            .unwrap();
        tokens.push(pair.access_token);
    }
    (db, state, tokens, url)
}

/// The key, signing input and raw signature of `token`.
fn parts(state: &AppState, token: &str) -> (Key, Vec<u8>, Vec<u8>) {
    let (input, signature) = token.rsplit_once('.').unwrap();
    let header = URL_SAFE_NO_PAD
        .decode(token.split('.').next().unwrap())
        .unwrap();
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    let key = state
        .ring
        .snapshot()
        .verification_keys()
        .get(header["kid"].as_str().unwrap())
        .unwrap()
        .clone();
    (
        key,
        input.as_bytes().to_vec(),
        URL_SAFE_NO_PAD.decode(signature).unwrap(),
    )
}

/// Median seconds per call of `f` over `iterations` calls.
fn per_call(iterations: u32, mut f: impl FnMut()) -> f64 {
    let started = Instant::now();
    for _ in 0..iterations {
        f();
    }
    started.elapsed().as_secs_f64() / f64::from(iterations)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// The query of `Store::token_status` (PostgreSQL and SQLite spelling).
const TOKEN_STATUS: &str = "SELECT s.user_id, s.revoked_at, s.expires_at, u.disabled_at, \
     u.tokens_valid_after, (SELECT k.revoked_at FROM signing_keys k WHERE k.kid = $2) \
     AS key_revoked_at FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1";

/// Calls per second of `call` by `tasks` concurrent tasks for `secs`. Each task owns a clone of
/// `context`, which every call takes and hands back (so that no call clones it, and only the
/// call is measured); task `t`'s `n`-th call gets `t + n * tasks`, so that the tasks go through
/// the caller's items in turn.
async fn rate<C, F, Fut>(context: &C, tasks: usize, secs: f64, call: F) -> f64
where
    C: Clone + Send + 'static,
    F: Fn(C, usize) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = C> + Send,
{
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let mut context = context.clone();
            tokio::spawn(async move {
                let mut n = 0_usize;
                while Instant::now() < deadline {
                    context = call(context, t + n * tasks).await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut calls = 0;
    for handle in handles {
        calls += handle.await.unwrap();
    }
    #[allow(clippy::cast_precision_loss)] // small counts
    let rate = calls as f64 / started.elapsed().as_secs_f64();
    rate
}

/// `TOKEN_STATUS` by `tasks` concurrent tasks over `sessions` for `secs` on `pool`: queries
/// per second.
async fn query_rate(
    pool: &AnyPool,
    sessions: &Arc<Vec<(String, String)>>,
    tasks: usize,
    secs: f64,
) -> f64 {
    let context = (pool.clone(), Arc::clone(sessions));
    rate(&context, tasks, secs, |(pool, sessions), i| async move {
        let (sid, kid) = &sessions[i % sessions.len()];
        let row = sqlx::query(TOKEN_STATUS)
            .bind(sid)
            .bind(kid)
            .fetch_optional(&pool)
            .await
            .unwrap();
        assert!(row.is_some());
        (pool, sessions)
    })
    .await
}

/// `validate` by `tasks` concurrent tasks over `tokens` for `secs`: calls per second.
async fn validate_rate(
    state: &AppState,
    tokens: &Arc<Vec<String>>,
    tasks: usize,
    secs: f64,
) -> f64 {
    let context = (state.clone(), Arc::clone(tokens));
    rate(&context, tasks, secs, |(state, tokens), i| async move {
        access::validate(&state, &tokens[i % tokens.len()])
            .await
            .unwrap();
        (state, tokens)
    })
    .await
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let backend = match std::env::var("VALIDATE_BENCH_DATABASE").as_deref() {
        Ok("postgres") => Backend::Postgres,
        Ok("mysql") => Backend::Mysql,
        _ => Backend::Sqlite,
    };
    let n = env_or("VALIDATE_BENCH_TOKENS", 64).max(1);
    let tasks = env_or("VALIDATE_BENCH_TASKS", 32).max(1);
    let rounds = env_or("VALIDATE_BENCH_ROUNDS", 5).max(1);
    let (db, state, tokens, url) = runtime.block_on(setup(backend, n));
    let tokens = Arc::new(tokens);
    let (key, input, signature) = parts(&state, &tokens[0]);
    let memo = SignatureCache::new(NativeCrypto, 1 << 16);
    memo.verify(&key, &input, &signature).unwrap();
    println!(
        "{backend:?}: {} tokens of {} sessions, {} bytes each, alg {}",
        tokens.len(),
        tokens.len(),
        tokens[0].len(),
        key.algorithm().as_str()
    );

    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    {
        let mut group = c.benchmark_group(format!("validate parts, {backend:?}"));
        group.bench_function("ES256 verify, pure Rust (p256)", |b| {
            b.iter(|| RustCrypto.verify(&key, black_box(&input), black_box(&signature)))
        });
        group.bench_function("ES256 verify, ring", |b| {
            b.iter(|| NativeCrypto.verify(&key, black_box(&input), black_box(&signature)))
        });
        group.bench_function("ES256 verify, memo hit", |b| {
            b.iter(|| memo.verify(&key, black_box(&input), black_box(&signature)))
        });
        group.bench_function("access::verify (decode, memo hit)", |b| {
            b.iter(|| runtime.block_on(access::verify(&state, black_box(&tokens[0]))))
        });
        group.bench_function("access::check_session (one query)", |b| {
            let verified = runtime
                .block_on(access::verify(&state, &tokens[0]))
                .unwrap();
            b.iter(|| runtime.block_on(access::check_session(&state, &verified)))
        });
        group.finish();
    }

    // The same, alternated in rounds, then the concurrent rate.
    let sessions: Arc<Vec<(String, String)>> = Arc::new(
        tokens
            .iter()
            .map(|token| {
                let verified = runtime.block_on(access::verify(&state, token)).unwrap();
                (verified.typed.sid, verified.kid)
            })
            .collect(),
    );
    let pools = [true, false].map(|ping| {
        runtime.block_on(async {
            AnyPoolOptions::new()
                .max_connections(16)
                .test_before_acquire(ping)
                .connect(&url)
                .await
                .unwrap()
        })
    });
    let names = [
        "ES256 verify, pure Rust (p256)",
        "ES256 verify, ring",
        "ES256 verify, memo hit",
        "access::verify (decode, memo hit)",
        "access::check_session, one at a time",
        "access::validate, calls/s",
        "token_status query, pool with ping, calls/s",
        "token_status query, pool without ping, calls/s",
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let verified = runtime
        .block_on(access::verify(&state, &tokens[0]))
        .unwrap();
    for round in 0..rounds {
        let row = [
            per_call(300, || {
                RustCrypto.verify(&key, &input, &signature).unwrap();
            }),
            per_call(3000, || {
                NativeCrypto.verify(&key, &input, &signature).unwrap();
            }),
            per_call(30_000, || {
                memo.verify(&key, &input, &signature).unwrap();
            }),
            per_call(10_000, || {
                runtime
                    .block_on(access::verify(&state, &tokens[0]))
                    .unwrap();
            }),
            per_call(2000, || {
                runtime
                    .block_on(access::check_session(&state, &verified))
                    .unwrap();
            }),
            runtime.block_on(validate_rate(&state, &tokens, tasks, 2.0)),
            runtime.block_on(query_rate(&pools[0], &sessions, tasks, 2.0)),
            runtime.block_on(query_rate(&pools[1], &sessions, tasks, 2.0)),
        ];
        let [a, b, c, d, e, rate, ping, no_ping] = row;
        println!(
            "round {}/{rounds}: {:.2} / {:.2} / {:.2} / {:.2} / {:.2} µs, {rate:.0} calls/s, \
             query {ping:.0} / {no_ping:.0} /s",
            round + 1,
            a * 1e6,
            b * 1e6,
            c * 1e6,
            d * 1e6,
            e * 1e6
        );
        for (sample, value) in samples.iter_mut().zip(row) {
            sample.push(value);
        }
    }
    println!("\n{backend:?}, medians over {rounds} rounds:");
    for (name, sample) in names.iter().zip(samples) {
        let m = median(sample);
        if name.ends_with("calls/s") {
            println!("  {name:<48} {m:>10.0} /s ({tasks} tasks, 2 threads)");
        } else {
            println!("  {name:<48} {:>10.2} µs", m * 1e6);
        }
    }
    for pool in pools {
        runtime.block_on(pool.close());
    }
    runtime.block_on(state.store.close());
    drop(state);
    drop(db);
}
