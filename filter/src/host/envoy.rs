//! The host's effects as one trait, [`Host`], and its only real implementation, [`Envoy`],
//! which calls `proxy_wasm::hostcalls`. The rest of `host` is generic over [`Host`], so that
//! its effects are unit-tested natively against a recording host; [`Envoy`] is zero-sized, and
//! the generic code compiles to the same direct host calls on wasm.

use std::time::{Duration, SystemTime};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, GrpcStatusCode, LogLevel, MapType, MetricType, Status};

use crate::crypto::{ForeignError, ForeignFunctions};
use crate::poll::{SetError, SharedData};

/// Every call the filter makes into its host, beyond shared data ([`SharedData`]) and foreign
/// functions ([`ForeignFunctions`]). Request headers are the current request's.
pub(crate) trait Host: SharedData + ForeignFunctions + Clone + std::fmt::Debug {
    /// Writes `message` to the host's log at `level`.
    fn log(&self, level: LogLevel, message: &str);

    /// The host's log level now (Envoy's `--log-level`, or as changed through its admin API).
    fn log_level(&self) -> Result<LogLevel, Status>;

    /// The host's clock.
    fn current_time(&self) -> Result<SystemTime, Status>;

    /// The plugin configuration as configured (empty if none).
    fn plugin_configuration(&self) -> Option<Vec<u8>>;

    /// Asks for `on_tick` every `period`.
    fn set_tick_period(&self, period: Duration) -> Result<(), Status>;

    /// Defines a counter named `name` and returns its id.
    fn define_counter(&self, name: &str) -> Result<u32, Status>;

    /// Adds `offset` to the metric `id`.
    fn increment_metric(&self, id: u32, offset: i64) -> Result<(), Status>;

    /// All request headers, in order, values as sent.
    fn request_headers(&self) -> Result<Vec<(String, Vec<u8>)>, Status>;

    /// The first value of one request header, as sent.
    fn request_header(&self, name: &str) -> Result<Option<Vec<u8>>, Status>;

    /// Sets one request header, replacing any value (`set_map_value`).
    fn set_request_header(&self, name: &str, value: &str) -> Result<(), Status>;

    /// Removes one request header (`remove_map_value`).
    fn remove_request_header(&self, name: &str) -> Result<(), Status>;

    /// Answers the request locally over HTTP.
    fn send_http_response(
        &self,
        status: u32,
        headers: Vec<(&str, &str)>,
        body: &[u8],
    ) -> Result<(), Status>;

    /// Answers the request locally with a gRPC status.
    fn send_grpc_response(
        &self,
        status: GrpcStatusCode,
        message: &str,
        metadata: Vec<(&str, &[u8])>,
    ) -> Result<(), Status>;

    /// Sends a body-less request to `cluster`; the call's token.
    fn dispatch_http_call(
        &self,
        cluster: &str,
        headers: Vec<(&str, &str)>,
        timeout: Duration,
    ) -> Result<u32, Status>;

    /// A header of the answer to the call being handled, as sent.
    fn call_response_header(&self, name: &str) -> Result<Option<Vec<u8>>, Status>;

    /// The first `size` bytes of the answer body of the call being handled.
    fn call_response_body(&self, size: usize) -> Result<Option<Vec<u8>>, Status>;
}

/// Envoy, through `proxy_wasm::hostcalls` rather than the SDK's trait defaults, which unwrap
/// more.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Envoy;

impl SharedData for Envoy {
    fn get(&self, key: &str) -> Option<(Option<Vec<u8>>, Option<u32>)> {
        hostcalls::get_shared_data(key).ok()
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(SetError::CasMismatch),
            Err(_) => Err(SetError::Failed),
        }
    }
}

impl ForeignFunctions for Envoy {
    fn call(&self, name: &str, arguments: &[u8]) -> Result<Vec<u8>, ForeignError> {
        match hostcalls::call_foreign_function(name, Some(arguments)) {
            Ok(answer) => Ok(answer.unwrap_or_default()),
            Err(Status::NotFound) => Err(ForeignError::NotFound),
            Err(status) => Err(ForeignError::Failed(format!("{status:?}"))),
        }
    }
}

impl Host for Envoy {
    fn log(&self, level: LogLevel, message: &str) {
        // A failed log call has nowhere else to be reported.
        let _ = hostcalls::log(level, message);
    }

    fn log_level(&self) -> Result<LogLevel, Status> {
        hostcalls::get_log_level()
    }

    fn current_time(&self) -> Result<SystemTime, Status> {
        hostcalls::get_current_time()
    }

    fn plugin_configuration(&self) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
    }

    fn set_tick_period(&self, period: Duration) -> Result<(), Status> {
        hostcalls::set_tick_period(period)
    }

    fn define_counter(&self, name: &str) -> Result<u32, Status> {
        hostcalls::define_metric(MetricType::Counter, name)
    }

    fn increment_metric(&self, id: u32, offset: i64) -> Result<(), Status> {
        hostcalls::increment_metric(id, offset)
    }

    fn request_headers(&self) -> Result<Vec<(String, Vec<u8>)>, Status> {
        hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
    }

    fn request_header(&self, name: &str) -> Result<Option<Vec<u8>>, Status> {
        // Bytes, not `get_map_value`: the SDK unwraps that one's UTF-8.
        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
    }

    fn set_request_header(&self, name: &str, value: &str) -> Result<(), Status> {
        hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value))
    }

    fn remove_request_header(&self, name: &str) -> Result<(), Status> {
        hostcalls::remove_map_value(MapType::HttpRequestHeaders, name)
    }

    fn send_http_response(
        &self,
        status: u32,
        headers: Vec<(&str, &str)>,
        body: &[u8],
    ) -> Result<(), Status> {
        hostcalls::send_http_response(status, headers, Some(body))
    }

    fn send_grpc_response(
        &self,
        status: GrpcStatusCode,
        message: &str,
        metadata: Vec<(&str, &[u8])>,
    ) -> Result<(), Status> {
        hostcalls::send_grpc_response(status, Some(message), metadata)
    }

    fn dispatch_http_call(
        &self,
        cluster: &str,
        headers: Vec<(&str, &str)>,
        timeout: Duration,
    ) -> Result<u32, Status> {
        hostcalls::dispatch_http_call(cluster, headers, None, vec![], timeout)
    }

    fn call_response_header(&self, name: &str) -> Result<Option<Vec<u8>>, Status> {
        // Bytes, not `get_map_value`: the SDK unwraps that one's UTF-8, and a response header
        // is not ours to trust.
        hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, name)
    }

    fn call_response_body(&self, size: usize) -> Result<Option<Vec<u8>>, Status> {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size)
    }
}
