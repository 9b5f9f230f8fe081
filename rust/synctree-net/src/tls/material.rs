//! The certificates and key a node needs, loaded from PEM files.

use std::fmt;
use std::path::Path;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{certs, CertError, NodeId, TlsError};

/// What a node needs for mutual TLS: the cluster CA, its own certificate chain and key.
///
/// Cloning copies the key; `Debug` does not print it.
pub struct TlsMaterial {
    /// The cluster CA certificate: the only trust anchor, for servers and clients alike.
    pub ca: CertificateDer<'static>,
    /// This node's certificate first, then any intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// This node's private key.
    pub key: PrivateKeyDer<'static>,
}

impl TlsMaterial {
    /// The identity of the cluster these certificates belong to: the SHA-256 fingerprint of
    /// its CA certificate, `ca-sha256:<hex>`.
    pub fn cluster_id(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, self.ca.as_ref());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("ca-sha256:{hex}")
    }

    /// Loads `ca.pem`, `node-<id>.pem` and `node-<id>.key` from `dir` (see [`certs`] for the
    /// layout) and checks the certificate is for node `id`.
    ///
    /// Errors name the file that is missing or bad.
    pub fn load(dir: &Path, id: NodeId) -> Result<Self, CertError> {
        let ca_path = certs::ca_cert_path(dir);
        let mut cas = read_certs(&ca_path)?;
        let ca = cas.swap_remove(0);
        let cert_path = certs::node_cert_path(dir, id);
        let chain = read_certs(&cert_path)?;
        let key_path = certs::node_key_path(dir, id);
        ensure_exists(&key_path)?;
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| pem_error(&key_path, e))?;
        let found =
            crate::tls::node_id_from_cert(&chain[0]).map_err(|source| CertError::Certificate {
                path: cert_path.clone(),
                source,
            })?;
        if found != id {
            return Err(CertError::WrongNode {
                path: cert_path,
                expected: id,
                found,
            });
        }
        Ok(TlsMaterial { ca, chain, key })
    }

    /// The node id this material's certificate is for.
    pub fn node_id(&self) -> Result<NodeId, TlsError> {
        let leaf = self.chain.first().ok_or(TlsError::EmptyChain)?;
        crate::tls::node_id_from_cert(leaf)
    }
}

impl Clone for TlsMaterial {
    fn clone(&self) -> Self {
        TlsMaterial {
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("node", &self.node_id().ok())
            .field("chain_len", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

fn ensure_exists(path: &Path) -> Result<(), CertError> {
    match path.try_exists() {
        Ok(true) => Ok(()),
        Ok(false) => Err(CertError::Missing {
            path: path.to_path_buf(),
        }),
        Err(source) => Err(CertError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// All certificates in a PEM file; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    ensure_exists(path)?;
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(pem_error(path, pem::Error::NoItemsFound));
    }
    Ok(certs)
}

fn pem_error(path: &Path, err: pem::Error) -> CertError {
    match err {
        pem::Error::Io(source) => CertError::Io {
            path: path.to_path_buf(),
            source,
        },
        pem::Error::NoItemsFound => CertError::Pem {
            path: path.to_path_buf(),
            reason: "no item of the expected kind".into(),
        },
        other => CertError::Pem {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}
