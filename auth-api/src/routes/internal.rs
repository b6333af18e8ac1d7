//! The internal listener: the verification keys and the revocation feed that the gateway
//! polls, behind `AUTH_INTERNAL_TOKEN`.

use auth_jwt::{Jwk, JwkSet};
use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, RawQuery, Request, State},
    http::HeaderMap,
    middleware::Next,
    response::Response,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::{
    error::{ApiError, Result},
    extract::bearer_token,
    state::AppState,
    store::{FeedCursor, RevocationPage},
};

/// `GET /internal/keys`: every published key (pending, active, retired) as a JWK Set for the
/// gateway filter: HS256 keys as `kty: "oct"` with their secret, the others as public JWKs (the
/// same as the public JWKS). An installation moving from HS256 needs both while it migrates.
pub(super) async fn internal_keys(State(state): State<AppState>) -> axum::Json<JwkSet> {
    let now = state.clock.now();
    let snapshot = state.ring.snapshot();
    let keys = snapshot
        .published(now, state.ring.policy())
        .map(|k| Jwk::from_key(&k.key))
        .collect();
    axum::Json(JwkSet { keys })
}

/// The internal listener's door, over the whole router (fallbacks included, so that neither a
/// 404 nor a 405 answers without a token): `/admin/…` needs `AUTH_ADMIN_TOKEN` (or, during a
/// rotation, `AUTH_ADMIN_TOKEN_PREVIOUS`) and is off (404) without one; everything else
/// `AUTH_INTERNAL_TOKEN`, or during a rotation `AUTH_INTERNAL_TOKEN_PREVIOUS`. The internal
/// token, which every gateway holds in its configuration, opens nothing but the keys and the
/// revocation feed.
pub(super) async fn require_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Result<Response> {
    let config = &state.config;
    let path = request.uri().path();
    let door = if path == "/admin" || path.starts_with("/admin/") {
        Door {
            current: config.admin_token.as_ref().ok_or(ApiError::NotFound)?,
            previous: config.admin_token_previous.as_ref(),
            refused: "wrong admin token",
            previous_used: "admin_token_previous_used",
        }
    } else {
        Door {
            current: config
                .internal_token
                .as_ref()
                .ok_or_else(|| ApiError::NotReady("AUTH_INTERNAL_TOKEN is not set".to_owned()))?,
            previous: config.internal_token_previous.as_ref(),
            refused: "wrong internal token",
            previous_used: "internal_token_previous_used",
        }
    };
    let presented = bearer_token(&headers)?.ok_or(ApiError::MissingToken)?;
    match door.open(presented) {
        None => Err(ApiError::InvalidToken(door.refused.to_owned())),
        Some(Opened::ByCurrent) => Ok(next.run(request).await),
        Some(Opened::ByPrevious) => {
            // Who still presents the old token: the rotation is over when these stop.
            let client = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| peer.ip());
            tracing::info!(
                event = door.previous_used,
                client = ?client,
                path = %request.uri().path(),
                "a caller presented the previous token of a rotation"
            );
            Ok(next.run(request).await)
        }
    }
}

/// A bearer token being rotated: the current one, and the one it replaces while callers move.
struct Door<'a> {
    current: &'a SecretString,
    previous: Option<&'a SecretString>,
    /// The 401's description.
    refused: &'static str,
    /// The `event` of the log line when the previous token opened it.
    previous_used: &'static str,
}

/// Which token a caller presented.
enum Opened {
    ByCurrent,
    ByPrevious,
}

impl Door<'_> {
    /// Compares `presented` with both tokens in constant time, both every time, so that the
    /// time does not tell which was close.
    fn open(&self, presented: &str) -> Option<Opened> {
        let matches =
            |token: &SecretString| presented.as_bytes().ct_eq(token.expose_secret().as_bytes());
        let current = matches(self.current);
        let previous = self.previous.map_or(subtle::Choice::from(0), matches);
        if bool::from(current) {
            Some(Opened::ByCurrent)
        } else if bool::from(previous) {
            Some(Opened::ByPrevious)
        } else {
            None
        }
    }
}

