//! SECURITY.md B 6-19 and 23-26 at the gateway: the forgery battery of `test_support`, each
//! token re-signed with the real key so that only the property under test is wrong. On the
//! default stack the key is ES256, so the battery includes algorithm confusion (the token
//! re-signed as HS256 with the public key as the secret) and a foreign key reusing our kid.

use e2e::{Stack, StackOptions};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_are_refused_at_the_gateway() {
    let stack = Stack::start(StackOptions::default()).await;
    let (_, login) = stack.gateway.new_user().await;
    let access = login["access_token"].as_str().unwrap().to_owned();
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();
    let signer = stack.signer();
    let kid = signer.stored.kid.clone();
    let alg = signer.key.algorithm().as_str();
    assert_eq!(
        test_support::jwt_part(&access, 0)["alg"],
        alg,
        "auth-api signs with its signer's algorithm"
    );
    let header = json!({"alg": alg, "typ": "at+jwt", "kid": kid}).to_string();
    let body = test_support::jwt_part(&access, 1).to_string();

    // The control: the same re-signing with nothing changed passes.
    let control = stack.sign_raw(&header, &body);
    assert_eq!(
        stack.gateway.status("/api/x", Some(&control)).await,
        200,
        "control token"
    );

    let cases = test_support::forged_tokens_with(&access, &signer.key, &refresh);
    for (reason, token) in cases {
        let response = stack.gateway.get("/api/x", Some(&token)).await;
        assert_eq!(response.status(), 401, "{reason}");
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{reason}: {challenge}"
        );
    }

    // B23-24: the Authorization header itself.
    let header_cases = [
        (None, 401, false, "B23 no header"),
        (
            Some("Basic dXNlcjpwYXNz".to_owned()),
            401,
            false,
            "B23 Basic",
        ),
        (
            Some(format!("bearer {access}")),
            200,
            false,
            "B24 lowercase scheme",
        ),
        (
            Some(format!("Bearer  {access}")),
            401,
            true,
            "B24 two spaces",
        ),
        (
            Some(format!("Bearer {access} trailing")),
            401,
            true,
            "B24 trailing garbage",
        ),
    ];
    for (authorization, status, has_error, reason) in header_cases {
        let mut request = stack.gateway.client.get(stack.gateway.url("/api/x"));
        if let Some(value) = &authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{reason}");
        if status == 401 {
            let challenge = response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .to_owned();
            assert_eq!(
                challenge.contains("error="),
                has_error,
                "{reason}: {challenge}"
            );
        }
    }
    let query = stack
        .gateway
        .get(&format!("/api/x?access_token={access}"), None)
        .await;
    assert_eq!(
        query.status(),
        401,
        "B24 token in the query string is not read"
    );
}
