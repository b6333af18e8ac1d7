//! The glue between Envoy and the pure modules: the only code that touches the proxy-wasm SDK.
//!
//! The root context (one per worker VM) parses the configuration once, owns the key state, the
//! revocation feed and the worker's token cache, and polls `remote_jwks` and
//! `remote_revocations` on `on_tick`, following the shared-data protocol of [`crate::poll`]:
//! this module only implements [`SharedData`] and sends the calls a [`Poller`] asks for. Each
//! HTTP context reads the request headers, calls [`crate::decide::decide`] and applies the
//! decision. Signatures Envoy can check natively go to its `verify_signature` foreign function
//! through [`EnvoyForeign`] (see [`crate::crypto`]). Host calls are made through
//! `proxy_wasm::hostcalls` rather than the SDK's trait defaults, which unwrap more. The SDK (0.2.5) still panics inside some hostcalls on a status
//! other than Ok or NotFound; such a panic aborts the VM and Envoy's `failure_policy:
//! FAIL_RELOAD` (in the configs we ship) refuses requests until the VM is reloaded: it fails
//! closed, never open.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use auth_jwt::Validation;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{
    Action, BufferType, ContextType, GrpcStatusCode, LogLevel, MapType, MetricType, Status,
};

use crate::cache::TokenCache;
use crate::config::{FilterConfig, KeySource, RemoteSource};
use crate::crypto::{ForeignError, ForeignFunctions, HostCrypto, HostSupport, SignatureCounts};
use crate::decide::{
    decide, AllowedBy, Decision, HeadersToSet, RequestView, RevocationCheck, Verification,
};
use crate::feed::{self, FeedSync, Outcome};
use crate::keys::{self, Jwks};
use crate::poll::{
    self, Document, FetchResult, Fetched, Poller, Refreshed, SetError, SharedData, SharedNames,
    Timing,
};
use crate::response::{deny_response, DenyReason, DenyResponse};
use crate::revocations::{Revocations, MAX_PAGE_BYTES};

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

/// Envoy's foreign functions, through the host.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EnvoyForeign;

