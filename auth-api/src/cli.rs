//! The command line: `serve` (the default), `migrate`, `keys …`, `users …`, `outbox …`.
//!
//! Every command reads the same `AUTH_*` configuration; the operator commands work directly on
//! the database, so they also work while no server runs.

use clap::{Parser, Subcommand};

use crate::{
    config::Config,
    domain::Email,
    keyring::{KeyRing, RingPolicy},
    startup::{shutdown_signal, App},
    store::{RevokeAt, Store, UnlinkIdentity},
    telemetry,
};

/// Authentication service: signup, login, refresh tokens, validation and the gateway's keys.
/// Configured with AUTH_* environment variables (see the README).
#[derive(Debug, Parser)]
#[command(name = "auth-api", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP service (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Inspect and rotate the signing key ring.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage users, their roles, sessions and external identities.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Inspect the email outbox.
    #[command(subcommand)]
    Outbox(OutboxCommand),
}

#[derive(Debug, Subcommand)]
enum OutboxCommand {
    /// List queued, sent and dead messages, newest first (never their bodies): id, kind,
    /// recipient, status, attempts, next attempt, last error.
    List {
        /// Only what needs an operator: dead messages, and pending ones that have failed or
        /// have waited past their due time for more than AUTH_OUTBOX_POLL_SECS plus a minute.
        #[arg(long)]
        stuck: bool,
        /// At most this many rows.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// List every key with its algorithm, state, schedule and key-encryption key.
    List,
    /// Add a new signing key: published now, signing after AUTH_KEY_PUBLISH_DELAY_SECS.
    Rotate {
        /// The new key's algorithm (ES256, EdDSA, RS256 or HS256); default AUTH_SIGNING_ALG.
        #[arg(long, value_parser = parse_alg)]
        alg: Option<auth_jwt::Algorithm>,
    },
    /// Withdraw a key at once (compromise); a new key signs at once if it was the signer.
    Revoke {
        /// The key's id as `keys list` shows it. Key ids are base64url and may begin with `-`,
        /// so no value here is read as an option.
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
    /// Print a new key-encryption key (`id:base64url`) for AUTH_KEY_ENCRYPTION_KEYS; touches
    /// no database.
    NewKek {
        /// Its id (letters, digits, `.`, `_`, `-`); default `kek-` and today's date.
        #[arg(long)]
        id: Option<String>,
    },
}

fn parse_alg(value: &str) -> Result<auth_jwt::Algorithm, String> {
    value
        .parse()
        .map_err(|_| "expected ES256, EdDSA, RS256 or HS256".to_owned())
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// List users with their roles.
    List,
    /// Give a user a role (shows in the next token issued).
    GrantRole { email: String, role: String },
    /// Take a role from a user.
    RevokeRole { email: String, role: String },
    /// Disable a user: login refused, every session and token revoked (gateway included).
    Disable { email: String },
    /// Log a user out everywhere: every session and token revoked (gateway included).
    Logout { email: String },
    /// List a user's live sessions (id, opened, last refreshed, absolute end).
    Sessions { email: String },
    /// End one session by its id (from `users sessions`), at the gateway too.
    EndSession { session_id: String },
    /// Clear the failed-login count and lock of an email (also after the 100-failure lock).
    Unlock { email: String },
    /// Enable a disabled user.
    Enable { email: String },
    /// Mark a user's email verified, once the address was confirmed some other way: accounts
    /// made before email verification existed are unverified, and with
    /// `AUTH_EMAIL_VERIFICATION=required` cannot log in until verified (or use `/verify/resend`).
    VerifyEmail { email: String },
    /// List a user's identities at external providers (social login): provider, subject, the
    /// email the provider last asserted and whether verified, linked and last used.
    Identities { email: String },
    /// Unlink a user's identity at a provider; refused while it is the user's last way to sign
    /// in (no password and no other identity). Sessions already open stay open.
    Unlink {
        email: String,
        /// The provider's name as `users identities` shows it.
        provider: String,
        /// Which of the user's identities at that provider, when there are several. Subjects are
        /// the provider's ids and may begin with `-`, so no value here is read as an option.
        #[arg(long, allow_hyphen_values = true)]
        subject: Option<String>,
    },
}

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    telemetry::init(config.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            App::build(config)
                .await?
                .run_until_stopped(shutdown_signal())
                .await
        }
        Command::Migrate => {
            Store::open(&config.database_url).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Keys(command) => keys(&config, command).await,
        Command::Users(command) => users(&config, command).await,
        Command::Outbox(command) => outbox(&config, command).await,
    }
}

async fn keys(config: &Config, command: KeysCommand) -> anyhow::Result<()> {
    let now = crate::clock::Clock::default().now();
    if let KeysCommand::NewKek { id } = &command {
        use secrecy::ExposeSecret as _;
        let id = id.clone().unwrap_or_else(|| {
            format!("kek-{}", rfc3339(now).chars().take(10).collect::<String>())
        });
        let (_, text) = crate::kek::KeyEncryptionKeys::generate(&id)?;
        println!("{}", text.expose_secret());
        return Ok(());
    }
    let keks = crate::kek::resolve(config)?;
    let store = Store::open(&config.database_url).await?;
    let policy = RingPolicy::from_config(config);
    let ring = KeyRing::open(store.clone(), policy, keks, now).await?;
    // The sessions' rotation keys move to the current KEK with the signing keys (a KEK rotation).
    let sessions = crate::service::sessions::reseal_rotation_keys(&store, ring.keks()).await?;
    match command {
        KeysCommand::List | KeysCommand::NewKek { .. } => {}
        KeysCommand::Rotate { alg } => {
            let alg = alg.unwrap_or(policy.signing_alg);
            let (kid, activates_at) = ring.rotate_to(now, alg).await?;
            println!(
                "new {alg} key {kid} is published now and signs from {}",
                rfc3339(activates_at)
            );
        }
        KeysCommand::Revoke { kid } => match ring.revoke(&kid, now).await? {
            Some(replacement) => println!("key {kid} revoked; {replacement} signs from now on"),
            None => println!("key {kid} revoked"),
        },
    }
    let snapshot = ring.snapshot();
    let signer = snapshot.signer(now, &policy).map(|k| k.stored.kid.clone());
    println!(
        "{:<18} {:<6} {:<9} {:<21} {:<21} {:<20}",
        "KID", "ALG", "STATE", "SIGNS FROM", "SIGNS UNTIL", "KEK"
    );
    for key in snapshot.keys() {
        let k = &key.stored;
        let mark = if signer.as_deref() == Some(k.kid.as_str()) {
            " *"
        } else {
            ""
        };
        println!(
            "{:<18} {:<6} {:<9} {:<21} {:<21} {:<20}{mark}",
            k.kid,
            k.algorithm,
            key.state(now, &policy).to_string(),
            rfc3339(k.activates_at),
            k.retires_at.map_or_else(|| "-".to_owned(), rfc3339),
            k.material.kek_id().unwrap_or("(plaintext)"),
        );
    }
    if sessions.resealed > 0 {
        println!(
            "{} sessions' rotation keys re-sealed under {}",
            sessions.resealed,
            ring.keks().current_id()
        );
    }
    if sessions.unopenable > 0 {
        println!(
            "{} sessions' rotation keys do not open under the configured KEKs (they name {}): \
             those sessions cannot refresh",
            sessions.unopenable,
            sessions
                .unopenable_keks
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    Ok(())
}

async fn users(config: &Config, command: UsersCommand) -> anyhow::Result<()> {
    let store = Store::open(&config.database_url).await?;
    let now = crate::clock::Clock::default().now();
    // The server's token lifetime may differ from what this shell's environment says: publish
    // CLI revocations for at least a day, longer than any access token should live.
    let retention = RingPolicy::from_config(config)
        .retention_secs
        .max(24 * 3600);
    let revoke_at = RevokeAt::new(now, retention);
    match command {
        UsersCommand::List => {
            println!("{:<36} {:<32} {:<9} ROLES", "ID", "EMAIL", "STATUS");
            for user in store.list_users().await? {
                let status = if user.disabled_at.is_some() {
                    "disabled"
                } else {
                    "active"
                };
                println!(
                    "{:<36} {:<32} {:<9} {}",
                    user.id,
                    user.email,
                    status,
                    user.roles.join(",")
                );
            }
        }
        UsersCommand::GrantRole { email, role } => {
            let user = find_user(&store, &email).await?;
            let role = parse_role(&role)?;
            let changed = store.grant_role(&user, &role).await?;
            println!(
                "{}",
                if changed {
                    "role granted"
                } else {
                    "the user already has this role"
                }
            );
        }
        UsersCommand::RevokeRole { email, role } => {
            let user = find_user(&store, &email).await?;
            let changed = store.revoke_role(&user, &role).await?;
            println!(
                "{}",
                if changed {
                    "role revoked"
                } else {
                    "the user did not have this role"
                }
            );
        }
        UsersCommand::Disable { email } => {
            let user = find_user(&store, &email).await?;
            let changed = store.disable_user(&user, revoke_at).await?;
            tracing::info!(event = "user_disabled", user_id = %user, "user disabled");
            println!(
                "{}",
                if changed {
                    "user disabled; every session revoked"
                } else {
                    "the user was already disabled"
                }
            );
        }
        UsersCommand::Logout { email } => {
            let user = find_user(&store, &email).await?;
            store.revoke_all_sessions(&user, revoke_at).await?;
            tracing::info!(event = "user_logged_out", user_id = %user, "every session revoked");
            println!("every session and token of the user revoked");
        }
        UsersCommand::Sessions { email } => {
            let user = find_user(&store, &email).await?;
            println!(
                "{:<36} {:<20} {:<20} EXPIRES",
                "SESSION", "OPENED", "LAST REFRESH"
            );
            for session in store.live_sessions(&user, now).await? {
                println!(
                    "{:<36} {:<20} {:<20} {}",
                    session.id,
                    rfc3339(session.created_at),
                    rfc3339(session.refreshed_at),
                    rfc3339(session.expires_at)
                );
            }
        }
        UsersCommand::EndSession { session_id } => {
            let ended = store
                .revoke_session(&session_id, revoke_at, "admin")
                .await?;
            if !ended {
                anyhow::bail!("no live session {session_id:?}");
            }
            tracing::info!(event = "session_ended", session_id = %session_id, "session ended by an operator");
            println!("session ended");
        }
        UsersCommand::Unlock { email } => {
            let email = Email::parse(&email).map_err(|e| anyhow::anyhow!("invalid email: {e}"))?;
            let cleared = store.clear_login_failures(email.as_str()).await?;
            println!(
                "{}",
                if cleared {
                    "failed logins cleared"
                } else {
                    "no failed logins to clear"
                }
            );
        }
        UsersCommand::Enable { email } => {
            let user = find_user(&store, &email).await?;
            let changed = store.enable_user(&user).await?;
            println!(
                "{}",
                if changed {
                    "user enabled"
                } else {
                    "the user was not disabled"
                }
            );
        }
        UsersCommand::VerifyEmail { email } => {
            let user = find_user(&store, &email).await?;
            let changed = store.mark_email_verified(&user, now).await?;
            tracing::info!(event = "email_verified", user_id = %user, by = "operator", "email marked verified");
            println!(
                "{}",
                if changed {
                    "email verified"
                } else {
                    "the email was already verified"
                }
            );
        }
        UsersCommand::Identities { email } => {
            let user = find_user(&store, &email).await?;
            println!(
                "{:<12} {:<24} {:<32} {:<8} {:<20} LAST USED",
                "PROVIDER", "SUBJECT", "EMAIL", "VERIFIED", "LINKED"
            );
            for identity in store.identities_of(&user).await? {
                println!(
                    "{:<12} {:<24} {:<32} {:<8} {:<20} {}",
                    identity.provider,
                    printable(&identity.subject),
                    identity
                        .email
                        .as_deref()
                        .map_or_else(|| "-".to_owned(), printable),
                    if identity.email_verified { "yes" } else { "no" },
                    rfc3339(identity.created_at),
                    rfc3339(identity.last_used_at)
                );
            }
        }
        UsersCommand::Unlink {
            email,
            provider,
            subject,
        } => {
            let user = find_user(&store, &email).await?;
            let subject = identity_to_unlink(&store, &user, &provider, subject).await?;
            match store.delete_identity(&provider, &subject, &user).await? {
                UnlinkIdentity::Unlinked => {
                    tracing::info!(event = "identity_unlinked", user_id = %user, provider = %provider, "identity unlinked by an operator");
                    println!("identity at {provider} unlinked");
                }
                // Another unlink may have removed it since it was listed.
                UnlinkIdentity::NotFound => {
                    anyhow::bail!("the user has no identity {subject:?} at {provider}")
                }
                UnlinkIdentity::LastWayIn => anyhow::bail!(
                    "refused: the identity at {provider} is the user's last way to sign in \
                     (no password and no other identity); link another identity first, or \
                     disable the user instead"
                ),
            }
        }
    }
    Ok(())
}

async fn outbox(config: &Config, command: OutboxCommand) -> anyhow::Result<()> {
    let store = Store::open(&config.database_url).await?;
    let now = crate::clock::Clock::default().now();
    match command {
        OutboxCommand::List { stuck, limit } => {
            // A pending message due this long ago should have been claimed by a running sender.
            let stuck_since = now
                .saturating_sub(crate::clock::secs(config.outbox_poll_interval))
                .saturating_sub(STUCK_GRACE_SECS);
            println!(
                "{:<36} {:<16} {:<32} {:<8} {:>8} {:<20} LAST ERROR",
                "ID", "KIND", "RECIPIENT", "STATUS", "ATTEMPTS", "NEXT ATTEMPT"
            );
            for entry in store
                .list_outbox(stuck, stuck_since, i64::from(limit))
                .await?
            {
                let next = match entry.status.as_str() {
                    "pending" => rfc3339(entry.next_attempt_at),
                    "sent" => entry
                        .sent_at
                        .map_or_else(|| "-".to_owned(), |at| format!("sent {}", rfc3339(at))),
                    _ => "-".to_owned(),
                };
                println!(
                    "{:<36} {:<16} {:<32} {:<8} {:>8} {:<20} {}",
                    entry.id,
                    printable(&entry.kind),
                    printable(&entry.recipient),
                    entry.status,
                    entry.attempts,
                    next,
                    entry
                        .last_error
                        .as_deref()
                        .map_or_else(|| "-".to_owned(), printable)
                );
            }
        }
    }
    Ok(())
}

/// How long past its due time a pending message counts as stuck (beyond one poll interval).
const STUCK_GRACE_SECS: i64 = 60;

/// The subject of `user`'s one identity at `provider`, or `subject` when it is one of them. An
/// error names the subjects to choose from when there are several.
async fn identity_to_unlink(
    store: &Store,
    user: &str,
    provider: &str,
    subject: Option<String>,
) -> anyhow::Result<String> {
    let subjects: Vec<String> = store
        .identities_of(user)
        .await?
        .into_iter()
        .filter(|identity| identity.provider == provider)
        .map(|identity| identity.subject)
        .collect();
    match (subject, subjects.as_slice()) {
        (_, []) => anyhow::bail!("the user has no identity at {provider}"),
        (Some(wanted), _) if subjects.contains(&wanted) => Ok(wanted),
        (Some(wanted), _) => {
            anyhow::bail!("the user has no identity {wanted:?} at {provider}")
        }
        (None, [only]) => Ok(only.clone()),
        (None, several) => anyhow::bail!(
            "the user has {} identities at {provider} ({}): name one with --subject",
            several.len(),
            several
                .iter()
                .map(|subject| printable(subject))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `text` with control characters and the invisible formatting ones escaped (`\u{1b}`,
/// `\u{202e}`): subjects and emails are what a provider asserted, and must neither drive the
/// operator's terminal nor reorder or hide what it shows (bidirectional overrides and
/// isolates, zero-width characters, the byte-order mark).
fn printable(text: &str) -> String {
    let invisible = |c: char| {
        matches!(c, '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}' | '\u{feff}')
    };
    text.chars()
        .map(|c| {
            if c.is_control() || invisible(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

async fn find_user(store: &Store, email: &str) -> anyhow::Result<String> {
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("invalid email: {e}"))?;
    let user = store.user_by_email(email.as_str()).await?;
    user.map(|u| u.id)
        .ok_or_else(|| anyhow::anyhow!("no user with email {}", email.as_str()))
}

/// Role names travel in tokens and in a comma-joined header at the gateway: keep them short and
/// free of commas, spaces and quotes.
fn parse_role(role: &str) -> anyhow::Result<String> {
    let ok = !role.is_empty()
        && role.len() <= 64
        && role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if ok {
        Ok(role.to_owned())
    } else {
        anyhow::bail!("invalid role {role:?}: use 1-64 characters of letters, digits, _ - . :")
    }
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_control_and_invisible_characters_only() {
        assert_eq!(
            printable("ada\u{1b}[2J@idp.example"),
            "ada\\u{1b}[2J@idp.example"
        );
        assert_eq!(printable("sub\n-1\t"), "sub\\u{a}-1\\u{9}");
        assert_eq!(printable("élan-😀@例え.jp"), "élan-😀@例え.jp");
        assert_eq!(
            printable("gpj.\u{202e}exe@x\u{200b}"),
            "gpj.\\u{202e}exe@x\\u{200b}"
        );
    }
}
