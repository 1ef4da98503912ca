//! The embedded history: SQLite (bundled) in WAL mode. Every completed run is committed on its
//! own as soon as it finishes, so a killed agent (SIGKILL) loses nothing that had completed.
//!
//! Tables:
//! - `runs`: one row per completed run with its JSON document (docs/json-schema.md);
//! - `aggregates`: per operation and clock hour, what IOS keeps in `rttMonStatsCaptureTable`
//!   (runs, completions, completion time count/sum/sum²/min/max, distribution buckets, failures
//!   by return code) and, for jitter operations, `rttMonJitterStatsTable`'s sums. A row is updated
//!   in the same transaction as the run it counts, so the two never disagree after a crash. Only
//!   the last `history_hours` hours of each operation are kept (IOS
//!   `history hours-of-statistics-kept`);
//! - `events`: reaction and track transitions.
//!
//! Size: runs older than the retention go in the hourly prune, and with a size limit the oldest
//! runs are deleted until the pages in use fit (checked every [`CHECK_EVERY`] inserts and in the
//! hourly prune). New files are created with `auto_vacuum = INCREMENTAL` so that the freed pages
//! are given back to the file system.

use ipsla_core::ops::{OperationResult, ReturnCode};
use ipsla_core::stats::Acc;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

/// The size limit is checked after this many inserts (and in the hourly prune).
pub const CHECK_EVERY: u64 = 64;

/// The most hours of aggregates an operation keeps (MIB `rttMonStatisticsAdminNumHourGroups`).
pub const MAX_HISTORY_HOURS: u8 = 25;

const HOUR_NS: i64 = 3_600_000_000_000;

/// What the hourly aggregates keep of one operation (IOS `history ...`, MIB
/// `rttMonStatisticsAdminTable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Hours kept, 0..=25 (0 turns the aggregates off). IOS default 2.
    pub hours: u8,
    /// Distribution buckets, 1..=20; the last one runs to infinity. IOS default 1.
    pub distributions: u8,
    /// Width of a distribution bucket, ms, 1..=100. IOS default 20.
    pub interval_ms: u32,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig { hours: 2, distributions: 1, interval_ms: 20 }
    }
}

/// One completed run, as [`Store::insert_run`] records it.
#[derive(Debug, Clone, Copy)]
pub struct RunRecord<'a> {
    /// Operation number.
    pub op: u32,
    /// Start, ns since the Unix epoch.
    pub start_ns: i64,
    /// What the run measured.
    pub result: &'a OperationResult,
    /// A jitter operation (udp-jitter, icmp-jitter): its hourly row keeps the jitter sums too.
    pub jitter: bool,
    /// The run's JSON document (docs/json-schema.md).
    pub report: &'a str,
    /// The operation's history settings.
    pub history: HistoryConfig,
}

/// The store.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    max_size: Option<u64>,
    inserts: Cell<u64>,
}

/// One stored run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRun {
    /// Operation number.
    pub op: u32,
    /// Start, RFC 3339 UTC with µs (as the run document's `start`).
    pub start: String,
    /// Start, ns since the Unix epoch.
    pub start_ns: i64,
    /// Return code.
    pub return_code: String,
    /// The run's JSON document (docs/json-schema.md).
    pub report: serde_json::Value,
}

/// What a plot draws from each stored run (its document's fields, docs/json-schema.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlotSeries {
    /// Round-trip time, µs: `rtt_us` (min, p50, p90, max).
    Rtt,
    /// One-way delay source to destination, µs: `one_way_us.sd` (only with synchronised clocks).
    OneWaySd,
    /// One-way delay destination to source, µs: `one_way_us.ds`.
    OneWayDs,
    /// IPDV between consecutive replies, µs: `ipdv_us` (p50 to p99; it has no min or max).
    Ipdv,
    /// MOS of codec runs: `voice.mos`.
    Mos,
    /// RTT to one hop of a path operation (TTL from 1): `hops[TTL-1].rtt_us`, its loss from
    /// `hops[TTL-1].loss`.
    Hop(u8),
}

impl PlotSeries {
    /// The condition that a run measured it, and the SQL of (low, middle, 90th, high, probes
    /// sent, probes answered) from its document. Built from constants and a number only, never
    /// from user input.
    fn sql(self) -> [String; 7] {
        let j = |path: &str| format!("json_extract(report, '{path}')");
        let dist = |at: &str, measured: String| {
            [
                measured,
                j(&format!("{at}.min")),
                j(&format!("{at}.p50")),
                j(&format!("{at}.p90")),
                j(&format!("{at}.max")),
            ]
        };
        let [measured, lo, mid, p90, hi] = match self {
            PlotSeries::Rtt => dist("$.rtt_us", format!("{} > 0", j("$.rtt_us.count"))),
            PlotSeries::OneWaySd => dist("$.one_way_us.sd", format!("{} > 0", j("$.one_way_us.sd.count"))),
            PlotSeries::OneWayDs => dist("$.one_way_us.ds", format!("{} > 0", j("$.one_way_us.ds.count"))),
            // IPDV has no min or max: p50 to p99
            PlotSeries::Ipdv => [
                format!("{} IS NOT NULL", j("$.ipdv_us.p50")),
                j("$.ipdv_us.p50"),
                j("$.ipdv_us.p50"),
                j("$.ipdv_us.p90"),
                j("$.ipdv_us.p99"),
            ],
            PlotSeries::Mos => {
                let mos = j("$.voice.mos");
                [format!("{mos} IS NOT NULL"), mos.clone(), mos.clone(), mos.clone(), mos]
            }
            PlotSeries::Hop(ttl) => {
                let at = format!("$.hops[{}]", ttl.saturating_sub(1));
                dist(
                    &format!("{at}.rtt_us"),
                    format!("{} = {ttl} AND {} > 0", j(&format!("{at}.hop")), j(&format!("{at}.rtt_us.count"))),
                )
            }
        };
        let (sent, received) = match self {
            PlotSeries::Hop(ttl) => {
                let at = format!("$.hops[{}].loss", ttl.saturating_sub(1));
                (j(&format!("{at}.sent")), format!("{} - {}", j(&format!("{at}.sent")), j(&format!("{at}.lost"))))
            }
            _ => (j("$.sent"), j("$.received")),
        };
        [measured, lo, mid, p90, hi, sent, received]
    }
}

