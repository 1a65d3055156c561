//! `backend-warden-tray`: the warden with its tray icon. `backend-warden` (with no command, or
//! `run`) becomes this program, and the autostart entry names `backend-warden` too, so users
//! and scripts never need this name. It is a program of its own so that only the tray loads
//! the GUI libraries (GTK and its dependencies on Linux): the CLI, the headless warden and the
//! helpers it starts (guardian, demo backend) are the `backend-warden` beside it, and stay
//! small.

// A GUI-subsystem program on Windows: no console window at login or from the Start menu.
// Ignored elsewhere.
#![windows_subsystem = "windows"]

mod desktop;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use backend_warden::app::{self, EXIT_FAILED};
use backend_warden::paths::{HOME_ENV, Paths};
use backend_warden::process;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The helpers (guardian, demo backend) and the autostart entry are `backend-warden`.
    match process::main_program() {
        Ok(main_program) if main_program.is_file() => {}
        Ok(main_program) => {
            report_error(&format!(
                "{} is missing: the tray needs the program it was installed with. Reinstall \
                 Backend Warden.",
                main_program.display()
            ));
            return ExitCode::from(EXIT_FAILED);
        }
        Err(e) => {
            report_error(&format!("cannot find this program's folder: {e}"));
            return ExitCode::from(EXIT_FAILED);
        }
    }
    let result = Paths::resolve(cli.config.as_deref())
        .map_err(anyhow::Error::from)
        .and_then(|paths| app::run_warden(&paths, desktop::run_tray));
    match result {
        Ok(code) => code,
        Err(e) => {
            report_error(&format!("{e:#}"));
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Tells the user why the tray cannot run: on standard error, and on Windows in a message box
/// too (nobody sees a GUI-subsystem program's standard error).
fn report_error(text: &str) {
    eprintln!("backend-warden-tray: {text}");
    #[cfg(windows)]
    {
        use windows_sys::Win32::UI::WindowsAndMessaging::{MB_ICONERROR, MB_OK, MessageBoxW};
        let wide = |s: &str| s.encode_utf16().chain([0]).collect::<Vec<u16>>();
        let (text, caption) = (wide(text), wide("Backend Warden"));
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
