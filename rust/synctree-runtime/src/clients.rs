//! Serving game clients on the client port: a client says hello with a token, is welcomed
//! with its peer id, then receives the synced tree (or, resuming, what it missed) and every
//! committed entry after it, in log order, for as long as it stays.
//!
//! ```text
//!   accept ─▶ task per client: hello ─▶ token? ─▶ Welcome ─▶ Feed::subscribe(cursor)
//!                                                   ├─ Reset / history chunks
//!                                                   └─ live chunks ─▶ (lagged or reset: again)
//! ```
//!
//! After its hello a client may send requests on the same stream: writes are proposed on
//! its behalf (its peer id goes into the log, and the state machine lets a client change only
//! nodes it owns), reads go through the leader's read index. A client may spawn only scenes
//! on the spawnable list, makes at most `rate_per_second` requests per second (a token
//! bucket of `burst`; over it a request fails at once, saying so), and a request frame
//! larger than [`MAX_REQUEST_BYTES`] disconnects it.
//!
//! Eventual writes travel as datagrams and name their property by a handle declared once on
//! the stream, both ways. A server sends a client the others' writes only (see
//! [`crate::peers`]), each property's in the order they win, numbered by message instead
//! of stamped ([`ServerMessage::Updates`]).
//!
//! A client that breaks the protocol (an oversized, truncated or undecodable hello or
//! request, a wrong version or token) is refused and disconnected, with the reason in this
//! server's log; other clients and the cluster are not affected.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use std::num::NonZeroU32;

use governor::{Quota, RateLimiter};
use quinn::{Connection, Endpoint, Incoming, VarInt};
use synctree_net::frame::FrameError;
use synctree_net::TlsMaterial;
use synctree_proto::{
    decode, encode, ClientRequest, Hello, Op, Outcome, PropertyHandles, Request, ServerMessage,
    CLIENT_PROTOCOL_VERSION, MAX_EVENTUAL_HANDLES, MAX_HELLO_BYTES, MAX_REQUEST_BYTES,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::peers::Peers;
use crate::pipe::{FrameRead, FrameWrite};
use crate::proposer::{Done, RequestError, Submission, Submitter, MAX_BATCH_EVENTS};
use synctree_raft::{Feed, FeedItem, NodeId, SharedState, Start};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::task::JoinHandle;

/// How long a new connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Close codes of the client port.
mod close {
    pub const SHUTDOWN: u32 = 0;
    pub const REFUSED: u32 = 1;
    pub const PROTOCOL: u32 = 2;
    /// This server is out of touch with a quorum: the client should try another.
    pub const NO_QUORUM: u32 = 3;
}

/// Where and whom this server serves as game clients.
#[derive(Debug, Clone)]
pub struct ClientsConfig {
    /// UDP address of the QUIC client port (apart from the peer port); `None`: clients come
    /// only through the game's own transport ([`crate::Node::attach_client`]).
    pub listen: Option<SocketAddr>,
    /// Tokens that admit a client; each token is one client identity (its peer id derives
    /// from it, so it is the same on every server). None listed: the QUIC port admits no one
    /// without the game's auth callback, and clients attached through the game's transport
    /// are admitted whatever their token.
    pub tokens: Vec<String>,
    /// Scenes (as given to `spawn`) a client may spawn; empty: clients spawn nothing.
    /// Servers may spawn any scene.
    pub spawnable: Vec<String>,
    /// Requests one client may make per second on average ...
    pub rate_per_second: u32,
    /// ... and at once after a quiet spell.
    pub burst: u32,
    /// How long a write to a client's stream may wait for the client to read before its
    /// session ends (a client that stops reading holds what waits to be sent to it).
    pub stalled_after: Duration,
}

impl ClientsConfig {
    /// Default request rate per client.
    pub const DEFAULT_RATE: u32 = 200;
    /// Default burst per client.
    pub const DEFAULT_BURST: u32 = 400;

    /// Serves clients holding `tokens` on `listen`, with default limits and no spawnable
    /// scene.
    pub fn new(listen: SocketAddr, tokens: Vec<String>) -> Self {
        ClientsConfig {
            listen: Some(listen),
            ..Self::attached_only(tokens)
        }
    }

    /// Serves only clients attached through the game's transport.
    pub fn attached_only(tokens: Vec<String>) -> Self {
        ClientsConfig {
            listen: None,
            tokens,
            spawnable: Vec::new(),
            rate_per_second: Self::DEFAULT_RATE,
            burst: Self::DEFAULT_BURST,
            stalled_after: crate::pipe::CLIENT_STALLED,
        }
    }
}

/// The peer id of the client holding `token`: the same on every server, in Godot's range of
/// client ids (2..2^31; 1 is the server).
pub fn peer_id_of(token: &str) -> u64 {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let v = u32::from_be_bytes([d.as_ref()[0], d.as_ref()[1], d.as_ref()[2], d.as_ref()[3]]);
    2 + u64::from(v) % (i32::MAX as u64 - 2)
}

/// A fresh random token, for a game client that has none (admitted only by servers that
/// list no tokens).
pub fn anonymous_token() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // No system randomness: unique enough from the clock and the process.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let seed = format!("{nanos}-{}", std::process::id());
        let d = ring::digest::digest(&ring::digest::SHA256, seed.as_bytes());
        bytes.copy_from_slice(&d.as_ref()[..16]);
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("anonymous-{hex}")
}

/// A client whose token is not on the list, for the game to decide (its auth callback):
/// [`AuthRequest::answer`] admits or refuses it. Unanswered within the hello timeout, it is
/// refused.
pub struct AuthRequest {
    /// The peer id the client would have.
    pub peer: u64,
    pub token: String,
    reply: tokio::sync::oneshot::Sender<Result<(), String>>,
}

impl AuthRequest {
    /// `Ok`: admit it; `Err(reason)`: refuse it, telling it why.
    pub fn answer(self, result: Result<(), String>) {
        let _ = self.reply.send(result);
    }
}

/// The way from the client port to the game's auth callback (on the main thread).
pub(crate) struct Auth {
    enabled: std::sync::atomic::AtomicBool,
    tx: std::sync::mpsc::Sender<AuthRequest>,
    rx: std::sync::Mutex<std::sync::mpsc::Receiver<AuthRequest>>,
}

impl Default for Auth {
    fn default() -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        Auth {
            enabled: Default::default(),
            tx,
            rx: std::sync::Mutex::new(rx),
        }
    }
}

