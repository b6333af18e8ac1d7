//! The plugin configuration: the JSON that Envoy passes as `plugin_config`, parsed and validated
//! once (in `on_configure`) into a [`FilterConfig`]. Serde reads the JSON into raw structs that
//! refuse unknown members, then [`FilterConfig::parse`] applies the defaults and the checks no
//! type expresses. Every error names the path of the field it is about, e.g.
//! `rules[2].match: expected prefix or path`. This module does not fetch keys or look at
//! requests; it only decides what a valid configuration is.

use std::fmt;
use std::marker::PhantomData;

use auth_jwt::{
    is_token68, Algorithm, ErrorKind, KeySet, Validation, ACCESS_TOKEN_REQUIRED_CLAIMS,
    MAX_CLOCK_SKEW_SECS,
};
use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, Error as _, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::keys::{self, Jwks};
use crate::policy;

/// A configuration error: the path of the field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the problem is, e.g. `rules[2].match`; empty for the document itself.
    pub field: String,
    /// What is wrong, lowercase, without a trailing period.
    pub message: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The validated filter configuration. Built only by [`FilterConfig::parse`].
#[derive(Debug)]
pub struct FilterConfig {
    /// Required `iss`, compared byte for byte.
    pub(crate) issuer: String,
    /// Accepted `aud` values; a token must carry at least one. Required, non-empty.
    pub(crate) audiences: Vec<String>,
    /// Tolerated clock skew on `exp`, `nbf` and `iat`, in seconds. Default 60.
    pub(crate) clock_skew_seconds: u64,
    /// Headers a token is read from, in order. Default `authorization` with prefix `Bearer `.
    pub(crate) from_headers: Vec<FromHeader>,
    /// Cookies a token is read from, after the headers. Default none.
    pub(crate) from_cookies: Vec<String>,
    /// Whether the token is forwarded upstream (`true`) or stripped after verification. Default false.
    pub(crate) forward: bool,
    /// Claims copied into upstream request headers. Default none.
    pub(crate) claim_to_headers: Vec<ClaimToHeader>,
    /// The claim holding the user's roles (an array of strings, or one string). Default `roles`.
    pub(crate) roles_claim: String,
    /// Claims a token must carry besides `exp`, `iss` and `aud`. Default
    /// [`ACCESS_TOKEN_REQUIRED_CLAIMS`]: `sub`, `iat`, `jti`, `sid`, `client_id`, the set
    /// auth-api's `/validate` requires.
    pub(crate) required_claims: Vec<String>,
    /// The JWS algorithms accepted in a token's `alg`, in [`Algorithm::ALL`]'s order; any other
    /// is refused before any cryptography, and keys of other algorithms are ignored. Default
    /// ES256, EdDSA and RS256, plus HS256 when the keys come from `local_jwks` or from a
    /// `remote_jwks` with a `bearer_token`: a secret from a document fetched without
    /// credentials is never trusted.
    pub(crate) algorithms: Vec<Algorithm>,
    /// Where the verification keys come from.
    pub(crate) key_source: KeySource,
    /// Where the revocation feed is polled from (`remote_revocations`). Default none: no token
    /// is refused as revoked.
    pub(crate) remote_revocations: Option<RemoteRevocations>,
    /// Route rules, first match wins; no match is denied (403).
    pub(crate) rules: Vec<Rule>,
    /// Let CORS preflights (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) through
    /// without a token, on routes that matched a rule. Default false, as in `jwt_authn`: a
    /// filter that lets requests through unchecked does so only when asked.
    pub(crate) bypass_cors_preflight: bool,
    /// The `realm` of `WWW-Authenticate` answers. Default `auth-service`.
    pub(crate) realm: String,
    /// Capacity of the per-worker verified-token cache; 0 disables it. Default 1024.
    pub(crate) cache_entries: usize,
}

/// One header a token may come in, e.g. `authorization` with prefix `Bearer `.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FromHeader {
    /// Header name, lowercase.
    pub name: String,
    /// Text before the token, compared case-insensitively. Default empty (the whole value).
    pub value_prefix: String,
}

/// One claim copied into an upstream request header; arrays are joined with `,`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClaimToHeader {
    /// The top-level claim name, e.g. `sub`.
    pub claim_name: String,
    /// The header name, lowercase token characters, e.g. `x-user-id`.
    pub header_name: String,
}

/// Where verification keys come from: exactly one of `remote_jwks` or `local_jwks`.
#[derive(Debug)]
pub(crate) enum KeySource {
    /// Polled from an Envoy cluster by the root context.
    Remote(RemoteJwks),
    /// Given inline, already restricted to the accepted algorithms; ready at once.
    Local(Jwks),
}

/// The key source while the configuration is read: `remote_jwks` parsed, or `local_jwks` still
/// as JSON (which of its keys are kept depends on the algorithms, which depend on the source).
enum SourceRead {
    Remote(RemoteJwks),
    Local(Value),
}

impl SourceRead {
    /// Whether an HMAC secret from this source may be trusted: it is in the configuration
    /// itself (`local_jwks`), or fetched with credentials (`remote_jwks` with a `bearer_token`,
    /// e.g. auth-api's `/internal/keys`). A secret in a document anyone can fetch (a public
    /// JWKS) would let anyone who reads it mint tokens.
    fn trusts_secrets(&self) -> bool {
        match self {
            Self::Local(_) => true,
            Self::Remote(remote) => remote.source.bearer_token.is_some(),
        }
    }
}

/// Where and how to poll a document over an Envoy cluster: what `remote_jwks` and
/// `remote_revocations` have in common.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct RemoteSource {
    /// The Envoy cluster to call. Required.
    pub cluster: String,
    /// The request path, starting with `/`. Required.
    pub path: String,
    /// The `:authority` of the call. Default: the cluster name.
    pub authority: Option<String>,
    /// Sent as `Authorization: Bearer …`; never shown by `Debug`. Default none.
    pub bearer_token: Option<String>,
    /// Seconds between successful polls, at least 1. Default 30 for keys, 2 for revocations.
    pub poll_seconds: u64,
    /// Timeout of one fetch, in milliseconds, 1 to 60000. Default 2000.
    pub timeout_ms: u64,
}

/// How long a revocation set may go without catching up with the feed before protected routes
/// fail closed: the default access-token lifetime, so a revocation the gateway cannot learn of
/// outlives the gateway's patience by no more than the token it refuses would have lived.
pub(crate) const DEFAULT_REVOCATIONS_STALE_AFTER_SECS: u64 = 900;

/// The `realm` of `WWW-Authenticate` answers when the configuration names none, and of the
/// answers sent before any configuration is in force.
pub(crate) const DEFAULT_REALM: &str = "auth-service";

/// `remote_revocations`: where the revocation feed is polled from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RemoteRevocations {
    /// Cluster, path, credentials, interval.
    pub source: RemoteSource,
    /// After this many seconds without catching up with the feed (a fetch that fails, an
    /// answer that cannot be read, a sync that does not complete) the set counts as missing
    /// and protected routes answer 503 (fail closed), as before the first sync. Default
    /// [`DEFAULT_REVOCATIONS_STALE_AFTER_SECS`].
    pub stale_after_seconds: u64,
}

impl RemoteSource {
    /// The `:authority` to send: `authority`, or the cluster name.
    pub(crate) fn authority(&self) -> &str {
        self.authority.as_deref().unwrap_or(&self.cluster)
    }
}

impl fmt::Debug for RemoteSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteSource")
            .field("cluster", &self.cluster)
            .field("path", &self.path)
            .field("authority", &self.authority)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "[redacted]"),
            )
            .field("poll_seconds", &self.poll_seconds)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// The `remote_jwks` section: where and how often to poll the key set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RemoteJwks {
    /// Where to poll; `poll_seconds` defaults to 30.
    pub source: RemoteSource,
    /// Seconds after the last successful fetch when the keys stop being used (503). Default
    /// 3600, at least `poll_seconds`.
    pub stale_after_seconds: u64,
}

/// One route rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rule {
    /// Which paths the rule covers (the query string is ignored).
    pub path: PathMatch,
    /// Which methods it covers, uppercase; `None` is every method.
    pub methods: Option<Vec<String>>,
    /// What a request must show to pass.
    pub require: Require,
    /// Whether the token goes upstream on this rule's requests; `None` is the configuration's
    /// `forward`.
    pub forward: Option<bool>,
    /// Whether the token's `email_verified` claim must be JSON `true` (403 otherwise). Never on
    /// a public rule.
    pub email_verified: bool,
    /// The `acr` values (assurance levels, e.g. `aal2`) of which the token's `acr` claim must
    /// be one, in order of preference (401 `insufficient_user_authentication` otherwise, RFC
    /// 9470); `None` asks for none. Never empty, never on a public rule, and each value is
    /// visible ASCII without `"` or `\`, so that it goes into `acr_values` as it is.
    pub acr: Option<Vec<String>>,
}

/// How a rule matches the request path.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum PathMatch {
    /// The path starts with this text.
    Prefix(String),
    /// The path is exactly this text.
    Path(String),
}

/// What a rule requires: `"public"`, `"authenticated"` or `{"roles": [...]}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Require {
    /// No token needed; a token that is sent is neither checked nor stripped.
    Public,
    /// A valid token.
    Authenticated,
    /// A valid token carrying at least one of these roles (403 otherwise).
    Roles(Vec<String>),
}

