//! `POST /login`: the token response (SECURITY.md A) and enumeration resistance (E 45-47, 52).

use std::time::{Duration, Instant};

use axum::http::StatusCode;

use crate::helpers::{claims_of, header_of, Backend, TestApp, TestUser, INTERNAL_TOKEN};

async fn login_returns_tokens_with_no_store_headers(app: TestApp) {
    let user = TestUser::random();
    user.register(&app).await;
    let response = app.login(&user.email, &user.password).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    assert_eq!(response.str("token_type"), "Bearer");
    assert_eq!(response.body["expires_in"], 900);
    assert!(response.body["refresh_expires_in"].as_i64().unwrap() > 0);
    assert!(!response.str("refresh_token").is_empty());
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_eq!(response.header("pragma"), Some("no-cache"));
}

async fn access_token_header_names_a_published_key(app: TestApp) {
    let (_, tokens) = app.logged_in_user().await;
    let header = header_of(&tokens.access);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256", "AUTH_SIGNING_ALG's default");
    let kid = header["kid"].as_str().unwrap();
    let keys = app
        .get_internal("/internal/keys", Some(&format!("Bearer {INTERNAL_TOKEN}")))
        .await;
    let kids: Vec<_> = keys.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].clone())
        .collect();
    assert!(kids.contains(&kid.into()), "{kid} not in {kids:?}");
}

async fn access_token_carries_every_rfc9068_claim(app: TestApp) {
    let (user, tokens) = app.logged_in_user().await;
    let claims = claims_of(&tokens.access);
    let config = &app.state.config;
    assert_eq!(claims["iss"], config.issuer.as_str());
    assert_eq!(claims["aud"], serde_json::json!(config.audiences));
    assert_eq!(claims["client_id"], config.client_id.as_str());
    assert_eq!(claims["email"], user.email.as_str());
    assert_eq!(claims["roles"], serde_json::json!(["user"]));
    for claim in ["sub", "jti", "sid"] {
        assert!(
            claims[claim].as_str().is_some_and(|s| !s.is_empty()),
            "{claim}"
        );
    }
    let ttl = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(ttl, 900, "exp - iat is the configured TTL");
}

async fn two_logins_get_different_jti_and_sid(app: TestApp) {
    let (user, first) = app.logged_in_user().await;
    let second = user.login(&app).await;
    let (a, b) = (claims_of(&first.access), claims_of(&second.access));
    assert_ne!(a["jti"], b["jti"]);
    assert_ne!(a["sid"], b["sid"]);
    assert_eq!(a["sub"], b["sub"]);
}

async fn access_token_is_small_and_holds_no_secret(app: TestApp) {
    let (user, tokens) = app.logged_in_user().await;
    assert!(tokens.access.len() < 4096);
    let claims = claims_of(&tokens.access).to_string();
    let hash = app.user(&user.email).await.password_hash;
    for secret in [
        user.password.as_str(),
        hash.as_str(),
        tokens.refresh.as_str(),
    ] {
        assert!(!claims.contains(secret));
    }
}

async fn unknown_email_and_wrong_password_get_identical_answers(app: TestApp) {
    let user = TestUser::random();
    user.register(&app).await;
    let wrong_password = app.login(&user.email, "not the password at all").await;
    let unknown_email = app
        .login(&TestUser::random().email, "not the password at all")
        .await;
    let malformed_email = app.login("not-an-email", "not the password at all").await;
    for other in [&unknown_email, &malformed_email] {
        assert_eq!(wrong_password.status, other.status);
        assert_eq!(wrong_password.body, other.body);
        let names = |r: &crate::helpers::TestResponse| {
            let mut v: Vec<String> = r.headers.keys().map(|k| k.to_string()).collect();
            v.sort();
            v
        };
        assert_eq!(names(&wrong_password), names(other));
        assert_eq!(
            wrong_password.header("www-authenticate"),
            other.header("www-authenticate")
        );
    }
    assert_eq!(wrong_password.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_password.error(), "invalid_credentials");
}

