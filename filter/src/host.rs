//! The glue between Envoy and the pure modules: the only code that touches the proxy-wasm SDK.
//!
//! The root context (one per worker VM) parses the configuration once, owns the key state, the
//! revocation feed and the worker's token cache, and polls `remote_jwks` and
//! `remote_revocations` on `on_tick`, following the shared-data protocol of [`crate::poll`]:
//! this module only implements [`SharedData`] and sends the calls a [`Poller`] asks for. Each
//! HTTP context reads the request headers, calls [`crate::decide::decide`] and applies the
//! decision. Host calls are made through `proxy_wasm::hostcalls` so that their errors are
//! handled here (failing closed) instead of unwrapped by the SDK's trait defaults.

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
use crate::config::{FilterConfig, KeySource, RemoteSource};
use crate::decide::{decide, AllowedBy, Decision, RequestView, RevocationCheck};
use crate::keys;
use crate::poll::{
    self, Document, FetchResult, Fetched, Poller, Refreshed, SetError, SharedData, SharedNames,
    Timing,
};
use crate::response::{deny_response, DenyReason, DenyResponse};
use crate::revocations::{self, Revocations};

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

/// Proxy-wasm shared data, through the host.
#[derive(Clone, Copy, Debug)]
struct HostShared;

impl SharedData for HostShared {
    fn get(&self, key: &str) -> Option<(Option<Vec<u8>>, Option<u32>)> {
        hostcalls::get_shared_data(key).ok()
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(SetError::CasMismatch),
            Err(_) => Err(SetError::Failed),
        }
    }
}

/// Counter ids, `None` where the host refused to define one.
#[derive(Clone, Copy, Debug, Default)]
struct Metrics {
    allowed: Option<u32>,
    denied: Option<u32>,
    denied_missing_token: Option<u32>,
    denied_invalid_token: Option<u32>,
    denied_revoked: Option<u32>,
    denied_insufficient_scope: Option<u32>,
    denied_no_route: Option<u32>,
    denied_keys_unavailable: Option<u32>,
    denied_internal: Option<u32>,
    cors_preflight_bypassed: Option<u32>,
    jwks_fetch_success: Option<u32>,
    jwks_fetch_failed: Option<u32>,
    revocations_fetch_success: Option<u32>,
    revocations_fetch_failed: Option<u32>,
    revocations_not_modified: Option<u32>,
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
            denied_revoked: counter("auth_filter.denied.revoked"),
            denied_insufficient_scope: counter("auth_filter.denied.insufficient_scope"),
            denied_no_route: counter("auth_filter.denied.no_route"),
            denied_keys_unavailable: counter("auth_filter.denied.keys_unavailable"),
            denied_internal: counter("auth_filter.denied.internal"),
            cors_preflight_bypassed: counter("auth_filter.cors_preflight_bypassed"),
            jwks_fetch_success: counter("auth_filter.jwks_fetch_success"),
            jwks_fetch_failed: counter("auth_filter.jwks_fetch_failed"),
            revocations_fetch_success: counter("auth_filter.revocations_fetch_success"),
            revocations_fetch_failed: counter("auth_filter.revocations_fetch_failed"),
            revocations_not_modified: counter("auth_filter.revocations_not_modified"),
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
            DenyReason::Revoked => self.denied_revoked,
            DenyReason::InsufficientScope(_) => self.denied_insufficient_scope,
            DenyReason::NoRoute => self.denied_no_route,
            DenyReason::KeysUnavailable => self.denied_keys_unavailable,
            DenyReason::Internal => self.denied_internal,
        });
    }

    fn jwks(&self) -> FetchCounters {
        FetchCounters {
            success: self.jwks_fetch_success,
            failed: self.jwks_fetch_failed,
            not_modified: None,
        }
    }

    fn revocations(&self) -> FetchCounters {
        FetchCounters {
            success: self.revocations_fetch_success,
            failed: self.revocations_fetch_failed,
            not_modified: self.revocations_not_modified,
        }
    }
}

/// The counters of one polled document. A 304 counts as a success and as not modified.
#[derive(Clone, Copy, Debug, Default)]
struct FetchCounters {
    success: Option<u32>,
    failed: Option<u32>,
    not_modified: Option<u32>,
}

/// One document this worker polls: the pure [`Poller`], and where its calls go.
#[derive(Debug)]
struct Remote<D> {
    poller: Poller<D>,
    source: RemoteSource,
    counters: FetchCounters,
}

