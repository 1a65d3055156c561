//! The status report: what `status --json` prints (its field names are an interface), and
//! its short human forms for the terminal and the tray. Pure data and formatting.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::strays::{PortHolder, Scan};
use crate::supervisor::{Health, LastExit, Snapshot, State};

/// A process that looks like our backend but is not the one the warden manages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stray {
    /// Its PID.
    pub pid: u32,
    /// Its executable name.
    pub name: String,
    /// Its command line.
    pub cmdline: String,
    /// Its working directory, if readable.
    pub cwd: Option<PathBuf>,
    /// When it started (seconds since the Unix epoch).
    pub started_at: u64,
    /// Resident memory in bytes.
    pub memory_bytes: u64,
    /// Whether it listens on the backend's port.
    pub holds_port: bool,
}

/// The running backend's code changed after it started (`status --json` → `stale`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleReport {
    /// When the first change happened (RFC 3339, UTC).
    pub since: String,
    /// How long ago that was, in milliseconds.
    pub since_ms: u64,
    /// The first few changed files, relative to the watched folder.
    pub files: Vec<String>,
    /// How many changes in all.
    pub count: usize,
}

/// Everything `status` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The engine's state.
    pub state: State,
    /// The backend's main process, if running.
    pub pid: Option<u32>,
    /// The port the backend serves, if known.
    pub port: Option<u16>,
    /// How long the current backend process has been up.
    pub uptime_ms: Option<u64>,
    /// Automatic restarts since the warden started.
    pub restarts: u32,
    /// How the last backend process ended.
    pub last_exit: Option<LastExit>,
    /// The latest health probe.
    pub health: Health,
    /// Copies of the backend the warden does not own.
    pub strays: Vec<Stray>,
    /// Everything listening on the backend's port (ours included; `alive: false` for a PID
    /// that has exited while its socket lives on).
    pub port_holders: Vec<PortHolder>,
    /// Why stray detection is off, if it is.
    pub strays_disabled: Option<String>,
    /// Why the engine is `failed`.
    pub failed_reason: Option<String>,
    /// Time left before the next start, in `backoff`.
    pub backoff_remaining_ms: Option<u64>,
    /// True when the built-in demo backend runs (no backend configured).
    pub demo: bool,
    /// True when the current backend was started outside the warden and adopted.
    pub adopted: bool,
    /// Set when the running backend's code changed since it started.
    pub stale: Option<StaleReport>,
    /// The backend's log file.
    pub log_path: PathBuf,
    /// The config file in use (it may not exist).
    pub config_path: PathBuf,
    /// The warden's version.
    pub version: String,
    /// The warden's own PID.
    pub warden_pid: u32,
    /// What the backend log has lost.
    #[serde(default)]
    pub logs: LogsReport,
}

/// What the backend log has lost (`status --json` → `logs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsReport {
    /// Lines of the backend's output that never reached `backend.log` (the writer could not
    /// keep up, or a write failed: a full disk, a vanished folder).
    pub dropped_lines: u64,
    /// The last write or rotation error, if there was one.
    pub last_error: Option<String>,
}

/// The parts of a report the engine does not report: set at start, and the backend's port and
/// demo flag again at each config reload.
#[derive(Debug, Clone)]
pub struct Fixed {
    /// See [`StatusReport::port`].
    pub port: Option<u16>,
    /// See [`StatusReport::demo`].
    pub demo: bool,
    /// See [`StatusReport::log_path`].
    pub log_path: PathBuf,
    /// See [`StatusReport::config_path`].
    pub config_path: PathBuf,
    /// See [`StatusReport::strays_disabled`].
    pub strays_disabled: Option<String>,
}

impl StatusReport {
    /// A report from an engine snapshot.
    pub fn new(snap: Snapshot, fixed: &Fixed, scan: Scan) -> StatusReport {
        StatusReport {
            state: snap.state,
            pid: snap.pid,
            port: fixed.port,
            uptime_ms: snap.uptime.map(millis),
            restarts: snap.restarts,
            last_exit: snap.last_exit,
            health: snap.health,
            strays: scan.strays,
            port_holders: scan.port_holders,
            strays_disabled: fixed.strays_disabled.clone(),
            failed_reason: snap.failed_reason,
            backoff_remaining_ms: snap.backoff_remaining.map(millis),
            demo: fixed.demo,
            adopted: snap.adopted,
            stale: snap.stale.map(|stale| {
                let ago = stale.since.elapsed();
                StaleReport {
                    since: humantime::format_rfc3339_seconds(std::time::SystemTime::now() - ago)
                        .to_string(),
                    since_ms: millis(ago),
                    files: stale.files,
                    count: stale.count,
                }
            }),
            log_path: fixed.log_path.clone(),
            config_path: fixed.config_path.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            warden_pid: std::process::id(),
            logs: LogsReport::default(),
        }
    }

    /// One line: "healthy · PID 4242 · :54112 · up 2 h 3 min · 1 restart".
    pub fn summary(&self) -> String {
        self.summary_with(human_duration)
    }

