//! The glue between Envoy and the pure modules: the only code that touches the proxy-wasm SDK.
//!
//! The root context (one per worker VM) parses the configuration once, owns the key state, the
//! revocation feed and the worker's token cache, and polls `remote_jwks` and
//! `remote_revocations` on `on_tick`, following the shared-data protocol of [`crate::poll`]:
//! this module only sends the calls a [`Poller`] asks for and stores what it hands back. Each
//! HTTP context reads the request headers, calls [`crate::decide::decide`] and applies the
//! decision. Signatures Envoy can check natively go to its `verify_signature` foreign function
//! (see [`crate::crypto`]).
//!
//! Every host call goes through the [`Host`] trait, whose real implementation [`Envoy`] calls
//! `proxy_wasm::hostcalls`; the contexts are generic over it, and the `proxy_wasm` trait impls
//! only delegate, so that the effects of a request are unit-tested natively (`host/tests.rs`).
//! The SDK (0.2.5) still panics inside some hostcalls on a status other than Ok or NotFound;
//! such a panic aborts the VM and Envoy's `failure_policy: FAIL_RELOAD` (in the configs we
//! ship) refuses requests until the VM is reloaded: it fails closed, never open.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use auth_jwt::Validation;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, GrpcStatusCode, LogLevel};

use crate::cache::TokenCache;
use crate::config::{FilterConfig, KeySource, RemoteSource, DEFAULT_REALM};
use crate::crypto::{HostCrypto, HostSupport, SignatureCounts};
use crate::decide::{
    decide, Decision, HeadersToRemove, HeadersToSet, RequestView, RevocationCheck, Verification,
};
use crate::feed::{self, FeedSync, Outcome};
use crate::keys::{self, Jwks};
use crate::poll::{self, Document, FetchResult, Fetched, Poller, Refreshed, SharedNames, Timing};
use crate::response::{deny_response, is_grpc, DenyReason, DenyResponse};
use crate::revocations::{Revocations, MAX_PAGE_BYTES};
use crate::stats::{Counter, Tally};

mod envoy;
#[cfg(test)]
mod tests;

pub(crate) use envoy::{Envoy, Host};

/// Logs a panic's message to Envoy's log before the VM aborts.
pub(crate) fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    Envoy.log(LogLevel::Critical, &format!("auth-filter panicked: {info}"));
}

