//! `cargo xtask bench edge`: what the auth filter costs at the edge, next to Envoy's native
//! `jwt_authn` and to the wasm runtime's own floor.
//!
//! One Envoy (`--concurrency 1`, pinned to one CPU) serves one loopback listener per
//! configuration, each routing to a `direct_response`, so that only the HTTP filters cost. wrk
//! (one thread, pinned to another CPU) loads the configurations in turn, round after round
//! (A B C … A B C …), so that a noisy neighbour on a shared machine hits all of them alike.
//! Around each run Envoy's CPU time is read from `/proc`, which gives CPU microseconds per
//! request independently of how busy the load generator's CPU was.
//!
//! HS256 is measured against every reference (no filter, a no-op wasm filter, `jwt_authn` with and
//! without its cache, on valid and badly signed tokens); ES256, EdDSA and RS256 each get native
//! `jwt_authn` (default and cached) and ours (cache on and off) with the same key. Before
//! measuring, a probe reads our `auth_filter.signature.*` counters around a few uncached requests
//! per algorithm, which tells whether Envoy's `verify_signature` (host crypto) did the work.
//!
//! The report (medians over rounds) is printed as a Markdown table and written to
//! `target/bench-edge.md`.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context as _};
use auth_jwt::{encode, Algorithm, Header, Jwk, JwkSet, Key};
use clap::{Args, Subcommand};
use envoy_harness::{Envoy, Launch};
use reqwest::blocking::Client;
use serde_json::{json, Value};

use crate::{
    bench_load::{
        allowed_cpus, ensure_load_tools, interrupted, median, or_interrupted, Wrk, WrkOutput,
    },
    report::{machine, publish, push_notes, source_commit},
    tools::{ensure_envoy, run, step},
};

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub(crate) enum Bench {
    /// Requests/s, latency and Envoy CPU per request: no filter, a no-op wasm filter, native
    /// `jwt_authn` (with and without its cache) and ours (with and without its cache), on
    /// valid and on badly signed HS256 tokens, and on ES256, EdDSA and RS256 tokens.
    Edge(EdgeArgs),
    /// auth-api (release) on each store: logins/s beside the bcrypt bound, refreshes/s beside
    /// the store's in-process bound, `/validate`/s, with p50/p99.
    Api(crate::bench_api::ApiArgs),
}

/// Options of `cargo xtask bench edge`.
#[derive(Debug, Args)]
pub(crate) struct EdgeArgs {
    /// Seconds of load per configuration and round.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=600))]
    seconds: u32,
    /// Rounds; each round runs every configuration once, in the same order.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// Open connections held by the load generator.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connections: u32,
    /// Seconds of unrecorded load per configuration before the first round (V8 tiering, caches);
    /// 0 skips the warm-up.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=600))]
    warmup: u32,
    /// First loopback port; the eighteen listeners take it and the next seventeen, and Envoy's
    /// admin interface the one after.
    #[arg(long, default_value_t = 18100)]
    base_port: u16,
}

pub(crate) fn bench(root: &Path, bench: &Bench) -> anyhow::Result<()> {
    match bench {
        Bench::Edge(args) => edge(root, args),
        Bench::Api(args) => crate::bench_api::api(root, args),
    }
}

// ---------------------------------------------------------------------------------------------
// What is measured.

/// The token settings shared by our filter and `jwt_authn`.
const ISSUER: &str = "auth-service";
const AUDIENCE: &str = "api";
/// A fixed HS256 secret (exactly 32 bytes): only ever used on loopback by this benchmark. The
/// public-key algorithms get a fresh key pair each run.
const SECRET: &[u8; 32] = b"auth-service edge benchmark key!";
const SUBJECT: &str = "bench-user";
/// The body of every `direct_response`.
const BODY: &str = "ok\n";
/// A path routed like `/`, whose answer also echoes the `x-user-id` the filters set; only the
/// pre-flight checks use it.
const CHECK_PATH: &str = "/check";

/// Which auth filter a listener runs, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Filter {
    None,
    NoopWasm,
    JwtAuthn,
    JwtAuthnCache,
    OursCache,
    OursNoCache,
}

impl Filter {
    fn name(self) -> &'static str {
        match self {
            Filter::None => "none",
            Filter::NoopWasm => "noop-wasm",
            Filter::JwtAuthn => "jwt_authn",
            Filter::JwtAuthnCache => "jwt_authn+cache",
            Filter::OursCache => "ours+cache",
            Filter::OursNoCache => "ours-nocache",
        }
    }

    /// Whether the listener checks tokens (else everything passes).
    fn authenticates(self) -> bool {
        !matches!(self, Filter::None | Filter::NoopWasm)
    }
}

/// One listener of the benchmark Envoy: a filter, and the algorithm of its key (and of the
/// tokens sent to it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Listener {
    filter: Filter,
    alg: Algorithm,
}

const fn listener(filter: Filter, alg: Algorithm) -> Listener {
    Listener { filter, alg }
}

/// HS256 with the reference points (no filter, a no-op wasm filter), then per public-key
/// algorithm native `jwt_authn` (default and cached) and ours (cache on and off).
const LISTENERS: [Listener; 18] = [
    listener(Filter::None, Algorithm::HS256),
    listener(Filter::NoopWasm, Algorithm::HS256),
    listener(Filter::JwtAuthn, Algorithm::HS256),
    listener(Filter::JwtAuthnCache, Algorithm::HS256),
    listener(Filter::OursCache, Algorithm::HS256),
    listener(Filter::OursNoCache, Algorithm::HS256),
    listener(Filter::JwtAuthn, Algorithm::ES256),
    listener(Filter::JwtAuthnCache, Algorithm::ES256),
    listener(Filter::OursCache, Algorithm::ES256),
    listener(Filter::OursNoCache, Algorithm::ES256),
    listener(Filter::JwtAuthn, Algorithm::EdDSA),
    listener(Filter::JwtAuthnCache, Algorithm::EdDSA),
    listener(Filter::OursCache, Algorithm::EdDSA),
    listener(Filter::OursNoCache, Algorithm::EdDSA),
    listener(Filter::JwtAuthn, Algorithm::RS256),
    listener(Filter::JwtAuthnCache, Algorithm::RS256),
    listener(Filter::OursCache, Algorithm::RS256),
    listener(Filter::OursNoCache, Algorithm::RS256),
];

