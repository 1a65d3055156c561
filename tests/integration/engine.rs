//! The engine against the fake backend (and the demo's own clean stop): crashes, crash loops, stops, whole trees, bad input.

use std::net::{Ipv4Addr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn crash_is_restarted_after_the_backoff() {
    let tag = tag("crash");
    let port = free_port();
    let config = fake_config(
        &tag,
        port,
        &["--exit-after", "400", "--exit-code", "3"],
        "[restart]\nbackoff_initial = \"200ms\"\nmax_restarts = 10\n",
    );
    let mut w = Warden::start(&config);
    let first = w.started_pid();
    w.healthy();
    let crash = w.expect_or_dump(&["backend crashed", "exited with code 3"], SECS(10));
    let crashed_at = Instant::now();
    assert_eq!(field::<u32>(&crash, "pid"), Some(first));
    let second = w.started_pid();
    let gap = crashed_at.elapsed();
    assert_ne!(first, second);
    assert!(
        gap >= Duration::from_millis(150),
        "restarted after {gap:?}, before the 200ms backoff"
    );
    w.healthy();
    assert!(!alive(first));
    assert!(w.terminate().success());
    wait_none_with_tag(&tag, SECS(2));
}

#[test]
fn crash_loop_gives_up_with_the_exit_code_and_last_output() {
    let tag = tag("loop");
    let port = free_port();
    let config = fake_config(
        &tag,
        port,
        &[
            "--exit-after",
            "0",
            "--exit-code",
            "4",
            "--say-err",
            "fatal: DATABASE_URL is not set",
        ],
        "[restart]\nbackoff_initial = \"10ms\"\nmax_restarts = 2\n",
    );
    let mut w = Warden::start(&config);
    let failed = w.expect_or_dump(&["backend failed"], SECS(20));
    assert!(failed.contains("gave up after 3 crashes"), "{failed}");
    assert!(failed.contains("exited with code 4"), "{failed}");
    assert_eq!(w.count(&["backend started"]), 3, "{}", w.output());
    // The reason carries the backend's last words (multi-line; the log has them too).
    let out = w.output();
    assert!(out.contains("fatal: DATABASE_URL is not set"), "{out}");
    let log = std::fs::read_to_string(w.log_path("backend.log")).unwrap();
    assert!(log.contains("err| fatal: DATABASE_URL is not set"), "{log}");
    // It stays failed: no more starts.
    std::thread::sleep(Duration::from_millis(300)); // a window in which a retry would show
    assert_eq!(w.count(&["backend started"]), 3);
    assert!(w.terminate().success());
}

/// Against the shipped demo backend: the zero-setup default must stop cleanly too.
#[test]
fn graceful_stop_on_sigterm_leaves_nothing_and_exits_0() {
    let port = free_port();
    let marker = demo_marker(port);
    let mut w = Warden::start(&demo_config(port, ""));
    let pid = w.started_pid();
    w.healthy();
    assert_eq!(http_get(port, "/health").map(|r| r.0), Some(200));
    let status = w.terminate();
    assert!(status.success(), "{status:?}\n{}", w.output());
    let line = w.expect(&["backend stopped"], SECS(1));
    assert!(line.contains("forced=false"), "{line}");
    assert!(!alive(pid));
    wait_none_with_tag(&marker, SECS(1));
    let log = std::fs::read_to_string(w.log_path("backend.log")).unwrap();
    assert!(log.contains("demo backend: stopping"), "{log}");
}

#[test]
fn backend_ignoring_the_graceful_stop_is_killed_after_grace() {
    let tag = tag("stubborn");
    let port = free_port();
    let config = fake_config(
        &tag,
        port,
        &["--ignore-term", "--children", "2"],
        "[stop]\ngrace = \"500ms\"\n",
    );
    let mut w = Warden::start(&config);
    w.started_pid();
    w.healthy();
    wait_until(SECS(5), "3 tagged processes", || {
        (live_with_tag(&tag).len() == 3).then_some(())
    });
    let asked = Instant::now();
    assert!(w.terminate().success());
    let took = asked.elapsed();
    w.expect(&["did not stop within the grace period"], SECS(1));
    let line = w.expect(&["backend stopped"], SECS(1));
    assert!(line.contains("forced=true"), "{line}");
    assert!(
        took >= Duration::from_millis(450),
        "killed before the grace: {took:?}"
    );
    wait_none_with_tag(&tag, SECS(1));
}

#[test]
fn whole_tree_dies_on_crash_and_is_replaced() {
    let tag = tag("tree");
    let port = free_port();
    let config = fake_config(
        &tag,
        port,
        &["--children", "2", "--grandchildren", "1", "--ignore-term"],
        "[restart]\nbackoff_initial = \"0ms\"\n",
    );
    let mut w = Warden::start(&config);
    let leader = w.started_pid();
    w.healthy();
    let old = wait_until(SECS(5), "1 + 2 + 2 processes", || {
        let live = live_with_tag(&tag);
        (live.len() == 5).then_some(live)
    });
    assert_eq!(live_in_group(leader).len(), 5, "all in the backend's group");
    // Kill only the leader: its children and grandchildren must not outlive it.
    sigkill(leader);
    w.expect_or_dump(&["backend crashed", "SIGKILL"], SECS(5));
    let new_leader = w.started_pid();
    w.healthy();
    for pid in &old {
        assert!(!alive(*pid), "old tree member {pid} survived the crash");
    }
    let new = wait_until(SECS(5), "a new tree of 5", || {
        let live = live_with_tag(&tag);
        (live.len() == 5).then_some(live)
    });
    assert!(new.contains(&new_leader));
    assert!(w.terminate().success());
    wait_none_with_tag(&tag, SECS(2));
}

#[test]
fn whole_tree_dies_when_the_warden_is_killed() {
    let tag = tag("sigkill");
    let port = free_port();
    let config = fake_config(
        &tag,
        port,
        &["--children", "2", "--grandchildren", "1", "--ignore-term"],
        "",
    );
    let mut w = Warden::start(&config);
    w.started_pid();
    w.healthy();
    wait_until(SECS(5), "5 processes", || {
        (live_with_tag(&tag).len() == 5).then_some(())
    });
    sigkill(w.pid());
    w.wait_exit(SECS(5));
    wait_none_with_tag(&tag, SECS(1));
}

#[test]
fn missing_command_fails_at_once_without_a_restart_loop() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        "[backend]\ncommand = \"pyhton-does-not-exist\"\nargs = [\"main.py\"]\n",
    )
    .unwrap();
    let mut w = Warden::start_in(home);
    let line = w.expect_or_dump(&["backend failed"], SECS(10));
    assert!(line.contains("pyhton-does-not-exist"), "{line}");
    assert!(line.contains("not found"), "{line}");
    std::thread::sleep(Duration::from_millis(300)); // a window in which a retry would show
    assert_eq!(w.count(&["backend failed"]), 1, "{}", w.output());
    assert_eq!(w.count(&["backend started"]), 0);
    assert!(w.terminate().success());
}

