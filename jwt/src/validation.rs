//! What a decoder accepts ([`Validation`], with [`Validation::access_token`] the rules every
//! access-token verifier uses) and the checks on registered claims (`exp`, `nbf`, `iat`, `iss`,
//! `aud`, required claims). Header checks live in `header.rs`; application
//! claims are the caller's type's business.

use serde_json::{Map, Number, Value};

use crate::algorithm::Algorithm;
use crate::error::{ErrorKind, Result};

/// Claims an access token must carry besides `exp`, `iss` and `aud` (which
/// [`Validation::access_token`] requires anyway): RFC 9068 §2.2's `sub`, `iat`, `jti` and
/// `client_id`, and `sid`, the session that revocation acts on.
pub const ACCESS_TOKEN_REQUIRED_CLAIMS: [&str; 5] = ["sub", "iat", "jti", "sid", "client_id"];

/// The algorithms [`Validation::id_token`] accepts: the public-key ones.
const ID_TOKEN_ALGORITHMS: [Algorithm; 3] = [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256];

/// The rules [`decode`](crate::decode) applies. `Default` accepts every [`Algorithm`]; the
/// other defaults are [`Validation::new`]'s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validation {
    /// Algorithms accepted in the header's `alg`, checked before any cryptography. Default
    /// [`Algorithm::ALL`]: each key is bound to one algorithm anyway (a token must name its
    /// key's), so the list narrows what a key set may verify, e.g. to leave HS256 out once an
    /// installation has moved to public keys. Empty accepts nothing.
    pub algorithms: Vec<Algorithm>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds. Default 60.
    pub leeway_secs: u64,
    /// When set, `iss` is required and must equal it byte for byte. Default none.
    pub issuer: Option<String>,
    /// When set, `aud` is required (a string or an array of strings) and must contain one of
    /// these; `aud: []` and an empty list here always fail. Default none.
    pub audiences: Option<Vec<String>>,
    /// Claims that must be present and not `null`. Default empty; `exp` is always required.
    pub required_claims: Vec<String>,
    /// When set, the header's `typ` is required and must match it as a media type
    /// (case-insensitive, `application/` optional). Default `Some("at+jwt")` (RFC 9068).
    pub required_typ: Option<String>,
    /// Longest token accepted, in bytes. Default 8192.
    pub max_token_len: usize,
}

impl Validation {
    /// The defaults listed on each field, accepting only `alg`.
    pub fn new(alg: Algorithm) -> Self {
        Self {
            algorithms: vec![alg],
            leeway_secs: 60,
            issuer: None,
            audiences: None,
            required_claims: Vec::new(),
            required_typ: Some("at+jwt".to_owned()),
            max_token_len: 8192,
        }
    }

    /// The rules for our access tokens, the same at the edge and in auth-api: every algorithm
    /// (each key is bound to its own), `typ: at+jwt`, `iss` equal to `issuer`, `aud` holding one
    /// of `audiences`, `leeway_secs` of clock skew, and [`ACCESS_TOKEN_REQUIRED_CLAIMS`]. The
    /// other fields keep [`Default`]'s values.
    pub fn access_token(issuer: &str, audiences: &[String], leeway_secs: u64) -> Self {
        Self {
            leeway_secs,
            issuer: Some(issuer.to_owned()),
            audiences: Some(audiences.to_vec()),
            required_claims: ACCESS_TOKEN_REQUIRED_CLAIMS
                .iter()
                .map(|&claim| claim.to_owned())
                .collect(),
            ..Self::default()
        }
    }

    /// The rules for an OpenID Connect ID token (OIDC Core §3.1.3.7) from `issuer` for the
    /// client `client_id`: the public-key algorithms only ([`Algorithm::ES256`],
    /// [`Algorithm::EdDSA`], [`Algorithm::RS256`]; never HS256, whose key would be the client
    /// secret), no required `typ` (providers send `JWT` or nothing; the caller refuses other
    /// types), `iss` equal to `issuer`, `aud` holding `client_id`, `leeway_secs` of clock skew,
    /// `sub` and `iat` required, and tokens up to 16 KiB (ID tokens may carry many claims).
    /// `nonce` and `azp` are the caller's to check: they depend on the flow.
    pub fn id_token(issuer: &str, client_id: &str, leeway_secs: u64) -> Self {
        Self {
            algorithms: ID_TOKEN_ALGORITHMS.to_vec(),
            leeway_secs,
            issuer: Some(issuer.to_owned()),
            audiences: Some(vec![client_id.to_owned()]),
            required_claims: vec!["sub".to_owned(), "iat".to_owned()],
            required_typ: None,
            max_token_len: 16 * 1024,
        }
    }

