//! Queries on `revocations` and `revocation_feed`: the feed of revoked sessions and users that
//! the gateway follows with a cursor.
//!
//! Every entry gets the next number of the feed (`seq`) from the single `revocation_feed` row,
//! bumped as the last statement of the transaction that revokes. The row lock is held until
//! commit, so numbers are handed out in commit order: once a reader sees head H, every entry
//! numbered up to H is committed, and a reader that resumes after H misses nothing. The feed's
//! `epoch` is random per database, so a cursor from another database is never mistaken for one
//! of this one. Entries are kept, and served, until `until + MAX_CLOCK_SKEW_SECS`.

use auth_jwt::MAX_CLOCK_SKEW_SECS;
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
    /// The entry's place in the feed: unique, and increasing in commit order.
    pub seq: i64,
    /// `session` or `user`.
    pub kind: String,
    /// The session id or the user id.
    pub subject: String,
    /// For users: tokens issued before this are refused.
    pub not_before: Option<i64>,
    /// When every token the entry refuses has expired; it stays in the feed
    /// [`MAX_CLOCK_SKEW_SECS`] longer.
    pub until: i64,
}

/// Where a reader of the feed says it stands: the `after` and `epoch` of its last answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedCursor<'a> {
    /// The last `seq` it holds; `None` for nothing (0 with an epoch: an empty feed).
    pub after: Option<u64>,
    /// The epoch its `after` belongs to.
    pub epoch: Option<&'a str>,
}

/// One answer of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationPage {
    /// The feed's numbering: random per database.
    pub epoch: String,
    /// The page starts a full sync: the reader must drop what it held once `more` is false.
    pub full: bool,
    /// The cursor to resume from.
    pub seq: u64,
    /// More entries wait past `seq`.
    pub more: bool,
    /// The entries of this page, in feed order.
    pub entries: Vec<RevocationRow>,
}

/// Entries whose `until` is at or before this can no longer refuse a token that any verifier
/// (allowed at most [`MAX_CLOCK_SKEW_SECS`] of skew) would still accept.
fn expired_at_or_before(now: i64) -> i64 {
    now.saturating_sub(i64::try_from(MAX_CLOCK_SKEW_SECS).unwrap_or(i64::MAX))
}

/// Where a page starts (`None`: a full sync from the beginning), given the reader's cursor and
/// the feed's epoch and head.
fn resume_after(cursor: FeedCursor<'_>, epoch: &str, head: i64) -> Option<i64> {
    // `after=0` with the right epoch is a reader that holds an empty feed: incremental, so an
    // empty feed does not answer `full` (a rebuild) on every poll.
    let after = i64::try_from(cursor.after?).ok()?;
    (cursor.epoch == Some(epoch) && after <= head).then_some(after)
}

