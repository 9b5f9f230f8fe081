//! Messages between servers, encoded with rmp-serde inside one transport request each, and
//! the datagrams that carry eventual writes between them.

use crate::membership::{Membership, MembershipChange};
use crate::node::Status;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use synctree_proto::{EncodedBatch, EventualSet, OpOutcome, PeerRpc};
use synctree_raft::{NodeId, TypeConfig};

/// Largest request a server accepts from a peer (a snapshot chunk is at most 3 MiB).
pub const MAX_RPC_BYTES: usize = 64 << 20;

/// A request from one server to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum Rpc {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A follower forwards a batch its clients proposed; the leader proposes it.
    Propose(EncodedBatch),
    /// A follower asks the leader for a read index (leadership confirmed by a quorum).
    ReadIndex,
    /// A membership change, for the leader (from a server, or from an operator).
    Membership(MembershipChange),
    /// This server's status (operators).
    Status,
    /// Would you vote for a candidate with this last log entry? (Raft's pre-vote: asked
    /// before standing, so a server that cannot win does not disturb the others.)
    PreVote {
        last_log: Option<openraft::LogId<NodeId>>,
    },
    /// Godot rpcs for the receiver's own game clients and stamped eventual writes for its
    /// Godot and clients (see `peers`), in the order the sender made them: the `seq`th
    /// batch the sender's run `session` sent this receiver (a batch sent again, or one that
    /// arrives after a later one, is acknowledged and not taken twice or out of order).
    Relayed {
        session: u64,
        seq: u64,
        items: Vec<Relayed>,
    },
}

/// What one server relays to another for its Godot and game clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Relayed {
    /// A Godot rpc for the receiver's own game clients.
    Rpc(PeerRpc),
    /// A stamped write of an eventual property.
    Eventual(EventualSet),
    /// The game clients connected to the sender now.
    Presence(Vec<u64>),
}

/// The first byte of a datagram between servers that carries stamped eventual writes: a
/// MessagePack array of [`EventualSet`] follows (see [`pack_eventual`]).
pub const DATAGRAM_EVENTUAL: u8 = 1;

/// Bytes a datagram of eventual writes adds to the writes it carries, at most: the tag and
/// a MessagePack array header (array 16: 0xdc and two bytes).
pub const DATAGRAM_OVERHEAD: usize = 1 + 3;

/// Packs eventual writes, each already encoded with rmp-serde, into datagrams of at most
/// `room` bytes, in order: the tag byte, a MessagePack array header, the writes back to back.
/// Returns each datagram with the range of writes it carries. A write larger than
/// `room - DATAGRAM_OVERHEAD` goes alone in a datagram too large to send.
pub fn pack_eventual(encoded: &[Vec<u8>], room: usize) -> Vec<(Vec<u8>, Range<usize>)> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < encoded.len() {
        let mut end = start + 1;
        let mut size = DATAGRAM_OVERHEAD + encoded[start].len();
        while end < encoded.len()
            && end - start < usize::from(u16::MAX)
            && size + encoded[end].len() <= room
        {
            size += encoded[end].len();
            end += 1;
        }
        let n = end - start;
        let mut body = Vec::with_capacity(size);
        body.push(DATAGRAM_EVENTUAL);
        if n < 16 {
            body.push(0x90 | n as u8);
        } else {
            body.push(0xdc);
            body.extend_from_slice(&(n as u16).to_be_bytes());
        }
        for e in &encoded[start..end] {
            body.extend_from_slice(e);
        }
        out.push((body, start..end));
        start = end;
    }
    out
}

/// Reads a datagram from another server: its eventual writes.
pub fn unpack_datagram(body: &[u8]) -> Result<Vec<EventualSet>, String> {
    match body.split_first() {
        Some((&DATAGRAM_EVENTUAL, rest)) => rmp_serde::from_slice(rest)
            .map_err(|e| format!("undecodable eventual writes ({} bytes): {e}", body.len())),
        Some((tag, _)) => Err(format!("unknown datagram kind {tag}")),
        None => Err("empty datagram".into()),
    }
}

