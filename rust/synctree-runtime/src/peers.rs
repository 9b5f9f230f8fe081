//! Game peers across the cluster: who is connected where (presence), and Godot rpcs routed
//! between them.
//!
//! ```text
//!   client A ─▶ server 1 ─┬─ to 1 / 0 ──────────────▶ server 1's Godot (the servers' peer)
//!                         ├─ to a client of server 1 ─▶ that client's stream
//!                         └─ to anyone elsewhere ─────▶ Rpc::Relayed to the other servers,
//!                                                       each hands it to its own clients
//!   eventual writes: stamped by the writer's server, then to its Godot and clients, and as
//!             datagrams to the other servers (reliably while no connection is open, for
//!             one too large for a datagram, and a property's last write once it is quiet)
//!   presence: each server sends its clients to the others (on change, and every second);
//!             a list not refreshed for 3 s is dropped (its server is gone); the union is
//!             the cluster's peers, pushed to every client when it changes.
//! ```
//!
//! Rpcs for the servers (target 1, or everyone) run on the sender's own server only: game
//! logic that a client triggers runs once, not once per server. Relays to each server go
//! through one queue and one request at a time, so they arrive in the order they were made
//! (Godot's reliable rpcs are ordered); what queued meanwhile goes in the next request.
//! Eventual writes need no order (the latest stamp wins) nor delivery of each (a later write
//! supersedes a lost one, as between a client and its server): they go one way, as QUIC
//! datagrams, several to a datagram when they come together; only a property's last write
//! is sent again, reliably, once the property is quiet, so a lost datagram does not leave a
//! server on an older value (unless that copy is lost too).
//! Requests are numbered and sent again until answered: the receiver takes each number
//! once, and none older than the last it took.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use synctree_proto::{EventualSet, PeerRpc, ServerMessage, Stamp, SERVER_PEER};
use synctree_raft::NodeId;
use tokio::sync::{mpsc, Notify};

use crate::node::Inner;
use crate::rpc::{pack_eventual, Relayed, Rpc, DATAGRAM_OVERHEAD};
use synctree_net::Transport;

/// Presence is re-sent this often ...
const PRESENCE_EVERY: Duration = Duration::from_secs(1);
/// ... and a server's list not refreshed for this long is dropped.
const PRESENCE_TTL: Duration = Duration::from_secs(3);
/// Wait for another server to take a relayed rpc or presence list ...
const RELAY_TIMEOUT: Duration = Duration::from_millis(500);
/// ... then send it again after this long ...
const RELAY_RETRY: Duration = Duration::from_millis(100);
/// ... until this long has passed since the first try.
const RELAY_GIVE_UP: Duration = Duration::from_secs(3);

struct Local {
    conn: u64,
    tx: mpsc::Sender<ServerMessage>,
    /// This client's last eventual write of each (path, property): its number and stamp.
    own: HashMap<(String, String), (u32, Stamp)>,
}

#[derive(Default)]
struct State {
    local: HashMap<u64, Local>,
    remote: HashMap<NodeId, (Vec<u64>, Instant)>,
    /// The union last pushed to clients.
    announced: Vec<u64>,
    /// The stamp of the latest eventual write of each (path, property) handed to clients:
    /// an older one arriving late (a relay sent again) is not handed on. At most
    /// [`MAX_LATEST`] (forgotten all at once past it).
    latest: HashMap<(String, String), Stamp>,
}

/// The peers of one server: its own clients, the others' (as last heard), and the rpcs for
/// its Godot main thread.
pub(crate) struct Peers {
    server: NodeId,
    inner: OnceLock<Weak<Inner>>,
    state: Mutex<State>,
    next_conn: AtomicU64,
    local_changed: Notify,
    union_changed: Notify,
    godot: std::sync::mpsc::Sender<PeerRpc>,
    godot_eventual: std::sync::mpsc::Sender<EventualSet>,
    /// Each other server's relay queues (see [`relay_to`] and [`eventual_to`]).
    relays: Mutex<HashMap<NodeId, Queues>>,
    /// Relays dropped because a server's queue was full (logged at 1, 2, 4, ...).
    relays_dropped: AtomicU64,
    /// What the eventual relays to other servers sent (datagrams, writes reliably, settling
    /// copies).
    pub(crate) relay_counts: RelayCounts,
    /// This run's relays are numbered under this id (a restarted sender numbers anew).
    session: u64,
    /// The last relay batch taken from each server: (its session, its number).
    relays_taken: Mutex<HashMap<NodeId, (u64, u64)>>,
    runtime: tokio::runtime::Handle,
}

