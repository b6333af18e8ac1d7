//! Operator actions on users, sessions and signing keys: what `auth-api users …` /
//! `auth-api keys …` (the CLI) and the Admin API (`/admin/v1/…` on the internal listener) both
//! do. The front ends only parse their input and print or serialise the outcome.
//!
//! Every change is an audit event `admin_…` with the ids it touched and the actor (`cli` or
//! `admin-token`), never an email or a secret. Reads are not audited. Disabling a user,
//! logging a user out and ending a session go through the same store calls as the user's own
//! logout, so the revocation feed carries them to the gateway.

use auth_jwt::Algorithm;

use crate::{
    domain::Email,
    keyring::{KeyRing, Revocation},
    state::AppState,
    store::{RevokeAt, SessionSummary, Store, UserSummary},
};

use super::{Error, Result};

/// Who asked for an operator action, as audit events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// A shell with database access (`auth-api users …`, `auth-api keys …`).
    Cli,
    /// A caller of the Admin API holding `AUTH_ADMIN_TOKEN`.
    AdminToken,
}

impl Actor {
    /// `cli` or `admin-token`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Cli => "cli",
            Self::AdminToken => "admin-token",
        }
    }
}

/// Whether [`Admin::rotate_key`] may add an HS256 key while `AUTH_SIGNING_ALG` is asymmetric
/// (see [`is_downgrade`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hs256 {
    /// The Admin API: [`Error::UnsupportedAlgorithm`].
    Refuse,
    /// The CLI, which warns instead: an operator with database access may mean it (a rollback
    /// to HS256 while the gateways still poll `/internal/keys`).
    Allow,
}

/// Default page size of [`Admin::users`].
pub const DEFAULT_PAGE: u32 = 50;
/// Largest page size of [`Admin::users`].
pub const MAX_PAGE: u32 = 500;

/// One page of users and the cursor of the next, if there may be more.
#[derive(Debug)]
pub struct UsersPage {
    /// Oldest first.
    pub users: Vec<UserSummary>,
    /// The id to pass as `after` for the next page; `None` on the last page.
    pub next: Option<String>,
}

/// How [`Admin::end_session`] went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedSession {
    /// The session's user.
    pub user_id: String,
    /// `false` when the session had ended already.
    pub ended: bool,
}

/// A key of the ring as an operator sees it (never its material).
#[derive(Debug, Clone)]
pub struct KeyDetails {
    /// Key id.
    pub kid: String,
    /// `ES256`, `EdDSA`, `RS256` or `HS256`.
    pub alg: String,
    /// `pending`, `active`, `retired`, `expired` or `revoked`, at the time of the listing.
    pub state: String,
    /// Whether it is the key that signs now.
    pub signing: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Signs from this time, Unix seconds.
    pub activates_at: i64,
    /// Stops signing at this time, Unix seconds.
    pub retires_at: Option<i64>,
    /// Revoked at this time, Unix seconds.
    pub revoked_at: Option<i64>,
    /// The key-encryption key that seals it; `None` in the clear.
    pub kek_id: Option<String>,
}

/// A key added by [`Admin::rotate_key`].
#[derive(Debug, Clone)]
pub struct RotatedKey {
    /// The new key's id.
    pub kid: String,
    /// Its algorithm.
    pub alg: Algorithm,
    /// When it starts signing, Unix seconds (published at once).
    pub activates_at: i64,
}

/// How [`Admin::revoke_key`] went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedKey {
    /// `false` when the key was revoked already.
    pub revoked: bool,
    /// The key that signs from now on, when the revoked key was the signer.
    pub replacement: Option<String>,
}

/// The operator actions, bound to a store, a time and an actor.
#[derive(Debug, Clone)]
pub struct Admin<'a> {
    store: &'a Store,
    at: RevokeAt,
    actor: Actor,
}

impl<'a> Admin<'a> {
    /// Actions at `at.now` whose revocations are published until `at.until`.
    pub fn new(store: &'a Store, at: RevokeAt, actor: Actor) -> Self {
        Self { store, at, actor }
    }

