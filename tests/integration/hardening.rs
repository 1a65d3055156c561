//! Issue 19: hostile config values, planted symlinks, a stopped or flooded warden, lost log
//! lines. Each test names the promise of the README's "What it guarantees" it holds.

use std::time::Duration;

use crate::support::*;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Absurd values of every kind, each in a config of its own: `config check` exits 2 and names
/// the key.
#[test]
fn config_check_rejects_hostile_values_by_key() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("a-file");
    std::fs::write(&file, "not a folder").unwrap();
    let many_args = format!(
        "[backend]\ncommand = \"python\"\nargs = [{}]\n",
        vec!["\"x\""; 100_000].join(",")
    );
    let cases: Vec<(String, &str)> = vec![
        ("[stop]\ngrace = \"500000000000y\"\n".into(), "stop.grace"),
        (
            "[health]\nstart_timeout = \"400000000000y\"\n".into(),
            "health.start_timeout",
        ),
        (
            "[restart]\nbackoff_max = \"9999999d\"\n".into(),
            "restart.backoff_max",
        ),
        ("[logs]\nkeep = 4294967295\n".into(), "logs.keep"),
        ("[logs]\nmax_size = \"16EiB\"\n".into(), "logs.max_size"),
        (
            "[backend]\ncommand = \"python\"\nargs = [\"a\\u0000b\"]\n".into(),
            "backend.args",
        ),
        (
            "[backend]\ncommand = \"py\\u0000\"\n".into(),
            "backend.command",
        ),
        (
            "[backend]\ncommand = \"python\"\nenv = { X = \"\\u0000\" }\n".into(),
            "backend.env.X",
        ),
        (
            "[health]\nurl = \"http://127.0.0.1:99999/health\"\n".into(),
            "health.url",
        ),
        (many_args, "backend.args"),
        (
            format!(
                "[backend]\ncommand = \"python\"\ncwd = {}\n",
                toml_str(&file.to_string_lossy())
            ),
            "backend.cwd",
        ),
        (
            format!("[logs]\ndir = {}\n", toml_str(&file.to_string_lossy())),
            "logs.dir",
        ),
    ];
    for (config, key) in cases {
        std::fs::write(home.path().join("config.toml"), &config).unwrap();
        let out = cli_in(home.path(), &["config", "check"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {err}");
        assert!(err.contains(&format!("{key}: ")), "{key}: {err}");
        assert!(err.contains("config.toml:"), "{key}: {err}");
    }
}

/// A reload with a hostile value keeps the old config, names the key, and leaves the engine
/// working: a `stop` after it is carried out (an overflowing grace used to panic the engine).
#[test]
fn a_hostile_reload_is_refused_and_the_engine_keeps_working() {
    let port = free_port();
    let tag = tag("hostile-reload");
    let config = fake_config(&tag, port, &[], "");
    let mut w = Warden::start(&config);
    w.healthy();
    for (extra, key) in [
        ("[stop]\ngrace = \"500000000000y\"\n", "stop.grace"),
        ("[logs]\nkeep = 4294967295\n", "logs.keep"),
        ("[restart]\nwindow = \"99999999999d\"\n", "restart.window"),
    ] {
        std::fs::write(w.home().join("config.toml"), format!("{config}{extra}")).unwrap();
        let out = w.cli(&["config", "reload"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {err}");
        assert!(err.contains(&format!("{key}: ")), "{key}: {err}");
    }
    let out = w.cli(&["stop"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(w.status()["state"], "stopped");
    wait_none_with_tag(&tag, SECS(10));
    let out = w.cli(&["quit"]);
    assert!(out.status.success(), "{out:?}");
    assert!(w.wait_exit(SECS(20)).success());
}

/// Runs `run --headless` in `home` and expects it to refuse to start: exit status and stderr.
fn refused_start(home: &std::path::Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(exe())
        .args(["run", "--headless"])
        .env("BACKEND_WARDEN_HOME", home)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (out.status.code(), text(&out.stderr))
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).unwrap().mode() & 0o777
}

/// Symbolic links planted in the home: a `logs` folder, a `backend.log` pointing at a file
/// like `~/.bashrc`, a `run` folder pointing at a 0755 folder. The warden refuses to start,
/// names what it refused, and writes nothing and changes no mode through the links.
#[test]
fn planted_symlinks_in_the_home_are_refused() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let config = fake_config(&tag("symlinks"), free_port(), &[], "");

    // logs -> elsewhere
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("config.toml"), &config).unwrap();
    let elsewhere = home.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    symlink(&elsewhere, home.path().join("logs")).unwrap();
    let (code, err) = refused_start(home.path());
    assert_ne!(code, Some(0), "{err}");
    assert!(
        err.contains("logs") && err.contains("symbolic link"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);

    // logs/backend.log -> bashrc, logs/warden.log -> bashrc
    for name in ["backend.log", "warden.log"] {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join("config.toml"), &config).unwrap();
        let bashrc = home.path().join("bashrc");
        std::fs::write(&bashrc, "precious\n").unwrap();
        std::fs::create_dir(home.path().join("logs")).unwrap();
        symlink(&bashrc, home.path().join("logs").join(name)).unwrap();
        let (code, err) = refused_start(home.path());
        assert_ne!(code, Some(0), "{err}");
        assert!(err.contains(name) && err.contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&bashrc).unwrap(), "precious\n");
    }

    // run -> a 0755 folder: neither chmod'ed nor used.
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("config.toml"), &config).unwrap();
    let shared = home.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    symlink(&shared, home.path().join("run")).unwrap();
    let (code, err) = refused_start(home.path());
    assert_ne!(code, Some(0), "{err}");
    assert!(
        err.contains("run") && err.contains("symbolic link"),
        "{err}"
    );
    assert_eq!(mode(&shared), 0o755, "the link's target was chmod'ed");
    assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 0);
    // The CLI does not talk through it either.
    let out = cli_in(home.path(), &["status"]);
    assert_ne!(out.status.code(), Some(0));
}

