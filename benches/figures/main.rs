//! `cargo bench --bench figures [-- --quick]`: the figures of issue 7, measured against the
//! release binary with real processes, printed as a table next to the targets and the figures
//! PM2, supervisord and circus reach. Timings never fail the run: a missed target is printed
//! as "MISSED" and the run still exits 0 (it exits non-zero only if a scenario cannot be run
//! at all, e.g. the warden does not start).
//!
//! Crash and stop times come from the warden's own log timestamps (RFC 3339, microseconds)
//! compared with the wall clock read right before the bench sends the signal or request, so
//! polling by the bench adds nothing to them. Linux only (reads /proc).

#[cfg(target_os = "linux")]
#[path = "../../tests/integration/support.rs"]
#[allow(dead_code)]
mod support;

#[cfg(target_os = "linux")]
mod machine;
#[cfg(target_os = "linux")]
mod scenarios;
#[cfg(target_os = "linux")]
mod table;

#[cfg(target_os = "linux")]
fn main() {
    // The `spawn` scenario launches through `process::launch` in this process, whose guardian
    // is this very binary.
    if std::env::args().nth(1).as_deref()
        == Some(backend_warden_core::backend::process::GUARDIAN_SUBCOMMAND)
    {
        std::process::exit(backend_warden_core::backend::process::guardian_main());
    }
    // `cargo test --all-targets` runs bench targets too, without `--bench`: nothing to measure.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    // `cargo bench` passes `--bench`; any other argument that is not a flag selects
    // scenarios by substring (e.g. `cargo bench --bench figures -- idle`).
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let settings = scenarios::Settings::new(quick, only);
    let started = std::time::Instant::now();
    let machine = machine::Machine::read();
    eprintln!(
        "figures: {} runs per timing, idle window {:?}{}",
        settings.runs,
        settings.idle_window,
        if quick { " (--quick)" } else { "" }
    );
    let rows = scenarios::run_all(&settings);
    println!();
    println!("{}", machine.describe());
    println!(
        "mode: {}; median of {} runs unless the figure says otherwise; took {:.0} s",
        if quick { "--quick" } else { "full" },
        settings.runs,
        started.elapsed().as_secs_f64()
    );
    println!();
    println!("{}", table::render(&rows));
    let missed = rows
        .iter()
        .filter(|r| r.verdict == table::Verdict::Missed)
        .count();
    if missed > 0 {
        println!("{missed} target(s) missed (reported, not a failure: timings never fail the run)");
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("figures: the benchmarks read /proc and run on Linux only");
}
