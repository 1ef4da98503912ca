//! The CISCO-RTTMON-MIB objects the agent serves, built from its operations and their latest
//! stored runs into one ordered [`View`], which answers Get and GetNext in strict OID order.
//!
//! Numbers, types and units follow CISCO-RTTMON-MIB (revision 201604140000Z) and
//! CISCO-RTTMON-TC-MIB; each table below names its MIB object. Rows are indexed by the
//! operation's id (`rttMonCtrlAdminIndex`), as on IOS. Kinds IOS has no `RttMonRttType` for
//! (stamp, twamp, twamp-light) have no rows. A value the run did not measure has no instance
//! (noSuchInstance for a Get, skipped by a walk): a timed-out run has no
//! `rttMonLatestRttOperCompletionTime`, where IOS would show 0.

use crate::report::Report;
use ipsla_core::ops::{Precision, ReturnCode};
use ipsla_core::schedule::{OperState, ScheduleConfig, StartTime};
use ipsla_core::voice::Codec;
use ipsla_wire::agentx::{Oid, SearchRange, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// ciscoRttMonMIB: the subtree registered with the master.
pub const RTTMON: &[u32] = &[1, 3, 6, 1, 4, 1, 9, 9, 42];

/// Runs kept per operation in rttMonHistoryCollectionTable: IOS `history buckets-kept`'s
/// default (rttMonHistoryAdminNumBuckets).
pub const HISTORY_BUCKETS: u32 = 15;

mod latest;
mod stats;

/// rttMonApplVersion's text: IOS's, then ours.
pub fn version_text() -> String {
    format!("2.2.0 Round Trip Time MIB (ipsla {})", env!("CARGO_PKG_VERSION"))
}

/// `RttMonRttType` (CISCO-RTTMON-TC-MIB) of an operation kind; `None`: IOS has no type for it.
/// path-jitter has none either (the convention lists no pathJitter): it is served as the
/// nearest, pathEcho, whose tables (admin, latest RTT) are the ones it fills; as jitter(9) a
/// poller would look for a responder's jitter row that a path of routers does not give.
pub fn rtt_type(kind: &str) -> Option<i32> {
    Some(match kind {
        "icmp-echo" => 1,                 // echo
        "path-echo" | "path-jitter" => 2, // pathEcho
        "udp-echo" => 5,                  // udpEcho
        "tcp-connect" => 6,               // tcpConnect
        "http" => 7,                      // http
        "dns" => 8,                       // dns
        "udp-jitter" => 9,                // jitter
        "icmp-jitter" => 16,              // icmpjitter
        _ => return None,
    })
}

/// `RttMonProtocol` (CISCO-RTTMON-TC-MIB) of an operation kind, as rttMonEchoAdminProtocol's
/// description pairs them with the types.
fn protocol(kind: &str) -> i32 {
    match kind {
        "icmp-echo" | "path-echo" | "path-jitter" => 2, // ipIcmpEcho
        "udp-echo" => 3,                                // ipUdpEchoAppl
        "tcp-connect" => 24,                            // ipTcpConn
        "http" => 25,                                   // httpAppl
        "dns" => 26,                                    // dnsAppl
        "udp-jitter" => 27,                             // jitterAppl
        "icmp-jitter" => 34,                            // icmpJitterAppl
        _ => 1,                                         // notApplicable
    }
}

/// `RttResponseSense` (CISCO-RTTMON-TC-MIB) of a return code: the one place that maps them.
pub fn sense(code: ReturnCode) -> i32 {
    match code {
        ReturnCode::Ok => 1,
        ReturnCode::OverThreshold => 3,
        ReturnCode::Timeout => 4,
        ReturnCode::Busy => 5,
        ReturnCode::NoConnection => 6,
        ReturnCode::SequenceError => 8,
        ReturnCode::VerifyError => 9,
        ReturnCode::Error => 16,
        ReturnCode::AuthFailure => 27,
        ReturnCode::FormatError => 28,
        ReturnCode::PortInUse => 29,
        ReturnCode::DnsServerTimeout => 11,
        ReturnCode::TcpConnectTimeout => 12,
        ReturnCode::HttpTransactionTimeout => 13,
        ReturnCode::DnsQueryError => 14,
        ReturnCode::HttpError => 15,
    }
}

/// `RttMonCodecType`.
fn codec_type(c: Codec) -> i32 {
    match c {
        Codec::G711ulaw => 1,
        Codec::G711alaw => 2,
        Codec::G729a => 3,
    }
}

/// TruthValue (SNMPv2-TC).
fn truth(b: bool) -> Value {
    Value::Integer(if b { 1 } else { 2 })
}

/// One operation as the tables need it: its configuration, where it is in its life, and the
/// latest stored run.
#[derive(Debug)]
pub struct Row {
    /// Operation id: the rows' index.
    pub id: u32,
    /// Kind name (`udp-jitter`).
    pub kind: &'static str,
    /// `tag`.
    pub tag: String,
    /// Target address.
    pub target: Option<IpAddr>,
    /// Measurement port; `None` for the kinds without one.
    pub port: Option<u16>,
    /// `source_ip`, when set.
    pub source: Option<IpAddr>,
    /// `source_port` (0: any).
    pub source_port: u16,
    /// ToS byte.
    pub tos: u8,
    /// `vrf`, when set.
    pub vrf: Option<String>,
    /// `threshold`, ms.
    pub threshold_ms: u64,
    /// `timeout`, ms.
    pub timeout_ms: u64,
    /// `frequency`, s.
    pub frequency_s: u64,
    /// Whether it runs the IP SLA control phase first.
    pub control: bool,
    /// Probes per run and the gap between them, ms (the jitter family).
    pub train: Option<(u32, u32)>,
    /// Codec and advantage factor (codec udp-jitter).
    pub voice: Option<(Codec, u8)>,
    /// `precision` (udp-jitter).
    pub precision: Option<Precision>,
    /// Where it is in its life.
    pub state: OperState,
    /// Runs started.
    pub runs: u64,
    /// Seconds of life left; `None`: forever.
    pub life_left_s: Option<u64>,
    /// The schedule as configured (rttMonScheduleAdminTable).
    pub schedule: ScheduleConfig,
    /// When the current (or last) life began, ns since the Unix epoch; `None` while pending.
    pub life_start_ns: Option<i64>,
    /// http: the URL and the HTTP version (`1.0`, `1.1`).
    pub url: Option<(String, String)>,
    /// dns: the name looked up and the name server asked.
    pub lookup: Option<(String, Option<IpAddr>)>,
    /// The latest stored run.
    pub latest: Option<Latest>,
    /// The newest stored runs, at most [`HISTORY_BUCKETS`], oldest first
    /// (rttMonHistoryCollectionTable).
    pub history: Vec<Latest>,
    /// The stored hourly aggregates, oldest first (rttMonStatsCaptureTable,
    /// rttMonStatsCollectTable; udp-jitter: rttMonJitterStatsTable).
    pub hours: Vec<crate::store::HourAggregate>,
    /// Its reactions, in order (rttMonReactTable), and whether each holds now.
    pub reactions: Vec<(ipsla_core::reaction::ReactionConfig, bool)>,
}

/// The latest stored run: when it started and its document, read as the agent's API serves it
/// (`GET /api/v1/operations/{id}/latest`).
#[derive(Debug)]
pub struct Latest {
    /// Start, ns since the Unix epoch.
    pub start_ns: i64,
    /// The run document (docs/json-schema.md).
    pub run: Report,
}

/// The master's sysUpTime when the session opened, and the wall clock then: a `TimeStamp`
/// (the sysUpTime at an event) is derived from the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uptime {
    /// sysUpTime.0, hundredths of a second.
    pub centis: u32,
    /// ns since the Unix epoch at that moment.
    pub wall_ns: i64,
}

