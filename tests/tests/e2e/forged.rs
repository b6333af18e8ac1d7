//! SECURITY.md B 6-19 and 23-26 at the gateway: every forged token is re-signed with the real
//! key, so that only the property under test is wrong.

use e2e::{Stack, StackOptions};
use serde_json::{json, Value};

fn with(claims: &Value, field: &str, value: Value) -> String {
    let mut claims = claims.clone();
    let map = claims.as_object_mut().unwrap();
    if value.is_null() {
        map.remove(field);
    } else {
        map.insert(field.to_owned(), value);
    }
    claims.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_are_refused_at_the_gateway() {
    let stack = Stack::start(StackOptions::default()).await;
    let (_, login) = stack.new_user().await;
    let access = login["access_token"].as_str().unwrap().to_owned();
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();
    let claims = test_support::jwt_part(&access, 1);
    let now = claims["iat"].as_i64().unwrap();
    let kid = stack.signer_kid();
    let header = json!({"alg": "HS256", "typ": "at+jwt", "kid": kid}).to_string();
    let header_with = |extra: Value| {
        let mut h = json!({"alg": "HS256", "typ": "at+jwt", "kid": kid});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                h.as_object_mut().unwrap().remove(k);
            } else {
                h[k] = v.clone();
            }
        }
        h.to_string()
    };
    let body = claims.to_string();

    // The control: the same re-signing with nothing changed passes.
    let control = stack.sign_raw(&header, &body);
    assert_eq!(
        stack.get("/api/x", Some(&control)).await.status(),
        200,
        "control token"
    );

    let cases: Vec<(&str, String)> = vec![
        ("B6 alg none", test_support::unsigned(&body)),
        (
            "B7/8 alg HS384 on an HS256 key",
            stack.sign_raw(&header_with(json!({"alg": "HS384"})), &body),
        ),
        (
            "B9 unknown kid",
            stack.sign_raw(&header_with(json!({"kid": "unknown"})), &body),
        ),
        (
            "B9 kid traversal",
            stack.sign_raw(&header_with(json!({"kid": "../../etc/passwd"})), &body),
        ),
        (
            "B9 kid SQL",
            stack.sign_raw(&header_with(json!({"kid": "' OR 1=1 --"})), &body),
        ),
        (
            "B9 kid NUL",
            stack.sign_raw(&header_with(json!({"kid": "a\u{0}b"})), &body),
        ),
        (
            "B9 kid of 10 KB",
            stack.sign_raw(&header_with(json!({"kid": "k".repeat(10_000)})), &body),
        ),
        (
            "B10 jku to the attacker's key, signed with it",
            test_support::sign_raw(
                b"the attacker's own key, 32 bytes+",
                &header_with(
                    json!({"jku": "https://evil.example/jwks", "jwk": {"kty": "oct", "k": "YXR0YWNrZXI"}}),
                ),
                &body,
            ),
        ),
        (
            "B11 typ missing",
            stack.sign_raw(&header_with(json!({"typ": null})), &body),
        ),
        (
            "B11 typ JWT",
            stack.sign_raw(&header_with(json!({"typ": "JWT"})), &body),
        ),
        (
            "B11/26 typ rt+jwt",
            stack.sign_raw(&header_with(json!({"typ": "rt+jwt"})), &body),
        ),
        (
            "B12 expired",
            stack.sign_raw(&header, &with(&claims, "exp", json!(now - 3600))),
        ),
        (
            "B12 exp missing",
            stack.sign_raw(&header, &with(&claims, "exp", Value::Null)),
        ),
        (
            "B13 nbf in the future",
            stack.sign_raw(&header, &with(&claims, "nbf", json!(now + 3600))),
        ),
        (
            "B14 iat in the future",
            stack.sign_raw(&header, &with(&claims, "iat", json!(now + 3600))),
        ),
        (
            "B15 aud missing",
            stack.sign_raw(&header, &with(&claims, "aud", Value::Null)),
        ),
        (
            "B15 aud empty",
            stack.sign_raw(&header, &with(&claims, "aud", json!([]))),
        ),
        (
            "B15 aud other",
            stack.sign_raw(&header, &with(&claims, "aud", json!("billing"))),
        ),
        (
            "B16 iss trailing slash",
            stack.sign_raw(&header, &with(&claims, "iss", json!("auth-service/"))),
        ),
        (
            "B16 iss case",
            stack.sign_raw(&header, &with(&claims, "iss", json!("AUTH-SERVICE"))),
        ),
        (
            "B18 duplicate sub",
            stack.sign_raw(
                &header,
                &format!(r#"{{"sub":"someone-else",{}"#, &body[1..]),
            ),
        ),
        (
            "B18 duplicate header member",
            stack.sign_raw(
                &format!(r#"{{"alg":"HS256","typ":"at+jwt","kid":"{kid}","alg":"HS256"}}"#),
                &body,
            ),
        ),
        ("B19 flipped payload bit", {
            let mut parts: Vec<String> = access.split('.').map(str::to_owned).collect();
            let mut payload = parts[1].clone().into_bytes();
            payload[5] ^= 0x01;
            parts[1] = String::from_utf8(payload).unwrap();
            parts.join(".")
        }),
        (
            "B19 truncated signature",
            access[..access.len() - 3].to_owned(),
        ),
        (
            "B19 two segments",
            access.rsplit_once('.').unwrap().0.to_owned(),
        ),
        ("B19 JWE five segments", format!("{access}.x.y")),
        ("B19 padding", format!("{access}=")),
        ("B26 refresh token as bearer", refresh.clone()),
        ("oversized token", "a".repeat(9000)),
    ];
    for (reason, token) in cases {
        let response = stack.get("/api/x", Some(&token)).await;
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
        let mut request = stack.client.get(stack.url("/api/x"));
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
        .get(&format!("/api/x?access_token={access}"), None)
        .await;
    assert_eq!(
        query.status(),
        401,
        "B24 token in the query string is not read"
    );
}
