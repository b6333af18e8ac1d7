-- Issue 15: the second step of a login to an account with a TOTP second factor. A right
-- password answers `mfa_required` with a random challenge (`mfa_token`, 256 bits) that
-- `/login/mfa` completes with a code. Only SHA-256 of the challenge is stored. It is bound to
-- its user and to the credential state the password was checked against (a digest of the
-- password hash and `tokens_valid_after`): a password change, a rehash or a "logout
-- everywhere" in between voids it. `lock_key` is the `login_attempts` key the password was
-- checked under (the email's, or a device token's), so wrong codes count where the password
-- did. A challenge lives five minutes and is deleted when used.
CREATE TABLE mfa_challenges (
    token_hash         BYTEA PRIMARY KEY,
    user_id            TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    password_digest    BYTEA NOT NULL,
    tokens_valid_after BIGINT NOT NULL,
    lock_key           TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    expires_at         BIGINT NOT NULL
);

CREATE INDEX mfa_challenges_expires_at_idx ON mfa_challenges (expires_at);
CREATE INDEX mfa_challenges_user_id_idx ON mfa_challenges (user_id);
