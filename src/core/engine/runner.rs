//! The runner owns the real world: it feeds inputs to the [`Supervisor`], carries out the
//! effects (spawn, signal, kill, probe), turns child exits, probe results and tree watches into
//! new inputs, and sleeps until the supervisor's next deadline. Everything the engine does to
//! processes goes through here, on one thread, through a [`Host`] ([`OsHost`] is the real
//! process layer). May import the process, output, health and supervisor modules; never the UI.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::backend::backend_log::BackendLog;
use crate::backend::envfile::{self, EnvFileSpec};
use crate::backend::health::HealthProbe;
use crate::backend::kept::KeptBackend;
use crate::backend::process::{self, Asked, LaunchSpec, TreeGuard};
use crate::backend::strays::{self, Scan, StrayKind, StrayWatch};
use crate::engine::board::{Notice, StatusBoard};
use crate::engine::supervisor::{
    Command, Effect, Event, Input, Pid, Policy, Probe, ProbeFailure, ReloadChange, State,
    Supervisor,
};

mod host;
#[cfg(test)]
mod tests;

pub use host::{Host, HostTree, LeaderWait, OsHost, Output, Started};

/// How long an exit report waits for the backend's last output lines to be read. After an
/// exit nobody asked for, the waiting thread has killed the tree already, so the pipes reach
/// end-of-file at once and the wait ends; when the rest of a stopping tree still holds them,
/// the report does not wait for it longer than this. What the dead leader wrote is in the
/// pipe already, and the readers take it within this.
const TAIL_WAIT: Duration = Duration::from_millis(5);

/// A tree in the runner's charge.
#[derive(Debug)]
struct Held<T> {
    tree: T,
    /// Set once the tree is asked to stop or let go: from then on the end of its leader is
    /// expected, and the tree's other processes get their own time to finish.
    hands_off: Arc<AtomicBool>,
}

/// What the runner needs to know about the backend, beyond the supervisor's policy.
#[derive(Debug, Clone)]
pub struct Backend {
    /// What to launch.
    pub spec: LaunchSpec,
    /// The `.env` file read before every launch (its variables under `spec.env`'s).
    pub env_file: Option<EnvFileSpec>,
    /// The port it serves, if known: checked before every start.
    pub port: Option<u16>,
    /// Its health URL, if any.
    pub health_url: Option<String>,
    /// Timeout of one health probe.
    pub health_timeout: Duration,
    /// The grace period of a stop (`stop.grace`): the process layer paces its requests by it.
    pub stop_grace: Duration,
    /// `stop.url`: asked (POST) before any signal.
    pub stop_url: Option<String>,
}

/// What the runner's channel carries.
#[derive(Debug)]
enum Message {
    /// An input for the supervisor.
    Input(Input),
    /// Answered once every message sent before it has been handled and published.
    Barrier(Sender<()>),
    /// New settings from a reloaded config.
    Reload(Box<(Backend, Policy)>),
}

/// Sends inputs to a running engine. Cheap to clone, usable from any thread.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    inputs: Sender<Message>,
}

impl EngineHandle {
    /// Sends a user command. False if the engine has ended.
    pub fn command(&self, command: Command) -> bool {
        self.inputs
            .send(Message::Input(Input::Command(command)))
            .is_ok()
    }

    /// Sends a user command and returns once the engine has handled it, so that the status
    /// board shows its first consequences (or the engine has ended because of it). False if
    /// the engine had ended before.
    pub fn command_and_wait(&self, command: Command) -> bool {
        if !self.command(command) {
            return false;
        }
        let (done, handled) = mpsc::channel();
        if self.inputs.send(Message::Barrier(done)).is_ok() {
            // An error here means the engine ended after handling the command (quit).
            let _ = handled.recv();
        }
        true
    }

    /// Reports a debounced burst of changes to the backend's code.
    pub fn code_changed(&self, files: Vec<String>, count: usize) {
        self.send(Input::CodeChanged { files, count });
    }

    /// Applies a reloaded config: new policy at once; a changed launch spec restarts a running
    /// backend. False if the engine has ended.
    pub fn reload(&self, backend: Backend, policy: Policy) -> bool {
        self.inputs
            .send(Message::Reload(Box::new((backend, policy))))
            .is_ok()
    }

