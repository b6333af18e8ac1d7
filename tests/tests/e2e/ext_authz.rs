//! `envoy/ext-authz.yaml`: a real Envoy without the wasm filter, asking auth-api over gRPC
//! (`ext_authz`, `Authorization/Check` on `AUTH_GRPC_LISTEN`) about every protected request,
//! with the dev stack's routes and rules. The check is stateful: a logged-out session or a
//! disabled user is refused on the very next request, with no feed to wait for. And it fails
//! closed: no auth-api, no entry (503).
//!
//! The stack is set up here rather than by [`e2e::Stack`], which renders `envoy/dev.yaml` and
//! waits for the filter's keys: this gateway has neither.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use auth_api::{clock::Clock, App, AppState, Config};
use e2e::{
    envoy::{render, workspace_root, Envoy},
    Backend,
};
use reqwest::{Client, Response};
use serde_json::{json, Value};
use test_support::TestDb;
use tokio::{sync::oneshot, task::JoinHandle};

/// The password of every user made here.
const PASSWORD: &str = "correct horse battery staple";

/// The challenge of a request without a token, as auth-api's `/validate` answers it.
const BARE_CHALLENGE: &str = "Bearer realm=\"auth-service\"";

/// auth-api (with its gRPC listener), the echo upstream, and Envoy on `envoy/ext-authz.yaml`.
struct ExtAuthzStack {
    envoy: Envoy,
    client: Client,
    state: AppState,
    auth_api: Option<(oneshot::Sender<()>, JoinHandle<anyhow::Result<()>>)>,
    echo_stop: Option<oneshot::Sender<()>>,
    _db: TestDb,
}

/// Where Envoy sends the checks: auth-api's own gRPC listener, or a port nobody listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checks {
    AuthApi,
    ClosedPort,
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A loopback port that was free a moment ago and that nobody listens on now.
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    listener.local_addr().unwrap().port()
}

