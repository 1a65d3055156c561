//! Text mutations for the config parser's property tests: random edits of valid configs get
//! deeper into the parser than random text.

use proptest::prelude::*;

pub(crate) use crate::fuzz::{Edit, fuzz_config};

/// Any edit, inserting a token of [`TOKENS`].
pub fn edit() -> impl Strategy<Value = Edit> {
    crate::fuzz::edit(TOKENS)
}

/// `base` with `edits` applied, as text.
pub fn apply(base: &str, edits: &[Edit]) -> String {
    String::from_utf8_lossy(&crate::fuzz::apply(base, edits)).into_owned()
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
