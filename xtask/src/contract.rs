//! The API contract check: a running auth-api against its own OpenAPI document, with
//! schemathesis (property-based: it generates valid and invalid requests from the document).
//! It fails on any 5xx, any undocumented status, content type or header, and any response
//! body that does not match the documented schema.
//!
//! It runs on the three stores at once, each auth-api with its own schemathesis: on a fresh
//! SQLite file, a throwaway PostgreSQL database and a throwaway MariaDB (MySQL) database, since an
//! input one engine accepts another may refuse (a NUL byte, a key past PostgreSQL's index row
//! limit, text past a MySQL column or index length), and that must be a 4xx there too.

use std::{
    fs::File,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use crate::tools::{run, status, DbServer, ThrowawayDb};

/// The schemathesis release we check with (PyPI).
const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// The checks that say "the API keeps its documented contract" (not "every generated input is
/// accepted": an email of random characters is rightly refused).
/// `not_a_server_error` must stay first: a 500 on any store fails the step.
const CHECKS: &str = concat!(
    "not_a_server_error,status_code_conformance,content_type_conformance,",
    "response_headers_conformance,response_schema_conformance"
);

/// Examples per operation and phase, on each store.
const MAX_EXAMPLES: &str = "50";

/// A key-encryption key (`id:base64url`) for the PostgreSQL and MariaDB passes, which refuse to
/// start without one (the SQLite pass keeps its key file beside the database).
const CONTRACT_KEK: &str = "contract-kek:Y29udHJhY3Qta2V5LWVuY3J5cHRpb24ta2V5LTMyYnk";

/// `AUTH_INTERNAL_TOKEN` of the checked auth-api: the internal listener starts only with one.
const CONTRACT_INTERNAL_TOKEN: &str = "contract-internal-token-0123456789abcdef";

/// `AUTH_ADMIN_TOKEN` of the checked auth-api: the Admin API's document and every call to it
/// need it.
const CONTRACT_ADMIN_TOKEN: &str = "contract-admin-token-0123456789abcdef0123";

/// A running auth-api, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One store the contract is checked on.
struct Pass {
    name: &'static str,
    /// `AUTH_DATABASE_URL`.
    database_url: String,
    /// `AUTH_KEY_ENCRYPTION_KEYS`, or unset.
    kek: Option<&'static str>,
}

/// Installs schemathesis into `.venv` when missing, then checks auth-api against
/// `/openapi.json`, and its internal listener against `/admin/v1/openapi.json`, on a fresh SQLite file, a throwaway PostgreSQL database and a throwaway
/// MariaDB database, all at once. Fails when any fails; an unreachable PostgreSQL or MariaDB is
/// a failure, never a skip.
pub(crate) fn check(root: &Path) -> anyhow::Result<()> {
    let schemathesis = ensure_schemathesis(root)?;
    let postgres = ThrowawayDb::create(DbServer::Postgres, "contract")?;
    let mysql = ThrowawayDb::create(DbServer::Mysql, "contract")?;
    run(root, "cargo", &["build", "-p", "auth-api", "--locked"])?;
    let binary = crate::tools::target_dir(root).join("debug/auth-api");
    let dir = std::env::temp_dir().join(format!("auth-contract-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let passes = [
        Pass {
            name: "SQLite",
            database_url: format!("sqlite://{}", dir.join("auth.db").display()),
            kek: None,
        },
        Pass {
            name: "PostgreSQL",
            database_url: postgres.url.clone(),
            kek: Some(CONTRACT_KEK),
        },
        Pass {
            name: "MariaDB",
            database_url: mysql.url.clone(),
            kek: Some(CONTRACT_KEK),
        },
    ];
    let results: Vec<anyhow::Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = passes
            .iter()
            .map(|pass| scope.spawn(|| check_one(&binary, &schemathesis, &dir, pass)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("the pass panicked")))
            .collect()
    });
    drop(postgres);
    drop(mysql);
    let _ = std::fs::remove_dir_all(&dir);
    let failed: Vec<String> = passes
        .iter()
        .zip(results)
        .filter_map(|(pass, result)| result.err().map(|e| format!("{}: {e:#}", pass.name)))
        .collect();
    if !failed.is_empty() {
        bail!("the API contract does not hold on {}", failed.join("; "));
    }
    Ok(())
}

/// `.venv/bin/schemathesis` at [`SCHEMATHESIS_VERSION`], installed from PyPI when missing.
fn ensure_schemathesis(root: &Path) -> anyhow::Result<PathBuf> {
    let schemathesis = root.join(".venv/bin/schemathesis");
    let installed = Command::new(&schemathesis)
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(SCHEMATHESIS_VERSION)
        });
    if !installed {
        let venv = crate::tools::ensure_venv(root, "schemathesis")?;
        let mut pip = Command::new(venv.join("bin/pip"));
        pip.args([
            "install",
            "--quiet",
            &format!("schemathesis=={SCHEMATHESIS_VERSION}"),
        ]);
        status(pip).context("cannot install schemathesis from PyPI into .venv")?;
    }
    Ok(schemathesis)
}