    /// Actions of the running service: its clock, its revocation retention.
    pub fn of(state: &'a AppState, actor: Actor) -> Self {
        Self::new(&state.store, state.revoke_at(), actor)
    }

    /// The page of at most `limit` users (1 to [`MAX_PAGE`]) after the user `after`.
    /// [`Error::InvalidRequest`] for a limit out of range or an `after` that names no user.
    pub async fn users(&self, after: Option<&str>, limit: u32) -> Result<UsersPage> {
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(Error::InvalidRequest(format!(
                "limit must be between 1 and {MAX_PAGE}"
            )));
        }
        let cursor = match after {
            Some(id) if !is_id(id) => {
                return Err(Error::InvalidRequest(
                    "after is not a user id: pass the previous page's next".to_owned(),
                ))
            }
            Some(id) => {
                let user = self.store.user_by_id(id).await?.ok_or_else(|| {
                    Error::InvalidRequest("after names no user: pass a user id".to_owned())
                })?;
                Some((user.created_at, user.id))
            }
            None => None,
        };
        let cursor = cursor.as_ref().map(|(at, id)| (*at, id.as_str()));
        // One more than asked for tells whether there is a next page.
        let mut users = self.store.users_page(cursor, i64::from(limit) + 1).await?;
        let more = users.len() > limit as usize;
        users.truncate(limit as usize);
        let next = more.then(|| users.last().map(|u| u.id.clone())).flatten();
        Ok(UsersPage { users, next })
    }

    /// The user with this id; [`Error::UnknownUser`] if none.
    pub async fn user(&self, id: &str) -> Result<UserSummary> {
        if !is_id(id) {
            return Err(Error::UnknownUser);
        }
        let row = self.store.user_by_id(id).await?.ok_or(Error::UnknownUser)?;
        Ok(UserSummary {
            roles: self.store.roles(&row.id).await?,
            id: row.id,
            email: row.email,
            created_at: row.created_at,
            disabled_at: row.disabled_at,
            email_verified_at: row.email_verified_at,
        })
    }

    /// The user with this email (normalised as at signup); [`Error::InvalidEmail`] when it does
    /// not parse, [`Error::UnknownUser`] if no user has it.
    pub async fn user_by_email(&self, email: &str) -> Result<UserSummary> {
        let email = parse_email(email)?;
        let id = self
            .store
            .user_by_email(email.as_str())
            .await?
            .ok_or(Error::UnknownUser)?
            .id;
        self.user(&id).await
    }

    /// Refuses login and revokes every session and access token of the user (gateway
    /// included); `false` when already disabled.
    pub async fn disable(&self, user_id: &str) -> Result<bool> {
        self.user_exists(user_id).await?;
        let changed = self.store.disable_user(user_id, self.at).await?;
        self.audit("admin_user_disabled", user_id, changed, "user disabled");
        Ok(changed)
    }

    /// Lets a disabled user log in again (their old tokens stay revoked); `false` when the user
    /// was not disabled.
    pub async fn enable(&self, user_id: &str) -> Result<bool> {
        self.user_exists(user_id).await?;
        let changed = self.store.enable_user(user_id).await?;
        self.audit("admin_user_enabled", user_id, changed, "user enabled");
        Ok(changed)
    }

    /// Gives the user a role (in the next token issued); `false` when they had it.
    pub async fn grant_role(&self, user_id: &str, role: &str) -> Result<bool> {
        let role = parse_role(role)?;
        self.user_exists(user_id).await?;
        let changed = self.store.grant_role(user_id, role).await?;
        tracing::info!(
            event = "admin_role_granted",
            actor = self.actor.as_str(),
            user_id,
            role,
            changed,
            "role granted by an operator"
        );
        Ok(changed)
    }

    /// Takes a role from the user; `false` when they did not have it. Any stored name can be
    /// taken away (see [`role_to_revoke`]), also one the grant rule refuses.
    pub async fn revoke_role(&self, user_id: &str, role: &str) -> Result<bool> {
        let role = role_to_revoke(role)?;
        self.user_exists(user_id).await?;
        let changed = self.store.revoke_role(user_id, role).await?;
        tracing::info!(
            event = "admin_role_revoked",
            actor = self.actor.as_str(),
            user_id,
            role,
            changed,
            "role revoked by an operator"
        );
        Ok(changed)
    }

    /// Revokes every session and access token of the user (gateway included); they may log in
    /// again.
    pub async fn logout(&self, user_id: &str) -> Result<()> {
        self.user_exists(user_id).await?;
        self.store.revoke_all_sessions(user_id, self.at).await?;
        self.audit(
            "admin_user_logged_out",
            user_id,
            true,
            "every session revoked",
        );
        Ok(())
    }

    /// The user's live sessions, newest first.
    pub async fn sessions(&self, user_id: &str) -> Result<Vec<SessionSummary>> {
        self.user_exists(user_id).await?;
        Ok(self.store.live_sessions(user_id, self.at.now).await?)
    }

    /// Ends one session, at the gateway too; [`Error::UnknownSession`] if there is none with
    /// this id.
    pub async fn end_session(&self, session_id: &str) -> Result<EndedSession> {
        if !is_id(session_id) {
            return Err(Error::UnknownSession);
        }
        let session = self
            .store
            .session(session_id)
            .await?
            .ok_or(Error::UnknownSession)?;
        let ended = self
            .store
            .revoke_session(session_id, self.at, "admin")
            .await?;
        tracing::info!(event = "admin_session_ended", actor = self.actor.as_str(), session_id, user_id = %session.user_id, changed = ended, "session ended by an operator");
        Ok(EndedSession {
            user_id: session.user_id,
            ended,
        })
    }

    /// Clears the user's failed logins and login lock; `false` when there were none.
    pub async fn unlock(&self, user_id: &str) -> Result<bool> {
        let user = self.user(user_id).await?;
        let changed = self.store.clear_login_failures(&user.email).await?;
        self.audit(
            "admin_user_unlocked",
            user_id,
            changed,
            "failed logins cleared",
        );
        Ok(changed)
    }

    /// Clears the failed logins and login lock of an email, whether or not an account has it
    /// (a lock is per email: guesses at an unknown one are counted too).
    pub async fn unlock_email(&self, email: &str) -> Result<bool> {
        let email = parse_email(email)?;
        match self.store.user_by_email(email.as_str()).await? {
            Some(user) => self.unlock(&user.id).await,
            None => {
                let changed = self.store.clear_login_failures(email.as_str()).await?;
                tracing::info!(
                    event = "admin_email_unlocked",
                    actor = self.actor.as_str(),
                    changed,
                    "failed logins of an email without an account cleared"
                );
                Ok(changed)
            }
        }
    }

    /// Marks the user's email verified (confirmed some other way); `false` when it was.
    pub async fn verify_email(&self, user_id: &str) -> Result<bool> {
        self.user_exists(user_id).await?;
        let changed = self.store.mark_email_verified(user_id, self.at.now).await?;
        self.audit(
            "admin_email_verified",
            user_id,
            changed,
            "email marked verified",
        );
        if changed {
            // The event a followed link writes too, as the CLI wrote it before the Admin API: a
            // count of verifications (or an alert on it) keeps seeing the operator's.
            tracing::info!(
                event = "email_verified",
                by = "operator",
                actor = self.actor.as_str(),
                user_id,
                "email verified"
            );
        }
        Ok(changed)
    }

    /// Every key of the ring, as loaded now, with its state at this time.
    pub fn keys(&self, ring: &KeyRing) -> Vec<KeyDetails> {
        let now = self.at.now;
        let policy = ring.policy();
        let snapshot = ring.snapshot();
        let signer = snapshot.signer(now, policy).map(|k| k.stored.kid.clone());
        snapshot
            .keys()
            .iter()
            .map(|key| {
                let k = &key.stored;
                KeyDetails {
                    signing: signer.as_deref() == Some(k.kid.as_str()),
                    state: key.state(now, policy).to_string(),
                    kid: k.kid.clone(),
                    alg: k.algorithm.clone(),
                    created_at: k.created_at,
                    activates_at: k.activates_at,
                    retires_at: k.retires_at,
                    revoked_at: k.revoked_at,
                    kek_id: k.material.kek_id().map(str::to_owned),
                }
            })
            .collect()
    }

    /// Adds a signing key of `alg` (default `AUTH_SIGNING_ALG`): published now, signing after
    /// `AUTH_KEY_PUBLISH_DELAY_SECS`. With [`Hs256::Refuse`], [`Error::UnsupportedAlgorithm`]
    /// for a rotation to HS256 that [`is_downgrade`].
    pub async fn rotate_key(
        &self,
        ring: &KeyRing,
        alg: Option<Algorithm>,
        hs256: Hs256,
    ) -> Result<RotatedKey> {
        let alg = alg.unwrap_or(ring.policy().signing_alg);
        if hs256 == Hs256::Refuse && is_downgrade(ring, alg) {
            return Err(Error::UnsupportedAlgorithm(format!(
                "HS256 is accepted only while AUTH_SIGNING_ALG=HS256 (here {}): gateways that \
                 verify with the public JWKS never see an HS256 key and would refuse every token \
                 it signs; use ES256, EdDSA or RS256 (or the CLI, which warns)",
                ring.policy().signing_alg
            )));
        }
        let (kid, activates_at) = ring.rotate_to(self.at.now, alg).await?;
        tracing::info!(event = "admin_key_rotated", actor = self.actor.as_str(), kid = %kid, alg = %alg, activates_at, "signing key added by an operator");
        Ok(RotatedKey {
            kid,
            alg,
            activates_at,
        })
    }

    /// Withdraws a key at once (compromise): unpublished, its tokens refused at `/validate`; a
    /// new key signs at once if none signs any more (it was the signer; or, on a repeat, an
    /// earlier revocation's replacement failed). Idempotent, also when two calls race
    /// ([`KeyRing::revoke`]). [`Error::UnknownKey`] if no key has this kid (the stored rows
    /// are asked, not the snapshot: a row this replica could not open is still a key).
    pub async fn revoke_key(&self, ring: &KeyRing, kid: &str) -> Result<RevokedKey> {
        let outcome = match ring.revoke(kid, self.at.now).await? {
            Revocation::Unknown => return Err(Error::UnknownKey),
            Revocation::Revoked {
                changed,
                replacement,
            } => RevokedKey {
                revoked: changed,
                replacement,
            },
        };
        tracing::info!(
            event = "admin_key_revoked",
            actor = self.actor.as_str(),
            kid,
            changed = outcome.revoked,
            replacement = outcome.replacement.as_deref(),
            "signing key revoked by an operator"
        );
        Ok(outcome)
    }

    async fn user_exists(&self, user_id: &str) -> Result<()> {
        if !is_id(user_id) {
            return Err(Error::UnknownUser);
        }
        match self.store.user_by_id(user_id).await? {
            Some(_) => Ok(()),
            None => Err(Error::UnknownUser),
        }
    }

    /// The audit event of a change to one user.
    fn audit(&self, event: &'static str, user_id: &str, changed: bool, what: &'static str) {
        tracing::info!(
            event,
            actor = self.actor.as_str(),
            user_id,
            changed,
            "{what} by an operator"
        );
    }
}

