//! A fault-injecting UDP relay between servers: each server reaches each peer through a relay
//! socket of its own, so a test can cut links (both ways or one way) while the servers run —
//! network partitions without network namespaces or root. It also records every datagram it
//! carries (when, which way, how large), so benchmarks count the bytes on a link.
//!
//! ```text
//!   server i ──▶ relay(i→j) ──▶ server j      replies: server j ──▶ relay(i→j) ──▶ server i
//!   (i's peer list names relay(i→j) as j)     block(i, j): i's packets to j vanish on every
//!                                             link, wherever they travel; j still reaches i
//! ```

use anyhow::{Context, Result};
use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Default)]
struct Shared {
    /// (from, to): packets from `from` to `to` are dropped.
    blocked: Mutex<HashSet<(u64, u64)>>,
    dropped: AtomicU64,
    stop: AtomicBool,
    /// (from, to) -> datagrams carried.
    carried: Mutex<BTreeMap<(u64, u64), Vec<Carried>>>,
}

/// One datagram a link carried: (unix time in microseconds, UDP payload bytes).
type Carried = (i64, usize);

/// UDP datagrams and their payload bytes on one direction of a link.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Traffic {
    pub datagrams: u64,
    pub bytes: u64,
}

impl Traffic {
    /// Bytes on the wire with the IPv4 and UDP headers (20 + 8 bytes per datagram).
    pub fn wire_bytes(&self) -> u64 {
        self.bytes + 28 * self.datagrams
    }
}

impl Shared {
    fn blocked(&self, from: u64, to: u64) -> bool {
        self.blocked
            .lock()
            .map(|b| b.contains(&(from, to)))
            .unwrap_or(false)
    }
}

/// The relay of a cluster on loopback.
pub struct Relay {
    shared: Arc<Shared>,
    /// (from, to) -> the address `from` sends to, to reach `to`.
    addrs: BTreeMap<(u64, u64), SocketAddr>,
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Relays between every pair of `servers` (id, QUIC port on 127.0.0.1).
    pub fn start(servers: &[(u64, u16)]) -> Result<Relay> {
        let mut links = Vec::new();
        for &(from, _) in servers {
            for &(to, port) in servers {
                if from != to {
                    links.push((from, to, port));
                }
            }
        }
        Relay::links(&links)
    }

    /// Relays each link (from, to, the UDP port of `to` on 127.0.0.1): `from` sends to
    /// [`Relay::addr`]`(from, to)` instead (e.g. a game client to its server's client port).
    pub fn links(links: &[(u64, u64, u16)]) -> Result<Relay> {
        let shared = Arc::new(Shared::default());
        let mut addrs = BTreeMap::new();
        let mut threads = Vec::new();
        for &(from, to, port) in links {
            let socket = UdpSocket::bind("127.0.0.1:0").context("relay socket")?;
            socket.set_read_timeout(Some(Duration::from_millis(50)))?;
            addrs.insert((from, to), socket.local_addr()?);
            let target = SocketAddr::from(([127, 0, 0, 1], port));
            let shared = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("relay-{from}-{to}"))
                    .spawn(move || forward(socket, from, to, target, &shared))?,
            );
        }
        Ok(Relay {
            shared,
            addrs,
            threads,
        })
    }

    /// What travelled from `from` to `to` between the unix times `since` and `until`
    /// (microseconds).
    pub fn traffic(&self, from: u64, to: u64, since: i64, until: i64) -> Traffic {
        let carried = self
            .shared
            .carried
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut t = Traffic::default();
        for (at, bytes) in carried.get(&(from, to)).into_iter().flatten() {
            if (since..=until).contains(at) {
                t.datagrams += 1;
                t.bytes += *bytes as u64;
            }
        }
        t
    }

    /// Where server `from` sends to reach server `to`.
    pub fn addr(&self, from: u64, to: u64) -> SocketAddr {
        self.addrs[&(from, to)]
    }

    /// Drops every packet from `from` to `to` (one way).
    pub fn block(&self, from: u64, to: u64) {
        if let Ok(mut b) = self.shared.blocked.lock() {
            b.insert((from, to));
        }
    }

    /// Cuts every link between the two sides, both ways.
    pub fn partition(&self, a: &[u64], b: &[u64]) {
        for &x in a {
            for &y in b {
                self.block(x, y);
                self.block(y, x);
            }
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        if let Ok(mut b) = self.shared.blocked.lock() {
            b.clear();
        }
    }

    /// Packets dropped so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Forwards the traffic of the link `from -> to` (connections `from` opens to `to`, and
/// their replies) until the relay stops.
fn forward(socket: UdpSocket, from: u64, to: u64, target: SocketAddr, shared: &Shared) {
    let mut buf = vec![0u8; 65_536];
    let mut client: Option<SocketAddr> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        let (n, src) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => continue,
        };
        let (sender, receiver, dest) = if src == target {
            match client {
                Some(c) => (to, from, c),
                None => continue,
            }
        } else {
            client = Some(src);
            (from, to, target)
        };
        if shared.blocked(sender, receiver) {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if socket.send_to(&buf[..n], dest).is_ok() {
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as i64)
                .unwrap_or(0);
            shared
                .carried
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry((sender, receiver))
                .or_default()
                .push((at, n));
        }
    }
}
