//! A game client's connection to the cluster: connects to one of the servers' client ports,
//! says hello with its token, and hands what the server streams to the thread that owns the
//! client's live tree, as [`Applied`] batches in log order, exactly once each. When its server
//! goes away it connects to the next one and resumes from the last index it applied.
//!
//! Requests (writes proposed on the client's behalf, linearizable reads) go to the server it
//! is connected to; their [`Completion`]s come back by ticket, as a server's do. A request
//! made while no server is reachable waits for the next connection, up to
//! [`REQUEST_TIMEOUT`]; one in flight when the connection drops fails as uncertain (it may
//! have been committed).
//!
//! ```text
//!   servers[i] ── QUIC (cluster CA, node-<id>.synctree) ─▶ Hello { token, resume }
//!       ◀─ Welcome | Refused     ◀─ Reset { index, tree }     ◀─ Entries ...
//!   ClientCursor: skip index <= last, refuse gaps ─▶ Applied::{Reset, Effects} ─▶ main thread
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn::Endpoint;
use synctree_net::tls::node_name;
use synctree_proto::{
    decode, encode, ClientCursor, ClientRequest, EventualName, EventualSet, HandleValue, Hello,
    NameDecoder, Op, Outcome, PeerRpc, PropertyHandles, Request, ServerMessage,
    CLIENT_PROTOCOL_VERSION, MAX_EVENTUAL_HANDLES, SERVER_PEER,
};
use synctree_raft::{Applied, NodeId};
use tokio::sync::mpsc;

use crate::pipe::{FrameRead, FrameWrite, PipeRead, PipeWrite};
use crate::proposer::{Completion, Done, RequestError};
use crate::server::StartError;

/// A request not sent within this long of being made (no server reachable) fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest message a client accepts from a server (a whole-tree reset included).
const MAX_MESSAGE_BYTES: usize = 256 << 20;
/// Wait before trying the next server after a failure.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How long a client moving between servers still reports its peers as connected (its
/// game sees no one leave for a reconnect).
const MOVING_GRACE: Duration = Duration::from_secs(10);
/// A connect attempt (QUIC + TLS handshake) is abandoned after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Where a game client connects and how it proves who it is.
#[derive(Debug, Clone)]
pub struct GameClientConfig {
    /// Client ports of the servers, with their node ids (checked against their certificates).
    pub servers: Vec<(NodeId, SocketAddr)>,
    /// The cluster CA certificate (PEM): the only certificate the client trusts.
    pub ca: PathBuf,
    /// The client's token.
    pub token: String,
}

/// What a client knows of its connection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientStatus {
    /// The server it is connected to now.
    pub server: Option<NodeId>,
    /// Its peer id (given by the servers, the same on each).
    pub peer: Option<u64>,
    /// The last log index handed to the live tree.
    pub index: u64,
    /// Connections made so far (a reconnect adds one).
    pub connections: u64,
    /// Why the last connection ended or failed, if one did.
    pub last_error: Option<String>,
    /// A server refused this client (a bad token): it stops trying.
    pub refused: Option<String>,
    /// The other game clients connected to the cluster, as its server last said.
    pub peers: Vec<u64>,
    /// Datagrams received from servers (unreliable rpcs and eventual writes).
    pub datagrams: u64,
    /// The session over the game's transport ended (its peer disconnected, or the server
    /// ended it): there is no other server to try.
    pub ended: Option<String>,
}

/// A running game client; dropping it disconnects.
pub struct GameClient {
    runtime: Option<tokio::runtime::Runtime>,
    /// QUIC (none when the game's transport carries the session).
    endpoint: Option<Endpoint>,
    applied: Mutex<std::sync::mpsc::Receiver<Applied>>,
    status: Arc<Mutex<ClientStatus>>,
    requests: mpsc::UnboundedSender<Pending>,
    /// Requests held back by [`GameClient::hold`], if holding.
    held: crate::held::Held<Pending>,
    completions: Mutex<std::sync::mpsc::Receiver<Completion>>,
    done: std::sync::mpsc::Sender<Completion>,
    next_ticket: AtomicU64,
    me: u64,
    rpc_inbox: Mutex<Option<std::sync::mpsc::Receiver<PeerRpc>>>,
    eventual_inbox: Mutex<Option<std::sync::mpsc::Receiver<EventualSet>>>,
    /// Numbered where the game writes (its thread), checked where others' writes are applied.
    own: Arc<Mutex<OwnWrites>>,
}

