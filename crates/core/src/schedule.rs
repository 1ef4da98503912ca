//! When an operation runs: IOS `ip sla schedule` and `ip sla group schedule` semantics, sans-IO.
//!
//! - `frequency` between run starts (default 60 s); a run still going when the next is due is not
//!   started twice: the due run is skipped and counted as *busy* (CISCO-RTTMON-MIB `Busies`).
//! - `life`: how long the operation stays active after it starts (default 3600 s; `None` =
//!   forever). When it ends the operation becomes inactive.
//! - `start`: `now`, `pending` (configured but idle until triggered), `after D`, or `random D`
//!   (a uniformly random delay up to D, which delays only the first run).
//! - `ageout`: how long an inactive (or pending) operation is kept before its configuration is
//!   deleted (IOS); `None` = never.
//! - `random_frequency`: IOS `frequency range A-B` of the group scheduler; each run picks a
//!   uniformly random frequency in the range.
//!
//! Randomness comes from the caller (`rand` in [`Schedule::new`], `next_random` in
//! [`Schedule::poll`]) so that tests are exact.

use std::time::{Duration, Instant};

/// IOS `start-time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartTime {
    /// Start at once.
    Now,
    /// Wait for a trigger.
    Pending,
    /// Start after this delay.
    After(Duration),
    /// Start after a uniformly random delay up to this.
    Random(Duration),
    /// Start at this time of day (UTC, since midnight): IOS `start-time hh:mm[:ss]`, the next
    /// time the clock shows it. Turned into [`StartTime::After`] by [`StartTime::resolve`].
    At(Duration),
}

/// One day.
pub const DAY: Duration = Duration::from_secs(86_400);

impl StartTime {
    /// A time-of-day start as a delay from `wall` (time since the Unix epoch, UTC); other starts
    /// unchanged. A time that has passed today means tomorrow; the current second means now.
    pub fn resolve(self, wall: Duration) -> StartTime {
        match self {
            StartTime::At(tod) => {
                let today = Duration::from_nanos((wall.as_nanos() % DAY.as_nanos()) as u64);
                let tod = Duration::from_nanos((tod.as_nanos() % DAY.as_nanos()) as u64);
                if tod >= today { StartTime::After(tod - today) } else { StartTime::After(DAY - (today - tod)) }
            }
            other => other,
        }
    }
}

/// One operation's schedule parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// Time between run starts.
    pub frequency: Duration,
    /// Random frequency range (group scheduler), overriding `frequency` when set.
    pub random_frequency: Option<(Duration, Duration)>,
    /// Active life; `None` = forever.
    pub life: Option<Duration>,
    /// Start.
    pub start: StartTime,
    /// Delete after this long inactive; `None` = never.
    pub ageout: Option<Duration>,
    /// Start again every day at the same time for `life` (IOS `recurring`; needs a life under
    /// one day).
    pub recurring: bool,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            frequency: Duration::from_secs(60),
            random_frequency: None,
            life: Some(Duration::from_secs(3600)),
            start: StartTime::Pending,
            ageout: None,
            recurring: false,
        }
    }
}

/// Where an operation is in its life (CISCO-RTTMON-MIB `rttMonCtrlOperState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperState {
    /// Configured, not running.
    Pending,
    /// Running on its schedule.
    Active,
    /// Its life ended.
    Inactive,
    /// Aged out: the configuration is to be deleted.
    AgedOut,
}

/// What [`Schedule::poll`] says to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing now.
    Nothing,
    /// Start a run now.
    Run,
    /// A run was due but the previous one is still going: skipped, counted busy.
    Busy,
}

/// The schedule state of one operation.
#[derive(Debug, Clone)]
pub struct Schedule {
    cfg: ScheduleConfig,
    state: OperState,
    next_run: Option<Instant>,
    life_ends: Option<Instant>,
    /// First run of the current life (a recurring schedule starts again one day later).
    life_started: Option<Instant>,
    idle_since: Instant,
    running: bool,
    /// Runs started.
    pub runs: u64,
    /// Runs skipped because the previous was still going.
    pub busies: u64,
}

