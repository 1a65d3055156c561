//! The tests' fake backend (example target `fake-backend`, never shipped): the demo backend's
//! server with flags that make it misbehave on purpose. The integration tests, the benchmarks,
//! the tray end-to-end test and the Wine checks run it as the backend they supervise.
//!
//! Misbehaviours: slow start, crash, turning unhealthy, a hung health endpoint, ignoring
//! SIGTERM, spawning a process tree, flooding stdout or writing binary output.
//!
//! Order of events: install the stop-signal handlers; write the start output (`--say`,
//! `--say-err`, `--raw-hex`, `--flood`, in that order); spawn the `--children`; wait out
//! `--start-delay`; listen (unless `--no-serve`) and serve until stopped. The `--exit-after`
//! deadline counts from the start and is checked after the start output, during the start
//! delay and in the serving/waiting loop, every 50 ms at most.

use std::io::{self, BufWriter, Write};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use backend_warden_core::backend::demo::{self, DemoServer, TICK};
use backend_warden_core::clock::later;
use clap::Parser;

/// Size of one `--flood` line in bytes, newline included.
const FLOOD_LINE_LEN: usize = 100;

/// `fake-backend [flags]`: a backend that misbehaves as told.
#[derive(Debug, Clone, Parser)]
#[command(name = "fake-backend")]
struct Args {
    /// Port to listen on at 127.0.0.1 (0 = any free port).
    #[arg(long, value_name = "N", default_value_t = 0)]
    port: u16,

    /// Do not listen at all; just run until stopped (used for child processes).
    #[arg(long)]
    no_serve: bool,

    /// Sleep this many milliseconds before listening (a slow start).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    start_delay: u64,

    /// Exit with --exit-code this many milliseconds after start (0 = at once).
    #[arg(long, value_name = "MS")]
    exit_after: Option<u64>,

    /// Exit code used by --exit-after.
    #[arg(
        long,
        value_name = "C",
        default_value_t = 1,
        allow_negative_numbers = true
    )]
    exit_code: i32,

    /// After this many milliseconds from start, /health answers 503.
    #[arg(long, value_name = "MS")]
    unhealthy_after: Option<u64>,

    /// After this many milliseconds from start, /health requests are accepted but never
    /// answered (a hung endpoint); other paths still answer.
    #[arg(long, value_name = "MS")]
    hang_health_after: Option<u64>,

    /// Ignore SIGTERM (inherited by children); only SIGINT or SIGKILL stop it. No-op on Windows.
    #[arg(long)]
    ignore_term: bool,

    /// Spawn this many child processes (copies of this program with --no-serve) before listening.
    #[arg(long, value_name = "N", default_value_t = 0)]
    children: u32,

    /// Number of children each child spawns in turn.
    #[arg(long, value_name = "M", default_value_t = 0)]
    grandchildren: u32,

    /// Ignored; only marks the command line (passed on to children) so tests can find the tree.
    #[arg(long, value_name = "STRING")]
    tag: Option<String>,

    /// Print TEXT as a line on stdout at start (repeatable).
    #[arg(long, value_name = "TEXT")]
    say: Vec<String>,

    /// Print TEXT as a line on stderr at start (repeatable).
    #[arg(long, value_name = "TEXT")]
    say_err: Vec<String>,

    /// Write these hex-decoded bytes to stdout at start, as they are (no newline added).
    #[arg(long, value_name = "HEX")]
    raw_hex: Option<String>,

    /// Write this many bytes of numbered 100-byte text lines to stdout at start, as fast as possible.
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    flood: u64,
}

