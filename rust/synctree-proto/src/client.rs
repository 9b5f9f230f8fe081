//! The messages between a game client and the server it is connected to (the client
//! protocol), and the rule a client follows to apply what it receives exactly once.
//!
//! ```text
//!   client                                         server
//!   Hello { token, resume: (cluster, index)? } ──▶ checks the token
//!                          ◀── Welcome { server, cluster, peer } | Refused { reason }
//!                          ◀── Reset { index, tree, filtered } (unless it can resume)
//!                          ◀── Entries [ { index, effects } ... ]   in log order, forever
//!   Request { id, Write(op) | Read } ──▶ proposed for the client's peer
//!                          ◀── Outcome { id, Written { index } | Read | Failed { reason } }
//!                              (a write's, once its entry went out: Committed { id, back })
//! ```
//!
//! Godot rpcs between peers travel beside them: `Request { Rpc(rpc) }` from a client (no
//! outcome), `Rpc(rpc)` to a client; `Peers` tells a client who else is connected.
//!
//! Requests and outcomes share the hello's stream; outcomes may arrive before the entry
//! they name: a client reports one when it has applied up to its index.
//!
//! Log indices are the same on every server of a cluster (committed entries never change),
//! so a client that moves to another server resumes from the index it had applied: it
//! applies an entry only if its index is above the last one it applied ([`ClientCursor`]).

use serde::{Deserialize, Serialize};

use crate::effect::{CompactString, Effect};
use crate::tree::ShadowTree;
use crate::wire::WireEntry;
use crate::{Op, Stamp, Value};

/// Version of the client protocol; a server refuses a hello of another version.
///
/// Version 2: the protocol's enums (messages, requests, outcomes, effects) carry one-letter
/// variant tags: rmp-serde writes a variant's name, and these go to every client for every
/// committed entry (`cargo xtask bench --only wire`).
/// Version 3: ops and values carry short variant tags too.
/// Version 4: eventual writes name their property by a handle both ways
/// ([`ClientRequest::Updates`], [`ServerMessage::Updates`]) and carry no stamps to clients.
/// Version 5: [`ServerMessage::Reset`] says whether subtrees hidden from the client were
/// left out (a client does not resume from such a tree).
pub const CLIENT_PROTOCOL_VERSION: u32 = 5;

/// The largest hello a server reads (a token and a cursor fit easily).
pub const MAX_HELLO_BYTES: usize = 16 * 1024;

/// The largest request a server reads from a client: a frame over it disconnects the client.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// What a client asks of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// A write proposed on the client's behalf (authority is checked when it applies).
    #[serde(rename = "W")]
    Write(Op),
    /// A linearizable read of a synced property.
    #[serde(rename = "R")]
    Read { path: String, property: String },
    /// A Godot rpc to other peers; no outcome is sent (the request id is not used).
    #[serde(rename = "C")]
    Rpc(PeerRpc),
    /// A write of an eventual property; no outcome is sent.
    #[serde(rename = "V")]
    Eventual(EventualSet),
    /// Several, in one datagram (each counts as a request for the rate limit).
    #[serde(rename = "VV")]
    Eventuals(Vec<EventualSet>),
    /// Names a node's property for the rest of the connection, so that later writes of it
    /// are [`ClientRequest::Set`]s (no outcome is sent). See [`PropertyHandles`].
    #[serde(rename = "H")]
    Handle {
        handle: u32,
        path: String,
        property: String,
    },
    /// `Write(SetProperty)` of the node property named by `handle`.
    #[serde(rename = "S")]
    Set { handle: u32, value: Value },
    /// Eventual writes of properties named by handles (declared on the stream, as for
    /// [`ClientRequest::Set`]), numbered `first`, `first + 1`, ... (their
    /// [`EventualSet::seq`]). One travelling as a datagram may overtake its handle's
    /// declaration: a server drops a write of a handle it does not know (yet).
    #[serde(rename = "U")]
    Updates { first: u32, sets: Vec<HandleValue> },
}

/// A property named by a handle, and a value for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandleValue {
    pub handle: u32,
    pub value: Value,
}

/// Most property handles one connection may name.
pub const MAX_PROPERTY_HANDLES: usize = 4096;

/// Most properties a server may name for a client's eventual updates
/// ([`ServerMessage::Handle`]) on one connection.
pub const MAX_EVENTUAL_HANDLES: usize = 1 << 16;

