//! What `ipsla probe` prints and the agent serves: the JSON document (schema in
//! docs/json-schema.md) and the text laid out like IOS `show ip sla statistics`.
#![allow(missing_docs)]

use crate::runner::OperationSpec;
use ipsla_core::ops::{OperationResult, Precision, ReturnCode};
use ipsla_core::stats::{Acc, DirJitter, JitterStats, LossPeriods, Percentiles};
use ipsla_core::voice::{Codec, MosModel};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

/// Schema version of the JSON document; bumped only on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// The fixed words of the document besides the operation names (those come from the registry,
/// [`crate::ops::REGISTRY`]): control, timestamp sources, clock sync.
const WORDS: &[&str] = &[
    "v1",
    "v2",
    "twamp",
    "none",
    "kernel",
    "user",
    "mixed",
    "ntp",
    "ptp",
    "assume",
    "sync",
    "out_of_sync",
    "not_checked",
];

/// One of the document's fixed words. An alias rather than `&'static str` so that serde does not
/// take the field for a string borrowed from the input.
pub type Word = &'static str;

/// Reads one of the document's fixed words (or an operation name) back as the `&'static str` a
/// [`Report`] holds, so that a stored document can be rendered again (`ipsla show statistics`);
/// a word this version does not know reads as "unknown".
pub fn word<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Word, D::Error> {
    let s = String::deserialize(d)?;
    Ok(crate::ops::find(&s).map(|k| k.name()).or_else(|| WORDS.iter().find(|w| **w == s).copied()).unwrap_or("unknown"))
}

fn us(ns: i64) -> f64 {
    (ns as f64 / 1000.0 * 1000.0).round() / 1000.0
}
fn usf(ns: f64) -> f64 {
    (ns / 1000.0 * 1000.0).round() / 1000.0
}

/// Min / avg / max / percentiles of a delay, µs.
#[derive(Debug, Serialize, Deserialize)]
pub struct Delay {
    pub count: u64,
    pub min: f64,
    pub avg: f64,
    pub max: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub sum: f64,
    pub sum2: f64,
}

impl Delay {
    fn new(a: &Acc, p: &Percentiles) -> Self {
        Delay {
            count: a.count,
            min: us(a.min),
            avg: usf(a.avg()),
            max: us(a.max),
            p50: us(p.p50),
            p90: us(p.p90),
            p99: us(p.p99),
            sum: usf(a.sum as f64),
            // µs², as the MIB's Sum2 is in the unit squared
            sum2: (a.sum2 as f64 / 1e6).round(),
        }
    }
}

