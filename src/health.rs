//! Health probes: one thread performs HTTP GETs against the backend's health URL so that a
//! slow or hanging endpoint never stalls the engine. May import `std`, `ureq` and the
//! supervisor's input types.

use std::net::SocketAddr;
use std::sync::mpsc::{self, Sender};
use std::thread;
use std::time::{Duration, Instant};

use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use crate::supervisor::{Pid, Probe};

/// Runs probes on its own thread; results come back through the callback.
#[derive(Debug, Clone)]
pub struct HealthProbe {
    requests: Sender<Pid>,
}

impl HealthProbe {
    /// Starts the probe thread for `url`; each probe gives up after `timeout`.
    pub fn start(
        url: String,
        timeout: Duration,
        on_result: impl Fn(Pid, Probe) + Send + 'static,
    ) -> std::io::Result<HealthProbe> {
        let (requests, pending) = mpsc::channel::<Pid>();
        thread::Builder::new()
            .name("health-probe".into())
            .spawn(move || {
                let mut prober = Prober::new(url, timeout);
                while let Ok(pid) = pending.recv() {
                    on_result(pid, prober.probe(pid));
                }
            })?;
        Ok(HealthProbe { requests })
    }

    /// Asks for one probe of `pid`'s health.
    pub fn request(&self, pid: Pid) {
        let _ = self.requests.send(pid);
    }
}

/// The probe's read buffer, and the most of response headers it accepts.
const PROBE_BUFFER: usize = 16 * 1024;

/// A fresh connection at least this often (in probes) while one is kept alive: a backend
/// that stops accepting connections but still serves an open one is noticed within as many
/// probes (30 s at the default 2 s interval).
const PROBES_PER_CONNECTION: u32 = 15;

/// Probes over one kept-alive connection per backend process: a probe every two seconds, all
/// day, then costs a request and its answer, not a TCP handshake and teardown besides. The
/// connection (its agent) belongs to one backend PID and is never used for another, so a probe
/// never talks to a process of an older tree.
struct Prober {
    url: String,
    timeout: Duration,
    current: Option<Connection>,
}

struct Connection {
    pid: Pid,
    agent: ureq::Agent,
    /// Probes made through this agent.
    probes: u32,
    /// The last probe succeeded, so the agent keeps an open connection to reuse.
    kept: bool,
}

impl Prober {
    fn new(url: String, timeout: Duration) -> Prober {
        Prober {
            url,
            timeout,
            current: None,
        }
    }

    fn probe(&mut self, pid: Pid) -> Probe {
        let reusable = self
            .current
            .as_ref()
            .is_some_and(|c| c.pid == pid && c.probes < PROBES_PER_CONNECTION);
        if !reusable {
            self.current = None;
        }
        let timeout = self.timeout;
        let connection = self
            .current
            .get_or_insert_with(|| Connection::new(pid, timeout));
        let reused = connection.kept;
        let mut result = connection.probe(&self.url);
        if reused && matches!(result, Err(ProbeError::Connection(_))) {
            // The kept connection was closed by the backend (its keep-alive timeout, or it
            // went away): only a failure on a new connection counts.
            *connection = Connection::new(pid, timeout);
            result = connection.probe(&self.url);
        }
        result.unwrap_or_else(|e| e.into_probe())
    }
}

impl Connection {
    fn new(pid: Pid, timeout: Duration) -> Connection {
        Connection {
            pid,
            agent: agent(timeout, true),
            probes: 0,
            kept: false,
        }
    }

    fn probe(&mut self, url: &str) -> Result<Probe, ProbeError> {
        self.probes += 1;
        let result = probe_once(&self.agent, url);
        self.kept = result.is_ok();
        result
    }
}

/// One probe of `url`, now, on the calling thread.
pub fn check_once(url: &str, timeout: Duration) -> Probe {
    probe_once(&agent(timeout, false), url).unwrap_or_else(|e| e.into_probe())
}