/// This client's own eventual writes: the number of the last one of each (path, property)
/// sent on the current connection. Its server does not send a client's writes back (the
/// client shows them at once); it sends another's write of the same property with the number
/// of this client's last write it had stamped before it, and the write applies here only if
/// this client has made none since ([`EventualSet::seq`]). Writes are numbered when the game
/// makes them and others' writes checked again when the game takes them, so a write made
/// after another's arrived (and before it was applied) wins here as it does everywhere.
#[derive(Default)]
struct OwnWrites {
    next: u32,
    last: HashMap<(String, String), u32>,
}

impl OwnWrites {
    fn number(&mut self, set: &mut EventualSet) {
        self.next = self.next.checked_add(1).unwrap_or(1);
        set.seq = self.next;
        self.last
            .insert((set.path.clone(), set.property.clone()), self.next);
    }

    /// Write `set` goes out: after a new server's welcome cleared the record, the numbers of
    /// writes made before it are known again (a later write's number stays).
    fn note_sent(&mut self, set: &EventualSet) {
        let key = (set.path.clone(), set.property.clone());
        match self.last.get(&key) {
            Some(mine) if !synctree_proto::seq_after(set.seq, *mine) => {}
            _ => {
                self.last.insert(key, set.seq);
            }
        }
    }

    /// Whether another's write, as its server sent it, is the latest here.
    fn admits(&self, set: &EventualSet) -> bool {
        // Numbers wrap: `mine` is at or before `set.seq`.
        self.last
            .get(&(set.path.clone(), set.property.clone()))
            .is_none_or(|mine| !synctree_proto::seq_after(*mine, set.seq))
    }
}

/// A request on its way to a server (no ticket: an rpc or eventual write, which has no
/// completion).
struct Pending {
    ticket: Option<u64>,
    request: ClientRequest,
    made: Instant,
}

impl GameClient {
    /// Starts connecting (in the background); the first server reached streams the tree.
    pub fn connect(cfg: GameClientConfig) -> Result<GameClient, StartError> {
        if cfg.servers.is_empty() {
            return Err(StartError::Raft(
                "a game client needs at least one server".into(),
            ));
        }
        let runtime = client_runtime()?;
        let endpoint = {
            let _guard = runtime.enter();
            synctree_net::clients::connector(&cfg.ca)?
        };
        let (client, link) = GameClient::new(runtime, Some(endpoint.clone()), &cfg.token);
        client.spawn(run(cfg, endpoint, link));
        Ok(client)
    }

    /// A client whose session travels through the game's own transport (a Godot
    /// MultiplayerPeer connected to one server): the game pumps frames between the returned
    /// [`FramePipe`](crate::FramePipe) and its peer. Without QUIC there is no other server
    /// to move to: when the pipe ends, so does the client ([`ClientStatus::ended`]).
    pub fn over_pipe(token: String) -> Result<(GameClient, crate::FramePipe), StartError> {
        let runtime = client_runtime()?;
        let (client, link) = GameClient::new(runtime, None, &token);
        let (pipe, read, write) = crate::pipe::pipe(crate::pipe::FROM_SERVER_FRAMES);
        client.spawn(run_pipe(token, read, write, link));
        Ok((client, pipe))
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        if let Some(rt) = &self.runtime {
            rt.spawn(task);
        }
    }

    fn new(
        runtime: tokio::runtime::Runtime,
        endpoint: Option<Endpoint>,
        token: &str,
    ) -> (GameClient, Link) {
        let (tx, rx) = std::sync::mpsc::channel();
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let (done, completions) = std::sync::mpsc::channel();
        let (rpcs, rpc_inbox) = std::sync::mpsc::channel();
        let (eventual, eventual_inbox) = std::sync::mpsc::channel();
        let status = Arc::new(Mutex::new(ClientStatus::default()));
        let own = Arc::new(Mutex::new(OwnWrites::default()));
        let link = Link {
            own: own.clone(),
            applied: tx,
            requests: requests_rx,
            backlog: VecDeque::new(),
            done: done.clone(),
            status: status.clone(),
            rpcs,
            eventual,
        };
        let client = GameClient {
            runtime: Some(runtime),
            endpoint,
            applied: Mutex::new(rx),
            status,
            requests,
            held: Default::default(),
            completions: Mutex::new(completions),
            done,
            next_ticket: AtomicU64::new(1),
            me: crate::clients::peer_id_of(token),
            rpc_inbox: Mutex::new(Some(rpc_inbox)),
            eventual_inbox: Mutex::new(Some(eventual_inbox)),
            own,
        };
        (client, link)
    }