/// The property handles of one client connection, on either end. A game writes the same
/// few properties over and over (a synchronizer's, every `delta_interval`): the client names
/// each (path, property) once with [`ClientRequest::Handle`], then sends
/// [`ClientRequest::Set`] with the handle and the value only, on the same ordered stream.
/// Handles live as long as the connection; a new connection starts with none.
#[derive(Debug, Default)]
pub struct PropertyHandles {
    by_handle: std::collections::HashMap<u32, (String, String)>,
    by_name: std::collections::HashMap<(String, String), u32>,
}

impl PropertyHandles {
    /// The client's side: `request` as it goes on the wire, after the handle declaration it
    /// needs first, if any. Only property writes use handles (while fewer than
    /// [`MAX_PROPERTY_HANDLES`] are named).
    pub fn outgoing(&mut self, request: &ClientRequest) -> (Option<ClientRequest>, ClientRequest) {
        let ClientRequest::Write(Op::SetProperty {
            path,
            property,
            value,
        }) = request
        else {
            return (None, request.clone());
        };
        let key = (path.clone(), property.clone());
        if let Some(handle) = self.by_name.get(&key) {
            let set = ClientRequest::Set {
                handle: *handle,
                value: value.clone(),
            };
            return (None, set);
        }
        if self.by_handle.len() >= MAX_PROPERTY_HANDLES {
            return (None, request.clone());
        }
        let handle = self.by_handle.len() as u32;
        self.by_handle.insert(handle, key.clone());
        self.by_name.insert(key, handle);
        let declare = ClientRequest::Handle {
            handle,
            path: path.clone(),
            property: property.clone(),
        };
        let set = ClientRequest::Set {
            handle,
            value: value.clone(),
        };
        (Some(declare), set)
    }

    /// The client's side, for an eventual write of `path`.`property`: its handle if one
    /// was declared, else the declaration to send on the stream now (this write then goes
    /// by name), or neither when the connection has named [`MAX_PROPERTY_HANDLES`] already.
    pub fn eventual(&mut self, path: &str, property: &str) -> EventualName {
        let key = (path.to_owned(), property.to_owned());
        if let Some(handle) = self.by_name.get(&key) {
            return EventualName::Known(*handle);
        }
        if self.by_handle.len() >= MAX_PROPERTY_HANDLES {
            return EventualName::ByName;
        }
        let handle = self.by_handle.len() as u32;
        self.by_handle.insert(handle, key.clone());
        self.by_name.insert(key, handle);
        EventualName::Declare(ClientRequest::Handle {
            handle,
            path: path.to_owned(),
            property: property.to_owned(),
        })
    }

    /// The (path, property) a handle names, if it was declared.
    pub fn named(&self, handle: u32) -> Option<&(String, String)> {
        self.by_handle.get(&handle)
    }

    /// The server's side: a declaration is recorded (`Ok(None)`), a [`ClientRequest::Set`]
    /// becomes the write it stands for, anything else passes. An unknown handle, or one
    /// handle too many, is a broken client: `Err` names it.
    pub fn incoming(&mut self, request: ClientRequest) -> Result<Option<ClientRequest>, String> {
        match request {
            ClientRequest::Handle {
                handle,
                path,
                property,
            } => {
                if self.by_handle.len() >= MAX_PROPERTY_HANDLES
                    && !self.by_handle.contains_key(&handle)
                {
                    return Err(format!(
                        "property handle {handle} is one too many: a connection may name at \
                         most {MAX_PROPERTY_HANDLES}"
                    ));
                }
                self.by_handle.insert(handle, (path, property));
                Ok(None)
            }
            ClientRequest::Set { handle, value } => {
                let (path, property) = self
                    .by_handle
                    .get(&handle)
                    .cloned()
                    .ok_or_else(|| format!("property handle {handle} was never named"))?;
                Ok(Some(ClientRequest::Write(Op::SetProperty {
                    path,
                    property,
                    value,
                })))
            }
            other => Ok(Some(other)),
        }
    }
}

/// How a client names the property of an eventual write ([`PropertyHandles::eventual`]).
#[derive(Debug, Clone, PartialEq)]
pub enum EventualName {
    /// By this handle, declared earlier.
    Known(u32),
    /// By name, while this declaration of its handle goes on the stream.
    Declare(ClientRequest),
    /// By name (the connection named as many properties as it may).
    ByName,
}