impl ExtAuthzStack {
    async fn start(backend: Backend, checks: Checks) -> Self {
        let (db, url) = TestDb::create(backend).await;
        let config = Config {
            database_url: url,
            listen: loopback(),
            grpc_listen: Some(loopback()),
            // No internal listener: this gateway polls nothing.
            internal_token: None,
            bcrypt_cost: 4,
            key_encryption_keys: Some(test_support::TEST_KEK.parse().unwrap()),
            ip_limit_per_minute: 100_000,
            ..Config::default()
        };
        let app = App::build_with_clock(config, Clock::default())
            .await
            .expect("auth-api does not start");
        let state = app.state().clone();
        let public = app.public_addr().unwrap();
        let grpc = app.grpc_addr().unwrap().expect("gRPC listener off");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));

        let echo = tokio::net::TcpListener::bind(loopback()).await.unwrap();
        let upstream = echo.local_addr().unwrap();
        let (echo_stop, echo_stopped) = oneshot::channel::<()>();
        tokio::spawn(echo_upstream::serve(echo, async {
            let _ = echo_stopped.await;
        }));

        let grpc_port = match checks {
            Checks::AuthApi => grpc.port(),
            Checks::ClosedPort => closed_port().await,
        };
        let template = std::fs::read_to_string(workspace_root().join("envoy/ext-authz.yaml"))
            .expect("cannot read envoy/ext-authz.yaml");
        let values = HashMap::from([
            ("GATEWAY_PORT", "0".to_owned()),
            ("ADMIN_PORT", "0".to_owned()),
            ("AUTH_API_PORT", public.port().to_string()),
            ("AUTH_GRPC_PORT", grpc_port.to_string()),
            ("UPSTREAM_PORT", upstream.port().to_string()),
        ]);
        let envoy = Envoy::start(&render(&template, &values), 2)
            .await
            .unwrap_or_else(|failed| panic!("Envoy refused envoy/ext-authz.yaml:\n{}", failed.log));
        Self {
            envoy,
            client: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            state,
            auth_api: Some((stop, task)),
            echo_stop: Some(echo_stop),
            _db: db,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.envoy.gateway)
    }

    /// `GET path` with an optional bearer token and extra headers.
    async fn get(&self, path: &str, token: Option<&str>, headers: &[(&str, &str)]) -> Response {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("the gateway does not answer")
    }

    async fn status(&self, path: &str, token: Option<&str>) -> u16 {
        self.get(path, token, &[]).await.status().as_u16()
    }

    /// `GET path` sent as a raw HTTP/1.1 request line, byte for byte (an HTTP client would
    /// normalise some of these paths itself); returns the status code and the body.
    async fn raw_get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self
            .envoy
            .gateway
            .strip_prefix("http://")
            .expect("the gateway URL is http://");
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let auth = token
            .map(|t| format!("authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request =
            format!("GET {path} HTTP/1.1\r\nhost: gateway\r\n{auth}connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        // Read up to the end of the body its content-length announces: after a local reply
        // Envoy keeps the connection open for a while (delayed close) before it closes it.
        let mut response = Vec::new();
        let mut chunk = [0_u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&response);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head.lines().find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                });
                if length.is_some_and(|length| body.len() >= length) {
                    break;
                }
            }
            match stream.read(&mut chunk).await.unwrap() {
                0 => break,
                n => response.extend_from_slice(&chunk[..n]),
            }
        }
        let response = String::from_utf8_lossy(&response).into_owned();
        let status = response
            .get(9..12)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("{path}: not an HTTP answer: {response:?}"));
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    async fn post(&self, path: &str, body: &Value, token: Option<&str>) -> Response {
        let mut request = self.client.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("the gateway does not answer")
    }

    /// Logs `email` in through the gateway; returns the access token.
    async fn login(&self, email: &str) -> String {
        let login = self
            .post(
                "/auth/login",
                &json!({"email": email, "password": PASSWORD}),
                None,
            )
            .await;
        assert_eq!(login.status(), 200, "login through the gateway");
        let body: Value = login.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// Signs a fresh user up and logs it in through the gateway; returns (email, access token).
    async fn new_user(&self) -> (String, String) {
        let email = format!("ext-authz-{}@example.com", uuid::Uuid::new_v4().simple());
        let signup = self
            .post(
                "/auth/signup",
                &json!({"email": email, "password": PASSWORD}),
                None,
            )
            .await;
        assert_eq!(signup.status(), 201, "signup through the gateway");
        let access = self.login(&email).await;
        (email, access)
    }

    /// Stops auth-api (all its listeners close) and waits until it has; Envoy keeps running.
    async fn stop_auth_api(&mut self) {
        if let Some((stop, task)) = self.auth_api.take() {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for ExtAuthzStack {
    fn drop(&mut self) {
        if let Some(stop) = self.echo_stop.take() {
            let _ = stop.send(());
        }
        if let Some((stop, _)) = self.auth_api.take() {
            let _ = stop.send(());
        }
    }
}

/// Asserts a 401 answer of auth-api's: an RFC 6750 challenge starting with `challenge`, and a
/// JSON `{"error", "message"}` body whose error is `error`.
async fn assert_unauthorized(answer: Response, challenge: &str, error: &str) {
    assert_eq!(answer.status(), 401);
    let got = answer.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(got.starts_with(challenge), "{got}");
    assert_eq!(answer.headers()["content-type"], "application/json");
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert!(body["message"].is_string(), "{body}");
}

async fn signup_call_admin_logout_and_fail_closed(backend: Backend) {
    let mut stack = ExtAuthzStack::start(backend, Checks::AuthApi).await;
    let (email, access) = stack.new_user().await;

    // A valid token: the upstream gets the identity, not the token, and not the client's
    // made-up identity.
    let call = stack
        .get(
            "/api/hello?x=1",
            Some(&access),
            &[("x-user-id", "evil"), ("x-user-roles", "admin")],
        )
        .await;
    assert_eq!(call.status(), 200);
    let echoed: Value = call.json().await.unwrap();
    assert_eq!(echoed["path"], "/api/hello?x=1");
    let headers = &echoed["headers"];
    let claims = test_support::jwt_part(&access, 1);
    assert_eq!(headers["x-user-id"], claims["sub"], "{echoed}");
    assert_ne!(headers["x-user-id"], "evil");
    assert_eq!(headers["x-user-email"], email.as_str(), "{echoed}");
    assert_eq!(headers["x-user-roles"], "user", "{echoed}");
    assert!(
        headers.get("authorization").is_none(),
        "the token is not forwarded: {echoed}"
    );

    // No token, a garbage token.
    assert_unauthorized(
        stack.get("/api/hello", None, &[]).await,
        BARE_CHALLENGE,
        "missing_token",
    )
    .await;
    assert_eq!(
        stack.get("/api/hello", None, &[]).await.headers()["www-authenticate"],
        BARE_CHALLENGE
    );
    assert_unauthorized(
        stack.get("/api/hello", Some("not.a.jwt"), &[]).await,
        "Bearer realm=\"auth-service\", error=\"invalid_token\"",
        "invalid_token",
    )
    .await;

    // A gRPC client gets a gRPC status: Envoy turns the 401 into UNAUTHENTICATED.
    let grpc = stack
        .client
        .post(stack.url("/api/orders.Orders/List"))
        .header("content-type", "application/grpc")
        .body(Vec::<u8>::new())
        .send()
        .await
        .unwrap();
    assert_eq!(
        grpc.headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok()),
        Some("16"),
        "UNAUTHENTICATED"
    );

    // The RFC 8414 metadata: public, for GET and HEAD only.
    let metadata = stack
        .get("/.well-known/oauth-authorization-server/auth", None, &[])
        .await;
    assert_eq!(metadata.status(), 200);
    let metadata: Value = metadata.json().await.unwrap();
    assert!(metadata["issuer"].is_string(), "{metadata}");
    let post = stack
        .post(
            "/.well-known/oauth-authorization-server/auth",
            &json!({}),
            None,
        )
        .await;
    assert_eq!(post.status(), 403);

    // Public routes need nothing and pass on neither the token nor a made-up identity.
    let public = stack
        .get("/public/info", Some(&access), &[("x-user-id", "evil")])
        .await;
    assert_eq!(public.status(), 200);
    let public: Value = public.json().await.unwrap();
    for name in ["authorization", "x-user-id"] {
        assert!(public["headers"].get(name).is_none(), "{name}: {public}");
    }

    // Anything else: 403 whether the token is valid or absent.
    for token in [Some(access.as_str()), None] {
        let other = stack.get("/internal/keys", token, &[]).await;
        assert_eq!(other.status(), 403);
        let body: Value = other.json().await.unwrap();
        assert_eq!(body["error"], "access_denied", "{body}");
    }
    assert_eq!(stack.status("/API/hello", Some(&access)).await, 403);
    let overridden = stack
        .get(
            "/api/hello",
            Some(&access),
            &[("x-http-method-override", "DELETE")],
        )
        .await;
    assert_eq!(overridden.status(), 400, "method overrides are refused");

    // CORS preflights are answered by the CORS filter, without a token and without a check.
    let preflight = stack
        .client
        .request(reqwest::Method::OPTIONS, stack.url("/api/hello"))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    assert_eq!(stack.status("/auth/metrics", None).await, 404);

    // The role admin: refused (also when the client claims it), then admitted once granted.
    let refused = stack
        .get("/api/admin/x", Some(&access), &[("x-user-roles", "admin")])
        .await;
    assert_eq!(refused.status(), 403);
    let challenge = refused.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_scope", "{body}");
    assert_eq!(stack.status("/api/admin/x", None).await, 401);

    let user = stack
        .state
        .store
        .user_by_email(&email)
        .await
        .unwrap()
        .expect("no such user");
    // Roles that merely contain `admin` are not it (the RBAC regex matches whole list items).
    for look_alike in ["sysadmin", "admins"] {
        stack
            .state
            .store
            .grant_role(&user.id, look_alike)
            .await
            .unwrap();
    }
    let look_alike_access = stack.login(&email).await;
    let refused = stack
        .get("/api/admin/x", Some(&look_alike_access), &[])
        .await;
    assert_eq!(refused.status(), 403);
    let echoed: Value = stack
        .get("/api/hello", Some(&look_alike_access), &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(echoed["headers"]["x-user-roles"], "admins,sysadmin,user");
    for look_alike in ["sysadmin", "admins"] {
        stack
            .state
            .store
            .revoke_role(&user.id, look_alike)
            .await
            .unwrap();
    }

    stack
        .state
        .store
        .grant_role(&user.id, "admin")
        .await
        .unwrap();
    let admin_access = stack.login(&email).await;
    let admitted = stack.get("/api/admin/x", Some(&admin_access), &[]).await;
    assert_eq!(admitted.status(), 200);
    let echoed: Value = admitted.json().await.unwrap();
    assert_eq!(echoed["headers"]["x-user-roles"], "admin,user", "{echoed}");

    // Logout: the very next request with that token is refused, no feed to wait for.
    let logout = stack
        .post("/auth/logout", &json!({}), Some(&admin_access))
        .await;
    assert_eq!(
        logout.status(),
        204,
        "/auth/* forwards the token to auth-api"
    );
    assert_unauthorized(
        stack.get("/api/admin/x", Some(&admin_access), &[]).await,
        "Bearer realm=\"auth-service\", error=\"invalid_token\"",
        "invalid_token",
    )
    .await;
    assert_eq!(stack.status("/api/hello", Some(&admin_access)).await, 401);
    // The user's other session lives on.
    assert_eq!(stack.status("/api/hello", Some(&access)).await, 200);

    // Disabling the user ends every session of theirs at once.
    stack
        .state
        .store
        .disable_user(&user.id, stack.state.revoke_at())
        .await
        .unwrap();
    assert_eq!(stack.status("/api/hello", Some(&access)).await, 401);

    // auth-api gone: fail closed, whatever the token.
    let (_, other) = stack.new_user().await;
    assert_eq!(stack.status("/api/hello", Some(&other)).await, 200);
    stack.stop_auth_api().await;
    for _ in 0..5 {
        for path in ["/api/hello", "/api/admin/x"] {
            assert_eq!(
                stack.status(path, Some(&other)).await,
                503,
                "{path} without auth-api:\n{}",
                stack.envoy.log()
            );
        }
    }
}

on_stores!([sqlite, postgres, mysql]: signup_call_admin_logout_and_fail_closed);

/// The admin rule covers the paths an upstream may serve as `/api/admin/…`, as the wasm filter's
/// `match_rule` does: any ASCII case (ASP.NET, Spring), no trailing slash (Express), and no `;`
/// path parameters at all (Tomcat, Jetty, Spring drop them), not even behind a public prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_paths_cannot_be_spelled_past_the_role_check() {
    let stack = ExtAuthzStack::start(Backend::Sqlite, Checks::AuthApi).await;
    let (email, access) = stack.new_user().await;

    // Another case, no trailing slash: the role check runs, with the JSON 403 (the local-reply
    // mapper covers the same paths, with a query too); without a token, ext_authz's 401.
    for path in [
        "/api/Admin/x",
        "/api/ADMIN/",
        "/api/admin",
        "/api/aDmIn",
        "/api/ADMIN?x=1",
    ] {
        let refused = stack.get(path, Some(&access), &[]).await;
        assert_eq!(refused.status(), 403, "{path}");
        let challenge = refused.headers()["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.contains("error=\"insufficient_scope\""),
            "{path}: {challenge}"
        );
        assert_eq!(refused.headers()["content-type"], "application/json");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"], "insufficient_scope", "{path}: {body}");
        assert_eq!(stack.status(path, None).await, 401, "{path}");
    }

    // `;` and `%3B`, raw or encoded, anywhere in the path: 400 before anything else, with a
    // token or without one, on protected and public routes alike.
    for path in [
        "/api/admin;/x",
        "/api/admin%3b/x",
        "/api/admin%3B/x",
        "/api/hello;jsessionid=1",
        "/public/..%3b/api/admin/x",
        "/public/info;x",
    ] {
        for token in [Some(access.as_str()), None] {
            let (status, body) = stack.raw_get(path, token).await;
            assert_eq!(status, 400, "{path} with {token:?}: {body}");
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(
                body,
                json!({"error": "invalid_request", "message": "path parameters are not accepted"}),
                "{path}"
            );
        }
    }
    // Envoy's normalize_path reads a `..;…` segment as `..` (and `.;…` as `.`), as Tomcat
    // would: the route table, and the upstream, get /api/admin/x, and the role check runs.
    for (token, expected) in [(Some(access.as_str()), 403), (None, 401)] {
        let (status, body) = stack.raw_get("/public/..;/api/admin/x", token).await;
        assert_eq!(status, expected, "{body}");
    }
    // Only the path: a `;` in the query is the upstream's business.
    assert_eq!(stack.status("/api/hello?a=1;b=2", Some(&access)).await, 200);

    // Whole segments only: these are /api/ paths, for any valid token.
    for path in ["/api/administrators", "/api/adminx", "/api/x/admin/y"] {
        let passed = stack.get(path, Some(&access), &[]).await;
        assert_eq!(passed.status(), 200, "{path}");
        let echoed: Value = passed.json().await.unwrap();
        assert_eq!(echoed["path"], path, "{echoed}");
    }

    // The role admin opens every spelling of the admin path, but never `;`.
    let user = stack
        .state
        .store
        .user_by_email(&email)
        .await
        .unwrap()
        .expect("no such user");
    stack
        .state
        .store
        .grant_role(&user.id, "admin")
        .await
        .unwrap();
    let admin_access = stack.login(&email).await;
    for path in ["/api/Admin/x", "/api/admin", "/api/ADMIN/"] {
        let admitted = stack.get(path, Some(&admin_access), &[]).await;
        assert_eq!(admitted.status(), 200, "{path}");
        let echoed: Value = admitted.json().await.unwrap();
        assert_eq!(echoed["path"], path, "{echoed}");
        assert_eq!(echoed["headers"]["x-user-roles"], "admin,user", "{echoed}");
    }
    assert_eq!(
        stack.raw_get("/api/admin;/x", Some(&admin_access)).await.0,
        400
    );
}

/// Envoy pointed at a port nobody listens on: every protected request is refused with 503, the
/// public routes and the catch-all still answer as configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_check_service_fails_closed() {
    let stack = ExtAuthzStack::start(Backend::Sqlite, Checks::ClosedPort).await;
    let (_, access) = stack.new_user().await;
    for path in ["/api/hello", "/api/admin/x"] {
        for token in [Some(access.as_str()), Some("not.a.jwt"), None] {
            assert_eq!(
                stack.status(path, token).await,
                503,
                "{path} with {token:?}"
            );
        }
    }
    assert_eq!(stack.status("/public/info", None).await, 200);
    assert_eq!(stack.status("/elsewhere", Some(&access)).await, 403);
}

