//! Faults: the log folder replaced by a file, a full disk, a hung health endpoint, a crash
//! whose child holds the output pipes. Supervision goes on and each fault is reported as it is.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use backend_warden_core::engine::supervisor::Command as EngineCommand;
use backend_warden_core::ipc::{self, Request, Response};

use crate::support::*;

/// Crashes the current backend and waits until its successor is healthy; returns the new PID.
fn crash_and_recover(w: &Warden, pid: u32) -> u32 {
    sigkill(pid);
    let status = w.wait_healthy_after(pid, SECS(50));
    status["pid"].as_u64().unwrap() as u32
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
    let config = fake_config(
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
        pid = crash_and_recover(&w, pid);
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
    crash_and_recover(&w, pid);
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
        fake_config(
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
        pid = crash_and_recover(&w, pid);
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

/// The health endpoint starts to hang (accepts, never answers): every probe is given up
/// after `timeout`, `unhealthy` comes within unhealthy_after × (interval + timeout) plus
/// slack, and meanwhile the engine answers status at once and restarts on request.
#[test]
fn hung_health_endpoint_times_out_and_the_engine_does_not_stall() {
    let tag = tag("hang");
    let port = free_port();
    let (interval, timeout, after) = (MS(200), MS(300), 3u32);
    let config = format!(
        "[backend]\ncommand = {fake}\nargs = {args}\nport = {port}\n\n\
         [health]\nurl = \"http://127.0.0.1:{port}/health\"\ninterval = \"200ms\"\n\
         timeout = \"300ms\"\nunhealthy_after = 3\n",
        fake = toml_str(fake_backend()),
        args = toml_array(&[
            "--port",
            &port.to_string(),
            "--hang-health-after",
            "1000",
            "--tag",
            &tag
        ]),
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
    let config = fake_config(
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
