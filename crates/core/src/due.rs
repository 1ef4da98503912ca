//! The agent scheduler's queue: when each operation next needs [`Schedule::poll`], so that a pass
//! polls the operations that are due instead of all of them. With 10,000 operations spread over
//! a minute one is due every 6 ms; polling all of them on every wake-up was 1.7 million polls a
//! second, a third of the agent's CPU.
//!
//! The queue holds at most one entry per operation. The owner rebuilds it from every schedule
//! when the set of operations or their timeouts changed from outside the scheduler (a reload, a
//! reaction trigger), and may rebuild it periodically as a safety net.
//!
//! [`Schedule::poll`]: crate::schedule::Schedule::poll

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Operation ids ordered by their next poll time.
#[derive(Debug, Default, Clone)]
pub struct DueQueue {
    heap: BinaryHeap<Reverse<(Instant, u32)>>,
}

impl DueQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the contents with `(id, next poll time)` pairs; `None` (nothing to do until
    /// something from outside changes the schedule) is left out.
    pub fn rebuild(&mut self, items: impl IntoIterator<Item = (u32, Option<Instant>)>) {
        self.heap.clear();
        self.heap.extend(items.into_iter().filter_map(|(id, t)| t.map(|t| Reverse((t, id)))));
    }

    /// Queues `id` for `at`. The caller queues an id again only after [`DueQueue::pop_due`]
    /// returned it (or after a rebuild), which keeps one entry per id.
    pub fn push(&mut self, id: u32, at: Option<Instant>) {
        if let Some(t) = at {
            self.heap.push(Reverse((t, id)));
        }
    }

    /// Removes and returns the ids due at `now` (earliest first). Each is polled once by the
    /// caller and pushed back with its new timeout, so a schedule whose timeout is still due
    /// after its poll comes back on the next pass rather than looping in this one.
    pub fn pop_due(&mut self, now: Instant) -> Vec<u32> {
        let mut due = Vec::new();
        while let Some(Reverse((t, id))) = self.heap.peek().copied() {
            if t > now {
                break;
            }
            self.heap.pop();
            due.push(id);
        }
        due
    }

    /// The earliest queued time.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// Number of queued operations.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{Due, Schedule, ScheduleConfig, StartTime, group_offsets};
    use std::collections::BTreeMap;
    use std::time::Duration;

    #[test]
    fn pops_in_time_order_only_what_is_due() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut q = DueQueue::new();
        q.rebuild([(1, Some(ms(30))), (2, Some(ms(10))), (3, None), (4, Some(ms(20)))]);
        assert_eq!(q.len(), 3);
        assert_eq!(q.next(), Some(ms(10)));
        assert_eq!(q.pop_due(ms(5)), Vec::<u32>::new());
        assert_eq!(q.pop_due(ms(20)), vec![2, 4]);
        q.push(2, Some(ms(25)));
        assert_eq!(q.pop_due(ms(40)), vec![2, 1]);
        assert!(q.is_empty());
    }

    /// The queue drives 1000 grouped schedules on a fake clock exactly as polling every schedule
    /// at every step does: same runs at the same instants.
    #[test]
    fn polling_the_due_ones_equals_polling_all() {
        let t0 = Instant::now();
        let period = Duration::from_secs(60);
        let mk = || -> BTreeMap<u32, Schedule> {
            group_offsets(1000, period)
                .into_iter()
                .enumerate()
                .map(|(i, off)| {
                    let cfg = ScheduleConfig { frequency: period, start: StartTime::After(off), ..Default::default() };
                    (i as u32 + 1, Schedule::new(t0, cfg, 0))
                })
                .collect()
        };
        let (mut all, mut queued) = (mk(), mk());
        let mut q = DueQueue::new();
        q.rebuild(queued.iter().map(|(id, s)| (*id, s.poll_timeout())));
        let (mut runs_all, mut runs_queued) = (Vec::new(), Vec::new());
        // 150 s in 7 ms steps: every operation runs 2 or 3 times
        let mut now = t0;
        while now < t0 + Duration::from_secs(150) {
            for (id, s) in all.iter_mut() {
                if s.poll(now, 0) == Due::Run {
                    runs_all.push((now, *id));
                    s.finished();
                }
            }
            for id in q.pop_due(now) {
                let s = queued.get_mut(&id).unwrap();
                if s.poll(now, 0) == Due::Run {
                    runs_queued.push((now, id));
                    s.finished();
                }
                q.push(id, s.poll_timeout());
            }
            now += Duration::from_millis(7);
        }
        assert_eq!(runs_all.len(), 1000 * 2 + 500, "runs at 0..60 s offsets, every 60 s, for 150 s");
        assert_eq!(runs_queued, runs_all);
        assert_eq!(q.len(), 1000);
    }
}
