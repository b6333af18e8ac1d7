//! Queries on `signing_keys`: the key ring every replica reads.

use secrecy::{ExposeSecret as _, SecretSlice};
use sqlx::{any::AnyRow, FromRow, Row};

use super::{sql::sql, Backend, Store};
use crate::kek::Sealed;

/// One key of the ring as stored.
#[derive(Debug, Clone)]
pub struct StoredKey {
    /// Key id, as in the JWT header.
    pub kid: String,
    /// JWS algorithm name: `ES256`, `EdDSA`, `RS256` or `HS256` (every key of earlier versions).
    pub algorithm: String,
    /// The private material: the HMAC secret or the PKCS#8 DER private key.
    pub material: KeyMaterial,
    /// Unix seconds.
    pub created_at: i64,
    /// Signs from this time (Unix seconds); published from creation.
    pub activates_at: i64,
    /// Stops signing at this time, when a successor activates.
    pub retires_at: Option<i64>,
    /// Set when revoked: never published or accepted again.
    pub revoked_at: Option<i64>,
}

/// How a key's private material is stored.
#[derive(Debug, Clone)]
pub enum KeyMaterial {
    /// Written before encryption at rest (an HMAC secret in the clear, `kek_id` NULL); the
    /// next start seals it. Until then the ring does not load it: nothing but the start-up
    /// re-seal trusts a row that no KEK authenticates.
    Plaintext(SecretSlice<u8>),
    /// Sealed under a key-encryption key.
    Sealed(Sealed),
}

impl KeyMaterial {
    /// The id of the KEK that sealed it; `None` in the clear.
    pub fn kek_id(&self) -> Option<&str> {
        match self {
            Self::Plaintext(_) => None,
            Self::Sealed(sealed) => Some(&sealed.kek_id),
        }
    }

    /// The bytes of the `secret` column, as stored.
    fn stored_bytes(&self) -> &[u8] {
        match self {
            Self::Plaintext(secret) => secret.expose_secret(),
            Self::Sealed(sealed) => &sealed.ciphertext,
        }
    }
}

impl FromRow<'_, AnyRow> for StoredKey {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let secret: Vec<u8> = row.try_get("secret")?;
        let kek_id: Option<String> = row.try_get("kek_id")?;
        let nonce: Option<Vec<u8>> = row.try_get("nonce")?;
        let material = match (kek_id, nonce) {
            (Some(kek_id), Some(nonce)) => KeyMaterial::Sealed(Sealed {
                kek_id,
                nonce,
                ciphertext: secret,
            }),
            (None, None) => KeyMaterial::Plaintext(SecretSlice::from(secret)),
            _ => {
                return Err(sqlx::Error::Decode(
                    "signing_keys row with only one of kek_id and nonce".into(),
                ))
            }
        };
        Ok(Self {
            kid: row.try_get("kid")?,
            algorithm: row.try_get("algorithm")?,
            material,
            created_at: row.try_get("created_at")?,
            activates_at: row.try_get("activates_at")?,
            retires_at: row.try_get("retires_at")?,
            revoked_at: row.try_get("revoked_at")?,
        })
    }
}

