//! Game clients over real QUIC: a client follows the tree from one server's client port,
//! moves to another when its server dies, and resumes there without missing or repeating an
//! entry; a client with a bad token is refused with the reason. Clients' commands: proposed
//! for their peer, refused when they touch what another peer owns, spawn an unlisted scene
//! or exceed the rate limit; a client sending garbage is disconnected alone.

mod common;

use common::{complete, leader_of, set, spawn, wait_until, QuicCluster};
use std::net::SocketAddr;
use std::path::Path;
use synctree_proto::{Op, ShadowTree, Value};
use synctree_runtime::{
    peer_id_of, Applied, ClientsConfig, Completion, Done, GameClient, GameClientConfig, Server,
};

const TOKEN: &str = "alice-secret-token";

fn free_port() -> u16 {
    synctree_net::ports::unused_port(false).expect("a free UDP port")
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

/// Three servers (each with a client port admitting `tokens`), the address of server id's
/// client port, and the certificates folder.
fn servers_with_client_ports(
    dir: &Path,
    tokens: &[&str],
    tune: impl Fn(&mut ClientsConfig),
) -> (
    Vec<Option<Server>>,
    impl Fn(u64) -> SocketAddr,
    std::path::PathBuf,
) {
    let certs = dir.join("certs");
    dev_certs(&certs);
    let cluster = QuicCluster::new(3, &certs, dir);
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let addr = move |id: u64| SocketAddr::from(([127, 0, 0, 1], ports[id as usize - 1]));
    let servers = (1..=3)
        .map(|id| {
            Some(cluster.start_tuned(id, false, |cfg| {
                let tokens = tokens.iter().map(|t| t.to_string()).collect();
                let mut clients = ClientsConfig::new(addr(id), tokens);
                tune(&mut clients);
                cfg.clients = Some(clients)
            }))
        })
        .collect();
    (servers, addr, certs)
}

#[test]
fn a_client_follows_the_tree_and_resumes_on_another_server() {
    let dir = tempfile::tempdir().unwrap();
    let (mut servers, client_addr, certs) = servers_with_client_ports(dir.path(), &[TOKEN], |_| {});
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
        cfg.clients = Some(ClientsConfig::new(addr, vec![TOKEN.into()]))
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

const BOB: &str = "bob-secret-token";

fn client_complete(client: &GameClient, ticket: u64) -> Result<Done, String> {
    let mut all = client_complete_all(client, &[ticket]);
    all.pop().expect("one outcome")
}

/// The outcomes of `tickets`, in their order.
fn client_complete_all(client: &GameClient, tickets: &[u64]) -> Vec<Result<Done, String>> {
    let mut got = std::collections::HashMap::new();
    let mut buf: Vec<Completion> = Vec::new();
    wait_until("a client's completions", || {
        client.poll_completions(&mut buf);
        for c in buf.drain(..) {
            got.insert(c.ticket, c.result.map_err(|e| e.message));
        }
        tickets.iter().all(|t| got.contains_key(t))
    });
    tickets
        .iter()
        .map(|t| got.remove(t).expect("completion"))
        .collect()
}

fn client_spawn(parent: &str, name: &str, scene: &str) -> Op {
    Op::Spawn {
        parent: parent.into(),
        name: name.into(),
        scene: scene.into(),
        props: vec![("hp".into(), Value::Int(10))],
        owner: 0,
    }
}

fn set_hp(path: &str, v: i64) -> Op {
    set(path, v)
}

#[test]
fn clients_command_what_they_own_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    dev_certs(&certs);
    let cluster = QuicCluster::new(3, &certs, dir.path());
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let addr = |id: u64| SocketAddr::from(([127, 0, 0, 1], ports[id as usize - 1]));
    let servers: Vec<Server> = (1..=3)
        .map(|id| {
            cluster.start_tuned(id, false, |cfg| {
                let mut c = ClientsConfig::new(addr(id), vec![TOKEN.into(), BOB.into()]);
                c.spawnable = vec!["Node2D".into()];
                c.rate_per_second = 20;
                c.burst = 40;
                cfg.clients = Some(c);
            })
        })
        .collect();
    let live: Vec<&Server> = servers.iter().collect();
    let leader = leader_of(&live);
    let ls = live.iter().find(|s| s.id() == leader).unwrap();
    complete(ls, ls.submit(spawn("World"))).expect("the servers spawn World");

    // Alice on server 2, Bob on server 3: different servers, one tree.
    let connect = |token: &str, first: u64| {
        let mut order: Vec<u64> = vec![first];
        order.extend((1..=3).filter(|i| *i != first));
        GameClient::connect(GameClientConfig {
            servers: order.into_iter().map(|id| (id, addr(id))).collect(),
            ca: synctree_net::certs::ca_cert_path(&certs),
            token: token.into(),
        })
        .expect("client starts")
    };
    let alice = connect(TOKEN, 2);
    let bob = connect(BOB, 3);
    wait_until("both connect", || {
        alice.status().server == Some(2) && bob.status().server == Some(3)
    });
    let (pa, pb) = (peer_id_of(TOKEN), peer_id_of(BOB));

    let spawned = client_complete(
        &alice,
        alice.submit(client_spawn("World", "Alice", "Node2D")),
    );
    assert!(matches!(spawned, Ok(Done::Write { .. })), "{spawned:?}");
    wait_until("the spawn reaches server 1", || {
        servers[0].inspect(|st| st.tree.owner_of("World/Alice")) == Some(pa)
    });

    // Bob may not touch Alice's node, nor spawn for her, nor spawn an unlisted scene.
    let e = client_complete(&bob, bob.submit(set_hp("World/Alice", 1))).unwrap_err();
    assert_eq!(
        e,
        format!("peer {pb} may not change 'World/Alice': it is owned by peer {pa}")
    );
    let e = client_complete(
        &bob,
        bob.submit(Op::Despawn {
            path: "World/Alice".into(),
        }),
    )
    .unwrap_err();
    assert!(e.contains("may not change 'World/Alice'"), "{e}");
    let e = client_complete(&bob, bob.submit(client_spawn("World", "Evil", "Node3D"))).unwrap_err();
    assert!(
        e.contains("scene 'Node3D' is not on the SyncedTree's spawnable list"),
        "{e}"
    );
    let mut forged = client_spawn("World", "Forged", "Node2D");
    if let Op::Spawn { owner, .. } = &mut forged {
        *owner = pa;
    }
    let e = client_complete(&bob, bob.submit(forged)).unwrap_err();
    assert_eq!(
        e,
        format!("peer {pb} may not spawn a node owned by peer {pa}")
    );
    let e = client_complete(&bob, bob.submit(set_hp("World", 1))).unwrap_err();
    assert!(e.contains("owned by the servers"), "{e}");

    // Alice changes her node; Bob reads it linearizably through his server.
    assert!(client_complete(&alice, alice.submit(set_hp("World/Alice", 42))).is_ok());
    match client_complete(&bob, bob.submit_read("World/Alice".into(), "hp".into())) {
        Ok(Done::Read { value, .. }) => assert_eq!(value, Some(Value::Int(42))),
        other => panic!("read: {other:?}"),
    }
    // A server may change anything.
    complete(ls, ls.submit(set_hp("World/Alice", 43))).expect("a server overrides");

    // Bob floods: the requests over his budget fail at once, saying why; Alice is served.
    let tickets: Vec<u64> = (0..200)
        .map(|i| bob.submit(set_hp("World/Alice", i)))
        .collect();
    let mut limited = 0;
    for result in client_complete_all(&bob, &tickets) {
        if let Err(e) = result {
            if e.contains("rate limit exceeded") {
                limited += 1;
            } else {
                assert!(e.contains("may not change"), "{e}");
            }
        }
    }
    assert!(
        limited >= 100,
        "only {limited} of 200 requests were rate limited"
    );
    assert!(client_complete(&alice, alice.submit(set_hp("World/Alice", 44))).is_ok());

    // Both clients' trees end equal to the servers'.
    let mut fa = Follower::default();
    let mut fb = Follower::default();
    wait_until("both clients hold the servers' tree", || {
        fa.drain(&alice);
        fb.drain(&bob);
        let dump = servers[0].inspect(|st| st.tree.dump());
        fa.tree.dump() == dump && fb.tree.dump() == dump
    });
    assert!(
        fa.tree
            .dump()
            .contains(&format!("Alice (Node2D, owner {pa})")),
        "{}",
        fa.tree.dump()
    );
    assert_eq!(fa.tree.get("World/Alice", "hp"), Some(&Value::Int(44)));

    // A client that sends garbage after its hello is disconnected, alone.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reason = rt.block_on(garbage_client(&certs, addr(1)));
    assert!(reason.contains("malformed request"), "{reason}");
    assert!(client_complete(&alice, alice.submit(set_hp("World/Alice", 45))).is_ok());
    assert_eq!(bob.status().connections, 1, "{:?}", bob.status());
    drop((alice, bob));
    for s in servers {
        s.shutdown();
    }
}

/// A raw client of server 1 at `addr` that said hello with `token` and read its welcome:
/// its connection and stream.
async fn raw_client(
    certs: &Path,
    addr: SocketAddr,
    token: &str,
) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
    use synctree_net::frame::{read_varint_frame as read_frame, write_varint_frame as write_frame};
    use synctree_proto::{encode, Hello, CLIENT_PROTOCOL_VERSION};
    let endpoint = synctree_net::clients::connector(&synctree_net::certs::ca_cert_path(certs))
        .expect("connector");
    let conn = endpoint
        .connect(addr, &synctree_net::tls::node_name(1))
        .expect("connect")
        .await
        .expect("handshake");
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    let hello = encode(&Hello {
        version: CLIENT_PROTOCOL_VERSION,
        token: token.into(),
        resume: None,
    })
    .unwrap();
    write_frame(&mut send, &[&hello]).await.unwrap();
    read_frame(&mut recv, 1 << 20).await.expect("welcome");
    (conn, send, recv)
}

