//! `auth.v1.AuthService`: each RPC an adapter of one [`crate::service`] operation, as each HTTP
//! route is, with the same per-address limit on the same operations (SECURITY.md E 49).

use secrecy::ExposeSecret as _;
use tonic::{Request, Response, Status};

use super::{
    metadata::{access_token, client_ip, headers},
    pb::{self, auth_service_server::AuthService},
    status::code_name,
};
use crate::{
    error::ApiError,
    metrics::{GrpcLabels, Metrics},
    routes::rfc3339,
    service::{
        self, accounts::SignupOutcome, totp::SecondFactor, LogoutCredential, LogoutScope, TokenPair,
    },
    state::AppState,
    throttle::CountOutcome,
};

/// The service, over the shared state.
#[derive(Debug, Clone)]
pub(super) struct Auth {
    pub(super) state: AppState,
}

impl Auth {
    /// Refuses a client address that has used up its bucket, as the HTTP API's `limit_by_ip`.
    async fn limit_by_ip<T>(
        &self,
        request: &Request<T>,
        outcomes: Option<CountOutcome>,
    ) -> Result<(), Status> {
        let ip = client_ip(&self.state, request.remote_addr(), &headers(request));
        self.state
            .ip_limiter
            .admit(ip, &self.state.metrics, outcomes)
            .await
            .map_err(Status::from)
    }
}

/// `call`, ended with DEADLINE_EXCEEDED `request_timeout` when it is not answered within
/// `AUTH_REQUEST_TIMEOUT_SECS` (as HTTP's 408; dropped like an HTTP handler, every operation is
/// cancellation-safe), so that the answer carries ErrorInfo and is counted.
pub(super) async fn within_deadline<T>(
    state: &AppState,
    call: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(state.config.request_timeout, call).await {
        Ok(result) => result,
        Err(_elapsed) => {
            tracing::info!(event = "request_timeout", "gRPC call not answered in time");
            Err(ApiError::RequestTimeout.into())
        }
    }
}

