//! The internal listener: the verification keys and the revocation feed that the gateway
//! polls, behind `AUTH_INTERNAL_TOKEN`.

use std::collections::BTreeMap;

use auth_jwt::{Jwk, JwkSet};
use axum::{
    extract::{Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use secrecy::ExposeSecret;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{
    error::{ApiError, Result},
    extract::bearer_token,
    state::AppState,
    store::RevocationRow,
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

/// Lets a request through only with `Authorization: Bearer <AUTH_INTERNAL_TOKEN>`, compared in
/// constant time.
pub(super) async fn require_internal_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Result<Response> {
    let expected = state
        .config
        .internal_token
        .as_ref()
        .ok_or_else(|| ApiError::NotReady("AUTH_INTERNAL_TOKEN is not set".to_owned()))?;
    let presented = bearer_token(&headers)?.ok_or(ApiError::MissingToken)?;
    if bool::from(
        presented
            .as_bytes()
            .ct_eq(expected.expose_secret().as_bytes()),
    ) {
        Ok(next.run(request).await)
    } else {
        Err(ApiError::InvalidToken("wrong internal token".to_owned()))
    }
}

/// The revocation feed as the gateway reads it.
#[derive(Debug, Serialize)]
struct Feed {
    /// Changes whenever the content does; also the `ETag`.
    version: String,
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

/// `GET /internal/revocations`: every revoked session and user whose tokens could still be
/// alive. A token is refused when its `sid` is listed, or its `sub` is listed and its `iat` is
/// before `not_before`. With `If-None-Match` of the current `ETag`: 304 and no body, so an
/// unchanged feed costs one indexed query and a hash.
pub(super) async fn revocations(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response> {
    let rows = state.store.revocations(state.clock.now()).await?;
    let feed = feed(rows);
    let etag = format!("\"{}\"", feed.version);
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        axum::Json(feed).into_response()
    };
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    Ok(response)
}

/// Merges the rows (a user may have several entries: keep the latest `not_before` and `until`)
/// into a canonical, sorted feed, and versions it by its content.
fn feed(rows: Vec<RevocationRow>) -> Feed {
    let mut sessions = BTreeMap::<String, i64>::new();
    let mut users = BTreeMap::<String, (i64, i64)>::new();
    for row in rows {
        match (row.kind.as_str(), row.not_before) {
            ("user", Some(not_before)) => {
                let entry = users.entry(row.subject).or_insert((not_before, row.until));
                *entry = (entry.0.max(not_before), entry.1.max(row.until));
            }
            _ => {
                let until = sessions.entry(row.subject).or_insert(row.until);
                *until = (*until).max(row.until);
            }
        }
    }
    let sessions: Vec<_> = sessions
        .into_iter()
        .map(|(sid, until)| SessionEntry { sid, until })
        .collect();
    let users: Vec<_> = users
        .into_iter()
        .map(|(sub, (not_before, until))| UserEntry {
            sub,
            not_before,
            until,
        })
        .collect();
    let mut hasher = Sha256::new();
    for s in &sessions {
        hasher.update(format!("s\0{}\0{}\n", s.sid, s.until));
    }
    for u in &users {
        hasher.update(format!("u\0{}\0{}\0{}\n", u.sub, u.not_before, u.until));
    }
    let digest = hasher.finalize();
    let version = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    Feed {
        version,
        sessions,
        users,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: &str, subject: &str, not_before: Option<i64>, until: i64) -> RevocationRow {
        RevocationRow {
            kind: kind.to_owned(),
            subject: subject.to_owned(),
            not_before,
            until,
        }
    }

    #[test]
    fn user_entries_merge_to_the_latest_times() {
        let feed = feed(vec![
            row("user", "u1", Some(10), 100),
            row("user", "u1", Some(20), 90),
        ]);
        assert_eq!(feed.users.len(), 1);
        assert_eq!((feed.users[0].not_before, feed.users[0].until), (20, 100));
    }

    #[test]
    fn version_follows_the_content_not_the_row_order() {
        let a = feed(vec![
            row("session", "s1", None, 100),
            row("session", "s2", None, 100),
        ]);
        let b = feed(vec![
            row("session", "s2", None, 100),
            row("session", "s1", None, 100),
        ]);
        let c = feed(vec![row("session", "s1", None, 100)]);
        assert_eq!(a.version, b.version);
        assert_ne!(a.version, c.version);
        assert_eq!(a.version.len(), 32);
    }
}