impl Listener {
    /// The Envoy listener name, e.g. `ours+cache` (HS256) or `ours+cache-ES256`.
    fn name(self) -> String {
        if self.alg == Algorithm::HS256 {
            self.filter.name().to_owned()
        } else {
            format!("{}-{}", self.filter.name(), self.alg)
        }
    }

    fn index(self) -> usize {
        LISTENERS
            .iter()
            .position(|&l| l == self)
            .unwrap_or_default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TokenKind {
    Valid,
    /// The valid token with one signature character changed.
    Bad,
    /// The valid claims signed by a key the listener does not know (another `kid`).
    UnknownKid,
}

impl TokenKind {
    fn name(self) -> &'static str {
        match self {
            TokenKind::Valid => "valid",
            TokenKind::Bad => "bad signature",
            TokenKind::UnknownKid => "unknown kid",
        }
    }
}

/// One measured configuration: a listener and the token every request carries.
#[derive(Clone, Copy, Debug)]
struct Case {
    listener: Listener,
    token: TokenKind,
}

const fn case(filter: Filter, alg: Algorithm, token: TokenKind) -> Case {
    Case {
        listener: listener(filter, alg),
        token,
    }
}

/// In the order of every round. `none` and `noop-wasm` get the valid token too, so that all
/// requests have the same size. Refused tokens (badly signed, or of an unknown `kid`) are
/// measured with HS256 only: with a public key, refusing a badly signed one costs the same
/// verification as accepting one, and an unknown `kid` none at all.
const CASES: [Case; 26] = [
    case(Filter::None, Algorithm::HS256, TokenKind::Valid),
    case(Filter::NoopWasm, Algorithm::HS256, TokenKind::Valid),
    case(Filter::JwtAuthn, Algorithm::HS256, TokenKind::Valid),
    case(Filter::JwtAuthnCache, Algorithm::HS256, TokenKind::Valid),
    case(Filter::OursCache, Algorithm::HS256, TokenKind::Valid),
    case(Filter::OursNoCache, Algorithm::HS256, TokenKind::Valid),
    case(Filter::JwtAuthn, Algorithm::HS256, TokenKind::Bad),
    case(Filter::JwtAuthnCache, Algorithm::HS256, TokenKind::Bad),
    case(Filter::OursCache, Algorithm::HS256, TokenKind::Bad),
    case(Filter::OursNoCache, Algorithm::HS256, TokenKind::Bad),
    case(Filter::JwtAuthn, Algorithm::HS256, TokenKind::UnknownKid),
    case(
        Filter::JwtAuthnCache,
        Algorithm::HS256,
        TokenKind::UnknownKid,
    ),
    case(Filter::OursCache, Algorithm::HS256, TokenKind::UnknownKid),
    case(Filter::OursNoCache, Algorithm::HS256, TokenKind::UnknownKid),
    case(Filter::JwtAuthn, Algorithm::ES256, TokenKind::Valid),
    case(Filter::JwtAuthnCache, Algorithm::ES256, TokenKind::Valid),
    case(Filter::OursCache, Algorithm::ES256, TokenKind::Valid),
    case(Filter::OursNoCache, Algorithm::ES256, TokenKind::Valid),
    case(Filter::JwtAuthn, Algorithm::EdDSA, TokenKind::Valid),
    case(Filter::JwtAuthnCache, Algorithm::EdDSA, TokenKind::Valid),
    case(Filter::OursCache, Algorithm::EdDSA, TokenKind::Valid),
    case(Filter::OursNoCache, Algorithm::EdDSA, TokenKind::Valid),
    case(Filter::JwtAuthn, Algorithm::RS256, TokenKind::Valid),
    case(Filter::JwtAuthnCache, Algorithm::RS256, TokenKind::Valid),
    case(Filter::OursCache, Algorithm::RS256, TokenKind::Valid),
    case(Filter::OursNoCache, Algorithm::RS256, TokenKind::Valid),
];

impl Case {
    fn expected_status(self) -> u16 {
        if self.token != TokenKind::Valid && self.listener.filter.authenticates() {
            401
        } else {
            200
        }
    }