/// Why the server closed `conn`.
async fn close_reason(conn: &quinn::Connection) -> String {
    match conn.closed().await {
        quinn::ConnectionError::ApplicationClosed(c) => {
            String::from_utf8_lossy(&c.reason).into_owned()
        }
        other => other.to_string(),
    }
}

/// Says hello properly, then sends a frame that is not a request; returns why the server
/// closed the connection.
async fn garbage_client(certs: &Path, addr: SocketAddr) -> String {
    use synctree_net::frame::write_varint_frame as write_frame;
    let (conn, mut send, _recv) = raw_client(certs, addr, TOKEN).await;
    write_frame(&mut send, &[b"\xc1\xc1 not msgpack"])
        .await
        .unwrap();
    close_reason(&conn).await
}

/// A client that stops reading its stream while entries keep coming is disconnected once a
/// write to it has waited `stalled_after`, saying why; the server's other clients go on.
#[test]
fn a_client_that_stops_reading_is_disconnected_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (mut servers, addr, certs) = servers_with_client_ports(dir.path(), &[TOKEN, BOB], |c| {
        c.stalled_after = std::time::Duration::from_secs(1)
    });
    let live: Vec<&Server> = servers.iter().flatten().collect();
    let leader = leader_of(&live);
    let ls = *live.iter().find(|s| s.id() == leader).unwrap();
    let mut node = spawn("A");
    if let Op::Spawn { owner, .. } = &mut node {
        *owner = peer_id_of(TOKEN);
    }
    complete(ls, ls.submit(node)).expect("spawn A");
    let alice = GameClient::connect(GameClientConfig {
        servers: vec![(1, addr(1))],
        ca: synctree_net::certs::ca_cert_path(&certs),
        token: TOKEN.into(),
    })
    .expect("client starts");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (conn, _send, _recv) = rt.block_on(raw_client(&certs, addr(1), BOB));
    // ~4 MB of entries: more than its stream's flow-control window, which it never opens.
    let blob = Value::String("x".repeat(256 << 10));
    for _ in 0..16 {
        let op = Op::SetProperty {
            path: "A".into(),
            property: "blob".into(),
            value: blob.clone(),
        };
        complete(ls, ls.submit(op)).expect("a large write");
    }
    let reason = rt
        .block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(20), close_reason(&conn)).await
        })
        .expect("the silent client is disconnected");
    assert!(reason.contains("read too little"), "{reason}");
    assert!(client_complete(&alice, alice.submit(set_hp("A", 7))).is_ok());
    assert_eq!(alice.status().connections, 1, "{:?}", alice.status());
    drop(alice);
    for s in servers.iter_mut().filter_map(Option::take) {
        s.shutdown();
    }
}