/// Relays waiting for one server, at most (a server that stops taking them loses the rest).
const RELAY_QUEUE: usize = 4096;
/// Relays sent to a server in one request, at most.
const RELAY_BATCH: usize = 256;

/// What waits to go to one other server: reliable relays, and eventual writes (datagrams).
struct Queues {
    reliable: mpsc::Sender<Relayed>,
    eventual: mpsc::Sender<EventualSet>,
}

impl Peers {
    /// Made on the server's runtime; `godot` receives the rpcs this server's Godot runs,
    /// `godot_eventual` the eventual writes it applies.
    pub(crate) fn new(
        server: NodeId,
        godot: std::sync::mpsc::Sender<PeerRpc>,
        godot_eventual: std::sync::mpsc::Sender<EventualSet>,
    ) -> Arc<Peers> {
        Arc::new(Peers {
            server,
            inner: OnceLock::new(),
            state: Mutex::new(State::default()),
            next_conn: AtomicU64::new(1),
            local_changed: Notify::new(),
            union_changed: Notify::new(),
            godot,
            godot_eventual,
            relays: Mutex::new(HashMap::new()),
            relays_dropped: AtomicU64::new(0),
            relay_counts: RelayCounts::default(),
            session: rand::random(),
            relays_taken: Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// Connects the relay to the running server (once it exists).
    pub(crate) fn attach(&self, inner: &Arc<Inner>) {
        let _ = self.inner.set(Arc::downgrade(inner));
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A client connected here; returns its connection number (for [`Peers::leave`]).
    pub(crate) fn join(&self, peer: u64, tx: mpsc::Sender<ServerMessage>) -> u64 {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        self.state().local.insert(
            peer,
            Local {
                conn,
                tx,
                own: HashMap::new(),
            },
        );
        self.local_changed.notify_one();
        conn
    }

    /// Connection `conn` of `peer` ended (a newer connection of the same peer stays).
    pub(crate) fn leave(&self, peer: u64, conn: u64) {
        let mut s = self.state();
        if s.local.get(&peer).is_some_and(|l| l.conn == conn) {
            s.local.remove(&peer);
            drop(s);
            self.local_changed.notify_one();
        }
    }

    /// Every client peer connected to the cluster, sorted.
    pub(crate) fn all(&self) -> Vec<u64> {
        union(&self.state())
    }

    /// Another server's clients, as it just said.
    pub(crate) fn heard(&self, server: NodeId, peers: Vec<u64>) {
        let mut s = self.state();
        let changed = s.remote.get(&server).is_none_or(|(p, _)| *p != peers);
        s.remote.insert(server, (peers, Instant::now()));
        drop(s);
        if changed {
            self.union_changed.notify_one();
        }
    }

    /// An rpc from a client of this server (its `from` already set to the client's peer).
    pub(crate) fn client_sent(&self, rpc: PeerRpc) {
        if rpc.reaches(SERVER_PEER) {
            let _ = self.godot.send(rpc.clone());
        }
        self.to_clients(rpc, true);
    }

    /// An rpc from this server's Godot.
    pub(crate) fn server_sent(&self, mut rpc: PeerRpc) {
        rpc.from = SERVER_PEER;
        self.to_clients(rpc, true);
    }

    /// An rpc another server relayed: for this server's clients only.
    pub(crate) fn relayed(&self, rpc: PeerRpc) {
        self.to_clients(rpc, false);
    }

    /// An eventual write: stamped here if it is new (from this server's Godot or one of its
    /// clients, whose ownership the caller checked), then handed to this server's Godot and
    /// clients, and relayed to the other servers unless it came from one.
    pub(crate) fn eventual(&self, mut set: EventualSet, relay: bool) {
        let Some(inner) = self.inner.get().and_then(Weak::upgrade) else {
            return;
        };
        {
            // Stamped (or its stamp observed) and handed to the clients under one lock: a
            // write handed on after another is stamped after it, which the writer's filter
            // below relies on.
            let mut s = self.state();
            let key = (set.path.clone(), set.property.clone());
            // A client's write that arrives after a later one of its own (a datagram and the
            // stream raced) is older than what the client shows: dropped.
            if set.stamp.is_none() && set.seq != 0 {
                let behind = s
                    .local
                    .get(&set.from)
                    .and_then(|l| l.own.get(&key))
                    .is_some_and(|(last, _)| !synctree_proto::seq_after(set.seq, *last));
                if behind {
                    return;
                }
            }
            let stamp = match set.stamp {
                Some(stamp) => {
                    // A clock too far ahead is refused by the HLC (and logged where it was
                    // stamped); the write still goes by its stamp.
                    let _ = inner.clock.observe(&stamp);
                    stamp
                }
                None => *set.stamp.insert(inner.clock.stamp()),
            };
            let _ = self.godot_eventual.send(set.clone());
            if s.latest.get(&key).is_some_and(|l| *l >= stamp) {
                // Older than one already handed on (clients would show it until the next).
                set.seq = 0;
                drop(s);
                if relay {
                    self.relay_eventual(set);
                }
                return;
            }
            if s.latest.len() >= MAX_LATEST && !s.latest.contains_key(&key) {
                s.latest.clear();
            }
            s.latest.insert(key.clone(), stamp);
            for (peer, l) in s.local.iter_mut() {
                if let Some(seq) = for_client(&mut l.own, *peer, &key, &set, stamp) {
                    let mut to = set.clone();
                    to.seq = seq;
                    push(*peer, l, ServerMessage::Eventual(to));
                }
            }
            set.seq = 0;
        }
        if relay {
            self.relay_eventual(set);
        }
    }

    /// Whether relay batch `seq` of server `from`'s run `session` is to be taken: not one
    /// taken already, nor one older than the last taken (it was given up and sent after).
    pub(crate) fn relay_is_new(&self, from: NodeId, session: u64, seq: u64) -> bool {
        let mut taken = self.relays_taken.lock().unwrap_or_else(|p| p.into_inner());
        match taken.get(&from) {
            Some((s, last)) if *s == session && seq <= *last => false,
            _ => {
                taken.insert(from, (session, seq));
                true
            }
        }
    }

    /// Notes client `peer`'s eventual writes `(path, property, seq)` that were dropped (refused,
    /// over its rate limit): the client numbered them and shows them, so others' writes must
    /// reach it with a number at least theirs to apply there; they win nothing against others.
    /// At most [`MAX_OWN`] properties are remembered per client (past that, only those
    /// remembered already are updated).
    pub(crate) fn dropped_eventual(&self, peer: u64, writes: Vec<(String, String, u32)>) {
        let mut s = self.state();
        let Some(l) = s.local.get_mut(&peer) else {
            return;
        };
        for (path, property, seq) in writes {
            let key = (path, property);
            let room = l.own.len() < MAX_OWN;
            match l.own.get_mut(&key) {
                Some(e) if synctree_proto::seq_after(seq, e.0) => e.0 = seq,
                Some(_) => {}
                None if room => {
                    l.own.insert(key, (seq, Stamp::from_parts(0, 0)));
                }
                None => {}
            }
        }
    }

    fn to_clients(&self, rpc: PeerRpc, relay: bool) {
        let s = self.state();
        let mut elsewhere = relay;
        if rpc.to > 0 {
            let target = rpc.to as u64;
            if target == SERVER_PEER {
                return;
            }
            if let Some(l) = s.local.get(&target) {
                elsewhere = false;
                push(target, l, ServerMessage::Rpc(rpc.clone()));
            }
        } else {
            for (peer, l) in &s.local {
                if rpc.reaches(*peer) {
                    push(*peer, l, ServerMessage::Rpc(rpc.clone()));
                }
            }
        }
        drop(s);
        if elsewhere {
            self.broadcast(Relayed::Rpc(rpc));
        }
    }

    /// Queues `item` for every other member, without waiting.
    fn broadcast(&self, item: Relayed) {
        self.each_other(|id, queues| {
            if queues.reliable.try_send(item.clone()).is_err() {
                self.dropped(id);
            }
        });
    }

    /// Queues an eventual write for every other member, to go as a datagram.
    fn relay_eventual(&self, set: EventualSet) {
        self.each_other(|id, queues| {
            if queues.eventual.try_send(set.clone()).is_err() {
                self.dropped(id);
            }
        });
    }

    /// Calls `f` with every other member's relay queues (started on first use).
    fn each_other(&self, mut f: impl FnMut(NodeId, &Queues)) {
        let Some(inner) = self.inner.get().and_then(Weak::upgrade) else {
            return;
        };
        let status = inner.status();
        let mut relays = self.relays.lock().unwrap_or_else(|p| p.into_inner());
        for id in status.voters.iter().chain(&status.learners) {
            if *id == self.server {
                continue;
            }
            let queues = relays.entry(*id).or_insert_with(|| {
                let (reliable, rx) = mpsc::channel(RELAY_QUEUE);
                let transport = inner.transport.clone();
                self.runtime
                    .spawn(relay_to(*id, self.session, transport.clone(), rx));
                let (eventual, rx) = mpsc::channel(RELAY_QUEUE);
                let counts = self.relay_counts.clone();
                self.runtime
                    .spawn(eventual_to(*id, transport, rx, reliable.clone(), counts));
                Queues { reliable, eventual }
            });
            f(*id, queues);
        }
    }

    fn dropped(&self, id: NodeId) {
        let n = self.relays_dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(
                node = self.server,
                "server {id} is not taking relayed rpcs and eventual writes: one dropped ({n} \
                 so far)"
            );
        }
    }
}

/// A property's last write relayed to a server by datagram is sent once more, reliably, when
/// the property has had no newer write for this long (at most twice this long), so that a
/// lost datagram does not leave another server, and its clients, on an older value (unless
/// that copy is lost too: the server unreachable for over 3 s, its relay queue full).
const SETTLE: Duration = Duration::from_millis(200);
/// Properties whose last write waits to settle, per server, at most (past it, writes of
/// other properties go without a settling copy).
const MAX_SETTLING: usize = 1 << 16;
/// Settling copies wait while the reliable relay queue is fuller than this (rpcs and
/// presence go first), and are tried again after [`SETTLE_RETRY`].
const SETTLE_QUEUE_SHARE: usize = RELAY_QUEUE / 2;
const SETTLE_RETRY: Duration = Duration::from_millis(20);

type PropertyKey = (String, String);

/// A property waiting to settle: its newest write relayed (`None` once one went reliably:
/// nothing to settle, but older writes arriving late must not be tracked again) and when it
/// settles.
struct Pending {
    set: Option<EventualSet>,
    stamp: Option<Stamp>,
    due: tokio::time::Instant,
}

/// The newest write of each property relayed to one server, until the property settles.
#[derive(Default)]
struct Settling {
    last: HashMap<PropertyKey, Pending>,
    /// Each property of `last` exactly once, roughly in the order of its deadline (one
    /// written again waits on: see [`Settling::due`]).
    order: VecDeque<(tokio::time::Instant, PropertyKey)>,
}

impl Settling {
    /// `set` went to the server at `now`, as a datagram (`reliably` false) or reliably.
    /// Only a write newer than the one noted for its property counts.
    fn went(&mut self, set: &EventualSet, reliably: bool, now: tokio::time::Instant) {
        let key = (set.path.clone(), set.property.clone());
        let due = now + SETTLE;
        let to_settle = (!reliably).then(|| set.clone());
        let room = self.last.len() < MAX_SETTLING;
        match self.last.get_mut(&key) {
            Some(p) if p.stamp < set.stamp => {
                *p = Pending {
                    set: to_settle,
                    stamp: set.stamp,
                    due,
                }
            }
            Some(_) => {} // older than what went already
            None if room => {
                self.order.push_back((due, key.clone()));
                self.last.insert(
                    key,
                    Pending {
                        set: to_settle,
                        stamp: set.stamp,
                        due,
                    },
                );
            }
            None => {}
        }
    }

    fn next(&self) -> Option<tokio::time::Instant> {
        self.order.front().map(|(at, _)| *at)
    }

    /// At most `max` of the newest writes of the properties quiet for [`SETTLE`] at `now`
    /// (the others stay, due).
    fn due(&mut self, now: tokio::time::Instant, max: usize) -> Vec<EventualSet> {
        let mut out = Vec::new();
        while out.len() < max && self.order.front().is_some_and(|(at, _)| *at <= now) {
            let Some((_, key)) = self.order.pop_front() else {
                break;
            };
            match self.last.get(&key).map(|p| p.due) {
                Some(due) if due > now => self.order.push_back((due, key)),
                Some(_) => out.extend(self.last.remove(&key).and_then(|p| p.set)),
                None => {}
            }
        }
        out
    }
}

/// Sends server `id` the eventual writes queued for it as datagrams, with what queued while
/// the last went out: unreliable (a lost write is superseded by the next of its property,
/// as between a client and its server), except that each property's last write is sent
/// again reliably once the property is quiet (see [`SETTLE`]). A write too large for a
/// datagram, or any while no connection to `id` is open (the reliable relay opens one),
/// goes to the reliable queue.
async fn eventual_to(
    id: NodeId,
    transport: Arc<dyn Transport>,
    mut queue: mpsc::Receiver<EventualSet>,
    reliable: mpsc::Sender<Relayed>,
    counts: RelayCounts,
) {
    let relay = |set: EventualSet, count: &AtomicU64| {
        if reliable.try_send(Relayed::Eventual(set)).is_ok() {
            count.fetch_add(1, Ordering::Relaxed);
        } else {
            tracing::debug!("peers: server {id} is not taking relays: an eventual write dropped");
        }
    };
    let mut settling = Settling::default();
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        let wake = match (settling.next(), retry_at) {
            (Some(at), Some(retry)) => Some(at.max(retry)),
            (at, _) => at,
        };
        let first = tokio::select! {
            biased;
            set = queue.recv() => match set {
                Some(set) => Some(set),
                None => return,
            },
            () = tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)),
                if wake.is_some() => None,
        };
        if let Some(first) = first {
            let mut sets = vec![first];
            while sets.len() < RELAY_BATCH {
                match queue.try_recv() {
                    Ok(set) => sets.push(set),
                    Err(_) => break,
                }
            }
            let now = tokio::time::Instant::now();
            let fallback = |set: EventualSet, settling: &mut Settling| {
                settling.went(&set, true, now);
                relay(set, &counts.reliably);
            };
            let Some(room) = transport.datagram_room(id) else {
                sets.into_iter()
                    .for_each(|set| fallback(set, &mut settling));
                continue;
            };
            let mut fits = Vec::with_capacity(sets.len());
            let mut encoded = Vec::with_capacity(sets.len());
            for set in sets {
                match rmp_serde::to_vec(&set) {
                    Ok(e) if e.len() + DATAGRAM_OVERHEAD <= room => {
                        encoded.push(e);
                        fits.push(Some(set));
                    }
                    _ => fallback(set, &mut settling),
                }
            }
            for (body, carried) in pack_eventual(&encoded, room) {
                if transport.send_datagram(id, body).is_ok() {
                    counts.datagrams.fetch_add(1, Ordering::Relaxed);
                    for set in fits[carried].iter().flatten() {
                        settling.went(set, false, now);
                    }
                } else {
                    for set in fits[carried].iter_mut().filter_map(Option::take) {
                        fallback(set, &mut settling);
                    }
                }
            }
        }
        // Then what has settled, as far as the reliable queue has room beside rpcs.
        let now = tokio::time::Instant::now();
        if retry_at.is_some_and(|r| r > now) {
            continue;
        }
        let room = reliable
            .capacity()
            .saturating_sub(RELAY_QUEUE - SETTLE_QUEUE_SHARE);
        let settled = settling.due(now, room);
        retry_at = (settled.len() == room && settling.next().is_some_and(|at| at <= now))
            .then(|| now + SETTLE_RETRY);
        for set in settled {
            relay(set, &counts.settled);
        }
    }
}

