//! The command line: `serve` (the default), `migrate`, `keys …`, `users …`, `outbox …`.
//!
//! Every command reads the same `AUTH_*` configuration; the operator commands work directly on
//! the database, so they also work while no server runs. `users …` (but `identities` and
//! `unlink`) and `keys …` (but `new-kek`) call [`service::admin`], as the Admin API does, and
//! only print what it returns.

use clap::{Parser, Subcommand};

use crate::{
    config::Config,
    keyring::{KeyRing, RingPolicy},
    service::{
        self,
        admin::{self, Actor, Admin, EndedSession, Hs256},
    },
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
    /// Exit 0 when the local server answers `GET /readyz` with 200, else 1: the probe of a
    /// container image without a shell or curl (docker-compose.yml's healthcheck).
    Healthcheck {
        /// The URL to probe; default `/readyz` on AUTH_LISTEN's port at 127.0.0.1 (or [::1]).
        #[arg(long)]
        url: Option<String>,
    },
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
        /// HS256 while AUTH_SIGNING_ALG is asymmetric warns (JWKS gateways never see it); the
        /// Admin API refuses it.
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
    admin::parse_alg(value).map_err(|_| "expected ES256, EdDSA, RS256 or HS256".to_owned())
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// List users with their roles.
    List,
    /// Give a user a role (shows in the next token issued).
    GrantRole { email: String, role: String },
    /// Take a role from a user: any stored name, also one grant-role would refuse.
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
    let command = cli.command.unwrap_or(Command::Serve);
    // Only the server's requests have spans worth exporting.
    let otlp_endpoint = match command {
        Command::Serve => config.otlp_endpoint.as_ref(),
        _ => None,
    };
    let telemetry = telemetry::init(config.log_format, otlp_endpoint)?;
    match command {
        Command::Serve => {
            let served: anyhow::Result<()> = async {
                App::build(config)
                    .await?
                    .run_until_stopped(shutdown_signal())
                    .await
            }
            .await;
            telemetry.shutdown().await;
            served
        }
        Command::Migrate => {
            Store::open(&config.database_url).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Keys(command) => keys(&config, command).await,
        Command::Users(command) => users(&config, command).await,
        Command::Outbox(command) => outbox(&config, command).await,
        Command::Healthcheck { url } => healthcheck(&config, url).await,
    }
}

/// Probes the server's readiness from inside its container.
async fn healthcheck(config: &Config, url: Option<String>) -> anyhow::Result<()> {
    let url = url.unwrap_or_else(|| {
        // The server listens on an unspecified address in a container: probe loopback.
        let ip = match config.listen.ip() {
            ip if !ip.is_unspecified() => ip,
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        };
        format!(
            "http://{}/readyz",
            std::net::SocketAddr::new(ip, config.listen.port())
        )
    });
    let response = reqwest::Client::builder()
        // Within docker-compose.yml's 3 s healthcheck timeout, so the answer is ours.
        .timeout(std::time::Duration::from_secs(2))
        // The probe is of this container's loopback: an HTTP_PROXY in its environment (for the
        // OIDC providers) must not carry it away.
        .no_proxy()
        .build()?
        .get(&url)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{url}: {:#}", anyhow::Error::from(e)))?;
    anyhow::ensure!(
        response.status() == reqwest::StatusCode::OK,
        "{url}: {}",
        response.status()
    );
    Ok(())
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
    let admin = Admin::new(
        &store,
        RevokeAt::new(now, policy.retention_secs),
        Actor::Cli,
    );
    match command {
        KeysCommand::List | KeysCommand::NewKek { .. } => {}
        KeysCommand::Rotate { alg } => {
            // The Admin API refuses this rotation; a shell with database access may mean it.
            let downgrade = alg.is_some_and(|alg| admin::is_downgrade(&ring, alg));
            let key = admin.rotate_key(&ring, alg, Hs256::Allow).await?;
            if downgrade {
                eprintln!(
                    "warning: AUTH_SIGNING_ALG is {}, so the gateways most likely verify with the \
                     public JWKS, where an HS256 key never appears: from {} they refuse every \
                     token it signs. Unless they poll /internal/keys, rotate again now \
                     (`auth-api keys rotate`) to put an asymmetric key after it.",
                    policy.signing_alg,
                    rfc3339(key.activates_at)
                );
            }
            println!(
                "new {} key {} is published now and signs from {}",
                key.alg,
                key.kid,
                rfc3339(key.activates_at)
            );
        }
        KeysCommand::Revoke { kid } => match admin.revoke_key(&ring, &kid).await {
            Ok(outcome) => match (outcome.revoked, outcome.replacement) {
                (false, None) => println!("key {kid} was already revoked"),
                (false, Some(replacement)) => println!(
                    "key {kid} was already revoked, and no key signed: {replacement} signs from now on"
                ),
                (true, Some(replacement)) => {
                    println!("key {kid} revoked; {replacement} signs from now on")
                }
                (true, None) => println!("key {kid} revoked"),
            },
            Err(service::Error::UnknownKey) => anyhow::bail!("no key {kid:?}"),
            Err(e) => return Err(e.into()),
        },
    }
    println!(
        "{:<18} {:<6} {:<9} {:<21} {:<21} {:<20}",
        "KID", "ALG", "STATE", "SIGNS FROM", "SIGNS UNTIL", "KEK"
    );
    for key in admin.keys(&ring) {
        let mark = if key.signing { " *" } else { "" };
        println!(
            "{:<18} {:<6} {:<9} {:<21} {:<21} {:<20}{mark}",
            key.kid,
            key.alg,
            key.state,
            rfc3339(key.activates_at),
            key.retires_at.map_or_else(|| "-".to_owned(), rfc3339),
            key.kek_id.as_deref().unwrap_or("(plaintext)"),
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
    let admin = Admin::new(&store, RevokeAt::new(now, retention), Actor::Cli);
    let said = |changed: bool, yes: &str, no: &str| println!("{}", if changed { yes } else { no });
    match command {
        UsersCommand::List => {
            println!("{:<36} {:<32} {:<9} ROLES", "ID", "EMAIL", "STATUS");
            let mut after = None;
            loop {
                let page = admin.users(after.as_deref(), admin::MAX_PAGE).await?;
                for user in &page.users {
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
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        UsersCommand::GrantRole { email, role } => {
            let user = find_user(&admin, &email).await?;
            let changed = admin.grant_role(&user, &role).await?;
            said(changed, "role granted", "the user already has this role");
        }
        UsersCommand::RevokeRole { email, role } => {
            let user = find_user(&admin, &email).await?;
            let changed = admin.revoke_role(&user, &role).await?;
            said(changed, "role revoked", "the user did not have this role");
        }
        UsersCommand::Disable { email } => {
            let user = find_user(&admin, &email).await?;
            let changed = admin.disable(&user).await?;
            said(
                changed,
                "user disabled; every session revoked",
                "the user was already disabled",
            );
        }
        UsersCommand::Logout { email } => {
            let user = find_user(&admin, &email).await?;
            admin.logout(&user).await?;
            println!("every session and token of the user revoked");
        }
        UsersCommand::Sessions { email } => {
            let user = find_user(&admin, &email).await?;
            println!(
                "{:<36} {:<20} {:<20} EXPIRES",
                "SESSION", "OPENED", "LAST REFRESH"
            );
            for session in admin.sessions(&user).await? {
                println!(
                    "{:<36} {:<20} {:<20} {}",
                    session.id,
                    rfc3339(session.created_at),
                    rfc3339(session.refreshed_at),
                    rfc3339(session.expires_at)
                );
            }
        }
        UsersCommand::EndSession { session_id } => match admin.end_session(&session_id).await {
            Ok(EndedSession { ended: true, .. }) => println!("session ended"),
            Ok(_) | Err(service::Error::UnknownSession) => {
                anyhow::bail!("no live session {session_id:?}")
            }
            Err(e) => return Err(e.into()),
        },
        UsersCommand::Unlock { email } => {
            let changed = admin.unlock_email(&email).await?;
            said(
                changed,
                "failed logins cleared",
                "no failed logins to clear",
            );
        }
        UsersCommand::Enable { email } => {
            let user = find_user(&admin, &email).await?;
            let changed = admin.enable(&user).await?;
            said(changed, "user enabled", "the user was not disabled");
        }
        UsersCommand::VerifyEmail { email } => {
            let user = find_user(&admin, &email).await?;
            let changed = admin.verify_email(&user).await?;
            said(changed, "email verified", "the email was already verified");
        }
        UsersCommand::Identities { email } => {
            let user = find_user(&admin, &email).await?;
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
            let user = find_user(&admin, &email).await?;
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

/// The id of the user with this email; the error names the email (this is the operator's own
/// terminal, not a log).
async fn find_user(admin: &Admin<'_>, email: &str) -> anyhow::Result<String> {
    match admin.user_by_email(email).await {
        Ok(user) => Ok(user.id),
        Err(service::Error::UnknownUser) => anyhow::bail!("no user with email {}", email.trim()),
        Err(e) => Err(e.into()),
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