    /// Reports that the first good config of a warden that started with a broken one is in
    /// force (the supervisor starts what did not start).
    pub fn config_fixed(&self) {
        self.send(Input::ConfigFixed);
    }

    /// Reports that the user killed strays (a start they blocked may go ahead).
    pub fn strays_killed(&self) {
        self.send(Input::StraysKilled);
    }

    /// Asks the engine to adopt a running copy of the backend instead of starting one.
    pub fn adopt(&self, pid: Pid) -> bool {
        self.inputs
            .send(Message::Input(Input::Adopt { pid }))
            .is_ok()
    }

    fn send(&self, input: Input) {
        let _ = self.inputs.send(Message::Input(input));
    }
}

/// A tree that was told to stop or killed and is not gone yet.
#[derive(Debug)]
struct Dying {
    since: Instant,
}

/// The engine's loop. Build with [`Runner::new`], then [`Runner::run`] on a thread of its own.
pub struct Runner<H: Host = OsHost> {
    supervisor: Supervisor,
    backend: Backend,
    inputs: Receiver<Message>,
    handle: EngineHandle,
    log: BackendLog,
    host: H,
    probe: Option<HealthProbe>,
    trees: HashMap<Pid, Held<H::Tree>>,
    dying: HashMap<Pid, Dying>,
    board: Arc<StatusBoard>,
    strays: Option<StrayWatch>,
    /// Where a tree let go by `quit --keep-backend` is recorded for the next warden.
    kept_dir: Option<PathBuf>,
}

impl Runner {
    /// A runner for `backend`, deciding with `supervisor`, writing output to `log` and
    /// publishing to `board` (its state, and every event as a notice). Its trees are guarded
    /// by `guard`.
    pub fn new(
        supervisor: Supervisor,
        backend: Backend,
        log: BackendLog,
        guard: TreeGuard,
        board: Arc<StatusBoard>,
    ) -> std::io::Result<(Runner, EngineHandle)> {
        Runner::with_host(OsHost::new(guard), supervisor, backend, log, board)
    }
}

impl<H: Host> Runner<H> {
    /// Like [`Runner::new`], with `host` for the process layer.
    pub fn with_host(
        host: H,
        supervisor: Supervisor,
        backend: Backend,
        log: BackendLog,
        board: Arc<StatusBoard>,
    ) -> std::io::Result<(Runner<H>, EngineHandle)> {
        let (sender, inputs) = mpsc::channel();
        let handle = EngineHandle { inputs: sender };
        let probe = match &backend.health_url {
            Some(url) => {
                let results = handle.clone();
                Some(HealthProbe::start(
                    url.clone(),
                    backend.health_timeout,
                    move |input| results.send(input),
                )?)
            }
            None => None,
        };
        let runner = Runner {
            supervisor,
            backend,
            inputs,
            handle: handle.clone(),
            log,
            host,
            probe,
            trees: HashMap::new(),
            dying: HashMap::new(),
            board,
            strays: None,
            kept_dir: None,
        };
        Ok((runner, handle))
    }

    /// Records a tree let go by `quit --keep-backend` in `runtime_dir`, so that the next warden
    /// adopts it (see [`crate::backend::kept`]).
    pub fn with_kept_record(mut self, runtime_dir: PathBuf) -> Runner<H> {
        self.kept_dir = Some(runtime_dir);
        self
    }

    /// Scans for strays before every start (and names them when they hold the port); the
    /// strays the watch finds come to the supervisor, which decides what happens to them.
    pub fn with_stray_watch(mut self, watch: StrayWatch) -> Runner<H> {
        let found = self.handle.clone();
        watch.report_to(Box::new(move |pids| found.send(Input::Strays { pids })));
        self.strays = Some(watch);
        self
    }

