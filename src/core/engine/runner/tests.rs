//! The runner's tests: its port checks, and the runner itself on a fake process layer
//! ([`FakeHost`]): real threads and channels, no process started. Each test drives the engine
//! through its handle, as the IPC layer does, and waits on the status board.

use super::*;

#[test]
fn a_forbidden_port_is_named_with_what_to_do() {
    // WSAEACCES as Windows reports it for a port in an excluded range.
    let error = std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        "An attempt was made to access a socket in a way forbidden by its access permissions. (os error 10013)",
    );
    let message = forbidden_port_message(54112, &error);
    assert!(
        message.starts_with("port 54112 cannot be listened on: An attempt"),
        "{message}"
    );
    assert!(message.ends_with(process::FORBIDDEN_PORT_HINT), "{message}");
    if cfg!(windows) {
        assert!(message.contains("netsh int ipv4 show excludedportrange protocol=tcp"));
    }
}

#[test]
fn a_free_or_taken_port_is_not_forbidden() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    assert_eq!(forbidden_port(port), None, "taken is not forbidden");
    drop(listener);
    assert_eq!(forbidden_port(port), None);
}

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::sync::mpsc::Receiver;
use std::sync::{Mutex, MutexGuard};

use crate::backend::process::LaunchError;
use crate::engine::board::Notices;
use crate::engine::supervisor::{ExitStatus, Snapshot};
use crate::status::Fixed;

/// How a fake tree answers a stop request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum OnTerminate {
    /// Its leader exits (SIGTERM) and the tree is gone.
    #[default]
    Obey,
    /// Nothing happens until it is killed.
    Ignore,
    /// Nothing can reach it (a Windows backend without a console).
    Unreachable,
}

/// What the fake process layer has seen, and how its trees behave.
#[derive(Debug, Default)]
struct World {
    /// Every call, in order: "launch 101", "terminate 101", "kill 101", ...
    calls: Vec<String>,
    /// The arguments of every launch.
    launched: Vec<Vec<String>>,
    last_pid: Pid,
    /// Trees not gone yet.
    alive: HashSet<Pid>,
    /// Ends each leader that runs.
    leaders: HashMap<Pid, Sender<ExitStatus>>,
    on_terminate: OnTerminate,
    /// What a launched backend prints before anything else happens.
    output: Vec<u8>,
    /// Why launches fail, if they do.
    launch_fails: Option<String>,
    /// The PIDs `adopt` can take charge of.
    adoptable: Vec<Pid>,
}

impl World {
    /// The leader of `pid` ends with `status`.
    fn end(&mut self, pid: Pid, status: ExitStatus) {
        if let Some(leader) = self.leaders.remove(&pid) {
            let _ = leader.send(status);
        }
    }

    /// The whole tree of `pid` dies.
    fn kill(&mut self, pid: Pid, who: &str) {
        self.calls.push(format!("{who} {pid}"));
        self.end(pid, signal(9));
        self.alive.remove(&pid);
    }
}

fn signal(signal: i32) -> ExitStatus {
    ExitStatus {
        code: None,
        signal: Some(signal),
    }
}

/// The fake process layer. Clones share one [`World`].
#[derive(Debug, Clone, Default)]
struct FakeHost(Arc<Mutex<World>>);

impl FakeHost {
    fn world(&self) -> MutexGuard<'_, World> {
        self.0.lock().unwrap()
    }

    /// The leader of `pid` exits by itself with `code`; the rest of its tree stays.
    fn exit(&self, pid: Pid, code: i32) {
        self.world().end(
            pid,
            ExitStatus {
                code: Some(code),
                signal: None,
            },
        );
    }

    fn calls(&self) -> Vec<String> {
        self.world().calls.clone()
    }

    /// A tree led by `pid` that runs from now on.
    fn started(&self, pid: Pid, output: Option<Output>) -> Started<FakeTree> {
        let (leader, waits) = mpsc::channel();
        let mut world = self.world();
        world.alive.insert(pid);
        world.leaders.insert(pid, leader);
        Started {
            pid,
            tree: FakeTree {
                pid,
                world: Arc::clone(&self.0),
            },
            waiter: Box::new(FakeLeader(waits)),
            output,
        }
    }
}

