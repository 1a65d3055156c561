//! The tray icon and its menu. It only translates: menu clicks become [`UiAction`]s for the
//! app to carry out, status reports become icon, tooltip and menu updates. No process, file or
//! socket I/O happens here, and nothing blocks the UI thread.
//!
//! tao owns the main thread; the `TrayIcon` is `!Send`, so it is built once the loop has
//! started (`StartCause::Init`) and never moved. Menu events are forwarded into the loop
//! through the `EventLoopProxy`; there is no polling timer.

use std::sync::mpsc::Sender;

use tao::event::{Event, StartCause};
use tao::event_loop::{ControlFlow, EventLoopBuilder, EventLoopProxy};
use tray_icon::menu::{
    CheckMenuItem, Menu, MenuEvent, MenuId, MenuItem, PredefinedMenuItem, Submenu,
};
use tray_icon::{Icon, TrayIcon, TrayIconBuilder};

use crate::icon::{self, Look};
use crate::tray_view::TrayView;
use backend_warden_core::status::StatusReport;

/// What a click asks for; the app carries it out off the UI thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UiAction {
    /// Start the backend.
    Start,
    /// Stop the backend tree.
    Stop,
    /// Restart the backend.
    Restart,
    /// Open backend.log in the default app.
    OpenLogs,
    /// Open the log folder.
    OpenLogFolder,
    /// Kill the strays.
    KillStrays,
    /// Kill the strays, debug sessions included.
    KillDebug,
    /// Put the failure's details on the clipboard.
    CopyDetails,
    /// Open the backend's address in the browser.
    OpenInBrowser,
    /// Open the folder of the config file.
    OpenConfigFolder,
    /// Save a diagnostics file for a developer.
    SaveDiagnostics,
    /// Open the config file (writing the template first if there is none).
    EditConfig,
    /// Read the config again.
    ReloadConfig,
    /// Start at login: on or off.
    SetAutostart(bool),
    /// Show the version.
    About,
    /// Stop the backend tree and the warden.
    Quit,
}

/// What the app tells the UI thread.
#[derive(Debug, Clone)]
pub enum UiEvent {
    /// A new status to show.
    Status(Box<StatusReport>),
    /// Whether start at login is on.
    Autostart(bool),
    /// The recent events, newest first ("10:02 crashed: exited with code 1").
    Events(Vec<String>),
    /// A menu item was clicked (forwarded from muda's handler).
    Menu(MenuId),
    /// The warden has stopped: close the tray.
    Exit,
}

/// The tray's size in pixels: what trays draw at 100 % (larger sources scale down well).
const ICON_SIZE: u32 = 32;

/// How many recent events the submenu lists.
pub const RECENT_EVENTS: usize = 10;

struct Items {
    status: MenuItem,
    alert: MenuItem,
    alert_shown: bool,
    /// Why it failed (or last crashed), kept while the state lasts.
    reason: MenuItem,
    reason_shown: bool,
    copy: MenuItem,
    recent: Submenu,
    recent_items: Vec<MenuItem>,
    recent_empty: MenuItem,
    kill_debug: MenuItem,
    kill_debug_shown: bool,
    open_browser: MenuItem,
    open_config_folder: MenuItem,
    save_diagnostics: MenuItem,
    start: MenuItem,
    stop: MenuItem,
    restart: MenuItem,
    open_logs: MenuItem,
    open_folder: MenuItem,
    kill: MenuItem,
    edit: MenuItem,
    reload: MenuItem,
    autostart: CheckMenuItem,
    about: MenuItem,
    quit: MenuItem,
}

impl Items {
    fn new(autostart: bool) -> Items {
        Items {
            status: MenuItem::new("Backend: starting", false, None),
            alert: MenuItem::new("", false, None),
            alert_shown: false,
            reason: MenuItem::new("", false, None),
            reason_shown: false,
            copy: MenuItem::new("Copy details", false, None),
            recent: Submenu::new("Recent events", true),
            recent_items: Vec::new(),
            recent_empty: MenuItem::new("Nothing has happened yet", false, None),
            kill_debug: MenuItem::new("", true, None),
            kill_debug_shown: false,
            open_browser: MenuItem::new("Open in browser", false, None),
            open_config_folder: MenuItem::new("Open config folder", true, None),
            save_diagnostics: MenuItem::new("Save diagnostics…", true, None),
            start: MenuItem::new("Start", false, None),
            stop: MenuItem::new("Stop", false, None),
            restart: MenuItem::new("Restart", false, None),
            open_logs: MenuItem::new("Open logs", true, None),
            open_folder: MenuItem::new("Open log folder", true, None),
            kill: MenuItem::new("Kill strays", false, None),
            edit: MenuItem::new("Edit config", true, None),
            reload: MenuItem::new("Reload config", true, None),
            autostart: CheckMenuItem::new("Start at login", true, autostart, None),
            about: MenuItem::new(
                format!("About Backend Warden {}", env!("CARGO_PKG_VERSION")),
                true,
                None,
            ),
            // Quitting stops the backend too: the label says so.
            quit: MenuItem::new("Quit (stops the backend)", true, None),
        }
    }

