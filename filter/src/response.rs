//! The answers the filter gives instead of forwarding a request, as plain data: status,
//! headers and JSON body `{"error","message"}` for HTTP, or a gRPC status for gRPC requests
//! (`content-type: application/grpc…`). RFC 6750 §3 governs `WWW-Authenticate`, and RFC 9470
//! §3 its step-up challenge (`insufficient_user_authentication`, `acr_values`). This module
//! does not decide *whether* to deny; `decide` does.

use serde_json::json;

use crate::config::is_acr_byte;

/// Why a request is refused; each reason has its own counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// No token was sent (401, `WWW-Authenticate` without `error`; gRPC 16).
    MissingToken,
    /// The token is malformed or fails verification (401 `invalid_token`; gRPC 16). Holds a
    /// description that never quotes the token.
    InvalidToken(String),
    /// The token names a `kid` the loaded key set does not hold (answered exactly like
    /// [`DenyReason::InvalidToken`]); the host asks for an early key fetch, in case the key is
    /// new.
    UnknownKey,
    /// The token verifies but the revocation feed lists its session or user (401
    /// `invalid_token`, "the token has been revoked"; gRPC 16).
    Revoked,
    /// The token lacks a role the route requires (403 `insufficient_scope`; gRPC 7).
    InsufficientScope(String),
    /// The route requires a verified email and the token's `email_verified` is not `true`
    /// (403, challenge `error="insufficient_scope"`, body `email_not_verified`; gRPC 7).
    EmailNotVerified,
    /// The route requires an `acr` the token does not carry (RFC 9470: 401
    /// `insufficient_user_authentication` with `acr_values`; gRPC 16). Holds the values that
    /// would do, in order of preference.
    InsufficientUserAuthentication(Vec<String>),
    /// No rule covers the request, or its path is ambiguous (403 `access_denied`; gRPC 7).
    NoRoute,
    /// A CORS preflight reached the filter with `bypass_cors_preflight` on: preflights are
    /// answered at the gateway (by Envoy's CORS filter, placed before this one), never
    /// forwarded, so one that gets here is refused (403 `access_denied`, no challenge; gRPC 7).
    CorsPreflight,
    /// The request carries a method-override header (`X-HTTP-Method-Override`,
    /// `X-HTTP-Method`, `X-Method-Override`), which would let an upstream run another method
    /// than the one the rules matched (400 `invalid_request`; gRPC 3).
    MethodOverride,
    /// No fresh key set is loaded, or the revocation feed is configured but has never been
    /// fetched (503; gRPC 14).
    KeysUnavailable,
    /// The filter could not read the request (500; gRPC 13).
    Internal,
}

/// A local answer, ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DenyResponse {
    /// An HTTP answer.
    Http {
        /// The status code.
        status: u32,
        /// Headers, lowercase names.
        headers: Vec<(String, String)>,
        /// The JSON body.
        body: String,
    },
    /// A gRPC answer (HTTP 200 with `grpc-status`).
    Grpc {
        /// The gRPC status code: 16, 7, 14 or 13.
        status: u32,
        /// The `grpc-message`.
        message: String,
        /// Extra metadata, e.g. `www-authenticate`.
        metadata: Vec<(String, String)>,
    },
}

