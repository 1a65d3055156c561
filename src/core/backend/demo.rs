//! The built-in demo backend: `backend-warden demo-backend --port N` (a hidden subcommand) is a
//! tiny HTTP backend to supervise with zero setup. It answers `/health` and `/` on 127.0.0.1
//! and stops cleanly on SIGTERM or Ctrl+C. May import `tiny_http`, `nix` (signals) and
//! `anyhow`; knows nothing of the warden.
//!
//! Its server and stop flag are public so that the tests' fake backend (`tests/fake_backend`,
//! which misbehaves on purpose) serves the same way; the demo itself has no misbehaviour.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};

/// How long the main loop may go without looking at the stop flag.
pub const TICK: Duration = Duration::from_millis(50);

/// Set from the signal handler when SIGTERM or SIGINT arrives.
static STOP: AtomicBool = AtomicBool::new(false);

/// Flags of the hidden `demo-backend` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Port to listen on at 127.0.0.1 (0 = any free port).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub port: u16,
}

/// Runs the demo backend until it is told to stop (SIGTERM/Ctrl+C).
pub fn run(args: DemoArgs) -> Result<()> {
    stop_on_signals()?;
    let server = DemoServer::listen(args.port)?;
    let pid = std::process::id();
    announce(&format!(
        "demo backend listening on http://127.0.0.1:{} (pid {pid})",
        server.port()
    ))?;
    while !stop_requested() {
        if let Some(request) = server.next(TICK) {
            server.answer(request, true);
        }
    }
    // A closed stderr is no reason to fail a clean stop.
    let _ = writeln!(io::stderr(), "demo backend: stopping (pid {pid})");
    Ok(())
}

/// Writes `line` to stdout at once (the warden's log shows it as soon as it is written).
pub fn announce(line: &str) -> Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .context("the backend cannot write to stdout")
}

/// Whether SIGTERM or SIGINT has arrived since [`stop_on_signals`].
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// The demo's HTTP side: listens on 127.0.0.1, answers `GET /health` (a small JSON body with
/// the PID) and `GET /`, and 404 to anything else.
pub struct DemoServer {
    server: tiny_http::Server,
    port: u16,
    pid: u32,
}

impl DemoServer {
    /// Listens on 127.0.0.1:`port` (0 = any free port).
    pub fn listen(port: u16) -> Result<DemoServer> {
        let addr = format!("127.0.0.1:{port}");
        let server = tiny_http::Server::http(addr.as_str())
            .map_err(|e| anyhow!("the backend cannot listen on {addr}: {e}"))?;
        let port = server
            .server_addr()
            .to_ip()
            .map(|a| a.port())
            .ok_or_else(|| anyhow!("the backend listening on {addr} has no IP address"))?;
        Ok(DemoServer {
            server,
            port,
            pid: std::process::id(),
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The next request, waiting `timeout` at most. An accept error (e.g. out of file
    /// descriptors) is printed and waited out: the server keeps going.
    pub fn next(&self, timeout: Duration) -> Option<tiny_http::Request> {
        match self.server.recv_timeout(timeout) {
            Ok(request) => request,
            Err(e) => {
                let _ = writeln!(io::stderr(), "backend: accept error: {e}");
                std::thread::sleep(timeout);
                None
            }
        }
    }

    /// Answers `request`; with `healthy` false, `/health` answers 503.
    pub fn answer(&self, request: tiny_http::Request, healthy: bool) {
        let response = respond_to(request.method(), request.url(), healthy, self.pid);
        // A client that went away is its own problem, not the backend's.
        let _ = request.respond(response);
    }
}

/// Builds the answer to one request.
fn respond_to(
    method: &tiny_http::Method,
    url: &str,
    healthy: bool,
    pid: u32,
) -> tiny_http::Response<io::Cursor<Vec<u8>>> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    if *method != tiny_http::Method::Get {
        return tiny_http::Response::from_string("not found\n").with_status_code(404);
    }
    match path {
        "/health" => {
            let (status, code) = if healthy {
                ("ok", 200)
            } else {
                ("unhealthy", 503)
            };
            let body = format!("{{\"status\":\"{status}\",\"pid\":{pid}}}");
            let response = tiny_http::Response::from_string(body).with_status_code(code);
            match "Content-Type: application/json".parse::<tiny_http::Header>() {
                Ok(header) => response.with_header(header),
                Err(()) => response,
            }
        }
        "/" => {
            tiny_http::Response::from_string(format!("backend-warden demo backend (pid {pid})\n"))
        }
        _ => tiny_http::Response::from_string("not found\n").with_status_code(404),
    }
}

/// Signal handler: only stores to an atomic, which is async-signal-safe.
#[cfg(unix)]
extern "C" fn on_stop_signal(_signal: std::ffi::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM set the stop flag ([`stop_requested`]).
#[cfg(unix)]
pub fn stop_on_signals() -> Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

    let stop = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to a static atomic (async-signal-safe), and no other
    // code in this process manages these signals.
    unsafe {
        sigaction(Signal::SIGINT, &stop).context("the backend cannot handle SIGINT")?;
        sigaction(Signal::SIGTERM, &stop).context("the backend cannot handle SIGTERM")?;
    }
    Ok(())
}

/// On Windows the process keeps the default console behaviour: Ctrl+C ends it at once.
#[cfg(not(unix))]
pub fn stop_on_signals() -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_and_root_answer_and_anything_else_is_404() {
        let get = tiny_http::Method::Get;
        let ok = respond_to(&get, "/health?x=1", true, 7);
        assert_eq!(ok.status_code().0, 200);
        assert_eq!(respond_to(&get, "/health", false, 7).status_code().0, 503);
        assert_eq!(respond_to(&get, "/", true, 7).status_code().0, 200);
        assert_eq!(respond_to(&get, "/version", true, 7).status_code().0, 404);
        let post = tiny_http::Method::Post;
        assert_eq!(respond_to(&post, "/health", true, 7).status_code().0, 404);
    }
}
