//! `[stop] url`: the HTTP request that asks a backend to shut down, for backends that shut
//! down best that way (or that no signal reaches: a GUI program on Windows). An empty POST; a
//! 2xx answer counts as "asked" and no signal follows, only the kill when `stop.grace` ends.
//! Anything else (refused, no answer in time, another status) and the stop goes on with the
//! usual signal. May import `std` and `ureq`.

use std::time::Duration;

/// POSTs to `url`, waiting at most `timeout`; the status of a 2xx answer, or why not.
pub fn request(url: &str, timeout: Duration) -> Result<u16, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        // A local backend: a proxy from the environment must not see the request.
        .proxy(None)
        .build()
        .into();
    match agent.post(url).send_empty() {
        Ok(response) if response.status().is_success() => Ok(response.status().as_u16()),
        Ok(response) => Err(format!("{url} answered {}", response.status())),
        Err(e) => Err(format!("{url}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    /// A one-shot server: answers the first request with `status`, returns what it received.
    fn serve_once(status: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/shutdown", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 2048];
            let n = conn.read(&mut buf).unwrap();
            write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        (url, server)
    }

    #[test]
    fn a_2xx_answer_is_asked_and_the_request_is_a_post() {
        let (url, server) = serve_once("202 Accepted");
        assert_eq!(request(&url, Duration::from_secs(5)), Ok(202));
        assert!(
            server
                .join()
                .unwrap()
                .starts_with("POST /shutdown HTTP/1.1")
        );
    }

    #[test]
    fn another_status_or_no_server_is_an_error() {
        let (url, server) = serve_once("404 Not Found");
        let error = request(&url, Duration::from_secs(5)).unwrap_err();
        assert!(error.contains("404"), "{error}");
        server.join().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(request(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(5)).is_err());
    }
}
