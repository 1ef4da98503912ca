//! The dns operation against a real name server (Debian's `dnsmasq`, started by each test on a
//! loopback port) and against hostile ones written here: a silent server, one that answers
//! garbage, one that answers with another query's id. From `ipsla probe dns` and from the agent
//! (its API and /metrics).
//!
//! The real-server tests are skipped, with the reason printed, when `dnsmasq` is not on PATH
//! (`scripts/test.sh` installs it with apt).

use crate::common::{AgentToml, InProcess, Killed, Op, api, free_udp, get, ipsla, on_path, wait_some};
use serde_json::Value;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

/// 250 octets: three of them in one TXT record make an answer longer than the 512 octets of a
/// UDP answer without EDNS, which the server truncates.
fn chunk(c: char) -> String {
    std::iter::repeat_n(c, 250).collect()
}

/// dnsmasq on `listen`:port (UDP and TCP; 127.0.0.1 or ::1), authoritative for the test names only: `host.test.example`
/// is 192.0.2.7 and 192.0.2.8, names under `nx.example` do not exist, `big.test.example` has a
/// 750-octet TXT record.
pub(crate) fn dnsmasq(listen: &str) -> Option<(Killed, u16)> {
    let Some(bin) = on_path("dnsmasq").or_else(|| on_path("/usr/sbin/dnsmasq")).or_else(|| {
        let p = std::path::PathBuf::from("/usr/sbin/dnsmasq");
        p.is_file().then_some(p)
    }) else {
        eprintln!("skipped: dnsmasq is not installed (apt-get install dnsmasq-base)");
        return None;
    };
    let port = free_udp();
    let child = Command::new(bin)
        .args(["--no-daemon", "-C", "/dev/null", "--pid-file=", "--bind-interfaces"])
        .arg(format!("--listen-address={listen}"))
        .arg(format!("--port={port}"))
        .args(["--no-resolv", "--no-hosts", "--address=/host.test.example/192.0.2.7"])
        .args(["--host-record=host.test.example,192.0.2.7", "--host-record=host.test.example,192.0.2.8"])
        .args(["--address=/nx.example/"])
        .arg(format!("--txt-record=big.test.example,{},{},{}", chunk('a'), chunk('b'), chunk('c')))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let k = Killed(child);
    // ready once it answers a query
    wait_some("dnsmasq answering", Duration::from_secs(20), || {
        let j = probe_at(listen, port, &["host.test.example", "--timeout", "200ms"]);
        (j["return_code"] == "ok").then_some(())
    });
    Some((k, port))
}

/// `ipsla probe dns ARGS --name-server 127.0.0.1 --port PORT --count 1 --json`.
fn probe(port: u16, args: &[&str]) -> Value {
    probe_at("127.0.0.1", port, args)
}

