//! A document polled over HTTP and shared between Envoy's worker VMs: the protocol, as pure code
//! over a [`SharedData`] store. The key set ([`crate::keys`]) and the revocation feed
//! ([`crate::revocations`]) are two [`Document`]s polled this way.
//!
//! Envoy runs one VM per worker thread with no notification between them, so the workers share
//! three values per document in proxy-wasm shared data:
//!
//! - the document itself, as `<version>\n<body>`: the last good body, written with
//!   compare-and-swap. The version's generation grows by one each time the body changes, and
//!   its low bits name the worker that stored it, so two workers that store different bodies
//!   at once (a write to an absent key cannot be compare-and-swapped) never share a version;
//! - the [`Stamp`] `{version, fetched_at, etag}`: a few bytes saying which version is shared,
//!   when it was last fetched or confirmed (304), and its `ETag`. Every worker reads the stamp
//!   on every tick and reads (and re-parses) the document only when the version is new. A
//!   revocation feed can reach megabytes; reading it on every tick of every worker would not
//!   do, and the cheap stamp is what lets the tick be short, so that a document one worker
//!   fetched is in use on all workers within a tick;
//! - the [`Lease`] `{holder, expires_at, failures, next_attempt_at}`: which worker is fetching
//!   (taken and released with compare-and-swap), and when the next fetch is due, so that the
//!   backoff after failures is shared by every worker.
//!
//! The document is written before its stamp, so a stamp never names a version that cannot be
//! read. A worker reads the document again whenever the stamp changes and keeps the version the
//! document itself carries, so all workers end up with the document that stayed in shared data
//! even when stamps land out of order. An answer that arrives after another worker stored a
//! different document than the one shared when the fetch started is dropped, never stored over
//! it: it may be the older of the two. The lease keeps the workers from all fetching at once;
//! with those two rules a duplicate fetch is harmless.
//! This module neither talks to the host nor sends requests: `host.rs` implements
//! [`SharedData`], dispatches the call a [`Poller`] asks for and hands back the answer.

use std::rc::Rc;

use serde::{Deserialize, Serialize};

/// Attempts at a compare-and-swap write before giving up until the next tick.
const CAS_ATTEMPTS: usize = 4;
/// Longest `ETag` kept for `If-None-Match`, in bytes.
const MAX_ETAG_BYTES: usize = 256;

/// A document that can be polled: how it is named and parsed.
pub(crate) trait Document: Sized {
    /// Names its records in shared data and its log lines, e.g. `jwks`.
    const KIND: &'static str;
    /// Largest body accepted from the source, in bytes.
    const MAX_BYTES: usize;

    /// What parsing needs from the configuration besides the body (the key set: the accepted
    /// algorithms); `()` for none.
    type Options: std::fmt::Debug;

    /// Parses and checks a fetched body; an error (lowercase, no trailing period) refuses it,
    /// and the last good copy stays in force.
    fn parse(body: &[u8], options: &Self::Options) -> Result<Self, String>;

    /// A short description for the log, e.g. `3 keys`.
    fn summary(&self) -> String;

    /// Something about an accepted document worth a warning in the log (e.g. keys left out).
    fn warning(&self) -> Option<String> {
        None
    }
}

/// Proxy-wasm shared data: a key-value store shared by the VMs of one `vm_id`, with a
/// compare-and-swap token per value.
pub(crate) trait SharedData {
    /// The value under `key` (`None` if absent) and its CAS token; `None` if the host fails.
    fn get(&self, key: &str) -> Option<(Option<Vec<u8>>, Option<u32>)>;

    /// Stores `value` under `key` if its CAS token is still `cas` (`None`: unconditionally).
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError>;
}

/// Why a [`SharedData::set`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SetError {
    /// Another VM wrote the value since it was read.
    CasMismatch,
    /// The host refused for another reason.
    Failed,
}

impl std::fmt::Display for SetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::CasMismatch => "another worker wrote the value first",
            Self::Failed => "the host refused the write",
        })
    }
}

impl std::error::Error for SetError {}

/// The small record naming the shared document's version, read on every tick.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stamp {
    /// The version of the shared document; grows by one whenever the document changes.
    pub version: u64,
    /// When that version was last fetched or confirmed unchanged, in seconds since the epoch.
    pub fetched_at: u64,
    /// The source's `ETag` for that version, sent back as `If-None-Match`. Default none.
    #[serde(default)]
    pub etag: Option<String>,
}

/// The shared document value: its version, a newline, the body as fetched (already checked to
/// parse). Kept raw rather than as a JSON string, which would escape every quote of the body.
pub(crate) fn encode_document(version: u64, body: &str) -> Vec<u8> {
    let mut value = format!("{version}\n").into_bytes();
    value.extend_from_slice(body.as_bytes());
    value
}

/// Reads a shared document value: `(version, body)`, `None` if absent or not of that form.
pub(crate) fn decode_document(value: Option<&[u8]>) -> Option<(u64, &str)> {
    let text = std::str::from_utf8(value?).ok()?;
    let (version, body) = text.split_once('\n')?;
    Some((version.parse().ok()?, body))
}

/// The lease record in shared data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Lease {
    /// The worker fetching now, if any.
    pub holder: Option<u64>,
    /// When the holder's lease lapses (seconds since the epoch), in case it never reports back.
    pub expires_at: u64,
    /// Consecutive failed fetches.
    pub failures: u32,
    /// No fetch starts before this time (seconds since the epoch).
    pub next_attempt_at: u64,
}

/// Shared-data key names for one polled source, so that two documents or two filters in one
/// VM do not mix their values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SharedNames {
    /// Where the document lives ([`encode_document`]).
    pub document: String,
    /// Where its [`Stamp`] lives.
    pub stamp: String,
    /// Where the [`Lease`] lives.
    pub lease: String,
}

impl SharedNames {
    /// The names for a document of `kind` from `cluster` + `path`, e.g.
    /// `auth_filter.jwks.stamp.auth_internal/internal/keys`.
    pub(crate) fn new(kind: &str, cluster: &str, path: &str) -> Self {
        let name = |part: &str| format!("auth_filter.{kind}.{part}.{cluster}{path}");
        Self {
            document: name("document"),
            stamp: name("stamp"),
            lease: name("lease"),
        }
    }
}

/// Where the per-VM worker ids are allocated.
pub(crate) const WORKER_SEQ_KEY: &str = "auth_filter.worker_seq";

/// Encodes a record for shared data.
pub(crate) fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).unwrap_or_default()
}

/// Decodes a record from shared data; `None` when absent or unreadable (treated as no record).
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: Option<&[u8]>) -> Option<T> {
    bytes.and_then(|b| serde_json::from_slice(b).ok())
}

/// The next worker id after the counter `current` (absent or unreadable counts as 0), and the
/// counter value to write back with compare-and-swap.
pub(crate) fn next_worker_id(current: Option<&[u8]>) -> (u64, Vec<u8>) {
    let last: u64 = decode(current).unwrap_or(0);
    let id = last.wrapping_add(1);
    (id, encode(&id))
}

/// A fresh worker id from the counter in shared data; `None` if it cannot be updated.
pub(crate) fn allocate_worker_id(shared: &dyn SharedData) -> Option<u64> {
    for _ in 0..CAS_ATTEMPTS {
        let (bytes, cas) = shared.get(WORKER_SEQ_KEY)?;
        let (id, next) = next_worker_id(bytes.as_deref());
        if shared.set(WORKER_SEQ_KEY, &next, cas).is_ok() {
            return Some(id);
        }
    }
    None
}

