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

/// Min / avg / max / percentiles of a delay, µs. Every value but the count and the sums is null
/// while `count` is 0: no sample is no delay, not a delay of 0.
#[derive(Debug, Serialize, Deserialize)]
pub struct Delay {
    pub count: u64,
    pub min: Option<f64>,
    pub avg: Option<f64>,
    pub max: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub sum: f64,
    pub sum2: f64,
}

impl Delay {
    fn new(a: &Acc, p: Option<&Percentiles>) -> Self {
        let mm = a.min_max();
        let p = Pct::new(p);
        Delay {
            count: a.count,
            min: mm.map(|m| us(m.0)),
            avg: a.mean().map(usf),
            max: mm.map(|m| us(m.1)),
            p50: p.p50,
            p90: p.p90,
            p99: p.p99,
            sum: usf(a.sum as f64),
            // µs², as the MIB's Sum2 is in the unit squared
            sum2: (a.sum2 as f64 / 1e6).round(),
        }
    }
}

/// Percentiles, µs; null without a sample.
#[derive(Debug, Serialize, Deserialize)]
pub struct Pct {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

impl Pct {
    fn new(p: Option<&Percentiles>) -> Self {
        Pct { p50: p.map(|p| us(p.p50)), p90: p.map(|p| us(p.p90)), p99: p.map(|p| us(p.p99)) }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct OneWay {
    pub sd: Delay,
    pub ds: Delay,
}

/// Jitter of one direction, µs; min, max and avg are null while their count is 0.
#[derive(Debug, Serialize, Deserialize)]
pub struct Jitter1 {
    pub count: u64,
    pub avg: Option<f64>,
    pub pos_count: u64,
    pub pos_min: Option<f64>,
    pub pos_max: Option<f64>,
    pub pos_sum: f64,
    pub neg_count: u64,
    pub neg_min: Option<f64>,
    pub neg_max: Option<f64>,
    pub neg_sum: f64,
}

impl Jitter1 {
    fn new(j: &DirJitter) -> Self {
        let (pos, neg) = (j.positive.min_max(), j.negative.min_max());
        Jitter1 {
            count: j.count(),
            avg: j.mean().map(usf),
            pos_count: j.positive.count,
            pos_min: pos.map(|m| us(m.0)),
            pos_max: pos.map(|m| us(m.1)),
            pos_sum: usf(j.positive.sum as f64),
            neg_count: j.negative.count,
            neg_min: neg.map(|m| us(m.0)),
            neg_max: neg.map(|m| us(m.1)),
            neg_sum: usf(j.negative.sum as f64),
        }
    }

    /// Smallest and largest |jitter| over both signs; `None` without a sample.
    fn min_max(&self) -> Option<(f64, f64)> {
        let both = [self.pos_min.zip(self.pos_max), self.neg_min.zip(self.neg_max)];
        both.into_iter().flatten().reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)))
    }
}

