//! The supervisor: a pure state machine that decides what happens to the backend.
//!
//! It does no I/O, never reads the clock and never sleeps: every [`Input`] comes with the
//! time it happened, and the answer is a list of [`Effect`]s for the runner to carry out, plus
//! [`Supervisor::next_deadline`] for when it wants to be woken. It may import only `std`,
//! `serde`, the config types and [`crate::clock`] (deadlines that cannot overflow).

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::clock::later;
use crate::config::{Config, OnChange, RestartPolicy, StrayAction};

/// A process ID as the OS reports it.
pub type Pid = u32;

/// How often the backend's port is checked while it is `starting` and not listening yet, at
/// first. The check is a TCP connect that sends nothing: refused at once by the OS while
/// nobody listens, so polling this fast never reaches the backend, and `healthy` follows its
/// listening by about this much plus one HTTP probe.
pub const PORT_POLL: Duration = Duration::from_millis(1);

/// The longest spacing of port checks: reached after 1.25 s of a start (see [`port_poll`]).
pub const PORT_POLL_MAX: Duration = Duration::from_millis(5);

/// The spacing of port checks `since_spawn` into a start: 1 ms for the first 250 ms (most
/// backends listen by then), then growing with the time waited (a 250th of it) up to
/// [`PORT_POLL_MAX`]. A thousand checks a second cost the warden about 8 % of a core; a slow
/// start still becomes `healthy` within a few milliseconds of listening.
pub fn port_poll(since_spawn: Duration) -> Duration {
    (since_spawn / 250).clamp(PORT_POLL, PORT_POLL_MAX)
}

/// The spacing after the first failed HTTP probe while `starting`; it doubles with every
/// further failure, up to [`starting_spacing_cap`].
pub const STARTING_PROBE_INTERVAL: Duration = Duration::from_millis(3);

/// The spacing of HTTP probes while `starting` grows to at most twice `interval`: a backend
/// whose `/health` answers 503 for its whole 60 s start then gets about 25 requests (default
/// 2 s interval), where the interval itself would give 39.
pub fn starting_spacing_cap(interval: Duration) -> Duration {
    interval.saturating_mul(2).max(STARTING_PROBE_INTERVAL)
}

/// The spacing that follows `spacing` after another failed probe while `starting`.
pub fn next_starting_spacing(spacing: Duration, interval: Duration) -> Duration {
    spacing
        .saturating_mul(2)
        .min(starting_spacing_cap(interval))
}

/// Without a health URL, a backend that has stayed up this long counts as healthy.
pub const SETTLE_WITHOUT_HEALTH: Duration = Duration::from_millis(1000);

/// The engine's states. The names are an interface: `status --json` carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// No backend, and none wanted.
    Stopped,
    /// Spawned (or about to be), not yet healthy.
    Starting,
    /// Running and answering its health check (or, without one, alive).
    Healthy,
    /// Running but failing its health check.
    Unhealthy,
    /// Asked to stop; waiting for the whole tree to be gone.
    Stopping,
    /// Exited; waiting out the backoff before the next start.
    Backoff,
    /// Gave up; the reason says why.
    Failed,
}

impl State {
    /// The name used in `status`, logs and the tray.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Starting => "starting",
            State::Healthy => "healthy",
            State::Unhealthy => "unhealthy",
            State::Stopping => "stopping",
            State::Backoff => "backoff",
            State::Failed => "failed",
        }
    }

    /// Whether a backend process is (meant to be) running in this state.
    pub fn is_running(self) -> bool {
        matches!(self, State::Starting | State::Healthy | State::Unhealthy)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExitStatus {
    /// The exit code, when it exited on its own.
    pub code: Option<i32>,
    /// The signal that ended it (Unix).
    pub signal: Option<i32>,
}

impl ExitStatus {
    /// Exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exited with code {code}"),
            (None, Some(sig)) => match signal_name(sig) {
                Some(name) => write!(f, "was killed by signal {sig} ({name})"),
                None => write!(f, "was killed by signal {sig}"),
            },
            (None, None) => f.write_str("exited"),
        }
    }
}

fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => return None,
    })
}

/// What a user (tray, CLI, a signal) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Command {
    /// Start the backend if it is not running.
    Start,
    /// Stop the backend tree.
    Stop,
    /// Stop (if running), then start.
    Restart,
    /// Stop the backend tree, then end the engine.
    Shutdown,
    /// End the engine and leave the backend running, unsupervised.
    Detach,
}

/// The outcome of one health probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// 2xx within the timeout.
    Ok { latency: Duration },
    /// Anything else: refused, timed out, non-2xx. `error` names the URL (logs,
    /// notifications); `failure` says why in words (menu, `status`).
    Failed {
        error: String,
        failure: ProbeFailure,
    },
}

/// Why a health probe failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeFailure {
    /// An answer, but not a 2xx one: `path` is the URL's path, `reason` the status's
    /// canonical reason (empty when it has none).
    Status {
        path: String,
        code: u16,
        reason: String,
    },
    /// No answer within the probe's timeout.
    TimedOut { after: Duration },
    /// Nothing listens at the URL's address.
    Refused,
    /// Anything else (reset, closed before the answer, not HTTP), in the HTTP client's words.
    Other(String),
}

impl fmt::Display for ProbeFailure {
    /// "/health answered 503 Service Unavailable", "timed out after 1 s", "connection refused".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeFailure::Status { path, code, reason } if reason.is_empty() => {
                write!(f, "{path} answered {code}")
            }
            ProbeFailure::Status { path, code, reason } => {
                write!(f, "{path} answered {code} {reason}")
            }
            ProbeFailure::TimedOut { after } => write!(f, "timed out after {}", spoken(*after)),
            ProbeFailure::Refused => f.write_str("connection refused"),
            ProbeFailure::Other(error) => f.write_str(error),
        }
    }
}

/// A probe timeout as a person says it: "250 ms", "1 s", "1.5 s".
fn spoken(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        let text = format!("{:.3}", d.as_secs_f64());
        format!("{} s", text.trim_end_matches('0'))
    }
}

/// Something that happened. Inputs about a process carry its PID; an input about a process
/// that is no longer the current one is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A user command.
    Command(Command),
    /// The runner spawned the backend.
    Spawned { pid: Pid },
    /// Take charge of `pid`, a copy of the backend that is already running (the one the last
    /// warden left running, or an adoptable copy): a warden that runs nothing answers with
    /// [`Effect::Adopt`].
    Adopt { pid: Pid },
    /// The runner took charge of a copy of the backend that was already running.
    Adopted { pid: Pid },
    /// The runner could not take charge of `pid` (see [`Effect::Adopt`]).
    AdoptFailed { pid: Pid },
    /// The runner could not spawn the backend (command not found, cwd missing, ...).
    SpawnFailed { error: String },
    /// The runner did not spawn the backend because stray copies of it hold its port; `strays`
    /// are those a kill could free it from (no debug session). With `action = "kill"` they
    /// are killed once ([`Effect::FreePort`]); otherwise the start waits for the user's choice
    /// (Kill strays), and resumes after [`Input::StraysKilled`].
    PortBlocked { reason: String, strays: Vec<Pid> },
    /// Strays were killed (by the user, or for a start): a start they blocked goes ahead.
    StraysKilled,
    /// The stray watch found copies of the backend running outside the warden, some of them
    /// new since its last scan: `pids` are all of them. Answered with [`Effect::KillStrays`]
    /// or [`Effect::AlertStrays`], as `[strays] action` says.
    Strays { pids: Vec<Pid> },
    /// The backend's main process exited; `tail` holds its last output lines.
    Exited {
        pid: Pid,
        status: ExitStatus,
        tail: Vec<String>,
    },
    /// Every process of the tree led by `pid` is gone.
    TreeGone { pid: Pid },
    /// No stop request can reach the tree led by `pid` (Windows: no console to send Ctrl+C
    /// to, or neither event could be sent): waiting out the grace period would be for nothing.
    Unreachable { pid: Pid },
    /// A health probe of `pid` finished.
    Probed { pid: Pid, probe: Probe },
    /// A check of whether `pid`'s port listens finished (see [`Effect::CheckPort`]).
    PortChecked { pid: Pid, listening: bool },
    /// Watched files of the backend's code changed (one debounced burst): `files` are the
    /// first few, `count` how many.
    CodeChanged { files: Vec<String>, count: usize },
    /// The config was reloaded: `policy` replaces the one in force (from the next decision
    /// on; a newly configured health check probes at once), and what changed decides what
    /// happens to the backend. `change` is what changed of what the runner holds (launch
    /// settings, health probe); a changed policy counts as [`ReloadChange::Settings`].
    Reload {
        policy: Policy,
        change: ReloadChange,
    },
    /// A warden that started with a broken config (and so started nothing) has its first
    /// good one in force.
    ConfigFixed,
    /// A deadline passed (see [`Supervisor::next_deadline`]).
    Tick,
}

/// What a config reload changed, as far as the backend is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadChange {
    /// Nothing the engine uses.
    Nothing,
    /// How the backend is supervised (policy, health check), not what is launched.
    Settings,
    /// What is launched (command, args, cwd, env, env file, port).
    Launch,
}

impl ReloadChange {
    /// The change, counting a new policy (`old` to `new`) as one of the settings. What
    /// happens to strays is not about the backend: changing it alone changes nothing here.
    pub fn with_policy(self, old: &Policy, new: &Policy) -> ReloadChange {
        let new = Policy {
            kill_strays: old.kill_strays,
            ..new.clone()
        };
        match self {
            ReloadChange::Nothing if *old != new => ReloadChange::Settings,
            change => change,
        }
    }
}

/// What the runner must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Spawn the backend; answer with [`Input::Spawned`], [`Input::SpawnFailed`] or
    /// [`Input::PortBlocked`].
    Spawn { attempt: u32 },
    /// Ask the whole tree to stop gracefully (or say it cannot: [`Input::Unreachable`]), and
    /// report [`Input::TreeGone`] once it is gone.
    Terminate { pid: Pid },
    /// Kill the whole tree now, and report [`Input::TreeGone`] once it is gone.
    Kill { pid: Pid },
    /// Probe the backend's health; answer with [`Input::Probed`].
    Probe { pid: Pid },
    /// Check whether the backend's port listens, without a word of HTTP (a TCP connect that
    /// sends nothing); answer with [`Input::PortChecked`].
    CheckPort { pid: Pid },
    /// Let the tree go: it must survive the warden (`quit --keep-backend`).
    Release { pid: Pid },
    /// Take charge of the running copy `pid` and its tree; answer with [`Input::Adopted`] or
    /// [`Input::AdoptFailed`].
    Adopt { pid: Pid },
    /// Kill these strays (each whole tree, never a debug session), without waiting for it.
    KillStrays { pids: Vec<Pid> },
    /// Tell the user about these strays, which are left running.
    AlertStrays { pids: Vec<Pid> },
    /// Kill these strays, which hold the port a start needs; answer with
    /// [`Input::StraysKilled`] once they are gone (or could not be killed).
    FreePort { pids: Vec<Pid> },
    /// Tell the world (log line, notification, tray).
    Notify(Event),
    /// Shutdown is complete: the engine may end.
    Exit,
}

/// A state transition worth telling the user about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The backend was spawned.
    Started { pid: Pid, attempt: u32 },
    /// A backend started outside the warden is now supervised.
    Adopted { pid: Pid },
    /// The backend became healthy (`recovered`: it had been unhealthy or had crashed).
    Healthy {
        pid: Pid,
        latency: Option<Duration>,
        recovered: bool,
    },
    /// The backend stopped answering its health check.
    Unhealthy { pid: Pid, error: String },
    /// The backend exited on its own and will be restarted after `delay`.
    /// `first_in_episode` is false for the later crashes of a crash loop.
    Crashed {
        pid: Pid,
        status: ExitStatus,
        delay: Duration,
        attempt: u32,
        first_in_episode: bool,
        /// Its last lines of output (the traceback, usually).
        tail: Vec<String>,
    },
    /// The backend exited on its own and the restart policy says to leave it.
    Exited { pid: Pid, status: ExitStatus },
    /// Unhealthy for longer than `restart_after`: restarting it.
    RestartingUnhealthy { pid: Pid, unhealthy_for: Duration },
    /// Gave up; the engine is `failed`.
    GaveUp { reason: String },
    /// The tree was stopped on request (`forced`: it had to be killed after the grace period).
    Stopped { pid: Option<Pid>, forced: bool },
    /// The graceful stop timed out; the tree is being killed.
    Killing { pid: Pid, grace: Duration },
    /// The running backend's code changed: it is stale (first change since it started).
    Stale { pid: Pid, count: usize },
    /// Restarting to load changed code (`on_change = "restart"`).
    RestartingForCode { pid: Option<Pid>, count: usize },
}

