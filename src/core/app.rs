//! App wiring: single instance, config, engine, control endpoint. `run_warden` with
//! `run_headless` is what `backend-warden run --headless` does (the tray program passes its own
//! front end); they take their paths as arguments so several instances can run side by side
//! (one per `BACKEND_WARDEN_HOME`). The desktop (tray) wiring is the tray crate's
//! (`src/tray`); the user interface hears the engine through one notice channel
//! ([`crate::engine::board::Notice`]).

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tracing::{error, info, warn};

use crate::backend::backend_log::BackendLog;
use crate::backend::code_watch::{CodeWatch, WatchFilter};
use crate::backend::envfile::{self, EnvFileSpec};
use crate::backend::kept::KeptBackend;
use crate::backend::process::{LaunchSpec, TreeGuard};
use crate::backend::strays::{
    Identity, KillReport, Scan, StrayScanner, StrayWatch, WatchHooks, WatchPolicy, WatchSettings,
};
use crate::config::watch::{CONFIG_DEBOUNCE, ConfigWatch};
use crate::config::{Config, ConfigError, EnvFile, OnChange};
use crate::engine::board::{Notice, Notices, StatusBoard};
use crate::engine::runner::{Backend, EngineHandle, Runner};
use crate::engine::supervisor::{Command, Policy, Supervisor};
use crate::ipc::handler::{Control, WaitLimits};
use crate::ipc::{self, InstanceLock, IpcError, Request, Response, ServerHandle};
use crate::paths::Paths;
use crate::status::Fixed;

/// Where the config came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// The config file.
    File,
    /// No config file: defaults.
    Missing,
}

/// A loaded config and what it says to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The config (defaults when there is no file).
    pub config: Config,
    /// Whether a file was read.
    pub source: ConfigSource,
    /// The backend to supervise.
    pub backend: Backend,
    /// True when the config names no backend and the built-in demo runs instead.
    pub demo: bool,
    /// Where `backend.log` and `warden.log` go.
    pub log_dir: PathBuf,
    /// The config file could not be used (file:line:column, key, what is valid): the warden
    /// runs without starting the backend until a reload succeeds. Only the tray runs so; the
    /// headless warden exits instead.
    pub config_error: Option<String>,
}

/// Reads the config file; a missing file means defaults.
pub fn load_config(paths: &Paths) -> Result<(Config, ConfigSource), ConfigError> {
    match Config::load(&paths.config_file) {
        Ok(config) => Ok((config, ConfigSource::File)),
        Err(ConfigError::NotFound { .. }) => Ok((Config::default(), ConfigSource::Missing)),
        Err(e) => Err(e),
    }
}

/// Works out what to run from a config.
pub fn plan(paths: &Paths, config: Config, source: ConfigSource) -> Result<Plan> {
    let log_dir = log_dir_of(paths, &config);
    let (backend, demo) = match &config.backend {
        Some(b) => {
            let cwd = match &b.cwd {
                Some(cwd) => paths.resolve_config_relative(cwd),
                None => paths.config_dir().to_path_buf(),
            };
            let env_file = match &b.env_file {
                EnvFile::Default => Some(EnvFileSpec {
                    path: envfile::default_path(&cwd),
                    required: false,
                }),
                EnvFile::Path(path) => Some(EnvFileSpec {
                    path: cwd.join(path),
                    required: true,
                }),
                EnvFile::Off => None,
            };
            let env = b
                .env
                .iter()
                .map(|(name, value)| (name.clone(), envfile::expand_from_env(value)))
                .collect();
            let backend = Backend {
                spec: LaunchSpec {
                    program: b.command.clone(),
                    args: b.args.clone(),
                    cwd,
                    env,
                },
                env_file,
                port: b.port,
                health_url: config.health.url.clone(),
                health_timeout: config.health.timeout,
                stop_grace: config.stop.grace,
                stop_url: config.stop.url.clone(),
            };
            (backend, false)
        }
        None => (demo_backend(&config)?, true),
    };
    let mut backend = backend;
    // Marks the tree as this warden's, so that another warden never takes it for a stray.
    backend.spec.env.insert(
        crate::backend::process::MANAGED_BY_ENV.into(),
        crate::backend::process::managed_by_value(&paths.warden_home()),
    );
    Ok(Plan {
        config,
        source,
        backend,
        demo,
        log_dir,
        config_error: None,
    })
}

