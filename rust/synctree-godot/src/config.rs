//! Where a SyncedTree's configuration comes from: command-line user args (after `--`) win,
//! then the node's exported properties, then project settings under `synctree/...`.
//!
//! A SyncedTree is a server (a Raft member) unless it is given servers to connect to
//! (`--synctree-connect`, `connect_to`, `synctree/client/connect`): then it is a game client.

use godot::classes::{Os, ProjectSettings};
use godot::prelude::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use synctree_runtime::{
    offset_system_clock, parse_id, parse_peers, ClientsConfig, GameClientConfig, MemNetwork,
    RaftTuning, ServerConfig, StorageMode, TlsSource, TransportMode,
};

/// The exported properties of a SyncedTree, as plain values.
pub struct Exported {
    pub node_id: i64,
    pub listen_address: String,
    pub peers: String,
    pub data_dir: String,
    pub in_memory: bool,
    pub fsync: bool,
    pub certs_dir: String,
    pub dev_certs_dir: String,
    pub client_listen: String,
    pub spawnable_scenes: Vec<String>,
    pub connect_to: String,
    pub token: String,
    pub ca_file: String,
}

/// What a SyncedTree runs as.
pub enum Mode {
    Server(Box<ServerConfig>),
    Client(GameClientConfig),
    /// Neither a server id nor servers to connect to: it waits for the game to set a
    /// multiplayer peer (a server peer makes it a one-server cluster, a client peer a game
    /// client through that peer).
    Unconfigured,
}

fn user_args() -> HashMap<String, String> {
    let mut out = HashMap::new();
    for arg in Os::singleton().get_cmdline_user_args().as_slice() {
        let arg = arg.to_string();
        if let Some(rest) = arg.strip_prefix("--synctree-") {
            let (k, v) = rest.split_once('=').unwrap_or((rest, "true"));
            out.insert(k.to_owned(), v.to_owned());
        }
    }
    out
}

fn setting(name: &str) -> Option<String> {
    let ps = ProjectSettings::singleton();
    let key = format!("synctree/{name}");
    if !ps.has_setting(&key) {
        return None;
    }
    let v = ps.get_setting(&key);
    let s = v.stringify().to_string();
    (!s.is_empty() && s != "0" && !v.is_nil()).then_some(s)
}

fn globalize(path: &str) -> PathBuf {
    PathBuf::from(
        ProjectSettings::singleton()
            .globalize_path(path)
            .to_string(),
    )
}

fn parse_bool(what: &str, v: &str) -> Result<bool, String> {
    match v {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("invalid {what} '{v}': expected true or false")),
    }
}

/// A comma-separated list, without empty items.
fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Resolves the configuration: a server's, or a game client's. Errors name the setting and
/// the bad value.
pub fn resolve(e: &Exported) -> Result<Mode, String> {
    resolve_with(e, user_args())
}

/// The configuration of a server started because the game created a server multiplayer
/// peer: what is configured, with server id 1 and in-memory storage (a game's fresh state
/// on each start, as SceneMultiplayer's) unless an id or a data directory is set.
pub fn resolve_one_server(e: &Exported) -> Result<ServerConfig, String> {
    let mut args = user_args();
    let data_dir_set = args.contains_key("data-dir")
        || !e.data_dir.is_empty()
        || setting("storage/data_dir").is_some();
    if e.node_id <= 0 && setting("network/node_id").is_none() {
        args.entry("id".into()).or_insert_with(|| "1".into());
    }
    if !data_dir_set {
        args.entry("in-memory".into())
            .or_insert_with(|| "true".into());
    }
    match resolve_with(e, args)? {
        Mode::Server(cfg) => Ok(*cfg),
        Mode::Client(_) => Err(
            "this SyncedTree is configured as a game client (it has servers to connect to)".into(),
        ),
        Mode::Unconfigured => Err("internal error: no server id after defaulting it".into()),
    }
}

/// The token a game client presents through the game's multiplayer peer: the configured one
/// (`--synctree-token`, `token`, `synctree/client/token`), else none (the caller makes an
/// anonymous one).
pub fn client_token(e: &Exported) -> Option<String> {
    user_args()
        .get("token")
        .cloned()
        .or_else(|| (!e.token.is_empty()).then(|| e.token.clone()))
        .or_else(|| setting("client/token"))
}

