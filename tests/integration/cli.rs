//! Single instance, IPC and every CLI command against a real running warden, checked through
//! `status --json` and the process table.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn ten_launches_at_once_leave_exactly_one_warden() {
    let home = tempfile::tempdir().unwrap();
    let tag = tag("ten");
    let port = free_port();
    std::fs::write(
        home.path().join("config.toml"),
        fake_config(&tag, port, &[], ""),
    )
    .unwrap();
    let mut children = Launches(
        (0..10)
            .map(|i| {
                let err = std::fs::File::create(home.path().join(format!("launch-{i}.err")));
                Command::new(exe())
                    .args(["run", "--headless"])
                    .env("BACKEND_WARDEN_HOME", home.path())
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(err.unwrap())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    let children = &mut children.0;
    // Nine hand over and exit 0; one keeps running.
    let exited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Ten programs starting at once on a busy 2-core machine: allow for a slow start.
        wait_until(SECS(60), "nine launches to hand over", || {
            let done: Vec<usize> = children
                .iter_mut()
                .enumerate()
                .filter_map(|(i, c)| c.try_wait().unwrap().map(|_| i))
                .collect();
            (done.len() >= 9).then_some(done)
        })
    }));
    let exited = match exited {
        Ok(exited) => exited,
        Err(e) => {
            for (i, child) in children.iter_mut().enumerate() {
                let state = child.try_wait().unwrap();
                let err = std::fs::read_to_string(home.path().join(format!("launch-{i}.err")));
                eprintln!(
                    "--- launch {i} (PID {}): {state:?}\n{}",
                    child.id(),
                    err.unwrap_or_default()
                );
                if state.is_none() {
                    for task in std::fs::read_dir(format!("/proc/{}/task", child.id()))
                        .unwrap()
                        .flatten()
                    {
                        let read = |f: &str| {
                            std::fs::read_to_string(task.path().join(f)).unwrap_or_default()
                        };
                        eprintln!(
                            "  thread {:?} {} wchan={}",
                            task.file_name(),
                            read("comm").trim(),
                            read("wchan")
                        );
                    }
                }
            }
            std::panic::resume_unwind(e)
        }
    };
    assert_eq!(exited.len(), 9);
    let mut survivor = None;
    for (i, child) in children.iter_mut().enumerate() {
        if exited.contains(&i) {
            let status = child.wait().unwrap();
            assert!(status.success(), "launch {i}: {status:?}");
            let mut out = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            assert!(
                out.contains("Backend Warden is already running (PID"),
                "launch {i}: {out}"
            );
        } else {
            survivor = Some(child.id());
        }
    }
    let status = wait_until(SECS(20), "the survivor to be healthy", || {
        let out = cli_in(home.path(), &["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["state"] == "healthy").then_some(v)
    });
    assert_eq!(status["warden_pid"].as_u64(), survivor.map(u64::from));
    assert_eq!(live_with_tag(&tag).len(), 1, "one backend");
    assert!(cli_in(home.path(), &["quit"]).status.success());
    for child in children.iter_mut() {
        let _ = child.wait();
    }
    wait_none_with_tag(&tag, SECS(2));
}

/// Launched wardens, killed if the test fails half-way.
struct Launches(Vec<std::process::Child>);

impl Drop for Launches {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn a_killed_warden_leaves_nothing_that_blocks_the_next_one() {
    let tag = tag("reclaim");
    let port = free_port();
    let mut w = Warden::start(&fake_config(&tag, port, &[], ""));
    w.healthy();
    let socket = w.home().join("run").join("warden.sock");
    assert!(socket.exists());
    sigkill(w.pid());
    w.wait_exit(SECS(5));
    wait_none_with_tag(&tag, SECS(1));
    assert!(socket.exists(), "the stale socket file is still there");
    assert_eq!(w.cli(&["status"]).status.code(), Some(3));
    // A new warden starts at once in the same home and reclaims the endpoint.
    let home = std::mem::replace(&mut w.home, tempfile::tempdir().unwrap());
    let mut w2 = Warden::start_in(home);
    w2.healthy();
    assert_eq!(
        w2.status()["warden_pid"].as_u64(),
        Some(u64::from(w2.pid()))
    );
    assert!(w2.terminate().success());
}

#[test]
fn every_command_against_a_running_warden() {
    let tag = tag("cli");
    let port = free_port();
    let mut w = Warden::start(&fake_config(
        &tag,
        port,
        &["--say", "hello from the demo"],
        "",
    ));
    w.healthy();

    let status = w.status();
    let pid = status["pid"].as_u64().unwrap() as u32;
    assert_eq!(status["state"], "healthy");
    assert_eq!(status["port"], port);
    assert_eq!(status["restarts"], 0);
    assert_eq!(status["health"]["ok"], true);
    assert_eq!(status["strays"], serde_json::json!([]));
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(live_with_tag(&tag), vec![pid]);
    let human = text(&w.cli(&["status"]).stdout);
    assert!(
        human.contains(&format!("healthy · PID {pid} · :{port}")),
        "{human}"
    );

    // stop waits until the tree is gone
    let out = w.cli(&["stop"]);
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).contains("backend stopped"), "{out:?}");
    assert!(!alive(pid));
    assert!(live_with_tag(&tag).is_empty());
    let status = w.status();
    assert_eq!(status["state"], "stopped");
    assert_eq!(status["pid"], serde_json::Value::Null);
    assert_eq!(status["last_exit"]["reason"], "stopped on request");

    // start waits until healthy
    let out = w.cli(&["start"]);
    assert!(out.status.success(), "{out:?}");
    let status = w.status();
    assert_eq!(status["state"], "healthy");
    let pid2 = status["pid"].as_u64().unwrap() as u32;
    assert_eq!(live_with_tag(&tag), vec![pid2]);

    // restart: a new process, healthy, the old one gone
    let out = w.cli(&["restart", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let after: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(after["state"], "healthy");
    let pid3 = after["pid"].as_u64().unwrap() as u32;
    assert_ne!(pid3, pid2);
    assert!(!alive(pid2));
    assert_eq!(live_with_tag(&tag), vec![pid3]);

    // --no-wait returns before the outcome
    let out = w.cli(&["stop", "--no-wait"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("stop requested"), "{out:?}");
    w.wait_state("stopped", SECS(10));
    assert!(w.cli(&["start"]).status.success());

    // logs
    let out = w.cli(&["logs", "--path"]);
    let path = text(&out.stdout).trim().to_string();
    assert_eq!(path, w.log_path("backend.log").to_string_lossy());
    let out = w.cli(&["logs"]);
    assert!(
        text(&out.stdout).contains("out| hello from the demo"),
        "{out:?}"
    );
    let mut follow = Command::new(exe())
        .args(["logs", "--follow"])
        .env("BACKEND_WARDEN_HOME", w.home())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut follow_out = follow.stdout.take().unwrap();
    assert!(w.cli(&["restart"]).status.success());
    let mut seen = Vec::new();
    let deadline = Instant::now() + SECS(10);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let n = follow_out.read(&mut buf).unwrap();
        seen.extend_from_slice(&buf[..n]);
        if text(&seen).matches("hello from the demo").count() >= 4 {
            break;
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        text(&seen).matches("hello from the demo").count() >= 4,
        "follow printed the new run's output too: {}",
        text(&seen)
    );

    // quit stops the tree and the warden
    let pid4 = w.status()["pid"].as_u64().unwrap() as u32;
    let out = w.cli(&["quit"]);
    assert!(out.status.success(), "{out:?}");
    assert!(w.wait_exit(SECS(5)).success());
    assert!(!alive(pid4));
    assert_eq!(w.cli(&["status"]).status.code(), Some(3));
    assert_eq!(w.cli(&["stop"]).status.code(), Some(3));
    let no = text(&w.cli(&["status"]).stderr);
    assert!(no.contains("no Backend Warden is running"), "{no}");
}

#[test]
fn quit_keep_backend_leaves_the_backend_running() {
    let tag = tag("keep");
    let port = free_port();
    let mut w = Warden::start(&fake_config(&tag, port, &["--children", "1"], ""));
    w.healthy();
    let pid = w.status()["pid"].as_u64().unwrap() as u32;
    let out = w.cli(&["quit", "--keep-backend"]);
    assert!(out.status.success(), "{out:?}");
    assert!(w.wait_exit(SECS(5)).success());
    // The guardian has let go: give it the time it would need to kill, then check.
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(pid));
    assert_eq!(live_with_tag(&tag).len(), 2);
    assert_eq!(http_get(port, "/health").map(|r| r.0), Some(200));
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_none_with_tag(&tag, SECS(2));
}

#[test]
fn failed_start_exits_1_and_usage_errors_exit_2() {
    let tag = tag("exit1");
    let port = free_port();
    let config = fake_config(
        &tag,
        port,
        &["--exit-after", "0", "--exit-code", "9"],
        "[restart]\nbackoff_initial = \"10ms\"\nmax_restarts = 1\n",
    );
    let mut w = Warden::start(&config);
    w.wait_state("failed", SECS(10));
    let out = w.cli(&["start"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("exited with code 9"), "{out:?}");
    assert_eq!(w.status()["state"], "failed");
    assert_eq!(w.cli(&["start", "--bogus"]).status.code(), Some(2));
    assert_eq!(w.cli(&["frobnicate"]).status.code(), Some(2));
    assert!(w.terminate().success());
}

#[test]
fn garbage_on_the_socket_never_wedges_the_server() {
    let tag = tag("garbage");
    let port = free_port();
    let mut w = Warden::start(&fake_config(&tag, port, &[], ""));
    w.healthy();
    let socket = w.home().join("run").join("warden.sock");

    // A client that connects and says nothing, one that sends half a frame and stalls,
    // one that announces 4 GB, one that sends JSON garbage, one with a wrong version.
    let silent = UnixStream::connect(&socket).unwrap();
    let mut half = UnixStream::connect(&socket).unwrap();
    half.write_all(&100u32.to_le_bytes()).unwrap();
    half.write_all(b"{\"version\":1,").unwrap();
    let answer = |bytes: &[u8]| {
        let mut s = UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(SECS(10))).unwrap();
        s.write_all(bytes).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        text(&out)
    };
    let huge = answer(&u32::MAX.to_le_bytes());
    assert!(huge.contains("larger than the limit"), "{huge}");
    let mut junk = 9u32.to_le_bytes().to_vec();
    junk.extend_from_slice(b"\xff\x00garbage");
    assert!(answer(&junk).contains("invalid request"));
    let body = br#"{"version":99,"type":"status"}"#;
    let mut old = (body.len() as u32).to_le_bytes().to_vec();
    old.extend_from_slice(body);
    assert!(answer(&old).contains("protocol version"));

    // Meanwhile a good client is served at once.
    let started = Instant::now();
    assert_eq!(w.status()["state"], "healthy");
    assert!(started.elapsed() < SECS(4), "served while others stall");
    drop(silent);
    drop(half);
    assert!(w.terminate().success());
}

#[test]
fn the_socket_is_closed_to_other_users() {
    let tag = tag("perms");
    let port = free_port();
    let mut w = Warden::start(&fake_config(&tag, port, &[], ""));
    w.healthy();
    let run = w.home().join("run");
    let dir_mode = std::fs::metadata(&run).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700, "{dir_mode:o}");
    let sock_mode = std::fs::metadata(run.join("warden.sock"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(sock_mode & 0o077, 0, "{sock_mode:o}");
    assert!(w.terminate().success());
}

#[test]
fn two_homes_are_two_independent_wardens() {
    let (tag_a, tag_b) = (tag("homea"), tag("homeb"));
    let mut a = Warden::start(&fake_config(&tag_a, free_port(), &[], ""));
    let mut b = Warden::start(&fake_config(&tag_b, free_port(), &[], ""));
    a.healthy();
    b.healthy();
    assert_ne!(a.status()["warden_pid"], b.status()["warden_pid"]);
    assert!(a.cli(&["stop"]).status.success());
    assert_eq!(b.status()["state"], "healthy");
    assert!(a.terminate().success());
    assert!(b.terminate().success());
}

#[test]
fn without_a_display_the_tray_says_to_run_headless() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(exe())
        .env("BACKEND_WARDEN_HOME", home.path())
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("no display"), "{err}");
    assert!(err.contains("run --headless"), "{err}");
    // Nothing is left holding the instance lock.
    assert_eq!(cli_in(home.path(), &["status"]).status.code(), Some(3));
}

/// `backend-warden` passes `--config` on to the tray program it becomes: the tray reads that
/// file (here a broken one: without a display the tray says so, and names the error in the
/// file it was given; a tray that read another file would not).
#[test]
fn the_tray_program_reads_the_config_it_was_given() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("elsewhere.toml");
    std::fs::write(&config, "[backend]\ncomand = \"python\"\n").unwrap();
    let out = Command::new(exe())
        .arg("--config")
        .arg(&config)
        .env("BACKEND_WARDEN_HOME", home.path())
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("no display"), "{err}");
    assert!(err.contains("elsewhere.toml:2"), "{err}");
    assert!(err.contains("comand"), "{err}");
}