    /// The native `jwt_authn` case this one's throughput is compared with: the same algorithm
    /// and key, and the same token.
    fn reference(self, cached: bool) -> usize {
        let filter = if cached {
            Filter::JwtAuthnCache
        } else {
            Filter::JwtAuthn
        };
        let token = if self.listener.filter.authenticates() {
            self.token
        } else {
            TokenKind::Valid
        };
        CASES
            .iter()
            .position(|c| c.listener == listener(filter, self.listener.alg) && c.token == token)
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// The command.

fn edge(root: &Path, args: &EdgeArgs) -> anyhow::Result<()> {
    step("wasm target", || {
        run(root, "rustup", &["target", "add", "wasm32-wasip1"])
    })?;
    let envoy_bin = step("Envoy", || ensure_envoy(root))?;
    step("wrk and taskset", ensure_load_tools)?;
    let auth_wasm = step("build the filter (wasm32-wasip1)", || {
        crate::build_filter(root)
    })?;
    let noop_wasm = step("build the no-op filter (wasm32-wasip1)", || {
        crate::tools::build_wasm(root, "noop-filter")
    })?;
    let target = crate::tools::target_dir(root);
    let work = target.join("bench-edge");
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    // Envoy loads copies, so that a build running alongside cannot swap a module under it.
    let auth_wasm = copy_into(&auth_wasm, &work)?;
    let noop_wasm = copy_into(&noop_wasm, &work)?;
    let filter_source = source_commit(root, &["filter", "jwt"]);
    let cpus = pinning();
    let ports = step("free ports", || ports(args.base_port))?;
    let tokens = tokens()?;

    let config = envoy_config(&ports, &tokens, &auth_wasm, &noop_wasm);
    let config = serde_json::to_string_pretty(&config)?;

    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("cannot catch Ctrl-C")?;

    // Its configuration (envoy.json), admin address and log (envoy.log) go to `work`.
    let mut envoy = step("start Envoy", || {
        Ok(Launch::new(&envoy_bin, config)
            .concurrency(1)
            .log_level("error")
            .pin_to_cpu(cpus.map(|(envoy, _)| envoy))
            .work_dir(&work)
            .start()?)
    })?;
    let client = control_client()?;
    step("check every configuration", || {
        check_answers(&mut envoy, &client, &ports, &tokens)
    })?;
    let host_crypto = step("who checks the signatures (host crypto or wasm)", || {
        probe_signatures(&envoy, &client, &ports, &tokens)
    })?;
    drop(client);

    let load_cpu = cpus.map(|(_, load)| load);
    let load = |case: Case, seconds: u32| Load {
        load_cpu,
        port: ports.of(case.listener),
        token: tokens.of(case.listener.alg).token(case.token),
        seconds,
        connections: args.connections,
    };
    if args.warmup > 0 {
        step("warm-up", || {
            for case in CASES {
                interrupted(&stop)?;
                load(case, args.warmup).run()?;
                envoy.ensure_running()?;
            }
            Ok(())
        })
        .map_err(|e| or_interrupted(e, &stop))?;
    }

    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); CASES.len()];
    let mut notes = Vec::new();
    step("measure", || {
        for round in 1..=args.rounds {
            for (i, case) in CASES.iter().enumerate() {
                interrupted(&stop)?;
                let before = envoy.cpu_seconds()?;
                let out = load(*case, args.seconds).run()?;
                let after = envoy.cpu_seconds()?;
                envoy.ensure_running()?;
                let label = format!("{} ({})", case.listener.name(), case.token.name());
                if let Err(e) = check_statuses(*case, &out) {
                    bail!("{label}, round {round}: {e}{}", envoy.log_tail());
                }
                if let Some(errors) = &out.socket_errors {
                    notes.push(format!("round {round}, {label}: socket errors: {errors}"));
                }
                #[allow(clippy::cast_precision_loss)] // request counts are far below 2^52
                let cpu_us = (after - before) * 1e6 / out.requests.max(1) as f64;
                let sample = Sample {
                    rps: out.rps,
                    p50_us: out.p50_us,
                    p99_us: out.p99_us,
                    cpu_us,
                };
                println!(
                    "    round {round}/{rounds}  {label:<32} {rps:>8.0} req/s  p50 {p50:>6.0} µs  \
                     p99 {p99:>6.0} µs  {cpu_us:>6.2} CPU µs/req",
                    rounds = args.rounds,
                    rps = sample.rps,
                    p50 = sample.p50_us,
                    p99 = sample.p99_us,
                );
                if let Some(list) = samples.get_mut(i) {
                    list.push(sample);
                }
            }
        }
        Ok(())
    })
    .map_err(|e| or_interrupted(e, &stop))?;
    let counters = cache_counters(&envoy).unwrap_or_else(|e| {
        vec![format!(
            "(cannot read the counters from the admin interface: {e:#})"
        )]
    });
    drop(envoy);

