//! Config that fits a new user (issue 16): Windows paths, `.env` files, project detection,
//! reload on save, and the CLI habits that go with them.

use crate::support::*;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A Windows path in double quotes is a TOML escape error; the warden says what to write.
#[test]
fn a_windows_path_in_double_quotes_says_to_use_single_quotes() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config.toml");
    std::fs::write(
        &config,
        "[backend]\ncommand = \"python\"\ncwd = \"C:\\src\\our-api\"\n",
    )
    .unwrap();
    let out = cli_in(home.path(), &["config", "check"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        text(&out.stderr),
        format!(
            "backend-warden: config error: {}:3:7: backend.cwd: use single quotes for Windows \
             paths: cwd = 'C:\\src\\our-api'\n",
            config.display()
        )
    );
    // The warden itself refuses to start with the same words.
    let out = cli_in(home.path(), &["run", "--headless"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text(&out.stderr).contains("use single quotes for Windows paths: cwd = 'C:\\src\\our-api'"),
        "{out:?}"
    );
}

/// A backend that prints the variables the env tests look at, then idles.
const PRINT_ENV: &str = "import os, time\n\
for k in ['FROM_FILE', 'BOTH', 'EXPANDED', 'EXPANDED_IN_FILE', 'CUSTOM']:\n    \
print(k + '=' + os.environ.get(k, '<unset>'), flush=True)\n\
time.sleep(600)\n";

/// Waits until backend.log has `want` (all lines) after its `nth` start note; returns the log.
fn wait_for_env(w: &Warden, nth: usize, want: &[&str]) -> String {
    let log = w.log_path("backend.log");
    wait_until(SECS(20), &format!("{want:?} in {}", log.display()), || {
        let text = std::fs::read_to_string(&log).ok()?;
        let run = text.split("backend started").nth(nth)?;
        want.iter().all(|line| run.contains(line)).then_some(text)
    })
}

/// `.env` in the backend's cwd is read by default; `backend.env` overrides it; `${VAR}`
/// expands from the warden's environment; `status` names the file; `env_file` picks another.
#[test]
fn env_file_precedence_and_expansion() {
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("print_env.py"), PRINT_ENV).unwrap();
    std::fs::write(
        project.path().join(".env"),
        "FROM_FILE=file\nBOTH=file\nEXPANDED_IN_FILE=${BW_T16_OUTER}/x\n",
    )
    .unwrap();
    std::fs::write(
        project.path().join("custom.env"),
        "CUSTOM=custom\nBOTH=custom\n",
    )
    .unwrap();
    let config = |extra: &str| {
        format!(
            "[backend]\ncommand = {}\nargs = ['print_env.py']\ncwd = {}\n{extra}\n\
             env = {{ BOTH = 'config', EXPANDED = '${{BW_T16_OUTER}}-y' }}\n",
            toml_str(&python().to_string_lossy()),
            toml_str(&project.path().to_string_lossy()),
        )
    };
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("config.toml"), config("")).unwrap();
    let mut w = Warden::start_with_env(home, &[("BW_T16_OUTER", "outer")]);
    w.healthy();
    wait_for_env(
        &w,
        1,
        &[
            "FROM_FILE=file",
            "BOTH=config",
            "EXPANDED=outer-y",
            "EXPANDED_IN_FILE=outer/x",
            "CUSTOM=<unset>",
        ],
    );
    let dot_env = project.path().join(".env");
    let status = w.status();
    assert_eq!(
        status["env_file"],
        dot_env.to_string_lossy().as_ref(),
        "{status}"
    );
    let human = text(&w.cli(&["status"]).stdout);
    assert!(
        human.contains(&format!("env file   {}", dot_env.display())),
        "{human}"
    );

    // Another file, named in the config: it replaces .env, and backend.env still wins.
    std::fs::write(
        w.home().join("config.toml"),
        config("env_file = 'custom.env'"),
    )
    .unwrap();
    let out = w.cli(&["config", "reload"]);
    assert!(out.status.success(), "{out:?}");
    wait_for_env(
        &w,
        2,
        &["FROM_FILE=<unset>", "BOTH=config", "CUSTOM=custom"],
    );
    let custom = project.path().join("custom.env");
    wait_until(SECS(20), "status names custom.env", || {
        (w.status()["env_file"] == custom.to_string_lossy().as_ref()).then_some(())
    });

    // No file at all.
    std::fs::write(w.home().join("config.toml"), config("env_file = false")).unwrap();
    assert!(w.cli(&["config", "reload"]).status.success());
    wait_for_env(
        &w,
        3,
        &["FROM_FILE=<unset>", "CUSTOM=<unset>", "BOTH=config"],
    );
    wait_until(SECS(20), "status names no env file", || {
        w.status()["env_file"].is_null().then_some(())
    });
}