/// `ipsla probe dns ARGS --name-server SERVER --port PORT --count 1 --json`.
pub(crate) fn probe_at(server: &str, port: u16, args: &[&str]) -> Value {
    let out = ipsla()
        .args(["probe", "dns"])
        .args(args)
        .args(["--name-server", server, "--port", &port.to_string(), "--count", "1", "--json"])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

fn datas(j: &Value) -> Vec<&str> {
    j["dns"]["answer"]["answers"].as_array().unwrap().iter().map(|r| r["data"].as_str().unwrap()).collect()
}

#[test]
fn a_real_name_server_answers_and_its_answer_is_judged() {
    let _machine = crate::common::shared();
    let Some((_server, port)) = dnsmasq("127.0.0.1") else { return };

    let ok = probe(port, &["host.test.example", "--expect-answer", "192.0.2.8"]);
    assert_eq!(ok["return_code"], "ok", "{ok}");
    assert_eq!((ok["target"].as_str(), ok["rtt_us"]["count"].as_u64()), (Some("host.test.example"), Some(1)));
    assert!(ok["rtt_us"]["avg"].as_f64().unwrap() > 0.0);
    let mut got = datas(&ok);
    got.sort();
    assert_eq!(got, ["192.0.2.7", "192.0.2.8"]);
    let d = &ok["dns"];
    assert_eq!((d["server"].as_str(), d["record_type"].as_str()), (Some(&*format!("127.0.0.1:{port}")), Some("A")));
    assert_eq!((d["answer"]["rcode"].as_str(), d["answer"]["transport"].as_str()), (Some("NoError"), Some("udp")));
    assert_eq!((d["answer"]["answer_count"].as_u64(), d["ignored"].as_u64()), (Some(2), Some(0)));

    // the server answered, not as asked: a query error, with the RTT of the answer
    let wrong = probe(port, &["host.test.example", "--expect-answer", "192.0.2.9"]);
    assert_eq!(wrong["return_code"], "dns_query_error");
    assert_eq!(wrong["rtt_us"]["count"], 1);
    let reason = wrong["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!("127.0.0.1:{port} answered host.test.example A with 192.0.2."))
            && reason.ends_with(", not the expected 192.0.2.9"),
        "{reason}"
    );
    let nx = probe(port, &["a.nx.example"]);
    assert_eq!(nx["return_code"], "dns_query_error");
    assert_eq!(nx["reason"], format!("127.0.0.1:{port} answered NXDomain to a.nx.example A"));
    assert_eq!(nx["dns"]["answer"]["rcode"], "NXDomain");
    let no_aaaa = probe(port, &["host.test.example", "--record-type", "aaaa"]);
    assert_eq!(no_aaaa["return_code"], "dns_query_error", "{no_aaaa}");
    assert_eq!(no_aaaa["dns"]["record_type"], "AAAA");
}

#[test]
fn a_truncated_answer_is_fetched_over_tcp() {
    let _machine = crate::common::shared();
    let Some((_server, port)) = dnsmasq("127.0.0.1") else { return };
    let j = probe(port, &["big.test.example", "--record-type", "TXT"]);
    assert_eq!(j["return_code"], "ok", "{j}");
    assert_eq!(j["dns"]["answer"]["transport"], "tcp");
    assert_eq!(datas(&j), [format!("{}{}{}", chunk('a'), chunk('b'), chunk('c'))]);
    assert_eq!(j["rtt_us"]["count"], 1);
}

/// A UDP "name server" on loopback that answers every query with `answer(query)` (nothing when
/// `None`), for `queries` queries, then stops.
fn fake_server(queries: usize, answer: fn(&[u8]) -> Vec<Vec<u8>>) -> (std::thread::JoinHandle<usize>, u16) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let port = s.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        let mut seen = 0;
        while seen < queries {
            let Ok((n, from)) = s.recv_from(&mut buf) else { break };
            seen += 1;
            for a in answer(&buf[..n]) {
                s.send_to(&a, from).unwrap();
            }
        }
        seen
    });
    (h, port)
}

