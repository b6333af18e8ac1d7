//! The verification key set as a polled [`Document`]: what `remote_jwks` fetches, how a fetched
//! JWK Set is checked, and how it is named in shared data. Polling, sharing between workers and
//! staleness are [`crate::poll`]'s; verifying tokens is `auth_jwt`'s.

use auth_jwt::{Algorithm, KeySet};

use crate::config::RemoteJwks;
use crate::poll::{Document, SharedNames, Timing};

/// Largest key set document accepted from the key source, in bytes.
pub(crate) const MAX_JWKS_BYTES: usize = 1 << 20;

/// A key set as the filter uses it: the keys of the accepted algorithms (the `algorithms`
/// field), and which keys were left out because their algorithm is not one of them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Jwks {
    keys: KeySet,
    /// The `kid` and algorithm of each key left out, in `kid` order.
    ignored: Vec<(String, Algorithm)>,
}

impl Jwks {
    /// The keys of `set` whose algorithm is in `algorithms`; the others are set aside, named
    /// by [`Jwks::warning`]. A key of another algorithm could only verify tokens whose `alg`
    /// the validation refuses anyway; leaving it out also means a secret that reaches the
    /// filter from a source it must not trust (an `oct` key in a public JWKS) is never held.
    pub(crate) fn accept(set: KeySet, algorithms: &[Algorithm]) -> Self {
        let (keys, ignored): (Vec<_>, Vec<_>) = set
            .iter()
            .cloned()
            .partition(|key| algorithms.contains(&key.algorithm()));
        Self {
            keys: keys.into_iter().collect(),
            ignored: ignored
                .iter()
                .map(|key| (key.kid().to_owned(), key.algorithm()))
                .collect(),
        }
    }

    /// The keys tokens are verified with.
    pub(crate) fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// The keys left out, by `kid` and algorithm.
    #[cfg(test)]
    pub(crate) fn ignored(&self) -> &[(String, Algorithm)] {
        &self.ignored
    }
}

impl Document for Jwks {
    const KIND: &'static str = "jwks";
    const MAX_BYTES: usize = MAX_JWKS_BYTES;
    /// The accepted algorithms.
    type Options = Vec<Algorithm>;

    /// A JWK Set with at least one usable key (`EC` P-256 for ES256, `OKP` Ed25519 for EdDSA,
    /// `RSA` for RS256, `oct` for HS256) of an accepted algorithm; a set with none would make
    /// every token fail, so the last good set is kept instead.
    fn parse(body: &[u8], algorithms: &Vec<Algorithm>) -> Result<Self, String> {
        let set = KeySet::from_jwks_json(body).map_err(|err| format!("bad key set: {err}"))?;
        if set.is_empty() {
            return Err("the key set holds no usable key".to_owned());
        }
        let jwks = Jwks::accept(set, algorithms);
        if jwks.keys.is_empty() {
            return Err(format!(
                "the key set holds no key of an accepted algorithm ({}); {}",
                names(algorithms),
                jwks.warning().unwrap_or_default()
            ));
        }
        Ok(jwks)
    }

    fn summary(&self) -> String {
        match self.ignored.len() {
            0 => format!("{} keys", self.keys.len()),
            n => format!("{} keys, {n} ignored", self.keys.len()),
        }
    }

    fn warning(&self) -> Option<String> {
        if self.ignored.is_empty() {
            return None;
        }
        let keys: Vec<String> = self
            .ignored
            .iter()
            .map(|(kid, alg)| format!("`{kid}` ({alg})"))
            .collect();
        Some(format!(
            "ignored keys of an algorithm not in `algorithms`: {}",
            keys.join(", ")
        ))
    }
}

