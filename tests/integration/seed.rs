//! The seed scenario with real uvicorn from the test venv: an orphaned `--reload` worker, every
//! way the team starts the backend, decoys that must live, two wardens on one project, a
//! reload that changes the identity, a restart-loop wrapper and a debug session.

use std::path::{Path, PathBuf};

use crate::support::*;

/// A project folder as the team has it (tests/fixtures/seed_project), with a `sub` folder.
struct Project(tempfile::TempDir);

impl Project {
    fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed_project");
        for file in ["main.py", "other.py", "lint.py", "start_backend.sh"] {
            std::fs::copy(src.join(file), dir.path().join(file)).unwrap();
        }
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        Project(dir)
    }

    fn path(&self) -> PathBuf {
        std::fs::canonicalize(self.0.path()).unwrap()
    }
}

/// How the config starts the backend.
#[derive(Debug, Clone, Copy)]
enum Form {
    /// `python main.py PORT`
    Script,
    /// `python -m uvicorn main:app --port PORT`
    Module,
    /// `.venv/bin/uvicorn main:app --port PORT` (the console-script launcher)
    Launcher,
}

fn uvicorn_launcher() -> PathBuf {
    python().with_file_name("uvicorn")
}

fn config(project: &Path, port: u16, form: Form) -> String {
    let py = python().to_string_lossy().into_owned();
    let (command, args) = match form {
        Form::Script => (py, format!("['main.py', '{port}']")),
        Form::Module => (
            py,
            format!("['-m', 'uvicorn', 'main:app', '--host', '127.0.0.1', '--port', '{port}']"),
        ),
        Form::Launcher => (
            uvicorn_launcher().to_string_lossy().into_owned(),
            format!("['main:app', '--host', '127.0.0.1', '--port', '{port}']"),
        ),
    };
    format!(
        "[backend]\ncommand = {}\nargs = {args}\ncwd = {}\nport = {port}\n\n\
         [health]\nurl = \"http://127.0.0.1:{port}/health\"\ninterval = \"200ms\"\n\n\
         [strays]\nscan_interval = \"300ms\"\n\n[stop]\ngrace = \"3s\"\n",
        toml_str(&command),
        toml_str(&project.to_string_lossy()),
    )
}

fn wait_listening(port: u16) {
    wait_until(SECS(30), &format!("a listener on :{port}"), || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    });
}

/// The parent PID of `pid` (from /proc).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn strays(status: &serde_json::Value) -> Vec<u32> {
    let mut pids: Vec<u32> = status["strays"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pid"].as_u64().unwrap() as u32)
        .collect();
    pids.sort_unstable();
    pids
}

fn stray(status: &serde_json::Value, pid: u32) -> &serde_json::Value {
    status["strays"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["pid"] == pid)
        .unwrap_or_else(|| panic!("no stray {pid} in {status:#}"))
}

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// `uvicorn main:app --reload` by hand, then its reloader killed: the worker lives on.
fn orphaned_worker(project: &Path, port: u16) -> (ByHand, u32) {
    let mut reloader = ByHand::start(
        &python(),
        &[
            "-m",
            "uvicorn",
            "main:app",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--reload",
        ],
        project,
    );
    wait_listening(port);
    let worker = wait_until(SECS(20), "the reload worker", || {
        children_of(reloader.pid())
            .into_iter()
            .find(|c| cmdline(*c).contains("spawn_main"))
    });
    let reloader_pid = reloader.pid();
    reloader.kill_alone();
    wait_until(SECS(5), "the worker to be orphaned", || {
        (parent_of(worker) != Some(reloader_pid)).then_some(())
    });
    assert!(
        http_get(port, "/health").is_some(),
        "the orphan still serves"
    );
    (reloader, worker)
}