#[test]
fn missing_cwd_fails_with_the_path() {
    let home = tempfile::tempdir().unwrap();
    let config = format!(
        "[backend]\ncommand = {}\nargs = [\"demo-backend\"]\ncwd = \"no/such/folder\"\n",
        toml_str(exe())
    );
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    let mut w = Warden::start_in(home);
    let line = w.expect_or_dump(&["backend failed"], SECS(10));
    assert!(line.contains("no/such/folder"), "{line}");
    assert!(line.contains("does not exist"), "{line}");
    assert!(w.terminate().success());
}

#[test]
fn port_taken_by_another_program_is_reported_and_nothing_is_spawned() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let tag = tag("port");
    let mut w = Warden::start(&fake_config(&tag, port, &[], ""));
    let line = w.expect_or_dump(&["backend failed"], SECS(10));
    // The holder (this test process) is named, and it is not called a stray.
    assert!(line.contains(&format!("port {port} is held by")), "{line}");
    assert!(
        line.contains(&format!("PID {}", std::process::id())),
        "{line}"
    );
    assert!(line.contains("not a copy of this backend"), "{line}");
    assert_eq!(w.count(&["backend started"]), 0);
    assert!(live_with_tag(&tag).is_empty());
    assert!(w.terminate().success());
}

#[test]
fn bad_config_names_file_line_and_key_and_exits_2() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join("config.toml");
    std::fs::write(&path, "[backend]\ncomand = \"python\"\n").unwrap();
    let out = Command::new(exe())
        .args(["run", "--headless"])
        .env("BACKEND_WARDEN_HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2:", path.display())), "{err}");
    assert!(err.contains("did you mean \"command\""), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let out = Command::new(exe())
        .args(["config", "check"])
        .env("BACKEND_WARDEN_HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn config_init_writes_a_template_that_runs_the_demo() {
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(exe())
            .args(args)
            .env("BACKEND_WARDEN_HOME", home.path())
            .output()
            .unwrap()
    };
    let out = run(&["config", "path"]);
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(path, home.path().join("config.toml").to_string_lossy());
    assert!(run(&["config", "init"]).status.success());
    let template = std::fs::read_to_string(&path).unwrap();
    assert!(template.contains("# command = \"python\""), "{template}");
    assert!(template.contains("54112"), "{template}");
    let again = run(&["config", "init"]);
    assert!(!again.status.success(), "does not overwrite");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), template);
    let check = run(&["config", "check"]);
    assert!(check.status.success());
    let effective = String::from_utf8_lossy(&check.stdout);
    assert!(
        effective.contains("backoff_initial = \"500ms\""),
        "{effective}"
    );
}