    /// Checks the registered claims at `now` (seconds since the Unix epoch), in the order `exp`,
    /// `nbf`, `iat`, `iss`, `aud`, required claims. A `null` claim counts as missing.
    pub(crate) fn check_claims(&self, claims: &Map<String, Value>, now: u64) -> Result<()> {
        // i128 holds any u64 sum or difference, so no bound can overflow.
        let now = i128::from(now);
        let leeway = i128::from(self.leeway_secs);
        let exp = numeric_date(claims, "exp")?
            .ok_or_else(|| ErrorKind::MissingClaim("exp".to_owned()))?;
        if !is_after(exp, now - leeway) {
            return Err(ErrorKind::Expired.into());
        }
        if numeric_date(claims, "nbf")?.is_some_and(|nbf| is_after(nbf, now + leeway)) {
            return Err(ErrorKind::NotYetValid.into());
        }
        if numeric_date(claims, "iat")?.is_some_and(|iat| is_after(iat, now + leeway)) {
            return Err(ErrorKind::IssuedInFuture.into());
        }
        if let Some(issuer) = &self.issuer {
            match present(claims, "iss") {
                None => return Err(ErrorKind::MissingClaim("iss".to_owned()).into()),
                Some(Value::String(iss)) if iss == issuer => {}
                Some(Value::String(_)) => return Err(ErrorKind::InvalidIssuer.into()),
                Some(_) => return Err(ErrorKind::InvalidClaim("iss".to_owned()).into()),
            }
        }
        if let Some(audiences) = &self.audiences {
            check_audience(claims, audiences)?;
        }
        if let Some(name) = self
            .required_claims
            .iter()
            .find(|name| present(claims, name).is_none())
        {
            return Err(ErrorKind::MissingClaim(name.clone()).into());
        }
        Ok(())
    }
}

impl Default for Validation {
    fn default() -> Self {
        Self {
            algorithms: Algorithm::ALL.to_vec(),
            ..Self::new(Algorithm::HS256)
        }
    }
}

/// The claim `name` unless it is absent or `null`.
fn present<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    claims.get(name).filter(|value| !value.is_null())
}

/// A `NumericDate` claim (RFC 7519 §2): any JSON number, integer or not.
fn numeric_date<'a>(claims: &'a Map<String, Value>, name: &str) -> Result<Option<&'a Number>> {
    match present(claims, name) {
        None => Ok(None),
        Some(Value::Number(date)) => Ok(Some(date)),
        Some(_) => Err(ErrorKind::InvalidClaim(name.to_owned()).into()),
    }
}

/// Whether `date` is strictly later than `bound`, exactly for integers.
fn is_after(date: &Number, bound: i128) -> bool {
    if let Some(date) = date.as_i64() {
        i128::from(date) > bound
    } else if let Some(date) = date.as_u64() {
        i128::from(date) > bound
    } else {
        date.as_f64().is_some_and(|date| date > bound as f64)
    }
}

/// `aud` must be one of `accepted`, or an array of strings holding at least one of them.
fn check_audience(claims: &Map<String, Value>, accepted: &[String]) -> Result<()> {
    let is_accepted = |aud: &str| accepted.iter().any(|a| a == aud);
    let found = match present(claims, "aud") {
        None => return Err(ErrorKind::MissingClaim("aud".to_owned()).into()),
        Some(Value::String(aud)) => is_accepted(aud),
        Some(Value::Array(items)) => {
            let mut found = false;
            for item in items {
                match item {
                    Value::String(aud) => found |= is_accepted(aud),
                    _ => return Err(ErrorKind::InvalidClaim("aud".to_owned()).into()),
                }
            }
            found
        }
        Some(_) => return Err(ErrorKind::InvalidClaim("aud".to_owned()).into()),
    };
    if found {
        Ok(())
    } else {
        Err(ErrorKind::InvalidAudience.into())
    }
}

#[cfg(test)]
mod tests {
    //! The claim grid, through the whole `decode` path: `<claim>_<situation>_<ok|fails>`.

    use serde_json::{json, Value};

