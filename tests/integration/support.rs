//! Test support: a warden run as a real process in a temp home, and process-table helpers.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The binary under test.
pub fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_backend-warden")
}

/// The tray program `backend-warden` becomes.
pub fn tray_exe() -> &'static str {
    env!("CARGO_BIN_EXE_backend-warden-tray")
}

/// `SECS(n)`: n seconds, for the deadlines of the waits.
pub const SECS: fn(u64) -> Duration = Duration::from_secs;

/// `MS(n)`: n milliseconds.
pub const MS: fn(u64) -> Duration = Duration::from_millis;

/// How often the waits below look again.
const POLL: Duration = Duration::from_millis(5);

/// Polls `f` every few ms until it returns `Some`, or panics after `limit` with `what`.
pub fn wait_until<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let last = wait_until_last(limit, || match f() {
        Some(v) => (true, Some(v)),
        None => (false, None),
    });
    last.unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}"))
}

/// Polls `f` every few ms until it says done or `limit` passes; returns its last value either
/// way, for a caller that judges (or shows) where things stood at the deadline.
pub fn wait_until_last<T>(limit: Duration, mut f: impl FnMut() -> (bool, T)) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let (done, value) = f();
        if done || Instant::now() >= deadline {
            return value;
        }
        thread::sleep(POLL);
    }
}

/// The venv Python with uvicorn and fastapi, made by `tests/setup.sh`.
pub fn python() -> PathBuf {
    let path = std::env::var_os("BACKEND_WARDEN_TEST_PYTHON")
        .map(PathBuf::from)
        .expect(
            "BACKEND_WARDEN_TEST_PYTHON is not set: run the tests with tests/run.sh, which \
             creates a venv with uvicorn and fastapi",
        );
    assert!(path.exists(), "{} does not exist", path.display());
    path
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A unique tag for one test's processes.
pub fn tag(name: &str) -> String {
    format!("bwtest-{name}-{}-{}", std::process::id(), free_port())
}

/// A TOML literal string (tests never put a single quote in one).
pub fn toml_str(s: &str) -> String {
    assert!(!s.contains('\''), "{s}");
    format!("'{s}'")
}

/// A TOML array of literal strings.
pub fn toml_array<S: AsRef<str>>(items: &[S]) -> String {
    let items: Vec<String> = items.iter().map(|s| toml_str(s.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

/// The tests' fake backend (`tests/fake_backend`, the example target `fake-backend`): the
/// demo's server with flags that make it misbehave. Built on first use in the profile of the
/// test or benchmark binary that asks (nothing to do when `cargo test` built it already; and
/// a stale copy is never run), and found beside `backend-warden`, in `examples/`.
pub fn fake_backend() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let bins = Path::new(exe()).parent().unwrap();
        let profile = match bins.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev",
            // `release` (where `cargo bench` builds too) or a custom profile's own folder.
            Some(other) => other,
        };
        let cargo = std::env::var_os("CARGO")
            .or_else(|| option_env!("CARGO").map(Into::into))
            .unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "--quiet", "--example", "fake-backend", "--profile"])
            .arg(profile)
            .arg("--target-dir")
            .arg(bins.parent().unwrap())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cannot build the fake backend: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = bins
            .join("examples")
            .join(format!("fake-backend{}", std::env::consts::EXE_SUFFIX));
        assert!(path.exists(), "no fake backend at {}", path.display());
        path.to_string_lossy().into_owned()
    })
}

/// A config that runs `program ARGS` on `port`, probed at /health every 200 ms.
fn backend_config(program: &str, args: &[String], port: u16, extra: &str) -> String {
    format!(
        "[backend]\ncommand = {}\nargs = {}\nport = {port}\n\n\
         [health]\nurl = \"http://127.0.0.1:{port}/health\"\ninterval = \"200ms\"\n\n{extra}\n",
        toml_str(program),
        toml_array(args),
    )
}

