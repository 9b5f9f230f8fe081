//! Only holders of a certificate from the cluster CA get answers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use synctree_net::{
    certs, handler_fn, tls, HandlerError, QuicConfig, QuicTransport, TlsMaterial, Transport,
};

use crate::common::*;

/// Node 1 counting the requests it handles, with node 2 as a good peer.
fn guarded_cluster(
    dir: &std::path::Path,
) -> Result<
    (QuicTransport, QuicTransport, Arc<AtomicUsize>),
    Box<dyn std::error::Error + Send + Sync>,
> {
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = handled.clone();
    let handler = handler_fn(move |from, _body| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, HandlerError>(format!("hello {from}").into_bytes()) }
    });
    let server = QuicTransport::start(QuicConfig::new(1, localhost(), material(dir, 1)), handler)?;
    let good = start(dir, 2);
    good.set_peer(1, server.local_addr()?);
    Ok((server, good, handled))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_another_ca_is_refused() -> TestResult {
    capture_logs();
    let dir = cluster_dir(&[1, 2]);
    let (server, good, handled) = guarded_cluster(dir.path())?;

    // Trusts the cluster CA (so it accepts the server) but holds a node-9 certificate from a
    // different CA.
    let other = tempfile::tempdir()?;
    certs::generate_ca(other.path())?;
    certs::generate_node(other.path(), 9)?;
    let foreign = TlsMaterial::load(other.path(), 9)?;
    let rogue_material = TlsMaterial {
        ca: material(dir.path(), 1).ca,
        ..foreign
    };
    let rogue = QuicTransport::start(
        QuicConfig::new(9, localhost(), rogue_material),
        echo_handler(9),
    )?;
    rogue.set_peer(1, server.local_addr()?);
    let result = rogue
        .request(1, b"let me in".to_vec(), Duration::from_secs(3))
        .await;
    assert!(result.is_err(), "rogue got an answer: {result:?}");
    println!("rogue client (foreign CA) got: {result:?}");
    assert!(wait_for_log(&["WARN", "refused connection"])
        .await
        .is_some());

    assert_eq!(good.request(1, b"x".to_vec(), GENEROUS).await?, b"hello 2");
    assert_eq!(
        handled.load(Ordering::SeqCst),
        1,
        "only the good peer was handled"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_certificate_is_refused() -> TestResult {
    let dir = cluster_dir(&[1, 2]);
    let (server, good, handled) = guarded_cluster(dir.path())?;

    let anonymous = raw_client(no_cert_config(&material(dir.path(), 1)));
    let outcome = async {
        let conn = anonymous
            .connect(
                server.local_addr().map_err(|e| e.to_string())?,
                &tls::node_name(1),
            )
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        raw_exchange(&conn, &request_frame(b"anyone there?")).await
    };
    let result = tokio::time::timeout(Duration::from_secs(3), outcome).await;
    println!("client without certificate got: {result:?}");
    assert!(
        matches!(result, Ok(Err(_))),
        "expected a refusal, got {result:?}"
    );

    assert_eq!(good.request(1, b"x".to_vec(), GENEROUS).await?, b"hello 2");
    assert_eq!(
        handled.load(Ordering::SeqCst),
        1,
        "only the good peer was handled"
    );
    Ok(())
}
