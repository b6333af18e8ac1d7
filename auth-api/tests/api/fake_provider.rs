//! `FakeProvider`: a scripted OpenID Provider on `127.0.0.1:0`, for the social-login tests that
//! need a provider to misbehave on demand (the npm `oidc-provider` of the browser test is a
//! certified, well-behaved one).
//!
//! It serves discovery, a JWK set (an ES256 key made per provider), an authorization endpoint
//! that checks and records each request, a token endpoint that checks client authentication
//! (HTTP Basic), the code (single use), the `redirect_uri` and the PKCE verifier against the
//! recorded S256 challenge, and userinfo. The ID token of each code is scripted by its
//! [`Grant`]: any claim changed or removed, another signing key, `alg: none`, HS256. Each
//! endpoint can be made to misbehave (slow, an error status, garbage), and the whole provider
//! stopped (its port then refuses connections).
//!
//! No browser: a test reads the authorization URL from auth-api's `Location`, GETs it here (it
//! is recorded, by `state`), asks for a code with [`FakeProvider::issue_code`] and builds the
//! callback URL itself.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use auth_api::clock::Clock;
use auth_jwt::{Algorithm, JwkSet, Key, KeySet};
use axum::{
    extract::{Query, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Form, Json, Router,
};
use base64::{
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
    Engine as _,
};
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

/// The client auth-api is registered as at every fake provider.
pub const CLIENT_ID: &str = "auth-service";
/// Its secret: 32 bytes, so that it can also key an HS256 token (the algorithm-confusion case).
pub const CLIENT_SECRET: &str = "fake-provider-client-secret-0123";

/// The provider's endpoints, to make one of them misbehave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Discovery,
    Jwks,
    Token,
    Userinfo,
}

/// How an endpoint misbehaves.
#[derive(Debug, Clone, Copy)]
pub enum Misbehaviour {
    /// It answers as usual, after this long.
    Slow(Duration),
    /// It answers this status with an RFC 6749 error body.
    Status(StatusCode),
    /// It answers 200 with a body that is not JSON.
    Garbage,
}

/// What the provider advertises, fixed at start (auth-api discovers once and keeps it).
#[derive(Debug, Clone)]
pub struct Options {
    /// The `redirect_uri` registered for [`CLIENT_ID`] (auth-api's `callback_url`).
    pub redirect_uri: String,
    /// `authorization_response_iss_parameter_supported` (RFC 9207).
    pub iss_parameter_supported: bool,
    /// Whether discovery lists a `userinfo_endpoint`.
    pub userinfo: bool,
}

/// One authorization request as the provider received it.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    /// Every query parameter, as sent.
    pub query: HashMap<String, String>,
}

impl AuthorizationRequest {
    /// A parameter, or "" when absent.
    pub fn get(&self, name: &str) -> &str {
        self.query.get(name).map_or("", String::as_str)
    }
}

/// How a code's ID token is signed.
#[derive(Debug, Clone)]
pub enum Signing {
    /// With the provider's key, as published in its JWKS.
    ProviderKey,
    /// With another ES256 key under the same `kid` (the signature does not verify).
    OtherKey,
    /// With a key whose `kid` the JWKS does not list.
    UnknownKid,
    /// `alg: none`, empty signature.
    None,
    /// HS256 keyed with the client secret (algorithm confusion).
    Hs256WithClientSecret,
    /// With the provider's key and this header `typ`.
    Typ(&'static str),
}

/// Who signs in with a code, and how its ID token and userinfo look.
#[derive(Debug, Clone)]
pub struct Grant {
    pub subject: String,
    pub email: Option<String>,
    /// The `email_verified` claim; `None` leaves it out.
    pub email_verified: Option<Value>,
    /// Claims set (or replaced) after the defaults.
    pub claims: Map<String, Value>,
    /// Claims removed after the defaults.
    pub without: Vec<&'static str>,
    pub signing: Signing,
    /// Userinfo's answer; `None`: `sub`, `email` and `email_verified` as in the ID token.
    pub userinfo: Option<Value>,
}

impl Grant {
    /// A new random subject with a fresh, verified email.
    pub fn random() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self {
            subject: format!("sub-{id}"),
            email: Some(format!("social-{id}@example.com")),
            email_verified: Some(Value::Bool(true)),
            claims: Map::new(),
            without: Vec::new(),
            signing: Signing::ProviderKey,
            userinfo: None,
        }
    }

