//! Request/response over real QUIC between started transports.

use std::time::{Duration, Instant};

use synctree_net::{NetError, QuicConfig, QuicTransport, StartError, Transport};

use crate::common::*;

/// Starts nodes `ids` and tells each about all the others.
fn mesh(dir: &std::path::Path, ids: &[u64]) -> Vec<QuicTransport> {
    let nodes: Vec<_> = ids.iter().map(|&id| start(dir, id)).collect();
    for a in &nodes {
        for b in &nodes {
            a.set_peer(b.local_id(), b.local_addr().expect("local addr"));
        }
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_round_trip_between_all_pairs() -> TestResult {
    let dir = cluster_dir(&[1, 2, 3]);
    let nodes = mesh(dir.path(), &[1, 2, 3]);
    for round in 0..3 {
        for a in &nodes {
            for b in &nodes {
                let body = format!("hi {round}");
                let response = a
                    .request(b.local_id(), body.clone().into_bytes(), GENEROUS)
                    .await?;
                let expected = format!("{body} from {} at {}", a.local_id(), b.local_id());
                assert_eq!(String::from_utf8(response)?, expected);
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_failure_comes_back_as_remote_error_and_connection_survives() -> TestResult {
    let dir = cluster_dir(&[1, 2]);
    let nodes = mesh(dir.path(), &[1, 2]);
    let err = nodes[0]
        .request(2, b"fail:no such key".to_vec(), GENEROUS)
        .await;
    assert_eq!(
        err,
        Err(NetError::Remote {
            peer: 2,
            message: "no such key".into()
        })
    );
    assert_eq!(
        nodes[0].request(2, b"again".to_vec(), GENEROUS).await?,
        b"again from 1 at 2"
    );
    assert_eq!(nodes[0].open_connections(), 1, "the connection is reused");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_round_trip() -> TestResult {
    let dir = cluster_dir(&[1, 2]);
    let nodes = mesh(dir.path(), &[1, 2]);
    let body = vec![b'x'; 8 * 1024 * 1024];
    let response = nodes[0].request(2, body.clone(), GENEROUS).await?;
    assert_eq!(response.len(), body.len() + " from 1 at 2".len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_removed_and_misaddressed_peers_fail_clearly() -> TestResult {
    let dir = cluster_dir(&[1, 2, 3]);
    let nodes = mesh(dir.path(), &[1, 2]);
    assert_eq!(
        nodes[0].request(3, b"x".to_vec(), GENEROUS).await,
        Err(NetError::UnknownPeer(3))
    );

    // Node 2 listens where node 1 expects node 3: its certificate names the wrong node.
    nodes[0].set_peer(3, nodes[1].local_addr()?);
    match nodes[0].request(3, b"x".to_vec(), GENEROUS).await {
        Err(NetError::Unreachable { peer: 3, reason }) => {
            assert!(reason.contains("certificate"), "{reason}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }

    nodes[0].remove_peer(2);
    assert_eq!(
        nodes[0].request(2, b"x".to_vec(), GENEROUS).await,
        Err(NetError::UnknownPeer(2))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_honoured_and_the_connection_stays_usable() -> TestResult {
    let dir = cluster_dir(&[1, 2]);
    let nodes = mesh(dir.path(), &[1, 2]);
    nodes[0].request(2, b"warm".to_vec(), GENEROUS).await?;
    let started = Instant::now();
    let err = nodes[0]
        .request(2, b"sleep:2000".to_vec(), Duration::from_millis(200))
        .await;
    assert_eq!(
        err,
        Err(NetError::Timeout {
            peer: 2,
            after: Duration::from_millis(200)
        })
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        nodes[0].request(2, b"after".to_vec(), GENEROUS).await?,
        b"after from 1 at 2"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_refused_locally() -> TestResult {
    let dir = cluster_dir(&[1, 2]);
    let cfg = QuicConfig::new(1, localhost(), material(dir.path(), 1)).with_max_frame_bytes(100);
    let small = QuicTransport::start(cfg, echo_handler(1))?;
    let two = start(dir.path(), 2);
    small.set_peer(2, two.local_addr()?);
    match small.request(2, vec![0; 101], GENEROUS).await {
        Err(NetError::Protocol { peer: 2, reason }) => {
            assert!(reason.contains("exceeds"), "{reason}")
        }
        other => panic!("expected Protocol, got {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_checks_the_certificate_id_and_shutdown_stops_requests() -> TestResult {
    let dir = cluster_dir(&[1, 2]);
    let wrong = QuicTransport::start(
        QuicConfig::new(2, localhost(), material(dir.path(), 1)),
        echo_handler(2),
    );
    assert!(matches!(
        wrong,
        Err(StartError::IdMismatch {
            configured: 2,
            in_cert: 1
        })
    ));
    let nodes = mesh(dir.path(), &[1, 2]);
    nodes[0].request(2, b"x".to_vec(), GENEROUS).await?;
    nodes[0].shutdown().await;
    assert_eq!(
        nodes[0].request(2, b"x".to_vec(), GENEROUS).await,
        Err(NetError::Shutdown { local: 1 })
    );
    Ok(())
}

#[test]
fn start_outside_a_runtime_is_an_error() {
    let dir = cluster_dir(&[1]);
    let result = QuicTransport::start(
        QuicConfig::new(1, localhost(), material(dir.path(), 1)),
        echo_handler(1),
    );
    assert!(matches!(result, Err(StartError::NoRuntime)));
}
