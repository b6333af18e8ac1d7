//! CORS for browser clients that call the JSON API directly (`AUTH_CORS_ALLOWED_ORIGINS`).
//!
//! The answer mirrors the gateway's `CorsPolicy` in `envoy/*.yaml` header for header (methods,
//! request headers, exposed headers, max age, no credentials), so a front end gets the same
//! answer whether it reaches auth-api through Envoy or not; an e2e test compares the two.
//! Behind the gateway Envoy answers preflights itself and auth-api never sees one.
//!
//! No credentials mode: the API takes bearer tokens and JSON bodies, never cookies, and the
//! hosted pages (`/account/`), which do use cookies, allow no origin: tower-http answers an
//! `OPTIONS` there too (200), but without `Access-Control-Allow-Origin`, which browsers refuse.

use std::{fmt, str::FromStr, time::Duration};

use axum::http::{header, request::Parts, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may cache a preflight answer, as the gateway's `max_age`.
pub const MAX_AGE: Duration = Duration::from_secs(600);

/// The methods a cross-origin request may use, as the gateway's `allow_methods` (a superset of
/// auth-api's own: the gateway serves the upstreams too, and one list keeps the two alike).
pub const METHODS: [Method; 6] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// The request headers a cross-origin request may send, as the gateway's `allow_headers`.
pub const REQUEST_HEADERS: [HeaderName; 2] = [header::AUTHORIZATION, header::CONTENT_TYPE];

/// The response headers a script may read, as the gateway's `expose_headers`: the error detail
/// of a 401 (RFC 6750), when to retry a 429, and the id to quote in a support request.
pub const EXPOSED_HEADERS: [HeaderName; 3] = [
    header::WWW_AUTHENTICATE,
    header::RETRY_AFTER,
    HeaderName::from_static("x-request-id"),
];

/// The origins allowed to call the API from a browser: exact origins (`https://app.example.com`)
/// and origins with any port (`http://localhost:*`), kept in the form browsers send in `Origin`
/// (lowercase scheme and host, IDNA host in punycode, no default port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedOrigins(Vec<OriginPattern>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum OriginPattern {
    /// `scheme://host[:port]`, compared byte for byte.
    Exact(String),
    /// `scheme://host`, with or without any port.
    AnyPort(String),
}

impl AllowedOrigins {
    /// Whether a request's `Origin` value is allowed. Byte comparison: a browser sends the
    /// serialized form, so anything else (case, a trailing `/`, a path) is not one of ours.
    pub fn allows(&self, origin: &[u8]) -> bool {
        self.0.iter().any(|pattern| match pattern {
            OriginPattern::Exact(allowed) => origin == allowed.as_bytes(),
            OriginPattern::AnyPort(base) => match origin.strip_prefix(base.as_bytes()) {
                Some([]) => true,
                Some([b':', port @ ..]) => {
                    (1..=5).contains(&port.len()) && port.iter().all(u8::is_ascii_digit)
                }
                Some(_) | None => false,
            },
        })
    }

    /// The tower-http layer answering for these origins on the paths `applies` accepts (on the
    /// others no origin is allowed: no `Access-Control-Allow-Origin`, which browsers refuse).
    pub fn layer(&self, applies: fn(&str) -> bool) -> CorsLayer {
        let origins = self.clone();
        CorsLayer::new()
            .allow_origin(AllowOrigin::predicate(
                move |origin: &HeaderValue, request: &Parts| {
                    applies(request.uri.path()) && origins.allows(origin.as_bytes())
                },
            ))
            .allow_methods(METHODS)
            .allow_headers(REQUEST_HEADERS)
            .expose_headers(EXPOSED_HEADERS)
            .max_age(MAX_AGE)
    }
}

impl FromStr for AllowedOrigins {
    type Err = String;

    /// A comma-separated list; `*` is refused (list the front ends: an auth API open to every
    /// page on the web is seldom meant).
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let patterns = raw
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(OriginPattern::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if patterns.is_empty() {
            return Err("lists no origin".to_owned());
        }
        Ok(Self(patterns))
    }
}