/// A project folder in a temp dir with `files` (name, contents).
fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, contents) in files {
        std::fs::write(dir.path().join(name), contents).unwrap();
    }
    dir
}

/// `config init --detect DIR` in a fresh home: its stdout and the config it wrote.
fn detect(dir: &std::path::Path) -> (tempfile::TempDir, String, String) {
    let home = tempfile::tempdir().unwrap();
    let out = cli_in(
        home.path(),
        &["config", "init", "--detect", &dir.to_string_lossy()],
    );
    assert!(out.status.success(), "{out:?}");
    let config = std::fs::read_to_string(home.path().join("config.toml")).unwrap();
    (home, text(&out.stdout), config)
}

/// The FastAPI fixture with a virtualenv and a `.env` PORT: the written config runs the
/// venv's Python on the app, on that port, probing its /health; the warden gets it healthy.
#[test]
fn detect_a_fastapi_project_with_a_venv() {
    let app = fastapi_app();
    let port = free_port();
    std::fs::write(app.path().join(".env"), format!("PORT={port}\n")).unwrap();
    // The test venv (it has uvicorn and FastAPI) stands in as the project's .venv.
    let venv = python().parent().unwrap().parent().unwrap().to_path_buf();
    std::os::unix::fs::symlink(&venv, app.path().join(".venv")).unwrap();

    let (home, out, config) = detect(app.path());
    let venv_python = app.path().join(".venv/bin/python");
    for line in [
        format!("found:   virtualenv {}", venv_python.display()),
        "found:   FastAPI app `app = FastAPI()` in app.py".to_string(),
        format!("found:   .env sets PORT={port}"),
        "found:   a /health route".to_string(),
    ] {
        assert!(out.contains(&line), "{line:?} missing from:\n{out}");
    }
    assert!(!out.contains("guessed:"), "{out}");
    for line in [
        format!("command = '{}'", venv_python.display()),
        format!("args = ['-m', 'uvicorn', 'app:app', '--host', '127.0.0.1', '--port', '{port}']"),
        format!("cwd = '{}'", app.path().display()),
        format!("port = {port}"),
        format!("url = 'http://127.0.0.1:{port}/health'"),
    ] {
        assert!(config.contains(&line), "{line:?} missing from:\n{config}");
    }
    let out = cli_in(home.path(), &["config", "check"]);
    assert!(out.status.success(), "{out:?}");

    let mut w = Warden::start_in(home);
    w.healthy();
    assert_eq!(http_get(port, "/health").map(|r| r.0), Some(200));
    assert_eq!(w.status()["port"], port);
    assert!(w.terminate().success());
}

/// A plain script and no venv: Python from PATH (a guess, said so), no port, no health URL.
#[test]
fn detect_a_plain_script() {
    let dir = project(&[(
        "main.py",
        "import time\n\nif __name__ == \"__main__\":\n    time.sleep(600)\n",
    )]);
    let (_home, out, config) = detect(dir.path());
    assert!(
        out.contains("found:   main.py runs as a script (__main__)"),
        "{out}"
    );
    assert!(out.contains("guessed: no virtualenv"), "{out}");
    assert!(
        config.contains("command = 'python'\nargs = ['main.py']\n"),
        "{config}"
    );
    assert!(!config.contains("port ="), "{config}");
    assert!(!config.contains("[health]"), "{config}");
}

