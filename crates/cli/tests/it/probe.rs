//! `ipsla probe` end to end over loopback: every operation against `ipsla responder` (in-process,
//! on ephemeral control ports) and the ICMP operations against the kernel.

use crate::common::{free_udp as free_port, ipsla, is_root};
use ipsla_core::responder::{PermanentKind, ResponderConfig};
use ipsla_net::responder::{ResponderOptions, RunningResponder, spawn_responder};
use serde_json::Value;
use std::net::{SocketAddr, UdpSocket};

fn responder(core: ResponderConfig, permanent: Vec<(PermanentKind, SocketAddr)>) -> RunningResponder {
    spawn_responder(ResponderOptions {
        listen: vec!["127.0.0.1".parse().unwrap()],
        v1_port: 0,
        v2_port: 0,
        permanent,
        core,
        ..ResponderOptions::default()
    })
    .unwrap()
}

/// A default responder on loopback, its v1 control port and a free measurement port (as flag
/// values): what most probe tests run against.
struct V1 {
    r: RunningResponder,
    ctl: String,
    port: String,
}

fn v1_responder() -> V1 {
    let r = responder(ResponderConfig::default(), vec![]);
    let ctl = r.control_v1_addrs()[0].port().to_string();
    V1 { r, ctl, port: free_port().to_string() }
}

/// Runs `ipsla probe ARGS --json` and returns (exit code, one JSON document per run).
fn probe(args: &[&str]) -> (i32, Vec<Value>) {
    let out = ipsla().arg("probe").args(args).arg("--json").output().unwrap();
    let docs = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    if out.status.code() == Some(2) {
        panic!("usage error: {}", String::from_utf8_lossy(&out.stderr));
    }
    (out.status.code().unwrap(), docs)
}

#[test]
fn udp_jitter_v1_ms_against_responder() {
    let _machine = crate::common::shared();
    let V1 { r, ctl, port } = v1_responder();
    let (code, docs) = probe(&[
        "udp-jitter",
        "127.0.0.1",
        "--port",
        &port,
        "--control-port",
        &ctl,
        "--packets",
        "20",
        "--interval",
        "5ms",
    ]);
    assert_eq!(code, 0);
    let d = &docs[0];
    assert_eq!(d["return_code"], "ok");
    assert_eq!(d["control"], "v1");
    assert_eq!(d["precision"], "ms");
    assert_eq!((d["sent"].as_u64(), d["received"].as_u64()), (Some(20), Some(20)));
    assert_eq!(d["rtt_us"]["count"], 20);
    assert_eq!(d["jitter_us"]["sd"]["count"], 19);
    assert_eq!(d["loss"]["sd"], 0);
    assert_eq!(d["loss"]["ds"], 0);
    assert_eq!(d["loss"]["mia"], 0);
    assert!(d["one_way_us"].is_null(), "clocks not declared synchronised");
    assert_eq!(d["timestamps"]["rx"], "kernel");
    // the responder answered all 20 with its counter
    assert_eq!(r.status().unwrap().stats.probes_answered, 20);
}

#[test]
fn udp_jitter_us_one_way_with_assumed_sync() {
    let _machine = crate::common::shared();
    let V1 { r: _r, ctl, port } = v1_responder();
    let (code, docs) = probe(&[
        "udp-jitter",
        "127.0.0.1",
        "--port",
        &port,
        "--control-port",
        &ctl,
        "--precision",
        "us",
        "--packets",
        "30",
        "--interval",
        "2ms",
        "--clock-sync",
        "assume",
    ]);
    assert_eq!(code, 0);
    let d = &docs[0];
    assert_eq!(d["precision"], "us");
    assert_eq!(d["received"], 30);
    let ow = &d["one_way_us"];
    // one host, one clock: neither direction is negative beyond the responder's T3 calibration
    // error (T3 is its userspace reading plus the learned delay until the kernel stamps the reply,
    // so a reply that left faster than average reads slightly early), and none is as long as a
    // second (a unit or clock error: how long a loaded machine takes is not bounded here)
    for dir in ["sd", "ds"] {
        assert_eq!(ow[dir]["count"], 30);
        let (min, max) = (ow[dir]["min"].as_f64().unwrap(), ow[dir]["max"].as_f64().unwrap());
        assert!(min >= -5.0 && max < 1_000_000.0, "{dir}: {min}..{max}");
    }
    let rtt = &d["rtt_us"];
    // the same calibration error bounds how far below 0 a loopback RTT (true value ~1 µs) can read
    assert!(rtt["min"].as_f64().unwrap() > -5.0 && rtt["p50"].as_f64().unwrap() < 1_000_000.0, "{rtt}");
    // RTT with processing removed = SD + DS for each packet, so the sums agree
    let sum = ow["sd"]["sum"].as_f64().unwrap() + ow["ds"]["sum"].as_f64().unwrap();
    assert!((sum - rtt["sum"].as_f64().unwrap()).abs() < 0.1, "{sum} vs {}", rtt["sum"]);
}