/// Percentiles, µs.
#[derive(Debug, Serialize, Deserialize)]
pub struct Pct {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct OneWay {
    pub sd: Delay,
    pub ds: Delay,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Jitter1 {
    pub count: u64,
    pub avg: f64,
    pub pos_count: u64,
    pub pos_min: f64,
    pub pos_max: f64,
    pub pos_sum: f64,
    pub neg_count: u64,
    pub neg_min: f64,
    pub neg_max: f64,
    pub neg_sum: f64,
}

impl Jitter1 {
    fn new(j: &DirJitter) -> Self {
        Jitter1 {
            count: j.count(),
            avg: usf(j.avg()),
            pos_count: j.positive.count,
            pos_min: us(j.positive.min),
            pos_max: us(j.positive.max),
            pos_sum: usf(j.positive.sum as f64),
            neg_count: j.negative.count,
            neg_min: us(j.negative.min),
            neg_max: us(j.negative.max),
            neg_sum: usf(j.negative.sum as f64),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct JitterReport {
    pub sd: Jitter1,
    pub ds: Jitter1,
    pub avg: f64,
    pub iaj_sd: f64,
    pub iaj_ds: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Loss {
    pub sd: u32,
    pub ds: u32,
    pub mia: u32,
    pub late: u32,
    pub out_of_sequence: u32,
    pub duplicates: u32,
    pub tail_drop: u32,
    pub ratio: f64,
    pub periods_sd: LossPeriods,
    pub periods_ds: LossPeriods,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Voice {
    pub codec: Codec,
    pub model: MosModel,
    pub advantage_factor: u8,
    pub icpif: u32,
    pub mos: f64,
    pub r_factor: f64,
}

pub use crate::runner::ClockCheck as ClockSync;

#[derive(Debug, Serialize, Deserialize)]
pub struct Stamps {
    /// kernel | user | mixed | none: where T4 (receive) came from.
    #[serde(deserialize_with = "word")]
    pub rx: Word,
    pub rx_kernel: u32,
    pub rx_user: u32,
    /// kernel | user | mixed | none: where T1 (send) came from.
    #[serde(deserialize_with = "word")]
    pub tx: Word,
    pub tx_kernel: u32,
    pub tx_user: u32,
    /// Self-diagnostic: userspace read after recvmsg − kernel receive stamp.
    pub rx_user_minus_kernel_us: DeltaJson,
    /// Self-diagnostic: kernel transmit stamp − userspace read before the send call.
    pub tx_kernel_minus_user_us: DeltaJson,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DeltaJson {
    pub count: u64,
    pub avg: f64,
    pub max: f64,
}

impl DeltaJson {
    fn new(d: &ipsla_core::ops::DeltaStats) -> Self {
        DeltaJson { count: d.count, avg: usf(d.avg_ns()), max: us(d.max_ns) }
    }
}

fn source(kernel: u32, user: u32) -> &'static str {
    match (kernel, user) {
        (0, 0) => "none",
        (_, 0) => "kernel",
        (0, _) => "user",
        _ => "mixed",
    }
}

/// One reply, with `--samples`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SampleJson {
    pub seq: u32,
    pub responder_seq: u32,
    pub rtt_us: f64,
    /// T2 − T1: includes the offset between the clocks unless they are synchronised.
    pub sd_us: f64,
    /// T4 − T3: includes minus that offset.
    pub ds_us: f64,
    pub late: bool,
    pub duplicate: bool,
}

/// One run of one operation.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    #[serde(deserialize_with = "word")]
    pub operation: Word,
    pub target: String,
    pub run: u32,
    pub start: String,
    pub return_code: ReturnCode,
    /// Why the run failed, in words naming the address and what to check; `null` when it did
    /// not, or when there is no more to say than the return code.
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(deserialize_with = "word")]
    pub control: Word,
    pub precision: Precision,
    pub sent: u32,
    pub received: u32,
    /// First to last probe sent, µs: the schedule as it really ran.
    pub send_span_us: f64,
    pub rtt_us: Delay,
    pub one_way_us: Option<OneWay>,
    pub clock_sync: ClockSync,
    pub jitter_us: JitterReport,
    pub ipdv_us: Pct,
    pub loss: Loss,
    pub over_threshold: u32,
    pub voice: Option<Voice>,
    pub timestamps: Stamps,
    pub unexpected: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples: Option<Vec<SampleJson>>,
}

/// Everything that is not in the operation result.
pub struct Context {
    pub operation: &'static str,
    pub target: String,
    pub run: u32,
    pub start: Duration,
    pub control: &'static str,
    pub clock_sync: ClockSync,
    pub voice: Option<(Codec, MosModel, u8)>,
    pub samples: bool,
}

impl Context {
    /// The context of run `run` of `spec`, started at `start` (since the Unix epoch).
    pub fn of(spec: &OperationSpec, run: u32, start: Duration, clock_sync: ClockSync, samples: bool) -> Context {
        Context {
            operation: spec.op.kind().name(),
            target: spec.target_label(),
            run,
            start,
            control: spec.control_label(),
            clock_sync,
            voice: spec.op.voice().map(|v| (v.codec, v.model, v.advantage)),
            samples,
        }
    }
}

impl Report {
    pub fn new(ctx: Context, r: &OperationResult) -> Self {
        let s: &JitterStats = &r.stats;
        let pct = |p: &Percentiles| Pct { p50: us(p.p50), p90: us(p.p90), p99: us(p.p99) };
        let one_way = match (s.one_way_sd, s.one_way_ds, s.one_way_pct) {
            (Some(sd), Some(ds), Some((psd, pds))) => {
                Some(OneWay { sd: Delay::new(&sd, &psd), ds: Delay::new(&ds, &pds) })
            }
            _ => None,
        };
        Report {
            schema: SCHEMA_VERSION,
            operation: ctx.operation,
            target: ctx.target,
            run: ctx.run,
            start: humantime::format_rfc3339_micros(UNIX_EPOCH + ctx.start).to_string(),
            return_code: r.return_code,
            reason: r.cause.as_ref().map(|c| c.to_string()),
            control: ctx.control,
            precision: r.precision,
            sent: s.sent,
            received: s.received,
            send_span_us: us(r.send_span_ns as i64),
            rtt_us: Delay::new(&s.rtt, &s.rtt_pct),
            one_way_us: one_way,
            clock_sync: ctx.clock_sync,
            jitter_us: JitterReport {
                sd: Jitter1::new(&s.jitter_sd),
                ds: Jitter1::new(&s.jitter_ds),
                avg: usf(s.jitter_avg()),
                iaj_sd: usf(s.jitter_sd.interarrival),
                iaj_ds: usf(s.jitter_ds.interarrival),
            },
            ipdv_us: pct(&s.ipdv_pct),
            loss: Loss {
                sd: s.loss_sd,
                ds: s.loss_ds,
                mia: s.loss_mia,
                late: s.late,
                out_of_sequence: s.out_of_sequence,
                duplicates: s.duplicates,
                tail_drop: s.tail_drop,
                ratio: s.loss_ratio(),
                periods_sd: s.periods_sd,
                periods_ds: s.periods_ds,
            },
            over_threshold: s.over_threshold,
            voice: match (ctx.voice, r.voice) {
                (Some((codec, model, a)), Some(v)) => Some(Voice {
                    codec,
                    model,
                    advantage_factor: a,
                    icpif: v.icpif,
                    mos: v.mos,
                    r_factor: (v.r_factor * 100.0).round() / 100.0,
                }),
                _ => None,
            },
            timestamps: Stamps {
                rx: source(r.stamps.rx_kernel, r.stamps.rx_user),
                rx_kernel: r.stamps.rx_kernel,
                rx_user: r.stamps.rx_user,
                tx: source(r.stamps.tx_kernel, r.stamps.tx_user),
                tx_kernel: r.stamps.tx_kernel,
                tx_user: r.stamps.tx_user,
                rx_user_minus_kernel_us: DeltaJson::new(&r.stamps.rx_delta),
                tx_kernel_minus_user_us: DeltaJson::new(&r.stamps.tx_delta),
            },
            unexpected: r.unexpected,
            samples: ctx.samples.then(|| {
                r.samples
                    .iter()
                    .map(|x| SampleJson {
                        seq: x.seq,
                        responder_seq: x.responder_seq,
                        rtt_us: us(x.rtt),
                        sd_us: us(x.sd),
                        ds_us: us(x.ds),
                        late: x.late,
                        duplicate: x.duplicate,
                    })
                    .collect()
            }),
        }
    }
}

/// Formats a delay in the operation's unit: whole ms (IOS integer division) or µs with 3 decimals.
struct Unit(Precision);

impl Unit {
    fn name(&self) -> &'static str {
        match self.0 {
            Precision::Ms => "milliseconds",
            Precision::Us => "microseconds",
        }
    }
    fn v(&self, us: f64) -> String {
        match self.0 {
            // IOS prints integer ms; the average is an integer division of Sum/Num.
            Precision::Ms => format!("{}", (us / 1000.0).floor() as i64),
            Precision::Us => format!("{us:.3}"),
        }
    }
    fn mam(&self, min: f64, avg: f64, max: f64) -> String {
        format!("{}/{}/{}", self.v(min), self.v(avg), self.v(max))
    }
}

/// An RFC 3339 time as IOS prints it: `10:00:00 UTC 2024-09-01`.
pub fn ios_time(start: &str) -> String {
    // "2024-09-01T10:00:00.123456Z" -> "10:00:00 UTC 2024-09-01"
    match start.split_once('T') {
        Some((date, rest)) => format!("{} UTC {date}", &rest[..8.min(rest.len())]),
        None => start.to_string(),
    }
}

/// The text of one run, laid out like IOS `show ip sla statistics`, then our additions.
pub fn text(r: &Report, successes: u32, failures: u32) -> String {
    text_with_life(r, successes.into(), failures.into(), None)
}

/// [`text`] with IOS's "Operation time to live" line after the failures (`Forever`, `3600 sec`):
/// what the agent's `ipsla show statistics` prints.
pub fn text_with_life(r: &Report, successes: u64, failures: u64, time_to_live: Option<&str>) -> String {
    let u = Unit(r.precision);
    let mut o = String::new();
    let w = &mut o;
    let _ = writeln!(w, "IPSLA operation id: {}", r.run);
    let _ = writeln!(w, "Type of operation: {}", r.operation);
    let _ = writeln!(
        w,
        "        Latest RTT: {} {}",
        if r.rtt_us.count > 0 { u.v(r.rtt_us.avg) } else { "NoConnection/Busy/Timeout".into() },
        u.name()
    );
    let _ = writeln!(w, "Latest operation start time: {}", ios_time(&r.start));
    let _ = writeln!(w, "Latest operation return code: {}", r.return_code.cisco_text());
    if let Some(why) = &r.reason {
        let _ = writeln!(w, "Latest operation failure reason: {why}");
    }
    let jittery = crate::ops::find(r.operation).is_some_and(|k| k.jitter());
    if jittery {
        let _ = writeln!(w, "RTT Values:");
        let _ = writeln!(
            w,
            "        Number Of RTT: {}\t\tRTT Min/Avg/Max: {} {}",
            r.rtt_us.count,
            u.mam(r.rtt_us.min, r.rtt_us.avg, r.rtt_us.max),
            u.name()
        );
        let _ = writeln!(w, "Latency one-way time:");
        match &r.one_way_us {
            Some(ow) => {
                let _ = writeln!(w, "        Number of Latency one-way Samples: {}", ow.sd.count);
                let _ = writeln!(
                    w,
                    "        Source to Destination Latency one way Min/Avg/Max: {} {}",
                    u.mam(ow.sd.min, ow.sd.avg, ow.sd.max),
                    u.name()
                );
                let _ = writeln!(
                    w,
                    "        Destination to Source Latency one way Min/Avg/Max: {} {}",
                    u.mam(ow.ds.min, ow.ds.avg, ow.ds.max),
                    u.name()
                );
            }
            None => {
                let _ = writeln!(w, "        Number of Latency one-way Samples: 0");
                let _ = writeln!(
                    w,
                    "        (one-way delay unavailable: clocks not declared synchronised, see --clock-sync; state {})",
                    r.clock_sync.state
                );
            }
        }
        let j = &r.jitter_us;
        let minmax = |x: &Jitter1| {
            let (mut mn, mut mx) = (f64::MAX, 0f64);
            if x.pos_count > 0 {
                mn = mn.min(x.pos_min);
                mx = mx.max(x.pos_max);
            }
            if x.neg_count > 0 {
                mn = mn.min(x.neg_min);
                mx = mx.max(x.neg_max);
            }
            if x.count == 0 { (0.0, 0.0) } else { (mn, mx) }
        };
        let _ = writeln!(w, "Jitter Time:");
        let _ = writeln!(w, "        Number of SD Jitter Samples: {}", j.sd.count);
        let _ = writeln!(w, "        Number of DS Jitter Samples: {}", j.ds.count);
        let (a, b) = minmax(&j.sd);
        let _ = writeln!(w, "        Source to Destination Jitter Min/Avg/Max: {} {}", u.mam(a, j.sd.avg, b), u.name());
        let (a, b) = minmax(&j.ds);
        let _ = writeln!(w, "        Destination to Source Jitter Min/Avg/Max: {} {}", u.mam(a, j.ds.avg, b), u.name());
        let _ = writeln!(w, "Over Threshold:");
        let pct = (u64::from(r.over_threshold) * 100).checked_div(r.rtt_us.count).unwrap_or(0);
        let _ = writeln!(w, "        Number Of RTT Over Threshold: {} ({}%)", r.over_threshold, pct);
        let l = &r.loss;
        let _ = writeln!(w, "Packet Loss Values:");
        for (name, n, p) in
            [("Source to Destination", l.sd, &l.periods_sd), ("Destination to Source", l.ds, &l.periods_ds)]
        {
            let short = if name.starts_with("Source") { "Source to Destination" } else { "Destination to Source" };
            let _ = writeln!(w, "        Loss {short}: {n}");
            let _ = writeln!(w, "        {name} Loss Periods Number: {}", p.count);
            let _ = writeln!(w, "        {name} Loss Period Length Min/Max: {}/{}", p.len_min, p.len_max);
            let _ = writeln!(w, "        {name} Inter Loss Period Length Min/Max: {}/{}", p.inter_min, p.inter_max);
        }
        let _ = writeln!(w, "        Out Of Sequence: {}\tTail Drop: {}", l.out_of_sequence, l.tail_drop);
        let _ = writeln!(w, "        Packet Late Arrival: {}\tPacket Skipped: 0", l.late);
        let _ = writeln!(w, "Voice Score Values:");
        let (icpif, mos) = r.voice.as_ref().map_or((0, "0".to_string()), |v| (v.icpif, format!("{:.2}", v.mos)));
        let _ = writeln!(w, "        Calculated Planning Impairment Factor (ICPIF): {icpif}");
        let _ = writeln!(w, "        Mean Opinion Score (MOS): {mos}");
    }
    let _ = writeln!(w, "Number of successes: {successes}");
    let _ = writeln!(w, "Number of failures: {failures}");
    if let Some(t) = time_to_live {
        let _ = writeln!(w, "Operation time to live: {t}");
    }
    // Beyond IOS: what it does not print.
    let _ = writeln!(w, "Additional statistics (ipsla):");
    let d = &r.rtt_us;
    let _ = writeln!(w, "        RTT p50/p90/p99: {:.3}/{:.3}/{:.3} microseconds", d.p50, d.p90, d.p99);
    if let Some(ow) = &r.one_way_us {
        let _ = writeln!(
            w,
            "        One-way SD p50/p90/p99: {:.3}/{:.3}/{:.3} microseconds",
            ow.sd.p50, ow.sd.p90, ow.sd.p99
        );
        let _ = writeln!(
            w,
            "        One-way DS p50/p90/p99: {:.3}/{:.3}/{:.3} microseconds",
            ow.ds.p50, ow.ds.p90, ow.ds.p99
        );
    }
    if jittery {
        let j = &r.jitter_us;
        let _ = writeln!(
            w,
            "        IPDV p50/p90/p99: {:.3}/{:.3}/{:.3} microseconds",
            r.ipdv_us.p50, r.ipdv_us.p90, r.ipdv_us.p99
        );
        let _ =
            writeln!(w, "        Interarrival jitter (RFC 3550) SD/DS: {:.3}/{:.3} microseconds", j.iaj_sd, j.iaj_ds);
        let _ = writeln!(w, "        Loss unknown direction (MIA): {}  Duplicates: {}", r.loss.mia, r.loss.duplicates);
    }
    if let Some(v) = &r.voice {
        let model = match v.model {
            MosModel::EModel => "E-model (G.107)",
            MosModel::CiscoCompat => "cisco-compat tables (approximation)",
        };
        let _ = writeln!(w, "        Voice: {:?}, {model}, R-factor {:.2}", v.codec, v.r_factor);
    }
    let ts = &r.timestamps;
    let _ = writeln!(
        w,
        "        Timestamps: receive {} (kernel {}, user {}), send {} (kernel {}, user {})",
        ts.rx, ts.rx_kernel, ts.rx_user, ts.tx, ts.tx_kernel, ts.tx_user
    );
    let _ = writeln!(
        w,
        "        Userspace - kernel stamp: receive avg {:.3} max {:.3} microseconds, send avg {:.3} max {:.3} microseconds",
        ts.rx_user_minus_kernel_us.avg,
        ts.rx_user_minus_kernel_us.max,
        ts.tx_kernel_minus_user_us.avg,
        ts.tx_kernel_minus_user_us.max
    );
    let _ = writeln!(w, "        Clock sync: {} ({})", r.clock_sync.mode, r.clock_sync.state);
    o
}

/// The closing lines in `ping` format, so that scripts that parse ping keep working.
pub fn ping_summary(target: &str, sent: u64, received: u64, rtts: &Acc) -> String {
    // no probe sent (a control phase that failed): no loss ratio to give, and no 0% either
    let loss = if sent == 0 {
        "packet loss unknown (nothing was sent)".to_string()
    } else {
        format!("{:.0}% packet loss", (sent - received) as f64 * 100.0 / sent as f64)
    };
    let mut o = format!("--- {target} ipsla statistics ---\n{sent} packets transmitted, {received} received, {loss}\n");
    if rtts.count > 0 {
        let n = rtts.count as f64;
        let avg = rtts.sum as f64 / n;
        let mdev = ((rtts.sum2 as f64 / n) - avg * avg).max(0.0).sqrt();
        let ms = |ns: f64| ns / 1e6;
        let _ = writeln!(
            o,
            "rtt min/avg/max/mdev = {:.3}/{:.3}/{:.3}/{:.3} ms",
            ms(rtts.min as f64),
            ms(avg),
            ms(rtts.max as f64),
            ms(mdev)
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipsla_core::stats::JitterStats;

    #[test]
    fn a_stored_document_renders_as_the_original() {
        let mut stats = JitterStats { sent: 3, received: 2, loss_sd: 1, ..Default::default() };
        stats.rtt.add(2_400_000);
        stats.rtt.add(3_100_000);
        stats.jitter_sd.positive.add(700_000);
        let r = OperationResult {
            return_code: ReturnCode::Ok,
            stats,
            voice: None,
            precision: Precision::Ms,
            stamps: Default::default(),
            unexpected: 0,
            samples: Vec::new(),
            send_span_ns: 40_000_000,
            cause: None,
        };
        let ctx = Context {
            operation: "udp-jitter",
            target: "127.0.0.1:5000".into(),
            run: 7,
            start: Duration::from_secs(1_800_000_000),
            control: "v1",
            clock_sync: ClockSync { mode: "ntp", state: "out_of_sync", est_error_us: Some(40) },
            voice: None,
            samples: false,
        };
        let report = Report::new(ctx, &r);
        let back: Report = serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
        assert_eq!((back.operation, back.control, back.clock_sync.state), ("udp-jitter", "v1", "out_of_sync"));
        assert_eq!(text(&back, 4, 1), text(&report, 4, 1));
        let t = text_with_life(&back, 4, 1, Some("Forever"));
        assert!(t.contains("        Latest RTT: 2 milliseconds\n"), "{t}");
        assert!(t.contains("Latest operation start time: 08:00:00 UTC 2027-01-15\n"), "{t}");
        assert!(t.contains("Number of failures: 1\nOperation time to live: Forever\n"), "{t}");
        assert!(t.contains("        Loss Source to Destination: 1\n"), "{t}");
        let odd: Report =
            serde_json::from_str(&serde_json::to_string(&report).unwrap().replace("\"udp-jitter\"", "\"http\""))
                .unwrap();
        assert_eq!(odd.operation, "unknown", "a word from a newer version");
    }
}