impl Auth {
    pub(crate) fn enable(&self, on: bool) {
        self.enabled.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn try_recv(&self) -> Option<AuthRequest> {
        self.rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_recv()
            .ok()
    }

    /// Asks the game about `token`; `None` when no auth callback is installed.
    async fn ask(&self, token: &str, wait: Duration) -> Option<Result<(), String>> {
        if !self.enabled.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = AuthRequest {
            peer: peer_id_of(token),
            token: token.to_owned(),
            reply,
        };
        if self.tx.send(request).is_err() {
            return None;
        }
        Some(match tokio::time::timeout(wait, answer).await {
            Ok(Ok(result)) => result,
            _ => Err("the game's auth callback did not answer in time".into()),
        })
    }
}

/// What serving clients uses of the server.
pub(crate) struct Ctx {
    pub(crate) server: NodeId,
    pub(crate) cluster: String,
    pub(crate) cfg: ClientsConfig,
    pub(crate) feed: Arc<Feed>,
    pub(crate) shared: Arc<RwLock<SharedState>>,
    pub(crate) submitter: Submitter,
    pub(crate) peers: Arc<Peers>,
    pub(crate) auth: Arc<Auth>,
    pub(crate) views: Views,
    /// The SyncedTree's absolute path in the server's scene tree (rpcs name nodes by
    /// absolute path): see [`crate::Node::set_tree_path`].
    pub(crate) tree_path: RwLock<Option<String>>,
    /// Why this server is out of touch with a quorum, while it is: its QUIC clients are
    /// sent to other servers (see `quorum`).
    pub(crate) cut_off: tokio::sync::watch::Receiver<Option<String>>,
}

impl Ctx {
    /// True if the node at `path` (relative to the SyncedTree), or a synced node it lies
    /// under, is in `hidden`.
    fn hides(&self, hidden: &std::collections::HashSet<u64>, path: &str) -> bool {
        if hidden.is_empty() {
            return false;
        }
        let state = self.shared.read().unwrap_or_else(|p| p.into_inner());
        state
            .tree
            .keys_along(path)
            .iter()
            .any(|k| hidden.contains(k))
    }

    /// `path` (absolute, in the scene tree) relative to the SyncedTree, if it is below it.
    fn synced_path<'a>(&self, path: &'a str) -> Option<&'a str> {
        let tree = self.tree_path.read().unwrap_or_else(|p| p.into_inner());
        let rest = path.strip_prefix(tree.as_deref()?)?;
        rest.strip_prefix('/')
    }
}

/// The synced subtrees each client may not see (roots, by node key), as the game decides
/// them on this server (MultiplayerSynchronizer visibility).
pub type Hidden = Arc<std::collections::HashSet<u64>>;

/// Each client's view, watched by its session.
#[derive(Default)]
pub(crate) struct Views {
    by_peer: std::sync::Mutex<std::collections::HashMap<u64, tokio::sync::watch::Sender<Hidden>>>,
}

impl Views {
    fn sender(&self, peer: u64) -> tokio::sync::watch::Sender<Hidden> {
        self.by_peer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(peer)
            .or_insert_with(|| tokio::sync::watch::channel(Hidden::default()).0)
            .clone()
    }

    /// Sets what `peer` may not see; its session (if it is connected here) restarts its feed
    /// from a filtered tree. An empty view of a peer without a session here is forgotten
    /// (it is the default): views of peers that left do not pile up.
    pub(crate) fn set(&self, peer: u64, hidden: std::collections::HashSet<u64>) {
        let tx = {
            let mut by_peer = self.by_peer.lock().unwrap_or_else(|p| p.into_inner());
            if hidden.is_empty() {
                match by_peer.get(&peer) {
                    None => return,
                    Some(tx) if tx.receiver_count() == 0 => {
                        by_peer.remove(&peer);
                        return;
                    }
                    Some(_) => {}
                }
            }
            by_peer
                .entry(peer)
                .or_insert_with(|| tokio::sync::watch::channel(Hidden::default()).0)
                .clone()
        };
        tx.send_if_modified(|h| {
            let changed = **h != hidden;
            if changed {
                *h = Arc::new(hidden.clone());
            }
            changed
        });
    }

    /// After a session of `peer` ended: its entry goes if nothing else watches it and it
    /// hides nothing.
    fn release(&self, peer: u64) {
        let mut by_peer = self.by_peer.lock().unwrap_or_else(|p| p.into_inner());
        if by_peer
            .get(&peer)
            .is_some_and(|tx| tx.receiver_count() == 0 && tx.borrow().is_empty())
        {
            by_peer.remove(&peer);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_peer.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// What `peer` may not see now (roots).
    fn current(&self, peer: u64) -> Hidden {
        self.by_peer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
            .map(|tx| tx.borrow().clone())
            .unwrap_or_default()
    }

    fn watch(&self, peer: u64) -> tokio::sync::watch::Receiver<Hidden> {
        self.sender(peer).subscribe()
    }
}

/// The client port of a running server.
pub(crate) struct ClientListener {
    endpoint: Endpoint,
    accept: JoinHandle<()>,
    local: Option<SocketAddr>,
}

impl ClientListener {
    pub(crate) fn start(
        listen: SocketAddr,
        material: &TlsMaterial,
        ctx: Arc<Ctx>,
    ) -> Result<ClientListener, synctree_net::StartError> {
        let endpoint = synctree_net::clients::listen(listen, material)?;
        let local = endpoint.local_addr().ok();
        let server = ctx.server;
        let accept = tokio::spawn(accept_loop(endpoint.clone(), ctx));
        tracing::info!(
            "node {server} serves game clients on {}",
            local.map(|a| a.to_string()).unwrap_or_default()
        );
        Ok(ClientListener {
            endpoint,
            accept,
            local,
        })
    }

    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    pub(crate) fn stop(&self) {
        self.accept.abort();
        self.endpoint
            .close(VarInt::from_u32(close::SHUTDOWN), b"server stopping");
    }
}

async fn accept_loop(endpoint: Endpoint, ctx: Arc<Ctx>) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(serve(incoming, ctx.clone()));
    }
}

