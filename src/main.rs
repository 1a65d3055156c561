//! The `backend-warden` command line: parses arguments, talks to the running warden or
//! becomes it, and maps outcomes to exit codes (0 ok, 1 action failed, 2 usage or config
//! error, 3 no running warden).
//!
//! A console program on every OS, so that cmd and PowerShell wait for a command typed at their
//! prompt, print its output before the next prompt and see its exit code. The tray is the
//! GUI-subsystem `backend-warden-tray` beside it (see `run_warden`): the Start-menu shortcut and
//! the login entry start that one, and no console window flashes up.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

mod cli;

use anyhow::{Context, Result};
use clap::Parser;

use backend_warden_core::app::{
    self, ConfigSource, EXIT_FAILED, EXIT_NOT_RUNNING, EXIT_USAGE, config_error,
};
use backend_warden_core::backend::demo;
use backend_warden_core::backend::log_reader::LogFiles;
use backend_warden_core::backend::process;
use backend_warden_core::config;
use backend_warden_core::engine::supervisor::Command;
use backend_warden_core::ipc::{self, IpcError, Request, Response};
use backend_warden_core::paths::{HOME_ENV, Paths};
use backend_warden_core::status::StatusReport;

use cli::{AutostartCmd, Cli, Cmd, ConfigCmd, ControlArgs};

/// `print!` for the CLI's answers: a reader that has gone away (`status | head`) ends the
/// command quietly, as it ends any other tool. Rust ignores SIGPIPE, so `print!` would panic
/// with a backtrace instead.
macro_rules! out {
    ($($arg:tt)*) => { write_stdout(format_args!($($arg)*)) };
}

