//! Answers IPC requests: reads the status board, turns requests into engine commands, and for
//! waiting clients watches the board until the engine has settled. Runs on the IPC
//! connection threads; never touches processes itself.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::backend::backend_log::{BackendLog, LogHealth};
use crate::backend::strays::{KillReport, StrayWatch};
use crate::config::{Config, LogsConfig};
use crate::engine::board::{Notice, StatusBoard};
use crate::engine::runner::Backend;
use crate::engine::runner::EngineHandle;
use crate::engine::supervisor::{Command, Policy, Snapshot, State, Supervisor};
use crate::ipc::{Request, Response};
use crate::status::{LogsReport, StatusReport};
use crate::usage::TreeSampler;

/// How long a waiting client may be kept waiting for each kind of command.
#[derive(Debug, Clone, Copy)]
pub struct WaitLimits {
    /// For start and restart: the start timeout plus a stop's grace, with some slack.
    pub start: Duration,
    /// For stop and quit: the grace period, with some slack.
    pub stop: Duration,
}

/// The request handler of one warden.
pub struct Control {
    engine: EngineHandle,
    board: Arc<StatusBoard>,
    limits: WaitLimits,
    strays: Option<StrayWatch>,
    reloader: Option<Reloader>,
    /// Measures the backend tree for `status` (`None`: the process table cannot be read).
    sampler: Mutex<Option<TreeSampler>>,
    log_health: Option<Arc<LogHealth>>,
    /// The backend log, and the `[logs]` and log folder in force, for a reload to apply.
    backend_log: Option<(BackendLog, Mutex<(LogsConfig, PathBuf)>)>,
}

/// Reads the config again and says what the engine should now run, or why it cannot.
pub type Reloader = Box<dyn Fn() -> Result<Reloaded, String> + Send + Sync>;

/// A config that was read again.
pub struct Reloaded {
    /// What to run.
    pub backend: Backend,
    /// How to supervise it.
    pub policy: Policy,
    /// The whole config (for the parts outside the engine, such as `[notify]`).
    pub config: Config,
    /// True when the config names no backend and the built-in demo runs instead.
    pub demo: bool,
    /// What the stray watch looks for now.
    pub strays: crate::backend::strays::WatchSettings,
    /// What *Open in browser* opens now.
    pub open_url: Option<String>,
    /// Where the logs go now.
    pub log_dir: PathBuf,
}

impl Control {
    /// A handler for `engine`, reporting from `board` (and telling its notice channel when a
    /// second launch asks the warden to show itself).
    pub fn new(engine: EngineHandle, board: Arc<StatusBoard>, limits: WaitLimits) -> Control {
        Control {
            engine,
            board,
            limits,
            strays: None,
            reloader: None,
            sampler: Mutex::new(TreeSampler::new()),
            log_health: None,
            backend_log: None,
        }
    }

    /// Lets a reload apply `[logs]` to the backend log at once (`logs` is the config in force).
    pub fn with_backend_log(mut self, log: BackendLog, logs: LogsConfig, dir: PathBuf) -> Control {
        self.backend_log = Some((log, Mutex::new((logs, dir))));
        self
    }

    /// Lets `status` say what the backend log has lost.
    pub fn with_log_health(mut self, health: Arc<LogHealth>) -> Control {
        self.log_health = Some(health);
        self
    }

    /// Lets `config reload` (and the tray's Reload config) read the config again.
    pub fn with_reloader(mut self, reloader: Reloader) -> Control {
        self.reloader = Some(reloader);
        self
    }

