//! `Cluster`: several auth-api replicas on one database and one Redis, each behind its own
//! Envoy, as a platform runs auth-api scaled out. Built from [`crate::stack`]'s pieces (the test
//! configuration, the Envoy rendering, the echo upstream): only the wiring differs.
//!
//! Each replica is its own [`auth_api::App`]: its own key ring in memory (re-read every
//! `key_refresh_interval`), its own bcrypt pool and per-process state. What they share is what
//! a platform gives them: the database URL (the first replica migrates it and makes the first
//! key, the others start against it as it is), `AUTH_KEY_ENCRYPTION_KEYS`,
//! `AUTH_INTERNAL_TOKEN`, and the Redis holding the per-address buckets.
//!
//! Gateway *i* sends `/auth/*` to replica *i* and polls its public JWKS there, but reads the
//! revocation feed from the next replica (*i + 1*, wrapping): every gateway may poll any
//! replica, and a revocation written through one replica reaches a gateway reading another.
//! All gateways share one echo upstream.

use auth_api::{AppState, Config};
use serde_json::Value;
use test_support::{Backend, TestDb};
use tokio::sync::oneshot;

use crate::{
    gateway::Gateway,
    stack::{
        build_auth_api, http_client, read_internal_keys, read_public_jwks, spawn_echo,
        start_gateway, test_config, AuthApi, GatewayUpstreams,
    },
    StackOptions,
};

/// The Redis the replicas share: `AUTH_TEST_REDIS_URL`, default `redis://127.0.0.1:6379` (as
/// auth-api's own tests).
pub fn redis_url() -> String {
    std::env::var("AUTH_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// How to start a [`Cluster`].
#[derive(Debug, Clone, Copy)]
pub struct ClusterOptions {
    /// The one store every replica uses (one database, shared); default PostgreSQL. SQLite is
    /// a file of one process: not a store for several replicas.
    pub backend: Backend,
    /// How many replicas (each with its own gateway); default 2.
    pub replicas: usize,
    /// Envoy workers per gateway; default 2.
    pub concurrency: u32,
    /// The filters' key poll interval, seconds; default 1.
    pub poll_seconds: u32,
    /// The filters' revocation-feed poll interval, seconds; default 1.
    pub revocation_poll_seconds: u32,
    /// Keep the per-address buckets in the shared Redis (under a prefix of this cluster's own);
    /// default `true`. `false`: in memory, per replica.
    pub shared_buckets: bool,
    /// Changes to every replica's configuration (replicas of one installation share it).
    pub configure: fn(&mut Config),
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            backend: Backend::Postgres,
            replicas: 2,
            concurrency: 2,
            poll_seconds: 1,
            revocation_poll_seconds: 1,
            shared_buckets: true,
            configure: |_| {},
        }
    }
}

/// One auth-api replica and the gateway in front of it.
pub struct Replica {
    /// The replica's own state (its store handle and its in-memory key ring).
    pub state: AppState,
    /// Its gateway: routes `/auth/*` to this replica and polls this replica's public JWKS; it
    /// reads the revocation feed from the next replica.
    pub gateway: Gateway,
    /// The replica's public listener.
    pub public_addr: std::net::SocketAddr,
    /// The replica's internal listener.
    pub internal_addr: std::net::SocketAddr,
    auth_api: AuthApi,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("public_addr", &self.public_addr)
            .field("gateway", &self.gateway.envoy.gateway)
            .finish_non_exhaustive()
    }
}

/// A running cluster; everything stops, and the database is dropped, when it is dropped.
#[derive(Debug)]
pub struct Cluster {
    /// The replicas, in start order (the first one migrated the database).
    pub replicas: Vec<Replica>,
    /// The Redis key prefix of this cluster's per-address buckets (unique per cluster, so
    /// clusters of tests running together never share a budget).
    pub redis_prefix: String,
    echo_stop: Option<oneshot::Sender<()>>,
    _db: TestDb,
}

impl Cluster {
    /// Creates one database, starts the replicas on it one after the other (the first migrates
    /// it and makes the first key; the others start against the migrated database), one echo
    /// upstream, and a gateway per replica; returns once every gateway has its keys.
    ///
    /// # Panics
    /// When any part does not start, with its log.
    pub async fn start(options: ClusterOptions) -> Self {
        assert!(options.replicas >= 1, "a cluster needs a replica");
        let (db, url) = TestDb::create(options.backend).await;
        let redis_prefix = format!("auth-e2e:{}:", uuid::Uuid::new_v4().simple());
        let mut built = Vec::with_capacity(options.replicas);
        for _ in 0..options.replicas {
            let mut config = test_config(url.clone());
            if options.shared_buckets {
                config.redis_url = Some(redis_url().into());
                config.redis_prefix = redis_prefix.clone();
            }
            (options.configure)(&mut config);
            built.push(build_auth_api(config).await);
        }
        let (upstream, echo_stop) = spawn_echo().await;
        let gateway_options = StackOptions {
            backend: options.backend,
            poll_seconds: options.poll_seconds,
            revocation_poll_seconds: options.revocation_poll_seconds,
            concurrency: options.concurrency,
            ..StackOptions::default()
        };
        // Envoys start in parallel (each start waits on its own process).
        let internals: Vec<_> = built.iter().map(|replica| replica.internal).collect();
        let gateways: Vec<_> = built
            .iter_mut()
            .enumerate()
            .map(|(i, replica)| {
                replica.server.serve();
                let to = GatewayUpstreams {
                    public: replica.public,
                    internal: internals[(i + 1) % internals.len()],
                    upstream,
                };
                let issuer = replica.state.config.issuer.clone();
                tokio::spawn(async move { start_gateway(&gateway_options, to, &issuer).await })
            })
            .collect();
        let client = http_client();
        let mut replicas = Vec::with_capacity(options.replicas);
        for (replica, gateway) in built.into_iter().zip(gateways) {
            let envoy = gateway.await.expect("starting a gateway panicked");
            replicas.push(Replica {
                state: replica.state,
                gateway: Gateway {
                    envoy,
                    client: client.clone(),
                },
                public_addr: replica.public,
                internal_addr: replica.internal,
                auth_api: replica.server,
            });
        }
        for replica in &replicas {
            replica.gateway.wait_for_keys().await;
        }
        Self {
            replicas,
            redis_prefix,
            echo_stop: Some(echo_stop),
            _db: db,
        }
    }

    /// The replicas' public JWKS, read directly from each.
    pub async fn public_jwks(&self) -> Vec<Value> {
        let mut sets = Vec::with_capacity(self.replicas.len());
        for replica in &self.replicas {
            sets.push(replica.public_jwks().await);
        }
        sets
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(stop) = self.echo_stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Replica {
    /// The status of this replica's own `/validate` for `token` (directly, not through the
    /// gateway).
    pub async fn validate(&self, token: &str) -> u16 {
        self.gateway
            .client
            .get(format!("http://{}/validate", self.public_addr))
            .bearer_auth(token)
            .send()
            .await
            .expect("auth-api does not answer")
            .status()
            .as_u16()
    }

    /// This replica's public JWKS, read directly.
    pub async fn public_jwks(&self) -> Value {
        read_public_jwks(&self.gateway.client, self.public_addr).await
    }

    /// This replica's `/internal/keys`, read directly with the internal token.
    pub async fn internal_keys(&self) -> Value {
        read_internal_keys(&self.gateway.client, self.internal_addr).await
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.auth_api.signal_stop();
    }
}
