//! The gRPC front end (`AUTH_GRPC_LISTEN`) over a real socket, with real tonic clients:
//! `auth.v1.AuthService` (the RPC flow and the second factor on every store, the mailed links
//! through a real SMTP server, the error details, the per-address limit and the login lock), Envoy's `ext_authz` `Authorization/Check`, the health service, server
//! reflection, the message size limit and malformed connections.

use std::{net::SocketAddr, time::Duration};

use test_support::smtp_sink::link_token;

use auth_api::{
    clock::Clock,
    config::EmailVerification,
    grpc::pb::{self, auth_service_client::AuthServiceClient, logout_request::Credential},
    AppState, Config,
};
use envoy_types::pb::envoy::{
    config::core::v3::{header_value_option::HeaderAppendAction, HeaderMap, HeaderValue},
    service::auth::v3::{
        attribute_context, authorization_client::AuthorizationClient, check_response::HttpResponse,
        AttributeContext, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
    },
};
use prost::Message as _;
use prost_types::value::Kind;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::oneshot,
    task::JoinHandle,
};
use tonic::{
    transport::{Channel, Endpoint},
    Code, Request, Status,
};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};
use tonic_types::{ErrorInfo, StatusExt as _};

use crate::{
    helpers::{test_config, Backend, TestDb, TestUser},
    smtp_sink::SmtpSink,
};

/// The `ErrorInfo.domain` of every error.
const DOMAIN: &str = "auth-service";

/// A running `App` over real sockets; the gRPC listener's address.
struct Served {
    grpc: SocketAddr,
    state: AppState,
    clock: Clock,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<anyhow::Result<()>>,
    _db: TestDb,
}

impl Served {
    /// An app on a fresh database of `backend`, with a frozen clock (tests move it).
    async fn start(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Self {
        let (db, url) = TestDb::create(backend).await;
        let mut config = test_config(url);
        adjust(&mut config);
        let clock = Clock::frozen();
        let app = auth_api::App::build_with_clock(config, clock.clone())
            .await
            .unwrap();
        let grpc = app.grpc_addr().unwrap().expect("the gRPC listener is on");
        let state = app.state().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Self {
            grpc,
            state,
            clock,
            stop: Some(stop),
            server,
            _db: db,
        }
    }

    async fn sqlite() -> Self {
        Self::start(Backend::Sqlite, |_| {}).await
    }

    /// A new HTTP/2 connection to the gRPC listener.
    async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .connect()
            .await
            .expect("cannot connect to the gRPC listener")
    }

    async fn client(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel().await)
    }

    /// Stops the app; it must stop cleanly and promptly.
    async fn finish(mut self) {
        let _ = self.stop.take().expect("stopped twice").send(());
        tokio::time::timeout(Duration::from_secs(30), self.server)
            .await
            .expect("the app did not stop within 30 s")
            .unwrap()
            .unwrap();
    }
}

/// `request` with one metadata entry.
fn with_metadata<T>(message: T, name: &'static str, value: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(name, value.parse().expect("not a metadata value"));
    request
}

fn bearer<T>(message: T, token: &str) -> Request<T> {
    with_metadata(message, "authorization", &format!("Bearer {token}"))
}

/// `request` as sent through a trusted gateway that saw the client at `ip`.
fn from_address<T>(message: T, ip: &str) -> Request<T> {
    with_metadata(message, "x-envoy-external-address", ip)
}

/// Asserts the code, the `ErrorInfo` reason and domain of an error; returns its `ErrorInfo`.
#[track_caller]
fn assert_error(status: &Status, code: Code, reason: &str) -> ErrorInfo {
    assert_eq!(status.code(), code, "{status:?}");
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, reason, "{status:?}");
    assert_eq!(info.domain, DOMAIN, "{status:?}");
    info
}

/// Asserts a `rate_limited` error with a `RetryInfo` of at least a second; returns the delay.
#[track_caller]
fn assert_rate_limited(status: &Status) -> Duration {
    assert_error(status, Code::ResourceExhausted, "rate_limited");
    let delay = status
        .get_details_retry_info()
        .unwrap_or_else(|| panic!("no RetryInfo in {status:?}"))
        .retry_delay
        .unwrap_or_else(|| panic!("RetryInfo without a delay in {status:?}"));
    assert!(delay >= Duration::from_secs(1), "{delay:?}");
    delay
}

fn signup_request(user: &TestUser) -> pb::SignupRequest {
    pb::SignupRequest {
        email: user.email.clone(),
        password: user.password.clone(),
    }
}

fn login_request(email: &str, password: &str) -> pb::LoginRequest {
    pb::LoginRequest {
        email: email.to_owned(),
        password: password.to_owned(),
        device_token: None,
    }
}

fn validate_request(token: Option<&str>) -> pb::ValidateRequest {
    pb::ValidateRequest {
        access_token: token.map(str::to_owned),
    }
}

fn logout_request(credential: Credential, scope: pb::LogoutScope) -> pb::LogoutRequest {
    pb::LogoutRequest {
        credential: Some(credential),
        scope: scope.into(),
    }
}

/// Signs `user` up; returns the new user's id.
async fn signup(client: &mut AuthServiceClient<Channel>, user: &TestUser) -> String {
    let account = client
        .signup(signup_request(user))
        .await
        .expect("signup failed")
        .into_inner();
    assert_eq!(account.email, user.email);
    assert!(!account.id.is_empty());
    account.id
}

async fn login(client: &mut AuthServiceClient<Channel>, user: &TestUser) -> pb::TokenResponse {
    client
        .login(login_request(&user.email, &user.password))
        .await
        .expect("login failed")
        .into_inner()
}

/// `grpc_requests_total` counts each `(method, code, calls)` of `service` in the metrics `served`
/// renders.
fn assert_calls_counted(served: &Served, service: &str, counts: &[(&str, &str, u32)]) {
    let metrics = served.state.metrics.render();
    for (method, code, calls) in counts {
        let line =
            format!(r#"grpc_requests_total{{method="{service}/{method}",code="{code}"}} {calls}"#);
        assert!(metrics.contains(&line), "{line} not in {metrics}");
    }
}

/// The string field `name` of a claims `Struct`.
#[track_caller]
fn claim_str<'a>(claims: &'a prost_types::Struct, name: &str) -> &'a str {
    match claims.fields.get(name).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(value)) => value,
        other => panic!("claim {name} is not a string: {other:?}"),
    }
}