fn rpc_to(to: i64, method: &str) -> synctree_proto::PeerRpc {
    synctree_proto::PeerRpc {
        from: 0,
        to,
        path: "/root/Game".into(),
        method: method.into(),
        args: vec![7, 7],
        ..Default::default()
    }
}

fn next_rpc(link: &synctree_runtime::PeerLink, what: &str) -> synctree_proto::PeerRpc {
    let mut got = None;
    wait_until(what, || {
        got = link.try_recv();
        got.is_some()
    });
    got.expect("an rpc")
}

/// Three servers with client ports admitting Alice and Bob, and how to connect a client
/// (token, server id) to one of them.
fn servers_for_alice_and_bob(dir: &Path) -> (Vec<Server>, impl Fn(&str, u64) -> GameClient) {
    let certs = dir.join("certs");
    dev_certs(&certs);
    let cluster = QuicCluster::new(3, &certs, dir);
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let addr = move |id: u64| SocketAddr::from(([127, 0, 0, 1], ports[id as usize - 1]));
    let servers = (1..=3)
        .map(|id| {
            cluster.start_tuned(id, false, |cfg| {
                cfg.clients = Some(ClientsConfig::new(addr(id), vec![TOKEN.into(), BOB.into()]))
            })
        })
        .collect();
    let connect = move |token: &str, id: u64| {
        GameClient::connect(GameClientConfig {
            servers: vec![(id, addr(id))],
            ca: synctree_net::certs::ca_cert_path(&certs),
            token: token.into(),
        })
        .expect("client starts")
    };
    (servers, connect)
}

