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
//! A client that breaks the protocol (an oversized, truncated or undecodable hello, a wrong
//! version or token) is refused and disconnected, with the reason in this server's log; other
//! clients and the cluster are not affected.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use quinn::{Connection, Endpoint, Incoming, SendStream, VarInt};
use synctree_net::frame::{read_frame, write_frame};
use synctree_net::TlsMaterial;
use synctree_proto::{
    decode, encode, Hello, ServerMessage, CLIENT_PROTOCOL_VERSION, MAX_HELLO_BYTES,
};
use synctree_raft::{Feed, FeedItem, NodeId, SharedState, Start};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

/// How long a new connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Close codes of the client port.
mod close {
    pub const SHUTDOWN: u32 = 0;
    pub const REFUSED: u32 = 1;
    pub const PROTOCOL: u32 = 2;
}

/// Where and whom this server serves as game clients.
#[derive(Debug, Clone)]
pub struct ClientsConfig {
    /// UDP address of the client port (apart from the peer port).
    pub listen: SocketAddr,
    /// Tokens that admit a client; each token is one client identity (its peer id derives
    /// from it, so it is the same on every server).
    pub tokens: Vec<String>,
}

/// The peer id of the client holding `token`: the same on every server, in Godot's range of
/// client ids (2..2^31; 1 is the server).
pub fn peer_id_of(token: &str) -> u64 {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let v = u32::from_be_bytes([d.as_ref()[0], d.as_ref()[1], d.as_ref()[2], d.as_ref()[3]]);
    2 + u64::from(v) % (i32::MAX as u64 - 2)
}

struct Ctx {
    server: NodeId,
    cluster: String,
    tokens: Vec<String>,
    feed: Arc<Feed>,
    shared: Arc<RwLock<SharedState>>,
}

/// The client port of a running server.
pub(crate) struct ClientListener {
    endpoint: Endpoint,
    accept: JoinHandle<()>,
    local: Option<SocketAddr>,
}

impl ClientListener {
    pub(crate) fn start(
        cfg: &ClientsConfig,
        material: &TlsMaterial,
        server: NodeId,
        cluster: String,
        feed: Arc<Feed>,
        shared: Arc<RwLock<SharedState>>,
    ) -> Result<ClientListener, synctree_net::StartError> {
        let endpoint = synctree_net::clients::listen(cfg.listen, material)?;
        let local = endpoint.local_addr().ok();
        let ctx = Arc::new(Ctx {
            server,
            cluster,
            tokens: cfg.tokens.clone(),
            feed,
            shared,
        });
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
    let stream = tokio::time::timeout(HELLO_TIMEOUT, async {
        let (send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let body = read_frame(&mut recv, MAX_HELLO_BYTES)
            .await
            .map_err(|e| format!("bad hello: {e}"))?;
        let hello: Hello =
            decode(&body, MAX_HELLO_BYTES).map_err(|e| format!("malformed hello: {e}"))?;
        Ok::<_, String>((send, recv, hello))
    })
    .await;
    let (mut send, _recv, hello) = match stream {
        Ok(Ok(s)) => s,
        Ok(Err(reason)) => return refuse(&conn, close::PROTOCOL, &reason),
        Err(_) => return refuse(&conn, close::PROTOCOL, "no hello within 5 s"),
    };
    let refusal = if hello.version != CLIENT_PROTOCOL_VERSION {
        Some(format!(
            "client protocol version {} is not supported (this server speaks {})",
            hello.version, CLIENT_PROTOCOL_VERSION
        ))
    } else if !ctx.tokens.iter().any(|t| token_eq(t, &hello.token)) {
        Some("invalid token".to_owned())
    } else {
        None
    };
    if let Some(reason) = refusal {
        let _ = send_message(
            &mut send,
            &ServerMessage::Refused {
                reason: reason.clone(),
            },
        )
        .await;
        let _ = send.finish();
        // Let the refusal reach the client before the close does.
        tokio::time::sleep(Duration::from_millis(100)).await;
        return refuse(&conn, close::REFUSED, &reason);
    }
    let peer = peer_id_of(&hello.token);
    tracing::info!(
        node = ctx.server,
        "client {remote} connected as peer {peer}"
    );
    let welcome = ServerMessage::Welcome {
        server: ctx.server,
        cluster: ctx.cluster.clone(),
        peer,
    };
    if send_message(&mut send, &welcome).await.is_err() {
        return;
    }
    let after = hello
        .resume
        .filter(|r| r.cluster == ctx.cluster)
        .map(|r| r.index);
    match stream_feed(&mut send, &ctx, after).await {
        Ok(()) => {}
        Err(e) => tracing::info!(node = ctx.server, "client {remote} (peer {peer}) left: {e}"),
    }
}

/// Tokens compared in constant time.
fn token_eq(expected: &str, got: &str) -> bool {
    let (a, b) = (expected.as_bytes(), got.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn send_message(send: &mut SendStream, m: &ServerMessage) -> Result<(), String> {
    let bytes = encode(m).map_err(|e| e.to_string())?;
    write_frame(send, &[&bytes])
        .await
        .map_err(|e| e.to_string())
}

/// Sends the client's starting point, then live entries, until the client goes away.
async fn stream_feed(
    send: &mut SendStream,
    ctx: &Ctx,
    mut after: Option<u64>,
) -> Result<(), String> {
    loop {
        let (start, mut rx) = ctx.feed.subscribe(&ctx.shared, after);
        match start {
            Start::Reset { index, tree } => {
                send_message(send, &ServerMessage::Reset { index, tree }).await?;
                after = Some(index);
            }
            Start::History(chunks) => {
                for c in chunks {
                    write_frame(send, &[&c.bytes])
                        .await
                        .map_err(|e| e.to_string())?;
                    after = Some(c.last);
                }
            }
        }
        loop {
            match rx.recv().await {
                Ok(FeedItem::Chunk(c)) => {
                    if after.is_some_and(|a| c.last <= a) {
                        continue;
                    }
                    write_frame(send, &[&c.bytes])
                        .await
                        .map_err(|e| e.to_string())?;
                    after = Some(c.last);
                }
                // Too slow for the broadcast, or the state was replaced: start over from
                // where the client is.
                Ok(FeedItem::Reset) | Err(RecvError::Lagged(_)) => break,
                Err(RecvError::Closed) => return Err("server stopping".into()),
            }
        }
    }
}
