//! Helpers shared by the runtime examples.

/// `n` UDP ports free on loopback right now (bound, read, released), so each server can be
/// told its peers' addresses before any of them starts.
pub fn free_udp_ports(n: usize) -> std::io::Result<Vec<u16>> {
    (0..n)
        .map(|_| {
            std::net::UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .map(|a| a.port())
        })
        .collect()
}
