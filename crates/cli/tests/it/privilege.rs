//! Least privilege: `ipsla responder --user nobody` binds a port below 1024 as root, then runs
//! every thread as `nobody` with no capability left, and still answers on that port. Needs root
//! (skipped, saying why, without it).

use crate::common::{AgentToml, Killed, Op, PATIENCE, Responder, free_tcp, free_udp, get, ipsla, is_root, wait_for};
use std::net::UdpSocket;
use std::process::Stdio;

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
    let _machine = crate::common::shared();
    if !is_root() {
        eprintln!("SKIPPED: switching user needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = privileged_port();
    let child = ipsla()
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
    wait_for("the responder to drop its last capability", PATIENCE, || {
        let eff = per_thread(pid, "CapEff:");
        eff.len() >= 2 && eff.iter().all(|c| c == "0000000000000000")
    });
    assert!(per_thread(pid, "Uid:").iter().all(|u| u.split_whitespace().all(|id| id == "65534")));
    assert!(per_thread(pid, "Gid:").iter().all(|g| g.split_whitespace().all(|id| id == "65534")));
    for f in ["CapEff:", "CapPrm:", "CapInh:", "CapAmb:"] {
        assert!(per_thread(pid, f).iter().all(|c| c == "0000000000000000"), "{f} {:?}", per_thread(pid, f));
    }
    // bounding set: CAP_NET_BIND_SERVICE (bit 10) at most
    assert!(per_thread(pid, "CapBnd:").iter().all(|c| u64::from_str_radix(c, 16).unwrap() & !(1 << 10) == 0));
    assert!(per_thread(pid, "NoNewPrivs:").iter().all(|c| c == "1"));
    // and it still answers on the port it bound as root
    let out = ipsla()
        .args(["probe", "stamp", "127.0.0.1", "--port", &port.to_string(), "--packets", "3", "--interval", "10ms"])
        .args(["--timeout", "2s", "--json"])
        .output()
        .unwrap();
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["received"], 3, "{d}");
}

#[test]
fn unknown_user_is_refused_by_name() {
    let _machine = crate::common::shared();
    let out = ipsla()
        .args(["responder", "--no-v1", "--no-v2", "--stamp", "127.0.0.1:0", "--user", "no-such-user-ipsla"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-user-ipsla"), "{err}");
}

/// `ipsla agent --user nobody` as root: its TWAMP listener on a port below 1024 and its store are
/// opened first; then every thread runs as `nobody` with CAP_NET_RAW only (its icmp-echo
/// operation needs the raw socket; nothing else is needed), and the operations still run and are
/// stored.
#[test]
fn agent_runs_as_nobody_with_only_what_its_operations_need() {
    let _machine = crate::common::shared();
    if !is_root() {
        eprintln!("SKIPPED: switching user needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // the store's directory belongs to the service user, as systemd's StateDirectory would make it
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::process::Command::new("chown").args(["65534:65534"]).arg(&state).status().unwrap();
    let (twamp, http, v1, echo) = (privileged_tcp_port(), free_tcp(), free_udp(), free_udp());
    let cfg = dir.path().join("agent.toml");
    let op = |id: u32, kind: &str| Op::new(kind, "127.0.0.1").id(id).key("timeout", "500ms").key("frequency", "1s");
    AgentToml::new()
        .http(http)
        .store(&state.join("runs.db"))
        .responder(Responder::loopback(v1).key("twamp", vec![format!("127.0.0.1:{twamp}")]))
        .operation(op(1, "icmp-echo"))
        .operation(op(2, "twamp").key("port", twamp).key("packets", 3).key("interval", "10ms"))
        .operation(op(3, "udp-echo").key("port", echo).key("control_port", v1))
        .write(&cfg);
    let child =
        ipsla().args(["agent", "--user", "nobody", "--config"]).arg(&cfg).stderr(Stdio::null()).spawn().unwrap();
    let pid = child.id();
    let _k = Killed(child);
    let stored = |id: u32| {
        get(http, &format!("/api/v1/operations/{id}/latest"))
            .filter(|(c, _)| *c == 200)
            .map(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).unwrap())
    };
    wait_for("a run of each operation", PATIENCE, || [1, 2, 3].iter().all(|id| stored(*id).is_some()));
    for id in [1, 2, 3] {
        let l = stored(id).unwrap_or_else(|| panic!("operation {id} has no run"));
        assert_eq!(l["return_code"], "ok", "operation {id} as nobody: {l}");
    }
    let threads = per_thread(pid, "Uid:");
    assert!(threads.len() >= 4, "{threads:?}");
    assert!(threads.iter().all(|u| u.split_whitespace().all(|id| id == "65534")), "{threads:?}");
    // CAP_NET_RAW is bit 13; nothing else in any set a thread could use
    for f in ["CapEff:", "CapPrm:"] {
        assert!(per_thread(pid, f).iter().all(|c| c == "0000000000002000"), "{f} {:?}", per_thread(pid, f));
    }
    for f in ["CapInh:", "CapAmb:"] {
        assert!(per_thread(pid, f).iter().all(|c| c == "0000000000000000"), "{f} {:?}", per_thread(pid, f));
    }
    assert!(per_thread(pid, "CapBnd:").iter().all(|c| c == "0000000000002000"), "{:?}", per_thread(pid, "CapBnd:"));
    assert!(per_thread(pid, "NoNewPrivs:").iter().all(|c| c == "1"));
}

/// A free TCP port below 1024 on 127.0.0.1.
fn privileged_tcp_port() -> u16 {
    (900..1000).find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok()).expect("a free port in 900..1000")
}
