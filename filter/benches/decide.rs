//! The per-request cost of the filter's logic, natively: `decide` on a cache hit, and per
//! algorithm on a miss (full verification with `auth_jwt`'s pure-Rust crypto, what the filter
//! falls back to without the host's `verify_signature`) and on a bad signature, side by side;
//! and the hit path on a browser's request as Envoy hands it over (a dozen headers, a cookie).
//! Inside Envoy's V8 the absolute numbers are higher; `cargo xtask bench edge` measures those
//! against `jwt_authn`.

use auth_filter::{
    decide, AllowedBy, Decision, FilterConfig, RequestView, RevocationCheck, TokenCache,
    Verification,
};
use auth_jwt::{encode, Algorithm, Header, Jwk, JwkSet, Key, KeySet, RustCrypto};
use criterion::Criterion;
use rand_core::OsRng;
use serde_json::json;

const NOW: u64 = 1_700_000_000;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// One key per algorithm, each with its own kid.
fn keys() -> Result<Vec<Key>> {
    Algorithm::ALL
        .iter()
        .map(|&alg| {
            Ok(Key::generate(
                format!("k-{}", alg.as_str()),
                alg,
                &mut OsRng,
            )?)
        })
        .collect()
}

fn config(keys: &[Key]) -> Result<FilterConfig> {
    // The public JWK of each asymmetric key, the secret of the HS256 one.
    let jwks = JwkSet {
        keys: keys.iter().map(Jwk::from_key).collect(),
    };
    let config = json!({
        "issuer": "auth-service",
        "audiences": ["api"],
        "claim_to_headers": [
            {"claim_name": "sub", "header_name": "x-user-id"},
            {"claim_name": "email", "header_name": "x-user-email"},
            {"claim_name": "roles", "header_name": "x-user-roles"}
        ],
        "local_jwks": jwks,
        "rules": [{"match": {"prefix": "/"}, "require": "authenticated"}]
    });
    Ok(FilterConfig::parse(config.to_string().as_bytes())?)
}

fn token(key: &Key) -> Result<String> {
    let claims = json!({
        "iss": "auth-service", "sub": "8c5c1f0e-2a4b-4f7e-9a51-0f6f3c1d2e3f", "aud": ["api"],
        "exp": NOW + 900, "iat": NOW, "jti": "0b1f6c2e-7f4d-4c1a-8e2b-5d9a3f1c7e60",
        "sid": "5e2d7c1a-9b3f-4e8d-a6c1-2f7b9d0e4a13", "client_id": "auth-service",
        "email": "ada@example.com", "roles": ["user"],
    });
    Ok(encode(&Header::access_token(key), &claims, key)?)
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

/// A browser's request as Envoy hands it to the filter: the pseudo headers first, the headers
/// Envoy adds (`x-forwarded-proto`, `x-request-id`), and a cookie header without the token.
fn browser_headers(token: &str) -> Vec<(String, String)> {
    [
        (":authority", "api.example.com"),
        (":path", "/api/orders"),
        (":method", "GET"),
        (":scheme", "https"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/131.0.0.0 Safari/537.36",
        ),
        ("accept", "application/json, text/plain, */*"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("accept-language", "en-GB,en;q=0.9"),
        (
            "cookie",
            "_ga=GA1.1.1234567890.1700000000; theme=dark; consent=necessary%2Canalytics",
        ),
        ("authorization", &format!("Bearer {token}")),
        ("x-forwarded-proto", "https"),
        ("x-request-id", "4f0c7a8e-1d2b-4c3e-9f5a-6b7c8d9e0f1a"),
    ]
    .iter()
    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
    .collect()
}

fn view(headers: &[(String, String)]) -> RequestView<'_> {
    RequestView {
        method: "GET",
        path: "/api/orders",
        headers,
    }
}

/// The token with its signature's first character changed: the same size, a wrong signature.
fn tampered(token: &str) -> Result<String> {
    let (signed, signature) = token.rsplit_once('.').ok_or("no signature")?;
    let first = if signature.starts_with('A') { "B" } else { "A" };
    Ok(format!(
        "{signed}.{first}{}",
        signature.get(1..).unwrap_or("")
    ))
}

fn bench(c: &mut Criterion) -> Result<()> {
    let keys = keys()?;
    let config = config(&keys)?;
    let validation = config.validation();
    let verification = Verification::new(&validation, &RustCrypto);
    let key_set: KeySet = keys.iter().cloned().collect();
    // How the request was let through, if it was. The decision is dropped inside the timed
    // closure, as the filter drops it after applying it.
    let run = |headers: &[(String, String)], cache: Option<&mut TokenCache>| match decide(
        &view(headers),
        &config,
        verification,
        Some(&key_set),
        RevocationCheck::Off,
        cache,
        NOW,
    ) {
        Decision::Allow { by, .. } => Some(by),
        Decision::Deny { .. } => None,
    };

    let mut group = c.benchmark_group("decide");
    for key in &keys {
        let alg = key.algorithm().as_str();
        let good = headers(&token(key)?);
        let bad = headers(&tampered(&token(key)?)?);
        let mut cache = TokenCache::new(1024);
        if run(&good, Some(&mut cache)).is_none() {
            return Err(format!("the {alg} token is refused").into());
        }
        if run(&bad, None).is_some() {
            return Err(format!("the tampered {alg} token is allowed").into());
        }
        group.bench_function(format!("{alg}: valid token, cache hit"), |b| {
            b.iter(|| run(&good, Some(&mut cache)))
        });
        group.bench_function(format!("{alg}: valid token, no cache"), |b| {
            b.iter(|| run(&good, None))
        });
        group.bench_function(format!("{alg}: bad signature"), |b| {
            b.iter(|| run(&bad, Some(&mut cache)))
        });
    }
    // What a cached token costs however it is signed, on a realistic request.
    let hs256 = keys
        .iter()
        .find(|key| key.algorithm() == Algorithm::HS256)
        .ok_or("no HS256 key")?;
    let browser = browser_headers(&token(hs256)?);
    let mut cache = TokenCache::new(1024);
    for cache_hit in [false, true] {
        let by = run(&browser, Some(&mut cache));
        if by != Some(AllowedBy::Token { cache_hit }) {
            return Err(format!("the browser request, cache_hit {cache_hit}: {by:?}").into());
        }
    }
    group.bench_function("browser request, cache hit", |b| {
        b.iter(|| run(&browser, Some(&mut cache)))
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