/// Default of `clock_skew_seconds`, in seconds.
const DEFAULT_CLOCK_SKEW_SECS: u64 = 60;
/// Default of `roles_claim`.
const DEFAULT_ROLES_CLAIM: &str = "roles";
/// Default of `cache_entries`.
const DEFAULT_CACHE_ENTRIES: usize = 1024;
/// Default `poll_seconds` of `remote_jwks`.
const DEFAULT_JWKS_POLL_SECS: u64 = 30;
/// Default `stale_after_seconds` of `remote_jwks`.
const DEFAULT_JWKS_STALE_AFTER_SECS: u64 = 3600;
/// Default `poll_seconds` of `remote_revocations`.
const DEFAULT_REVOCATIONS_POLL_SECS: u64 = 2;
/// Default `timeout_ms` of both polled sources.
const DEFAULT_TIMEOUT_MS: u64 = 2000;

/// The configuration as written, read by serde so that a wrong type or an unknown member is
/// refused with its path (`rules[2].require.roles`, `remote_jwks.url`). Every member is an
/// `Option`, required ones included: a missing or `null` member reads as absent, a required
/// one is reported as `is required`, and [`FilterConfig::parse`] applies the defaults and the
/// checks no type expresses.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    issuer: Option<String>,
    audiences: Option<Vec<String>>,
    clock_skew_seconds: Option<u64>,
    #[serde(default, deserialize_with = "objects")]
    from_headers: Option<Vec<RawFromHeader>>,
    from_cookies: Option<Vec<String>>,
    forward: Option<bool>,
    #[serde(default, deserialize_with = "objects")]
    claim_to_headers: Option<Vec<RawClaimToHeader>>,
    roles_claim: Option<String>,
    required_claims: Option<Vec<String>>,
    algorithms: Option<Vec<String>>,
    #[serde(default, deserialize_with = "object")]
    remote_jwks: Option<RawRemote>,
    /// Left as JSON: which of its keys are kept depends on the algorithms.
    local_jwks: Option<Value>,
    #[serde(default, deserialize_with = "object")]
    remote_revocations: Option<RawRemote>,
    #[serde(default, deserialize_with = "objects")]
    rules: Option<Vec<RawRule>>,
    bypass_cors_preflight: Option<bool>,
    realm: Option<String>,
    cache_entries: Option<usize>,
}

/// A `from_headers` entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFromHeader {
    name: Option<String>,
    value_prefix: Option<String>,
}

/// A `claim_to_headers` entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClaimToHeader {
    claim_name: Option<String>,
    header_name: Option<String>,
}

/// `remote_jwks` or `remote_revocations` as written: both have the same members.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemote {
    cluster: Option<String>,
    path: Option<String>,
    authority: Option<String>,
    bearer_token: Option<String>,
    poll_seconds: Option<u64>,
    timeout_ms: Option<u64>,
    stale_after_seconds: Option<u64>,
}

/// A rule as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "match", default, deserialize_with = "path_match")]
    path: Option<PathMatch>,
    methods: Option<Vec<String>>,
    #[serde(default, deserialize_with = "require")]
    require: Option<Require>,
    forward: Option<bool>,
    email_verified: Option<bool>,
    acr: Option<Vec<String>>,
}

/// A `T` read from a JSON object only: serde's derive also reads a struct from an array, by
/// position, and no configuration should mean that.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(ObjectVisitor(PhantomData))
            .map(Object)
    }
}

/// An optional member that must be an object.
fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    Ok(Option::<Object<T>>::deserialize(deserializer)?.map(|Object(value)| value))
}

/// An optional member that must be an array of objects.
fn objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Vec<T>>, D::Error> {
    Ok(Option::<Vec<Object<T>>>::deserialize(deserializer)?
        .map(|items| items.into_iter().map(|Object(item)| item).collect()))
}

/// `match`, with one message for every shape that is not a matcher.
fn path_match<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<PathMatch>, D::Error> {
    one_of(deserializer, "expected prefix or path")
}

/// `require`, with one message for every shape that is not a requirement.
fn require<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Require>, D::Error> {
    one_of(
        deserializer,
        "expected \"public\", \"authenticated\" or {\"roles\": [...]}",
    )
}

/// An optional `T` read from any JSON, failing with `expected` at the member's own path: what
/// serde says of an enum it cannot read (`unknown variant`, `expected a map`, or an error deep
/// inside it) tells less about what to write.
fn one_of<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    deserializer: D,
    expected: &str,
) -> Result<Option<T>, D::Error> {
    // Read as a `Value` first, which any JSON is: an error of the second step is not tracked
    // below the member, so its path stays the member's.
    Option::<Value>::deserialize(deserializer)?
        .map(|value| serde_json::from_value(value).map_err(|_| D::Error::custom(expected)))
        .transpose()
}

/// `value`, or the error that `field` is required.
fn required<T>(field: &str, value: Option<T>) -> Result<T, ConfigError> {
    value.ok_or_else(|| ConfigError::new(field, "is required"))
}

/// The path of member `name` of the object at `parent`.
fn member(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}.{name}")
    }
}

impl FilterConfig {
    /// Parses and validates the plugin configuration.
    pub fn parse(json: &[u8]) -> Result<Self, ConfigError> {
        let document: Value = serde_json::from_slice(json)
            .map_err(|e| ConfigError::new("", format!("not valid json: {e}")))?;
        // `serde_json` keeps the last of two members with one name; a configuration must mean
        // one thing to every reader (and to whoever reviews it), so a repeated name is refused.
        if let Err(err) = auth_jwt::parse_json_object(json) {
            if *err.kind() == ErrorKind::DuplicateMember {
                return Err(ConfigError::new(
                    "",
                    "a member name is repeated in an object",
                ));
            }
        }
        // Read from the `Value` rather than the bytes: serde_json would add a line and column
        // to every message, and the path already says where.
        let Object(raw) = serde_path_to_error::deserialize(document).map_err(|err| {
            // An empty path is the document itself, which `Path` displays as `.`.
            let field = if err.path().iter().next().is_some() {
                err.path().to_string()
            } else {
                String::new()
            };
            ConfigError::new(field, err.into_inner().to_string())
        })?;
        Self::from_raw(raw)
    }

    /// Applies the defaults and the semantic checks to a configuration serde has read.
    fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        let issuer = required("issuer", raw.issuer)?;
        non_empty("issuer", &issuer)?;
        let audiences = required("audiences", raw.audiences)?;
        if audiences.is_empty() {
            return Err(ConfigError::new("audiences", "must not be empty"));
        }
        for (i, aud) in audiences.iter().enumerate() {
            non_empty(&format!("audiences[{i}]"), aud)?;
        }
        let clock_skew_seconds = raw.clock_skew_seconds.unwrap_or(DEFAULT_CLOCK_SKEW_SECS);
        // auth-api keeps serving a revocation for `MAX_CLOCK_SKEW_SECS` past the `exp` of the
        // last token it covers; a larger skew would accept such a token after the entry left.
        if clock_skew_seconds > MAX_CLOCK_SKEW_SECS {
            return Err(ConfigError::new(
                "clock_skew_seconds",
                format!("must be at most {MAX_CLOCK_SKEW_SECS}"),
            ));
        }

        let from_headers = match raw.from_headers {
            None => vec![FromHeader {
                name: "authorization".to_owned(),
                value_prefix: "Bearer ".to_owned(),
            }],
            Some(headers) => headers
                .into_iter()
                .enumerate()
                .map(|(i, header)| header.validate(&format!("from_headers[{i}]")))
                .collect::<Result<_, _>>()?,
        };
        let from_cookies = raw.from_cookies.unwrap_or_default();
        for (i, cookie) in from_cookies.iter().enumerate() {
            if cookie.is_empty() || !cookie.bytes().all(is_tchar) {
                return Err(ConfigError::new(
                    format!("from_cookies[{i}]"),
                    "expected a cookie name of token characters",
                ));
            }
        }
        if from_headers.is_empty() && from_cookies.is_empty() {
            return Err(ConfigError::new(
                "from_headers",
                "no token location: from_headers and from_cookies are both empty",
            ));
        }
        let forward = raw.forward.unwrap_or(false);

