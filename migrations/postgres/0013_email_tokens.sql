-- Issue 15: email verification and password reset.
--
-- `email_verified_at` is set when the owner of the address follows a verification link, resets
-- the password by a link sent there, or signs in through a provider that vouched for it;
-- tokens carry it as `email_verified`.
--
-- `email_tokens` holds the links' secrets: 256 random bits mailed to the address, of which
-- only SHA-256 is stored. `purpose` is `verify` or `reset`; a newer token of a purpose
-- replaces the older ones of that user. `email` is the address the link was sent to: a
-- verification proves that address, no other. `password_digest` (reset tokens) binds the link
-- to the password as it was: any change of it, by a reset or otherwise, voids the link.
-- A token is deleted when used, and expired ones are pruned hourly.
ALTER TABLE users ADD COLUMN email_verified_at BIGINT;

CREATE TABLE email_tokens (
    token_hash      BYTEA PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose         TEXT NOT NULL CHECK (purpose IN ('verify', 'reset')),
    email           TEXT NOT NULL,
    password_digest BYTEA NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL
);

CREATE INDEX email_tokens_user_purpose_idx ON email_tokens (user_id, purpose);
CREATE INDEX email_tokens_expires_at_idx ON email_tokens (expires_at);
