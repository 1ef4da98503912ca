//! Ground truth: `ipsla probe` in one network namespace, `ipsla responder` in another, joined by
//! the lab's impairment link. Every count the probe reports is checked against the link's log of
//! what happened to each packet exactly, and every per-packet delay against the time the link
//! held it within the bounds of physics: never less than the link held it, and never off by a
//! second. How close the delays are on a quiet machine (µs) is a benchmark, not a test:
//! bench/src/bin/lab_error.rs, recorded in bench/RESULTS.md. Needs root; skipped (with a message)
//! without it.

use crate::common::{PATIENCE, alone, ipsla, wait_for};
use ipsla_core::responder::ResponderConfig;
use ipsla_lab::{
    Delay, Dir, DropReason, Fate, Format, Host, Impairment, Lab, Link, LinkConfig, Loss, Record, Truth, loss_scenario,
    truth,
};
use ipsla_net::responder::{ResponderOptions, RunningResponder, spawn_responder};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const PORT: u16 = 16384;
const STAMP_PORT: u16 = 862;
const TWAMP_TEST_PORT: u16 = 18760;
const MS: Duration = Duration::from_millis(1);

struct Setup {
    _lab: Lab,
    a: Host,
    link: Link,
    _responder: RunningResponder,
}

fn setup(name: &str, cfg: LinkConfig) -> Option<Setup> {
    setup_with(name, cfg, |_| ResponderOptions::default())
}

/// A lab whose host B runs a responder listening on its link address with `extra(address)`'s
/// reflectors and settings.
fn setup_with(name: &str, cfg: LinkConfig, extra: fn(IpAddr) -> ResponderOptions) -> Option<Setup> {
    if !ipsla_lab::available() {
        eprintln!("skipped: the lab needs root, /dev/net/tun and iproute2");
        return None;
    }
    let mut lab = Lab::new(name).unwrap();
    let a = lab.host("a").unwrap();
    let b = lab.host("b").unwrap();
    let link = lab.link(&a, &b, cfg).unwrap();
    let b_addr = link.b_addr();
    let responder = b
        .run(move || {
            spawn_responder(ResponderOptions {
                listen: vec![b_addr.into()],
                core: ResponderConfig::default(),
                ..extra(b_addr.into())
            })
        })
        .unwrap()
        .unwrap();
    Some(Setup { _lab: lab, a, link, _responder: responder })
}

fn probe(s: &Setup, args: &[&str]) -> Value {
    let out =
        s.a.command(ipsla().get_program()).arg("probe").args(args).args(["--json", "--samples"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.code() != Some(2), "usage error: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(text.lines().next().unwrap_or("null")).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn counts(d: &Value) -> Truth {
    let l = &d["loss"];
    let g = |v: &Value| v.as_u64().unwrap() as u32;
    Truth {
        received: g(&d["received"]),
        sd: g(&l["sd"]),
        ds: g(&l["ds"]),
        mia: g(&l["mia"]),
        duplicates: g(&l["duplicates"]),
        out_of_sequence: g(&l["out_of_sequence"]),
        held: BTreeMap::new(),
    }
}

/// measured − link hold per packet for SD, DS and RTT, µs, sorted.
fn errors(d: &Value, t: &Truth) -> [Vec<f64>; 3] {
    let mut e: [Vec<f64>; 3] = Default::default();
    for s in d["samples"].as_array().unwrap() {
        if s["duplicate"].as_bool().unwrap() || s["late"].as_bool().unwrap() {
            continue;
        }
        let seq = s["seq"].as_u64().unwrap() as u32;
        let Some((ab, ba)) = t.held.get(&seq) else { continue };
        let (ab, ba) = (ab.as_secs_f64() * 1e6, ba.as_secs_f64() * 1e6);
        let err = |m: &Value, truth: f64| m.as_f64().unwrap() - truth;
        e[0].push(err(&s["sd_us"], ab));
        e[1].push(err(&s["ds_us"], ba));
        e[2].push(err(&s["rtt_us"], ab + ba));
    }
    for v in &mut e {
        v.sort_by(f64::total_cmp);
    }
    e
}

fn jitter_args<'a>(addr: &'a str, n: &'a str, precision: &'a str) -> Vec<&'a str> {
    vec![
        "udp-jitter",
        addr,
        "--port",
        "16384",
        "--packets",
        n,
        "--interval",
        "5ms",
        "--timeout",
        "2s",
        "--precision",
        precision,
        "--clock-sync",
        "assume",
    ]
}

/// A gross error, µs: no delay is off by a second unless something is broken (a unit, a clock, a
/// sample matched to the wrong packet); a loaded machine adds ms, not that.
const GROSS: f64 = 1_000_000.0;

