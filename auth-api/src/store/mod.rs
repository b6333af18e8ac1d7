//! The store: PostgreSQL or MySQL/MariaDB in production, SQLite as the embedded default.
//!
//! All three go through sqlx's `Any` driver: ids are UUID text, times Unix seconds, binary
//! values blobs. Each statement is written per engine, side by side where it runs (`sql!`,
//! see the `sql` module), and each submodule adds the queries of one table family to [`Store`].
//! Multi-statement writes run in transactions that begin with a write (or, on MySQL, a locking
//! read), so SQLite never has to upgrade a read lock (which fails at once instead of waiting).
//!
//! MySQL and MariaDB connections run at READ COMMITTED, PostgreSQL's default, for which the
//! statements were designed: each statement sees what was committed before it began, a
//! conditional `UPDATE` re-reads the row's latest version after waiting for its lock (InnoDB
//! does so at any level), and there are no gap locks, so two logins inserting sessions, or two
//! revocations inserting feed entries, never deadlock on a range neither of them reads. Where
//! PostgreSQL and SQLite use `UPDATE … RETURNING` (which MySQL lacks), MySQL takes a locking
//! read of the rows first (`SELECT … FOR UPDATE`) and then writes them, in one transaction:
//! the lock makes the read and the write one step, as `RETURNING` does.

mod email_tokens;
mod emails;
mod identities;
mod keys;
mod login_attempts;
mod mfa;
mod outbox;
mod revocations;
mod sessions;
mod sign_in;
pub(crate) mod sql;
mod status_batch;
mod totp;
mod users;

use std::{str::FromStr, time::Duration};

use sqlx::{
    any::{AnyConnectOptions, AnyPoolOptions},
    migrate::Migrator,
    AnyPool, Executor,
};

use crate::kek::{Sealed, NONCE_BYTES};

pub use email_tokens::{EmailToken, EmailTokenPurpose, MailLimit, PasswordReset};
pub use emails::EmailCanonicalisation;
pub use identities::{
    ExternalIdentity, InsertIdentity, InsertPasswordlessUser, UnlinkIdentity, NO_PASSWORD,
};
pub use keys::{KeyMaterial, StoredKey};
pub use login_attempts::LoginReservation;
pub use mfa::MfaChallenge;
pub use outbox::{
    enqueue_email, AfterFailure, ClaimedEmail, OutboxCounts, OutboxEntry, QueuedEmail,
};
pub use revocations::{FeedCursor, FeedStats, RevocationPage, RevocationRow, Revoked};
pub use sessions::{
    NewSession, RefreshLookup, RevokeAt, RotationKeyAtRest, SessionRow, SessionSummary, TokenStatus,
};
pub use sign_in::{SignInCode, SignInFlow};
pub(crate) use status_batch::{BatchError, StatusBatch};
pub use totp::{BeginTotp, TotpEnrolment};
pub use users::{InsertUser, PasswordChange, UserRow, UserSummary};
// For the API tests' raw statements (`RawDb::sql`): the one check of `sql!`.
#[doc(hidden)]
pub use sql::checked_binds;

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");

/// Which engine a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `sqlite://` or `sqlite:`.
    Sqlite,
    /// `mysql://` or `mariadb://`: MySQL 8 or MariaDB 10.11 and later.
    Mysql,
}

impl Backend {
    /// The engine named by a database URL's scheme.
    pub fn of_url(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            Ok(Self::Mysql)
        } else {
            anyhow::bail!(
                "unsupported database url scheme (expected postgres://, mysql://, mariadb:// or sqlite://)"
            )
        }
    }

    /// The engine behind a connection of the `Any` driver (for queries inside a transaction).
    pub(crate) fn of_connection(conn: &sqlx::AnyConnection) -> Self {
        match conn.backend_name() {
            "MySQL" => Self::Mysql,
            "SQLite" => Self::Sqlite,
            _ => Self::Postgres,
        }
    }

    /// The text of `sql` on this engine.
    pub(in crate::store) fn sql(self, sql: &sql::Sql) -> &'static str {
        sql.on(self)
    }

    /// Whether the server is shared by replicas (every engine but SQLite).
    pub fn is_server(self) -> bool {
        self != Self::Sqlite
    }
}

/// The connection pool's figures at one moment ([`Store::pool_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open, idle or in use.
    pub open: i64,
    /// Connections open and idle.
    pub idle: i64,
    /// The most connections the pool opens.
    pub max: i64,
}

