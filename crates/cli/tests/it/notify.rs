//! The systemd notification protocol as a service manager sees it: the test binds the
//! `NOTIFY_SOCKET` datagram socket itself and reads what `ipsla agent` and `ipsla responder` send:
//! READY=1 once bound, WATCHDOG=1 every half `WATCHDOG_USEC`, RELOADING=1 and READY=1 around a
//! SIGHUP, STOPPING=1 on SIGTERM; and logs fit for journald (no ANSI colours, no second timestamp).

use crate::common::{AgentToml, Killed, Op, PATIENCE, Responder, free_tcp, free_udp, get, ipsla, signal, wait_exit};
use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The notification socket a service manager would hold.
fn notify_socket(dir: &Path) -> (UnixDatagram, std::path::PathBuf) {
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    (sock, path)
}

/// The next message, waiting at most `limit`.
fn next(sock: &UnixDatagram, limit: Duration) -> Option<String> {
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    while t.elapsed() < limit {
        if let Ok(n) = sock.recv(&mut buf) {
            return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    None
}

/// Reads messages until one contains `line` (a whole line), for at most `limit`; returns it and
/// what came before it.
fn until(sock: &UnixDatagram, line: &str, limit: Duration) -> (String, Vec<String>) {
    let t = Instant::now();
    let mut before = Vec::new();
    while let Some(m) = next(sock, limit.saturating_sub(t.elapsed())) {
        if m.lines().any(|l| l == line) {
            return (m, before);
        }
        before.push(m);
    }
    panic!("no {line} within {limit:?}; got {before:?}");
}

#[test]
fn agent_notifies_ready_watchdog_reload_and_stopping() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let (sock, path) = notify_socket(dir.path());
    let (http, v1) = (free_tcp(), free_udp());
    let cfg = dir.path().join("agent.toml");
    AgentToml::new()
        .http(http)
        .store(&dir.path().join("runs.db"))
        .workers(1)
        .responder(Responder::loopback(v1))
        .operation(
            Op::new("udp-echo", "127.0.0.1")
                .id(1)
                .key("port", free_udp())
                .key("control_port", v1)
                .key("timeout", "200ms")
                .key("frequency", "1s"),
        )
        .write(&cfg);
    let mut agent = Killed(
        ipsla()
            .args(["agent", "--config"])
            .arg(&cfg)
            .env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "2000000")
            .env_remove("WATCHDOG_PID")
            .env("JOURNAL_STREAM", "8:12345")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );

    let (ready, before) = until(&sock, "READY=1", PATIENCE);
    assert!(before.is_empty(), "READY=1 is the first message: {before:?}");
    assert!(ready.contains("\nSTATUS=1 operations; metrics at http://127.0.0.1:"), "{ready:?}");
    // READY=1 comes after the listener is bound: the HTTP API answers at once
    assert_eq!(get(http, "/-/healthy").map(|r| r.0), Some(200));

    // a 2 s watchdog is fed every second; two feeds within a bounded wait
    for _ in 0..2 {
        let (m, before) = until(&sock, "WATCHDOG=1", PATIENCE);
        assert_eq!(m, "WATCHDOG=1\n");
        assert!(before.is_empty(), "{before:?}");
    }

    signal(&agent.0, "-HUP");
    let (m, _) = until(&sock, "RELOADING=1", PATIENCE);
    assert!(m.lines().any(|l| l.starts_with("MONOTONIC_USEC=")), "{m:?}");
    let (m, _) = until(&sock, "READY=1", PATIENCE);
    assert!(m.contains("STATUS=1 operations"), "{m:?}");

    signal(&agent.0, "-TERM");
    until(&sock, "STOPPING=1", PATIENCE);
    assert!(wait_exit(&mut agent.0).success());
    // journald stamps lines itself and shows escape codes as they are: neither in the log
    let mut log = String::new();
    agent.0.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(!log.contains('\x1b'), "{log}");
    assert!(log.lines().any(|l| l.starts_with(" INFO ipsla::agent: ipsla agent running")), "{log}");
    assert!(log.lines().any(|l| l.starts_with(" INFO ipsla::agent: shutting down")), "{log}");
}

#[test]
fn agent_without_a_watchdog_sends_no_watchdog() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let (sock, path) = notify_socket(dir.path());
    let http = free_tcp();
    let mut agent = Killed(
        ipsla()
            .args(["agent", "--http", &format!("127.0.0.1:{http}"), "--config"])
            .arg({
                let p = dir.path().join("empty.toml");
                AgentToml::new().store(&dir.path().join("a.db")).write(&p)
            })
            .env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "2000000")
            // the watchdog is meant for another process (systemd sets this to the main pid)
            .env("WATCHDOG_PID", "1")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    until(&sock, "READY=1", PATIENCE);
    signal(&agent.0, "-TERM");
    let (_, before) = until(&sock, "STOPPING=1", PATIENCE);
    assert!(before.is_empty(), "nothing between READY and STOPPING: {before:?}");
    assert!(wait_exit(&mut agent.0).success());
}

#[test]
fn responder_notifies_ready_and_stopping() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let (sock, path) = notify_socket(dir.path());
    let v1 = free_udp();
    let mut responder = Killed(
        ipsla()
            .args(["responder", "--listen", "127.0.0.1", "--no-v2", "--v1-port", &v1.to_string(), "--status-socket"])
            .arg(dir.path().join("status.sock"))
            .env("NOTIFY_SOCKET", &path)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (ready, before) = until(&sock, "READY=1", PATIENCE);
    assert!(before.is_empty(), "{before:?}");
    assert!(ready.contains(&format!("STATUS=listening: v1 [127.0.0.1:{v1}], v2 []")), "{ready:?}");
    signal(&responder.0, "-TERM");
    until(&sock, "STOPPING=1", PATIENCE);
    assert!(wait_exit(&mut responder.0).success());
}
