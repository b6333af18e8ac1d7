//! `POST /signup`: the contract rows and SECURITY.md D.

use std::time::{Duration, Instant};

use crate::helpers::{claims_of, TestApp, TestUser};
use axum::{
    body::Body,
    http::{header, Request, StatusCode},
};

async fn signup_returns_201_with_id_email_and_created_at(app: TestApp) {
    let response = app
        .signup("  New.User@Example.COM ", "correct horse battery staple")
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
    assert_eq!(response.str("email"), "new.user@example.com");
    assert!(uuid::Uuid::parse_str(&response.str("id")).is_ok());
    assert!(response.str("created_at").contains('T'), "RFC 3339 time");
    assert!(response.body.get("password_hash").is_none());
}

async fn duplicate_email_ignoring_case_is_409_and_creates_nothing(app: TestApp) {
    let user = TestUser::random();
    user.register(&app).await;
    let response = app
        .signup(&user.email.to_uppercase(), "another passphrase here")
        .await;
    assert_eq!(response.status, StatusCode::CONFLICT);
    assert_eq!(response.error(), "email_taken");
    // The first password still works and the second does not.
    assert_eq!(
        app.login(&user.email, &user.password).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.login(&user.email, "another passphrase here")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

async fn invalid_emails_are_422(app: TestApp) {
    for email in [
        "",
        "no-at-sign",
        "a@b",
        "two@@example.com",
        &format!("{}@example.com", "x".repeat(250)),
    ] {
        let response = app.signup(email, "correct horse battery staple").await;
        assert_eq!(
            response.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{email:?}"
        );
        assert_eq!(response.error(), "invalid_email");
    }
}

/// Two spellings of one mailbox: the second signup is `409`, and either spelling logs in.
async fn assert_one_account(app: &TestApp, first: &str, second: &str, canonical: &str) {
    let password = "correct horse battery staple";
    let created = app.signup(first, password).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.str("email"), canonical, "stored in canonical form");
    let again = app.signup(second, "another passphrase here").await;
    assert_eq!(
        again.status,
        StatusCode::CONFLICT,
        "{second:?}: {}",
        again.body
    );
    assert_eq!(again.error(), "email_taken");
    for spelling in [first, second, canonical] {
        let login = app.login(spelling, password).await;
        assert_eq!(login.status, StatusCode::OK, "login as {spelling:?}");
        let access = login.str("access_token");
        assert_eq!(claims_of(&access)["email"], canonical, "{spelling:?}");
    }
}

async fn idn_domain_and_its_a_label_are_one_account(app: TestApp) {
    assert_one_account(
        &app,
        "a@bücher.example",
        "a@xn--bcher-kva.example",
        "a@xn--bcher-kva.example",
    )
    .await;
}

async fn fullwidth_spelling_is_the_same_account(app: TestApp) {
    assert_one_account(
        &app,
        "bob@example.com",
        "ｂob@example.com",
        "bob@example.com",
    )
    .await;
}

async fn control_characters_in_an_email_are_422_not_500(app: TestApp) {
    let cases = [
        ("a\u{0}b@example.com", "NUL, which PostgreSQL text refuses"),
        ("\u{0}@example.com", "NUL alone before @"),
        ("bob@exa\u{0}mple.com", "NUL in the domain"),
        ("bob\u{1b}@example.com", "escape"),
        ("b\u{200B}ob@example.com", "zero-width space"),
        ("bob@xn--zz.example", "invalid Punycode"),
    ];
    for (email, reason) in cases {
        let response = app.signup(email, "correct horse battery staple").await;
        assert_eq!(
            response.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{reason}: {}",
            response.body
        );
        assert_eq!(response.error(), "invalid_email", "{reason}");
    }
}

async fn login_with_a_nul_or_3_kb_email_is_401_not_500(app: TestApp) {
    let huge = format!("{}@example.com", "x".repeat(3000));
    for email in ["a\u{0}b@example.com", huge.as_str()] {
        let response = app.login(email, "correct horse battery staple").await;
        assert_eq!(
            response.status,
            StatusCode::UNAUTHORIZED,
            "{} bytes: {}",
            email.len(),
            response.body
        );
        assert_eq!(response.error(), "invalid_credentials");
    }
}

/// Inserts a row as signup stored it before issue 10 (trimmed + lower-cased only), with the
/// password hash of `like`; returns its id.
async fn insert_legacy_user(app: &TestApp, email: &str, like: &str) -> String {
    let row = auth_api::store::UserRow {
        id: uuid::Uuid::new_v4().to_string(),
        email: email.to_owned(),
        password_hash: app.user(like).await.password_hash,
        created_at: 0,
        disabled_at: None,
        tokens_valid_after: 0,
        email_verified_at: None,
    };
    let inserted = app.state.store.insert_user(&row, &["user"]).await.unwrap();
    assert!(matches!(inserted, auth_api::store::InsertUser::Created));
    row.id
}

async fn emails_stored_before_canonicalisation_still_log_in(app: TestApp) {
    // Arrange: two legacy rows, and the duplicate pair of issue 10 (a canonical account and a
    // legacy spelling of the same mailbox).
    let password = "correct horse battery staple";
    let template = "template@example.com";
    assert_eq!(
        app.signup(template, password).await.status,
        StatusCode::CREATED
    );
    let jose = insert_legacy_user(&app, "josé@bücher.example", template).await;
    let bob = insert_legacy_user(&app, "ｂob@example.com", template).await;
    let canonical = app
        .signup("a@xn--bcher-kva.example", password)
        .await
        .str("id");
    insert_legacy_user(&app, "a@bücher.example", template).await;

    // Act: what every start runs after the SQL migrations.
    app.state.store.migrate().await.unwrap();

    // Assert
    let again = app.state.store.canonicalise_emails().await.unwrap();
    assert_eq!(again.rewritten, 0, "the start rewrote them already");
    assert_eq!(again.conflicts, 1, "the duplicate is left for an operator");
    assert_eq!(app.user("josé@xn--bcher-kva.example").await.id, jose);
    assert_eq!(app.user("bob@example.com").await.id, bob);
    for (spelling, id) in [
        ("JOSÉ@BÜCHER.EXAMPLE", &jose),
        ("jose\u{301}@xn--bcher-kva.example", &jose),
        ("ｂob@example.com", &bob),
        ("Bob@Example.com", &bob),
        ("a@bücher.example", &canonical),
    ] {
        let login = app.login(spelling, password).await;
        assert_eq!(login.status, StatusCode::OK, "{spelling:?}: {}", login.body);
        assert_eq!(&claims_of(&login.str("access_token"))["sub"], id.as_str());
    }
}

async fn short_password_is_422_with_reason_length(app: TestApp) {
    let response = app.signup(&TestUser::random().email, "short").await;
    assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(response.error(), "weak_password");
    assert_eq!(response.body["reason"], "length");
}

async fn password_containing_the_email_is_422(app: TestApp) {
    let response = app
        .signup("maximilian@example.com", "Maximilian2024!")
        .await;
    assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(response.body["reason"], "contains_email");
}

async fn breached_password_is_422_with_reason_common(app: TestApp) {
    let response = app
        .signup(&TestUser::random().email, "1q2w3e4r5t6y7u8i9o0p")
        .await;
    assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(response.error(), "weak_password");
    assert_eq!(response.body["reason"], "common");
}

async fn passphrase_without_composition_rules_is_accepted(app: TestApp) {
    let response = app
        .signup(&TestUser::random().email, "correct horse battery staple")
        .await;
    assert_eq!(response.status, StatusCode::CREATED);
}

async fn sixty_four_emoji_password_is_accepted_whole(app: TestApp) {
    let email = TestUser::random().email;
    let password = "😀".repeat(64);
    assert_eq!(password.len(), 256);
    assert_eq!(
        app.signup(&email, &password).await.status,
        StatusCode::CREATED
    );
    assert_eq!(app.login(&email, &password).await.status, StatusCode::OK);
    let shorter = "😀".repeat(63);
    assert_eq!(
        app.login(&email, &shorter).await.status,
        StatusCode::UNAUTHORIZED,
        "proves no truncation"
    );
}

async fn passwords_sharing_72_bytes_are_different(app: TestApp) {
    let email = TestUser::random().email;
    let prefix = "p".repeat(72);
    assert_eq!(
        app.signup(&email, &format!("{prefix}-first")).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        app.login(&email, &format!("{prefix}-second")).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn password_with_nul_is_verified_exactly(app: TestApp) {
    let email = TestUser::random().email;
    assert_eq!(
        app.signup(&email, "abc\u{0}def-long-enough").await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        app.login(&email, "abc\u{0}def-long-enough").await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.login(&email, "abc").await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn password_over_4096_bytes_is_password_too_long(app: TestApp) {
    let hashes = app.state.hasher.started();
    let response = app
        .signup(&TestUser::random().email, &"x".repeat(4097))
        .await;
    assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(response.error(), "password_too_long");
    assert_eq!(app.state.hasher.started(), hashes, "refused before hashing");
    let user = TestUser::random();
    user.register(&app).await;
    assert_eq!(
        app.state.hasher.started(),
        hashes + 1,
        "a signup hashes once"
    );
}

async fn one_mebibyte_body_is_413_without_hashing(app: TestApp) {
    let hashes = app.state.hasher.started();
    let started = Instant::now();
    let response = app
        .signup(&TestUser::random().email, &"x".repeat(1 << 20))
        .await;
    assert_eq!(response.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(response.error(), "payload_too_large");
    let login = app.login("a@example.com", &"x".repeat(1 << 20)).await;
    assert_eq!(login.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(app.state.hasher.started(), hashes, "no bcrypt ran");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused before any real work"
    );
}

async fn nfd_password_logs_in_when_set_as_nfc(app: TestApp) {
    let email = TestUser::random().email;
    assert_eq!(
        app.signup(&email, "caf\u{e9} cr\u{e8}me br\u{fb}l\u{e9}e")
            .await
            .status,
        StatusCode::CREATED
    );
    let decomposed = "cafe\u{301} cre\u{300}me bru\u{302}le\u{301}e";
    assert_eq!(app.login(&email, decomposed).await.status, StatusCode::OK);
}

async fn stored_hash_is_bcrypt_2b_with_a_unique_salt(app: TestApp) {
    let (a, b) = (TestUser::random(), TestUser::random());
    a.register(&app).await;
    b.register(&app).await;
    let hash_a = app.user(&a.email).await.password_hash;
    let hash_b = app.user(&b.email).await.password_hash;
    assert!(
        hash_a.starts_with("$2b$04$"),
        "the configured cost: {hash_a}"
    );
    assert_ne!(hash_a, hash_b, "same password, different salts");
    assert!(!hash_a.contains(&a.password));
}

async fn malformed_bodies_get_json_errors(app: TestApp) {
    let cases = [
        (
            "application/json",
            "{not json",
            StatusCode::BAD_REQUEST,
            "syntax error",
        ),
        (
            "application/json",
            r#"{"email":"a@example.com"}"#,
            StatusCode::BAD_REQUEST,
            "missing password",
        ),
        (
            "application/json",
            r#"{"email":1,"password":2}"#,
            StatusCode::BAD_REQUEST,
            "wrong types",
        ),
        (
            "application/json",
            "[]",
            StatusCode::BAD_REQUEST,
            "not an object",
        ),
        (
            "application/json",
            "",
            StatusCode::BAD_REQUEST,
            "empty body",
        ),
        (
            "text/plain",
            r#"{"email":"a@example.com","password":"x"}"#,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "text/plain",
        ),
    ];
    for (content_type, body, status, reason) in cases {
        let request = Request::post("/signup")
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap();
        let response = app.request(request).await;
        assert_eq!(response.status, status, "{reason}: {}", response.body);
        assert!(
            response.body["error"].is_string(),
            "{reason}: JSON error body, got {}",
            response.body
        );
        assert!(response.body["message"].is_string(), "{reason}");
    }
}

/// What the engines' text comparisons could confuse stays apart, and what fits one engine's
/// column fits every one's: emails that differ only by an accent (equal under MySQL's default
/// accent-insensitive collations) are two accounts; an email of exactly 254 bytes of which the
/// local part is 32 two-byte characters, and one with a 4-byte character (`utf8mb4` only), are
/// stored and log in exactly as written. The same answers on every store.
async fn emails_a_collation_would_confuse_or_cut_are_stored_exactly(app: TestApp) {
    let password = "correct horse battery staple";
    let other = "another passphrase entirely";
    let accented = "josé@example.com";
    let plain = "jose@example.com";
    let created = app.signup(accented, password).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let second = app.signup(plain, other).await;
    assert_eq!(
        second.status,
        StatusCode::CREATED,
        "an accent makes another mailbox: {}",
        second.body
    );
    for (email, password) in [(accented, password), (plain, other)] {
        let login = app.login(email, password).await;
        assert_eq!(login.status, StatusCode::OK, "{email}: {}", login.body);
        assert_eq!(claims_of(&login.str("access_token"))["email"], email);
    }
    assert_eq!(
        app.login(plain, password).await.status,
        StatusCode::UNAUTHORIZED,
        "the plain spelling is not the accented account"
    );

    let domain = format!(
        "{}.{}.{}.com",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(57)
    );
    let longest = format!("{}@{domain}", "é".repeat(32));
    assert_eq!(longest.len(), 254);
    let four_bytes = "\u{1F600}mail@example.com";
    for email in [longest.as_str(), four_bytes] {
        let created = app.signup(email, password).await;
        assert_eq!(
            created.status,
            StatusCode::CREATED,
            "{email}: {}",
            created.body
        );
        assert_eq!(created.str("email"), email, "stored as written");
        let login = app.login(email, password).await;
        assert_eq!(login.status, StatusCode::OK, "{email}: {}", login.body);
        assert_eq!(app.user(email).await.email, email);
    }
}

crate::on_every_store!(
    emails_a_collation_would_confuse_or_cut_are_stored_exactly,
    signup_returns_201_with_id_email_and_created_at,
    duplicate_email_ignoring_case_is_409_and_creates_nothing,
    invalid_emails_are_422,
    idn_domain_and_its_a_label_are_one_account,
    fullwidth_spelling_is_the_same_account,
    control_characters_in_an_email_are_422_not_500,
    login_with_a_nul_or_3_kb_email_is_401_not_500,
    emails_stored_before_canonicalisation_still_log_in,
    short_password_is_422_with_reason_length,
    password_containing_the_email_is_422,
    breached_password_is_422_with_reason_common,
    passphrase_without_composition_rules_is_accepted,
    sixty_four_emoji_password_is_accepted_whole,
    passwords_sharing_72_bytes_are_different,
    password_with_nul_is_verified_exactly,
    password_over_4096_bytes_is_password_too_long,
    one_mebibyte_body_is_413_without_hashing,
    nfd_password_logs_in_when_set_as_nfc,
    stored_hash_is_bcrypt_2b_with_a_unique_salt,
    malformed_bodies_get_json_errors,
);
