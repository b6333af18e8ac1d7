//! The service configuration: one typed struct, read once from `AUTH_*` environment variables.
//!
//! Every variable has a documented default (see the README's configuration reference); an invalid
//! value stops the process with an error that names the variable. Tests build a [`Config`] with
//! [`Config::default`] and change its fields instead of touching the environment.

use std::{net::SocketAddr, str::FromStr, time::Duration};

use auth_jwt::Algorithm;
use secrecy::SecretString;

use crate::kek::{KeyEncryptionKeys, KEK_VAR};

/// Everything `auth-api serve` needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// `AUTH_DATABASE_URL`, default `sqlite://auth.db`: `postgres://…` or `sqlite://…`.
    pub database_url: String,
    /// `AUTH_LISTEN`, default `127.0.0.1:8080`: the public API.
    pub listen: SocketAddr,
    /// `AUTH_INTERNAL_LISTEN`, default `127.0.0.1:8081`: key material for the gateway.
    pub internal_listen: SocketAddr,
    /// `AUTH_GRPC_LISTEN`, default `127.0.0.1:50051`: the gRPC API (`auth.v1.AuthService`,
    /// Envoy's `ext_authz` `Authorization`, health and reflection); `off` disables it.
    pub grpc_listen: Option<SocketAddr>,
    /// `AUTH_HEADER_READ_TIMEOUT_SECS`, default 10, at least 1: a connection that has not sent a
    /// whole request head this long after it was opened, or after its previous response, is
    /// closed (a slow or idle client cannot keep it).
    pub header_read_timeout: Duration,
    /// `AUTH_REQUEST_TIMEOUT_SECS`, default 30, at least 1: a request not answered this long
    /// after its head arrived (a body trickling in, a stuck backing service) gets
    /// `408 request_timeout` and its work is dropped.
    pub request_timeout: Duration,
    /// `AUTH_MAX_CONNECTIONS`, default 10000, at least 1: open connections per listener. Past
    /// the cap a listener stops accepting: new connections wait in the kernel's backlog until one
    /// closes.
    pub max_connections: u32,
    /// `AUTH_INTERNAL_TOKEN`: bearer token of the internal listener (at least 32 characters of
    /// RFC 6750's `b64token` alphabet: letters, digits and `-._~+/`, then `=` padding).
    /// Unset: the internal listener is not started.
    pub internal_token: Option<SecretString>,
    /// `AUTH_INTERNAL_TOKEN_PREVIOUS`: while the internal token is rotated, the old one, still
    /// accepted beside `AUTH_INTERNAL_TOKEN` until every gateway presents the new one (the
    /// `internal_token_previous_used` log events stop). Same rules; needs `AUTH_INTERNAL_TOKEN`.
    pub internal_token_previous: Option<SecretString>,
    /// `AUTH_ADMIN_TOKEN`: bearer token of the Admin API (`/admin/v1/…` on the internal
    /// listener); unset, the Admin API is off (404). Same rules as the internal token, never
    /// equal to it: the internal token sits in every gateway's configuration and only reads the
    /// keys and the revocation feed, while this one changes users and keys.
    pub admin_token: Option<SecretString>,
    /// `AUTH_ADMIN_TOKEN_PREVIOUS`: while the admin token is rotated, the old one, still
    /// accepted beside `AUTH_ADMIN_TOKEN` until every operator's tool presents the new one (the
    /// `admin_token_previous_used` log events stop). Same rules; needs `AUTH_ADMIN_TOKEN`.
    pub admin_token_previous: Option<SecretString>,
    /// `AUTH_JWT_ISSUER`, default `http://127.0.0.1:8080`: the `iss` of every access token, and
    /// the base of the discovery documents' URLs. An absolute `http(s)` URL without query or
    /// fragment: the public base URL under which auth-api's routes are reachable (behind the dev
    /// gateway, `http://127.0.0.1:10000/auth`). Compared exactly, so used verbatim.
    pub issuer: String,
    /// `AUTH_JWT_AUDIENCE`, default `api`, comma-separated: the `aud` of every access token.
    pub audiences: Vec<String>,
    /// `AUTH_JWT_CLIENT_ID`, default `auth-service`: the `client_id` claim (RFC 9068).
    pub client_id: String,
    /// `AUTH_ACCESS_TOKEN_TTL_SECS`, default 900 (15 minutes).
    pub access_token_ttl: Duration,
    /// `AUTH_SESSION_TTL_SECS`, default 2592000 (30 days): absolute session lifetime.
    pub session_ttl: Duration,
    /// `AUTH_SESSION_IDLE_TIMEOUT_SECS`, default 604800 (7 days): a refresh token unused for this
    /// long is refused.
    pub session_idle_timeout: Duration,
    /// `AUTH_REFRESH_REUSE_GRACE_SECS`, default 10: how long the immediate predecessor of the
    /// live refresh token still returns the same successor.
    pub refresh_reuse_grace: Duration,
    /// `AUTH_CLOCK_SKEW_SECS`, default 60: leeway on `exp`, `nbf` and `iat` at `/validate`.
    pub clock_skew: Duration,
    /// `AUTH_BCRYPT_COST`, default 12, at least 10 from the environment.
    pub bcrypt_cost: u32,
    /// `AUTH_PASSWORD_PEPPER`: HMAC key of the password pre-hash. Unset: an empty key (no
    /// truncation either way; a pepper adds protection against a stolen database). Changing it
    /// invalidates every stored password.
    pub password_pepper: Option<SecretString>,
    /// `AUTH_HASH_CONCURRENCY`, default the number of cores: bcrypt computations at once.
    pub hash_concurrency: usize,
    /// `AUTH_HASH_QUEUE`, default 32: requests that may wait for a bcrypt slot; more get 503.
    pub hash_queue: usize,
    /// `AUTH_KEY_PUBLISH_DELAY_SECS`, default 300: a rotated-in key is published this long
    /// before it signs, so every gateway has fetched it first. Must exceed the JWKS max-age.
    pub key_publish_delay: Duration,
    /// `AUTH_SIGNING_ALG`, default `ES256` (`EdDSA`, `RS256`, `HS256`): the algorithm of the keys
    /// the ring creates itself (its first key, scheduled rotations, the replacement of a revoked
    /// signer). Keys of other algorithms already in the ring keep verifying and signing until
    /// rotated out.
    pub signing_alg: Algorithm,
    /// `AUTH_KEY_ENCRYPTION_KEYS`: comma-separated `id:base64url(32 bytes)` key-encryption keys;
    /// the first seals the ring's private material, every one opens it. Unset: a key file beside
    /// a SQLite database (`<db>.kek`, created on first start), a per-process key for in-memory
    /// SQLite; PostgreSQL refuses to start.
    pub key_encryption_keys: Option<KeyEncryptionKeys>,
    /// `AUTH_KEY_ROTATION_DAYS`: rotate the signing key when no key was added for this many
    /// days. Unset: only `auth-api keys rotate` rotates.
    pub key_rotation_interval: Option<Duration>,
    /// `AUTH_KEY_REFRESH_SECS`, default 10: how often a replica re-reads the key ring.
    pub key_refresh_interval: Duration,
    /// `AUTH_JWKS_MAX_AGE_SECS`, default 60: `Cache-Control: max-age` of the public JWKS and
    /// the discovery documents. Must be less than `AUTH_KEY_PUBLISH_DELAY_SECS`, so that a
    /// verifier caching the JWKS sees a rotated-in key before it signs.
    pub jwks_max_age: Duration,
    /// `AUTH_REVOCATION_FEED_PAGE`, default and most 10,000: entries per answer of the
    /// gateway's revocation feed. The most keeps a page far below the filter's 4 MiB limit.
    pub revocation_feed_page: usize,
    /// `AUTH_LOG_FORMAT`, default `text`: `text` or `json`.
    pub log_format: LogFormat,
    /// `AUTH_OTLP_ENDPOINT`, default unset (no export): the OTLP/gRPC receiver (an OpenTelemetry
    /// Collector, Jaeger, Tempo; e.g. `http://127.0.0.1:4317`) to export request spans to, as
    /// service `auth-api`.
    pub otlp_endpoint: Option<url::Url>,
    /// `AUTH_OIDC_PROVIDERS_FILE`, default unset (no sign-in through external providers): the
    /// JSON file of [`crate::oidc::providers`], read and checked at start.
    pub oidc_providers_file: Option<std::path::PathBuf>,
    /// `AUTH_LOGIN_FREE_ATTEMPTS`, default 5: consecutive failed logins per email before delays.
    pub login_free_attempts: i64,
    /// `AUTH_LOGIN_MAX_DELAY_SECS`, default 900: the longest delay between login attempts.
    pub login_max_delay: Duration,
    /// `AUTH_IP_LIMIT_PER_MINUTE`, default 60: requests per client address and minute to
    /// `/login`, `/signup`, `/refresh` and `/password` (one bucket), per replica. Never
    /// `/logout`: nobody's guesses may stop anyone ending their own session.
    pub ip_limit_per_minute: u32,
    /// `AUTH_IP_LIMIT_IPV6_PREFIX`, default 64, 32 to 128: IPv6 clients share one bucket per
    /// prefix of this length (a single holder usually gets a whole /64). IPv4 addresses, and
    /// IPv4-mapped IPv6 ones, have a bucket each.
    pub ip_limit_ipv6_prefix: u8,
    /// `AUTH_CLIENT_IP_HEADER`, default `x-envoy-external-address`: where a trusted proxy puts
    /// the client's address. Empty: always the connection's address.
    pub client_ip_header: Option<String>,
    /// `AUTH_TRUSTED_PROXIES`, default `127.0.0.1,::1`: addresses or CIDR ranges (a container
    /// network, a pod range) whose `AUTH_CLIENT_IP_HEADER` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `AUTH_PASSWORD_MIN_LENGTH`, default 15 (NIST SP 800-63B-4 for a password that is the
    /// only factor), 8 to 64: the fewest characters of a new password.
    pub password_min_chars: usize,
    /// `AUTH_PASSWORD_CHANGE_ENDS_OTHER_SESSIONS`, default true: a password change ends every
    /// other session of the user (ASVS 7.4.3), so that whoever knew the old password is out.
    pub password_change_ends_other_sessions: bool,
    /// `AUTH_REDIS_URL`: keep the per-address buckets in Redis, shared by every replica.
    /// Unset: in memory, per replica.
    pub redis_url: Option<SecretString>,
    /// `AUTH_REDIS_PREFIX`, default `auth:ip:`: the prefix of the bucket keys.
    pub redis_prefix: String,
    /// `AUTH_SMTP_URL`, default unset (no email is sent; queued messages wait): the SMTP relay,
    /// as `smtps://[user:password@]host[:465]` (TLS from the first byte) or
    /// `smtp://[user:password@]host[:587]?tls=required` (STARTTLS, refused if the server does
    /// not offer it). Plain `smtp://host:port` is accepted only for a loopback host (a local
    /// relay or a test sink): elsewhere it would send mail and credentials in the clear.
    /// Credentials are percent-encoded in the URL; the URL is a secret (never logged).
    pub smtp_url: Option<SecretString>,
    /// `AUTH_EMAIL_FROM`, required when `AUTH_SMTP_URL` is set: the `From` of every message, a
    /// mailbox such as `Accounts <accounts@example.com>` or `accounts@example.com`.
    pub email_from: Option<lettre::message::Mailbox>,
    /// `AUTH_SMTP_TIMEOUT_SECS`, default 20, at least 1, at most 300: the longest one message may take to
    /// deliver (connection, TLS, every command); a relay slower than that counts as a failed
    /// attempt.
    pub smtp_timeout: Duration,
    /// `AUTH_OUTBOX_POLL_SECS`, default 5, at least 1, at most 3600: how often the sender looks for due
    /// messages when nothing wakes it.
    pub outbox_poll_interval: Duration,
    /// `AUTH_OUTBOX_MAX_ATTEMPTS`, default 12, at least 1: delivery attempts before a message
    /// is given up as `dead` (with the backoff of 30 s doubling to 1 h, about 4.5 hours).
    pub outbox_max_attempts: i64,
    /// `AUTH_EMAIL_VERIFICATION`, `off`, `optional` or `required`; default `optional` when
    /// `AUTH_SMTP_URL` is set, else `off`. See [`EmailVerification`].
    pub email_verification: EmailVerification,
    /// `AUTH_PUBLIC_URL`, default `AUTH_JWT_ISSUER`: where a browser reaches the public routes
    /// (through the gateway, e.g. `https://example.com/auth`); the links in mail and the hosted
    /// pages are under it. An http(s) URL without query, fragment or credentials; kept without
    /// a trailing `/`.
    pub public_url: String,
    /// `AUTH_VERIFY_LINK_TTL_SECS`, default 86400 (a day), 300 to 604800: how long a
    /// verification link works.
    pub verify_link_ttl: Duration,
    /// `AUTH_RESET_LINK_TTL_SECS`, default 3600, 300 to 86400: how long a password-reset link
    /// works (OWASP: short).
    pub reset_link_ttl: Duration,
    /// `AUTH_CORS_ALLOWED_ORIGINS`, default none (no CORS headers, an `OPTIONS` answered 405):
    /// the origins whose pages may call the JSON API from a browser, comma-separated, each
    /// `https://host[:port]` or `http://host:*` (any port). See [`crate::cors`].
    pub cors_allowed_origins: Option<crate::cors::AllowedOrigins>,
}

