//! Prometheus metrics, one registry per app (so tests never share counters).
//!
//! Counters and histograms are recorded where things happen; the gauges of state held
//! elsewhere (the database pool, the key ring, the revocation feed) are set when `/metrics` is
//! scraped ([`Metrics::collect`]), so that they are never older than the scrape. Every label
//! value comes from a fixed set (route templates, method names, codes, states): nothing a client
//! sends becomes a label value.

use std::{
    sync::atomic::AtomicU64,
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::{keyring::KeyState, state::AppState, store::Backend};

/// Request durations (HTTP and gRPC), in seconds: from a 1 ms `/validate` to a 250 ms bcrypt
/// login and its queue, up to the 10 s that only a hung backing service reaches (the request
/// timeout ends a request before long).
const REQUEST_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
];

/// Time waiting for a bcrypt slot, in seconds: zero when one is free, then multiples of one
/// hash (~250 ms at cost 12) times the place in the queue.
const HASH_WAIT_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One bcrypt, in seconds: finer around the ~250 ms of cost 12 on one core.
const HASH_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];

/// How long the revocation feed's figures are reused: a scrape flood costs one query per this
/// interval, and Prometheus scrapes less often anyway.
const FEED_QUERY_INTERVAL: Duration = Duration::from_secs(5);

/// Longest wait for the feed's figures at scrape time: a slow database must not hold the
/// scrape (the gauges keep their last values).
const FEED_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// A gauge of seconds (fractions, NaN when there is nothing to measure).
type SecondsGauge = Gauge<f64, AtomicU64>;

/// A family of histograms that all share one set of buckets.
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

/// Labels of `http_requests_shed_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The matched route template, as in [`HttpLabels`].
    pub route: String,
}

/// Labels of `http_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The matched route template, e.g. `/login`, or `unmatched`.
    pub route: String,
    /// Request method, one of a fixed set (`other` for the rest).
    pub method: &'static str,
    /// Response status code.
    pub status: u16,
}

/// Labels of `grpc_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    /// The RPC, e.g. `auth.v1.AuthService/Login` or `envoy.service.auth.v3.Authorization/Check`.
    pub method: &'static str,
    /// The status code answered, e.g. `OK`, `UNAUTHENTICATED`; for `Check`, the code of the
    /// `CheckResponse` (what Envoy acts on).
    pub code: &'static str,
}

/// Labels of the outcome counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// e.g. `success`, `invalid_credentials`, `reuse_detected`.
    pub result: &'static str,
}

/// Labels of `auth_email_sent_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EmailLabels {
    /// What the message is for, e.g. `verify_email`.
    pub kind: String,
    /// `sent`, `retry` (failed, tried again later), `dead` (failed, given up),
    /// `sent_after_lease` / `failed_after_lease` (the claim had ended: it may go twice), or
    /// `limited` (never queued: the recipient's hourly limit for the kind was reached).
    pub result: &'static str,
}

/// Labels of the database pool gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    /// `postgres`, `mysql` or `sqlite`.
    pub store: &'static str,
}

/// Labels of `auth_keyring_keys`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyStateLabels {
    /// `pending`, `active`, `retired`, `expired` or `revoked`.
    pub state: &'static str,
}

/// The password hasher's timings and its shed count, shared by the hasher (which records) and
/// the registry (which exports): cheap to clone, clones record into the same metrics.
#[derive(Debug, Clone)]
pub struct HashTimings {
    /// Seconds from asking for a bcrypt slot to getting one (shed requests are not recorded).
    pub queue_wait: Histogram,
    /// Seconds one bcrypt (hash or verify) took on its blocking thread.
    pub hash: Histogram,
    /// Hashes refused at once because the queue was full (answered `503 overloaded`).
    pub shed: Counter,
}

impl Default for HashTimings {
    fn default() -> Self {
        Self {
            queue_wait: Histogram::new(HASH_WAIT_BUCKETS),
            hash: Histogram::new(HASH_BUCKETS),
            shed: Counter::default(),
        }
    }
}