#[test]
fn an_orphaned_reload_worker_on_the_port_is_killed_by_kill_strays_then_the_start_succeeds() {
    let project = Project::new();
    let port = free_port();
    let (_group, worker) = orphaned_worker(&project.path(), port);

    let w = Warden::start(&config(&project.path(), port, Form::Module));
    let status = w.wait_state("failed", SECS(30));
    let reason = status["failed_reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!(
            "an orphaned worker of an earlier copy of this backend holds port {port} — Kill strays frees it"
        )),
        "{reason}"
    );
    let entry = stray(&status, worker);
    assert_eq!(entry["kind"], "orphaned_worker", "{status:#}");
    assert_eq!(entry["holds_port"], true);

    let dry = text(&w.cli(&["kill-strays", "--dry-run"]));
    assert!(dry.contains(&format!("would kill PID {worker}")), "{dry}");
    assert!(alive(worker), "a dry run kills nothing");

    let out = w.cli(&["kill-strays"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out).contains(&format!("killed PID {worker}")),
        "{}",
        text(&out)
    );
    // The start the worker blocked goes ahead by itself.
    let status = w.wait_state("healthy", SECS(30));
    assert_ne!(status["pid"].as_u64(), Some(u64::from(worker)));
    assert!(!alive(worker));
}

#[test]
fn an_orphaned_worker_serving_another_port_is_reported() {
    let project = Project::new();
    let (orphan_port, port) = (free_port(), free_port());
    let (_group, worker) = orphaned_worker(&project.path(), orphan_port);
    let w = Warden::start(&config(&project.path(), port, Form::Script));
    w.wait_state("healthy", SECS(30));
    let status = wait_until(SECS(10), "the orphan in status", || {
        let status = w.status();
        strays(&status).contains(&worker).then_some(status)
    });
    let entry = stray(&status, worker);
    assert_eq!(entry["kind"], "orphaned_worker");
    assert_eq!(entry["holds_port"], false);
    let human = text(&w.cli(&["status"]));
    assert!(human.contains("an orphaned worker"), "{human}");
}

#[test]
fn every_start_form_is_one_app_to_every_config_form_and_decoys_and_other_wardens_live() {
    let project = Project::new();
    let elsewhere = Project::new();
    let (root, sub) = (project.path(), project.path().join("sub"));
    let py = python();
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let p = |i: usize| ports[i].to_string();
    // The copies, each started the way the team does.
    let copies = [
        ByHand::start(&py, &["main.py", &p(0)], &root),
        ByHand::start(&py, &["-m", "uvicorn", "main:app", "--port", &p(1)], &root),
        ByHand::start(
            &uvicorn_launcher(),
            &["main:app", "--port", &p(2), "--reload"],
            &root,
        ),
        ByHand::start(
            &py,
            &[
                "-m",
                "uvicorn",
                "main:app",
                "--app-dir",
                "..",
                "--port",
                &p(3),
            ],
            &sub,
        ),
    ];
    // Decoys: never touched.
    let decoys = [
        ByHand::start(
            &py,
            &["-m", "http.server", &p(4), "--bind", "127.0.0.1"],
            &root,
        ),
        ByHand::start(&py, &["other.py"], &root),
        ByHand::start(
            &py,
            &["-c", "import time; time.sleep(600)", "main.py"],
            &root,
        ),
        ByHand::start(&py, &["lint.py", "main.py"], &root),
        ByHand::start(Path::new("tail"), &["-f", "main.py"], &root),
        ByHand::start(
            &py,
            &["-m", "uvicorn", "main:app", "--port", &p(5)],
            &elsewhere.path(),
        ),
    ];
    for port in &ports {
        wait_listening(*port);
    }
    let mut copy_pids: Vec<u32> = copies.iter().map(ByHand::pid).collect();
    copy_pids.sort_unstable();

    // Three wardens (three homes) on the same project, one per config form.
    let wardens: Vec<Warden> = [Form::Script, Form::Module, Form::Launcher]
        .into_iter()
        .map(|form| Warden::start(&config(&root, free_port(), form)))
        .collect();
    let managed: Vec<u32> = wardens
        .iter()
        .map(|w| w.wait_state("healthy", SECS(30))["pid"].as_u64().unwrap() as u32)
        .collect();
    for (i, w) in wardens.iter().enumerate() {
        let status = wait_until(
            SECS(15),
            "every copy and the other wardens' backends",
            || {
                let status = w.status();
                let others: Vec<u32> = status["other_wardens"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|o| o["pid"].as_u64().unwrap() as u32)
                    .collect();
                let all_others = managed
                    .iter()
                    .enumerate()
                    .all(|(j, m)| j == i || others.contains(m));
                (strays(&status) == copy_pids && all_others).then_some(status)
            },
        );
        let other = &status["other_wardens"][0];
        assert!(other["warden_pid"].as_u64().is_some(), "{status:#}");
        assert!(other["home"].as_str().is_some(), "{status:#}");
        let human = text(&w.cli(&["status"]));
        assert!(
            human.contains("managed by another warden (home "),
            "{human}"
        );
        let dry = text(&w.cli(&["kill-strays", "--dry-run"]));
        for pid in &copy_pids {
            assert!(dry.contains(&format!("would kill PID {pid} ")), "{dry}");
        }
        for pid in managed
            .iter()
            .chain(decoys.iter().map(|d| d.0.id()).collect::<Vec<_>>().iter())
        {
            assert!(
                !dry.contains(&format!("PID {pid} ")),
                "{pid} must be left out:\n{dry}"
            );
        }
    }
    let check = wardens[1].cli(&["config", "check"]);
    assert!(
        text(&check).contains(&format!(
            "strays: a copy is: python running main:app (uvicorn) in {}",
            root.display()
        )),
        "{}",
        text(&check)
    );

    let out = wardens[1].cli(&["kill-strays"]);
    assert!(out.status.success(), "{out:?}");
    wait_until(SECS(10), "every copy gone", || {
        copy_pids.iter().all(|pid| !alive(*pid)).then_some(())
    });
    for decoy in &decoys {
        assert!(
            alive(decoy.pid()),
            "decoy {} was killed",
            cmdline(decoy.pid())
        );
    }
    for (w, pid) in wardens.iter().zip(&managed) {
        assert!(alive(*pid), "another warden's backend was killed");
        assert_eq!(w.status()["state"], "healthy");
    }
}

