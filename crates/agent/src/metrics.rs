//! Prometheus metrics of the operations (names and labels per ip-sla-features §3.1), encoded in
//! the text exposition format.

use crate::opconfig::OperationDef;
use ipsla_core::ops::{OperationResult, ReturnCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Labels of every per-operation metric.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// Operation number.
    pub op: String,
    /// Operation type.
    pub r#type: String,
    /// Target.
    pub target: String,
    /// Tag.
    pub tag: String,
}

/// Labels with a direction (sd = source to destination, ds = back, unknown).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirLabels {
    /// Operation number.
    pub op: String,
    /// sd | ds | unknown
    pub direction: String,
}

/// Labels with a return code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    /// Operation number.
    pub op: String,
    /// Cisco return code.
    pub code: String,
}

fn delay_histogram() -> Histogram {
    // 50 µs × 2^n up to ~26 s, as smokeping_prober does
    Histogram::new(exponential_buckets(50e-6, 2.0, 20))
}

type FGauge = Gauge<f64, AtomicU64>;

/// The registry and its metric families.
pub struct Metrics {
    registry: Registry,
    success: Family<OpLabels, Gauge>,
    runs: Family<OpLabels, Counter>,
    return_code: Family<CodeLabels, Gauge>,
    rtt: Family<OpLabels, Histogram, fn() -> Histogram>,
    rtt_latest: Family<OpLabels, FGauge>,
    one_way: Family<DirLabels, Histogram, fn() -> Histogram>,
    ipdv: Family<OpLabels, Histogram, fn() -> Histogram>,
    sent: Family<OpLabels, Counter>,
    lost: Family<DirLabels, Counter>,
    loss_ratio: Family<OpLabels, FGauge>,
    mos: Family<OpLabels, FGauge>,
    icpif: Family<OpLabels, Gauge>,
    jitter_avg: Family<DirLabels, FGauge>,
    reaction_active: Family<ReactLabels, Gauge>,
    track_state: Family<TrackLabels, Gauge>,
    alerts: Family<AlertLabels, Counter>,
}

/// Labels of an alert sink's outcome counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    /// Sink name (`[[alert]]` `name`).
    pub sink: String,
    /// sent | failed (after its retries) | dropped (queue full, or still queued at shutdown)
    pub result: String,
}

/// Labels of a track.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrackLabels {
    /// Track number.
    pub track: String,
}

/// Labels of a reaction.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReactLabels {
    /// Operation number.
    pub op: String,
    /// Element keyword.
    pub element: String,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Every return code, for the state-set gauge.
const CODES: [ReturnCode; 11] = [
    ReturnCode::Ok,
    ReturnCode::OverThreshold,
    ReturnCode::Timeout,
    ReturnCode::Busy,
    ReturnCode::NoConnection,
    ReturnCode::SequenceError,
    ReturnCode::VerifyError,
    ReturnCode::AuthFailure,
    ReturnCode::FormatError,
    ReturnCode::PortInUse,
    ReturnCode::Error,
];

