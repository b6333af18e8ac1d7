//! The per-request cost of the filter's logic, natively: `decide` on a cache hit, on a miss
//! (full verification), and on a bad signature, side by side. Inside Envoy's V8 the absolute
//! numbers are higher; `cargo xtask bench edge` measures those against `jwt_authn`.

use auth_filter::{
    cache::TokenCache,
    config::FilterConfig,
    decide::{decide, Decision, RequestView, RevocationCheck},
};
use auth_jwt::{encode, Header, Key, KeySet};
use criterion::Criterion;
use serde_json::json;

const NOW: u64 = 1_700_000_000;
const SECRET: &[u8] = b"bench-secret-bench-secret-bench-";

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn config() -> Result<FilterConfig> {
    let jwk = auth_jwt::Jwk::from_key(&Key::hs256("k1", SECRET)?);
    let config = json!({
        "issuer": "auth-service",
        "audiences": ["api"],
        "claim_to_headers": [
            {"claim_name": "sub", "header_name": "x-user-id"},
            {"claim_name": "email", "header_name": "x-user-email"},
            {"claim_name": "roles", "header_name": "x-user-roles"}
        ],
        "local_jwks": {"keys": [jwk]},
        "rules": [{"match": {"prefix": "/"}, "require": "authenticated"}]
    });
    Ok(FilterConfig::parse(config.to_string().as_bytes())?)
}

fn token() -> Result<String> {
    let claims = json!({
        "iss": "auth-service", "sub": "8c5c1f0e-2a4b-4f7e-9a51-0f6f3c1d2e3f", "aud": ["api"],
        "exp": NOW + 900, "iat": NOW, "jti": "0b1f6c2e-7f4d-4c1a-8e2b-5d9a3f1c7e60",
        "sid": "5e2d7c1a-9b3f-4e8d-a6c1-2f7b9d0e4a13", "client_id": "auth-service",
        "email": "ada@example.com", "roles": ["user"],
    });
    Ok(encode(
        &Header::access_token("k1"),
        &claims,
        &Key::hs256("k1", SECRET)?,
    )?)
}

fn headers(token: &str) -> Vec<(String, String)> {
    [
        (":method", "GET"),
        (":path", "/api/orders"),
        (":authority", "gateway"),
        ("user-agent", "bench"),
        ("accept", "*/*"),
        ("authorization", &format!("Bearer {token}")),
        ("x-request-id", "4f0c7a8e-1d2b-4c3e-9f5a-6b7c8d9e0f1a"),
    ]
    .iter()
    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
    .collect()
}

fn run(
    config: &FilterConfig,
    keys: &KeySet,
    headers: &[(String, String)],
    cache: Option<&mut TokenCache>,
) -> Decision {
    let view = RequestView {
        method: "GET",
        path: "/api/orders",
        headers,
    };
    decide(
        &view,
        config,
        &config.validation(),
        Some(keys),
        RevocationCheck::Off,
        cache,
        NOW,
    )
}

fn bench(c: &mut Criterion) -> Result<()> {
    let config = config()?;
    let validation = config.validation();
    let keys: KeySet = [Key::hs256("k1", SECRET)?].into_iter().collect();
    let good = headers(&token()?);
    let mut bad_token = token()?;
    bad_token.replace_range(bad_token.len() - 2.., "AA");
    let bad = headers(&bad_token);
    let view = |headers| RequestView {
        method: "GET",
        path: "/api/orders",
        headers,
    };

    let mut group = c.benchmark_group("decide");
    let mut cache = TokenCache::new(1024);
    assert!(matches!(
        run(&config, &keys, &good, Some(&mut cache)),
        Decision::Allow { .. }
    ));
    group.bench_function("valid token, cache hit", |b| {
        b.iter(|| {
            decide(
                &view(&good),
                &config,
                &validation,
                Some(&keys),
                RevocationCheck::Off,
                Some(&mut cache),
                NOW,
            )
        })
    });
    group.bench_function("valid token, no cache", |b| {
        b.iter(|| {
            decide(
                &view(&good),
                &config,
                &validation,
                Some(&keys),
                RevocationCheck::Off,
                None,
                NOW,
            )
        })
    });
    group.bench_function("bad signature", |b| {
        b.iter(|| {
            decide(
                &view(&bad),
                &config,
                &validation,
                Some(&keys),
                RevocationCheck::Off,
                Some(&mut cache),
                NOW,
            )
        })
    });
    group.finish();
    Ok(())
}

/// What `criterion_main!` would generate, except that a failed set-up is an error exit.
fn main() -> Result<()> {
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion)?;
    criterion.final_summary();
    Ok(())
}