    /// Reads the config again and applies it without restarting the warden. A bad config
    /// changes nothing and says why.
    pub fn reload(&self) -> Result<(String, Config), String> {
        let reloader = self
            .reloader
            .as_ref()
            .ok_or_else(|| "this warden cannot reload its config".to_string())?;
        let reloaded = reloader()?;
        // A new log folder must be usable before anything changes (owner-only, no symlink).
        if let Some((_, in_force)) = &self.backend_log
            && in_force.lock().unwrap_or_else(PoisonError::into_inner).1 != reloaded.log_dir
        {
            crate::app::prepare_log_dir(&reloaded.log_dir).map_err(|e| {
                format!(
                    "logs.dir: {e:#} ({}); the previous config stays in force",
                    reloaded.log_dir.display()
                )
            })?;
        }
        let (port, demo) = (reloaded.backend.port, reloaded.demo);
        let open_url = reloaded.open_url.clone();
        let strays_disabled = reloaded
            .strays
            .identity
            .as_ref()
            .err()
            .map(ToString::to_string);
        if !self.engine.reload(reloaded.backend, reloaded.policy) {
            return Err("the engine has stopped".into());
        }
        // The identity follows [backend] and [strays] at once, with a scan right away.
        if let Some(watch) = &self.strays {
            watch.reconfigure(reloaded.strays);
        }
        let was_broken = self.board.update_fixed(|fixed| {
            fixed.port = port;
            fixed.demo = demo;
            fixed.strays_disabled = strays_disabled;
            fixed.open_url = open_url;
            fixed.config_error.take().is_some()
        });
        // The warden started with a broken config: this one is the first it can run.
        if was_broken {
            self.engine.config_fixed();
        }
        let mut message = "config reloaded".to_string();
        if let Some((log, in_force)) = &self.backend_log {
            let mut in_force = in_force.lock().unwrap_or_else(PoisonError::into_inner);
            let (logs, dir) = &mut *in_force;
            let new = &reloaded.config.logs;
            if (new.max_size, new.keep) != (logs.max_size, logs.keep) {
                log.set_limits(new.max_size, new.keep);
            }
            if *dir != reloaded.log_dir {
                log.move_to(&reloaded.log_dir);
                if let Err(e) = crate::logging::move_to(&reloaded.log_dir) {
                    tracing::warn!(error = %e, "cannot finish warden.log in the old folder");
                }
                tracing::info!(dir = %reloaded.log_dir.display(), "the logs go to a new folder");
                message = format!(
                    "config reloaded; the logs now go to {} (rotated files stay in {})",
                    reloaded.log_dir.display(),
                    dir.display()
                );
                self.board
                    .update_fixed(|fixed| fixed.log_path = reloaded.log_dir.join("backend.log"));
                *dir = reloaded.log_dir.clone();
            }
            *logs = new.clone();
        }
        Ok((message, reloaded.config))
    }

    /// Kills the strays (or says what it would kill).
    pub fn kill_strays(&self, dry_run: bool, include_debug: bool) -> Result<KillReport, String> {
        match &self.strays {
            Some(watch) => {
                let report = watch
                    .kill(dry_run, include_debug)
                    .ok_or_else(|| "the stray watch has stopped".to_string())?;
                if !dry_run && !report.killed.is_empty() {
                    // A start that strays blocked goes ahead (the engine decides).
                    self.engine.strays_killed();
                }
                Ok(report)
            }
            None => Err(self
                .board
                .fixed()
                .strays_disabled
                .unwrap_or_else(|| "stray detection is off".into())),
        }
    }

    /// Lets `kill-strays` reach the stray watch.
    pub fn with_stray_watch(mut self, watch: StrayWatch) -> Control {
        self.strays = Some(watch);
        self
    }

    /// The current status report (before the engine's first report: its starting point).
    pub fn report(&self) -> StatusReport {
        *self.to_report(
            self.board
                .current()
                .unwrap_or_else(Supervisor::new_snapshot),
        )
    }

    fn with_logs(&self, mut report: StatusReport) -> StatusReport {
        if let Some(health) = &self.log_health {
            report.logs = LogsReport {
                dropped_lines: health.dropped_lines(),
                last_error: health.last_error(),
            };
        }
        report
    }

    fn to_report(&self, snap: Snapshot) -> Box<StatusReport> {
        let mut report = StatusReport::new(snap, &self.board.fixed(), self.board.scan());
        report.env_file = self.board.env_file();
        Box::new(self.with_logs(report))
    }

