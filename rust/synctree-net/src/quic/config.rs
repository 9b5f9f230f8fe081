//! Configuration of a [`QuicTransport`](super::QuicTransport) and the quinn settings derived
//! from it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{AckFrequencyConfig, EndpointConfig, IdleTimeout, TransportConfig, VarInt};
use quinn_proto::HashedConnectionIdGenerator;
use rustls::pki_types::PrivateKeyDer;

use crate::frame::DEFAULT_MAX_FRAME_BYTES;
use crate::{tls, NodeId, StartError, TlsError, TlsMaterial};

/// Streams a peer may have open towards us at once (one per request in flight).
const MAX_CONCURRENT_STREAMS: u32 = 4096;

/// Everything a QUIC transport needs to start.
#[derive(Debug, Clone)]
pub struct QuicConfig {
    /// This node's id; must match the node name in `tls`.
    pub id: NodeId,
    /// UDP address to listen on (port 0 picks a free port; see `QuicTransport::local_addr`).
    pub listen: SocketAddr,
    /// Initial peer addresses; more can be added with `Transport::set_peer`.
    pub peers: Vec<(NodeId, SocketAddr)>,
    /// Cluster CA plus this node's certificate and key.
    pub tls: TlsMaterial,
    /// Largest request or response body accepted (default 64 MiB). A peer sending more gets its
    /// connection closed.
    pub max_frame_bytes: usize,
    /// How often an idle connection is pinged (default 1 s). Keeps NATs open and lets a dead or
    /// restarted peer be noticed without waiting for a request.
    pub keep_alive: Duration,
    /// A connection with no traffic for this long is dropped (default 10 s).
    pub idle_timeout: Duration,
    /// A connect attempt (QUIC + TLS handshake) is abandoned after this long (default 500 ms),
    /// and the next request starts a fresh one. Bounds how long a peer that comes back up
    /// stays unnoticed: a long-running attempt retransmits its first packet ever more rarely,
    /// and a restarted follower that hears nothing from its leader stands for election.
    pub connect_timeout: Duration,
}

impl QuicConfig {
    /// A config with no initial peers and default limits.
    pub fn new(id: NodeId, listen: SocketAddr, tls: TlsMaterial) -> Self {
        QuicConfig {
            id,
            listen,
            peers: Vec::new(),
            tls,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_millis(500),
        }
    }

    /// Adds initial peers.
    pub fn with_peers(mut self, peers: impl IntoIterator<Item = (NodeId, SocketAddr)>) -> Self {
        self.peers.extend(peers);
        self
    }

    /// Sets the largest accepted body.
    pub fn with_max_frame_bytes(mut self, max: usize) -> Self {
        self.max_frame_bytes = max;
        self
    }
}

/// QUIC transport parameters, shared by both directions of every connection.
fn transport_config(cfg: &QuicConfig) -> Result<TransportConfig, StartError> {
    let mut transport = TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_CONCURRENT_STREAMS))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .keep_alive_interval(Some(cfg.keep_alive))
        .max_idle_timeout(Some(IdleTimeout::try_from(cfg.idle_timeout).map_err(
            |_| {
                StartError::Config(format!(
                    "idle timeout {:?} is out of range",
                    cfg.idle_timeout
                ))
            },
        )?))
        // Servers talk over LANs or between nearby data centres: the RFC's 333 ms guess before
        // the first RTT sample only delays handshake loss recovery (a lost Initial to a peer
        // that is just restarting is resent after ~3x this, then twice as late each time).
        .initial_rtt(Duration::from_millis(20));
    // Ask the peer to acknowledge at once instead of delaying ACKs up to 25 ms: keeps the
    // congestion window and stream credit moving for request/response traffic.
    let mut ack = AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(VarInt::from_u32(0))
        .max_ack_delay(Some(Duration::from_millis(1)));
    transport.ack_frequency_config(Some(ack));
    // quinn sends queued datagrams before stream data: a small queue keeps a burst of them
    // from holding up Raft's streams when the congestion window is full (the oldest queued
    // are dropped instead; datagrams are unreliable anyway).
    transport.datagram_send_buffer_size(DATAGRAM_SEND_BUFFER);
    Ok(transport)
}

/// Bytes of datagrams queued per connection, at most.
const DATAGRAM_SEND_BUFFER: usize = 64 * 1024;

/// The quinn pieces built from a [`QuicConfig`].
pub(super) struct Built {
    pub endpoint: EndpointConfig,
    pub server: quinn::ServerConfig,
    pub client: quinn::ClientConfig,
}

pub(super) fn build(cfg: &QuicConfig) -> Result<Built, StartError> {
    let transport = Arc::new(transport_config(cfg)?);
    let server_crypto = QuicServerConfig::try_from(tls::server_config(&cfg.tls)?)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
    server.transport_config(transport.clone());
    let client_crypto = QuicClientConfig::try_from(tls::client_config(&cfg.tls)?)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
    client.transport_config(transport);
    Ok(Built {
        endpoint: endpoint_config(&cfg.tls.key),
        server,
        client,
    })
}

/// Endpoint settings that let a restarted server kill its predecessor's connections at once.
///
/// When a server crashes and restarts, peers still hold connections to the old process and keep
/// sending on them. The new process answers such packets with a QUIC stateless reset, which the
/// peer drops the connection on (then our client retries on a fresh one), but only if
/// - it recognises the connection ids as its own: the id generator's key must survive restarts;
/// - the reset token matches the one the old process announced: so must the reset key.
///
/// quinn picks both keys at random per process, which leaves peers waiting out the idle timeout.
/// Here both are derived from the node's private key: stable across restarts, secret to others.
fn endpoint_config(node_key: &PrivateKeyDer<'_>) -> EndpointConfig {
    let secret = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, node_key.secret_der());
    let derive = |label: &[u8]| ring::hmac::sign(&secret, label);
    let reset = derive(b"synctree/1 quic stateless reset key");
    let cid = derive(b"synctree/1 quic connection id key");
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&cid.as_ref()[..8]);
    let cid_key = u64::from_be_bytes(cid_key);

    let mut config = EndpointConfig::new(Arc::new(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        reset.as_ref(),
    )));
    config.cid_generator(move || Box::new(HashedConnectionIdGenerator::from_key(cid_key)));
    config
}
