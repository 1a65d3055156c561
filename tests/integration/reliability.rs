//! The reliability suite: storms of concurrent commands while the backend is killed at
//! random, SIGKILLs of the warden at random moments, property tests of the config parser and
//! the IPC frame decoder, and faults (unwritable logs, a full disk, floods, a hung health
//! endpoint). Real processes, deadlines everywhere, each test well under a minute.
//!
//! Random choices come from a small xorshift generator seeded from the clock; the seed is
//! printed, and `RELIABILITY_SEED=N` replays a run. Property tests run 2000 cases each;
//! `PROPTEST_CASES=100000` runs longer.

use std::collections::BTreeSet;
use std::io::{self, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use backend_warden::config::Config;
use backend_warden::ipc::{self, FrameError, MAX_FRAME, Request, Response};
use backend_warden::supervisor::Command as EngineCommand;
use proptest::prelude::*;

use crate::support::*;

// ---------------------------------------------------------------------------- helpers

/// A tiny xorshift64* generator: enough randomness for pauses and choices, reproducible
/// from its seed.
struct Rng(u64);

impl Rng {
    fn new(what: &str) -> Rng {
        let seed = std::env::var("RELIABILITY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    ^ u64::from(std::process::id())
            })
            | 1;
        eprintln!("{what}: RELIABILITY_SEED={seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn millis(&mut self, max: u64) -> Duration {
        MS(self.below(max + 1))
    }
}

/// The warden's timestamp at the start of one of its stderr lines.
fn stamp(line: &str) -> SystemTime {
    let token = line.split_whitespace().next().unwrap_or("");
    humantime::parse_rfc3339_weak(token).unwrap_or_else(|e| panic!("no timestamp in {line:?}: {e}"))
}

/// Threads and open file descriptors of a process.
fn threads_and_fds(pid: u32) -> (usize, usize) {
    let count = |dir: String| std::fs::read_dir(dir).map_or(0, |d| d.count());
    (
        count(format!("/proc/{pid}/task")),
        count(format!("/proc/{pid}/fd")),
    )
}

/// What each open descriptor of `pid` points at (for a readable failure message).
fn fd_targets(pid: u32) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .map(|e| {
                    std::fs::read_link(e.path())
                        .map(|t| t.to_string_lossy().into_owned())
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Resident memory of `pid` (VmRSS) and its peak (VmHWM), in bytes.
fn rss_and_peak(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

/// Whether `pid` is alive and (still) carries `tag`: a second look at /proc after a sample.
fn alive_with_tag(pid: u32, tag: &str) -> bool {
    alive(pid)
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(tag))
}

/// Watches the process table every ~10 ms and records every moment at which two live
/// processes carried the tag. A sample reads /proc one process after another, so a sample
/// that sees two is confirmed by a second look: if both are still alive after the first pass
/// ended, there was an instant at which both lived (processes do not come back to life).
struct TreeSampler {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<(usize, Vec<Vec<String>>)>,
}

impl TreeSampler {
    fn start(tag: &str) -> TreeSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let tag = tag.to_string();
        let thread = thread::spawn(move || {
            let mut samples = 0;
            let mut overlaps = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let seen = live_with_tag(&tag);
                samples += 1;
                if seen.len() > 1 {
                    let confirmed: Vec<u32> = seen
                        .iter()
                        .copied()
                        .filter(|p| alive_with_tag(*p, &tag))
                        .collect();
                    if confirmed.len() > 1 {
                        overlaps.push(
                            processes()
                                .into_iter()
                                .filter(|p| confirmed.contains(&p.pid))
                                .map(|p| format!("{} [{}] {}", p.pid, p.state, p.cmdline))
                                .collect(),
                        );
                    }
                }
                thread::sleep(MS(10));
            }
            (samples, overlaps)
        });
        TreeSampler { stop, thread }
    }

    fn finish(self) -> (usize, Vec<Vec<String>>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

// ------------------------------------------------------------------------------ storm

/// The sampler itself: two live processes with one tag are seen, and confirmed.
#[test]
fn the_tree_sampler_sees_two_live_tagged_processes() {
    let tag = tag("sampler");
    let spawn = || {
        Command::new("sh")
            .args(["-c", "sleep 5; true", &tag])
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn(), spawn());
    let sampler = TreeSampler::start(&tag);
    wait_until(SECS(5), "both to run", || {
        (live_with_tag(&tag).len() == 2).then_some(())
    });
    thread::sleep(MS(50)); // a few samples
    let (_, overlaps) = sampler.finish();
    for c in [&mut a, &mut b] {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert!(
        !overlaps.is_empty(),
        "the sampler missed two live tagged processes"
    );
}

/// 4 clients send 500 random start/stop/restart commands (waiting or not, mostly over the
/// socket, some through the CLI) while a chaos thread kills the backend at random. The
/// backend has no children, so "never two backend trees" means never two live tagged
/// processes. At the end the reported PID is the one live backend, and the warden has as
/// many threads and descriptors as before.
#[test]
fn storm_of_commands_and_crashes_never_runs_two_backends() {
    const CLIENTS: usize = 4;
    const COMMANDS_EACH: usize = 125;
    let mut rng = Rng::new("storm");
    let tag = tag("storm");
    let port = free_port();
    let config = demo_config(
        &tag,
        port,
        &[],
        "[restart]\nbackoff_initial = \"0ms\"\nbackoff_max = \"20ms\"\nmax_restarts = 1000000\n\n\
         [stop]\ngrace = \"2s\"\n",
    );
    let mut w = Warden::start(&config);
    let warden = w.pid();
    w.started_pid();
    w.healthy();
    // The baseline: healthy, the first probes and stray scan done.
    thread::sleep(MS(300));
    let (threads_before, fds_before) = threads_and_fds(warden);
    let fd_list_before = fd_targets(warden);

    let sampler = TreeSampler::start(&tag);
    let stop_chaos = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicUsize::new(0));
    let chaos = {
        let (stop, kills, tag) = (Arc::clone(&stop_chaos), Arc::clone(&kills), tag.clone());
        let mut rng = Rng(rng.next() | 1);
        thread::spawn(move || {
            loop {
                thread::sleep(MS(20) + rng.millis(130));
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Some(pid) = live_with_tag(&tag).first() {
                    sigkill(*pid);
                    kills.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let home = w.home().to_path_buf();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let home = home.clone();
            let mut rng = Rng(rng.next() | 1);
            thread::spawn(move || {
                let mut outcomes = Vec::new();
                for _ in 0..COMMANDS_EACH {
                    let command = match rng.below(3) {
                        0 => EngineCommand::Start,
                        1 => EngineCommand::Stop,
                        _ => EngineCommand::Restart,
                    };
                    let wait = rng.below(2) == 0;
                    if rng.below(10) == 0 {
                        let verb = format!("{command:?}").to_lowercase();
                        let mut args = vec![verb.as_str()];
                        if !wait {
                            args.push("--no-wait");
                        }
                        let out = cli_in(&home, &args);
                        // 0 ok, 1 the backend did not settle as asked (a chaos kill): both fine.
                        assert!(
                            matches!(out.status.code(), Some(0 | 1)),
                            "{args:?}: {out:?}"
                        );
                    } else {
                        let answer = ipc::request(
                            &runtime_dir(&home),
                            &Request::Control { command, wait },
                            SECS(30),
                        );
                        match answer {
                            Ok(Response::Done { .. }) => {}
                            other => panic!("{command:?} (wait {wait}): {other:?}"),
                        }
                    }
                    outcomes.push(command);
                    thread::sleep(rng.millis(10));
                }
                outcomes.len()
            })
        })
        .collect();
    let sent: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    stop_chaos.store(true, Ordering::Relaxed);
    chaos.join().unwrap();
    assert_eq!(sent, CLIENTS * COMMANDS_EACH);

    // Settle: one last start, waiting until healthy. The chaos thread's last kill may still
    // be on its way to the engine (a start in `healthy` is a no-op), so ask until the
    // backend that answers healthy is the one alive.
    wait_until(SECS(30), "a final start to end healthy", || {
        let answer = ipc::request(
            &runtime_dir(&home),
            &Request::Control {
                command: EngineCommand::Start,
                wait: true,
            },
            SECS(30),
        )
        .unwrap();
        let Response::Done { ok, status, .. } = answer else {
            panic!("{answer:?}")
        };
        let settled = ok && status.pid.is_some_and(|p| live_with_tag(&tag) == [p]);
        if !settled {
            thread::sleep(MS(50));
        }
        settled.then_some(())
    });
    let (samples, overlaps) = sampler.finish();
    assert!(
        overlaps.is_empty(),
        "two live backends at once, {} time(s), e.g. {:?}",
        overlaps.len(),
        overlaps.first()
    );
    assert!(samples > 50, "the sampler ran only {samples} times");

    // The reported state matches the process table.
    let status = w.status();
    assert_eq!(status["state"], "healthy", "{status}");
    let live = live_with_tag(&tag);
    assert_eq!(
        live,
        vec![status["pid"].as_u64().unwrap() as u32],
        "status says {status}"
    );

    // No leak. Transient threads and descriptors exist by design: each IPC connection has a
    // thread and a socket until its answer is written (our own `status` just now), and each
    // health probe may hold a socket (and ureq a resolver thread) for a moment. So wait for
    // the counts to come back, and allow 2 of each for a probe or connection in flight.
    let settled = wait_until_last(SECS(10), || {
        let (t, f) = threads_and_fds(warden);
        ((t <= threads_before && f <= fds_before), (t, f))
    });
    let (threads_after, fds_after) = settled;
    assert!(
        threads_after <= threads_before + 2 && fds_after <= fds_before + 2,
        "threads {threads_before} -> {threads_after}, fds {fds_before} -> {fds_after}\n\
         before: {fd_list_before:?}\nafter: {:?}",
        fd_targets(warden)
    );
    eprintln!(
        "storm: {sent} commands, {} backend kills, {samples} samples; threads {threads_before} \
         -> {threads_after}, fds {fds_before} -> {fds_after}",
        kills.load(Ordering::Relaxed)
    );
    assert!(w.terminate().success());
    wait_none_with_tag(&tag, SECS(2));
}

// ------------------------------------------------------------------------------ kills

/// Where the warden is when it gets its SIGKILL.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// Within 30 ms of its own start: the lock, the guardian, the first spawn.
    Starting,
    /// Up to 700 ms into its life: running, the backend's crash at 300 ms, the backoff.
    Running,
    /// During a stop (the tree ignores SIGTERM, so it lasts the 300 ms grace).
    Stopping,
    /// During a restart.
    Restarting,
}

/// 50 wardens in one home, each SIGKILLed at a random moment: every time the whole tree
/// (a leader and 2 children, all ignoring SIGTERM) is gone within 1 s, the guardian too, and
/// the next warden takes the same home and port without complaint.
#[test]
fn warden_sigkilled_at_random_moments_leaves_nothing_behind() {
    const KILLS: usize = 50;
    let mut rng = Rng::new("kills");
    let tag = tag("kills");
    let port = free_port();
    let config = demo_config(
        &tag,
        port,
        &["--children", "2", "--ignore-term", "--exit-after", "300"],
        "[restart]\nbackoff_initial = \"100ms\"\nbackoff_max = \"200ms\"\nmax_restarts = 1000000\n\n\
         [stop]\ngrace = \"300ms\"\n",
    );
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("config.toml"), &config).unwrap();
    let run = runtime_dir(home.path());
    let started = Instant::now();
    let mut moments = Vec::new();
    for i in 0..KILLS {
        let moment = match rng.below(4) {
            0 => Moment::Starting,
            1 => Moment::Running,
            2 => Moment::Stopping,
            _ => Moment::Restarting,
        };
        let mut warden: Child = Command::new(exe())
            .args(["run", "--headless"])
            .env("BACKEND_WARDEN_HOME", home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = warden.id();
        if !matches!(moment, Moment::Starting) {
            // It starts clean in the home the last one was killed in: it answers, and its
            // backend is spawned (a survivor holding the port would make it fail instead).
            let status =
                wait_until(
                    SECS(10),
                    "the warden to answer with a backend",
                    || match ipc::request(&run, &Request::Status, SECS(2)) {
                        Ok(Response::Status { status }) if status.warden_pid == pid => {
                            assert_ne!(
                                status.state.as_str(),
                                "failed",
                                "kill {i}: the new warden failed: {:?}",
                                status.failed_reason
                            );
                            status.pid.is_some().then_some(status)
                        }
                        _ => None,
                    },
                );
            assert!(
                status.strays.is_empty(),
                "kill {i}: strays {:?}",
                status.strays
            );
        }
        let command = match moment {
            Moment::Stopping => Some(EngineCommand::Stop),
            Moment::Restarting => Some(EngineCommand::Restart),
            _ => None,
        };
        if let Some(command) = command {
            let _ = ipc::request(
                &run,
                &Request::Control {
                    command,
                    wait: false,
                },
                SECS(5),
            );
        }
        thread::sleep(match moment {
            Moment::Starting => rng.millis(30),
            Moment::Running => rng.millis(700),
            Moment::Stopping | Moment::Restarting => rng.millis(350),
        });
        let guardian: Vec<u32> = children_of(pid)
            .into_iter()
            .filter(|c| {
                std::fs::read(format!("/proc/{c}/cmdline"))
                    .is_ok_and(|b| String::from_utf8_lossy(&b).contains("__guardian"))
            })
            .collect();
        sigkill(pid);
        let _ = warden.wait();
        let deadline = Instant::now() + SECS(1);
        loop {
            let left = live_with_tag(&tag);
            let guardians: Vec<u32> = guardian.iter().copied().filter(|g| alive(*g)).collect();
            if left.is_empty() && guardians.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "kill {i} ({moment:?}): alive 1 s after the warden's SIGKILL: tree {left:?}, \
                 guardian {guardians:?}"
            );
            thread::sleep(MS(5));
        }
        moments.push(moment);
    }
    // The next warden starts clean and runs the backend healthy.
    let mut w = Warden::start_in(home);
    w.started_pid();
    w.healthy();
    let status = w.status();
    assert!(status["strays"].as_array().unwrap().is_empty(), "{status}");
    assert!(w.terminate().success());
    wait_none_with_tag(&tag, SECS(2));
    eprintln!(
        "kills: {KILLS} in {:.1} s: {moments:?}",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------- fuzzing

/// 2000 cases per property; `PROPTEST_CASES=100000` for a longer run. Failures are not
/// persisted to files (the printed minimal case is the record).
fn fuzz_config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A valid config using every section.
const FULL_CONFIG: &str = r#"[backend]
command = "python"
args = ["-m", "uvicorn", "app:app", "--reload", "--port", "54112"]
cwd = 'C:\src\our-api'
env = { PYTHONUNBUFFERED = "1", APP_ENV = "dev" }
port = 54112

[health]
url = "http://127.0.0.1:54112/health"
interval = "2s"
timeout = "1s"
unhealthy_after = 3
restart_after = "1m30s"
start_timeout = "60s"

[restart]
policy = "on-failure"
backoff_initial = "500ms"
backoff_max = "30s"
max_restarts = 5
window = "60s"
stable_after = "10s"

[stop]
grace = "5s"

[logs]
dir = "logs"
max_size = "10MB"
keep = 5

[strays]
scan_interval = "5s"
action = "notify"
adopt = false
cmdline_contains = ["app:app"]
exe_name = "python"

[notify]
crashed = true
recovered = false
"#;

/// Pieces of TOML and of this config's vocabulary, for text that gets deep into the parser.
const TOKENS: &[&str] = &[
    "[backend]",
    "[health]",
    "[restart]",
    "[stop]",
    "[logs]",
    "[strays]",
    "[notify]",
    "[[backend]]",
    "command",
    "args",
    "cwd",
    "env",
    "port",
    "url",
    "interval",
    "timeout",
    "unhealthy_after",
    "policy",
    "backoff_initial",
    "max_restarts",
    "grace",
    "max_size",
    "keep",
    "action",
    "adopt",
    "comand",
    " = ",
    "=",
    "\"",
    "'",
    "'''",
    "\"\"\"",
    "[",
    "]",
    "{",
    "}",
    ",",
    ".",
    "\n",
    " ",
    "#",
    "\\",
    "\"500ms\"",
    "\"0ms\"",
    "\"1m30s\"",
    "\"10MB\"",
    "\"512KiB\"",
    "\"-1s\"",
    "\"\"",
    "\"on-failure\"",
    "\"always\"",
    "\"kill\"",
    "true",
    "false",
    "0",
    "-1",
    "65536",
    "54112",
    "18446744073709551616",
    "1e400",
    "nan",
    "inf",
    "2026-11-23T21:30:00Z",
    "\u{feff}",
    "\u{0}",
    "é",
    "🦀",
];

fn token_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(TOKENS), 0..80).prop_map(|t| t.concat())
}

/// An edit of a text: delete a range, insert a token, duplicate or swap lines.
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, &'static str),
    Byte(usize, u8),
    DuplicateLine(usize),
    SwapLines(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0usize..40).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), proptest::sample::select(TOKENS)).prop_map(|(at, t)| Edit::Insert(at, t)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Byte(at, b)),
        any::<usize>().prop_map(Edit::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
    ]
}

fn apply(base: &str, edits: &[Edit]) -> String {
    let mut bytes = base.as_bytes().to_vec();
    for edit in edits {
        let len = bytes.len().max(1);
        match *edit {
            Edit::Delete(at, n) => {
                let at = at % len;
                let end = (at + n).min(bytes.len());
                if at < end {
                    bytes.drain(at..end);
                }
            }
            Edit::Insert(at, token) => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, token.bytes());
            }
            Edit::Byte(at, b) => {
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] = b;
                }
            }
            Edit::DuplicateLine(n) | Edit::SwapLines(n, _) => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let mut lines: Vec<&str> = text.lines().collect();
                if !lines.is_empty() {
                    let a = n % lines.len();
                    match *edit {
                        Edit::SwapLines(_, m) => {
                            let b = m % lines.len();
                            lines.swap(a, b)
                        }
                        _ => {
                            let line = lines[a];
                            lines.insert(a, line)
                        }
                    }
                }
                bytes = lines.join("\n").into_bytes();
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The parser either accepts the text or says why, naming the file: it never panics.
fn parse_checked(text: &str) {
    let path = Path::new("/fuzz/config.toml");
    if let Err(e) = Config::parse(text, path) {
        let message = e.to_string();
        assert!(
            message.starts_with("/fuzz/config.toml"),
            "error without the file name: {message}"
        );
    }
}

