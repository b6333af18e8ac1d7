//! The e2e tests' Envoy: the shared supervisor (`envoy-harness`) behind an async face, plus what
//! only the tests need: the filter's `.wasm`, `envoy/dev.yaml` rendered for a stack, and a
//! gateway that polls `/internal/keys`.

use std::{collections::HashMap, path::PathBuf, time::Duration};

pub use envoy_harness::{workspace_root, Failed as EnvoyFailed};

/// The Envoy binary: `ENVOY_BIN`, else `.venv/bin/envoy` (what `cargo xtask` installs).
///
/// # Panics
/// When there is none, saying how to install it.
pub fn envoy_binary() -> PathBuf {
    envoy_harness::find_binary().unwrap_or_else(|e| panic!("{e}"))
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

/// A rendered `envoy/dev.yaml` whose `section` (`remote_jwks` or `remote_revocations`) has
/// `stale_after_seconds` set to `seconds`.
///
/// # Panics
/// When the section or its `stale_after_seconds` is missing.
pub fn set_stale_after(config: &str, section: &str, seconds: u32) -> String {
    let start = config
        .find(&format!(r#""{section}": {{"#))
        .unwrap_or_else(|| panic!("no {section} in the Envoy config"));
    let (head, tail) = config.split_at(start);
    let end = tail.find('}').expect("an unterminated section");
    let (body, rest) = tail.split_at(end);
    let member = body
        .find(r#""stale_after_seconds": "#)
        .unwrap_or_else(|| panic!("{section} sets no stale_after_seconds"));
    let (before, value) = body.split_at(member);
    let value_end = value
        .find(',')
        .expect("stale_after_seconds is not followed by a member");
    format!(
        r#"{head}{before}"stale_after_seconds": {seconds}{}{rest}"#,
        &value[value_end..]
    )
}

/// Replaces every `{{NAME}}` in `template`.
///
/// # Panics
/// When a placeholder has no value.
pub fn render(template: &str, values: &HashMap<&str, String>) -> String {
    envoy_harness::render(template, values).unwrap_or_else(|e| panic!("{e}"))
}

/// A running Envoy (`--disable-hot-restart`, so several run side by side); stopped when dropped.
#[derive(Debug)]
pub struct Envoy {
    inner: envoy_harness::Envoy,
    /// `http://127.0.0.1:<port>` of the admin API.
    pub admin: String,
    /// `http://127.0.0.1:<port>` of the listener named `gateway`.
    pub gateway: String,
}

impl Envoy {
    /// Starts Envoy on `config` with `concurrency` workers and waits until its listeners are
    /// up; `Err` with its log if it exits or is not ready within 30 s.
    ///
    /// # Panics
    /// When the config has no listener named `gateway`.
    pub async fn start(config: &str, concurrency: u32) -> Result<Self, EnvoyFailed> {
        let launch = envoy_harness::Launch::new(envoy_binary(), config)
            .concurrency(concurrency)
            .log_level("info")
            .ready_timeout(Duration::from_secs(30));
        let inner = tokio::task::spawn_blocking(move || launch.start())
            .await
            .expect("the Envoy launcher panicked")?;
        let gateway = inner
            .url("gateway")
            .expect("the Envoy config has no listener named gateway");
        Ok(Self {
            admin: inner.admin().url().to_owned(),
            gateway,
            inner,
        })
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        self.inner.log()
    }

    /// The value of the first counter whose name ends with `suffix` (wasm metrics get a
    /// `wasmcustom.` prefix), 0 when it does not exist yet.
    pub async fn counter(&self, suffix: &str) -> u64 {
        let admin = self.inner.admin().clone();
        let suffix = suffix.to_owned();
        tokio::task::spawn_blocking(move || admin.counter(&suffix))
            .await
            .unwrap_or(0)
    }
}
