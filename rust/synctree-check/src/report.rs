//! Checks a whole history key by key and finds the first violation of each key: the
//! shortest real-time prefix of its history that no order explains.

use crate::linearize::{check_key, relevant, returned};
use crate::{Kind, Operation, Outcome};
use std::collections::BTreeMap;
use std::fmt;

/// The first violation of one key.
#[derive(Debug, Clone)]
pub struct Violation {
    pub key: String,
    /// The operation whose return makes the history of the key unexplainable: every
    /// operation that completed before it, with it, is linearizable; adding it is not.
    pub culprit: Operation,
    /// Operations of the key whose intervals overlap the culprit's.
    pub concurrent: Vec<Operation>,
    /// The last few state-changing operations of the key that completed before the culprit
    /// was called (what it should have seen, or built on).
    pub before: Vec<Operation>,
    /// Operations in the shortest failing prefix.
    pub prefix_len: usize,
}

/// The verdict on one key.
#[derive(Debug, Clone)]
pub struct KeyReport {
    pub key: String,
    pub ops: usize,
    pub violation: Option<Violation>,
}

/// The verdict on a history.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub keys: Vec<KeyReport>,
    pub ops: usize,
    pub unknown: usize,
    pub failed: usize,
}

impl Report {
    /// True if every key is linearizable.
    pub fn is_linearizable(&self) -> bool {
        self.keys.iter().all(|k| k.violation.is_none())
    }

    /// The violation that happened first (by the culprit's return time), if any.
    pub fn first_violation(&self) -> Option<&Violation> {
        self.keys
            .iter()
            .filter_map(|k| k.violation.as_ref())
            .min_by_key(|v| v.culprit.return_ns)
    }
}

