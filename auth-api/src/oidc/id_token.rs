//! ID-token verification (OIDC Core §3.1.3.7) with the `auth-jwt` crate, and [`Jwks`], the
//! cache of a provider's keys.
//!
//! Order: [`auth_jwt::decode`] with [`Validation::id_token`] (size; format; `alg` in RS256,
//! ES256, EdDSA, checked before any crypto, so `none` and HS256 never get further; key by
//! `kid`; signature; `exp` and `iat` with [`CLOCK_SKEW_SECS`]; `iss` exact; `aud` contains our
//! client id; `sub` and `iat` present), then here: `typ` absent or `JWT`, `sub` a string of 1
//! to 255 bytes, `azp`, `nonce` (constant time).

use std::sync::Arc;
use std::time::{Duration, Instant};

use auth_jwt::{ErrorKind, KeySet, Validation};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq as _;
use url::Url;

use crate::oidc::{Error, ExternalIdentity, HttpClient, IdTokenError, Result, JWKS_MAX_BYTES};

/// Clock skew tolerated on `exp` and `iat`, in seconds.
pub const CLOCK_SKEW_SECS: u64 = 60;
/// Least time between two fetches of a provider's JWKS prompted by an unknown `kid`.
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(60);

const WHAT: &str = "JWKS";

/// What the ID token must say.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The provider's issuer, as configured.
    pub issuer: &'a str,
    /// Our client id at the provider.
    pub client_id: &'a str,
    /// The nonce this flow sent.
    pub nonce: &'a str,
    /// The Google Workspace domain the account must belong to (the `hd` claim), if the
    /// operator restricts the provider to one.
    pub hosted_domain: Option<&'a str>,
}

/// Verifies `token` with `keys` at `now` (Unix seconds) and returns who signed in.
pub fn verify(
    token: &str,
    keys: &KeySet,
    expected: &Expected<'_>,
    now: i64,
) -> Result<ExternalIdentity, IdTokenError> {
    let validation = Validation::id_token(expected.issuer, expected.client_id, CLOCK_SKEW_SECS);
    let now = u64::try_from(now).unwrap_or(0);
    let data = auth_jwt::decode::<Map<String, Value>>(token, keys, &validation, now)?;
    // RFC 8725 §3.11: a JWT of another explicit type (an access token, `at+jwt`; a logout
    // token) is not an ID token even if everything else fits.
    if let Some(typ) = &data.header.typ {
        if !(typ.eq_ignore_ascii_case("JWT") || typ.eq_ignore_ascii_case("application/jwt")) {
            return Err(IdTokenError::Type);
        }
    }
    let claims = data.claims;
    let subject = match claims.get("sub") {
        Some(Value::String(sub)) if (1..=255).contains(&sub.len()) => sub.clone(),
        _ => return Err(IdTokenError::Subject),
    };
    check_authorized_party(&claims, expected.client_id)?;
    match claims.get("nonce") {
        Some(Value::String(nonce)) => {
            if !bool::from(nonce.as_bytes().ct_eq(expected.nonce.as_bytes())) {
                return Err(IdTokenError::NonceMismatch);
            }
        }
        _ => return Err(IdTokenError::MissingNonce),
    }
    if let Some(domain) = expected.hosted_domain {
        // Google sets `hd` only for Workspace accounts, to the organisation's domain; a
        // consumer account that merely uses an address at that domain has none.
        match claims.get("hd") {
            Some(Value::String(hd)) if hd.eq_ignore_ascii_case(domain) => {}
            _ => return Err(IdTokenError::HostedDomain),
        }
    }
    let email = match claims.get("email") {
        None | Some(Value::Null) => None,
        Some(Value::String(email)) => Some(email.clone()),
        Some(_) => return Err(IdTokenError::Claim("email")),
    };
    // Only a JSON `true` asserts verification; a string "true" or anything else does not.
    let email_verified =
        email.is_some() && claims.get("email_verified") == Some(&Value::Bool(true));
    Ok(ExternalIdentity {
        subject,
        email,
        email_verified,
    })
}