#[test]
fn udp_jitter_v2_authenticated_and_wrong_key() {
    let _machine = crate::common::shared();
    let mut core = ResponderConfig::default();
    core.keys.insert(5, b"tr0ub4dor".to_vec());
    core.require_auth = true;
    let r = responder(core, vec![]);
    let ctl = r.control_v2_addrs()[0].port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    std::fs::write(&good, "tr0ub4dor\n").unwrap();
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "correct horse").unwrap();
    let run = |secret: &std::path::Path| {
        probe(&[
            "udp-jitter",
            "127.0.0.1",
            "--port",
            "0",
            "--control",
            "v2",
            "--control-port",
            &ctl,
            "--auth",
            "hmac-sha256",
            "--key-id",
            "5",
            "--secret-file",
            secret.to_str().unwrap(),
            "--precision",
            "us",
            "--packets",
            "5",
            "--interval",
            "2ms",
        ])
    };
    let (code, docs) = run(&good);
    assert_eq!(code, 0, "{docs:?}");
    assert_eq!(docs[0]["control"], "v2");
    assert_eq!(docs[0]["received"], 5);
    let (code, docs) = run(&bad);
    assert_eq!(code, 1);
    assert_eq!(docs[0]["return_code"], "auth_failure");
    assert_eq!(docs[0]["sent"], 0);
}

#[test]
fn control_none_against_permanent_ports() {
    let _machine = crate::common::shared();
    let (jp, ep, tp) = (free_port(), free_port(), free_port());
    let lo = |p| SocketAddr::from(([127, 0, 0, 1], p));
    let _r = responder(
        ResponderConfig::default(),
        vec![(PermanentKind::UdpJitter, lo(jp)), (PermanentKind::UdpEcho, lo(ep)), (PermanentKind::TcpConnect, lo(tp))],
    );
    let (code, docs) = probe(&[
        "udp-jitter",
        "127.0.0.1",
        "--port",
        &jp.to_string(),
        "--control",
        "none",
        "--packets",
        "5",
        "--interval",
        "1ms",
    ]);
    assert_eq!((code, &docs[0]["received"]), (0, &Value::from(5)));
    let (code, docs) =
        probe(&["udp-echo", "127.0.0.1", "--port", &ep.to_string(), "--no-control", "--request-data-size", "100"]);
    assert_eq!((code, &docs[0]["return_code"]), (0, &Value::from("ok")));
    assert_eq!(docs[0]["rtt_us"]["count"], 1);
    let (code, docs) = probe(&["tcp-connect", "127.0.0.1", "--port", &tp.to_string(), "--control", "none"]);
    assert_eq!((code, &docs[0]["return_code"]), (0, &Value::from("ok")));
}

