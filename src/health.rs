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
        let agent = agent(timeout);
        thread::Builder::new()
            .name("health-probe".into())
            .spawn(move || {
                while let Ok(pid) = pending.recv() {
                    on_result(pid, probe_once(&agent, &url));
                }
            })?;
        Ok(HealthProbe { requests })
    }

    /// Asks for one probe of `pid`'s health.
    pub fn request(&self, pid: Pid) {
        let _ = self.requests.send(pid);
    }
}

/// One probe of `url`, now, on the calling thread.
pub fn check_once(url: &str, timeout: Duration) -> Probe {
    probe_once(&agent(timeout), url)
}

fn agent(timeout: Duration) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        // Probes go to the loopback address; a proxy from the environment must not see them.
        .proxy(None)
        // A fresh connection each time: after a restart a pooled one would be stale.
        .max_idle_connections(0)
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
        let literal = uri
            .scheme()
            .zip(uri.authority())
            .and_then(|(scheme, authority)| DefaultResolver::host_and_port(scheme, authority))
            .and_then(|addr| addr.parse::<SocketAddr>().ok());
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

fn probe_once(agent: &ureq::Agent, url: &str) -> Probe {
    let started = Instant::now();
    match agent.get(url).call() {
        Ok(response) if response.status().is_success() => Probe::Ok {
            latency: started.elapsed(),
        },
        Ok(response) => Probe::Failed {
            error: format!("{url} answered {}", response.status()),
        },
        Err(ureq::Error::Timeout(_)) => Probe::Failed {
            error: format!("{url} did not answer within the timeout"),
        },
        Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Probe::Failed {
                error: format!("{url}: connection refused"),
            }
        }
        Err(e) => Probe::Failed {
            error: format!("{url}: {e}"),
        },
    }
}

#[cfg(test)]
mod tests {
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
