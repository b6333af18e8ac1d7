//! The verification key set as a polled [`Document`]: what `remote_jwks` fetches, how a fetched
//! JWK Set is checked, and how it is named in shared data. Polling, sharing between workers and
//! staleness are [`crate::poll`]'s; verifying tokens is `auth_jwt`'s.

use auth_jwt::KeySet;

use crate::config::RemoteJwks;
use crate::poll::{Document, SharedNames, Timing};

/// Largest key set document accepted from the key source, in bytes.
pub(crate) const MAX_JWKS_BYTES: usize = 1 << 20;

impl Document for KeySet {
    const KIND: &'static str = "jwks";
    const MAX_BYTES: usize = MAX_JWKS_BYTES;

    /// A JWK Set with at least one usable key (`EC` P-256 for ES256, `OKP` Ed25519 for EdDSA,
    /// `RSA` for RS256, `oct` for HS256); a set with none would make every token fail, so the
    /// last good set is kept instead.
    fn parse(body: &[u8]) -> Result<Self, String> {
        match KeySet::from_jwks_json(body) {
            Ok(set) if set.is_empty() => Err("the key set holds no usable key".to_owned()),
            Ok(set) => Ok(set),
            Err(err) => Err(format!("bad key set: {err}")),
        }
    }

    fn summary(&self) -> String {
        format!("{} keys", self.len())
    }
}

/// The shared-data names of the key source of `remote`.
pub(crate) fn shared_names(remote: &RemoteJwks) -> SharedNames {
    SharedNames::new(KeySet::KIND, &remote.source.cluster, &remote.source.path)
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

    #[test]
    fn only_key_sets_with_a_usable_key_are_accepted() {
        let good =
            format!(r#"{{"keys":[{{"kty":"oct","kid":"k1","alg":"HS256","k":"{SECRET_B64}"}}]}}"#);
        assert_eq!(
            KeySet::parse(good.as_bytes()).map(|s| s.summary()),
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
            assert!(KeySet::parse(body.as_bytes()).is_err(), "{reason}");
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
        let set = KeySet::parse(&body)?;
        assert_eq!(set.summary(), "3 keys");
        for key in keys.iter().filter(|k| !k.algorithm().is_symmetric()) {
            let parsed = set.get(key.kid()).ok_or("a key is missing")?;
            assert_eq!(parsed.algorithm(), key.algorithm());
            assert!(!parsed.can_sign(), "a public key only");
        }

        // A JWK that carries a private member is refused whole, never used.
        let mut leaked = serde_json::to_value(auth_jwt::JwkSet { keys: vec![] })?;
        let mut jwk = serde_json::to_value(
            auth_jwt::Jwk::public(keys.first().ok_or("no key")?).ok_or("no public jwk")?,
        )?;
        jwk["d"] = serde_json::json!("AAAA");
        leaked["keys"] = serde_json::json!([jwk]);
        assert!(KeySet::parse(leaked.to_string().as_bytes()).is_err());
        Ok(())
    }

    #[test]
    fn an_oversized_key_set_is_refused_unread() {
        let fetched = classify::<KeySet>(Some("200"), None, MAX_JWKS_BYTES + 1, None, None);
        assert!(matches!(fetched, Fetched::Failed(why) if why.contains("limit")));
    }
}
