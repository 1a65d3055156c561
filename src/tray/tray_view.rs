//! What the tray shows for a status report: icon look and badge, tooltip, menu labels and which
//! items are enabled. Pure, so every state's presentation is tested without a GUI; the tray
//! module only applies it.

use crate::icon::Look;
use backend_warden_core::backend::strays::StrayKind;
use backend_warden_core::engine::supervisor::State;
use backend_warden_core::status::{StatusReport, headline, human_duration};

/// Windows truncates tray tooltips at 127 characters (NOTIFYICONDATA's 128 with the NUL).
pub const TOOLTIP_MAX: usize = 127;

/// The tray's presentation of one status report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrayView {
    /// Icon colour and glyph.
    pub look: Look,
    /// The orange badge: strays or a port conflict.
    pub badge: bool,
    /// "Backend Warden — healthy · PID 4242 · :54112 · up 2 h 3 min · 1 restart".
    pub tooltip: String,
    /// The first (disabled) menu line.
    pub status_line: String,
    /// The second (disabled) line, when there are strays or a conflict.
    pub alert_line: Option<String>,
    /// Whether Start makes sense now.
    pub can_start: bool,
    /// Whether Stop makes sense now.
    pub can_stop: bool,
    /// Whether Restart makes sense now.
    pub can_restart: bool,
    /// "Kill strays (2)".
    pub kill_label: String,
    /// Whether there is anything to kill.
    pub can_kill: bool,
    /// "Restart", or "Restart (code changed)" when the running code is stale.
    pub restart_label: String,
    /// Why it failed or last crashed, or why its health check fails, in one line
    /// ("SyntaxError: invalid syntax (main.py, line 12)"): stays while the state lasts.
    pub reason_line: Option<String>,
    /// The whole story behind `reason_line` (the reason and the last output), for *Copy
    /// details*.
    pub details: Option<String>,
    /// "Kill debug session (PID 12)": debug sessions are left alone by *Kill strays*.
    pub kill_debug_label: Option<String>,
    /// The backend's address for *Open in browser*.
    pub open_url: Option<String>,
}

/// The words a teammate reads for a state in the menu and the tooltip.
pub fn state_words(state: State) -> &'static str {
    match state {
        // The countdown is not shown: the menu is not redrawn every second.
        State::Backoff => "crashed, restarting",
        State::Failed => "failed",
        other => other.as_str(),
    }
}

/// The icon for a state.
pub fn look(state: State) -> Look {
    match state {
        State::Healthy => Look::Healthy,
        State::Starting => Look::Starting,
        State::Unhealthy => Look::Unhealthy,
        State::Backoff => Look::Crashed,
        State::Failed => Look::Failed,
        State::Stopped | State::Stopping => Look::Stopped,
    }
}

impl TrayView {
    /// The view of `report`.
    pub fn of(report: &StatusReport) -> TrayView {
        let state = report.state;
        let conflict: Vec<String> = report
            .port_holders
            .iter()
            .filter(|h| !h.ours)
            .map(|h| h.pid.to_string())
            .collect();
        let strays: Vec<String> = report
            .strays
            .iter()
            .filter(|s| s.kind != StrayKind::DebugSession)
            .map(|s| s.pid.to_string())
            .collect();
        let debug: Vec<String> = report
            .strays
            .iter()
            .filter(|s| s.kind == StrayKind::DebugSession)
            .map(|s| s.pid.to_string())
            .collect();
        let alert_line = match (strays.len(), conflict.is_empty()) {
            (0, true) if debug.is_empty() => None,
            (0, true) => Some(format!(
                "Debug session outside the warden: PID {}",
                debug.join(", ")
            )),
            (0, false) => Some(format!(
                "Port {} held by PID {}",
                report.port.map(|p| p.to_string()).unwrap_or_default(),
                conflict.join(", ")
            )),
            (1, _) => Some(format!("1 stray: PID {}", strays[0])),
            (n, _) => Some(format!("{n} strays: PIDs {}", strays.join(", "))),
        };
        let mut status_line = format!("Backend: {}", state_words(state));
        if report.demo {
            status_line.push_str(" (demo backend)");
        }
        if let Some(pid) = report.pid {
            status_line.push_str(&format!(" · PID {pid}"));
        }
        if let Some(up) = report.uptime_ms {
            status_line.push_str(&format!(
                " · up {}",
                coarse(std::time::Duration::from_millis(up))
            ));
        }
        if let Some(stale) = &report.stale {
            let n = stale.count;
            status_line.push_str(&format!(
                " · code changed {} ago ({n} file{})",
                coarse(std::time::Duration::from_millis(stale.since_ms)),
                if n == 1 { "" } else { "s" }
            ));
        }
        if let Some(problem) = report.health_problem() {
            status_line.push_str(&format!(" · {problem}"));
        }
        let (reason_line, details) = reason(report);
        if let Some(error) = &report.config_error {
            return TrayView::config_error(report, error);
        }
        let running = matches!(state, State::Starting | State::Healthy | State::Unhealthy);
        TrayView {
            look: look(state),
            badge: alert_line.is_some(),
            tooltip: truncate(
                &format!("Backend Warden — {}", tooltip(report)),
                TOOLTIP_MAX,
            ),
            status_line,
            alert_line,
            can_start: matches!(state, State::Stopped | State::Failed | State::Backoff),
            can_stop: running || state == State::Backoff,
            can_restart: running || matches!(state, State::Failed | State::Backoff),
            kill_label: if strays.is_empty() {
                "Kill strays".to_string()
            } else {
                format!("Kill strays ({})", strays.len())
            },
            can_kill: !strays.is_empty(),
            restart_label: if report.stale.is_some() {
                "Restart (code changed)".to_string()
            } else {
                "Restart".to_string()
            },
            reason_line,
            details,
            kill_debug_label: match debug.as_slice() {
                [] => None,
                [one] => Some(format!("Kill debug session (PID {one})")),
                many => Some(format!("Kill debug sessions (PIDs {})", many.join(", "))),
            },
            open_url: report.open_url.clone(),
        }
    }
}

