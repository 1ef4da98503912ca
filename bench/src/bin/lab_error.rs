//! How close the reported delays are to the lab's ground truth: the per-packet µs/ms error
//! distributions that the tests no longer bound (a loaded machine can exceed any such bound; the
//! tests keep the exact counts and the physical bounds, crates/cli/tests/it/lab_truth.rs).
//!
//! 1. The link itself: how late its forwarder writes a packet after the release time the
//!    impairment scheduled (a 2 ms link, 3 × PACKETS datagrams 1 ms apart), and the span of 10
//!    back-to-back packets through a 1 Mbit/s rate limit against the 9 serialisation times it
//!    should take (PACKETS / 15 bursts).
//! 2. `ipsla probe` in host A against the responder in host B across the lab's loss scenario
//!    (3 ms ± 0.3 ms uniform with 6 % loss out; 2 ms with Gilbert–Elliott loss and 4 % duplicates
//!    back): udp-jitter at µs and ms precision, STAMP (stateful reflector) and TWAMP, each packet's
//!    SD, DS and RTT minus the time the link held it, as p50 / p99 / max of |error| and the
//!    smallest signed error (negative = less than the link held it).
//! 3. udp-echo, icmp-echo and tcp-connect: RTT minus the link's hold (includes the far end's
//!    turnaround), PACKETS / 15 runs each.
//!
//! Needs root, /dev/net/tun, iproute2 and `target/release/ipsla` (cargo build --release); says
//! "skipped" and exits 0 without root.
//! Usage: cargo build --release -p ipsla -p ipsla-bench && ./target/release/lab_error [PACKETS]
//! (default 300; scripts/test.sh smoke-runs it with 30).

use ipsla_core::responder::ResponderConfig;
use ipsla_lab::{Dir, Format, Host, Impairment, Lab, Link, LinkConfig, Record, egress, loss_scenario, truth};
use ipsla_net::responder::{ResponderOptions, RunningResponder, spawn_responder};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

const PORT: u16 = 16384;
const STAMP_PORT: u16 = 862;
const TWAMP_TEST_PORT: u16 = 18760;
const MS: Duration = Duration::from_millis(1);

fn ipsla() -> String {
    format!("{}/../target/release/ipsla", env!("CARGO_MANIFEST_DIR"))
}

/// p50, p99, max of the absolute values; the smallest signed value; the count.
fn summary(v: &[f64]) -> String {
    if v.is_empty() {
        return "no samples".into();
    }
    let mut a: Vec<f64> = v.iter().map(|x| x.abs()).collect();
    a.sort_by(f64::total_cmp);
    let at = |p: f64| a[((p * a.len() as f64).ceil() as usize).clamp(1, a.len()) - 1];
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    format!(
        "|err| p50 {:8.1} µs  p99 {:8.1} µs  max {:8.1} µs  (min signed {:8.1} µs, {} packets)",
        at(0.5),
        at(0.99),
        a[a.len() - 1],
        min,
        v.len()
    )
}

struct Setup {
    _lab: Lab,
    a: Host,
    link: Link,
    _responder: RunningResponder,
}

fn setup(name: &str, cfg: LinkConfig) -> Setup {
    let mut lab = Lab::new(name).unwrap();
    let a = lab.host("a").unwrap();
    let b = lab.host("b").unwrap();
    let link = lab.link(&a, &b, cfg).unwrap();
    let ip: IpAddr = link.b_addr().into();
    let responder = b
        .run(move || {
            spawn_responder(ResponderOptions {
                listen: vec![ip],
                core: ResponderConfig::default(),
                stamp: vec![SocketAddr::new(ip, STAMP_PORT)],
                stamp_stateful: true,
                twamp: vec![SocketAddr::new(ip, STAMP_PORT)],
                twamp_config: ipsla_core::twamp::server::ServerConfig {
                    test_ports: TWAMP_TEST_PORT..=TWAMP_TEST_PORT,
                    ..Default::default()
                },
                ..ResponderOptions::default()
            })
        })
        .unwrap()
        .unwrap();
    Setup { _lab: lab, a, link, _responder: responder }
}

