//! Prints request latency; informative only (no assertion on speed).

use std::time::{Duration, Instant};

use synctree_net::Transport;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn print_p50_of_sequential_small_requests() -> TestResult {
    let dir = cluster_dir(&[1, 2]);
    let one = start(dir.path(), 1);
    let two = start(dir.path(), 2);
    one.set_peer(2, two.local_addr()?);
    for _ in 0..50 {
        one.request(2, b"warmup".to_vec(), GENEROUS).await?;
    }
    let mut samples: Vec<Duration> = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let started = Instant::now();
        one.request(2, b"ping".to_vec(), GENEROUS).await?;
        samples.push(started.elapsed());
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "QUIC loopback latency over 1000 sequential requests: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
    Ok(())
}