/// A fresh home: log and run folders 0700, log files and the lock 0600.
#[test]
fn the_wardens_folders_and_files_are_owner_only() {
    let tag = tag("modes");
    let mut w = Warden::start(&fake_config(&tag, free_port(), &[], ""));
    w.healthy();
    let home = w.home().to_path_buf();
    wait_until(SECS(10), "backend.log", || {
        home.join("logs/backend.log").exists().then_some(())
    });
    assert_eq!(mode(&home.join("logs")), 0o700);
    assert_eq!(mode(&home.join("run")), 0o700);
    assert_eq!(mode(&home.join("logs/backend.log")), 0o600);
    assert_eq!(mode(&home.join("logs/warden.log")), 0o600);
    assert_eq!(mode(&home.join("run/warden.lock")), 0o600);
    assert_eq!(mode(&home.join("run/warden.sock")), 0o600);
    assert!(w.terminate().success());
    wait_none_with_tag(&tag, SECS(10));
}

/// Runs `backend-warden ARGS` in `home` on a thread; waits (generously) for it to end, so a
/// CLI that hangs fails the test instead of hanging it.
fn cli_ending(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    let home = home.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let _ = tx.send(cli_in(&home, &args));
    });
    rx.recv_timeout(SECS(90))
        .expect("the CLI hung against a stopped warden")
}

