//! The revocation set a worker holds, the pages of auth-api's revocation feed that build it,
//! and the answer to "is this verified token revoked?". Fetching and paging are
//! [`crate::feed`]'s; `decide` asks [`Revocations::revokes`] on every request.
//!
//! A page is `{"epoch", "full", "seq", "tag", "more", "sessions": [{"sid", "until"}], "users":
//! [{"sub", "not_before", "until"}]}` (the contract is in auth-api's `routes/internal.rs`). A
//! token is revoked when its `sid` is listed, or its `sub` is listed and its `iat` is before
//! that entry's `not_before`. `until` is when an entry can no longer matter: every token it
//! could refuse has expired by then.
//!
//! Sizes: the feed may list a million live entries, and every worker holds its own copy, so
//! ids are kept as 64-bit hashes rather than strings: about 17 bytes per session and 25 per
//! user in the map, against some 80 for a 36-character id as a `String`. Two ids that share
//! a hash can only make a token wrongly refused (never wrongly accepted), with odds of about
//! one in 2^64 / entries per request.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};

use serde::Deserialize;

/// Largest page accepted, in bytes. auth-api sends at most 10,000 entries per page, well
/// under this with its ids.
pub(crate) const MAX_PAGE_BYTES: usize = 4 << 20;

/// Longest `epoch` accepted; it is sent back in a query string, so it is also restricted to
/// `[A-Za-z0-9_-]`.
const MAX_EPOCH_LEN: usize = 64;

/// Length of a cursor's tag: 64 bits in lowercase hex.
const TAG_LEN: usize = 16;

/// The set's key for an id: SipHash-1-3 with fixed keys. Ids are chosen by auth-api, not by
/// clients, so a fixed key gives an attacker nothing to aim at.
fn key(id: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish()
}

/// The maps' hasher: keys are already uniform hashes, so they are used as they are.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is reached with `u64` keys; this keeps the trait whole.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type IdMap<V> = HashMap<u64, V, BuildHasherDefault<PreHashed>>;

/// The revoked sessions and users a worker knows of.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revocations {
    /// `key(sid)` → `until`.
    sessions: IdMap<i64>,
    /// `key(sub)` → (`not_before`, `until`).
    users: IdMap<(i64, i64)>,
}

/// One of a verified token's identifying claims, as revocation reads it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IdClaim<'a> {
    /// The claim is not in the token.
    #[default]
    Absent,
    /// A string, as auth-api issues it.
    Text(&'a str),
    /// Present but not a string: it cannot be matched against the feed, so a token carrying
    /// one is refused wherever revocations are checked.
    NotText,
}

/// An identifying claim as the token cache keeps it; [`StringClaim::as_id`] lends it to
/// [`Revocations::revokes`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum StringClaim {
    /// Not in the token.
    #[default]
    Absent,
    /// A string.
    Text(String),
    /// Present but not a string.
    NotText,
}

impl StringClaim {
    /// Reads claim `name` of `claims`.
    pub(crate) fn of(claims: &serde_json::Map<String, serde_json::Value>, name: &str) -> Self {
        match claims.get(name) {
            None => Self::Absent,
            Some(serde_json::Value::String(text)) => Self::Text(text.clone()),
            Some(_) => Self::NotText,
        }
    }

    /// The claim as [`TokenIds`] holds it.
    pub(crate) fn as_id(&self) -> IdClaim<'_> {
        match self {
            Self::Absent => IdClaim::Absent,
            Self::Text(text) => IdClaim::Text(text),
            Self::NotText => IdClaim::NotText,
        }
    }
}

/// A verified token's claims that revocation looks at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenIds<'a> {
    /// `sub`.
    pub sub: IdClaim<'a>,
    /// `sid`.
    pub sid: IdClaim<'a>,
    /// `iat`, rounded down to whole seconds, if it is a number.
    pub iat: Option<i64>,
}

impl Revocations {
    /// Whether a verified token is revoked at `now`. Entries whose `until` plus `skew_secs`
    /// has passed are ignored: the filter accepts `exp` up to `skew_secs` late, so an entry
    /// keeps applying for that long after `until` (auth-api keeps serving it for
    /// [`auth_jwt::MAX_CLOCK_SKEW_SECS`], the most any configuration may allow). A token
    /// without `iat` is refused when its `sub` is listed, since nothing shows it was issued
    /// after `not_before`; one whose `sub` or `sid` is not a string is refused outright.
    pub fn revokes(&self, token: &TokenIds<'_>, now: u64, skew_secs: u64) -> bool {
        let live = |until: i64| i128::from(until) + i128::from(skew_secs) > i128::from(now);
        let session = match token.sid {
            IdClaim::Absent => false,
            IdClaim::NotText => return true,
            IdClaim::Text(sid) => self.sessions.get(&key(sid)).is_some_and(|&u| live(u)),
        };
        let user = match token.sub {
            IdClaim::Absent => false,
            IdClaim::NotText => return true,
            IdClaim::Text(sub) => self
                .users
                .get(&key(sub))
                .is_some_and(|&(not_before, until)| {
                    live(until) && token.iat.is_none_or(|iat| iat < not_before)
                }),
        };
        session || user
    }

