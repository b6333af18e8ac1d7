//! Prometheus metrics, one registry per app (so tests never share counters).

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Labels of `http_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The matched route template, e.g. `/login`, or `unmatched`.
    pub route: String,
    /// Request method.
    pub method: String,
    /// Response status code.
    pub status: u16,
}

/// Labels of `grpc_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    /// The RPC, e.g. `auth.v1.AuthService/Login` or `envoy.service.auth.v3.Authorization/Check`.
    pub method: &'static str,
    /// The status code answered, e.g. `OK`, `UNAUTHENTICATED`; for `Check`, the code of the
    /// `CheckResponse` (what Envoy acts on).
    pub code: &'static str,
}

/// Labels of the outcome counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// e.g. `success`, `invalid_credentials`, `reuse_detected`.
    pub result: &'static str,
}

/// Labels of `auth_email_sent_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EmailLabels {
    /// What the message is for, e.g. `verify_email`.
    pub kind: String,
    /// `sent`, `retry` (failed, tried again later), `dead` (failed, given up),
    /// `sent_after_lease` / `failed_after_lease` (the claim had ended: it may go twice), or
    /// `limited` (never queued: the recipient's hourly limit for the kind was reached).
    pub result: &'static str,
}

/// Labels of `auth_email_outbox`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutboxLabels {
    /// `pending` or `dead`.
    pub status: &'static str,
}

/// Every metric the service exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    grpc_requests: Family<GrpcLabels, Counter>,
    logins: Family<OutcomeLabels, Counter>,
    refreshes: Family<OutcomeLabels, Counter>,
    signups: Family<OutcomeLabels, Counter>,
    external_sign_ins: Family<OutcomeLabels, Counter>,
    emails_sent: Family<EmailLabels, Counter>,
    outbox: Family<OutboxLabels, Gauge>,
    /// Requests waiting for a bcrypt slot.
    pub hash_waiting: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            http_requests.clone(),
        );
        let grpc_requests = Family::<GrpcLabels, Counter>::default();
        registry.register(
            "grpc_requests",
            "gRPC calls by method and status code",
            grpc_requests.clone(),
        );
        let logins = Family::<OutcomeLabels, Counter>::default();
        registry.register("auth_login", "Login attempts by result", logins.clone());
        let refreshes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "auth_refresh",
            "Refresh attempts by result",
            refreshes.clone(),
        );
        let signups = Family::<OutcomeLabels, Counter>::default();
        registry.register("auth_signup", "Signups by result", signups.clone());
        let external_sign_ins = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "auth_external_sign_in",
            "Sign-ins through an external provider finished at /callback, by result",
            external_sign_ins.clone(),
        );
        let emails_sent = Family::<EmailLabels, Counter>::default();
        registry.register(
            "auth_email_sent",
            "Email delivery attempts from the outbox, by kind and result",
            emails_sent.clone(),
        );
        let outbox = Family::<OutboxLabels, Gauge>::default();
        registry.register(
            "auth_email_outbox",
            "Messages in the email outbox by status (pending or dead), as last counted",
            outbox.clone(),
        );
        let hash_waiting = Gauge::default();
        registry.register(
            "auth_hash_queue_waiting",
            "Requests waiting for a password-hash slot",
            hash_waiting.clone(),
        );
        Self {
            registry,
            http_requests,
            grpc_requests,
            logins,
            refreshes,
            signups,
            external_sign_ins,
            emails_sent,
            outbox,
            hash_waiting,
        }
    }
}

impl Metrics {
    /// Counts one HTTP response.
    pub fn http_request(&self, labels: HttpLabels) {
        self.http_requests.get_or_create(&labels).inc();
    }

    /// Counts one gRPC call.
    pub fn grpc_request(&self, labels: GrpcLabels) {
        self.grpc_requests.get_or_create(&labels).inc();
    }

    /// Counts one login by result.
    pub fn login(&self, result: &'static str) {
        self.logins.get_or_create(&OutcomeLabels { result }).inc();
    }

    /// Counts one refresh by result.
    pub fn refresh(&self, result: &'static str) {
        self.refreshes
            .get_or_create(&OutcomeLabels { result })
            .inc();
    }

    /// Counts one signup by result.
    pub fn signup(&self, result: &'static str) {
        self.signups.get_or_create(&OutcomeLabels { result }).inc();
    }

    /// Counts one external sign-in by result: `success` or the refusal's error code.
    pub fn external_sign_in(&self, result: &'static str) {
        self.external_sign_ins
            .get_or_create(&OutcomeLabels { result })
            .inc();
    }

    /// Counts one delivery attempt of an email of `kind` by result.
    pub fn email_sent(&self, kind: &str, result: &'static str) {
        self.emails_sent
            .get_or_create(&EmailLabels {
                kind: kind.to_owned(),
                result,
            })
            .inc();
    }

    /// Sets the outbox gauge.
    pub fn outbox(&self, pending: i64, dead: i64) {
        self.outbox
            .get_or_create(&OutboxLabels { status: "pending" })
            .set(pending);
        self.outbox
            .get_or_create(&OutboxLabels { status: "dead" })
            .set(dead);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