/// How far below the link's hold time a measurement can read, µs: each timestamp is taken before
/// the link reads a packet or after it writes it, so only the timestamps' resolution (1 µs, the
/// responder's T3 lead is its smallest observed, less a margin) or, at ms precision, their
/// truncation to the ms (twice in an RTT) can make it read less.
fn floor(whole_ms: bool) -> f64 {
    if whole_ms { 2000.0 } else { 10.0 }
}

/// Jittered delay and random loss out, bursty loss and duplicates back.

#[test]
fn udp_jitter_loss_both_ways_and_reply_duplicates() {
    let _machine = alone();
    let Some(s) = setup("loss", loss_scenario()) else { return };
    for precision in ["us", "ms"] {
        s.link.clear_log();
        let addr = s.link.b_addr().to_string();
        let d = probe(&s, &jitter_args(&addr, "300", precision));
        s.link.drain(Duration::from_secs(1));
        let t = truth(&s.link, 300, Format::of(precision), PORT);
        assert_matches_log(precision, &d, &t, precision == "ms");
    }
}

/// Asserts that the probe's counts equal the link log's and its per-packet SD, DS and RTT are
/// no less than the link's hold times and not grossly more (`whole_ms`: timestamps truncated to
/// the ms).
fn assert_matches_log(precision: &str, d: &Value, t: &Truth, whole_ms: bool) {
    let got = counts(d);
    eprintln!("{precision}: probe {got:?}");
    assert!(t.sd > 0 && t.ds > 0 && t.duplicates > 0, "the scenario exercises every count: {t:?}");
    let probe_seen: BTreeSet<u32> = d["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| !x["duplicate"].as_bool().unwrap())
        .map(|x| x["seq"].as_u64().unwrap() as u32)
        .collect();
    let log_seen: BTreeSet<u32> = t.held.keys().copied().collect();
    assert_eq!(
        (got.received, got.sd, got.ds, got.mia),
        (t.received, t.sd, t.ds, t.mia),
        "{precision}: replies only the probe saw {:?}, only the log delivered {:?}; return code {}",
        probe_seen.difference(&log_seen).collect::<Vec<_>>(),
        log_seen.difference(&probe_seen).collect::<Vec<_>>(),
        d["return_code"]
    );
    assert_eq!(got.duplicates, t.duplicates, "{precision}");
    assert_eq!(got.out_of_sequence, t.out_of_sequence, "{precision}");
    let e = errors(d, t);
    assert_eq!(e[2].len(), t.held.len(), "{precision}: a sample for every delivered reply");
    for (name, v) in ["SD", "DS", "RTT"].iter().zip(&e) {
        let (min, max) = (v[0], v[v.len() - 1]);
        eprintln!("{precision}: {name} − link hold over {} packets: {min:.1} .. {max:.1} µs", v.len());
        assert!(min >= -floor(whole_ms), "{precision}: {name} reads {min} µs less than the link held it");
        assert!(max < GROSS, "{precision}: {name} off by {max} µs");
    }
}

#[test]
fn udp_jitter_reordering_and_probe_duplicates() {
    let _machine = alone();
    let cfg = LinkConfig {
        a_to_b: Impairment {
            delay: Delay { base: MS, ..Delay::default() },
            reorder: 0.08,
            reorder_extra: 12 * MS,
            duplicate: 0.05,
            ..Impairment::default()
        },
        b_to_a: Impairment {
            delay: Delay { base: MS, ..Delay::default() },
            reorder: 0.05,
            reorder_extra: 9 * MS,
            ..Impairment::default()
        },
        seed: 77,
    };
    let Some(s) = setup("reorder", cfg) else { return };
    let addr = s.link.b_addr().to_string();
    let d = probe(&s, &jitter_args(&addr, "300", "us"));
    s.link.drain(Duration::from_secs(1));
    let t = truth(&s.link, 300, Format::CiscoUs, PORT);
    let got = counts(&d);
    assert!(t.out_of_sequence > 0 && t.duplicates > 0, "{t:?}");
    assert_eq!((got.received, got.sd, got.ds, got.mia), (300, 0, 0, 0), "nothing was lost");
    assert_eq!((got.duplicates, got.out_of_sequence), (t.duplicates, t.out_of_sequence));
}

#[test]
fn voice_scores_fall_as_impairment_rises() {
    let _machine = alone();
    let Some(s) = setup("voice", LinkConfig::default()) else { return };
    let addr = s.link.b_addr().to_string();
    let mut last = (5.0, 0);
    for (delay_ms, loss) in [(1u64, 0.0), (40, 0.01), (120, 0.03), (200, 0.06)] {
        let imp = Impairment {
            delay: Delay { base: MS * delay_ms as u32, ..Delay::default() },
            loss: Loss::Bernoulli(loss),
            ..Impairment::default()
        };
        s.link.set_impairment(Dir::AtoB, imp.clone());
        s.link.set_impairment(Dir::BtoA, Impairment { loss: Loss::None, ..imp });
        let d = probe(
            &s,
            &[
                "udp-jitter",
                &addr,
                "--port",
                "16384",
                "--codec",
                "g711ulaw",
                "--packets",
                "200",
                "--interval",
                "2ms",
                "--timeout",
                "2s",
            ],
        );
        let v = &d["voice"];
        let (mos, icpif) = (v["mos"].as_f64().unwrap(), v["icpif"].as_u64().unwrap());
        eprintln!("delay {delay_ms} ms each way, loss {loss}: MOS {mos}, ICPIF {icpif}");
        assert!(mos < last.0 && icpif > last.1 || (delay_ms == 1 && icpif == 0), "{mos} {icpif} after {last:?}");
        last = (mos, icpif);
    }
}

fn single(s: &Setup, args: &[&str]) -> (Value, Vec<Record>) {
    s.link.clear_log();
    let d = probe(s, args);
    s.link.drain(Duration::from_secs(1));
    (d, s.link.records())
}

#[test]
fn echo_icmp_and_tcp_rtts_match_the_link() {
    let _machine = alone();
    let imp = |ms: u32| Impairment::delay(MS * ms);
    let Some(s) = setup("single", LinkConfig { a_to_b: imp(4), b_to_a: imp(3), seed: 5 }) else { return };
    let addr = s.link.b_addr().to_string();
    let held = |recs: &[Record], pred: &dyn Fn(&Record) -> bool| -> f64 {
        recs.iter().filter(|r| pred(r)).filter_map(|r| r.held()).map(|d| d.as_secs_f64() * 1e6).sum()
    };

    // udp-echo: one probe and its echo
    let (d, recs) = single(&s, &["udp-echo", &addr, "--port", "16390"]);
    assert_eq!(d["return_code"], "ok");
    let truth = held(&recs, &|r| r.tuple.is_some_and(|t| t.dport == 16390 || t.sport == 16390));
    let rtt = d["rtt_us"]["max"].as_f64().unwrap();
    eprintln!("udp-echo RTT {rtt:.1} µs, link held {truth:.1} µs");
    // A type-1 probe carries no responder timestamps: its RTT includes the responder's turnaround
    // (wake-up, echo, send), tens of µs to a few hundred on a quiet machine, more under load.
    assert!(rtt >= truth && rtt - truth < GROSS, "udp-echo RTT {rtt} vs {truth}");

    // icmp-echo against host B's kernel
    let (d, recs) = single(&s, &["icmp-echo", &addr]);
    assert_eq!(d["return_code"], "ok", "{d}");
    let truth = held(&recs, &|r| r.tuple.is_some_and(|t| t.proto == 1));
    let rtt = d["rtt_us"]["max"].as_f64().unwrap();
    eprintln!("icmp-echo RTT {rtt:.1} µs, link held {truth:.1} µs");
    assert!(rtt >= truth && rtt - truth < GROSS, "icmp-echo RTT {rtt} vs {truth}");

    // tcp-connect: SYN out, SYN/ACK back
    let (d, recs) = single(&s, &["tcp-connect", &addr, "--port", "16391"]);
    assert_eq!(d["return_code"], "ok", "{d}");
    let tcp: Vec<&Record> = recs.iter().filter(|r| r.tuple.is_some_and(|t| t.proto == 6)).collect();
    let truth: f64 = tcp.iter().take(2).filter_map(|r| r.held()).map(|d| d.as_secs_f64() * 1e6).sum();
    let rtt = d["rtt_us"]["max"].as_f64().unwrap();
    eprintln!("tcp-connect RTT {rtt:.1} µs, SYN + SYN/ACK held {truth:.1} µs");
    // the handshake time is taken in userspace at both ends of the connect call
    assert!(rtt >= truth && rtt - truth < GROSS, "tcp-connect RTT {rtt} vs {truth}");
}

#[test]
fn icmp_jitter_losses_match_the_link() {
    let _machine = alone();
    let imp = Impairment {
        delay: Delay { base: 2 * MS, ..Delay::default() },
        loss: Loss::Bernoulli(0.1),
        ..Impairment::default()
    };
    let Some(s) = setup("icmpj", LinkConfig::symmetric(imp, 11)) else { return };
    let addr = s.link.b_addr().to_string();
    let (d, recs) = single(&s, &["icmp-jitter", &addr, "--packets", "100", "--interval", "5ms", "--timeout", "1s"]);
    let icmp: Vec<&Record> = recs.iter().filter(|r| r.tuple.is_some_and(|t| t.proto == 1)).collect();
    let requests_ok = icmp.iter().filter(|r| r.dir == Dir::AtoB && r.delivered()).count();
    let replies_ok = icmp.iter().filter(|r| r.dir == Dir::BtoA && r.delivered()).count();
    assert_eq!(d["received"].as_u64().unwrap() as usize, replies_ok);
    assert!(requests_ok > replies_ok, "some replies were lost too");
    // no receive counter in ICMP: every loss is of unknown direction
    assert_eq!(d["loss"]["mia"].as_u64().unwrap() as usize, 100 - replies_ok);
    assert_eq!((d["loss"]["sd"].as_u64(), d["loss"]["ds"].as_u64()), (Some(0), Some(0)));
    // RTT in whole ms: 2 + 2 ms of link, less at most one ms boundary, and no gross error
    let (min, max) = (d["rtt_us"]["min"].as_f64().unwrap(), d["rtt_us"]["max"].as_f64().unwrap());
    assert!(min >= 3000.0 && max < GROSS, "{min}..{max}");
}

#[test]
fn link_down_mid_run_is_counted() {
    let _machine = alone();
    let Some(s) = setup("down", LinkConfig::symmetric(Impairment::delay(MS), 1)) else { return };
    let addr = s.link.b_addr().to_string();
    let link = s.link.clone();
    // down once 60 probes went through, up again once 40 met the outage (counted in the link's
    // log, not timed: a loaded machine sends them later)
    let flap = std::thread::spawn(move || {
        let probes = |fate: &dyn Fn(&Record) -> bool| {
            let recs = link.records();
            recs.iter().filter(|r| r.dir == Dir::AtoB && r.tuple.is_some_and(|t| t.dport == PORT) && fate(r)).count()
        };
        wait_for("60 probes through", PATIENCE, || probes(&|r| r.delivered()) >= 60);
        link.set_up(false);
        wait_for("40 probes into the outage", PATIENCE, || {
            probes(&|r| r.fate == Fate::Dropped(DropReason::LinkDown)) >= 40
        });
        link.set_up(true);
    });
    let d = probe(&s, &jitter_args(&addr, "200", "us"));
    flap.join().unwrap();
    s.link.drain(Duration::from_secs(1));
    let t = truth(&s.link, 200, Format::CiscoUs, PORT);
    let got = counts(&d);
    assert!(t.sd >= 40, "40 probes went into the outage: {t:?}");
    assert_eq!((got.received, got.sd, got.ds, got.mia), (t.received, t.sd, t.ds, t.mia));
}

/// The loss scenario of the udp-jitter test against the STAMP reflector in stateful mode: its own
/// sequence numbers split the losses into SD and DS exactly as the Cisco responder's counter does.
#[test]
fn stamp_stateful_loss_both_ways_and_reply_duplicates() {
    let _machine = alone();
    let Some(s) = setup_with("stamp", loss_scenario(), |ip| ResponderOptions {
        stamp: vec![SocketAddr::new(ip, STAMP_PORT)],
        stamp_stateful: true,
        ..ResponderOptions::default()
    }) else {
        return;
    };
    let addr = s.link.b_addr().to_string();
    let port = STAMP_PORT.to_string();
    let args = ["stamp", &addr, "--port", &port, "--packets", "300", "--interval", "5ms", "--timeout", "2s"];
    let d = probe(&s, &[&args[..], &["--clock-sync", "assume"]].concat());
    s.link.drain(Duration::from_secs(1));
    let t = truth(&s.link, 300, Format::Stamp, STAMP_PORT);
    assert_matches_log("stamp", &d, &t, false);
}

/// The same scenario against the TWAMP server: `ipsla probe twamp` negotiates an open-mode session
/// over TWAMP-Control, and the Session-Reflector's own sequence numbers split the losses.
#[test]
fn twamp_loss_both_ways_and_reply_duplicates() {
    let _machine = alone();
    let Some(s) = setup_with("twamp", loss_scenario(), |ip| ResponderOptions {
        twamp: vec![SocketAddr::new(ip, STAMP_PORT)],
        // one test port, so that the link log can tell the test packets apart
        twamp_config: ipsla_core::twamp::server::ServerConfig {
            test_ports: TWAMP_TEST_PORT..=TWAMP_TEST_PORT,
            ..Default::default()
        },
        ..ResponderOptions::default()
    }) else {
        return;
    };
    let addr = s.link.b_addr().to_string();
    let port = STAMP_PORT.to_string();
    let args = ["twamp", &addr, "--port", &port, "--packets", "300", "--interval", "5ms", "--timeout", "2s"];
    let d = probe(&s, &[&args[..], &["--clock-sync", "assume"]].concat());
    assert_eq!(d["operation"], "twamp", "{d}");
    s.link.drain(Duration::from_secs(1));
    // what the reflector itself counted, for a failure's reader (see docs/testing.md)
    eprintln!("reflector: {:?}", s._responder.status().map(|st| st.twamp_stats.reflector));
    let t = truth(&s.link, 300, Format::Stamp, TWAMP_TEST_PORT);
    assert_matches_log("twamp", &d, &t, false);
}
