//! Datagrams between nodes: sent one way beside requests, over real QUIC and the in-memory
//! network.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use synctree_net::{Handler, HandlerError, MemNetwork, NetError, NodeId, Transport};

use crate::common::*;

/// Echoes requests, keeps the datagrams it gets and panics on one saying `panic`.
#[derive(Default)]
struct Keeper {
    got: Mutex<Vec<(NodeId, Vec<u8>)>>,
}

impl Handler for Keeper {
    fn handle(
        &self,
        from: NodeId,
        body: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, HandlerError>> {
        async move {
            let mut out = body;
            out.extend_from_slice(format!(" from {from}").as_bytes());
            Ok(out)
        }
        .boxed()
    }

    fn datagram(&self, from: NodeId, body: Vec<u8>) {
        assert_ne!(body, b"panic", "told to panic");
        self.got.lock().unwrap().push((from, body));
    }
}

async fn wait_for(keeper: &Keeper, n: usize) -> Vec<(NodeId, Vec<u8>)> {
    let deadline = Instant::now() + GENEROUS;
    while keeper.got.lock().unwrap().len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    keeper.got.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_datagrams_go_on_an_open_connection_and_a_bad_one_costs_only_itself() -> TestResult {
    let dir = cluster_dir(&[1, 2]);
    let keeper = Arc::new(Keeper::default());
    let one = start(dir.path(), 1);
    let two = synctree_net::QuicTransport::start(
        synctree_net::QuicConfig::new(2, localhost(), material(dir.path(), 2)),
        keeper.clone(),
    )?;
    one.set_peer(2, two.local_addr()?);

    // No connection yet: nothing is sent, and the caller is told so at once.
    assert_eq!(one.datagram_room(2), None);
    let refused = one.send_datagram(2, b"early".to_vec());
    assert!(
        matches!(&refused, Err(NetError::Unreachable { peer: 2, .. })),
        "{refused:?}"
    );

    // A request opens the connection; datagrams then go on it, from the authenticated id.
    assert_eq!(
        one.request(2, b"hi".to_vec(), GENEROUS).await?,
        b"hi from 1"
    );
    let room = one.datagram_room(2).expect("a connection is open");
    assert!((1000..=65_535).contains(&room), "room {room}");
    one.send_datagram(2, b"panic".to_vec())?;
    for i in 0..10u8 {
        one.send_datagram(2, vec![i; room])?;
    }
    let got = wait_for(&keeper, 10).await;
    assert_eq!(got.len(), 10, "loopback lost datagrams");
    assert!(got
        .iter()
        .all(|(from, body)| *from == 1 && body.len() == room));
    // (The room grows as path MTU discovery finds more; never past a UDP payload.)
    let too_big = one.send_datagram(2, vec![0; 65_536]);
    assert!(
        matches!(too_big, Err(NetError::Unreachable { peer: 2, .. })),
        "{too_big:?}"
    );

    // The handler's panic on one datagram closed nothing: the same connection still carries
    // datagrams and requests.
    assert!(one.datagram_room(2).is_some(), "the connection was closed");
    assert_eq!(one.open_connections(), 1);
    one.send_datagram(2, b"after".to_vec())?;
    assert_eq!(wait_for(&keeper, 11).await.last().unwrap().1, b"after");
    assert_eq!(
        one.request(2, b"still".to_vec(), GENEROUS).await?,
        b"still from 1"
    );
    assert_eq!(one.open_connections(), 1);
    Ok(())
}

#[tokio::test]
async fn mem_datagrams_follow_the_faults() -> TestResult {
    let net = MemNetwork::new();
    let keeper = Arc::new(Keeper::default());
    let one = net.register(1, echo_handler(1));
    let _two = net.register(2, keeper.clone());
    let room = one.datagram_room(2).expect("always room in memory");
    one.send_datagram(2, b"a".to_vec())?;
    assert_eq!(wait_for(&keeper, 1).await, vec![(1, b"a".to_vec())]);

    // A cut link loses it silently, as UDP would; a healed one carries the next.
    net.block(1, 2);
    one.send_datagram(2, b"lost".to_vec())?;
    net.unblock(1, 2);
    one.send_datagram(2, b"b".to_vec())?;
    let got = wait_for(&keeper, 2).await;
    assert_eq!(got, vec![(1, b"a".to_vec()), (1, b"b".to_vec())]);

    assert!(one.send_datagram(2, vec![0; room + 1]).is_err());
    // To a node that is not running: lost, silently.
    one.send_datagram(9, b"nobody".to_vec())?;
    // A crashed node's handler gets nothing more, even what was on its way.
    net.set_delay(Duration::from_millis(20));
    one.send_datagram(2, b"late".to_vec())?;
    net.unregister(2);
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(keeper.got.lock().unwrap().len(), 2);
    Ok(())
}
