//! Issue 19: hostile config values, planted symlinks, a stopped or flooded warden, lost log
//! lines. Each test names the promise of the README's "What it guarantees" it holds.

use std::time::Duration;

use crate::support::*;

const SECS: fn(u64) -> Duration = Duration::from_secs;

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
    let config = demo_config(&tag, port, &[], "");
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
