//! Prometheus metrics of the operations (names and labels per ip-sla-features §3.1), encoded in
//! the text exposition format.

use crate::ops::OperationDef;
use ipsla_core::ops::{OperationResult, ReturnCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

// Label values that repeat across operations are `&'static str` and the operation number is a
// number: 10,000 operations hold about 200,000 label sets, and each String was a heap allocation.

/// Labels of every per-operation metric.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// Operation number.
    pub op: u32,
    /// Operation type.
    pub r#type: &'static str,
    /// Target.
    pub target: String,
    /// Tag.
    pub tag: String,
}

/// Labels with a direction (sd = source to destination, ds = back, unknown).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirLabels {
    /// Operation number.
    pub op: u32,
    /// sd | ds | unknown
    pub direction: &'static str,
}

/// Labels with a return code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    /// Operation number.
    pub op: u32,
    /// Cisco return code, as the JSON API writes it.
    pub code: &'static str,
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
    store_errors: Counter,
    store_writable: Gauge,
    /// Length of the last exposition, to allocate the next one at once.
    last_len: AtomicUsize,
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

/// The return code's label value: its JSON name (checked against serde in the tests).
fn code_name(c: ReturnCode) -> &'static str {
    match c {
        ReturnCode::Ok => "ok",
        ReturnCode::OverThreshold => "over_threshold",
        ReturnCode::Timeout => "timeout",
        ReturnCode::Busy => "busy",
        ReturnCode::NoConnection => "no_connection",
        ReturnCode::SequenceError => "sequence_error",
        ReturnCode::VerifyError => "verify_error",
        ReturnCode::AuthFailure => "auth_failure",
        ReturnCode::FormatError => "format_error",
        ReturnCode::PortInUse => "port_in_use",
        ReturnCode::Error => "error",
    }
}

