//! Alerts: which engine events become desktop notifications, and how often. Pure policy: one
//! alert per episode (a crash loop is one "crashing" alert and one "gave up" alert, not
//! twenty), categories muted by `[notify]`. The notifier thread shows what this returns.

use std::time::Duration;

use backend_warden_core::config::NotifyConfig;
use backend_warden_core::engine::supervisor::Event;
use backend_warden_core::status::{headline, human_duration};

/// A notification to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The headline.
    pub summary: String,
    /// The details (plain text: the notifier escapes it where servers read markup).
    pub body: String,
    /// Red (crash, give-up, conflict) rather than informational.
    pub urgent: bool,
    /// Stays until dismissed (a give-up, a config error): its reason must not vanish.
    pub sticky: bool,
    /// Buttons on the notification, where the platform has them.
    pub actions: Vec<AlertAction>,
}

/// A button on an alert: the same as the tray menu's item of that name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertAction {
    /// "Kill strays"
    KillStrays,
    /// "Open logs"
    OpenLogs,
    /// "Restart"
    Restart,
    /// "Edit config"
    EditConfig,
}

impl AlertAction {
    /// Every action, for reading one back from its key.
    pub const ALL: [AlertAction; 4] = [
        AlertAction::KillStrays,
        AlertAction::OpenLogs,
        AlertAction::Restart,
        AlertAction::EditConfig,
    ];

    /// The key the notification server reports back.
    pub fn key(self) -> &'static str {
        match self {
            AlertAction::KillStrays => "kill-strays",
            AlertAction::OpenLogs => "open-logs",
            AlertAction::Restart => "restart",
            AlertAction::EditConfig => "edit-config",
        }
    }

    /// The button's label (the menu item's).
    pub fn label(self) -> &'static str {
        match self {
            AlertAction::KillStrays => "Kill strays",
            AlertAction::OpenLogs => "Open logs",
            AlertAction::Restart => "Restart",
            AlertAction::EditConfig => "Edit config",
        }
    }
}

impl Alert {
    /// An informational alert.
    pub fn info(summary: impl Into<String>, body: impl Into<String>) -> Alert {
        Alert {
            summary: summary.into(),
            body: body.into(),
            urgent: false,
            sticky: false,
            actions: Vec::new(),
        }
    }

    /// A red alert.
    pub fn urgent(summary: impl Into<String>, body: impl Into<String>) -> Alert {
        Alert {
            urgent: true,
            ..Alert::info(summary, body)
        }
    }

    /// This alert, kept until dismissed.
    pub fn sticky(mut self) -> Alert {
        self.sticky = true;
        self
    }

    /// This alert, with buttons.
    pub fn with_actions(mut self, actions: &[AlertAction]) -> Alert {
        self.actions = actions.to_vec();
        self
    }
}

/// Turns engine events into alerts, one per episode.
#[derive(Debug, Clone)]
pub struct AlertPolicy {
    mute: NotifyConfig,
    /// A crash episode is going on (alerted once; the next healthy report ends it).
    crashing: bool,
    /// An unhealthy spell is going on (alerted once; the next healthy report ends it).
    unhealthy: bool,
    /// The warden gave up: the next healthy backend (after a fix) is news.
    gave_up: bool,
}

impl AlertPolicy {
    /// A policy honouring `[notify]`.
    pub fn new(notify: NotifyConfig) -> AlertPolicy {
        AlertPolicy {
            mute: notify,
            crashing: false,
            unhealthy: false,
            gave_up: false,
        }
    }

    /// New `[notify]` settings (config reload).
    pub fn set_notify(&mut self, notify: NotifyConfig) {
        self.mute = notify;
    }