    /// Answers one request.
    pub fn handle(&self, request: Request) -> Response {
        match request {
            Request::Status => self.status_with_usage(),
            Request::Show => {
                let response = self.status();
                if let Response::Status { status } = &response {
                    self.board.notices().send(Notice::Show(status.clone()));
                }
                response
            }
            Request::Control { command, wait } => self.control(command, wait),
            Request::KillStrays {
                dry_run,
                include_debug,
            } => match self.kill_strays(dry_run, include_debug) {
                Ok(report) => Response::Killed { report, dry_run },
                Err(message) => Response::Error { message },
            },
            Request::Reload => match self.reload() {
                Ok((message, _)) => Response::Done {
                    ok: true,
                    message,
                    status: Box::new(self.report()),
                },
                Err(message) => Response::Error { message },
            },
            Request::Quit { keep_backend } => {
                let command = if keep_backend {
                    Command::Detach
                } else {
                    Command::Shutdown
                };
                self.control(command, true)
            }
        }
    }

    fn status(&self) -> Response {
        // A client may connect in the moment between the endpoint opening and the engine's
        // first report: it gets the engine's starting point, not an error.
        Response::Status {
            status: Box::new(self.report()),
        }
    }

    /// The status with the tree's memory, CPU and process count: for `status` only, since a
    /// first measurement of CPU takes a moment (see [`crate::usage::CPU_WINDOW`]).
    fn status_with_usage(&self) -> Response {
        let mut report = self.report();
        if let Some(pid) = report.pid {
            let mut sampler = self.sampler.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(usage) = sampler.as_mut().and_then(|s| s.sample(pid)) {
                report.memory_bytes = Some(usage.memory_bytes);
                report.cpu_percent = Some(usage.cpu_percent);
                report.process_count = Some(usage.processes);
            }
        }
        Response::Status {
            status: Box::new(report),
        }
    }

    fn control(&self, command: Command, wait: bool) -> Response {
        let before = self.board.current();
        if !self.engine.command_and_wait(command) {
            return Response::Error {
                message: "the engine has stopped".into(),
            };
        }
        let Some(after) = self.board.current() else {
            return Response::Error {
                message: "the engine is not running yet".into(),
            };
        };
        if !wait {
            return Response::Done {
                ok: true,
                message: format!("{} requested", verb(command)),
                status: self.to_report(after),
            };
        }
        let (limit, settled): (Duration, fn(&Snapshot) -> bool) = match command {
            Command::Start | Command::Restart => (self.limits.start, |s| {
                matches!(
                    s.state,
                    State::Healthy | State::Unhealthy | State::Failed | State::Stopped
                )
            }),
            Command::Stop | Command::Shutdown | Command::Detach => (self.limits.stop, |s| {
                matches!(s.state, State::Stopped | State::Failed)
            }),
        };
        let old_pid = before.and_then(|s| s.pid);
        let last = self
            .board
            .wait_for(limit, |s| {
                settled(s) && !(command == Command::Restart && s.pid.is_some() && s.pid == old_pid)
            })
            .unwrap_or(after);
        let ok = match command {
            Command::Start | Command::Restart => last.state == State::Healthy,
            Command::Stop | Command::Shutdown | Command::Detach => {
                matches!(last.state, State::Stopped | State::Failed)
            }
        };
        let message = if ok {
            match command {
                Command::Shutdown => "backend stopped; the warden is exiting".to_string(),
                Command::Detach => "the warden is exiting; the backend keeps running".to_string(),
                _ => format!("backend {}", last.state),
            }
        } else if settled(&last) {
            match &last.failed_reason {
                Some(reason) => format!("backend failed: {reason}"),
                None => format!("backend {}", last.state),
            }
        } else {
            format!(
                "backend still {} after {}; see `backend-warden status`",
                last.state,
                crate::status::human_duration(limit)
            )
        };
        Response::Done {
            ok,
            message,
            status: self.to_report(last),
        }
    }
}

fn verb(command: Command) -> &'static str {
    match command {
        Command::Start => "start",
        Command::Stop => "stop",
        Command::Restart => "restart",
        Command::Shutdown => "quit",
        Command::Detach => "quit (keeping the backend)",
    }
}