/// What a server's eventual relays count (see [`crate::Status`]).
#[derive(Clone, Default)]
pub(crate) struct RelayCounts {
    pub(crate) datagrams: Arc<AtomicU64>,
    pub(crate) reliably: Arc<AtomicU64>,
    pub(crate) settled: Arc<AtomicU64>,
}

/// Sends server `id` what is queued for it, in order: one numbered request at a time, with
/// what queued while the last one was on its way. A request not answered is sent again
/// (the receiver takes each number once, and none after a later one) until
/// `RELAY_GIVE_UP` has passed: a server unreachable that long loses that batch.
async fn relay_to(
    id: NodeId,
    session: u64,
    transport: Arc<dyn Transport>,
    mut queue: mpsc::Receiver<Relayed>,
) {
    let mut seq = 0u64;
    while let Some(first) = queue.recv().await {
        let mut items = vec![first];
        while items.len() < RELAY_BATCH {
            match queue.try_recv() {
                Ok(item) => items.push(item),
                Err(_) => break,
            }
        }
        seq += 1;
        let Ok(body) = rmp_serde::to_vec(&Rpc::Relayed {
            session,
            seq,
            items,
        }) else {
            continue;
        };
        let since = Instant::now();
        while let Err(e) = transport.request(id, body.clone(), RELAY_TIMEOUT).await {
            if since.elapsed() >= RELAY_GIVE_UP {
                tracing::debug!("peers: server {id} did not take relay {seq}: {e}");
                break;
            }
            tokio::time::sleep(RELAY_RETRY).await;
        }
    }
}