impl Uptime {
    /// The `TimeStamp` of a moment: 0 for one before the master's start (SNMPv2-TC).
    fn stamp(&self, ns: i64) -> u32 {
        let centis = i64::from(self.centis) + (ns - self.wall_ns).div_euclid(10_000_000);
        centis.clamp(0, i64::from(u32::MAX)) as u32
    }
}

/// A value in the unit of the MIB object: whole ms (or µs), rounded, as a Gauge32.
fn gauge(us: f64, unit_us: f64) -> Value {
    Value::Gauge32((us / unit_us).round().clamp(0.0, f64::from(u32::MAX)) as u32)
}

/// A sum in the unit, split into the low and high 32 bits the MIB carries it in.
fn split(v: f64) -> (Value, Value) {
    let n = v.round().clamp(0.0, u64::MAX as f64) as u64;
    (Value::Gauge32(n as u32), Value::Gauge32((n >> 32) as u32))
}

/// Every object instance served, in OID order, and the objects (columns, scalars) they belong to.
#[derive(Debug, Default)]
pub struct View {
    values: BTreeMap<Oid, Value>,
    objects: BTreeSet<Oid>,
}

impl View {
    /// The tables of `rows` (any order); `responder`: the agent runs the responder
    /// (rttMonApplResponder); `uptime` lets `rttMonLatestRttOperTime` be stated.
    pub fn build(rows: &[Row], responder: bool, uptime: Option<Uptime>) -> View {
        let mut v = View::default();
        let appl = [RTTMON, &[1, 1]].concat();
        let ctrl = [RTTMON, &[1, 2]].concat();
        let latest_oper = [RTTMON, &[1, 5]].concat();
        let stats = [RTTMON, &[1, 3]].concat();
        let history = [RTTMON, &[1, 4]].concat();
        v.scalar(&appl, 1, Value::OctetString(version_text().into_bytes()));
        v.scalar(&appl, 13, truth(responder));
        // rttMonApplSupportedRttTypesValid.<RttMonRttType>
        let ours: Vec<i32> = crate::ops::REGISTRY.iter().filter_map(|k| rtt_type(k.name())).collect();
        for t in 1..=26u32 {
            v.cell(&[&appl[..], &[7, 1]].concat(), 2, t, truth(ours.contains(&(t as i32))));
        }
        // the columns served: a Get of a row's missing value is noSuchInstance, of any other
        // object noSuchObject
        for (entry, cols) in [
            ([&ctrl[..], &[1, 1]].concat(), &[2, 3, 4, 5, 6, 7, 8, 9, 12][..]),
            ([&ctrl[..], &[2, 1]].concat(), &[1, 2, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 17, 18, 26, 27, 28, 30, 31, 37]),
            ([&ctrl[..], &[5, 1]].concat(), &[1, 2, 3, 4, 5, 6, 7]),
            ([&ctrl[..], &[9, 1]].concat(), &[5, 6, 7, 8, 9, 10, 11]),
            ([&ctrl[..], &[10, 1]].concat(), &[1, 2, 5, 6]),
            ([&latest_oper[..], &[2, 1]].concat(), &(1..=59).collect::<Vec<_>>()),
            ([&stats[..], &[5, 1]].concat(), &(2..=69).collect::<Vec<_>>()),
            ([&stats[..], &[1, 1]].concat(), &[5, 6, 7, 8, 9, 10, 11]),
            ([&stats[..], &[2, 1]].concat(), &(1..=12).collect::<Vec<_>>()),
            ([&history[..], &[1, 1]].concat(), &[4, 5, 6, 7, 8, 9]),
            ([&latest_oper[..], &[1, 1]].concat(), &[1, 2, 3, 4, 5, 6, 7]),
            ([&latest_oper[..], &[4, 1]].concat(), &(1..=50).collect::<Vec<_>>()),
            ([&ctrl[..], &[19, 1]].concat(), &[2, 3, 4, 5, 6, 7, 8, 10, 11]),
        ] {
            v.column(&entry, cols);
        }
        for r in rows {
            let Some(ty) = rtt_type(r.kind) else { continue };
            let id = r.id;
            // rttMonCtrlAdminTable
            let t = [&ctrl[..], &[1, 1]].concat();
            v.cell(&t, 2, id, Value::OctetString(Vec::new()));
            // DisplayString (SIZE (0..16)): the longest prefix of whole characters that fits
            let short: String = r
                .tag
                .chars()
                .scan(0, |n, c| {
                    *n += c.len_utf8();
                    (*n <= 16).then_some(c)
                })
                .collect();
            v.cell(&t, 3, id, Value::OctetString(short.into_bytes()));
            v.cell(&t, 4, id, Value::Integer(ty));
            v.cell(&t, 5, id, Value::Integer(r.threshold_ms.min(i32::MAX as u64) as i32));
            v.cell(&t, 6, id, Value::Integer(r.frequency_s.min(604_800) as i32));
            v.cell(&t, 7, id, Value::Integer(r.timeout_ms.min(604_800_000) as i32));
            v.cell(&t, 8, id, truth(false));
            v.cell(&t, 9, id, Value::Integer(1)); // RowStatus active
            let long: String = r.tag.chars().take(128).collect();
            v.cell(&t, 12, id, Value::OctetString(long.into_bytes()));
            // rttMonEchoAdminTable
            let t = [&ctrl[..], &[2, 1]].concat();
            v.cell(&t, 1, id, Value::Integer(protocol(r.kind)));
            if let Some(a) = r.target {
                v.cell(&t, 2, id, Value::OctetString(address(a)));
            }
            // TargetPort, SourcePort, ControlEnable: udpEcho, tcpConnect and jitter (the MIB)
            if let (5 | 6 | 9, Some(port)) = (ty, r.port) {
                v.cell(&t, 5, id, Value::Integer(i32::from(port)));
                v.cell(&t, 7, id, Value::Integer(i32::from(r.source_port)));
                v.cell(&t, 8, id, truth(r.control));
            }
            // dns: TargetAddressString (the name looked up) and NameServer
            if let Some((name, server)) = &r.lookup {
                v.cell(&t, 11, id, Value::OctetString(name.clone().into_bytes()));
                if let Some(s) = server {
                    v.cell(&t, 12, id, Value::OctetString(address(*s)));
                }
            }
            // http: Operation httpGet(1), HTTPVersion, URL
            if let Some((url, version)) = &r.url {
                v.cell(&t, 13, id, Value::Integer(1));
                v.cell(&t, 14, id, Value::OctetString(version.clone().into_bytes()));
                v.cell(&t, 15, id, Value::OctetString(url.clone().into_bytes()));
            }
            if let Some(s) = r.source {
                v.cell(&t, 6, id, Value::OctetString(address(s)));
            }
            v.cell(&t, 9, id, Value::Integer(i32::from(r.tos)));
            if let Some((packets, interval_ms)) = r.train {
                v.cell(&t, 17, id, Value::Integer(interval_ms as i32));
                v.cell(&t, 18, id, Value::Integer(packets as i32));
            }
            if let Some(p) = r.precision {
                // rttMonEchoAdminPrecision: milliseconds(1), microseconds(2)
                v.cell(&t, 37, id, Value::Integer(if p == Precision::Us { 2 } else { 1 }));
            }
            if let Some(vrf) = &r.vrf {
                v.cell(&t, 26, id, Value::OctetString(vrf.clone().into_bytes()));
            }
            if let Some((codec, advantage)) = r.voice {
                v.cell(&t, 27, id, Value::Integer(codec_type(codec)));
                if let Some((packets, interval_ms)) = r.train {
                    v.cell(&t, 28, id, Value::Integer(interval_ms as i32));
                    v.cell(&t, 30, id, Value::Integer(packets as i32));
                }
                v.cell(&t, 31, id, Value::Integer(i32::from(advantage)));
            }
            // rttMonCtrlOperTable: the "occurred" flags follow the latest run (false before one)
            let t = [&ctrl[..], &[9, 1]].concat();
            let code = r.latest.as_ref().map(|l| l.run.return_code);
            v.cell(&t, 5, id, truth(code == Some(ReturnCode::NoConnection)));
            v.cell(&t, 6, id, truth(code == Some(ReturnCode::Timeout)));
            v.cell(&t, 7, id, truth(code == Some(ReturnCode::OverThreshold)));
            v.cell(&t, 8, id, Value::Integer(r.runs.min(i32::MAX as u64) as i32));
            // 2147483647: "will not decrement", a life of forever
            v.cell(&t, 9, id, Value::Integer(r.life_left_s.map_or(i32::MAX, |s| s.min(i32::MAX as u64 - 1) as i32)));
            let state = match r.state {
                OperState::Pending => 4,
                OperState::Active => 6,
                OperState::Inactive | OperState::AgedOut => 5,
            };
            v.cell(&t, 10, id, Value::Integer(state));
            v.cell(&t, 11, id, truth(code == Some(ReturnCode::VerifyError)));
            v.schedule_row(&[&ctrl[..], &[5, 1]].concat(), id, r, uptime);
            // rttMonReactTable, indexed (id, the reaction's place from 1), as a trap names it
            let t = [&ctrl[..], &[19, 1]].concat();
            for (n, (c, occurred)) in r.reactions.iter().enumerate() {
                use ipsla_core::reaction::{Action, ThresholdType};
                let put = |v: &mut View, col: u32, value: Value| {
                    v.values.insert(Oid([&t[..], &[col, id, n as u32 + 1]].concat()), value);
                };
                let (ttype, x, y) = match c.threshold_type {
                    ThresholdType::Never => (1, None, None),
                    ThresholdType::Immediate => (2, None, None),
                    ThresholdType::Consecutive(n) => (3, Some(n), None),
                    ThresholdType::XOfY(x, y) => (4, Some(x), Some(y)),
                    ThresholdType::Average(n) => (5, Some(n), None),
                };
                // none(1), trapOnly(2), triggerOnly(3), trapAndTrigger(4): an alert is this
                // agent's trap, as `show ip sla configuration` words it
                let action = match c.action {
                    Action::None => 1,
                    Action::Alert | Action::Trap => 2,
                    Action::Trigger => 3,
                    Action::AlertAndTrigger | Action::TrapAndTrigger => 4,
                };
                let int = |f: f64| Value::Integer(f.round().clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32);
                // pathChange has no RttMonReactVar (and the path kinds no rows yet): no value
                if let Some(var) = crate::snmp::react_var(c.element) {
                    put(&mut v, 2, Value::Integer(var));
                }
                put(&mut v, 3, Value::Integer(ttype));
                put(&mut v, 4, Value::Integer(action));
                put(&mut v, 5, int(c.rising));
                put(&mut v, 6, int(c.falling));
                if let Some(x) = x {
                    put(&mut v, 7, Value::Integer(i32::from(x)));
                }
                if let Some(y) = y {
                    put(&mut v, 8, Value::Integer(i32::from(y)));
                }
                put(&mut v, 10, truth(*occurred));
                put(&mut v, 11, Value::Integer(1));
            }
            // rttMonLatestRttOperTable
            let t = [&ctrl[..], &[10, 1]].concat();
            let jitter_kind = r.kind == "udp-jitter";
            if let Some(l) = &r.latest {
                let unit = if jitter_kind && l.run.precision == Precision::Us { 1.0 } else { 1000.0 };
                if let Some(avg) = l.run.rtt_us.avg {
                    v.cell(&t, 1, id, gauge(avg, unit));
                }
                v.cell(&t, 2, id, Value::Integer(sense(l.run.return_code)));
                if let Some(up) = uptime {
                    v.cell(&t, 5, id, Value::TimeTicks(up.stamp(l.start_ns)));
                }
                // the MIB: the target for echo, pathEcho, udpEcho, tcpConnect (and dns, whose
                // target is a name: none); null for the other types
                if let (1 | 2 | 5 | 6, Some(a)) = (ty, r.target) {
                    v.cell(&t, 6, id, Value::OctetString(address(a)));
                }
            }
            if let (Some(l), "http") = (&r.latest, r.kind) {
                v.http_row(&[&latest_oper[..], &[1, 1]].concat(), id, &l.run);
            }
            if let (Some(l), "icmp-jitter") = (&r.latest, r.kind) {
                v.icmp_jitter_row(&[&latest_oper[..], &[4, 1]].concat(), id, &l.run);
            }
            if let Some(up) = uptime {
                let target = matches!(ty, 1 | 2 | 5 | 6).then_some(r.target).flatten();
                v.stats_capture(&[&stats[..], &[1, 1]].concat(), id, &r.hours, up);
                v.stats_collect(&[&stats[..], &[2, 1]].concat(), id, &r.hours, target, up);
                // the MIB: history is not kept for http and jitter operations
                if matches!(ty, 1 | 2 | 5 | 6 | 8) {
                    let target = matches!(ty, 1 | 2).then_some(r.target).flatten();
                    v.history(&[&history[..], &[1, 1]].concat(), id, &r.history, target, up);
                }
            }
            if jitter_kind {
                let t = [&latest_oper[..], &[2, 1]].concat();
                if let Some(l) = &r.latest {
                    v.jitter_row(&t, id, &l.run);
                }
                if let Some(up) = uptime {
                    let unit = if r.precision == Some(Precision::Us) { 1.0 } else { 1000.0 };
                    v.jitter_stats(&[&stats[..], &[5, 1]].concat(), id, &r.hours, unit, up);
                }
            }
        }
        v
    }

