//! One simulated run: start the cluster, run workload and nemesis for the configured steps,
//! checking every invariant after every step; then heal everything, let the cluster recover,
//! audit it and check the history for linearizability.

use crate::clock;
use crate::config::SimConfig;
use crate::invariants::{
    CommittedNeverLost, ElectionSafety, HlcOrder, LiveTrees, LogMatching, StateMachineSafety,
    TreesEqual, Violation,
};
use crate::nemesis::Nemesis;
use crate::workload::{Workload, REGISTER_NODE};
use crate::world::World;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;
use synctree_proto::Op;
use synctree_runtime::Done;

/// What a run found.
#[derive(Debug)]
pub struct Outcome {
    pub seed: u64,
    /// The first invariant that broke, if any (the run stops there).
    pub violation: Option<Violation>,
    /// Every event of the run (faults, operations), one line each, for reproducing.
    pub trace: Vec<String>,
    /// A digest of the trace: equal for two runs of one seed.
    pub digest: u64,
    /// The clients' history (docs/history-format.md).
    pub history: String,
    pub stats: Stats,
}

/// Counts of what happened, to see that a run did something.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub steps: u64,
    pub faults: u64,
    pub ops_ok: u64,
    pub ops_unknown: u64,
    pub ops_fail: u64,
    pub terms_led: usize,
    pub committed: usize,
    /// Times a live tree (built from effects) was found equal to the replicated one.
    pub live_checks: u64,
    pub virtual_ms: u64,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.violation.is_none()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        match &self.violation {
            None => write!(f, "seed {}: ok", self.seed)?,
            Some(v) => write!(f, "seed {}: VIOLATION of {v}", self.seed)?,
        }
        write!(
            f,
            " ({} steps, {} virtual ms, {} faults, ops ok {} / unknown {} / fail {}, {} terms \
             led, {} entries committed, trace {:016x})",
            s.steps,
            s.virtual_ms,
            s.faults,
            s.ops_ok,
            s.ops_unknown,
            s.ops_fail,
            s.terms_led,
            s.committed,
            self.digest
        )
    }
}

struct Sim {
    cfg: SimConfig,
    world: World,
    workload: Workload,
    nemesis: Nemesis,
    logs: LogMatching,
    election: ElectionSafety,
    machines: StateMachineSafety,
    trees: TreesEqual,
    committed: CommittedNeverLost,
    hlc: HlcOrder,
    live: LiveTrees,
    trace: Vec<String>,
    step: u64,
}

thread_local! {
    /// Panics on this thread since the last look (a task of a simulated server panicked).
    static PANICS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Records every panic on its thread (then prints it as usual): a panic inside a simulated
/// server's task is caught by tokio and would otherwise pass unnoticed.
fn watch_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let what = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            PANICS.with(|p| p.borrow_mut().push(format!("{what}{at}")));
            previous(info);
        }));
    });
    PANICS.with(|p| p.borrow_mut().clear());
}

/// Runs seed `seed` on a fresh single-threaded runtime with virtual time.
pub fn run(seed: u64, cfg: &SimConfig) -> Outcome {
    watch_panics();
    synctree_raft::seed_thread_rng(Some(seed));
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_time().start_paused(true);
    #[cfg(tokio_unstable)]
    builder.rng_seed(tokio::runtime::RngSeed::from_bytes(&seed.to_le_bytes()));
    let runtime = builder.build().expect("a current-thread runtime");
    let outcome = runtime.block_on(run_on_runtime(seed, cfg.clone()));
    drop(runtime);
    synctree_raft::seed_thread_rng(None);
    outcome
}

