//! The server side of a request: what a node does with bytes a peer sent it.

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::{HandlerError, NodeId};

/// What a server does with a request from a peer.
///
/// Called concurrently, once per request, possibly from several tasks at once. The returned future
/// runs on its own task; the transport does not cancel it when the caller gives up.
pub trait Handler: Send + Sync + 'static {
    /// `from` is the authenticated peer id (taken from its certificate). `Ok(bytes)` is the
    /// response.
    fn handle(
        &self,
        from: NodeId,
        body: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, HandlerError>>;

    /// A datagram from `from` ([`Transport::send_datagram`](crate::Transport::send_datagram)):
    /// no answer, and a malformed one costs only itself (the handler logs it). It must not
    /// block: QUIC calls it on the connection's task, one datagram at a time per connection;
    /// the in-memory network on a task per datagram (they may overlap and come out of
    /// order). Dropped by default.
    fn datagram(&self, from: NodeId, body: Vec<u8>) {
        let _ = (from, body);
    }
}

/// A [`Handler`] made from an async closure; see [`handler_fn`].
struct FnHandler<F>(F);

impl<F, Fut> Handler for FnHandler<F>
where
    F: Fn(NodeId, Vec<u8>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<u8>, HandlerError>> + Send + 'static,
{
    fn handle(
        &self,
        from: NodeId,
        body: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, HandlerError>> {
        (self.0)(from, body).boxed()
    }
}

/// Wraps an async closure as a shareable [`Handler`].
///
/// ```
/// use synctree_net::{handler_fn, HandlerError};
/// let echo = handler_fn(|_from, body| async move { Ok::<_, HandlerError>(body) });
/// # let _ = echo;
/// ```
pub fn handler_fn<F, Fut>(f: F) -> Arc<dyn Handler>
where
    F: Fn(NodeId, Vec<u8>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<u8>, HandlerError>> + Send + 'static,
{
    Arc::new(FnHandler(f))
}