/// Whether accounts prove their email (`AUTH_EMAIL_VERIFICATION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailVerification {
    /// No verification mail; signing up with a taken email answers `409 email_taken`.
    Off,
    /// Signup mails a verification link and answers alike for a new and a taken email (the
    /// owner of a taken one is told by mail); unverified accounts log in, with
    /// `email_verified: false` in their tokens.
    Optional,
    /// As `Optional`, and an unverified account cannot log in: its right password is answered
    /// as a wrong one (`401 invalid_credentials`), so that logging in after a signup does not
    /// tell whether the signup made the account or met a taken address.
    Required,
}

impl EmailVerification {
    /// Whether signup sends a verification link (and so must not tell a taken email apart).
    pub fn is_on(self) -> bool {
        self != Self::Off
    }
}

impl FromStr for EmailVerification {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Self::Off),
            "optional" => Ok(Self::Optional),
            "required" => Ok(Self::Required),
            _ => Err("expected `off`, `optional` or `required`".to_owned()),
        }
    }
}

/// The lifetimes of tokens and sessions as whole seconds, the unit of every time the service
/// stores and compares (Unix seconds): converted from [`Config`]'s durations once, at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// `access_token_ttl`: an access token's `exp` minus its `iat`.
    pub access_token_secs: i64,
    /// `session_ttl`: a session's absolute lifetime.
    pub session_secs: i64,
    /// `session_idle_timeout`: how long a refresh token may go unused.
    pub session_idle_secs: i64,
    /// `refresh_reuse_grace`: how long the live token's predecessor still answers.
    pub refresh_reuse_grace_secs: i64,
}