impl Host for FakeHost {
    type Tree = FakeTree;

    fn launch(&mut self, spec: &LaunchSpec) -> Result<Started<FakeTree>, LaunchError> {
        let mut world = self.world();
        if let Some(detail) = world.launch_fails.clone() {
            world.calls.push("launch fails".into());
            return Err(LaunchError::NotFound {
                program: spec.program.clone(),
                detail,
            });
        }
        world.last_pid = world.last_pid.max(100) + 1;
        let pid = world.last_pid;
        world.calls.push(format!("launch {pid}"));
        world.launched.push(spec.args.clone());
        let output: Box<dyn io::Read + Send> = Box::new(io::Cursor::new(world.output.clone()));
        drop(world);
        Ok(self.started(pid, Some((output, Box::new(io::empty())))))
    }

    fn adopt(&mut self, pid: Pid) -> io::Result<Started<FakeTree>> {
        let mut world = self.world();
        world.calls.push(format!("adopt {pid}"));
        if !world.adoptable.contains(&pid) {
            return Err(io::Error::other("not the leader of a process group"));
        }
        drop(world);
        Ok(self.started(pid, None))
    }

    fn forget(&mut self, tree: &FakeTree) {
        self.world().calls.push(format!("forget {}", tree.pid));
    }
}

#[derive(Debug)]
struct FakeTree {
    pid: Pid,
    world: Arc<Mutex<World>>,
}

impl HostTree for FakeTree {
    fn terminate(&self, _grace: Duration) -> io::Result<Asked> {
        let mut world = self.world.lock().unwrap();
        world.calls.push(format!("terminate {}", self.pid));
        match world.on_terminate {
            OnTerminate::Obey => {
                world.end(self.pid, signal(15));
                world.alive.remove(&self.pid);
            }
            OnTerminate::Ignore => {}
            OnTerminate::Unreachable => return Ok(Asked::Unreachable("no console".into())),
        }
        Ok(Asked::Sent)
    }

    fn kill(&self) -> io::Result<()> {
        self.world.lock().unwrap().kill(self.pid, "kill");
        Ok(())
    }

    fn release(self) -> io::Result<()> {
        let mut world = self.world.lock().unwrap();
        world.calls.push(format!("release {}", self.pid));
        Ok(())
    }

    fn is_gone(&self) -> bool {
        !self.world.lock().unwrap().alive.contains(&self.pid)
    }

    fn killer(&self) -> Box<dyn Fn() + Send> {
        let (pid, world) = (self.pid, Arc::clone(&self.world));
        Box::new(move || world.lock().unwrap().kill(pid, "waiter kills"))
    }
}

/// A leader that runs until its [`World`] ends it.
struct FakeLeader(Receiver<ExitStatus>);

impl LeaderWait for FakeLeader {
    fn wait_then(self: Box<Self>, on_exit: Box<dyn FnOnce() + '_>) -> io::Result<ExitStatus> {
        let status = self.0.recv().map_err(io::Error::other)?;
        on_exit();
        Ok(status)
    }
}

const MS: Duration = Duration::from_millis(1);
/// The stop's grace period in these tests.
const GRACE: Duration = Duration::from_millis(500);

fn policy() -> Policy {
    Policy {
        health: None,
        restart: crate::config::RestartPolicy::OnFailure,
        backoff_initial: 20 * MS,
        backoff_max: 100 * MS,
        max_restarts: 5,
        window: Duration::from_secs(60),
        stable_after: Duration::from_secs(10),
        grace: GRACE,
        on_change: crate::config::OnChange::Notify,
        kill_strays: false,
    }
}

