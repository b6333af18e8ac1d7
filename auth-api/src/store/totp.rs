//! Queries on `user_totp` and `recovery_codes`: a user's TOTP second factor and its recovery
//! codes (issue 15). What a code is and how it is checked is `domain::totp`'s; here is what
//! must hold when requests race.
//!
//! - **One change at a time.** Every write of more than one statement (enrolling, confirming,
//!   replacing the recovery codes, disabling) first locks the user's row: a write on PostgreSQL
//!   and SQLite, a locking read on MySQL, as `delete_identity` does. So they run one after the
//!   other for a user, each seeing what the one before committed, and always take their locks
//!   in one order (user, enrolment, recovery codes), so MySQL finds no deadlock among them (the
//!   foreign-key checks of InnoDB lock the user's row too, which is why it has to come first).
//! - **One enrolment per user**, keyed by the user. Starting one replaces an unconfirmed one
//!   (the user scanned nothing, or lost the page) and is refused once one is confirmed: a second
//!   factor is changed by disabling it, which needs a code, never by enrolling over it.
//! - **Confirmation** names the sealed secret it checked the first code against: a confirmation
//!   racing a new enrolment (two tabs) confirms the secret the user's app holds or nothing. It
//!   records the code's step as the last used one and writes the first recovery codes in the
//!   same transaction, so a confirmed factor always has its codes.
//! - **A step is used once**: [`Store::use_totp_step`] is one conditional `UPDATE … WHERE
//!   last_used_step < step`. PostgreSQL and MySQL (READ COMMITTED, see the module docs of
//!   `store`) re-read the row after waiting for its lock and SQLite runs one writer at a time,
//!   so of two logins presenting one code exactly one sees the older step and wins.
//! - **A recovery code is used once** the same way: `UPDATE … SET used_at WHERE used_at IS
//!   NULL`. Used codes are kept (with when) until the codes are replaced or the factor disabled.
//!
//! The secret is stored sealed under a key-encryption key (`kek::seal_totp_secret`, bound to
//! the user), like a session's rotation key: a dump alone computes no code. Recovery codes are
//! stored as SHA-256 only (why a fast hash suffices: `domain::totp`).

use sqlx::FromRow;

use super::{join_sealed, split_sealed, sql::sql, Store};
use crate::kek::Sealed;

/// A user's TOTP enrolment as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpEnrolment {
    /// UUID text.
    pub user_id: String,
    /// The secret, sealed for this user under a key-encryption key.
    pub secret: Sealed,
    /// Unix seconds: when this enrolment (this secret) started.
    pub created_at: i64,
    /// Unix seconds: when the first code confirmed it; `None` while it waits for one (and then
    /// it is no second factor yet).
    pub confirmed_at: Option<i64>,
    /// The newest time step a code was accepted for (`domain::totp_step`); codes of this step
    /// and older are refused. Set by the confirmation.
    pub last_used_step: Option<i64>,
}

impl TotpEnrolment {
    /// Whether the factor is in force: confirmed by a first code.
    pub fn is_confirmed(&self) -> bool {
        self.confirmed_at.is_some()
    }
}

/// What [`Store::begin_totp_enrolment`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeginTotp {
    /// The new secret waits for its first code (an unconfirmed one before it is gone).
    Started,
    /// The user has a confirmed second factor: nothing changed.
    AlreadyConfirmed,
    /// No such user.
    UserNotFound,
}

/// An enrolment as read.
#[derive(FromRow)]
struct EnrolmentRow {
    user_id: String,
    secret_sealed: Vec<u8>,
    secret_kek: String,
    created_at: i64,
    confirmed_at: Option<i64>,
    last_used_step: Option<i64>,
}

impl From<EnrolmentRow> for TotpEnrolment {
    fn from(row: EnrolmentRow) -> Self {
        Self {
            secret: split_sealed(&row.secret_kek, &row.secret_sealed),
            user_id: row.user_id,
            created_at: row.created_at,
            confirmed_at: row.confirmed_at,
            last_used_step: row.last_used_step,
        }
    }
}

impl Store {
    /// Starts an enrolment of `user_id` with `secret` (sealed for that user) at `now`: replaces
    /// an unconfirmed one, and changes nothing when a confirmed one exists (module docs).
    pub async fn begin_totp_enrolment(
        &self,
        user_id: &str,
        secret: &Sealed,
        now: i64,
    ) -> Result<BeginTotp, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if !self.lock_user(&mut tx, user_id).await? {
            tx.rollback().await?;
            return Ok(BeginTotp::UserNotFound);
        }
        let confirmed: Option<Option<i64>> = sqlx::query_scalar(self.sql(sql! {
            postgres_sqlite: "SELECT confirmed_at FROM user_totp WHERE user_id = $1",
            mysql:           "SELECT confirmed_at FROM user_totp WHERE user_id = ?",
        }))
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        match confirmed {
            Some(Some(_)) => {
                tx.rollback().await?;
                return Ok(BeginTotp::AlreadyConfirmed);
            }
            Some(None) => {
                sqlx::query(self.sql(sql! {
                    postgres_sqlite: "DELETE FROM user_totp WHERE user_id = $1 AND confirmed_at IS NULL",
                    mysql:           "DELETE FROM user_totp WHERE user_id = ? AND confirmed_at IS NULL",
                }))
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            }
            None => {}
        }
        sqlx::query(self.sql(sql! {
            postgres_sqlite: "INSERT INTO user_totp (user_id, secret_sealed, secret_kek, created_at) \
                              VALUES ($1, $2, $3, $4)",
            mysql:           "INSERT INTO user_totp (user_id, secret_sealed, secret_kek, created_at) \
                              VALUES (?, ?, ?, ?)",
        }))
        .bind(user_id)
        .bind(join_sealed(secret))
        .bind(&secret.kek_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(BeginTotp::Started)
    }