impl Store {
    /// One page of the feed for a reader at `cursor`: at most `page` entries (at least one)
    /// numbered after the cursor and up to the head read first, that can still matter at `now`.
    /// A missing `after`, a missing or other epoch, or an `after` past the head starts a full
    /// sync (`after=0` with this epoch is a reader that holds an empty feed: incremental).
    pub async fn revocation_page(
        &self,
        cursor: FeedCursor<'_>,
        now: i64,
        page: usize,
    ) -> Result<RevocationPage, sqlx::Error> {
        // The head first: everything numbered up to it is committed (see the module docs), so
        // the rows read next, in a later snapshot, hold every entry up to it.
        let (epoch, head): (String, i64) =
            sqlx::query_as("SELECT epoch, seq FROM revocation_feed WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
        let resume = resume_after(cursor, &epoch, head);
        let page = page.max(1);
        let mut entries: Vec<RevocationRow> = sqlx::query_as(
            "SELECT seq, kind, subject, not_before, until FROM revocations \
             WHERE seq > $1 AND seq <= $2 AND until > $3 ORDER BY seq LIMIT $4",
        )
        .bind(resume.unwrap_or(0))
        .bind(head)
        .bind(expired_at_or_before(now))
        .bind(
            i64::try_from(page)
                .unwrap_or(i64::MAX - 1)
                .saturating_add(1),
        )
        .fetch_all(&self.pool)
        .await?;
        let more = entries.len() > page;
        let seq = if more {
            entries.truncate(page);
            entries.last().map_or(head, |row| row.seq)
        } else {
            head
        };
        Ok(RevocationPage {
            epoch,
            full: resume.is_none(),
            seq: u64::try_from(seq).unwrap_or(0),
            more,
            entries,
        })
    }

    /// Deletes entries that can no longer matter: `until` more than [`MAX_CLOCK_SKEW_SECS`]
    /// before `now`, the same line the feed draws.
    pub async fn prune_revocations(&self, now: i64) -> Result<u64, sqlx::Error> {
        let result = sqlx::query("DELETE FROM revocations WHERE until <= $1")
            .bind(expired_at_or_before(now))
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    /// Adds an entry, inside the caller's transaction. Call it last in the transaction: it
    /// locks the feed's head until commit.
    pub(super) async fn record_revocation(
        conn: &mut AnyConnection,
        revoked: Revoked<'_>,
        until: i64,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        Self::record_revocations(conn, &[revoked], until, now).await
    }

    /// Adds entries, numbered in order, inside the caller's transaction. Call it last in the
    /// transaction: it takes the feed's head (one bump for all of them) and holds its lock
    /// until commit, which is what makes numbers follow commit order.
    pub(super) async fn record_revocations(
        conn: &mut AnyConnection,
        revoked: &[Revoked<'_>],
        until: i64,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        if revoked.is_empty() {
            return Ok(());
        }
        let count = i64::try_from(revoked.len()).unwrap_or(i64::MAX);
        let head: i64 = sqlx::query_scalar(
            "UPDATE revocation_feed SET seq = seq + $1 WHERE id = 1 RETURNING seq",
        )
        .bind(count)
        .fetch_one(&mut *conn)
        .await?;
        let mut seq = head.saturating_sub(count);
        for entry in revoked {
            seq = seq.saturating_add(1);
            let (kind, subject, not_before) = match *entry {
                Revoked::Session(sid) => ("session", sid, None),
                Revoked::User {
                    user_id,
                    not_before,
                } => ("user", user_id, Some(not_before)),
            };
            sqlx::query(
                "INSERT INTO revocations (kind, subject, not_before, until, created_at, seq) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(kind)
            .bind(subject)
            .bind(not_before)
            .bind(until)
            .bind(now)
            .bind(seq)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(after: Option<u64>, epoch: Option<&str>) -> FeedCursor<'_> {
        FeedCursor { after, epoch }
    }

    #[test]
    fn a_cursor_resumes_only_within_the_same_epoch_and_up_to_the_head() {
        let cases = [
            (
                at(Some(5), Some("e1")),
                Some(5),
                "same epoch, behind the head",
            ),
            (at(Some(9), Some("e1")), Some(9), "same epoch, at the head"),
            (at(None, Some("e1")), None, "no cursor"),
            (
                at(Some(0), Some("e1")),
                Some(0),
                "an empty feed's reader stays incremental",
            ),
            (at(Some(0), None), None, "zero without an epoch"),
            (at(Some(5), None), None, "a cursor without its epoch"),
            (at(Some(5), Some("e2")), None, "another database's cursor"),
            (
                at(Some(10), Some("e1")),
                None,
                "past the head: restored from a backup",
            ),
            (at(Some(u64::MAX), Some("e1")), None, "past any i64"),
        ];
        for (cursor, expected, reason) in cases {
            assert_eq!(resume_after(cursor, "e1", 9), expected, "{reason}");
        }
    }

    #[test]
    fn entries_are_kept_for_the_largest_clock_skew_past_until() {
        assert_eq!(expired_at_or_before(10_000), 10_000 - 600);
        assert_eq!(expired_at_or_before(i64::MIN), i64::MIN);
    }
}
