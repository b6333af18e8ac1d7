//! The whole per-request decision, without the host: strip spoofable identity headers, match a
//! rule, let CORS preflights through, find and verify the token (through the cache), check it
//! against the revocation feed, check the rules' requirements (roles, a verified email, the
//! `acr`), and say which headers to set and remove, or which answer to send. `host.rs` reads
//! the request, calls [`decide`] and applies the [`Decision`]; nothing here talks to Envoy.

use std::fmt;
use std::rc::Rc;

use auth_jwt::{decode_with_verifier, ErrorKind, KeySet, Validation, Verifier};
use serde_json::{Map, Value};

use crate::cache::TokenCache;
use crate::config::FilterConfig;
use crate::identity::Identity;
use crate::policy::{self, Authorization, Presented, TokenError, TokenLocation};
use crate::response::{deny_response, is_grpc, DenyReason, DenyResponse};
use crate::revocations::{Revocations, StringClaim};

/// Headers an allowed request gets upstream: the verified identity's claim headers (shared with
/// the cache entry, not copied), and the `cookie` header without the token cookie.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeadersToSet {
    identity: Option<Rc<Identity>>,
    cookie: Option<String>,
}

impl HeadersToSet {
    /// Every `(name, value)` to set.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.identity
            .iter()
            .flat_map(|i| i.claim_headers.iter())
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .chain(self.cookie.as_deref().map(|c| ("cookie", c)))
    }

    /// The pairs as owned strings, for tests.
    #[cfg(test)]
    pub(crate) fn to_vec(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect()
    }
}

/// Headers an allowed request loses upstream, in order: the client's identity headers as it
/// spelt them, the token headers, and `cookie` when only token cookies were in it. The names are
/// borrowed from the request and the configuration, and the usual single one (the token header)
/// is held without allocating.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeadersToRemove<'a> {
    first: Option<&'a str>,
    rest: Vec<&'a str>,
}

impl<'a> HeadersToRemove<'a> {
    fn push(&mut self, name: &'a str) {
        if self.first.is_none() {
            self.first = Some(name);
        } else {
            self.rest.push(name);
        }
    }

    /// Every name to remove, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.first.into_iter().chain(self.rest.iter().copied())
    }

    /// The names as owned strings, for tests.
    #[cfg(test)]
    pub(crate) fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_owned).collect()
    }
}

/// What `decide` needs to know about a request.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:path`, query string included.
    pub path: &'a str,
    /// All request headers, lowercase names, in order (repeated names repeated).
    pub headers: &'a [(String, String)],
}

/// How `decide` checks a token: the validation rules, and where signatures are verified
/// ([`auth_jwt::RustCrypto`], or inside Envoy the host's `verify_signature`).
#[derive(Clone, Copy)]
pub struct Verification<'a> {
    /// Algorithms, `typ`, issuer, audiences, clock skew, required claims.
    pub(crate) validation: &'a Validation,
    /// Checks each signature.
    pub(crate) verifier: &'a dyn Verifier,
}

impl<'a> Verification<'a> {
    /// `validation`, with signatures checked by `verifier`.
    pub fn new(validation: &'a Validation, verifier: &'a dyn Verifier) -> Self {
        Self {
            validation,
            verifier,
        }
    }
}

impl fmt::Debug for Verification<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verification")
            .field("validation", self.validation)
            .finish_non_exhaustive()
    }
}

/// What `decide` knows of the revocation feed.
#[derive(Clone, Copy, Debug)]
pub enum RevocationCheck<'a> {
    /// `remote_revocations` is not configured: no token is refused as revoked.
    Off,
    /// Configured, but no feed has been fetched yet: protected routes answer 503.
    NotLoaded,
    /// The last good feed.
    Loaded(&'a Revocations),
}

/// How an allowed request got through, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllowedBy {
    /// A public rule.
    Public,
    /// A verified token; `cache_hit` says whether the cache answered.
    Token {
        /// Whether the verified-token cache held the token.
        cache_hit: bool,
    },
}

/// What to do with a request; an allow borrows header names from the request and the
/// configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Forward it, after removing `headers_to_remove` and then setting `headers_to_set`.
    Allow {
        /// Headers to set (replacing any value), after the removals.
        headers_to_set: HeadersToSet,
        /// Headers to remove first: every `claim_to_headers` header, and the token header or
        /// cookie unless `forward` is set.
        headers_to_remove: HeadersToRemove<'a>,
        /// Why it passed.
        by: AllowedBy,
    },
    /// Answer locally.
    Deny {
        /// Why.
        reason: DenyReason,
        /// The answer to send.
        response: DenyResponse,
    },
}

/// Decides about one request at `now` (seconds since the Unix epoch). Tokens are checked as
/// `verification` says, with `keys`, which is `None` while no fresh key set is loaded; `revocations` is what this worker has of the revocation feed;
/// `cache` is the worker's verified-token cache, if any.
pub fn decide<'a>(
    request: &RequestView<'a>,
    config: &'a FilterConfig,
    verification: Verification<'_>,
    keys: Option<&KeySet>,
    revocations: RevocationCheck<'_>,
    cache: Option<&mut TokenCache>,
    now: u64,
) -> Decision<'a> {
    let scan = Scan::of(request.headers, config);
    // Identity headers from the client are removed on every request, public routes included,
    // so that upstreams can trust them; so are their spellings with `_` for `-`, which CGI,
    // WSGI, Rack and PHP servers read as the same header (`X_User_Roles` is HTTP_X_USER_ROLES).
    // Only those present are named: each removal is a call into Envoy, and usually there are
    // none.
    let mut headers_to_remove = scan.identity_headers;
    let grpc = is_grpc(scan.content_type);
    let deny = |reason: DenyReason| Decision::Deny {
        response: deny_response(&reason, &config.realm, grpc),
        reason,
    };

    // An upstream that honours a method override would run another method than the one the
    // rules matched (`POST` with `X-HTTP-Method-Override: DELETE`): such requests are refused
    // on every route.
    if scan.method_override {
        return deny(DenyReason::MethodOverride);
    }
    let Some(path) = policy::normalize_path(request.path) else {
        return deny(DenyReason::NoRoute);
    };
    let Some(matched) = policy::match_rule(request.method, &path, &config.rules) else {
        return deny(DenyReason::NoRoute);
    };
    let allow = |headers_to_remove, headers_to_set, by| Decision::Allow {
        headers_to_set,
        headers_to_remove,
        by,
    };
    // A preflight never needs a token, so it must never reach an upstream that might route it
    // without looking at the method: the gateway answers it (Envoy's CORS filter, before this
    // one), and one that gets this far is refused here, on every route.
    if config.bypass_cors_preflight
        && request.method == "OPTIONS"
        && scan.origin
        && scan.preflight_method
    {
        return deny(DenyReason::CorsPreflight);
    }
    let forward = matched.forward(config.forward);
    let mut headers_to_set = HeadersToSet::default();
    // Unless tokens are forwarded, every token location the request fills is emptied, whether
    // or not its token is the one checked (or, on public routes, checked at all): an upstream
    // never sees an unverified token.
    let mut cookies = Vec::new();
    let found = policy::find_token(request.headers, config, |location| {
        match (forward, location) {
            (true, _) => {}
            (false, TokenLocation::Header(name)) => headers_to_remove.push(name),
            (false, TokenLocation::Cookie(name)) => cookies.push(name),
        }
    });
    if !cookies.is_empty() {
        match policy::cookie_header_without(request.headers, &cookies) {
            Some(rest) => headers_to_set.cookie = Some(rest),
            None => headers_to_remove.push("cookie"),
        }
    }
    if matched.is_public() {
        return allow(headers_to_remove, headers_to_set, AllowedBy::Public);
    }

    let found = match found {
        Ok(found) => found,
        Err(TokenError::Missing) => return deny(DenyReason::MissingToken),
        Err(TokenError::Malformed(why)) => return deny(DenyReason::InvalidToken(why.to_owned())),
    };
    // The token's characters are checked only where the cache does not answer, in the same
    // order of refusals as if they were checked first: a cached token is byte for byte one that
    // passed this check (and then decoded as base64url, a narrower alphabet), and scanning a
    // token of several hundred bytes costs as much as the rest of a cache hit.
    let malformed = || {
        found
            .malformed()
            .map(|why| deny(DenyReason::InvalidToken(why.to_owned())))
    };
    let Some(keys) = keys else {
        return malformed().unwrap_or_else(|| deny(DenyReason::KeysUnavailable));
    };
    let revocations = match revocations {
        RevocationCheck::Off => None,
        // Without a feed, a revoked token cannot be told apart: fail closed, like without keys.
        RevocationCheck::NotLoaded => {
            return malformed().unwrap_or_else(|| deny(DenyReason::KeysUnavailable))
        }
        RevocationCheck::Loaded(revocations) => Some(revocations),
    };

    let mut cache = cache;
    let cached = cache
        .as_deref_mut()
        .and_then(|c| c.get(found.token, now, config.clock_skew_seconds));
    let cache_hit = cached.is_some();
    let identity = match cached {
        Some(identity) => identity,
        None => {
            if let Some(denial) = malformed() {
                return denial;
            }
            if let Some(reason) = cache.as_deref().and_then(|c| c.refusal(found.token, now)) {
                return deny(reason.clone());
            }
            match decode_with_verifier::<Map<String, Value>>(
                found.token,
                keys,
                verification.validation,
                now,
                verification.verifier,
            ) {
                Ok(data) => {
                    let identity = Rc::new(identity_of(&data.claims, config));
                    if let Some(c) = cache {
                        c.insert(found.token, Rc::clone(&identity));
                    }
                    identity
                }
                Err(err) => {
                    let reason = match err.kind() {
                        ErrorKind::UnknownKey => DenyReason::UnknownKey,
                        _ => DenyReason::InvalidToken(err.to_string()),
                    };
                    if let (Some(c), true) = (cache, worth_remembering(err.kind())) {
                        c.refuse(found.token, reason.clone(), now);
                    }
                    return deny(reason);
                }
            }
        }
    };

    // Checked on every request, cache hits included. The cache only remembers that a signature
    // verified, which a revocation does not change, so it never needs clearing for one.
    if revocations.is_some_and(|r| r.revokes(&identity.token_ids(), now, config.clock_skew_seconds))
    {
        return deny(DenyReason::Revoked);
    }
    // Every matched rule must be satisfied: the strictest wins. Decided afresh on every
    // request from the cached identity's claims, so a token that passed one rule is held to
    // the next rule's requirements all the same.
    let presented = Presented {
        roles: &identity.roles,
        acr: identity.acr.as_deref(),
        email_verified: identity.email_verified,
    };
    match policy::authorize(&matched, presented) {
        Authorization::Allow => {}
        Authorization::InsufficientScope(why) => return deny(DenyReason::InsufficientScope(why)),
        Authorization::EmailNotVerified => return deny(DenyReason::EmailNotVerified),
        Authorization::StepUp(acr_values) => {
            return deny(DenyReason::InsufficientUserAuthentication(acr_values))
        }
    }

    headers_to_set.identity = Some(identity);
    allow(
        headers_to_remove,
        headers_to_set,
        AllowedBy::Token { cache_hit },
    )
}