#[test]
fn a_start_on_the_port_of_another_wardens_backend_names_that_warden() {
    let project = Project::new();
    let port = free_port();
    let first = Warden::start(&config(&project.path(), port, Form::Module));
    let theirs = first.wait_state("healthy", SECS(30))["pid"]
        .as_u64()
        .unwrap();
    let second = Warden::start(&config(&project.path(), port, Form::Script));
    let status = second.wait_state("failed", SECS(30));
    let reason = status["failed_reason"].as_str().unwrap();
    assert!(
        reason.contains("another Backend Warden manages")
            && reason.contains(&format!("PID {theirs}"))
            && reason.contains(&first.home().display().to_string()),
        "{reason}"
    );
    let dry = text(&second.cli(&["kill-strays", "--dry-run"]));
    assert!(dry.contains("no strays"), "{dry}");
    assert_eq!(first.status()["state"], "healthy");
}

#[test]
fn a_reload_from_the_demo_to_the_real_backend_finds_its_copies_at_once() {
    let project = Project::new();
    let (copy_port, port) = (free_port(), free_port());
    let copy = ByHand::start(
        &python(),
        &["main.py", &copy_port.to_string()],
        &project.path(),
    );
    wait_listening(copy_port);
    let w = Warden::start("");
    let status = w.wait_state("healthy", SECS(30));
    assert_eq!(status["demo"], true);
    assert!(strays(&w.status()).is_empty());
    std::fs::write(
        w.home().join("config.toml"),
        config(&project.path(), port, Form::Module),
    )
    .unwrap();
    let out = w.cli(&["config", "reload"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!text(&out).contains("[strays]"), "{}", text(&out));
    wait_until(SECS(10), "the copy found without a restart", || {
        strays(&w.status()).contains(&copy.pid()).then_some(())
    });
}

#[test]
fn kill_strays_stops_a_restart_loop_wrapper_first() {
    let project = Project::new();
    let (copy_port, port) = (free_port(), free_port());
    let wrapper = ByHand::start_with(
        Path::new("sh"),
        &["start_backend.sh"],
        &project.path(),
        &[
            ("PY", python().to_string_lossy().into_owned()),
            ("PORT", copy_port.to_string()),
        ],
    );
    wait_listening(copy_port);
    let copy = wait_until(SECS(10), "the copy under the loop", || {
        children_of(wrapper.pid())
            .into_iter()
            .find(|c| cmdline(*c).contains("main.py"))
    });
    let w = Warden::start(&config(&project.path(), port, Form::Script));
    w.wait_state("healthy", SECS(30));
    let status = wait_until(SECS(10), "the copy with its wrapper", || {
        let status = w.status();
        strays(&status).contains(&copy).then_some(status)
    });
    assert_eq!(
        stray(&status, copy)["wrappers"][0]["pid"],
        wrapper.pid(),
        "{status:#}"
    );
    let out = w.cli(&["kill-strays"]);
    assert!(out.status.success(), "{out:?}");
    wait_until(SECS(10), "the loop and its copy gone", || {
        (!alive(wrapper.pid()) && !alive(copy)).then_some(())
    });
}

#[test]
fn a_debug_session_is_left_alone_unless_asked() {
    let project = Project::new();
    let (copy_port, port) = (free_port(), free_port());
    let launcher =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake_debugpy/debugpy/launcher");
    let main = project.path().join("main.py");
    let session = ByHand::start(
        &python(),
        &[
            launcher.to_str().unwrap(),
            "5678",
            "--",
            main.to_str().unwrap(),
            &copy_port.to_string(),
        ],
        &project.path(),
    );
    wait_listening(copy_port);
    let w = Warden::start(&config(&project.path(), port, Form::Script));
    w.wait_state("healthy", SECS(30));
    let status = wait_until(SECS(10), "the debug session in status", || {
        let status = w.status();
        strays(&status).contains(&session.pid()).then_some(status)
    });
    assert_eq!(stray(&status, session.pid())["kind"], "debug_session");
    let out = text(&w.cli(&["kill-strays"]));
    assert!(out.contains("debug session"), "{out}");
    assert!(alive(session.pid()), "a debug session is left alone");
    let out = text(&w.cli(&["kill-strays", "--include-debug"]));
    assert!(
        out.contains(&format!("killed PID {}", session.pid())),
        "{out}"
    );
    wait_until(SECS(10), "the debug session gone", || {
        (!alive(session.pid())).then_some(())
    });
}

#[test]
fn with_action_kill_an_orphaned_worker_on_the_port_is_killed_and_the_start_goes_on() {
    let project = Project::new();
    let port = free_port();
    let (_group, worker) = orphaned_worker(&project.path(), port);
    let config = config(&project.path(), port, Form::Module).replace(
        "scan_interval = \"300ms\"\n",
        "scan_interval = \"300ms\"\naction = \"kill\"\n",
    );
    let w = Warden::start(&config);
    let status = w.wait_state("healthy", SECS(30));
    assert_ne!(status["pid"].as_u64(), Some(u64::from(worker)));
    assert!(!alive(worker), "the worker holding the port was killed");
    assert!(
        w.output().contains("killed a stray copy of the backend"),
        "one line (and, in the tray, one alert) says what was killed:\n{}",
        w.output()
    );
}

#[test]
fn demo_backends_of_two_wardens_are_never_each_others_strays() {
    let (a, b) = (Warden::start(""), Warden::start(""));
    let pid_a = a.wait_state("healthy", SECS(30))["pid"].as_u64().unwrap() as u32;
    let pid_b = b.wait_state("healthy", SECS(30))["pid"].as_u64().unwrap() as u32;
    for (w, theirs) in [(&a, pid_b), (&b, pid_a)] {
        let status = wait_until(SECS(10), "the other demo seen as another warden's", || {
            let status = w.status();
            status["other_wardens"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o["pid"] == theirs)
                .then_some(status)
        });
        assert!(strays(&status).is_empty(), "{status:#}");
        let dry = text(&w.cli(&["kill-strays", "--dry-run"]));
        assert!(dry.contains("no strays"), "{dry}");
    }
}