fn probe(s: &Setup, args: &[&str]) -> Value {
    let out = s.a.command(ipsla()).arg("probe").args(args).args(["--json", "--samples"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().next().unwrap_or("null")).unwrap_or(Value::Null)
}

/// Per sequence: the link's hold A→B and B→A of the first delivered copies, µs.
fn held(link: &Link, f: Format, port: u16, n: u32) -> BTreeMap<u32, (f64, f64)> {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    truth(link, n, f, port).held.into_iter().map(|(s, (ab, ba))| (s, (us(ab), us(ba)))).collect()
}

/// Signed errors (measured − hold) of SD, DS and RTT, µs.
fn errors(d: &Value, held: &BTreeMap<u32, (f64, f64)>) -> [Vec<f64>; 3] {
    let mut e: [Vec<f64>; 3] = Default::default();
    for s in d["samples"].as_array().into_iter().flatten() {
        if s["duplicate"].as_bool() == Some(true) || s["late"].as_bool() == Some(true) {
            continue;
        }
        let Some((ab, ba)) = s["seq"].as_u64().and_then(|q| held.get(&(q as u32))) else { continue };
        for (i, (k, t)) in [("sd_us", *ab), ("ds_us", *ba), ("rtt_us", ab + ba)].into_iter().enumerate() {
            if let Some(m) = s[k].as_f64() {
                e[i].push(m - t);
            }
        }
    }
    e
}

fn the_link(n: u32) {
    let mut lab = Lab::new("benchlink").unwrap();
    let a = lab.host("a").unwrap();
    let b = lab.host("b").unwrap();
    let link = lab.link(&a, &b, LinkConfig::symmetric(Impairment::delay(2 * MS), 7)).unwrap();
    let dst = SocketAddr::from((link.b_addr(), 9000));
    let _rx = b.run(move || UdpSocket::bind(dst).unwrap()).unwrap();
    a.run(move || {
        let tx = UdpSocket::bind("0.0.0.0:0").unwrap();
        for i in 0..n * 3 {
            tx.send_to(&i.to_be_bytes(), dst).unwrap();
            std::thread::sleep(MS);
        }
    })
    .unwrap();
    link.drain(Duration::from_secs(1));
    let late: Vec<f64> = link
        .records()
        .iter()
        .filter(|r| r.dir == Dir::AtoB && r.tuple.is_some_and(|t| t.proto == 17))
        .filter_map(|r| r.late())
        .map(|d| d.as_secs_f64() * 1e6)
        .collect();
    println!("link: egress − scheduled release, 2 ms link     {}", summary(&late));

    // 1 Mbit/s: a 4-byte datagram is a 32-byte IP packet = 256 µs on the wire
    let rate = Impairment { rate_bps: Some(1_000_000), ..Impairment::default() };
    let link = lab.link(&a, &b, LinkConfig { a_to_b: rate, b_to_a: Impairment::default(), seed: 1 }).unwrap();
    let dst = SocketAddr::from((link.b_addr(), 9001));
    let _rx = b.run(move || UdpSocket::bind(dst).unwrap()).unwrap();
    let mut spans = Vec::new();
    for _ in 0..(n / 15).max(1) {
        link.clear_log();
        a.run(move || {
            let tx = UdpSocket::bind("0.0.0.0:0").unwrap();
            for i in 0..10u32 {
                tx.send_to(&i.to_be_bytes(), dst).unwrap();
            }
        })
        .unwrap();
        link.drain(Duration::from_secs(1));
        let eg: Vec<Duration> = link
            .records()
            .iter()
            .filter(|r| r.dir == Dir::AtoB && r.tuple.is_some_and(|t| t.proto == 17))
            .map(egress)
            .collect();
        if eg.len() == 10 && eg[9] != Duration::MAX {
            spans.push((eg[9] - eg[0]).as_secs_f64() * 1e6 - 9.0 * 256.0);
        }
    }
    println!("link: 10 packets at 1 Mbit/s, span − 9 × 256 µs {}", summary(&spans));
}

fn main() {
    if !ipsla_lab::available() {
        println!("skipped: the lab needs root, /dev/net/tun and iproute2");
        return;
    }
    let n: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(300);
    let count = n.to_string();
    the_link(n);

    let s = setup("bench", loss_scenario());
    let addr = s.link.b_addr().to_string();
    let port = STAMP_PORT.to_string();
    // the tests' 2 s timeout; a short smoke run (test.sh) waits less for the lost packets
    let timeout = if n >= 100 { "2s" } else { "300ms" };
    let common = ["--packets", count.as_str(), "--interval", "5ms", "--timeout", timeout, "--clock-sync", "assume"];
    let jitter = |p: &'static str| {
        [vec!["udp-jitter", addr.as_str(), "--port", "16384", "--precision", p], common.to_vec()].concat()
    };
    let runs: [(&str, Vec<&str>, Format, u16); 4] = [
        ("udp-jitter µs", jitter("us"), Format::CiscoUs, PORT),
        ("udp-jitter ms", jitter("ms"), Format::CiscoMs, PORT),
        (
            "stamp",
            [vec!["stamp", addr.as_str(), "--port", port.as_str()], common.to_vec()].concat(),
            Format::Stamp,
            STAMP_PORT,
        ),
        (
            "twamp",
            [vec!["twamp", addr.as_str(), "--port", port.as_str()], common.to_vec()].concat(),
            Format::Stamp,
            TWAMP_TEST_PORT,
        ),
    ];
    for (name, args, f, port) in runs {
        s.link.clear_log();
        let d = probe(&s, &args);
        s.link.drain(Duration::from_secs(1));
        let e = errors(&d, &held(&s.link, f, port, n));
        for (what, v) in ["SD ", "DS ", "RTT"].iter().zip(&e) {
            println!("{name:14} {what} − link hold {}", summary(v));
        }
    }
    drop(s);

    let s = setup(
        "benchecho",
        LinkConfig { a_to_b: Impairment::delay(4 * MS), b_to_a: Impairment::delay(3 * MS), seed: 5 },
    );
    let addr = s.link.b_addr().to_string();
    for (name, args, proto, port) in [
        ("udp-echo", vec!["udp-echo", addr.as_str(), "--port", "16390"], 17u8, 16390u16),
        ("icmp-echo", vec!["icmp-echo", addr.as_str()], 1, 0),
        ("tcp-connect", vec!["tcp-connect", addr.as_str(), "--port", "16391"], 6, 16391),
    ] {
        let mut e = Vec::new();
        for _ in 0..(n / 15).max(1) {
            s.link.clear_log();
            let d = probe(&s, &args);
            s.link.drain(Duration::from_secs(1));
            let recs = s.link.records();
            let mine: Vec<&Record> = recs
                .iter()
                .filter(|r| {
                    r.tuple.is_some_and(|t| t.proto == proto && (port == 0 || t.dport == port || t.sport == port))
                })
                .collect();
            // udp-echo and icmp-echo: the probe and its echo; tcp-connect: SYN and SYN/ACK
            let truth: f64 = mine.iter().take(2).filter_map(|r| r.held()).map(|d| d.as_secs_f64() * 1e6).sum();
            if let Some(rtt) = d["rtt_us"]["max"].as_f64() {
                e.push(rtt - truth);
            }
        }
        println!("{name:14} RTT − link hold {}", summary(&e));
    }
}