    /// rttMonScheduleAdminEntry: the schedule as configured. IOS's `start-time hh:mm` is a
    /// specific(5) start; a group's random frequency range has no object (Frequency, in the
    /// admin table, is the operation's own).
    fn schedule_row(&mut self, t: &[u32], id: u32, r: &Row, uptime: Option<Uptime>) {
        let s = &r.schedule;
        // RttLife: 2147483647 = forever, so a life that long is one second less
        let life = s.life.map_or(i32::MAX, |d| d.as_secs().min(i32::MAX as u64 - 1) as i32);
        self.cell(t, 1, id, Value::Integer(life));
        // RttStartTime: 0 while pending; the sysUpTime the current life began at, or 1 (the
        // MIB's "active at once") for a life that began before the master started
        let start = match (r.state, r.life_start_ns, uptime) {
            (OperState::Pending, ..) | (_, None, _) => Some(0),
            (_, Some(ns), Some(up)) => Some(up.stamp(ns).max(1)),
            (_, Some(_), None) => None,
        };
        if let Some(start) = start {
            self.cell(t, 2, id, Value::TimeTicks(start));
        }
        // ConceptRowAgeout (deprecated) and ConceptRowAgeoutV2: seconds, 0 = never
        let ageout = Value::Integer(s.ageout.map_or(0, |d| d.as_secs().min(2_073_600) as i32));
        self.cell(t, 3, id, ageout.clone());
        self.cell(t, 5, id, ageout);
        self.cell(t, 4, id, truth(s.recurring));
        // StartType: pending(1), now(2), random(3), after(4), specific(5)
        let start_type = match s.start {
            StartTime::Pending => 1,
            StartTime::Now => 2,
            StartTime::Random(_) => 3,
            StartTime::After(_) => 4,
            StartTime::At(_) => 5,
        };
        self.cell(t, 6, id, Value::Integer(start_type));
        // StartDelay: the random start's range, ms, within the MIB's 500..10000
        if let StartTime::Random(d) = s.start
            && (500..=10_000).contains(&d.as_millis())
        {
            self.cell(t, 7, id, Value::Integer(d.as_millis() as i32));
        }
    }

