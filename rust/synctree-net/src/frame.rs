//! Length-prefixed frames: the whole wire format of one request and its response.
//!
//! ```text
//!   request frame : u32 BE length | body
//!   response frame: u32 BE length | status | body      (length counts status + body)
//!   status        : 0 = ok (body is the response), 1 = failed (body is UTF-8 error text)
//! ```
//!
//! Generic over tokio's `AsyncRead`/`AsyncWrite`, so it is tested here on in-memory pipes and used
//! on QUIC streams by [`crate::quic`].

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;
/// Response status: the handler succeeded.
pub const STATUS_OK: u8 = 0;
/// Response status: the handler failed; the body is the error text.
pub const STATUS_FAILED: u8 = 1;
/// Default bound on a frame's length: 64 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// Parts up to this total size are copied into one buffer so they leave in one packet; larger
/// frames are written part by part to avoid copying the body.
const COALESCE_BYTES: usize = 16 * 1024;

/// Why a frame could not be read or written.
#[derive(thiserror::Error, Debug)]
pub enum FrameError {
    /// The length prefix announces more than the configured maximum.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The configured maximum.
        max: usize,
    },
    /// The stream ended before the frame was complete.
    #[error("truncated frame: got {got} of {expected} bytes")]
    Truncated {
        /// Bytes the frame should have had (prefix included).
        expected: u64,
        /// Bytes that arrived.
        got: u64,
    },
    /// A response carried an unknown status byte, or no status byte at all.
    #[error("bad response status {0:?}")]
    BadStatus(Option<u8>),
    /// The underlying stream failed (reset, connection lost).
    #[error("stream error: {0}")]
    Io(#[from] io::Error),
}

impl FrameError {
    /// True when the peer broke the protocol (as opposed to the stream merely failing).
    pub fn is_violation(&self) -> bool {
        !matches!(self, FrameError::Io(_))
    }
}

/// A decoded response frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The handler's response.
    Ok(Vec<u8>),
    /// The handler's error text.
    Failed(String),
}

/// Writes one frame made of `parts` (their lengths summed into the prefix). Does not finish the
/// stream.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    parts: &[&[u8]],
) -> Result<(), FrameError> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(total).map_err(|_| FrameError::TooLarge {
        len: total as u64,
        max: u32::MAX as usize,
    })?;
    if total <= COALESCE_BYTES {
        let mut buf = Vec::with_capacity(HEADER_LEN + total);
        buf.extend_from_slice(&len.to_be_bytes());
        for part in parts {
            buf.extend_from_slice(part);
        }
        w.write_all(&buf).await?;
    } else {
        w.write_all(&len.to_be_bytes()).await?;
        for part in parts {
            w.write_all(part).await?;
        }
    }
    Ok(())
}

/// Reads one frame of at most `max` bytes (prefix excluded) and returns its payload.
///
/// The length is checked before anything is allocated, and the buffer grows only as bytes
/// arrive, so a lying prefix costs no memory.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Vec<u8>, FrameError> {
    let len = read_header(r, max).await?;
    read_body(r, len, HEADER_LEN as u64).await
}

/// Reads and checks a length prefix.
async fn read_header<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<u64, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = r.read(&mut header[got..]).await?;
        if n == 0 {
            return Err(FrameError::Truncated {
                expected: HEADER_LEN as u64,
                got: got as u64,
            });
        }
        got += n;
    }
    let len = u64::from(u32::from_be_bytes(header));
    if len > max as u64 {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Reads exactly `len` bytes; `before` is how many bytes of the frame came earlier (for errors).
async fn read_body<R: AsyncRead + Unpin>(
    r: &mut R,
    len: u64,
    before: u64,
) -> Result<Vec<u8>, FrameError> {
    let mut body = Vec::with_capacity((len as usize).min(COALESCE_BYTES * 4));
    let read = r.take(len).read_to_end(&mut body).await?;
    if (read as u64) < len {
        return Err(FrameError::Truncated {
            expected: before + len,
            got: before + read as u64,
        });
    }
    Ok(body)
}

/// Longest LEB128 length prefix of a client frame (a `u64`).
const VARINT_MAX_LEN: usize = 10;

/// Appends a client-protocol frame: `body` after its length as LEB128 (1 byte below 128,
/// 2 below 16 KiB). Clients get one small frame per committed update, so the 3 bytes a
/// fixed `u32` prefix would add show on the wire (`cargo xtask bench --only wire`).
pub fn put_varint_frame(buf: &mut Vec<u8>, body: &[u8]) {
    let mut len = body.len() as u64;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            buf.push(byte);
            break;
        }
        buf.push(byte | 0x80);
    }
    buf.extend_from_slice(body);
}

