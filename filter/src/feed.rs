//! Following auth-api's revocation feed: which page to ask for next, when, and what an answer
//! does to the worker's [`Revocations`]. Pure: the host ([`crate::host`]) sends the requests
//! this asks for and hands back the answers.
//!
//! The feed is a cursor: the first request (no `after`) starts a full sync, and every answer
//! names the `seq` to send next, so that once in sync a worker fetches only what was revoked
//! since its last poll, however many entries are live. A full sync (at the start, or when
//! auth-api's `epoch` changes because its database was replaced) is built aside and put in
//! force only once complete; until the first one completes, and whenever the worker has not
//! caught up with the feed for `stale_after_seconds`, there is no usable set and protected
//! routes answer 503 (fail closed). A page that cannot be read (bad status, over the size
//! limit, not the contract) is a failed fetch: it is retried with backoff and never applied in
//! part.
//!
//! Every worker follows the feed on its own, rather than sharing one copy through Envoy's
//! shared data as the key set is: a copy of a million entries would have to be re-read by
//! every worker on every change, where a worker's own poll at its cursor is one small answer.

use std::cell::RefCell;
use std::rc::Rc;

use crate::config::RemoteRevocations;
use crate::poll::{backoff_secs, is_fresh, Timing};
use crate::revocations::{Page, Revocations};

/// How the feed is polled: every `poll_seconds` once caught up, the next page at once while
/// behind, and no usable set after `stale_after_seconds` without catching up.
pub(crate) fn timing(remote: &RemoteRevocations) -> Timing {
    Timing {
        poll_seconds: remote.source.poll_seconds,
        timeout_ms: remote.source.timeout_ms,
        stale_after_seconds: Some(remote.stale_after_seconds),
    }
}

/// How often dead entries are swept out of the set, in seconds.
const EXPIRE_EVERY_SECS: u64 = 60;

/// Seconds past its timeout after which a call that never answered is given up.
const LOST_CALL_GRACE_SECS: u64 = 5;

/// Where the next request starts.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Cursor {
    /// Nothing held: ask for a full sync.
    Start,
    /// After `seq` (whose entry auth-api tagged `tag`) of the feed numbered `epoch`.
    At {
        epoch: String,
        seq: u64,
        tag: String,
    },
}

/// A request in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
struct InFlight {
    token: u32,
    sent_at: u64,
    /// The cursor it was sent from.
    cursor: Cursor,
}

/// What a finished fetch did, for the counters and the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A page was applied; `caught_up` when it was the last one waiting.
    Applied {
        /// The page completed a full sync, which is now in force.
        swapped: bool,
        /// The worker holds everything the feed had when it answered.
        caught_up: bool,
        /// Entries the page carried.
        entries: usize,
        /// Sessions and users now in force.
        held: (usize, usize),
    },
    /// The fetch failed and nothing changed; says why.
    Failed(String),
}

/// One worker's view of the revocation feed.
#[derive(Debug)]
pub(crate) struct FeedSync {
    timing: Timing,
    skew_secs: u64,
    /// The set in force, once a full sync has completed. Requests borrow it while deciding;
    /// the worker is single-threaded, so an answer is never applied during a request.
    live: Option<Rc<RefCell<Revocations>>>,
    /// A full sync in progress, kept apart from `live` until complete.
    building: Option<Revocations>,
    cursor: Cursor,
    /// When the worker last held everything the feed had.
    caught_up_at: Option<u64>,
    in_flight: Option<InFlight>,
    failures: u32,
    next_fetch_at: u64,
    expired_at: u64,
}

impl FeedSync {
    /// A worker that holds nothing yet; `skew_secs` is the configured clock skew.
    pub(crate) fn new(timing: Timing, skew_secs: u64) -> Self {
        Self {
            timing,
            skew_secs,
            live: None,
            building: None,
            cursor: Cursor::Start,
            caught_up_at: None,
            in_flight: None,
            failures: 0,
            next_fetch_at: 0,
            expired_at: 0,
        }
    }

    /// The set a request may use at `now`: none before the first full sync, or once the worker
    /// has not caught up with the feed for longer than `stale_after_seconds`.
    pub(crate) fn usable(&self, now: u64) -> Option<Rc<RefCell<Revocations>>> {
        let caught_up_at = self.caught_up_at?;
        is_fresh(caught_up_at, now, self.timing.stale_after_seconds)
            .then(|| self.live.clone())
            .flatten()
    }