async fn serve(incoming: Incoming, ctx: Arc<Ctx>) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!("client {remote}: handshake failed: {e}");
            return;
        }
    };
    let refuse = |conn: &Connection, code: u32, reason: &str| {
        tracing::warn!(node = ctx.server, "client {remote} disconnected: {reason}");
        conn.close(VarInt::from_u32(code), reason.as_bytes());
    };
    let away = ctx.cut_off.borrow().clone();
    if let Some(reason) = away {
        tracing::debug!(node = ctx.server, "client {remote} sent away: {reason}");
        conn.close(VarInt::from_u32(close::NO_QUORUM), reason.as_bytes());
        return;
    }
    let stream = tokio::time::timeout(HELLO_TIMEOUT, async {
        let (send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let hello = read_hello(&mut recv).await?;
        Ok::<_, String>((send, recv, hello))
    })
    .await;
    let (send, recv, hello) = match stream {
        Ok(Ok(s)) => s,
        Ok(Err(reason)) => return refuse(&conn, close::PROTOCOL, &reason),
        Err(_) => return refuse(&conn, close::PROTOCOL, "no hello within 5 s"),
    };
    // The session ends when the connection closes, or when this server loses touch with
    // the quorum: then it closes the connection, saying why, and the client moves on.
    let closed = {
        let conn = conn.clone();
        let mut cut_off = ctx.cut_off.clone();
        let server = ctx.server;
        async move {
            tokio::select! {
                e = conn.closed() => e.to_string(),
                r = cut_off.wait_for(Option::is_some) => {
                    let reason = match r {
                        Ok(r) => r.clone().unwrap_or_default(),
                        Err(_) => format!("server {server} stopped"),
                    };
                    conn.close(VarInt::from_u32(close::NO_QUORUM), reason.as_bytes());
                    reason
                }
            }
        }
    };
    let who = remote.to_string();
    let (datagrams_tx, datagrams) = mpsc::channel(256);
    tokio::spawn(crate::pipe::read_datagrams(conn.clone(), datagrams_tx));
    let mut out = crate::pipe::QuicOut {
        send,
        conn: conn.clone(),
        stalled_after: ctx.cfg.stalled_after,
    };
    let client = ClientConn {
        who: &who,
        open: false,
        closed,
        datagrams: Some(datagrams),
    };
    match serve_client(&mut out, recv, hello, &ctx, client).await {
        Ended::Refused(reason) => {
            let _ = out.send.finish();
            // Let the refusal reach the client before the close does.
            tokio::time::sleep(Duration::from_millis(100)).await;
            refuse(&conn, close::REFUSED, &reason)
        }
        Ended::Violation(reason) => refuse(&conn, close::PROTOCOL, &reason),
        // Gone, or the session failed (its stream stalled): the connection goes too (a
        // task reading its datagrams would keep it open).
        Ended::Left(why) => conn.close(VarInt::from_u32(close::SHUTDOWN), why.as_bytes()),
    }
}

/// Serves a client whose frames travel through the game's own transport (its
/// MultiplayerPeer), until the game drops its end of `pipe` or the session ends (the pipe's
/// [`Pulled::Ended`](crate::pipe::Pulled::Ended): the game should then disconnect that peer).
/// `who` names the client in logs. Such a client is admitted with a listed token, by the
/// game's auth callback, or, when this server lists no tokens and the game has no auth
/// callback, with any token (as SceneMultiplayer admits every peer without authentication).
pub(crate) fn attach(ctx: Arc<Ctx>, who: String) -> crate::FramePipe {
    let (pipe, mut read, mut write) = crate::pipe::pipe(crate::pipe::FROM_CLIENT_FRAMES);
    tokio::spawn(async move {
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, read_hello(&mut read)).await {
            Ok(Ok(hello)) => hello,
            Ok(Err(reason)) => {
                tracing::warn!(node = ctx.server, "client {who} disconnected: {reason}");
                return;
            }
            Err(_) => {
                tracing::warn!(
                    node = ctx.server,
                    "client {who} disconnected: no hello within 5 s"
                );
                return;
            }
        };
        let closed = write.closed();
        let closed = async move {
            closed.await;
            "its multiplayer peer disconnected".to_owned()
        };
        let open = ctx.cfg.tokens.is_empty();
        let conn = ClientConn {
            who: &who,
            open,
            closed,
            datagrams: None,
        };
        match serve_client(&mut write, read, hello, &ctx, conn).await {
            Ended::Refused(reason) | Ended::Violation(reason) => {
                tracing::warn!(node = ctx.server, "client {who} disconnected: {reason}")
            }
            Ended::Left(_) => {}
        }
    });
    pipe
}

async fn read_hello(recv: &mut impl FrameRead) -> Result<Hello, String> {
    let body = recv
        .read(MAX_HELLO_BYTES)
        .await
        .map_err(|e| format!("bad hello: {e}"))?;
    decode(&body, MAX_HELLO_BYTES).map_err(|e| format!("malformed hello: {e}"))
}

/// What a session knows of its client's connection.
struct ClientConn<'a, C> {
    /// Names the client in logs.
    who: &'a str,
    /// Admit any token (clients attached through the game's transport, no tokens listed).
    open: bool,
    /// Completes, with the reason, when the client goes away.
    closed: C,
    /// Its datagrams (QUIC), taken as requests too.
    datagrams: Option<mpsc::Receiver<Vec<u8>>>,
}

/// How a client session ended.
enum Ended {
    /// Refused (the reason was sent to it).
    Refused(String),
    /// It broke the protocol.
    Violation(String),
    /// It went away, or its session failed (why, logged), or this server is stopping.
    Left(String),
}

