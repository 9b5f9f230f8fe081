//! Which Godot 4 binary is used: `tools/provision-godot.sh` decides (`$GODOT4_BIN`, then `godot`
//! on PATH if it is 4.x, then a provisioned copy in a cache folder) and says so on stderr.

use anyhow::Result;
use std::path::PathBuf;

/// Finds or provisions Godot 4; exports `GODOT4_BIN` for child processes; returns the path.
pub fn godot() -> Result<PathBuf> {
    eprintln!("xtask: finding Godot 4 (tools/provision-godot.sh; a first provisioning downloads ~200 MB)...");
    let path = synctree_e2e::provision_godot()?;
    // The script has said on stderr where this Godot comes from and its version.
    eprintln!("xtask: using Godot at {}", path.display());
    // Set before this process starts any thread; the e2e harness and tests read it.
    std::env::set_var("GODOT4_BIN", &path);
    Ok(path)
}