    let setup = Setup {
        seconds: args.seconds,
        rounds: args.rounds,
        connections: args.connections,
        warmup: args.warmup,
        cpus,
        filter_source,
    };
    let report = report(&setup, &samples, &notes, &counters, &host_crypto);
    publish(&report, &target.join("bench-edge.md"))
}

fn copy_into(file: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let name = file
        .file_name()
        .context("a wasm path without a file name")?;
    let copy = dir.join(name);
    std::fs::copy(file, &copy)
        .with_context(|| format!("cannot copy {} to {}", file.display(), copy.display()))?;
    Ok(copy)
}

// ---------------------------------------------------------------------------------------------
// The machine.

/// The CPUs for Envoy and for the load generator: the first two this process may run on, or
/// `None` (no pinning, with a warning) when there are fewer.
fn pinning() -> Option<(u32, u32)> {
    let cpus = allowed_cpus();
    match cpus.as_slice() {
        [envoy, load, ..] => {
            println!("    Envoy on CPU {envoy}, the load generator on CPU {load}");
            Some((*envoy, *load))
        }
        _ => {
            println!(
                "    warning: fewer than two usable CPUs ({cpus:?}): Envoy and the load \
                 generator are not pinned, and they compete for the same CPU"
            );
            None
        }
    }
}

/// The loopback ports of the benchmark Envoy.
struct Ports {
    /// One per listener, in [`LISTENERS`] order.
    listeners: Vec<u16>,
    admin: u16,
}

impl Ports {
    fn of(&self, listener: Listener) -> u16 {
        self.listeners
            .get(listener.index())
            .copied()
            .unwrap_or_default()
    }
}

/// `base` and the next ports, each checked to be free.
fn ports(base: u16) -> anyhow::Result<Ports> {
    let names = LISTENERS
        .iter()
        .map(|l| l.name())
        .chain(["Envoy's admin interface".to_owned()]);
    let mut ports = Vec::new();
    for (offset, name) in (0_u16..).zip(names) {
        let port = base
            .checked_add(offset)
            .with_context(|| format!("--base-port {base} leaves no room for the ports"))?;
        TcpListener::bind(addr(port)).with_context(|| {
            format!(
                "port {port} (for {name}) is busy on 127.0.0.1: stop what listens there or pass \
                 another --base-port"
            )
        })?;
        ports.push(port);
    }
    let admin = ports.pop().context("no admin port")?;
    Ok(Ports {
        listeners: ports,
        admin,
    })
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

// ---------------------------------------------------------------------------------------------
// Tokens and the Envoy configuration.

/// The tokens and key set of one algorithm.
struct AlgTokens {
    alg: Algorithm,
    valid: String,
    bad: String,
    /// `{"keys":[…]}` with the key, for both filters: the public JWK, or the HS256 secret.
    jwks: String,
    /// The valid token's claims signed by another key with another `kid`.
    unknown_kid: String,
}

impl AlgTokens {
    fn token(&self, kind: TokenKind) -> &str {
        match kind {
            TokenKind::Valid => &self.valid,
            TokenKind::Bad => &self.bad,
            TokenKind::UnknownKid => &self.unknown_kid,
        }
    }
}

/// One [`AlgTokens`] per algorithm.
struct Tokens {
    es256: AlgTokens,
    eddsa: AlgTokens,
    rs256: AlgTokens,
    hs256: AlgTokens,
}

impl Tokens {
    /// The tokens of `alg`.
    fn of(&self, alg: Algorithm) -> &AlgTokens {
        match alg {
            Algorithm::ES256 => &self.es256,
            Algorithm::EdDSA => &self.eddsa,
            Algorithm::RS256 => &self.rs256,
            // HS256, and any algorithm the benchmark does not know yet.
            _ => &self.hs256,
        }
    }

    fn all(&self) -> [&AlgTokens; 4] {
        [&self.es256, &self.eddsa, &self.rs256, &self.hs256]
    }
}

fn tokens() -> anyhow::Result<Tokens> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    // Every claim auth-api puts in an access token, valid for a year.
    let claims = json!({
        "iss": ISSUER,
        "sub": SUBJECT,
        "aud": AUDIENCE,
        "exp": now + 365 * 24 * 3600,
        "iat": now,
        "jti": "bench-token",
        "sid": "bench-session",
        "client_id": "bench",
        "email": "bench@example.com",
        "roles": ["user"],
    });
    let make = |alg: Algorithm| -> anyhow::Result<AlgTokens> {
        let kid = format!("bench-{alg}");
        let key = if alg == Algorithm::HS256 {
            Key::hs256(kid, SECRET)
        } else {
            Key::generate(kid, alg, &mut rand_core::OsRng)
        }
        .with_context(|| format!("the {alg} benchmark key"))?;
        let valid = encode(&Header::access_token(&key), &claims, &key)
            .with_context(|| format!("signing the {alg} token"))?;
        let bad = flip_signature(&valid)?;
        let stranger = Key::hs256(format!("bench-{alg}-unknown"), &[0x5a; 32])
            .context("the unknown-kid benchmark key")?;
        let unknown_kid = encode(&Header::access_token(&stranger), &claims, &stranger)
            .context("signing the unknown-kid token")?;
        // What each verifier is given: the public JWK (as auth-api's JWKS serves it), or for
        // HS256 the secret.
        let jwk = Jwk::public(&key).unwrap_or_else(|| Jwk::from_key(&key));
        let jwks = serde_json::to_string(&JwkSet { keys: vec![jwk] })?;
        Ok(AlgTokens {
            alg,
            valid,
            bad,
            jwks,
            unknown_kid,
        })
    };
    Ok(Tokens {
        es256: make(Algorithm::ES256)?,
        eddsa: make(Algorithm::EdDSA)?,
        rs256: make(Algorithm::RS256)?,
        hs256: make(Algorithm::HS256)?,
    })
}

/// The token with the first character of its signature changed, which changes the signature's
/// first byte: the same length and structure, a wrong MAC.
fn flip_signature(token: &str) -> anyhow::Result<String> {
    let dot = token.rfind('.').context("the token has no signature")?;
    let (signed, signature) = token.split_at(dot + 1);
    let mut chars = signature.chars();
    let first = chars.next().context("the token's signature is empty")?;
    let flipped = if first == 'A' { 'B' } else { 'A' };
    Ok(format!("{signed}{flipped}{}", chars.as_str()))
}

/// The bootstrap: one listener per [`Listener`] and the admin interface (for the cache
/// counters); no clusters.
fn envoy_config(ports: &Ports, tokens: &Tokens, auth_wasm: &Path, noop_wasm: &Path) -> Value {
    let listeners: Vec<Value> = LISTENERS
        .iter()
        .zip(&ports.listeners)
        .map(|(&listener, &port)| {
            let mut filters = Vec::new();
            if let Some(filter) = auth_filter(listener, tokens, auth_wasm, noop_wasm) {
                filters.push(filter);
            }
            filters.push(json!({
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                }
            }));
            json!({
                "name": listener.name(),
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": listener.name(),
                        "normalize_path": true,
                        "merge_slashes": true,
                        "route_config": {
                            "name": "bench",
                            "virtual_hosts": [{
                                "name": "all",
                                "domains": ["*"],
                                "routes": [
                                    {
                                        "match": {"path": CHECK_PATH},
                                        "direct_response": {"status": 200, "body": {"inline_string": BODY}},
                                        "response_headers_to_add": [{
                                            "header": {"key": "x-seen-user-id", "value": "%REQ(x-user-id)%"}
                                        }]
                                    },
                                    {
                                        "match": {"prefix": "/"},
                                        "direct_response": {"status": 200, "body": {"inline_string": BODY}}
                                    }
                                ]
                            }]
                        },
                        "http_filters": filters
                    }
                }]}]
            })
        })
        .collect();
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": ports.admin}}},
        "static_resources": {"listeners": listeners}
    })
}