/// Serves one client from its hello on: admission, welcome, then the feed and its requests
/// until it leaves (`closed` completes) or breaks the protocol. `open` admits any token
/// (clients attached through the game's transport when no tokens are listed).
async fn serve_client<W: FrameWrite, R: FrameRead>(
    send: &mut W,
    recv: R,
    hello: Hello,
    ctx: &Arc<Ctx>,
    conn: ClientConn<'_, impl std::future::Future<Output = String> + Send>,
) -> Ended {
    let ClientConn {
        who,
        open,
        closed,
        datagrams,
    } = conn;
    let refusal = if hello.version != CLIENT_PROTOCOL_VERSION {
        Some(format!(
            "client protocol version {} is not supported (this server speaks {})",
            hello.version, CLIENT_PROTOCOL_VERSION
        ))
    } else if !ctx.cfg.tokens.iter().any(|t| token_eq(t, &hello.token)) {
        // Not on the list: the game's auth callback decides, if there is one.
        match ctx.auth.ask(&hello.token, HELLO_TIMEOUT).await {
            Some(Ok(())) => None,
            Some(Err(reason)) => Some(reason),
            // Open admission proves nothing about who a client is: it may not take the id of
            // a peer connected now (its rpcs, its nodes).
            None if open && ctx.peers.all().contains(&peer_id_of(&hello.token)) => Some(
                "a peer with this token is already connected (this server lists no tokens: \
                 identities are not checked, so one may not be taken over)"
                    .to_owned(),
            ),
            None if open => None,
            None => Some("invalid token".to_owned()),
        }
    } else {
        None
    };
    if let Some(reason) = refusal {
        let _ = send_message(
            send,
            &ServerMessage::Refused {
                reason: reason.clone(),
            },
        )
        .await;
        return Ended::Refused(reason);
    }
    let peer = peer_id_of(&hello.token);
    tracing::info!(node = ctx.server, "client {who} connected as peer {peer}");
    let welcome = ServerMessage::Welcome {
        server: ctx.server,
        cluster: ctx.cluster.clone(),
        peer,
    };
    if let Err(e) = send_message(send, &welcome).await {
        return Ended::Left(e);
    }
    let after = hello
        .resume
        .filter(|r| r.cluster == ctx.cluster)
        .map(|r| r.index);
    let (out_tx, mut out_rx) = mpsc::channel(OUTCOMES_QUEUED);
    let others: Vec<u64> = ctx.peers.all().into_iter().filter(|p| *p != peer).collect();
    let _ = out_tx.try_send(ServerMessage::Peers(others));
    let conn_no = ctx.peers.join(peer, out_tx.clone());
    let writes = Arc::new(AtomicUsize::new(0));
    // Frames are read by a task of their own (a frame read is not cancel safe), so requests
    // can be taken from the stream and from datagrams alike.
    let (frames_tx, frames) = mpsc::channel(64);
    let frame_reader = tokio::spawn(read_frames(recv, frames_tx));
    let mut requests = tokio::spawn(read_requests(
        frames,
        datagrams,
        ctx.clone(),
        peer,
        out_tx,
        writes.clone(),
    ));
    let mut violation = None;
    let ended = tokio::select! {
        r = stream_feed(send, ctx, after, &mut out_rx, &writes, ctx.views.watch(peer)) => r,
        r = &mut requests => match r {
            Ok(Err(v)) => {
                violation = Some(v);
                Ok(())
            }
            _ => Err("its request stream ended".to_owned()),
        },
        e = closed => Err(e),
    };
    requests.abort();
    frame_reader.abort();
    ctx.peers.leave(peer, conn_no);
    ctx.views.release(peer);
    if let Some(v) = violation {
        return Ended::Violation(v);
    }
    match ended {
        Err(e) => {
            tracing::info!(node = ctx.server, "client {who} (peer {peer}) left: {e}");
            Ended::Left(e)
        }
        Ok(()) => Ended::Left("its session ended".into()),
    }
}

/// Reads a client's request frames into `out` until the stream ends or fails (the error
/// is the last item).
async fn read_frames(mut recv: impl FrameRead, out: mpsc::Sender<Result<Vec<u8>, FrameError>>) {
    loop {
        let frame = recv.read(MAX_REQUEST_BYTES).await;
        let end = frame.is_err();
        if out.send(frame).await.is_err() || end {
            return;
        }
    }
}

/// Outcomes, rpcs and presence waiting to be written to one client.
const OUTCOMES_QUEUED: usize = 1024;

/// Requests of one client awaiting their outcome at most; past it, its requests are not
/// read until some finish (a client that stops reading its stream, and so its outcomes,
/// would otherwise grow a task per request for as long as it stays connected).
const REQUESTS_IN_FLIGHT: usize = 4096;

