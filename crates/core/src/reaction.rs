//! Threshold monitoring of operation results: IOS `ip sla reaction-configuration`, sans-IO.
//!
//! Each [`Reaction`] watches one element of the results (rtt, jitterAvg, mos, timeout, ...) with a
//! threshold type (CISCO-RTTMON-MIB `rttMonReactThresholdType`):
//! - `never`: nothing;
//! - `immediate`: occurs when one value violates, clears when one value is within limits;
//! - `consecutive N`: occurs after N violations in a row, clears after N in-limit values in a row;
//! - `xofy X Y`: occurs when X of the last Y values violate, clears when X of the last Y are within
//!   limits (never when X > Y);
//! - `average N`: compares the average of the last N values.
//!
//! Values are compared with a rising and a falling threshold (hysteresis): for an element where
//! higher is worse (rtt), a value above `rising` violates and one below `falling` is within limits;
//! for MOS (lower is worse) a value below `falling` violates and one above `rising` is within
//! limits. Boolean elements (timeout, connectionLoss, verifyError) violate when the condition holds.
//! An event is produced **only on a transition** (XE 17 threshold guide): once when the condition
//! occurs, once when it clears.

use crate::ops::{OperationResult, ReturnCode};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// What a reaction watches (CISCO-RTTMON-MIB `RttMonReactVar`, the IOS keyword in parentheses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Element {
    /// Average RTT of the run, ms (`rtt`).
    Rtt,
    /// Average jitter, both directions, ms (`jitterAvg`).
    JitterAvg,
    /// Average SD jitter, ms (`jitterSDAvg`).
    JitterSdAvg,
    /// Average DS jitter, ms (`jitterDSAvg`).
    JitterDsAvg,
    /// Probes lost source to destination (`packetLossSD`).
    PacketLossSd,
    /// Probes lost destination to source (`packetLossDS`).
    PacketLossDs,
    /// Probes lost in unknown direction (`packetMIA`).
    PacketMia,
    /// Late replies (`packetLateArrival`).
    PacketLateArrival,
    /// Out-of-sequence replies (`packetOutOfSequence`).
    PacketOutOfSequence,
    /// Loss percentage of all probes (`packetLoss`, as a percentage here).
    PacketLossPercent,
    /// MOS × 100, as IOS enters it (`mos`): lower is worse.
    Mos,
    /// ICPIF (`icpif`).
    Icpif,
    /// Average one-way SD latency, ms (`latencySDAvg`).
    LatencySdAvg,
    /// Average one-way DS latency, ms (`latencyDSAvg`).
    LatencyDsAvg,
    /// The run timed out (`timeout`).
    Timeout,
    /// The control phase or connection failed (`connectionLoss`).
    ConnectionLoss,
    /// A reply did not match what was sent (`verifyError`).
    VerifyError,
    /// The path differs from the previous run's (`pathChange`; path-echo and path-jitter).
    PathChange,
}

