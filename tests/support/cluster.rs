//! Starting, killing and restarting headless Godot servers, and waiting on them.

use crate::control::Control;
use crate::godot::{extension_library, godot_binary, godot_project};
use crate::relay::Relay;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Log markers that fail a run wherever they appear (gdext reports a caught panic as
/// `ERROR: [panic ...]`).
pub const FATAL_MARKERS: [&str; 3] = ["SCRIPT ERROR", "panicked", "[panic "];
const READY_MARKER: &str = "SYNCTREE READY id=";

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub servers: usize,
    /// `--synctree-fsync=`; true is the default of a real deployment.
    pub fsync: bool,
    /// Extra Godot (engine) arguments, placed before `--`.
    pub godot_args: Vec<String>,
    /// How long a server may take to print READY.
    pub ready_timeout: Duration,
    /// Keep the temp folder (logs, data) after the cluster is dropped.
    pub keep_dir: bool,
    /// Servers reach each other through a fault-injecting [`Relay`] (see [`Cluster::relay`]).
    pub relay: bool,
    /// Extra user args (after `--`) of single servers: (id, arg).
    pub server_args: Vec<(u64, String)>,
    /// Headless Godot game clients to start after the servers: for each, the server it
    /// connects to first (it knows the others too). Servers then open a client port.
    pub clients: Vec<u64>,
    /// The scenes clients may spawn (`--synctree-spawnable`).
    pub spawnable: Vec<String>,
    /// Game clients that present another token than the one the servers admit: (n, token).
    pub client_tokens: Vec<(u64, String)>,
    /// More tokens the servers admit (clients run by the test itself, e.g. a load).
    pub extra_tokens: Vec<String>,
    /// Clients reach servers through ENet, set up the Godot way (`multiplayer.multiplayer_peer
    /// = ENetMultiplayerPeer` on both sides, on each server's client port) instead of
    /// synctree's QUIC client port.
    pub enet: bool,
    /// With `enet`: no synctree configuration at all (no `--synctree-*` args but the
    /// control port), as a SceneMultiplayer game starts: the server's ENet server peer
    /// starts a one-server cluster, clients join through their ENet peers without tokens.
    pub bare: bool,
    /// Each game client reaches its first server through a [`Relay`] link that records the
    /// traffic (see [`Cluster::client_relay`]; the client is `CLIENT_LINK + n` there).
    pub client_relay: bool,
    /// User args (after `--`) of every process, servers and clients.
    pub all_args: Vec<String>,
    /// With `enet` and `bare`: WebSocket peers instead of ENet (on the client port's number,
    /// over TCP).
    pub websocket: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            servers: 3,
            fsync: true,
            godot_args: Vec::new(),
            ready_timeout: Duration::from_secs(60),
            keep_dir: std::env::var_os("SYNCTREE_KEEP_LOGS").is_some(),
            relay: false,
            server_args: Vec::new(),
            clients: Vec::new(),
            spawnable: Vec::new(),
            client_tokens: Vec::new(),
            extra_tokens: Vec::new(),
            enet: false,
            bare: false,
            client_relay: false,
            all_args: Vec::new(),
            websocket: false,
        }
    }
}

/// One server (or game client) process and its fixed ports and folders (kept across
/// restarts).
pub struct Server {
    pub id: u64,
    pub quic_port: u16,
    /// The client port of a server (UDP), when the cluster has game clients.
    pub client_port: u16,
    pub control_port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
    /// Log length when the current process started (READY must appear after it).
    log_offset: u64,
}

impl Server {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// Which process: server `id`, or game client `n` (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Who {
    Server(u64),
    Client(u64),
}

impl From<u64> for Who {
    /// A bare id names a server.
    fn from(id: u64) -> Who {
        Who::Server(id)
    }
}

impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Who::Server(id) => write!(f, "server {id}"),
            Who::Client(n) => write!(f, "client {n}"),
        }
    }
}