#[test]
fn rpcs_reach_peers_on_any_server_and_presence_follows_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (servers, connect) = servers_for_alice_and_bob(dir.path());
    leader_of(&servers.iter().collect::<Vec<_>>());
    let links: Vec<_> = servers.iter().map(|s| s.peer_link()).collect();
    let alice = connect(TOKEN, 2);
    let bob = connect(BOB, 3);
    let (la, lb) = (alice.peer_link(), bob.peer_link());
    let (pa, pb) = (peer_id_of(TOKEN), peer_id_of(BOB));
    assert_eq!(
        (la.unique_id(), lb.unique_id(), links[0].unique_id()),
        (pa, pb, 1)
    );
    let mut both = vec![pa, pb];
    both.sort_unstable();
    wait_until("every server sees both clients", || {
        links.iter().all(|l| l.peers() == both)
    });
    wait_until("each client sees the servers and the other", || {
        la.peers() == vec![1, pb] && lb.peers() == vec![1, pa]
    });

    // Client to client across servers; the sender id is the server's word, not the client's.
    let mut forged = rpc_to(pb as i64, "hello");
    forged.from = 12345;
    la.send(forged);
    let got = next_rpc(&lb, "alice's rpc at bob");
    assert_eq!(
        (got.from, got.method.as_str(), got.args.as_slice()),
        (pa, "hello", &[7u8, 7][..])
    );
    // To the servers: only the sender's own server runs it.
    la.send(rpc_to(1, "to_server"));
    let got = next_rpc(&links[1], "alice's rpc at server 2");
    assert_eq!((got.from, got.method.as_str()), (pa, "to_server"));
    // From a server to everyone: both clients, wherever they are.
    links[0].send(rpc_to(0, "broadcast"));
    for l in [&la, &lb] {
        let got = next_rpc(l, "the broadcast");
        assert_eq!((got.from, got.method.as_str()), (1, "broadcast"));
    }
    // Reliable rpcs keep their order across servers (Godot's reliable rpcs are ordered).
    for i in 0..200 {
        la.send(rpc_to(pb as i64, &format!("m{i}")));
    }
    for i in 0..200 {
        assert_eq!(next_rpc(&lb, "an ordered rpc").method, format!("m{i}"));
    }
    // To everyone but Bob, from Alice: her server, not Bob, not herself.
    la.send(rpc_to(-(pb as i64), "not_bob"));
    let got = next_rpc(&links[1], "alice's rpc at server 2");
    assert_eq!(got.method, "not_bob");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(lb.try_recv().is_none() && la.try_recv().is_none());
    assert!(links[0].try_recv().is_none() && links[2].try_recv().is_none());

    // Bob leaves: every server and Alice see it.
    drop(bob);
    wait_until("bob's departure reaches everyone", || {
        links.iter().all(|l| l.peers() == vec![pa]) && la.peers() == vec![1]
    });
    drop(alice);
    for s in servers {
        s.shutdown();
    }
}

/// Drains eventual writes and keeps, per (path, property), the one with the highest stamp:
/// what a replica shows under last-writer-wins.
#[derive(Default)]
struct Lww(std::collections::HashMap<(String, String), synctree_proto::EventualSet>);

impl Lww {
    fn drain(&mut self, link: &synctree_runtime::PeerLink) {
        while let Some(set) = link.try_recv_eventual() {
            assert!(set.stamp.is_some(), "an unstamped write arrived: {set:?}");
            let k = (set.path.clone(), set.property.clone());
            if self.0.get(&k).is_none_or(|old| old.stamp < set.stamp) {
                self.0.insert(k, set);
            }
        }
    }

    fn value(&self, path: &str, property: &str) -> Option<&Value> {
        self.0
            .get(&(path.into(), property.into()))
            .map(|s| &s.value)
    }
}

