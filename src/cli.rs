//! The `backend-warden` command line as clap types: every command, flag and help text in
//! one place (`main.rs` carries them out).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use backend_warden_core::backend::demo::DemoArgs;
use backend_warden_core::backend::{log_reader, process};
use backend_warden_core::paths::HOME_ENV;

/// Keeps exactly one copy of your local backend alive and honest.
#[derive(Debug, Parser)]
#[command(
    name = "backend-warden",
    version,
    after_help = format!(
        "With no command, starts the warden (or, if one runs, asks it for its status).\n\
         Files: the config, logs and runtime state live in the platform's usual folders, \
         or all under ${HOME_ENV} when it is set.\n\
         Exit codes: 0 ok, 1 the action failed, 2 usage or config error, 3 no running warden."
    )
)]
pub(crate) struct Cli {
    /// Use this config file instead of the default one.
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,

    /// Keep everything (config, logs, runtime state) under DIR, as BACKEND_WARDEN_HOME does.
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) home: Option<PathBuf>,

    #[command(subcommand)]
    pub(crate) command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// Run the warden in the foreground (or hand over to the running one).
    Run {
        /// Without a tray icon: state changes go to stderr; Ctrl+C stops the backend and exits.
        #[arg(long)]
        headless: bool,
    },
    /// Show the backend's state, PID, port, uptime, restarts, last exit and health.
    Status {
        /// One JSON object, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Start the backend and wait until it is healthy (or failed).
    Start(ControlArgs),
    /// Stop the backend's whole process tree and wait until it is gone.
    Stop(ControlArgs),
    /// Stop, then start the backend; wait until it is healthy again.
    Restart(ControlArgs),
    /// Kill every stray copy of the backend (its whole tree), precisely: never the managed
    /// backend, never another program or another user's process.
    KillStrays {
        /// Only print what would be killed.
        #[arg(long)]
        dry_run: bool,
        /// Also stop copies run under a debugger (debugpy, pydevd, node --inspect), which are
        /// left alone otherwise.
        #[arg(long)]
        include_debug: bool,
    },
    /// Print the end of the backend's log (across rotations), or follow it.
    Logs {
        /// Keep printing new lines as they are written, each once, across rotations (Ctrl+C
        /// to stop); starts with the last N lines.
        #[arg(long, short)]
        follow: bool,
        /// How many of the last lines to print.
        #[arg(long, short = 'n', value_name = "N", default_value_t = log_reader::DEFAULT_LINES)]
        lines: usize,
        /// Print everything kept (the rotated files too, oldest first).
        #[arg(long, conflicts_with = "lines")]
        all: bool,
        /// Only print the log file's path.
        #[arg(long, conflicts_with_all = ["follow", "lines", "all"])]
        path: bool,
    },
    /// Write one file for a developer: status, the last 500 lines of both logs, the config
    /// with secrets redacted, port holders, strays and versions.
    Diagnose {
        /// Where to write it (default: a dated file on the Desktop, else in Downloads).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Stop the warden (and the backend tree).
    Quit {
        /// Leave the backend running, unsupervised. The next warden started with the same
        /// config adopts it automatically (no strays.adopt needed): it is recorded under the
        /// runtime folder (run/) and taken back only if its PID, start time and command line
        /// still match and the config still launches the same thing.
        #[arg(long)]
        keep_backend: bool,
    },
    /// Create, check, locate or reload the config file.
    Config {
        #[command(subcommand)]
        action: ConfigCmd,
    },
    /// Start the warden at login, or not.
    Autostart {
        #[command(subcommand)]
        action: AutostartCmd,
    },
    /// The built-in demo backend (what runs when no backend is configured).
    #[command(name = "demo-backend", hide = true)]
    DemoBackend(DemoArgs),
    /// Internal: the process layer's helper (Unix: kills the backend tree if the warden dies;
    /// Windows: sends Ctrl+Break to the backend's console).
    #[command(name = process::GUARDIAN_SUBCOMMAND, hide = true)]
    Guardian,
}

#[derive(Debug, Args)]
pub(crate) struct ControlArgs {
    /// Return as soon as the warden has the request, without waiting for the outcome.
    #[arg(long)]
    pub(crate) no_wait: bool,
    /// Print the resulting status as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCmd {
    /// Write a commented template to the config path, or with --detect, a config that runs the
    /// project in DIR.
    Init {
        /// Replace an existing config file.
        #[arg(long)]
        force: bool,
        /// Look at the project in DIR (default: the current folder): its virtualenv, main.py /
        /// app.py / manage.py, pyproject.toml scripts, FastAPI or uvicorn app, .env PORT,
        /// package.json start/dev script. Prints what it found and what it guessed; with
        /// nothing to run it writes the commented template.
        #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = ".")]
        detect: Option<PathBuf>,
    },
    /// Validate the config and print the effective settings.
    Check,
    /// Print where the config file is.
    Path,
    /// Make the running warden read the config again (a bad config keeps the old one).
    Reload,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AutostartCmd {
    /// Start the warden (tray) at login.
    Enable,
    /// Do not start it at login.
    Disable,
    /// Say whether it starts at login.
    Status,
}
