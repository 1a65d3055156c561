//! `backend-warden-tray`: the warden with its tray icon. `backend-warden` (with no command, or
//! `run`) becomes this program, and the autostart entry names `backend-warden` too, so users
//! and scripts never need this name. It is a program of its own so that only the tray loads
//! the GUI libraries (GTK and its dependencies on Linux): the CLI, the headless warden and the
//! helpers it starts (guardian, demo backend) are the `backend-warden` beside it, and stay
//! small.

// Only affects Windows (where the MSI ships `backend-warden.exe`, which has the tray built in).
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

    /// Keep everything (config, logs, runtime state) under DIR, as BACKEND_WARDEN_HOME does.
    #[arg(long, value_name = "DIR")]
    home: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The helpers (guardian, demo backend) and the autostart entry are `backend-warden`.
    match process::main_program() {
        Ok(main_program) if main_program.is_file() => {}
        Ok(main_program) => {
            eprintln!(
                "backend-warden-tray: {} is missing: the tray needs the program it was installed \
                 with. Reinstall Backend Warden.",
                main_program.display()
            );
            return ExitCode::from(EXIT_FAILED);
        }
        Err(e) => {
            eprintln!("backend-warden-tray: cannot find this program's folder: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    }
    let result = Paths::resolve_with(cli.home.as_deref(), cli.config.as_deref())
        .map_err(anyhow::Error::from)
        .and_then(|paths| app::run_warden(&paths, desktop::run_tray));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("backend-warden: {e:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}
