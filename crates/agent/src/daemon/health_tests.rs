//! [`Agent::healthy`] follows the scheduler loop: a scheduler stuck on a lock turns it false, and
//! it recovers when the lock is released.

use super::*;

fn wait_until(what: &str, limit: Duration, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "not {what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The status code of `GET /-/healthy`.
fn healthy_status(addr: SocketAddr) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /-/healthy HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    r.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[test]
fn a_stuck_scheduler_is_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("[agent]\nhttp = \"127.0.0.1:0\"\nstore = \"{}\"\n", dir.path().join("a.db").display());
    let agent = Agent::start(AgentFile::parse(&text).unwrap().validate().unwrap()).unwrap();
    assert!(agent.healthy());
    assert_eq!(healthy_status(agent.http_addr()), 200);
    {
        let _held = agent.shared.engine.lock().unwrap();
        wait_until("unhealthy", HEARTBEAT_STALE * 3, || !agent.healthy());
        assert_eq!(healthy_status(agent.http_addr()), 503, "/-/healthy says what the watchdog sees");
    }
    wait_until("healthy again", Duration::from_secs(5), || agent.healthy());
    assert_eq!(healthy_status(agent.http_addr()), 200);
    agent.stop();
}
