//! Queries on `login_attempts`: consecutive failed logins per normalised email.

use super::Store;

impl Store {
    /// Until when attempts for `email` are refused (Unix seconds), if a lock was ever set.
    pub async fn login_locked_until(&self, email: &str) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar("SELECT locked_until FROM login_attempts WHERE email = $1")
            .bind(email)
            .fetch_optional(&self.pool)
            .await
    }

    /// Counts one more consecutive failure for `email`; returns the new count.
    pub async fn record_login_failure(&self, email: &str, now: i64) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "INSERT INTO login_attempts (email, failures, last_failure, locked_until) VALUES ($1, 1, $2, 0) \
             ON CONFLICT (email) DO UPDATE SET failures = login_attempts.failures + 1, last_failure = $2 \
             RETURNING failures",
        )
        .bind(email)
        .bind(now)
        .fetch_one(&self.pool)
        .await
    }

    /// Refuses attempts for `email` until `until`.
    pub async fn lock_login(&self, email: &str, until: i64) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE login_attempts SET locked_until = $2 WHERE email = $1")
            .bind(email)
            .bind(until)
            .execute(&self.pool)
            .await
            .map(drop)
    }

    /// Forgets the failures of `email` (after a successful login, or an operator's unlock).
    /// `true` when there were any.
    pub async fn clear_login_failures(&self, email: &str) -> Result<bool, sqlx::Error> {
        let result = sqlx::query("DELETE FROM login_attempts WHERE email = $1")
            .bind(email)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Forgets failure streaks whose last failure is older than `before` and that are not
    /// locked beyond `now`.
    pub async fn prune_login_attempts(&self, before: i64, now: i64) -> Result<u64, sqlx::Error> {
        let result = sqlx::query(
            "DELETE FROM login_attempts WHERE last_failure < $1 AND locked_until <= $2",
        )
        .bind(before)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }
}