#[test]
fn the_full_config_of_the_property_tests_is_valid() {
    Config::parse(FULL_CONFIG, Path::new("config.toml")).unwrap();
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn config_parser_never_panics_on_arbitrary_text(text in any::<String>()) {
        parse_checked(&text);
    }

    #[test]
    fn config_parser_never_panics_on_toml_like_text(text in token_text()) {
        parse_checked(&text);
    }

    #[test]
    fn config_parser_never_panics_on_mutated_valid_configs(
        full in any::<bool>(),
        edits in proptest::collection::vec(edit(), 1..6),
    ) {
        let base = if full { FULL_CONFIG } else { backend_warden::config::template() };
        parse_checked(&apply(base, &edits));
    }

    #[test]
    fn frame_reader_never_panics_and_never_reads_past_the_limit(
        prefix in prop_oneof![any::<u32>(), 0u32..200, Just(MAX_FRAME as u32), Just(MAX_FRAME as u32 + 1)],
        body in proptest::collection::vec(any::<u8>(), 0..600),
        endless in any::<bool>(),
    ) {
        // The length rule: a frame longer than MAX_FRAME is refused after reading its 4-byte
        // length, before any body is read or allocated; a shorter one reads exactly its
        // length. With an endless stream behind the prefix, nothing is ever read past it.
        let mut stream = prefix.to_le_bytes().to_vec();
        stream.extend_from_slice(&body);
        let tail: Box<dyn Read> = if endless { Box::new(io::repeat(b'{')) } else { Box::new(io::empty()) };
        let mut reader = Counting { inner: stream.as_slice().chain(tail), read: 0 };
        let result = ipc::read_frame::<Request>(&mut reader);
        let len = prefix as usize;
        if len > MAX_FRAME {
            prop_assert!(matches!(result, Err(FrameError::TooLarge(n)) if n == len));
            prop_assert_eq!(reader.read, 4);
        } else {
            prop_assert!(reader.read <= 4 + len);
        }
        prop_assert!(reader.read <= 4 + MAX_FRAME);
    }

    #[test]
    fn frame_decoder_never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = ipc::decode::<Request>(&body);
        let _ = ipc::decode::<Response>(&body);
    }

    #[test]
    fn frame_decoder_never_panics_on_mutated_requests(
        which in 0usize..6,
        edits in proptest::collection::vec(edit(), 1..6),
    ) {
        let valid = [
            r#"{"version":1,"type":"status"}"#,
            r#"{"version":1,"type":"show"}"#,
            r#"{"version":1,"type":"control","command":"restart","wait":true}"#,
            r#"{"version":1,"type":"quit","keep_backend":false}"#,
            r#"{"version":1,"type":"kill_strays","dry_run":true}"#,
            r#"{"version":1,"type":"reload"}"#,
        ];
        let body = apply(valid[which], &edits);
        let _ = ipc::decode::<Request>(body.as_bytes());
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(body.as_bytes());
        let _ = ipc::read_frame::<Request>(&mut frame.as_slice());
    }

    #[test]
    fn frame_decoder_never_panics_on_json_of_any_shape(value in json_value()) {
        let body = serde_json::to_vec(&value).unwrap();
        let _ = ipc::decode::<Request>(&body);
        let _ = ipc::decode::<Response>(&body);
    }
}

