//! Queries on `sessions` and `refresh_tokens`.
//!
//! Refresh tokens are stored only as SHA-256 hashes, one row per generation, so that a replay
//! of any earlier generation is recognised. Rotation is a conditional update on the session's
//! generation counter: of two concurrent rotations of one token, exactly one matches.

use sqlx::{AnyConnection, FromRow};

use super::{join_sealed, split_sealed};
use super::{
    revocations::Revoked,
    sql::{question_list, sql},
    Backend, Store,
};
use crate::{domain::AuthMethod, kek::Sealed};

/// How long a session that can never refresh again keeps its refresh-token hashes: a margin
/// over clock differences between replicas, and a day in which a replay of its tokens is still
/// logged as what it is (a revoked or expired session) rather than as an unknown token.
const ENDED_SESSION_TOKENS_KEPT_SECS: i64 = 24 * 3600;

/// When a revocation happens, and until when the gateway must be told about it: the access
/// token lifetime plus the clock skew after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevokeAt {
    /// The revocation time, Unix seconds.
    pub now: i64,
    /// When every token it refuses has expired.
    pub until: i64,
}

impl RevokeAt {
    /// A revocation at `now` that must stay published for `retention_secs`.
    pub fn new(now: i64, retention_secs: i64) -> Self {
        Self {
            now,
            until: now.saturating_add(retention_secs),
        }
    }
}

/// A session to create at login, with its first refresh token.
#[derive(Debug)]
pub struct NewSession {
    /// UUID text.
    pub id: String,
    /// UUID text.
    pub user_id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Absolute end, Unix seconds.
    pub expires_at: i64,
    /// Key from which each successor refresh token is derived, sealed for this session under
    /// the current key-encryption key ([`crate::kek::KeyEncryptionKeys::seal_rotation_key`]).
    pub rotation_key: Sealed,
    /// SHA-256 of the generation-0 refresh token.
    pub first_token_hash: Vec<u8>,
    /// How the user authenticated: the `amr` of every access token of the session.
    pub auth_method: AuthMethod,
}

/// A session as refresh needs it.
#[derive(Debug, Clone, FromRow)]
pub struct SessionRow {
    /// UUID text.
    pub id: String,
    /// UUID text.
    pub user_id: String,
    /// Absolute end, Unix seconds.
    pub expires_at: i64,
    /// Generation of the live refresh token.
    pub generation: i64,
    /// When the live refresh token was issued.
    pub refreshed_at: i64,
    /// Key from which successor refresh tokens are derived, as stored: nonce and ciphertext
    /// (see [`SessionRow::rotation_key_at_rest`]).
    pub rotation_key: Vec<u8>,
    /// The key-encryption key that sealed `rotation_key`; `None` for a key in the clear,
    /// written before issue 10.
    pub rotation_key_kek: Option<String>,
    /// Set once revoked.
    pub revoked_at: Option<i64>,
    /// Set while the user is disabled.
    pub user_disabled_at: Option<i64>,
    /// How the user authenticated, as stored ([`AuthMethod::as_str`]).
    pub auth_method: String,
}

/// How a session's rotation key is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationKeyAtRest<'a> {
    /// In the clear: written before issue 10 (or by a replica of an earlier version).
    Clear(&'a [u8]),
    /// Sealed under a key-encryption key, bound to the session's id.
    Sealed(Sealed),
}

impl<'a> RotationKeyAtRest<'a> {
    /// The rotation key of a `rotation_key` column and its `rotation_key_kek`: the column of a
    /// sealed key holds the 24-byte nonce, then the ciphertext and its tag. A column too short
    /// for a nonce still comes back as `Sealed`, and fails to open.
    pub fn of(column: &'a [u8], kek_id: Option<&str>) -> Self {
        match kek_id {
            None => Self::Clear(column),
            Some(kek_id) => Self::Sealed(split_sealed(kek_id, column)),
        }
    }
}