/// `println!`, the same way (see [`out!`]).
macro_rules! outln {
    ($($arg:tt)*) => { write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

fn write_stdout(text: std::fmt::Arguments) {
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        // Anything else (a full disk): say so, and let the command finish with its own code.
        eprintln!("backend-warden: cannot write to standard output: {e}");
    }
}

/// How long a CLI client waits for an answer the warden has at once (status, a request it
/// only has to pass on): then it says the warden is not answering, instead of hanging.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest wait for a request that waits for the engine when the config cannot be read
/// to work out the warden's own limits.
const FALLBACK_WAIT: Duration = Duration::from_secs(600);

/// The whole-exchange deadline for `request`: [`ANSWER_TIMEOUT`], plus, for a request that
/// waits for the engine to settle, the longest the warden may wait by its config.
fn client_timeout(paths: &Paths, request: &Request) -> Duration {
    let waits = match request {
        Request::Status | Request::Show | Request::Control { wait: false, .. } => false,
        Request::Control { wait: true, .. }
        | Request::Quit { .. }
        | Request::KillStrays { .. }
        | Request::Reload => true,
    };
    if !waits {
        return ANSWER_TIMEOUT;
    }
    match app::load_config(paths) {
        Ok((config, _)) => {
            let limits = app::wait_limits(&config);
            ANSWER_TIMEOUT
                .saturating_add(limits.start)
                .saturating_add(limits.stop)
        }
        Err(_) => FALLBACK_WAIT,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // `logs` copies with `?`: a closed reader ends up here.
            if e.chain()
                .filter_map(|c| c.downcast_ref::<io::Error>())
                .any(|io_error| io_error.kind() == io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("backend-warden: {e:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let command = cli.command.unwrap_or(Cmd::Run { headless: false });
    // The helpers run before anything else is set up: they are not the warden.
    match command {
        Cmd::DemoBackend(args) => {
            demo::run(args)?;
            return Ok(ExitCode::SUCCESS);
        }
        Cmd::Guardian => {
            return Ok(ExitCode::from(
                u8::try_from(process::guardian_main()).unwrap_or(1),
            ));
        }
        _ => {}
    }
    let paths = Paths::resolve_with(cli.home.as_deref(), cli.config.as_deref())?;
    match command {
        Cmd::Run { headless } => run_warden(&paths, headless),
        Cmd::Status { json } => status(&paths, json),
        Cmd::Start(args) => control(&paths, Command::Start, args),
        Cmd::Stop(args) => control(&paths, Command::Stop, args),
        Cmd::Restart(args) => control(&paths, Command::Restart, args),
        Cmd::KillStrays {
            dry_run,
            include_debug,
        } => kill_strays(&paths, dry_run, include_debug),
        Cmd::Logs {
            follow,
            lines,
            all,
            path,
        } => logs(&paths, follow, lines, all, path),
        Cmd::Diagnose { out } => diagnose(&paths, out),
        Cmd::Quit { keep_backend } => quit(&paths, keep_backend),
        Cmd::Config { action } => config_command(&paths, action),
        Cmd::Autostart { action } => autostart_command(&paths, action),
        Cmd::DemoBackend(_) | Cmd::Guardian => Ok(ExitCode::SUCCESS),
    }
}

/// Runs the warden: headless here, or the tray. The tray is a program of its own
/// (`backend-warden-tray`, beside this one): on Linux and macOS so that nothing else loads the
/// GUI libraries, and this process becomes it (same PID, same arguments that matter); on
/// Windows because it is a GUI-subsystem program while this is a console one, and it is
/// started detached. Either way it gets `--home` / `--config` as resolved here, so it is the
/// same warden whatever its environment.
fn run_warden(paths: &Paths, headless: bool) -> Result<ExitCode> {
    if headless {
        return app::run_warden(paths, app::run_headless);
    }
    // No exec on Windows: the tray starts as a process of its own, detached from this console
    // (its standard streams closed, so a pipe or a terminal it was started from does not wait
    // for it), and this command is done.
    #[cfg(windows)]
    {
        let tray =
            backend_warden_core::paths::sibling_program(backend_warden_core::paths::TRAY_PROGRAM)
                .context("cannot find this program's folder")?;
        let mut command = std::process::Command::new(&tray);
        command.args(paths.launch_args());
        match command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            Ok(_) => Ok(ExitCode::SUCCESS),
            Err(e) => {
                eprintln!(
                    "backend-warden: cannot start the tray program {}: {e}\n\
                     Reinstall Backend Warden, or run `backend-warden run --headless` to \
                     supervise the backend without a tray icon.",
                    tray.display()
                );
                Ok(ExitCode::from(EXIT_FAILED))
            }
        }
    }
    #[cfg(not(windows))]
    {
        use std::os::unix::process::CommandExt;
        let tray =
            backend_warden_core::paths::sibling_program(backend_warden_core::paths::TRAY_PROGRAM)
                .context("cannot find this program's folder")?;
        let mut command = std::process::Command::new(&tray);
        // The same instance whatever the tray's environment: --home and --config as resolved.
        command.args(paths.launch_args());
        // Returns only if the tray program could not be started.
        let e = command.exec();
        eprintln!(
            "backend-warden: cannot start the tray program {}: {e}\n\
             Reinstall Backend Warden (from source: `cargo build --release` builds both \
             programs), or run `backend-warden run --headless` to supervise the backend without \
             a tray icon.",
            tray.display()
        );
        Ok(ExitCode::from(EXIT_FAILED))
    }
}

/// Sends a request to the running warden; `Err(code)` is the exit code to end with.
fn ask(paths: &Paths, request: &Request) -> Result<Response, ExitCode> {
    match ipc::request(&paths.runtime_dir, request, client_timeout(paths, request)) {
        Ok(response) => Ok(response),
        Err(IpcError::NotRunning) => {
            let home = match &paths.home {
                Some(home) => format!(" for {HOME_ENV}={}", home.display()),
                None => String::new(),
            };
            eprintln!(
                "backend-warden: no Backend Warden is running{home}.\n\
                 Start one with `backend-warden` (tray) or `backend-warden run --headless`."
            );
            Err(ExitCode::from(EXIT_NOT_RUNNING))
        }
        Err(e) => {
            eprintln!("backend-warden: {e}");
            Err(ExitCode::from(EXIT_FAILED))
        }
    }
}

fn print_status(status: &StatusReport, json: bool) -> Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(status)?);
    } else {
        outln!("{}", status.details());
    }
    Ok(())
}

fn status(paths: &Paths, json: bool) -> Result<ExitCode> {
    match ask(paths, &Request::Status) {
        Ok(Response::Status { status }) => {
            print_status(&status, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Ok(other) => unexpected(other),
        Err(code) => {
            if json && code == ExitCode::from(EXIT_NOT_RUNNING) {
                // Scripts get an object to read either way; the exit code still says 3.
                let not_running = serde_json::json!({
                    "state": "not running",
                    "config_path": paths.config_file,
                    "home": paths.home,
                    "version": env!("CARGO_PKG_VERSION"),
                });
                outln!("{}", serde_json::to_string_pretty(&not_running)?);
            }
            Ok(code)
        }
    }
}

fn control(paths: &Paths, command: Command, args: ControlArgs) -> Result<ExitCode> {
    let request = Request::Control {
        command,
        wait: !args.no_wait,
    };
    match ask(paths, &request) {
        Ok(Response::Done {
            ok,
            message,
            status,
        }) => {
            if args.json {
                print_status(&status, true)?;
            } else if ok {
                outln!("{message} ({})", status.summary());
            } else {
                eprintln!("backend-warden: {message}");
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILED)
            })
        }
        Ok(other) => unexpected(other),
        Err(code) => Ok(code),
    }
}

