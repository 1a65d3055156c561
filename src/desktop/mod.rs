//! Desktop wiring: the same engine as headless mode, plus the tray on the main thread, desktop
//! notifications, and the thread that carries out tray clicks (opening files, reloading the
//! config, killing strays), so the UI thread never blocks.
//!
//! Not part of the library: only the programs that show the tray compile this module, so the
//! GUI toolkit (GTK on Linux) is linked and loaded by `backend-warden-tray` alone, never by the
//! CLI, the headless warden, the guardian or the demo backend. On Windows it is also what makes
//! `backend-warden-tray.exe` a GUI-subsystem program while `backend-warden.exe` is a console one.

mod tray;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use tracing::{info, warn};

use backend_warden::alerts::{Alert, AlertPolicy};
use backend_warden::app::{
    Hooks, Plan, Primary, describe, start_engine, strays_summary, write_template,
};
use backend_warden::control::Control;
use backend_warden::notifier::Notifier;
use backend_warden::paths::Paths;
use backend_warden::runner::EngineHandle;
use backend_warden::supervisor::Command;
use backend_warden::{autostart, logging};
use tray::{UiAction, UiEvent};

/// Runs the warden with its tray icon: the engine and control endpoint as in headless mode,
/// the tray on this (the main) thread, alerts as desktop notifications. Returns only if the
/// tray cannot be shown at all; otherwise the process ends when the tray closes.
pub fn run_tray(paths: &Paths, plan: Plan, primary: Primary) -> Result<()> {
    if !tray::display_available() {
        anyhow::bail!(
            "no display for a tray icon (DISPLAY and WAYLAND_DISPLAY are unset); \
             run `backend-warden run --headless` to supervise the backend without one"
        );
    }
    std::fs::create_dir_all(&plan.log_dir)
        .with_context(|| format!("cannot create the log folder {}", plan.log_dir.display()))?;
    logging::init(&plan.log_dir, true);
    info!("{}", describe(&plan, paths));
    let notifier = Notifier::start().context("cannot start the notifier")?;
    let alerts = Arc::new(Mutex::new(AlertPolicy::new(plan.config.notify.clone())));
    let log_dir = plan.log_dir.clone();
    let hooks = Hooks {
        on_event: {
            let (alerts, notifier) = (Arc::clone(&alerts), notifier.clone());
            Box::new(move |event| {
                let alert = alerts
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .on_event(event);
                if let Some(alert) = alert {
                    notifier.show(alert);
                }
            })
        },
        on_strays: {
            let (alerts, notifier) = (Arc::clone(&alerts), notifier.clone());
            Box::new(move |scan| {
                let alert = alerts
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .on_strays(&strays_summary(scan));
                if let Some(alert) = alert {
                    notifier.show(alert);
                }
            })
        },
        on_strays_killed: {
            let notifier = notifier.clone();
            Box::new(move |report| {
                notifier.show(Alert::info(
                    "Stray backend copies killed",
                    crate::app::strays_killed_summary(report),
                ));
            })
        },
        on_show: {
            let notifier = notifier.clone();
            Box::new(move |status| {
                notifier.show(Alert::info(
                    "Backend Warden is already running",
                    format!("Backend {}", status.summary()),
                ))
            })
        },
    };
    let running = start_engine(paths, plan, primary, hooks)?;
    let on_signal = running.engine.clone();
    ctrlc::set_handler(move || {
        on_signal.command(Command::Shutdown);
    })
    .context("cannot install the Ctrl+C handler")?;

    let (actions, clicks) = mpsc::channel();
    let config_file = paths.config_file.clone();
    tray::run(autostart::is_enabled(), actions, move |proxy| {
        let board = Arc::clone(&running.board);
        let control = Arc::clone(&running.control);
        let engine = running.engine.clone();
        // Status to the UI: on every change, and twice a minute for the uptime.
        let status_proxy = proxy.clone();
        let status_control = Arc::clone(&control);
        let _ = thread::Builder::new()
            .name("tray-status".into())
            .spawn(move || {
                let mut seen = 0;
                loop {
                    let report = Box::new(status_control.report());
                    if status_proxy.send_event(UiEvent::Status(report)).is_err() {
                        return;
                    }
                    seen = board.wait_change(seen, Duration::from_secs(30));
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
                    config_file,
                    log_dir,
                    proxy: action_proxy,
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

/// Carries out tray clicks (file, process and engine work the UI thread must not do).
struct TrayActions {
    engine: EngineHandle,
    control: Arc<Control>,
    notifier: Notifier,
    alerts: Arc<Mutex<AlertPolicy>>,
    config_file: PathBuf,
    log_dir: PathBuf,
    proxy: tao::event_loop::EventLoopProxy<UiEvent>,
}

impl TrayActions {
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
                let log = self.log_dir.join("backend.log");
                if log.exists() {
                    self.open(&log);
                } else {
                    self.notifier.show(Alert::info(
                        "No log yet",
                        format!("{} does not exist: the backend has not run.", log.display()),
                    ));
                }
            }
            UiAction::OpenLogFolder => self.open(&self.log_dir),
            UiAction::KillStrays => match self.control.kill_strays(false, false) {
                Ok(report) => {
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
                if !self.config_file.exists()
                    && let Err(e) = write_template(&self.config_file, false)
                {
                    self.notifier
                        .show(Alert::info("Cannot create the config", format!("{e:#}")));
                    return;
                }
                self.open(&self.config_file);
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
                    autostart::enable()
                } else {
                    autostart::disable()
                };
                if let Err(e) = result {
                    self.notifier
                        .show(Alert::info("Cannot change start at login", e.to_string()));
                }
                let _ = self
                    .proxy
                    .send_event(UiEvent::Autostart(autostart::is_enabled()));
            }
            UiAction::About => self.notifier.show(Alert::info(
                format!("Backend Warden {}", env!("CARGO_PKG_VERSION")),
                "Keeps exactly one copy of your local backend alive and honest.",
            )),
        }
    }

    fn open(&self, path: &Path) {
        if let Err(e) = opener::open(path) {
            self.notifier.show(Alert::info(
                "Cannot open",
                format!("{}: {e}", path.display()),
            ));
        }
    }
}