    /// rttMonLatestJitterOperEntry of one run.
    fn jitter_row(&mut self, t: &[u32], id: u32, run: &Report) {
        let unit = if run.precision == Precision::Us { 1.0 } else { 1000.0 };
        let opt = |v: Option<f64>| v.map(|us| gauge(us, unit));
        let rtt = &run.rtt_us;
        let mut put = |col: u32, v: Option<Value>| {
            if let Some(v) = v {
                self.cell(t, col, id, v);
            }
        };
        put(1, Some(Value::Gauge32(rtt.count as u32)));
        let (lo, hi) = split(rtt.sum / unit);
        put(2, Some(lo));
        put(53, Some(hi));
        // sum2 is in µs²: the unit squared
        let (lo, hi) = split(rtt.sum2 / (unit * unit));
        put(3, Some(lo));
        put(54, Some(hi));
        put(4, opt(rtt.min));
        put(5, opt(rtt.max));
        // positives and negatives, SD then DS: Min, Max, Num, Sum (Sum2 is not kept per sign)
        for (base, j) in [(6, &run.jitter_us.sd), (16, &run.jitter_us.ds)] {
            put(base, opt(j.pos_min));
            put(base + 1, opt(j.pos_max));
            put(base + 2, Some(Value::Gauge32(j.pos_count as u32)));
            put(base + 3, Some(split(j.pos_sum / unit).0));
            put(base + 5, opt(j.neg_min));
            put(base + 6, opt(j.neg_max));
            put(base + 7, Some(Value::Gauge32(j.neg_count as u32)));
            put(base + 8, Some(split(j.neg_sum / unit).0));
        }
        let l = &run.loss;
        put(26, Some(Value::Gauge32(l.sd)));
        put(27, Some(Value::Gauge32(l.ds)));
        put(28, Some(Value::Gauge32(l.out_of_sequence)));
        put(29, Some(Value::Gauge32(l.mia)));
        put(30, Some(Value::Gauge32(l.late)));
        put(31, Some(Value::Integer(sense(run.return_code))));
        put(32, Some(Value::OctetString(run.reason.clone().unwrap_or_default().into_bytes())));
        if let Some(ow) = &run.one_way_us {
            for (base, high, d) in [(33, 55, &ow.sd), (37, 57, &ow.ds)] {
                let (lo, hi) = split(d.sum / unit);
                put(base, Some(lo));
                put(high, Some(hi));
                let (lo, hi) = split(d.sum2 / (unit * unit));
                put(base + 1, Some(lo));
                put(high + 1, Some(hi));
                put(base + 2, opt(d.min));
                put(base + 3, opt(d.max));
            }
            put(41, Some(Value::Gauge32(ow.sd.count as u32)));
            put(49, opt(ow.sd.avg));
            put(50, opt(ow.ds.avg));
        }
        if let Some(voice) = &run.voice {
            put(42, Some(Value::Gauge32((voice.mos * 100.0).round() as u32)));
            put(43, Some(Value::Gauge32(voice.icpif)));
        }
        // IAJOut: source to destination; IAJIn: destination to source
        put(44, opt(run.jitter_us.iaj_sd));
        put(45, opt(run.jitter_us.iaj_ds));
        put(46, opt(run.jitter_us.avg));
        put(47, opt(run.jitter_us.sd.avg));
        put(48, opt(run.jitter_us.ds.avg));
        // NTPState: sync(1), outOfSync(2); a clock that was not checked has no state
        match run.clock_sync.state {
            "sync" => put(51, Some(Value::Integer(1))),
            "out_of_sync" => put(51, Some(Value::Integer(2))),
            _ => {}
        }
        put(59, Some(Value::Gauge32(run.over_threshold)));
    }

