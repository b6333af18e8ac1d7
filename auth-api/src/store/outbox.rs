//! Queries on `email_outbox`: mail waiting to be sent, being sent, sent, or given up (issue 15).
//!
//! What sends mail inserts a row ([`enqueue_email`], in its own transaction when it has one),
//! its bodies sealed by [`crate::mail`], whose sender delivers it later. A sender *claims* due
//! messages: in one atomic step it picks pending rows whose `next_attempt_at` has come, stamps
//! them with its claim id and a lease end, moves `next_attempt_at` to that lease end and counts
//! an attempt.
//! Only the holder of the claim marks a message sent or failed; a sender that dies in between
//! leaves the row to become due again when its lease ends, and the next claim sends it again
//! (at-least-once: never lost, in that case possibly twice).
//!
//! The claim is one statement under SQLite's write lock (`UPDATE … RETURNING`); PostgreSQL
//! picks the rows with `FOR UPDATE SKIP LOCKED` inside the same `UPDATE`; MySQL and MariaDB,
//! without `UPDATE … RETURNING`, take the rows with a locking read that skips locked rows and
//! update them in the same transaction. Two replicas claiming at once thus get disjoint
//! batches, and a row claimed and committed by one is no longer due for the other (PostgreSQL
//! and InnoDB re-check the condition on the latest version of a row they lock).

use sqlx::{AnyConnection, FromRow};

use super::{sql::sql, Backend, Store};

/// Longest `last_error` stored, in bytes (the MySQL column's size).
const MAX_ERROR_BYTES: usize = 1000;

/// A message to queue, its bodies already sealed ([`crate::mail::Email::seal`]).
#[derive(Clone, PartialEq, Eq)]
pub struct QueuedEmail {
    /// UUID text, chosen before sealing (the bodies are bound to it).
    pub id: String,
    /// What it is for (`verify_email`, `password_reset`, …), for metrics and limits.
    pub kind: String,
    /// One mailbox, as text (`ada@example.com`).
    pub recipient: String,
    /// One line.
    pub subject: String,
    /// The id of the key-encryption key whose subkey sealed the bodies.
    pub body_kek: String,
    /// The `text/plain` part, sealed: nonce, then ciphertext and tag.
    pub text_body: Vec<u8>,
    /// The `text/html` part, sealed likewise.
    pub html_body: Vec<u8>,
}

impl std::fmt::Debug for QueuedEmail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedEmail")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("body_kek", &self.body_kek)
            .finish_non_exhaustive()
    }
}

/// A message a sender has claimed and now delivers, its bodies still sealed.
#[derive(Clone, PartialEq, Eq, FromRow)]
pub struct ClaimedEmail {
    /// UUID text.
    pub id: String,
    /// As queued.
    pub kind: String,
    /// As queued.
    pub recipient: String,
    /// As queued.
    pub subject: String,
    /// As queued.
    pub body_kek: String,
    /// As queued (sealed).
    pub text_body: Vec<u8>,
    /// As queued (sealed).
    pub html_body: Vec<u8>,
    /// Attempts begun, this one included.
    pub attempts: i64,
}

/// Recipients and subjects stay out of debug output too.
impl std::fmt::Debug for ClaimedEmail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimedEmail")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// One row as `auth-api outbox list` shows it: everything but the bodies.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct OutboxEntry {
    /// UUID text.
    pub id: String,
    /// What it is for.
    pub kind: String,
    /// To whom.
    pub recipient: String,
    /// `pending`, `sent` or `dead`.
    pub status: String,
    /// Attempts begun.
    pub attempts: i64,
    /// Unix seconds: queued.
    pub created_at: i64,
    /// Unix seconds: when a pending message is next due.
    pub next_attempt_at: i64,
    /// Unix seconds: the end of the current claim's lease, if claimed.
    pub claimed_until: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Unix seconds, once sent.
    pub sent_at: Option<i64>,
}

/// Counts of the outbox by state, for the metrics gauge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    /// Waiting or being sent.
    pub pending: i64,
    /// Given up.
    pub dead: i64,
}

/// What a failed attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Tried again from this Unix second.
    RetryAt(i64),
    /// No attempt left: kept as `dead`.
    Dead,
    /// The claim was no longer ours (the lease ended and another sender took the message).
    NotOurs,
}