impl SessionRow {
    /// How the user authenticated; `None` for a value this version does not write.
    pub fn auth_method(&self) -> Option<AuthMethod> {
        AuthMethod::from_stored(&self.auth_method)
    }

    /// The rotation key as stored.
    pub fn rotation_key_at_rest(&self) -> RotationKeyAtRest<'_> {
        RotationKeyAtRest::of(&self.rotation_key, self.rotation_key_kek.as_deref())
    }
}

/// A presented refresh token, found by its hash.
#[derive(Debug, Clone, FromRow)]
pub struct RefreshLookup {
    /// The generation this token was issued as.
    pub token_generation: i64,
    /// Its session.
    #[sqlx(flatten)]
    pub session: SessionRow,
}

/// A live session, as an operator sees it.
#[derive(Debug, Clone, FromRow)]
pub struct SessionSummary {
    /// UUID text.
    pub id: String,
    /// When it was opened (login), Unix seconds.
    pub created_at: i64,
    /// When its refresh token was last rotated, Unix seconds.
    pub refreshed_at: i64,
    /// Absolute end, Unix seconds.
    pub expires_at: i64,
}

/// What `/validate` checks beyond the signature.
#[derive(Debug, Clone, FromRow)]
pub struct TokenStatus {
    /// The session's user.
    pub user_id: String,
    /// Set once the session is revoked.
    pub revoked_at: Option<i64>,
    /// The session's absolute end, Unix seconds.
    pub expires_at: i64,
    /// Set while the user is disabled.
    pub disabled_at: Option<i64>,
    /// Tokens issued before this time are refused.
    pub tokens_valid_after: i64,
    /// Set when the signing key has been revoked.
    pub key_revoked_at: Option<i64>,
}

/// A row of [`Store::token_statuses`]: a session found, and one of the batch's kids known to
/// `signing_keys` (none when no kid is).
#[derive(FromRow)]
struct BatchStatusRow {
    session_id: String,
    user_id: String,
    revoked_at: Option<i64>,
    expires_at: i64,
    disabled_at: Option<i64>,
    tokens_valid_after: i64,
    kid: Option<String>,
    key_revoked_at: Option<i64>,
}

/// The text of [`Store::token_statuses`] for `kids` kids and `sids` session ids, bound in that
/// order: `$1…` on PostgreSQL and SQLite, `?` on MySQL.
pub(super) fn token_statuses_sql(backend: Backend, kids: usize, sids: usize) -> String {
    let list = |first: usize, n: usize| match backend {
        Backend::Mysql => question_list(n),
        Backend::Postgres | Backend::Sqlite => (first..first + n)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", "),
    };
    format!(
        "SELECT s.id AS session_id, s.user_id, s.revoked_at, s.expires_at, u.disabled_at, \
                u.tokens_valid_after, k.kid, k.revoked_at AS key_revoked_at \
         FROM sessions s JOIN users u ON u.id = s.user_id \
         LEFT JOIN signing_keys k ON k.kid IN ({}) \
         WHERE s.id IN ({})",
        list(1, kids),
        list(1 + kids, sids),
    )
}

/// Replaces a session's rotation key if the column still holds what was read.
const RESEAL_ROTATION_KEY: &super::sql::Sql = sql! {
    postgres_sqlite: "UPDATE sessions SET rotation_key = $1, rotation_key_kek = $2 \
                      WHERE id = $3 AND rotation_key = $4",
    mysql:           "UPDATE sessions SET rotation_key = ?, rotation_key_kek = ? \
                      WHERE id = ? AND rotation_key = ?",
};

