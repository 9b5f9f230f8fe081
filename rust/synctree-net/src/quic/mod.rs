//! QUIC transport: one quinn endpoint per server, acting as both server and client.
//!
//! ```text
//!                      ┌──────────── QuicTransport (node A) ────────────┐
//!   request(B, body) ─▶│ client: cached connection per peer ── bi-stream ├──▶ node B
//!                      │ server: accept loop ─▶ task per connection       │◀── node C
//!                      │           ─▶ task per stream ─▶ Handler::handle  │
//!                      └──────────────────────────────────────────────────┘
//! ```
//!
//! Connections are opened lazily, shared by all requests to a peer (concurrent callers share one
//! connect attempt) and replaced when they die. Each request is one bidirectional stream carrying
//! one request frame and one response frame ([`crate::frame`]). Datagrams go on the connection
//! a node opened to its peer, which reads them beside the streams. A peer that breaks the framing,
//! or sends a request its handler calls malformed, loses that connection; everyone else is
//! unaffected.

mod client;
mod config;
mod server;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use quinn::{Endpoint, TokioRuntime, VarInt};

pub use config::QuicConfig;

use crate::{Handler, NetError, NodeId, StartError, Transport};

/// Application close codes carried in QUIC `CONNECTION_CLOSE` frames.
mod close {
    /// The endpoint is shutting down.
    pub const SHUTDOWN: u32 = 0;
    /// The peer broke the framing (oversized or truncated frame, bad status byte).
    pub const PROTOCOL: u32 = 1;
    /// The handler found the request malformed.
    pub const MALFORMED: u32 = 2;
    /// The peer's certificate names no node.
    pub const UNAUTHENTICATED: u32 = 3;

    /// Close reasons are kept short so they fit in one packet.
    pub fn reason(text: &str) -> &[u8] {
        let mut end = text.len().min(256);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        &text.as_bytes()[..end]
    }
}

/// How long [`QuicTransport::shutdown`] waits for peers to acknowledge the close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// [`Transport`] over QUIC with mutual TLS. Cheap to clone.
///
/// The UDP port is released once `shutdown` has run (or the last clone is dropped) and every
/// request in flight has ended.
#[derive(Clone)]
pub struct QuicTransport {
    inner: Arc<Inner>,
}

struct Inner {
    id: NodeId,
    endpoint: Endpoint,
    client: client::Client,
    shut_down: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Stops the accept loop, which holds the last other handle on the endpoint.
        self.endpoint
            .close(VarInt::from_u32(close::SHUTDOWN), b"transport dropped");
    }
}

impl QuicTransport {
    /// Binds `cfg.listen` and starts serving requests with `handler`.
    ///
    /// Must be called inside a tokio runtime; the accept loop runs on it.
    pub fn start(cfg: QuicConfig, handler: Arc<dyn Handler>) -> Result<QuicTransport, StartError> {
        tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        let in_cert = cfg.tls.node_id()?;
        if in_cert != cfg.id {
            return Err(StartError::IdMismatch {
                configured: cfg.id,
                in_cert,
            });
        }
        let built = config::build(&cfg)?;
        let bind_error = |source| StartError::Bind {
            addr: cfg.listen,
            source,
        };
        let socket = std::net::UdpSocket::bind(cfg.listen).map_err(bind_error)?;
        let mut endpoint = Endpoint::new(
            built.endpoint,
            Some(built.server),
            socket,
            Arc::new(TokioRuntime),
        )
        .map_err(bind_error)?;
        endpoint.set_default_client_config(built.client);

        let shut_down = Arc::new(AtomicBool::new(false));
        let client = client::Client::new(cfg.id, endpoint.clone(), &cfg, shut_down.clone());
        for (id, addr) in cfg.peers {
            client.set_peer(id, addr);
        }
        let server = server::Server {
            local: cfg.id,
            handler,
            max_frame_bytes: cfg.max_frame_bytes,
        };
        tokio::spawn(server::accept_loop(endpoint.clone(), Arc::new(server)));
        tracing::info!(node = cfg.id, addr = ?endpoint.local_addr().ok(), "QUIC transport listening");
        Ok(QuicTransport {
            inner: Arc::new(Inner {
                id: cfg.id,
                endpoint,
                client,
                shut_down,
            }),
        })
    }

    /// The address actually bound (useful after listening on port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.endpoint.local_addr()
    }

    /// Connections currently open, in both directions (diagnostics and tests).
    pub fn open_connections(&self) -> usize {
        self.inner.endpoint.open_connections()
    }

    /// Closes every connection, stops accepting, and waits briefly (at most 1 s) for peers to
    /// learn about it. Requests made afterwards fail with [`NetError::Shutdown`].
    pub async fn shutdown(&self) {
        self.inner.shut_down.store(true, Ordering::SeqCst);
        self.inner
            .endpoint
            .close(VarInt::from_u32(close::SHUTDOWN), b"shutting down");
        if tokio::time::timeout(SHUTDOWN_GRACE, self.inner.endpoint.wait_idle())
            .await
            .is_err()
        {
            tracing::debug!(
                node = self.inner.id,
                "shutdown: peers did not all acknowledge the close"
            );
        }
    }
}

impl Transport for QuicTransport {
    fn local_id(&self) -> NodeId {
        self.inner.id
    }

    fn request(
        &self,
        target: NodeId,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, NetError>> {
        let inner = self.inner.clone();
        async move {
            match tokio::time::timeout(timeout, inner.client.request(target, body)).await {
                Ok(result) => result,
                Err(_) => Err(NetError::Timeout {
                    peer: target,
                    after: timeout,
                }),
            }
        }
        .boxed()
    }

    fn set_peer(&self, id: NodeId, addr: SocketAddr) {
        self.inner.client.set_peer(id, addr);
    }

    fn remove_peer(&self, id: NodeId) {
        self.inner.client.remove_peer(id);
    }

    fn warm_up(&self, target: NodeId) -> BoxFuture<'static, Result<(), NetError>> {
        let inner = self.inner.clone();
        async move { inner.client.connect_to(target).await }.boxed()
    }

    fn datagram_room(&self, target: NodeId) -> Option<usize> {
        self.inner
            .client
            .open_connection(target)
            .and_then(|c| c.max_datagram_size())
    }

    fn send_datagram(&self, target: NodeId, body: Vec<u8>) -> Result<(), NetError> {
        let conn =
            self.inner
                .client
                .open_connection(target)
                .ok_or_else(|| NetError::Unreachable {
                    peer: target,
                    reason: "no connection open for a datagram".into(),
                })?;
        conn.send_datagram(body.into())
            .map_err(|e| NetError::Unreachable {
                peer: target,
                reason: format!("datagram not sent: {e}"),
            })
    }
}

impl std::fmt::Debug for QuicTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicTransport")
            .field("id", &self.inner.id)
            .field("local_addr", &self.inner.endpoint.local_addr().ok())
            .finish_non_exhaustive()
    }
}
