//! Certificate files: generation, loading errors, and the race-free dev mode.

use std::fs;

use synctree_net::{certs, CertError, TlsMaterial};

use crate::common::*;

#[test]
fn generated_files_load_and_keys_are_private() -> TestResult {
    let dir = cluster_dir(&[1, 2]);
    let one = TlsMaterial::load(dir.path(), 1)?;
    assert_eq!(one.node_id()?, 1);
    assert_eq!(TlsMaterial::load(dir.path(), 2)?.ca, one.ca);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for name in ["ca.key", "node-1.key", "node-2.key"] {
            let mode = fs::metadata(dir.path().join(name))?.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name}");
        }
    }
    Ok(())
}

#[test]
fn the_ca_is_never_replaced() -> TestResult {
    let dir = cluster_dir(&[]);
    match certs::generate_ca(dir.path()) {
        Err(CertError::AlreadyExists { path }) => assert!(path.ends_with("ca.pem")),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    Ok(())
}

#[test]
fn load_errors_name_the_file() -> TestResult {
    let dir = cluster_dir(&[1]);
    let err = TlsMaterial::load(dir.path(), 7)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("missing file") && err.contains("node-7.pem"),
        "{err}"
    );

    fs::write(dir.path().join("node-1.key"), "not a key")?;
    let err = TlsMaterial::load(dir.path(), 1)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("node-1.key") && err.contains("bad PEM"),
        "{err}"
    );

    // node-1's files under node-2's names: the certificate names the wrong node.
    let dir = cluster_dir(&[1]);
    fs::copy(dir.path().join("node-1.pem"), dir.path().join("node-2.pem"))?;
    fs::copy(dir.path().join("node-1.key"), dir.path().join("node-2.key"))?;
    match TlsMaterial::load(dir.path(), 2) {
        Err(CertError::WrongNode {
            expected: 2,
            found: 1,
            path,
        }) => assert!(path.ends_with("node-2.pem")),
        other => panic!("expected WrongNode, got {other:?}"),
    }

    let empty = tempfile::tempdir()?;
    let err = certs::generate_node(empty.path(), 1)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("ca.key"), "{err}");
    Ok(())
}

#[test]
fn dev_mode_creates_one_ca_even_when_servers_start_together() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("certs");
    let threads: Vec<_> = (1..=6)
        .map(|id| {
            let path = path.clone();
            std::thread::spawn(move || certs::ensure_dev_cluster(&path, id))
        })
        .collect();
    let mut materials = Vec::new();
    for thread in threads {
        materials.push(thread.join().map_err(|_| "thread panicked")??);
    }
    for (i, material) in materials.iter().enumerate() {
        assert_eq!(
            material.ca,
            materials[0].ca,
            "node {} has another CA",
            i + 1
        );
        assert_eq!(material.node_id()?, i as u64 + 1);
    }
    assert!(!path.join("ca.lock").exists(), "lock file left behind");

    // A second start reuses everything.
    let again = certs::ensure_dev_cluster(&path, 1)?;
    assert_eq!(again.chain, materials[0].chain);
    Ok(())
}