    /// The same identity as `self` (for a second sign-in), with default claims.
    pub fn again(&self) -> Self {
        Self {
            subject: self.subject.clone(),
            email: self.email.clone(),
            email_verified: self.email_verified.clone(),
            ..Self::random()
        }
    }

    pub fn email(mut self, email: Option<&str>, verified: Option<Value>) -> Self {
        self.email = email.map(str::to_owned);
        self.email_verified = verified;
        self
    }

    pub fn claim(mut self, name: &str, value: Value) -> Self {
        self.claims.insert(name.to_owned(), value);
        self
    }

    pub fn without(mut self, name: &'static str) -> Self {
        self.without.push(name);
        self
    }

    pub fn signed(mut self, signing: Signing) -> Self {
        self.signing = signing;
        self
    }

    pub fn userinfo(mut self, answer: Value) -> Self {
        self.userinfo = Some(answer);
        self
    }
}

/// How one request at the token endpoint ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchange {
    Issued,
    /// Refused with this RFC 6749 `error` and why.
    Refused(&'static str, &'static str),
}

/// A code issued and not yet redeemed.
#[derive(Debug, Clone)]
struct IssuedCode {
    request: AuthorizationRequest,
    grant: Grant,
}

#[derive(Default)]
struct Recorded {
    /// By `state`.
    authorizations: HashMap<String, AuthorizationRequest>,
    codes: HashMap<String, IssuedCode>,
    /// Grants by the access token issued for them (for userinfo).
    access_tokens: HashMap<String, Grant>,
    exchanges: Vec<Exchange>,
    /// What successful exchanges carried that must never be logged or stored in the clear:
    /// auth-api's PKCE verifier, and the ID and access tokens issued to it.
    secrets: Vec<String>,
    userinfo_hits: usize,
    misbehaviours: HashMap<Endpoint, Misbehaviour>,
}

struct Shared {
    issuer: String,
    options: Options,
    key: Key,
    other_key: Key,
    /// The app's clock, once the app exists (the app needs the issuer first): tokens are dated
    /// by it, so that moving the app's clock keeps fresh tokens fresh.
    clock: Mutex<Clock>,
    recorded: Mutex<Recorded>,
}

/// A running fake provider; stopped when dropped.
pub struct FakeProvider {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl FakeProvider {
    /// Starts a provider; its tokens are dated by the system clock until [`Self::use_clock`].
    pub async fn start(options: Options) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let key = Key::generate("fake-1", Algorithm::ES256, &mut rand::rngs::OsRng).unwrap();
        let other_key = Key::generate("fake-1", Algorithm::ES256, &mut rand::rngs::OsRng).unwrap();
        let shared = Arc::new(Shared {
            issuer: format!("http://{addr}"),
            options,
            key,
            other_key,
            clock: Mutex::default(),
            recorded: Mutex::default(),
        });
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/userinfo", get(userinfo))
            .with_state(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            // Graceful: on stop the listener closes and idle keep-alive connections (auth-api's
            // pooled ones) are closed too, so the provider is really unreachable afterwards.
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            shared,
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Dates tokens by `clock` from now on.
    pub fn use_clock(&self, clock: Clock) {
        *self.shared.clock.lock().unwrap() = clock;
    }

    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// The provider's authorization endpoint.
    pub fn authorization_endpoint(&self) -> String {
        format!("{}/authorize", self.shared.issuer)
    }

    /// Stops serving and returns once the port refuses connections.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(self.addr).await.is_ok() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the fake provider still accepts connections"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Makes `endpoint` misbehave from now on.
    pub fn misbehave(&self, endpoint: Endpoint, misbehaviour: Misbehaviour) {
        self.recorded().misbehaviours.insert(endpoint, misbehaviour);
    }

    /// Makes `endpoint` behave again.
    pub fn behave(&self, endpoint: Endpoint) {
        self.recorded().misbehaviours.remove(&endpoint);
    }

    /// The authorization request that carried `state`.
    pub fn authorization(&self, state: &str) -> AuthorizationRequest {
        self.recorded()
            .authorizations
            .get(state)
            .cloned()
            .unwrap_or_else(|| panic!("no authorization request with state {state}"))
    }

    /// A fresh code for `request`, redeemable once, whose ID token `grant` scripts.
    pub fn issue_code(&self, request: &AuthorizationRequest, grant: Grant) -> String {
        let code = random();
        self.recorded().codes.insert(
            code.clone(),
            IssuedCode {
                request: request.clone(),
                grant,
            },
        );
        code
    }

    /// The token endpoint's outcomes so far, in order.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.recorded().exchanges.clone()
    }