/// The lease to write (with compare-and-swap) if worker `me` should fetch now: the fetch is due
/// and nobody holds a live lease. The lease lasts `lease_secs`.
pub(crate) fn try_take_lease(
    current: Option<&Lease>,
    me: u64,
    now: u64,
    lease_secs: u64,
) -> Option<Lease> {
    let current = current.cloned().unwrap_or_default();
    let held = current.holder.is_some() && now < current.expires_at;
    if held || now < current.next_attempt_at {
        return None;
    }
    Some(Lease {
        holder: Some(me),
        expires_at: now.saturating_add(lease_secs),
        ..current
    })
}

/// Seconds to wait after `failures` consecutive failures: 1, 2, 4, … capped at `poll_seconds`.
pub(crate) fn backoff_secs(failures: u32, poll_seconds: u64) -> u64 {
    let exp = failures.saturating_sub(1).min(63);
    (1u64 << exp).min(poll_seconds).max(1)
}

/// The lease released by a worker after a fetch: on success the next fetch is a poll period
/// away and the failure count resets; on failure it backs off.
pub(crate) fn release_lease(
    current: Option<&Lease>,
    now: u64,
    success: bool,
    poll_seconds: u64,
) -> Lease {
    let failures = if success {
        0
    } else {
        current.map_or(0, |l| l.failures).saturating_add(1)
    };
    let wait = if success {
        poll_seconds
    } else {
        backoff_secs(failures, poll_seconds)
    };
    Lease {
        holder: None,
        expires_at: 0,
        failures,
        next_attempt_at: now.saturating_add(wait),
    }
}

/// Low bits of a version that hold the id of the worker that stored it: two workers that store
/// different bodies over the same shared version (both at start-up, say) never give them the
/// same version, so every worker notices which one stayed.
const WRITER_BITS: u32 = 16;

/// A version: `generation` (one more at each change) with the writer's id in the low bits.
pub(crate) fn version_of(generation: u64, writer: u64) -> u64 {
    let generation = generation.min(u64::MAX >> WRITER_BITS);
    (generation << WRITER_BITS) | (writer & ((1 << WRITER_BITS) - 1))
}

/// A version as the log shows it: `generation.writer`.
pub(crate) fn version_label(version: u64) -> String {
    format!(
        "{}.{}",
        generation_of(version),
        version & ((1 << WRITER_BITS) - 1)
    )
}

/// The generation part of a version.
pub(crate) fn generation_of(version: u64) -> u64 {
    version >> WRITER_BITS
}

/// The version for a `body` worker `writer` fetched, given the shared `(version, body)`: the
/// same version when the body did not change, else the next generation.
pub(crate) fn next_version(current: Option<(u64, &str)>, body: &str, writer: u64) -> u64 {
    match current {
        Some((version, shared)) if shared == body => version,
        _ => {
            let generation = current.map_or(0, |(version, _)| generation_of(version));
            version_of(generation.saturating_add(1), writer)
        }
    }
}

/// The stamp to write once `version` (with `etag`) is stored, fetched at `now`; `None` when the
/// shared stamp already names a later generation (a slower fetch never takes the stamp back).
pub(crate) fn next_stamp(
    current: Option<&Stamp>,
    version: u64,
    etag: Option<&str>,
    now: u64,
) -> Option<Stamp> {
    match current {
        Some(c) if generation_of(c.version) > generation_of(version) => None,
        _ => Some(Stamp {
            version,
            fetched_at: now.max(current.map_or(0, |c| c.fetched_at)),
            etag: etag.map(str::to_owned),
        }),
    }
}

/// The stamp to write after a 304 to `If-None-Match: sent_etag` at `now`: the same version
/// with a new `fetched_at`. `None` if the shared stamp no longer carries that `ETag` (another
/// worker stored a different document meanwhile), which the caller counts as a failed fetch.
pub(crate) fn touched_stamp(current: Option<&Stamp>, sent_etag: &str, now: u64) -> Option<Stamp> {
    let current = current?;
    (current.etag.as_deref() == Some(sent_etag)).then(|| Stamp {
        fetched_at: now.max(current.fetched_at),
        ..current.clone()
    })
}

/// The lease to write when a request at `now` named a key the shared key set lacks: the next
/// fetch moved to now, so that a key that signs before the next poll would have brought it
/// (after `keys revoke`, or a publish delay shorter than the poll) is fetched within a tick.
/// `None` leaves the lease alone: no lease yet (the first fetch is due anyway), a fetch in
/// flight, a backoff after failures, a fetch already due, or one less than a second after the
/// last (`last_fetched_at`): a flood of made-up kids costs at most one fetch a second, most of
/// them a `304`.
pub(crate) fn hurried_lease(
    current: Option<&Lease>,
    last_fetched_at: Option<u64>,
    now: u64,
) -> Option<Lease> {
    let current = current?;
    let in_flight = current.holder.is_some() && now < current.expires_at;
    let fetched_just_now = last_fetched_at.is_some_and(|at| now < at.saturating_add(1));
    if in_flight || current.failures > 0 || current.next_attempt_at <= now || fetched_just_now {
        return None;
    }
    Some(Lease {
        next_attempt_at: now,
        ..current.clone()
    })
}

/// Asks for an early fetch of the document at `names` ([`hurried_lease`]); `true` when the
/// next fetch was moved to `now`. Called from a request, so it reads two small values and
/// writes at most one.
pub(crate) fn hurry(shared: &dyn SharedData, names: &SharedNames, now: u64) -> bool {
    let Some((bytes, cas)) = shared.get(&names.lease) else {
        return false;
    };
    let lease = decode::<Lease>(bytes.as_deref());
    let fetched_at = shared
        .get(&names.stamp)
        .and_then(|(bytes, _)| decode::<Stamp>(bytes.as_deref()))
        .map(|stamp| stamp.fetched_at);
    hurried_lease(lease.as_ref(), fetched_at, now)
        .is_some_and(|lease| shared.set(&names.lease, &encode(&lease), cas).is_ok())
}

/// Whether a document fetched at `fetched_at` may still be used at `now`; with no
/// `stale_after_seconds` it never goes stale.
pub(crate) fn is_fresh(fetched_at: u64, now: u64, stale_after_seconds: Option<u64>) -> bool {
    stale_after_seconds.is_none_or(|limit| now.saturating_sub(fetched_at) <= limit)
}

/// What one worker knows of the shared document: the version it parsed last.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct VersionTracker {
    version: Option<u64>,
}

impl VersionTracker {
    /// Whether `version` is one this worker has not parsed yet; remembers it.
    pub(crate) fn needs_parse(&mut self, version: u64) -> bool {
        if self.version == Some(version) {
            return false;
        }
        self.version = Some(version);
        true
    }
}

/// A fetch's answer, sorted by [`classify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fetched {
    /// A `200` whose body parses: store it.
    Document {
        /// The body.
        document: String,
        /// Its `ETag`, if the source sent a usable one.
        etag: Option<String>,
    },
    /// A `304` to our `If-None-Match`: the shared copy is still current.
    NotModified,
    /// Anything else; says why. The last good copy stays in force.
    Failed(String),
}