/// The policy the supervisor follows, taken from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Health checking, if a health URL is configured.
    pub health: Option<HealthPolicy>,
    /// When to restart.
    pub restart: RestartPolicy,
    /// First backoff delay; doubles with every consecutive crash.
    pub backoff_initial: Duration,
    /// Largest backoff delay.
    pub backoff_max: Duration,
    /// Give up after more than this many crashes within `window`.
    pub max_restarts: u32,
    /// See `max_restarts`.
    pub window: Duration,
    /// A run this long resets the backoff.
    pub stable_after: Duration,
    /// Time between the graceful request and the forced kill.
    pub grace: Duration,
    /// What a change to the backend's code does.
    pub on_change: OnChange,
    /// Strays are killed as soon as they are found (`[strays] action = "kill"`), rather than
    /// reported.
    pub kill_strays: bool,
}

/// Health-check timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Time between probes once started.
    pub interval: Duration,
    /// Consecutive failures before `healthy` turns `unhealthy`.
    pub unhealthy_after: u32,
    /// Restart a backend that stayed unhealthy this long.
    pub restart_after: Option<Duration>,
    /// How long `starting` may last before it counts as unhealthy.
    pub start_timeout: Duration,
    /// The backend's port is known: while starting, wait for it to listen before the first
    /// HTTP probe (without it, HTTP probes with growing spacing from the spawn on).
    pub wait_for_port: bool,
}

impl Policy {
    /// The policy described by a config; `port_known`: the backend's port is known (from
    /// `backend.port`, or the demo's).
    pub fn from_config(config: &Config, has_health_url: bool, port_known: bool) -> Policy {
        Policy {
            health: has_health_url.then(|| HealthPolicy {
                interval: config.health.interval,
                unhealthy_after: config.health.unhealthy_after.max(1),
                restart_after: config.health.restart_after,
                start_timeout: config.health.start_timeout,
                wait_for_port: port_known,
            }),
            restart: config.restart.policy,
            backoff_initial: config.restart.backoff_initial,
            backoff_max: config.restart.backoff_max,
            max_restarts: config.restart.max_restarts,
            window: config.restart.window,
            stable_after: config.restart.stable_after,
            grace: config.stop.grace,
            on_change: config.watch.on_change,
            kill_strays: config.strays.action == StrayAction::Kill,
        }
    }

    /// The delay before restart number `step` (0-based) of a crash loop.
    pub fn backoff(&self, step: u32) -> Duration {
        let factor = 2u32.saturating_pow(step.min(31));
        self.backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

/// What happened to the last backend process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastExit {
    /// The process that exited.
    pub pid: Pid,
    /// Its exit code, if it exited on its own.
    pub code: Option<i32>,
    /// The signal that ended it.
    pub signal: Option<i32>,
    /// In words: "exited with code 1", "stopped on request", ...
    pub reason: String,
    /// Its last lines of output (at most [`TAIL_LINES`]).
    pub tail: Vec<String>,
}

/// How many output lines a failure reason carries.
pub const TAIL_LINES: usize = 10;

/// How many changed files a stale report names.
pub const STALE_FILES: usize = 5;

/// The running backend's code changed after it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    /// The first change.
    pub since: Instant,
    /// The first few changed files, relative to the watched folder.
    pub files: Vec<String>,
    /// How many changes in all.
    pub count: usize,
}

/// The result of the latest health probe.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `None` until the first probe of the current process has finished.
    pub ok: Option<bool>,
    /// Latency of the last successful probe.
    pub latency_ms: Option<u64>,
    /// The error of the last failed probe.
    pub last_error: Option<String>,
    /// Why the last probe failed, in words: "/health answered 503 Service Unavailable",
    /// "timed out after 1 s", "connection refused".
    #[serde(default)]
    pub failure: Option<String>,
    /// While starting with a known port: whether it listens yet (`false`: waiting for it, no
    /// HTTP probe sent). `None` when not checked.
    #[serde(default)]
    pub listening: Option<bool>,
}

/// A snapshot of the supervisor for `status`, the tray and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Current state.
    pub state: State,
    /// The current backend process, if one is running.
    pub pid: Option<Pid>,
    /// How long the current process has been up.
    pub uptime: Option<Duration>,
    /// Automatic restarts since the warden started: after a crash or a failed health check.
    pub restarts: u32,
    /// Starts that were asked for: the first one, Start and Restart, a restart for changed
    /// code, a reload.
    pub starts: u32,
    /// The last exit.
    pub last_exit: Option<LastExit>,
    /// The last probe.
    pub health: Health,
    /// Why the engine is `failed`.
    pub failed_reason: Option<String>,
    /// Time left in `backoff`.
    pub backoff_remaining: Option<Duration>,
    /// The current process was adopted (started outside the warden; output not captured).
    pub adopted: bool,
    /// The current process runs code that changed since it started.
    pub stale: Option<Stale>,
}

/// What follows a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Stay stopped.
    Stay,
    /// Start again (a restart).
    Start,
    /// End the engine (shutdown).
    Exit,
    /// Go to `failed`, with the reason already in the report (`failed_reason`).
    Fail,
}

/// How a start is watched until the first 2xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartingProbe {
    /// Waiting for the port to listen: port checks every [`PORT_POLL`].
    AwaitPort,
    /// HTTP probes; after a failure the next one comes `spacing` later.
    Http { spacing: Duration },
}

/// Strays that held the port, and the start under way (`[strays] action = "kill"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortFreeing {
    /// None has blocked it.
    NotTried,
    /// They are being killed; the spawn is asked for again once they are.
    Killing,
    /// They were killed: a second block fails the start.
    Killed,
}

/// The current backend process.
#[derive(Debug, Clone, Copy)]
struct Child {
    pid: Pid,
    started_at: Instant,
    adopted: bool,
}

/// What the health check says of a backend past its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Answering (or, without a health check, alive); `failures` in a row since the last 2xx.
    Healthy { failures: u32 },
    /// Failing its health check (or never healthy within the start timeout) since `since`.
    Unhealthy { since: Instant },
}

/// What is left of a tree on its way down.
#[derive(Debug, Clone, Copy)]
enum Remaining {
    /// The leader (its exit not reported yet) and the rest of its tree.
    All(Child),
    /// Only the leader: the tree watch saw the rest gone before the leader's exit came in.
    Leader(Child),
    /// The leader's exit is in; the rest of the tree it led is not gone yet.
    Tree(Pid),
}

impl Remaining {
    /// The leader, until its exit is reported.
    fn leader(self) -> Option<Child> {
        match self {
            Remaining::All(child) | Remaining::Leader(child) => Some(child),
            Remaining::Tree(_) => None,
        }
    }

    /// The tree (by its leader's PID), until the tree watch reports it gone.
    fn tree(self) -> Option<Pid> {
        match self {
            Remaining::All(child) => Some(child.pid),
            Remaining::Tree(pid) => Some(pid),
            Remaining::Leader(_) => None,
        }
    }
}

/// Where the engine stands, each phase with what it needs and nothing else. The public
/// [`State`] is derived from it. `leftovers` is the tree of a backend that exited on its own,
/// being killed: no new backend is spawned until it is gone.
#[derive(Debug, Clone)]
enum Phase {
    /// No backend, and none wanted.
    Stopped { leftovers: Option<Pid> },
    /// A start with no process yet: the spawn was asked for, or waits for the leftovers (or
    /// for strays that held the port to be killed).
    Spawning {
        leftovers: Option<Pid>,
        port: PortFreeing,
    },
    /// Spawned (or adopted), not yet healthy. `probing`: a port check or probe is out;
    /// `restart_when_settled`: code changed meanwhile, restart once the start has settled.
    Starting {
        child: Child,
        probe: StartingProbe,
        probing: bool,
        restart_when_settled: bool,
    },
    /// Past its start: healthy or unhealthy.
    Running {
        child: Child,
        verdict: Verdict,
        probing: bool,
    },
    /// Asked to stop (or being killed); waiting for the whole tree to be gone. `forced`: the
    /// tree has been (or is being) killed rather than asked.
    Stopping {
        remaining: Remaining,
        forced: bool,
        then: Then,
    },
    /// Exited; waiting out the backoff, and for the leftovers to be gone, before the next start.
    Backoff {
        until: Instant,
        leftovers: Option<Pid>,
    },
    /// Gave up (the reason is in the report). `by_strays`: strays held the port, and killing
    /// them resumes the start.
    Failed {
        leftovers: Option<Pid>,
        by_strays: bool,
    },
    /// Shut down or detached: the engine is ending and starts nothing more.
    Ended,
}

impl Phase {
    fn state(&self) -> State {
        match self {
            Phase::Stopped { .. } | Phase::Ended => State::Stopped,
            Phase::Spawning { .. } | Phase::Starting { .. } => State::Starting,
            Phase::Running {
                verdict: Verdict::Healthy { .. },
                ..
            } => State::Healthy,
            Phase::Running {
                verdict: Verdict::Unhealthy { .. },
                ..
            } => State::Unhealthy,
            Phase::Stopping { .. } => State::Stopping,
            Phase::Backoff { .. } => State::Backoff,
            Phase::Failed { .. } => State::Failed,
        }
    }

    /// The current backend process, if one is running (or its exit is not reported yet).
    fn child(&self) -> Option<Child> {
        match self {
            Phase::Starting { child, .. } | Phase::Running { child, .. } => Some(*child),
            Phase::Stopping { remaining, .. } => remaining.leader(),
            _ => None,
        }
    }

    /// The tree of an exited backend that is being killed, where this phase can have one.
    fn leftovers(&self) -> Option<Pid> {
        match self {
            Phase::Stopped { leftovers }
            | Phase::Spawning { leftovers, .. }
            | Phase::Backoff { leftovers, .. }
            | Phase::Failed { leftovers, .. } => *leftovers,
            _ => None,
        }
    }

    /// Whether `timer` means anything in this phase: a phase change stops the others.
    fn uses(&self, timer: Timer) -> bool {
        match timer {
            Timer::Kill => matches!(
                self,
                Phase::Stopping {
                    remaining: Remaining::All(_) | Remaining::Tree(_),
                    forced: false,
                    ..
                }
            ),
            Timer::Backoff => matches!(
                self,
                Phase::Backoff {
                    leftovers: None,
                    ..
                }
            ),
            Timer::Probe => matches!(
                self,
                Phase::Starting { probing: false, .. } | Phase::Running { probing: false, .. }
            ),
            Timer::StartLimit => matches!(self, Phase::Starting { .. }),
            Timer::RestartUnhealthy => matches!(
                self,
                Phase::Running {
                    verdict: Verdict::Unhealthy { .. },
                    ..
                }
            ),
        }
    }

    /// Marks the port check or probe of the current process as answered (or sent).
    fn set_probing(&mut self, out: bool) {
        if let Phase::Starting { probing, .. } | Phase::Running { probing, .. } = self {
            *probing = out;
        }
    }
}

/// A deadline the supervisor keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// The grace period of a stop is over: kill the tree.
    Kill,
    /// The backoff after a crash is over: start again.
    Backoff,
    /// The next port check or health probe is due.
    Probe,
    /// The start has lasted its limit: healthy without a health check (alive long enough),
    /// unhealthy with one (`start_timeout`).
    StartLimit,
    /// Unhealthy for `restart_after`: restart.
    RestartUnhealthy,
}

impl Timer {
    const ALL: [Timer; 5] = [
        Timer::Kill,
        Timer::Backoff,
        Timer::Probe,
        Timer::StartLimit,
        Timer::RestartUnhealthy,
    ];
}

/// Every deadline of the supervisor, one slot per [`Timer`] (quinn-proto's `TimerTable`):
/// [`Supervisor::next_deadline`] is the earliest of them, and a phase change stops those the
/// new phase has no use for.
#[derive(Debug, Clone, Default)]
struct Timers([Option<Instant>; Timer::ALL.len()]);

impl Timers {
    fn set(&mut self, timer: Timer, at: Instant) {
        self.0[timer as usize] = Some(at);
    }

    fn stop(&mut self, timer: Timer) {
        self.0[timer as usize] = None;
    }

    fn expired(&self, timer: Timer, now: Instant) -> bool {
        self.0[timer as usize].is_some_and(|at| now >= at)
    }

    fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }
}

/// Crashes (and restarts for bad health) and where the backoff stands.
#[derive(Debug, Default)]
struct CrashHistory {
    /// When each crash within the window happened.
    times: VecDeque<Instant>,
    /// Consecutive crashes: the step of the next backoff.
    step: u32,
    /// A crash or unhealthy episode is going on: the next healthy report is a recovery.
    recovering: bool,
}

/// The state machine. See the module docs.
#[derive(Debug)]
pub struct Supervisor {
    policy: Policy,
    phase: Phase,
    timers: Timers,
    crashes: CrashHistory,
    restarts: u32,
    starts: u32,
    last_exit: Option<LastExit>,
    health: Health,
    /// Why the engine last gave up: shown from then until the next start.
    failed_reason: Option<String>,
    stale: Option<Stale>,
}

