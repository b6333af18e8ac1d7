//! Request extractors whose failures are [`ApiError`]s, so that every rejection has our shape.

use axum::{
    extract::{rejection::JsonRejection, FromRequest},
    http::{header, HeaderMap, StatusCode},
};

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
    if is_token68(token) {
        Ok(Some(token))
    } else {
        Err(malformed())
    }
}

/// RFC 7235 §2.1 `token68`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
pub(crate) fn is_token68(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
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
}
