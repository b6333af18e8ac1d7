-- Issue 15: the second step of a login to an account with a TOTP second factor. The table and
-- its comments are those of migrations/postgres/0012_mfa_challenges.sql, in the types of
-- 0006_initial.sql: identifying text and the key in VARBINARY, bytes read back in BLOB, times
-- in BIGINT. A lock key is a normalised email (at most 320 bytes) or `device:` and 64 hex
-- digits.
CREATE TABLE mfa_challenges (
    token_hash         VARBINARY(32)  NOT NULL PRIMARY KEY,
    user_id            VARBINARY(36)  NOT NULL,
    password_digest    BLOB NOT NULL,
    tokens_valid_after BIGINT NOT NULL,
    lock_key           VARBINARY(400) NOT NULL,
    created_at         BIGINT NOT NULL,
    expires_at         BIGINT NOT NULL,
    INDEX mfa_challenges_expires_at_idx (expires_at),
    INDEX mfa_challenges_user_id_idx (user_id),
    CONSTRAINT mfa_challenges_user_fk FOREIGN KEY (user_id) REFERENCES users (id)
        ON DELETE CASCADE
) ENGINE = InnoDB;