fn union(s: &State) -> Vec<u64> {
    let mut all: Vec<u64> = s.local.keys().copied().collect();
    for (peers, at) in s.remote.values() {
        if at.elapsed() < PRESENCE_TTL {
            all.extend(peers);
        }
    }
    all.sort_unstable();
    all.dedup();
    all
}

/// Whether client `peer` is sent the eventual write `set` (of `key`, stamped `stamp`), and
/// with which [`EventualSet::seq`]: not its own (it shows those already; they are noted in
/// `own`), not one stamped before its own last write of the same property (that one wins);
/// others with the number of its last write there, if any.
fn for_client(
    own: &mut HashMap<(String, String), (u32, Stamp)>,
    peer: u64,
    key: &(String, String),
    set: &EventualSet,
    stamp: Stamp,
) -> Option<u32> {
    if peer == set.from {
        // Its own write taken here (a copy relayed back from another server carries no
        // number and changes nothing).
        if set.seq != 0 && (own.len() < MAX_OWN || own.contains_key(key)) {
            let e = own.entry(key.clone()).or_insert((set.seq, stamp));
            if synctree_proto::seq_after(set.seq, e.0) || e.0 == set.seq {
                *e = (set.seq, stamp);
            }
        }
        return None;
    }
    match own.get(key) {
        Some((_, mine)) if *mine > stamp => None,
        Some((seq, _)) => Some(*seq),
        None => Some(0),
    }
}