/// A SIGSTOPped warden: `status` ends with one clear message naming its PID (after the
/// client's 10 s deadline, not the old 600 s), and so does a second launch; once resumed,
/// it answers again.
#[test]
fn a_stopped_warden_gets_a_clear_answer_not_a_hang() {
    use nix::sys::signal::{Signal, kill};
    let tag = tag("stopped");
    let mut w = Warden::start(&fake_config(&tag, free_port(), &[], ""));
    w.healthy();
    let pid = w.pid();
    let warden = nix::unistd::Pid::from_raw(pid as i32);
    kill(warden, Signal::SIGSTOP).unwrap();
    for args in [&["status"][..], &["run", "--headless"][..]] {
        let out = cli_ending(w.home(), args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(
            err.matches("is not answering").count(),
            1,
            "{args:?}: {err}"
        );
        assert!(err.contains(&format!("PID {pid}")), "{args:?}: {err}");
        assert!(!err.contains("os error"), "{args:?}: {err}");
    }
    kill(warden, Signal::SIGCONT).unwrap();
    assert_eq!(w.status()["state"], "healthy");
    assert!(w.terminate().success());
    wait_none_with_tag(&tag, SECS(10));
}

/// 200 idle connections, then clients that drip a byte at a time and reconnect when dropped:
/// `status` is answered all along, and so is a `stop`.
#[test]
fn idle_and_slow_clients_never_lock_out_status() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let tag = tag("idle");
    let mut w = Warden::start(&fake_config(&tag, free_port(), &[], ""));
    w.healthy();
    let socket = w.home().join("run/warden.sock");
    let idle: Vec<UnixStream> = (0..200)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    for _ in 0..3 {
        let out = cli_ending(w.home(), &["status"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let drippers: Vec<_> = (0..8)
        .map(|_| {
            let stop = Arc::clone(&stop);
            let socket = socket.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut conn) = UnixStream::connect(&socket) else {
                        continue;
                    };
                    // A frame of 1000 bytes, sent one byte every 20 ms.
                    let mut frame = 1000u32.to_le_bytes().to_vec();
                    frame.extend(std::iter::repeat_n(b' ', 1000));
                    for byte in frame {
                        if stop.load(Ordering::Relaxed) || conn.write_all(&[byte]).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        })
        .collect();
    // Let the drippers fill the server's reading slots and be dropped a few times over.
    for _ in 0..10 {
        let out = cli_ending(w.home(), &["status"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = cli_ending(w.home(), &["stop"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    stop.store(true, Ordering::Relaxed);
    for dripper in drippers {
        dripper.join().unwrap();
    }
    drop(idle);
    wait_none_with_tag(&tag, SECS(10));
    assert!(w.terminate().success());
}

/// A home whose socket path is longer than a socket name may be: one clear message.
#[test]
fn a_home_too_long_for_a_socket_says_so_once() {
    let base = tempfile::tempdir().unwrap();
    let home = base.path().join("h".repeat(120));
    std::fs::create_dir(&home).unwrap();
    std::fs::write(
        home.join("config.toml"),
        fake_config(&tag("long"), free_port(), &[], ""),
    )
    .unwrap();
    let out = cli_ending(&home, &["run", "--headless"]);
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert_eq!(err.matches("too long").count(), 1, "{err}");
    assert!(err.contains("BACKEND_WARDEN_HOME"), "{err}");
}

/// A fake warden run by another user (root only: it binds the socket, then becomes `nobody`
/// before listening, so its peer credentials are nobody's), or a socket / run folder that
/// belongs to another user. The CLI believes none of them: `status` and a second launch say
/// so, and never print the impostor's answer or "already running".
#[test]
fn another_users_socket_or_server_is_not_trusted() {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root to run a server as another user");
        return;
    }
    const IMPOSTOR: &str = r#"
import os, socket, struct, sys
path, uid = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_UNIX)
s.bind(path)
if uid:
    os.setuid(uid)
s.listen(16)
body = b'{"version":1,"type":"error","message":"I am the impostor"}'
print("ready", flush=True)
while True:
    c, _ = s.accept()
    try:
        c.sendall(struct.pack("<I", len(body)) + body)
    except OSError:
        pass
    c.close()
"#;
    let start = |home: &std::path::Path, uid: u32| {
        let mut child = std::process::Command::new(python())
            .args(["-c", IMPOSTOR])
            .arg(home.join("run/warden.sock"))
            .arg(uid.to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "ready");
        child
    };
    let check = |home: &std::path::Path, what: &str| {
        for args in [&["status"][..], &["run", "--headless"][..]] {
            let out = cli_ending(home, args);
            let err = text(&out.stderr) + &text(&out.stdout);
            assert_ne!(out.status.code(), Some(0), "{what} {args:?}: {err}");
            assert!(err.contains("another user"), "{what} {args:?}: {err}");
            assert!(!err.contains("impostor"), "{what} {args:?}: {err}");
            assert!(!err.contains("already running"), "{what} {args:?}: {err}");
        }
    };
    let nobody = 65534u32;
    let new_home = || {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(
            home.path().join("config.toml"),
            fake_config(&tag("impostor"), free_port(), &[], ""),
        )
        .unwrap();
        std::fs::create_dir(home.path().join("run")).unwrap();
        std::fs::set_permissions(
            home.path().join("run"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        home
    };

    // Our folder, our socket file, another user's server.
    let home = new_home();
    let mut impostor = start(home.path(), nobody);
    check(home.path(), "server of another user");
    let _ = impostor.kill();
    let _ = impostor.wait();

    // Our folder, another user's socket file.
    let home = new_home();
    let mut impostor = start(home.path(), 0);
    nix::unistd::chown(
        &home.path().join("run/warden.sock"),
        Some(nix::unistd::Uid::from_raw(nobody)),
        None,
    )
    .unwrap();
    check(home.path(), "socket of another user");

    // Another user's run folder.
    nix::unistd::chown(
        &home.path().join("run"),
        Some(nix::unistd::Uid::from_raw(nobody)),
        None,
    )
    .unwrap();
    check(home.path(), "run folder of another user");
    let _ = impostor.kill();
    let _ = impostor.wait();
}

/// A config running the test Python with `script` (its `argv[1]` is `tag`, for cleanup; no
/// health URL: healthy after a second up), plus `extra`.
fn python_config(script: &str, tag: &str, extra: &str) -> String {
    format!(
        "[backend]\ncommand = {}\nargs = ['-u', '-c', '''{script}''', {}]\n\n{extra}\n",
        toml_str(&python().to_string_lossy()),
        toml_str(tag)
    )
}

/// The numbers of the `NUM:nnnnnn` lines in `text`.
fn numbers(text: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|line| {
            let at = line.find("NUM:")? + 4;
            line.get(at..at + 6)?.parse().ok()
        })
        .collect()
}

/// Every number from 0 to `count` exactly once; says which are missing or repeated.
fn each_once(numbers: &[u32], count: u32) -> Result<(), String> {
    let mut seen = vec![0u32; count as usize];
    for &n in numbers {
        if n < count {
            seen[n as usize] += 1;
        }
    }
    let missing: Vec<usize> = (0..seen.len()).filter(|&i| seen[i] == 0).collect();
    let twice: Vec<usize> = (0..seen.len()).filter(|&i| seen[i] > 1).collect();
    if missing.is_empty() && twice.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} missing (first {:?}), {} more than once (first {:?})",
            missing.len(),
            &missing[..missing.len().min(10)],
            twice.len(),
            &twice[..twice.len().min(10)]
        ))
    }
}

/// Everything in `backend.log` and its rotated files.
fn all_logged(logs: &std::path::Path) -> String {
    let mut text = String::new();
    let Ok(entries) = std::fs::read_dir(logs) else {
        return text;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("backend.log") && entry.path().is_file() {
            text += &std::fs::read_to_string(entry.path()).unwrap_or_default();
        }
    }
    text
}

/// A rotation that cannot happen (`backend.log.2` is a folder with a file in it, keep = 2)
/// loses nothing: the live file keeps growing, `status` says why, and once the folder is
/// gone rotation resumes.
#[test]
fn a_blocked_rotation_keeps_appending_and_retries() {
    let tag = tag("blocked-rotation");
    let script = "import sys, time\n\
                  for i in range(300):\n    print('NUM:%06d ' % i + 'x' * 40)\n    time.sleep(0.001)\n\
                  time.sleep(3)\n\
                  for i in range(300, 600):\n    print('NUM:%06d ' % i + 'x' * 40)\n    time.sleep(0.001)\n\
                  time.sleep(3600)\n";
    let home = tempfile::tempdir().unwrap();
    let logs = home.path().join("logs");
    std::fs::create_dir_all(logs.join("backend.log.2")).unwrap();
    std::fs::write(logs.join("backend.log.2/keep-me"), "a file").unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        python_config(script, &tag, "[logs]\nmax_size = \"1KB\"\nkeep = 2\n"),
    )
    .unwrap();
    let w = Warden::start_in(home);
    wait_until(SECS(30), "the first 300 lines logged", || {
        numbers(&all_logged(&logs)).contains(&299).then_some(())
    });
    let first: Vec<u32> = numbers(&all_logged(&logs))
        .into_iter()
        .filter(|n| *n < 300)
        .collect();
    each_once(&first, 300).unwrap();
    let status = w.status();
    assert_eq!(status["logs"]["dropped_lines"], 0, "{status}");
    let error = status["logs"]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("cannot rotate"), "{status}");
    assert!(std::fs::metadata(logs.join("backend.log")).unwrap().len() > 1000);
    let human = text(&w.cli(&["status"]).stdout);
    assert!(human.contains("cannot rotate"), "{human}");

    // The folder goes: rotation resumes, backend.log.2 becomes a rotated file.
    std::fs::remove_dir_all(logs.join("backend.log.2")).unwrap();
    wait_until(SECS(30), "rotation to resume", || {
        (numbers(&all_logged(&logs)).contains(&599) && logs.join("backend.log.2").is_file())
            .then_some(())
    });
    let last: Vec<u32> = numbers(&all_logged(&logs));
    let mut sorted = last.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), last.len(), "a line was logged twice");
    assert_eq!(w.status()["logs"]["dropped_lines"], 0);
    drop(w);
    wait_none_with_tag(&tag, SECS(10));
}

