//! Route policy and token location: which rule covers a request, whether verified claims satisfy
//! it, and where the bearer token is (RFC 6750 §2.1, strictly). This module neither verifies
//! tokens nor builds answers; it works on plain strings.

use std::borrow::Cow;

use auth_jwt::is_token68;

use crate::config::{FilterConfig, PathMatch, Require, Rule};

/// The outcome of checking the matched rules against a verified token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Authorization {
    /// The request may go on.
    Allow,
    /// The token lacks a required role (403 `insufficient_scope`); says which.
    InsufficientScope(String),
    /// A rule requires a verified email and the token's `email_verified` is not `true` (403).
    EmailNotVerified,
    /// The token's `acr` is none of those the rules accept (401
    /// `insufficient_user_authentication`, RFC 9470): the values that would do, in order of
    /// preference.
    StepUp(Vec<String>),
}

/// What the rules read of a verified token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Presented<'a> {
    /// The roles claim.
    pub roles: &'a [String],
    /// The `acr` claim, when it is a string.
    pub acr: Option<&'a str>,
    /// Whether `email_verified` is JSON `true`.
    pub email_verified: bool,
}

/// The request path prepared for matching: the query and fragment cut off and percent-encoded
/// unreserved characters decoded (RFC 3986 §6.2.2.2), so `/api/%61dmin/` is `/api/admin/`.
/// `None` for paths that a rule cannot safely cover because an upstream may read them
/// differently: not starting with `/`, `.` or `..` segments, empty segments (`//`),
/// backslashes, `;` path parameters (Tomcat, Jetty and Spring drop `;…` from a segment, so
/// `/public/..;/api/admin` would be `/api/admin` upstream), encoded `/`, `\` or `;`, or bad
/// percent-encoding.
pub(crate) fn normalize_path(raw: &str) -> Option<Cow<'_, str>> {
    // Byte loops rather than `split(['?', '#'])` and `split('/')`, which decode characters: this
    // runs on every request.
    let end = raw
        .bytes()
        .position(|b| b == b'?' || b == b'#')
        .unwrap_or(raw.len());
    let path = raw.get(..end)?;
    if !path.starts_with('/') {
        return None;
    }
    // The common case, nothing percent-encoded, needs no copy.
    if !path.contains('%') {
        return segments_ok(path).then_some(Cow::Borrowed(path));
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|h| (*h as char).to_digit(16))?;
            let lo = bytes.get(i + 2).and_then(|l| (*l as char).to_digit(16))?;
            let decoded = u8::try_from(hi * 16 + lo).ok()?;
            if matches!(decoded, b'/' | b'\\' | b';') {
                return None;
            }
            if decoded.is_ascii_alphanumeric() || b"-._~".contains(&decoded) {
                out.push(char::from(decoded));
            } else {
                // Reserved and other characters stay encoded, in uppercase hex.
                out.push('%');
                out.push_str(&format!("{decoded:02X}"));
            }
            i += 3;
        } else {
            if refused_byte(b) {
                return None;
            }
            out.push(char::from(b));
            i += 1;
        }
    }
    // Segment checks run after decoding, so `%2e%2e` is caught as `..`.
    segments_ok(&out).then_some(Cow::Owned(out))
}

/// Bytes no path we match may hold, unencoded.
fn refused_byte(b: u8) -> bool {
    b == b'\\' || b == b';' || b.is_ascii_control() || !b.is_ascii()
}

/// For a path starting with `/`: no refused byte, no `.` or `..` segment, and no empty segment
/// but the last (`//`).
fn segments_ok(path: &str) -> bool {
    // The current segment's length, and how many of its bytes are leading dots: it is `.` or
    // `..` when they are all dots and at most two.
    let (mut len, mut dots) = (0_usize, 0_usize);
    let dot_segment = |len: usize, dots: usize| len == dots && (1..=2).contains(&len);
    for b in path.bytes().skip(1) {
        match b {
            b'/' if len == 0 || dot_segment(len, dots) => return false,
            b'/' => (len, dots) = (0, 0),
            b'.' => {
                dots += usize::from(dots == len);
                len += 1;
            }
            b if refused_byte(b) => return false,
            _ => len += 1,
        }
    }
    !dot_segment(len, dots)
}

