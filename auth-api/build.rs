//! Two build steps:
//! - rebuilds auth-api when a migration is added or changed: `sqlx::migrate!` embeds
//!   `migrations/` at compile time, and Cargo does not otherwise watch that directory (sqlx's
//!   recommended build script);
//! - compiles `proto/auth/v1/auth.proto` in pure Rust (protox: no `protoc` on the build machines)
//!   into the server and client code of `auth.v1`, and the descriptor set that server reflection
//!   serves.

use std::{env, path::PathBuf};

/// The `auth.v1` messages with a credential in them (kept in step with `grpc::pb`'s `Debug`
/// impls, which the compiler demands: `prost::Message` needs `Debug`).
/// A password, a token, a second-factor code, a challenge, a TOTP secret (or its URI or QR code)
/// or recovery codes.
const SECRET_BEARING: [&str; 16] = [
    "SignupRequest",
    "LoginRequest",
    "CompleteMfaLoginRequest",
    "TokenResponse",
    "RefreshRequest",
    "ExchangeSignInCodeRequest",
    "LogoutRequest",
    "ChangePasswordRequest",
    "EnrollTotpRequest",
    "EnrollTotpResponse",
    "ConfirmTotpRequest",
    "ConfirmTotpResponse",
    "DisableTotpRequest",
    "VerifyEmailRequest",
    "ResetPasswordRequest",
    "ValidateRequest",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../migrations");
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("..");
    let proto_dir = root.join("proto");
    let file = proto_dir.join("auth/v1/auth.proto");
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    let descriptors = protox::compile([&file], [&proto_dir])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out.join("auth_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        // Messages that carry a password or a token get a hand-written `Debug` that leaves the
        // secret out (`grpc::pb`): a derived one would print it wherever a request is logged.
        .skip_debug(SECRET_BEARING.iter().map(|name| format!("auth.v1.{name}")))
        // prost's codec, but a message that does not decode is INVALID_ARGUMENT (`grpc::codec`).
        .codec_path("crate::grpc::codec::Codec")
        // The client is public so that tests, benchmarks and Rust callers use the same types.
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