/// Where `config` puts `backend.log` and `warden.log`.
pub fn log_dir_of(paths: &Paths, config: &Config) -> PathBuf {
    match &config.logs.dir {
        Some(dir) => paths.resolve_config_relative(dir),
        None => paths.default_log_dir.clone(),
    }
}

/// The built-in demo backend: this binary's hidden `demo-backend` subcommand on a free
/// loopback port, with its health endpoint.
fn demo_backend(config: &Config) -> Result<Backend> {
    let exe = crate::paths::main_program().context("cannot find the backend-warden program")?;
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .context("cannot find a free loopback port for the demo backend")?
        .port();
    Ok(Backend {
        spec: LaunchSpec {
            program: exe.to_string_lossy().into_owned(),
            args: vec!["demo-backend".into(), "--port".into(), port.to_string()],
            cwd: std::env::temp_dir(),
            env: Default::default(),
        },
        env_file: None,
        port: Some(port),
        health_url: Some(format!("http://127.0.0.1:{port}/health")),
        health_timeout: config.health.timeout,
        stop_grace: config.stop.grace,
        stop_url: config.stop.url.clone(),
    })
}

/// What the user should read about the plan before the engine starts.
pub fn describe(plan: &Plan, paths: &Paths) -> String {
    if plan.demo {
        let why = match plan.source {
            ConfigSource::Missing => format!("no config file at {}", paths.config_file.display()),
            ConfigSource::File => format!("{} has no [backend]", paths.config_file.display()),
        };
        format!(
            "{why}: supervising the built-in demo backend on {}.\n\
             To supervise your own backend, run `backend-warden config init` and edit {}.",
            plan.backend.health_url.as_deref().unwrap_or("a free port"),
            paths.config_file.display()
        )
    } else {
        let spec = &plan.backend.spec;
        format!(
            "supervising `{} {}` in {} (config: {})",
            spec.program,
            spec.args.join(" "),
            spec.cwd.display(),
            paths.config_file.display()
        )
    }
}

/// How long a handover to a running warden may take.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(2);

/// How long to wait for a warden that holds the lock but has not opened its endpoint yet.
const STARTING_PEER_WAIT: Duration = Duration::from_secs(5);

/// The outcome of trying to become the warden for a set of paths.
pub enum Claim {
    /// This process is the warden: it holds the single-instance lock and the endpoint.
    Primary(Primary),
    /// Another warden runs and answered the handover request.
    Handed(Response),
}

/// The single-instance lock and the bound endpoint of the warden in this process.
pub struct Primary {
    _lock: InstanceLock,
    server: ipc::Server,
}

/// Connects to the running warden and hands it `request`; if none runs, takes the
/// single-instance lock and binds the endpoint. Of launches at the same instant exactly one
/// wins the lock; the others wait for its endpoint and hand over.
pub fn claim(paths: &Paths, request: &Request) -> Result<Claim> {
    let deadline = crate::clock::later(Instant::now(), STARTING_PEER_WAIT);
    loop {
        match ipc::request(&paths.runtime_dir, request, HANDOVER_TIMEOUT) {
            Ok(response) => return Ok(Claim::Handed(response)),
            Err(IpcError::NotRunning) => {}
            Err(e) => {
                return Err(anyhow::Error::from(e).context(format!(
                    "the control endpoint for {} does not answer as a Backend Warden",
                    paths.runtime_dir.display()
                )));
            }
        }
        let lock = InstanceLock::try_acquire(&paths.runtime_dir).with_context(|| {
            format!(
                "cannot take the single-instance lock in {}",
                paths.runtime_dir.display()
            )
        })?;
        if let Some(lock) = lock {
            let server = ipc::Server::bind(&paths.runtime_dir).with_context(|| {
                format!(
                    "cannot open the control endpoint in {}",
                    paths.runtime_dir.display()
                )
            })?;
            return Ok(Claim::Primary(Primary {
                _lock: lock,
                server,
            }));
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "another Backend Warden holds the lock for {} but does not answer",
                paths.runtime_dir.display()
            );
        }
        // Another launch won the lock a moment ago and is opening its endpoint.
        thread::sleep(Duration::from_millis(10));
    }
}