impl Lifetimes {
    /// The lifetimes `config` sets.
    pub fn of(config: &Config) -> Self {
        Self {
            access_token_secs: crate::clock::secs(config.access_token_ttl),
            session_secs: crate::clock::secs(config.session_ttl),
            session_idle_secs: crate::clock::secs(config.session_idle_timeout),
            refresh_reuse_grace_secs: crate::clock::secs(config.refresh_reuse_grace),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err("expected `text` or `json`".to_owned()),
        }
    }
}

/// A variable that is set but unusable.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {reason}")]
pub struct ConfigError {
    name: &'static str,
    reason: String,
}

impl Default for Config {
    fn default() -> Self {
        let day = 24 * 60 * 60;
        Self {
            database_url: "sqlite://auth.db".to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            internal_listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            grpc_listen: Some(SocketAddr::from(([127, 0, 0, 1], 50051))),
            internal_token: None,
            internal_token_previous: None,
            admin_token: None,
            admin_token_previous: None,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            issuer: DEFAULT_ISSUER.to_owned(),
            audiences: vec!["api".to_owned()],
            client_id: "auth-service".to_owned(),
            access_token_ttl: Duration::from_secs(15 * 60),
            session_ttl: Duration::from_secs(30 * day),
            session_idle_timeout: Duration::from_secs(7 * day),
            refresh_reuse_grace: Duration::from_secs(10),
            clock_skew: Duration::from_secs(60),
            bcrypt_cost: 12,
            password_pepper: None,
            hash_concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            hash_queue: 32,
            key_publish_delay: Duration::from_secs(300),
            signing_alg: Algorithm::ES256,
            key_encryption_keys: None,
            key_rotation_interval: None,
            key_refresh_interval: Duration::from_secs(10),
            jwks_max_age: Duration::from_secs(60),
            revocation_feed_page: crate::routes::REVOCATION_FEED_PAGE,
            log_format: LogFormat::Text,
            otlp_endpoint: None,
            email_verification: EmailVerification::Off,
            public_url: DEFAULT_ISSUER.to_owned(),
            verify_link_ttl: Duration::from_secs(day),
            reset_link_ttl: Duration::from_secs(60 * 60),
            cors_allowed_origins: None,
            oidc_providers_file: None,
            login_free_attempts: 5,
            login_max_delay: Duration::from_secs(900),
            ip_limit_per_minute: 60,
            ip_limit_ipv6_prefix: 64,
            client_ip_header: Some("x-envoy-external-address".to_owned()),
            trusted_proxies: vec![
                std::net::IpAddr::from([127, 0, 0, 1]).into(),
                std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST).into(),
            ],
            password_min_chars: crate::domain::DEFAULT_MIN_PASSWORD_CHARS,
            password_change_ends_other_sessions: true,
            redis_url: None,
            redis_prefix: "auth:ip:".to_owned(),
            smtp_url: None,
            email_from: None,
            smtp_timeout: Duration::from_secs(20),
            outbox_poll_interval: Duration::from_secs(5),
            outbox_max_attempts: 12,
        }
    }
}

/// `AUTH_JWT_ISSUER` when unset: auth-api alone, on its default listen address.
pub const DEFAULT_ISSUER: &str = "http://127.0.0.1:8080";

/// The shortest internal bearer token accepted: guessing it must be hopeless.
const MIN_INTERNAL_TOKEN_LEN: usize = 32;
/// Shortest `AUTH_PASSWORD_PEPPER`, in bytes.
const MIN_PEPPER_LEN: usize = 32;
/// The longest `AUTH_SMTP_TIMEOUT_SECS`: a claim's lease covers a batch timing out message by
/// message, and a relay that needs minutes per message is down, not slow.
const MAX_SMTP_TIMEOUT_SECS: u64 = 300;
/// The longest `AUTH_OUTBOX_POLL_SECS`: the backoff's longest wait, so a retry is not late by
/// more than it waited.
const MAX_OUTBOX_POLL_SECS: u64 = 3600;

impl Config {
    /// The internal listener's tokens go together: a previous internal token or an admin token
    /// needs the internal token (the listener starts only with it), a previous admin token the
    /// admin token; and no two are equal (an admin token equal to a gateway's would hand every
    /// gateway the Admin API; a previous token equal to the current one would report every call
    /// as an old token's).
    fn check_tokens(&self) -> Result<(), ConfigError> {
        use secrecy::ExposeSecret as _;
        fn exposed(token: &Option<SecretString>) -> Option<&str> {
            token.as_ref().map(|t| t.expose_secret())
        }
        let internal = exposed(&self.internal_token);
        let previous = exposed(&self.internal_token_previous);
        let admin = exposed(&self.admin_token);
        let admin_previous = exposed(&self.admin_token_previous);
        for (name, token, needed, needs) in [
            (
                "AUTH_INTERNAL_TOKEN_PREVIOUS",
                previous,
                internal,
                "AUTH_INTERNAL_TOKEN (the internal listener starts only with it)",
            ),
            (
                "AUTH_ADMIN_TOKEN",
                admin,
                internal,
                "AUTH_INTERNAL_TOKEN (the internal listener starts only with it)",
            ),
            (
                "AUTH_ADMIN_TOKEN_PREVIOUS",
                admin_previous,
                admin,
                "AUTH_ADMIN_TOKEN (it is the token that one replaces)",
            ),
        ] {
            if token.is_some() && needed.is_none() {
                return Err(ConfigError::new(
                    name,
                    format!("is accepted only beside {needs}"),
                ));
            }
        }
        for (name, token, current, current_name) in [
            (
                "AUTH_INTERNAL_TOKEN_PREVIOUS",
                previous,
                internal,
                "AUTH_INTERNAL_TOKEN",
            ),
            (
                "AUTH_ADMIN_TOKEN_PREVIOUS",
                admin_previous,
                admin,
                "AUTH_ADMIN_TOKEN",
            ),
        ] {
            if token.is_some() && token == current {
                return Err(ConfigError::new(
                    name,
                    format!("equals {current_name}: set it to the token being replaced"),
                ));
            }
        }
        for (name, token) in [
            ("AUTH_ADMIN_TOKEN", admin),
            ("AUTH_ADMIN_TOKEN_PREVIOUS", admin_previous),
        ] {
            if token.is_some() && (token == internal || token == previous) {
                return Err(ConfigError::new(
                    name,
                    "must differ from the internal tokens, which every gateway holds",
                ));
            }
        }
        Ok(())
    }

