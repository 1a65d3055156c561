//! `backend-warden-tray`: the warden with its tray icon. `backend-warden` (with no command, or
//! `run`) becomes this program, and the autostart entry names `backend-warden` too, so users
//! and scripts never need this name. It is a program of its own so that only the tray loads
//! the GUI libraries (GTK and its dependencies on Linux): the CLI, the headless warden and the
//! helpers it starts (guardian, demo backend) are the `backend-warden` beside it, and stay
//! small.

// A GUI-subsystem program on Windows: no console window at login or from the Start menu.
// Ignored elsewhere.
#![windows_subsystem = "windows"]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use backend_warden_core::app::{self, EXIT_FAILED};
use backend_warden_core::paths::main_program;
use backend_warden_core::paths::{HOME_ENV, Paths};

/// The Backend Warden tray: keeps exactly one copy of your local backend alive and honest.
#[derive(Debug, Parser)]
#[command(
    name = "backend-warden-tray",
    version,
    after_help = format!(
        "Usually started as `backend-warden`, which has the commands (status, stop, logs, ...).\n\
         Files: as for `backend-warden`, or all under ${HOME_ENV} when it is set."
    )
)]
struct Cli {
    /// Use this config file instead of the default one.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,

    /// Keep everything (config, logs, runtime state) under DIR, as BACKEND_WARDEN_HOME does.
    #[arg(long, value_name = "DIR")]
    home: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The helpers (guardian, demo backend) and the autostart entry are `backend-warden`.
    match main_program() {
        Ok(main_program) if main_program.is_file() => {}
        Ok(main_program) => {
            fatal(
                None,
                &format!(
                    "{} is missing: the tray needs the program it was installed with. \
                     Reinstall Backend Warden.",
                    main_program.display()
                ),
            );
            return ExitCode::from(EXIT_FAILED);
        }
        Err(e) => {
            fatal(None, &format!("cannot find this program's folder: {e}"));
            return ExitCode::from(EXIT_FAILED);
        }
    }
    let paths = match Paths::resolve_with(cli.home.as_deref(), cli.config.as_deref()) {
        Ok(paths) => paths,
        Err(e) => {
            fatal(None, &e.to_string());
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match app::run_warden_in_tray(&paths, backend_warden_tray::run_tray) {
        Ok(code) => code,
        Err(e) => {
            fatal(Some(&paths), &format!("{e:#}"));
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// A failure before the tray could show anything: said on stderr, in warden.log, and as a
/// desktop notification that stays, since a teammate who started the tray from the menu or
/// at login reads neither stderr nor logs.
fn fatal(paths: Option<&Paths>, message: &str) {
    eprintln!("backend-warden: {message}");
    if let Some(paths) = paths {
        use std::io::Write as _;
        let log = paths.default_log_dir.join("warden.log");
        let line = format!(
            "{} ERROR Backend Warden could not start: {message}\n",
            humantime::format_rfc3339_micros(std::time::SystemTime::now())
        );
        let _ = std::fs::create_dir_all(&paths.default_log_dir);
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .and_then(|mut f| f.write_all(line.as_bytes()));
    }
    let mut note = notify_rust::Notification::new();
    note.appname(backend_warden_tray::notify::notifier::APP_NAME)
        .summary("Backend Warden could not start")
        .body(&if backend_warden_tray::notify::notifier::reads_markup() {
            backend_warden_tray::notify::notifier::escape_markup(message)
        } else {
            message.to_string()
        })
        .timeout(notify_rust::Timeout::Never);
    #[cfg(not(target_os = "macos"))]
    note.urgency(notify_rust::Urgency::Critical);
    let _ = note.show();
    // Nobody sees a GUI-subsystem program's standard error; a toast may not show for an
    // unregistered app: a message box does.
    #[cfg(windows)]
    {
        use windows_sys::Win32::UI::WindowsAndMessaging::{MB_ICONERROR, MB_OK, MessageBoxW};
        let wide = |s: &str| s.encode_utf16().chain([0]).collect::<Vec<u16>>();
        let (text, caption) = (wide(message), wide("Backend Warden"));
        // SAFETY: both strings are NUL-terminated and outlive the call; no owner window.
        unsafe {
            MessageBoxW(
                std::ptr::null_mut(),
                text.as_ptr(),
                caption.as_ptr(),
                MB_OK | MB_ICONERROR,
            )
        };
    }
}
