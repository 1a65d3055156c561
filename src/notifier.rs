//! Shows alerts as desktop notifications (notify-rust) from a thread of its own: talking to
//! the notification server is blocking I/O that must never stall the UI or the engine. A
//! session without a notification server is logged once and survived.
//!
//! On Windows a toast carries the app's AppUserModelID, when Windows knows it (see
//! [`identify`]); that is the only platform-specific code here.

use std::sync::mpsc::{self, Sender};
use std::thread;

use tracing::{info, warn};

use crate::alerts::Alert;

/// The application name notifications are shown under.
pub const APP_NAME: &str = "Backend Warden";

/// The AppUserModelID: the identity Windows shows toasts under. The MSI's Start-menu shortcut
/// and `AppUserModelId` registry key carry the same string (`wix/main.wxs`; `wix/build-msi.sh`
/// fails if they differ).
pub const APP_USER_MODEL_ID: &str = "dev.backend-warden.BackendWarden";

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
                let mut template = notify_rust::Notification::new();
                identify(&mut template);
                while let Ok(alert) = inbox.recv() {
                    info!(summary = %alert.summary, body = %alert.body, "notification");
                    let shown = template
                        .clone()
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

/// Windows shows a toast only for an app it knows: one whose AppUserModelID a Start-menu
/// shortcut or an `AppUserModelId` registry key declares (the MSI installs both). Run from a
/// build folder, without either, a toast under our ID would vanish without an error, so
/// notify-rust's default identity is kept then (Windows labels such toasts "Windows
/// PowerShell", hoodie/notify-rust#219).
#[cfg(windows)]
fn identify(notification: &mut notify_rust::Notification) {
    let key = format!(r"Software\Classes\AppUserModelId\{APP_USER_MODEL_ID}");
    let registered = winreg::RegKey::predef(winreg::enums::HKEY_CURRENT_USER)
        .open_subkey(&key)
        .is_ok();
    info!(
        registered,
        app_id = APP_USER_MODEL_ID,
        "toast identity (unregistered: Windows' default)"
    );
    if registered {
        notification.app_id(APP_USER_MODEL_ID);
    }
}

/// Only Windows identifies notifications by an AppUserModelID.
#[cfg(not(windows))]
fn identify(_notification: &mut notify_rust::Notification) {}
