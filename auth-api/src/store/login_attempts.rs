//! Queries on `login_attempts`: consecutive failed logins per normalised email.
//!
//! An attempt is reserved before its password is checked: one conditional write refuses it
//! while the email is locked, or else counts it as a failure and, in the same transaction, sets
//! the lock that count earns. Concurrent attempts are thereby serialised on the email's row, so
//! no more passwords are checked than the policy allows, and a success clears the row after the
//! fact. Locks only ever grow.

use super::{sql::sql, Backend, Store};

/// The outcome of [`Store::reserve_login_attempt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginReservation {
    /// The password may be checked; the attempt is already counted as this consecutive failure
    /// (a success clears it).
    Granted {
        /// The consecutive failures, this attempt included.
        failures: i64,
        /// The lock this attempt set (Unix seconds), if it earned one.
        locked_until: Option<i64>,
    },
    /// The email is locked: no password is checked until then (Unix seconds).
    Locked {
        /// When the lock ends.
        until: i64,
    },
}

/// The lock of one email.
const LOCKED_UNTIL: &super::sql::Sql = sql! {
    postgres_sqlite: "SELECT locked_until FROM login_attempts WHERE email = $1",
    mysql:           "SELECT locked_until FROM login_attempts WHERE email = ?",
};

impl Store {
    /// Until when attempts for `email` are refused (Unix seconds), if a lock was ever set.
    pub async fn login_locked_until(&self, email: &str) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar(self.sql(LOCKED_UNTIL))
            .bind(email)
            .fetch_optional(&self.pool)
            .await
    }

    /// Reserves one password check for `email` at `now`: refused while a lock runs; otherwise
    /// counted as one more consecutive failure, and locked for `delay_after(failures)` seconds
    /// (never shortening a lock already set). The check of the lock and the count are one
    /// conditional write, and the lock is set before the row is released, so of any number of
    /// concurrent attempts only those the policy allows are granted.
    pub async fn reserve_login_attempt(
        &self,
        email: &str,
        now: i64,
        delay_after: impl FnOnce(i64) -> Option<i64>,
    ) -> Result<LoginReservation, sqlx::Error> {
        // Begins with a write, so SQLite takes its write lock at once, and PostgreSQL holds the
        // row's lock until the lock below is set: the next attempt sees both.
        let mut tx = self.pool.begin().await?;
        let upsert = sqlx::query(self.sql(sql! {
            postgres_sqlite: "INSERT INTO login_attempts (email, failures, last_failure, locked_until) \
                              VALUES ($1, 1, $2, 0) \
                              ON CONFLICT (email) DO UPDATE SET failures = login_attempts.failures + 1, \
                                 last_failure = excluded.last_failure \
                              WHERE login_attempts.locked_until <= excluded.last_failure \
                              RETURNING failures",
            // No conditional upsert here: both assignments test the lock, which neither
            // changes, so the update is a no-op while locked. (`VALUES()` is deprecated in
            // MySQL 8.0.20 but works; the row alias that replaces it is not in MariaDB.) It
            // takes the row's exclusive lock at once, as PostgreSQL's does, so two attempts
            // never both hold a shared lock and then deadlock asking for more.
            mysql:           "INSERT INTO login_attempts (email, failures, last_failure, locked_until) \
                              VALUES (?, 1, ?, 0) \
                              ON DUPLICATE KEY UPDATE \
                                 failures = IF(locked_until <= VALUES(last_failure), failures + 1, failures), \
                                 last_failure = IF(locked_until <= VALUES(last_failure), VALUES(last_failure), last_failure)",
        }))
        .bind(email)
        .bind(now);
        let counted: Option<i64> = match self.backend {
            Backend::Postgres | Backend::Sqlite => upsert
                .fetch_optional(&mut *tx)
                .await?
                .map(|row| sqlx::Row::try_get(&row, 0))
                .transpose()?,
            Backend::Mysql => {
                upsert.execute(&mut *tx).await?;
                let (failures, locked_until): (i64, i64) = sqlx::query_as(
                    "SELECT failures, locked_until FROM login_attempts WHERE email = ?",
                )
                .bind(email)
                .fetch_one(&mut *tx)
                .await?;
                (locked_until <= now).then_some(failures)
            }
        };
        let Some(failures) = counted else {
            let until: i64 = sqlx::query_scalar(self.sql(LOCKED_UNTIL))
                .bind(email)
                .fetch_one(&mut *tx)
                .await?;
            tx.rollback().await?;
            return Ok(LoginReservation::Locked { until });
        };
        let locked_until = match delay_after(failures) {
            Some(delay) => {
                let until = now.saturating_add(delay);
                Self::extend_login_lock(&mut tx, email, until).await?;
                Some(until)
            }
            None => None,
        };
        tx.commit().await?;
        Ok(LoginReservation::Granted {
            failures,
            locked_until,
        })
    }

    /// Refuses attempts for `email` until `until`, or later if a longer lock is already set.
    pub async fn lock_login(&self, email: &str, until: i64) -> Result<(), sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        Self::extend_login_lock(&mut conn, email, until).await
    }

    /// Moves the lock of `email` to `until` unless it already ends later: a lock never shortens.
    async fn extend_login_lock(
        conn: &mut sqlx::AnyConnection,
        email: &str,
        until: i64,
    ) -> Result<(), sqlx::Error> {
        // CASE rather than GREATEST (PostgreSQL, MySQL) or two-argument MAX (SQLite): one text
        // for all.
        sqlx::query(Backend::of_connection(conn).sql(sql! {
            postgres_sqlite: "UPDATE login_attempts \
                              SET locked_until = CASE WHEN locked_until < $1 THEN $2 ELSE locked_until END \
                              WHERE email = $3",
            mysql:           "UPDATE login_attempts \
                              SET locked_until = CASE WHEN locked_until < ? THEN ? ELSE locked_until END \
                              WHERE email = ?",
        }))
        .bind(until)
        .bind(until)
        .bind(email)
        .execute(&mut *conn)
        .await
        .map(drop)
    }

    /// Forgets the failures of `email` (after a successful login, or an operator's unlock).
    /// `true` when there were any.
    pub async fn clear_login_failures(&self, email: &str) -> Result<bool, sqlx::Error> {
        let result = sqlx::query(self.sql(sql! {
            postgres_sqlite: "DELETE FROM login_attempts WHERE email = $1",
            mysql:           "DELETE FROM login_attempts WHERE email = ?",
        }))
        .bind(email)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Forgets failure streaks whose last failure is older than `before`, that are not locked
    /// beyond `now`, and that never earned a delay (fewer than `free_attempts` failures): a
    /// streak that did is kept until a success or an operator's unlock, so that waiting out the
    /// prune does not give a guesser a fresh series of attempts. The counter of a device token
    /// ([`crate::devices`]) goes, whatever it holds, once its token has expired: nothing can
    /// count against it any more.
    pub async fn prune_login_attempts(
        &self,
        before: i64,
        now: i64,
        free_attempts: i64,
    ) -> Result<u64, sqlx::Error> {
        // `device:` keys never contain an `@`; the second test keeps an odd email out of it.
        let result = sqlx::query(self.sql(sql! {
            postgres_sqlite: "DELETE FROM login_attempts \
                              WHERE (last_failure < $1 AND locked_until <= $2 AND failures < $3) \
                                 OR (email LIKE $4 AND email NOT LIKE '%@%' AND last_failure < $5)",
            mysql:           "DELETE FROM login_attempts \
                              WHERE (last_failure < ? AND locked_until <= ? AND failures < ?) \
                                 OR (email LIKE ? AND email NOT LIKE '%@%' AND last_failure < ?)",
        }))
        .bind(before)
        .bind(now)
        .bind(free_attempts)
        .bind(format!("{}%", crate::devices::KEY_PREFIX))
        .bind(now.saturating_sub(crate::devices::FORGET_AFTER_SECS))
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }
}
