//! Turns queued requests into Raft proposals and reads.
//!
//! Writes are grouped: everything queued when the proposer looks becomes the next batch (one
//! log entry). On the leader, up to `RaftTuning::pipeline` batches are in consensus at once,
//! handed to Raft in order (an entry commits only with every entry before it, so they apply
//! in order); a follower forwards one batch at a time to the leader. Either way a
//! server's ops commit in the order they were made. Refusals and unreachable leaders are
//! retried until the request timeout. Retries are safe: the state machine applies a batch
//! once per `(origin, seq)` and never one older than the last it applied from that server.

use crate::handler::not_leader;
use crate::membership::{Membership, MembershipChange};
use crate::node::Inner;
use crate::rpc::{Committed, ForwardError, Rpc, RpcReply};
use futures::stream::{FuturesOrdered, StreamExt};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use synctree_net::NetError;
use synctree_proto::{Batch, ClientRequest, EncodedBatch, Event, Op, OpId, Stamp, Value};
use synctree_raft::NodeId;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Most events in one log entry: big enough to amortise a consensus round, small enough
/// that an AppendEntries of many entries still fits in one heartbeat interval.
pub(crate) const MAX_BATCH_EVENTS: usize = 2048;

/// Longest wait for one forwarding attempt before the leader is looked up again.
const FORWARD_ATTEMPT: Duration = Duration::from_secs(1);

/// What [`Inner::route`] carries to the leader.
enum Routed {
    Write(EncodedBatch),
    ReadIndex,
    Membership(MembershipChange),
}

enum RoutedOk {
    Committed(Committed),
    ReadIndex(u64),
    Membership(Membership),
}

/// A request queued by the main thread or by a game client's connection.
pub(crate) enum Submission {
    Write {
        ticket: u64,
        op: Op,
        /// On whose behalf: [`SERVER_PEER`](synctree_proto::SERVER_PEER) or a client.
        peer: u64,
    },
    Read {
        ticket: u64,
        path: String,
        property: String,
    },
    Membership {
        ticket: u64,
        change: MembershipChange,
    },
    /// Submissions held back and released together ([`crate::Server::hold`]): they go in
    /// one batch.
    Many(Vec<Submission>),
}

/// A finished request, identified by the ticket `submit` returned.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub ticket: u64,
    pub result: Result<Done, RequestError>,
}

/// Why a request did not succeed, and whether it may still have taken effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub message: String,
    /// True when the write may have been committed all the same (the leader went away, or
    /// the answer did not arrive in time): a history records it as `unknown`, not `fail`.
    pub uncertain: bool,
}

impl RequestError {
    /// It certainly did not take effect.
    pub fn refused(message: impl Into<String>) -> Self {
        RequestError {
            message: message.into(),
            uncertain: false,
        }
    }

    /// It may or may not have taken effect.
    pub fn uncertain(message: impl Into<String>) -> Self {
        RequestError {
            message: message.into(),
            uncertain: true,
        }
    }
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What a successful request produced. `index` is the log index the live tree must have
/// applied before the requester is told, so it observes its own write.
#[derive(Debug, Clone, PartialEq)]
pub enum Done {
    /// Committed at `index`, stamped `stamp`.
    Write {
        index: u64,
        stamp: Stamp,
    },
    Read {
        index: u64,
        value: Option<Value>,
    },
    /// A membership change took effect (its entry is committed).
    Membership(Membership),
}

/// Tickets of requests that game clients made through this server's client port have this
/// bit set: their completions go to the connection waiting for them, not the main thread.
const REMOTE_TICKET: u64 = 1 << 63;

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Done, RequestError>>>>>;

/// Where completions go: the main thread's queue, or the client connection waiting.
#[derive(Clone)]
pub(crate) struct Completions {
    main: std::sync::mpsc::Sender<Completion>,
    remote: Waiters,
}

impl Completions {
    pub(crate) fn send(&self, c: Completion) -> Result<(), ()> {
        if c.ticket & REMOTE_TICKET == 0 {
            return self.main.send(c).map_err(|_| ());
        }
        let waiter = self
            .remote
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&c.ticket);
        // A client that went away no longer waits.
        waiter.ok_or(())?.send(c.result).map_err(|_| ())
    }
}

