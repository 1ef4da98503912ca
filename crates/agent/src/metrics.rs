//! Prometheus metrics of the operations (names per ip-sla-features §3.1), of the agent's
//! responder and of the agent itself, encoded in the text exposition format.
//!
//! Identity is told once: `ipsla_operation_info{op,type,target,tag} 1` carries an operation's
//! descriptive labels and every other per-operation family carries only `op` (join with
//! `* on(op) group_left(type,target,tag) ipsla_operation_info`, as blackbox and snmp exporters
//! do), so a tag edit does not split every series in two.
//!
//! A missing value is never a number: a run without a reply exports no latest RTT, a run without
//! jitter samples no jitter, a run without a voice score no MOS; the series is removed (absent)
//! rather than set to NaN, which would poison every aggregation over operations (`avg`, `sum`)
//! and compare false silently. `ipsla_operation_return_code` says why. A kind that measures no
//! jitter ([`crate::ops::Kind::jitter`]) never exports a jitter family.
//!
//! Series are kept sorted by their labels ([`Sorted`]), so two scrapes list them in the same
//! order whatever was added or removed in between.

use crate::ops::OperationDef;
use ipsla_core::ops::{OperationResult, ReturnCode};
use ipsla_core::responder::{ProbeReject, Reject};
use ipsla_net::responder::StatusReport;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

// Label values that repeat across operations are `&'static str` and the operation number is a
// number: 10,000 operations hold about 200,000 label sets, and each String was a heap allocation.

/// Labels of every per-operation metric but `ipsla_operation_info`: the operation number.
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct OpLabels {
    /// Operation number.
    pub op: u32,
}

/// Labels of `ipsla_operation_info`: what the operation is.
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct InfoLabels {
    /// Operation number.
    pub op: u32,
    /// Operation type.
    pub r#type: &'static str,
    /// Target.
    pub target: String,
    /// Tag.
    pub tag: String,
    /// The mesh's source and destination sites; `None` for an operation of the agent's own file,
    /// which then has no `src` / `dst` label at all (not an empty one).
    pub mesh: Option<(String, String)>,
}

impl EncodeLabelSet for InfoLabels {
    fn encode(&self, encoder: &mut prometheus_client::encoding::LabelSetEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeLabel;
        ("op", self.op).encode(encoder.encode_label())?;
        ("type", self.r#type).encode(encoder.encode_label())?;
        ("target", self.target.as_str()).encode(encoder.encode_label())?;
        ("tag", self.tag.as_str()).encode(encoder.encode_label())?;
        if let Some((src, dst)) = &self.mesh {
            ("src", src.as_str()).encode(encoder.encode_label())?;
            ("dst", dst.as_str()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// Labels with a direction (sd = source to destination, ds = back, unknown).
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct DirLabels {
    /// Operation number.
    pub op: u32,
    /// sd | ds | unknown
    pub direction: &'static str,
}

/// Labels with a return code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct CodeLabels {
    /// Operation number.
    pub op: u32,
    /// Cisco return code, as the JSON API writes it.
    pub code: &'static str,
}

/// Labels of `ipsla_build_info`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct BuildLabels {
    /// The crate version (`ipsla --version`).
    pub version: &'static str,
}

/// A label with one word: a responder's control version, or why it refused something.
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The word.
    pub reason: &'static str,
}

/// Labels of the responder's control-message counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct VersionLabels {
    /// v1 | v2
    pub version: &'static str,
}

fn delay_histogram() -> Histogram {
    // 50 µs × 2^n up to ~26 s, as smokeping_prober does
    Histogram::new(exponential_buckets(50e-6, 2.0, 20))
}

/// A gauge of a float.
pub type FGauge = Gauge<f64, AtomicU64>;

/// Labels of a kind's own gauge ([`crate::ops::GaugeDef`]): the operation, then the labels its
/// value carries.
type KindLabels = (OpLabels, Vec<(&'static str, String)>);

/// A metric family whose series are kept, and encoded, in label order (prometheus-client's
/// `Family` is a hash map: its order changes as series come and go). A family without series
/// is left out of the exposition altogether.
#[derive(Debug)]
pub struct Sorted<S, M> {
    series: Arc<RwLock<BTreeMap<S, M>>>,
    new: fn() -> M,
}

impl<S, M> Clone for Sorted<S, M> {
    fn clone(&self) -> Self {
        Sorted { series: self.series.clone(), new: self.new }
    }
}

impl<S: Ord + Clone, M: Clone> Sorted<S, M> {
    fn new(new: fn() -> M) -> Self {
        Sorted { series: Arc::default(), new }
    }

    /// The series of `labels`, created if absent; the handle shares its value with the family.
    pub fn get_or_create(&self, labels: &S) -> M {
        if let Some(m) = self.series.read().unwrap_or_else(|e| e.into_inner()).get(labels) {
            return m.clone();
        }
        let mut w = self.series.write().unwrap_or_else(|e| e.into_inner());
        w.entry(labels.clone()).or_insert_with(self.new).clone()
    }

    /// Drops the series of `labels`.
    pub fn remove(&self, labels: &S) {
        self.series.write().unwrap_or_else(|e| e.into_inner()).remove(labels);
    }

    /// Drops every series `keep` refuses.
    fn retain(&self, mut keep: impl FnMut(&S) -> bool) {
        self.series.write().unwrap_or_else(|e| e.into_inner()).retain(|s, _| keep(s));
    }
}

impl<S, M: TypedMetric> TypedMetric for Sorted<S, M> {
    const TYPE: MetricType = M::TYPE;
}

impl<S: EncodeLabelSet, M: EncodeMetric + TypedMetric> EncodeMetric for Sorted<S, M> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let series = self.series.read().unwrap_or_else(|e| e.into_inner());
        for (labels, m) in series.iter() {
            m.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }

    fn is_empty(&self) -> bool {
        self.series.read().unwrap_or_else(|e| e.into_inner()).is_empty()
    }
}

/// A metric without labels that is left out of the exposition until it is first set: the
/// responder's counters exist only on an agent that runs one.
#[derive(Debug, Clone, Default)]
pub struct Present<M> {
    metric: M,
    shown: Arc<AtomicBool>,
}

impl<M> Present<M> {
    fn show(&self) -> &M {
        self.shown.store(true, Ordering::Relaxed);
        &self.metric
    }
}

impl<M: TypedMetric> TypedMetric for Present<M> {
    const TYPE: MetricType = M::TYPE;
}

impl<M: EncodeMetric + TypedMetric> EncodeMetric for Present<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.metric.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }

