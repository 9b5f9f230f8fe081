//! Where the repository, the Godot binary and the built extension are.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The extension library inside the addon, relative to the repository root.
pub const EXTENSION_SO: &str = "addons/synctree/bin/libsynctree_godot.so";

/// The repository root (this crate lives in `<root>/tests`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The demo project the servers run.
pub fn godot_project() -> PathBuf {
    repo_root().join("godot_project")
}

/// The Godot 4 binary: `$GODOT4_BIN` if set, else the last stdout line of
/// `tools/provision-godot.sh` (which reports on stderr which Godot it picked).
pub fn godot_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("GODOT4_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("GODOT4_BIN={} is not a file", bin.display());
        }
        return Ok(bin);
    }
    provision_godot()
}

/// Runs `tools/provision-godot.sh` (which says on stderr which Godot it found or unpacked)
/// and returns the binary it printed.
pub fn provision_godot() -> Result<PathBuf> {
    let script = repo_root().join("tools/provision-godot.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed ({})", script.display(), out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty());
    match last {
        Some(path) => Ok(PathBuf::from(path.trim())),
        None => bail!("{} printed no Godot path", script.display()),
    }
}

/// The built extension inside the addon, with the project's extension list in place.
pub fn extension_library() -> Result<PathBuf> {
    let root = repo_root();
    let so = root.join(EXTENSION_SO);
    if !so.is_file() {
        bail!(
            "the synctree extension is not built: {} is missing. Run `cargo xtask build` first \
             (it builds the extension, copies it into the addon and prepares godot_project).",
            so.display()
        );
    }
    let list = godot_project().join(".godot/extension_list.cfg");
    if !list.is_file() {
        bail!(
            "{} is missing, so Godot would not load the extension. Run `cargo xtask build` first.",
            list.display()
        );
    }
    Ok(so)
}