/// A package.json with a dev script: `npm run dev`, with the guessed port and health URL.
#[test]
fn detect_a_package_json_project() {
    let dir = project(&[(
        "package.json",
        r#"{"name": "api", "scripts": {"dev": "node server.js", "test": "jest"}}"#,
    )]);
    let (_home, out, config) = detect(dir.path());
    assert!(out.contains("found:   package.json script `dev`"), "{out}");
    assert!(out.contains("guessed: port 3000"), "{out}");
    assert!(out.contains("guessed: health URL /"), "{out}");
    assert!(
        config.contains("command = 'npm'\nargs = ['run', 'dev']\n"),
        "{config}"
    );
    assert!(
        config.contains("url = 'http://127.0.0.1:3000/'"),
        "{config}"
    );
}

/// Nothing to run: the commented template, and the output says why.
#[test]
fn detect_nothing_writes_the_template() {
    let dir = project(&[("README.md", "# notes\n")]);
    let (home, out, config) = detect(dir.path());
    assert!(out.contains("nothing to run found in"), "{out}");
    assert!(
        config.starts_with("# backend-warden configuration\n"),
        "{config}"
    );
    assert!(!config.lines().any(|l| l == "[backend]"), "{config}");
    // It is the same template `config init` writes.
    let plain = tempfile::tempdir().unwrap();
    assert!(cli_in(plain.path(), &["config", "init"]).status.success());
    assert_eq!(
        std::fs::read_to_string(plain.path().join("config.toml")).unwrap(),
        config
    );
    drop(home);
}

/// Saving the config applies it like `config reload`; a broken save keeps the old config and
/// is reported once, however often the same mistake is saved.
#[test]
fn saving_the_config_reloads_it_and_a_broken_save_keeps_the_old_one() {
    let (tag_a, port_a) = (tag("save-a"), free_port());
    let mut w = Warden::start(&fake_config(&tag_a, port_a, &[], ""));
    let first = w.started_pid();
    w.healthy();

    // A valid save: the backend moves to the new port (what it launches changed).
    let port_b = free_port();
    let good = fake_config(&tag("save-b"), port_b, &[], "");
    std::fs::write(w.home().join("config.toml"), &good).unwrap();
    w.expect_or_dump(&["config file saved: config reloaded"], SECS(20));
    let second = w.started_pid();
    assert_ne!(first, second);
    w.healthy();
    assert_eq!(w.status()["port"], port_b);

    // A broken save, then the same mistake saved again: one report, old config in force.
    let broken = good.replace("[health]", "[health]\ntimeout = 2");
    std::fs::write(w.home().join("config.toml"), &broken).unwrap();
    w.expect_or_dump(&["config file saved"], SECS(20));
    w.expect_or_dump(&["not reloaded", "health.timeout"], SECS(20));
    std::fs::write(w.home().join("config.toml"), format!("{broken}# again\n")).unwrap();
    w.expect_or_dump(&["config file saved"], SECS(20));
    // The second save was handled (its debug line is out); give its report the same chance
    // as the first had, by waiting for a later status answer.
    let status = w.status();
    assert_eq!(status["state"], "healthy", "{status}");
    assert_eq!(status["pid"], second);
    assert_eq!(status["port"], port_b);
    assert_eq!(w.count(&["not reloaded"]), 1, "{}", w.output());
    assert!(w.terminate().success());
}

/// A backend that failed (its command does not exist) starts as soon as a reload fixes the
/// config, without a click on Start.
#[test]
fn a_reload_that_fixes_a_failed_backend_starts_it() {
    let mut w = Warden::start("[backend]\ncommand = 'no-such-program-bw16'\n");
    let failed = w.wait_state("failed", SECS(20));
    assert!(
        failed["failed_reason"]
            .as_str()
            .is_some_and(|r| r.contains("no-such-program-bw16")),
        "{failed}"
    );
    let port = free_port();
    std::fs::write(
        w.home().join("config.toml"),
        fake_config(&tag("revived"), port, &[], ""),
    )
    .unwrap();
    let out = w.cli(&["config", "reload"]);
    assert!(out.status.success(), "{out:?}");
    w.healthy();
    let status = w.wait_state("healthy", SECS(20));
    assert_eq!(status["port"], port);
    assert!(w.terminate().success());
}