#[test]
fn udp_echo_and_tcp_connect_with_v1_control() {
    let _machine = crate::common::shared();
    let V1 { r, ctl, .. } = v1_responder();
    let (code, docs) = probe(&[
        "udp-echo",
        "127.0.0.1",
        "--port",
        &free_port().to_string(),
        "--control-port",
        &ctl,
        "--count",
        "3",
        "--frequency",
        "1s",
        "--timeout",
        "1s",
    ]);
    assert_eq!(code, 0);
    assert_eq!(docs.len(), 3);
    assert_eq!(docs.iter().map(|d| d["run"].as_u64().unwrap()).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(docs.iter().all(|d| d["return_code"] == "ok" && d["rtt_us"]["count"] == 1));
    let (code, docs) = probe(&["tcp-connect", "127.0.0.1", "--port", &free_port().to_string(), "--control-port", &ctl]);
    assert_eq!((code, &docs[0]["return_code"]), (0, &Value::from("ok")));
    assert!(docs[0]["rtt_us"]["max"].as_f64().unwrap() > 0.0);
    assert_eq!(r.status().unwrap().stats.tcp_accepts, 1);
}

#[test]
fn failures_give_cisco_return_codes() {
    let _machine = crate::common::shared();
    // nobody answers control: No connection
    let dead = free_port().to_string();
    let (code, docs) =
        probe(&["udp-jitter", "127.0.0.1", "--control-port", &dead, "--timeout", "300ms", "--packets", "3"]);
    assert_eq!(code, 1);
    assert_eq!(docs[0]["return_code"], "no_connection");
    // tcp to a closed port without control: refused → No connection
    let (code, docs) = probe(&[
        "tcp-connect",
        "127.0.0.1",
        "--port",
        &free_port().to_string(),
        "--control",
        "none",
        "--timeout",
        "1s",
    ]);
    assert_eq!((code, &docs[0]["return_code"]), (1, &Value::from("no_connection")));
    let to = docs[0]["target"].as_str().unwrap();
    assert_eq!(
        docs[0]["reason"],
        format!("connection refused (TCP reset) by {to}: nothing listens on that port").as_str()
    );
    // probes to a port nobody answers without control: Timeout, everything lost
    let (code, docs) = probe(&[
        "udp-jitter",
        "127.0.0.1",
        "--port",
        &free_port().to_string(),
        "--control",
        "none",
        "--timeout",
        "200ms",
        "--packets",
        "4",
        "--interval",
        "1ms",
    ]);
    assert_eq!(code, 1);
    assert_eq!(docs[0]["return_code"], "timeout");
    assert_eq!(docs[0]["loss"]["mia"], 4);
}

/// A target nobody answers: every delay, percentile and jitter is null in JSON and "none" in
/// words in the text, never 0 (which an outage would otherwise draw as a perfect run).
#[test]
fn a_run_without_replies_shows_no_numbers() {
    let _machine = crate::common::shared();
    let hole = free_port().to_string();
    let args = ["127.0.0.1", "--port", &hole, "--control", "none", "--timeout", "200ms"];
    let (code, docs) = probe(&[&["udp-echo"][..], &args].concat());
    assert_eq!((code, &docs[0]["return_code"]), (1, &Value::from("timeout")));
    let none = serde_json::json!({"count": 0, "min": null, "avg": null, "max": null, "p50": null, "p90": null,
        "p99": null, "sum": 0.0, "sum2": 0.0});
    assert_eq!(docs[0]["rtt_us"], none);
    assert_eq!(docs[0]["ipdv_us"], serde_json::json!({"p50": null, "p90": null, "p99": null}));
    assert_eq!(
        docs[0]["timestamps"]["rx_user_minus_kernel_us"],
        serde_json::json!({"count": 0, "avg": null, "max": null})
    );
    assert_eq!(docs[0]["loss"]["ratio"], 1.0);

    let (code, docs) = probe(&[&["udp-jitter"][..], &args, &["--packets", "4", "--interval", "1ms"]].concat());
    assert_eq!((code, &docs[0]["received"]), (1, &Value::from(0)));
    let j = &docs[0]["jitter_us"];
    assert_eq!((&j["avg"], &j["iaj_sd"], &j["iaj_ds"]), (&Value::Null, &Value::Null, &Value::Null), "{j}");
    assert_eq!(
        j["sd"],
        serde_json::json!({"count": 0, "avg": null, "pos_count": 0, "pos_min": null, "pos_max": null,
            "pos_sum": 0.0, "neg_count": 0, "neg_min": null, "neg_max": null, "neg_sum": 0.0})
    );

    let text = |kind: &str, extra: &[&str]| {
        let out = ipsla().arg("probe").arg(kind).args(args).args(extra).output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let t = text("udp-echo", &[]);
    assert!(t.contains("\n        Latest RTT: none (timeout)\n"), "{t}");
    assert!(t.contains("\n        RTT percentiles: no samples\n"), "{t}");
    assert!(t.contains("Userspace - kernel stamp: receive none (no packet with both stamps), send "), "{t}");
    let t = text("udp-jitter", &["--packets", "4", "--interval", "1ms"]);
    for line in [
        "        Number Of RTT: 0\t\tRTT Min/Avg/Max: none (no samples)\n",
        "        Source to Destination Jitter Min/Avg/Max: none (no samples)\n",
        "        Destination to Source Jitter Min/Avg/Max: none (no samples)\n",
        "        Number Of RTT Over Threshold: 0 (no samples)\n",
        "        Mean Opinion Score (MOS): none (needs a codec and a reply)\n",
        "        IPDV percentiles: no samples (fewer than two replies)\n",
        "        Interarrival jitter (RFC 3550): no samples (fewer than two replies)\n",
    ] {
        assert!(t.contains(line), "{line:?} in\n{t}");
    }
    assert!(!t.contains("0.000") && !t.contains(" 0/0/0 "), "{t}");
}

/// Runs `ipsla probe ARGS --json` and returns (the one document, stderr).
fn probe_failing(args: &[&str]) -> (Value, String) {
    let out = ipsla().arg("probe").args(args).arg("--json").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let doc = serde_json::from_slice(&out.stdout).unwrap();
    (doc, String::from_utf8(out.stderr).unwrap())
}

#[test]
fn a_closed_control_port_is_named_as_refused() {
    let _machine = crate::common::shared();
    let dead = free_port();
    let (doc, stderr) = probe_failing(&["udp-jitter", "127.0.0.1", "--control-port", &dead.to_string()]);
    let why = format!("connection refused (ICMP port unreachable) from 127.0.0.1:{dead}: no responder listens there");
    assert_eq!(doc["return_code"], "no_connection");
    assert_eq!(doc["reason"], why.as_str());
    assert_eq!(stderr, format!("ipsla probe udp-jitter: {why}\n"));
    // the text report says it too, under the return code
    let out = ipsla().args(["probe", "udp-echo", "127.0.0.1", "--control-port", &dead.to_string()]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!(
            "Latest operation return code: No connection\nLatest operation failure reason: {why}\n"
        )),
        "{text}"
    );
    assert!(text.ends_with("0 packets transmitted, 0 received, packet loss unknown (nothing was sent)\n"), "{text}");
    // without control, the refused probes explain the timeout
    let port = free_port();
    let (doc, _) = probe_failing(&["udp-echo", "127.0.0.1", "--port", &port.to_string(), "--control", "none"]);
    assert_eq!(doc["return_code"], "timeout");
    assert_eq!(
        doc["reason"],
        format!("connection refused (ICMP port unreachable) from 127.0.0.1:{port}: no responder listens there")
            .as_str()
    );
}

#[test]
fn a_silent_control_port_is_named_with_what_was_sent() {
    let _machine = crate::common::shared();
    // something holds the port and never answers (a firewall that drops looks the same)
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let (doc, stderr) =
        probe_failing(&["udp-jitter", "127.0.0.1", "--control-port", &port.to_string(), "--timeout", "300ms"]);
    silent.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let requests = std::iter::from_fn(|| silent.recv(&mut buf).ok()).count();
    // three retries spread over the timeout; a loaded machine may get fewer out before it ends,
    // and the reason counts what really left
    assert!((1..=3).contains(&requests), "{requests} control requests");
    let why = format!(
        "no answer from 127.0.0.1:{port} to {requests} control request{} in 300 ms: is a responder running there and allowed through?",
        if requests == 1 { "" } else { "s" }
    );
    assert_eq!(doc["return_code"], "no_connection");
    assert_eq!(doc["reason"], why.as_str());
    assert_eq!(stderr, format!("ipsla probe udp-jitter: {why}\n"));
}

#[test]
fn codec_run_scores_voice() {
    let _machine = crate::common::shared();
    let V1 { r: _r, ctl, .. } = v1_responder();
    let (code, docs) = probe(&[
        "udp-jitter",
        "127.0.0.1",
        "--port",
        &free_port().to_string(),
        "--control-port",
        &ctl,
        "--codec",
        "g729a",
        "--packets",
        "40",
        "--interval",
        "2ms",
    ]);
    assert_eq!(code, 0);
    let v = &docs[0]["voice"];
    assert_eq!(v["codec"], "g729a");
    // loss-free loopback, RTT 0 ms at ms precision: only the codec's own impairment (G.729A Ie 11)
    // and its 15 ms delay (Id 0.36): R = 93.2 − 0.36 − 11 = 81.84, MOS 4.09, ICPIF 11
    assert_eq!(v["icpif"], 11);
    assert_eq!(v["mos"], 4.09);
}

#[test]
fn icmp_echo_to_the_kernel() {
    let _machine = crate::common::shared();
    if !is_root() && std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap().trim() == "1\t0" {
        eprintln!("skipped: needs root or net.ipv4.ping_group_range");
        return;
    }
    let (code, docs) = probe(&["icmp-echo", "127.0.0.1", "--count", "2"]);
    assert_eq!(code, 0, "{docs:?}");
    assert!(docs.iter().all(|d| d["return_code"] == "ok" && d["rtt_us"]["count"] == 1));
    if UdpSocket::bind("[::1]:0").is_ok() {
        let (code, docs) = probe(&["icmp-echo", "::1"]);
        assert_eq!(code, 0, "{docs:?}");
        assert_eq!(docs[0]["target"], "::1");
    }
}

#[test]
fn icmp_jitter_to_the_kernel() {
    let _machine = crate::common::shared();
    if !is_root() {
        eprintln!("skipped: icmp-jitter needs a raw socket (root or CAP_NET_RAW)");
        return;
    }
    let (code, docs) =
        probe(&["icmp-jitter", "127.0.0.1", "--packets", "10", "--interval", "5ms", "--clock-sync", "assume"]);
    assert_eq!(code, 0, "{docs:?}");
    let d = &docs[0];
    assert_eq!((d["sent"].as_u64(), d["received"].as_u64()), (Some(10), Some(10)));
    assert_eq!(d["precision"], "ms");
    // the kernel's timestamps are in whole ms and the path is local: no delay is negative, none
    // near a second (a unit error; how late a loaded machine answers is not bounded here)
    for v in [&d["rtt_us"], &d["one_way_us"]["sd"]] {
        let (min, max) = (v["min"].as_f64().unwrap(), v["max"].as_f64().unwrap());
        assert!(min >= 0.0 && max < 1_000_000.0, "{v}");
    }
}

#[test]
fn udp_jitter_over_ipv6_and_vrf_device() {
    let _machine = crate::common::shared();
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback");
        return;
    }
    let r = spawn_responder(ResponderOptions {
        listen: vec!["::1".parse().unwrap()],
        v1_port: 0,
        v2_port: 0,
        ..ResponderOptions::default()
    })
    .unwrap();
    let ctl = r.control_v1_addrs()[0].port().to_string();
    let port = free_port().to_string();
    let (code, docs) = probe(&[
        "udp-jitter",
        "::1",
        "--port",
        &port,
        "--control-port",
        &ctl,
        "--packets",
        "5",
        "--interval",
        "1ms",
        "--dscp",
        "46",
    ]);
    assert_eq!(code, 0, "{docs:?}");
    assert_eq!(docs[0]["received"], 5);
    assert_eq!(docs[0]["target"], format!("[::1]:{port}"));
    if is_root() {
        // SO_BINDTODEVICE to the loopback device (a VRF is a device too)
        let (code, docs) = probe(&[
            "udp-jitter",
            "::1",
            "--port",
            &port,
            "--control-port",
            &ctl,
            "--packets",
            "3",
            "--interval",
            "1ms",
            "--vrf",
            "lo",
        ]);
        assert_eq!((code, &docs[0]["received"]), (0, &Value::from(3)));
    }
}

