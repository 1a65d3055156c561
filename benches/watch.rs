//! Watching stays cheap: idle CPU and memory of the code watch with a 50,000-file virtualenv
//! (excluded) beside 200 watched files, and the time from a save to the change report.
//! `cargo bench --bench watch` (add `-- --quick` for a 5 s idle period instead of 60 s).

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use backend_warden_core::backend::code_watch::{CodeWatch, WatchFilter};
use backend_warden_core::config::WatchConfig;

fn proc_self(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU time of this process.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn main() {
    // `cargo test --all-targets` runs bench targets too, without `--bench`: nothing to measure.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let idle = if quick {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(60)
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let t = Instant::now();
    for i in 0..200 {
        write(
            &root.join(format!("app/pkg{}/mod{i}.py", i % 20)),
            "x = 1\n",
        );
    }
    for i in 0..50_000 {
        write(
            &root.join(format!(
                ".venv/lib/python3.11/site-packages/p{}/f{i}.py",
                i % 500
            )),
            "",
        );
    }
    let made = t.elapsed();

    let config = WatchConfig::default();
    let filter = WatchFilter::new(
        vec![root.to_path_buf()],
        &config.include,
        &config.exclude,
        vec![root.join("logs")],
    )
    .unwrap();
    let rss_before = proc_self("VmRSS:");
    let (tx, changes) = mpsc::channel();
    let t = Instant::now();
    let watch = CodeWatch::start(filter, Duration::from_millis(100), move |files, count| {
        let _ = tx.send((Instant::now(), files, count));
    })
    .unwrap();
    let setup = t.elapsed();
    let rss_watching = proc_self("VmRSS:");

    let cpu0 = cpu_time();
    std::thread::sleep(idle); // the idle period being measured
    let idle_cpu = cpu_time() - cpu0;
    let rss_idle = proc_self("VmRSS:");

    let saved = Instant::now();
    write(&root.join("app/pkg3/mod3.py"), "x = 2\n");
    let (at, files, _) = changes.recv_timeout(Duration::from_secs(10)).unwrap();
    let report = at.duration_since(saved);

    println!("code watch: 200 watched files beside a 50,000-file excluded virtualenv");
    println!("(made in {made:.1?}; Linux, inotify, one watch per folder)");
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| folders watched | {} (the venv's 500+ folders are not) |",
        watch.watched_folders()
    );
    println!("| watch set-up time | {setup:.1?} |");
    println!(
        "| RSS added by the watch | {} KiB |",
        rss_watching.saturating_sub(rss_before)
    );
    println!("| idle CPU over {idle:?} | {idle_cpu:?} |");
    println!("| RSS after the idle period | {rss_idle} KiB |");
    println!("| save → change reported (debounce 100 ms) | {report:.1?} ({files:?}) |");
}