/// Signup → Login → Validate (message, metadata) → Refresh (and reuse of the old refresh token)
/// → ChangePassword → Logout, as the HTTP API does them.
async fn signup_login_validate_refresh_change_password_and_logout(backend: Backend) {
    let served = Served::start(backend, |c| c.refresh_reuse_grace = Duration::ZERO).await;
    let mut client = served.client().await;
    let user = TestUser::random();
    let id = signup(&mut client, &user).await;

    let tokens = login(&mut client, &user).await;
    assert_eq!(tokens.token_type, "Bearer");
    assert!(tokens.expires_in > 0 && tokens.refresh_expires_in > tokens.expires_in);
    assert!(!tokens.refresh_token.is_empty());
    let claims = crate::helpers::claims_of(&tokens.access_token);

    // Validate, the token in the message.
    let valid = client
        .validate(validate_request(Some(&tokens.access_token)))
        .await
        .expect("a fresh token is valid")
        .into_inner();
    assert_eq!(valid.user_id, id);
    assert_eq!(valid.email, user.email);
    assert_eq!(valid.roles, ["user"]);
    assert_eq!(valid.session_id, claims["sid"].as_str().unwrap());
    assert_eq!(valid.expires_at, claims["exp"].as_i64().unwrap());
    let struct_claims = valid.claims.expect("no claims");
    assert_eq!(claim_str(&struct_claims, "sub"), id);
    assert_eq!(claim_str(&struct_claims, "email"), user.email);
    match struct_claims.fields["roles"].kind.as_ref() {
        Some(Kind::ListValue(roles)) => assert_eq!(
            roles.values,
            [prost_types::Value {
                kind: Some(Kind::StringValue("user".to_owned()))
            }]
        ),
        other => panic!("roles is not a list: {other:?}"),
    }
    assert_eq!(
        struct_claims.fields["exp"].kind,
        Some(Kind::NumberValue(valid.expires_at as f64))
    );

    // Validate, the token in the metadata: the same answer.
    let by_metadata = client
        .validate(bearer(validate_request(None), &tokens.access_token))
        .await
        .expect("a fresh token is valid in the metadata")
        .into_inner();
    assert_eq!(by_metadata.user_id, id);
    assert_eq!(by_metadata.session_id, valid.session_id);

    // Refresh: a new pair, the same session; the old refresh token is then reuse.
    let next = client
        .refresh(pb::RefreshRequest {
            refresh_token: tokens.refresh_token.clone(),
        })
        .await
        .expect("refresh failed")
        .into_inner();
    assert_ne!(next.refresh_token, tokens.refresh_token);
    assert_ne!(next.access_token, tokens.access_token);
    assert!(next.device_token.is_none(), "a device token from a refresh");
    assert_eq!(
        crate::helpers::claims_of(&next.access_token)["sid"],
        claims["sid"]
    );
    let replay = client
        .refresh(pb::RefreshRequest {
            refresh_token: tokens.refresh_token.clone(),
        })
        .await
        .unwrap_err();
    assert_error(&replay, Code::Unauthenticated, "invalid_grant");
    assert!(replay.get_details_retry_info().is_none());
    // Reuse ends the whole session, the successor included.
    let revoked = client
        .validate(validate_request(Some(&next.access_token)))
        .await
        .unwrap_err();
    assert_error(&revoked, Code::Unauthenticated, "invalid_token");
    let successor = client
        .refresh(pb::RefreshRequest {
            refresh_token: next.refresh_token.clone(),
        })
        .await
        .unwrap_err();
    assert_error(&successor, Code::Unauthenticated, "invalid_grant");

    // ChangePassword: the current password is asked again.
    let tokens = login(&mut client, &user).await;
    let wrong = client
        .change_password(pb::ChangePasswordRequest {
            current_password: "not the current password".to_owned(),
            new_password: "a brand new passphrase".to_owned(),
            device_token: None,
            access_token: Some(tokens.access_token.clone()),
        })
        .await
        .unwrap_err();
    assert_error(&wrong, Code::PermissionDenied, "wrong_password");
    client
        .change_password(bearer(
            pb::ChangePasswordRequest {
                current_password: user.password.clone(),
                new_password: "a brand new passphrase".to_owned(),
                device_token: None,
                access_token: None,
            },
            &tokens.access_token,
        ))
        .await
        .expect("the right current password changes it");
    let old = client
        .login(login_request(&user.email, &user.password))
        .await
        .unwrap_err();
    assert_error(&old, Code::Unauthenticated, "invalid_credentials");
    let user = TestUser {
        password: "a brand new passphrase".to_owned(),
        ..user
    };
    let other = login(&mut client, &user).await;
    // The changing session stays.
    client
        .validate(validate_request(Some(&tokens.access_token)))
        .await
        .expect("the session that changed the password stays");

    // Logout LOCAL with the access token: this session ends, the other stays.
    client
        .logout(logout_request(
            Credential::AccessToken(tokens.access_token.clone()),
            pb::LogoutScope::Local,
        ))
        .await
        .expect("logout failed");
    let ended = client
        .validate(validate_request(Some(&tokens.access_token)))
        .await
        .unwrap_err();
    assert_error(&ended, Code::Unauthenticated, "invalid_token");
    let ended = client
        .refresh(pb::RefreshRequest {
            refresh_token: tokens.refresh_token.clone(),
        })
        .await
        .unwrap_err();
    assert_error(&ended, Code::Unauthenticated, "invalid_grant");
    client
        .validate(validate_request(Some(&other.access_token)))
        .await
        .expect("another session is not ended by a LOCAL logout");
    // Logging out an ended session again is OK (RFC 7009 §2.2).
    client
        .logout(logout_request(
            Credential::AccessToken(tokens.access_token.clone()),
            pb::LogoutScope::Unspecified,
        ))
        .await
        .expect("a second logout is OK");

    // Logout OTHERS, the access token in the metadata: every session but this one ends.
    let kept = login(&mut client, &user).await;
    let dropped = login(&mut client, &user).await;
    client
        .logout(bearer(
            pb::LogoutRequest {
                credential: None,
                scope: pb::LogoutScope::Others.into(),
            },
            &kept.access_token,
        ))
        .await
        .expect("logout others failed");
    let ended = client
        .validate(validate_request(Some(&dropped.access_token)))
        .await
        .unwrap_err();
    assert_error(&ended, Code::Unauthenticated, "invalid_token");
    client
        .validate(validate_request(Some(&kept.access_token)))
        .await
        .expect("OTHERS keeps this session");

    // Logout ALL with a refresh token, in the metadata-free form: every session ends.
    let third = login(&mut client, &user).await;
    client
        .logout(logout_request(
            Credential::RefreshToken(third.refresh_token.clone()),
            pb::LogoutScope::All,
        ))
        .await
        .expect("logout all failed");
    for access in [&kept.access_token, &third.access_token] {
        let ended = client
            .validate(bearer(validate_request(None), access))
            .await
            .unwrap_err();
        assert_error(&ended, Code::Unauthenticated, "invalid_token");
    }
    drop(client);
    served.finish().await;
}

crate::on_every_backend!(
    signup_login_validate_refresh_change_password_and_logout,
    a_second_factor_is_enrolled_used_and_disabled,
);

/// `ExchangeSignInCode` is `POST /token?grant_type=pkce` over gRPC: the one-time code of a
/// sign-in through a provider, with the verifier of the app's challenge, opens an ordinary
/// session whose tokens say `amr: ["oauth"]`; a code is spent by its first use, whatever the
/// verifier, and a disabled user is PERMISSION_DENIED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_code_is_exchanged_once_for_an_oauth_session() {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
    use sha2::{Digest as _, Sha256};

    let served = Served::sqlite().await;
    let mut client = served.client().await;
    let store = &served.state.store;
    let now = served.clock.now();
    // A user that a sign-in through a provider created, and codes `/callback` would hand out.
    let user_id = uuid::Uuid::new_v4().to_string();
    let email = TestUser::random().email;
    let identity = auth_api::store::ExternalIdentity {
        provider: "local".to_owned(),
        subject: format!("sub-{user_id}"),
        issuer: Some("https://op.example".to_owned()),
        user_id: user_id.clone(),
        email: Some(email.clone()),
        email_verified: true,
        created_at: now,
        last_used_at: now,
    };
    store
        .insert_passwordless_user(&email, &["user"], &identity)
        .await
        .unwrap();
    let verifier = "v".repeat(43);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let code = |n: u8| {
        let code = URL_SAFE_NO_PAD.encode([n; 32]);
        let row = auth_api::store::SignInCode {
            code_hash: Sha256::digest(code.as_bytes()).to_vec(),
            user_id: user_id.clone(),
            provider: "local".to_owned(),
            amr: "oauth".to_owned(),
            code_challenge: challenge.clone(),
            created_at: now,
            expires_at: now + 60,
        };
        (code, row)
    };
    let exchange = |auth_code: &str, code_verifier: &str| pb::ExchangeSignInCodeRequest {
        auth_code: auth_code.to_owned(),
        code_verifier: code_verifier.to_owned(),
    };

    // The right verifier: tokens of an `oauth` session; the same code again: refused.
    let (first, row) = code(1);
    store.insert_sign_in_code(&row).await.unwrap();
    let tokens = client
        .exchange_sign_in_code(exchange(&first, &verifier))
        .await
        .unwrap()
        .into_inner();
    let claims = test_support::jwt_part(&tokens.access_token, 1);
    assert_eq!(claims["amr"], serde_json::json!(["oauth"]));
    assert_eq!(claims["sub"], user_id.as_str());
    assert!(tokens.device_token.is_none());
    let again = client
        .exchange_sign_in_code(exchange(&first, &verifier))
        .await
        .unwrap_err();
    assert_error(&again, Code::Unauthenticated, "invalid_grant");

    // A wrong verifier spends the code.
    let (second, row) = code(2);
    store.insert_sign_in_code(&row).await.unwrap();
    let wrong = client
        .exchange_sign_in_code(exchange(&second, &"w".repeat(43)))
        .await
        .unwrap_err();
    assert_error(&wrong, Code::Unauthenticated, "invalid_grant");
    let after = client
        .exchange_sign_in_code(exchange(&second, &verifier))
        .await
        .unwrap_err();
    assert_error(&after, Code::Unauthenticated, "invalid_grant");

    // A user disabled between the callback and the exchange.
    let (third, row) = code(3);
    store.insert_sign_in_code(&row).await.unwrap();
    store
        .disable_user(&user_id, served.state.revoke_at())
        .await
        .unwrap();
    let disabled = client
        .exchange_sign_in_code(exchange(&third, &verifier))
        .await
        .unwrap_err();
    assert_error(&disabled, Code::PermissionDenied, "account_disabled");
    served.finish().await;
}

/// One TOTP period.
const TOTP_STEP: Duration = Duration::from_secs(30);