    /// [`StatusReport::summary`] with durations written by `duration`.
    pub fn summary_with(&self, duration: fn(Duration) -> String) -> String {
        let mut parts = vec![self.state.to_string()];
        if let Some(pid) = self.pid {
            parts.push(format!("PID {pid}"));
        }
        if let Some(port) = self.port {
            parts.push(format!(":{port}"));
        }
        if let Some(up) = self.uptime_ms {
            parts.push(format!("up {}", duration(Duration::from_millis(up))));
        }
        if let Some(left) = self.backoff_remaining_ms {
            parts.push(format!(
                "restarting in {}",
                duration(Duration::from_millis(left))
            ));
        }
        if self.restarts > 0 {
            let s = if self.restarts == 1 { "" } else { "s" };
            parts.push(format!("{} restart{s}", self.restarts));
        }
        parts.join(" · ")
    }

    /// Several lines for `backend-warden status`.
    pub fn details(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "backend    {}", self.summary());
        if self.demo {
            let _ = writeln!(
                out,
                "           (the built-in demo backend: no [backend] in the config)"
            );
        }
        if self.adopted {
            let _ = writeln!(
                out,
                "           (adopted: started outside the warden, its output is not captured)"
            );
        }
        if let Some(stale) = &self.stale {
            let _ = writeln!(
                out,
                "stale      code changed {} ago ({} change{}: {}); restart to load it",
                human_duration(Duration::from_millis(stale.since_ms)),
                stale.count,
                if stale.count == 1 { "" } else { "s" },
                stale.files.join(", ")
            );
        }
        if let Some(reason) = &self.failed_reason {
            let _ = writeln!(out, "reason     {}", indent(reason));
        }
        match (self.health.ok, &self.health.last_error) {
            (Some(true), _) => {
                let latency = self
                    .health
                    .latency_ms
                    .map(|ms| format!(" ({ms} ms)"))
                    .unwrap_or_default();
                let _ = writeln!(out, "health     ok{latency}");
            }
            (Some(false), Some(error)) => {
                let _ = writeln!(out, "health     failing: {error}");
            }
            _ => {}
        }
        if let Some(exit) = &self.last_exit {
            let _ = writeln!(out, "last exit  {} (PID {})", exit.reason, exit.pid);
        }
        for stray in &self.strays {
            let port = if stray.holds_port {
                ", holds the port"
            } else {
                ""
            };
            let cwd = stray
                .cwd
                .as_ref()
                .map(|c| format!(" in {}", c.display()))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "stray      PID {}: {}{cwd} ({} MB{port})",
                stray.pid,
                stray.cmdline,
                stray.memory_bytes / 1_000_000
            );
        }
        for holder in self.port_holders.iter().filter(|h| !h.ours) {
            let _ = writeln!(out, "port       held by {}", holder.describe());
        }
        if let Some(why) = &self.strays_disabled {
            let _ = writeln!(out, "strays     {why}");
        }
        let _ = writeln!(out, "logs       {}", self.log_path.display());
        if self.logs.dropped_lines > 0 || self.logs.last_error.is_some() {
            let lost = match self.logs.dropped_lines {
                0 => "no line lost".to_owned(),
                1 => "1 line lost".to_owned(),
                n => format!("{n} lines lost"),
            };
            let error = self
                .logs
                .last_error
                .as_ref()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default();
            let _ = writeln!(out, "           {lost}{error}");
        }
        let _ = writeln!(out, "config     {}", self.config_path.display());
        let _ = write!(
            out,
            "warden     PID {}, version {}",
            self.warden_pid, self.version
        );
        out
    }
}

fn indent(text: &str) -> String {
    text.replace('\n', "\n           ")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// "45 s", "3 min", "2 h 3 min", "1 d 2 h".
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 if d < Duration::from_secs(1) => format!("{} ms", d.as_millis()),
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        let table = [
            (Duration::from_millis(250), "250 ms"),
            (Duration::from_secs(45), "45 s"),
            (Duration::from_secs(180), "3 min"),
            (Duration::from_secs(2 * 3600 + 3 * 60 + 9), "2 h 3 min"),
            (Duration::from_secs(26 * 3600), "1 d 2 h"),
        ];
        for (d, want) in table {
            assert_eq!(human_duration(d), want);
        }
    }

    #[test]
    fn summary_is_the_tooltip_line() {
        let report = StatusReport {
            state: State::Healthy,
            pid: Some(4242),
            port: Some(54112),
            uptime_ms: Some((2 * 3600 + 3 * 60) * 1000),
            restarts: 1,
            last_exit: None,
            health: Health::default(),
            strays: vec![],
            port_holders: vec![],
            strays_disabled: None,
            failed_reason: None,
            backoff_remaining_ms: None,
            demo: false,
            adopted: false,
            stale: None,
            log_path: PathBuf::from("/l/backend.log"),
            config_path: PathBuf::from("/c/config.toml"),
            version: "0.1.0".into(),
            warden_pid: 1,
            logs: LogsReport::default(),
        };
        assert_eq!(
            report.summary(),
            "healthy · PID 4242 · :54112 · up 2 h 3 min · 1 restart"
        );
        let json = serde_json::to_value(&report).unwrap();
        for key in [
            "state",
            "pid",
            "port",
            "uptime_ms",
            "restarts",
            "last_exit",
            "health",
            "strays",
            "log_path",
            "config_path",
            "version",
        ] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
        assert_eq!(json["state"], "healthy");
        assert_eq!(json["last_exit"], serde_json::Value::Null);
        assert!(json["health"].get("ok").is_some());
    }
}
