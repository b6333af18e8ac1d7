-- Issue 15: the TOTP second factor (RFC 6238) and its recovery codes. The tables and their
-- comments are those of migrations/postgres/0010_totp.sql, in the types of 0006_initial.sql:
-- identifying text in VARBINARY (byte-for-byte equality), bytes read back (the sealed secret)
-- in BLOB, bytes only compared (the hashes in the key) in VARBINARY, times in BIGINT. A KEK id
-- is at most 64 characters.

CREATE TABLE user_totp (
    user_id        VARBINARY(36) NOT NULL PRIMARY KEY,
    secret_sealed  BLOB NOT NULL,
    secret_kek     VARBINARY(64) NOT NULL,
    created_at     BIGINT NOT NULL,
    confirmed_at   BIGINT,
    last_used_step BIGINT,
    CONSTRAINT user_totp_confirmed_check
        CHECK ((confirmed_at IS NULL) = (last_used_step IS NULL)),
    CONSTRAINT user_totp_user_fk FOREIGN KEY (user_id) REFERENCES users (id)
        ON DELETE CASCADE
) ENGINE = InnoDB;

CREATE TABLE recovery_codes (
    user_id    VARBINARY(36) NOT NULL,
    code_hash  VARBINARY(32) NOT NULL,
    created_at BIGINT NOT NULL,
    used_at    BIGINT,
    PRIMARY KEY (user_id, code_hash),
    CONSTRAINT recovery_codes_user_fk FOREIGN KEY (user_id) REFERENCES users (id)
        ON DELETE CASCADE
) ENGINE = InnoDB;
