//! Clients: each runs one operation at a time on a random running server — writes,
//! linearizable reads and compare-and-sets of three properties of node `P`, and spawn /
//! despawn of nodes `E0..E2` — and records it in the history format of
//! `docs/history-format.md` (virtual nanoseconds).

use crate::invariants::hlc_order::StampedWrite;
use crate::world::World;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value as Json};
use std::collections::HashMap;
use synctree_proto::{Op, Stamp, Value};
use synctree_raft::NodeId;
use synctree_runtime::{Completion, Done};

/// The node whose properties clients write, read and cas.
pub const REGISTER_NODE: &str = "P";
const PROPERTIES: [&str; 3] = ["a", "b", "c"];
const SPAWNED: [&str; 3] = ["E0", "E1", "E2"];
/// A client stops waiting after this long (virtual): the outcome is unknown.
const GIVE_UP_NS: u64 = 4_000_000_000;

#[derive(Debug, Clone)]
enum Request {
    Write {
        property: &'static str,
        value: i64,
    },
    Read {
        property: &'static str,
    },
    Cas {
        property: &'static str,
        expected: Option<i64>,
        value: i64,
    },
    Spawn {
        name: &'static str,
    },
    Despawn {
        name: &'static str,
    },
}

impl Request {
    fn kind(&self) -> &'static str {
        match self {
            Request::Write { .. } => "write",
            Request::Read { .. } => "read",
            Request::Cas { .. } => "cas",
            Request::Spawn { .. } => "spawn",
            Request::Despawn { .. } => "despawn",
        }
    }

    fn key(&self) -> String {
        match self {
            Request::Write { property, .. }
            | Request::Read { property }
            | Request::Cas { property, .. } => format!("{REGISTER_NODE}:{property}"),
            Request::Spawn { name } | Request::Despawn { name } => format!("{name}:"),
        }
    }
}

struct InFlight {
    node: NodeId,
    incarnation: u64,
    ticket: u64,
    request: Request,
    call_ns: u64,
    submitted: u64,
    floor: Option<Stamp>,
    /// Part of the final audit (must succeed).
    audit: bool,
}

struct Client {
    id: u64,
    ready_at: u64,
    in_flight: Option<InFlight>,
    /// Last value this client read per property (what its cas expects).
    last_read: HashMap<&'static str, Option<i64>>,
    /// Reads to make before anything else (the final audit).
    script: Vec<Request>,
}

/// What happened to an operation, for the trace.
pub struct Event {
    pub client: u64,
    pub line: String,
}

pub struct Workload {
    rng: StdRng,
    clients: Vec<Client>,
    history: Vec<Json>,
    next_value: i64,
    submitted: HashMap<NodeId, u64>,
    by_ticket: HashMap<(NodeId, u64, u64), usize>,
    pub counts: HashMap<(&'static str, &'static str), u64>,
    /// Audit reads that did not succeed.
    pub audit_failures: Vec<String>,
}

impl Workload {
    pub fn new(seed: u64, clients: u64) -> Self {
        Workload {
            rng: StdRng::seed_from_u64(seed ^ 0x636c_6965_6e74_7300),
            clients: (0..clients)
                .map(|id| Client {
                    id,
                    ready_at: 0,
                    in_flight: None,
                    last_read: HashMap::new(),
                    script: Vec::new(),
                })
                .collect(),
            history: Vec::new(),
            next_value: 0,
            submitted: HashMap::new(),
            by_ticket: HashMap::new(),
            counts: HashMap::new(),
            audit_failures: Vec::new(),
        }
    }

    fn random_request(&mut self, client: usize) -> Request {
        self.next_value += 1;
        let value = self.next_value;
        let property = PROPERTIES[self.rng.random_range(0..PROPERTIES.len())];
        let name = SPAWNED[self.rng.random_range(0..SPAWNED.len())];
        match self.rng.random_range(0..100) {
            0..30 => Request::Write { property, value },
            30..60 => Request::Read { property },
            60..75 => Request::Cas {
                property,
                expected: self.clients[client]
                    .last_read
                    .get(property)
                    .copied()
                    .flatten(),
                value,
            },
            75..88 => Request::Spawn { name },
            _ => Request::Despawn { name },
        }
    }