    /// Runs until a shutdown has stopped the backend tree.
    pub fn run(mut self) {
        self.publish(Instant::now());
        loop {
            let now = Instant::now();
            let timeout = self.wait_time(now);
            let input = match self.inputs.recv_timeout(timeout) {
                Ok(Message::Input(input)) => Some(input),
                Ok(Message::Barrier(done)) => {
                    let _ = done.send(());
                    continue;
                }
                Ok(Message::Reload(settings)) => Some(self.reload(settings.0, settings.1)),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut queue: VecDeque<Input> = input.into_iter().collect();
            self.watch_dying_trees(&mut queue);
            if queue.is_empty()
                && self
                    .supervisor
                    .next_deadline()
                    .is_some_and(|d| Instant::now() >= d)
            {
                queue.push_back(Input::Tick);
            }
            if self.process(queue) {
                return;
            }
        }
    }

    /// How long to wait for the next input: until the supervisor's deadline, and briefly
    /// while a tree is dying (its disappearance is polled: there is no event for it).
    fn wait_time(&self, now: Instant) -> Duration {
        let mut wait = self
            .supervisor
            .next_deadline()
            .map(|d| d.saturating_duration_since(now))
            .unwrap_or(Duration::from_secs(3600));
        for dying in self.dying.values() {
            let poll = if now.duration_since(dying.since) < Duration::from_millis(100) {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(10)
            };
            wait = wait.min(poll);
        }
        wait
    }

    /// Handles inputs (and the inputs their effects produce at once). True when done.
    fn process(&mut self, mut queue: VecDeque<Input>) -> bool {
        let mut exit = false;
        while let Some(input) = queue.pop_front() {
            let input = self.judge_listener(input);
            let blocked = match &input {
                Input::PortBlocked { reason, .. } => Some(reason.clone()),
                _ => None,
            };
            let now = Instant::now();
            let effects = self.supervisor.handle(input, now);
            if let Some(reason) = blocked
                && !effects.iter().any(|e| matches!(e, Effect::FreePort { .. }))
            {
                self.log.note(&format!("not started: {reason}"));
            }
            for effect in effects {
                match effect {
                    Effect::Exit => exit = true,
                    other => self.execute(other, &mut queue),
                }
            }
        }
        self.publish(Instant::now());
        exit
    }

    /// A first good health answer of a starting backend counts only if the port's listener is
    /// the backend's tree: another server (another user's, an older copy's) answering on the
    /// same port must not pass for it. Checked once per start, where the socket table is read.
    fn judge_listener(&self, input: Input) -> Input {
        let Input::Probed {
            pid,
            probe: Probe::Ok { .. },
        } = &input
        else {
            return input;
        };
        let (Some(port), State::Starting) = (self.backend.port, self.supervisor.state()) else {
            return input;
        };
        match strays::foreign_listener(port, *pid) {
            Some(why) => {
                warn!(pid, %why, "the health check reached another program");
                Input::Probed {
                    pid: *pid,
                    probe: Probe::Failed {
                        error: why.clone(),
                        failure: ProbeFailure::Other(why),
                    },
                }
            }
            None => input,
        }
    }

    fn execute(&mut self, effect: Effect, queue: &mut VecDeque<Input>) {
        match effect {
            Effect::Spawn { attempt } => queue.push_back(self.spawn(attempt)),
            Effect::Terminate { pid } => {
                if let Some(Held { tree, hands_off }) = self.trees.get(&pid) {
                    hands_off.store(true, Ordering::SeqCst);
                    let asked = self.backend.stop_url.as_deref().is_some_and(|url| {
                        let timeout = STOP_URL_TIMEOUT.min(self.backend.stop_grace / 2);
                        match crate::backend::stop_url::request(url, timeout) {
                            Ok(status) => {
                                info!(pid, url, status, "asked the backend to shut down (stop.url)");
                                true
                            }
                            Err(e) => {
                                warn!(pid, error = %e, "stop.url did not work; stopping with the signal");
                                false
                            }
                        }
                    });
                    let terminated = if asked {
                        Ok(Asked::Sent)
                    } else {
                        tree.terminate(self.backend.stop_grace)
                    };
                    match terminated {
                        Ok(Asked::Sent) => {}
                        Ok(Asked::Unreachable(why)) => {
                            info!(pid, %why, "nothing can ask the backend to stop; killing its tree now");
                            queue.push_back(Input::Unreachable { pid });
                        }
                        Err(e) => warn!(pid, error = %e, "could not ask the backend to stop"),
                    }
                    self.dying.entry(pid).or_insert(Dying {
                        since: Instant::now(),
                    });
                }
            }
            Effect::Kill { pid } => {
                if let Some(Held { tree, .. }) = self.trees.get(&pid) {
                    if let Err(e) = tree.kill() {
                        error!(pid, error = %e, "could not kill the backend tree");
                    }
                    self.dying.insert(
                        pid,
                        Dying {
                            since: Instant::now(),
                        },
                    );
                    // Fast path: a leader that left no children is gone already.
                    self.watch_dying_trees(queue);
                } else {
                    // Not a tree of ours (should not happen): nothing to wait for.
                    queue.push_back(Input::TreeGone { pid });
                }
            }
            Effect::Probe { pid } => {
                if let Some(probe) = &self.probe {
                    probe.request(pid);
                }
            }
            Effect::CheckPort { pid } => match (&self.probe, self.backend.port) {
                (Some(probe), Some(port)) => probe.check_port(pid, port),
                // No port to check (the policy and the backend disagree for a moment during
                // a reload): let HTTP probes find out.
                _ => queue.push_back(Input::PortChecked {
                    pid,
                    listening: true,
                }),
            },
            Effect::Release { pid } => {
                if let Some(Held { tree, hands_off }) = self.trees.remove(&pid) {
                    hands_off.store(true, Ordering::SeqCst);
                    self.host.forget(&tree);
                    if let Err(e) = tree.release() {
                        error!(pid, error = %e, "could not let the backend tree go");
                    }
                    info!(pid, "backend left running, unsupervised");
                    self.record_kept(pid);
                }
            }
            Effect::Adopt { pid } => queue.push_back(self.adopt(pid)),
            Effect::KillStrays { pids } => {
                if let Some(watch) = &self.strays {
                    watch.kill_found(pids);
                }
            }
            Effect::AlertStrays { pids } => {
                if let Some(watch) = &self.strays {
                    watch.alert(pids);
                }
            }
            Effect::FreePort { pids } => {
                let killed = self
                    .strays
                    .as_ref()
                    .and_then(|watch| watch.kill_for_start(pids));
                if let (Some(report), Some(port)) = (killed, self.backend.port) {
                    self.log.note(&format!(
                        "killed {} stray cop{} holding port {port} ([strays] action = \"kill\")",
                        report.killed.len(),
                        if report.killed.len() == 1 { "y" } else { "ies" }
                    ));
                }
                queue.push_back(Input::StraysKilled);
            }
            Effect::Notify(event) => self.notify(&event),
            Effect::Exit => {}
        }
    }

    /// Writes down the tree just let go, for the next warden to adopt.
    fn record_kept(&self, pid: Pid) {
        let Some(dir) = &self.kept_dir else { return };
        match KeptBackend::of(pid, &self.backend.spec, self.backend.port) {
            Some(kept) => match kept.save(dir) {
                Ok(()) => info!(pid, "recorded for the next warden to adopt"),
                Err(e) => warn!(pid, error = %e, "cannot record the backend left running"),
            },
            None => warn!(pid, "the backend left running has already exited"),
        }
    }

    fn spawn(&mut self, attempt: u32) -> Input {
        let input = self.launch(attempt);
        // A fresh stray scan with the new tree in place (on the watch's thread, so it does
        // not delay the start).
        if let Some(watch) = &self.strays {
            watch.scan_now();
        }
        input
    }

    fn launch(&mut self, attempt: u32) -> Input {
        // The cheap check first (a bind); only when it fails, who listens. A bind can also fail
        // for a moment after the last run's listener died (its connections linger): with
        // nobody listening, that is no conflict.
        if let Some(error) = self.backend.port.and_then(forbidden_port) {
            self.log.note(&format!("not started: {error}"));
            return Input::SpawnFailed { error };
        }
        if let Some(port) = self.backend.port
            && port_taken(port)
        {
            let scan = self
                .strays
                .as_ref()
                .and_then(StrayWatch::scan_for_start)
                .unwrap_or_default();
            let holders = if scan.port_holders.is_empty() {
                strays::port_holders(port)
            } else {
                scan.port_holders.clone()
            };
            match port_conflict(port, &holders, &scan, strays::port_listened(port)) {
                PortConflict::None => {}
                PortConflict::Strays(reason) => {
                    // Those a kill could free the port from (the supervisor decides whether).
                    let strays = scan
                        .strays
                        .iter()
                        .filter(|s| s.holds_port && s.kind != StrayKind::DebugSession)
                        .map(|s| s.pid)
                        .collect();
                    return Input::PortBlocked { reason, strays };
                }
                PortConflict::Other(error) => {
                    self.log.note(&format!("not started: {error}"));
                    return Input::SpawnFailed { error };
                }
            }
        }
        let spec = match self.launch_spec() {
            Ok(spec) => spec,
            Err(error) => {
                self.log
                    .note(&format!("could not start the backend: {error}"));
                return Input::SpawnFailed { error };
            }
        };
        let launched = match self.host.launch(&spec) {
            Ok(launched) => launched,
            Err(e) => {
                let error = e.to_string();
                self.log
                    .note(&format!("could not start the backend: {error}"));
                return Input::SpawnFailed { error };
            }
        };
        let pid = launched.pid;
        self.log.note(&format!(
            "backend started: pid {pid}, attempt {attempt}: {} {}",
            self.backend.spec.program,
            self.backend.spec.args.join(" ")
        ));
        let capture =
            launched
                .output
                .and_then(|(stdout, stderr)| match self.log.capture(stdout, stderr) {
                    Ok(capture) => Some(capture),
                    Err(e) => {
                        error!(pid, error = %e, "could not start reading the backend's output");
                        None
                    }
                });
        let held = Held {
            tree: launched.tree,
            hands_off: Arc::default(),
        };
        if !self.wait_for_exit(pid, &held, launched.waiter, capture) {
            // Without a waiter the exit would go unnoticed: do not run the backend blind.
            error!(pid, "could not start a thread to wait for the backend");
            let _ = held.tree.kill();
            self.host.forget(&held.tree);
            return Input::SpawnFailed {
                error: "could not start a thread to wait for the backend".into(),
            };
        }
        self.trees.insert(pid, held);
        Input::Spawned { pid }
    }

    /// The launch spec with the `.env` file read now (it may have changed since the last
    /// start: a code watch restarts the backend for it); `backend.env` wins over the file.
    fn launch_spec(&self) -> Result<LaunchSpec, String> {
        let Some(env_file) = &self.backend.env_file else {
            self.board.set_env_file(None);
            return Ok(self.backend.spec.clone());
        };
        let (mut env, read) = envfile::read(env_file).map_err(|e| e.to_string())?;
        self.board.set_env_file(read);
        let mut spec = self.backend.spec.clone();
        env.append(&mut spec.env);
        spec.env = env;
        Ok(spec)
    }

    /// Puts a reloaded config's backend in place, and says what changed for the supervisor to
    /// decide on.
    fn reload(&mut self, backend: Backend, policy: Policy) -> Input {
        let relaunch = backend.spec != self.backend.spec
            || backend.env_file != self.backend.env_file
            || backend.port != self.backend.port;
        let probe_changed = backend.health_url != self.backend.health_url
            || backend.health_timeout != self.backend.health_timeout;
        let change = if relaunch {
            ReloadChange::Launch
        } else if probe_changed {
            ReloadChange::Settings
        } else {
            ReloadChange::Nothing
        };
        if probe_changed {
            self.probe = match &backend.health_url {
                Some(url) => {
                    let results = self.handle.clone();
                    HealthProbe::start(url.clone(), backend.health_timeout, move |input| {
                        results.send(input)
                    })
                    .map_err(|e| error!(error = %e, "cannot start the health probe"))
                    .ok()
                }
                None => None,
            };
        }
        self.backend = backend;
        info!(change = ?change.with_policy(self.supervisor.policy(), &policy), "config reloaded");
        Input::Reload { policy, change }
    }

    fn adopt(&mut self, pid: Pid) -> Input {
        match self.host.adopt(pid) {
            Ok(Started { tree, waiter, .. }) => {
                self.log.note(&format!(
                    "adopted the backend started outside the warden: pid {pid} (its output is not captured)"
                ));
                let held = Held {
                    tree,
                    hands_off: Arc::default(),
                };
                self.wait_for_exit(pid, &held, waiter, None);
                self.trees.insert(pid, held);
                Input::Adopted { pid }
            }
            Err(e) => {
                warn!(pid, error = %e, "cannot adopt the running backend; starting one instead");
                Input::AdoptFailed { pid }
            }
        }
    }

    /// Reports the exit of `pid` as an input, from a thread of its own.
    ///
    /// An exit nobody asked for ends the whole tree (the supervisor answers it with a kill):
    /// the waiting thread kills the tree itself the moment the leader is dead, before the
    /// report goes round the engine, so that an orphaned reload worker does not answer a
    /// single request more than it must. After a stop request or a release it does nothing:
    /// the tree's other processes then get their grace period, or are left running.
    fn wait_for_exit(
        &self,
        pid: Pid,
        held: &Held<H::Tree>,
        waiter: Box<dyn LeaderWait>,
        capture: Option<crate::backend::backend_log::Capture>,
    ) -> bool {
        let exits = self.handle.clone();
        let killer = held.tree.killer();
        let hands_off = Arc::clone(&held.hands_off);
        thread::Builder::new()
            .name(format!("wait-{pid}"))
            .spawn(move || {
                let status = waiter.wait_then(Box::new(|| {
                    if !hands_off.load(Ordering::SeqCst) {
                        killer();
                    }
                }));
                let tail = capture
                    .map(|c| {
                        c.wait_eof(TAIL_WAIT);
                        c.tail()
                    })
                    .unwrap_or_default();
                let status = status.unwrap_or(crate::engine::supervisor::ExitStatus {
                    code: None,
                    signal: None,
                });
                exits.send(Input::Exited { pid, status, tail });
            })
            .is_ok()
    }

    fn watch_dying_trees(&mut self, queue: &mut VecDeque<Input>) {
        let gone: Vec<Pid> = self
            .dying
            .keys()
            .copied()
            .filter(|pid| self.trees.get(pid).is_none_or(|h| h.tree.is_gone()))
            .collect();
        for pid in gone {
            self.dying.remove(&pid);
            if let Some(held) = self.trees.remove(&pid) {
                self.host.forget(&held.tree);
            }
            queue.push_back(Input::TreeGone { pid });
        }
    }

    fn notify(&mut self, event: &Event) {
        log_event(event);
        if let Some(note) = log_note(event) {
            self.log.note(&note);
        }
        self.board.notices().send(Notice::Event(event.clone()));
    }

    fn publish(&self, now: Instant) {
        self.board.publish(self.supervisor.snapshot(now), now);
    }
}

impl<H: Host> Drop for Runner<H> {
    fn drop(&mut self) {
        // Whatever happens to the engine, no tree outlives it.
        for held in self.trees.values() {
            let _ = held.tree.kill();
        }
    }
}

/// The longest wait for the answer to `stop.url` (at most half the grace period).
const STOP_URL_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the system will not let anyone listen on `port`, if it will not: the backend would
/// fail to bind it at every start (a crash loop that says nothing useful). Not when something
/// listens there: Windows also answers WSAEACCES for a port another program holds with
/// SO_EXCLUSIVEADDRUSE, which the port-conflict check names.
fn forbidden_port(port: u16) -> Option<String> {
    match TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))) {
        Err(e)
            if e.kind() == std::io::ErrorKind::PermissionDenied && !strays::port_listened(port) =>
        {
            Some(forbidden_port_message(port, &e))
        }
        _ => None,
    }
}