/// Each program says what is wrong when the other one is not beside it.
#[test]
fn a_program_without_its_sibling_says_so() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let home = tempfile::tempdir().unwrap();
    for (program, expected) in [
        (exe(), "cannot start the tray program"),
        (tray_exe(), "backend-warden is missing"),
    ] {
        let alone = dir.path().join(Path::new(program).file_name().unwrap());
        std::fs::hard_link(program, &alone)
            .or_else(|_| std::fs::copy(program, &alone).map(drop))
            .unwrap();
        let out = Command::new(&alone)
            .env("BACKEND_WARDEN_HOME", home.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        std::fs::remove_file(&alone).unwrap();
        assert_eq!(out.status.code(), Some(1), "{program}: {out:?}");
        let err = text(&out.stderr);
        assert!(err.contains(expected), "{program}: {err}");
    }
}

/// Only the tray loads the GUI toolkit: the headless warden, its guardian and the demo
/// backend map no GTK library (they did when all were one program: 10 MiB each).
#[cfg(target_os = "linux")]
#[test]
fn only_the_tray_loads_the_gui_toolkit() {
    let mut w = Warden::start(&fake_config(&tag("lean"), free_port(), &[], ""));
    w.healthy();
    let warden = w.pid();
    let guardian = wait_until(SECS(5), "the guardian", || {
        children_of(warden)
            .into_iter()
            .find(|&c| cmdline(c).contains("__guardian"))
    });
    let backend = w.status()["pid"].as_u64().unwrap();
    for pid in [u64::from(warden), u64::from(guardian), backend] {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        assert!(maps.contains("libc.so"), "{pid}: {maps}");
        assert!(!maps.contains("libgtk"), "PID {pid} maps GTK:\n{maps}");
    }
    assert!(w.terminate().success());
}