/// Sorts an answer: `status` (`None` when the call failed or timed out), its `ETag` header,
/// the announced body size and the body (read by the caller only when `body_size` is within
/// `D::MAX_BYTES`), for a request sent with `If-None-Match: sent_etag`, parsed with `options`.
pub(crate) fn classify<D: Document>(
    status: Option<&str>,
    etag: Option<&str>,
    body_size: usize,
    body: Option<&[u8]>,
    sent_etag: Option<&str>,
    options: &D::Options,
) -> Fetched {
    match status {
        Some("200") => {}
        Some("304") if sent_etag.is_some() => return Fetched::NotModified,
        Some("304") => {
            return Fetched::Failed("304 to a request without If-None-Match".to_owned());
        }
        other => {
            return Fetched::Failed(format!(
                "status {} ({body_size} bytes)",
                other.unwrap_or("none")
            ))
        }
    }
    let limit = D::MAX_BYTES;
    let body = match body {
        _ if body_size > limit => None,
        Some(body) if body.len() <= limit => Some(body),
        Some(_) => None,
        None => return Fetched::Failed("the body could not be read".to_owned()),
    };
    let Some(body) = body else {
        return Fetched::Failed(format!("the body is over the {limit} byte limit"));
    };
    if let Err(why) = D::parse(body, options) {
        return Fetched::Failed(why);
    }
    match std::str::from_utf8(body) {
        Ok(document) => Fetched::Document {
            document: document.to_owned(),
            etag: etag.filter(|e| usable_etag(e)).map(str::to_owned),
        },
        Err(_) => Fetched::Failed("the body is not utf-8".to_owned()),
    }
}

/// An `ETag` that can be sent back as a header value: visible ASCII, at most 256 bytes.
fn usable_etag(etag: &str) -> bool {
    !etag.is_empty() && etag.len() <= MAX_ETAG_BYTES && etag.bytes().all(|b| b.is_ascii_graphic())
}

/// What the host should send for a fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    /// The `If-None-Match` header, if the shared record has an `ETag`.
    pub if_none_match: Option<String>,
    /// The version the stamp named when the fetch started, to tell a late answer.
    pub seen_version: Option<u64>,
}

/// How a fetch ended, for the counters and the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FetchResult {
    /// A document was stored (a new version, or the same one fetched again).
    Stored,
    /// A 304 confirmed the shared copy.
    NotModified,
    /// The answer arrived after another worker had stored a different document, and was
    /// dropped: it may be the older of the two.
    Superseded,
    /// The fetch failed; says why.
    Failed(String),
}

impl FetchResult {
    /// Whether the fetch counts as a success (a 304 does).
    pub(crate) fn is_success(&self) -> bool {
        !matches!(self, Self::Failed(_))
    }
}

/// What reading the shared record changed for this worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refreshed {
    /// No record, or the version this worker already parsed.
    Unchanged,
    /// A new version was parsed and is now in use.
    Loaded {
        /// Its version.
        version: u64,
        /// [`Document::summary`].
        summary: String,
        /// [`Document::warning`].
        warning: Option<String>,
    },
    /// A new version could not be parsed; the previous copy stays in use.
    Unusable {
        /// Its version.
        version: u64,
        /// Why.
        error: String,
    },
}

/// How a [`Poller`] polls: the timing part of the source's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Timing {
    /// Seconds between successful polls, at least 1.
    pub poll_seconds: u64,
    /// Timeout of one fetch, in milliseconds; the lease lasts this plus 2 s.
    pub timeout_ms: u64,
    /// Seconds after the last successful fetch when the copy stops being used; `None`: never.
    pub stale_after_seconds: Option<u64>,
}

/// How [`Poller::update_stamp`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StampWrite {
    Written,
    /// The update did not apply to the shared stamp; nothing was written.
    Declined,
    /// Every attempt failed.
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct InFlight {
    token: u32,
    if_none_match: Option<String>,
    /// The version the stamp named when the fetch started.
    seen_version: Option<u64>,
}

/// How storing a fetched body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Store {
    /// Shared under this version.
    Stored(u64),
    /// Another worker stored a different body since this fetch started: this answer may be
    /// older than that one, so it is dropped rather than taking the shared copy back.
    Superseded,
    /// Every attempt failed.
    Failed,
}

/// One worker's side of one polled document: its parsed copy, and its part in fetching.
#[derive(Debug)]
pub(crate) struct Poller<D: Document> {
    names: SharedNames,
    /// How fetched bodies are parsed.
    options: D::Options,
    worker_id: u64,
    timing: Timing,
    tracker: VersionTracker,
    /// The stamp version this worker last acted on: the document is read again only when the
    /// stamp changes, whatever version the document itself turned out to carry.
    stamp_seen: Option<u64>,
    /// The parsed document and when it was fetched.
    current: Option<(Rc<D>, u64)>,
    in_flight: Option<InFlight>,
}

impl<D: Document> Poller<D> {
    /// A worker's poller for the records at `names`, parsing with `options`, with nothing
    /// loaded yet.
    pub(crate) fn new(
        names: SharedNames,
        worker_id: u64,
        timing: Timing,
        options: D::Options,
    ) -> Self {
        Self {
            names,
            options,
            worker_id,
            timing,
            tracker: VersionTracker::default(),
            stamp_seen: None,
            current: None,
            in_flight: None,
        }
    }

    /// The copy a request may use at `now`: none before the first load or once stale.
    pub(crate) fn usable(&self, now: u64) -> Option<Rc<D>> {
        self.current
            .as_ref()
            .filter(|(_, fetched_at)| is_fresh(*fetched_at, now, self.timing.stale_after_seconds))
            .map(|(document, _)| Rc::clone(document))
    }

    /// The shared stamp, if any.
    fn stamp(&self, shared: &dyn SharedData) -> Option<Stamp> {
        let (bytes, _) = shared.get(&self.names.stamp)?;
        decode(bytes.as_deref())
    }

    /// A usable copy straight from shared data, parsed but not kept: for a worker whose own
    /// copy is missing or stale while another worker has already fetched a good one, so that
    /// it does not refuse requests until its next tick.
    pub(crate) fn peek(&self, shared: &dyn SharedData, now: u64) -> Option<Rc<D>> {
        let stamp = self.stamp(shared)?;
        if !is_fresh(stamp.fetched_at, now, self.timing.stale_after_seconds) {
            return None;
        }
        let (bytes, _) = shared.get(&self.names.document)?;
        let (_, body) = decode_document(bytes.as_deref())?;
        D::parse(body.as_bytes(), &self.options).ok().map(Rc::new)
    }

    /// Reads the shared stamp, and the document too if its version is new, re-parsing it.
    pub(crate) fn refresh(&mut self, shared: &dyn SharedData) -> Refreshed {
        let Some(stamp) = self.stamp(shared) else {
            return Refreshed::Unchanged;
        };
        let unchanged = |poller: &mut Self| {
            if let Some((_, fetched_at)) = &mut poller.current {
                *fetched_at = (*fetched_at).max(stamp.fetched_at);
            }
            Refreshed::Unchanged
        };
        if self.stamp_seen == Some(stamp.version) {
            return unchanged(self);
        }
        let Some((bytes, _)) = shared.get(&self.names.document) else {
            return Refreshed::Unchanged;
        };
        // The document's own version counts: a writer may have stored a newer body than the
        // stamp names yet.
        let Some((version, body)) = decode_document(bytes.as_deref()) else {
            return Refreshed::Unchanged;
        };
        self.stamp_seen = Some(stamp.version);
        if !self.tracker.needs_parse(version) {
            return unchanged(self);
        }
        match D::parse(body.as_bytes(), &self.options) {
            Ok(document) => {
                let summary = document.summary();
                let warning = document.warning();
                self.current = Some((Rc::new(document), stamp.fetched_at));
                Refreshed::Loaded {
                    version,
                    summary,
                    warning,
                }
            }
            Err(error) => Refreshed::Unusable { version, error },
        }
    }