fn forbidden_port_message(port: u16, error: &std::io::Error) -> String {
    format!(
        "port {port} cannot be listened on: {error}. {}",
        process::FORBIDDEN_PORT_HINT
    )
}

/// Whether something else listens on `port` (a start would fail or double-bind).
fn port_taken(port: u16) -> bool {
    [Ipv4Addr::LOCALHOST, Ipv4Addr::UNSPECIFIED]
        .into_iter()
        .any(|ip| {
            TcpListener::bind(SocketAddr::from((ip, port)))
                // PermissionDenied: held with SO_EXCLUSIVEADDRUSE (Windows); an excluded port
                // that nobody holds was ruled out before (`forbidden_port`).
                .is_err_and(|e| {
                    matches!(
                        e.kind(),
                        std::io::ErrorKind::AddrInUse | std::io::ErrorKind::PermissionDenied
                    )
                })
        })
}

/// Why the backend's port is not free for a start.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PortConflict {
    /// Nobody listens (a bind failed while the last run's connections linger): start.
    None,
    /// Strays of this backend hold it: Kill strays frees it (the start waits for that).
    Strays(String),
    /// Something else holds it.
    Other(String),
}

/// What holds `port`, in words a user can act on: an orphaned worker or a copy of this backend
/// (Kill strays frees it), another warden's backend, another program (stop it or change the
/// port), or a listener whose owner this user cannot see (another user's).
fn port_conflict(
    port: u16,
    holders: &[strays::PortHolder],
    scan: &Scan,
    listened: bool,
) -> PortConflict {
    if let Some(other) = scan.others.iter().find(|o| o.holds_port) {
        return PortConflict::Other(format!(
            "port {port} is held by a copy of this backend that another Backend Warden manages \
             (PID {}, {}): quit that warden, or give one of them another backend.port",
            other.pid,
            other.describe()
        ));
    }
    let holding: Vec<&crate::backend::strays::Stray> =
        scan.strays.iter().filter(|s| s.holds_port).collect();
    if let Some(stray) = holding.first() {
        let what = format!(
            "{} PID {} ({})",
            stray.name,
            stray.pid,
            strays::shorten(&stray.cmdline, 100)
        );
        return PortConflict::Strays(match stray.kind {
            StrayKind::OrphanedWorker => format!(
                "an orphaned worker of an earlier copy of this backend holds port {port} — Kill \
                 strays frees it: {what}"
            ),
            StrayKind::Copy => format!(
                "a copy of this backend started outside the warden holds port {port} — Kill \
                 strays frees it: {what}"
            ),
            StrayKind::DebugSession => format!(
                "a debug session of this backend holds port {port}: stop it in your debugger, \
                 or use Kill strays including the debug session: {what}"
            ),
        });
    }
    // Every holder counts: no tree of ours runs while a start waits for the port.
    let named: Vec<String> = holders.iter().map(|h| h.describe()).collect();
    if !named.is_empty() {
        return PortConflict::Other(format!(
            "port {port} is held by {}; it is not a copy of this backend: stop that program, or \
             change backend.port",
            named.join(", ")
        ));
    }
    if listened && holders.is_empty() && strays::UNSEEN_OWNER_IS_ANOTHER_USER {
        return PortConflict::Other(format!(
            "port {port} is held by a process of another user, or one this user cannot see; \
             stop it, or change backend.port"
        ));
    }
    PortConflict::None
}

