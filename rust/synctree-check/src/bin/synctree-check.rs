//! `synctree-check HISTORY.jsonl`: prints the verdict; exit 0 linearizable, 1 not, 2 when the
//! history cannot be read.

use std::io::BufReader;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: synctree-check HISTORY.jsonl  (format: docs/history-format.md)");
        return ExitCode::from(2);
    };
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "synctree-check: cannot open {}: {e}",
                path.to_string_lossy()
            );
            return ExitCode::from(2);
        }
    };
    match synctree_check::parse_history(BufReader::new(file)) {
        Ok(ops) => {
            let report = synctree_check::check_history(&ops);
            print!("{report}");
            if report.is_linearizable() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("synctree-check: {}: {e}", path.to_string_lossy());
            ExitCode::from(2)
        }
    }
}
