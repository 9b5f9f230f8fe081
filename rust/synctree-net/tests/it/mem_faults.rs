//! The in-memory network: round trips and every fault hook.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use synctree_net::{handler_fn, HandlerError, MemNetwork, MemTransport, NetError, Transport};

use crate::common::*;

/// Nodes `ids` on a fresh network, each running the echo handler.
fn network(ids: &[u64]) -> (MemNetwork, Vec<MemTransport>) {
    let net = MemNetwork::new();
    let nodes = ids
        .iter()
        .map(|&id| net.register(id, echo_handler(id)))
        .collect();
    (net, nodes)
}

fn is_unreachable(result: &Result<Vec<u8>, NetError>, peer: u64) -> bool {
    matches!(result, Err(NetError::Unreachable { peer: p, .. }) if *p == peer)
}

#[tokio::test]
async fn round_trips_and_maps_handler_errors() -> TestResult {
    let (_net, nodes) = network(&[1, 2]);
    assert_eq!(
        nodes[0].request(2, b"hi".to_vec(), GENEROUS).await?,
        b"hi from 1 at 2"
    );
    assert_eq!(
        nodes[1].request(1, b"fail:nope".to_vec(), GENEROUS).await,
        Err(NetError::Remote {
            peer: 1,
            message: "nope".into()
        })
    );
    let malformed = nodes[0].request(2, b"malformed".to_vec(), GENEROUS).await;
    assert!(
        matches!(malformed, Err(NetError::Protocol { peer: 2, .. })),
        "{malformed:?}"
    );
    assert!(is_unreachable(
        &nodes[0].request(9, b"x".to_vec(), GENEROUS).await,
        9
    ));
    Ok(())
}

#[tokio::test]
async fn isolation_fails_fast_both_ways_until_healed() -> TestResult {
    let (net, nodes) = network(&[1, 2, 3]);
    net.isolate(2);
    let started = Instant::now();
    assert!(is_unreachable(
        &nodes[0].request(2, b"x".to_vec(), GENEROUS).await,
        2
    ));
    assert!(is_unreachable(
        &nodes[1].request(3, b"x".to_vec(), GENEROUS).await,
        3
    ));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "failed slowly: {:?}",
        started.elapsed()
    );
    assert_eq!(
        nodes[0].request(3, b"x".to_vec(), GENEROUS).await?,
        b"x from 1 at 3"
    );
    net.heal(2);
    assert_eq!(
        nodes[0].request(2, b"x".to_vec(), GENEROUS).await?,
        b"x from 1 at 2"
    );
    assert_eq!(
        nodes[1].request(3, b"x".to_vec(), GENEROUS).await?,
        b"x from 2 at 3"
    );
    Ok(())
}

#[tokio::test]
async fn blocks_are_one_way() -> TestResult {
    let net = MemNetwork::new();
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = handled.clone();
    let one = net.register(
        1,
        handler_fn(move |_, body| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, HandlerError>(body) }
        }),
    );
    let two = net.register(2, echo_handler(2));
    net.block(1, 2);
    // 1 -> 2 is lost on the way out.
    assert!(is_unreachable(
        &one.request(2, b"x".to_vec(), GENEROUS).await,
        2
    ));
    // 2 -> 1 arrives (node 1 handles it) but the answer is lost.
    assert!(is_unreachable(
        &two.request(1, b"x".to_vec(), GENEROUS).await,
        1
    ));
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    net.unblock(1, 2);
    assert_eq!(two.request(1, b"x".to_vec(), GENEROUS).await?, b"x");
    assert_eq!(
        one.request(2, b"x".to_vec(), GENEROUS).await?,
        b"x from 1 at 2"
    );
    Ok(())
}

#[tokio::test]
async fn a_crash_cancels_work_and_a_restart_gets_a_new_transport() -> TestResult {
    let (net, nodes) = network(&[1, 2]);
    let slow = tokio::spawn(nodes[0].request(2, b"sleep:5000".to_vec(), GENEROUS));
    tokio::time::sleep(Duration::from_millis(50)).await;
    net.unregister(2);
    let result = slow.await?;
    assert!(is_unreachable(&result, 2), "{result:?}");
    assert!(is_unreachable(
        &nodes[0].request(2, b"x".to_vec(), GENEROUS).await,
        2
    ));
    assert_eq!(
        nodes[1].request(1, b"x".to_vec(), GENEROUS).await,
        Err(NetError::Shutdown { local: 2 })
    );

    let two = net.register(2, echo_handler(2));
    assert_eq!(
        two.request(1, b"back".to_vec(), GENEROUS).await?,
        b"back from 2 at 1"
    );
    assert_eq!(
        nodes[0].request(2, b"x".to_vec(), GENEROUS).await?,
        b"x from 1 at 2"
    );
    // The pre-crash transport stays dead.
    assert_eq!(
        nodes[1].request(1, b"x".to_vec(), GENEROUS).await,
        Err(NetError::Shutdown { local: 2 })
    );
    Ok(())
}

#[tokio::test]
async fn delays_add_up_and_timeouts_are_honoured() -> TestResult {
    let (net, nodes) = network(&[1, 2]);
    net.set_delay(Duration::from_millis(40));
    let started = Instant::now();
    nodes[0].request(2, b"x".to_vec(), GENEROUS).await?;
    assert!(
        started.elapsed() >= Duration::from_millis(80),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        nodes[0]
            .request(2, b"x".to_vec(), Duration::from_millis(30))
            .await,
        Err(NetError::Timeout {
            peer: 2,
            after: Duration::from_millis(30)
        })
    );
    Ok(())
}

#[tokio::test]
async fn random_drops_are_reproducible_from_the_seed() -> TestResult {
    async fn pattern(seed: u64) -> Vec<bool> {
        let net = MemNetwork::with_seed(seed);
        net.set_unreachable_after(Duration::ZERO);
        net.set_drop_rate(0.3);
        let one = net.register(1, echo_handler(1));
        let _two = net.register(2, echo_handler(2));
        let mut delivered = Vec::new();
        for _ in 0..40 {
            delivered.push(one.request(2, b"x".to_vec(), GENEROUS).await.is_ok());
        }
        delivered
    }
    let first = pattern(42).await;
    assert_eq!(first, pattern(42).await);
    assert!(
        first.iter().any(|ok| *ok) && first.iter().any(|ok| !*ok),
        "{first:?}"
    );
    Ok(())
}
