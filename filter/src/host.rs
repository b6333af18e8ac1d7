//! The glue between Envoy and the pure modules: the only code that touches the proxy-wasm SDK.
//!
//! The root context (one per worker VM) parses the configuration once, owns the key state and
//! the worker's token cache, and, for `remote_jwks`, polls the key source on `on_tick` following
//! the shared-data protocol of [`crate::keys`]. Each HTTP context reads the request headers,
//! calls [`crate::decide::decide`] and applies the decision. Host calls are made through
//! `proxy_wasm::hostcalls` so that their errors are handled here (failing closed) instead of
//! unwrapped by the SDK's trait defaults.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use auth_jwt::{KeySet, Validation};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{
    Action, BufferType, ContextType, GrpcStatusCode, LogLevel, MapType, MetricType, Status,
};

use crate::cache::TokenCache;
use crate::config::{FilterConfig, KeySource, RemoteJwks};
use crate::decide::{decide, AllowedBy, Decision, RequestView};
use crate::keys::{self, KeyRecord, KeyTracker, Lease, SharedKeys};
use crate::response::{deny_response, DenyReason, DenyResponse};

/// Largest key set document accepted from the key source, in bytes.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// Attempts at a compare-and-swap write before giving up until the next tick.
const CAS_ATTEMPTS: usize = 4;

/// Logs a panic's message to Envoy's log before the VM aborts.
pub(crate) fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    log(LogLevel::Critical, &format!("auth-filter panicked: {info}"));
}

fn log(level: LogLevel, message: &str) {
    // A failed log call has nowhere else to be reported.
    let _ = hostcalls::log(level, message);
}