    /// Reads every `AUTH_*` variable over the defaults.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`Config::from_env`], with the variables coming from `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        let d = Self::default();
        let day = 24 * 60 * 60;
        let config = Self {
            database_url: env.string("AUTH_DATABASE_URL")?.unwrap_or(d.database_url),
            listen: env.parsed("AUTH_LISTEN")?.unwrap_or(d.listen),
            internal_listen: env
                .parsed("AUTH_INTERNAL_LISTEN")?
                .unwrap_or(d.internal_listen),
            grpc_listen: match env.string("AUTH_GRPC_LISTEN")? {
                Some(raw) if raw.trim().eq_ignore_ascii_case("off") => None,
                Some(_) => env.parsed("AUTH_GRPC_LISTEN")?,
                None => d.grpc_listen,
            },
            internal_token: env.internal_token("AUTH_INTERNAL_TOKEN")?,
            internal_token_previous: env.internal_token("AUTH_INTERNAL_TOKEN_PREVIOUS")?,
            admin_token: env.internal_token("AUTH_ADMIN_TOKEN")?,
            admin_token_previous: env.internal_token("AUTH_ADMIN_TOKEN_PREVIOUS")?,
            header_read_timeout: env
                .secs("AUTH_HEADER_READ_TIMEOUT_SECS", 1)?
                .unwrap_or(d.header_read_timeout),
            request_timeout: env
                .secs("AUTH_REQUEST_TIMEOUT_SECS", 1)?
                .unwrap_or(d.request_timeout),
            max_connections: match env.parsed_at_least("AUTH_MAX_CONNECTIONS", 1)? {
                Some(n) => u32::try_from(n)
                    .map_err(|_| ConfigError::new("AUTH_MAX_CONNECTIONS", "too large"))?,
                None => d.max_connections,
            },
            issuer: env.issuer()?.unwrap_or(d.issuer),
            audiences: env.list("AUTH_JWT_AUDIENCE")?.unwrap_or(d.audiences),
            client_id: env.string("AUTH_JWT_CLIENT_ID")?.unwrap_or(d.client_id),
            access_token_ttl: env
                .secs("AUTH_ACCESS_TOKEN_TTL_SECS", 1)?
                .unwrap_or(d.access_token_ttl),
            session_ttl: env
                .secs("AUTH_SESSION_TTL_SECS", 1)?
                .unwrap_or(d.session_ttl),
            session_idle_timeout: env
                .secs("AUTH_SESSION_IDLE_TIMEOUT_SECS", 1)?
                .unwrap_or(d.session_idle_timeout),
            refresh_reuse_grace: env
                .secs("AUTH_REFRESH_REUSE_GRACE_SECS", 0)?
                .unwrap_or(d.refresh_reuse_grace),
            clock_skew: env.secs("AUTH_CLOCK_SKEW_SECS", 0)?.unwrap_or(d.clock_skew),
            bcrypt_cost: env.bcrypt_cost()?.unwrap_or(d.bcrypt_cost),
            password_pepper: env.pepper()?,
            hash_concurrency: env
                .parsed_at_least("AUTH_HASH_CONCURRENCY", 1)?
                .unwrap_or(d.hash_concurrency),
            hash_queue: env.parsed("AUTH_HASH_QUEUE")?.unwrap_or(d.hash_queue),
            key_publish_delay: env
                .secs("AUTH_KEY_PUBLISH_DELAY_SECS", 0)?
                .unwrap_or(d.key_publish_delay),
            signing_alg: env.signing_alg()?.unwrap_or(d.signing_alg),
            key_encryption_keys: env.key_encryption_keys()?,
            key_rotation_interval: env
                .parsed_at_least("AUTH_KEY_ROTATION_DAYS", 1)?
                .map(|days| {
                    Duration::from_secs(u64::try_from(days).unwrap_or(u64::MAX).saturating_mul(day))
                }),
            key_refresh_interval: env
                .secs("AUTH_KEY_REFRESH_SECS", 1)?
                .unwrap_or(d.key_refresh_interval),
            jwks_max_age: env
                .secs("AUTH_JWKS_MAX_AGE_SECS", 0)?
                .unwrap_or(d.jwks_max_age),
            revocation_feed_page: match env.parsed_at_least("AUTH_REVOCATION_FEED_PAGE", 1)? {
                Some(n) if n > crate::routes::REVOCATION_FEED_PAGE => {
                    return Err(ConfigError::new(
                        "AUTH_REVOCATION_FEED_PAGE",
                        "must be from 1 to 10000",
                    ))
                }
                Some(n) => n,
                None => d.revocation_feed_page,
            },
            log_format: env.parsed("AUTH_LOG_FORMAT")?.unwrap_or(d.log_format),
            otlp_endpoint: env.otlp_endpoint()?,
            oidc_providers_file: env
                .string(crate::oidc::providers::PROVIDERS_FILE_VAR)?
                .map(Into::into),
            login_free_attempts: env
                .parsed_at_least("AUTH_LOGIN_FREE_ATTEMPTS", 1)?
                .map_or(d.login_free_attempts, |n| {
                    i64::try_from(n).unwrap_or(i64::MAX)
                }),
            login_max_delay: env
                .secs("AUTH_LOGIN_MAX_DELAY_SECS", 1)?
                .unwrap_or(d.login_max_delay),
            ip_limit_per_minute: match env.parsed_at_least("AUTH_IP_LIMIT_PER_MINUTE", 1)? {
                Some(n) => u32::try_from(n)
                    .map_err(|_| ConfigError::new("AUTH_IP_LIMIT_PER_MINUTE", "too large"))?,
                None => d.ip_limit_per_minute,
            },
            ip_limit_ipv6_prefix: match env.parsed::<u8>("AUTH_IP_LIMIT_IPV6_PREFIX")? {
                Some(n) if !(32..=128).contains(&n) => {
                    return Err(ConfigError::new(
                        "AUTH_IP_LIMIT_IPV6_PREFIX",
                        "must be a prefix length from 32 to 128",
                    ))
                }
                Some(n) => n,
                None => d.ip_limit_ipv6_prefix,
            },
            client_ip_header: match (lookup)("AUTH_CLIENT_IP_HEADER") {
                Some(name) if name.trim().is_empty() => None,
                Some(name) => Some(name.trim().to_ascii_lowercase()),
                None => d.client_ip_header,
            },
            trusted_proxies: match env.list("AUTH_TRUSTED_PROXIES")? {
                Some(list) => list
                    .iter()
                    .map(|entry| {
                        entry
                            .parse::<ipnet::IpNet>()
                            .or_else(|_| entry.parse::<std::net::IpAddr>().map(Into::into))
                            .map_err(|_| {
                                ConfigError::new(
                                    "AUTH_TRUSTED_PROXIES",
                                    format!(
                                        "{entry:?} is neither an address nor a CIDR range \
                                         (e.g. 10.0.0.0/8)"
                                    ),
                                )
                            })
                    })
                    .collect::<Result<_, _>>()?,
                None => d.trusted_proxies,
            },
            password_min_chars: match env.parsed_at_least(
                "AUTH_PASSWORD_MIN_LENGTH",
                crate::domain::LOWEST_MIN_PASSWORD_CHARS,
            )? {
                // NIST: at least 64 characters must be accepted, so no minimum above that.
                Some(n) if n > 64 => {
                    return Err(ConfigError::new(
                        "AUTH_PASSWORD_MIN_LENGTH",
                        "must be at most 64",
                    ))
                }
                Some(n) => n,
                None => d.password_min_chars,
            },
            password_change_ends_other_sessions: env
                .parsed("AUTH_PASSWORD_CHANGE_ENDS_OTHER_SESSIONS")?
                .unwrap_or(d.password_change_ends_other_sessions),
            redis_url: env.string("AUTH_REDIS_URL")?.map(SecretString::from),
            redis_prefix: env.string("AUTH_REDIS_PREFIX")?.unwrap_or(d.redis_prefix),
            smtp_url: env.smtp_url()?,
            email_from: env.email_from()?,
            smtp_timeout: env
                .secs_capped("AUTH_SMTP_TIMEOUT_SECS", 1, MAX_SMTP_TIMEOUT_SECS)?
                .unwrap_or(d.smtp_timeout),
            outbox_poll_interval: env
                .secs_capped("AUTH_OUTBOX_POLL_SECS", 1, MAX_OUTBOX_POLL_SECS)?
                .unwrap_or(d.outbox_poll_interval),
            outbox_max_attempts: env
                .parsed_at_least("AUTH_OUTBOX_MAX_ATTEMPTS", 1)?
                .map_or(d.outbox_max_attempts, |n| {
                    i64::try_from(n).unwrap_or(i64::MAX)
                }),
            cors_allowed_origins: env.parsed("AUTH_CORS_ALLOWED_ORIGINS")?,
            // Set below: their defaults depend on other variables.
            email_verification: d.email_verification,
            public_url: d.public_url,
            verify_link_ttl: d.verify_link_ttl,
            reset_link_ttl: d.reset_link_ttl,
        };
        let mut config = config;
        config.check_tokens()?;
        config.email_verification = match env.parsed("AUTH_EMAIL_VERIFICATION")? {
            Some(mode) => mode,
            None if config.smtp_url.is_some() => EmailVerification::Optional,
            None => EmailVerification::Off,
        };
        config.public_url = match env.public_url()? {
            Some(url) => url,
            None => config.issuer.trim_end_matches('/').to_owned(),
        };
        if let Some(ttl) = env.secs_capped(
            "AUTH_VERIFY_LINK_TTL_SECS",
            300,
            7 * d.verify_link_ttl.as_secs(),
        )? {
            config.verify_link_ttl = ttl;
        }
        if let Some(ttl) = env.secs_capped(
            "AUTH_RESET_LINK_TTL_SECS",
            300,
            24 * d.reset_link_ttl.as_secs(),
        )? {
            config.reset_link_ttl = ttl;
        }
        if config.email_verification == EmailVerification::Required && config.smtp_url.is_none() {
            return Err(ConfigError::new(
                "AUTH_EMAIL_VERIFICATION",
                "required needs AUTH_SMTP_URL: without mail nobody who signs up could ever log in",
            ));
        }
        if config.smtp_url.is_some() && config.email_from.is_none() {
            return Err(ConfigError::new(
                "AUTH_EMAIL_FROM",
                "is required when AUTH_SMTP_URL is set: the From of every message, e.g. \
                 accounts@example.com",
            ));
        }
        if config.audiences.is_empty() {
            return Err(ConfigError::new(
                "AUTH_JWT_AUDIENCE",
                "needs at least one audience",
            ));
        }
        if config.jwks_max_age >= config.key_publish_delay {
            return Err(ConfigError::new(
                "AUTH_JWKS_MAX_AGE_SECS",
                format!(
                    "({}) must be less than AUTH_KEY_PUBLISH_DELAY_SECS ({}): a verifier caching \
                     the JWKS must see a rotated-in key before it signs",
                    config.jwks_max_age.as_secs(),
                    config.key_publish_delay.as_secs()
                ),
            ));
        }
        Ok(config)
    }
}

