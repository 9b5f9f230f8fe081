//! Checks that a recorded history of operations on synctree is linearizable.
//!
//! ```text
//!   history.jsonl (one operation per line,   ──► parse ──► per key: Wing & Gong search
//!   see docs/history-format.md)                            (Lowe's cache, `unknown` ops may
//!                                                           take effect or not)
//!                                                      ──► Report: ok, or the first violation
//! ```
//!
//! Linearizability is local (Herlihy & Wing): a history is linearizable iff the history of
//! each key is, so keys are checked apart. Each key is a register: `write`, `read` and `cas`
//! on `"<node path>:<property>"`, and `spawn` / `despawn` on `"<node path>:"` (the node's
//! existence). An operation whose outcome is `fail` did not take effect and is left out; one
//! whose outcome is `unknown` (a timeout, a lost connection) may have taken effect at any
//! moment after its call, or never.

mod history;
mod linearize;
mod model;
mod report;

pub use history::{parse_history, HistoryError, Kind, Operation, Outcome};
pub use linearize::check_key;
pub use model::State;
pub use report::{check_history, KeyReport, Report, Violation};