/// Why the leader did not take a forwarded proposal or read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardError {
    /// The receiver is not the leader; here is who it thinks is.
    NotLeader { leader: Option<NodeId> },
    /// Refused: certainly not done, with the reason.
    Refused(String),
    /// Anything else, with the reason (it may have been done).
    Failed(String),
}

/// A committed proposal: its log index and one outcome per event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Committed {
    pub index: u64,
    pub outcomes: Vec<OpOutcome>,
    /// Not applied: overtaken by a later batch of the same server (see `BatchResponse`).
    pub stale: bool,
}

/// The answer to an [`Rpc`], variant for variant.
#[derive(Debug, Serialize, Deserialize)]
pub enum RpcReply {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Propose(Result<Committed, ForwardError>),
    ReadIndex(Result<u64, ForwardError>),
    Membership(Result<Membership, ForwardError>),
    Status(Status),
    PreVote(bool),
    /// Taken (relay, presence).
    Ack,
}

#[cfg(test)]
mod tests {
    use super::*;
    use synctree_proto::{Stamp, Value};

    fn set(i: i64, value: Value) -> EventualSet {
        EventualSet {
            from: 7,
            path: format!("World/N{i}"),
            property: "position".into(),
            value,
            stamp: Some(Stamp::from_parts(1000 + i as u64, 2)),
            seq: 0,
        }
    }

    fn unpacked(datagrams: &[(Vec<u8>, Range<usize>)]) -> Vec<EventualSet> {
        datagrams
            .iter()
            .flat_map(|(d, _)| unpack_datagram(d).unwrap())
            .collect()
    }

    #[test]
    fn eventual_writes_pack_into_datagrams_in_order_and_unpack() {
        let sets: Vec<EventualSet> = (0..300).map(|i| set(i, Value::Int(i))).collect();
        let encoded: Vec<Vec<u8>> = sets.iter().map(|s| rmp_serde::to_vec(s).unwrap()).collect();
        for room in [1200, 60_000] {
            let datagrams = pack_eventual(&encoded, room);
            assert!(
                datagrams.iter().all(|(d, _)| d.len() <= room),
                "room {room}"
            );
            let ranges: Vec<Range<usize>> = datagrams.iter().map(|(_, r)| r.clone()).collect();
            assert_eq!(ranges.first().unwrap().start, 0);
            assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
            assert_eq!(ranges.last().unwrap().end, 300);
            assert_eq!(unpacked(&datagrams), sets, "room {room}");
        }
        // Small arrays (< 16 writes) and array 16 headers both decode.
        let few = pack_eventual(&encoded[..3], 1200);
        assert_eq!(few.len(), 1);
        assert_eq!(unpacked(&few), sets[..3]);
        assert_eq!(
            pack_eventual(&encoded, 60_000).len(),
            1,
            "300 writes, one datagram"
        );
    }

    #[test]
    fn a_write_too_large_goes_alone_and_bad_datagrams_are_named() {
        let big = set(1, Value::String("x".repeat(2000)));
        let encoded: Vec<Vec<u8>> = [set(0, Value::Int(0)), big.clone(), set(2, Value::Int(2))]
            .iter()
            .map(|s| rmp_serde::to_vec(s).unwrap())
            .collect();
        let datagrams = pack_eventual(&encoded, 1200);
        let ranges: Vec<Range<usize>> = datagrams.iter().map(|(_, r)| r.clone()).collect();
        assert_eq!(ranges, vec![0..1, 1..2, 2..3]);
        assert!(datagrams[1].0.len() > 1200);
        assert_eq!(unpack_datagram(&datagrams[1].0).unwrap(), vec![big]);

        assert_eq!(unpack_datagram(&[]).unwrap_err(), "empty datagram");
        assert_eq!(
            unpack_datagram(&[9, 0x90]).unwrap_err(),
            "unknown datagram kind 9"
        );
        let e = unpack_datagram(&[DATAGRAM_EVENTUAL, 0x91, 0xc1]).unwrap_err();
        assert!(
            e.starts_with("undecodable eventual writes (3 bytes)"),
            "{e}"
        );
    }
}
