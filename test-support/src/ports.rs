//! Ports chosen before the server that will listen on them starts (Envoy, whose URL auth-api's
//! configuration must name first; an SMTP sink started later; a provider that is down).
//!
//! A port the system hands out for `bind(…:0)` comes from the ephemeral range, which is also
//! where every outgoing connection takes its local port: between choosing such a port and Envoy
//! binding it, any test's client connection may take it (CI saw Envoy fail to start so). Ports
//! below that range are taken only by a listener that names them, so one picked at random there
//! that binds now stays free unless another test picks the same one in the same moment.
//!
//! xtask compiles this file too (`#[path]`), for the auth-api processes it starts beside
//! parallel work (the contract passes, the benchmarks): std and `rand_core` only.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::ops::Range;

use rand_core::{OsRng, RngCore as _};

/// Below Linux's default ephemeral range (32768–60999) and above the well-known and most
/// registered services' ports.
const PICKED_FROM: Range<u16> = 20_000..32_768;

/// How many random ports are tried before giving up.
const ATTEMPTS: usize = 100;

/// A port on 127.0.0.1 that nothing listens on now, outside the ephemeral range.
///
/// # Panics
/// When none of [`ATTEMPTS`] random ports binds.
pub fn free_port() -> u16 {
    free_port_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// A port on `ip` that nothing listens on now, outside the ephemeral range.
///
/// # Panics
/// When none of [`ATTEMPTS`] random ports binds.
pub fn free_port_on(ip: IpAddr) -> u16 {
    let span = u32::from(PICKED_FROM.end - PICKED_FROM.start);
    (0..ATTEMPTS)
        .filter_map(|_| u16::try_from(OsRng.next_u32() % span).ok())
        .map(|offset| PICKED_FROM.start + offset)
        .find(|&port| TcpListener::bind((ip, port)).is_ok())
        .unwrap_or_else(|| panic!("no free port on {ip} in {PICKED_FROM:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_picked_port_is_outside_the_ephemeral_range_and_binds() {
        let port = free_port();
        assert!(PICKED_FROM.contains(&port), "{port}");
        TcpListener::bind(("127.0.0.1", port)).expect("the picked port binds");
    }
}
