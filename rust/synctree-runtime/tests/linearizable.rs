//! Jepsen-style, in process: concurrent clients on all three servers write, read
//! (linearizable reads) and compare-and-set three properties while the leader is killed and
//! restarted twice. The recorded history (written to `$SYNCTREE_HISTORY_OUT` when set, in
//! the format of docs/history-format.md) must check as linearizable with synctree-check.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value as Json};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use synctree_proto::{Op, Value};
use synctree_runtime::{Completion, Done, MemNetwork, Server};

const CLIENTS: u64 = 6;
const KEYS: [&str; 3] = ["a", "b", "c"];

mod common;

fn start(id: u64, net: &MemNetwork, dir: &Path) -> Server {
    common::start_with(id, net, dir, 1)
}

/// One server and the completions its dispatcher collected, by ticket.
struct Slot {
    server: RwLock<Option<Arc<Server>>>,
    done: Mutex<HashMap<u64, Completion>>,
}

impl Slot {
    fn current(&self) -> Option<Arc<Server>> {
        self.server.read().expect("slot").clone()
    }
}

/// Drains completions (for the clients) and applied effects (as the live tree would, so
/// the state machine never waits) of every running server.
fn dispatch(slots: &[Arc<Slot>], stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        for slot in slots {
            if let Some(s) = slot.current() {
                let mut buf = Vec::new();
                s.poll_completions(&mut buf);
                let mut done = slot.done.lock().expect("done");
                for c in buf {
                    done.insert(c.ticket, c);
                }
                drop(done);
                while s.try_recv_applied().is_some() {}
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn to_json(v: &Option<Value>) -> Json {
    match v {
        Some(Value::Int(i)) => json!(i),
        Some(other) => json!(format!("{other:?}")),
        None => Json::Null,
    }
}

fn client(c: u64, slot: &Slot, started: Instant, until: Instant, history: &Mutex<Vec<Json>>) {
    let mut rng = StdRng::seed_from_u64(c);
    let mut last_seen: HashMap<&str, Option<Value>> = HashMap::new();
    let mut n = 0i64;
    while Instant::now() < until {
        let Some(server) = slot.current() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let key = KEYS[rng.random_range(0..KEYS.len())];
        let roll = rng.random_range(0..10);
        n += 1;
        let value = (c as i64) * 1_000_000 + n;
        let call_ns = started.elapsed().as_nanos() as i64;
        let (kind, ticket, expected) = if roll < 4 {
            let op = Op::SetProperty {
                path: "K".into(),
                property: key.into(),
                value: Value::Int(value),
            };
            ("write", server.submit(op), None)
        } else if roll < 8 {
            ("read", server.submit_read("K".into(), key.into()), None)
        } else {
            let expected = last_seen.get(key).cloned().flatten();
            let op = Op::CompareAndSet {
                path: "K".into(),
                property: key.into(),
                expected: expected.clone(),
                value: Value::Int(value),
            };
            ("cas", server.submit(op), Some(expected))
        };
        let deadline = Instant::now() + Duration::from_secs(4);
        let completion = loop {
            if let Some(c) = slot.done.lock().expect("done").remove(&ticket) {
                break Some(c);
            }
            let replaced = !slot.current().is_some_and(|s| Arc::ptr_eq(&s, &server));
            if replaced || Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_micros(300));
        };
        let return_ns = started.elapsed().as_nanos() as i64;
        let (outcome, result) = match completion.map(|c| c.result) {
            Some(Ok(Done::Read { value, .. })) => {
                last_seen.insert(key, value.clone());
                ("ok", to_json(&value))
            }
            Some(Ok(Done::Write { .. } | Done::Membership(_))) => ("ok", Json::Null),
            Some(Err(e)) if e.uncertain => ("unknown", Json::Null),
            Some(Err(_)) => ("fail", Json::Null),
            None => ("unknown", Json::Null),
        };
        let mut rec = json!({
            "client": c, "op": kind, "key": format!("K:{key}"), "call_ns": call_ns,
            "return_ns": return_ns, "outcome": outcome,
        });
        if kind == "read" {
            rec["result"] = result;
        } else {
            rec["value"] = json!(value);
        }
        if let Some(expected) = expected {
            rec["expected"] = to_json(&expected);
        }
        history.lock().expect("history").push(rec);
    }
}

#[test]
fn histories_under_leader_crashes_are_linearizable() {
    let dir = tempfile::tempdir().expect("tmp");
    let net = MemNetwork::new();
    let slots: Vec<Arc<Slot>> = (1..=3)
        .map(|i| {
            Arc::new(Slot {
                server: RwLock::new(Some(Arc::new(start(i, &net, dir.path())))),
                done: Mutex::new(HashMap::new()),
            })
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let dispatcher = {
        let (slots, stop) = (slots.clone(), stop.clone());
        std::thread::spawn(move || dispatch(&slots, &stop))
    };
    let started = Instant::now();
    let history = Arc::new(Mutex::new(Vec::new()));
    // The node every key lives on.
    let first = slots[0].current().expect("server 1");
    let t = first.submit(Op::Spawn {
        parent: String::new(),
        name: "K".into(),
        scene: "Node".into(),
        props: vec![],
        owner: synctree_proto::SERVER_PEER,
    });
    let wait = Instant::now() + Duration::from_secs(20);
    while !slots[0].done.lock().expect("done").contains_key(&t) {
        assert!(Instant::now() < wait, "spawn K did not complete");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(first);

    let until = Instant::now() + Duration::from_millis(3500);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (slot, history) = (slots[(c % 3) as usize].clone(), history.clone());
            std::thread::spawn(move || client(c, &slot, started, until, &history))
        })
        .collect();
    // The nemesis: kill -9 the leader (its process is gone; its disk stays), restart it.
    for pause in [800u64, 900] {
        std::thread::sleep(Duration::from_millis(pause));
        let leader = slots
            .iter()
            .filter_map(|s| s.current())
            .find_map(|s| s.status().is_leader.then(|| s.id()));
        let Some(leader) = leader else { continue };
        let slot = &slots[(leader - 1) as usize];
        let victim = slot.server.write().expect("slot").take().expect("running");
        while Arc::strong_count(&victim) > 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
        Arc::try_unwrap(victim).ok().expect("sole owner").shutdown();
        net.unregister(leader);
        std::thread::sleep(Duration::from_millis(300));
        // The restarted server numbers its tickets from 1 again: completions the old one left
        // unclaimed (clients that gave up) must not answer the new one's requests. Nobody
        // else holds the old server now, so none arrive after this.
        slot.done.lock().expect("done").clear();
        *slot.server.write().expect("slot") = Some(Arc::new(start(leader, &net, dir.path())));
    }
    for c in clients {
        c.join().expect("client");
    }
    stop.store(true, Ordering::Relaxed);
    dispatcher.join().expect("dispatcher");

    let lines: Vec<String> = history
        .lock()
        .expect("history")
        .iter()
        .map(|r| r.to_string())
        .collect();
    let text = lines.join("\n");
    if let Some(path) = std::env::var_os("SYNCTREE_HISTORY_OUT") {
        std::fs::write(&path, &text).expect("write SYNCTREE_HISTORY_OUT");
    }
    let ops = synctree_check::parse_history(text.as_bytes()).expect("our own history parses");
    let report = synctree_check::check_history(&ops);
    let count = |kind: &str, outcome: &str| {
        ops.iter()
            .filter(|o| format!("{:?}", o.op).eq_ignore_ascii_case(kind))
            .filter(|o| format!("{:?}", o.outcome).eq_ignore_ascii_case(outcome))
            .count()
    };
    eprintln!(
        "{report}writes ok {} / unknown {}, reads ok {}, cas ok {} / fail {} / unknown {}",
        count("write", "ok"),
        count("write", "unknown"),
        count("read", "ok"),
        count("cas", "ok"),
        count("cas", "fail"),
        count("cas", "unknown")
    );
    assert!(report.is_linearizable(), "{report}");
    assert!(
        count("write", "ok") > 50 && count("read", "ok") > 50,
        "too little happened"
    );
    assert!(
        count("cas", "ok") > 0 && count("cas", "fail") > 0,
        "cas never decided both ways"
    );
}
