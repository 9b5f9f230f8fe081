//! `synctree`: operator commands for a synctree cluster.
//!
//! ```text
//! synctree certs --out certs/ --nodes 1,2,3          # cluster CA + one certificate per server
//! synctree certs --out certs/ --operator             # the operator's certificate (node-0)
//! synctree membership --certs certs/ --server 1@10.0.0.1:7001 show
//! synctree membership ... add-learner 4 10.0.0.4:7001   # a server started with --synctree-join
//! synctree membership ... promote 4                     # once it caught up: a voter
//! synctree membership ... remove 2                      # e.g. a dead server
//! ```
//! Copy `ca.pem`, `node-<id>.pem` and `node-<id>.key` to server `<id>` and point its
//! `synctree/security/certs_dir` (or `--synctree-certs=DIR`) at them. Keep `ca.key` offline:
//! it is only needed to issue certificates for new servers.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use synctree_net::certs;
use synctree_runtime::{parse_peers, AdminClient, MembershipChange};

#[derive(Parser)]
#[command(
    name = "synctree",
    version,
    about = "Operator commands for a synctree cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the cluster CA (if missing) and certificates for servers and the operator.
    Certs {
        /// Folder for ca.pem, ca.key and node-<id>.pem/.key.
        #[arg(long)]
        out: PathBuf,
        /// Server ids, comma separated: 1,2,3.
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<u64>,
        /// Also the operator's certificate (node-0), which `synctree membership` uses.
        #[arg(long)]
        operator: bool,
    },
    /// Show or change the servers of a running cluster (as the operator).
    Membership {
        /// Folder with ca.pem and the operator's node-0.pem / node-0.key.
        #[arg(long)]
        certs: PathBuf,
        /// Any running server, as ID@ADDRESS (it passes changes to the leader).
        #[arg(long)]
        server: String,
        #[command(subcommand)]
        action: Action,
    },
}

#[derive(Subcommand)]
enum Action {
    /// The server's view: leader, term, voters, learners, indexes.
    Show,
    /// Add a server (started with --synctree-join) as a learner: it receives the log.
    AddLearner { id: u64, address: String },
    /// Make a learner a voter, once it has caught up.
    Promote { id: u64 },
    /// Remove a server (voter or learner), e.g. one that died for good.
    Remove { id: u64 },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Certs {
            out,
            nodes,
            operator,
        } => certs_command(out, nodes, operator),
        Command::Membership {
            certs,
            server,
            action,
        } => membership(certs, &server, action),
    }
}

fn certs_command(out: PathBuf, nodes: Vec<u64>, operator: bool) -> Result<()> {
    if nodes.is_empty() && !operator {
        bail!("nothing to make: give --nodes 1,2,3 and/or --operator");
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    if certs::ca_cert_path(&out).exists() {
        println!("using the existing cluster CA in {}", out.display());
    } else {
        certs::generate_ca(&out).context("generating the cluster CA")?;
        println!("created cluster CA {}", certs::ca_cert_path(&out).display());
    }
    for id in nodes {
        if id == synctree_net::OPERATOR_ID {
            bail!("server ids start at 1 (node-0 is the operator: use --operator)");
        }
        certs::generate_node(&out, id).with_context(|| format!("certificate for server {id}"))?;
        println!("created {}", certs::node_cert_path(&out, id).display());
    }
    if operator {
        certs::generate_node(&out, synctree_net::OPERATOR_ID)
            .context("the operator's certificate")?;
        println!(
            "created {} (the operator's certificate: keep it as safe as ca.key)",
            certs::node_cert_path(&out, synctree_net::OPERATOR_ID).display()
        );
    }
    Ok(())
}

fn membership(certs: PathBuf, server: &str, action: Action) -> Result<()> {
    let parsed = parse_peers(server).with_context(|| format!("--server {server}"))?;
    let [(id, addr)] = parsed.as_slice() else {
        bail!("--server takes one server as ID@ADDRESS, got '{server}'");
    };
    let client = AdminClient::connect(&certs, *id, *addr)?;
    let change = match action {
        Action::Show => {
            let s = client.status()?;
            println!(
                "server {}: leader {}, term {}, voters {:?}, learners {:?}, last log {}, commit {}, applied {}; \
                 eventual writes relayed: {} datagrams, {} writes reliably, {} settling copies",
                s.id,
                s.leader.map_or("none".to_owned(), |l| l.to_string()),
                s.term,
                s.voters,
                s.learners,
                s.last_log_index,
                s.commit_index,
                s.applied_index,
                s.relay_datagrams,
                s.relay_eventual_reliably,
                s.relay_eventual_settled
            );
            return Ok(());
        }
        Action::AddLearner { id, address } => MembershipChange::AddLearner { id, addr: address },
        Action::Promote { id } => MembershipChange::Promote { id },
        Action::Remove { id } => MembershipChange::Remove { id },
    };
    let m = client.change(change.clone())?;
    println!(
        "{change}: done at log index {}; voters {:?}, learners {:?}",
        m.index, m.voters, m.learners
    );
    Ok(())
}