/// The code an authenticator app shows now for the base32 `secret` of an enrolment.
fn totp_code(served: &Served, secret: &str) -> String {
    let bytes = data_encoding::BASE32_NOPAD
        .decode(secret.as_bytes())
        .expect("the secret is base32");
    let secret = auth_api::domain::TotpSecret::from_bytes(&bytes).expect("a secret of 20 bytes");
    secret.code_at(served.clock.now()).as_str().to_owned()
}

/// A six-digit code that is not `right`.
fn other_code(right: &str) -> String {
    let right: u32 = right.parse().unwrap();
    format!("{:06}", (right + 1) % 1_000_000)
}

fn complete_mfa_request(
    mfa_token: &str,
    factor: pb::complete_mfa_login_request::Factor,
) -> pb::CompleteMfaLoginRequest {
    pb::CompleteMfaLoginRequest {
        mfa_token: mfa_token.to_owned(),
        factor: Some(factor),
    }
}

/// The TOTP requests, with the access token in the message (`None`: in the metadata, or none).
fn enroll_request(password: &str, access_token: Option<&str>) -> pb::EnrollTotpRequest {
    pb::EnrollTotpRequest {
        password: password.to_owned(),
        access_token: access_token.map(str::to_owned),
    }
}

fn confirm_request(code: &str, access_token: Option<&str>) -> pb::ConfirmTotpRequest {
    pb::ConfirmTotpRequest {
        code: code.to_owned(),
        access_token: access_token.map(str::to_owned),
    }
}

fn disable_request(code: &str, access_token: Option<&str>) -> pb::DisableTotpRequest {
    pb::DisableTotpRequest {
        code: code.to_owned(),
        access_token: access_token.map(str::to_owned),
    }
}

/// The requests of the mailed links.
fn verify_request(token: &str) -> pb::VerifyEmailRequest {
    pb::VerifyEmailRequest {
        token: token.to_owned(),
    }
}

fn resend_request(email: &str) -> pb::ResendVerificationRequest {
    pb::ResendVerificationRequest {
        email: email.to_owned(),
    }
}

fn recover_request(email: &str) -> pb::RequestPasswordResetRequest {
    pb::RequestPasswordResetRequest {
        email: email.to_owned(),
    }
}

fn reset_request(token: &str, password: &str) -> pb::ResetPasswordRequest {
    pb::ResetPasswordRequest {
        token: token.to_owned(),
        password: password.to_owned(),
    }
}

/// Login with the right password of an account with a second factor: `mfa_required`, and the
/// challenge in the ErrorInfo metadata.
async fn mfa_challenge(client: &mut AuthServiceClient<Channel>, user: &TestUser) -> String {
    let challenged = client
        .login(login_request(&user.email, &user.password))
        .await
        .unwrap_err();
    let info = assert_error(&challenged, Code::Unauthenticated, "mfa_required");
    assert!(challenged.get_details_retry_info().is_none());
    let token = info
        .metadata
        .get("mfa_token")
        .unwrap_or_else(|| panic!("no mfa_token in {info:?}"))
        .clone();
    assert!(!token.is_empty());
    assert!(!challenged.message().contains(&token));
    token
}

/// EnrollTotp → ConfirmTotp → Login (`mfa_required` with the challenge) → CompleteMfaLogin
/// (a TOTP code, then a recovery code) → DisableTotp, as `/totp/*` and `/login/mfa` do them,
/// with the main refusal of each.
async fn a_second_factor_is_enrolled_used_and_disabled(backend: Backend) {
    use pb::complete_mfa_login_request::Factor;

    let served = Served::start(backend, |_| {}).await;
    let mut client = served.client().await;
    let user = TestUser::random();
    signup(&mut client, &user).await;
    let tokens = login(&mut client, &user).await;

    // EnrollTotp: an access token and the password again.
    let no_token = client
        .enroll_totp(enroll_request(&user.password, None))
        .await
        .unwrap_err();
    assert_error(&no_token, Code::Unauthenticated, "missing_token");
    let wrong = client
        .enroll_totp(bearer(
            enroll_request("not the password at all", None),
            &tokens.access_token,
        ))
        .await
        .unwrap_err();
    assert_error(&wrong, Code::PermissionDenied, "wrong_password");
    let enrolment = client
        .enroll_totp(bearer(
            enroll_request(&user.password, None),
            &tokens.access_token,
        ))
        .await
        .expect("enrolment failed")
        .into_inner();
    assert_eq!(enrolment.secret.len(), 32, "{}", enrolment.secret);
    assert!(
        enrolment.otpauth_uri.starts_with("otpauth://totp/")
            && enrolment
                .otpauth_uri
                .contains(&format!("secret={}", enrolment.secret)),
        "{}",
        enrolment.otpauth_uri
    );
    assert!(enrolment.qr_svg.starts_with("<svg"), "{}", enrolment.qr_svg);

    // ConfirmTotp: a wrong code, then the right one (the token in the message).
    let right = totp_code(&served, &enrolment.secret);
    let refused = client
        .confirm_totp(confirm_request(
            &other_code(&right),
            Some(&tokens.access_token),
        ))
        .await
        .unwrap_err();
    assert_error(&refused, Code::Unauthenticated, "invalid_code");
    let confirmed = client
        .confirm_totp(confirm_request(&right, Some(&tokens.access_token)))
        .await
        .expect("the right code confirms")
        .into_inner();
    assert_eq!(
        confirmed.recovery_codes.len(),
        auth_api::domain::RECOVERY_CODE_COUNT
    );
    let again = client
        .enroll_totp(enroll_request(&user.password, Some(&tokens.access_token)))
        .await
        .unwrap_err();
    assert_error(&again, Code::AlreadyExists, "totp_already_enabled");
    served.clock.advance(TOTP_STEP);

    // Login now asks for the second factor; CompleteMfaLogin takes the challenge and a code.
    let challenge = mfa_challenge(&mut client, &user).await;
    let no_factor = client
        .complete_mfa_login(pb::CompleteMfaLoginRequest {
            mfa_token: challenge.clone(),
            factor: None,
        })
        .await
        .unwrap_err();
    assert_error(&no_factor, Code::InvalidArgument, "invalid_request");
    let right = totp_code(&served, &enrolment.secret);
    let unknown = client
        .complete_mfa_login(complete_mfa_request(
            "not-a-challenge",
            Factor::Code(right.clone()),
        ))
        .await
        .unwrap_err();
    assert_error(&unknown, Code::Unauthenticated, "invalid_mfa_token");
    let wrong = client
        .complete_mfa_login(complete_mfa_request(
            &challenge,
            Factor::Code(other_code(&right)),
        ))
        .await
        .unwrap_err();
    assert_error(&wrong, Code::Unauthenticated, "invalid_code");
    // A wrong code leaves the challenge usable.
    let second = client
        .complete_mfa_login(complete_mfa_request(
            &challenge,
            Factor::Code(right.clone()),
        ))
        .await
        .expect("the right code completes the login")
        .into_inner();
    assert_eq!(second.token_type, "Bearer");
    assert!(second.device_token.is_some(), "no device token");
    let claims = crate::helpers::claims_of(&second.access_token);
    assert_eq!(claims["amr"], serde_json::json!(["pwd", "otp"]));
    client
        .validate(validate_request(Some(&second.access_token)))
        .await
        .expect("the new session is valid");
    // The challenge is single use.
    let used = client
        .complete_mfa_login(complete_mfa_request(&challenge, Factor::Code(right)))
        .await
        .unwrap_err();
    assert_error(&used, Code::Unauthenticated, "invalid_mfa_token");

    // A recovery code completes a login too.
    let challenge = mfa_challenge(&mut client, &user).await;
    let by_recovery = client
        .complete_mfa_login(complete_mfa_request(
            &challenge,
            Factor::RecoveryCode(confirmed.recovery_codes[0].clone()),
        ))
        .await
        .expect("a recovery code completes the login")
        .into_inner();
    assert!(!by_recovery.access_token.is_empty());

    // DisableTotp: a code is needed; then there is nothing to disable or confirm.
    served.clock.advance(TOTP_STEP);
    let right = totp_code(&served, &enrolment.secret);
    let wrong = client
        .disable_totp(bearer(
            disable_request(&other_code(&right), None),
            &second.access_token,
        ))
        .await
        .unwrap_err();
    assert_error(&wrong, Code::Unauthenticated, "invalid_code");
    client
        .disable_totp(bearer(disable_request(&right, None), &second.access_token))
        .await
        .expect("the right code disables the factor");
    let gone = client
        .disable_totp(bearer(disable_request(&right, None), &second.access_token))
        .await
        .unwrap_err();
    assert_error(&gone, Code::FailedPrecondition, "totp_not_enabled");
    let not_pending = client
        .confirm_totp(bearer(confirm_request(&right, None), &second.access_token))
        .await
        .unwrap_err();
    assert_error(&not_pending, Code::FailedPrecondition, "totp_not_pending");
    // The password alone logs in again.
    login(&mut client, &user).await;

    assert_calls_counted(
        &served,
        "auth.v1.AuthService",
        &[
            ("Login", "UNAUTHENTICATED", 2),
            ("CompleteMfaLogin", "OK", 2),
            ("CompleteMfaLogin", "UNAUTHENTICATED", 3),
            ("EnrollTotp", "OK", 1),
            ("ConfirmTotp", "OK", 1),
            ("DisableTotp", "OK", 1),
        ],
    );
    drop(client);
    served.finish().await;
}

