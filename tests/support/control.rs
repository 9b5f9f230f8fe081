//! Client of the control protocol of `godot_project/server.gd`: one JSON object per line each
//! way, replies in request order.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long a reply may take (a batch waits up to 60 s for its requests on the server).
const REPLY_TIMEOUT: Duration = Duration::from_secs(90);

/// One operation of a batch; values are strings in Godot's `var_to_str` format.
#[derive(Debug, Clone)]
pub enum Op {
    Spawn {
        parent: String,
        name: String,
        scene: String,
        props: Vec<(String, String)>,
    },
    Set {
        path: String,
        property: String,
        value: String,
    },
    Despawn {
        path: String,
    },
    Read {
        path: String,
        property: String,
    },
    /// Compare-and-set; `expected` `"null"` matches a property never set.
    Cas {
        path: String,
        property: String,
        expected: String,
        value: String,
    },
}

impl Op {
    pub fn spawn(parent: &str, name: &str, scene: &str) -> Op {
        Op::Spawn {
            parent: parent.into(),
            name: name.into(),
            scene: scene.into(),
            props: Vec::new(),
        }
    }

    pub fn set(path: &str, property: &str, value: &str) -> Op {
        Op::Set {
            path: path.into(),
            property: property.into(),
            value: value.into(),
        }
    }

    pub fn despawn(path: &str) -> Op {
        Op::Despawn { path: path.into() }
    }

    pub fn read(path: &str, property: &str) -> Op {
        Op::Read {
            path: path.into(),
            property: property.into(),
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            Op::Spawn {
                parent,
                name,
                scene,
                props,
            } => {
                let props: serde_json::Map<String, Value> = props
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect();
                json!({"op": "spawn", "parent": parent, "name": name, "scene": scene, "props": props})
            }
            Op::Set {
                path,
                property,
                value,
            } => json!({"op": "set", "path": path, "property": property, "value": value}),
            Op::Despawn { path } => json!({"op": "despawn", "path": path}),
            Op::Read { path, property } => {
                json!({"op": "read", "path": path, "property": property})
            }
            Op::Cas {
                path,
                property,
                expected,
                value,
            } => json!({
                "op": "cas", "path": path, "property": property, "expected": expected, "value": value
            }),
        }
    }
}

/// The outcome of one op of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct OpResult {
    pub ok: bool,
    pub error: String,
    /// `var_to_str` of the value, for a successful read.
    pub value: Option<String>,
    /// A failure that may have taken effect all the same (timeout, lost leader).
    pub maybe_applied: bool,
}

/// The reply to a batch.
#[derive(Debug, Clone)]
pub struct BatchReply {
    pub results: Vec<OpResult>,
    /// Time on the server from issuing the first op to the last completion.
    pub elapsed: Duration,
}

/// A connection to one server's control port.
pub struct Control {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    addr: SocketAddr,
}

impl Control {
    pub fn connect(port: u16, timeout: Duration) -> Result<Control> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .with_context(|| format!("cannot connect to the control port {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
        Ok(Control {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            addr,
        })
    }

    /// Sends one request and returns its reply; a reply with `"ok": false` is an error.
    pub fn request(&mut self, request: &Value) -> Result<Value> {
        let mut line = serde_json::to_string(request)?;
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .with_context(|| format!("sending to {}", self.addr))?;
        let mut reply = String::new();
        let n = self
            .reader
            .read_line(&mut reply)
            .with_context(|| format!("waiting for the reply of {}", self.addr))?;
        if n == 0 {
            bail!("{} closed the control connection", self.addr);
        }
        let reply: Value = serde_json::from_str(reply.trim_end())
            .with_context(|| format!("malformed reply from {}: {}", self.addr, reply.trim_end()))?;
        if reply.get("ok") != Some(&Value::Bool(true)) {
            let error = reply
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("(no error text)");
            bail!("{} refused {}: {error}", self.addr, request);
        }
        Ok(reply)
    }

    /// `SyncedTree.status()`: id, leader, is_leader, term, commit, applied, nodes.
    pub fn status(&mut self) -> Result<Value> {
        let reply = self.request(&json!({"cmd": "status"}))?;
        reply
            .get("status")
            .cloned()
            .ok_or_else(|| anyhow!("status reply without \"status\""))
    }

    /// `SyncedTree.dump()`.
    pub fn dump(&mut self) -> Result<String> {
        let reply = self.request(&json!({"cmd": "dump"}))?;
        reply
            .get("dump")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("dump reply without a \"dump\" string"))
    }

    /// Issues every op in the same frame on the server and waits for all of them.
    pub fn batch(&mut self, ops: &[Op]) -> Result<BatchReply> {
        let ops_json: Vec<Value> = ops.iter().map(Op::to_json).collect();
        let reply = self.request(&json!({"cmd": "batch", "ops": ops_json}))?;
        let results = reply
            .get("results")
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("batch reply without \"results\""))?;
        if results.len() != ops.len() {
            bail!("batch of {} ops got {} results", ops.len(), results.len());
        }
        let results = results
            .iter()
            .map(|r| OpResult {
                ok: r.get("ok") == Some(&Value::Bool(true)),
                error: r
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                value: r.get("value").and_then(Value::as_str).map(str::to_owned),
                maybe_applied: r.get("maybe_applied") == Some(&Value::Bool(true)),
            })
            .collect();
        let elapsed = reply
            .get("elapsed_usec")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        Ok(BatchReply {
            results,
            elapsed: Duration::from_micros(elapsed.max(0.0) as u64),
        })
    }

    /// A membership change through the server's SyncedTree (`add_learner`, `promote`,
    /// `remove`); returns the resulting `{index, voters, learners}`, or the refusal.
    pub fn membership(&mut self, action: &str, id: u64, address: &str) -> Result<Value> {
        let reply = self.request(&json!({
            "cmd": "membership", "action": action, "id": id, "address": address
        }))?;
        reply
            .get("result")
            .cloned()
            .ok_or_else(|| anyhow!("membership reply without a result: {reply}"))
    }

    /// Asks the server to stop; it replies, then quits.
    pub fn quit(&mut self) -> Result<()> {
        self.request(&json!({"cmd": "quit"})).map(|_| ())
    }
}
