//! What a SyncedTree talks to: its own server (a Raft member in this process) or, on a game
//! client, the server it is connected to. Both take the same requests and hand the live tree
//! the same committed effects, so everything above them is shared.

use synctree_proto::{Op, SERVER_PEER};
use synctree_runtime::{Applied, ClientStatus, Completion, GameClient, PeerLink, Server, Status};

pub enum Backend {
    Server(Server),
    Client(GameClient),
}

impl Backend {
    pub fn submit(&self, op: Op) -> u64 {
        match self {
            Backend::Server(s) => s.submit(op),
            Backend::Client(c) => c.submit(op),
        }
    }

    /// Holds back the requests made from now until [`Backend::release`] (see
    /// `Node::hold` and `GameClient::hold`).
    pub fn hold(&self) {
        match self {
            Backend::Server(s) => s.hold(),
            Backend::Client(c) => c.hold(),
        }
    }

    /// Sends what was held, together.
    pub fn release(&self) {
        match self {
            Backend::Server(s) => s.release(),
            Backend::Client(c) => c.release(),
        }
    }

    pub fn submit_read(&self, path: String, property: String) -> u64 {
        match self {
            Backend::Server(s) => s.submit_read(path, property),
            Backend::Client(c) => c.submit_read(path, property),
        }
    }

    pub fn poll_completions(&self, out: &mut Vec<Completion>) {
        match self {
            Backend::Server(s) => s.poll_completions(out),
            Backend::Client(c) => c.poll_completions(out),
        }
    }

    pub fn try_recv_applied(&self) -> Option<Applied> {
        match self {
            Backend::Server(s) => s.try_recv_applied(),
            Backend::Client(c) => c.try_recv_applied(),
        }
    }

    /// The Raft status of a server; a client knows none (its server's id is in
    /// [`Backend::client_status`]).
    pub fn status(&self) -> Status {
        match self {
            Backend::Server(s) => s.status(),
            Backend::Client(_) => Status::default(),
        }
    }

    pub fn client_status(&self) -> Option<ClientStatus> {
        match self {
            Backend::Server(_) => None,
            Backend::Client(c) => Some(c.status()),
        }
    }

    pub fn server(&self) -> Option<&Server> {
        match self {
            Backend::Server(s) => Some(s),
            Backend::Client(_) => None,
        }
    }

    /// This process's peer id: the servers' ([`SERVER_PEER`]), or the client's once a server
    /// welcomed it (0 before).
    pub fn peer_id(&self) -> u64 {
        match self {
            Backend::Server(_) => SERVER_PEER,
            Backend::Client(c) => c.status().peer.unwrap_or(0),
        }
    }

    /// The link the multiplayer API sends and receives rpcs through.
    pub fn peer_link(&self) -> PeerLink {
        match self {
            Backend::Server(s) => s.peer_link(),
            Backend::Client(c) => c.peer_link(),
        }
    }

    pub fn shutdown(self) {
        match self {
            Backend::Server(s) => s.shutdown(),
            Backend::Client(c) => drop(c),
        }
    }
}