/// Why waiting ended early.
enum Interrupt {
    /// A stop signal arrived.
    Stop,
    /// The `--exit-after` deadline passed.
    Exit,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            let _ = writeln!(io::stderr(), "fake backend: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs until told to stop (SIGTERM/Ctrl+C) or a flag makes it exit; returns the exit code.
fn run(args: Args) -> Result<i32> {
    let start = Instant::now();
    let pid = std::process::id();
    let at = |ms: Option<u64>| ms.map(|ms| later(start, Duration::from_millis(ms)));
    let exit_at = at(args.exit_after);
    // Validate before doing anything visible.
    let raw = args.raw_hex.as_deref().map(decode_hex).transpose()?;

    demo::stop_on_signals()?;
    if args.ignore_term {
        ignore_sigterm()?;
    }

    write_start_output(&args, raw.as_deref())?;
    if let Some(done) = check(exit_at) {
        return Ok(finish(done, pid, args.exit_code));
    }

    spawn_children(&args)?;

    if let Err(done) = sleep_until(
        later(start, Duration::from_millis(args.start_delay)),
        exit_at,
    ) {
        return Ok(finish(done, pid, args.exit_code));
    }

    let done = if args.no_serve {
        wait_forever(exit_at)
    } else {
        serve(
            &args,
            pid,
            exit_at,
            at(args.unhealthy_after),
            at(args.hang_health_after),
        )?
    };
    Ok(finish(done, pid, args.exit_code))
}

/// Prints the farewell for `done` on stderr and returns the exit code to use.
fn finish(done: Interrupt, pid: u32, exit_code: i32) -> i32 {
    // The exit code matters more than the message: a closed stderr is no reason to fail.
    let mut err = io::stderr().lock();
    match done {
        Interrupt::Stop => {
            let _ = writeln!(err, "fake backend: stopping (pid {pid})");
            0
        }
        Interrupt::Exit => {
            let _ = writeln!(err, "fake backend: exiting with code {exit_code} as asked");
            exit_code
        }
    }
}

/// Returns why to stop now, if there is a reason.
fn check(exit_at: Option<Instant>) -> Option<Interrupt> {
    if demo::stop_requested() {
        Some(Interrupt::Stop)
    } else if exit_at.is_some_and(|at| Instant::now() >= at) {
        Some(Interrupt::Exit)
    } else {
        None
    }
}

/// How long to block before looking at the flags again: at most [`TICK`], less if the exit
/// deadline is nearer.
fn tick(exit_at: Option<Instant>) -> Duration {
    match exit_at {
        Some(at) => at.saturating_duration_since(Instant::now()).min(TICK),
        None => TICK,
    }
}

/// Sleeps until `until` in steps of at most [`TICK`], unless a stop or the exit deadline
/// comes first.
fn sleep_until(until: Instant, exit_at: Option<Instant>) -> Result<(), Interrupt> {
    loop {
        if let Some(done) = check(exit_at) {
            return Err(done);
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(tick(exit_at)));
    }
}

/// The `--no-serve` main loop: waits for a stop or the exit deadline.
fn wait_forever(exit_at: Option<Instant>) -> Interrupt {
    loop {
        if let Some(done) = check(exit_at) {
            return done;
        }
        std::thread::sleep(tick(exit_at));
    }
}

/// Listens on 127.0.0.1 and answers requests until a stop or the exit deadline; /health
/// answers 503 from `unhealthy_at` on and hangs from `hang_at` on.
fn serve(
    args: &Args,
    pid: u32,
    exit_at: Option<Instant>,
    unhealthy_at: Option<Instant>,
    hang_at: Option<Instant>,
) -> Result<Interrupt> {
    let server = DemoServer::listen(args.port)?;
    demo::announce(&format!(
        "fake backend listening on http://127.0.0.1:{} (pid {pid})",
        server.port()
    ))?;
    // Health requests held open, never answered (--hang-health-after); closed on exit.
    let mut hung: Vec<tiny_http::Request> = Vec::new();
    loop {
        if let Some(done) = check(exit_at) {
            return Ok(done);
        }
        let Some(request) = server.next(tick(exit_at)) else {
            continue;
        };
        let now = Instant::now();
        if hang_at.is_some_and(|at| now >= at) && request.url().starts_with("/health") {
            hung.push(request);
        } else {
            server.answer(request, unhealthy_at.is_none_or(|at| now < at));
        }
    }
}

/// Writes `--say`, `--say-err`, `--raw-hex` and `--flood` output, in that order.
fn write_start_output(args: &Args, raw: Option<&[u8]>) -> Result<()> {
    {
        let mut out = io::stdout().lock();
        for text in &args.say {
            writeln!(out, "{text}").context("cannot write to stdout")?;
        }
        out.flush().context("cannot write to stdout")?;
    }
    {
        let mut err = io::stderr().lock();
        for text in &args.say_err {
            writeln!(err, "{text}").context("cannot write to stderr")?;
        }
        err.flush().context("cannot write to stderr")?;
    }
    if let Some(bytes) = raw {
        let mut out = io::stdout().lock();
        out.write_all(bytes)
            .and_then(|()| out.flush())
            .context("cannot write to stdout")?;
    }
    if args.flood > 0 {
        flood(io::stdout().lock(), args.flood).context("cannot write to stdout")?;
    }
    Ok(())
}

/// Writes exactly `total` bytes of lines `flood line 000001 xxx…\n`, each [`FLOOD_LINE_LEN`]
/// bytes; the last line is shortened (but still ends in a newline) to hit the total exactly.
fn flood(out: impl Write, total: u64) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let mut left = total;
    let mut line = Vec::with_capacity(FLOOD_LINE_LEN + 8);
    let mut n: u64 = 1;
    while left > 0 {
        line.clear();
        write!(line, "flood line {n:06} ")?;
        line.resize(line.len().max(FLOOD_LINE_LEN - 1), b'x');
        let take = usize::try_from(left).map_or(line.len() + 1, |l| l.min(line.len() + 1));
        line.truncate(take - 1);
        line.push(b'\n');
        out.write_all(&line)?;
        left -= take as u64;
        n += 1;
    }
    out.flush()
}

/// Decodes a hex string (upper or lower case, even length) into bytes.
fn decode_hex(hex: &str) -> Result<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let digits = hex.as_bytes();
    if !digits.len().is_multiple_of(2) {
        bail!("--raw-hex: {hex:?} has an odd number of hex digits");
    }
    digits
        .chunks_exact(2)
        .map(|pair| match (nibble(pair[0]), nibble(pair[1])) {
            (Some(hi), Some(lo)) => Ok(hi << 4 | lo),
            _ => Err(anyhow!("--raw-hex: {hex:?} is not hex")),
        })
        .collect()
}