#[test]
fn log_rotation_keeps_exactly_keep_files() {
    let tag = tag("rotate");
    let port = free_port();
    let config = fake_config(
        &tag,
        port,
        &["--flood", "400000"],
        "[logs]\nmax_size = \"50KB\"\nkeep = 2\n",
    );
    let mut w = Warden::start(&config);
    w.started_pid();
    w.healthy();
    let dir = w.home().join("logs");
    wait_until(SECS(10), "the flood to be written", || {
        let log = std::fs::read_to_string(dir.join("backend.log")).unwrap_or_default();
        let rotated = std::fs::read_to_string(dir.join("backend.log.1")).unwrap_or_default();
        // the last flood line is in one of the two newest files
        (log.contains("flood line 004000") || rotated.contains("flood line 004000")).then_some(())
    });
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("backend.log"))
        .collect();
    names.sort();
    assert_eq!(names, ["backend.log", "backend.log.1", "backend.log.2"]);
    for name in &names {
        let len = std::fs::metadata(dir.join(name)).unwrap().len();
        assert!(len <= 50_000, "{name} is {len} bytes");
    }
    assert!(w.terminate().success());
}

#[test]
fn partial_and_binary_output_is_kept() {
    let tag = tag("binary");
    let port = free_port();
    // Binary bytes, no final newline, then the process ends: the fragment is still logged.
    let config = fake_config(
        &tag,
        port,
        &["--raw-hex", "6869ff00fe", "--exit-after", "0"],
        "[restart]\npolicy = \"never\"\n",
    );
    let mut w = Warden::start(&config);
    w.wait_state("failed", SECS(10));
    let needle = b"out\\ hi\xff\x00\xfe\n";
    let log = wait_until(SECS(5), "the fragment in backend.log", || {
        let log = std::fs::read(w.log_path("backend.log")).unwrap_or_default();
        log.windows(needle.len())
            .any(|win| win == needle)
            .then_some(log)
    });
    assert!(String::from_utf8_lossy(&log).contains("exited with code 1"));
    assert!(w.terminate().success());
}

