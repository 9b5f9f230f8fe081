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
use quinn::{Endpoint, IdleTimeout, TransportConfig, VarInt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use crate::{tls, CertError, StartError, TlsError, TlsMaterial};

/// ALPN protocol id of the client protocol.
pub const CLIENT_ALPN: &[u8] = b"synctree-client/1";

fn transport() -> Result<Arc<TransportConfig>, StartError> {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(16))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .keep_alive_interval(Some(Duration::from_millis(500)))
        .max_idle_timeout(Some(
            IdleTimeout::try_from(Duration::from_secs(3))
                .map_err(|e| StartError::Config(e.to_string()))?,
        ));
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
    Endpoint::server(server, listen).map_err(|source| StartError::Bind {
        addr: listen,
        source,
    })
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
    let mut endpoint =
        Endpoint::client(any).map_err(|source| StartError::Bind { addr: any, source })?;
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}