    use super::*;
    use crate::test_util::{claims, decode_with, token, token_with_claims, AUDIENCE, ISSUER, NOW};

    /// Decodes a token carrying `claims` with the test validation at `now`.
    fn check(claims: &Value, now: u64) -> Result<()> {
        check_with(claims, now, |_| {})
    }

    fn check_with(claims: &Value, now: u64, configure: impl FnOnce(&mut Validation)) -> Result<()> {
        decode_with::<Value>(&token_with_claims(claims), now, configure).map(|_| ())
    }

    fn with(name: &str, value: Value) -> Value {
        let mut claims = claims();
        claims[name] = value;
        claims
    }

    fn without(name: &str) -> Value {
        let mut claims = claims();
        claims.as_object_mut().unwrap().remove(name);
        claims
    }

    fn kind(result: Result<()>) -> ErrorKind {
        result.unwrap_err().into_kind()
    }

    #[test]
    fn defaults_are_documented_values() {
        let validation = Validation::default();
        assert_eq!(validation.algorithms, Algorithm::ALL);
        assert_eq!(
            Validation::new(Algorithm::HS256).algorithms,
            [Algorithm::HS256]
        );
        assert_eq!(validation.leeway_secs, 60);
        assert_eq!(validation.issuer, None);
        assert_eq!(validation.audiences, None);
        assert!(validation.required_claims.is_empty());
        assert_eq!(validation.required_typ.as_deref(), Some("at+jwt"));
        assert_eq!(validation.max_token_len, 8192);
    }

    #[test]
    fn access_token_sets_issuer_audiences_leeway_and_required_claims() {
        let audiences = vec!["api".to_owned(), "admin".to_owned()];
        let validation = Validation::access_token("https://issuer", &audiences, 5);
        assert_eq!(
            validation,
            Validation {
                leeway_secs: 5,
                issuer: Some("https://issuer".to_owned()),
                audiences: Some(audiences),
                required_claims: ["sub", "iat", "jti", "sid", "client_id"]
                    .map(str::to_owned)
                    .to_vec(),
                ..Validation::default()
            }
        );
    }

    #[test]
    fn access_token_claims_ok() {
        let mut claims = claims();
        claims["client_id"] = json!("client-1");
        let validation = Validation::access_token(ISSUER, &[AUDIENCE.to_owned()], 60);
        assert!(check_with(&claims, NOW, |v| *v = validation).is_ok());
    }

    #[test]
    fn access_token_without_a_required_claim_fails() {
        let mut full = claims();
        full["client_id"] = json!("client-1");
        for name in ACCESS_TOKEN_REQUIRED_CLAIMS {
            let mut claims = full.clone();
            claims.as_object_mut().unwrap().remove(name);
            let validation = Validation::access_token(ISSUER, &[AUDIENCE.to_owned()], 60);
            let result = check_with(&claims, NOW, |v| *v = validation);
            assert!(
                matches!(kind(result), ErrorKind::MissingClaim(ref c) if c == name),
                "{name}"
            );
        }
    }

    #[test]
    fn id_token_sets_public_algorithms_issuer_client_and_no_typ() {
        let validation = Validation::id_token("https://op.example", "client-1", 30);
        assert_eq!(
            validation,
            Validation {
                algorithms: vec![Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256],
                leeway_secs: 30,
                issuer: Some("https://op.example".to_owned()),
                audiences: Some(vec!["client-1".to_owned()]),
                required_claims: vec!["sub".to_owned(), "iat".to_owned()],
                required_typ: None,
                max_token_len: 16 * 1024,
            }
        );
    }

    #[test]
    fn id_token_hs256_fails_before_signature() {
        // The test key is HS256: an ID token validation must refuse it by its alg alone.
        let validation = Validation::id_token(ISSUER, AUDIENCE, 60);
        let result = check_with(&claims(), NOW, |v| *v = validation);
        assert!(matches!(kind(result), ErrorKind::AlgorithmNotAllowed));
    }

