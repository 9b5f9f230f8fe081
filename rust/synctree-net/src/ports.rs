//! Ports for tests and local clusters: free now, and outside the kernel's ephemeral range,
//! so a socket another process binds to port 0 meanwhile (a QUIC client, an outgoing TCP
//! connection) cannot take one between its choice and its use.

use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

/// Ports are chosen in `BASE..BASE + SPAN` (Linux hands out 32768-60999 for port 0).
const BASE: u32 = 20_000;
const SPAN: u32 = 12_000;

/// A port on 127.0.0.1 free now for UDP (and for TCP too, with `tcp`). Each process walks
/// the range from its own starting point, so concurrent test processes rarely meet.
pub fn unused_port(tcp: bool) -> std::io::Result<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (BASE + (start + n) % SPAN) as u16;
        let udp = UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if udp && (!tcp || TcpListener::bind(("127.0.0.1", port)).is_ok()) {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free port in {BASE}..{}", BASE + SPAN),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_distinct_and_not_ephemeral() {
        let a = unused_port(true).unwrap();
        let b = unused_port(false).unwrap();
        assert_ne!(a, b);
        for p in [a, b] {
            assert!((20_000..32_000).contains(&p), "{p}");
            UdpSocket::bind(("127.0.0.1", p)).expect("still free");
        }
    }
}