/// Entries per answer of the revocation feed: the default and the most of
/// `AUTH_REVOCATION_FEED_PAGE`. Ids are bounded (UUID text), so a full page stays far below the
/// filter's 4 MiB body cap (about 0.6 MiB, see the `revocation_feed` bench).
pub const PAGE: usize = 10_000;

/// One answer of the revocation feed (issue 10, feed v2): the entries numbered after the
/// reader's cursor, oldest first, never merged (a user listed twice is merged by the reader).
#[derive(Debug, Serialize)]
pub(super) struct Feed {
    /// The feed's numbering; changes only when the database is replaced.
    epoch: String,
    /// This answer starts a full sync: the reader drops what it held once `more` is false.
    full: bool,
    /// The cursor to send next as `after`.
    seq: u64,
    /// The tag of the entry at `seq` (16 lowercase hex digits), to send next as `tag`.
    tag: String,
    /// More entries wait past `seq`: fetch again at once.
    more: bool,
    sessions: Vec<SessionEntry>,
    users: Vec<UserEntry>,
}

#[derive(Debug, Serialize)]
struct SessionEntry {
    sid: String,
    until: i64,
}

#[derive(Debug, Serialize)]
struct UserEntry {
    sub: String,
    not_before: i64,
    until: i64,
}

/// The query of `GET /internal/revocations`: `after` (a u64), `epoch` and `tag` (16 lowercase
/// hex digits), all optional; other parameters are ignored.
#[derive(Debug, Default, PartialEq, Eq)]
struct FeedQuery {
    after: Option<u64>,
    epoch: Option<String>,
    tag: Option<u64>,
}

/// A tag on the wire: exactly 16 lowercase hex digits.
fn parse_tag(value: &str) -> Option<u64> {
    let hex = value.len() == 16
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    hex.then(|| u64::from_str_radix(value, 16).ok()).flatten()
}

impl FeedQuery {
    /// 400 `invalid_request` when `after` is not a u64, `tag` is not 16 lowercase hex digits,
    /// or `after`, `epoch` or `tag` is repeated.
    fn parse(query: Option<&str>) -> Result<Self> {
        let mut parsed = Self::default();
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match name.as_ref() {
                "after" if parsed.after.is_some() => {
                    return Err(ApiError::InvalidRequest("after is repeated".to_owned()))
                }
                "after" => {
                    let after = value.parse::<u64>().map_err(|_| {
                        ApiError::InvalidRequest("after must be an unsigned integer".to_owned())
                    })?;
                    parsed.after = Some(after);
                }
                "epoch" if parsed.epoch.is_some() => {
                    return Err(ApiError::InvalidRequest("epoch is repeated".to_owned()))
                }
                "epoch" => parsed.epoch = Some(value.into_owned()),
                "tag" if parsed.tag.is_some() => {
                    return Err(ApiError::InvalidRequest("tag is repeated".to_owned()))
                }
                "tag" => {
                    let tag = parse_tag(&value).ok_or_else(|| {
                        ApiError::InvalidRequest(
                            "tag must be 16 lowercase hexadecimal digits".to_owned(),
                        )
                    })?;
                    parsed.tag = Some(tag);
                }
                _ => {}
            }
        }
        Ok(parsed)
    }
}

