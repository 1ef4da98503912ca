//! `[[track]]` tables: configuration and evaluation of the tracks (`core::track`) from operation
//! results, in definition order (a list may only name tracks defined before it, so there are no
//! cycles).

use crate::config::{ConfigError, Result, parse_duration};
use ipsla_core::ops::ReturnCode;
use ipsla_core::track::{ListKind, Track, TrackMode};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One `[[track]]` as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct TrackFile {
    pub id: u32,
    /// `track N ip sla OP`
    pub operation: Option<u32>,
    /// state | reachability (default state)
    pub mode: Option<String>,
    /// `track N list and|or|weight`
    pub list: Option<String>,
    #[serde(default)]
    pub members: Vec<u32>,
    #[serde(default)]
    pub weights: Vec<u32>,
    pub up: Option<u32>,
    pub down: Option<u32>,
    pub delay_up: Option<String>,
    pub delay_down: Option<String>,
}

/// What a track follows.
#[derive(Debug, Clone, PartialEq)]
pub enum TrackSource {
    /// An operation's return code.
    Operation {
        /// Operation number.
        op: u32,
        /// state or reachability.
        mode: TrackMode,
    },
    /// Other tracks.
    List {
        /// How they combine.
        kind: ListKind,
        /// Member track ids.
        members: Vec<u32>,
    },
}

/// A validated track.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackDef {
    /// Track number.
    pub id: u32,
    /// What it follows.
    pub source: TrackSource,
    /// Delay before reporting up.
    pub delay_up: Duration,
    /// Delay before reporting down.
    pub delay_down: Duration,
}

impl TrackDef {
    /// The words IOS puts in the log line after the track number.
    pub fn describe(&self) -> String {
        match &self.source {
            TrackSource::Operation { op, mode } => {
                format!("ip sla {op} {}", if *mode == TrackMode::State { "state" } else { "reachability" })
            }
            TrackSource::List { kind, .. } => match kind {
                ListKind::And => "list boolean and".into(),
                ListKind::Or => "list boolean or".into(),
                ListKind::Weight { .. } => "list threshold weight".into(),
            },
        }
    }
}

/// Validates the tracks against the operation ids.
pub fn validate(files: &[TrackFile], ops: &[u32]) -> Result<Vec<TrackDef>> {
    let mut defs: Vec<TrackDef> = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let k = |f: &str| format!("track[{i}].{f}");
        if defs.iter().any(|d| d.id == f.id) {
            return Err(ConfigError(format!("{}: {} is already used", k("id"), f.id)));
        }
        let dur = |name: &str, v: &Option<String>| match v {
            Some(s) => parse_duration(&k(name), s, Duration::ZERO, Duration::from_secs(180)),
            None => Ok(Duration::ZERO),
        };
        let source = match (f.operation, f.list.as_deref()) {
            (Some(op), None) => {
                if !ops.contains(&op) {
                    return Err(ConfigError(format!("{}: there is no operation {op}", k("operation"))));
                }
                let mode = match f.mode.as_deref() {
                    None | Some("state") => TrackMode::State,
                    Some("reachability") => TrackMode::Reachability,
                    Some(m) => {
                        return Err(ConfigError(format!(
                            "{}: \"{m}\" is not allowed; allowed: state, reachability",
                            k("mode")
                        )));
                    }
                };
                TrackSource::Operation { op, mode }
            }
            (None, Some(l)) => {
                if f.members.is_empty() {
                    return Err(ConfigError(format!("{}: a list needs members", k("members"))));
                }
                if let Some(m) = f.members.iter().find(|m| !defs.iter().any(|d| d.id == **m)) {
                    return Err(ConfigError(format!("{}: track {m} is not defined before this one", k("members"))));
                }
                let kind = match l {
                    "and" => ListKind::And,
                    "or" => ListKind::Or,
                    "weight" => {
                        if f.weights.len() != f.members.len() {
                            return Err(ConfigError(format!("{}: one weight per member", k("weights"))));
                        }
                        let (up, down) = (f.up.unwrap_or(1), f.down.unwrap_or(0));
                        if down >= up {
                            return Err(ConfigError(format!("{}: down {down} must be below up {up}", k("down"))));
                        }
                        ListKind::Weight { weights: f.weights.clone(), up, down }
                    }
                    other => {
                        return Err(ConfigError(format!(
                            "{}: \"{other}\" is not allowed; allowed: and, or, weight",
                            k("list")
                        )));
                    }
                };
                TrackSource::List { kind, members: f.members.clone() }
            }
            _ => return Err(ConfigError(format!("track[{i}]: set exactly one of `operation` or `list`"))),
        };
        defs.push(TrackDef {
            id: f.id,
            source,
            delay_up: dur("delay_up", &f.delay_up)?,
            delay_down: dur("delay_down", &f.delay_down)?,
        });
    }
    Ok(defs)
}

