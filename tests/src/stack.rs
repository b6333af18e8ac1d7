//! `Stack`: auth-api + echo upstream + Envoy, wired as DESIGN.md's dev stack, on free ports.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use auth_api::{clock::Clock, keyring::RingKey, App, AppState, Config};
use serde_json::Value;
use test_support::{Backend, TestDb};
use tokio::{sync::oneshot, task::JoinHandle};

use crate::{
    envoy::{filter_wasm, poll_internal_keys, render_config, set_stale_after, Envoy},
    gateway::Gateway,
};

/// The internal token of every stack.
pub const INTERNAL_TOKEN: &str = "e2e-internal-token-0123456789abcdefghij";

/// Which key document the gateway polls (`remote_jwks`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GatewayKeys {
    /// auth-api's public `/.well-known/jwks.json`, as `envoy/dev.yaml` ships: public keys only,
    /// no credentials. Tokens of an HS256 key are refused (its secret is never published).
    #[default]
    PublicJwks,
    /// `/internal/keys` with the internal token: the public keys, and the secrets of HS256 keys.
    /// What a gateway polls while an installation still has HS256 tokens in flight.
    Internal,
}

/// How to start a [`Stack`].
#[derive(Debug, Clone, Copy)]
pub struct StackOptions {
    /// The store of auth-api: a fresh database of its own (default SQLite; see the e2e suite's
    /// `main.rs` for which tests run on which store).
    pub backend: Backend,
    /// The filter's key poll interval.
    pub poll_seconds: u32,
    /// The filter's revocation-feed poll interval.
    pub revocation_poll_seconds: u32,
    /// Envoy worker threads (one wasm VM each).
    pub concurrency: u32,
    /// Serve auth-api from the start; when `false` its ports are bound but nobody answers until
    /// [`Stack::start_auth_api`].
    pub serve_auth_api: bool,
    /// Changes to auth-api's test configuration (token lifetimes, delays, signing algorithm).
    pub configure: fn(&mut Config),
    /// Where the gateway's filter gets its keys.
    pub keys: GatewayKeys,
    /// The filter's `stale_after_seconds` for keys and for the revocation feed, when not the
    /// shipped ones.
    pub stale_after: Option<StaleAfter>,
    /// The gateway's port; 0 (the default) lets the system choose. A test fixes it when auth-api's
    /// configuration must name the gateway's URL before Envoy starts (social login's
    /// `callback_url`, read when auth-api is built).
    pub gateway_port: u16,
}

/// `stale_after_seconds` of the filter's two polled sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleAfter {
    /// `remote_jwks.stale_after_seconds`.
    pub keys: u32,
    /// `remote_revocations.stale_after_seconds`.
    pub revocations: u32,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            backend: Backend::Sqlite,
            poll_seconds: 1,
            revocation_poll_seconds: 1,
            concurrency: 2,
            serve_auth_api: true,
            configure: |_| {},
            keys: GatewayKeys::PublicJwks,
            stale_after: None,
            gateway_port: 0,
        }
    }
}

/// auth-api in one of its lives: built (ports bound, nobody answering), serving, or stopped.
pub(crate) enum AuthApi {
    Bound(Box<App>),
    Running {
        stop: oneshot::Sender<()>,
        task: JoinHandle<anyhow::Result<()>>,
    },
    Stopped,
}

/// A running stack; everything stops when it is dropped.
pub struct Stack {
    /// The gateway, and the client that talks to it.
    pub gateway: Gateway,
    /// auth-api's shared state (its store and key ring), for set-up and forging.
    pub state: AppState,
    /// auth-api's internal listener.
    pub internal_addr: SocketAddr,
    /// auth-api's public listener.
    pub public_addr: SocketAddr,
    auth_api: AuthApi,
    echo_stop: Option<oneshot::Sender<()>>,
    _db: TestDb,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("gateway", &self.gateway.envoy.gateway)
            .finish_non_exhaustive()
    }
}

impl Stack {
    /// Starts auth-api, the echo upstream and Envoy, and (when auth-api serves) waits until the
    /// gateway has its keys.
    ///
    /// # Panics
    /// When any part does not start, with its log.
    pub async fn start(options: StackOptions) -> Self {
        Self::start_configured(options, |_| {}).await
    }

