//! path-echo and path-jitter (IOS `path-echo`, `path-jitter`): the hops to a target, found the
//! way traceroute finds them, then ICMP echoes to each hop (core: `ipsla_core::ops::path`).
//!
//! Their part of the report ([`super::Detail`]): `path` (each hop's address, null where nothing
//! answered), `hops` (per hop: RTT distribution, loss and, for path-jitter, IPDV; null where there
//! is no value), `path_changed` (against the previous run of the same operation; null on the
//! first), `reached` and `unmatched`. The target's echoes are the common RTT and return code.
//!
//! Keys IOS has that are not taken: `lsr-path` (an IPv4 loose source route: Linux routers drop
//! source-routed packets unless `accept_source_route` is set, and IPv6 deprecated type-0 routing
//! headers), `samples-of-history-kept` and `paths-of-statistics-kept` (IOS's per-path history
//! tables: here every run is stored with its whole path and hops, and history is per run).

use super::common::{TRAIN, pattern, train};
use super::configuration::train_line;
use super::{Base, Detail, Fields, GaugeDef, GaugeValue, Key, Kind, Operation, Ty};
use crate::config::Result;
use crate::runner::{OperationSpec, RunContext, RunError, RunOutcome, sock};
use ipsla_core::ops::Cause;
use ipsla_core::ops::path::{Ident, PATH_ECHO_IDENT, PATH_JITTER_FIRST_IDENT, PathConfig, PathOp, PathReport};
use ipsla_core::stats::Percentiles;
use ipsla_net::path::{PathSockets, run_path};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(super) static ECHO: PathKind = PathKind { jitter: false };
pub(super) static JITTER: PathKind = PathKind { jitter: true };

const KEYS: &[Key] = &[
    Key::new("max_hops", Ty::Int, "Highest TTL discovery tries (1-255, default 30, as traceroute)"),
    Key::new(
        "hops_of_statistics_kept",
        Ty::Int,
        "Hops whose statistics the report keeps, from the first (IOS hops-of-statistics-kept, 1-30, default 16); the path lists every hop",
    ),
    Key::new(
        "request_data_size",
        Ty::Int,
        "Echo data bytes after the 8-byte stamp (IOS request-data-size, default 28)",
    ),
    Key::new("data_pattern", Ty::Text, "Data pattern, hex (IOS default abcd)"),
];

const JITTER_KEYS: &[Key] = &[Key::new(
    "target_only",
    Ty::Bool,
    "Echo the target alone, not every hop (IOS targetOnly; the path is discovered all the same)",
)];

pub(super) struct PathKind {
    jitter: bool,
}

/// A validated path-echo or path-jitter operation.
#[derive(Debug)]
pub struct IcmpPath {
    /// path-jitter (a train per hop) rather than path-echo (one echo per hop).
    pub jitter: bool,
    /// Highest TTL tried.
    pub max_hops: u8,
    /// Hops whose statistics the report keeps.
    pub hops_kept: u8,
    /// Echoes per hop.
    pub packets: u32,
    /// Between two echoes to a hop.
    pub interval: Duration,
    /// Echo the target alone.
    pub target_only: bool,
    /// Data bytes after the stamp.
    pub size: usize,
    /// Data pattern.
    pub pattern: Vec<u8>,
    /// The previous run's path: what the next run compares its own with (the operation's state,
    /// kept while its definition stays the same).
    last_path: Mutex<Option<Vec<Option<IpAddr>>>>,
}

impl PartialEq for IcmpPath {
    fn eq(&self, o: &Self) -> bool {
        (self.jitter, self.max_hops, self.hops_kept, self.packets, self.interval, self.target_only, self.size)
            == (o.jitter, o.max_hops, o.hops_kept, o.packets, o.interval, o.target_only, o.size)
            && self.pattern == o.pattern
    }
}