impl OriginPattern {
    fn parse(entry: &str) -> Result<Self, String> {
        if entry == "*" {
            return Err("`*` is not accepted: list the origins of your front ends".to_owned());
        }
        let (base, any_port) = match entry.strip_suffix(":*") {
            Some(base) => (base, true),
            None => (entry, false),
        };
        // The URL parser takes `*` as a host character: `https://*.example.com` would be kept
        // as a host no browser ever sends.
        if base.contains('*') {
            return Err(format!(
                "{entry:?}: the only wildcard is a port of `:*` (list each host)"
            ));
        }
        let url = url::Url::parse(base).map_err(|e| format!("{entry:?} is not an origin: {e}"))?;
        let is_origin = matches!(url.scheme(), "http" | "https")
            && url.host().is_some()
            && url.username().is_empty()
            && url.password().is_none()
            && url.path() == "/"
            && url.query().is_none()
            && url.fragment().is_none()
            // `Url` reads `https://x/` and `https://x` alike; an origin has no `/`.
            && !base.ends_with('/');
        if !is_origin {
            return Err(format!(
                "{entry:?} is not an origin (http or https, a host, an optional port, nothing \
                 after it)"
            ));
        }
        if any_port && url.port().is_some() {
            return Err(format!("{entry:?} names a port and `:*`"));
        }
        let serialized = url.origin().ascii_serialization();
        Ok(if any_port {
            // The default port is dropped by browsers, so the bare origin matches too.
            Self::AnyPort(serialized)
        } else {
            Self::Exact(serialized)
        })
    }
}

impl fmt::Display for AllowedOrigins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for pattern in &self.0 {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            match pattern {
                OriginPattern::Exact(origin) => f.write_str(origin)?,
                OriginPattern::AnyPort(base) => write!(f, "{base}:*")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins(raw: &str) -> AllowedOrigins {
        raw.parse().unwrap()
    }

    #[test]
    fn exact_origins_match_only_their_serialized_form() {
        let allowed = origins("https://App.Example.com, http://localhost:3000");
        assert!(allowed.allows(b"https://app.example.com"));
        assert!(allowed.allows(b"http://localhost:3000"));
        for refused in [
            "https://app.example.com/",
            "https://App.Example.com",
            "http://app.example.com",
            "https://app.example.com:443",
            "https://app.example.com.evil.test",
            "http://localhost:30000",
            "http://localhost",
            "null",
            "",
        ] {
            assert!(!allowed.allows(refused.as_bytes()), "{refused}");
        }
    }

    #[test]
    fn a_default_port_is_dropped_as_browsers_drop_it() {
        assert_eq!(
            origins("https://app.example.com:443").to_string(),
            "https://app.example.com"
        );
        assert!(origins("http://x.test:80").allows(b"http://x.test"));
    }

    #[test]
    fn any_port_matches_the_host_with_or_without_a_port() {
        let allowed = origins("http://localhost:*,http://127.0.0.1:*");
        for ok in [
            "http://localhost",
            "http://localhost:5173",
            "http://127.0.0.1:8",
        ] {
            assert!(allowed.allows(ok.as_bytes()), "{ok}");
        }
        for refused in [
            "http://localhost:",
            "http://localhost:123456",
            "http://localhost:80a",
            "http://localhost.evil.test",
            "http://localhostx",
            "https://localhost:3000",
        ] {
            assert!(!allowed.allows(refused.as_bytes()), "{refused}");
        }
    }

    #[test]
    fn what_is_not_an_origin_is_refused_at_startup() {
        for bad in [
            "*",
            "",
            " , ",
            "app.example.com",
            "ftp://app.example.com",
            "https://app.example.com/",
            "https://app.example.com/app",
            "https://user@app.example.com",
            "https://app.example.com?x",
            "https://app.example.com:8443:*",
            "https://*.example.com",
        ] {
            assert!(bad.parse::<AllowedOrigins>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_idn_host_is_kept_in_punycode_as_browsers_send_it() {
        let allowed = origins("https://bücher.example");
        assert!(allowed.allows(b"https://xn--bcher-kva.example"));
    }
}
