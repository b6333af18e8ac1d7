-- Issue 14: how the user authenticated when the session opened, for the access tokens' `amr`
-- claim (see migrations/postgres/0008_session_auth_method.sql). VARBINARY like the other
-- identifying text of 0006_initial.sql; a method name is a few ASCII letters.
ALTER TABLE sessions ADD COLUMN auth_method VARBINARY(16) NOT NULL DEFAULT 'pwd';
