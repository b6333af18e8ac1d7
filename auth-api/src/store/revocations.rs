//! Queries on `revocations`: the feed of revoked sessions and users for the gateway.

use sqlx::{AnyConnection, FromRow};

use super::Store;

/// What a revocation refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked<'a> {
    /// Every token of one session.
    Session(&'a str),
    /// Every token of one user issued before `not_before`.
    User {
        /// The user id.
        user_id: &'a str,
        /// Tokens with `iat` before this are refused.
        not_before: i64,
    },
}

/// One live entry of the feed.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct RevocationRow {
    /// `session` or `user`.
    pub kind: String,
    /// The session id or the user id.
    pub subject: String,
    /// For users: tokens issued before this are refused.
    pub not_before: Option<i64>,
    /// After this, the entry can no longer refuse anything.
    pub until: i64,
}

impl Store {
    /// Every entry that can still matter at `now`, oldest first.
    pub async fn revocations(&self, now: i64) -> Result<Vec<RevocationRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT kind, subject, not_before, until FROM revocations WHERE until > $1 ORDER BY id",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await
    }

    /// Deletes entries that can no longer matter.
    pub async fn prune_revocations(&self, now: i64) -> Result<u64, sqlx::Error> {
        let result = sqlx::query("DELETE FROM revocations WHERE until <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    /// Adds an entry, inside the caller's transaction.
    pub(super) async fn record_revocation(
        conn: &mut AnyConnection,
        revoked: Revoked<'_>,
        until: i64,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        let (kind, subject, not_before) = match revoked {
            Revoked::Session(sid) => ("session", sid, None),
            Revoked::User {
                user_id,
                not_before,
            } => ("user", user_id, Some(not_before)),
        };
        sqlx::query(
            "INSERT INTO revocations (kind, subject, not_before, until, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(kind)
        .bind(subject)
        .bind(not_before)
        .bind(until)
        .bind(now)
        .execute(conn)
        .await
        .map(drop)
    }
}
