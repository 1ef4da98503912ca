//! Statistics of one operation, computed the way Cisco defines them (CISCO-RTTMON-MIB
//! `rttMonLatestJitterOper*`, reference ip-sla-features §1.4–1.5).
//!
//! Input is one [`Sample`] per reply, in arrival order, with every time already reduced to the
//! three per-packet quantities the definitions need:
//! - `rtt` = (T4 − T1) − (T3 − T2): round trip with the responder's processing removed;
//! - `sd` = T2 − T1: source-to-destination transit (includes the clock offset between the hosts);
//! - `ds` = T4 − T3: destination-to-source transit (includes minus that offset).
//!
//! Jitter only uses differences of `sd` and of `ds` between packets, so the clock offset cancels
//! and jitter is valid without synchronised clocks; one-way delay is not, and is reported only when
//! the caller declares the clocks synchronised.
//!
//! All values are nanoseconds (`i64`); reports convert to µs. Loss direction comes from the
//! responder's receive counter: of the probes sent before the last reply, as many reached the
//! responder as it handed out counter values, whether it saw them in the order they were sent
//! or not; the rest never reached it.

use serde::{Deserialize, Serialize};

/// One reply as the statistics see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Sender sequence, 1..=sent.
    pub seq: u32,
    /// Responder receive counter (0 when the responder does not count, e.g. udp-echo).
    pub responder_seq: u32,
    /// Round trip minus responder processing, ns.
    pub rtt: i64,
    /// T2 − T1, ns.
    pub sd: i64,
    /// T4 − T3, ns.
    pub ds: i64,
    /// Arrived after the operation's timeout: counted, kept out of the delay statistics.
    pub late: bool,
    /// A further copy of a reply already received: counted as a duplicate; its responder counter
    /// still tells that the responder saw an extra packet.
    pub duplicate: bool,
    /// T1, when the probe left: ns since the Unix epoch on our clock (the kernel's transmit stamp
    /// when it came back, else the reading before the send call).
    #[serde(default)]
    pub t1: i64,
    /// T2, when the responder received the probe: ns since the epoch on the responder's clock
    /// (so it carries the offset between the clocks); `None` when the protocol does not carry it
    /// (udp-echo, icmp-echo, tcp-connect).
    #[serde(default)]
    pub t2: Option<i64>,
    /// T3, when the responder sent the reply (type 2 and ICMP Timestamp: T2 plus the processing
    /// time it reports); `None` as for T2.
    #[serde(default)]
    pub t3: Option<i64>,
    /// T4, when the reply reached us: ns since the epoch (the kernel's receive stamp when the
    /// socket delivered one).
    #[serde(default)]
    pub t4: i64,
}

/// Count / min / max / sum / sum of squares, like the MIB's `NumOf`, `MinOf`, `MaxOf`, `SumOf`,
/// `Sum2`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Acc {
    /// Number of values.
    pub count: u64,
    /// Smallest value (0 when empty).
    pub min: i64,
    /// Largest value (0 when empty).
    pub max: i64,
    /// Sum.
    pub sum: i128,
    /// Sum of squares.
    pub sum2: i128,
}

impl Acc {
    /// Adds a value.
    pub fn add(&mut self, v: i64) {
        if self.count == 0 || v < self.min {
            self.min = v;
        }
        if self.count == 0 || v > self.max {
            self.max = v;
        }
        self.count += 1;
        self.sum += i128::from(v);
        self.sum2 += i128::from(v) * i128::from(v);
    }
    /// Mean, 0 when empty: the MIB's `Sum / NumOf` as IOS compares it with a threshold. What is
    /// shown or exported uses [`Acc::mean`], which says "no value" instead.
    pub fn avg(&self) -> f64 {
        self.mean().unwrap_or(0.0)
    }
    /// Mean; `None` without a value.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }
    /// (min, max); `None` without a value (the fields then hold 0, which is not a measurement).
    pub fn min_max(&self) -> Option<(i64, i64)> {
        (self.count > 0).then_some((self.min, self.max))
    }
    /// Merges another accumulator (for aggregates).
    pub fn merge(&mut self, o: &Acc) {
        if o.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *o;
            return;
        }
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.count += o.count;
        self.sum += o.sum;
        self.sum2 += o.sum2;
    }
}

/// Jitter of one direction, split by sign as the MIB does (positive: transit grew between two
/// packets; negative: it shrank, stored as an absolute value; zero counts as positive).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct DirJitter {
    /// Positive jitter values.
    pub positive: Acc,
    /// Negative jitter values (absolute).
    pub negative: Acc,
    /// RFC 3550 §6.4.1 interarrival jitter at the end of the operation, ns.
    pub interarrival: f64,
}

