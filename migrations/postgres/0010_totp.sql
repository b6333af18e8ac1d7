-- Issue 15: the TOTP second factor (RFC 6238) and its recovery codes.
--
-- One enrolment per user. The secret is sealed under a key-encryption key (`secret_kek`) with
-- the associated data binding it to the user, in the nonce-then-ciphertext layout of
-- sessions.rotation_key: a database dump alone computes no code. An enrolment waits for a first
-- code (`confirmed_at` NULL) before it is a second factor; `last_used_step` is the newest
-- 30-second time step a code was accepted for, so that a code is good once (RFC 6238 §5.2):
-- set by the confirmation, then moved forward only by a conditional UPDATE.
CREATE TABLE user_totp (
    user_id        TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret_sealed  BYTEA NOT NULL,
    secret_kek     TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    confirmed_at   BIGINT,
    last_used_step BIGINT,
    -- Both NULL until the first code, both set from then on.
    CHECK ((confirmed_at IS NULL) = (last_used_step IS NULL))
);

-- Single-use recovery codes. Only SHA-256 of each is stored: a code is 120 random bits, which
-- no guess finds, so a fast hash is enough (NIST SP 800-63B asks for a password hash below
-- 112 bits) and a code is found by its hash. A used code keeps its row, with when, until the
-- codes are replaced or the factor is disabled.
CREATE TABLE recovery_codes (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    used_at    BIGINT,
    PRIMARY KEY (user_id, code_hash)
);