/// Server args giving every game client of servers 1..=`servers` a request budget of `rate`
/// per second, in bursts of `burst` (for [`ClusterConfig::server_args`]).
pub fn client_limits(servers: u64, rate: u32, burst: u32) -> Vec<(u64, String)> {
    (1..=servers)
        .flat_map(|id| {
            [
                (id, format!("--synctree-client-rate={rate}")),
                (id, format!("--synctree-client-burst={burst}")),
            ]
        })
        .collect()
}

/// The token of game client `n` (each client its own identity).
pub fn client_token(n: u64) -> String {
    format!("player-{n}-token")
}

/// The id of game client `n` on the client relay's links (servers keep their ids).
pub const fn client_link(n: u64) -> u64 {
    1000 + n
}

/// A set of headless Godot servers forming one SyncedTree cluster on loopback, and the game
/// clients connected to them.
pub struct Cluster {
    pub servers: Vec<Server>,
    pub clients: Vec<Server>,
    godot: PathBuf,
    dir: Option<tempfile::TempDir>,
    dir_path: PathBuf,
    config: ClusterConfig,
    relay: Option<Relay>,
    client_relay: Option<Relay>,
}

impl Cluster {
    /// Starts every server and waits until each printed READY.
    pub fn start(config: ClusterConfig) -> Result<Cluster> {
        extension_library()?;
        let godot = godot_binary()?;
        let dir = tempfile::Builder::new().prefix("synctree-e2e-").tempdir()?;
        let dir_path = dir.path().to_path_buf();
        let ports = free_ports(config.servers + config.clients.len())?;
        let process = |i: usize, kind: &str, id: u64| {
            let (quic_port, control_port, client_port) = ports[i];
            Server {
                id,
                quic_port,
                client_port,
                control_port,
                data_dir: dir_path.join(format!("data-{kind}{id}")),
                log_path: dir_path.join(format!("{kind}-{id}.log")),
                child: None,
                log_offset: 0,
            }
        };
        let servers = (0..config.servers)
            .map(|i| process(i, "server", i as u64 + 1))
            .collect::<Vec<Server>>();
        let clients = (0..config.clients.len())
            .map(|i| process(config.servers + i, "client", i as u64 + 1))
            .collect::<Vec<Server>>();
        let relay = if config.relay {
            let quic: Vec<(u64, u16)> = servers.iter().map(|s| (s.id, s.quic_port)).collect();
            Some(Relay::start(&quic)?)
        } else {
            None
        };
        let client_relay = if config.client_relay {
            let links: Vec<(u64, u64, u16)> = config
                .clients
                .iter()
                .enumerate()
                .map(|(i, first)| {
                    let port = servers[(*first - 1) as usize].client_port;
                    (client_link(i as u64 + 1), *first, port)
                })
                .collect();
            Some(Relay::links(&links)?)
        } else {
            None
        };
        let mut cluster = Cluster {
            client_relay,
            servers,
            clients,
            godot,
            dir: Some(dir),
            dir_path,
            config,
            relay,
        };
        for id in cluster.ids() {
            cluster.spawn(id)?;
        }
        for id in cluster.ids() {
            cluster.wait_ready(id)?;
        }
        for n in 1..=cluster.clients.len() as u64 {
            cluster.launch(Who::Client(n))?;
        }
        for n in 1..=cluster.clients.len() as u64 {
            cluster.wait_ready_of(Who::Client(n))?;
        }
        Ok(cluster)
    }

    /// Starts one more server that joins the running cluster (`--synctree-join`, the others
    /// as its peers) and waits until it is ready; returns its id. It takes part once a
    /// membership change adds it.
    pub fn add_joining_server(&mut self) -> Result<u64> {
        if self.relay.is_some() {
            bail!("a cluster with a relay cannot grow (the relay has fixed links)");
        }
        let id = self.servers.len() as u64 + 1;
        let (quic_port, control_port, client_port) = free_ports(1)?[0];
        self.servers.push(Server {
            id,
            quic_port,
            client_port,
            control_port,
            data_dir: self.dir_path.join(format!("data-server{id}")),
            log_path: self.dir_path.join(format!("server-{id}.log")),
            child: None,
            log_offset: 0,
        });
        self.config
            .server_args
            .push((id, "--synctree-join=true".into()));
        self.spawn(id)?;
        self.wait_ready(id)?;
        Ok(id)
    }