/// Writes one client-protocol frame made of `parts` (see [`put_varint_frame`]).
pub async fn write_varint_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    parts: &[&[u8]],
) -> Result<(), FrameError> {
    if let [body] = parts {
        return write_varint_frames(w, &[body]).await;
    }
    write_varint_frames(w, &[&parts.concat()]).await
}

/// Writes several client-protocol frames in one go (so they may share a packet).
pub async fn write_varint_frames<W: AsyncWrite + Unpin>(
    w: &mut W,
    frames: &[&[u8]],
) -> Result<(), FrameError> {
    let total: usize = frames.iter().map(|f| f.len() + VARINT_MAX_LEN).sum();
    let mut buf = Vec::with_capacity(total);
    for f in frames {
        put_varint_frame(&mut buf, f);
    }
    w.write_all(&buf).await?;
    Ok(())
}

/// Reads one client-protocol frame of at most `max` bytes (prefix excluded). As with
/// [`read_frame`], the length is checked before anything is allocated.
pub async fn read_varint_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut len: u64 = 0;
    let mut got = 0usize;
    loop {
        let mut byte = [0u8; 1];
        if r.read(&mut byte).await? == 0 {
            return Err(FrameError::Truncated {
                expected: got as u64 + 1,
                got: got as u64,
            });
        }
        len |= u64::from(byte[0] & 0x7f) << (7 * got);
        got += 1;
        if len > max as u64 {
            return Err(FrameError::TooLarge { len, max });
        }
        if byte[0] & 0x80 == 0 {
            break;
        }
        if got == VARINT_MAX_LEN {
            return Err(FrameError::TooLarge { len: u64::MAX, max });
        }
    }
    read_body(r, len, got as u64).await
}

/// Writes a response frame.
pub async fn write_response<W: AsyncWrite + Unpin>(
    w: &mut W,
    response: &Response,
) -> Result<(), FrameError> {
    match response {
        Response::Ok(body) => write_frame(w, &[&[STATUS_OK], body]).await,
        Response::Failed(text) => write_frame(w, &[&[STATUS_FAILED], text.as_bytes()]).await,
    }
}

