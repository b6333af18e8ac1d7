//! An Envoy proxy-wasm HTTP filter that verifies JWT access tokens locally on every request,
//! enforces route rules, forwards the caller's identity upstream as headers, and refuses
//! everything else with an RFC 6750 answer.
//!
//! The logic lives in pure modules tested natively ([`config`], [`policy`], [`keys`],
//! [`cache`], [`crypto`], [`response`], [`decide`]); only `host` touches the proxy-wasm SDK.
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

pub mod cache;
pub mod config;
pub mod crypto;
pub mod decide;
mod host;
pub mod keys;
pub mod policy;
pub mod poll;
pub mod response;
pub mod revocations;

proxy_wasm::main! {{
    std::panic::set_hook(Box::new(host::log_panic));
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(host::Root::new()));
}}