/// Jitter, µs: null averages without a sample (fewer than two replies, or a kind that measures
/// no jitter).
#[derive(Debug, Serialize, Deserialize)]
pub struct JitterReport {
    pub sd: Jitter1,
    pub ds: Jitter1,
    pub avg: Option<f64>,
    pub iaj_sd: Option<f64>,
    pub iaj_ds: Option<f64>,
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
    /// Null when nothing was sent (a run that could not start).
    pub ratio: Option<f64>,
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

/// Null `avg` and `max` while `count` is 0 (no packet had both stamps).
#[derive(Debug, Serialize, Deserialize)]
pub struct DeltaJson {
    pub count: u64,
    pub avg: Option<f64>,
    pub max: Option<f64>,
}

impl DeltaJson {
    fn new(d: &ipsla_core::ops::DeltaStats) -> Self {
        let some = d.count > 0;
        DeltaJson { count: d.count, avg: some.then(|| usf(d.avg_ns())), max: some.then(|| us(d.max_ns)) }
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
    /// When the probe left (T1), RFC 3339 UTC with ns, on our clock.
    #[serde(default)]
    pub t1: Option<String>,
    /// When the responder received it (T2), on its clock; null when the protocol does not say
    /// (udp-echo, icmp-echo, tcp-connect).
    #[serde(default)]
    pub t2: Option<String>,
    /// When the responder sent the reply (T3), on its clock; null as T2.
    #[serde(default)]
    pub t3: Option<String>,
    /// When the reply reached us (T4), on our clock.
    #[serde(default)]
    pub t4: Option<String>,
}

/// A time in ns since the Unix epoch as RFC 3339 UTC with ns; `None` before the epoch.
fn rfc3339_ns(ns: i64) -> Option<String> {
    (ns >= 0).then(|| crate::store::rfc3339_ns(ns, humantime::format_rfc3339_nanos))
}

/// One run of one operation.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    #[serde(deserialize_with = "word")]
    pub operation: Word,
    pub target: String,
    /// The operation's id (IOS `ip sla N`); absent from documents stored before it was added,
    /// whose `run` held it.
    #[serde(default)]
    pub id: Option<u32>,
    /// The mesh test and sites of a mesh operation's run (docs/mesh.md); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<crate::api::MeshLabels>,
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
    /// With `--samples`: every probe no reply answered, with its send time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<Vec<LostJson>>,
    /// The kind's own keys (http's phases, a path's hops), beside the common ones.
    #[serde(flatten)]
    pub detail: crate::ops::Detail,
}

/// A probe no reply answered, with `--samples`.
#[derive(Debug, Serialize, Deserialize)]
pub struct LostJson {
    pub seq: u32,
    /// When it left (T1), RFC 3339 UTC with ns.
    pub t1: Option<String>,
}

/// Everything that is not in the operation result.
pub struct Context {
    pub operation: &'static str,
    pub target: String,
    pub id: u32,
    pub run: u32,
    pub start: Duration,
    pub control: &'static str,
    pub clock_sync: ClockSync,
    pub voice: Option<(Codec, MosModel, u8)>,
    pub samples: bool,
}

impl Context {
    /// The context of run `run` of operation `id` (`spec`), started at `start` (since the Unix
    /// epoch).
    pub fn of(
        spec: &OperationSpec,
        id: u32,
        run: u32,
        start: Duration,
        clock_sync: ClockSync,
        samples: bool,
    ) -> Context {
        Context {
            operation: spec.op.kind().name(),
            target: spec.target_label(),
            id,
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
        let one_way = match (s.one_way_sd, s.one_way_ds) {
            (Some(sd), Some(ds)) => Some(OneWay {
                sd: Delay::new(&sd, s.one_way_pct.as_ref().map(|p| &p.0)),
                ds: Delay::new(&ds, s.one_way_pct.as_ref().map(|p| &p.1)),
            }),
            _ => None,
        };
        Report {
            schema: SCHEMA_VERSION,
            operation: ctx.operation,
            target: ctx.target,
            id: Some(ctx.id),
            mesh: None,
            run: ctx.run,
            start: humantime::format_rfc3339_micros(UNIX_EPOCH + ctx.start).to_string(),
            return_code: r.return_code,
            reason: r.cause.as_ref().map(|c| c.to_string()),
            control: ctx.control,
            precision: r.precision,
            sent: s.sent,
            received: s.received,
            send_span_us: us(r.send_span_ns as i64),
            rtt_us: Delay::new(&s.rtt, s.rtt_pct.as_ref()),
            one_way_us: one_way,
            clock_sync: ctx.clock_sync,
            jitter_us: JitterReport {
                sd: Jitter1::new(&s.jitter_sd),
                ds: Jitter1::new(&s.jitter_ds),
                avg: s.jitter_mean().map(usf),
                iaj_sd: s.jitter_sd.interarrival().map(usf),
                iaj_ds: s.jitter_ds.interarrival().map(usf),
            },
            ipdv_us: Pct::new(s.ipdv_pct.as_ref()),
            loss: Loss {
                sd: s.loss_sd,
                ds: s.loss_ds,
                mia: s.loss_mia,
                late: s.late,
                out_of_sequence: s.out_of_sequence,
                duplicates: s.duplicates,
                tail_drop: s.tail_drop,
                ratio: (s.sent > 0).then(|| s.loss_ratio()),
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
                        t1: rfc3339_ns(x.t1),
                        t2: x.t2.and_then(rfc3339_ns),
                        t3: x.t3.and_then(rfc3339_ns),
                        t4: rfc3339_ns(x.t4),
                    })
                    .collect()
            }),
            lost: ctx.samples.then(|| r.lost.iter().map(|l| LostJson { seq: l.seq, t1: rfc3339_ns(l.t1) }).collect()),
            detail: crate::ops::Detail::new(),
        }
    }

    /// The report of a whole run: its result and the kind's own part.
    pub fn of_run(ctx: Context, out: &crate::runner::RunOutcome) -> Self {
        Report { detail: out.detail.clone(), ..Report::new(ctx, &out.result) }
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
    /// `min/avg/max unit`, or words when there was no sample.
    fn mam(&self, min: Option<f64>, avg: Option<f64>, max: Option<f64>) -> String {
        match (min, avg, max) {
            (Some(a), Some(b), Some(c)) => format!("{}/{}/{} {}", self.v(a), self.v(b), self.v(c), self.name()),
            _ => NO_SAMPLES.into(),
        }
    }
}