        let claim_to_headers = raw
            .claim_to_headers
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, c)| c.validate(&format!("claim_to_headers[{i}]"), &from_headers))
            .collect::<Result<_, _>>()?;
        let roles_claim = raw
            .roles_claim
            .unwrap_or_else(|| DEFAULT_ROLES_CLAIM.to_owned());
        non_empty("roles_claim", &roles_claim)?;
        let required_claims = raw.required_claims.unwrap_or_else(|| {
            ACCESS_TOKEN_REQUIRED_CLAIMS
                .into_iter()
                .map(str::to_owned)
                .collect()
        });
        for (i, claim) in required_claims.iter().enumerate() {
            non_empty(&format!("required_claims[{i}]"), claim)?;
        }

        // The remote source is read first: whether it has credentials decides the default
        // algorithms, and the algorithms decide which local keys are kept.
        let key_source = match (raw.remote_jwks, raw.local_jwks) {
            (Some(remote), None) => SourceRead::Remote(remote.jwks()?),
            (None, Some(local)) => SourceRead::Local(local),
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "remote_jwks",
                    "exactly one of remote_jwks and local_jwks may be set",
                ))
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "remote_jwks",
                    "one of remote_jwks and local_jwks is required",
                ))
            }
        };
        let algorithms = algorithms(raw.algorithms.as_deref(), key_source.trusts_secrets())?;
        let key_source = match key_source {
            SourceRead::Remote(remote) => KeySource::Remote(remote),
            SourceRead::Local(local) => KeySource::Local(local_jwks(local, &algorithms)?),
        };

        let remote_revocations = raw
            .remote_revocations
            .map(RawRemote::revocations)
            .transpose()?;
        // The feed names sessions and users: a token the gateway cannot match against it
        // (no `sid`, or no `sub`) would pass whatever was revoked.
        if remote_revocations.is_some() {
            for claim in ["sid", "sub"] {
                if !required_claims.iter().any(|c| c == claim) {
                    return Err(ConfigError::new(
                        "required_claims",
                        format!("must include \"{claim}\" when remote_revocations is set"),
                    ));
                }
            }
        }

        let raw_rules = required("rules", raw.rules)?;
        if raw_rules.is_empty() {
            return Err(ConfigError::new("rules", "must not be empty"));
        }
        let rules = raw_rules
            .into_iter()
            .enumerate()
            .map(|(i, rule)| rule.validate(&format!("rules[{i}]")))
            .collect::<Result<_, _>>()?;

        let bypass_cors_preflight = raw.bypass_cors_preflight.unwrap_or(false);
        let realm = raw.realm.unwrap_or_else(|| DEFAULT_REALM.to_owned());
        if realm
            .chars()
            .any(|c| c == '"' || c == '\\' || !(' '..='~').contains(&c))
        {
            return Err(ConfigError::new(
                "realm",
                "must be printable ascii without quotes or backslashes",
            ));
        }
        let cache_entries = raw.cache_entries.unwrap_or(DEFAULT_CACHE_ENTRIES);

        Ok(Self {
            issuer,
            audiences,
            clock_skew_seconds,
            from_headers,
            from_cookies,
            forward,
            claim_to_headers,
            roles_claim,
            required_claims,
            algorithms,
            key_source,
            remote_revocations,
            rules,
            bypass_cors_preflight,
            realm,
            cache_entries,
        })
    }

    /// The token validation this configuration asks for: [`Validation::access_token`] (the
    /// rules auth-api's `/validate` applies) with the issuer, the audiences and the clock skew,
    /// requiring the configured claims and accepting only the configured algorithms.
    pub fn validation(&self) -> Validation {
        Validation {
            algorithms: self.algorithms.clone(),
            required_claims: self.required_claims.clone(),
            ..Validation::access_token(&self.issuer, &self.audiences, self.clock_skew_seconds)
        }
    }
}

impl RawFromHeader {
    /// The entry at `at` (`from_headers[i]`), checked.
    fn validate(self, at: &str) -> Result<FromHeader, ConfigError> {
        let name = required(&member(at, "name"), self.name)?;
        header_name(&member(at, "name"), &name)?;
        let value_prefix = self.value_prefix.unwrap_or_default();
        if value_prefix.chars().any(|c| c.is_control()) {
            return Err(ConfigError::new(
                member(at, "value_prefix"),
                "must not contain control characters",
            ));
        }
        Ok(FromHeader { name, value_prefix })
    }
}

impl RawClaimToHeader {
    /// The entry at `at` (`claim_to_headers[i]`), checked against the token headers.
    fn validate(self, at: &str, from_headers: &[FromHeader]) -> Result<ClaimToHeader, ConfigError> {
        let claim_name = required(&member(at, "claim_name"), self.claim_name)?;
        non_empty(&member(at, "claim_name"), &claim_name)?;
        let field = member(at, "header_name");
        let header_name = required(&field, self.header_name)?;
        self::header_name(&field, &header_name)?;
        if from_headers.iter().any(|h| h.name == header_name) {
            return Err(ConfigError::new(field, "is also a token header"));
        }
        Ok(ClaimToHeader {
            claim_name,
            header_name,
        })
    }
}

impl RawRemote {
    /// `remote_jwks`.
    fn jwks(self) -> Result<RemoteJwks, ConfigError> {
        let (source, stale_after_seconds) = self.validate(
            "remote_jwks",
            DEFAULT_JWKS_POLL_SECS,
            DEFAULT_JWKS_STALE_AFTER_SECS,
        )?;
        Ok(RemoteJwks {
            source,
            stale_after_seconds,
        })
    }

    /// `remote_revocations`.
    fn revocations(self) -> Result<RemoteRevocations, ConfigError> {
        let (source, stale_after_seconds) = self.validate(
            "remote_revocations",
            DEFAULT_REVOCATIONS_POLL_SECS,
            DEFAULT_REVOCATIONS_STALE_AFTER_SECS,
        )?;
        Ok(RemoteRevocations {
            source,
            stale_after_seconds,
        })
    }

    /// The source at `at` and its `stale_after_seconds`, checked, with the section's defaults.
    fn validate(
        self,
        at: &str,
        default_poll_seconds: u64,
        default_stale_after_seconds: u64,
    ) -> Result<(RemoteSource, u64), ConfigError> {
        let cluster = required(&member(at, "cluster"), self.cluster)?;
        non_empty(&member(at, "cluster"), &cluster)?;
        let path = required(&member(at, "path"), self.path)?;
        if !path.starts_with('/') || path.chars().any(|c| !('!'..='~').contains(&c)) {
            return Err(ConfigError::new(
                member(at, "path"),
                "expected a path starting with /",
            ));
        }
        if let Some(authority) = &self.authority {
            non_empty(&member(at, "authority"), authority)?;
        }
        if let Some(token) = &self.bearer_token {
            if !is_token68(token) {
                return Err(ConfigError::new(
                    member(at, "bearer_token"),
                    "expected a bearer token of letters, digits and - . _ ~ + / (then = padding)",
                ));
            }
        }
        let poll_seconds = self.poll_seconds.unwrap_or(default_poll_seconds);
        if poll_seconds == 0 {
            return Err(ConfigError::new(
                member(at, "poll_seconds"),
                "must be at least 1",
            ));
        }
        let timeout_ms = self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if timeout_ms == 0 || timeout_ms > 60_000 {
            return Err(ConfigError::new(
                member(at, "timeout_ms"),
                "must be between 1 and 60000",
            ));
        }
        let stale_after_seconds = self
            .stale_after_seconds
            .unwrap_or(default_stale_after_seconds);
        if stale_after_seconds < poll_seconds {
            return Err(ConfigError::new(
                member(at, "stale_after_seconds"),
                "must be at least poll_seconds",
            ));
        }
        let source = RemoteSource {
            cluster,
            path,
            authority: self.authority,
            bearer_token: self.bearer_token,
            poll_seconds,
            timeout_ms,
        };
        Ok((source, stale_after_seconds))
    }
}

/// The algorithms the filter accepts: `explicit` (the `algorithms` field) if set, else ES256,
/// EdDSA and RS256, plus HS256 when the key source is trusted with secrets.
fn algorithms(
    explicit: Option<&[String]>,
    trusts_secrets: bool,
) -> Result<Vec<Algorithm>, ConfigError> {
    let Some(names) = explicit else {
        return Ok(Algorithm::ALL
            .into_iter()
            .filter(|alg| trusts_secrets || !alg.is_symmetric())
            .collect());
    };
    if names.is_empty() {
        return Err(ConfigError::new("algorithms", "must not be empty"));
    }
    let mut listed = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let field = format!("algorithms[{i}]");
        let alg: Algorithm = name.parse().map_err(|_| {
            ConfigError::new(
                &field,
                format!("unknown algorithm `{name}` (expected ES256, EdDSA, RS256 or HS256)"),
            )
        })?;
        if listed.contains(&alg) {
            return Err(ConfigError::new(field, format!("{alg} is listed twice")));
        }
        listed.push(alg);
    }
    if !trusts_secrets {
        if let Some(alg) = listed.iter().find(|alg| alg.is_symmetric()) {
            return Err(ConfigError::new(
                "algorithms",
                format!(
                    "{alg} needs keys from local_jwks or from a remote_jwks with a \
                     bearer_token: a secret fetched without credentials is in a document \
                     anyone can read, and would let them mint tokens"
                ),
            ));
        }
    }
    Ok(Algorithm::ALL
        .into_iter()
        .filter(|alg| listed.contains(alg))
        .collect())
}

fn local_jwks(value: Value, algorithms: &[Algorithm]) -> Result<Jwks, ConfigError> {
    let json =
        serde_json::to_vec(&value).map_err(|e| ConfigError::new("local_jwks", e.to_string()))?;
    let keys =
        KeySet::from_jwks_json(&json).map_err(|e| ConfigError::new("local_jwks", e.to_string()))?;
    if keys.is_empty() {
        return Err(ConfigError::new(
            "local_jwks",
            "holds no usable key (ES256, EdDSA, RS256 or HS256)",
        ));
    }
    let jwks = Jwks::accept(keys, algorithms);
    if jwks.keys().is_empty() {
        return Err(ConfigError::new(
            "local_jwks",
            format!(
                "holds no key of an accepted algorithm (algorithms: {})",
                keys::names(algorithms)
            ),
        ));
    }
    Ok(jwks)
}