/// Runs `call`, counts it as a call of `method` by the code it answers with its duration, and
/// passes its result on.
async fn counted<T>(
    state: &AppState,
    method: &'static str,
    call: impl std::future::Future<Output = Result<Response<T>, Status>>,
) -> Result<Response<T>, Status> {
    let started = std::time::Instant::now();
    let result = call.await;
    let code = match &result {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    state.metrics.grpc_request(
        GrpcLabels {
            method,
            code: code_name(code),
        },
        started.elapsed(),
    );
    result
}

fn token_response(tokens: TokenPair) -> pb::TokenResponse {
    pb::TokenResponse {
        access_token: tokens.access_token,
        token_type: "Bearer".to_owned(),
        expires_in: tokens.expires_in,
        refresh_token: tokens.refresh_token.expose().to_owned(),
        refresh_expires_in: tokens.refresh_expires_in,
        device_token: tokens.device_token,
    }
}

fn logout_scope(scope: i32) -> Result<LogoutScope, ApiError> {
    match pb::LogoutScope::try_from(scope) {
        Ok(pb::LogoutScope::Unspecified | pb::LogoutScope::Local) => Ok(LogoutScope::Local),
        Ok(pb::LogoutScope::All) => Ok(LogoutScope::All),
        Ok(pb::LogoutScope::Others) => Ok(LogoutScope::Others),
        Err(_) => Err(ApiError::InvalidRequest(
            "scope must be one of LOCAL, ALL, OTHERS".to_owned(),
        )),
    }
}

/// The RPCs themselves; the trait impl below counts each call by the code it answers.
impl Auth {
    async fn signup_call(
        &self,
        request: Request<pb::SignupRequest>,
    ) -> Result<Response<pb::SignupResponse>, Status> {
        self.limit_by_ip(&request, Some(Metrics::signup)).await?;
        let body = request.into_inner();
        let outcome = service::accounts::signup(&self.state, &body.email, &body.password).await?;
        Ok(Response::new(match outcome {
            SignupOutcome::Created(account) => pb::SignupResponse {
                id: account.id,
                email: account.email,
                created_at: rfc3339(account.created_at)?,
                verification_sent: false,
            },
            SignupOutcome::VerificationSent { email } => pb::SignupResponse {
                email,
                verification_sent: true,
                ..Default::default()
            },
        }))
    }

    async fn login_call(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        self.limit_by_ip(&request, Some(Metrics::login)).await?;
        let body = request.into_inner();
        let tokens = service::accounts::login(
            &self.state,
            &body.email,
            &body.password,
            body.device_token.as_deref(),
        )
        .await?;
        Ok(Response::new(token_response(tokens)))
    }

    async fn complete_mfa_login_call(
        &self,
        request: Request<pb::CompleteMfaLoginRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        // In the bucket of logins, as POST /login/mfa is.
        self.limit_by_ip(&request, Some(Metrics::login)).await?;
        let body = request.into_inner();
        let factor = match &body.factor {
            Some(pb::complete_mfa_login_request::Factor::Code(code)) => SecondFactor::Code(code),
            Some(pb::complete_mfa_login_request::Factor::RecoveryCode(code)) => {
                SecondFactor::RecoveryCode(code)
            }
            None => {
                return Err(
                    ApiError::InvalidRequest("send a code or a recovery_code".to_owned()).into(),
                )
            }
        };
        let tokens = service::mfa::complete(&self.state, &body.mfa_token, factor).await?;
        Ok(Response::new(token_response(tokens)))
    }

    async fn refresh_call(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        self.limit_by_ip(&request, Some(Metrics::refresh)).await?;
        let body = request.into_inner();
        let tokens = service::sessions::refresh(&self.state, &body.refresh_token).await?;
        Ok(Response::new(token_response(tokens)))
    }

    async fn exchange_sign_in_code_call(
        &self,
        request: Request<pb::ExchangeSignInCodeRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        // In the bucket of logins, as POST /token is.
        self.limit_by_ip(&request, Some(Metrics::login)).await?;
        let body = request.into_inner();
        let tokens =
            service::sign_in::exchange(&self.state, &body.auth_code, &body.code_verifier).await?;
        Ok(Response::new(token_response(tokens)))
    }

    async fn logout_call(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        // Outside the per-address limit, as on HTTP: a neighbour using up the bucket must never
        // stop anyone from ending their own session.
        let headers = headers(&request);
        let body = request.into_inner();
        let scope = logout_scope(body.scope)?;
        let (refresh_token, in_message) = match &body.credential {
            Some(pb::logout_request::Credential::RefreshToken(token)) => {
                (Some(token.as_str()), None)
            }
            Some(pb::logout_request::Credential::AccessToken(token)) => {
                (None, Some(token.as_str()))
            }
            None => (None, None),
        };
        let bearer = access_token(in_message, &headers)?;
        let credential = match (bearer, refresh_token) {
            (Some(_), Some(_)) => {
                return Err(ApiError::InvalidRequest(
                    "send a refresh token or an access token, not both".to_owned(),
                )
                .into())
            }
            (Some(token), None) => LogoutCredential::AccessToken(token),
            (None, Some(token)) => LogoutCredential::RefreshToken(token),
            (None, None) => {
                return Err(ApiError::InvalidRequest(
                    "send a refresh_token, an access_token, or authorization: Bearer metadata"
                        .to_owned(),
                )
                .into())
            }
        };
        service::sessions::logout(&self.state, credential, scope).await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn change_password_call(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        self.limit_by_ip(&request, None).await?;
        let headers = headers(&request);
        let body = request.into_inner();
        let token =
            access_token(body.access_token.as_deref(), &headers)?.ok_or(ApiError::MissingToken)?;
        service::accounts::change_password(
            &self.state,
            token,
            &body.current_password,
            &body.new_password,
            body.device_token.as_deref(),
        )
        .await?;
        Ok(Response::new(pb::ChangePasswordResponse {}))
    }

    async fn enroll_totp_call(
        &self,
        request: Request<pb::EnrollTotpRequest>,
    ) -> Result<Response<pb::EnrollTotpResponse>, Status> {
        self.limit_by_ip(&request, None).await?;
        let headers = headers(&request);
        let body = request.into_inner();
        let token =
            access_token(body.access_token.as_deref(), &headers)?.ok_or(ApiError::MissingToken)?;
        let started = service::totp::enrol(&self.state, token, &body.password).await?;
        Ok(Response::new(pb::EnrollTotpResponse {
            secret: started.secret.expose_secret().to_owned(),
            otpauth_uri: started.otpauth_uri.expose_secret().to_owned(),
            qr_svg: started.qr_svg.expose_secret().to_owned(),
        }))
    }

    async fn confirm_totp_call(
        &self,
        request: Request<pb::ConfirmTotpRequest>,
    ) -> Result<Response<pb::ConfirmTotpResponse>, Status> {
        self.limit_by_ip(&request, None).await?;
        let headers = headers(&request);
        let body = request.into_inner();
        let token =
            access_token(body.access_token.as_deref(), &headers)?.ok_or(ApiError::MissingToken)?;
        let codes = service::totp::confirm(&self.state, token, &body.code).await?;
        Ok(Response::new(pb::ConfirmTotpResponse {
            recovery_codes: codes
                .iter()
                .map(|code| code.expose_secret().to_owned())
                .collect(),
        }))
    }

    async fn disable_totp_call(
        &self,
        request: Request<pb::DisableTotpRequest>,
    ) -> Result<Response<pb::DisableTotpResponse>, Status> {
        self.limit_by_ip(&request, None).await?;
        let headers = headers(&request);
        let body = request.into_inner();
        let token =
            access_token(body.access_token.as_deref(), &headers)?.ok_or(ApiError::MissingToken)?;
        service::totp::disable(&self.state, token, &body.code).await?;
        Ok(Response::new(pb::DisableTotpResponse {}))
    }

    async fn verify_email_call(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Result<Response<pb::VerifyEmailResponse>, Status> {
        self.limit_by_ip(&request, None).await?;
        let body = request.into_inner();
        service::email_verification::verify_email(&self.state, &body.token).await?;
        Ok(Response::new(pb::VerifyEmailResponse {
            email_verified: true,
        }))
    }

    async fn resend_verification_call(
        &self,
        request: Request<pb::ResendVerificationRequest>,
    ) -> Result<Response<pb::ResendVerificationResponse>, Status> {
        self.limit_by_ip(&request, None).await?;
        let body = request.into_inner();
        service::email_verification::resend_verification(&self.state, &body.email).await?;
        Ok(Response::new(pb::ResendVerificationResponse {}))
    }

    async fn request_password_reset_call(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> Result<Response<pb::RequestPasswordResetResponse>, Status> {
        self.limit_by_ip(&request, None).await?;
        let body = request.into_inner();
        service::recovery::request_password_reset(&self.state, &body.email).await?;
        Ok(Response::new(pb::RequestPasswordResetResponse {}))
    }

    async fn reset_password_call(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> Result<Response<pb::ResetPasswordResponse>, Status> {
        self.limit_by_ip(&request, None).await?;
        let body = request.into_inner();
        service::recovery::reset_password(&self.state, &body.token, &body.password).await?;
        Ok(Response::new(pb::ResetPasswordResponse {}))
    }

    async fn validate_call(
        &self,
        request: Request<pb::ValidateRequest>,
    ) -> Result<Response<pb::ValidateResponse>, Status> {
        let headers = headers(&request);
        let body = request.into_inner();
        let token =
            access_token(body.access_token.as_deref(), &headers)?.ok_or(ApiError::MissingToken)?;
        let verified = service::access::validate(&self.state, token).await?;
        let typed = verified.typed;
        Ok(Response::new(pb::ValidateResponse {
            claims: Some(json_struct(verified.claims)),
            user_id: typed.sub,
            email: typed.email,
            roles: typed.roles,
            session_id: typed.sid,
            expires_at: typed.exp,
        }))
    }
}

#[tonic::async_trait]
impl AuthService for Auth {
    async fn signup(
        &self,
        request: Request<pb::SignupRequest>,
    ) -> Result<Response<pb::SignupResponse>, Status> {
        counted(
            &self.state,
            "auth.v1.AuthService/Signup",
            within_deadline(&self.state, self.signup_call(request)),
        )
        .await
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        counted(
            &self.state,
            "auth.v1.AuthService/Login",
            within_deadline(&self.state, self.login_call(request)),
        )
        .await
    }

    async fn complete_mfa_login(
        &self,
        request: Request<pb::CompleteMfaLoginRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        counted(
            &self.state,
            "auth.v1.AuthService/CompleteMfaLogin",
            within_deadline(&self.state, self.complete_mfa_login_call(request)),
        )
        .await
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        counted(
            &self.state,
            "auth.v1.AuthService/Refresh",
            within_deadline(&self.state, self.refresh_call(request)),
        )
        .await
    }

    async fn exchange_sign_in_code(
        &self,
        request: Request<pb::ExchangeSignInCodeRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        counted(
            &self.state,
            "auth.v1.AuthService/ExchangeSignInCode",
            within_deadline(&self.state, self.exchange_sign_in_code_call(request)),
        )
        .await
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        counted(
            &self.state,
            "auth.v1.AuthService/Logout",
            within_deadline(&self.state, self.logout_call(request)),
        )
        .await
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        counted(
            &self.state,
            "auth.v1.AuthService/ChangePassword",
            within_deadline(&self.state, self.change_password_call(request)),
        )
        .await
    }

    async fn enroll_totp(
        &self,
        request: Request<pb::EnrollTotpRequest>,
    ) -> Result<Response<pb::EnrollTotpResponse>, Status> {
        counted(
            &self.state,
            "auth.v1.AuthService/EnrollTotp",
            within_deadline(&self.state, self.enroll_totp_call(request)),
        )
        .await
    }

    async fn confirm_totp(
        &self,
        request: Request<pb::ConfirmTotpRequest>,
    ) -> Result<Response<pb::ConfirmTotpResponse>, Status> {
        counted(
            &self.state,
            "auth.v1.AuthService/ConfirmTotp",
            within_deadline(&self.state, self.confirm_totp_call(request)),
        )
        .await
    }

    async fn disable_totp(
        &self,
        request: Request<pb::DisableTotpRequest>,
    ) -> Result<Response<pb::DisableTotpResponse>, Status> {
        counted(
            &self.state,
            "auth.v1.AuthService/DisableTotp",
            within_deadline(&self.state, self.disable_totp_call(request)),
        )
        .await
    }

    async fn verify_email(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Result<Response<pb::VerifyEmailResponse>, Status> {
        counted(
            &self.state,
            "auth.v1.AuthService/VerifyEmail",
            within_deadline(&self.state, self.verify_email_call(request)),
        )
        .await
    }

    async fn resend_verification(
        &self,
        request: Request<pb::ResendVerificationRequest>,
    ) -> Result<Response<pb::ResendVerificationResponse>, Status> {
        counted(
            &self.state,
            "auth.v1.AuthService/ResendVerification",
            within_deadline(&self.state, self.resend_verification_call(request)),
        )
        .await
    }

    async fn request_password_reset(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> Result<Response<pb::RequestPasswordResetResponse>, Status> {
        counted(
            &self.state,
            "auth.v1.AuthService/RequestPasswordReset",
            within_deadline(&self.state, self.request_password_reset_call(request)),
        )
        .await
    }

    async fn reset_password(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> Result<Response<pb::ResetPasswordResponse>, Status> {
        counted(
            &self.state,
            "auth.v1.AuthService/ResetPassword",
            within_deadline(&self.state, self.reset_password_call(request)),
        )
        .await
    }

    async fn validate(
        &self,
        request: Request<pb::ValidateRequest>,
    ) -> Result<Response<pb::ValidateResponse>, Status> {
        counted(
            &self.state,
            "auth.v1.AuthService/Validate",
            within_deadline(&self.state, self.validate_call(request)),
        )
        .await
    }
}

/// A JSON object as a `google.protobuf.Struct`.
fn json_struct(object: serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: object
            .into_iter()
            .map(|(name, value)| (name, json_value(value)))
            .collect(),
    }
}

fn json_value(value: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    use serde_json::Value as J;
    let kind = match value {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(b),
        // `google.protobuf.Value` numbers are doubles, as JSON's are.
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        J::String(s) => Kind::StringValue(s),
        J::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(json_value).collect(),
        }),
        J::Object(object) => Kind::StructValue(json_struct(object)),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::value::Kind;

    #[test]
    fn claims_keep_their_json_types() {
        let serde_json::Value::Object(claims) = serde_json::json!({
            "sub": "u1", "exp": 1700000000, "roles": ["admin", "ops"], "ok": true, "x": null
        }) else {
            unreachable!()
        };
        let fields = json_struct(claims).fields;
        assert_eq!(fields["sub"].kind, Some(Kind::StringValue("u1".to_owned())));
        assert_eq!(fields["exp"].kind, Some(Kind::NumberValue(1_700_000_000.0)));
        assert_eq!(fields["ok"].kind, Some(Kind::BoolValue(true)));
        assert_eq!(fields["x"].kind, Some(Kind::NullValue(0)));
        let Some(Kind::ListValue(roles)) = &fields["roles"].kind else {
            panic!("roles is not a list")
        };
        assert_eq!(roles.values.len(), 2);
    }

    #[test]
    fn unknown_logout_scopes_are_refused() {
        assert!(matches!(logout_scope(0), Ok(LogoutScope::Local)));
        assert!(matches!(logout_scope(3), Ok(LogoutScope::Others)));
        assert!(logout_scope(9).is_err());
    }
}
