//! synctree over the game's own `MultiplayerPeer` (ENet, WebSocket, WebRTC), as
//! SceneMultiplayer rides on whatever peer the game assigns.
//!
//! ```text
//!   server peer (unique id 1) ─▶ SyncedTree::serve_peer (a one-server cluster if not running)
//!       packets from peer p ─▶ reassemble ─▶ session of p (Node::attach_client) ─▶ frames ─▶ p
//!   client peer, connected   ─▶ SyncedTree::connect_over_peer (a game client over a pipe)
//!       packets from peer 1 ─▶ reassemble ─▶ GameClient session ─▶ frames ─▶ peer 1
//! ```
//!
//! A client-protocol frame travels as packets of at most [`PACKET_BYTES`], each led by one
//! byte: [`MORE`] (more packets of this frame follow) or [`LAST`], reliable and ordered on
//! channel 0, so peers with small messages (WebRTC data channels, WebSocket buffers) carry
//! any frame. A message that may be lost (an unreliable rpc, an eventual write) goes whole
//! in one unreliable packet led by [`DATAGRAM`], if it fits. A session that ends (refused, protocol violation) gets its peer disconnected
//! shortly after its last frame left; a peer that disconnects ends its session.

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use godot::classes::multiplayer_peer::{ConnectionStatus, TransferMode};
use godot::classes::MultiplayerPeer;
use godot::prelude::*;
use synctree_proto::MAX_REQUEST_BYTES;
use synctree_runtime::{FramePipe, Pulled};

use crate::synced_tree::SyncedTree;

/// Largest packet handed to the peer (a WebRTC data channel message is safe up to 16 KiB).
const PACKET_BYTES: usize = 16 * 1024;
const MORE: u8 = 0;
const LAST: u8 = 1;
/// A whole message sent unreliably (an unreliable rpc, an eventual write).
const DATAGRAM: u8 = 2;
/// A frame from a client may not exceed a request's limit (plus its packet headers).
const FROM_CLIENT_MAX: usize = MAX_REQUEST_BYTES + 16;
/// A frame from the server (a whole-tree reset included).
const FROM_SERVER_MAX: usize = 256 << 20;
/// An ended session's last frames get this long to leave before the peer is disconnected.
const LINGER: Duration = Duration::from_millis(200);

/// One session carried by the peer.
struct Conn {
    pipe: Option<FramePipe>,
    partial: Vec<u8>,
    /// When the session ended (its peer is disconnected after [`LINGER`]).
    ended: Option<Instant>,
}

impl Conn {
    fn new(pipe: FramePipe) -> Conn {
        Conn {
            pipe: Some(pipe),
            partial: Vec::new(),
            ended: None,
        }
    }

    /// Takes one packet; a complete frame goes to the session.
    fn receive(&mut self, packet: &[u8], max: usize) -> Result<(), String> {
        let Some((&kind, body)) = packet.split_first() else {
            return Err("sent an empty packet".into());
        };
        if kind == DATAGRAM {
            // Whole in itself; it may arrive between the packets of a frame.
            if body.len() > max {
                return Err(format!("sent a message over {max} bytes"));
            }
            return self.deliver(body.to_vec());
        }
        if self.partial.len() + body.len() > max {
            return Err(format!("sent a message over {max} bytes"));
        }
        self.partial.extend_from_slice(body);
        match kind {
            MORE => Ok(()),
            LAST => {
                let frame = std::mem::take(&mut self.partial);
                self.deliver(frame)
            }
            other => Err(format!("sent a packet of unknown kind {other}")),
        }
    }

    /// Hands a whole message to the session.
    fn deliver(&mut self, message: Vec<u8>) -> Result<(), String> {
        match &self.pipe {
            Some(pipe) if !pipe.push(message) => {
                Err("sent faster than its session takes requests".into())
            }
            _ => Ok(()),
        }
    }