/// What `decide` reads from the request headers besides the token, in one pass: the client's
/// identity headers in any spelling, whether it asks for another method, its content type (a
/// gRPC client is answered in gRPC), and whether it looks like a CORS preflight.
#[derive(Debug, Default)]
struct Scan<'a> {
    identity_headers: HeadersToRemove<'a>,
    method_override: bool,
    content_type: Option<&'a str>,
    origin: bool,
    preflight_method: bool,
}

impl<'a> Scan<'a> {
    fn of(headers: &'a [(String, String)], config: &FilterConfig) -> Self {
        let mut scan = Self::default();
        let wanted = config
            .claim_to_headers
            .iter()
            .fold(FIXED_LENGTHS, |bits, c| bits | length_bit(&c.header_name));
        for (name, value) in headers {
            // Most headers are none of those looked for, and their length alone says so.
            if length_bit(name) & wanted == 0 {
                continue;
            }
            // Each test on its own: a configured name may also be one of the fixed ones.
            if config
                .claim_to_headers
                .iter()
                .any(|c| same_header_for_cgi(name, &c.header_name))
            {
                scan.identity_headers.push(name);
            }
            scan.method_override |= METHOD_OVERRIDE_HEADERS
                .iter()
                .any(|h| same_header_for_cgi(name, h));
            if scan.content_type.is_none() && name.eq_ignore_ascii_case(CONTENT_TYPE) {
                scan.content_type = Some(value);
            }
            scan.origin |= name.eq_ignore_ascii_case(ORIGIN);
            scan.preflight_method |= name.eq_ignore_ascii_case(PREFLIGHT_METHOD);
        }
        scan
    }
}

/// A bit for the length of `name`; lengths from 63 up share the last one. `_` for `-` and case
/// keep the length, so a header whose bit is not among those of the names looked for is none
/// of them.
const fn length_bit(name: &str) -> u64 {
    let len = name.len();
    1 << if len < 63 { len } else { 63 }
}

const CONTENT_TYPE: &str = "content-type";
const ORIGIN: &str = "origin";
const PREFLIGHT_METHOD: &str = "access-control-request-method";

/// The bits of the names `Scan` always looks for.
const FIXED_LENGTHS: u64 = length_bit(METHOD_OVERRIDE_HEADERS[0])
    | length_bit(METHOD_OVERRIDE_HEADERS[1])
    | length_bit(METHOD_OVERRIDE_HEADERS[2])
    | length_bit(CONTENT_TYPE)
    | length_bit(ORIGIN)
    | length_bit(PREFLIGHT_METHOD);

/// Headers through which some frameworks let a request claim another method (Rails, Laravel,
/// Express's method-override, ASP.NET, Google APIs).
const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Whether a refusal for `kind` is remembered: only those reached past the size and format
/// checks, at the key lookup or after it (so never a token over `max_token_len`, nor a
/// malformed one, which costs less to refuse again than to remember), and never one a later
/// clock could undo (`exp`, `nbf`, `iat`: `exp` because a host clock may step back).
fn worth_remembering(kind: &ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::UnknownKey
            | ErrorKind::KeyAlgorithmMismatch
            | ErrorKind::InvalidSignature
            | ErrorKind::MissingClaim(_)
            | ErrorKind::InvalidClaim(_)
            | ErrorKind::InvalidIssuer
            | ErrorKind::InvalidAudience
            | ErrorKind::InvalidClaims(_)
    )
}

/// The cacheable parts of verified claims: `exp`, the `claim_to_headers` values, what the rules
/// read (the roles, `acr` when it is a string, and whether `email_verified` is JSON `true`:
/// any other value, `"true"` included, reads as unverified), and `sub`, `sid` and `iat` for the
/// revocation check.
fn identity_of(claims: &Map<String, Value>, config: &FilterConfig) -> Identity {
    let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
    let claim_headers = config
        .claim_to_headers
        .iter()
        .filter_map(|c| {
            let value = header_value(claims.get(&c.claim_name)?)?;
            Some((c.header_name.clone(), value))
        })
        .collect();
    let roles = match claims.get(&config.roles_claim) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(role)) => vec![role.clone()],
        _ => Vec::new(),
    };
    Identity {
        exp,
        claim_headers,
        roles,
        acr: claims.get("acr").and_then(Value::as_str).map(str::to_owned),
        email_verified: claims.get("email_verified") == Some(&Value::Bool(true)),
        sub: StringClaim::of(claims, "sub"),
        sid: StringClaim::of(claims, "sid"),
        iat: claims.get("iat").and_then(whole_seconds),
    }
}

/// A NumericDate rounded down to whole seconds: `floor(iat) < not_before` exactly when
/// `iat < not_before` for a whole `not_before`. Past `i64::MAX` it saturates, which compares the
/// same way.
fn whole_seconds(value: &Value) -> Option<i64> {
    let Value::Number(n) = value else {
        return None;
    };
    n.as_i64()
        .or_else(|| n.as_u64().map(|_| i64::MAX))
        .or_else(|| n.as_f64().map(|f| f.floor() as i64))
}

/// A claim as a header value: strings as they are, numbers and booleans as JSON, arrays of
/// those joined with `,`. Objects, `null`, and values with control characters are left out.
fn header_value(value: &Value) -> Option<String> {
    let text = match value {
        Value::Array(items) => items
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()?
            .join(","),
        other => scalar(other)?,
    };
    (!text.chars().any(char::is_control)).then_some(text)
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Whether two header names are the same once `_` and `-` are not told apart, nor case.
fn same_header_for_cgi(a: &str, b: &str) -> bool {
    let fold = |c: u8| {
        if c == b'_' {
            b'-'
        } else {
            c.to_ascii_lowercase()
        }
    };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| fold(x) == fold(y))
}

#[cfg(test)]
mod tests {
    use auth_jwt::{encode, Algorithm, Header, Key, RustCrypto};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde_json::json;

    use super::*;
    use crate::config::tests::base;