    fn is_empty(&self) -> bool {
        !self.shown.load(Ordering::Relaxed)
    }
}

/// The responder's families, filled from its status at each scrape.
#[derive(Debug, Default)]
struct ResponderMetrics {
    sessions: Present<Gauge>,
    sessions_opened: Present<Counter>,
    control: Sorted<VersionLabels, Counter>,
    accepted: Present<Counter>,
    rejected: Sorted<ReasonLabels, Counter>,
    answered: Present<Counter>,
    dropped: Sorted<ReasonLabels, Counter>,
}

impl<S: Ord + Clone, M: Clone + Default> Default for Sorted<S, M> {
    fn default() -> Self {
        Sorted::new(M::default)
    }
}

/// The registry and its metric families.
pub struct Metrics {
    registry: Registry,
    info: Sorted<InfoLabels, Gauge>,
    success: Sorted<OpLabels, Gauge>,
    runs: Sorted<OpLabels, Counter>,
    return_code: Sorted<CodeLabels, Gauge>,
    rtt: Sorted<OpLabels, Histogram>,
    rtt_latest: Sorted<OpLabels, FGauge>,
    one_way: Sorted<DirLabels, Histogram>,
    ipdv: Sorted<OpLabels, Histogram>,
    sent: Sorted<OpLabels, Counter>,
    lost: Sorted<DirLabels, Counter>,
    late: Sorted<OpLabels, Counter>,
    out_of_sequence: Sorted<OpLabels, Counter>,
    duplicates: Sorted<OpLabels, Counter>,
    loss_ratio: Sorted<OpLabels, FGauge>,
    mos: Sorted<OpLabels, FGauge>,
    icpif: Sorted<OpLabels, Gauge>,
    jitter_avg: Sorted<DirLabels, FGauge>,
    reaction_active: Sorted<ReactLabels, Gauge>,
    track_state: Sorted<TrackLabels, Gauge>,
    alerts: Sorted<AlertLabels, Counter>,
    rw_sent: Sorted<UrlLabels, Counter>,
    rw_failed: Sorted<UrlLabels, Counter>,
    rw_dropped: Sorted<UrlLabels, Counter>,
    rw_lag: Sorted<UrlLabels, FGauge>,
    responder: ResponderMetrics,
    /// The kinds' own gauges, by family name.
    kinds: BTreeMap<&'static str, Sorted<KindLabels, FGauge>>,
    store_errors: Counter,
    store_writable: Gauge,
    /// Length of the last exposition, to allocate the next one at once.
    last_len: AtomicUsize,
    /// Whether runs feed the per-probe histograms (`agent.metrics_histograms`; always for `/probe`).
    histograms: AtomicBool,
}

