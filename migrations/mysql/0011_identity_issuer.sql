-- Issue 14, review F2: the issuer each identity was made at (see
-- migrations/postgres/0011_identity_issuer.sql). VARBINARY like the other identifying text; an
-- issuer URL is at most 2048 bytes (the providers file refuses longer ones).
ALTER TABLE external_identities ADD COLUMN issuer VARBINARY(2048) NULL;