/// Properties whose latest eventual write a server remembers, at most.
const MAX_LATEST: usize = 1 << 16;

/// Properties whose last write a server remembers per client, at most.
const MAX_OWN: usize = synctree_proto::MAX_PROPERTY_HANDLES;

fn push(peer: u64, l: &Local, m: ServerMessage) {
    if l.tx.try_send(m).is_err() {
        tracing::warn!("peer {peer} is not reading: a message for it was dropped");
    }
}

/// Keeps presence: sends this server's clients to the others on change and every second,
/// and tells this server's clients when the cluster's peers change.
pub(crate) async fn run_presence(peers: Arc<Peers>) {
    loop {
        let broadcast = tokio::select! {
            () = peers.local_changed.notified() => true,
            () = peers.union_changed.notified() => false,
            () = tokio::time::sleep(PRESENCE_EVERY) => true,
        };
        if broadcast {
            let mine: Vec<u64> = peers.state().local.keys().copied().collect();
            peers.broadcast(Relayed::Presence(mine));
        }
        let mut s = peers.state();
        let all = union(&s);
        if all != s.announced {
            for (peer, l) in &s.local {
                let others = all.iter().copied().filter(|p| p != peer).collect();
                push(*peer, l, ServerMessage::Peers(others));
            }
            s.announced = all;
        }
    }
}