/// How a message travels between a game client and its server (Godot's transfer modes).
/// Unreliable ones go as QUIC datagrams (or unreliable packets of the game's peer) when they
/// fit in one, and on the stream otherwise; between servers everything is reliable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delivery {
    #[default]
    #[serde(rename = "R")]
    Reliable,
    /// May be lost or reordered.
    #[serde(rename = "U")]
    Unreliable,
    /// May be lost; the receiver drops one older than the newest it ran from the same sender
    /// and channel.
    #[serde(rename = "O")]
    UnreliableOrdered,
}

/// A Godot rpc between peers (game clients, and the servers as peer 1), as it travels:
/// through the sender's server, and between servers to reach a peer connected elsewhere.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerRpc {
    /// The sender's peer id (a server sets it for its clients: it cannot be forged).
    pub from: u64,
    /// Godot's target: a peer id, 0 for every peer, `-id` for every peer but `id`.
    pub to: i64,
    /// The node's absolute path in the scene tree (`/root/Game/World/Player`).
    pub path: String,
    pub method: String,
    /// The arguments, as Godot's `var_to_bytes` of an Array (objects not allowed).
    #[serde(with = "serde_bytes_compat")]
    pub args: Vec<u8>,
    #[serde(default)]
    pub delivery: Delivery,
    /// Godot's transfer channel (orders unreliable_ordered rpcs apart per channel).
    #[serde(default)]
    pub channel: u8,
    /// The sender's sequence number on (delivery, channel), for unreliable_ordered.
    #[serde(default)]
    pub seq: u32,
    /// The node was spawned moments ago where the rpc was made (its spawn may reach a
    /// receiver after the rpc): a receiver that lacks it waits for it a while.
    #[serde(default)]
    pub fresh: bool,
}

impl PeerRpc {
    /// True if this rpc may travel unreliably.
    pub fn unreliable(&self) -> bool {
        self.delivery != Delivery::Reliable
    }

    /// True if peer `peer` is among the targets (the sender never is).
    pub fn reaches(&self, peer: u64) -> bool {
        peer != self.from
            && match self.to {
                0 => true,
                t if t < 0 => t.unsigned_abs() != peer,
                t => t as u64 == peer,
            }
    }
}

/// A write of an `eventual` property: outside the log, last writer (by HLC stamp) wins.
/// A server checks that the sender owns the node, stamps it with its clock, and hands it to
/// every server and Godot main thread and to every client but the writer, who shows its
/// write at once (see [`EventualSet::seq`] for how the writer still ends on the winner).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventualSet {
    /// The writer's peer id (set by the server for its clients).
    pub from: u64,
    pub path: String,
    pub property: String,
    pub value: Value,
    /// Given by the first server that takes it; `None` on the way from a client.
    #[serde(with = "crate::clock::compact_stamp::option")]
    pub stamp: Option<Stamp>,
    /// From a game client: its own number for this write (1, 2, ...). To a game client that
    /// wrote the same property: the number of its last write there that this write's server
    /// had seen (stamped before this one), so the client applies this write only if it has
    /// made none since (a later one of its own is stamped later, so it wins). 0 otherwise,
    /// and then not sent.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Whether number `a` (of a client's eventual writes, or of a connection's
/// [`ServerMessage::Updates`]) came after `b`: the numbers wrap around.
pub fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// Byte vectors as msgpack binary (not an array of integers).
mod serde_bytes_compat {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let b: bytes::Bytes = Deserialize::deserialize(d)?;
        Ok(b.to_vec())
    }
}

/// A client's request, numbered by the client to match its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    pub request: ClientRequest,
}

/// How a client's request ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// Committed at log `index` (applied once the client reaches it), stamped `stamp`.
    #[serde(rename = "W")]
    Written {
        index: u64,
        #[serde(with = "crate::clock::compact_stamp")]
        stamp: Stamp,
    },
    /// The committed value at log `index` (`None`: never set).
    #[serde(rename = "R")]
    Read { index: u64, value: Option<Value> },
    /// Refused or lost; `uncertain`: it may have been committed all the same.
    #[serde(rename = "F")]
    Failed { reason: String, uncertain: bool },
}

/// Where a client stands: the cluster it follows and the last log index it applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    pub cluster: String,
    pub index: u64,
}

/// The first message of a client on its feed stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    /// Checked by the server before anything else is sent.
    pub token: String,
    /// `None`: send the whole tree first.
    pub resume: Option<Resume>,
}

/// The effects of one committed log entry (none for entries that change no node).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryEffects {
    pub index: u64,
    pub effects: Vec<Effect>,
}