fn resolve_with(e: &Exported, args: HashMap<String, String>) -> Result<Mode, String> {
    let pick = |arg: &str, exported: &str, setting_name: &str| -> Option<String> {
        args.get(arg)
            .cloned()
            .or_else(|| (!exported.is_empty()).then(|| exported.to_owned()))
            .or_else(|| setting(setting_name))
    };
    if let Some(connect) = pick("connect", &e.connect_to, "client/connect") {
        let servers = parse_peers(&connect).map_err(|e| e.to_string())?;
        if servers.is_empty() {
            return Err(format!("--synctree-connect '{connect}' names no server"));
        }
        let token = pick("token", &e.token, "client/token").ok_or(
            "a game client needs a token: pass --synctree-token=T, set token on the SyncedTree, \
             or set synctree/client/token",
        )?;
        let ca = pick("ca", &e.ca_file, "client/ca_file").ok_or(
            "a game client needs the cluster CA certificate: pass --synctree-ca=PATH (ca.pem \
             from `synctree certs`), set ca_file on the SyncedTree, or set synctree/client/ca_file",
        )?;
        return Ok(Mode::Client(GameClientConfig {
            servers,
            ca: globalize(&ca),
            token,
        }));
    }
    let id_given = pick(
        "id",
        &if e.node_id > 0 {
            e.node_id.to_string()
        } else {
            String::new()
        },
        "network/node_id",
    )
    .is_some();
    if !id_given && pick("peers", &e.peers, "network/peers").is_none() {
        return Ok(Mode::Unconfigured);
    }
    server_config(e, &args, &pick).map(|c| Mode::Server(Box::new(c)))
}

/// Game clients served by a server: on its QUIC client port if it has one, and through the
/// game's multiplayer peer.
fn clients_config(
    e: &Exported,
    args: &HashMap<String, String>,
    pick: &dyn Fn(&str, &str, &str) -> Option<String>,
) -> Result<ClientsConfig, String> {
    let listen = match pick("client-listen", &e.client_listen, "clients/listen") {
        Some(text) => Some(
            text.parse::<SocketAddr>()
                .map_err(|err| format!("invalid client listen address '{text}': {err}"))?,
        ),
        None => None,
    };
    let mut tokens = args
        .get("client-tokens")
        .map(|t| list(t))
        .unwrap_or_default();
    if let Some(file) = args
        .get("client-tokens-file")
        .cloned()
        .or_else(|| setting("clients/tokens_file"))
    {
        let path = globalize(&file);
        let text = std::fs::read_to_string(&path).map_err(|err| {
            format!(
                "cannot read the client tokens file {}: {err}",
                path.display()
            )
        })?;
        tokens.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    let mut cfg = match listen {
        Some(listen) if tokens.is_empty() => {
            return Err(format!(
                "the client port {listen} admits no one: give tokens with synctree/clients/tokens_file \
                 (one per line) or --synctree-client-tokens=T1,T2"
            ))
        }
        Some(listen) => ClientsConfig::new(listen, tokens),
        None => ClientsConfig::attached_only(tokens),
    };
    cfg.spawnable = match args.get("spawnable") {
        Some(v) => list(v),
        None if !e.spawnable_scenes.is_empty() => e.spawnable_scenes.clone(),
        None => setting_list("clients/spawnable"),
    };
    let number = |arg: &str, name: &str, default: u32| -> Result<u32, String> {
        match args.get(arg).cloned().or_else(|| setting(name)) {
            None => Ok(default),
            Some(v) => v.trim().parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                format!("invalid --synctree-{arg} / synctree/{name} '{v}': expected a positive whole number")
            }),
        }
    };
    cfg.rate_per_second = number(
        "client-rate",
        "clients/rate_per_second",
        cfg.rate_per_second,
    )?;
    cfg.burst = number("client-burst", "clients/burst", cfg.burst)?;
    Ok(cfg)
}

/// A project setting holding a list of strings (a PackedStringArray or an Array).
fn setting_list(name: &str) -> Vec<String> {
    let ps = ProjectSettings::singleton();
    let key = format!("synctree/{name}");
    if !ps.has_setting(&key) {
        return Vec::new();
    }
    match ps.get_setting(&key).try_to::<PackedStringArray>() {
        Ok(a) => a.as_slice().iter().map(|s| s.to_string()).collect(),
        Err(_) => Vec::new(),
    }
}