#[test]
fn userspace_fallback_still_measures() {
    let _machine = crate::common::shared();
    let r = spawn_responder(ResponderOptions {
        listen: vec!["127.0.0.1".parse().unwrap()],
        v1_port: 0,
        v2_port: 0,
        kernel_timestamps: false,
        ..ResponderOptions::default()
    })
    .unwrap();
    let ctl = r.control_v1_addrs()[0].port().to_string();
    let port = free_port().to_string();
    let (code, docs) = probe(&[
        "udp-jitter",
        "127.0.0.1",
        "--port",
        &port,
        "--control-port",
        &ctl,
        "--precision",
        "us",
        "--packets",
        "10",
        "--interval",
        "1ms",
        "--no-kernel-timestamps",
    ]);
    assert_eq!(code, 0, "{docs:?}");
    let ts = &docs[0]["timestamps"];
    assert_eq!((ts["rx"].as_str(), ts["tx"].as_str()), (Some("user"), Some("user")), "{ts}");
    assert_eq!(docs[0]["received"], 10);
    assert!(docs[0]["rtt_us"]["min"].as_f64().unwrap() > 0.0);
    // and the responder said so too
    let st = r.status().unwrap();
    assert_eq!((st.stats.rx_stamps_kernel, st.stats.rx_stamps_user), (0, 10));
}

