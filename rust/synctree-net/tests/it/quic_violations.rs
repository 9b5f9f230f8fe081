//! Peers that break the protocol lose their connection; everybody else keeps being served.

use quinn::ConnectionError;
use synctree_net::{tls, NetError, QuicConfig, QuicTransport, Transport};

use crate::common::*;

/// Node 1 (max frame 1024 bytes) with node 2 connected and working, plus a raw connection from
/// node 3 for sending hand-made bytes.
struct Setup {
    _dir: tempfile::TempDir,
    server: QuicTransport,
    good: QuicTransport,
    raw: quinn::Endpoint,
}

async fn setup() -> Result<Setup, Box<dyn std::error::Error + Send + Sync>> {
    capture_logs();
    let dir = cluster_dir(&[1, 2, 3]);
    let cfg = QuicConfig::new(1, localhost(), material(dir.path(), 1)).with_max_frame_bytes(1024);
    let server = QuicTransport::start(cfg, echo_handler(1))?;
    let good = start(dir.path(), 2);
    good.set_peer(1, server.local_addr()?);
    assert_eq!(
        good.request(1, b"hello".to_vec(), GENEROUS).await?,
        b"hello from 2 at 1"
    );
    let raw = raw_client(tls::client_config(&material(dir.path(), 3))?);
    Ok(Setup {
        _dir: dir,
        server,
        good,
        raw,
    })
}

impl Setup {
    async fn raw_connection(
        &self,
    ) -> Result<quinn::Connection, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self
            .raw
            .connect(self.server.local_addr()?, &tls::node_name(1))?
            .await?)
    }

    /// The server still serves the good peer on its old connection and node 3 on a new one.
    async fn still_serving(&self) -> TestResult {
        assert_eq!(
            self.good.request(1, b"still".to_vec(), GENEROUS).await?,
            b"still from 2 at 1"
        );
        let conn = self.raw_connection().await?;
        let response = raw_exchange(&conn, &request_frame(b"fresh")).await?;
        let mut expected = ((1 + "fresh from 3 at 1".len()) as u32)
            .to_be_bytes()
            .to_vec();
        expected.push(0);
        expected.extend_from_slice(b"fresh from 3 at 1");
        assert_eq!(response, expected);
        Ok(())
    }
}

fn close_reason(conn: &quinn::Connection) -> String {
    match conn.close_reason() {
        Some(ConnectionError::ApplicationClosed(close)) => {
            String::from_utf8_lossy(&close.reason).into_owned()
        }
        other => format!("not closed by the application: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_that_connection_only() -> TestResult {
    let s = setup().await?;
    let conn = s.raw_connection().await?;
    let mut frame = 2048u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0; 64]);
    assert!(raw_exchange(&conn, &frame).await.is_err());
    let reason = close_reason(&conn);
    assert!(
        reason.contains("frame of 2048 bytes exceeds the limit of 1024"),
        "{reason}"
    );
    let line = wait_for_log(&["WARN", "closing connection from node 3", "exceeds"]).await;
    assert!(line.is_some(), "no warning logged");
    s.still_serving().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_frame_closes_that_connection_only() -> TestResult {
    let s = setup().await?;
    let conn = s.raw_connection().await?;
    let mut frame = 100u32.to_be_bytes().to_vec();
    frame.extend_from_slice(b"only ten b");
    assert!(raw_exchange(&conn, &frame).await.is_err());
    let reason = close_reason(&conn);
    assert!(
        reason.contains("truncated frame: got 14 of 104 bytes"),
        "{reason}"
    );
    assert!(
        wait_for_log(&["WARN", "closing connection from node 3", "truncated"])
            .await
            .is_some()
    );
    s.still_serving().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_closes_that_connection_and_the_caller_reconnects() -> TestResult {
    let s = setup().await?;
    let third = start(s._dir.path(), 3);
    third.set_peer(1, s.server.local_addr()?);
    match third.request(1, b"malformed".to_vec(), GENEROUS).await {
        Err(NetError::Protocol { peer: 1, reason }) => {
            assert!(
                reason.contains("malformed request: not a request"),
                "{reason}"
            );
        }
        other => panic!("expected Protocol, got {other:?}"),
    }
    assert!(
        wait_for_log(&["WARN", "closing connection from node 3", "malformed"])
            .await
            .is_some()
    );
    // The caller's next request opens a fresh connection.
    assert_eq!(
        third.request(1, b"sane".to_vec(), GENEROUS).await?,
        b"sane from 3 at 1"
    );
    s.still_serving().await
}
