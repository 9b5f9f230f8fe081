//! `synctree`: operator commands for a synctree cluster.
//!
//! ```text
//! synctree certs --out certs/ --nodes 1,2,3   # cluster CA + one certificate per server
//! ```
//! Copy `ca.pem`, `node-<id>.pem` and `node-<id>.key` to server `<id>` and point its
//! `synctree/security/certs_dir` (or `--synctree-certs=DIR`) at them. Keep `ca.key` offline:
//! it is only needed to issue certificates for new servers.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use synctree_net::certs;

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
    /// Create the cluster CA (if missing) and a certificate for each listed server.
    Certs {
        /// Folder for ca.pem, ca.key and node-<id>.pem/.key.
        #[arg(long)]
        out: PathBuf,
        /// Server ids, comma separated: 1,2,3.
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<u64>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Certs { out, nodes } => {
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            if certs::ca_cert_path(&out).exists() {
                println!("using the existing cluster CA in {}", out.display());
            } else {
                certs::generate_ca(&out).context("generating the cluster CA")?;
                println!("created cluster CA {}", certs::ca_cert_path(&out).display());
            }
            for id in nodes {
                if id == 0 {
                    bail!("server ids start at 1");
                }
                certs::generate_node(&out, id)
                    .with_context(|| format!("certificate for server {id}"))?;
                println!("created {}", certs::node_cert_path(&out, id).display());
            }
            Ok(())
        }
    }
}
