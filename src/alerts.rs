//! Alerts: which engine events become desktop notifications, and how often. Pure policy: one
//! alert per episode (a crash loop is one "crashing" alert and one "gave up" alert, not
//! twenty), categories muted by `[notify]`. The notifier thread shows what this returns.

use std::time::Duration;

use crate::config::NotifyConfig;
use crate::status::human_duration;
use crate::supervisor::Event;

/// A notification to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The headline.
    pub summary: String,
    /// The details.
    pub body: String,
    /// Red (crash, give-up, conflict) rather than informational.
    pub urgent: bool,
}

impl Alert {
    /// An informational alert.
    pub fn info(summary: impl Into<String>, body: impl Into<String>) -> Alert {
        Alert {
            summary: summary.into(),
            body: body.into(),
            urgent: false,
        }
    }

    fn urgent(summary: impl Into<String>, body: impl Into<String>) -> Alert {
        Alert {
            summary: summary.into(),
            body: body.into(),
            urgent: true,
        }
    }
}

/// Turns engine events into alerts, one per episode.
#[derive(Debug, Clone)]
pub struct AlertPolicy {
    mute: NotifyConfig,
    /// A crash episode is going on (alerted once; the next healthy report ends it).
    crashing: bool,
}

impl AlertPolicy {
    /// A policy honouring `[notify]`.
    pub fn new(notify: NotifyConfig) -> AlertPolicy {
        AlertPolicy {
            mute: notify,
            crashing: false,
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
                ..
            } => {
                let first = *first_in_episode || !self.crashing;
                self.crashing = true;
                (first && self.mute.crashed).then(|| {
                    Alert::urgent(
                        "Backend crashed",
                        format!("It {status}; restarting in {}.", in_words(*delay)),
                    )
                })
            }
            Event::Healthy {
                recovered: true,
                pid,
                ..
            } => {
                let was_crashing = std::mem::take(&mut self.crashing);
                (was_crashing && self.mute.recovered).then(|| {
                    Alert::info("Backend recovered", format!("Healthy again (PID {pid})."))
                })
            }
            Event::Healthy { .. } => {
                self.crashing = false;
                None
            }
            Event::GaveUp { reason } => {
                self.crashing = false;
                if reason.contains("is held by") || reason.contains("is already in use") {
                    self.mute.port_conflict.then(|| {
                        Alert::urgent("Port conflict: backend not started", reason.clone())
                    })
                } else {
                    self.mute
                        .gave_up
                        .then(|| Alert::urgent("Backend Warden gave up", reason.clone()))
                }
            }
            _ => None,
        }
    }

    /// The alert for a new set of strays.
    pub fn on_strays(&self, summary: &str) -> Option<Alert> {
        self.mute
            .strays
            .then(|| Alert::urgent("Stray backend copies found", summary.to_string()))
    }

    /// The alert for a config that failed to reload.
    pub fn on_config_error(&self, error: &str) -> Option<Alert> {
        self.mute.config_error.then(|| {
            Alert::urgent(
                "Config not reloaded",
                format!("{error}\nThe previous settings stay in force."),
            )
        })
    }
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
    use crate::supervisor::ExitStatus;

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
        assert_eq!(alerts[0].body, "It exited with code 1; restarting in 2 s.");
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
}
