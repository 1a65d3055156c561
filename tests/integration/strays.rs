//! Strays, port conflicts and adoption, with real Python processes; decoys prove precision.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// A folder holding the tiny backend as `main.py` (and `other.py`, a different script).
fn backend_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tiny_backend.py"
    );
    std::fs::copy(src, dir.path().join("main.py")).unwrap();
    std::fs::copy(src, dir.path().join("other.py")).unwrap();
    dir
}

/// Python started by hand in `cwd`, in its own process group (as a terminal would).
fn by_hand(cwd: &Path, args: &[&str]) -> ByHand {
    ByHand::start(&python(), args, cwd)
}

fn wait_serving(port: u16) {
    wait_until(SECS(20), &format!("something serving :{port}"), || {
        http_get(port, "/health").map(|_| ())
    });
}

fn config(dir: &Path, port: u16, extra: &str) -> String {
    format!(
        "[backend]\ncommand = {py}\nargs = ['main.py', '--port', '{port}']\ncwd = {cwd}\n\
         port = {port}\n\n[health]\nurl = \"http://127.0.0.1:{port}/health\"\n\
         interval = \"200ms\"\n\n[strays]\nscan_interval = \"300ms\"\n{extra}\n",
        py = toml_str(&python().to_string_lossy()),
        cwd = toml_str(&dir.to_string_lossy()),
    )
}

