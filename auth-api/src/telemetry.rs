//! Log set-up: `RUST_LOG` filters (default `info`), `AUTH_LOG_FORMAT` picks text or JSON.
//!
//! Nothing the service logs contains a password, token or key: request bodies are never logged,
//! secret-holding types redact themselves in `Debug`, and the request log records the matched
//! route template rather than the URI (which could carry `?access_token=`).

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Installs the global subscriber; a second call is a no-op.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
