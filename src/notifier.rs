//! Shows alerts as desktop notifications (notify-rust) from a thread of its own: talking to
//! the notification server is blocking I/O that must never stall the UI or the engine. A
//! session without a notification server is logged once and survived.

use std::sync::mpsc::{self, Sender};
use std::thread;

use tracing::{info, warn};

use crate::alerts::Alert;

/// The application name notifications are shown under.
pub const APP_NAME: &str = "Backend Warden";

/// Sends alerts to the notification thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Notifier {
    alerts: Sender<Alert>,
}

impl Notifier {
    /// Starts the notification thread.
    pub fn start() -> std::io::Result<Notifier> {
        let (alerts, inbox) = mpsc::channel::<Alert>();
        thread::Builder::new()
            .name("notifier".into())
            .spawn(move || {
                let mut failing = false;
                while let Ok(alert) = inbox.recv() {
                    info!(summary = %alert.summary, body = %alert.body, "notification");
                    let shown = notify_rust::Notification::new()
                        .appname(APP_NAME)
                        .summary(&alert.summary)
                        .body(&alert.body)
                        .show();
                    match shown {
                        Ok(_) => failing = false,
                        Err(e) => {
                            if !failing {
                                warn!(error = %e, "cannot show desktop notifications (no notification server?); alerts go to the log only");
                            }
                            failing = true;
                        }
                    }
                }
            })?;
        Ok(Notifier { alerts })
    }

    /// Shows `alert` (asynchronously).
    pub fn show(&self, alert: Alert) {
        let _ = self.alerts.send(alert);
    }
}