/// Queues requests for the proposer on behalf of game clients.
#[derive(Clone)]
pub(crate) struct Submitter {
    tx: mpsc::UnboundedSender<Submission>,
    next: Arc<AtomicU64>,
    remote: Waiters,
}

/// The proposer's queue, made before the server starts: the main thread's end and the
/// completions for it, the game clients' end, and the proposer's end.
pub(crate) type Queue = (
    mpsc::UnboundedSender<Submission>,
    std::sync::mpsc::Receiver<Completion>,
    Submitter,
    (mpsc::UnboundedReceiver<Submission>, Completions),
);

pub(crate) fn queue() -> Queue {
    let (tx, rx) = mpsc::unbounded_channel();
    let (main, main_rx) = std::sync::mpsc::channel();
    let remote = Waiters::default();
    let submitter = Submitter {
        tx: tx.clone(),
        next: Arc::new(AtomicU64::new(1)),
        remote: remote.clone(),
    };
    (tx, main_rx, submitter, (rx, Completions { main, remote }))
}

impl Submitter {
    /// The submission of client `peer`'s write or read, to hand to [`Submitter::send`], and
    /// what waits for its outcome. Rpcs and the rest are not proposed: refused.
    pub(crate) fn prepare(
        &self,
        peer: u64,
        request: ClientRequest,
    ) -> Result<(Submission, Waiting), RequestError> {
        let ticket = REMOTE_TICKET | self.next.fetch_add(1, Ordering::Relaxed);
        let submission = match request {
            ClientRequest::Write(op) => Submission::Write { ticket, op, peer },
            ClientRequest::Read { path, property } => Submission::Read {
                ticket,
                path,
                property,
            },
            ClientRequest::Rpc(_)
            | ClientRequest::Eventual(_)
            | ClientRequest::Eventuals(_)
            | ClientRequest::Handle { .. }
            | ClientRequest::Set { .. }
            | ClientRequest::Updates { .. } => {
                return Err(RequestError::refused(
                    "internal error: only writes and reads are proposed (the session resolves the rest)",
                ));
            }
        };
        let (tx, rx) = oneshot::channel();
        self.remote
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ticket, tx);
        let waiting = Waiting {
            rx,
            ticket,
            remote: self.remote.clone(),
        };
        Ok((submission, waiting))
    }

    /// Queues submissions for the proposer, in order (several go in one batch). A client's
    /// requests are queued here in the order it made them, before anything waits: tasks
    /// that each queued their own could start in any order.
    pub(crate) fn send(&self, mut submissions: Vec<Submission>) {
        let submission = match submissions.len() {
            0 => return,
            1 => submissions.remove(0),
            _ => Submission::Many(submissions),
        };
        if let Err(mpsc::error::SendError(unsent)) = self.tx.send(submission) {
            // Stopping: certainly not proposed.
            let mut remote = self.remote.lock().unwrap_or_else(|p| p.into_inner());
            let mut queue = std::collections::VecDeque::from([unsent]);
            while let Some(s) = queue.pop_front() {
                match s {
                    Submission::Many(subs) => queue.extend(subs),
                    Submission::Write { ticket, .. }
                    | Submission::Read { ticket, .. }
                    | Submission::Membership { ticket, .. } => {
                        if let Some(waiter) = remote.remove(&ticket) {
                            let _ =
                                waiter.send(Err(RequestError::refused("the server is stopping")));
                        }
                    }
                }
            }
        }
    }
}

/// Waits for the outcome of a submission made by [`Submitter::prepare`]. Dropped unfinished
/// (its client went away), it stops waiting: the outcome, if one comes, is dropped.
pub(crate) struct Waiting {
    rx: oneshot::Receiver<Result<Done, RequestError>>,
    ticket: u64,
    remote: Waiters,
}

impl Waiting {
    pub(crate) async fn outcome(mut self) -> Result<Done, RequestError> {
        (&mut self.rx)
            .await
            .unwrap_or_else(|_| Err(RequestError::uncertain("the server stopped")))
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.remote
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.ticket);
    }
}

