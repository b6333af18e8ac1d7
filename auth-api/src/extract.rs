//! Request extractors whose failures are [`ApiError`]s, so that every rejection has our shape.

use axum::{
    body::{Body, Bytes},
    extract::{
        rejection::{BytesRejection, JsonRejection},
        FromRequest, Request,
    },
    http::{header, HeaderMap, StatusCode},
};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// `axum::Json`, but a malformed, oversized or mistyped body is an [`ApiError`].
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            _ => Self::InvalidRequest(rejection.body_text()),
        }
    }
}

/// [`Json`] for a body that may be left out: an empty body is `T::default()`, any other is
/// JSON, refused exactly as [`Json`] refuses it.
#[derive(Debug)]
pub struct OptionalJson<T>(pub T);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = request.headers().get(header::CONTENT_TYPE).cloned();
        let body = Bytes::from_request(request, state).await?;
        if body.is_empty() {
            return Ok(Self(T::default()));
        }
        // The body is read (within the size limit); `Json` parses it as it parses any other.
        let mut again = Request::new(Body::from(body));
        if let Some(content_type) = content_type {
            again
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type);
        }
        let Json(value) = Json::from_request(again, state).await?;
        Ok(Self(value))
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            _ => Self::InvalidRequest(rejection.body_text()),
        }
    }
}

/// The bearer token of the `Authorization` header (RFC 6750 §2.1).
///
/// `Ok(None)` when there is no header or it uses another scheme (`Basic …`): the request simply
/// carries no bearer credentials. A `Bearer` header that is not exactly `Bearer <token68>`
/// (two spaces, trailing garbage, several headers) is an `invalid_token` error.
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let malformed = || ApiError::InvalidToken("malformed authorization header".to_owned());
    if values.next().is_some() {
        return Err(malformed());
    }
    let Ok(value) = value.to_str() else {
        return Err(malformed());
    };
    let Some((scheme, token)) = value.split_once(' ') else {
        return if value.eq_ignore_ascii_case("bearer") {
            Err(malformed())
        } else {
            Ok(None)
        };
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    if auth_jwt::is_token68(token) {
        Ok(Some(token))
    } else {
        Err(malformed())
    }
}

/// The value of cookie `name`: `None` if absent, or present more than once (a planted copy
/// must not choose which one counts). Headers are split as bytes: another cookie with a
/// non-ASCII byte (which any page of the origin can set) must not hide ours.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b';'))
        .filter_map(|pair| std::str::from_utf8(pair).ok())
        // Only RFC 6265's whitespace (SP, HTAB): `str::trim` would also strip Unicode spaces,
        // and a cookie named `\u{2000}__Host-x`, which anyone may set (to a browser it has no
        // prefix), would then read as ours.
        .filter_map(|pair| pair.trim_matches([' ', '\t']).split_once('='))
        .filter(|(key, _)| *key == name)
        .map(|(_, value)| value);
    match (found.next(), found.next()) {
        (Some(value), None) => Some(value),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(
            bearer_token(&headers(&["bearer abc.def.ghi"])).unwrap(),
            Some("abc.def.ghi")
        );
        assert_eq!(
            bearer_token(&headers(&["BEARER abc"])).unwrap(),
            Some("abc")
        );
    }

    #[test]
    fn other_schemes_and_no_header_carry_no_token() {
        assert_eq!(bearer_token(&headers(&[])).unwrap(), None);
        assert_eq!(
            bearer_token(&headers(&["Basic dXNlcjpwYXNz"])).unwrap(),
            None
        );
    }

    #[test]
    fn malformed_bearer_headers_are_refused() {
        let cases = [
            ("Bearer  abc", "two spaces"),
            ("Bearer abc def", "trailing garbage"),
            ("Bearer", "no token"),
            ("Bearer ", "empty token"),
            ("Bearer a\"b", "quote inside"),
        ];
        for (value, reason) in cases {
            assert!(bearer_token(&headers(&[value])).is_err(), "{reason}");
        }
        assert!(
            bearer_token(&headers(&["Bearer a", "Bearer b"])).is_err(),
            "two headers"
        );
    }

    #[test]
    fn a_cookie_behind_a_unicode_space_is_not_ours() {
        for space in ["\u{2000}", "\u{3000}", "\u{a0}", "\u{85}"] {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::COOKIE,
                HeaderValue::from_bytes(format!("{space}__Host-auth-account=tossed").as_bytes())
                    .unwrap(),
            );
            assert_eq!(cookie(&headers, "__Host-auth-account"), None, "{space:?}");
        }
    }

    #[test]
    fn a_cookie_is_found_once_or_not_at_all() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-auth-sign-in=abc; b=2"),
        );
        assert_eq!(cookie(&headers, "__Host-auth-sign-in"), Some("abc"));
        let mut other = HeaderMap::new();
        other.insert(
            header::COOKIE,
            HeaderValue::from_bytes(b"pref=caf\xc3\xa9; __Host-auth-sign-in=abc").unwrap(),
        );
        assert_eq!(
            cookie(&other, "__Host-auth-sign-in"),
            Some("abc"),
            "another cookie's bytes do not hide ours"
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-auth-sign-in=planted"),
        );
        assert_eq!(cookie(&headers, "__Host-auth-sign-in"), None);
    }
}
