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
//! `ext_authz` is the stateful alternative: Envoy's `ext_authz` filter asks a real auth-api
//! (the release binary, on SQLite in the work directory, started by the benchmark) over gRPC
//! about every request, as `envoy/ext-authz.yaml` configures it. The benchmark's HS256 edge
//! tokens are not auth-api's, so these requests carry auth-api's own ES256 access token (from
//! its `/signup` and `/login`), badly signed, or none. auth-api is pinned to the load
//! generator's CPU, so that Envoy keeps its own: it competes with wrk, which holds the
//! `ext_authz` requests/s down; its CPU time per request (read from `/proc` like Envoy's) is
//! reported beside Envoy's, since it is the real price of the check.
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
        allowed_cpus, ensure_load_tools, interrupted, median, or_interrupted, process_cpu_seconds,
        Wrk, WrkOutput,
    },
    report::{machine, publish, push_notes, source_commit},
    tools::{ensure_envoy, run, step},
};

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub(crate) enum Bench {
    /// Requests/s, latency and Envoy CPU per request: no filter, a no-op wasm filter, native
    /// `jwt_authn` (with and without its cache) and ours (with and without its cache), on
    /// valid and on badly signed HS256 tokens, and on ES256, EdDSA and RS256 tokens; and
    /// `ext_authz` calling a real auth-api over gRPC (with auth-api's CPU per request).
    Edge(EdgeArgs),
    /// auth-api (release) on each store: logins/s beside the bcrypt bound, refreshes/s beside
    /// the store's in-process bound, `/validate`/s, with p50/p99.
    Api(crate::bench_api::ApiArgs),
    /// `bench api`'s own load generator for `/validate` over HTTP and `Validate` over gRPC (run
    /// by `bench api` as a pinned child process; prints one JSON line).
    #[cfg(feature = "api-bench")]
    #[command(hide = true)]
    ValidateLoad(crate::bench_client::LoadArgs),
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
    /// First loopback port; the nineteen listeners take it and the next eighteen, and Envoy's
    /// admin interface the one after (auth-api, for `ext_authz`, gets free ports).
    #[arg(long, default_value_t = 18100)]
    base_port: u16,
}