    /// Starts an operation on every client that is free (when `random`, a random one; a
    /// scripted one always).
    pub fn issue(&mut self, now_ns: u64, step: u64, world: &World, random: bool) -> Vec<Event> {
        let mut events = Vec::new();
        let up = world.running_members();
        if up.is_empty() {
            return events;
        }
        for c in 0..self.clients.len() {
            let client = &self.clients[c];
            if client.in_flight.is_some() || client.ready_at > step {
                continue;
            }
            let (request, audit) = match self.clients[c].script.pop() {
                Some(r) => (r, true),
                None if random => (self.random_request(c), false),
                None => continue,
            };
            let slot_index = up[self.rng.random_range(0..up.len())];
            let slot = &world.slots[slot_index];
            let Some(node) = slot.node.as_ref() else {
                continue;
            };
            let ticket = match &request {
                Request::Write { property, value } => node.submit(Op::SetProperty {
                    path: REGISTER_NODE.into(),
                    property: (*property).into(),
                    value: Value::Int(*value),
                }),
                Request::Cas {
                    property,
                    expected,
                    value,
                } => node.submit(Op::CompareAndSet {
                    path: REGISTER_NODE.into(),
                    property: (*property).into(),
                    expected: expected.map(Value::Int),
                    value: Value::Int(*value),
                }),
                Request::Read { property } => {
                    node.submit_read(REGISTER_NODE.into(), (*property).into())
                }
                Request::Spawn { name } => node.submit(Op::Spawn {
                    parent: String::new(),
                    name: (*name).into(),
                    scene: "Node".into(),
                    props: vec![],
                    owner: synctree_proto::SERVER_PEER,
                }),
                Request::Despawn { name } => node.submit(Op::Despawn {
                    path: (*name).into(),
                }),
            };
            let submitted = self.submitted.entry(slot.id).or_default();
            *submitted += 1;
            events.push(Event {
                client: self.clients[c].id,
                line: format!("submit {:?} to {} (ticket {ticket})", request, slot.id),
            });
            self.by_ticket
                .insert((slot.id, slot.incarnation, ticket), c);
            self.clients[c].in_flight = Some(InFlight {
                node: slot.id,
                incarnation: slot.incarnation,
                ticket,
                request,
                call_ns: now_ns,
                submitted: *submitted,
                floor: node.inspect(|s| s.max_stamp),
                audit,
            });
        }
        events
    }

