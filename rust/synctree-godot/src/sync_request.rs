//! `SyncRequest`: the handle GDScript awaits for one synced operation.

use godot::prelude::*;

/// The outcome of one `SyncedTree` call, delivered later.
///
/// `completed` is always emitted from a later `SyncedTree._process`, never inside the call,
/// so `await tree.set_synced(...).completed` right after the call is safe. A write completes
/// once it is committed by a quorum and applied to this server's live scene tree.
///
/// ```gdscript
/// var req := $World.set_synced(^"Player", &"health", 90)
/// var outcome = await req.completed   # [ok, result_or_error]
/// if not req.ok:
///     push_error(req.error)
/// ```
#[derive(GodotClass)]
#[class(base=RefCounted, init)]
pub struct SyncRequest {
    base: Base<RefCounted>,
    /// True once the request finished, successfully or not.
    #[var]
    done: bool,
    /// True if the request succeeded (valid once `done`).
    #[var]
    ok: bool,
    /// The value read by `read_synced`; null for writes and failures.
    #[var]
    result: Variant,
    /// Why the request failed; empty on success.
    #[var]
    error: GString,
    /// After a failure: true when the operation may still have taken effect (its outcome is
    /// unknown: the request timed out, the leader was lost, the server stopped), false when
    /// it certainly did not (refused, invalid). A retry of a write that may have been applied
    /// should be idempotent (set the same value) or a `compare_and_set`.
    #[var]
    maybe_applied: bool,
}

/// Why a request failed, and whether it may have taken effect all the same.
pub(crate) struct Failure {
    pub message: String,
    pub maybe_applied: bool,
}

impl Failure {
    /// A failure that certainly changed nothing.
    pub fn refused(message: String) -> Self {
        Failure {
            message,
            maybe_applied: false,
        }
    }
}

#[godot_api]
impl SyncRequest {
    /// Emitted once: `ok`, then the read value (reads), null (writes) or the error text.
    #[signal]
    fn completed(ok: bool, result: Variant);
}

impl SyncRequest {
    pub(crate) fn new() -> Gd<SyncRequest> {
        SyncRequest::new_gd()
    }

    /// Records the outcome and emits `completed`.
    pub(crate) fn finish(this: &mut Gd<SyncRequest>, outcome: Result<Variant, Failure>) {
        let (ok, payload) = {
            let mut r = this.bind_mut();
            r.done = true;
            match outcome {
                Ok(v) => {
                    r.ok = true;
                    r.result = v.clone();
                    (true, v)
                }
                Err(e) => {
                    r.ok = false;
                    r.maybe_applied = e.maybe_applied;
                    r.error = GString::from(e.message.as_str());
                    (false, r.error.to_variant())
                }
            }
        };
        this.signals().completed().emit(ok, &payload);
    }
}
