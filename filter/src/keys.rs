//! The key-sharing protocol between Envoy's worker VMs, as pure decisions on plain values.
//!
//! Envoy runs one VM per worker thread with no notification between them, so the workers share
//! two records in proxy-wasm shared data, both JSON:
//!
//! - the key record `{version, fetched_at, keys_json}`: the last good JWK Set and when it was
//!   fetched. `version` grows by one each time the keys change, and each worker re-parses the
//!   set only when it sees a new version;
//! - the lease record `{holder, expires_at, failures, next_attempt_at}`: which worker is
//!   fetching (taken and released with compare-and-swap), and when the next fetch is due, so
//!   that the backoff after failures is shared by every worker.
//!
//! The lease keeps the workers from all fetching at once; it is not needed for correctness,
//! since the key record is also written with compare-and-swap and a duplicate fetch is harmless.
//! This module does not talk to the host; `lib.rs` reads and writes the records.

use serde::{Deserialize, Serialize};

/// The key record in shared data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Grows by one whenever `keys_json` changes; starts at 1.
    pub version: u64,
    /// When the keys were last fetched successfully, in seconds since the Unix epoch.
    pub fetched_at: u64,
    /// The JWK Set document as fetched (already checked to parse).
    pub keys_json: String,
}

/// The lease record in shared data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The worker fetching now, if any.
    pub holder: Option<u64>,
    /// When the holder's lease lapses (seconds since the epoch), in case it never reports back.
    pub expires_at: u64,
    /// Consecutive failed fetches.
    pub failures: u32,
    /// No fetch starts before this time (seconds since the epoch).
    pub next_attempt_at: u64,
}

/// Shared-data key names for one key source, so that two filters in one VM do not mix keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedKeys {
    /// Where the [`KeyRecord`] lives.
    pub keys: String,
    /// Where the [`Lease`] lives.
    pub lease: String,
}

impl SharedKeys {
    /// The key names for the source `cluster` + `path`.
    pub fn for_source(cluster: &str, path: &str) -> Self {
        Self {
            keys: format!("auth_filter.jwks.{cluster}{path}"),
            lease: format!("auth_filter.lease.{cluster}{path}"),
        }
    }
}

/// Where the per-VM worker ids are allocated.
pub const WORKER_SEQ_KEY: &str = "auth_filter.worker_seq";

/// Encodes a record for shared data.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).unwrap_or_default()
}

/// Decodes a record from shared data; `None` when absent or unreadable (treated as no record).
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: Option<&[u8]>) -> Option<T> {
    bytes.and_then(|b| serde_json::from_slice(b).ok())
}

/// The next worker id after the counter `current` (absent or unreadable counts as 0), and the
/// counter value to write back with compare-and-swap.
pub fn next_worker_id(current: Option<&[u8]>) -> (u64, Vec<u8>) {
    let last: u64 = decode(current).unwrap_or(0);
    let id = last.wrapping_add(1);
    (id, encode(&id))
}