/// The host's clock in seconds since the Unix epoch; `None` if the host cannot tell.
fn now_secs(host: &impl Host) -> Option<u64> {
    let time = host.current_time().ok()?;
    time.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Counter ids, `None` where the host refused to define one.
#[derive(Clone, Copy, Debug, Default)]
struct Metrics {
    /// The request-path counters, at [`Counter::index`].
    request: [Option<u32>; Counter::COUNT],
    jwks_fetch_success: Option<u32>,
    jwks_fetch_failed: Option<u32>,
    revocations_fetch_success: Option<u32>,
    revocations_fetch_failed: Option<u32>,
    revocations_not_modified: Option<u32>,
    signature_host: Option<u32>,
    signature_wasm: Option<u32>,
    signature_host_failed: Option<u32>,
}

impl Metrics {
    fn define(host: &impl Host) -> Self {
        let counter = |name: &str| host.define_counter(name).ok();
        Self {
            request: Counter::ALL.map(|c| counter(c.name())),
            jwks_fetch_success: counter("auth_filter.jwks_fetch_success"),
            jwks_fetch_failed: counter("auth_filter.jwks_fetch_failed"),
            revocations_fetch_success: counter("auth_filter.revocations_fetch_success"),
            revocations_fetch_failed: counter("auth_filter.revocations_fetch_failed"),
            revocations_not_modified: counter("auth_filter.revocations_not_modified"),
            signature_host: counter("auth_filter.signature.host"),
            signature_wasm: counter("auth_filter.signature.wasm"),
            signature_host_failed: counter("auth_filter.signature.host_failed"),
        }
    }

    fn add(host: &impl Host, id: Option<u32>, count: u64) {
        if let (Some(id), Ok(count)) = (id, i64::try_from(count)) {
            // Losing a count is better than failing a request over it.
            let _ = host.increment_metric(id, count);
        }
    }

    /// Hands the request-path counts since the last flush to the host.
    fn flush(&self, host: &impl Host, tally: &Tally) {
        tally.drain(|counter, count| {
            let id = self.request.get(counter.index()).copied().flatten();
            Metrics::add(host, id, count);
        });
    }

    /// Adds the signature checks since the last tick.
    fn add_signatures(&self, host: &impl Host, counts: SignatureCounts) {
        for (id, count) in [
            (self.signature_host, counts.host),
            (self.signature_wasm, counts.wasm),
            (self.signature_host_failed, counts.host_failed),
        ] {
            if count > 0 {
                Metrics::add(host, id, count);
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
    fn for_request(&self, host: &impl Host, now: u64) -> Option<Rc<D>> {
        self.poller
            .usable(now)
            .or_else(|| self.poller.peek(host, now))
    }

    /// Re-reads the shared record, re-parsing a new version.
    fn refresh(&mut self, host: &impl Host) -> Refreshed {
        let refreshed = self.poller.refresh(host);
        match &refreshed {
            Refreshed::Loaded {
                version,
                summary,
                warning,
            } => {
                host.log(
                    LogLevel::Info,
                    &format!(
                        "auth-filter: loaded {} version {} ({summary})",
                        D::KIND,
                        poll::version_label(*version)
                    ),
                );
                if let Some(warning) = warning {
                    host.log(
                        LogLevel::Warn,
                        &format!(
                            "auth-filter: {} version {}: {warning}",
                            D::KIND,
                            poll::version_label(*version)
                        ),
                    );
                }
            }
            Refreshed::Unusable { version, error } => host.log(
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
    fn maybe_fetch(&mut self, host: &impl Host, now: u64) {
        let Some(request) = self.poller.start(host, now) else {
            return;
        };
        let source = &self.source;
        let etag = request
            .if_none_match
            .as_deref()
            .map(|etag| ("if-none-match", etag));
        match get(host, source, &source.path, etag) {
            Ok(token) => self.poller.sent(token, request),
            Err(why) => self.finish(host, now, Fetched::Failed(why)),
        }
    }

    /// Handles the answer to the call `token` if it is this document's; `false` if it is not.
    fn on_response(&mut self, host: &impl Host, token: u32, body_size: usize, now: u64) -> bool {
        if !self.poller.owns(token) {
            return false;
        }
        let (status, etag) = (
            response_header(host, ":status"),
            response_header(host, "etag"),
        );
        let body = response_body(host, body_size, D::MAX_BYTES);
        let fetched = self.poller.classify(
            status.as_deref(),
            etag.as_deref(),
            body_size,
            body.as_deref(),
        );
        self.finish(host, now, fetched);
        true
    }

    fn finish(&mut self, host: &impl Host, now: u64, fetched: Fetched) {
        match self.poller.finish(host, now, fetched) {
            FetchResult::Stored | FetchResult::Superseded => {
                Metrics::add(host, self.counters.success, 1);
            }
            FetchResult::NotModified => {
                Metrics::add(host, self.counters.success, 1);
                Metrics::add(host, self.counters.not_modified, 1);
            }
            FetchResult::Failed(why) => {
                Metrics::add(host, self.counters.failed, 1);
                host.log(
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
fn get(
    host: &impl Host,
    source: &RemoteSource,
    path: &str,
    extra: Option<(&str, &str)>,
) -> Result<u32, String> {
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
    host.dispatch_http_call(&source.cluster, headers, timeout)
        .map_err(|status| format!("cannot call cluster {}: {status:?}", source.cluster))
}

/// A header of the call's answer, if it is UTF-8.
fn response_header(host: &impl Host, name: &str) -> Option<String> {
    host.call_response_header(name)
        .ok()
        .flatten()
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

/// The call's answer body, if it is at most `limit` bytes: larger ones are not even read.
fn response_body(host: &impl Host, body_size: usize, limit: usize) -> Option<Vec<u8>> {
    match body_size {
        0 => Some(Vec::new()),
        size if size <= limit => host.call_response_body(size).ok().flatten(),
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
    fn maybe_fetch(&mut self, host: &impl Host, now: u64) {
        let Some(query) = self.sync.start(now) else {
            return;
        };
        let path = &self.source.path;
        let path = match (query.is_empty(), path.contains('?')) {
            (true, _) => path.clone(),
            (false, false) => format!("{path}?{query}"),
            (false, true) => format!("{path}&{query}"),
        };
        match get(host, &self.source, &path, None) {
            Ok(token) => self.sync.sent(token, now),
            Err(why) => self.finish(host, now, Err(why)),
        }
    }

    /// Handles the answer to the call `token` if it is the feed's; `false` if it is not.
    fn on_response(&mut self, host: &impl Host, token: u32, body_size: usize, now: u64) -> bool {
        if !self.sync.owns(token) {
            return false;
        }
        let status = response_header(host, ":status");
        let body = response_body(host, body_size, MAX_PAGE_BYTES);
        let answer = match (&status, &body) {
            (None, _) => Err("no answer (timeout or reset)".to_owned()),
            (Some(status), None) => Err(format!(
                "status {status}: the body ({body_size} bytes) is over the {MAX_PAGE_BYTES} byte limit"
            )),
            (Some(status), Some(body)) => Ok((status.as_str(), body.as_slice())),
        };
        self.finish(host, now, answer);
        // The next page, if one waits, without waiting for the tick.
        self.maybe_fetch(host, now);
        true
    }

    fn finish(&mut self, host: &impl Host, now: u64, answer: Result<(&str, &[u8]), String>) {
        match self.sync.finish(now, answer) {
            Outcome::Applied {
                swapped,
                caught_up,
                entries,
                held,
            } => {
                Metrics::add(host, self.counters.success, 1);
                if caught_up && entries == 0 && !swapped {
                    Metrics::add(host, self.counters.not_modified, 1);
                }
                if swapped {
                    host.log(
                        LogLevel::Info,
                        &format!(
                            "auth-filter: revocations in sync with {}{}: {} sessions, {} users",
                            self.source.cluster, self.source.path, held.0, held.1
                        ),
                    );
                }
            }
            Outcome::Failed(why) => {
                Metrics::add(host, self.counters.failed, 1);
                host.log(
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
struct Shared<H: Host> {
    config: Rc<FilterConfig>,
    validation: Rc<Validation>,
    /// The filter's signature checks: the host's `verify_signature` where it can.
    verifier: Rc<HostCrypto<H>>,
    /// Whether the host logs at debug level, as last read (on configure and on each tick):
    /// denials are logged then, and a request costs no host call to find out.
    debug_log: Rc<Cell<bool>>,
    /// What was last logged about the host's `verify_signature`, and whether a failed call was.
    logged_support: Rc<Cell<HostSupport>>,
    logged_failure: Rc<Cell<bool>>,
    cache: Rc<RefCell<TokenCache>>,
    metrics: Metrics,
    /// Request-path counts, handed to the host on the next tick (at most [`TICK`] later).
    tally: Rc<Tally>,
    /// The shared-data names of `remote_jwks`, to ask for an early fetch when a token names an
    /// unknown key; with the second this worker last asked, so that it asks once a second.
    key_fetch: Option<(Rc<SharedNames>, Rc<Cell<u64>>)>,
}

impl<H: Host> Shared<H> {
    /// Hands the signature counts to the host, and logs what the worker learnt of the host's
    /// `verify_signature` and its first failed call (once each; the counters tell the rest).
    fn flush_signatures(&self, host: &H) {
        self.metrics
            .add_signatures(host, self.verifier.take_counts());
        let support = self.verifier.support();
        if support != self.logged_support.get() {
            self.logged_support.set(support);
            match support {
                HostSupport::Present => host.log(
                    LogLevel::Info,
                    "auth-filter: ES256 and RS256 signatures are verified by Envoy (verify_signature)",
                ),
                HostSupport::Absent => host.log(
                    LogLevel::Warn,
                    "auth-filter: the host has no verify_signature foreign function: ES256 and \
                     RS256 signatures are verified in wasm (slower)",
                ),
                HostSupport::Unknown => {}
            }
        }
        if let Some(failure) = self.verifier.take_last_failure() {
            if !self.logged_failure.replace(true) {
                host.log(
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
    fn hurry_key_fetch(&self, host: &H, now: Option<u64>) {
        let (Some((names, asked_at)), Some(now)) = (&self.key_fetch, now) else {
            return;
        };
        if asked_at.get() == now {
            return;
        }
        asked_at.set(now);
        poll::hurry(host, names, now);
    }
}

/// The root context: configuration, keys, revocations, cache and counters of one worker.
#[derive(Debug)]
pub(crate) struct Root<H: Host = Envoy> {
    host: H,
    /// Behind one `Rc`, so that a request's context costs one count, not one per field.
    shared: Option<Rc<Shared<H>>>,
    keys: KeyState,
    /// `remote_revocations`, when configured.
    revocations: Option<Box<RemoteFeed>>,
}

impl Root {
    /// The root context of a worker inside Envoy.
    pub(crate) fn new() -> Self {
        Self::with_host(Envoy)
    }
}

impl<H: Host> Root<H> {
    fn with_host(host: H) -> Self {
        Self {
            host,
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
            KeyState::Remote(remote) => remote.for_request(&self.host, now),
        }
    }

    /// Picks up new versions from shared data; a new key set empties the token cache.
    fn refresh(&mut self) {
        if let KeyState::Remote(remote) = &mut self.keys {
            if let Refreshed::Loaded { version, .. } = remote.refresh(&self.host) {
                if let Some(shared) = &self.shared {
                    if let Ok(mut cache) = shared.cache.try_borrow_mut() {
                        cache.set_key_version(Some(version));
                    }
                }
            }
        }
    }

    /// `on_http_call_response`: hands the answer to the document that sent the call.
    fn on_call_response(&mut self, token_id: u32, body_size: usize) {
        let now = now_secs(&self.host).unwrap_or(0);
        let keys = match &mut self.keys {
            KeyState::Remote(remote) => remote.on_response(&self.host, token_id, body_size, now),
            KeyState::Unconfigured | KeyState::Local(_) => false,
        };
        let handled = keys
            || self
                .revocations
                .as_mut()
                .is_some_and(|remote| remote.on_response(&self.host, token_id, body_size, now));
        if handled {
            self.refresh();
        }
    }

    /// `on_configure`: parses the configuration once; `false` (and a log line) if it is invalid.
    fn configure(&mut self) -> bool {
        let host = &self.host;
        let raw = host.plugin_configuration().unwrap_or_default();
        let config = match FilterConfig::parse(&raw) {
            Ok(config) => config,
            Err(err) => {
                host.log(
                    LogLevel::Error,
                    &format!("auth-filter: invalid configuration: {err}"),
                );
                return false;
            }
        };
        let metrics = Metrics::define(host);
        host.log(
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
            host.log(
                LogLevel::Warn,
                &format!("auth-filter: local_jwks: {warning}"),
            );
        }
        let polls = matches!(config.key_source, KeySource::Remote(_))
            || config.remote_revocations.is_some();
        // The tick also flushes the request counters, so it runs for local keys too.
        if host.set_tick_period(TICK).is_err() {
            host.log(LogLevel::Error, "auth-filter: cannot set the tick period");
            return false;
        }
        let worker_id = if polls { allocate_worker_id(host) } else { 0 };
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
        self.shared = Some(Rc::new(Shared {
            key_fetch,
            validation: Rc::new(config.validation()),
            verifier: Rc::new(HostCrypto::new(self.host.clone())),
            debug_log: Rc::new(Cell::new(debug_enabled(&self.host))),
            logged_support: Rc::new(Cell::new(HostSupport::Unknown)),
            logged_failure: Rc::new(Cell::new(false)),
            cache: Rc::new(RefCell::new(TokenCache::new(config.cache_entries))),
            config: Rc::new(config),
            metrics,
            tally: Rc::new(Tally::default()),
        }));
        // Another worker may already have fetched into shared data.
        self.refresh();
        true
    }

    /// `on_tick`: flushes the counters, picks up shared documents and starts due fetches.
    fn tick(&mut self) {
        if let Some(shared) = &self.shared {
            shared.metrics.flush(&self.host, &shared.tally);
            shared.flush_signatures(&self.host);
            shared.debug_log.set(debug_enabled(&self.host));
        }
        self.refresh();
        let Some(now) = now_secs(&self.host) else {
            return;
        };
        if let KeyState::Remote(remote) = &mut self.keys {
            remote.maybe_fetch(&self.host, now);
        }
        if let Some(revocations) = &mut self.revocations {
            revocations.maybe_fetch(&self.host, now);
        }
    }

    /// `create_http_context`: a request's context, with the keys and revocations of now.
    fn http_context(&self) -> Http<H> {
        let now = now_secs(&self.host);
        let keys = now.and_then(|now| self.usable_keys(now));
        let revocations = now.and_then(|now| self.revocations.as_ref()?.sync.usable(now));
        Http {
            host: self.host.clone(),
            shared: self.shared.clone(),
            now,
            keys,
            revocations,
        }
    }
}

/// A fresh worker id, from a counter in shared data; falls back to the clock if the counter
/// cannot be updated.
fn allocate_worker_id(host: &impl Host) -> u64 {
    poll::allocate_worker_id(host).unwrap_or_else(|| {
        host.current_time()
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
        self.on_call_response(token_id, body_size);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        self.configure()
    }

    fn on_tick(&mut self) {
        self.tick();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(self.http_context()))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Request headers as `decide` reads them: lowercase names, UTF-8 values (a value that is not
/// UTF-8 with replacement characters, which no token, method or path accepts).
type Headers = Vec<(String, String)>;

/// The request headers as read, and whether a `cookie` header was not UTF-8: a cookie header
/// rebuilt from its lossy copy must never be written back.
#[derive(Debug, Default)]
struct Read {
    headers: Headers,
    lossy_cookie: bool,
}

/// One request's context.
#[derive(Debug)]
struct Http<H: Host = Envoy> {
    host: H,
    /// `None` if the root has no valid configuration: every request is then refused.
    shared: Option<Rc<Shared<H>>>,
    /// The host's clock when the request arrived; `None` if it could not be read.
    now: Option<u64>,
    keys: Option<Rc<Jwks>>,
    /// The revocation set, if configured, in sync and fresh.
    revocations: Option<Rc<RefCell<Revocations>>>,
}

impl<H: Host> Http<H> {
    /// The decision, the configuration it was made with, and the request headers as read into
    /// `slot` (`None` if they could not be), which the decision borrows.
    fn decide<'s>(
        &'s self,
        slot: &'s mut Option<Read>,
    ) -> (Decision<'s>, Option<&'s Shared<H>>, Option<&'s Read>) {
        let Some(shared) = self.shared.as_deref() else {
            return (self.internal(None, None), None, None);
        };
        let Ok(raw) = self.host.request_headers() else {
            return (self.internal(Some(shared), None), Some(shared), None);
        };
        let mut lossy_cookie = false;
        let headers: Headers = raw
            .into_iter()
            .map(|(name, value)| {
                // Valid UTF-8 (nearly always) is taken over without a copy.
                let value = String::from_utf8(value).unwrap_or_else(|e| {
                    lossy_cookie |= name == "cookie";
                    String::from_utf8_lossy(e.as_bytes()).into_owned()
                });
                (name, value)
            })
            .collect();
        let Some(now) = self.now else {
            return (
                self.internal(Some(shared), Some(&headers)),
                Some(shared),
                None,
            );
        };
        let read: &Read = slot.insert(Read {
            headers,
            lossy_cookie,
        });
        let headers = &read.headers;
        let pseudo = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map_or("", |(_, v)| v.as_str())
        };
        let view = RequestView {
            method: pseudo(":method"),
            path: pseudo(":path"),
            headers,
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
        (decision, Some(shared), Some(read))
    }

    /// The internal-error denial, for [`Http::decide`].
    fn internal(
        &self,
        shared: Option<&Shared<H>>,
        headers: Option<&[(String, String)]>,
    ) -> Decision<'static> {
        Decision::Deny {
            response: self.internal_answer(shared, headers),
            reason: DenyReason::Internal,
        }
    }

    /// The internal-error answer in the request's protocol: a gRPC client gets status 13, as
    /// every other denial answers it in gRPC. The content type comes from `headers` if they
    /// were read, else from the host; only called once something failed, so that read costs
    /// the common path nothing.
    fn internal_answer(
        &self,
        shared: Option<&Shared<H>>,
        headers: Option<&[(String, String)]>,
    ) -> DenyResponse {
        let content_type = match headers {
            Some(headers) => headers
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
                .map(|(_, value)| value.as_bytes().to_vec()),
            None => self.host.request_header("content-type").ok().flatten(),
        };
        let grpc = is_grpc(
            content_type
                .as_deref()
                .and_then(|v| std::str::from_utf8(v).ok()),
        );
        let realm = shared.map_or(DEFAULT_REALM, |s| s.config.realm.as_str());
        deny_response(&DenyReason::Internal, realm, grpc)
    }

    /// `on_http_request_headers`: decides, then changes the headers or answers locally.
    fn on_request_headers(&self) -> Action {
        let mut slot = None;
        let (decision, shared, read) = self.decide(&mut slot);
        let headers = read.map(|r| r.headers.as_slice());
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
                let lossy_cookie = read.is_some_and(|r| r.lossy_cookie);
                if !apply_headers(
                    &self.host,
                    &headers_to_remove,
                    &headers_to_set,
                    lossy_cookie,
                ) {
                    // Forwarding with a client's identity headers left in place would be open.
                    count(&|t| t.denied(&DenyReason::Internal));
                    log_denial(&self.host, shared, headers, &DenyReason::Internal);
                    send(&self.host, &self.internal_answer(shared, headers));
                    return Action::Pause;
                }
                count(&|t| t.allowed(by));
                Action::Continue
            }
            Decision::Deny { reason, response } => {
                count(&|t| t.denied(&reason));
                log_denial(&self.host, shared, headers, &reason);
                if reason == DenyReason::UnknownKey {
                    if let Some(shared) = shared {
                        shared.hurry_key_fetch(&self.host, self.now);
                    }
                }
                send(&self.host, &response);
                Action::Pause
            }
        }
    }
}

/// Whether `host` logs at debug level (or trace).
fn debug_enabled(host: &impl Host) -> bool {
    matches!(host.log_level(), Ok(LogLevel::Trace | LogLevel::Debug))
}

/// Logs a denial at debug level with the request's `x-request-id` (which Envoy sets at the edge,
/// and its access log shows), so that a refused request can be followed from the access log to
/// the reason. The reason's counter name and its description, which never quote the token; the
/// id only if it is one short run of visible ASCII (a client may have sent it).
fn log_denial<H: Host>(
    host: &H,
    shared: Option<&Shared<H>>,
    headers: Option<&[(String, String)]>,
    reason: &DenyReason,
) {
    if !shared.is_some_and(|s| s.debug_log.get()) {
        return;
    }
    let id = match headers {
        Some(headers) => headers
            .iter()
            .find(|(name, _)| name == "x-request-id")
            .map(|(_, value)| value.as_bytes().to_vec()),
        None => host.request_header("x-request-id").ok().flatten(),
    };
    let id = match id {
        Some(id) if is_loggable_id(&id) => String::from_utf8_lossy(&id).into_owned(),
        Some(_) => "(unusable)".to_owned(),
        None => "(none)".to_owned(),
    };
    let detail = match reason {
        DenyReason::InvalidToken(why) | DenyReason::InsufficientScope(why) => format!(": {why}"),
        _ => String::new(),
    };
    host.log(
        LogLevel::Debug,
        &format!(
            "auth-filter: denied x-request-id={id} {}{detail}",
            Counter::of(reason).name()
        ),
    );
}

/// 1 to 128 bytes of visible ASCII, as auth-api accepts a request id.
fn is_loggable_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= 128 && id.iter().all(|b| (0x21..=0x7e).contains(b))
}

fn send(host: &impl Host, response: &DenyResponse) {
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
            host.send_http_response(*status, headers, body.as_bytes())
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
            host.send_grpc_response(grpc_code(*status), message, metadata)
        }
    };
    if let Err(status) = result {
        host.log(
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

/// Applies an allow decision, one call per change; `false` if one failed.
///
/// One call per change rather than one `set_map` of the rewritten map: Envoy answers a
/// `set_map` by removing every header and adding each again (about 4–5 µs per request on the
/// development machine), while a removal or a set costs 0.2–0.4 µs, and the request's first
/// change about 1.4 µs (any change to the request headers from wasm clears Envoy's route
/// cache, so the route is matched again once). An allowed request typically needs four
/// changes: the token removed, three identity headers set. A `cookie` header rebuilt without
/// the token cookie from a value that was not UTF-8 would write the replacement characters
/// upstream: the whole header is removed instead (the upstream never sees the token either way).
fn apply_headers(
    host: &impl Host,
    headers_to_remove: &HeadersToRemove<'_>,
    headers_to_set: &HeadersToSet,
    lossy_cookie: bool,
) -> bool {
    // A name sent several times is removed once: a removal takes every value of the name.
    let removed = headers_to_remove
        .iter()
        .enumerate()
        .filter(|&(i, name)| !headers_to_remove.iter().take(i).any(|n| n == name))
        .all(|(_, name)| host.remove_request_header(name).is_ok());
    removed
        && headers_to_set.iter().all(|(name, value)| {
            // The cookie header is rebuilt from every `cookie` header the client sent: all of
            // them are removed first, so that no host that replaces only a name's first value
            // could forward a token cookie sent in a second one.
            if name != "cookie" {
                host.set_request_header(name, value).is_ok()
            } else if lossy_cookie {
                host.remove_request_header(name).is_ok()
            } else {
                host.remove_request_header(name).is_ok()
                    && host.set_request_header(name, value).is_ok()
            }
        })
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.on_request_headers()
    }
}