/// The runs of one time column of a plot ([`Store::plot_columns`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlotColumn {
    /// Start of the column, ns since the Unix epoch.
    pub start_ns: i64,
    /// Runs that started in it.
    pub runs: u64,
    /// Of those, runs that measured the series.
    pub measured: u64,
    /// Smallest value of those runs (`None` when none measured); µs for delays.
    pub min: Option<f64>,
    /// Average of their medians (MOS: of their values).
    pub mid: Option<f64>,
    /// Largest of their 90th percentiles.
    pub p90: Option<f64>,
    /// Largest value (IPDV: the largest 99th percentile).
    pub max: Option<f64>,
    /// Probes sent by all its runs.
    pub sent: u64,
    /// Replies received.
    pub received: u64,
}

impl PlotColumn {
    /// Lost probes, percent of those sent; `None` when none was sent.
    pub fn loss_pct(&self) -> Option<f64> {
        (self.sent > 0).then(|| 100.0 * self.sent.saturating_sub(self.received) as f64 / self.sent as f64)
    }
}

/// One stored event. Its subject is named by its own key: `op` for a reaction, `track` for a
/// track, the other null (a track number is not an operation number).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Operation number (kinds "reaction" and "path"), else null.
    pub op: Option<u32>,
    /// Track number (kind "track"), else null.
    pub track: Option<u32>,
    /// When, RFC 3339 UTC with ms.
    pub time: String,
    /// When, ns since the Unix epoch.
    pub time_ns: i64,
    /// "reaction", "track" or "path" (a path operation's path changed).
    pub kind: String,
    /// Element keyword.
    pub element: String,
    /// Occurred (true) or cleared.
    pub occurred: bool,
    /// The value behind it.
    pub value: Option<f64>,
    /// The log line.
    pub text: String,
}

impl StoredEvent {
    /// An event about `subject` at `time_ns` (ns since the Unix epoch).
    pub fn new(
        subject: EventSubject,
        time_ns: i64,
        element: &str,
        occurred: bool,
        value: Option<f64>,
        text: String,
    ) -> Self {
        let (op, track, kind) = match subject {
            EventSubject::Operation(id) => (Some(id), None, "reaction"),
            EventSubject::Track(id) => (None, Some(id), "track"),
            EventSubject::Path(id) => (Some(id), None, "path"),
        };
        StoredEvent {
            op,
            track,
            time: rfc3339_ns(time_ns, humantime::format_rfc3339_millis),
            time_ns,
            kind: kind.into(),
            element: element.into(),
            occurred,
            value,
            text,
        }
    }

    /// The operation or track number, as the store's `op` column keeps either.
    fn subject(&self) -> u32 {
        self.op.or(self.track).unwrap_or(0)
    }
}

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSubject {
    /// A reaction of this operation.
    Operation(u32),
    /// This track.
    Track(u32),
    /// The path of this path operation changed.
    Path(u32),
}

/// ns since the Unix epoch as RFC 3339 UTC, with `format`'s resolution.
pub fn rfc3339_ns<T: std::fmt::Display>(ns: i64, format: fn(std::time::SystemTime) -> T) -> String {
    format(UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64)).to_string()
}

fn r3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Count / min / avg / max / sum / sum of squares of a delay over an hour, µs (sum2 in µs², as the
/// MIB's `Sum2` is in the unit squared). `min`, `avg`, `max` are null while `count` is 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct AccUs {
    /// Number of values.
    pub count: u64,
    /// Smallest.
    pub min: Option<f64>,
    /// sum / count.
    pub avg: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
    /// Sum.
    pub sum: f64,
    /// Sum of squares.
    pub sum2: f64,
}

impl AccUs {
    /// Adds one value, µs.
    pub fn add(&mut self, us: f64) {
        self.merge(&AccUs { count: 1, min: Some(us), avg: Some(us), max: Some(us), sum: us, sum2: us * us });
    }

    /// Adds a run's accumulator (ns).
    pub fn add_acc(&mut self, a: &Acc) {
        if a.count == 0 {
            return;
        }
        self.merge(&AccUs {
            count: a.count,
            min: Some(a.min as f64 / 1000.0),
            avg: None,
            max: Some(a.max as f64 / 1000.0),
            sum: a.sum as f64 / 1000.0,
            sum2: a.sum2 as f64 / 1e6,
        });
    }

    fn merge(&mut self, o: &AccUs) {
        if o.count == 0 {
            return;
        }
        let pick = |a: Option<f64>, b: Option<f64>, f: fn(f64, f64) -> f64| match (a, b) {
            (Some(a), Some(b)) => Some(f(a, b)),
            (a, b) => a.or(b),
        };
        self.min = pick(self.min, o.min, f64::min).map(r3);
        self.max = pick(self.max, o.max, f64::max).map(r3);
        self.count += o.count;
        self.sum = r3(self.sum + o.sum);
        self.sum2 = r3(self.sum2 + o.sum2);
        self.avg = Some(r3(self.sum / self.count as f64));
    }
}

/// The jitter sums of an hour (MIB `rttMonJitterStatsTable`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct JitterAggregate {
    /// Probes sent and unique replies received.
    pub sent: u64,
    pub received: u64,
    /// Per-probe RTT (`NumOfRTT`, `RTTSum`, `RTTSum2`, `RTTMin`, `RTTMax`).
    pub rtt_us: AccUs,
    /// One-way delays, from runs whose clocks were in sync only.
    pub one_way_sd_us: AccUs,
    pub one_way_ds_us: AccUs,
    /// Jitter per direction and sign (`NumOfPositivesSD`, `SumOfPositivesSD`, ...).
    pub jitter_sd_pos_us: AccUs,
    pub jitter_sd_neg_us: AccUs,
    pub jitter_ds_pos_us: AccUs,
    pub jitter_ds_neg_us: AccUs,
    /// `PacketLossSD`, `PacketLossDS`, `PacketMIA`, `PacketLateArrival`, `PacketOutOfSequence`.
    pub loss_sd: u64,
    pub loss_ds: u64,
    pub loss_mia: u64,
    pub late: u64,
    pub out_of_sequence: u64,
    /// Probes whose RTT was over the threshold (`NumOverThresh`).
    pub over_threshold: u64,
    /// `MinOfMOS` / `MaxOfMOS` (as a score, not hundredths), `MinOfICPIF` / `MaxOfICPIF`.
    pub mos_min: Option<f64>,
    pub mos_max: Option<f64>,
    pub icpif_min: Option<u32>,
    pub icpif_max: Option<u32>,
}