/// A backend of three Python processes, each holding 40 MB it has written to.
const BALLAST_TREE: &str = "import subprocess, sys, time\n\
ballast = bytearray(b'\\x01') * (40 * 1000 * 1000)\n\
if len(sys.argv) == 1:\n    \
kids = [subprocess.Popen([sys.executable, sys.argv[0], 'child']) for _ in range(2)]\n\
print('ready', flush=True)\n\
time.sleep(600)\n";

/// Resident memory of `pid` from /proc, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// `status` reports the tree's memory (the sum over its processes), CPU and process count, in
/// JSON and in words; its times are local with the zone; starts and restarts are apart.
#[test]
fn status_shows_the_trees_memory_cpu_processes_and_local_times() {
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("ballast.py"), BALLAST_TREE).unwrap();
    let config = format!(
        "[backend]\ncommand = {}\nargs = ['ballast.py']\ncwd = {}\n",
        toml_str(&python().to_string_lossy()),
        toml_str(&project.path().to_string_lossy()),
    );
    let mut w = Warden::start(&config);
    let pid = w.started_pid();
    w.healthy();
    let log = w.log_path("backend.log");
    wait_until(SECS(30), "three ready processes", || {
        let text = std::fs::read_to_string(&log).ok()?;
        (text.matches("ready").count() == 3 && live_in_group(pid).len() == 3).then_some(())
    });
    let ours: u64 = live_in_group(pid).into_iter().map(rss).sum();
    assert!(ours >= 120_000_000, "the tree holds {ours} bytes");

    let status = w.status();
    let memory = status["memory_bytes"].as_u64().unwrap();
    assert!(
        (memory as f64) > ours as f64 * 0.8 && (memory as f64) < ours as f64 * 1.2,
        "status says {memory} bytes, /proc says {ours}: {status}"
    );
    assert_eq!(status["process_count"], 3, "{status}");
    assert!(
        status["cpu_percent"].as_f64().is_some_and(|c| c >= 0.0),
        "{status}"
    );
    assert_eq!(
        (status["starts"].as_u64(), status["restarts"].as_u64()),
        (Some(1), Some(0))
    );
    let started_at = status["started_at"].as_str().unwrap();
    assert!(
        started_at.len() == 20 && started_at.ends_with('Z'),
        "JSON keeps UTC RFC 3339: {started_at}"
    );

    // Human output: in the reader's zone (Tokyo has no summer time: always JST).
    let out = std::process::Command::new(exe())
        .args(["status"])
        .env("BACKEND_WARDEN_HOME", w.home())
        .env("TZ", "Asia/Tokyo")
        .output()
        .unwrap();
    let human = text(&out.stdout);
    let started = human
        .lines()
        .find(|l| l.starts_with("started    "))
        .unwrap_or_else(|| panic!("{human}"));
    assert!(started.ends_with(" JST"), "{started}");
    assert!(
        human.contains(" MB memory · ") && human.contains("% CPU · 3 processes"),
        "{human}"
    );

    // A crash is a restart; clicks on Restart are starts.
    sigkill(pid);
    w.wait_healthy_after(pid, SECS(50));
    for _ in 0..2 {
        let out = w.cli(&["restart"]);
        assert!(out.status.success(), "{out:?}");
    }
    let status = w.status();
    assert_eq!(
        (status["starts"].as_u64(), status["restarts"].as_u64()),
        (Some(3), Some(1)),
        "{status}"
    );
    let human = text(&w.cli(&["status"]).stdout);
    assert!(
        human.contains("restarts   1 after a crash or failed health check; 3 starts asked for"),
        "{human}"
    );
    assert!(w.terminate().success());
}

/// With no warden, `status --json` still prints an object (exit 3 stays).
#[test]
fn status_json_without_a_warden_says_not_running() {
    let home = tempfile::tempdir().unwrap();
    let out = cli_in(home.path(), &["status", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state"], "not running");
    assert_eq!(
        status["config_path"],
        home.path().join("config.toml").to_string_lossy().as_ref()
    );
}

/// The arguments of a `.desktop` file's `Exec=` line (double-quoted, backslash escapes).
fn exec_args(entry: &str) -> Vec<String> {
    let exec = entry
        .lines()
        .find_map(|l| l.strip_prefix("Exec="))
        .unwrap_or_else(|| panic!("no Exec= in {entry}"));
    let mut args = Vec::new();
    let mut chars = exec.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                let mut arg = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => arg.extend(chars.next()),
                        '"' => break,
                        _ => arg.push(c),
                    }
                }
                args.push(arg.replace("%%", "%"));
            }
            ' ' => {}
            other => panic!("unquoted {other:?} in {exec}"),
        }
    }
    args
}

