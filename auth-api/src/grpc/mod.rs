//! The gRPC front end (`AUTH_GRPC_LISTEN`): `auth.v1.AuthService` for internal services, Envoy's
//! `ext_authz` `Authorization/Check` for gateways that cannot load the wasm filter, the standard
//! health service and server reflection, on one HTTP/2 listener.
//!
//! Both services are adapters of [`crate::service`], as the HTTP routes are: the same operations,
//! the same per-address limits, the same errors (an [`ApiError`](crate::ApiError) becomes a
//! status in [`status`]), so the three front ends cannot disagree.

mod auth_service;
mod ext_authz;
mod listener;
mod metadata;
mod status;

pub use ext_authz::IDENTITY_HEADERS;
pub use listener::serve;

/// `auth.v1`, generated from `proto/auth/v1/auth.proto` (server and client).
#[allow(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    clippy::all,
    clippy::pedantic
)]
pub mod pb {
    tonic::include_proto!("auth.v1");

    /// The descriptors of `auth.v1` (and what it imports), served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/auth_v1_descriptor.bin"));
}

/// Largest `auth.v1` message accepted, as the HTTP API's body limit.
pub const MAX_MESSAGE_BYTES: usize = crate::routes::MAX_BODY_BYTES;

/// Largest `ext_authz` `CheckRequest` accepted: the checked request's headers travel in it, and
/// Envoy's own default cap on request headers is 60 KiB.
pub const MAX_CHECK_REQUEST_BYTES: usize = 128 * 1024;