/// What the warden says when `backend.log` cannot be written.
pub fn log_error_message(e: &std::io::Error) -> String {
    format!(
        "cannot write backend.log; output is being dropped and counted (see `backend-warden status`): {e}"
    )
}

/// Headless mode's user interface: writes the notices worth a line to `warden.log` (and the
/// terminal), on a thread of its own until the warden ends.
fn log_notices(notices: mpsc::Receiver<Notice>) {
    let logger = thread::Builder::new()
        .name("notices".into())
        .spawn(move || {
            for notice in notices {
                match notice {
                    Notice::Changed | Notice::Event(_) => {}
                    Notice::Strays(scan) => warn!("{}", strays_summary(&scan)),
                    Notice::StraysKilled(report) => info!("{}", strays_killed_summary(&report)),
                    Notice::Show(status) => {
                        info!(status = %status.summary(), "another launch asked for the status");
                    }
                    Notice::ConfigSaved(Ok((message, _))) => info!("config file saved: {message}"),
                    Notice::ConfigSaved(Err(error)) => warn!(
                        %error,
                        "config file saved but not reloaded: the old config stays in force"
                    ),
                    Notice::LogError(message) => error!("{message}"),
                }
            }
        });
    if let Err(e) = logger {
        warn!(error = %e, "cannot start the notice logger");
    }
}

/// "2 strays: PIDs 111, 222 (run `backend-warden kill-strays`)".
pub fn strays_summary(scan: &Scan) -> String {
    use crate::backend::strays::StrayKind;
    let n = scan.strays.len();
    let list: Vec<String> = scan
        .strays
        .iter()
        .map(|stray| {
            let kind = match stray.kind {
                StrayKind::Copy => String::new(),
                kind => format!(", {}", kind.words()),
            };
            let port = if stray.holds_port {
                ", holds the backend's port"
            } else {
                ""
            };
            format!("PID {} ({}{kind}{port})", stray.pid, stray.name)
        })
        .collect();
    let debug_only = scan
        .strays
        .iter()
        .all(|s| s.kind == StrayKind::DebugSession);
    let advice = if debug_only {
        "A debug session is left alone unless you ask Kill strays to include it."
    } else if n == 1 {
        "Use Kill strays in the menu (or `backend-warden kill-strays`) to stop it."
    } else {
        "Use Kill strays in the menu (or `backend-warden kill-strays`) to stop them."
    };
    format!(
        "{n} cop{} of the backend running outside the warden: {}. {advice}",
        if n == 1 { "y" } else { "ies" },
        list.join(", ")
    )
}

/// "Killed 2 stray copies of the backend: PID 12 (...), ..." for `action = "kill"`.
pub fn strays_killed_summary(report: &KillReport) -> String {
    let n = report.killed.len();
    let list: Vec<String> = report
        .killed
        .iter()
        .map(|(pid, what)| format!("PID {pid} ({what})"))
        .collect();
    format!(
        "Killed {n} stray cop{} of the backend ([strays] action = \"kill\"): {}",
        if n == 1 { "y" } else { "ies" },
        list.join(", ")
    )
}

/// What *Open in browser* opens: `backend.open_url`, else the health URL's site
/// (`http://127.0.0.1:54112/` for `http://127.0.0.1:54112/health`).
pub fn open_url(config: &Config, backend: &Backend) -> Option<String> {
    if let Some(url) = config.backend.as_ref().and_then(|b| b.open_url.clone()) {
        return Some(url);
    }
    let health = backend.health_url.as_deref()?;
    let (scheme, rest) = health.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    Some(format!("{scheme}://{host}/"))
}

/// How the stray watch scans, from a config.
pub fn watch_policy(config: &Config) -> WatchPolicy {
    WatchPolicy {
        interval: config.strays.scan_interval,
        grace: config.stop.grace,
    }
}