    fn menu(&self) -> Result<Menu, tray_icon::menu::Error> {
        let menu = Menu::new();
        self.recent.append(&self.recent_empty)?;
        menu.append_items(&[
            &self.status,
            &self.copy,
            &self.recent,
            &PredefinedMenuItem::separator(),
            &self.start,
            &self.stop,
            &self.restart,
            &self.open_browser,
            &PredefinedMenuItem::separator(),
            &self.open_logs,
            &self.open_folder,
            &self.kill,
            &PredefinedMenuItem::separator(),
            &self.edit,
            &self.reload,
            &self.open_config_folder,
            &self.autostart,
            &PredefinedMenuItem::separator(),
            &self.save_diagnostics,
            &self.about,
            &self.quit,
        ])?;
        Ok(menu)
    }

    fn action(&self, id: &MenuId) -> Option<UiAction> {
        let table = [
            (&self.start, UiAction::Start),
            (&self.stop, UiAction::Stop),
            (&self.restart, UiAction::Restart),
            (&self.open_logs, UiAction::OpenLogs),
            (&self.open_folder, UiAction::OpenLogFolder),
            (&self.kill, UiAction::KillStrays),
            (&self.kill_debug, UiAction::KillDebug),
            (&self.copy, UiAction::CopyDetails),
            (&self.open_browser, UiAction::OpenInBrowser),
            (&self.open_config_folder, UiAction::OpenConfigFolder),
            (&self.save_diagnostics, UiAction::SaveDiagnostics),
            (&self.edit, UiAction::EditConfig),
            (&self.reload, UiAction::ReloadConfig),
            (&self.about, UiAction::About),
            (&self.quit, UiAction::Quit),
        ];
        if id == self.autostart.id() {
            return Some(UiAction::SetAutostart(self.autostart.is_checked()));
        }
        table
            .into_iter()
            .find(|(item, _)| item.id() == id)
            .map(|(_, action)| action)
    }

    fn apply(&mut self, menu: &Menu, view: &TrayView) {
        self.status.set_text(&view.status_line);
        match (&view.alert_line, self.alert_shown) {
            (Some(line), shown) => {
                self.alert.set_text(line);
                if !shown && menu.insert(&self.alert, 1).is_ok() {
                    self.alert_shown = true;
                }
            }
            (None, true) => {
                if menu.remove(&self.alert).is_ok() {
                    self.alert_shown = false;
                }
            }
            (None, false) => {}
        }
        self.start.set_enabled(view.can_start);
        self.stop.set_enabled(view.can_stop);
        self.restart.set_enabled(view.can_restart);
        self.restart.set_text(&view.restart_label);
        self.kill.set_text(&view.kill_label);
        self.kill.set_enabled(view.can_kill);
        // The reason line sits right under the status line (and the alert line).
        let at = 1 + usize::from(self.alert_shown);
        self.reason_shown = toggle(
            menu,
            &self.reason,
            self.reason_shown,
            view.reason_line.as_deref(),
            at,
        );
        self.copy.set_enabled(view.details.is_some());
        let kill_at = menu
            .items()
            .iter()
            .position(|i| i.id() == self.kill.id())
            .map_or(0, |p| p + 1);
        self.kill_debug_shown = toggle(
            menu,
            &self.kill_debug,
            self.kill_debug_shown,
            view.kill_debug_label.as_deref(),
            kill_at,
        );
        self.open_browser.set_enabled(view.open_url.is_some());
    }

    /// Lists `events` (newest first) in the Recent events submenu.
    fn show_events(&mut self, events: &[String]) {
        for item in self.recent_items.drain(..) {
            let _ = self.recent.remove(&item);
        }
        if events.is_empty() {
            return;
        }
        let _ = self.recent.remove(&self.recent_empty);
        for line in events.iter().take(RECENT_EVENTS) {
            let item = MenuItem::new(line, false, None);
            if self.recent.append(&item).is_ok() {
                self.recent_items.push(item);
            }
        }
    }
}

