//! [`HttpClient`]: the one way this module talks to a provider. A timeout on every request,
//! redirects never followed (a redirect from a discovery, JWKS or token endpoint is refused,
//! not chased to wherever it points), and a size cap on every body, enforced while reading.

use std::time::Duration;

use reqwest::{RequestBuilder, StatusCode};
use url::{Host, Url};

use crate::oidc::{Error, Result};

/// Time allowed for one request, from connecting to the last byte of the body.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest discovery document read (bytes).
pub const DISCOVERY_MAX_BYTES: usize = 256 * 1024;
/// Largest JWK set read (bytes).
pub const JWKS_MAX_BYTES: usize = 256 * 1024;
/// Largest token response read (bytes).
pub const TOKEN_RESPONSE_MAX_BYTES: usize = 64 * 1024;
/// Largest userinfo (or GitHub user / emails) answer read (bytes).
pub const USERINFO_MAX_BYTES: usize = 64 * 1024;

/// A `reqwest` client set up for providers: rustls with the Mozilla roots, [`FETCH_TIMEOUT`]
/// (or another timeout, for tests), no redirects, no cookies, no compression. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: reqwest::Client,
}

impl HttpClient {
    /// A client with [`FETCH_TIMEOUT`].
    pub fn new() -> Result<Self> {
        Self::with_timeout(FETCH_TIMEOUT)
    }

    /// A client whose requests give up after `timeout` (connecting included).
    pub fn with_timeout(timeout: Duration) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("auth-service/", env!("CARGO_PKG_VERSION")))
            .https_only(false)
            .build()
            .map_err(|e| Error::Config(format!("http client: {e}")))?;
        Ok(Self { client })
    }

    pub(crate) fn get(&self, url: &Url) -> RequestBuilder {
        self.client.get(url.clone())
    }

    pub(crate) fn post(&self, url: &Url) -> RequestBuilder {
        self.client.post(url.clone())
    }

    /// Sends `request` and reads its body, at most `cap` bytes. Transport failures and
    /// timeouts are [`Error::Unavailable`]; a body over the cap is [`Error::InvalidResponse`].
    pub(crate) async fn send(
        &self,
        request: RequestBuilder,
        what: &'static str,
        cap: usize,
    ) -> Result<(StatusCode, Vec<u8>)> {
        // The provider's own traces join the request's (W3C Trace Context).
        let request = match crate::correlation::outbound_traceparent() {
            Some(parent) => request.header(crate::correlation::TRACEPARENT, parent.to_string()),
            None => request,
        };
        let mut response = request.send().await.map_err(|e| transport(what, &e))?;
        let status = response.status();
        let too_large = || Error::invalid(what, format!("body larger than {cap} bytes"));
        if response
            .content_length()
            .is_some_and(|len| len > cap as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| transport(what, &e))? {
            if body.len() + chunk.len() > cap {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }

    /// GETs a JSON document that must answer 200: 429 and 5xx are [`Error::Unavailable`],
    /// any other status (redirects included) [`Error::InvalidResponse`].
    pub(crate) async fn get_document(
        &self,
        url: &Url,
        what: &'static str,
        cap: usize,
    ) -> Result<Vec<u8>> {
        let request = self
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json");
        let (status, body) = self.send(request, what, cap).await?;
        check_status(status, what)?;
        Ok(body)
    }
}

/// `Ok` for 200; 429 and 5xx are [`Error::Unavailable`], anything else
/// [`Error::InvalidResponse`].
pub(crate) fn check_status(status: StatusCode, what: &'static str) -> Result<()> {
    if status == StatusCode::OK {
        Ok(())
    } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        Err(Error::unavailable(what, format!("status {status}")))
    } else if status.is_redirection() {
        Err(Error::invalid(
            what,
            format!("status {status}: redirects are not followed"),
        ))
    } else {
        Err(Error::invalid(what, format!("status {status}")))
    }
}

fn transport(what: &'static str, err: &reqwest::Error) -> Error {
    if err.is_timeout() {
        Error::unavailable(what, "timed out")
    } else {
        // The URL is the provider's endpoint: no secret travels in our URLs' queries.
        Error::unavailable(what, format!("{err}"))
    }
}