/// `envoy/ext-authz.yaml` keeps `envoy/dev.yaml`'s hardening and CORS policy word for word (the
/// comments aside), so that a change to one that forgets the other fails here.
#[test]
fn the_ext_authz_gateway_keeps_the_dev_gateways_hardening() {
    let read = |name: &str| {
        let text = std::fs::read_to_string(workspace_root().join("envoy").join(name)).unwrap();
        text.lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let section = |yaml: &str, from: &str, to: &str| {
        let start = yaml.find(from).unwrap_or_else(|| panic!("no {from}"));
        let end = start + yaml[start..].find(to).unwrap_or_else(|| panic!("no {to}"));
        yaml[start..end + to.len()].to_owned()
    };
    let dev = read("dev.yaml");
    let ext_authz = read("ext-authz.yaml");
    for (from, to) in [
        (
            "overload_manager:",
            "max_active_downstream_connections: 50000",
        ),
        ("per_connection_buffer_limit_bytes", "stat_prefix: gateway"),
        (
            "use_remote_address: true",
            "initial_connection_window_size: 1048576",
        ),
        (
            "envoy.filters.http.cors:",
            "forward_not_matching_preflights: false",
        ),
    ] {
        assert_eq!(
            section(&dev, from, to),
            section(&ext_authz, from, to),
            "{from}"
        );
    }
}