    /// This client's end of the game peers' rpcs and presence (for the multiplayer API).
    /// The first call takes the rpcs for this client; later calls get a link that sends
    /// only. Rpcs made while no server is reachable wait for the next connection (up to
    /// [`REQUEST_TIMEOUT`]).
    pub fn peer_link(&self) -> crate::PeerLink {
        let inbox = crate::peers::take_inbox(&self.rpc_inbox);
        let eventual_inbox = crate::peers::take_inbox(&self.eventual_inbox);
        let requests = self.requests.clone();
        let eventual_requests = self.requests.clone();
        let status = self.status.clone();
        let refusal = self.status.clone();
        let (numbering, admitting) = (self.own.clone(), self.own.clone());
        let moving: Mutex<Option<Instant>> = Mutex::new(None);
        let untracked = |request| Pending {
            ticket: None,
            request,
            made: Instant::now(),
        };
        crate::PeerLink::new(
            self.me,
            Arc::new(move |rpc| {
                let _ = requests.send(untracked(ClientRequest::Rpc(rpc)));
            }),
            Arc::new(move || {
                let s = status.lock().unwrap_or_else(|p| p.into_inner());
                let known = || {
                    std::iter::once(SERVER_PEER)
                        .chain(s.peers.iter().copied())
                        .collect()
                };
                let mut since = lock(&moving);
                if s.server.is_some() {
                    *since = None;
                    return known();
                }
                // Between two servers it is still in the cluster: the same peers, unless
                // that lasts (then, or once refused, it is alone).
                let gone = s.refused.is_some() || s.ended.is_some() || s.connections == 0;
                let moving_for = since.get_or_insert_with(Instant::now).elapsed();
                if gone || moving_for > MOVING_GRACE {
                    return Vec::new();
                }
                known()
            }),
            inbox,
            crate::peers::EventualLink {
                send: Arc::new(move |mut set| {
                    lock(&numbering).number(&mut set);
                    let _ = eventual_requests.send(untracked(ClientRequest::Eventual(set)));
                }),
                inbox: eventual_inbox,
                admit: Some(Arc::new(move |set| lock(&admitting).admits(set))),
            },
        )
        .with_refusal(Arc::new(move || {
            let s = refusal.lock().unwrap_or_else(|p| p.into_inner());
            s.refused.clone().or_else(|| s.ended.clone())
        }))
    }

    /// Queues a write, proposed on this client's behalf; returns the ticket its
    /// [`Completion`] will carry. A spawn's `owner` 0 means this client.
    pub fn submit(&self, op: Op) -> u64 {
        self.request(ClientRequest::Write(op))
    }

    /// Queues a linearizable read of a synced property.
    pub fn submit_read(&self, path: String, property: String) -> u64 {
        self.request(ClientRequest::Read { path, property })
    }

    fn request(&self, request: ClientRequest) -> u64 {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let pending = Pending {
            ticket: Some(ticket),
            request,
            made: Instant::now(),
        };
        if let Some(pending) = self.held.keep(pending) {
            self.enqueue(pending);
        }
        ticket
    }

    /// Holds back the requests made from now until [`GameClient::release`], which sends
    /// them together (in one write; the server proposes what arrives together in one batch).
    pub fn hold(&self) {
        self.held.hold();
    }

    /// Sends what was held, in order.
    pub fn release(&self) {
        for pending in self.held.take() {
            self.enqueue(pending);
        }
    }

    fn enqueue(&self, pending: Pending) {
        let ticket = pending.ticket.unwrap_or(0);
        if self.requests.send(pending).is_err() {
            let reason = self
                .status()
                .refused
                .map(|r| format!("the servers refused this client: {r}"))
                .unwrap_or_else(|| "the client is shut down".into());
            let _ = self.done.send(Completion {
                ticket,
                result: Err(RequestError::refused(reason)),
            });
        }
    }

    /// Moves finished requests into `out` without blocking.
    pub fn poll_completions(&self, out: &mut Vec<Completion>) {
        let rx = self.completions.lock().unwrap_or_else(|p| p.into_inner());
        out.extend(rx.try_iter());
    }

    /// The next batch for the live tree, if any, in log order.
    pub fn try_recv_applied(&self) -> Option<Applied> {
        self.applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_recv()
            .ok()
    }

