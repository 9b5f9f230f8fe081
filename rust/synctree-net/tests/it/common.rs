//! Shared fixtures: a certificate directory, started nodes, raw QUIC clients, captured logs.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use quinn::crypto::rustls::QuicClientConfig;
use synctree_net::{
    certs, handler_fn, tls, Handler, HandlerError, NodeId, QuicConfig, QuicTransport, TlsMaterial,
};

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A timeout long enough never to fire in a healthy test.
pub const GENEROUS: Duration = Duration::from_secs(10);

/// A directory holding a fresh cluster CA and certificates for `ids`.
pub fn cluster_dir(ids: &[NodeId]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    certs::generate_ca(dir.path()).expect("generate CA");
    for &id in ids {
        certs::generate_node(dir.path(), id).expect("generate node cert");
    }
    dir
}

pub fn material(dir: &Path, id: NodeId) -> TlsMaterial {
    TlsMaterial::load(dir, id).expect("load TLS material")
}

/// Answers `<body> from <peer>`; `fail:<text>` fails, `malformed` is malformed, `sleep:<ms>`
/// sleeps first.
pub fn echo_handler(local: NodeId) -> Arc<dyn Handler> {
    handler_fn(move |from, body: Vec<u8>| async move {
        let text = String::from_utf8_lossy(&body).into_owned();
        if let Some(msg) = text.strip_prefix("fail:") {
            return Err(HandlerError::Failed(msg.to_string()));
        }
        if text == "malformed" {
            return Err(HandlerError::Malformed("not a request".into()));
        }
        if let Some(ms) = text.strip_prefix("sleep:") {
            let ms = ms.parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Ok(format!("{text} from {from} at {local}").into_bytes())
    })
}

pub fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub fn start(dir: &Path, id: NodeId) -> QuicTransport {
    start_at(dir, id, localhost())
}

pub fn start_at(dir: &Path, id: NodeId, listen: SocketAddr) -> QuicTransport {
    QuicTransport::start(
        QuicConfig::new(id, listen, material(dir, id)),
        echo_handler(id),
    )
    .expect("start transport")
}

/// Starts a node on `addr`, retrying while the previous owner of the port lets go of it.
pub async fn restart_at(dir: &Path, id: NodeId, addr: SocketAddr) -> QuicTransport {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match QuicTransport::start(
            QuicConfig::new(id, addr, material(dir, id)),
            echo_handler(id),
        ) {
            Ok(transport) => return transport,
            Err(e) if Instant::now() < deadline => {
                eprintln!("rebind {addr}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot restart node {id} on {addr}: {e}"),
        }
    }
}

/// A bare quinn client (no server side) with the given rustls config.
pub fn raw_client(config: rustls::ClientConfig) -> quinn::Endpoint {
    let crypto = QuicClientConfig::try_from(config).expect("QUIC client config");
    let mut endpoint = quinn::Endpoint::client(localhost()).expect("client endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

/// A client config that trusts the cluster CA but presents no certificate.
pub fn no_cert_config(ca: &TlsMaterial) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.ca.clone()).expect("add root");
    let mut config = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![tls::ALPN.to_vec()];
    config
}

/// Sends raw bytes on a new stream, finishes it and reads whatever comes back.
pub async fn raw_exchange(conn: &quinn::Connection, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(bytes).await.map_err(|e| e.to_string())?;
    let _ = send.finish();
    recv.read_to_end(1 << 20).await.map_err(|e| e.to_string())
}

/// A well-formed request frame.
pub fn request_frame(body: &[u8]) -> Vec<u8> {
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

static LOGS: Mutex<String> = Mutex::new(String::new());

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_str(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends this process's `synctree_net` logs into a buffer that [`wait_for_log`] searches.
pub fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("synctree_net=debug")
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
    });
}

/// Waits (up to 5 s) for a captured log line containing every one of `needles`.
pub async fn wait_for_log(needles: &[&str]) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = LOGS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lines()
            .find(|line| needles.iter().all(|n| line.contains(n)))
            .map(str::to_string);
        if found.is_some() || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