    /// Sends what the session wrote to `target`; notes when the session ended.
    fn flush(&mut self, peer: &mut Gd<MultiplayerPeer>, target: i32) {
        let Some(pipe) = self.pipe.as_mut() else {
            return;
        };
        loop {
            match pipe.pull() {
                Pulled::Frame(frame) => send_frame(peer, target, &frame),
                Pulled::Datagram(d) if d.len() < PACKET_BYTES => {
                    peer.set_transfer_mode(TransferMode::UNRELIABLE);
                    peer.set_transfer_channel(0);
                    peer.set_target_peer(target);
                    let mut packet = Vec::with_capacity(d.len() + 1);
                    packet.push(DATAGRAM);
                    packet.extend_from_slice(&d);
                    peer.put_packet(&PackedByteArray::from(packet.as_slice()));
                }
                Pulled::Datagram(d) => send_frame(peer, target, &d),
                Pulled::Empty => return,
                Pulled::Ended => {
                    self.pipe = None;
                    self.ended = Some(Instant::now());
                    return;
                }
            }
        }
    }

    /// [`Conn::receive`]; a sender that breaks the packet format is disconnected.
    fn take(&mut self, from: i32, packet: &PackedByteArray, max: usize) {
        if self.ended.is_some() {
            return;
        }
        if let Err(e) = self.receive(packet.as_slice(), max) {
            godot_error!("SyncedMultiplayerAPI: peer {from} disconnected: it {e}");
            self.pipe = None;
            self.ended = Some(Instant::now() - LINGER);
        }
    }

    fn lingered(&self) -> bool {
        self.ended.is_some_and(|t| t.elapsed() >= LINGER)
    }
}

fn send_frame(peer: &mut Gd<MultiplayerPeer>, target: i32, frame: &[u8]) {
    peer.set_transfer_mode(TransferMode::RELIABLE);
    peer.set_transfer_channel(0);
    peer.set_target_peer(target);
    let mut pieces = frame.chunks(PACKET_BYTES - 1).peekable();
    if pieces.peek().is_none() {
        peer.put_packet(&PackedByteArray::from(&[LAST][..]));
    }
    while let Some(piece) = pieces.next() {
        let mut packet = Vec::with_capacity(piece.len() + 1);
        packet.push(if pieces.peek().is_some() { MORE } else { LAST });
        packet.extend_from_slice(piece);
        peer.put_packet(&PackedByteArray::from(packet.as_slice()));
    }
}

enum Role {
    /// Not decided yet (a client peer still connecting).
    Unset,
    Server(HashMap<i32, Conn>),
    Client(Conn),
    /// Nothing more to do with this peer.
    Done,
}

/// What the multiplayer API should announce.
pub enum Note {
    /// The client peer never connected.
    ConnectionFailed,
}

/// The sessions carried by the game's current multiplayer peer.
pub struct PeerTransport {
    role: Role,
    /// The peer whose signals feed `disconnected`.
    wired: Option<InstanceId>,
    disconnected: Rc<RefCell<Vec<i32>>>,
}

impl PeerTransport {
    pub fn new() -> PeerTransport {
        PeerTransport {
            role: Role::Unset,
            wired: None,
            disconnected: Rc::default(),
        }
    }

