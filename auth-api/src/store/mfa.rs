//! Queries on `mfa_challenges`: the second step of a login to an account with a TOTP second
//! factor (issue 15). A challenge is keyed by the SHA-256 of a random value only the client
//! holds. Unlike a sign-in flow it is *read* while the code is checked (a mistyped code does
//! not send the user back to the password) and *taken* once the code is right: deleted by one
//! conditional `DELETE`, so of two requests completing one challenge exactly one opens a
//! session. Wrong codes are bounded by the login lock the challenge names, not here.

use sqlx::FromRow;

use super::{sql::sql, Store};

/// A challenge issued by a right password to an account with a second factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaChallenge {
    /// SHA-256 of the `mfa_token` (the token itself is never stored).
    pub token_hash: Vec<u8>,
    /// UUID text: whose password was right.
    pub user_id: String,
    /// SHA-256 of the password hash the password was checked against.
    pub password_digest: Vec<u8>,
    /// The user's `tokens_valid_after` then: a "logout everywhere" since voids the challenge.
    pub tokens_valid_after: i64,
    /// The `login_attempts` key the password was checked under: wrong codes count there.
    pub lock_key: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; the challenge is refused from then on.
    pub expires_at: i64,
}

/// A challenge as read: everything but its key, which MySQL keeps in a column read as text.
#[derive(FromRow)]
struct ChallengeRow {
    user_id: String,
    password_digest: Vec<u8>,
    tokens_valid_after: i64,
    lock_key: String,
    created_at: i64,
    expires_at: i64,
}

impl Store {
    /// Records `challenge`, and deletes the expired challenges of its user (so that a user's
    /// abandoned challenges do not pile up between two cleanups).
    pub async fn insert_mfa_challenge(&self, challenge: &MfaChallenge) -> Result<(), sqlx::Error> {
        sqlx::query(self.sql(sql! {
            postgres_sqlite: "DELETE FROM mfa_challenges WHERE user_id = $1 AND expires_at <= $2",
            mysql:           "DELETE FROM mfa_challenges WHERE user_id = ? AND expires_at <= ?",
        }))
        .bind(&challenge.user_id)
        .bind(challenge.created_at)
        .execute(&self.pool)
        .await?;
        sqlx::query(self.sql(sql! {
            postgres_sqlite: "INSERT INTO mfa_challenges (token_hash, user_id, password_digest, \
                              tokens_valid_after, lock_key, created_at, expires_at) \
                              VALUES ($1, $2, $3, $4, $5, $6, $7)",
            mysql:           "INSERT INTO mfa_challenges (token_hash, user_id, password_digest, \
                              tokens_valid_after, lock_key, created_at, expires_at) \
                              VALUES (?, ?, ?, ?, ?, ?, ?)",
        }))
        .bind(&challenge.token_hash)
        .bind(&challenge.user_id)
        .bind(&challenge.password_digest)
        .bind(challenge.tokens_valid_after)
        .bind(&challenge.lock_key)
        .bind(challenge.created_at)
        .bind(challenge.expires_at)
        .execute(&self.pool)
        .await
        .map(drop)
    }

    /// The challenge whose token hashes to `token_hash`, if it is still live at `now`.
    pub async fn mfa_challenge(
        &self,
        token_hash: &[u8],
        now: i64,
    ) -> Result<Option<MfaChallenge>, sqlx::Error> {
        let row: Option<ChallengeRow> = sqlx::query_as(self.sql(sql! {
            postgres_sqlite: "SELECT user_id, password_digest, tokens_valid_after, lock_key, \
                              created_at, expires_at FROM mfa_challenges WHERE token_hash = $1",
            mysql:           "SELECT user_id, password_digest, tokens_valid_after, lock_key, \
                              created_at, expires_at FROM mfa_challenges WHERE token_hash = ?",
        }))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .filter(|row| now < row.expires_at)
            .map(|row| MfaChallenge {
                token_hash: token_hash.to_vec(),
                user_id: row.user_id,
                password_digest: row.password_digest,
                tokens_valid_after: row.tokens_valid_after,
                lock_key: row.lock_key,
                created_at: row.created_at,
                expires_at: row.expires_at,
            }))
    }

    /// Uses the challenge whose token hashes to `token_hash` if it is still live at `now`:
    /// `true` for exactly one of any number of racing calls (one conditional `DELETE`, which
    /// PostgreSQL and MySQL at READ COMMITTED re-check after waiting for the row's lock, and
    /// SQLite runs one at a time); `false` for a used, expired or unknown one.
    pub async fn take_mfa_challenge(
        &self,
        token_hash: &[u8],
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let taken = sqlx::query(self.sql(sql! {
            postgres_sqlite: "DELETE FROM mfa_challenges WHERE token_hash = $1 AND expires_at > $2",
            mysql:           "DELETE FROM mfa_challenges WHERE token_hash = ? AND expires_at > ?",
        }))
        .bind(token_hash)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(taken.rows_affected() == 1)
    }

    /// Deletes the challenge whose token hashes to `token_hash`, live or not (one that can no
    /// longer succeed: its user's credentials changed).
    pub async fn delete_mfa_challenge(&self, token_hash: &[u8]) -> Result<(), sqlx::Error> {
        sqlx::query(self.sql(sql! {
            postgres_sqlite: "DELETE FROM mfa_challenges WHERE token_hash = $1",
            mysql:           "DELETE FROM mfa_challenges WHERE token_hash = ?",
        }))
        .bind(token_hash)
        .execute(&self.pool)
        .await
        .map(drop)
    }

    /// Deletes the challenges expired at `now` (for the periodic cleanup); how many.
    pub async fn prune_mfa_challenges(&self, now: i64) -> Result<u64, sqlx::Error> {
        let pruned = sqlx::query(self.sql(sql! {
            postgres_sqlite: "DELETE FROM mfa_challenges WHERE expires_at <= $1",
            mysql:           "DELETE FROM mfa_challenges WHERE expires_at <= ?",
        }))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(pruned.rows_affected())
    }
}