    /// The secrets of every successful exchange so far (auth-api's PKCE verifier, the ID token
    /// and the access token), for the tests that search logs and rows for them.
    pub fn exchanged_secrets(&self) -> Vec<String> {
        self.recorded().secrets.clone()
    }

    /// How often userinfo was asked.
    pub fn userinfo_hits(&self) -> usize {
        self.recorded().userinfo_hits
    }

    fn recorded(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.shared.recorded.lock().unwrap()
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// 32 random bytes, base64url.
fn random() -> String {
    let mut bytes = [0_u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The answer of a misbehaving `endpoint`, if it answers instead of the real one; a slow one
/// waits first, then answers as usual.
async fn misbehaviour(shared: &Shared, endpoint: Endpoint) -> Option<Response> {
    let misbehaviour = shared
        .recorded
        .lock()
        .unwrap()
        .misbehaviours
        .get(&endpoint)
        .copied();
    match misbehaviour? {
        Misbehaviour::Slow(delay) => {
            tokio::time::sleep(delay).await;
            None
        }
        Misbehaviour::Status(status) => {
            Some((status, Json(json!({"error": "server_error"}))).into_response())
        }
        Misbehaviour::Garbage => Some(
            (
                [(header::CONTENT_TYPE, "application/json")],
                "<html>maintenance</html>",
            )
                .into_response(),
        ),
    }
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Response {
    if let Some(answer) = misbehaviour(&shared, Endpoint::Discovery).await {
        return answer;
    }
    let issuer = &shared.issuer;
    let mut document = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "authorization_response_iss_parameter_supported": shared.options.iss_parameter_supported,
    });
    if shared.options.userinfo {
        document["userinfo_endpoint"] = json!(format!("{issuer}/userinfo"));
    }
    Json(document).into_response()
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    if let Some(answer) = misbehaviour(&shared, Endpoint::Jwks).await {
        return answer;
    }
    let keys: KeySet = [shared.key.to_public().unwrap()].into_iter().collect();
    Json(serde_json::to_value(JwkSet::public(&keys)).unwrap()).into_response()
}

/// Checks the request as a provider would (the registered client and redirect URI, the code
/// flow with an S256 challenge, OIDC's `openid` scope and nonce) and records it by `state`.
/// Answers 200 (the sign-in page a browser would see) or 400 naming the first problem.
async fn authorize(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let request = AuthorizationRequest { query };
    let problem = if request.get("client_id") != CLIENT_ID {
        Some("unknown client_id")
    } else if request.get("redirect_uri") != shared.options.redirect_uri {
        Some("redirect_uri is not the registered one")
    } else if request.get("response_type") != "code" {
        Some("response_type is not code")
    } else if request.get("code_challenge_method") != "S256" {
        Some("code_challenge_method is not S256")
    } else if request.get("code_challenge").len() != 43 {
        Some("code_challenge is not an S256 challenge")
    } else if !request.get("scope").split(' ').any(|s| s == "openid") {
        Some("scope lacks openid")
    } else if request.get("nonce").is_empty() {
        Some("no nonce")
    } else if request.get("state").is_empty() {
        Some("no state")
    } else {
        None
    };
    let state = request.get("state").to_owned();
    shared
        .recorded
        .lock()
        .unwrap()
        .authorizations
        .insert(state, request);
    match problem {
        Some(why) => (StatusCode::BAD_REQUEST, why).into_response(),
        None => (StatusCode::OK, "sign in to the fake provider").into_response(),
    }
}

/// RFC 6749 §4.1.3 with RFC 7636 §4.6: client authentication by HTTP Basic (§2.3.1, both parts
/// form-urlencoded), the code single use, the same `redirect_uri`, and the verifier's S256
/// equal to the recorded challenge.
async fn token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Some(answer) = misbehaviour(&shared, Endpoint::Token).await {
        return answer;
    }
    let refuse = |status: StatusCode, error: &'static str, why: &'static str| {
        shared
            .recorded
            .lock()
            .unwrap()
            .exchanges
            .push(Exchange::Refused(error, why));
        (
            status,
            Json(json!({"error": error, "error_description": why})),
        )
            .into_response()
    };
    let field = |name: &str| form.get(name).map_or("", String::as_str);
    if !client_authenticated(&headers) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    }
    if field("grant_type") != "authorization_code" {
        return refuse(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "not authorization_code",
        );
    }
    // Taken whatever happens next: a code is single use (RFC 6749 §4.1.2).
    let issued = shared.recorded.lock().unwrap().codes.remove(field("code"));
    let Some(IssuedCode { request, grant }) = issued else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown or used code",
        );
    };
    if field("redirect_uri") != request.get("redirect_uri") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "redirect_uri differs",
        );
    }
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(field("code_verifier").as_bytes()));
    if field("code_verifier").len() < 43 || challenge != request.get("code_challenge") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "code_verifier does not match",
        );
    }
    let id_token = id_token(&shared, &request, &grant);
    let access_token = random();
    let mut recorded = shared.recorded.lock().unwrap();
    recorded.exchanges.push(Exchange::Issued);
    recorded.secrets.extend([
        field("code_verifier").to_owned(),
        id_token.clone(),
        access_token.clone(),
    ]);
    recorded.access_tokens.insert(access_token.clone(), grant);
    drop(recorded);
    let body = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": request.get("scope"),
        "id_token": id_token,
    });
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