impl ForeignFunctions for EnvoyForeign {
    fn call(&self, name: &str, arguments: &[u8]) -> Result<Vec<u8>, ForeignError> {
        match hostcalls::call_foreign_function(name, Some(arguments)) {
            Ok(answer) => Ok(answer.unwrap_or_default()),
            Err(Status::NotFound) => Err(ForeignError::NotFound),
            Err(status) => Err(ForeignError::Failed(format!("{status:?}"))),
        }
    }
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
    denied_cors_preflight: Option<u32>,
    denied_method_override: Option<u32>,
    jwks_fetch_success: Option<u32>,
    jwks_fetch_failed: Option<u32>,
    revocations_fetch_success: Option<u32>,
    revocations_fetch_failed: Option<u32>,
    revocations_not_modified: Option<u32>,
    jwt_cache_hit: Option<u32>,
    jwt_cache_miss: Option<u32>,
    signature_host: Option<u32>,
    signature_wasm: Option<u32>,
    signature_host_failed: Option<u32>,
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
            denied_cors_preflight: counter("auth_filter.denied.cors_preflight"),
            denied_method_override: counter("auth_filter.denied.method_override"),
            jwks_fetch_success: counter("auth_filter.jwks_fetch_success"),
            jwks_fetch_failed: counter("auth_filter.jwks_fetch_failed"),
            revocations_fetch_success: counter("auth_filter.revocations_fetch_success"),
            revocations_fetch_failed: counter("auth_filter.revocations_fetch_failed"),
            revocations_not_modified: counter("auth_filter.revocations_not_modified"),
            jwt_cache_hit: counter("auth_filter.jwt_cache_hit"),
            jwt_cache_miss: counter("auth_filter.jwt_cache_miss"),
            signature_host: counter("auth_filter.signature.host"),
            signature_wasm: counter("auth_filter.signature.wasm"),
            signature_host_failed: counter("auth_filter.signature.host_failed"),
        }
    }

    fn add(id: Option<u32>, count: u64) {
        if let (Some(id), Ok(count)) = (id, i64::try_from(count)) {
            // Losing a count is better than failing a request over it.
            let _ = hostcalls::increment_metric(id, count);
        }
    }

    /// The request-path counters, in the order of [`Tally`]'s cells.
    fn request_counters(&self) -> [Option<u32>; TALLY_LEN] {
        [
            self.allowed,
            self.denied,
            self.denied_missing_token,
            self.denied_invalid_token,
            self.denied_revoked,
            self.denied_insufficient_scope,
            self.denied_no_route,
            self.denied_keys_unavailable,
            self.denied_internal,
            self.denied_cors_preflight,
            self.jwt_cache_hit,
            self.jwt_cache_miss,
            self.denied_method_override,
        ]
    }

    /// Adds the signature checks since the last tick.
    fn add_signatures(&self, counts: SignatureCounts) {
        for (id, count) in [
            (self.signature_host, counts.host),
            (self.signature_wasm, counts.wasm),
            (self.signature_host_failed, counts.host_failed),
        ] {
            if count > 0 {
                Metrics::add(id, count);
            }
        }
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
struct Remote<D: Document> {
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
        options: D::Options,
    ) -> Self {
        Self {
            poller: Poller::new(names, worker_id, timing, options),
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
            Refreshed::Loaded {
                version,
                summary,
                warning,
            } => {
                log(
                    LogLevel::Info,
                    &format!(
                        "auth-filter: loaded {} version {} ({summary})",
                        D::KIND,
                        poll::version_label(*version)
                    ),
                );
                if let Some(warning) = warning {
                    log(
                        LogLevel::Warn,
                        &format!(
                            "auth-filter: {} version {}: {warning}",
                            D::KIND,
                            poll::version_label(*version)
                        ),
                    );
                }
            }
            Refreshed::Unusable { version, error } => log(
                LogLevel::Error,
                &format!(
                    "auth-filter: shared {} version {} unusable: {error}",
                    D::KIND,
                    poll::version_label(*version)
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
        let etag = request
            .if_none_match
            .as_deref()
            .map(|etag| ("if-none-match", etag));
        match get(source, &source.path, etag) {
            Ok(token) => self.poller.sent(token, request),
            Err(why) => self.finish(now, Fetched::Failed(why)),
        }
    }

    /// Handles the answer to the call `token` if it is this document's; `false` if it is not.
    fn on_response(&mut self, token: u32, body_size: usize, now: u64) -> bool {
        if !self.poller.owns(token) {
            return false;
        }
        let (status, etag) = (response_header(":status"), response_header("etag"));
        let body = response_body(body_size, D::MAX_BYTES);
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
            FetchResult::Stored | FetchResult::Superseded => {
                Metrics::add(self.counters.success, 1);
            }
            FetchResult::NotModified => {
                Metrics::add(self.counters.success, 1);
                Metrics::add(self.counters.not_modified, 1);
            }
            FetchResult::Failed(why) => {
                Metrics::add(self.counters.failed, 1);
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

/// Sends `GET path` to `source`'s cluster with its credentials and `extra` header; the call's
/// token, or why it could not be sent.
fn get(source: &RemoteSource, path: &str, extra: Option<(&str, &str)>) -> Result<u32, String> {
    let bearer = source
        .bearer_token
        .as_ref()
        .map(|token| format!("Bearer {token}"));
    let mut headers = vec![
        (":method", "GET"),
        (":path", path),
        (":authority", source.authority()),
    ];
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer.as_str()));
    }
    headers.extend(extra);
    let timeout = Duration::from_millis(source.timeout_ms);
    hostcalls::dispatch_http_call(&source.cluster, headers, None, vec![], timeout)
        .map_err(|status| format!("cannot call cluster {}: {status:?}", source.cluster))
}

/// A header of the call's answer, if it is UTF-8. Bytes, not `get_map_value`: the SDK unwraps
/// that one's UTF-8, and a response header is not ours to trust.
fn response_header(name: &str) -> Option<String> {
    hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, name)
        .ok()
        .flatten()
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

/// The call's answer body, if it is at most `limit` bytes: larger ones are not even read.
fn response_body(body_size: usize, limit: usize) -> Option<Vec<u8>> {
    match body_size {
        0 => Some(Vec::new()),
        size if size <= limit => hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size)
            .ok()
            .flatten(),
        _ => None,
    }
}

/// The revocation feed this worker follows: the pure [`FeedSync`], and where its calls go.
#[derive(Debug)]
struct RemoteFeed {
    sync: FeedSync,
    source: RemoteSource,
    counters: FetchCounters,
}

impl RemoteFeed {
    /// Sends the next request if one is due.
    fn maybe_fetch(&mut self, now: u64) {
        let Some(query) = self.sync.start(now) else {
            return;
        };
        let path = &self.source.path;
        let path = match (query.is_empty(), path.contains('?')) {
            (true, _) => path.clone(),
            (false, false) => format!("{path}?{query}"),
            (false, true) => format!("{path}&{query}"),
        };
        match get(&self.source, &path, None) {
            Ok(token) => self.sync.sent(token, now),
            Err(why) => self.finish(now, Err(why)),
        }
    }

    /// Handles the answer to the call `token` if it is the feed's; `false` if it is not.
    fn on_response(&mut self, token: u32, body_size: usize, now: u64) -> bool {
        if !self.sync.owns(token) {
            return false;
        }
        let status = response_header(":status");
        let body = response_body(body_size, MAX_PAGE_BYTES);
        let answer = match (&status, &body) {
            (None, _) => Err("no answer (timeout or reset)".to_owned()),
            (Some(status), None) => Err(format!(
                "status {status}: the body ({body_size} bytes) is over the {MAX_PAGE_BYTES} byte limit"
            )),
            (Some(status), Some(body)) => Ok((status.as_str(), body.as_slice())),
        };
        self.finish(now, answer);
        // The next page, if one waits, without waiting for the tick.
        self.maybe_fetch(now);
        true
    }

    fn finish(&mut self, now: u64, answer: Result<(&str, &[u8]), String>) {
        match self.sync.finish(now, answer) {
            Outcome::Applied {
                swapped,
                caught_up,
                entries,
                held,
            } => {
                Metrics::add(self.counters.success, 1);
                if caught_up && entries == 0 && !swapped {
                    Metrics::add(self.counters.not_modified, 1);
                }
                if swapped {
                    log(
                        LogLevel::Info,
                        &format!(
                            "auth-filter: revocations in sync with {}{}: {} sessions, {} users",
                            self.source.cluster, self.source.path, held.0, held.1
                        ),
                    );
                }
            }
            Outcome::Failed(why) => {
                Metrics::add(self.counters.failed, 1);
                log(
                    LogLevel::Warn,
                    &format!(
                        "auth-filter: revocations fetch from {}{} failed: {why}",
                        self.source.cluster, self.source.path
                    ),
                );
            }
        }
    }
}

/// How often each worker's root context ticks: reads the stamps of the polled documents (a
/// few bytes each; see [`crate::poll`]), starts a fetch when one is due, and flushes the
/// counters. A document one worker fetched is in use on every worker within one tick, so the
/// tick bounds how long a revocation takes to reach every worker after it is fetched.
const TICK: Duration = Duration::from_millis(250);

const TALLY_LEN: usize = 13;

/// Request-path counts, kept per worker and handed to Envoy on the next tick (at most [`TICK`]
/// later): one host call per counter per request costs more than a cached token check.
#[derive(Debug, Default)]
struct Tally([Cell<u64>; TALLY_LEN]);

impl Tally {
    const ALLOWED: usize = 0;
    const DENIED: usize = 1;
    const CACHE_HIT: usize = 10;
    const CACHE_MISS: usize = 11;

    fn bump(&self, index: usize) {
        if let Some(cell) = self.0.get(index) {
            cell.set(cell.get().saturating_add(1));
        }
    }

    fn allowed(&self, by: AllowedBy) {
        self.bump(Self::ALLOWED);
        match by {
            AllowedBy::Token { cache_hit: true } => self.bump(Self::CACHE_HIT),
            AllowedBy::Token { cache_hit: false } => self.bump(Self::CACHE_MISS),
            AllowedBy::Public => {}
        }
    }

    fn denied(&self, reason: &DenyReason) {
        self.bump(Self::DENIED);
        self.bump(match reason {
            DenyReason::MissingToken => 2,
            DenyReason::InvalidToken(_) | DenyReason::UnknownKey => 3,
            DenyReason::Revoked => 4,
            DenyReason::InsufficientScope(_) => 5,
            DenyReason::NoRoute => 6,
            DenyReason::KeysUnavailable => 7,
            DenyReason::Internal => 8,
            DenyReason::CorsPreflight => 9,
            DenyReason::MethodOverride => 12,
        });
    }

    /// Adds the counts to Envoy's counters and starts over.
    fn flush(&self, metrics: &Metrics) {
        for (cell, id) in self.0.iter().zip(metrics.request_counters()) {
            let count = cell.take();
            if count > 0 {
                Metrics::add(id, count);
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
    Local(Rc<Jwks>),
    /// `remote_jwks`: polled.
    Remote(Box<Remote<Jwks>>),
}

/// What every HTTP context of a configured root shares.
#[derive(Clone, Debug)]
struct Shared {
    config: Rc<FilterConfig>,
    validation: Rc<Validation>,
    verifier: Rc<HostVerifier>,
    /// What was last logged about the host's `verify_signature`, and whether a failed call was.
    logged_support: Rc<Cell<HostSupport>>,
    logged_failure: Rc<Cell<bool>>,
    cache: Rc<RefCell<TokenCache>>,
    metrics: Metrics,
    tally: Rc<Tally>,
    /// The shared-data names of `remote_jwks`, to ask for an early fetch when a token names an
    /// unknown key; with the second this worker last asked, so that it asks once a second.
    key_fetch: Option<(Rc<SharedNames>, Rc<Cell<u64>>)>,
}

/// The filter's signature checks: Envoy's `verify_signature` where it can.
type HostVerifier = HostCrypto<EnvoyForeign>;

impl Shared {
    /// Hands the signature counts to Envoy, and logs what the worker learnt of the host's
    /// `verify_signature` and its first failed call (once each; the counters tell the rest).
    fn flush_signatures(&self) {
        self.metrics.add_signatures(self.verifier.take_counts());
        let support = self.verifier.support();
        if support != self.logged_support.get() {
            self.logged_support.set(support);
            match support {
                HostSupport::Present => log(
                    LogLevel::Info,
                    "auth-filter: ES256 and RS256 signatures are verified by Envoy (verify_signature)",
                ),
                HostSupport::Absent => log(
                    LogLevel::Warn,
                    "auth-filter: the host has no verify_signature foreign function: ES256 and \
                     RS256 signatures are verified in wasm (slower)",
                ),
                HostSupport::Unknown => {}
            }
        }
        if let Some(failure) = self.verifier.take_last_failure() {
            if !self.logged_failure.replace(true) {
                log(
                    LogLevel::Warn,
                    &format!(
                        "auth-filter: verify_signature gave no verdict ({failure:?}): checked in \
                         wasm (further ones are counted in auth_filter.signature.host_failed)"
                    ),
                );
            }
        }
    }

    /// A token named a key this worker's set lacks: perhaps a new one that signs before the
    /// next poll would bring it, so the next tick of any worker fetches the keys.
    fn hurry_key_fetch(&self, now: Option<u64>) {
        let (Some((names, asked_at)), Some(now)) = (&self.key_fetch, now) else {
            return;
        };
        if asked_at.get() == now {
            return;
        }
        asked_at.set(now);
        poll::hurry(&HostShared, names, now);
    }
}

/// The root context: configuration, keys, revocations, cache and counters of one worker.
#[derive(Debug)]
pub(crate) struct Root {
    shared: Option<Shared>,
    keys: KeyState,
    /// `remote_revocations`, when configured.
    revocations: Option<Box<RemoteFeed>>,
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
    fn usable_keys(&self, now: u64) -> Option<Rc<Jwks>> {
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
        log(
            LogLevel::Info,
            &format!(
                "auth-filter: accepting tokens signed with {}",
                keys::names(&config.algorithms)
            ),
        );
        if let Some(warning) = match &config.key_source {
            KeySource::Local(jwks) => jwks.warning(),
            KeySource::Remote(_) => None,
        } {
            log(
                LogLevel::Warn,
                &format!("auth-filter: local_jwks: {warning}"),
            );
        }
        let polls = matches!(config.key_source, KeySource::Remote(_))
            || config.remote_revocations.is_some();
        // The tick also flushes the request counters, so it runs for local keys too.
        if hostcalls::set_tick_period(TICK).is_err() {
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
                config.algorithms.clone(),
            ))),
        };
        self.revocations = config.remote_revocations.as_ref().map(|remote| {
            Box::new(RemoteFeed {
                sync: FeedSync::new(feed::timing(remote), config.clock_skew_seconds),
                source: remote.source.clone(),
                counters: metrics.revocations(),
            })
        });
        let key_fetch = match &config.key_source {
            KeySource::Remote(remote) => {
                Some((Rc::new(keys::shared_names(remote)), Rc::new(Cell::new(0))))
            }
            KeySource::Local(_) => None,
        };
        self.shared = Some(Shared {
            key_fetch,
            validation: Rc::new(config.validation()),
            verifier: Rc::new(HostCrypto::new(EnvoyForeign)),
            logged_support: Rc::new(Cell::new(HostSupport::Unknown)),
            logged_failure: Rc::new(Cell::new(false)),
            cache: Rc::new(RefCell::new(TokenCache::new(config.cache_entries))),
            config: Rc::new(config),
            metrics,
            tally: Rc::new(Tally::default()),
        });
        // Another worker may already have fetched into shared data.
        self.refresh();
        true
    }

    fn on_tick(&mut self) {
        if let Some(shared) = &self.shared {
            shared.tally.flush(&shared.metrics);
            shared.flush_signatures();
        }
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
        let revocations = now.and_then(|now| self.revocations.as_ref()?.sync.usable(now));
        Some(Box::new(Http {
            shared: self.shared.clone(),
            now,
            keys,
            revocations,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Request headers as `decide` reads them: lowercase names, UTF-8 values.
type Headers = Vec<(String, String)>;

/// One request's context.
#[derive(Debug)]
struct Http {
    /// `None` if the root has no valid configuration: every request is then refused.
    shared: Option<Shared>,
    /// The host's clock when the request arrived; `None` if it could not be read.
    now: Option<u64>,
    keys: Option<Rc<Jwks>>,
    /// The revocation set, if configured, in sync and fresh.
    revocations: Option<Rc<RefCell<Revocations>>>,
}

impl Http {
    /// The decision, the configuration it was made with, and the request headers as read
    /// (`None` when one was not UTF-8: the lossy copy must then never be written back).
    fn decide(&self) -> (Decision, Option<&Shared>, Option<Headers>) {
        let Some(shared) = &self.shared else {
            return (internal("auth-service"), None, None);
        };
        let (Some(now), Ok(raw)) = (
            self.now,
            hostcalls::get_map_bytes(MapType::HttpRequestHeaders),
        ) else {
            return (internal(&shared.config.realm), Some(shared), None);
        };
        // Header values that are not UTF-8 become replacement characters, which no token,
        // method or path accepts.
        let mut all_utf8 = true;
        let headers: Vec<(String, String)> = raw
            .into_iter()
            .map(|(name, value)| {
                // Valid UTF-8 (nearly always) is taken over without a copy.
                let value = String::from_utf8(value).unwrap_or_else(|e| {
                    all_utf8 = false;
                    String::from_utf8_lossy(e.as_bytes()).into_owned()
                });
                (name, value)
            })
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
        // The set is only ever borrowed mutably while an answer from auth-api is applied,
        // never during a request; if it were, the request would fail closed.
        let borrowed = self.revocations.as_ref().map(|set| set.try_borrow());
        let revocations = match (&shared.config.remote_revocations, &borrowed) {
            (None, _) => RevocationCheck::Off,
            (Some(_), None | Some(Err(_))) => RevocationCheck::NotLoaded,
            (Some(_), Some(Ok(set))) => RevocationCheck::Loaded(set),
        };
        let mut cache = shared.cache.try_borrow_mut().ok();
        let decision = decide(
            &view,
            &shared.config,
            Verification::new(&shared.validation, &*shared.verifier),
            self.keys.as_deref().map(Jwks::keys),
            revocations,
            cache.as_deref_mut(),
            now,
        );
        (decision, Some(shared), all_utf8.then_some(headers))
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
        3 => GrpcStatusCode::InvalidArgument,
        7 => GrpcStatusCode::PermissionDenied,
        14 => GrpcStatusCode::Unavailable,
        16 => GrpcStatusCode::Unauthenticated,
        _ => GrpcStatusCode::Internal,
    }
}

/// Applies an allow decision; `false` if the headers could not all be changed.
///
/// With the request's headers at hand (all UTF-8), the new header map is written in one call:
/// each call into Envoy costs about as much as a cached token check, and an allowed request
/// typically needs four changes (the token removed, three identity headers set). Otherwise,
/// one call per change.
fn apply_headers(
    current: Option<&[(String, String)]>,
    headers_to_remove: &[String],
    headers_to_set: &HeadersToSet,
) -> bool {
    if headers_to_remove.is_empty() && headers_to_set.is_empty() {
        return true;
    }
    if let Some(current) = current {
        let replaced = |name: &str| {
            headers_to_remove
                .iter()
                .any(|r| r.eq_ignore_ascii_case(name))
                || headers_to_set
                    .iter()
                    .any(|(s, _)| s.eq_ignore_ascii_case(name))
        };
        let map: Vec<(&str, &str)> = current
            .iter()
            .filter(|(name, _)| !replaced(name))
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .chain(headers_to_set.iter())
            .collect();
        return hostcalls::set_map(MapType::HttpRequestHeaders, map).is_ok();
    }
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
        let (decision, shared, headers) = self.decide();
        // Without a configuration there is nothing to count into.
        let count = |f: &dyn Fn(&Tally)| {
            if let Some(shared) = shared {
                f(&shared.tally);
            }
        };
        match decision {
            Decision::Allow {
                headers_to_set,
                headers_to_remove,
                by,
            } => {
                if !apply_headers(headers.as_deref(), &headers_to_remove, &headers_to_set) {
                    // Forwarding with a client's identity headers left in place would be open.
                    count(&|t| t.denied(&DenyReason::Internal));
                    let realm = shared.map_or("auth-service", |s| s.config.realm.as_str());
                    if let Decision::Deny { response, .. } = internal(realm) {
                        send(&response);
                    }
                    return Action::Pause;
                }
                count(&|t| t.allowed(by));
                Action::Continue
            }
            Decision::Deny { reason, response } => {
                count(&|t| t.denied(&reason));
                if reason == DenyReason::UnknownKey {
                    if let Some(shared) = shared {
                        shared.hurry_key_fetch(self.now);
                    }
                }
                send(&response);
                Action::Pause
            }
        }
    }
}