impl<D: Document> Remote<D> {
    fn new(
        source: &RemoteSource,
        names: SharedNames,
        timing: Timing,
        worker_id: u64,
        counters: FetchCounters,
    ) -> Self {
        Self {
            poller: Poller::new(names, worker_id, timing),
            source: source.clone(),
            counters,
        }
    }

    /// The copy a new request may use: this worker's, else one another worker has fetched and
    /// this worker's next tick has not picked up yet, so that a worker never refuses requests
    /// (503) after a sibling has loaded the document.
    fn for_request(&self, now: u64) -> Option<Rc<D>> {
        self.poller
            .usable(now)
            .or_else(|| self.poller.peek(&HostShared, now))
    }

    /// Re-reads the shared record, re-parsing a new version.
    fn refresh(&mut self) -> Refreshed {
        let refreshed = self.poller.refresh(&HostShared);
        match &refreshed {
            Refreshed::Loaded { version, summary } => log(
                LogLevel::Info,
                &format!(
                    "auth-filter: loaded {} version {version} ({summary})",
                    D::KIND
                ),
            ),
            Refreshed::Unusable { version, error } => log(
                LogLevel::Error,
                &format!(
                    "auth-filter: shared {} version {version} unusable: {error}",
                    D::KIND
                ),
            ),
            Refreshed::Unchanged => {}
        }
        refreshed
    }

    /// Takes the fetch lease if a fetch is due, and starts the fetch.
    fn maybe_fetch(&mut self, now: u64) {
        let Some(request) = self.poller.start(&HostShared, now) else {
            return;
        };
        let source = &self.source;
        let bearer = source
            .bearer_token
            .as_ref()
            .map(|token| format!("Bearer {token}"));
        let mut headers = vec![
            (":method", "GET"),
            (":path", source.path.as_str()),
            (":authority", source.authority()),
        ];
        if let Some(bearer) = &bearer {
            headers.push(("authorization", bearer.as_str()));
        }
        if let Some(etag) = &request.if_none_match {
            headers.push(("if-none-match", etag.as_str()));
        }
        let timeout = Duration::from_millis(source.timeout_ms);
        match hostcalls::dispatch_http_call(&source.cluster, headers, None, vec![], timeout) {
            Ok(token) => self.poller.sent(token, request),
            Err(status) => {
                let why = format!("cannot call cluster {}: {status:?}", source.cluster);
                self.finish(now, Fetched::Failed(why));
            }
        }
    }

    /// Handles the answer to the call `token` if it is this document's; `false` if it is not.
    fn on_response(&mut self, token: u32, body_size: usize, now: u64) -> bool {
        if !self.poller.owns(token) {
            return false;
        }
        let header = |name: &str| {
            hostcalls::get_map_value(MapType::HttpCallResponseHeaders, name)
                .ok()
                .flatten()
        };
        let (status, etag) = (header(":status"), header("etag"));
        // Bodies over the limit are not even read.
        let body = match body_size {
            0 => Some(Vec::new()),
            size if size <= D::MAX_BYTES => {
                hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size)
                    .ok()
                    .flatten()
            }
            _ => None,
        };
        let fetched = self.poller.classify(
            status.as_deref(),
            etag.as_deref(),
            body_size,
            body.as_deref(),
        );
        self.finish(now, fetched);
        true
    }

    fn finish(&mut self, now: u64, fetched: Fetched) {
        match self.poller.finish(&HostShared, now, fetched) {
            FetchResult::Stored => Metrics::inc(self.counters.success),
            FetchResult::NotModified => {
                Metrics::inc(self.counters.success);
                Metrics::inc(self.counters.not_modified);
            }
            FetchResult::Failed(why) => {
                Metrics::inc(self.counters.failed);
                log(
                    LogLevel::Warn,
                    &format!(
                        "auth-filter: {} fetch from {}{} failed: {why}",
                        D::KIND,
                        self.source.cluster,
                        self.source.path
                    ),
                );
            }
        }
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
    Remote(Box<Remote<KeySet>>),
}

/// What every HTTP context of a configured root shares.
#[derive(Clone, Debug)]
struct Shared {
    config: Rc<FilterConfig>,
    validation: Rc<Validation>,
    cache: Rc<RefCell<TokenCache>>,
    metrics: Metrics,
}

