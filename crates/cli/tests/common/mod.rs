//! Helpers shared by the tests that run the `ipsla` binary: free loopback ports, a child process
//! killed on drop, and a minimal HTTP/1.0 GET.
#![allow(dead_code)] // each test crate uses a different subset

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::Child;
use std::time::Duration;

/// A child process killed and reaped when the test ends, whether it passed or panicked.
pub struct Killed(pub Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET path` on 127.0.0.1:port: the status code and the body, or None when nothing answers.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    request(port, "GET", path)
}

/// `method path` (empty body) on 127.0.0.1:port: the status code and the body.
pub fn request(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n").ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    let code = r.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, r.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default()))
}

/// Percent-encodes a query-string value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Waits until something is bound to UDP `port` on 127.0.0.1 (our own bind fails), at most 10 s.
pub fn wait_udp(port: u16) {
    let start = std::time::Instant::now();
    while UdpSocket::bind(("127.0.0.1", port)).is_ok() {
        assert!(start.elapsed() < Duration::from_secs(10), "nothing listens on udp {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until TCP `port` on 127.0.0.1 accepts connections, at most 10 s.
pub fn wait_tcp(port: u16) {
    let start = std::time::Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "nothing listens on tcp {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `ipsla` binary under test.
pub fn ipsla() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_ipsla"))
}

/// `ipsla responder --status --json` against the status socket `sock`.
pub fn responder_status(sock: &std::path::Path) -> serde_json::Value {
    let out = ipsla().args(["responder", "--status", "--json", "--status-socket"]).arg(sock).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}
