//! The agent's bookkeeping as a deterministic state machine fed `now` (STYLE.md anchor 13): which
//! operations are due ([`Engine::poll_due`]), what a finished run changes
//! ([`Engine::handle_result`]: reactions, their triggers, tracks, the route wishes that follow),
//! track delays ([`Engine::handle_timeout`]), when to wake next ([`Engine::poll_timeout`]), and
//! reloads that keep what did not change ([`Engine::reload`]).
//!
//! No clock, no thread, no socket, no store: the daemon (crates/agent/src/daemon.rs) is the
//! driver that runs the jobs, stores results and carries out the [`Output`]s; tests drive it on a
//! fake timeline. Randomness (random start and frequency) comes from a seed.

use crate::ops::OperationDef;
use crate::tracks::{Changed, TrackDef, TrackSet, TrackStatus};
use ipsla_core::due::DueQueue;
use ipsla_core::ops::{OperationResult, ReturnCode};
use ipsla_core::reaction::{Reaction, ReactionEvent};
use ipsla_core::schedule::{Due, Schedule, ScheduleConfig};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One operation's state.
#[derive(Debug)]
pub struct OpState {
    /// Its definition.
    pub def: OperationDef,
    /// Its schedule.
    pub schedule: Schedule,
    /// The control sequence of its last run.
    pub sequence: u32,
    reactions: Vec<Reaction>,
    /// Runs with return code OK (IOS "Number of successes").
    pub successes: u64,
    /// The other completed runs (IOS "Number of failures").
    pub failures: u64,
}

impl OpState {
    /// The elements of its reactions whose condition holds now (`rtt`, `packetLossSD`, ...).
    pub fn active_reactions(&self) -> Vec<&'static str> {
        self.reactions.iter().filter(|r| r.occurred()).map(|r| r.config().element.keyword()).collect()
    }
}

/// A run to start now.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The operation.
    pub id: u32,
    /// Its control sequence for this run.
    pub sequence: u32,
    /// The run's number: 1 for the operation's first run, counting every run started.
    pub run: u32,
}

/// What the driver carries out (log, store, export, alert, install routes).
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A run was due while the previous one was still going: skipped (MIB Busies).
    Busy {
        /// The operation.
        op: u32,
    },
    /// A reaction changed state.
    Reaction {
        /// The operation.
        op: u32,
        /// The transition.
        event: ReactionEvent,
    },
    /// A trigger reaction started another operation (from pending).
    Triggered {
        /// The operation whose reaction fired.
        by: u32,
        /// The operation started.
        op: u32,
    },
    /// A track changed state.
    Track(Changed),
    /// Every track's state after a change, for the route failover.
    TrackStates(BTreeMap<u32, bool>),
    /// A path operation found a different path than in its previous run.
    PathChange {
        /// The operation.
        op: u32,
    },
}

/// What a reload did to the operations.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReloadOps {
    /// Unchanged: schedule, statistics and reactions kept.
    pub kept: Vec<u32>,
    /// Redefined: restarted, statistics reset.
    pub changed: Vec<u32>,
    /// New.
    pub added: Vec<u32>,
    /// No longer configured.
    pub removed: Vec<u32>,
    /// The definitions that were changed or removed (their exported series are forgotten).
    pub forgotten: Vec<OperationDef>,
    /// The tracks were redefined.
    pub tracks_changed: bool,
}

/// The agent's state machine.
#[derive(Debug)]
pub struct Engine {
    ops: BTreeMap<u32, OpState>,
    tracks: TrackSet,
    track_defs: Vec<TrackDef>,
    queue: DueQueue,
    rng: u64,
}

impl Engine {
    /// Operations and tracks as configured; `wall` (time since the Unix epoch) resolves
    /// time-of-day starts, `seed` the random starts and frequencies.
    pub fn new(ops: &[OperationDef], tracks: Vec<TrackDef>, now: Instant, wall: Duration, seed: u64) -> Engine {
        let mut e = Engine {
            ops: BTreeMap::new(),
            tracks: TrackSet::new(tracks.clone()),
            track_defs: tracks,
            queue: DueQueue::new(),
            rng: seed | 1,
        };
        for d in ops {
            let s = e.op_state(d, now, wall);
            e.ops.insert(d.id, s);
        }
        e.rebuild_queue();
        e
    }

    /// SplitMix64: enough for spreading starts, and exact in tests.
    fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn op_state(&mut self, d: &OperationDef, now: Instant, wall: Duration) -> OpState {
        let cfg = ScheduleConfig { start: d.schedule.start.resolve(wall), ..d.schedule };
        OpState {
            def: d.clone(),
            schedule: Schedule::new(now, cfg, self.random()),
            // IOS: the control sequence starts small and rises by one per control message
            sequence: (self.random() & 0xff) as u32,
            reactions: d.reactions.iter().map(|r| Reaction::new(*r)).collect(),
            successes: 0,
            failures: 0,
        }
    }