/// A reported change of a track.
#[derive(Debug, Clone, PartialEq)]
pub struct Changed {
    /// Track number.
    pub id: u32,
    /// New state.
    pub up: bool,
    /// The IOS log line.
    pub text: String,
}

/// What `show track` prints of one track.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackStatus {
    /// Track number.
    pub id: u32,
    /// Reported state.
    pub up: bool,
    /// Changes reported so far.
    pub changes: u64,
    /// When the last change was reported.
    pub last_change: Option<Instant>,
    /// The definition.
    pub def: TrackDef,
    /// The followed operation's latest return code (operation tracks that have seen a run).
    pub last_code: Option<ReturnCode>,
}

/// The tracks of an agent and their states.
#[derive(Debug, Clone)]
pub struct TrackSet {
    defs: Vec<TrackDef>,
    tracks: Vec<Track>,
    raw: Vec<bool>,
    last_code: BTreeMap<u32, ReturnCode>,
    last_change: Vec<Option<Instant>>,
}

impl TrackSet {
    /// All tracks down.
    pub fn new(defs: Vec<TrackDef>) -> Self {
        let tracks = defs.iter().map(|d| Track::new(d.delay_up, d.delay_down)).collect();
        let raw = vec![false; defs.len()];
        let last_change = vec![None; defs.len()];
        TrackSet { defs, tracks, raw, last_code: BTreeMap::new(), last_change }
    }

    /// Every track's state, for `show track`.
    pub fn status(&self) -> Vec<TrackStatus> {
        self.defs
            .iter()
            .zip(&self.tracks)
            .zip(&self.last_change)
            .map(|((d, t), at)| TrackStatus {
                id: d.id,
                up: t.up(),
                changes: t.changes(),
                last_change: *at,
                def: d.clone(),
                last_code: match d.source {
                    TrackSource::Operation { op, .. } => self.last_code.get(&op).copied(),
                    TrackSource::List { .. } => None,
                },
            })
            .collect()
    }

    /// The same tracks under new definitions (a reload): the latest return code of every
    /// operation is kept, and so is the state of every track whose definition did not change.
    pub fn redefine(&self, defs: Vec<TrackDef>) -> TrackSet {
        let mut next = TrackSet::new(defs);
        next.last_code = self.last_code.clone();
        for (i, d) in next.defs.iter().enumerate() {
            if let Some(j) = self.defs.iter().position(|o| o == d) {
                next.tracks[i] = self.tracks[j].clone();
                next.raw[i] = self.raw[j];
                next.last_change[i] = self.last_change[j];
            }
        }
        next
    }

    /// (id, up, changes, description) of every track.
    pub fn states(&self) -> Vec<(u32, bool, u64, String)> {
        self.defs.iter().zip(&self.tracks).map(|(d, t)| (d.id, t.up(), t.changes(), d.describe())).collect()
    }

