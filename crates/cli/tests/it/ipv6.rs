//! IPv6 end to end: every operation kind that has an address from `ipsla probe` to a responder
//! (and a name server) listening on `::1` only, the v1 control request in its IPv6 form (the
//! 68-octet type-8 TLV), and the agent measuring over `::1`. Skipped, with the reason printed, on
//! a host without an IPv6 loopback.

use crate::common::{AgentToml, InProcess, Killed, Op, free_tcp, free_udp, get, ipsla, wait_for, wait_some};
use serde_json::Value;
use std::net::{TcpStream, UdpSocket};
use std::process::Stdio;
use std::time::Duration;

fn ipv6_loopback() -> bool {
    let ok = UdpSocket::bind("[::1]:0").is_ok();
    if !ok {
        eprintln!("skipped: no IPv6 loopback");
    }
    ok
}

/// `ipsla probe ARGS --count 1 --json`: the document.
fn probe(args: &[&str]) -> Value {
    let out = ipsla().arg("probe").args(args).args(["--count", "1", "--json"]).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{args:?}: {e}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

#[test]
fn every_address_kind_measures_over_ipv6() {
    let _machine = crate::common::shared();
    if !ipv6_loopback() {
        return;
    }
    let (v1, v2, stamp, twamp) = (free_udp(), free_udp(), free_udp(), free_tcp());
    let _responder = Killed(
        ipsla()
            .args(["responder", "--listen", "::1", "--v1-port", &v1.to_string(), "--v2-port", &v2.to_string()])
            .args(["--stamp", &format!("[::1]:{stamp}"), "--twamp", &format!("[::1]:{twamp}")])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the responder on ::1", Duration::from_secs(30), || {
        UdpSocket::bind(("::1", v1)).is_err() && TcpStream::connect(("::1", twamp)).is_ok()
    });
    let (v1, v2, stamp, twamp) = (v1.to_string(), v2.to_string(), stamp.to_string(), twamp.to_string());
    let train = ["--packets", "5", "--interval", "2ms"];
    let ports: Vec<String> = (0..4).map(|_| free_udp().to_string()).collect();
    // (arguments, target as reported, replies)
    let cases: Vec<(Vec<&str>, String, u64)> = vec![
        (vec!["udp-echo", "::1", "--control-port", &v1, "--port", &ports[0]], format!("[::1]:{}", ports[0]), 1),
        (
            vec!["udp-echo", "::1", "--control", "v2", "--control-port", &v2, "--port", &ports[1]],
            format!("[::1]:{}", ports[1]),
            1,
        ),
        (vec!["tcp-connect", "::1", "--control-port", &v1, "--port", &ports[2]], format!("[::1]:{}", ports[2]), 1),
        (
            [
                vec!["udp-jitter", "::1", "--control-port", &v1, "--port", &ports[3], "--precision", "us"],
                train.to_vec(),
            ]
            .concat(),
            format!("[::1]:{}", ports[3]),
            5,
        ),
        ([vec!["stamp", "::1", "--port", &stamp], train.to_vec()].concat(), format!("[::1]:{stamp}"), 5),
        ([vec!["twamp-light", "::1", "--port", &stamp], train.to_vec()].concat(), format!("[::1]:{stamp}"), 5),
        ([vec!["twamp", "::1", "--port", &twamp], train.to_vec()].concat(), format!("[::1]:{twamp}"), 5),
        (vec!["icmp-echo", "::1"], "::1".to_string(), 1),
    ];
    for (args, target, replies) in cases {
        let d = probe(&args);
        assert_eq!(d["return_code"], "ok", "{args:?}: {d}");
        assert_eq!((d["target"].as_str(), d["received"].as_u64()), (Some(target.as_str()), Some(replies)), "{args:?}");
        assert!(d["rtt_us"]["avg"].as_f64().is_some_and(|v| v > 0.0), "{args:?}: {d}");
    }
    // dns to a name server on ::1 only
    if let Some((_server, port)) = crate::dns::dnsmasq("::1") {
        let d = crate::dns::probe_at("::1", port, &["host.test.example", "--record-type", "AAAA"]);
        assert_eq!(d["dns"]["server"], format!("[::1]:{port}"));
        // dnsmasq has no AAAA record for the name: the server was reached over IPv6 and said so
        assert_eq!(d["return_code"], "dns_query_error", "{d}");
        assert_eq!(d["rtt_us"]["count"], 1);
        let d = crate::dns::probe_at("::1", port, &["host.test.example"]);
        assert_eq!(d["return_code"], "ok", "{d}");
    }
}

