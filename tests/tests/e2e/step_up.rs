//! Rules on how the bearer signed in (issue 15), through the real filter in a real Envoy: a rule
//! with `acr` answers a token without one of its values with RFC 9470's step-up challenge (401
//! `insufficient_user_authentication`, `acr_values`), and one with `email_verified` answers a
//! token whose claim is not JSON `true` with 403. The admin routes of the shipped `dev.yaml` ask
//! for `aal2`; a verified-email route is added to a second gateway for the test. Tokens are a
//! real login's claims with `acr`, `email_verified` or `roles` changed and re-signed with the real
//! key, so that only the claim under test differs (the full sign-in with a second factor is in
//! `flow.rs`).

use std::{collections::HashMap, time::Duration};

use e2e::{
    envoy::{filter_wasm, render_config, Envoy},
    stack::INTERNAL_TOKEN,
    Gateway, Stack, StackOptions,
};
use serde_json::{json, Value};

/// The challenge of a token without `aal2` on a route that asks for it.
const STEP_UP_AAL2: &str = "Bearer realm=\"auth-service\", \
    error=\"insufficient_user_authentication\", \
    error_description=\"requires a stronger authentication (acr aal2)\", acr_values=\"aal2\"";

/// The challenge of a token whose email is not verified on a route that asks for it.
const EMAIL_NOT_VERIFIED: &str = "Bearer realm=\"auth-service\", error=\"insufficient_scope\", \
    error_description=\"requires a verified email\"";

/// `access`'s claims with each `(name, value)` set (removed when `value` is null), signed with
/// the key that signs now.
fn resigned(stack: &Stack, access: &str, edits: &[(&str, Value)]) -> String {
    let signer = stack.signer();
    let header = json!({
        "alg": signer.key.algorithm().as_str(), "typ": "at+jwt", "kid": signer.stored.kid,
    });
    let mut claims = test_support::jwt_part(access, 1);
    let map = claims.as_object_mut().expect("the claims are an object");
    for (name, value) in edits {
        if value.is_null() {
            map.remove(*name);
        } else {
            map.insert((*name).to_owned(), value.clone());
        }
    }
    stack.sign_raw(&header.to_string(), &claims.to_string())
}

/// Status, `www-authenticate`, `cache-control` and body of `GET path` with `token`.
async fn answer(gateway: &Gateway, path: &str, token: &str) -> (u16, String, String, Value) {
    let response = gateway.get_on_new_connection(path, Some(token)).await;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (challenge, cache_control) = (header("www-authenticate"), header("cache-control"));
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, challenge, cache_control, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_stacks_admin_routes_ask_a_second_factor_with_rfc_9470s_challenge() {
    let stack = Stack::start(StackOptions::default()).await;
    let (_, login) = stack.gateway.new_user().await;
    let access = login["access_token"].as_str().unwrap();
    let admin = json!(["admin", "user"]);
    let token = |acr: Value, roles: &Value| {
        resigned(&stack, access, &[("acr", acr), ("roles", roles.clone())])
    };

    let step_up = json!({
        "error": "insufficient_user_authentication",
        "message": "requires a stronger authentication (acr aal2)",
    });
    for (acr, why) in [
        (json!("aal1"), "one factor"),
        (Value::Null, "no acr (a token from before issue 15)"),
        (json!("AAL2"), "another case"),
        (json!(["aal2"]), "an array holding aal2"),
        (json!(2), "a number"),
    ] {
        for path in ["/api/admin/users", "/API/Admin/users", "/api/admin"] {
            let (status, challenge, cache_control, body) =
                answer(&stack.gateway, path, &token(acr.clone(), &admin)).await;
            assert_eq!(status, 401, "{why}, {path}: {body}");
            assert_eq!(challenge, STEP_UP_AAL2, "{why}, {path}");
            assert_eq!(cache_control, "no-store", "{why}, {path}");
            assert_eq!(body, step_up, "{why}, {path}");
        }
        assert_eq!(
            stack
                .gateway
                .status("/api/orders", Some(&token(acr.clone(), &admin)))
                .await,
            200,
            "{why}: routes without the rule ask nothing"
        );
    }

    let admitted = stack
        .gateway
        .get("/api/admin/users", Some(&token(json!("aal2"), &admin)))
        .await;
    assert_eq!(admitted.status(), 200);
    let echoed: Value = admitted.json().await.unwrap();
    assert_eq!(echoed["headers"]["x-user-roles"], "admin,user", "{echoed}");

    // The role is checked first: a second factor would not help a user without it.
    let (status, challenge, _, body) = answer(
        &stack.gateway,
        "/api/admin/users",
        &token(json!("aal2"), &json!(["user"])),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    let (status, _, _, body) = answer(
        &stack.gateway,
        "/api/admin/users",
        &token(json!("aal1"), &json!(["user"])),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("insufficient_scope")),
        "no step-up is offered to a user without the role"
    );

    // gRPC clients get UNAUTHENTICATED with the same challenge as metadata.
    let grpc = stack
        .gateway
        .client
        .post(stack.gateway.url("/api/admin/svc.Admin/List"))
        .bearer_auth(token(json!("aal1"), &admin))
        .header("content-type", "application/grpc")
        .body(Vec::<u8>::new())
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        grpc.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(header("grpc-status").as_deref(), Some("16"));
    assert_eq!(header("www-authenticate").as_deref(), Some(STEP_UP_AAL2));

    // Counted apart from the other refusals (the counters reach Envoy on the next tick).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let counted = stack
        .gateway
        .envoy
        .counter("auth_filter.denied.insufficient_user_authentication")
        .await;
    assert!(counted >= 16, "{counted} step-up refusals counted");
}

/// Starts a second gateway from the shipped `dev.yaml`, for `stack`'s auth-api and an echo
/// upstream of its own, with a `/api/verified/` rule asking for a verified email and a
/// `/api/verified-admin/` rule asking for everything at once.
async fn gateway_with_a_verified_email_route(stack: &Stack) -> (Gateway, StopOnDrop) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(echo_upstream::serve(listener, async {
        let _ = stopped.await;
    }));
    let values = HashMap::from([
        ("GATEWAY_PORT", "0".to_owned()),
        ("ADMIN_PORT", "0".to_owned()),
        ("AUTH_API_PORT", stack.public_addr.port().to_string()),
        ("AUTH_INTERNAL_PORT", stack.internal_addr.port().to_string()),
        ("UPSTREAM_PORT", upstream.port().to_string()),
        ("WASM_PATH", filter_wasm().display().to_string()),
        ("INTERNAL_TOKEN", INTERNAL_TOKEN.to_owned()),
        ("ISSUER", stack.state.config.issuer.clone()),
        ("POLL_SECONDS", "1".to_owned()),
        ("REVOCATION_POLL_SECONDS", "1".to_owned()),
    ]);
    const API: &str = r#"{"match": {"prefix": "/api/"}, "require": "authenticated"}"#;
    let shipped = render_config(&values);
    assert_eq!(shipped.matches(API).count(), 1, "dev.yaml's /api/ rule");
    // Inserted before it, each on a line of its own at its indentation (in a YAML block).
    let line_start = shipped[..shipped.find(API).unwrap()].rfind('\n').unwrap() + 1;
    let indent = &shipped[line_start..shipped.find(API).unwrap()];
    let config = shipped.replace(
        API,
        &[
            r#"{"match": {"prefix": "/api/verified/"}, "require": "authenticated", "email_verified": true},"#,
            r#"{"match": {"prefix": "/api/verified-admin/"}, "require": {"roles": ["admin"]}, "email_verified": true, "acr": ["aal2"]},"#,
            API,
        ]
        .join(&format!("\n{indent}")),
    );
    let envoy = Envoy::start(&config, 2)
        .await
        .unwrap_or_else(|failed| panic!("Envoy refused the config:\n{}", failed.log));
    let gateway = Gateway {
        envoy,
        client: reqwest::Client::new(),
    };
    gateway.wait_for_keys().await;
    (gateway, StopOnDrop(Some(stop)))
}