    /// The user's enrolment, confirmed or not.
    pub async fn totp_enrolment(
        &self,
        user_id: &str,
    ) -> Result<Option<TotpEnrolment>, sqlx::Error> {
        let row: Option<EnrolmentRow> = sqlx::query_as(self.sql(sql! {
            postgres_sqlite: "SELECT user_id, secret_sealed, secret_kek, created_at, confirmed_at, last_used_step \
                              FROM user_totp WHERE user_id = $1",
            mysql:           "SELECT user_id, secret_sealed, secret_kek, created_at, confirmed_at, last_used_step \
                              FROM user_totp WHERE user_id = ?",
        }))
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Into::into))
    }

    /// Confirms the unconfirmed enrolment of `user_id` whose secret is still `secret` (the one
    /// the first code was checked against) at `now`: records `step`, the first code's, as the
    /// last used one, and stores `recovery_code_hashes` as the user's recovery codes, in one
    /// transaction. `false`, and nothing written, when there is no such enrolment any more
    /// (confirmed meanwhile, replaced by a new one, or disabled).
    pub async fn confirm_totp(
        &self,
        user_id: &str,
        secret: &Sealed,
        step: i64,
        now: i64,
        recovery_code_hashes: &[[u8; 32]],
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if !self.lock_user(&mut tx, user_id).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        let confirmed = sqlx::query(self.sql(sql! {
            postgres_sqlite: "UPDATE user_totp SET confirmed_at = $1, last_used_step = $2 \
                              WHERE user_id = $3 AND confirmed_at IS NULL AND secret_sealed = $4",
            mysql:           "UPDATE user_totp SET confirmed_at = ?, last_used_step = ? \
                              WHERE user_id = ? AND confirmed_at IS NULL AND secret_sealed = ?",
        }))
        .bind(now)
        .bind(step)
        .bind(user_id)
        .bind(join_sealed(secret))
        .execute(&mut *tx)
        .await?;
        if confirmed.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        self.write_recovery_codes(&mut tx, user_id, recovery_code_hashes, now)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records that a code of time step `step` signed `user_id` in: `true` when `step` is newer
    /// than every step used before and the factor is confirmed, in one conditional write, so
    /// of two logins presenting one code exactly one gets `true` (module docs). `false` is a
    /// replay, an older code, or no confirmed factor.
    pub async fn use_totp_step(&self, user_id: &str, step: i64) -> Result<bool, sqlx::Error> {
        let used = sqlx::query(self.sql(sql! {
            postgres_sqlite: "UPDATE user_totp SET last_used_step = $1 \
                              WHERE user_id = $2 AND confirmed_at IS NOT NULL AND last_used_step < $3",
            mysql:           "UPDATE user_totp SET last_used_step = ? \
                              WHERE user_id = ? AND confirmed_at IS NOT NULL AND last_used_step < ?",
        }))
        .bind(step)
        .bind(user_id)
        .bind(step)
        .execute(&self.pool)
        .await?;
        Ok(used.rows_affected() == 1)
    }

    /// Removes the user's second factor: the enrolment and every recovery code, in one
    /// transaction. `false` when there was no enrolment (recovery codes are deleted anyway).
    pub async fn disable_totp(&self, user_id: &str) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if !self.lock_user(&mut tx, user_id).await? {
            // No user: its enrolment and codes went with it (ON DELETE CASCADE).
            tx.rollback().await?;
            return Ok(false);
        }
        let deleted = sqlx::query(self.sql(sql! {
            postgres_sqlite: "DELETE FROM user_totp WHERE user_id = $1",
            mysql:           "DELETE FROM user_totp WHERE user_id = ?",
        }))
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(self.sql(sql! {
            postgres_sqlite: "DELETE FROM recovery_codes WHERE user_id = $1",
            mysql:           "DELETE FROM recovery_codes WHERE user_id = ?",
        }))
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(deleted.rows_affected() == 1)
    }

    /// Replaces every recovery code of `user_id` (used or not) with `hashes`, made at `now`,
    /// while the user has a confirmed factor; `false`, and nothing written, otherwise.
    pub async fn replace_recovery_codes(
        &self,
        user_id: &str,
        hashes: &[[u8; 32]],
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if !self.lock_user(&mut tx, user_id).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        let confirmed: Option<i64> = sqlx::query_scalar(self.sql(sql! {
            postgres_sqlite: "SELECT created_at FROM user_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL",
            mysql:           "SELECT created_at FROM user_totp WHERE user_id = ? AND confirmed_at IS NOT NULL",
        }))
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        if confirmed.is_none() {
            tx.rollback().await?;
            return Ok(false);
        }
        self.write_recovery_codes(&mut tx, user_id, hashes, now)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Uses the recovery code of `user_id` that hashes to `code_hash` at `now`: `true` once,
    /// for the first of any number of racing requests; `false` for an unknown or used code.
    /// The code is found by its hash (the primary key), so nothing compares a code itself.
    pub async fn use_recovery_code(
        &self,
        user_id: &str,
        code_hash: &[u8; 32],
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let used = sqlx::query(self.sql(sql! {
            postgres_sqlite: "UPDATE recovery_codes SET used_at = $1 \
                              WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL",
            mysql:           "UPDATE recovery_codes SET used_at = ? \
                              WHERE user_id = ? AND code_hash = ? AND used_at IS NULL",
        }))
        .bind(now)
        .bind(user_id)
        .bind(code_hash.as_slice())
        .execute(&self.pool)
        .await?;
        Ok(used.rows_affected() == 1)
    }

    /// How many of the user's recovery codes are still unused.
    pub async fn recovery_codes_left(&self, user_id: &str) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(self.sql(sql! {
            postgres_sqlite: "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
            mysql:           "SELECT COUNT(*) FROM recovery_codes WHERE user_id = ? AND used_at IS NULL",
        }))
        .bind(user_id)
        .fetch_one(&self.pool)
        .await
    }

    /// Up to `limit` enrolments, by user id after `after`, whose secret is sealed under a
    /// key-encryption key other than `current_kek`: what a start after a KEK rotation seals
    /// again (the same secret, which the user's app holds, under the new KEK).
    pub async fn totp_secrets_not_under(
        &self,
        current_kek: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<TotpEnrolment>, sqlx::Error> {
        let rows: Vec<EnrolmentRow> = sqlx::query_as(self.sql(sql! {
            postgres_sqlite: "SELECT user_id, secret_sealed, secret_kek, created_at, confirmed_at, last_used_step \
                              FROM user_totp WHERE secret_kek <> $1 AND user_id > $2 ORDER BY user_id LIMIT $3",
            mysql:           "SELECT user_id, secret_sealed, secret_kek, created_at, confirmed_at, last_used_step \
                              FROM user_totp WHERE secret_kek <> ? AND user_id > ? ORDER BY user_id LIMIT ?",
        }))
        .bind(current_kek)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Replaces the sealed secret of `user_id` with `sealed` (the same secret under the current
    /// KEK) if the row still holds `previous` as read: of several replicas re-sealing at once the
    /// first wins, and an enrolment replaced meanwhile is left alone. `true` when this call
    /// replaced it.
    pub async fn reseal_totp_secret(
        &self,
        user_id: &str,
        previous: &Sealed,
        sealed: &Sealed,
    ) -> Result<bool, sqlx::Error> {
        let resealed = sqlx::query(self.sql(sql! {
            postgres_sqlite: "UPDATE user_totp SET secret_sealed = $1, secret_kek = $2 \
                              WHERE user_id = $3 AND secret_sealed = $4 AND secret_kek = $5",
            mysql:           "UPDATE user_totp SET secret_sealed = ?, secret_kek = ? \
                              WHERE user_id = ? AND secret_sealed = ? AND secret_kek = ?",
        }))
        .bind(join_sealed(sealed))
        .bind(&sealed.kek_id)
        .bind(user_id)
        .bind(join_sealed(previous))
        .bind(&previous.kek_id)
        .execute(&self.pool)
        .await?;
        Ok(resealed.rows_affected() == 1)
    }

    /// Locks the row of `user_id` for the rest of `tx` (module docs); `false` when there is no
    /// such user. A write on PostgreSQL and SQLite (so SQLite takes its write lock first), a
    /// locking read on MySQL.
    async fn lock_user(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        user_id: &str,
    ) -> Result<bool, sqlx::Error> {
        let user: Option<String> = sqlx::query_scalar(self.sql(sql! {
            postgres_sqlite: "UPDATE users SET password_hash = password_hash WHERE id = $1 \
                              RETURNING password_hash",
            mysql:           "SELECT password_hash FROM users WHERE id = ? FOR UPDATE",
        }))
        .bind(user_id)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(user.is_some())
    }

    /// Deletes the user's recovery codes and inserts `hashes`, inside the caller's transaction.
    async fn write_recovery_codes(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        user_id: &str,
        hashes: &[[u8; 32]],
        now: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(self.sql(sql! {
            postgres_sqlite: "DELETE FROM recovery_codes WHERE user_id = $1",
            mysql:           "DELETE FROM recovery_codes WHERE user_id = ?",
        }))
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
        for hash in hashes {
            sqlx::query(self.sql(sql! {
                postgres_sqlite: "INSERT INTO recovery_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)",
                mysql:           "INSERT INTO recovery_codes (user_id, code_hash, created_at) VALUES (?, ?, ?)",
            }))
            .bind(user_id)
            .bind(hash.as_slice())
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
}