    /// The query to send at `now` (appended to the configured path), if a fetch is due.
    pub(crate) fn start(&mut self, now: u64) -> Option<String> {
        if let Some(in_flight) = &self.in_flight {
            let give_up_at = in_flight
                .sent_at
                .saturating_add(self.timing.timeout_ms / 1000 + LOST_CALL_GRACE_SECS);
            if now < give_up_at {
                return None;
            }
            // Envoy answers every call, if only with its timeout; this guards the worker
            // against one that never does, which would otherwise stop its polling for good.
            self.in_flight = None;
        }
        if now < self.next_fetch_at {
            return None;
        }
        Some(match &self.cursor {
            Cursor::Start => String::new(),
            // Both were checked to be URL-safe when the page was read.
            Cursor::At { epoch, seq, tag } => format!("after={seq}&epoch={epoch}&tag={tag}"),
        })
    }

    /// Records that the request [`start`](Self::start) asked for went out as call `token`.
    pub(crate) fn sent(&mut self, token: u32, now: u64) {
        self.in_flight = Some(InFlight {
            token,
            sent_at: now,
            cursor: self.cursor.clone(),
        });
    }

    /// Whether call `token` is this feed's request in flight.
    pub(crate) fn owns(&self, token: u32) -> bool {
        self.in_flight.as_ref().is_some_and(|f| f.token == token)
    }

    /// Handles the answer to the request in flight (or the failure to send one): `status` and
    /// `body` as received, `body` read only when within [`MAX_PAGE_BYTES`].
    pub(crate) fn finish(&mut self, now: u64, answer: Result<(&str, &[u8]), String>) -> Outcome {
        let sent_from = self.in_flight.take().map(|f| f.cursor);
        let page = answer.and_then(|(status, body)| {
            if status != "200" {
                return Err(format!("status {status} ({} bytes)", body.len()));
            }
            Page::parse(body)
        });
        let outcome = page
            .and_then(|page| self.apply(now, sent_from.as_ref(), &page))
            .unwrap_or_else(Outcome::Failed);
        match &outcome {
            Outcome::Applied { caught_up, .. } => {
                self.failures = 0;
                // The next page at once; a poll period after catching up.
                self.next_fetch_at = if *caught_up {
                    now.saturating_add(self.timing.poll_seconds)
                } else {
                    now
                };
            }
            Outcome::Failed(_) => {
                self.failures = self.failures.saturating_add(1);
                self.next_fetch_at =
                    now.saturating_add(backoff_secs(self.failures, self.timing.poll_seconds));
            }
        }
        outcome
    }

    /// Applies one parsed page sent from `sent_from`.
    fn apply(
        &mut self,
        now: u64,
        sent_from: Option<&Cursor>,
        page: &Page,
    ) -> Result<Outcome, String> {
        if page.full {
            // A new full sync replaces any one in progress.
            self.building = Some(Revocations::default());
        } else {
            let continues = matches!(
                sent_from,
                Some(Cursor::At { epoch, seq, .. }) if *epoch == page.epoch && page.seq >= *seq
            );
            if !continues || (self.building.is_none() && self.live.is_none()) {
                // Nothing to add it to: start over rather than hold a set with a gap.
                self.cursor = Cursor::Start;
                self.building = None;
                return Err(format!(
                    "an incremental page (epoch {}, seq {}) that does not follow this worker's cursor",
                    page.epoch, page.seq
                ));
            }
        }
        if let Some(building) = &mut self.building {
            building.apply(page);
        } else if let Some(live) = &self.live {
            live.try_borrow_mut()
                .map_err(|_| "the set is in use".to_owned())?
                .apply(page);
        }
        self.cursor = Cursor::At {
            epoch: page.epoch.clone(),
            seq: page.seq,
            tag: page.tag.clone(),
        };
        let caught_up = !page.more;
        let mut swapped = false;
        if caught_up {
            if let Some(complete) = self.building.take() {
                self.live = Some(Rc::new(RefCell::new(complete)));
                swapped = true;
            }
            self.caught_up_at = Some(now);
        }
        let held = self.sweep(now);
        Ok(Outcome::Applied {
            swapped,
            caught_up,
            entries: page.sessions.len() + page.users.len(),
            held,
        })
    }