/// An agent for probes of `timeout`; with `keep_alive`, it keeps its connection open between
/// probes (for a few seconds, less than servers' usual keep-alive timeout: uvicorn's and
/// Node's are 5 s).
fn agent(timeout: Duration, keep_alive: bool) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        // Probes go to the loopback address; a proxy from the environment must not see them.
        .proxy(None)
        .max_idle_connections(usize::from(keep_alive))
        .max_idle_connections_per_host(usize::from(keep_alive))
        .max_idle_age(Duration::from_secs(4))
        // A health answer is a status line, a few headers and a small body: ureq's 128 KiB
        // buffers each way (zeroed, so all resident, for as long as the connection is kept)
        // would be most of the warden's memory.
        .max_response_header_size(PROBE_BUFFER)
        .input_buffer_size(PROBE_BUFFER)
        .output_buffer_size(PROBE_BUFFER / 4)
        .build();
    ureq::Agent::with_parts(config, DefaultConnector::new(), LiteralFirst::default())
}

/// ureq's resolver, minus a thread per probe: with a timeout set, its default resolver runs
/// every lookup on a new thread (to give up on a slow DNS server), even for `127.0.0.1`, which
/// needs no lookup at all. That thread was most of a probe's cost (a probe every 2 s, all day).
/// IP literals resolve here, on the calling thread; names still go to ureq's resolver.
#[derive(Debug, Default)]
struct LiteralFirst {
    names: DefaultResolver,
}

impl Resolver for LiteralFirst {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        // "host:port" with the scheme's default port filled in, as ureq's resolver builds it;
        // an IP literal (IPv6 in brackets) parses as a socket address as it is.
        let host_port = uri
            .scheme()
            .zip(uri.authority())
            .and_then(|(scheme, authority)| DefaultResolver::host_and_port(scheme, authority));
        // `localhost`: 127.0.0.1 first, then ::1. The system's order puts ::1 first, and on
        // Windows a refused loopback connection takes about 2 s (longer than the default probe
        // timeout), while most backends (uvicorn's default) listen on 127.0.0.1 only.
        if let Some((host, port)) = host_port.as_deref().and_then(|hp| hp.rsplit_once(':'))
            && host.eq_ignore_ascii_case("localhost")
            && let Ok(port) = port.parse::<u16>()
        {
            let mut addrs = self.empty();
            addrs.push(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)));
            addrs.push(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)));
            return Ok(addrs);
        }
        let literal = host_port.and_then(|addr| addr.parse::<SocketAddr>().ok());
        match literal {
            Some(addr) => {
                let mut addrs = self.empty();
                addrs.push(addr);
                Ok(addrs)
            }
            None => self.names.resolve(uri, config, timeout),
        }
    }
}

/// Why a probe failed.
#[derive(Debug)]
enum ProbeError {
    /// An answer, but not a 2xx one, or no answer in time: the backend's doing.
    Answer(String),
    /// The connection failed (refused, reset, closed before the answer, ...).
    Connection(String),
}

impl ProbeError {
    fn into_probe(self) -> Probe {
        match self {
            ProbeError::Answer(error) | ProbeError::Connection(error) => Probe::Failed { error },
        }
    }
}