/// Reads a client's requests until its connection ends (`Ok`) or it breaks the protocol
/// (`Err` with the reason). Each request is proposed (or read) on its own; its outcome goes to
/// `out`, to be written beside the feed.
async fn read_requests(
    mut frames: mpsc::Receiver<Result<Vec<u8>, FrameError>>,
    mut datagrams: Option<mpsc::Receiver<Vec<u8>>>,
    ctx: Arc<Ctx>,
    peer: u64,
    out: mpsc::Sender<ServerMessage>,
    writes: Arc<AtomicUsize>,
) -> Result<(), String> {
    let nz = |n: u32| NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
    let limiter = RateLimiter::direct(
        Quota::per_second(nz(ctx.cfg.rate_per_second)).allow_burst(nz(ctx.cfg.burst)),
    );
    let mut in_flight = JoinSet::new();
    let mut handles = PropertyHandles::default();
    // Eventual writes by a handle not declared yet (their datagram overtook the declaration
    // on the stream): the newest of each, taken when the declaration arrives.
    let mut early: HashMap<u32, (u32, synctree_proto::Value)> = HashMap::new();
    let mut stream_open = true;
    let mut dropped = 0u64;
    // Writes and reads that arrived together, proposed together once no more are waiting
    // (a client's frame of requests commits in one round), in the order the client made
    // them.
    let mut batch: Vec<Submission> = Vec::new();
    let mut ahead = None;
    loop {
        while in_flight.try_join_next().is_some() {}
        if in_flight.len() >= REQUESTS_IN_FLIGHT {
            ctx.submitter.send(std::mem::take(&mut batch));
            in_flight.join_next().await;
            continue;
        }
        if ahead.is_none() && stream_open && batch.len() < MAX_BATCH_EVENTS {
            ahead = frames.try_recv().ok().map(Some);
        }
        if ahead.is_none() {
            ctx.submitter.send(std::mem::take(&mut batch));
        }
        let datagram = async {
            match datagrams.as_mut() {
                Some(d) => d.recv().await,
                None => std::future::pending().await,
            }
        };
        let frame = match ahead.take() {
            Some(frame) => frame,
            None => tokio::select! {
                frame = frames.recv(), if stream_open => frame,
                Some(d) = datagram => Some(Ok(d)),
                // Both the stream and the datagrams ended: the connection is gone.
                else => return Ok(()),
            },
        };
        let body = match frame {
            Some(Ok(body)) => body,
            // The client closed its side cleanly: nothing more to read, the feed goes on.
            Some(Err(FrameError::Truncated { got: 0, .. })) | None => {
                stream_open = false;
                continue;
            }
            Some(Err(e)) if e.is_violation() => {
                ctx.submitter.send(batch);
                return Err(format!("bad request frame: {e}"));
            }
            // The connection went away: not the client's fault.
            Some(Err(_)) => {
                ctx.submitter.send(batch);
                return Ok(());
            }
        };
        let decoded = decode(&body, MAX_REQUEST_BYTES)
            .map_err(|e| format!("malformed request: {e}"))
            .and_then(|r: Request| {
                let declared = match &r.request {
                    ClientRequest::Handle { handle, .. } => Some(*handle),
                    _ => None,
                };
                Ok((r.id, declared, handles.incoming(r.request)?))
            });
        let (id, declared, request) = match decoded {
            Ok(d) => d,
            Err(e) => {
                ctx.submitter.send(batch);
                return Err(e);
            }
        };
        // A handle's declaration is part of the protocol, not a request (no rate limit);
        // a write of it that came early is taken now.
        let request = match (
            request,
            declared.and_then(|h| early.remove(&h).map(|e| (h, e))),
        ) {
            (Some(request), _) => request,
            (None, Some((handle, (first, value)))) => ClientRequest::Updates {
                first,
                sets: vec![synctree_proto::HandleValue { handle, value }],
            },
            (None, None) => continue,
        };
        // Eventual writes by handle become writes by name (one of a handle not declared yet
        // waits for the declaration). Each counts for the rate limit.
        let cost = match &request {
            ClientRequest::Eventuals(sets) => sets.len(),
            ClientRequest::Updates { sets, .. } => sets.len(),
            _ => 1,
        }
        .max(1);
        let request = match request {
            ClientRequest::Updates { first, sets } => {
                let mut named = Vec::with_capacity(sets.len());
                for (u, i) in sets.into_iter().zip(0u32..) {
                    let seq = first.wrapping_add(i);
                    let Some((path, property)) = handles.named(u.handle).cloned() else {
                        let newer = early
                            .get(&u.handle)
                            .is_none_or(|(last, _)| synctree_proto::seq_after(seq, *last));
                        if newer
                            && (early.len() < synctree_proto::MAX_PROPERTY_HANDLES
                                || early.contains_key(&u.handle))
                        {
                            early.insert(u.handle, (seq, u.value));
                        }
                        continue;
                    };
                    named.push(synctree_proto::EventualSet {
                        from: peer,
                        path,
                        property,
                        value: u.value,
                        stamp: None,
                        seq,
                    });
                }
                ClientRequest::Eventuals(named)
            }
            other => other,
        };
        let no_outcome = matches!(
            request,
            ClientRequest::Rpc(_) | ClientRequest::Eventual(_) | ClientRequest::Eventuals(_)
        );
        // Eventual writes that may be dropped: their numbers still count (see `dropped_eventual`).
        let numbered: Vec<(String, String, u32)> = match &request {
            ClientRequest::Eventual(set) => vec![(set.path.clone(), set.property.clone(), set.seq)],
            ClientRequest::Eventuals(sets) => sets
                .iter()
                .map(|s| (s.path.clone(), s.property.clone(), s.seq))
                .collect(),
            _ => Vec::new(),
        };
        let within = NonZeroU32::new(u32::try_from(cost).unwrap_or(u32::MAX))
            .is_none_or(|n| matches!(limiter.check_n(n), Ok(Ok(()))));
        let request = if !within {
            Err(format!(
                "rate limit exceeded: a client may make {} requests per second (bursts of \
                 {}); request not proposed",
                ctx.cfg.rate_per_second, ctx.cfg.burst
            ))
        } else {
            admit(&ctx.cfg, peer, request)
        }
        .and_then(|request| match &request {
            ClientRequest::Read { path, .. } if ctx.hides(&ctx.views.current(peer), path) => {
                Err(format!("no node at '{path}' that this client may see"))
            }
            _ => Ok(request),
        });
        match request {
            // An rpc has no outcome to carry a refusal: it is dropped, and logged.
            Err(reason) if no_outcome => {
                ctx.peers.dropped_eventual(peer, numbered);
                dropped += 1;
                // Logged at 1, 2, 4, 8, ... drops: a flood does not flood the log.
                if dropped.is_power_of_two() {
                    tracing::warn!(
                        node = ctx.server,
                        "message from peer {peer} dropped ({dropped} so far): {reason}"
                    );
                }
            }
            Err(reason) => {
                if !answer(&out, id, Err(RequestError::refused(reason))).await {
                    ctx.submitter.send(batch);
                    return Ok(());
                }
            }
            Ok(ClientRequest::Rpc(mut rpc)) => {
                rpc.from = peer;
                ctx.peers.client_sent(rpc);
            }
            Ok(ClientRequest::Eventual(set)) => take_eventual(&ctx, peer, set),
            Ok(ClientRequest::Eventuals(sets)) => {
                for set in sets {
                    take_eventual(&ctx, peer, set);
                }
            }
            Ok(request) => {
                let out = out.clone();
                let write = matches!(request, ClientRequest::Write(_));
                let (submission, waiting) = match ctx.submitter.prepare(peer, request) {
                    Ok(prepared) => prepared,
                    Err(e) => {
                        if answer(&out, id, Err(e)).await {
                            continue;
                        }
                        ctx.submitter.send(batch);
                        return Ok(());
                    }
                };
                batch.push(submission);
                let writes = writes.clone();
                if write {
                    writes.fetch_add(1, Ordering::Relaxed);
                }
                in_flight.spawn(async move {
                    answer(&out, id, waiting.outcome().await).await;
                    if write {
                        writes.fetch_sub(1, Ordering::Relaxed);
                    }
                });
            }
        }
    }
}

/// Sends the outcome of client request `id`; false if the client is gone.
async fn answer(
    out: &mpsc::Sender<ServerMessage>,
    id: u64,
    result: Result<Done, RequestError>,
) -> bool {
    let outcome = outcome_of(result);
    out.send(ServerMessage::Outcome { id, outcome })
        .await
        .is_ok()
}

/// An eventual write from client `peer`: stamped and handed on if the client owns the node
/// and the property name is valid; else dropped, and logged.
fn take_eventual(ctx: &Ctx, peer: u64, mut set: synctree_proto::EventualSet) {
    set.from = peer;
    set.stamp = None;
    let owner = ctx
        .shared
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .tree
        .owner_of(&set.path);
    let valid = synctree_proto::validate_property(&set.property).is_ok();
    if owner == Some(peer) && !set.path.is_empty() && valid {
        ctx.peers.eventual(set, true);
    } else {
        ctx.peers.dropped_eventual(
            peer,
            vec![(set.path.clone(), set.property.clone(), set.seq)],
        );
        tracing::warn!(
            node = ctx.server,
            "eventual write of '{}'.{} from peer {peer} dropped: it does not own that node, or the property name is invalid",
            set.path,
            set.property
        );
    }
}

/// What the server checks before proposing for a client (the rest, ownership included, is
/// checked when the op applies, the same way on every server). A spawn's owner 0 means the
/// client itself.
fn admit(
    cfg: &ClientsConfig,
    peer: u64,
    mut request: ClientRequest,
) -> Result<ClientRequest, String> {
    if let ClientRequest::Write(Op::Spawn { scene, owner, .. }) = &mut request {
        if !cfg.spawnable.iter().any(|s| s == scene) {
            return Err(format!(
                "scene '{scene}' is not on the SyncedTree's spawnable list: game clients \
                 may spawn only the scenes listed there"
            ));
        }
        if *owner == 0 {
            *owner = peer;
        }
    }
    Ok(request)
}