/// A started engine.
pub struct Running {
    /// Sends commands to it.
    pub engine: EngineHandle,
    /// Answers requests (the IPC server and the tray share it).
    pub control: Arc<Control>,
    done: mpsc::Receiver<()>,
    thread: thread::JoinHandle<()>,
    server: ServerHandle,
    _code_watch: Option<CodeWatch>,
    _config_watch: Option<ConfigWatch>,
}

impl Running {
    /// Waits until the engine has ended (after a shutdown), and lets the answer to a `quit`
    /// reach its client.
    pub fn wait(self) {
        let _ = self.done.recv();
        let _ = self.thread.join();
        self.server.wait_idle(Duration::from_secs(1));
    }
}

/// Starts the engine, the stray watch and the control endpoint, then the backend (or adopts a
/// running copy, with `[strays] adopt = true`).
///
/// Everything the user interface hears of (engine events, status changes, strays, a config
/// saved, lost output) goes to `notices`.
pub fn start_engine(
    paths: &Paths,
    plan: Plan,
    primary: Primary,
    notices: Notices,
) -> Result<Running> {
    let mut guard = TreeGuard::start().context("cannot start the tree guardian")?;
    // A tree of this home that outlived its warden and guardian (both killed at once).
    match guard.record_in(&paths.runtime_dir) {
        Ok(killed) => {
            for what in killed {
                warn!(%what, "killed what a previous warden of this home left running");
            }
        }
        Err(e) => warn!(error = %e, "cannot record the backend trees in the runtime folder"),
    }
    let log = BackendLog::start(
        &plan.log_dir,
        plan.config.logs.max_size,
        plan.config.logs.keep,
        {
            let notices = notices.clone();
            move |e: &std::io::Error| notices.send(Notice::LogError(log_error_message(e)))
        },
    )
    .context("cannot start the backend log writer")?;
    let log_health = log.health();
    let backend_log = log.clone();
    let plan_logs = plan.config.logs.clone();
    let identity = Identity::new(&plan.backend.spec, &plan.config.strays, paths.config_dir());
    let mut scanner =
        StrayScanner::new(identity, plan.backend.port).context("cannot read the process table")?;
    let strays_disabled = scanner.disabled_reason();
    if let Some(why) = &strays_disabled {
        warn!("{why}");
    }
    // A backend this warden's predecessor left running (`quit --keep-backend`) is ours: it
    // is adopted without `strays.adopt`, once it is proven to be that very process.
    let kept = KeptBackend::take(&paths.runtime_dir).and_then(|kept| {
        let live = crate::backend::kept::live_process(kept.pid);
        match kept.check(live.as_ref(), &plan.backend.spec, plan.backend.port) {
            Ok(()) => {
                info!(
                    pid = kept.pid,
                    "adopting the backend the last warden left running (quit --keep-backend)"
                );
                Some(kept.pid)
            }
            Err(why) => {
                warn!("not adopting the backend the last warden left running: {why}");
                None
            }
        }
    });
    let adopt = match kept {
        Some(pid) => Some(pid),
        None if plan.config.strays.adopt => adoption_candidate(&mut scanner, &plan),
        None => None,
    };
    let policy = Policy::from_config(
        &plan.config,
        plan.backend.health_url.is_some(),
        plan.backend.port.is_some(),
    );
    let demo_backend = plan.demo.then(|| plan.backend.clone());
    let plan_watch = WatchPlan {
        config: plan.config.watch.clone(),
        cwd: plan.backend.spec.cwd.clone(),
        log_dir: plan.log_dir.clone(),
        // The demo backend has no code of yours to watch.
        enabled: !plan.demo && plan.config.watch.on_change != OnChange::Off,
    };
    let fixed = Fixed {
        port: plan.backend.port,
        demo: plan.demo,
        log_path: log.path().to_path_buf(),
        config_path: paths.config_file.clone(),
        open_url: open_url(&plan.config, &plan.backend),
        strays_disabled,
        config_error: plan.config_error.clone(),
    };
    let config_error = plan.config_error.clone();
    let limits = wait_limits(&plan.config);
    let board = Arc::new(StatusBoard::new(fixed, notices.clone()));
    let publish_board = Arc::clone(&board);
    let watch = StrayWatch::start(
        scanner,
        watch_policy(&plan.config),
        WatchHooks {
            managed: {
                let board = Arc::clone(&board);
                // Until the engine has taken the adopted copy, it is not a stray either.
                Box::new(move || board.current().and_then(|s| s.pid).or(adopt))
            },
            publish: Box::new(move |scan| publish_board.set_scan(scan)),
            alert: {
                let notices = notices.clone();
                Box::new(move |scan| notices.send(Notice::Strays(scan.clone())))
            },
            killed: Box::new(move |report| {
                for (pid, what) in &report.killed {
                    warn!(pid, %what, "killed a stray copy of the backend ([strays] action = \"kill\")");
                }
                if !report.killed.is_empty() {
                    notices.send(Notice::StraysKilled(report.clone()));
                }
            }),
        },
    )
    .context("cannot start the stray watch")?;
    let (runner, engine) = Runner::new(
        Supervisor::new(policy),
        plan.backend,
        log,
        guard,
        Arc::clone(&board),
    )
    .context("cannot start the engine")?;
    let runner = runner
        .with_stray_watch(watch.clone())
        .with_kept_record(paths.runtime_dir.clone());

    let control = Arc::new(
        Control::new(engine.clone(), Arc::clone(&board), limits)
            .with_stray_watch(watch)
            .with_reloader(reloader(paths, demo_backend))
            .with_log_health(log_health)
            .with_backend_log(backend_log, plan_logs, plan.log_dir.clone()),
    );
    let serving = Arc::clone(&control);
    let server = primary
        .server
        .spawn(move |request| serving.handle(request))
        .context("cannot serve the control endpoint")?;

    let code_watch = start_code_watch(&plan_watch, engine.clone());
    let config_watch = start_config_watch(paths, Arc::clone(&control), board.notices().clone());
    let (done_tx, done) = mpsc::channel();
    let thread = thread::Builder::new()
        .name("engine".into())
        .spawn(move || {
            runner.run();
            let _ = done_tx.send(());
        })
        .context("cannot start the engine thread")?;
    match (adopt, &config_error) {
        (_, Some(error)) => {
            error!(%error, "config error: the backend is not started until the config is fixed and reloaded");
        }
        (Some(pid), None) => {
            engine.adopt(pid);
        }
        (None, None) => {
            engine.command(Command::Start);
        }
    }
    Ok(Running {
        engine,
        control,
        done,
        thread,
        server,
        _code_watch: code_watch,
        _config_watch: config_watch,
    })
}