/// JSON objects with the protocol's keys (and others) holding values of any kind.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u32>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        proptest::sample::select(&["status", "control", "stop", "restart", "quit", "", "1"][..])
            .prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            proptest::collection::vec(
                (
                    proptest::sample::select(
                        &[
                            "version",
                            "type",
                            "command",
                            "wait",
                            "keep_backend",
                            "dry_run",
                            "status",
                            "x"
                        ][..]
                    ),
                    inner,
                ),
                0..6,
            )
            .prop_map(|pairs| {
                serde_json::Value::Object(
                    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                )
            }),
        ]
    })
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    read: usize,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n;
        Ok(n)
    }
}

// ----------------------------------------------------------------------------- faults

/// Crashes the current backend and waits until its successor is healthy; returns the new PID.
fn crash_and_recover(w: &mut Warden, pid: u32) -> u32 {
    sigkill(pid);
    w.expect_or_dump(&["backend crashed", &format!("pid={pid} ")], SECS(10));
    let next = w.started_pid();
    w.expect_or_dump(&["backend healthy", &format!("pid={next} ")], SECS(20));
    next
}

const LOG_ERROR: &str = "cannot write backend.log";

/// The log folder is replaced by a plain file while the warden runs (as root, chmod 000
/// would not stop writes; a file where a folder should be does): writing backend.log fails
/// from the next rotation on. Supervision goes on, the failure is reported once, and writing
/// resumes when the folder is back.
#[test]
fn log_folder_replaced_by_a_file_is_reported_once_and_supervision_goes_on() {
    let tag = tag("logfault");
    let port = free_port();
    let config = demo_config(
        &tag,
        port,
        &["--say", &"x".repeat(300)],
        "[restart]\nbackoff_initial = \"0ms\"\nmax_restarts = 100\n\n[logs]\nmax_size = \"1KB\"\n",
    );
    let mut w = Warden::start(&config);
    let mut pid = w.started_pid();
    w.healthy();
    let logs = w.home().join("logs");
    let moved = w.home().join("logs.moved");
    std::fs::rename(&logs, &moved).unwrap();
    std::fs::write(&logs, "not a folder").unwrap();
    for _ in 0..5 {
        pid = crash_and_recover(&mut w, pid);
    }
    // A restart on request and a status still work.
    let out = w.cli(&["restart"]);
    assert!(out.status.success(), "{out:?}");
    let status = w.wait_state("healthy", SECS(10));
    pid = status["pid"].as_u64().unwrap() as u32;
    assert!(alive(pid));
    assert_eq!(w.count(&[LOG_ERROR]), 1, "{}", w.output());
    // warden.log is still open in the moved folder and has the report, once.
    let warden_log = std::fs::read_to_string(moved.join("warden.log")).unwrap();
    assert_eq!(warden_log.matches(LOG_ERROR).count(), 1, "{warden_log}");

    // The folder comes back: backend.log is written again.
    std::fs::remove_file(&logs).unwrap();
    std::fs::create_dir(&logs).unwrap();
    crash_and_recover(&mut w, pid);
    wait_until(SECS(5), "backend.log written again", || {
        std::fs::read_to_string(logs.join("backend.log"))
            .is_ok_and(|l| l.contains("wrd| backend started"))
            .then_some(())
    });
    assert!(
        w.child.try_wait().unwrap().is_none(),
        "the warden is running"
    );
    assert!(w.terminate().success());
    wait_none_with_tag(&tag, SECS(2));
}

