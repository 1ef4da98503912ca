//! The real `ipsla` binary: start-up, status, config errors, clean shutdown.

use crate::common::{Killed, PATIENCE, free_udp, ipsla, signal, wait_exit, wait_for};
use std::net::UdpSocket;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn responder_serves_status_and_stops_cleanly_on_sigterm() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("status.sock");
    let (v1, v2) = (free_udp(), free_udp());
    let child = ipsla()
        .args(["responder", "--listen", "127.0.0.1", "--v1-port", &v1.to_string(), "--v2-port", &v2.to_string()])
        .arg("--status-socket")
        .arg(&sock)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    wait_for("the status socket", PATIENCE, || sock.exists());

    // one IOS udp-jitter control request (g729a capture, target rewritten to 127.0.0.1)
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut req =
        hex::decode(concat!("01720034", "00000000", "00040010", "00000000", "7f000001", "7d001518", "0001001c"))
            .unwrap();
    req.resize(52, 0);
    c.send_to(&req, ("127.0.0.1", v1)).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(
        &buf[..n],
        &hex::decode(concat!("01720018", "00000000", "00040010", "00000000", "7f000001", "7d001518")).unwrap()[..]
    );

    let v = crate::common::responder_status(&sock);
    assert_eq!(v["stats"]["control_v1"], 1);
    assert_eq!(v["sessions"][0]["port"]["port"], 32000);
    assert_eq!(v["sessions"][0]["kind"], "udp-jitter");

    let text = ipsla().args(["responder", "--status", "--status-socket"]).arg(&sock).output().unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains(&format!("General IP SLA Responder on Control port {v1}")), "{text}");
    // a v1 jitter session is the sender's address and control port
    let port = c.local_addr().unwrap().port();
    assert!(text.contains(&format!("udp 127.0.0.1:32000 <- 127.0.0.1:{port} udp-jitter")), "{text}");

    signal(&child.0, "-TERM");
    let status = wait_exit(&mut child.0);
    assert!(status.success(), "clean exit: {status}");
    // the measurement port is released with the process
    assert!(UdpSocket::bind(("127.0.0.1", 32000)).is_ok());
}

#[test]
fn config_errors_name_the_key() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("r.toml");
    std::fs::write(&cfg, "[responder]\nport_range = \"70000-80000\"\n").unwrap();
    let out = ipsla().args(["responder", "-c"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("port_range") && err.contains("1 <= FIRST <= LAST <= 65535"), "{err}");

    std::fs::write(&cfg, "[responder]\nmax_sesions = 5\n").unwrap();
    let out = ipsla().args(["responder", "-c"]).arg(&cfg).output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("unknown field `max_sesions`") && err.contains("max_sessions"), "{err}");
}

#[test]
fn status_without_a_responder_says_so() {
    let _machine = crate::common::shared();
    let out = ipsla().args(["responder", "--status", "--status-socket", "/nonexistent/ipsla.sock"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("no responder answers"));
}

/// Every cause of an error is printed once: a library error says what failed at its own layer and
/// leaves the cause to `source()`, and the binary prints the chain (docs/architecture.md).
#[test]
fn each_cause_is_printed_once() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let v1 = taken.local_addr().unwrap().port();
    let out = ipsla()
        .args(["responder", "--listen", "127.0.0.1", "--no-v2", "--v1-port", &v1.to_string(), "--status-socket"])
        .arg(dir.path().join("status.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "ipsla: starting the responder: cannot bind the v1 control port 127.0.0.1:{v1} (--v1-port, --listen): \
             Address already in use (os error 98); another responder or the agent listens there\n"
        )
    );
    let out = ipsla().args(["probe", "udp-echo", "127.0.0.1", "--vrf", "nosuchdev"]).output().unwrap();
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "ipsla: opening the probe socket: binding to device nosuchdev: No such device (os error 19) (the vrf key, \
         --vrf: `ip link show type vrf` lists the VRFs)\n"
    );
    let out = ipsla().args(["probe", "udp-echo", "127.0.0.1", "--source-ip", "::1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "ipsla: --source-ip: ::1 is IPv6 but the target 127.0.0.1 is IPv4; give an IPv4 source address or leave it out\n"
    );
}

