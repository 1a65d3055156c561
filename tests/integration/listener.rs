//! A listener that is not the backend's is never taken for it: another user's server on the
//! port blocks the start with that reason, and a server outside the backend's tree that
//! answers the health check does not make the backend healthy.

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::Command;

use crate::support::*;

#[test]
fn a_server_outside_the_tree_answering_the_health_check_is_not_the_backend() {
    let port = free_port();
    let tag = tag("impostor");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/impostor_backend.py");
    let config = format!(
        "[backend]\ncommand = {py}\nargs = [{script}, '{port}', '{tag}']\nport = {port}\n\n\
         [health]\nurl = \"http://127.0.0.1:{port}/health\"\ninterval = \"200ms\"\n\
         start_timeout = \"3s\"\n",
        py = toml_str(&python().to_string_lossy()),
        script = toml_str(&script.to_string_lossy()),
    );
    let w = Warden::start(&config);
    // The detached server answers 200 on the port...
    wait_until(SECS(20), "the impostor answering", || {
        http_get(port, "/health").filter(|(code, _)| *code == 200)
    });
    // ...but the backend is not healthy, and status says why.
    let status = wait_until(SECS(10), "the reason in status", || {
        let status = w.status();
        status["health"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("its listener is not this backend"))
            .then_some(status)
    });
    assert_ne!(status["state"], "healthy", "{status:#}");
    let later = w.wait_state("unhealthy", SECS(10));
    assert_ne!(later["health"]["ok"], true, "{later:#}");
    for pid in live_with_tag(&tag) {
        sigkill(pid);
    }
}

#[test]
fn another_users_server_on_the_port_blocks_the_start_with_that_reason() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run the warden as another user (nobody)");
        return;
    }
    // Held by root; the warden runs as nobody, who cannot see root's sockets' owner.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        fake_config(&tag("foreign"), port, &[], ""),
    )
    .unwrap();
    as_nobody_owns(home.path());
    let mut warden = nobody(home.path(), &["run", "--headless"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_until(SECS(20), "the warden failed", || {
        let out = nobody(home.path(), &["status", "--json"]).output().ok()?;
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (status["state"] == "failed").then_some(status)
    });
    let reason = status["failed_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!(
            "port {port} is held by a process of another user, or one this user cannot see"
        )),
        "{status:#}"
    );
    assert!(status["pid"].is_null(), "nothing was spawned: {status:#}");
    let _ = nobody(home.path(), &["quit"]).output();
    let _ = warden.wait();
    drop(listener);
}

/// `backend-warden ARGS` as the user nobody, in `home`.
fn nobody(home: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(exe())
        .args(args)
        .env("BACKEND_WARDEN_HOME", home)
        .env("XDG_RUNTIME_DIR", home.join("xdg-run"));
    command
}

/// Gives `home` (and the folders the binary lives in, for reading) to nobody.
fn as_nobody_owns(home: &Path) {
    std::fs::create_dir_all(home.join("xdg-run")).unwrap();
    let status = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(home)
        .status()
        .unwrap();
    assert!(status.success());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700)).unwrap();
}