fn outcome_of(result: Result<Done, RequestError>) -> Outcome {
    match result {
        Ok(Done::Write { index, stamp }) => Outcome::Written { index, stamp },
        Ok(Done::Read { index, value }) => Outcome::Read { index, value },
        Ok(Done::Membership(_)) => Outcome::Failed {
            reason: "internal error: a client request completed as a membership change".into(),
            uncertain: true,
        },
        Err(e) => Outcome::Failed {
            reason: e.message,
            uncertain: e.uncertain,
        },
    }
}

/// Tokens compared in constant time.
fn token_eq(expected: &str, got: &str) -> bool {
    let (a, b) = (expected.as_bytes(), got.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn send_message(send: &mut impl FrameWrite, m: &ServerMessage) -> Result<(), String> {
    let bytes = encode(m).map_err(|e| e.to_string())?;
    send.write(&[&bytes]).await
}

/// False for an eventual write or an rpc of a node hidden from this client (as with
/// SceneMultiplayer, an rpc reaches only the peers that can see its node).
fn shown(ctx: &Ctx, hidden: &std::collections::HashSet<u64>, message: &ServerMessage) -> bool {
    if hidden.is_empty() {
        return true;
    }
    match message {
        ServerMessage::Eventual(set) => !ctx.hides(hidden, &set.path),
        ServerMessage::Rpc(rpc) => {
            let Some(path) = ctx.synced_path(&rpc.path) else {
                return true;
            };
            let visible = !ctx.hides(hidden, path);
            if !visible && rpc.to > 0 {
                tracing::warn!(
                    node = ctx.server,
                    "rpc {}() on {} from peer {} not delivered: peer {} cannot see that node \
                     (MultiplayerSynchronizer visibility)",
                    rpc.method,
                    rpc.path,
                    rpc.from,
                    rpc.to
                );
            }
            visible
        }
        _ => true,
    }
}

/// An encoded feed chunk without what concerns `hidden` nodes (kept up to date).
fn filter_chunk(
    bytes: &[u8],
    hidden: &mut std::collections::HashSet<u64>,
) -> Result<Vec<u8>, String> {
    let message: ServerMessage =
        decode(bytes, bytes.len()).map_err(|e| format!("internal error: a feed chunk: {e}"))?;
    let ServerMessage::Entries(mut entries) = message else {
        return Ok(bytes.to_vec());
    };
    for e in &mut entries {
        synctree_proto::filter_hidden_wire(hidden, &mut e.effects);
    }
    encode(&ServerMessage::Entries(entries)).map_err(|e| e.to_string())
}

/// On the leader, a write's outcome follows the entry it committed in by microseconds (the
/// proposer hears of the commit after the state machine applied it): while the client has
/// writes in flight, an entry waits this long at most for an outcome, so the two share a
/// packet. (On a follower the outcome comes first, from the leader: it is held until its
/// entry goes out, see [`Held`].)
const COALESCE_WAIT: Duration = Duration::from_millis(1);

/// Outcomes that name a log index this client has not been sent yet. A client reports an
/// outcome only once it applied its index, so holding it until the entry goes out costs the
/// client nothing, and the two share a packet (an outcome alone is a ~70-byte packet).
#[derive(Default)]
struct Held(Vec<(u64, ServerMessage)>);

impl Held {
    /// The log index `message` waits for, if it names one past `after`.
    fn waits(message: &ServerMessage, after: Option<u64>) -> Option<u64> {
        let index = match message {
            ServerMessage::Outcome {
                outcome: Outcome::Written { index, .. } | Outcome::Read { index, .. },
                ..
            } => *index,
            _ => return None,
        };
        (index > after.unwrap_or(0)).then_some(index)
    }

    /// Takes the held outcomes whose entry is at or before `upto`.
    fn release(&mut self, upto: u64) -> Vec<ServerMessage> {
        let (due, keep) = std::mem::take(&mut self.0)
            .into_iter()
            .partition(|(index, _)| *index <= upto);
        self.0 = keep;
        due.into_iter().map(|(_, m)| m).collect()
    }
}
/// Feed chunks written to a client in one go, at most.
const COALESCE_CHUNKS: usize = 256;
/// Other messages (outcomes, rpcs, eventual writes) taken for a client in one go, at most.
const COALESCE_MESSAGES: usize = 256;
/// Eventual writes packed in one datagram, up to about this many bytes (QUIC datagrams on
/// a 1500-byte path take ~1200).
const EVENTUALS_PER_DATAGRAM_BYTES: usize = 1000;

/// A connection's eventual writes to its client: the handles it named, the stamp of the last
/// write it sent of each, and the number of its last [`ServerMessage::Updates`].
#[derive(Default)]
struct EventualOut {
    handles: HashMap<(String, String), u32>,
    sent: HashMap<u32, synctree_proto::Stamp>,
    seq: u32,
    full: bool,
}

impl EventualOut {
    /// `sets` as this client is sent them: what goes on the stream (handle declarations,
    /// then one [`ServerMessage::Updates`] with the first write of each property named now,
    /// so it cannot overtake its name), then what goes as datagrams (Updates of up to ~1000
    /// bytes each), in the order taken, leaving out any write stamped before one already
    /// sent of its property. A client is sent every other player's high-rate updates: they
    /// share datagrams, as SceneMultiplayer packs its synchronizers' into one packet per
    /// peer. Past [`MAX_EVENTUAL_HANDLES`] named properties, writes of others go by name.
    fn pack(
        &mut self,
        sets: Vec<synctree_proto::EventualSet>,
    ) -> Result<(Vec<ServerMessage>, Vec<ServerMessage>), String> {
        let (mut stream, mut messages) = (Vec::new(), Vec::new());
        let (mut pack, mut size) = (Vec::new(), 0);
        // The first writes of properties named by this call, for the stream.
        let mut fresh = Vec::new();
        // Where each handle is (in `fresh`, or in `pack`): a later write of it replaces the
        // earlier one.
        let mut at: HashMap<u32, (bool, usize)> = HashMap::new();
        for set in sets {
            let Some(stamp) = set.stamp else { continue };
            let key = (set.path, set.property);
            let handle = match self.handles.get(&key) {
                Some(h) => *h,
                None if self.handles.len() < MAX_EVENTUAL_HANDLES => {
                    let h = self.handles.len() as u32;
                    self.handles.insert(key.clone(), h);
                    stream.push(ServerMessage::Handle {
                        handle: h,
                        path: key.0,
                        property: key.1,
                    });
                    at.insert(h, (true, fresh.len()));
                    self.sent.insert(h, stamp);
                    fresh.push(synctree_proto::Update {
                        handle: h,
                        value: set.value,
                        after: set.seq,
                    });
                    continue;
                }
                None => {
                    if !std::mem::replace(&mut self.full, true) {
                        tracing::info!(
                            "a client was sent eventual writes of {MAX_EVENTUAL_HANDLES} \
                             properties: writes of others go to it by name"
                        );
                    }
                    messages.push(ServerMessage::Eventual(synctree_proto::EventualSet {
                        path: key.0,
                        property: key.1,
                        ..set
                    }));
                    continue;
                }
            };
            if self.sent.get(&handle).is_some_and(|s| *s >= stamp) {
                continue;
            }
            self.sent.insert(handle, stamp);
            let update = synctree_proto::Update {
                handle,
                value: set.value,
                after: set.seq,
            };
            match at.get(&handle) {
                Some((true, i)) => {
                    fresh[*i] = update;
                    continue;
                }
                Some((false, i)) => {
                    pack[*i] = update;
                    continue;
                }
                None => {}
            }
            let len = encode(&update).map_err(|e| e.to_string())?.len();
            if !pack.is_empty() && size + len > EVENTUALS_PER_DATAGRAM_BYTES {
                self.seq = self.seq.wrapping_add(1);
                let sets = std::mem::take(&mut pack);
                messages.push(ServerMessage::Updates {
                    seq: self.seq,
                    sets,
                });
                at.retain(|_, (in_fresh, _)| *in_fresh);
                size = 0;
            }
            size += len;
            at.insert(handle, (false, pack.len()));
            pack.push(update);
        }
        if !fresh.is_empty() {
            self.seq = self.seq.wrapping_add(1);
            stream.push(ServerMessage::Updates {
                seq: self.seq,
                sets: fresh,
            });
        }
        if !pack.is_empty() {
            self.seq = self.seq.wrapping_add(1);
            messages.push(ServerMessage::Updates {
                seq: self.seq,
                sets: pack,
            });
        }
        Ok((stream, messages))
    }

    /// Packs `sets` and sends them: declarations on the stream, updates as datagrams.
    async fn send(
        &mut self,
        send: &mut impl FrameWrite,
        sets: Vec<synctree_proto::EventualSet>,
    ) -> Result<(), String> {
        if sets.is_empty() {
            return Ok(());
        }
        let (declared, updates) = self.pack(sets)?;
        for m in &declared {
            send_message(send, m).await?;
        }
        for m in &updates {
            send.send_datagram(encode(m).map_err(|e| e.to_string())?)
                .await?;
        }
        Ok(())
    }
}

/// Sends the client's starting point, then live entries and the outcomes of its requests,
/// until the client goes away.
async fn stream_feed(
    send: &mut impl FrameWrite,
    ctx: &Ctx,
    mut after: Option<u64>,
    outcomes: &mut mpsc::Receiver<ServerMessage>,
    writes: &AtomicUsize,
    mut view: tokio::sync::watch::Receiver<Hidden>,
) -> Result<(), String> {
    let mut held = Held::default();
    let mut eventual = EventualOut::default();
    loop {
        // What this client may not see: its hidden roots, and every key under them. A client
        // with a view starts from the filtered tree (and again whenever its view changes).
        let roots = view.borrow_and_update().clone();
        if !roots.is_empty() {
            after = None;
        }
        let mut hidden = std::collections::HashSet::new();
        let (start, names, mut rx) = ctx.feed.subscribe(&ctx.shared, after);
        if !names.is_empty() {
            send_message(send, &ServerMessage::Names(names)).await?;
        }
        match start {
            Start::Reset { index, tree } => {
                let filtered = !roots.is_empty();
                let tree = if filtered {
                    let (tree, gone) = tree.without(&roots);
                    hidden = gone;
                    tree
                } else {
                    tree
                };
                let reset = ServerMessage::Reset {
                    index,
                    tree,
                    filtered,
                };
                send_message(send, &reset).await?;
                after = Some(index);
            }
            Start::History(chunks) => {
                for c in chunks {
                    send.write(&[&c.bytes]).await?;
                    after = Some(c.last);
                }
            }
        }
        for m in held.release(after.unwrap_or(0)) {
            send_message(send, &m.committed(after.unwrap_or(0))).await?;
        }
        loop {
            let item = tokio::select! {
                item = rx.recv() => item,
                changed = view.changed() => {
                    if changed.is_err() {
                        return Err("server stopping".into());
                    }
                    // Start over from the tree as this client may now see it.
                    after = None;
                    break;
                }
                Some(message) = outcomes.recv() => {
                    // What else waits goes now too: eventual writes packed in datagrams.
                    let mut batch = vec![message];
                    while batch.len() < COALESCE_MESSAGES {
                        match outcomes.try_recv() {
                            Ok(m) => batch.push(m),
                            Err(_) => break,
                        }
                    }
                    let mut sets = Vec::new();
                    for message in batch {
                        if !shown(ctx, &hidden, &message) {
                            continue;
                        }
                        if let Some(index) = Held::waits(&message, after) {
                            held.0.push((index, message));
                            continue;
                        }
                        match message.committed(after.unwrap_or(0)) {
                            ServerMessage::Eventual(set) => sets.push(set),
                            m if m.unreliable() => {
                                send.send_datagram(encode(&m).map_err(|e| e.to_string())?).await?
                            }
                            m => send_message(send, &m).await?,
                        }
                    }
                    eventual.send(send, sets).await?;
                    continue;
                }
            };
            match item {
                Ok(FeedItem::Chunk(c)) => {
                    // What else is already there goes in the same write (fewer, fuller
                    // packets when entries come faster than this client takes them).
                    let mut chunks = vec![c];
                    let mut then = None;
                    while chunks.len() < COALESCE_CHUNKS {
                        match rx.try_recv() {
                            Ok(FeedItem::Chunk(c)) => chunks.push(c),
                            Err(TryRecvError::Empty) => break,
                            other => {
                                then = Some(other);
                                break;
                            }
                        }
                    }
                    let before = chunks.len();
                    chunks.retain(|c| after.is_none_or(|a| c.last > a));
                    if chunks.len() < before {
                        // Chunks the client has are not sent; names they were the first to
                        // give are (all names so far: numbers never change).
                        send_message(send, &ServerMessage::Names(ctx.feed.names())).await?;
                    }
                    if let Some(last) = chunks.last() {
                        let last = last.last;
                        let mut with = held.release(last);
                        if writes.load(Ordering::Relaxed) > 0 {
                            if let Ok(Some(o)) =
                                tokio::time::timeout(COALESCE_WAIT, outcomes.recv()).await
                            {
                                with.push(o);
                            }
                            while let Ok(o) = outcomes.try_recv() {
                                with.push(o);
                            }
                        }
                        // Outcomes of entries still to come wait for them.
                        let mut now = Vec::with_capacity(with.len());
                        for m in with {
                            match Held::waits(&m, Some(last)) {
                                Some(index) => held.0.push((index, m)),
                                None => now.push(m.committed(last)),
                            }
                        }
                        let with = now;
                        let mut encoded = Vec::with_capacity(with.len());
                        let mut sets = Vec::new();
                        for m in with.into_iter().filter(|m| shown(ctx, &hidden, m)) {
                            if let ServerMessage::Eventual(set) = m {
                                sets.push(set);
                                continue;
                            }
                            let bytes = encode(&m).map_err(|e| e.to_string())?;
                            if m.unreliable() {
                                send.send_datagram(bytes).await?;
                            } else {
                                encoded.push(bytes);
                            }
                        }
                        eventual.send(send, sets).await?;
                        let filtered = if hidden.is_empty() {
                            Vec::new()
                        } else {
                            chunks
                                .iter()
                                .map(|c| filter_chunk(&c.bytes, &mut hidden))
                                .collect::<Result<Vec<_>, String>>()?
                        };
                        let mut frames: Vec<&[u8]> = if filtered.is_empty() {
                            chunks.iter().map(|c| c.bytes.as_slice()).collect()
                        } else {
                            filtered.iter().map(Vec::as_slice).collect()
                        };
                        frames.extend(encoded.iter().map(Vec::as_slice));
                        send.write_frames(&frames).await?;
                        after = Some(last);
                    }
                    match then {
                        None => {}
                        Some(Ok(FeedItem::Reset)) | Some(Err(TryRecvError::Lagged(_))) => break,
                        Some(_) => return Err("server stopping".into()),
                    }
                }
                // Too slow for the broadcast, or the state was replaced: start over from
                // where the client is.
                Ok(FeedItem::Reset) | Err(RecvError::Lagged(_)) => break,
                Err(RecvError::Closed) => return Err("server stopping".into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Keeps what a session sends: frames and datagrams.
    #[derive(Default)]
    struct Sent {
        frames: Vec<Vec<u8>>,
        datagrams: Vec<Vec<u8>>,
    }

    impl FrameWrite for Sent {
        async fn write(&mut self, parts: &[&[u8]]) -> Result<(), String> {
            self.frames.push(parts.concat());
            Ok(())
        }

        async fn send_datagram(&mut self, bytes: Vec<u8>) -> Result<(), String> {
            self.datagrams.push(bytes);
            Ok(())
        }
    }

    #[tokio::test]
    async fn eventual_writes_share_datagrams_by_handle() {
        use synctree_proto::{Stamp, Update, Value};
        let set = |i: u64, t: u64| synctree_proto::EventualSet {
            from: 7,
            path: format!("Players/{i}"),
            property: "position".into(),
            value: Value::Vector2([i as f32, 2.0]),
            stamp: Some(Stamp::from_parts(1 << 40 | t, 2)),
            seq: 0,
        };
        let decoded = |sent: &Sent| -> Vec<ServerMessage> {
            sent.datagrams
                .iter()
                .map(|d| synctree_proto::decode::<ServerMessage>(d, d.len()).unwrap())
                .collect()
        };
        let mut out = EventualOut::default();
        let mut sent = Sent::default();
        out.send(&mut sent, (0..60).map(|i| set(i, 1)).collect())
            .await
            .unwrap();
        // Each property is named once, on the stream, and its first write follows its name
        // there (a datagram could overtake the name).
        assert_eq!(sent.frames.len(), 61);
        assert!(sent.datagrams.is_empty());
        let last = &sent.frames[60];
        let ServerMessage::Updates { seq: 1, sets: got } =
            synctree_proto::decode::<ServerMessage>(last, last.len()).unwrap()
        else {
            panic!("{last:?}")
        };
        let want: Vec<Update> = (0..60u32)
            .map(|i| Update {
                handle: i,
                value: Value::Vector2([i as f32, 2.0]),
                after: 0,
            })
            .collect();
        assert_eq!(got, want);
        // Later writes share datagrams.
        let mut sent = Sent::default();
        out.send(&mut sent, (0..60).map(|i| set(i, 2)).collect())
            .await
            .unwrap();
        assert!(sent.frames.is_empty());
        let later = decoded(&sent);
        assert!((1..=2).contains(&later.len()), "{} datagrams", later.len());
        let mut got = Vec::new();
        for (n, m) in later.into_iter().enumerate() {
            let ServerMessage::Updates { seq, sets } = m else {
                panic!("{m:?}")
            };
            assert_eq!(seq as usize, n + 2, "numbered in order");
            got.extend(sets);
        }
        assert_eq!(got, want);
        // Known names go by handle only: one update is a few bytes of payload.
        let mut sent = Sent::default();
        out.send(&mut sent, vec![set(3, 5)]).await.unwrap();
        assert_eq!(sent.datagrams.len(), 1);
        assert!(sent.frames.is_empty());
        assert!(sent.datagrams[0].len() <= 21, "{}", sent.datagrams[0].len());
        // A write stamped before the last one sent of its property is not sent; of two
        // writes of one property taken together, only the later goes.
        let mut sent = Sent::default();
        let mut later = set(4, 9);
        later.value = Value::Int(9);
        out.send(&mut sent, vec![set(3, 4), set(4, 8), later])
            .await
            .unwrap();
        match decoded(&sent).as_slice() {
            [ServerMessage::Updates { sets, .. }] => assert_eq!(
                sets.iter()
                    .map(|u| (u.handle, u.value.clone()))
                    .collect::<Vec<_>>(),
                vec![(4, Value::Int(9))]
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn views_of_peers_that_left_are_forgotten() {
        let views = Views::default();
        views.set(7, HashSet::new());
        assert_eq!(views.len(), 0, "an empty view is the default: nothing kept");
        views.set(7, HashSet::from([3]));
        let mut watch = views.watch(7);
        assert_eq!(**watch.borrow_and_update(), HashSet::from([3]));
        // Cleared while its session watches: the session is told, the entry stays.
        views.set(7, HashSet::new());
        assert!(watch.has_changed().unwrap());
        assert!(watch.borrow_and_update().is_empty());
        assert_eq!(views.len(), 1);
        // The session ends: nothing hidden, nobody watching, forgotten.
        drop(watch);
        views.release(7);
        assert_eq!(views.len(), 0);
        // A view kept for a peer not connected here stays until the game clears it.
        views.set(8, HashSet::from([1]));
        views.release(8);
        assert_eq!(views.len(), 1);
        views.set(8, HashSet::new());
        assert_eq!(views.len(), 0);
    }
}
