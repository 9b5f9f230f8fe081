//! The client side of a request: the trait the runtime codes against.

use std::net::SocketAddr;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::{NetError, NodeId};

/// Request/response between servers, and unreliable datagrams beside them.
///
/// Implementations are cheap to clone (an `Arc` inside) and the trait is object safe, so the
/// runtime may hold a `Arc<dyn Transport>` and swap the QUIC transport for the in-memory one in
/// tests.
///
/// Delivery is at most once per call, except that the QUIC transport retries a request once on a
/// fresh connection when the cached connection turns out to be dead (peer restarted): if the old
/// peer process handled the request just before crashing, the request may run twice. Raft RPCs
/// are idempotent, so this is harmless for them.
pub trait Transport: Send + Sync + 'static {
    /// This node's id.
    fn local_id(&self) -> NodeId;

    /// Sends `body` to `target` and waits at most `timeout` for its handler's response.
    ///
    /// Fails with [`NetError::Timeout`] once the timeout expires, [`NetError::Remote`] when the
    /// handler failed the request, and [`NetError::Unreachable`] when the peer cannot be reached
    /// (which is usually reported well before the timeout).
    fn request(
        &self,
        target: NodeId,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, NetError>>;

    /// Learns or replaces the address of a peer (membership can change at runtime).
    ///
    /// Replacing an address drops the cached connection to the old one; requests already in
    /// flight finish on it.
    fn set_peer(&self, id: NodeId, addr: SocketAddr);

    /// Forgets a peer (it left the cluster). Later requests fail with [`NetError::UnknownPeer`].
    fn remove_peer(&self, id: NodeId);

    /// Makes sure a connection to `target` is open (opening one if needed), so the next
    /// request does not pay for a handshake: a follower's first vote request or forwarded
    /// write after a leader dies is then one round trip. Transports without connections
    /// succeed at once.
    fn warm_up(&self, target: NodeId) -> BoxFuture<'static, Result<(), NetError>> {
        let _ = target;
        Box::pin(async { Ok(()) })
    }

    /// The largest datagram [`send_datagram`](Self::send_datagram) can send `target` now:
    /// `None` while no connection to it is open (a [`request`](Self::request) opens one) or if
    /// this transport sends no datagrams.
    fn datagram_room(&self, target: NodeId) -> Option<usize> {
        let _ = target;
        None
    }

    /// Sends `body` to `target` as one datagram, without waiting: unreliable (it may be lost,
    /// and is not resent) and unordered, received by the peer's [`Handler::datagram`]
    /// (crate::Handler::datagram). Fails at once, having sent nothing, when no connection to
    /// `target` is open or `body` is larger than [`datagram_room`](Self::datagram_room)
    /// (QUIC says [`NetError::Unreachable`], the in-memory network [`NetError::Protocol`]).
    /// Success means queued: a datagram may still be dropped before it leaves (QUIC drops
    /// the oldest queued when its queue is full) or on the way.
    fn send_datagram(&self, target: NodeId, body: Vec<u8>) -> Result<(), NetError> {
        let _ = body;
        Err(NetError::Unreachable {
            peer: target,
            reason: "this transport sends no datagrams".into(),
        })
    }
}
