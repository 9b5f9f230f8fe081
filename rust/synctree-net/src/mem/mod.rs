//! In-memory network for tests: nodes in one process, with fault hooks.
//!
//! ```text
//!   MemTransport(1) ──request──▶ MemNetwork ──(link 1->2 up? delay, loss)──▶ handler of node 2
//!   MemTransport(1) ◀─response── MemNetwork ◀─(link 2->1 up? delay, loss)──┘
//!   MemTransport(1) ──datagram─▶ MemNetwork ──(same faults, no answer)──────▶ handler of node 2
//!
//!   faults: isolate(id) / heal(id), block(from, to) / unblock, set_delay, set_jitter,
//!           set_drop_rate, set_datagram_drop_rate, set_duplicate_rate (the random ones seeded),
//!           unregister(id) = crash (its in-flight handlers are cancelled), register again = restart
//! ```
//!
//! A request over a cut link fails with [`NetError::Unreachable`] after a short wait
//! ([`MemNetwork::set_unreachable_after`], 10 ms by default), not after the caller's timeout. A
//! cut on the way back happens after the handler ran, as on a real network. Handlers run on
//! their own tasks, so a caller's timeout does not cancel them; a crash does.

mod faults;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::watch;

use crate::{Handler, HandlerError, NetError, NodeId, Transport};
use faults::Faults;

/// A simulated network; cheap to clone (all clones are the same network).
#[derive(Clone)]
pub struct MemNetwork {
    state: Arc<Mutex<NetState>>,
}

struct NetState {
    nodes: HashMap<NodeId, Node>,
    faults: Faults,
    next_incarnation: u64,
}

/// A running node. Dropping it (crash, restart) cancels its in-flight handlers.
struct Node {
    handler: Arc<dyn Handler>,
    incarnation: u64,
    alive: watch::Sender<bool>,
}

/// What happens to a request at the moment it is sent.
enum Outbound {
    Deliver {
        handler: Arc<dyn Handler>,
        alive: watch::Receiver<bool>,
        delay: Duration,
        /// Deliver a second copy after this much longer.
        duplicate: Option<Duration>,
    },
    Lost {
        reason: String,
        after: Duration,
    },
}

impl Default for MemNetwork {
    fn default() -> Self {
        MemNetwork::new()
    }
}

impl MemNetwork {
    /// An empty network with no faults (random drops seeded with 0).
    pub fn new() -> Self {
        MemNetwork::with_seed(0)
    }

