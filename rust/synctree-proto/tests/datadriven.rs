//! Data-driven cases: op sequences and the expected outcomes and dumps, in `testdata/*.txt`.
//!
//! Each case is `command args...`, a line `----`, the expected output, and a blank line:
//! ```text
//! spawn parent= name=A scene=Node hp=5
//! ----
//! ok
//! ```
//! Commands: `spawn parent=P name=N scene=S [owner=PEER] [prop=value ...]`, `despawn path=P`,
//! `set path=P prop=NAME value=V`, `get path=P prop=NAME`, `dump`. Values are `5`, `1.5`,
//! `true`, `null`, `"text"` or `v2(x,y)`. Any write may end in `as=PEER`: it is then made on
//! behalf of that game client (else of a server).

use synctree_proto::{Op, ShadowTree, Value, SERVER_PEER};

fn parse_value(text: &str) -> Value {
    if text == "null" {
        Value::Nil
    } else if text == "true" || text == "false" {
        Value::Bool(text == "true")
    } else if let Some(s) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Value::String(s.to_owned())
    } else if let Some(inner) = text.strip_prefix("v2(").and_then(|t| t.strip_suffix(')')) {
        let xs: Vec<f32> = inner
            .split(',')
            .map(|x| x.trim().parse().expect("v2 component"))
            .collect();
        Value::Vector2([xs[0], xs[1]])
    } else if text.contains('.') || text.contains('e') {
        Value::Float(text.parse().unwrap_or_else(|_| panic!("bad float {text}")))
    } else {
        Value::Int(text.parse().unwrap_or_else(|_| panic!("bad value {text}")))
    }
}

fn args(words: &[&str]) -> Vec<(String, String)> {
    words
        .iter()
        .map(|w| {
            let (k, v) = w
                .split_once('=')
                .unwrap_or_else(|| panic!("expected key=value, got {w}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn arg(args: &[(String, String)], key: &str) -> String {
    args.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("missing {key}="))
}

/// Removes `key=PEER` from the arguments; the servers' peer when absent.
fn take_peer(args: &mut Vec<(String, String)>, key: &str) -> u64 {
    match args.iter().position(|(k, _)| k == key) {
        Some(i) => args.remove(i).1.parse().expect("a peer id"),
        None => SERVER_PEER,
    }
}

fn run(tree: &mut ShadowTree, command: &str) -> String {
    let words: Vec<&str> = command.split_whitespace().collect();
    let mut a = args(&words[1..]);
    let peer = take_peer(&mut a, "as");
    let owner = take_peer(&mut a, "owner");
    let op = match words[0] {
        "dump" => return tree.dump().trim_end().to_owned(),
        "get" => {
            return match tree.get(&arg(&a, "path"), &arg(&a, "prop")) {
                Some(v) => v.canonical(),
                None => "none".to_owned(),
            }
        }
        "spawn" => Op::Spawn {
            parent: arg(&a, "parent"),
            name: arg(&a, "name"),
            scene: arg(&a, "scene"),
            props: a
                .iter()
                .filter(|(k, _)| !["parent", "name", "scene"].contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), parse_value(v)))
                .collect(),
            owner,
        },
        "despawn" => Op::Despawn {
            path: arg(&a, "path"),
        },
        "set" => Op::SetProperty {
            path: arg(&a, "path"),
            property: arg(&a, "prop"),
            value: parse_value(&arg(&a, "value")),
        },
        other => panic!("unknown command {other}"),
    };
    match tree.apply_as(peer, op) {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("error: {e}"),
    }
}

#[test]
fn testdata() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("testdata dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let mut cases = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read case file");
        let mut tree = ShadowTree::new();
        let mut lines = text.lines().enumerate().peekable();
        while let Some((n, line)) = lines.next() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            assert_eq!(
                lines.next().map(|(_, l)| l),
                Some("----"),
                "{}:{}: expected ----",
                file.display(),
                n + 1
            );
            let mut expected = Vec::new();
            while let Some((_, l)) = lines.peek() {
                if l.is_empty() {
                    break;
                }
                expected.push(*l);
                lines.next();
            }
            let got = run(&mut tree, line);
            assert_eq!(
                got,
                expected.join("\n"),
                "{}:{}: {line}",
                file.display(),
                n + 1
            );
            cases += 1;
        }
    }
    assert!(cases >= 20, "only {cases} data-driven cases ran");
}