/// `ES256, EdDSA`, for messages.
pub(crate) fn names(algorithms: &[Algorithm]) -> String {
    algorithms
        .iter()
        .map(|alg| alg.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The shared-data names of the key source of `remote`.
pub(crate) fn shared_names(remote: &RemoteJwks) -> SharedNames {
    SharedNames::new(Jwks::KIND, &remote.source.cluster, &remote.source.path)
}

/// How the key source is polled: every `poll_seconds`, unusable `stale_after_seconds` after the
/// last successful fetch.
pub(crate) fn timing(remote: &RemoteJwks) -> Timing {
    Timing {
        poll_seconds: remote.source.poll_seconds,
        timeout_ms: remote.source.timeout_ms,
        stale_after_seconds: Some(remote.stale_after_seconds),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::SECRET_B64;
    use crate::poll::{classify, Fetched};

    /// Parses `body` accepting every algorithm.
    fn parse_all(body: &[u8]) -> Result<Jwks, String> {
        Jwks::parse(body, &Algorithm::ALL.to_vec())
    }

    #[test]
    fn only_key_sets_with_a_usable_key_are_accepted() {
        let good =
            format!(r#"{{"keys":[{{"kty":"oct","kid":"k1","alg":"HS256","k":"{SECRET_B64}"}}]}}"#);
        assert_eq!(
            parse_all(good.as_bytes()).map(|s| s.summary()),
            Ok("1 keys".to_owned())
        );
        let cases = [
            (r#"{"keys":[]}"#, "no key at all"),
            (
                r#"{"keys":[{"kty":"RSA","kid":"r","n":"x","e":"AQAB"}]}"#,
                "no key of a supported type",
            ),
            (r#"{"keys":"#, "truncated json"),
            ("[]", "not a key set"),
        ];
        for (body, reason) in cases {
            assert!(parse_all(body.as_bytes()).is_err(), "{reason}");
        }
    }

    #[test]
    fn public_keys_of_every_algorithm_are_usable_and_private_members_refused() -> crate::TestResult
    {
        let keys = auth_jwt::Algorithm::ALL
            .iter()
            .map(|&alg| crate::crypto::tests::key(alg))
            .collect::<Result<Vec<_>, _>>()?;
        // What auth-api's public JWKS serves: the public half of every asymmetric key.
        let public: Vec<_> = keys.iter().filter_map(auth_jwt::Jwk::public).collect();
        assert_eq!(public.len(), 3);
        let body = serde_json::to_vec(&auth_jwt::JwkSet { keys: public })?;
        let set = parse_all(&body)?;
        assert_eq!(set.summary(), "3 keys");
        let set = set.keys();
        for key in keys.iter().filter(|k| !k.algorithm().is_symmetric()) {
            let parsed = set.get(key.kid()).ok_or("a key is missing")?;
            assert_eq!(parsed.algorithm(), key.algorithm());
            assert!(!parsed.can_sign(), "a public key only");
        }

        // A JWK that carries a private member refuses the whole set, valid keys beside it
        // included: such a source has leaked a private key, and none of it is used.
        let mut leaked = serde_json::to_value(auth_jwt::JwkSet { keys: vec![] })?;
        let leaker = keys.first().ok_or("no key")?;
        let mut jwk = serde_json::to_value(auth_jwt::Jwk::public(leaker).ok_or("no public jwk")?)?;
        jwk["d"] = serde_json::json!("AAAA");
        let beside = serde_json::to_value(
            auth_jwt::Jwk::public(keys.get(1).ok_or("no second key")?).ok_or("no public jwk")?,
        )?;
        leaked["keys"] = serde_json::json!([beside, jwk]);
        let Err(why) = parse_all(leaked.to_string().as_bytes()) else {
            return Err("a set with a leaked private key was accepted".into());
        };
        assert!(
            why.contains(&format!(
                "key `{}` carries private key members",
                leaker.kid()
            )),
            "{why}"
        );
        Ok(())
    }

    #[test]
    fn an_oversized_key_set_is_refused_unread() {
        let fetched = classify::<Jwks>(
            Some("200"),
            None,
            MAX_JWKS_BYTES + 1,
            None,
            None,
            &Algorithm::ALL.to_vec(),
        );
        assert!(matches!(fetched, Fetched::Failed(why) if why.contains("limit")));
    }

    #[test]
    fn keys_of_an_algorithm_not_accepted_are_ignored_and_named() -> crate::TestResult {
        let keys = Algorithm::ALL
            .iter()
            .map(|&alg| crate::crypto::tests::key(alg))
            .collect::<Result<Vec<_>, _>>()?;
        // An `oct` secret beside the public keys: what a public JWKS must never hand over.
        let body = serde_json::to_vec(&auth_jwt::JwkSet {
            keys: keys.iter().map(auth_jwt::Jwk::from_key).collect(),
        })?;
        let public = vec![Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256];
        let jwks = Jwks::parse(&body, &public)?;
        assert_eq!(jwks.keys().len(), 3);
        assert!(
            jwks.keys().get("k-HS256").is_none(),
            "the secret is not kept"
        );
        assert_eq!(jwks.ignored(), [("k-HS256".to_owned(), Algorithm::HS256)]);
        assert_eq!(jwks.summary(), "3 keys, 1 ignored");
        assert_eq!(
            jwks.warning().as_deref(),
            Some("ignored keys of an algorithm not in `algorithms`: `k-HS256` (HS256)")
        );
        assert_eq!(parse_all(&body)?.warning(), None, "nothing left out");

        // A set with nothing usable left is a failed fetch: the last good set stays.
        let only_secret =
            format!(r#"{{"keys":[{{"kty":"oct","kid":"k1","alg":"HS256","k":"{SECRET_B64}"}}]}}"#);
        let Err(why) = Jwks::parse(only_secret.as_bytes(), &public) else {
            return Err("a set of secrets only was accepted".into());
        };
        assert!(why.contains("no key of an accepted algorithm"), "{why}");
        let fetched = classify::<Jwks>(
            Some("200"),
            None,
            only_secret.len(),
            Some(only_secret.as_bytes()),
            None,
            &public,
        );
        assert!(matches!(fetched, Fetched::Failed(_)), "{fetched:?}");
        Ok(())
    }
}