/// One batch on its way: its requests' tickets and stamps, and the batch itself (kept for
/// retries).
struct Proposal {
    tickets: Vec<u64>,
    stamps: Vec<Stamp>,
    batch: EncodedBatch,
}

type Settling = Pin<Box<dyn Future<Output = (Proposal, Result<Committed, ForwardError>)> + Send>>;

pub(crate) async fn run(
    inner: Arc<Inner>,
    mut rx: mpsc::UnboundedReceiver<Submission>,
    done: Completions,
) {
    let mut seq = 0u64;
    let mut synced = false;
    let mut pipeline: FuturesOrdered<Settling> = FuturesOrdered::new();
    // Reads and membership changes run beside the batches; they belong to this task, so
    // stopping the server (aborting it) stops them too.
    let mut side = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            Some((p, result)) = pipeline.next(), if !pipeline.is_empty() => {
                inner.settle(p, result, &done).await;
            }
            Some(_) = side.join_next(), if !side.is_empty() => {}
            first = rx.recv(), if pipeline.len() < inner.pipeline => {
                let Some(first) = first else { break };
                // Whatever comes first, writes may be queued behind it: sync before any.
                if !synced {
                    match inner.sync(&mut seq).await {
                        Ok(()) => synced = true,
                        Err(e) => {
                            let e = RequestError::refused(format!("not proposed: {e}"));
                            fail_queued(first, &mut rx, &done, e);
                            continue;
                        }
                    }
                }
                let Some(p) = inner.gather(first, &mut rx, &done, &mut seq, &mut side) else {
                    continue;
                };
                if inner.known_leader() == Some(inner.id) {
                    // Waits end when this node stops leading (the batch is then proposed
                    // again through the new leader; sessions apply it once) or at the
                    // request timeout (the outcome is then unknown).
                    let moved = leader_moves(inner.raft.server_metrics(), inner.id);
                    let deadline = Instant::now() + inner.request_timeout;
                    match inner.raft.client_write_ff(p.batch.clone()).await {
                        Ok(answer) => pipeline.push_back(Box::pin(async move {
                            let answer = tokio::select! {
                                biased;
                                a = answer => a,
                                () = moved => return (p, Err(ForwardError::NotLeader { leader: None })),
                                () = tokio::time::sleep_until(deadline) => {
                                    return (p, Err(ForwardError::Failed(
                                        "not committed within the request timeout (no quorum?)".into(),
                                    )))
                                }
                            };
                            let result = match answer {
                                Ok(Ok(resp)) => Ok(Committed {
                                    index: resp.log_id.index,
                                    outcomes: resp.data.outcomes,
                                    stale: resp.data.stale,
                                }),
                                Ok(Err(ClientWriteError::ForwardToLeader(f))) => {
                                    Err(not_leader(f.leader_id))
                                }
                                Ok(Err(e)) => Err(ForwardError::Failed(e.to_string())),
                                // Raft dropped it (stepping down, shutting down): retry.
                                Err(_) => Err(ForwardError::NotLeader { leader: None }),
                            };
                            (p, result)
                        })),
                        Err(fatal) => {
                            inner.record_fatal(&fatal);
                            fail_all(&done, p.tickets, RequestError::uncertain(fatal.to_string()))
                        }
                    }
                } else {
                    // A forwarded batch goes after every earlier one settled, and alone, so
                    // the leader receives this server's batches in order.
                    while let Some((q, result)) = pipeline.next().await {
                        inner.settle(q, result, &done).await;
                    }
                    let result = inner.propose(p.batch.clone()).await;
                    finish(&done, p, result);
                }
            }
        }
    }
    while let Some((q, result)) = pipeline.next().await {
        inner.settle(q, result, &done).await;
    }
}

