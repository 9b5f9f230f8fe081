//! Client side: one cached connection per peer, one stream per request.
//!
//! ```text
//!   slot(peer): Idle ──connect──▶ Connecting(shared future) ──ok──▶ Connected(conn)
//!                 ▲                       │ err                         │ closed / reset
//!                 └───────────────────────┴─────────────────────────────┘
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, Shared};
use futures::FutureExt;
use quinn::{Connection, ConnectionError, Endpoint, VarInt};

use super::{close, QuicConfig};
use crate::frame::{self, FrameError, Response};
use crate::{tls, NetError, NodeId};

type Connect = Shared<BoxFuture<'static, Result<Connection, NetError>>>;

enum SlotState {
    Idle,
    /// An attempt in progress and when it started.
    Connecting(Connect, Instant),
    Connected(Connection),
}

/// What we know about one peer: its address and our connection to it.
struct PeerSlot {
    addr: SocketAddr,
    state: Mutex<SlotState>,
}

pub(super) struct Client {
    local: NodeId,
    endpoint: Endpoint,
    max_frame_bytes: usize,
    connect_timeout: Duration,
    shut_down: Arc<AtomicBool>,
    peers: Mutex<HashMap<NodeId, Arc<PeerSlot>>>,
}

/// A mutex guard even if another thread panicked while holding the lock (the data stays
/// consistent: every critical section here is a single assignment).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How one attempt on one connection failed.
struct Failure {
    error: NetError,
    /// The connection died under us in a way that means the request never reached a live peer
    /// process (stateless reset, idle timeout): worth one retry on a fresh connection.
    retry: bool,
}