/// The listener's filter before the router, if any. Our filter and `jwt_authn` get the same key
/// (of the listener's algorithm), issuer, audience, token location (`Authorization: Bearer`),
/// claim header and rule.
fn auth_filter(
    listener: Listener,
    tokens: &Tokens,
    auth_wasm: &Path,
    noop_wasm: &Path,
) -> Option<Value> {
    let jwks = &tokens.of(listener.alg).jwks;
    let ours = |cache_entries: u32| {
        let config = json!({
            "issuer": ISSUER,
            "audiences": [AUDIENCE],
            "claim_to_headers": [{"claim_name": "sub", "header_name": "x-user-id"}],
            "local_jwks": serde_json::from_str::<Value>(jwks).unwrap_or_default(),
            "rules": [{"match": {"prefix": "/"}, "require": "authenticated"}],
            "cache_entries": cache_entries,
        });
        let name = format!("bench_ours_{}_{cache_entries}", listener.alg);
        wasm_filter(&name, "auth_filter", auth_wasm, Some(config.to_string()))
    };
    let native = |cache: bool| {
        let mut provider = json!({
            "issuer": ISSUER,
            "audiences": [AUDIENCE],
            "local_jwks": {"inline_string": jwks},
            "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
            "claim_to_headers": [{"header_name": "x-user-id", "claim_name": "sub"}],
            "clock_skew_seconds": 60,
        });
        if cache {
            provider["jwt_cache_config"] = json!({"jwt_cache_size": 1024});
        }
        json!({
            "name": "envoy.filters.http.jwt_authn",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                "providers": {"bench": provider},
                "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}]
            }
        })
    };
    match listener.filter {
        Filter::None => None,
        Filter::NoopWasm => Some(wasm_filter("bench_noop", "noop", noop_wasm, None)),
        Filter::JwtAuthn => Some(native(false)),
        Filter::JwtAuthnCache => Some(native(true)),
        Filter::OursCache => Some(ours(1024)),
        Filter::OursNoCache => Some(ours(0)),
    }
}