    /// An empty network whose random message drops follow `seed`.
    pub fn with_seed(seed: u64) -> Self {
        let state = NetState {
            nodes: HashMap::new(),
            faults: Faults::new(seed),
            next_incarnation: 0,
        };
        MemNetwork {
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts node `id` with `handler` and returns its transport. If `id` is already running, the
    /// old instance crashes first (a restart): its transport stops working.
    pub fn register(&self, id: NodeId, handler: Arc<dyn Handler>) -> MemTransport {
        let mut state = self.lock();
        state.next_incarnation += 1;
        let incarnation = state.next_incarnation;
        let (alive, _) = watch::channel(true);
        if let Some(old) = state.nodes.insert(
            id,
            Node {
                handler,
                incarnation,
                alive,
            },
        ) {
            old.alive.send_replace(false);
        }
        MemTransport {
            id,
            incarnation,
            net: self.clone(),
        }
    }

    /// Crashes node `id`: requests to it fail, its transport fails with [`NetError::Shutdown`],
    /// and handlers it is running are cancelled.
    pub fn unregister(&self, id: NodeId) {
        if let Some(node) = self.lock().nodes.remove(&id) {
            node.alive.send_replace(false);
        }
    }

    /// Whether node `id` is running.
    pub fn is_registered(&self, id: NodeId) -> bool {
        self.lock().nodes.contains_key(&id)
    }

    /// Cuts every link to and from `id`.
    pub fn isolate(&self, id: NodeId) {
        self.lock().faults.isolate(id);
    }

    /// Reconnects `id`: lifts its isolation and every one-way block to or from it.
    pub fn heal(&self, id: NodeId) {
        self.lock().faults.heal(id);
    }

    /// Lifts every isolation and block.
    pub fn heal_all(&self) {
        self.lock().faults.heal_all();
    }

    /// Loses every message from `from` to `to` (one way: `to` can still reach `from`, but gets
    /// no answers).
    pub fn block(&self, from: NodeId, to: NodeId) {
        self.lock().faults.block(from, to);
    }

    /// Undoes [`block`](Self::block).
    pub fn unblock(&self, from: NodeId, to: NodeId) {
        self.lock().faults.unblock(from, to);
    }

    /// Adds `delay` of one-way latency to every message (a round trip takes twice that).
    pub fn set_delay(&self, delay: Duration) {
        self.lock().faults.delay = delay;
    }

    /// Adds a random extra latency in `[0, jitter)` to each message, drawn from the seeded
    /// sequence: messages overtake each other (reordering).
    pub fn set_jitter(&self, jitter: Duration) {
        self.lock().faults.jitter = jitter;
    }

    /// Delivers each request twice with probability `rate` (the second copy's answer is
    /// dropped), as a network that retransmits or duplicates packets would.
    pub fn set_duplicate_rate(&self, rate: f64) {
        self.lock().faults.set_duplicate_rate(rate);
    }

    /// Loses each datagram (not requests) with probability `rate` (clamped to `[0, 1]`), as a
    /// lossy link loses UDP packets that a stream would resend; drawn from the seeded sequence.
    pub fn set_datagram_drop_rate(&self, rate: f64) {
        self.lock().faults.set_datagram_drop_rate(rate);
    }

    /// Loses each message with probability `rate` (clamped to `[0, 1]`), drawn from the seeded
    /// sequence of [`with_seed`](Self::with_seed).
    pub fn set_drop_rate(&self, rate: f64) {
        self.lock().faults.set_drop_rate(rate);
    }

    /// How long a request over a cut link takes to fail (default 10 ms).
    pub fn set_unreachable_after(&self, after: Duration) {
        self.lock().faults.unreachable_after = after;
    }

    fn outbound(&self, from: NodeId, incarnation: u64, to: NodeId) -> Result<Outbound, NetError> {
        let mut state = self.lock();
        if state
            .nodes
            .get(&from)
            .is_none_or(|node| node.incarnation != incarnation)
        {
            return Err(NetError::Shutdown { local: from });
        }
        let after = state.faults.unreachable_after;
        let Some(node) = state.nodes.get(&to) else {
            let reason = format!("node {to} is not running");
            return Ok(Outbound::Lost { reason, after });
        };
        let (handler, alive) = (node.handler.clone(), node.alive.subscribe());
        if let Some(reason) = state.faults.loss(from, to) {
            return Ok(Outbound::Lost { reason, after });
        }
        let delay = state.faults.latency();
        let duplicate = state.faults.duplicated().then(|| state.faults.latency());
        Ok(Outbound::Deliver {
            handler,
            alive,
            delay,
            duplicate,
        })
    }

    /// Whether a response from `from` to `to` is lost, and if so why and after how long.
    fn response_loss(&self, from: NodeId, to: NodeId) -> Result<Duration, (String, Duration)> {
        let mut state = self.lock();
        let after = state.faults.unreachable_after;
        match state.faults.loss(from, to) {
            Some(reason) => Err((format!("response lost: {reason}"), after)),
            None => Ok(state.faults.latency()),
        }
    }

    async fn send(
        self,
        from: NodeId,
        incarnation: u64,
        to: NodeId,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, NetError> {
        let unreachable = |reason| NetError::Unreachable { peer: to, reason };
        let (handler, alive, delay, duplicate) = match self.outbound(from, incarnation, to)? {
            Outbound::Lost { reason, after } => {
                tokio::time::sleep(after).await;
                return Err(unreachable(reason));
            }
            Outbound::Deliver {
                handler,
                alive,
                delay,
                duplicate,
            } => (handler, alive, delay, duplicate),
        };
        if let Some(extra) = duplicate {
            let (handler, alive, body) = (handler.clone(), alive.clone(), body.clone());
            tokio::spawn(async move {
                sleep_if_any(delay + extra).await;
                let _ = deliver(handler, alive, from, body).await;
            });
        }
        sleep_if_any(delay).await;
        let task = tokio::spawn(deliver(handler, alive, from, body));
        let outcome = match task.await {
            Ok(Some(outcome)) => outcome,
            Ok(None) => {
                return Err(unreachable(format!(
                    "node {to} crashed while handling the request"
                )));
            }
            Err(_) => Err(HandlerError::Failed("the handler panicked".into())),
        };
        match self.response_loss(to, from) {
            Ok(delay) => sleep_if_any(delay).await,
            Err((reason, after)) => {
                tokio::time::sleep(after).await;
                return Err(unreachable(reason));
            }
        }
        outcome.map_err(|e| match e {
            HandlerError::Failed(message) => NetError::Remote { peer: to, message },
            HandlerError::Malformed(why) => NetError::Protocol {
                peer: to,
                reason: format!("node {to} closed the connection: malformed request: {why}"),
            },
        })
    }
}

/// Runs the handler of the receiving node; `None` if that node crashed meanwhile.
async fn deliver(
    handler: Arc<dyn Handler>,
    mut alive: watch::Receiver<bool>,
    from: NodeId,
    body: Vec<u8>,
) -> Option<Result<Vec<u8>, HandlerError>> {
    tokio::select! {
        biased;
        _ = alive.wait_for(|alive| !*alive) => None,
        result = handler.handle(from, body) => Some(result),
    }
}

async fn sleep_if_any(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// The [`Transport`] of one node on a [`MemNetwork`]. Cheap to clone.
///
/// Addresses mean nothing here: every running node is reachable, so `set_peer` and
/// `remove_peer` do nothing.
#[derive(Clone)]
pub struct MemTransport {
    id: NodeId,
    incarnation: u64,
    net: MemNetwork,
}

impl Transport for MemTransport {
    fn local_id(&self) -> NodeId {
        self.id
    }

    fn request(
        &self,
        target: NodeId,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, NetError>> {
        let send = self
            .net
            .clone()
            .send(self.id, self.incarnation, target, body);
        async move {
            tokio::time::timeout(timeout, send)
                .await
                .unwrap_or(Err(NetError::Timeout {
                    peer: target,
                    after: timeout,
                }))
        }
        .boxed()
    }

    fn set_peer(&self, _id: NodeId, _addr: SocketAddr) {}

    fn remove_peer(&self, _id: NodeId) {}

    fn datagram_room(&self, _target: NodeId) -> Option<usize> {
        Some(MEM_DATAGRAM_ROOM)
    }

    /// Lost like a request over a cut link or to a node not running (silently), delayed and
    /// duplicated like one; must be called inside a tokio runtime.
    fn send_datagram(&self, target: NodeId, body: Vec<u8>) -> Result<(), NetError> {
        if body.len() > MEM_DATAGRAM_ROOM {
            return Err(NetError::Protocol {
                peer: target,
                reason: format!(
                    "datagram of {} bytes exceeds {MEM_DATAGRAM_ROOM}",
                    body.len()
                ),
            });
        }
        let Outbound::Deliver {
            handler,
            alive,
            delay,
            duplicate,
        } = self.net.outbound(self.id, self.incarnation, target)?
        else {
            return Ok(());
        };
        if self.net.lock().faults.datagram_lost() {
            return Ok(());
        }
        let from = self.id;
        for after in std::iter::once(delay).chain(duplicate.map(|d| delay + d)) {
            let (handler, alive, body) = (handler.clone(), alive.clone(), body.clone());
            tokio::spawn(async move {
                sleep_if_any(after).await;
                if *alive.borrow() {
                    handler.datagram(from, body);
                }
            });
        }
        Ok(())
    }
}

/// The largest datagram a [`MemTransport`] sends (a QUIC datagram on a 1280-byte path).
pub const MEM_DATAGRAM_ROOM: usize = 1200;

impl std::fmt::Debug for MemTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemTransport")
            .field("id", &self.id)
            .field("incarnation", &self.incarnation)
            .finish_non_exhaustive()
    }
}
