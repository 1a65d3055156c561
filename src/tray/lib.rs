//! Desktop wiring: the same engine as headless mode, plus the tray on the main thread, desktop
//! notifications, and the thread that carries out tray clicks (opening files, reloading the
//! config, killing strays), so the UI thread never blocks.
//!
//! The tray crate: the only one that depends on a GUI toolkit, and only the `backend-warden-tray`
//! program links it, so GTK (on Linux) is loaded by that program alone, never by the CLI, the
//! headless warden, the guardian or the demo backend. On Windows it is also what makes
//! `backend-warden-tray.exe` a GUI-subsystem program while `backend-warden.exe` is a console one.
//! Besides this wiring: the menu (`tray.rs`), what it shows for a status ([`tray_view`]), the
//! drawn icons ([`icon`]) and desktop notifications ([`notify`]).

pub mod icon;
pub mod notify;
mod open;
mod tray;
pub mod tray_view;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use tracing::{info, warn};

use crate::notify::alerts::{Alert, AlertAction, AlertPolicy};
use crate::notify::notifier::Notifier;
use crate::tray_view::TrayView;
use backend_warden_core::app::{
    Plan, Primary, describe, start_engine, strays_killed_summary, strays_summary,
};
use backend_warden_core::backend::strays::KillReport;
use backend_warden_core::engine::board::{Notice, Notices};
use backend_warden_core::engine::runner::EngineHandle;
use backend_warden_core::engine::supervisor::Command;
use backend_warden_core::engine::supervisor::Event;
use backend_warden_core::ipc::handler::Control;
use backend_warden_core::paths::Paths;
use backend_warden_core::status::headline;
use backend_warden_core::{autostart, logging};
use tray::{UiAction, UiEvent};

/// Runs the warden with its tray icon: the engine and control endpoint as in headless mode,
/// the tray on this (the main) thread, alerts as desktop notifications. Returns only if the
/// tray cannot be shown at all; otherwise the process ends when the tray closes.
pub fn run_tray(paths: &Paths, plan: Plan, primary: Primary) -> Result<()> {
    if !tray::display_available() {
        // Nothing would show the config error either: say it here too.
        let config_error = plan
            .config_error
            .as_ref()
            .map(|e| format!("\nThe config has an error as well: {e}"))
            .unwrap_or_default();
        anyhow::bail!(
            "no display for a tray icon (DISPLAY and WAYLAND_DISPLAY are unset); \
             run `backend-warden run --headless` to supervise the backend without one{config_error}"
        );
    }
    backend_warden_core::app::prepare_log_dir(&plan.log_dir)?;
    logging::init(&plan.log_dir, true);
    info!("{}", describe(&plan, paths));
    // Clicks on the menu and on the alerts' buttons go the same way.
    let (actions, clicks) = mpsc::channel();
    let button_clicks = Mutex::new(actions.clone());
    let notifier = Notifier::start_with_actions(Some(Arc::new(move |action| {
        let _ = button_clicks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(ui_action(action));
    })))
    .context("cannot start the notifier")?;
    let alerts = Arc::new(Mutex::new(AlertPolicy::new(plan.config.notify.clone())));
    let recent = Arc::new(RecentEvents::default());
    let log_dir = plan.log_dir.clone();
    install_panic_alert(&notifier);
    let config_error = plan.config_error.clone();
    let (notices, received) = Notices::channel();
    let running = start_engine(paths, plan, primary, notices)?;
    welcome_once(paths, &notifier);
    if let Some(error) = config_error {
        notifier.show(
            Alert::urgent(
                "Config error: backend not started",
                format!(
                    "{error}\nUse Edit config in the menu to fix it; saving reloads it. ({})",
                    paths.config_file.display()
                ),
            )
            .sticky()
            .with_actions(&[AlertAction::EditConfig]),
        );
    }
    let on_signal = running.engine.clone();
    ctrlc::set_handler(move || {
        on_signal.command(Command::Shutdown);
    })
    .context("cannot install the Ctrl+C handler")?;

    let config_file = paths.config_file.clone();
    let launch_args = paths.launch_args();
    tray::run(autostart::is_enabled(&launch_args), actions, move |proxy| {
        let control = Arc::clone(&running.control);
        let engine = running.engine.clone();
        // The engine's notices: alerts, and the status to the UI on every change (and twice a
        // minute for the uptime).
        let listener = NoticeListener {
            control: Arc::clone(&control),
            notifier: notifier.clone(),
            alerts: Arc::clone(&alerts),
            recent: Arc::clone(&recent),
            proxy: proxy.clone(),
        };
        let _ = thread::Builder::new()
            .name("tray-notices".into())
            .spawn(move || listener.run(received));
        // Start at login follows changes made elsewhere (`backend-warden autostart ...`, the
        // installer): the entry is a file or a registry value, read every few seconds.
        let autostart_proxy = proxy.clone();
        let autostart_args = launch_args.clone();
        let _ = thread::Builder::new()
            .name("tray-autostart".into())
            .spawn(move || {
                let mut shown = autostart::is_enabled(&autostart_args);
                loop {
                    thread::sleep(AUTOSTART_POLL);
                    let now = autostart::is_enabled(&autostart_args);
                    if now != shown {
                        shown = now;
                        if autostart_proxy.send_event(UiEvent::Autostart(now)).is_err() {
                            return;
                        }
                    }
                }
            });
        // Clicks, carried out off the UI thread.
        let action_proxy = proxy.clone();
        let _ = thread::Builder::new()
            .name("tray-actions".into())
            .spawn(move || {
                let actions = TrayActions {
                    engine,
                    control,
                    notifier,
                    alerts,
                    recent,
                    config_file,
                    start_log_dir: log_dir,
                    launch_args,
                    proxy: action_proxy,
                    clipboard: Mutex::new(None),
                };
                while let Ok(action) = clicks.recv() {
                    actions.carry_out(action);
                }
            });
        // When the engine has ended (Quit, SIGTERM), close the tray.
        let _ = thread::Builder::new()
            .name("tray-exit".into())
            .spawn(move || {
                running.wait();
                info!("warden stopped");
                let _ = proxy.send_event(UiEvent::Exit);
            });
    })
}