    fn rebuild_queue(&mut self) {
        self.queue.rebuild(self.ops.iter().map(|(id, o)| (*id, o.schedule.poll_timeout())));
    }

    /// The runs due at `now` (each with its control sequence), and the busy skips.
    pub fn poll_due(&mut self, now: Instant) -> (Vec<Job>, Vec<Output>) {
        let (mut jobs, mut out) = (Vec::new(), Vec::new());
        for id in self.queue.pop_due(now) {
            let r = self.random();
            let Some(o) = self.ops.get_mut(&id) else { continue };
            match o.schedule.poll(now, r) {
                Due::Run => {
                    o.sequence = o.sequence.wrapping_add(1);
                    let run = u32::try_from(o.schedule.runs).unwrap_or(u32::MAX);
                    jobs.push(Job { id, sequence: o.sequence, run });
                }
                Due::Busy => out.push(Output::Busy { op: id }),
                Due::Nothing => {}
            }
            self.queue.push(id, o.schedule.poll_timeout());
        }
        (jobs, out)
    }

    /// The earliest time something is due: a run, a schedule change, a track delay.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.queue.next(), self.tracks.poll_timeout()].into_iter().flatten().min()
    }

    /// Track delays that ended by `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Output> {
        let changes = self.tracks.evaluate(now);
        self.track_outputs(changes)
    }

    fn track_outputs(&self, changes: Vec<Changed>) -> Vec<Output> {
        if changes.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<Output> = changes.into_iter().map(Output::Track).collect();
        out.push(Output::TrackStates(self.track_states()));
        out
    }

    /// A run of `id` ended: `result` is `None` when it could not start (a socket could not be
    /// opened), which counts neither as a success nor a failure. Feeds reactions (and their
    /// triggers) and tracks.
    pub fn handle_result(&mut self, now: Instant, id: u32, result: Option<&OperationResult>) -> Vec<Output> {
        let mut out = Vec::new();
        let Some(o) = self.ops.get_mut(&id) else { return out };
        o.schedule.finished();
        let Some(r) = result else { return out };
        if r.return_code == ReturnCode::Ok {
            o.successes += 1;
        } else {
            o.failures += 1;
        }
        if r.path_changed == Some(true) {
            out.push(Output::PathChange { op: id });
        }
        let events: Vec<ReactionEvent> = o.reactions.iter_mut().filter_map(|x| x.observe(r)).collect();
        let triggers = o.def.triggers.clone();
        let mut triggered = false;
        for event in events {
            let fire = event.occurred && event.action.triggers();
            out.push(Output::Reaction { op: id, event });
            if fire {
                for t in &triggers {
                    if let Some(target) = self.ops.get_mut(t) {
                        target.schedule.trigger(now);
                        out.push(Output::Triggered { by: id, op: *t });
                        triggered = true;
                    }
                }
            }
        }
        if triggered {
            self.rebuild_queue();
        }
        let changes = self.tracks.on_result(now, id, r.return_code);
        out.extend(self.track_outputs(changes));
        out
    }

    /// Applies a new configuration: an operation whose definition is unchanged keeps its
    /// schedule, statistics and reaction states; tracks are redefined (keeping the state of those
    /// that stay) when they changed.
    pub fn reload(
        &mut self,
        now: Instant,
        wall: Duration,
        ops: &[OperationDef],
        tracks: Vec<TrackDef>,
    ) -> (ReloadOps, Vec<Output>) {
        let mut sum = ReloadOps::default();
        let mut old = std::mem::take(&mut self.ops);
        for d in ops {
            let state = match old.remove(&d.id) {
                Some(o) if o.def == *d => {
                    sum.kept.push(d.id);
                    o
                }
                Some(o) => {
                    sum.changed.push(d.id);
                    sum.forgotten.push(o.def);
                    self.op_state(d, now, wall)
                }
                None => {
                    sum.added.push(d.id);
                    self.op_state(d, now, wall)
                }
            };
            self.ops.insert(d.id, state);
        }
        for (id, o) in old {
            sum.removed.push(id);
            sum.forgotten.push(o.def);
        }
        self.rebuild_queue();
        let mut out = Vec::new();
        sum.tracks_changed = tracks != self.track_defs;
        if sum.tracks_changed {
            self.tracks = self.tracks.redefine(tracks.clone());
            self.track_defs = tracks;
            let changes = self.tracks.evaluate(now);
            out = self.track_outputs(changes);
        }
        (sum, out)
    }

    /// The operations, in id order.
    pub fn ops(&self) -> impl Iterator<Item = &OpState> {
        self.ops.values()
    }

    /// One operation.
    pub fn op(&self, id: u32) -> Option<&OpState> {
        self.ops.get(&id)
    }

    /// Every track's status.
    pub fn track_status(&self) -> Vec<TrackStatus> {
        self.tracks.status()
    }

    /// Every track's state, for the route failover.
    pub fn track_states(&self) -> BTreeMap<u32, bool> {
        self.tracks.states().into_iter().map(|(id, up, _, _)| (id, up)).collect()
    }
}

#[cfg(test)]
mod tests;