/// backend.log is on a full disk (a full tmpfs: every write fails with ENOSPC; a symbolic link
/// to /dev/full is refused since issue 19): reported once, crashes are still restarted, status
/// answers. Needs root to mount; skipped with a printed reason otherwise.
#[test]
fn full_disk_is_reported_once_and_supervision_goes_on() {
    let tag = tag("diskfull");
    let port = free_port();
    let home = tempfile::tempdir().unwrap();
    let Some(_full) = FullTmpfs::mount(&home.path().join("logs"), "64k") else {
        return;
    };
    std::fs::write(
        home.path().join("config.toml"),
        demo_config(
            &tag,
            port,
            &["--say", "hello"],
            "[restart]\nbackoff_initial = \"0ms\"\nmax_restarts = 100\n",
        ),
    )
    .unwrap();
    let mut w = Warden::start_in(home);
    let mut pid = w.started_pid();
    w.healthy();
    for _ in 0..3 {
        pid = crash_and_recover(&mut w, pid);
    }
    wait_until(SECS(5), "the write error to be reported", || {
        (w.count(&[LOG_ERROR]) > 0).then_some(())
    });
    assert_eq!(w.count(&[LOG_ERROR]), 1, "{}", w.output());
    assert!(
        w.output().contains("No space left on device"),
        "{}",
        w.output()
    );
    // warden.log is on the same full disk: the report is on stderr only.
    assert_eq!(w.status()["state"], "healthy");
    assert!(w.terminate().success());
    wait_none_with_tag(&tag, SECS(2));
}

