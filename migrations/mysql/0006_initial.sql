-- The schema of MySQL 8 and MariaDB 10.11+, as of version 6 of the other engines' migrations:
-- MySQL support arrived with version 6, so its history starts there, in one step, and later
-- versions keep the numbers of the other engines.
--
-- Text that identifies something (ids, emails, roles, kids) is VARBINARY: compared byte for
-- byte, like PostgreSQL's and SQLite's equality. The default collations are case- and
-- accent-insensitive (`a@x.org` = `A@X.org`, `josé` = `jose`), and even the `_bin` ones pad
-- with spaces (`'a' = 'a '`), so two different canonical emails could collide in the unique
-- index and a session id with a trailing space would match. What is stored is always valid
-- UTF-8 (it comes from Rust strings), so 4-byte characters round-trip as `utf8mb4` would.
-- Binary values read back (keys, nonces) are BLOBs, which sqlx's `Any` driver reads as bytes;
-- it reads VARBINARY as text, which is why only text goes in VARBINARY. Times are Unix seconds
-- in BIGINT. `until` is a reserved word in MySQL: the statements quote it.

CREATE TABLE users (
    id                 VARBINARY(36)  NOT NULL PRIMARY KEY,
    email              VARBINARY(254) NOT NULL,
    password_hash      VARBINARY(255) NOT NULL,
    created_at         BIGINT NOT NULL,
    disabled_at        BIGINT,
    tokens_valid_after BIGINT NOT NULL DEFAULT 0,
    CONSTRAINT users_email_key UNIQUE (email)
) ENGINE = InnoDB;

CREATE TABLE user_roles (
    user_id VARBINARY(36)  NOT NULL,
    role    VARBINARY(255) NOT NULL,
    PRIMARY KEY (user_id, role),
    CONSTRAINT user_roles_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE = InnoDB;

CREATE TABLE sessions (
    id               VARBINARY(36) NOT NULL PRIMARY KEY,
    user_id          VARBINARY(36) NOT NULL,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    generation       BIGINT NOT NULL DEFAULT 0,
    refreshed_at     BIGINT NOT NULL,
    rotation_key     BLOB NOT NULL,
    rotation_key_kek VARBINARY(64),
    revoked_at       BIGINT,
    revoke_reason    VARBINARY(64),
    INDEX sessions_user_id_idx (user_id),
    CONSTRAINT sessions_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE = InnoDB;

-- The hash is the key and is only ever compared, never read back (see above).
CREATE TABLE refresh_tokens (
    token_hash VARBINARY(32) NOT NULL PRIMARY KEY,
    session_id VARBINARY(36) NOT NULL,
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    INDEX refresh_tokens_session_id_idx (session_id),
    CONSTRAINT refresh_tokens_session_fk FOREIGN KEY (session_id) REFERENCES sessions (id)
        ON DELETE CASCADE
) ENGINE = InnoDB;

CREATE TABLE signing_keys (
    kid          VARBINARY(64) NOT NULL PRIMARY KEY,
    algorithm    VARBINARY(16) NOT NULL,
    secret       BLOB NOT NULL,
    kek_id       VARBINARY(64),
    nonce        BLOB,
    created_at   BIGINT NOT NULL,
    activates_at BIGINT NOT NULL,
    retires_at   BIGINT,
    revoked_at   BIGINT,
    CONSTRAINT signing_keys_sealed_check CHECK ((kek_id IS NULL) = (nonce IS NULL))
) ENGINE = InnoDB;

CREATE TABLE key_ring_bootstrap (
    id BIGINT NOT NULL PRIMARY KEY CHECK (id = 1)
) ENGINE = InnoDB;

CREATE TABLE key_rotation_state (
    id               BIGINT NOT NULL PRIMARY KEY CHECK (id = 1),
    last_rotation_at BIGINT NOT NULL
) ENGINE = InnoDB;

INSERT INTO key_rotation_state (id, last_rotation_at) VALUES (1, 0);

CREATE TABLE login_attempts (
    email        VARBINARY(255) NOT NULL PRIMARY KEY,
    failures     BIGINT NOT NULL,
    last_failure BIGINT NOT NULL,
    locked_until BIGINT NOT NULL,
    INDEX login_attempts_last_failure_idx (last_failure)
) ENGINE = InnoDB;

CREATE TABLE revocations (
    id         BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    kind       VARBINARY(16) NOT NULL CHECK (kind IN ('session', 'user')),
    subject    VARBINARY(64) NOT NULL,
    not_before BIGINT,
    `until`    BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    seq        BIGINT NOT NULL,
    tag        BIGINT NOT NULL,
    UNIQUE INDEX revocations_seq_idx (seq),
    INDEX revocations_until_idx (`until`)
) ENGINE = InnoDB;

-- The feed's head (see auth-api/src/store/revocations.rs): a random epoch names this database's
-- history, and the head of an empty feed gets a random tag like every entry's.
CREATE TABLE revocation_feed (
    id    BIGINT NOT NULL PRIMARY KEY CHECK (id = 1),
    epoch VARBINARY(64) NOT NULL,
    seq   BIGINT NOT NULL,
    tag   BIGINT NOT NULL
) ENGINE = InnoDB;

INSERT INTO revocation_feed (id, epoch, seq, tag)
VALUES (1, MD5(CONCAT(UUID(), RAND(), CONNECTION_ID())), 0,
        CAST(CONV(SUBSTRING(MD5(CONCAT(UUID(), RAND())), 1, 15), 16, 10) AS SIGNED));
