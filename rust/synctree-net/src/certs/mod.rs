//! Certificate files for a cluster: a CA and one certificate per node, made with rcgen.
//!
//! ```text
//!   <dir>/ca.pem          cluster CA certificate (every node trusts only this)
//!   <dir>/ca.key          CA private key (mode 0600; needed only to issue node certificates)
//!   <dir>/node-<id>.pem   node certificate, SAN node-<id>.synctree + localhost + 127.0.0.1
//!   <dir>/node-<id>.key   node private key (mode 0600)
//! ```
//!
//! Files are written to a temporary name and renamed into place, so a reader never sees half a
//! file. [`ensure_dev_cluster`] creates everything on first start for local development.

mod dev;
mod files;

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

pub use dev::ensure_dev_cluster;

use crate::{tls, CertError, NodeId};

/// `<dir>/ca.pem`.
pub fn ca_cert_path(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}

/// `<dir>/ca.key`.
pub fn ca_key_path(dir: &Path) -> PathBuf {
    dir.join("ca.key")
}

/// `<dir>/node-<id>.pem`.
pub fn node_cert_path(dir: &Path, id: NodeId) -> PathBuf {
    dir.join(format!("node-{id}.pem"))
}

/// `<dir>/node-<id>.key`.
pub fn node_key_path(dir: &Path, id: NodeId) -> PathBuf {
    dir.join(format!("node-{id}.key"))
}

/// Creates a new cluster CA in `dir` (`ca.pem`, `ca.key`). Refuses to replace an existing one.
pub fn generate_ca(dir: &Path) -> Result<(), CertError> {
    for path in [ca_cert_path(dir), ca_key_path(dir)] {
        if files::exists(&path)? {
            return Err(CertError::AlreadyExists { path });
        }
    }
    write_ca(dir)
}

/// Writes a fresh CA, replacing whatever is there (callers make sure that is safe).
fn write_ca(dir: &Path) -> Result<(), CertError> {
    files::create_dir(dir)?;
    let key = KeyPair::generate().map_err(|source| generate_error("the CA key", source))?;
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "synctree cluster CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params
        .self_signed(&key)
        .map_err(|source| generate_error("the CA certificate", source))?;
    // Key first: a present `ca.pem` means the pair is complete.
    files::write_atomic(&ca_key_path(dir), key.serialize_pem().as_bytes(), true)?;
    files::write_atomic(&ca_cert_path(dir), cert.pem().as_bytes(), false)
}

/// Issues a certificate for node `id`, signed by the CA in `dir`, as `node-<id>.pem` and
/// `node-<id>.key`. Replaces an existing certificate for that node.
pub fn generate_node(dir: &Path, id: NodeId) -> Result<(), CertError> {
    let ca_key_file = ca_key_path(dir);
    let ca_key_pem = files::read_string(&ca_key_file)?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| CertError::Pem {
        path: ca_key_file,
        reason: e.to_string(),
    })?;
    let ca_cert_file = ca_cert_path(dir);
    let ca_cert_pem = files::read_string(&ca_cert_file)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, ca_key).map_err(|e| CertError::Pem {
        path: ca_cert_file,
        reason: e.to_string(),
    })?;

    let name = tls::node_name(id);
    let what = || format!("a certificate for node {id}");
    let mut params =
        CertificateParams::new(vec![name.clone(), "localhost".into(), "127.0.0.1".into()])
            .map_err(|source| generate_error(&what(), source))?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // The same certificate serves both ends of a connection.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().map_err(|source| generate_error(&what(), source))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|source| generate_error(&what(), source))?;
    files::write_atomic(
        &node_key_path(dir, id),
        key.serialize_pem().as_bytes(),
        true,
    )?;
    files::write_atomic(&node_cert_path(dir, id), cert.pem().as_bytes(), false)
}

fn generate_error(what: &str, source: rcgen::Error) -> CertError {
    CertError::Generate {
        what: what.to_string(),
        source,
    }
}
