//! The store: PostgreSQL in production, SQLite as the embedded default, one set of queries.
//!
//! Both go through sqlx's `Any` driver, so every query is written once: ids are UUID text,
//! times Unix seconds, placeholders `$n` (both engines accept them). Each submodule adds the
//! queries of one table family to [`Store`]. Multi-statement writes run in transactions that
//! begin with a write, so SQLite never has to upgrade a read lock (which fails at once instead
//! of waiting).

mod emails;
mod keys;
mod login_attempts;
mod revocations;
mod sessions;
mod users;

use std::{str::FromStr, time::Duration};

use sqlx::{
    any::{AnyConnectOptions, AnyPoolOptions},
    migrate::Migrator,
    AnyPool, Executor,
};

pub use emails::EmailCanonicalisation;
pub use keys::{KeyMaterial, StoredKey};
pub use login_attempts::LoginReservation;
pub use revocations::{FeedCursor, RevocationPage, RevocationRow, Revoked};
pub use sessions::{
    NewSession, RefreshLookup, RevokeAt, RotationKeyAtRest, SessionRow, SessionSummary, TokenStatus,
};
pub use users::{InsertUser, PasswordChange, UserRow, UserSummary};

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");

/// Which engine a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `sqlite://` or `sqlite:`.
    Sqlite,
}

impl Backend {
    /// The engine named by a database URL's scheme.
    pub fn of_url(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else {
            anyhow::bail!("unsupported database url scheme (expected postgres:// or sqlite://)")
        }
    }
}

/// A connection pool plus the queries of the service; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
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
            _ => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Postgres => 16,
                // One writer at a time anyway; a few readers alongside in WAL mode.
                Backend::Sqlite => 4,
            })
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                        )
                        .await?;
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
        let migrator = match self.backend {
            Backend::Postgres => &POSTGRES_MIGRATIONS,
            Backend::Sqlite => &SQLITE_MIGRATIONS,
        };
        migrator.run(&self.pool).await?;
        // Stored emails in the canonical form of issue 10: SQL cannot do IDNA, so Rust does.
        let emails = self.canonicalise_emails().await?;
        if emails != EmailCanonicalisation::default() {
            tracing::info!(?emails, "stored emails brought to canonical form");
        }
        Ok(())
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(drop)
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection (at shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Whether an error is a unique-constraint violation, on either engine.
fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}