/// Starts auth-api on `pass`'s store and a free port, runs schemathesis against it, and prints
/// its output, and auth-api's too when the pass failed (kept in files under `dir` meanwhile, so
/// that the passes do not interleave).
fn check_one(binary: &Path, schemathesis: &Path, dir: &Path, pass: &Pass) -> anyhow::Result<()> {
    let started = Instant::now();
    let server_log = dir.join(format!("auth-api-{}.log", pass.name));
    let schemathesis_log = dir.join(format!("schemathesis-{}.log", pass.name));
    let result = serve_and_check(binary, schemathesis, pass, &server_log, &schemathesis_log);
    let elapsed = started.elapsed().as_secs_f64();
    let verdict = if result.is_ok() { "ok" } else { "FAILED" };
    let mut report = format!(
        "---- schemathesis on {}: {verdict} ({elapsed:.1}s)\n",
        pass.name
    );
    let logs = [
        ("schemathesis", &schemathesis_log),
        ("auth-api", &server_log),
    ];
    for (what, path) in logs.iter().take(if result.is_ok() { 1 } else { 2 }) {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if !text.trim().is_empty() {
            report.push_str(&format!("---- {what} on {}:\n{text}\n", pass.name));
        }
    }
    // One write, so that the reports of the passes do not mix.
    print!("{report}");
    result
}

fn serve_and_check(
    binary: &Path,
    schemathesis: &Path,
    pass: &Pass,
    server_log: &Path,
    schemathesis_log: &Path,
) -> anyhow::Result<()> {
    // Three passes run at once, schemathesis opening connections all along: ports from
    // `ports`, where no client connection takes them before auth-api binds them.
    let port = crate::ports::free_port();
    let internal_port = loop {
        let candidate = crate::ports::free_port();
        if candidate != port {
            break candidate;
        }
    };
    let log = File::create(server_log)?;
    let mut cmd = Command::new(binary);
    cmd.arg("serve")
        .env("AUTH_DATABASE_URL", &pass.database_url)
        .env("AUTH_LISTEN", format!("127.0.0.1:{port}"))
        // Several passes run at once: the gRPC listener on a port of its own, unused here.
        .env("AUTH_GRPC_LISTEN", "127.0.0.1:0")
        .env("AUTH_INTERNAL_LISTEN", format!("127.0.0.1:{internal_port}"))
        .env("AUTH_INTERNAL_TOKEN", CONTRACT_INTERNAL_TOKEN)
        .env("AUTH_ADMIN_TOKEN", CONTRACT_ADMIN_TOKEN)
        .env("AUTH_BCRYPT_COST", "10")
        // The generator sends hundreds of requests from one address: let them through, so
        // that the operations behind the limits are exercised too.
        .env("AUTH_IP_LIMIT_PER_MINUTE", "1000000")
        .env("AUTH_LOGIN_FREE_ATTEMPTS", "1000000")
        .env("AUTH_HASH_QUEUE", "1000")
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(log.try_clone()?)
        .stderr(log);
    match pass.kek {
        Some(kek) => cmd.env("AUTH_KEY_ENCRYPTION_KEYS", kek),
        None => cmd.env_remove("AUTH_KEY_ENCRYPTION_KEYS"),
    };
    let mut server = Server(
        cmd.spawn()
            .with_context(|| format!("cannot start auth-api on {}", pass.name))?,
    );
    wait_until_serving(&mut server, port)?;
    wait_until_serving(&mut server, internal_port)?;
    let log = File::create(schemathesis_log)?;
    let public = schemathesis_run(
        schemathesis,
        &format!("http://127.0.0.1:{port}/openapi.json"),
        None,
        &log,
    );
    // The Admin API on the internal listener, against its own document (issue 16).
    let admin = schemathesis_run(
        schemathesis,
        &format!("http://127.0.0.1:{internal_port}/admin/v1/openapi.json"),
        Some(&format!("Authorization: Bearer {CONTRACT_ADMIN_TOKEN}")),
        &log,
    );
    public.and(admin)
}

/// One schemathesis run against the document at `url`, with `header` on every request (the
/// document's own included), its output appended to `log`.
fn schemathesis_run(
    schemathesis: &Path,
    url: &str,
    header: Option<&str>,
    log: &File,
) -> anyhow::Result<()> {
    let mut st = Command::new(schemathesis);
    st.args(["run", url, "--checks", CHECKS]).args([
        "--max-examples",
        MAX_EXAMPLES,
        "--seed",
        "1",
        "--no-color",
    ]);
    if let Some(header) = header {
        st.args(["--header", header]);
    }
    st.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log.try_clone()?);
    status(st)
}

/// Waits until auth-api accepts connections on `port`, failing at once if it exits first
/// (a store it cannot open, a refused configuration: its log says why).
fn wait_until_serving(server: &mut Server, port: u16) -> anyhow::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(exit) = server.0.try_wait()? {
            bail!("auth-api exited with {exit} before serving");
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("auth-api does not listen on {addr} after 30s")
}
