//! auth-api: signup, login, rotating refresh tokens, logout, validation, and the key ring that
//! the gateway filter polls. `main.rs` only parses the command line; everything is here so that
//! tests drive the same code.

pub mod cli;
pub mod clock;
pub mod config;
pub mod correlation;
pub mod cors;
pub mod devices;
pub mod domain;
pub mod error;
pub mod extract;
pub mod grpc;
pub mod kek;
pub mod keyring;
pub mod mail;
pub mod metrics;
pub mod oidc;
pub mod pages;
pub mod passwords;
pub mod routes;
pub mod server;
pub mod service;
pub mod signatures;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod throttle;
pub mod tokens;

pub use config::Config;
pub use error::{ApiError, Result};
pub use routes::{internal_router, router};
pub use startup::App;
pub use state::AppState;
