//! Against real uvicorn with `--reload`: the reloader/worker pair that left orphan workers
//! serving stale code in the incident this tool exists for.

use crate::support::*;

/// A warden supervising `uvicorn app:app --reload` on a copy of the test app.
fn uvicorn_warden() -> (Warden, u16, tempfile::TempDir) {
    let app = fastapi_app();
    let port = free_port();
    let config = format!(
        "[backend]\ncommand = {py}\n\
         args = ['-m', 'uvicorn', 'app:app', '--reload', '--host', '127.0.0.1', '--port', '{port}']\n\
         cwd = {cwd}\nport = {port}\n\n\
         [health]\nurl = \"http://127.0.0.1:{port}/health\"\ninterval = \"200ms\"\n\n\
         [restart]\nbackoff_initial = \"0ms\"\n\n[stop]\ngrace = \"5s\"\n",
        py = toml_str(&python().to_string_lossy()),
        cwd = toml_str(&app.path().to_string_lossy()),
    );
    (Warden::start(&config), port, app)
}

/// The reloader (the warden's direct child) and its worker, once both run.
fn reloader_and_worker(w: &mut Warden) -> (u32, Vec<u32>) {
    let reloader = w.started_pid();
    w.healthy();
    let group = wait_until(SECS(20), "reloader + worker", || {
        let live = live_in_group(reloader);
        (live.len() >= 2).then_some(live)
    });
    (reloader, group)
}

#[test]
fn stop_leaves_no_python_process_of_the_tree() {
    let (mut w, port, _app) = uvicorn_warden();
    let (_, group) = reloader_and_worker(&mut w);
    assert_eq!(http_get(port, "/version").map(|r| r.0), Some(200));
    assert!(w.terminate().success(), "{}", w.output());
    let line = w.expect(&["backend stopped"], SECS(1));
    assert!(
        line.contains("forced=false"),
        "uvicorn honours SIGTERM: {line}"
    );
    for pid in group {
        assert!(!alive(pid), "{pid} survived the stop");
    }
    assert!(
        http_get(port, "/health").is_none(),
        "nothing serves the port"
    );
}

#[test]
fn killing_the_reloader_kills_the_worker_and_restarts_healthy() {
    let (mut w, port, _app) = uvicorn_warden();
    let (reloader, group) = reloader_and_worker(&mut w);
    let (_, body) = http_get(port, "/version").unwrap();
    sigkill(reloader);
    w.expect_or_dump(&["backend crashed", "SIGKILL"], SECS(5));
    let new_reloader = w.started_pid();
    // Before the new tree exists the old worker is gone: it never serves stale code.
    for pid in &group {
        assert!(!alive(*pid), "orphaned worker {pid} survived");
    }
    w.healthy();
    let (code, new_body) = http_get(port, "/version").unwrap();
    assert_eq!(code, 200);
    assert_ne!(new_body, body, "a new worker (new pid) answers");
    assert!(live_in_group(new_reloader).len() >= 2);
    assert!(w.terminate().success());
}

#[test]
fn killing_the_warden_leaves_nothing_of_the_tree() {
    let (mut w, port, _app) = uvicorn_warden();
    let (_, group) = reloader_and_worker(&mut w);
    sigkill(w.pid());
    w.wait_exit(SECS(5));
    wait_until(SECS(1), "the whole tree to die", || {
        group.iter().all(|pid| !alive(*pid)).then_some(())
    });
    assert!(http_get(port, "/health").is_none());
}
