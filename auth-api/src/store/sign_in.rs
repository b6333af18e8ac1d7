//! Queries on `sign_in_flows` and `sign_in_codes`: the short-lived, single-use state of a
//! sign-in through an external provider (issue 14).
//!
//! A flow is one `/authorize` → `/callback` round trip; a code is what the client then
//! exchanges for our tokens. Both are keyed by the SHA-256 of a random value only the browser
//! or the client holds, and both are *taken*: read and deleted in one step, so of two requests
//! presenting the same state or code exactly one gets the row, and a replay finds nothing. On
//! PostgreSQL and SQLite that is `DELETE … RETURNING` (a second delete of the row waits for the
//! first and then finds it gone); MySQL, which lacks `RETURNING`, locks the row with
//! `SELECT … FOR UPDATE` and deletes it in the same transaction. An expired row is taken like a
//! live one, and answered as absent: it is gone either way.
//!
//! The PKCE verifier of a flow is stored sealed under a key-encryption key, like a session's
//! rotation key, although it lives ten minutes at most: it is the one secret of the flow that
//! the database holds in a usable form (the state and the browser binding are stored as
//! hashes), and with it and a stolen authorisation code anybody holding our client secret
//! redeems the code at the provider. Sealing costs one XChaCha20-Poly1305 per flow and keeps the
//! promise that a database dump alone holds no usable secret (SECURITY.md I 100).

use sqlx::{any::AnyRow, FromRow};

use super::{join_sealed, split_sealed, sql::sql, Backend, Store};
use crate::kek::Sealed;

/// One `/authorize` → `/callback` round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInFlow {
    /// SHA-256 of the random `state` sent to the provider (the state itself is never stored).
    pub state_hash: Vec<u8>,
    /// The operator's name for the provider.
    pub provider: String,
    /// The OIDC `nonce` the ID token must carry.
    pub nonce: String,
    /// The PKCE verifier for the provider's code, sealed under the current key-encryption key.
    pub pkce_verifier: Sealed,
    /// SHA-256 of the random cookie value that binds the flow to the browser that started it.
    pub browser_binding_hash: Vec<u8>,
    /// Where the client goes back to, already checked against the allow-list.
    pub redirect_to: String,
    /// The client's own PKCE S256 challenge, for the one-time code it will exchange.
    pub client_code_challenge: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; the flow is refused from then on.
    pub expires_at: i64,
}

/// The one-time code a client exchanges, with its PKCE verifier, for our tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInCode {
    /// SHA-256 of the code (the code itself is never stored).
    pub code_hash: Vec<u8>,
    /// UUID text: who signed in.
    pub user_id: String,
    /// The provider they signed in through.
    pub provider: String,
    /// How they authenticated, for the tokens' `amr` (e.g. "oidc").
    pub amr: String,
    /// The S256 challenge the exchange's verifier must match.
    pub code_challenge: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; the code is refused from then on.
    pub expires_at: i64,
}

/// A taken flow as read: everything but its key, which MySQL keeps in a column read as text.
#[derive(FromRow)]
struct FlowRow {
    provider: String,
    nonce: String,
    pkce_verifier_sealed: Vec<u8>,
    pkce_verifier_kek: String,
    browser_binding_hash: Vec<u8>,
    redirect_to: String,
    client_code_challenge: String,
    created_at: i64,
    expires_at: i64,
}

impl FlowRow {
    fn into_flow(self, state_hash: &[u8]) -> SignInFlow {
        SignInFlow {
            state_hash: state_hash.to_vec(),
            provider: self.provider,
            nonce: self.nonce,
            pkce_verifier: split_sealed(&self.pkce_verifier_kek, &self.pkce_verifier_sealed),
            browser_binding_hash: self.browser_binding_hash,
            redirect_to: self.redirect_to,
            client_code_challenge: self.client_code_challenge,
            created_at: self.created_at,
            expires_at: self.expires_at,
        }
    }
}

/// A taken code as read, without its key (as [`FlowRow`]).
#[derive(FromRow)]
struct CodeRow {
    user_id: String,
    provider: String,
    amr: String,
    code_challenge: String,
    created_at: i64,
    expires_at: i64,
}

impl CodeRow {
    fn into_code(self, code_hash: &[u8]) -> SignInCode {
        SignInCode {
            code_hash: code_hash.to_vec(),
            user_id: self.user_id,
            provider: self.provider,
            amr: self.amr,
            code_challenge: self.code_challenge,
            created_at: self.created_at,
            expires_at: self.expires_at,
        }
    }
}

/// A table whose rows are taken: read and deleted in one step (module docs).
struct SingleUse {
    table: &'static str,
    /// The key column: a SHA-256.
    key: &'static str,
    /// What a take returns.
    columns: &'static str,
}

const FLOWS: SingleUse = SingleUse {
    table: "sign_in_flows",
    key: "state_hash",
    columns: "provider, nonce, pkce_verifier_sealed, pkce_verifier_kek, browser_binding_hash, \
              redirect_to, client_code_challenge, created_at, expires_at",
};

const CODES: SingleUse = SingleUse {
    table: "sign_in_codes",
    key: "code_hash",
    columns: "user_id, provider, amr, code_challenge, created_at, expires_at",
};