impl ConfigError {
    fn new(name: &'static str, reason: impl Into<String>) -> Self {
        Self {
            name,
            reason: reason.into(),
        }
    }
}

/// Typed reads of single variables; an empty value counts as unset.
struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn string(&self, name: &'static str) -> Result<Option<String>, ConfigError> {
        Ok((self.0)(name).filter(|v| !v.trim().is_empty()))
    }

    /// `AUTH_OTLP_ENDPOINT`: an http URL with a host (no TLS in the exporter), so that a typo fails the start rather
    /// than losing every span quietly.
    fn otlp_endpoint(&self) -> Result<Option<url::Url>, ConfigError> {
        const NAME: &str = "AUTH_OTLP_ENDPOINT";
        let Some(raw) = self.string(NAME)? else {
            return Ok(None);
        };
        let expected = "expected the http:// URL of an OTLP/gRPC receiver, e.g. \
                        http://127.0.0.1:4317 (plaintext gRPC, to a collector beside auth-api: \
                        this build has no TLS for the exporter)";
        let url = url::Url::parse(raw.trim()).map_err(|e| {
            ConfigError::new(NAME, format!("invalid value {raw:?} ({e}): {expected}"))
        })?;
        if url.scheme() != "http" || url.host().is_none() {
            return Err(ConfigError::new(
                NAME,
                format!("invalid value {raw:?}: {expected}"),
            ));
        }
        Ok(Some(url))
    }

    fn parsed<T: FromStr>(&self, name: &'static str) -> Result<Option<T>, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        self.string(name)?
            .map(|raw| {
                raw.trim()
                    .parse::<T>()
                    .map_err(|e| ConfigError::new(name, format!("invalid value {raw:?}: {e}")))
            })
            .transpose()
    }

    fn parsed_at_least(
        &self,
        name: &'static str,
        min: usize,
    ) -> Result<Option<usize>, ConfigError> {
        match self.parsed::<usize>(name)? {
            Some(n) if n < min => Err(ConfigError::new(name, format!("must be at least {min}"))),
            other => Ok(other),
        }
    }

    fn secs(&self, name: &'static str, min: u64) -> Result<Option<Duration>, ConfigError> {
        match self.parsed::<u64>(name)? {
            Some(n) if n < min => Err(ConfigError::new(name, format!("must be at least {min}"))),
            other => Ok(other.map(Duration::from_secs)),
        }
    }

    /// [`Self::secs`] with an upper bound `max` too.
    fn secs_capped(
        &self,
        name: &'static str,
        min: u64,
        max: u64,
    ) -> Result<Option<Duration>, ConfigError> {
        match self.secs(name, min)? {
            Some(d) if d.as_secs() > max => {
                Err(ConfigError::new(name, format!("must be at most {max}")))
            }
            other => Ok(other),
        }
    }

    fn list(&self, name: &'static str) -> Result<Option<Vec<String>>, ConfigError> {
        Ok(self.string(name)?.map(|raw| {
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        }))
    }

    fn bcrypt_cost(&self) -> Result<Option<u32>, ConfigError> {
        const NAME: &str = "AUTH_BCRYPT_COST";
        match self.parsed::<u32>(NAME)? {
            // Below 10 is too cheap for production (OWASP; ASVS appendix C); above 16 one login
            // takes seconds of CPU.
            Some(cost) if !(10..=16).contains(&cost) => {
                Err(ConfigError::new(NAME, "must be between 10 and 16"))
            }
            other => Ok(other),
        }
    }

    /// The pepper is an HMAC key: when set, at least 256 bits (RFC 7518 §3.2, SECURITY.md H 78).
    fn pepper(&self) -> Result<Option<SecretString>, ConfigError> {
        const NAME: &str = "AUTH_PASSWORD_PEPPER";
        match self.string(NAME)? {
            Some(pepper) if pepper.len() < MIN_PEPPER_LEN => Err(ConfigError::new(
                NAME,
                format!("must be at least {MIN_PEPPER_LEN} bytes (an HMAC key of 256 bits)"),
            )),
            other => Ok(other.map(SecretString::from)),
        }
    }

    fn signing_alg(&self) -> Result<Option<Algorithm>, ConfigError> {
        const NAME: &str = "AUTH_SIGNING_ALG";
        self.string(NAME)?
            .map(|raw| {
                raw.trim().parse::<Algorithm>().map_err(|_| {
                    ConfigError::new(
                        NAME,
                        format!("invalid value {raw:?}: expected ES256, EdDSA, RS256 or HS256"),
                    )
                })
            })
            .transpose()
    }

    /// Parsed without quoting the value in errors: it is a secret.
    fn key_encryption_keys(&self) -> Result<Option<KeyEncryptionKeys>, ConfigError> {
        self.string(KEK_VAR)?
            .map(|raw| {
                let raw = zeroize::Zeroizing::new(raw);
                raw.parse().map_err(|why| ConfigError::new(KEK_VAR, why))
            })
            .transpose()
    }

    fn public_url(&self) -> Result<Option<String>, ConfigError> {
        const NAME: &str = "AUTH_PUBLIC_URL";
        self.string(NAME)?
            .map(|raw| {
                let url = raw.trim();
                check_issuer(url).map_err(|why| ConfigError::new(NAME, why))?;
                Ok(url.trim_end_matches('/').to_owned())
            })
            .transpose()
    }

    fn issuer(&self) -> Result<Option<String>, ConfigError> {
        const NAME: &str = "AUTH_JWT_ISSUER";
        self.string(NAME)?
            .map(|raw| {
                let issuer = raw.trim();
                check_issuer(issuer).map_err(|why| ConfigError::new(NAME, why))?;
                Ok(issuer.to_owned())
            })
            .transpose()
    }

    fn internal_token(&self, name: &'static str) -> Result<Option<SecretString>, ConfigError> {
        match self.string(name)? {
            Some(token) if token.len() < MIN_INTERNAL_TOKEN_LEN => Err(ConfigError::new(
                name,
                format!("must be at least {MIN_INTERNAL_TOKEN_LEN} characters"),
            )),
            // Any other character could never be presented as a bearer token: the gateway
            // would start, then answer 503 for want of keys.
            Some(token) if !auth_jwt::is_token68(&token) => Err(ConfigError::new(
                name,
                "may hold only letters, digits and - . _ ~ + / (then = padding), as a bearer \
                 token must",
            )),
            other => Ok(other.map(SecretString::from)),
        }
    }

    /// Checked as far as possible without connecting; errors never quote the URL, which may
    /// hold a password.
    fn smtp_url(&self) -> Result<Option<SecretString>, ConfigError> {
        const NAME: &str = "AUTH_SMTP_URL";
        self.string(NAME)?
            .map(|raw| {
                let raw = zeroize::Zeroizing::new(raw.trim().to_owned());
                check_smtp_url(&raw).map_err(|why| ConfigError::new(NAME, why))?;
                Ok(SecretString::from(raw.as_str()))
            })
            .transpose()
    }

    fn email_from(&self) -> Result<Option<lettre::message::Mailbox>, ConfigError> {
        const NAME: &str = "AUTH_EMAIL_FROM";
        self.string(NAME)?
            .map(|raw| {
                raw.trim().parse().map_err(|e| {
                    ConfigError::new(
                        NAME,
                        format!(
                            "invalid value {raw:?} ({e}): expected a mailbox such as \
                             accounts@example.com or \"Accounts <accounts@example.com>\""
                        ),
                    )
                })
            })
            .transpose()
    }
}

