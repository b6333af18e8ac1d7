//! Log set-up: `RUST_LOG` filters (default `info`), `AUTH_LOG_FORMAT` picks text or JSON, and
//! `AUTH_OTLP_ENDPOINT`, when set, exports the request spans over OTLP.
//!
//! Nothing the service logs contains a password, token or key: request bodies are never logged,
//! secret-holding types redact themselves in `Debug`, and the request log records the matched
//! route template rather than the URI (which could carry `?access_token=`).
//!
//! Every line of a request carries its span's fields (`request_id`, `trace_id`, see
//! [`crate::correlation`]): in text as the span's prefix, in JSON in `span` (the innermost) and
//! `spans` (all of them, outermost first).

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{
    trace::{SdkTracer, SdkTracerProvider},
    Resource,
};
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::{
    fmt, layer::SubscriberExt as _, registry::LookupSpan, util::SubscriberInitExt as _, EnvFilter,
    Layer,
};
use url::Url;

use crate::config::LogFormat;

/// The `service.name` of the exported spans.
pub const SERVICE_NAME: &str = "auth-api";
/// The `RUST_LOG` directive that keeps the request span (`crate::correlation`, error level).
const REQUEST_SPAN_DIRECTIVE: &str = "auth_api::correlation=error";
/// Time allowed for one export to the OTLP receiver.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// What [`init`] set up that needs an end: the span exporter, whose last batch is sent by
/// [`Telemetry::shutdown`].
#[derive(Debug)]
#[must_use = "call shutdown at exit so that the last spans are exported"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans not yet exported and stops the exporter (at most its export timeout).
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            // Blocking: the export runs on the batch processor's thread and waits for the gRPC
            // channel, whose task needs this runtime to be free.
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
    }
}

/// Installs the global subscriber; a second call is a no-op. With `otlp_endpoint`, spans go to
/// that OTLP/gRPC receiver too; must then be called inside the Tokio runtime.
pub fn init(format: LogFormat, otlp_endpoint: Option<&Url>) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"))
        // The request span whatever `RUST_LOG` says (`auth_api::service=info` alone would drop
        // it): every line a request causes must name the request. A span alone prints nothing.
        .add_directive(REQUEST_SPAN_DIRECTIVE.parse()?);
    let provider = otlp_endpoint.map(tracer_provider).transpose()?;
    let lines = match format {
        LogFormat::Text => fmt::layer().with_writer(std::io::stderr).boxed(),
        LogFormat::Json => json_lines(std::io::stderr).boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .with(provider.as_ref().map(otel_layer))
        .try_init();
    Ok(Telemetry { provider })
}

/// The JSON line format of `AUTH_LOG_FORMAT=json`: one object per event, its fields at the top
/// level, the fields of its spans under `span` and `spans`.
pub fn json_lines<S, W>(writer: W) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(true)
        .with_writer(writer)
}

/// A tracer provider exporting to the OTLP/gRPC receiver at `endpoint` in batches, spans named
/// by `service.name` [`SERVICE_NAME`]. Inside the Tokio runtime (the gRPC channel's task).
pub fn tracer_provider(endpoint: &Url) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.as_str())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| anyhow::anyhow!("AUTH_OTLP_ENDPOINT: span exporter: {e}"))?;
    Ok(SdkTracerProvider::builder()
        // Every request, whatever the caller's sampled flag says: a client sending `traceparent`
        // with flags 00 would otherwise keep its own requests (its failed logins among them)
        // out of the traces. Sample at the collector.
        .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(SERVICE_NAME).build())
        .build())
}

/// The layer that turns tracing spans into OpenTelemetry spans of `provider`: auth-api's own at
/// `info` and above, whatever `RUST_LOG` lets the log lines show (at `debug`, sqlx's statements
/// and the exporter's own gRPC spans would be exported too).
pub fn otel_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let ours =
        tracing_subscriber::filter::Targets::new().with_target("auth_api", tracing::Level::INFO);
    let layer: OpenTelemetryLayer<S, SdkTracer> =
        tracing_opentelemetry::layer().with_tracer(provider.tracer(SERVICE_NAME));
    layer.with_filter(ours)
}
