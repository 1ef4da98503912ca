//! Ground truth from a link's log: what a probe across the link must report (received, loss per
//! direction, duplicates, out-of-sequence, how long the link held each packet), shared by the
//! ground-truth tests and the error benchmark so that both read the log the same way.

use crate::link::{Delay, DelayDist, Dir, Fate, Impairment, Link, LinkConfig, Loss, Record};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The test packet format on the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// IP SLA probe type 3 (µs).
    CiscoUs,
    /// IP SLA probe type 2 (ms).
    CiscoMs,
    /// STAMP or unauthenticated TWAMP-Test: the sender's Sequence Number at octet 0, the
    /// reflector's copy of it at octet 24; the probe numbers samples from 1.
    Stamp,
}

impl Format {
    /// The udp-jitter format of `precision` (`us` or `ms`).
    pub fn of(precision: &str) -> Self {
        if precision == "us" { Format::CiscoUs } else { Format::CiscoMs }
    }
}

/// The sender sequence of a probe or reply, as the probe reports it, from the payload head the
/// lab logged.
pub fn seq_of(r: &Record, f: Format, reply: bool) -> Option<u32> {
    let h = &r.head;
    let be32 = |at: usize| (h.len() >= at + 4).then(|| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]));
    match f {
        Format::CiscoUs => (h.len() >= 54 && h[1] == 3).then(|| u32::from(u16::from_be_bytes([h[52], h[53]]))),
        Format::CiscoMs => (h.len() >= 14 && h[1] == 2).then(|| u32::from(u16::from_be_bytes([h[12], h[13]]))),
        Format::Stamp => be32(if reply { 24 } else { 0 }).map(|s| s.wrapping_add(1)),
    }
}

/// When the link delivered `r` (`Duration::MAX` when it did not).
pub fn egress(r: &Record) -> Duration {
    match r.fate {
        Fate::Delivered { egress } => egress,
        _ => Duration::MAX,
    }
}

/// What the log says the probe must report.
#[derive(Debug, Default, PartialEq)]
pub struct Truth {
    /// Distinct replies delivered.
    pub received: u32,
    /// Probes lost on the way out, before the last delivered reply.
    pub sd: u32,
    /// Probes delivered whose replies were all lost, before the last delivered reply.
    pub ds: u32,
    /// Probes after the last delivered reply (their direction cannot be known).
    pub mia: u32,
    /// Extra copies of replies delivered.
    pub duplicates: u32,
    /// Replies delivered after one with a higher sequence.
    pub out_of_sequence: u32,
    /// Per sequence: link hold A→B and B→A of the first delivered copies.
    pub held: BTreeMap<u32, (Duration, Duration)>,
}

/// The truth of a run of `n` probes of format `f` to UDP `port` across `link` (A → B).
pub fn truth(link: &Link, n: u32, f: Format, port: u16) -> Truth {
    let recs = link.records();
    let probes: Vec<&Record> = recs
        .iter()
        .filter(|r| r.dir == Dir::AtoB && r.tuple.is_some_and(|t| t.proto == 17 && t.dport == port))
        .collect();
    let replies: Vec<&Record> = recs
        .iter()
        .filter(|r| r.dir == Dir::BtoA && r.tuple.is_some_and(|t| t.proto == 17 && t.sport == port))
        .collect();
    let out_ok: BTreeSet<u32> = probes.iter().filter(|r| r.delivered()).filter_map(|r| seq_of(r, f, false)).collect();
    let mut back: Vec<&Record> = replies.iter().copied().filter(|r| r.delivered()).collect();
    back.sort_by_key(|r| egress(r));
    let mut t = Truth::default();
    let mut seen = BTreeSet::new();
    let mut highest = 0;
    for r in &back {
        let Some(s) = seq_of(r, f, true) else { continue };
        if !seen.insert(s) {
            t.duplicates += 1;
            continue;
        }
        if s < highest {
            t.out_of_sequence += 1;
        }
        highest = highest.max(s);
        let out = probes.iter().filter(|p| p.delivered() && seq_of(p, f, false) == Some(s)).min_by_key(|p| egress(p));
        if let (Some(ho), Some(hb)) = (out.and_then(|o| o.held()), r.held()) {
            t.held.insert(s, (ho, hb));
        }
    }
    t.received = seen.len() as u32;
    let last = seen.iter().max().copied().unwrap_or(0);
    t.sd = (1..last).filter(|s| !out_ok.contains(s)).count() as u32;
    t.ds = (1..last).filter(|s| out_ok.contains(s) && !seen.contains(s)).count() as u32;
    t.mia = n.saturating_sub(last);
    t
}

/// The loss scenario of the ground-truth tests and the error benchmark: out 3 ms ± 300 µs with
/// 6 % random loss, back 2 ms with bursty (Gilbert-Elliott) loss and 4 % duplicates.
pub fn loss_scenario() -> LinkConfig {
    const MS: Duration = Duration::from_millis(1);
    LinkConfig {
        a_to_b: Impairment {
            delay: Delay { base: 3 * MS, jitter: Duration::from_micros(300), dist: DelayDist::Uniform },
            loss: Loss::Bernoulli(0.06),
            ..Impairment::default()
        },
        b_to_a: Impairment {
            delay: Delay { base: 2 * MS, ..Delay::default() },
            loss: Loss::GilbertElliott { p: 0.03, r: 0.4, loss_good: 0.0, loss_bad: 0.7 },
            duplicate: 0.04,
            ..Impairment::default()
        },
        seed: 2024,
    }
}
