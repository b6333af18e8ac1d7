//! Access tokens (JWT, `typ: at+jwt`, RFC 9068) and refresh tokens (opaque, rotated).

use auth_jwt::{Header, Validation};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use hmac::{Hmac, Mac};
use rand::{rngs::OsRng, RngCore};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{config::Config, domain::AuthMethod, keyring::RingKey};

/// Claims of every access token we issue.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccessClaims {
    /// Issuer (`AUTH_JWT_ISSUER`).
    pub iss: String,
    /// The user id.
    pub sub: String,
    /// Audiences (`AUTH_JWT_AUDIENCE`).
    pub aud: Vec<String>,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Issue time, Unix seconds.
    pub iat: i64,
    /// Unique token id.
    pub jti: String,
    /// Session id.
    pub sid: String,
    /// RFC 9068 §2.2 client id (`AUTH_JWT_CLIENT_ID`).
    pub client_id: String,
    /// The user's email.
    pub email: String,
    /// The user's roles, sorted.
    pub roles: Vec<String>,
    /// How the user authenticated (RFC 8176 / OIDC Core `amr`): `["pwd"]`, `["pwd","otp"]` or `["oauth"]`.
    /// Absent from tokens issued before issue 14, which read as empty.
    #[serde(default)]
    pub amr: Vec<String>,
    /// The assurance level (OIDC Core `acr`, in NIST SP 800-63B's words): `aal1` for one
    /// factor, `aal2` for a password and a TOTP code. Absent from tokens issued before issue 15.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    /// Whether the owner of `email` proved it (OIDC Core `email_verified`): by a verification
    /// link, a password reset by mail, or a provider vouching for it. Absent from tokens issued
    /// before issue 15.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
}

/// The subject of a token being issued.
#[derive(Debug)]
pub struct Subject<'a> {
    /// User id.
    pub user_id: &'a str,
    /// Normalised email.
    pub email: &'a str,
    /// Current roles.
    pub roles: Vec<String>,
    /// Session id.
    pub session_id: &'a str,
    /// How the session's user authenticated.
    pub auth_method: AuthMethod,
    /// Whether the user's email is verified.
    pub email_verified: bool,
}

/// Signs a new access token for `subject` with `signer`, valid from `now` for `ttl_secs`.
pub fn issue_access_token(
    config: &Config,
    signer: &RingKey,
    subject: Subject<'_>,
    now: i64,
    ttl_secs: i64,
) -> Result<String, auth_jwt::Error> {
    let claims = AccessClaims {
        iss: config.issuer.clone(),
        sub: subject.user_id.to_owned(),
        aud: config.audiences.clone(),
        exp: now.saturating_add(ttl_secs),
        iat: now,
        jti: uuid::Uuid::new_v4().to_string(),
        sid: subject.session_id.to_owned(),
        client_id: config.client_id.clone(),
        email: subject.email.to_owned(),
        roles: subject.roles,
        amr: subject
            .auth_method
            .amr()
            .iter()
            .map(|&method| method.to_owned())
            .collect(),
        acr: Some(subject.auth_method.acr().to_owned()),
        email_verified: Some(subject.email_verified),
    };
    auth_jwt::encode(&Header::access_token(&signer.key), &claims, &signer.key)
}

/// The validation rules of `/validate` (and of bearer tokens at `/logout` and `/password`): the
/// access-token rules of `auth-jwt`, the same the gateway applies, for our issuer, audiences and
/// clock skew.
pub fn access_validation(config: &Config) -> Validation {
    Validation::access_token(
        &config.issuer,
        &config.audiences,
        config.clock_skew.as_secs(),
    )
}

/// Random bytes in a refresh token: 256 bits.
const REFRESH_BYTES: usize = 32;

/// An opaque refresh token: 32 bytes, base64url without padding (43 characters).
///
/// Only its SHA-256 is stored. Each successor is `HMAC-SHA-256(session rotation key,
/// predecessor)`: every concurrent rotation of one token computes the same successor, a replay
/// inside the grace window can be answered with it without storing it, and nobody holding only
/// the database (hashes and sealed keys) or only an old token (no key) can compute it; nor
/// both together, since the rotation key is stored sealed under the key-encryption key.
pub struct RefreshToken {
    bytes: [u8; REFRESH_BYTES],
    text: SecretString,
}

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshToken(..)")
    }
}

impl RefreshToken {
    /// A fresh token from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0_u8; REFRESH_BYTES];
        OsRng.fill_bytes(&mut bytes);
        Self::from_bytes(bytes)
    }

    /// Parses a presented token; `None` unless it has the exact format, so that malformed input
    /// never reaches the database.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 43 {
            return None;
        }
        let decoded = URL_SAFE_NO_PAD.decode(text).ok()?;
        let bytes: [u8; REFRESH_BYTES] = decoded.try_into().ok()?;
        Some(Self::from_bytes(bytes))
    }

    /// The token derived from this one with `rotation_key`.
    pub fn successor(&self, rotation_key: &[u8]) -> Self {
        let mut bytes = [0_u8; REFRESH_BYTES];
        if let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(rotation_key) {
            mac.update(&self.bytes);
            bytes.copy_from_slice(&mac.finalize().into_bytes());
        }
        Self::from_bytes(bytes)
    }

    /// SHA-256 of the token: what the database holds.
    pub fn hash(&self) -> Vec<u8> {
        Sha256::digest(self.bytes).to_vec()
    }

    /// The token as sent to the client.
    pub fn expose(&self) -> &str {
        self.text.expose_secret()
    }

    fn from_bytes(bytes: [u8; REFRESH_BYTES]) -> Self {
        Self {
            bytes,
            text: SecretString::from(URL_SAFE_NO_PAD.encode(bytes)),
        }
    }
}

/// A new random rotation key for a session (stored only sealed: see
/// [`crate::kek::KeyEncryptionKeys::seal_rotation_key`]).
pub fn new_rotation_key() -> zeroize::Zeroizing<Vec<u8>> {
    let mut key = zeroize::Zeroizing::new(vec![0_u8; 32]);
    OsRng.fill_bytes(&mut key);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_token_round_trips_through_its_text() {
        let token = RefreshToken::generate();
        let parsed = RefreshToken::parse(token.expose()).unwrap();
        assert_eq!(parsed.hash(), token.hash());
    }

    #[test]
    fn malformed_refresh_tokens_do_not_parse() {
        let valid = RefreshToken::generate().expose().to_owned();
        let cases = [
            (String::new(), "empty"),
            (valid[..42].to_owned(), "one character short"),
            (format!("{valid}A"), "one character long"),
            (format!("{}=", &valid[..42]), "padding"),
            (
                "' OR 1=1; DROP TABLE sessions; --xxxxxxxxxx".to_owned(),
                "SQL meta-characters",
            ),
            (format!("{}+", &valid[..42]), "standard base64 alphabet"),
        ];
        for (text, reason) in cases {
            assert!(RefreshToken::parse(&text).is_none(), "{reason}");
        }
    }

    #[test]
    fn successor_depends_on_key_and_predecessor() {
        let token = RefreshToken::generate();
        let a = token.successor(b"key-a-key-a-key-a-key-a-key-a-ke");
        assert_eq!(
            a.hash(),
            token.successor(b"key-a-key-a-key-a-key-a-key-a-ke").hash()
        );
        assert_ne!(
            a.hash(),
            token.successor(b"key-b-key-b-key-b-key-b-key-b-ke").hash()
        );
        assert_ne!(
            a.hash(),
            RefreshToken::generate()
                .successor(b"key-a-key-a-key-a-key-a-key-a-ke")
                .hash()
        );
    }
}
