//! Queries on `users` and `user_roles`.

use sqlx::FromRow;

use super::{
    is_unique_violation,
    sql::{sql, Sql},
    RevokeAt, Store,
};

/// [`Store::users_page`]'s query: `(created_at, id) > (a, b)`, written as a range on the first
/// column of `users_created_at_id` that every engine scans the index from, MariaDB included.
const USERS_PAGE: &Sql = sql! {
    postgres_sqlite: "SELECT id, email, created_at, disabled_at, email_verified_at FROM users \
                      WHERE created_at >= $1 AND (created_at > $2 OR id > $3) \
                      ORDER BY created_at, id LIMIT $4",
    mysql:           "SELECT id, email, created_at, disabled_at, email_verified_at FROM users \
                      WHERE created_at >= ? AND (created_at > ? OR id > ?) \
                      ORDER BY created_at, id LIMIT ?",
};

/// What login and token issuance need of a user.
#[derive(Debug, Clone, FromRow)]
pub struct UserRow {
    /// UUID text.
    pub id: String,
    /// Normalised email.
    pub email: String,
    /// The bcrypt hash (never logged: `Debug` of this row is only used in tests).
    pub password_hash: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Set while the account is disabled.
    pub disabled_at: Option<i64>,
    /// Access tokens issued before this time are refused; new ones carry at least this `iat`.
    pub tokens_valid_after: i64,
    /// When the owner of `email` proved it (a verification link, a reset by mail, a provider
    /// vouching for it); `None` while unverified.
    pub email_verified_at: Option<i64>,
}

/// How [`Store::change_password`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordChange {
    /// Changed; this many other sessions ended.
    Changed {
        /// Sessions ended with it.
        other_sessions_ended: u64,
    },
    /// The password hash was no longer the one checked: another change came first.
    Conflict,
    /// The session asking for the change has ended meanwhile.
    SessionEnded,
}

/// A user as an operator sees it (`auth-api users list`, the Admin API): never the hash.
#[derive(Debug, Clone)]
pub struct UserSummary {
    /// UUID text.
    pub id: String,
    /// Normalised email.
    pub email: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Set while the account is disabled.
    pub disabled_at: Option<i64>,
    /// When the email was proved; `None` while unverified.
    pub email_verified_at: Option<i64>,
    /// Sorted role names.
    pub roles: Vec<String>,
}

/// `id, email, created_at, disabled_at, email_verified_at` of [`Store::users_page`].
type UserListRow = (String, String, i64, Option<i64>, Option<i64>);

/// The outcome of an insert that may hit the unique email constraint.
#[derive(Debug)]
pub enum InsertUser {
    /// The row was written.
    Created,
    /// Another account already has this email.
    EmailTaken,
}