impl TrayView {
    /// The warden started with a config it cannot use: nothing runs, the menu says why, and
    /// only the config items make sense.
    fn config_error(report: &StatusReport, error: &str) -> TrayView {
        let first = error.lines().next().unwrap_or(error).to_string();
        TrayView {
            look: Look::ConfigError,
            badge: false,
            tooltip: truncate(
                &format!("Backend Warden — config error: {first}"),
                TOOLTIP_MAX,
            ),
            status_line: "Backend: not started — the config has an error".to_string(),
            alert_line: None,
            can_start: false,
            can_stop: false,
            can_restart: false,
            kill_label: "Kill strays".to_string(),
            can_kill: false,
            restart_label: "Restart".to_string(),
            reason_line: Some(first),
            details: Some(format!(
                "{error}\nConfig file: {}",
                report.config_path.display()
            )),
            kill_debug_label: None,
            open_url: None,
        }
    }
}

/// "healthy · PID 4242 · :54112 · up 2 h 3 min · 1 restart", in the tray's words.
fn tooltip(report: &StatusReport) -> String {
    let mut parts = vec![state_words(report.state).to_string()];
    if report.demo {
        parts.push("demo backend".into());
    }
    if let Some(pid) = report.pid {
        parts.push(format!("PID {pid}"));
    }
    if let Some(port) = report.port {
        parts.push(format!(":{port}"));
    }
    if let Some(up) = report.uptime_ms {
        parts.push(format!(
            "up {}",
            coarse(std::time::Duration::from_millis(up))
        ));
    }
    if report.restarts > 0 {
        let s = if report.restarts == 1 { "" } else { "s" };
        parts.push(format!("{} restart{s}", report.restarts));
    }
    parts.join(" · ")
}

/// The one-line reason the menu keeps showing, and the details behind it.
fn reason(report: &StatusReport) -> (Option<String>, Option<String>) {
    let exit_details = |exit: &backend_warden_core::engine::supervisor::LastExit| {
        let mut text = format!("The backend (PID {}) {}.", exit.pid, exit.reason);
        if !exit.tail.is_empty() {
            text.push_str("\nLast output:\n");
            text.push_str(&exit.tail.join("\n"));
        }
        text
    };
    match (report.state, &report.last_exit) {
        (State::Failed, _) => match &report.failed_reason {
            Some(why) => (Some(headline(why)), Some(why.clone())),
            None => (None, None),
        },
        (State::Backoff, Some(exit)) => {
            let line = match headline(&exit.tail.join("\n")) {
                h if h.is_empty() => format!("Last crash: it {}", exit.reason),
                h => format!("Last crash: {h}"),
            };
            (Some(line), Some(exit_details(exit)))
        }
        // The status line says what the health check answers; the details keep it.
        (State::Unhealthy, _) => (
            None,
            report
                .health
                .last_error
                .as_ref()
                .map(|error| format!("The health check fails: {error}")),
        ),
        _ => (None, report.last_exit.as_ref().map(exit_details)),
    }
}