/// `autostart enable` from a warden with its own home (or config) writes a login entry that
/// starts that same warden, not the default one.
#[test]
fn autostart_entry_starts_the_same_warden() {
    let xdg = tempfile::tempdir().unwrap();
    let mut w = Warden::start(&fake_config(&tag("autostart"), free_port(), &[], ""));
    w.healthy();
    let autostart = |args: &[&str]| {
        std::process::Command::new(exe())
            .args(args)
            .env("BACKEND_WARDEN_HOME", w.home())
            .env("XDG_CONFIG_HOME", xdg.path())
            .output()
            .unwrap()
    };
    let out = autostart(&["autostart", "enable"]);
    assert!(out.status.success(), "{out:?}");
    let entry_path = xdg.path().join("autostart/backend-warden.desktop");
    let entry = std::fs::read_to_string(&entry_path).unwrap();
    let args = exec_args(&entry);
    assert_eq!(
        args,
        [exe(), "--home", &w.home().to_string_lossy()],
        "{entry}"
    );
    assert!(text(&autostart(&["autostart", "status"]).stdout).starts_with("enabled ("));

    // What the entry starts, in a login session's environment (no BACKEND_WARDEN_HOME),
    // reaches this warden.
    let out = std::process::Command::new(&args[0])
        .args(&args[1..])
        .args(["status", "--json"])
        .env_remove("BACKEND_WARDEN_HOME")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["warden_pid"], w.pid(), "{status}");

    // Another config: its entry carries it, and the first warden is no longer the one enabled.
    let other = w.home().join("other.toml");
    let other_arg = other.to_string_lossy().into_owned();
    let out = autostart(&["autostart", "enable", "--config", &other_arg]);
    assert!(out.status.success(), "{out:?}");
    let args = exec_args(&std::fs::read_to_string(&entry_path).unwrap());
    assert_eq!(
        args,
        [
            exe(),
            "--home",
            &w.home().to_string_lossy(),
            "--config",
            &other_arg
        ]
    );
    let said = text(&autostart(&["autostart", "status"]).stdout);
    assert!(said.starts_with("disabled for this warden"), "{said}");
    let said = text(&autostart(&["autostart", "status", "--config", &other_arg]).stdout);
    assert!(said.starts_with("enabled ("), "{said}");

    assert!(autostart(&["autostart", "disable"]).status.success());
    assert!(!entry_path.exists());
    assert!(w.terminate().success());
}

/// `quit --keep-backend`, then a new warden of the same config: it adopts the kept backend
/// (no `strays.adopt`); with another config it leaves it alone and says why.
#[test]
fn a_backend_kept_by_quit_is_adopted_by_the_next_warden() {
    let help = text(&cli_in(std::path::Path::new("/nonexistent"), &["quit", "--help"]).stdout);
    assert!(
        help.contains("adopts it automatically") && help.contains("start time"),
        "{help}"
    );

    let tag = tag("kept");
    let port = free_port();
    let mut w = Warden::start(&fake_config(&tag, port, &["--children", "1"], ""));
    w.healthy();
    let pid = w.status()["pid"].as_u64().unwrap() as u32;
    let out = w.cli(&["quit", "--keep-backend"]);
    assert!(out.status.success(), "{out:?}");
    assert!(w.wait_exit(SECS(10)).success());
    assert!(w.home().join("run/kept-backend.json").is_file());
    let home = std::mem::replace(&mut w.home, tempfile::tempdir().unwrap());

    let mut w = Warden::start_in(home);
    let line = w.expect_or_dump(&["backend adopted"], SECS(20));
    assert!(line.contains(&format!("pid={pid}")), "{line}");
    let status = w.wait_state("healthy", SECS(20));
    assert_eq!(status["pid"], pid, "{status}");
    assert_eq!(status["adopted"], true, "{status}");
    assert_eq!(live_with_tag(&tag).len(), 2, "no second backend");
    assert!(
        !w.home().join("run/kept-backend.json").exists(),
        "used once"
    );

    // Kept again, but the config changes before the next start: not adopted.
    assert!(w.cli(&["quit", "--keep-backend"]).status.success());
    assert!(w.wait_exit(SECS(10)).success());
    let home = std::mem::replace(&mut w.home, tempfile::tempdir().unwrap());
    let (other_tag, other_port) = (tag.clone() + "-new", free_port());
    std::fs::write(
        home.path().join("config.toml"),
        fake_config(&other_tag, other_port, &[], ""),
    )
    .unwrap();
    let mut w = Warden::start_in(home);
    w.expect_or_dump(&["not adopting", "started from another config"], SECS(20));
    let new_pid = w.started_pid();
    assert_ne!(new_pid, pid);
    w.healthy();
    assert!(alive(pid), "the kept backend is left alone");
    assert!(w.terminate().success());
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_none_with_tag(&tag, SECS(5));
}