impl Element {
    /// The IOS keyword.
    pub fn keyword(self) -> &'static str {
        match self {
            Element::Rtt => "rtt",
            Element::JitterAvg => "jitterAvg",
            Element::JitterSdAvg => "jitterSDAvg",
            Element::JitterDsAvg => "jitterDSAvg",
            Element::PacketLossSd => "packetLossSD",
            Element::PacketLossDs => "packetLossDS",
            Element::PacketMia => "packetMIA",
            Element::PacketLateArrival => "packetLateArrival",
            Element::PacketOutOfSequence => "packetOutOfSequence",
            Element::PacketLossPercent => "packetLoss",
            Element::Mos => "mos",
            Element::Icpif => "icpif",
            Element::LatencySdAvg => "latencySDAvg",
            Element::LatencyDsAvg => "latencyDSAvg",
            Element::Timeout => "timeout",
            Element::ConnectionLoss => "connectionLoss",
            Element::VerifyError => "verifyError",
            Element::PathChange => "pathChange",
        }
    }

    /// Parses an IOS keyword (case-insensitive, as IOS accepts).
    pub fn from_keyword(s: &str) -> Option<Element> {
        ALL_ELEMENTS.iter().copied().find(|e| e.keyword().eq_ignore_ascii_case(s))
    }

    /// Boolean elements take no threshold values.
    pub fn is_boolean(self) -> bool {
        matches!(self, Element::Timeout | Element::ConnectionLoss | Element::VerifyError | Element::PathChange)
    }

    fn lower_is_worse(self) -> bool {
        self == Element::Mos
    }

    /// Whether the element applies to an operation with these properties (IOS refuses the rest:
    /// "Invalid react option for the Probe type configured"); `path`: it discovers a path.
    pub fn applies(self, jitter: bool, voice: bool, path: bool) -> bool {
        match self {
            Element::PathChange => path,
            Element::Mos | Element::Icpif => voice,
            Element::JitterAvg
            | Element::JitterSdAvg
            | Element::JitterDsAvg
            | Element::PacketLossSd
            | Element::PacketLossDs
            | Element::PacketMia
            | Element::PacketLateArrival
            | Element::PacketOutOfSequence
            | Element::PacketLossPercent
            | Element::LatencySdAvg
            | Element::LatencyDsAvg => jitter,
            Element::Rtt | Element::Timeout | Element::ConnectionLoss | Element::VerifyError => true,
        }
    }

    /// MIB default rising/falling thresholds.
    pub fn default_thresholds(self) -> (f64, f64) {
        match self {
            Element::Rtt | Element::LatencySdAvg | Element::LatencyDsAvg => (5000.0, 3000.0),
            Element::JitterAvg | Element::JitterSdAvg | Element::JitterDsAvg => (100.0, 100.0),
            Element::Mos => (500.0, 500.0),
            Element::Icpif => (93.0, 93.0),
            _ => (10000.0, 10000.0),
        }
    }

    /// The element's value in a result (`None` when the run has none, e.g. MOS without a codec,
    /// one-way delay without synchronised clocks, jitter with fewer than two replies). A run
    /// without a value leaves the reaction as it is: an outage must not read as a jitter of 0
    /// that clears a jitter alarm.
    pub fn value(self, r: &OperationResult) -> Option<f64> {
        let s = &r.stats;
        let ms = |ns: f64| ns / 1e6;
        let flag = |b: bool| Some(if b { 1.0 } else { 0.0 });
        match self {
            Element::Rtt => s.rtt.mean().map(ms),
            Element::JitterAvg => s.jitter_mean().map(ms),
            Element::JitterSdAvg => s.jitter_sd.mean().map(ms),
            Element::JitterDsAvg => s.jitter_ds.mean().map(ms),
            Element::PacketLossSd => Some(f64::from(s.loss_sd)),
            Element::PacketLossDs => Some(f64::from(s.loss_ds)),
            Element::PacketMia => Some(f64::from(s.loss_mia)),
            Element::PacketLateArrival => Some(f64::from(s.late)),
            Element::PacketOutOfSequence => Some(f64::from(s.out_of_sequence)),
            Element::PacketLossPercent => (s.sent > 0).then(|| s.loss_ratio() * 100.0),
            Element::Mos => r.voice.map(|v| (v.mos * 100.0).round()),
            Element::Icpif => r.voice.map(|v| f64::from(v.icpif)),
            Element::LatencySdAvg => s.one_way_sd.and_then(|a| a.mean()).map(ms),
            Element::LatencyDsAvg => s.one_way_ds.and_then(|a| a.mean()).map(ms),
            // the service operations time out in their own words (IOS's protocol-specific codes)
            Element::Timeout => flag(matches!(
                r.return_code,
                ReturnCode::Timeout
                    | ReturnCode::DnsServerTimeout
                    | ReturnCode::TcpConnectTimeout
                    | ReturnCode::HttpTransactionTimeout
            )),
            Element::ConnectionLoss => flag(matches!(r.return_code, ReturnCode::NoConnection | ReturnCode::Error)),
            Element::VerifyError => flag(r.return_code == ReturnCode::VerifyError),
            Element::PathChange => r.path_changed.and_then(flag),
        }
    }
}

/// Every element.
pub const ALL_ELEMENTS: [Element; 18] = [
    Element::Rtt,
    Element::JitterAvg,
    Element::JitterSdAvg,
    Element::JitterDsAvg,
    Element::PacketLossSd,
    Element::PacketLossDs,
    Element::PacketMia,
    Element::PacketLateArrival,
    Element::PacketOutOfSequence,
    Element::PacketLossPercent,
    Element::Mos,
    Element::Icpif,
    Element::LatencySdAvg,
    Element::LatencyDsAvg,
    Element::Timeout,
    Element::ConnectionLoss,
    Element::VerifyError,
    Element::PathChange,
];

