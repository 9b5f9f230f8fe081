//! Wing & Gong's search for a linearization of one key's operations, with Lowe's cache of
//! visited (linearized set, state) configurations, as porcupine does.

use crate::model::{is_read_only, step, State};
use crate::{Kind, Operation, Outcome};
use std::collections::HashSet;

/// When an operation returned; `unknown` ones never did (they stay pending forever).
pub(crate) fn returned(op: &Operation) -> i64 {
    match op.outcome {
        Outcome::Unknown => i64::MAX,
        _ => op.return_ns,
    }
}

/// Keeps what constrains the search: `fail` operations did nothing, and an `unknown` read
/// changes nothing and reported nothing.
pub(crate) fn relevant(op: &Operation) -> bool {
    match op.outcome {
        Outcome::Ok => true,
        Outcome::Fail => false,
        Outcome::Unknown => !is_read_only(op),
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn with(&self, i: usize) -> Self {
        let mut b = self.clone();
        b.0[i / 64] |= 1 << (i % 64);
        b
    }
}

/// True if the operations of one key (all of them `relevant`, any order) can be put in one
/// sequence that respects real time (an operation that returned before another was called
/// comes first) and the register's sequential specification, starting from `null`.
/// `unknown` operations may be placed anywhere after their call, or left out.
pub fn check_key(ops: &[&Operation]) -> bool {
    let mut ops: Vec<&Operation> = ops.iter().copied().filter(|o| relevant(o)).collect();
    // An `unknown` write or cas whose value nobody read or expected can be left out: placed
    // anywhere, it must be overwritten before any read, so leaving it out explains as much.
    // (Exact when written values are unique, as drivers make them.) Each one kept doubles
    // the search, so this is what keeps histories with many timeouts checkable.
    let observed: Vec<&serde_json::Value> = ops
        .iter()
        .flat_map(|o| match o.op {
            Kind::Read => Some(&o.result),
            Kind::Cas => Some(&o.expected),
            _ => None,
        })
        .collect();
    ops.retain(|o| {
        o.outcome != Outcome::Unknown
            || !matches!(o.op, Kind::Write | Kind::Cas)
            || observed.contains(&&o.value)
    });
    ops.sort_by_key(|o| (o.call_ns, returned(o)));
    let required = ops.iter().filter(|o| o.outcome == Outcome::Ok).count();
    let mut stack = vec![(Bits::new(ops.len()), State::Null, 0usize)];
    let mut seen: HashSet<(Bits, String)> = HashSet::new();
    while let Some((done, state, done_ok)) = stack.pop() {
        if done_ok == required {
            return true;
        }
        // Every operation still to place must come before none that returned earlier.
        let first_return = ops
            .iter()
            .enumerate()
            .filter(|(i, _)| !done.get(*i))
            .map(|(_, o)| returned(o))
            .min()
            .unwrap_or(i64::MAX);
        for (i, op) in ops.iter().enumerate() {
            if op.call_ns > first_return {
                break;
            }
            if done.get(i) {
                continue;
            }
            if let Some(next) = step(&state, op) {
                let placed = done.with(i);
                if seen.insert((placed.clone(), next.to_string())) {
                    let ok = done_ok + usize::from(op.outcome == Outcome::Ok);
                    stack.push((placed, next, ok));
                }
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn op(kind: Kind, call: i64, ret: i64, value: Value, outcome: Outcome) -> Operation {
        Operation {
            client: 0,
            op: kind,
            key: "A:x".into(),
            value: value.clone(),
            expected: Value::Null,
            call_ns: call,
            return_ns: ret,
            outcome,
            result: value,
            line: 0,
        }
    }
    fn w(call: i64, ret: i64, v: i64) -> Operation {
        op(Kind::Write, call, ret, json!(v), Outcome::Ok)
    }
    fn r(call: i64, ret: i64, v: Value) -> Operation {
        op(Kind::Read, call, ret, v, Outcome::Ok)
    }
    fn lin(ops: &[Operation]) -> bool {
        check_key(&ops.iter().collect::<Vec<_>>())
    }

    #[test]
    fn sequential_register() {
        assert!(lin(&[
            w(0, 1, 1),
            r(2, 3, json!(1)),
            w(4, 5, 2),
            r(6, 7, json!(2))
        ]));
        assert!(lin(&[r(0, 1, Value::Null), w(2, 3, 1)]));
        assert!(
            !lin(&[w(0, 1, 1), r(2, 3, json!(2))]),
            "read of a value never written"
        );
        assert!(
            !lin(&[w(0, 1, 1), w(2, 3, 2), r(4, 5, json!(1))]),
            "stale read"
        );
    }

    #[test]
    fn concurrency_allows_either_order() {
        // Both writes overlap the read: it may see either.
        assert!(lin(&[w(0, 10, 1), w(0, 10, 2), r(5, 6, json!(1))]));
        assert!(lin(&[w(0, 10, 1), w(0, 10, 2), r(5, 6, json!(2))]));
        // ...but two later reads cannot see 2 then 1 when nothing writes 1 again.
        assert!(!lin(&[
            w(0, 10, 1),
            w(0, 10, 2),
            r(11, 12, json!(2)),
            r(13, 14, json!(1))
        ]));
    }

    #[test]
    fn unknown_writes_may_or_may_not_have_happened() {
        let lost = op(Kind::Write, 0, 1, json!(9), Outcome::Unknown);
        assert!(lin(&[lost.clone(), r(5, 6, json!(9))]), "it happened");
        assert!(lin(&[lost.clone(), r(5, 6, Value::Null)]), "it did not");
        // It can take effect late, even after reads that did not see it.
        assert!(lin(&[
            lost.clone(),
            r(5, 6, Value::Null),
            r(7, 8, json!(9))
        ]));
        // But not twice: seen, then gone, with nothing else writing.
        assert!(!lin(&[lost, r(5, 6, json!(9)), r(7, 8, Value::Null)]));
        // A failed write never happened.
        let failed = op(Kind::Write, 0, 1, json!(9), Outcome::Fail);
        assert!(!lin(&[failed, r(5, 6, json!(9))]));
    }

    #[test]
    fn many_unobserved_timeouts_stay_cheap() {
        // 200 overlapping writes that timed out, none of them ever read: leaving each in or
        // out would be 2^200 cases without pruning.
        let mut ops: Vec<Operation> = (0..200)
            .map(|i| op(Kind::Write, i, i + 1, json!(i), Outcome::Unknown))
            .collect();
        ops.push(r(1000, 1001, Value::Null));
        ops.push(w(1002, 1003, 7));
        ops.push(r(1004, 1005, json!(7)));
        assert!(lin(&ops));
        // One of them was read: it took effect, late (after 7), which an unknown write may.
        ops.push(r(1006, 1007, json!(150)));
        assert!(lin(&ops));
        // But nothing can bring back the initial null after that.
        ops.push(r(1008, 1009, Value::Null));
        assert!(!lin(&ops));
    }

    #[test]
    fn cas_and_node_existence() {
        let mut cas = op(Kind::Cas, 2, 3, json!(2), Outcome::Ok);
        cas.expected = json!(1);
        assert!(lin(&[w(0, 1, 1), cas.clone(), r(4, 5, json!(2))]));
        assert!(
            !lin(&[w(0, 1, 5), cas, r(4, 5, json!(2))]),
            "cas on the wrong value"
        );
        let spawn = |c, r| op(Kind::Spawn, c, r, Value::Null, Outcome::Ok);
        let despawn = |c, r| op(Kind::Despawn, c, r, Value::Null, Outcome::Ok);
        assert!(lin(&[spawn(0, 1), despawn(2, 3), spawn(4, 5)]));
        assert!(!lin(&[spawn(0, 1), spawn(2, 3)]), "spawned twice");
        assert!(
            lin(&[spawn(0, 5), spawn(1, 2), despawn(3, 4)]),
            "overlapping: one order works"
        );
    }
}