async fn run_on_runtime(seed: u64, cfg: SimConfig) -> Outcome {
    clock::reset();
    let logs = LogMatching::default();
    let mut trace = Vec::new();
    let mut nemesis = Nemesis::new(seed, cfg.max_skew);
    let world = match World::start(seed, &cfg, logs.clone()).await {
        Ok(w) => w,
        Err(e) => {
            return Outcome {
                seed,
                violation: Some(Violation::new("start", e.to_string())),
                trace,
                digest: 0,
                history: String::new(),
                stats: Stats::default(),
            }
        }
    };
    if cfg.faults {
        trace.extend(nemesis.skew_clocks(&world));
    }
    let mut sim = Sim {
        workload: Workload::new(seed, cfg.clients),
        cfg,
        world,
        nemesis,
        logs,
        election: ElectionSafety::default(),
        machines: StateMachineSafety::default(),
        trees: TreesEqual::default(),
        committed: CommittedNeverLost::default(),
        hlc: HlcOrder::default(),
        live: LiveTrees::default(),
        trace,
        step: 0,
    };
    let violation = sim.run().await.err();
    let digest = {
        let mut h = DefaultHasher::new();
        sim.trace.hash(&mut h);
        h.finish()
    };
    let w = &sim.workload;
    let stats = Stats {
        steps: sim.step,
        faults: sim.nemesis.faults,
        ops_ok: ["write", "read", "cas", "spawn", "despawn"]
            .iter()
            .map(|k| w.count(k, "ok"))
            .sum(),
        ops_unknown: ["write", "read", "cas", "spawn", "despawn"]
            .iter()
            .map(|k| w.count(k, "unknown"))
            .sum(),
        ops_fail: ["write", "read", "cas", "spawn", "despawn"]
            .iter()
            .map(|k| w.count(k, "fail"))
            .sum(),
        terms_led: sim.election.terms_led(),
        committed: sim.committed.count(),
        live_checks: sim.live.compared(),
        virtual_ms: clock::elapsed().as_millis() as u64,
    };
    for (_, _, node) in sim.world.running() {
        node.stop().await;
    }
    Outcome {
        seed,
        violation,
        digest,
        history: sim.workload.history(),
        trace: sim.trace,
        stats,
    }
}

impl Sim {
    fn now_ns(&self) -> u64 {
        clock::elapsed().as_nanos() as u64
    }

    fn note(&mut self, line: impl fmt::Display) {
        self.trace.push(format!(
            "{:>6} {:>8}us {line}",
            self.step,
            clock::elapsed().as_micros()
        ));
    }

    async fn run(&mut self) -> Result<(), Violation> {
        self.setup().await?;
        for _ in 0..self.cfg.steps {
            if self.cfg.faults {
                for what in self.nemesis.act(self.step, &mut self.world).await? {
                    self.note(format_args!("nemesis: {what}"));
                }
            }
            let events = self
                .workload
                .issue(self.now_ns(), self.step, &self.world, true);
            for e in events {
                self.note(format_args!("client {}: {}", e.client, e.line));
            }
            self.tick().await?;
        }
        self.recover().await?;
        self.check_history()
    }

    /// Advances virtual time by one tick, then looks at everything.
    async fn tick(&mut self) -> Result<(), Violation> {
        tokio::time::sleep(self.cfg.tick).await;
        self.step += 1;
        self.observe().await
    }

    /// Puts every running server's Raft status in the trace.
    fn note_status(&mut self) {
        let lines: Vec<String> = self
            .world
            .running()
            .map(|(_, _, n)| {
                let s = n.status();
                format!(
                    "status of {}: leader {:?}, term {}, last log {}, committed {}, applied {}",
                    s.id, s.leader, s.term, s.last_log_index, s.commit_index, s.applied_index
                )
            })
            .collect();
        for l in lines {
            self.note(l);
        }
    }

    /// Feeds every running server's committed effects to its live mirror (as its scene tree
    /// would apply them), and compares the mirror with the replicated tree.
    fn drain_applied(&mut self) -> Result<(), Violation> {
        for (_, slot, node) in self.world.running() {
            while let Some(applied) = node.try_recv_applied() {
                self.live.apply(slot.id, slot.incarnation, applied)?;
            }
            node.inspect(|s| self.live.compare(slot.id, s))?;
        }
        Ok(())
    }

    async fn observe(&mut self) -> Result<(), Violation> {
        if let Some(p) = PANICS.with(|p| p.borrow_mut().drain(..).next()) {
            return Err(Violation::new(
                "no panics",
                format!("a server's task panicked: {p}"),
            ));
        }
        self.drain_applied()?;
        let mut completions = self.world.poll_completions();
        let (writes, events) =
            self.workload
                .collect(self.now_ns(), self.step, &self.world, &mut completions);
        for e in events {
            self.note(format_args!("client {}: {}", e.client, e.line));
        }
        if let Some(what) = self
            .nemesis
            .collect(self.step, &mut self.world, &mut completions)
            .await
        {
            self.note(what);
        }
        for w in writes {
            self.hlc.check(w)?;
        }
        let samples = self.world.sample()?;
        self.election.check(&samples)?;
        self.machines.check(&samples)?;
        let truncated = self.logs.take_truncated();
        self.committed.check(&samples, &self.logs, &truncated)?;
        for (_, slot, node) in self.world.running() {
            node.inspect(|s| self.trees.check(slot.id, s))?;
        }
        if let Some(mut v) = self.logs.take_violations().into_iter().next() {
            if let Some(index) = v.index {
                v.detail.push_str(&self.world.describe_entries(index));
            }
            return Err(v);
        }
        Ok(())
    }