impl Kind for PathKind {
    fn name(&self) -> &'static str {
        if self.jitter { "path-jitter" } else { "path-echo" }
    }
    fn about(&self) -> &'static str {
        if self.jitter {
            "The hops to a target (traceroute-style discovery), then a train of ICMP echoes to each: RTT, loss and IPDV per hop"
        } else {
            "The hops to a target (traceroute-style discovery), then one ICMP echo to each: RTT per hop, path changes"
        }
    }
    fn example(&self) -> &'static str {
        if self.jitter {
            "ipsla probe path-jitter 192.0.2.10 --packets 10 --interval 20ms      (per-hop RTT, loss and IPDV, mtr-like)"
        } else {
            "ipsla probe path-echo 192.0.2.10 --count 3      (the path hop by hop; a changed path is an event)"
        }
    }
    fn keys(&self) -> &'static [&'static [Key]] {
        if self.jitter { &[KEYS, TRAIN, JITTER_KEYS] } else { &[KEYS] }
    }
    fn default_port(&self) -> Option<u16> {
        None
    }
    fn jitter(&self) -> bool {
        // path-jitter's target train has jitter statistics like any train
        self.jitter
    }
    fn paths(&self) -> bool {
        true
    }
    fn build(&self, f: &Fields, _base: &Base) -> Result<Box<dyn Operation>> {
        let (packets, interval) =
            if self.jitter { train(f, 10, Duration::from_millis(20))? } else { (1, Duration::ZERO) };
        Ok(Box::new(IcmpPath {
            jitter: self.jitter,
            max_hops: f.range("max_hops", 30, 1, 255)?,
            hops_kept: f.range("hops_of_statistics_kept", 16, 1, 30)?,
            packets,
            interval,
            target_only: self.jitter && f.bool("target_only")?.unwrap_or(false),
            size: f.range("request_data_size", 28, 0, 16_384)?,
            pattern: pattern(f, "data_pattern")?,
            last_path: Mutex::new(None),
        }))
    }
    fn text(&self, detail: &Detail, w: &mut String) {
        let Ok(d) = serde_json::from_value::<PathDetail>(serde_json::Value::Object(detail.clone())) else { return };
        d.text(w);
    }
    fn plots(&self, detail: &Detail) -> Vec<(crate::store::PlotSeries, String)> {
        let Ok(d) = serde_json::from_value::<PathDetail>(serde_json::Value::Object(detail.clone())) else {
            return Vec::new();
        };
        d.hops
            .iter()
            .map(|h| {
                let who = h.address.map_or_else(|| "* (no answer in the latest run)".to_string(), |a| a.to_string());
                (crate::store::PlotSeries::Hop(h.hop), format!("RTT to hop {}: {who}", h.hop))
            })
            .collect()
    }
    fn gauges(&self) -> &'static [GaugeDef] {
        if self.jitter { GAUGES_JITTER } else { GAUGES }
    }
    fn gauge_values(&self, detail: &Detail) -> Vec<GaugeValue> {
        let Ok(d) = serde_json::from_value::<PathDetail>(serde_json::Value::Object(detail.clone())) else {
            return Vec::new();
        };
        d.gauges(self.jitter)
    }
}

const HOP_RTT: GaugeDef =
    GaugeDef { name: "path_hop_rtt_seconds", help: "Average RTT of the echoes to a hop in the latest run" };
const HOP_LOSS: GaugeDef =
    GaugeDef { name: "path_hop_loss_ratio", help: "Echoes to a hop without a reply in the latest run, of those sent" };
const HOP_IPDV: GaugeDef =
    GaugeDef { name: "path_hop_ipdv_seconds", help: "Average absolute IPDV of the echoes to a hop in the latest run" };
const GAUGES: &[GaugeDef] = &[HOP_RTT, HOP_LOSS];
const GAUGES_JITTER: &[GaugeDef] = &[HOP_RTT, HOP_LOSS, HOP_IPDV];

