//! Tokens cross between this crate and `jsonwebtoken` 9 in both directions.

use auth_jwt::{decode, encode, ErrorKind, Header};
use jsonwebtoken as jwt;
use serde::{Deserialize, Serialize};

use crate::{key, keys, now, validation, AUDIENCE, ISSUER, KID, SECRET};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    iat: u64,
    jti: String,
    roles: Vec<String>,
}

fn claims(now: u64) -> Claims {
    Claims {
        iss: ISSUER.to_owned(),
        sub: "user-1".to_owned(),
        aud: AUDIENCE.to_owned(),
        exp: now + 900,
        iat: now,
        jti: "jti-1".to_owned(),
        roles: vec!["user".to_owned(), "admin".to_owned()],
    }
}

fn their_validation() -> jwt::Validation {
    let mut validation = jwt::Validation::new(jwt::Algorithm::HS256);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.validate_nbf = true;
    validation
}

fn their_header(typ: &str) -> jwt::Header {
    jwt::Header {
        typ: Some(typ.to_owned()),
        kid: Some(KID.to_owned()),
        ..jwt::Header::new(jwt::Algorithm::HS256)
    }
}

#[test]
fn our_token_decodes_with_jsonwebtoken() {
    let now = now();
    let token = encode(&Header::access_token(&key()), &claims(now), &key()).unwrap();

    let header = jwt::decode_header(&token).unwrap();
    let data = jwt::decode::<Claims>(
        &token,
        &jwt::DecodingKey::from_secret(SECRET),
        &their_validation(),
    )
    .unwrap();

    assert_eq!(header.alg, jwt::Algorithm::HS256);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.kid.as_deref(), Some(KID));
    assert_eq!(data.claims, claims(now));
}

#[test]
fn our_token_with_other_secret_fails_in_jsonwebtoken() {
    let other = auth_jwt::Key::hs256(KID, &[7; 32]).unwrap();
    let token = encode(&Header::access_token(&key()), &claims(now()), &other).unwrap();
    let result = jwt::decode::<Claims>(
        &token,
        &jwt::DecodingKey::from_secret(SECRET),
        &their_validation(),
    );
    assert!(matches!(
        result.unwrap_err().kind(),
        jwt::errors::ErrorKind::InvalidSignature
    ));
}

#[test]
fn jsonwebtoken_access_token_decodes_with_ours() {
    let now = now();
    let token = jwt::encode(
        &their_header("at+jwt"),
        &claims(now),
        &jwt::EncodingKey::from_secret(SECRET),
    )
    .unwrap();

    let data = decode::<Claims>(&token, &keys(), &validation(), now).unwrap();

    assert_eq!(data.header, Header::access_token(&key()));
    assert_eq!(data.claims, claims(now));
}

#[test]
fn jsonwebtoken_default_typ_jwt_fails_with_ours() {
    let now = now();
    let token = jwt::encode(
        &their_header("JWT"),
        &claims(now),
        &jwt::EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    let err = decode::<Claims>(&token, &keys(), &validation(), now).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::InvalidType));
}

#[test]
fn jsonwebtoken_token_with_other_secret_fails_with_ours() {
    let now = now();
    let key = jwt::EncodingKey::from_secret(b"another-secret-another-secret-32");
    let token = jwt::encode(&their_header("at+jwt"), &claims(now), &key).unwrap();
    let err = decode::<Claims>(&token, &keys(), &validation(), now).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::InvalidSignature));
}

#[test]
fn expired_token_fails_in_both() {
    let now = now();
    let mut expired = claims(now - 7200);
    expired.exp = now - 3600;
    let token = encode(&Header::access_token(&key()), &expired, &key()).unwrap();

    let ours = decode::<Claims>(&token, &keys(), &validation(), now).unwrap_err();
    let theirs = jwt::decode::<Claims>(
        &token,
        &jwt::DecodingKey::from_secret(SECRET),
        &their_validation(),
    )
    .unwrap_err();

    assert!(matches!(ours.kind(), ErrorKind::Expired));
    assert!(matches!(
        theirs.kind(),
        jwt::errors::ErrorKind::ExpiredSignature
    ));
}