fn op_labels(def: &OperationDef) -> OpLabels {
    OpLabels { op: def.id, r#type: def.spec.op.kind().name(), target: def.spec.target_label(), tag: def.tag.clone() }
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
            store_errors: Counter::default(),
            store_writable: Gauge::default(),
            registry: Registry::default(),
            last_len: AtomicUsize::new(0),
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
        registry.register("store_write_errors", "Runs and events the store refused", m.store_errors.clone());
        registry.register(
            "store_writable",
            "0 while the store refuses writes (disk full, read-only)",
            m.store_writable.clone(),
        );
        m.store_writable.set(1);
        Metrics { registry, ..m }
    }

    /// One write the store refused.
    pub fn store_error(&self) {
        self.store_errors.inc();
        self.store_writable.set(0);
    }

    /// The store accepted a write.
    pub fn store_ok(&self) {
        self.store_writable.set(1);
    }

    /// Records one completed run.
    pub fn observe(&self, def: &OperationDef, r: &OperationResult) {
        let l = op_labels(def);
        let dir = |d: &'static str| DirLabels { op: l.op, direction: d };
        self.runs.get_or_create(&l).inc();
        self.success.get_or_create(&l).set(i64::from(r.return_code == ReturnCode::Ok));
        for c in CODES {
            self.return_code
                .get_or_create(&CodeLabels { op: l.op, code: code_name(c) })
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
        let l = op_labels(def);
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
            self.return_code.remove(&CodeLabels { op: l.op, code: code_name(c) });
        }
        for d in ["sd", "ds", "unknown"] {
            let dl = DirLabels { op: l.op, direction: d };
            self.one_way.remove(&dl);
            self.lost.remove(&dl);
            self.jitter_avg.remove(&dl);
        }
        for r in &def.reactions {
            self.reaction_active.remove(&ReactLabels { op: l.op.to_string(), element: r.element.keyword().into() });
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
    /// value with the registry, so the alert sinks count without going through `Metrics`.
    pub fn alert_counter(&self, sink: &str, result: &str) -> Counter {
        self.alerts.get_or_create(&AlertLabels { sink: sink.into(), result: result.into() }).clone()
    }

    /// The exposition in OpenMetrics 1.0 text (what `prometheus-client` writes), to be served as
    /// [`OPENMETRICS_CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        let mut out = self.buffer();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        self.last_len.store(out.len(), Ordering::Relaxed);
        out
    }

    /// The exposition in the classic Prometheus text format 0.0.4, to be served as
    /// [`TEXT_CONTENT_TYPE`] to scrapers that do not ask for OpenMetrics.
    pub fn encode_text(&self) -> String {
        let mut out = self.buffer();
        let mut w = Classic::new(&mut out);
        let _ = prometheus_client::encoding::text::encode(&mut w, &self.registry);
        let _ = w.finish();
        self.last_len.store(out.len(), Ordering::Relaxed);
        out
    }

    /// An empty buffer the size of the last exposition and a little more: 10,000 operations
    /// make 34 MB, and growing a String to that by doubling left up to twice as much behind in
    /// the allocator after every scrape.
    fn buffer(&self) -> String {
        let last = self.last_len.load(Ordering::Relaxed);
        String::with_capacity(last + last / 16 + 4096)
    }

    /// The body and content type for a scrape whose `Accept` header is `accept`: OpenMetrics
    /// when the scraper lists it (Prometheus does), the classic text format otherwise.
    pub fn negotiate(&self, accept: Option<&str>) -> (&'static str, String) {
        if wants_openmetrics(accept) {
            (OPENMETRICS_CONTENT_TYPE, self.encode())
        } else {
            (TEXT_CONTENT_TYPE, self.encode_text())
        }
    }

    /// The exposition (OpenMetrics, or the classic text) in pieces of about `chunk` bytes, each
    /// handed to `send` as it is ready, so that a scrape of a large agent never holds the whole
    /// text (34 MB for 10,000 operations). Stops early, returning false, when `send` does.
    pub fn encode_chunked(&self, openmetrics: bool, chunk: usize, send: impl FnMut(String) -> bool) -> bool {
        let mut w = Chunks { buf: String::with_capacity(chunk + 1024), chunk, send, open: true };
        let done = if openmetrics {
            prometheus_client::encoding::text::encode(&mut w, &self.registry).is_ok()
        } else {
            let mut c = Classic::new(&mut w);
            prometheus_client::encoding::text::encode(&mut c, &self.registry).is_ok() && c.finish().is_ok()
        };
        done && w.flush()
    }
}

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// A writer that hands its text on in pieces.
struct Chunks<F: FnMut(String) -> bool> {
    buf: String,
    chunk: usize,
    send: F,
    open: bool,
}

impl<F: FnMut(String) -> bool> Chunks<F> {
    fn flush(&mut self) -> bool {
        if self.open && !self.buf.is_empty() {
            let piece = std::mem::replace(&mut self.buf, String::with_capacity(self.chunk + 1024));
            self.open = (self.send)(piece);
        }
        self.open
    }
}

impl<F: FnMut(String) -> bool> std::fmt::Write for Chunks<F> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.buf.push_str(s);
        if self.buf.len() >= self.chunk && !self.flush() {
            return Err(std::fmt::Error);
        }
        Ok(())
    }
}

/// Content type of [`Metrics::encode`].
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of [`Metrics::encode_text`].
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Rewrites OpenMetrics text into the classic format as the encoder writes it, line by line, so
/// that no second copy of the exposition is made. The two differ, for what we export, in two
/// places: an OpenMetrics counter family is named without `_total` while its samples carry it
/// (the classic format names the family as its samples, or parsers such as `promtool` see the
/// samples as an untyped family without help), and OpenMetrics ends with `# EOF`.
struct Classic<W: std::fmt::Write> {
    out: W,
    /// The line being written.
    line: String,
    /// A `# HELP` line waiting for its `# TYPE` (which says whether the family is a counter).
    help: String,
}

impl<W: std::fmt::Write> Classic<W> {
    fn new(out: W) -> Self {
        Classic { out, line: String::new(), help: String::new() }
    }