/// How long `quit` waits for the warden's process to end after it agreed to quit.
const QUIT_WAIT: Duration = Duration::from_secs(15);

fn quit(paths: &Paths, keep_backend: bool) -> Result<ExitCode> {
    // Its PID first, to wait for the process after it agreed to quit (see below).
    let warden_pid = match ask(paths, &Request::Status) {
        Ok(Response::Status { status }) => Some(status.warden_pid),
        Ok(_) => None,
        Err(code) => return Ok(code),
    };
    match ask(paths, &Request::Quit { keep_backend }) {
        Ok(Response::Done { ok, message, .. }) => {
            if ok {
                outln!("{message}");
                // Returns once the warden's process is gone, so that whoever asked (the
                // installer, about to replace or delete the program files; a script about to
                // start another warden) finds them free.
                if let Some(pid) = warden_pid
                    && !process::wait_gone(pid, QUIT_WAIT)
                {
                    eprintln!(
                        "backend-warden: the warden (PID {pid}) agreed to quit but is still \
                         running after {}s",
                        QUIT_WAIT.as_secs()
                    );
                }
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("backend-warden: {message}");
                Ok(ExitCode::from(EXIT_FAILED))
            }
        }
        Ok(other) => unexpected(other),
        Err(code) => Ok(code),
    }
}