impl JitterAggregate {
    fn add(&mut self, r: &OperationResult) {
        let s = &r.stats;
        self.sent += u64::from(s.sent);
        self.received += u64::from(s.received);
        self.rtt_us.add_acc(&s.rtt);
        if let Some(a) = &s.one_way_sd {
            self.one_way_sd_us.add_acc(a);
        }
        if let Some(a) = &s.one_way_ds {
            self.one_way_ds_us.add_acc(a);
        }
        self.jitter_sd_pos_us.add_acc(&s.jitter_sd.positive);
        self.jitter_sd_neg_us.add_acc(&s.jitter_sd.negative);
        self.jitter_ds_pos_us.add_acc(&s.jitter_ds.positive);
        self.jitter_ds_neg_us.add_acc(&s.jitter_ds.negative);
        self.loss_sd += u64::from(s.loss_sd);
        self.loss_ds += u64::from(s.loss_ds);
        self.loss_mia += u64::from(s.loss_mia);
        self.late += u64::from(s.late);
        self.out_of_sequence += u64::from(s.out_of_sequence);
        self.over_threshold += u64::from(s.over_threshold);
        if let Some(v) = &r.voice {
            self.mos_min = Some(self.mos_min.map_or(v.mos, |m| m.min(v.mos)));
            self.mos_max = Some(self.mos_max.map_or(v.mos, |m| m.max(v.mos)));
            self.icpif_min = Some(self.icpif_min.map_or(v.icpif, |m| m.min(v.icpif)));
            self.icpif_max = Some(self.icpif_max.map_or(v.icpif, |m| m.max(v.icpif)));
        }
    }
}

/// One distribution bucket: completions whose time was in `[lower_ms, upper_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Lower bound, ms (inclusive).
    pub lower_ms: u64,
    /// Upper bound, ms (exclusive); null for the last bucket, which runs to infinity.
    pub upper_ms: Option<u64>,
    /// Completions in it.
    pub count: u64,
}

/// One operation's statistics over one clock hour (IOS `show ip sla statistics aggregated`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HourAggregate {
    /// Operation number.
    pub op: u32,
    /// Start of the hour, RFC 3339 UTC.
    pub hour_start: String,
    /// Start of the hour, s since the Unix epoch.
    pub hour_start_s: i64,
    /// Runs that started in this hour.
    pub runs: u64,
    /// Runs with return code OK (IOS "Number of successes").
    pub ok: u64,
    /// The others (IOS "Number of failures").
    pub failures: u64,
    /// Runs by return code (`ok`, `timeout`, ... as in the JSON document).
    pub return_codes: BTreeMap<String, u64>,
    /// Completion time (the run's average RTT: for single-probe operations its one RTT) of the runs
    /// that completed (OK or over threshold): MIB `rttMonStatsCaptureCompletions`,
    /// `SumCompletionTime`, `SumCompletionTime2`, `CompletionTimeMin/Max`.
    pub completion_us: AccUs,
    /// Width of the distribution buckets, ms.
    pub distribution_interval_ms: u32,
    /// Completions by completion time.
    pub distribution: Vec<Bucket>,
    /// Jitter operations only.
    pub jitter: Option<JitterAggregate>,
}

/// The JSON name of a return code (`ok`, `over_threshold`, ...).
pub fn code_name(c: ReturnCode) -> String {
    serde_json::to_value(c).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

fn buckets(interval_ms: u32, counts: &[u64]) -> Vec<Bucket> {
    let w = u64::from(interval_ms);
    let n = counts.len();
    counts
        .iter()
        .enumerate()
        .map(|(i, c)| Bucket { lower_ms: i as u64 * w, upper_ms: (i + 1 < n).then_some((i as u64 + 1) * w), count: *c })
        .collect()
}

impl HourAggregate {
    fn empty(op: u32, hour_s: i64, h: HistoryConfig) -> Self {
        HourAggregate {
            op,
            hour_start: humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(hour_s.max(0) as u64))
                .to_string(),
            hour_start_s: hour_s,
            runs: 0,
            ok: 0,
            failures: 0,
            return_codes: BTreeMap::new(),
            completion_us: AccUs::default(),
            distribution_interval_ms: h.interval_ms.max(1),
            distribution: buckets(h.interval_ms.max(1), &vec![0; usize::from(h.distributions.max(1))]),
            jitter: None,
        }
    }

    /// Counts one run. The bucket layout is the row's own (a configuration change takes effect in
    /// the next hour).
    fn add(&mut self, r: &OperationResult, jitter: bool) {
        self.runs += 1;
        if r.return_code == ReturnCode::Ok {
            self.ok += 1;
        }
        self.failures = self.runs - self.ok;
        *self.return_codes.entry(code_name(r.return_code)).or_default() += 1;
        let completed = matches!(r.return_code, ReturnCode::Ok | ReturnCode::OverThreshold);
        if completed && r.stats.rtt.count > 0 {
            let us = r.stats.rtt.avg() / 1000.0;
            self.completion_us.add(us);
            let width = f64::from(self.distribution_interval_ms) * 1000.0;
            let last = self.distribution.len().saturating_sub(1);
            let i = ((us.max(0.0) / width).floor() as usize).min(last);
            if let Some(b) = self.distribution.get_mut(i) {
                b.count += 1;
            }
        }
        if jitter {
            self.jitter.get_or_insert_default().add(r);
        }
    }
}