/// `azp` (OIDC Core §3.1.3.7 items 4–5): when present it must be our client id; when `aud`
/// holds more than one value it must be present.
fn check_authorized_party(
    claims: &Map<String, Value>,
    client_id: &str,
) -> Result<(), IdTokenError> {
    let several_audiences = match claims.get("aud") {
        Some(Value::Array(audiences)) => audiences.len() > 1,
        _ => false,
    };
    match claims.get("azp") {
        None | Some(Value::Null) if several_audiences => Err(IdTokenError::AuthorizedParty),
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(azp)) if azp == client_id => Ok(()),
        Some(Value::String(_)) => Err(IdTokenError::AuthorizedParty),
        Some(_) => Err(IdTokenError::Claim("azp")),
    }
}

/// A provider's signing keys, fetched from its `jwks_uri` on first use and again when a token
/// names an unknown `kid` (the provider rotated), at most once per [`JWKS_REFETCH_INTERVAL`],
/// so that tokens with made-up key ids cannot make us hammer the provider. Share one per
/// provider (it is `Sync`); one fetch at a time.
#[derive(Debug)]
pub struct Jwks {
    uri: Url,
    refetch_interval: Duration,
    state: tokio::sync::Mutex<JwksState>,
}

#[derive(Debug, Default)]
struct JwksState {
    keys: Option<Arc<KeySet>>,
    last_attempt: Option<Instant>,
}

impl Jwks {
    /// The keys at `uri`, not fetched yet.
    pub fn new(uri: Url) -> Self {
        Self::with_refetch_interval(uri, JWKS_REFETCH_INTERVAL)
    }

    /// [`Jwks::new`] with another least time between refetches (tests).
    pub fn with_refetch_interval(uri: Url, refetch_interval: Duration) -> Self {
        Self {
            uri,
            refetch_interval,
            state: tokio::sync::Mutex::default(),
        }
    }

    /// Verifies `token` as [`verify`] does, with this provider's keys: fetched if never fetched,
    /// refetched once if the token's `kid` is unknown and the last fetch is old enough.
    pub async fn verify(
        &self,
        http: &HttpClient,
        token: &str,
        expected: &Expected<'_>,
        now: i64,
    ) -> Result<ExternalIdentity> {
        let keys = self.keys(http).await?;
        match verify(token, &keys, expected, now) {
            Err(IdTokenError::Jwt(err)) if matches!(err.kind(), ErrorKind::UnknownKey) => {
                match self.refetch(http, &keys).await? {
                    Some(fresh) => Ok(verify(token, &fresh, expected, now)?),
                    None => Err(IdTokenError::Jwt(err).into()),
                }
            }
            other => Ok(other?),
        }
    }

    /// The current keys, fetching them if there are none yet.
    pub async fn keys(&self, http: &HttpClient) -> Result<Arc<KeySet>> {
        let mut state = self.state.lock().await;
        if let Some(keys) = &state.keys {
            return Ok(Arc::clone(keys));
        }
        self.fetch(http, &mut state).await
    }

    /// Newer keys than `seen`: another task's fresher fetch, or a new fetch if the last attempt
    /// is older than the refetch interval; `None` if neither.
    async fn refetch(&self, http: &HttpClient, seen: &Arc<KeySet>) -> Result<Option<Arc<KeySet>>> {
        let mut state = self.state.lock().await;
        if let Some(keys) = &state.keys {
            if !Arc::ptr_eq(keys, seen) {
                return Ok(Some(Arc::clone(keys)));
            }
        }
        if state
            .last_attempt
            .is_some_and(|at| at.elapsed() < self.refetch_interval)
        {
            return Ok(None);
        }
        self.fetch(http, &mut state).await.map(Some)
    }

    async fn fetch(&self, http: &HttpClient, state: &mut JwksState) -> Result<Arc<KeySet>> {
        state.last_attempt = Some(Instant::now());
        let body = http.get_document(&self.uri, WHAT, JWKS_MAX_BYTES).await?;
        let keys = parse_jwks(&body)?;
        let keys = Arc::new(keys);
        state.keys = Some(Arc::clone(&keys));
        Ok(keys)
    }
}

