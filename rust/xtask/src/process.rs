//! Running child processes: plainly, or with a timeout while their output is both shown and
//! kept for inspection.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The cargo that runs this xtask.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs `cmd` with inherited stdio; fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

/// What a captured run produced.
pub struct Captured {
    /// None when it was killed at the timeout.
    pub status: Option<ExitStatus>,
    /// stdout and stderr interleaved by line.
    pub output: String,
}

/// Runs `cmd`, echoing its stdout and stderr line by line while keeping them; kills it after
/// `timeout`.
pub fn run_captured(cmd: &mut Command, timeout: Duration) -> Result<Captured> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {shown}"))?;
    let output = Arc::new(Mutex::new(String::new()));
    let mut readers = Vec::new();
    let pipes: [(Box<dyn Read + Send>, bool); 2] = [
        (Box::new(child.stdout.take().expect("piped")), false),
        (Box::new(child.stderr.take().expect("piped")), true),
    ];
    for (pipe, is_err) in pipes {
        let output = Arc::clone(&output);
        readers.push(thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                let text = String::from_utf8_lossy(&line);
                if is_err {
                    let _ = std::io::stderr().write_all(text.as_bytes());
                } else {
                    let _ = std::io::stdout().write_all(text.as_bytes());
                }
                output.lock().unwrap().push_str(&text);
                line.clear();
            }
        }));
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            eprintln!("xtask: {shown} did not finish within {timeout:?}; killing it");
            child.kill().ok();
            child.wait().ok();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    for r in readers {
        let _ = r.join();
    }
    let output = output.lock().unwrap().clone();
    Ok(Captured { status, output })
}