/// The answer for `reason`: gRPC when `grpc`, else HTTP; `realm` goes in `WWW-Authenticate`.
pub(crate) fn deny_response(reason: &DenyReason, realm: &str, grpc: bool) -> DenyResponse {
    let realm = sanitize(realm);
    let invalid_token = |why: String| {
        let challenge = format!(
            "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{why}\""
        );
        (401, 16, "invalid_token", why, Some(challenge))
    };
    let (status, grpc_status, error, message, challenge) = match reason {
        DenyReason::MissingToken => (
            401,
            16,
            "missing_token",
            "a bearer token is required".to_owned(),
            Some(format!("Bearer realm=\"{realm}\"")),
        ),
        DenyReason::InvalidToken(why) => invalid_token(sanitize(why)),
        DenyReason::UnknownKey => invalid_token("unknown key id".to_owned()),
        DenyReason::Revoked => invalid_token("the token has been revoked".to_owned()),
        DenyReason::InsufficientScope(why) => {
            let why = sanitize(why);
            (
                403,
                7,
                "insufficient_scope",
                why.clone(),
                Some(format!(
                    "Bearer realm=\"{realm}\", error=\"insufficient_scope\", error_description=\"{why}\""
                )),
            )
        }
        DenyReason::EmailNotVerified => {
            let why = "requires a verified email";
            (
                403,
                7,
                "email_not_verified",
                why.to_owned(),
                Some(format!(
                    "Bearer realm=\"{realm}\", error=\"insufficient_scope\", error_description=\"{why}\""
                )),
            )
        }
        DenyReason::InsufficientUserAuthentication(acr_values) => {
            // Checked when the configuration was read; filtered again so that no value can
            // break out of the quoted string, but never cut short as descriptions are.
            let acr_values: Vec<String> = acr_values
                .iter()
                .map(|value| {
                    value
                        .bytes()
                        .filter(|b| is_acr_byte(*b))
                        .map(char::from)
                        .collect()
                })
                .filter(|value: &String| !value.is_empty())
                .collect();
            let why = sanitize(&match acr_values.as_slice() {
                [one] => format!("requires a stronger authentication (acr {one})"),
                more => format!(
                    "requires a stronger authentication (acr one of {})",
                    more.join(", ")
                ),
            });
            (
                401,
                16,
                "insufficient_user_authentication",
                why.clone(),
                Some(format!(
                    "Bearer realm=\"{realm}\", error=\"insufficient_user_authentication\", \
                     error_description=\"{why}\", acr_values=\"{}\"",
                    acr_values.join(" ")
                )),
            )
        }
        DenyReason::NoRoute => (
            403,
            7,
            "access_denied",
            "no route rule allows this request".to_owned(),
            None,
        ),
        DenyReason::CorsPreflight => (
            403,
            7,
            "access_denied",
            "CORS preflights are answered by the gateway's CORS policy".to_owned(),
            None,
        ),
        DenyReason::MethodOverride => (
            400,
            3,
            "invalid_request",
            "method override headers are not accepted".to_owned(),
            None,
        ),
        DenyReason::KeysUnavailable => (
            503,
            14,
            "temporarily_unavailable",
            "token verification keys are not available".to_owned(),
            None,
        ),
        DenyReason::Internal => (
            500,
            13,
            "internal_error",
            "the request could not be processed".to_owned(),
            None,
        ),
    };
    let challenge = challenge.map(|c| ("www-authenticate".to_owned(), c));
    if grpc {
        return DenyResponse::Grpc {
            status: grpc_status,
            message,
            metadata: challenge.into_iter().collect(),
        };
    }
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("cache-control".to_owned(), "no-store".to_owned()),
    ];
    headers.extend(challenge);
    if status == 503 {
        headers.push(("retry-after".to_owned(), "1".to_owned()));
    }
    let body = json!({ "error": error, "message": message }).to_string();
    DenyResponse::Http {
        status,
        headers,
        body,
    }
}

/// Whether a request's `content-type` makes it a gRPC request.
pub(crate) fn is_grpc(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        ct.get(..16)
            .is_some_and(|head| head.eq_ignore_ascii_case("application/grpc"))
    })
}