fn kill_strays(paths: &Paths, dry_run: bool, include_debug: bool) -> Result<ExitCode> {
    let request = Request::KillStrays {
        dry_run,
        include_debug,
    };
    match ask(paths, &request) {
        Ok(Response::Killed { report, dry_run }) => {
            let verb = if dry_run { "would kill" } else { "killed" };
            if report.killed.is_empty() && report.left.is_empty() {
                outln!("no strays: nothing to kill");
            }
            for (pid, what) in &report.killed {
                outln!("{verb} PID {pid} and its children: {what}");
            }
            for (pid, why) in &report.left {
                outln!("left PID {pid}: {why}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Ok(other) => unexpected(other),
        Err(code) => Ok(code),
    }
}

fn unexpected(response: Response) -> Result<ExitCode> {
    match response {
        Response::Error { message } => eprintln!("backend-warden: {message}"),
        other => eprintln!("backend-warden: unexpected answer from the warden: {other:?}"),
    }
    Ok(ExitCode::from(EXIT_FAILED))
}

fn diagnose(paths: &Paths, out: Option<PathBuf>) -> Result<ExitCode> {
    let status = match ipc::request(&paths.runtime_dir, &Request::Status, Duration::from_secs(5)) {
        Ok(Response::Status { status }) => Some(status),
        _ => None,
    };
    let log_dir = match (&status, log_path(paths)) {
        (Some(status), _) => status.log_path.parent().map(Path::to_path_buf),
        (None, Ok(path)) => path.parent().map(Path::to_path_buf),
        (None, Err(_)) => None,
    }
    .unwrap_or_else(|| paths.default_log_dir.clone());
    let text =
        backend_warden_core::diagnostics::report(status.as_deref(), &paths.config_file, &log_dir);
    let file = out.unwrap_or_else(|| backend_warden_core::diagnostics::default_file(&log_dir));
    std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
    outln!(
        "diagnostics written to {} (secrets in the config redacted)",
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The backend log's path: from the running warden if there is one, else from the config.
fn log_path(paths: &Paths) -> Result<PathBuf, ExitCode> {
    if let Ok(Response::Status { status }) =
        ipc::request(&paths.runtime_dir, &Request::Status, Duration::from_secs(2))
    {
        return Ok(status.log_path);
    }
    let (config, _) = app::load_config(paths).map_err(|e| config_error(&e))?;
    let dir = match &config.logs.dir {
        Some(dir) => paths.resolve_config_relative(dir),
        None => paths.default_log_dir.clone(),
    };
    Ok(dir.join("backend.log"))
}

fn logs(paths: &Paths, follow: bool, lines: usize, all: bool, only_path: bool) -> Result<ExitCode> {
    let path = match log_path(paths) {
        Ok(path) => path,
        Err(code) => return Ok(code),
    };
    if only_path {
        outln!("{}", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    let log = LogFiles::new(&path);
    let mut out = io::stdout().lock();
    if follow {
        log.follow(lines, all, &mut out)
            .with_context(|| format!("cannot follow {}", path.display()))?;
        return Ok(ExitCode::SUCCESS);
    }
    let found = if all {
        log.print_all(&mut out)
    } else {
        log.print_tail(lines, &mut out)
    }
    .with_context(|| format!("cannot read {}", path.display()))?;
    if !found {
        eprintln!(
            "backend-warden: no log yet at {} (the backend has not run)",
            path.display()
        );
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    Ok(ExitCode::SUCCESS)
}

fn config_command(paths: &Paths, action: ConfigCmd) -> Result<ExitCode> {
    match action {
        ConfigCmd::Path => {
            outln!("{}", paths.config_file.display());
            Ok(ExitCode::SUCCESS)
        }
        ConfigCmd::Init {
            force,
            detect: Some(dir),
        } => {
            if !dir.is_dir() {
                eprintln!("backend-warden: {} is not a folder", dir.display());
                return Ok(ExitCode::from(EXIT_USAGE));
            }
            let detection = backend_warden_core::detect::detect(&dir);
            for line in &detection.found {
                outln!("found:   {line}");
            }
            for line in &detection.guessed {
                outln!("guessed: {line}");
            }
            match &detection.config {
                Some(config) => {
                    app::write_config(&paths.config_file, config, force)?;
                    outln!(
                        "wrote {}
check the guesses, then start the warden (`backend-warden`)",
                        paths.config_file.display()
                    );
                }
                None => {
                    app::write_config(&paths.config_file, config::template(), force)?;
                    outln!(
                        "nothing to run found in {} (no main.py, app.py, manage.py,                          pyproject.toml scripts or package.json start/dev script)
                         wrote the commented template to {}; fill in [backend]",
                        dir.display(),
                        paths.config_file.display()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ConfigCmd::Init {
            force,
            detect: None,
        } => {
            app::write_config(&paths.config_file, config::template(), force)?;
            outln!(
                "wrote {}\nuntil you fill in [backend], the warden supervises its built-in demo backend",
                paths.config_file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        ConfigCmd::Reload => match ask(paths, &Request::Reload) {
            Ok(Response::Done { message, .. }) => {
                outln!("{message}");
                Ok(ExitCode::SUCCESS)
            }
            Ok(Response::Error { message }) => {
                eprintln!("backend-warden: config not reloaded: {message}");
                Ok(ExitCode::from(EXIT_USAGE))
            }
            Ok(other) => unexpected(other),
            Err(code) => Ok(code),
        },
        ConfigCmd::Check => {
            let (config, source) = match app::load_config(paths) {
                Ok(loaded) => loaded,
                Err(e) => return Ok(config_error(&e)),
            };
            match source {
                ConfigSource::File if config.backend.is_none() => eprintln!(
                    "{}: OK (no [backend] section: the built-in demo backend runs)",
                    paths.config_file.display()
                ),
                ConfigSource::File => eprintln!("{}: OK", paths.config_file.display()),
                ConfigSource::Missing => eprintln!(
                    "no config file at {}: the built-in demo backend runs with these defaults",
                    paths.config_file.display()
                ),
            }
            // What stray detection will take for a copy of the backend, in words.
            if config.backend.is_some() {
                let plan = app::plan(paths, config.clone(), source)?;
                match backend_warden_core::backend::strays::Identity::new(
                    &plan.backend.spec,
                    &config.strays,
                    paths.config_dir(),
                ) {
                    Ok(identity) => eprintln!("strays: {}", identity.describe()),
                    Err(why) => eprintln!("strays: {why}"),
                }
            }
            out!("{}", config.to_toml());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn autostart_command(paths: &Paths, action: AutostartCmd) -> Result<ExitCode> {
    use backend_warden_core::autostart;
    let args = paths.launch_args();
    match action {
        AutostartCmd::Enable => {
            autostart::enable(&args).context("cannot enable start at login")?;
            outln!(
                "Backend Warden starts at login ({}), with the config {}",
                autostart::location(),
                paths.config_file.display()
            );
        }
        AutostartCmd::Disable => {
            autostart::disable().context("cannot disable start at login")?;
            outln!("Backend Warden no longer starts at login");
        }
        AutostartCmd::Status => {
            if autostart::is_enabled(&args) {
                outln!("enabled ({})", autostart::location());
            } else if autostart::is_present() {
                outln!(
                    "disabled for this warden: the entry at {} starts another one (another \
                     --config or --home); `autostart enable` makes it start this one",
                    autostart::location()
                );
            } else {
                outln!("disabled");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