#[test]
fn eventual_writes_reach_every_replica_and_the_last_writer_wins() {
    let dir = tempfile::tempdir().unwrap();
    let (servers, connect) = servers_for_alice_and_bob(dir.path());
    let leader = leader_of(&servers.iter().collect::<Vec<_>>());
    let ls = servers.iter().find(|s| s.id() == leader).unwrap();
    let pa = peer_id_of(TOKEN);
    let mut mine = spawn("A");
    if let Op::Spawn { owner, .. } = &mut mine {
        *owner = pa;
    }
    complete(ls, ls.submit(mine)).expect("A, owned by alice");
    // Every server has applied the spawn (ownership is checked against the applied tree).
    wait_until("A everywhere", || {
        servers
            .iter()
            .all(|s| s.inspect(|st| st.tree.owner_of("A")) == Some(pa))
    });
    let links: Vec<_> = servers.iter().map(|s| s.peer_link()).collect();
    let (alice, bob) = (connect(TOKEN, 2), connect(BOB, 3));
    let (la, lb) = (alice.peer_link(), bob.peer_link());
    wait_until("both connected", || {
        alice.status().server.is_some() && bob.status().server.is_some()
    });

    // Alice streams her node's x; every other replica ends on her last write (she shows
    // her own writes at once: her server does not send them back).
    for i in 0..50 {
        la.send_eventual("A".into(), "x".into(), Value::Int(i));
    }
    let mut views: Vec<Lww> = (0..4).map(|_| Lww::default()).collect();
    let all: Vec<&synctree_runtime::PeerLink> = links.iter().chain([&lb]).collect();
    let converged = |views: &mut Vec<Lww>, want: &Value| {
        for (v, l) in views.iter_mut().zip(&all) {
            v.drain(l);
        }
        views.iter().all(|v| v.value("A", "x") == Some(want))
    };
    wait_until("alice's last write everywhere", || {
        converged(&mut views, &Value::Int(49))
    });
    // Once a property is named on a connection (its first write goes with the name, on the
    // stream), eventual writes travel as QUIC datagrams, several to a datagram when they
    // come together (50 here, from one client's burst).
    let before = bob.status().datagrams;
    let relay = |s: synctree_runtime::Status| (s.relay_datagrams, s.relay_eventual_reliably);
    let alices_server = servers.iter().find(|s| s.id() == 2).unwrap();
    let relayed_before = relay(alices_server.status());
    for i in 50..100 {
        la.send_eventual("A".into(), "x".into(), Value::Int(i));
    }
    wait_until("alice's second burst everywhere", || {
        converged(&mut views, &Value::Int(99))
    });
    let datagrams = bob.status().datagrams - before;
    assert!(datagrams > 0, "{:?}", bob.status());
    assert!(
        datagrams < 25,
        "50 writes took {datagrams} datagrams to reach bob"
    );
    // Between the servers too: alice's server relayed them to the others as datagrams
    // (once it has a connection to each: the first burst may have gone reliably, and opened
    // them).
    let relayed = relay(alices_server.status());
    let (datagrams, reliably) = (relayed.0 - relayed_before.0, relayed.1 - relayed_before.1);
    assert!(
        datagrams > 0 && datagrams < 100,
        "50 writes relayed in {datagrams} datagrams to two servers"
    );
    assert_eq!(reliably, 0, "relayed reliably instead of by datagram");

    let mut alice_view = Lww::default();
    alice_view.drain(&la);
    assert_eq!(
        alice_view.value("A", "x"),
        None,
        "alice was sent her own writes"
    );

    // Bob does not own A: his write is dropped by his server. (A write dropped at the same
    // moment as another's write of the property arrives may hide that one from bob until he
    // writes again, see the README: the server writes once bob's was dropped.)
    lb.send_eventual("A".into(), "x".into(), Value::Int(-1));
    std::thread::sleep(std::time::Duration::from_millis(300));
    // A server may write anything; it comes later, so it wins everywhere, alice included
    // (stamped after her last write, which her server tells her).
    links[0].send_eventual("A".into(), "x".into(), Value::Int(1000));
    wait_until("the server's write everywhere", || {
        alice_view.drain(&la);
        converged(&mut views, &Value::Int(1000))
            && alice_view.value("A", "x") == Some(&Value::Int(1000))
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        converged(&mut views, &Value::Int(1000)),
        "bob's write got through"
    );
    // A server's write reaches alice, but before her game takes it she writes the property
    // herself: hers is stamped later and wins everywhere, so the server's, older, must not
    // be applied over hers at her end.
    links[0].send_eventual("A".into(), "x".into(), Value::Int(2000));
    std::thread::sleep(std::time::Duration::from_millis(300));
    la.send_eventual("A".into(), "x".into(), Value::Int(3000));
    let mut late = Lww::default();
    late.drain(&la);
    assert_eq!(
        late.value("A", "x"),
        None,
        "an older write was applied over alice's newer one"
    );
    wait_until("alice's newer write everywhere", || {
        converged(&mut views, &Value::Int(3000))
    });
    drop((alice, bob));
    for s in servers {
        s.shutdown();
    }
}

/// Carries frames between a client's pipe and a server's (what Godot does with a
/// MultiplayerPeer), until either side ends; returns which ended first.
fn pump(
    client: &mut synctree_runtime::FramePipe,
    server: &mut synctree_runtime::FramePipe,
    mut until: impl FnMut() -> bool,
) -> &'static str {
    use synctree_runtime::Pulled;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let mut moved = false;
        loop {
            match client.pull() {
                Pulled::Frame(f) | Pulled::Datagram(f) => {
                    moved = true;
                    if !server.push(f) {
                        return "server";
                    }
                }
                Pulled::Empty => break,
                Pulled::Ended => return "client",
            }
        }
        loop {
            match server.pull() {
                Pulled::Frame(f) | Pulled::Datagram(f) => {
                    moved = true;
                    if !client.push(f) {
                        return "client";
                    }
                }
                Pulled::Empty => break,
                Pulled::Ended => return "server",
            }
        }
        if until() {
            return "done";
        }
        if !moved {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    panic!("pumping: neither side ended and the condition did not hold in 20 s");
}

#[test]
fn clients_over_the_games_transport_follow_write_and_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let start = |tokens: Vec<String>, sub: &str| {
        let storage = synctree_runtime::StorageMode::Dir {
            dir: dir.path().join(sub),
            fsync: true,
        };
        let net = synctree_runtime::MemNetwork::new();
        let mut cfg = synctree_runtime::ServerConfig::new(
            1,
            Vec::new(),
            storage,
            synctree_runtime::TransportMode::Mem(net),
        );
        let mut clients = ClientsConfig::attached_only(tokens);
        clients.spawnable = vec!["Node".into()];
        cfg.clients = Some(clients);
        Server::start(cfg).expect("one-server cluster starts")
    };

    // No tokens listed and no auth callback: any token is admitted, as SceneMultiplayer
    // admits every peer.
    let server = start(Vec::new(), "open");
    complete(&server, server.submit(spawn("A"))).expect("spawn");
    let (client, mut cpipe) = GameClient::over_pipe("anyone".into()).expect("client");
    let mut spipe = server.attach_client("peer 7".into()).expect("attach");
    let mut f = Follower::default();
    let ended = pump(&mut cpipe, &mut spipe, || {
        f.drain(&client);
        f.tree.dump() == server.inspect(|s| s.tree.dump())
    });
    assert_eq!(ended, "done");
    assert_eq!(client.status().peer, Some(peer_id_of("anyone")));
    // It writes through the pipe; its write commits in the server's log.
    let mut mine = spawn("Mine");
    if let Op::Spawn { owner, scene, .. } = &mut mine {
        *owner = 0;
        *scene = "Node".into();
    }
    let ticket = client.submit(mine);
    let mut done: Vec<Completion> = Vec::new();
    pump(&mut cpipe, &mut spipe, || {
        client.poll_completions(&mut done);
        !done.is_empty()
    });
    assert_eq!(done[0].ticket, ticket);
    assert!(
        matches!(done[0].result, Ok(Done::Write { .. })),
        "{:?}",
        done[0].result
    );
    assert_eq!(
        server.inspect(|s| s.tree.owner_of("Mine")),
        Some(peer_id_of("anyone"))
    );
    // The game's peer disconnects (each side drops its end): the client ends, saying why,
    // and its requests from then on fail at once.
    drop((spipe, cpipe));
    wait_until("the client sees its connection end", || {
        client.status().ended.is_some()
    });
    let ticket = client.submit(set("Mine", 1));
    let mut done = Vec::new();
    wait_until("a request after the end fails", || {
        client.poll_completions(&mut done);
        !done.is_empty()
    });
    assert_eq!(done[0].ticket, ticket);
    assert!(done[0].result.is_err());
    server.shutdown();

    // Tokens listed: an unknown one is refused, the reason reaches the client, and the
    // server ends the session (the game then disconnects the peer).
    let server = start(vec![TOKEN.into()], "closed");
    let (client, mut cpipe) = GameClient::over_pipe("intruder".into()).expect("client");
    let mut spipe = server.attach_client("peer 9".into()).expect("attach");
    let ended = pump(&mut cpipe, &mut spipe, || false);
    assert_eq!(ended, "server");
    wait_until("the client learns it was refused", || {
        client.status().refused.is_some()
    });
    assert_eq!(client.status().refused.as_deref(), Some("invalid token"));
    server.shutdown();
}

