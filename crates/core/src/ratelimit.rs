//! Per-key token buckets and a log limiter, driven by a caller-supplied `now`.
//!
//! Hand-written rather than `governor` because the responder core is sans-IO: every decision takes
//! `now` from the caller so that tests run on a fake timeline.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets keyed by source, with a bound on how many keys are tracked.
#[derive(Debug)]
pub struct KeyedLimiter<K> {
    rate: f64,
    burst: f64,
    max_keys: usize,
    buckets: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Copy> KeyedLimiter<K> {
    /// `rate` tokens per second, at most `burst` saved; at most `max_keys` sources tracked.
    pub fn new(rate: f64, burst: u32, max_keys: usize) -> Self {
        KeyedLimiter { rate, burst: f64::from(burst.max(1)), max_keys: max_keys.max(1), buckets: HashMap::new() }
    }

    /// Takes one token for `key`; false when the key is over its rate.
    pub fn check(&mut self, now: Instant, key: K) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_keys {
            // Forget sources whose bucket has refilled: they are indistinguishable from new ones.
            let (rate, burst) = (self.rate, self.burst);
            self.buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst);
            if self.buckets.len() >= self.max_keys {
                // Every tracked source is active: refuse new ones rather than grow without bound.
                return false;
            }
        }
        let b = self.buckets.entry(key).or_insert(Bucket { tokens: self.burst, last: now });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Number of sources tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// Lets through at most `per_window` events per key per `window`, and reports how many were
/// suppressed when the next window opens. Used to log rejections at a sane rate.
#[derive(Debug)]
pub struct LogLimiter<K> {
    window: Duration,
    per_window: u32,
    state: HashMap<K, (Instant, u32, u64)>,
}

impl<K: Hash + Eq + Copy> LogLimiter<K> {
    /// A limiter allowing `per_window` events per `window` for each key.
    pub fn new(window: Duration, per_window: u32) -> Self {
        LogLimiter { window, per_window, state: HashMap::new() }
    }

    /// `Some(suppressed_before)` when this event may be logged, `None` when it must be dropped.
    pub fn allow(&mut self, now: Instant, key: K) -> Option<u64> {
        let e = self.state.entry(key).or_insert((now, 0, 0));
        if now.saturating_duration_since(e.0) >= self.window {
            let suppressed = e.2;
            *e = (now, 1, 0);
            return Some(suppressed);
        }
        if e.1 < self.per_window {
            e.1 += 1;
            Some(0)
        } else {
            e.2 += 1;
            None
        }
    }
}

/// Rejections worth an operator's attention (failed authentication, bad HMACs, replays, refused
/// control messages), logged at a bounded rate: at most [`RejectLog::PER_WINDOW`] lines per
/// reason per [`RejectLog::WINDOW`], then one line with how many were not logged. A flood of
/// forged packets costs a handful of log lines, while the counters keep the exact numbers.
#[derive(Debug)]
pub struct RejectLog(LogLimiter<&'static str>);

impl Default for RejectLog {
    fn default() -> Self {
        RejectLog(LogLimiter::new(Self::WINDOW, Self::PER_WINDOW))
    }
}

impl RejectLog {
    /// Length of one window.
    pub const WINDOW: Duration = Duration::from_secs(10);
    /// Lines per reason per window.
    pub const PER_WINDOW: u32 = 5;

    /// Logs `what` from `peer` as a warning unless `reason` has had its lines in this window.
    /// Returns whether it was logged.
    pub fn warn(&mut self, now: Instant, reason: &'static str, peer: std::net::SocketAddr, what: &str) -> bool {
        let Some(suppressed) = self.allow(now, reason) else { return false };
        if suppressed > 0 {
            tracing::warn!(reason, suppressed, "{what}: {suppressed} more not logged in the last window");
        }
        tracing::warn!(%peer, reason, "{what}");
        true
    }

    /// For callers that log their own line: `Some(suppressed since the last line)` when this
    /// event of `reason` may be logged.
    pub fn allow(&mut self, now: Instant, reason: &'static str) -> Option<u64> {
        self.0.allow(now, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut l = KeyedLimiter::new(10.0, 5, 100);
        let ok = (0..8).filter(|_| l.check(t0, 1u8)).count();
        assert_eq!(ok, 5);
        // 0.25 s later, 2.5 tokens have come back: two more pass.
        let t1 = t0 + Duration::from_millis(250);
        let ok = (0..8).filter(|_| l.check(t1, 1u8)).count();
        assert_eq!(ok, 2);
        // another key is independent
        assert!(l.check(t1, 2u8));
    }

    #[test]
    fn bounded_keys() {
        let t0 = Instant::now();
        let mut l = KeyedLimiter::new(1.0, 2, 3);
        for k in 0..3u8 {
            assert!(l.check(t0, k));
        }
        // all three are mid-bucket: a fourth source is refused, the table does not grow
        assert!(!l.check(t0, 9));
        assert_eq!(l.tracked(), 3);
        // once they have refilled they are forgotten and the new source gets in
        assert!(l.check(t0 + Duration::from_secs(5), 9));
        assert_eq!(l.tracked(), 1);
    }

    #[test]
    fn log_limiter_counts_suppressed() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(Duration::from_secs(10), 2);
        assert_eq!(l.allow(t0, "x"), Some(0));
        assert_eq!(l.allow(t0, "x"), Some(0));
        assert_eq!(l.allow(t0, "x"), None);
        assert_eq!(l.allow(t0, "x"), None);
        assert_eq!(l.allow(t0 + Duration::from_secs(11), "x"), Some(2));
    }

    #[test]
    fn reject_log_is_bounded_per_reason() {
        let t0 = Instant::now();
        let peer = "192.0.2.1:862".parse().unwrap();
        let mut l = RejectLog::default();
        let logged = (0..100).filter(|_| l.warn(t0, "bad_hmac", peer, "x")).count();
        assert_eq!(logged, RejectLog::PER_WINDOW as usize);
        assert!(l.warn(t0, "replay", peer, "x"), "another reason has its own budget");
        assert!(l.warn(t0 + RejectLog::WINDOW, "bad_hmac", peer, "x"), "the next window logs again");
    }
}