/// `logs --follow` across fast rotations (64 KB files, about 2,000 lines a second, 8,000
/// lines): every line printed exactly once.
#[test]
fn follow_prints_every_line_once_across_fast_rotations() {
    use std::io::Read;
    const LINES: u32 = 8000;
    let tag = tag("follow");
    let home = tempfile::tempdir().unwrap();
    let go = home.path().join("go");
    let script = format!(
        "import os, time\n\
         while not os.path.exists({go:?}):\n    time.sleep(0.01)\n\
         start = time.monotonic()\n\
         for i in range({LINES}):\n    print('NUM:%06d ' % i + 'y' * 20)\n    \
         ahead = start + i / 2000 - time.monotonic()\n    \
         if ahead > 0: time.sleep(ahead)\n\
         time.sleep(3600)\n",
        go = go.to_string_lossy()
    );
    std::fs::write(
        home.path().join("config.toml"),
        python_config(&script, &tag, "[logs]\nmax_size = \"64KB\"\n"),
    )
    .unwrap();
    let mut w = Warden::start_in(home);
    w.expect_or_dump(&["backend started"], SECS(20));
    let mut follow = std::process::Command::new(exe())
        .args(["logs", "--follow"])
        .env("BACKEND_WARDEN_HOME", w.home())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen: Vec<u8> = Vec::new();
    let last = format!("NUM:{:06}", LINES - 1);
    let deadline = std::time::Instant::now() + SECS(60);
    let mut started = false;
    while !String::from_utf8_lossy(&seen).contains(&last) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let chunk = rx
            .recv_timeout(left)
            .expect("follow printed every line in time");
        seen.extend_from_slice(&chunk);
        // Follow has printed the log's last lines: it is following; the backend may begin.
        if !started && String::from_utf8_lossy(&seen).contains("backend started") {
            std::fs::write(&go, "").unwrap();
            started = true;
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    let rotations = std::fs::read_dir(w.home().join("logs"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("backend.log."))
        .count();
    assert!(
        rotations >= 2,
        "the log did not rotate ({rotations} rotated files)"
    );
    each_once(&numbers(&String::from_utf8_lossy(&seen)), LINES).unwrap();
    drop(w);
    wait_none_with_tag(&tag, SECS(10));
}

/// `logs` prints the last 50 lines by default, `-n N` the last N, `--all` everything.
#[test]
fn logs_prints_the_last_lines_or_everything() {
    let tag = tag("logs-n");
    let script = "for i in range(120):\n    print('NUM:%06d' % i)\nimport time\ntime.sleep(3600)\n";
    let w = Warden::start(&python_config(script, &tag, ""));
    let logs = w.home().join("logs");
    wait_until(SECS(30), "120 lines logged", || {
        numbers(&all_logged(&logs)).contains(&119).then_some(())
    });
    let lines_of = |args: &[&str]| -> Vec<String> {
        let out = w.cli(args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        text(&out.stdout).lines().map(String::from).collect()
    };
    let default = lines_of(&["logs"]);
    assert_eq!(default.len(), 50, "{default:?}");
    assert!(
        default.last().unwrap().contains("NUM:000119"),
        "{default:?}"
    );
    let five = lines_of(&["logs", "-n", "5"]);
    assert_eq!(five.len(), 5);
    assert_eq!(numbers(&five.join("\n")), vec![115, 116, 117, 118, 119]);
    assert_eq!(lines_of(&["logs", "--lines", "7"]).len(), 7);
    let all = lines_of(&["logs", "--all"]);
    each_once(&numbers(&all.join("\n")), 120).unwrap();
    drop(w);
    wait_none_with_tag(&tag, SECS(10));
}

/// backend.log on a full tmpfs: the lost lines are counted in `status` (JSON and text), with
/// the error, and reported once; when space comes back, lines are written again. Needs root
/// to mount; skipped with a printed reason otherwise.
#[test]
fn a_full_disk_is_counted_in_status() {
    let tag = tag("fulldisk");
    let home = tempfile::tempdir().unwrap();
    let Some(_full) = FullTmpfs::mount(&home.path().join("logs"), "64k") else {
        return;
    };
    let script = "import os, sys, time\n\
                  i = 0\n\
                  while True:\n    print('NUM:%06d' % i)\n    i += 1\n    time.sleep(0.01)\n";
    std::fs::write(
        home.path().join("config.toml"),
        python_config(script, &tag, ""),
    )
    .unwrap();
    let mut w = Warden::start_in(home);
    let status = wait_until(SECS(30), "lost lines counted", || {
        // Also before the warden answers at all.
        let out = w.cli(&["status", "--json"]);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (status["logs"]["dropped_lines"].as_u64()? >= 20).then_some(status)
    });
    let error = status["logs"]["last_error"].as_str().unwrap();
    assert!(error.contains("No space left on device"), "{status}");
    let human = text(&w.cli(&["status"]).stdout);
    assert!(human.contains("lines lost"), "{human}");
    w.expect_or_dump(&["cannot write backend.log"], SECS(10));
    assert_eq!(w.count(&["cannot write backend.log"]), 1, "{}", w.output());

    // Space again: lines reach the file, and the count stops growing.
    std::fs::remove_file(w.home().join("logs/filler")).unwrap();
    let logs = w.home().join("logs");
    wait_until(SECS(30), "lines written again", || {
        (numbers(&all_logged(&logs)).len() > 10).then_some(())
    });
    let settled = w.status()["logs"]["dropped_lines"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        w.status()["logs"]["dropped_lines"].as_u64().unwrap(),
        settled
    );
    drop(w);
    wait_none_with_tag(&tag, SECS(10));
}

/// A backend that starts a daemon the classic way (fork, `setsid`, fork again, the middle
/// one exits), with its environment (`env`) or without any (`noenv`), writes the daemon's
/// PID to `pidfile`, then prints and sleeps; with `crash`, it exits 1 after a moment. With
/// `single` in the mode the daemon skips the second fork: it stays the backend's child, in a
/// session of its own.
const DAEMONIZING: &str = "import os, sys, time\n\
tag, mode, pidfile = sys.argv[1], sys.argv[2], sys.argv[3]\n\
if os.fork() == 0:\n    os.setsid()\n    if 'single' in mode or os.fork() == 0:\n        \
args = [sys.executable, '-c', 'import time; time.sleep(3600)', tag, 'daemon']\n        \
open(pidfile + '.tmp', 'w').write(str(os.getpid()))\n        \
os.rename(pidfile + '.tmp', pidfile)\n        \
if mode.startswith('noenv'):\n            os.execve(sys.executable, args, {})\n        \
os.execv(sys.executable, args)\n    os._exit(0)\n\
print('daemon started', flush=True)\n\
time.sleep(0.3 if 'crash' in sys.argv else 3600)\n\
sys.exit(1)\n";

fn daemonizing_config(tag: &str, mode: &str, pidfile: &std::path::Path, extra_arg: &str) -> String {
    format!(
        "[backend]\ncommand = {}\nargs = ['-u', '-c', '''{DAEMONIZING}''', {}, {}, {}, {}]\n\n\
         [restart]\nbackoff_initial = \"0ms\"\nmax_restarts = 100\n",
        toml_str(&python().to_string_lossy()),
        toml_str(tag),
        toml_str(mode),
        toml_str(&pidfile.to_string_lossy()),
        toml_str(extra_arg),
    )
}

/// A warden in a new home whose backend starts a daemon ([`DAEMONIZING`]); with the file the
/// daemon's PID will be written to.
fn start_daemonizing(tag: &str, mode: &str, extra_arg: &str) -> (Warden, std::path::PathBuf) {
    let home = tempfile::tempdir().unwrap();
    let pidfile = home.path().join("daemon.pid");
    std::fs::write(
        home.path().join("config.toml"),
        daemonizing_config(tag, mode, &pidfile, extra_arg),
    )
    .unwrap();
    (Warden::start_in(home), pidfile)
}

/// The daemon's PID once it runs.
fn daemon_pid(pidfile: &std::path::Path) -> u32 {
    wait_until(SECS(20), "the daemon to start", || {
        let pid: u32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
        cmdline(pid).contains("daemon").then_some(pid)
    })
}

/// A daemon that left the backend's process group by a double fork and `setsid`, with its
/// environment or without, dies with the tree: on `stop`, and on every crash (they do not
/// pile up, one per crashed run).
#[test]
fn descendants_that_leave_the_group_die_with_the_tree() {
    for mode in ["env", "noenv", "noenv-single"] {
        let tag = tag(&format!("daemon-{mode}"));
        let (mut w, pidfile) = start_daemonizing(&tag, mode, "stay");
        w.started_pid();
        let daemon = daemon_pid(&pidfile);
        let out = w.cli(&["stop"]);
        assert!(out.status.success(), "{mode}: {out:?}");
        wait_until(
            SECS(10),
            &format!("{mode}: the daemon to die on stop"),
            || (!alive(daemon)).then_some(()),
        );
        assert!(w.cli(&["quit"]).status.success());
        assert!(w.wait_exit(SECS(20)).success());
        wait_none_with_tag(&tag, SECS(10));

        // A crash loop: each run starts a daemon and exits 1.
        let (mut w, _) = start_daemonizing(&tag, mode, "crash");
        for _ in 0..4 {
            w.expect_or_dump(&["backend crashed"], SECS(20));
        }
        let daemons = live_with_tag(&tag)
            .into_iter()
            .filter(|pid| cmdline(*pid).contains("daemon"))
            .count();
        assert!(
            daemons <= 1,
            "{mode}: {daemons} daemons of crashed runs still alive"
        );
        assert!(w.cli(&["quit"]).status.success());
        assert!(w.wait_exit(SECS(20)).success());
        wait_none_with_tag(&tag, SECS(10));
    }
}

/// Waits until the warden has noted `pid` in `run/trees`, the record its guardian and the
/// next warden of the home kill from: a detached process is noted within a second of being
/// re-parented to the warden.
fn wait_recorded(home: &std::path::Path, pid: u32) {
    let record = home.join("run").join("trees");
    wait_until(
        SECS(10),
        &format!("the warden to record process {pid}"),
        || {
            let text = std::fs::read_to_string(&record).ok()?;
            text.lines()
                .any(|line| line.starts_with(&format!("process {pid} ")))
                .then_some(())
        },
    );
}

/// A daemon that left the group and cleared its environment carries nothing the guardian
/// could find it by; it still dies when the warden is SIGKILLed: re-parented to the warden,
/// it is noted and the guardian told; still the backend's child, the guardian finds it below
/// the group before killing.
#[test]
fn detached_daemons_without_environment_die_with_a_killed_warden() {
    for mode in ["noenv", "noenv-single"] {
        let tag = tag(&format!("orphan-{mode}"));
        let (mut w, pidfile) = start_daemonizing(&tag, mode, "stay");
        let backend = w.started_pid();
        let daemon = daemon_pid(&pidfile);
        if mode == "noenv" {
            wait_recorded(w.home(), daemon);
        }
        sigkill(w.pid());
        w.wait_exit(SECS(10));
        wait_until(
            SECS(10),
            &format!("{mode}: the backend and its daemon to die with the warden"),
            || (!alive(backend) && !alive(daemon)).then_some(()),
        );
        wait_none_with_tag(&tag, SECS(10));
    }
}

/// The guardian's PID: the warden's child running the hidden guardian subcommand.
fn guardian_of(warden: u32) -> Option<u32> {
    children_of(warden)
        .into_iter()
        .find(|pid| cmdline(*pid).contains("__guardian") && alive(*pid))
}

/// A guardian killed alone is replaced at once (no command needed), and the new one does
/// the job: a SIGKILL of the warden then still takes the tree down.
#[test]
fn a_killed_guardian_is_replaced_at_once() {
    let tag = tag("guardian");
    let mut w = Warden::start(&fake_config(&tag, free_port(), &["--children", "2"], ""));
    w.healthy();
    let first = wait_until(SECS(10), "the guardian", || guardian_of(w.pid()));
    sigkill(first);
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(SECS(10), "a new guardian", || {
            guardian_of(w.pid()).filter(|pid| *pid != first)
        })
    }));
    let second = match found {
        Ok(pid) => pid,
        Err(e) => {
            eprintln!("--- warden output\n{}", w.output());
            for child in children_of(w.pid()) {
                eprintln!("child {child}: {}", cmdline(child));
            }
            std::panic::resume_unwind(e)
        }
    };
    assert!(alive(second));
    w.expect_or_dump(&["the tree guardian died"], SECS(10));
    sigkill(w.pid());
    w.wait_exit(SECS(10));
    wait_none_with_tag(&tag, SECS(10));
}