/// The flags are the configuration keys: the same checks, errors naming the flag, exit status 2.
#[test]
fn flag_errors_name_the_flag() {
    let _machine = crate::common::shared();
    let err = |args: &[&str]| {
        let out = ipsla().arg("probe").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    assert_eq!(
        err(&["udp-jitter", "127.0.0.1", "--packets", "0"]),
        "ipsla: --packets: 0 is out of range; allowed 1 to 60000\n"
    );
    assert_eq!(
        err(&["udp-jitter", "127.0.0.1", "--frequency", "2s"]),
        "ipsla: --frequency: 2s is shorter than one run (timeout + packets × interval = 5s 200ms); IOS refuses that too\n"
    );
    assert!(err(&["icmp-echo", "127.0.0.1", "--frequency", "100ms"]).starts_with("ipsla: --frequency: "));
    assert_eq!(
        err(&["twamp", "127.0.0.1", "--mode", "auth"]),
        "ipsla: --key-id: mode auth needs --key-id (an identity of --secret-file)\n"
    );
    assert_eq!(
        err(&["udp-echo", "127.0.0.1", "--tos", "4", "--dscp", "1"]),
        "ipsla: --tos: --tos and --dscp set the same byte; set one of them\n"
    );
}

/// `ipsla probe ARGS` with text output: (exit code, stdout, stderr).
fn probe_text(args: &[&str]) -> (i32, String, String) {
    let out = ipsla().arg("probe").args(args).output().unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code().unwrap(), text(out.stdout), text(out.stderr))
}

