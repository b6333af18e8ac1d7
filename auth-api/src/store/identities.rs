//! Queries on `external_identities`: which user an identity at an external provider signs in
//! as (issue 14), and users created by such a sign-in, who have no password.
//!
//! An identity is `(provider, subject)`, the provider's own stable id for the account; the
//! email a provider asserts is kept for operators but never looked up, since providers let
//! emails move between accounts. Whether a sign-in may link an identity to an existing account
//! by email is the caller's decision; the store never links silently: creating a user whose
//! email is taken answers [`InsertPasswordlessUser::EmailTaken`].

use sqlx::FromRow;

use super::{is_unique_violation, sql::sql, Backend, Store, UserRow};

/// The `password_hash` of a user who has no password: not a bcrypt hash, so no password ever
/// verifies against it, and [`crate::passwords::PasswordHasher::verify`] spends one bcrypt on
/// the dummy hash instead, as for an unknown email. `users.password_hash` stays NOT NULL
/// (SQLite cannot drop a NOT NULL without rebuilding the table, and every login reads it).
pub const NO_PASSWORD: &str = "!external";

/// One identity at an external provider, linked to a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIdentity {
    /// The operator's name for the provider.
    pub provider: String,
    /// The provider's stable id of the account (`sub`).
    pub subject: String,
    /// The issuer the identity was made at (GitHub: its web origin); `None` for a row from
    /// before it was recorded. A provider name pointed at another issuer does not match.
    pub issuer: Option<String>,
    /// UUID text.
    pub user_id: String,
    /// The email the provider last asserted, if any.
    pub email: Option<String>,
    /// Whether the provider asserted that email verified.
    pub email_verified: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Last sign-in through it, Unix seconds.
    pub last_used_at: i64,
}

/// A row of `external_identities`: `email_verified` is 0 or 1 on every engine.
#[derive(FromRow)]
struct IdentityRow {
    provider: String,
    subject: String,
    issuer: Option<String>,
    user_id: String,
    email: Option<String>,
    email_verified: i64,
    created_at: i64,
    last_used_at: i64,
}

impl From<IdentityRow> for ExternalIdentity {
    fn from(row: IdentityRow) -> Self {
        Self {
            provider: row.provider,
            subject: row.subject,
            issuer: row.issuer,
            user_id: row.user_id,
            email: row.email,
            email_verified: row.email_verified != 0,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
        }
    }
}

/// How [`Store::insert_identity`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertIdentity {
    /// Linked.
    Created,
    /// This identity is already linked, to this user or another one: nothing changed.
    AlreadyLinked,
}

/// How [`Store::insert_passwordless_user`] ended; nothing is written unless `Created`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertPasswordlessUser {
    /// The user and its identity were written.
    Created,
    /// Another account already has this email: linking to it is a decision of its own.
    EmailTaken,
    /// The identity is already linked (a concurrent sign-in of the same identity came first).
    IdentityTaken,
}

/// How [`Store::delete_identity`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnlinkIdentity {
    /// Deleted.
    Unlinked,
    /// The user has no such identity.
    NotFound,
    /// It is the user's last way to sign in (no password, no other identity): kept.
    LastWayIn,
}

impl UserRow {
    /// Whether the user has a password (a user created by an external sign-in has none).
    pub fn has_password(&self) -> bool {
        self.password_hash != NO_PASSWORD
    }
}

/// Inserts one identity (inside the caller's transaction or on a connection).
const INSERT_IDENTITY: &super::sql::Sql = sql! {
    postgres_sqlite: "INSERT INTO external_identities \
                      (provider, subject, user_id, email, email_verified, created_at, last_used_at, issuer) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    mysql:           "INSERT INTO external_identities \
                      (provider, subject, user_id, email, email_verified, created_at, last_used_at, issuer) \
                      VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
};

