//! The status report: what `status --json` prints (its field names are an interface), and
//! its short human forms for the terminal and the tray. Pure data and formatting.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::clock;

use crate::backend::strays::{ForeignCopy, PortHolder, Scan, Stray, StrayKind};
use crate::engine::supervisor::{Health, LastExit, Snapshot, State};

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
    /// Automatic restarts since the warden started: after a crash or a failed health check.
    pub restarts: u32,
    /// Starts that were asked for since the warden started: the first one, Start and Restart
    /// (tray, CLI), a restart for changed code, a reload.
    #[serde(default)]
    pub starts: u32,
    /// When the current backend process started (RFC 3339, UTC).
    #[serde(default)]
    pub started_at: Option<String>,
    /// Resident memory of the backend's whole tree, summed, in bytes (`status` only).
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// CPU used by the backend's tree lately, in percent of one core (`status` only).
    #[serde(default)]
    pub cpu_percent: Option<f64>,
    /// How many processes the backend's tree has, the main one included (`status` only).
    #[serde(default)]
    pub process_count: Option<usize>,
    /// How the last backend process ended.
    pub last_exit: Option<LastExit>,
    /// The latest health probe.
    pub health: Health,
    /// Copies of the backend the warden does not own.
    pub strays: Vec<Stray>,
    /// Copies of this backend that another warden manages (never strays).
    #[serde(default)]
    pub other_wardens: Vec<ForeignCopy>,
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
    /// The `.env` file the backend's environment was read from at its last start (`None`: no
    /// file was read).
    #[serde(default)]
    pub env_file: Option<PathBuf>,
    /// The backend's address for a browser (`backend.open_url`, else the health URL's site).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_url: Option<String>,
    /// The config could not be used when the warden started: why (file:line:column, key).
    /// Nothing runs until a reload succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_error: Option<String>,
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
/// demo flag again at each config reload. The status board owns them.
#[derive(Debug, Clone, Default)]
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
    /// See [`StatusReport::open_url`].
    pub open_url: Option<String>,
    /// See [`StatusReport::config_error`].
    pub config_error: Option<String>,
}

impl StatusReport {
    /// A healthy report with every optional part empty, for tests to change what they need
    /// (the tray crate's tests too, through the `test-support` feature).
    #[cfg(any(test, feature = "test-support"))]
    pub fn example(state: State) -> StatusReport {
        StatusReport {
            state,
            pid: state.is_running().then_some(4242),
            port: Some(54112),
            uptime_ms: state.is_running().then_some((2 * 3600 + 3 * 60) * 1000),
            restarts: 1,
            starts: 1,
            started_at: None,
            memory_bytes: None,
            cpu_percent: None,
            process_count: None,
            last_exit: None,
            health: Health::default(),
            strays: vec![],
            other_wardens: vec![],
            port_holders: vec![],
            strays_disabled: None,
            failed_reason: None,
            backoff_remaining_ms: None,
            demo: false,
            adopted: false,
            stale: None,
            log_path: PathBuf::from("/l/backend.log"),
            config_path: PathBuf::from("/c/config.toml"),
            env_file: None,
            logs: LogsReport::default(),
            open_url: None,
            config_error: None,
            version: "0.1.0".into(),
            warden_pid: 1,
        }
    }

