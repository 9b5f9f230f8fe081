//! QUIC endpoints of the client protocol (game clients, not Raft members), on a port of
//! their own, as etcd keeps client and peer traffic apart: the client port faces players,
//! the peer port only other servers.
//!
//! Servers present their node certificate, as to peers; clients check it against the
//! cluster CA and the server's node name ([`crate::tls::node_name`]). Clients present no
//! certificate: they authenticate inside the protocol, with a token.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{
    AckFrequencyConfig, Endpoint, EndpointConfig, IdleTimeout, TokioRuntime, TransportConfig,
    VarInt,
};
use quinn_proto::RandomConnectionIdGenerator;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use crate::{tls, CertError, StartError, TlsError, TlsMaterial};

/// ALPN protocol id of the client protocol.
/// Version 3 of the client protocol framed with a LEB128 length: a client of another framing
/// could not even say its version, so the ALPN changed with it.
pub const CLIENT_ALPN: &[u8] = b"synctree-client/3";

fn transport() -> Result<Arc<TransportConfig>, StartError> {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(16))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .keep_alive_interval(Some(Duration::from_millis(500)))
        .max_idle_timeout(Some(
            IdleTimeout::try_from(Duration::from_secs(3))
                .map_err(|e| StartError::Config(e.to_string()))?,
        ));
    // Ask the peer (both ends are quinn) to acknowledge every 8th packet or after 25 ms,
    // rather than every other packet: an ACK-only packet costs ~50 bytes on the wire, as much
    // as a property update. Nothing here waits on acknowledgements to go on.
    let mut acks = AckFrequencyConfig::default();
    acks.ack_eliciting_threshold(VarInt::from_u32(7))
        .max_ack_delay(Some(Duration::from_millis(25)));
    t.ack_frequency_config(Some(acks));
    Ok(Arc::new(t))
}

/// The server side: a listening endpoint that accepts clients without a certificate.
pub fn listen(listen: SocketAddr, material: &TlsMaterial) -> Result<Endpoint, StartError> {
    let mut crypto = rustls::ServerConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::from)?
        .with_no_client_auth()
        .with_single_cert(material.chain.clone(), material.key.clone_key())
        .map_err(TlsError::from)?;
    crypto.alpn_protocols = vec![CLIENT_ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(crypto).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(transport()?);
    // 4-byte connection ids (quinn's default is 8) tell this server's clients apart well
    // enough and save 4 bytes on every packet a client sends.
    let mut config = EndpointConfig::default();
    config.cid_generator(|| Box::new(RandomConnectionIdGenerator::new(4)));
    let bind = |source| StartError::Bind {
        addr: listen,
        source,
    };
    let socket = std::net::UdpSocket::bind(listen).map_err(bind)?;
    Endpoint::new(config, Some(server), socket, Arc::new(TokioRuntime)).map_err(bind)
}

/// The client side: an endpoint that trusts only the cluster CA in `ca_pem` (a file).
pub fn connector(ca_pem: &Path) -> Result<Endpoint, StartError> {
    if !ca_pem.exists() {
        let missing = CertError::Missing {
            path: ca_pem.to_owned(),
        };
        return Err(StartError::Config(format!("cluster CA: {missing}")));
    }
    let ca = CertificateDer::from_pem_file(ca_pem).map_err(|e| {
        StartError::Config(format!(
            "cannot read the cluster CA '{}': {e}",
            ca_pem.display()
        ))
    })?;
    let mut roots = RootCertStore::empty();
    roots.add(ca).map_err(TlsError::from)?;
    let mut crypto = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::from)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    crypto.alpn_protocols = vec![CLIENT_ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(crypto).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(transport()?);
    let any: SocketAddr = ([0, 0, 0, 0], 0).into();
    let bind = |source| StartError::Bind { addr: any, source };
    // A client has one connection at a time: zero-length connection ids (the server tells
    // it apart by its address) save 8 bytes on every packet the server sends it.
    let mut config = EndpointConfig::default();
    config.cid_generator(|| Box::new(RandomConnectionIdGenerator::new(0)));
    let socket = std::net::UdpSocket::bind(any).map_err(bind)?;
    let mut endpoint = Endpoint::new(config, None, socket, Arc::new(TokioRuntime)).map_err(bind)?;
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}