    /// The earliest pending delay.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.tracks.iter().filter_map(Track::poll_timeout).min()
    }

    /// An operation finished with `code`.
    pub fn on_result(&mut self, now: Instant, op: u32, code: ReturnCode) -> Vec<Changed> {
        self.last_code.insert(op, code);
        self.evaluate(now)
    }

    /// Re-evaluates everything at `now` (delays that have passed, lists).
    pub fn evaluate(&mut self, now: Instant) -> Vec<Changed> {
        let mut out = Vec::new();
        for i in 0..self.defs.len() {
            let raw = match &self.defs[i].source {
                TrackSource::Operation { op, mode } => self.last_code.get(op).is_some_and(|c| mode.up(*c)),
                TrackSource::List { kind, members } => {
                    let states: Vec<bool> = members
                        .iter()
                        .map(|m| self.defs.iter().position(|d| d.id == *m).is_some_and(|j| self.tracks[j].up()))
                        .collect();
                    kind.evaluate(&states, self.raw[i])
                }
            };
            self.raw[i] = raw;
            let change = if raw != self.tracks[i].up() || self.tracks[i].poll_timeout().is_some() {
                self.tracks[i].update(now, raw)
            } else {
                None
            };
            if let Some(c) = change {
                self.last_change[i] = Some(now);
                out.push(Changed {
                    id: self.defs[i].id,
                    up: c.up,
                    text: ipsla_core::track::syslog(self.defs[i].id, &self.defs[i].describe(), c.up),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs(toml_text: &str) -> Result<Vec<TrackDef>> {
        #[derive(Deserialize)]
        struct F {
            track: Vec<TrackFile>,
        }
        let f: F = toml::from_str(toml_text).unwrap();
        validate(&f.track, &[1, 2])
    }

    #[test]
    fn operation_and_list_tracks() {
        let d = defs("[[track]]\nid = 1\noperation = 1\nmode = \"reachability\"\n[[track]]\nid = 2\noperation = 2\n[[track]]\nid = 3\nlist = \"and\"\nmembers = [1, 2]").unwrap();
        let mut t = TrackSet::new(d);
        let t0 = Instant::now();
        let c = t.on_result(t0, 1, ReturnCode::OverThreshold);
        assert_eq!(c.iter().map(|c| (c.id, c.up)).collect::<Vec<_>>(), vec![(1, true)]);
        assert_eq!(c[0].text, "%TRACK-6-STATE: 1 ip sla 1 reachability Down -> Up");
        let st = t.status();
        assert_eq!((st[0].last_change, st[0].last_code), (Some(t0), Some(ReturnCode::OverThreshold)));
        assert_eq!((st[1].last_change, st[1].last_code, st[2].last_code), (None, None, None));
        assert_eq!(t.redefine(t.defs.clone()).status()[0].last_change, Some(t0), "a reload keeps it");
        let c = t.on_result(t0, 2, ReturnCode::Ok);
        assert_eq!(
            c.iter().map(|c| (c.id, c.up)).collect::<Vec<_>>(),
            vec![(2, true), (3, true)],
            "the list follows in the same pass"
        );
        let c = t.on_result(t0, 2, ReturnCode::OverThreshold);
        assert_eq!(
            c.iter().map(|c| (c.id, c.up)).collect::<Vec<_>>(),
            vec![(2, false), (3, false)],
            "state mode: over threshold is down"
        );
    }

    #[test]
    fn delays_report_later() {
        let d = defs("[[track]]\nid = 1\noperation = 1\ndelay_down = \"10s\"").unwrap();
        let mut t = TrackSet::new(d);
        let t0 = Instant::now();
        assert_eq!(t.on_result(t0, 1, ReturnCode::Ok).len(), 1);
        assert!(t.on_result(t0 + Duration::from_secs(1), 1, ReturnCode::Timeout).is_empty());
        assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(11)));
        assert!(t.evaluate(t0 + Duration::from_secs(10)).is_empty());
        let c = t.evaluate(t0 + Duration::from_secs(11));
        assert_eq!((c[0].id, c[0].up), (1, false));
    }

    #[test]
    fn config_errors() {
        assert!(
            defs("[[track]]\nid = 1\noperation = 9")
                .unwrap_err()
                .to_string()
                .contains("track[0].operation: there is no operation 9")
        );
        assert!(
            defs("[[track]]\nid = 1\nlist = \"and\"\nmembers = [2]")
                .unwrap_err()
                .to_string()
                .contains("track 2 is not defined before")
        );
        assert!(
            defs("[[track]]\nid = 1\noperation = 1\nmode = \"alive\"")
                .unwrap_err()
                .to_string()
                .contains("allowed: state, reachability")
        );
        assert!(defs("[[track]]\nid = 1").unwrap_err().to_string().contains("exactly one of"));
        assert!(
            defs("[[track]]\nid = 1\noperation = 1\ndelay_up = \"5m\"")
                .unwrap_err()
                .to_string()
                .contains("track[0].delay_up")
        );
    }
}
