-- Issue 14: how the user authenticated when the session opened, for the access tokens' `amr`
-- claim (RFC 8176 values where one exists): `pwd` for a password login, `oauth` for a sign-in
-- through an external provider. Every session before this migration was a password login; a
-- replica of the previous version, which does not name the column, keeps opening `pwd`
-- sessions through the default.
ALTER TABLE sessions ADD COLUMN auth_method TEXT NOT NULL DEFAULT 'pwd';
