//! Answers IPC requests: reads the status board, turns requests into engine commands, and for
//! waiting clients watches the board until the engine has settled. Runs on the IPC
//! connection threads; never touches processes itself.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::config::Config;
use crate::ipc::{Request, Response};
use crate::output::LogHealth;
use crate::runner::Backend;
use crate::runner::{EngineHandle, StatusBoard};
use crate::status::{Fixed, LogsReport, StatusReport};
use crate::strays::{KillReport, StrayWatch};
use crate::supervisor::{Command, Policy, Snapshot, State, Supervisor};

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
    fixed: RwLock<Fixed>,
    limits: WaitLimits,
    on_show: Box<dyn Fn(&StatusReport) + Send + Sync>,
    strays: Option<StrayWatch>,
    reloader: Option<Reloader>,
    log_health: Option<Arc<LogHealth>>,
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
}

impl Control {
    /// A handler for `engine`, reporting from `board`. `on_show` is called when a second
    /// launch asks the warden to show itself.
    pub fn new(
        engine: EngineHandle,
        board: Arc<StatusBoard>,
        fixed: Fixed,
        limits: WaitLimits,
        on_show: Box<dyn Fn(&StatusReport) + Send + Sync>,
    ) -> Control {
        Control {
            engine,
            board,
            fixed: RwLock::new(fixed),
            limits,
            on_show,
            strays: None,
            reloader: None,
            log_health: None,
        }
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
        let (port, demo) = (reloaded.backend.port, reloaded.demo);
        if !self.engine.reload(reloaded.backend, reloaded.policy) {
            return Err("the engine has stopped".into());
        }
        {
            let mut fixed = self.fixed.write().unwrap_or_else(PoisonError::into_inner);
            fixed.port = port;
            fixed.demo = demo;
        }
        Ok((
            "config reloaded; [logs] and [strays] changes apply at the next warden start".into(),
            reloaded.config,
        ))
    }

    /// Kills the strays (or says what it would kill).
    pub fn kill_strays(&self, dry_run: bool) -> Result<KillReport, String> {
        match &self.strays {
            Some(watch) => watch
                .kill(dry_run)
                .ok_or_else(|| "the stray watch has stopped".to_string()),
            None => Err(self
                .fixed()
                .strays_disabled
                .clone()
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
        self.with_logs(StatusReport::new(
            self.board
                .current()
                .unwrap_or_else(Supervisor::new_snapshot),
            &self.fixed(),
            self.board.scan(),
        ))
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

    fn fixed(&self) -> std::sync::RwLockReadGuard<'_, Fixed> {
        self.fixed.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn to_report(&self, snap: Snapshot) -> Box<StatusReport> {
        Box::new(self.with_logs(StatusReport::new(snap, &self.fixed(), self.board.scan())))
    }

    /// Answers one request.
    pub fn handle(&self, request: Request) -> Response {
        match request {
            Request::Status => self.status(),
            Request::Show => {
                let response = self.status();
                if let Response::Status { status } = &response {
                    (self.on_show)(status);
                }
                response
            }
            Request::Control { command, wait } => self.control(command, wait),
            Request::KillStrays { dry_run } => match self.kill_strays(dry_run) {
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