fn backend(cwd: &std::path::Path, script: &str) -> Backend {
    Backend {
        spec: LaunchSpec {
            program: "python".into(),
            args: vec![script.into()],
            cwd: cwd.to_path_buf(),
            env: BTreeMap::new(),
        },
        env_file: None,
        port: None,
        health_url: None,
        health_timeout: Duration::from_secs(1),
        stop_grace: GRACE,
        stop_url: None,
    }
}

/// A runner on `host`, running on a thread of its own.
struct Engine {
    handle: EngineHandle,
    board: Arc<StatusBoard>,
    notices: Receiver<Notice>,
    events: Mutex<Vec<Event>>,
    ended: Receiver<()>,
    dir: tempfile::TempDir,
}

impl Engine {
    fn start(host: &FakeHost) -> Engine {
        let dir = tempfile::tempdir().unwrap();
        let log = BackendLog::start(dir.path(), 1 << 20, 1, |_| {}).unwrap();
        let (notices, received) = Notices::channel();
        let board = Arc::new(StatusBoard::new(Fixed::default(), notices));
        let (runner, handle) = Runner::with_host(
            host.clone(),
            Supervisor::new(policy()),
            backend(dir.path(), "main.py"),
            log,
            Arc::clone(&board),
        )
        .unwrap();
        let (done, ended) = mpsc::channel();
        thread::spawn(move || {
            runner.run();
            let _ = done.send(());
        });
        Engine {
            handle,
            board,
            notices: received,
            events: Mutex::new(Vec::new()),
            ended,
            dir,
        }
    }

    /// Waits until the published snapshot is `what`.
    fn wait(&self, what: &str, mut done: impl FnMut(&Snapshot) -> bool) -> Snapshot {
        let snap = self.board.wait_for(Duration::from_secs(10), &mut done);
        match snap {
            Some(snap) if done(&snap) => snap,
            other => panic!("not {what}: {other:?}"),
        }
    }

    /// The events the engine has told so far.
    fn events(&self) -> Vec<Event> {
        let mut events = self.events.lock().unwrap();
        events.extend(self.notices.try_iter().filter_map(|notice| match notice {
            Notice::Event(event) => Some(event),
            _ => None,
        }));
        events.clone()
    }

    /// Waits for the engine to end.
    fn wait_end(&self) {
        self.ended
            .recv_timeout(Duration::from_secs(10))
            .expect("the engine ends");
    }
}

#[test]
fn a_crash_kills_the_tree_and_launches_a_new_backend_with_the_last_words_reported() {
    let host = FakeHost::default();
    host.world().output = b"Traceback (most recent call last):\nValueError: boom\n".to_vec();
    let engine = Engine::start(&host);
    engine.handle.command(Command::Start);
    engine.wait("started", |s| s.pid == Some(101));
    host.exit(101, 1);
    let snap = engine.wait("launched again", |s| s.pid == Some(102));
    assert_eq!(snap.restarts, 1);
    assert_eq!(
        host.calls(),
        [
            "launch 101",
            // The waiting thread kills the tree the moment its leader is dead; the supervisor
            // asks for the kill too, then for the next launch once the tree is gone.
            "waiter kills 101",
            "kill 101",
            "forget 101",
            "launch 102",
        ]
    );
    let crash = engine
        .events()
        .into_iter()
        .find_map(|e| match e {
            Event::Crashed { pid, tail, .. } => Some((pid, tail)),
            _ => None,
        })
        .expect("a crash event");
    assert_eq!(crash.0, 101);
    assert_eq!(crash.1.last().map(String::as_str), Some("ValueError: boom"));
}

