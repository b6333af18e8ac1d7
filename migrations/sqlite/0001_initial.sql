-- Times are Unix seconds (BIGINT) and ids are UUID text, so that one set of queries serves both
-- PostgreSQL and SQLite through sqlx's Any driver.

CREATE TABLE users (
    id                 TEXT PRIMARY KEY,
    -- Trimmed and lower-cased by the application, so uniqueness ignores case.
    email              TEXT NOT NULL,
    -- bcrypt(base64(HMAC-SHA-384(pepper, NFC(password)))), "$2b$<cost>$...".
    password_hash      TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    disabled_at        BIGINT,
    -- Access tokens issued before this time are refused by /validate (logout-all, disable).
    tokens_valid_after BIGINT NOT NULL DEFAULT 0,
    CONSTRAINT users_email_key UNIQUE (email)
);

CREATE TABLE user_roles (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role    TEXT NOT NULL,
    PRIMARY KEY (user_id, role)
);

-- One row per login.
CREATE TABLE sessions (
    id                TEXT PRIMARY KEY,
    user_id           TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at        BIGINT NOT NULL,
    -- Absolute end of the session, whatever its use.
    expires_at        BIGINT NOT NULL,
    -- Generation of the one live refresh token; bumped by every rotation (never timestamps).
    generation        BIGINT NOT NULL DEFAULT 0,
    -- When the live refresh token was issued (login or last rotation): idle timeout and grace.
    refreshed_at      BIGINT NOT NULL,
    -- Secret from which each successor refresh token is derived from its predecessor.
    rotation_key      BLOB NOT NULL,
    revoked_at        BIGINT,
    revoke_reason     TEXT
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);

-- Every refresh token a session has been issued, as SHA-256 only: reuse of any older
-- generation is recognised and revokes the session.
CREATE TABLE refresh_tokens (
    token_hash BLOB PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX refresh_tokens_session_id_idx ON refresh_tokens (session_id);

-- The key ring shared by every replica.
CREATE TABLE signing_keys (
    kid          TEXT PRIMARY KEY,
    algorithm    TEXT NOT NULL,
    secret       BLOB NOT NULL,
    created_at   BIGINT NOT NULL,
    -- Published from creation; signs from activates_at until retires_at.
    activates_at BIGINT NOT NULL,
    retires_at   BIGINT,
    revoked_at   BIGINT
);

-- A single row, inserted by whichever replica creates the first key: two replicas starting on
-- an empty database never both create one.
CREATE TABLE key_ring_bootstrap (
    id INTEGER PRIMARY KEY CHECK (id = 1)
);
