//! `Gateway`: a running Envoy and the HTTP client that talks to it, with the requests the tests
//! send through it. [`crate::Stack`] and every [`crate::Replica`] have one; what they ask
//! auth-api directly (not through the gateway) is [`crate::stack`]'s.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::envoy::Envoy;

/// The password of every user [`Gateway::new_user`] makes.
pub const PASSWORD: &str = "correct horse battery staple";

/// An Envoy in front of auth-api and the echo upstream, and a client without redirects.
#[derive(Debug)]
pub struct Gateway {
    /// The Envoy process (its URLs, log and counters).
    pub envoy: Envoy,
    /// An HTTP client without redirects, for requests the methods below do not cover.
    pub client: reqwest::Client,
}

impl Gateway {
    /// The gateway URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.envoy.gateway)
    }

    /// The gateway's `host:port`, for a raw TCP connection.
    pub fn address(&self) -> &str {
        self.envoy.gateway.trim_start_matches("http://")
    }

    /// `POST` JSON to the gateway.
    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("the gateway does not answer")
    }

    /// `POST` to `path` with a bearer token and no body.
    pub async fn post_with_token(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("the gateway does not answer")
    }

    /// `GET` through the gateway with an optional bearer token, on a pooled connection (so the
    /// Envoy worker that answered last is likely to answer again).
    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        send_get(self.client.get(self.url(path)), token).await
    }

    /// `GET` through the gateway with an optional bearer token, on a new connection (so any
    /// Envoy worker may answer).
    pub async fn get_on_new_connection(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::Response {
        let request = self
            .client
            .get(self.url(path))
            .header("connection", "close");
        send_get(request, token).await
    }

    /// The status of `GET path` through the gateway with an optional bearer token, on a pooled
    /// connection.
    pub async fn status(&self, path: &str, token: Option<&str>) -> u16 {
        self.get(path, token).await.status().as_u16()
    }

    /// `POST /auth/refresh` with `refresh_token` (a JSON value, as a login body holds it).
    pub async fn refresh(&self, refresh_token: &Value) -> reqwest::Response {
        self.post("/auth/refresh", &json!({ "refresh_token": refresh_token }))
            .await
    }

    /// Signs up and logs in a fresh user (with [`PASSWORD`]); returns (email, login body).
    ///
    /// # Panics
    /// When either step fails.
    pub async fn new_user(&self) -> (String, Value) {
        let email = format!("e2e-{}@example.com", uuid::Uuid::new_v4().simple());
        let signup = self
            .post(
                "/auth/signup",
                &json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(signup.status(), 201, "signup through the gateway");
        let login = self.login(&email).await;
        (email, login)
    }

    /// Logs `email` in with [`PASSWORD`]: a new session; returns the login body.
    ///
    /// # Panics
    /// When the login does not succeed.
    pub async fn login(&self, email: &str) -> Value {
        let login = self
            .post(
                "/auth/login",
                &json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(login.status(), 200, "login through the gateway");
        login.json().await.expect("login body")
    }

    /// Waits until a request on a protected route is no longer refused for lack of keys.
    ///
    /// # Panics
    /// After 20 s.
    pub async fn wait_for_keys(&self) {
        for _ in 0..200 {
            // A token is needed: without one the answer is 401 whether keys are loaded or not.
            let response = self
                .client
                .get(self.url("/api/ping"))
                .bearer_auth("not.a.jwt")
                .send()
                .await;
            if response.is_ok_and(|r| r.status() != reqwest::StatusCode::SERVICE_UNAVAILABLE) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the gateway never loaded its keys:\n{}", self.envoy.log());
    }

    /// Polls `GET /api/orders` with `token`, each time on a new connection so that every worker
    /// gets asked, until it has answered `status` without a break for `steady`. Returns the last
    /// answer.
    ///
    /// # Panics
    /// When another answer comes after `deadline`.
    pub async fn answers_by(
        &self,
        token: &str,
        status: u16,
        deadline: Instant,
        steady: Duration,
    ) -> reqwest::Response {
        let mut steady_since: Option<Instant> = None;
        loop {
            let answer = self.get_on_new_connection("/api/orders", Some(token)).await;
            let got = answer.status().as_u16();
            if got == status {
                let since = *steady_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= steady {
                    return answer;
                }
            } else {
                steady_since = None;
                let now = Instant::now();
                assert!(
                    now <= deadline,
                    "{}: still {got} {:?} past the deadline, expected {status} from every worker",
                    self.envoy.gateway,
                    now - deadline
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Sends `request` with `token` as its bearer token, if any.
async fn send_get(mut request: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::Response {
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("the gateway does not answer")
}