/// Tells each request of a settled batch its outcome.
fn finish(done: &Completions, p: Proposal, result: Result<Committed, RequestError>) {
    match result {
        Ok(c) if c.stale => fail_all(
            done,
            p.tickets,
            RequestError::refused(
                "not applied: a later batch from this server was applied first (after a \
                 leader change); retry",
            ),
        ),
        Ok(c) if c.outcomes.len() != p.tickets.len() => {
            let e = format!(
                "internal error: log entry {} answered {} outcomes for {} events",
                c.index,
                c.outcomes.len(),
                p.tickets.len()
            );
            fail_all(done, p.tickets, RequestError::uncertain(e))
        }
        Ok(c) => {
            for ((ticket, stamp), outcome) in p.tickets.into_iter().zip(p.stamps).zip(c.outcomes) {
                let result = match outcome.result {
                    Ok(()) => Ok(Done::Write {
                        index: c.index,
                        stamp,
                    }),
                    Err(e) => Err(RequestError::refused(e.to_string())),
                };
                let _ = done.send(Completion { ticket, result });
            }
        }
        Err(e) => fail_all(done, p.tickets, e),
    }
}

fn fail_all(done: &Completions, tickets: Vec<u64>, error: RequestError) {
    for ticket in tickets {
        let _ = done.send(Completion {
            ticket,
            result: Err(error.clone()),
        });
    }
}

/// Fails `first` and everything queued behind it with `error` (none of it was proposed; a
/// request that arrives later tries again).
fn fail_queued(
    first: Submission,
    rx: &mut mpsc::UnboundedReceiver<Submission>,
    done: &Completions,
    error: RequestError,
) {
    let mut queue = std::collections::VecDeque::from([first]);
    while let Some(sub) = queue.pop_front() {
        let ticket = match sub {
            Submission::Write { ticket, .. }
            | Submission::Read { ticket, .. }
            | Submission::Membership { ticket, .. } => ticket,
            Submission::Many(subs) => {
                queue.extend(subs);
                continue;
            }
        };
        let _ = done.send(Completion {
            ticket,
            result: Err(error.clone()),
        });
        if queue.is_empty() {
            queue.extend(rx.try_recv().ok());
        }
    }
}