/// Reloads the config whenever its file is saved, as *Reload config* does. A broken save keeps
/// the old config and is reported once: saving the same mistake again says nothing new.
fn start_config_watch(
    paths: &Paths,
    control: Arc<Control>,
    notices: Notices,
) -> Option<ConfigWatch> {
    let mut last_error: Option<String> = None;
    let on_save = move || match control.reload() {
        Ok((message, config)) => {
            last_error = None;
            notices.send(Notice::ConfigSaved(Ok((message, Box::new(config)))));
        }
        Err(error) => {
            if last_error.as_ref() != Some(&error) {
                last_error = Some(error.clone());
                notices.send(Notice::ConfigSaved(Err(error)));
            }
        }
    };
    match ConfigWatch::start(&paths.config_file, CONFIG_DEBOUNCE, on_save) {
        Ok(watch) => Some(watch),
        Err(e) => {
            warn!(error = %e, "cannot watch the config file; use Reload config after a change");
            None
        }
    }
}

/// What the code watch needs from the plan.
struct WatchPlan {
    config: crate::config::WatchConfig,
    cwd: PathBuf,
    log_dir: PathBuf,
    enabled: bool,
}

/// Starts watching the backend's code, if the config asks for it. A watch that cannot start
/// is logged; supervision goes on without it.
fn start_code_watch(plan: &WatchPlan, engine: EngineHandle) -> Option<CodeWatch> {
    if !plan.enabled {
        return None;
    }
    let roots: Vec<PathBuf> = if plan.config.paths.is_empty() {
        vec![plan.cwd.clone()]
    } else {
        plan.config
            .paths
            .iter()
            .map(|p| {
                if p.is_absolute() {
                    p.clone()
                } else {
                    plan.cwd.join(p)
                }
            })
            .collect()
    };
    let filter = match WatchFilter::new(
        roots,
        &plan.config.include,
        &plan.config.exclude,
        vec![plan.log_dir.clone()],
    ) {
        Ok(filter) => filter,
        Err(e) => {
            warn!(error = %e, "cannot watch the backend's code");
            return None;
        }
    };
    match CodeWatch::start(filter, plan.config.debounce, move |files, count| {
        engine.code_changed(files, count)
    }) {
        Ok(watch) => Some(watch),
        Err(e) => {
            warn!(error = %e, "cannot watch the backend's code");
            None
        }
    }
}