#[test]
fn a_stop_asks_first_and_kills_only_what_does_not_stop() {
    // (how the tree answers, calls after the launch, forced, a Killing event)
    let table = [
        (
            OnTerminate::Obey,
            &["terminate 101", "forget 101"][..],
            false,
            false,
        ),
        (
            OnTerminate::Ignore,
            &["terminate 101", "kill 101", "forget 101"][..],
            true,
            true,
        ),
        // Nothing can reach it: killed at once, not after the grace period.
        (
            OnTerminate::Unreachable,
            &["terminate 101", "kill 101", "forget 101"][..],
            false,
            false,
        ),
    ];
    for (on_terminate, calls, forced, killing) in table {
        let host = FakeHost::default();
        host.world().on_terminate = on_terminate;
        let engine = Engine::start(&host);
        engine.handle.command(Command::Start);
        engine.wait("started", |s| s.pid == Some(101));
        let asked = Instant::now();
        engine.handle.command_and_wait(Command::Stop);
        engine.wait("stopped", |s| s.state == State::Stopped);
        let took = asked.elapsed();
        assert_eq!(host.calls()[1..], *calls, "{on_terminate:?}");
        let events = engine.events();
        assert!(
            events.contains(&Event::Stopped {
                pid: Some(101),
                forced
            }),
            "{on_terminate:?}: {events:?}"
        );
        assert_eq!(
            events.iter().any(|e| matches!(e, Event::Killing { .. })),
            killing,
            "{on_terminate:?}"
        );
        assert_eq!(took >= GRACE, killing, "{on_terminate:?} took {took:?}");
    }
}

#[test]
fn adopting_takes_charge_of_the_copy_or_launches_one_instead() {
    let host = FakeHost::default();
    host.world().adoptable = vec![500];
    let engine = Engine::start(&host);
    engine.handle.adopt(500);
    let snap = engine.wait("adopted", |s| s.pid == Some(500));
    assert!(snap.adopted);
    assert_eq!(host.calls(), ["adopt 500"]);
    assert!(engine.events().contains(&Event::Adopted { pid: 500 }));

    let host = FakeHost::default();
    let engine = Engine::start(&host);
    engine.handle.adopt(500);
    let snap = engine.wait("launched", |s| s.pid == Some(101));
    assert!(!snap.adopted);
    assert_eq!(host.calls(), ["adopt 500", "launch 101"]);
}

#[test]
fn a_reload_relaunches_only_when_what_is_launched_changed() {
    let host = FakeHost::default();
    let engine = Engine::start(&host);
    engine.handle.command(Command::Start);
    engine.wait("started", |s| s.pid == Some(101));
    // (what the reload runs, calls it makes)
    let table = [
        ("main.py", &[][..]),
        (
            "other.py",
            &["terminate 101", "forget 101", "launch 102"][..],
        ),
    ];
    for (script, want) in table {
        let before = host.calls().len();
        let dir = engine.dir.path();
        assert!(engine.handle.reload(backend(dir, script), policy()));
        // Handled once a command sent after it is (a Start changes nothing while running).
        engine.handle.command_and_wait(Command::Start);
        if !want.is_empty() {
            engine.wait("relaunched", |s| s.pid == Some(102));
        }
        assert_eq!(host.calls()[before..], *want, "{script}");
    }
    assert_eq!(host.world().launched.last().unwrap(), &["other.py"]);
}

#[test]
fn detach_lets_the_tree_go_and_shutdown_stops_it_and_both_end_the_engine() {
    // (command, calls after the launch)
    let table = [
        (Command::Detach, &["forget 101", "release 101"][..]),
        (Command::Shutdown, &["terminate 101", "forget 101"][..]),
    ];
    for (command, want) in table {
        let host = FakeHost::default();
        let engine = Engine::start(&host);
        engine.handle.command(Command::Start);
        engine.wait("started", |s| s.pid == Some(101));
        engine.handle.command(command);
        engine.wait_end();
        assert_eq!(host.calls()[1..], *want, "{command:?}");
    }
}

#[test]
fn a_launch_that_fails_is_reported_and_not_retried() {
    let host = FakeHost::default();
    host.world().launch_fails = Some("not on PATH".into());
    let engine = Engine::start(&host);
    engine.handle.command(Command::Start);
    let snap = engine.wait("failed", |s| s.state == State::Failed);
    let reason = snap.failed_reason.unwrap();
    assert!(reason.contains("not on PATH"), "{reason}");
    thread::sleep(50 * MS);
    assert_eq!(host.calls(), ["launch fails"]);
}
