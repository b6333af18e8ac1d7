//! `cargo xtask up`: auth-api (SQLite unless `AUTH_DATABASE_URL` says otherwise: auth-api gets
//! this environment, so `postgres://…` or `mysql://…` with `AUTH_KEY_ENCRYPTION_KEYS` runs the
//! stack on PostgreSQL or MariaDB/MySQL), the echo upstream and Envoy with the filter, on the
//! ports of DESIGN.md, until Ctrl-C or until one of them dies. Unless `AUTH_OIDC_PROVIDERS_FILE`
//! names the operator's own providers, a local OpenID Provider (the e2e tests' `oidc-provider`,
//! `tests/oidc/provider.mjs`) runs beside them as provider `local`, so that social login works
//! in the dev stack without an account anywhere. Unless `AUTH_SMTP_URL` names the operator's own
//! relay, a local SMTP sink (the tests' `aiosmtpd`, `tests/smtp/sink.py`) receives auth-api's
//! mail and keeps each message as a file in `.stack/mail/`, where the verification and reset
//! links of the account pages (`/auth/account/`) are read.

use std::{
    collections::HashMap,
    io::Read as _,
    net::SocketAddr,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use envoy_harness::{Envoy, Launch};
use reqwest::blocking::Client;

use crate::tools::{ensure_envoy, run, step, wait_for_port};

const GATEWAY: u16 = 10000;
const ADMIN: u16 = 9901;
const AUTH_API: u16 = 8080;
const AUTH_INTERNAL: u16 = 8081;
const AUTH_GRPC: u16 = 50051;
const UPSTREAM: u16 = 8090;
/// The filter polls keys this often in the dev stack.
const POLL_SECONDS: u32 = 5;
/// And the revocation feed this often (the filter's default): with `ETag`s an unchanged feed
/// costs one indexed query per poll.
const REVOCATION_POLL_SECONDS: u32 = 2;
/// The issuer of the dev stack's tokens: auth-api's public URL behind the gateway, where
/// discovery (`/.well-known/openid-configuration`) is found.
const ISSUER: &str = "http://127.0.0.1:10000/auth";

/// `AUTH_CORS_ALLOWED_ORIGINS` of the dev stack: the origins of envoy/dev.yaml's CORS policy.
const DEV_CORS_ORIGINS: &str = "http://localhost:*,http://127.0.0.1:*";
/// The local OpenID Provider of the dev stack (when `AUTH_OIDC_PROVIDERS_FILE` is unset).
const DEV_PROVIDER: u16 = 9400;
/// Where the dev stack's social logins end: the echo upstream, which shows the `code`.
const SIGNED_IN: &str = "http://127.0.0.1:10000/public/signed-in";
/// The variable that hands auth-api the local provider's client secret (never in the file).
const DEV_PROVIDER_SECRET_VAR: &str = "AUTH_DEV_OIDC_CLIENT_SECRET";
/// The public JWKS on auth-api's public listener, which the dev gateway polls.
const JWKS_PATH: &str = "/.well-known/jwks.json";
/// The local SMTP sink of the dev stack (when `AUTH_SMTP_URL` is unset).
const MAIL: u16 = 2525;
/// The `From` of the dev stack's mail.
const MAIL_FROM: &str = "auth-service dev stack <accounts@example.com>";
/// The variable naming auth-api's relay.
const SMTP_URL_VAR: &str = "AUTH_SMTP_URL";

/// The running processes, stopped (TERM, then KILL) when dropped: Envoy first (it stops
/// itself), then the others.
struct Processes {
    children: Vec<(&'static str, Child)>,
    envoy: Option<Envoy>,
}

impl Processes {
    /// The first process that has exited, with its status.
    fn exited(&mut self) -> Option<(&'static str, String)> {
        if let Some(status) = self.envoy.as_mut().and_then(Envoy::exited) {
            return Some(("envoy", status.to_string()));
        }
        self.children.iter_mut().find_map(|(name, child)| {
            let status = child.try_wait().ok()??;
            Some((*name, status.to_string()))
        })
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        drop(self.envoy.take());
        for (_, child) in &mut self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (name, child) in &mut self.children {
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            if matches!(child.try_wait(), Ok(None)) {
                eprintln!("{name} did not stop in time: killing it");
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// The dev gateway (`envoy/dev.yaml`, filled in by `up`) expects tokens from issuer
/// [`ISSUER`] for audience `api`, verifies them with the public keys of auth-api's JWKS, and the
/// stack owns the listen addresses: environment variables that would make auth-api disagree are
/// refused before anything starts, rather than every token being refused at the gateway later.
fn check_environment(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
    let set = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    let mut problems = Vec::new();
    if let Some(issuer) = set("AUTH_JWT_ISSUER").filter(|i| i.trim() != ISSUER) {
        problems.push(format!(
            "AUTH_JWT_ISSUER={issuer:?}: the dev gateway accepts only tokens from {ISSUER:?} \
             (the stack sets it)"
        ));
    }
    if let Some(alg) = set("AUTH_SIGNING_ALG").filter(|a| a.trim() == "HS256") {
        problems.push(format!(
            "AUTH_SIGNING_ALG={alg:?}: the dev gateway verifies with the public keys of \
             {JWKS_PATH}, where an HS256 key (a shared secret) never appears"
        ));
    }
    if let Some(url) = set("AUTH_PUBLIC_URL").filter(|u| u.trim().trim_end_matches('/') != ISSUER) {
        problems.push(format!(
            "AUTH_PUBLIC_URL={url:?}: the links of the dev stack's mail lead through the gateway, \
             to {ISSUER:?} (the stack sets it)"
        ));
    }
    if let Some(audiences) =
        set("AUTH_JWT_AUDIENCE").filter(|a| !a.split(',').any(|a| a.trim() == "api"))
    {
        problems.push(format!(
            "AUTH_JWT_AUDIENCE={audiences:?}: the dev gateway accepts only tokens for \"api\""
        ));
    }
    for name in ["AUTH_LISTEN", "AUTH_INTERNAL_LISTEN", "AUTH_GRPC_LISTEN"] {
        if set(name).is_some() {
            problems.push(format!(
                "{name}: the dev stack sets it (ports {AUTH_API}, {AUTH_INTERNAL} and {AUTH_GRPC})"
            ));
        }
    }
    if !problems.is_empty() {
        bail!(
            "unset these for `cargo xtask up` (edit envoy/dev.yaml and xtask/src/up.rs for other \
             values):\n  {}",
            problems.join("\n  ")
        );
    }
    Ok(())
}

pub(crate) fn up(root: &Path) -> anyhow::Result<()> {
    check_environment(|name| std::env::var(name).ok())?;
    step("wasm target", || {
        run(root, "rustup", &["target", "add", "wasm32-wasip1"])
    })?;
    let envoy_bin = step("Envoy", || ensure_envoy(root))?;
    let wasm = step("build the filter", || crate::build_filter(root))?;
    step("build auth-api and the upstream", || {
        run(
            root,
            "cargo",
            &["build", "-p", "auth-api", "-p", "echo-upstream"],
        )
    })?;

    let token = match std::env::var("AUTH_INTERNAL_TOKEN") {
        Ok(token) if !token.is_empty() => token,
        _ => random_token()?,
    };
    let state_dir = root.join(".stack");
    std::fs::create_dir_all(&state_dir)?;
    let bin = crate::tools::target_dir(root).join("debug");

    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("cannot catch Ctrl-C")?;
    let mut processes = Processes {
        children: Vec::new(),
        envoy: None,
    };
    let client = Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(5))
        .build()
        .context("cannot build an HTTP client")?;

    let providers = match std::env::var(PROVIDERS_FILE_VAR) {
        Ok(file) if !file.trim().is_empty() => Providers::Operator(file),
        _ => step("the local OpenID Provider (npm oidc-provider)", || {
            start_dev_provider(root, &state_dir, &mut processes)
        })?,
    };
    let mail = match std::env::var(SMTP_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Mail::Operator,
        _ => step("the local SMTP sink (aiosmtpd)", || {
            start_mail_sink(root, &state_dir, &mut processes)
        })?,
    };
    let store = store_description(std::env::var("AUTH_DATABASE_URL").ok().as_deref());
    println!("==> auth-api on {store}");
    // auth-api inherits this environment: AUTH_DATABASE_URL, AUTH_KEY_ENCRYPTION_KEYS and the
    // rest reach it as they are.
    let mut auth_api = Command::new(bin.join("auth-api"));
    auth_api
        .current_dir(root)
        .arg("serve")
        .env("AUTH_LISTEN", format!("127.0.0.1:{AUTH_API}"))
        .env("AUTH_INTERNAL_LISTEN", format!("127.0.0.1:{AUTH_INTERNAL}"))
        .env("AUTH_GRPC_LISTEN", format!("127.0.0.1:{AUTH_GRPC}"))
        .env("AUTH_INTERNAL_TOKEN", &token)
        .env("AUTH_JWT_ISSUER", ISSUER)
        // The links in its mail: the account pages through the gateway.
        .env("AUTH_PUBLIC_URL", ISSUER)
        // The origins envoy/dev.yaml's CORS policy allows, for a front end calling auth-api
        // directly.
        .env("AUTH_CORS_ALLOWED_ORIGINS", DEV_CORS_ORIGINS);
    if std::env::var_os("AUTH_EMAIL_VERIFICATION").is_none() {
        // Signing up sends the verification mail, and signing in works before it is followed.
        auth_api.env("AUTH_EMAIL_VERIFICATION", "optional");
    }
    if let Mail::Local(_) = &mail {
        auth_api
            .env(SMTP_URL_VAR, format!("smtp://127.0.0.1:{MAIL}"))
            .env("AUTH_EMAIL_FROM", MAIL_FROM);
        if std::env::var_os("AUTH_OUTBOX_POLL_SECS").is_none() {
            // A mail the outbox could not hand over at once is retried within a second.
            auth_api.env("AUTH_OUTBOX_POLL_SECS", "1");
        }
    }
    if let Providers::Local { file, secret } = &providers {
        auth_api
            .env(PROVIDERS_FILE_VAR, file)
            .env(DEV_PROVIDER_SECRET_VAR, secret);
    }
    processes.children.push((
        "auth-api",
        auth_api.spawn().context("cannot start auth-api")?,
    ));
    wait_until(
        &mut processes,
        || http_status(&client, AUTH_API, "/readyz") == Some(200),
        "auth-api /readyz",
    )?;
    check_signer(root, &bin)?;

    let mut upstream = Command::new(bin.join("echo-upstream"));
    upstream.arg(format!("127.0.0.1:{UPSTREAM}"));
    processes.children.push((
        "echo-upstream",
        upstream.spawn().context("cannot start the echo upstream")?,
    ));
    wait_until(
        &mut processes,
        || wait_for_port(addr(UPSTREAM), Duration::from_millis(300)).is_ok(),
        "upstream",
    )?;

    let template = std::fs::read_to_string(root.join("envoy/dev.yaml"))?;
    let values = HashMap::from([
        ("GATEWAY_PORT", GATEWAY.to_string()),
        ("ADMIN_PORT", ADMIN.to_string()),
        ("AUTH_API_PORT", AUTH_API.to_string()),
        ("AUTH_INTERNAL_PORT", AUTH_INTERNAL.to_string()),
        ("UPSTREAM_PORT", UPSTREAM.to_string()),
        ("WASM_PATH", wasm.display().to_string()),
        ("INTERNAL_TOKEN", token.clone()),
        ("ISSUER", ISSUER.to_owned()),
        ("POLL_SECONDS", POLL_SECONDS.to_string()),
        (
            "REVOCATION_POLL_SECONDS",
            REVOCATION_POLL_SECONDS.to_string(),
        ),
    ]);
    let config = envoy_harness::render(&template, &values)?;
    // Its configuration and admin address go to .stack/, its log to the terminal.
    processes.envoy = Some(
        Launch::new(&envoy_bin, config)
            .concurrency(2)
            .log_level("warning")
            .work_dir(&state_dir)
            .log_to_terminal()
            .start()
            .context("cannot start Envoy")?,
    );
    // Public routes pass as soon as Envoy listens; protected ones once the filter has keys.
    wait_until(
        &mut processes,
        || http_status(&client, GATEWAY, "/public/") == Some(200),
        "Envoy",
    )?;
    wait_until(
        &mut processes,
        || http_status(&client, GATEWAY, "/api/") == Some(401),
        "the filter's keys",
    )?;

    print_banner(&store);
    print_mail(&mail);
    print_social_login(&providers);
    while !stop.load(Ordering::SeqCst) {
        if let Some((name, status)) = processes.exited() {
            bail!("{name} exited ({status}): stopping the stack");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("\nstopping…");
    Ok(())
}

/// The variable naming auth-api's providers file.
const PROVIDERS_FILE_VAR: &str = "AUTH_OIDC_PROVIDERS_FILE";

/// Where the dev stack's sign-in providers come from.
enum Providers {
    /// The operator's file (`AUTH_OIDC_PROVIDERS_FILE`), passed through.
    Operator(String),
    /// The local provider this run started: the file written for it and its client secret.
    Local {
        file: std::path::PathBuf,
        secret: String,
    },
}

/// Starts `tests/oidc/provider.mjs` on 127.0.0.1:[`DEV_PROVIDER`] with one account (`ada`,
/// `ada@example.com`, verified) and a client for the gateway's `/auth/callback`, and writes
/// the providers file for it into `state_dir`.
fn start_dev_provider(
    root: &Path,
    state_dir: &Path,
    processes: &mut Processes,
) -> anyhow::Result<Providers> {
    crate::interop::npm_ci(root, "tests/oidc", "oidc-provider")?;
    let secret = random_token()?;
    let issuer = format!("http://127.0.0.1:{DEV_PROVIDER}");
    let callback = format!("http://127.0.0.1:{GATEWAY}/auth/callback");
    let config = serde_json::json!({
        "host": "127.0.0.1",
        "port": DEV_PROVIDER,
        "clients": [{ "client_id": "auth-service-dev", "client_secret": secret,
                      "redirect_uris": [callback] }],
        "accounts": [{ "sub": "ada", "email": "ada@example.com", "email_verified": true,
                       "name": "Ada Lovelace" }],
    });
    let mut provider = Command::new("node");
    provider
        .current_dir(root.join("tests/oidc"))
        .arg("provider.mjs")
        // In the environment, not the command line: the client secret stays out of `ps`.
        .env("OIDC_PROVIDER_CONFIG", config.to_string())
        // It stops when its input closes: with this process, however that ends.
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    processes.children.push((
        "oidc-provider",
        provider
            .spawn()
            .context("cannot start the local OpenID Provider (needs Node.js)")?,
    ));
    wait_until(
        processes,
        || wait_for_port(addr(DEV_PROVIDER), Duration::from_millis(300)).is_ok(),
        "the local OpenID Provider",
    )?;
    let file = state_dir.join("oidc-providers.json");
    let providers = serde_json::json!({
        "providers": [{ "name": "local", "kind": "oidc", "issuer": issuer,
                        "client_id": "auth-service-dev",
                        "client_secret_env": DEV_PROVIDER_SECRET_VAR }],
        "redirect_allow_list": [SIGNED_IN],
        "callback_url": callback,
    });
    std::fs::write(&file, serde_json::to_string_pretty(&providers)?)
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(Providers::Local { file, secret })
}

/// Where the dev stack's mail goes.
enum Mail {
    /// The operator's relay (`AUTH_SMTP_URL`), passed through with their `AUTH_EMAIL_FROM`.
    Operator,
    /// The local sink this run started, and the directory it writes the messages into.
    Local(std::path::PathBuf),
}

/// Starts `tests/smtp/sink.py` (aiosmtpd, installed into `.venv` when missing) on
/// 127.0.0.1:[`MAIL`], writing each message into `state_dir/mail`, emptied first: the mail of
/// this run only.
fn start_mail_sink(
    root: &Path,
    state_dir: &Path,
    processes: &mut Processes,
) -> anyhow::Result<Mail> {
    let venv = crate::tools::ensure_venv(root, "aiosmtpd")?;
    crate::interop::ensure_aiosmtpd(&venv)?;
    let dir = state_dir.join("mail");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut sink = Command::new(venv.join("bin/python"));
    sink.arg(root.join("tests/smtp/sink.py"))
        .arg(&dir)
        .args(["--port", &MAIL.to_string()])
        // It stops when its input closes: with this process, however that ends.
        .stdin(std::process::Stdio::piped())
        // It prints its port, which is ours.
        .stdout(std::process::Stdio::null())
        // Out of the terminal's process group: Ctrl-C reaches `up`, which stops the sink with a
        // TERM (Python would print a KeyboardInterrupt traceback for an INT).
        .process_group(0);
    processes.children.push((
        "smtp-sink",
        sink.spawn().context("cannot start the SMTP sink")?,
    ));
    wait_until(
        processes,
        || wait_for_port(addr(MAIL), Duration::from_millis(300)).is_ok(),
        "the SMTP sink",
    )?;
    Ok(Mail::Local(dir))
}

/// Where to read the stack's mail.
fn print_mail(mail: &Mail) {
    match mail {
        Mail::Operator => println!("\nMail: through the relay of {SMTP_URL_VAR}."),
        Mail::Local(dir) => println!(
            r#"
Mail: nothing leaves the machine. A local SMTP sink on 127.0.0.1:{MAIL} receives auth-api's mail:
  mail: {dir} (one .eml per message, beside it a .json with its headers and decoded text)
Account pages: http://127.0.0.1:{GATEWAY}/auth/account/signup; the newest mail's text (its
verification or reset link):
  python3 -c 'import glob,json; m=json.load(open(sorted(glob.glob("{dir}/*.json"))[-1])); print(m["parts"][0]["body"])'"#,
            dir = dir.display()
        ),
    }
}

/// How to try social login in this stack.
fn print_social_login(providers: &Providers) {
    match providers {
        Providers::Operator(file) => {
            println!("\nSocial login: the providers of {PROVIDERS_FILE_VAR}={file}.");
        }
        Providers::Local { .. } => println!(
            r#"
Social login (provider `local`: a real OpenID Provider on http://127.0.0.1:{DEV_PROVIDER},
sign in as `ada`, any password):
  VERIFIER=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
  CHALLENGE=$(python3 -c 'import base64,hashlib,sys; print(base64.urlsafe_b64encode(hashlib.sha256(sys.argv[1].encode()).digest()).rstrip(b"=").decode())' "$VERIFIER")
  echo "http://127.0.0.1:{GATEWAY}/auth/authorize?provider=local&redirect_to={SIGNED_IN}&code_challenge=$CHALLENGE&code_challenge_method=S256"
  # open that URL in a browser, sign in, then copy `code` from the page you land on:
  curl -s 'localhost:{GATEWAY}/auth/token?grant_type=pkce' -H 'content-type: application/json' \
       -d '{{"auth_code":"<code>","code_verifier":"'"$VERIFIER"'"}}'"#
        ),
    }
}

fn wait_until(
    processes: &mut Processes,
    mut ready: impl FnMut() -> bool,
    what: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        if let Some((name, status)) = processes.exited() {
            bail!("{name} exited ({status}) while waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("{what} was not ready after 60 s")
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The dev gateway verifies with public keys only: a key ring made before ES256 became the
/// default (an old `./auth.db`) still signs with HS256, whose key the public JWKS never lists,
/// and every protected request would be refused — also while a rotated-in public key is still
/// pending. Ask auth-api which key signs (`keys list` marks it with `*`) and say how to move on
/// before starting the gateway.
fn check_signer(root: &Path, bin: &Path) -> anyhow::Result<()> {
    let output = Command::new(bin.join("auth-api"))
        .current_dir(root)
        .args(["keys", "list"])
        .output()
        .context("cannot run auth-api keys list")?;
    if !output.status.success() {
        bail!(
            "auth-api keys list failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let listing = String::from_utf8_lossy(&output.stdout);
    let signer = signer_algorithm(&listing)
        .with_context(|| format!("auth-api keys list names no signer:\n{listing}"))?;
    if signer == "HS256" {
        bail!(
            "the key ring (in ./auth.db, or AUTH_DATABASE_URL) signs with HS256, whose secret the \
             dev gateway never gets: it verifies with the public keys of {JWKS_PATH}.\n{listing}\
             Rotate to a public-key algorithm:\n  \
             cargo run -p auth-api -- keys rotate --alg ES256\n\
             (the new key signs after AUTH_KEY_PUBLISH_DELAY_SECS; run `cargo xtask up` again \
             then), or remove ./auth.db and its ./auth.db.kek for a fresh dev database"
        );
    }
    Ok(())
}

/// The ALG column of the line `auth-api keys list` marks with a trailing `*`.
fn signer_algorithm(listing: &str) -> Option<&str> {
    listing
        .lines()
        .find(|line| line.trim_end().ends_with(" *"))
        .and_then(|line| line.split_whitespace().nth(1))
}

/// The status of `GET path` on a loopback port, with a (bogus) token, so that the filter answers
/// 401 once it has keys and 503 before.
fn http_status(client: &Client, port: u16, path: &str) -> Option<u16> {
    let response = client
        .get(format!("http://{}{path}", addr(port)))
        .bearer_auth("not.a.jwt")
        .send()
        .ok()?;
    Some(response.status().as_u16())
}

/// 32 random bytes as hex, from the OS.
fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0_u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for AUTH_INTERNAL_TOKEN (set it yourself)")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The store auth-api runs on, as the dev stack reports it: the engine and the URL without its
/// password.
fn store_description(database_url: Option<&str>) -> String {
    let Some(url) = database_url.map(str::trim).filter(|u| !u.is_empty()) else {
        return "SQLite, ./auth.db (the default; set AUTH_DATABASE_URL for another store)"
            .to_owned();
    };
    let engine = match url.split_once(':').map(|(scheme, _)| scheme) {
        Some("sqlite") => "SQLite",
        Some("postgres" | "postgresql") => "PostgreSQL",
        Some("mysql" | "mariadb") => "MariaDB/MySQL",
        _ => "an unknown store",
    };
    format!("{engine}, {} (AUTH_DATABASE_URL)", without_password(url))
}

/// `url` with the password of its user info, if any, replaced by `***`, and its options (which
/// may hold one too) by `?…`.
fn without_password(url: &str) -> String {
    let (url, options) = match url.split_once('?') {
        Some((url, _)) => (url, "?…"),
        None => (url, ""),
    };
    format!("{}{options}", without_userinfo_password(url))
}

fn without_userinfo_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

fn print_banner(store: &str) {
    println!(
        r#"
auth-service is up:
  gateway   http://127.0.0.1:{GATEWAY}   (Envoy admin: http://127.0.0.1:{ADMIN})
  auth-api  http://127.0.0.1:{AUTH_API}    (internal: http://127.0.0.1:{AUTH_INTERNAL}, not routed)
  gRPC      127.0.0.1:{AUTH_GRPC}        (auth.v1.AuthService, ext_authz, health, reflection:
            grpcurl -plaintext 127.0.0.1:{AUTH_GRPC} list)
  store     {store}
  upstream  http://127.0.0.1:{UPSTREAM}    (echoes what it receives)
  issuer    {ISSUER}   (discovery: {ISSUER}/.well-known/openid-configuration,
            public keys: {ISSUER}{JWKS_PATH}, which the gateway polls)

Try:
  curl -s localhost:{GATEWAY}/auth/signup -H 'content-type: application/json' \
       -d '{{"email":"ada@example.com","password":"correct horse battery staple"}}'
  TOKEN=$(curl -s localhost:{GATEWAY}/auth/login -H 'content-type: application/json' \
       -d '{{"email":"ada@example.com","password":"correct horse battery staple"}}' \
       | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl -s  localhost:{GATEWAY}/api/hello -H "authorization: Bearer $TOKEN"        # 200, with x-user-* headers
  curl -si localhost:{GATEWAY}/api/hello                                          # 401
  curl -si localhost:{GATEWAY}/api/admin/stats -H "authorization: Bearer $TOKEN"  # 403 until:
  cargo run -p auth-api -- users grant-role ada@example.com admin                # (then log in again)
  # then 401 insufficient_user_authentication (acr_values="aal2") until signed in with a TOTP
  # code: enrol and sign in at http://127.0.0.1:{GATEWAY}/auth/account/

Ctrl-C stops everything."#
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(vars: &[(&str, &str)]) -> anyhow::Result<()> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        check_environment(|name| vars.get(name).cloned())
    }

    #[test]
    fn settings_the_dev_gateway_would_contradict_are_refused() {
        assert!(check(&[]).is_ok());
        assert!(check(&[
            ("AUTH_JWT_ISSUER", ISSUER),
            ("AUTH_JWT_AUDIENCE", "billing, api"),
            ("AUTH_DATABASE_URL", "postgres://x"),
            ("AUTH_SIGNING_ALG", "EdDSA"),
            ("AUTH_PUBLIC_URL", "http://127.0.0.1:10000/auth/"),
        ])
        .is_ok());
        for (name, value) in [
            ("AUTH_JWT_ISSUER", "https://auth.example.com"),
            ("AUTH_JWT_ISSUER", "auth-service"),
            ("AUTH_JWT_AUDIENCE", "billing"),
            ("AUTH_LISTEN", "0.0.0.0:9000"),
            ("AUTH_SIGNING_ALG", "HS256"),
            ("AUTH_PUBLIC_URL", "https://auth.example.com"),
        ] {
            let err = check(&[(name, value)]).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn the_store_is_named_without_its_password() {
        assert!(store_description(None).starts_with("SQLite, ./auth.db"));
        assert!(store_description(Some(" ")).starts_with("SQLite, ./auth.db"));
        assert_eq!(
            store_description(Some("mysql://auth:s3cret@127.0.0.1:3306/auth")),
            "MariaDB/MySQL, mysql://auth:***@127.0.0.1:3306/auth (AUTH_DATABASE_URL)"
        );
        assert_eq!(
            store_description(Some("postgres://postgres@127.0.0.1/auth?sslmode=disable")),
            "PostgreSQL, postgres://postgres@127.0.0.1/auth?… (AUTH_DATABASE_URL)"
        );
        assert_eq!(
            store_description(Some("mariadb://a:b@h/x?password=c@e")),
            "MariaDB/MySQL, mariadb://a:***@h/x?… (AUTH_DATABASE_URL)"
        );
        assert_eq!(
            store_description(Some("sqlite://dev.db")),
            "SQLite, sqlite://dev.db (AUTH_DATABASE_URL)"
        );
    }

    #[test]
    fn the_signer_is_read_from_keys_list() {
        let listing =
            "KID                ALG    STATE     SIGNS FROM            SIGNS UNTIL           KEK\n\
            2026-01            HS256  active    2026-01-01T00:00:00Z  -                     file\n\
            2026-12            ES256  pending   2026-12-02T00:05:00Z  -                     file\n";
        assert_eq!(signer_algorithm(listing), None, "no line is marked");
        let marked = listing.replace("file\n2026-12", "file *\n2026-12");
        assert_eq!(signer_algorithm(&marked), Some("HS256"));
    }
}