#[test]
fn a_client_is_not_sent_the_subtrees_hidden_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let (servers, connect) = servers_for_alice_and_bob(dir.path());
    let leader = leader_of(&servers.iter().collect::<Vec<_>>());
    let ls = servers.iter().find(|s| s.id() == leader).unwrap();
    for op in [spawn("A"), spawn("C")] {
        complete(ls, ls.submit(op)).expect("spawn");
    }
    let bob = connect(BOB, 2);
    let s2 = &servers[1];
    let mut f = Follower::default();
    let holds = |f: &mut Follower, want: &str| {
        f.drain(&bob);
        f.tree.dump() == want
    };
    wait_until("bob holds A and C", || {
        holds(&mut f, "A (Node)\nC (Node)\n")
    });
    // Server 2's game hides A from bob: he is sent the tree without it, and nothing about it
    // afterwards (a child spawned under it, a property of it).
    let a = s2.inspect(|st| st.tree.lookup("A")).expect("A");
    s2.set_client_view(peer_id_of(BOB), [a].into_iter().collect());
    wait_until("A leaves bob's tree", || holds(&mut f, "C (Node)\n"));
    let mut child = spawn("B");
    if let Op::Spawn { parent, .. } = &mut child {
        *parent = "A".into();
    }
    complete(ls, ls.submit(child)).expect("A/B");
    complete(ls, ls.submit(set("A", 5))).expect("A.v");
    complete(ls, ls.submit(set("C", 6))).expect("C.v");
    wait_until("C.v reaches bob, A's changes do not", || {
        holds(&mut f, "C (Node)\n  .hp = 6\n")
    });
    // Rpcs of nodes hidden from him (or of nodes below them) do not reach him either, as
    // with SceneMultiplayer; others do. The server names nodes by absolute path.
    s2.set_tree_path("/root/World");
    let lb = bob.peer_link();
    let on = |path: &str, method: &str| synctree_proto::PeerRpc {
        path: path.into(),
        ..rpc_to(peer_id_of(BOB) as i64, method)
    };
    let links: Vec<_> = servers.iter().map(|s| s.peer_link()).collect();
    links[0].send(on("/root/World/A/Sprite", "hidden_child"));
    links[0].send(on("/root/World/A", "hidden"));
    links[1].send(synctree_proto::PeerRpc {
        to: 0,
        ..on("/root/World/A", "hidden_broadcast")
    });
    links[0].send(on("/root/World/C", "shown"));
    links[0].send(on("/root/Elsewhere", "outside"));
    let mut got = [
        next_rpc(&lb, "the rpc of a node bob sees").method,
        next_rpc(&lb, "an rpc outside the tree").method,
    ];
    got.sort();
    assert_eq!(got, ["outside", "shown"]);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        lb.try_recv().is_none(),
        "an rpc of a hidden node reached bob"
    );
    // A linearizable read of a hidden node is refused; of a visible one, answered.
    let read = |path: &str| {
        let ticket = bob.submit_read(path.into(), "hp".into());
        let mut done = Vec::new();
        wait_until("the read completes", || {
            bob.poll_completions(&mut done);
            done.iter().any(|c| c.ticket == ticket)
        });
        done.into_iter()
            .find(|c| c.ticket == ticket)
            .unwrap()
            .result
    };
    let err = read("A").expect_err("a hidden node");
    assert!(
        err.message
            .contains("no node at 'A' that this client may see"),
        "{err:?}"
    );
    assert!(read("A/B").is_err());
    assert!(matches!(read("C"), Ok(Done::Read { value: Some(_), .. })));
    // Shown again: the subtree as it is now.
    s2.set_client_view(peer_id_of(BOB), Default::default());
    wait_until("A (with B and v) is back", || {
        f.drain(&bob);
        f.tree.dump() == s2.inspect(|st| st.tree.dump())
    });
    assert!(
        f.tree.dump().contains("A (Node)\n  .hp = 5\n  B (Node)"),
        "{}",
        f.tree.dump()
    );
    drop(bob);
    for s in servers {
        s.shutdown();
    }
}

