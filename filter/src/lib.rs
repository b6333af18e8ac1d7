//! An Envoy proxy-wasm HTTP filter that verifies JWT access tokens locally on every request,
//! enforces route rules, forwards the caller's identity upstream as headers, and refuses
//! everything else with an RFC 6750 answer.
//!
//! The logic lives in private, pure modules tested natively (`config`, `policy`, `keys`,
//! `identity`, `cache`, `crypto`, `poll`, `revocations`, `response`, `decide`, `stats`); only
//! `host` touches the proxy-wasm SDK, behind a small `Host` trait so that its effects are tested
//! natively too.
//! The crate exports only what its benches and fuzz targets drive natively:
//! [`FilterConfig::parse`], and one request's [`decide`] with its inputs and [`Decision`].
// Tests may unwrap and index; the filter itself must not be able to panic, and fails closed.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

/// What unit tests return: they use `?`, so that no code in this crate unwraps, tests included.
#[cfg(test)]
type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

mod cache;
mod config;
mod crypto;
mod decide;
mod feed;
mod host;
mod identity;
mod keys;
mod policy;
mod poll;
mod response;
mod revocations;
mod stats;

pub use cache::TokenCache;
pub use config::{ConfigError, FilterConfig};
pub use decide::{
    decide, AllowedBy, Decision, HeadersToRemove, HeadersToSet, RequestView, RevocationCheck,
    Verification,
};
pub use response::{DenyReason, DenyResponse};
pub use stats::counter_names;

/// The revocation set and the feed's pages, for `benches/revocations.rs` only.
#[doc(hidden)]
pub mod bench_support {
    pub use crate::revocations::{map_heap_bytes, IdClaim, Page, Revocations, TokenIds};
}

proxy_wasm::main! {{
    std::panic::set_hook(Box::new(host::log_panic));
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(host::Root::new()));
}}
