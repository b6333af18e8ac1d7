//! The operator's providers: a JSON file named by [`PROVIDERS_FILE_VAR`], parsed once at start.
//!
//! ```json
//! {
//!   "providers": [
//!     { "name": "corp", "kind": "oidc", "issuer": "https://id.corp.example",
//!       "client_id": "auth-service", "client_secret_env": "CORP_OIDC_SECRET" },
//!     { "name": "google", "kind": "google", "client_id": "…", "client_secret_env": "GOOGLE_SECRET",
//!       "allow_email_linking": true },
//!     { "name": "github", "kind": "github", "client_id": "…", "client_secret_env": "GITHUB_SECRET" }
//!   ],
//!   "redirect_allow_list": ["https://app.example/auth/done", "http://127.0.0.1:3000/done"],
//!   "callback_url": "https://api.example/auth/callback",
//!   "flow_ttl_secs": 600
//! }
//! ```
//!
//! `callback_url` is auth-api's `/callback` as the browser reaches it (through the gateway, with
//! its path prefix): the `redirect_uri` sent to every provider, to be registered at each.
//!
//! Unknown members are refused; every error names the field's path
//! (`providers[1].issuer: …`). Secrets come from the file (`client_secret`) or, better, from the
//! environment variable that `client_secret_env` names; they are kept as [`SecretString`].

use std::{collections::BTreeSet, path::Path, time::Duration};

use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use crate::oidc::http::{insecure_reason, is_loopback};
use crate::oidc::{Error, Result};

/// The variable naming the providers file.
pub const PROVIDERS_FILE_VAR: &str = "AUTH_OIDC_PROVIDERS_FILE";
/// Google's issuer, the `google` preset's.
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";
/// `flow_ttl_secs` when absent.
pub const DEFAULT_FLOW_TTL: Duration = Duration::from_secs(600);
const FLOW_TTL_SECS: std::ops::RangeInclusive<u64> = 60..=3600;
const DEFAULT_OIDC_SCOPES: [&str; 3] = ["openid", "email", "profile"];
const DEFAULT_GITHUB_SCOPES: [&str; 2] = ["read:user", "user:email"];

/// The validated providers file.
#[derive(Debug, Clone)]
pub struct Providers {
    providers: Vec<Provider>,
    redirect_allow_list: Vec<Url>,
    callback_url: Url,
    flow_ttl: Duration,
}

/// One provider the operator configured.
#[derive(Debug, Clone)]
pub struct Provider {
    /// `[a-z0-9_-]{1,32}`, unique: the `provider` of `/authorize?provider=` and of identities.
    pub name: String,
    /// Which protocol, and for presets which endpoints.
    pub kind: ProviderKind,
    /// Our client id at the provider.
    pub client_id: String,
    /// Our client secret at the provider (sent with HTTP Basic, RFC 6749 §2.3.1).
    pub client_secret: SecretString,
    /// The scopes asked for; for OIDC kinds they include `openid`.
    pub scopes: Vec<String>,
    /// Whether an unknown identity whose verified email belongs to an existing account may be
    /// linked to it. Default false: linking trusts the provider with that account.
    pub allow_email_linking: bool,
    /// Only accounts of this Google Workspace domain may sign in (the ID token's `hd` claim);
    /// OpenID Connect kinds only.
    pub hosted_domain: Option<String>,
}

/// The protocol of a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderKind {
    /// Any OpenID Provider, through `<issuer>/.well-known/openid-configuration`.
    Oidc {
        /// The issuer exactly as configured (compared byte for byte with `iss`).
        issuer: String,
    },
    /// Google: OIDC with issuer [`GOOGLE_ISSUER`].
    Google,
    /// GitHub: plain OAuth 2.0 with fixed endpoints, no ID token; the user comes from its API.
    Github,
}

impl Provider {
    /// The issuer of an OIDC provider (Google's preset included); `None` for GitHub.
    pub fn issuer(&self) -> Option<&str> {
        match &self.kind {
            ProviderKind::Oidc { issuer } => Some(issuer),
            ProviderKind::Google => Some(GOOGLE_ISSUER),
            ProviderKind::Github => None,
        }
    }