/// The rules that decide a request: the first rule covering it as written, and a protective
/// rule that covers it only under another reading, when there is one. The request must satisfy
/// both (the strictest wins).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Matched<'a> {
    /// The first rule matching the path exactly (case-sensitively, a prefix as written), or
    /// else the protective rule below.
    pub first: &'a Rule,
    /// The first protective rule covering the path only under another reading (other ASCII
    /// case, or a prefix `/x/` read as covering `/x`), when `first` is not that rule.
    pub also: Option<&'a Rule>,
}

impl<'a> Matched<'a> {
    /// The matched rules, strictest last.
    pub(crate) fn rules(&self) -> impl Iterator<Item = &'a Rule> {
        std::iter::once(self.first).chain(self.also)
    }

    /// Whether every matched rule is public.
    pub(crate) fn is_public(&self) -> bool {
        self.rules().all(|rule| rule.require == Require::Public)
    }

    /// Whether tokens go upstream: only when every matched rule says so (its own `forward`,
    /// else the configuration's).
    pub(crate) fn forward(&self, default: bool) -> bool {
        self.rules().all(|rule| rule.forward.unwrap_or(default))
    }
}

/// The rules covering `method` and the normalized `path`, if any.
///
/// Each rule matches the path as written: case-sensitively, a prefix by its exact text. The
/// first such rule is the one the configuration names for the path. Protective rules
/// (`authenticated`, `roles`) also match other readings of the path, because some upstreams
/// serve `/API/ADMIN/x` as `/api/admin/x` (ASP.NET, Spring with case-insensitive matching) and
/// `/api/admin` as `/api/admin/` (Express): a stricter rule must not be skipped by changing case
/// or dropping a slash. Public rules match only what they name, so `"/auth/"` does not make
/// `/AUTH/x` or `/auth` public. When a protective rule covers the path only under another
/// reading, the request must satisfy it as well as the first exact match.
///
/// `HEAD` is matched as `GET` by rules listing `GET` (RFC 9110 §9.3.2: the same answer without
/// its body).
pub(crate) fn match_rule<'a>(method: &str, path: &str, rules: &'a [Rule]) -> Option<Matched<'a>> {
    let method_ok = |rule: &Rule| {
        rule.methods.as_ref().is_none_or(|methods| {
            methods
                .iter()
                .any(|m| m == method || (method == "HEAD" && m == "GET"))
        })
    };
    let exact = |rule: &Rule| match &rule.path {
        PathMatch::Prefix(prefix) => path.starts_with(prefix.as_str()),
        PathMatch::Path(exact) => path == exact,
    };
    let loose = |rule: &Rule| match &rule.path {
        PathMatch::Prefix(prefix) => {
            starts_with_ignore_case(path, prefix)
                || prefix
                    .strip_suffix('/')
                    .is_some_and(|bare| path.eq_ignore_ascii_case(bare))
        }
        PathMatch::Path(exact) => path.eq_ignore_ascii_case(exact),
    };
    let first = rules.iter().find(|rule| method_ok(rule) && exact(rule));
    let other_reading = rules.iter().find(|rule| {
        rule.require != Require::Public && method_ok(rule) && !exact(rule) && loose(rule)
    });
    match (first, other_reading) {
        (Some(first), also) => Some(Matched { first, also }),
        (None, Some(only)) => Some(Matched {
            first: only,
            also: None,
        }),
        (None, None) => None,
    }
}

