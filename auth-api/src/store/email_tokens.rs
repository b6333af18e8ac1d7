//! Queries on `email_tokens` (issue 15): the secrets of the links mailed to verify an email and
//! to reset a password. Only SHA-256 of a token is stored. A newer token of a purpose replaces
//! the user's older ones, in the transaction that queues its mail; a token is *taken* (deleted
//! by one conditional `DELETE`) when used, so of two requests using one link exactly one
//! succeeds. A reset and the verification it implies commit with the password.

use sqlx::{AnyConnection, FromRow};

use super::{outbox::enqueue_email, sql::sql, QueuedEmail, RevokeAt, Store};

/// What a link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailTokenPurpose {
    /// Proves the address (`/verify`).
    Verify,
    /// Sets a new password (`/reset`).
    Reset,
}

impl EmailTokenPurpose {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::Reset => "reset",
        }
    }
}

/// A link's token, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailToken {
    /// SHA-256 of the token (the token itself is only in the mail).
    pub token_hash: Vec<u8>,
    /// UUID text: whose.
    pub user_id: String,
    /// What it is for.
    pub purpose: EmailTokenPurpose,
    /// The normalised address it was sent to: a verification proves this one, no other.
    pub email: String,
    /// SHA-256 of the password hash when it was issued: a password change since voids it.
    pub password_digest: Vec<u8>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; refused from then on.
    pub expires_at: i64,
}

/// A token as read: everything but its key and purpose, which the caller knows.
#[derive(FromRow)]
struct TokenRow {
    user_id: String,
    email: String,
    password_digest: Vec<u8>,
    created_at: i64,
    expires_at: i64,
}

/// At most `max` mails of a kind to one recipient since `since`, as of `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailLimit {
    /// Mails allowed in the window.
    pub max: i64,
    /// The window's start, Unix seconds.
    pub since: i64,
    /// Now, Unix seconds.
    pub now: i64,
}

/// Takes the user's row lock, then counts the mails of `mail`'s kind to its recipient in the
/// window: whether one more is allowed.
async fn under_limit(
    conn: &mut AnyConnection,
    user_id: &str,
    mail: &QueuedEmail,
    limit: MailLimit,
) -> Result<bool, sqlx::Error> {
    let backend = super::Backend::of_connection(conn);
    // A write that changes nothing: PostgreSQL and MySQL lock the row, SQLite the database.
    sqlx::query(backend.sql(sql! {
        postgres_sqlite: "UPDATE users SET email_verified_at = email_verified_at WHERE id = $1",
        mysql:           "UPDATE users SET email_verified_at = email_verified_at WHERE id = ?",
    }))
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    let sent: i64 = sqlx::query_scalar(backend.sql(sql! {
        postgres_sqlite: "SELECT COUNT(*) FROM email_outbox \
                          WHERE recipient = $1 AND kind = $2 AND created_at >= $3",
        mysql:           "SELECT COUNT(*) FROM email_outbox \
                          WHERE recipient = ? AND kind = ? AND created_at >= ?",
    }))
    .bind(&mail.recipient)
    .bind(&mail.kind)
    .bind(limit.since)
    .fetch_one(&mut *conn)
    .await?;
    Ok(sent < limit.max)
}

/// How [`Store::reset_password`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordReset {
    /// The password is set, every session ended, the email verified.
    Done,
    /// The token was already used (or replaced) by the time of the write, the password changed
    /// since it was issued, or the account was disabled meanwhile: nothing was written.
    Stale,
}