fn uniform(lo: Duration, hi: Duration, r: u64) -> Duration {
    if hi <= lo {
        return lo;
    }
    let span = (hi - lo).as_nanos() as u64;
    lo + Duration::from_nanos(r % (span + 1))
}

impl Schedule {
    /// A schedule created (configured) at `now`; `rand` is a random value for `start random`.
    pub fn new(now: Instant, cfg: ScheduleConfig, rand: u64) -> Self {
        let mut s = Schedule {
            cfg,
            state: OperState::Pending,
            next_run: None,
            life_ends: None,
            life_started: None,
            idle_since: now,
            running: false,
            runs: 0,
            busies: 0,
        };
        match cfg.start {
            StartTime::Now => s.activate(now, now),
            StartTime::After(d) => s.activate(now, now + d),
            StartTime::Random(d) => s.activate(now, now + uniform(Duration::ZERO, d, rand)),
            // unresolved (no wall clock given): treat as a delay from now
            StartTime::At(d) => s.activate(now, now + d),
            StartTime::Pending => {}
        }
        s
    }

    fn activate(&mut self, _now: Instant, first: Instant) {
        self.state = OperState::Active;
        self.next_run = Some(first);
        self.life_started = Some(first);
        self.life_ends = self.cfg.life.map(|l| first + l);
    }

    /// Moves a pending (or inactive) operation to active, starting now: what a reaction trigger
    /// does (IOS `ip sla reaction-trigger`). No effect on an active one.
    pub fn trigger(&mut self, now: Instant) {
        if matches!(self.state, OperState::Pending | OperState::Inactive) {
            self.activate(now, now);
        }
    }

    /// State.
    pub fn state(&self) -> OperState {
        self.state
    }

    /// Whether a run is in progress.
    pub fn running(&self) -> bool {
        self.running
    }

    /// When the current life began (or begins: a start `after` or `random` not reached yet);
    /// `None` while pending.
    pub fn life_started(&self) -> Option<Instant> {
        self.life_started
    }

    /// What is left of the life at `now` (IOS "Operation time to live"): `None` = forever; the
    /// whole life while pending; zero once it has ended.
    pub fn time_to_live(&self, now: Instant) -> Option<Duration> {
        let life = self.cfg.life?;
        Some(match self.life_ends {
            Some(end) => end.saturating_duration_since(now).min(life),
            None => life,
        })
    }

    /// The next time [`Schedule::poll`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            OperState::Active => self.next_run,
            OperState::Inactive if self.cfg.recurring => self.next_life(),
            OperState::Pending | OperState::Inactive => self.cfg.ageout.map(|a| self.idle_since + a),
            OperState::AgedOut => None,
        }
    }

    /// When a recurring schedule's next daily life starts.
    fn next_life(&self) -> Option<Instant> {
        self.life_started.map(|t| t + DAY)
    }

    /// Advances to `now`. `next_random` supplies randomness for a random frequency.
    pub fn poll(&mut self, now: Instant, next_random: u64) -> Due {
        if self.state == OperState::Inactive
            && self.cfg.recurring
            && let Some(mut next) = self.next_life()
        {
            if now < next {
                return Due::Nothing;
            }
            // a whole day missed (the process was stopped): the next life is today's slot
            while next + self.cfg.life.unwrap_or(DAY) <= now {
                next += DAY;
            }
            self.activate(now, next);
        }
        match self.state {
            OperState::Pending | OperState::Inactive => {
                if self.cfg.ageout.is_some_and(|a| now >= self.idle_since + a) {
                    self.state = OperState::AgedOut;
                }
                return Due::Nothing;
            }
            OperState::AgedOut => return Due::Nothing,
            OperState::Active => {}
        }
        let Some(next) = self.next_run else { return Due::Nothing };
        if now < next {
            return Due::Nothing;
        }
        if self.life_ends.is_some_and(|end| next >= end) {
            self.state = OperState::Inactive;
            self.next_run = None;
            // ageout counts from the end of the life
            self.idle_since = self.life_ends.unwrap_or(now);
            return Due::Nothing;
        }
        let freq = match self.cfg.random_frequency {
            Some((lo, hi)) => uniform(lo, hi, next_random),
            None => self.cfg.frequency,
        };
        // the next slot after `now` on the schedule grid (missed slots are not replayed)
        let mut n = next + freq.max(Duration::from_millis(1));
        while n <= now {
            n += freq.max(Duration::from_millis(1));
        }
        self.next_run = Some(n);
        if self.running {
            self.busies += 1;
            Due::Busy
        } else {
            self.running = true;
            self.runs += 1;
            Due::Run
        }
    }

    /// The run started by the last [`Due::Run`] finished.
    pub fn finished(&mut self) {
        self.running = false;
    }
}

