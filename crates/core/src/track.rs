//! Object tracking (IOS `track N ip sla OP [state|reachability]`, `delay up S down S`,
//! `track N list boolean and|or`, `track N list threshold weight`), sans-IO.
//!
//! - `state`: up when the operation's latest return code is OK; anything else (over threshold
//!   included) is down. `reachability`: up when OK or over threshold.
//! - `delay up/down`: a change is reported only once the new state has held for the delay; a
//!   flap back within the delay cancels it (IOS: "holds back Up and Down notifications").
//! - Lists combine other tracks: `and` (all up), `or` (any up), or weights with up/down
//!   thresholds (up when the sum of the up members' weights ≥ `up`, down when ≤ `down`, else
//!   unchanged).
//!
//! Tracks are evaluated in dependency order by the caller; a list reads its members' reported
//! states.

use crate::ops::ReturnCode;
use std::time::{Duration, Instant};

/// How an operation's return code maps to up/down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackMode {
    /// Up only on OK.
    State,
    /// Up on OK or over threshold.
    Reachability,
}

impl TrackMode {
    /// The raw state for a return code.
    pub fn up(self, code: ReturnCode) -> bool {
        match self {
            TrackMode::State => code == ReturnCode::Ok,
            TrackMode::Reachability => matches!(code, ReturnCode::Ok | ReturnCode::OverThreshold),
        }
    }
}

/// How a list track combines its members.
#[derive(Debug, Clone, PartialEq)]
pub enum ListKind {
    /// Up when every member is up.
    And,
    /// Up when any member is up.
    Or,
    /// Up when the up members' weights reach `up`, down when they fall to `down` or below.
    Weight {
        /// Weight of each member, in member order.
        weights: Vec<u32>,
        /// Threshold to go up.
        up: u32,
        /// Threshold to go down.
        down: u32,
    },
}

impl ListKind {
    /// The raw state from the members' states (`current` for the weight hysteresis band).
    pub fn evaluate(&self, members: &[bool], current: bool) -> bool {
        match self {
            ListKind::And => !members.is_empty() && members.iter().all(|m| *m),
            ListKind::Or => members.iter().any(|m| *m),
            ListKind::Weight { weights, up, down } => {
                let sum: u32 = members.iter().zip(weights).filter(|(m, _)| **m).map(|(_, w)| *w).sum();
                if sum >= *up {
                    true
                } else if sum <= *down {
                    false
                } else {
                    current
                }
            }
        }
    }
}

/// A reported change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackChange {
    /// The new state.
    pub up: bool,
    /// Changes so far (IOS `show track`: "N change(s)").
    pub changes: u64,
}

/// The delayed state of one track.
#[derive(Debug, Clone)]
pub struct Track {
    delay_up: Duration,
    delay_down: Duration,
    reported: bool,
    pending: Option<(bool, Instant)>,
    changes: u64,
}

impl Track {
    /// A track that starts down (IOS tracks start down until the first result).
    pub fn new(delay_up: Duration, delay_down: Duration) -> Self {
        Track { delay_up, delay_down, reported: false, pending: None, changes: 0 }
    }

    /// The reported state.
    pub fn up(&self) -> bool {
        self.reported
    }

    /// Changes reported so far.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// When a pending change becomes due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.map(|(up, since)| since + if up { self.delay_up } else { self.delay_down })
    }

    /// Feeds the raw state at `now`; returns a reported change, if one is due.
    pub fn update(&mut self, now: Instant, raw: bool) -> Option<TrackChange> {
        if raw == self.reported {
            // back to the reported state within the delay: the pending change is cancelled
            self.pending = None;
            return None;
        }
        match self.pending {
            Some((p, _)) if p == raw => {}
            _ => self.pending = Some((raw, now)),
        }
        self.handle_timeout(now)
    }

    /// Reports a pending change whose delay has passed.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<TrackChange> {
        let due = self.poll_timeout()?;
        if now < due {
            return None;
        }
        let (up, _) = self.pending.take()?;
        self.reported = up;
        self.changes += 1;
        Some(TrackChange { up, changes: self.changes })
    }
}

/// The IOS log line of a change: `%TRACK-6-STATE: 1 ip sla 1 reachability Up -> Down`.
pub fn syslog(track: u32, what: &str, up: bool) -> String {
    let (from, to) = if up { ("Down", "Up") } else { ("Up", "Down") };
    format!("%TRACK-6-STATE: {track} {what} {from} -> {to}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn modes() {
        assert!(TrackMode::State.up(ReturnCode::Ok));
        assert!(!TrackMode::State.up(ReturnCode::OverThreshold), "state lets a slow link fail over");
        assert!(TrackMode::Reachability.up(ReturnCode::OverThreshold));
        assert!(!TrackMode::Reachability.up(ReturnCode::Timeout));
    }

    #[test]
    fn without_delay_every_change_is_reported_once() {
        let t0 = Instant::now();
        let mut t = Track::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(t.update(t0, true), Some(TrackChange { up: true, changes: 1 }));
        assert_eq!(t.update(t0 + S, true), None, "transitions only");
        assert_eq!(t.update(t0 + S * 2, false), Some(TrackChange { up: false, changes: 2 }));
    }

    #[test]
    fn delay_down_holds_back_and_a_flap_cancels() {
        let t0 = Instant::now();
        let mut t = Track::new(Duration::ZERO, S * 10);
        t.update(t0, true);
        // down at 0 s, back up at 5 s: no report
        assert_eq!(t.update(t0 + S, false), None);
        assert_eq!(t.poll_timeout(), Some(t0 + S * 11));
        assert_eq!(t.update(t0 + S * 5, true), None);
        assert_eq!(t.poll_timeout(), None);
        assert!(t.up());
        // down for good: reported 10 s after it went down, not before
        assert_eq!(t.update(t0 + S * 20, false), None);
        assert_eq!(t.handle_timeout(t0 + S * 29), None);
        assert_eq!(t.handle_timeout(t0 + S * 30), Some(TrackChange { up: false, changes: 2 }));
    }

    #[test]
    fn lists() {
        assert!(ListKind::And.evaluate(&[true, true], false));
        assert!(!ListKind::And.evaluate(&[true, false], true));
        assert!(!ListKind::And.evaluate(&[], true));
        assert!(ListKind::Or.evaluate(&[false, true], false));
        let w = ListKind::Weight { weights: vec![10, 20, 30], up: 40, down: 15 };
        assert!(w.evaluate(&[true, false, true], false), "40 reaches up");
        assert!(w.evaluate(&[false, true, false], true), "20 is in the band: stays up");
        assert!(!w.evaluate(&[false, true, false], false), "and stays down");
        assert!(!w.evaluate(&[true, false, false], true), "10 is at or below down");
    }

    #[test]
    fn log_line() {
        assert_eq!(syslog(1, "ip sla 1 reachability", false), "%TRACK-6-STATE: 1 ip sla 1 reachability Up -> Down");
        assert_eq!(syslog(2, "list boolean and", true), "%TRACK-6-STATE: 2 list boolean and Down -> Up");
    }
}