/// The lease to write (with compare-and-swap) if worker `me` should fetch now: the fetch is due
/// and nobody holds a live lease. The lease lasts `lease_secs`.
pub fn try_take_lease(
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
pub fn backoff_secs(failures: u32, poll_seconds: u64) -> u64 {
    let exp = failures.saturating_sub(1).min(63);
    (1u64 << exp).min(poll_seconds).max(1)
}

/// The lease released by a worker after a fetch: on success the next fetch is a poll period
/// away and the failure count resets; on failure it backs off.
pub fn release_lease(current: Option<&Lease>, now: u64, success: bool, poll_seconds: u64) -> Lease {
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

/// The key record to write after fetching `keys_json` at `now`: the same version with a new
/// `fetched_at` when the document did not change, else the next version.
pub fn next_key_record(current: Option<&KeyRecord>, keys_json: &str, now: u64) -> KeyRecord {
    let version = match current {
        Some(c) if c.keys_json == keys_json => c.version,
        Some(c) => c.version.saturating_add(1),
        None => 1,
    };
    KeyRecord {
        version,
        fetched_at: now.max(current.map_or(0, |c| c.fetched_at)),
        keys_json: keys_json.to_owned(),
    }
}

/// Whether keys fetched at `fetched_at` may still be used at `now`.
pub fn keys_fresh(fetched_at: u64, now: u64, stale_after_seconds: u64) -> bool {
    now.saturating_sub(fetched_at) <= stale_after_seconds
}

/// What one worker knows of the key record: the version it parsed last.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyTracker {
    version: Option<u64>,
}

impl KeyTracker {
    /// Whether `record` is a version this worker has not parsed yet; remembers it.
    pub fn needs_parse(&mut self, record: &KeyRecord) -> bool {
        if self.version == Some(record.version) {
            return false;
        }
        self.version = Some(record.version);
        true
    }

    /// The version last seen, if any.
    pub fn version(&self) -> Option<u64> {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn records_round_trip_and_garbage_reads_as_absent() {
        let record = KeyRecord {
            version: 3,
            fetched_at: NOW,
            keys_json: r#"{"keys":[]}"#.to_owned(),
        };
        assert_eq!(decode::<KeyRecord>(Some(&encode(&record))), Some(record));
        let lease = Lease {
            holder: Some(7),
            expires_at: NOW + 5,
            failures: 2,
            next_attempt_at: NOW,
        };
        assert_eq!(decode::<Lease>(Some(&encode(&lease))), Some(lease));
        assert_eq!(decode::<Lease>(Some(b"not json")), None);
        assert_eq!(decode::<Lease>(None), None);
    }

    #[test]
    fn worker_ids_count_up_from_one() {
        let (first, stored) = next_worker_id(None);
        let (second, _) = next_worker_id(Some(&stored));
        assert_eq!((first, second), (1, 2));
        assert_eq!(next_worker_id(Some(b"junk")).0, 1);
    }

    #[test]
    fn lease_is_taken_only_when_due_and_free() {
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
    }

    #[test]
    fn backoff_doubles_from_one_second_up_to_the_poll_period() {
        let waits: Vec<u64> = (1..=8).map(|f| backoff_secs(f, 30)).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff_secs(u32::MAX, 30), 30, "no overflow");
        assert_eq!(backoff_secs(3, 1), 1);
    }

    #[test]
    fn releasing_the_lease_schedules_the_next_fetch() {
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
    }

    #[test]
    fn key_record_version_changes_only_with_the_keys() {
        let first = next_key_record(None, "a", NOW);
        assert_eq!((first.version, first.fetched_at), (1, NOW));
        let same = next_key_record(Some(&first), "a", NOW + 30);
        assert_eq!(
            (same.version, same.fetched_at),
            (1, NOW + 30),
            "refetching the same keys keeps the version"
        );
        let changed = next_key_record(Some(&same), "b", NOW + 60);
        assert_eq!(changed.version, 2);
        let late = next_key_record(Some(&changed), "b", NOW);
        assert_eq!(
            late.fetched_at,
            NOW + 60,
            "a slow fetch never moves fetched_at back"
        );
    }

    #[test]
    fn keys_go_stale_after_the_limit() {
        let cases = [
            (NOW, NOW, true, "just fetched"),
            (NOW, NOW + 3600, true, "at the limit"),
            (NOW, NOW + 3601, false, "past the limit"),
            (
                NOW + 10,
                NOW,
                true,
                "fetched_at ahead of this worker's clock",
            ),
        ];
        for (fetched_at, now, fresh, reason) in cases {
            assert_eq!(keys_fresh(fetched_at, now, 3600), fresh, "{reason}");
        }
    }

    #[test]
    fn a_worker_reparses_only_when_the_version_changes() {
        let mut tracker = KeyTracker::default();
        let v1 = next_key_record(None, "a", NOW);
        assert!(tracker.needs_parse(&v1));
        assert!(!tracker.needs_parse(&next_key_record(Some(&v1), "a", NOW + 30)));
        assert!(tracker.needs_parse(&next_key_record(Some(&v1), "b", NOW + 30)));
        assert_eq!(tracker.version(), Some(2));
    }

    #[test]
    fn shared_key_names_depend_on_the_source() {
        let a = SharedKeys::for_source("auth_internal", "/internal/keys");
        let b = SharedKeys::for_source("other", "/internal/keys");
        assert_ne!(a, b);
        assert_ne!(a.keys, a.lease);
    }
}