/// Uptime at the tray's refresh resolution: minutes ("<1 min", "3 min", "2 h 3 min").
fn coarse(d: std::time::Duration) -> String {
    if d < std::time::Duration::from_secs(60) {
        "<1 min".to_string()
    } else {
        human_duration(d)
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        text.chars().take(max - 1).collect::<String>() + "…"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backend_warden_core::backend::strays::PortHolder;
    use backend_warden_core::backend::strays::Stray;
    use backend_warden_core::engine::supervisor::Health;
    use std::path::PathBuf;

    fn report(state: State) -> StatusReport {
        StatusReport {
            log_path: PathBuf::new(),
            config_path: PathBuf::new(),
            ..StatusReport::example(state)
        }
    }

    #[test]
    fn each_state_has_its_look_and_sensible_actions() {
        // (state, look, start, stop, restart)
        let table = [
            (State::Stopped, Look::Stopped, true, false, false),
            (State::Starting, Look::Starting, false, true, true),
            (State::Healthy, Look::Healthy, false, true, true),
            (State::Unhealthy, Look::Unhealthy, false, true, true),
            (State::Stopping, Look::Stopped, false, false, false),
            (State::Backoff, Look::Crashed, true, true, true),
            (State::Failed, Look::Failed, true, false, true),
        ];
        for (state, want_look, start, stop, restart) in table {
            let v = TrayView::of(&report(state));
            assert_eq!(v.look, want_look, "{state}");
            assert_eq!(
                (v.can_start, v.can_stop, v.can_restart),
                (start, stop, restart),
                "{state}"
            );
            assert!(!v.badge && v.alert_line.is_none() && !v.can_kill, "{state}");
        }
    }

    #[test]
    fn tooltip_and_status_line() {
        let v = TrayView::of(&report(State::Healthy));
        assert_eq!(
            v.tooltip,
            "Backend Warden — healthy · PID 4242 · :54112 · up 2 h 3 min · 1 restart"
        );
        assert_eq!(v.status_line, "Backend: healthy · PID 4242 · up 2 h 3 min");
        let mut long = report(State::Failed);
        long.port = Some(1);
        long.restarts = u32::MAX;
        long.pid = Some(u32::MAX);
        long.uptime_ms = Some(u64::MAX / 4);
        long.backoff_remaining_ms = Some(u64::MAX / 4);
        let v = TrayView::of(&long);
        assert!(v.tooltip.chars().count() <= TOOLTIP_MAX);
    }

    #[test]
    fn stale_code_shows_in_the_status_line_and_the_restart_item() {
        let mut r = report(State::Healthy);
        r.uptime_ms = Some(10 * 60_000);
        r.stale = Some(backend_warden_core::status::StaleReport {
            since: String::new(),
            since_ms: 2 * 60_000,
            files: vec!["main.py".into()],
            count: 3,
        });
        let v = TrayView::of(&r);
        assert_eq!(
            v.status_line,
            "Backend: healthy · PID 4242 · up 10 min · code changed 2 min ago (3 files)"
        );
        assert_eq!(v.restart_label, "Restart (code changed)");
        assert_eq!(
            TrayView::of(&report(State::Healthy)).restart_label,
            "Restart"
        );
    }

    #[test]
    fn the_status_line_says_why_the_backend_is_not_healthy() {
        let failing = |state, failure: &str| {
            let mut r = report(state);
            r.uptime_ms = Some(5_000);
            r.health = Health {
                ok: Some(false),
                failure: Some(failure.into()),
                last_error: Some(format!("http://127.0.0.1:54112/health: {failure}")),
                ..Health::default()
            };
            TrayView::of(&r).status_line
        };
        // (state, failure, status line)
        let table = [
            (
                State::Starting,
                "/health answered 503 Service Unavailable",
                "Backend: starting · PID 4242 · up <1 min · /health answered 503 Service Unavailable",
            ),
            (
                State::Unhealthy,
                "timed out after 1 s",
                "Backend: unhealthy · PID 4242 · up <1 min · timed out after 1 s",
            ),
            (
                State::Unhealthy,
                "connection refused",
                "Backend: unhealthy · PID 4242 · up <1 min · connection refused",
            ),
            // One failed probe of a healthy backend is not news yet.
            (
                State::Healthy,
                "connection refused",
                "Backend: healthy · PID 4242 · up <1 min",
            ),
        ];
        for (state, failure, want) in table {
            assert_eq!(failing(state, failure), want);
        }
        let mut r = report(State::Starting);
        r.uptime_ms = Some(5_000);
        r.health.listening = Some(false);
        assert_eq!(
            TrayView::of(&r).status_line,
            "Backend: starting · PID 4242 · up <1 min · waiting for port 54112 to listen"
        );
    }

    #[test]
    fn strays_and_conflicts_badge_the_icon_and_enable_kill() {
        let mut r = report(State::Healthy);
        for pid in [111, 222] {
            r.strays.push(Stray {
                pid,
                name: "python".into(),
                cmdline: "python main.py".into(),
                cwd: None,
                started_at: 0,
                memory_bytes: 0,
                holds_port: false,
                kind: Default::default(),
                wrappers: vec![],
                start_ticks: None,
            });
        }
        let v = TrayView::of(&r);
        assert!(v.badge && v.can_kill);
        assert_eq!(v.alert_line.as_deref(), Some("2 strays: PIDs 111, 222"));
        assert_eq!(v.kill_label, "Kill strays (2)");
        assert_eq!(
            v.look,
            Look::Healthy,
            "the badge goes on whatever the state is"
        );

        let mut r = report(State::Failed);
        r.port_holders.push(PortHolder {
            pid: 77,
            name: "nginx".into(),
            cmdline: "nginx".into(),
            alive: true,
            ours: false,
            started_at: 0,
        });
        let v = TrayView::of(&r);
        assert!(v.badge && !v.can_kill);
        assert_eq!(v.alert_line.as_deref(), Some("Port 54112 held by PID 77"));
    }
}
