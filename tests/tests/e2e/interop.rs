//! Our tokens and keys in the hands of other implementations, for each public-key algorithm:
//! PyJWT and `jose` (npm) verify our tokens with nothing but the public JWKS; Envoy's native
//! `jwt_authn`, configured with nothing but `remote_jwks` pointing at that JWKS, accepts them
//! and refuses tampered ones; and our gateway accepts tokens those libraries mint with a key we
//! published, and refuses tokens from a foreign key that reuses one of our `kid`s.
//!
//! The libraries live in `tests/interop/` (`pyjwt_tool.py`, `jose_tool.mjs`); `cargo xtask test`
//! installs PyJWT into `.venv` and `jose` into `tests/interop/node_modules`. A missing one fails
//! the test with the command that installs it.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{SystemTime, UNIX_EPOCH},
};

use auth_jwt::Algorithm;
use base64::{engine::general_purpose::STANDARD, Engine as _};
use e2e::{
    envoy::{render, workspace_root, Envoy},
    stack::{Stack, StackOptions},
};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_tokens_interoperate_with_pyjwt_jose_and_jwt_authn() {
    interoperates(Algorithm::ES256, |config| {
        config.signing_alg = Algorithm::ES256;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eddsa_tokens_interoperate_with_pyjwt_jose_and_jwt_authn() {
    interoperates(Algorithm::EdDSA, |config| {
        config.signing_alg = Algorithm::EdDSA;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_tokens_interoperate_with_pyjwt_jose_and_jwt_authn() {
    interoperates(Algorithm::RS256, |config| {
        config.signing_alg = Algorithm::RS256;
    })
    .await;
}

async fn interoperates(alg: Algorithm, configure: fn(&mut auth_api::Config)) {
    let stack = Stack::start(StackOptions {
        configure,
        ..StackOptions::default()
    })
    .await;
    let jwks_url = stack.gateway.url("/auth/.well-known/jwks.json");
    let issuer = stack.state.config.issuer.clone();
    let (_, login) = stack.gateway.new_user().await;
    let token = login["access_token"].as_str().expect("an access token");
    assert_eq!(
        header(token)["alg"],
        alg.as_str(),
        "auth-api signs with {alg}"
    );

    // Their verifiers, from the JWKS alone.
    for tool in [Tool::PyJwt, Tool::Jose] {
        let claims = tool.run(&["verify", &jwks_url, token, &issuer, "api"]);
        let claims: Value = serde_json::from_str(&claims.expect("verifies our token"))
            .unwrap_or_else(|e| panic!("{tool:?} printed no claims: {e}"));
        assert!(claims["sid"].is_string(), "{tool:?}: {claims}");
        let tampered = tamper(token);
        let refused = tool.run(&["verify", &jwks_url, &tampered, &issuer, "api"]);
        let why = refused.expect_err("accepted a tampered token");
        assert!(
            why.contains(tool.signature_error()),
            "{tool:?} refused the tampered token for another reason: {why}"
        );
    }

    // Envoy's own jwt_authn, with nothing but remote_jwks.
    let native = native_jwt_authn(&stack, &issuer).await;
    let ask = |token: Option<String>| {
        let client = stack.gateway.client.clone();
        let url = format!("{}/anything", native.gateway);
        async move {
            let mut request = client.get(url);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let answer = request.send().await.expect("jwt_authn answers");
            let status = answer.status().as_u16();
            (status, answer.text().await.unwrap_or_default())
        }
    };
    assert_eq!(
        ask(Some(token.to_owned())).await,
        (200, "ok".to_owned()),
        "{}",
        native.log()
    );
    let tampered = ask(Some(tamper(token))).await;
    assert_eq!(
        tampered,
        (401, "Jwt verification fails".to_owned()),
        "tampered"
    );
    assert_eq!(
        ask(None).await,
        (401, "Jwt is missing".to_owned()),
        "no token"
    );

    // Their signers, through our gateway: our published key passes, a foreign one reusing our
    // kid does not.
    let signer = stack
        .state
        .ring
        .signer(stack.state.clock.now())
        .expect("a signer");
    let pem = tempfile::NamedTempFile::new().expect("a temporary file");
    std::fs::write(
        pem.path(),
        pkcs8_pem(&signer.key.to_private_bytes().expect("private key")),
    )
    .expect("cannot write the key");
    let kid = signer.key.kid().to_owned();
    for tool in [Tool::PyJwt, Tool::Jose] {
        let sub = uuid::Uuid::new_v4().to_string();
        let claims = access_claims(&issuer, &sub).to_string();
        let ours = tool
            .run(&[
                "sign",
                &pem.path().display().to_string(),
                alg.as_str(),
                &kid,
                &claims,
            ])
            .expect("signs with our key");
        let response = stack.gateway.get("/api/hello", Some(ours.trim())).await;
        assert_eq!(response.status(), 200, "{tool:?}'s token under our key");
        let echoed: Value = response.json().await.expect("the upstream's echo");
        assert_eq!(echoed["headers"]["x-user-id"], sub.as_str(), "{tool:?}");

        let foreign = tool
            .run(&["sign-foreign", alg.as_str(), &kid, &claims])
            .expect("signs with a fresh key");
        let response = stack.gateway.get("/api/hello", Some(foreign.trim())).await;
        assert_eq!(
            response.status(),
            401,
            "{tool:?}'s foreign key reusing kid {kid}"
        );
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap_or("");
        assert!(
            challenge.contains(r#"error="invalid_token", error_description="invalid signature""#),
            "{challenge}"
        );
    }
}

/// The third-party libraries the test drives, each through its script in `tests/interop/`.
#[derive(Debug, Clone, Copy)]
enum Tool {
    PyJwt,
    Jose,
}

impl Tool {
    /// What the library says of a signature that does not verify.
    fn signature_error(self) -> &'static str {
        match self {
            Tool::PyJwt => "InvalidSignatureError",
            Tool::Jose => "ERR_JWS_SIGNATURE_VERIFICATION_FAILED",
        }
    }

    /// Runs the tool; its standard output on success, its standard error otherwise.
    fn run(self, args: &[&str]) -> Result<String, String> {
        let dir = workspace_root().join("tests/interop");
        let mut command = match self {
            Tool::PyJwt => {
                let python = venv_python();
                let mut command = Command::new(python);
                command.arg(dir.join("pyjwt_tool.py"));
                command
            }
            Tool::Jose => {
                assert!(
                    dir.join("node_modules/jose").exists(),
                    "jose is not installed: run `npm ci --prefix tests/interop` (cargo xtask test does)"
                );
                let mut command = Command::new("node");
                command.arg(dir.join("jose_tool.mjs"));
                command
            }
        };
        let output = command
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {self:?}: {e}"));
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }
}

/// `.venv/bin/python`, with PyJWT and `cryptography` in it.
fn venv_python() -> PathBuf {
    let python = workspace_root().join(".venv/bin/python");
    let installed = Command::new(&python)
        .args(["-c", "import jwt, cryptography"])
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        installed,
        "PyJWT is not installed in {}: run `.venv/bin/pip install 'PyJWT[crypto]'` (cargo xtask test does)",
        python.display()
    );
    python
}

/// A second Envoy whose only filter is native `jwt_authn`, fetching its keys from the stack
/// gateway's public JWKS (`tests/interop/jwt-authn.yaml`).
async fn native_jwt_authn(stack: &Stack, issuer: &str) -> Envoy {
    let gateway_port = stack
        .gateway
        .envoy
        .gateway
        .rsplit(':')
        .next()
        .expect("a port")
        .to_owned();
    let template =
        std::fs::read_to_string(Path::new(&workspace_root()).join("tests/interop/jwt-authn.yaml"))
            .expect("cannot read tests/interop/jwt-authn.yaml");
    let config = render(
        &template,
        &[("ISSUER", issuer.to_owned()), ("JWKS_PORT", gateway_port)]
            .into_iter()
            .collect(),
    );
    match Envoy::start(&config, 1).await {
        Ok(envoy) => envoy,
        Err(failed) => panic!("jwt_authn Envoy did not start:\n{}", failed.log),
    }
}

/// The claims of an access token our gateway accepts: RFC 9068's, plus ours.
fn access_claims(issuer: &str, sub: &str) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    json!({
        "iss": issuer, "sub": sub, "aud": "api", "exp": now + 300, "iat": now,
        "jti": uuid::Uuid::new_v4().to_string(), "client_id": "auth-service",
        "sid": uuid::Uuid::new_v4().to_string(), "email": "interop@example.com",
        "roles": ["user"],
    })
}

/// The token's decoded header.
fn header(token: &str) -> Value {
    let segment = token.split('.').next().unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .expect("a base64url header");
    serde_json::from_slice(&bytes).expect("a JSON header")
}

/// The token with its payload rewritten to another subject (still well-formed JSON, so a
/// refusal can only be the signature's), header and signature unchanged.
fn tamper(token: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts: Vec<&str> = token.split('.').collect();
    let payload = URL_SAFE_NO_PAD
        .decode(parts[1])
        .expect("a base64url payload");
    let mut claims: Value = serde_json::from_slice(&payload).expect("a JSON payload");
    claims["sub"] = json!("someone-else");
    let forged = URL_SAFE_NO_PAD.encode(claims.to_string());
    parts[1] = &forged;
    parts.join(".")
}

/// A PKCS#8 DER private key as PEM, the form the libraries import.
fn pkcs8_pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|chunk| std::str::from_utf8(chunk).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

/// An OIDC client finds discovery at `<issuer>/.well-known/openid-configuration`, an RFC 8414
/// client at `<origin>/.well-known/oauth-authorization-server/auth` (the issuer's path after the
/// well-known name, §3.1); through the gateway both reach the same document, whose `jwks_uri`
/// serves the keys that verify the tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_is_where_oidc_and_rfc_8414_clients_look_for_it() {
    let stack = Stack::start(StackOptions::default()).await;
    let oidc = stack
        .gateway
        .get("/auth/.well-known/openid-configuration", None)
        .await;
    assert_eq!(oidc.status(), 200);
    let oidc: Value = oidc.json().await.expect("a JSON document");
    let rfc8414 = stack
        .gateway
        .get("/.well-known/oauth-authorization-server/auth", None)
        .await;
    assert_eq!(rfc8414.status(), 200);
    let rfc8414: Value = rfc8414.json().await.expect("a JSON document");
    assert_eq!(oidc, rfc8414);
    assert_eq!(oidc["issuer"], stack.state.config.issuer.as_str());
    assert_eq!(
        oidc["jwks_uri"],
        format!("{}/.well-known/jwks.json", stack.state.config.issuer)
    );
    assert_eq!(
        oidc["access_token_signing_alg_values_supported"],
        json!(["ES256"])
    );
    let other = stack
        .gateway
        .get("/.well-known/oauth-authorization-server/other", None)
        .await;
    assert_eq!(other.status(), 403, "no rule for other paths: denied");
}
