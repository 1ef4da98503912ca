//! TWAMP end to end on loopback: `ipsla probe twamp` (control-client and Session-Sender) against
//! `ipsla responder --twamp` (server and Session-Reflector) in every security mode, the
//! negotiation failures as both ends report them, and TWAMP-Light both ways. (tshark's decode
//! of our client and server is in twamp_server.rs.)

use crate::common::{Killed, free_tcp, free_udp, ipsla, responder_status as status, wait_tcp, wait_udp};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// `alice` with "testsecret" (the reference §3.4 identity), `bob` with another secret.
fn key_file(dir: &Path, name: &str, alice_secret: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("# identities\nalice {}\nbob {}\n", hex::encode(alice_secret), hex::encode("b0b")))
        .unwrap();
    p
}

struct Server {
    _child: Killed,
    port: u16,
    status: PathBuf,
}

/// `ipsla responder` with only a TWAMP server, offering `modes`, with `alice`'s secret.
fn server(dir: &Path, modes: &str) -> Server {
    let port = free_tcp();
    let status = dir.join("status.sock");
    let keys = key_file(dir, "server.keys", "testsecret");
    let child = ipsla()
        .args(["responder", "--no-v1", "--no-v2", "--twamp", &format!("127.0.0.1:{port}"), "--twamp-modes", modes])
        .arg("--twamp-keys")
        .arg(&keys)
        .arg("--status-socket")
        .arg(&status)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let k = Killed(child);
    wait_tcp(port);
    Server { _child: k, port, status }
}

/// One `ipsla probe twamp` run: its JSON report and exit status.
fn probe(port: u16, mode: &str, keys: Option<&Path>, n: u32) -> (Value, std::process::ExitStatus, String) {
    let mut c = ipsla();
    c.args(["probe", "twamp", "127.0.0.1", "--port", &port.to_string(), "--mode", mode, "--json"]).args([
        "--packets",
        &n.to_string(),
        "--interval",
        "10ms",
        "--timeout",
        "2s",
        "--clock-sync",
        "assume",
    ]);
    if let Some(k) = keys {
        c.args(["--key-id", "alice", "--secret-file"]).arg(k);
    }
    let out = c.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let d = serde_json::from_str(text.lines().next().unwrap_or("null")).unwrap_or(Value::Null);
    (d, out.status, err)
}

fn assert_clean(d: &Value, n: u64) {
    assert_eq!(d["operation"], "twamp", "{d}");
    assert_eq!(d["return_code"], "ok", "{d}");
    assert_eq!((d["sent"].as_u64(), d["received"].as_u64()), (Some(n), Some(n)), "{d}");
    assert_eq!(d["unexpected"], 0, "{d}");
    let loss = &d["loss"];
    assert_eq!((loss["sd"].as_u64(), loss["ds"].as_u64(), loss["mia"].as_u64()), (Some(0), Some(0), Some(0)));
    assert_eq!(d["rtt_us"]["count"], n);
    let (min, max) = (d["rtt_us"]["min"].as_f64().unwrap(), d["rtt_us"]["max"].as_f64().unwrap());
    // gross errors only (a unit or clock mix-up): a loaded machine may take any time up to the
    // probe's timeout
    assert!(min >= 0.0 && max < 2_000_000.0, "loopback RTT {min}..{max} µs");
    assert_eq!(d["jitter_us"]["sd"]["count"], n - 1, "one-way jitter from the reflector's T2/T3");
}

#[test]
fn every_security_mode_end_to_end() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path(), "open,auth,encrypted,mixed");
    let keys = key_file(dir.path(), "client.keys", "testsecret");
    for mode in ["open", "auth", "encrypted", "mixed"] {
        let (d, code, err) = probe(s.port, mode, (mode != "open").then_some(keys.as_path()), 10);
        assert!(code.success(), "{mode}: {err}");
        assert_clean(&d, 10);
    }
    let st = status(&s.status);
    eprintln!("{}", st["twamp_stats"]);
    assert_eq!(st["twamp_stats"]["server"]["sessions_accepted"], 4, "{st}");
}

#[test]
fn negotiation_failures() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    // wrong secret: the Token does not carry our challenge; Server-Start Accept = 1
    let s = server(dir.path(), "auth");
    let wrong = key_file(dir.path(), "wrong.keys", "not-the-secret");
    let (d, code, err) = probe(s.port, "auth", Some(&wrong), 3);
    assert!(!code.success());
    assert_eq!(d["return_code"], "auth_failure", "{d} {err}");
    // a mode the server does not offer: the client gives up with Mode 0 and says why
    let (d, code, err) = probe(s.port, "open", None, 3);
    assert!(!code.success());
    assert_ne!(d["return_code"], "ok", "{d} {err}");
    let st = status(&s.status)["twamp_stats"].clone();
    eprintln!("{st}");
    assert_eq!(st["server"]["sessions_accepted"], 0, "{st}");
}

#[test]
fn twamp_light_stateless_and_stateful() {
    let _machine = crate::common::shared();
    for (flags, stateful) in [(&[][..], false), (&["--twamp-light-stateful"][..], true)] {
        let port = free_udp();
        let _r = Killed(
            ipsla()
                .args(["responder", "--no-v1", "--no-v2", "--twamp-light", &format!("127.0.0.1:{port}")])
                .args(flags)
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_udp(port);
        let out = ipsla()
            .args(["probe", "twamp-light", "127.0.0.1", "--port", &port.to_string(), "--json"])
            .args(["--packets", "10", "--interval", "10ms", "--timeout", "2s"])
            .output()
            .unwrap();
        let d: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert_eq!(d["return_code"], "ok", "stateful {stateful}: {d} {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(d["received"], 10, "{d}");
    }
}