    /// Whether the provider speaks OpenID Connect (and so sends an ID token and needs a nonce).
    pub fn is_oidc(&self) -> bool {
        self.issuer().is_some()
    }
}

impl Providers {
    /// Reads and validates the providers file at `path`; `client_secret_env` variables are read
    /// from the process environment.
    pub fn from_file(path: &Path) -> Result<Self> {
        let json = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::from_json(&json)
    }

    /// Parses and validates a providers document; `client_secret_env` variables are read from
    /// the process environment.
    pub fn from_json(json: &str) -> Result<Self> {
        Self::from_json_with_env(json, &|name| std::env::var(name).ok())
    }

    /// [`Providers::from_json`] with `env` answering for the environment (tests).
    pub fn from_json_with_env(json: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let mut deserializer = serde_json::Deserializer::from_str(json);
        let raw: RawFile = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            // serde_json's message may quote the input (a secret, even): keep its category
            // and position only for type and syntax errors.
            let why = match inner.classify() {
                serde_json::error::Category::Data => inner.to_string(),
                _ => format!(
                    "invalid JSON at line {} column {}",
                    inner.line(),
                    inner.column()
                ),
            };
            if path == "." {
                Error::Config(why)
            } else {
                Error::Config(format!("{path}: {why}"))
            }
        })?;
        deserializer
            .end()
            .map_err(|_| Error::Config("trailing characters after the document".to_owned()))?;
        raw.validate(env)
    }

    /// The provider called `name`.
    pub fn get(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.name == name)
    }

    /// The providers, in the file's order.
    pub fn iter(&self) -> impl Iterator<Item = &Provider> {
        self.providers.iter()
    }

    /// How long a started sign-in may take (`flow_ttl_secs`).
    pub fn flow_ttl(&self) -> Duration {
        self.flow_ttl
    }

    /// Our `/callback` as providers redirect the browser to it: the `redirect_uri` of every
    /// authorization request and code exchange.
    pub fn callback_url(&self) -> &Url {
        &self.callback_url
    }

    /// The allow-listed URLs.
    pub fn redirect_allow_list(&self) -> &[Url] {
        &self.redirect_allow_list
    }

    /// `candidate` parsed, if it may be a `redirect_to`: an absolute URL without credentials or
    /// fragment whose scheme, host, port and path equal an allow-list entry's (after URL
    /// parsing, so `HTTPS://App.example:443/cb` is `https://app.example/cb`); its query is
    /// free. Redirect to the returned URL's serialization, never to `candidate` itself.
    pub fn redirect_target(&self, candidate: &str) -> Option<Url> {
        let url = Url::parse(candidate).ok()?;
        if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        self.redirect_allow_list
            .iter()
            .any(|allowed| {
                allowed.scheme() == url.scheme()
                    && allowed.host_str() == url.host_str()
                    && allowed.port_or_known_default() == url.port_or_known_default()
                    && allowed.path() == url.path()
            })
            .then_some(url)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    providers: Vec<RawProvider>,
    redirect_allow_list: Vec<String>,
    callback_url: String,
    #[serde(default)]
    flow_ttl_secs: Option<u64>,
}

// No `Debug`: it holds the secret as a plain string until validated.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    name: String,
    kind: RawKind,
    #[serde(default)]
    issuer: Option<String>,
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    client_secret_env: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    allow_email_linking: bool,
    #[serde(default)]
    hosted_domain: Option<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawKind {
    Oidc,
    Google,
    Github,
}