/// `status | head` and `logs | head`: a reader that closed the pipe ends the command quietly
/// (no panic, no backtrace, exit 0), before and after anything was written.
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let mut w = Warden::start(&fake_config(&tag("closed-pipe"), free_port(), &[], ""));
    w.healthy();
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["logs"],
        &["config", "path"],
    ] {
        // A pipe whose reading end is closed before the command starts: every write fails.
        let (reader, writer) = nix::unistd::pipe().unwrap();
        drop(reader);
        let out = Command::new(exe())
            .args(args)
            .env("BACKEND_WARDEN_HOME", w.home())
            .stdin(Stdio::null())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(out.stderr.is_empty(), "{args:?}: {}", text(&out.stderr));
    }
    assert!(w.terminate().success());
}

/// `config reload` changes what `status` says about the backend: its port, and whether it is
/// the built-in demo (both used to keep their values from the warden's start).
#[test]
fn status_follows_a_reloaded_config() {
    let mut w = Warden::start_in(tempfile::tempdir().unwrap()); // no config: the demo
    w.healthy();
    assert_eq!(w.status()["demo"], true);
    let port = free_port();
    std::fs::write(
        w.home().join("config.toml"),
        fake_config(&tag("reloaded"), port, &[], ""),
    )
    .unwrap();
    let out = w.cli(&["config", "reload"]);
    assert!(out.status.success(), "{out:?}");
    let status = w.status();
    assert_eq!(status["port"], port, "{status}");
    assert_eq!(status["demo"], false, "{status}");
    let details = text(&w.cli(&["status"]).stdout);
    assert!(details.contains(&format!(":{port}")), "{details}");
    assert!(!details.contains("built-in demo"), "{details}");
    assert!(w.terminate().success());
}