/// `threshold-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThresholdType {
    /// Never reacts.
    Never,
    /// On one value.
    Immediate,
    /// After N values in a row.
    Consecutive(u8),
    /// X of the last Y values.
    XOfY(u8, u8),
    /// On the average of the last N values.
    Average(u8),
}

/// `action-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Record the state only.
    None,
    /// Alert (syslog line, webhook, ...): IOS trapOnly.
    Alert,
    /// Start the target operations: IOS triggerOnly.
    Trigger,
    /// Both: IOS trapAndTrigger.
    AlertAndTrigger,
    /// An SNMP notification (rttMonNotificationV2) through the agent's SNMP subagent: IOS
    /// trapOnly as a router sends it.
    Trap,
    /// The notification and the trigger: IOS trapAndTrigger.
    TrapAndTrigger,
}

impl Action {
    /// True when it starts the target operations.
    pub fn triggers(self) -> bool {
        matches!(self, Action::Trigger | Action::AlertAndTrigger | Action::TrapAndTrigger)
    }
}

/// One reaction's configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReactionConfig {
    /// Element.
    pub element: Element,
    /// Threshold type.
    pub threshold_type: ThresholdType,
    /// Rising threshold (upper).
    pub rising: f64,
    /// Falling threshold (lower).
    pub falling: f64,
    /// Action.
    pub action: Action,
}

/// A transition.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ReactionEvent {
    /// Element.
    pub element: Element,
    /// True: the condition occurred; false: it cleared.
    pub occurred: bool,
    /// The value that caused it (the average for `average N`).
    pub value: f64,
    /// Action configured.
    pub action: Action,
}

impl ReactionEvent {
    /// The IOS syslog line for operation `op`, e.g.
    /// `%RTT-3-IPSLATHRESHOLD: IP SLAs(10): Threshold exceeded for jitterDSAvg`.
    pub fn syslog(&self, op: u32) -> String {
        let what = if self.element.is_boolean() {
            if self.occurred { "Occurred" } else { "Cleared" }
        } else if self.occurred != self.element.lower_is_worse() {
            "exceeded"
        } else {
            "below"
        };
        format!("%RTT-3-IPSLATHRESHOLD: IP SLAs({op}): Threshold {what} for {}", self.element.keyword())
    }
}

/// The state of one reaction.
#[derive(Debug, Clone)]
pub struct Reaction {
    cfg: ReactionConfig,
    occurred: bool,
    run_violate: u32,
    run_clear: u32,
    window: VecDeque<(bool, bool)>,
    values: VecDeque<f64>,
}