async fn login_email_is_trimmed_and_case_insensitive(app: TestApp) {
    let user = TestUser::random();
    user.register(&app).await;
    let response = app
        .login(
            &format!("  {}  ", user.email.to_uppercase()),
            &user.password,
        )
        .await;
    assert_eq!(response.status, StatusCode::OK);
}

async fn disabled_account_is_told_only_after_the_right_password(app: TestApp) {
    let user = TestUser::random();
    user.register(&app).await;
    let id = app.user(&user.email).await.id;
    app.state
        .store
        .disable_user(&id, app.state.revoke_at())
        .await
        .unwrap();
    let wrong = app.login(&user.email, "not the password at all").await;
    assert_eq!(
        wrong.status,
        StatusCode::UNAUTHORIZED,
        "no hint for a wrong password"
    );
    let right = app.login(&user.email, &user.password).await;
    assert_eq!(right.status, StatusCode::FORBIDDEN);
    assert_eq!(right.error(), "account_disabled");
    app.state.store.enable_user(&id).await.unwrap();
    assert_eq!(
        app.login(&user.email, &user.password).await.status,
        StatusCode::OK
    );
}

async fn password_too_long_at_login_is_invalid_credentials(app: TestApp) {
    let response = app
        .login(&TestUser::random().email, &"x".repeat(5000))
        .await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    assert_eq!(response.error(), "invalid_credentials");
}

crate::on_every_store!(
    login_returns_tokens_with_no_store_headers,
    access_token_header_names_a_published_key,
    access_token_carries_every_rfc9068_claim,
    two_logins_get_different_jti_and_sid,
    access_token_is_small_and_holds_no_secret,
    unknown_email_and_wrong_password_get_identical_answers,
    login_email_is_trimmed_and_case_insensitive,
    disabled_account_is_told_only_after_the_right_password,
    password_too_long_at_login_is_invalid_credentials,
);

/// SECURITY.md E46: an unknown email costs about as much as a wrong password, because a dummy
/// hash is verified. Each round measures one bcrypt verify on its own, a wrong password and an
/// unknown email, back to back, so that the load of a shared machine (other tests run alongside)
/// hits all three alike. Both kinds of login must cost at least 0.8 of a bcrypt verify (so the
/// dummy hash runs), and the median of the per-round ratios must be near 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_email_takes_as_long_as_a_wrong_password() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.bcrypt_cost = 10;
        // Sixty failures in a row: keep the throttle out of a timing measurement.
        c.login_free_attempts = 1000;
    })
    .await;
    let user = TestUser::random();
    user.register(&app).await;
    let unknown = TestUser::random().email;
    let password = auth_api::domain::Password::for_login("wrong password entirely").unwrap();
    let (mut bcrypt, mut known, mut absent, mut ratios) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..20 {
        let started = Instant::now();
        app.state.hasher.verify(&password, None).await.unwrap();
        bcrypt.push(started.elapsed());
        let time = |email: &str| {
            let app = &app;
            let email = email.to_owned();
            async move {
                let started = Instant::now();
                let response = app.login(&email, "wrong password entirely").await;
                assert_eq!(response.status, StatusCode::UNAUTHORIZED);
                started.elapsed()
            }
        };
        let (k, u) = (time(&user.email).await, time(&unknown).await);
        known.push(k);
        absent.push(u);
        ratios.push(u.as_secs_f64() / k.as_secs_f64());
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (bcrypt, known, absent) = (median(bcrypt), median(known), median(absent));
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ratios.len() / 2];
    assert!(
        absent >= bcrypt.mul_f64(0.8),
        "unknown email {absent:?} < 0.8 x bcrypt {bcrypt:?}"
    );
    assert!(
        known >= bcrypt.mul_f64(0.8),
        "wrong password {known:?} < 0.8 x bcrypt {bcrypt:?}"
    );
    assert!(
        (0.67..=1.5).contains(&ratio),
        "unknown {absent:?} vs known {known:?}: median ratio {ratio:.2}"
    );
}