    /// Takes the fetch lease if a fetch is due and this worker has none in flight, and says
    /// what to send. The caller dispatches it and reports back with [`Poller::sent`], or with
    /// [`Poller::finish`] if it could not be sent.
    pub(crate) fn start(&mut self, shared: &dyn SharedData, now: u64) -> Option<Request> {
        if self.in_flight.is_some() {
            return None;
        }
        let (bytes, cas) = shared.get(&self.names.lease)?;
        let current = decode::<Lease>(bytes.as_deref());
        let lease_secs = self.timing.timeout_ms.div_ceil(1000).saturating_add(2);
        let lease = try_take_lease(current.as_ref(), self.worker_id, now, lease_secs)?;
        // A failure means another worker took it first.
        shared.set(&self.names.lease, &encode(&lease), cas).ok()?;
        let stamp = self.stamp(shared);
        Some(Request {
            if_none_match: stamp.as_ref().and_then(|stamp| stamp.etag.clone()),
            seen_version: stamp.map(|stamp| stamp.version),
        })
    }

    /// Remembers that `request` went out as the call `token`.
    pub(crate) fn sent(&mut self, token: u32, request: Request) {
        self.in_flight = Some(InFlight {
            token,
            if_none_match: request.if_none_match,
            seen_version: request.seen_version,
        });
    }

    /// Whether `token` is this poller's call in flight.
    pub(crate) fn owns(&self, token: u32) -> bool {
        self.in_flight.as_ref().is_some_and(|f| f.token == token)
    }

    /// [`classify`] for the answer to this poller's call in flight.
    pub(crate) fn classify(
        &self,
        status: Option<&str>,
        etag: Option<&str>,
        body_size: usize,
        body: Option<&[u8]>,
    ) -> Fetched {
        let sent = self
            .in_flight
            .as_ref()
            .and_then(|f| f.if_none_match.as_deref());
        classify::<D>(status, etag, body_size, body, sent, &self.options)
    }

    /// Records the outcome of this worker's fetch at `now`: the document and its stamp stored,
    /// or the stamp touched, then the lease released with the next due time. The caller then
    /// calls [`Poller::refresh`].
    pub(crate) fn finish(
        &mut self,
        shared: &dyn SharedData,
        now: u64,
        fetched: Fetched,
    ) -> FetchResult {
        let in_flight = self.in_flight.take();
        let seen_version = in_flight.as_ref().and_then(|f| f.seen_version);
        let sent = in_flight.and_then(|f| f.if_none_match);
        let result = match fetched {
            Fetched::Document { document, etag } => {
                match self.store_document(shared, &document, seen_version) {
                    // A later stamp than ours already covers a later document: nothing to write.
                    Store::Stored(version)
                        if self.update_stamp(shared, |current| {
                            next_stamp(current, version, etag.as_deref(), now)
                        }) != StampWrite::Failed =>
                    {
                        FetchResult::Stored
                    }
                    Store::Superseded => FetchResult::Superseded,
                    Store::Stored(_) | Store::Failed => FetchResult::Failed(
                        "the document could not be written to shared data".to_owned(),
                    ),
                }
            }
            Fetched::NotModified => {
                let touched = sent.as_deref().is_some_and(|sent| {
                    self.update_stamp(shared, |current| touched_stamp(current, sent, now))
                        == StampWrite::Written
                });
                if touched {
                    FetchResult::NotModified
                } else {
                    FetchResult::Failed("304 for a version no longer shared".to_owned())
                }
            }
            Fetched::Failed(why) => FetchResult::Failed(why),
        };
        self.release(shared, now, result.is_success());
        result
    }

    /// Stores `body`, fetched when the stamp named `seen_version`, as the shared document with
    /// compare-and-swap, under the next version if it differs from the shared one.
    fn store_document(
        &self,
        shared: &dyn SharedData,
        body: &str,
        seen_version: Option<u64>,
    ) -> Store {
        for _ in 0..CAS_ATTEMPTS {
            let Some((bytes, cas)) = shared.get(&self.names.document) else {
                return Store::Failed;
            };
            let current = decode_document(bytes.as_deref());
            if let (Some((version, shared_body)), Some(seen)) = (current, seen_version) {
                if version != seen && shared_body != body {
                    return Store::Superseded;
                }
            }
            let version = next_version(current, body, self.worker_id);
            if current.is_some_and(|(shared_version, _)| shared_version == version) {
                return Store::Stored(version);
            }
            match shared.set(&self.names.document, &encode_document(version, body), cas) {
                Ok(()) => return Store::Stored(version),
                Err(SetError::CasMismatch) => {}
                Err(SetError::Failed) => return Store::Failed,
            }
        }
        Store::Failed
    }

    /// Writes `next(current stamp)` with compare-and-swap.
    fn update_stamp(
        &self,
        shared: &dyn SharedData,
        next: impl Fn(Option<&Stamp>) -> Option<Stamp>,
    ) -> StampWrite {
        for _ in 0..CAS_ATTEMPTS {
            let Some((bytes, cas)) = shared.get(&self.names.stamp) else {
                return StampWrite::Failed;
            };
            let current = decode::<Stamp>(bytes.as_deref());
            let Some(stamp) = next(current.as_ref()) else {
                return StampWrite::Declined;
            };
            if shared.set(&self.names.stamp, &encode(&stamp), cas).is_ok() {
                return StampWrite::Written;
            }
        }
        StampWrite::Failed
    }