/// The guardian on its own, as the warden drives it: a tree it knows only by the token in its
/// environment (the warden died between the launch and the registration) dies with the
/// warden; a tree that was let go (`quit --keep-backend`) does not.
#[test]
fn guardian_kills_trees_known_by_token_and_spares_released_ones() {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;

    let mut guardian = Command::new(exe())
        .arg("__guardian")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let start = |tag: &str, token: &str| {
        Command::new(fake_backend())
            .args(["--no-serve", "--children", "2", "--tag", tag])
            .env("BACKEND_WARDEN_TREE", token)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (doomed, spared) = (tag("token-doomed"), tag("token-spared"));
    let (doomed_token, spared_token) = (format!("{doomed}-1"), format!("{spared}-1"));
    let mut pipe = guardian.stdin.take().unwrap();
    writeln!(pipe, "?{doomed_token}\n?{spared_token}").unwrap();
    let mut doomed_leader = start(&doomed, &doomed_token);
    let mut spared_leader = start(&spared, &spared_token);
    for tag in [&doomed, &spared] {
        wait_until(SECS(10), "a leader and 2 children", || {
            (live_with_tag(tag).len() == 3).then_some(())
        });
    }
    let spared_pgid = spared_leader.id();
    writeln!(
        pipe,
        "+{spared_pgid} {spared_token}\n-{spared_pgid} {spared_token}"
    )
    .unwrap();
    drop(pipe); // the warden is gone

    wait_none_with_tag(&doomed, SECS(1));
    assert!(guardian.wait().unwrap().success());
    assert_eq!(
        live_with_tag(&spared).len(),
        3,
        "a released tree was killed"
    );

    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(spared_pgid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = doomed_leader.wait();
    let _ = spared_leader.wait();
    wait_none_with_tag(&spared, SECS(2));
}

/// A graceful stop reaches the whole tree; when the leader exits first, the rest of the tree
/// still gets its grace period (only an exit nobody asked for kills the tree at once).
#[test]
fn graceful_stop_lets_the_tree_finish_after_its_leader_exits() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("child-finished");
    // The leader (sh waiting) dies of SIGTERM at once; its child takes 300 ms to finish.
    let script = format!(
        "(trap 'sleep 0.3; echo done > {}; exit 0' TERM; while :; do sleep 0.05; done) & wait",
        marker.display()
    );
    let config = format!(
        "[backend]\ncommand = \"sh\"\nargs = [\"-c\", {}]\n\n[stop]\ngrace = \"5s\"\n",
        serde_json::to_string(&script).unwrap() // a TOML basic string too
    );
    let mut w = Warden::start(&config);
    let leader = w.started_pid();
    let group = wait_until(SECS(5), "the leader and its child", || {
        let live = live_in_group(leader);
        (live.len() >= 2).then_some(live)
    });
    let out = w.cli(&["stop"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        marker.exists(),
        "the child was killed before it could finish its graceful stop"
    );
    assert!(group.iter().all(|pid| !alive(*pid)));
    assert!(w.terminate().success());
}

/// Python writing to the warden's pipes: UTF-8 and unbuffered unless the user decided
/// otherwise (on Windows a pipe otherwise gets the ANSI code page, and `print("é")` or an
/// emoji raises UnicodeEncodeError only under the warden). The log keeps the text as printed.
#[test]
fn python_backends_get_utf8_and_unbuffered_unless_the_user_set_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("env_app.py"),
        "import os, sys, time\n\
         for name in ('PYTHONUTF8', 'PYTHONIOENCODING', 'PYTHONUNBUFFERED'):\n\
         \x20   print(f'env {name}={os.environ.get(name)}')\n\
         print(f'encoding {sys.stdout.encoding}')\n\
         try:\n\
         \x20   print('caf\\u00e9 \\U0001F600')\n\
         except UnicodeEncodeError as e:\n\
         \x20   print(f'cannot print: {e}')\n\
         print('printed all', flush=True)\n\
         time.sleep(600)\n",
    )
    .unwrap();
    let config = |env: &str| {
        format!(
            "[backend]\ncommand = {}\nargs = [\"env_app.py\"]\ncwd = {}\n{env}\n\
             [restart]\npolicy = \"never\"\n[stop]\ngrace = \"2s\"\n",
            toml_str(&python().to_string_lossy()),
            toml_str(&dir.path().to_string_lossy()),
        )
    };
    let log_after_start = |w: &mut Warden| {
        w.started_pid();
        let path = w.log_path("backend.log");
        wait_until(SECS(20), "the backend's output in backend.log", || {
            let text = std::fs::read_to_string(&path).ok()?;
            text.contains("printed all").then_some(text)
        })
    };

    let mut w = Warden::start(&config(""));
    let log = log_after_start(&mut w);
    assert!(log.contains("env PYTHONUTF8=1"), "{log}");
    assert!(log.contains("env PYTHONIOENCODING=utf-8"), "{log}");
    assert!(log.contains("env PYTHONUNBUFFERED=1"), "{log}");
    assert!(log.contains("encoding utf-8"), "{log}");
    assert!(log.contains("café 😀"), "{log}");
    assert!(w.cli(&["quit"]).status.success());
    w.wait_exit(SECS(20));

    // The user's own choice wins.
    let mut w = Warden::start(&config(
        "env = { PYTHONIOENCODING = \"latin-1\", PYTHONUTF8 = \"0\" }",
    ));
    let log = log_after_start(&mut w);
    assert!(log.contains("env PYTHONUTF8=0"), "{log}");
    assert!(log.contains("env PYTHONIOENCODING=latin-1"), "{log}");
    assert!(log.contains("cannot print"), "{log}");
    assert!(w.cli(&["quit"]).status.success());
    w.wait_exit(SECS(20));
}

