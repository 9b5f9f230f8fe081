//! End-to-end harness: several headless Godot servers (`godot_project/server.tscn`) over real
//! QUIC on loopback, driven through the line-based JSON control port of `server.gd`.
//!
//! ```text
//!   test / cargo xtask demo
//!      │ Cluster::start(n)          spawn `godot --headless ... -- --synctree-id=i ...`,
//!      │                            logs in a temp dir, wait for "SYNCTREE READY"
//!      │ Control (TcpStream)  ───▶  {"cmd":"batch","ops":[...]} / status / dump / quit
//!      │ kill(id) / restart(id)     SIGKILL, then start again from the same data directory
//!      ▼ check_logs()               no "SCRIPT ERROR", no "panicked"
//! ```
//!
//! Needs the built extension (`cargo xtask build`) and a Godot 4 binary (`GODOT4_BIN`, else
//! `tools/provision-godot.sh` finds or provisions one).

mod cluster;
mod control;
mod dump;
mod godot;
mod history;
mod relay;

pub use cluster::{client_limits, client_link, client_token, Cluster, ClusterConfig, Server, Who};
pub use control::{BatchReply, Control, Op, OpResult};
pub use dump::{parse_dump, DumpNode};
pub use godot::{
    extension_library, godot_binary, godot_project, provision_godot, repo_root, EXTENSION_SO,
};
pub use history::{ClientRun, Recorder};
pub use relay::{Relay, Traffic};