    pub fn status(&self) -> ClientStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for GameClient {
    /// Says goodbye to the server (so it tells the others at once), then stops.
    fn drop(&mut self) {
        if let Some(endpoint) = &self.endpoint {
            endpoint.close(quinn::VarInt::from_u32(0), b"client leaving");
        }
        if let Some(rt) = self.runtime.take() {
            if let (Err(_), Some(endpoint)) =
                (tokio::runtime::Handle::try_current(), self.endpoint.clone())
            {
                rt.block_on(async {
                    let _ = tokio::time::timeout(Duration::from_millis(200), endpoint.wait_idle())
                        .await;
                });
            }
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// The client task's ends of its channels to the GameClient.
struct Link {
    applied: std::sync::mpsc::Sender<Applied>,
    requests: mpsc::UnboundedReceiver<Pending>,
    /// Requests made while no server was connected, oldest first.
    backlog: VecDeque<Pending>,
    done: std::sync::mpsc::Sender<Completion>,
    status: Arc<Mutex<ClientStatus>>,
    rpcs: std::sync::mpsc::Sender<PeerRpc>,
    eventual: std::sync::mpsc::Sender<EventualSet>,
    own: Arc<Mutex<OwnWrites>>,
}

/// Counts the eventual writes game clients hand to their live trees: their stamp there
/// (servers send them in the order they win, see [`ServerMessage::Updates`]). One counter
/// for the process, so a tree that gets a new client goes on from where it was.
static EVENTUAL_ORDER: AtomicU64 = AtomicU64::new(1);

impl Link {
    /// Hands on others' eventual writes that are the latest here (see [`OwnWrites`]), each
    /// stamped after the ones before: they arrive in the order they win.
    fn eventual_arrived(&self, sets: Vec<EventualSet>) {
        for mut set in sets {
            if lock(&self.own).admits(&set) {
                let order = EVENTUAL_ORDER.fetch_add(1, Ordering::Relaxed);
                set.stamp = Some(synctree_proto::Stamp::from_parts(order, 0));
                let _ = self.eventual.send(set);
            }
        }
    }

    fn complete(&self, ticket: u64, result: Result<Done, RequestError>) {
        let _ = self.done.send(Completion { ticket, result });
    }

    /// No more requests will be sent: fails every waiting one with `reason`.
    fn fail_all(&mut self, reason: &str) {
        self.requests.close();
        self.expire();
        for ticket in std::mem::take(&mut self.backlog)
            .into_iter()
            .filter_map(|p| p.ticket)
        {
            self.complete(ticket, Err(RequestError::refused(reason.to_owned())));
        }
    }

    /// Moves new requests to the backlog and fails those waiting too long.
    fn expire(&mut self) {
        while let Ok(p) = self.requests.try_recv() {
            self.backlog.push_back(p);
        }
        while self
            .backlog
            .front()
            .is_some_and(|p| p.made.elapsed() > REQUEST_TIMEOUT)
        {
            if let Some(ticket) = self.backlog.pop_front().and_then(|p| p.ticket) {
                let e = format!("no server reachable within {REQUEST_TIMEOUT:?}; not sent");
                self.complete(ticket, Err(RequestError::refused(e)));
            }
        }
    }
}

fn client_runtime() -> Result<tokio::runtime::Runtime, StartError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("synctree-client")
        .enable_all()
        .build()
        .map_err(StartError::Runtime)
}

async fn run(cfg: GameClientConfig, endpoint: Endpoint, mut link: Link) {
    let mut cursor = ClientCursor::default();
    for (id, addr) in cfg.servers.iter().cycle() {
        link.expire();
        let outcome = session(&endpoint, *id, *addr, &cfg.token, &mut cursor, &mut link).await;
        update(&link.status, &|s| s.server = None);
        match outcome {
            Ok(Ended::Refused(reason)) => {
                tracing::error!("server {id} refused this client: {reason}");
                update(&link.status, &|s| s.refused = Some(reason.clone()));
                link.fail_all(&format!("the servers refused this client: {reason}"));
                return;
            }
            Ok(Ended::LiveTreeGone) => return,
            Err(e) => {
                tracing::info!("client: connection to server {id} ({addr}) ended: {e}");
                let e = format!("server {id} ({addr}): {e}");
                update(&link.status, &|s| s.last_error = Some(e.clone()));
            }
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// The one session of a client over the game's transport.
async fn run_pipe(token: String, read: PipeRead, mut write: PipeWrite, mut link: Link) {
    let mut cursor = ClientCursor::default();
    let outcome = async {
        send_hello(&mut write, &token, &cursor).await?;
        let (messages_tx, mut messages) = mpsc::channel(64);
        let reader = tokio::spawn(read_messages(read, messages_tx));
        let mut in_flight = HashSet::new();
        let ended = serve_session(
            None,
            &mut cursor,
            &mut link,
            &mut write,
            &mut messages,
            &mut in_flight,
        )
        .await;
        reader.abort();
        for ticket in in_flight {
            let e = "the connection ended before the outcome arrived".to_owned();
            link.complete(ticket, Err(RequestError::uncertain(e)));
        }
        ended
    }
    .await;
    update(&link.status, &|s| s.server = None);
    let reason = match outcome {
        Ok(Ended::LiveTreeGone) => return,
        Ok(Ended::Refused(reason)) => {
            tracing::error!("the server refused this client: {reason}");
            update(&link.status, &|s| s.refused = Some(reason.clone()));
            format!("the server refused this client: {reason}")
        }
        Err(e) => {
            tracing::info!("client: connection through the multiplayer peer ended: {e}");
            update(&link.status, &|s| s.ended = Some(e.clone()));
            format!("the connection to the server ended: {e}")
        }
    };
    link.fail_all(&reason);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn update(status: &Mutex<ClientStatus>, f: &dyn Fn(&mut ClientStatus)) {
    f(&mut status.lock().unwrap_or_else(|p| p.into_inner()))
}

enum Ended {
    Refused(String),
    LiveTreeGone,
}

async fn session(
    endpoint: &Endpoint,
    id: NodeId,
    addr: SocketAddr,
    token: &str,
    cursor: &mut ClientCursor,
    link: &mut Link,
) -> Result<Ended, String> {
    let connecting = endpoint
        .connect(addr, &node_name(id))
        .map_err(|e| e.to_string())?;
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| format!("no handshake within {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send_hello(&mut send, token, cursor).await?;
    // Messages are read by their own task (a frame read is not cancel safe), so this one
    // can wait for messages and requests at once; datagrams by another.
    let (messages_tx, mut messages) = mpsc::channel(64);
    let reader = tokio::spawn(read_messages(recv, messages_tx.clone()));
    let datagrams = tokio::spawn(read_datagram_messages(
        conn.clone(),
        messages_tx,
        link.status.clone(),
    ));
    let mut send = crate::pipe::QuicOut {
        send,
        conn: conn.clone(),
        stalled_after: crate::pipe::CLIENT_STALLED,
    };
    let mut in_flight = HashSet::new();
    let ended = serve_session(
        Some(id),
        cursor,
        link,
        &mut send,
        &mut messages,
        &mut in_flight,
    )
    .await;
    reader.abort();
    datagrams.abort();
    for ticket in in_flight {
        let e = format!("connection to server {id} lost before the outcome arrived");
        link.complete(ticket, Err(RequestError::uncertain(e)));
    }
    ended
}

async fn send_hello(
    send: &mut impl FrameWrite,
    token: &str,
    cursor: &ClientCursor,
) -> Result<(), String> {
    let hello = Hello {
        version: CLIENT_PROTOCOL_VERSION,
        token: token.to_owned(),
        resume: cursor.resume(),
    };
    send.write(&[&encode(&hello).map_err(|e| e.to_string())?])
        .await
}

async fn read_messages(mut recv: impl FrameRead, out: mpsc::Sender<Result<ServerMessage, String>>) {
    loop {
        let message = match recv.read(MAX_MESSAGE_BYTES).await {
            Ok(body) => {
                decode(&body, MAX_MESSAGE_BYTES).map_err(|e| format!("malformed message: {e}"))
            }
            Err(e) => Err(e.to_string()),
        };
        let failed = message.is_err();
        if out.send(message).await.is_err() || failed {
            return;
        }
    }
}

/// Datagrams from the server (unreliable rpcs, eventual writes), as messages.
async fn read_datagram_messages(
    conn: quinn::Connection,
    out: mpsc::Sender<Result<ServerMessage, String>>,
    status: Arc<Mutex<ClientStatus>>,
) {
    while let Ok(d) = conn.read_datagram().await {
        update(&status, &|s| s.datagrams += 1);
        let message = decode(&d, d.len()).map_err(|e| format!("malformed datagram: {e}"));
        let failed = message.is_err();
        if out.send(message).await.is_err() || failed {
            return;
        }
    }
}

/// Requests written to the stream in one go, at most.
const MAX_REQUESTS_PER_WRITE: usize = 256;
/// The updates of message `seq` to apply: not older than what a later message already
/// brought for the same property (in one message, later entries are later writes); those
/// of properties not named yet wait in `early` (the newest of each, a bounded number).
fn take_updates(
    names: &HashMap<u32, (String, String)>,
    updated: &mut HashMap<u32, u32>,
    early: &mut HashMap<u32, (u32, synctree_proto::Update)>,
    seq: u32,
    sets: Vec<synctree_proto::Update>,
) -> Vec<EventualSet> {
    let mut fresh = Vec::with_capacity(sets.len());
    let older = |last: &u32| synctree_proto::seq_after(*last, seq);
    for u in sets {
        let Some((path, property)) = names.get(&u.handle) else {
            let keep = early.get(&u.handle).is_none_or(|(last, _)| !older(last));
            if keep && (early.len() < MAX_EVENTUAL_HANDLES || early.contains_key(&u.handle)) {
                early.insert(u.handle, (seq, u));
            }
            continue;
        };
        if updated.get(&u.handle).is_some_and(older) {
            continue;
        }
        updated.insert(u.handle, seq);
        fresh.push(EventualSet {
            from: 0,
            path: path.clone(),
            property: property.clone(),
            value: u.value,
            stamp: None,
            seq: u.after,
        });
    }
    fresh
}

/// Eventual writes packed in one datagram, up to about this many bytes.
const EVENTUALS_PER_DATAGRAM_BYTES: usize = 1000;

async fn send_request(
    send: &mut impl FrameWrite,
    p: &Pending,
    handles: &mut PropertyHandles,
    own: &Mutex<OwnWrites>,
) -> Result<(), String> {
    send_requests(send, std::slice::from_ref(p), handles, own).await
}

/// Writes `batch` in order: those that may be lost as datagrams, the others in one write
/// on the stream (after the property handles they name).
async fn send_requests(
    send: &mut impl FrameWrite,
    batch: &[Pending],
    handles: &mut PropertyHandles,
    own: &Mutex<OwnWrites>,
) -> Result<(), String> {
    let encode = |id, request| encode(&Request { id, request }).map_err(|e| e.to_string());
    let mut frames = Vec::with_capacity(batch.len());
    // Eventual writes by handle share datagrams of up to ~1000 bytes, numbered in a row; a
    // property's first write goes by name (its handle is declared on the stream meanwhile).
    let (mut first, mut pack, mut size) = (0u32, Vec::new(), 0);
    let mut by_name = Vec::new();
    // Handles declared by this batch: the server learns them only once its stream frames
    // arrive, after this batch's datagrams.
    let mut declared = HashSet::new();
    for p in batch {
        if let ClientRequest::Eventual(set) = &p.request {
            let set = set.clone();
            lock(own).note_sent(&set);
            let handle = match handles.eventual(&set.path, &set.property) {
                EventualName::Known(handle) if !declared.contains(&handle) => handle,
                EventualName::Known(_) | EventualName::ByName => {
                    by_name.push(set);
                    continue;
                }
                EventualName::Declare(declare) => {
                    if let ClientRequest::Handle { handle, .. } = &declare {
                        declared.insert(*handle);
                    }
                    frames.push(encode(0, declare)?);
                    by_name.push(set);
                    continue;
                }
            };
            let update = HandleValue {
                handle,
                value: set.value,
            };
            let len = synctree_proto::encode(&update)
                .map_err(|e| e.to_string())?
                .len();
            let in_row = first.wrapping_add(pack.len() as u32) == set.seq;
            if !pack.is_empty() && (size + len > EVENTUALS_PER_DATAGRAM_BYTES || !in_row) {
                let sets = std::mem::take(&mut pack);
                send.send_datagram(encode(0, ClientRequest::Updates { first, sets })?)
                    .await?;
                size = 0;
            }
            if pack.is_empty() {
                first = set.seq;
            }
            size += len;
            pack.push(update);
            continue;
        }
        if p.request.unreliable() {
            send.send_datagram(encode(p.ticket.unwrap_or(0), p.request.clone())?)
                .await?;
            continue;
        }
        let (declare, request) = handles.outgoing(&p.request);
        if let Some(declare) = declare {
            frames.push(encode(0, declare)?);
        }
        frames.push(encode(p.ticket.unwrap_or(0), request)?);
    }
    if !pack.is_empty() {
        send.send_datagram(encode(0, ClientRequest::Updates { first, sets: pack })?)
            .await?;
    }
    // Those by name, as few datagrams as they fit in.
    let (mut pack, mut size) = (Vec::new(), 0);
    for set in by_name {
        let len = synctree_proto::encode(&set)
            .map_err(|e| e.to_string())?
            .len();
        if !pack.is_empty() && size + len > EVENTUALS_PER_DATAGRAM_BYTES {
            let sets = std::mem::take(&mut pack);
            send.send_datagram(encode(0, ClientRequest::Eventuals(sets))?)
                .await?;
            size = 0;
        }
        size += len;
        pack.push(set);
    }
    match pack.len() {
        0 => {}
        1 => {
            let one = ClientRequest::Eventual(pack.remove(0));
            send.send_datagram(encode(0, one)?).await?
        }
        _ => {
            send.send_datagram(encode(0, ClientRequest::Eventuals(pack))?)
                .await?
        }
    }
    match frames.as_slice() {
        [] => Ok(()),
        [one] => send.write(&[one]).await,
        many => {
            let parts: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
            send.write_frames(&parts).await
        }
    }
}

/// Serves a session from the hello on; `id` is the server expected (any, through the game's
/// transport).
async fn serve_session(
    id: Option<NodeId>,
    cursor: &mut ClientCursor,
    link: &mut Link,
    send: &mut impl FrameWrite,
    messages: &mut mpsc::Receiver<Result<ServerMessage, String>>,
    in_flight: &mut HashSet<u64>,
) -> Result<Ended, String> {
    let status = link.status.clone();
    let set = |f: &dyn Fn(&mut ClientStatus)| update(&status, f);
    let mut welcomed = false;
    // The cluster this connection's server belongs to (what its resets are states of).
    let mut cluster_of_server = String::new();
    let mut handles = PropertyHandles::default();
    // The last log index this connection carried (what a `Committed` counts back from).
    let mut received = 0u64;
    let mut names = NameDecoder::default();
    // The server's names for eventual writes, and the last message that updated each.
    let mut server_handles: HashMap<u32, (String, String)> = HashMap::new();
    let mut updated: HashMap<u32, u32> = HashMap::new();
    // Updates whose handle is not named yet (their datagram overtook the name on the
    // stream): the newest of each, applied when the name arrives.
    let mut early: HashMap<u32, (u32, synctree_proto::Update)> = HashMap::new();
    loop {
        let message = tokio::select! {
            m = messages.recv() => m.ok_or("connection reader stopped")??,
            p = link.requests.recv(), if welcomed => {
                let Some(p) = p else { return Ok(Ended::LiveTreeGone) };
                // What else is waiting goes in the same write.
                let mut batch = vec![p];
                while batch.len() < MAX_REQUESTS_PER_WRITE {
                    match link.requests.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                in_flight.extend(batch.iter().filter_map(|p| p.ticket));
                send_requests(send, &batch, &mut handles, &link.own).await?;
                continue;
            }
        };
        let applied = match message {
            ServerMessage::Refused { reason } => return Ok(Ended::Refused(reason)),
            ServerMessage::Welcome {
                server,
                cluster,
                peer,
            } => {
                if let Some(id) = id.filter(|id| *id != server) {
                    return Err(format!("expected server {id}, reached server {server}"));
                }
                if cursor.cluster.as_ref().is_some_and(|c| *c != cluster) {
                    tracing::warn!(
                        "server {server} belongs to another cluster ({cluster}): starting over"
                    );
                }
                welcomed = true;
                cluster_of_server.clone_from(&cluster);
                // A new server has seen none of this client's writes: numbers start over.
                lock(&link.own).last.clear();
                set(&|s| {
                    s.server = Some(server);
                    s.peer = Some(peer);
                    s.connections += 1;
                });
                // Keep the cluster for the next resume.
                if cursor.cluster.is_none() {
                    cursor.cluster = Some(cluster);
                }
                // What was asked while disconnected goes first, in order.
                while let Some(p) = link.backlog.pop_front() {
                    in_flight.extend(p.ticket);
                    send_request(send, &p, &mut handles, &link.own).await?;
                }
                continue;
            }
            ServerMessage::Rpc(rpc) => {
                let _ = link.rpcs.send(rpc);
                continue;
            }
            ServerMessage::Eventual(set) => {
                link.eventual_arrived(vec![set]);
                continue;
            }
            ServerMessage::Handle {
                handle,
                path,
                property,
            } => {
                if server_handles.len() >= MAX_EVENTUAL_HANDLES
                    && !server_handles.contains_key(&handle)
                {
                    return Err(format!(
                        "the server named more than {MAX_EVENTUAL_HANDLES} eventual properties"
                    ));
                }
                server_handles.insert(handle, (path, property));
                if let Some((seq, u)) = early.remove(&handle) {
                    let fresh =
                        take_updates(&server_handles, &mut updated, &mut early, seq, vec![u]);
                    link.eventual_arrived(fresh);
                }
                continue;
            }
            ServerMessage::Updates { seq, sets } => {
                let fresh = take_updates(&server_handles, &mut updated, &mut early, seq, sets);
                link.eventual_arrived(fresh);
                continue;
            }
            ServerMessage::Eventuals(sets) => {
                link.eventual_arrived(sets);
                continue;
            }
            ServerMessage::Peers(peers) => {
                set(&|s| s.peers = peers.clone());
                continue;
            }
            ServerMessage::Outcome {
                id: ticket,
                outcome,
            } => {
                if !in_flight.remove(&ticket) {
                    return Err(format!(
                        "the server answered request {ticket}, which it was not asked"
                    ));
                }
                let result = match outcome {
                    Outcome::Written { index, stamp } => Ok(Done::Write { index, stamp }),
                    Outcome::Read { index, value } => Ok(Done::Read { index, value }),
                    Outcome::Failed { reason, uncertain } => Err(RequestError {
                        message: reason,
                        uncertain,
                    }),
                };
                link.complete(ticket, result);
                continue;
            }
            ServerMessage::Committed {
                id: ticket,
                back,
                stamp,
            } => {
                if !in_flight.remove(&ticket) {
                    return Err(format!(
                        "the server answered request {ticket}, which it was not asked"
                    ));
                }
                let index = received.checked_sub(back).ok_or_else(|| {
                    format!("request {ticket} committed {back} entries before entry {received}")
                })?;
                link.complete(ticket, Ok(Done::Write { index, stamp }));
                continue;
            }
            _ if !welcomed => return Err("the server sent data before its welcome".into()),
            ServerMessage::Reset {
                index,
                tree,
                filtered,
            } => {
                received = index;
                cursor.reset(&cluster_of_server, index, filtered);
                Applied::Reset { index, tree }
            }
            ServerMessage::Names(given) => {
                names.define_all(given)?;
                continue;
            }
            ServerMessage::Entries(entries) => {
                received = entries.last().map_or(received, |e| e.index);
                // Every entry is unpacked, those it already has too: they may define names.
                let entries = entries
                    .into_iter()
                    .map(|e| names.unpack(e))
                    .collect::<Result<Vec<_>, String>>()?;
                let fresh = cursor.take_new(entries)?;
                if fresh.is_empty() {
                    continue;
                }
                Applied::Effects {
                    index: cursor.index,
                    effects: fresh.into_iter().flat_map(|e| e.effects).collect(),
                }
            }
        };
        let index = cursor.index;
        if link.applied.send(applied).is_err() {
            return Ok(Ended::LiveTreeGone);
        }
        set(&|s| s.index = index);
    }
}

#[cfg(test)]
mod own_writes_tests {
    use super::*;

    fn set(path: &str, seq: u32) -> EventualSet {
        EventualSet {
            from: 1,
            path: path.into(),
            property: "x".into(),
            value: synctree_proto::Value::Int(0),
            stamp: None,
            seq,
        }
    }

    #[test]
    fn others_writes_apply_unless_this_client_wrote_since() {
        let mut own = OwnWrites::default();
        assert!(own.admits(&set("A", 0)), "never written here");
        let (mut a1, mut a2) = (set("A", 0), set("A", 0));
        own.number(&mut a1);
        own.number(&mut a2);
        assert_eq!((a1.seq, a2.seq), (1, 2));
        assert!(
            !own.admits(&set("A", 0)),
            "sent before any of ours reached the server"
        );
        assert!(!own.admits(&set("A", 1)), "our write 2 came after it");
        assert!(own.admits(&set("A", 2)), "stamped after our last write");
        assert!(own.admits(&set("B", 0)), "another node");
        own.last.clear();
        assert!(own.admits(&set("A", 0)), "a new server: numbers start over");
    }
}
