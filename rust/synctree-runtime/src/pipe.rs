//! Client sessions over any transport that carries whole frames in order.
//!
//! The client protocol runs on a QUIC stream of length-prefixed frames, or on a [`FramePipe`]
//! whose other end the game pumps through its own reliable, ordered transport (a Godot
//! `MultiplayerPeer`: ENet, WebSocket, WebRTC), as SceneMultiplayer rides on whatever peer the
//! game assigns:
//!
//! ```text
//!   Godot main thread                        runtime
//!   MultiplayerPeer packets ─▶ FramePipe::push ─▶ session (server: serve_client;
//!   MultiplayerPeer packets ◀─ FramePipe::pull ◀─            client: serve_session)
//! ```

use std::future::Future;
use std::time::Duration;

use quinn::{RecvStream, SendStream};
use synctree_net::frame::{read_varint_frame, write_varint_frame, write_varint_frames, FrameError};
use tokio::sync::mpsc;

/// Frames a session's side has written but the game has not taken yet; a full pipe holds the
/// session back (a server's feed then restarts the client from where it is, as on QUIC).
const PIPE_FRAMES: usize = 256;
/// Frames from a game client not taken by its server session yet; a client that sends more
/// than this ahead of the session is cut off ([`FramePipe::push`] says so), as flow control
/// would stop it on QUIC.
pub(crate) const FROM_CLIENT_FRAMES: usize = 4096;
/// The same for what a server sends a client (entries come in bursts; the server is
/// trusted).
pub(crate) const FROM_SERVER_FRAMES: usize = 1 << 20;

/// Reads one whole frame at a time.
pub(crate) trait FrameRead: Send + 'static {
    /// The next frame, at most `max` bytes; the transport closing cleanly is
    /// `Truncated { got: 0 }`.
    fn read(&mut self, max: usize) -> impl Future<Output = Result<Vec<u8>, FrameError>> + Send;
}

/// Writes one whole frame at a time.
pub(crate) trait FrameWrite: Send + 'static {
    fn write(&mut self, parts: &[&[u8]]) -> impl Future<Output = Result<(), String>> + Send;

    /// Sends one message that may be lost (an unreliable rpc, an eventual write): a datagram
    /// where the transport has them and it fits, else a frame.
    fn send_datagram(&mut self, bytes: Vec<u8>) -> impl Future<Output = Result<(), String>> + Send {
        async move { self.write(&[&bytes]).await }
    }

    /// Writes several frames, in one go where the transport can (so they may share a packet).
    fn write_frames(
        &mut self,
        frames: &[&[u8]],
    ) -> impl Future<Output = Result<(), String>> + Send {
        async move {
            for f in frames {
                self.write(&[f]).await?;
            }
            Ok(())
        }
    }
}

/// A client's QUIC stream carries varint-prefixed frames (see [`read_varint_frame`]).
impl FrameRead for RecvStream {
    fn read(&mut self, max: usize) -> impl Future<Output = Result<Vec<u8>, FrameError>> + Send {
        read_varint_frame(self, max)
    }
}

impl FrameWrite for SendStream {
    async fn write(&mut self, parts: &[&[u8]]) -> Result<(), String> {
        write_varint_frame(self, parts)
            .await
            .map_err(|e| e.to_string())
    }

    async fn write_frames(&mut self, frames: &[&[u8]]) -> Result<(), String> {
        write_varint_frames(self, frames)
            .await
            .map_err(|e| e.to_string())
    }
}

/// A QUIC client session's sending side: its stream, and the connection for datagrams.
pub(crate) struct QuicOut {
    pub(crate) send: SendStream,
    pub(crate) conn: quinn::Connection,
    /// How long a write may wait for the other side to read before it fails.
    pub(crate) stalled_after: Duration,
}

/// How long a write to the other side's stream may wait for it to read (QUIC flow control)
/// before the session ends, by default: a peer that stops reading would otherwise hold its
/// session, and what waits to be sent to it, for as long as it stays connected.
pub(crate) const CLIENT_STALLED: Duration = Duration::from_secs(15);

/// The slowest reading a write of many bytes allows on top of [`QuicOut::stalled_after`]:
/// a large frame (a whole tree) to a slow but reading peer is not a stall.
const SLOWEST_READ_BYTES_PER_S: u64 = 32 * 1024;

impl QuicOut {
    /// How long writing `parts` may take, and what a write that took longer says.
    fn allowance(
        &self,
        parts: &[&[u8]],
    ) -> (Duration, impl Fn(tokio::time::error::Elapsed) -> String) {
        let bytes: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let after = self.stalled_after + Duration::from_secs(bytes / SLOWEST_READ_BYTES_PER_S);
        let why =
            move |_| format!("the other side read too little for {after:?} (its stream is full)");
        (after, why)
    }
}

impl FrameWrite for QuicOut {
    async fn write(&mut self, parts: &[&[u8]]) -> Result<(), String> {
        let (after, stalled) = self.allowance(parts);
        let write = FrameWrite::write(&mut self.send, parts);
        tokio::time::timeout(after, write).await.map_err(stalled)?
    }

    async fn write_frames(&mut self, frames: &[&[u8]]) -> Result<(), String> {
        let (after, stalled) = self.allowance(frames);
        let write = FrameWrite::write_frames(&mut self.send, frames);
        tokio::time::timeout(after, write).await.map_err(stalled)?
    }

    async fn send_datagram(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        if self
            .conn
            .max_datagram_size()
            .is_some_and(|max| bytes.len() <= max)
        {
            // A full send buffer drops the oldest datagram: unreliable all the same.
            return self
                .conn
                .send_datagram(bytes.into())
                .map_err(|e| e.to_string());
        }
        self.write(&[&bytes]).await
    }
}

