//! Request correlation (issue 16): the `x-request-id` a request comes with (Envoy's) or is given,
//! returned on the response and on every log line and audit event of the request, in the JSON
//! form `AUTH_LOG_FORMAT=json` writes; the W3C `traceparent`'s trace id on them too; and the
//! request's span exported over OTLP when `AUTH_OTLP_ENDPOINT` is set.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    body::Body,
    http::{header, HeaderValue, Request},
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        trace_service_server::{TraceService, TraceServiceServer},
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    },
    common::v1::{any_value, KeyValue},
    trace::v1::Span,
};
use serde_json::{json, Value};
use tracing_subscriber::layer::SubscriberExt as _;

use crate::{
    audit::Captured,
    helpers::{Backend, TestApp, TestResponse, TestUser},
};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// A login with these extra headers.
async fn login_with(app: &TestApp, user: &TestUser, headers: &[(&str, &[u8])]) -> TestResponse {
    let mut request = Request::post("/login").header(header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(*name, HeaderValue::from_bytes(value).unwrap());
    }
    let body = json!({"email": user.email, "password": user.password}).to_string();
    app.request(request.body(Body::from(body)).unwrap()).await
}

/// The JSON lines written since `from` (a length of [`Captured::text`]).
fn lines_since(captured: &Captured, from: usize) -> Vec<Value> {
    captured.text()[from..]
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// A field of the line's outermost span: the request span.
fn request_field<'a>(line: &'a Value, field: &str) -> Option<&'a str> {
    line["spans"].get(0)?.get(field)?.as_str()
}

fn is_uuid_v4(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok_and(|u| u.get_version_num() == 4)
}

#[tokio::test]
async fn a_request_id_sent_is_returned_and_on_every_log_line_and_audit_event_of_the_request() {
    // Arrange: the service's JSON lines at debug level, for this thread (current-thread runtime).
    let (captured, _guard) = crate::audit::json_logs();
    let app = TestApp::spawn(Backend::Sqlite).await;
    let user = TestUser::random();
    user.register(&app).await;
    let request_id = format!("envoy-{}", uuid::Uuid::new_v4());
    let from = captured.text().len();

    // Act
    let response = login_with(&app, &user, &[("x-request-id", request_id.as_bytes())]).await;

    // Assert: returned, and on each line the login wrote, the audit event and the request line
    // among them.
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.header("x-request-id"), Some(request_id.as_str()));
    let lines = lines_since(&captured, from);
    for line in &lines {
        assert_eq!(
            request_field(line, "request_id"),
            Some(request_id.as_str()),
            "{line}"
        );
        assert_eq!(request_field(line, "route"), Some("/login"), "{line}");
        assert_eq!(request_field(line, "method"), Some("POST"), "{line}");
    }
    let audit = lines.iter().filter(|l| l["event"] == "login").count();
    let request_lines = lines.iter().filter(|l| l["message"] == "request").count();
    assert_eq!((audit, request_lines), (1, 1), "{lines:#?}");
}

#[tokio::test]
async fn a_request_without_an_id_gets_a_fresh_uuid() {
    let app = TestApp::spawn(Backend::Sqlite).await;

    let first = app.get("/healthz", None).await;
    let second = app.get("/healthz", None).await;

    let ids = [first.header("x-request-id"), second.header("x-request-id")];
    assert!(ids.iter().all(|id| id.is_some_and(is_uuid_v4)), "{ids:?}");
    assert_ne!(ids[0], ids[1]);
}