/// How often the tray's status is refreshed without a change (its uptime).
const STATUS_REFRESH: Duration = Duration::from_secs(30);

/// Reads the engine's notices on a thread of its own: turns them into alerts and recent
/// events, and sends the tray a fresh status after every batch of changes.
struct NoticeListener {
    control: Arc<Control>,
    notifier: Notifier,
    alerts: Arc<Mutex<AlertPolicy>>,
    recent: Arc<RecentEvents>,
    proxy: tao::event_loop::EventLoopProxy<UiEvent>,
}

impl NoticeListener {
    /// Runs until the engine is gone (the channel closes) or the tray is.
    fn run(self, notices: mpsc::Receiver<Notice>) {
        let mut events_shown = 0;
        let mut first = None;
        loop {
            // What came meanwhile is handled first: one status for a burst of changes.
            for notice in first.take().into_iter().chain(notices.try_iter()) {
                self.tell(notice);
            }
            let report = Box::new(self.control.report());
            if self.proxy.send_event(UiEvent::Status(report)).is_err() {
                return;
            }
            if let Some((version, lines)) = self.recent.since(events_shown) {
                events_shown = version;
                let _ = self.proxy.send_event(UiEvent::Events(lines));
            }
            first = match notices.recv_timeout(STATUS_REFRESH) {
                Ok(notice) => Some(notice),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
        }
    }

    fn alerts(&self) -> std::sync::MutexGuard<'_, AlertPolicy> {
        self.alerts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells the user about one notice (a change of state needs nothing here: the status
    /// that follows every batch shows it).
    fn tell(&self, notice: Notice) {
        match notice {
            Notice::Changed => {}
            Notice::Event(event) => {
                self.recent.record(&event);
                let alert = self.alerts().on_event(&event);
                if let Some(alert) = alert {
                    self.notifier.show(alert);
                }
            }
            Notice::Strays(scan) => {
                let alert = self.alerts().on_strays(&strays_summary(&scan));
                if let Some(alert) = alert {
                    self.notifier.show(alert);
                }
            }
            Notice::StraysKilled(report) => {
                self.recent.strays_killed(&report);
                self.notifier.show(Alert::info(
                    "Stray backend copies killed",
                    strays_killed_summary(&report),
                ));
            }
            Notice::Show(status) => self.notifier.show(Alert::info(
                "Backend Warden is already running",
                format!("Backend {}", status.summary()),
            )),
            Notice::ConfigSaved(Ok((message, config))) => {
                self.alerts().set_notify(config.notify);
                info!("config file saved: {message}");
                self.notifier.show(Alert::info("Config reloaded", message));
            }
            Notice::ConfigSaved(Err(e)) => {
                warn!(error = %e, "config file saved but not reloaded");
                let alert = self.alerts().on_config_error(&e);
                if let Some(alert) = alert {
                    self.notifier.show(alert);
                }
            }
            Notice::LogError(message) => {
                tracing::error!("{message}");
                self.notifier.show(
                    Alert::urgent("Backend output is being lost", message)
                        .with_actions(&[AlertAction::OpenLogs]),
                );
            }
        }
    }
}

/// Carries out tray clicks (file, process and engine work the UI thread must not do).
struct TrayActions {
    engine: EngineHandle,
    control: Arc<Control>,
    notifier: Notifier,
    alerts: Arc<Mutex<AlertPolicy>>,
    recent: Arc<RecentEvents>,
    config_file: PathBuf,
    /// Where the logs went at start; a reload may move them (see [`TrayActions::log_dir`]).
    start_log_dir: PathBuf,
    /// What the login entry passes to start this same warden.
    launch_args: Vec<OsString>,
    proxy: tao::event_loop::EventLoopProxy<UiEvent>,
    /// Kept for the life of the tray: on X11 the copied text is served by its owner.
    clipboard: Mutex<Option<arboard::Clipboard>>,
}

/// A bug (a panic on any thread) is logged with its place and shown as an alert that stays,
/// then handled as before (the thread ends; a panic in the engine ends the warden).
fn install_panic_alert(notifier: &Notifier) {
    let notifier = notifier.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(panic = %info, "Backend Warden hit a bug");
        notifier.show(
            Alert::urgent(
                "Backend Warden hit a bug",
                format!(
                    "{info}\nIt is in warden.log; Save diagnostics… in the menu collects it \
                     for a developer."
                ),
            )
            .sticky(),
        );
        previous(info);
    }));
}

