//! The revocation feed as a polled [`Document`]: parsing `GET /internal/revocations` and
//! answering "is this verified token revoked?". Polling, sharing between workers and the 304
//! handling are [`crate::poll`]'s; `decide` asks [`Revocations::revokes`] on every request.
//!
//! The feed is `{"version", "sessions": [{"sid", "until"}], "users": [{"sub", "not_before",
//! "until"}]}`. A token is revoked when its `sid` is listed, or its `sub` is listed and its
//! `iat` is before that entry's `not_before`. `until` is when an entry can no longer matter:
//! every token it could refuse has expired by then.

use std::collections::HashMap;

use serde::Deserialize;

use crate::config::{RemoteRevocations, RemoteSource};
use crate::poll::{Document, SharedNames, Timing};

/// Largest feed accepted, in bytes.
pub(crate) const MAX_FEED_BYTES: usize = 4 << 20;

/// A parsed revocation feed, indexed for lookups by `sid` and `sub`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revocations {
    version: String,
    /// `sid` → `until`.
    sessions: HashMap<String, i64>,
    /// `sub` → (`not_before`, `until`).
    users: HashMap<String, (i64, i64)>,
}

/// The feed as sent. Unknown members are ignored, and a member named twice in one object is
/// refused (serde's derive does that for known members).
#[derive(Deserialize)]
struct Feed {
    version: String,
    sessions: Vec<SessionEntry>,
    users: Vec<UserEntry>,
}

#[derive(Deserialize)]
struct SessionEntry {
    sid: String,
    until: i64,
}

#[derive(Deserialize)]
struct UserEntry {
    sub: String,
    not_before: i64,
    until: i64,
}

/// A verified token's claims that revocation looks at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TokenIds<'a> {
    /// `sub`, if it is a string.
    pub sub: Option<&'a str>,
    /// `sid`, if it is a string.
    pub sid: Option<&'a str>,
    /// `iat`, rounded down to whole seconds, if it is a number.
    pub iat: Option<i64>,
}

impl Revocations {
    /// Whether a verified token is revoked at `now`. Entries whose `until` plus `skew_secs`
    /// has passed are ignored: the filter accepts `exp` up to `skew_secs` late, so an entry
    /// keeps applying for that long after `until`. A token without `iat` is refused when its
    /// `sub` is listed, since nothing shows it was issued after `not_before`.
    pub(crate) fn revokes(&self, token: &TokenIds<'_>, now: u64, skew_secs: u64) -> bool {
        let live = |until: i64| i128::from(until) + i128::from(skew_secs) > i128::from(now);
        let session = token
            .sid
            .and_then(|sid| self.sessions.get(sid))
            .is_some_and(|&until| live(until));
        let user =
            token
                .sub
                .and_then(|sub| self.users.get(sub))
                .is_some_and(|&(not_before, until)| {
                    live(until) && token.iat.is_none_or(|iat| iat < not_before)
                });
        session || user
    }
}

impl Document for Revocations {
    const KIND: &'static str = "revocations";
    const MAX_BYTES: usize = MAX_FEED_BYTES;
    type Options = ();

    fn parse(body: &[u8], (): &()) -> Result<Self, String> {
        Self::from_feed(body)
    }

    fn summary(&self) -> String {
        format!(
            "feed version {}: {} sessions, {} users",
            self.version,
            self.sessions.len(),
            self.users.len()
        )
    }
}

impl Revocations {
    /// Parses the feed. An entry listed twice is merged to the latest `not_before` and `until`,
    /// which refuses at least as much as either.
    pub(crate) fn from_feed(body: &[u8]) -> Result<Self, String> {
        let feed: Feed =
            serde_json::from_slice(body).map_err(|e| format!("bad revocation feed: {e}"))?;
        let mut sessions = HashMap::with_capacity(feed.sessions.len());
        for entry in feed.sessions {
            let until = sessions.entry(entry.sid).or_insert(entry.until);
            *until = (*until).max(entry.until);
        }
        let mut users = HashMap::with_capacity(feed.users.len());
        for entry in feed.users {
            let (not_before, until) = users
                .entry(entry.sub)
                .or_insert((entry.not_before, entry.until));
            *not_before = (*not_before).max(entry.not_before);
            *until = (*until).max(entry.until);
        }
        Ok(Self {
            version: feed.version,
            sessions,
            users,
        })
    }
}

/// The shared-data names of the revocation source `remote`.
pub(crate) fn shared_names(remote: &RemoteSource) -> SharedNames {
    SharedNames::new(Revocations::KIND, &remote.cluster, &remote.path)
}