#[tokio::test]
async fn an_unusable_request_id_is_replaced_by_a_fresh_one_and_never_logged() {
    let (captured, _guard) = crate::audit::json_logs();
    let app = TestApp::spawn(Backend::Sqlite).await;
    let user = TestUser::random();
    user.register(&app).await;
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let long = format!("{marker}{}", "a".repeat(128 - marker.len() + 1));
    let space = format!("{marker} forged=1");
    let tab = format!("{marker}\tforged=1");
    let latin = [marker.as_bytes(), "-café".as_bytes()].concat();
    type Headers<'a> = Vec<(&'a str, &'a [u8])>;
    let cases: [(Headers<'_>, &str); 5] = [
        (vec![("x-request-id", long.as_bytes())], "longer than 128"),
        (vec![("x-request-id", space.as_bytes())], "a space"),
        (vec![("x-request-id", tab.as_bytes())], "a tab"),
        (vec![("x-request-id", &latin)], "not ASCII"),
        (
            vec![
                ("x-request-id", marker.as_bytes()),
                ("x-request-id", b"another-one"),
            ],
            "two ids",
        ),
    ];
    for (headers, reason) in cases {
        let from = captured.text().len();

        let response = login_with(&app, &user, &headers).await;

        assert_eq!(response.status, 200, "{reason}: {}", response.body);
        let id = response.header("x-request-id").unwrap_or_default();
        assert!(is_uuid_v4(id), "{reason}: {id:?}");
        let lines = lines_since(&captured, from);
        assert!(!lines.is_empty(), "{reason}");
        for line in &lines {
            assert_eq!(
                request_field(line, "request_id"),
                Some(id),
                "{reason}: {line}"
            );
        }
    }
    let text = captured.text();
    assert!(!text.contains(&marker), "a refused id was logged:\n{text}");
}

#[tokio::test]
async fn the_traceparent_trace_id_is_on_the_log_lines_and_a_malformed_one_is_ignored() {
    let (captured, _guard) = crate::audit::json_logs();
    let app = TestApp::spawn(Backend::Sqlite).await;
    let user = TestUser::random();
    user.register(&app).await;
    let uppercase = TRACEPARENT.to_uppercase();
    let cases: [(&[u8], Option<&str>, &str); 3] = [
        (TRACEPARENT.as_bytes(), Some(TRACE_ID), "valid"),
        (uppercase.as_bytes(), None, "uppercase hex"),
        (
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            None,
            "zero trace id",
        ),
    ];
    for (traceparent, trace_id, reason) in cases {
        let from = captured.text().len();

        let response = login_with(&app, &user, &[("traceparent", traceparent)]).await;

        assert_eq!(response.status, 200, "{reason}: {}", response.body);
        let lines = lines_since(&captured, from);
        assert!(lines.iter().any(|l| l["event"] == "login"), "{reason}");
        for line in &lines {
            assert_eq!(
                request_field(line, "trace_id"),
                trace_id,
                "{reason}: {line}"
            );
        }
    }
}

/// A span received, with the `service.name` of its resource.
type Received = (Option<String>, Span);

/// The receiving end of OTLP/gRPC, as a collector runs it: every span exported.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|r| string_attribute(&r.attributes, "service.name"));
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    })
}

#[tokio::test]
async fn the_request_span_is_exported_over_otlp_in_the_callers_trace() {
    // Arrange: an OTLP/gRPC receiver on a free port, and the service's exporter pointed at it
    // (telemetry.rs, as `AUTH_OTLP_ENDPOINT` sets it up), for this thread.
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream_of(listener)),
    );
    let endpoint = url::Url::parse(&format!("http://{address}")).unwrap();
    let provider = auth_api::telemetry::tracer_provider(&endpoint).unwrap();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::registry()
        .with(auth_api::telemetry::json_lines(move || writer.clone()))
        .with(auth_api::telemetry::otel_layer(&provider));
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = TestApp::spawn(Backend::Sqlite).await;
    let request_id = format!("envoy-{}", uuid::Uuid::new_v4());

    // Act
    let request = Request::get("/healthz")
        .header("x-request-id", &request_id)
        .header("traceparent", TRACEPARENT)
        .body(Body::empty())
        .unwrap();
    let response = app.request(request).await;
    // The export runs on the batch processor's thread; the gRPC channel's task needs this one.
    let flush = tokio::task::spawn_blocking({
        let provider = provider.clone();
        move || provider.force_flush()
    });
    flush.await.unwrap().unwrap();

    // Assert: the request's span, a child of the caller's span in the caller's trace, named by
    // service and request id; and the log lines name the same trace.
    assert_eq!(response.status, 200);
    let spans = receiver.0.lock().unwrap().clone();
    let (service, span) = spans
        .iter()
        .find(|(_, s)| string_attribute(&s.attributes, "request_id").as_ref() == Some(&request_id))
        .unwrap_or_else(|| panic!("no span with the request id: {spans:#?}"));
    assert_eq!(service.as_deref(), Some("auth-api"));
    assert_eq!(span.name, "request");
    assert_eq!(hex(&span.trace_id), TRACE_ID);
    assert_eq!(hex(&span.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(
        string_attribute(&span.attributes, "route").as_deref(),
        Some("/healthz")
    );
    let text = captured.text();
    assert!(
        text.contains(&format!("\"trace_id\":\"{TRACE_ID}\"")),
        "{text}"
    );
    let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
}

fn tokio_stream_of(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_grpc_call_gets_its_request_id_back_in_the_response_metadata() {
    let (db, url) = test_support::TestDb::create(Backend::Sqlite).await;
    let app = auth_api::App::build(crate::helpers::test_config(url))
        .await
        .unwrap();
    let address = app.grpc_addr().unwrap().expect("the gRPC listener is on");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let check = |id: Option<&str>| {
        let mut request = tonic::Request::new(tonic_health::pb::HealthCheckRequest::default());
        if let Some(id) = id {
            request
                .metadata_mut()
                .insert("x-request-id", id.parse().unwrap());
        }
        request
    };

    let sent = health.check(check(Some("envoy-grpc-1"))).await.unwrap();
    let made = health.check(check(None)).await.unwrap();
    let replaced = health.check(check(Some(&"a".repeat(129)))).await.unwrap();

    let id = |r: &tonic::Response<_>| {
        r.metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(id(&sent).as_deref(), Some("envoy-grpc-1"));
    assert!(id(&made).is_some_and(|id| is_uuid_v4(&id)), "{made:?}");
    assert!(
        id(&replaced).is_some_and(|id| is_uuid_v4(&id)),
        "{replaced:?}"
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    drop(db);
}