    /// Adds a page's entries. An entry listed twice is merged to the latest `not_before` and
    /// `until`, which refuses at least as much as either.
    pub fn apply(&mut self, page: &Page) {
        self.sessions.reserve(page.sessions.len());
        for &(sid, until) in &page.sessions {
            let entry = self.sessions.entry(sid).or_insert(until);
            *entry = (*entry).max(until);
        }
        self.users.reserve(page.users.len());
        for &(sub, not_before, until) in &page.users {
            let entry = self.users.entry(sub).or_insert((not_before, until));
            *entry = (entry.0.max(not_before), entry.1.max(until));
        }
    }

    /// Forgets the entries that can no longer refuse anything at `now`.
    pub(crate) fn expire(&mut self, now: u64, skew_secs: u64) {
        let live = |until: i64| i128::from(until) + i128::from(skew_secs) > i128::from(now);
        self.sessions.retain(|_, until| live(*until));
        self.users.retain(|_, (_, until)| live(*until));
    }

    /// How many sessions and users are listed.
    pub fn len(&self) -> (usize, usize) {
        (self.sessions.len(), self.users.len())
    }
}

/// The heap bytes of `map`'s table: hashbrown keeps a power of two of buckets, at most 7/8
/// full, each an entry plus a control byte.
pub fn map_heap_bytes<K, V, S>(map: &HashMap<K, V, S>) -> usize {
    if map.capacity() == 0 {
        return 0;
    }
    let buckets = (map.capacity() * 8 / 7).next_power_of_two();
    buckets * (std::mem::size_of::<(K, V)>() + 1)
}

impl Revocations {
    /// The heap bytes the set holds.
    pub fn heap_bytes(&self) -> usize {
        map_heap_bytes(&self.sessions) + map_heap_bytes(&self.users)
    }
}

/// One page of the feed, its ids already hashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// The feed's numbering; a new one means a new database.
    pub epoch: String,
    /// This page starts a full sync: what the worker held must be replaced.
    pub full: bool,
    /// The cursor to send next.
    pub seq: u64,
    /// The tag of the entry at `seq`, sent back with it so that auth-api can tell a cursor
    /// into another history (a restored database) from one into its own.
    pub tag: String,
    /// More entries wait past `seq`.
    pub more: bool,
    /// (`key(sid)`, `until`).
    pub sessions: Vec<(u64, i64)>,
    /// (`key(sub)`, `not_before`, `until`).
    pub users: Vec<(u64, i64, i64)>,
}

/// The page as sent. Unknown members are ignored, and a member named twice in one object is
/// refused (serde's derive does that for known members). Ids are borrowed from the body when
/// they hold no escapes, so a page of 10,000 entries makes no per-entry allocation.
#[derive(Deserialize)]
struct WirePage<'a> {
    #[serde(borrow)]
    epoch: Cow<'a, str>,
    full: bool,
    seq: u64,
    #[serde(borrow)]
    tag: Cow<'a, str>,
    more: bool,
    #[serde(borrow)]
    sessions: Vec<SessionEntry<'a>>,
    #[serde(borrow)]
    users: Vec<UserEntry<'a>>,
}

#[derive(Deserialize)]
struct SessionEntry<'a> {
    #[serde(borrow)]
    sid: Cow<'a, str>,
    until: i64,
}

#[derive(Deserialize)]
struct UserEntry<'a> {
    #[serde(borrow)]
    sub: Cow<'a, str>,
    not_before: i64,
    until: i64,
}