/// A config that runs the fake backend with `args` (plus `--port` and `--tag`).
pub fn fake_config(tag: &str, port: u16, args: &[&str], extra: &str) -> String {
    let mut all: Vec<String> = vec!["--port".into(), port.to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    all.extend(["--tag".to_string(), tag.to_string()]);
    backend_config(fake_backend(), &all, port, extra)
}

/// A config that runs the shipped demo backend (`backend-warden demo-backend --port PORT`),
/// whose processes [`demo_marker`] finds.
pub fn demo_config(port: u16, extra: &str) -> String {
    let args = [
        "demo-backend".to_string(),
        "--port".into(),
        port.to_string(),
    ];
    backend_config(exe(), &args, port, extra)
}

/// What only the command line of the demo backend on `port` contains (it takes no tag).
pub fn demo_marker(port: u16) -> String {
    format!("demo-backend --port {port}")
}

/// A warden running in its own temp home: headless, unless started with its tray for a
/// benchmark ([`Warden::start_measured`]).
pub struct Warden {
    pub child: Child,
    pub home: tempfile::TempDir,
    lines: Lines,
    /// Lines before this one were matched already.
    seen: usize,
}

/// Where a warden's lines are read.
enum Lines {
    /// Its stderr at debug level, gathered by a thread (the tests).
    Stderr(Arc<Mutex<Vec<String>>>),
    /// Its own log, `logs/warden.log`, at the default level, read when asked (the benchmarks:
    /// a reader of stderr would be one more thread to wake on every line, competing for the
    /// CPU; warden.log's lines carry microsecond timestamps).
    #[allow(dead_code)] // benchmarks only
    WardenLog(PathBuf),
}

impl Lines {
    /// Calls `f` with every line so far.
    fn with<R>(&self, f: impl FnOnce(&[String]) -> R) -> R {
        match self {
            Lines::Stderr(lines) => f(&lines.lock().unwrap()),
            Lines::WardenLog(path) => {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                f(&text.lines().map(str::to_string).collect::<Vec<_>>())
            }
        }
    }
}

/// How a benchmark runs its warden.
#[allow(dead_code)] // benchmarks only
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// `run --headless`.
    Headless,
    /// `run`, with its tray icon (needs a desktop session: `DISPLAY` and a session bus).
    Tray,
}

/// A new temp home with `config` as its config.toml.
pub fn home_with(config: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    home
}

impl Warden {
    /// Writes `config` to a new home and starts `backend-warden run --headless` there.
    pub fn start(config: &str) -> Warden {
        Warden::start_in(home_with(config))
    }

    /// Starts a warden in an existing home.
    pub fn start_in(home: tempfile::TempDir) -> Warden {
        Warden::start_with_env(home, &[])
    }

    /// Starts a warden in an existing home with extra environment variables.
    pub fn start_with_env(home: tempfile::TempDir, env: &[(&str, &str)]) -> Warden {
        let mut child = Command::new(exe())
            .args(["run", "--headless"])
            .envs(env.iter().copied())
            .env("BACKEND_WARDEN_HOME", home.path())
            .env("BACKEND_WARDEN_LOG", "backend_warden=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Warden {
            child,
            home,
            lines: Lines::Stderr(lines),
            seen: 0,
        }
    }