impl DirJitter {
    /// Samples in this direction.
    pub fn count(&self) -> u64 {
        self.positive.count + self.negative.count
    }
    /// Average of |jitter| over positive and negative together (MIB `AvgSDJ` / `AvgDSJ`), 0
    /// without a sample as the MIB holds it; [`DirJitter::mean`] says "no value" instead.
    pub fn avg(&self) -> f64 {
        self.mean().unwrap_or(0.0)
    }
    /// Average of |jitter|; `None` without a sample (fewer than two replies).
    pub fn mean(&self) -> Option<f64> {
        let n = self.count();
        (n > 0).then(|| (self.positive.sum + self.negative.sum) as f64 / n as f64)
    }
    /// RFC 3550 interarrival jitter; `None` without a sample.
    pub fn interarrival(&self) -> Option<f64> {
        (self.count() > 0).then_some(self.interarrival)
    }
}

/// Loss periods of one direction (IOS `Loss Period Length Min/Max`, `Inter Loss Period`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LossPeriods {
    /// Number of loss periods.
    pub count: u32,
    /// Shortest loss period, packets.
    pub len_min: u32,
    /// Longest loss period, packets.
    pub len_max: u32,
    /// Shortest run of delivered packets between two loss periods.
    pub inter_min: u32,
    /// Longest run of delivered packets between two loss periods.
    pub inter_max: u32,
}

/// Percentiles (nearest-rank) of a distribution, ns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: i64,
    /// 90th percentile.
    pub p90: i64,
    /// 99th percentile.
    pub p99: i64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `v` (sorted in place); `None` when empty: there is no median
    /// of nothing, and a 0 would read as a perfect delay.
    pub fn of(v: &mut [i64]) -> Option<Self> {
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let rank = |p: f64| {
            let k = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v[k.clamp(1, v.len()) - 1]
        };
        Some(Percentiles { p50: rank(50.0), p90: rank(90.0), p99: rank(99.0) })
    }
}

/// Everything a jitter-style operation reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JitterStats {
    /// Probes sent.
    pub sent: u32,
    /// Replies received in time (unique).
    pub received: u32,
    /// RTT with processing removed.
    pub rtt: Acc,
    /// RTT percentiles; `None` without a reply in time.
    pub rtt_pct: Option<Percentiles>,
    /// RTTs over the operation threshold.
    pub over_threshold: u32,
    /// One-way SD (T2 − T1), present only with synchronised clocks.
    pub one_way_sd: Option<Acc>,
    /// One-way DS (T4 − T3), present only with synchronised clocks.
    pub one_way_ds: Option<Acc>,
    /// One-way percentiles SD, DS; `None` without synchronised clocks or without a reply.
    pub one_way_pct: Option<(Percentiles, Percentiles)>,
    /// Jitter SD.
    pub jitter_sd: DirJitter,
    /// Jitter DS.
    pub jitter_ds: DirJitter,
    /// Percentiles of |IPDV| of the round trip between consecutive packets; `None` with fewer
    /// than two replies.
    pub ipdv_pct: Option<Percentiles>,
    /// Lost on the way to the responder.
    pub loss_sd: u32,
    /// Reached the responder, reply lost on the way back.
    pub loss_ds: u32,
    /// Lost, direction unknown (after the last reply).
    pub loss_mia: u32,
    /// Probes after the last reply (Cisco "Tail Drop").
    pub tail_drop: u32,
    /// Replies after the timeout.
    pub late: u32,
    /// Replies whose sender sequence went backwards in arrival order.
    pub out_of_sequence: u32,
    /// Extra copies of replies already received.
    pub duplicates: u32,
    /// SD loss periods.
    pub periods_sd: LossPeriods,
    /// DS loss periods.
    pub periods_ds: LossPeriods,
}

impl JitterStats {
    /// Average jitter over both directions (MIB `AvgJitter`), 0 without a sample as the MIB
    /// holds it; [`JitterStats::jitter_mean`] says "no value" instead.
    pub fn jitter_avg(&self) -> f64 {
        self.jitter_mean().unwrap_or(0.0)
    }
    /// Average jitter over both directions; `None` without a sample (fewer than two replies).
    pub fn jitter_mean(&self) -> Option<f64> {
        let n = self.jitter_sd.count() + self.jitter_ds.count();
        let s = self.jitter_sd.positive.sum
            + self.jitter_sd.negative.sum
            + self.jitter_ds.positive.sum
            + self.jitter_ds.negative.sum;
        (n > 0).then(|| s as f64 / n as f64)
    }
    /// Packet loss ratio (lost / sent), 0..1, counting every direction.
    pub fn loss_ratio(&self) -> f64 {
        if self.sent == 0 { 0.0 } else { f64::from(self.loss_sd + self.loss_ds + self.loss_mia) / f64::from(self.sent) }
    }
}

