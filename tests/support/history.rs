//! Jepsen-style clients over the control port: each runs writes, linearizable reads and
//! compare-and-sets on a few properties, one at a time, and records every operation in the
//! history format of `docs/history-format.md` (checked by `synctree-check`). A lost
//! connection or a failure that may have taken effect is `unknown`, never `fail`.

use crate::control::{Control, Op, OpResult};
use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Collects the operations of every client, timed on one clock.
pub struct Recorder {
    started: Instant,
    ops: Mutex<Vec<Value>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            started: Instant::now(),
            ops: Mutex::new(Vec::new()),
        }
    }
}

impl Recorder {
    fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    fn push(&self, op: Value) {
        if let Ok(mut ops) = self.ops.lock() {
            ops.push(op);
        }
    }

    /// The history, one JSON object per line.
    pub fn text(&self) -> String {
        let ops = self.ops.lock().map(|o| o.clone()).unwrap_or_default();
        ops.iter().map(|o| format!("{o}\n")).collect()
    }

    /// How many operations ended with `outcome` (of `kind`, if given).
    pub fn count(&self, kind: Option<&str>, outcome: &str) -> usize {
        let ops = self.ops.lock().map(|o| o.clone()).unwrap_or_default();
        ops.iter()
            .filter(|o| kind.is_none_or(|k| o["op"] == k) && o["outcome"] == outcome)
            .count()
    }

    /// Checks the history; writes it to `$SYNCTREE_HISTORY_OUT` (if set) first.
    pub fn check(&self) -> Result<String> {
        let text = self.text();
        if let Some(path) = std::env::var_os("SYNCTREE_HISTORY_OUT") {
            std::fs::write(&path, &text)?;
        }
        let ops = synctree_check::parse_history(text.as_bytes())?;
        let report = synctree_check::check_history(&ops);
        if !report.is_linearizable() {
            bail!("the history is not linearizable:\n{report}");
        }
        Ok(report.to_string())
    }
}

/// One client: its id, the servers it may use (id, control port), the node paths whose
/// property `v` it works on.
pub struct ClientRun {
    pub id: u64,
    pub servers: Vec<(u64, u16)>,
    pub nodes: Vec<String>,
}

fn parse_value(text: Option<&str>) -> Value {
    match text.map(str::trim) {
        None | Some("null") => Value::Null,
        Some(t) => t
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(t)),
    }
}

impl ClientRun {
    /// Operations until `until`, on the client's home server (the next one while that
    /// one cannot be reached).
    pub fn run(&self, rec: &Recorder, until: Instant) {
        let mut rng = StdRng::seed_from_u64(self.id);
        let mut server = (self.id as usize) % self.servers.len();
        let mut control: Option<Control> = None;
        let mut last_read: Vec<Value> = vec![Value::Null; self.nodes.len()];
        let mut n = 0i64;
        while Instant::now() < until {
            let Some(c) = self.connection(&mut control, &mut server) else {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            let k = rng.random_range(0..self.nodes.len());
            let node = &self.nodes[k];
            n += 1;
            let value = self.id as i64 * 1_000_000 + n;
            let roll = rng.random_range(0..10);
            let (kind, op, expected) = if roll < 4 {
                ("write", Op::set(node, "v", &value.to_string()), None)
            } else if roll < 8 {
                ("read", Op::read(node, "v"), None)
            } else {
                let expected = last_read[k].clone();
                let text = if expected.is_null() {
                    "null".to_owned()
                } else {
                    expected.to_string()
                };
                let op = Op::Cas {
                    path: node.clone(),
                    property: "v".into(),
                    expected: text,
                    value: value.to_string(),
                };
                ("cas", op, Some(expected))
            };
            let call_ns = rec.now_ns();
            let reply = c.batch(std::slice::from_ref(&op));
            let return_ns = rec.now_ns();
            let (outcome, result) = match reply {
                Ok(r) => outcome(&r.results[0]),
                Err(_) => {
                    control = None; // the server died or hung: reconnect, maybe elsewhere
                    ("unknown", Value::Null)
                }
            };
            if kind == "read" && outcome == "ok" {
                last_read[k] = result.clone();
            }
            let mut o = json!({
                "client": self.id, "op": kind, "key": format!("{node}:v"),
                "call_ns": call_ns, "return_ns": return_ns, "outcome": outcome,
            });
            match kind {
                "read" => o["result"] = result,
                _ => o["value"] = json!(value),
            }
            if let Some(e) = expected {
                o["expected"] = e;
            }
            rec.push(o);
        }
    }

    fn connection<'a>(
        &self,
        control: &'a mut Option<Control>,
        server: &mut usize,
    ) -> Option<&'a mut Control> {
        if control.is_none() {
            let (_, port) = self.servers[*server];
            match Control::connect(port, Duration::from_millis(300)) {
                Ok(c) => *control = Some(c),
                Err(_) => {
                    *server = (*server + 1) % self.servers.len();
                    return None;
                }
            }
        }
        control.as_mut()
    }

    /// Reads every node's `v` on every server (recorded): after the faults, each must
    /// answer, and linearizability then covers every acknowledged write.
    pub fn final_reads(&self, rec: &Recorder, timeout: Duration) -> Result<()> {
        for &(id, port) in &self.servers {
            for node in &self.nodes {
                let deadline = Instant::now() + timeout;
                loop {
                    let call_ns = rec.now_ns();
                    let reply = Control::connect(port, Duration::from_secs(1))
                        .and_then(|mut c| c.batch(&[Op::read(node, "v")]));
                    let return_ns = rec.now_ns();
                    let (outcome, result) = match &reply {
                        Ok(r) => outcome(&r.results[0]),
                        Err(_) => ("unknown", Value::Null),
                    };
                    rec.push(json!({
                        "client": self.id, "op": "read", "key": format!("{node}:v"),
                        "call_ns": call_ns, "return_ns": return_ns, "outcome": outcome,
                        "result": result,
                    }));
                    if outcome == "ok" {
                        break;
                    }
                    if Instant::now() > deadline {
                        bail!("server {id} did not answer a read of {node}:v within {timeout:?}: {reply:?}");
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        Ok(())
    }
}

/// The history outcome of one op's result, and what a read returned.
fn outcome(r: &OpResult) -> (&'static str, Value) {
    if r.ok {
        ("ok", parse_value(r.value.as_deref()))
    } else if r.maybe_applied {
        ("unknown", Value::Null)
    } else {
        ("fail", Value::Null)
    }
}