    /// rttMonJitterStatsEntry per stored hour, indexed by (id, the hour's start as a TimeStamp).
    /// Hours that began before the master started all stamp 0: only the newest of them is
    /// served, so that an index names one hour.
    fn jitter_stats(&mut self, t: &[u32], id: u32, hours: &[crate::store::HourAggregate], unit: f64, up: Uptime) {
        for (stamp, h) in hour_rows(hours, up) {
            let Some(j) = &h.jitter else { continue };
            let mut put = |col: u32, v: Option<Value>| {
                if let Some(v) = v {
                    self.values.insert(Oid([t, &[col, id, stamp]].concat()), v);
                }
            };
            let count = |n: u64| Some(Value::Counter32(n as u32));
            let code = |c: &str| count(h.return_codes.get(c).copied().unwrap_or(0));
            let low = |v: f64| Some(Value::Counter32(v.round().clamp(0.0, u64::MAX as f64) as u64 as u32));
            let high = |v: f64| Some(Value::Counter32((v.round().clamp(0.0, u64::MAX as f64) as u64 >> 32) as u32));
            let g = |v: Option<f64>| v.map(|us| gauge(us, unit));
            put(2, count(h.completion_us.count));
            put(3, code("over_threshold"));
            put(4, count(j.rtt_us.count));
            put(5, low(j.rtt_us.sum / unit));
            put(66, high(j.rtt_us.sum / unit));
            put(6, low(j.rtt_us.sum2 / (unit * unit)));
            put(7, high(j.rtt_us.sum2 / (unit * unit)));
            put(8, g(j.rtt_us.min));
            put(9, g(j.rtt_us.max));
            // Min, Max, Num, Sum, Sum2Low, Sum2High of positives then negatives, SD then DS
            for (base, a) in [
                (10, &j.jitter_sd_pos_us),
                (16, &j.jitter_sd_neg_us),
                (22, &j.jitter_ds_pos_us),
                (28, &j.jitter_ds_neg_us),
            ] {
                put(base, g(a.min));
                put(base + 1, g(a.max));
                put(base + 2, count(a.count));
                put(base + 3, low(a.sum / unit));
                put(base + 4, low(a.sum2 / (unit * unit)));
                put(base + 5, high(a.sum2 / (unit * unit)));
            }
            put(34, count(j.loss_sd));
            put(35, count(j.loss_ds));
            put(36, count(j.out_of_sequence));
            put(37, count(j.loss_mia));
            put(38, count(j.late));
            put(39, code("error"));
            // one-way delays: from runs whose clocks were in sync only
            for (sum, sum2, min, max, new, sum_high, a) in
                [(41, 42, 44, 45, 52, 67, &j.one_way_sd_us), (46, 47, 49, 50, 54, 68, &j.one_way_ds_us)]
            {
                if a.count == 0 {
                    continue;
                }
                put(sum, low(a.sum / unit));
                put(sum_high, high(a.sum / unit));
                put(sum2, low(a.sum2 / (unit * unit)));
                put(sum2 + 1, high(a.sum2 / (unit * unit)));
                // the deprecated Counter32 columns and their Gauge32 replacements
                put(min, a.min.map(|us| Value::Counter32((us / unit).round() as u32)));
                put(max, a.max.map(|us| Value::Counter32((us / unit).round() as u32)));
                put(new, g(a.min));
                put(new + 1, g(a.max));
            }
            if j.one_way_sd_us.count > 0 {
                put(51, count(j.one_way_sd_us.count));
            }
            put(56, j.mos_min.map(|m| Value::Gauge32((m * 100.0).round() as u32)));
            put(57, j.mos_max.map(|m| Value::Gauge32((m * 100.0).round() as u32)));
            put(58, j.icpif_min.map(Value::Gauge32));
            put(59, j.icpif_max.map(Value::Gauge32));
            // average |jitter| per direction and over both
            let avg = |parts: &[&crate::store::AccUs]| {
                let n: u64 = parts.iter().map(|a| a.count).sum();
                (n > 0).then(|| parts.iter().map(|a| a.sum).sum::<f64>() / n as f64)
            };
            let (sd_pos, sd_neg, ds_pos, ds_neg) =
                (&j.jitter_sd_pos_us, &j.jitter_sd_neg_us, &j.jitter_ds_pos_us, &j.jitter_ds_neg_us);
            put(62, g(avg(&[sd_pos, sd_neg, ds_pos, ds_neg])));
            put(63, g(avg(&[sd_pos, sd_neg])));
            put(64, g(avg(&[ds_pos, ds_neg])));
            put(69, count(j.over_threshold));
        }
    }