/// Whether `url` is an SMTP relay we send to (see [`Config::smtp_url`]): `smtps://`, or
/// `smtp://` with `tls=required`, or plain `smtp://` to a loopback host; one lettre accepts.
pub fn check_smtp_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| {
        format!("not a URL ({e}): expected smtps://host or smtp://host?tls=required")
    })?;
    let host = parsed.host().ok_or("has no host")?;
    let tls = parsed
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    match (parsed.scheme(), tls.as_deref()) {
        ("smtps", None) | ("smtp", Some("required")) => {}
        ("smtp", None) if is_loopback(&host) => {}
        ("smtp", None) => {
            return Err(
                "plain smtp:// is only for a loopback relay: mail and credentials would cross \
                 the network in the clear; use smtps://host or smtp://host?tls=required"
                    .to_owned(),
            )
        }
        ("smtp", Some("opportunistic")) => {
            return Err(
                "tls=opportunistic falls back to plain text when an attacker strips STARTTLS; \
                 use tls=required"
                    .to_owned(),
            )
        }
        ("smtp" | "smtps", Some(_)) => {
            return Err("tls= must be required (and only with smtp://)".to_owned())
        }
        _ => return Err("must be an smtps:// or smtp:// URL".to_owned()),
    }
    lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url)
        .map(drop)
        .map_err(|e| format!("not usable as an SMTP relay: {e}"))
}

fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        // `smtp` is not a special scheme to the URL standard, so its IPv4 hosts arrive as names.
        url::Host::Domain(name) => {
            name.eq_ignore_ascii_case("localhost")
                || name
                    .parse::<std::net::Ipv4Addr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// Whether `issuer` can be an issuer identifier (RFC 8414 §2, OpenID Connect Discovery §3): an
/// absolute `http` or `https` URL with a host, without query, fragment or credentials.
pub fn check_issuer(issuer: &str) -> Result<(), String> {
    let url = url::Url::parse(issuer).map_err(|e| {
        format!(
            "{issuer:?} is not an absolute URL ({e}): use the public base URL of auth-api, \
             e.g. https://auth.example.com"
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{issuer:?} must be an http or https URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{issuer:?} has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{issuer:?} must not have a query or fragment (RFC 8414 §2)"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{issuer:?} must not carry credentials"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn no_variables_gives_the_defaults() {
        let config = load(&[]).unwrap();
        assert_eq!(config.database_url, "sqlite://auth.db");
        assert_eq!(config.access_token_ttl, Duration::from_secs(900));
        assert_eq!(config.bcrypt_cost, 12);
        assert!(config.internal_token.is_none());
    }

    #[test]
    fn the_grpc_listener_defaults_to_50051_and_can_be_turned_off() {
        assert_eq!(
            load(&[]).unwrap().grpc_listen,
            Some("127.0.0.1:50051".parse().unwrap())
        );
        assert_eq!(
            load(&[("AUTH_GRPC_LISTEN", "0.0.0.0:9090")])
                .unwrap()
                .grpc_listen,
            Some("0.0.0.0:9090".parse().unwrap())
        );
        assert_eq!(
            load(&[("AUTH_GRPC_LISTEN", "off")]).unwrap().grpc_listen,
            None
        );
    }

    #[test]
    fn slow_client_limits_default_and_read_their_variables() {
        let config = load(&[]).unwrap();
        assert_eq!(config.header_read_timeout, Duration::from_secs(10));
        assert_eq!(config.request_timeout, Duration::from_secs(30));
        assert_eq!(config.max_connections, 10_000);
        let config = load(&[
            ("AUTH_HEADER_READ_TIMEOUT_SECS", "3"),
            ("AUTH_REQUEST_TIMEOUT_SECS", "7"),
            ("AUTH_MAX_CONNECTIONS", "250"),
        ])
        .unwrap();
        assert_eq!(config.header_read_timeout, Duration::from_secs(3));
        assert_eq!(config.request_timeout, Duration::from_secs(7));
        assert_eq!(config.max_connections, 250);
    }

    #[test]
    fn invalid_values_name_their_variable() {
        let cases = [
            ("AUTH_ACCESS_TOKEN_TTL_SECS", "ten", "not a number"),
            ("AUTH_ACCESS_TOKEN_TTL_SECS", "0", "below the minimum"),
            ("AUTH_HEADER_READ_TIMEOUT_SECS", "0", "no timeout"),
            ("AUTH_REQUEST_TIMEOUT_SECS", "0", "no request timeout"),
            ("AUTH_MAX_CONNECTIONS", "0", "no connection at all"),
            ("AUTH_MAX_CONNECTIONS", "4294967296", "above u32"),
            ("AUTH_LISTEN", "localhost", "not ip:port"),
            ("AUTH_GRPC_LISTEN", "localhost:50051", "not ip:port"),
            ("AUTH_BCRYPT_COST", "4", "too cheap for production"),
            ("AUTH_INTERNAL_TOKEN", "short", "guessable"),
            (
                "AUTH_INTERNAL_TOKEN",
                "long-enough-but-has-a-star-*-0123456789",
                "not a bearer token",
            ),
            ("AUTH_INTERNAL_TOKEN_PREVIOUS", "short", "guessable"),
            (
                "AUTH_INTERNAL_TOKEN_PREVIOUS",
                "0123456789abcdef0123456789abcdef",
                "a previous token without a current one",
            ),
            ("AUTH_ADMIN_TOKEN", "short", "guessable"),
            (
                "AUTH_ADMIN_TOKEN",
                "0123456789abcdef0123456789abcdef",
                "an admin token without the internal listener",
            ),
            ("AUTH_TRUSTED_PROXIES", "10.0.0.0/33", "no such range"),
            ("AUTH_IP_LIMIT_IPV6_PREFIX", "16", "shorter than /32"),
            ("AUTH_IP_LIMIT_IPV6_PREFIX", "129", "no such prefix"),
            ("AUTH_IP_LIMIT_IPV6_PREFIX", "sixty-four", "not a number"),
            ("AUTH_TRUSTED_PROXIES", "gateway", "not an address"),
            (
                "AUTH_PASSWORD_CHANGE_ENDS_OTHER_SESSIONS",
                "yes",
                "true or false",
            ),
            (
                "AUTH_PASSWORD_PEPPER",
                "pepper-value",
                "shorter than 256 bits",
            ),
            ("AUTH_PASSWORD_MIN_LENGTH", "6", "below NIST's floor"),
            (
                "AUTH_PASSWORD_MIN_LENGTH",
                "65",
                "above what must be accepted",
            ),
            ("AUTH_JWT_AUDIENCE", " , ", "no audience left"),
            ("AUTH_LOG_FORMAT", "xml", "unknown format"),
            ("AUTH_OTLP_ENDPOINT", "127.0.0.1:4317", "no scheme"),
            ("AUTH_OTLP_ENDPOINT", "grpc://collector:4317", "not http(s)"),
            ("AUTH_OTLP_ENDPOINT", "http://", "no host"),
            (
                "AUTH_OTLP_ENDPOINT",
                "https://collector:4317",
                "no TLS in this build",
            ),
            ("AUTH_SMTP_TIMEOUT_SECS", "0", "no time to send"),
            ("AUTH_OUTBOX_POLL_SECS", "0", "a busy loop"),
            (
                "AUTH_SMTP_TIMEOUT_SECS",
                "301",
                "a lease of hours per batch",
            ),
            (
                "AUTH_SMTP_TIMEOUT_SECS",
                "18446744073709551615",
                "overflows the lease",
            ),
            ("AUTH_OUTBOX_POLL_SECS", "3601", "mail waits hours"),
            (
                "AUTH_OUTBOX_POLL_SECS",
                "18446744073709551615",
                "overflows the stuck cutoff",
            ),
            ("AUTH_OUTBOX_MAX_ATTEMPTS", "0", "never tried"),
            ("AUTH_SIGNING_ALG", "none", "no such algorithm"),
            (
                "AUTH_SIGNING_ALG",
                "es256",
                "algorithm names are case-sensitive",
            ),
            ("AUTH_SIGNING_ALG", "HS384", "not supported"),
            ("AUTH_JWT_ISSUER", "auth-service", "not a URL"),
            ("AUTH_JWT_ISSUER", "/auth", "relative"),
            ("AUTH_JWT_ISSUER", "ftp://auth.example.com", "not http(s)"),
            ("AUTH_JWT_ISSUER", "https://auth.example.com/?x=1", "query"),
            (
                "AUTH_JWT_ISSUER",
                "https://auth.example.com/#top",
                "fragment",
            ),
            (
                "AUTH_JWT_ISSUER",
                "https://user:pw@auth.example.com",
                "credentials",
            ),
            (KEK_VAR, "k1", "no key"),
            (KEK_VAR, "k1:c2hvcnQ", "too short"),
            (KEK_VAR, "k1:c2hvcnQ,k1:c2hvcnQ", "twice"),
            (
                "AUTH_JWKS_MAX_AGE_SECS",
                "300",
                "as long as the publish delay",
            ),
        ];
        for (name, value, reason) in cases {
            let err = load(&[(name, value)]).unwrap_err();
            assert!(err.to_string().starts_with(name), "{reason}: {err}");
        }
    }

    #[test]
    fn smtp_timeout_and_outbox_poll_accept_their_caps() {
        let config = load(&[
            ("AUTH_SMTP_TIMEOUT_SECS", "300"),
            ("AUTH_OUTBOX_POLL_SECS", "3600"),
        ])
        .unwrap();
        assert_eq!(config.smtp_timeout, Duration::from_secs(300));
        assert_eq!(config.outbox_poll_interval, Duration::from_secs(3600));
    }

    #[test]
    fn the_internal_listeners_tokens_are_all_different() {
        let token = "an-internal-token-of-forty-characters-xx";
        let other = "another-token-of-forty-characters-xxxxxx";
        for (vars, refused) in [
            (
                [
                    ("AUTH_INTERNAL_TOKEN_PREVIOUS", token),
                    ("AUTH_ADMIN_TOKEN", other),
                ],
                "AUTH_INTERNAL_TOKEN_PREVIOUS",
            ),
            (
                [
                    ("AUTH_INTERNAL_TOKEN_PREVIOUS", other),
                    ("AUTH_ADMIN_TOKEN", token),
                ],
                "AUTH_ADMIN_TOKEN",
            ),
            (
                [
                    ("AUTH_INTERNAL_TOKEN_PREVIOUS", other),
                    ("AUTH_ADMIN_TOKEN", other),
                ],
                "AUTH_ADMIN_TOKEN",
            ),
        ] {
            let error = load(&[("AUTH_INTERNAL_TOKEN", token), vars[0], vars[1]]).unwrap_err();
            assert!(error.to_string().starts_with(refused), "{error}");
        }
        let fine = load(&[("AUTH_INTERNAL_TOKEN", token), ("AUTH_ADMIN_TOKEN", other)]).unwrap();
        assert!(fine.admin_token.is_some());
        let third = "a-third-token-of-forty-characters-xxxxxx";
        for (vars, refused) in [
            (
                [
                    ("AUTH_ADMIN_TOKEN", other),
                    ("AUTH_ADMIN_TOKEN_PREVIOUS", other),
                ],
                "AUTH_ADMIN_TOKEN_PREVIOUS: equals AUTH_ADMIN_TOKEN",
            ),
            (
                [
                    ("AUTH_ADMIN_TOKEN", other),
                    ("AUTH_ADMIN_TOKEN_PREVIOUS", token),
                ],
                "AUTH_ADMIN_TOKEN_PREVIOUS: must differ from the internal tokens",
            ),
            (
                [
                    ("AUTH_INTERNAL_TOKEN_PREVIOUS", third),
                    ("AUTH_ADMIN_TOKEN_PREVIOUS", third),
                ],
                "AUTH_ADMIN_TOKEN_PREVIOUS: is accepted only beside AUTH_ADMIN_TOKEN",
            ),
        ] {
            let error = load(&[("AUTH_INTERNAL_TOKEN", token), vars[0], vars[1]]).unwrap_err();
            assert!(error.to_string().starts_with(refused), "{error}");
        }
        let rotating = load(&[
            ("AUTH_INTERNAL_TOKEN", token),
            ("AUTH_ADMIN_TOKEN", other),
            ("AUTH_ADMIN_TOKEN_PREVIOUS", third),
        ])
        .unwrap();
        assert!(rotating.admin_token_previous.is_some());
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let token = "an-internal-token-of-forty-characters-xx";
        let kek = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
        let config = load(&[
            ("AUTH_INTERNAL_TOKEN", token),
            ("AUTH_PASSWORD_PEPPER", "pepper-value-of-thirty-two-bytes"),
            (KEK_VAR, &format!("kek-1:{kek}")),
        ])
        .unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains(token));
        assert!(!debug.contains("pepper-value"));
        assert!(!debug.contains(kek));
        assert!(debug.contains("kek-1"), "the KEK id is shown: {debug}");
    }

    #[test]
    fn new_defaults_of_issue_8() {
        let config = load(&[]).unwrap();
        assert_eq!(config.signing_alg, Algorithm::ES256);
        assert_eq!(config.issuer, "http://127.0.0.1:8080");
        assert_eq!(config.jwks_max_age, Duration::from_secs(60));
        assert!(config.jwks_max_age < config.key_publish_delay);
        assert!(config.key_encryption_keys.is_none());
        let eddsa = load(&[("AUTH_SIGNING_ALG", "EdDSA")]).unwrap();
        assert_eq!(eddsa.signing_alg, Algorithm::EdDSA);
    }

    #[test]
    fn issuer_is_kept_verbatim_when_valid() {
        for issuer in [
            "http://127.0.0.1:10000/auth",
            "https://auth.example.com",
            "https://auth.example.com/",
            "https://example.com/tenants/a",
        ] {
            assert_eq!(load(&[("AUTH_JWT_ISSUER", issuer)]).unwrap().issuer, issuer);
        }
    }

    #[test]
    fn jwks_max_age_and_publish_delay_are_named_together() {
        let err = load(&[
            ("AUTH_KEY_PUBLISH_DELAY_SECS", "30"),
            ("AUTH_JWKS_MAX_AGE_SECS", "45"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("AUTH_JWKS_MAX_AGE_SECS"), "{err}");
        assert!(err.contains("AUTH_KEY_PUBLISH_DELAY_SECS"), "{err}");
        assert!(load(&[
            ("AUTH_KEY_PUBLISH_DELAY_SECS", "30"),
            ("AUTH_JWKS_MAX_AGE_SECS", "29"),
        ])
        .is_ok());
    }

    #[test]
    fn trusted_proxies_take_addresses_and_ranges() {
        let config = load(&[("AUTH_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.5,fd00::/8")]).unwrap();
        let nets: Vec<String> = config
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(nets, ["10.0.0.0/8", "192.168.1.5/32", "fd00::/8"]);
    }

    #[test]
    fn email_verification_defaults_to_optional_with_mail_and_required_needs_it() {
        assert_eq!(
            load(&[]).unwrap().email_verification,
            EmailVerification::Off
        );
        let mail = [
            ("AUTH_SMTP_URL", "smtps://mail.example.com"),
            ("AUTH_EMAIL_FROM", "accounts@example.com"),
        ];
        assert_eq!(
            load(&mail).unwrap().email_verification,
            EmailVerification::Optional
        );
        let err = load(&[("AUTH_EMAIL_VERIFICATION", "required")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("AUTH_EMAIL_VERIFICATION"), "{err}");
        let required = [mail[0], mail[1], ("AUTH_EMAIL_VERIFICATION", "required")];
        assert_eq!(
            load(&required).unwrap().email_verification,
            EmailVerification::Required
        );
        assert!(load(&[("AUTH_EMAIL_VERIFICATION", "on")]).is_err());
        let public = load(&[("AUTH_PUBLIC_URL", "https://example.com/auth/")]).unwrap();
        assert_eq!(public.public_url, "https://example.com/auth");
        assert!(load(&[("AUTH_PUBLIC_URL", "https://example.com/auth?x=1")]).is_err());
    }

    #[test]
    fn email_is_off_by_default_and_smtp_needs_a_sender() {
        let config = load(&[]).unwrap();
        assert!(config.smtp_url.is_none() && config.email_from.is_none());
        assert_eq!(config.outbox_poll_interval, Duration::from_secs(5));
        assert_eq!(config.smtp_timeout, Duration::from_secs(20));
        assert_eq!(config.outbox_max_attempts, 12);
        let err = load(&[("AUTH_SMTP_URL", "smtps://mail.example.com")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("AUTH_EMAIL_FROM"), "{err}");
        let config = load(&[
            ("AUTH_SMTP_URL", "smtps://mail.example.com"),
            ("AUTH_EMAIL_FROM", "Accounts <accounts@example.com>"),
        ])
        .unwrap();
        let from = config.email_from.unwrap();
        assert_eq!(from.email.to_string(), "accounts@example.com");
        assert_eq!(from.name.as_deref(), Some("Accounts"));
    }

    #[test]
    fn smtp_urls_must_protect_mail_off_the_machine() {
        let from = ("AUTH_EMAIL_FROM", "accounts@example.com");
        for url in [
            "smtps://mail.example.com",
            "smtps://user:p%40ss@mail.example.com:465",
            "smtp://mail.example.com:587?tls=required",
            "smtp://127.0.0.1:2525",
            "smtp://localhost:25",
            "smtp://[::1]:2525",
        ] {
            assert!(load(&[("AUTH_SMTP_URL", url), from]).is_ok(), "{url}");
        }
        let cases = [
            ("smtp://mail.example.com:25", "plain text off the machine"),
            ("smtp://mail.example.com?tls=opportunistic", "downgradable"),
            ("smtps://mail.example.com?tls=none", "unknown tls"),
            ("http://mail.example.com", "not SMTP"),
            ("mail.example.com:25", "not a URL"),
            ("smtps://", "no host"),
        ];
        for (url, reason) in cases {
            let err = load(&[("AUTH_SMTP_URL", url), from]).unwrap_err();
            assert!(
                err.to_string().starts_with("AUTH_SMTP_URL"),
                "{reason}: {err}"
            );
        }
        let err = load(&[
            ("AUTH_SMTP_URL", "smtp://user:hunter2@mail.example.com"),
            from,
        ])
        .unwrap_err()
        .to_string();
        assert!(
            !err.contains("hunter2"),
            "the password is never quoted: {err}"
        );
        let err = load(&[
            ("AUTH_SMTP_URL", "smtps://mail.example.com"),
            ("AUTH_EMAIL_FROM", "not a mailbox"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("AUTH_EMAIL_FROM"), "{err}");
    }

    #[test]
    fn the_smtp_url_does_not_show_in_debug_output() {
        let config = load(&[
            ("AUTH_SMTP_URL", "smtps://user:hunter2@mail.example.com"),
            ("AUTH_EMAIL_FROM", "accounts@example.com"),
        ])
        .unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn audience_list_is_split_on_commas() {
        let config = load(&[("AUTH_JWT_AUDIENCE", "api, billing")]).unwrap();
        assert_eq!(config.audiences, ["api", "billing"]);
    }
}