/// The first launch says where the warden is and what to do next, once per user (a marker
/// beside the warden's own logs remembers it).
fn welcome_once(paths: &Paths, notifier: &Notifier) {
    let marker = paths.default_log_dir.join(".welcome-shown");
    if marker.exists() {
        return;
    }
    notifier.show(Alert::info(
        "Backend Warden is running",
        "It lives in the notification area (the round icon). Point it at your backend with \
         Edit config in its menu; until then it runs a small demo backend.",
    ));
    if let Err(e) = std::fs::create_dir_all(&paths.default_log_dir)
        .and_then(|()| std::fs::write(&marker, env!("CARGO_PKG_VERSION")))
    {
        warn!(error = %e, "cannot remember that the welcome was shown");
    }
}

/// The README beside the program (installed), or in the source tree it was built from.
fn readme() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("README.md")));
    let source = Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"));
    [beside, source].into_iter().flatten().find(|p| p.is_file())
}

/// The alert button's action as a menu click.
fn ui_action(action: AlertAction) -> UiAction {
    match action {
        AlertAction::KillStrays => UiAction::KillStrays,
        AlertAction::OpenLogs => UiAction::OpenLogs,
        AlertAction::Restart => UiAction::Restart,
        AlertAction::EditConfig => UiAction::EditConfig,
    }
}

/// The last [`tray::RECENT_EVENTS`] crashes, restarts, give-ups and stray kills, newest
/// first, with the local time: what the *Recent events* submenu lists.
#[derive(Default)]
struct RecentEvents {
    lines: Mutex<(usize, std::collections::VecDeque<String>)>,
}

impl RecentEvents {
    fn push(&self, what: String) {
        let mut guard = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        let (version, lines) = &mut *guard;
        let when = backend_warden_core::clock::local_time(std::time::SystemTime::now());
        lines.push_front(format!("{when}  {what}"));
        lines.truncate(tray::RECENT_EVENTS);
        *version += 1;
    }

    fn record(&self, event: &Event) {
        if let Some(what) = event_line(event) {
            self.push(what);
        }
    }

    fn strays_killed(&self, report: &KillReport) {
        let pids: Vec<String> = report
            .killed
            .iter()
            .map(|(pid, _)| pid.to_string())
            .collect();
        if !pids.is_empty() {
            self.push(format!("killed strays: PID {}", pids.join(", ")));
        }
    }

    /// The lines, if they changed since `version`.
    fn since(&self, version: usize) -> Option<(usize, Vec<String>)> {
        let guard = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        (guard.0 != version).then(|| (guard.0, guard.1.iter().cloned().collect()))
    }
}

