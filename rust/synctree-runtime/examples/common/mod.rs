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

/// Logs to stderr when `RUST_LOG` is set (e.g. `RUST_LOG=openraft=info`).
#[allow(dead_code)]
pub fn log_if_asked() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
}
