//! Chaos: storms of concurrent commands while the backend is killed at random, and SIGKILLs
//! of the warden at random moments. Real processes, deadlines everywhere, each test well under
//! a minute.
//!
//! Random choices come from a small xorshift generator seeded from the clock; the seed is
//! printed, and `RELIABILITY_SEED=N` replays a run.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use backend_warden_core::engine::supervisor::Command as EngineCommand;
use backend_warden_core::ipc::{self, Request, Response};

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
    let config = fake_config(
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
    let config = fake_config(
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