impl Client {
    pub(super) fn new(
        local: NodeId,
        endpoint: Endpoint,
        cfg: &QuicConfig,
        shut_down: Arc<AtomicBool>,
    ) -> Self {
        Client {
            local,
            endpoint,
            max_frame_bytes: cfg.max_frame_bytes,
            connect_timeout: cfg.connect_timeout,
            shut_down,
            peers: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn set_peer(&self, id: NodeId, addr: SocketAddr) {
        let mut peers = lock(&self.peers);
        if peers.get(&id).is_some_and(|slot| slot.addr == addr) {
            return;
        }
        let slot = PeerSlot {
            addr,
            state: Mutex::new(SlotState::Idle),
        };
        peers.insert(id, Arc::new(slot));
    }

    pub(super) fn remove_peer(&self, id: NodeId) {
        lock(&self.peers).remove(&id);
    }

    /// Sends one request and reads its response (the caller applies the timeout).
    pub(super) async fn request(&self, target: NodeId, body: Vec<u8>) -> Result<Vec<u8>, NetError> {
        if body.len() > self.max_frame_bytes {
            return Err(NetError::Protocol {
                peer: target,
                reason: format!(
                    "request of {} bytes exceeds max_frame_bytes ({})",
                    body.len(),
                    self.max_frame_bytes
                ),
            });
        }
        let (conn, fresh) = self.connection(target).await?;
        match self.attempt(target, &conn, &body).await {
            Err(failure) if failure.retry && !fresh => {
                tracing::debug!(
                    node = self.local,
                    peer = target,
                    "retrying on a fresh connection: {}",
                    failure.error
                );
                let (conn, _) = self.connection(target).await?;
                self.attempt(target, &conn, &body)
                    .await
                    .map_err(|f| f.error)
            }
            result => result.map_err(|f| f.error),
        }
    }

    /// The connection to `target` if one is open, without waiting.
    pub(super) fn open_connection(&self, target: NodeId) -> Option<Connection> {
        let slot = lock(&self.peers).get(&target).cloned()?;
        let state = lock(&slot.state);
        match &*state {
            SlotState::Connected(conn) if conn.close_reason().is_none() => Some(conn.clone()),
            _ => None,
        }
    }

    /// Opens a connection to `target` unless one is open.
    pub(super) async fn connect_to(&self, target: NodeId) -> Result<(), NetError> {
        self.connection(target).await.map(|_| ())
    }

    /// The cached connection to `target`, or a new one; `true` if it was made just now.
    async fn connection(&self, target: NodeId) -> Result<(Connection, bool), NetError> {
        if self.shut_down.load(Ordering::SeqCst) {
            return Err(NetError::Shutdown { local: self.local });
        }
        let slot = lock(&self.peers)
            .get(&target)
            .cloned()
            .ok_or(NetError::UnknownPeer(target))?;
        let connect = {
            let mut state = lock(&slot.state);
            match &*state {
                SlotState::Connected(conn) if conn.close_reason().is_none() => {
                    return Ok((conn.clone(), false))
                }
                // An attempt nobody awaited past its deadline would fail at once: start afresh.
                SlotState::Connecting(connect, started)
                    if started.elapsed() < self.connect_timeout =>
                {
                    connect.clone()
                }
                _ => {
                    let connect = self.connect(target, slot.addr);
                    *state = SlotState::Connecting(connect.clone(), Instant::now());
                    connect
                }
            }
        };
        let result = connect.clone().await;
        let mut state = lock(&slot.state);
        // Only the attempt still in the slot may settle it.
        if matches!(&*state, SlotState::Connecting(current, _) if current.ptr_eq(&connect)) {
            *state = match &result {
                Ok(conn) => SlotState::Connected(conn.clone()),
                Err(_) => SlotState::Idle,
            };
        }
        result.map(|conn| (conn, true))
    }

    /// A connect attempt that several callers can await together.
    fn connect(&self, target: NodeId, addr: SocketAddr) -> Connect {
        let endpoint = self.endpoint.clone();
        let local = self.local;
        let connect_timeout = self.connect_timeout;
        async move {
            let unreachable = |reason: String| NetError::Unreachable {
                peer: target,
                reason,
            };
            let connecting =
                endpoint
                    .connect(addr, &tls::node_name(target))
                    .map_err(|e| match e {
                        quinn::ConnectError::EndpointStopping => NetError::Shutdown { local },
                        other => unreachable(format!("cannot connect to {addr}: {other}")),
                    })?;
            // Dropping `connecting` on timeout abandons the attempt.
            let conn = match tokio::time::timeout(connect_timeout, connecting).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => return Err(unreachable(format!("cannot connect to {addr}: {e}"))),
                Err(_) => {
                    return Err(unreachable(format!(
                        "no handshake with {addr} within {connect_timeout:?}"
                    )))
                }
            };
            tracing::debug!(node = local, peer = target, %addr, "connected");
            Ok(conn)
        }
        .boxed()
        .shared()
    }

    /// One request on one connection.
    async fn attempt(
        &self,
        target: NodeId,
        conn: &Connection,
        body: &[u8],
    ) -> Result<Vec<u8>, Failure> {
        match exchange(conn, body, self.max_frame_bytes).await {
            Ok(Response::Ok(response)) => Ok(response),
            Ok(Response::Failed(message)) => Err(Failure {
                error: NetError::Remote {
                    peer: target,
                    message,
                },
                retry: false,
            }),
            Err(e) if e.is_violation() => {
                let reason = format!("bad response: {e}");
                tracing::warn!(
                    node = self.local,
                    peer = target,
                    "closing connection to node {target}: {reason}"
                );
                conn.close(VarInt::from_u32(close::PROTOCOL), close::reason(&reason));
                Err(Failure {
                    error: NetError::Protocol {
                        peer: target,
                        reason,
                    },
                    retry: false,
                })
            }
            Err(e) => Err(self.classify(target, conn, &e)),
        }
    }

    /// Turns a stream failure into an error, using the connection's fate when it died.
    fn classify(&self, target: NodeId, conn: &Connection, stream_error: &FrameError) -> Failure {
        let unreachable = |reason: String, retry| Failure {
            error: NetError::Unreachable {
                peer: target,
                reason,
            },
            retry,
        };
        let Some(reason) = conn.close_reason() else {
            return unreachable(format!("request stream failed: {stream_error}"), false);
        };
        match reason {
            ConnectionError::ApplicationClosed(close)
                if close.error_code != VarInt::from_u32(close::SHUTDOWN) =>
            {
                Failure {
                    error: NetError::Protocol {
                        peer: target,
                        reason: format!(
                            "node {target} closed the connection: {}",
                            String::from_utf8_lossy(&close.reason)
                        ),
                    },
                    retry: false,
                }
            }
            ConnectionError::LocallyClosed if self.shut_down.load(Ordering::SeqCst) => Failure {
                error: NetError::Shutdown { local: self.local },
                retry: false,
            },
            // The peer process is gone (restart: it no longer knows this connection) or the
            // connection idled out: the request was not handled by a live peer.
            ConnectionError::Reset | ConnectionError::TimedOut | ConnectionError::LocallyClosed => {
                unreachable(format!("connection lost: {reason}"), true)
            }
            other => unreachable(format!("connection lost: {other}"), false),
        }
    }
}

/// Writes the request on a new stream, finishes it (without waiting for the peer's ACK) and
/// reads the response.
async fn exchange(
    conn: &Connection,
    body: &[u8],
    max_frame_bytes: usize,
) -> Result<Response, FrameError> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| FrameError::Io(std::io::Error::other(e)))?;
    frame::write_frame(&mut send, &[body]).await?;
    // Only fails if already finished; `stopped()` is deliberately not awaited (delayed ACKs).
    let _ = send.finish();
    frame::read_response(&mut recv, max_frame_bytes).await
}