    /// Moves packets between `peer` and the sessions (after the peer's own poll).
    pub fn pump(
        &mut self,
        peer: &mut Gd<MultiplayerPeer>,
        tree: Option<Gd<SyncedTree>>,
    ) -> Option<Note> {
        if peer.is_class("OfflineMultiplayerPeer") {
            return None;
        }
        self.wire(peer);
        let mut note = None;
        if matches!(self.role, Role::Unset) {
            match self.decide(peer, tree.clone()) {
                Ok(role) => self.role = role,
                Err(failed) => {
                    note = failed;
                    self.role = Role::Done;
                }
            }
        }
        let gone: Vec<i32> = self.disconnected.borrow_mut().drain(..).collect();
        let packets = take_packets(peer);
        let mut done = false;
        match &mut self.role {
            Role::Server(conns) => {
                for p in gone {
                    conns.remove(&p);
                }
                for (from, packet) in packets {
                    let conn = match conns.entry(from) {
                        Entry::Occupied(e) => e.into_mut(),
                        Entry::Vacant(slot) => {
                            let who = format!("multiplayer peer {from}");
                            let attached = tree
                                .as_ref()
                                .ok_or_else(|| "no SyncedTree".to_owned())
                                .and_then(|t| t.bind().attach_peer(who));
                            match attached {
                                Ok(pipe) => slot.insert(Conn::new(pipe)),
                                Err(e) => {
                                    godot_error!(
                                        "SyncedMultiplayerAPI: cannot serve peer {from}: {e}"
                                    );
                                    peer.disconnect_peer(from);
                                    continue;
                                }
                            }
                        }
                    };
                    conn.take(from, &packet, FROM_CLIENT_MAX);
                }
                let mut ended = Vec::new();
                for (p, c) in conns.iter_mut() {
                    c.flush(peer, *p);
                    if c.lingered() {
                        ended.push(*p);
                    }
                }
                for p in ended {
                    conns.remove(&p);
                    peer.disconnect_peer(p);
                }
            }
            // The server went away: the client's session ends with it (dropping its pipe).
            Role::Client(_) if gone.contains(&1) => done = true,
            Role::Client(conn) => {
                for (from, packet) in packets {
                    if from == 1 {
                        conn.take(from, &packet, FROM_SERVER_MAX);
                    }
                }
                conn.flush(peer, 1);
                if conn.lingered() {
                    peer.close();
                    done = true;
                }
            }
            Role::Unset | Role::Done => {}
        }
        if done {
            self.role = Role::Done;
        }
        note
    }

    /// Server or client, once the peer says which.
    fn decide(
        &mut self,
        peer: &Gd<MultiplayerPeer>,
        tree: Option<Gd<SyncedTree>>,
    ) -> Result<Role, Option<Note>> {
        match peer.get_connection_status() {
            ConnectionStatus::CONNECTING => return Ok(Role::Unset),
            ConnectionStatus::DISCONNECTED => return Err(Some(Note::ConnectionFailed)),
            _ => {}
        }
        let Some(mut tree) = tree else {
            godot_error!(
                "SyncedMultiplayerAPI: the game set a multiplayer peer, but no SyncedTree is in \
                 the scene tree: add one (it carries the game state through synctree)"
            );
            return Err(None);
        };
        let server = peer.get_unique_id() == 1;
        let role = if server {
            tree.bind_mut()
                .serve_peer()
                .map(|()| Role::Server(HashMap::new()))
        } else {
            tree.bind_mut()
                .connect_over_peer()
                .map(|pipe| Role::Client(Conn::new(pipe)))
        };
        role.map_err(|e| {
            godot_error!("SyncedMultiplayerAPI: {e}");
            None
        })
    }

    /// Listens to the peer's disconnections (once per peer).
    fn wire(&mut self, peer: &mut Gd<MultiplayerPeer>) {
        if self.wired == Some(peer.instance_id()) {
            return;
        }
        self.wired = Some(peer.instance_id());
        let gone = self.disconnected.clone();
        let callable = Callable::from_fn("synctree_peer_disconnected", move |args| {
            if let Some(id) = args.first().and_then(|a| a.try_to::<i64>().ok()) {
                gone.borrow_mut().push(id as i32);
            }
        });
        peer.connect("peer_disconnected", &callable);
    }
}

/// The packets waiting on the peer, with their senders.
fn take_packets(peer: &mut Gd<MultiplayerPeer>) -> Vec<(i32, PackedByteArray)> {
    let mut out = Vec::new();
    while out.len() < 65_536 && peer.get_available_packet_count() > 0 {
        // The sender of the next packet, asked before taking it.
        let from = peer.get_packet_peer();
        out.push((from, peer.get_packet()));
    }
    out
}
