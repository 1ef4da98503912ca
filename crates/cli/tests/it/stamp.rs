//! STAMP on loopback: `ipsla probe stamp` against `ipsla responder --stamp`, and interop with
//! stamp-suite 1.0.0 (crates.io) in both directions. The interop tests skip, saying why, when the
//! `stamp-suite` binary is not installed (scripts/test.sh installs it).

use crate::common::{Killed, free_udp as free_udp_port, ipsla, responder_status as status, wait_udp};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const KEY_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn key_file(dir: &Path) -> PathBuf {
    let p = dir.join("stamp.key");
    std::fs::write(&p, KEY_HEX).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
    p
}

fn stamp_suite() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    if let Some(h) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(h).join("bin"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(h).join(".cargo/bin"));
    }
    let found = dirs.into_iter().map(|d| d.join("stamp-suite")).find(|p| p.is_file());
    if found.is_none() {
        eprintln!("SKIPPED: stamp-suite not installed (cargo install --locked stamp-suite)");
    }
    found
}

/// Our reflector on a free port; returns it, its port and its status socket.
fn our_reflector(dir: &Path, extra: &[&str]) -> (Killed, u16, PathBuf) {
    let port = free_udp_port();
    let sock = dir.join("status.sock");
    let child = ipsla()
        .args(["responder", "--no-v1", "--no-v2", "--stamp", &format!("127.0.0.1:{port}")])
        .args(extra)
        .arg("--status-socket")
        .arg(&sock)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let k = Killed(child);
    wait_udp(port);
    (k, port, sock)
}

fn probe(port: u16, n: u32, extra: &[&str]) -> Value {
    let out = ipsla()
        .args(["probe", "stamp", "127.0.0.1", "--port", &port.to_string(), "--json"])
        .args(if extra.contains(&"--timeout") { &[][..] } else { &["--timeout", "2s"][..] })
        .args(["--packets", &n.to_string(), "--interval", "10ms", "--ssid", "4660"])
        .args(extra)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().next().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: stdout {text} stderr {}", String::from_utf8_lossy(&out.stderr)))
}

fn assert_clean(d: &Value, n: u64) {
    assert_eq!(d["operation"], "stamp");
    assert_eq!(d["return_code"], "ok", "{d}");
    assert_eq!(d["sent"], n);
    assert_eq!(d["received"], n, "{d}");
    assert_eq!(d["unexpected"], 0);
    let loss = &d["loss"];
    assert_eq!((loss["sd"].as_u64(), loss["ds"].as_u64(), loss["mia"].as_u64()), (Some(0), Some(0), Some(0)));
    assert_eq!(d["rtt_us"]["count"], n);
    let (min, max) = (d["rtt_us"]["min"].as_f64().unwrap(), d["rtt_us"]["max"].as_f64().unwrap());
    // gross errors only (a unit or clock mix-up): a loaded machine may take any time up to the
    // probe's timeout
    assert!(min >= 0.0 && max < 2_000_000.0, "loopback RTT {min}..{max} µs");
    assert_eq!(d["jitter_us"]["sd"]["count"], n - 1);
}

const TLVS: &str = "extra-padding=32,timestamp-info,cos,location,direct-measurement";

#[test]
fn loopback_unauthenticated_with_tlvs() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let (_r, port, sock) = our_reflector(dir.path(), &["--stamp-stateful"]);
    let d = probe(port, 20, &["--tlv", TLVS, "--dscp", "46"]);
    assert_clean(&d, 20);
    let s = &status(&sock)["stamp_stats"];
    assert_eq!((s["received"].as_u64(), s["replied"].as_u64()), (Some(20), Some(20)));
    assert_eq!(s["tlv_unrecognized"], 0);
}

#[test]
fn loopback_authenticated() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path());
    let key = key.to_str().unwrap();
    let (_r, port, sock) = our_reflector(dir.path(), &["--stamp-key-file", key]);
    assert_clean(&probe(port, 10, &["--auth-key-file", key, "--tlv", TLVS]), 10);
    // unauthenticated packets to an authenticated reflector: all dropped as short (44 < 112)
    let d = probe(port, 3, &["--timeout", "300ms"]);
    assert_eq!(d["received"], 0);
    let s = &status(&sock)["stamp_stats"];
    assert_eq!((s["replied"].as_u64(), s["drop_short"].as_u64()), (Some(10), Some(3)));
}

fn suite_reflector(bin: &Path, port: u16, extra: &[&str]) -> Killed {
    let child = Command::new(bin)
        .args(["-i", "--local-addr", "127.0.0.1", "--local-port", &port.to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let k = Killed(child);
    wait_udp(port);
    k
}

#[test]
fn our_sender_to_stamp_suite_reflector() {
    let _machine = crate::common::shared();
    let Some(bin) = stamp_suite() else { return };
    // stateful: its own sequence numbers, and our TLVs
    let port = free_udp_port();
    let _r = suite_reflector(&bin, port, &["--stateful-reflector"]);
    let d = probe(port, 20, &["--tlv", TLVS, "--dscp", "46", "--samples"]);
    assert_clean(&d, 20);
    // authenticated, HMAC TLV included
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path());
    let port = free_udp_port();
    let _a = suite_reflector(&bin, port, &["-A", "A", "--hmac-key-file", key.to_str().unwrap(), "--require-hmac"]);
    assert_clean(&probe(port, 10, &["--auth-key-file", key.to_str().unwrap(), "--tlv", TLVS]), 10);
}

fn suite_sender(bin: &Path, port: u16, n: u32, extra: &[&str]) -> String {
    let out = Command::new(bin)
        .args(["--remote-addr", "127.0.0.1", "--remote-port", &port.to_string(), "--local-addr", "127.0.0.1"])
        .args(["--count", &n.to_string(), "--send-delay", "10", "--ssid", "4660"])
        .args(extra)
        .output()
        .unwrap();
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "stamp-suite failed: {all}");
    all
}