/// Queues `email` as pending, due at `now`, on `conn`: inside the caller's transaction when it
/// has one, so the message exists exactly when what caused it was committed.
pub async fn enqueue_email(
    conn: &mut AnyConnection,
    email: &QueuedEmail,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(Backend::of_connection(conn).sql(sql! {
        postgres_sqlite: "INSERT INTO email_outbox (id, kind, recipient, subject, body_kek, text_body, \
                          html_body, status, created_at, attempts, next_attempt_at) \
                          VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, 0, $9)",
        mysql:           "INSERT INTO email_outbox (id, kind, recipient, subject, body_kek, text_body, \
                          html_body, status, created_at, attempts, next_attempt_at) \
                          VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, 0, ?)",
    }))
    .bind(&email.id)
    .bind(&email.kind)
    .bind(&email.recipient)
    .bind(&email.subject)
    .bind(&email.body_kek)
    .bind(&email.text_body)
    .bind(&email.html_body)
    .bind(now)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map(drop)
}

const CLAIMED_COLUMNS: &str =
    "id, kind, recipient, subject, body_kek, text_body, html_body, attempts";

impl Store {
    /// Queues `email` on a connection of its own (see [`enqueue_email`]).
    pub async fn enqueue_email(&self, email: &QueuedEmail, now: i64) -> Result<(), sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        enqueue_email(&mut conn, email, now).await
    }

    /// Claims up to `limit` messages due at `now` for `claim_id` until `lease_until` (module
    /// docs): each gets an attempt counted and is not due again before `lease_until`.
    pub async fn claim_emails(
        &self,
        claim_id: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<ClaimedEmail>, sqlx::Error> {
        match self.backend {
            Backend::Postgres | Backend::Sqlite => {
                // SQLite has no row locks: its one writer at a time makes the statement atomic.
                let skip_locked = if self.backend == Backend::Postgres {
                    " FOR UPDATE SKIP LOCKED"
                } else {
                    ""
                };
                let claim = format!(
                    "UPDATE email_outbox SET claim_id = $1, claimed_until = $2, \
                     next_attempt_at = $3, attempts = attempts + 1 \
                     WHERE id IN (SELECT id FROM email_outbox \
                     WHERE status = 'pending' AND next_attempt_at <= $4 \
                     ORDER BY next_attempt_at, created_at LIMIT $5{skip_locked}) \
                     RETURNING {CLAIMED_COLUMNS}"
                );
                sqlx::query_as(&claim)
                    .bind(claim_id)
                    .bind(lease_until)
                    .bind(lease_until)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
            }
            Backend::Mysql => {
                let mut tx = self.pool.begin().await?;
                let due: Vec<(String,)> = sqlx::query_as(
                    "SELECT id FROM email_outbox WHERE status = 'pending' AND next_attempt_at <= ? \
                     ORDER BY next_attempt_at, created_at LIMIT ? FOR UPDATE SKIP LOCKED",
                )
                .bind(now)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                if due.is_empty() {
                    tx.commit().await?;
                    return Ok(Vec::new());
                }
                let list = super::sql::question_list(due.len());
                let update = format!(
                    "UPDATE email_outbox SET claim_id = ?, claimed_until = ?, next_attempt_at = ?, \
                     attempts = attempts + 1 WHERE id IN ({list})"
                );
                let mut query = sqlx::query(&update)
                    .bind(claim_id)
                    .bind(lease_until)
                    .bind(lease_until);
                for (id,) in &due {
                    query = query.bind(id);
                }
                query.execute(&mut *tx).await?;
                let select = format!(
                    "SELECT {CLAIMED_COLUMNS} FROM email_outbox WHERE id IN ({list}) \
                     ORDER BY next_attempt_at, created_at"
                );
                let mut query = sqlx::query_as(&select);
                for (id,) in &due {
                    query = query.bind(id);
                }
                let claimed = query.fetch_all(&mut *tx).await?;
                tx.commit().await?;
                Ok(claimed)
            }
        }
    }

    /// Marks message `id` sent at `now`, if `claim_id` still holds it, and forgets its bodies.
    /// `false`: another sender has claimed it since (it may be delivered twice).
    pub async fn mark_email_sent(
        &self,
        id: &str,
        claim_id: &str,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(self.sql(sql! {
            postgres_sqlite: "UPDATE email_outbox SET status = 'sent', sent_at = $1, claim_id = NULL, \
                              claimed_until = NULL, last_error = NULL, text_body = NULL, html_body = NULL, body_kek = NULL \
                              WHERE id = $2 AND claim_id = $3 AND status = 'pending'",
            mysql:           "UPDATE email_outbox SET status = 'sent', sent_at = ?, claim_id = NULL, \
                              claimed_until = NULL, last_error = NULL, text_body = NULL, html_body = NULL, body_kek = NULL \
                              WHERE id = ? AND claim_id = ? AND status = 'pending'",
        }))
        .bind(now)
        .bind(id)
        .bind(claim_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a failed attempt of message `id` under `claim_id`: it is due again at
    /// `retry_at`, or, when `give_up` (the attempts are spent or the failure is permanent), it
    /// is kept as `dead` without its bodies. `error` is stored without control characters, cut
    /// to 1000 bytes.
    pub async fn mark_email_failed(
        &self,
        id: &str,
        claim_id: &str,
        error: &str,
        now: i64,
        retry_at: Option<i64>,
    ) -> Result<AfterFailure, sqlx::Error> {
        let error = clean_error(error);
        let error = error.as_str();
        let done = match retry_at {
            Some(at) => {
                sqlx::query(self.sql(sql! {
                    postgres_sqlite: "UPDATE email_outbox SET next_attempt_at = $1, last_error = $2, \
                                      claim_id = NULL, claimed_until = NULL \
                                      WHERE id = $3 AND claim_id = $4 AND status = 'pending'",
                    mysql:           "UPDATE email_outbox SET next_attempt_at = ?, last_error = ?, \
                                      claim_id = NULL, claimed_until = NULL \
                                      WHERE id = ? AND claim_id = ? AND status = 'pending'",
                }))
                .bind(at)
                .bind(error)
                .bind(id)
                .bind(claim_id)
                .execute(&self.pool)
                .await?
            }
            None => {
                sqlx::query(self.sql(sql! {
                    postgres_sqlite: "UPDATE email_outbox SET status = 'dead', dead_at = $1, last_error = $2, \
                                      claim_id = NULL, claimed_until = NULL, text_body = NULL, html_body = NULL, body_kek = NULL \
                                      WHERE id = $3 AND claim_id = $4 AND status = 'pending'",
                    mysql:           "UPDATE email_outbox SET status = 'dead', dead_at = ?, last_error = ?, \
                                      claim_id = NULL, claimed_until = NULL, text_body = NULL, html_body = NULL, body_kek = NULL \
                                      WHERE id = ? AND claim_id = ? AND status = 'pending'",
                }))
                .bind(now)
                .bind(error)
                .bind(id)
                .bind(claim_id)
                .execute(&self.pool)
                .await?
            }
        };
        Ok(match (done.rows_affected(), retry_at) {
            (0, _) => AfterFailure::NotOurs,
            (_, Some(at)) => AfterFailure::RetryAt(at),
            (_, None) => AfterFailure::Dead,
        })
    }

    /// Puts message `id` back, due at `retry_at`, when `claim_id` could not even try it (its
    /// bodies are sealed under a key-encryption key this replica does not hold): the claim's
    /// attempt is not counted, so the message does not run out of attempts on replicas that
    /// cannot open it, and its bodies stay for one that can. `error` as in
    /// [`Store::mark_email_failed`]; `false`: the claim no longer holds it.
    pub async fn defer_email(
        &self,
        id: &str,
        claim_id: &str,
        error: &str,
        retry_at: i64,
    ) -> Result<bool, sqlx::Error> {
        let error = clean_error(error);
        let done = sqlx::query(self.sql(sql! {
            postgres_sqlite: "UPDATE email_outbox SET next_attempt_at = $1, last_error = $2, \
                              attempts = attempts - 1, claim_id = NULL, claimed_until = NULL \
                              WHERE id = $3 AND claim_id = $4 AND status = 'pending'",
            mysql:           "UPDATE email_outbox SET next_attempt_at = ?, last_error = ?, \
                              attempts = attempts - 1, claim_id = NULL, claimed_until = NULL \
                              WHERE id = ? AND claim_id = ? AND status = 'pending'",
        }))
        .bind(retry_at)
        .bind(error)
        .bind(id)
        .bind(claim_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The outbox for operators, newest first, at most `limit` rows: every message, or with
    /// `stuck` only the dead ones and the pending ones that have failed at least once, were
    /// claimed more than once (a claim whose outcome was never recorded leaves no error), or
    /// were due before `stuck_since` (a sender should have taken them by then).
    pub async fn list_outbox(
        &self,
        stuck: bool,
        stuck_since: i64,
        limit: i64,
    ) -> Result<Vec<OutboxEntry>, sqlx::Error> {
        if stuck {
            sqlx::query_as(self.sql(sql! {
                postgres_sqlite: "SELECT id, kind, recipient, status, attempts, created_at, next_attempt_at, \
                                  claimed_until, last_error, sent_at FROM email_outbox \
                                  WHERE status = 'dead' OR (status = 'pending' AND \
                                  (last_error IS NOT NULL OR attempts > 1 OR next_attempt_at < $1)) \
                                  ORDER BY created_at DESC, id LIMIT $2",
                mysql:           "SELECT id, kind, recipient, status, attempts, created_at, next_attempt_at, \
                                  claimed_until, last_error, sent_at FROM email_outbox \
                                  WHERE status = 'dead' OR (status = 'pending' AND \
                                  (last_error IS NOT NULL OR attempts > 1 OR next_attempt_at < ?)) \
                                  ORDER BY created_at DESC, id LIMIT ?",
            }))
            .bind(stuck_since)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
        } else {
            sqlx::query_as(self.sql(sql! {
                postgres_sqlite: "SELECT id, kind, recipient, status, attempts, created_at, next_attempt_at, \
                                  claimed_until, last_error, sent_at FROM email_outbox \
                                  ORDER BY created_at DESC, id LIMIT $1",
                mysql:           "SELECT id, kind, recipient, status, attempts, created_at, next_attempt_at, \
                                  claimed_until, last_error, sent_at FROM email_outbox \
                                  ORDER BY created_at DESC, id LIMIT ?",
            }))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
        }
    }

    /// How many messages are pending and dead (for the metrics gauge).
    pub async fn count_outbox(&self) -> Result<OutboxCounts, sqlx::Error> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, COUNT(*) FROM email_outbox WHERE status IN ('pending', 'dead') \
             GROUP BY status",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut counts = OutboxCounts::default();
        for (status, n) in rows {
            match status.as_str() {
                "pending" => counts.pending = n,
                "dead" => counts.dead = n,
                _ => {}
            }
        }
        Ok(counts)
    }

    /// How many messages of `kind` were queued for `recipient` (as queued: the caller's
    /// canonical form) since `since`, whatever became of them: what per-recipient limits on
    /// sending mail count.
    pub async fn emails_queued_since(
        &self,
        recipient: &str,
        kind: &str,
        since: i64,
    ) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(self.sql(sql! {
            postgres_sqlite: "SELECT COUNT(*) FROM email_outbox \
                              WHERE recipient = $1 AND kind = $2 AND created_at >= $3",
            mysql:           "SELECT COUNT(*) FROM email_outbox \
                              WHERE recipient = ? AND kind = ? AND created_at >= ?",
        }))
        .bind(recipient)
        .bind(kind)
        .bind(since)
        .fetch_one(&self.pool)
        .await
    }

    /// Deletes messages sent before `sent_before` and dead since before `dead_before` (the
    /// hourly cleanup); how many.
    pub async fn prune_outbox(
        &self,
        sent_before: i64,
        dead_before: i64,
    ) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(self.sql(sql! {
            postgres_sqlite: "DELETE FROM email_outbox WHERE (status = 'sent' AND sent_at < $1) \
                              OR (status = 'dead' AND dead_at < $2)",
            mysql:           "DELETE FROM email_outbox WHERE (status = 'sent' AND sent_at < ?) \
                              OR (status = 'dead' AND dead_at < ?)",
        }))
        .bind(sent_before)
        .bind(dead_before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `error` as stored in `last_error`: a relay's reply may hold anything, and PostgreSQL refuses
/// a NUL in text, so a reply with one would fail every recording of its failure (and the message
/// would be claimed again and again). Line breaks and tabs become spaces, other control
/// characters go; then cut to [`MAX_ERROR_BYTES`].
fn clean_error(error: &str) -> String {
    let clean: String = error
        .chars()
        .filter_map(|c| match c {
            '\n' | '\r' | '\t' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect();
    truncate(&clean, MAX_ERROR_BYTES).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("ééé", 3), "é");
        assert_eq!(truncate("abcdef", 4), "abcd");
    }

    #[test]
    fn errors_are_stored_without_control_characters() {
        assert_eq!(
            clean_error("550 5.1.1\0 no\u{7} such\r\nuser\u{9b}é"),
            "550 5.1.1 no such  useré"
        );
        let long = format!("{}\0", "é".repeat(600));
        assert_eq!(clean_error(&long), "é".repeat(500));
    }
}