/// Labels of `auth_email_outbox`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutboxLabels {
    /// `pending` or `dead`.
    pub status: &'static str,
}

/// Every metric the service exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_shed: Family<RouteLabels, Counter>,
    grpc_requests: Family<GrpcLabels, Counter>,
    logins: Family<OutcomeLabels, Counter>,
    refreshes: Family<OutcomeLabels, Counter>,
    signups: Family<OutcomeLabels, Counter>,
    external_sign_ins: Family<OutcomeLabels, Counter>,
    emails_sent: Family<EmailLabels, Counter>,
    outbox: Family<OutboxLabels, Gauge>,
    /// Requests waiting for a bcrypt slot.
    pub hash_waiting: Gauge,
    http_durations: HistogramFamily<HttpLabels>,
    grpc_durations: HistogramFamily<GrpcLabels>,
    pool_open: Family<StoreLabels, Gauge>,
    pool_idle: Family<StoreLabels, Gauge>,
    pool_max: Family<StoreLabels, Gauge>,
    ring_keys: Family<KeyStateLabels, Gauge>,
    ring_signer_age: SecondsGauge,
    ring_refresh_age: SecondsGauge,
    feed_entries: Gauge,
    feed_head: Gauge,
    feed_newest_age: SecondsGauge,
    /// When the feed's figures were last read (`None`: never), held across the query so that
    /// concurrent scrapes wait for one query instead of each running their own.
    feed_read_at: tokio::sync::Mutex<Option<Instant>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(HashTimings::default())
    }
}