    /// Starts a warden in `home` as a benchmark measures it: at the default log level, its
    /// stderr to /dev/null, its lines read from its own log (see [`Lines::WardenLog`]).
    #[allow(dead_code)] // benchmarks only
    pub fn start_measured(home: tempfile::TempDir, mode: Mode) -> Warden {
        let args: &[&str] = match mode {
            Mode::Headless => &["run", "--headless"],
            Mode::Tray => &["run"],
        };
        let child = Command::new(exe())
            .args(args)
            .env("BACKEND_WARDEN_HOME", home.path())
            .env_remove("BACKEND_WARDEN_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let log = home.path().join("logs").join("warden.log");
        Warden {
            child,
            home,
            lines: Lines::WardenLog(log),
            seen: 0,
        }
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.home().join("logs").join(name)
    }

    /// Everything the warden printed so far.
    pub fn output(&self) -> String {
        self.lines.with(|lines| lines.join("\n"))
    }

    /// Waits for the next line (after the last one matched) that contains every one of
    /// `parts`; returns it.
    pub fn expect(&mut self, parts: &[&str], limit: Duration) -> String {
        let what = format!("a warden line with {parts:?}");
        let (index, line) = wait_until(limit, &what, || {
            self.lines.with(|lines| {
                lines
                    .iter()
                    .enumerate()
                    .skip(self.seen)
                    .find(|(_, l)| parts.iter().all(|p| l.contains(p)))
                    .map(|(i, l)| (i, l.clone()))
            })
        });
        self.seen = index + 1;
        line
    }

    /// Like `expect`, but the output is shown on failure.
    pub fn expect_or_dump(&mut self, parts: &[&str], limit: Duration) -> String {
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.expect(parts, limit)));
        match result {
            Ok(line) => line,
            Err(e) => {
                eprintln!("--- warden output\n{}", self.output());
                std::panic::resume_unwind(e)
            }
        }
    }

    /// Number of lines containing all `parts` so far.
    pub fn count(&self, parts: &[&str]) -> usize {
        self.lines.with(|lines| {
            lines
                .iter()
                .filter(|l| parts.iter().all(|p| l.contains(p)))
                .count()
        })
    }

    /// Waits for "backend started" and returns its PID.
    pub fn started_pid(&mut self) -> u32 {
        let line = self.expect_or_dump(&["backend started"], SECS(20));
        field(&line, "pid").unwrap()
    }

    /// Waits for the backend to be healthy.
    pub fn healthy(&mut self) -> String {
        self.expect_or_dump(&["backend healthy"], SECS(30))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs `backend-warden ARGS` against this warden's home.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        cli_in(self.home(), args)
    }

    /// `status --json`, parsed.
    pub fn status(&self) -> serde_json::Value {
        let out = self.cli(&["status", "--json"]);
        assert!(out.status.success(), "status failed: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `status --json`, parsed, if the warden answered.
    fn try_status(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.cli(&["status", "--json"]).stdout).ok()
    }

    /// Waits until `status --json` says `state`; returns the status.
    pub fn wait_state(&self, state: &str, limit: Duration) -> serde_json::Value {
        wait_until(limit, &format!("state {state}"), || {
            let status = self.try_status()?;
            (status["state"] == state).then_some(status)
        })
    }

    /// Waits until `status --json` says healthy with a backend other than `old` (it crashed
    /// or was restarted, and its successor is up); returns the status.
    pub fn wait_healthy_after(&self, old: u32, limit: Duration) -> serde_json::Value {
        let what = format!("a backend other than PID {old} healthy");
        wait_until(limit, &what, || {
            let status = self.try_status()?;
            (status["state"] == "healthy" && status["pid"] != old).then_some(status)
        })
    }

    /// SIGTERM, then waits for the warden to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        kill(Pid::from_raw(self.pid() as i32), Signal::SIGTERM).unwrap();
        self.wait_exit(SECS(20))
    }

    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        wait_until(limit, "the warden to exit", || {
            self.child.try_wait().unwrap()
        })
    }
}

impl Drop for Warden {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The folder of the control socket of the warden whose home is `home`.
pub fn runtime_dir(home: &Path) -> PathBuf {
    home.join("run")
}

/// Runs `backend-warden ARGS` with `BACKEND_WARDEN_HOME=home`.
pub fn cli_in(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(exe())
        .args(args)
        .env("BACKEND_WARDEN_HOME", home)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The warden's timestamp at the start of one of its lines.
pub fn stamp(line: &str) -> SystemTime {
    let token = line.split_whitespace().next().unwrap_or("");
    humantime::parse_rfc3339_weak(token)
        .unwrap_or_else(|e| panic!("no timestamp in warden line {line:?}: {e}"))
}

/// `key=value` from a tracing line.
pub fn field<T: std::str::FromStr>(line: &str, key: &str) -> Option<T> {
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    line[start..]
        .split(|c: char| c.is_whitespace())
        .next()?
        .parse()
        .ok()
}

/// A process as seen in /proc.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: u32,
    pub pgrp: u32,
    pub state: char,
    pub cmdline: String,
}

/// Every process in /proc (zombies included, marked by state 'Z').
pub fn processes() -> Vec<Proc> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let mut fields = stat[close + 1..].split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let pgrp = fields.nth(1).and_then(|f| f.parse().ok()).unwrap_or(0);
        out.push(Proc {
            pid,
            pgrp,
            state,
            cmdline: cmdline(pid),
        });
    }
    out
}