fn server_config(
    e: &Exported,
    args: &HashMap<String, String>,
    pick: &dyn Fn(&str, &str, &str) -> Option<String>,
) -> Result<ServerConfig, String> {
    let id_text = pick("id", &if e.node_id > 0 { e.node_id.to_string() } else { String::new() }, "network/node_id")
        .ok_or("no server id: pass --synctree-id=N, set node_id on the SyncedTree, or set synctree/network/node_id")?;
    let id = parse_id(&id_text).map_err(|e| e.to_string())?;
    let peers = parse_peers(&pick("peers", &e.peers, "network/peers").unwrap_or_default())
        .map_err(|e| e.to_string())?;
    let listen_text = pick("listen", &e.listen_address, "network/listen_address")
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listen: SocketAddr = listen_text
        .parse()
        .map_err(|err| format!("invalid listen address '{listen_text}': {err}"))?;

    let in_memory = match args.get("in-memory") {
        Some(v) => parse_bool("--synctree-in-memory", v)?,
        None => e.in_memory,
    };
    let fsync = match args.get("fsync") {
        Some(v) => parse_bool("--synctree-fsync", v)?,
        None => match setting("storage/fsync") {
            Some(v) => parse_bool("synctree/storage/fsync", &v)?,
            None => e.fsync,
        },
    };
    let storage = if in_memory {
        StorageMode::InMemory
    } else {
        let dir = pick("data-dir", &e.data_dir, "storage/data_dir")
            .unwrap_or_else(|| format!("user://synctree/{id}"));
        StorageMode::Dir {
            dir: globalize(&dir),
            fsync,
        }
    };

    let certs =
        pick("certs", &e.certs_dir, "security/certs_dir").map(|d| TlsSource::Dir(globalize(&d)));
    let dev = pick("dev-certs", &e.dev_certs_dir, "security/dev_certs_dir")
        .map(|d| TlsSource::Dev(globalize(&d)));
    let transport = match certs.or(dev) {
        Some(tls) => TransportMode::Quic { listen, tls },
        None if peers.is_empty() => {
            godot_print!("synctree: server {id} has no peers and no certificates: running as a one-server cluster without a network endpoint");
            TransportMode::Mem(MemNetwork::new())
        }
        None => {
            return Err(format!(
                "server {id} has peers but no certificates: set synctree/security/certs_dir (made by `synctree certs`) \
                 or, for development only, --synctree-dev-certs=DIR"
            ))
        }
    };
    let mut cfg = ServerConfig::new(id, peers, storage, transport);
    cfg.tuning = tuning(args, cfg.tuning)?;
    if let Some(v) = args
        .get("workers")
        .cloned()
        .or_else(|| setting("runtime/worker_threads"))
    {
        cfg.worker_threads = v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=64).contains(n))
            .ok_or_else(|| {
                format!(
                    "invalid --synctree-workers / synctree/runtime/worker_threads '{v}': \
                     expected a whole number from 1 to 64"
                )
            })?;
    }
    cfg.clients = Some(clients_config(e, args, pick)?);
    cfg.join = match args
        .get("join")
        .cloned()
        .or_else(|| setting("network/join"))
    {
        Some(v) => parse_bool("--synctree-join / synctree/network/join", &v)?,
        None => false,
    };
    if let Some(v) = args.get("clock-offset-ms") {
        let ms: i64 = v.trim().parse().map_err(|_| {
            format!("invalid --synctree-clock-offset-ms '{v}': expected whole milliseconds (may be negative)")
        })?;
        godot_warn!(
            "synctree: server {id} runs with its clock offset by {ms} ms (--synctree-clock-offset-ms, for fault tests)"
        );
        cfg.hooks.clock = offset_system_clock(ms);
    }
    Ok(cfg)
}

/// Raft timing from `--synctree-<arg>=N` or `synctree/raft/<setting>`, checked together.
fn tuning(args: &HashMap<String, String>, mut t: RaftTuning) -> Result<RaftTuning, String> {
    let number = |arg: &str, name: &str, default: u64| -> Result<u64, String> {
        match args.get(arg).cloned().or_else(|| setting(&format!("raft/{name}"))) {
            None => Ok(default),
            Some(v) => v.trim().parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                format!(
                    "invalid --synctree-{arg} / synctree/raft/{name} '{v}': expected a positive whole number"
                )
            }),
        }
    };
    let ms = |d: Duration| d.as_millis() as u64;
    let heartbeat = number("heartbeat-ms", "heartbeat_ms", ms(t.heartbeat))?;
    let min = number(
        "election-min-ms",
        "election_timeout_min_ms",
        ms(t.election_min),
    )?;
    let max = number(
        "election-max-ms",
        "election_timeout_max_ms",
        ms(t.election_max),
    )?;
    if min <= heartbeat || max <= min {
        return Err(format!(
            "invalid Raft timing: need heartbeat_ms < election_timeout_min_ms < \
             election_timeout_max_ms (synctree/raft/...), got {heartbeat} / {min} / {max}"
        ));
    }
    t.heartbeat = Duration::from_millis(heartbeat);
    t.election_min = Duration::from_millis(min);
    t.election_max = Duration::from_millis(max);
    t.snapshot_every = number("snapshot-every", "snapshot_every", t.snapshot_every)?;
    t.pipeline = number("pipeline", "pipeline", t.pipeline as u64)? as usize;
    Ok(t)
}