/// How the revocation feed is polled: every `poll_seconds`, and the last good copy never goes
/// stale (revocations issued while the source is unreachable wait for it to come back).
pub(crate) fn timing(remote: &RemoteRevocations) -> Timing {
    Timing {
        poll_seconds: remote.source.poll_seconds,
        timeout_ms: remote.source.timeout_ms,
        stale_after_seconds: remote.stale_after_seconds,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::poll::tests::MockShared;
    use crate::poll::{classify, FetchResult, Fetched, Poller};

    const NOW: u64 = 1_700_000_000;
    const SKEW: u64 = 60;

    /// A feed revoking session `s-revoked` and user `u-revoked`'s tokens issued before NOW.
    pub(crate) fn feed() -> String {
        let until = NOW + 900;
        format!(
            r#"{{"version":"v1","sessions":[{{"sid":"s-revoked","until":{until}}}],
                "users":[{{"sub":"u-revoked","not_before":{NOW},"until":{until}}}]}}"#
        )
    }

    pub(crate) fn parsed() -> crate::TestResult<Revocations> {
        Ok(Revocations::from_feed(feed().as_bytes())?)
    }

    fn ids<'a>(sub: &'a str, sid: &'a str, iat: Option<i64>) -> TokenIds<'a> {
        TokenIds {
            sub: Some(sub),
            sid: Some(sid),
            iat,
        }
    }

    #[test]
    fn a_good_feed_is_parsed_and_unknown_members_ignored() -> crate::TestResult {
        let revocations = Revocations::from_feed(
            br#"{"version":"3f2a","generated_at":1,"sessions":[{"sid":"s1","until":10,"why":"logout"}],
                "users":[{"sub":"u1","not_before":5,"until":10}]}"#,
        )
        ?;
        assert_eq!(revocations.version, "3f2a");
        assert_eq!(
            revocations.summary(),
            "feed version 3f2a: 1 sessions, 1 users"
        );
        let empty = Revocations::from_feed(br#"{"version":"0","sessions":[],"users":[]}"#)?;
        assert_eq!(empty.summary(), "feed version 0: 0 sessions, 0 users");
        Ok(())
    }

    #[test]
    fn malformed_feeds_are_refused() -> crate::TestResult {
        let cases = [
            (r#"{"sessions":[],"users":[]}"#, "no version"),
            (r#"{"version":"1","users":[]}"#, "no sessions"),
            (r#"{"version":"1","sessions":[]}"#, "no users"),
            (
                r#"{"version":"1","version":"2","sessions":[],"users":[]}"#,
                "a member named twice",
            ),
            (
                r#"{"version":"1","sessions":[{"sid":"s","sid":"t","until":1}],"users":[]}"#,
                "an entry member named twice",
            ),
            (
                r#"{"version":"1","sessions":[{"sid":"s"}],"users":[]}"#,
                "a session without until",
            ),
            (
                r#"{"version":"1","sessions":[],"users":[{"sub":"u","until":1}]}"#,
                "a user without not_before",
            ),
            (
                r#"{"version":"1","sessions":[{"sid":1,"until":1}],"users":[]}"#,
                "a numeric sid",
            ),
            (
                r#"{"version":"1","sessions":[],"users":[{"sub":"u","not_before":"x","until":1}]}"#,
                "a string not_before",
            ),
            (
                r#"{"version":"1","sessions":[],"users":[]} x"#,
                "trailing data",
            ),
            (r#"["version"]"#, "not an object"),
            ("", "empty"),
        ];
        for (body, reason) in cases {
            assert!(Revocations::from_feed(body.as_bytes()).is_err(), "{reason}");
        }
        Ok(())
    }

    #[test]
    fn an_entry_listed_twice_refuses_at_least_as_much_as_either() -> crate::TestResult {
        let revocations = Revocations::from_feed(
            br#"{"version":"1","sessions":[{"sid":"s","until":10},{"sid":"s","until":20}],
                "users":[{"sub":"u","not_before":5,"until":30},{"sub":"u","not_before":8,"until":25}]}"#,
        )
        ?;
        assert!(revocations.revokes(&ids("x", "s", Some(0)), 15, 0));
        assert!(revocations.revokes(&ids("u", "x", Some(7)), 28, 0));
        Ok(())
    }

    #[test]
    fn tokens_are_revoked_by_session_or_by_user_before_not_before() -> crate::TestResult {
        let revocations = parsed()?;
        let now_iat = i64::try_from(NOW)?;
        let cases = [
            (
                ids("u1", "s-revoked", Some(now_iat + 5)),
                true,
                "revoked session",
            ),
            (
                ids("u-revoked", "s1", Some(now_iat - 1)),
                true,
                "user token issued before not_before",
            ),
            (
                ids("u-revoked", "s1", Some(now_iat)),
                false,
                "issued at not_before",
            ),
            (
                ids("u-revoked", "s1", Some(now_iat + 1)),
                false,
                "issued after not_before",
            ),
            (
                ids("u-revoked", "s1", None),
                true,
                "listed user without iat: fail closed",
            ),
            (ids("u1", "s1", Some(0)), false, "another user and session"),
            (
                TokenIds {
                    sub: None,
                    sid: None,
                    iat: None,
                },
                false,
                "no identifiers at all",
            ),
        ];
        for (token, revoked, reason) in cases {
            assert_eq!(revocations.revokes(&token, NOW, SKEW), revoked, "{reason}");
        }
        Ok(())
    }

    #[test]
    fn entries_past_until_plus_the_skew_are_ignored() -> crate::TestResult {
        let revocations = parsed()?;
        let session = ids("u1", "s-revoked", Some(0));
        let user = ids("u-revoked", "s1", Some(0));
        let cases = [
            (NOW + 900, true, "at until"),
            (NOW + 900 + SKEW - 1, true, "inside the skew after until"),
            (NOW + 900 + SKEW, false, "until plus the skew has passed"),
        ];
        for (now, revoked, reason) in cases {
            assert_eq!(
                revocations.revokes(&session, now, SKEW),
                revoked,
                "session {reason}"
            );
            assert_eq!(
                revocations.revokes(&user, now, SKEW),
                revoked,
                "user {reason}"
            );
        }
        Ok(())
    }

    #[test]
    fn an_oversized_feed_is_refused_unread() -> crate::TestResult {
        let fetched =
            classify::<Revocations>(Some("200"), None, MAX_FEED_BYTES + 1, None, None, &());
        assert!(matches!(fetched, Fetched::Failed(why) if why.contains("limit")));
        Ok(())
    }

    #[test]
    fn the_feed_is_polled_with_etags_and_a_malformed_answer_keeps_the_old_copy() -> crate::TestResult
    {
        let mut config = crate::config::tests::base();
        config["remote_revocations"] =
            serde_json::json!({"cluster": "auth_internal", "path": "/internal/revocations"});
        let config = crate::config::FilterConfig::parse(config.to_string().as_bytes())?;
        let source = config.remote_revocations.ok_or("no feed configured")?;
        let names = shared_names(&source.source);
        let shared = MockShared::default();
        let mut poller = Poller::<Revocations>::new(names.clone(), 1, timing(&source), ());
        let answer = |p: &mut Poller<Revocations>, now: u64, status: &str, body: &str| {
            let request = p.start(&shared, now)?;
            p.sent(9, request.clone());
            let fetched = p.classify(
                Some(status),
                Some("\"v1\""),
                body.len(),
                Some(body.as_bytes()),
            );
            let result = p.finish(&shared, now, fetched);
            p.refresh(&shared);
            Some((request, result))
        };
        let token = ids("u1", "s-revoked", Some(0));

        let (first, result) = answer(&mut poller, NOW, "200", &feed()).ok_or("a fetch is due")?;
        assert_eq!((first.if_none_match, result), (None, FetchResult::Stored));
        assert!(poller
            .usable(NOW)
            .is_some_and(|feed| feed.revokes(&token, NOW, SKEW)));

        let (second, result) = answer(&mut poller, NOW + 2, "304", "").ok_or("a fetch is due")?;
        assert_eq!(second.if_none_match.as_deref(), Some("\"v1\""));
        assert_eq!(result, FetchResult::NotModified);
        assert_eq!(
            shared.record(&names).map(|(stamp, _)| stamp.fetched_at),
            Some(NOW + 2)
        );

        let (_, result) = answer(
            &mut poller,
            NOW + 4,
            "200",
            r#"{"version":"v2","sessions":"#,
        )
        .ok_or("a fetch is due")?;
        assert!(matches!(result, FetchResult::Failed(_)));
        let kept = poller.usable(NOW + 100_000).ok_or("no staleness limit")?;
        assert_eq!(kept.version, "v1");
        assert!(
            kept.revokes(&token, NOW + 4, SKEW),
            "the old copy still refuses"
        );
        Ok(())
    }

    #[test]
    fn a_stale_limit_for_the_feed_is_optional() -> crate::TestResult {
        let mut config = crate::config::tests::base();
        config["remote_revocations"] =
            serde_json::json!({"cluster": "c", "path": "/r", "stale_after_seconds": 960});
        let config = crate::config::FilterConfig::parse(config.to_string().as_bytes())?;
        assert_eq!(
            config
                .remote_revocations
                .as_ref()
                .map(|r| timing(r).stale_after_seconds),
            Some(Some(960))
        );
        let mut config = crate::config::tests::base();
        config["remote_revocations"] = serde_json::json!({"cluster": "c", "path": "/r"});
        let config = crate::config::FilterConfig::parse(config.to_string().as_bytes())?;
        assert_eq!(
            config
                .remote_revocations
                .as_ref()
                .map(|r| timing(r).stale_after_seconds),
            Some(None)
        );
        Ok(())
    }
}