impl Supervisor {
    /// A supervisor in `stopped`, following `policy`.
    pub fn new(policy: Policy) -> Supervisor {
        Supervisor {
            policy,
            phase: Phase::Stopped { leftovers: None },
            timers: Timers::default(),
            crashes: CrashHistory::default(),
            restarts: 0,
            starts: 0,
            last_exit: None,
            health: Health::default(),
            failed_reason: None,
            stale: None,
        }
    }

    /// Replaces the policy (config reload). Applies from the next decision on; a newly
    /// configured health check probes at once.
    fn set_policy(&mut self, policy: Policy, now: Instant) {
        if policy.health.is_none() {
            self.timers.stop(Timer::Probe);
        } else if self.policy.health.is_none() {
            self.arm(Timer::Probe, now);
        }
        if !policy.health.as_ref().is_some_and(|h| h.wait_for_port) {
            // No port to wait for any more: HTTP probes from now on.
            if let Phase::Starting {
                probe: probe @ StartingProbe::AwaitPort,
                ..
            } = &mut self.phase
            {
                *probe = StartingProbe::Http {
                    spacing: STARTING_PROBE_INTERVAL,
                };
            }
            // "Not listening" is only ever said of a start that waits for the port.
            if self.health.listening == Some(false) {
                self.health.listening = None;
            }
        }
        self.policy = policy;
        self.arm_policy_timers();
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The snapshot of an engine that has not started: stopped, nothing known.
    pub fn new_snapshot() -> Snapshot {
        Snapshot {
            state: State::Stopped,
            pid: None,
            uptime: None,
            restarts: 0,
            starts: 0,
            last_exit: None,
            health: Health::default(),
            failed_reason: None,
            backoff_remaining: None,
            adopted: false,
            stale: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.phase.state()
    }

    /// The current backend process, if any.
    pub fn pid(&self) -> Option<Pid> {
        self.phase.child().map(|c| c.pid)
    }

    /// A snapshot for status reports, as of `now`.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let child = self.phase.child();
        Snapshot {
            state: self.state(),
            pid: child.map(|c| c.pid),
            uptime: child.map(|c| now.saturating_duration_since(c.started_at)),
            restarts: self.restarts,
            starts: self.starts,
            last_exit: self.last_exit.clone(),
            health: self.health.clone(),
            failed_reason: self.failed_reason.clone(),
            backoff_remaining: match self.phase {
                Phase::Backoff { until, .. } => Some(until.saturating_duration_since(now)),
                _ => None,
            },
            adopted: child.is_some_and(|c| c.adopted),
            stale: self.stale.clone(),
        }
    }

    /// When the supervisor next wants a [`Input::Tick`], if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Feed one input that happened at `now`; returns what to do.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        match input {
            Input::Command(cmd) => self.on_command(cmd, now, &mut fx),
            Input::Spawned { pid } => self.on_spawned(pid, now, &mut fx),
            Input::Adopt { pid } => {
                if matches!(self.phase, Phase::Stopped { leftovers: None }) {
                    fx.push(Effect::Adopt { pid });
                }
            }
            Input::Adopted { pid } => self.on_adopted(pid, now, &mut fx),
            // Nothing to supervise after all: start one instead.
            Input::AdoptFailed { .. } => self.on_command(Command::Start, now, &mut fx),
            // What did not start for want of a config starts now.
            Input::ConfigFixed => self.on_command(Command::Start, now, &mut fx),
            Input::SpawnFailed { error } => {
                if let Phase::Spawning { leftovers, .. } = self.phase {
                    let reason = format!("could not start the backend: {error}");
                    self.fail(reason, leftovers, &mut fx);
                }
            }
            Input::PortBlocked { reason, strays } => self.on_port_blocked(reason, strays, &mut fx),
            Input::StraysKilled => match self.phase {
                Phase::Failed {
                    by_strays: true, ..
                } => {
                    self.reset_crash_history();
                    self.start(&mut fx);
                }
                Phase::Spawning {
                    leftovers: None,
                    port: PortFreeing::Killing,
                } => {
                    self.set_phase(Phase::Spawning {
                        leftovers: None,
                        port: PortFreeing::Killed,
                    });
                    fx.push(Effect::Spawn {
                        attempt: self.crashes.step + 1,
                    });
                }
                _ => {}
            },
            Input::Strays { mut pids } => {
                // Never the tree of our own backend, whatever a scan thought.
                let ours = [self.pid(), self.phase.leftovers(), self.stopping_tree()];
                pids.retain(|pid| !ours.contains(&Some(*pid)));
                if !pids.is_empty() {
                    fx.push(match self.policy.kill_strays {
                        true => Effect::KillStrays { pids },
                        false => Effect::AlertStrays { pids },
                    });
                }
            }
            Input::Exited { pid, status, tail } => self.on_exited(pid, status, tail, now, &mut fx),
            Input::TreeGone { pid } => self.on_tree_gone(pid, now, &mut fx),
            Input::Unreachable { pid } => {
                // Kill now rather than wait the grace period for nothing. Not a forced stop:
                // the grace period did not run out (its deadline stays, should the kill not
                // end the tree).
                if let Phase::Stopping { remaining, .. } = self.phase
                    && remaining.tree() == Some(pid)
                {
                    fx.push(Effect::Kill { pid });
                }
            }
            Input::Probed { pid, probe } => self.on_probed(pid, probe, now, &mut fx),
            Input::PortChecked { pid, listening } => {
                self.on_port_checked(pid, listening, now, &mut fx)
            }
            Input::CodeChanged { files, count } => self.on_code_changed(files, count, now, &mut fx),
            Input::Reload { policy, change } => {
                let change = change.with_policy(&self.policy, &policy);
                self.set_policy(policy, now);
                self.on_reloaded(change, now, &mut fx);
            }
            Input::Tick => self.on_tick(now, &mut fx),
        }
        fx
    }

    /// Moves to `phase`, stopping the timers it has no use for.
    fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
        for timer in Timer::ALL {
            if !self.phase.uses(timer) {
                self.timers.stop(timer);
            }
        }
    }

    /// Sets `timer`, if the phase has a use for it.
    fn arm(&mut self, timer: Timer, at: Instant) {
        if self.phase.uses(timer) {
            self.timers.set(timer, at);
        }
    }

    /// Sets the timers that follow from the policy: the end of a start, the restart of an
    /// unhealthy backend (again after a reload, which may have changed them).
    fn arm_policy_timers(&mut self) {
        match self.phase {
            Phase::Starting { child, .. } => {
                let limit = match &self.policy.health {
                    None => SETTLE_WITHOUT_HEALTH,
                    Some(h) => h.start_timeout,
                };
                self.arm(Timer::StartLimit, later(child.started_at, limit));
            }
            Phase::Running {
                verdict: Verdict::Unhealthy { since },
                ..
            } => match self.policy.health.as_ref().and_then(|h| h.restart_after) {
                Some(after) => self.arm(Timer::RestartUnhealthy, later(since, after)),
                None => self.timers.stop(Timer::RestartUnhealthy),
            },
            _ => {}
        }
    }

    /// The tree being stopped, until it is gone.
    fn stopping_tree(&self) -> Option<Pid> {
        match self.phase {
            Phase::Stopping { remaining, .. } => remaining.tree(),
            _ => None,
        }
    }

    /// A start found strays holding the port: with `action = "kill"`, they are killed once and
    /// the spawn is asked again; otherwise (or if they held it again) the start fails until
    /// the user kills them.
    fn on_port_blocked(&mut self, reason: String, strays: Vec<Pid>, fx: &mut Vec<Effect>) {
        let Phase::Spawning { leftovers, port } = self.phase else {
            return;
        };
        if self.policy.kill_strays && port == PortFreeing::NotTried && !strays.is_empty() {
            self.set_phase(Phase::Spawning {
                leftovers,
                port: PortFreeing::Killing,
            });
            fx.push(Effect::FreePort { pids: strays });
            return;
        }
        self.fail(
            format!("could not start the backend: {reason}"),
            leftovers,
            fx,
        );
        if let Phase::Failed { by_strays, .. } = &mut self.phase {
            *by_strays = true;
        }
    }

    /// Shutting down or detaching: commands and changes no longer count.
    fn shutting_down(&self) -> bool {
        matches!(
            self.phase,
            Phase::Ended
                | Phase::Stopping {
                    then: Then::Exit,
                    ..
                }
        )
    }

    fn on_command(&mut self, cmd: Command, now: Instant, fx: &mut Vec<Effect>) {
        if self.shutting_down() {
            return;
        }
        match cmd {
            Command::Start => match &mut self.phase {
                Phase::Stopped { .. } | Phase::Failed { .. } | Phase::Backoff { .. } => {
                    self.reset_crash_history();
                    self.start(fx);
                }
                Phase::Stopping { then, .. } => *then = Then::Start,
                Phase::Spawning { .. }
                | Phase::Starting { .. }
                | Phase::Running { .. }
                | Phase::Ended => {}
            },
            Command::Restart => match &mut self.phase {
                Phase::Spawning { .. } | Phase::Starting { .. } | Phase::Running { .. } => {
                    self.reset_crash_history();
                    self.begin_stop(Then::Start, now, fx);
                }
                Phase::Stopping { then, .. } => *then = Then::Start,
                Phase::Stopped { .. } | Phase::Failed { .. } | Phase::Backoff { .. } => {
                    self.reset_crash_history();
                    self.start(fx);
                }
                Phase::Ended => {}
            },
            Command::Stop => self.begin_stop(Then::Stay, now, fx),
            Command::Shutdown => self.begin_stop(Then::Exit, now, fx),
            Command::Detach => {
                if let Some(child) = self.phase.child() {
                    fx.push(Effect::Release { pid: child.pid });
                }
                let dying = match self.phase {
                    Phase::Stopping { remaining, .. } => remaining.tree(),
                    Phase::Starting { .. } | Phase::Running { .. } => None,
                    _ => self.phase.leftovers(),
                };
                match dying {
                    // Leftovers of a crash are still being killed: finish that first.
                    Some(pid) => self.set_phase(Phase::Stopping {
                        remaining: Remaining::Tree(pid),
                        forced: true,
                        then: Then::Exit,
                    }),
                    None => {
                        self.set_phase(Phase::Ended);
                        fx.push(Effect::Exit);
                    }
                }
            }
        }
    }

    /// Spawn now, or as soon as the previous tree is gone: never two trees at once.
    fn start(&mut self, fx: &mut Vec<Effect>) {
        let leftovers = self.phase.leftovers();
        self.failed_reason = None;
        self.set_phase(Phase::Spawning {
            leftovers,
            port: PortFreeing::NotTried,
        });
        if leftovers.is_none() {
            fx.push(Effect::Spawn {
                attempt: self.crashes.step + 1,
            });
        }
    }

    fn begin_stop(&mut self, then: Then, now: Instant, fx: &mut Vec<Effect>) {
        match self.phase {
            Phase::Stopping {
                then: current,
                remaining,
                forced,
            } => {
                // Already on the way down; only what follows changes.
                if current != Then::Exit {
                    self.phase = Phase::Stopping {
                        remaining,
                        forced,
                        then,
                    };
                }
            }
            Phase::Starting { child, .. } | Phase::Running { child, .. } => {
                self.set_phase(Phase::Stopping {
                    remaining: Remaining::All(child),
                    forced: false,
                    then,
                });
                self.arm(Timer::Kill, later(now, self.policy.grace));
                fx.push(Effect::Terminate { pid: child.pid });
            }
            Phase::Spawning {
                leftovers: None, ..
            } => self.finish_stop(None, false, then, fx),
            Phase::Spawning {
                leftovers: Some(pid),
                ..
            }
            | Phase::Backoff {
                leftovers: Some(pid),
                ..
            }
            | Phase::Failed {
                leftovers: Some(pid),
                ..
            }
            | Phase::Stopped {
                leftovers: Some(pid),
            } => {
                // The leftovers of the last run are being killed already.
                self.set_phase(Phase::Stopping {
                    remaining: Remaining::Tree(pid),
                    forced: true,
                    then,
                });
            }
            Phase::Backoff { .. } | Phase::Failed { .. } => self.finish_stop(None, false, then, fx),
            Phase::Stopped { leftovers: None } => {
                if then == Then::Exit {
                    self.finish_stop(None, false, then, fx);
                }
            }
            Phase::Ended => {}
        }
    }

    /// The tree is gone (`pid`: the stop of that tree is complete): stopped, then what follows.
    fn finish_stop(&mut self, pid: Option<Pid>, forced: bool, then: Then, fx: &mut Vec<Effect>) {
        self.health = Health::default();
        self.set_phase(Phase::Stopped { leftovers: None });
        if pid.is_some() {
            fx.push(Effect::Notify(Event::Stopped { pid, forced }));
        }
        match then {
            Then::Stay => {}
            Then::Start => self.start(fx),
            Then::Exit => {
                self.set_phase(Phase::Ended);
                fx.push(Effect::Exit);
            }
            Then::Fail => {
                let reason = self.failed_reason.take().unwrap_or_default();
                self.fail(reason, None, fx);
            }
        }
    }

    fn on_spawned(&mut self, pid: Pid, now: Instant, fx: &mut Vec<Effect>) {
        if !matches!(
            self.phase,
            Phase::Spawning {
                leftovers: None,
                ..
            }
        ) {
            // Cannot happen with a well-behaved runner; never track two children.
            fx.push(Effect::Kill { pid });
            return;
        }
        if self.restarts_pending() {
            self.restarts += 1;
        } else {
            self.starts += 1;
        }
        self.watch_new_child(
            Child {
                pid,
                started_at: now,
                adopted: false,
            },
            now,
        );
        fx.push(Effect::Notify(Event::Started {
            pid,
            attempt: self.crashes.step + 1,
        }));
    }

    fn on_adopted(&mut self, pid: Pid, now: Instant, fx: &mut Vec<Effect>) {
        if !matches!(self.phase, Phase::Stopped { leftovers: None }) {
            return; // only a warden that has not started anything adopts
        }
        self.reset_crash_history();
        self.watch_new_child(
            Child {
                pid,
                started_at: now,
                adopted: true,
            },
            now,
        );
        fx.push(Effect::Notify(Event::Adopted { pid }));
    }

    /// Health watching of a process that just became the current one: with a known port,
    /// wait for it to listen first; else HTTP probes from now on.
    fn watch_new_child(&mut self, child: Child, now: Instant) {
        self.stale = None;
        self.health = Health::default();
        let wait_for_port = self.policy.health.as_ref().is_some_and(|h| h.wait_for_port);
        let probe = if wait_for_port {
            self.health.listening = Some(false);
            StartingProbe::AwaitPort
        } else {
            StartingProbe::Http {
                spacing: STARTING_PROBE_INTERVAL,
            }
        };
        self.set_phase(Phase::Starting {
            child,
            probe,
            probing: false,
            restart_when_settled: false,
        });
        if self.policy.health.is_some() {
            self.arm(Timer::Probe, now);
        }
        self.arm_policy_timers();
    }

    /// Whether this spawn is an automatic restart (a crash happened since the last manual start).
    fn restarts_pending(&self) -> bool {
        self.crashes.step > 0 || self.crashes.recovering
    }

    fn on_exited(
        &mut self,
        pid: Pid,
        status: ExitStatus,
        tail: Vec<String>,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let Some(child) = self.phase.child().filter(|c| c.pid == pid) else {
            return; // about a process that is no longer ours
        };
        let tail = last_lines(tail);

        if let Phase::Stopping {
            remaining,
            forced,
            then,
        } = self.phase
        {
            self.last_exit = Some(LastExit {
                pid,
                code: status.code,
                signal: status.signal,
                reason: "stopped on request".into(),
                tail,
            });
            match remaining {
                // Its children got the same request; the tree watch reports when all are gone.
                Remaining::All(_) => self.set_phase(Phase::Stopping {
                    remaining: Remaining::Tree(pid),
                    forced,
                    then,
                }),
                Remaining::Leader(_) | Remaining::Tree(_) => {
                    self.finish_stop(Some(pid), forced, then, fx)
                }
            }
            return;
        }

        // An exit nobody asked for. Whatever the leader left behind dies now: an orphaned
        // reload worker must never keep serving stale code.
        fx.push(Effect::Kill { pid });

        let restart = match self.policy.restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !status.success(),
            RestartPolicy::Never => false,
        };
        self.last_exit = Some(LastExit {
            pid,
            code: status.code,
            signal: status.signal,
            reason: status.to_string(),
            tail: tail.clone(),
        });

        if !restart {
            if status.success() {
                self.set_phase(Phase::Stopped {
                    leftovers: Some(pid),
                });
                fx.push(Effect::Notify(Event::Exited { pid, status }));
            } else {
                let policy = match self.policy.restart {
                    RestartPolicy::Never => "never",
                    _ => "on-failure",
                };
                let reason = with_tail(
                    format!("the backend {status} (restart policy is \"{policy}\")"),
                    &tail,
                );
                self.fail(reason, Some(pid), fx);
            }
            return;
        }

        if now.saturating_duration_since(child.started_at) >= self.policy.stable_after {
            self.crashes.step = 0;
        }
        if self.record_crash(now) {
            let reason = with_tail(
                format!(
                    "gave up after {} crashes within {}: the backend {status}",
                    self.crashes.times.len(),
                    humantime::format_duration(self.policy.window)
                ),
                &tail,
            );
            self.fail(reason, Some(pid), fx);
            return;
        }
        let delay = self.policy.backoff(self.crashes.step);
        let first_in_episode = self.crashes.step == 0;
        self.crashes.step += 1;
        self.crashes.recovering = true;
        self.set_phase(Phase::Backoff {
            until: later(now, delay),
            leftovers: Some(pid),
        });
        fx.push(Effect::Notify(Event::Crashed {
            pid,
            status,
            delay,
            attempt: self.crashes.step,
            first_in_episode,
            tail,
        }));
    }

    /// Records a crash; true when that makes too many within the window.
    fn record_crash(&mut self, now: Instant) -> bool {
        let times = &mut self.crashes.times;
        times.push_back(now);
        while let Some(&first) = times.front() {
            if now.saturating_duration_since(first) > self.policy.window {
                times.pop_front();
            } else {
                break;
            }
        }
        times.len() > self.policy.max_restarts as usize
    }

    fn reset_crash_history(&mut self) {
        self.crashes.times.clear();
        self.crashes.step = 0;
        self.crashes.recovering = false;
    }

    fn fail(&mut self, reason: String, leftovers: Option<Pid>, fx: &mut Vec<Effect>) {
        self.set_phase(Phase::Failed {
            leftovers,
            by_strays: false,
        });
        self.crashes.recovering = false;
        self.failed_reason = Some(reason.clone());
        fx.push(Effect::Notify(Event::GaveUp { reason }));
    }

    fn on_tree_gone(&mut self, pid: Pid, now: Instant, fx: &mut Vec<Effect>) {
        match self.phase {
            Phase::Stopping {
                remaining,
                forced,
                then,
            } if remaining.tree() == Some(pid) => match remaining.leader() {
                // Done once the main process is reaped too, so its exit status is known.
                Some(child) => self.set_phase(Phase::Stopping {
                    remaining: Remaining::Leader(child),
                    forced,
                    then,
                }),
                None => self.finish_stop(Some(pid), forced, then, fx),
            },
            _ if self.phase.leftovers() != Some(pid) => {}
            Phase::Spawning { .. } => {
                self.set_phase(Phase::Spawning {
                    leftovers: None,
                    port: PortFreeing::NotTried,
                });
                fx.push(Effect::Spawn {
                    attempt: self.crashes.step + 1,
                });
            }
            Phase::Backoff { until, .. } => {
                self.set_phase(Phase::Backoff {
                    until,
                    leftovers: None,
                });
                if now >= until {
                    self.start(fx);
                } else {
                    self.arm(Timer::Backoff, until);
                }
            }
            Phase::Failed { by_strays, .. } => self.set_phase(Phase::Failed {
                leftovers: None,
                by_strays,
            }),
            _ => self.set_phase(Phase::Stopped { leftovers: None }),
        }
    }

    fn on_probed(&mut self, pid: Pid, probe: Probe, now: Instant, fx: &mut Vec<Effect>) {
        if self.pid() != Some(pid) {
            return;
        }
        self.phase.set_probing(false);
        let Some(health) = self.policy.health.clone() else {
            return;
        };
        match probe {
            Probe::Ok { latency } => {
                self.health = Health {
                    ok: Some(true),
                    latency_ms: Some(latency.as_millis().try_into().unwrap_or(u64::MAX)),
                    last_error: None,
                    failure: None,
                    listening: self.health.listening,
                };
                self.arm(Timer::Probe, later(now, health.interval));
                match &mut self.phase {
                    Phase::Starting { .. }
                    | Phase::Running {
                        verdict: Verdict::Unhealthy { .. },
                        ..
                    } => self.become_healthy(pid, Some(latency), now, fx),
                    Phase::Running {
                        verdict: Verdict::Healthy { failures },
                        ..
                    } => *failures = 0,
                    _ => {}
                }
            }
            Probe::Failed { error, failure } => {
                self.health.ok = Some(false);
                self.health.last_error = Some(error.clone());
                self.health.failure = Some(failure.to_string());
                match &mut self.phase {
                    Phase::Starting { probe, .. } => {
                        // Not up yet: probe again soon, then less and less often, so that a
                        // long start is not a flood of requests.
                        let spacing = match *probe {
                            StartingProbe::Http { spacing } => spacing,
                            StartingProbe::AwaitPort => STARTING_PROBE_INTERVAL,
                        };
                        *probe = StartingProbe::Http {
                            spacing: next_starting_spacing(spacing, health.interval),
                        };
                        self.arm(Timer::Probe, later(now, spacing));
                    }
                    Phase::Running {
                        child,
                        verdict: Verdict::Healthy { failures },
                        probing,
                    } => {
                        *failures += 1;
                        if *failures >= health.unhealthy_after {
                            let (child, probing) = (*child, *probing);
                            self.become_unhealthy(child, probing, error, now, fx);
                        }
                        self.arm(Timer::Probe, later(now, health.interval));
                    }
                    _ => self.arm(Timer::Probe, later(now, health.interval)),
                }
            }
        }
    }

    fn on_port_checked(&mut self, pid: Pid, listening: bool, now: Instant, fx: &mut Vec<Effect>) {
        if self.pid() != Some(pid) {
            return;
        }
        self.phase.set_probing(false);
        if self.policy.health.is_none() {
            return;
        }
        let Phase::Starting {
            child,
            probe: probe @ StartingProbe::AwaitPort,
            probing,
            ..
        } = &mut self.phase
        else {
            // The start timed out or the policy changed meanwhile: HTTP probes take over.
            self.arm(Timer::Probe, now);
            return;
        };
        if listening {
            // Listening: most backends answer at once now, so the first HTTP probe goes out
            // without waiting for a tick.
            self.health.listening = Some(true);
            *probe = StartingProbe::Http {
                spacing: STARTING_PROBE_INTERVAL,
            };
            *probing = true;
            self.timers.stop(Timer::Probe);
            fx.push(Effect::Probe { pid });
        } else {
            let waited = now.saturating_duration_since(child.started_at);
            self.arm(Timer::Probe, now + port_poll(waited));
        }
    }

    fn become_healthy(
        &mut self,
        pid: Pid,
        latency: Option<Duration>,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let (child, probing, restart_when_settled) = match self.phase {
            Phase::Starting {
                child,
                probing,
                restart_when_settled,
                ..
            } => (child, probing, restart_when_settled),
            Phase::Running { child, probing, .. } => (child, probing, false),
            _ => return,
        };
        self.set_phase(Phase::Running {
            child,
            verdict: Verdict::Healthy { failures: 0 },
            probing,
        });
        let recovered = std::mem::take(&mut self.crashes.recovering);
        fx.push(Effect::Notify(Event::Healthy {
            pid,
            latency,
            recovered,
        }));
        if restart_when_settled {
            self.restart_for_code_after_start(now, fx);
        }
    }

    fn become_unhealthy(
        &mut self,
        child: Child,
        probing: bool,
        error: String,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        self.set_phase(Phase::Running {
            child,
            verdict: Verdict::Unhealthy { since: now },
            probing,
        });
        self.arm_policy_timers();
        self.crashes.recovering = true;
        fx.push(Effect::Notify(Event::Unhealthy {
            pid: child.pid,
            error,
        }));
    }

    /// A change that came in while starting waited for the start to settle; now is the time.
    fn restart_for_code_after_start(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        let count = self.stale.as_ref().map_or(0, |s| s.count);
        fx.push(Effect::Notify(Event::RestartingForCode {
            pid: self.pid(),
            count,
        }));
        self.begin_stop_for_code(now, fx);
    }

    fn begin_stop_for_code(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        // Not a crash: a fresh run, the backoff starts over.
        self.reset_crash_history();
        self.begin_stop(Then::Start, now, fx);
    }

    fn on_code_changed(
        &mut self,
        files: Vec<String>,
        count: usize,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        if self.policy.on_change == OnChange::Off || self.shutting_down() {
            return;
        }
        let restart = self.policy.on_change == OnChange::Restart;
        match self.phase {
            Phase::Starting { child, .. } | Phase::Running { child, .. } => {
                let pid = child.pid;
                let first = self.stale.is_none();
                let stale = self.stale.get_or_insert_with(|| Stale {
                    since: now,
                    files: Vec::new(),
                    count: 0,
                });
                stale.count += count;
                for file in files {
                    if stale.files.len() < STALE_FILES && !stale.files.contains(&file) {
                        stale.files.push(file);
                    }
                }
                let count = stale.count;
                if first {
                    fx.push(Effect::Notify(Event::Stale { pid, count }));
                }
                if !restart {
                    return;
                }
                if let Phase::Starting {
                    restart_when_settled,
                    ..
                } = &mut self.phase
                {
                    *restart_when_settled = true;
                } else {
                    fx.push(Effect::Notify(Event::RestartingForCode {
                        pid: Some(pid),
                        count,
                    }));
                    self.begin_stop_for_code(now, fx);
                }
            }
            // A fix saved while the backend is crashing: try it now, not after the backoff.
            Phase::Backoff { .. } | Phase::Failed { .. } if restart => {
                fx.push(Effect::Notify(Event::RestartingForCode {
                    pid: None,
                    count,
                }));
                self.reset_crash_history();
                self.start(fx);
            }
            // About to spawn: it will load the new code anyway.
            _ => {}
        }
    }

    /// A running backend restarts when what it launches changed. A backend that is `failed`
    /// (or waiting out a backoff) gets a fresh start after any change: the reload may well be
    /// the fix, and waiting for a click on Start would hide that. A stopped one stays stopped.
    fn on_reloaded(&mut self, change: ReloadChange, now: Instant, fx: &mut Vec<Effect>) {
        if self.shutting_down() || change == ReloadChange::Nothing {
            return;
        }
        match self.phase {
            Phase::Spawning { .. } | Phase::Starting { .. } | Phase::Running { .. }
                if change == ReloadChange::Launch =>
            {
                self.reset_crash_history();
                self.begin_stop(Then::Start, now, fx);
            }
            Phase::Failed { .. } | Phase::Backoff { .. } => {
                self.reset_crash_history();
                self.start(fx);
            }
            _ => {}
        }
    }

    fn on_tick(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if self.timers.expired(Timer::Kill, now)
            && let Phase::Stopping {
                remaining, forced, ..
            } = &mut self.phase
            && let Some(pid) = remaining.tree()
        {
            *forced = true;
            self.timers.stop(Timer::Kill);
            fx.push(Effect::Notify(Event::Killing {
                pid,
                grace: self.policy.grace,
            }));
            fx.push(Effect::Kill { pid });
        }
        if self.timers.expired(Timer::Backoff, now) {
            self.start(fx);
        }
        if self.timers.expired(Timer::StartLimit, now)
            && let Phase::Starting {
                child,
                probe,
                probing,
                restart_when_settled,
            } = self.phase
        {
            let Some(h) = &self.policy.health else {
                // Without a health check, alive this long is healthy.
                self.become_healthy(child.pid, None, now, fx);
                return self.send_due_probe(now, fx);
            };
            let mut error = format!(
                "not healthy {} after start",
                humantime::format_duration(h.start_timeout)
            );
            if probe == StartingProbe::AwaitPort {
                error.push_str(" (its port is not listening)");
            }
            self.become_unhealthy(child, probing, error, now, fx);
            if restart_when_settled {
                self.restart_for_code_after_start(now, fx);
            }
            return;
        }
        if self.timers.expired(Timer::RestartUnhealthy, now)
            && let Phase::Running {
                child,
                verdict: Verdict::Unhealthy { since },
                ..
            } = self.phase
        {
            self.restart_unhealthy(child.pid, now - since, now, fx);
            return;
        }
        self.send_due_probe(now, fx);
    }

    /// Sends the port check or health probe whose time has come.
    fn send_due_probe(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if !self.timers.expired(Timer::Probe, now) {
            return;
        }
        self.timers.stop(Timer::Probe);
        let effect = match &self.phase {
            Phase::Starting {
                child,
                probe: StartingProbe::AwaitPort,
                ..
            } => Effect::CheckPort { pid: child.pid },
            Phase::Starting { child, .. } | Phase::Running { child, .. } => {
                Effect::Probe { pid: child.pid }
            }
            _ => return,
        };
        self.phase.set_probing(true);
        fx.push(effect);
    }

    fn restart_unhealthy(
        &mut self,
        pid: Pid,
        unhealthy_for: Duration,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        fx.push(Effect::Notify(Event::RestartingUnhealthy {
            pid,
            unhealthy_for,
        }));
        if self.record_crash(now) {
            let reason = format!(
                "gave up after {} restarts within {}: the backend stayed unhealthy ({})",
                self.crashes.times.len(),
                humantime::format_duration(self.policy.window),
                self.health.last_error.as_deref().unwrap_or("no answer"),
            );
            self.begin_stop(Then::Fail, now, fx);
            self.failed_reason = Some(reason);
            return;
        }
        self.crashes.step += 1;
        self.begin_stop(Then::Start, now, fx);
    }
}