    fn release(&self, shared: &dyn SharedData, now: u64, success: bool) {
        for _ in 0..CAS_ATTEMPTS {
            let Some((bytes, cas)) = shared.get(&self.names.lease) else {
                return;
            };
            let current = decode::<Lease>(bytes.as_deref());
            if current.as_ref().and_then(|l| l.holder) != Some(self.worker_id) {
                // The lease lapsed and another worker holds it now.
                return;
            }
            let released = release_lease(current.as_ref(), now, success, self.timing.poll_seconds);
            match shared.set(&self.names.lease, &encode(&released), cas) {
                Err(SetError::CasMismatch) => {}
                Ok(()) | Err(SetError::Failed) => return,
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::*;

    const NOW: u64 = 1_700_000_000;

    /// Shared data in memory, with Envoy's compare-and-swap rules: a CAS token of `None` (0 on
    /// the wire) writes unconditionally, any other must match the value's current token.
    #[derive(Debug, Default)]
    pub(crate) struct MockShared {
        values: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        next_cas: RefCell<u32>,
        /// Writes to this key fail, as when Envoy cannot store a value.
        failing: RefCell<Option<String>>,
    }

    impl SharedData for MockShared {
        fn get(&self, key: &str) -> Option<(Option<Vec<u8>>, Option<u32>)> {
            Some(match self.values.borrow().get(key) {
                Some((value, cas)) => (Some(value.clone()), Some(*cas)),
                None => (None, None),
            })
        }

        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
            if self.failing.borrow().as_deref() == Some(key) {
                return Err(SetError::Failed);
            }
            let mut values = self.values.borrow_mut();
            if let (Some(expected), Some((_, current))) = (cas, values.get(key)) {
                if expected != *current {
                    return Err(SetError::CasMismatch);
                }
            }
            let mut next = self.next_cas.borrow_mut();
            *next += 1;
            values.insert(key.to_owned(), (value.to_vec(), *next));
            Ok(())
        }
    }

    impl MockShared {
        pub(crate) fn lease(&self, names: &SharedNames) -> Option<Lease> {
            decode(self.get(&names.lease)?.0.as_deref())
        }

        /// The shared stamp, with the document body.
        pub(crate) fn record(&self, names: &SharedNames) -> Option<(Stamp, String)> {
            let stamp = decode(self.get(&names.stamp)?.0.as_deref())?;
            let document = self.get(&names.document)?.0?;
            let (_, body) = decode_document(Some(&document))?;
            Some((stamp, body.to_owned()))
        }
    }

    /// A test document: a JSON array of strings.
    #[derive(Debug, PartialEq, Eq)]
    struct Words(Vec<String>);

    impl Document for Words {
        const KIND: &'static str = "words";
        const MAX_BYTES: usize = 64;
        type Options = ();

        fn parse(body: &[u8], (): &()) -> Result<Self, String> {
            serde_json::from_slice(body)
                .map(Words)
                .map_err(|_| "not a list of words".to_owned())
        }

        fn summary(&self) -> String {
            format!("{} words", self.0.len())
        }
    }

    fn timing(stale_after_seconds: Option<u64>) -> Timing {
        Timing {
            poll_seconds: 30,
            timeout_ms: 2000,
            stale_after_seconds,
        }
    }

    fn names() -> SharedNames {
        SharedNames::new(Words::KIND, "cluster", "/words")
    }

    fn poller(worker_id: u64, stale_after_seconds: Option<u64>) -> Poller<Words> {
        Poller::new(names(), worker_id, timing(stale_after_seconds), ())
    }

    fn words(p: &Poller<Words>, now: u64) -> Option<Vec<String>> {
        p.usable(now).map(|w| w.0.clone())
    }

    /// One complete poll by `p` at `now` answered with `status` and `body` (and `etag`).
    fn poll(
        p: &mut Poller<Words>,
        shared: &MockShared,
        now: u64,
        answer: (&str, Option<&str>, &str),
    ) -> Option<FetchResult> {
        let (status, etag, body) = answer;
        let request = p.start(shared, now)?;
        p.sent(1, request);
        let fetched = p.classify(Some(status), etag, body.len(), Some(body.as_bytes()));
        let result = p.finish(shared, now, fetched);
        p.refresh(shared);
        Some(result)
    }

    #[test]
    fn a_failed_stamp_write_fails_the_fetch_and_never_keeps_a_copy_past_its_limit(
    ) -> crate::TestResult {
        let shared = MockShared::default();
        let (mut a, mut b) = (poller(1, Some(60)), poller(2, Some(60)));
        assert_eq!(
            poll(&mut a, &shared, NOW, ("200", None, r#"["one"]"#)),
            Some(FetchResult::Stored)
        );
        b.refresh(&shared);
        *shared.failing.borrow_mut() = Some(names().stamp);
        let mut now = NOW + 30;
        let result = poll(&mut a, &shared, now, ("200", None, r#"["two"]"#));
        assert!(
            matches!(result, Some(FetchResult::Failed(_))),
            "a document whose stamp was not written is a failed fetch: {result:?}"
        );
        // Fetches keep succeeding at the source but never reach the stamp: every worker keeps
        // the last copy the stamp names, and only until its staleness limit.
        while now <= NOW + 60 {
            now += 1;
            let _ = poll(&mut a, &shared, now, ("200", None, r#"["two"]"#));
            b.refresh(&shared);
        }
        assert_eq!(words(&a, NOW + 60), Some(vec!["one".to_owned()]));
        assert_eq!(words(&a, now), None, "stale: fail closed, not frozen");
        assert_eq!(words(&b, now), None, "the other worker too");
        *shared.failing.borrow_mut() = None;
        now += 30;
        assert_eq!(
            poll(&mut a, &shared, now, ("200", None, r#"["two"]"#)),
            Some(FetchResult::Stored)
        );
        b.refresh(&shared);
        assert_eq!(words(&a, now), Some(vec!["two".to_owned()]));
        assert_eq!(
            words(&b, now),
            Some(vec!["two".to_owned()]),
            "every worker moves on"
        );
        Ok(())
    }

    #[test]
    fn records_round_trip_and_garbage_reads_as_absent() -> crate::TestResult {
        let stamp = Stamp {
            version: 3,
            fetched_at: NOW,
            etag: Some("\"v3\"".to_owned()),
        };
        assert_eq!(decode::<Stamp>(Some(&encode(&stamp))), Some(stamp));
        let body = "{\"keys\":[]}\n\"with a newline\"";
        assert_eq!(
            decode_document(Some(&encode_document(3, body))),
            Some((3, body))
        );
        for garbage in [&b""[..], b"no newline", b"x\n{}", b"-1\n{}", b"\xff\n{}"] {
            assert_eq!(decode_document(Some(garbage)), None, "{garbage:?}");
        }
        assert_eq!(decode_document(None), None);
        let lease = Lease {
            holder: Some(7),
            expires_at: NOW + 5,
            failures: 2,
            next_attempt_at: NOW,
        };
        assert_eq!(decode::<Lease>(Some(&encode(&lease))), Some(lease));
        assert_eq!(decode::<Lease>(Some(b"not json")), None);
        assert_eq!(decode::<Lease>(None), None);
        assert_eq!(
            decode::<Stamp>(Some(br#"{"fetched_at":1}"#)),
            None,
            "a stamp without a version reads as absent"
        );
        Ok(())
    }

    #[test]
    fn worker_ids_count_up_from_one() -> crate::TestResult {
        let (first, stored) = next_worker_id(None);
        let (second, _) = next_worker_id(Some(&stored));
        assert_eq!((first, second), (1, 2));
        assert_eq!(next_worker_id(Some(b"junk")).0, 1);
        let shared = MockShared::default();
        let ids: Vec<_> = (0..3).map(|_| allocate_worker_id(&shared)).collect();
        assert_eq!(ids, [Some(1), Some(2), Some(3)]);
        Ok(())
    }

    #[test]
    fn lease_is_taken_only_when_due_and_free() -> crate::TestResult {
        let free_due = Lease {
            next_attempt_at: NOW,
            ..Lease::default()
        };
        let held = Lease {
            holder: Some(2),
            expires_at: NOW + 3,
            ..Lease::default()
        };
        let lapsed = Lease {
            holder: Some(2),
            expires_at: NOW,
            ..Lease::default()
        };
        let backing_off = Lease {
            failures: 2,
            next_attempt_at: NOW + 1,
            ..Lease::default()
        };
        let cases = [
            (
                None,
                true,
                "no record yet: the first worker fetches at once",
            ),
            (Some(&free_due), true, "free and due"),
            (Some(&held), false, "another worker holds a live lease"),
            (Some(&lapsed), true, "the holder's lease lapsed"),
            (Some(&backing_off), false, "backing off after failures"),
        ];
        for (current, taken, reason) in cases {
            let lease = try_take_lease(current, 1, NOW, 5);
            assert_eq!(lease.is_some(), taken, "{reason}");
            if let Some(lease) = lease {
                assert_eq!(lease.holder, Some(1), "{reason}");
                assert_eq!(lease.expires_at, NOW + 5, "{reason}");
            }
        }
        Ok(())
    }

    #[test]
    fn backoff_doubles_from_one_second_up_to_the_poll_period() -> crate::TestResult {
        let waits: Vec<u64> = (1..=8).map(|f| backoff_secs(f, 30)).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff_secs(u32::MAX, 30), 30, "no overflow");
        assert_eq!(backoff_secs(3, 1), 1);
        Ok(())
    }

    #[test]
    fn releasing_the_lease_schedules_the_next_fetch() -> crate::TestResult {
        let held = Lease {
            holder: Some(1),
            expires_at: NOW + 5,
            failures: 2,
            next_attempt_at: 0,
        };
        let ok = release_lease(Some(&held), NOW, true, 30);
        assert_eq!(
            ok,
            Lease {
                holder: None,
                expires_at: 0,
                failures: 0,
                next_attempt_at: NOW + 30
            }
        );
        let failed = release_lease(Some(&held), NOW, false, 30);
        assert_eq!(failed.failures, 3);
        assert_eq!(failed.next_attempt_at, NOW + 4, "third failure waits 4 s");
        assert_eq!(failed.holder, None);
        let first_failure = release_lease(None, NOW, false, 30);
        assert_eq!(first_failure.next_attempt_at, NOW + 1);
        Ok(())
    }

    #[test]
    fn the_version_changes_only_with_the_document() -> crate::TestResult {
        let first = next_version(None, "a", 1);
        assert_eq!(first, version_of(1, 1));
        assert_eq!(
            next_version(Some((first, "a")), "a", 2),
            first,
            "same body, same version"
        );
        assert_eq!(next_version(Some((first, "a")), "b", 2), version_of(2, 2));
        assert_ne!(
            next_version(None, "a", 1),
            next_version(None, "b", 2),
            "two workers storing over the same version never share one"
        );
        assert_eq!(version_label(version_of(7, 3)), "7.3");
        let last = version_of(u64::MAX, 1);
        assert_eq!(
            generation_of(next_version(Some((last, "a")), "b", 1)),
            generation_of(last),
            "no overflow"
        );
        Ok(())
    }

    #[test]
    fn the_stamp_follows_the_newest_version_and_never_goes_back() -> crate::TestResult {
        let (v1, v2) = (version_of(1, 1), version_of(2, 1));
        let first = next_stamp(None, v1, Some("\"1\""), NOW).ok_or("expected a value")?;
        assert_eq!((first.version, first.fetched_at), (v1, NOW));
        let same =
            next_stamp(Some(&first), v1, Some("\"1\""), NOW + 30).ok_or("expected a value")?;
        assert_eq!((same.version, same.fetched_at), (v1, NOW + 30));
        let changed = next_stamp(Some(&same), v2, None, NOW + 60).ok_or("expected a value")?;
        assert_eq!((changed.version, changed.etag.as_deref()), (v2, None));
        let late = next_stamp(Some(&changed), v2, None, NOW).ok_or("expected a value")?;
        assert_eq!(
            late.fetched_at,
            NOW + 60,
            "a slow fetch never moves fetched_at back"
        );
        assert_eq!(
            next_stamp(Some(&changed), v1, Some("\"1\""), NOW + 90),
            None,
            "a slow fetch of an older generation leaves the stamp alone"
        );
        let rival = next_stamp(Some(&changed), version_of(2, 2), None, NOW + 90)
            .ok_or("expected a value")?;
        assert_eq!(
            rival.version,
            version_of(2, 2),
            "same generation, another writer"
        );
        Ok(())
    }

    #[test]
    fn a_304_touches_the_stamp_only_for_the_etag_that_was_sent() -> crate::TestResult {
        let stamp = next_stamp(None, 1, Some("\"1\""), NOW).ok_or("expected a value")?;
        let touched = touched_stamp(Some(&stamp), "\"1\"", NOW + 30).ok_or("expected a value")?;
        assert_eq!((touched.version, touched.fetched_at), (1, NOW + 30));
        let cases = [
            (None, "\"1\"", "no stamp to confirm"),
            (Some(&stamp), "\"2\"", "another document is shared now"),
        ];
        for (current, sent, reason) in cases {
            assert_eq!(touched_stamp(current, sent, NOW), None, "{reason}");
        }
        Ok(())
    }

    #[test]
    fn documents_go_stale_after_the_limit_if_there_is_one() -> crate::TestResult {
        let cases = [
            (NOW, NOW, Some(3600), true, "just fetched"),
            (NOW, NOW + 3600, Some(3600), true, "at the limit"),
            (NOW, NOW + 3601, Some(3600), false, "past the limit"),
            (
                NOW + 10,
                NOW,
                Some(3600),
                true,
                "fetched_at ahead of this worker's clock",
            ),
            (0, NOW, None, true, "no limit: never stale"),
        ];
        for (fetched_at, now, limit, fresh, reason) in cases {
            assert_eq!(is_fresh(fetched_at, now, limit), fresh, "{reason}");
        }
        Ok(())
    }

    #[test]
    fn a_worker_reparses_only_when_the_version_changes() -> crate::TestResult {
        let mut tracker = VersionTracker::default();
        assert!(tracker.needs_parse(1));
        assert!(!tracker.needs_parse(1));
        assert!(tracker.needs_parse(2));
        assert!(!tracker.needs_parse(2));
        assert!(
            tracker.needs_parse(1),
            "any other version, even an older one"
        );
        Ok(())
    }

    /// Counts the reads of each key, to show what a tick costs.
    #[derive(Debug, Default)]
    struct CountingShared {
        inner: MockShared,
        reads: RefCell<HashMap<String, usize>>,
    }

    impl SharedData for CountingShared {
        fn get(&self, key: &str) -> Option<(Option<Vec<u8>>, Option<u32>)> {
            *self.reads.borrow_mut().entry(key.to_owned()).or_default() += 1;
            self.inner.get(key)
        }

        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn a_refresh_reads_the_document_only_when_its_version_changes() -> crate::TestResult {
        let shared = CountingShared::default();
        let mut a = poller(1, None);
        let mut b = poller(2, None);
        poll(&mut a, &shared.inner, NOW, ("200", None, r#"["x"]"#));
        let document_reads = || {
            shared
                .reads
                .borrow()
                .get(&names().document)
                .copied()
                .unwrap_or(0)
        };
        assert!(matches!(
            b.refresh(&shared),
            Refreshed::Loaded { version, .. } if version == version_of(1, 1)
        ));
        assert_eq!(document_reads(), 1);
        for _ in 0..10 {
            assert_eq!(b.refresh(&shared), Refreshed::Unchanged);
        }
        assert_eq!(document_reads(), 1, "ten ticks read only the stamp");
        poll(
            &mut a,
            &shared.inner,
            NOW + 30,
            ("200", None, r#"["x","y"]"#),
        );
        assert!(matches!(
            b.refresh(&shared),
            Refreshed::Loaded { version, .. } if version == version_of(2, 1)
        ));
        assert_eq!(document_reads(), 2);
        Ok(())
    }

    #[test]
    fn a_stamp_behind_the_document_costs_a_read_but_no_reparse() -> crate::TestResult {
        let shared = MockShared::default();
        let mut a = poller(1, None);
        let mut b = poller(2, None);
        poll(&mut a, &shared, NOW, ("200", None, r#"["x"]"#));
        // A writer stored version 2 and has not stamped it yet.
        shared.set(
            &names().document,
            &encode_document(version_of(2, 9), r#"["x","y"]"#),
            None,
        )?;
        assert_eq!(
            a.refresh(&shared),
            Refreshed::Unchanged,
            "a worker on the stamped version waits for the stamp"
        );
        assert!(
            matches!(b.refresh(&shared), Refreshed::Loaded { version, .. } if version == version_of(2, 9)),
            "a worker that has to read the document takes its own version"
        );
        assert_eq!(b.refresh(&shared), Refreshed::Unchanged, "parsed once");
        assert_eq!(words(&b, NOW).map(|w| w.len()), Some(2));
        Ok(())
    }

    #[test]
    fn an_unknown_kid_hurries_the_next_fetch_at_most_once_a_second() -> crate::TestResult {
        let waiting = Lease {
            next_attempt_at: NOW + 25,
            ..Lease::default()
        };
        let hurried =
            hurried_lease(Some(&waiting), Some(NOW - 5), NOW).ok_or("expected a value")?;
        assert_eq!(hurried.next_attempt_at, NOW);
        let in_flight = Lease {
            holder: Some(2),
            expires_at: NOW + 3,
            ..waiting.clone()
        };
        let backing_off = Lease {
            failures: 1,
            ..waiting.clone()
        };
        let due = Lease {
            next_attempt_at: NOW,
            ..Lease::default()
        };
        let cases = [
            (
                None,
                Some(NOW - 5),
                "no lease yet: the first fetch is due anyway",
            ),
            (Some(&in_flight), Some(NOW - 5), "a fetch is in flight"),
            (
                Some(&backing_off),
                Some(NOW - 5),
                "the source is failing: keep backing off",
            ),
            (Some(&due), Some(NOW - 5), "already due"),
            (Some(&waiting), Some(NOW), "fetched this very second"),
        ];
        for (lease, fetched_at, why) in cases {
            assert_eq!(hurried_lease(lease, fetched_at, NOW), None, "{why}");
        }
        Ok(())
    }

    #[test]
    fn a_hurried_fetch_is_taken_by_the_next_tick_of_any_worker() -> crate::TestResult {
        let shared = MockShared::default();
        let mut a = poller(1, None);
        let mut b = poller(2, None);
        poll(&mut a, &shared, NOW, ("200", Some("\"v1\""), r#"["x"]"#));
        assert_eq!(b.start(&shared, NOW + 5), None, "not due for 30 s");
        assert!(hurry(&shared, &names(), NOW + 5));
        assert!(!hurry(&shared, &names(), NOW + 5), "already due");
        let request = b.start(&shared, NOW + 5).ok_or("due now, for anyone")?;
        assert_eq!(request.if_none_match.as_deref(), Some("\"v1\""));
        b.sent(3, request);
        let fetched = b.classify(Some("304"), None, 0, Some(b""));
        assert_eq!(
            b.finish(&shared, NOW + 5, fetched),
            FetchResult::NotModified
        );
        assert!(
            !hurry(&shared, &names(), NOW + 5),
            "at most one early fetch a second"
        );
        assert!(hurry(&shared, &names(), NOW + 6));
        Ok(())
    }

    #[test]
    fn shared_names_depend_on_the_kind_and_the_source() -> crate::TestResult {
        let a = SharedNames::new("jwks", "auth_internal", "/internal/keys");
        let b = SharedNames::new("jwks", "other", "/internal/keys");
        let c = SharedNames::new("revocations", "auth_internal", "/internal/keys");
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(a.document, a.stamp);
        assert_ne!(a.stamp, a.lease);
        assert_eq!(
            a.stamp,
            "auth_filter.jwks.stamp.auth_internal/internal/keys"
        );
        Ok(())
    }

    #[test]
    fn answers_are_classified_before_anything_is_stored() -> crate::TestResult {
        let good = br#"["a","b"]"#;
        let big = [b' '; 65];
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            usize,
            Option<&'a [u8]>,
            Option<&'a str>,
            Fetched,
            &'a str,
        );
        let cases: Vec<Case<'_>> = vec![
            (
                Some("200"),
                Some("\"v1\""),
                good.len(),
                Some(good),
                None,
                Fetched::Document {
                    document: r#"["a","b"]"#.to_owned(),
                    etag: Some("\"v1\"".to_owned()),
                },
                "a good document with its etag",
            ),
            (
                Some("200"),
                Some("\"v\r\n1\""),
                good.len(),
                Some(good),
                None,
                Fetched::Document {
                    document: r#"["a","b"]"#.to_owned(),
                    etag: None,
                },
                "an etag that cannot be sent back is dropped",
            ),
            (
                Some("304"),
                None,
                0,
                Some(b""),
                Some("\"v1\""),
                Fetched::NotModified,
                "not modified after If-None-Match",
            ),
            (
                Some("304"),
                None,
                0,
                Some(b""),
                None,
                Fetched::Failed("304 to a request without If-None-Match".to_owned()),
                "a 304 nobody asked for",
            ),
            (
                Some("200"),
                None,
                4,
                Some(b"[1,"),
                None,
                Fetched::Failed("not a list of words".to_owned()),
                "a malformed body",
            ),
            (
                Some("200"),
                None,
                65,
                None,
                None,
                Fetched::Failed("the body is over the 64 byte limit".to_owned()),
                "announced over the limit, not read",
            ),
            (
                Some("200"),
                None,
                3,
                Some(&big),
                None,
                Fetched::Failed("the body is over the 64 byte limit".to_owned()),
                "longer than announced and over the limit",
            ),
            (
                Some("500"),
                None,
                2,
                Some(b"{}"),
                None,
                Fetched::Failed("status 500 (2 bytes)".to_owned()),
                "a server error",
            ),
            (
                None,
                None,
                0,
                None,
                None,
                Fetched::Failed("status none (0 bytes)".to_owned()),
                "a timeout or reset",
            ),
        ];
        for (status, etag, size, body, sent, expected, reason) in cases {
            assert_eq!(
                classify::<Words>(status, etag, size, body, sent, &()),
                expected,
                "{reason}"
            );
        }
        Ok(())
    }

    #[test]
    fn one_worker_fetches_while_the_others_wait_and_all_load_the_document() -> crate::TestResult {
        let shared = MockShared::default();
        let mut a = poller(1, None);
        let mut b = poller(2, None);
        let request = a
            .start(&shared, NOW)
            .ok_or("the first worker takes the lease")?;
        assert_eq!(request.if_none_match, None, "nothing shared yet");
        assert_eq!(b.start(&shared, NOW), None, "the lease is held");
        a.sent(7, request);
        assert!(a.owns(7) && !a.owns(8) && !b.owns(7));
        let fetched = a.classify(Some("200"), Some("\"v1\""), 9, Some(br#"["x","y"]"#));
        assert_eq!(a.finish(&shared, NOW, fetched), FetchResult::Stored);
        assert!(!a.owns(7), "nothing in flight after finishing");
        assert_eq!(
            b.refresh(&shared),
            Refreshed::Loaded {
                version: version_of(1, 1),
                summary: "2 words".to_owned(),
                warning: None,
            }
        );
        assert_eq!(
            b.refresh(&shared),
            Refreshed::Unchanged,
            "parsed once per version"
        );
        assert_eq!(words(&b, NOW), Some(vec!["x".to_owned(), "y".to_owned()]));
        assert_eq!(words(&a, NOW), None, "a loads on its own refresh");
        a.refresh(&shared);
        assert!(words(&a, NOW).is_some());
        assert_eq!(
            b.start(&shared, NOW + 29),
            None,
            "not due before the poll period"
        );
        assert!(
            b.start(&shared, NOW + 30).is_some(),
            "due after it, for anyone"
        );
        Ok(())
    }

    #[test]
    fn a_failed_fetch_keeps_the_last_good_copy_and_backs_off_for_everyone() -> crate::TestResult {
        let shared = MockShared::default();
        let mut a = poller(1, Some(3600));
        let b = poller(2, Some(3600));
        let first = poll(&mut a, &shared, NOW, ("200", None, r#"["x"]"#));
        assert_eq!(first, Some(FetchResult::Stored));
        let failures = [
            (
                "200",
                r#"["x","#,
                NOW + 30,
                NOW + 31,
                "malformed: retried after 1 s",
            ),
            ("503", "", NOW + 31, NOW + 33, "second failure: 2 s"),
            ("200", "[1]", NOW + 33, NOW + 37, "wrong shape: 4 s"),
        ];
        for (status, body, at, next, reason) in failures {
            let result = poll(&mut a, &shared, at, (status, None, body));
            assert!(matches!(result, Some(FetchResult::Failed(_))), "{reason}");
            assert_eq!(words(&a, at), Some(vec!["x".to_owned()]), "{reason}: kept");
            assert_eq!(
                shared.record(&names()).ok_or("expected a value")?.0.version,
                version_of(1, 1),
                "{reason}"
            );
            assert_eq!(
                shared
                    .lease(&names())
                    .ok_or("expected a value")?
                    .next_attempt_at,
                next,
                "{reason}"
            );
        }
        assert!(words(&a, NOW + 3600).is_some(), "fresh up to the limit");
        assert_eq!(words(&a, NOW + 3601), None, "stale after it");
        assert_eq!(
            b.peek(&shared, NOW + 3601),
            None,
            "stale in shared data too"
        );
        let recovered = poll(&mut a, &shared, NOW + 3601, ("200", None, r#"["x"]"#));
        assert_eq!(recovered, Some(FetchResult::Stored));
        assert!(words(&a, NOW + 3601).is_some(), "fresh again, same version");
        assert_eq!(
            shared.lease(&names()).ok_or("expected a value")?.failures,
            0
        );
        Ok(())
    }

    #[test]
    fn a_304_confirms_the_shared_copy_without_a_new_version() -> crate::TestResult {
        let shared = MockShared::default();
        let mut a = poller(1, Some(60));
        poll(&mut a, &shared, NOW, ("200", Some("\"v1\""), r#"["x"]"#));
        let request = a.start(&shared, NOW + 30).ok_or("expected a value")?;
        assert_eq!(request.if_none_match.as_deref(), Some("\"v1\""));
        a.sent(2, request);
        let fetched = a.classify(Some("304"), Some("\"v1\""), 0, Some(b""));
        assert_eq!(
            a.finish(&shared, NOW + 30, fetched),
            FetchResult::NotModified
        );
        assert_eq!(a.refresh(&shared), Refreshed::Unchanged, "no re-parse");
        let (stamp, _) = shared.record(&names()).ok_or("expected a value")?;
        assert_eq!(
            (stamp.version, stamp.fetched_at),
            (version_of(1, 1), NOW + 30)
        );
        assert!(words(&a, NOW + 90).is_some(), "fetched_at moved on");
        assert_eq!(
            shared
                .lease(&names())
                .ok_or("expected a value")?
                .next_attempt_at,
            NOW + 60
        );
        Ok(())
    }

    #[test]
    fn a_304_for_a_document_replaced_meanwhile_counts_as_a_failure() -> crate::TestResult {
        let shared = MockShared::default();
        let mut a = poller(1, None);
        let mut b = poller(2, None);
        poll(&mut a, &shared, NOW, ("200", Some("\"v1\""), r#"["x"]"#));
        let request = a.start(&shared, NOW + 30).ok_or("expected a value")?;
        a.sent(2, request);
        // a's lease lapses; b fetches a newer document meanwhile.
        let stored = poll(
            &mut b,
            &shared,
            NOW + 40,
            ("200", Some("\"v2\""), r#"["y"]"#),
        );
        assert_eq!(stored, Some(FetchResult::Stored));
        let fetched = a.classify(Some("304"), None, 0, Some(b""));
        assert!(matches!(
            a.finish(&shared, NOW + 41, fetched),
            FetchResult::Failed(_)
        ));
        assert_eq!(
            shared
                .record(&names())
                .ok_or("expected a value")?
                .0
                .etag
                .as_deref(),
            Some("\"v2\"")
        );
        assert_eq!(
            shared
                .lease(&names())
                .ok_or("expected a value")?
                .next_attempt_at,
            NOW + 70,
            "a's late release leaves b's schedule alone"
        );
        Ok(())
    }

    #[test]
    fn a_late_answer_never_takes_a_newer_shared_document_back() -> crate::TestResult {
        let shared = MockShared::default();
        let mut a = poller(1, None);
        let mut b = poller(2, None);
        poll(&mut a, &shared, NOW, ("200", None, r#"["old"]"#));
        let request = a.start(&shared, NOW + 30).ok_or("expected a value")?;
        a.sent(4, request);
        // a's fetch is slow and its lease lapses; b fetches a newer document meanwhile.
        poll(&mut b, &shared, NOW + 40, ("200", None, r#"["new"]"#));
        let late = a.classify(Some("200"), None, 9, Some(br#"["stale"]"#));
        assert_eq!(a.finish(&shared, NOW + 41, late), FetchResult::Superseded);
        assert_eq!(
            shared.record(&names()).ok_or("expected a value")?.1,
            r#"["new"]"#
        );
        a.refresh(&shared);
        assert_eq!(words(&a, NOW + 41), Some(vec!["new".to_owned()]));
        Ok(())
    }

    #[test]
    fn workers_that_stored_at_once_all_end_up_with_the_document_that_stayed() -> crate::TestResult {
        let shared = MockShared::default();
        let mut reader = poller(3, None);
        // Two workers found nothing shared and wrote at the same moment (a write to an absent
        // key cannot be compare-and-swapped); b's body stayed, a's stamp landed last.
        let (va, vb) = (
            next_version(None, r#"["a"]"#, 1),
            next_version(None, r#"["b"]"#, 2),
        );
        assert_ne!(va, vb);
        shared.set(&names().document, &encode_document(va, r#"["a"]"#), None)?;
        shared.set(&names().document, &encode_document(vb, r#"["b"]"#), None)?;
        for version in [vb, va] {
            let stamp = next_stamp(None, version, None, NOW).ok_or("expected a value")?;
            shared.set(&names().stamp, &encode(&stamp), None)?;
        }
        reader.refresh(&shared);
        assert_eq!(words(&reader, NOW), Some(vec!["b".to_owned()]));
        assert_eq!(reader.refresh(&shared), Refreshed::Unchanged);
        Ok(())
    }

    #[test]
    fn a_new_worker_can_peek_at_a_copy_another_worker_fetched() -> crate::TestResult {
        let shared = MockShared::default();
        let mut a = poller(1, None);
        let b = poller(2, None);
        assert_eq!(b.peek(&shared, NOW), None, "nothing fetched yet");
        poll(&mut a, &shared, NOW, ("200", None, r#"["x"]"#));
        assert_eq!(b.usable(NOW), None, "b has not refreshed");
        assert_eq!(b.peek(&shared, NOW).map(|w| w.0.len()), Some(1));
        Ok(())
    }

    #[test]
    fn an_unparsable_shared_document_leaves_the_previous_copy_in_use() -> crate::TestResult {
        let shared = MockShared::default();
        let mut a = poller(1, None);
        poll(&mut a, &shared, NOW, ("200", None, r#"["x"]"#));
        shared.set(
            &names().document,
            &encode_document(version_of(2, 1), "{"),
            None,
        )?;
        let stamp = next_stamp(None, version_of(2, 1), None, NOW + 1).ok_or("expected a value")?;
        shared.set(&names().stamp, &encode(&stamp), None)?;
        assert!(matches!(
            a.refresh(&shared),
            Refreshed::Unusable { version, .. } if version == version_of(2, 1)
        ));
        assert_eq!(words(&a, NOW + 1), Some(vec!["x".to_owned()]));
        Ok(())
    }
}