/// A distribution in µs (null in the report when there is no value at all).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DistUs {
    /// Values.
    pub count: u64,
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub avg: f64,
    /// Largest.
    pub max: f64,
    /// Median (nearest rank).
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl DistUs {
    fn of(ns: &[i64]) -> Option<DistUs> {
        let mut v = ns.to_vec();
        let p = Percentiles::of(&mut v)?;
        // ns to µs with three decimals, as every delay of the report
        let us = |ns: f64| (ns / 1e3 * 1e3).round() / 1e3;
        let mean = v.iter().map(|&n| n as f64).sum::<f64>() / v.len() as f64;
        Some(DistUs {
            count: v.len() as u64,
            min: us(v[0] as f64),
            avg: us(mean),
            max: us(v[v.len() - 1] as f64),
            p50: us(p.p50 as f64),
            p90: us(p.p90 as f64),
            p99: us(p.p99 as f64),
        })
    }
}

/// Echoes without a reply.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Loss {
    /// Echoes sent.
    pub sent: u32,
    /// Without a reply.
    pub lost: u32,
    /// lost / sent.
    pub ratio: f64,
}

/// One hop of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HopDetail {
    /// TTL, from 1.
    pub hop: u8,
    /// Who answered; null for a hop that never did (traceroute's `*`).
    pub address: Option<IpAddr>,
    /// RTTs of its echoes, µs; null without a reply.
    pub rtt_us: Option<DistUs>,
    /// Its echoes' loss; null when none was sent to it.
    pub loss: Option<Loss>,
    /// path-jitter: absolute IPDV of consecutive echoes that both came back, µs; null without a
    /// pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipdv_us: Option<DistUs>,
}

/// The path kinds' part of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathDetail {
    /// Each hop's address, null where nothing answered.
    pub path: Vec<Option<IpAddr>>,
    /// The first `hops_of_statistics_kept` hops' statistics.
    pub hops: Vec<HopDetail>,
    /// The path differs from the previous run's; null on the first run.
    pub path_changed: Option<bool>,
    /// The target answered discovery.
    pub reached: bool,
    /// ICMP errors and echo replies that quoted or answered nothing this run sent: ignored.
    pub unmatched: u32,
}

/// Whether `new` is a different path than `old`: a different length, or a hop that answered both
/// times from different addresses. A hop silent in one of the runs is no change (a router that
/// rate-limits its ICMP errors is not a new route).
pub fn changed(old: &[Option<IpAddr>], new: &[Option<IpAddr>]) -> bool {
    old.len() != new.len() || old.iter().zip(new).any(|(a, b)| matches!((a, b), (Some(a), Some(b)) if a != b))
}

impl PathDetail {
    fn new(r: &PathReport, jitter: bool, hops_kept: u8, path_changed: Option<bool>) -> PathDetail {
        let hops = r
            .hops
            .iter()
            .take(usize::from(hops_kept))
            .map(|h| HopDetail {
                hop: h.hop,
                address: h.address,
                rtt_us: DistUs::of(&h.received()),
                loss: (h.sent > 0).then(|| Loss {
                    sent: h.sent,
                    lost: h.lost(),
                    ratio: f64::from(h.lost()) / f64::from(h.sent),
                }),
                ipdv_us: if jitter { DistUs::of(&h.ipdv().iter().map(|d| d.abs()).collect::<Vec<_>>()) } else { None },
            })
            .collect();
        PathDetail { path: r.path(), hops, path_changed, reached: r.reached, unmatched: r.unmatched }
    }

    fn text(&self, w: &mut String) {
        let changed = match self.path_changed {
            Some(true) => "yes",
            Some(false) => "no",
            None => "unknown (first run)",
        };
        let _ = writeln!(w, "Number of hops: {}", self.path.len());
        let _ = writeln!(w, "Target reached by discovery: {}", if self.reached { "yes" } else { "no" });
        let _ = writeln!(w, "Path changed since the previous run: {changed}");
        if self.unmatched > 0 {
            let _ = writeln!(w, "ICMP messages ignored (not about our probes): {}", self.unmatched);
        }
        let _ = writeln!(w, "Hop  Address                                   Sent  Loss%   Best    Avg  Worst   (ms)");
        for (i, a) in self.path.iter().enumerate() {
            let hop = self.hops.iter().find(|h| usize::from(h.hop) == i + 1);
            let addr = a.map_or_else(|| "*".to_string(), |a| a.to_string());
            let ms = |v: f64| format!("{:.3}", v / 1e3);
            let (sent, loss) = match hop.and_then(|h| h.loss) {
                Some(l) => (l.sent.to_string(), format!("{:.1}%", l.ratio * 100.0)),
                None => ("-".into(), "-".into()),
            };
            let (best, avg, worst) = match hop.and_then(|h| h.rtt_us) {
                Some(d) => (ms(d.min), ms(d.avg), ms(d.max)),
                None => ("-".into(), "-".into(), "-".into()),
            };
            let _ = writeln!(w, "{:>3}  {addr:<40} {sent:>5} {loss:>6} {best:>6} {avg:>6} {worst:>6}", i + 1);
        }
    }