/// Stops the echo upstream when dropped.
struct StopOnDrop(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(stop) = self.0.take() {
            let _ = stop.send(());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_may_ask_for_a_verified_email() {
    let stack = Stack::start(StackOptions::default()).await;
    let (gateway, _upstream) = gateway_with_a_verified_email_route(&stack).await;
    let (_, login) = stack.gateway.new_user().await;
    let access = login["access_token"].as_str().unwrap();

    let refused = json!({"error": "email_not_verified", "message": "requires a verified email"});
    for (email_verified, why) in [
        (json!(false), "not verified"),
        (Value::Null, "no claim (a token from before issue 15)"),
        (json!("true"), "the string \"true\""),
        (json!(1), "a number"),
        (json!([true]), "an array holding true"),
    ] {
        let token = resigned(&stack, access, &[("email_verified", email_verified)]);
        let (status, challenge, cache_control, body) =
            answer(&gateway, "/api/verified/x", &token).await;
        assert_eq!(status, 403, "{why}: {body}");
        assert_eq!(challenge, EMAIL_NOT_VERIFIED, "{why}");
        assert_eq!(cache_control, "no-store", "{why}");
        assert_eq!(body, refused, "{why}");
        assert_eq!(
            gateway.status("/api/x", Some(&token)).await,
            200,
            "{why}: routes without the rule ask nothing"
        );
    }
    let verified = resigned(&stack, access, &[("email_verified", json!(true))]);
    assert_eq!(
        gateway.status("/api/verified/x", Some(&verified)).await,
        200
    );

    // The token auth-api issues: the gateway answers as its claim says.
    let claim = &test_support::jwt_part(access, 1)["email_verified"];
    assert!(
        claim.is_boolean(),
        "auth-api's tokens carry email_verified: {claim}"
    );
    assert_eq!(
        gateway.status("/api/verified/x", Some(access)).await,
        if *claim == json!(true) { 200 } else { 403 },
        "email_verified {claim}"
    );

    // Both rule members at once: the email (no sign-in lifts it) before the step-up.
    let route = "/api/verified-admin/x";
    let cases = [
        (json!(false), json!("aal1"), 403, "neither"),
        (json!(false), json!("aal2"), 403, "a second factor only"),
        (json!(true), json!("aal1"), 401, "a verified email only"),
        (json!(true), json!("aal2"), 200, "both"),
    ];
    for (email_verified, acr, status, why) in cases {
        let token = resigned(
            &stack,
            access,
            &[
                ("email_verified", email_verified),
                ("acr", acr),
                ("roles", json!(["admin"])),
            ],
        );
        let (got, challenge, _, body) = answer(&gateway, route, &token).await;
        assert_eq!(got, status, "{why}: {body}");
        match status {
            401 => assert_eq!(challenge, STEP_UP_AAL2, "{why}"),
            403 => assert_eq!(challenge, EMAIL_NOT_VERIFIED, "{why}"),
            _ => {}
        }
    }

    tokio::time::sleep(Duration::from_millis(600)).await;
    let counted = gateway
        .envoy
        .counter("auth_filter.denied.email_not_verified")
        .await;
    assert!(counted >= 7, "{counted} unverified-email refusals counted");
}