fn starts_with_ignore_case(path: &str, prefix: &str) -> bool {
    path.as_bytes()
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// Whether a verified token satisfies every matched rule (the strictest wins), and if not, the
/// refusal to give. Every rule's roles come first, then the verified email, then the `acr`: a
/// refusal no new sign-in can lift is given before one asking for a stronger sign-in, so a
/// user is never sent to step up only to be refused for another reason.
///
/// - Roles: a roles rule needs at least one of its roles.
/// - `email_verified`: when any matched rule sets it, the claim must be JSON `true`.
/// - `acr`: the token's `acr` must be in every matched rule's list. A refusal names the values
///   in all of them (the first rule's order); when no value is in all of them, no token can
///   pass and the refusal is 403, not a step-up that could never succeed.
pub(crate) fn authorize(matched: &Matched<'_>, token: Presented<'_>) -> Authorization {
    for rule in matched.rules() {
        if let Some(why) = missing_role(&rule.require, token.roles) {
            return Authorization::InsufficientScope(why);
        }
    }
    if matched.rules().any(|rule| rule.email_verified) && !token.email_verified {
        return Authorization::EmailNotVerified;
    }
    let mut lists = matched.rules().filter_map(|rule| rule.acr.as_deref());
    let Some(first) = lists.next() else {
        return Authorization::Allow;
    };
    let others: Vec<&[String]> = lists.collect();
    let in_all = |value: &str| {
        others
            .iter()
            .all(|list| list.iter().any(|accepted| accepted == value))
    };
    if token
        .acr
        .is_some_and(|acr| first.iter().any(|accepted| accepted == acr) && in_all(acr))
    {
        return Authorization::Allow;
    }
    let would_do: Vec<String> = first
        .iter()
        .filter(|value| in_all(value))
        .cloned()
        .collect();
    if would_do.is_empty() {
        return Authorization::InsufficientScope(
            "no acr value satisfies every rule covering this request".to_owned(),
        );
    }
    Authorization::StepUp(would_do)
}

/// Why a token holding `roles` fails `require`, if it does. Roles rules need at least one of
/// the listed roles.
fn missing_role(require: &Require, roles: &[String]) -> Option<String> {
    match require {
        Require::Public | Require::Authenticated => None,
        Require::Roles(required) => (!required.iter().any(|r| roles.contains(r)))
            .then(|| format!("requires one of the roles: {}", required.join(", "))),
    }
}

/// Where the token was found, so it can be stripped before the request goes upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenLocation<'a> {
    /// The whole value of this header (lowercase name).
    Header(&'a str),
    /// This cookie of the `cookie` header.
    Cookie(&'a str),
}

/// A bearer token and where it came from, borrowed from the request and the configuration: the
/// request path copies nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FoundToken<'a> {
    /// The token, not yet checked to be `token68` (see [`FoundToken::malformed`]).
    pub token: &'a str,
    /// Where it was.
    pub location: TokenLocation<'a>,
}

impl FoundToken<'_> {
    /// Why the token is malformed, if it is not `token68`: it has spaces, trailing garbage or
    /// characters outside `token68`.
    pub(crate) fn malformed(&self) -> Option<&'static str> {
        (!is_token68(self.token)).then_some(match self.location {
            TokenLocation::Header(_) => "the bearer token is malformed",
            TokenLocation::Cookie(_) => "the token cookie is malformed",
        })
    }
}

/// Why no usable token was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TokenError {
    /// No configured location holds a token (401 without `error`).
    Missing,
    /// A location holds something that is not one well-formed token (401 `invalid_token`).
    Malformed(&'static str),
}

/// Finds the token in the configured headers, then cookies, in configuration order, and hands
/// every token location the request fills to `filled`, found token or not.
///
/// The token: the first location that holds one wins. A header whose value does not start with
/// the prefix (e.g. `Authorization: Basic …`) holds no token. A header or cookie sent several
/// times makes the token malformed; so do extra spaces, trailing garbage or characters outside
/// `token68`, which [`FoundToken::malformed`] tells, so that the caller may skip that scan when
/// the cache knows the token.
///
/// The locations, in configuration order: the configured headers sent with a value that starts
/// with their prefix, and the configured cookies present. When tokens are not forwarded all of
/// them are removed, so that no unverified token reaches the upstream beside (or instead of)
/// the one that was checked.
///
/// Header names in `headers` are compared case-insensitively. Both come from one pass over the
/// headers per configured header, and one over the cookies per configured cookie.
pub(crate) fn find_token<'a>(
    headers: &'a [(String, String)],
    config: &'a FilterConfig,
    mut filled: impl FnMut(TokenLocation<'a>),
) -> Result<FoundToken<'a>, TokenError> {
    let mut found = None;
    for source in &config.from_headers {
        let prefix = source.value_prefix.as_bytes();
        let has_prefix = |value: &str| {
            value
                .as_bytes()
                .get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
        };
        let (mut first, mut several, mut prefixed) = (None, false, false);
        for (name, value) in headers {
            if name.eq_ignore_ascii_case(&source.name) {
                several |= first.is_some();
                first.get_or_insert(value.as_str());
                prefixed |= has_prefix(value);
            }
        }
        let location = TokenLocation::Header(&source.name);
        if prefixed {
            filled(location);
        }
        let Some(value) = first.filter(|_| found.is_none()) else {
            continue;
        };
        if several {
            found = Some(Err(TokenError::Malformed("several token headers")));
        } else if prefixed {
            // The only value, with the prefix.
            let token = value.get(prefix.len()..).unwrap_or_default();
            found = Some(Ok(FoundToken { token, location }));
        }
    }
    for cookie_name in &config.from_cookies {
        let mut same_name = cookies(headers).filter(|(name, _)| name == cookie_name);
        let Some((_, value)) = same_name.next() else {
            continue;
        };
        let location = TokenLocation::Cookie(cookie_name);
        filled(location);
        if found.is_none() {
            found = Some(if same_name.next().is_some() {
                Err(TokenError::Malformed("several token cookies"))
            } else {
                Ok(FoundToken {
                    token: value,
                    location,
                })
            });
        }
    }
    found.unwrap_or(Err(TokenError::Missing))
}