impl Store {
    /// Records `token`, deleting every other token of its user and purpose (a newer link voids
    /// the older ones), and queues `mail` (which carries it) in the same transaction: the link
    /// exists exactly when its mail is queued.
    ///
    /// Unless `limit` mails of the mail's kind went to its recipient since `since`: then nothing
    /// is written and the answer is `false`. The count is taken under the user's row lock (a
    /// write to it, which SQLite serialises too), so that racing requests cannot all pass it.
    pub async fn issue_email_token(
        &self,
        token: &EmailToken,
        mail: &QueuedEmail,
        limit: MailLimit,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if !under_limit(&mut tx, &token.user_id, mail, limit).await? {
            return Ok(false);
        }
        sqlx::query(self.sql(sql! {
            postgres_sqlite: "DELETE FROM email_tokens WHERE user_id = $1 AND purpose = $2",
            mysql:           "DELETE FROM email_tokens WHERE user_id = ? AND purpose = ?",
        }))
        .bind(&token.user_id)
        .bind(token.purpose.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query(self.sql(sql! {
            postgres_sqlite: "INSERT INTO email_tokens (token_hash, user_id, purpose, email, \
                              password_digest, created_at, expires_at) \
                              VALUES ($1, $2, $3, $4, $5, $6, $7)",
            mysql:           "INSERT INTO email_tokens (token_hash, user_id, purpose, email, \
                              password_digest, created_at, expires_at) \
                              VALUES (?, ?, ?, ?, ?, ?, ?)",
        }))
        .bind(&token.token_hash)
        .bind(&token.user_id)
        .bind(token.purpose.as_str())
        .bind(&token.email)
        .bind(&token.password_digest)
        .bind(token.created_at)
        .bind(token.expires_at)
        .execute(&mut *tx)
        .await?;
        enqueue_email(&mut tx, mail, token.created_at).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Queues `mail` (one that carries no token) about the user `user_id`, unless `limit` is
    /// reached (see [`Store::issue_email_token`]); whether it was queued.
    pub async fn enqueue_limited_email(
        &self,
        user_id: &str,
        mail: &QueuedEmail,
        limit: MailLimit,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if !under_limit(&mut tx, user_id, mail, limit).await? {
            return Ok(false);
        }
        enqueue_email(&mut tx, mail, limit.now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The live token of `purpose` whose hash is `token_hash` (not taken).
    pub async fn email_token(
        &self,
        token_hash: &[u8],
        purpose: EmailTokenPurpose,
        now: i64,
    ) -> Result<Option<EmailToken>, sqlx::Error> {
        let row: Option<TokenRow> = sqlx::query_as(self.sql(sql! {
            postgres_sqlite: "SELECT user_id, email, password_digest, created_at, expires_at \
                              FROM email_tokens \
                              WHERE token_hash = $1 AND purpose = $2 AND expires_at > $3",
            mysql:           "SELECT user_id, email, password_digest, created_at, expires_at \
                              FROM email_tokens \
                              WHERE token_hash = ? AND purpose = ? AND expires_at > ?",
        }))
        .bind(token_hash)
        .bind(purpose.as_str())
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| EmailToken {
            token_hash: token_hash.to_vec(),
            user_id: row.user_id,
            purpose,
            email: row.email,
            password_digest: row.password_digest,
            created_at: row.created_at,
            expires_at: row.expires_at,
        }))
    }

    /// Deletes a token that can never be used (its user's password or address changed).
    pub async fn delete_email_token(&self, token_hash: &[u8]) -> Result<(), sqlx::Error> {
        sqlx::query(self.sql(sql! {
            postgres_sqlite: "DELETE FROM email_tokens WHERE token_hash = $1",
            mysql:           "DELETE FROM email_tokens WHERE token_hash = ?",
        }))
        .bind(token_hash)
        .execute(&self.pool)
        .await
        .map(drop)
    }

    /// Takes the verification `token` (deletes it, if still there and live at `at`) and marks
    /// its user's email verified at `at` if the address is still the one it was sent to.
    /// Whether this call took it: of two using one link, one.
    pub async fn verify_email(&self, token: &EmailToken, at: i64) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if !take_token(&mut tx, &token.token_hash, EmailTokenPurpose::Verify, at).await? {
            return Ok(false);
        }
        sqlx::query(self.sql(sql! {
            postgres_sqlite: "UPDATE users SET email_verified_at = $1 \
                              WHERE id = $2 AND email = $3 AND email_verified_at IS NULL",
            mysql:           "UPDATE users SET email_verified_at = ? \
                              WHERE id = ? AND email = ? AND email_verified_at IS NULL",
        }))
        .bind(at)
        .bind(&token.user_id)
        .bind(&token.email)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Completes a password reset in one transaction: takes the reset `token`, replaces the
    /// password hash `old_hash` (the one the token's digest was checked against: a change since
    /// makes this [`PasswordReset::Stale`]) by `new_hash`, marks the email verified (the link
    /// proved the address), deletes the user's other reset tokens, and revokes every session
    /// and token of the user (`at`, through the revocation feed to the gateway). Second-factor
    /// challenges are bound to the old hash: void.
    ///
    /// In the same transaction: the login lock of `lock_key` (the email's) is cleared, and, when
    /// `drop_second_factor` (the address was never verified before this link proved it), the
    /// user's TOTP factor and recovery codes are deleted: whoever signed up with someone
    /// else's address before its owner could enrol a factor the owner would then be asked for.
    pub async fn reset_password(
        &self,
        token: &EmailToken,
        old_hash: &str,
        new_hash: &str,
        at: RevokeAt,
        lock_key: &str,
        drop_second_factor: bool,
    ) -> Result<PasswordReset, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if !take_token(&mut tx, &token.token_hash, EmailTokenPurpose::Reset, at.now).await? {
            return Ok(PasswordReset::Stale);
        }
        let changed = sqlx::query(self.sql(sql! {
            postgres_sqlite: "UPDATE users SET password_hash = $1, \
                              email_verified_at = COALESCE(email_verified_at, $2) \
                              WHERE id = $3 AND password_hash = $4 AND email = $5 \
                              AND disabled_at IS NULL",
            mysql:           "UPDATE users SET password_hash = ?, \
                              email_verified_at = COALESCE(email_verified_at, ?) \
                              WHERE id = ? AND password_hash = ? AND email = ? \
                              AND disabled_at IS NULL",
        }))
        .bind(new_hash)
        .bind(at.now)
        .bind(&token.user_id)
        .bind(old_hash)
        .bind(&token.email)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed != 1 {
            tx.rollback().await?;
            return Ok(PasswordReset::Stale);
        }
        sqlx::query(self.sql(sql! {
            postgres_sqlite: "DELETE FROM email_tokens WHERE user_id = $1 AND purpose = 'reset'",
            mysql:           "DELETE FROM email_tokens WHERE user_id = ? AND purpose = 'reset'",
        }))
        .bind(&token.user_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(self.sql(sql! {
            postgres_sqlite: "DELETE FROM login_attempts WHERE email = $1",
            mysql:           "DELETE FROM login_attempts WHERE email = ?",
        }))
        .bind(lock_key)
        .execute(&mut *tx)
        .await?;
        if drop_second_factor {
            for statement in [
                sql! {
                    postgres_sqlite: "DELETE FROM user_totp WHERE user_id = $1",
                    mysql:           "DELETE FROM user_totp WHERE user_id = ?",
                },
                sql! {
                    postgres_sqlite: "DELETE FROM recovery_codes WHERE user_id = $1",
                    mysql:           "DELETE FROM recovery_codes WHERE user_id = ?",
                },
            ] {
                sqlx::query(self.sql(statement))
                    .bind(&token.user_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        Self::revoke_user_tokens(&mut tx, &token.user_id, at, "password_reset").await?;
        tx.commit().await?;
        Ok(PasswordReset::Done)
    }

    /// Marks the email of `user_id` verified at `at` (an operator's `users verify-email`);
    /// whether it was not already.
    pub async fn mark_email_verified(&self, user_id: &str, at: i64) -> Result<bool, sqlx::Error> {
        sqlx::query(self.sql(sql! {
            postgres_sqlite: "UPDATE users SET email_verified_at = $1 \
                              WHERE id = $2 AND email_verified_at IS NULL",
            mysql:           "UPDATE users SET email_verified_at = ? \
                              WHERE id = ? AND email_verified_at IS NULL",
        }))
        .bind(at)
        .bind(user_id)
        .execute(&self.pool)
        .await
        .map(|done| done.rows_affected() == 1)
    }

    /// Deletes the tokens expired at `now` (the hourly cleanup); how many.
    pub async fn prune_email_tokens(&self, now: i64) -> Result<u64, sqlx::Error> {
        sqlx::query(self.sql(sql! {
            postgres_sqlite: "DELETE FROM email_tokens WHERE expires_at <= $1",
            mysql:           "DELETE FROM email_tokens WHERE expires_at <= ?",
        }))
        .bind(now)
        .execute(&self.pool)
        .await
        .map(|done| done.rows_affected())
    }
}

/// Deletes the live token `token_hash` of `purpose` on `conn`; whether this call deleted it.
async fn take_token(
    conn: &mut AnyConnection,
    token_hash: &[u8],
    purpose: EmailTokenPurpose,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let taken = sqlx::query(super::Backend::of_connection(conn).sql(sql! {
        postgres_sqlite: "DELETE FROM email_tokens \
                          WHERE token_hash = $1 AND purpose = $2 AND expires_at > $3",
        mysql:           "DELETE FROM email_tokens \
                          WHERE token_hash = ? AND purpose = ? AND expires_at > ?",
    }))
    .bind(token_hash)
    .bind(purpose.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(taken == 1)
}
