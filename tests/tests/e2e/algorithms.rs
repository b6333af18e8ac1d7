//! Every signing algorithm through the real Envoy and the real `.wasm`: ES256, EdDSA, RS256 and
//! HS256 tokens pass; tampered ones, foreign keys reusing a published kid and algorithm
//! confusion do not; ES256 and RS256 are checked by Envoy's `verify_signature` (host crypto),
//! EdDSA and HS256 in wasm.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use auth_jwt::{encode, Algorithm, Header, Jwk, JwkSet, Key};
use e2e::envoy::{filter_wasm, Envoy};
use e2e::{GatewayKeys, Stack, StackOptions};
use serde_json::{json, Value};

const ISSUER: &str = "http://127.0.0.1:10000/auth";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> Value {
    let now = now();
    json!({
        "iss": ISSUER, "aud": "api", "sub": "ada", "exp": now + 600, "iat": now,
        "jti": "j1", "sid": "s1", "client_id": "e2e", "roles": ["user"],
    })
}

/// `token` with the first character of its signature changed.
fn tampered_signature(token: &str) -> String {
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let first = if signature.starts_with('A') { 'B' } else { 'A' };
    format!("{signed}.{first}{}", &signature[1..])
}

/// `token` with `sub` changed after signing.
fn tampered_payload(token: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let mut parts = token.split('.');
    let (header, payload, signature) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["sub"] = json!("admin");
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.{signature}")
}

/// An Envoy whose filter has `jwks` inline (`local_jwks`), in front of a `direct_response` that
/// echoes the `x-user-id` the filter set.
async fn envoy_with_keys(jwks: &JwkSet) -> Envoy {
    let filter = json!({
        "issuer": ISSUER,
        "audiences": ["api"],
        "claim_to_headers": [{"claim_name": "sub", "header_name": "x-user-id"}],
        "local_jwks": jwks,
        "rules": [{"match": {"prefix": "/"}, "require": "authenticated"}],
        // Every request is a full verification.
        "cache_entries": 0,
    });
    let config = json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": [{
            "name": "gateway",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "gateway",
                    "route_config": {"virtual_hosts": [{
                        "name": "all",
                        "domains": ["*"],
                        "routes": [{
                            "match": {"prefix": "/"},
                            "direct_response": {"status": 200, "body": {"inline_string": "ok"}},
                            "response_headers_to_add": [{
                                "header": {"key": "x-seen-user-id", "value": "%REQ(x-user-id)%"}
                            }]
                        }]
                    }]},
                    "http_filters": [
                        {
                            "name": "envoy.filters.http.wasm",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                                "config": {
                                    "name": "auth_filter",
                                    "root_id": "auth_filter",
                                    "failure_policy": "FAIL_RELOAD",
                                    "vm_config": {
                                        "vm_id": "auth_filter",
                                        "runtime": "envoy.wasm.runtime.v8",
                                        "code": {"local": {"filename": filter_wasm().display().to_string()}}
                                    },
                                    "configuration": {
                                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                                        "value": filter.to_string()
                                    }
                                }
                            }
                        },
                        {
                            "name": "envoy.filters.http.router",
                            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
                        }
                    ]
                }
            }]}]
        }]}
    });
    Envoy::start(&config.to_string(), 2)
        .await
        .unwrap_or_else(|failed| panic!("Envoy refused the config:\n{}", failed.log))
}

/// The signature counters (`auth_filter.signature.{host,wasm}`) as Envoy has them now.
async fn signature_counters(envoy: &Envoy) -> (u64, u64) {
    (
        envoy.counter("auth_filter.signature.host").await,
        envoy.counter("auth_filter.signature.wasm").await,
    )
}