impl Reaction {
    /// A reaction in the not-occurred state.
    pub fn new(cfg: ReactionConfig) -> Self {
        Reaction {
            cfg,
            occurred: false,
            run_violate: 0,
            run_clear: 0,
            window: VecDeque::new(),
            values: VecDeque::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ReactionConfig {
        &self.cfg
    }

    /// Whether the condition currently holds (`rttMonReactOccurred`).
    pub fn occurred(&self) -> bool {
        self.occurred
    }

    /// (violates, within limits) for one value.
    fn classify(&self, v: f64) -> (bool, bool) {
        if self.cfg.element.is_boolean() {
            return (v >= 1.0, v < 1.0);
        }
        if self.cfg.element.lower_is_worse() {
            (v < self.cfg.falling, v > self.cfg.rising)
        } else {
            (v > self.cfg.rising, v < self.cfg.falling)
        }
    }

    /// Feeds the result of one run; returns the transition, if any.
    pub fn observe(&mut self, r: &OperationResult) -> Option<ReactionEvent> {
        let v = self.cfg.element.value(r)?;
        self.observe_value(v)
    }

    /// Feeds one value of the element.
    pub fn observe_value(&mut self, v: f64) -> Option<ReactionEvent> {
        let (mut violate, mut clear) = self.classify(v);
        let mut value = v;
        match self.cfg.threshold_type {
            ThresholdType::Never => return None,
            ThresholdType::Immediate => {}
            ThresholdType::Consecutive(n) => {
                let n = u32::from(n.max(1));
                self.run_violate = if violate { self.run_violate + 1 } else { 0 };
                self.run_clear = if clear { self.run_clear + 1 } else { 0 };
                violate = self.run_violate >= n;
                clear = self.run_clear >= n;
            }
            ThresholdType::XOfY(x, y) => {
                let y = usize::from(y.max(1));
                self.window.push_back((violate, clear));
                while self.window.len() > y {
                    self.window.pop_front();
                }
                let x = usize::from(x);
                violate = x <= y && self.window.iter().filter(|w| w.0).count() >= x;
                clear = x <= y && self.window.iter().filter(|w| w.1).count() >= x;
            }
            ThresholdType::Average(n) => {
                self.values.push_back(v);
                while self.values.len() > usize::from(n.max(1)) {
                    self.values.pop_front();
                }
                value = self.values.iter().sum::<f64>() / self.values.len() as f64;
                (violate, clear) = self.classify(value);
            }
        }
        let event =
            |occurred| Some(ReactionEvent { element: self.cfg.element, occurred, value, action: self.cfg.action });
        if !self.occurred && violate {
            self.occurred = true;
            return event(true);
        }
        if self.occurred && clear {
            self.occurred = false;
            return event(false);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtt(t: ThresholdType) -> Reaction {
        Reaction::new(ReactionConfig {
            element: Element::Rtt,
            threshold_type: t,
            rising: 100.0,
            falling: 50.0,
            action: Action::Alert,
        })
    }

    /// Feeds values; returns the transitions as (index, occurred).
    fn feed(r: &mut Reaction, vals: &[f64]) -> Vec<(usize, bool)> {
        vals.iter().enumerate().filter_map(|(i, &v)| r.observe_value(v).map(|e| (i, e.occurred))).collect()
    }

    #[test]
    fn immediate_with_hysteresis_and_only_transitions() {
        let mut r = rtt(ThresholdType::Immediate);
        // 120 violates (> 100); 80 is between the thresholds: still occurred; 40 clears (< 50)
        assert_eq!(
            feed(&mut r, &[30.0, 120.0, 130.0, 80.0, 110.0, 40.0, 45.0, 101.0]),
            vec![(1, true), (5, false), (7, true)]
        );
    }

    #[test]
    fn consecutive() {
        let mut r = rtt(ThresholdType::Consecutive(3));
        let t = feed(&mut r, &[120.0, 120.0, 10.0, 120.0, 120.0, 120.0, 120.0, 10.0, 10.0, 80.0, 10.0, 10.0, 10.0]);
        // occurs at the 3rd violation in a row (index 5); clears at the 3rd in-limit value in a row
        // (80 breaks the run of in-limit values)
        assert_eq!(t, vec![(5, true), (12, false)]);
    }

    #[test]
    fn x_of_y() {
        let mut r = rtt(ThresholdType::XOfY(2, 3));
        let t = feed(&mut r, &[120.0, 10.0, 10.0, 120.0, 10.0, 120.0, 10.0, 10.0]);
        // window [v, c, c] -> no; [c, c, v]; [c, v, c]; [v, c, v] -> 2 violations at index 5;
        // then [c, v, c] has 2 in-limit values -> clears at index 6
        assert_eq!(t, vec![(5, true), (6, false)]);
        // X > Y never fires
        let mut r = rtt(ThresholdType::XOfY(4, 3));
        assert!(feed(&mut r, &[500.0; 10]).is_empty());
    }

    #[test]
    fn average() {
        let mut r = rtt(ThresholdType::Average(3));
        // averages: 60, 90, 120 (occurs), 120, 90 (between), 40 (clears)
        let t = feed(&mut r, &[60.0, 120.0, 180.0, 60.0, 30.0, 30.0]);
        assert_eq!(t, vec![(2, true), (5, false)]);
        let mut r = rtt(ThresholdType::Average(3));
        let e = r.observe_value(60.0).or(r.observe_value(120.0)).or(r.observe_value(180.0)).unwrap();
        assert_eq!(e.value, 120.0, "the event carries the average");
    }

    #[test]
    fn mos_is_lower_worse_and_boolean_elements() {
        let mut m = Reaction::new(ReactionConfig {
            element: Element::Mos,
            threshold_type: ThresholdType::Immediate,
            rising: 400.0,
            falling: 320.0,
            action: Action::Alert,
        });
        assert_eq!(feed(&mut m, &[430.0, 300.0, 350.0, 410.0]), vec![(1, true), (3, false)]);
        let e = ReactionEvent { element: Element::Mos, occurred: true, value: 300.0, action: Action::Alert };
        assert_eq!(e.syslog(5), "%RTT-3-IPSLATHRESHOLD: IP SLAs(5): Threshold below for mos");
        let mut t = Reaction::new(ReactionConfig {
            element: Element::Timeout,
            threshold_type: ThresholdType::Consecutive(2),
            rising: 0.0,
            falling: 0.0,
            action: Action::AlertAndTrigger,
        });
        assert_eq!(feed(&mut t, &[1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0]), vec![(3, true), (6, false)]);
        let e = ReactionEvent { element: Element::Timeout, occurred: true, value: 1.0, action: Action::Alert };
        assert_eq!(e.syslog(1), "%RTT-3-IPSLATHRESHOLD: IP SLAs(1): Threshold Occurred for timeout");
        let e = ReactionEvent { element: Element::JitterDsAvg, occurred: true, value: 1.0, action: Action::Alert };
        assert_eq!(e.syslog(10), "%RTT-3-IPSLATHRESHOLD: IP SLAs(10): Threshold exceeded for jitterDSAvg");
    }

    #[test]
    fn a_run_without_jitter_samples_leaves_a_jitter_alarm_standing() {
        use crate::ops::{OperationResult, Precision};
        use crate::stats::JitterStats;
        let run = |jitter_ns: Option<i64>| {
            let mut stats = JitterStats { sent: 10, ..Default::default() };
            if let Some(j) = jitter_ns {
                stats.received = 10;
                stats.rtt.add(1_000_000);
                stats.jitter_sd.positive.add(j);
                stats.jitter_ds.positive.add(j);
            }
            let code = if jitter_ns.is_some() { ReturnCode::Ok } else { ReturnCode::Timeout };
            OperationResult::new(code, stats, Precision::Us)
        };
        let mut r = Reaction::new(ReactionConfig {
            element: Element::JitterAvg,
            threshold_type: ThresholdType::Immediate,
            rising: 10.0,
            falling: 5.0,
            action: Action::Alert,
        });
        assert_eq!(r.observe(&run(Some(20_000_000))).map(|e| e.occurred), Some(true));
        // the target goes dark: no jitter, not a jitter of 0 that would clear the alarm
        let dark = run(None);
        assert_eq!((Element::JitterAvg.value(&dark), Element::Rtt.value(&dark)), (None, None));
        assert_eq!(r.observe(&dark), None);
        assert_eq!(r.observe(&run(Some(1_000_000))).map(|e| e.occurred), Some(false));
    }

    #[test]
    fn never_never_fires_and_keywords_parse() {
        let mut r = rtt(ThresholdType::Never);
        assert!(feed(&mut r, &[1e9; 5]).is_empty());
        assert_eq!(Element::from_keyword("JITTERdsAVG"), Some(Element::JitterDsAvg));
        assert_eq!(Element::from_keyword("nope"), None);
        assert!(!Element::Mos.applies(true, false, false), "mos needs a codec");
        assert!(!Element::PacketLossSd.applies(false, false, false), "loss SD needs a jitter operation");
        assert_eq!(Element::from_keyword("pathchange"), Some(Element::PathChange));
        assert!(Element::PathChange.applies(false, false, true));
        assert!(!Element::PathChange.applies(true, true, false), "only the path operations have a path");
    }

    #[test]
    fn path_change_occurs_on_a_changed_path_and_clears_on_a_steady_one() {
        use crate::ops::{OperationResult, Precision};
        let run = |changed: Option<bool>| OperationResult {
            path_changed: changed,
            ..OperationResult::new(ReturnCode::Ok, Default::default(), Precision::Us)
        };
        let mut r = Reaction::new(ReactionConfig {
            element: Element::PathChange,
            threshold_type: ThresholdType::Immediate,
            rising: 0.0,
            falling: 0.0,
            action: Action::Alert,
        });
        // the first run has nothing to compare with: no value, no event
        assert_eq!(Element::PathChange.value(&run(None)), None);
        assert_eq!(r.observe(&run(None)), None);
        assert_eq!(r.observe(&run(Some(false))), None);
        let e = r.observe(&run(Some(true))).unwrap();
        assert!(e.occurred);
        assert_eq!(e.syslog(5), "%RTT-3-IPSLATHRESHOLD: IP SLAs(5): Threshold Occurred for pathChange");
        assert_eq!(r.observe(&run(Some(true))), None, "only transitions are events");
        assert_eq!(r.observe(&run(Some(false))).map(|e| e.occurred), Some(false));
    }
}