/// Reads a response frame whose body is at most `max` bytes.
pub async fn read_response<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Response, FrameError> {
    let len = read_header(r, max.saturating_add(1)).await?;
    if len == 0 {
        return Err(FrameError::BadStatus(None));
    }
    let mut status = [0u8; 1];
    let n = r.read(&mut status).await?;
    if n == 0 {
        return Err(FrameError::Truncated {
            expected: HEADER_LEN as u64 + len,
            got: HEADER_LEN as u64,
        });
    }
    if status[0] != STATUS_OK && status[0] != STATUS_FAILED {
        return Err(FrameError::BadStatus(Some(status[0])));
    }
    let body = read_body(r, len - 1, HEADER_LEN as u64 + 1).await?;
    if status[0] == STATUS_OK {
        Ok(Response::Ok(body))
    } else {
        Ok(Response::Failed(
            String::from_utf8_lossy(&body).into_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn roundtrip(parts: &[&[u8]], max: usize) -> Result<Vec<u8>, FrameError> {
        let mut wire = Vec::new();
        write_frame(&mut wire, parts).await?;
        read_frame(&mut wire.as_slice(), max).await
    }

    #[tokio::test]
    async fn varint_frames_roundtrip_and_refuse_lies() {
        for n in [0usize, 1, 127, 128, 16383, 16384, 70_000] {
            let body = vec![7u8; n];
            let mut wire = Vec::new();
            write_varint_frames(&mut wire, &[&body, b"x"])
                .await
                .unwrap();
            let expect_prefix = match n {
                0..=127 => 1,
                128..=16383 => 2,
                _ => 3,
            };
            assert_eq!(wire.len(), n + expect_prefix + 2, "{n}");
            let mut r = wire.as_slice();
            assert_eq!(read_varint_frame(&mut r, 1 << 20).await.unwrap(), body);
            assert_eq!(read_varint_frame(&mut r, 1 << 20).await.unwrap(), b"x");
            assert!(matches!(
                read_varint_frame(&mut r, 1 << 20).await,
                Err(FrameError::Truncated { got: 0, .. })
            ));
        }
        let mut wire = Vec::new();
        write_varint_frame(&mut wire, &[b"ab", b"cd"])
            .await
            .unwrap();
        assert_eq!(wire, b"\x04abcd");
        // Over the limit, a prefix that never ends, a short body.
        let mut big = Vec::new();
        put_varint_frame(&mut big, &[0; 300]);
        assert!(matches!(
            read_varint_frame(&mut big.as_slice(), 299).await,
            Err(FrameError::TooLarge { len: 300, max: 299 })
        ));
        let endless = [0x80u8; 11];
        assert!(matches!(
            read_varint_frame(&mut &endless[..], usize::MAX).await,
            Err(FrameError::TooLarge { .. })
        ));
        assert!(matches!(
            read_varint_frame(&mut &b"\x05ab"[..], 100).await,
            Err(FrameError::Truncated {
                expected: 6,
                got: 3
            })
        ));
    }

    #[tokio::test]
    async fn small_and_large_frames_roundtrip() {
        assert_eq!(
            roundtrip(&[b"ab", b"cd"], 10).await.ok(),
            Some(b"abcd".to_vec())
        );
        assert_eq!(roundtrip(&[], 10).await.ok(), Some(Vec::new()));
        let big = vec![7u8; COALESCE_BYTES * 3];
        assert_eq!(roundtrip(&[&big], big.len()).await.ok(), Some(big));
    }

    #[tokio::test]
    async fn oversized_prefix_is_rejected_before_reading_the_body() {
        let wire = (u32::MAX).to_be_bytes();
        let err = read_frame(&mut wire.as_slice(), 1024).await;
        assert!(
            matches!(err, Err(FrameError::TooLarge { len, max: 1024 }) if len == u32::MAX as u64)
        );
    }

    #[tokio::test]
    async fn truncated_header_and_body_are_reported() {
        let err = read_frame(&mut [0u8, 0].as_slice(), 10).await;
        assert!(matches!(
            err,
            Err(FrameError::Truncated {
                expected: 4,
                got: 2
            })
        ));
        let wire = [0u8, 0, 0, 5, b'a', b'b'];
        let err = read_frame(&mut wire.as_slice(), 10).await;
        assert!(matches!(
            err,
            Err(FrameError::Truncated {
                expected: 9,
                got: 6
            })
        ));
    }

    #[tokio::test]
    async fn responses_roundtrip_and_bad_status_is_a_violation() {
        for response in [
            Response::Ok(b"yes".to_vec()),
            Response::Failed("no such node".into()),
        ] {
            let mut wire = Vec::new();
            assert!(write_response(&mut wire, &response).await.is_ok());
            let back = read_response(&mut wire.as_slice(), 16).await;
            assert_eq!(back.ok(), Some(response));
        }
        let mut wire = Vec::new();
        assert!(write_frame(&mut wire, &[&[9u8]]).await.is_ok());
        let err = read_response(&mut wire.as_slice(), 16).await;
        assert!(matches!(err, Err(ref e @ FrameError::BadStatus(Some(9))) if e.is_violation()));
    }
}