/// Takes the receiver kept in `slot` (the first link made gets it; later ones get a
/// receiver that never receives).
pub(crate) fn take_inbox<T>(
    slot: &Mutex<Option<std::sync::mpsc::Receiver<T>>>,
) -> std::sync::mpsc::Receiver<T> {
    slot.lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .unwrap_or_else(|| std::sync::mpsc::channel().1)
}

/// What the Godot side uses to take part in rpcs, presence and eventual properties: this
/// process's peer id, the other peers, sending and receiving rpcs and eventual writes. The
/// same on a server and on a game client.
#[derive(Clone)]
pub struct PeerLink {
    me: u64,
    send: Arc<dyn Fn(PeerRpc) + Send + Sync>,
    peers: Arc<dyn Fn() -> Vec<u64> + Send + Sync>,
    inbox: Arc<Mutex<std::sync::mpsc::Receiver<PeerRpc>>>,
    send_eventual: Arc<dyn Fn(EventualSet) + Send + Sync>,
    eventual_inbox: Arc<Mutex<std::sync::mpsc::Receiver<EventualSet>>>,
    admit_eventual: Option<Admit>,
    refused: Arc<dyn Fn() -> Option<String> + Send + Sync>,
}

/// The eventual-property half of a [`PeerLink`]: how to send, where writes arrive.
pub(crate) struct EventualLink {
    pub(crate) send: Arc<dyn Fn(EventualSet) + Send + Sync>,
    pub(crate) inbox: std::sync::mpsc::Receiver<EventualSet>,
    /// Whether a write taken from the inbox still applies (a game client's: not if it
    /// wrote the property since the write arrived).
    pub(crate) admit: Option<Admit>,
}