/// The sequence numbers of the live lines starting with `prefix`, in order.
fn live_seqs(text: &str, prefix: &str) -> Vec<u32> {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| {
            let seq = l.split_whitespace().find_map(|w| w.strip_prefix("seq=")).unwrap_or_else(|| panic!("{l}"));
            seq.parse().unwrap()
        })
        .collect()
}

#[test]
fn verbose_prints_a_line_per_reply_as_it_happens() {
    let _machine = crate::common::shared();
    let V1 { r: _r, ctl, port } = v1_responder();
    let args =
        ["udp-jitter", "127.0.0.1", "--port", &port, "--control-port", &ctl, "--packets", "20", "--interval", "5ms"];
    let (code, out, _) = probe_text(&[&args[..], &["--verbose"]].concat());
    assert_eq!(code, 0, "{out}");
    let target = format!("reply from 127.0.0.1:{port}: run=1 ");
    assert_eq!(live_seqs(&out, &target), (1..=20).collect::<Vec<_>>(), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("reply from") || l.starts_with("no reply")).count(), 20);
    // the second reply on carries the IPDV to the one before it; the first has none to carry
    let first = out.lines().find(|l| l.contains(" seq=1 ")).unwrap();
    assert!(!first.contains("ipdv"), "{first}");
    assert!(out.lines().find(|l| l.contains(" seq=2 ")).unwrap().contains(" ipdv="), "{out}");
    // the live lines come before the run's statistics
    let stats_at = out.find("IPSLA operation id: 1\n").expect("the statistics");
    assert!(out.find(&target).unwrap() < stats_at, "{out}");
    // --quiet, and stdout not a terminal without --verbose: only the statistics
    for quiet in [&["-q"][..], &[]] {
        let (code, out, _) = probe_text(&[&args[..], quiet].concat());
        assert_eq!((code, live_seqs(&out, "reply from").len()), (0, 0), "{out}");
        assert!(out.contains("20 packets transmitted, 20 received"), "{out}");
    }
    // --json --verbose: stdout holds only the document, the lines go to stderr
    let (code, out, err) = probe_text(&[&args[..], &["--json", "--verbose"]].concat());
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1, "{out}");
    let doc: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(doc["received"], 20);
    assert_eq!(live_seqs(&err, &target), (1..=20).collect::<Vec<_>>(), "{err}");
}