/// Reads a connection's datagrams into `out` until it closes or `out` is dropped.
pub(crate) async fn read_datagrams(conn: quinn::Connection, out: mpsc::Sender<Vec<u8>>) {
    while let Ok(d) = conn.read_datagram().await {
        if out.send(d.to_vec()).await.is_err() {
            return;
        }
    }
}

/// What a session hands the game to send.
#[derive(Debug)]
enum Out {
    Frame(Vec<u8>),
    Datagram(Vec<u8>),
}

/// The session's end of a pipe: frames from the game (datagrams arrive as frames too), and
/// frames and datagrams to it.
pub(crate) struct PipeRead(mpsc::Receiver<Vec<u8>>);
pub(crate) struct PipeWrite(mpsc::Sender<Out>);

impl FrameRead for PipeRead {
    async fn read(&mut self, max: usize) -> Result<Vec<u8>, FrameError> {
        match self.0.recv().await {
            Some(frame) if frame.len() > max => Err(FrameError::TooLarge {
                len: frame.len() as u64,
                max,
            }),
            Some(frame) => Ok(frame),
            None => Err(FrameError::Truncated {
                expected: 4,
                got: 0,
            }),
        }
    }
}

const PIPE_CLOSED: &str = "the game's multiplayer peer closed this connection";

impl FrameWrite for PipeWrite {
    async fn write(&mut self, parts: &[&[u8]]) -> Result<(), String> {
        self.0
            .send(Out::Frame(parts.concat()))
            .await
            .map_err(|_| PIPE_CLOSED.to_owned())
    }

    async fn send_datagram(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        // Unreliable: dropped rather than waited for when the game is behind.
        match self.0.try_send(Out::Datagram(bytes)) {
            Err(mpsc::error::TrySendError::Closed(_)) => Err(PIPE_CLOSED.to_owned()),
            _ => Ok(()),
        }
    }
}

impl PipeWrite {
    /// Completes when the game drops its end (its peer disconnected).
    pub(crate) fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let tx = self.0.clone();
        async move { tx.closed().await }
    }
}

/// What [`FramePipe::pull`] found.
#[derive(Debug, PartialEq)]
pub enum Pulled {
    Frame(Vec<u8>),
    /// A message that may be lost: send it unreliably if it fits in one packet, else as a
    /// frame (the other end's [`FramePipe::push`] takes it either way).
    Datagram(Vec<u8>),
    /// Nothing yet.
    Empty,
    /// The session ended (refused, protocol violation, or the client/server stopped); the
    /// game should disconnect its peer.
    Ended,
}

/// The game's end of a client session carried by the game's own transport. Dropping it ends
/// the session (the peer disconnected).
#[derive(Debug)]
pub struct FramePipe {
    to_session: mpsc::Sender<Vec<u8>>,
    from_session: mpsc::Receiver<Out>,
}

impl FramePipe {
    /// Hands the session a frame (or a datagram) that arrived; false if the session has
    /// ended, or if the peer is too far ahead of it (the game should disconnect the peer).
    pub fn push(&self, frame: Vec<u8>) -> bool {
        self.to_session.try_send(frame).is_ok()
    }

    /// The next frame to send through the game's transport, without blocking.
    pub fn pull(&mut self) -> Pulled {
        match self.from_session.try_recv() {
            Ok(Out::Frame(frame)) => Pulled::Frame(frame),
            Ok(Out::Datagram(d)) => Pulled::Datagram(d),
            Err(mpsc::error::TryRecvError::Empty) => Pulled::Empty,
            Err(mpsc::error::TryRecvError::Disconnected) => Pulled::Ended,
        }
    }
}

/// A new pipe: the game's end and the session's.
pub(crate) fn pipe(inbound: usize) -> (FramePipe, PipeRead, PipeWrite) {
    let (to_session, rx) = mpsc::channel(inbound);
    let (tx, from_session) = mpsc::channel(PIPE_FRAMES);
    (
        FramePipe {
            to_session,
            from_session,
        },
        PipeRead(rx),
        PipeWrite(tx),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_cross_both_ways_and_ends_are_seen() {
        let (mut game, mut read, mut write) = pipe(4);
        assert!(game.push(b"hello".to_vec()));
        assert_eq!(read.read(16).await.unwrap(), b"hello");
        assert!(game.push(vec![0; 17]));
        assert!(matches!(
            read.read(16).await,
            Err(FrameError::TooLarge { len: 17, max: 16 })
        ));
        write.write(&[b"ab", b"cd"]).await.unwrap();
        write.send_datagram(b"lossy".to_vec()).await.unwrap();
        assert_eq!(game.pull(), Pulled::Frame(b"abcd".to_vec()));
        assert_eq!(game.pull(), Pulled::Datagram(b"lossy".to_vec()));
        assert_eq!(game.pull(), Pulled::Empty);
        drop(write);
        assert_eq!(game.pull(), Pulled::Ended);
        drop(game);
        assert!(matches!(
            read.read(16).await,
            Err(FrameError::Truncated { got: 0, .. })
        ));
    }

    #[test]
    fn a_peer_too_far_ahead_of_its_session_is_told() {
        let (game, _read, _write) = pipe(2);
        assert!(game.push(vec![1]) && game.push(vec![2]));
        assert!(!game.push(vec![3]), "the third frame does not fit");
    }

    #[tokio::test]
    async fn dropping_the_game_end_closes_the_session() {
        let (game, _read, write) = pipe(4);
        let closed = write.closed();
        drop(game);
        tokio::time::timeout(std::time::Duration::from_secs(1), closed)
            .await
            .expect("closed() completes when the game drops its end");
        let mut write = write;
        assert!(write.write(&[b"x"]).await.is_err());
    }
}