impl Page {
    /// Parses one page of the feed.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        if body.len() > MAX_PAGE_BYTES {
            return Err(format!("the page is over the {MAX_PAGE_BYTES} byte limit"));
        }
        let wire: WirePage<'_> =
            serde_json::from_slice(body).map_err(|e| format!("bad revocation feed page: {e}"))?;
        let epoch_ok = !wire.epoch.is_empty()
            && wire.epoch.len() <= MAX_EPOCH_LEN
            && wire
                .epoch
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !epoch_ok {
            return Err(
                "bad revocation feed page: the epoch is not 1 to 64 of [A-Za-z0-9_-]".into(),
            );
        }
        let tag_ok = wire.tag.len() == TAG_LEN
            && wire
                .tag
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !tag_ok {
            return Err("bad revocation feed page: the tag is not 16 lowercase hex digits".into());
        }
        Ok(Self {
            epoch: wire.epoch.into_owned(),
            full: wire.full,
            seq: wire.seq,
            tag: wire.tag.into_owned(),
            more: wire.more,
            sessions: wire
                .sessions
                .iter()
                .map(|s| (key(&s.sid), s.until))
                .collect(),
            users: wire
                .users
                .iter()
                .map(|u| (key(&u.sub), u.not_before, u.until))
                .collect(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;
    const SKEW: u64 = 60;

    /// A full page revoking session `s-revoked` and user `u-revoked`'s tokens issued before NOW.
    pub(crate) fn page() -> String {
        let until = NOW + 900;
        format!(
            r#"{{"epoch":"e1","full":true,"tag":"00000000000000aa","seq":2,"more":false,
                "sessions":[{{"sid":"s-revoked","until":{until}}}],
                "users":[{{"sub":"u-revoked","not_before":{NOW},"until":{until}}}]}}"#
        )
    }

    /// The set one page builds.
    pub(crate) fn from_page(body: &str) -> crate::TestResult<Revocations> {
        let mut set = Revocations::default();
        set.apply(&Page::parse(body.as_bytes())?);
        Ok(set)
    }

    /// The set [`page`] builds.
    pub(crate) fn parsed() -> crate::TestResult<Revocations> {
        from_page(&page())
    }

    fn ids<'a>(sub: &'a str, sid: &'a str, iat: Option<i64>) -> TokenIds<'a> {
        TokenIds {
            sub: IdClaim::Text(sub),
            sid: IdClaim::Text(sid),
            iat,
        }
    }

    #[test]
    fn a_good_page_is_parsed_and_unknown_members_ignored() -> crate::TestResult {
        let page = Page::parse(
            br#"{"epoch":"3f2a","full":false,"tag":"00000000000000aa","seq":7,"more":true,"generated_at":1,
                "sessions":[{"sid":"s1","until":10,"why":"logout"}],
                "users":[{"sub":"u1","not_before":5,"until":10}]}"#,
        )?;
        assert_eq!(
            (page.epoch.as_str(), page.full, page.seq, page.more),
            ("3f2a", false, 7, true)
        );
        assert_eq!(page.sessions, vec![(key("s1"), 10)]);
        assert_eq!(page.users, vec![(key("u1"), 5, 10)]);
        let escaped = Page::parse(
            br#"{"epoch":"e","full":true,"tag":"00000000000000aa","seq":0,"more":false,
                "sessions":[{"sid":"s\u0031","until":10}],"users":[]}"#,
        )?;
        assert_eq!(
            escaped.sessions,
            vec![(key("s1"), 10)],
            "escapes are decoded"
        );
        Ok(())
    }

    #[test]
    fn malformed_pages_are_refused() {
        let good = |sessions: &str, users: &str| {
            format!(
                r#"{{"epoch":"e","full":true,"tag":"00000000000000aa","seq":1,"more":false,"sessions":{sessions},"users":{users}}}"#
            )
        };
        let cases = [
            (r#"{"full":true,"tag":"00000000000000aa","seq":1,"more":false,"sessions":[],"users":[]}"#.to_owned(), "no epoch"),
            (r#"{"epoch":"e","tag":"00000000000000aa","seq":1,"more":false,"sessions":[],"users":[]}"#.to_owned(), "no full"),
            (r#"{"epoch":"e","full":true,"more":false,"sessions":[],"users":[]}"#.to_owned(), "no seq"),
            (r#"{"epoch":"e","full":true,"tag":"00000000000000aa","seq":1,"sessions":[],"users":[]}"#.to_owned(), "no more"),
            (r#"{"epoch":"e","full":true,"tag":"00000000000000aa","seq":1,"more":false,"users":[]}"#.to_owned(), "no sessions"),
            (r#"{"epoch":"e","full":true,"tag":"00000000000000aa","seq":1,"more":false,"sessions":[]}"#.to_owned(), "no users"),
            (r#"{"epoch":"e","epoch":"f","full":true,"tag":"00000000000000aa","seq":1,"more":false,"sessions":[],"users":[]}"#.to_owned(), "a member named twice"),
            (r#"{"epoch":"","full":true,"tag":"00000000000000aa","seq":1,"more":false,"sessions":[],"users":[]}"#.to_owned(), "an empty epoch"),
            (r#"{"epoch":"a&after=0","full":true,"tag":"00000000000000aa","seq":1,"more":false,"sessions":[],"users":[]}"#.to_owned(), "an epoch that is not URL-safe"),
            (format!(r#"{{"epoch":"{}","full":true,"tag":"00000000000000aa","seq":1,"more":false,"sessions":[],"users":[]}}"#, "e".repeat(65)), "a long epoch"),
            (r#"{"epoch":"e","full":true,"tag":"00000000000000aa","seq":-1,"more":false,"sessions":[],"users":[]}"#.to_owned(), "a negative seq"),
            (good(r#"[{"sid":"s","sid":"t","until":1}]"#, "[]"), "an entry member named twice"),
            (good(r#"[{"sid":"s"}]"#, "[]"), "a session without until"),
            (good("[]", r#"[{"sub":"u","until":1}]"#), "a user without not_before"),
            (good(r#"[{"sid":1,"until":1}]"#, "[]"), "a numeric sid"),
            (good("[]", r#"[{"sub":"u","not_before":"x","until":1}]"#), "a string not_before"),
            (good("[]", "[]") + " x", "trailing data"),
            (good("[]", "[]").replace(r#""tag":"00000000000000aa","#, ""), "no tag"),
            (good("[]", "[]").replace("00000000000000aa", "00000000000000AA"), "an uppercase tag"),
            (good("[]", "[]").replace("00000000000000aa", "00aa"), "a short tag"),
            (good("[]", "[]").replace("00000000000000aa", "00000000000000a&"), "a tag that is not hex"),
            (r#"["epoch"]"#.to_owned(), "not an object"),
            (String::new(), "empty"),
        ];
        for (body, reason) in cases {
            assert!(Page::parse(body.as_bytes()).is_err(), "{reason}");
        }
    }

    #[test]
    fn an_oversized_page_is_refused_unparsed() {
        let body = vec![b' '; MAX_PAGE_BYTES + 1];
        assert!(Page::parse(&body).is_err_and(|why| why.contains("limit")));
    }

    #[test]
    fn an_entry_listed_twice_refuses_at_least_as_much_as_either() -> crate::TestResult {
        let mut set = Revocations::default();
        set.apply(&Page::parse(
            br#"{"epoch":"e","full":true,"tag":"00000000000000aa","seq":1,"more":true,
                "sessions":[{"sid":"s","until":10},{"sid":"s","until":20}],
                "users":[{"sub":"u","not_before":5,"until":30}]}"#,
        )?);
        set.apply(&Page::parse(
            br#"{"epoch":"e","full":false,"tag":"00000000000000aa","seq":2,"more":false,"sessions":[],
                "users":[{"sub":"u","not_before":8,"until":25}]}"#,
        )?);
        assert!(set.revokes(&ids("x", "s", Some(0)), 15, 0));
        assert!(set.revokes(&ids("u", "x", Some(7)), 28, 0));
        assert_eq!(set.len(), (1, 1));
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
            (TokenIds::default(), false, "no identifiers at all"),
            (
                TokenIds {
                    sid: IdClaim::NotText,
                    ..ids("u1", "s1", Some(0))
                },
                true,
                "a sid that is not a string",
            ),
            (
                TokenIds {
                    sub: IdClaim::NotText,
                    ..ids("u1", "s1", Some(0))
                },
                true,
                "a sub that is not a string",
            ),
        ];
        for (token, revoked, reason) in cases {
            assert_eq!(revocations.revokes(&token, NOW, SKEW), revoked, "{reason}");
        }
        Ok(())
    }

    #[test]
    fn entries_past_until_plus_the_skew_are_ignored_then_forgotten() -> crate::TestResult {
        let mut revocations = parsed()?;
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
        revocations.expire(NOW + 900 + SKEW - 1, SKEW);
        assert_eq!(revocations.len(), (1, 1), "still live: kept");
        revocations.expire(NOW + 900 + SKEW, SKEW);
        assert_eq!(revocations.len(), (0, 0), "dead: forgotten");
        Ok(())
    }

    #[test]
    fn distinct_ids_get_distinct_keys() {
        let keys: std::collections::HashSet<u64> =
            (0..100_000).map(|i| key(&format!("session-{i}"))).collect();
        assert_eq!(keys.len(), 100_000);
        assert_ne!(key("a"), key("b"));
        assert_eq!(key("same"), key("same"));
    }
}