#[test]
fn verbose_prints_a_line_per_loss() {
    let _machine = crate::common::shared();
    // nothing listens on the port: every probe is lost, each said once when its timeout passes
    let port = free_port().to_string();
    let args = ["udp-jitter", "127.0.0.1", "--port", &port, "--no-control", "--packets", "5"];
    let (code, out, _) = probe_text(&[&args[..], &["--interval", "10ms", "--timeout", "300ms", "-v"]].concat());
    assert_eq!(code, 1, "every run timed out: {out}");
    let lost = format!("no reply from 127.0.0.1:{port}: run=1 ");
    assert_eq!(live_seqs(&out, &lost), vec![1, 2, 3, 4, 5], "{out}");
    assert_eq!(live_seqs(&out, "reply from").len(), 0, "{out}");
    assert!(out.lines().filter(|l| l.starts_with(&lost)).all(|l| l.ends_with(" lost (timeout)")), "{out}");

    // a reflector that answers every probe but the third (echoing it: same T1, as a reply must)
    let refl = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = refl.local_addr().unwrap().port().to_string();
    let echo = std::thread::spawn(move || {
        refl.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 2048];
        for _ in 0..5 {
            let Ok((n, from)) = refl.recv_from(&mut buf) else { return };
            let seq = ipsla_wire::cisco::probe::Type2::new_checked(&buf[..n]).unwrap().sender_seq();
            if seq != 3 {
                refl.send_to(&buf[..n], from).unwrap();
            }
        }
    });
    let args = ["udp-jitter", "127.0.0.1", "--port", &port, "--no-control", "--packets", "5"];
    let (_, out, _) = probe_text(&[&args[..], &["--interval", "10ms", "--timeout", "300ms", "-v"]].concat());
    echo.join().unwrap();
    let run = |p: &str| format!("{p} from 127.0.0.1:{port}: run=1 ");
    assert_eq!(live_seqs(&out, &run("reply")), vec![1, 2, 4, 5], "{out}");
    assert_eq!(live_seqs(&out, &run("no reply")), vec![3], "{out}");
    assert!(out.contains("5 packets transmitted, 4 received, 20% packet loss"), "{out}");
}

#[test]
fn forever_runs_until_sigint_then_prints_the_summary() {
    let _machine = crate::common::shared();
    let V1 { r: _r, ctl, port } = v1_responder();
    let child = ipsla()
        .args(["probe", "udp-echo", "127.0.0.1", "--port", &port, "--control-port", &ctl, "--forever", "-v"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = crate::common::Killed(child);
    let rx = crate::common::lines(child.0.stdout.take().unwrap());
    let mut lines = Vec::new();
    while live_seqs(&lines.join("\n"), "reply from").len() < 2 {
        lines.push(rx.recv_timeout(crate::common::PATIENCE).expect("a live line"));
    }
    crate::common::signal(&child.0, "-INT");
    let status = crate::common::wait_exit(&mut child.0);
    lines.extend(rx.iter());
    let out = lines.join("\n");
    assert_eq!(status.code(), Some(0), "{out}");
    let replies = live_seqs(&out, "reply from").len();
    assert!(replies >= 2, "{out}");
    // every reply shown is in the summary; a run cut short by Ctrl-C may add a probe sent
    let summary = out.lines().find(|l| l.contains(" packets transmitted, ")).expect("the summary");
    let words: Vec<&str> = summary.split_whitespace().collect();
    let (sent, received): (usize, usize) = (words[0].parse().unwrap(), words[3].parse().unwrap());
    assert_eq!(received, replies, "{out}");
    assert!(sent == replies || sent == replies + 1, "{out}");
    assert_eq!(out.matches("IPSLA operation id: 1\n").count(), out.matches("IPSLA operation id").count(), "{out}");
    assert!(out.contains("--- 127.0.0.1 ipsla statistics ---"), "{out}");
}

#[test]
fn run_numbers_and_operation_id_differ() {
    let _machine = crate::common::shared();
    let V1 { r: _r, ctl, port } = v1_responder();
    let args = ["udp-echo", "127.0.0.1", "--port", &port, "--control-port", &ctl, "-c", "2"];
    let (code, out, _) = probe_text(&args);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("IPSLA operation id: 1\n").count(), 2, "{out}");
    assert!(!out.contains("IPSLA operation id: 2"), "{out}");
    let (code, docs) = probe(&args);
    assert_eq!(code, 0);
    let ids: Vec<(u64, u64)> = docs.iter().map(|d| (d["id"].as_u64().unwrap(), d["run"].as_u64().unwrap())).collect();
    assert_eq!(ids, vec![(1, 1), (1, 2)]);
}

/// Nanoseconds since the epoch of an RFC 3339 time.
fn epoch_ns(v: &Value) -> i128 {
    let t = humantime::parse_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}"))).unwrap();
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i128
}