    /// Like [`Stack::start`], with `configure` changing auth-api's configuration after
    /// `options.configure`: a closure, for values known only at run time (a file's path).
    ///
    /// # Panics
    /// When any part does not start, with its log.
    pub async fn start_configured(
        options: StackOptions,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        let (db, url) = TestDb::create(options.backend).await;
        let mut config = test_config(url);
        (options.configure)(&mut config);
        configure(&mut config);
        // The gateway accepts the issuer auth-api signs with, whatever the test made it.
        let config_issuer = config.issuer.clone();
        let app = build_auth_api(config).await;
        let (upstream, echo_stop) = spawn_echo().await;
        let envoy = start_gateway(
            &options,
            GatewayUpstreams {
                public: app.public,
                internal: app.internal,
                upstream,
            },
            &config_issuer,
        )
        .await;
        let mut stack = Self {
            gateway: Gateway {
                envoy,
                client: http_client(),
            },
            state: app.state,
            internal_addr: app.internal,
            public_addr: app.public,
            auth_api: app.server,
            echo_stop: Some(echo_stop),
            _db: db,
        };
        if options.serve_auth_api {
            stack.start_auth_api().await;
            stack.gateway.wait_for_keys().await;
        }
        stack
    }

    /// Serves auth-api on the ports it was bound to.
    ///
    /// # Panics
    /// When auth-api was already started.
    pub async fn start_auth_api(&mut self) {
        self.auth_api.serve();
    }

    /// Stops auth-api (its ports close); Envoy keeps running.
    pub async fn stop_auth_api(&mut self) {
        self.auth_api.stop().await;
    }

    /// The stored user of `email`, read directly from auth-api's store.
    ///
    /// # Panics
    /// When there is none.
    pub async fn user(&self, email: &str) -> auth_api::store::UserRow {
        self.state
            .store
            .user_by_email(email)
            .await
            .expect("the store does not answer")
            .expect("no such user")
    }

    /// A token of exactly these header and payload texts, signed with the key that signs now
    /// (whatever its algorithm; the header is taken as it is).
    ///
    /// # Panics
    /// When no key signs.
    pub fn sign_raw(&self, header_json: &str, payload_json: &str) -> String {
        test_support::sign_raw_with(&self.signer().key, header_json, payload_json)
    }

    /// auth-api's `/internal/keys`, read directly with the internal token.
    ///
    /// # Panics
    /// When auth-api does not answer it.
    pub async fn internal_keys(&self) -> Value {
        read_internal_keys(&self.gateway.client, self.internal_addr).await
    }

    /// The key that signs now.
    ///
    /// # Panics
    /// When no key signs.
    pub fn signer(&self) -> RingKey {
        self.state
            .ring
            .signer(self.state.clock.now())
            .expect("no signer")
    }

    /// The kid of the key that signs now.
    ///
    /// # Panics
    /// When no key signs.
    pub fn signer_kid(&self) -> String {
        self.signer().stored.kid
    }

