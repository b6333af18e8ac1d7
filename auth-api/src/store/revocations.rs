//! Queries on `revocations` and `revocation_feed`: the feed of revoked sessions and users that
//! the gateway follows with a cursor.
//!
//! Every entry gets the next number of the feed (`seq`) from the single `revocation_feed` row,
//! bumped as the last statement of the transaction that revokes. The row lock is held until
//! commit, so numbers are handed out in commit order: once a reader sees head H, every entry
//! numbered up to H is committed, and a reader that resumes after H misses nothing. The feed's
//! `epoch` is random per database, so a cursor from another database is never mistaken for one
//! of this one. Entries are kept, and served, until `until + MAX_CLOCK_SKEW_SECS`.
//!
//! The epoch is in the data, so a restored backup, a promoted asynchronous standby or a copy
//! keeps it while numbering new entries again from an older head. Every entry therefore also
//! gets a random 64-bit `tag` (the head row keeps the tag of the head entry), and a cursor is
//! `(seq, tag)`: a reader resumes only where the entry it stopped at is still there with the
//! same tag. A cursor from a lost history (or one whose entry was pruned) starts a full sync.
//!
//! On MySQL, at READ COMMITTED (see the store's docs), the same holds: InnoDB keeps the head
//! row's exclusive lock until commit, and each statement of a reader reads what was committed
//! when it began, so the entries read after the head hold every entry numbered up to it.

use auth_jwt::MAX_CLOCK_SKEW_SECS;
use rand::Rng;
use sqlx::{AnyConnection, FromRow};

use super::{sql::sql, Backend, Store};

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
    /// 64 random bits (stored as a signed BIGINT) that tell this entry from one numbered alike
    /// in another history of the database.
    pub tag: i64,
}

/// Where a reader of the feed says it stands: the `seq`, `epoch` and `tag` of its last answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedCursor<'a> {
    /// The last `seq` it holds; `None` for nothing.
    pub after: Option<u64>,
    /// The epoch its `after` belongs to.
    pub epoch: Option<&'a str>,
    /// The tag of the entry at `after` (of the head, when `after` was the head).
    pub tag: Option<u64>,
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
    /// The tag of the entry at `seq`: the last entry of the page when `more`, else the head's.
    pub tag: u64,
    /// More entries wait past `seq`.
    pub more: bool,
    /// The entries of this page, in feed order.
    pub entries: Vec<RevocationRow>,
}

/// The revocation feed's figures at one moment (`Store::revocation_feed_stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedStats {
    /// Rows in the feed.
    pub entries: i64,
    /// The `seq` of the newest entry ever numbered (0 before the first).
    pub head: i64,
    /// When the newest row still in the feed was written (Unix seconds); `None` when empty.
    pub newest_created_at: Option<i64>,
}

/// Entries whose `until` is at or before this can no longer refuse a token that any verifier
/// (allowed at most [`MAX_CLOCK_SKEW_SECS`] of skew) would still accept.
fn expired_at_or_before(now: i64) -> i64 {
    now.saturating_sub(i64::try_from(MAX_CLOCK_SKEW_SECS).unwrap_or(i64::MAX))
}

/// A tag as stored (BIGINT) from its 64 bits.
fn stored_tag(tag: u64) -> i64 {
    i64::from_be_bytes(tag.to_be_bytes())
}

/// A tag's 64 bits from its stored form (BIGINT).
fn tag_bits(tag: i64) -> u64 {
    u64::from_be_bytes(tag.to_be_bytes())
}

/// What a reader's cursor allows, given the feed's epoch, head and head tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resume {
    /// A full sync from the beginning.
    Full,
    /// Resume after this `seq`.
    After(i64),
    /// Resume after `seq` only if the entry numbered `seq` is there with this tag.
    AfterEntry { seq: i64, tag: i64 },
}

/// Where a page starts, given the reader's cursor and the feed's epoch, head and head tag. A
/// reader resumes only in this epoch, up to the head, and with the tag of the entry it stopped
/// at: a missing tag or a tag of another history (a restored database) starts a full sync.
/// Except at 0: a reader there holds nothing, so it skips nothing in any history once the head
/// has moved on (no entry is numbered 0); at a head of 0 it still needs the head's tag.
fn resume_after(cursor: FeedCursor<'_>, epoch: &str, head: i64, head_tag: i64) -> Resume {
    let (Some(after), Some(tag)) = (cursor.after, cursor.tag) else {
        return Resume::Full;
    };
    let (Ok(after), tag) = (i64::try_from(after), stored_tag(tag)) else {
        return Resume::Full;
    };
    if cursor.epoch != Some(epoch) || after > head {
        Resume::Full
    } else if after == head {
        // The head's tag, also at 0: an empty feed's reader stays incremental, so an empty
        // feed does not answer `full` (a rebuild) on every poll.
        if tag == head_tag {
            Resume::After(after)
        } else {
            Resume::Full
        }
    } else if after == 0 {
        Resume::After(0)
    } else {
        Resume::AfterEntry { seq: after, tag }
    }
}