impl RawRule {
    /// The rule at `at` (`rules[i]`), checked.
    fn validate(self, at: &str) -> Result<Rule, ConfigError> {
        let match_path = member(at, "match");
        let path_match = required(&match_path, self.path)?;
        let (PathMatch::Prefix(p) | PathMatch::Path(p)) = &path_match;
        if !p.starts_with('/') || p.contains('?') || p.contains('#') {
            return Err(ConfigError::new(
                &match_path,
                "expected a path starting with / without query or fragment",
            ));
        }
        // Requests are matched on their normalized path, so a rule written any other way (`//`,
        // `.` or `..` segments, `;`, `\`, percent-encoding that normalization would decode or
        // refuse) could never match: refused here rather than left silently dead.
        if policy::normalize_path(p).as_deref() != Some(p.as_str()) {
            return Err(ConfigError::new(
                &match_path,
                "expected a normalized path: no //, . or .. segments, ;, \\, or %-encoded unreserved characters",
            ));
        }
        if let Some(methods) = &self.methods {
            if methods.is_empty() {
                return Err(ConfigError::new(
                    member(at, "methods"),
                    "must not be empty (omit it for every method)",
                ));
            }
            for (i, method) in methods.iter().enumerate() {
                if method.is_empty()
                    || !method
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
                {
                    return Err(ConfigError::new(
                        format!("{}[{i}]", member(at, "methods")),
                        "expected an uppercase method name",
                    ));
                }
            }
        }
        let require_path = member(at, "require");
        let require = required(&require_path, self.require)?;
        if let Require::Roles(roles) = &require {
            if roles.is_empty() || roles.iter().any(String::is_empty) {
                return Err(ConfigError::new(
                    format!("{require_path}.roles"),
                    "expected a non-empty list of non-empty roles",
                ));
            }
        }
        let email_verified = match self.email_verified {
            None => false,
            Some(true) => true,
            // `false` would read as "an unverified email is required" to some: said by leaving
            // the member out, as `methods`' "every method" is.
            Some(false) => {
                return Err(ConfigError::new(
                    member(at, "email_verified"),
                    "expected true (omit it to accept any email)",
                ))
            }
        };
        if let Some(acr) = &self.acr {
            acr_values(&member(at, "acr"), acr)?;
        }
        // A public rule checks no token, so it could never enforce a claim: refused rather
        // than silently ignored.
        if require == Require::Public {
            for (given, name) in [
                (email_verified, "email_verified"),
                (self.acr.is_some(), "acr"),
            ] {
                if given {
                    return Err(ConfigError::new(
                        member(at, name),
                        "a public rule checks no token: require \"authenticated\" or roles with it",
                    ));
                }
            }
        }
        Ok(Rule {
            path: path_match,
            methods: self.methods,
            require,
            forward: self.forward,
            email_verified,
            acr: self.acr,
        })
    }
}

/// Checks a rule's `acr` list at `field`: not empty, and each value a non-empty run of visible
/// ASCII other than `"` and `\`, listed once. Such values go into the RFC 9470 challenge's
/// `acr_values="…"` as they are: a quoted string of space-separated values, which RFC 6750 §3
/// lets hold no `"` or `\`, and no value may hold the space that separates them.
fn acr_values(field: &str, values: &[String]) -> Result<(), ConfigError> {
    if values.is_empty() {
        return Err(ConfigError::new(
            field,
            "must not be empty (omit it to accept any acr)",
        ));
    }
    for (i, value) in values.iter().enumerate() {
        let at = format!("{field}[{i}]");
        if value.is_empty() || !value.bytes().all(is_acr_byte) {
            return Err(ConfigError::new(
                at,
                "expected an acr value of visible ascii characters without spaces, quotes or backslashes",
            ));
        }
        if values.get(..i).is_some_and(|before| before.contains(value)) {
            return Err(ConfigError::new(at, format!("{value} is listed twice")));
        }
    }
    Ok(())
}

/// A byte an `acr` value may hold: visible ASCII (`!` to `~`) but `"` and `\`.
pub(crate) fn is_acr_byte(b: u8) -> bool {
    (b'!'..=b'~').contains(&b) && b != b'"' && b != b'\\'
}

fn non_empty(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() {
        Err(ConfigError::new(field, "must not be empty"))
    } else {
        Ok(())
    }
}