fn code_name(c: ReturnCode) -> String {
    serde_json::to_value(c).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry with every family registered under the `ipsla_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ipsla");
        let m = Metrics {
            success: Family::default(),
            runs: Family::default(),
            return_code: Family::default(),
            rtt: Family::new_with_constructor(delay_histogram),
            rtt_latest: Family::default(),
            one_way: Family::new_with_constructor(delay_histogram),
            ipdv: Family::new_with_constructor(delay_histogram),
            sent: Family::default(),
            lost: Family::default(),
            loss_ratio: Family::default(),
            mos: Family::default(),
            icpif: Family::default(),
            jitter_avg: Family::default(),
            reaction_active: Family::default(),
            track_state: Family::default(),
            alerts: Family::default(),
            registry: Registry::default(),
        };
        registry.register("operation_success", "1 when the latest run returned OK", m.success.clone());
        registry.register("operations", "Runs completed", m.runs.clone());
        registry.register("operation_return_code", "1 for the latest run's Cisco return code", m.return_code.clone());
        registry.register("rtt_seconds", "Round-trip time per probe, responder processing removed", m.rtt.clone());
        registry.register("rtt_latest_seconds", "Average RTT of the latest run", m.rtt_latest.clone());
        registry.register(
            "one_way_delay_seconds",
            "One-way delay per probe (clocks synchronised only)",
            m.one_way.clone(),
        );
        registry.register("ipdv_seconds", "|RTT(i) - RTT(i-1)| between consecutive probes", m.ipdv.clone());
        registry.register("packets_sent", "Probes sent", m.sent.clone());
        registry.register("packets_lost", "Probes lost, by direction", m.lost.clone());
        registry.register("loss_ratio", "Loss ratio of the latest run", m.loss_ratio.clone());
        registry.register("mos", "Mean Opinion Score of the latest run (codec operations)", m.mos.clone());
        registry.register("icpif", "ICPIF of the latest run (codec operations)", m.icpif.clone());
        registry.register(
            "jitter_average_seconds",
            "Average jitter of the latest run, by direction",
            m.jitter_avg.clone(),
        );
        registry.register("track_state", "1 while a track is up", m.track_state.clone());
        registry.register(
            "reaction_active",
            "1 while a reaction's condition holds (rttMonReactOccurred)",
            m.reaction_active.clone(),
        );
        registry.register("alerts", "Events handed to alert sinks, by outcome", m.alerts.clone());
        Metrics { registry, ..m }
    }

    /// Records one completed run.
    pub fn observe(&self, def: &OperationDef, r: &OperationResult) {
        let l = OpLabels {
            op: def.id.to_string(),
            r#type: def.spec.kind.name().into(),
            target: def.spec.target_label(),
            tag: def.tag.clone(),
        };
        let dir = |d: &str| DirLabels { op: l.op.clone(), direction: d.into() };
        self.runs.get_or_create(&l).inc();
        self.success.get_or_create(&l).set(i64::from(r.return_code == ReturnCode::Ok));
        for c in CODES {
            self.return_code
                .get_or_create(&CodeLabels { op: l.op.clone(), code: code_name(c) })
                .set(i64::from(c == r.return_code));
        }
        let s = &r.stats;
        let mut prev: Option<i64> = None;
        for x in r.samples.iter().filter(|x| !x.duplicate && !x.late) {
            self.rtt.get_or_create(&l).observe(x.rtt as f64 / 1e9);
            if s.one_way_sd.is_some() {
                self.one_way.get_or_create(&dir("sd")).observe(x.sd as f64 / 1e9);
                self.one_way.get_or_create(&dir("ds")).observe(x.ds as f64 / 1e9);
            }
            if let Some(p) = prev {
                self.ipdv.get_or_create(&l).observe((x.rtt - p).abs() as f64 / 1e9);
            }
            prev = Some(x.rtt);
        }
        self.rtt_latest.get_or_create(&l).set(s.rtt.avg() / 1e9);
        self.sent.get_or_create(&l).inc_by(u64::from(s.sent));
        self.lost.get_or_create(&dir("sd")).inc_by(u64::from(s.loss_sd));
        self.lost.get_or_create(&dir("ds")).inc_by(u64::from(s.loss_ds));
        self.lost.get_or_create(&dir("unknown")).inc_by(u64::from(s.loss_mia));
        self.loss_ratio.get_or_create(&l).set(s.loss_ratio());
        self.jitter_avg.get_or_create(&dir("sd")).set(s.jitter_sd.avg() / 1e9);
        self.jitter_avg.get_or_create(&dir("ds")).set(s.jitter_ds.avg() / 1e9);
        if let Some(v) = r.voice {
            self.mos.get_or_create(&l).set(v.mos);
            self.icpif.get_or_create(&l).set(i64::from(v.icpif));
        }
    }

    /// Drops every series of an operation (removed or redefined by a reload), so that nothing
    /// stale is exported.
    pub fn forget(&self, def: &OperationDef) {
        let l = OpLabels {
            op: def.id.to_string(),
            r#type: def.spec.kind.name().into(),
            target: def.spec.target_label(),
            tag: def.tag.clone(),
        };
        self.runs.remove(&l);
        self.success.remove(&l);
        self.rtt.remove(&l);
        self.rtt_latest.remove(&l);
        self.ipdv.remove(&l);
        self.sent.remove(&l);
        self.loss_ratio.remove(&l);
        self.mos.remove(&l);
        self.icpif.remove(&l);
        for c in CODES {
            self.return_code.remove(&CodeLabels { op: l.op.clone(), code: code_name(c) });
        }
        for d in ["sd", "ds", "unknown"] {
            let dl = DirLabels { op: l.op.clone(), direction: d.into() };
            self.one_way.remove(&dl);
            self.lost.remove(&dl);
            self.jitter_avg.remove(&dl);
        }
        for r in &def.reactions {
            self.reaction_active.remove(&ReactLabels { op: l.op.clone(), element: r.element.keyword().into() });
        }
    }

    /// Records a reaction's state.
    pub fn reaction(&self, op: u32, element: &str, occurred: bool) {
        self.reaction_active
            .get_or_create(&ReactLabels { op: op.to_string(), element: element.into() })
            .set(i64::from(occurred));
    }

    /// Drops a track's series (removed by a reload).
    pub fn forget_track(&self, id: u32) {
        self.track_state.remove(&TrackLabels { track: id.to_string() });
    }

    /// Records a track's state.
    pub fn track(&self, id: u32, up: bool) {
        self.track_state.get_or_create(&TrackLabels { track: id.to_string() }).set(i64::from(up));
    }

    /// The counter of one alert sink's outcome (`ipsla_alerts_total{sink,result}`); it shares its
    /// value with the registry, so the alert thread counts without going through `Metrics`.
    pub fn alert_counter(&self, sink: &str, result: &str) -> Counter {
        self.alerts.get_or_create(&AlertLabels { sink: sink.into(), result: result.into() }).clone()
    }

    /// The exposition in OpenMetrics 1.0 text (what `prometheus-client` writes), to be served as
    /// [`OPENMETRICS_CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The exposition in the classic Prometheus text format 0.0.4, to be served as
    /// [`TEXT_CONTENT_TYPE`] to scrapers that do not ask for OpenMetrics.
    pub fn encode_text(&self) -> String {
        openmetrics_to_text(&self.encode())
    }

    /// The body and content type for a scrape whose `Accept` header is `accept`: OpenMetrics
    /// when the scraper lists it (Prometheus does), the classic text format otherwise.
    pub fn negotiate(&self, accept: Option<&str>) -> (&'static str, String) {
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
            (OPENMETRICS_CONTENT_TYPE, self.encode())
        } else {
            (TEXT_CONTENT_TYPE, self.encode_text())
        }
    }
}