    /// Forgets dead entries at most once a minute; returns what is held.
    fn sweep(&mut self, now: u64) -> (usize, usize) {
        let Some(live) = &self.live else {
            return (0, 0);
        };
        let Ok(mut set) = live.try_borrow_mut() else {
            return (0, 0);
        };
        if now >= self.expired_at.saturating_add(EXPIRE_EVERY_SECS) {
            set.expire(now, self.skew_secs);
            self.expired_at = now;
        }
        set.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocations::{IdClaim, TokenIds, MAX_PAGE_BYTES};

    const NOW: u64 = 1_700_000_000;

    fn timing(stale_after_seconds: Option<u64>) -> Timing {
        Timing {
            poll_seconds: 2,
            timeout_ms: 2000,
            stale_after_seconds,
        }
    }

    fn page(epoch: &str, full: bool, seq: u64, more: bool, sids: &[&str]) -> String {
        let sessions: Vec<String> = sids
            .iter()
            .map(|sid| format!(r#"{{"sid":"{sid}","until":{}}}"#, NOW + 900))
            .collect();
        format!(
            r#"{{"epoch":"{epoch}","full":{full},"tag":"{seq:016x}","seq":{seq},"more":{more},"sessions":[{}],"users":[]}}"#,
            sessions.join(",")
        )
    }

    /// Runs one fetch at `now` answered with `status` and `body`; the query it sent.
    fn fetch(sync: &mut FeedSync, now: u64, status: &str, body: &str) -> Option<(String, Outcome)> {
        let query = sync.start(now)?;
        sync.sent(7, now);
        assert!(sync.owns(7));
        Some((query, sync.finish(now, Ok((status, body.as_bytes())))))
    }

    fn revoked(sync: &FeedSync, now: u64, sid: &str) -> Option<bool> {
        let set = sync.usable(now)?;
        let set = set.borrow();
        let ids = TokenIds {
            sid: IdClaim::Text(sid),
            ..TokenIds::default()
        };
        Some(set.revokes(&ids, now, 60))
    }

    #[test]
    fn a_full_sync_in_pages_is_used_only_once_complete_then_polls_from_its_cursor(
    ) -> crate::TestResult {
        let mut sync = FeedSync::new(timing(None), 60);
        let (query, outcome) = fetch(
            &mut sync,
            NOW,
            "200",
            &page("e1", true, 2, true, &["a", "b"]),
        )
        .ok_or("due")?;
        assert_eq!(query, "", "the first request asks for everything");
        assert!(matches!(
            outcome,
            Outcome::Applied {
                caught_up: false,
                swapped: false,
                ..
            }
        ));
        assert_eq!(revoked(&sync, NOW, "a"), None, "half a sync is not usable");

        let (query, outcome) = fetch(&mut sync, NOW, "200", &page("e1", false, 3, false, &["c"]))
            .ok_or("next page at once")?;
        assert_eq!(query, "after=2&epoch=e1&tag=0000000000000002");
        assert_eq!(
            outcome,
            Outcome::Applied {
                swapped: true,
                caught_up: true,
                entries: 1,
                held: (3, 0)
            }
        );
        for sid in ["a", "b", "c"] {
            assert_eq!(revoked(&sync, NOW, sid), Some(true), "{sid}");
        }
        assert_eq!(revoked(&sync, NOW, "d"), Some(false));

        assert!(
            sync.start(NOW + 1).is_none(),
            "caught up: next poll a period later"
        );
        let (query, _) = fetch(
            &mut sync,
            NOW + 2,
            "200",
            &page("e1", false, 4, false, &["d"]),
        )
        .ok_or("due")?;
        assert_eq!(query, "after=3&epoch=e1&tag=0000000000000003");
        assert_eq!(
            revoked(&sync, NOW + 2, "d"),
            Some(true),
            "a delta lands in the live set"
        );
        Ok(())
    }

    #[test]
    fn a_new_epoch_is_built_aside_and_replaces_the_old_set_when_complete() -> crate::TestResult {
        let mut sync = FeedSync::new(timing(None), 60);
        fetch(&mut sync, NOW, "200", &page("e1", true, 5, false, &["old"])).ok_or("due")?;
        let (query, _) = fetch(
            &mut sync,
            NOW + 2,
            "200",
            &page("e2", true, 1, true, &["new"]),
        )
        .ok_or("due")?;
        assert_eq!(query, "after=5&epoch=e1&tag=0000000000000005");
        assert_eq!(
            revoked(&sync, NOW + 2, "old"),
            Some(true),
            "old set in force meanwhile"
        );
        assert_eq!(revoked(&sync, NOW + 2, "new"), Some(false));
        let (query, _) =
            fetch(&mut sync, NOW + 2, "200", &page("e2", false, 1, false, &[])).ok_or("due")?;
        assert_eq!(query, "after=1&epoch=e2&tag=0000000000000001");
        assert_eq!(revoked(&sync, NOW + 2, "old"), Some(false), "replaced");
        assert_eq!(revoked(&sync, NOW + 2, "new"), Some(true));
        Ok(())
    }

    #[test]
    fn a_bad_page_changes_nothing_and_the_set_fails_closed_after_the_stale_limit(
    ) -> crate::TestResult {
        let mut sync = FeedSync::new(timing(Some(30)), 60);
        fetch(&mut sync, NOW, "200", &page("e1", true, 1, false, &["a"])).ok_or("due")?;
        let bad = [
            (
                "200",
                r#"{"epoch":"e1","full":false,"tag":"0000000000000002","seq":2,"more":false,"sessions":[{"sid":1}]"#,
            ),
            ("500", "{}"),
            ("200", "not json"),
        ];
        let mut now = NOW + 2;
        for (status, body) in bad {
            let (query, outcome) =
                fetch(&mut sync, now, status, body).ok_or("due after backoff")?;
            assert_eq!(
                query, "after=1&epoch=e1&tag=0000000000000001",
                "the cursor never moves on a failure"
            );
            assert!(matches!(outcome, Outcome::Failed(_)), "{body}");
            now += 8;
        }
        assert_eq!(
            revoked(&sync, NOW + 30, "a"),
            Some(true),
            "in force up to the limit"
        );
        assert_eq!(revoked(&sync, NOW + 31, "a"), None, "stale: fail closed");
        let oversized = vec![b' '; MAX_PAGE_BYTES + 1];
        assert!(sync.start(now).is_some());
        sync.sent(8, now);
        assert!(
            matches!(sync.finish(now, Ok(("200", &oversized))), Outcome::Failed(w) if w.contains("limit"))
        );
        let (_, outcome) =
            fetch(&mut sync, now + 8, "200", &page("e1", false, 2, false, &[])).ok_or("due")?;
        assert!(matches!(
            outcome,
            Outcome::Applied {
                caught_up: true,
                ..
            }
        ));
        assert_eq!(
            revoked(&sync, now + 8, "a"),
            Some(true),
            "fresh again once caught up"
        );
        Ok(())
    }

    #[test]
    fn failures_back_off_and_a_lost_call_is_given_up() -> crate::TestResult {
        let mut sync = FeedSync::new(timing(None), 60);
        assert!(sync.start(NOW).is_some());
        sync.sent(1, NOW);
        assert!(sync.start(NOW + 6).is_none(), "in flight");
        assert!(!sync.owns(2));
        assert!(
            sync.start(NOW + 7).is_some(),
            "given up after timeout plus grace"
        );
        let outcome = sync.finish(NOW + 7, Err("cannot call".to_owned()));
        assert!(matches!(outcome, Outcome::Failed(_)));
        assert!(sync.start(NOW + 7).is_none(), "backing off");
        assert!(sync.start(NOW + 8).is_some());
        Ok(())
    }

    #[test]
    fn an_incremental_page_off_the_cursor_restarts_the_sync() -> crate::TestResult {
        let mut sync = FeedSync::new(timing(None), 60);
        let (_, outcome) =
            fetch(&mut sync, NOW, "200", &page("e1", false, 9, false, &["a"])).ok_or("due")?;
        assert!(matches!(outcome, Outcome::Failed(_)), "no base to add to");
        fetch(
            &mut sync,
            NOW + 1,
            "200",
            &page("e1", true, 3, false, &["a"]),
        )
        .ok_or("due")?;
        let (_, outcome) = fetch(
            &mut sync,
            NOW + 3,
            "200",
            &page("e9", false, 4, false, &["b"]),
        )
        .ok_or("due")?;
        assert!(
            matches!(outcome, Outcome::Failed(_)),
            "another epoch, not marked full"
        );
        let (query, _) = fetch(
            &mut sync,
            NOW + 4,
            "200",
            &page("e1", true, 4, false, &["a"]),
        )
        .ok_or("due")?;
        assert_eq!(query, "", "starts over");
        assert_eq!(
            revoked(&sync, NOW + 4, "a"),
            Some(true),
            "old set stayed in force"
        );
        Ok(())
    }
}
