//! The history format: one JSON object per line (see `docs/history-format.md`).

use serde::Deserialize;
use serde_json::Value;
use std::io::BufRead;

/// What an operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Write,
    Read,
    Cas,
    Spawn,
    Despawn,
}

/// How an operation ended, as its client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It took effect (a read: `result` is what it read).
    Ok,
    /// It certainly did not take effect.
    Fail,
    /// It may or may not have taken effect (timeout, lost connection).
    Unknown,
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    pub client: i64,
    pub op: Kind,
    /// `"<node path>:<property>"`, or `"<node path>:"` for spawn / despawn.
    pub key: String,
    /// The value written (write, cas).
    #[serde(default)]
    pub value: Value,
    /// The value a cas expects.
    #[serde(default)]
    pub expected: Value,
    pub call_ns: i64,
    pub return_ns: i64,
    pub outcome: Outcome,
    /// What a read returned (`null`: never set).
    #[serde(default)]
    pub result: Value,
    /// The line of the history it came from (1-based), for reports.
    #[serde(skip)]
    pub line: usize,
}

/// A history that cannot be read; names the line and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("cannot read the history: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads a history, one operation per non-empty line.
pub fn parse_history(input: impl BufRead) -> Result<Vec<Operation>, HistoryError> {
    let mut ops = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line_no = i + 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| HistoryError::Line {
            line: line_no,
            message,
        };
        let mut op: Operation = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        op.line = line_no;
        if op.return_ns < op.call_ns {
            return Err(bad(format!(
                "return_ns {} is before call_ns {}",
                op.return_ns, op.call_ns
            )));
        }
        let Some((path, property)) = op.key.rsplit_once(':') else {
            return Err(bad(format!(
                "key '{}' is not '<node path>:<property>'",
                op.key
            )));
        };
        let node_op = matches!(op.op, Kind::Spawn | Kind::Despawn);
        if node_op != property.is_empty() || path.is_empty() {
            return Err(bad(format!(
                "key '{}': spawn and despawn take '<node path>:', the others '<node path>:<property>'",
                op.key
            )));
        }
        ops.push(op);
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_names_the_bad_line() {
        let good = r#"{"client":1,"op":"write","key":"A:hp","value":3,"call_ns":1,"return_ns":2,"outcome":"ok"}
{"client":2,"op":"read","key":"A:hp","call_ns":3,"return_ns":4,"outcome":"ok","result":3}"#;
        let ops = parse_history(good.as_bytes()).expect("parses");
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[1].result, Value::from(3));
        assert_eq!(ops[1].line, 2);

        for (text, wanted) in [
            ("{\"client\":1}\nnot json", "history line 1"),
            (
                "\n{\"client\":1,\"op\":\"write\",\"key\":\"A\",\"call_ns\":1,\"return_ns\":2,\"outcome\":\"ok\"}",
                "history line 2: key 'A'",
            ),
            (
                "{\"client\":1,\"op\":\"write\",\"key\":\"A:hp\",\"call_ns\":5,\"return_ns\":2,\"outcome\":\"ok\"}",
                "return_ns 2 is before call_ns 5",
            ),
            (
                "{\"client\":1,\"op\":\"spawn\",\"key\":\"A:hp\",\"call_ns\":1,\"return_ns\":2,\"outcome\":\"ok\"}",
                "spawn and despawn take",
            ),
            (
                "{\"client\":1,\"op\":\"jump\",\"key\":\"A:hp\",\"call_ns\":1,\"return_ns\":2,\"outcome\":\"ok\"}",
                "unknown variant `jump`",
            ),
        ] {
            let err = parse_history(text.as_bytes()).expect_err(text).to_string();
            assert!(err.contains(wanted), "{err} should contain {wanted}");
        }
    }
}