fn probe_once(agent: &ureq::Agent, url: &str) -> Result<Probe, ProbeError> {
    let started = Instant::now();
    match agent.get(url).call() {
        Ok(response) if response.status().is_success() => {
            // Read the body to the end, so that the connection can be used again.
            let _ = response.into_body().read_to_vec();
            Ok(Probe::Ok {
                latency: started.elapsed(),
            })
        }
        Ok(response) => Err(ProbeError::Answer(format!(
            "{url} answered {}",
            response.status()
        ))),
        Err(ureq::Error::Timeout(_)) => Err(ProbeError::Answer(format!(
            "{url} did not answer within the timeout"
        ))),
        Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(ProbeError::Connection(format!("{url}: connection refused")))
        }
        Err(e) => Err(ProbeError::Connection(format!("{url}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn resolve(url: &str) -> Vec<SocketAddr> {
        let uri: ureq::http::Uri = url.parse().unwrap();
        let config = ureq::Agent::config_builder().build();
        let timeout = NextTimeout {
            after: ureq::unversioned::transport::time::Duration::from_secs(1),
            reason: ureq::Timeout::Resolve,
            ..NextTimeout::default()
        };
        LiteralFirst::default()
            .resolve(&uri, &config, timeout)
            .unwrap()
            .to_vec()
    }

    #[test]
    fn localhost_resolves_to_ipv4_loopback_first() {
        assert_eq!(
            resolve("http://localhost:54112/health"),
            [
                "127.0.0.1:54112".parse::<SocketAddr>().unwrap(),
                "[::1]:54112".parse().unwrap()
            ]
        );
        assert_eq!(resolve("http://LocalHost/").len(), 2);
    }

    #[test]
    fn literals_resolve_to_themselves_with_their_port() {
        assert_eq!(
            resolve("http://127.0.0.1:54112/health"),
            ["127.0.0.1:54112".parse().unwrap()]
        );
        assert_eq!(
            resolve("http://[::1]:8000/"),
            ["[::1]:8000".parse().unwrap()]
        );
        assert_eq!(
            resolve("http://10.1.2.3/x"),
            ["10.1.2.3:80".parse().unwrap()]
        );
    }

    /// A loopback HTTP/1.1 server answering 200; counts the connections it accepted. With
    /// `one_answer_per_connection` it closes a connection when a second request arrives on it,
    /// without answering (as a server whose keep-alive timeout ran out as the probe was sent).
    fn server(one_answer_per_connection: bool) -> (String, Arc<AtomicUsize>) {
        server_with_body(one_answer_per_connection, b"ok".to_vec())
    }

    fn server_with_body(
        one_answer_per_connection: bool,
        body: Vec<u8>,
    ) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/health", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let body = body.clone();
                thread::spawn(move || {
                    let (mut request, mut answered) = (Vec::new(), false);
                    let mut byte = [0u8; 1];
                    while let Ok(1) = stream.read(&mut byte) {
                        request.push(byte[0]);
                        if request.ends_with(b"\r\n\r\n") {
                            request.clear();
                            if answered && one_answer_per_connection {
                                return;
                            }
                            let head = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                                body.len()
                            );
                            if stream
                                .write_all(head.as_bytes())
                                .and_then(|()| stream.write_all(&body))
                                .is_err()
                            {
                                return;
                            }
                            answered = true;
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    fn ok(probe: &Probe) -> bool {
        matches!(probe, Probe::Ok { .. })
    }

    #[test]
    fn probes_of_one_backend_share_a_connection_and_a_new_backend_gets_its_own() {
        let (url, accepted) = server(false);
        let mut prober = Prober::new(url, Duration::from_secs(2));
        for _ in 0..5 {
            assert!(ok(&prober.probe(100)));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // Another PID (a restarted backend): never the old connection.
        assert!(ok(&prober.probe(200)));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // A fresh connection every PROBES_PER_CONNECTION probes.
        for _ in 1..PROBES_PER_CONNECTION {
            assert!(ok(&prober.probe(200)));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert!(ok(&prober.probe(200)));
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_kept_connection_the_server_closed_is_not_a_failure() {
        let (url, accepted) = server(true);
        let mut prober = Prober::new(url, Duration::from_secs(2));
        for _ in 0..4 {
            let probe = prober.probe(100);
            assert!(ok(&probe), "{probe:?}");
        }
        // Each probe after the first tried the kept connection, then a new one.
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn an_answer_larger_than_the_buffer_is_read_through_on_one_connection() {
        let (url, accepted) = server_with_body(false, vec![b'x'; 8 * PROBE_BUFFER]);
        let mut prober = Prober::new(url, Duration::from_secs(2));
        for _ in 0..3 {
            let probe = prober.probe(100);
            assert!(ok(&probe), "{probe:?}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_refused_connection_fails_at_once() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut prober = Prober::new(
            format!("http://127.0.0.1:{port}/health"),
            Duration::from_secs(2),
        );
        match prober.probe(100) {
            Probe::Failed { error } => assert!(error.contains("refused"), "{error}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_still_resolve() {
        let addrs = resolve("http://localhost:8000/health");
        assert!(!addrs.is_empty());
        assert!(
            addrs
                .iter()
                .all(|a| a.port() == 8000 && a.ip().is_loopback())
        );
    }
}