    fn scalar(&mut self, group: &[u32], n: u32, value: Value) {
        let object = Oid([group, &[n]].concat());
        self.objects.insert(object.clone());
        let mut name = object;
        name.0.push(0);
        self.values.insert(name, value);
    }

    /// Declares columns of `entry`, so a Get of a missing instance says noSuchInstance.
    fn column(&mut self, entry: &[u32], cols: &[u32]) {
        for c in cols {
            self.objects.insert(Oid([entry, &[*c]].concat()));
        }
    }

    /// A cell whose row index has several parts (a table with more than one INDEX).
    fn cell_at(&mut self, entry: &[u32], col: u32, index: &[u32], value: Value) {
        self.objects.insert(Oid([entry, &[col]].concat()));
        self.values.insert(Oid([entry, &[col], index].concat()), value);
    }

    fn cell(&mut self, entry: &[u32], col: u32, index: u32, value: Value) {
        let object = Oid([entry, &[col]].concat());
        self.objects.insert(object.clone());
        let mut name = object;
        name.0.push(index);
        self.values.insert(name, value);
    }

    /// A Get of `name`: its value, noSuchInstance when its object is served but this instance
    /// is not, noSuchObject otherwise.
    pub fn get(&self, name: &Oid) -> Value {
        if let Some(v) = self.values.get(name) {
            return v.clone();
        }
        let object = self.objects.range(..=name.clone()).next_back();
        match object {
            Some(o) if name.starts_with(&o.0) && name.0.len() > o.0.len() => Value::NoSuchInstance,
            _ => Value::NoSuchObject,
        }
    }