impl Store {
    /// One page of the feed for a reader at `cursor`: at most `page` entries (at least one)
    /// numbered after the cursor and up to the head read first, that can still matter at `now`.
    /// A missing `after` or `tag`, a missing or other epoch, an `after` past the head, or a tag
    /// that is not the one of the entry at `after` (of the head, when `after` is the head)
    /// starts a full sync.
    pub async fn revocation_page(
        &self,
        cursor: FeedCursor<'_>,
        now: i64,
        page: usize,
    ) -> Result<RevocationPage, sqlx::Error> {
        // The head first: everything numbered up to it is committed (see the module docs), so
        // the rows read next, in a later snapshot, hold every entry up to it.
        let (epoch, head, head_tag): (String, i64, i64) =
            sqlx::query_as("SELECT epoch, seq, tag FROM revocation_feed WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
        let resume = match resume_after(cursor, &epoch, head, head_tag) {
            Resume::Full => None,
            Resume::After(after) => Some(after),
            Resume::AfterEntry { seq, tag } => {
                // Numbered below the head: committed (see the module docs), unless pruned
                // since, or of another history.
                let found: Option<i64> = sqlx::query_scalar(self.sql(sql! {
                    postgres_sqlite: "SELECT tag FROM revocations WHERE seq = $1",
                    mysql:           "SELECT tag FROM revocations WHERE seq = ?",
                }))
                .bind(seq)
                .fetch_optional(&self.pool)
                .await?;
                (found == Some(tag)).then_some(seq)
            }
        };
        let page = page.max(1);
        let mut entries: Vec<RevocationRow> = sqlx::query_as(self.sql(sql! {
            postgres_sqlite: "SELECT seq, kind, subject, not_before, until, tag FROM revocations \
                              WHERE seq > $1 AND seq <= $2 AND until > $3 ORDER BY seq LIMIT $4",
            mysql:           "SELECT seq, kind, subject, not_before, `until`, tag FROM revocations \
                              WHERE seq > ? AND seq <= ? AND `until` > ? ORDER BY seq LIMIT ?",
        }))
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
        let (seq, tag) = if more {
            entries.truncate(page);
            entries
                .last()
                .map_or((head, head_tag), |row| (row.seq, row.tag))
        } else {
            (head, head_tag)
        };
        Ok(RevocationPage {
            epoch,
            full: resume.is_none(),
            seq: u64::try_from(seq).unwrap_or(0),
            tag: tag_bits(tag),
            more,
            entries,
        })
    }

    /// The feed's figures for the metrics: its entries, its head and when its newest entry was
    /// written. One statement; it counts the table (live entries and those the next prune
    /// removes), so the caller reads it at most every few seconds.
    pub async fn revocation_feed_stats(&self) -> Result<FeedStats, sqlx::Error> {
        let (head, entries, newest_created_at): (i64, i64, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT seq FROM revocation_feed WHERE id = 1), COUNT(*), MAX(created_at) \
             FROM revocations",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(FeedStats {
            entries,
            head,
            newest_created_at,
        })
    }

    /// Deletes entries that can no longer matter: `until` more than [`MAX_CLOCK_SKEW_SECS`]
    /// before `now`, the same line the feed draws.
    pub async fn prune_revocations(&self, now: i64) -> Result<u64, sqlx::Error> {
        let result = sqlx::query(self.sql(sql! {
            postgres_sqlite: "DELETE FROM revocations WHERE until <= $1",
            mysql:           "DELETE FROM revocations WHERE `until` <= ?",
        }))
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
        let tags: Vec<i64> = {
            let mut rng = rand::thread_rng();
            revoked.iter().map(|_| rng.gen()).collect()
        };
        let last_tag = tags.last().copied().unwrap_or_default();
        // The head keeps the tag of its entry, the last one.
        let backend = Backend::of_connection(conn);
        let bump = sqlx::query(backend.sql(sql! {
            postgres_sqlite: "UPDATE revocation_feed SET seq = seq + $1, tag = $2 WHERE id = 1 RETURNING seq",
            mysql:           "UPDATE revocation_feed SET seq = seq + ?, tag = ? WHERE id = 1",
        }))
        .bind(count)
        .bind(last_tag);
        let head: i64 = match backend {
            Backend::Postgres | Backend::Sqlite => {
                sqlx::Row::try_get(&bump.fetch_one(&mut *conn).await?, 0)?
            }
            // The row is this transaction's until commit: reading it back is `RETURNING`.
            Backend::Mysql => {
                bump.execute(&mut *conn).await?;
                sqlx::query_scalar("SELECT seq FROM revocation_feed WHERE id = 1")
                    .fetch_one(&mut *conn)
                    .await?
            }
        };
        let mut seq = head.saturating_sub(count);
        for (entry, tag) in revoked.iter().zip(tags) {
            seq = seq.saturating_add(1);
            let (kind, subject, not_before) = match *entry {
                Revoked::Session(sid) => ("session", sid, None),
                Revoked::User {
                    user_id,
                    not_before,
                } => ("user", user_id, Some(not_before)),
            };
            sqlx::query(backend.sql(sql! {
                postgres_sqlite: "INSERT INTO revocations (kind, subject, not_before, until, created_at, seq, tag) \
                                  VALUES ($1, $2, $3, $4, $5, $6, $7)",
                mysql:           "INSERT INTO revocations (kind, subject, not_before, `until`, created_at, seq, tag) \
                                  VALUES (?, ?, ?, ?, ?, ?, ?)",
            }))
            .bind(kind)
            .bind(subject)
            .bind(not_before)
            .bind(until)
            .bind(now)
            .bind(seq)
            .bind(tag)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(after: Option<u64>, epoch: Option<&str>, tag: Option<u64>) -> FeedCursor<'_> {
        FeedCursor { after, epoch, tag }
    }

    #[test]
    fn a_cursor_resumes_only_within_the_same_epoch_up_to_the_head_with_its_tag() {
        const HEAD_TAG: i64 = -7;
        let head_tag = Some(tag_bits(HEAD_TAG));
        let cases = [
            (
                at(Some(5), Some("e1"), Some(3)),
                Resume::AfterEntry { seq: 5, tag: 3 },
                "behind the head: if the entry at 5 has the tag",
            ),
            (
                at(Some(5), Some("e1"), Some(u64::MAX)),
                Resume::AfterEntry { seq: 5, tag: -1 },
                "all 64 bits of the tag",
            ),
            (
                at(Some(9), Some("e1"), head_tag),
                Resume::After(9),
                "at the head, with its tag",
            ),
            (
                at(Some(9), Some("e1"), Some(3)),
                Resume::Full,
                "at the head, with another tag: restored from a backup",
            ),
            (
                at(Some(9), Some("e1"), None),
                Resume::Full,
                "at the head, without a tag",
            ),
            (at(Some(5), Some("e1"), None), Resume::Full, "no tag"),
            (at(None, Some("e1"), head_tag), Resume::Full, "no cursor"),
            (
                at(Some(0), None, head_tag),
                Resume::Full,
                "zero without an epoch",
            ),
            (at(Some(5), None, Some(3)), Resume::Full, "no epoch"),
            (
                at(Some(5), Some("e2"), Some(3)),
                Resume::Full,
                "another database's cursor",
            ),
            (
                at(Some(10), Some("e1"), head_tag),
                Resume::Full,
                "past the head: restored from a backup",
            ),
            (
                at(Some(u64::MAX), Some("e1"), head_tag),
                Resume::Full,
                "past any i64",
            ),
        ];
        for (cursor, expected, reason) in cases {
            assert_eq!(
                resume_after(cursor, "e1", 9, HEAD_TAG),
                expected,
                "{reason}"
            );
        }
        assert_eq!(
            resume_after(at(Some(0), Some("e1"), head_tag), "e1", 0, HEAD_TAG),
            Resume::After(0),
            "an empty feed's reader stays incremental"
        );
        assert_eq!(
            resume_after(at(Some(0), Some("e1"), Some(3)), "e1", 0, HEAD_TAG),
            Resume::Full,
            "an empty feed's reader of another history"
        );
        assert_eq!(
            resume_after(at(Some(0), Some("e1"), Some(3)), "e1", 9, HEAD_TAG),
            Resume::After(0),
            "a reader at 0 holds nothing: it skips nothing once the head moved on"
        );
        assert_eq!(
            resume_after(at(Some(0), Some("e1"), None), "e1", 9, HEAD_TAG),
            Resume::Full,
            "at 0 without a tag"
        );
    }

    #[test]
    fn a_tag_keeps_its_64_bits_through_the_database() {
        for bits in [0, 1, 1 << 63, u64::MAX, 0x0123_4567_89ab_cdef] {
            assert_eq!(tag_bits(stored_tag(bits)), bits);
        }
        assert_eq!(stored_tag(u64::MAX), -1);
    }

    #[test]
    fn entries_are_kept_for_the_largest_clock_skew_past_until() {
        assert_eq!(expired_at_or_before(10_000), 10_000 - 600);
        assert_eq!(expired_at_or_before(i64::MIN), i64::MIN);
    }
}
