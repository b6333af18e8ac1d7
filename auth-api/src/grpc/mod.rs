//! The gRPC front end (`AUTH_GRPC_LISTEN`): `auth.v1.AuthService` for internal services, Envoy's
//! `ext_authz` `Authorization/Check` for gateways that cannot load the wasm filter, the standard
//! health service and server reflection, on one HTTP/2 listener.
//!
//! Both services are adapters of [`crate::service`], as the HTTP routes are: the same operations,
//! the same per-address limits, the same errors (an [`ApiError`](crate::ApiError) becomes a
//! status in [`status`]), so the three front ends cannot disagree.

mod auth_service;
pub mod codec;
mod ext_authz;
mod health;
mod listener;
mod metadata;
mod status;

pub use ext_authz::IDENTITY_HEADERS;
pub use listener::serve;

/// `auth.v1`, generated from `proto/auth/v1/auth.proto` (server and client).
#[allow(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    clippy::all,
    clippy::pedantic
)]
pub mod pb {
    tonic::include_proto!("auth.v1");

    /// The descriptors of `auth.v1` (and what it imports), served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/auth_v1_descriptor.bin"));

    /// `Debug` for a message that carries a credential: only the fields named, never the
    /// password or token (`build.rs` skips the derived one for exactly these messages).
    macro_rules! redacted_debug {
        ($($message:ident { $($field:ident),* })*) => {$(
            impl std::fmt::Debug for $message {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.debug_struct(stringify!($message))
                        $(.field(stringify!($field), &self.$field))*
                        .finish_non_exhaustive()
                }
            }
        )*};
    }

    redacted_debug! {
        SignupRequest { email }
        LoginRequest { email }
        TokenResponse { token_type, expires_in, refresh_expires_in }
        RefreshRequest {}
        ExchangeSignInCodeRequest {}
        LogoutRequest { scope }
        ChangePasswordRequest {}
        CompleteMfaLoginRequest {}
        EnrollTotpRequest {}
        EnrollTotpResponse {}
        ConfirmTotpRequest {}
        ConfirmTotpResponse {}
        DisableTotpRequest {}
        VerifyEmailRequest {}
        ResetPasswordRequest {}
        ValidateRequest {}
    }
}

/// Largest `auth.v1` message accepted, as the HTTP API's body limit.
pub const MAX_MESSAGE_BYTES: usize = crate::routes::MAX_BODY_BYTES;

/// Largest `ext_authz` `CheckRequest` accepted: the checked request's headers travel in it, and
/// Envoy's own default cap on request headers is 60 KiB.
pub const MAX_CHECK_REQUEST_BYTES: usize = 128 * 1024;

#[cfg(test)]
mod tests {
    use super::pb;

    #[test]
    fn credentials_never_show_in_debug_output() {
        let login = pb::LoginRequest {
            email: "ada@example.com".to_owned(),
            password: "correct horse battery staple".to_owned(),
            device_token: Some("device-secret".to_owned()),
        };
        let shown = format!("{login:?}");
        assert!(shown.contains("ada@example.com"));
        assert!(!shown.contains("horse") && !shown.contains("device-secret"));
        let tokens = pb::TokenResponse {
            access_token: "access-secret".to_owned(),
            refresh_token: "refresh-secret".to_owned(),
            device_token: Some("device-secret".to_owned()),
            ..Default::default()
        };
        let shown = format!("{tokens:?}");
        assert!(!shown.contains("secret"), "{shown}");
        let change = pb::ChangePasswordRequest {
            current_password: "old-secret".to_owned(),
            new_password: "new-secret".to_owned(),
            device_token: None,
            access_token: Some("access-secret".to_owned()),
        };
        assert!(!format!("{change:?}").contains("secret"));
        let shown = [
            format!(
                "{:?}",
                pb::CompleteMfaLoginRequest {
                    mfa_token: "challenge-secret".to_owned(),
                    factor: Some(pb::complete_mfa_login_request::Factor::Code(
                        "secret-code".to_owned()
                    )),
                }
            ),
            format!(
                "{:?}",
                pb::EnrollTotpRequest {
                    password: "password-secret".to_owned(),
                    access_token: Some("access-secret".to_owned()),
                }
            ),
            format!(
                "{:?}",
                pb::EnrollTotpResponse {
                    secret: "totp-secret".to_owned(),
                    otpauth_uri: "otpauth://totp/x?secret=uri-secret".to_owned(),
                    qr_svg: "<svg>qr-secret</svg>".to_owned(),
                }
            ),
            format!(
                "{:?}",
                pb::ConfirmTotpRequest {
                    code: "code-secret".to_owned(),
                    access_token: None,
                }
            ),
            format!(
                "{:?}",
                pb::ConfirmTotpResponse {
                    recovery_codes: vec!["recovery-secret".to_owned()],
                }
            ),
            format!(
                "{:?}",
                pb::DisableTotpRequest {
                    code: "code-secret".to_owned(),
                    access_token: None,
                }
            ),
            format!(
                "{:?}",
                pb::VerifyEmailRequest {
                    token: "link-secret".to_owned(),
                }
            ),
            format!(
                "{:?}",
                pb::ResetPasswordRequest {
                    token: "link-secret".to_owned(),
                    password: "password-secret".to_owned(),
                }
            ),
        ];
        for shown in shown {
            assert!(!shown.contains("secret"), "{shown}");
        }
    }
}