/// What a server sends a client on its feed stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// The hello was accepted. `peer` is the client's peer id, the same on every server.
    #[serde(rename = "W")]
    Welcome {
        server: u64,
        cluster: String,
        peer: u64,
    },
    /// The hello was refused; the server closes the connection after this.
    #[serde(rename = "X")]
    Refused { reason: String },
    /// Replace the whole synced tree by `tree`, which is the state at log index `index`,
    /// without the subtrees hidden from this client if `filtered`.
    #[serde(rename = "Z")]
    Reset {
        index: u64,
        tree: ShadowTree,
        filtered: bool,
    },
    /// Committed entries in log order (possibly some the client already has: skip those,
    /// after learning the names they define, see [`crate::wire`]).
    #[serde(rename = "E")]
    Entries(Vec<WireEntry>),
    /// The names the server's feed numbered so far, by number (sent first at each start
    /// from a tree or from history).
    #[serde(rename = "N")]
    Names(Vec<CompactString>),
    /// How the client's request `id` ended.
    #[serde(rename = "O")]
    Outcome { id: u64, outcome: Outcome },
    /// The client's write `id` committed, in the entry `back` entries before the last one
    /// this connection carried so far (0: that very entry), stamped `stamp`: the wire form of
    /// [`Outcome::Written`] (see [`ServerMessage::committed`]). A server sends it only once
    /// the entry went out, so it shares a packet with the entry; the log index it would
    /// carry is most of its size.
    #[serde(rename = "K")]
    Committed {
        id: u64,
        back: u64,
        #[serde(with = "crate::clock::compact_stamp")]
        stamp: Stamp,
    },
    /// A Godot rpc for this client.
    #[serde(rename = "C")]
    Rpc(PeerRpc),
    /// A stamped write of an eventual property.
    #[serde(rename = "V")]
    Eventual(EventualSet),
    /// Several, in one datagram.
    #[serde(rename = "VV")]
    Eventuals(Vec<EventualSet>),
    /// The other peers connected to the cluster now (every server; this client excluded).
    #[serde(rename = "P")]
    Peers(Vec<u64>),
    /// Names a (path, property) for [`ServerMessage::Updates`], for the rest of the
    /// connection (on the stream, before the first update that uses it).
    #[serde(rename = "H")]
    Handle {
        handle: u32,
        path: String,
        property: String,
    },
    /// Others' eventual writes, in the order this connection's server took them: the `seq`th
    /// such message of the connection. A client applies an update of a property only if no
    /// later message already updated it (datagrams may be reordered); its server sends only
    /// writes stamped after the last one it sent of each property, so no stamps travel.
    #[serde(rename = "U")]
    Updates { seq: u32, sets: Vec<Update> },
}

/// One eventual write in [`ServerMessage::Updates`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Update {
    /// The property, as named by [`ServerMessage::Handle`].
    pub handle: u32,
    pub value: Value,
    /// As [`EventualSet::seq`] to a client: the number of the receiving client's last write
    /// of this property that the server had seen, if any (0: none, not sent).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub after: u32,
}

/// What a client applied so far, and the exactly-once rule for what arrives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCursor {
    /// The cluster the index belongs to (`None` before the first welcome).
    pub cluster: Option<String>,
    /// The last log index applied (0: nothing yet).
    pub index: u64,
    /// The tree lacks subtrees its server hid from this client: it is not the state at
    /// `index`, and another server (or this one, once it forgot the client) would resume it
    /// as if it were, so the client asks for a whole tree instead.
    pub filtered: bool,
}

impl ClientCursor {
    /// The resume point to send in a hello, if any.
    pub fn resume(&self) -> Option<Resume> {
        if self.filtered {
            return None;
        }
        self.cluster.as_ref().map(|cluster| Resume {
            cluster: cluster.clone(),
            index: self.index,
        })
    }

    /// Takes the entries that are new to this client, in order, and advances past them.
    /// Entries at or below the last applied index are dropped (already applied); an entry
    /// that does not follow in order is an error (a gap: something was missed).
    pub fn take_new(&mut self, entries: Vec<EntryEffects>) -> Result<Vec<EntryEffects>, String> {
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            if e.index <= self.index {
                continue;
            }
            if e.index != self.index + 1 {
                return Err(format!(
                    "log entry {} arrived after {}: entries in between are missing",
                    e.index, self.index
                ));
            }
            self.index = e.index;
            out.push(e);
        }
        Ok(out)
    }

    /// A reset to the state at `index` of `cluster` (`filtered`: without what the server
    /// hid from this client).
    pub fn reset(&mut self, cluster: &str, index: u64, filtered: bool) {
        self.cluster = Some(cluster.to_owned());
        self.index = index;
        self.filtered = filtered;
    }
}