/// RFC 9110 `tchar`.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn header_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let valid = !name.is_empty() && name.bytes().all(|b| is_tchar(b) && !b.is_ascii_uppercase());
    if valid {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            "expected a lowercase header name of token characters",
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;
    use crate::poll::Document as _;

    pub(crate) const SECRET_B64: &str = "dGVzdC1zZWNyZXQtdGVzdC1zZWNyZXQtdGVzdC1zZWM";

    /// A complete valid configuration with local keys, as JSON to be tweaked by tests.
    pub(crate) fn base() -> Value {
        json!({
            "issuer": "auth-service",
            "audiences": ["api"],
            "claim_to_headers": [
                {"claim_name": "sub", "header_name": "x-user-id"},
                {"claim_name": "email", "header_name": "x-user-email"},
                {"claim_name": "roles", "header_name": "x-user-roles"}
            ],
            "local_jwks": {"keys": [{"kty": "oct", "kid": "k1", "alg": "HS256", "k": SECRET_B64}]},
            "rules": [
                {"match": {"prefix": "/auth/"}, "require": "public"},
                {"match": {"path": "/healthz"}, "methods": ["GET"], "require": "public"},
                {"match": {"prefix": "/api/admin/"}, "require": {"roles": ["admin"]}},
                {"match": {"prefix": "/api/"}, "require": "authenticated"}
            ]
        })
    }

    fn parse(value: &Value) -> Result<FilterConfig, ConfigError> {
        FilterConfig::parse(value.to_string().as_bytes())
    }

    /// `value` with the member at the JSON `pointer` set to `new` (removed when `new` is null).
    /// A pointer that names nothing gives `null`, which no test accepts as a configuration.
    fn with(mut value: Value, pointer: &str, new: Value) -> Value {
        let Some((parent, name)) = pointer.rsplit_once('/') else {
            return Value::Null;
        };
        match value.pointer_mut(parent) {
            Some(Value::Object(map)) if new.is_null() => {
                map.remove(name);
            }
            Some(Value::Object(map)) => {
                map.insert(name.to_owned(), new);
            }
            Some(Value::Array(items)) => {
                match name.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                    Some(item) => *item = new,
                    None => return Value::Null,
                }
            }
            _ => return Value::Null,
        }
        value
    }

    #[test]
    fn a_minimal_config_gets_the_documented_defaults() -> crate::TestResult {
        let config = parse(&base())?;
        assert_eq!(config.clock_skew_seconds, 60);
        assert_eq!(
            config.from_headers,
            [FromHeader {
                name: "authorization".to_owned(),
                value_prefix: "Bearer ".to_owned()
            }]
        );
        assert!(config.from_cookies.is_empty());
        assert!(!config.forward);
        assert_eq!(config.roles_claim, "roles");
        assert_eq!(
            config.required_claims,
            ["sub", "iat", "jti", "sid", "client_id"]
        );
        assert!(!config.bypass_cors_preflight);
        assert_eq!(config.realm, "auth-service");
        assert_eq!(config.cache_entries, 1024);
        assert!(matches!(&config.key_source, KeySource::Local(keys) if keys.keys().len() == 1));
        assert_eq!(config.rules.len(), 4);
        assert_eq!(
            config.rules[2].require,
            Require::Roles(vec!["admin".to_owned()])
        );
        assert_eq!(config.rules[1].methods, Some(vec!["GET".to_owned()]));
        Ok(())
    }

    #[test]
    fn remote_jwks_gets_its_defaults_and_hides_the_bearer_token_from_debug() -> crate::TestResult {
        let value = with(base(), "/local_jwks", Value::Null);
        let value = with(
            value,
            "/remote_jwks",
            json!({"cluster": "auth_internal", "path": "/internal/keys", "bearer_token": "s3cr3t-token"}),
        );
        let config = parse(&value)?;
        let KeySource::Remote(remote) = &config.key_source else {
            panic!("expected remote keys");
        };
        assert_eq!(remote.source.poll_seconds, 30);
        assert_eq!(remote.stale_after_seconds, 3600);
        assert_eq!(remote.source.timeout_ms, 2000);
        assert_eq!(remote.source.authority(), "auth_internal");
        assert_eq!(remote.source.bearer_token.as_deref(), Some("s3cr3t-token"));
        assert!(config.remote_revocations.is_none(), "off unless configured");
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cr3t-token"), "{debug}");
        assert!(debug.contains("[redacted]"));
        Ok(())
    }

    #[test]
    fn remote_jwks_may_poll_a_public_jwks_without_a_bearer_token() -> crate::TestResult {
        let value = with(base(), "/local_jwks", Value::Null);
        let value = with(
            value,
            "/remote_jwks",
            json!({"cluster": "auth_api", "path": "/.well-known/jwks.json"}),
        );
        let config = parse(&value)?;
        let KeySource::Remote(remote) = &config.key_source else {
            panic!("expected remote keys");
        };
        assert_eq!(remote.source.bearer_token, None);
        assert_eq!(remote.source.path, "/.well-known/jwks.json");
        Ok(())
    }

    #[test]
    fn local_jwks_takes_public_keys_of_every_algorithm() -> crate::TestResult {
        let keys = auth_jwt::Algorithm::ALL
            .iter()
            .map(|&alg| crate::crypto::tests::key(alg))
            .collect::<Result<Vec<_>, _>>()?;
        let jwks = auth_jwt::JwkSet {
            keys: keys.iter().map(auth_jwt::Jwk::from_key).collect(),
        };
        let config = parse(&with(base(), "/local_jwks", serde_json::to_value(jwks)?))?;
        let KeySource::Local(set) = &config.key_source else {
            panic!("expected local keys");
        };
        assert_eq!(set.keys().len(), 4);
        for key in &keys {
            let parsed = set.keys().get(key.kid()).ok_or("a key is missing")?;
            assert_eq!(parsed.algorithm(), key.algorithm());
        }
        Ok(())
    }

    fn remote(source: Value) -> Value {
        with(
            with(base(), "/local_jwks", Value::Null),
            "/remote_jwks",
            source,
        )
    }

    const PUBLIC_KEYS: [Algorithm; 3] = [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256];

    #[test]
    fn hs256_is_accepted_by_default_only_from_a_source_trusted_with_secrets() -> crate::TestResult {
        let public = remote(json!({"cluster": "auth_api", "path": "/.well-known/jwks.json"}));
        let internal = remote(
            json!({"cluster": "auth_internal", "path": "/internal/keys", "bearer_token": "t0ken"}),
        );
        let cases = [
            (base(), &Algorithm::ALL[..], "local_jwks"),
            (public, &PUBLIC_KEYS[..], "a public JWKS, no credentials"),
            (
                internal,
                &Algorithm::ALL[..],
                "a key source behind a bearer token",
            ),
        ];
        for (value, expected, reason) in cases {
            let config = parse(&value)?;
            assert_eq!(config.algorithms, expected, "{reason}");
            assert_eq!(config.validation().algorithms, expected, "{reason}");
        }
        Ok(())
    }

    #[test]
    fn explicit_algorithms_are_read_in_a_fixed_order_and_hs256_needs_credentials(
    ) -> crate::TestResult {
        let public = remote(json!({"cluster": "auth_api", "path": "/.well-known/jwks.json"}));
        let config = parse(&with(
            public.clone(),
            "/algorithms",
            json!(["RS256", "ES256"]),
        ))?;
        assert_eq!(config.algorithms, [Algorithm::ES256, Algorithm::RS256]);
        assert_eq!(
            config.validation().algorithms,
            [Algorithm::ES256, Algorithm::RS256]
        );

        let err = parse(&with(public, "/algorithms", json!(["ES256", "HS256"])))
            .expect_err("a secret from a public document");
        assert_eq!(err.field, "algorithms");
        assert!(err.message.contains("bearer_token"), "{err}");

        let internal = remote(
            json!({"cluster": "auth_internal", "path": "/internal/keys", "bearer_token": "t0ken"}),
        );
        let config = parse(&with(internal, "/algorithms", json!(["HS256"])))?;
        assert_eq!(config.algorithms, [Algorithm::HS256]);
        let config = parse(&with(base(), "/algorithms", json!(["HS256"])))?;
        assert_eq!(config.algorithms, [Algorithm::HS256]);
        Ok(())
    }

    #[test]
    fn local_keys_of_algorithms_not_accepted_are_set_aside() -> crate::TestResult {
        let es256 = crate::crypto::tests::key(Algorithm::ES256)?;
        let mut value = base();
        value["local_jwks"]["keys"]
            .as_array_mut()
            .ok_or("no keys")?
            .push(serde_json::to_value(
                auth_jwt::Jwk::public(&es256).ok_or("no jwk")?,
            )?);
        let config = parse(&with(value.clone(), "/algorithms", json!(["ES256"])))?;
        let KeySource::Local(jwks) = &config.key_source else {
            return Err("expected local keys".into());
        };
        assert_eq!(jwks.keys().kids().collect::<Vec<_>>(), [es256.kid()]);
        assert_eq!(jwks.ignored(), [("k1".to_owned(), Algorithm::HS256)]);
        assert!(jwks.warning().is_some_and(|w| w.contains("`k1` (HS256)")));

        // Nothing left: the configuration is refused.
        let err = parse(&with(base(), "/algorithms", json!(["ES256", "EdDSA"])))
            .expect_err("no key of an accepted algorithm");
        assert_eq!(err.field, "local_jwks");
        assert!(err.message.contains("ES256, EdDSA"), "{err}");
        Ok(())
    }

    /// The filter configuration embedded in a shipped Envoy config, placeholders filled in.
    fn shipped(file: &str) -> crate::TestResult<String> {
        let path = format!("{}/../envoy/{file}", env!("CARGO_MANIFEST_DIR"));
        let yaml = std::fs::read_to_string(path)?;
        let (_, rest) = yaml
            .split_once("value: |\n")
            .ok_or("no filter configuration")?;
        let mut json = String::new();
        for line in rest.lines() {
            let trimmed = line.trim_start();
            if line.len() - trimmed.len() < 28 && !trimmed.is_empty() {
                break;
            }
            json.push_str(trimmed);
            json.push('\n');
        }
        Ok(json
            .replace("{{ISSUER}}", "http://127.0.0.1:10000/auth")
            .replace("{{INTERNAL_TOKEN}}", "internal-token-internal-token-01")
            .replace("{{POLL_SECONDS}}", "30")
            .replace("{{REVOCATION_POLL_SECONDS}}", "2"))
    }

    #[test]
    fn the_shipped_configs_take_no_secret_from_the_public_jwks() -> crate::TestResult {
        for file in ["dev.yaml", "docker.yaml"] {
            let json = shipped(file)?;
            let config = FilterConfig::parse(json.as_bytes())?;
            assert_eq!(config.algorithms, PUBLIC_KEYS, "{file}");
            // The HS256 migration's gateway (the e2e harness's `GatewayKeys::Internal`): the same
            // configuration polling `/internal/keys` with the internal token verifies HS256 too.
            let internal = json
                .replace(
                    r#""cluster": "auth_api","#,
                    r#""cluster": "auth_internal","#,
                )
                .replace(
                    r#""path": "/.well-known/jwks.json","#,
                    r#""bearer_token": "t0ken", "path": "/internal/keys","#,
                );
            let config = FilterConfig::parse(internal.as_bytes())?;
            let KeySource::Remote(remote) = &config.key_source else {
                return Err("expected remote keys".into());
            };
            assert_eq!(remote.source.path, "/internal/keys", "{file}");
            assert_eq!(config.algorithms, Algorithm::ALL, "{file}");
        }
        Ok(())
    }

    #[test]
    fn remote_revocations_gets_its_defaults_and_hides_the_bearer_token_from_debug(
    ) -> crate::TestResult {
        let value = with(
            base(),
            "/remote_revocations",
            json!({"cluster": "auth_internal", "path": "/internal/revocations", "bearer_token": "s3cr3t-token"}),
        );
        let config = parse(&value)?;
        let remote = &config.remote_revocations.as_ref().ok_or("no feed")?.source;
        assert_eq!(remote.cluster, "auth_internal");
        assert_eq!(remote.path, "/internal/revocations");
        assert_eq!(remote.poll_seconds, 2);
        assert_eq!(remote.timeout_ms, 2000);
        assert_eq!(remote.authority(), "auth_internal");
        assert_eq!(
            config
                .remote_revocations
                .as_ref()
                .map(|r| r.stale_after_seconds),
            Some(DEFAULT_REVOCATIONS_STALE_AFTER_SECS),
            "a feed that stops failing closed after a while, by default"
        );
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cr3t-token"), "{debug}");
        assert!(debug.contains("[redacted]"));

        let full = with(
            base(),
            "/remote_revocations",
            json!({"cluster": "auth_internal", "path": "/internal/revocations", "authority": "auth-api",
                   "bearer_token": "t", "poll_seconds": 5, "timeout_ms": 500, "stale_after_seconds": 960}),
        );
        let config = parse(&full)?;
        let revocations = config.remote_revocations.as_ref().ok_or("no feed")?;
        let remote = &revocations.source;
        assert_eq!(
            (remote.authority(), remote.poll_seconds, remote.timeout_ms),
            ("auth-api", 5, 500)
        );
        assert_eq!(revocations.stale_after_seconds, 960);
        Ok(())
    }

    #[test]
    fn each_config_error_names_its_field() -> crate::TestResult {
        let remote_keys = json!({"cluster": "c", "path": "/keys"});
        let cases: Vec<(Value, &str, &str)> = vec![
            (
                with(base(), "/issuer", Value::Null),
                "issuer",
                "issuer is required",
            ),
            (
                with(base(), "/issuer", json!("")),
                "issuer",
                "an empty issuer",
            ),
            (
                with(base(), "/issuer", json!(5)),
                "issuer",
                "issuer of the wrong type",
            ),
            (
                with(base(), "/audiences", json!([])),
                "audiences",
                "no audience",
            ),
            (
                with(base(), "/audiences", json!(["api", ""])),
                "audiences[1]",
                "an empty audience",
            ),
            (
                with(base(), "/clock_skew_seconds", json!(-1)),
                "clock_skew_seconds",
                "negative skew",
            ),
            (
                with(base(), "/clock_skew_seconds", json!(3600)),
                "clock_skew_seconds",
                "an hour of skew",
            ),
            (
                with(
                    base(),
                    "/clock_skew_seconds",
                    json!(MAX_CLOCK_SKEW_SECS + 1),
                ),
                "clock_skew_seconds",
                "more skew than auth-api keeps revocations for",
            ),
            (
                with(
                    with(
                        base(),
                        "/remote_revocations",
                        json!({"cluster": "c", "path": "/r"}),
                    ),
                    "/required_claims",
                    json!(["sub", "iat"]),
                ),
                "required_claims",
                "revocations without sid required",
            ),
            (
                with(
                    with(
                        base(),
                        "/remote_revocations",
                        json!({"cluster": "c", "path": "/r"}),
                    ),
                    "/required_claims",
                    json!(["sid"]),
                ),
                "required_claims",
                "revocations without sub required",
            ),
            (
                with(base(), "/from_headers", json!([{"name": "Authorization"}])),
                "from_headers[0].name",
                "uppercase header name",
            ),
            (
                with(
                    base(),
                    "/from_headers",
                    json!([{"name": "a", "prefix": "x"}]),
                ),
                "from_headers[0].prefix",
                "unknown member",
            ),
            (
                with(base(), "/from_headers", json!([{"value_prefix": "Token "}])),
                "from_headers[0].name",
                "a token header without a name",
            ),
            (
                with(base(), "/claim_to_headers/0", json!({"claim_name": "sub"})),
                "claim_to_headers[0].header_name",
                "a claim without a header",
            ),
            (
                with(base(), "/from_cookies", json!(["a b"])),
                "from_cookies[0]",
                "a space in a cookie name",
            ),
            (
                with(
                    with(base(), "/from_headers", json!([])),
                    "/from_cookies",
                    json!([]),
                ),
                "from_headers",
                "nowhere to read a token",
            ),
            (
                with(
                    base(),
                    "/claim_to_headers/1",
                    json!({"claim_name": "email", "header_name": "X-Email"}),
                ),
                "claim_to_headers[1].header_name",
                "uppercase header name",
            ),
            (
                with(
                    base(),
                    "/claim_to_headers/0",
                    json!({"claim_name": "sub", "header_name": "x id"}),
                ),
                "claim_to_headers[0].header_name",
                "a space in a header name",
            ),
            (
                with(
                    base(),
                    "/claim_to_headers/0",
                    json!({"claim_name": "", "header_name": "x-id"}),
                ),
                "claim_to_headers[0].claim_name",
                "an empty claim name",
            ),
            (
                with(
                    base(),
                    "/claim_to_headers/0",
                    json!({"claim_name": "sub", "header_name": "authorization"}),
                ),
                "claim_to_headers[0].header_name",
                "overwriting the token header",
            ),
            (
                with(base(), "/local_jwks", Value::Null),
                "remote_jwks",
                "no key source",
            ),
            (
                with(base(), "/remote_jwks", remote_keys.clone()),
                "remote_jwks",
                "two key sources",
            ),
            (
                with(base(), "/local_jwks", json!({"keys": []})),
                "local_jwks",
                "no usable key",
            ),
            (
                with(
                    base(),
                    "/local_jwks",
                    json!({"keys": [{"kty": "oct", "kid": "k", "alg": "HS256", "k": "c2hvcnQ"}]}),
                ),
                "local_jwks",
                "a short secret",
            ),
            (
                with(
                    with(base(), "/local_jwks", Value::Null),
                    "/remote_jwks",
                    json!({"cluster": "c", "path": "keys"}),
                ),
                "remote_jwks.path",
                "a relative path",
            ),
            (
                with(
                    with(base(), "/local_jwks", Value::Null),
                    "/remote_jwks",
                    json!({"cluster": "", "path": "/keys"}),
                ),
                "remote_jwks.cluster",
                "an empty cluster",
            ),
            (
                with(
                    with(base(), "/local_jwks", Value::Null),
                    "/remote_jwks",
                    json!({"cluster": "c", "path": "/k", "poll_seconds": 0}),
                ),
                "remote_jwks.poll_seconds",
                "polling continuously",
            ),
            (
                with(
                    with(base(), "/local_jwks", Value::Null),
                    "/remote_jwks",
                    json!({"cluster": "c", "path": "/k", "poll_seconds": 60, "stale_after_seconds": 30}),
                ),
                "remote_jwks.stale_after_seconds",
                "stale before the next poll",
            ),
            (
                with(
                    with(base(), "/local_jwks", Value::Null),
                    "/remote_jwks",
                    json!({"cluster": "c", "path": "/k", "timeout_ms": 0}),
                ),
                "remote_jwks.timeout_ms",
                "no time to answer",
            ),
            (
                with(
                    with(base(), "/local_jwks", Value::Null),
                    "/remote_jwks",
                    json!({"cluster": "c", "path": "/k", "url": "x"}),
                ),
                "remote_jwks.url",
                "unknown member",
            ),
            (
                with(
                    with(base(), "/local_jwks", Value::Null),
                    "/remote_jwks",
                    json!({"path": "/k"}),
                ),
                "remote_jwks.cluster",
                "no cluster",
            ),
            (
                with(
                    with(base(), "/local_jwks", Value::Null),
                    "/remote_jwks",
                    json!("c/k"),
                ),
                "remote_jwks",
                "not an object",
            ),
            (
                with(base(), "/remote_revocations", json!({"path": "/r"})),
                "remote_revocations.cluster",
                "revocations without a cluster",
            ),
            (
                with(base(), "/remote_revocations", json!({"cluster": "c"})),
                "remote_revocations.path",
                "revocations without a path",
            ),
            (
                with(
                    base(),
                    "/remote_revocations",
                    json!({"cluster": "c", "path": "internal/revocations"}),
                ),
                "remote_revocations.path",
                "a relative revocations path",
            ),
            (
                with(
                    base(),
                    "/remote_revocations",
                    json!({"cluster": "c", "path": "/r", "authority": ""}),
                ),
                "remote_revocations.authority",
                "an empty authority",
            ),
            (
                with(
                    base(),
                    "/remote_revocations",
                    json!({"cluster": "c", "path": "/r", "bearer_token": "a b"}),
                ),
                "remote_revocations.bearer_token",
                "a space in the bearer token",
            ),
            (
                with(
                    base(),
                    "/remote_revocations",
                    json!({"cluster": "c", "path": "/r", "bearer_token": "abc\"def"}),
                ),
                "remote_revocations.bearer_token",
                "a quote in the bearer token",
            ),
            (
                with(
                    base(),
                    "/remote_revocations",
                    json!({"cluster": "c", "path": "/r", "bearer_token": "=="}),
                ),
                "remote_revocations.bearer_token",
                "padding alone",
            ),
            (
                with(
                    base(),
                    "/remote_revocations",
                    json!({"cluster": "c", "path": "/r", "poll_seconds": 0}),
                ),
                "remote_revocations.poll_seconds",
                "polling revocations continuously",
            ),
            (
                with(
                    base(),
                    "/remote_revocations",
                    json!({"cluster": "c", "path": "/r", "poll_seconds": "2"}),
                ),
                "remote_revocations.poll_seconds",
                "poll_seconds as a string",
            ),
            (
                with(
                    base(),
                    "/remote_revocations",
                    json!({"cluster": "c", "path": "/r", "timeout_ms": 60_001}),
                ),
                "remote_revocations.timeout_ms",
                "a timeout over a minute",
            ),
            (
                with(
                    base(),
                    "/remote_revocations",
                    json!({"cluster": "c", "path": "/r", "poll_seconds": 5, "stale_after_seconds": 1}),
                ),
                "remote_revocations.stale_after_seconds",
                "a feed stale before its next poll",
            ),
            (
                with(base(), "/remote_revocations", json!(true)),
                "remote_revocations",
                "revocations not an object",
            ),
            (with(base(), "/rules", json!([])), "rules", "no rule"),
            (
                with(base(), "/rules", Value::Null),
                "rules",
                "rules are required",
            ),
            (
                with(base(), "/rules/2/match", json!({"regex": ".*"})),
                "rules[2].match",
                "an unsupported matcher",
            ),
            (
                with(
                    base(),
                    "/rules/2/match",
                    json!({"prefix": "/a", "path": "/b"}),
                ),
                "rules[2].match",
                "two matchers",
            ),
            (
                with(base(), "/rules/0/match", json!({"prefix": "auth"})),
                "rules[0].match",
                "a relative prefix",
            ),
            (
                with(base(), "/rules/0/match", Value::Null),
                "rules[0].match",
                "no matcher",
            ),
            (
                with(base(), "/rules/1/methods", json!(["get"])),
                "rules[1].methods[0]",
                "a lowercase method",
            ),
            (
                with(base(), "/rules/1/methods", json!([])),
                "rules[1].methods",
                "an empty method list",
            ),
            (
                with(base(), "/rules/3/require", json!("admin")),
                "rules[3].require",
                "an unknown requirement",
            ),
            (
                with(base(), "/rules/3/require", json!({"roles": []})),
                "rules[3].require.roles",
                "no role",
            ),
            (
                with(base(), "/rules/3/require", Value::Null),
                "rules[3].require",
                "no requirement",
            ),
            (
                with(base(), "/rules/3/allow", json!(true)),
                "rules[3].allow",
                "an unknown rule member",
            ),
            (
                with(base(), "/rules/3", json!("public")),
                "rules[3]",
                "a rule that is not an object",
            ),
            (
                with(base(), "/realm", json!("a\"b")),
                "realm",
                "a quote in the realm",
            ),
            (
                with(base(), "/cache_entries", json!(-5)),
                "cache_entries",
                "a negative cache size",
            ),
            (
                with(base(), "/algorithms", json!([])),
                "algorithms",
                "no algorithm",
            ),
            (
                with(base(), "/algorithms", json!(["ES256", "none"])),
                "algorithms[1]",
                "alg none",
            ),
            (
                with(base(), "/algorithms", json!(["hs256"])),
                "algorithms[0]",
                "a lowercase algorithm",
            ),
            (
                with(base(), "/algorithms", json!(["ES256", "ES256"])),
                "algorithms[1]",
                "an algorithm listed twice",
            ),
            (
                with(base(), "/algorithms", json!("ES256")),
                "algorithms",
                "algorithms not a list",
            ),
            (
                with(remote(remote_keys.clone()), "/algorithms", json!(["HS256"])),
                "algorithms",
                "HS256 from a key source without credentials",
            ),
            (
                with(base(), "/forwrd", json!(true)),
                "forwrd",
                "a misspelt field",
            ),
        ];
        for (value, field, reason) in cases {
            let err = parse(&value).expect_err(reason);
            assert_eq!(err.field, field, "{reason}: {err}");
            assert!(
                err.to_string().starts_with(&format!("{field}: ")),
                "{reason}: {err}"
            );
        }
        Ok(())
    }

    #[test]
    fn rule_paths_that_no_request_could_match_are_refused() -> crate::TestResult {
        for (path, reason) in [
            ("api/", "no leading slash"),
            ("/api//admin/", "an empty segment"),
            ("/api/../admin/", "a dot-dot segment"),
            ("/api/./x", "a dot segment"),
            ("/api;x/", "a path parameter"),
            ("/api\\x", "a backslash"),
            (
                "/%61pi/",
                "encoded unreserved characters are matched decoded",
            ),
            ("/api/%2f", "an encoded slash"),
        ] {
            let err = parse(&with(base(), "/rules/3/match", json!({"prefix": path})))
                .err()
                .ok_or(reason)?;
            assert_eq!(err.field, "rules[3].match", "{reason}: {err}");
        }
        parse(&with(
            base(),
            "/rules/3/match",
            json!({"prefix": "/api/a%20b/"}),
        ))?;
        Ok(())
    }

    #[test]
    fn a_member_named_twice_is_refused() -> crate::TestResult {
        let json = base().to_string();
        for (doubled, reason) in [
            (
                json.replacen(r#""issuer":"#, r#""issuer":"other","issuer":"#, 1),
                "at the top",
            ),
            (
                json.replacen(
                    r#""require":"public""#,
                    r#""require":"public","require":"authenticated""#,
                    1,
                ),
                "in a rule",
            ),
        ] {
            assert_ne!(doubled, json, "{reason}: the test edits the document");
            let err = FilterConfig::parse(doubled.as_bytes())
                .err()
                .ok_or(reason)?;
            assert!(err.message.contains("repeated"), "{reason}: {err}");
        }
        Ok(())
    }

    #[test]
    fn a_rule_may_forward_the_token() -> crate::TestResult {
        let config = parse(&with(base(), "/rules/0/forward", json!(true)))?;
        assert_eq!(config.rules[0].forward, Some(true));
        assert_eq!(config.rules[1].forward, None);
        let err = parse(&with(base(), "/rules/0/forward", json!("yes")))
            .err()
            .ok_or("a string is not a boolean")?;
        assert_eq!(err.field, "rules[0].forward");
        Ok(())
    }

    #[test]
    fn a_rule_may_require_a_verified_email_and_an_acr() -> crate::TestResult {
        let value = with(base(), "/rules/2/acr", json!(["aal2", "urn:example:loa:3"]));
        let value = with(value, "/rules/3/email_verified", json!(true));
        let config = parse(&value)?;
        assert_eq!(
            config.rules[2].acr,
            Some(vec!["aal2".to_owned(), "urn:example:loa:3".to_owned()])
        );
        assert!(!config.rules[2].email_verified);
        assert_eq!(config.rules[3].acr, None);
        assert!(config.rules[3].email_verified);
        let config = parse(&with(base(), "/rules/3/email_verified", Value::Null))?;
        assert!(!config.rules[3].email_verified, "left out: not required");
        Ok(())
    }

    #[test]
    fn acr_and_email_verified_are_refused_where_they_could_not_hold() -> crate::TestResult {
        let public_rule =
            "a public rule checks no token: require \"authenticated\" or roles with it";
        let acr_value = "expected an acr value of visible ascii characters without spaces, \
                         quotes or backslashes";
        let cases = [
            (
                with(base(), "/rules/0/acr", json!(["aal2"])),
                "rules[0].acr",
                public_rule,
                "acr on a public rule",
            ),
            (
                with(base(), "/rules/1/email_verified", json!(true)),
                "rules[1].email_verified",
                public_rule,
                "email_verified on a public rule",
            ),
            (
                with(base(), "/rules/3/acr", json!([])),
                "rules[3].acr",
                "must not be empty (omit it to accept any acr)",
                "an empty acr list",
            ),
            (
                with(base(), "/rules/3/acr", json!(["aal2", ""])),
                "rules[3].acr[1]",
                acr_value,
                "an empty value",
            ),
            (
                with(base(), "/rules/3/acr", json!(["aal\"2"])),
                "rules[3].acr[0]",
                acr_value,
                "a quote",
            ),
            (
                with(base(), "/rules/3/acr", json!(["aal\\2"])),
                "rules[3].acr[0]",
                acr_value,
                "a backslash",
            ),
            (
                with(base(), "/rules/3/acr", json!(["aal 2"])),
                "rules[3].acr[0]",
                acr_value,
                "a space, which separates acr_values",
            ),
            (
                with(base(), "/rules/3/acr", json!(["aal2\n"])),
                "rules[3].acr[0]",
                acr_value,
                "a control character",
            ),
            (
                with(base(), "/rules/3/acr", json!(["niveau-\u{e9}lev\u{e9}"])),
                "rules[3].acr[0]",
                acr_value,
                "non-ascii",
            ),
            (
                with(base(), "/rules/3/acr", json!(["aal2", "aal3", "aal2"])),
                "rules[3].acr[2]",
                "aal2 is listed twice",
                "a value listed twice",
            ),
            (
                with(base(), "/rules/3/email_verified", json!(false)),
                "rules[3].email_verified",
                "expected true (omit it to accept any email)",
                "false, which could be read as requiring an unverified email",
            ),
        ];
        for (value, field, message, reason) in cases {
            let err = parse(&value).err().ok_or(reason)?;
            assert_eq!(
                (err.field.as_str(), err.message.as_str()),
                (field, message),
                "{reason}"
            );
        }
        for (value, field, reason) in [
            (
                with(base(), "/rules/3/acr", json!("aal2")),
                "rules[3].acr",
                "a string, not a list",
            ),
            (
                with(base(), "/rules/3/acr", json!([2])),
                "rules[3].acr[0]",
                "a number",
            ),
            (
                with(base(), "/rules/3/email_verified", json!("true")),
                "rules[3].email_verified",
                "the string \"true\"",
            ),
        ] {
            let err = parse(&value).err().ok_or(reason)?;
            assert_eq!(err.field, field, "{reason}: {err}");
            assert!(err.message.starts_with("invalid type: "), "{reason}: {err}");
        }
        Ok(())
    }

    #[test]
    fn the_rule_match_error_reads_as_documented() -> crate::TestResult {
        let value = with(base(), "/rules/2/match", json!({"regex": ".*"}));
        let err = parse(&value).unwrap_err();
        assert_eq!(err.to_string(), "rules[2].match: expected prefix or path");
        Ok(())
    }

    /// A configuration that sets every optional member to something other than its default.
    fn full() -> Value {
        json!({
            "issuer": "auth-service",
            "audiences": ["api"],
            "clock_skew_seconds": 5,
            "from_headers": [{"name": "x-token", "value_prefix": "Token "}],
            "from_cookies": ["session"],
            "forward": true,
            "claim_to_headers": [{"claim_name": "sub", "header_name": "x-user-id"}],
            "roles_claim": "groups",
            "required_claims": ["sub", "sid"],
            "algorithms": ["ES256"],
            "remote_jwks": {"cluster": "auth_internal", "path": "/internal/keys",
                            "authority": "auth-api", "bearer_token": "t0ken", "poll_seconds": 10,
                            "timeout_ms": 500, "stale_after_seconds": 600},
            "remote_revocations": {"cluster": "auth_internal", "path": "/internal/revocations",
                                   "authority": "auth-api", "bearer_token": "t0ken",
                                   "poll_seconds": 5, "timeout_ms": 500,
                                   "stale_after_seconds": 960},
            "rules": [{"match": {"prefix": "/api/"}, "methods": ["GET"],
                       "require": "authenticated", "forward": false}],
            "bypass_cors_preflight": true,
            "realm": "api",
            "cache_entries": 16
        })
    }

    fn jwks(config: &FilterConfig) -> Option<&RemoteJwks> {
        match &config.key_source {
            KeySource::Remote(remote) => Some(remote),
            KeySource::Local(_) => None,
        }
    }

    #[test]
    fn every_optional_member_left_out_or_null_takes_its_default() -> crate::TestResult {
        type IsDefault = fn(&FilterConfig) -> bool;
        let revocations = |c: &FilterConfig| c.remote_revocations.clone();
        let cases: Vec<(&str, IsDefault)> = vec![
            ("/clock_skew_seconds", |c| c.clock_skew_seconds == 60),
            ("/from_headers", |c| {
                c.from_headers
                    == [FromHeader {
                        name: "authorization".to_owned(),
                        value_prefix: "Bearer ".to_owned(),
                    }]
            }),
            ("/from_headers/0/value_prefix", |c| {
                c.from_headers[0].value_prefix.is_empty()
            }),
            ("/from_cookies", |c| c.from_cookies.is_empty()),
            ("/forward", |c| !c.forward),
            ("/claim_to_headers", |c| c.claim_to_headers.is_empty()),
            ("/roles_claim", |c| c.roles_claim == "roles"),
            ("/required_claims", |c| {
                c.required_claims == ACCESS_TOKEN_REQUIRED_CLAIMS
            }),
            // A key source with credentials: every algorithm.
            ("/algorithms", |c| c.algorithms == Algorithm::ALL),
            ("/remote_jwks/authority", |c| {
                jwks(c).is_some_and(|r| r.source.authority() == "auth_internal")
            }),
            ("/remote_jwks/poll_seconds", |c| {
                jwks(c).is_some_and(|r| r.source.poll_seconds == 30)
            }),
            ("/remote_jwks/timeout_ms", |c| {
                jwks(c).is_some_and(|r| r.source.timeout_ms == 2000)
            }),
            ("/remote_jwks/stale_after_seconds", |c| {
                jwks(c).is_some_and(|r| r.stale_after_seconds == 3600)
            }),
            ("/remote_revocations", |c| c.remote_revocations.is_none()),
            ("/remote_revocations/authority", |c| {
                c.remote_revocations
                    .as_ref()
                    .is_some_and(|r| r.source.authority() == "auth_internal")
            }),
            ("/remote_revocations/bearer_token", |c| {
                c.remote_revocations
                    .as_ref()
                    .is_some_and(|r| r.source.bearer_token.is_none())
            }),
            ("/remote_revocations/poll_seconds", |c| {
                c.remote_revocations
                    .as_ref()
                    .is_some_and(|r| r.source.poll_seconds == 2)
            }),
            ("/remote_revocations/timeout_ms", |c| {
                c.remote_revocations
                    .as_ref()
                    .is_some_and(|r| r.source.timeout_ms == 2000)
            }),
            ("/remote_revocations/stale_after_seconds", |c| {
                c.remote_revocations
                    .as_ref()
                    .is_some_and(|r| r.stale_after_seconds == DEFAULT_REVOCATIONS_STALE_AFTER_SECS)
            }),
            ("/rules/0/methods", |c| c.rules[0].methods.is_none()),
            ("/rules/0/forward", |c| c.rules[0].forward.is_none()),
            ("/bypass_cors_preflight", |c| !c.bypass_cors_preflight),
            ("/realm", |c| c.realm == DEFAULT_REALM),
            ("/cache_entries", |c| c.cache_entries == 1024),
        ];
        let config = parse(&full())?;
        assert!(revocations(&config).is_some());
        for (pointer, is_default) in cases {
            assert!(!is_default(&config), "{pointer}: full() sets it");
            let left_out = parse(&with(full(), pointer, Value::Null))
                .map_err(|e| format!("{pointer} left out: {e}"))?;
            assert!(is_default(&left_out), "{pointer} left out");
            let mut null = full();
            *null.pointer_mut(pointer).ok_or(pointer)? = Value::Null;
            let null = parse(&null).map_err(|e| format!("{pointer} null: {e}"))?;
            assert!(is_default(&null), "{pointer} null");
        }
        Ok(())
    }

    #[test]
    fn an_unknown_member_is_refused_with_its_path() -> crate::TestResult {
        let cases = [
            (
                with(base(), "/rules/1/methodz", json!(["GET"])),
                "rules[1].methodz",
            ),
            (
                with(
                    base(),
                    "/remote_revocations",
                    json!({"cluster": "c", "path": "/r", "poll_second": 5}),
                ),
                "remote_revocations.poll_second",
            ),
            (
                with(base(), "/claim_to_headers/1/header", json!("x-email")),
                "claim_to_headers[1].header",
            ),
            (
                with(
                    base(),
                    "/from_headers",
                    json!([{"name": "a"}, {"name": "b", "valu_prefix": "x"}]),
                ),
                "from_headers[1].valu_prefix",
            ),
            (
                with(full(), "/remote_jwks/url", json!("x")),
                "remote_jwks.url",
            ),
            (with(base(), "/realms", json!("x")), "realms"),
        ];
        for (value, field) in cases {
            let err = parse(&value).err().ok_or(field)?;
            assert_eq!(err.field, field, "{err}");
            let name = field.rsplit(['.', ']']).next().ok_or(field)?;
            assert!(
                err.message
                    .starts_with(&format!("unknown field `{name}`, expected")),
                "{err}"
            );
        }
        let err = parse(&with(base(), "/rules/1/methodz", json!(["GET"])))
            .err()
            .ok_or("an unknown rule member")?;
        assert_eq!(
            err.to_string(),
            "rules[1].methodz: unknown field `methodz`, expected one of `match`, `methods`, \
             `require`, `forward`, `email_verified`, `acr`"
        );
        Ok(())
    }

    #[test]
    fn a_member_of_the_wrong_type_is_refused_with_its_path() -> crate::TestResult {
        let cases = [
            (
                with(base(), "/rules/1/methods/0", json!(5)),
                "rules[1].methods[0]",
            ),
            (with(base(), "/audiences/0", json!(1)), "audiences[0]"),
            (
                with(base(), "/claim_to_headers/2/claim_name", json!(["roles"])),
                "claim_to_headers[2].claim_name",
            ),
            (
                with(base(), "/from_cookies", json!("session")),
                "from_cookies",
            ),
            (
                with(base(), "/bypass_cors_preflight", json!("yes")),
                "bypass_cors_preflight",
            ),
            (
                with(full(), "/remote_jwks/timeout_ms", json!("2s")),
                "remote_jwks.timeout_ms",
            ),
            // An array is never read as an object by position, as serde's derive would.
            (with(base(), "/rules/2", json!(["/api/"])), "rules[2]"),
            (
                with(
                    full(),
                    "/remote_jwks",
                    json!(["auth_internal", "/internal/keys"]),
                ),
                "remote_jwks",
            ),
            (
                with(
                    base(),
                    "/from_headers",
                    json!([["authorization", "Bearer "]]),
                ),
                "from_headers[0]",
            ),
            (json!(["auth-service", ["api"]]), ""),
            (with(base(), "/cache_entries", json!(1.5)), "cache_entries"),
        ];
        for (value, field) in cases {
            let err = parse(&value).err().ok_or(field)?;
            assert_eq!(err.field, field, "{err}");
            assert!(err.message.starts_with("invalid type: "), "{err}");
        }
        let err = parse(&with(base(), "/rules/1/methods/0", json!(5)))
            .err()
            .ok_or("a method that is a number")?;
        assert_eq!(
            err.to_string(),
            "rules[1].methods[0]: invalid type: integer `5`, expected a string"
        );
        let err = parse(&with(base(), "/rules/2", json!(["/api/"])))
            .err()
            .ok_or("a rule that is a list")?;
        assert_eq!(
            err.to_string(),
            "rules[2]: invalid type: sequence, expected an object"
        );
        Ok(())
    }

    #[test]
    fn a_document_that_is_not_json_or_not_an_object_is_refused() -> crate::TestResult {
        for (input, reason) in [
            (&b"{"[..], "truncated json"),
            (b"[]", "an array"),
            (b"", "empty"),
        ] {
            assert!(FilterConfig::parse(input).is_err(), "{reason}");
        }
        Ok(())
    }

    #[test]
    fn validation_carries_issuer_audiences_skew_and_required_claims() -> crate::TestResult {
        let config = parse(&with(base(), "/clock_skew_seconds", json!(5)))?;
        let validation = config.validation();
        assert_eq!(validation.issuer.as_deref(), Some("auth-service"));
        assert_eq!(validation.audiences, Some(vec!["api".to_owned()]));
        assert_eq!(validation.leeway_secs, 5);
        assert_eq!(validation.required_claims, config.required_claims);
        assert_eq!(validation.required_typ.as_deref(), Some("at+jwt"));
        // By default the edge validates exactly as auth-api's `/validate` does.
        assert_eq!(
            validation,
            Validation::access_token("auth-service", &["api".to_owned()], 5)
        );
        Ok(())
    }
}