/// Keeps only the characters RFC 6750 §3 allows in a quoted attribute (printable ASCII without
/// `"` and `\`), at most 200 of them.
fn sanitize(text: &str) -> String {
    text.chars()
        .filter(|c| (' '..='~').contains(c) && *c != '"' && *c != '\\')
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// Status, headers and the parsed JSON body of an HTTP answer.
    type Answer = (u32, Vec<(String, String)>, Value);

    fn http(reason: &DenyReason) -> crate::TestResult<Answer> {
        match deny_response(reason, "auth-service", false) {
            DenyResponse::Http {
                status,
                headers,
                body,
            } => Ok((status, headers, serde_json::from_str(&body)?)),
            other => Err(format!("expected http, got {other:?}").into()),
        }
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_missing_token_gets_a_challenge_without_error() -> crate::TestResult {
        let (status, headers, body) = http(&DenyReason::MissingToken)?;
        assert_eq!(status, 401);
        assert_eq!(
            header(&headers, "www-authenticate"),
            Some("Bearer realm=\"auth-service\"")
        );
        assert_eq!(body["error"], "missing_token");
        assert_eq!(header(&headers, "content-type"), Some("application/json"));
        Ok(())
    }

    #[test]
    fn an_invalid_token_gets_invalid_token_with_a_sanitised_description() -> crate::TestResult {
        let (status, headers, body) = http(&DenyReason::InvalidToken(
            "bad \"quote\" \\ and\r\nnewline".to_owned(),
        ))?;
        assert_eq!(status, 401);
        assert_eq!(
            header(&headers, "www-authenticate"),
            Some("Bearer realm=\"auth-service\", error=\"invalid_token\", error_description=\"bad quote  andnewline\"")
        );
        assert_eq!(body["error"], "invalid_token");
        Ok(())
    }

    #[test]
    fn a_revoked_token_gets_invalid_token_saying_so() -> crate::TestResult {
        let (status, headers, body) = http(&DenyReason::Revoked)?;
        assert_eq!(status, 401);
        assert_eq!(
            header(&headers, "www-authenticate"),
            Some("Bearer realm=\"auth-service\", error=\"invalid_token\", error_description=\"the token has been revoked\"")
        );
        assert_eq!(
            body,
            serde_json::json!({"error": "invalid_token", "message": "the token has been revoked"})
        );
        Ok(())
    }

    #[test]
    fn a_step_up_names_the_acr_values_and_nothing_can_break_out_of_the_quotes() -> crate::TestResult
    {
        let cases = [
            (
                vec!["aal2"],
                "requires a stronger authentication (acr aal2)",
                "aal2",
                "one value",
            ),
            (
                vec!["aal3", "urn:example:loa:2"],
                "requires a stronger authentication (acr one of aal3, urn:example:loa:2)",
                "aal3 urn:example:loa:2",
                "several, space-separated in order of preference",
            ),
            (
                vec!["a\"b", "c\\d e\r\n", "\""],
                "requires a stronger authentication (acr one of ab, cde)",
                "ab cde",
                "values the configuration refuses, were they ever built",
            ),
        ];
        for (values, description, acr_values, why) in cases {
            let reason = DenyReason::InsufficientUserAuthentication(
                values.into_iter().map(str::to_owned).collect(),
            );
            let (status, headers, body) = http(&reason)?;
            assert_eq!(status, 401, "{why}");
            assert_eq!(
                header(&headers, "www-authenticate"),
                Some(
                    format!(
                        "Bearer realm=\"auth-service\", error=\"insufficient_user_authentication\", \
                         error_description=\"{description}\", acr_values=\"{acr_values}\""
                    )
                    .as_str()
                ),
                "{why}"
            );
            assert_eq!(
                body,
                serde_json::json!({"error": "insufficient_user_authentication", "message": description}),
                "{why}"
            );
            assert_eq!(header(&headers, "cache-control"), Some("no-store"), "{why}");
        }
        Ok(())
    }

    #[test]
    fn each_reason_has_its_status_and_error_code() -> crate::TestResult {
        let cases = [
            (
                DenyReason::InsufficientScope("needs admin".to_owned()),
                403,
                "insufficient_scope",
                true,
                "missing role",
            ),
            (
                DenyReason::EmailNotVerified,
                403,
                "email_not_verified",
                true,
                "an unverified email",
            ),
            (
                DenyReason::InsufficientUserAuthentication(vec!["aal2".to_owned()]),
                401,
                "insufficient_user_authentication",
                true,
                "a step-up",
            ),
            (DenyReason::NoRoute, 403, "access_denied", false, "no rule"),
            (
                DenyReason::CorsPreflight,
                403,
                "access_denied",
                false,
                "a preflight is not forwarded",
            ),
            (
                DenyReason::MethodOverride,
                400,
                "invalid_request",
                false,
                "method override",
            ),
            (
                DenyReason::KeysUnavailable,
                503,
                "temporarily_unavailable",
                false,
                "no keys",
            ),
            (
                DenyReason::Internal,
                500,
                "internal_error",
                false,
                "internal failure",
            ),
        ];
        for (reason, expected_status, error, challenged, why) in cases {
            let (status, headers, body) = http(&reason)?;
            assert_eq!(status, expected_status, "{why}");
            assert_eq!(body["error"], error, "{why}");
            assert!(body["message"].is_string(), "{why}");
            assert_eq!(
                header(&headers, "www-authenticate").is_some(),
                challenged,
                "{why}"
            );
        }
        let (_, headers, _) = http(&DenyReason::InsufficientScope("x".to_owned()))?;
        assert!(header(&headers, "www-authenticate")
            .is_some_and(|challenge| challenge.contains("error=\"insufficient_scope\"")));
        Ok(())
    }

    #[test]
    fn grpc_requests_get_grpc_statuses() -> crate::TestResult {
        let cases = [
            (DenyReason::MissingToken, 16, "unauthenticated"),
            (
                DenyReason::InvalidToken("x".to_owned()),
                16,
                "unauthenticated",
            ),
            (DenyReason::Revoked, 16, "unauthenticated"),
            (
                DenyReason::InsufficientScope("x".to_owned()),
                7,
                "permission denied",
            ),
            (DenyReason::EmailNotVerified, 7, "permission denied"),
            (
                DenyReason::InsufficientUserAuthentication(vec!["aal2".to_owned()]),
                16,
                "unauthenticated",
            ),
            (DenyReason::NoRoute, 7, "permission denied"),
            (DenyReason::CorsPreflight, 7, "permission denied"),
            (DenyReason::MethodOverride, 3, "invalid argument"),
            (DenyReason::KeysUnavailable, 14, "unavailable"),
        ];
        for (reason, expected, why) in cases {
            match deny_response(&reason, "r", true) {
                DenyResponse::Grpc { status, .. } => assert_eq!(status, expected, "{why}"),
                other => panic!("{why}: expected grpc, got {other:?}"),
            }
        }
        Ok(())
    }

    #[test]
    fn grpc_is_recognised_by_content_type_prefix() -> crate::TestResult {
        let cases = [
            (Some("application/grpc"), true, "plain grpc"),
            (Some("application/grpc+proto"), true, "grpc with a codec"),
            (Some("Application/GRPC-web"), true, "case-insensitive"),
            (Some("application/json"), false, "json"),
            (Some("application/grp"), false, "too short"),
            (None, false, "no content type"),
        ];
        for (ct, expected, reason) in cases {
            assert_eq!(is_grpc(ct), expected, "{reason}");
        }
        Ok(())
    }
}
