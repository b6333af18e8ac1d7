//! Request correlation: the id a request is known by (`x-request-id`, which Envoy sets at the
//! edge) and the W3C trace context it carries (`traceparent`), on one span that wraps the whole
//! request, so that every log line and audit event of the request names them.
//!
//! Both headers are the client's to write (or the gateway's, passing on the client's): they are
//! checked before anything reads them. A request id that is not one short run of visible ASCII
//! is replaced by a fresh UUID, and never logged; a `traceparent` that does not parse strictly
//! is ignored, as W3C Trace Context asks.
//!
//! Owns the request span, the checks, and the `traceparent` of outbound calls
//! ([`outbound_traceparent`]). The log format and the export of spans are [`crate::telemetry`]'s.

use std::fmt;

use axum::{
    extract::MatchedPath,
    http::{HeaderMap, Request},
    middleware::Next,
    response::Response,
};
use opentelemetry::{
    trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState},
    Context,
};
use tower_http::request_id::RequestId;
use tracing::{field::Empty, Instrument as _, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The request id header: Envoy's, which it generates at the edge and forwards.
pub const X_REQUEST_ID: &str = "x-request-id";
/// The W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";
/// Longest request id kept (bytes); a longer one is replaced. Envoy's are UUIDs (36).
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether `value` is usable as a request id: 1 to [`MAX_REQUEST_ID_LEN`] bytes of visible
/// ASCII (no space, no control character: nothing that could forge or break a log line).
pub fn is_valid_request_id(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_LEN
        && value.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// Removes the request's `x-request-id` unless it has exactly one and it is valid
/// ([`is_valid_request_id`]), so that the request-id layer after this one makes a fresh one.
/// The value removed is not logged: it is the client's, and may be anything.
pub fn drop_invalid_request_id<B>(mut request: Request<B>) -> Request<B> {
    let mut values = request.headers().get_all(X_REQUEST_ID).iter();
    let keep = match (values.next(), values.next()) {
        (None, _) => true,
        (Some(one), None) => is_valid_request_id(one.as_bytes()),
        (Some(_), Some(_)) => false,
    };
    if !keep {
        request.headers_mut().remove(X_REQUEST_ID);
    }
    request
}

/// A W3C `traceparent` (Trace Context Level 1, version `00`): the trace a request belongs to,
/// the caller's span in it, and the sampled flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// 16 bytes, never all zero.
    pub trace_id: [u8; 16],
    /// The caller's span id: 8 bytes, never all zero.
    pub parent_id: [u8; 8],
    /// Trace flags; version `00` defines only bit 0, `sampled`.
    pub flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` value strictly: lowercase hex, the ids not all zero, version
    /// `ff` refused, version `00` exactly 55 characters. A later version is read by its
    /// version-`00` prefix, which must end the value or be followed by `-`, as the
    /// specification asks of a parser that meets a version it does not know.
    pub fn parse(value: &[u8]) -> Option<Self> {
        let version = hex_byte(value.get(0..2)?)?;
        let fits = match version {
            0x00 => value.len() == 55,
            0xff => false,
            _ => value.len() == 55 || value.get(55) == Some(&b'-'),
        };
        if !fits || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let mut trace_id = [0; 16];
        hex_into(&value[3..35], &mut trace_id)?;
        let mut parent_id = [0; 8];
        hex_into(&value[36..52], &mut parent_id)?;
        let flags = hex_byte(&value[53..55])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The request's `traceparent`, if it has exactly one and it parses.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let mut values = headers.get_all(TRACEPARENT).iter();
        match (values.next(), values.next()) {
            (Some(one), None) => Self::parse(one.as_bytes()),
            _ => None,
        }
    }

    /// The trace id as 32 lowercase hex digits, as logs and trace stores show it.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    fn span_context(&self) -> SpanContext {
        SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.parent_id),
            TraceFlags::new(self.flags),
            true,
            TraceState::default(),
        )
    }
}

/// The version-`00` form, with the flags that version does not define cleared.
impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.parent_id),
            self.flags & 0x01
        )
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    match pair {
        [hi, lo] => Some(hex_digit(*hi)? << 4 | hex_digit(*lo)?),
        _ => None,
    }
}

fn hex_into(digits: &[u8], out: &mut [u8]) -> Option<()> {
    for (byte, pair) in out.iter_mut().zip(digits.chunks(2)) {
        *byte = hex_byte(pair)?;
    }
    Some(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The span of one HTTP request: `request_id`, `method`, the matched `route` (a template, never
/// the URI, whose query may carry a token) and `trace_id` (of `parent`, the request's
/// `traceparent`, or of the trace it starts). After the request-id layer.
fn http_span<B>(request: &Request<B>, parent: Option<&TraceParent>) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    request_span(request, route, parent)
}

/// The span of one gRPC call: as [`http_span`], the route being the call's path
/// (`/package.Service/Method`), which carries no argument. For `TraceLayer::make_span_with`,
/// after the request-id layer.
pub fn grpc_span<B>(request: &Request<B>) -> Span {
    let parent = TraceParent::from_headers(request.headers());
    request_span(request, request.uri().path(), parent.as_ref())
}

fn request_span<B>(request: &Request<B>, route: &str, parent: Option<&TraceParent>) -> Span {
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or_default();
    // Error level, so that whatever `RUST_LOG` keeps, the span is enabled and a warning or an
    // error of the request carries its id. The level of a span is not printed.
    let span = tracing::error_span!(
        "request",
        request_id,
        method = %request.method(),
        route,
        trace_id = Empty,
    );
    let trace_id = join_trace(&span, parent).or(parent.map(|p| p.trace_id));
    if let Some(trace_id) = trace_id {
        span.record("trace_id", hex(&trace_id));
    }
    span
}

/// With span export on, makes `span` the child of the caller's span (or the root of a new
/// trace) and returns its trace id; without, `None`.
fn join_trace(span: &Span, parent: Option<&TraceParent>) -> Option<[u8; 16]> {
    if let Some(parent) = parent {
        let cx = Context::new().with_remote_span_context(parent.span_context());
        // Fails when no OpenTelemetry layer is installed: nothing to join then.
        span.set_parent(cx).ok()?;
    }
    let cx = span.context();
    let context = cx.span().span_context().clone();
    context.is_valid().then(|| context.trace_id().to_bytes())
}

tokio::task_local! {
    /// The `traceparent` the request being served came with, for outbound calls when spans
    /// are not exported.
    static INCOMING: Option<TraceParent>;
}

/// Middleware of the HTTP listeners, after the request-id layer: serves the request inside its
/// span ([`http_span`]), with its `traceparent` kept for [`outbound_traceparent`]. (What
/// tower-http's `TraceLayer` would add, a clock read and a response classifier per request, is
/// `observe`'s job here.)
pub async fn in_request_span(request: axum::extract::Request, next: Next) -> Response {
    let incoming = TraceParent::from_headers(request.headers());
    let span = http_span(&request, incoming.as_ref());
    with_incoming(incoming, next.run(request))
        .instrument(span)
        .await
}

/// Runs `work` as serving a request that came with `incoming`.
pub(crate) async fn with_incoming<F: std::future::Future>(
    incoming: Option<TraceParent>,
    work: F,
) -> F::Output {
    INCOMING.scope(incoming, work).await
}

/// The `traceparent` to send on an outbound call made now. With span export on: the current
/// span's, so that the callee's spans are children of ours. Without: the one the request came
/// with, passed on unchanged (W3C's rule for a service that does not record the trace); none
/// when it came with none.
pub fn outbound_traceparent() -> Option<TraceParent> {
    let cx = Span::current().context();
    let current = cx.span().span_context().clone();
    if current.is_valid() {
        return Some(TraceParent {
            trace_id: current.trace_id().to_bytes(),
            parent_id: current.span_id().to_bytes(),
            flags: current.trace_flags().to_u8(),
        });
    }
    INCOMING.try_with(|incoming| *incoming).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_of_the_specification_parses_and_prints_back() {
        let parsed = TraceParent::parse(VALID.as_bytes()).unwrap();
        assert_eq!(parsed.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.flags, 1);
        assert_eq!(parsed.to_string(), VALID);
    }

    #[test]
    fn traceparent_that_is_not_strictly_version_00_is_refused() {
        let cases = [
            ("", "empty"),
            (&VALID[..54], "one character short"),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                "trailing dash on 00",
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                "uppercase hex",
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "zero trace id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "zero parent id",
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version ff",
            ),
            (
                "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version not hex",
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "wrong separator",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
                "dash misplaced",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
                "flags not hex",
            ),
            (
                "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "sign in an id",
            ),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
                "later version, no dash",
            ),
        ];
        for (value, reason) in cases {
            assert_eq!(
                TraceParent::parse(value.as_bytes()),
                None,
                "{reason}: {value}"
            );
        }
    }

    #[test]
    fn traceparent_of_a_later_version_is_read_by_its_00_prefix() {
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-the-future-holds";
        let parsed = TraceParent::parse(later.as_bytes()).unwrap();
        assert_eq!(parsed.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        // Passed on as version 00, with only the flag that version defines.
        assert_eq!(parsed.to_string(), VALID);
    }

    #[test]
    fn two_traceparent_headers_are_none() {
        let mut headers = HeaderMap::new();
        headers.append(TRACEPARENT, VALID.parse().unwrap());
        assert!(TraceParent::from_headers(&headers).is_some());
        headers.append(TRACEPARENT, VALID.parse().unwrap());
        assert_eq!(TraceParent::from_headers(&headers), None);
    }

    #[test]
    fn request_ids_of_visible_ascii_up_to_128_bytes_are_kept() {
        let cases: [(&[u8], bool, &str); 7] = [
            (
                b"0d5c3b7e-93f2-4a7f-a1c1-7a5d5a0e6f00",
                true,
                "Envoy's UUID",
            ),
            (
                b"Root=1-67891233-abcdef012345678912345678",
                true,
                "an AWS trace id",
            ),
            (&[b'a'; 128], true, "the longest"),
            (&[b'a'; 129], false, "too long"),
            (b"", false, "empty"),
            (b"two words", false, "a space"),
            (b"caf\xc3\xa9", false, "not ASCII"),
        ];
        for (value, valid, reason) in cases {
            assert_eq!(is_valid_request_id(value), valid, "{reason}");
        }
    }

    #[test]
    fn an_invalid_or_repeated_request_id_is_removed() {
        let request = |ids: &[&[u8]]| {
            let mut builder = Request::builder();
            for id in ids {
                builder = builder.header(
                    X_REQUEST_ID,
                    axum::http::HeaderValue::from_bytes(id).unwrap(),
                );
            }
            drop_invalid_request_id(builder.body(()).unwrap())
        };
        assert!(request(&[b"abc"]).headers().contains_key(X_REQUEST_ID));
        assert!(!request(&[b"a\tb"]).headers().contains_key(X_REQUEST_ID));
        assert!(!request(&[b"abc", b"def"])
            .headers()
            .contains_key(X_REQUEST_ID));
        assert!(request(&[]).headers().get(X_REQUEST_ID).is_none());
    }
}