    /// The relay between game clients and their first servers, if the cluster has one.
    pub fn client_relay(&self) -> Option<&Relay> {
        self.client_relay.as_ref()
    }

    /// The relay between the servers, if the cluster was started with one.
    pub fn relay(&self) -> Option<&Relay> {
        self.relay.as_ref()
    }

    /// The folder with the logs, data directories and certificates.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    pub fn godot(&self) -> &Path {
        &self.godot
    }

    pub fn ids(&self) -> Vec<u64> {
        self.servers.iter().map(|s| s.id).collect()
    }

    /// Ids of the servers whose process runs.
    pub fn live_ids(&self) -> Vec<u64> {
        self.servers
            .iter()
            .filter(|s| s.is_running())
            .map(|s| s.id)
            .collect()
    }

    pub fn server(&self, id: u64) -> &Server {
        self.process(Who::Server(id))
    }

    /// The process of a server or game client.
    pub fn process(&self, who: Who) -> &Server {
        match who {
            Who::Server(id) => &self.servers[(id - 1) as usize],
            Who::Client(n) => &self.clients[(n - 1) as usize],
        }
    }

    fn process_mut(&mut self, who: Who) -> &mut Server {
        match who {
            Who::Server(id) => &mut self.servers[(id - 1) as usize],
            Who::Client(n) => &mut self.clients[(n - 1) as usize],
        }
    }

    /// The command line of game client `n`: its first server, then the others.
    pub fn client_command_line(&self, n: u64) -> Vec<String> {
        let first = self.config.clients[(n - 1) as usize];
        let mut order = vec![first];
        order.extend(self.ids().into_iter().filter(|id| *id != first));
        let addr = |id: u64| match &self.client_relay {
            Some(r) if id == first => r.addr(client_link(n), id).to_string(),
            _ => format!("127.0.0.1:{}", self.server(id).client_port),
        };
        let connect: Vec<String> = order
            .iter()
            .map(|id| format!("{id}@{}", addr(*id)))
            .collect();
        let transport = if self.config.enet {
            let kind = if self.config.websocket { "ws" } else { "enet" };
            vec![format!("--demo-{kind}-connect={}", addr(first))]
        } else {
            vec![
                format!("--synctree-connect={}", connect.join(",")),
                format!(
                    "--synctree-ca={}",
                    self.dir_path.join("certs").join("ca.pem").display()
                ),
            ]
        };
        let control = format!(
            "--synctree-control={}",
            self.process(Who::Client(n)).control_port
        );
        let mut args: Vec<String> = [
            "--headless",
            "--path",
            &godot_project().display().to_string(),
            "res://server.tscn",
            "--",
        ]
        .map(str::to_owned)
        .into();
        args.extend(self.config.all_args.iter().cloned());
        if self.config.bare {
            args.extend([control]);
            args.extend(transport);
            return args;
        }
        args.extend([
            format!(
                "--synctree-token={}",
                self.config
                    .client_tokens
                    .iter()
                    .find(|(c, _)| *c == n)
                    .map(|(_, t)| t.clone())
                    .unwrap_or_else(|| client_token(n))
            ),
            control,
        ]);
        args.extend(transport);
        args
    }

    /// The command line of server `id`.
    pub fn command_line(&self, id: u64) -> Vec<String> {
        let s = self.server(id);
        let peers: Vec<String> = self
            .servers
            .iter()
            .filter(|p| p.id != id)
            .map(|p| match &self.relay {
                Some(relay) => format!("{}@{}", p.id, relay.addr(id, p.id)),
                None => format!("{}@127.0.0.1:{}", p.id, p.quic_port),
            })
            .collect();
        let mut args = vec![
            "--headless".to_owned(),
            "--path".to_owned(),
            godot_project().display().to_string(),
        ];
        args.extend(self.config.godot_args.iter().cloned());
        if self.config.bare {
            args.extend([
                "res://server.tscn".to_owned(),
                "--".to_owned(),
                format!("--synctree-control={}", s.control_port),
                if self.config.websocket {
                    format!("--demo-ws-listen={}", s.client_port)
                } else {
                    format!("--demo-enet-listen={}", s.client_port)
                },
            ]);
            args.extend(self.config.all_args.iter().cloned());
            return args;
        }
        args.extend([
            "res://server.tscn".to_owned(),
            "--".to_owned(),
            format!("--synctree-id={id}"),
            format!("--synctree-listen=127.0.0.1:{}", s.quic_port),
            format!("--synctree-peers={}", peers.join(",")),
            format!(
                "--synctree-dev-certs={}",
                self.dir_path.join("certs").display()
            ),
            format!("--synctree-data-dir={}", s.data_dir.display()),
            format!("--synctree-fsync={}", self.config.fsync),
            format!("--synctree-control={}", s.control_port),
        ]);
        if !self.config.clients.is_empty() || !self.config.extra_tokens.is_empty() {
            let mut tokens: Vec<String> = (1..=self.config.clients.len() as u64)
                .map(client_token)
                .collect();
            tokens.extend(self.config.extra_tokens.iter().cloned());
            args.extend([
                if self.config.enet {
                    format!("--demo-enet-listen={}", s.client_port)
                } else {
                    format!("--synctree-client-listen=127.0.0.1:{}", s.client_port)
                },
                format!("--synctree-client-tokens={}", tokens.join(",")),
                format!("--synctree-spawnable={}", self.config.spawnable.join(",")),
            ]);
        }
        args.extend(
            self.config
                .server_args
                .iter()
                .filter(|(sid, _)| *sid == id)
                .map(|(_, a)| a.clone()),
        );
        args.extend(self.config.all_args.iter().cloned());
        args
    }

    fn spawn(&mut self, id: u64) -> Result<()> {
        self.launch(Who::Server(id))
    }

    /// Starts the process of a server or game client, its output appended to its log.
    fn launch(&mut self, who: Who) -> Result<()> {
        let args = match who {
            Who::Server(id) => self.command_line(id),
            Who::Client(n) => self.client_command_line(n),
        };
        let godot = self.godot.clone();
        let server = self.process_mut(who);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&server.log_path)
            .with_context(|| format!("cannot open {}", server.log_path.display()))?;
        server.log_offset = log.seek(SeekFrom::End(0))?;
        let child = Command::new(&godot)
            .args(&args)
            // A panic still prints its backtrace under RUST_BACKTRACE=1, but gdext's debug
            // borrow tracking does not capture one on every bind (it slows a server ~3x).
            .env("RUST_LIB_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("cannot start {}", godot.display()))?;
        server.child = Some(child);
        Ok(())
    }

    /// Waits until server `id` printed READY (after its latest start).
    pub fn wait_ready(&mut self, id: u64) -> Result<()> {
        self.wait_ready_of(Who::Server(id))
    }

    /// Waits until a server or game client printed READY (after its latest start).
    pub fn wait_ready_of(&mut self, who: Who) -> Result<()> {
        let deadline = Instant::now() + self.config.ready_timeout;
        loop {
            let (path, offset) = {
                let s = self.process(who);
                (s.log_path.clone(), s.log_offset)
            };
            if read_from(&path, offset)?.contains(READY_MARKER) {
                return Ok(());
            }
            if let Some(child) = self.process_mut(who).child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.process_mut(who).child = None;
                    bail!(
                        "{who} exited ({status}) before it was ready\n{}",
                        self.log_tail_of(who, 40)
                    );
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{who} printed no READY line within {:?}\n{}",
                    self.config.ready_timeout,
                    self.log_tail_of(who, 40)
                );
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// A new control connection to game client `n`.
    pub fn client_control(&self, n: u64) -> Result<Control> {
        Control::connect(
            self.process(Who::Client(n)).control_port,
            Duration::from_secs(5),
        )
        .with_context(|| format!("client {n}"))
    }

    /// Waits until every live server and game client returns the same dump; returns it.
    pub fn wait_all_converged(&self, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut dumps = self.dumps();
            for n in 1..=self.clients.len() as u64 {
                // Clients are numbered after the servers in failure messages.
                let id = self.servers.len() as u64 + n;
                dumps.push((id, self.client_control(n).and_then(|mut c| c.dump())));
            }
            let texts: Vec<&String> = dumps.iter().filter_map(|(_, d)| d.as_ref().ok()).collect();
            if texts.len() == dumps.len() && texts.iter().all(|d| *d == texts[0]) {
                return Ok(texts[0].clone());
            }
            if Instant::now() > deadline {
                bail!(
                    "servers and clients did not converge within {timeout:?} (clients are \
                     numbered after the servers)\n{}\n{}",
                    first_difference(&dumps),
                    self.log_tails(30)
                );
            }
            sleep(Duration::from_millis(200));
        }
    }

    /// The OS process id of server `id`, if it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.server(id).child.as_ref().map(|c| c.id())
    }

    /// `kill -9` server `id`.
    pub fn kill(&mut self, id: u64) -> Result<()> {
        if let Some(mut child) = self.process_mut(Who::Server(id)).child.take() {
            child.kill().ok();
            child.wait()?;
        }
        Ok(())
    }

    /// Starts server `id` again from its data directory and waits until it is ready.
    pub fn restart(&mut self, id: u64) -> Result<()> {
        if self.server(id).is_running() {
            bail!("server {id} is still running");
        }
        self.spawn(id)?;
        self.wait_ready(id)
    }

    /// A new control connection to server `id`.
    pub fn control(&self, id: u64) -> Result<Control> {
        Control::connect(self.server(id).control_port, Duration::from_secs(5))
            .with_context(|| format!("server {id}"))
    }

    /// `status()` of every live server, by id.
    pub fn statuses(&self) -> Vec<(u64, Result<Value>)> {
        self.live_ids()
            .into_iter()
            .map(|id| (id, self.control(id).and_then(|mut c| c.status())))
            .collect()
    }

    /// Waits until every live server names the same leader, and that leader says it leads.
    pub fn wait_leader(&self, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses = self.statuses();
            let leaders: Vec<u64> = statuses
                .iter()
                .filter_map(|(_, s)| s.as_ref().ok())
                .map(|s| s.get("leader").and_then(Value::as_u64).unwrap_or(0))
                .collect();
            if leaders.len() == statuses.len() && !leaders.is_empty() {
                let l = leaders[0];
                if l != 0 && leaders.iter().all(|&x| x == l) {
                    let leads = statuses.iter().any(|(id, s)| {
                        *id == l
                            && s.as_ref()
                                .ok()
                                .and_then(|s| s.get("is_leader"))
                                .and_then(Value::as_bool)
                                == Some(true)
                    });
                    if leads {
                        return Ok(l);
                    }
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "no agreed leader within {timeout:?}; last statuses: {statuses:?}\n{}",
                    self.log_tails(30)
                );
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every live server returns the same dump; returns it.
    pub fn wait_converged(&self, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let dumps = self.dumps();
            let texts: Vec<&String> = dumps.iter().filter_map(|(_, d)| d.as_ref().ok()).collect();
            if texts.len() == dumps.len()
                && !texts.is_empty()
                && texts.iter().all(|d| *d == texts[0])
            {
                return Ok(texts[0].clone());
            }
            if Instant::now() > deadline {
                let summary: Vec<String> = dumps
                    .iter()
                    .map(|(id, d)| match d {
                        Ok(d) => format!("server {id}: {} lines", d.lines().count()),
                        Err(e) => format!("server {id}: {e:#}"),
                    })
                    .collect();
                let statuses: Vec<String> = self
                    .statuses()
                    .into_iter()
                    .map(|(id, s)| format!("server {id}: {:?}", s.map_err(|e| e.to_string())))
                    .collect();
                bail!(
                    "dumps did not converge within {timeout:?}: {}\n{}\n{}",
                    summary.join("; "),
                    statuses.join("\n"),
                    first_difference(&dumps)
                );
            }
            sleep(Duration::from_millis(200));
        }
    }

    /// `dump()` of every live server, by id.
    pub fn dumps(&self) -> Vec<(u64, Result<String>)> {
        self.live_ids()
            .into_iter()
            .map(|id| (id, self.control(id).and_then(|mut c| c.dump())))
            .collect()
    }

    /// Fails if any log holds a `SCRIPT ERROR` or a Rust panic.
    pub fn check_logs(&self) -> Result<()> {
        let mut problems = Vec::new();
        for s in self.servers.iter().chain(&self.clients) {
            let text = read_from(&s.log_path, 0)?;
            for (n, line) in text.lines().enumerate() {
                if FATAL_MARKERS.iter().any(|m| line.contains(m)) {
                    problems.push(format!("{} line {}: {line}", s.log_path.display(), n + 1));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(anyhow!("{}\n{}", problems.join("\n"), self.log_tails(30)))
        }
    }

    /// The last `lines` lines of server `id`'s log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        self.log_tail_of(Who::Server(id), lines)
    }

    /// The last `lines` lines of a server's or game client's log.
    pub fn log_tail_of(&self, who: Who, lines: usize) -> String {
        let s = self.process(who);
        let text = read_from(&s.log_path, 0).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let tail = &all[all.len().saturating_sub(lines)..];
        format!(
            "--- last {} lines of {} ---\n{}\n",
            tail.len(),
            s.log_path.display(),
            tail.join("\n")
        )
    }

    pub fn log_tails(&self, lines: usize) -> String {
        let clients = (1..=self.clients.len() as u64).map(Who::Client);
        self.ids()
            .into_iter()
            .map(Who::Server)
            .chain(clients)
            .map(|who| self.log_tail_of(who, lines))
            .collect()
    }

    /// Asks every live server to quit, then kills those still running after a grace period.
    pub fn stop(&mut self) {
        for n in 1..=self.clients.len() as u64 {
            if self.process(Who::Client(n)).is_running() {
                if let Ok(mut c) = self.client_control(n) {
                    let _ = c.quit();
                }
            }
        }
        for id in self.live_ids() {
            if let Ok(mut c) = self.control(id) {
                let _ = c.quit();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for s in self.servers.iter_mut().chain(self.clients.iter_mut()) {
            if let Some(mut child) = s.child.take() {
                loop {
                    match child.try_wait() {
                        Ok(Some(_)) => break,
                        Ok(None) if Instant::now() < deadline => sleep(Duration::from_millis(50)),
                        _ => {
                            child.kill().ok();
                            child.wait().ok();
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Keeps the temp folder after the cluster is dropped (to read the logs); returns it.
    pub fn keep_dir(&mut self) -> PathBuf {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
        self.dir_path.clone()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in self.servers.iter_mut().chain(self.clients.iter_mut()) {
            if let Some(mut child) = s.child.take() {
                child.kill().ok();
                child.wait().ok();
            }
        }
        if self.config.keep_dir || std::thread::panicking() {
            let dir = self.keep_dir();
            eprintln!("server logs and data kept in {}", dir.display());
        }
    }
}

/// `count` triples of (UDP port for QUIC, TCP port for control, UDP port for game
/// clients, TCP too for WebSocket), all distinct and free now (see
/// [`synctree_net::ports::unused_port`]).
fn free_ports(count: usize) -> Result<Vec<(u16, u16, u16)>> {
    let port = |tcp| synctree_net::ports::unused_port(tcp).context("a free port");
    (0..count)
        .map(|_| Ok((port(false)?, port(true)?, port(true)?)))
        .collect()
}

fn read_from(path: &Path, offset: u64) -> Result<String> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The first line where two dumps differ, for failure messages.
fn first_difference(dumps: &[(u64, Result<String>)]) -> String {
    let ok: Vec<(u64, &String)> = dumps
        .iter()
        .filter_map(|(id, d)| d.as_ref().ok().map(|d| (*id, d)))
        .collect();
    let Some((base_id, base)) = ok.first() else {
        return String::new();
    };
    for (id, other) in ok.iter().skip(1) {
        let a: Vec<&str> = base.lines().collect();
        let b: Vec<&str> = other.lines().collect();
        for i in 0..a.len().max(b.len()) {
            let (x, y) = (a.get(i), b.get(i));
            if x != y {
                return format!(
                    "first difference at dump line {}: server {base_id}: {:?} / server {id}: {:?}",
                    i + 1,
                    x,
                    y
                );
            }
        }
    }
    String::new()
}