impl Store {
    /// Links `identity` to its user; the primary key, not a prior look-up, decides whether it
    /// is already linked (two sign-ins racing link it once).
    pub async fn insert_identity(
        &self,
        identity: &ExternalIdentity,
    ) -> Result<InsertIdentity, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        match insert_identity_on(&mut conn, identity).await {
            Ok(()) => Ok(InsertIdentity::Created),
            Err(e) if is_unique_violation(&e) => Ok(InsertIdentity::AlreadyLinked),
            Err(e) => Err(e),
        }
    }

    /// The identity `subject` at `provider`, if linked.
    pub async fn identity(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<ExternalIdentity>, sqlx::Error> {
        let row: Option<IdentityRow> = sqlx::query_as(self.sql(sql! {
            postgres_sqlite: "SELECT provider, subject, issuer, user_id, email, email_verified, created_at, last_used_at \
                              FROM external_identities WHERE provider = $1 AND subject = $2",
            mysql:           "SELECT provider, subject, issuer, user_id, email, email_verified, created_at, last_used_at \
                              FROM external_identities WHERE provider = ? AND subject = ?",
        }))
        .bind(provider)
        .bind(subject)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Into::into))
    }

    /// Every identity of the user, oldest first.
    pub async fn identities_of(&self, user_id: &str) -> Result<Vec<ExternalIdentity>, sqlx::Error> {
        let rows: Vec<IdentityRow> = sqlx::query_as(self.sql(sql! {
            postgres_sqlite: "SELECT provider, subject, issuer, user_id, email, email_verified, created_at, last_used_at \
                              FROM external_identities WHERE user_id = $1 \
                              ORDER BY created_at, provider, subject",
            mysql:           "SELECT provider, subject, issuer, user_id, email, email_verified, created_at, last_used_at \
                              FROM external_identities WHERE user_id = ? \
                              ORDER BY created_at, provider, subject",
        }))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Records a sign-in through the identity at `now`, with the email the provider asserts
    /// this time, and `issuer` where none was recorded; `false` when it is not linked (any
    /// more).
    pub async fn touch_identity(
        &self,
        identity: &ExternalIdentity,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let result = sqlx::query(self.sql(sql! {
            postgres_sqlite: "UPDATE external_identities SET last_used_at = $1, email = $2, email_verified = $3, \
                              issuer = COALESCE(issuer, $4) WHERE provider = $5 AND subject = $6",
            mysql:           "UPDATE external_identities SET last_used_at = ?, email = ?, email_verified = ?, \
                              issuer = COALESCE(issuer, ?) WHERE provider = ? AND subject = ?",
        }))
        .bind(now)
        .bind(identity.email.as_deref())
        .bind(i64::from(identity.email_verified))
        .bind(identity.issuer.as_deref())
        .bind(&identity.provider)
        .bind(&identity.subject)
        .execute(&self.pool)
        .await?;
        // MySQL counts found rows (sqlx sets the flag), so an unchanged row still counts.
        Ok(result.rows_affected() == 1)
    }

    /// Unlinks the identity from `user_id`, unless it is the user's last way to sign in (no
    /// password and no other identity). The check and the delete are one step: the user's row
    /// is locked first, so two unlinks of a user's last two identities cannot both see the
    /// other one and leave the account with no way in.
    pub async fn delete_identity(
        &self,
        provider: &str,
        subject: &str,
        user_id: &str,
    ) -> Result<UnlinkIdentity, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // A write on PostgreSQL and SQLite (SQLite's write lock first), a locking read on MySQL.
        let password_hash: Option<String> = sqlx::query_scalar(self.sql(sql! {
            postgres_sqlite: "UPDATE users SET password_hash = password_hash WHERE id = $1 \
                              RETURNING password_hash",
            mysql:           "SELECT password_hash FROM users WHERE id = ? FOR UPDATE",
        }))
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(password_hash) = password_hash else {
            tx.rollback().await?;
            return Ok(UnlinkIdentity::NotFound);
        };
        let deleted = sqlx::query(self.sql(sql! {
            postgres_sqlite: "DELETE FROM external_identities WHERE provider = $1 AND subject = $2 AND user_id = $3",
            mysql:           "DELETE FROM external_identities WHERE provider = ? AND subject = ? AND user_id = ?",
        }))
        .bind(provider)
        .bind(subject)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        if deleted.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(UnlinkIdentity::NotFound);
        }
        if password_hash == NO_PASSWORD {
            let left: i64 = sqlx::query_scalar(self.sql(sql! {
                postgres_sqlite: "SELECT COUNT(*) FROM external_identities WHERE user_id = $1",
                mysql:           "SELECT COUNT(*) FROM external_identities WHERE user_id = ?",
            }))
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
            if left == 0 {
                tx.rollback().await?;
                return Ok(UnlinkIdentity::LastWayIn);
            }
        }
        tx.commit().await?;
        Ok(UnlinkIdentity::Unlinked)
    }

    /// Creates a user without a password ([`NO_PASSWORD`]) and its first identity in one
    /// transaction: the user's id and creation time are the identity's, and its email `email`
    /// (canonical), verified (the provider vouched for it). The unique email constraint decides whether the email is taken, and then
    /// nothing is written: the caller decides whether linking is allowed, never this store.
    pub async fn insert_passwordless_user(
        &self,
        email: &str,
        roles: &[&str],
        identity: &ExternalIdentity,
    ) -> Result<InsertPasswordlessUser, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(self.sql(sql! {
            postgres_sqlite: "INSERT INTO users (id, email, password_hash, created_at, email_verified_at) \
                              VALUES ($1, $2, $3, $4, $5)",
            mysql:           "INSERT INTO users (id, email, password_hash, created_at, email_verified_at) \
                              VALUES (?, ?, ?, ?, ?)",
        }))
        .bind(&identity.user_id)
        .bind(email)
        .bind(NO_PASSWORD)
        .bind(identity.created_at)
        // Only an email the provider vouched for makes an account (`service::sign_in`).
        .bind(identity.created_at)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Ok(InsertPasswordlessUser::EmailTaken),
            other => other?,
        };
        for role in roles {
            sqlx::query(self.sql(sql! {
                postgres_sqlite: "INSERT INTO user_roles (user_id, role) VALUES ($1, $2)",
                mysql:           "INSERT INTO user_roles (user_id, role) VALUES (?, ?)",
            }))
            .bind(&identity.user_id)
            .bind(*role)
            .execute(&mut *tx)
            .await?;
        }
        match insert_identity_on(&mut tx, identity).await {
            Err(e) if is_unique_violation(&e) => return Ok(InsertPasswordlessUser::IdentityTaken),
            other => other?,
        }
        tx.commit().await?;
        Ok(InsertPasswordlessUser::Created)
    }
}

/// Inserts `identity` on `conn`.
async fn insert_identity_on(
    conn: &mut sqlx::AnyConnection,
    identity: &ExternalIdentity,
) -> Result<(), sqlx::Error> {
    sqlx::query(Backend::of_connection(conn).sql(INSERT_IDENTITY))
        .bind(&identity.provider)
        .bind(&identity.subject)
        .bind(&identity.user_id)
        .bind(identity.email.as_deref())
        .bind(i64::from(identity.email_verified))
        .bind(identity.created_at)
        .bind(identity.last_used_at)
        .bind(identity.issuer.as_deref())
        .execute(conn)
        .await
        .map(drop)
}