/// Start offsets of `n` operations spread evenly over `period` (IOS `ip sla group schedule`:
/// "operations start evenly spread across the schedule period").
pub fn group_offsets(n: usize, period: Duration) -> Vec<Duration> {
    if n == 0 {
        return Vec::new();
    }
    let step = period / n as u32;
    (0..n).map(|i| step * i as u32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn cfg(start: StartTime, freq: u64, life: Option<u64>) -> ScheduleConfig {
        ScheduleConfig {
            frequency: S * freq as u32,
            random_frequency: None,
            life: life.map(|l| S * l as u32),
            start,
            ageout: None,
            recurring: false,
        }
    }

    #[test]
    fn runs_every_frequency_for_its_life() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, cfg(StartTime::Now, 60, Some(180)), 0);
        let mut runs = Vec::new();
        let mut t = t0;
        while let Some(next) = s.poll_timeout() {
            t = t.max(next);
            if s.poll(t, 0) == Due::Run {
                runs.push((t - t0).as_secs());
                s.finished();
            }
            if t - t0 > S * 1000 {
                break;
            }
        }
        assert_eq!(runs, vec![0, 60, 120], "life 180 s: the run due at 180 s is past the life");
        assert_eq!(s.state(), OperState::Inactive);
    }

    #[test]
    fn busy_when_the_previous_run_is_still_going() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, cfg(StartTime::Now, 10, None), 0);
        assert_eq!(s.poll(t0, 0), Due::Run);
        assert_eq!(s.poll(t0 + S * 10, 0), Due::Busy, "still running at the next slot");
        s.finished();
        assert_eq!(s.poll(t0 + S * 20, 0), Due::Run);
        assert_eq!((s.runs, s.busies), (2, 1));
    }

    #[test]
    fn pending_waits_for_a_trigger_after_and_random_delay_the_start() {
        let t0 = Instant::now();
        let mut p = Schedule::new(t0, cfg(StartTime::Pending, 10, None), 0);
        assert_eq!(p.poll(t0 + S * 100, 0), Due::Nothing);
        assert_eq!(p.state(), OperState::Pending);
        p.trigger(t0 + S * 100);
        assert_eq!(p.poll(t0 + S * 100, 0), Due::Run);

        let a = Schedule::new(t0, cfg(StartTime::After(S * 30), 10, None), 0);
        assert_eq!(a.poll_timeout(), Some(t0 + S * 30));
        // random 5 s with random value 2_500_000_000 ns → first run at 2.5 s
        let r = Schedule::new(t0, cfg(StartTime::Random(S * 5), 10, None), 2_500_000_000);
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_millis(2500)));
    }

    #[test]
    fn start_at_a_time_of_day_is_the_next_time_the_clock_shows_it() {
        let h = |x: u64| S * (x * 3600) as u32;
        // wall clock: day 20000, 10:00:00 UTC
        let wall = DAY * 20_000 + h(10);
        assert_eq!(StartTime::At(h(14)).resolve(wall), StartTime::After(h(4)));
        assert_eq!(StartTime::At(h(9)).resolve(wall), StartTime::After(h(23)), "passed today: tomorrow");
        assert_eq!(StartTime::At(h(10)).resolve(wall), StartTime::After(Duration::ZERO));
        assert_eq!(StartTime::Now.resolve(wall), StartTime::Now);
    }

    #[test]
    fn recurring_starts_again_every_day_for_its_life() {
        let t0 = Instant::now();
        let mut c = cfg(StartTime::After(S * 100), 600, Some(1800));
        c.recurring = true;
        let mut s = Schedule::new(t0, c, 0);
        let mut runs = Vec::new();
        while let Some(next) = s.poll_timeout() {
            if next - t0 > DAY * 2 + S * 3600 {
                break;
            }
            if s.poll(next, 0) == Due::Run {
                runs.push((next - t0).as_secs());
                s.finished();
            }
        }
        let day = DAY.as_secs();
        assert_eq!(
            runs,
            vec![100, 700, 1300, 100 + day, 700 + day, 1300 + day, 100 + 2 * day, 700 + 2 * day, 1300 + 2 * day],
            "three runs in each 30-minute life, one life a day at the same time"
        );
        assert_eq!(s.state(), OperState::Inactive);
    }

    #[test]
    fn missed_slots_are_not_replayed() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, cfg(StartTime::Now, 10, None), 0);
        assert_eq!(s.poll(t0, 0), Due::Run);
        s.finished();
        // the process was stopped for 35 s: one run, the next slot at 40 s
        assert_eq!(s.poll(t0 + S * 35, 0), Due::Run);
        assert_eq!(s.poll_timeout(), Some(t0 + S * 40));
    }

    #[test]
    fn ageout_after_the_life_ends() {
        let t0 = Instant::now();
        let mut c = cfg(StartTime::Now, 10, Some(20));
        c.ageout = Some(S * 100);
        let mut s = Schedule::new(t0, c, 0);
        assert_eq!(s.poll(t0, 0), Due::Run);
        s.finished();
        assert_eq!(s.time_to_live(t0 + S * 5), Some(S * 15));
        assert_eq!(s.poll(t0 + S * 10, 0), Due::Run);
        s.finished();
        assert_eq!(s.poll(t0 + S * 20, 0), Due::Nothing);
        assert_eq!(s.state(), OperState::Inactive);
        assert_eq!(s.time_to_live(t0 + S * 21), Some(Duration::ZERO));
        let later = Schedule::new(t0, cfg(StartTime::After(S * 30), 10, Some(20)), 0);
        assert_eq!(later.time_to_live(t0), Some(S * 20), "the whole life before it starts");
        assert_eq!(Schedule::new(t0, cfg(StartTime::Now, 10, None), 0).time_to_live(t0), None);
        // ageout counts from the end of life (20 s): deleted at 120 s, not before
        assert_eq!(s.poll_timeout(), Some(t0 + S * 120));
        s.poll(t0 + S * 119, 0);
        assert_eq!(s.state(), OperState::Inactive);
        s.poll(t0 + S * 120, 0);
        assert_eq!(s.state(), OperState::AgedOut);
    }

    #[test]
    fn random_frequency_stays_in_range() {
        let t0 = Instant::now();
        let mut c = cfg(StartTime::Now, 60, None);
        c.random_frequency = Some((S * 80, S * 100));
        let mut s = Schedule::new(t0, c, 0);
        let mut t = t0;
        let mut gaps = Vec::new();
        let mut last: Option<Instant> = None;
        for r in [0u64, 10_000_000_000, 20_000_000_000, 7_000_000_000, 999] {
            t = s.poll_timeout().unwrap();
            assert_eq!(s.poll(t, r), Due::Run);
            s.finished();
            if let Some(l) = last {
                gaps.push((t - l).as_secs());
            }
            last = Some(t);
        }
        assert_eq!(gaps, vec![80, 90, 100, 87]);
        let _ = t;
    }

    #[test]
    fn group_spreads_evenly() {
        // 20 operations over 60 s start 3 s apart (IOS group-schedule example)
        let o = group_offsets(20, S * 60);
        assert_eq!(o[1], S * 3);
        assert_eq!(o[19], S * 57);
        assert!(group_offsets(0, S).is_empty());
    }
}