/// How long a test waits for a mail.
const MAIL_PATIENCE: Duration = Duration::from_secs(15);

/// The messages `sink` received for `recipient`, once there are `n`.
async fn mails_to(sink: &SmtpSink, recipient: &str, n: usize) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + MAIL_PATIENCE;
    loop {
        let mails: Vec<_> = sink
            .messages()
            .into_iter()
            .filter(|m| m["rcpt_tos"] == serde_json::json!([recipient]))
            .collect();
        if mails.len() >= n {
            return mails;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{recipient} got {} mails within {MAIL_PATIENCE:?}, expected {n}",
            mails.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// VerifyEmail, ResendVerification, RequestPasswordReset and ResetPassword, as `/verify`,
/// `/verify/resend`, `/recover` and `/reset`: the tokens are read from the mail a real SMTP
/// server (`SmtpSink`) received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mailed_links_verify_an_email_and_reset_a_password() {
    let sink = SmtpSink::start();
    let port = sink.port;
    let served = Served::start(Backend::Sqlite, |c| {
        c.smtp_url = Some(format!("smtp://127.0.0.1:{port}").into());
        c.email_from = Some("Accounts <accounts@example.com>".parse().unwrap());
        c.smtp_timeout = Duration::from_secs(5);
        c.outbox_poll_interval = Duration::from_millis(100);
        c.email_verification = EmailVerification::Optional;
    })
    .await;
    let mut client = served.client().await;

    // Signup with verification on: `verification_sent`, no id; the link comes by mail.
    let user = TestUser::random();
    let answer = client
        .signup(signup_request(&user))
        .await
        .expect("signup failed")
        .into_inner();
    assert!(answer.verification_sent);
    assert!(answer.id.is_empty() && answer.created_at.is_empty());
    let first = link_token(&mails_to(&sink, &user.email, 1).await[0], "verify");
    let tokens = login(&mut client, &user).await;
    assert_eq!(
        crate::helpers::claims_of(&tokens.access_token)["email_verified"],
        false
    );

    // ResendVerification: a new link, and the older one stops working.
    let malformed = client
        .resend_verification(resend_request("not-an-email"))
        .await
        .unwrap_err();
    assert_error(&malformed, Code::InvalidArgument, "invalid_email");
    client
        .resend_verification(resend_request(&user.email))
        .await
        .expect("resend failed");
    let second = link_token(&mails_to(&sink, &user.email, 2).await[1], "verify");
    assert_ne!(first, second);
    let replaced = client
        .verify_email(verify_request(&first))
        .await
        .unwrap_err();
    assert_error(&replaced, Code::InvalidArgument, "invalid_email_token");

    // VerifyEmail: once; tokens from the next refresh on say so.
    let verified = client
        .verify_email(verify_request(&second))
        .await
        .expect("the newest link verifies")
        .into_inner();
    assert!(verified.email_verified);
    let used = client
        .verify_email(verify_request(&second))
        .await
        .unwrap_err();
    assert_error(&used, Code::InvalidArgument, "invalid_email_token");
    let refreshed = client
        .refresh(pb::RefreshRequest {
            refresh_token: tokens.refresh_token.clone(),
        })
        .await
        .expect("refresh failed")
        .into_inner();
    assert_eq!(
        crate::helpers::claims_of(&refreshed.access_token)["email_verified"],
        true
    );

    // RequestPasswordReset: OK for an unknown address too (nothing is mailed there).
    let unknown = TestUser::random().email;
    client
        .request_password_reset(recover_request(&unknown))
        .await
        .expect("an unknown address answers OK");
    let malformed = client
        .request_password_reset(recover_request("not-an-email"))
        .await
        .unwrap_err();
    assert_error(&malformed, Code::InvalidArgument, "invalid_email");
    client
        .request_password_reset(recover_request(&user.email))
        .await
        .expect("a reset request failed");
    let reset = link_token(&mails_to(&sink, &user.email, 3).await[2], "reset");

    // ResetPassword: a bad token, a weak password (the link survives it), then the new password.
    let bad = client
        .reset_password(reset_request(&"A".repeat(43), "a brand new passphrase"))
        .await
        .unwrap_err();
    assert_error(&bad, Code::InvalidArgument, "invalid_email_token");
    let weak = client
        .reset_password(reset_request(&reset, "short"))
        .await
        .unwrap_err();
    let info = assert_error(&weak, Code::InvalidArgument, "weak_password");
    assert_eq!(
        info.metadata.get("reason").map(String::as_str),
        Some("length")
    );
    client
        .reset_password(reset_request(&reset, "a brand new passphrase"))
        .await
        .expect("the reset link sets the password");
    // Every session ended; the old password is gone, the new one logs in; the link is used.
    let ended = client
        .validate(validate_request(Some(&refreshed.access_token)))
        .await
        .unwrap_err();
    assert_error(&ended, Code::Unauthenticated, "invalid_token");
    let old = client
        .login(login_request(&user.email, &user.password))
        .await
        .unwrap_err();
    assert_error(&old, Code::Unauthenticated, "invalid_credentials");
    client
        .login(login_request(&user.email, "a brand new passphrase"))
        .await
        .expect("the new password logs in");
    let used = client
        .reset_password(reset_request(&reset, "another new passphrase"))
        .await
        .unwrap_err();
    assert_error(&used, Code::InvalidArgument, "invalid_email_token");
    // Nothing went to the unknown address (its request was answered long before).
    assert!(
        sink.messages()
            .iter()
            .all(|m| m["rcpt_tos"] != serde_json::json!([unknown])),
        "a mail to an address without an account"
    );
    drop(client);
    served.finish().await;
}

/// Every error is a status with an `ErrorInfo` whose reason is the HTTP API's error code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_the_http_error_code_as_error_info() {
    let served = Served::sqlite().await;
    let mut client = served.client().await;
    let user = TestUser::random();
    signup(&mut client, &user).await;

    let taken = client
        .signup(pb::SignupRequest {
            email: user.email.to_uppercase(),
            password: "another passphrase here".to_owned(),
        })
        .await
        .unwrap_err();
    let info = assert_error(&taken, Code::AlreadyExists, "email_taken");
    assert!(info.metadata.is_empty(), "{info:?}");
    assert!(taken.get_details_retry_info().is_none());

    let weak = client
        .signup(pb::SignupRequest {
            email: TestUser::random().email,
            password: "short".to_owned(),
        })
        .await
        .unwrap_err();
    let info = assert_error(&weak, Code::InvalidArgument, "weak_password");
    assert_eq!(
        info.metadata.get("reason").map(String::as_str),
        Some("length")
    );
    let common = client
        .signup(pb::SignupRequest {
            email: TestUser::random().email,
            password: "1q2w3e4r5t6y7u8i9o0p".to_owned(),
        })
        .await
        .unwrap_err();
    let info = assert_error(&common, Code::InvalidArgument, "weak_password");
    assert_eq!(
        info.metadata.get("reason").map(String::as_str),
        Some("common")
    );
    let too_long = client
        .signup(pb::SignupRequest {
            email: TestUser::random().email,
            password: "x".repeat(10 * 1024),
        })
        .await
        .unwrap_err();
    assert_error(&too_long, Code::InvalidArgument, "password_too_long");

    let invalid = client
        .signup(pb::SignupRequest {
            email: "not-an-email".to_owned(),
            password: "correct horse battery staple".to_owned(),
        })
        .await
        .unwrap_err();
    assert_error(&invalid, Code::InvalidArgument, "invalid_email");

    // The same answer for a wrong password and an unknown email.
    let wrong = client
        .login(login_request(&user.email, "wrong password entirely"))
        .await
        .unwrap_err();
    let info = assert_error(&wrong, Code::Unauthenticated, "invalid_credentials");
    assert!(info.metadata.is_empty());
    let unknown = client
        .login(login_request(
            &TestUser::random().email,
            "wrong password entirely",
        ))
        .await
        .unwrap_err();
    assert_error(&unknown, Code::Unauthenticated, "invalid_credentials");
    assert_eq!(unknown.message(), wrong.message());

    // A disabled account is told so only after the right password.
    let disabled = TestUser::random();
    let disabled_id = signup(&mut client, &disabled).await;
    assert!(served
        .state
        .store
        .disable_user(&disabled_id, served.state.revoke_at())
        .await
        .unwrap());
    let wrong = client
        .login(login_request(&disabled.email, "wrong password entirely"))
        .await
        .unwrap_err();
    assert_error(&wrong, Code::Unauthenticated, "invalid_credentials");
    let right = client
        .login(login_request(&disabled.email, &disabled.password))
        .await
        .unwrap_err();
    assert_error(&right, Code::PermissionDenied, "account_disabled");

    let missing = client.validate(validate_request(None)).await.unwrap_err();
    assert_error(&missing, Code::Unauthenticated, "missing_token");
    let tokens = login(&mut client, &user).await;
    let both = client
        .validate(bearer(
            validate_request(Some(&tokens.access_token)),
            &tokens.access_token,
        ))
        .await
        .unwrap_err();
    assert_error(&both, Code::InvalidArgument, "invalid_request");
    let garbage = client
        .validate(validate_request(Some("not.a.jwt")))
        .await
        .unwrap_err();
    assert_error(&garbage, Code::Unauthenticated, "invalid_token");
    let not_bearer = client
        .validate(with_metadata(
            validate_request(None),
            "authorization",
            "Basic dXNlcjpwYXNz",
        ))
        .await
        .unwrap_err();
    assert_eq!(not_bearer.code(), Code::Unauthenticated, "{not_bearer:?}");

    let bad_grant = client
        .refresh(pb::RefreshRequest {
            refresh_token: "not a refresh token".to_owned(),
        })
        .await
        .unwrap_err();
    assert_error(&bad_grant, Code::Unauthenticated, "invalid_grant");

    let no_token = client
        .change_password(pb::ChangePasswordRequest {
            current_password: user.password.clone(),
            new_password: "a brand new passphrase".to_owned(),
            device_token: None,
            access_token: None,
        })
        .await
        .unwrap_err();
    assert_error(&no_token, Code::Unauthenticated, "missing_token");

    // Logout: an unknown scope, no credential, two credentials.
    let scope = client
        .logout(pb::LogoutRequest {
            credential: Some(Credential::AccessToken(tokens.access_token.clone())),
            scope: 9,
        })
        .await
        .unwrap_err();
    assert_error(&scope, Code::InvalidArgument, "invalid_request");
    let nothing = client
        .logout(pb::LogoutRequest {
            credential: None,
            scope: pb::LogoutScope::Local.into(),
        })
        .await
        .unwrap_err();
    assert_error(&nothing, Code::InvalidArgument, "invalid_request");
    let two = client
        .logout(bearer(
            logout_request(
                Credential::RefreshToken(tokens.refresh_token.clone()),
                pb::LogoutScope::Local,
            ),
            &tokens.access_token,
        ))
        .await
        .unwrap_err();
    assert_error(&two, Code::InvalidArgument, "invalid_request");
    // None of these ended the session.
    client
        .validate(validate_request(Some(&tokens.access_token)))
        .await
        .expect("refused logouts end nothing");
    // grpc_requests_total counts each call by the code it answered.
    assert_calls_counted(
        &served,
        "auth.v1.AuthService",
        &[
            ("Signup", "OK", 2),
            ("Signup", "ALREADY_EXISTS", 1),
            ("Login", "UNAUTHENTICATED", 3),
            ("Login", "PERMISSION_DENIED", 1),
            ("Logout", "INVALID_ARGUMENT", 3),
        ],
    );
    drop(client);
    served.finish().await;
}

