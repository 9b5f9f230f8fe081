//! Hand-made histories in `testdata/`: `ok_*` must check as linearizable; `bad_*` must not,
//! and the report must contain the text in the matching `.expect` file (the culprit).

use std::fs;
use std::path::Path;
use synctree_check::{check_history, parse_history};

#[test]
fn hand_made_histories() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut seen = 0;
    let mut paths: Vec<_> = fs::read_dir(&dir)
        .expect("testdata")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    paths.sort();
    for path in paths {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_owned();
        let text = fs::read_to_string(&path).expect("read");
        let ops = parse_history(text.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let report = check_history(&ops);
        let shown = report.to_string();
        if name.starts_with("ok_") {
            assert!(
                report.is_linearizable(),
                "{name} should be linearizable:\n{shown}"
            );
        } else {
            assert!(
                !report.is_linearizable(),
                "{name} should NOT be linearizable:\n{shown}"
            );
            let expect = fs::read_to_string(path.with_extension("expect")).expect(".expect file");
            assert!(
                shown.contains(expect.trim()),
                "{name}: report should contain '{}':\n{shown}",
                expect.trim()
            );
        }
        seen += 1;
    }
    assert!(seen >= 6, "only {seen} histories");
}