/// `GET /internal/revocations?after=<seq>&epoch=<epoch>&tag=<tag>`: the revoked sessions and
/// users numbered after the reader's cursor whose tokens could still be alive, at most
/// `AUTH_REVOCATION_FEED_PAGE` ([`PAGE`] by default) per answer. A token is refused when its
/// `sid` is listed, or its `sub` is listed and its `iat` is before `not_before`. A reader at
/// the head gets an empty page from one indexed query. A cursor whose `tag` is missing or is
/// not the one of the entry at `after` (a restored database) gets a full sync. 400
/// `invalid_request` for an `after` that is not a u64 or a `tag` that is not 16 lowercase hex
/// digits.
pub(super) async fn revocations(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<axum::Json<Feed>> {
    let query = FeedQuery::parse(query.as_deref())?;
    let cursor = FeedCursor {
        after: query.after,
        epoch: query.epoch.as_deref(),
        tag: query.tag,
    };
    let page = state
        .store
        .revocation_page(cursor, state.clock.now(), state.config.revocation_feed_page)
        .await?;
    Ok(axum::Json(feed(page)))
}

/// The answer for one page: its entries split by kind, in feed order.
fn feed(page: RevocationPage) -> Feed {
    let mut sessions = Vec::new();
    let mut users = Vec::new();
    for row in page.entries {
        match (row.kind.as_str(), row.not_before) {
            ("user", Some(not_before)) => users.push(UserEntry {
                sub: row.subject,
                not_before,
                until: row.until,
            }),
            _ => sessions.push(SessionEntry {
                sid: row.subject,
                until: row.until,
            }),
        }
    }
    Feed {
        epoch: page.epoch,
        full: page.full,
        seq: page.seq,
        tag: format!("{:016x}", page.tag),
        more: page.more,
        sessions,
        users,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RevocationRow;

    fn row(seq: i64, kind: &str, subject: &str, not_before: Option<i64>) -> RevocationRow {
        RevocationRow {
            seq,
            kind: kind.to_owned(),
            subject: subject.to_owned(),
            not_before,
            until: 100 + seq,
            tag: seq,
        }
    }

    #[test]
    fn feed_query_reads_after_and_epoch_and_ignores_the_rest() {
        let cases = [
            (None, FeedQuery::default(), "no query"),
            (Some(""), FeedQuery::default(), "empty query"),
            (
                Some("after=42&epoch=ab%20c&x=1&tag=00000000000000ff"),
                FeedQuery {
                    after: Some(42),
                    epoch: Some("ab c".to_owned()),
                    tag: Some(255),
                },
                "all three, percent-decoded, unknown ignored",
            ),
            (
                Some("after=18446744073709551615&tag=ffffffffffffffff"),
                FeedQuery {
                    after: Some(u64::MAX),
                    epoch: None,
                    tag: Some(u64::MAX),
                },
                "the largest u64 and tag",
            ),
        ];
        for (query, expected, reason) in cases {
            assert_eq!(FeedQuery::parse(query).unwrap(), expected, "{reason}");
        }
    }

    #[test]
    fn feed_query_refuses_an_after_that_is_not_a_u64_or_a_tag_that_is_not_16_hex_digits() {
        for (query, reason) in [
            ("after=abc", "not a number"),
            ("after=", "empty"),
            ("after=-1", "negative"),
            ("after=1.5", "not an integer"),
            ("after=18446744073709551616", "past u64"),
            ("after=%FF", "not UTF-8"),
            ("after=1&after=2", "repeated"),
            ("epoch=a&epoch=b", "epoch repeated"),
            ("tag=0123456789abcdef&tag=0123456789abcdef", "tag repeated"),
            ("tag=", "empty tag"),
            ("tag=0123456789abcde", "15 digits"),
            ("tag=0123456789abcdef0", "17 digits"),
            ("tag=0123456789ABCDEF", "upper case"),
            ("tag=0123456789abcdeg", "not hex"),
            ("tag=+123456789abcdef", "a sign"),
            ("tag=%FF", "not UTF-8"),
        ] {
            let err = FeedQuery::parse(Some(query)).unwrap_err();
            assert!(
                matches!(err, ApiError::InvalidRequest(_)),
                "{reason}: {err:?}"
            );
        }
    }

    #[test]
    fn feed_keeps_the_page_order_and_does_not_merge() {
        let feed = feed(RevocationPage {
            epoch: "e".to_owned(),
            full: true,
            seq: 4,
            tag: 0x00ab_0000_0000_0001,
            more: true,
            entries: vec![
                row(1, "user", "u1", Some(10)),
                row(2, "session", "s1", None),
                row(3, "user", "u1", Some(20)),
                row(4, "session", "s0", None),
            ],
        });
        let json = serde_json::to_value(&feed).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "epoch": "e", "full": true, "seq": 4, "tag": "00ab000000000001", "more": true,
                "sessions": [{"sid": "s1", "until": 102}, {"sid": "s0", "until": 104}],
                "users": [
                    {"sub": "u1", "not_before": 10, "until": 101},
                    {"sub": "u1", "not_before": 20, "until": 103}
                ]
            })
        );
    }
}