/// Runs `sh -c SCRIPT sh ARGS...` as the backend (no health URL: healthy after 1 s up).
fn sh_warden(script: &str, args: &[&str], extra: &str) -> Warden {
    let mut all = vec!["-c", script, "sh"];
    all.extend_from_slice(args);
    let args = all
        .iter()
        .map(|a| toml_str(a))
        .collect::<Vec<_>>()
        .join(", ");
    Warden::start(&format!(
        "[backend]\ncommand = \"sh\"\nargs = [{args}]\n\n{extra}\n"
    ))
}

/// The RSS of the warden `pid` while `done` is false, sampled every 10 ms; returns (before,
/// peak). Call it as soon as the backend started: "before" is read 500 ms later, while the
/// backend's script still sleeps.
fn rss_during(pid: u32, mut done: impl FnMut() -> bool) -> (u64, u64) {
    thread::sleep(MS(500));
    let (before, _) = rss_and_peak(pid);
    let mut peak = before;
    wait_until(SECS(50), "the output to be written", || {
        peak = peak.max(rss_and_peak(pid).0);
        thread::sleep(MS(10));
        done().then_some(())
    });
    (before, peak.max(rss_and_peak(pid).1))
}

fn log_size(w: &Warden) -> u64 {
    std::fs::read_dir(w.home().join("logs"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("backend.log"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Bytes of output the writer dropped (and noted in the log) so far.
fn dropped_bytes(w: &Warden) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(w.home().join("logs")).unwrap().flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with("backend.log")
        {
            continue;
        }
        let text = std::fs::read(entry.path()).unwrap_or_default();
        for line in String::from_utf8_lossy(&text).lines() {
            if let Some((_, note)) = line.split_once(" wrd| ")
                && note.contains("bytes of output dropped")
            {
                total += note
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    total
}

/// 50 MB of lines as fast as the backend can write them: the warden's memory stays flat
/// (the queue to the writer is bounded; what does not fit is dropped and counted, never
/// buffered), and every byte is either in the log or counted as dropped.
#[test]
fn output_flood_keeps_warden_memory_flat() {
    const FLOOD: u64 = 50_000_000;
    let tag = tag("flood");
    let flood = FLOOD.to_string();
    let mut w = sh_warden(
        "sleep 1; exec \"$@\"",
        &[
            exe(),
            "demo-backend",
            "--no-serve",
            "--flood",
            &flood,
            "--tag",
            &tag,
        ],
        "[logs]\nmax_size = \"20MB\"\nkeep = 5\n",
    );
    let mut last = (0, Instant::now());
    w.started_pid();
    let (before, peak) = rss_during(w.pid(), || {
        // Done once the log has stopped growing for 300 ms after the flood began.
        let size = log_size(&w);
        if size != last.0 {
            last = (size, Instant::now());
        }
        size > 1_000_000 && last.1.elapsed() > MS(300)
    });
    let grew = peak.saturating_sub(before);
    assert!(
        grew <= 16 * 1024 * 1024,
        "the warden grew from {before} to {peak} bytes during the flood"
    );
    // Each 100-byte flood line is logged with a 30-byte prefix; dropped bytes are counted.
    let logged = log_size(&w);
    let dropped = dropped_bytes(&w);
    assert!(
        logged + dropped >= FLOOD,
        "{logged} bytes logged + {dropped} dropped < {FLOOD}"
    );
    eprintln!("flood: RSS {before} -> peak {peak}; {logged} bytes logged, {dropped} dropped");
    assert_eq!(w.status()["state"], "healthy");
    assert!(w.terminate().success());
    wait_none_with_tag(&tag, SECS(2));
}

/// A 32 MiB line without a newline: written as 64 KiB pieces, and the warden never holds
/// the line (its growth stays far below the line's size).
#[test]
fn a_huge_line_without_newline_keeps_warden_memory_bounded() {
    let tag = tag("hugeline");
    let mut w = sh_warden(
        "sleep 1; head -c 33554432 /dev/zero | tr \\\\000 x; exec sleep 600",
        &[&tag],
        "[logs]\nmax_size = \"100MB\"\n",
    );
    w.started_pid();
    let (before, peak) = rss_during(w.pid(), || log_size(&w) >= 32 * 1024 * 1024);
    let grew = peak.saturating_sub(before);
    assert!(
        grew <= 16 * 1024 * 1024,
        "the warden grew from {before} to {peak} bytes for a 32 MiB line"
    );
    let log = std::fs::read(w.log_path("backend.log")).unwrap();
    let pieces = String::from_utf8_lossy(&log)
        .lines()
        .filter(|l| l.contains(" out\\ "))
        .count();
    assert_eq!(pieces, 512, "32 MiB in 64 KiB pieces");
    assert!(w.terminate().success());
}

/// The health endpoint starts to hang (accepts, never answers): every probe is given up
/// after `timeout`, `unhealthy` comes within unhealthy_after × (interval + timeout) plus
/// slack, and meanwhile the engine answers status at once and restarts on request.
#[test]
fn hung_health_endpoint_times_out_and_the_engine_does_not_stall() {
    let tag = tag("hang");
    let port = free_port();
    let (interval, timeout, after) = (MS(200), MS(300), 3u32);
    let config = format!(
        "[backend]\ncommand = {exe}\nargs = ['demo-backend', '--port', '{port}', \
         '--hang-health-after', '1000', '--tag', {tag}]\nport = {port}\n\n\
         [health]\nurl = \"http://127.0.0.1:{port}/health\"\ninterval = \"200ms\"\n\
         timeout = \"300ms\"\nunhealthy_after = 3\n",
        exe = toml_str(exe()),
        tag = toml_str(&tag),
    );
    let mut w = Warden::start(&config);
    let started = w.expect_or_dump(&["backend started"], SECS(20));
    let pid: u32 = field(&started, "pid").unwrap();
    w.healthy();
    let hang_at = stamp(&started) + SECS(1);

    // While the probes hang: status answers promptly, over and over.
    let run = runtime_dir(w.home());
    let slowest = Arc::new(Mutex::new(Duration::ZERO));
    let stop = Arc::new(AtomicBool::new(false));
    let asker = {
        let (slowest, stop, run) = (Arc::clone(&slowest), Arc::clone(&stop), run.clone());
        thread::spawn(move || {
            let mut asked = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let answer = ipc::request(&run, &Request::Status, SECS(5));
                assert!(matches!(answer, Ok(Response::Status { .. })), "{answer:?}");
                let took = t.elapsed();
                let mut s = slowest.lock().unwrap();
                *s = (*s).max(took);
                asked += 1;
                thread::sleep(MS(50));
            }
            asked
        })
    };
    let line = w.expect_or_dump(&["backend unhealthy", &format!("pid={pid} ")], SECS(20));
    stop.store(true, Ordering::Relaxed);
    let asked = asker.join().unwrap();
    assert!(line.contains("did not answer within the timeout"), "{line}");
    let took = stamp(&line).duration_since(hang_at).unwrap_or_default();
    let limit = (interval + timeout) * after + SECS(1);
    assert!(
        took >= timeout * after && took <= limit,
        "unhealthy {took:?} after the endpoint began to hang (expected {:?}..{limit:?})",
        timeout * after
    );
    let slowest = *slowest.lock().unwrap();
    assert!(
        asked >= 5 && slowest < SECS(1),
        "{asked} status requests during the hang, the slowest took {slowest:?}"
    );
    // A restart on request works while the endpoint hangs.
    let answer = ipc::request(
        &run,
        &Request::Control {
            command: EngineCommand::Restart,
            wait: true,
        },
        SECS(30),
    )
    .unwrap();
    let Response::Done { ok, status, .. } = answer else {
        panic!("{answer:?}")
    };
    assert!(ok && status.pid != Some(pid), "{status:?}");
    assert!(w.terminate().success());
    wait_none_with_tag(&tag, SECS(2));
}

/// The leader crashes while its child keeps the output pipes open (so end-of-file never comes
/// by itself): the crash is still reported with the leader's last output, and the child dies
/// with it.
#[test]
fn crash_of_a_leader_whose_child_holds_the_pipes_keeps_its_last_output() {
    let tag = tag("pipes");
    let port = free_port();
    let config = demo_config(
        &tag,
        port,
        &[
            "--children",
            "1",
            "--say-err",
            "fatal: the last words",
            "--exit-after",
            "300",
            "--exit-code",
            "7",
        ],
        "[restart]\npolicy = \"never\"\n",
    );
    let mut w = Warden::start(&config);
    w.started_pid();
    let failed = w.expect_or_dump(&["backend failed"], SECS(20));
    assert!(failed.contains("exited with code 7"), "{failed}");
    // The reason goes on over several lines: the last output follows the first.
    assert!(
        w.output().contains("fatal: the last words"),
        "{}",
        w.output()
    );
    wait_none_with_tag(&tag, SECS(2));
    let tail = w.status()["last_exit"]["tail"].clone();
    let lines: BTreeSet<String> = tail
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    assert!(lines.contains("fatal: the last words"), "{tail}");
    assert!(w.terminate().success());
}