    /// A GetNext over `range` (RFC 2741 §7.2.3.2): the first instance after its start (or at it,
    /// when included) and before its end; `None`: endOfMibView.
    pub fn next(&self, range: &SearchRange) -> Option<(&Oid, &Value)> {
        use std::ops::Bound;
        let lower = if range.include { Bound::Included(&range.start) } else { Bound::Excluded(&range.start) };
        let (name, value) = self.values.range::<Oid, _>((lower, Bound::Unbounded)).next()?;
        (range.end.is_null() || *name < range.end).then_some((name, value))
    }

    /// How many instances there are.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// The stored hours by the index they are served at: their start as the master's TimeStamp.
/// Hours that began before the master started all stamp 0; the newest of them is kept, so an
/// index names one hour.
fn hour_rows(hours: &[crate::store::HourAggregate], up: Uptime) -> BTreeMap<u32, &crate::store::HourAggregate> {
    let mut rows = BTreeMap::new();
    for h in hours {
        rows.insert(up.stamp(h.hour_start_s.saturating_mul(1_000_000_000)), h);
    }
    rows
}

/// A DisplayString (SIZE (0..255)): the longest prefix of whole characters that fits.
fn display(text: &str) -> Value {
    let mut n = 0;
    let cut: String = text
        .chars()
        .take_while(|c| {
            n += c.len_utf8();
            n <= 255
        })
        .collect();
    Value::OctetString(cut.into_bytes())
}

/// RttMonTargetAddress of an IP address: its 4 (IPv6: 16) octets.
fn address(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

#[cfg(test)]
mod tests;