/// `[stop] url`: a backend that shuts down best over HTTP gets the POST first and, when it
/// answers 2xx, no signal; when the URL does not work, the stop falls back to the signal.
#[test]
fn stop_url_is_posted_first_and_the_signal_follows_only_if_it_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("shutdown_app.py"),
        "import http.server, os, signal, sys, threading\n\
         def on_term(*_):\n\
         \x20   print('got SIGTERM', flush=True)\n\
         \x20   sys.exit(0)\n\
         signal.signal(signal.SIGTERM, on_term)\n\
         class H(http.server.BaseHTTPRequestHandler):\n\
         \x20   def answer(self, code):\n\
         \x20       self.send_response(code)\n\
         \x20       self.send_header('content-length', '0')\n\
         \x20       self.end_headers()\n\
         \x20   def do_GET(self):\n\
         \x20       self.answer(200)\n\
         \x20   def do_POST(self):\n\
         \x20       if self.path != '/shutdown':\n\
         \x20           return self.answer(404)\n\
         \x20       self.answer(202)\n\
         \x20       print('shutdown requested', flush=True)\n\
         \x20       threading.Timer(0.1, lambda: (print('clean exit', flush=True), os._exit(0))).start()\n\
         \x20   def log_message(self, *_):\n\
         \x20       pass\n\
         http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n",
    )
    .unwrap();
    let run = |path: &str| {
        let port = free_port();
        let config = format!(
            "[backend]\ncommand = {}\nargs = [\"shutdown_app.py\", \"{port}\"]\ncwd = {}\nport = {port}\n\
             [health]\nurl = \"http://127.0.0.1:{port}/health\"\ninterval = \"200ms\"\n\
             [stop]\ngrace = \"20s\"\nurl = \"http://127.0.0.1:{port}{path}\"\n\
             [restart]\npolicy = \"never\"\n",
            toml_str(&python().to_string_lossy()),
            toml_str(&dir.path().to_string_lossy()),
        );
        let mut w = Warden::start(&config);
        w.healthy();
        assert!(w.cli(&["stop"]).status.success());
        w.expect_or_dump(&["backend stopped", "forced=false"], SECS(20));
        let log = std::fs::read_to_string(w.log_path("backend.log")).unwrap();
        assert!(w.cli(&["quit"]).status.success());
        log
    };
    let log = run("/shutdown");
    assert!(
        log.contains("shutdown requested") && log.contains("clean exit"),
        "{log}"
    );
    assert!(
        !log.contains("got SIGTERM"),
        "a 2xx answer: no signal\n{log}"
    );
    let log = run("/no-such-route");
    assert!(!log.contains("shutdown requested"), "{log}");
    assert!(
        log.contains("got SIGTERM"),
        "a 404: the signal follows\n{log}"
    );
}