    /// Spawns the node whose properties the clients use (retried until it is there).
    async fn setup(&mut self) -> Result<(), Violation> {
        let deadline = self.now_ns() + 30_000_000_000;
        loop {
            let (_, slot, node) = self
                .world
                .running()
                .next()
                .ok_or_else(|| Violation::new("liveness", "no server running at start"))?;
            let (id, incarnation) = (slot.id, slot.incarnation);
            let ticket = node.submit(Op::Spawn {
                parent: String::new(),
                name: REGISTER_NODE.into(),
                scene: "Node".into(),
                props: vec![],
                owner: synctree_proto::SERVER_PEER,
            });
            loop {
                // Not `tick`: the clients' collector would take this completion.
                tokio::time::sleep(self.cfg.tick).await;
                self.step += 1;
                self.drain_applied()?;
                let slot = &self.world.slots[self.world.index_of(id)];
                let Some(node) = slot
                    .node
                    .as_ref()
                    .filter(|_| slot.incarnation == incarnation)
                else {
                    break;
                };
                let mut buf = Vec::new();
                node.poll_completions(&mut buf);
                if let Some(c) = buf.into_iter().find(|c| c.ticket == ticket) {
                    match c.result {
                        Ok(Done::Write { .. }) => {
                            self.note("setup: spawned P");
                            return Ok(());
                        }
                        Err(e) if e.to_string().contains("already") => return Ok(()),
                        _ => break,
                    }
                }
                if self.now_ns() > deadline {
                    return Err(Violation::new(
                        "liveness",
                        "a fault-free cluster did not commit its first write in 30 s",
                    ));
                }
            }
        }
    }

    /// Heals every fault, waits for the clients, audits every property from every
    /// client, and waits until every server applied the same log.
    async fn recover(&mut self) -> Result<(), Violation> {
        self.nemesis.heal_all(&mut self.world).await?;
        self.note("nemesis: healed everything; recovery");
        self.note_status();
        let deadline = self.now_ns() + self.cfg.recovery.as_nanos() as u64;
        // A membership change under way finishes (or is given up), then a newcomer that was
        // never added leaves.
        while self.nemesis.changing() {
            self.tick().await?;
            if self.now_ns() > deadline {
                return Err(Violation::new(
                    "liveness",
                    "after healing, a membership change did not finish",
                ));
            }
        }
        let members = self.world.running_members();
        let outsiders: Vec<usize> = self
            .world
            .running()
            .map(|(i, _, _)| i)
            .filter(|i| !members.contains(i))
            .collect();
        for i in outsiders {
            let id = self.world.slots[i].id;
            self.note(format_args!("server {id} is not a member: it leaves"));
            self.world.retire(i).await;
        }
        let mut audited = false;
        loop {
            if self.workload.idle() {
                if audited {
                    break;
                }
                self.workload.audit();
                audited = true;
            }
            for e in self
                .workload
                .issue(self.now_ns(), self.step, &self.world, false)
            {
                self.note(format_args!("client {}: {}", e.client, e.line));
            }
            self.tick().await?;
            if self.now_ns() > deadline {
                self.note_status();
                return Err(Violation::new(
                    "liveness",
                    format!(
                        "{:?} after healing, the clients' operations did not finish",
                        self.cfg.recovery
                    ),
                ));
            }
        }
        if let Some(f) = self.workload.audit_failures.first() {
            return Err(Violation::new(
                "liveness",
                format!("after healing, an audit read failed: {f}"),
            ));
        }
        // Every server ends on the same applied index (and so, by `trees equal`, the same tree).
        loop {
            let members = self.world.running_members();
            let applied: Vec<u64> = members
                .iter()
                .filter_map(|i| self.world.slots[*i].node.as_ref())
                .map(|n| n.status().applied_index)
                .collect();
            if !applied.is_empty() && applied.windows(2).all(|w| w[0] == w[1]) {
                self.note(format_args!("converged at applied index {}", applied[0]));
                return Ok(());
            }
            self.tick().await?;
            if self.now_ns() > deadline + Duration::from_secs(5).as_nanos() as u64 {
                return Err(Violation::new(
                    "liveness",
                    format!("servers did not converge after healing: applied {applied:?}"),
                ));
            }
        }
    }

    fn check_history(&mut self) -> Result<(), Violation> {
        let text = self.workload.history();
        let ops = synctree_check::parse_history(text.as_bytes())
            .map_err(|e| Violation::new("history", format!("our own history: {e}")))?;
        let report = synctree_check::check_history(&ops);
        if report.is_linearizable() {
            Ok(())
        } else {
            Err(Violation::new("linearizability", report.to_string()))
        }
    }
}
