//! Least privilege: `ipsla responder --user nobody` binds a port below 1024 as root, then runs
//! every thread as `nobody` with no capability left, and still answers on that port. Needs root
//! (skipped, saying why, without it).

mod common;

use common::Killed;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// A free UDP port below 1024 on 127.0.0.1.
fn privileged_port() -> u16 {
    (900..1000).find(|p| UdpSocket::bind(("127.0.0.1", *p)).is_ok()).expect("a free port in 900..1000")
}

/// `field` of /proc/PID/task/TID/status for every thread of `pid`.
fn per_thread(pid: u32, field: &str) -> Vec<String> {
    let mut v = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let s = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        if let Some(l) = s.lines().find(|l| l.starts_with(field)) {
            v.push(l[field.len()..].trim().to_string());
        }
    }
    v
}

#[test]
fn responder_runs_as_nobody_without_capabilities() {
    if !is_root() {
        eprintln!("SKIPPED: switching user needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = privileged_port();
    let child = Command::new(env!("CARGO_BIN_EXE_ipsla"))
        .args(["responder", "--no-v1", "--no-v2", "--stamp", &format!("127.0.0.1:{port}"), "--user", "nobody"])
        .arg("--status-socket")
        .arg(dir.path().join("s.sock"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let _k = Killed(child);
    // wait until it has bound and started its thread (the user switch happens first, the last
    // capability goes once the listeners are bound)
    let start = Instant::now();
    let settled = || {
        let eff = per_thread(pid, "CapEff:");
        eff.len() >= 2 && eff.iter().all(|c| c == "0000000000000000")
    };
    while !settled() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(per_thread(pid, "Uid:").iter().all(|u| u.split_whitespace().all(|id| id == "65534")));
    assert!(per_thread(pid, "Gid:").iter().all(|g| g.split_whitespace().all(|id| id == "65534")));
    for f in ["CapEff:", "CapPrm:", "CapInh:", "CapAmb:"] {
        assert!(per_thread(pid, f).iter().all(|c| c == "0000000000000000"), "{f} {:?}", per_thread(pid, f));
    }
    // bounding set: CAP_NET_BIND_SERVICE (bit 10) at most
    assert!(per_thread(pid, "CapBnd:").iter().all(|c| u64::from_str_radix(c, 16).unwrap() & !(1 << 10) == 0));
    assert!(per_thread(pid, "NoNewPrivs:").iter().all(|c| c == "1"));
    // and it still answers on the port it bound as root
    let out = Command::new(env!("CARGO_BIN_EXE_ipsla"))
        .args(["probe", "stamp", "127.0.0.1", "--port", &port.to_string(), "--packets", "3", "--interval", "10ms"])
        .args(["--timeout", "2s", "--json"])
        .output()
        .unwrap();
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["received"], 3, "{d}");
}

#[test]
fn unknown_user_is_refused_by_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_ipsla"))
        .args(["responder", "--no-v1", "--no-v2", "--stamp", "127.0.0.1:0", "--user", "no-such-user-ipsla"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-user-ipsla"), "{err}");
}