/// Live (non-zombie) processes whose command line contains `tag`.
pub fn live_with_tag(tag: &str) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|p| p.state != 'Z' && p.cmdline.contains(tag))
        .map(|p| p.pid)
        .collect()
}

/// Live (non-zombie) members of process group `pgrp`.
pub fn live_in_group(pgrp: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|p| p.state != 'Z' && p.pgrp == pgrp)
        .map(|p| p.pid)
        .collect()
}

/// The direct children of `pid`, from every thread of it (Linux 3.5+:
/// /proc/PID/task/TID/children).
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                out.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    out
}

/// A copy of the test FastAPI app (tests/fixtures/fastapi_app) in a temp dir.
pub fn fastapi_app() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/fastapi_app/app.py"
        ),
        dir.path().join("app.py"),
    )
    .unwrap();
    dir
}

/// The command line of `pid`, arguments joined by spaces (empty if it is gone).
pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .unwrap_or_default()
}

/// Whether `pid` is alive (and not a zombie).
pub fn alive(pid: u32) -> bool {
    processes().iter().any(|p| p.pid == pid && p.state != 'Z')
}

/// Waits until no live process carries `tag`.
pub fn wait_none_with_tag(tag: &str, limit: Duration) {
    let left = wait_until_last(limit, || {
        let left = live_with_tag(tag);
        (left.is_empty(), left)
    });
    assert!(
        left.is_empty(),
        "processes with tag {tag} still alive after {limit:?}: {left:?}"
    );
}

/// SIGKILL to one process.
pub fn sigkill(pid: u32) {
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
}

/// A plain HTTP GET to 127.0.0.1; the status code and body, or None if nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    s.set_read_timeout(Some(SECS(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Some((code, body))
}

/// A process started by hand in its own process group (as a terminal does); the group is
/// killed on drop.
pub struct ByHand(pub Child);

impl ByHand {
    pub fn start(program: &Path, args: &[&str], cwd: &Path) -> ByHand {
        Self::start_with(program, args, cwd, &[])
    }

    pub fn start_with(program: &Path, args: &[&str], cwd: &Path, env: &[(&str, String)]) -> ByHand {
        ByHand(
            Command::new(program)
                .process_group(0)
                .args(args)
                .current_dir(cwd)
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGKILLs the process itself (not its group) and reaps it: its children are orphaned.
    pub fn kill_alone(&mut self) {
        sigkill(self.pid());
        let _ = self.0.wait();
    }
}

impl Drop for ByHand {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.pid() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.0.wait();
    }
}

/// A tmpfs of `size` mounted at `at` and filled to the last byte, unmounted on drop; `None`
/// (with the reason printed) where the test cannot mount (not root, no mount permission).
pub struct FullTmpfs {
    at: PathBuf,
}

impl FullTmpfs {
    pub fn mount(at: &Path, size: &str) -> Option<FullTmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs (needs root): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                return None;
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                return None;
            }
        }
        let fs = FullTmpfs {
            at: at.to_path_buf(),
        };
        // Fill it: write until ENOSPC.
        use std::io::Write;
        let mut filler = std::fs::File::create(at.join("filler")).unwrap();
        let block = vec![0u8; 4096];
        while filler.write_all(&block).is_ok() {}
        let _ = filler.write_all(&block[..1]);
        Some(fs)
    }
}

impl Drop for FullTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}