/// SECURITY.md E 49 over gRPC: Signup, Login, CompleteMfaLogin, Refresh, ChangePassword, the
/// TOTP RPCs and those of the mailed links share the per-address bucket; Logout and Validate are never limited; a trusted gateway's
/// `x-envoy-external-address` metadata names the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_address_limit_counts_credential_rpcs_per_client_address() {
    const LIMIT: u32 = 3;
    let served = Served::start(Backend::Sqlite, |c| c.ip_limit_per_minute = LIMIT).await;
    let mut client = served.client().await;
    let user = TestUser::random();
    client
        .signup(from_address(signup_request(&user), "198.51.100.1"))
        .await
        .expect("signup failed");

    let limited = "198.51.100.2";
    let mut sessions = Vec::new();
    for attempt in 1..=LIMIT {
        let tokens = client
            .login(from_address(
                login_request(&user.email, &user.password),
                limited,
            ))
            .await
            .unwrap_or_else(|e| panic!("login {attempt} of {LIMIT} refused: {e:?}"))
            .into_inner();
        sessions.push(tokens);
    }
    let over = client
        .login(from_address(
            login_request(&user.email, &user.password),
            limited,
        ))
        .await
        .unwrap_err();
    assert_rate_limited(&over);
    // The one bucket: the other credential RPCs are refused too.
    let refresh = client
        .refresh(from_address(
            pb::RefreshRequest {
                refresh_token: sessions[0].refresh_token.clone(),
            },
            limited,
        ))
        .await
        .unwrap_err();
    assert_rate_limited(&refresh);
    let signup = client
        .signup(from_address(signup_request(&TestUser::random()), limited))
        .await
        .unwrap_err();
    assert_rate_limited(&signup);
    let change = from_address(
        pb::ChangePasswordRequest {
            current_password: user.password.clone(),
            new_password: "a brand new passphrase".to_owned(),
            device_token: None,
            access_token: Some(sessions[0].access_token.clone()),
        },
        limited,
    );
    assert_rate_limited(&client.change_password(change).await.unwrap_err());
    // And so are the second step of a login, the TOTP RPCs and those of the mailed links, as
    // their HTTP routes are.
    macro_rules! refused_from_the_limited_address {
        ($rpc:ident, $request:expr) => {
            assert_rate_limited(
                &client
                    .$rpc(from_address($request, limited))
                    .await
                    .unwrap_err(),
            )
        };
    }
    let access = Some(sessions[0].access_token.as_str());
    let mfa = complete_mfa_request(
        "a-challenge",
        pb::complete_mfa_login_request::Factor::Code("123456".to_owned()),
    );
    refused_from_the_limited_address!(complete_mfa_login, mfa);
    refused_from_the_limited_address!(enroll_totp, enroll_request(&user.password, access));
    refused_from_the_limited_address!(confirm_totp, confirm_request("123456", access));
    refused_from_the_limited_address!(disable_totp, disable_request("123456", access));
    let unused_token = "A".repeat(43);
    refused_from_the_limited_address!(verify_email, verify_request(&unused_token));
    refused_from_the_limited_address!(resend_verification, resend_request(&user.email));
    refused_from_the_limited_address!(request_password_reset, recover_request(&user.email));
    let reset = reset_request(&unused_token, "a brand new passphrase");
    refused_from_the_limited_address!(reset_password, reset);

    // Validate and Logout are never limited.
    for _ in 0..LIMIT + 2 {
        client
            .validate(from_address(
                validate_request(Some(&sessions[0].access_token)),
                limited,
            ))
            .await
            .expect("Validate is not limited");
    }
    client
        .logout(from_address(
            logout_request(
                Credential::AccessToken(sessions[1].access_token.clone()),
                pb::LogoutScope::Local,
            ),
            limited,
        ))
        .await
        .expect("Logout is not limited");
    client
        .logout(from_address(
            logout_request(
                Credential::RefreshToken(sessions[2].refresh_token.clone()),
                pb::LogoutScope::Local,
            ),
            limited,
        ))
        .await
        .expect("Logout is not limited");

    // Another address behind the same gateway has its own bucket, and so has the gateway itself.
    client
        .login(from_address(
            login_request(&user.email, &user.password),
            "198.51.100.3",
        ))
        .await
        .expect("another address is served");
    client
        .login(login_request(&user.email, &user.password))
        .await
        .expect("the gateway's own address is served");
    // The limited address still is.
    let still = client
        .login(from_address(
            login_request(&user.email, &user.password),
            limited,
        ))
        .await
        .unwrap_err();
    assert_rate_limited(&still);
    drop(client);
    served.finish().await;
}