/// The root context: configuration, keys, revocations, cache and counters of one worker.
#[derive(Debug)]
pub(crate) struct Root {
    shared: Option<Shared>,
    keys: KeyState,
    /// `remote_revocations`, when configured.
    revocations: Option<Box<Remote<Revocations>>>,
}

impl Root {
    pub(crate) fn new() -> Self {
        Self {
            shared: None,
            keys: KeyState::Unconfigured,
            revocations: None,
        }
    }

    /// The keys a request may use now: none while unloaded or stale.
    fn usable_keys(&self, now: u64) -> Option<Rc<KeySet>> {
        match &self.keys {
            KeyState::Unconfigured => None,
            KeyState::Local(keys) => Some(Rc::clone(keys)),
            KeyState::Remote(remote) => remote.for_request(now),
        }
    }

    /// Picks up new versions from shared data; a new key set empties the token cache.
    fn refresh(&mut self) {
        if let KeyState::Remote(remote) = &mut self.keys {
            if let Refreshed::Loaded { version, .. } = remote.refresh() {
                if let Some(shared) = &self.shared {
                    if let Ok(mut cache) = shared.cache.try_borrow_mut() {
                        cache.set_key_version(Some(version));
                    }
                }
            }
        }
        if let Some(revocations) = &mut self.revocations {
            revocations.refresh();
        }
    }
}

/// A fresh worker id, from a counter in shared data; falls back to the clock if the counter
/// cannot be updated.
fn allocate_worker_id() -> u64 {
    poll::allocate_worker_id(&HostShared).unwrap_or_else(|| {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| u64::from(d.subsec_nanos()) | (1 << 63))
    })
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let now = now_secs().unwrap_or(0);
        let keys = match &mut self.keys {
            KeyState::Remote(remote) => remote.on_response(token_id, body_size, now),
            KeyState::Unconfigured | KeyState::Local(_) => false,
        };
        let handled = keys
            || self
                .revocations
                .as_mut()
                .is_some_and(|remote| remote.on_response(token_id, body_size, now));
        if handled {
            self.refresh();
        }
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
        let metrics = Metrics::define();
        let polls = matches!(config.key_source, KeySource::Remote(_))
            || config.remote_revocations.is_some();
        if polls && hostcalls::set_tick_period(Duration::from_secs(1)).is_err() {
            log(LogLevel::Error, "auth-filter: cannot set the tick period");
            return false;
        }
        let worker_id = if polls { allocate_worker_id() } else { 0 };
        self.keys = match &config.key_source {
            KeySource::Local(keys) => KeyState::Local(Rc::new(keys.clone())),
            KeySource::Remote(remote) => KeyState::Remote(Box::new(Remote::new(
                &remote.source,
                keys::shared_names(remote),
                keys::timing(remote),
                worker_id,
                metrics.jwks(),
            ))),
        };
        self.revocations = config.remote_revocations.as_ref().map(|source| {
            Box::new(Remote::new(
                source,
                revocations::shared_names(source),
                revocations::timing(source),
                worker_id,
                metrics.revocations(),
            ))
        });
        self.shared = Some(Shared {
            validation: Rc::new(config.validation()),
            cache: Rc::new(RefCell::new(TokenCache::new(config.cache_entries))),
            config: Rc::new(config),
            metrics,
        });
        // Another worker may already have fetched into shared data.
        self.refresh();
        true
    }

    fn on_tick(&mut self) {
        self.refresh();
        let Some(now) = now_secs() else {
            return;
        };
        if let KeyState::Remote(remote) = &mut self.keys {
            remote.maybe_fetch(now);
        }
        if let Some(revocations) = &mut self.revocations {
            revocations.maybe_fetch(now);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let now = now_secs();
        let keys = now.and_then(|now| self.usable_keys(now));
        let revocations = now.and_then(|now| self.revocations.as_ref()?.for_request(now));
        Some(Box::new(Http {
            shared: self.shared.clone(),
            keys,
            revocations,
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
    /// The revocation feed, if configured and loaded.
    revocations: Option<Rc<Revocations>>,
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
        let revocations = match (&shared.config.remote_revocations, &self.revocations) {
            (None, _) => RevocationCheck::Off,
            (Some(_), None) => RevocationCheck::NotLoaded,
            (Some(_), Some(revocations)) => RevocationCheck::Loaded(revocations),
        };
        let mut cache = shared.cache.try_borrow_mut().ok();
        let decision = decide(
            &view,
            &shared.config,
            &shared.validation,
            self.keys.as_deref(),
            revocations,
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