impl RawFile {
    fn validate(self, env: &dyn Fn(&str) -> Option<String>) -> Result<Providers> {
        if self.providers.is_empty() {
            return Err(Error::Config("providers: at least one provider".to_owned()));
        }
        let mut names = BTreeSet::new();
        let mut providers = Vec::with_capacity(self.providers.len());
        for (index, raw) in self.providers.into_iter().enumerate() {
            let at = |field: &str, why: &str| {
                Error::Config(format!("providers[{index}].{field}: {why}"))
            };
            let provider = raw.validate(env, &at)?;
            if !names.insert(provider.name.clone()) {
                return Err(at("name", "another provider has this name"));
            }
            providers.push(provider);
        }
        if self.redirect_allow_list.is_empty() {
            return Err(Error::Config(
                "redirect_allow_list: at least one URL".to_owned(),
            ));
        }
        let redirect_allow_list = self
            .redirect_allow_list
            .iter()
            .enumerate()
            .map(|(index, url)| {
                allowed_redirect(url)
                    .map_err(|why| Error::Config(format!("redirect_allow_list[{index}]: {why}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let callback_url = Url::parse(&self.callback_url)
            .map_err(|e| format!("not an absolute URL ({e})"))
            .and_then(|url| match insecure_reason(&url) {
                Some(why) => Err(why.to_owned()),
                None if url.query().is_some() => Err("must not have a query".to_owned()),
                None => Ok(url),
            })
            .map_err(|why| Error::Config(format!("callback_url: {why}")))?;
        let flow_ttl_secs = self.flow_ttl_secs.unwrap_or(DEFAULT_FLOW_TTL.as_secs());
        if !FLOW_TTL_SECS.contains(&flow_ttl_secs) {
            return Err(Error::Config(format!(
                "flow_ttl_secs: must be {} to {} seconds",
                FLOW_TTL_SECS.start(),
                FLOW_TTL_SECS.end()
            )));
        }
        Ok(Providers {
            providers,
            redirect_allow_list,
            callback_url,
            flow_ttl: Duration::from_secs(flow_ttl_secs),
        })
    }
}

impl RawProvider {
    fn validate(
        self,
        env: &dyn Fn(&str) -> Option<String>,
        at: &dyn Fn(&str, &str) -> Error,
    ) -> Result<Provider> {
        let name_ok = (1..=32).contains(&self.name.len())
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(at("name", "must be 1 to 32 of a-z, 0-9, `_` and `-`"));
        }
        let kind = match (self.kind, self.issuer) {
            (RawKind::Oidc, Some(issuer)) => {
                check_issuer(&issuer).map_err(|why| at("issuer", why))?;
                ProviderKind::Oidc { issuer }
            }
            (RawKind::Oidc, None) => return Err(at("issuer", "required for kind `oidc`")),
            (RawKind::Google, None) => ProviderKind::Google,
            (RawKind::Github, None) => ProviderKind::Github,
            (_, Some(_)) => {
                return Err(at(
                    "issuer",
                    "only for kind `oidc` (presets have their own)",
                ))
            }
        };
        if self.client_id.is_empty() || self.client_id.chars().any(char::is_control) {
            return Err(at(
                "client_id",
                "must be non-empty, without control characters",
            ));
        }
        let client_secret = match (self.client_secret, self.client_secret_env) {
            (Some(secret), None) => {
                if secret.is_empty() {
                    return Err(at("client_secret", "must not be empty"));
                }
                SecretString::from(secret)
            }
            (None, Some(var)) if !is_variable_name(&var) => {
                // Not quoted: a secret pasted here by mistake must not reach a log.
                let why =
                    "must be an environment variable's name ([A-Z_][A-Z0-9_]*), not the secret";
                return Err(at("client_secret_env", why));
            }
            (None, Some(var)) => match env(&var) {
                Some(secret) if !secret.is_empty() => SecretString::from(secret),
                _ => {
                    let why = format!("the variable `{var}` is unset or empty");
                    return Err(at("client_secret_env", &why));
                }
            },
            (Some(_), Some(_)) => {
                return Err(at(
                    "client_secret",
                    "give client_secret or client_secret_env, not both",
                ))
            }
            (None, None) => return Err(at("client_secret", "required (or client_secret_env)")),
        };
        let is_oidc = kind != ProviderKind::Github;
        let scopes = match self.scopes {
            Some(scopes) => scopes,
            None if is_oidc => DEFAULT_OIDC_SCOPES.map(str::to_owned).to_vec(),
            None => DEFAULT_GITHUB_SCOPES.map(str::to_owned).to_vec(),
        };
        let mut seen = BTreeSet::new();
        for scope in &scopes {
            // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
            let valid = !scope.is_empty()
                && scope
                    .bytes()
                    .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E));
            if !valid {
                return Err(at(
                    "scopes",
                    "a scope is empty or has a character RFC 6749 §3.3 forbids",
                ));
            }
            if !seen.insert(scope.as_str()) {
                return Err(at("scopes", "a scope is repeated"));
            }
        }
        if is_oidc && !seen.contains("openid") {
            return Err(at(
                "scopes",
                "must include `openid` for an OpenID Connect provider",
            ));
        }
        let hosted_domain = match self.hosted_domain {
            None => None,
            Some(_) if !is_oidc => {
                return Err(at(
                    "hosted_domain",
                    "only for OpenID Connect kinds (`google`, `oidc`)",
                ))
            }
            Some(domain) if is_domain_name(&domain) => Some(domain.to_ascii_lowercase()),
            Some(_) => {
                return Err(at(
                    "hosted_domain",
                    "must be a domain name like `corp.example`",
                ))
            }
        };
        Ok(Provider {
            name: self.name,
            kind,
            client_id: self.client_id,
            client_secret,
            scopes,
            allow_email_linking: self.allow_email_linking,
            hosted_domain,
        })
    }
}

/// Whether `domain` is a DNS name of ASCII labels (`corp.example`): 1 to 63 letters, digits or
/// `-` each, at least two, at most 253 bytes.
fn is_domain_name(domain: &str) -> bool {
    domain.len() <= 253
        && domain.split('.').count() >= 2
        && domain.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Whether `name` looks like an environment variable's name: `[A-Z_][A-Z0-9_]*`, at most 128.
fn is_variable_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// An issuer (OIDC Discovery §3): an https URL (http for loopback hosts) without query or
/// fragment.
fn check_issuer(issuer: &str) -> std::result::Result<(), &'static str> {
    // What every store keeps with an identity (MySQL's column is 2048 bytes).
    if issuer.len() > 2048 {
        return Err("longer than 2048 bytes");
    }
    let url = Url::parse(issuer).map_err(|_| "not an absolute URL")?;
    if let Some(why) = insecure_reason(&url) {
        return Err(why);
    }
    if url.query().is_some() {
        return Err("must not have a query");
    }
    Ok(())
}

/// An allow-list entry: https, http for loopback hosts, or an RFC 8252 §7.1 private-use
/// scheme (reverse domain name, with a `.`) for native apps; no credentials, query or fragment.
fn allowed_redirect(entry: &str) -> std::result::Result<Url, String> {
    let url = Url::parse(entry).map_err(|e| format!("not an absolute URL ({e})"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".to_owned());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment (matching ignores the query)".to_owned());
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(url),
        "http" if is_loopback(url.host()) => Ok(url),
        "http" => Err("must be https (http only for loopback hosts)".to_owned()),
        scheme if scheme.contains('.') => Ok(url),
        _ => Err("must be https, http on a loopback host, or a private-use scheme like `com.example.app:`".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;
    use serde_json::{json, Value};

    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "CORP_SECRET" => Some("from-env-secret".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn document() -> Value {
        json!({
            "providers": [
                { "name": "corp", "kind": "oidc", "issuer": "https://id.corp.example",
                  "client_id": "auth-service", "client_secret_env": "CORP_SECRET" },
                { "name": "google", "kind": "google", "client_id": "g-id",
                  "client_secret": "g-secret", "allow_email_linking": true },
                { "name": "git_hub-2", "kind": "github", "client_id": "gh-id",
                  "client_secret": "gh-secret" }
            ],
            "redirect_allow_list": ["https://app.example/auth/done", "http://127.0.0.1:3000/done"],
            "callback_url": "https://api.example/auth/callback"
        })
    }

    fn parse(document: &Value) -> Result<Providers> {
        Providers::from_json_with_env(&document.to_string(), &env)
    }

    /// The error message for `document` changed by `change`.
    fn refusal(change: impl FnOnce(&mut Value)) -> String {
        let mut document = document();
        change(&mut document);
        match parse(&document) {
            Err(Error::Config(why)) => why,
            Err(other) => panic!("not a config error: {other}"),
            Ok(_) => panic!("accepted {document}"),
        }
    }

    #[test]
    fn valid_document_parses_with_defaults() {
        let providers = parse(&document()).unwrap();
        assert_eq!(providers.flow_ttl(), Duration::from_secs(600));
        let corp = providers.get("corp").unwrap();
        assert_eq!(corp.issuer(), Some("https://id.corp.example"));
        assert_eq!(corp.client_secret.expose_secret(), "from-env-secret");
        assert_eq!(corp.scopes, ["openid", "email", "profile"]);
        assert!(!corp.allow_email_linking);
        let google = providers.get("google").unwrap();
        assert_eq!(google.kind, ProviderKind::Google);
        assert_eq!(google.issuer(), Some(GOOGLE_ISSUER));
        assert!(google.allow_email_linking && google.is_oidc());
        let github = providers.get("git_hub-2").unwrap();
        assert_eq!(github.issuer(), None);
        assert!(!github.is_oidc());
        assert_eq!(github.scopes, ["read:user", "user:email"]);
        assert_eq!(
            providers
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["corp", "google", "git_hub-2"]
        );
        assert!(providers.get("other").is_none());
    }

    #[test]
    fn issuer_is_kept_verbatim() {
        // `Url` would add a trailing slash; `iss` is compared byte for byte with the config.
        let providers = parse(&document()).unwrap();
        assert_eq!(
            providers.get("corp").unwrap().issuer(),
            Some("https://id.corp.example")
        );
    }

    #[test]
    fn debug_never_shows_secrets() {
        let providers = parse(&document()).unwrap();
        let debug = format!("{providers:?}");
        for secret in ["from-env-secret", "g-secret", "gh-secret"] {
            assert!(!debug.contains(secret), "{debug}");
        }
    }

    #[test]
    fn flow_ttl_and_scopes_can_be_set() {
        let mut document = document();
        document["flow_ttl_secs"] = json!(120);
        document["providers"][0]["scopes"] = json!(["openid", "groups"]);
        let providers = parse(&document).unwrap();
        assert_eq!(providers.flow_ttl(), Duration::from_secs(120));
        assert_eq!(providers.get("corp").unwrap().scopes, ["openid", "groups"]);
    }

    #[test]
    fn every_refusal_names_its_field() {
        type Change = fn(&mut Value);
        let cases: Vec<(Change, &str, &str)> = vec![
            (
                |d| d["extra"] = json!(1),
                "extra: unknown field `extra`",
                "unknown top-level member",
            ),
            (
                |d| d["providers"][0]["secret"] = json!("x"),
                "providers[0].secret: unknown field `secret`",
                "unknown provider member",
            ),
            (
                |d| d["providers"] = json!([]),
                "providers: at least one",
                "no provider",
            ),
            (
                |d| {
                    d.as_object_mut().unwrap().remove("providers");
                },
                "missing field `providers`",
                "providers missing",
            ),
            (
                |d| {
                    d.as_object_mut().unwrap().remove("redirect_allow_list");
                },
                "missing field `redirect_allow_list`",
                "allow list missing",
            ),
            (
                |d| {
                    d.as_object_mut().unwrap().remove("callback_url");
                },
                "missing field `callback_url`",
                "callback missing",
            ),
            (
                |d| d["callback_url"] = json!("http://api.example/callback"),
                "callback_url: must be https",
                "plain http callback",
            ),
            (
                |d| d["callback_url"] = json!("https://api.example/callback?x=1"),
                "callback_url: must not have a query",
                "callback with a query",
            ),
            (
                |d| d["redirect_allow_list"] = json!([]),
                "redirect_allow_list: at least one",
                "empty allow list",
            ),
            (
                |d| d["providers"][1]["kind"] = json!("facebook"),
                "providers[1].kind: unknown variant `facebook`",
                "unknown kind",
            ),
            (
                |d| d["providers"][0]["name"] = json!("Corp"),
                "providers[0].name: must be 1 to 32",
                "uppercase name",
            ),
            (
                |d| d["providers"][0]["name"] = json!(""),
                "providers[0].name: must be 1 to 32",
                "empty name",
            ),
            (
                |d| d["providers"][0]["name"] = json!("a".repeat(33)),
                "providers[0].name: must be 1 to 32",
                "long name",
            ),
            (
                |d| d["providers"][0]["name"] = json!("co rp"),
                "providers[0].name: must be 1 to 32",
                "space in name",
            ),
            (
                |d| d["providers"][1]["name"] = json!("corp"),
                "providers[1].name: another provider",
                "duplicate name",
            ),
            (
                |d| d["providers"][0]["name"] = json!(7),
                "providers[0].name: invalid type",
                "name not a string",
            ),
            (
                |d| {
                    d["providers"][0].as_object_mut().unwrap().remove("issuer");
                },
                "providers[0].issuer: required",
                "oidc without issuer",
            ),
            (
                |d| d["providers"][1]["issuer"] = json!("https://evil.example"),
                "providers[1].issuer: only for kind `oidc`",
                "google with issuer",
            ),
            (
                |d| d["providers"][2]["issuer"] = json!("https://evil.example"),
                "providers[2].issuer: only for kind `oidc`",
                "github with issuer",
            ),
            (
                |d| d["providers"][0]["issuer"] = json!("http://id.corp.example"),
                "providers[0].issuer: must be https",
                "http issuer",
            ),
            (
                |d| d["providers"][0]["issuer"] = json!("id.corp.example"),
                "providers[0].issuer: not an absolute URL",
                "relative issuer",
            ),
            (
                |d| d["providers"][0]["issuer"] = json!("https://id.corp.example?x=1"),
                "providers[0].issuer: must not have a query",
                "issuer with query",
            ),
            (
                |d| d["providers"][0]["issuer"] = json!("https://id.corp.example#x"),
                "providers[0].issuer: must not have a fragment",
                "issuer with fragment",
            ),
            (
                |d| d["providers"][0]["issuer"] = json!("https://u:p@id.corp.example"),
                "providers[0].issuer: must not carry credentials",
                "issuer with credentials",
            ),
            (
                |d| d["providers"][0]["client_id"] = json!(""),
                "providers[0].client_id: must be non-empty",
                "empty client id",
            ),
            (
                |d| d["providers"][0]["client_id"] = json!("a\nb"),
                "providers[0].client_id: must be non-empty",
                "control character",
            ),
            (
                |d| d["providers"][1]["client_secret"] = json!(""),
                "providers[1].client_secret: must not be empty",
                "empty secret",
            ),
            (
                |d| d["providers"][1]["client_secret_env"] = json!("CORP_SECRET"),
                "providers[1].client_secret: give client_secret or client_secret_env, not both",
                "both secrets",
            ),
            (
                |d| {
                    d["providers"][1]
                        .as_object_mut()
                        .unwrap()
                        .remove("client_secret");
                },
                "providers[1].client_secret: required",
                "no secret",
            ),
            (
                |d| d["providers"][0]["client_secret_env"] = json!("UNSET_VAR"),
                "providers[0].client_secret_env: the variable `UNSET_VAR` is unset",
                "unset variable",
            ),
            (
                |d| d["providers"][0]["client_secret_env"] = json!("EMPTY"),
                "providers[0].client_secret_env: the variable `EMPTY` is unset or empty",
                "empty variable",
            ),
            (
                |d| d["providers"][0]["client_secret_env"] = json!("s3cr3t-pasted-here"),
                "providers[0].client_secret_env: must be an environment variable's name",
                "secret pasted as a variable name",
            ),
            (
                |d| d["providers"][0]["client_secret_env"] = json!("1VAR"),
                "providers[0].client_secret_env: must be an environment variable's name",
                "leading digit",
            ),
            (
                |d| d["providers"][0]["scopes"] = json!(["email"]),
                "providers[0].scopes: must include `openid`",
                "oidc without openid",
            ),
            (
                |d| d["providers"][1]["scopes"] = json!([]),
                "providers[1].scopes: must include `openid`",
                "google without scopes",
            ),
            (
                |d| d["providers"][0]["scopes"] = json!(["openid", "a b"]),
                "providers[0].scopes: a scope is empty or has a character",
                "space in scope",
            ),
            (
                |d| d["providers"][0]["scopes"] = json!(["openid", ""]),
                "providers[0].scopes: a scope is empty",
                "empty scope",
            ),
            (
                |d| d["providers"][0]["scopes"] = json!(["openid", "a\"b"]),
                "providers[0].scopes: a scope is empty or has a character",
                "quote in scope",
            ),
            (
                |d| d["providers"][0]["scopes"] = json!(["openid", "openid"]),
                "providers[0].scopes: a scope is repeated",
                "repeated scope",
            ),
            (
                |d| d["providers"][2]["hosted_domain"] = json!("corp.example"),
                "providers[2].hosted_domain: only for OpenID Connect kinds",
                "hosted domain on github",
            ),
            (
                |d| d["providers"][1]["hosted_domain"] = json!("corp example"),
                "providers[1].hosted_domain: must be a domain name",
                "hosted domain not a domain",
            ),
            (
                |d| d["providers"][0]["allow_email_linking"] = json!("yes"),
                "providers[0].allow_email_linking: invalid type",
                "linking not a bool",
            ),
            (
                |d| d["flow_ttl_secs"] = json!(59),
                "flow_ttl_secs: must be 60 to 3600",
                "ttl too short",
            ),
            (
                |d| d["flow_ttl_secs"] = json!(3601),
                "flow_ttl_secs: must be 60 to 3600",
                "ttl too long",
            ),
            (
                |d| d["flow_ttl_secs"] = json!(-1),
                "flow_ttl_secs: invalid value",
                "negative ttl",
            ),
            (
                |d| d["redirect_allow_list"][1] = json!("/relative"),
                "redirect_allow_list[1]: not an absolute URL",
                "relative redirect",
            ),
            (
                |d| d["redirect_allow_list"][1] = json!("http://app.example/done"),
                "redirect_allow_list[1]: must be https",
                "http redirect",
            ),
            (
                |d| d["redirect_allow_list"][1] = json!("https://app.example/done?x=1"),
                "redirect_allow_list[1]: must not have a query",
                "redirect with query",
            ),
            (
                |d| d["redirect_allow_list"][1] = json!("https://app.example/done#x"),
                "redirect_allow_list[1]: must not have a query or fragment",
                "redirect with fragment",
            ),
            (
                |d| d["redirect_allow_list"][1] = json!("https://u@app.example/done"),
                "redirect_allow_list[1]: must not carry credentials",
                "redirect with user",
            ),
            (
                |d| d["redirect_allow_list"][1] = json!("javascript:alert(1)"),
                "redirect_allow_list[1]: must be https, http on a loopback host, or a private-use",
                "javascript",
            ),
            (
                |d| d["redirect_allow_list"][1] = json!("data:text/html,x"),
                "redirect_allow_list[1]: must be https",
                "data url",
            ),
        ];
        let mut wrong = Vec::new();
        for (change, expected, reason) in cases {
            let why = refusal(change);
            assert!(!why.contains("s3cr3t"), "{reason}: quotes a secret: {why}");
            if !why.starts_with(expected) {
                wrong.push(format!("{reason}: got `{why}`"));
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn syntax_errors_do_not_quote_the_input() {
        let err =
            Providers::from_json_with_env(r#"{"providers": [{"client_secret": "s3cr3t" x"#, &env)
                .unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        assert!(
            err.to_string().starts_with("AUTH_OIDC_PROVIDERS_FILE: "),
            "{err}"
        );
        let err = Providers::from_json_with_env(&format!("{} {{}}", document()), &env).unwrap_err();
        assert!(err.to_string().contains("trailing"), "{err}");
    }

    #[test]
    fn duplicate_member_is_refused() {
        let json = r#"{"providers": [], "providers": [], "redirect_allow_list": []}"#;
        let err = Providers::from_json_with_env(json, &env).unwrap_err();
        assert!(
            err.to_string().contains("duplicate field `providers`"),
            "{err}"
        );
    }

    #[test]
    fn from_file_reads_and_names_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("providers.json");
        let mut document = document();
        document["providers"][0]["client_secret"] = json!("inline");
        document["providers"][0]
            .as_object_mut()
            .unwrap()
            .remove("client_secret_env");
        std::fs::write(&path, document.to_string()).unwrap();
        assert!(Providers::from_file(&path).unwrap().get("corp").is_some());
        let missing = dir.path().join("missing.json");
        let err = Providers::from_file(&missing).unwrap_err();
        assert!(err.to_string().contains("missing.json"), "{err}");
    }

    #[test]
    fn loopback_http_issuer_is_allowed_for_development() {
        for issuer in [
            "http://127.0.0.1:9000",
            "http://localhost:9000/realms/x",
            "http://[::1]:1",
        ] {
            let mut document = document();
            document["providers"][0]["issuer"] = json!(issuer);
            assert!(parse(&document).is_ok(), "{issuer}");
        }
    }

    #[test]
    fn redirect_target_matches_scheme_host_port_and_path_exactly() {
        let mut document = document();
        document["redirect_allow_list"]
            .as_array_mut()
            .unwrap()
            .push(json!("com.example.app:/oauth/done"));
        let providers = parse(&document).unwrap();
        let accepted = [
            ("https://app.example/auth/done", "exact"),
            (
                "https://app.example/auth/done?next=%2Fhome",
                "query is free",
            ),
            ("HTTPS://APP.example:443/auth/done", "same URL once parsed"),
            ("http://127.0.0.1:3000/done", "loopback entry"),
            ("com.example.app:/oauth/done", "private-use scheme"),
        ];
        for (candidate, reason) in accepted {
            assert!(providers.redirect_target(candidate).is_some(), "{reason}");
        }
        let refused = [
            ("https://app.example/auth/done/", "trailing slash"),
            ("https://app.example/auth/don", "prefix"),
            (
                "https://app.example/auth/done/../done2",
                "other path once normalised",
            ),
            ("https://app.example/auth", "parent path"),
            ("http://app.example/auth/done", "scheme"),
            ("https://app.example:8443/auth/done", "port"),
            ("https://evil.example/auth/done", "host"),
            ("https://app.example.evil.example/auth/done", "host suffix"),
            (
                "https://app.example@evil.example/auth/done",
                "userinfo trick",
            ),
            ("https://user@app.example/auth/done", "credentials"),
            ("https://app.example/auth/done#frag", "fragment"),
            ("http://127.0.0.1:3001/done", "loopback port"),
            ("http://localhost:3000/done", "localhost is not 127.0.0.1"),
            ("//app.example/auth/done", "scheme-relative"),
            ("/auth/done", "relative"),
            ("javascript:alert(1)", "javascript"),
            ("", "empty"),
        ];
        for (candidate, reason) in refused {
            assert!(providers.redirect_target(candidate).is_none(), "{reason}");
        }
    }

    #[test]
    fn redirect_target_returns_the_normalised_url() {
        let providers = parse(&document()).unwrap();
        let url = providers
            .redirect_target("https://app.example\\auth/done")
            .map(|url| url.to_string());
        // WHATWG parsing reads `\` as `/` in http(s) URLs, as browsers do: the URL we redirect
        // to is the parsed one.
        assert_eq!(url.as_deref(), Some("https://app.example/auth/done"));
    }
}