impl Store {
    /// Records a flow that `/authorize` starts.
    pub async fn insert_sign_in_flow(&self, flow: &SignInFlow) -> Result<(), sqlx::Error> {
        sqlx::query(self.sql(sql! {
            postgres_sqlite: "INSERT INTO sign_in_flows (state_hash, provider, nonce, pkce_verifier_sealed, \
                              pkce_verifier_kek, browser_binding_hash, redirect_to, client_code_challenge, \
                              created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            mysql:           "INSERT INTO sign_in_flows (state_hash, provider, nonce, pkce_verifier_sealed, \
                              pkce_verifier_kek, browser_binding_hash, redirect_to, client_code_challenge, \
                              created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        }))
        .bind(&flow.state_hash)
        .bind(&flow.provider)
        .bind(&flow.nonce)
        .bind(join_sealed(&flow.pkce_verifier))
        .bind(&flow.pkce_verifier.kek_id)
        .bind(&flow.browser_binding_hash)
        .bind(&flow.redirect_to)
        .bind(&flow.client_code_challenge)
        .bind(flow.created_at)
        .bind(flow.expires_at)
        .execute(&self.pool)
        .await
        .map(drop)
    }

    /// Takes the flow whose state hashes to `state_hash`: deletes it and returns it if it is
    /// still live at `now`. Of concurrent takes, one gets it; a replay, or a take of an expired
    /// flow (deleted all the same), gets `None`. The caller then compares the browser binding:
    /// a flow presented by another browser is spent all the same, so a leaked state is never
    /// tried twice.
    pub async fn take_sign_in_flow(
        &self,
        state_hash: &[u8],
        now: i64,
    ) -> Result<Option<SignInFlow>, sqlx::Error> {
        let row: Option<FlowRow> = self.take(&FLOWS, state_hash).await?;
        Ok(row
            .filter(|row| now < row.expires_at)
            .map(|row| row.into_flow(state_hash)))
    }

    /// Records a one-time code that `/callback` hands the client.
    pub async fn insert_sign_in_code(&self, code: &SignInCode) -> Result<(), sqlx::Error> {
        sqlx::query(self.sql(sql! {
            postgres_sqlite: "INSERT INTO sign_in_codes (code_hash, user_id, provider, amr, code_challenge, \
                              created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            mysql:           "INSERT INTO sign_in_codes (code_hash, user_id, provider, amr, code_challenge, \
                              created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        }))
        .bind(&code.code_hash)
        .bind(&code.user_id)
        .bind(&code.provider)
        .bind(&code.amr)
        .bind(&code.code_challenge)
        .bind(code.created_at)
        .bind(code.expires_at)
        .execute(&self.pool)
        .await
        .map(drop)
    }

    /// Takes the code that hashes to `code_hash`, as [`Store::take_sign_in_flow`] takes a flow:
    /// deleted whatever happens next, so a code is tried once, even with a wrong verifier.
    pub async fn take_sign_in_code(
        &self,
        code_hash: &[u8],
        now: i64,
    ) -> Result<Option<SignInCode>, sqlx::Error> {
        let row: Option<CodeRow> = self.take(&CODES, code_hash).await?;
        Ok(row
            .filter(|row| now < row.expires_at)
            .map(|row| row.into_code(code_hash)))
    }

    /// Reads and deletes the row of `of` keyed `key` in one step: `DELETE … RETURNING`, or on
    /// MySQL a locking read and the delete in one transaction (module docs).
    async fn take<R>(&self, of: &SingleUse, key: &[u8]) -> Result<Option<R>, sqlx::Error>
    where
        R: for<'r> FromRow<'r, AnyRow> + Send + Unpin,
    {
        let SingleUse {
            table,
            key: column,
            columns,
        } = of;
        match self.backend {
            Backend::Postgres | Backend::Sqlite => {
                let delete = format!("DELETE FROM {table} WHERE {column} = $1 RETURNING {columns}");
                sqlx::query_as(&delete)
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await
            }
            Backend::Mysql => {
                let select = format!("SELECT {columns} FROM {table} WHERE {column} = ? FOR UPDATE");
                let delete = format!("DELETE FROM {table} WHERE {column} = ?");
                let mut tx = self.pool.begin().await?;
                let row: Option<R> = sqlx::query_as(&select)
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await?;
                if row.is_some() {
                    sqlx::query(&delete).bind(key).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(row)
            }
        }
    }

    /// Deletes the flows and codes expired at `now` (the hourly cleanup); how many.
    pub async fn prune_sign_in(&self, now: i64) -> Result<u64, sqlx::Error> {
        let flows = sqlx::query(self.sql(sql! {
            postgres_sqlite: "DELETE FROM sign_in_flows WHERE expires_at <= $1",
            mysql:           "DELETE FROM sign_in_flows WHERE expires_at <= ?",
        }))
        .bind(now)
        .execute(&self.pool)
        .await?;
        let codes = sqlx::query(self.sql(sql! {
            postgres_sqlite: "DELETE FROM sign_in_codes WHERE expires_at <= $1",
            mysql:           "DELETE FROM sign_in_codes WHERE expires_at <= ?",
        }))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(flows.rows_affected() + codes.rows_affected())
    }
}