    const NOW: u64 = 1_700_000_000;
    const SECRET: &[u8] = b"test-secret-test-secret-test-sec";

    fn config_with(edit: impl FnOnce(&mut Value)) -> crate::TestResult<FilterConfig> {
        let mut value = base();
        edit(&mut value);
        Ok(FilterConfig::parse(value.to_string().as_bytes())?)
    }

    fn keys() -> crate::TestResult<KeySet> {
        Ok([Key::hs256("k1", SECRET)?].into_iter().collect())
    }

    fn claims() -> Value {
        json!({
            "iss": "auth-service", "sub": "user-1", "aud": "api", "exp": NOW + 900, "iat": NOW,
            "jti": "j1", "sid": "s1", "client_id": "web", "email": "a@example.com",
            "roles": ["user", "editor"],
        })
    }

    fn token(claims: &Value) -> crate::TestResult<String> {
        let key = Key::hs256("k1", SECRET)?;
        Ok(encode(&Header::access_token(&key), claims, &key)?)
    }

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    /// `pairs` as request headers that outlive the decisions made on them, which borrow their
    /// names: leaked, a few bytes per call, in tests only.
    fn kept(pairs: impl IntoIterator<Item = (String, String)>) -> &'static [(String, String)] {
        Vec::leak(pairs.into_iter().collect())
    }

    fn run<'a>(
        config: &'a FilterConfig,
        method: &'a str,
        path: &'a str,
        headers: &[(&str, &str)],
        keys: Option<&KeySet>,
        cache: Option<&mut TokenCache>,
        now: u64,
    ) -> Decision<'a> {
        let headers = kept(
            headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
        );
        let view = RequestView {
            method,
            path,
            headers,
        };
        decide(
            &view,
            config,
            Verification::new(&config.validation(), &RustCrypto),
            keys,
            RevocationCheck::Off,
            cache,
            now,
        )
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    fn reason<'d>(decision: &'d Decision<'_>) -> Option<&'d DenyReason> {
        match decision {
            Decision::Deny { reason, .. } => Some(reason),
            Decision::Allow { .. } => None,
        }
    }

    #[test]
    fn a_valid_token_is_allowed_with_claim_headers_and_the_token_stripped() -> crate::TestResult {
        let config = config_with(|_| {})?;
        let auth = bearer(&token(&claims())?);
        let decision = run(
            &config,
            "GET",
            "/api/things?x=1",
            &[("authorization", &auth)],
            Some(&keys()?),
            None,
            NOW,
        );
        let Decision::Allow {
            headers_to_set,
            headers_to_remove,
            by,
        } = decision
        else {
            panic!("expected allow, got {decision:?}");
        };
        assert_eq!(by, AllowedBy::Token { cache_hit: false });
        assert_eq!(
            headers_to_set.to_vec(),
            [
                ("x-user-id".to_owned(), "user-1".to_owned()),
                ("x-user-email".to_owned(), "a@example.com".to_owned()),
                ("x-user-roles".to_owned(), "user,editor".to_owned()),
            ]
        );
        assert_eq!(
            headers_to_remove.to_vec(),
            ["authorization"],
            "no identity header was sent"
        );
        Ok(())
    }

    #[test]
    fn forward_true_keeps_the_token_header() -> crate::TestResult {
        let config = config_with(|v| v["forward"] = json!(true))?;
        let auth = bearer(&token(&claims())?);
        let decision = run(
            &config,
            "GET",
            "/api/x",
            &[("authorization", &auth)],
            Some(&keys()?),
            None,
            NOW,
        );
        let Decision::Allow {
            headers_to_remove, ..
        } = decision
        else {
            panic!("{decision:?}")
        };
        assert!(!headers_to_remove
            .to_vec()
            .contains(&"authorization".to_owned()));
        Ok(())
    }

    #[test]
    fn a_token_cookie_is_removed_from_the_cookie_header() -> crate::TestResult {
        let config = config_with(|v| v["from_cookies"] = json!(["access_token"]))?;
        let cookie = format!("theme=dark; access_token={}", token(&claims())?);
        let decision = run(
            &config,
            "GET",
            "/api/x",
            &[("cookie", &cookie)],
            Some(&keys()?),
            None,
            NOW,
        );
        let Decision::Allow { headers_to_set, .. } = decision else {
            panic!("{decision:?}")
        };
        assert!(headers_to_set
            .to_vec()
            .contains(&("cookie".to_owned(), "theme=dark".to_owned())));
        Ok(())
    }

    #[test]
    fn spoofed_identity_headers_are_removed_on_every_route() -> crate::TestResult {
        let config = config_with(|_| {})?;
        let spoof = [
            ("x-user-id", "admin"),
            ("x-user-roles", "admin"),
            ("x_user_roles", "admin"),
            ("X_User_Email", "root@example.com"),
        ];
        for (path, reason) in [
            ("/auth/login", "public route"),
            ("/api/x", "protected route"),
        ] {
            let auth = bearer(&token(&claims())?);
            let mut headers = spoof.to_vec();
            headers.push(("authorization", &auth));
            let decision = run(&config, "POST", path, &headers, Some(&keys()?), None, NOW);
            let Decision::Allow {
                headers_to_remove, ..
            } = decision
            else {
                panic!("{reason}: {decision:?}")
            };
            for name in ["x-user-id", "x-user-roles", "x_user_roles", "X_User_Email"] {
                assert!(
                    headers_to_remove.to_vec().contains(&name.to_owned()),
                    "{reason}: {name}"
                );
            }
            // Absent headers need no call into Envoy to remove them.
            assert!(
                !headers_to_remove
                    .to_vec()
                    .contains(&"x-user-email".to_owned()),
                "{reason}"
            );
        }
        Ok(())
    }

    /// What an allow decision removes, sets, and why it allowed.
    type Allowed = (Vec<String>, Vec<(String, String)>, AllowedBy);

    /// The headers an allow decision removes and sets.
    fn allowed(decision: Decision<'_>) -> crate::TestResult<Allowed> {
        match decision {
            Decision::Allow {
                headers_to_set,
                headers_to_remove,
                by,
            } => Ok((headers_to_remove.to_vec(), headers_to_set.to_vec(), by)),
            Decision::Deny { reason, .. } => Err(format!("denied: {reason:?}").into()),
        }
    }

    #[test]
    fn public_routes_need_no_token_and_strip_an_unverified_one_unless_forwarded(
    ) -> crate::TestResult {
        let config = config_with(|v| v["from_cookies"] = json!(["access_token"]))?;
        let sent = [
            ("authorization", "Bearer garbage"),
            ("cookie", "a=1; access_token=garbage"),
        ];
        let (removed, set, by) =
            allowed(run(&config, "POST", "/auth/logout", &sent, None, None, NOW))?;
        assert_eq!(by, AllowedBy::Public);
        assert!(removed.contains(&"authorization".to_owned()), "{removed:?}");
        assert_eq!(set, vec![("cookie".to_owned(), "a=1".to_owned())]);

        // A rule may forward the token (auth-api's routes: its /logout takes one).
        let forwarding = config_with(|v| {
            v["from_cookies"] = json!(["access_token"]);
            v["rules"][0]["forward"] = json!(true);
        })?;
        let (removed, set, _) = allowed(run(
            &forwarding,
            "POST",
            "/auth/logout",
            &sent,
            None,
            None,
            NOW,
        ))?;
        assert!(!removed.contains(&"authorization".to_owned()));
        assert!(set.is_empty());
        // `Basic` credentials are not a token location.
        let (removed, _, _) = allowed(run(
            &config,
            "GET",
            "/auth/x",
            &[("authorization", "Basic dXNlcjpwYXNz")],
            None,
            None,
            NOW,
        ))?;
        assert!(removed.is_empty());
        Ok(())
    }

    #[test]
    fn a_second_token_location_is_stripped_with_the_checked_one() -> crate::TestResult {
        let config = config_with(|v| v["from_cookies"] = json!(["access_token"]))?;
        let auth = format!("Bearer {}", token(&claims())?);
        let (removed, set, _) = allowed(run(
            &config,
            "GET",
            "/api/x",
            &[
                ("authorization", &auth),
                ("cookie", "access_token=unverified; theme=dark"),
            ],
            Some(&keys()?),
            None,
            NOW,
        ))?;
        assert!(removed.contains(&"authorization".to_owned()), "{removed:?}");
        assert!(
            set.contains(&("cookie".to_owned(), "theme=dark".to_owned())),
            "the unverified cookie token is gone: {set:?}"
        );
        Ok(())
    }

    #[test]
    fn method_override_headers_are_refused_on_every_route() -> crate::TestResult {
        let config = config_with(|_| {})?;
        for (name, path) in [
            ("x-http-method-override", "/auth/login"),
            ("X-HTTP-Method", "/api/x"),
            ("x-method-override", "/healthz"),
            ("x_http_method_override", "/auth/login"),
        ] {
            let decision = run(&config, "POST", path, &[(name, "DELETE")], None, None, NOW);
            assert_eq!(
                reason(&decision),
                Some(&DenyReason::MethodOverride),
                "{name}"
            );
        }
        Ok(())
    }

    #[test]
    fn the_strictest_rule_under_any_reading_of_the_path_decides() -> crate::TestResult {
        let config = config_with(|_| {})?;
        let user = format!("Bearer {}", token(&claims())?);
        for path in ["/api/Admin/x", "/API/ADMIN", "/api/admin"] {
            let decision = run(
                &config,
                "GET",
                path,
                &[("authorization", &user)],
                Some(&keys()?),
                None,
                NOW,
            );
            assert!(
                matches!(reason(&decision), Some(DenyReason::InsufficientScope(_))),
                "{path}: {decision:?}"
            );
        }
        for path in ["/Auth/signup", "/AUTH/x", "/auth", "/HEALTHZ"] {
            let decision = run(&config, "GET", path, &[], None, None, NOW);
            assert_eq!(reason(&decision), Some(&DenyReason::NoRoute), "{path}");
        }
        Ok(())
    }

    /// `base()` with `/step/` requiring `acr` aal2 and `/verified/` a verified email, before
    /// the wider `/api/` rule.
    fn config_with_claim_rules() -> crate::TestResult<FilterConfig> {
        config_with(|v| {
            v["rules"] = json!([
                {"match": {"prefix": "/api/step/"}, "require": "authenticated", "acr": ["aal2"]},
                {"match": {"prefix": "/api/verified/"}, "require": "authenticated",
                 "email_verified": true},
                {"match": {"prefix": "/api/both/"}, "require": {"roles": ["editor"]},
                 "acr": ["aal3", "aal2"], "email_verified": true},
                {"match": {"prefix": "/api/"}, "require": "authenticated"}
            ]);
        })
    }

    /// A bearer token of `claims()` with `name` set to `value` (removed when `value` is null).
    fn bearer_with(edits: &[(&str, Value)]) -> crate::TestResult<String> {
        let mut c = claims();
        for (name, value) in edits {
            match (c.as_object_mut(), value) {
                (Some(map), Value::Null) => {
                    map.remove(*name);
                }
                (Some(map), value) => {
                    map.insert((*name).to_owned(), value.clone());
                }
                (None, _) => return Err("claims are an object".into()),
            }
        }
        Ok(bearer(&token(&c)?))
    }

    /// A GET of `path` with `authorization`, the keys, no cache, at `NOW`.
    fn get<'a>(
        config: &'a FilterConfig,
        path: &'a str,
        authorization: &str,
    ) -> crate::TestResult<Decision<'a>> {
        let headers = [("authorization", authorization)];
        Ok(run(
            config,
            "GET",
            path,
            &headers,
            Some(&keys()?),
            None,
            NOW,
        ))
    }

    fn status_and_challenge(decision: &Decision<'_>) -> Option<(u32, String, Value)> {
        match decision {
            Decision::Deny {
                response:
                    DenyResponse::Http {
                        status,
                        headers,
                        body,
                    },
                ..
            } => Some((
                *status,
                headers
                    .iter()
                    .find(|(n, _)| n == "www-authenticate")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default(),
                serde_json::from_str(body).ok()?,
            )),
            _ => None,
        }
    }

    #[test]
    fn an_acr_rule_lets_through_only_listed_string_acr_claims() -> crate::TestResult {
        let config = config_with_claim_rules()?;
        let step_up = Some(DenyReason::InsufficientUserAuthentication(vec![
            "aal2".to_owned()
        ]));
        let cases = [
            (json!("aal2"), None, "the required level"),
            (json!("aal1"), step_up.clone(), "one factor"),
            (Value::Null, step_up.clone(), "no acr claim"),
            (json!(""), step_up.clone(), "empty"),
            (json!("AAL2"), step_up.clone(), "another case"),
            (json!(["aal2"]), step_up.clone(), "an array holding it"),
            (json!(2), step_up.clone(), "a number"),
            (json!(true), step_up.clone(), "a boolean"),
            (json!({"aal2": true}), step_up.clone(), "an object"),
            (json!("aal2\u{0}"), step_up.clone(), "a NUL after it"),
            (json!("x".repeat(4096)), step_up.clone(), "a long string"),
        ];
        for (acr, expected, why) in cases {
            let auth = bearer_with(&[("acr", acr)])?;
            let decision = get(&config, "/api/step/x", &auth)?;
            assert_eq!(reason(&decision), expected.as_ref(), "{why}: {decision:?}");
            let elsewhere = get(&config, "/api/x", &auth)?;
            assert_eq!(reason(&elsewhere), None, "{why}: other routes ask nothing");
        }
        Ok(())
    }

    #[test]
    fn an_email_verified_rule_lets_through_only_json_true() -> crate::TestResult {
        let config = config_with_claim_rules()?;
        let refused = Some(DenyReason::EmailNotVerified);
        let cases = [
            (json!(true), None, "verified"),
            (json!(false), refused.clone(), "not verified"),
            (Value::Null, refused.clone(), "no claim"),
            (json!("true"), refused.clone(), "the string \"true\""),
            (json!(1), refused.clone(), "a number"),
            (json!([true]), refused.clone(), "an array"),
            (json!({}), refused.clone(), "an object"),
        ];
        for (email_verified, expected, why) in cases {
            let auth = bearer_with(&[("email_verified", email_verified)])?;
            let decision = get(&config, "/api/verified/x", &auth)?;
            assert_eq!(reason(&decision), expected.as_ref(), "{why}: {decision:?}");
        }
        Ok(())
    }

    #[test]
    fn claim_rule_refusals_are_answered_as_rfc_6750_and_rfc_9470_say() -> crate::TestResult {
        let config = config_with_claim_rules()?;
        let aal1 = bearer_with(&[("acr", json!("aal1")), ("email_verified", json!(true))])?;
        let unverified = bearer_with(&[("acr", json!("aal2")), ("email_verified", json!(false))])?;
        let cases = [
            (
                "/api/step/x",
                &aal1,
                401,
                "Bearer realm=\"auth-service\", error=\"insufficient_user_authentication\", \
                 error_description=\"requires a stronger authentication (acr aal2)\", \
                 acr_values=\"aal2\"",
                json!({"error": "insufficient_user_authentication",
                       "message": "requires a stronger authentication (acr aal2)"}),
            ),
            (
                "/api/both/x",
                &aal1,
                401,
                "Bearer realm=\"auth-service\", error=\"insufficient_user_authentication\", \
                 error_description=\"requires a stronger authentication (acr one of aal3, \
                 aal2)\", acr_values=\"aal3 aal2\"",
                json!({"error": "insufficient_user_authentication",
                       "message": "requires a stronger authentication (acr one of aal3, aal2)"}),
            ),
            (
                "/api/verified/x",
                &unverified,
                403,
                "Bearer realm=\"auth-service\", error=\"insufficient_scope\", \
                 error_description=\"requires a verified email\"",
                json!({"error": "email_not_verified", "message": "requires a verified email"}),
            ),
        ];
        for (path, auth, status, challenge, body) in cases {
            let decision = get(&config, path, auth)?;
            assert_eq!(
                status_and_challenge(&decision),
                Some((status, challenge.to_owned(), body)),
                "{path}"
            );
            let grpc = run(
                &config,
                "POST",
                path,
                &[
                    ("authorization", auth),
                    ("content-type", "application/grpc"),
                ],
                Some(&keys()?),
                None,
                NOW,
            );
            let Decision::Deny {
                response:
                    DenyResponse::Grpc {
                        status: grpc_status,
                        metadata,
                        ..
                    },
                ..
            } = grpc
            else {
                panic!("{path}: expected a grpc denial, got {grpc:?}");
            };
            assert_eq!(
                grpc_status,
                if status == 401 { 16 } else { 7 },
                "{path}: UNAUTHENTICATED or PERMISSION_DENIED"
            );
            assert_eq!(
                metadata,
                [("www-authenticate".to_owned(), challenge.to_owned())],
                "{path}"
            );
        }
        Ok(())
    }

    #[test]
    fn a_role_is_checked_before_the_email_and_the_email_before_the_acr() -> crate::TestResult {
        let config = config_with_claim_rules()?;
        let cases = [
            (
                vec![("roles", json!(["user"]))],
                Some(DenyReason::InsufficientScope(
                    "requires one of the roles: editor".to_owned(),
                )),
                "no role: stepping up would not help",
            ),
            (
                vec![],
                Some(DenyReason::EmailNotVerified),
                "the role, but no verified email and no acr",
            ),
            (
                vec![("email_verified", json!(true))],
                Some(DenyReason::InsufficientUserAuthentication(vec![
                    "aal3".to_owned(),
                    "aal2".to_owned(),
                ])),
                "only the acr is missing",
            ),
            (
                vec![("email_verified", json!(true)), ("acr", json!("aal3"))],
                None,
                "everything",
            ),
        ];
        for (edits, expected, why) in cases {
            let auth = bearer_with(&edits)?;
            let decision = get(&config, "/api/both/x", &auth)?;
            assert_eq!(reason(&decision), expected.as_ref(), "{why}: {decision:?}");
        }
        Ok(())
    }

    #[test]
    fn the_rules_of_another_reading_of_the_path_ask_for_their_acr_too() -> crate::TestResult {
        let config = config_with_claim_rules()?;
        let auth = bearer_with(&[("acr", json!("aal1"))])?;
        // `/api/Step/x` matches `/api/` as written and `/api/step/` in another case.
        for path in ["/api/Step/x", "/API/STEP/x", "/api/step"] {
            let decision = get(&config, path, &auth)?;
            assert_eq!(
                reason(&decision),
                Some(&DenyReason::InsufficientUserAuthentication(vec![
                    "aal2".to_owned()
                ])),
                "{path}"
            );
        }
        Ok(())
    }

    #[test]
    fn a_cached_token_is_held_to_each_routes_requirements() -> crate::TestResult {
        let config = config_with_claim_rules()?;
        let mut cache = TokenCache::new(8);
        let auth = bearer_with(&[("acr", json!("aal1")), ("email_verified", json!(false))])?;
        let key_set = keys()?;
        // Each route in turn, twice round: every request after the first is a cache hit, and
        // each route answers as it did on a miss, whichever route the token passed before.
        let routes = [
            ("/api/x", None),
            (
                "/api/step/x",
                Some(DenyReason::InsufficientUserAuthentication(vec![
                    "aal2".to_owned()
                ])),
            ),
            ("/api/x", None),
            ("/api/verified/x", Some(DenyReason::EmailNotVerified)),
            ("/api/other", None),
        ];
        for round in 0..2 {
            for (i, (path, expected)) in routes.iter().enumerate() {
                let decision = run(
                    &config,
                    "GET",
                    path,
                    &[("authorization", &auth)],
                    Some(&key_set),
                    Some(&mut cache),
                    NOW,
                );
                assert_eq!(
                    reason(&decision),
                    expected.as_ref(),
                    "round {round}, {path}"
                );
                if let Decision::Allow { by, .. } = decision {
                    assert_eq!(
                        by,
                        AllowedBy::Token {
                            cache_hit: round > 0 || i > 0
                        },
                        "round {round}, {path}"
                    );
                }
            }
        }
        assert_eq!(cache.len(), 1, "one token, one entry");
        assert_eq!(
            cache.refused_len(),
            0,
            "a rule's refusal is not the token's"
        );
        Ok(())
    }

    #[test]
    fn forged_and_broken_tokens_are_invalid_tokens() -> crate::TestResult {
        let config = config_with(|_| {})?;
        let valid = token(&claims())?;
        let (head, rest) = valid.split_once('.').ok_or("expected a value")?;
        let (payload, signature) = rest.split_once('.').ok_or("expected a value")?;
        let mut tampered_claims = claims();
        tampered_claims["sub"] = json!("admin");
        let tampered = format!("{head}.{}.{signature}", b64(&tampered_claims.to_string()));
        let alg_none = format!(
            "{}.{payload}.",
            b64(r#"{"alg":"none","typ":"at+jwt","kid":"k1"}"#)
        );
        let other = Key::hs256("k1", &[7; 32])?;
        let other_key = encode(&Header::access_token(&other), &claims(), &other)?;
        let k9 = Key::hs256("k9", SECRET)?;
        let unknown_kid = encode(&Header::access_token(&k9), &claims(), &k9)?;
        let with = |name: &str, value: Value| -> crate::TestResult<String> {
            let mut c = claims();
            c[name] = value;
            token(&c)
        };
        let without = |name: &str| -> crate::TestResult<String> {
            let mut c = claims();
            if let Some(claims) = c.as_object_mut() {
                claims.remove(name);
            }
            token(&c)
        };
        let cases = [
            (alg_none, "alg none"),
            (tampered, "payload changed after signing"),
            (
                format!("{head}.{payload}.{}", &signature[..10]),
                "signature truncated",
            ),
            (other_key, "signed with another secret"),
            (unknown_kid, "unknown kid"),
            (with("exp", json!(NOW - 61))?, "expired beyond the skew"),
            (with("aud", json!("other"))?, "wrong audience"),
            (with("aud", json!([]))?, "empty audience"),
            (
                with("iss", json!("auth-service/"))?,
                "issuer with a trailing slash",
            ),
            (with("nbf", json!(NOW + 120))?, "not valid yet"),
            (without("sub")?, "no subject"),
            (without("exp")?, "no expiry"),
            (format!("{head}.{payload}"), "two segments"),
        ];
        for (token, why) in cases {
            let auth = bearer(&token);
            let decision = run(
                &config,
                "GET",
                "/api/x",
                &[("authorization", &auth)],
                Some(&keys()?),
                None,
                NOW,
            );
            let expected = if why == "unknown kid" {
                matches!(reason(&decision), Some(DenyReason::UnknownKey))
            } else {
                matches!(reason(&decision), Some(DenyReason::InvalidToken(_)))
            };
            assert!(expected, "{why}: {decision:?}");
            let Decision::Deny {
                response:
                    DenyResponse::Http {
                        status, headers, ..
                    },
                ..
            } = decision
            else {
                panic!("{why}: expected an http denial");
            };
            assert_eq!(status, 401, "{why}");
            let challenge = &headers
                .iter()
                .find(|(n, _)| n == "www-authenticate")
                .ok_or("expected a value")?
                .1;
            assert!(
                challenge.contains("error=\"invalid_token\""),
                "{why}: {challenge}"
            );
        }
        Ok(())
    }

    #[test]
    fn missing_and_malformed_tokens_are_told_apart() -> crate::TestResult {
        let config = config_with(|_| {})?;
        type Case<'a> = (&'a [(&'a str, &'a str)], DenyReason, &'a str);
        let cases: [Case<'_>; 3] = [
            (&[], DenyReason::MissingToken, "no header"),
            (
                &[("authorization", "Basic dXNlcjpwYXNz")],
                DenyReason::MissingToken,
                "basic auth",
            ),
            (
                &[("authorization", "Bearer  abc")],
                DenyReason::InvalidToken("the bearer token is malformed".to_owned()),
                "two spaces",
            ),
        ];
        for (headers, expected, why) in cases {
            let decision = run(&config, "GET", "/api/x", headers, Some(&keys()?), None, NOW);
            assert_eq!(reason(&decision), Some(&expected), "{why}");
        }
        Ok(())
    }

    #[test]
    fn a_malformed_token_is_told_before_missing_keys_or_feed_and_never_taken_for_a_hit(
    ) -> crate::TestResult {
        let config = config_with(|_| {})?;
        let valid = token(&claims())?;
        let garbage = format!("Bearer {valid} x");
        let malformed = DenyReason::InvalidToken("the bearer token is malformed".to_owned());
        let without_keys = run(
            &config,
            "GET",
            "/api/x",
            &[("authorization", &garbage)],
            None,
            None,
            NOW,
        );
        assert_eq!(reason(&without_keys), Some(&malformed), "without keys");
        let without_feed = run_checked(&config, &garbage, RevocationCheck::NotLoaded, None, NOW);
        assert_eq!(reason(&without_feed), Some(&malformed), "without a feed");

        let mut cache = TokenCache::new(8);
        for (authorization, expected, why) in [
            (bearer(&valid), None, "verified and cached"),
            (
                garbage.clone(),
                Some(&malformed),
                "the cached token with garbage after it",
            ),
            (bearer(&valid), None, "the cached token itself"),
        ] {
            let decision = run_checked(
                &config,
                &authorization,
                RevocationCheck::Off,
                Some(&mut cache),
                NOW,
            );
            assert_eq!(reason(&decision), expected, "{why}");
        }
        Ok(())
    }

    #[test]
    fn removals_list_identity_headers_then_token_headers_then_the_cookie() -> crate::TestResult {
        let config = config_with(|v| v["from_cookies"] = json!(["access_token"]))?;
        let auth = bearer(&token(&claims())?);
        let (removed, set, _) = allowed(run(
            &config,
            "GET",
            "/api/x",
            &[
                ("X_User_Roles", "admin"),
                ("authorization", &auth),
                ("cookie", "access_token=unverified"),
                ("x-user-id", "admin"),
            ],
            Some(&keys()?),
            None,
            NOW,
        ))?;
        assert_eq!(
            removed,
            ["X_User_Roles", "x-user-id", "authorization", "cookie"],
            "request order, then configuration order"
        );
        assert!(
            set.iter().all(|(name, _)| name != "cookie"),
            "nothing left of the cookie header: {set:?}"
        );
        Ok(())
    }

    #[test]
    fn role_rules_deny_with_insufficient_scope() -> crate::TestResult {
        let config = config_with(|_| {})?;
        let user = bearer(&token(&claims())?);
        let mut admin_claims = claims();
        admin_claims["roles"] = json!(["admin"]);
        let admin = bearer(&token(&admin_claims)?);
        let denied = run(
            &config,
            "GET",
            "/api/admin/users",
            &[("authorization", &user)],
            Some(&keys()?),
            None,
            NOW,
        );
        assert!(matches!(
            reason(&denied),
            Some(DenyReason::InsufficientScope(_))
        ));
        let allowed = run(
            &config,
            "GET",
            "/api/admin/users",
            &[("authorization", &admin)],
            Some(&keys()?),
            None,
            NOW,
        );
        assert!(matches!(allowed, Decision::Allow { .. }));
        let sneaky = run(
            &config,
            "GET",
            "/api/%61dmin/users",
            &[("authorization", &user)],
            Some(&keys()?),
            None,
            NOW,
        );
        assert!(
            matches!(reason(&sneaky), Some(DenyReason::InsufficientScope(_))),
            "encoded path still hits the admin rule"
        );
        let dotted = run(
            &config,
            "GET",
            "/api/x/../admin/users",
            &[("authorization", &user)],
            Some(&keys()?),
            None,
            NOW,
        );
        assert_eq!(
            reason(&dotted),
            Some(&DenyReason::NoRoute),
            "dot segments are refused"
        );
        Ok(())
    }

    #[test]
    fn unmatched_requests_are_denied_even_with_a_valid_token() -> crate::TestResult {
        let config = config_with(|_| {})?;
        let auth = bearer(&token(&claims())?);
        let decision = run(
            &config,
            "GET",
            "/elsewhere",
            &[("authorization", &auth)],
            Some(&keys()?),
            None,
            NOW,
        );
        assert_eq!(reason(&decision), Some(&DenyReason::NoRoute));
        let Decision::Deny {
            response: DenyResponse::Http {
                status, headers, ..
            },
            ..
        } = decision
        else {
            panic!()
        };
        assert_eq!(status, 403);
        assert!(headers.iter().all(|(n, _)| n != "www-authenticate"));
        Ok(())
    }

    #[test]
    fn without_keys_protected_routes_fail_closed_with_503() -> crate::TestResult {
        let config = config_with(|_| {})?;
        let auth = bearer(&token(&claims())?);
        let decision = run(
            &config,
            "GET",
            "/api/x",
            &[("authorization", &auth)],
            None,
            None,
            NOW,
        );
        assert_eq!(reason(&decision), Some(&DenyReason::KeysUnavailable));
        let public = run(&config, "GET", "/auth/login", &[], None, None, NOW);
        assert!(
            matches!(public, Decision::Allow { .. }),
            "public routes do not need keys"
        );
        Ok(())
    }

    #[test]
    fn cors_preflights_are_never_forwarded_when_enabled() -> crate::TestResult {
        let preflight = [
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
        ];
        let config = config_with(|v| v["bypass_cors_preflight"] = json!(true))?;
        let decision = run(
            &config,
            "OPTIONS",
            "/api/x",
            &preflight,
            Some(&keys()?),
            None,
            NOW,
        );
        assert_eq!(
            reason(&decision),
            Some(&DenyReason::CorsPreflight),
            "answered here, not forwarded"
        );
        let public = run(
            &config,
            "OPTIONS",
            "/auth/login",
            &preflight,
            None,
            None,
            NOW,
        );
        assert_eq!(
            reason(&public),
            Some(&DenyReason::CorsPreflight),
            "public routes too"
        );
        let uncovered = run(
            &config,
            "OPTIONS",
            "/nowhere",
            &preflight,
            Some(&keys()?),
            None,
            NOW,
        );
        assert_eq!(reason(&uncovered), Some(&DenyReason::NoRoute));
        let no_origin = run(
            &config,
            "OPTIONS",
            "/api/x",
            &preflight[1..],
            Some(&keys()?),
            None,
            NOW,
        );
        assert_eq!(
            reason(&no_origin),
            Some(&DenyReason::MissingToken),
            "not a preflight without origin"
        );
        // Off by default, as in jwt_authn.
        let default = config_with(|_| {})?;
        let decision = run(
            &default,
            "OPTIONS",
            "/api/x",
            &preflight,
            Some(&keys()?),
            None,
            NOW,
        );
        assert_eq!(reason(&decision), Some(&DenyReason::MissingToken));
        Ok(())
    }

    #[test]
    fn the_cache_answers_repeats_and_rechecks_expiry() -> crate::TestResult {
        let config = config_with(|_| {})?;
        let mut cache = TokenCache::new(8);
        let mut c = claims();
        c["exp"] = json!(NOW + 10);
        let auth = bearer(&token(&c)?);
        let headers = [("authorization", auth.as_str())];
        let first = run(
            &config,
            "GET",
            "/api/x",
            &headers,
            Some(&keys()?),
            Some(&mut cache),
            NOW,
        );
        assert!(matches!(
            first,
            Decision::Allow {
                by: AllowedBy::Token { cache_hit: false },
                ..
            }
        ));
        let second = run(
            &config,
            "GET",
            "/api/x",
            &headers,
            Some(&keys()?),
            Some(&mut cache),
            NOW + 1,
        );
        assert!(matches!(
            second,
            Decision::Allow {
                by: AllowedBy::Token { cache_hit: true },
                ..
            }
        ));
        assert_eq!(
            first_headers(&first),
            first_headers(&second),
            "a hit sets the same headers"
        );
        let expired = run(
            &config,
            "GET",
            "/api/x",
            &headers,
            Some(&keys()?),
            Some(&mut cache),
            NOW + 71,
        );
        assert!(
            matches!(reason(&expired), Some(DenyReason::InvalidToken(_))),
            "exp re-checked on a hit"
        );
        Ok(())
    }

    /// `RustCrypto`, counting the signatures it is asked to check.
    #[derive(Default)]
    struct Counting(std::cell::Cell<usize>);

    impl Verifier for Counting {
        fn verify(&self, key: &Key, message: &[u8], signature: &[u8]) -> auth_jwt::Result<()> {
            self.0.set(self.0.get() + 1);
            RustCrypto.verify(key, message, signature)
        }
    }

    /// `decide` on `GET /api/x` with `token` as the bearer token.
    fn verdict(
        token: &str,
        keys: &KeySet,
        verifier: &Counting,
        cache: &mut TokenCache,
        now: u64,
    ) -> crate::TestResult<Decision<'static>> {
        // Leaked with the headers, for the decision to borrow.
        let config: &'static FilterConfig = Box::leak(Box::new(config_with(|_| {})?));
        let headers = kept([("authorization".to_owned(), bearer(token))]);
        let view = RequestView {
            method: "GET",
            path: "/api/x",
            headers,
        };
        Ok(decide(
            &view,
            config,
            Verification::new(&config.validation(), verifier),
            Some(keys),
            RevocationCheck::Off,
            Some(cache),
            now,
        ))
    }

    #[test]
    fn a_refused_token_is_answered_from_the_cache_until_the_key_set_changes() -> crate::TestResult {
        let keys = keys()?;
        let verifier = Counting::default();
        let mut cache = TokenCache::new(8);
        cache.set_key_version(Some(1));
        let good = token(&claims())?;
        let (signing_input, _) = good.rsplit_once('.').ok_or("three segments")?;
        let forged = format!(
            "{signing_input}.{}",
            b64("thirty-two bytes, and all wrong!")
        );
        let first = verdict(&forged, &keys, &verifier, &mut cache, NOW)?;
        assert!(matches!(reason(&first), Some(DenyReason::InvalidToken(_))));
        assert_eq!(verifier.0.get(), 1);
        let again = verdict(&forged, &keys, &verifier, &mut cache, NOW + 1)?;
        assert_eq!(reason(&again), reason(&first), "the same answer");
        assert_eq!(verifier.0.get(), 1, "without verifying again");

        // The signature of a refused token on another payload is verified afresh.
        let mut c = claims();
        c["sub"] = json!("user-2");
        let other = token(&c)?;
        let (other_input, _) = other.rsplit_once('.').ok_or("three segments")?;
        let (_, forged_signature) = forged.rsplit_once('.').ok_or("three segments")?;
        let reused = format!("{other_input}.{forged_signature}");
        verdict(&reused, &keys, &verifier, &mut cache, NOW)?;
        assert_eq!(verifier.0.get(), 2, "another token, verified");

        cache.set_key_version(Some(2));
        verdict(&forged, &keys, &verifier, &mut cache, NOW)?;
        assert_eq!(verifier.0.get(), 3, "a new key set verifies it again");
        Ok(())
    }

    #[test]
    fn an_unknown_kid_is_remembered_and_answered_as_unknown() -> crate::TestResult {
        let verifier = Counting::default();
        let mut cache = TokenCache::new(8);
        let other = Key::hs256("k9", SECRET)?;
        let unknown = encode(&Header::access_token(&other), &claims(), &other)?;
        for _ in 0..2 {
            let decision = verdict(&unknown, &keys()?, &verifier, &mut cache, NOW)?;
            assert_eq!(reason(&decision), Some(&DenyReason::UnknownKey));
        }
        assert_eq!(cache.refused_len(), 1);
        Ok(())
    }

    #[test]
    fn malformed_and_oversized_tokens_are_never_remembered() -> crate::TestResult {
        let keys = keys()?;
        let verifier = Counting::default();
        let mut cache = TokenCache::new(8);
        let oversized = "A".repeat(60_000);
        let good = token(&claims())?;
        let (header, _) = good.split_once('.').ok_or("three segments")?;
        let bad_base64 = format!("{header}.!!!.AAAA");
        for token in [oversized.as_str(), "no-dots-at-all", bad_base64.as_str()] {
            let decision = verdict(token, &keys, &verifier, &mut cache, NOW)?;
            assert!(matches!(
                reason(&decision),
                Some(DenyReason::InvalidToken(_))
            ));
        }
        assert_eq!(cache.refused_len(), 0);
        Ok(())
    }

    #[test]
    fn refusals_a_later_clock_could_undo_are_never_remembered() -> crate::TestResult {
        let keys = keys()?;
        let verifier = Counting::default();
        let mut cache = TokenCache::new(8);
        let mut early = claims();
        early["nbf"] = json!(NOW + 100);
        let early = token(&early)?;
        let mut expired = claims();
        expired["exp"] = json!(NOW - 1000);
        let expired = token(&expired)?;
        for token in [&early, &expired] {
            let decision = verdict(token, &keys, &verifier, &mut cache, NOW)?;
            assert!(matches!(
                reason(&decision),
                Some(DenyReason::InvalidToken(_))
            ));
        }
        assert_eq!(cache.refused_len(), 0);
        let later = verdict(&early, &keys, &verifier, &mut cache, NOW + 200)?;
        assert!(
            matches!(later, Decision::Allow { .. }),
            "valid once nbf passes"
        );
        Ok(())
    }

    #[test]
    fn every_algorithm_verifies_and_the_cache_spares_the_host_on_repeats() -> crate::TestResult {
        use crate::crypto::tests::{key, Behaviour, MockHost};
        use crate::crypto::HostCrypto;

        let keys = Algorithm::ALL
            .iter()
            .map(|&alg| key(alg))
            .collect::<Result<Vec<_>, _>>()?;
        let config = config_with(|_| {})?;
        let validation = config.validation();
        let key_set: KeySet = keys.iter().cloned().collect();
        for signer in &keys {
            let host = MockHost::new(Behaviour::Envoy);
            let verifier = HostCrypto::new(&host);
            let mut cache = TokenCache::new(16);
            let token = encode(&Header::access_token(signer), &claims(), signer)?;
            let headers = [("authorization".to_owned(), bearer(&token))];
            let view = RequestView {
                method: "GET",
                path: "/api/x",
                headers: &headers,
            };
            let check = |cache: &mut TokenCache| {
                decide(
                    &view,
                    &config,
                    Verification::new(&validation, &verifier),
                    Some(&key_set),
                    RevocationCheck::Off,
                    Some(cache),
                    NOW,
                )
            };
            let alg = signer.algorithm();
            for (round, cache_hit) in [(1, false), (2, true)] {
                let decision = check(&mut cache);
                assert!(
                    matches!(&decision, Decision::Allow { by: AllowedBy::Token { cache_hit: hit }, .. } if *hit == cache_hit),
                    "{alg:?} round {round}: {decision:?}"
                );
            }
            let host_calls = usize::from(matches!(alg, Algorithm::ES256 | Algorithm::RS256));
            assert_eq!(host.calls().len(), host_calls, "{alg:?}: once at most");
        }
        Ok(())
    }

    #[test]
    fn an_hs256_token_is_refused_before_any_crypto_when_the_keys_are_public() -> crate::TestResult {
        use crate::crypto::tests::{Behaviour, MockHost};
        use crate::crypto::HostCrypto;

        // The shipped layout: a public JWKS polled without credentials.
        let config = config_with(|value| {
            value["local_jwks"] = Value::Null;
            value["remote_jwks"] = json!({"cluster": "auth_api", "path": "/.well-known/jwks.json"});
        })?;
        let validation = config.validation();
        // Even were the secret in the key set the request sees (it is left out when parsed).
        let key_set = keys()?;
        let auth = bearer(&token(&claims())?);
        let headers = [("authorization".to_owned(), auth)];
        let host = MockHost::new(Behaviour::Envoy);
        let verifier = HostCrypto::new(&host);
        let decision = decide(
            &RequestView {
                method: "GET",
                path: "/api/x",
                headers: &headers,
            },
            &config,
            Verification::new(&validation, &verifier),
            Some(&key_set),
            RevocationCheck::Off,
            None,
            NOW,
        );
        assert!(
            matches!(reason(&decision), Some(DenyReason::InvalidToken(_))),
            "{decision:?}"
        );
        assert_eq!(
            verifier.take_counts(),
            crate::crypto::SignatureCounts::default(),
            "no signature was checked"
        );
        Ok(())
    }

    #[test]
    fn a_foreign_key_reusing_a_published_kid_is_refused() -> crate::TestResult {
        use crate::crypto::tests::{Behaviour, MockHost};
        use crate::crypto::HostCrypto;
        use rand_core::OsRng;

        let config = config_with(|_| {})?;
        let validation = config.validation();
        for alg in Algorithm::ALL {
            let published = Key::generate("k-shared", alg, &mut OsRng)?;
            let foreign = Key::generate("k-shared", alg, &mut OsRng)?;
            let key_set: KeySet = [published.to_public().unwrap_or(published)]
                .into_iter()
                .collect();
            let token = encode(&Header::access_token(&foreign), &claims(), &foreign)?;
            let headers = [("authorization".to_owned(), bearer(&token))];
            let host = MockHost::new(Behaviour::Envoy);
            let verifier = HostCrypto::new(&host);
            let decision = decide(
                &RequestView {
                    method: "GET",
                    path: "/api/x",
                    headers: &headers,
                },
                &config,
                Verification::new(&validation, &verifier),
                Some(&key_set),
                RevocationCheck::Off,
                None,
                NOW,
            );
            assert_eq!(
                reason(&decision),
                Some(&DenyReason::InvalidToken("invalid signature".to_owned())),
                "{alg:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn a_key_version_change_empties_the_cache_so_removed_keys_stop_working() -> crate::TestResult {
        let config = config_with(|_| {})?;
        let mut cache = TokenCache::new(8);
        cache.set_key_version(Some(1));
        let auth = bearer(&token(&claims())?);
        let headers = [("authorization", auth.as_str())];
        run(
            &config,
            "GET",
            "/api/x",
            &headers,
            Some(&keys()?),
            Some(&mut cache),
            NOW,
        );
        cache.set_key_version(Some(2));
        let other_keys: KeySet = [Key::hs256("k2", &[9; 32])?].into_iter().collect();
        let decision = run(
            &config,
            "GET",
            "/api/x",
            &headers,
            Some(&other_keys),
            Some(&mut cache),
            NOW,
        );
        assert!(
            matches!(reason(&decision), Some(DenyReason::UnknownKey)),
            "the removed key is unknown now, cached or not"
        );
        Ok(())
    }

    #[test]
    fn grpc_requests_get_grpc_denials() -> crate::TestResult {
        let config = config_with(|_| {})?;
        let decision = run(
            &config,
            "POST",
            "/api/svc/Method",
            &[("content-type", "application/grpc")],
            Some(&keys()?),
            None,
            NOW,
        );
        let Decision::Deny {
            response: DenyResponse::Grpc { status, .. },
            ..
        } = decision
        else {
            panic!("{decision:?}")
        };
        assert_eq!(status, 16);
        Ok(())
    }

    #[test]
    fn claim_values_become_header_values_safely() -> crate::TestResult {
        let cases = [
            (json!("plain"), Some("plain"), "a string"),
            (json!(42), Some("42"), "a number"),
            (
                json!(["a", "b", 3]),
                Some("a,b,3"),
                "an array joined with commas",
            ),
            (json!({"a": 1}), None, "an object"),
            (json!(null), None, "null"),
            (json!("a\r\nx-admin: 1"), None, "header injection"),
        ];
        for (value, expected, reason) in cases {
            assert_eq!(header_value(&value).as_deref(), expected, "{reason}");
        }
        Ok(())
    }

    fn run_checked<'a>(
        config: &'a FilterConfig,
        authorization: &str,
        revocations: RevocationCheck<'_>,
        cache: Option<&mut TokenCache>,
        now: u64,
    ) -> Decision<'a> {
        let headers = kept([("authorization".to_owned(), authorization.to_owned())]);
        let view = RequestView {
            method: "GET",
            path: "/api/x",
            headers,
        };
        // Without the test key every token is refused, which every caller's assertions catch.
        let keys = keys().ok();
        decide(
            &view,
            config,
            Verification::new(&config.validation(), &RustCrypto),
            keys.as_ref(),
            revocations,
            cache,
            now,
        )
    }

    fn empty_feed() -> crate::TestResult<Revocations> {
        crate::revocations::tests::from_page(
            r#"{"epoch":"e","full":true,"tag":"00000000000000aa","seq":0,"more":false,"sessions":[],"users":[]}"#,
        )
    }

    #[test]
    fn revoked_sessions_and_users_are_refused_and_others_pass() -> crate::TestResult {
        let config = config_with(|_| {})?;
        let feed = crate::revocations::tests::parsed()?;
        let token_with = |edits: &[(&str, Value)]| -> crate::TestResult<String> {
            let mut c = claims();
            for (name, value) in edits {
                c[*name] = value.clone();
            }
            Ok(bearer(&token(&c)?))
        };
        let cases = [
            (
                token_with(&[("sid", json!("s-revoked"))])?,
                true,
                "revoked session",
            ),
            (
                token_with(&[("sub", json!("u-revoked")), ("iat", json!(NOW - 1))])?,
                true,
                "user token issued before not_before",
            ),
            (
                token_with(&[("sub", json!("u-revoked")), ("iat", json!(NOW))])?,
                false,
                "user token issued at not_before",
            ),
            (
                token_with(&[("sub", json!("u-revoked")), ("iat", json!(NOW + 30))])?,
                false,
                "user token issued after not_before",
            ),
            (
                token_with(&[
                    ("sub", json!("u-revoked")),
                    ("iat", json!(NOW as f64 - 0.5)),
                ])?,
                true,
                "fractional iat just before not_before",
            ),
            (token_with(&[])?, false, "another user and session"),
            (
                token_with(&[("sid", json!(["s-revoked"]))])?,
                true,
                "a sid that is not a string cannot be told apart from a revoked one",
            ),
            (
                token_with(&[("sub", json!(42))])?,
                true,
                "a sub that is not a string",
            ),
        ];
        for (auth, revoked, why) in cases {
            let decision = run_checked(&config, &auth, RevocationCheck::Loaded(&feed), None, NOW);
            if revoked {
                assert_eq!(reason(&decision), Some(&DenyReason::Revoked), "{why}");
                let Decision::Deny {
                    response: DenyResponse::Http { status, .. },
                    ..
                } = decision
                else {
                    panic!("{why}: expected an http denial");
                };
                assert_eq!(status, 401, "{why}");
            } else {
                assert!(
                    matches!(decision, Decision::Allow { .. }),
                    "{why}: {decision:?}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn revocations_are_checked_on_cache_hits() -> crate::TestResult {
        let config = config_with(|_| {})?;
        let mut cache = TokenCache::new(8);
        let mut c = claims();
        c["sid"] = json!("s-revoked");
        let auth = bearer(&token(&c)?);
        let (empty, feed) = (empty_feed()?, crate::revocations::tests::parsed()?);
        let cases = [
            (&empty, None, "before the revocation: verified and cached"),
            (&feed, Some(DenyReason::Revoked), "revoked while cached"),
            (
                &empty,
                None,
                "the entry gone: the cached token passes again",
            ),
        ];
        for (i, (revocations, expected, why)) in cases.into_iter().enumerate() {
            let decision = run_checked(
                &config,
                &auth,
                RevocationCheck::Loaded(revocations),
                Some(&mut cache),
                NOW,
            );
            assert_eq!(reason(&decision).cloned(), expected, "{why}");
            if let Decision::Allow { by, .. } = decision {
                assert_eq!(by, AllowedBy::Token { cache_hit: i > 0 }, "{why}");
            }
            assert_eq!(cache.len(), 1, "{why}");
        }
        Ok(())
    }

    #[test]
    fn before_the_first_feed_protected_routes_answer_503() -> crate::TestResult {
        let config = config_with(|_| {})?;
        let auth = bearer(&token(&claims())?);
        let decision = run_checked(&config, &auth, RevocationCheck::NotLoaded, None, NOW);
        assert_eq!(reason(&decision), Some(&DenyReason::KeysUnavailable));
        let Decision::Deny {
            response: DenyResponse::Http { status, .. },
            ..
        } = decision
        else {
            panic!("expected an http denial");
        };
        assert_eq!(status, 503);
        let off = run_checked(&config, &auth, RevocationCheck::Off, None, NOW);
        assert!(
            matches!(off, Decision::Allow { .. }),
            "no effect when not configured"
        );
        let headers: Vec<(String, String)> = Vec::new();
        let public = decide(
            &RequestView {
                method: "GET",
                path: "/auth/login",
                headers: &headers,
            },
            &config,
            Verification::new(&config.validation(), &RustCrypto),
            None,
            RevocationCheck::NotLoaded,
            None,
            NOW,
        );
        assert!(
            matches!(public, Decision::Allow { .. }),
            "public routes need no feed"
        );
        Ok(())
    }

    #[test]
    fn entries_whose_tokens_have_all_expired_refuse_nothing() -> crate::TestResult {
        let config = config_with(|_| {})?;
        let mut c = claims();
        c["sid"] = json!("s-old");
        let auth = bearer(&token(&c)?);
        let feed_until = |until: u64| -> crate::TestResult<Revocations> {
            crate::revocations::tests::from_page(&format!(
                r#"{{"epoch":"e","full":true,"tag":"00000000000000aa","seq":1,"more":false,
                    "sessions":[{{"sid":"s-old","until":{until}}}],"users":[]}}"#
            ))
        };
        let cases = [
            (NOW - 60, false, "until plus the 60 s skew has passed"),
            (NOW - 59, true, "still inside the skew"),
        ];
        for (until, revoked, why) in cases {
            let feed = feed_until(until)?;
            let decision = run_checked(&config, &auth, RevocationCheck::Loaded(&feed), None, NOW);
            assert_eq!(
                reason(&decision) == Some(&DenyReason::Revoked),
                revoked,
                "{why}"
            );
        }
        Ok(())
    }

    #[test]
    fn iat_is_kept_in_whole_seconds_rounded_down() -> crate::TestResult {
        let cases = [
            (json!(5), Some(5), "an integer"),
            (json!(5.7), Some(5), "a fraction rounds down"),
            (json!(-3), Some(-3), "negative"),
            (json!(u64::MAX), Some(i64::MAX), "beyond i64 saturates"),
            (json!("5"), None, "a string"),
        ];
        for (value, expected, why) in cases {
            assert_eq!(whole_seconds(&value), expected, "{why}");
        }
        Ok(())
    }

    fn first_headers(decision: &Decision<'_>) -> Vec<(String, String)> {
        match decision {
            Decision::Allow { headers_to_set, .. } => headers_to_set.to_vec(),
            Decision::Deny { .. } => Vec::new(),
        }
    }
}