/// Reads the config again for a reload. The demo backend keeps its port across reloads.
fn reloader(paths: &Paths, demo_backend: Option<Backend>) -> crate::ipc::handler::Reloader {
    let paths = paths.clone();
    Box::new(move || {
        let (config, source) = load_config(&paths).map_err(|e| e.to_string())?;
        let (backend, demo) = match (&config.backend, &demo_backend) {
            (None, Some(demo)) => {
                let backend = Backend {
                    health_timeout: config.health.timeout,
                    stop_grace: config.stop.grace,
                    stop_url: config.stop.url.clone(),
                    ..demo.clone()
                };
                (backend, true)
            }
            _ => {
                let plan = plan(&paths, config.clone(), source).map_err(|e| format!("{e:#}"))?;
                (plan.backend, plan.demo)
            }
        };
        let policy = Policy::from_config(
            &config,
            backend.health_url.is_some(),
            backend.port.is_some(),
        );
        let identity = Identity::new(&backend.spec, &config.strays, paths.config_dir());
        let strays = WatchSettings {
            identity,
            port: backend.port,
            policy: watch_policy(&config),
        };
        let open_url = open_url(&config, &backend);
        let log_dir = log_dir_of(&paths, &config);
        Ok(crate::ipc::handler::Reloaded {
            open_url,
            log_dir,
            backend,
            policy,
            config,
            demo,
            strays,
        })
    })
}

/// The one healthy copy of the backend already running, if there is exactly one.
fn adoption_candidate(scanner: &mut StrayScanner, plan: &Plan) -> Option<u32> {
    let scan = scanner.scan(None);
    let [stray] = scan.strays.as_slice() else {
        if scan.strays.len() > 1 {
            warn!(
                count = scan.strays.len(),
                "several copies of the backend are running: adopting none"
            );
        }
        return None;
    };
    if let Some(url) = &plan.backend.health_url
        && !matches!(
            crate::backend::health::check_once(url, plan.backend.health_timeout),
            crate::engine::supervisor::Probe::Ok { .. }
        )
    {
        warn!(
            pid = stray.pid,
            "a copy of the backend runs but is not healthy: not adopting it"
        );
        return None;
    }
    info!(
        pid = stray.pid,
        "adopting the copy of the backend that is already running"
    );
    Some(stray.pid)
}

/// Exit code: the action failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: usage or config error.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: no warden is running.
pub const EXIT_NOT_RUNNING: u8 = 3;

/// Becomes the warden and runs it with `front` (headless, or the tray) until it ends, or hands
/// over to the running warden and says so. What both programs do when asked to run.
pub fn run_warden(
    paths: &Paths,
    front: impl FnOnce(&Paths, Plan, Primary) -> Result<()>,
) -> Result<ExitCode> {
    become_warden(paths, false, front)
}

/// As [`run_warden`], for the tray: a config error does not end the program (nobody reads its
/// stderr) but starts the warden in the "config error" state, which *Edit config* and *Reload
/// config* (or a save of the file) get out of.
pub fn run_warden_in_tray(
    paths: &Paths,
    front: impl FnOnce(&Paths, Plan, Primary) -> Result<()>,
) -> Result<ExitCode> {
    become_warden(paths, true, front)
}