/// Whether `id` can name a user or a session. The service makes every one a UUID
/// (`Uuid::new_v4`, hyphenated), so anything else names nothing and is answered without a
/// query: PostgreSQL refuses a NUL byte in text, which would otherwise be a 500. Any form
/// that parses is looked up as given (an id inserted by hand in another case is still found).
fn is_id(id: &str) -> bool {
    uuid::Uuid::try_parse(id).is_ok()
}

/// Whether a new key of `alg` would be an HS256 key on a ring whose `AUTH_SIGNING_ALG` is
/// asymmetric: the gateways of such an installation verify with the public JWKS, where an
/// HS256 key (a shared secret) never appears, so once it signs they refuse every new token.
/// Only an installation still on HS256 (its gateways poll `/internal/keys`) may add one.
pub fn is_downgrade(ring: &KeyRing, alg: Algorithm) -> bool {
    alg == Algorithm::HS256 && ring.policy().signing_alg != Algorithm::HS256
}

/// A key algorithm by its JWS name; [`Error::UnsupportedAlgorithm`] for anything else.
pub fn parse_alg(value: &str) -> Result<Algorithm> {
    value.parse().map_err(|_| {
        Error::UnsupportedAlgorithm("alg must be one of ES256, EdDSA, RS256, HS256".to_owned())
    })
}

