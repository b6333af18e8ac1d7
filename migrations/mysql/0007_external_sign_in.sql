-- Issue 14: sign-in through an external OpenID Connect or OAuth2 provider. The tables and
-- their comments are those of migrations/postgres/0007_external_sign_in.sql, in the types of
-- 0006_initial.sql: identifying text in VARBINARY (byte-for-byte equality), bytes read back
-- in BLOB, bytes only compared (the hashes that are keys) in VARBINARY, times in BIGINT.
-- Lengths bound what the application stores: a provider name is at most 32 characters, an
-- OIDC `sub` at most 255 ASCII characters, an email at most 320 bytes, a nonce, a state or a
-- PKCE challenge a few dozen, and a `redirect_to` (an allow-listed URL) at most 2048 bytes.

CREATE TABLE external_identities (
    provider       VARBINARY(64)  NOT NULL,
    subject        VARBINARY(255) NOT NULL,
    user_id        VARBINARY(36)  NOT NULL,
    email          VARBINARY(320),
    email_verified BIGINT NOT NULL CHECK (email_verified IN (0, 1)),
    created_at     BIGINT NOT NULL,
    last_used_at   BIGINT NOT NULL,
    PRIMARY KEY (provider, subject),
    INDEX external_identities_user_id_idx (user_id),
    CONSTRAINT external_identities_user_fk FOREIGN KEY (user_id) REFERENCES users (id)
        ON DELETE CASCADE
) ENGINE = InnoDB;

CREATE TABLE sign_in_flows (
    state_hash            VARBINARY(32)  NOT NULL PRIMARY KEY,
    provider              VARBINARY(64)  NOT NULL,
    nonce                 VARBINARY(128) NOT NULL,
    pkce_verifier_sealed  BLOB NOT NULL,
    pkce_verifier_kek     VARBINARY(64)  NOT NULL,
    browser_binding_hash  BLOB NOT NULL,
    redirect_to           VARBINARY(2048) NOT NULL,
    client_code_challenge VARBINARY(128) NOT NULL,
    created_at            BIGINT NOT NULL,
    expires_at            BIGINT NOT NULL,
    INDEX sign_in_flows_expires_at_idx (expires_at)
) ENGINE = InnoDB;

CREATE TABLE sign_in_codes (
    code_hash      VARBINARY(32)  NOT NULL PRIMARY KEY,
    user_id        VARBINARY(36)  NOT NULL,
    provider       VARBINARY(64)  NOT NULL,
    amr            VARBINARY(64)  NOT NULL,
    code_challenge VARBINARY(128) NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    INDEX sign_in_codes_expires_at_idx (expires_at),
    INDEX sign_in_codes_user_id_idx (user_id),
    CONSTRAINT sign_in_codes_user_fk FOREIGN KEY (user_id) REFERENCES users (id)
        ON DELETE CASCADE
) ENGINE = InnoDB;