/// A peer that is not a trusted proxy cannot pick its bucket with `x-envoy-external-address`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peer_cannot_choose_its_bucket() {
    const LIMIT: u32 = 2;
    let served = Served::start(Backend::Sqlite, |c| {
        c.ip_limit_per_minute = LIMIT;
        c.trusted_proxies = Vec::new();
    })
    .await;
    let mut client = served.client().await;
    let email = TestUser::random().email;
    for n in 0..LIMIT {
        let refused = client
            .login(from_address(
                login_request(&email, "wrong password entirely"),
                &format!("203.0.113.{n}"),
            ))
            .await
            .unwrap_err();
        assert_error(&refused, Code::Unauthenticated, "invalid_credentials");
    }
    let over = client
        .login(from_address(
            login_request(&email, "wrong password entirely"),
            "203.0.113.200",
        ))
        .await
        .unwrap_err();
    assert_rate_limited(&over);
    drop(client);
    served.finish().await;
}

/// SECURITY.md E 48 over gRPC: failed logins lock the email, even against the right password,
/// with `RetryInfo`; the lock passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_lock_the_email_with_retry_info() {
    let served = Served::sqlite().await;
    let free = served.state.config.login_free_attempts;
    let mut client = served.client().await;
    let user = TestUser::random();
    signup(&mut client, &user).await;
    for attempt in 1..=free {
        let refused = client
            .login(login_request(&user.email, "wrong password entirely"))
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::Unauthenticated,
            "attempt {attempt} is free"
        );
        assert_error(&refused, Code::Unauthenticated, "invalid_credentials");
    }
    let locked = client
        .login(login_request(&user.email, &user.password))
        .await
        .unwrap_err();
    let delay = assert_rate_limited(&locked);
    assert_eq!(delay, Duration::from_secs(1));

    served.clock.advance(Duration::from_secs(2));
    login(&mut client, &user).await;
    drop(client);
    served.finish().await;
}

/// grpc.health.v1: the server and each service answer SERVING; an unknown service NOT_FOUND.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_service_answers_serving() {
    let served = Served::sqlite().await;
    let mut health = HealthClient::new(served.channel().await);
    for service in [
        "",
        "auth.v1.AuthService",
        "envoy.service.auth.v3.Authorization",
    ] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap_or_else(|e| panic!("{service:?}: {e:?}"))
            .into_inner();
        assert_eq!(
            answer.status(),
            ServingStatus::Serving,
            "{service:?}: {answer:?}"
        );
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    drop(health);
    served.finish().await;
}

/// README "gRPC API": the health service turns `NOT_SERVING` for `""`, `auth.v1.AuthService`
/// and `envoy.service.auth.v3.Authorization` once the app drains; a client watching it hears so,
/// and its `Watch` streams end, so that open watches (client-side health checking keeps one per
/// connection) do not hold the shutdown to the drain deadline (35 s by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_watchers_hear_not_serving_when_the_app_stops() {
    let mut served = Served::start(Backend::Sqlite, |_| {}).await;
    let mut health = HealthClient::new(served.channel().await);
    let mut watches = Vec::new();
    for service in [
        "",
        "auth.v1.AuthService",
        "envoy.service.auth.v3.Authorization",
    ] {
        let mut stream = health
            .watch(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap_or_else(|e| panic!("{service:?}: {e:?}"))
            .into_inner();
        let first = stream.message().await.unwrap().expect("no first status");
        assert_eq!(first.status(), ServingStatus::Serving, "{service:?}");
        watches.push((service, stream));
    }
    let _ = served.stop.take().unwrap().send(());
    let mut still_serving = Vec::new();
    for (service, mut stream) in watches {
        match tokio::time::timeout(Duration::from_secs(3), stream.message()).await {
            Ok(Ok(Some(update))) if update.status() == ServingStatus::NotServing => {}
            other => still_serving.push(format!("{service:?}: {other:?}")),
        }
        // Then the stream ends.
        let end = tokio::time::timeout(Duration::from_secs(3), stream.message()).await;
        assert!(
            matches!(end, Ok(Ok(None))),
            "{service:?}: the watch did not end: {end:?}"
        );
    }
    tokio::time::timeout(Duration::from_secs(5), served.server)
        .await
        .expect("the app did not stop within 5 s with watches open")
        .unwrap()
        .unwrap();
    assert!(
        still_serving.is_empty(),
        "no NOT_SERVING while draining for {still_serving:?}"
    );
}

/// Server reflection, v1 and v1alpha: the services are listed, and `auth.v1.AuthService`'s file
/// descriptor is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services_and_serves_their_descriptors() {
    use tonic_reflection::pb::{v1, v1alpha};

    let served = Served::sqlite().await;
    let channel = served.channel().await;

    let mut v1_client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let ask =
        |request: v1::server_reflection_request::MessageRequest| v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        };
    let mut stream = v1_client
        .server_reflection_info(futures_util::stream::iter([
            ask(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
            ask(
                v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                    "auth.v1.AuthService".to_owned(),
                ),
            ),
        ]))
        .await
        .expect("reflection v1 failed")
        .into_inner();
    let listed = stream.message().await.unwrap().expect("no answer");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        listed.message_response
    else {
        panic!("not a service list: {listed:?}")
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for name in ["auth.v1.AuthService", "grpc.health.v1.Health"] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
    let file = stream.message().await.unwrap().expect("no answer");
    let Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        file.message_response
    else {
        panic!("not a file descriptor: {file:?}")
    };
    let descriptors: Vec<prost_types::FileDescriptorProto> = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap())
        .collect();
    let auth = descriptors
        .iter()
        .find(|d| d.package() == "auth.v1")
        .unwrap_or_else(|| panic!("no auth.v1 file in {descriptors:?}"));
    let service = auth
        .service
        .iter()
        .find(|s| s.name() == "AuthService")
        .expect("no AuthService in the auth.v1 file");
    let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
    assert_eq!(
        methods,
        [
            "Signup",
            "Login",
            "CompleteMfaLogin",
            "Refresh",
            "ExchangeSignInCode",
            "Logout",
            "ChangePassword",
            "EnrollTotp",
            "ConfirmTotp",
            "DisableTotp",
            "VerifyEmail",
            "ResendVerification",
            "RequestPasswordReset",
            "ResetPassword",
            "Validate"
        ]
    );
    drop(stream);

    // v1alpha, which older grpcurl and Postman versions ask first.
    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let mut stream = alpha
        .server_reflection_info(futures_util::stream::iter([
            v1alpha::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(
                    v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
                ),
            },
        ]))
        .await
        .expect("reflection v1alpha failed")
        .into_inner();
    let listed = stream.message().await.unwrap().expect("no answer");
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        listed.message_response
    else {
        panic!("not a service list: {listed:?}")
    };
    assert!(
        list.service.iter().any(|s| s.name == "auth.v1.AuthService"),
        "{list:?}"
    );
    drop((stream, alpha, v1_client));
    served.finish().await;
}

/// Whether a fresh connection is still served: a health check and an `AuthService` call.
async fn still_serves(served: &Served) {
    let channel = served.channel().await;
    let answer = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("the health service stopped answering")
        .into_inner();
    assert_eq!(answer.status(), ServingStatus::Serving);
    let missing = AuthServiceClient::new(channel)
        .validate(validate_request(None))
        .await
        .unwrap_err();
    assert_error(&missing, Code::Unauthenticated, "missing_token");
}

/// Everything the server sends on `stream` until it closes it (or 5 s pass: `None`).
async fn read_until_closed(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let mut chunk = [0_u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read_all)
        .await
        .ok()
        .map(|()| received)
}

/// The types of the HTTP/2 frames in `bytes` (9-byte headers, then payloads).
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let length =
            (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = &bytes[(9 + length).min(bytes.len())..];
    }
    types
}