    /// auth-api's public JWKS, read directly (not through the gateway).
    ///
    /// # Panics
    /// When auth-api does not answer it.
    pub async fn public_jwks(&self) -> Value {
        read_public_jwks(&self.gateway.client, self.public_addr).await
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(stop) = self.echo_stop.take() {
            let _ = stop.send(());
        }
        self.auth_api.signal_stop();
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// auth-api's test configuration on `database_url`: loopback ports chosen by the system, the
/// internal listener with [`INTERNAL_TOKEN`], cheap bcrypt, the test KEK, and a per-address
/// limit no test reaches unless it lowers it.
pub(crate) fn test_config(database_url: String) -> Config {
    Config {
        database_url,
        listen: loopback(),
        internal_listen: loopback(),
        grpc_listen: Some(loopback()),
        internal_token: Some(INTERNAL_TOKEN.to_owned().into()),
        bcrypt_cost: 4,
        // PostgreSQL and MySQL need one; a fixed test KEK for every backend.
        key_encryption_keys: Some(
            test_support::TEST_KEK
                .parse()
                .expect("test-support's KEK parses"),
        ),
        // Every test client is one address; tests of the limit lower it again.
        ip_limit_per_minute: 100_000,
        ..Config::default()
    }
}

/// An auth-api built (migrated, key ring loaded, ports bound) but not serving yet.
pub(crate) struct BuiltAuthApi {
    pub(crate) state: AppState,
    pub(crate) public: SocketAddr,
    pub(crate) internal: SocketAddr,
    pub(crate) server: AuthApi,
}

/// Builds auth-api on `config`; [`AuthApi::serve`] starts answering.
///
/// # Panics
/// When it does not start.
pub(crate) async fn build_auth_api(config: Config) -> BuiltAuthApi {
    let app = App::build_with_clock(config, Clock::default())
        .await
        .expect("auth-api does not start");
    BuiltAuthApi {
        state: app.state().clone(),
        public: app.public_addr().expect("no public address"),
        internal: app
            .internal_addr()
            .expect("no internal address")
            .expect("internal listener off"),
        server: AuthApi::Bound(Box::new(app)),
    }
}

impl AuthApi {
    /// Serves on the ports it was bound to.
    ///
    /// # Panics
    /// When it was already started.
    pub(crate) fn serve(&mut self) {
        let Self::Bound(app) = std::mem::replace(self, Self::Stopped) else {
            panic!("auth-api was already started");
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        *self = Self::Running { stop, task };
    }

    /// Stops serving and waits (up to 10 s) until it has.
    pub(crate) async fn stop(&mut self) {
        if let Self::Running { stop, task } = std::mem::replace(self, Self::Stopped) {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }

    /// Tells a running auth-api to stop, without waiting (for `Drop`).
    pub(crate) fn signal_stop(&mut self) {
        if let Self::Running { stop, .. } = std::mem::replace(self, Self::Stopped) {
            let _ = stop.send(());
        }
    }
}

/// Starts the echo upstream on a free port; it stops when the sender is dropped or sent to.
pub(crate) async fn spawn_echo() -> (SocketAddr, oneshot::Sender<()>) {
    let echo = tokio::net::TcpListener::bind(loopback())
        .await
        .expect("cannot bind the upstream");
    let upstream = echo.local_addr().expect("no upstream address");
    let (echo_stop, echo_stopped) = oneshot::channel::<()>();
    tokio::spawn(echo_upstream::serve(echo, async {
        let _ = echo_stopped.await;
    }));
    (upstream, echo_stop)
}

/// Where one gateway sends its traffic.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GatewayUpstreams {
    /// auth-api's public listener: `/auth/*`, the JWKS.
    pub(crate) public: SocketAddr,
    /// auth-api's internal listener: the revocation feed (and `/internal/keys`).
    pub(crate) internal: SocketAddr,
    /// The echo upstream behind `/api/*`.
    pub(crate) upstream: SocketAddr,
}

/// Renders `envoy/dev.yaml` for `to` with `options`' poll intervals, key document and
/// staleness, and starts Envoy with `options.concurrency` workers.
///
/// # Panics
/// When Envoy does not start, with its log.
pub(crate) async fn start_gateway(
    options: &StackOptions,
    to: GatewayUpstreams,
    issuer: &str,
) -> Envoy {
    let values = HashMap::from([
        ("GATEWAY_PORT", options.gateway_port.to_string()),
        ("ADMIN_PORT", "0".to_owned()),
        ("AUTH_API_PORT", to.public.port().to_string()),
        ("AUTH_INTERNAL_PORT", to.internal.port().to_string()),
        ("UPSTREAM_PORT", to.upstream.port().to_string()),
        ("WASM_PATH", filter_wasm().display().to_string()),
        ("INTERNAL_TOKEN", INTERNAL_TOKEN.to_owned()),
        ("ISSUER", issuer.to_owned()),
        ("POLL_SECONDS", options.poll_seconds.to_string()),
        (
            "REVOCATION_POLL_SECONDS",
            options.revocation_poll_seconds.to_string(),
        ),
    ]);
    let mut envoy_config = render_config(&values);
    if options.keys == GatewayKeys::Internal {
        envoy_config = poll_internal_keys(&envoy_config);
    }
    if let Some(stale) = options.stale_after {
        envoy_config = set_stale_after(&envoy_config, "remote_jwks", stale.keys);
        envoy_config = set_stale_after(&envoy_config, "remote_revocations", stale.revocations);
    }
    match Envoy::start(&envoy_config, options.concurrency).await {
        Ok(envoy) => envoy,
        Err(failed) => panic!("Envoy did not start ({:?}):\n{}", failed.status, failed.log),
    }
}

/// An HTTP client that follows no redirects.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("cannot build an HTTP client")
}

/// auth-api's public JWKS at its public listener `public_addr`, read directly (not through a
/// gateway).
///
/// # Panics
/// When auth-api does not answer it.
pub(crate) async fn read_public_jwks(client: &reqwest::Client, public_addr: SocketAddr) -> Value {
    client
        .get(format!("http://{public_addr}/.well-known/jwks.json"))
        .send()
        .await
        .expect("auth-api does not answer")
        .json()
        .await
        .expect("the JWKS is not JSON")
}

/// auth-api's `/internal/keys` at its internal listener `internal_addr`, read with
/// [`INTERNAL_TOKEN`].
///
/// # Panics
/// When auth-api does not answer it.
pub(crate) async fn read_internal_keys(
    client: &reqwest::Client,
    internal_addr: SocketAddr,
) -> Value {
    client
        .get(format!("http://{internal_addr}/internal/keys"))
        .bearer_auth(INTERNAL_TOKEN)
        .send()
        .await
        .expect("auth-api does not answer")
        .json()
        .await
        .expect("the key document is not JSON")
}