fn last_lines(mut tail: Vec<String>) -> Vec<String> {
    if tail.len() > TAIL_LINES {
        tail.drain(..tail.len() - TAIL_LINES);
    }
    tail
}

fn with_tail(reason: String, tail: &[String]) -> String {
    if tail.is_empty() {
        reason
    } else {
        format!("{reason}; last output:\n{}", tail.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    fn policy() -> Policy {
        Policy {
            health: Some(HealthPolicy {
                interval: 2 * S,
                unhealthy_after: 3,
                restart_after: Some(10 * S),
                start_timeout: 60 * S,
                wait_for_port: true,
            }),
            restart: RestartPolicy::OnFailure,
            backoff_initial: 500 * MS,
            backoff_max: 4 * S,
            max_restarts: 3,
            window: 60 * S,
            stable_after: 10 * S,
            grace: 5 * S,
            on_change: OnChange::Notify,
            kill_strays: false,
        }
    }

    fn changed(h: &mut Harness, files: &[&str]) -> Vec<Effect> {
        h.feed(Input::CodeChanged {
            files: files.iter().map(|f| f.to_string()).collect(),
            count: files.len(),
        })
    }

    /// A supervisor plus a clock: inputs at `t0 + elapsed`.
    struct Harness {
        sup: Supervisor,
        t0: Instant,
        now: Instant,
    }

    impl Harness {
        fn new(policy: Policy) -> Harness {
            let t0 = Instant::now();
            Harness {
                sup: Supervisor::new(policy),
                t0,
                now: t0,
            }
        }
        fn at(&mut self, elapsed: Duration) -> &mut Self {
            self.now = self.t0 + elapsed;
            self
        }
        fn feed(&mut self, input: Input) -> Vec<Effect> {
            self.sup.handle(input, self.now)
        }
        fn cmd(&mut self, c: Command) -> Vec<Effect> {
            self.feed(Input::Command(c))
        }
        /// A reload that keeps the policy and changed `change`.
        fn reload(&mut self, change: ReloadChange) -> Vec<Effect> {
            let policy = self.sup.policy().clone();
            self.feed(Input::Reload { policy, change })
        }
        fn exit(&mut self, pid: Pid, code: i32) -> Vec<Effect> {
            self.feed(Input::Exited {
                pid,
                status: ExitStatus {
                    code: Some(code),
                    signal: None,
                },
                tail: vec!["Traceback".into(), "boom".into()],
            })
        }
        fn ok(&mut self, pid: Pid) -> Vec<Effect> {
            self.feed(Input::Probed {
                pid,
                probe: Probe::Ok { latency: 3 * MS },
            })
        }
        fn bad(&mut self, pid: Pid) -> Vec<Effect> {
            self.feed(Input::Probed {
                pid,
                probe: Probe::Failed {
                    error: "http://127.0.0.1:54112/health: connection refused".into(),
                    failure: ProbeFailure::Refused,
                },
            })
        }
        fn port(&mut self, pid: Pid, listening: bool) -> Vec<Effect> {
            self.feed(Input::PortChecked { pid, listening })
        }
        /// `pid` ends on the SIGTERM of a stop request, and its tree is gone.
        fn terminated(&mut self, pid: Pid) {
            self.feed(Input::Exited {
                pid,
                status: ExitStatus {
                    code: None,
                    signal: Some(15),
                },
                tail: vec![],
            });
            self.feed(Input::TreeGone { pid });
        }
        /// Start and spawn `pid`, then make it healthy.
        fn running(&mut self, pid: Pid) {
            assert_eq!(spawns(&self.cmd(Command::Start)), 1);
            self.feed(Input::Spawned { pid });
            self.ok(pid);
            assert_eq!(self.sup.state(), State::Healthy);
        }
    }

    fn spawns(fx: &[Effect]) -> usize {
        fx.iter()
            .filter(|e| matches!(e, Effect::Spawn { .. }))
            .count()
    }

    fn has(fx: &[Effect], wanted: &Effect) -> bool {
        fx.contains(wanted)
    }

    fn events(fx: &[Effect]) -> Vec<&Event> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Notify(ev) => Some(ev),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn restarts_count_crashes_and_health_failures_starts_count_requests() {
        let mut h = Harness::new(policy());
        let counts = |h: &Harness| {
            let snap = h.sup.snapshot(h.now);
            (snap.starts, snap.restarts)
        };
        h.running(10);
        assert_eq!(counts(&h), (1, 0), "the first start was asked for");
        // A crash: its restart is automatic.
        h.at(S).exit(10, 1);
        h.feed(Input::TreeGone { pid: 10 });
        h.at(2 * S).feed(Input::Tick);
        h.feed(Input::Spawned { pid: 11 });
        h.ok(11);
        assert_eq!(counts(&h), (1, 1), "after a crash");
        // Restart clicked three times: requested, not restarts.
        let mut pid = 11;
        for n in 0..3 {
            h.at((3 + n) * S).cmd(Command::Restart);
            h.terminated(pid);
            pid += 1;
            h.feed(Input::Spawned { pid });
            h.ok(pid);
        }
        assert_eq!(counts(&h), (4, 1), "after three clicks on Restart");
        // A reload that changes what runs: requested too.
        h.at(10 * S).reload(ReloadChange::Launch);
        h.terminated(pid);
        h.feed(Input::Spawned { pid: pid + 1 });
        assert_eq!(counts(&h), (5, 1), "after a reload");
    }

    #[test]
    fn a_reload_restarts_what_changed_and_revives_a_failed_backend() {
        #[derive(Debug, Clone, Copy)]
        enum Setup {
            Healthy,
            Failed,
            Backoff,
            Stopped,
        }
        // (state before, what the reload changed, terminate?, spawns, state after)
        let table = [
            (
                Setup::Healthy,
                ReloadChange::Launch,
                true,
                0,
                State::Stopping,
            ),
            (
                Setup::Healthy,
                ReloadChange::Settings,
                false,
                0,
                State::Healthy,
            ),
            (
                Setup::Healthy,
                ReloadChange::Nothing,
                false,
                0,
                State::Healthy,
            ),
            (
                Setup::Failed,
                ReloadChange::Launch,
                false,
                1,
                State::Starting,
            ),
            (
                Setup::Failed,
                ReloadChange::Settings,
                false,
                1,
                State::Starting,
            ),
            (
                Setup::Failed,
                ReloadChange::Nothing,
                false,
                0,
                State::Failed,
            ),
            (
                Setup::Backoff,
                ReloadChange::Settings,
                false,
                1,
                State::Starting,
            ),
            (
                Setup::Stopped,
                ReloadChange::Launch,
                false,
                0,
                State::Stopped,
            ),
        ];
        for (setup, change, terminate, want_spawns, want_state) in table {
            let mut h = Harness::new(policy());
            match setup {
                Setup::Healthy => h.running(10),
                Setup::Failed => {
                    h.cmd(Command::Start);
                    h.feed(Input::SpawnFailed {
                        error: "No module named 'fastapi'".into(),
                    });
                }
                Setup::Backoff => {
                    h.running(10);
                    h.exit(10, 1);
                    h.feed(Input::TreeGone { pid: 10 });
                }
                Setup::Stopped => {}
            }
            let fx = h.at(S).reload(change);
            let what = format!("{setup:?} + {change:?}: {fx:?}");
            assert_eq!(
                has(&fx, &Effect::Terminate { pid: 10 }),
                terminate,
                "{what}"
            );
            assert_eq!(spawns(&fx), want_spawns, "{what}");
            assert_eq!(h.sup.state(), want_state, "{what}");
            if want_state == State::Starting {
                // A fresh start: the failure is forgotten and the crash count starts over.
                let snap = h.sup.snapshot(h.now);
                assert_eq!(snap.failed_reason, None, "{what}");
                assert_eq!(fx, vec![Effect::Spawn { attempt: 1 }], "{what}");
            }
        }
    }

    #[test]
    fn start_waits_for_the_port_then_probes_until_healthy() {
        let mut h = Harness::new(policy());
        let fx = h.cmd(Command::Start);
        assert_eq!(fx, vec![Effect::Spawn { attempt: 1 }]);
        assert_eq!(h.sup.state(), State::Starting);
        h.feed(Input::Spawned { pid: 10 });
        assert_eq!(
            h.sup.next_deadline(),
            Some(h.now),
            "first port check at once"
        );
        assert_eq!(h.sup.snapshot(h.now).health.listening, Some(false));
        // Not listening yet: a port check every PORT_POLL, never an HTTP probe.
        for n in 0..5u32 {
            h.at(n * PORT_POLL);
            assert_eq!(h.feed(Input::Tick), vec![Effect::CheckPort { pid: 10 }]);
            assert_eq!(
                h.sup.next_deadline(),
                Some(h.t0 + 60 * S),
                "only the start timeout while the check runs"
            );
            assert!(h.port(10, false).is_empty());
            assert_eq!(h.sup.next_deadline(), Some(h.now + PORT_POLL));
        }
        assert_eq!(h.sup.snapshot(h.now).health.ok, None, "no probe yet");
        // Listening: the first HTTP probe goes out at once, without a tick.
        h.at(5 * PORT_POLL);
        h.feed(Input::Tick);
        assert_eq!(h.port(10, true), vec![Effect::Probe { pid: 10 }]);
        assert_eq!(h.sup.snapshot(h.now).health.listening, Some(true));
        h.bad(10);
        assert_eq!(
            h.sup.state(),
            State::Starting,
            "failures while starting do not count"
        );
        assert_eq!(h.sup.next_deadline(), Some(h.now + STARTING_PROBE_INTERVAL));
        h.at(10 * MS);
        assert_eq!(h.feed(Input::Tick), vec![Effect::Probe { pid: 10 }]);
        let fx = h.ok(10);
        assert_eq!(h.sup.state(), State::Healthy);
        assert!(matches!(
            events(&fx)[..],
            [Event::Healthy {
                pid: 10,
                recovered: false,
                ..
            }]
        ));
        assert_eq!(
            h.sup.next_deadline(),
            Some(h.now + 2 * S),
            "then at the interval"
        );
    }

    /// Feeds a start whose HTTP probes all fail (each answered `latency` after it was asked)
    /// until `until`; returns when each HTTP probe was sent, from the spawn.
    fn failing_start(h: &mut Harness, listens_at: Duration, until: Duration) -> Vec<Duration> {
        let latency = MS;
        h.cmd(Command::Start);
        h.feed(Input::Spawned { pid: 10 });
        let mut sent = Vec::new();
        while let Some(due) = h.sup.next_deadline() {
            let at = due - h.t0;
            if at >= until || h.sup.state() != State::Starting {
                break;
            }
            h.at(at);
            let mut fx = h.feed(Input::Tick);
            while let Some(effect) = fx.pop() {
                match effect {
                    Effect::CheckPort { pid } => fx.extend(h.port(pid, at >= listens_at)),
                    Effect::Probe { pid } => {
                        sent.push(h.now - h.t0);
                        h.at(h.now - h.t0 + latency);
                        fx.extend(h.feed(Input::Probed {
                            pid,
                            probe: Probe::Failed {
                                error: "http://127.0.0.1:54112/health answered 503".into(),
                                failure: ProbeFailure::Status {
                                    path: "/health".into(),
                                    code: 503,
                                    reason: "Service Unavailable".into(),
                                },
                            },
                        }));
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        sent
    }

    #[test]
    fn http_probes_while_starting_come_at_doubling_spacing_up_to_twice_the_interval() {
        let mut h = Harness::new(policy());
        let sent = failing_start(&mut h, 40 * MS, 60 * S);
        // First probe once the port listens; then 3 ms after the first answer, doubling.
        assert_eq!(sent[0], 40 * MS);
        let gaps: Vec<Duration> = sent.windows(2).map(|w| w[1] - w[0] - MS).collect();
        let want: Vec<Duration> = [3, 6, 12, 24, 48, 96, 192, 384, 768, 1536, 3072, 4000, 4000]
            .iter()
            .map(|&ms| ms * MS)
            .collect();
        assert_eq!(gaps[..want.len()], want[..]);
        assert!(gaps[want.len()..].iter().all(|&g| g == 4 * S), "{gaps:?}");
        // The issue's figure: at most ~30 requests in a 60 s start that fails throughout.
        assert_eq!(sent.len(), 25, "{sent:?}");
        // After the start timeout: unhealthy, probed at the interval.
        h.at(60 * S);
        h.feed(Input::Tick);
        assert_eq!(h.sup.state(), State::Unhealthy);
    }

    #[test]
    fn starting_spacing_table() {
        // (spacing, interval, next)
        let table = [
            (3 * MS, 2 * S, 6 * MS),
            (1536 * MS, 2 * S, 3072 * MS),
            (3072 * MS, 2 * S, 4 * S),
            (4 * S, 2 * S, 4 * S),
            (3 * MS, 100 * MS, 6 * MS),
            (192 * MS, 100 * MS, 200 * MS),
            (3 * MS, Duration::ZERO, 3 * MS),
        ];
        for (spacing, interval, want) in table {
            assert_eq!(
                next_starting_spacing(spacing, interval),
                want,
                "{spacing:?} at interval {interval:?}"
            );
        }
    }

    #[test]
    fn without_a_known_port_http_probes_start_at_once_with_growing_spacing() {
        let mut p = policy();
        p.health.as_mut().unwrap().wait_for_port = false;
        let mut h = Harness::new(p);
        let sent = failing_start(&mut h, Duration::MAX, 2 * S);
        assert_eq!(h.sup.snapshot(h.now).health.listening, None);
        let want: Vec<Duration> = [0, 4, 11, 24, 49, 98, 195, 388, 773, 1542]
            .iter()
            .map(|&ms| ms * MS)
            .collect();
        assert_eq!(sent, want);
    }

    #[test]
    fn a_port_that_never_listens_times_the_start_out_with_a_reason() {
        let mut h = Harness::new(policy());
        let sent = failing_start(&mut h, Duration::MAX, 60 * S);
        assert!(sent.is_empty(), "no HTTP probe before the port listens");
        h.at(60 * S);
        let fx = h.feed(Input::Tick);
        assert_eq!(h.sup.state(), State::Unhealthy);
        assert!(matches!(
            events(&fx)[..],
            [Event::Unhealthy { error, .. }] if error.contains("port is not listening")
        ));
        // From then on, HTTP probes at the interval (the first when the next check was due).
        let due = h.sup.next_deadline().unwrap();
        assert!(due <= h.now + PORT_POLL_MAX);
        h.at(due - h.t0);
        assert_eq!(h.feed(Input::Tick), vec![Effect::Probe { pid: 10 }]);
        h.bad(10);
        assert_eq!(h.sup.next_deadline(), Some(h.now + 2 * S));
    }

    #[test]
    fn port_checks_come_every_millisecond_then_less_often_up_to_5_ms() {
        // (time since the spawn, spacing)
        let table = [
            (Duration::ZERO, MS),
            (100 * MS, MS),
            (250 * MS, MS),
            (500 * MS, 2 * MS),
            (S, 4 * MS),
            (1250 * MS, 5 * MS),
            (60 * S, 5 * MS),
        ];
        for (since, want) in table {
            assert_eq!(port_poll(since), want, "{since:?}");
        }
        // A backend that never listens: about 12,000 checks in the 60 s, not 60,000.
        let mut h = Harness::new(policy());
        h.cmd(Command::Start);
        h.feed(Input::Spawned { pid: 10 });
        let mut checks = 0;
        while let Some(due) = h.sup.next_deadline() {
            if h.sup.state() != State::Starting || due >= h.t0 + 60 * S {
                break;
            }
            h.at(due - h.t0);
            if h.feed(Input::Tick) == [Effect::CheckPort { pid: 10 }] {
                checks += 1;
                h.port(10, false);
            }
        }
        assert!((11_500..12_500).contains(&checks), "{checks} checks");
    }

    #[test]
    fn port_checks_of_an_old_process_are_ignored() {
        let mut h = Harness::new(policy());
        h.cmd(Command::Start);
        h.feed(Input::Spawned { pid: 10 });
        h.feed(Input::Tick);
        assert!(h.port(9, true).is_empty());
        assert_eq!(h.sup.snapshot(h.now).health.listening, Some(false));
        assert!(h.port(10, true).contains(&Effect::Probe { pid: 10 }));
    }

    #[test]
    fn probe_failures_read_as_words() {
        let status = |code, reason: &str| ProbeFailure::Status {
            path: "/health".into(),
            code,
            reason: reason.into(),
        };
        let table = [
            (
                status(503, "Service Unavailable"),
                "/health answered 503 Service Unavailable",
            ),
            (status(599, ""), "/health answered 599"),
            (ProbeFailure::TimedOut { after: S }, "timed out after 1 s"),
            (
                ProbeFailure::TimedOut { after: 1500 * MS },
                "timed out after 1.5 s",
            ),
            (
                ProbeFailure::TimedOut { after: 250 * MS },
                "timed out after 250 ms",
            ),
            (ProbeFailure::Refused, "connection refused"),
            (
                ProbeFailure::Other("connection reset".into()),
                "connection reset",
            ),
        ];
        for (failure, want) in table {
            assert_eq!(failure.to_string(), want);
        }
        let mut h = Harness::new(policy());
        h.running(7);
        h.bad(7);
        let health = h.sup.snapshot(h.now).health;
        assert_eq!(health.failure.as_deref(), Some("connection refused"));
        assert!(health.last_error.unwrap().contains("127.0.0.1:54112"));
        h.ok(7);
        assert_eq!(h.sup.snapshot(h.now).health.failure, None);
    }

    #[test]
    fn without_health_url_alive_for_a_moment_means_healthy() {
        let mut p = policy();
        p.health = None;
        let mut h = Harness::new(p);
        h.cmd(Command::Start);
        h.feed(Input::Spawned { pid: 10 });
        assert_eq!(h.sup.next_deadline(), Some(h.t0 + SETTLE_WITHOUT_HEALTH));
        h.at(SETTLE_WITHOUT_HEALTH);
        h.feed(Input::Tick);
        assert_eq!(h.sup.state(), State::Healthy);
        assert_eq!(h.sup.next_deadline(), None, "nothing to do while healthy");
    }

    #[test]
    fn crash_kills_leftovers_backs_off_then_restarts_only_after_the_tree_is_gone() {
        let mut h = Harness::new(policy());
        h.running(10);
        h.at(20 * S);
        let fx = h.exit(10, 1);
        assert!(
            has(&fx, &Effect::Kill { pid: 10 }),
            "leftovers of the tree die"
        );
        assert_eq!(h.sup.state(), State::Backoff);
        assert!(matches!(
            events(&fx)[..],
            [Event::Crashed {
                delay,
                first_in_episode: true,
                ..
            }] if *delay == 500 * MS
        ));
        // The backoff passes, but the old tree is not gone yet: no spawn.
        assert_eq!(h.sup.next_deadline(), None);
        h.at(20 * S + 600 * MS);
        assert_eq!(spawns(&h.feed(Input::Tick)), 0);
        // Tree gone -> spawn at once.
        let fx = h.feed(Input::TreeGone { pid: 10 });
        assert_eq!(fx, vec![Effect::Spawn { attempt: 2 }]);
        h.feed(Input::Spawned { pid: 11 });
        assert_eq!(h.sup.snapshot(h.now).restarts, 1);
        let fx = h.ok(11);
        assert!(matches!(
            events(&fx)[..],
            [Event::Healthy {
                recovered: true,
                ..
            }]
        ));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_a_stable_run_resets_it() {
        let mut p = policy();
        p.max_restarts = 100;
        let mut h = Harness::new(p);
        h.running(1);
        let mut pid = 1;
        let mut t = Duration::ZERO;
        let mut delays = vec![];
        for _ in 0..5 {
            t += MS;
            h.at(t);
            let fx = h.exit(pid, 1);
            for e in events(&fx) {
                if let Event::Crashed { delay, .. } = e {
                    delays.push(*delay);
                }
            }
            h.feed(Input::TreeGone { pid });
            t += 5 * S;
            h.at(t);
            h.feed(Input::Tick);
            pid += 1;
            h.feed(Input::Spawned { pid });
        }
        assert_eq!(
            delays,
            [500 * MS, 1000 * MS, 2000 * MS, 4000 * MS, 4000 * MS]
        );
        // A run longer than stable_after resets the backoff.
        t += 11 * S;
        h.at(t);
        let fx = h.exit(pid, 1);
        assert!(matches!(
            events(&fx)[..],
            [Event::Crashed { delay, first_in_episode: true, .. }] if *delay == 500 * MS
        ));
    }

    #[test]
    fn crash_loop_gives_up_with_exit_status_and_last_output() {
        let mut h = Harness::new(policy());
        h.running(1);
        let mut pid = 1;
        for i in 0..3 {
            h.at(Duration::from_millis(100 * i));
            let fx = h.exit(pid, 3);
            assert_eq!(h.sup.state(), State::Backoff);
            assert_eq!(
                events(&fx).len(),
                1,
                "one crash event per crash (the tray dedups by episode)"
            );
            h.feed(Input::TreeGone { pid });
            h.at(Duration::from_secs(10 * (i + 1)));
            h.feed(Input::Tick);
            pid += 1;
            h.feed(Input::Spawned { pid });
        }
        let fx = h.exit(pid, 3);
        assert_eq!(h.sup.state(), State::Failed);
        let reason = h.sup.snapshot(h.now).failed_reason.unwrap();
        assert!(reason.contains("gave up after 4 crashes"), "{reason}");
        assert!(reason.contains("exited with code 3"), "{reason}");
        assert!(reason.contains("boom"), "{reason}");
        assert!(matches!(events(&fx)[..], [Event::GaveUp { .. }]));
        assert!(has(&fx, &Effect::Kill { pid }), "leftovers still die");
        assert_eq!(spawns(&h.feed(Input::TreeGone { pid })), 0);
        // A start after failing begins afresh.
        assert_eq!(spawns(&h.cmd(Command::Start)), 1);
    }

    #[test]
    fn crashes_outside_the_window_do_not_count() {
        let mut h = Harness::new(policy());
        h.running(1);
        for (pid, i) in (1..).zip(0..10u64) {
            // one crash every 30 s: at most 2 within any 60 s window
            h.at(Duration::from_secs(30 * i));
            h.exit(pid, 1);
            assert_eq!(h.sup.state(), State::Backoff, "crash {i}");
            h.feed(Input::TreeGone { pid });
            h.at(Duration::from_secs(30 * i + 5));
            h.feed(Input::Tick);
            h.feed(Input::Spawned { pid: pid + 1 });
        }
    }

    #[test]
    fn restart_policies() {
        // (policy, exit code, expected state)
        let table = [
            (RestartPolicy::OnFailure, 0, State::Stopped),
            (RestartPolicy::OnFailure, 1, State::Backoff),
            (RestartPolicy::Always, 0, State::Backoff),
            (RestartPolicy::Always, 1, State::Backoff),
            (RestartPolicy::Never, 0, State::Stopped),
            (RestartPolicy::Never, 1, State::Failed),
        ];
        for (restart, code, want) in table {
            let mut p = policy();
            p.restart = restart;
            let mut h = Harness::new(p);
            h.running(5);
            let fx = h.exit(5, code);
            assert_eq!(h.sup.state(), want, "{restart:?} exit {code}");
            assert!(
                has(&fx, &Effect::Kill { pid: 5 }),
                "{restart:?} exit {code}"
            );
        }
    }

    #[test]
    fn graceful_stop_then_forced_kill_after_grace() {
        let mut h = Harness::new(policy());
        h.running(7);
        let fx = h.cmd(Command::Stop);
        assert_eq!(fx, vec![Effect::Terminate { pid: 7 }]);
        assert_eq!(h.sup.state(), State::Stopping);
        assert_eq!(h.sup.next_deadline(), Some(h.now + 5 * S));
        // The leader exits, a child lingers: keep waiting for the tree.
        h.at(S);
        h.exit(7, 0);
        assert_eq!(h.sup.state(), State::Stopping);
        h.at(5 * S);
        let fx = h.feed(Input::Tick);
        assert!(has(&fx, &Effect::Kill { pid: 7 }));
        assert_eq!(h.sup.next_deadline(), None, "kill sent once");
        let fx = h.feed(Input::TreeGone { pid: 7 });
        assert_eq!(h.sup.state(), State::Stopped);
        assert!(matches!(
            events(&fx)[..],
            [Event::Stopped {
                pid: Some(7),
                forced: true
            }]
        ));
        assert_eq!(
            h.sup.snapshot(h.now).last_exit.unwrap().reason,
            "stopped on request"
        );
    }

    #[test]
    fn restart_never_overlaps_two_trees() {
        let mut h = Harness::new(policy());
        h.running(7);
        let fx = h.cmd(Command::Restart);
        assert_eq!(fx, vec![Effect::Terminate { pid: 7 }]);
        // Clicks pile up while stopping: still no spawn.
        assert_eq!(spawns(&h.cmd(Command::Start)), 0);
        assert_eq!(spawns(&h.cmd(Command::Restart)), 0);
        assert_eq!(spawns(&h.exit(7, 0)), 0);
        let fx = h.feed(Input::TreeGone { pid: 7 });
        assert_eq!(spawns(&fx), 1);
        assert_eq!(h.sup.state(), State::Starting);
    }

    #[test]
    fn stop_while_stopping_for_a_restart_cancels_the_restart() {
        let mut h = Harness::new(policy());
        h.running(7);
        h.cmd(Command::Restart);
        h.cmd(Command::Stop);
        // The tree watch may see the group empty before the waiter reaps the leader: the
        // stop completes once both have reported, whatever the order.
        assert!(h.feed(Input::TreeGone { pid: 7 }).is_empty());
        assert_eq!(h.sup.state(), State::Stopping);
        let fx = h.exit(7, 0);
        assert_eq!(spawns(&fx), 0);
        assert_eq!(h.sup.state(), State::Stopped);
        assert_eq!(
            h.sup.snapshot(h.now).last_exit.unwrap().reason,
            "stopped on request"
        );
    }

    #[test]
    fn stop_during_backoff() {
        let mut h = Harness::new(policy());
        h.running(7);
        h.exit(7, 1);
        // leftovers still dying: stopping until they are gone
        h.cmd(Command::Stop);
        assert_eq!(h.sup.state(), State::Stopping);
        h.feed(Input::TreeGone { pid: 7 });
        assert_eq!(h.sup.state(), State::Stopped);
        h.at(10 * S);
        assert_eq!(spawns(&h.feed(Input::Tick)), 0, "backoff cancelled");

        // tree already gone: straight to stopped
        let mut h = Harness::new(policy());
        h.running(7);
        h.exit(7, 1);
        h.feed(Input::TreeGone { pid: 7 });
        h.cmd(Command::Stop);
        assert_eq!(h.sup.state(), State::Stopped);
        assert_eq!(h.sup.next_deadline(), None);
    }

    #[test]
    fn start_during_backoff_skips_the_wait() {
        let mut h = Harness::new(policy());
        h.running(7);
        h.exit(7, 1);
        h.feed(Input::TreeGone { pid: 7 });
        assert_eq!(spawns(&h.cmd(Command::Start)), 1);
    }

    #[test]
    fn inputs_about_old_processes_are_ignored() {
        let mut h = Harness::new(policy());
        h.running(7);
        h.cmd(Command::Restart);
        h.exit(7, 0);
        h.feed(Input::TreeGone { pid: 7 });
        h.feed(Input::Spawned { pid: 8 });
        // Late news about 7 must not touch 8.
        assert!(h.exit(7, 1).is_empty());
        assert!(h.bad(7).is_empty());
        assert!(h.feed(Input::TreeGone { pid: 7 }).is_empty());
        assert_eq!(h.sup.state(), State::Starting);
        assert_eq!(h.sup.pid(), Some(8));
        // A stray "spawned" for a second process while one is current gets it killed.
        assert_eq!(
            h.feed(Input::Spawned { pid: 9 }),
            vec![Effect::Kill { pid: 9 }]
        );
        assert_eq!(h.sup.pid(), Some(8));
    }

    #[test]
    fn unhealthy_after_consecutive_failures_and_recovery() {
        let mut h = Harness::new(policy());
        h.running(7);
        h.bad(7);
        h.bad(7);
        assert_eq!(h.sup.state(), State::Healthy);
        h.ok(7);
        h.bad(7);
        h.bad(7);
        assert_eq!(
            h.sup.state(),
            State::Healthy,
            "the count restarts after a success"
        );
        let fx = h.bad(7);
        assert_eq!(h.sup.state(), State::Unhealthy);
        assert!(matches!(events(&fx)[..], [Event::Unhealthy { pid: 7, .. }]));
        let fx = h.ok(7);
        assert_eq!(h.sup.state(), State::Healthy);
        assert!(matches!(
            events(&fx)[..],
            [Event::Healthy {
                recovered: true,
                ..
            }]
        ));
    }

    #[test]
    fn unhealthy_for_restart_after_restarts_the_tree() {
        let mut h = Harness::new(policy());
        h.running(7);
        for _ in 0..3 {
            h.bad(7);
        }
        assert_eq!(h.sup.state(), State::Unhealthy);
        assert_eq!(h.sup.next_deadline(), Some(h.now + 2 * S), "next probe");
        h.at(2 * S);
        assert_eq!(h.feed(Input::Tick), vec![Effect::Probe { pid: 7 }]);
        assert_eq!(h.sup.next_deadline(), Some(h.t0 + 10 * S), "restart_after");
        h.at(10 * S);
        let fx = h.feed(Input::Tick);
        assert!(has(&fx, &Effect::Terminate { pid: 7 }));
        assert_eq!(h.sup.state(), State::Stopping);
        h.exit(7, 0);
        let fx = h.feed(Input::TreeGone { pid: 7 });
        assert_eq!(spawns(&fx), 1);
    }

    #[test]
    fn start_timeout_turns_starting_into_unhealthy() {
        let mut h = Harness::new(policy());
        h.cmd(Command::Start);
        h.feed(Input::Spawned { pid: 7 });
        h.feed(Input::Tick);
        h.bad(7);
        h.at(60 * S);
        let fx = h.feed(Input::Tick);
        assert_eq!(h.sup.state(), State::Unhealthy);
        assert!(matches!(events(&fx)[..], [Event::Unhealthy { .. }]));
    }

    #[test]
    fn a_start_blocked_by_strays_waits_for_kill_strays() {
        let mut h = Harness::new(policy());
        h.cmd(Command::Start);
        let fx = h.feed(Input::PortBlocked {
            reason: "an orphaned worker of an earlier copy holds port 54112".into(),
            strays: vec![300],
        });
        assert_eq!(h.sup.state(), State::Failed);
        assert!(
            matches!(events(&fx)[..], [Event::GaveUp { reason }] if reason.contains("orphaned"))
        );
        assert_eq!(
            h.sup.next_deadline(),
            None,
            "no retry loop: the user chooses"
        );
        // (input, spawns expected): a kill of the strays resumes the start, once.
        h.at(5 * S);
        assert_eq!(spawns(&h.feed(Input::StraysKilled)), 1);
        assert_eq!(h.sup.state(), State::Starting);
        h.feed(Input::Spawned { pid: 9 });
        assert_eq!(
            spawns(&h.feed(Input::StraysKilled)),
            0,
            "running: nothing to resume"
        );
    }

    #[test]
    fn with_action_kill_strays_holding_the_port_are_killed_once_and_the_start_goes_on() {
        let mut p = policy();
        p.kill_strays = true;
        let blocked = |strays: Vec<Pid>| Input::PortBlocked {
            reason: "an orphaned worker of an earlier copy holds port 54112".into(),
            strays,
        };
        let mut h = Harness::new(p.clone());
        h.cmd(Command::Start);
        // (input, effects, state after): kill them, then ask for the spawn again.
        let rows = [
            (
                blocked(vec![300, 301]),
                vec![Effect::FreePort {
                    pids: vec![300, 301],
                }],
                State::Starting,
            ),
            (
                Input::StraysKilled,
                vec![Effect::Spawn { attempt: 1 }],
                State::Starting,
            ),
            // A second block of the same start: the user chooses.
            (
                blocked(vec![302]),
                vec![Effect::Notify(Event::GaveUp {
                    reason: "could not start the backend: an orphaned worker of an earlier \
                             copy holds port 54112"
                        .into(),
                })],
                State::Failed,
            ),
            (
                Input::StraysKilled,
                vec![Effect::Spawn { attempt: 1 }],
                State::Starting,
            ),
        ];
        for (i, (input, want, state)) in rows.into_iter().enumerate() {
            assert_eq!(h.feed(input), want, "row {i}");
            assert_eq!(h.sup.state(), state, "row {i}");
        }
        // Nothing a kill could free it from (a debug session holds it): the user chooses.
        let mut h = Harness::new(p);
        h.cmd(Command::Start);
        h.feed(blocked(vec![]));
        assert_eq!(h.sup.state(), State::Failed);
    }

    #[test]
    fn strays_found_are_killed_or_reported_as_the_policy_says_never_our_own_tree() {
        let mut kill = policy();
        kill.kill_strays = true;
        // (policy, strays found, effects)
        let rows = [
            (
                policy(),
                vec![300, 301],
                vec![Effect::AlertStrays {
                    pids: vec![300, 301],
                }],
            ),
            (
                kill.clone(),
                vec![300, 301],
                vec![Effect::KillStrays {
                    pids: vec![300, 301],
                }],
            ),
            // The running backend is ours.
            (kill.clone(), vec![7], vec![]),
            (
                kill.clone(),
                vec![7, 300],
                vec![Effect::KillStrays { pids: vec![300] }],
            ),
        ];
        for (policy, pids, want) in rows {
            let mut h = Harness::new(policy);
            h.running(7);
            let fx = h.feed(Input::Strays { pids: pids.clone() });
            assert_eq!(fx, want, "{pids:?}");
        }
        // So are the leftovers of its last run, and a tree on its way down.
        let mut h = Harness::new(kill.clone());
        h.running(6);
        h.exit(6, 1);
        assert!(h.feed(Input::Strays { pids: vec![6] }).is_empty());
        h.feed(Input::TreeGone { pid: 6 });
        h.at(S).feed(Input::Tick);
        h.feed(Input::Spawned { pid: 7 });
        h.cmd(Command::Stop);
        h.exit(7, 0);
        assert!(h.feed(Input::Strays { pids: vec![7] }).is_empty());
        // Changing only what happens to strays is no change for the backend.
        let mut h = Harness::new(policy());
        h.cmd(Command::Start);
        h.feed(Input::SpawnFailed { error: "x".into() });
        let fx = h.feed(Input::Reload {
            policy: kill,
            change: ReloadChange::Nothing,
        });
        assert_eq!(fx, vec![]);
        assert!(h.sup.policy().kill_strays, "in force all the same");
    }

    #[test]
    fn killing_strays_does_not_start_a_backend_that_failed_for_another_reason() {
        for failure in [
            Input::SpawnFailed {
                error: "command \"pyhton\" not found".into(),
            },
            Input::Command(Command::Stop),
        ] {
            let mut h = Harness::new(policy());
            h.cmd(Command::Start);
            h.feed(failure);
            assert_eq!(spawns(&h.feed(Input::StraysKilled)), 0);
        }
        // A port block after the user stopped: no start either.
        let mut h = Harness::new(policy());
        h.cmd(Command::Start);
        h.feed(Input::PortBlocked {
            reason: "x".into(),
            strays: vec![300],
        });
        h.cmd(Command::Stop);
        assert_eq!(spawns(&h.feed(Input::StraysKilled)), 0);
    }

    #[test]
    fn spawn_failure_fails_at_once_without_retrying() {
        let mut h = Harness::new(policy());
        h.cmd(Command::Start);
        let fx = h.feed(Input::SpawnFailed {
            error: "command \"pyhton\" not found".into(),
        });
        assert_eq!(h.sup.state(), State::Failed);
        assert!(matches!(events(&fx)[..], [Event::GaveUp { reason }] if reason.contains("pyhton")));
        h.at(3600 * S);
        assert_eq!(h.sup.next_deadline(), None, "no retry loop");
    }

    #[test]
    fn shutdown_stops_the_tree_then_exits_and_ignores_later_commands() {
        let mut h = Harness::new(policy());
        h.running(7);
        let fx = h.cmd(Command::Shutdown);
        assert_eq!(fx, vec![Effect::Terminate { pid: 7 }]);
        assert!(h.cmd(Command::Start).is_empty());
        h.exit(7, 0);
        let fx = h.feed(Input::TreeGone { pid: 7 });
        assert!(has(&fx, &Effect::Exit));
        assert_eq!(spawns(&fx), 0);

        let mut h = Harness::new(policy());
        assert_eq!(
            h.cmd(Command::Shutdown),
            vec![Effect::Exit],
            "nothing running"
        );
    }

    #[test]
    fn detach_releases_the_tree_and_exits_without_stopping_it() {
        let mut h = Harness::new(policy());
        h.running(7);
        let fx = h.cmd(Command::Detach);
        assert_eq!(fx, vec![Effect::Release { pid: 7 }, Effect::Exit]);
        assert_eq!(h.sup.pid(), None);
    }

    #[test]
    fn an_adopted_backend_is_supervised_and_replaced_by_a_managed_one_after_a_crash() {
        let mut h = Harness::new(policy());
        let fx = h.feed(Input::Adopt { pid: 500 });
        assert_eq!(fx, vec![Effect::Adopt { pid: 500 }]);
        let fx = h.feed(Input::Adopted { pid: 500 });
        assert_eq!(fx, vec![Effect::Notify(Event::Adopted { pid: 500 })]);
        assert!(h.sup.snapshot(h.now).adopted);
        h.feed(Input::Tick);
        h.ok(500);
        assert_eq!(h.sup.state(), State::Healthy);
        // It dies: leftovers killed, then a managed start.
        let fx = h.feed(Input::Exited {
            pid: 500,
            status: ExitStatus {
                code: None,
                signal: None,
            },
            tail: vec![],
        });
        assert!(has(&fx, &Effect::Kill { pid: 500 }));
        let fx = h.feed(Input::TreeGone { pid: 500 });
        assert_eq!(spawns(&fx), 0, "after the backoff");
        h.at(S);
        assert_eq!(spawns(&h.feed(Input::Tick)), 1);
        h.feed(Input::Spawned { pid: 501 });
        assert!(!h.sup.snapshot(h.now).adopted);
        // Adopting is only for a warden that runs nothing.
        assert!(h.feed(Input::Adopt { pid: 502 }).is_empty());
        assert!(h.feed(Input::Adopted { pid: 502 }).is_empty());
    }

    #[test]
    fn a_copy_that_cannot_be_adopted_is_replaced_by_a_start() {
        let mut h = Harness::new(policy());
        assert_eq!(
            h.feed(Input::Adopt { pid: 500 }),
            vec![Effect::Adopt { pid: 500 }]
        );
        assert_eq!(
            h.feed(Input::AdoptFailed { pid: 500 }),
            vec![Effect::Spawn { attempt: 1 }]
        );
        assert_eq!(h.sup.state(), State::Starting);
        // A tree still on its way down: no adoption beside it.
        let mut h = Harness::new(policy());
        h.running(7);
        h.cmd(Command::Stop);
        assert!(h.feed(Input::Adopt { pid: 500 }).is_empty());
    }

    #[test]
    fn an_unreachable_stop_kills_the_tree_at_once() {
        let mut h = Harness::new(policy());
        h.running(7);
        assert_eq!(h.cmd(Command::Stop), vec![Effect::Terminate { pid: 7 }]);
        // (input, effects): only the tree being stopped is killed, once asked.
        let rows = [
            (Input::Unreachable { pid: 6 }, vec![]),
            (Input::Unreachable { pid: 7 }, vec![Effect::Kill { pid: 7 }]),
        ];
        for (input, want) in rows {
            assert_eq!(h.feed(input.clone()), want, "{input:?}");
        }
        // The grace period did not run out: not a forced stop, and its deadline stays in case
        // the kill does not end the tree.
        assert_eq!(h.sup.next_deadline(), Some(h.now + 5 * S));
        h.at(S);
        h.terminated(7);
        assert_eq!(h.sup.state(), State::Stopped);
        // Not stopping: nothing to decide.
        let mut h = Harness::new(policy());
        h.running(7);
        assert!(h.feed(Input::Unreachable { pid: 7 }).is_empty());
    }

    #[test]
    fn a_reload_puts_the_new_policy_in_force() {
        let mut no_health = policy();
        no_health.health = None;
        // A health check configured while running probes at once.
        let mut h = Harness::new(no_health.clone());
        h.cmd(Command::Start);
        h.feed(Input::Spawned { pid: 7 });
        h.at(SETTLE_WITHOUT_HEALTH).feed(Input::Tick);
        assert_eq!(h.sup.state(), State::Healthy);
        assert_eq!(h.sup.next_deadline(), None);
        h.at(2 * S).feed(Input::Reload {
            policy: policy(),
            change: ReloadChange::Settings,
        });
        assert_eq!(h.sup.next_deadline(), Some(h.now), "probe at once");
        assert_eq!(h.feed(Input::Tick), vec![Effect::Probe { pid: 7 }]);
        // A health check removed: no more probes.
        let mut h = Harness::new(policy());
        h.running(7);
        h.feed(Input::Reload {
            policy: no_health,
            change: ReloadChange::Settings,
        });
        assert_eq!(h.sup.next_deadline(), None);
        // No port to wait for any more: HTTP probes, and "not listening" is no longer said.
        let mut h = Harness::new(policy());
        h.cmd(Command::Start);
        h.feed(Input::Spawned { pid: 7 });
        let mut unknown_port = policy();
        unknown_port.health.as_mut().unwrap().wait_for_port = false;
        unknown_port.health.as_mut().unwrap().start_timeout = 10 * S;
        h.feed(Input::Reload {
            policy: unknown_port,
            change: ReloadChange::Nothing,
        });
        assert_eq!(h.sup.snapshot(h.now).health.listening, None);
        assert_eq!(h.feed(Input::Tick), vec![Effect::Probe { pid: 7 }]);
        h.bad(7);
        // The new start timeout applies to the start under way.
        h.at(10 * S);
        h.feed(Input::Tick);
        assert_eq!(h.sup.state(), State::Unhealthy);
    }

    #[test]
    fn a_fixed_config_starts_what_a_broken_one_did_not() {
        let mut h = Harness::new(policy());
        assert_eq!(
            h.feed(Input::ConfigFixed),
            vec![Effect::Spawn { attempt: 1 }]
        );
        // Started meanwhile (by hand): nothing more.
        let mut h = Harness::new(policy());
        h.running(7);
        assert!(h.feed(Input::ConfigFixed).is_empty());
    }

    #[test]
    fn a_new_policy_alone_counts_as_a_change_of_settings() {
        // (policy changed, change the runner saw, spawns from failed)
        let table = [
            (false, ReloadChange::Nothing, 0),
            (true, ReloadChange::Nothing, 1),
            (false, ReloadChange::Settings, 1),
        ];
        for (new_policy, change, want) in table {
            let mut h = Harness::new(policy());
            h.cmd(Command::Start);
            h.feed(Input::SpawnFailed { error: "x".into() });
            let mut p = policy();
            if new_policy {
                p.grace = 9 * S;
            }
            let fx = h.feed(Input::Reload { policy: p, change });
            assert_eq!(spawns(&fx), want, "{new_policy} {change:?}");
        }
    }

    #[test]
    fn a_code_change_marks_the_backend_stale_until_it_restarts() {
        let mut h = Harness::new(policy());
        h.running(7);
        h.at(S);
        let fx = changed(&mut h, &["main.py", "api/routes.py"]);
        assert_eq!(fx, vec![Effect::Notify(Event::Stale { pid: 7, count: 2 })]);
        h.at(2 * S);
        assert!(
            changed(&mut h, &["main.py"]).is_empty(),
            "one alert per episode"
        );
        let stale = h.sup.snapshot(h.now).stale.unwrap();
        assert_eq!(stale.since, h.t0 + S);
        assert_eq!(stale.files, ["main.py", "api/routes.py"]);
        assert_eq!(stale.count, 3);
        // notify mode never restarts by itself; a restart clears the mark
        h.cmd(Command::Restart);
        h.exit(7, 0);
        h.feed(Input::TreeGone { pid: 7 });
        h.feed(Input::Spawned { pid: 8 });
        assert_eq!(h.sup.snapshot(h.now).stale, None);
    }

    #[test]
    fn restart_mode_restarts_cleanly_and_waits_for_a_start_to_settle() {
        let mut p = policy();
        p.on_change = OnChange::Restart;
        let mut h = Harness::new(p.clone());
        h.running(7);
        let fx = changed(&mut h, &["main.py"]);
        assert!(has(&fx, &Effect::Terminate { pid: 7 }), "{fx:?}");
        assert_eq!(h.sup.state(), State::Stopping);
        h.exit(7, 0);
        assert_eq!(spawns(&h.feed(Input::TreeGone { pid: 7 })), 1);

        // While starting: wait until healthy, then restart.
        let mut h = Harness::new(p.clone());
        h.cmd(Command::Start);
        h.feed(Input::Spawned { pid: 9 });
        let fx = changed(&mut h, &["main.py"]);
        assert!(!fx.iter().any(|e| matches!(e, Effect::Terminate { .. })));
        let fx = h.ok(9);
        assert!(has(&fx, &Effect::Terminate { pid: 9 }), "{fx:?}");

        // Off: nothing at all.
        let mut off = p;
        off.on_change = OnChange::Off;
        let mut h = Harness::new(off);
        h.running(7);
        assert!(changed(&mut h, &["main.py"]).is_empty());
        assert_eq!(h.sup.snapshot(h.now).stale, None);
    }

    #[test]
    fn a_fix_saved_during_a_crash_loop_is_tried_at_once() {
        let mut p = policy();
        p.on_change = OnChange::Restart;
        let mut h = Harness::new(p);
        h.running(7);
        h.exit(7, 1);
        h.feed(Input::TreeGone { pid: 7 });
        assert_eq!(h.sup.state(), State::Backoff);
        assert_eq!(
            spawns(&changed(&mut h, &["main.py"])),
            1,
            "no waiting out the backoff"
        );
        h.feed(Input::Spawned { pid: 8 });
        // and from failed, too
        let mut p = policy();
        p.on_change = OnChange::Restart;
        p.max_restarts = 0;
        let mut h = Harness::new(p);
        h.running(7);
        h.exit(7, 1);
        assert_eq!(h.sup.state(), State::Failed);
        h.feed(Input::TreeGone { pid: 7 });
        assert_eq!(spawns(&changed(&mut h, &["main.py"])), 1);
    }

    #[test]
    fn exit_status_reads_well() {
        let s = |code, signal| ExitStatus { code, signal }.to_string();
        assert_eq!(s(Some(1), None), "exited with code 1");
        assert_eq!(s(None, Some(9)), "was killed by signal 9 (SIGKILL)");
        assert_eq!(s(None, Some(64)), "was killed by signal 64");
    }
}
