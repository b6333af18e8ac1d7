-- Issue 8: signing keys of every algorithm, their private material encrypted at rest.
--
-- `algorithm` (already a column) is the key's JWS algorithm: ES256, EdDSA, RS256 or HS256; every
-- row written before this migration is HS256. `secret` holds the key's private material (the
-- HMAC secret, or the PKCS#8 DER private key) sealed with XChaCha20-Poly1305 under the
-- key-encryption key `kek_id` with `nonce`; the associated data binds it to `kid` and
-- `algorithm`. Rows written before this migration have both NULL and a plaintext HMAC secret:
-- auth-api seals them at its next start (see auth-api/src/kek.rs).
ALTER TABLE signing_keys ADD COLUMN kek_id TEXT;
ALTER TABLE signing_keys ADD COLUMN nonce BYTEA;
ALTER TABLE signing_keys ADD CONSTRAINT signing_keys_sealed_check
    CHECK ((kek_id IS NULL) = (nonce IS NULL));
