//! One worker's side of a polled document: the [`Poller`] that refreshes the worker's parsed
//! copy from shared data, takes the lease when a fetch is due, and stores what a fetch brought;
//! [`classify`], which sorts a fetch's answer before anything is stored; and the [`Document`]
//! trait a polled document implements. The records it reads and writes, and the rules that
//! move them, are [`super::records`]'.

use std::rc::Rc;

use super::records::{
    decode, decode_document, encode, encode_document, next_stamp, next_version, release_lease,
    touched_stamp, try_take_lease, Lease, SharedNames, Stamp,
};
use super::{SetError, SharedData, CAS_ATTEMPTS};

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
mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::*;
    use crate::poll::hurry;
    use crate::poll::records::version_of;
    use crate::poll::tests::MockShared;

    const NOW: u64 = 1_700_000_000;

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