    #[test]
    fn id_token_claims_ok_without_typ() {
        use crate::test_util::key_pair;
        use crate::{encode, Header, KeySet};
        for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256] {
            let key = key_pair(alg, "op-1");
            let keys: KeySet = [key.to_public().unwrap()].into_iter().collect();
            let header = Header {
                kid: Some("op-1".to_owned()),
                ..Header::new(alg)
            };
            let token = encode(&header, &claims(), &key).unwrap();
            let validation = Validation::id_token(ISSUER, AUDIENCE, 60);
            let data = crate::decode::<Value>(&token, &keys, &validation, NOW).unwrap();
            assert_eq!(data.claims["sub"], "user-1", "{alg}");
        }
    }

    #[test]
    fn id_token_without_sub_or_iat_fails() {
        use crate::test_util::key_pair;
        use crate::{encode, Header, KeySet};
        let key = key_pair(Algorithm::ES256, "op-1");
        let keys: KeySet = [key.to_public().unwrap()].into_iter().collect();
        for name in ["sub", "iat"] {
            let token = encode(&Header::new(Algorithm::ES256), &without(name), &key).unwrap();
            let validation = Validation::id_token(ISSUER, AUDIENCE, 60);
            let result = crate::decode::<Value>(&token, &keys, &validation, NOW);
            assert!(
                matches!(result.unwrap_err().into_kind(), ErrorKind::MissingClaim(ref c) if c == name),
                "{name}"
            );
        }
    }

    #[test]
    fn valid_claims_ok() {
        assert!(check(&claims(), NOW).is_ok());
    }

    #[test]
    fn exp_in_future_ok() {
        assert!(check(&with("exp", json!(NOW + 1)), NOW).is_ok());
    }

    #[test]
    fn exp_within_leeway_ok() {
        assert!(check(&with("exp", json!(NOW - 59)), NOW).is_ok());
    }

    #[test]
    fn exp_at_leeway_boundary_fails() {
        // Expired iff now >= exp + leeway.
        assert!(matches!(
            kind(check(&with("exp", json!(NOW - 60)), NOW)),
            ErrorKind::Expired
        ));
    }

    #[test]
    fn exp_in_past_beyond_leeway_fails() {
        assert!(matches!(
            kind(check(&with("exp", json!(NOW - 3600)), NOW)),
            ErrorKind::Expired
        ));
    }

    #[test]
    fn exp_equal_to_now_without_leeway_fails() {
        let result = check_with(&with("exp", json!(NOW)), NOW, |v| v.leeway_secs = 0);
        assert!(matches!(kind(result), ErrorKind::Expired));
    }

    #[test]
    fn exp_fractional_ok() {
        let result = check_with(&with("exp", json!(NOW as f64 + 0.5)), NOW, |v| {
            v.leeway_secs = 0
        });
        assert!(result.is_ok());
        let result = check_with(&with("exp", json!(NOW as f64 - 0.5)), NOW, |v| {
            v.leeway_secs = 0
        });
        assert!(matches!(kind(result), ErrorKind::Expired));
    }

    #[test]
    fn exp_negative_fails() {
        assert!(matches!(
            kind(check(&with("exp", json!(-1)), NOW)),
            ErrorKind::Expired
        ));
    }

    #[test]
    fn exp_at_u64_max_with_now_at_u64_max_ok() {
        // exp + leeway and now + leeway overflow u64: the comparison must not.
        let claims = json!({ "exp": u64::MAX, "iat": u64::MAX });
        let result = check_with(&claims, u64::MAX, |v| *v = Validation::default());
        assert!(result.is_ok());
    }

    #[test]
    fn exp_missing_fails() {
        let result = check_with(&without("exp"), NOW, |v| v.required_claims.clear());
        assert!(matches!(kind(result), ErrorKind::MissingClaim(name) if name == "exp"));
    }

    #[test]
    fn exp_null_fails() {
        let result = check(&with("exp", Value::Null), NOW);
        assert!(matches!(kind(result), ErrorKind::MissingClaim(name) if name == "exp"));
    }

    #[test]
    fn exp_wrong_type_fails() {
        let cases = [
            (json!("1700000900"), "a numeric string is not a NumericDate"),
            (json!(true), "boolean"),
            (json!([NOW + 900]), "array"),
            (json!({ "secs": NOW + 900 }), "object"),
        ];
        for (exp, reason) in cases {
            let result = check(&with("exp", exp), NOW);
            assert!(
                matches!(kind(result), ErrorKind::InvalidClaim(name) if name == "exp"),
                "{reason}"
            );
        }
    }

    #[test]
    fn exp_string_fails() {
        let result = check(&with("exp", json!((NOW + 900).to_string())), NOW);
        assert!(matches!(kind(result), ErrorKind::InvalidClaim(name) if name == "exp"));
    }

    #[test]
    fn nbf_in_past_ok() {
        assert!(check(&with("nbf", json!(NOW - 10)), NOW).is_ok());
    }

    #[test]
    fn nbf_within_leeway_ok() {
        assert!(check(&with("nbf", json!(NOW + 60)), NOW).is_ok());
    }

    #[test]
    fn nbf_in_future_beyond_leeway_fails() {
        let result = check(&with("nbf", json!(NOW + 61)), NOW);
        assert!(matches!(kind(result), ErrorKind::NotYetValid));
    }

    #[test]
    fn nbf_string_fails() {
        let result = check(&with("nbf", json!("soon")), NOW);
        assert!(matches!(kind(result), ErrorKind::InvalidClaim(name) if name == "nbf"));
    }

    #[test]
    fn nbf_null_ok() {
        assert!(check(&with("nbf", Value::Null), NOW).is_ok());
    }

    #[test]
    fn iat_within_leeway_ok() {
        assert!(check(&with("iat", json!(NOW + 60)), NOW).is_ok());
    }

    #[test]
    fn iat_in_future_beyond_leeway_fails() {
        let result = check(&with("iat", json!(NOW + 61)), NOW);
        assert!(matches!(kind(result), ErrorKind::IssuedInFuture));
    }

    #[test]
    fn iat_far_in_future_fails() {
        let result = check(&with("iat", json!(NOW + 86_400 * 365)), NOW);
        assert!(matches!(kind(result), ErrorKind::IssuedInFuture));
    }

    #[test]
    fn iat_string_fails() {
        let result = check(&with("iat", json!("now")), NOW);
        assert!(matches!(kind(result), ErrorKind::InvalidClaim(name) if name == "iat"));
    }

    #[test]
    fn iat_missing_ok() {
        assert!(check(&without("iat"), NOW).is_ok());
    }

    #[test]
    fn iss_exact_ok() {
        assert!(check(&with("iss", json!("https://auth.example.com")), NOW).is_ok());
    }

    #[test]
    fn iss_trailing_slash_fails() {
        let result = check(&with("iss", json!("https://auth.example.com/")), NOW);
        assert!(matches!(kind(result), ErrorKind::InvalidIssuer));
    }

    #[test]
    fn iss_near_miss_fails() {
        let cases = [
            ("HTTPS://AUTH.EXAMPLE.COM", "case differs"),
            ("http://auth.example.com", "scheme differs"),
            ("https://auth.example.com ", "trailing space"),
            ("https://auth.example.com.evil", "suffix"),
            ("", "empty"),
        ];
        for (iss, reason) in cases {
            let result = check(&with("iss", json!(iss)), NOW);
            assert!(matches!(kind(result), ErrorKind::InvalidIssuer), "{reason}");
        }
    }

    #[test]
    fn iss_missing_fails() {
        let result = check(&without("iss"), NOW);
        assert!(matches!(kind(result), ErrorKind::MissingClaim(name) if name == "iss"));
    }

    #[test]
    fn iss_array_fails() {
        let result = check(&with("iss", json!(["https://auth.example.com"])), NOW);
        assert!(matches!(kind(result), ErrorKind::InvalidClaim(name) if name == "iss"));
    }

    #[test]
    fn iss_unchecked_when_not_configured_ok() {
        let result = check_with(&with("iss", json!(42)), NOW, |v| v.issuer = None);
        assert!(result.is_ok());
    }

    #[test]
    fn aud_string_ok() {
        assert!(check(&with("aud", json!("api")), NOW).is_ok());
    }

    #[test]
    fn aud_array_containing_ours_ok() {
        assert!(check(&with("aud", json!(["other", "api"])), NOW).is_ok());
    }

    #[test]
    fn aud_any_configured_audience_ok() {
        let result = check_with(&with("aud", json!("admin")), NOW, |v| {
            v.audiences = Some(vec!["api".to_owned(), "admin".to_owned()]);
        });
        assert!(result.is_ok());
    }

    #[test]
    fn aud_other_fails() {
        let cases = [
            (json!("other"), "another audience"),
            (json!("API"), "case differs"),
            (json!(["other", "more"]), "array without ours"),
        ];
        for (aud, reason) in cases {
            let result = check(&with("aud", aud), NOW);
            assert!(
                matches!(kind(result), ErrorKind::InvalidAudience),
                "{reason}"
            );
        }
    }

    #[test]
    fn aud_empty_array_fails() {
        let result = check(&with("aud", json!([])), NOW);
        assert!(matches!(kind(result), ErrorKind::InvalidAudience));
    }

    #[test]
    fn aud_missing_fails() {
        let result = check(&without("aud"), NOW);
        assert!(matches!(kind(result), ErrorKind::MissingClaim(name) if name == "aud"));
    }

    #[test]
    fn aud_wrong_type_fails() {
        let cases = [
            (json!(7), "number"),
            (json!({ "api": true }), "object"),
            (
                json!(["api", 7]),
                "array holding a non-string, even next to ours",
            ),
        ];
        for (aud, reason) in cases {
            let result = check(&with("aud", aud), NOW);
            assert!(
                matches!(kind(result), ErrorKind::InvalidClaim(name) if name == "aud"),
                "{reason}"
            );
        }
    }

    #[test]
    fn aud_empty_configured_list_fails() {
        let result = check_with(&claims(), NOW, |v| v.audiences = Some(Vec::new()));
        assert!(matches!(kind(result), ErrorKind::InvalidAudience));
    }

    #[test]
    fn aud_unchecked_when_not_configured_ok() {
        assert!(check_with(&without("aud"), NOW, |v| v.audiences = None).is_ok());
    }

    #[test]
    fn required_claim_missing_fails() {
        for name in ["sub", "jti", "sid", "iat"] {
            let result = check_with(&without(name), NOW, |v| {
                v.required_claims = ["sub", "jti", "sid", "iat"].map(str::to_owned).to_vec();
            });
            assert!(
                matches!(kind(result), ErrorKind::MissingClaim(n) if n == name),
                "{name}"
            );
        }
    }

    #[test]
    fn required_claim_null_fails() {
        let result = check_with(&with("sid", Value::Null), NOW, |v| {
            v.required_claims = vec!["sid".to_owned()];
        });
        assert!(matches!(kind(result), ErrorKind::MissingClaim(name) if name == "sid"));
    }

    #[test]
    fn required_claim_present_ok() {
        let result = check_with(&claims(), NOW, |v| {
            v.required_claims = ["sub", "jti", "sid", "iat"].map(str::to_owned).to_vec();
        });
        assert!(result.is_ok());
    }

    #[test]
    fn duplicate_sub_claim_fails() {
        let payload = r#"{"sub":"alice","exp":1700000900,"sub":"admin"}"#;
        let result =
            decode_with::<Value>(&token(None, payload), NOW, |v| *v = Validation::default());
        assert!(matches!(
            result.unwrap_err().kind(),
            ErrorKind::DuplicateMember
        ));
    }

    #[test]
    fn duplicate_nested_claim_fails() {
        let payload = r#"{"exp":1700000900,"ext":{"roles":["user"],"roles":["admin"]}}"#;
        let result =
            decode_with::<Value>(&token(None, payload), NOW, |v| *v = Validation::default());
        assert!(matches!(
            result.unwrap_err().kind(),
            ErrorKind::DuplicateMember
        ));
    }

    #[test]
    fn claims_checked_in_documented_order() {
        let cases = [
            (
                json!({ "exp": 1, "nbf": "x" }),
                "expiry comes before nbf's type",
            ),
            (
                json!({ "exp": NOW + 900, "nbf": NOW + 900, "iat": NOW + 900 }),
                "nbf before iat",
            ),
            (
                json!({ "exp": NOW + 900, "iat": NOW + 900, "iss": "x" }),
                "iat before iss",
            ),
            (
                json!({ "exp": NOW + 900, "iss": "x", "aud": "x" }),
                "iss before aud",
            ),
            (
                json!({ "exp": NOW + 900, "iss": "https://auth.example.com", "aud": "x" }),
                "aud before required",
            ),
        ];
        let expected = [
            ErrorKind::Expired,
            ErrorKind::NotYetValid,
            ErrorKind::IssuedInFuture,
            ErrorKind::InvalidIssuer,
            ErrorKind::InvalidAudience,
        ];
        for ((claims, reason), expected) in cases.into_iter().zip(expected) {
            let result = check_with(&claims, NOW, |v| v.required_claims = vec!["sid".to_owned()]);
            assert_eq!(kind(result), expected, "{reason}");
        }
    }
}