/// A tree its server filtered is not resumed from elsewhere: the next server, which hides
/// nothing from the client, sends it the whole tree (the hidden subtree comes back).
#[test]
fn a_client_whose_tree_was_filtered_gets_a_whole_tree_on_another_server() {
    let dir = tempfile::tempdir().unwrap();
    let (mut servers, addr, certs) = servers_with_client_ports(dir.path(), &[BOB], |_| {});
    let submit_on_leader = |servers: &[Option<Server>], op: Op| {
        let live: Vec<&Server> = servers.iter().flatten().collect();
        let leader = leader_of(&live);
        let s = live.iter().find(|s| s.id() == leader).unwrap();
        complete(s, s.submit(op)).expect("committed");
    };
    for op in [spawn("A"), spawn("C")] {
        submit_on_leader(&servers, op);
    }
    let bob = GameClient::connect(GameClientConfig {
        servers: vec![(2, addr(2)), (3, addr(3))],
        ca: synctree_net::certs::ca_cert_path(&certs),
        token: BOB.into(),
    })
    .expect("client starts");
    let mut f = Follower::default();
    wait_until("bob holds A and C", || {
        f.drain(&bob);
        f.tree.dump() == "A (Node)\nC (Node)\n"
    });
    let s2 = servers[1].as_ref().unwrap();
    let a = s2.inspect(|st| st.tree.lookup("A")).expect("A");
    s2.set_client_view(peer_id_of(BOB), [a].into_iter().collect());
    wait_until("A leaves bob's tree", || {
        f.drain(&bob);
        f.tree.dump() == "C (Node)\n"
    });
    // Server 2 goes; bob moves to server 3, which hides nothing from him.
    servers[1].take().expect("server 2").shutdown();
    submit_on_leader(&servers, set("A", 5));
    let s3 = servers[2].as_ref().unwrap();
    wait_until(
        "bob holds the whole tree again, A's change included",
        || {
            f.drain(&bob);
            bob.status().server == Some(3) && f.tree.dump() == s3.inspect(|st| st.tree.dump())
        },
    );
    assert!(
        f.tree.dump().contains("A (Node)\n  .hp = 5"),
        "{}",
        f.tree.dump()
    );
    drop(bob);
    for s in servers.iter_mut().filter_map(Option::take) {
        s.shutdown();
    }
}