/// Checks every key of `ops`.
pub fn check_history(ops: &[Operation]) -> Report {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in ops {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let keys = by_key
        .into_iter()
        .map(|(key, ops)| KeyReport {
            key: key.to_owned(),
            ops: ops.len(),
            violation: first_violation(key, &ops),
        })
        .collect();
    Report {
        keys,
        ops: ops.len(),
        unknown: ops.iter().filter(|o| o.outcome == Outcome::Unknown).count(),
        failed: ops.iter().filter(|o| o.outcome == Outcome::Fail).count(),
    }
}

/// The history of the key as it stood at time `t`: what had been called; what had not
/// returned yet is pending (it may or may not take effect).
fn prefix(ops: &[&Operation], t: i64) -> Vec<Operation> {
    ops.iter()
        .filter(|o| o.call_ns <= t)
        .map(|o| {
            let mut o = (*o).clone();
            if returned(&o) > t && o.outcome == Outcome::Ok {
                o.outcome = Outcome::Unknown;
            }
            o
        })
        .collect()
}

fn prefix_ok(ops: &[&Operation], t: i64) -> bool {
    let p = prefix(ops, t);
    check_key(&p.iter().collect::<Vec<_>>())
}

fn first_violation(key: &str, ops: &[&Operation]) -> Option<Violation> {
    let relevant: Vec<&Operation> = ops.iter().copied().filter(|o| relevant(o)).collect();
    if check_key(&relevant) {
        return None;
    }
    // Prefixes only get harder to explain as time goes on: binary search the first bad one.
    let mut returns: Vec<&Operation> = relevant
        .iter()
        .copied()
        .filter(|o| o.outcome == Outcome::Ok)
        .collect();
    returns.sort_by_key(|o| o.return_ns);
    let (mut lo, mut hi) = (0usize, returns.len() - 1);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if prefix_ok(&relevant, returns[mid].return_ns) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let culprit = returns[lo].clone();
    let concurrent = relevant
        .iter()
        .filter(|o| {
            **o != &culprit && o.call_ns <= culprit.return_ns && returned(o) >= culprit.call_ns
        })
        .map(|o| (*o).clone())
        .collect();
    let mut before: Vec<Operation> = relevant
        .iter()
        .filter(|o| o.op != Kind::Read && returned(o) < culprit.call_ns)
        .map(|o| (*o).clone())
        .collect();
    before.sort_by_key(|o| o.return_ns);
    let before = before.split_off(before.len().saturating_sub(3));
    Some(Violation {
        key: key.to_owned(),
        prefix_len: prefix(&relevant, culprit.return_ns).len(),
        culprit,
        concurrent,
        before,
    })
}

fn describe(o: &Operation) -> String {
    let what = match o.op {
        Kind::Write => format!("write {}", o.value),
        Kind::Read => format!("read -> {}", o.result),
        Kind::Cas => format!("cas {} -> {}", o.expected, o.value),
        Kind::Spawn => "spawn".to_owned(),
        Kind::Despawn => "despawn".to_owned(),
    };
    let outcome = match o.outcome {
        Outcome::Ok => "ok",
        Outcome::Fail => "fail",
        Outcome::Unknown => "unknown",
    };
    format!(
        "line {}: client {} {what} [{} .. {} ns] {outcome}",
        o.line, o.client, o.call_ns, o.return_ns
    )
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key '{}' is not linearizable. First violation: no order of the {} operations \
             called by the time this one returned explains it:",
            self.key, self.prefix_len
        )?;
        writeln!(f, "  {}", describe(&self.culprit))?;
        if !self.concurrent.is_empty() {
            writeln!(f, "concurrent with it:")?;
            for o in &self.concurrent {
                writeln!(f, "  {}", describe(o))?;
            }
        }
        if !self.before.is_empty() {
            writeln!(f, "the last changes completed before it was called:")?;
            for o in &self.before {
                writeln!(f, "  {}", describe(o))?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bad = self.keys.iter().filter(|k| k.violation.is_some()).count();
        writeln!(
            f,
            "{} operations on {} keys ({} unknown, {} failed): {}",
            self.ops,
            self.keys.len(),
            self.unknown,
            self.failed,
            if bad == 0 {
                "linearizable".to_owned()
            } else {
                format!("{bad} key(s) NOT linearizable")
            }
        )?;
        if let Some(v) = self.first_violation() {
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A linearizable history by construction: operations take effect at increasing
    /// instants, each inside an interval around it that overlaps its neighbours'.
    fn generated(n: usize, seed: u64) -> Vec<Operation> {
        let mut x = seed;
        let mut next = move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 33
        };
        let mut state = Value::Null;
        (0..n)
            .map(|i| {
                let at = (i as i64) * 100;
                let (call, ret) = (at - (next() % 250) as i64, at + (next() % 250) as i64);
                let write = next() % 3 == 0;
                let kind = if write { Kind::Write } else { Kind::Read };
                let value = if write { json!(i) } else { Value::Null };
                if write {
                    state = value.clone();
                }
                Operation {
                    client: (i % 7) as i64,
                    op: kind,
                    key: "K:v".into(),
                    value,
                    expected: Value::Null,
                    call_ns: call,
                    return_ns: ret,
                    outcome: Outcome::Ok,
                    result: if write { Value::Null } else { state.clone() },
                    line: i + 1,
                }
            })
            .collect()
    }

    #[test]
    fn long_generated_histories() {
        for seed in 1..=3 {
            let ops = generated(3000, seed);
            let report = check_history(&ops);
            assert!(report.is_linearizable(), "seed {seed}:\n{report}");
            // A read of a value nobody wrote cannot be explained; the report points at it.
            let mut broken = ops.clone();
            let i = broken
                .iter()
                .rposition(|o| o.op == Kind::Read && o.line > 2000)
                .expect("a read");
            broken[i].result = json!(-1);
            let report = check_history(&broken);
            let v = report.first_violation().expect("violation");
            assert_eq!(v.culprit.line, broken[i].line, "{report}");
        }
    }
}
