//! Property tests of the config parser: it never panics and always names the file. (Moving
//! into src/config/ beside the parser; this copy goes at that merge.)
//!
//! Property tests run 2000 cases each; `PROPTEST_CASES=100000` runs longer.

use std::path::Path;

use backend_warden::config::Config;
use proptest::prelude::*;

// ---------------------------------------------------------------------------- fuzzing

/// 2000 cases per property; `PROPTEST_CASES=100000` for a longer run. Failures are not
/// persisted to files (the printed minimal case is the record).
fn fuzz_config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A valid config using every section.
const FULL_CONFIG: &str = r#"[backend]
command = "python"
args = ["-m", "uvicorn", "app:app", "--reload", "--port", "54112"]
cwd = 'C:\src\our-api'
env = { PYTHONUNBUFFERED = "1", APP_ENV = "dev" }
port = 54112

[health]
url = "http://127.0.0.1:54112/health"
interval = "2s"
timeout = "1s"
unhealthy_after = 3
restart_after = "1m30s"
start_timeout = "60s"

[restart]
policy = "on-failure"
backoff_initial = "500ms"
backoff_max = "30s"
max_restarts = 5
window = "60s"
stable_after = "10s"

[stop]
grace = "5s"

[logs]
dir = "logs"
max_size = "10MB"
keep = 5

[strays]
scan_interval = "5s"
action = "notify"
adopt = false
cmdline_contains = ["app:app"]
exe_name = "python"

[notify]
crashed = true
recovered = false
"#;

/// Pieces of TOML and of this config's vocabulary, for text that gets deep into the parser.
const TOKENS: &[&str] = &[
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

fn token_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(TOKENS), 0..80).prop_map(|t| t.concat())
}

/// An edit of a text: delete a range, insert a token, duplicate or swap lines.
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, &'static str),
    Byte(usize, u8),
    DuplicateLine(usize),
    SwapLines(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0usize..40).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), proptest::sample::select(TOKENS)).prop_map(|(at, t)| Edit::Insert(at, t)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Byte(at, b)),
        any::<usize>().prop_map(Edit::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
    ]
}

fn apply(base: &str, edits: &[Edit]) -> String {
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

/// The parser either accepts the text or says why, naming the file: it never panics.
fn parse_checked(text: &str) {
    let path = Path::new("/fuzz/config.toml");
    if let Err(e) = Config::parse(text, path) {
        let message = e.to_string();
        assert!(
            message.starts_with("/fuzz/config.toml"),
            "error without the file name: {message}"
        );
    }
}

#[test]
fn the_full_config_of_the_property_tests_is_valid() {
    Config::parse(FULL_CONFIG, Path::new("config.toml")).unwrap();
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn config_parser_never_panics_on_arbitrary_text(text in any::<String>()) {
        parse_checked(&text);
    }

    #[test]
    fn config_parser_never_panics_on_toml_like_text(text in token_text()) {
        parse_checked(&text);
    }

    #[test]
    fn config_parser_never_panics_on_mutated_valid_configs(
        full in any::<bool>(),
        edits in proptest::collection::vec(edit(), 1..6),
    ) {
        let base = if full { FULL_CONFIG } else { backend_warden::config::template() };
        parse_checked(&apply(base, &edits));
    }
}