impl Store {
    /// Creates a session and records its first refresh token.
    ///
    /// Only while the user's password hash is still `verified_hash`, the one the login just
    /// checked, and the user is not disabled: `None` (and nothing created) when a password
    /// change or a disable committed meanwhile. The check is a write on the user's row, so it
    /// also waits for a change, a disable or a "logout everywhere" in progress: a login either
    /// ends before it, which then ends its session, or sees its outcome. Once created, the
    /// user's `tokens_valid_after` as of that write, which the session's first access token
    /// must not predate.
    pub async fn create_session(
        &self,
        session: &NewSession,
        verified_hash: &str,
    ) -> Result<Option<i64>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // A write on PostgreSQL and SQLite (SQLite's only way to take the write lock first); a
        // locking read on MySQL, which has no `UPDATE … RETURNING` and needs no more.
        let fenced: Option<i64> = sqlx::query_scalar(self.sql(sql! {
            postgres_sqlite: "UPDATE users SET password_hash = password_hash \
                              WHERE id = $1 AND password_hash = $2 AND disabled_at IS NULL \
                              RETURNING tokens_valid_after",
            mysql:           "SELECT tokens_valid_after FROM users \
                              WHERE id = ? AND password_hash = ? AND disabled_at IS NULL FOR UPDATE",
        }))
        .bind(&session.user_id)
        .bind(verified_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(tokens_valid_after) = fenced else {
            tx.rollback().await?;
            return Ok(None);
        };
        sqlx::query(self.sql(sql! {
            postgres_sqlite: "INSERT INTO sessions (id, user_id, created_at, expires_at, generation, \
                              refreshed_at, rotation_key, rotation_key_kek, auth_method) \
                              VALUES ($1, $2, $3, $4, 0, $5, $6, $7, $8)",
            mysql:           "INSERT INTO sessions (id, user_id, created_at, expires_at, generation, \
                              refreshed_at, rotation_key, rotation_key_kek, auth_method) \
                              VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?)",
        }))
        .bind(&session.id)
        .bind(&session.user_id)
        .bind(session.created_at)
        .bind(session.expires_at)
        .bind(session.created_at)
        .bind(join_sealed(&session.rotation_key))
        .bind(&session.rotation_key.kek_id)
        .bind(session.auth_method.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query(self.sql(sql! {
            postgres_sqlite: "INSERT INTO refresh_tokens (token_hash, session_id, generation, created_at) \
                              VALUES ($1, $2, 0, $3)",
            mysql:           "INSERT INTO refresh_tokens (token_hash, session_id, generation, created_at) \
                              VALUES (?, ?, 0, ?)",
        }))
        .bind(&session.first_token_hash)
        .bind(&session.id)
        .bind(session.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(tokens_valid_after))
    }

    /// The session a refresh token (by hash) belongs to, with the token's generation.
    pub async fn find_refresh_token(
        &self,
        token_hash: &[u8],
    ) -> Result<Option<RefreshLookup>, sqlx::Error> {
        sqlx::query_as(self.sql(sql! {
            postgres_sqlite: "SELECT rt.generation AS token_generation, s.id, s.user_id, s.expires_at, \
                                     s.generation, s.refreshed_at, s.rotation_key, s.rotation_key_kek, \
                                     s.revoked_at, u.disabled_at AS user_disabled_at, s.auth_method \
                              FROM refresh_tokens rt \
                              JOIN sessions s ON s.id = rt.session_id \
                              JOIN users u ON u.id = s.user_id \
                              WHERE rt.token_hash = $1",
            mysql:           "SELECT rt.generation AS token_generation, s.id, s.user_id, s.expires_at, \
                                     s.generation, s.refreshed_at, s.rotation_key, s.rotation_key_kek, \
                                     s.revoked_at, u.disabled_at AS user_disabled_at, s.auth_method \
                              FROM refresh_tokens rt \
                              JOIN sessions s ON s.id = rt.session_id \
                              JOIN users u ON u.id = s.user_id \
                              WHERE rt.token_hash = ?",
        }))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await
    }

    /// Moves the session from generation `from` to `from + 1`, whose token hashes to
    /// `successor_hash`. `false` when another rotation got there first or the session was
    /// revoked meanwhile.
    pub async fn rotate_refresh_token(
        &self,
        session_id: &str,
        from: i64,
        successor_hash: &[u8],
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        // The successor is derived from its predecessor, so every racer computes the same row:
        // recording it first (idempotently) and then flipping the generation needs no
        // transaction, and a loser's insert is a no-op.
        sqlx::query(self.sql(sql! {
            postgres_sqlite: "INSERT INTO refresh_tokens (token_hash, session_id, generation, created_at) \
                              VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            mysql:           "INSERT IGNORE INTO refresh_tokens (token_hash, session_id, generation, created_at) \
                              VALUES (?, ?, ?, ?)",
        }))
        .bind(successor_hash)
        .bind(session_id)
        .bind(from + 1)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let result = sqlx::query(self.sql(sql! {
            postgres_sqlite: "UPDATE sessions SET generation = $1, refreshed_at = $2 \
                              WHERE id = $3 AND generation = $4 AND revoked_at IS NULL",
            mysql:           "UPDATE sessions SET generation = ?, refreshed_at = ? \
                              WHERE id = ? AND generation = ? AND revoked_at IS NULL",
        }))
        .bind(from + 1)
        .bind(now)
        .bind(session_id)
        .bind(from)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Replaces the rotation key of `session_id` with `sealed`, if the column still holds
    /// `previous` as read: of several replicas (or refreshes) re-sealing one row at once, the
    /// first wins and the others change nothing. `true` when this call replaced it.
    pub async fn reseal_rotation_key(
        &self,
        session_id: &str,
        previous: &[u8],
        sealed: &Sealed,
    ) -> Result<bool, sqlx::Error> {
        let result = sqlx::query(self.sql(RESEAL_ROTATION_KEY))
            .bind(join_sealed(sealed))
            .bind(&sealed.kek_id)
            .bind(session_id)
            .bind(previous.to_vec())
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    /// [`Store::reseal_rotation_key`] for many rows in one transaction (the start-up re-seal);
    /// how many it replaced. Each row is `(session id, column as read, new sealed key)`.
    pub async fn reseal_rotation_keys(
        &self,
        rows: &[(String, Vec<u8>, Sealed)],
    ) -> Result<u64, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mut replaced = 0;
        for (session_id, previous, sealed) in rows {
            replaced += sqlx::query(self.sql(RESEAL_ROTATION_KEY))
                .bind(join_sealed(sealed))
                .bind(&sealed.kek_id)
                .bind(session_id)
                .bind(previous.clone())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(replaced)
    }

    /// Up to `limit` sessions, by id after `after`, whose rotation key is in the clear or
    /// sealed under a key-encryption key other than `current_kek`: `(id, column, KEK)`.
    pub async fn rotation_keys_not_under(
        &self,
        current_kek: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(String, Vec<u8>, Option<String>)>, sqlx::Error> {
        sqlx::query_as(self.sql(sql! {
            postgres_sqlite: "SELECT id, rotation_key, rotation_key_kek FROM sessions \
                              WHERE (rotation_key_kek IS NULL OR rotation_key_kek <> $1) AND id > $2 \
                              ORDER BY id LIMIT $3",
            mysql:           "SELECT id, rotation_key, rotation_key_kek FROM sessions \
                              WHERE (rotation_key_kek IS NULL OR rotation_key_kek <> ?) AND id > ? \
                              ORDER BY id LIMIT ?",
        }))
        .bind(current_kek)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// The session as it is now (after losing a rotation race).
    pub async fn session(&self, session_id: &str) -> Result<Option<SessionRow>, sqlx::Error> {
        sqlx::query_as(self.sql(sql! {
            postgres_sqlite: "SELECT s.id, s.user_id, s.expires_at, s.generation, s.refreshed_at, \
                                     s.rotation_key, s.rotation_key_kek, s.revoked_at, \
                                     u.disabled_at AS user_disabled_at, s.auth_method \
                              FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1",
            mysql:           "SELECT s.id, s.user_id, s.expires_at, s.generation, s.refreshed_at, \
                                     s.rotation_key, s.rotation_key_kek, s.revoked_at, \
                                     u.disabled_at AS user_disabled_at, s.auth_method \
                              FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = ?",
        }))
        .bind(session_id)
        .fetch_optional(&self.pool)
        .await
    }

    /// The user's sessions neither revoked nor past their absolute end at `now`, newest first.
    pub async fn live_sessions(
        &self,
        user_id: &str,
        now: i64,
    ) -> Result<Vec<SessionSummary>, sqlx::Error> {
        sqlx::query_as(self.sql(sql! {
            postgres_sqlite: "SELECT id, created_at, refreshed_at, expires_at FROM sessions \
                              WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
                              ORDER BY created_at DESC, id",
            mysql:           "SELECT id, created_at, refreshed_at, expires_at FROM sessions \
                              WHERE user_id = ? AND revoked_at IS NULL AND expires_at > ? \
                              ORDER BY created_at DESC, id",
        }))
        .bind(user_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await
    }

    /// Revokes one session and publishes it in the revocation feed; `false` when it was
    /// already revoked or does not exist.
    pub async fn revoke_session(
        &self,
        session_id: &str,
        at: RevokeAt,
        reason: &str,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let revoked = Self::revoke_session_in(&mut tx, session_id, at, reason).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    /// Revokes every live session of the user but `keep`, each published in the revocation
    /// feed (a per-user "not before" would refuse `keep`'s tokens too); how many it ended.
    pub async fn revoke_other_sessions(
        &self,
        user_id: &str,
        keep: &str,
        at: RevokeAt,
        reason: &str,
    ) -> Result<u64, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let ended = Self::revoke_other_sessions_in(&mut tx, user_id, keep, at, reason).await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// [`Store::revoke_other_sessions`] inside the caller's transaction.
    pub(super) async fn revoke_other_sessions_in(
        conn: &mut AnyConnection,
        user_id: &str,
        keep: &str,
        at: RevokeAt,
        reason: &str,
    ) -> Result<u64, sqlx::Error> {
        let ended: Vec<String> = match Backend::of_connection(conn) {
            // One write that returns what it ended: a transaction that read first could not
            // write on SQLite once another connection had committed meanwhile.
            Backend::Postgres | Backend::Sqlite => {
                sqlx::query_scalar(
                    "UPDATE sessions SET revoked_at = $1, revoke_reason = $2 \
                     WHERE user_id = $3 AND id <> $4 AND revoked_at IS NULL AND expires_at > $5 \
                     RETURNING id",
                )
                .bind(at.now)
                .bind(reason)
                .bind(user_id)
                .bind(keep)
                .bind(at.now)
                .fetch_all(&mut *conn)
                .await?
            }
            // The rows locked first, then ended by id: a session a concurrent login commits in
            // between is neither ended nor published, as on PostgreSQL, where the update's
            // snapshot predates it.
            Backend::Mysql => {
                let ids: Vec<String> = sqlx::query_scalar(
                    "SELECT id FROM sessions \
                     WHERE user_id = ? AND id <> ? AND revoked_at IS NULL AND expires_at > ? FOR UPDATE",
                )
                .bind(user_id)
                .bind(keep)
                .bind(at.now)
                .fetch_all(&mut *conn)
                .await?;
                Self::end_sessions_by_id_mysql(conn, &ids, at.now, reason).await?;
                ids
            }
        };
        // One bump of the feed's head for all of them, last: it holds the head until commit.
        let revoked: Vec<_> = ended
            .iter()
            .map(|sid| Revoked::Session(sid.as_str()))
            .collect();
        Self::record_revocations(conn, &revoked, at.until, at.now).await?;
        Ok(u64::try_from(ended.len()).unwrap_or(u64::MAX))
    }

    /// MySQL: ends the sessions `ids`, which the caller's transaction has locked.
    async fn end_sessions_by_id_mysql(
        conn: &mut AnyConnection,
        ids: &[String],
        now: i64,
        reason: &str,
    ) -> Result<(), sqlx::Error> {
        // In chunks: a statement takes at most 65,535 placeholders.
        for chunk in ids.chunks(1000) {
            let statement = format!(
                "UPDATE sessions SET revoked_at = ?, revoke_reason = ? WHERE id IN ({})",
                question_list(chunk.len())
            );
            let mut query = sqlx::query(&statement).bind(now).bind(reason);
            for id in chunk {
                query = query.bind(id);
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Revokes one session inside the caller's transaction and publishes it in the feed;
    /// `false` when it was already revoked or does not exist.
    async fn revoke_session_in(
        conn: &mut AnyConnection,
        session_id: &str,
        at: RevokeAt,
        reason: &str,
    ) -> Result<bool, sqlx::Error> {
        let result = sqlx::query(Backend::of_connection(conn).sql(sql! {
            postgres_sqlite: "UPDATE sessions SET revoked_at = $1, revoke_reason = $2 \
                              WHERE id = $3 AND revoked_at IS NULL",
            mysql:           "UPDATE sessions SET revoked_at = ?, revoke_reason = ? \
                              WHERE id = ? AND revoked_at IS NULL",
        }))
        .bind(at.now)
        .bind(reason)
        .bind(session_id)
        .execute(&mut *conn)
        .await?;
        let revoked = result.rows_affected() == 1;
        if revoked {
            Self::record_revocation(conn, Revoked::Session(session_id), at.until, at.now).await?;
        }
        Ok(revoked)
    }

    /// Logout everywhere: revokes every session of the user and refuses every access token
    /// issued up to `at.now`, at `/validate` and (through the feed) at the gateway.
    pub async fn revoke_all_sessions(
        &self,
        user_id: &str,
        at: RevokeAt,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        Self::revoke_user_tokens(&mut tx, user_id, at, "logout_all").await?;
        tx.commit().await
    }

    /// Revokes every session and token of a user, inside the caller's transaction. Tokens
    /// issued in the same second as the revocation are refused too: `tokens_valid_after` is
    /// the next second, and tokens issued afterwards carry at least that `iat`. It never moves
    /// backwards, and it passes every session's latest issue time (its creation or last
    /// rotation, the `iat` of its newest access token), so that a replica whose clock runs
    /// ahead cannot have issued a token the gateway would still accept.
    pub(super) async fn revoke_user_tokens(
        conn: &mut AnyConnection,
        user_id: &str,
        at: RevokeAt,
        reason: &str,
    ) -> Result<(), sqlx::Error> {
        // The user's row first: this write waits for a login's session-creation fence in
        // progress, so the sessions update below (a fresh snapshot) sees and ends its session.
        let mut not_before =
            Self::raise_tokens_valid_after(conn, user_id, at.now.saturating_add(1)).await?;
        let ended: Vec<(i64, i64)> = match Backend::of_connection(conn) {
            Backend::Postgres | Backend::Sqlite => {
                sqlx::query_as(
                    "UPDATE sessions SET revoked_at = $1, revoke_reason = $2 \
                     WHERE user_id = $3 AND revoked_at IS NULL \
                     RETURNING created_at, refreshed_at",
                )
                .bind(at.now)
                .bind(reason)
                .bind(user_id)
                .fetch_all(&mut *conn)
                .await?
            }
            // Locked, then ended by id (see `revoke_other_sessions_in`); the user's row, locked
            // above, keeps a login from adding a session in between anyway.
            Backend::Mysql => {
                let rows: Vec<(String, i64, i64)> = sqlx::query_as(
                    "SELECT id, created_at, refreshed_at FROM sessions \
                     WHERE user_id = ? AND revoked_at IS NULL FOR UPDATE",
                )
                .bind(user_id)
                .fetch_all(&mut *conn)
                .await?;
                let ids: Vec<String> = rows.iter().map(|(id, _, _)| id.clone()).collect();
                Self::end_sessions_by_id_mysql(conn, &ids, at.now, reason).await?;
                rows.into_iter()
                    .map(|(_, created_at, refreshed_at)| (created_at, refreshed_at))
                    .collect()
            }
        };
        let latest_issue = ended
            .iter()
            .map(|&(created_at, refreshed_at)| created_at.max(refreshed_at))
            .max();
        if let Some(latest) = latest_issue.filter(|&latest| latest >= not_before) {
            not_before =
                Self::raise_tokens_valid_after(conn, user_id, latest.saturating_add(1)).await?;
        }
        Self::record_revocation(
            conn,
            Revoked::User {
                user_id,
                not_before,
            },
            at.until,
            at.now,
        )
        .await
    }

    /// Moves the user's `tokens_valid_after` to `not_before` unless it is already later (it
    /// never moves backwards, whichever of two revocations commits last); the value now in
    /// force.
    async fn raise_tokens_valid_after(
        conn: &mut AnyConnection,
        user_id: &str,
        not_before: i64,
    ) -> Result<i64, sqlx::Error> {
        // CASE rather than GREATEST (PostgreSQL, MySQL) or two-argument MAX (SQLite): one text
        // for all, and it reads the row's latest version when it waited for another writer.
        let backend = Backend::of_connection(conn);
        let updated = sqlx::query(backend.sql(sql! {
            postgres_sqlite: "UPDATE users SET tokens_valid_after = \
                              CASE WHEN tokens_valid_after < $1 THEN $2 ELSE tokens_valid_after END \
                              WHERE id = $3 RETURNING tokens_valid_after",
            mysql:           "UPDATE users SET tokens_valid_after = \
                              CASE WHEN tokens_valid_after < ? THEN ? ELSE tokens_valid_after END \
                              WHERE id = ?",
        }))
        .bind(not_before)
        .bind(not_before)
        .bind(user_id);
        let in_force: Option<i64> = match backend {
            Backend::Postgres | Backend::Sqlite => {
                let row = updated.fetch_optional(&mut *conn).await?;
                row.map(|row| sqlx::Row::try_get(&row, 0)).transpose()?
            }
            // The row is ours until commit: reading it back is `RETURNING`.
            Backend::Mysql => {
                updated.execute(&mut *conn).await?;
                sqlx::query_scalar("SELECT tokens_valid_after FROM users WHERE id = ?")
                    .bind(user_id)
                    .fetch_optional(&mut *conn)
                    .await?
            }
        };
        Ok(in_force.unwrap_or(not_before))
    }

    /// What `/validate` needs to know about a session and the key that signed the token: read
    /// from the database on every call, so a revocation (of a session, a user or a key) made by
    /// any replica or the CLI takes effect at once.
    pub async fn token_status(
        &self,
        session_id: &str,
        kid: &str,
    ) -> Result<Option<TokenStatus>, sqlx::Error> {
        sqlx::query_as(self.sql(sql! {
            postgres_sqlite: "SELECT s.user_id, s.revoked_at, s.expires_at, u.disabled_at, u.tokens_valid_after, \
                                     (SELECT k.revoked_at FROM signing_keys k WHERE k.kid = $1) AS key_revoked_at \
                              FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $2",
            mysql:           "SELECT s.user_id, s.revoked_at, s.expires_at, u.disabled_at, u.tokens_valid_after, \
                                     (SELECT k.revoked_at FROM signing_keys k WHERE k.kid = ?) AS key_revoked_at \
                              FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = ?",
        }))
        .bind(kid)
        .bind(session_id)
        .fetch_optional(&self.pool)
        .await
    }

    /// [`Store::token_status`] of many `(session_id, kid)` pairs in one statement (for
    /// [`super::StatusBatch`]), answered in the order asked; `None` for an unknown session.
    ///
    /// The per-row subquery of `token_status` cannot pair each session with its own kid once
    /// the sessions are an `IN (…)` list, and a second query for the kids would double the
    /// round trips, which are the cost this batching saves. So the distinct kids are a second
    /// `IN (…)` list, left-joined to every session found: one row per session and kid known to
    /// the table, and the kids are the few of the key ring (a token's kid was looked up in the
    /// ring before it comes here), so the rows stay about as many as the sessions. A kid with
    /// no row is not revoked, as the subquery's NULL says. Both lists are padded to a power of
    /// two by repeating their last value, so that few distinct texts are prepared and cached
    /// per connection. Ids and kids compare byte for byte on every engine (TEXT, or VARBINARY on
    /// MySQL), as the matching below does.
    pub(crate) async fn token_statuses(
        &self,
        requests: &[(String, String)],
    ) -> Result<Vec<Option<TokenStatus>>, sqlx::Error> {
        let mut sids: Vec<&str> = requests.iter().map(|(sid, _)| sid.as_str()).collect();
        let mut kids: Vec<&str> = requests.iter().map(|(_, kid)| kid.as_str()).collect();
        for list in [&mut sids, &mut kids] {
            list.sort_unstable();
            list.dedup();
            if let Some(&last) = list.last() {
                list.resize(list.len().next_power_of_two(), last);
            }
        }
        if sids.is_empty() {
            return Ok(Vec::new());
        }
        let statement = token_statuses_sql(self.backend, kids.len(), sids.len());
        let mut query = sqlx::query_as::<_, BatchStatusRow>(&statement);
        for value in kids.iter().chain(&sids) {
            query = query.bind(*value);
        }
        let rows = query.fetch_all(&self.pool).await?;
        let mut sessions = std::collections::HashMap::with_capacity(rows.len());
        let mut key_revoked_at = std::collections::HashMap::new();
        for row in &rows {
            sessions.entry(row.session_id.as_str()).or_insert(row);
            if let Some(kid) = &row.kid {
                key_revoked_at.insert(kid.as_str(), row.key_revoked_at);
            }
        }
        Ok(requests
            .iter()
            .map(|(sid, kid)| {
                sessions.get(sid.as_str()).map(|row| TokenStatus {
                    user_id: row.user_id.clone(),
                    revoked_at: row.revoked_at,
                    expires_at: row.expires_at,
                    disabled_at: row.disabled_at,
                    tokens_valid_after: row.tokens_valid_after,
                    key_revoked_at: key_revoked_at.get(kid.as_str()).copied().flatten(),
                })
            })
            .collect())
    }

    /// Deletes sessions (and their token hashes) that ended before `before`.
    pub async fn delete_sessions_expired_before(&self, before: i64) -> Result<u64, sqlx::Error> {
        let result = sqlx::query(self.sql(sql! {
            postgres_sqlite: "DELETE FROM sessions WHERE expires_at < $1",
            mysql:           "DELETE FROM sessions WHERE expires_at < ?",
        }))
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    /// Deletes the refresh-token hashes of every session that can never refresh again, once it
    /// has been so for a day: revoked (a revocation is never
    /// undone), past its absolute end, or unused past the idle timeout `idle_secs` (only the
    /// live token could bring it back, and the idle timeout refuses it). No token of such a
    /// session can refresh, so a replay answers `invalid_grant` whether or not its hash is
    /// still known; the session row itself stays (for `/validate` and the CLI) until
    /// [`Store::delete_sessions_expired_before`]. A live session keeps every generation:
    /// reuse detection needs them (SECURITY.md F 56, F 58, I 101). How many rows it deleted.
    pub async fn prune_refresh_tokens(&self, now: i64, idle_secs: i64) -> Result<u64, sqlx::Error> {
        let ended_before = now.saturating_sub(ENDED_SESSION_TOKENS_KEPT_SECS);
        let result = sqlx::query(self.sql(sql! {
            postgres_sqlite: "DELETE FROM refresh_tokens WHERE session_id IN (\
                                SELECT id FROM sessions \
                                WHERE revoked_at < $1 OR expires_at < $2 OR refreshed_at < $3)",
            mysql:           "DELETE FROM refresh_tokens WHERE session_id IN (\
                                SELECT id FROM sessions \
                                WHERE revoked_at < ? OR expires_at < ? OR refreshed_at < ?)",
        }))
        .bind(ended_before)
        .bind(ended_before)
        .bind(ended_before.saturating_sub(idle_secs))
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }
}