/// One responder per status socket: a second one on the same socket is refused and names the
/// first; the socket is removed when a responder stops (SIGTERM, SIGINT); the default is one
/// socket per instance in the runtime directory, where `--status` finds it.
#[test]
fn one_responder_per_status_socket_removed_at_exit() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("status.sock");
    let start = |v1: u16, extra: &[&str]| {
        let mut c = ipsla();
        c.args(["responder", "--listen", "127.0.0.1", "--no-v2", "--v1-port", &v1.to_string()])
            .args(extra)
            .env("XDG_RUNTIME_DIR", dir.path())
            .stderr(Stdio::null());
        c
    };
    let v1 = free_udp();
    let mut first = Killed(start(v1, &["--status-socket", sock.to_str().unwrap()]).spawn().unwrap());
    wait_for("the status socket", PATIENCE, || sock.exists());
    let out = start(free_udp(), &["--status-socket", sock.to_str().unwrap()]).stderr(Stdio::piped()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "ipsla: starting the responder: the status socket {} (--status-socket) belongs to the responder with pid {} \
             (v1 127.0.0.1:{v1}): stop it, or give this one another --status-socket\n",
            sock.display(),
            first.0.id()
        )
    );
    assert_eq!(crate::common::responder_status(&sock)["control_v1"][0], format!("127.0.0.1:{v1}"), "still the first");
    signal(&first.0, "-TERM");
    assert!(wait_exit(&mut first.0).success());
    assert!(!sock.exists(), "removed at exit");

    // the default: this instance's own socket in $XDG_RUNTIME_DIR, found by --status
    let v1 = free_udp();
    let mut second = Killed(start(v1, &[]).spawn().unwrap());
    let own = dir.path().join(format!("ipsla-responder.{}.sock", second.0.id()));
    wait_for("the default status socket", PATIENCE, || own.exists());
    let out = ipsla().args(["responder", "--status", "--json"]).env("XDG_RUNTIME_DIR", dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["control_v1"][0], format!("127.0.0.1:{v1}"));
    assert_eq!(status["pid"], second.0.id());
    signal(&second.0, "-INT");
    assert!(wait_exit(&mut second.0).success());
    assert!(!own.exists(), "removed at exit");

    let out = start(free_udp(), &["--status-socket", "/dev/null/status.sock"]).stderr(Stdio::piped()).output().unwrap();
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "ipsla: starting the responder: cannot create the status socket /dev/null/status.sock (--status-socket): \
         Not a directory (os error 20)\n"
    );
}

/// The start-up line names every listener, so that an operator sees at once what answers where.
#[test]
fn the_start_up_line_lists_every_listener() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("status.sock");
    let (v1, v2, echo, jitter, stamp, light) = (free_udp(), free_udp(), free_udp(), free_udp(), free_udp(), free_udp());
    let (tcp, twamp) = (crate::common::free_tcp(), crate::common::free_tcp());
    let at = |p: u16| format!("127.0.0.1:{p}");
    let mut child = Killed(
        ipsla()
            .args(["responder", "--listen", "127.0.0.1", "--v1-port", &v1.to_string(), "--v2-port", &v2.to_string()])
            .args(["--udp-echo", &at(echo), "--udp-jitter", &at(jitter), "--tcp-connect", &at(tcp)])
            .args(["--stamp", &at(stamp), "--twamp", &at(twamp), "--twamp-light", &at(light), "--status-socket"])
            .arg(&sock)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let line = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .map_while(Result::ok)
        .find(|l| l.contains("responder listening"))
        .expect("the start-up line");
    let expected = format!(
        "INFO ipsla::responder: responder listening v1=127.0.0.1:{v1} v2=127.0.0.1:{v2} udp_echo=127.0.0.1:{echo} \
         udp_jitter=127.0.0.1:{jitter} tcp_connect=127.0.0.1:{tcp} stamp=127.0.0.1:{stamp} twamp=127.0.0.1:{twamp} \
         twamp_light=127.0.0.1:{light} status_socket={}",
        sock.display()
    );
    assert!(line.ends_with(&expected), "{line}\n{expected}");
}