/// A wasm HTTP filter as `envoy/dev.yaml` loads ours: V8, `FAIL_RELOAD`, its own VM.
fn wasm_filter(vm_id: &str, root_id: &str, wasm: &Path, configuration: Option<String>) -> Value {
    let mut config = json!({
        "name": vm_id,
        "root_id": root_id,
        "failure_policy": "FAIL_RELOAD",
        "vm_config": {
            "vm_id": vm_id,
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": wasm.display().to_string()}}
        }
    });
    if let Some(value) = configuration {
        config["configuration"] = json!({
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": value
        });
    }
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": config
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Checks before measuring.

/// Every listener answers as its configuration says: the filters take a valid token and pass
/// `sub` on as `x-user-id`, and refuse a badly signed token and a missing one.
fn check_answers(
    envoy: &mut Envoy,
    client: &Client,
    ports: &Ports,
    tokens: &Tokens,
) -> anyhow::Result<()> {
    for (&listener, &port) in LISTENERS.iter().zip(&ports.listeners) {
        let refused = if listener.filter.authenticates() {
            401
        } else {
            200
        };
        let own = tokens.of(listener.alg);
        // A token of another algorithm names a key this listener does not have.
        let other = tokens.of(if listener.alg == Algorithm::HS256 {
            Algorithm::ES256
        } else {
            Algorithm::HS256
        });
        let expectations = [
            ("/", Some(own.valid.as_str()), "a valid token", 200),
            ("/", Some(own.bad.as_str()), "a badly signed token", refused),
            (
                "/",
                Some(own.unknown_kid.as_str()),
                "a token of an unknown kid",
                refused,
            ),
            ("/", None, "no token", refused),
            (
                "/",
                Some(other.valid.as_str()),
                "another algorithm's token",
                refused,
            ),
            (CHECK_PATH, Some(own.valid.as_str()), "a valid token", 200),
        ];
        for (path, token, what, expected) in expectations {
            let answer = get(client, port, path, token)
                .with_context(|| format!("{}: GET {path} with {what}", listener.name()))
                .with_context(|| envoy.log_tail())?;
            if answer.status() != expected {
                bail!(
                    "{}: GET {path} with {what} answered {}, expected {expected}{}",
                    listener.name(),
                    answer.status().as_u16(),
                    envoy.log_tail()
                );
            }
            if path == CHECK_PATH {
                let seen = answer
                    .headers()
                    .get("x-seen-user-id")
                    .and_then(|v| v.to_str().ok());
                let wanted = listener.filter.authenticates().then_some(SUBJECT);
                if seen != wanted {
                    bail!(
                        "{}: x-user-id reached the route as {seen:?}, expected {wanted:?}",
                        listener.name()
                    );
                }
            }
        }
        println!("    {:<22} 127.0.0.1:{port}  ok", listener.name());
    }
    Ok(envoy.ensure_running()?)
}

/// Requests per algorithm in [`probe_signatures`].
const PROBE_REQUESTS: u64 = 5;

/// Which code checked each algorithm's signatures in our filter: a few valid tokens are sent to
/// the `ours-nocache` listener of each algorithm (each one a full verification), and our
/// `auth_filter.signature.{host,wasm}` counters are read before and after (they reach Envoy on
/// the filter's next tick, within 250 ms). One line per algorithm, for the report.
fn probe_signatures(
    envoy: &Envoy,
    client: &Client,
    ports: &Ports,
    tokens: &Tokens,
) -> anyhow::Result<Vec<String>> {
    let read = || -> anyhow::Result<(u64, u64)> {
        let stats = envoy.admin().stats("auth_filter.signature")?;
        let value = |suffix: &str| {
            stats
                .iter()
                .find(|(name, _)| name.ends_with(suffix))
                .map_or(0, |(_, value)| *value)
        };
        Ok((value("signature.host"), value("signature.wasm")))
    };
    // Counts of earlier requests may still be on their way to Envoy.
    std::thread::sleep(Duration::from_millis(800));
    let mut lines = Vec::new();
    for alg in tokens.all().map(|t| t.alg) {
        let (host_before, wasm_before) = read()?;
        let port = ports.of(listener(Filter::OursNoCache, alg));
        for _ in 0..PROBE_REQUESTS {
            let answer = get(client, port, "/", Some(&tokens.of(alg).valid))?;
            anyhow::ensure!(
                answer.status() == 200,
                "{alg}: answered {}",
                answer.status().as_u16()
            );
        }
        std::thread::sleep(Duration::from_millis(800));
        let (host_after, wasm_after) = read()?;
        let (host, wasm) = (host_after - host_before, wasm_after - wasm_before);
        let who = match (host, wasm) {
            (h, 0) if h >= PROBE_REQUESTS => "host crypto (Envoy's `verify_signature`, BoringSSL)",
            (0, w) if w >= PROBE_REQUESTS => "wasm (pure Rust)",
            _ => "unclear",
        };
        let line = format!(
            "{alg}: {who}: of {PROBE_REQUESTS} uncached requests, {host} checked by the host, \
             {wasm} in wasm"
        );
        println!("    {line}");
        lines.push(line);
    }
    Ok(lines)
}

/// The client of the checks before measuring (the load is wrk's): no proxy, and no connection
/// kept open to the listeners while wrk measures.
fn control_client() -> anyhow::Result<Client> {
    Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()
        .context("cannot build an HTTP client")
}

/// `GET path` on a listener, with `Authorization: Bearer token` if given.
fn get(
    client: &Client,
    port: u16,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<reqwest::blocking::Response> {
    let mut request = client.get(format!("http://{}{path}", addr(port)));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    Ok(request.send()?)
}

/// The token cache counters from Envoy's admin interface, as `name: value`: `jwt_authn`'s per
/// listener, and ours (`wasmcustom.auth_filter.*`, one set of names for both of our listeners).
fn cache_counters(envoy: &Envoy) -> anyhow::Result<Vec<String>> {
    Ok(envoy
        .admin()
        .stats("jwt_cache")?
        .into_iter()
        .filter(|(name, _)| name.contains("jwt_cache_"))
        .map(|(name, value)| format!("{name}: {value}"))
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Load.

struct Load<'a> {
    load_cpu: Option<u32>,
    port: u16,
    token: &'a str,
    seconds: u32,
    connections: u32,
}

impl Load<'_> {
    fn run(&self) -> anyhow::Result<WrkOutput> {
        Wrk {
            load_cpu: self.load_cpu,
            url: format!("http://127.0.0.1:{}/", self.port),
            seconds: self.seconds,
            connections: self.connections,
            headers: vec![format!("authorization: Bearer {}", self.token)],
            script: None,
            timeout_secs: None,
        }
        .run()
    }
}

/// A run is only a measurement of the configuration if every answer was the expected one.
fn check_statuses(case: Case, out: &WrkOutput) -> anyhow::Result<()> {
    if out.requests == 0 {
        bail!("wrk completed no request");
    }
    let expected_non_2xx = if case.expected_status() == 200 {
        0
    } else {
        out.requests
    };
    if out.non_2xx != expected_non_2xx {
        bail!(
            "{} of {} answers were not 2xx/3xx, expected {expected_non_2xx} (every answer {})",
            out.non_2xx,
            out.requests,
            case.expected_status()
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Report.

#[derive(Clone, Copy, Debug)]
struct Sample {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us: f64,
}

struct Setup {
    seconds: u32,
    rounds: u32,
    connections: u32,
    warmup: u32,
    cpus: Option<(u32, u32)>,
    filter_source: String,
}

/// Medians over rounds of `f(sample of case, sample of other, same round)`.
fn paired(samples: &[Sample], other: &[Sample], f: impl Fn(&Sample, &Sample) -> f64) -> f64 {
    median(samples.iter().zip(other).map(|(a, b)| f(a, b)).collect())
}

/// Throughput targets of issue 8, per algorithm: ours with its cache against `jwt_authn`
/// default, and ours without it (ES256 and RS256, where the host's crypto does the work).
const TARGET_CACHED: f64 = 3.0;
const TARGET_UNCACHED: f64 = 0.8;
/// HS256 with its cache, valid tokens: × the no-op wasm filter (the floor of any wasm filter).
const TARGET_HIT_OVER_NOOP: f64 = 0.9;
/// The same, × native `jwt_authn` default.
const TARGET_HIT_OVER_NATIVE: f64 = 1.4;
/// Refused HS256 tokens (bad signature, unknown `kid`), ours with its cache × native
/// `jwt_authn` default refusing the same token.
const TARGET_REJECT_OVER_NATIVE: f64 = 1.2;

fn report(
    setup: &Setup,
    samples: &[Vec<Sample>],
    notes: &[String],
    counters: &[String],
    host_crypto: &[String],
) -> String {
    let empty = Vec::new();
    let of = |i: usize| samples.get(i).unwrap_or(&empty);
    let none = of(0);
    let pinning = match setup.cpus {
        Some((envoy, load)) => format!("pinned to CPU {envoy}; wrk pinned to CPU {load}"),
        None => "not pinned (fewer than two CPUs); wrk not pinned either".to_owned(),
    };

    let mut md = String::new();
    md.push_str("### Edge benchmark (`cargo xtask bench edge`)\n\n");
    md.push_str(&format!(
        "Envoy {version}, one worker (`--concurrency 1`), {pinning}; wrk with 1 thread and \
         {connections} connections; a `direct_response` route, so that only the filters cost. \
         {rounds} round(s) of {seconds} s per configuration, alternated (after {warmup} s of \
         warm-up each); medians over rounds. Every request carries the token named in the \
         third column, signed with a key of the algorithm in the second; both filters have that \
         key (the public JWK for ES256, EdDSA and RS256). CPU is Envoy's user + system time per \
         request; \"above none\" subtracts `none` of the same round. Throughput ratios compare \
         with native `jwt_authn` with the same algorithm, key and token (valid or bad), round \
         by round. auth-filter built from {source}. Machine: {machine}.\n\n",
        version = envoy_harness::VERSION,
        source = setup.filter_source,
        machine = machine(),
        connections = setup.connections,
        rounds = setup.rounds,
        seconds = setup.seconds,
        warmup = setup.warmup,
    ));
    md.push_str(
        "| configuration | alg | token | req/s | p50 µs | p99 µs | CPU µs/req | above none | \
         × jwt_authn | × jwt_authn+cache |\n",
    );
    md.push_str("|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (i, case) in CASES.iter().enumerate() {
        let s = of(i);
        let rps = median(s.iter().map(|x| x.rps).collect());
        let p50 = median(s.iter().map(|x| x.p50_us).collect());
        let p99 = median(s.iter().map(|x| x.p99_us).collect());
        let cpu = median(s.iter().map(|x| x.cpu_us).collect());
        let above = if i == 0 {
            "—".to_owned()
        } else {
            format!("{:.2}", paired(s, none, |a, b| a.cpu_us - b.cpu_us))
        };
        let ratio = |cached: bool| {
            let reference = case.reference(cached);
            if reference == i {
                "1.00".to_owned()
            } else {
                format!("{:.2}", paired(s, of(reference), |a, b| a.rps / b.rps))
            }
        };
        md.push_str(&format!(
            "| `{}` | {} | {} | {rps:.0} | {p50:.0} | {p99:.0} | {cpu:.2} | {above} | {} | {} |\n",
            case.listener.filter.name(),
            case.listener.alg,
            case.token.name(),
            ratio(false),
            ratio(true),
        ));
    }

    md.push_str(&format!(
        "\nTargets for the public-key algorithms (valid tokens, × `jwt_authn` default with the \
         same algorithm and key): ours with its cache ≥ {TARGET_CACHED:.1}×; without it \
         ≥ {TARGET_UNCACHED:.1}× for ES256 and RS256. The ceiling is what a wasm filter that \
         does nothing reaches (`noop-wasm` × `jwt_authn`), and `none` × `jwt_authn` what no \
         filter at all does. \"By CPU\" compares Envoy's CPU µs per request instead (`jwt_authn`'s \
         ÷ ours).\n\n"
    ));
    let valid_case = |filter: Filter, alg: Algorithm| {
        CASES
            .iter()
            .position(|c| c.listener == listener(filter, alg) && c.token == TokenKind::Valid)
    };
    for alg in [
        Algorithm::ES256,
        Algorithm::EdDSA,
        Algorithm::RS256,
        Algorithm::HS256,
    ] {
        let native = valid_case(Filter::JwtAuthn, alg);
        let ratio_of = |case: Option<usize>| match (case, native) {
            (Some(i), Some(native)) => paired(of(i), of(native), |a, b| a.rps / b.rps),
            _ => f64::NAN,
        };
        // The same comparison by Envoy's CPU time per request, which a busy machine (other
        // processes taking the load generator's or Envoy's CPU) disturbs less than req/s.
        let cpu_ratio_of = |case: Option<usize>| match (case, native) {
            (Some(i), Some(native)) => paired(of(i), of(native), |a, b| b.cpu_us / a.cpu_us),
            _ => f64::NAN,
        };
        let cached = ratio_of(valid_case(Filter::OursCache, alg));
        let uncached = ratio_of(valid_case(Filter::OursNoCache, alg));
        let cached_cpu = cpu_ratio_of(valid_case(Filter::OursCache, alg));
        let uncached_cpu = cpu_ratio_of(valid_case(Filter::OursNoCache, alg));
        let noop_cpu = cpu_ratio_of(valid_case(Filter::NoopWasm, Algorithm::HS256));
        let noop = ratio_of(valid_case(Filter::NoopWasm, Algorithm::HS256));
        let bare = ratio_of(valid_case(Filter::None, Algorithm::HS256));
        let verdict = |ratio: f64, target: f64| {
            if alg == Algorithm::HS256 {
                String::new()
            } else if ratio >= target {
                format!(" (target {target:.1}×: met)")
            } else {
                format!(" (target {target:.1}×: **missed**)")
            }
        };
        let uncached_verdict = if matches!(alg, Algorithm::ES256 | Algorithm::RS256) {
            verdict(uncached, TARGET_UNCACHED)
        } else {
            String::new()
        };
        md.push_str(&format!(
            "- {alg}: cache on {cached:.2}×{}, cache off {uncached:.2}×{uncached_verdict}; \
             ceiling {noop:.2}× (`none` {bare:.2}×). By CPU per request: cache on \
             {cached_cpu:.2}×, cache off {uncached_cpu:.2}×, ceiling {noop_cpu:.2}×\n",
            verdict(cached, TARGET_CACHED),
        ));
    }
    push_floor_summary(&mut md, samples);
    if !host_crypto.is_empty() {
        md.push_str("\nWho checked our filter's signatures (probe before measuring):\n\n");
        for line in host_crypto {
            md.push_str(&format!("- {line}\n"));
        }
    }

    md.push_str("\nreq/s per round:\n\n| configuration | alg | token |");
    for round in 1..=setup.rounds {
        md.push_str(&format!(" {round} |"));
    }
    md.push_str("\n|---|---|---|");
    for _ in 1..=setup.rounds {
        md.push_str("---:|");
    }
    md.push('\n');
    for (i, case) in CASES.iter().enumerate() {
        md.push_str(&format!(
            "| `{}` | {} | {} |",
            case.listener.filter.name(),
            case.listener.alg,
            case.token.name()
        ));
        for sample in of(i) {
            md.push_str(&format!(" {:.0} |", sample.rps));
        }
        md.push('\n');
    }
    if !counters.is_empty() {
        md.push_str(
            "\nToken cache counters at the end (warm-up and checks included; ours counts all of \
             its listeners under one name, and `ours-nocache` counts every request as a miss):\n\n",
        );
        for counter in counters {
            md.push_str(&format!("- `{counter}`\n"));
        }
    }
    push_notes(&mut md, notes);
    md
}

/// The cache hit against the wasm floor and the refusals against native `jwt_authn`, HS256
/// (issue 12's targets), paired round by round.
fn push_floor_summary(md: &mut String, samples: &[Vec<Sample>]) {
    let of = |i: usize| samples.get(i).map_or(&[][..], Vec::as_slice);
    let at = |filter: Filter, token: TokenKind| {
        CASES
            .iter()
            .position(|c| c.listener == listener(filter, Algorithm::HS256) && c.token == token)
    };
    let pair =
        |a: Option<usize>, b: Option<usize>, f: &dyn Fn(&Sample, &Sample) -> f64| match (a, b) {
            (Some(a), Some(b)) => paired(of(a), of(b), f),
            _ => f64::NAN,
        };
    let verdict = |ratio: f64, target: f64| {
        if ratio >= target {
            format!("target ≥ {target:.1}×: met")
        } else {
            format!("target ≥ {target:.1}×: **missed**")
        }
    };
    let hit = at(Filter::OursCache, TokenKind::Valid);
    let noop = at(Filter::NoopWasm, TokenKind::Valid);
    let native = at(Filter::JwtAuthn, TokenKind::Valid);
    let over_noop = pair(hit, noop, &|a, b| a.rps / b.rps);
    let gap = pair(hit, noop, &|a, b| a.cpu_us - b.cpu_us);
    let over_native = pair(hit, native, &|a, b| a.rps / b.rps);
    md.push_str(&format!(
        "\nAt the wasm floor (HS256): a cache hit is {over_noop:.2}× the no-op wasm filter's \
         throughput ({}), {gap:.2} µs of Envoy CPU per request above it, and {over_native:.2}× \
         native `jwt_authn` default ({}).",
        verdict(over_noop, TARGET_HIT_OVER_NOOP),
        verdict(over_native, TARGET_HIT_OVER_NATIVE),
    ));
    for token in [TokenKind::Bad, TokenKind::UnknownKid] {
        let ours = at(Filter::OursCache, token);
        let ratio = pair(ours, at(Filter::JwtAuthn, token), &|a, b| a.rps / b.rps);
        let cached = pair(ours, at(Filter::JwtAuthnCache, token), &|a, b| {
            a.rps / b.rps
        });
        md.push_str(&format!(
            " Refusing a token with {}: {ratio:.2}× native `jwt_authn` ({}), {cached:.2}× with \
             its cache.",
            token.name(),
            verdict(ratio, TARGET_REJECT_OVER_NATIVE),
        ));
    }
    md.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_tokens_differ_only_in_their_signature_and_keys_are_public() {
        let tokens = tokens().unwrap();
        for (alg, t) in Algorithm::ALL.into_iter().zip(tokens.all()) {
            assert_eq!(t.alg, alg);
            assert_eq!(tokens.of(alg).alg, alg);
            assert_ne!(t.valid, t.bad);
            assert_eq!(t.valid.len(), t.bad.len());
            let signed = |t: &str| t.rsplit_once('.').unwrap().0.to_owned();
            assert_eq!(signed(&t.valid), signed(&t.bad));
            let jwks: Value = serde_json::from_str(&t.jwks).unwrap();
            let jwk = &jwks["keys"][0];
            assert_eq!(jwk["alg"], alg.as_str());
            for private in ["d", "p", "q"] {
                assert!(jwk.get(private).is_none(), "{alg}: {private}");
            }
        }
    }

    #[test]
    fn every_listener_is_measured_and_named_once() {
        let mut names: Vec<String> = LISTENERS.iter().map(|l| l.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), LISTENERS.len());
        for listener in LISTENERS {
            assert!(CASES.iter().any(|c| c.listener == listener), "{listener:?}");
        }
    }

    #[test]
    fn every_case_has_its_native_references() {
        for (i, case) in CASES.iter().enumerate() {
            for cached in [false, true] {
                let reference = CASES[case.reference(cached)];
                assert!(matches!(
                    reference.listener.filter,
                    Filter::JwtAuthn | Filter::JwtAuthnCache
                ));
                assert_eq!(reference.listener.alg, case.listener.alg, "case {i}");
                if case.listener.filter.authenticates() {
                    assert_eq!(reference.token, case.token, "case {i}");
                }
            }
        }
    }
}