    /// The alert for `event`, if it deserves one.
    pub fn on_event(&mut self, event: &Event) -> Option<Alert> {
        match event {
            Event::Crashed {
                status,
                delay,
                first_in_episode,
                tail,
                ..
            } => {
                let first = *first_in_episode || !self.crashing;
                self.crashing = true;
                let why = headline(&tail.join("\n"));
                let why = if why.is_empty() {
                    String::new()
                } else {
                    format!("\n{why}")
                };
                (first && self.mute.crashed).then(|| {
                    Alert::urgent(
                        "Backend crashed",
                        format!("It {status}; restarting in {}.{why}", in_words(*delay)),
                    )
                    .with_actions(&[AlertAction::OpenLogs])
                })
            }
            Event::Unhealthy { error, .. } => {
                let first = !std::mem::replace(&mut self.unhealthy, true);
                (first && self.mute.unhealthy).then(|| {
                    Alert::urgent(
                        "Backend unhealthy",
                        format!("Its health check fails: {}.", without_origin(error)),
                    )
                    .with_actions(&[AlertAction::Restart, AlertAction::OpenLogs])
                })
            }
            Event::Healthy { pid, .. } => {
                let was_crashing = std::mem::take(&mut self.crashing);
                let was_unhealthy = std::mem::take(&mut self.unhealthy);
                let was_given_up = std::mem::take(&mut self.gave_up);
                if !self.mute.recovered {
                    return None;
                }
                if was_given_up {
                    Some(Alert::info(
                        "Backend running again",
                        format!("Healthy after the fix (PID {pid})."),
                    ))
                } else if was_crashing || was_unhealthy {
                    Some(Alert::info(
                        "Backend recovered",
                        format!("Healthy again (PID {pid})."),
                    ))
                } else {
                    None
                }
            }
            Event::GaveUp { reason } => {
                self.crashing = false;
                self.unhealthy = false;
                self.gave_up = true;
                let first = reason.lines().next().unwrap_or_default();
                let first = first.strip_suffix("; last output:").unwrap_or(first);
                let body = match headline(reason) {
                    line if line == first || reason.lines().next() == Some(line.as_str()) => line,
                    line => format!("{line}\n{first}"),
                };
                if reason.contains("is held by") || reason.contains("holds port") {
                    let actions: &[AlertAction] = if reason.contains("Kill strays frees it") {
                        &[AlertAction::KillStrays]
                    } else {
                        &[]
                    };
                    self.mute.port_conflict.then(|| {
                        Alert::urgent("Port conflict: backend not started", body)
                            .sticky()
                            .with_actions(actions)
                    })
                } else {
                    self.mute.gave_up.then(|| {
                        Alert::urgent("Backend Warden gave up", body)
                            .sticky()
                            .with_actions(&[AlertAction::OpenLogs, AlertAction::EditConfig])
                    })
                }
            }
            _ => None,
        }
    }

    /// The alert for a new set of strays.
    pub fn on_strays(&self, summary: &str) -> Option<Alert> {
        self.mute.strays.then(|| {
            Alert::urgent("Stray backend copies found", summary.to_string())
                .with_actions(&[AlertAction::KillStrays])
        })
    }

    /// The alert for a config that failed to reload.
    pub fn on_config_error(&self, error: &str) -> Option<Alert> {
        self.mute.config_error.then(|| {
            Alert::urgent(
                "Config not reloaded",
                format!("{error}\nThe previous settings stay in force."),
            )
            .sticky()
            .with_actions(&[AlertAction::EditConfig])
        })
    }
}

/// "http://127.0.0.1:54112/health answered 503" → "/health answered 503": the address is in
/// the config; the path and the answer are what a reader needs.
fn without_origin(error: &str) -> &str {
    error
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|at| &rest[at..]))
        .filter(|_| error.starts_with("http"))
        .unwrap_or(error)
}

