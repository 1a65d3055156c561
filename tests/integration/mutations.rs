//! Text mutations for property tests: random edits of valid inputs get deeper into a parser
//! than random text. Shared by the IPC frame decoder's tests here and the config parser's unit
//! tests (src/config includes this file by path).

use proptest::prelude::*;

/// 2000 cases per property; `PROPTEST_CASES=100000` for a longer run. Failures are not
/// persisted to files (the printed minimal case is the record).
pub fn fuzz_config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Pieces of TOML and of this config's vocabulary, for text that gets deep into the parser.
pub const TOKENS: &[&str] = &[
    "[backend]",
    "[health]",
    "[restart]",
    "[stop]",
    "[logs]",
    "[strays]",
    "[notify]",
    "[[backend]]",
    "command",
    "args",
    "cwd",
    "env",
    "port",
    "url",
    "interval",
    "timeout",
    "unhealthy_after",
    "policy",
    "backoff_initial",
    "max_restarts",
    "grace",
    "max_size",
    "keep",
    "action",
    "adopt",
    "comand",
    " = ",
    "=",
    "\"",
    "'",
    "'''",
    "\"\"\"",
    "[",
    "]",
    "{",
    "}",
    ",",
    ".",
    "\n",
    " ",
    "#",
    "\\",
    "\"500ms\"",
    "\"0ms\"",
    "\"1m30s\"",
    "\"10MB\"",
    "\"512KiB\"",
    "\"-1s\"",
    "\"\"",
    "\"on-failure\"",
    "\"always\"",
    "\"kill\"",
    "true",
    "false",
    "0",
    "-1",
    "65536",
    "54112",
    "18446744073709551616",
    "1e400",
    "nan",
    "inf",
    "2026-11-23T21:30:00Z",
    "\u{feff}",
    "\u{0}",
    "é",
    "🦀",
];

/// An edit of a text: delete a range, insert a token, duplicate or swap lines.
#[derive(Debug, Clone)]
pub enum Edit {
    Delete(usize, usize),
    Insert(usize, &'static str),
    Byte(usize, u8),
    DuplicateLine(usize),
    SwapLines(usize, usize),
}

pub fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0usize..40).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), proptest::sample::select(TOKENS)).prop_map(|(at, t)| Edit::Insert(at, t)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Byte(at, b)),
        any::<usize>().prop_map(Edit::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
    ]
}

pub fn apply(base: &str, edits: &[Edit]) -> String {
    let mut bytes = base.as_bytes().to_vec();
    for edit in edits {
        let len = bytes.len().max(1);
        match *edit {
            Edit::Delete(at, n) => {
                let at = at % len;
                let end = (at + n).min(bytes.len());
                if at < end {
                    bytes.drain(at..end);
                }
            }
            Edit::Insert(at, token) => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, token.bytes());
            }
            Edit::Byte(at, b) => {
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] = b;
                }
            }
            Edit::DuplicateLine(n) | Edit::SwapLines(n, _) => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let mut lines: Vec<&str> = text.lines().collect();
                if !lines.is_empty() {
                    let a = n % lines.len();
                    match *edit {
                        Edit::SwapLines(_, m) => {
                            let b = m % lines.len();
                            lines.swap(a, b)
                        }
                        _ => {
                            let line = lines[a];
                            lines.insert(a, line)
                        }
                    }
                }
                bytes = lines.join("\n").into_bytes();
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}
