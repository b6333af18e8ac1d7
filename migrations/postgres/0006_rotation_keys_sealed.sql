-- Issue 10: each session's rotation key sealed under a key-encryption key, so that a database
-- dump plus an old refresh token no longer derives the live successor.
--
-- `rotation_key` holds the 24-byte XChaCha20-Poly1305 nonce followed by the ciphertext and its
-- tag, sealed under the key-encryption key `rotation_key_kek`; the associated data binds it to
-- the session's id, so a blob copied onto another session does not open. Rows written before
-- this migration have `rotation_key_kek` NULL and the key in the clear: auth-api seals them at
-- its next start, and a refresh seals any it still meets (see auth-api/src/service/sessions.rs).
ALTER TABLE sessions ADD COLUMN rotation_key_kek TEXT;