/// The `cookie` header(s) without the cookies `names`, joined with `; `; `None` when nothing
/// is left.
pub(crate) fn cookie_header_without(
    headers: &[(String, String)],
    names: &[&str],
) -> Option<String> {
    let kept: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        .flat_map(|(_, value)| value.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| !names.contains(&pair.split_once('=').map_or(*pair, |(n, _)| n.trim())))
        .map(str::to_owned)
        .collect();
    if kept.is_empty() {
        None
    } else {
        Some(kept.join("; "))
    }
}

fn cookies(headers: &[(String, String)]) -> impl Iterator<Item = (&str, &str)> {
    headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("cookie"))
        .flat_map(|(_, value)| value.split(';'))
        // Only RFC 6265's whitespace: `str::trim` would also strip Unicode spaces, and a cookie
        // named `\u{2000}__Host-x` (which anyone may set: it has no prefix to a browser) would
        // read as `__Host-x`. Stripping (above) stays broad: it removes more, never less.
        .filter_map(|pair| pair.trim_matches(COOKIE_WS).split_once('='))
        .map(|(name, value)| (name.trim_matches(COOKIE_WS), value))
}

/// The whitespace around a cookie pair (RFC 6265 §4.2.1: SP and HTAB).
const COOKIE_WS: [char; 2] = [' ', '\t'];

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::config::tests::base;

    fn config(edit: impl FnOnce(&mut serde_json::Value)) -> crate::TestResult<FilterConfig> {
        let mut value = base();
        edit(&mut value);
        Ok(FilterConfig::parse(value.to_string().as_bytes())?)
    }

    /// [`find_token`] with the `token68` check the filter makes when the cache does not know
    /// the token.
    fn extract_token<'a>(
        headers: &'a [(String, String)],
        config: &'a FilterConfig,
    ) -> Result<FoundToken<'a>, TokenError> {
        let found = find_token(headers, config, |_| {})?;
        match found.malformed() {
            Some(why) => Err(TokenError::Malformed(why)),
            None => Ok(found),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn first_matching_rule_wins_and_methods_restrict() -> crate::TestResult {
        let config = config(|_| {})?;
        // (first, also): indexes of the exact match and of a stricter rule under another reading.
        let cases = [
            (
                "GET",
                "/auth/login",
                Some((0, None)),
                "prefix of a public route",
            ),
            (
                "GET",
                "/healthz",
                Some((1, None)),
                "exact path with its method",
            ),
            (
                "HEAD",
                "/healthz",
                Some((1, None)),
                "HEAD is matched as GET",
            ),
            ("POST", "/healthz", None, "exact path with another method"),
            (
                "GET",
                "/healthz/x",
                None,
                "exact path does not match longer paths",
            ),
            (
                "GET",
                "/api/admin/users",
                Some((2, None)),
                "admin before the wider /api/",
            ),
            (
                "DELETE",
                "/api/things",
                Some((3, None)),
                "every method when none are listed",
            ),
            (
                "GET",
                "/api",
                Some((3, None)),
                "prefix /api/ covers /api itself",
            ),
            ("GET", "/apix", None, "but not a longer segment"),
            (
                "GET",
                "/api/admin",
                Some((3, Some(2))),
                "the admin rule covers /api/admin",
            ),
            (
                "GET",
                "/API/Admin/users",
                Some((2, None)),
                "case cannot skip the admin rule",
            ),
            (
                "GET",
                "/api/Admin/users",
                Some((3, Some(2))),
                "nor reach only /api/",
            ),
            ("GET", "/other", None, "no rule"),
        ];
        for (method, path, expected, reason) in cases {
            let index = |rule: &Rule| config.rules.iter().position(|r| std::ptr::eq(r, rule));
            let found = match_rule(method, path, &config.rules)
                .map(|m| (index(m.first).unwrap_or(99), m.also.and_then(index)));
            assert_eq!(found, expected, "{reason}");
        }
        Ok(())
    }

    #[test]
    fn public_rules_match_only_what_they_name() -> crate::TestResult {
        let config = config(|v| {
            v["rules"] = json!([
                {"match": {"prefix": "/auth/"}, "require": "public"},
                {"match": {"path": "/docs"}, "require": "public"},
                {"match": {"prefix": "/public/"}, "require": "public"},
                {"match": {"prefix": "/docs/"}, "require": {"roles": ["editor"]}},
                {"match": {"prefix": "/api/"}, "require": "authenticated"},
                {"match": {"path": "/api/status"}, "require": "public"}
            ]);
        })?;
        let cases = [
            ("/auth/signup", Some(true), "what the rule names"),
            ("/Auth/signup", None, "not another case"),
            ("/AUTH/x", None, "not another case"),
            ("/auth", None, "a prefix /auth/ does not make /auth public"),
            ("/PUBLIC/x", None, "not another case"),
            ("/public/x", Some(true), "what the rule names"),
            (
                "/docs",
                Some(false),
                "the stricter /docs/ covers /docs too: it wins",
            ),
            ("/DOCS/x", Some(false), "only the protective rule"),
            (
                "/API/STATUS",
                Some(false),
                "the wider protective rule, not the public one",
            ),
        ];
        for (path, public, reason) in cases {
            let found = match_rule("GET", path, &config.rules).map(|m| m.is_public());
            assert_eq!(found, public, "{path}: {reason}");
        }
        Ok(())
    }

    #[test]
    fn normalize_path_cuts_the_query_and_refuses_ambiguous_paths() -> crate::TestResult {
        let cases = [
            ("/api/x?a=1", Some("/api/x"), "query ignored"),
            ("/healthz#frag", Some("/healthz"), "fragment ignored"),
            (
                "/api/%61dmin/x",
                Some("/api/admin/x"),
                "encoded unreserved char decoded",
            ),
            ("/api/a%2fb", None, "encoded slash"),
            ("/api/a%5cb", None, "encoded backslash"),
            ("/api/a%3bb", None, "encoded semicolon"),
            (
                "/public/..;/api/admin/x",
                None,
                "path parameter hiding a dot-dot",
            ),
            ("/api/admin;x/users", None, "path parameter on a segment"),
            (
                "/api/a%20b",
                Some("/api/a%20b"),
                "other reserved characters stay encoded",
            ),
            ("/api/", Some("/api/"), "trailing slash is fine"),
            ("/api/../admin", None, "dot-dot segment"),
            ("/api/%2e%2e/admin", None, "encoded dot-dot segment"),
            ("/api/./x", None, "dot segment"),
            ("/api//admin/x", None, "empty segment"),
            ("/api/\\admin", None, "backslash"),
            ("/api/%zz", None, "bad percent-encoding"),
            ("/api/%4", None, "truncated percent-encoding"),
            ("api/x", None, "relative path"),
            ("", None, "empty path"),
            ("/", Some("/"), "the root"),
            ("/api/x?a=/../b#c", Some("/api/x"), "dots in the query"),
            (
                "/api/x#a?b",
                Some("/api/x"),
                "a fragment before a question mark",
            ),
            ("/api/...", Some("/api/..."), "three dots are a name"),
            (
                "/api/.well-known/x",
                Some("/api/.well-known/x"),
                "a name after a dot",
            ),
            ("/api/x./y", Some("/api/x./y"), "a name before a dot"),
            ("/api/.", None, "a trailing dot segment"),
            ("/api/x/..", None, "a trailing dot-dot segment"),
            ("/..", None, "dot-dot from the root"),
            ("//", None, "an empty first segment"),
            ("/api/x%2e/", Some("/api/x./"), "an encoded dot in a name"),
        ];
        for (raw, expected, reason) in cases {
            assert_eq!(normalize_path(raw).as_deref(), expected, "{reason}");
        }
        Ok(())
    }

    /// A rule at `/x/` requiring `require`, plus `extra` members (`acr`, `email_verified`).
    fn rule(require: Value, extra: Value) -> crate::TestResult<Rule> {
        let mut rule = json!({"match": {"prefix": "/x/"}, "require": require});
        if let (Some(rule), Value::Object(extra)) = (rule.as_object_mut(), extra) {
            rule.extend(extra);
        }
        let config = config(|v| v["rules"] = json!([rule]))?;
        config
            .rules
            .into_iter()
            .next()
            .ok_or_else(|| "no rule".into())
    }

    fn presented<'a>(
        roles: &'a [String],
        acr: Option<&'a str>,
        email_verified: bool,
    ) -> Presented<'a> {
        Presented {
            roles,
            acr,
            email_verified,
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn roles_rules_need_one_of_the_listed_roles() -> crate::TestResult {
        let admin = rule(json!({"roles": ["admin", "ops"]}), json!({}))?;
        let authenticated = rule(json!("authenticated"), json!({}))?;
        let cases = [
            (
                &admin,
                vec!["user", "ops"],
                true,
                "one listed role is enough",
            ),
            (&admin, vec!["user"], false, "no listed role"),
            (&admin, vec![], false, "no role at all"),
            (&admin, vec!["Admin"], false, "roles are case-sensitive"),
            (&authenticated, vec![], true, "authenticated needs no role"),
        ];
        for (rule, roles, allowed, reason) in cases {
            let roles = strings(&roles);
            let matched = Matched {
                first: rule,
                also: None,
            };
            let outcome = authorize(&matched, presented(&roles, None, false));
            assert_eq!(
                outcome == Authorization::Allow,
                allowed,
                "{reason}: {outcome:?}"
            );
            if !allowed {
                assert_eq!(
                    outcome,
                    Authorization::InsufficientScope(
                        "requires one of the roles: admin, ops".to_owned()
                    ),
                    "{reason}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn an_email_verified_rule_needs_the_claim_to_be_true() -> crate::TestResult {
        let plain = rule(json!("authenticated"), json!({}))?;
        let verified = rule(json!("authenticated"), json!({"email_verified": true}))?;
        let no_roles = Vec::new();
        let cases = [
            (&verified, true, Authorization::Allow, "verified"),
            (
                &verified,
                false,
                Authorization::EmailNotVerified,
                "false, absent or not a boolean (decide reads those as false)",
            ),
            (&plain, false, Authorization::Allow, "a rule without it"),
        ];
        for (rule, email_verified, expected, reason) in cases {
            let matched = Matched {
                first: rule,
                also: None,
            };
            assert_eq!(
                authorize(&matched, presented(&no_roles, Some("aal2"), email_verified)),
                expected,
                "{reason}"
            );
        }
        Ok(())
    }

    #[test]
    fn an_acr_rule_needs_one_of_its_values_and_names_them_when_refusing() -> crate::TestResult {
        let aal2 = rule(json!("authenticated"), json!({"acr": ["aal2"]}))?;
        let either = rule(json!("authenticated"), json!({"acr": ["aal3", "aal2"]}))?;
        let no_roles = Vec::new();
        let step_up = |values: &[&str]| Authorization::StepUp(strings(values));
        let cases = [
            (&aal2, Some("aal2"), Authorization::Allow, "the value"),
            (&aal2, Some("aal1"), step_up(&["aal2"]), "a lower level"),
            (
                &aal2,
                None,
                step_up(&["aal2"]),
                "no acr (or one that is not a string)",
            ),
            (
                &aal2,
                Some("AAL2"),
                step_up(&["aal2"]),
                "values are case-sensitive",
            ),
            (&aal2, Some("aal2 "), step_up(&["aal2"]), "compared whole"),
            (&aal2, Some(""), step_up(&["aal2"]), "an empty acr"),
            (
                &either,
                Some("aal2"),
                Authorization::Allow,
                "one of several",
            ),
            (&either, Some("aal3"), Authorization::Allow, "the other one"),
            (
                &either,
                Some("aal1"),
                step_up(&["aal3", "aal2"]),
                "every value, in the rule's order",
            ),
        ];
        for (rule, acr, expected, reason) in cases {
            let matched = Matched {
                first: rule,
                also: None,
            };
            assert_eq!(
                authorize(&matched, presented(&no_roles, acr, true)),
                expected,
                "{reason}"
            );
        }
        Ok(())
    }

    #[test]
    fn every_matched_rule_applies_and_refusals_no_sign_in_lifts_come_first() -> crate::TestResult {
        let admin_aal2 = rule(json!({"roles": ["admin"]}), json!({"acr": ["aal2"]}))?;
        let verified_aal = rule(
            json!("authenticated"),
            json!({"email_verified": true, "acr": ["aal2", "aal3"]}),
        )?;
        let aal3 = rule(json!("authenticated"), json!({"acr": ["aal3"]}))?;
        let aal4 = rule(json!("authenticated"), json!({"acr": ["aal4"]}))?;
        let plain = rule(json!("authenticated"), json!({}))?;
        let (admin, user) = (strings(&["admin"]), strings(&["user"]));
        let step_up = |values: &[&str]| Authorization::StepUp(strings(values));
        let cases = [
            (
                (&plain, Some(&admin_aal2)),
                presented(&user, Some("aal1"), false),
                Authorization::InsufficientScope("requires one of the roles: admin".to_owned()),
                "a missing role before a step-up: stepping up would not help",
            ),
            (
                (&plain, Some(&admin_aal2)),
                presented(&admin, Some("aal1"), false),
                step_up(&["aal2"]),
                "the protective rule's acr, under another reading of the path",
            ),
            (
                (&admin_aal2, Some(&verified_aal)),
                presented(&admin, Some("aal1"), false),
                Authorization::EmailNotVerified,
                "an unverified email before a step-up",
            ),
            (
                (&admin_aal2, Some(&verified_aal)),
                presented(&admin, Some("aal2"), true),
                Authorization::Allow,
                "both satisfied",
            ),
            (
                (&verified_aal, Some(&aal3)),
                presented(&admin, Some("aal2"), true),
                step_up(&["aal3"]),
                "only the values every rule accepts are asked for",
            ),
            (
                (&verified_aal, Some(&aal3)),
                presented(&admin, Some("aal3"), true),
                Authorization::Allow,
                "a value in both lists",
            ),
            (
                (&aal3, Some(&aal4)),
                presented(&admin, Some("aal3"), true),
                Authorization::InsufficientScope(
                    "no acr value satisfies every rule covering this request".to_owned(),
                ),
                "rules no token can satisfy together: no step-up is offered",
            ),
        ];
        for ((first, also), token, expected, reason) in cases {
            let matched = Matched { first, also };
            assert_eq!(authorize(&matched, token), expected, "{reason}");
        }
        Ok(())
    }

    #[test]
    fn bearer_token_extraction_follows_rfc_6750_strictly() -> crate::TestResult {
        let config = config(|_| {})?;
        let malformed = Err(TokenError::Malformed("the bearer token is malformed"));
        let ok = |t: &'static str| {
            Ok(FoundToken {
                token: t,
                location: TokenLocation::Header("authorization"),
            })
        };
        let cases = [
            (
                vec![("authorization", "Bearer abc.def.ghi")],
                ok("abc.def.ghi"),
                "the usual form",
            ),
            (
                vec![("authorization", "bearer abc")],
                ok("abc"),
                "scheme is case-insensitive",
            ),
            (
                vec![("Authorization", "BEARER abc==")],
                ok("abc=="),
                "header name case and padding",
            ),
            (vec![], Err(TokenError::Missing), "no header"),
            (
                vec![("authorization", "Basic dXNlcjpwYXNz")],
                Err(TokenError::Missing),
                "another scheme",
            ),
            (
                vec![("authorization", "Bearer")],
                Err(TokenError::Missing),
                "scheme without a space",
            ),
            (
                vec![("authorization", "Bearer ")],
                malformed.clone(),
                "empty token",
            ),
            (
                vec![("authorization", "Bearer  abc")],
                malformed.clone(),
                "two spaces",
            ),
            (
                vec![("authorization", "Bearer abc ")],
                malformed.clone(),
                "trailing space",
            ),
            (
                vec![("authorization", "Bearer abc def")],
                malformed.clone(),
                "trailing garbage",
            ),
            (
                vec![("authorization", "Bearer abc,def")],
                malformed.clone(),
                "comma is not token68",
            ),
            (
                vec![("authorization", "Bearer a=b")],
                malformed.clone(),
                "padding in the middle",
            ),
            (
                vec![("authorization", "Bearer ====")],
                malformed.clone(),
                "only padding",
            ),
            (
                vec![("authorization", "Bearer abc\u{e9}")],
                malformed.clone(),
                "non-ascii",
            ),
            (
                vec![("authorization", "Bearer a"), ("authorization", "Bearer b")],
                Err(TokenError::Malformed("several token headers")),
                "two authorization headers",
            ),
        ];
        for (pairs, expected, reason) in cases {
            assert_eq!(
                extract_token(&headers(&pairs), &config),
                expected,
                "{reason}"
            );
        }
        Ok(())
    }

    #[test]
    fn cookies_are_read_after_headers() -> crate::TestResult {
        let config = config(|v| v["from_cookies"] = json!(["access_token"]))?;
        let cookie = |t: &'static str| {
            Ok(FoundToken {
                token: t,
                location: TokenLocation::Cookie("access_token"),
            })
        };
        let cases = [
            (
                vec![("cookie", "a=1; access_token=abc.def")],
                cookie("abc.def"),
                "cookie among others",
            ),
            (
                vec![("cookie", "a=1"), ("cookie", "access_token=xyz")],
                cookie("xyz"),
                "second cookie header",
            ),
            (
                vec![
                    ("authorization", "Bearer hdr"),
                    ("cookie", "access_token=abc"),
                ],
                Ok(FoundToken {
                    token: "hdr",
                    location: TokenLocation::Header("authorization"),
                }),
                "header wins over cookie",
            ),
            (
                vec![("cookie", "my_access_token=abc")],
                Err(TokenError::Missing),
                "name is exact",
            ),
            (
                vec![("cookie", "access_token=a; access_token=b")],
                Err(TokenError::Malformed("several token cookies")),
                "duplicate cookie",
            ),
            (
                vec![("cookie", "access_token=\"abc\"")],
                Err(TokenError::Malformed("the token cookie is malformed")),
                "quoted value",
            ),
            (
                vec![(
                    "cookie",
                    "\u{2000}access_token=abc; a=\u{3000}access_token=b",
                )],
                Err(TokenError::Missing),
                "a name behind a Unicode space is another name",
            ),
        ];
        for (pairs, expected, reason) in cases {
            assert_eq!(
                extract_token(&headers(&pairs), &config),
                expected,
                "{reason}"
            );
        }
        Ok(())
    }

    #[test]
    fn every_filled_token_location_is_reported_whichever_holds_the_token() -> crate::TestResult {
        let config = config(|v| v["from_cookies"] = json!(["access_token"]))?;
        let header = TokenLocation::Header("authorization");
        let cookie = TokenLocation::Cookie("access_token");
        let cases = [
            (
                vec![
                    ("authorization", "Bearer abc"),
                    ("cookie", "a=1; access_token=def"),
                ],
                vec![header, cookie],
                Ok("abc"),
                "the header's token is checked, both are emptied",
            ),
            (
                vec![
                    ("authorization", "Basic abc"),
                    ("cookie", "access_token=def"),
                ],
                vec![cookie],
                Ok("def"),
                "another scheme is no token location",
            ),
            (
                vec![
                    ("authorization", "Basic abc"),
                    ("authorization", "Bearer x"),
                ],
                vec![header],
                Err(TokenError::Malformed("several token headers")),
                "one of two headers holds a token",
            ),
            (vec![], vec![], Err(TokenError::Missing), "nothing sent"),
        ];
        for (pairs, locations, token, reason) in cases {
            let headers = headers(&pairs);
            let mut filled = Vec::new();
            let found = find_token(&headers, &config, |location| filled.push(location));
            assert_eq!(filled, locations, "{reason}");
            assert_eq!(found.map(|f| f.token), token, "{reason}");
        }
        Ok(())
    }

    #[test]
    fn cookie_header_without_drops_only_the_token_cookie() -> crate::TestResult {
        let h = headers(&[("cookie", "a=1; access_token=abc"), ("cookie", "b=2")]);
        assert_eq!(
            cookie_header_without(&h, &["access_token"]).as_deref(),
            Some("a=1; b=2")
        );
        let only = headers(&[("cookie", "access_token=abc")]);
        assert_eq!(cookie_header_without(&only, &["access_token"]), None);
        Ok(())
    }
}