    /// A report from an engine snapshot.
    pub fn new(snap: Snapshot, fixed: &Fixed, scan: Scan) -> StatusReport {
        StatusReport {
            state: snap.state,
            pid: snap.pid,
            port: fixed.port,
            uptime_ms: snap.uptime.map(millis),
            restarts: snap.restarts,
            starts: snap.starts,
            started_at: snap.uptime.map(|up| {
                humantime::format_rfc3339_seconds(std::time::SystemTime::now() - up).to_string()
            }),
            memory_bytes: None,
            cpu_percent: None,
            process_count: None,
            last_exit: snap.last_exit,
            health: snap.health,
            strays: scan.strays,
            port_holders: scan.port_holders,
            other_wardens: scan.others,
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
            env_file: None,
            open_url: fixed.open_url.clone(),
            config_error: fixed.config_error.clone(),
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

    /// Why the last health probe failed, in words, while that matters (starting or
    /// unhealthy); or that the port does not listen yet.
    pub fn health_problem(&self) -> Option<String> {
        if !matches!(self.state, State::Starting | State::Unhealthy) {
            return None;
        }
        match (self.health.ok, &self.health.failure) {
            (Some(false), Some(failure)) => Some(failure.clone()),
            _ => self.waiting_for_port(),
        }
    }

    /// "waiting for port 54112 to listen", while starting and no HTTP probe has been sent.
    fn waiting_for_port(&self) -> Option<String> {
        let waiting = self.state == State::Starting
            && self.health.ok.is_none()
            && self.health.listening == Some(false);
        waiting.then(|| match self.port {
            Some(port) => format!("waiting for port {port} to listen"),
            None => "waiting for the port to listen".to_string(),
        })
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
        if let Some(up) = self.uptime_ms {
            let since = SystemTime::now() - Duration::from_millis(up);
            let _ = writeln!(out, "started    {}", clock::local_time(since));
        }
        if let (Some(memory), Some(count)) = (self.memory_bytes, self.process_count) {
            let cpu = self
                .cpu_percent
                .map(|cpu| format!(" · {cpu:.1}% CPU"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "usage      {} memory{cpu} · {count} process{}",
                human_bytes(memory),
                if count == 1 { "" } else { "es" }
            );
        }
        let _ = writeln!(
            out,
            "restarts   {} after a crash or failed health check; {} start{} asked for",
            self.restarts,
            self.starts,
            if self.starts == 1 { "" } else { "s" }
        );
        if let Some(stale) = &self.stale {
            let since = SystemTime::now() - Duration::from_millis(stale.since_ms);
            let _ = writeln!(
                out,
                "stale      code changed at {} ({} ago; {} change{}: {}); restart to load it",
                clock::local_time(since),
                human_duration(Duration::from_millis(stale.since_ms)),
                stale.count,
                if stale.count == 1 { "" } else { "s" },
                stale.files.join(", ")
            );
        }
        if let Some(error) = &self.config_error {
            let _ = writeln!(
                out,
                "config     error: {}\n           (nothing runs: fix the file, then `backend-warden config reload`)",
                indent(error)
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
                let why = self.health.failure.as_deref().unwrap_or(error);
                let _ = writeln!(out, "health     failing: {why}");
            }
            _ => {
                if let Some(waiting) = self.waiting_for_port() {
                    let _ = writeln!(out, "health     {waiting}");
                }
            }
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
            let kind = match stray.kind {
                StrayKind::Copy => String::new(),
                kind => format!("{} · ", kind.words()),
            };
            let _ = writeln!(
                out,
                "stray      PID {}: {kind}{}{cwd} ({} MB{port})",
                stray.pid,
                stray.cmdline,
                stray.memory_bytes / 1_000_000
            );
            for wrapper in &stray.wrappers {
                let _ = writeln!(
                    out,
                    "           started by PID {}: {}",
                    wrapper.pid, wrapper.cmdline
                );
            }
        }
        for other in &self.other_wardens {
            let port = if other.holds_port {
                ", holds the port"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "copy       PID {}: {} · {}{port}",
                other.pid,
                other.cmdline,
                other.describe()
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
        if let Some(env_file) = &self.env_file {
            let _ = writeln!(out, "env file   {}", env_file.display());
        }
        let _ = write!(
            out,
            "warden     PID {}, version {}",
            self.warden_pid, self.version
        );
        out
    }
}

/// "1.5 MB", "234.0 MB", "1.2 GB" (decimal units, as task managers show them).
fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_000_000 => format!("{:.0} KB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.2} GB", b / 1e9),
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
        let report = StatusReport::example(State::Healthy);
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
        for key in ["ok", "latency_ms", "last_error", "failure", "listening"] {
            assert!(json["health"].get(key).is_some(), "health.{key} missing");
        }
    }

    #[test]
    fn health_problems_read_as_words() {
        let mut report = StatusReport {
            state: State::Starting,
            uptime_ms: Some(1000),
            restarts: 0,
            health: Health {
                listening: Some(false),
                ..Health::default()
            },
            ..StatusReport::example(State::Starting)
        };
        assert_eq!(
            report.health_problem().as_deref(),
            Some("waiting for port 54112 to listen")
        );
        assert!(
            report
                .details()
                .contains("\nhealth     waiting for port 54112 to listen\n")
        );
        report.health = Health {
            ok: Some(false),
            latency_ms: None,
            last_error: Some(
                "http://127.0.0.1:54112/health answered 503 Service Unavailable".into(),
            ),
            failure: Some("/health answered 503 Service Unavailable".into()),
            listening: Some(true),
        };
        assert_eq!(
            report.health_problem().as_deref(),
            Some("/health answered 503 Service Unavailable")
        );
        assert!(
            report
                .details()
                .contains("\nhealth     failing: /health answered 503 Service Unavailable\n"),
            "{}",
            report.details()
        );
        // A healthy backend's one failed probe is no problem worth a menu line yet.
        report.state = State::Healthy;
        assert_eq!(report.health_problem(), None);
        // A report from a warden without `failure` still says why.
        report.health.failure = None;
        assert!(
            report
                .details()
                .contains("failing: http://127.0.0.1:54112/health answered")
        );
    }
}

/// One line that says why the backend failed, for people: the exception line of a Python
/// traceback with the user's own file and line ("SyntaxError: '(' was never closed (main.py,
/// line 12)"), else the first line of `text`. Frames in the standard library, site-packages
/// and `<frozen …>` modules are not the user's.
pub fn headline(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    let traceback = lines.iter().position(|l| {
        l.trim_start()
            .starts_with("Traceback (most recent call last)")
            || l.trim_start().starts_with("File \"")
    });
    let exception = traceback.and_then(|from| {
        lines[from..]
            .iter()
            .rev()
            .map(|l| l.trim())
            .find(|l| looks_like_exception(l))
    });
    let Some(exception) = exception else {
        return lines
            .iter()
            .find(|l| !l.trim().is_empty())
            .map_or_else(String::new, |l| l.trim().to_string());
    };
    let frame = lines
        .iter()
        .rev()
        .filter_map(|l| user_frame(l.trim()))
        .next();
    match frame {
        Some((file, line)) if !exception.contains(&format!("{file}, line")) => {
            format!("{exception} ({file}, line {line})")
        }
        _ => exception.to_string(),
    }
}

/// `ValueError: …`, `pkg.errors.Oops: …`, `KeyboardInterrupt`.
fn looks_like_exception(line: &str) -> bool {
    let name = line.split(':').next().unwrap_or(line);
    !name.is_empty()
        && !name.contains(char::is_whitespace)
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
        && name.chars().next().is_some_and(|c| c.is_alphabetic())
        && (line.contains(": ")
            || name.ends_with("Error")
            || name.ends_with("Exception")
            || name.ends_with("Interrupt")
            || name.ends_with("Exit"))
}

/// `File "/srv/api/main.py", line 12, in <module>` → ("main.py", 12), for the user's files.
fn user_frame(line: &str) -> Option<(String, u32)> {
    let rest = line.strip_prefix("File \"")?;
    let (path, rest) = rest.split_once('"')?;
    let number: u32 = rest
        .trim_start_matches(", line ")
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    let lower = path.replace('\\', "/").to_lowercase();
    let library = path.starts_with('<')
        || lower.contains("/site-packages/")
        || lower.contains("/dist-packages/")
        || lower.contains("/lib/python")
        || lower.contains("/python3");
    if library {
        return None;
    }
    let file = path.rsplit(['/', '\\']).next().unwrap_or(path);
    Some((file.to_string(), number))
}

#[cfg(test)]
mod headline_tests {
    use super::headline;

    #[test]
    fn tracebacks_lead_with_the_exception_and_the_users_line() {
        let syntax = "gave up after 4 crashes within 1m: the backend exited with code 1; last output:\n\
            Traceback (most recent call last):\n  File \"/srv/api/main.py\", line 12\n    def x(\n         ^\n\
            SyntaxError: '(' was never closed";
        assert_eq!(
            headline(syntax),
            "SyntaxError: '(' was never closed (main.py, line 12)"
        );
        let deep = "the backend exited with code 1; last output:\nTraceback (most recent call last):\n  \
            File \"/srv/api/main.py\", line 3, in <module>\n    import settings\n  \
            File \"/srv/api/settings.py\", line 7, in <module>\n    DB = os.environ[\"DB_URL\"]\n  \
            File \"<frozen os>\", line 679, in __getitem__\n  \
            File \"/srv/api/.venv/lib/python3.11/site-packages/x.py\", line 1, in y\n\
            KeyError: 'DB_URL'";
        assert_eq!(headline(deep), "KeyError: 'DB_URL' (settings.py, line 7)");
        assert_eq!(
            headline("port 54112 is held by python3 PID 7; stop that program"),
            "port 54112 is held by python3 PID 7; stop that program"
        );
        assert_eq!(headline("\n\nfirst\nsecond"), "first");
        assert_eq!(headline(""), "");
    }
}