/// `[logs]` limits apply at the reload, not at the next warden start.
#[test]
fn a_reload_applies_new_log_limits_at_once() {
    let tag = tag("loglimits");
    let port = free_port();
    let config = |logs: &str| fake_config(&tag, port, &["--flood", "20000"], logs);
    let w = Warden::start(&config("[logs]\nmax_size = \"1MB\"\nkeep = 5\n"));
    w.wait_state("healthy", SECS(20));
    let logs = w.home().join("logs");
    assert!(!logs.join("backend.log.1").exists(), "20 KB fit in 1 MB");
    std::fs::write(
        w.home().join("config.toml"),
        config("[logs]\nmax_size = \"4KB\"\nkeep = 2\n"),
    )
    .unwrap();
    let out = w.cli(&["config", "reload"]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!said.contains("next warden start"), "{said}");
    assert!(w.cli(&["restart"]).status.success());
    wait_until(SECS(10), "rotated files", || {
        logs.join("backend.log.2").exists().then_some(())
    });
    assert!(
        !logs.join("backend.log.3").exists(),
        "keep = 2 holds: {:?}",
        std::fs::read_dir(&logs)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect::<Vec<_>>()
    );
    let live = std::fs::metadata(logs.join("backend.log")).unwrap().len();
    assert!(
        live <= 8 * 1024,
        "the live file rotates near 4 KB: {live} bytes"
    );
}

/// A reload that moves `logs.dir` moves both logs at once: status names the new file, and the
/// backend's and the warden's next lines are written there.
#[test]
fn a_reload_moves_the_logs_to_a_new_folder_at_once() {
    let tag = tag("logmove");
    let port = free_port();
    let w = Warden::start(&fake_config(&tag, port, &["--say", "said-on-start"], ""));
    w.wait_state("healthy", SECS(20));
    let moved = w.home().join("moved-logs");
    std::fs::write(
        w.home().join("config.toml"),
        fake_config(
            &tag,
            port,
            &["--say", "said-on-start"],
            "[logs]\ndir = \"moved-logs\"\n",
        ),
    )
    .unwrap();
    let out = w.cli(&["config", "reload"]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("the logs now go to"), "{said}");
    let status = w.status();
    assert_eq!(
        status["log_path"].as_str().map(std::path::PathBuf::from),
        Some(moved.join("backend.log")),
        "{status:#}"
    );
    assert!(w.cli(&["restart"]).status.success());
    wait_until(SECS(10), "the backend's lines in the new folder", || {
        std::fs::read_to_string(moved.join("backend.log"))
            .ok()
            .filter(|text| text.contains("said-on-start"))
            .map(|_| ())
    });
    wait_until(SECS(10), "the warden's lines in the new folder", || {
        std::fs::read_to_string(moved.join("warden.log"))
            .ok()
            .filter(|text| text.contains("backend started"))
            .map(|_| ())
    });
    let old = std::fs::read_to_string(w.home().join("logs").join("backend.log")).unwrap();
    assert!(
        old.contains("said-on-start"),
        "the old file keeps what it had"
    );
}
