-- Issue 14, review F2: an identity is `(provider, subject)`, and `provider` is only the
-- operator's name for it. If the operator points that name at another issuer (another tenant,
-- another OpenID Provider, GitHub Enterprise), a subject there is a different person who may
-- carry the same `sub`. The issuer each identity was made at is kept, and a sign-in whose
-- provider now has another issuer is refused instead of signing in as that identity's user.
-- NULL: an identity from before this column, adopted by its next sign-in.
ALTER TABLE external_identities ADD COLUMN issuer TEXT;
