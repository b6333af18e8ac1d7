//! Bringing stored emails to the canonical form of [`Email::parse`] (issue 10).
//!
//! Until issue 10 an email was stored trimmed and lower-cased only. ASCII addresses are already
//! canonical; an address with a non-ASCII character may not be (a U-label domain, a fullwidth
//! letter), and login looks up the canonical form only. So every start re-canonicalises the rows
//! that hold a non-ASCII character, after the SQL migrations. It owns no query of another table.

use super::{is_unique_violation, sql::sql, Store};
use crate::domain::Email;

/// What [`Store::canonicalise_emails`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EmailCanonicalisation {
    /// Rows rewritten to the canonical form.
    pub rewritten: u64,
    /// Rows left as they were because another account already holds the canonical form: the
    /// duplicates of issue 10. Login finds the other account; an operator merges or deletes.
    pub conflicts: u64,
    /// Rows left as they were because the address no longer parses (e.g. a DNS label over 63).
    pub unparsable: u64,
}

impl Store {
    /// Rewrites every stored email that holds a non-ASCII character to its canonical form;
    /// idempotent, and a no-op once done (canonical rows are left alone). Logs each row it
    /// cannot rewrite by user id, never by address.
    pub async fn canonicalise_emails(&self) -> Result<EmailCanonicalisation, sqlx::Error> {
        // Rows whose byte length is not their character length. (MySQL stores emails as bytes,
        // see migrations/mysql, and has held canonical forms only: it arrived after issue 10.)
        let rows: Vec<(String, String)> = sqlx::query_as(self.sql(sql! {
            postgres: "SELECT id, email FROM users WHERE octet_length(email) <> char_length(email)",
            sqlite:   "SELECT id, email FROM users WHERE length(CAST(email AS BLOB)) <> length(email)",
            mysql:    "SELECT id, email FROM users \
                       WHERE length(email) <> char_length(CONVERT(email USING utf8mb4))",
        }))
        .fetch_all(&self.pool)
        .await?;
        let mut done = EmailCanonicalisation::default();
        for (id, stored) in rows {
            let Ok(email) = Email::parse(&stored) else {
                tracing::warn!(user_id = %id, "stored email no longer parses; left as is");
                done.unparsable += 1;
                continue;
            };
            if email.as_str() == stored {
                continue;
            }
            let updated = sqlx::query(self.sql(sql! {
                postgres_sqlite: "UPDATE users SET email = $1 WHERE id = $2 AND email = $3",
                mysql:           "UPDATE users SET email = ? WHERE id = ? AND email = ?",
            }))
            .bind(email.as_str())
            .bind(&id)
            .bind(&stored)
            .execute(&self.pool)
            .await;
            match updated {
                Ok(result) => done.rewritten += result.rows_affected(),
                Err(e) if is_unique_violation(&e) => {
                    tracing::warn!(
                        user_id = %id,
                        "another account holds this email's canonical form; left as is"
                    );
                    done.conflicts += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}
