//! Server side: accept connections, authenticate the peer, serve each stream on its own task.
//!
//! ```text
//!   accept loop ─▶ connection task (peer id from client cert) ─▶ Handler::datagram
//!                     └─▶ stream task: read frame ─▶ Handler::handle ─▶ write frame, finish
//! ```
//!
//! A frame violation or a [`HandlerError::Malformed`] closes that one connection, with a warning
//! naming the peer; other connections are untouched.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use quinn::{Connection, ConnectionError, Endpoint, Incoming, RecvStream, SendStream, VarInt};

use super::close;
use crate::frame::{self, Response};
use crate::{tls, Handler, HandlerError, NodeId};

/// What every connection and stream task needs.
pub(super) struct Server {
    pub local: NodeId,
    pub handler: Arc<dyn Handler>,
    pub max_frame_bytes: usize,
}

/// Accepts connections until the endpoint is closed.
pub(super) async fn accept_loop(endpoint: Endpoint, server: Arc<Server>) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(serve_connection(server.clone(), incoming));
    }
    tracing::debug!(
        node = server.local,
        "endpoint closed; no longer accepting connections"
    );
}

async fn serve_connection(server: Arc<Server>, incoming: Incoming) {
    let local = server.local;
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            // Includes peers without a certificate from the cluster CA.
            tracing::warn!(node = local, %remote, "refused connection from {remote}: {e}");
            return;
        }
    };
    let peer = match tls::peer_node_id(&conn) {
        Ok(peer) => peer,
        Err(e) => {
            let reason = format!("unusable client certificate: {e}");
            tracing::warn!(node = local, %remote, "closing connection from {remote}: {reason}");
            conn.close(
                VarInt::from_u32(close::UNAUTHENTICATED),
                close::reason(&reason),
            );
            return;
        }
    };
    tracing::debug!(node = local, peer, %remote, "accepted connection");
    loop {
        let ended = tokio::select! {
            stream = conn.accept_bi() => match stream {
                Ok((send, recv)) => {
                    tokio::spawn(serve_stream(server.clone(), conn.clone(), peer, send, recv));
                    None
                }
                Err(e) => Some(e),
            },
            datagram = conn.read_datagram() => match datagram {
                Ok(body) => {
                    // quinn hands out buffered datagrams without yielding: let other tasks
                    // (Raft's timers and streams) run between them.
                    tokio::task::coop::consume_budget().await;
                    let handled = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        server.handler.datagram(peer, body.to_vec())
                    }));
                    if handled.is_err() {
                        tracing::error!(node = local, peer, "handler panicked on a datagram from node {peer}");
                    }
                    None
                }
                Err(e) => Some(e),
            },
        };
        if let Some(e) = ended {
            log_connection_end(local, peer, &e);
            return;
        }
    }
}

fn log_connection_end(local: NodeId, peer: NodeId, e: &ConnectionError) {
    match e {
        ConnectionError::ApplicationClosed(_)
        | ConnectionError::LocallyClosed
        | ConnectionError::TimedOut => {
            tracing::debug!(node = local, peer, "connection from node {peer} ended: {e}");
        }
        _ => tracing::info!(node = local, peer, "connection from node {peer} lost: {e}"),
    }
}

/// Closes the connection of a misbehaving peer, saying why, in the log and to the peer.
fn reject(server: &Server, conn: &Connection, peer: NodeId, code: u32, reason: &str) {
    tracing::warn!(
        node = server.local,
        peer,
        remote = %conn.remote_address(),
        "closing connection from node {peer}: {reason}"
    );
    conn.close(VarInt::from_u32(code), close::reason(reason));
}

async fn serve_stream(
    server: Arc<Server>,
    conn: Connection,
    peer: NodeId,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let body = match frame::read_frame(&mut recv, server.max_frame_bytes).await {
        Ok(body) => body,
        Err(e) if e.is_violation() => {
            reject(
                &server,
                &conn,
                peer,
                close::PROTOCOL,
                &format!("bad request: {e}"),
            );
            return;
        }
        Err(e) => {
            // The caller gave up (stream reset) or the connection is gone.
            tracing::debug!(
                node = server.local,
                peer,
                "request stream from node {peer} failed: {e}"
            );
            return;
        }
    };
    let handled = AssertUnwindSafe(server.handler.handle(peer, body))
        .catch_unwind()
        .await;
    let response = match handled {
        Ok(Ok(response)) if response.len() > server.max_frame_bytes => {
            let message = format!(
                "response of {} bytes exceeds max_frame_bytes ({})",
                response.len(),
                server.max_frame_bytes
            );
            tracing::warn!(
                node = server.local,
                peer,
                "cannot answer node {peer}: {message}"
            );
            Response::Failed(message)
        }
        Ok(Ok(response)) => Response::Ok(response),
        Ok(Err(HandlerError::Failed(message))) => Response::Failed(message),
        Ok(Err(HandlerError::Malformed(why))) => {
            reject(
                &server,
                &conn,
                peer,
                close::MALFORMED,
                &format!("malformed request: {why}"),
            );
            return;
        }
        Err(_) => {
            tracing::error!(
                node = server.local,
                peer,
                "handler panicked on a request from node {peer}"
            );
            Response::Failed("the handler panicked".into())
        }
    };
    if let Err(e) = frame::write_response(&mut send, &response).await {
        tracing::debug!(node = server.local, peer, "cannot answer node {peer}: {e}");
        return;
    }
    // Do not wait for the peer's ACK (`stopped()`): delayed ACKs would stall this task.
    let _ = send.finish();
}