/// Shows `item` with `text` at `at` (inserting it if it was not shown), or removes it when
/// `text` is `None`. Whether it is shown now.
fn toggle(menu: &Menu, item: &MenuItem, shown: bool, text: Option<&str>, at: usize) -> bool {
    match (text, shown) {
        (Some(text), shown) => {
            item.set_text(text);
            shown || menu.insert(item, at).is_ok()
        }
        (None, true) => menu.remove(item).is_err(),
        (None, false) => false,
    }
}

fn tray_icon_image(look: Look, badge: bool) -> Option<Icon> {
    let image = icon::render(look, badge, ICON_SIZE);
    Icon::from_rgba(image.pixels, image.size, image.size).ok()
}

/// Whether a tray can be shown here. On Linux without an X11 or Wayland display there is none;
/// elsewhere there always is one.
pub fn display_available() -> bool {
    if cfg!(any(windows, target_os = "macos")) {
        return true;
    }
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// Runs the tray on this (the main) thread until [`UiEvent::Exit`]. `started` receives the
/// proxy through which the app sends status updates; `actions` receives the clicks.
pub fn run(
    autostart: bool,
    actions: Sender<UiAction>,
    started: impl FnOnce(EventLoopProxy<UiEvent>),
) -> ! {
    let event_loop = EventLoopBuilder::<UiEvent>::with_user_event().build();
    let proxy = event_loop.create_proxy();
    let menu_proxy = proxy.clone();
    MenuEvent::set_event_handler(Some(move |event: MenuEvent| {
        let _ = menu_proxy.send_event(UiEvent::Menu(event.id));
    }));
    started(proxy);

    let mut tray: Option<(TrayIcon, Menu, Items)> = None;
    let mut shown: Option<(Look, bool)> = None;
    let mut last_tooltip = String::new();
    event_loop.run(move |event, _, control_flow| {
        *control_flow = ControlFlow::Wait;
        match event {
            Event::NewEvents(StartCause::Init) => {
                // Linux panels show the application name when the pointer rests on the icon
                // (the status indicator has no tooltip): say what this is, not the binary.
                #[cfg(target_os = "linux")]
                gtk::glib::set_application_name("Backend Warden");
                let items = Items::new(autostart);
                let built = items.menu().map_err(|e| e.to_string()).and_then(|menu| {
                    TrayIconBuilder::new()
                        .with_menu(Box::new(menu.clone()))
                        .with_menu_on_left_click(true)
                        .with_tooltip("Backend Warden")
                        .with_title("Backend Warden")
                        .with_icon(
                            tray_icon_image(Look::Starting, false)
                                .ok_or_else(|| "cannot draw the icon".to_string())?,
                        )
                        .build()
                        .map(|icon| (icon, menu))
                        .map_err(|e| e.to_string())
                });
                match built {
                    Ok((icon, menu)) => {
                        tracing::info!("tray icon ready");
                        tray = Some((icon, menu, items));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot create the tray icon");
                        eprintln!(
                            "backend-warden: cannot create the tray icon ({e}); \
                             use `backend-warden run --headless`"
                        );
                        let _ = actions.send(UiAction::Quit);
                    }
                }
            }
            Event::UserEvent(UiEvent::Menu(id)) => {
                if let Some((_, _, items)) = &tray
                    && let Some(action) = items.action(&id)
                {
                    let _ = actions.send(action);
                }
            }
            Event::UserEvent(UiEvent::Status(report)) => {
                if let Some((icon, menu, items)) = &mut tray {
                    let view = TrayView::of(&report);
                    if shown != Some((view.look, view.badge)) {
                        if let Some(image) = tray_icon_image(view.look, view.badge) {
                            let _ = icon.set_icon(Some(image));
                        }
                        shown = Some((view.look, view.badge));
                    }
                    if view.tooltip != last_tooltip {
                        let _ = icon.set_tooltip(Some(&view.tooltip));
                        last_tooltip.clone_from(&view.tooltip);
                    }
                    items.apply(menu, &view);
                }
            }
            Event::UserEvent(UiEvent::Events(events)) => {
                if let Some((_, _, items)) = &mut tray {
                    items.show_events(&events);
                }
            }
            Event::UserEvent(UiEvent::Autostart(on)) => {
                if let Some((_, _, items)) = &tray {
                    items.autostart.set_checked(on);
                }
            }
            Event::UserEvent(UiEvent::Exit) => {
                tray = None;
                *control_flow = ControlFlow::Exit;
            }
            _ => {}
        }
    })
}
