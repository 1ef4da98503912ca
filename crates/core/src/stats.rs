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
//! responder's receive counter: for a reply carrying sender sequence `s` and responder sequence
//! `r`, `s − r` probes before it never reached the responder.

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
    /// Mean (0 when empty).
    pub fn avg(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.sum as f64 / self.count as f64 }
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
    /// Average of |jitter| over positive and negative together (MIB `AvgSDJ` / `AvgDSJ`).
    pub fn avg(&self) -> f64 {
        let n = self.count();
        if n == 0 { 0.0 } else { (self.positive.sum + self.negative.sum) as f64 / n as f64 }
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
    /// Nearest-rank percentiles of `v` (sorted in place); zeros when empty.
    pub fn of(v: &mut [i64]) -> Self {
        if v.is_empty() {
            return Percentiles::default();
        }
        v.sort_unstable();
        let rank = |p: f64| {
            let k = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v[k.clamp(1, v.len()) - 1]
        };
        Percentiles { p50: rank(50.0), p90: rank(90.0), p99: rank(99.0) }
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
    /// RTT percentiles.
    pub rtt_pct: Percentiles,
    /// RTTs over the operation threshold.
    pub over_threshold: u32,
    /// One-way SD (T2 − T1), present only with synchronised clocks.
    pub one_way_sd: Option<Acc>,
    /// One-way DS (T4 − T3), present only with synchronised clocks.
    pub one_way_ds: Option<Acc>,
    /// One-way percentiles SD, DS.
    pub one_way_pct: Option<(Percentiles, Percentiles)>,
    /// Jitter SD.
    pub jitter_sd: DirJitter,
    /// Jitter DS.
    pub jitter_ds: DirJitter,
    /// Percentiles of |IPDV| of the round trip between consecutive packets.
    pub ipdv_pct: Percentiles,
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
    /// Average jitter over both directions (MIB `AvgJitter`).
    pub fn jitter_avg(&self) -> f64 {
        let n = self.jitter_sd.count() + self.jitter_ds.count();
        if n == 0 {
            return 0.0;
        }
        let s = self.jitter_sd.positive.sum
            + self.jitter_sd.negative.sum
            + self.jitter_ds.positive.sum
            + self.jitter_ds.negative.sum;
        s as f64 / n as f64
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
        st.one_way_pct = Some((Percentiles::of(&mut sds), Percentiles::of(&mut dss)));
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

/// Splits the losses by direction using the responder counter of every reply that reached us,
/// late ones included (they did reach the responder). `dup_rseqs` are the counters carried by
/// duplicate replies: a probe duplicated on the way out advanced the counter without being a
/// different probe, so those values are not "seen" probes of a gap.
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
    if !responder_counts {
        st.loss_mia = lost_total;
        return;
    }
    // Walk the gaps between consecutive replies: in a gap of g missing probes between replies
    // (s1, r1) and (s2, r2), the responder saw (r2 − r1 − 1) of them, so g − that many were lost
    // on the way there and the rest on the way back. Counters that went backwards (the responder
    // restarted, or reordering) make the split unknowable: those gaps go to MIA.
    let mut sd_lost = vec![false; sent as usize];
    let mut ds_lost = vec![false; sent as usize];
    let mut prev = (0u32, 0u32);
    let mut split_sd = 0u32;
    let mut split_ds = 0u32;
    let mut mia = 0u32;
    for s in &got {
        let gap = s.seq.saturating_sub(prev.0).saturating_sub(1);
        if gap > 0 {
            // duplicate counters strictly between the two replies' (sorted: two binary searches)
            let lo = dup_rseqs.partition_point(|&d| d <= prev.1);
            let hi = dup_rseqs.partition_point(|&d| d < s.responder_seq);
            let dups = hi.saturating_sub(lo) as u32;
            let seen_by_responder =
                prev.1.checked_add(1).and_then(|p| s.responder_seq.checked_sub(p)).and_then(|x| x.checked_sub(dups));
            match seen_by_responder {
                Some(seen) if seen <= gap => {
                    let sd = gap - seen;
                    // Assume the SD losses came first in the gap; only counts and period lengths
                    // matter, not which packet was which.
                    for k in 0..gap {
                        let idx = (prev.0 + k) as usize;
                        if k < sd {
                            sd_lost[idx] = true;
                        } else {
                            ds_lost[idx] = true;
                        }
                    }
                    split_sd += sd;
                    split_ds += seen;
                }
                _ => mia += gap,
            }
        }
        prev = (s.seq, s.responder_seq.max(prev.1));
    }
    st.loss_sd = split_sd;
    st.loss_ds = split_ds;
    st.loss_mia = mia + (sent - last.seq);
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
