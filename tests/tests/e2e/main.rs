//! End-to-end tests: the real auth-api, a real Envoy (2 workers) loading the real `.wasm`, and
//! the echo upstream. Each test starts its own stack on free ports.

mod algorithms;
mod attack;
mod config;
mod edge;
mod flow;
mod forged;
mod interop;
mod keys;
mod replicas;
mod revocation;
mod rotation;