fn client_authenticated(headers: &HeaderMap) -> bool {
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    headers
        .get(header::AUTHORIZATION)
        .is_some_and(|value| value.as_bytes() == expected.as_bytes())
}

/// The ID token of `grant` for `request`: the defaults (OIDC Core §2), then the grant's
/// changes, signed as the grant says. Written with `test_support::sign_raw_with`, so its bytes
/// are exactly what we script, independently of auth-jwt's encoder.
fn id_token(shared: &Shared, request: &AuthorizationRequest, grant: &Grant) -> String {
    let now = shared.clock.lock().unwrap().now();
    let mut claims = Map::new();
    claims.insert("iss".to_owned(), json!(shared.issuer));
    claims.insert("sub".to_owned(), json!(grant.subject));
    claims.insert("aud".to_owned(), json!(CLIENT_ID));
    claims.insert("nonce".to_owned(), json!(request.get("nonce")));
    claims.insert("iat".to_owned(), json!(now));
    claims.insert("auth_time".to_owned(), json!(now));
    claims.insert("exp".to_owned(), json!(now + 300));
    if let Some(email) = &grant.email {
        claims.insert("email".to_owned(), json!(email));
    }
    if let Some(verified) = &grant.email_verified {
        claims.insert("email_verified".to_owned(), verified.clone());
    }
    for (name, value) in &grant.claims {
        claims.insert(name.clone(), value.clone());
    }
    for name in &grant.without {
        claims.remove(*name);
    }
    let payload = Value::Object(claims).to_string();
    let header =
        |alg: &str, kid: &str, typ: &str| json!({"alg": alg, "kid": kid, "typ": typ}).to_string();
    match &grant.signing {
        Signing::ProviderKey => {
            test_support::sign_raw_with(&shared.key, &header("ES256", "fake-1", "JWT"), &payload)
        }
        Signing::Typ(typ) => {
            test_support::sign_raw_with(&shared.key, &header("ES256", "fake-1", typ), &payload)
        }
        Signing::OtherKey => test_support::sign_raw_with(
            &shared.other_key,
            &header("ES256", "fake-1", "JWT"),
            &payload,
        ),
        Signing::UnknownKid => test_support::sign_raw_with(
            &shared.other_key,
            &header("ES256", "fake-unknown", "JWT"),
            &payload,
        ),
        Signing::None => format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header("none", "fake-1", "JWT")),
            URL_SAFE_NO_PAD.encode(&payload)
        ),
        Signing::Hs256WithClientSecret => test_support::sign_raw(
            CLIENT_SECRET.as_bytes(),
            &header("HS256", "fake-1", "JWT"),
            &payload,
        ),
    }
}