#[test]
fn silent_garbled_and_forged_servers_get_their_return_codes() {
    let _machine = crate::common::shared();
    // silent: a server timeout that says so, and no RTT
    let (h, port) = fake_server(1, |_| Vec::new());
    let j = probe(port, &["host.test.example", "--timeout", "300ms"]);
    assert_eq!((j["return_code"].as_str(), j["rtt_us"]["count"].as_u64()), (Some("dns_server_timeout"), Some(0)));
    assert!(j["rtt_us"]["avg"].is_null());
    assert_eq!(
        j["reason"],
        format!("no answer from 127.0.0.1:{port} in 300 ms: is a name server listening there and allowed through?")
    );
    assert_eq!(j["dns"]["answer"], Value::Null);
    assert_eq!(h.join().unwrap(), 1);

    // garbage, a large datagram among it: counted, then a query error that says why (1,400
    // zeros parse as a DNS message, another one's: ignored, not malformed)
    let (h, port) = fake_server(1, |q| vec![vec![0xff; 12], vec![0u8; 1400], q[..2].to_vec(), vec![0x5a; 65_000]]);
    let j = probe(port, &["host.test.example", "--timeout", "300ms"]);
    assert_eq!(j["return_code"], "dns_query_error", "{j}");
    assert_eq!((j["dns"]["ignored"].as_u64(), j["dns"]["malformed"].as_u64()), (Some(4), Some(3)));
    assert_eq!(j["reason"], format!("127.0.0.1:{port} sent 3 malformed message(s) and no valid answer in 300 ms"));
    assert_eq!(j["rtt_us"]["count"], 0);
    h.join().unwrap();

    // an answer with another id first (ignored), then the right one: OK, one datagram ignored
    let (h, port) = fake_server(1, |q| {
        let mut forged = q.to_vec();
        forged[0] ^= 0xff;
        forged[2] |= 0x80; // QR: a response
        let mut right = q.to_vec();
        right[2] |= 0x80;
        // NoError with an empty answer section: the name has no A record
        vec![forged, right]
    });
    let j = probe(port, &["host.test.example", "--timeout", "2s"]);
    assert_eq!(j["return_code"], "dns_query_error", "{j}");
    assert_eq!((j["dns"]["ignored"].as_u64(), j["dns"]["malformed"].as_u64()), (Some(1), Some(0)));
    assert_eq!(
        j["reason"],
        format!("127.0.0.1:{port} answered host.test.example A with no A record (0 other records in the answer)")
    );
    assert_eq!(j["rtt_us"]["count"], 1, "the right answer came: its RTT is real");
    h.join().unwrap();

    // nothing listening: refused at once, in the name server's words
    let closed = free_udp();
    let j = probe(closed, &["host.test.example", "--timeout", "5s"]);
    assert_eq!(j["return_code"], "dns_server_timeout");
    assert_eq!(
        j["reason"],
        format!(
            "nothing listens on 127.0.0.1:{closed} (ICMP port unreachable): is the name server running there, on that port?"
        )
    );
}

#[test]
fn the_agent_runs_stores_and_exports_dns() {
    let _machine = crate::common::shared();
    let Some((_server, port)) = dnsmasq("127.0.0.1") else { return };
    let dir = tempfile::tempdir().unwrap();
    let agent = InProcess::start(
        &AgentToml::new().http(0).store(&dir.path().join("runs.db")).operation(
            Op::new("dns", "host.test.example")
                .id(53)
                .key("name_server", "127.0.0.1")
                .key("port", port)
                .key("expect_answer", "192.0.2.7")
                .key("timeout", "1s")
                .key("frequency", "2s"),
        ),
    );
    let http = agent.http();
    let latest = wait_some("a stored dns run", Duration::from_secs(60), || {
        get(http, "/api/v1/operations/53/latest").filter(|(c, _)| *c == 200).map(|(_, b)| b)
    });
    let latest: Value = serde_json::from_str(&latest).unwrap();
    assert_eq!(latest["return_code"], "ok", "{latest}");
    assert_eq!(latest["dns"]["answer"]["answer_count"], 2);
    let ops = api(http, "/api/v1/operations");
    assert!(ops.to_string().contains("\"type\":\"dns\""), "{ops}");
    let (_, metrics) = get(http, "/metrics").unwrap();
    assert!(metrics.contains("ipsla_dns_answer_records{op=\"53\"} 2"), "{metrics}");
    assert!(metrics.contains("ipsla_dns_response_code{op=\"53\",rcode=\"NoError\"} 1"), "{metrics}");
    assert!(metrics.contains("ipsla_operation_return_code{op=\"53\",code=\"ok\"} 1"), "{metrics}");
    assert!(metrics.contains("ipsla_operation_info{op=\"53\",type=\"dns\",target=\"host.test.example\""), "{metrics}");
    // `ipsla show statistics` reads the stored run back: the kind's lines come from its detail
    let out =
        ipsla().args(["show", "statistics", "53", "--agent", &format!("http://127.0.0.1:{http}")]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("DNS query: host.test.example A to 127.0.0.1:{port}")), "{text}");
    assert!(text.contains("Response code: NoError  Answer records: 2"), "{text}");
    // and the operation's web page shows the same lines under "Latest run"
    let (code, page) = get(http, "/operations/53?part=main").unwrap();
    assert_eq!(code, 200);
    let latest = page.split("<h3>Latest run</h3>").nth(1).unwrap_or_else(|| panic!("{page}"));
    assert!(latest.contains(&format!("DNS query: host.test.example A to 127.0.0.1:{port}")), "{page}");
}