fn become_warden(
    paths: &Paths,
    tolerate_config_error: bool,
    front: impl FnOnce(&Paths, Plan, Primary) -> Result<()>,
) -> Result<ExitCode> {
    let primary = match claim(paths, &Request::Show)? {
        Claim::Primary(primary) => primary,
        Claim::Handed(response) => {
            let (pid, status) = match response {
                Response::Status { status } | Response::Done { status, .. } => {
                    (format!(" (PID {})", status.warden_pid), status.summary())
                }
                Response::Error { message } => (String::new(), message),
                Response::Killed { .. } => (String::new(), String::new()),
            };
            // Nobody may be reading (a launch from the desktop): nothing to do about it.
            let _ = writeln!(
                std::io::stdout(),
                "Backend Warden is already running{pid}: {status}.\n\
                 Use `backend-warden status` to see it, or `backend-warden quit` to stop it."
            );
            return Ok(ExitCode::SUCCESS);
        }
    };
    let plan = match load_config(paths) {
        Ok((config, source)) => plan(paths, config, source)?,
        Err(e) if tolerate_config_error => {
            let mut plan = plan(paths, Config::default(), ConfigSource::File)?;
            plan.config_error = Some(e.to_string());
            plan
        }
        Err(e) => return Ok(config_error(&e)),
    };
    front(paths, plan, primary)?;
    Ok(ExitCode::SUCCESS)
}

/// Tells the user about a config error; the exit code to end with.
pub fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("backend-warden: config error: {e}");
    ExitCode::from(EXIT_USAGE)
}

/// Runs the engine in the foreground until Ctrl+C / SIGTERM or `quit`, then stops the backend
/// tree and returns. Serves the CLI through `primary`'s endpoint meanwhile.
pub fn run_headless(paths: &Paths, plan: Plan, primary: Primary) -> Result<()> {
    prepare_log_dir(&plan.log_dir)?;
    crate::logging::init(&plan.log_dir, true);
    eprintln!("{}", describe(&plan, paths));
    info!(
        log = %plan.log_dir.join("backend.log").display(),
        "backend output goes to the log"
    );
    let (notices, received) = Notices::channel();
    log_notices(received);
    let running = start_engine(paths, plan, primary, notices)?;
    let on_signal = running.engine.clone();
    ctrlc::set_handler(move || {
        on_signal.command(Command::Shutdown);
    })
    .context("cannot install the Ctrl+C handler")?;
    running.wait();
    info!("warden stopped");
    Ok(())
}

/// Creates the log folder owner-only, or checks the existing one: a folder that is a symbolic
/// link or another user's, or a `backend.log` / `warden.log` that is a symbolic link or not
/// ours, stops the start with an error that names it (logs may carry secrets, and a planted
/// link would make the warden append to a file of the planter's choosing).
pub fn prepare_log_dir(dir: &Path) -> Result<()> {
    use crate::private_fs;
    private_fs::prepare_dir(dir, private_fs::FolderKind::Logs)
        .context("cannot use the log folder")?;
    for name in ["backend.log", "warden.log"] {
        private_fs::check_file(&dir.join(name)).context("cannot use the log file")?;
    }
    Ok(())
}

/// How long CLI clients may wait for the engine to settle.
pub fn wait_limits(config: &Config) -> WaitLimits {
    let slack = Duration::from_secs(5);
    WaitLimits {
        start: config
            .health
            .start_timeout
            .saturating_add(config.stop.grace)
            .saturating_add(config.restart.backoff_max)
            .saturating_add(slack),
        stop: config.stop.grace.saturating_add(slack),
    }
}

/// Writes the commented config template to `path`; refuses to overwrite unless `force`.
pub fn write_template(path: &Path, force: bool) -> Result<()> {
    write_config(path, crate::config::template(), force)
}

/// Writes `text` as the config file at `path`; refuses to overwrite unless `force`.
pub fn write_config(path: &Path, text: &str, force: bool) -> Result<()> {
    if path.exists() && !force {
        anyhow::bail!(
            "{} already exists; edit it, or use --force to replace it with the template",
            path.display()
        );
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the folder {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
