//! Many requests at once share one connection and one connect attempt.

use futures::future::join_all;
use synctree_net::Transport;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_share_one_connection() -> TestResult {
    let dir = cluster_dir(&[1, 2]);
    let one = start(dir.path(), 1);
    let two = start(dir.path(), 2);
    one.set_peer(2, two.local_addr()?);

    // No connection exists yet: all callers race to connect and must share one attempt.
    let requests = (0..1000).map(|i| one.request(2, format!("req {i}").into_bytes(), GENEROUS));
    let responses = join_all(requests).await;
    for (i, response) in responses.into_iter().enumerate() {
        assert_eq!(
            String::from_utf8(response?)?,
            format!("req {i} from 1 at 2")
        );
    }
    assert_eq!(one.open_connections(), 1);
    assert_eq!(two.open_connections(), 1);
    Ok(())
}