/// Content type of [`Metrics::encode`].
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of [`Metrics::encode_text`].
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Rewrites OpenMetrics text into the classic format. The two differ, for what we export, in two
/// places: an OpenMetrics counter family is named without `_total` while its samples carry it
/// (the classic format names the family as its samples, or parsers such as `promtool` see the
/// samples as an untyped family without help), and OpenMetrics ends with `# EOF`.
fn openmetrics_to_text(om: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for l in om.lines() {
        if let Some(name) = l.strip_prefix("# TYPE ").and_then(|r| r.strip_suffix(" counter")) {
            counters.insert(name);
        }
    }
    let mut out = String::with_capacity(om.len());
    for l in om.lines() {
        if l == "# EOF" || l.starts_with("# UNIT ") {
            continue;
        }
        let meta =
            l.strip_prefix("# HELP ").map(|r| ("# HELP ", r)).or(l.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        match meta {
            Some((kw, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let total = if counters.contains(name) { "_total" } else { "" };
                let sep = if tail.is_empty() { "" } else { " " };
                out.push_str(&format!("{kw}{name}{total}{sep}{tail}\n"));
            }
            None => {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_names_counter_families_by_their_samples() {
        let om = "# HELP ipsla_operations Runs completed.\n# TYPE ipsla_operations counter\n\
                  ipsla_operations_total{op=\"1\"} 3\n# HELP ipsla_mos MOS.\n# TYPE ipsla_mos gauge\n\
                  ipsla_mos{op=\"1\"} 4.34\n# EOF\n";
        assert_eq!(
            openmetrics_to_text(om),
            "# HELP ipsla_operations_total Runs completed.\n# TYPE ipsla_operations_total counter\n\
             ipsla_operations_total{op=\"1\"} 3\n# HELP ipsla_mos MOS.\n# TYPE ipsla_mos gauge\n\
             ipsla_mos{op=\"1\"} 4.34\n"
        );
    }

    #[test]
    fn the_accept_header_chooses_the_format() {
        let m = Metrics::new();
        m.track(7, true);
        // what Prometheus 2.42 sends
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
                    text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let (ct, body) = m.negotiate(Some(prom));
        assert_eq!(ct, OPENMETRICS_CONTENT_TYPE);
        assert!(body.ends_with("ipsla_track_state{track=\"7\"} 1\n# EOF\n"), "{body}");
        let (ct, body) = m.negotiate(None);
        assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
        assert!(body.ends_with("ipsla_track_state{track=\"7\"} 1\n"), "{body}");
    }
}
