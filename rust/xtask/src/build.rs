//! `cargo xtask build`: the extension into the addon, and godot_project ready to load it.
//!
//! A first `godot --import` (or `--editor --quit`) of a project with a gdext extension crashes
//! on exit, so `.godot/extension_list.cfg` is written by hand, and `--import` only runs when a
//! `class_name` script needs the global class cache.

use crate::process::{cargo, run, run_captured};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use synctree_e2e::{godot_project, EXTENSION_SO};

const GDEXTENSION: &str = "res://addons/synctree/synctree.gdextension";
const LIBRARY: &str = "libsynctree_godot.so";

/// Builds the extension and installs it; returns the installed library.
pub fn build(release: bool) -> Result<PathBuf> {
    let root = crate::repo_root();
    let profile = if release { "release" } else { "debug" };
    eprintln!("xtask: building the extension (cargo build -p synctree-godot, {profile})...");
    let mut cmd = cargo();
    cmd.current_dir(&root)
        .args(["build", "-p", "synctree-godot"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)?;

    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    };
    let built = target.join(profile).join(LIBRARY);
    if !built.is_file() {
        bail!(
            "cargo built synctree-godot but {} is missing",
            built.display()
        );
    }
    let dest = root.join(EXTENSION_SO);
    install(&built, &dest)?;
    eprintln!("xtask: installed {} -> {}", built.display(), EXTENSION_SO);
    prepare_project()?;
    Ok(dest)
}

/// Copies through a temporary file and renames, so a running Godot keeps its mapped copy.
fn install(from: &Path, to: &Path) -> Result<()> {
    let dir = to.parent().context("library path without a folder")?;
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{LIBRARY}.tmp"));
    fs::copy(from, &tmp)
        .with_context(|| format!("cannot copy {} to {}", from.display(), tmp.display()))?;
    fs::rename(&tmp, to).with_context(|| format!("cannot move {} into place", tmp.display()))?;
    Ok(())
}

/// Writes `.godot/extension_list.cfg` and, if `class_name` scripts need it, the class cache.
pub fn prepare_project() -> Result<()> {
    let project = godot_project();
    if !project
        .join("addons/synctree/synctree.gdextension")
        .is_file()
    {
        bail!(
            "{} does not lead to the addon: it should be a relative symlink to ../../addons/synctree",
            project.join("addons/synctree").display()
        );
    }
    let dot_godot = project.join(".godot");
    fs::create_dir_all(&dot_godot)?;
    fs::write(
        dot_godot.join("extension_list.cfg"),
        format!("{GDEXTENSION}\n"),
    )?;
    if has_class_name_scripts(&project)?
        && !dot_godot.join("global_script_class_cache.cfg").is_file()
    {
        import(&project)?;
    }
    Ok(())
}

fn has_class_name_scripts(dir: &Path) -> Result<bool> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            if has_class_name_scripts(&path)? {
                return Ok(true);
            }
        } else if name.ends_with(".gd") {
            let text = fs::read_to_string(&path).unwrap_or_default();
            if text.lines().any(|l| l.starts_with("class_name ")) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// `godot --headless --import`, tolerating its crash on exit if the class cache was written.
fn import(project: &Path) -> Result<()> {
    let godot = crate::godot::godot()?;
    eprintln!(
        "xtask: class_name scripts found: importing the project for the global class cache..."
    );
    let captured = run_captured(
        Command::new(&godot)
            .current_dir(project)
            .args(["--headless", "--path"])
            .arg(project)
            .arg("--import"),
        Duration::from_secs(300),
    )?;
    let cache = project.join(".godot/global_script_class_cache.cfg");
    match captured.status {
        Some(s) if s.success() => Ok(()),
        _ if cache.is_file() => {
            eprintln!(
                "xtask: godot --import exited badly ({:?}) but wrote the class cache; going on",
                captured.status
            );
            Ok(())
        }
        other => bail!(
            "godot --import failed ({other:?}) without writing {}",
            cache.display()
        ),
    }
}