/// One line for the *Recent events* submenu, for the events a teammate looks back at.
fn event_line(event: &Event) -> Option<String> {
    Some(match event {
        Event::Crashed { status, tail, .. } => match headline(&tail.join("\n")) {
            why if why.is_empty() => format!("crashed: it {status}"),
            why => format!("crashed: {why}"),
        },
        Event::GaveUp { reason } => format!("gave up: {}", headline(reason)),
        Event::Unhealthy { error, .. } => format!("unhealthy: {error}"),
        Event::Healthy {
            recovered: true, ..
        } => "recovered".to_string(),
        Event::RestartingUnhealthy { unhealthy_for, .. } => format!(
            "restarted: unhealthy for {}",
            backend_warden_core::status::human_duration(*unhealthy_for)
        ),
        Event::RestartingForCode { count, .. } => {
            format!("restarted: the code changed ({count} file(s))")
        }
        Event::Stopped { forced: true, .. } => "stopped (it had to be killed)".to_string(),
        _ => return None,
    })
}

/// How often the tray looks at the login entry (see `tray-autostart`).
const AUTOSTART_POLL: Duration = Duration::from_secs(2);

impl TrayActions {
    /// The log folder in force (a reload may have moved it).
    fn log_dir(&self) -> PathBuf {
        self.control
            .report()
            .log_path
            .parent()
            .map_or_else(|| self.start_log_dir.clone(), Path::to_path_buf)
    }

    fn carry_out(&self, action: UiAction) {
        info!(?action, "tray");
        match action {
            UiAction::Start => {
                self.engine.command(Command::Start);
            }
            UiAction::Stop => {
                self.engine.command(Command::Stop);
            }
            UiAction::Restart => {
                self.engine.command(Command::Restart);
            }
            UiAction::Quit => {
                self.engine.command(Command::Shutdown);
            }
            UiAction::OpenLogs => {
                let log = self.log_dir().join("backend.log");
                if log.exists() {
                    self.open(&log, open::Kind::Text);
                } else {
                    self.notifier.show(Alert::info(
                        "No log yet",
                        format!("{} does not exist: the backend has not run.", log.display()),
                    ));
                }
            }
            UiAction::OpenLogFolder => self.open(&self.log_dir(), open::Kind::Folder),
            UiAction::KillStrays | UiAction::KillDebug => match self
                .control
                .kill_strays(false, action == UiAction::KillDebug)
            {
                Ok(report) => {
                    self.recent.strays_killed(&report);
                    let killed: Vec<String> = report
                        .killed
                        .iter()
                        .map(|(pid, _)| pid.to_string())
                        .collect();
                    let body = if killed.is_empty() {
                        "No strays were running.".to_string()
                    } else {
                        format!("Killed PIDs {} and their children.", killed.join(", "))
                    };
                    self.notifier.show(Alert::info("Strays killed", body));
                }
                Err(e) => self.notifier.show(Alert::info("Cannot kill strays", e)),
            },
            UiAction::EditConfig => {
                if !self.config_file.exists() {
                    let Some(created) = self.create_config() else {
                        return;
                    };
                    self.notifier.show(Alert::info("Config created", created));
                }
                self.open(&self.config_file, open::Kind::Text);
            }
            UiAction::ReloadConfig => match self.control.reload() {
                Ok((message, config)) => {
                    self.alerts
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .set_notify(config.notify);
                    self.notifier.show(Alert::info("Config reloaded", message));
                }
                Err(e) => {
                    let alert = self
                        .alerts
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .on_config_error(&e);
                    warn!(error = %e, "config not reloaded");
                    if let Some(alert) = alert {
                        self.notifier.show(alert);
                    }
                }
            },
            UiAction::SetAutostart(on) => {
                let result = if on {
                    autostart::enable(&self.launch_args)
                } else {
                    autostart::disable()
                };
                if let Err(e) = result {
                    self.notifier
                        .show(Alert::info("Cannot change start at login", e.to_string()));
                }
                let _ = self
                    .proxy
                    .send_event(UiEvent::Autostart(autostart::is_enabled(&self.launch_args)));
            }
            UiAction::About => self.notifier.show(Alert::info(
                format!("Backend Warden {}", env!("CARGO_PKG_VERSION")),
                format!(
                    "Keeps exactly one copy of your local backend alive and honest.\n\
                     Config: {}\nLogs: {}\nHelp: {}",
                    self.config_file.display(),
                    self.log_dir().display(),
                    readme().map_or_else(
                        || "backend-warden --help".to_string(),
                        |p| p.display().to_string()
                    ),
                ),
            )),
            UiAction::CopyDetails => self.copy_details(),
            UiAction::OpenInBrowser => match self.control.report().open_url {
                Some(url) => {
                    if let Err(e) = opener::open_browser(&url) {
                        self.notifier.show(Alert::info(
                            "Cannot open the browser",
                            format!("{url}: {e}"),
                        ));
                    }
                }
                None => self.notifier.show(Alert::info(
                    "No address to open",
                    "Set backend.open_url (or [health] url) in the config.",
                )),
            },
            UiAction::OpenConfigFolder => {
                let folder = self
                    .config_file
                    .parent()
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
                if let Err(e) = std::fs::create_dir_all(&folder) {
                    self.notifier.show(Alert::info(
                        "Cannot open the config folder",
                        format!("{}: {e}", folder.display()),
                    ));
                    return;
                }
                self.open(&folder, open::Kind::Folder);
            }
            UiAction::SaveDiagnostics => self.save_diagnostics(),
        }
    }

