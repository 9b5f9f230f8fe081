//! A light load generator for `cargo xtask bench --only load`: many game clients speaking
//! the client protocol over QUIC on one small tokio runtime, so the generator leaves the
//! machine's cores to the servers being measured. Each client says hello, spawns its own
//! node, then sets one property of it on every tick; it decodes only what it needs (the
//! outcomes of its requests) and reads past the committed entries every client is sent,
//! which a real client would apply on a machine of its own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use synctree_net::frame::{read_varint_frame as read_frame, write_varint_frame as write_frame};
use synctree_proto::{
    decode, encode, ClientRequest, Hello, Op, Outcome, PropertyHandles, Request, ServerMessage,
    Value, CLIENT_PROTOCOL_VERSION,
};
use tokio::sync::{mpsc, watch};

/// What the clients measured: write latencies (call to committed outcome, ms) and failures.
pub struct LoadResult {
    pub latencies: Vec<f64>,
    pub failed: usize,
    pub unanswered: usize,
}

/// One client's part of the run.
struct Client {
    index: usize,
    server: (u64, SocketAddr),
    token: String,
}

/// The load: clients, their node's scene and the property they write, how often, how long.
pub struct LoadPlan<'a> {
    pub servers: &'a [(u64, SocketAddr)],
    pub ca: PathBuf,
    pub tokens: &'a [String],
    pub scene: &'a str,
    pub property: &'a str,
    pub tick: Duration,
    pub duration: Duration,
}

/// Connects `tokens.len()` clients (client i to `servers[i % n]`), lets each spawn node
/// `L<i>` of `scene`, then has every client set `property` of its node once per `tick` for
/// `duration`. `started` is called when the timed part begins.
pub fn run(plan: LoadPlan<'_>, started: impl FnOnce()) -> Result<LoadResult> {
    let LoadPlan {
        servers,
        ca,
        tokens,
        scene,
        property,
        tick,
        duration,
    } = plan;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // Whether the timed part runs: false, then true, then false again (stop).
        let (tick_tx, tick_rx) = watch::channel(false);
        let clients = tokens.len();
        let (ready_tx, mut ready_rx) = mpsc::channel::<Result<()>>(tokens.len());
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(Vec<f64>, usize, usize)>();
        for (index, token) in tokens.iter().enumerate() {
            let client = Client {
                index,
                server: servers[index % servers.len()],
                token: token.clone(),
            };
            let (ca, scene, property) = (ca.clone(), scene.to_owned(), property.to_owned());
            let (ready, done, ticks) = (ready_tx.clone(), done_tx.clone(), tick_rx.clone());
            // Clients write out of step, as players do: client i a fraction i/n into the tick.
            let phase = tick.mul_f64(index as f64 / clients as f64);
            tokio::spawn(async move {
                let timing = (tick, phase, ticks);
                match client
                    .run(&ca, &scene, &property, ready.clone(), timing)
                    .await
                {
                    Ok(r) => {
                        let _ = done.send(r);
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e)).await;
                    }
                }
            });
        }
        drop((ready_tx, done_tx));
        for _ in 0..tokens.len() {
            match ready_rx.recv().await {
                Some(Ok(())) => {}
                Some(Err(e)) => return Err(e),
                None => bail!("the load clients stopped before they were ready"),
            }
        }
        started();
        let _ = tick_tx.send(true);
        tokio::time::sleep(duration).await;
        let _ = tick_tx.send(false);
        let mut out = LoadResult {
            latencies: Vec::new(),
            failed: 0,
            unanswered: 0,
        };
        while let Some((lat, failed, unanswered)) = done_rx.recv().await {
            out.latencies.extend(lat);
            out.failed += failed;
            out.unanswered += unanswered;
        }
        Ok(out)
    })
}

/// True if an encoded server message is an outcome (`{"O": ...}`): the only kind these
/// clients decode.
fn is_outcome(bytes: &[u8]) -> bool {
    matches!(bytes.get(..3), Some(&[0x81, 0xa1, b'O' | b'K']))
}

