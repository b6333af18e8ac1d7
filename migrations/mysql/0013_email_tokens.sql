-- Issue 15: email verification and password reset. The column, the table and their comments
-- are those of migrations/postgres/0013_email_tokens.sql, in the types of 0006_initial.sql:
-- the key in VARBINARY, bytes read back in BLOB (sqlx reads VARBINARY as text).
ALTER TABLE users ADD COLUMN email_verified_at BIGINT NULL;

CREATE TABLE email_tokens (
    token_hash      VARBINARY(32)  NOT NULL PRIMARY KEY,
    user_id         VARBINARY(36)  NOT NULL,
    purpose         VARCHAR(8)     NOT NULL,
    email           VARBINARY(254) NOT NULL,
    password_digest BLOB NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    INDEX email_tokens_user_purpose_idx (user_id, purpose),
    INDEX email_tokens_expires_at_idx (expires_at),
    CONSTRAINT email_tokens_purpose_ck CHECK (purpose IN ('verify', 'reset')),
    CONSTRAINT email_tokens_user_fk FOREIGN KEY (user_id) REFERENCES users (id)
        ON DELETE CASCADE
) ENGINE = InnoDB;