fn in_words(delay: Duration) -> String {
    if delay.is_zero() {
        "a moment".to_string()
    } else {
        human_duration(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backend_warden_core::engine::supervisor::ExitStatus;

    fn crash(first: bool) -> Event {
        Event::Crashed {
            pid: 1,
            status: ExitStatus {
                code: Some(1),
                signal: None,
            },
            delay: Duration::from_secs(2),
            attempt: 1,
            first_in_episode: first,
            tail: vec![
                "Traceback (most recent call last):".into(),
                "  File \"/srv/api/main.py\", line 4, in <module>".into(),
                "RuntimeError: <no database>".into(),
            ],
        }
    }

    fn healthy(recovered: bool) -> Event {
        Event::Healthy {
            pid: 2,
            latency: None,
            recovered,
        }
    }

    #[test]
    fn a_crash_loop_is_one_crash_alert_and_one_give_up() {
        let mut p = AlertPolicy::new(NotifyConfig::default());
        let mut alerts = Vec::new();
        alerts.extend(p.on_event(&crash(true)));
        for _ in 0..20 {
            alerts.extend(p.on_event(&crash(false)));
        }
        alerts.extend(p.on_event(&Event::GaveUp {
            reason: "gave up after 6 crashes".into(),
        }));
        let summaries: Vec<&str> = alerts.iter().map(|a| a.summary.as_str()).collect();
        assert_eq!(summaries, ["Backend crashed", "Backend Warden gave up"]);
        assert_eq!(
            alerts[0].body,
            "It exited with code 1; restarting in 2 s.\nRuntimeError: <no database> (main.py, line 4)"
        );
        assert!(alerts[1].sticky, "a give-up stays until dismissed");
        let syntax = p
            .on_event(&Event::GaveUp {
                reason: "gave up after 3 crashes within 1m: the backend exited with code 1; \
                         last output:\n  File \"/p/broken.py\", line 3\n    def h(:\n\
                         SyntaxError: invalid syntax"
                    .into(),
            })
            .unwrap();
        assert_eq!(
            syntax.body,
            "SyntaxError: invalid syntax (broken.py, line 3)\n\
             gave up after 3 crashes within 1m: the backend exited with code 1"
        );
    }

    #[test]
    fn recovery_ends_the_episode() {
        let mut p = AlertPolicy::new(NotifyConfig::default());
        assert!(p.on_event(&crash(true)).is_some());
        assert!(p.on_event(&crash(false)).is_none());
        let recovered = p.on_event(&healthy(true)).unwrap();
        assert_eq!(recovered.summary, "Backend recovered");
        assert!(
            p.on_event(&crash(true)).is_some(),
            "a new episode alerts again"
        );
        // A first start is not a recovery.
        let mut p = AlertPolicy::new(NotifyConfig::default());
        assert!(p.on_event(&healthy(false)).is_none());
    }

    #[test]
    fn muted_categories_stay_silent_and_port_conflicts_have_their_own() {
        let mut p = AlertPolicy::new(NotifyConfig {
            crashed: false,
            strays: false,
            ..NotifyConfig::default()
        });
        assert!(p.on_event(&crash(true)).is_none());
        assert!(p.on_strays("2 strays").is_none());
        let conflict = p
            .on_event(&Event::GaveUp {
                reason: "could not start the backend: port 54112 is held by python PID 7".into(),
            })
            .unwrap();
        assert_eq!(conflict.summary, "Port conflict: backend not started");
        assert!(p.on_config_error("config.toml:3:1: bad").is_some());
    }

    #[test]
    fn an_unhealthy_spell_is_one_alert_and_its_end_another() {
        let mut p = AlertPolicy::new(NotifyConfig::default());
        let bad = Event::Unhealthy {
            pid: 2,
            error: "http://127.0.0.1:54112/health answered 503 Service Unavailable".into(),
        };
        let first = p.on_event(&bad).unwrap();
        assert_eq!(first.summary, "Backend unhealthy");
        assert_eq!(
            first.body,
            "Its health check fails: /health answered 503 Service Unavailable."
        );
        assert!(p.on_event(&bad).is_none(), "one per spell");
        assert_eq!(
            p.on_event(&healthy(true)).unwrap().summary,
            "Backend recovered"
        );
        assert!(p.on_event(&bad).is_some(), "a new spell alerts again");
        let mut muted = AlertPolicy::new(NotifyConfig {
            unhealthy: false,
            ..NotifyConfig::default()
        });
        assert!(muted.on_event(&bad).is_none());
    }

    #[test]
    fn a_healthy_backend_after_a_give_up_is_news() {
        let mut p = AlertPolicy::new(NotifyConfig::default());
        p.on_event(&Event::GaveUp {
            reason: "gave up after 4 crashes".into(),
        });
        // A fix saved, the config reloaded: a first start, yet news.
        let back = p.on_event(&healthy(false)).unwrap();
        assert_eq!(back.summary, "Backend running again");
        assert!(p.on_event(&healthy(false)).is_none());
    }

    #[test]
    fn alerts_name_the_menu_item_that_helps() {
        let mut p = AlertPolicy::new(NotifyConfig::default());
        let blocked = p
            .on_event(&Event::GaveUp {
                reason: "could not start the backend: an orphaned worker of an earlier copy of \
                         this backend holds port 54112 — Kill strays frees it: python PID 7"
                    .into(),
            })
            .unwrap();
        assert_eq!(blocked.summary, "Port conflict: backend not started");
        assert_eq!(blocked.actions, [AlertAction::KillStrays]);
        let strays = p.on_strays("1 copy … Use Kill strays in the menu").unwrap();
        assert_eq!(strays.actions, [AlertAction::KillStrays]);
        assert!(p.on_config_error("config.toml:3:1: bad").unwrap().sticky);
    }
}