    /// Writes a config where there is none: the one `config init --detect` would write for the
    /// project the tray was started in (a developer's `backend-warden` from the project's
    /// folder), else the commented template. What it did, in words; `None` after an alert
    /// saying why it could not.
    fn create_config(&self) -> Option<String> {
        let project = std::env::current_dir().ok().filter(|dir| {
            // Started from the desktop, the folder says nothing about a project.
            let home = directories::UserDirs::new().map(|d| d.home_dir().to_path_buf());
            Some(dir) != home.as_ref() && dir.parent().is_some()
        });
        let detected = project.as_deref().and_then(|dir| {
            let detection = backend_warden_core::detect::detect(dir);
            Some((dir.to_path_buf(), detection.config.clone()?, detection))
        });
        let (text, what) = match &detected {
            Some((dir, config, detection)) => (
                config.as_str(),
                format!(
                    "{} now runs the project in {} (found: {}{}). Check it and save; the warden \
                     reloads it.",
                    self.config_file.display(),
                    dir.display(),
                    detection.found.join("; "),
                    if detection.guessed.is_empty() {
                        String::new()
                    } else {
                        format!("; guessed: {}", detection.guessed.join("; "))
                    }
                ),
            ),
            None => (
                backend_warden_core::config::template(),
                format!(
                    "{} did not exist: it now holds the commented template. Fill in [backend] \
                     and save; the warden reloads it.",
                    self.config_file.display()
                ),
            ),
        };
        match backend_warden_core::app::write_config(&self.config_file, text, false) {
            Ok(()) => Some(what),
            Err(e) => {
                self.notifier
                    .show(Alert::info("Cannot create the config", format!("{e:#}")));
                None
            }
        }
    }

    fn copy_details(&self) {
        let report = self.control.report();
        let Some(details) = TrayView::of(&report).details else {
            self.notifier.show(Alert::info(
                "Nothing to copy",
                "The backend has not failed.",
            ));
            return;
        };
        let mut clipboard = self
            .clipboard
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let copied = match clipboard.as_mut() {
            Some(c) => c.set_text(details.clone()),
            None => arboard::Clipboard::new().and_then(|mut c| {
                let copied = c.set_text(details.clone());
                *clipboard = Some(c);
                copied
            }),
        };
        if let Err(e) = copied {
            warn!(error = %e, "cannot copy to the clipboard");
            self.notifier.show(Alert::info(
                "Cannot copy to the clipboard",
                format!(
                    "{e}. The details are in {}.",
                    self.log_dir().join("backend.log").display()
                ),
            ));
        }
    }

    fn save_diagnostics(&self) {
        let report = self.control.report();
        let text = backend_warden_core::diagnostics::report(
            Some(&report),
            &self.config_file,
            &self.log_dir(),
        );
        let file = backend_warden_core::diagnostics::default_file(&self.log_dir());
        match std::fs::write(&file, text) {
            Ok(()) => {
                info!(file = %file.display(), "diagnostics saved");
                self.notifier.show(Alert::info(
                    "Diagnostics saved",
                    format!(
                        "{}\nSend this file to a developer (secrets are redacted).",
                        file.display()
                    ),
                ));
                if opener::reveal(&file).is_err() {
                    let folder = file
                        .parent()
                        .map_or_else(|| self.log_dir(), Path::to_path_buf);
                    self.open(&folder, open::Kind::Folder);
                }
            }
            Err(e) => self.notifier.show(Alert::info(
                "Cannot save diagnostics",
                format!("{}: {e}", file.display()),
            )),
        }
    }

    /// Opens `path` (with a fallback where no program is associated); says so when nothing
    /// could, naming the path.
    fn open(&self, path: &Path, kind: open::Kind) {
        if let Err(why) = open::open(path, kind) {
            warn!(path = %path.display(), %why, "cannot open");
            self.notifier.show(Alert::info("Cannot open", why));
        }
    }
}