#[test]
fn a_clients_writes_commit_in_the_order_it_made_them() {
    let dir = tempfile::tempdir().unwrap();
    let (servers, connect) = servers_for_alice_and_bob(dir.path());
    let leader = leader_of(&servers.iter().collect::<Vec<_>>());
    let ls = servers.iter().find(|s| s.id() == leader).unwrap();
    let mut node = spawn("A");
    if let Op::Spawn { owner, props, .. } = &mut node {
        *owner = peer_id_of(TOKEN);
        props.push(("hp".into(), Value::Int(0)));
    }
    complete(ls, ls.submit(node)).expect("spawn A for alice");
    let alice = connect(TOKEN, 2);
    wait_until("alice connects", || alice.status().server == Some(2));
    // Each write expects the one before it: any two applied out of order fail.
    let cas = |v: i64| Op::CompareAndSet {
        path: "A".into(),
        property: "hp".into(),
        expected: Some(Value::Int(v - 1)),
        value: Value::Int(v),
    };
    // A held frame (sent in one write, proposed together), then writes made one by one.
    alice.hold();
    let mut tickets: Vec<u64> = (1..=50).map(|v| alice.submit(cas(v))).collect();
    alice.release();
    tickets.extend((51..=150).map(|v| alice.submit(cas(v))));
    let outcomes = client_complete_all(&alice, &tickets);
    let mut last = 0;
    for (i, o) in outcomes.iter().enumerate() {
        match o {
            Ok(Done::Write { index, .. }) => {
                assert!(
                    *index >= last,
                    "write {} committed before the one made before it",
                    i + 1
                );
                last = *index;
            }
            other => panic!("write {} did not apply in order: {other:?}", i + 1),
        }
    }
    for s in &servers {
        wait_until("every server ends on 150", || {
            s.inspect(|st| st.tree.get("A", "hp").cloned()) == Some(Value::Int(150))
        });
    }
    drop(alice);
    for s in servers {
        s.shutdown();
    }
}

#[test]
fn an_eventual_write_lost_between_servers_settles_once_its_property_is_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let net = synctree_runtime::MemNetwork::new();
    let servers: Vec<Server> = (1..=3)
        .map(|id| common::start_with(id, &net, dir.path(), 1))
        .collect();
    let all: Vec<&Server> = servers.iter().collect();
    let leader = leader_of(&all);
    let ls = servers.iter().find(|s| s.id() == leader).unwrap();
    complete(ls, ls.submit(spawn("A"))).expect("spawn A");
    wait_until("A everywhere", || {
        servers
            .iter()
            .all(|s| s.inspect(|st| st.tree.owner_of("A")).is_some())
    });
    let links: Vec<_> = servers.iter().map(|s| s.peer_link()).collect();

    // Every datagram between the servers is lost: what server 1 writes reaches the others
    // only as its last write, sent again reliably once the property is quiet.
    net.set_datagram_drop_rate(1.0);
    for i in 0..20 {
        links[0].send_eventual("A".into(), "x".into(), Value::Int(i));
    }
    let mut views: Vec<Lww> = (0..2).map(|_| Lww::default()).collect();
    wait_until("server 1's last write on the others", || {
        for (v, l) in views.iter_mut().zip(&links[1..]) {
            v.drain(l);
        }
        views
            .iter()
            .all(|v| v.value("A", "x") == Some(&Value::Int(19)))
    });
    let status = servers[0].status();
    assert!(status.relay_datagrams > 0, "{status:?}");
    assert_eq!(status.relay_eventual_reliably, 0, "{status:?}");
    assert!(
        status.relay_eventual_settled >= 2,
        "a settling copy per other server: {status:?}"
    );
    for s in servers {
        s.shutdown();
    }
}
