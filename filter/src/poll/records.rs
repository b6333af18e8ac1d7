//! The three records the workers share per polled document, and the pure rules that move them:
//! the [`Stamp`] and the document value (with its version numbering, which keeps two writers'
//! versions apart), the [`Lease`] (who fetches, when the next fetch is due, the backoff after
//! failures), and the per-VM worker ids. Everything here is a function of the records read and
//! the clock; the two helpers that write ([`allocate_worker_id`], [`hurry`]) do one
//! compare-and-swap step through [`SharedData`]. When to fetch and what to do with an answer is
//! [`super::poller`]'s business.

use serde::{Deserialize, Serialize};

use super::{SharedData, CAS_ATTEMPTS};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poll::tests::MockShared;

    const NOW: u64 = 1_700_000_000;

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
}