/// Whether `host` is a loopback host (`localhost`, 127.0.0.0/8, `::1`), the only hosts
/// plain http is allowed for (development and tests).
pub(crate) fn is_loopback(host: Option<Host<&str>>) -> bool {
    match host {
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Why `url` may not be used for talking to a provider, if it may not: it must be https (or
/// http to a loopback host), have a host, and carry no credentials or fragment.
pub(crate) fn insecure_reason(url: &Url) -> Option<&'static str> {
    if url.host().is_none() {
        return Some("has no host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Some("must not carry credentials");
    }
    if url.fragment().is_some() {
        return Some("must not have a fragment");
    }
    match url.scheme() {
        "https" => None,
        "http" if is_loopback(url.host()) => None,
        "http" => Some("must be https (http only for loopback hosts)"),
        _ => Some("must be an https URL"),
    }
}

#[cfg(test)]
mod tests {
    use axum::{routing::get, Router};

    use super::*;
    use crate::oidc::test_support::serve;

    #[test]
    fn loopback_hosts_may_use_http_others_not() {
        let cases = [
            ("https://op.example/x", None, "https anywhere"),
            ("http://127.0.0.1:8080/x", None, "loopback v4"),
            ("http://127.0.0.2/x", None, "all of 127/8"),
            ("http://[::1]:9/x", None, "loopback v6"),
            ("http://LOCALHOST/x", None, "localhost"),
            ("http://op.example/x", Some("must be https"), "plain http"),
            (
                "http://localhost.evil.com/x",
                Some("must be https"),
                "not localhost",
            ),
            (
                "http://10.0.0.1/x",
                Some("must be https"),
                "private, not loopback",
            ),
            (
                "ftp://op.example/x",
                Some("must be an https URL"),
                "other scheme",
            ),
            ("https://u:p@op.example/", Some("credentials"), "userinfo"),
            ("https://op.example/#f", Some("fragment"), "fragment"),
        ];
        for (url, expected, reason) in cases {
            let got = insecure_reason(&Url::parse(url).unwrap());
            match expected {
                None => assert_eq!(got, None, "{reason}"),
                Some(part) => assert!(got.is_some_and(|g| g.contains(part)), "{reason}: {got:?}"),
            }
        }
    }

    #[tokio::test]
    async fn body_over_the_cap_is_refused_while_streaming() {
        // Chunked (no Content-Length): the cap is enforced while reading.
        let body = || async {
            let chunks = futures_util::stream::iter(
                (0..64).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 1024])),
            );
            axum::body::Body::from_stream(chunks)
        };
        let base = serve(Router::new().route("/big", get(body))).await;
        let client = HttpClient::new().unwrap();
        let url = Url::parse(&format!("{base}/big")).unwrap();
        let err = client.get_document(&url, "doc", 1024).await.unwrap_err();
        assert!(
            matches!(&err, Error::InvalidResponse { why, .. } if why.contains("larger than 1024")),
            "{err}"
        );
        assert_eq!(
            client
                .get_document(&url, "doc", 64 * 1024)
                .await
                .unwrap()
                .len(),
            64 * 1024
        );
    }

    #[tokio::test]
    async fn the_requests_traceparent_goes_on_to_the_provider() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = {
            let seen = seen.clone();
            move |headers: axum::http::HeaderMap| async move {
                let value = headers.get("traceparent").map(|v| v.as_bytes().to_vec());
                seen.lock().unwrap().push(value);
                "{}"
            }
        };
        let base = serve(Router::new().route("/doc", get(record))).await;
        let client = HttpClient::new().unwrap();
        let url = Url::parse(&format!("{base}/doc")).unwrap();
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent = crate::correlation::TraceParent::parse(incoming.as_bytes());

        // No span export here: passed on unchanged; none without an incoming one.
        let fetch = client.get_document(&url, "doc", 1024);
        crate::correlation::with_incoming(parent, fetch)
            .await
            .unwrap();
        client.get_document(&url, "doc", 1024).await.unwrap();

        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen, [Some(incoming.as_bytes().to_vec()), None]);
    }

    #[tokio::test]
    async fn content_length_over_the_cap_is_refused() {
        let base = serve(Router::new().route("/big", get(|| async { "y".repeat(2048) }))).await;
        let client = HttpClient::new().unwrap();
        let url = Url::parse(&format!("{base}/big")).unwrap();
        let err = client.get_document(&url, "doc", 2047).await.unwrap_err();
        assert!(matches!(err, Error::InvalidResponse { .. }), "{err}");
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let router = Router::new()
            .route(
                "/moved",
                get(|| async { axum::response::Redirect::temporary("/doc") }),
            )
            .route("/doc", get(|| async { "{}" }));
        let base = serve(router).await;
        let client = HttpClient::new().unwrap();
        let url = Url::parse(&format!("{base}/moved")).unwrap();
        let err = client.get_document(&url, "doc", 1024).await.unwrap_err();
        assert!(
            matches!(&err, Error::InvalidResponse { why, .. } if why.contains("redirects are not followed")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn slow_provider_times_out_as_unavailable() {
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "{}"
        };
        let base = serve(Router::new().route("/slow", get(slow))).await;
        let client = HttpClient::with_timeout(Duration::from_millis(200)).unwrap();
        let url = Url::parse(&format!("{base}/slow")).unwrap();
        let started = std::time::Instant::now();
        let err = client.get_document(&url, "doc", 1024).await.unwrap_err();
        assert!(
            matches!(&err, Error::Unavailable { why, .. } if why == "timed out"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn server_errors_are_unavailable_client_errors_invalid() {
        let router = Router::new()
            .route(
                "/503",
                get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down") }),
            )
            .route("/404", get(|| async { (StatusCode::NOT_FOUND, "no") }));
        let base = serve(router).await;
        let client = HttpClient::new().unwrap();
        let get = |path: &str| Url::parse(&format!("{base}{path}")).unwrap();
        let err = client
            .get_document(&get("/503"), "doc", 1024)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err}");
        let err = client
            .get_document(&get("/404"), "doc", 1024)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidResponse { .. }), "{err}");
    }

    #[tokio::test]
    async fn closed_port_is_unavailable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let client = HttpClient::new().unwrap();
        let url = Url::parse(&format!("http://127.0.0.1:{port}/x")).unwrap();
        let err = client.get_document(&url, "doc", 1024).await.unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    }
}
