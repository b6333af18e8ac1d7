-- Issue 14: sign-in through an external OpenID Connect or OAuth2 provider.
--
-- `external_identities` maps an identity at a provider, (provider, subject), to one user; a
-- user may have several. A user created by such a sign-in has no password: `password_hash`
-- holds a constant that is not a bcrypt hash (see auth-api/src/store/identities.rs), which
-- no password ever verifies against.
CREATE TABLE external_identities (
    -- The operator's name for the provider (`[a-z0-9_-]{1,32}`).
    provider       TEXT NOT NULL,
    -- The provider's `sub` (OIDC) or user id (GitHub): unique and never reassigned within it.
    subject        TEXT NOT NULL,
    user_id        TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- What the provider last asserted, for operators; never a key (emails are reassigned).
    email          TEXT,
    -- 0 or 1: an integer, not BOOLEAN, so that one Rust type reads it on every engine.
    email_verified BIGINT NOT NULL CHECK (email_verified IN (0, 1)),
    created_at     BIGINT NOT NULL,
    last_used_at   BIGINT NOT NULL,
    PRIMARY KEY (provider, subject)
);
CREATE INDEX external_identities_user_id_idx ON external_identities (user_id);

-- One /authorize -> /callback round trip: single use (taken by deleting it) and short-lived.
-- Only hashes of the `state` and of the browser-binding cookie are stored, so a database
-- reader cannot complete a flow; the PKCE verifier is sealed under a key-encryption key
-- (`pkce_verifier_kek`) with the same nonce-then-ciphertext layout as sessions.rotation_key.
CREATE TABLE sign_in_flows (
    -- SHA-256 of the random `state` sent to the provider.
    state_hash            BYTEA PRIMARY KEY,
    provider              TEXT NOT NULL,
    -- The OIDC `nonce` the ID token must carry.
    nonce                 TEXT NOT NULL,
    pkce_verifier_sealed  BYTEA NOT NULL,
    pkce_verifier_kek     TEXT NOT NULL,
    -- SHA-256 of the random cookie value that binds the flow to the browser that started it.
    browser_binding_hash  BYTEA NOT NULL,
    -- Where the client goes back to (checked against the allow-list before it is stored).
    redirect_to           TEXT NOT NULL,
    -- The client's own PKCE S256 challenge, for the one-time code it will exchange.
    client_code_challenge TEXT NOT NULL,
    created_at            BIGINT NOT NULL,
    expires_at            BIGINT NOT NULL
);
CREATE INDEX sign_in_flows_expires_at_idx ON sign_in_flows (expires_at);

-- The one-time code the client exchanges, with its PKCE verifier, for our tokens.
CREATE TABLE sign_in_codes (
    -- SHA-256 of the code.
    code_hash      BYTEA PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider       TEXT NOT NULL,
    -- How the user authenticated, for the tokens' `amr` (e.g. "oidc").
    amr            TEXT NOT NULL,
    -- The S256 challenge the exchange's verifier must match.
    code_challenge TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL
);
CREATE INDEX sign_in_codes_expires_at_idx ON sign_in_codes (expires_at);
CREATE INDEX sign_in_codes_user_id_idx ON sign_in_codes (user_id);