/// One log line per transition, with fields.
fn log_event(event: &Event) {
    match event {
        Event::Started { pid, attempt } => info!(pid, attempt, "backend started"),
        Event::Adopted { pid } => info!(
            pid,
            "backend adopted: started outside the warden, its output is not captured"
        ),
        Event::Healthy {
            pid,
            latency,
            recovered,
        } => {
            let latency_ms = latency.map(|l| l.as_secs_f64() * 1000.0);
            info!(pid, latency_ms, recovered, "backend healthy")
        }
        Event::Unhealthy { pid, error } => warn!(pid, %error, "backend unhealthy"),
        Event::Crashed {
            pid,
            status,
            delay,
            attempt,
            ..
        } => warn!(pid, %status, attempt, ?delay, "backend crashed; restarting"),
        Event::Exited { pid, status } => info!(pid, %status, "backend exited"),
        Event::RestartingUnhealthy { pid, unhealthy_for } => {
            warn!(
                pid,
                ?unhealthy_for,
                "backend unhealthy too long; restarting"
            )
        }
        Event::GaveUp { reason } => error!(%reason, "backend failed"),
        Event::Stopped { pid, forced } => info!(pid, forced, "backend stopped"),
        Event::Stale { pid, count } => {
            info!(
                pid,
                count, "backend code changed since it started: it is stale"
            )
        }
        Event::RestartingForCode { pid, count } => {
            info!(pid, count, "restarting the backend to load changed code")
        }
        Event::Killing { pid, grace } => {
            warn!(
                pid,
                ?grace,
                "backend did not stop within the grace period; killing its tree"
            )
        }
    }
}

/// What `backend.log` should say about an event, between the backend's own lines.
fn log_note(event: &Event) -> Option<String> {
    match event {
        Event::Crashed { pid, status, .. } | Event::Exited { pid, status } => {
            Some(format!("backend (pid {pid}) {status}"))
        }
        Event::Stopped { pid: Some(pid), .. } => Some(format!("backend (pid {pid}) stopped")),
        Event::GaveUp { reason } => Some(format!("gave up: {reason}")),
        _ => None,
    }
}