type Admit = Arc<dyn Fn(&EventualSet) -> bool + Send + Sync>;

impl PeerLink {
    pub(crate) fn new(
        me: u64,
        send: Arc<dyn Fn(PeerRpc) + Send + Sync>,
        peers: Arc<dyn Fn() -> Vec<u64> + Send + Sync>,
        inbox: std::sync::mpsc::Receiver<PeerRpc>,
        eventual: EventualLink,
    ) -> Self {
        PeerLink {
            me,
            send,
            peers,
            inbox: Arc::new(Mutex::new(inbox)),
            send_eventual: eventual.send,
            eventual_inbox: Arc::new(Mutex::new(eventual.inbox)),
            admit_eventual: eventual.admit,
            refused: Arc::new(|| None),
        }
    }

    /// Says why the servers refused this client, when they did (a client's link).
    pub(crate) fn with_refusal(
        mut self,
        refused: Arc<dyn Fn() -> Option<String> + Send + Sync>,
    ) -> Self {
        self.refused = refused;
        self
    }

    /// Why this game client stopped for good, if it did: the servers refused it, or its one
    /// connection through the game's multiplayer peer ended. Always `None` on a server.
    pub fn refused(&self) -> Option<String> {
        (self.refused)()
    }

    /// Writes an eventual property (its `from` and stamp are set on the way).
    pub fn send_eventual(&self, path: String, property: String, value: synctree_proto::Value) {
        (self.send_eventual)(EventualSet {
            from: self.me,
            path,
            property,
            value,
            stamp: None,
            seq: 0,
        })
    }

    /// The next stamped eventual write to apply, if any: on a server, every one (its own
    /// included); on a game client, others' writes that are the latest there (it shows its
    /// own at once, and its server does not send them back).
    pub fn try_recv_eventual(&self) -> Option<EventualSet> {
        let inbox = self
            .eventual_inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        loop {
            let set = inbox.try_recv().ok()?;
            if self.admit_eventual.as_ref().is_none_or(|admit| admit(&set)) {
                return Some(set);
            }
        }
    }

    /// This process's peer id: 1 on a server, the client's own on a game client.
    pub fn unique_id(&self) -> u64 {
        self.me
    }

    /// The other peers: on a server every client of the cluster; on a client the servers
    /// (1) and the other clients.
    pub fn peers(&self) -> Vec<u64> {
        (self.peers)()
    }

    /// Sends an rpc (its `from` is set to this peer).
    pub fn send(&self, mut rpc: PeerRpc) {
        rpc.from = self.me;
        (self.send)(rpc)
    }

