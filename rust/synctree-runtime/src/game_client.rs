//! A game client's connection to the cluster: connects to one of the servers' client ports,
//! says hello with its token, and hands what the server streams to the thread that owns the
//! client's live tree, as [`Applied`] batches in log order, exactly once each. When its server
//! goes away it connects to the next one and resumes from the last index it applied.
//!
//! ```text
//!   servers[i] ── QUIC (cluster CA, node-<id>.synctree) ─▶ Hello { token, resume }
//!       ◀─ Welcome | Refused     ◀─ Reset { index, tree }     ◀─ Entries ...
//!   ClientCursor: skip index <= last, refuse gaps ─▶ Applied::{Reset, Effects} ─▶ main thread
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::Endpoint;
use synctree_net::frame::{read_frame, write_frame};
use synctree_net::tls::node_name;
use synctree_proto::{decode, encode, ClientCursor, Hello, ServerMessage, CLIENT_PROTOCOL_VERSION};
use synctree_raft::{Applied, NodeId};

use crate::server::StartError;

/// Largest message a client accepts from a server (a whole-tree reset included).
const MAX_MESSAGE_BYTES: usize = 256 << 20;
/// Wait before trying the next server after a failure.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
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
}

/// A running game client; dropping it disconnects.
pub struct GameClient {
    runtime: Option<tokio::runtime::Runtime>,
    applied: Mutex<std::sync::mpsc::Receiver<Applied>>,
    status: Arc<Mutex<ClientStatus>>,
}

impl GameClient {
    /// Starts connecting (in the background); the first server reached streams the tree.
    pub fn connect(cfg: GameClientConfig) -> Result<GameClient, StartError> {
        if cfg.servers.is_empty() {
            return Err(StartError::Raft(
                "a game client needs at least one server".into(),
            ));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("synctree-client")
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;
        let endpoint = {
            let _guard = runtime.enter();
            synctree_net::clients::connector(&cfg.ca)?
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let status = Arc::new(Mutex::new(ClientStatus::default()));
        runtime.spawn(run(cfg, endpoint, tx, status.clone()));
        Ok(GameClient {
            runtime: Some(runtime),
            applied: Mutex::new(rx),
            status,
        })
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
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

async fn run(
    cfg: GameClientConfig,
    endpoint: Endpoint,
    tx: std::sync::mpsc::Sender<Applied>,
    status: Arc<Mutex<ClientStatus>>,
) {
    let mut cursor = ClientCursor::default();
    for (id, addr) in cfg.servers.iter().cycle() {
        let outcome = session(&endpoint, *id, *addr, &cfg.token, &mut cursor, &tx, &status).await;
        let set = |f: &dyn Fn(&mut ClientStatus)| update(&status, f);
        set(&|s| s.server = None);
        match outcome {
            Ok(Ended::Refused(reason)) => {
                tracing::error!("server {id} refused this client: {reason}");
                set(&|s| s.refused = Some(reason.clone()));
                return;
            }
            Ok(Ended::LiveTreeGone) => return,
            Err(e) => {
                tracing::info!("client: connection to server {id} ({addr}) ended: {e}");
                set(&|s| s.last_error = Some(format!("server {id} ({addr}): {e}")));
            }
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
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
    tx: &std::sync::mpsc::Sender<Applied>,
    status: &Mutex<ClientStatus>,
) -> Result<Ended, String> {
    let set = |f: &dyn Fn(&mut ClientStatus)| update(status, f);
    let connecting = endpoint
        .connect(addr, &node_name(id))
        .map_err(|e| e.to_string())?;
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| format!("no handshake within {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let hello = Hello {
        version: CLIENT_PROTOCOL_VERSION,
        token: token.to_owned(),
        resume: cursor.resume(),
    };
    let bytes = encode(&hello).map_err(|e| e.to_string())?;
    write_frame(&mut send, &[&bytes])
        .await
        .map_err(|e| e.to_string())?;
    let mut welcomed = false;
    loop {
        let body = read_frame(&mut recv, MAX_MESSAGE_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        let message: ServerMessage =
            decode(&body, MAX_MESSAGE_BYTES).map_err(|e| format!("malformed message: {e}"))?;
        let applied = match message {
            ServerMessage::Refused { reason } => return Ok(Ended::Refused(reason)),
            ServerMessage::Welcome {
                server,
                cluster,
                peer,
            } => {
                if server != id {
                    return Err(format!("expected server {id}, reached server {server}"));
                }
                if cursor.cluster.as_ref().is_some_and(|c| *c != cluster) {
                    tracing::warn!(
                        "server {id} belongs to another cluster ({cluster}): starting over"
                    );
                }
                welcomed = true;
                set(&|s| {
                    s.server = Some(server);
                    s.peer = Some(peer);
                    s.connections += 1;
                });
                // Keep the cluster for the next resume.
                if cursor.cluster.is_none() {
                    cursor.cluster = Some(cluster);
                }
                continue;
            }
            _ if !welcomed => return Err("the server sent data before its welcome".into()),
            ServerMessage::Reset { index, tree } => {
                let cluster = cursor.cluster.clone().unwrap_or_default();
                cursor.reset(&cluster, index);
                Applied::Reset { index, tree }
            }
            ServerMessage::Entries(entries) => {
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
        if tx.send(applied).is_err() {
            return Ok(Ended::LiveTreeGone);
        }
        set(&|s| s.index = index);
    }
}
