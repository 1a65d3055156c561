//! One text file a teammate can send to a developer: the status, the last lines of both logs,
//! the config with secrets redacted, port holders, strays and versions. Used by the tray's
//! *Save diagnostics…* and `backend-warden diagnose`. Reads files; imports only the status
//! types.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::status::StatusReport;

/// How many lines of each log go in.
pub const LOG_LINES: usize = 500;

/// Key names whose values are never written out.
const SECRET_WORDS: &[&str] = &["token", "secret", "password", "passwd", "key", "credential"];

/// Whether a config key names a secret (`API_KEY`, `db_password`, `token`).
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_lowercase();
    SECRET_WORDS.iter().any(|w| key.contains(w))
}

/// `config` (TOML text) with the value of every key that names a secret replaced by
/// `"<redacted>"`, at any depth (`[backend.env]`, inline tables). A file that does not parse
/// is redacted line by line.
pub fn redact_config(config: &str) -> String {
    match config.parse::<toml::Table>() {
        Ok(mut table) => {
            redact_table(&mut table);
            toml::to_string_pretty(&table).unwrap_or_else(|_| redact_lines(config))
        }
        Err(_) => redact_lines(config),
    }
}

fn redact_table(table: &mut toml::Table) {
    for (key, value) in table.iter_mut() {
        if is_secret_key(key) {
            *value = toml::Value::String("<redacted>".into());
        } else {
            redact_value(value);
        }
    }
}

fn redact_value(value: &mut toml::Value) {
    match value {
        toml::Value::Table(table) => redact_table(table),
        toml::Value::Array(items) => items.iter_mut().for_each(redact_value),
        _ => {}
    }
}

fn redact_lines(config: &str) -> String {
    config
        .lines()
        .map(|line| match line.split_once('=') {
            Some((key, _)) if is_secret_key(key) => {
                format!("{} = \"<redacted>\"", key.trim_end())
            }
            // An inline table on one line may hold a secret anywhere: drop the whole value.
            Some((key, value))
                if value.contains('{')
                    && SECRET_WORDS
                        .iter()
                        .any(|w| value.to_lowercase().contains(w)) =>
            {
                format!("{} = \"<redacted: holds a secret>\"", key.trim_end())
            }
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The last `n` lines of a text file, or why there are none.
fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

/// Everything a developer needs to see what happened, as one text.
pub fn report(status: Option<&StatusReport>, config_path: &Path, log_dir: &Path) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Backend Warden diagnostics\nversion {} ({} {})\nwritten {}\n",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH,
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
    );
    let _ = writeln!(out, "== status");
    match status {
        Some(status) => {
            let _ = writeln!(out, "{}\n", status.details());
            let _ = writeln!(
                out,
                "== status --json\n{}\n",
                serde_json::to_string_pretty(status).unwrap_or_default()
            );
        }
        None => {
            let _ = writeln!(out, "the warden is not running\n");
        }
    }
    let _ = writeln!(
        out,
        "== config {} (secrets redacted)",
        config_path.display()
    );
    match std::fs::read_to_string(config_path) {
        Ok(text) => {
            let _ = writeln!(out, "{}\n", redact_config(&text));
        }
        Err(e) => {
            let _ = writeln!(out, "({e}: the built-in demo backend runs)\n");
        }
    }
    for name in ["warden.log", "backend.log"] {
        let _ = writeln!(out, "== {name}: last {LOG_LINES} lines");
        let _ = writeln!(out, "{}\n", tail(&log_dir.join(name), LOG_LINES));
    }
    out
}

/// Where a diagnostics file goes for a teammate to find it: the Desktop, else Downloads, else
/// the home folder, else `fallback`; the name carries the time.
pub fn default_file(fallback: &Path) -> PathBuf {
    let folder = directories::UserDirs::new()
        .and_then(|dirs| {
            [
                dirs.desktop_dir(),
                dirs.download_dir(),
                Some(dirs.home_dir()),
            ]
            .into_iter()
            .flatten()
            .find(|dir| dir.is_dir())
            .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| fallback.to_path_buf());
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace([':', 'T'], "-")
        .trim_end_matches('Z')
        .to_string();
    folder.join(format!("backend-warden-diagnostics-{stamp}.txt"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let config = "[backend]\ncommand = \"python\"\nenv = { API_KEY = \"abc123\", MODE = \"dev\" }\n\n\
                      [backend.extra]\ndb_password = \"hunter2\"\ntoken = \"t0k\"\n";
        let out = redact_config(config);
        for secret in ["abc123", "hunter2", "t0k"] {
            assert!(!out.contains(secret), "{secret} leaked:\n{out}");
        }
        assert!(
            out.contains("MODE = \"dev\"") && out.contains("python"),
            "{out}"
        );
        // A file that does not parse is redacted line by line.
        let broken = "port = \"54112\nsecret_key = \"s3\"\nenv = { DB_PASSWORD = \"p\" }\nname = 1";
        let out = redact_config(broken);
        assert!(!out.contains("s3") && !out.contains("\"p\""), "{out}");
        assert!(out.contains("name = 1"), "{out}");
    }
}