/// OIDC Core §5.3 with the access token the token endpoint issued.
async fn userinfo(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(answer) = misbehaviour(&shared, Endpoint::Userinfo).await {
        return answer;
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let mut recorded = shared.recorded.lock().unwrap();
    recorded.userinfo_hits += 1;
    let Some(grant) = recorded.access_tokens.get(&token).cloned() else {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"")],
        )
            .into_response();
    };
    drop(recorded);
    let answer = grant.userinfo.clone().unwrap_or_else(|| {
        let mut answer = json!({"sub": grant.subject});
        if let Some(email) = &grant.email {
            answer["email"] = json!(email);
        }
        if let Some(verified) = &grant.email_verified {
            answer["email_verified"] = verified.clone();
        }
        answer
    });
    Json(answer).into_response()
}

/// The fake speaks what auth-api's relying-party code expects, so that a failing social-login
/// test points at the routes, not at the fake: discovery, the authorization URL, the code
/// exchange with PKCE and client authentication, the ID token's verification, userinfo.
#[tokio::test]
async fn fake_provider_works_with_the_relying_party_library() {
    use auth_api::oidc::{authorize, discovery, exchange, id_token, HttpClient};
    use secrecy::{ExposeSecret as _, SecretString};

    let redirect_uri = "http://127.0.0.1:9/callback";
    let provider = FakeProvider::start(Options {
        redirect_uri: redirect_uri.to_owned(),
        iss_parameter_supported: true,
        userinfo: true,
    })
    .await;
    let http = HttpClient::new().unwrap();
    let metadata = discovery::discover(&http, provider.issuer()).await.unwrap();
    assert!(metadata.authorization_response_iss_parameter_supported);

    let (state, nonce, verifier) = (random(), random(), random());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let scopes = ["openid".to_owned(), "email".to_owned()];
    let url = authorize::AuthorizationRequest {
        endpoint: &metadata.authorization_endpoint,
        client_id: CLIENT_ID,
        redirect_uri,
        scopes: &scopes,
        state: &state,
        nonce: Some(&nonce),
        code_challenge: &challenge,
        hosted_domain: None,
    }
    .url();
    let page = reqwest::get(url).await.unwrap();
    assert_eq!(
        page.status(),
        StatusCode::OK,
        "{}",
        page.text().await.unwrap()
    );
    let request = provider.authorization(&state);

    let grant = Grant::random();
    let secret = SecretString::from(CLIENT_SECRET.to_owned());
    let redeem = |code: String, verifier: String| {
        let (http, metadata, secret) = (&http, &metadata, &secret);
        async move {
            let (code, verifier) = (SecretString::from(code), SecretString::from(verifier));
            let exchange = exchange::CodeExchange {
                token_endpoint: &metadata.token_endpoint,
                client_id: CLIENT_ID,
                client_secret: secret,
                code: &code,
                redirect_uri,
                code_verifier: &verifier,
            };
            exchange::exchange_code(http, &exchange).await
        }
    };
    let wrong = redeem(provider.issue_code(&request, grant.clone()), random()).await;
    assert!(
        matches!(&wrong, Err(auth_api::oidc::Error::TokenRefused { error }) if error == "invalid_grant"),
        "{wrong:?}"
    );
    let code = provider.issue_code(&request, grant.clone());
    let tokens = redeem(code.clone(), verifier.clone()).await.unwrap();
    let replay = redeem(code, verifier).await;
    assert!(replay.is_err(), "a code is single use");

    let jwks = id_token::Jwks::new(metadata.jwks_uri.clone().unwrap());
    let expected = id_token::Expected {
        issuer: provider.issuer(),
        client_id: CLIENT_ID,
        nonce: &nonce,
        hosted_domain: None,
    };
    let now = Clock::default().now();
    let id_token = tokens.id_token.as_ref().unwrap().expose_secret().to_owned();
    let identity = jwks.verify(&http, &id_token, &expected, now).await.unwrap();
    assert_eq!(identity.subject, grant.subject);
    assert_eq!(identity.email, grant.email);
    assert!(identity.email_verified);

    let info = exchange::userinfo(
        &http,
        metadata.userinfo_endpoint.as_ref().unwrap(),
        &tokens.access_token,
        &grant.subject,
    )
    .await
    .unwrap();
    assert_eq!(info, identity);
    assert_eq!(provider.userinfo_hits(), 1);
    assert_eq!(
        provider.exchanges(),
        [
            Exchange::Refused("invalid_grant", "code_verifier does not match"),
            Exchange::Issued,
            Exchange::Refused("invalid_grant", "unknown or used code"),
        ]
    );
}
