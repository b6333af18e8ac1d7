//! The end-to-end harness: the real auth-api (in process, on SQLite or PostgreSQL), the echo
//! upstream, and a real Envoy process loading the real `.wasm`, all on free loopback ports.
//!
//! Nothing here skips: a missing Envoy or `.wasm` is a panic that says how to get it.

pub mod envoy;
pub mod stack;

pub use stack::{GatewayKeys, Stack, StackOptions};
pub use test_support::Backend;