/// The warden and its guardian killed together (`killall -9 backend-warden`) leave the tree
/// running; the next warden of the same home kills it, daemon included, before it starts its
/// own.
#[test]
fn the_next_warden_kills_a_tree_that_outlived_warden_and_guardian() {
    for mode in ["env", "noenv"] {
        outlived_tree_is_killed_by_the_next_warden(mode);
    }
}

fn outlived_tree_is_killed_by_the_next_warden(mode: &str) {
    use nix::sys::signal::{Signal, kill};
    let tag = tag(&format!("outlived-{mode}"));
    let (mut w, pidfile) = start_daemonizing(&tag, mode, "stay");
    let backend = w.started_pid();
    let daemon = daemon_pid(&pidfile);
    wait_recorded(w.home(), daemon);
    let guardian = wait_until(SECS(10), "the guardian", || guardian_of(w.pid()));
    // The warden stopped first, so it cannot start another guardian; the guardian killed
    // before the warden, so it never learns of the warden's death.
    kill(nix::unistd::Pid::from_raw(w.pid() as i32), Signal::SIGSTOP).unwrap();
    sigkill(guardian);
    sigkill(w.pid());
    w.wait_exit(SECS(10));
    wait_until(SECS(10), "the guardian to die", || {
        (!alive(guardian)).then_some(())
    });
    assert!(
        alive(backend) && alive(daemon),
        "the tree should have outlived both"
    );

    let second = std::process::Command::new(exe())
        .args(["run", "--headless"])
        .env("BACKEND_WARDEN_HOME", w.home())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(SECS(20), "the old tree to be killed", || {
        (!alive(backend) && !alive(daemon)).then_some(())
    });
    let out = w.cli(&["quit"]);
    assert!(out.status.success(), "{out:?}");
    let mut second = second;
    wait_until(SECS(20), "the second warden to exit", || {
        second.try_wait().unwrap()
    });
    wait_none_with_tag(&tag, SECS(10));
}
