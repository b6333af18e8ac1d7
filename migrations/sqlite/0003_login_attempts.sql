-- Consecutive failed logins per (normalised) email, whether or not an account has it: an
-- unknown email is throttled exactly like a known one, so throttling tells nothing about which
-- accounts exist. A successful login deletes the row.
CREATE TABLE login_attempts (
    email        TEXT PRIMARY KEY,
    failures     BIGINT NOT NULL,
    last_failure BIGINT NOT NULL,
    -- No attempt is checked before this time (Unix seconds).
    locked_until BIGINT NOT NULL
);
CREATE INDEX login_attempts_last_failure_idx ON login_attempts (last_failure);