/// The first control request `ipsla probe KIND ::1 --port 50505 --timeout 7s` sends, as a
/// recording "responder" on ::1 receives it.
fn control_request(kind: &str) -> Vec<u8> {
    let s = UdpSocket::bind("[::1]:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let port = s.local_addr().unwrap().port();
    let mut child = ipsla()
        .args(["probe", kind, "::1", "--control-port", &port.to_string(), "--port", "50505"])
        .args(["--timeout", "7s", "--count", "1", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 1500];
    let got = s.recv_from(&mut buf);
    let _ = child.kill();
    let _ = child.wait();
    let (n, from) = got.unwrap();
    assert!(from.is_ipv6());
    buf[..n].to_vec()
}

#[test]
fn the_v1_control_request_over_ipv6_is_the_68_octet_form() {
    let _machine = crate::common::shared();
    if !ipv6_loopback() {
        return;
    }
    // udp-jitter: the one IPv6 frame known (cmouse's, reference §control): TLV type 8, length 32;
    // udp-echo and tcp-connect: IPv4 code + 4 (6, 7), inferred, not yet seen from a router
    for (kind, tlv, duration_ms) in
        [("udp-jitter", 8u8, 7000 + 10 * 20), ("udp-echo", 6, 7000), ("tcp-connect", 7, 7000)]
    {
        let req = control_request(kind);
        let hex = hex::encode(&req);
        // header: version 1, sequence, length 68; measurement TLV: 4 zero octets, target ::1,
        // port 50505, 2 zero octets, the duration in ms as a u32; then the 28-octet
        // authentication TLV (type 1), zero when unused
        assert_eq!(req.len(), 68, "{kind}: {hex}");
        assert_eq!((req[0], u16::from_be_bytes([req[2], req[3]])), (1, 68), "{kind}: {hex}");
        assert_eq!(&req[8..16], &[0, tlv, 0, 0x20, 0, 0, 0, 0], "{kind}: {hex}");
        let target: [u8; 16] = req[16..32].try_into().unwrap();
        assert_eq!(std::net::Ipv6Addr::from(target), std::net::Ipv6Addr::LOCALHOST, "{kind}: {hex}");
        assert_eq!(&req[32..36], &[0xc5, 0x49, 0, 0], "{kind}: {hex}");
        assert_eq!(u32::from_be_bytes(req[36..40].try_into().unwrap()), duration_ms, "{kind}: {hex}");
        assert_eq!(&req[40..44], &[0x00, 0x01, 0x00, 0x1c], "{kind}: {hex}");
        assert!(req[44..].iter().all(|&b| b == 0), "{kind}: {hex}");
    }
}

#[test]
fn the_agent_measures_over_ipv6() {
    let _machine = crate::common::shared();
    if !ipv6_loopback() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let v1 = free_udp();
    let agent = InProcess::start(
        &AgentToml::new()
            .http(0)
            .store(&dir.path().join("runs.db"))
            .responder(crate::common::Responder::loopback(v1).key("listen", ["::1"]))
            .operation(
                Op::new("udp-jitter", "::1")
                    .id(6)
                    .key("control_port", v1)
                    .key("port", free_udp())
                    .key("packets", 5)
                    .key("interval", "2ms")
                    .key("frequency", "2s")
                    .key("timeout", "1s"),
            )
            .operation(Op::new("icmp-echo", "::1").id(7).key("frequency", "1s").key("timeout", "1s")),
    );
    let http = agent.http();
    for (id, target, replies) in [(6, "[::1]:", 5), (7, "::1", 1)] {
        let latest: Value = wait_some("a stored run over IPv6", Duration::from_secs(60), || {
            get(http, &format!("/api/v1/operations/{id}/latest"))
                .filter(|(c, _)| *c == 200)
                .and_then(|(_, b)| serde_json::from_str(&b).ok())
        });
        assert_eq!(latest["return_code"], "ok", "{latest}");
        assert!(latest["target"].as_str().unwrap().starts_with(target), "{latest}");
        assert_eq!(latest["received"], replies);
    }
}