/// Parameters of the computation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatsConfig {
    /// RTT threshold, ns (IOS `threshold`, default 5000 ms).
    pub threshold: i64,
    /// Clocks declared synchronised within tolerance: one-way delays are reported.
    pub clock_sync: bool,
    /// The responder keeps a receive counter (udp-jitter, TWAMP, STAMP): loss can be split by
    /// direction. Without it every loss is MIA.
    pub responder_counts: bool,
}

/// Computes the statistics of one operation. `arrivals` are the replies in arrival order, late
/// ones and duplicates included (flagged).
pub fn compute(sent: u32, all: &[Sample], cfg: StatsConfig) -> JitterStats {
    let duplicates = all.iter().filter(|s| s.duplicate).count() as u32;
    let dup_rseqs: Vec<u32> =
        all.iter().filter(|s| s.duplicate && s.responder_seq > 0).map(|s| s.responder_seq).collect();
    let arrivals: Vec<Sample> = all.iter().filter(|s| !s.duplicate).copied().collect();
    let arrivals = &arrivals[..];
    let mut st = JitterStats { sent, duplicates, ..JitterStats::default() };
    // out of sequence: arrival order vs sender order
    let mut highest = 0u32;
    for s in arrivals {
        if s.seq < highest {
            st.out_of_sequence += 1;
        }
        highest = highest.max(s.seq);
    }
    st.late = arrivals.iter().filter(|s| s.late).count() as u32;
    let mut on_time: Vec<Sample> =
        arrivals.iter().filter(|s| !s.late && s.seq >= 1 && s.seq <= sent).copied().collect();
    on_time.sort_by_key(|s| s.seq);
    st.received = on_time.len() as u32;

    let mut rtts = Vec::with_capacity(on_time.len());
    let (mut sd_acc, mut ds_acc) = (Acc::default(), Acc::default());
    let (mut sds, mut dss) = (Vec::new(), Vec::new());
    for s in &on_time {
        st.rtt.add(s.rtt);
        rtts.push(s.rtt);
        if s.rtt > cfg.threshold {
            st.over_threshold += 1;
        }
        if cfg.clock_sync {
            sd_acc.add(s.sd);
            ds_acc.add(s.ds);
            sds.push(s.sd);
            dss.push(s.ds);
        }
    }
    if cfg.clock_sync {
        st.one_way_sd = Some(sd_acc);
        st.one_way_ds = Some(ds_acc);
        st.one_way_pct = Percentiles::of(&mut sds).zip(Percentiles::of(&mut dss));
    }
    // Jitter between consecutive received packets, in sequence order (so that a reordered pair
    // does not count twice); the interarrival jitter follows RFC 3550 §6.4.1, J += (|D| − J) / 16.
    let mut ipdv = Vec::new();
    for w in on_time.windows(2) {
        let (a, b) = (w[0], w[1]);
        add_jitter(&mut st.jitter_sd, b.sd - a.sd);
        add_jitter(&mut st.jitter_ds, b.ds - a.ds);
        ipdv.push((b.rtt - a.rtt).abs());
    }
    st.rtt_pct = Percentiles::of(&mut rtts);
    st.ipdv_pct = Percentiles::of(&mut ipdv);

    loss(&mut st, arrivals, &dup_rseqs, cfg.responder_counts);
    st
}

fn add_jitter(d: &mut DirJitter, j: i64) {
    if j >= 0 {
        d.positive.add(j);
    } else {
        d.negative.add(-j);
    }
    d.interarrival += (j.abs() as f64 - d.interarrival) / 16.0;
}

