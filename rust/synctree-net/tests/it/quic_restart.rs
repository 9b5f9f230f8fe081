//! A peer restarting on the same address is reconnected to transparently.

use std::time::{Duration, Instant};

use synctree_net::Transport;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_a_graceful_restart_on_the_same_port() -> TestResult {
    let dir = cluster_dir(&[1, 2]);
    let one = start(dir.path(), 1);
    let two = start(dir.path(), 2);
    let addr = two.local_addr()?;
    one.set_peer(2, addr);
    assert_eq!(
        one.request(2, b"before".to_vec(), GENEROUS).await?,
        b"before from 1 at 2"
    );

    two.shutdown().await;
    drop(two);
    let _two = restart_at(dir.path(), 2, addr).await;

    let started = Instant::now();
    assert_eq!(
        one.request(2, b"after".to_vec(), GENEROUS).await?,
        b"after from 1 at 2"
    );
    println!(
        "first request after a graceful restart took {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_quickly_after_a_crash_and_restart_on_the_same_port() -> TestResult {
    let dir = cluster_dir(&[1, 2]);
    let one = start(dir.path(), 1);

    // Node 2 lives on its own runtime, so that it can die without saying goodbye.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (crash_tx, crash_rx) = std::sync::mpsc::channel::<()>();
    let path = dir.path().to_path_buf();
    let crashed = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let two = runtime.block_on(async { start(&path, 2) });
        addr_tx
            .send(two.local_addr().expect("addr"))
            .expect("send addr");
        let _ = crash_rx.recv();
        // Drops every task (connection drivers included) without sending anything.
        runtime.shutdown_background();
        drop(two);
    });
    let addr = addr_rx.recv()?;
    one.set_peer(2, addr);
    assert_eq!(
        one.request(2, b"before".to_vec(), GENEROUS).await?,
        b"before from 1 at 2"
    );

    crash_tx.send(())?;
    tokio::task::spawn_blocking(move || crashed.join())
        .await?
        .map_err(|_| "crash thread panicked")?;
    let _two = restart_at(dir.path(), 2, addr).await;

    // Node 1 still holds the dead connection. The restarted node answers it with a stateless
    // reset (same key, derived from the node key), so node 1 reconnects at once instead of
    // waiting out the 10 s idle timeout.
    let started = Instant::now();
    let response = one
        .request(2, b"after".to_vec(), Duration::from_secs(3))
        .await?;
    assert_eq!(response, b"after from 1 at 2");
    println!(
        "first request after a crash and restart took {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_is_down_is_unreachable_and_found_once_it_starts() -> TestResult {
    let dir = cluster_dir(&[1, 2]);
    let mut cfg = synctree_net::QuicConfig::new(1, localhost(), material(dir.path(), 1));
    cfg.connect_timeout = Duration::from_millis(300);
    let one = synctree_net::QuicTransport::start(cfg, echo_handler(1))?;
    // Reserve a free port, then leave it empty.
    let addr = std::net::UdpSocket::bind(localhost())?.local_addr()?;
    one.set_peer(2, addr);

    let started = Instant::now();
    match one.request(2, b"anyone?".to_vec(), GENEROUS).await {
        Err(synctree_net::NetError::Unreachable { peer: 2, reason }) => {
            assert!(reason.contains("no handshake"), "{reason}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let _two = restart_at(dir.path(), 2, addr).await;
    assert_eq!(
        one.request(2, b"now".to_vec(), GENEROUS).await?,
        b"now from 1 at 2"
    );
    Ok(())
}