impl Client {
    async fn run(
        self,
        ca: &std::path::Path,
        scene: &str,
        property: &str,
        ready: mpsc::Sender<Result<()>>,
        (tick, phase, mut running): (Duration, Duration, watch::Receiver<bool>),
    ) -> Result<(Vec<f64>, usize, usize)> {
        let i = self.index;
        let endpoint = synctree_net::clients::connector(ca)?;
        let (id, addr) = self.server;
        let conn = endpoint
            .connect(addr, &synctree_net::tls::node_name(id))?
            .await
            .with_context(|| format!("load client {i}: connecting to server {id}"))?;
        let (mut send, mut recv) = conn.open_bi().await?;
        let hello = Hello {
            version: CLIENT_PROTOCOL_VERSION,
            token: self.token.clone(),
            resume: None,
        };
        write_frame(&mut send, &[&encode(&hello)?]).await?;
        // Outcomes by request id, from a reader that skips everything else.
        let (outcomes_tx, mut outcomes) = mpsc::unbounded_channel::<(u64, bool, Instant)>();
        let reader = tokio::spawn(async move {
            while let Ok(body) = read_frame(&mut recv, 256 << 20).await {
                if let Ok(ServerMessage::Refused { reason }) = decode(&body, body.len()) {
                    let _ = outcomes_tx.send((0, false, Instant::now()));
                    return Err(anyhow!("refused: {reason}"));
                }
                if !is_outcome(&body) {
                    continue;
                }
                match decode(&body, body.len()) {
                    Ok(ServerMessage::Outcome { id, outcome }) => {
                        let ok = matches!(outcome, Outcome::Written { .. });
                        let _ = outcomes_tx.send((id, ok, Instant::now()));
                    }
                    Ok(ServerMessage::Committed { id, .. }) => {
                        let _ = outcomes_tx.send((id, true, Instant::now()));
                    }
                    _ => {}
                }
            }
            Ok(())
        });
        let request = |id: u64, op: Op| -> Result<Vec<u8>> {
            Ok(encode(&Request {
                id,
                request: ClientRequest::Write(op),
            })?)
        };
        // Writes of its property go by handle, as a Godot client's do.
        let mut handles = PropertyHandles::default();
        let spawn = Op::Spawn {
            parent: String::new(),
            name: format!("L{i}"),
            scene: scene.to_owned(),
            props: Vec::new(),
            owner: 0,
        };
        write_frame(&mut send, &[&request(1, spawn)?]).await?;
        match tokio::time::timeout(Duration::from_secs(30), outcomes.recv()).await {
            Ok(Some((1, true, _))) => {}
            other => bail!("load client {i}: its spawn did not succeed: {other:?}"),
        }
        let _ = ready.send(Ok(())).await;
        drop(ready);
        let mut sent: HashMap<u64, Instant> = HashMap::new();
        let (mut lat, mut failed) = (Vec::new(), 0usize);
        let mut next_id = 2u64;
        let mut value = 0i64;
        while !*running.borrow_and_update() {
            if running.changed().await.is_err() {
                break;
            }
        }
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + phase, tick);
        loop {
            tokio::select! {
                changed = running.changed() => {
                    if changed.is_err() || !*running.borrow_and_update() {
                        break;
                    }
                }
                _ = interval.tick() => {
                    value += 1;
                    let write = ClientRequest::Write(Op::SetProperty {
                        path: format!("L{i}"),
                        property: property.to_owned(),
                        value: Value::Int(value),
                    });
                    let (declare, set) = handles.outgoing(&write);
                    if let Some(declare) = declare {
                        write_frame(&mut send, &[&encode(&Request { id: 0, request: declare })?])
                            .await?;
                    }
                    write_frame(&mut send, &[&encode(&Request { id: next_id, request: set })?])
                        .await?;
                    sent.insert(next_id, Instant::now());
                    next_id += 1;
                }
                Some((id, ok, at)) = outcomes.recv() => {
                    if let Some(t0) = sent.remove(&id) {
                        if ok {
                            lat.push(at.duration_since(t0).as_secs_f64() * 1000.0);
                        } else {
                            failed += 1;
                        }
                    }
                }
            }
        }
        // Outcomes still on their way get a moment.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !sent.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, outcomes.recv()).await {
                Ok(Some((id, ok, at))) => {
                    if let Some(t0) = sent.remove(&id) {
                        if ok {
                            lat.push(at.duration_since(t0).as_secs_f64() * 1000.0);
                        } else {
                            failed += 1;
                        }
                    }
                }
                _ => break,
            }
        }
        reader.abort();
        conn.close(0u32.into(), b"load done");
        Ok((lat, failed, sent.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_told_apart_by_their_first_bytes() {
        let outcome = ServerMessage::Outcome {
            id: 3,
            outcome: Outcome::Failed {
                reason: "x".into(),
                uncertain: false,
            },
        };
        assert!(is_outcome(&encode(&outcome).unwrap()));
        let committed = outcome.committed(3);
        assert!(is_outcome(&encode(&committed).unwrap()));
        let committed = ServerMessage::Outcome {
            id: 3,
            outcome: Outcome::Written {
                index: 2,
                stamp: synctree_proto::Stamp::from_parts(1 << 40, 2),
            },
        }
        .committed(3);
        assert!(matches!(
            committed,
            ServerMessage::Committed { back: 1, .. }
        ));
        assert!(is_outcome(&encode(&committed).unwrap()));
        let entries = ServerMessage::Entries(Vec::new());
        assert!(!is_outcome(&encode(&entries).unwrap()));
        assert!(!is_outcome(
            &encode(&ServerMessage::Peers(vec![1])).unwrap()
        ));
    }
}