/// Labels of an alert sink's outcome counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct AlertLabels {
    /// Sink name (`[[alert]]` `name`).
    pub sink: String,
    /// sent | failed (after its retries) | dropped (queue full, or still queued at shutdown)
    pub result: String,
}

/// Labels of a remote-write endpoint's families.
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct UrlLabels {
    /// `[[remote_write]]` `url`.
    pub url: String,
}

/// One remote-write endpoint's series; they share their values with the registry.
#[derive(Debug, Clone)]
pub struct RemoteWriteMetrics {
    /// Samples the receiver accepted.
    pub sent: Counter,
    /// Samples in batches the receiver refused with a 4xx (not retried).
    pub failed: Counter,
    /// Samples of runs the store deleted before they were shipped.
    pub dropped: Counter,
    /// Age of the oldest run not shipped yet, seconds (0 when caught up).
    pub lag: FGauge,
}

/// Labels of a track.
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct TrackLabels {
    /// Track number.
    pub track: u32,
}

/// Labels of a reaction.
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ReactLabels {
    /// Operation number.
    pub op: u32,
    /// Element keyword.
    pub element: String,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn info_labels(def: &OperationDef) -> InfoLabels {
    InfoLabels {
        op: def.id,
        r#type: def.spec.op.kind().name(),
        target: def.spec.target_label(),
        tag: def.tag.clone(),
        mesh: def.mesh.as_ref().map(|p| (p.src.clone(), p.dst.clone())),
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry with every family registered under the `ipsla_` prefix.
    pub fn new() -> Self {
        Self::build(true)
    }

    /// The per-operation families only, for the answer of one `/probe` run: no build, store or
    /// other agent-wide series.
    pub fn for_probe() -> Self {
        Self::build(false)
    }

    fn build(agent: bool) -> Self {
        let mut registry = Registry::with_prefix("ipsla");
        let m = Metrics {
            info: Sorted::default(),
            success: Sorted::default(),
            runs: Sorted::default(),
            return_code: Sorted::default(),
            rtt: Sorted::new(delay_histogram),
            rtt_latest: Sorted::default(),
            one_way: Sorted::new(delay_histogram),
            ipdv: Sorted::new(delay_histogram),
            sent: Sorted::default(),
            lost: Sorted::default(),
            late: Sorted::default(),
            out_of_sequence: Sorted::default(),
            duplicates: Sorted::default(),
            loss_ratio: Sorted::default(),
            mos: Sorted::default(),
            icpif: Sorted::default(),
            jitter_avg: Sorted::default(),
            reaction_active: Sorted::default(),
            track_state: Sorted::default(),
            alerts: Sorted::default(),
            rw_sent: Sorted::default(),
            rw_failed: Sorted::default(),
            rw_dropped: Sorted::default(),
            rw_lag: Sorted::default(),
            responder: ResponderMetrics::default(),
            kinds: BTreeMap::new(),
            store_errors: Counter::default(),
            store_writable: Gauge::default(),
            registry: Registry::default(),
            last_len: AtomicUsize::new(0),
            histograms: AtomicBool::new(!agent),
        };
        if agent {
            let build: Sorted<BuildLabels, Gauge> = Sorted::default();
            build.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
            registry.register("build_info", "Always 1; the agent's version as a label", build);
        }
        registry.register(
            "operation_info",
            "Always 1 for a configured operation; its type, target and tag (and a mesh's src and dst) as labels (join on op)",
            m.info.clone(),
        );
        registry.register("operation_success", "1 when the latest run returned OK", m.success.clone());
        registry.register("operations", "Runs completed", m.runs.clone());
        registry.register("operation_return_code", "1 for the latest run's Cisco return code", m.return_code.clone());
        registry.register("rtt_seconds", "Round-trip time per probe, responder processing removed", m.rtt.clone());
        registry.register(
            "rtt_latest_seconds",
            "Average RTT of the latest run; absent when it had no reply (see operation_return_code)",
            m.rtt_latest.clone(),
        );
        registry.register(
            "one_way_delay_seconds",
            "One-way delay per probe (clocks synchronised only)",
            m.one_way.clone(),
        );
        registry.register("ipdv_seconds", "|RTT(i) - RTT(i-1)| between consecutive probes", m.ipdv.clone());
        registry.register("packets_sent", "Probes sent", m.sent.clone());
        registry.register("packets_lost", "Probes lost, by direction", m.lost.clone());
        registry.register("packets_late", "Replies after the timeout (not lost)", m.late.clone());
        registry.register(
            "packets_out_of_sequence",
            "Replies whose sequence went backwards in arrival order",
            m.out_of_sequence.clone(),
        );
        registry.register("packets_duplicate", "Extra copies of replies already received", m.duplicates.clone());
        registry.register(
            "loss_ratio",
            "Loss ratio of the latest run; absent when it sent nothing",
            m.loss_ratio.clone(),
        );
        registry.register("mos", "Mean Opinion Score of the latest run (codec operations with replies)", m.mos.clone());
        registry.register("icpif", "ICPIF of the latest run (codec operations with replies)", m.icpif.clone());
        registry.register(
            "jitter_average_seconds",
            "Average jitter of the latest run, by direction (jitter operations; absent under two replies)",
            m.jitter_avg.clone(),
        );
        registry.register("track_state", "1 while a track is up", m.track_state.clone());
        registry.register(
            "reaction_active",
            "1 while a reaction's condition holds (rttMonReactOccurred)",
            m.reaction_active.clone(),
        );
        registry.register("alerts", "Events handed to alert sinks, by outcome", m.alerts.clone());
        registry.register(
            "remote_write_samples_sent",
            "Samples a remote-write receiver accepted (2xx)",
            m.rw_sent.clone(),
        );
        registry.register(
            "remote_write_samples_failed",
            "Samples in batches a remote-write receiver refused with a 4xx (not sent again)",
            m.rw_failed.clone(),
        );
        registry.register(
            "remote_write_samples_dropped",
            "Samples of runs the store deleted (retention, size limit) before they were shipped",
            m.rw_dropped.clone(),
        );
        registry.register(
            "remote_write_queue_lag_seconds",
            "Age of the oldest stored run not shipped yet; 0 when caught up",
            m.rw_lag.clone(),
        );
        let r = &m.responder;
        registry.register("responder_sessions", "Responder sessions open now", r.sessions.clone());
        registry.register("responder_sessions_opened", "Responder sessions opened", r.sessions_opened.clone());
        registry.register(
            "responder_control_messages",
            "IP SLA control messages received by the responder, by version",
            r.control.clone(),
        );
        registry.register(
            "responder_control_accepted",
            "Control messages that opened or refreshed a session",
            r.accepted.clone(),
        );
        registry.register(
            "responder_control_rejected",
            "Control messages the responder refused, by reason",
            r.rejected.clone(),
        );
        registry.register("responder_probes_answered", "Probes the responder answered", r.answered.clone());
        registry.register(
            "responder_probes_dropped",
            "Probes the responder did not answer, by reason",
            r.dropped.clone(),
        );
        if agent {
            registry.register("store_write_errors", "Runs and events the store refused", m.store_errors.clone());
            registry.register(
                "store_writable",
                "0 while the store refuses writes (disk full, read-only)",
                m.store_writable.clone(),
            );
        }
        m.store_writable.set(1);
        let mut kinds = BTreeMap::new();
        for g in crate::ops::REGISTRY.iter().flat_map(|k| k.gauges()) {
            kinds.entry(g.name).or_insert_with(|| {
                let f: Sorted<KindLabels, FGauge> = Sorted::default();
                registry.register(g.name, g.help, f.clone());
                f
            });
        }
        Metrics { registry, kinds, ..m }
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

    /// Turns the per-probe histograms (`ipsla_rtt_seconds`, `ipsla_one_way_delay_seconds`,
    /// `ipsla_ipdv_seconds`) on or off (`agent.metrics_histograms`, default off). They are 23 series
    /// per operation and direction, nine tenths of a large agent's exposition; off, their series
    /// are dropped rather than left frozen.
    pub fn set_histograms(&self, on: bool) {
        if !self.histograms.swap(on, Ordering::Relaxed) || on {
            return;
        }
        self.rtt.retain(|_| false);
        self.one_way.retain(|_| false);
        self.ipdv.retain(|_| false);
    }

    /// A configured operation (at start, or added or redefined by a reload): its info series,
    /// and each of its reactions at 0, so that a reaction is visible (and alertable on) before
    /// its first transition.
    pub fn declare(&self, def: &OperationDef) {
        self.info.get_or_create(&info_labels(def)).set(1);
        for r in &def.reactions {
            self.reaction_active.get_or_create(&ReactLabels { op: def.id, element: r.element.keyword().into() });
        }
    }

    /// Records one completed run and its kind's own part of the report.
    pub fn observe(&self, def: &OperationDef, r: &OperationResult, detail: &crate::ops::Detail) {
        let l = OpLabels { op: def.id };
        // the kind's gauges: only the series this run has a value for
        let kind = def.spec.op.kind();
        for g in kind.gauges() {
            if let Some(f) = self.kinds.get(g.name) {
                f.retain(|x| x.0.op != l.op);
            }
        }
        for v in kind.gauge_values(detail) {
            if let Some(f) = self.kinds.get(v.family) {
                f.get_or_create(&(l.clone(), v.labels)).set(v.value);
            }
        }
        let dir = |d: &'static str| DirLabels { op: l.op, direction: d };
        self.runs.get_or_create(&l).inc();
        self.success.get_or_create(&l).set(i64::from(r.return_code == ReturnCode::Ok));
        // the latest code only: the other codes' zeros were ten series per operation that said
        // nothing the one series does not
        for c in ReturnCode::ALL.into_iter().filter(|c| *c != r.return_code) {
            self.return_code.remove(&CodeLabels { op: l.op, code: c.name() });
        }
        self.return_code.get_or_create(&CodeLabels { op: l.op, code: r.return_code.name() }).set(1);
        let s = &r.stats;
        let mut prev: Option<i64> = None;
        let histograms = self.histograms.load(Ordering::Relaxed);
        for x in r.samples.iter().filter(|x| histograms && !x.duplicate && !x.late) {
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
        // the latest-value gauges: absent, not 0, when the run has no value for them
        let latest = |g: &Sorted<OpLabels, FGauge>, v: Option<f64>| match v {
            Some(v) => {
                g.get_or_create(&l).set(v);
            }
            None => g.remove(&l),
        };
        latest(&self.rtt_latest, s.rtt.mean().map(|ns| ns / 1e9));
        latest(&self.loss_ratio, (s.sent > 0).then(|| s.loss_ratio()));
        self.sent.get_or_create(&l).inc_by(u64::from(s.sent));
        self.lost.get_or_create(&dir("unknown")).inc_by(u64::from(s.loss_mia));
        self.late.get_or_create(&l).inc_by(u64::from(s.late));
        self.duplicates.get_or_create(&l).inc_by(u64::from(s.duplicates));
        // a train of probes (the registry's jitter kinds) has loss by direction, an order and
        // jitter; a single probe has none of them, and exports no 0 that would claim otherwise
        if def.spec.op.kind().jitter() {
            self.lost.get_or_create(&dir("sd")).inc_by(u64::from(s.loss_sd));
            self.lost.get_or_create(&dir("ds")).inc_by(u64::from(s.loss_ds));
            self.out_of_sequence.get_or_create(&l).inc_by(u64::from(s.out_of_sequence));
            for (d, j) in [("sd", &s.jitter_sd), ("ds", &s.jitter_ds)] {
                match j.mean() {
                    Some(ns) => {
                        self.jitter_avg.get_or_create(&dir(d)).set(ns / 1e9);
                    }
                    None => self.jitter_avg.remove(&dir(d)),
                }
            }
        }
        match r.voice {
            Some(v) => {
                self.mos.get_or_create(&l).set(v.mos);
                self.icpif.get_or_create(&l).set(i64::from(v.icpif));
            }
            None => {
                self.mos.remove(&l);
                self.icpif.remove(&l);
            }
        }
    }

    /// Drops every series of an operation (removed or redefined by a reload), so that nothing
    /// stale is exported.
    pub fn forget(&self, def: &OperationDef) {
        let (op, l) = (def.id, OpLabels { op: def.id });
        self.info.retain(|x| x.op != op);
        for f in [&self.success, &self.icpif] {
            f.remove(&l);
        }
        for f in [&self.runs, &self.sent, &self.late, &self.out_of_sequence, &self.duplicates] {
            f.remove(&l);
        }
        for f in [&self.rtt, &self.ipdv] {
            f.remove(&l);
        }
        for f in [&self.rtt_latest, &self.loss_ratio, &self.mos] {
            f.remove(&l);
        }
        self.return_code.retain(|x| x.op != op);
        self.one_way.retain(|x| x.op != op);
        self.lost.retain(|x| x.op != op);
        self.jitter_avg.retain(|x| x.op != op);
        self.reaction_active.retain(|x| x.op != op);
        for f in self.kinds.values() {
            f.retain(|x| x.0.op != op);
        }
    }

    /// Records a reaction's state.
    pub fn reaction(&self, op: u32, element: &str, occurred: bool) {
        self.reaction_active.get_or_create(&ReactLabels { op, element: element.into() }).set(i64::from(occurred));
    }

    /// Drops a track's series (removed by a reload).
    pub fn forget_track(&self, id: u32) {
        self.track_state.remove(&TrackLabels { track: id });
    }

    /// Records a track's state.
    pub fn track(&self, id: u32, up: bool) {
        self.track_state.get_or_create(&TrackLabels { track: id }).set(i64::from(up));
    }

    /// The responder's counters, from its status (called before each scrape). Every reason is
    /// exported, at 0 until it happens, so that a rate over it exists from the start.
    pub fn responder(&self, s: &StatusReport) {
        let r = &self.responder;
        let set = |c: &Counter, v: u64| {
            c.inner().store(v, Ordering::Relaxed);
        };
        r.sessions.show().set(i64::try_from(s.sessions.len()).unwrap_or(i64::MAX));
        set(r.sessions_opened.show(), s.stats.sessions_opened);
        set(&r.control.get_or_create(&VersionLabels { version: "v1" }), s.stats.control_v1);
        set(&r.control.get_or_create(&VersionLabels { version: "v2" }), s.stats.control_v2);
        set(r.accepted.show(), s.stats.control_accepted);
        for why in Reject::ALL {
            let n = s.stats.rejects.get(&why).copied().unwrap_or(0);
            set(&r.rejected.get_or_create(&ReasonLabels { reason: why.name() }), n);
        }
        set(r.answered.show(), s.stats.probes_answered);
        for why in ProbeReject::ALL {
            let n = s.stats.probe_drops.get(&why).copied().unwrap_or(0);
            set(&r.dropped.get_or_create(&ReasonLabels { reason: why.name() }), n);
        }
    }

    /// The counter of one alert sink's outcome (`ipsla_alerts_total{sink,result}`); it shares its
    /// value with the registry, so the alert sinks count without going through `Metrics`.
    pub fn alert_counter(&self, sink: &str, result: &str) -> Counter {
        self.alerts.get_or_create(&AlertLabels { sink: sink.into(), result: result.into() })
    }

    /// The series of one remote-write endpoint (`ipsla_remote_write_*{url}`), created at 0.
    pub fn remote_write(&self, url: &str) -> RemoteWriteMetrics {
        let l = UrlLabels { url: url.into() };
        RemoteWriteMetrics {
            sent: self.rw_sent.get_or_create(&l),
            failed: self.rw_failed.get_or_create(&l),
            dropped: self.rw_dropped.get_or_create(&l),
            lag: self.rw_lag.get_or_create(&l),
        }
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
pub(crate) mod tests {
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

    fn defs(toml: &str) -> Vec<OperationDef> {
        crate::daemon::AgentFile::parse(toml).unwrap().validate().unwrap().operations
    }

    /// A run of `code` whose replies took `rtts_ms` (one-way halves, a clock offset rising with
    /// the sequence): the tests' stand-in for a measured run.
    pub(crate) fn run(code: ReturnCode, rtts_ms: &[i64]) -> OperationResult {
        use ipsla_core::stats::{Sample, StatsConfig, compute};
        let samples: Vec<Sample> = (1..)
            .zip(rtts_ms)
            .map(|(seq, &ms)| Sample {
                seq,
                responder_seq: seq,
                rtt: ms * 1_000_000,
                sd: ms * 500_000 + i64::from(seq) * 100_000,
                ds: ms * 500_000,
                late: false,
                duplicate: false,
                t1: 0,
                t2: None,
                t3: None,
                t4: ms * 1_000_000,
            })
            .collect();
        let cfg = StatsConfig { threshold: 5_000_000_000, clock_sync: false, responder_counts: true };
        let stats = compute(rtts_ms.len().max(1) as u32, &samples, cfg);
        OperationResult { samples, ..OperationResult::new(code, stats, ipsla_core::ops::Precision::Us) }
    }

    /// The lines of family `name` (its samples, in order).
    fn family<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' '])).collect()
    }

    const ECHO_AND_JITTER: &str = r#"
[[operation]]
id = 1
type = "udp-echo"
target = "127.0.0.1"
tag = "edge"
[[operation.reaction]]
element = "rtt"
threshold_type = "immediate"
[[operation]]
id = 2
type = "udp-jitter"
target = "127.0.0.1"
"#;

    #[test]
    fn a_failed_run_exports_no_value_and_a_kind_only_what_it_measures() {
        let m = Metrics::new();
        let d = defs(ECHO_AND_JITTER);
        for def in &d {
            m.declare(def);
        }
        let t = m.encode_text();
        assert_eq!(
            family(&t, "ipsla_operation_info"),
            [
                r#"ipsla_operation_info{op="1",type="udp-echo",target="127.0.0.1:16384",tag="edge"} 1"#,
                r#"ipsla_operation_info{op="2",type="udp-jitter",target="127.0.0.1:16384",tag=""} 1"#
            ]
        );
        assert_eq!(
            family(&t, "ipsla_build_info"),
            [format!("ipsla_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))]
        );
        assert_eq!(family(&t, "ipsla_reaction_active"), [r#"ipsla_reaction_active{op="1",element="rtt"} 0"#]);
        assert!(!t.contains("ipsla_rtt_latest_seconds") && !t.contains("ipsla_responder_"), "{t}");

        m.observe(&d[0], &run(ReturnCode::Ok, &[2]), &Default::default());
        m.observe(&d[1], &run(ReturnCode::Ok, &[2, 4, 3]), &Default::default());
        let t = m.encode_text();
        assert_eq!(
            family(&t, "ipsla_rtt_latest_seconds"),
            [r#"ipsla_rtt_latest_seconds{op="1"} 0.002"#, r#"ipsla_rtt_latest_seconds{op="2"} 0.003"#]
        );
        // udp-echo measures no jitter: only operation 2 has the family
        assert_eq!(
            family(&t, "ipsla_jitter_average_seconds"),
            [
                r#"ipsla_jitter_average_seconds{op="2",direction="ds"} 0.00075"#,
                r#"ipsla_jitter_average_seconds{op="2",direction="sd"} 0.00075"#
            ]
        );
        assert_eq!(
            family(&t, "ipsla_packets_late_total"),
            [r#"ipsla_packets_late_total{op="1"} 0"#, r#"ipsla_packets_late_total{op="2"} 0"#]
        );
        // loss by direction and order only where a train of probes measures them
        assert_eq!(
            family(&t, "ipsla_packets_lost_total"),
            [
                r#"ipsla_packets_lost_total{op="1",direction="unknown"} 0"#,
                r#"ipsla_packets_lost_total{op="2",direction="ds"} 0"#,
                r#"ipsla_packets_lost_total{op="2",direction="sd"} 0"#,
                r#"ipsla_packets_lost_total{op="2",direction="unknown"} 0"#
            ]
        );
        assert_eq!(
            family(&t, "ipsla_packets_out_of_sequence_total"),
            [r#"ipsla_packets_out_of_sequence_total{op="2"} 0"#]
        );

        // both targets black-holed: no latest RTT, no jitter, loss 1 (all sent, none back)
        m.observe(&d[0], &run(ReturnCode::Timeout, &[]), &Default::default());
        m.observe(&d[1], &run(ReturnCode::Timeout, &[]), &Default::default());
        let t = m.encode_text();
        assert_eq!(family(&t, "ipsla_rtt_latest_seconds"), Vec::<&str>::new(), "{t}");
        assert!(!t.contains("ipsla_jitter_average_seconds"), "{t}");
        assert_eq!(
            family(&t, "ipsla_loss_ratio"),
            [r#"ipsla_loss_ratio{op="1"} 1.0"#, r#"ipsla_loss_ratio{op="2"} 1.0"#]
        );
        assert!(t.contains("\nipsla_operation_return_code{op=\"2\",code=\"timeout\"} 1\n"), "{t}");
    }

    #[test]
    fn histograms_only_when_asked_and_one_return_code_series() {
        let m = Metrics::new();
        let d = defs(ECHO_AND_JITTER);
        m.observe(&d[1], &run(ReturnCode::Ok, &[2, 4, 3]), &Default::default());
        let t = m.encode_text();
        // the default: latest values and counters, no per-probe histogram
        assert!(!t.contains("ipsla_rtt_seconds") && !t.contains("ipsla_ipdv_seconds"), "{t}");
        assert_eq!(family(&t, "ipsla_operation_return_code"), [r#"ipsla_operation_return_code{op="2",code="ok"} 1"#]);
        m.set_histograms(true);
        m.observe(&d[1], &run(ReturnCode::Timeout, &[5]), &Default::default());
        let t = m.encode_text();
        assert_eq!(family(&t, "ipsla_rtt_seconds_count"), [r#"ipsla_rtt_seconds_count{op="2"} 1"#]);
        assert_eq!(
            family(&t, "ipsla_operation_return_code"),
            [r#"ipsla_operation_return_code{op="2",code="timeout"} 1"#],
            "the ok series is gone, not 0"
        );
        // off again (a reload): the histograms leave rather than stay frozen
        m.set_histograms(false);
        assert!(!m.encode_text().contains("ipsla_rtt_seconds"));
        // /probe answers one run: its histograms are always there
        let p = Metrics::for_probe();
        p.observe(&d[1], &run(ReturnCode::Ok, &[2, 4]), &Default::default());
        assert_eq!(family(&p.encode_text(), "ipsla_ipdv_seconds_count"), [r#"ipsla_ipdv_seconds_count{op="2"} 1"#]);
    }

    #[test]
    fn a_mesh_operation_has_src_and_dst_on_its_info_series_only() {
        let mesh = "[[site]]\nname = \"a\"\naddress = \"127.0.0.2\"\n[[site]]\nname = \"b\"\naddress = \"127.0.0.3\"\n\
                    [[test]]\nname = \"echo\"\ntype = \"udp-echo\"\n";
        let m = Metrics::new();
        let mut d = crate::mesh::expand("mesh.toml", mesh, "a", "mesh").unwrap().operations;
        d.extend(defs(ECHO_AND_JITTER).into_iter().take(1));
        for def in &d {
            m.declare(def);
            m.observe(def, &run(ReturnCode::Ok, &[1]), &Default::default());
        }
        let id = crate::mesh::operation_id("echo", "b");
        let t = m.encode_text();
        assert_eq!(
            family(&t, "ipsla_operation_info"),
            [
                r#"ipsla_operation_info{op="1",type="udp-echo",target="127.0.0.1:16384",tag="edge"} 1"#.to_string(),
                format!(
                    r#"ipsla_operation_info{{op="{id}",type="udp-echo",target="127.0.0.3:16384",tag="echo",src="a",dst="b"}} 1"#
                )
            ]
        );
        assert_eq!(family(&t, "ipsla_operations_total")[1], format!(r#"ipsla_operations_total{{op="{id}"}} 1"#));
    }

    #[test]
    fn series_keep_their_order_between_scrapes() {
        let m = Metrics::new();
        let d = defs(
            &[7, 3, 12, 1, 5]
                .map(|id| format!("[[operation]]\nid = {id}\ntype = \"udp-echo\"\ntarget = \"127.0.0.1\"\n"))
                .concat(),
        );
        for def in &d {
            m.declare(def);
            m.observe(def, &run(ReturnCode::Ok, &[1]), &Default::default());
        }
        let ops = |t: &str| -> Vec<String> {
            family(t, "ipsla_operations_total").iter().map(|l| l.split('"').nth(1).unwrap().to_string()).collect()
        };
        let first = m.encode_text();
        assert_eq!(ops(&first), ["1", "3", "5", "7", "12"]);
        // one forgotten and declared again (a reload), others come and go: same order
        m.forget(&d[1]);
        m.declare(&d[1]);
        m.observe(&d[1], &run(ReturnCode::Ok, &[1]), &Default::default());
        for id in 100..200 {
            m.track(id, true);
        }
        let again = m.encode_text();
        assert_eq!(ops(&again), ["1", "3", "5", "7", "12"]);
        let tracks: Vec<&str> = family(&again, "ipsla_track_state");
        assert_eq!(
            (tracks.len(), tracks[0], tracks[99]),
            (100, r#"ipsla_track_state{track="100"} 1"#, r#"ipsla_track_state{track="199"} 1"#)
        );
    }

    #[test]
    fn return_code_labels_are_the_json_names() {
        for c in ReturnCode::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), c.name(), "{c:?}");
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