/// A message over the limit is refused and the server serves the next call; garbage bytes, a
/// preface followed by garbage and an HTTP/1.1 request each cost only their own connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_and_malformed_connections_are_refused_without_harm() {
    let served = Served::sqlite().await;
    let mut client = served.client().await;

    let user = TestUser::random();
    let huge = client
        .signup(pb::SignupRequest {
            email: user.email.clone(),
            password: "x".repeat(70 * 1024),
        })
        .await
        .unwrap_err();
    // README "gRPC API", Limits: refused with OUT_OF_RANGE before any work.
    assert_eq!(huge.code(), Code::OutOfRange, "{huge:?}");
    // Nothing was created, and the same connection serves the next call.
    signup(&mut client, &user).await;
    login(&mut client, &user).await;

    // Garbage instead of a connection preface.
    let mut garbage = TcpStream::connect(served.grpc).await.unwrap();
    garbage
        .write_all(&[0xde, 0xad, 0xbe, 0xef].repeat(1024))
        .await
        .unwrap();
    assert!(
        read_until_closed(&mut garbage).await.is_some(),
        "a connection that sent garbage is kept open"
    );
    still_serves(&served).await;

    // A valid preface, then a frame header announcing a 16 MiB frame of an unknown type.
    let mut framed = TcpStream::connect(served.grpc).await.unwrap();
    framed
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    framed.write_all(&[0xff; 64]).await.unwrap();
    let answer = read_until_closed(&mut framed)
        .await
        .expect("a connection that sent garbage frames is kept open");
    assert!(
        frame_types(&answer).contains(&0x7),
        "no GOAWAY before the close: {answer:?}"
    );
    still_serves(&served).await;

    // HTTP/1.1 on the HTTP/2 port.
    let mut http1 = TcpStream::connect(served.grpc).await.unwrap();
    http1
        .write_all(
            b"POST /auth.v1.AuthService/Login HTTP/1.1\r\nHost: auth\r\nContent-Length: 0\r\n\r\n",
        )
        .await
        .unwrap();
    let answer = read_until_closed(&mut http1)
        .await
        .expect("an HTTP/1.1 connection is kept open");
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "{answer:?}"
    );
    still_serves(&served).await;

    // A CheckRequest carries the checked request's headers: up to 128 KiB are read.
    let mut authz = AuthorizationClient::new(served.channel().await);
    let padding = "p".repeat(100 * 1024);
    let answer = check(&mut authz, check_request(&[("x-padding", &padding)])).await;
    let (status, error, _) = denied_with(&answer);
    assert_eq!((status, error.as_str()), (401, "missing_token"));
    let padding = "p".repeat(130 * 1024);
    let over = authz
        .check(check_request(&[("x-padding", &padding)]))
        .await
        .unwrap_err();
    assert_eq!(over.code(), Code::OutOfRange, "{over:?}");
    drop(authz);
    still_serves(&served).await;

    // And the first connection is still good.
    client
        .validate(validate_request(None))
        .await
        .expect_err("no token");
    drop(client);
    served.finish().await;
}

/// A `CheckRequest` for a request with these headers.
fn check_request(headers: &[(&str, &str)]) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: "GET".to_owned(),
                    path: "/api/things".to_owned(),
                    host: "gateway.example".to_owned(),
                    headers: headers
                        .iter()
                        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

async fn check(client: &mut AuthorizationClient<Channel>, request: CheckRequest) -> CheckResponse {
    client
        .check(request)
        .await
        .expect("Check answers every request with OK or DENIED, never an error")
        .into_inner()
}

#[track_caller]
fn allowed(response: &CheckResponse) -> &OkHttpResponse {
    assert_eq!(
        response.status.as_ref().map(|s| s.code),
        Some(0),
        "{response:?}"
    );
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok,
        other => panic!("not an OK response: {other:?}"),
    }
}

#[track_caller]
fn denied(response: &CheckResponse) -> &DeniedHttpResponse {
    let code = response.status.as_ref().map_or(0, |s| s.code);
    assert_ne!(code, 0, "{response:?}");
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => denied,
        other => panic!("not a denied response: {other:?}"),
    }
}

/// The value of the header `name` an answer sets, asserting it overwrites the client's copy.
#[track_caller]
fn set_header<'a>(
    headers: &'a [envoy_types::pb::envoy::config::core::v3::HeaderValueOption],
    name: &str,
) -> Option<&'a str> {
    let option = headers
        .iter()
        .find(|h| h.header.as_ref().is_some_and(|h| h.key == name))?;
    assert_eq!(
        option.append_action,
        i32::from(HeaderAppendAction::OverwriteIfExistsOrAdd),
        "{name}: {option:?}"
    );
    Some(option.header.as_ref().unwrap().value.as_str())
}

/// The HTTP status and `error` code of a denied answer, checking its headers and JSON body.
#[track_caller]
fn denied_with(response: &CheckResponse) -> (i32, String, String) {
    let denied = denied(response);
    let status = denied.status.as_ref().expect("no HTTP status").code;
    assert_eq!(
        set_header(&denied.headers, "content-type"),
        Some("application/json")
    );
    assert_eq!(
        set_header(&denied.headers, "cache-control"),
        Some("no-store")
    );
    let body: serde_json::Value = serde_json::from_str(&denied.body)
        .unwrap_or_else(|_| panic!("not JSON: {:?}", denied.body));
    let challenge = set_header(&denied.headers, "www-authenticate")
        .unwrap_or_default()
        .to_owned();
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
        challenge,
    )
}

/// Envoy's `ext_authz` Check: the stateful `/validate` check, the identity headers on OK, the
/// HTTP API's 401 on DENIED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ext_authz_check_allows_valid_tokens_and_denies_the_rest() {
    let served = Served::sqlite().await;
    let channel = served.channel().await;
    let mut auth = AuthServiceClient::new(channel.clone());
    let mut authz = AuthorizationClient::new(channel);

    // A user without roles.
    let plain = TestUser::random();
    let plain_id = signup(&mut auth, &plain).await;
    assert!(served
        .state
        .store
        .revoke_role(&plain_id, "user")
        .await
        .unwrap());
    let tokens = login(&mut auth, &plain).await;
    let bearer_header = format!("Bearer {}", tokens.access_token);
    let answer = check(
        &mut authz,
        check_request(&[
            ("authorization", &bearer_header),
            ("x-user-id", "someone-else"),
        ]),
    )
    .await;
    let ok = allowed(&answer);
    assert_eq!(
        set_header(&ok.headers, "x-user-id"),
        Some(plain_id.as_str())
    );
    assert_eq!(
        set_header(&ok.headers, "x-user-email"),
        Some(plain.email.as_str())
    );
    assert_eq!(set_header(&ok.headers, "x-user-roles"), None);
    for removed in ["authorization", "x-user-roles"] {
        assert!(
            ok.headers_to_remove.iter().any(|h| h == removed),
            "{removed} not removed: {ok:?}"
        );
    }

    // A user with roles gets them, joined.
    let admin = TestUser::random();
    let admin_id = signup(&mut auth, &admin).await;
    assert!(served
        .state
        .store
        .grant_role(&admin_id, "admin")
        .await
        .unwrap());
    let admin_tokens = login(&mut auth, &admin).await;
    let admin_header = format!("Bearer {}", admin_tokens.access_token);
    let answer = check(
        &mut authz,
        check_request(&[("authorization", &admin_header)]),
    )
    .await;
    let ok = allowed(&answer);
    assert_eq!(
        set_header(&ok.headers, "x-user-id"),
        Some(admin_id.as_str())
    );
    assert_eq!(set_header(&ok.headers, "x-user-roles"), Some("admin,user"));
    assert!(ok.headers_to_remove.iter().any(|h| h == "authorization"));
    assert!(!ok.headers_to_remove.iter().any(|h| h == "x-user-roles"));

    // Raw headers (Envoy's `encode_raw_headers`): the same answer.
    let mut raw = check_request(&[]);
    raw.attributes
        .as_mut()
        .unwrap()
        .request
        .as_mut()
        .unwrap()
        .http
        .as_mut()
        .unwrap()
        .header_map = Some(HeaderMap {
        headers: vec![HeaderValue {
            key: "authorization".to_owned(),
            value: String::new(),
            raw_value: admin_header.clone().into_bytes(),
        }],
    });
    let answer = check(&mut authz, raw.clone()).await;
    assert_eq!(
        set_header(&allowed(&answer).headers, "x-user-id"),
        Some(admin_id.as_str())
    );
    // Two raw authorization headers are refused.
    raw.attributes
        .as_mut()
        .unwrap()
        .request
        .as_mut()
        .unwrap()
        .http
        .as_mut()
        .unwrap()
        .header_map
        .as_mut()
        .unwrap()
        .headers
        .push(HeaderValue {
            key: "Authorization".to_owned(),
            value: admin_header.clone(),
            raw_value: Vec::new(),
        });
    let (status, _, _) = denied_with(&check(&mut authz, raw).await);
    assert_eq!(status, 401);

    // No token.
    let answer = check(&mut authz, check_request(&[("accept", "*/*")])).await;
    assert_eq!(
        answer.status.as_ref().unwrap().code,
        Code::Unauthenticated as i32
    );
    let (status, error, challenge) = denied_with(&answer);
    assert_eq!(status, 401);
    assert_eq!(error, "missing_token");
    assert_eq!(challenge, r#"Bearer realm="auth-service""#);
    // No attributes at all.
    let (status, error, _) = denied_with(&check(&mut authz, CheckRequest::default()).await);
    assert_eq!((status, error.as_str()), (401, "missing_token"));

    // A garbage token.
    let answer = check(
        &mut authz,
        check_request(&[("authorization", "Bearer not.a.jwt")]),
    )
    .await;
    let (status, error, challenge) = denied_with(&answer);
    assert_eq!(status, 401);
    assert_eq!(error, "invalid_token");
    assert!(
        challenge.starts_with(r#"Bearer realm="auth-service""#)
            && challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );

    // Stateful: after Logout the same token is denied at once.
    auth.logout(bearer(
        pb::LogoutRequest {
            credential: None,
            scope: pb::LogoutScope::Local.into(),
        },
        &admin_tokens.access_token,
    ))
    .await
    .expect("logout failed");
    let (status, error, challenge) = denied_with(
        &check(
            &mut authz,
            check_request(&[("authorization", &admin_header)]),
        )
        .await,
    );
    assert_eq!((status, error.as_str()), (401, "invalid_token"));
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    // The other user's session is untouched.
    allowed(
        &check(
            &mut authz,
            check_request(&[("authorization", &bearer_header)]),
        )
        .await,
    );
    // A disabled user is denied at once, with the same token.
    assert!(served
        .state
        .store
        .disable_user(&plain_id, served.state.revoke_at())
        .await
        .unwrap());
    let (status, error, _) = denied_with(
        &check(
            &mut authz,
            check_request(&[("authorization", &bearer_header)]),
        )
        .await,
    );
    assert_eq!((status, error.as_str()), (401, "invalid_token"));
    assert_calls_counted(
        &served,
        "envoy.service.auth.v3.Authorization",
        &[("Check", "OK", 4), ("Check", "UNAUTHENTICATED", 6)],
    );
    drop((auth, authz));
    served.finish().await;
}

/// The client's own `x-envoy-external-address` on a request Envoy marked `x-envoy-internal` is
/// not the gateway's word: such requests share the gateway's own bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_request_cannot_choose_its_bucket() {
    const LIMIT: u32 = 2;
    let served = Served::start(Backend::Sqlite, |c| c.ip_limit_per_minute = LIMIT).await;
    let mut client = served.client().await;
    let email = TestUser::random().email;
    let internal = |n: u32| {
        let mut request = from_address(
            login_request(&email, "wrong password entirely"),
            &format!("203.0.113.{n}"),
        );
        request
            .metadata_mut()
            .insert("x-envoy-internal", "true".parse().unwrap());
        request
    };
    for n in 0..LIMIT {
        let refused = client.login(internal(n)).await.unwrap_err();
        assert_error(&refused, Code::Unauthenticated, "invalid_credentials");
    }
    assert_rate_limited(&client.login(internal(99)).await.unwrap_err());
    assert_rate_limited(
        &client
            .login(login_request(&email, "wrong password entirely"))
            .await
            .unwrap_err(),
    );
    drop(client);
    served.finish().await;
}