fn assert_suite_clean(out: &str, n: u32) {
    assert!(out.contains(&format!("Packets sent: {n}")), "{out}");
    assert!(out.contains(&format!("Packets received: {n}")), "{out}");
    assert!(out.contains("Packets lost: 0 (0.0%)"), "{out}");
    assert!(!out.contains(" WARN ") && !out.contains(" ERROR "), "stamp-suite complained: {out}");
}

#[test]
fn stamp_suite_sender_to_our_reflector() {
    let _machine = crate::common::shared();
    let Some(bin) = stamp_suite() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (_r, port, sock) = our_reflector(dir.path(), &["--stamp-stateful"]);
    let tlvs =
        ["--timestamp-info", "--direct-measurement", "--location", "--cos", "--dscp", "46", "--extra-padding", "20"];
    let out = suite_sender(&bin, port, 10, &[&tlvs[..], &["--follow-up-telemetry"]].concat());
    assert_suite_clean(&out, 10);
    assert!(out.contains("forward missing 0, reverse missing 0"), "Direct Measurement counters: {out}");
    assert!(out.contains("Follow-Up: 9 matched"), "Follow-Up Telemetry from the stateful reflector: {out}");
    let s = &status(&sock)["stamp_stats"];
    assert_eq!((s["received"].as_u64(), s["replied"].as_u64()), (Some(10), Some(10)));
    assert_eq!((s["tlv_unrecognized"].as_u64(), s["tlv_malformed"].as_u64()), (Some(0), Some(0)));
    drop(_r);

    let key = key_file(dir.path());
    let (_a, port, sock) = our_reflector(dir.path(), &["--stamp-key-file", key.to_str().unwrap()]);
    let out =
        suite_sender(&bin, port, 10, &[&["-A", "A", "--hmac-key-file", key.to_str().unwrap()], &tlvs[..]].concat());
    assert_suite_clean(&out, 10);
    let s = &status(&sock)["stamp_stats"];
    assert_eq!((s["replied"].as_u64(), s["drop_bad_hmac"].as_u64()), (Some(10), Some(0)));
    assert_eq!(s["tlv_integrity_failed"], 0, "stamp-suite's HMAC TLV verifies");
}

/// TWAMP-Light and STAMP interoperate in unauthenticated mode (reference §5.2): stamp-suite's
/// reflector answers `ipsla probe twamp-light`, and stamp-suite's sender is answered by
/// `ipsla responder --twamp-light` (stateless and stateful both ways). No SSID: a TWAMP-Light
/// reflector has none to return.
#[test]
fn twamp_light_interop_with_stamp_suite() {
    let _machine = crate::common::shared();
    let Some(bin) = stamp_suite() else { return };
    for stateful in [false, true] {
        let port = free_udp_port();
        let _r = suite_reflector(&bin, port, if stateful { &["--stateful-reflector"][..] } else { &[][..] });
        let out = ipsla()
            .args(["probe", "twamp-light", "127.0.0.1", "--port", &port.to_string(), "--json"])
            .args(["--packets", "10", "--interval", "10ms", "--timeout", "2s"])
            .output()
            .unwrap();
        let d: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("")).unwrap();
        assert_eq!(d["return_code"], "ok", "stateful {stateful}: {d}");
        assert_eq!(
            (d["sent"].as_u64(), d["received"].as_u64(), d["unexpected"].as_u64()),
            (Some(10), Some(10), Some(0))
        );
        let loss = &d["loss"];
        assert_eq!((loss["sd"].as_u64(), loss["ds"].as_u64(), loss["mia"].as_u64()), (Some(0), Some(0), Some(0)));

        let dir = tempfile::tempdir().unwrap();
        let port = free_udp_port();
        let sock = dir.path().join("status.sock");
        let mut args = vec!["responder", "--no-v1", "--no-v2", "--status-socket", sock.to_str().unwrap()];
        let listen = format!("127.0.0.1:{port}");
        args.extend(["--twamp-light", listen.as_str()]);
        if stateful {
            args.push("--twamp-light-stateful");
        }
        let _ours = Killed(ipsla().args(&args).stderr(Stdio::null()).spawn().unwrap());
        wait_udp(port);
        let out = Command::new(&bin)
            .args(["--remote-addr", "127.0.0.1", "--remote-port", &port.to_string(), "--local-addr", "127.0.0.1"])
            .args(["--count", "10", "--send-delay", "10"])
            .output()
            .unwrap();
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "stamp-suite failed: {all}");
        assert_suite_clean(&all, 10);
        let l = &status(&sock)["twamp_stats"]["light"];
        assert_eq!((l["received"].as_u64(), l["reflected"].as_u64()), (Some(10), Some(10)), "{l}");
    }
}