/// A connection pool plus the queries of the service; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// The column value of a sealed secret (a session's rotation key, a sign-in flow's PKCE
/// verifier): the nonce, then the ciphertext and its tag.
fn join_sealed(sealed: &Sealed) -> Vec<u8> {
    [sealed.nonce.as_slice(), sealed.ciphertext.as_slice()].concat()
}

/// A sealed secret from its column; one too short for a nonce fails to open.
fn split_sealed(kek_id: &str, stored: &[u8]) -> Sealed {
    let (nonce, ciphertext) = stored.split_at(stored.len().min(NONCE_BYTES));
    Sealed {
        kek_id: kek_id.to_owned(),
        nonce: nonce.to_vec(),
        ciphertext: ciphertext.to_vec(),
    }
}

impl Store {
    /// Connects to `url`; a SQLite file is created when missing.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            // sqlx's MySQL driver takes only the `mysql` scheme; MariaDB speaks the same protocol.
            Backend::Mysql => url.replacen("mariadb://", "mysql://", 1),
            _ => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Postgres | Backend::Mysql => 16,
                // One writer at a time anyway; a few readers alongside in WAL mode.
                Backend::Sqlite => 4,
            })
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    match backend {
                        Backend::Sqlite => {
                            conn.execute(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                                 PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                            )
                            .await?;
                        }
                        // READ COMMITTED: see the module docs. Strict mode: a value that does
                        // not fit its column is an error, never silently truncated. sqlx has
                        // already set utf8mb4 and a UTC session time zone.
                        Backend::Mysql => {
                            conn.execute(
                                "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED; \
                                 SET SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES'); \
                                 SET SESSION innodb_lock_wait_timeout = 10",
                            )
                            .await?;
                        }
                        Backend::Postgres => {}
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Self { pool, backend })
    }

    /// Connects and applies pending migrations: what every command does first.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let store = Self::connect(url)
            .await
            .context("cannot connect to AUTH_DATABASE_URL")?;
        store
            .migrate()
            .await
            .context("cannot migrate the database")?;
        Ok(store)
    }

    /// Applies the migrations of this backend that have not run yet.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self.backend {
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Backend::Mysql => self.migrate_mysql().await?,
        }
        // Stored emails in the canonical form of issue 10: SQL cannot do IDNA, so Rust does.
        let emails = self.canonicalise_emails().await?;
        if emails != EmailCanonicalisation::default() {
            tracing::info!(?emails, "stored emails brought to canonical form");
        }
        Ok(())
    }

    /// MySQL's migrations under a lock of our own: sqlx's takes `GET_LOCK(…, -1)`, which
    /// MariaDB answers with NULL (no lock) instead of waiting, so replicas starting together on
    /// a new database would both migrate and one would fail. This waits up to 10 minutes and
    /// requires the lock, on the connection that then migrates.
    async fn migrate_mysql(&self) -> anyhow::Result<()> {
        let mut conn = self.pool.acquire().await?;
        let locked: Option<i64> =
            sqlx::query_scalar("SELECT GET_LOCK(CONCAT('auth-api-migrate:', DATABASE()), 600)")
                .fetch_one(&mut *conn)
                .await?;
        anyhow::ensure!(
            locked == Some(1),
            "cannot take the migration lock within 10 minutes"
        );
        let mut migrator = sqlx::migrate!("../migrations/mysql");
        migrator.set_locking(false);
        let connection: &mut sqlx::AnyConnection = &mut conn;
        let migrated = migrator.run_direct(connection).await;
        sqlx::query("SELECT RELEASE_LOCK(CONCAT('auth-api-migrate:', DATABASE()))")
            .execute(&mut *conn)
            .await?;
        Ok(migrated?)
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(drop)
    }

    /// The connection pool's figures right now (for the metrics).
    pub fn pool_stats(&self) -> PoolStats {
        PoolStats {
            open: i64::from(self.pool.size()),
            idle: i64::try_from(self.pool.num_idle()).unwrap_or(i64::MAX),
            max: i64::from(self.pool.options().get_max_connections()),
        }
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The text of `sql` on this store's engine.
    fn sql(&self, sql: &sql::Sql) -> &'static str {
        sql.on(self.backend)
    }

    /// Closes every connection (at shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Whether an error is a unique-constraint violation, on any engine.
fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}