/// Without its database the service answers UNAVAILABLE with RetryInfo (no detail), and Check
/// denies with the HTTP API's 503 and Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_database_calls_are_unavailable_with_retry_info() {
    let served = Served::sqlite().await;
    let channel = served.channel().await;
    let mut client = AuthServiceClient::new(channel.clone());
    let mut authz = AuthorizationClient::new(channel);
    let user = TestUser::random();
    signup(&mut client, &user).await;
    let tokens = login(&mut client, &user).await;
    served.state.store.close().await;

    let down = client
        .validate(validate_request(Some(&tokens.access_token)))
        .await
        .unwrap_err();
    assert_eq!(down.code(), Code::Unavailable, "{down:?}");
    let info = down
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {down:?}"));
    assert_eq!(info.domain, DOMAIN);
    let retry = down
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .unwrap_or_else(|| panic!("no RetryInfo in {down:?}"));
    assert!(retry >= Duration::from_secs(1), "{retry:?}");
    assert!(
        !down.message().to_lowercase().contains("pool"),
        "a server fault's detail is sent: {down:?}"
    );
    let login_down = client
        .login(login_request(&user.email, &user.password))
        .await
        .unwrap_err();
    assert_eq!(login_down.code(), Code::Unavailable, "{login_down:?}");

    let answer = check(
        &mut authz,
        check_request(&[("authorization", &format!("Bearer {}", tokens.access_token))]),
    )
    .await;
    assert_eq!(
        answer.status.as_ref().map(|s| s.code),
        Some(Code::Unavailable as i32),
        "{answer:?}"
    );
    let denied = denied(&answer);
    assert_eq!(denied.status.as_ref().map(|s| s.code), Some(503));
    let retry_after: u64 = set_header(&denied.headers, "retry-after")
        .unwrap_or_else(|| panic!("no retry-after in {denied:?}"))
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    drop((client, authz));
    served.finish().await;
}

/// A call not answered within `AUTH_REQUEST_TIMEOUT_SECS` ends there with DEADLINE_EXCEEDED
/// `request_timeout` (ErrorInfo), as an HTTP request gets its 408, and is counted: logins queued
/// behind one bcrypt slot at cost 12 (~0.2 s each) wait longer than the 1 s allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_not_answered_within_the_request_timeout_ends_there() {
    let served = Served::start(Backend::Sqlite, |c| {
        c.request_timeout = Duration::from_secs(1);
        c.bcrypt_cost = 12;
        c.hash_concurrency = 1;
        c.hash_queue = 64;
    })
    .await;
    let channel = served.channel().await;
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..16)
        .map(|i| {
            let mut client = AuthServiceClient::new(channel.clone());
            tokio::spawn(async move {
                let outcome = client
                    .login(login_request(
                        &format!("nobody-{i}@example.com"),
                        "wrong password entirely",
                    ))
                    .await;
                (outcome, started.elapsed())
            })
        })
        .collect();
    let mut timed_out = 0;
    for call in calls {
        let (outcome, elapsed) = call.await.unwrap();
        let status = outcome.expect_err("no login can succeed");
        match status.code() {
            Code::Unauthenticated => {}
            Code::DeadlineExceeded => {
                assert_error(&status, Code::DeadlineExceeded, "request_timeout");
                timed_out += 1;
                assert!(
                    elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
                    "ended after {elapsed:?}"
                );
            }
            other => panic!("unexpected {other:?}: {status:?}"),
        }
    }
    assert!(timed_out > 0, "every queued login was answered within 1 s");
    assert!(
        served.state.metrics.render().contains(
            r#"grpc_requests_total{method="auth.v1.AuthService/Login",code="DEADLINE_EXCEEDED"}"#
        ),
        "timed-out calls are not counted"
    );
    // The listener still serves.
    let mut client = served.client().await;
    let status = client.validate(validate_request(None)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    drop(client);
    served.finish().await;
}

/// A login whose `email` is not UTF-8: what a buggy or hostile client can send.
#[derive(Clone, PartialEq, prost::Message)]
struct RawLogin {
    #[prost(bytes = "vec", tag = "1")]
    email: Vec<u8>,
}

/// A message that does not decode is the client's mistake: INVALID_ARGUMENT `invalid_request`,
/// without the decoder's detail, as HTTP answers a malformed body with 400; never INTERNAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_does_not_decode_is_invalid_argument() {
    let served = Served::sqlite().await;
    let mut grpc = tonic::client::Grpc::new(served.channel().await);
    grpc.ready().await.unwrap();
    let refused = grpc
        .unary(
            Request::new(RawLogin {
                email: vec![0xff, 0xfe, b'@'],
            }),
            axum::http::uri::PathAndQuery::from_static("/auth.v1.AuthService/Login"),
            tonic_prost::ProstCodec::<RawLogin, pb::TokenResponse>::default(),
        )
        .await
        .unwrap_err();
    assert_error(&refused, Code::InvalidArgument, "invalid_request");
    assert!(!refused.message().contains("UTF-8"), "{refused:?}");
    drop(grpc);
    served.finish().await;
}

/// Health and reflection take small requests only (names): a 5 KiB one is refused before it is
/// buffered (OUT_OF_RANGE), as an oversized `auth.v1` message is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_refuse_large_requests() {
    use tonic_reflection::pb::v1;
    let served = Served::sqlite().await;
    let channel = served.channel().await;
    let mut health = HealthClient::new(channel.clone());
    let refused = health
        .check(HealthCheckRequest {
            service: "x".repeat(5 * 1024),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    let mut reflection = v1::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                "x".repeat(5 * 1024),
            ),
        ),
    };
    let outcome = reflection
        .server_reflection_info(futures_util::stream::iter([request]))
        .await;
    // The request is refused from its length prefix, before it is buffered: the call fails, or
    // (tonic's reflection service ends its stream on an inbound error) ends with no answer.
    match outcome {
        Err(status) => assert_eq!(status.code(), Code::OutOfRange, "{status:?}"),
        Ok(answers) => match answers.into_inner().message().await {
            Ok(None) => {}
            Err(status) => assert_eq!(status.code(), Code::OutOfRange, "{status:?}"),
            Ok(Some(answer)) => panic!("a 5 KiB reflection request was answered: {answer:?}"),
        },
    }
    drop((health, reflection));
    served.finish().await;
}