/// The host's clock in seconds since the Unix epoch; `None` if the host cannot tell.
fn now_secs() -> Option<u64> {
    let time = hostcalls::get_current_time().ok()?;
    time.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Counter ids, `None` where the host refused to define one.
#[derive(Clone, Copy, Debug, Default)]
struct Metrics {
    allowed: Option<u32>,
    denied: Option<u32>,
    denied_missing_token: Option<u32>,
    denied_invalid_token: Option<u32>,
    denied_insufficient_scope: Option<u32>,
    denied_no_route: Option<u32>,
    denied_keys_unavailable: Option<u32>,
    denied_internal: Option<u32>,
    cors_preflight_bypassed: Option<u32>,
    jwks_fetch_success: Option<u32>,
    jwks_fetch_failed: Option<u32>,
    jwt_cache_hit: Option<u32>,
    jwt_cache_miss: Option<u32>,
}

impl Metrics {
    fn define() -> Self {
        let counter = |name: &str| hostcalls::define_metric(MetricType::Counter, name).ok();
        Self {
            allowed: counter("auth_filter.allowed"),
            denied: counter("auth_filter.denied"),
            denied_missing_token: counter("auth_filter.denied.missing_token"),
            denied_invalid_token: counter("auth_filter.denied.invalid_token"),
            denied_insufficient_scope: counter("auth_filter.denied.insufficient_scope"),
            denied_no_route: counter("auth_filter.denied.no_route"),
            denied_keys_unavailable: counter("auth_filter.denied.keys_unavailable"),
            denied_internal: counter("auth_filter.denied.internal"),
            cors_preflight_bypassed: counter("auth_filter.cors_preflight_bypassed"),
            jwks_fetch_success: counter("auth_filter.jwks_fetch_success"),
            jwks_fetch_failed: counter("auth_filter.jwks_fetch_failed"),
            jwt_cache_hit: counter("auth_filter.jwt_cache_hit"),
            jwt_cache_miss: counter("auth_filter.jwt_cache_miss"),
        }
    }

    fn inc(id: Option<u32>) {
        if let Some(id) = id {
            // Losing one count is better than failing a request over it.
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    fn denied(&self, reason: &DenyReason) {
        Self::inc(self.denied);
        Self::inc(match reason {
            DenyReason::MissingToken => self.denied_missing_token,
            DenyReason::InvalidToken(_) => self.denied_invalid_token,
            DenyReason::InsufficientScope(_) => self.denied_insufficient_scope,
            DenyReason::NoRoute => self.denied_no_route,
            DenyReason::KeysUnavailable => self.denied_keys_unavailable,
            DenyReason::Internal => self.denied_internal,
        });
    }
}

/// Where this worker's keys stand.
#[derive(Debug)]
enum KeyState {
    /// Before a configuration was accepted.
    Unconfigured,
    /// `local_jwks`: ready from the start.
    Local(Rc<KeySet>),
    /// `remote_jwks`: polled.
    Remote(Box<RemoteState>),
}

#[derive(Debug)]
struct RemoteState {
    source: RemoteJwks,
    names: SharedKeys,
    worker_id: u64,
    tracker: KeyTracker,
    /// The parsed key set and when it was fetched.
    current: Option<(Rc<KeySet>, u64)>,
    /// The token of this worker's fetch in flight.
    in_flight: Option<u32>,
}

/// What every HTTP context of a configured root shares.
#[derive(Clone, Debug)]
struct Shared {
    config: Rc<FilterConfig>,
    validation: Rc<Validation>,
    cache: Rc<RefCell<TokenCache>>,
    metrics: Metrics,
}

/// The root context: configuration, keys, cache and counters of one worker.
#[derive(Debug)]
pub(crate) struct Root {
    shared: Option<Shared>,
    keys: KeyState,
}

impl Root {
    pub(crate) fn new() -> Self {
        Self {
            shared: None,
            keys: KeyState::Unconfigured,
        }
    }

    /// The keys a request may use now: none while unloaded or stale.
    fn usable_keys(&self, now: u64) -> Option<Rc<KeySet>> {
        match &self.keys {
            KeyState::Unconfigured => None,
            KeyState::Local(keys) => Some(Rc::clone(keys)),
            KeyState::Remote(remote) => remote
                .current
                .as_ref()
                .filter(|(_, fetched_at)| {
                    keys::keys_fresh(*fetched_at, now, remote.source.stale_after_seconds)
                })
                .map(|(keys, _)| Rc::clone(keys)),
        }
    }

    /// Keys another worker has fetched that this worker's next tick has not picked up yet: read
    /// from shared data (no fetch) only while this worker has none, so that a worker never
    /// answers 503 after its sibling has loaded the keys.
    fn shared_keys(&self, now: u64) -> Option<Rc<KeySet>> {
        let KeyState::Remote(remote) = &self.keys else {
            return None;
        };
        let (bytes, _) = hostcalls::get_shared_data(&remote.names.keys).ok()?;
        let record = keys::decode::<KeyRecord>(bytes.as_deref())?;
        if !keys::keys_fresh(record.fetched_at, now, remote.source.stale_after_seconds) {
            return None;
        }
        KeySet::from_jwks_json(record.keys_json.as_bytes())
            .ok()
            .map(Rc::new)
    }

    /// Reads the shared key record and re-parses it if its version is new.
    fn refresh_keys(&mut self) {
        let KeyState::Remote(remote) = &mut self.keys else {
            return;
        };
        let Ok((bytes, _)) = hostcalls::get_shared_data(&remote.names.keys) else {
            return;
        };
        let Some(record) = keys::decode::<KeyRecord>(bytes.as_deref()) else {
            return;
        };
        if !remote.tracker.needs_parse(&record) {
            if let Some((_, fetched_at)) = &mut remote.current {
                *fetched_at = record.fetched_at;
            }
            return;
        }
        match KeySet::from_jwks_json(record.keys_json.as_bytes()) {
            Ok(set) => {
                log(
                    LogLevel::Info,
                    &format!(
                        "auth-filter: loaded key set version {} ({} keys)",
                        record.version,
                        set.len()
                    ),
                );
                remote.current = Some((Rc::new(set), record.fetched_at));
                if let Some(shared) = &self.shared {
                    if let Ok(mut cache) = shared.cache.try_borrow_mut() {
                        cache.set_key_version(Some(record.version));
                    }
                }
            }
            Err(err) => log(
                LogLevel::Error,
                &format!(
                    "auth-filter: shared key set version {} unusable: {err}",
                    record.version
                ),
            ),
        }
    }

    /// Takes the fetch lease if a fetch is due, and starts the fetch.
    fn maybe_fetch(&mut self, now: u64) {
        let KeyState::Remote(remote) = &mut self.keys else {
            return;
        };
        if remote.in_flight.is_some() {
            return;
        }
        let Ok((bytes, cas)) = hostcalls::get_shared_data(&remote.names.lease) else {
            return;
        };
        let current = keys::decode::<Lease>(bytes.as_deref());
        let lease_secs = remote.source.timeout_ms.div_ceil(1000).saturating_add(2);
        let Some(lease) = keys::try_take_lease(current.as_ref(), remote.worker_id, now, lease_secs)
        else {
            return;
        };
        if hostcalls::set_shared_data(&remote.names.lease, Some(&keys::encode(&lease)), cas)
            .is_err()
        {
            // Another worker took it first.
            return;
        }
        let bearer = remote
            .source
            .bearer_token
            .as_ref()
            .map(|token| format!("Bearer {token}"));
        let mut headers = vec![
            (":method", "GET"),
            (":path", remote.source.path.as_str()),
            (":authority", remote.source.authority()),
        ];
        if let Some(bearer) = &bearer {
            headers.push(("authorization", bearer.as_str()));
        }
        let timeout = Duration::from_millis(remote.source.timeout_ms);
        match hostcalls::dispatch_http_call(&remote.source.cluster, headers, None, vec![], timeout)
        {
            Ok(token) => remote.in_flight = Some(token),
            Err(status) => {
                log(
                    LogLevel::Warn,
                    &format!(
                        "auth-filter: cannot call cluster {}: {status:?}",
                        remote.source.cluster
                    ),
                );
                self.finish_fetch(now, None);
            }
        }
    }

    /// Records the outcome of a fetch: the new key record on success, then the lease released
    /// with the next due time.
    fn finish_fetch(&mut self, now: u64, fetched: Option<String>) {
        let KeyState::Remote(remote) = &mut self.keys else {
            return;
        };
        remote.in_flight = None;
        let metrics = self.shared.as_ref().map(|s| s.metrics).unwrap_or_default();
        let mut success = false;
        if let Some(json) = fetched {
            for _ in 0..CAS_ATTEMPTS {
                let Ok((bytes, cas)) = hostcalls::get_shared_data(&remote.names.keys) else {
                    break;
                };
                let current = keys::decode::<KeyRecord>(bytes.as_deref());
                let next = keys::next_key_record(current.as_ref(), &json, now);
                if hostcalls::set_shared_data(&remote.names.keys, Some(&keys::encode(&next)), cas)
                    .is_ok()
                {
                    success = true;
                    break;
                }
            }
        }
        Metrics::inc(if success {
            metrics.jwks_fetch_success
        } else {
            metrics.jwks_fetch_failed
        });
        for _ in 0..CAS_ATTEMPTS {
            let Ok((bytes, cas)) = hostcalls::get_shared_data(&remote.names.lease) else {
                break;
            };
            let current = keys::decode::<Lease>(bytes.as_deref());
            if current.as_ref().and_then(|l| l.holder) != Some(remote.worker_id) {
                // The lease lapsed and another worker holds it now.
                break;
            }
            let released =
                keys::release_lease(current.as_ref(), now, success, remote.source.poll_seconds);
            let result = hostcalls::set_shared_data(
                &remote.names.lease,
                Some(&keys::encode(&released)),
                cas,
            );
            if !matches!(result, Err(Status::CasMismatch)) {
                break;
            }
        }
        self.refresh_keys();
    }
}

/// A fresh worker id, from a counter in shared data; falls back to the clock if the counter
/// cannot be updated.
fn allocate_worker_id() -> u64 {
    for _ in 0..CAS_ATTEMPTS {
        let Ok((bytes, cas)) = hostcalls::get_shared_data(keys::WORKER_SEQ_KEY) else {
            break;
        };
        let (id, next) = keys::next_worker_id(bytes.as_deref());
        if hostcalls::set_shared_data(keys::WORKER_SEQ_KEY, Some(&next), cas).is_ok() {
            return id;
        }
    }
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::from(d.subsec_nanos()) | (1 << 63))
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let KeyState::Remote(remote) = &self.keys else {
            return;
        };
        if remote.in_flight != Some(token_id) {
            return;
        }
        let now = now_secs().unwrap_or(0);
        let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten();
        let body = if body_size > MAX_JWKS_BYTES {
            None
        } else {
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                .ok()
                .flatten()
        };
        let fetched = match (status.as_deref(), body) {
            (Some("200"), Some(body)) => match KeySet::from_jwks_json(&body) {
                Ok(set) if !set.is_empty() => String::from_utf8(body).ok(),
                Ok(_) => {
                    log(
                        LogLevel::Warn,
                        "auth-filter: key source returned no usable key",
                    );
                    None
                }
                Err(err) => {
                    log(
                        LogLevel::Warn,
                        &format!("auth-filter: key source returned a bad key set: {err}"),
                    );
                    None
                }
            },
            (status, _) => {
                log(
                    LogLevel::Warn,
                    &format!(
                        "auth-filter: key fetch failed with status {} ({body_size} bytes)",
                        status.unwrap_or("none")
                    ),
                );
                None
            }
        };
        self.finish_fetch(now, fetched);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let raw = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        let config = match FilterConfig::parse(&raw) {
            Ok(config) => config,
            Err(err) => {
                log(
                    LogLevel::Error,
                    &format!("auth-filter: invalid configuration: {err}"),
                );
                return false;
            }
        };
        self.keys = match &config.key_source {
            KeySource::Local(keys) => KeyState::Local(Rc::new(keys.clone())),
            KeySource::Remote(source) => {
                if hostcalls::set_tick_period(Duration::from_secs(1)).is_err() {
                    log(LogLevel::Error, "auth-filter: cannot set the tick period");
                    return false;
                }
                KeyState::Remote(Box::new(RemoteState {
                    names: SharedKeys::for_source(&source.cluster, &source.path),
                    source: source.clone(),
                    worker_id: allocate_worker_id(),
                    tracker: KeyTracker::default(),
                    current: None,
                    in_flight: None,
                }))
            }
        };
        self.shared = Some(Shared {
            validation: Rc::new(config.validation()),
            cache: Rc::new(RefCell::new(TokenCache::new(config.cache_entries))),
            config: Rc::new(config),
            metrics: Metrics::define(),
        });
        // Another worker may already have keys in shared data.
        self.refresh_keys();
        true
    }

    fn on_tick(&mut self) {
        self.refresh_keys();
        if let Some(now) = now_secs() {
            self.maybe_fetch(now);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let keys =
            now_secs().and_then(|now| self.usable_keys(now).or_else(|| self.shared_keys(now)));
        Some(Box::new(Http {
            shared: self.shared.clone(),
            keys,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request's context.
#[derive(Debug)]
struct Http {
    /// `None` if the root has no valid configuration: every request is then refused.
    shared: Option<Shared>,
    keys: Option<Rc<KeySet>>,
}

impl Http {
    fn decide(&self) -> (Decision, Option<Metrics>, String) {
        let Some(shared) = &self.shared else {
            return (internal("auth-service"), None, String::new());
        };
        let realm = shared.config.realm.clone();
        let (Some(now), Ok(raw)) = (
            now_secs(),
            hostcalls::get_map_bytes(MapType::HttpRequestHeaders),
        ) else {
            return (internal(&realm), Some(shared.metrics), realm);
        };
        // Header values that are not UTF-8 become replacement characters, which no token,
        // method or path accepts.
        let headers: Vec<(String, String)> = raw
            .into_iter()
            .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
            .collect();
        let pseudo = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map_or("", |(_, v)| v.as_str())
        };
        let view = RequestView {
            method: pseudo(":method"),
            path: pseudo(":path"),
            headers: &headers,
        };
        let mut cache = shared.cache.try_borrow_mut().ok();
        let decision = decide(
            &view,
            &shared.config,
            &shared.validation,
            self.keys.as_deref(),
            cache.as_deref_mut(),
            now,
        );
        (decision, Some(shared.metrics), realm)
    }
}

fn internal(realm: &str) -> Decision {
    Decision::Deny {
        response: deny_response(&DenyReason::Internal, realm, false),
        reason: DenyReason::Internal,
    }
}

fn send(response: &DenyResponse) {
    let result = match response {
        DenyResponse::Http {
            status,
            headers,
            body,
        } => {
            let headers = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            hostcalls::send_http_response(*status, headers, Some(body.as_bytes()))
        }
        DenyResponse::Grpc {
            status,
            message,
            metadata,
        } => {
            let metadata = metadata
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_bytes()))
                .collect();
            hostcalls::send_grpc_response(grpc_code(*status), Some(message), metadata)
        }
    };
    if let Err(status) = result {
        log(
            LogLevel::Error,
            &format!("auth-filter: cannot send the local answer: {status:?}"),
        );
    }
}

fn grpc_code(status: u32) -> GrpcStatusCode {
    match status {
        7 => GrpcStatusCode::PermissionDenied,
        14 => GrpcStatusCode::Unavailable,
        16 => GrpcStatusCode::Unauthenticated,
        _ => GrpcStatusCode::Internal,
    }
}

/// Applies an allow decision; `false` if the headers could not all be changed.
fn apply_headers(headers_to_remove: &[String], headers_to_set: &[(String, String)]) -> bool {
    let removed = headers_to_remove
        .iter()
        .all(|name| hostcalls::remove_map_value(MapType::HttpRequestHeaders, name).is_ok());
    let set = headers_to_set.iter().all(|(name, value)| {
        hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value)).is_ok()
    });
    removed && set
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let (decision, metrics, realm) = self.decide();
        let metrics = metrics.unwrap_or_default();
        match decision {
            Decision::Allow {
                headers_to_set,
                headers_to_remove,
                by,
            } => {
                if !apply_headers(&headers_to_remove, &headers_to_set) {
                    // Forwarding with a client's identity headers left in place would be open.
                    metrics.denied(&DenyReason::Internal);
                    if let Decision::Deny { response, .. } = internal(&realm) {
                        send(&response);
                    }
                    return Action::Pause;
                }
                Metrics::inc(metrics.allowed);
                match by {
                    AllowedBy::CorsPreflight => Metrics::inc(metrics.cors_preflight_bypassed),
                    AllowedBy::Token { cache_hit: true } => Metrics::inc(metrics.jwt_cache_hit),
                    AllowedBy::Token { cache_hit: false } => Metrics::inc(metrics.jwt_cache_miss),
                    AllowedBy::Public => {}
                }
                Action::Continue
            }
            Decision::Deny { reason, response } => {
                metrics.denied(&reason);
                send(&response);
                Action::Pause
            }
        }
    }
}
