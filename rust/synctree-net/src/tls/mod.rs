//! Mutual TLS with a cluster CA: who may connect, and which node a connection belongs to.
//!
//! ```text
//!   client (node A)                                server (node B)
//!   ── connect, SNI "node-B.synctree" ─────────▶   presents node-B cert
//!   verifies: chained to cluster CA, name = B
//!   presents node-A cert ◀── requires client cert ── verifies: chained to cluster CA
//!                                                  reads "node-A.synctree" -> from = A
//! ```
//!
//! rustls with the ring provider, TLS 1.3 only (QUIC requires it), ALPN [`ALPN`].

mod material;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use x509_parser::extensions::GeneralName;

pub use material::TlsMaterial;

use crate::{NodeId, TlsError};

/// ALPN protocol id of the synctree server-to-server protocol (3: relays between servers
/// are numbered; 4: eventual writes are relayed as datagrams).
pub const ALPN: &[u8] = b"synctree/4";

const NAME_PREFIX: &str = "node-";
const NAME_SUFFIX: &str = ".synctree";

/// The DNS name a node's certificate carries and clients ask for: `node-<id>.synctree`.
pub fn node_name(id: NodeId) -> String {
    format!("{NAME_PREFIX}{id}{NAME_SUFFIX}")
}

/// The node id in a `node-<id>.synctree` name (ASCII case-insensitive, canonical decimal only).
pub fn parse_node_name(name: &str) -> Option<NodeId> {
    let lower = name.to_ascii_lowercase();
    let digits = lower.strip_prefix(NAME_PREFIX)?.strip_suffix(NAME_SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id: NodeId = digits.parse().ok()?;
    // Reject "node-007": one node, one name.
    (id.to_string() == digits).then_some(id)
}

/// The node id named by a certificate's `node-<id>.synctree` DNS SAN.
///
/// Does not verify the certificate: call it on certificates rustls already verified.
pub fn node_id_from_cert(cert: &CertificateDer<'_>) -> Result<NodeId, TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let san = parsed
        .subject_alternative_name()
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let mut ids: Vec<NodeId> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => parse_node_name(dns),
            _ => None,
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    match ids.as_slice() {
        [] => Err(TlsError::NoNodeName),
        [id] => Ok(*id),
        _ => Err(TlsError::AmbiguousNodeName(ids)),
    }
}

/// The authenticated node id of the peer of a QUIC connection (from its first certificate).
pub(crate) fn peer_node_id(conn: &quinn::Connection) -> Result<NodeId, TlsError> {
    let identity = conn.peer_identity().ok_or(TlsError::NoPeerCertificate)?;
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| TlsError::NoPeerCertificate)?;
    let leaf = chain.first().ok_or(TlsError::NoPeerCertificate)?;
    node_id_from_cert(leaf)
}

/// The crypto provider used everywhere: ring, chosen explicitly rather than process-wide.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(material: &TlsMaterial) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(material.ca.clone())?;
    Ok(Arc::new(roots))
}

/// Server side: present this node's certificate, require a client certificate from the CA.
pub fn server_config(material: &TlsMaterial) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(material)?, provider.clone())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(material.chain.clone(), material.key.clone_key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// Client side: trust only the cluster CA, present this node's certificate.
///
/// The node a connection is for is checked through the server name: connect with
/// [`node_name`]`(target)`.
pub fn client_config(material: &TlsMaterial) -> Result<rustls::ClientConfig, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(material)?)
        .with_client_auth_cert(material.chain.clone(), material.key.clone_key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_roundtrip_and_reject_lookalikes() {
        assert_eq!(node_name(42), "node-42.synctree");
        assert_eq!(parse_node_name("node-42.synctree"), Some(42));
        assert_eq!(parse_node_name("NODE-42.Synctree"), Some(42));
        assert_eq!(parse_node_name(&node_name(u64::MAX)), Some(u64::MAX));
        for bad in [
            "node-.synctree",
            "node-007.synctree",
            "node-+7.synctree",
            "node-7.synctree.evil",
            "xnode-7.synctree",
            "node-7x.synctree",
            "node-18446744073709551616.synctree",
            "localhost",
        ] {
            assert_eq!(parse_node_name(bad), None, "{bad}");
        }
    }
}