#[test]
fn samples_carry_the_four_times() {
    let _machine = crate::common::shared();
    let V1 { r: _r, ctl, port } = v1_responder();
    let before = crate::common::wall().as_nanos() as i128;
    let (code, docs) = probe(&[
        "udp-jitter",
        "127.0.0.1",
        "--port",
        &port,
        "--control-port",
        &ctl,
        "--precision",
        "us",
        "--packets",
        "5",
        "--interval",
        "10ms",
        "--samples",
    ]);
    let after = crate::common::wall().as_nanos() as i128;
    assert_eq!(code, 0);
    let samples = docs[0]["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 5);
    let mut last_t1 = before;
    for s in samples {
        let [t1, t2, t3, t4] = ["t1", "t2", "t3", "t4"].map(|k| epoch_ns(&s[k]));
        assert!(last_t1 <= t1 && t4 <= after, "{s}");
        last_t1 = t1;
        // the times are the ones the delays come from: the delays are differences of NTP
        // timestamps (units of 2^-32 s, each difference truncated to the ns), so a few ns apart
        let ns = |k: &str| (s[k].as_f64().unwrap() * 1000.0).round() as i128;
        assert!((t2 - t1 - ns("sd_us")).abs() <= 3, "{s}");
        assert!((t4 - t3 - ns("ds_us")).abs() <= 3, "{s}");
        assert!(((t4 - t1) - (t3 - t2) - ns("rtt_us")).abs() <= 5, "{s}");
    }
    assert_eq!(docs[0]["lost"], serde_json::json!([]), "every probe answered");
    // nothing answers: no sample, every probe in `lost` with its send time, in order
    let silent = free_port().to_string();
    let (code, docs) = probe(&[
        "udp-jitter",
        "127.0.0.1",
        "--port",
        &silent,
        "--no-control",
        "--packets",
        "3",
        "--interval",
        "10ms",
        "--timeout",
        "300ms",
        "--samples",
    ]);
    assert_eq!(code, 1);
    assert_eq!(docs[0]["samples"], serde_json::json!([]));
    let lost = docs[0]["lost"].as_array().unwrap();
    assert_eq!(lost.iter().map(|l| l["seq"].as_u64().unwrap()).collect::<Vec<_>>(), vec![1, 2, 3]);
    let t1: Vec<i128> = lost.iter().map(|l| epoch_ns(&l["t1"])).collect();
    assert!(t1[0] > after && t1[0] < t1[1] && t1[1] < t1[2], "{lost:?}");
    // udp-echo: no responder times in the protocol, so none in the document
    let (code, docs) = probe(&["udp-echo", "127.0.0.1", "--port", &port, "--control-port", &ctl, "--samples"]);
    assert_eq!(code, 0);
    let s = &docs[0]["samples"][0];
    assert!(s["t2"].is_null() && s["t3"].is_null(), "{s}");
    assert_eq!(epoch_ns(&s["t4"]) - epoch_ns(&s["t1"]), (s["rtt_us"].as_f64().unwrap() * 1000.0).round() as i128);
}

/// `ipsla probe ... | head -1`: the reader goes away, the probe stops quietly with the status a
/// shell shows for SIGPIPE, instead of panicking on the next line it prints.
#[test]
fn a_closed_stdout_ends_the_probe_quietly() {
    let _machine = crate::common::shared();
    use std::io::BufRead;
    // a port that never answers: every run prints a timeout report and nothing on stderr
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port().to_string();
    let args = ["probe", "udp-echo", "127.0.0.1", "--control", "none", "--port", &port, "--timeout", "10ms"];
    for json in [false, true] {
        let mut child = crate::common::Killed(
            ipsla()
                .args(args)
                .args(["--count", "100"])
                .args(json.then_some("--json"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut first = String::new();
        std::io::BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut first).unwrap();
        assert!(first.starts_with(if json { "{\"schema\":1," } else { "IPSLA operation id: 1" }), "{first}");
        // the reader is dropped here: the next run's report meets a closed pipe
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!((child.0.wait().unwrap().code(), err), (Some(141), String::new()), "json: {json}");
    }
}