impl Store {
    /// Inserts a user with its initial roles; the unique email constraint, not a prior
    /// look-up, decides whether the email is taken (no race between two signups).
    pub async fn insert_user(
        &self,
        user: &UserRow,
        roles: &[&str],
    ) -> Result<InsertUser, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(self.sql(sql! {
            postgres_sqlite: "INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)",
            mysql:           "INSERT INTO users (id, email, password_hash, created_at) VALUES (?, ?, ?, ?)",
        }))
        .bind(&user.id)
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(user.created_at)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Ok(InsertUser::EmailTaken),
            other => other?,
        };
        for role in roles {
            sqlx::query(self.sql(sql! {
                postgres_sqlite: "INSERT INTO user_roles (user_id, role) VALUES ($1, $2)",
                mysql:           "INSERT INTO user_roles (user_id, role) VALUES (?, ?)",
            }))
            .bind(&user.id)
            .bind(*role)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(InsertUser::Created)
    }

    /// The user with this (normalised) email.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>, sqlx::Error> {
        sqlx::query_as(self.sql(sql! {
            postgres_sqlite: "SELECT id, email, password_hash, created_at, disabled_at, tokens_valid_after, email_verified_at \
                              FROM users WHERE email = $1",
            mysql:           "SELECT id, email, password_hash, created_at, disabled_at, tokens_valid_after, email_verified_at \
                              FROM users WHERE email = ?",
        }))
        .bind(email)
        .fetch_optional(&self.pool)
        .await
    }

    /// The user with this id.
    pub async fn user_by_id(&self, id: &str) -> Result<Option<UserRow>, sqlx::Error> {
        sqlx::query_as(self.sql(sql! {
            postgres_sqlite: "SELECT id, email, password_hash, created_at, disabled_at, tokens_valid_after, email_verified_at \
                              FROM users WHERE id = $1",
            mysql:           "SELECT id, email, password_hash, created_at, disabled_at, tokens_valid_after, email_verified_at \
                              FROM users WHERE id = ?",
        }))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
    }

    /// The user's roles, sorted.
    pub async fn roles(&self, user_id: &str) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(self.sql(sql! {
            postgres_sqlite: "SELECT role FROM user_roles WHERE user_id = $1 ORDER BY role",
            mysql:           "SELECT role FROM user_roles WHERE user_id = ? ORDER BY role",
        }))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
    }

    /// Adds a role; `false` when the user already had it.
    pub async fn grant_role(&self, user_id: &str, role: &str) -> Result<bool, sqlx::Error> {
        // MySQL: `INSERT IGNORE`, not `ON DUPLICATE KEY UPDATE`, whose no-op update counts as
        // one affected row under the found-rows flag sqlx sets, like an insert.
        let result = sqlx::query(self.sql(sql! {
            postgres_sqlite: "INSERT INTO user_roles (user_id, role) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            mysql:           "INSERT IGNORE INTO user_roles (user_id, role) VALUES (?, ?)",
        }))
        .bind(user_id)
        .bind(role)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Removes a role; `false` when the user did not have it.
    pub async fn revoke_role(&self, user_id: &str, role: &str) -> Result<bool, sqlx::Error> {
        let result = sqlx::query(self.sql(sql! {
            postgres_sqlite: "DELETE FROM user_roles WHERE user_id = $1 AND role = $2",
            mysql:           "DELETE FROM user_roles WHERE user_id = ? AND role = ?",
        }))
        .bind(user_id)
        .bind(role)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// At most `limit` users with their roles, oldest first (by creation time, then id), from
    /// just after the user created at `after.0` with id `after.1` (a keyset page: stable while
    /// users are added); `None` for the first page.
    pub async fn users_page(
        &self,
        after: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<UserSummary>, sqlx::Error> {
        let (after_created, after_id) = after.unwrap_or((i64::MIN, ""));
        let rows: Vec<UserListRow> = sqlx::query_as(self.sql(USERS_PAGE))
            .bind(after_created)
            .bind(after_created)
            .bind(after_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut users = Vec::with_capacity(rows.len());
        for (id, email, created_at, disabled_at, email_verified_at) in rows {
            let roles = self.roles(&id).await?;
            users.push(UserSummary {
                id,
                email,
                created_at,
                disabled_at,
                email_verified_at,
                roles,
            });
        }
        Ok(users)
    }

    /// Disables the user: every session is revoked and every access token issued so far stops
    /// validating, here and at the gateway. `false` when already disabled.
    pub async fn disable_user(&self, user_id: &str, at: RevokeAt) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let result = sqlx::query(self.sql(sql! {
            postgres_sqlite: "UPDATE users SET disabled_at = $1 WHERE id = $2 AND disabled_at IS NULL",
            mysql:           "UPDATE users SET disabled_at = ? WHERE id = ? AND disabled_at IS NULL",
        }))
        .bind(at.now)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        let disabled = result.rows_affected() == 1;
        if disabled {
            Self::revoke_user_tokens(&mut tx, user_id, at, "user_disabled").await?;
        }
        tx.commit().await?;
        Ok(disabled)
    }

    /// Replaces the user's password hash `verified_hash` (the one just checked) with
    /// `password_hash`, from the live session `keep`; with `end_others`, ends every other live
    /// session of the user in the same transaction (each published in the revocation feed).
    /// Nothing changes when the hash is no longer `verified_hash` (a concurrent change won) or
    /// `keep` has ended meanwhile.
    pub async fn change_password(
        &self,
        user_id: &str,
        verified_hash: &str,
        password_hash: &str,
        keep: &str,
        end_others: Option<RevokeAt>,
    ) -> Result<PasswordChange, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if !Self::replace_password_hash(&mut tx, user_id, verified_hash, password_hash).await? {
            tx.rollback().await?;
            return Ok(PasswordChange::Conflict);
        }
        let keep_is_live: Option<i64> = sqlx::query_scalar(self.sql(sql! {
            postgres_sqlite: "SELECT 1 FROM sessions WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
            mysql:           "SELECT 1 FROM sessions WHERE id = ? AND user_id = ? AND revoked_at IS NULL",
        }))
        .bind(keep)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        if keep_is_live.is_none() {
            tx.rollback().await?;
            return Ok(PasswordChange::SessionEnded);
        }
        let ended = match end_others {
            Some(at) => {
                Self::revoke_other_sessions_in(&mut tx, user_id, keep, at, "password_changed")
                    .await?
            }
            None => 0,
        };
        tx.commit().await?;
        Ok(PasswordChange::Changed {
            other_sessions_ended: ended,
        })
    }

    /// Replaces the user's password hash `verified_hash` (the one a login just checked) with
    /// `password_hash`, the same password hashed at a higher cost; `false`, and nothing
    /// written, when the hash is no longer `verified_hash` (a password change or another
    /// login's rehash came first).
    pub async fn rehash_password(
        &self,
        user_id: &str,
        verified_hash: &str,
        password_hash: &str,
    ) -> Result<bool, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        Self::replace_password_hash(&mut conn, user_id, verified_hash, password_hash).await
    }

    /// Sets the user's password hash to `password_hash` if it is still `verified_hash`.
    async fn replace_password_hash(
        conn: &mut sqlx::AnyConnection,
        user_id: &str,
        verified_hash: &str,
        password_hash: &str,
    ) -> Result<bool, sqlx::Error> {
        let backend = super::Backend::of_connection(conn);
        let result = sqlx::query(backend.sql(sql! {
            postgres_sqlite: "UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3",
            mysql:           "UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ?",
        }))
        .bind(password_hash)
        .bind(user_id)
        .bind(verified_hash)
        .execute(&mut *conn)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Enables a disabled user; `false` when not disabled.
    pub async fn enable_user(&self, user_id: &str) -> Result<bool, sqlx::Error> {
        let result = sqlx::query(self.sql(sql! {
            postgres_sqlite: "UPDATE users SET disabled_at = NULL WHERE id = $1 AND disabled_at IS NOT NULL",
            mysql:           "UPDATE users SET disabled_at = NULL WHERE id = ? AND disabled_at IS NOT NULL",
        }))
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Row as _;
    use test_support::{Backend as TestBackend, TestDb};

    use super::*;
    use crate::store::Backend;

    /// Every engine can answer a page of the Admin API's user list from `users_created_at_id`
    /// (the table is too small here for a planner to prefer it on its own: PostgreSQL is told
    /// to avoid a sequential scan, MariaDB's `possible_keys` is read).
    #[tokio::test]
    async fn a_users_page_can_be_read_from_the_creation_index() {
        for backend in [
            TestBackend::Sqlite,
            TestBackend::Postgres,
            TestBackend::Mysql,
        ] {
            let (_db, url) = TestDb::create(backend).await;
            let store = Store::open(&url).await.unwrap();
            let text = store.sql(USERS_PAGE);
            let mut tx = store.pool.begin().await.unwrap();
            let (explain, column) = match store.backend {
                Backend::Sqlite => ("EXPLAIN QUERY PLAN", "detail"),
                Backend::Postgres => {
                    sqlx::query("SET LOCAL enable_seqscan = off")
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    ("EXPLAIN", "QUERY PLAN")
                }
                Backend::Mysql => ("EXPLAIN", "possible_keys"),
            };
            let rows = sqlx::query(&format!("{explain} {text}"))
                .bind(0_i64)
                .bind(0_i64)
                .bind("")
                .bind(10_i64)
                .fetch_all(&mut *tx)
                .await
                .unwrap();
            let plan: Vec<String> = rows
                .iter()
                .filter_map(|row| row.try_get::<Option<String>, _>(column).unwrap())
                .collect();
            assert!(
                plan.iter().any(|line| line.contains("users_created_at_id")),
                "{backend:?}: {plan:?}"
            );
        }
    }
}