impl Metrics {
    /// Every metric, the hasher's `timings` among them.
    pub fn new(timings: HashTimings) -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            http_requests.clone(),
        );
        let http_shed = Family::<RouteLabels, Counter>::default();
        registry.register(
            "http_requests_shed",
            "HTTP requests answered 503 overloaded (no bcrypt slot, the queue full), by route: the share of http_requests_total{status=\"503\"} that is load shedding rather than a fault",
            http_shed.clone(),
        );
        let http_durations: HistogramFamily<HttpLabels> =
            Family::new_with_constructor(request_histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request durations in seconds, by route, method and status: from the request head to the response head, so the upload of the request body is included (a slow client counts, a 408 at the full request timeout)",
            http_durations.clone(),
        );
        let grpc_requests = Family::<GrpcLabels, Counter>::default();
        registry.register(
            "grpc_requests",
            "gRPC calls by method and status code",
            grpc_requests.clone(),
        );
        let grpc_durations: HistogramFamily<GrpcLabels> =
            Family::new_with_constructor(request_histogram);
        registry.register(
            "grpc_request_duration_seconds",
            "gRPC call durations in seconds by method and status code",
            grpc_durations.clone(),
        );
        let logins = Family::<OutcomeLabels, Counter>::default();
        registry.register("auth_login", "Login attempts by result", logins.clone());
        let refreshes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "auth_refresh",
            "Refresh attempts by result",
            refreshes.clone(),
        );
        let signups = Family::<OutcomeLabels, Counter>::default();
        registry.register("auth_signup", "Signups by result", signups.clone());
        let external_sign_ins = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "auth_external_sign_in",
            "Sign-ins through an external provider finished at /callback, by result",
            external_sign_ins.clone(),
        );
        let emails_sent = Family::<EmailLabels, Counter>::default();
        registry.register(
            "auth_email_sent",
            "Email delivery attempts from the outbox, by kind and result",
            emails_sent.clone(),
        );
        let outbox = Family::<OutboxLabels, Gauge>::default();
        registry.register(
            "auth_email_outbox",
            "Messages in the email outbox by status (pending or dead), as last counted",
            outbox.clone(),
        );
        let hash_waiting = Gauge::default();
        registry.register(
            "auth_hash_queue_waiting",
            "Requests waiting for a password-hash slot",
            hash_waiting.clone(),
        );
        registry.register(
            "auth_hash_queue_wait_seconds",
            "Seconds a password hash waited for a bcrypt slot (requests shed at once are not counted)",
            timings.queue_wait,
        );
        registry.register(
            "auth_hash_duration_seconds",
            "Seconds one bcrypt (hash or verify) took",
            timings.hash,
        );
        registry.register(
            "auth_hash_shed",
            "Password hashes refused at once because the bcrypt queue was full: a 503 overloaded on HTTP or gRPC, or a skipped rehash after a login (which answers 200)",
            timings.shed,
        );
        let pool_open = Family::<StoreLabels, Gauge>::default();
        registry.register(
            "auth_db_pool_connections",
            "Open connections of the database pool (idle and in use)",
            pool_open.clone(),
        );
        let pool_idle = Family::<StoreLabels, Gauge>::default();
        registry.register(
            "auth_db_pool_idle_connections",
            "Idle connections of the database pool",
            pool_idle.clone(),
        );
        let pool_max = Family::<StoreLabels, Gauge>::default();
        registry.register(
            "auth_db_pool_max_connections",
            "The database pool's largest number of connections",
            pool_max.clone(),
        );
        let ring_keys = Family::<KeyStateLabels, Gauge>::default();
        registry.register(
            "auth_keyring_keys",
            "Keys of this replica's key ring by state",
            ring_keys.clone(),
        );
        let ring_signer_age = SecondsGauge::default();
        registry.register(
            "auth_keyring_active_key_age_seconds",
            "Seconds since the signing key began to sign (NaN when no key signs)",
            ring_signer_age.clone(),
        );
        let ring_refresh_age = SecondsGauge::default();
        registry.register(
            "auth_keyring_refresh_age_seconds",
            "Seconds since this replica last read the key ring from the database",
            ring_refresh_age.clone(),
        );
        let feed_entries = Gauge::default();
        registry.register(
            "auth_revocation_feed_entries",
            "Entries in the revocation feed (read at most every 5 s)",
            feed_entries.clone(),
        );
        let feed_head = Gauge::default();
        registry.register(
            "auth_revocation_feed_head",
            "The number (seq) of the feed's newest entry: it grows by one per revocation",
            feed_head.clone(),
        );
        let feed_newest_age = SecondsGauge::default();
        registry.register(
            "auth_revocation_feed_newest_age_seconds",
            "Seconds since the newest entry of the revocation feed was written (NaN when the feed is empty)",
            feed_newest_age.clone(),
        );
        Self {
            registry,
            http_requests,
            http_shed,
            grpc_requests,
            logins,
            refreshes,
            signups,
            external_sign_ins,
            emails_sent,
            outbox,
            hash_waiting,
            http_durations,
            grpc_durations,
            pool_open,
            pool_idle,
            pool_max,
            ring_keys,
            ring_signer_age,
            ring_refresh_age,
            feed_entries,
            feed_head,
            feed_newest_age,
            feed_read_at: tokio::sync::Mutex::new(None),
        }
    }

    /// Counts one HTTP response and records how long it took.
    pub fn http_request(&self, labels: HttpLabels, elapsed: Duration) {
        self.http_durations
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        self.http_requests.get_or_create(&labels).inc();
    }

    /// Counts one HTTP request shed (503 `overloaded`) on `route`.
    pub fn http_shed(&self, route: String) {
        self.http_shed.get_or_create(&RouteLabels { route }).inc();
    }

    /// Counts one gRPC call and records how long it took.
    pub fn grpc_request(&self, labels: GrpcLabels, elapsed: Duration) {
        self.grpc_durations
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        self.grpc_requests.get_or_create(&labels).inc();
    }

    /// Counts one login by result.
    pub fn login(&self, result: &'static str) {
        self.logins.get_or_create(&OutcomeLabels { result }).inc();
    }

    /// Counts one refresh by result.
    pub fn refresh(&self, result: &'static str) {
        self.refreshes
            .get_or_create(&OutcomeLabels { result })
            .inc();
    }

    /// Counts one signup by result.
    pub fn signup(&self, result: &'static str) {
        self.signups.get_or_create(&OutcomeLabels { result }).inc();
    }

    /// Counts one external sign-in by result: `success` or the refusal's error code.
    pub fn external_sign_in(&self, result: &'static str) {
        self.external_sign_ins
            .get_or_create(&OutcomeLabels { result })
            .inc();
    }

    /// Counts one delivery attempt of an email of `kind` by result.
    pub fn email_sent(&self, kind: &str, result: &'static str) {
        self.emails_sent
            .get_or_create(&EmailLabels {
                kind: kind.to_owned(),
                result,
            })
            .inc();
    }

    /// Sets the outbox gauge.
    pub fn outbox(&self, pending: i64, dead: i64) {
        self.outbox
            .get_or_create(&OutboxLabels { status: "pending" })
            .set(pending);
        self.outbox
            .get_or_create(&OutboxLabels { status: "dead" })
            .set(dead);
    }

    /// Sets the gauges of state held elsewhere, for a scrape: the hash queue, the database pool
    /// and the key ring (in memory, every scrape) and the revocation feed (a query, at most
    /// once per [`FEED_QUERY_INTERVAL`]).
    pub async fn collect(&self, state: &AppState) {
        self.hash_waiting
            .set(i64::try_from(state.hasher.waiting()).unwrap_or(i64::MAX));
        let pool = state.store.pool_stats();
        let store = StoreLabels {
            store: backend_name(state.store.backend()),
        };
        self.pool_open.get_or_create(&store).set(pool.open);
        self.pool_idle.get_or_create(&store).set(pool.idle);
        self.pool_max.get_or_create(&store).set(pool.max);
        let now = state.clock.now();
        let ring = state.ring.snapshot();
        let policy = state.ring.policy();
        for key_state in [
            KeyState::Pending,
            KeyState::Active,
            KeyState::Retired,
            KeyState::Expired,
            KeyState::Revoked,
        ] {
            let count = ring
                .keys()
                .iter()
                .filter(|k| k.state(now, policy) == key_state)
                .count();
            self.ring_keys
                .get_or_create(&KeyStateLabels {
                    state: key_state_name(key_state),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        self.ring_signer_age.set(
            ring.signer(now, policy)
                .map_or(f64::NAN, |k| seconds_between(k.stored.activates_at, now)),
        );
        self.ring_refresh_age.set(
            ring.loaded_at()
                .map_or(f64::NAN, |at| at.elapsed().as_secs_f64()),
        );
        self.collect_feed(state, now).await;
    }

    /// The revocation feed's gauges, read again when the last read is older than
    /// [`FEED_QUERY_INTERVAL`]; on a failure they keep their values (and the failure is logged).
    async fn collect_feed(&self, state: &AppState, now: i64) {
        let mut read_at = self.feed_read_at.lock().await;
        if read_at.is_some_and(|at| at.elapsed() < FEED_QUERY_INTERVAL) {
            return;
        }
        // Counted as a read even when it fails: a database in trouble is asked once per
        // interval, not once per scrape.
        *read_at = Some(Instant::now());
        match tokio::time::timeout(FEED_QUERY_TIMEOUT, state.store.revocation_feed_stats()).await {
            Ok(Ok(feed)) => {
                self.feed_entries.set(feed.entries);
                self.feed_head.set(feed.head);
                self.feed_newest_age.set(
                    feed.newest_created_at
                        .map_or(f64::NAN, |at| seconds_between(at, now)),
                );
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "metrics: cannot read the revocation feed's figures");
            }
            Err(_elapsed) => {
                tracing::warn!("metrics: the revocation feed's figures took too long to read");
            }
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// `b - a` seconds, as a gauge value.
fn seconds_between(a: i64, b: i64) -> f64 {
    // A difference of Unix times: exact in an f64 (below 2^53 seconds).
    b.saturating_sub(a) as f64
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "postgres",
        Backend::Mysql => "mysql",
        Backend::Sqlite => "sqlite",
    }
}

fn key_state_name(state: KeyState) -> &'static str {
    match state {
        KeyState::Pending => "pending",
        KeyState::Active => "active",
        KeyState::Retired => "retired",
        KeyState::Expired => "expired",
        KeyState::Revoked => "revoked",
    }
}
