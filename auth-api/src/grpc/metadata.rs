//! What a gRPC request carries besides its message: the client's address (for the per-address
//! limits) and a bearer token in the `authorization` metadata.

use std::net::{IpAddr, SocketAddr};

use axum::{extract::ConnectInfo, http::HeaderMap};
use tonic::Request;

use crate::{error::ApiError, extract::bearer_token, state::AppState};

/// The request's metadata as HTTP headers (gRPC metadata is HTTP/2 headers).
pub(super) fn headers<T>(request: &Request<T>) -> HeaderMap {
    request.metadata().clone().into_headers()
}

/// The client's address, as the HTTP API finds it: the peer, or the trusted gateway's
/// `AUTH_CLIENT_IP_HEADER` metadata when the peer is a trusted proxy.
pub(super) fn client_ip(
    state: &AppState,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Option<IpAddr> {
    state
        .ip_limiter
        .client_ip(peer.map(ConnectInfo).as_ref(), headers)
}

/// The access token of a request: from the message or from `authorization: Bearer …`
/// metadata, never both (two credentials that might disagree are refused, not ranked).
pub(super) fn access_token<'a>(
    in_message: Option<&'a str>,
    headers: &'a HeaderMap,
) -> Result<Option<&'a str>, ApiError> {
    match (in_message, bearer_token(headers)?) {
        (Some(_), Some(_)) => Err(ApiError::InvalidRequest(
            "send the access token in the message or in the authorization metadata, not both"
                .to_owned(),
        )),
        (Some(token), None) => Ok(Some(token)),
        (None, token) => Ok(token),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{header, HeaderValue};

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        headers
    }

    #[test]
    fn the_token_comes_from_the_message_or_the_metadata() {
        assert_eq!(
            access_token(Some("a.b.c"), &HeaderMap::new()).unwrap(),
            Some("a.b.c")
        );
        assert_eq!(access_token(None, &bearer("d.e.f")).unwrap(), Some("d.e.f"));
        assert_eq!(access_token(None, &HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn two_tokens_are_refused() {
        let err = access_token(Some("a.b.c"), &bearer("a.b.c")).unwrap_err();
        assert_eq!(err.code(), "invalid_request");
    }
}