    fn gauges(&self, jitter: bool) -> Vec<GaugeValue> {
        let mut out = Vec::new();
        for h in &self.hops {
            let Some(a) = h.address else { continue };
            let labels = || vec![("hop", h.hop.to_string()), ("address", a.to_string())];
            if let Some(d) = h.rtt_us {
                out.push(GaugeValue { family: HOP_RTT.name, labels: labels(), value: d.avg / 1e6 });
            }
            if let Some(l) = h.loss {
                out.push(GaugeValue { family: HOP_LOSS.name, labels: labels(), value: l.ratio });
            }
            if jitter && let Some(d) = h.ipdv_us {
                out.push(GaugeValue { family: HOP_IPDV.name, labels: labels(), value: d.avg / 1e6 });
            }
        }
        out
    }
}

impl Operation for IcmpPath {
    fn kind(&self) -> &'static dyn Kind {
        if self.jitter { &JITTER } else { &ECHO }
    }
    fn describe(&self, out: &mut Vec<(&'static str, String)>) {
        out.push(("Maximum hops", self.max_hops.to_string()));
        out.push(("Hops of statistics kept", self.hops_kept.to_string()));
        out.push(("Request size (ARR data portion)", self.size.to_string()));
        out.push(("Data pattern", hex::encode(&self.pattern)));
        if self.jitter {
            out.push(train_line(self.interval, self.packets));
            out.push(("Target only", if self.target_only { "Enabled" } else { "Disabled" }.into()));
        }
    }
    fn train(&self) -> Option<(u32, Duration)> {
        self.jitter.then_some((self.packets, self.interval * self.packets))
    }
    fn icmp(&self) -> bool {
        true
    }
    fn run(&self, spec: &OperationSpec, ctx: &RunContext<'_>) -> std::result::Result<RunOutcome, RunError> {
        let t = spec.addr();
        let s = sock("opening the path sockets (UDP discovery, ICMP echo)", PathSockets::open(t, &spec.sockets))?;
        let cfg = PathConfig {
            target: t,
            max_hops: self.max_hops,
            echoes: self.packets,
            interval: self.interval,
            target_only: self.target_only,
            ident: if self.jitter { Ident::Rising(PATH_JITTER_FIRST_IDENT) } else { Ident::Fixed(PATH_ECHO_IDENT) },
            size: self.size,
            pattern: self.pattern.clone(),
            timeout: spec.timeout,
            threshold: spec.threshold,
            check_ident: s.raw(),
            local_port: None,
        };
        let mut op = PathOp::new(Instant::now(), cfg);
        let report = run_path(&mut op, &s, t, ctx.hooks)?;
        let path = report.path();
        let path_changed = {
            let mut last = self.last_path.lock().unwrap_or_else(|e| e.into_inner());
            let c = last.as_deref().map(|old| changed(old, &path));
            *last = Some(path);
            c
        };
        let mut result = report.result.clone();
        result.path_changed = path_changed;
        if result.stats.received == 0 {
            result.cause = match report.unreachable {
                Some((hop, router, code)) => Some(Cause::PathUnreachable { target: t, hop, router, code }),
                None if !report.reached => Some(Cause::Unreached {
                    target: t,
                    hops: self.max_hops,
                    last: report.hops.iter().rev().find_map(|h| h.address.map(|a| (h.hop, a))),
                }),
                None => None,
            };
        }
        let detail = PathDetail::new(&report, self.jitter, self.hops_kept, path_changed);
        let detail = match serde_json::to_value(detail) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => Detail::new(),
        };
        Ok(RunOutcome::with_detail(result, detail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_silent_hop_is_no_change_a_new_router_is() {
        let a = [ip("10.0.12.2"), ip("10.0.23.3"), ip("10.0.3.2")];
        assert!(!changed(&a, &a));
        assert!(!changed(&a, &[ip("10.0.12.2"), None, ip("10.0.3.2")]));
        assert!(changed(&a, &[ip("10.0.12.2"), ip("10.0.24.4"), ip("10.0.3.2")]));
        assert!(changed(&a, &a[..2]));
    }

    #[test]
    fn the_detail_has_nulls_not_zeros() {
        use ipsla_core::ops::path::HopReport;
        use ipsla_core::ops::{OperationResult, Precision, ReturnCode};
        let r = PathReport {
            result: OperationResult::new(ReturnCode::Ok, Default::default(), Precision::Us),
            hops: vec![
                HopReport {
                    hop: 1,
                    address: ip("10.0.12.2"),
                    sent: 4,
                    rtts: vec![Some(1_000_000), None, Some(3_000_000), Some(2_000_000)],
                },
                HopReport { hop: 2, address: None, sent: 0, rtts: vec![] },
                HopReport { hop: 3, address: ip("10.0.3.2"), sent: 4, rtts: vec![None; 4] },
            ],
            reached: true,
            unreachable: None,
            unmatched: 0,
        };
        let d = serde_json::to_value(PathDetail::new(&r, true, 16, None)).unwrap();
        assert_eq!(d["path"], serde_json::json!(["10.0.12.2", null, "10.0.3.2"]));
        assert_eq!(d["path_changed"], serde_json::Value::Null);
        assert_eq!(
            d["hops"][0]["rtt_us"],
            serde_json::json!({"count": 3, "min": 1000.0, "avg": 2000.0, "max": 3000.0, "p50": 2000.0, "p90": 3000.0, "p99": 3000.0})
        );
        assert_eq!(d["hops"][0]["loss"], serde_json::json!({"sent": 4, "lost": 1, "ratio": 0.25}));
        // one pair came back consecutively (seq 2, 3): |2 − 3| ms
        assert_eq!(d["hops"][0]["ipdv_us"]["count"], 1);
        assert_eq!(d["hops"][0]["ipdv_us"]["max"], 1000.0);
        assert_eq!(d["hops"][1], serde_json::json!({"hop": 2, "address": null, "rtt_us": null, "loss": null}));
        assert_eq!(d["hops"][2]["rtt_us"], serde_json::Value::Null);
        assert_eq!(d["hops"][2]["loss"]["ratio"], 1.0);
        let g = JITTER.gauge_values(d.as_object().unwrap());
        let loss: Vec<(String, f64)> =
            g.iter().filter(|v| v.family == "path_hop_loss_ratio").map(|v| (v.labels[1].1.clone(), v.value)).collect();
        assert_eq!(loss, vec![("10.0.12.2".into(), 0.25), ("10.0.3.2".into(), 1.0)]);
        assert!(
            !g.iter().any(|v| v.family == "path_hop_rtt_seconds" && v.labels[1].1 == "10.0.3.2"),
            "no RTT, no series"
        );
        // hops_of_statistics_kept: the path stays whole, the statistics stop
        let two = serde_json::to_value(PathDetail::new(&r, true, 2, Some(true))).unwrap();
        assert_eq!((two["path"].as_array().unwrap().len(), two["hops"].as_array().unwrap().len()), (3, 2));
        let mut t = String::new();
        JITTER.text(d.as_object().unwrap(), &mut t);
        assert!(t.contains("  2  *  "), "{t}");
        assert!(t.contains("Path changed since the previous run: unknown (first run)"), "{t}");
    }
}
