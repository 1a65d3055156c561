//! Health checks while a backend starts: no HTTP before its port listens, a handful of
//! requests (not thousands) while `/health` answers 503, and `healthy` soon after the first
//! 200. Against `tests/fixtures/counting_backend.py`, which records every request it gets.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::*;

/// One request the fake backend got.
#[derive(Debug)]
struct Request {
    at: SystemTime,
    status: u16,
    path: String,
    agent: String,
}

/// What the fake backend recorded: when it began to listen, and the requests.
#[derive(Debug, Default)]
struct Record {
    listening: Option<SystemTime>,
    requests: Vec<Request>,
}

fn epoch(text: &str) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs_f64(text.parse().unwrap())
}

fn read_record(path: &Path) -> Record {
    let mut record = Record::default();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let mut words = line.splitn(4, ' ');
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("listening"), Some(at), None, None) => record.listening = Some(epoch(at)),
            (Some(at), Some(status), Some(path), Some(agent)) => record.requests.push(Request {
                at: epoch(at),
                status: status.parse().unwrap(),
                path: path.to_string(),
                agent: agent.to_string(),
            }),
            _ => {} // a line being written
        }
    }
    record
}

/// A warden running the counting backend with `args` on a fresh port (health interval left
/// at its default); returns it, the port and the record file.
fn counting_warden(args: &[&str]) -> (Warden, u16, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("requests.txt");
    let port = free_port();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/counting_backend.py"
    );
    let port_text = port.to_string();
    let record_text = record.to_string_lossy().into_owned();
    let mut all = vec![script, "--port", &port_text, "--record", &record_text];
    all.extend_from_slice(args);
    let args = toml_array(&all);
    let config = format!(
        "[backend]\ncommand = {py}\nargs = {args}\nport = {port}\n\n\
         [health]\nurl = \"http://127.0.0.1:{port}/health\"\n",
        py = toml_str(&python().to_string_lossy()),
    );
    (Warden::start(&config), port, record, dir)
}

fn stamp(line: &str) -> SystemTime {
    let token = line.split_whitespace().next().unwrap_or("");
    humantime::parse_rfc3339_weak(token).unwrap_or_else(|e| panic!("no timestamp in {line:?}: {e}"))
}

fn user_agent() -> String {
    format!(
        "backend-warden/{} (health check)",
        env!("CARGO_PKG_VERSION")
    )
}

#[test]
fn a_start_answering_503_gets_a_few_probes_and_is_healthy_soon_after_its_first_200() {
    let (mut w, _port, record, _dir) = counting_warden(&["--fail-for", "5"]);
    w.started_pid();
    // While it answers 503: the menu's and status's words for it.
    let status = wait_until(SECS(10), "a failed probe in status", || {
        let status = w.status();
        (status["health"]["ok"] == false).then_some(status)
    });
    assert_eq!(status["state"], "starting");
    assert_eq!(
        status["health"]["failure"],
        "/health answered 503 Service Unavailable"
    );
    let human = String::from_utf8(w.cli(&["status"]).stdout).unwrap();
    assert!(
        human.contains("health     failing: /health answered 503 Service Unavailable"),
        "{human}"
    );

    let healthy = w.healthy();
    let record = read_record(&record);
    let listening = record.listening.expect("the backend listened");
    let first_ok = record
        .requests
        .iter()
        .find(|r| r.status == 200)
        .expect("a 200 was answered");
    let failing: Vec<&Request> = record.requests.iter().filter(|r| r.status == 503).collect();
    // Doubling spacing from 3 ms: 11 requests in the 5 s (every 3 ms: over 1,500).
    assert!(
        (3..=12).contains(&failing.len()),
        "{} requests while it answered 503: {:?}",
        failing.len(),
        record.requests
    );
    assert!(failing.iter().all(|r| r.at < listening + SECS(5)));
    for request in &record.requests {
        assert_eq!(request.path, "/health");
        assert_eq!(request.agent, user_agent());
    }
    // Healthy right after the first 200 (the exact figure is in the benchmark).
    let after = stamp(&healthy)
        .duration_since(first_ok.at)
        .unwrap_or_default();
    assert!(
        after < SECS(1),
        "healthy {after:?} after the first 200\n{}",
        w.output()
    );
    assert!(w.terminate().success());
}

#[test]
fn no_http_request_before_the_port_listens() {
    let (mut w, port, record, _dir) = counting_warden(&["--listen-after", "2"]);
    w.started_pid();
    let mut waiting_seen = 0;
    let mut words_seen = false;
    loop {
        let human = String::from_utf8(w.cli(&["status"]).stdout).unwrap();
        let status = w.status();
        let listened = read_record(&record).listening.is_some();
        // A probe before the port listened would have failed ("connection refused").
        assert_ne!(
            status["health"]["ok"], false,
            "an HTTP probe failed while the backend started: {status}"
        );
        if listened {
            break;
        }
        // Both answers were taken before the backend listened.
        assert_eq!(status["state"], "starting");
        assert_eq!(status["health"]["ok"], serde_json::Value::Null);
        assert_eq!(status["health"]["listening"], false);
        waiting_seen += 1;
        words_seen |= human.contains(&format!("health     waiting for port {port} to listen"));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(waiting_seen >= 3, "status read only {waiting_seen} times");
    assert!(words_seen, "status never said it waits for the port");
    w.healthy();
    let record = read_record(&record);
    let listening = record.listening.unwrap();
    assert!(!record.requests.is_empty());
    assert!(
        record.requests.iter().all(|r| r.at >= listening),
        "{record:?}"
    );
    assert_eq!(w.status()["health"]["listening"], true);
    assert!(w.terminate().success());
}