/// Resolves once this node no longer sees `leader` as the leader (an election started or
/// ended elsewhere); never, if Raft stopped.
async fn leader_moves(mut metrics: RaftMetricsWatch, leader: NodeId) {
    loop {
        if metrics.borrow_and_update().current_leader != Some(leader) {
            return;
        }
        if metrics.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Resolves once this node learns of a leader other than the one it knew when called.
async fn leader_known(mut metrics: RaftMetricsWatch) {
    let before = metrics.borrow_and_update().current_leader;
    loop {
        if metrics.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        let now = metrics.borrow_and_update().current_leader;
        if now.is_some() && now != before {
            return;
        }
    }
}

/// openraft's server metrics: sent only when the leader, state, vote or membership change
/// (the full metrics are sent several times per commit).
type RaftMetricsWatch =
    tokio::sync::watch::Receiver<openraft::metrics::RaftServerMetrics<NodeId, openraft::BasicNode>>;

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((5u64 << attempt.min(4)).min(50))
}

impl Inner {
    /// Takes `first` and whatever else is queued (up to [`MAX_BATCH_EVENTS`] writes) into
    /// one batch; reads among them start on their own.
    fn gather(
        self: &Arc<Self>,
        first: Submission,
        rx: &mut mpsc::UnboundedReceiver<Submission>,
        done: &Completions,
        seq: &mut u64,
        side: &mut JoinSet<()>,
    ) -> Option<Proposal> {
        let mut writes: Vec<(u64, Event)> = Vec::new();
        // Submissions released together are taken whole (the batch may then pass
        // MAX_BATCH_EVENTS: `hold` releases at most that many at once).
        let mut queue = std::collections::VecDeque::from([first]);
        while let Some(sub) = queue.pop_front() {
            match sub {
                Submission::Many(subs) => {
                    queue.extend(subs);
                    continue;
                }
                Submission::Write { ticket, op, peer } => {
                    let event = Event {
                        id: OpId {
                            origin: self.id,
                            seq: ticket,
                        },
                        stamp: self.clock.stamp(),
                        peer,
                        op,
                    };
                    writes.push((ticket, event))
                }
                Submission::Read {
                    ticket,
                    path,
                    property,
                } => {
                    let inner = self.clone();
                    let done = done.clone();
                    side.spawn(async move {
                        let result = inner.read(&path, &property).await;
                        let _ = done.send(Completion { ticket, result });
                    });
                }
                Submission::Membership { ticket, change } => {
                    let inner = self.clone();
                    let done = done.clone();
                    side.spawn(async move {
                        let result = inner.membership(change).await.map(Done::Membership);
                        let _ = done.send(Completion { ticket, result });
                    });
                }
            }
            if queue.is_empty() && writes.len() < MAX_BATCH_EVENTS {
                queue.extend(rx.try_recv().ok());
            }
        }
        if writes.is_empty() {
            return None;
        }
        // Batch seqs only grow, across restarts too: the HLC time of the batch's last event.
        let last = writes
            .last()
            .map(|(_, e)| e.stamp.hlc.get_time().as_u64())
            .unwrap_or(0);
        *seq = (*seq).max(last).max(*seq + 1);
        let tickets: Vec<u64> = writes.iter().map(|(t, _)| *t).collect();
        let stamps: Vec<Stamp> = writes.iter().map(|(_, e)| e.stamp).collect();
        let batch = Batch {
            origin: self.id,
            seq: *seq,
            events: writes.into_iter().map(|(_, e)| e).collect(),
        };
        match EncodedBatch::encode(&batch) {
            Ok(batch) => Some(Proposal {
                tickets,
                stamps,
                batch,
            }),
            Err(e) => {
                fail_all(
                    done,
                    tickets,
                    RequestError::refused(format!("internal error: {e}")),
                );
                None
            }
        }
    }

    /// Before this server proposes its first batch (after a start or restart): wait for a
    /// read index confirmed by a quorum and apply up to it. Every batch of an earlier life
    /// of this server that will ever commit has then applied, so the clock (which observes
    /// what applies) and `seq` are past all of them: new batches are never refused as
    /// older than its own earlier ones, and its stamps never go back.
    async fn sync(&self, seq: &mut u64) -> Result<(), RequestError> {
        self.read_index_applied().await?;
        let last = self.inspect_session_seq();
        *seq = (*seq).max(last);
        Ok(())
    }

    fn inspect_session_seq(&self) -> u64 {
        let s = self.shared.read().unwrap_or_else(|p| p.into_inner());
        s.sessions.get(&self.id).map(|x| x.last_seq).unwrap_or(0)
    }

    /// A read index from the leader, applied here.
    async fn read_index_applied(&self) -> Result<u64, RequestError> {
        let index = match self.route(Routed::ReadIndex).await? {
            RoutedOk::ReadIndex(i) => i,
            _ => {
                return Err(RequestError::uncertain(
                    "internal error: a read index request got another answer",
                ))
            }
        };
        self.raft
            .wait(Some(self.request_timeout))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map_err(|e| {
                RequestError::uncertain(format!(
                    "this server did not catch up to read index {index}: {e}"
                ))
            })?;
        Ok(index)
    }

    /// Completes a pipelined batch; one that lost its leader is proposed again (through
    /// the new leader) before anything after it, so order holds.
    async fn settle(
        &self,
        p: Proposal,
        result: Result<Committed, ForwardError>,
        done: &Completions,
    ) {
        let result = match result {
            Ok(c) => Ok(c),
            Err(ForwardError::Failed(e)) => Err(RequestError::uncertain(e)),
            Err(ForwardError::Refused(e)) => Err(RequestError::refused(e)),
            Err(ForwardError::NotLeader { .. }) => self.propose(p.batch.clone()).await,
        };
        finish(done, p, result);
    }

    /// Proposes on this node, which must be the leader.
    pub(crate) async fn write_local(&self, batch: EncodedBatch) -> Result<Committed, ForwardError> {
        match self.raft.client_write(batch).await {
            Ok(resp) => Ok(Committed {
                index: resp.log_id.index,
                outcomes: resp.data.outcomes,
                stale: resp.data.stale,
            }),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(not_leader(f.leader_id))
            }
            Err(RaftError::APIError(e)) => Err(ForwardError::Failed(e.to_string())),
            // Raft stopped here (shutting down, or a fatal error): ask elsewhere. A batch
            // proposed again through another leader applies once (sessions).
            Err(RaftError::Fatal(e)) => {
                self.record_fatal(&e);
                Err(ForwardError::NotLeader { leader: None })
            }
        }
    }

    /// The read index, confirmed by a quorum; this node must be the leader.
    pub(crate) async fn read_index_local(&self) -> Result<u64, ForwardError> {
        match self.raft.get_read_log_id().await {
            Ok((read, _applied)) => Ok(read.map(|l| l.index).unwrap_or(0)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(not_leader(f.leader_id))
            }
            // This leader could not hear from a quorum: retried until the deadline.
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
                tracing::debug!("node {}: {e}", self.id);
                Err(ForwardError::NotLeader { leader: None })
            }
            // Raft stopped here (shutting down, or a fatal error): ask elsewhere.
            Err(RaftError::Fatal(e)) => {
                self.record_fatal(&e);
                Err(ForwardError::NotLeader { leader: None })
            }
        }
    }

    pub(crate) fn known_leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    async fn local(&self, req: &Routed) -> Result<RoutedOk, ForwardError> {
        match req {
            Routed::Write(batch) => self
                .write_local(batch.clone())
                .await
                .map(RoutedOk::Committed),
            Routed::ReadIndex => self.read_index_local().await.map(RoutedOk::ReadIndex),
            Routed::Membership(change) => self
                .membership_local(change)
                .await
                .map(RoutedOk::Membership),
        }
    }

    /// Runs `req` here if this node leads, else forwards it to the leader; retries while
    /// there is no leader or the leader moves, until the request timeout.
    async fn route(&self, req: Routed) -> Result<RoutedOk, RequestError> {
        let what = match req {
            Routed::Write(_) => "write",
            Routed::ReadIndex => "read",
            Routed::Membership(_) => "membership change",
        };
        let deadline = Instant::now() + self.request_timeout;
        let mut last_problem = String::from("no leader is known");
        // Set once an attempt was cut after it may have reached a leader: a later refusal
        // (say, "not a member" for a removal) may then be that attempt's own doing.
        let mut maybe_ran = false;
        for attempt in 0.. {
            let result = match self.known_leader() {
                Some(l) if l == self.id => {
                    // A leader cut off from its quorum may not learn it lost for a long
                    // time: stop waiting when the leadership moves, or at the deadline.
                    tokio::select! {
                        biased;
                        r = self.local(&req) => r,
                        () = leader_moves(self.raft.server_metrics(), l) => {
                            last_problem = format!("this server (leader {l}) stopped leading");
                            maybe_ran = true;
                            Err(ForwardError::NotLeader { leader: None })
                        }
                        () = tokio::time::sleep_until(deadline) => {
                            last_problem = format!(
                                "this server leads but no quorum confirmed the {what}"
                            );
                            maybe_ran = true;
                            Err(ForwardError::NotLeader { leader: None })
                        }
                    }
                }
                Some(l) => {
                    self.forward(l, &req, deadline, &mut last_problem, &mut maybe_ran)
                        .await
                }
                None => Err(ForwardError::NotLeader { leader: None }),
            };
            match result {
                Ok(v) => return Ok(v),
                Err(ForwardError::Failed(msg)) => return Err(RequestError::uncertain(msg)),
                Err(ForwardError::Refused(msg)) if maybe_ran => {
                    return Err(RequestError::uncertain(format!(
                        "{msg} (an earlier attempt, cut short, may have taken effect)"
                    )))
                }
                Err(ForwardError::Refused(msg)) => return Err(RequestError::refused(msg)),
                Err(ForwardError::NotLeader { .. }) => {}
            }
            if Instant::now() >= deadline {
                break;
            }
            // Try again after a short backoff, or as soon as this node learns of a leader.
            tokio::select! {
                biased;
                () = tokio::time::sleep(backoff(attempt)) => {}
                () = leader_known(self.raft.server_metrics()) => {}
            }
        }
        Err(RequestError::uncertain(format!(
            "no quorum: {what} not confirmed within {} ms ({last_problem}); a majority of \
             the servers must be up and connected to each other",
            self.request_timeout.as_millis()
        )))
    }

    async fn forward(
        &self,
        leader: NodeId,
        req: &Routed,
        deadline: Instant,
        last_problem: &mut String,
        maybe_ran: &mut bool,
    ) -> Result<RoutedOk, ForwardError> {
        let rpc = match req {
            Routed::Write(batch) => Rpc::Propose(batch.clone()),
            Routed::ReadIndex => Rpc::ReadIndex,
            Routed::Membership(change) => Rpc::Membership(change.clone()),
        };
        let body = rmp_serde::to_vec(&rpc)
            .map_err(|e| ForwardError::Failed(format!("cannot encode request: {e}")))?;
        // A membership change may wait on the leader (a learner catching up): it gets all the
        // time left; other requests look the leader up again after a short attempt.
        let most = match req {
            Routed::Membership(_) => self.request_timeout,
            _ => FORWARD_ATTEMPT,
        };
        let left = deadline
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), most);
        // A leader that died answers nothing: stop waiting as soon as this node sees the
        // leadership move (an election started or ended) rather than after the whole attempt.
        // If the old leader did commit the batch, the retry is answered from the session.
        let reply = tokio::select! {
            biased;
            r = self.transport.request(leader, body, left) => r,
            () = leader_moves(self.raft.server_metrics(), leader) => {
                *last_problem = format!("leader {leader} stopped leading while asked");
                *maybe_ran = true;
                return Err(ForwardError::NotLeader { leader: None });
            }
        };
        let bytes = match reply {
            Ok(bytes) => bytes,
            Err(e) => {
                *last_problem = format!("leader {leader} unreachable: {e}");
                // Unless it was never sent, the leader may have acted on it.
                *maybe_ran |= !matches!(e, NetError::UnknownPeer(_) | NetError::Shutdown { .. });
                return Err(ForwardError::NotLeader { leader: None });
            }
        };
        match rmp_serde::from_slice::<RpcReply>(&bytes) {
            Ok(RpcReply::Propose(r)) => r.map(RoutedOk::Committed),
            Ok(RpcReply::ReadIndex(r)) => r.map(RoutedOk::ReadIndex),
            Ok(RpcReply::Membership(r)) => r.map(RoutedOk::Membership),
            Ok(other) => Err(ForwardError::Failed(format!(
                "leader {leader} sent an unexpected reply: {other:?}"
            ))),
            Err(e) => Err(ForwardError::Failed(format!(
                "leader {leader} sent an undecodable reply: {e}"
            ))),
        }
    }

    /// Commits `batch` through the leader, wherever it is.
    pub(crate) async fn propose(&self, batch: EncodedBatch) -> Result<Committed, RequestError> {
        match self.route(Routed::Write(batch)).await? {
            RoutedOk::Committed(c) => Ok(c),
            _ => Err(RequestError::uncertain(
                "internal error: a write got another answer",
            )),
        }
    }

    /// Carries out a membership change through the leader, wherever it is.
    pub(crate) async fn membership(
        &self,
        change: MembershipChange,
    ) -> Result<Membership, RequestError> {
        match self.route(Routed::Membership(change)).await? {
            RoutedOk::Membership(m) => Ok(m),
            _ => Err(RequestError::uncertain(
                "internal error: a membership change got another answer",
            )),
        }
    }

    /// A linearizable read: get a read index from the leader, wait until this node applied
    /// it, then read the committed tree.
    pub(crate) async fn read(&self, path: &str, property: &str) -> Result<Done, RequestError> {
        let index = self.read_index_applied().await?;
        let s = self.shared.read().unwrap_or_else(|p| p.into_inner());
        if !s.tree.contains(path) {
            return Err(RequestError::refused(format!(
                "node '{path}' does not exist in the synced tree"
            )));
        }
        Ok(Done::Read {
            index,
            value: s.tree.get(path, property).cloned(),
        })
    }
}
