//! Game clients over real QUIC: a client follows the tree from one server's client port,
//! moves to another when its server dies, and resumes there without missing or repeating an
//! entry; a client with a bad token is refused with the reason.

mod common;

use common::{complete, leader_of, set, spawn, wait_until, QuicCluster};
use std::net::SocketAddr;
use std::path::Path;
use synctree_proto::ShadowTree;
use synctree_runtime::{Applied, ClientsConfig, GameClient, GameClientConfig, Server};

const TOKEN: &str = "alice-secret-token";

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port()
}

fn dev_certs(dir: &Path) {
    for id in 1..=3 {
        synctree_net::certs::ensure_dev_cluster(dir, id).expect("dev certificates");
    }
}

/// What a client's live tree would hold: the tree rebuilt from what it received.
#[derive(Default)]
struct Follower {
    tree: ShadowTree,
    index: u64,
    resets: usize,
}

impl Follower {
    fn drain(&mut self, client: &GameClient) {
        while let Some(a) = client.try_recv_applied() {
            match a {
                Applied::Reset { index, tree } => {
                    self.tree = tree;
                    self.index = index;
                    self.resets += 1;
                }
                Applied::Effects { index, effects } => {
                    assert!(
                        index > self.index,
                        "entries up to {index} handed over again after {}",
                        self.index
                    );
                    for e in &effects {
                        self.tree.apply_effect(e).expect("effects apply in order");
                    }
                    self.index = index;
                }
            }
        }
    }
}

fn write_all(servers: &[Option<Server>], from: i64, to: i64) {
    let live: Vec<&Server> = servers.iter().flatten().collect();
    let leader = leader_of(&live);
    let s = live.iter().find(|s| s.id() == leader).expect("leader");
    let mut pending: std::collections::HashSet<u64> =
        (from..to).map(|v| s.submit(set("A", v))).collect();
    let mut buf = Vec::new();
    wait_until("the writes commit", || {
        s.poll_completions(&mut buf);
        for c in buf.drain(..) {
            assert!(c.result.is_ok(), "{:?}", c.result);
            pending.remove(&c.ticket);
        }
        pending.is_empty()
    });
}

#[test]
fn a_client_follows_the_tree_and_resumes_on_another_server() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    dev_certs(&certs);
    let cluster = QuicCluster::new(3, &certs, dir.path());
    let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let client_addr = |id: u64| SocketAddr::from(([127, 0, 0, 1], client_ports[id as usize - 1]));
    let mut servers: Vec<Option<Server>> = (1..=3)
        .map(|id| {
            Some(cluster.start_tuned(id, false, |cfg| {
                cfg.clients = Some(ClientsConfig {
                    listen: client_addr(id),
                    tokens: vec![TOKEN.into()],
                })
            }))
        })
        .collect();
    {
        let live: Vec<&Server> = servers.iter().flatten().collect();
        let leader = leader_of(&live);
        let s = live.iter().find(|s| s.id() == leader).unwrap();
        complete(s, s.submit(spawn("A"))).expect("spawn");
    }
    write_all(&servers, 0, 100);

    let client = GameClient::connect(GameClientConfig {
        servers: (1..=3).map(|id| (id, client_addr(id))).collect(),
        ca: synctree_net::certs::ca_cert_path(&certs),
        token: TOKEN.into(),
    })
    .expect("client starts");
    let mut f = Follower::default();
    let caught_up = |f: &mut Follower, servers: &[Option<Server>]| {
        f.drain(&client);
        let s = servers.iter().flatten().next().unwrap();
        let (index, dump) = s.inspect(|st| {
            (
                st.last_applied.map(|l| l.index).unwrap_or(0),
                st.tree.dump(),
            )
        });
        f.index == index && f.tree.dump() == dump
    };
    wait_until("the client holds the tree", || caught_up(&mut f, &servers));
    let first = client.status();
    assert_eq!(first.server, Some(1), "{first:?}");
    assert_eq!(first.peer, Some(synctree_runtime::peer_id_of(TOKEN)));
    assert_eq!(f.resets, 1, "one reset: the tree on connecting");

    // Live entries while connected.
    write_all(&servers, 100, 200);
    wait_until("the client follows live entries", || {
        caught_up(&mut f, &servers)
    });

    // Its server dies; writes go on; the client moves and resumes from its index.
    servers[0].take().expect("server 1").shutdown();
    write_all(&servers, 200, 400);
    wait_until("the client resumes on another server", || {
        caught_up(&mut f, &servers) && client.status().server.is_some()
    });
    let after = client.status();
    assert!(matches!(after.server, Some(2 | 3)), "{after:?}");
    assert!(after.connections >= 2, "{after:?}");
    assert_eq!(
        f.resets, 1,
        "the resume sent only what was missed (no second reset)"
    );
    assert_eq!(
        after.peer, first.peer,
        "the peer id is the same on every server"
    );
    for s in servers.iter_mut().filter_map(Option::take) {
        s.shutdown();
    }
}

#[test]
fn a_client_with_a_bad_token_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    dev_certs(&certs);
    let cluster = QuicCluster::new(3, &certs, dir.path());
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let server = cluster.start_tuned(1, false, |cfg| {
        cfg.clients = Some(ClientsConfig {
            listen: addr,
            tokens: vec![TOKEN.into()],
        })
    });
    assert_eq!(server.client_addr(), Some(addr));
    let client = GameClient::connect(GameClientConfig {
        servers: vec![(1, addr)],
        ca: synctree_net::certs::ca_cert_path(&certs),
        token: "mallory".into(),
    })
    .expect("client starts");
    wait_until("the refusal", || client.status().refused.is_some());
    assert_eq!(client.status().refused.as_deref(), Some("invalid token"));
    assert_eq!(
        client.try_recv_applied().map(|_| ()),
        None,
        "nothing was sent"
    );

    // A client that trusts another CA does not connect at all.
    let other = dir.path().join("other-certs");
    synctree_net::certs::ensure_dev_cluster(&other, 1).unwrap();
    let stranger = GameClient::connect(GameClientConfig {
        servers: vec![(1, addr)],
        ca: synctree_net::certs::ca_cert_path(&other),
        token: TOKEN.into(),
    })
    .expect("client starts");
    wait_until("a failed handshake", || {
        stranger.status().last_error.is_some()
    });
    assert_eq!(stranger.status().connections, 0);
    server.shutdown();
}