/// Waits until the signature counters have grown by `expected` (host, wasm) since `before`: the
/// filter flushes its counts on its next tick, so a fixed wait would race a busy machine.
///
/// # Panics
/// When they have not after 5 s, or have grown by more.
async fn assert_checked_by(envoy: &Envoy, before: (u64, u64), expected: (u64, u64), what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = signature_counters(envoy).await;
        let grown = (
            now.0.saturating_sub(before.0),
            now.1.saturating_sub(before.1),
        );
        if grown == expected || std::time::Instant::now() > deadline {
            assert_eq!(
                grown, expected,
                "{what}: signatures checked (by the host, in wasm)"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_algorithm_verifies_at_the_gateway_and_forgeries_do_not() {
    let mut rng = rand_core::OsRng;
    let keys: Vec<Key> = Algorithm::ALL
        .iter()
        .map(|&alg| Key::generate(format!("k-{alg}"), alg, &mut rng).unwrap())
        .collect();
    // What a gateway is given: the public JWK of each asymmetric key, the HS256 secret.
    let jwks = JwkSet {
        keys: keys
            .iter()
            .map(|k| Jwk::public(k).unwrap_or_else(|| Jwk::from_key(k)))
            .collect(),
    };
    let envoy = envoy_with_keys(&jwks).await;
    let client = reqwest::Client::new();
    let get = |token: String| {
        let request = client
            .get(format!("{}/api/x", envoy.gateway))
            .bearer_auth(token);
        async move { request.send().await.unwrap() }
    };

    for key in &keys {
        let alg = key.algorithm();
        let before = signature_counters(&envoy).await;
        let token = encode(&Header::access_token(key), &claims(), key).unwrap();
        let answer = get(token.clone()).await;
        assert_eq!(answer.status(), 200, "{alg}");
        assert_eq!(answer.headers()["x-seen-user-id"], "ada", "{alg}");

        let foreign = Key::generate(key.kid(), alg, &mut rng).unwrap();
        let mut refused = vec![
            ("tampered signature", tampered_signature(&token)),
            ("tampered payload", tampered_payload(&token)),
            (
                "a foreign key reusing the published kid",
                encode(&Header::access_token(&foreign), &claims(), &foreign).unwrap(),
            ),
        ];
        if let Some(public) = key.public_key_der() {
            // Algorithm confusion: HS256 with the public key's bytes as the secret.
            let confused = Key::hs256(key.kid(), public).unwrap();
            refused.push((
                "HS256 keyed with the public key",
                encode(&Header::access_token(&confused), &claims(), &confused).unwrap(),
            ));
        }
        for (what, forged) in refused {
            let answer = get(forged).await;
            assert_eq!(answer.status(), 401, "{alg}: {what}");
            let challenge = answer.headers()["www-authenticate"].to_str().unwrap();
            // Each forgery is refused for its own reason, not for anything that makes a 401.
            let why = if what.starts_with("HS256") {
                "key is bound to another algorithm"
            } else {
                "invalid signature"
            };
            assert!(
                challenge.contains(&format!(
                    r#"error="invalid_token", error_description="{why}""#
                )),
                "{alg}: {what}: {challenge}"
            );
        }

        // ES256 and RS256 go to the host: the valid token, the tampered signature and the
        // foreign key (the tampered payload too: its signature is checked first).
        let expected = match alg {
            Algorithm::ES256 | Algorithm::RS256 => (4, 0),
            _ => (0, 4),
        };
        assert_checked_by(&envoy, before, expected, alg.as_str()).await;
    }
}

/// auth-api signs with each algorithm in turn (`AUTH_SIGNING_ALG`), and the dev gateway
/// verifies: from the public JWKS for the public-key algorithms; from `/internal/keys` for
/// HS256, whose secret the public JWKS never lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_auth_api_signs_with_each_algorithm_pass_the_gateway() {
    for alg in Algorithm::ALL {
        let configure: fn(&mut auth_api::Config) = match alg {
            Algorithm::ES256 => |c| c.signing_alg = Algorithm::ES256,
            Algorithm::EdDSA => |c| c.signing_alg = Algorithm::EdDSA,
            Algorithm::RS256 => |c| c.signing_alg = Algorithm::RS256,
            _ => |c| c.signing_alg = Algorithm::HS256,
        };
        let keys = if alg.is_symmetric() {
            GatewayKeys::Internal
        } else {
            GatewayKeys::PublicJwks
        };
        let stack = Stack::start(StackOptions {
            configure,
            keys,
            ..StackOptions::default()
        })
        .await;
        let (_, login) = stack.gateway.new_user().await;
        let access = login["access_token"].as_str().unwrap().to_owned();
        let header = test_support::jwt_part(&access, 0);
        assert_eq!(header["alg"], alg.as_str());
        assert_eq!(
            stack.gateway.status("/api/orders", Some(&access)).await,
            200,
            "{alg}"
        );
        let foreign = Key::generate(stack.signer_kid(), alg, &mut rand_core::OsRng).unwrap();
        let claims = test_support::jwt_part(&access, 1);
        let forged = encode(&Header::access_token(&foreign), &claims, &foreign).unwrap();
        for (what, token) in [
            ("tampered", tampered_signature(&access)),
            ("a foreign key reusing our kid", forged),
        ] {
            let answer = stack.gateway.get("/api/orders", Some(&token)).await;
            assert_eq!(answer.status(), 401, "{alg}: {what}");
            let challenge = answer.headers()["www-authenticate"].to_str().unwrap();
            assert!(
                challenge.contains(r#"error_description="invalid signature""#),
                "{alg}: {what}: {challenge}"
            );
        }
        if matches!(alg, Algorithm::ES256 | Algorithm::RS256) {
            // The valid token and both forgeries: Envoy's BoringSSL checked them.
            assert_checked_by(&stack.gateway.envoy, (0, 0), (3, 0), alg.as_str()).await;
        }

        let public = stack.public_jwks().await;
        let published = public["keys"].as_array().unwrap();
        if alg.is_symmetric() {
            assert!(
                published.is_empty(),
                "an HS256 secret is never public: {public}"
            );
        } else {
            assert_eq!(published.len(), 1, "{public}");
            let jwk = &published[0];
            assert_eq!(jwk["kid"], header["kid"]);
            assert_eq!(jwk["alg"], alg.as_str());
            for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
                assert!(jwk.get(private).is_none(), "{alg}: {private} in {jwk}");
            }
        }
    }
}