impl Store {
    /// Every key, oldest first.
    pub async fn keys(&self) -> Result<Vec<StoredKey>, sqlx::Error> {
        sqlx::query_as(
            "SELECT kid, algorithm, secret, kek_id, nonce, created_at, activates_at, retires_at, \
             revoked_at FROM signing_keys ORDER BY activates_at, kid",
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Stores `key` as the ring's first key, unless a replica has already bootstrapped the ring
    /// (the single `key_ring_bootstrap` row decides). `true` when this call created it.
    pub async fn bootstrap_key(&self, key: &StoredKey) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // Of two replicas starting at once, the second waits for the first's row (the unique
        // check locks it) and then inserts nothing; it inserts if the first rolled back.
        let claimed = sqlx::query(self.sql(sql! {
            postgres_sqlite: "INSERT INTO key_ring_bootstrap (id) VALUES (1) ON CONFLICT DO NOTHING",
            mysql:           "INSERT IGNORE INTO key_ring_bootstrap (id) VALUES (1)",
        }))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if claimed {
            insert_key(&mut tx, key).await?;
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Adds `key` as the next signer: every key still signing (or waiting to) retires when it
    /// activates.
    pub async fn rotate_in_key(&self, key: &StoredKey) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        retire_signers(&mut tx, key.activates_at).await?;
        insert_key(&mut tx, key).await?;
        tx.commit().await
    }

    /// [`Store::rotate_in_key`], but only if no key was added after `cutoff`: of several
    /// replicas running the schedule at once, exactly one rotates. `true` when it rotated.
    pub async fn rotate_in_key_if_due(
        &self,
        key: &StoredKey,
        cutoff: i64,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // A replica that waited for another's claim re-reads the row and finds it moved on.
        let claimed = sqlx::query(self.sql(sql! {
            postgres_sqlite: "UPDATE key_rotation_state SET last_rotation_at = $1 \
                              WHERE id = 1 AND last_rotation_at <= $2",
            mysql:           "UPDATE key_rotation_state SET last_rotation_at = ? \
                              WHERE id = 1 AND last_rotation_at <= ?",
        }))
        .bind(key.created_at)
        .bind(cutoff)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !claimed {
            tx.rollback().await?;
            return Ok(false);
        }
        retire_signers(&mut tx, key.activates_at).await?;
        insert_key(&mut tx, key).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// When the ring last got a key (for the rotation schedule).
    pub async fn last_key_added_at(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT last_rotation_at FROM key_rotation_state WHERE id = 1")
            .fetch_one(&self.pool)
            .await
    }

    /// Replaces the material of `kid` with `sealed`, if it is still `previous` as read: of
    /// several replicas re-sealing at once, the first wins and the others change nothing.
    /// `true` when this call replaced it.
    pub async fn reseal_key(
        &self,
        kid: &str,
        previous: &KeyMaterial,
        sealed: &Sealed,
    ) -> Result<bool, sqlx::Error> {
        let result = sqlx::query(self.sql(sql! {
            postgres_sqlite: "UPDATE signing_keys SET secret = $1, kek_id = $2, nonce = $3 \
                              WHERE kid = $4 AND secret = $5",
            mysql:           "UPDATE signing_keys SET secret = ?, kek_id = ?, nonce = ? \
                              WHERE kid = ? AND secret = ?",
        }))
        .bind(sealed.ciphertext.clone())
        .bind(&sealed.kek_id)
        .bind(sealed.nonce.clone())
        .bind(kid)
        .bind(previous.stored_bytes().to_vec())
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Withdraws a key at once: it is neither published nor accepted any more. `false` when
    /// there is no such key or it was already revoked.
    pub async fn revoke_key(&self, kid: &str, now: i64) -> Result<bool, sqlx::Error> {
        let result = sqlx::query(self.sql(sql! {
            postgres_sqlite: "UPDATE signing_keys SET revoked_at = $1 WHERE kid = $2 AND revoked_at IS NULL",
            mysql:           "UPDATE signing_keys SET revoked_at = ? WHERE kid = ? AND revoked_at IS NULL",
        }))
        .bind(now)
        .bind(kid)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }
}

/// Every key still signing, or waiting to, stops signing at `at`.
async fn retire_signers(conn: &mut sqlx::AnyConnection, at: i64) -> Result<(), sqlx::Error> {
    sqlx::query(Backend::of_connection(conn).sql(sql! {
        postgres_sqlite: "UPDATE signing_keys SET retires_at = $1 WHERE retires_at IS NULL AND revoked_at IS NULL",
        mysql:           "UPDATE signing_keys SET retires_at = ? WHERE retires_at IS NULL AND revoked_at IS NULL",
    }))
    .bind(at)
    .execute(conn)
    .await
    .map(drop)
}

/// Inserts a key and records it as the ring's latest addition (for the rotation schedule).
async fn insert_key(conn: &mut sqlx::AnyConnection, key: &StoredKey) -> Result<(), sqlx::Error> {
    // Keys are only ever written sealed.
    let KeyMaterial::Sealed(sealed) = &key.material else {
        return Err(sqlx::Error::Protocol(
            "refusing to store a signing key in the clear".to_owned(),
        ));
    };
    let backend = Backend::of_connection(conn);
    sqlx::query(backend.sql(sql! {
        postgres_sqlite: "UPDATE key_rotation_state SET last_rotation_at = $1 WHERE id = 1",
        mysql:           "UPDATE key_rotation_state SET last_rotation_at = ? WHERE id = 1",
    }))
    .bind(key.created_at)
    .execute(&mut *conn)
    .await?;
    sqlx::query(backend.sql(sql! {
        postgres_sqlite: "INSERT INTO signing_keys (kid, algorithm, secret, kek_id, nonce, created_at, \
                          activates_at, retires_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        mysql:           "INSERT INTO signing_keys (kid, algorithm, secret, kek_id, nonce, created_at, \
                          activates_at, retires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    }))
    .bind(&key.kid)
    .bind(&key.algorithm)
    .bind(sealed.ciphertext.clone())
    .bind(&sealed.kek_id)
    .bind(sealed.nonce.clone())
    .bind(key.created_at)
    .bind(key.activates_at)
    .bind(key.retires_at)
    .bind(key.revoked_at)
    .execute(conn)
    .await
    .map(drop)
}