    /// The next rpc for this process, if any.
    pub fn try_recv(&self) -> Option<PeerRpc> {
        self.inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_recv()
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synctree_proto::Value;

    fn set(from: u64, seq: u32) -> EventualSet {
        EventualSet {
            from,
            path: "A".into(),
            property: "x".into(),
            value: Value::Int(0),
            stamp: None,
            seq,
        }
    }

    #[tokio::test]
    async fn relays_are_taken_once_and_never_after_a_later_one() {
        let (godot, _) = std::sync::mpsc::channel();
        let (eventual, _) = std::sync::mpsc::channel();
        let peers = Peers::new(1, godot, eventual);
        assert!(peers.relay_is_new(2, 7, 1));
        assert!(!peers.relay_is_new(2, 7, 1), "sent again: taken already");
        assert!(peers.relay_is_new(2, 7, 3), "2 was given up");
        assert!(
            !peers.relay_is_new(2, 7, 2),
            "2 arriving after 3 is not taken"
        );
        assert!(
            peers.relay_is_new(3, 7, 1),
            "another server numbers its own"
        );
        assert!(peers.relay_is_new(2, 8, 1), "server 2 restarted: a new run");
        assert!(!peers.relay_is_new(2, 8, 1));
    }

    #[test]
    fn a_property_settles_once_quiet_with_its_newest_write() {
        let t0 = tokio::time::Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let write = |path: &str, v: i64| EventualSet {
            path: path.into(),
            value: Value::Int(v),
            stamp: Some(Stamp::from_parts(v as u64, 1)),
            ..set(1, 0)
        };
        let all = usize::MAX;
        let mut s = Settling::default();
        s.went(&write("A", 1), false, ms(0));
        s.went(&write("B", 1), false, ms(10));
        s.went(&write("A", 2), false, ms(150));
        assert_eq!(s.next(), Some(ms(200)));
        assert!(s.due(ms(199), all).is_empty());
        // A was written again at 150: it waits on; B, quiet since 10, settles at 210.
        assert!(s.due(ms(200), all).is_empty());
        assert_eq!(s.due(ms(210), all), vec![write("B", 1)]);
        assert_eq!(s.due(ms(350), all), vec![write("A", 2)]);
        assert_eq!(s.next(), None);

        // An older write arriving late does not replace a newer one.
        s.went(&write("C", 5), false, ms(400));
        s.went(&write("C", 4), false, ms(450));
        assert_eq!(s.due(ms(700), all), vec![write("C", 5)]);

        // A newer write that went reliably leaves nothing to settle, and no older write
        // is tracked again after it; a property flapping between the two ways keeps one
        // place in the queue.
        for i in 0..100 {
            s.went(&write("D", 10 + 2 * i), false, ms(800 + i as u64));
            s.went(&write("D", 11 + 2 * i), true, ms(800 + i as u64));
        }
        s.went(&write("D", 3), false, ms(900));
        assert_eq!(s.order.len(), 1);
        assert!(s.due(ms(2000), all).is_empty());
        assert_eq!((s.next(), s.last.len()), (None, 0));

        // At most `max` at a time; the rest stay due.
        for p in ["E", "F", "G"] {
            s.went(&write(p, 1), false, ms(3000));
        }
        assert_eq!(s.due(ms(3200), 2).len(), 2);
        assert_eq!(s.due(ms(3200), 2), vec![write("G", 1)]);
    }

    #[test]
    fn a_writer_gets_only_others_writes_stamped_after_its_own() {
        let mut own = HashMap::new();
        let key = ("A".to_string(), "x".to_string());
        let at = |t: u64| Stamp::from_parts(t, 1);
        assert_eq!(
            for_client(&mut own, 7, &key, &set(1, 0), at(10)),
            Some(0),
            "no writes of its own yet"
        );
        assert_eq!(
            for_client(&mut own, 7, &key, &set(7, 3), at(20)),
            None,
            "its own write is not sent back"
        );
        assert_eq!(
            for_client(&mut own, 7, &key, &set(1, 0), at(15)),
            None,
            "stamped before its write 3, which wins"
        );
        assert_eq!(
            for_client(&mut own, 7, &key, &set(1, 0), at(30)),
            Some(3),
            "stamped after its write 3: applies unless it wrote since"
        );
        let other = ("A".to_string(), "y".to_string());
        assert_eq!(
            for_client(&mut own, 7, &other, &set(1, 0), at(5)),
            Some(0),
            "another property"
        );
    }
}