fn json_err(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

const AGG_COLUMNS: &str = "op, hour_s, runs, ok, completions, completion_sum_us, completion_sum2_us2, \
    completion_min_us, completion_max_us, return_codes, distribution_interval_ms, distribution, jitter";

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> rusqlite::Result<Store> {
        let conn = Connection::open(path)?;
        // Only takes effect on a new file (before the first table): lets the size limit give
        // freed pages back with `PRAGMA incremental_vacuum`.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        // WAL: readers do not block the writer; NORMAL sync: a committed run survives the
        // process being killed (only an OS crash may lose the last ones).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS runs (
                 id INTEGER PRIMARY KEY,
                 op INTEGER NOT NULL,
                 start_ns INTEGER NOT NULL,
                 return_code TEXT NOT NULL,
                 rtt_avg_us REAL,
                 report TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS runs_op_start ON runs (op, start_ns);
             CREATE TABLE IF NOT EXISTS events (
                 id INTEGER PRIMARY KEY,
                 op INTEGER NOT NULL,
                 time_ns INTEGER NOT NULL,
                 kind TEXT NOT NULL,
                 element TEXT NOT NULL,
                 occurred INTEGER NOT NULL,
                 value REAL,
                 text TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS aggregates (
                 op INTEGER NOT NULL,
                 hour_s INTEGER NOT NULL,
                 runs INTEGER NOT NULL,
                 ok INTEGER NOT NULL,
                 completions INTEGER NOT NULL,
                 completion_sum_us REAL NOT NULL,
                 completion_sum2_us2 REAL NOT NULL,
                 completion_min_us REAL,
                 completion_max_us REAL,
                 return_codes TEXT NOT NULL,
                 distribution_interval_ms INTEGER NOT NULL,
                 distribution TEXT NOT NULL,
                 jitter TEXT,
                 PRIMARY KEY (op, hour_s)
             );",
        )?;
        Ok(Store { conn, max_size: None, inserts: Cell::new(0) })
    }

    /// The connection, for the tables other modules keep in the same file (remote write's
    /// cursors).
    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Sets the size limit, bytes of pages in use (None: no limit).
    pub fn set_max_size(&mut self, max: Option<u64>) {
        self.max_size = max;
    }

    /// Records a completed run without aggregates.
    pub fn insert(
        &self,
        op: u32,
        start_ns: i64,
        return_code: &str,
        rtt_avg_us: Option<f64>,
        report: &str,
    ) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT INTO runs (op, start_ns, return_code, rtt_avg_us, report) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![op, start_ns, return_code, rtt_avg_us, report],
        )?;
        self.after_insert()
    }

    /// Records a completed run and counts it in its operation's hourly aggregates, in one
    /// transaction; drops the operation's aggregates older than its `history.hours`.
    pub fn insert_run(&self, r: &RunRecord<'_>) -> rusqlite::Result<()> {
        let s = &r.result.stats;
        let rtt = (s.rtt.count > 0).then(|| s.rtt.avg() / 1000.0);
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO runs (op, start_ns, return_code, rtt_avg_us, report) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![r.op, r.start_ns, code_name(r.result.return_code), rtt, r.report],
        )?;
        let hour_s = r.start_ns.div_euclid(HOUR_NS) * 3600;
        if r.history.hours > 0 {
            let mut a = self.hour(r.op, hour_s)?.unwrap_or_else(|| HourAggregate::empty(r.op, hour_s, r.history));
            a.add(r.result, r.jitter);
            self.put_hour(&a)?;
        }
        let keep = i64::from(r.history.hours.min(MAX_HISTORY_HOURS));
        tx.execute("DELETE FROM aggregates WHERE op = ?1 AND hour_s <= ?2", params![r.op, hour_s - keep * 3600])?;
        tx.commit()?;
        self.after_insert()
    }

    fn after_insert(&self) -> rusqlite::Result<()> {
        let n = self.inserts.get() + 1;
        self.inserts.set(n);
        if n.is_multiple_of(CHECK_EVERY) {
            self.enforce_max_size()?;
        }
        Ok(())
    }

    fn agg_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HourAggregate> {
        let json = |i: usize| -> rusqlite::Result<String> { r.get(i) };
        let op: u32 = r.get(0)?;
        let hour_s: i64 = r.get(1)?;
        let interval: u32 = r.get(10)?;
        let counts: Vec<u64> = serde_json::from_str(&json(11)?).unwrap_or_default();
        let mut a = HourAggregate::empty(op, hour_s, HistoryConfig::default());
        a.runs = r.get::<_, i64>(2)? as u64;
        a.ok = r.get::<_, i64>(3)? as u64;
        a.failures = a.runs.saturating_sub(a.ok);
        let count = r.get::<_, i64>(4)? as u64;
        let (sum, sum2): (f64, f64) = (r.get(5)?, r.get(6)?);
        a.completion_us = AccUs {
            count,
            min: r.get(7)?,
            avg: (count > 0).then(|| r3(sum / count as f64)),
            max: r.get(8)?,
            sum,
            sum2,
        };
        a.return_codes = serde_json::from_str(&json(9)?).unwrap_or_default();
        a.distribution_interval_ms = interval;
        a.distribution = buckets(interval, &counts);
        a.jitter = r.get::<_, Option<String>>(12)?.and_then(|j| serde_json::from_str(&j).ok());
        Ok(a)
    }

    fn hour(&self, op: u32, hour_s: i64) -> rusqlite::Result<Option<HourAggregate>> {
        self.conn
            .query_row(
                &format!("SELECT {AGG_COLUMNS} FROM aggregates WHERE op = ?1 AND hour_s = ?2"),
                params![op, hour_s],
                Self::agg_row,
            )
            .optional()
    }

    fn put_hour(&self, a: &HourAggregate) -> rusqlite::Result<()> {
        let c = &a.completion_us;
        let counts: Vec<u64> = a.distribution.iter().map(|b| b.count).collect();
        self.conn.execute(
            &format!(
                "INSERT OR REPLACE INTO aggregates ({AGG_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ),
            params![
                a.op,
                a.hour_start_s,
                a.runs as i64,
                a.ok as i64,
                c.count as i64,
                c.sum,
                c.sum2,
                c.min,
                c.max,
                serde_json::to_string(&a.return_codes).map_err(json_err)?,
                a.distribution_interval_ms,
                serde_json::to_string(&counts).map_err(json_err)?,
                a.jitter.as_ref().map(serde_json::to_string).transpose().map_err(json_err)?,
            ],
        )?;
        Ok(())
    }

    /// The hourly aggregates of `op`, oldest hour first.
    pub fn aggregates(&self, op: u32) -> rusqlite::Result<Vec<HourAggregate>> {
        let mut st =
            self.conn.prepare(&format!("SELECT {AGG_COLUMNS} FROM aggregates WHERE op = ?1 ORDER BY hour_s"))?;
        st.query_map(params![op], Self::agg_row)?.collect()
    }

    /// Drops hourly aggregates older than each operation's `hours` (as of `now_ns`), and those of
    /// operations not listed older than [`MAX_HISTORY_HOURS`]; returns how many rows.
    pub fn prune_aggregates(&self, now_ns: i64, hours: &BTreeMap<u32, u8>) -> rusqlite::Result<usize> {
        let hour_s = now_ns.div_euclid(HOUR_NS) * 3600;
        let mut n = 0;
        for (op, h) in hours {
            let keep = i64::from((*h).min(MAX_HISTORY_HOURS));
            n += self
                .conn
                .execute("DELETE FROM aggregates WHERE op = ?1 AND hour_s <= ?2", params![op, hour_s - keep * 3600])?;
        }
        let keep = i64::from(MAX_HISTORY_HOURS);
        n += self.conn.execute("DELETE FROM aggregates WHERE hour_s <= ?1", params![hour_s - keep * 3600])?;
        Ok(n)
    }

    /// Bytes of the pages in use: `(page_count − freelist_count) × page_size`.
    pub fn used_bytes(&self) -> rusqlite::Result<u64> {
        let get = |p: &str| self.conn.pragma_query_value(None, p, |r| r.get::<_, i64>(0));
        let (pages, free, size) = (get("page_count")?, get("freelist_count")?, get("page_size")?);
        Ok(((pages - free).max(0) * size) as u64)
    }

    /// Deletes the oldest runs (in insertion order) until the pages in use fit the size limit, then
    /// gives the freed pages back to the file system; returns how many runs. Bounded: gives up
    /// after 64 rounds or when no run is left.
    pub fn enforce_max_size(&self) -> rusqlite::Result<usize> {
        let Some(max) = self.max_size else { return Ok(0) };
        let mut deleted = 0;
        for _ in 0..64 {
            let used = self.used_bytes()?;
            if used <= max {
                break;
            }
            let runs: i64 = self.conn.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))?;
            if runs == 0 {
                break;
            }
            let per_run = (used / runs as u64).max(1);
            // A quarter more than the estimate: a page is freed only once all its rows are gone.
            let n = ((used - max) / per_run + 1) * 5 / 4 + 1;
            deleted += self.conn.execute(
                "DELETE FROM runs WHERE id IN (SELECT id FROM runs ORDER BY id LIMIT ?1)",
                params![n as i64],
            )?;
        }
        if deleted > 0 {
            // one page per step: run it to the end
            let mut st = self.conn.prepare("PRAGMA incremental_vacuum")?;
            let mut rows = st.query([])?;
            while rows.next()?.is_some() {}
        }
        Ok(deleted)
    }

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRun> {
        let text: String = r.get(3)?;
        let start_ns: i64 = r.get(1)?;
        Ok(StoredRun {
            op: r.get(0)?,
            start: rfc3339_ns(start_ns, humantime::format_rfc3339_micros),
            start_ns,
            return_code: r.get(2)?,
            report: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        })
    }

    /// The newest run of `op`.
    pub fn latest(&self, op: u32) -> rusqlite::Result<Option<StoredRun>> {
        self.conn
            .query_row(
                "SELECT op, start_ns, return_code, report FROM runs WHERE op = ?1 ORDER BY start_ns DESC, id DESC LIMIT 1",
                params![op],
                Self::row,
            )
            .optional()
    }

    /// The newest `limit` runs of `op`, newest first.
    pub fn history(&self, op: u32, limit: u32) -> rusqlite::Result<Vec<StoredRun>> {
        let mut st = self.conn.prepare(
            "SELECT op, start_ns, return_code, report FROM runs WHERE op = ?1 ORDER BY start_ns DESC, id DESC LIMIT ?2",
        )?;
        st.query_map(params![op, limit], Self::row)?.collect()
    }

    /// `op`'s runs since `since_ns`, in columns `width_ns` wide (oldest first; a column without
    /// runs is absent), for one plotted `series`. Only runs that measured the series give values,
    /// so a failed run adds to `runs`, never a 0 to the delays.
    pub fn plot_columns(
        &self,
        op: u32,
        since_ns: i64,
        width_ns: i64,
        series: PlotSeries,
    ) -> rusqlite::Result<Vec<PlotColumn>> {
        // built by PlotSeries from constants and a TTL, never from user input
        let [measured, min, mid, p90, max, sent, received] = series.sql();
        let sql = format!(
            "WITH r AS (
                 SELECT start_ns / ?3 AS k,
                        CASE WHEN {measured} THEN 1 END AS m,
                        {min} AS lo, {mid} AS mid, {p90} AS p90, {max} AS hi,
                        {sent} AS sent, {received} AS received
                 FROM runs WHERE op = ?1 AND start_ns >= ?2)
             SELECT k, COUNT(*), COUNT(m),
                    MIN(CASE WHEN m THEN lo END), AVG(CASE WHEN m THEN mid END),
                    MAX(CASE WHEN m THEN p90 END), MAX(CASE WHEN m THEN hi END),
                    TOTAL(sent), TOTAL(received)
             FROM r GROUP BY k ORDER BY k"
        );
        let width_ns = width_ns.max(1);
        let mut st = self.conn.prepare(&sql)?;
        st.query_map(params![op, since_ns, width_ns], |r| {
            let k: i64 = r.get(0)?;
            Ok(PlotColumn {
                start_ns: k * width_ns,
                runs: r.get::<_, i64>(1)? as u64,
                measured: r.get::<_, i64>(2)? as u64,
                min: r.get(3)?,
                mid: r.get(4)?,
                p90: r.get(5)?,
                max: r.get(6)?,
                sent: r.get::<_, f64>(7)? as u64,
                received: r.get::<_, f64>(8)? as u64,
            })
        })?
        .collect()
    }

    /// Number of runs stored for `op`.
    pub fn count(&self, op: u32) -> rusqlite::Result<u64> {
        self.conn
            .query_row("SELECT COUNT(*) FROM runs WHERE op = ?1", params![op], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
    }

    /// Deletes runs and events older than `now_ns − keep`; returns how many runs.
    pub fn prune(&self, now_ns: i64, keep: Duration) -> rusqlite::Result<usize> {
        let cutoff = now_ns.saturating_sub(keep.as_nanos() as i64);
        self.conn.execute("DELETE FROM events WHERE time_ns < ?1", params![cutoff])?;
        self.conn.execute("DELETE FROM runs WHERE start_ns < ?1", params![cutoff])
    }

    /// Records a reaction (or track) event.
    pub fn insert_event(&self, e: &StoredEvent) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT INTO events (op, time_ns, kind, element, occurred, value, text) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![e.subject(), e.time_ns, e.kind, e.element, e.occurred, e.value, e.text],
        )?;
        Ok(())
    }

    /// The newest `limit` events, newest first.
    pub fn events(&self, limit: u32) -> rusqlite::Result<Vec<StoredEvent>> {
        let mut st = self
            .conn
            .prepare("SELECT op, time_ns, kind, element, occurred, value, text FROM events ORDER BY time_ns DESC, id DESC LIMIT ?1")?;
        st.query_map(params![limit], |r| {
            let (id, kind): (u32, String) = (r.get(0)?, r.get(2)?);
            let subject = match kind.as_str() {
                "track" => EventSubject::Track(id),
                "path" => EventSubject::Path(id),
                _ => EventSubject::Operation(id),
            };
            Ok(StoredEvent::new(subject, r.get(1)?, &r.get::<_, String>(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
        })?
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_keep_their_kind_and_subject() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("a.db")).unwrap();
        let text = "IP SLAs(7): path changed, now 10.77.0.2 -> * -> 10.77.3.2".to_string();
        s.insert_event(&StoredEvent::new(EventSubject::Path(7), 1_000, "pathChange", true, None, text.clone()))
            .unwrap();
        s.insert_event(&StoredEvent::new(EventSubject::Track(7), 2_000, "state", true, Some(0.0), "t".into())).unwrap();
        s.insert_event(&StoredEvent::new(EventSubject::Operation(7), 3_000, "rtt", false, Some(1.5), "r".into()))
            .unwrap();
        let e = s.events(10).unwrap();
        let got: Vec<(&str, Option<u32>, Option<u32>)> = e.iter().map(|e| (e.kind.as_str(), e.op, e.track)).collect();
        assert_eq!(got, vec![("reaction", Some(7), None), ("track", None, Some(7)), ("path", Some(7), None)]);
        assert_eq!((e[2].element.as_str(), e[2].value, &e[2].text), ("pathChange", None, &text));
    }

    #[test]
    fn a_hops_plot_takes_that_hops_rtt_and_loss() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("a.db")).unwrap();
        // hop 1 answers 3 of 4 echoes; hop 2 never answers (traceroute's `*`): null, not 0
        let doc = r#"{"sent":4,"received":4,"rtt_us":{"count":4,"min":900.0,"p50":950.0,"p90":990.0,"max":999.0},
            "hops":[{"hop":1,"address":"10.0.0.1","rtt_us":{"count":3,"min":10.0,"p50":20.0,"p90":30.0,"max":40.0},
                     "loss":{"sent":4,"lost":1,"ratio":0.25}},
                    {"hop":2,"address":null,"rtt_us":null,"loss":{"sent":4,"lost":4,"ratio":1.0}}]}"#;
        s.insert(1, SEC, "ok", Some(950.0), doc).unwrap();
        let one = &s.plot_columns(1, 0, 10 * SEC, PlotSeries::Hop(1)).unwrap()[0];
        assert_eq!((one.runs, one.measured, one.sent, one.received), (1, 1, 4, 3));
        assert_eq!((one.min, one.mid, one.p90, one.max), (Some(10.0), Some(20.0), Some(30.0), Some(40.0)));
        let two = &s.plot_columns(1, 0, 10 * SEC, PlotSeries::Hop(2)).unwrap()[0];
        assert_eq!((two.runs, two.measured, two.sent, two.received), (1, 0, 4, 0));
        assert_eq!((two.min, two.mid, two.p90, two.max), (None, None, None, None));
        // a hop the run did not reach: counted as a run, no value, no probes
        let nine = &s.plot_columns(1, 0, 10 * SEC, PlotSeries::Hop(9)).unwrap()[0];
        assert_eq!((nine.runs, nine.measured, nine.sent, nine.min), (1, 0, 0, None));
    }

    #[test]
    fn plot_columns_take_delays_only_from_runs_that_measured() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("a.db")).unwrap();
        let run = |min: f64, p50: f64, p90: f64, max: f64, count: u32, sent: u32, received: u32| {
            format!(
                r#"{{"rtt_us":{{"count":{count},"min":{min},"p50":{p50},"p90":{p90},"max":{max}}},"sent":{sent},"received":{received}}}"#
            )
        };
        // column 0 (0-9 s): two measured runs; column 1 (10-19 s): a failed run whose document
        // carries zeros, which must not become delays; column 3: one run; column 2: none
        s.insert(1, SEC, "ok", Some(2.0), &run(1.0, 2.0, 3.0, 4.0, 10, 10, 10)).unwrap();
        s.insert(1, 5 * SEC, "ok", Some(4.0), &run(3.0, 4.0, 8.0, 9.0, 10, 10, 9)).unwrap();
        s.insert(1, 12 * SEC, "timeout", None, &run(0.0, 0.0, 0.0, 0.0, 0, 10, 0)).unwrap();
        s.insert(1, 31 * SEC, "ok", Some(5.0), &run(5.0, 5.0, 5.0, 5.0, 1, 1, 1)).unwrap();
        s.insert(2, 2 * SEC, "ok", Some(1.0), &run(1.0, 1.0, 1.0, 1.0, 1, 1, 1)).unwrap();
        let c = s.plot_columns(1, 0, 10 * SEC, PlotSeries::Rtt).unwrap();
        assert_eq!(c.iter().map(|c| c.start_ns).collect::<Vec<_>>(), [0, 10 * SEC, 30 * SEC]);
        assert_eq!((c[0].runs, c[0].measured, c[0].sent, c[0].received), (2, 2, 20, 19));
        assert_eq!((c[0].min, c[0].mid, c[0].p90, c[0].max), (Some(1.0), Some(3.0), Some(8.0), Some(9.0)));
        assert_eq!(c[0].loss_pct(), Some(5.0));
        assert_eq!((c[1].runs, c[1].measured, c[1].min, c[1].mid, c[1].max), (1, 0, None, None, None));
        assert_eq!(c[1].loss_pct(), Some(100.0));
        assert_eq!(
            s.plot_columns(1, 20 * SEC, 10 * SEC, PlotSeries::Rtt).unwrap().len(),
            1,
            "since 20 s: the last one"
        );
        // no run carried one-way delays: every column is there, none measured it
        let ow = s.plot_columns(1, 0, 10 * SEC, PlotSeries::OneWaySd).unwrap();
        assert_eq!(ow.iter().map(|c| (c.runs, c.measured)).collect::<Vec<_>>(), [(2, 0), (1, 0), (1, 0)]);
    }

    #[test]
    fn insert_latest_history_prune() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("a.db")).unwrap();
        for i in 0..5i64 {
            s.insert(7, i * 1_000_000_000, "ok", Some(1.5), &format!("{{\"run\":{i}}}")).unwrap();
        }
        s.insert(8, 0, "timeout", None, "{}").unwrap();
        assert_eq!(s.latest(7).unwrap().unwrap().report["run"], 4);
        assert_eq!(
            s.history(7, 3).unwrap().iter().map(|r| r.start_ns).collect::<Vec<_>>(),
            vec![4e9 as i64, 3e9 as i64, 2e9 as i64]
        );
        assert_eq!(s.latest(9).unwrap(), None);
        // keep the last 2.5 s as of t = 5 s: runs at 3 s and 4 s stay
        assert_eq!(s.prune(5_000_000_000, Duration::from_millis(2500)).unwrap(), 4);
        assert_eq!(s.count(7).unwrap(), 2);
    }

    use ipsla_core::ops::Precision;
    use ipsla_core::stats::JitterStats;
    use ipsla_core::voice::VoiceScore;

    const H0: i64 = 500_000 * HOUR_NS;
    const SEC: i64 = 1_000_000_000;

    fn result(code: ReturnCode, rtts_us: &[i64]) -> OperationResult {
        let mut stats =
            JitterStats { sent: rtts_us.len().max(1) as u32, received: rtts_us.len() as u32, ..Default::default() };
        for v in rtts_us {
            stats.rtt.add(v * 1000);
        }
        OperationResult::new(code, stats, Precision::Us)
    }

    fn put(s: &Store, op: u32, start_ns: i64, r: &OperationResult, jitter: bool, history: HistoryConfig) {
        s.insert_run(&RunRecord { op, start_ns, result: r, jitter, report: "{}", history }).unwrap();
    }

    #[test]
    fn hourly_aggregates_count_sum_and_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("a.db")).unwrap();
        let h = HistoryConfig { hours: 2, distributions: 3, interval_ms: 10 };
        // completion times 5, 15, 250 (over threshold: still a completion), 25 ms; one timeout
        put(&s, 1, H0 + SEC, &result(ReturnCode::Ok, &[5_000]), false, h);
        put(&s, 1, H0 + 2 * SEC, &result(ReturnCode::Ok, &[15_000]), false, h);
        put(&s, 1, H0 + 3 * SEC, &result(ReturnCode::OverThreshold, &[250_000]), false, h);
        put(&s, 1, H0 + 4 * SEC, &result(ReturnCode::Timeout, &[]), false, h);
        put(&s, 1, H0 + 5 * SEC, &result(ReturnCode::Ok, &[25_000]), false, h);
        assert_eq!(s.count(1).unwrap(), 5, "every run is stored as well");
        let a = s.aggregates(1).unwrap();
        assert_eq!(a.len(), 1);
        let a = &a[0];
        assert_eq!((a.hour_start_s, a.hour_start.as_str()), (H0 / SEC, "2027-01-15T08:00:00Z"));
        assert_eq!((a.runs, a.ok, a.failures), (5, 3, 2));
        assert_eq!(
            a.return_codes,
            BTreeMap::from([("ok".to_string(), 3), ("over_threshold".to_string(), 1), ("timeout".to_string(), 1)])
        );
        let c = a.completion_us;
        assert_eq!((c.count, c.min, c.max, c.avg), (4, Some(5_000.0), Some(250_000.0), Some(73_750.0)));
        assert_eq!((c.sum, c.sum2), (295_000.0, 63_375_000_000.0));
        assert_eq!(
            a.distribution,
            vec![
                Bucket { lower_ms: 0, upper_ms: Some(10), count: 1 },
                Bucket { lower_ms: 10, upper_ms: Some(20), count: 1 },
                Bucket { lower_ms: 20, upper_ms: None, count: 2 },
            ],
            "25 ms and 250 ms both land in the last, open bucket"
        );
        assert_eq!(a.jitter, None);
    }

    #[test]
    fn jitter_sums() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("a.db")).unwrap();
        let h = HistoryConfig::default();
        let mut a = result(ReturnCode::Ok, &[1_000, 3_000]);
        a.stats.sent = 3;
        a.stats.loss_sd = 1;
        a.stats.jitter_sd.positive.add(2_000_000);
        a.stats.jitter_ds.negative.add(500_000);
        a.stats.one_way_sd = Some(a.stats.rtt);
        a.voice = Some(VoiceScore { icpif: 5, mos: 4.1, r_factor: 80.0 });
        let mut b = result(ReturnCode::Ok, &[2_000, 6_000]);
        b.stats.loss_mia = 2;
        b.stats.late = 1;
        b.stats.jitter_sd.positive.add(4_000_000);
        b.stats.jitter_sd.negative.add(1_000_000);
        b.voice = Some(VoiceScore { icpif: 11, mos: 3.9, r_factor: 75.0 });
        put(&s, 2, H0 + 10 * SEC, &a, true, h);
        put(&s, 2, H0 + 70 * SEC, &b, true, h);
        let row = &s.aggregates(2).unwrap()[0];
        // completion time of a jitter run is its average RTT (IOS "Latest RTT")
        assert_eq!((row.completion_us.min, row.completion_us.max), (Some(2_000.0), Some(4_000.0)));
        assert_eq!(row.distribution, vec![Bucket { lower_ms: 0, upper_ms: None, count: 2 }]);
        let j = row.jitter.as_ref().unwrap();
        assert_eq!((j.sent, j.received), (5, 4));
        assert_eq!(
            (j.rtt_us.count, j.rtt_us.sum, j.rtt_us.min, j.rtt_us.max),
            (4, 12_000.0, Some(1_000.0), Some(6_000.0))
        );
        assert_eq!(j.rtt_us.sum2, 1e6 + 9e6 + 4e6 + 36e6);
        assert_eq!((j.jitter_sd_pos_us.count, j.jitter_sd_pos_us.sum), (2, 6_000.0));
        assert_eq!((j.jitter_sd_neg_us.count, j.jitter_sd_neg_us.sum), (1, 1_000.0));
        assert_eq!((j.jitter_ds_neg_us.count, j.jitter_ds_neg_us.sum), (1, 500.0));
        assert_eq!(j.jitter_ds_pos_us.count, 0);
        assert_eq!((j.one_way_sd_us.count, j.one_way_ds_us.count), (2, 0), "one-way only where present");
        assert_eq!((j.loss_sd, j.loss_ds, j.loss_mia, j.late), (1, 0, 2, 1));
        assert_eq!((j.mos_min, j.mos_max, j.icpif_min, j.icpif_max), (Some(3.9), Some(4.1), Some(5), Some(11)));
    }

    #[test]
    fn hours_roll_off() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("a.db")).unwrap();
        let h = HistoryConfig::default();
        let ok = result(ReturnCode::Ok, &[1_000]);
        for hour in 0..4 {
            put(&s, 1, H0 + hour * HOUR_NS + SEC, &ok, false, h);
            put(&s, 2, H0 + hour * HOUR_NS + SEC, &ok, false, HistoryConfig { hours: 3, ..h });
            put(&s, 3, H0 + hour * HOUR_NS + SEC, &ok, false, HistoryConfig { hours: 0, ..h });
        }
        let hours =
            |op| s.aggregates(op).unwrap().iter().map(|a| (a.hour_start_s - H0 / SEC) / 3600).collect::<Vec<_>>();
        assert_eq!(hours(1), vec![2, 3], "two hours kept: the current one and the one before");
        assert_eq!(hours(2), vec![1, 2, 3]);
        assert_eq!(hours(3), Vec::<i64>::new(), "0 hours: no aggregates");
        assert_eq!(s.count(3).unwrap(), 4, "runs are kept regardless");
        // the hourly prune, an hour later, with operation 2 now keeping 1 hour; operation 1 is
        // gone from the configuration and keeps up to 25 hours
        let n = s.prune_aggregates(H0 + 4 * HOUR_NS, &BTreeMap::from([(2, 1)])).unwrap();
        assert_eq!(n, 3);
        assert_eq!((hours(1), hours(2)), (vec![2, 3], vec![]));
        assert_eq!(s.prune_aggregates(H0 + 28 * HOUR_NS, &BTreeMap::new()).unwrap(), 2);
    }

    #[test]
    fn size_limit_keeps_the_newest_runs() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("a.db")).unwrap();
        let limit = 256 * 1024;
        s.set_max_size(Some(limit));
        let ok = result(ReturnCode::Ok, &[1_000]);
        let pad = "x".repeat(2000);
        let mut peak = 0;
        for i in 0..1000i64 {
            let report = format!("{{\"i\":{i},\"pad\":\"{pad}\"}}");
            let rec = RunRecord {
                op: 1 + (i % 2) as u32,
                start_ns: H0 + i * SEC,
                result: &ok,
                jitter: false,
                report: &report,
                history: HistoryConfig::default(),
            };
            s.insert_run(&rec).unwrap();
            peak = peak.max(s.used_bytes().unwrap());
        }
        // checked every 64 inserts: never more than 64 runs' worth over (a 2 KB run fills a 4 KiB page)
        assert!(peak > limit && peak <= limit + CHECK_EVERY * 5 * 1024, "peak {peak}");
        s.enforce_max_size().unwrap();
        let used = s.used_bytes().unwrap();
        assert!(used <= limit, "{used} > {limit}");
        let free: i64 = s.conn.pragma_query_value(None, "freelist_count", |r| r.get(0)).unwrap();
        assert_eq!(free, 0, "incremental_vacuum gave the freed pages back");
        let kept = s.count(1).unwrap() + s.count(2).unwrap();
        assert!((50..200).contains(&kept), "{kept} runs kept");
        // the newest are the ones kept, with no gap
        let mut starts: Vec<i64> =
            [1, 2].iter().flat_map(|op| s.history(*op, 10_000).unwrap()).map(|r| (r.start_ns - H0) / SEC).collect();
        starts.sort();
        assert_eq!(starts, (1000 - kept as i64..1000).collect::<Vec<_>>());
        assert_eq!(s.latest(2).unwrap().unwrap().report["i"], 999);
        assert_eq!(s.aggregates(1).unwrap()[0].runs, 500, "aggregates are not trimmed with the runs");
    }
}