/// Spawns `--children` copies of this program as `fake-backend --no-serve --children M`
/// (plus `--ignore-term` and `--tag` when given). They inherit stdout/stderr and are not
/// waited for.
fn spawn_children(args: &Args) -> Result<()> {
    if args.children == 0 {
        return Ok(());
    }
    let exe = std::env::current_exe().context("cannot find its own executable")?;
    for i in 0..args.children {
        let mut cmd = Command::new(&exe);
        cmd.arg("--no-serve")
            .arg("--children")
            .arg(args.grandchildren.to_string());
        if args.ignore_term {
            cmd.arg("--ignore-term");
        }
        if let Some(tag) = &args.tag {
            cmd.arg("--tag").arg(tag);
        }
        // Dropping the handle neither kills nor waits: the child lives on by itself.
        cmd.spawn().with_context(|| {
            format!(
                "cannot spawn child {} of {} ({})",
                i + 1,
                args.children,
                exe.display()
            )
        })?;
    }
    Ok(())
}

/// SIGTERM set to SIG_IGN, which exec'd children inherit.
#[cfg(unix)]
fn ignore_sigterm() -> Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: SIG_IGN installs no handler.
    unsafe { sigaction(Signal::SIGTERM, &ignore) }.context("cannot ignore SIGTERM")?;
    Ok(())
}

/// A no-op on Windows, where the demo's console behaviour stays (Ctrl+C ends it at once).
#[cfg(not(unix))]
fn ignore_sigterm() -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_decodes() {
        assert_eq!(decode_hex("00ffA0").unwrap(), vec![0, 255, 160]);
        assert_eq!(decode_hex("").unwrap(), Vec::<u8>::new());
        assert!(decode_hex("abc").is_err());
        assert!(decode_hex("zz").is_err());
    }

    #[test]
    fn flood_is_exact() {
        for total in [0u64, 1, 2, 99, 100, 101, 250, 12_345] {
            let mut buf = Vec::new();
            flood(&mut buf, total).unwrap();
            assert_eq!(buf.len() as u64, total, "total {total}");
            if total > 0 {
                assert_eq!(buf.last(), Some(&b'\n'));
            }
        }
        let mut buf = Vec::new();
        flood(&mut buf, 300).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("flood line 000001 xxx"));
        assert!(lines[2].starts_with("flood line 000003 xxx"));
        assert!(lines.iter().all(|l| l.len() == FLOOD_LINE_LEN - 1));
    }
}