impl ServerMessage {
    /// `self` as it goes to a client that was last sent entry `sent`: a write's outcome for
    /// an entry at or before it becomes a [`ServerMessage::Committed`].
    pub fn committed(self, sent: u64) -> ServerMessage {
        match self {
            ServerMessage::Outcome {
                id,
                outcome: Outcome::Written { index, stamp },
            } if index <= sent => ServerMessage::Committed {
                id,
                back: sent - index,
                stamp,
            },
            other => other,
        }
    }

    /// True if this message may travel unreliably (an unreliable rpc, an eventual write).
    pub fn unreliable(&self) -> bool {
        match self {
            ServerMessage::Rpc(rpc) => rpc.unreliable(),
            ServerMessage::Eventual(_)
            | ServerMessage::Eventuals(_)
            | ServerMessage::Updates { .. } => true,
            _ => false,
        }
    }
}

impl ClientRequest {
    /// True if this request may travel unreliably (an unreliable rpc, an eventual write).
    pub fn unreliable(&self) -> bool {
        match self {
            ClientRequest::Rpc(rpc) => rpc.unreliable(),
            ClientRequest::Eventual(_)
            | ClientRequest::Eventuals(_)
            | ClientRequest::Updates { .. } => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(indices: &[u64]) -> Vec<EntryEffects> {
        indices
            .iter()
            .map(|i| EntryEffects {
                index: *i,
                effects: vec![],
            })
            .collect()
    }

    #[test]
    fn cursor_skips_what_it_has_and_refuses_gaps() {
        let mut c = ClientCursor::default();
        c.reset("c1", 10, false);
        let got = c.take_new(entries(&[9, 10, 11, 12])).unwrap();
        assert_eq!(got.iter().map(|e| e.index).collect::<Vec<_>>(), [11, 12]);
        assert_eq!(c.index, 12);
        // A resume elsewhere may repeat entries: none is taken twice.
        assert!(c.take_new(entries(&[11, 12])).unwrap().is_empty());
        let err = c.take_new(entries(&[14])).unwrap_err();
        assert!(err.contains("missing"), "{err}");
        assert_eq!(c.index, 12);
        assert_eq!(
            c.resume(),
            Some(Resume {
                cluster: "c1".into(),
                index: 12
            })
        );
        // A tree its server filtered is not resumed from: the next server sends a whole one.
        c.reset("c1", 20, true);
        assert!(c.take_new(entries(&[21])).unwrap().len() == 1);
        assert_eq!(c.resume(), None);
        c.reset("c1", 30, false);
        assert_eq!(
            c.resume(),
            Some(Resume {
                cluster: "c1".into(),
                index: 30
            })
        );
    }

    #[test]
    fn eventual_writes_name_their_property_once() {
        let (mut client, mut server) = (PropertyHandles::default(), PropertyHandles::default());
        let EventualName::Declare(declare) = client.eventual("Players/P1", "position") else {
            panic!("the first write declares a handle")
        };
        assert_eq!(server.incoming(declare).unwrap(), None);
        assert_eq!(
            client.eventual("Players/P1", "position"),
            EventualName::Known(0)
        );
        assert_eq!(
            server.named(0),
            Some(&("Players/P1".to_string(), "position".to_string()))
        );
        let by_handle = ClientRequest::Updates {
            first: 7,
            sets: vec![HandleValue {
                handle: 0,
                value: Value::Vector2([1.0, 2.0]),
            }],
        };
        let bytes = crate::encode(&by_handle).unwrap();
        assert!(bytes.len() < 24, "{} bytes", bytes.len());
        assert_eq!(
            crate::decode::<ClientRequest>(&bytes, bytes.len()).unwrap(),
            by_handle
        );
        // A server's update without a receiver's own write leaves `after` out.
        let update = Update {
            handle: 3,
            value: Value::Int(5),
            after: 0,
        };
        let bytes = crate::encode(&update).unwrap();
        assert_eq!(bytes, vec![0x92, 3, 5]);
        assert_eq!(
            crate::decode::<Update>(&bytes, bytes.len()).unwrap(),
            update
        );
    }

    #[test]
    fn property_handles_name_each_property_once() {
        let (mut client, mut server) = (PropertyHandles::default(), PropertyHandles::default());
        let write = |path: &str, v| {
            ClientRequest::Write(Op::SetProperty {
                path: path.into(),
                property: "health".into(),
                value: Value::Int(v),
            })
        };
        let mut sent = Vec::new();
        for (path, v) in [("A", 1), ("A", 2), ("B", 3), ("A", 4)] {
            let (declare, request) = client.outgoing(&write(path, v));
            sent.extend(declare);
            sent.push(request);
        }
        assert_eq!(sent.len(), 6, "two declarations, four sets: {sent:?}");
        let one = crate::encode(&write("Players/P1", 300)).unwrap().len();
        let set = crate::encode(&sent[2]).unwrap().len();
        assert!(
            set + 8 < one,
            "a set by handle ({set} bytes) is smaller than {one}"
        );
        let got: Vec<ClientRequest> = sent
            .into_iter()
            .filter_map(|r| server.incoming(r).unwrap())
            .collect();
        assert_eq!(
            got,
            [write("A", 1), write("A", 2), write("B", 3), write("A", 4)]
        );
        // Other requests pass both ways unchanged.
        let read = ClientRequest::Read {
            path: "A".into(),
            property: "health".into(),
        };
        assert_eq!(client.outgoing(&read), (None, read.clone()));
        assert_eq!(server.incoming(read.clone()).unwrap(), Some(read));
        // A handle never named, or one too many, is refused.
        let err = server
            .incoming(ClientRequest::Set {
                handle: 9,
                value: Value::Nil,
            })
            .unwrap_err();
        assert!(err.contains("handle 9 was never named"), "{err}");
        for h in 2..MAX_PROPERTY_HANDLES as u32 {
            let declare = ClientRequest::Handle {
                handle: h,
                path: format!("N{h}"),
                property: "p".into(),
            };
            server.incoming(declare).unwrap();
        }
        let err = server
            .incoming(ClientRequest::Handle {
                handle: u32::MAX,
                path: "X".into(),
                property: "p".into(),
            })
            .unwrap_err();
        assert!(err.contains("one too many"), "{err}");
        // A full client table falls back to plain writes.
        for h in 2..MAX_PROPERTY_HANDLES {
            client.outgoing(&write(&format!("N{h}"), 0));
        }
        assert_eq!(client.outgoing(&write("Z", 5)), (None, write("Z", 5)));
    }

    #[test]
    fn rpc_targets() {
        let rpc = |from, to| PeerRpc {
            from,
            to,
            path: "/root/N".into(),
            method: "m".into(),
            args: vec![1, 2],
            ..Default::default()
        };
        assert!(rpc(5, 0).reaches(1) && rpc(5, 0).reaches(7) && !rpc(5, 0).reaches(5));
        assert!(rpc(5, 7).reaches(7) && !rpc(5, 7).reaches(1));
        assert!(rpc(5, -7).reaches(1) && !rpc(5, -7).reaches(7) && !rpc(5, -7).reaches(5));
        let bytes = crate::encode(&ServerMessage::Rpc(rpc(5, -7))).unwrap();
        assert_eq!(
            crate::decode::<ServerMessage>(&bytes, 1 << 10).unwrap(),
            ServerMessage::Rpc(rpc(5, -7))
        );
    }

    #[test]
    fn messages_roundtrip() {
        let mut names = crate::NameEncoder::default();
        let m = ServerMessage::Entries(
            entries(&[1, 2])
                .into_iter()
                .map(|e| names.pack(e))
                .collect(),
        );
        let bytes = crate::encode(&m).unwrap();
        assert_eq!(crate::decode::<ServerMessage>(&bytes, 1 << 20).unwrap(), m);
        let h = Hello {
            version: CLIENT_PROTOCOL_VERSION,
            token: "t".into(),
            resume: None,
        };
        assert_eq!(
            crate::decode::<Hello>(&crate::encode(&h).unwrap(), MAX_HELLO_BYTES).unwrap(),
            h
        );
        let r = Request {
            id: 9,
            request: ClientRequest::Write(Op::Despawn { path: "A".into() }),
        };
        assert_eq!(
            crate::decode::<Request>(&crate::encode(&r).unwrap(), MAX_REQUEST_BYTES).unwrap(),
            r
        );
        let o = ServerMessage::Outcome {
            id: 9,
            outcome: Outcome::Failed {
                reason: "no".into(),
                uncertain: false,
            },
        };
        assert_eq!(
            crate::decode::<ServerMessage>(&crate::encode(&o).unwrap(), 1 << 20).unwrap(),
            o
        );
    }
}