pub(crate) fn bench(root: &Path, bench: &Bench) -> anyhow::Result<()> {
    match bench {
        Bench::Edge(args) => edge(root, args),
        Bench::Api(args) => crate::bench_api::api(root, args),
        #[cfg(feature = "api-bench")]
        Bench::ValidateLoad(args) => crate::bench_client::main(args),
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
    /// Envoy's `ext_authz` calling auth-api's `Authorization/Check` over gRPC: the stateful
    /// check of `/validate` on every request.
    ExtAuthz,
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
            Filter::ExtAuthz => "ext_authz",
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
/// algorithm native `jwt_authn` (default and cached) and ours (cache on and off), then
/// `ext_authz` (auth-api's own tokens are ES256).
const LISTENERS: [Listener; 19] = [
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
    listener(Filter::ExtAuthz, Algorithm::ES256),
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
    /// No `Authorization` header at all.
    Missing,
}

impl TokenKind {
    fn name(self) -> &'static str {
        match self {
            TokenKind::Valid => "valid",
            TokenKind::Bad => "bad signature",
            TokenKind::UnknownKid => "unknown kid",
            TokenKind::Missing => "no token",
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
/// verification as accepting one, and an unknown `kid` none at all. `ext_authz` gets auth-api's
/// own token (valid, then badly signed) and no token: each is a gRPC call to auth-api.
const CASES: [Case; 29] = [
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
    case(Filter::ExtAuthz, Algorithm::ES256, TokenKind::Valid),
    case(Filter::ExtAuthz, Algorithm::ES256, TokenKind::Bad),
    case(Filter::ExtAuthz, Algorithm::ES256, TokenKind::Missing),
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
    /// and key, and the same token; none when `jwt_authn` is not measured with that token
    /// (`ext_authz`'s refusals).
    fn reference(self, cached: bool) -> Option<usize> {
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
    let api_source = source_commit(root, &["auth-api", "jwt", "migrations", "proto"]);
    let cpus = pinning();
    let ports = step("free ports", || ports(args.base_port))?;
    let tokens = tokens()?;
    // Built as `bench api` builds it (with its release xtask).
    let auth_api_bin = step("build auth-api (release, for ext_authz)", || {
        crate::bench_api::build_release(root)?;
        Ok(target.join("release/auth-api"))
    })?;
    // On the load generator's CPU, so that Envoy keeps its own.
    let mut auth_api = step("start auth-api (SQLite, gRPC) and get a token", || {
        AuthApi::start(&auth_api_bin, &work, cpus.map(|(_, load)| load))
    })?;

    let config = envoy_config(&ports, &tokens, &auth_wasm, &noop_wasm, auth_api.grpc_port);
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
        check_answers(&mut envoy, &client, &ports, &tokens, &auth_api)
    })?;
    let host_crypto = step("who checks the signatures (host crypto or wasm)", || {
        probe_signatures(&envoy, &client, &ports, &tokens)
    })?;
    drop(client);

    let load_cpu = cpus.map(|(_, load)| load);
    let api_tokens = auth_api.tokens.clone();
    let load = |case: Case, seconds: u32| Load {
        load_cpu,
        port: ports.of(case.listener),
        token: token_of(case, &tokens, &api_tokens),
        seconds,
        connections: args.connections,
    };
    if args.warmup > 0 {
        step("warm-up", || {
            for case in CASES {
                interrupted(&stop)?;
                load(case, args.warmup).run()?;
                envoy.ensure_running()?;
                auth_api.ensure_running()?;
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
                let api_before = auth_api.cpu_seconds()?;
                let out = load(*case, args.seconds).run()?;
                let after = envoy.cpu_seconds()?;
                let api_after = auth_api.cpu_seconds()?;
                envoy.ensure_running()?;
                auth_api.ensure_running()?;
                let label = format!("{} ({})", case.listener.name(), case.token.name());
                if let Err(e) = check_statuses(*case, &out) {
                    bail!(
                        "{label}, round {round}: {e}{}{}",
                        envoy.log_tail(),
                        auth_api.log_tail()
                    );
                }
                if let Some(errors) = &out.socket_errors {
                    notes.push(format!("round {round}, {label}: socket errors: {errors}"));
                }
                #[allow(clippy::cast_precision_loss)] // request counts are far below 2^52
                let requests = out.requests.max(1) as f64;
                let cpu_us = (after - before) * 1e6 / requests;
                let api_cpu_us = (api_after - api_before) * 1e6 / requests;
                let sample = Sample {
                    rps: out.rps,
                    p50_us: out.p50_us,
                    p99_us: out.p99_us,
                    cpu_us,
                    api_cpu_us,
                };
                let api = if case.listener.filter == Filter::ExtAuthz {
                    format!("  + {api_cpu_us:>6.2} auth-api CPU µs/req")
                } else {
                    String::new()
                };
                println!(
                    "    round {round}/{rounds}  {label:<32} {rps:>8.0} req/s  p50 {p50:>6.0} µs  \
                     p99 {p99:>6.0} µs  {cpu_us:>6.2} CPU µs/req{api}",
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
    drop(auth_api);

    let setup = Setup {
        seconds: args.seconds,
        rounds: args.rounds,
        connections: args.connections,
        warmup: args.warmup,
        cpus,
        filter_source,
        api_source,
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
    fn token(&self, kind: TokenKind) -> Option<&str> {
        match kind {
            TokenKind::Valid => Some(&self.valid),
            TokenKind::Bad => Some(&self.bad),
            TokenKind::UnknownKid => Some(&self.unknown_kid),
            TokenKind::Missing => None,
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

/// The token a case's requests carry: for `ext_authz`, auth-api's own (valid or badly signed;
/// its "unknown kid" is the benchmark's ES256 token, of a key auth-api never had); for the
/// others, the benchmark's token of the listener's algorithm; none for [`TokenKind::Missing`].
fn token_of<'a>(case: Case, tokens: &'a Tokens, api: &'a ApiTokens) -> Option<&'a str> {
    match (case.listener.filter, case.token) {
        (_, TokenKind::Missing) => None,
        (Filter::ExtAuthz, TokenKind::Valid) => Some(&api.valid),
        (Filter::ExtAuthz, TokenKind::Bad) => Some(&api.bad),
        (Filter::ExtAuthz, TokenKind::UnknownKid) => Some(&tokens.es256.valid),
        (_, kind) => tokens.of(case.listener.alg).token(kind),
    }
}

// ---------------------------------------------------------------------------------------------
// auth-api, behind `ext_authz`.

/// The key-encryption key of the benchmark's auth-api (32 bytes, base64url): only ever used on
/// loopback by this benchmark.
const API_KEK: &str = "bench-edge:YXV0aC1zZXJ2aWNlIGVkZ2UgYmVuY2htYXJrIGtlayE";
const API_EMAIL: &str = "bench-edge@example.com";
const API_PASSWORD: &str = "loopback-Edge-password-8d1b3a90";

/// auth-api's own access token for `ext_authz`, and what it says.
#[derive(Clone, Debug)]
struct ApiTokens {
    /// From `/signup` then `/login`: ES256, signed by auth-api's key ring.
    valid: String,
    /// The same with its signature's first character changed.
    bad: String,
    /// The account's id (the token's `sub`), which `ext_authz` passes on as `x-user-id`.
    user_id: String,
}

/// The auth-api release binary serving `ext_authz`: SQLite in a directory of its own under the
/// work directory, HTTP and gRPC on free loopback ports, pinned to `cpu` if given (the load
/// generator's: Envoy keeps its CPU). Killed and its database removed when dropped.
struct AuthApi {
    child: std::process::Child,
    log: PathBuf,
    dir: PathBuf,
    grpc_port: u16,
    tokens: ApiTokens,
}

impl Drop for AuthApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl AuthApi {
    fn start(binary: &Path, work: &Path, cpu: Option<u32>) -> anyhow::Result<Self> {
        anyhow::ensure!(binary.exists(), "{} is missing", binary.display());
        let dir = work.join("auth-api-db");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let port = crate::ports::free_port();
        let grpc_port = loop {
            let candidate = crate::ports::free_port();
            if candidate != port {
                break candidate;
            }
        };
        let log = work.join("auth-api.log");
        let file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut cmd = match cpu {
            Some(cpu) => {
                let mut cmd = std::process::Command::new("taskset");
                cmd.args(["-c", &cpu.to_string()]).arg(binary);
                cmd
            }
            None => std::process::Command::new(binary),
        };
        cmd.arg("serve").stdout(file.try_clone()?).stderr(file);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AUTH_") {
                cmd.env_remove(name);
            }
        }
        cmd.envs([
            (
                "AUTH_DATABASE_URL",
                format!("sqlite://{}", dir.join("auth.db").display()),
            ),
            ("AUTH_LISTEN", format!("127.0.0.1:{port}")),
            ("AUTH_GRPC_LISTEN", format!("127.0.0.1:{grpc_port}")),
            ("AUTH_KEY_ENCRYPTION_KEYS", API_KEK.to_owned()),
            // One signup and one login: the cheapest cost auth-api accepts.
            ("AUTH_BCRYPT_COST", "10".to_owned()),
            // wrk (through Envoy) is one address: the per-address limit must not be measured.
            ("AUTH_IP_LIMIT_PER_MINUTE", "1000000000".to_owned()),
            // The token must outlive the run.
            ("AUTH_ACCESS_TOKEN_TTL_SECS", "86400".to_owned()),
            ("AUTH_LOG_FORMAT", "text".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ]);
        let mut api = Self {
            child: cmd.spawn().context("cannot start auth-api")?,
            log,
            dir,
            grpc_port,
            tokens: ApiTokens {
                valid: String::new(),
                bad: String::new(),
                user_id: String::new(),
            },
        };
        api.tokens = api.sign_up(port)?;
        println!(
            "    auth-api HTTP 127.0.0.1:{port}, gRPC 127.0.0.1:{grpc_port}{}",
            match cpu {
                Some(cpu) => format!(", on CPU {cpu}"),
                None => String::new(),
            }
        );
        Ok(api)
    }

    /// Waits until auth-api is ready and its gRPC port accepts connections, then signs up an
    /// account and logs into it over HTTP.
    fn sign_up(&mut self, port: u16) -> anyhow::Result<ApiTokens> {
        let client = control_client()?;
        let base = format!("http://{}", addr(port));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            self.ensure_running()?;
            let ready = client
                .get(format!("{base}/readyz"))
                .send()
                .is_ok_and(|r| r.status().is_success());
            if ready
                && std::net::TcpStream::connect_timeout(
                    &addr(self.grpc_port),
                    Duration::from_millis(500),
                )
                .is_ok()
            {
                break;
            }
            if std::time::Instant::now() > deadline {
                bail!("auth-api is not ready after 60 s{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let post = |path: &str, expected: u16| -> anyhow::Result<Value> {
            let answer = client
                .post(format!("{base}{path}"))
                .json(&json!({"email": API_EMAIL, "password": API_PASSWORD}))
                .send()
                .with_context(|| format!("POST {path}"))?;
            let status = answer.status().as_u16();
            let text = answer.text()?;
            anyhow::ensure!(status == expected, "POST {path}: {status}: {text}");
            Ok(serde_json::from_str(&text)?)
        };
        let account = post("/signup", 201)?;
        let login = post("/login", 200)?;
        let user_id = account["id"]
            .as_str()
            .context("no id in /signup's answer")?
            .to_owned();
        let valid = login["access_token"]
            .as_str()
            .context("no access_token in /login's answer")?
            .to_owned();
        let bad = flip_signature(&valid)?;
        Ok(ApiTokens {
            valid,
            bad,
            user_id,
        })
    }

    /// User plus system time of auth-api so far, in seconds.
    fn cpu_seconds(&self) -> anyhow::Result<f64> {
        process_cpu_seconds(self.child.id())
    }

    fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(exit) = self.child.try_wait()? {
            bail!("auth-api exited with {exit}{}", self.log_tail());
        }
        Ok(())
    }

    /// The end of its log, for an error message.
    fn log_tail(&self) -> String {
        crate::tools::log_tail("auth-api", &self.log)
    }
}

/// The bootstrap: one listener per [`Listener`], the admin interface (for the cache counters),
/// and the cluster of auth-api's gRPC port (`ext_authz`'s calls, HTTP/2).
fn envoy_config(
    ports: &Ports,
    tokens: &Tokens,
    auth_wasm: &Path,
    noop_wasm: &Path,
    grpc_port: u16,
) -> Value {
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
    let auth_api = json!({
        "name": EXT_AUTHZ_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}
            }
        },
        "load_assignment": {
            "cluster_name": EXT_AUTHZ_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": grpc_port}
            }}}]}]
        }
    });
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": ports.admin}}},
        "static_resources": {"listeners": listeners, "clusters": [auth_api]}
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
        Filter::ExtAuthz => Some(ext_authz()),
    }
}

/// The Envoy cluster of auth-api's gRPC listener.
const EXT_AUTHZ_CLUSTER: &str = "auth_api_grpc";

/// Envoy's `ext_authz` filter calling auth-api's `Authorization/Check` over gRPC (Envoy's own
/// gRPC client), with the settings of `envoy/ext-authz.yaml`: failing closed (503), only the
/// `authorization` header sent, no body, the route not recomputed. The answer (OK with the
/// identity headers, or the denial) is auth-api's.
fn ext_authz() -> Value {
    json!({
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "grpc_service": {
                "envoy_grpc": {"cluster_name": EXT_AUTHZ_CLUSTER},
                "timeout": "1s"
            },
            "failure_mode_allow": false,
            "status_on_error": {"code": "ServiceUnavailable"},
            "allowed_headers": {"patterns": [{"exact": "authorization"}]},
            "clear_route_cache": false
        }
    })
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
/// `sub` on as `x-user-id`, and refuse a badly signed token and a missing one. (`ext_authz`'s
/// valid token is auth-api's own, and its `sub` auth-api's user id; the benchmark's tokens are
/// of keys auth-api does not know.)
fn check_answers(
    envoy: &mut Envoy,
    client: &Client,
    ports: &Ports,
    tokens: &Tokens,
    auth_api: &AuthApi,
) -> anyhow::Result<()> {
    for (&listener, &port) in LISTENERS.iter().zip(&ports.listeners) {
        let refused = if listener.filter.authenticates() {
            401
        } else {
            200
        };
        let own = |kind: TokenKind| {
            token_of(
                Case {
                    listener,
                    token: kind,
                },
                tokens,
                &auth_api.tokens,
            )
        };
        // A token of another algorithm names a key this listener does not have.
        let other = tokens.of(if listener.alg == Algorithm::HS256 {
            Algorithm::ES256
        } else {
            Algorithm::HS256
        });
        let expectations = [
            ("/", own(TokenKind::Valid), "a valid token", 200),
            ("/", own(TokenKind::Bad), "a badly signed token", refused),
            (
                "/",
                own(TokenKind::UnknownKid),
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
            (CHECK_PATH, own(TokenKind::Valid), "a valid token", 200),
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
                let wanted = match listener.filter {
                    Filter::ExtAuthz => Some(auth_api.tokens.user_id.as_str()),
                    filter => filter.authenticates().then_some(SUBJECT),
                };
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
    /// Sent as `Authorization: Bearer …`; no header when `None`.
    token: Option<&'a str>,
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
            headers: self
                .token
                .map(|token| format!("authorization: Bearer {token}"))
                .into_iter()
                .collect(),
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
    /// Envoy's CPU time per request.
    cpu_us: f64,
    /// auth-api's CPU time per request (`ext_authz`'s checks; about nothing for the others).
    api_cpu_us: f64,
}

struct Setup {
    seconds: u32,
    rounds: u32,
    connections: u32,
    warmup: u32,
    cpus: Option<(u32, u32)>,
    filter_source: String,
    /// Which auth-api served `ext_authz`.
    api_source: String,
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
        let ratio = |cached: bool| match case.reference(cached) {
            Some(reference) if reference == i => "1.00".to_owned(),
            Some(reference) => format!("{:.2}", paired(s, of(reference), |a, b| a.rps / b.rps)),
            None => "—".to_owned(),
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
    push_ext_authz(&mut md, setup, samples);
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

/// `ext_authz` (Envoy → auth-api over gRPC, a stateful check per request) beside the no-op wasm
/// filter, ours with its cache and native `jwt_authn` (ES256, the algorithm of auth-api's
/// tokens), by throughput and by CPU per request: Envoy's, and auth-api's, which is the real
/// price of the check.
fn push_ext_authz(md: &mut String, setup: &Setup, samples: &[Vec<Sample>]) {
    let of = |i: usize| samples.get(i).map_or(&[][..], Vec::as_slice);
    let at = |filter: Filter, alg: Algorithm, token: TokenKind| {
        CASES
            .iter()
            .position(|c| c.listener == listener(filter, alg) && c.token == token)
    };
    let references = [
        (
            "noop-wasm",
            at(Filter::NoopWasm, Algorithm::HS256, TokenKind::Valid),
        ),
        (
            "ours+cache",
            at(Filter::OursCache, Algorithm::ES256, TokenKind::Valid),
        ),
        (
            "jwt_authn",
            at(Filter::JwtAuthn, Algorithm::ES256, TokenKind::Valid),
        ),
    ];
    let pinning = match setup.cpus {
        Some((envoy, load)) => format!(
            "auth-api (release, SQLite, its default settings but for the limits) runs pinned to \
             CPU {load}, wrk's, so that Envoy keeps CPU {envoy} to itself: auth-api and wrk \
             compete for that CPU, which holds `ext_authz`'s requests/s down, so its CPU time \
             per request is the sturdier figure"
        ),
        None => "auth-api (release, SQLite) is not pinned".to_owned(),
    };
    md.push_str(&format!(
        "\n`ext_authz`: Envoy's `envoy.filters.http.ext_authz` calling auth-api's \
         `Authorization/Check` over gRPC (one HTTP/2 connection from Envoy's one worker) for \
         every request: the stateful check of `/validate` (signature, then the session and the \
         user read from the store, so a revoked session or a disabled user is refused at once). \
         The HS256 tokens of the other rows are not auth-api's: these requests carry auth-api's \
         own ES256 access token, from `/signup` and `/login` on that auth-api, so the reference \
         rows are ES256 (`noop-wasm` checks nothing). {pinning}. auth-api built from \
         {source}. Ratios paired round by round; \"total CPU\" is Envoy's + auth-api's.\n\n",
        source = setup.api_source,
    ));
    md.push_str(
        "| configuration | token | req/s | p50 µs | p99 µs | Envoy CPU µs/req | auth-api CPU \
         µs/req | total CPU µs/req | req/s × noop-wasm | × ours+cache | × jwt_authn | total \
         CPU × ours+cache | × jwt_authn |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:\
         |---:|---:|\n",
    );
    let med = |s: &[Sample], f: &dyn Fn(&Sample) -> f64| median(s.iter().map(f).collect());
    let total = |x: &Sample| x.cpu_us + x.api_cpu_us;
    for token in [TokenKind::Valid, TokenKind::Bad, TokenKind::Missing] {
        let Some(i) = at(Filter::ExtAuthz, Algorithm::ES256, token) else {
            continue;
        };
        let s = of(i);
        let ratio = |reference: Option<usize>, f: &dyn Fn(&Sample, &Sample) -> f64| {
            reference.map_or("—".to_owned(), |r| format!("{:.2}", paired(s, of(r), f)))
        };
        let rps = |a: &Sample, b: &Sample| a.rps / b.rps;
        let cpu = |a: &Sample, b: &Sample| total(a) / b.cpu_us;
        md.push_str(&format!(
            "| `ext_authz` | {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} | \
             {} | {} |\n",
            token.name(),
            med(s, &|x| x.rps),
            med(s, &|x| x.p50_us),
            med(s, &|x| x.p99_us),
            med(s, &|x| x.cpu_us),
            med(s, &|x| x.api_cpu_us),
            med(s, &total),
            ratio(references[0].1, &rps),
            ratio(references[1].1, &rps),
            ratio(references[2].1, &rps),
            ratio(references[1].1, &cpu),
            ratio(references[2].1, &cpu),
        ));
    }
    for (name, reference) in references {
        let Some(i) = reference else { continue };
        let s = of(i);
        md.push_str(&format!(
            "| `{name}` ({}) | valid | {:.0} | {:.0} | {:.0} | {:.2} | — | {:.2} | | | | | |\n",
            CASES[i].listener.alg,
            med(s, &|x| x.rps),
            med(s, &|x| x.p50_us),
            med(s, &|x| x.p99_us),
            med(s, &|x| x.cpu_us),
            med(s, &|x| x.cpu_us),
        ));
    }
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
    fn ext_authz_carries_auth_api_tokens_and_calls_its_cluster() {
        let tokens = tokens().unwrap();
        let api = ApiTokens {
            valid: "api.valid.token".to_owned(),
            bad: "api.valid.tokeX".to_owned(),
            user_id: "user".to_owned(),
        };
        let ext = |token| Case {
            listener: listener(Filter::ExtAuthz, Algorithm::ES256),
            token,
        };
        assert_eq!(
            token_of(ext(TokenKind::Valid), &tokens, &api),
            Some("api.valid.token")
        );
        assert_eq!(
            token_of(ext(TokenKind::Bad), &tokens, &api),
            Some("api.valid.tokeX")
        );
        assert_eq!(token_of(ext(TokenKind::Missing), &tokens, &api), None);
        let ours = case(Filter::OursCache, Algorithm::ES256, TokenKind::Valid);
        assert_eq!(
            token_of(ours, &tokens, &api),
            Some(tokens.es256.valid.as_str())
        );
        assert_eq!(ext(TokenKind::Missing).expected_status(), 401);

        let ports = Ports {
            listeners: (0..).take(LISTENERS.len()).collect(),
            admin: 99,
        };
        let config = envoy_config(
            &ports,
            &tokens,
            Path::new("a.wasm"),
            Path::new("b.wasm"),
            50_123,
        );
        let cluster = &config["static_resources"]["clusters"][0];
        assert_eq!(cluster["name"], EXT_AUTHZ_CLUSTER);
        assert_eq!(
            cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["socket_address"]["port_value"],
            50_123
        );
        let ext_authz = listener(Filter::ExtAuthz, Algorithm::ES256);
        let filters = &config["static_resources"]["listeners"][ext_authz.index()]["filter_chains"]
            [0]["filters"][0]["typed_config"]["http_filters"];
        assert_eq!(filters[0]["name"], "envoy.filters.http.ext_authz");
        assert_eq!(
            filters[0]["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"],
            EXT_AUTHZ_CLUSTER
        );
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
                let Some(reference) = case.reference(cached) else {
                    // `jwt_authn` is measured refusing HS256 tokens only.
                    assert_eq!(case.listener.filter, Filter::ExtAuthz, "case {i}");
                    assert_ne!(case.token, TokenKind::Valid, "case {i}");
                    continue;
                };
                let reference = CASES[reference];
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
