-- The revocation feed the gateway polls: one row per revoked session, or per user for
-- "logout everywhere" and disabling. Rows leave once `until` has passed: by then every access
-- token they could refuse has expired anyway.
CREATE TABLE revocations (
    id         BIGSERIAL PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('session', 'user')),
    -- The session id, or the user id.
    subject    TEXT NOT NULL,
    -- For users: tokens issued before this time are refused.
    not_before BIGINT,
    until      BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX revocations_until_idx ON revocations (until);

-- When the ring last got a new key: scheduled rotation claims the next one with a conditional
-- update on this single row, so two replicas never rotate twice.
CREATE TABLE key_rotation_state (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    last_rotation_at BIGINT NOT NULL
);
INSERT INTO key_rotation_state (id, last_rotation_at)
SELECT 1, COALESCE(MAX(created_at), 0) FROM signing_keys;
