//! Stale code: edits to watched files mark the backend stale, or restart it once per burst,
//! and the new backend serves the new code; excluded paths never count.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;

/// A warden on a copy of `fixture` (as `app.py`/`main.py`) run by `args`, with `[watch]` extra.
fn warden(fixture: &str, args: &str, port: u16, watch: &str) -> (Warden, tempfile::TempDir) {
    let app = tempfile::tempdir().unwrap();
    let src = format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(&src, app.path().join("main.py")).unwrap();
    std::fs::copy(&src, app.path().join("app.py")).unwrap();
    let config = format!(
        "[backend]\ncommand = {py}\nargs = [{args}]\ncwd = {cwd}\nport = {port}\n\n\
         [health]\nurl = \"http://127.0.0.1:{port}/health\"\ninterval = \"200ms\"\n\n\
         [restart]\nbackoff_initial = \"0ms\"\n\n\
         [logs]\ndir = {logs}\n\n[watch]\ndebounce = \"300ms\"\n{watch}\n",
        py = toml_str(&python().to_string_lossy()),
        cwd = toml_str(&app.path().to_string_lossy()),
        // the warden's own log folder inside the watched tree: it must never count
        logs = toml_str(&app.path().join("logs").to_string_lossy()),
    );
    (Warden::start(&config), app)
}

fn stale(w: &Warden) -> serde_json::Value {
    w.status()["stale"].clone()
}

fn touch(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn an_edit_marks_the_backend_stale_and_a_restart_clears_it() {
    let port = free_port();
    let (mut w, app) = warden(
        "tiny_backend.py",
        &format!("'main.py', '--port', '{port}'"),
        port,
        "on_change = \"notify\"",
    );
    w.healthy();
    assert!(stale(&w).is_null());
    let pid = w.status()["pid"].clone();
    let main = app.path().join("main.py");
    let text = std::fs::read_to_string(&main).unwrap();
    let saved = Instant::now();
    touch(&main, &format!("{text}\n# edited\n"));
    let s = wait_until(SECS(5), "stale", || {
        let s = stale(&w);
        (!s.is_null()).then_some(s)
    });
    let took = saved.elapsed();
    assert_eq!(s["files"], serde_json::json!(["main.py"]), "{s}");
    assert!(s["count"].as_u64().unwrap() >= 1);
    assert!(s["since"].as_str().unwrap().ends_with('Z'));
    eprintln!("stale reported {took:?} after the save (debounce 300 ms)");
    assert_eq!(w.status()["pid"], pid, "notify mode does not restart");
    let human = String::from_utf8_lossy(&w.cli(&["status"]).stdout).into_owned();
    assert!(human.contains("code changed"), "{human}");
    assert!(w.cli(&["restart"]).status.success());
    assert!(stale(&w).is_null(), "a restart clears it");
    assert!(w.terminate().success());
}

#[test]
fn ten_rapid_saves_are_one_restart_and_the_new_code_is_served() {
    let port = free_port();
    let (mut w, app) = warden(
        "fastapi_app/app.py",
        &format!("'-m', 'uvicorn', 'app:app', '--host', '127.0.0.1', '--port', '{port}'"),
        port,
        "on_change = \"restart\"",
    );
    w.healthy();
    let first = w.status()["pid"].as_u64().unwrap();
    assert!(http_get(port, "/version").unwrap().1.contains("\"v1\""));
    let file = app.path().join("app.py");
    let text = std::fs::read_to_string(&file).unwrap();
    for n in 2..=11 {
        touch(
            &file,
            &text.replace("VERSION = \"v1\"", &format!("VERSION = \"v{n}\"")),
        );
        std::thread::sleep(Duration::from_millis(20)); // a burst of saves, as an editor makes
    }
    w.expect_or_dump(&["restarting the backend to load changed code"], SECS(5));
    let status = w.wait_state("healthy", SECS(30));
    wait_until(SECS(20), "the new code served", || {
        http_get(port, "/version")
            .filter(|(_, body)| body.contains("\"v11\""))
            .map(|_| ())
    });
    assert_ne!(status["pid"].as_u64().unwrap(), first);
    assert!(status["stale"].is_null());
    // Exactly one restart for the burst.
    std::thread::sleep(Duration::from_millis(700)); // longer than the debounce: a second restart would show
    assert_eq!(w.count(&["backend started"]), 2, "{}", w.output());
    assert_eq!(w.count(&["restarting the backend to load changed code"]), 1);
    assert!(!alive(first as u32), "the old tree is gone");
    assert!(w.terminate().success());
}

#[test]
fn excluded_paths_never_count() {
    let port = free_port();
    let (mut w, app) = warden(
        "tiny_backend.py",
        &format!("'main.py', '--port', '{port}'"),
        port,
        "on_change = \"restart\"",
    );
    w.healthy();
    for rel in [
        "__pycache__/main.cpython-311.pyc",
        "api/__pycache__/x.py",
        ".venv/lib/python3.11/site-packages/x.py",
        "node_modules/x/package.json",
        ".git/index",
        "logs/x.py",
        "notes.md",
    ] {
        touch(&app.path().join(rel), "x");
    }
    // Nothing may happen within a few debounce periods...
    std::thread::sleep(Duration::from_millis(1200));
    assert!(stale(&w).is_null());
    assert_eq!(w.count(&["restarting the backend"]), 0, "{}", w.output());
    // ...while a watched file still counts (the watch is alive), even in a new folder.
    touch(&app.path().join("api/routes.py"), "x = 1\n");
    w.expect_or_dump(&["restarting the backend to load changed code"], SECS(5));
    assert!(w.terminate().success());
}