/// Splits the losses before the last reply by direction from the responder counters of every
/// reply that reached us, late ones included (they did reach the responder). `dup_rseqs` are the
/// counters carried by duplicate replies: a probe duplicated on the way out advanced the counter
/// without being a different probe, so those values are no probe's.
///
/// The split depends on the *set* of counter values seen, never on which reply carried which
/// value nor on the order replies were handled in: the responder numbers probes in the order it
/// receives them, which is not the order they were sent once the network reorders them (a
/// sender that fell behind its schedule sends a burst, and a few hundred µs of jitter shuffles
/// it). Every value up to the largest counter seen that no reply carried went to a probe that
/// reached the responder and whose reply was lost (DS); the other losses before the last reply
/// never reached it (SD).
fn loss(st: &mut JitterStats, arrivals: &[Sample], dup_rseqs: &[u32], responder_counts: bool) {
    let sent = st.sent;
    let mut got: Vec<Sample> = arrivals.iter().filter(|s| s.seq >= 1 && s.seq <= sent).copied().collect();
    got.sort_by_key(|s| s.seq);
    let lost_total = sent - got.len() as u32;
    let Some(last) = got.last().copied() else {
        st.loss_mia = sent;
        st.tail_drop = sent;
        return;
    };
    st.tail_drop = sent - last.seq;
    st.loss_mia = lost_total;
    if !responder_counts {
        return;
    }
    let mut counters: Vec<u32> = got.iter().map(|s| s.responder_seq).collect();
    counters.sort_unstable();
    if counters[0] == 0 || counters.windows(2).any(|w| w[0] == w[1]) {
        // Not a count of this run's probes (a responder that restarted, or no counter): the
        // direction of every loss is unknown.
        return;
    }
    let mut copies: Vec<u32> =
        dup_rseqs.iter().copied().filter(|d| *d > 0 && counters.binary_search(d).is_err()).collect();
    copies.sort_unstable();
    copies.dedup();
    // Pair the k-th reply in sender order with the k-th smallest counter: `gaps[k]` probes are
    // missing before that reply, `seen[k]` counter values (copies' aside) below that counter.
    let mut gaps: Vec<u64> = Vec::with_capacity(got.len());
    let mut seen: Vec<u64> = Vec::with_capacity(got.len());
    let (mut prev_seq, mut prev_counter) = (0u32, 0u32);
    for (s, &c) in got.iter().zip(&counters) {
        let copies_between = copies.partition_point(|&d| d < c) - copies.partition_point(|&d| d <= prev_counter);
        gaps.push(u64::from(s.seq.saturating_sub(prev_seq).saturating_sub(1)));
        seen.push(u64::from(c - prev_counter - 1) - copies_between as u64);
        (prev_seq, prev_counter) = (s.seq, c);
    }
    // Counter values below the smallest seen are this run's only if they fit the probes before the
    // first reply. More means the counter did not start with this run (a stateful STAMP session
    // kept from an earlier one): those probes' direction is unknown. (A probe that overtook the
    // first one and lost its reply looks the same, and is counted SD.)
    let mut mia = u64::from(st.tail_drop);
    if seen[0] > gaps[0] {
        mia += gaps[0];
        (gaps[0], seen[0]) = (0, 0);
    }
    let (gap_total, seen_total): (u64, u64) = (gaps.iter().sum(), seen.iter().sum());
    if seen_total > gap_total + u64::from(st.tail_drop) {
        // More values went unanswered than there were probes to take them.
        return;
    }
    // Which gap a DS loss belongs to is only known up to the reordering: a value that does not
    // fit its own gap was taken by a probe that overtook or fell behind, so it moves to the next
    // gaps with room, then to earlier ones. Values left over went to probes after the last reply.
    let mut ds: Vec<u64> = vec![0; gaps.len()];
    let mut carry = 0u64;
    for k in 0..gaps.len() {
        let want = seen[k] + carry;
        ds[k] = want.min(gaps[k]);
        carry = want - ds[k];
    }
    for k in (0..gaps.len()).rev() {
        let take = carry.min(gaps[k] - ds[k]);
        ds[k] += take;
        carry -= take;
    }
    let mut sd_lost = vec![false; sent as usize];
    let mut ds_lost = vec![false; sent as usize];
    let mut prev_seq = 0u32;
    for (k, s) in got.iter().enumerate() {
        // Assume the SD losses came first in the gap; only counts and period lengths matter,
        // not which packet was which.
        let sd = gaps[k] - ds[k];
        for i in 0..gaps[k] {
            let idx = (u64::from(prev_seq) + i) as usize;
            if i < sd {
                sd_lost[idx] = true;
            } else {
                ds_lost[idx] = true;
            }
        }
        prev_seq = s.seq;
    }
    let ds_total: u64 = ds.iter().sum();
    st.loss_sd = (gap_total - ds_total) as u32;
    st.loss_ds = ds_total as u32;
    st.loss_mia = mia as u32;
    st.periods_sd = periods(&sd_lost);
    st.periods_ds = periods(&ds_lost);
}

/// Loss periods over a per-packet lost flag.
fn periods(lost: &[bool]) -> LossPeriods {
    let mut p = LossPeriods::default();
    let mut run = 0u32; // current loss run
    let mut gap: Option<u32> = None; // delivered packets since the last loss period, once one ended
    let close_run = |p: &mut LossPeriods, run: u32| {
        p.len_min = if p.count == 0 { run } else { p.len_min.min(run) };
        p.len_max = p.len_max.max(run);
        p.count += 1;
    };
    let mut inters = Vec::new();
    for &l in lost {
        if l {
            if run == 0
                && let Some(g) = gap.take()
            {
                inters.push(g);
            }
            run += 1;
        } else {
            if run > 0 {
                close_run(&mut p, run);
                run = 0;
                gap = Some(0);
            }
            if let Some(g) = gap.as_mut() {
                *g += 1;
            }
        }
    }
    if run > 0 {
        close_run(&mut p, run);
    }
    if !inters.is_empty() {
        p.inter_min = *inters.iter().min().unwrap_or(&0);
        p.inter_max = *inters.iter().max().unwrap_or(&0);
    }
    p
}

#[cfg(test)]
mod tests;