fn parse_email(email: &str) -> Result<Email> {
    Email::parse(email).map_err(|e| Error::InvalidEmail(format!("invalid email: {e}")))
}

/// Role names travel in tokens and in a comma-joined header at the gateway: keep them short and
/// free of commas, spaces and quotes.
pub fn parse_role(role: &str) -> Result<&str> {
    let ok = !role.is_empty()
        && role.len() <= 64
        && role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if ok {
        Ok(role)
    } else {
        Err(Error::InvalidRole(
            "a role is 1-64 characters of letters, digits, _ - . :".to_owned(),
        ))
    }
}

/// The longest role name [`role_to_revoke`] takes: the stores' column (MySQL `VARBINARY(255)`).
pub const MAX_STORED_ROLE: usize = 255;

/// A role name to revoke: any name a store can hold (1-255 bytes, no NUL, which PostgreSQL
/// cannot store), not only what [`parse_role`] grants. A role granted before the rule existed,
/// or written by SQL, must stay removable, and removing one is harmless; grant alone enforces
/// the rule.
pub fn role_to_revoke(role: &str) -> Result<&str> {
    if role.is_empty() || role.len() > MAX_STORED_ROLE || role.contains('\0') {
        return Err(Error::InvalidRole(format!(
            "a role to revoke is 1-{MAX_STORED_ROLE} bytes without NUL"
        )));
    }
    Ok(role)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_short_and_free_of_separators() {
        for (role, ok, reason) in [
            ("admin", true, "letters"),
            ("team:billing.read-1_x", true, "every allowed punctuation"),
            (&"a".repeat(64), true, "64 characters"),
            ("", false, "empty"),
            (&"a".repeat(65), false, "65 characters"),
            ("a,b", false, "a comma splits the header"),
            ("a b", false, "a space"),
            ("a\"b", false, "a quote"),
            ("rôle", false, "not ASCII"),
        ] {
            assert_eq!(parse_role(role).is_ok(), ok, "{reason}");
        }
    }

    #[test]
    fn any_storable_role_name_can_be_revoked() {
        for (role, ok, reason) in [
            ("admin", true, "a granted name"),
            ("legacy role,x\"", true, "a name the grant rule refuses"),
            ("rôle", true, "not ASCII"),
            (&"a".repeat(255), true, "255 bytes"),
            ("", false, "empty"),
            (&"a".repeat(256), false, "longer than any store holds"),
            ("a\0b", false, "NUL, which PostgreSQL cannot store"),
        ] {
            assert_eq!(role_to_revoke(role).is_ok(), ok, "{reason}");
        }
    }

    #[test]
    fn only_uuids_are_ids() {
        assert!(is_id("0f8fad5b-d9cb-469f-a165-70867728950e"));
        for id in [
            "",
            "not-a-uuid",
            "\0",
            "0f8fad5b-d9cb-469f-a165-70867728950e\0",
        ] {
            assert!(!is_id(id), "{id:?}");
        }
    }

    #[test]
    fn only_the_ring_algorithms_parse() {
        for alg in ["ES256", "EdDSA", "RS256", "HS256"] {
            assert!(parse_alg(alg).is_ok(), "{alg}");
        }
        for alg in ["none", "es256", "HS512", ""] {
            assert!(
                matches!(parse_alg(alg), Err(Error::UnsupportedAlgorithm(_))),
                "{alg}"
            );
        }
    }
}
