//! Shows alerts as desktop notifications (notify-rust) from a thread of its own: talking to
//! the notification server is blocking I/O that must never stall the UI or the engine. A
//! session without a notification server is logged once and survived.
//!
//! On Windows a toast carries the app's AppUserModelID, when Windows knows it (see
//! [`identify`]); that is the only platform-specific code here.

use std::sync::Arc;
use std::sync::mpsc::{self, Sender};
use std::thread;

use tracing::{info, warn};

use crate::notify::alerts::{Alert, AlertAction};

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

/// What a click on an alert's button asks for.
pub type OnAction = Arc<dyn Fn(AlertAction) + Send + Sync>;

impl Notifier {
    /// Starts the notification thread (alerts without working buttons).
    pub fn start() -> std::io::Result<Notifier> {
        Notifier::start_with_actions(None)
    }

    /// Starts the notification thread; a click on an alert's button calls `on_action`.
    pub fn start_with_actions(on_action: Option<OnAction>) -> std::io::Result<Notifier> {
        let (alerts, inbox) = mpsc::channel::<Alert>();
        thread::Builder::new()
            .name("notifier".into())
            .spawn(move || {
                let mut failing = false;
                let mut template = notify_rust::Notification::new();
                identify(&mut template);
                // Bodies are markup where the server says so: a traceback's `<module>` must
                // show as text, not vanish as an unknown tag.
                let markup = reads_markup();
                while let Ok(alert) = inbox.recv() {
                    let keys: Vec<&str> = alert.actions.iter().map(|a| a.key()).collect();
                    info!(summary = %alert.summary, body = %alert.body, actions = ?keys, "notification");
                    let mut note = template.clone();
                    note.appname(APP_NAME).summary(&alert.summary).body(&if markup {
                        escape_markup(&alert.body)
                    } else {
                        alert.body.clone()
                    });
                    if alert.sticky {
                        // Kept until dismissed: critical urgency (XDG), a reminder (Windows).
                        #[cfg(not(target_os = "macos"))]
                        note.urgency(notify_rust::Urgency::Critical);
                        note.timeout(notify_rust::Timeout::Never);
                    }
                    if on_action.is_some() {
                        for action in &alert.actions {
                            note.action(action.key(), action.label());
                        }
                    }
                    match note.show() {
                        Ok(handle) => {
                            failing = false;
                            if let Some(on_action) = on_action.as_ref().filter(|_| !keys.is_empty()) {
                                wait_for_click(handle, Arc::clone(on_action));
                            }
                        }
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

/// Waits, on a thread of its own, for a click on one of the alert's buttons (the wait ends
/// when the notification closes).
fn wait_for_click(handle: notify_rust::NotificationHandle, on_action: OnAction) {
    let _ = thread::Builder::new()
        .name("notification-buttons".into())
        .spawn(move || {
            handle.wait_for_action(|key| {
                if let Some(action) = AlertAction::ALL.iter().find(|a| a.key() == key) {
                    info!(action = key, "notification button clicked");
                    on_action(*action);
                }
            });
        });
}

/// Whether the notification server reads bodies as markup.
#[cfg(all(unix, not(target_os = "macos")))]
pub fn reads_markup() -> bool {
    notify_rust::get_capabilities().is_ok_and(|caps| caps.iter().any(|c| c == "body-markup"))
}

/// Toasts and macOS notifications are plain text.
#[cfg(not(all(unix, not(target_os = "macos"))))]
pub fn reads_markup() -> bool {
    false
}

/// `<`, `>` and `&` as entities: the body shows as the text it is.
pub fn escape_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
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

#[cfg(test)]
mod tests {
    #[test]
    fn markup_is_escaped_to_the_text_it_is() {
        assert_eq!(
            super::escape_markup("File \"<frozen importlib._bootstrap>\" & co"),
            "File \"&lt;frozen importlib._bootstrap&gt;\" &amp; co"
        );
    }
}
