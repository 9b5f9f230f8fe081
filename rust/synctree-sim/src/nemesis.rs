//! The nemesis: seeded faults, each undone after a while — crash and restart, partitions
//! (symmetric and one-way), message loss, delay with jitter (reordering), duplicates, and
//! clock skew per server (including clocks that jump back).

use crate::clock;
use crate::invariants::Violation;
use crate::world::World;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use std::time::Duration;
use synctree_raft::NodeId;
use synctree_runtime::{Completion, Done, MembershipChange};

#[derive(Debug, Clone)]
enum Repair {
    Restart(usize),
    Unblock(Vec<(NodeId, NodeId)>),
    Heal(NodeId),
    CalmNetwork,
}

/// A membership change on its way: where it was submitted, and what it asked.
struct PendingChange {
    node: NodeId,
    incarnation: u64,
    ticket: u64,
    change: MembershipChange,
    since: u64,
}

/// A membership change that never answered is forgotten after this many steps.
const CHANGE_PATIENCE: u64 = 5_000;

pub struct Nemesis {
    rng: StdRng,
    change: Option<PendingChange>,
    /// Chance per step of a new fault.
    rate: f64,
    max_skew_ns: i64,
    pending: Vec<(u64, Repair)>,
    pub faults: u64,
}

impl Nemesis {
    pub fn new(seed: u64, max_skew: Duration) -> Self {
        Nemesis {
            rng: StdRng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7300),
            change: None,
            rate: 1.0 / 250.0,
            max_skew_ns: max_skew.as_nanos() as i64,
            pending: Vec::new(),
            faults: 0,
        }
    }

    /// Gives every server a clock skew of up to the maximum either way.
    pub fn skew_clocks(&mut self, world: &World) -> Vec<String> {
        world
            .slots
            .iter()
            .map(|s| {
                let skew = self.rng.random_range(-self.max_skew_ns..=self.max_skew_ns);
                clock::set_skew(s.id, skew);
                format!("clock of {} skewed {} ms", s.id, skew / 1_000_000)
            })
            .collect()
    }

    /// Undoes faults that are due, then maybe starts a new one. Returns what it did.
    pub async fn act(&mut self, step: u64, world: &mut World) -> Result<Vec<String>, Violation> {
        let mut done = Vec::new();
        let due: Vec<Repair> = {
            let (due, later): (Vec<_>, Vec<_>) =
                self.pending.drain(..).partition(|(at, _)| *at <= step);
            self.pending = later;
            due.into_iter().map(|(_, r)| r).collect()
        };
        for r in due {
            done.push(self.repair(r, world).await?);
        }
        if self.rng.random_bool(self.rate) {
            if let Some(what) = self.inject(step, world).await {
                self.faults += 1;
                done.push(what);
            }
        }
        Ok(done)
    }

    async fn repair(&mut self, r: Repair, world: &mut World) -> Result<String, Violation> {
        Ok(match r {
            Repair::Restart(i) => {
                world.restart(i).await?;
                format!("restart {}", world.slots[i].id)
            }
            Repair::Unblock(links) => {
                for (a, b) in &links {
                    world.net.unblock(*a, *b);
                }
                format!("unblock {links:?}")
            }
            Repair::Heal(id) => {
                world.net.heal(id);
                format!("heal {id}")
            }
            Repair::CalmNetwork => {
                calm(world);
                "network calm".into()
            }
        })
    }

    async fn inject(&mut self, step: u64, world: &mut World) -> Option<String> {
        let ids: Vec<NodeId> = world.slots.iter().map(|s| s.id).collect();
        let later = step + self.rng.random_range(100..3000);
        let what = match self.rng.random_range(0..100) {
            0..25 => {
                // Mostly a minority down at once (the cluster must keep going); now and then
                // a majority (it must stall safely, then recover).
                let up: Vec<usize> = world.running().map(|(i, _, _)| i).collect();
                let voters = world.members().map(|(v, _)| v).unwrap_or_default();
                let minority = voters.len().saturating_sub(1) / 2;
                let down = voters.iter().filter(|v| !world.is_running(**v)).count();
                if down >= minority && !self.rng.random_bool(0.1) {
                    return None;
                }
                let &i = up.choose(&mut self.rng)?;
                world.crash(i).await;
                self.pending.push((later, Repair::Restart(i)));
                format!("crash {}", world.slots[i].id)
            }
            25..45 => {
                let mut shuffled = ids.clone();
                shuffled.shuffle(&mut self.rng);
                let cut = self.rng.random_range(1..shuffled.len().max(2));
                let (a, b) = shuffled.split_at(cut.min(shuffled.len()));
                let mut links = Vec::new();
                for x in a {
                    for y in b {
                        links.push((*x, *y));
                        links.push((*y, *x));
                    }
                }
                for (x, y) in &links {
                    world.net.block(*x, *y);
                }
                self.pending.push((later, Repair::Unblock(links)));
                format!("partition {a:?} | {b:?}")
            }
            45..57 => {
                let mut pair = ids.clone();
                pair.shuffle(&mut self.rng);
                let (x, y) = (pair[0], *pair.get(1)?);
                world.net.block(x, y);
                self.pending.push((later, Repair::Unblock(vec![(x, y)])));
                format!("one-way cut {x} -> {y}")
            }
            57..65 if self.change.is_none() => return self.change_membership(step, world).await,
            57..65 => {
                let &id = ids.choose(&mut self.rng)?;
                world.net.isolate(id);
                self.pending.push((later, Repair::Heal(id)));
                format!("isolate {id}")
            }
            65..85 => {
                let loss = self.rng.random_range(0.0..0.2);
                let delay = Duration::from_micros(self.rng.random_range(0..5_000));
                let jitter = Duration::from_micros(self.rng.random_range(0..10_000));
                let dup = self.rng.random_range(0.0..0.1);
                world.net.set_drop_rate(loss);
                world.net.set_delay(delay);
                world.net.set_jitter(jitter);
                world.net.set_duplicate_rate(dup);
                self.pending.push((later, Repair::CalmNetwork));
                format!(
                    "network: loss {loss:.3}, delay {delay:?} + jitter {jitter:?}, duplicates {dup:.3}"
                )
            }
            _ => {
                let &id = ids.choose(&mut self.rng)?;
                let skew = self.rng.random_range(-self.max_skew_ns..=self.max_skew_ns);
                let before = clock::skew(id);
                clock::set_skew(id, skew);
                format!(
                    "clock of {id} jumps {} ms (skew now {} ms)",
                    (skew - before) / 1_000_000,
                    skew / 1_000_000
                )
            }
        };
        Some(what)
    }

    /// Starts a membership change: promote a learner; else add a server (a spare, or a
    /// removed one on a fresh disk) as a learner, or remove a voter, keeping 3 to 5 voters.
    async fn change_membership(&mut self, step: u64, world: &mut World) -> Option<String> {
        let (voters, learners) = world.members()?;
        let change = if let Some(&id) = learners.first() {
            MembershipChange::Promote { id }
        } else if voters.len() < 5 && (voters.len() <= 3 || self.rng.random_bool(0.5)) {
            let outside: Vec<usize> = (0..world.slots.len())
                .filter(|i| !voters.contains(&world.slots[*i].id))
                .collect();
            let &i = outside.choose(&mut self.rng)?;
            // The newcomer starts empty; it comes up (or not) like any server.
            if world.start_fresh(i).await.is_err() {
                return None;
            }
            let id = world.slots[i].id;
            MembershipChange::AddLearner {
                id,
                addr: World::address(id).to_string(),
            }
        } else {
            let &id = voters.choose(&mut self.rng)?;
            MembershipChange::Remove { id }
        };
        let via: Vec<usize> = world
            .running_members()
            .into_iter()
            .filter(|i| match &change {
                MembershipChange::Remove { id } => world.slots[*i].id != *id,
                _ => true,
            })
            .collect();
        let &i = via.choose(&mut self.rng)?;
        let slot = &world.slots[i];
        let node = slot.node.as_ref()?;
        let ticket = node.submit_membership(change.clone());
        let what = format!("membership: {change} (asked on {})", slot.id);
        self.change = Some(PendingChange {
            node: slot.id,
            incarnation: slot.incarnation,
            ticket,
            change,
            since: step,
        });
        Some(what)
    }

    /// Takes the answer to the pending membership change from `completions`; a removed
    /// server is taken out for good. Returns what happened.
    pub async fn collect(
        &mut self,
        step: u64,
        world: &mut World,
        completions: &mut Vec<(NodeId, u64, Completion)>,
    ) -> Option<String> {
        let pending = self.change.as_ref()?;
        let key = (pending.node, pending.incarnation, pending.ticket);
        let answer = completions
            .iter()
            .position(|(id, inc, c)| (*id, *inc, c.ticket) == key)
            .map(|at| completions.swap_remove(at).2);
        let lost = !world.slots.iter().any(|s| {
            s.id == pending.node && s.incarnation == pending.incarnation && s.node.is_some()
        });
        let Some(c) = answer else {
            if lost || step > pending.since + CHANGE_PATIENCE {
                let p = self.change.take()?;
                return Some(format!("membership: {} got no answer", p.change));
            }
            return None;
        };
        let p = self.change.take()?;
        match c.result {
            Ok(Done::Membership(m)) => {
                if let MembershipChange::Remove { id } = p.change {
                    world.retire(world.index_of(id)).await;
                }
                Some(format!(
                    "membership: {} done at {}: voters {:?}, learners {:?}",
                    p.change, m.index, m.voters, m.learners
                ))
            }
            other => Some(format!("membership: {} failed: {other:?}", p.change)),
        }
    }

    /// Whether a membership change is still waiting for its answer.
    pub fn changing(&self) -> bool {
        self.change.is_some()
    }

    /// Ends every fault: the network heals, crashed servers restart.
    pub async fn heal_all(&mut self, world: &mut World) -> Result<(), Violation> {
        self.pending.clear();
        world.net.heal_all();
        calm(world);
        for i in world.down() {
            world.restart(i).await?;
        }
        Ok(())
    }
}

fn calm(world: &World) {
    world.net.set_drop_rate(0.0);
    world.net.set_delay(Duration::ZERO);
    world.net.set_jitter(Duration::ZERO);
    world.net.set_duplicate_rate(0.0);
}