fn stray_pids(status: &serde_json::Value) -> Vec<u32> {
    status["strays"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pid"].as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn a_copy_started_by_hand_is_found_and_killed_and_decoys_live() {
    let dir = backend_dir();
    let elsewhere = backend_dir();
    let port = free_port();
    let mut w = Warden::start(&config(dir.path(), port, ""));
    w.healthy();
    let managed = w.status()["pid"].as_u64().unwrap() as u32;

    // The stray: the same app, by hand, on another port, with a child.
    let (p2, p3, p4, p5) = (free_port(), free_port(), free_port(), free_port());
    let stray = by_hand(
        dir.path(),
        &["main.py", "--port", &p2.to_string(), "--child"],
    );
    wait_serving(p2);
    let stray_child = wait_until(SECS(10), "the stray's child", || {
        children_of(stray.pid()).first().copied()
    });
    // Decoys: an unrelated Python, a different script in the same folder, the same script in
    // another folder.
    let http_server = by_hand(
        dir.path(),
        &["-m", "http.server", &p3.to_string(), "--bind", "127.0.0.1"],
    );
    let other_script = by_hand(dir.path(), &["other.py", "--port", &p4.to_string()]);
    let other_dir = by_hand(elsewhere.path(), &["main.py", "--port", &p5.to_string()]);
    for p in [p3, p4, p5] {
        wait_until(SECS(20), "decoy serving", || {
            std::net::TcpStream::connect(("127.0.0.1", p))
                .ok()
                .map(|_| ())
        });
    }

    let status = wait_until(SECS(5), "the stray in status", || {
        let status = w.status();
        (!stray_pids(&status).is_empty()).then_some(status)
    });
    assert_eq!(stray_pids(&status), vec![stray.pid()], "{status:#}");
    let entry = &status["strays"][0];
    assert!(entry["cmdline"].as_str().unwrap().contains("main.py"));
    assert_eq!(
        entry["cwd"].as_str().map(PathBuf::from),
        Some(std::fs::canonicalize(dir.path()).unwrap())
    );
    assert_eq!(entry["holds_port"], false);
    assert!(entry["memory_bytes"].as_u64().unwrap() > 1_000_000);
    let human = String::from_utf8_lossy(&w.cli(&["status"]).stdout).into_owned();
    assert!(
        human.contains(&format!("stray      PID {}", stray.pid())),
        "{human}"
    );
    w.expect_or_dump(&["stray", "kill-strays"], SECS(5));

    // --dry-run kills nothing.
    let out = w.cli(&["kill-strays", "--dry-run"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains(&format!("would kill PID {}", stray.pid())),
        "{text}"
    );
    assert!(alive(stray.pid()) && alive(stray_child));

    let out = w.cli(&["kill-strays"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains(&format!("killed PID {}", stray.pid())),
        "{text}"
    );
    wait_until(SECS(5), "the stray tree to die", || {
        (!alive(stray.pid()) && !alive(stray_child)).then_some(())
    });
    for decoy in [&http_server, &other_script, &other_dir] {
        assert!(alive(decoy.pid()), "decoy {} was killed", decoy.pid());
    }
    assert!(alive(managed), "the managed backend was killed");
    assert_eq!(w.status()["state"], "healthy");
    w.wait_state("healthy", SECS(1));
    let mut last = serde_json::Value::Null;
    let gone = (0..500).any(|_| {
        last = w.status();
        std::thread::sleep(Duration::from_millis(10));
        stray_pids(&last).is_empty()
    });
    assert!(gone, "strays left after kill-strays: {last:#}");
    assert!(w.terminate().success());
}

#[test]
fn another_program_on_the_port_blocks_the_start_and_is_named() {
    let dir = backend_dir();
    let somewhere = tempfile::tempdir().unwrap();
    let port = free_port();
    let holder = by_hand(
        somewhere.path(),
        &[
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ],
    );
    wait_until(SECS(20), "http.server", || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    });
    let mut w = Warden::start(&config(dir.path(), port, ""));
    let line = w.expect_or_dump(&["backend failed"], SECS(10));
    assert!(line.contains(&format!("port {port} is held by")), "{line}");
    assert!(line.contains(&format!("PID {}", holder.pid())), "{line}");
    assert!(line.contains("http.server"), "{line}");
    assert!(line.contains("not a copy of this backend"), "{line}");
    assert_eq!(w.count(&["backend started"]), 0);
    let status = w.status();
    assert_eq!(status["state"], "failed");
    let holders = status["port_holders"].as_array().unwrap();
    assert!(
        holders
            .iter()
            .any(|h| h["pid"] == holder.pid() && h["alive"] == true),
        "{status:#}"
    );
    assert!(alive(holder.pid()), "never killed: it is not ours");
    assert!(w.terminate().success());
}

#[test]
fn a_stray_holding_the_port_is_named_and_kill_strays_clears_the_way() {
    let dir = backend_dir();
    let port = free_port();
    let stray = by_hand(dir.path(), &["main.py", "--port", &port.to_string()]);
    wait_serving(port);
    let mut w = Warden::start(&config(dir.path(), port, ""));
    let line = w.expect_or_dump(&["backend failed"], SECS(10));
    assert!(line.contains(&format!("PID {}", stray.pid())), "{line}");
    assert!(line.contains("Kill strays frees it"), "{line}");
    let out = w.cli(&["kill-strays"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!alive(stray.pid()));
    let out = w.cli(&["start"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(w.status()["state"], "healthy");
    assert!(w.terminate().success());
}

#[test]
fn adopt_a_healthy_copy_then_stop_it_and_replace_it_after_a_kill() {
    let dir = backend_dir();
    let port = free_port();
    let by_hand = by_hand(
        dir.path(),
        &["main.py", "--port", &port.to_string(), "--child"],
    );
    wait_serving(port);
    let child = wait_until(SECS(10), "its child", || {
        children_of(by_hand.pid()).first().copied()
    });
    let mut w = Warden::start(&config(dir.path(), port, "adopt = true"));
    w.expect_or_dump(&["backend adopted"], SECS(10));
    let status = w.wait_state("healthy", SECS(10));
    assert_eq!(status["pid"], by_hand.pid());
    assert_eq!(status["adopted"], true, "{status:#}");
    assert!(stray_pids(&status).is_empty(), "adopted is not a stray");
    let human = String::from_utf8_lossy(&w.cli(&["status"]).stdout).into_owned();
    assert!(human.contains("not captured"), "{human}");

    // A kill of it: restarted as a managed child.
    sigkill(by_hand.pid());
    let status = w.wait_healthy_after(by_hand.pid(), SECS(25));
    assert_eq!(status["adopted"], false);
    assert!(!alive(child), "the adopted tree's child died with it");
    assert!(w.terminate().success());
}

#[test]
fn stop_kills_an_adopted_tree() {
    let dir = backend_dir();
    let port = free_port();
    let by_hand = by_hand(
        dir.path(),
        &["main.py", "--port", &port.to_string(), "--child"],
    );
    wait_serving(port);
    let child = wait_until(SECS(10), "its child", || {
        children_of(by_hand.pid()).first().copied()
    });
    let w = Warden::start(&config(dir.path(), port, "adopt = true"));
    w.wait_state("healthy", SECS(10));
    assert_eq!(w.status()["pid"], by_hand.pid());
    let out = w.cli(&["stop"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!alive(by_hand.pid()) && !alive(child));
}

/// The backend in `dir` on `port`, started through a shell that exits at once: a live copy that
/// is not a descendant of this test process (a scanner never judges its own tree).
fn start_detached(dir: &Path, port: u16) -> KillOnDrop {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && '{}' main.py --port {port} >/dev/null 2>&1 & echo $!",
            dir.display(),
            python().display()
        ))
        .output()
        .unwrap();
    KillOnDrop(String::from_utf8_lossy(&out.stdout).trim().parse().unwrap())
}

/// A scanner for the backend `python main.py` in `dir`.
fn scanner_for(dir: &Path) -> backend_warden_core::backend::strays::StrayScanner {
    use backend_warden_core::backend::strays::{Identity, StrayScanner};
    let spec = backend_warden_core::backend::process::LaunchSpec {
        program: python().to_string_lossy().into_owned(),
        args: vec!["main.py".into()],
        cwd: dir.to_path_buf(),
        env: Default::default(),
    };
    StrayScanner::new(Identity::new(&spec, &Default::default(), dir), None).unwrap()
}

/// A copy started detached in `dir` on `port`, a scanner, and the stray it found.
fn a_found_stray(
    dir: &Path,
    port: u16,
) -> (
    KillOnDrop,
    backend_warden_core::backend::strays::StrayScanner,
    backend_warden_core::backend::strays::Stray,
) {
    let copy = start_detached(dir, port);
    wait_serving(port);
    let mut scanner = scanner_for(dir);
    let scan = scanner.scan(None);
    let stray = scan
        .strays
        .iter()
        .find(|s| s.pid == copy.0)
        .unwrap_or_else(|| panic!("{} not found in {scan:?}", copy.0))
        .clone();
    (copy, scanner, stray)
}

#[test]
fn a_reused_pid_is_never_killed() {
    let dir = backend_dir();
    let port = free_port();
    let (copy, mut scanner, mut stray) = a_found_stray(dir.path(), port);
    let pid = copy.0;
    // ...but the stray we were told about started at another time: the PID was reused.
    stray.started_at -= 5;
    let report = scanner.kill(&[stray], None, Duration::from_millis(100), false, false);
    assert!(report.killed.is_empty(), "{report:?}");
    assert!(report.left[0].1.contains("another process"), "{report:?}");
    assert!(alive(pid));
}

#[test]
fn a_pid_reused_within_the_same_second_is_never_killed() {
    let dir = backend_dir();
    let port = free_port();
    let (copy, mut scanner, mut stray) = a_found_stray(dir.path(), port);
    let pid = copy.0;
    let ticks = stray
        .start_ticks
        .expect("Linux gives start times in clock ticks");
    // Same second, other clock tick: another process now has the PID.
    stray.start_ticks = Some(ticks + 1);
    let report = scanner.kill(
        &[stray.clone()],
        None,
        Duration::from_millis(100),
        false,
        false,
    );
    assert!(report.killed.is_empty(), "{report:?}");
    assert!(report.left[0].1.contains("another process"), "{report:?}");
    assert!(alive(pid));

    // For real, where the test may set the next PID (root): the copy dies, an unrelated
    // process gets its PID within the same second, and the stale stray is not killed.
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped the ns_last_pid part: needs root to choose the next PID");
        return;
    }
    stray.start_ticks = Some(ticks);
    drop(copy);
    wait_until(SECS(5), "the copy gone", || (!alive(pid)).then_some(()));
    // Another copy of the same app (so only its start time tells it apart) takes the PID:
    // `sh -c "… &"` forks once more, so the next PID but one is the copy's.
    let _reused = wait_until(SECS(20), "another copy with the same PID", || {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 2).to_string()).ok()?;
        let other = start_detached(dir.path(), port);
        (other.0 == pid).then_some(other)
    });
    let report = scanner.kill(&[stray], None, Duration::from_millis(100), false, false);
    assert!(report.killed.is_empty(), "{report:?}");
    assert!(report.left[0].1.contains("another process"), "{report:?}");
    assert!(alive(pid), "the process that reused the PID was killed");
}

#[test]
fn later_scans_see_strays_come_and_go() {
    let dir = backend_dir();
    let mut scanner = scanner_for(dir.path());
    // The first scan reads the whole table; the later ones only what changed since.
    let first = scanner.scan(None);
    assert!(first.strays.is_empty(), "{first:?}");
    let port = free_port();
    let copy = start_detached(dir.path(), port);
    let found = wait_until(SECS(10), "the new copy in a scan", || {
        scanner
            .scan(None)
            .strays
            .into_iter()
            .find(|s| s.pid == copy.0)
    });
    assert!(found.cmdline.contains("main.py"), "{found:?}");
    // Its memory is read again each scan (it grows as Python loads the server).
    wait_serving(port);
    let later = scanner.scan(None);
    assert_eq!(later.strays.len(), 1, "{later:?}");
    assert!(later.strays[0].memory_bytes > 1_000_000, "{later:?}");
    sigkill(copy.0);
    wait_until(SECS(10), "the copy gone from a scan", || {
        let scan = scanner.scan(None);
        scan.strays.iter().all(|s| s.pid != copy.0).then_some(())
    });
}

struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        sigkill(self.0);
    }
}