    fn end_line(&mut self) -> std::fmt::Result {
        let Classic { out, line, help } = self;
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(out, help)?;
            help.push_str(rest);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let total = if kind == "counter" { "_total" } else { "" };
            if let Some(text) = help.strip_prefix(name).and_then(|t| t.strip_prefix(' ')) {
                writeln!(out, "# HELP {name}{total} {text}")?;
                help.clear();
            }
            flush_help(out, help)?;
            writeln!(out, "# TYPE {name}{total} {kind}")?;
        } else {
            flush_help(out, help)?;
            if line != "# EOF" && !line.starts_with("# UNIT ") {
                out.write_str(line)?;
                out.write_char('\n')?;
            }
        }
        line.clear();
        Ok(())
    }

    fn finish(&mut self) -> std::fmt::Result {
        if !self.line.is_empty() {
            self.end_line()?;
        }
        flush_help(&mut self.out, &mut self.help)
    }
}

/// Writes a `# HELP` line that no `# TYPE` line claimed, as it was.
fn flush_help(out: &mut impl std::fmt::Write, help: &mut String) -> std::fmt::Result {
    if !help.is_empty() {
        writeln!(out, "# HELP {help}")?;
        help.clear();
    }
    Ok(())
}

impl<W: std::fmt::Write> std::fmt::Write for Classic<W> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let mut rest = s;
        while let Some(i) = rest.find('\n') {
            self.line.push_str(&rest[..i]);
            self.end_line()?;
            rest = &rest[i + 1..];
        }
        self.line.push_str(rest);
        Ok(())
    }
}

#[cfg(test)]
fn openmetrics_to_text(om: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut w = Classic::new(&mut out);
    w.write_str(om).unwrap();
    w.finish().unwrap();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;

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
    fn classic_text_across_write_boundaries() {
        // the encoder writes pieces, not lines; a help text may mention another family's name
        let om = "# HELP ipsla_a A counter.\n# TYPE ipsla_a counter\nipsla_a_total 1\n\
                  # HELP ipsla_b Not ipsla_a.\n# TYPE ipsla_b gauge\nipsla_b 2\n# EOF\n";
        let mut out = String::new();
        let mut w = Classic::new(&mut out);
        for chunk in om.as_bytes().chunks(5) {
            w.write_str(std::str::from_utf8(chunk).unwrap()).unwrap();
        }
        w.finish().unwrap();
        assert_eq!(out, openmetrics_to_text(om));
        assert_eq!(
            out,
            "# HELP ipsla_a_total A counter.\n# TYPE ipsla_a_total counter\nipsla_a_total 1\n\
             # HELP ipsla_b Not ipsla_a.\n# TYPE ipsla_b gauge\nipsla_b 2\n"
        );
    }

    #[test]
    fn chunked_encoding_is_the_same_text_in_pieces() {
        let m = Metrics::new();
        for id in 1..=50 {
            m.track(id, id % 2 == 0);
            m.reaction(id, "rtt", true);
        }
        m.alert_counter("noc", "sent").inc();
        for (om, whole) in [(true, m.encode()), (false, m.encode_text())] {
            let mut pieces = Vec::new();
            assert!(m.encode_chunked(om, 100, |p| {
                pieces.push(p);
                true
            }));
            assert!(pieces.len() > 10 && pieces.iter().all(|p| p.len() < 100 + 200), "{}", pieces.len());
            assert_eq!(pieces.concat(), whole);
        }
        // a receiver that hangs up stops the encoding
        let mut sent = 0;
        assert!(!m.encode_chunked(true, 100, |_| {
            sent += 1;
            sent < 3
        }));
        assert_eq!(sent, 3);
    }

    #[test]
    fn return_code_labels_are_the_json_names() {
        for c in CODES {
            assert_eq!(serde_json::to_value(c).unwrap(), code_name(c), "{c:?}");
        }
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
        assert!(body.contains("\nipsla_track_state{track=\"7\"} 1\n"), "{body}");
        assert!(body.contains("\nipsla_store_write_errors_total 0\n") && body.ends_with("\n# EOF\n"), "{body}");
        let (ct, body) = m.negotiate(None);
        assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
        assert!(body.contains("\nipsla_track_state{track=\"7\"} 1\n"), "{body}");
        assert!(body.ends_with("ipsla_store_writable 1\n") && !body.contains("# EOF"), "{body}");
    }
}