    /// Takes finished operations from every running server; returns the committed writes
    /// (for the HLC invariant) and trace events.
    pub fn collect(
        &mut self,
        now_ns: u64,
        step: u64,
        world: &World,
        completions: &mut Vec<(NodeId, u64, Completion)>,
    ) -> (Vec<StampedWrite>, Vec<Event>) {
        let mut writes = Vec::new();
        let mut events = Vec::new();
        let mine: Vec<(usize, Completion)> = {
            let mut mine = Vec::new();
            completions.retain(|(id, incarnation, c)| {
                match self.by_ticket.remove(&(*id, *incarnation, c.ticket)) {
                    Some(ci) => {
                        mine.push((ci, c.clone()));
                        false
                    }
                    None => true,
                }
            });
            mine
        };
        {
            for (ci, c) in mine {
                let Some(f) = self.clients[ci].in_flight.take() else {
                    continue;
                };
                if let Ok(Done::Write { index, stamp }) = &c.result {
                    writes.push(StampedWrite {
                        origin: f.node,
                        index: *index,
                        submitted: f.submitted,
                        stamp: *stamp,
                        floor: f.floor,
                    });
                }
                let (outcome, result) = match c.result {
                    Ok(Done::Read { value, .. }) => {
                        let v = as_int(&value);
                        if let Request::Read { property } = f.request {
                            self.clients[ci].last_read.insert(property, v);
                        }
                        ("ok", Some(v))
                    }
                    Ok(Done::Write { .. } | Done::Membership(_)) => ("ok", None),
                    Err(e) if e.uncertain => ("unknown", None),
                    Err(_) => ("fail", None),
                };
                events.push(Event {
                    client: self.clients[ci].id,
                    line: format!("{outcome} {:?} result {result:?}", f.request),
                });
                self.finish(ci, f, now_ns, step, outcome, result);
            }
        }
        // Operations on crashed servers, or too slow: unknown.
        for ci in 0..self.clients.len() {
            let lost = self.clients[ci].in_flight.as_ref().is_some_and(|f| {
                let gone = world
                    .slots
                    .iter()
                    .find(|s| s.id == f.node)
                    .is_none_or(|s| s.incarnation != f.incarnation || s.node.is_none());
                gone || now_ns.saturating_sub(f.call_ns) > GIVE_UP_NS
            });
            if lost {
                let Some(f) = self.clients[ci].in_flight.take() else {
                    continue;
                };
                self.by_ticket.remove(&(f.node, f.incarnation, f.ticket));
                events.push(Event {
                    client: self.clients[ci].id,
                    line: format!(
                        "gave up on {:?} (server {} crashed or too slow)",
                        f.request, f.node
                    ),
                });
                self.finish(ci, f, now_ns, step, "unknown", None);
            }
        }
        (writes, events)
    }

    fn finish(
        &mut self,
        ci: usize,
        f: InFlight,
        now_ns: u64,
        step: u64,
        outcome: &'static str,
        result: Option<Option<i64>>,
    ) {
        if f.audit && outcome != "ok" {
            self.audit_failures.push(format!(
                "client {}: {:?} on server {} ended {outcome}",
                self.clients[ci].id, f.request, f.node
            ));
        }
        let client = &mut self.clients[ci];
        client.ready_at = step + self.rng.random_range(0..8);
        *self.counts.entry((f.request.kind(), outcome)).or_default() += 1;
        let mut rec = json!({
            "client": client.id,
            "op": f.request.kind(),
            "key": f.request.key(),
            "call_ns": f.call_ns,
            "return_ns": now_ns,
            "outcome": outcome,
        });
        match &f.request {
            Request::Write { value, .. } => rec["value"] = json!(value),
            Request::Cas {
                expected, value, ..
            } => {
                rec["value"] = json!(value);
                rec["expected"] = json!(expected);
            }
            Request::Read { .. } => rec["result"] = json!(result.flatten()),
            Request::Spawn { .. } | Request::Despawn { .. } => {}
        }
        self.history.push(rec);
    }

    /// Queues, on every client, a read of every property (the final audit: everything
    /// acknowledged must be visible, and the cluster must answer).
    pub fn audit(&mut self) {
        for c in &mut self.clients {
            c.script = PROPERTIES
                .iter()
                .map(|p| Request::Read { property: p })
                .collect();
        }
    }

    /// Whether no client has an operation in flight or queued.
    pub fn idle(&self) -> bool {
        self.clients
            .iter()
            .all(|c| c.in_flight.is_none() && c.script.is_empty())
    }

    /// The history, one JSON object per line.
    pub fn history(&self) -> String {
        let mut out = String::new();
        for r in &self.history {
            out.push_str(&r.to_string());
            out.push('\n');
        }
        out
    }

    pub fn count(&self, kind: &'static str, outcome: &'static str) -> u64 {
        self.counts.get(&(kind, outcome)).copied().unwrap_or(0)
    }
}

fn as_int(v: &Option<Value>) -> Option<i64> {
    match v {
        Some(Value::Int(i)) => Some(*i),
        _ => None,
    }
}
