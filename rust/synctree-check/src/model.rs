//! The sequential specification of one key: a register, or a node's existence.

use crate::{Kind, Operation};
use serde_json::Value;

/// The state of one key: its value (`null`: never set), or for a node key whether the node
/// exists (`true`) or not (`null`).
pub type State = Value;

/// Applies `op` to `state` as the sequential specification says; `None` if `op` cannot
/// happen in this state (a read that returned something else, a cas whose expected value
/// is not there, a spawn of an existing node...).
pub fn step(state: &State, op: &Operation) -> Option<State> {
    match op.op {
        Kind::Write => Some(op.value.clone()),
        Kind::Read => (op.result == *state).then(|| state.clone()),
        Kind::Cas => (op.expected == *state).then(|| op.value.clone()),
        Kind::Spawn => state.is_null().then_some(Value::Bool(true)),
        Kind::Despawn => (!state.is_null()).then_some(Value::Null),
    }
}

/// True if `op` never changes state (it can be left out when its outcome is not known).
pub fn is_read_only(op: &Operation) -> bool {
    op.op == Kind::Read
}