/// What the text says where a statistic has no sample to be computed from.
const NO_SAMPLES: &str = "none (no samples)";

/// Why a run has no RTT, in words: its return code, or that no reply came in time.
fn no_rtt(r: &Report) -> String {
    match r.return_code {
        ReturnCode::Ok | ReturnCode::OverThreshold => "no reply in time".into(),
        c => c.cisco_text().to_lowercase(),
    }
}

/// `p50/p90/p99` in µs, or `None` without a sample.
fn pct_text(p: &Pct) -> Option<String> {
    match (p.p50, p.p90, p.p99) {
        (Some(a), Some(b), Some(c)) => Some(format!("{a:.3}/{b:.3}/{c:.3} microseconds")),
        _ => None,
    }
}

/// An RFC 3339 time as IOS prints it: `10:00:00 UTC Fri Jan 15 2027` (text that is not RFC 3339
/// is kept as it is).
pub fn ios_time(start: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    let ios = time::macros::format_description!(
        "[hour]:[minute]:[second] UTC [weekday repr:short] [month repr:short] [day padding:none] [year]"
    );
    time::OffsetDateTime::parse(start, &Rfc3339)
        .ok()
        .and_then(|t| t.to_offset(time::UtcOffset::UTC).format(&ios).ok())
        .unwrap_or_else(|| start.to_string())
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
    let _ = writeln!(w, "IPSLA operation id: {}", r.id.unwrap_or(r.run));
    let _ = writeln!(w, "Type of operation: {}", r.operation);
    match r.rtt_us.avg {
        Some(avg) => {
            let _ = writeln!(w, "        Latest RTT: {} {}", u.v(avg), u.name());
        }
        None => {
            let _ = writeln!(w, "        Latest RTT: none ({})", no_rtt(r));
        }
    }
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
            "        Number Of RTT: {}\t\tRTT Min/Avg/Max: {}",
            r.rtt_us.count,
            u.mam(r.rtt_us.min, r.rtt_us.avg, r.rtt_us.max),
        );
        let _ = writeln!(w, "Latency one-way time:");
        match &r.one_way_us {
            Some(ow) => {
                let _ = writeln!(w, "        Number of Latency one-way Samples: {}", ow.sd.count);
                let _ = writeln!(
                    w,
                    "        Source to Destination Latency one way Min/Avg/Max: {}",
                    u.mam(ow.sd.min, ow.sd.avg, ow.sd.max),
                );
                let _ = writeln!(
                    w,
                    "        Destination to Source Latency one way Min/Avg/Max: {}",
                    u.mam(ow.ds.min, ow.ds.avg, ow.ds.max),
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
        let _ = writeln!(w, "Jitter Time:");
        let _ = writeln!(w, "        Number of SD Jitter Samples: {}", j.sd.count);
        let _ = writeln!(w, "        Number of DS Jitter Samples: {}", j.ds.count);
        for (name, x) in [("Source to Destination", &j.sd), ("Destination to Source", &j.ds)] {
            let mm = x.min_max();
            let _ =
                writeln!(w, "        {name} Jitter Min/Avg/Max: {}", u.mam(mm.map(|m| m.0), x.avg, mm.map(|m| m.1)));
        }
        let _ = writeln!(w, "Over Threshold:");
        match (u64::from(r.over_threshold) * 100).checked_div(r.rtt_us.count) {
            Some(pct) => {
                let _ = writeln!(w, "        Number Of RTT Over Threshold: {} ({pct}%)", r.over_threshold);
            }
            None => {
                let _ = writeln!(w, "        Number Of RTT Over Threshold: {} (no samples)", r.over_threshold);
            }
        }
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
        let none = "none (needs a codec and a reply)";
        let (icpif, mos) =
            r.voice.as_ref().map_or((none.into(), none.into()), |v| (v.icpif.to_string(), format!("{:.2}", v.mos)));
        let _ = writeln!(w, "        Calculated Planning Impairment Factor (ICPIF): {icpif}");
        let _ = writeln!(w, "        Mean Opinion Score (MOS): {mos}");
    }
    if let Some(kind) = crate::ops::find(r.operation) {
        kind.text(&r.detail, w);
    }
    let _ = writeln!(w, "Number of successes: {successes}");
    let _ = writeln!(w, "Number of failures: {failures}");
    if let Some(t) = time_to_live {
        let _ = writeln!(w, "Operation time to live: {t}");
    }
    // Beyond IOS: what it does not print.
    let _ = writeln!(w, "Additional statistics (ipsla):");
    let pct_line = |w: &mut String, what: &str, d: &Delay| match pct_text(&Pct { p50: d.p50, p90: d.p90, p99: d.p99 }) {
        Some(t) => writeln!(w, "        {what} p50/p90/p99: {t}"),
        None => writeln!(w, "        {what} percentiles: no samples"),
    };
    let _ = pct_line(w, "RTT", &r.rtt_us);
    if let Some(ow) = &r.one_way_us {
        let _ = pct_line(w, "One-way SD", &ow.sd);
        let _ = pct_line(w, "One-way DS", &ow.ds);
    }
    if jittery {
        let j = &r.jitter_us;
        match pct_text(&r.ipdv_us) {
            Some(t) => writeln!(w, "        IPDV p50/p90/p99: {t}"),
            None => writeln!(w, "        IPDV percentiles: no samples (fewer than two replies)"),
        }
        .ok();
        match (j.iaj_sd, j.iaj_ds) {
            (Some(a), Some(b)) => {
                writeln!(w, "        Interarrival jitter (RFC 3550) SD/DS: {a:.3}/{b:.3} microseconds")
            }
            _ => writeln!(w, "        Interarrival jitter (RFC 3550): no samples (fewer than two replies)"),
        }
        .ok();
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
    let delta = |d: &DeltaJson| match (d.avg, d.max) {
        (Some(a), Some(m)) => format!("avg {a:.3} max {m:.3} microseconds"),
        _ => "none (no packet with both stamps)".into(),
    };
    let _ = writeln!(
        w,
        "        Userspace - kernel stamp: receive {}, send {}",
        delta(&ts.rx_user_minus_kernel_us),
        delta(&ts.tx_kernel_minus_user_us)
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
        let r =
            OperationResult { send_span_ns: 40_000_000, ..OperationResult::new(ReturnCode::Ok, stats, Precision::Ms) };
        let ctx = Context {
            operation: "udp-jitter",
            target: "127.0.0.1:5000".into(),
            id: 7,
            run: 3,
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
        assert!(t.starts_with("IPSLA operation id: 7\n"), "the operation's id, not the run's number: {t}");
        assert_eq!((back.id, back.run), (Some(7), 3));
        assert!(t.contains("        Latest RTT: 2 milliseconds\n"), "{t}");
        assert!(t.contains("Latest operation start time: 08:00:00 UTC Fri Jan 15 2027\n"), "{t}");
        assert!(t.contains("Number of failures: 1\nOperation time to live: Forever\n"), "{t}");
        assert!(t.contains("        Loss Source to Destination: 1\n"), "{t}");
        let odd: Report =
            serde_json::from_str(&serde_json::to_string(&report).unwrap().replace("\"udp-jitter\"", "\"ftp\""))
                .unwrap();
        assert_eq!(odd.operation, "unknown", "a word from a newer version");
    }
}