/// The public signing keys of a JWK set. Symmetric (`oct`) keys are dropped: a provider's HMAC
/// key would be our client secret, and HS256 is refused for ID tokens anyway.
fn parse_jwks(body: &[u8]) -> Result<KeySet> {
    let keys = KeySet::from_jwks_json(body).map_err(|e| Error::invalid(WHAT, e.to_string()))?;
    let keys: KeySet = keys
        .iter()
        .filter(|key| !key.algorithm().is_symmetric())
        .cloned()
        .collect();
    if keys.is_empty() {
        return Err(Error::invalid(WHAT, "no RS256, ES256 or EdDSA signing key"));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use auth_jwt::{encode, Algorithm, Header, JwkSet, Key};
    use axum::{extract::State, routing::get, Json, Router};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use serde_json::json;

    use super::*;

    const ISSUER: &str = "https://op.example";
    const CLIENT: &str = "client-1";
    const NONCE: &str = "n-0S6_WzA2Mj";
    const NOW: i64 = 1_700_000_000;

    fn expected() -> Expected<'static> {
        Expected {
            issuer: ISSUER,
            client_id: CLIENT,
            nonce: NONCE,
            hosted_domain: None,
        }
    }

    #[test]
    fn a_hosted_domain_needs_the_same_hd_claim() {
        let key = key(Algorithm::ES256, "op-1");
        let restricted = Expected {
            hosted_domain: Some("corp.example"),
            ..expected()
        };
        let check =
            |claims: &Value| verify(&sign(&key, claims), &public(&[&key]), &restricted, NOW);
        let mut claims = claims();
        assert_eq!(check(&claims), Err(IdTokenError::HostedDomain), "no hd");
        for (hd, ok) in [
            (json!("corp.example"), true),
            (json!("CORP.example"), true),
            (json!("other.example"), false),
            (json!("corp.example.evil"), false),
            (json!(["corp.example"]), false),
        ] {
            claims["hd"] = hd.clone();
            assert_eq!(check(&claims).is_ok(), ok, "{hd}");
        }
    }

    /// One key pair per algorithm and test binary (RSA keys are slow to make).
    fn key(alg: Algorithm, kid: &str) -> Key {
        use std::collections::BTreeMap;
        use std::sync::Mutex;
        static KEYS: Mutex<BTreeMap<Algorithm, Key>> = Mutex::new(BTreeMap::new());
        let mut keys = KEYS.lock().unwrap();
        let seed = keys
            .entry(alg)
            .or_insert_with(|| Key::generate("seed", alg, &mut rand::rngs::OsRng).unwrap());
        Key::from_private_bytes(kid, alg, &seed.to_private_bytes().unwrap()).unwrap()
    }

    fn public(keys: &[&Key]) -> KeySet {
        keys.iter().map(|k| k.to_public().unwrap()).collect()
    }

    fn claims() -> Value {
        json!({
            "iss": ISSUER, "sub": "248289761001", "aud": CLIENT, "nonce": NONCE,
            "iat": NOW, "exp": NOW + 300, "email": "jane@example.com", "email_verified": true
        })
    }

    fn sign(key: &Key, claims: &Value) -> String {
        let header = Header {
            kid: Some(key.kid().to_owned()),
            typ: Some("JWT".to_owned()),
            ..Header::new(key.algorithm())
        };
        encode(&header, claims, key).unwrap()
    }

    fn check(claims: &Value) -> Result<ExternalIdentity, IdTokenError> {
        let key = key(Algorithm::ES256, "op-1");
        verify(&sign(&key, claims), &public(&[&key]), &expected(), NOW)
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

    fn jwt_kind(result: Result<ExternalIdentity, IdTokenError>) -> ErrorKind {
        match result {
            Err(IdTokenError::Jwt(err)) => err.into_kind(),
            other => panic!("not a JOSE error: {other:?}"),
        }
    }

    #[test]
    fn valid_token_ok_for_every_public_algorithm() {
        for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
            let key = key(alg, "op-1");
            let identity =
                verify(&sign(&key, &claims()), &public(&[&key]), &expected(), NOW).unwrap();
            assert_eq!(
                identity,
                ExternalIdentity {
                    subject: "248289761001".to_owned(),
                    email: Some("jane@example.com".to_owned()),
                    email_verified: true,
                },
                "{alg}"
            );
        }
    }

    #[test]
    fn alg_none_fails() {
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let token = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "kid": "op-1"})),
            b64(&claims())
        );
        let key = key(Algorithm::ES256, "op-1");
        let result = verify(&token, &public(&[&key]), &expected(), NOW);
        assert_eq!(jwt_kind(result), ErrorKind::AlgorithmNotAllowed);
    }

    #[test]
    fn alg_hs256_fails_even_with_the_client_secret_as_key() {
        // The classic confusion: an HMAC token keyed with something the attacker knows.
        let hmac = Key::hs256("op-1", b"the-client-secret-the-client-sec").unwrap();
        let keys: KeySet = [hmac.clone()].into_iter().collect();
        let result = verify(&sign(&hmac, &claims()), &keys, &expected(), NOW);
        assert_eq!(jwt_kind(result), ErrorKind::AlgorithmNotAllowed);
    }

    #[test]
    fn signature_of_another_key_fails() {
        let signer = key(Algorithm::ES256, "op-1");
        let other = Key::generate("op-1", Algorithm::ES256, &mut rand::rngs::OsRng).unwrap();
        let result = verify(
            &sign(&signer, &claims()),
            &public(&[&other]),
            &expected(),
            NOW,
        );
        assert_eq!(jwt_kind(result), ErrorKind::InvalidSignature);
    }

    #[test]
    fn tampered_payload_fails() {
        let key = key(Algorithm::ES256, "op-1");
        let token = sign(&key, &claims());
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(with("sub", json!("admin")).to_string());
        let result = verify(&parts.join("."), &public(&[&key]), &expected(), NOW);
        assert_eq!(jwt_kind(result), ErrorKind::InvalidSignature);
    }

    #[test]
    fn unknown_kid_fails() {
        let signer = key(Algorithm::ES256, "rotated");
        let known = key(Algorithm::ES256, "op-1");
        let result = verify(
            &sign(&signer, &claims()),
            &public(&[&known]),
            &expected(),
            NOW,
        );
        assert_eq!(jwt_kind(result), ErrorKind::UnknownKey);
    }

    #[test]
    fn iss_other_issuer_fails() {
        for iss in [
            "https://evil.example",
            "https://op.example/",
            "HTTPS://OP.EXAMPLE",
        ] {
            assert_eq!(
                jwt_kind(check(&with("iss", json!(iss)))),
                ErrorKind::InvalidIssuer,
                "{iss}"
            );
        }
        assert!(matches!(
            jwt_kind(check(&without("iss"))),
            ErrorKind::MissingClaim(_)
        ));
    }

    #[test]
    fn aud_without_our_client_fails() {
        assert_eq!(
            jwt_kind(check(&with("aud", json!("other")))),
            ErrorKind::InvalidAudience
        );
        assert_eq!(
            jwt_kind(check(&with("aud", json!(["a", "b"])))),
            ErrorKind::InvalidAudience
        );
        assert!(matches!(
            jwt_kind(check(&without("aud"))),
            ErrorKind::MissingClaim(_)
        ));
    }

    #[test]
    fn aud_array_with_our_client_and_no_other_ok() {
        assert!(check(&with("aud", json!([CLIENT]))).is_ok());
    }

    #[test]
    fn azp_rules() {
        let mut several = with("aud", json!([CLIENT, "other"]));
        assert_eq!(
            check(&several),
            Err(IdTokenError::AuthorizedParty),
            "several aud, no azp"
        );
        several["azp"] = json!(CLIENT);
        assert!(check(&several).is_ok(), "several aud, azp us");
        several["azp"] = json!("other");
        assert_eq!(
            check(&several),
            Err(IdTokenError::AuthorizedParty),
            "several aud, azp other"
        );
        assert_eq!(
            check(&with("azp", json!("other"))),
            Err(IdTokenError::AuthorizedParty),
            "one aud, azp other"
        );
        assert!(
            check(&with("azp", json!(CLIENT))).is_ok(),
            "one aud, azp us"
        );
        assert_eq!(
            check(&with("azp", json!(7))),
            Err(IdTokenError::Claim("azp"))
        );
    }

    #[test]
    fn nonce_rules() {
        assert_eq!(check(&without("nonce")), Err(IdTokenError::MissingNonce));
        assert_eq!(
            check(&with("nonce", Value::Null)),
            Err(IdTokenError::MissingNonce)
        );
        assert_eq!(
            check(&with("nonce", json!(1))),
            Err(IdTokenError::MissingNonce)
        );
        for nonce in ["", "n-0S6_WzA2Mk", "n-0S6_WzA2Mj ", "n-0S6_WzA2M"] {
            assert_eq!(
                check(&with("nonce", json!(nonce))),
                Err(IdTokenError::NonceMismatch),
                "{nonce:?}"
            );
        }
    }

    #[test]
    fn exp_and_iat_with_sixty_seconds_of_skew() {
        assert!(check(&with("exp", json!(NOW - 59))).is_ok());
        assert_eq!(
            jwt_kind(check(&with("exp", json!(NOW - 60)))),
            ErrorKind::Expired
        );
        assert!(matches!(
            jwt_kind(check(&without("exp"))),
            ErrorKind::MissingClaim(_)
        ));
        assert!(check(&with("iat", json!(NOW + 60))).is_ok());
        assert_eq!(
            jwt_kind(check(&with("iat", json!(NOW + 61)))),
            ErrorKind::IssuedInFuture
        );
        assert!(matches!(
            jwt_kind(check(&without("iat"))),
            ErrorKind::MissingClaim(_)
        ));
    }

    #[test]
    fn sub_rules() {
        assert!(matches!(
            jwt_kind(check(&without("sub"))),
            ErrorKind::MissingClaim(_)
        ));
        assert_eq!(check(&with("sub", json!(""))), Err(IdTokenError::Subject));
        assert_eq!(
            check(&with("sub", json!("x".repeat(256)))),
            Err(IdTokenError::Subject)
        );
        assert_eq!(check(&with("sub", json!(42))), Err(IdTokenError::Subject));
        assert!(check(&with("sub", json!("x".repeat(255)))).is_ok());
    }

    #[test]
    fn typ_other_than_jwt_fails() {
        let key = key(Algorithm::ES256, "op-1");
        for (typ, ok) in [
            (None, true),
            (Some("JWT"), true),
            (Some("application/jwt"), true),
            (Some("at+jwt"), false),
            (Some("logout+jwt"), false),
        ] {
            let header = Header {
                kid: Some("op-1".to_owned()),
                typ: typ.map(str::to_owned),
                ..Header::new(Algorithm::ES256)
            };
            let token = encode(&header, &claims(), &key).unwrap();
            let result = verify(&token, &public(&[&key]), &expected(), NOW);
            assert_eq!(result.is_ok(), ok, "{typ:?}");
            if !ok {
                assert_eq!(result, Err(IdTokenError::Type));
            }
        }
    }

    #[test]
    fn email_verified_only_for_json_true() {
        let cases = [
            (json!(true), true),
            (json!("true"), false),
            (json!(1), false),
            (json!(false), false),
            (Value::Null, false),
        ];
        for (value, verified) in cases {
            let identity = check(&with("email_verified", value.clone())).unwrap();
            assert_eq!(identity.email_verified, verified, "{value}");
        }
        let identity = check(&without("email")).unwrap();
        assert_eq!((identity.email, identity.email_verified), (None, false));
        assert_eq!(
            check(&with("email", json!(["a@b"]))),
            Err(IdTokenError::Claim("email"))
        );
    }

    #[test]
    fn jwks_with_only_symmetric_or_no_keys_is_refused() {
        let oct = json!({"keys": [{"kty": "oct", "kid": "k", "alg": "HS256", "k": URL_SAFE_NO_PAD.encode([7_u8; 32])}]});
        let err = parse_jwks(oct.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("no RS256"), "{err}");
        assert!(parse_jwks(br#"{"keys": []}"#).is_err());
        assert!(parse_jwks(b"not json").is_err());
    }

    /// A JWKS endpoint whose served set can be swapped, counting its hits.
    #[derive(Clone)]
    struct Served {
        set: Arc<std::sync::Mutex<Value>>,
        hits: Arc<AtomicUsize>,
    }

    async fn jwks_server(keys: &[&Key]) -> (Url, Served) {
        let served = Served {
            set: Arc::new(std::sync::Mutex::new(jwks_json(keys))),
            hits: Arc::default(),
        };
        let router = Router::new()
            .route(
                "/jwks",
                get(|State(served): State<Served>| async move {
                    served.hits.fetch_add(1, Ordering::SeqCst);
                    let set = served.set.lock().unwrap().clone();
                    Json(set)
                }),
            )
            .with_state(served.clone());
        let base = crate::oidc::test_support::serve(router).await;
        (Url::parse(&format!("{base}/jwks")).unwrap(), served)
    }

    fn jwks_json(keys: &[&Key]) -> Value {
        serde_json::to_value(JwkSet::public(&public(keys))).unwrap()
    }

    #[tokio::test]
    async fn jwks_is_fetched_once_and_cached() {
        let key = key(Algorithm::RS256, "op-1");
        let (uri, served) = jwks_server(&[&key]).await;
        let jwks = Jwks::new(uri);
        let http = HttpClient::new().unwrap();
        for _ in 0..3 {
            let identity = jwks
                .verify(&http, &sign(&key, &claims()), &expected(), NOW)
                .await
                .unwrap();
            assert_eq!(identity.subject, "248289761001");
        }
        assert_eq!(served.hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn unknown_kid_refetches_once_then_rate_limits() {
        let old = key(Algorithm::ES256, "old");
        let new = key(Algorithm::EdDSA, "new");
        let (uri, served) = jwks_server(&[&old]).await;
        let jwks = Jwks::new(uri);
        let http = HttpClient::new().unwrap();
        jwks.verify(&http, &sign(&old, &claims()), &expected(), NOW)
            .await
            .unwrap();

        // The provider rotates: a token of the new key makes one refetch, which finds it.
        *served.set.lock().unwrap() = jwks_json(&[&old, &new]);
        // The first fetch was just now: within the interval no refetch happens…
        let err = jwks
            .verify(&http, &sign(&new, &claims()), &expected(), NOW)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidIdToken(IdTokenError::Jwt(e)) if *e.kind() == ErrorKind::UnknownKey),
            "{err}"
        );
        assert_eq!(served.hits.load(Ordering::SeqCst), 1);

        // …after it, exactly one.
        let jwks = Jwks::with_refetch_interval(jwks.uri.clone(), Duration::ZERO);
        *served.set.lock().unwrap() = jwks_json(&[&old]);
        jwks.verify(&http, &sign(&old, &claims()), &expected(), NOW)
            .await
            .unwrap();
        *served.set.lock().unwrap() = jwks_json(&[&old, &new]);
        let identity = jwks
            .verify(&http, &sign(&new, &claims()), &expected(), NOW)
            .await
            .unwrap();
        assert_eq!(identity.subject, "248289761001");
        assert_eq!(served.hits.load(Ordering::SeqCst), 3);

        // Made-up key ids: one refetch per token at most, none while rate-limited.
        let limited = Jwks::with_refetch_interval(jwks.uri.clone(), Duration::from_secs(3600));
        limited.keys(&http).await.unwrap();
        let hits = served.hits.load(Ordering::SeqCst);
        for i in 0..5 {
            let fake = key(Algorithm::ES256, &format!("fake-{i}"));
            let err = limited
                .verify(&http, &sign(&fake, &claims()), &expected(), NOW)
                .await
                .unwrap_err();
            assert!(matches!(err, Error::InvalidIdToken(_)), "{err}");
        }
        assert_eq!(
            served.hits.load(Ordering::SeqCst),
            hits,
            "no refetch while rate-limited"
        );
    }

    #[tokio::test]
    async fn jwks_unreachable_is_unavailable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let uri = Url::parse(&format!("http://{}/jwks", listener.local_addr().unwrap())).unwrap();
        drop(listener);
        let key = key(Algorithm::ES256, "op-1");
        let err = Jwks::new(uri)
            .verify(
                &HttpClient::new().unwrap(),
                &sign(&key, &claims()),
                &expected(),
                NOW,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    }
}
