//! Envoy's `ext_authz` (`envoy.service.auth.v3.Authorization/Check`): the stateful check of
//! `/validate` for every request a gateway forwards, for gateways that cannot load the wasm
//! filter (Envoy Gateway's external auth, Istio's `CUSTOM` action, an Envoy without wasm).
//!
//! The bearer token of the checked request's `authorization` header is validated as `/validate`
//! validates it (a revoked session or a disabled user is refused at once). OK adds the identity
//! headers the wasm filter forwards ([`IDENTITY_HEADERS`]), overwriting any copy the client
//! sent, removes the client's copies of those it does not set, and removes the token itself
//! (the filter's `"forward": false`). DENIED is the answer `/validate` would give, as Envoy's
//! local reply: 401 with an RFC 6750 challenge, or 503 with `Retry-After`, and our JSON error
//! body. Which routes need a token, and which roles, stays the gateway's business (its route
//! configuration, per-route `ext_authz` settings, its RBAC filter): `envoy/ext-authz.yaml`.

use axum::http::{header, HeaderMap, HeaderValue};
use envoy_types::ext_authz::v3::{
    pb::{Authorization, CheckRequest, CheckResponse, HeaderAppendAction, HttpStatusCode},
    CheckResponseExt as _, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use tonic::{Code, Request, Response, Status};

use super::{
    auth_service::within_deadline,
    status::{code_name, code_of},
};
use crate::{
    error::ApiError,
    extract::bearer_token,
    metrics::GrpcLabels,
    service::{self, VerifiedToken},
    state::AppState,
};

/// The identity headers an allowed request carries upstream, as the dev stack's filter
/// configuration names them: the user id (`sub`), the email, and the roles joined with `,`.
pub const IDENTITY_HEADERS: [&str; 3] = ["x-user-id", "x-user-email", "x-user-roles"];

/// The service, over the shared state.
#[derive(Debug, Clone)]
pub(super) struct ExtAuthz {
    pub(super) state: AppState,
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let started = std::time::Instant::now();
        let authorization = authorization_of(request.get_ref());
        let checked = within_deadline(&self.state, async {
            Ok(validate(&self.state, authorization.as_deref()).await)
        })
        .await;
        let checked = match checked {
            Ok(checked) => checked,
            Err(_timed_out) => Err(ApiError::RequestTimeout),
        };
        let (response, code) = match checked {
            Ok(verified) => (allowed(&verified), Code::Ok),
            Err(err) => (denied(&err), code_of(err.status())),
        };
        self.state.metrics.grpc_request(
            GrpcLabels {
                method: "envoy.service.auth.v3.Authorization/Check",
                code: code_name(code),
            },
            started.elapsed(),
        );
        Ok(Response::new(response))
    }
}

/// The `authorization` header of the checked request, if it sent one: from `headers` (Envoy
/// lower-cases names and joins repeated ones with `,`, which the bearer parser then refuses),
/// or from `header_map` when Envoy sends raw headers (`encode_raw_headers`).
fn authorization_of(check: &CheckRequest) -> Option<Vec<u8>> {
    let http = check.attributes.as_ref()?.request.as_ref()?.http.as_ref()?;
    if let Some(value) = http.headers.get(header::AUTHORIZATION.as_str()) {
        return Some(value.as_bytes().to_vec());
    }
    let raw = http.header_map.as_ref()?;
    let mut values = raw
        .headers
        .iter()
        .filter(|h| h.key.eq_ignore_ascii_case(header::AUTHORIZATION.as_str()))
        .map(|h| {
            if h.raw_value.is_empty() {
                h.value.as_bytes().to_vec()
            } else {
                h.raw_value.clone()
            }
        });
    let first = values.next()?;
    // Two headers: refused like `Bearer a, Bearer b`.
    Some(match values.next() {
        Some(_) => b"Bearer ,".to_vec(),
        None => first,
    })
}

async fn validate(
    state: &AppState,
    authorization: Option<&[u8]>,
) -> Result<VerifiedToken, ApiError> {
    let mut headers = HeaderMap::new();
    if let Some(value) = authorization {
        let value = HeaderValue::from_bytes(value)
            .map_err(|_| ApiError::InvalidToken("malformed authorization header".to_owned()))?;
        headers.insert(header::AUTHORIZATION, value);
    }
    let token = bearer_token(&headers)?.ok_or(ApiError::MissingToken)?;
    Ok(service::access::validate(state, token).await?)
}

fn allowed(verified: &VerifiedToken) -> CheckResponse {
    let claims = &verified.typed;
    let values = [
        Some(claims.sub.clone()),
        Some(claims.email.clone()),
        (!claims.roles.is_empty()).then(|| claims.roles.join(",")),
    ];
    let mut ok = OkHttpResponseBuilder::new();
    for (name, value) in IDENTITY_HEADERS.into_iter().zip(values) {
        match value.filter(|v| HeaderValue::from_str(v).is_ok()) {
            Some(value) => {
                ok.add_header(
                    name,
                    value,
                    Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
                    false,
                );
            }
            None => {
                ok.remove_header(name);
            }
        }
    }
    // Every other spelling a framework may read as the same header (`x_user_id` is
    // `X-User-Id` to CGI, WSGI, Rack and PHP): removed, in case the gateway lets names with
    // `_` through (the shipped config refuses them).
    for name in IDENTITY_HEADERS {
        for spelling in underscore_spellings(name) {
            ok.remove_header(spelling);
        }
    }
    ok.remove_header(header::AUTHORIZATION.as_str());
    let mut response = CheckResponse::with_status(Status::ok(""));
    response.set_http_response(ok);
    response
}

/// `name` with each of its `-` written `-` or `_`, except `name` itself: `x-user-id` gives
/// `x_user_id`, `x-user_id` and `x_user-id`.
fn underscore_spellings(name: &str) -> impl Iterator<Item = String> + '_ {
    let dashes = name.matches('-').count();
    (1..1_u32 << dashes).map(move |mask| {
        let mut dash = 0;
        name.chars()
            .map(|c| {
                if c != '-' {
                    return c;
                }
                dash += 1;
                if mask & (1 << (dash - 1)) != 0 {
                    '_'
                } else {
                    '-'
                }
            })
            .collect()
    })
}

fn denied(err: &ApiError) -> CheckResponse {
    if err.is_server_fault() {
        tracing::error!(error = %err, "ext_authz check failed");
    }
    let status = err.status();
    let mut denied = DeniedHttpResponseBuilder::new();
    denied.set_http_status(
        HttpStatusCode::try_from(i32::from(status.as_u16()))
            .unwrap_or(HttpStatusCode::InternalServerError),
    );
    let overwrite = Some(HeaderAppendAction::OverwriteIfExistsOrAdd);
    denied.add_header("content-type", "application/json", overwrite, false);
    denied.add_header("cache-control", "no-store", overwrite, false);
    if let Some(challenge) = err.challenge() {
        denied.add_header("www-authenticate", challenge, overwrite, false);
    }
    if let Some(secs) = err.retry_after_secs() {
        denied.add_header("retry-after", secs.to_string(), overwrite, false);
    }
    denied.set_body(err.body_json());
    // Envoy reads only whether the status is OK; the client gets the denied HTTP answer.
    let mut response =
        CheckResponse::with_status(Status::new(code_of(status), err.client_message()));
    response.set_http_response(denied);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_underscore_spelling_but_the_name_itself() {
        let mut spellings: Vec<String> = underscore_spellings("x-user-id").collect();
        spellings.sort();
        assert_eq!(spellings, ["x-user_id", "x_user-id", "x_user_id"]);
    }
}
