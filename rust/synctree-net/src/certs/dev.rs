//! Dev mode: every server of a local cluster creates what is missing on start, race-free.
//!
//! ```text
//!   server 1 ─┐  create_new(ca.lock) ── wins ──▶ write ca.key, ca.pem ─▶ remove lock
//!   server 2 ─┤  create_new(ca.lock) ── loses ─▶ wait until ca.pem + ca.key exist
//!   server 3 ─┘                                   (then each issues its own node cert)
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use super::files;
use crate::{CertError, NodeId, TlsMaterial};

/// How long a server waits for another one to finish creating the CA.
const LOCK_WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(25);

/// DEV MODE: makes sure `dir` holds a cluster CA and a certificate for node `id`, creating what is
/// missing, and loads them.
///
/// Safe when several server processes start at once on one machine: the first creates the CA
/// under a `ca.lock` file, the others wait (at most 10 s) for `ca.pem` and `ca.key`. Logs a loud
/// warning, since a CA whose key sits next to every node is not for production.
///
/// Blocking (file I/O, polling sleeps): from async code, call it through `spawn_blocking`.
pub fn ensure_dev_cluster(dir: &Path, id: NodeId) -> Result<TlsMaterial, CertError> {
    files::create_dir(dir)?;
    let ca_ready = || {
        Ok(files::exists(&super::ca_cert_path(dir))? && files::exists(&super::ca_key_path(dir))?)
    };
    once_under_lock(&dir.join("ca.lock"), ca_ready, || super::write_ca(dir))?;
    let node_ready = || {
        Ok(files::exists(&super::node_cert_path(dir, id))?
            && files::exists(&super::node_key_path(dir, id))?)
    };
    once_under_lock(&dir.join(format!("node-{id}.lock")), node_ready, || {
        super::generate_node(dir, id)
    })?;
    tracing::warn!(
        node = id,
        dir = %dir.display(),
        "DEV MODE: using auto-generated development certificates from {}; the cluster CA key is \
         stored next to the node keys. Do NOT use these certificates in production: create a CA \
         offline and give each server only its own node certificate and key.",
        dir.display()
    );
    TlsMaterial::load(dir, id)
}

/// Runs `create` unless `ready`, such that only one process at a time creates, and the others
/// wait until `ready` (or the lock is released without it, in which case one of them retries).
fn once_under_lock(
    lock: &Path,
    ready: impl Fn() -> Result<bool, CertError>,
    create: impl FnOnce() -> Result<(), CertError>,
) -> Result<(), CertError> {
    let start = Instant::now();
    loop {
        if ready()? {
            return Ok(());
        }
        match files::create_new(lock, false) {
            Ok(_file) => {
                let _guard = LockGuard(lock);
                // Another process may have finished between our check and taking the lock.
                if ready()? {
                    return Ok(());
                }
                return create();
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if start.elapsed() >= LOCK_WAIT {
                    return Err(CertError::LockTimeout {
                        lock: lock.to_path_buf(),
                        waited: start.elapsed(),
                    });
                }
                std::thread::sleep(POLL);
            }
            Err(source) => {
                return Err(CertError::Io {
                    path: lock.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// Removes the lock file when creation ends, successfully or not.
struct LockGuard<'a>(&'a Path);

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(self.0) {
            tracing::warn!(lock = %self.0.display(), "cannot remove lock file: {e}");
        }
    }
}
