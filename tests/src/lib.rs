//! The end-to-end harness: the real auth-api (in process, on SQLite, PostgreSQL or
//! MySQL/MariaDB), the echo upstream, and a real Envoy process loading the real `.wasm`, all on
//! free loopback ports; and a real browser ([`browser`]) for the hosted pages.
//!
//! Nothing here skips: a missing Envoy or `.wasm` is a panic that says how to get it.

pub mod browser;
pub mod envoy;
pub mod gateway;
pub mod replicas;
pub mod stack;

pub use gateway::Gateway;
pub use replicas::{Cluster, ClusterOptions, Replica};
pub use stack::{GatewayKeys, Stack, StackOptions, StaleAfter};
pub use test_support::Backend;