/// `--help` of every subcommand and of every operation kind ends with an example, and each
/// example's flags parse (clap stops at the first unknown flag or value, before `--help`).
#[test]
fn every_subcommand_shows_an_example_that_parses() {
    let _machine = crate::common::shared();
    let mut commands: Vec<Vec<String>> = ["responder", "probe", "agent", "show", "show statistics", "show track"]
        .iter()
        .map(|c| c.split(' ').map(String::from).collect())
        .collect();
    commands.extend(ipsla_agent::ops::REGISTRY.iter().map(|k| vec!["probe".to_string(), k.name().to_string()]));
    for c in commands {
        let out = ipsla().args(&c).arg("--help").output().unwrap();
        assert!(out.status.success(), "{c:?}");
        let help = String::from_utf8(out.stdout).unwrap();
        let (_, examples) = help.split_once("\nExample:\n").unwrap_or_else(|| panic!("{c:?} has no example:\n{help}"));
        for line in examples.lines().filter(|l| !l.trim().is_empty()) {
            let line = line.trim().split("      (").next().unwrap();
            let args: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(&args[..1 + c.len()].join(" "), &format!("ipsla {}", c.join(" ")), "{c:?}: {line}");
            let out = ipsla().args(&args[1..]).arg("--help").output().unwrap();
            assert!(out.status.success(), "{line}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// Each kind's `--port` says what listens there: the text is the kind's own.
#[test]
fn port_help_is_the_kinds_own() {
    let _machine = crate::common::shared();
    let port_help = |kind: &str| {
        let help = String::from_utf8(ipsla().args(["probe", kind, "--help"]).output().unwrap().stdout).unwrap();
        help.lines()
            .find(|l| l.trim_start().starts_with("--port"))
            .map(|l| l.split_whitespace().skip(2).collect::<Vec<_>>().join(" "))
    };
    assert_eq!(port_help("stamp").as_deref(), Some("UDP port of the STAMP Session-Reflector (default 862, RFC 8762)"));
    assert_eq!(
        port_help("twamp").as_deref(),
        Some(
            "TCP port of the TWAMP-Control server (default 862, RFC 5357); the test session's UDP ports are negotiated"
        )
    );
    assert_eq!(port_help("icmp-echo"), None, "ICMP has no port");
}

/// Run as nobody: a probe that needs a privilege it lacks says which and how to get it; a status
/// socket it may not create is named with its flag.
#[test]
fn what_nobody_may_not_do_is_named_with_how_to_allow_it() {
    let _machine = crate::common::shared();
    let Some(setpriv) = crate::common::on_path("setpriv").filter(|_| crate::common::is_root()) else {
        eprintln!("skipped: needs root and setpriv to run the probe as nobody");
        return;
    };
    let out = std::process::Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
        .arg(env!("CARGO_BIN_EXE_ipsla"))
        .args(["probe", "icmp-jitter", "127.0.0.1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "ipsla: opening the ICMP socket: ICMP Timestamp needs a raw socket, which needs CAP_NET_RAW (run as root or \
         give the binary cap_net_raw): Operation not permitted (os error 1)\n"
    );
    // a responder as nobody, its status socket in root's directory: the path and the flag
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("status.sock");
    let out = std::process::Command::new(crate::common::on_path("setpriv").unwrap())
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_ipsla"))
        .args(["responder", "--no-v1", "--no-v2", "--status-socket"])
        .arg(&sock)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "ipsla: starting the responder: cannot create the status socket {} (--status-socket): Permission denied \
             (os error 13)\n",
            sock.display()
        )
    );
}
