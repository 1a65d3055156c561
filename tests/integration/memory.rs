//! Memory: an output flood and a huge line without a newline leave the warden's memory
//! bounded (the queue to the log writer is bounded; what does not fit is dropped and counted).

use std::thread;
use std::time::Instant;

use backend_warden_core::backend::backend_log::MAX_LINE;

use crate::support::*;

/// Resident memory of `pid` (VmRSS) and its peak (VmHWM), in bytes.
fn rss_and_peak(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

/// Runs `sh -c SCRIPT sh ARGS...` as the backend (no health URL: healthy after 1 s up).
fn sh_warden(script: &str, args: &[&str], extra: &str) -> Warden {
    let mut all = vec!["-c", script, "sh"];
    all.extend_from_slice(args);
    let args = toml_array(&all);
    Warden::start(&format!(
        "[backend]\ncommand = \"sh\"\nargs = {args}\n\n{extra}\n"
    ))
}

/// The RSS of the warden `pid` while `done` is false, sampled every 10 ms; returns (before,
/// peak). Call it as soon as the backend started: "before" is read 500 ms later, while the
/// backend's script still sleeps.
fn rss_during(pid: u32, mut done: impl FnMut() -> bool) -> (u64, u64) {
    thread::sleep(MS(500));
    let (before, _) = rss_and_peak(pid);
    let mut peak = before;
    wait_until(SECS(50), "the output to be written", || {
        peak = peak.max(rss_and_peak(pid).0);
        thread::sleep(MS(10));
        done().then_some(())
    });
    (before, peak.max(rss_and_peak(pid).1))
}

fn log_size(w: &Warden) -> u64 {
    std::fs::read_dir(w.home().join("logs"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("backend.log"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Bytes of output the writer dropped (and noted in the log) so far.
fn dropped_bytes(w: &Warden) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(w.home().join("logs")).unwrap().flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with("backend.log")
        {
            continue;
        }
        let text = std::fs::read(entry.path()).unwrap_or_default();
        for line in String::from_utf8_lossy(&text).lines() {
            if let Some((_, note)) = line.split_once(" wrd| ")
                && note.contains("bytes of output dropped")
            {
                total += note
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    total
}

/// 50 MB of lines as fast as the backend can write them: the warden's memory stays flat
/// (the queue to the writer is bounded; what does not fit is dropped and counted, never
/// buffered), and every byte is either in the log or counted as dropped.
#[test]
fn output_flood_keeps_warden_memory_flat() {
    const FLOOD: u64 = 50_000_000;
    let tag = tag("flood");
    let flood = FLOOD.to_string();
    let mut w = sh_warden(
        "sleep 1; exec \"$@\"",
        &[
            fake_backend(),
            "--no-serve",
            "--flood",
            &flood,
            "--tag",
            &tag,
        ],
        "[logs]\nmax_size = \"20MB\"\nkeep = 5\n",
    );
    let mut last = (0, Instant::now());
    w.started_pid();
    let (before, peak) = rss_during(w.pid(), || {
        // Done once the log has stopped growing for 300 ms after the flood began.
        let size = log_size(&w);
        if size != last.0 {
            last = (size, Instant::now());
        }
        size > 1_000_000 && last.1.elapsed() > MS(300)
    });
    let grew = peak.saturating_sub(before);
    assert!(
        grew <= 16 * 1024 * 1024,
        "the warden grew from {before} to {peak} bytes during the flood"
    );
    // Each 100-byte flood line is logged with a 30-byte prefix; dropped bytes are counted.
    let logged = log_size(&w);
    let dropped = dropped_bytes(&w);
    assert!(
        logged + dropped >= FLOOD,
        "{logged} bytes logged + {dropped} dropped < {FLOOD}"
    );
    eprintln!("flood: RSS {before} -> peak {peak}; {logged} bytes logged, {dropped} dropped");
    assert_eq!(w.status()["state"], "healthy");
    assert!(w.terminate().success());
    wait_none_with_tag(&tag, SECS(2));
}

/// A 32 MiB line without a newline: written as 64 KiB pieces, and the warden never holds
/// the line (its growth stays far below the line's size). Every piece is in the log or was
/// dropped and counted (`status` → `logs.dropped_lines`): a writer slowed by a busy machine
/// drops pieces rather than buffer them, and the note of the bytes dropped is written only
/// before a next line, which this backend never prints.
#[test]
fn a_huge_line_without_newline_keeps_warden_memory_bounded() {
    const LINE: u64 = 32 * 1024 * 1024;
    const PIECES: u64 = LINE / MAX_LINE as u64;
    let tag = tag("hugeline");
    let mut w = sh_warden(
        &format!("sleep 1; head -c {LINE} /dev/zero | tr \\\\000 x; exec sleep 600"),
        &[&tag],
        "[logs]\nmax_size = \"100MB\"\n",
    );
    w.started_pid();
    let dropped = |w: &Warden| w.status()["logs"]["dropped_lines"].as_u64().unwrap();
    // Done once every piece is written or dropped. The log alone says so while nothing is
    // dropped; once it stops growing short of the line, ask `status` (every 300 ms at most).
    let mut last = (0, Instant::now());
    let (before, peak) = rss_during(w.pid(), || {
        let size = log_size(&w);
        if size >= LINE {
            return true;
        }
        if size != last.0 {
            last = (size, Instant::now());
            return false;
        }
        if last.1.elapsed() < MS(300) {
            return false;
        }
        last.1 = Instant::now();
        size + dropped(&w) * MAX_LINE as u64 >= LINE
    });
    let grew = peak.saturating_sub(before);
    assert!(
        grew <= 16 * 1024 * 1024,
        "the warden grew from {before} to {peak} bytes for a 32 MiB line"
    );
    let log = std::fs::read(w.log_path("backend.log")).unwrap();
    let pieces = String::from_utf8_lossy(&log)
        .lines()
        .filter(|l| l.contains(" out\\ "))
        .count() as u64;
    let dropped = dropped(&w);
    eprintln!("huge line: RSS {before} -> peak {peak}; {pieces} pieces logged, {dropped} dropped");
    assert_eq!(
        pieces + dropped,
        PIECES,
        "32 MiB in 64 KiB pieces: {pieces} logged, {dropped} dropped"
    );
    assert!(w.terminate().success());
}
