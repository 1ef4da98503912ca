//! Waiting for a deadline precisely without burning a core.
//!
//! A send schedule of 1 ms (or 100 µs) needs wake-ups accurate to a few µs. Linux pads every
//! sleep of a normal thread with its *timer slack* (50 µs by default), so the pacer first sets the
//! calling thread's slack to 1 ns. It then sleeps with `ppoll` on the socket (a reply wakes it
//! early) until shortly before the deadline, and busy-waits the rest, still reading the socket.
//!
//! How much shortly is learnt: a sleep ends some time after the asked one (the wake-up latency,
//! tens of µs on a VM, a few on bare metal), so the pacer measures that lateness on every timed
//! sleep and asks to wake its typical lateness early (a running mean plus one mean deviation,
//! never more than the configured spin). The spin is then only what is left between the actual
//! wake-up and the deadline, a few µs on average instead of the whole configured spin.
//! bench/RESULTS.md has the measurements.

use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::time::TimeSpec;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// Default busy-wait before a deadline (see bench/RESULTS.md, schedule fidelity).
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// Sets the calling thread's timer slack to 1 ns (PR_SET_TIMERSLACK); true on success.
pub fn tighten_timer_slack() -> bool {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and affects only the calling thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) == 0 }
}

/// What ended a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The socket has data.
    Readable,
    /// The deadline passed.
    Deadline,
}

/// Sleeps and spins towards deadlines on behalf of one thread.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    /// The most it wakes early and spins.
    spin: Duration,
}

/// The wake-up lateness learnt so far on this machine, ns, as f64 bits: running mean and mean
/// absolute deviation; `NONE` until the first timed sleep. Every pacer of the process teaches
/// and reads it (lateness is the machine's, not one run's); a lost update between two threads
/// only skips one sample.
static LATE: [std::sync::atomic::AtomicU64; 2] =
    [std::sync::atomic::AtomicU64::new(NONE), std::sync::atomic::AtomicU64::new(NONE)];
const NONE: u64 = u64::MAX;

/// Weight of a new lateness sample in the running mean and deviation.
const LEARN: f64 = 1.0 / 32.0;

fn learnt() -> Option<(f64, f64)> {
    use std::sync::atomic::Ordering::Relaxed;
    let (m, d) = (LATE[0].load(Relaxed), LATE[1].load(Relaxed));
    (m != NONE && d != NONE).then(|| (f64::from_bits(m), f64::from_bits(d)))
}

/// The estimate after one more lateness sample of `x` ns.
fn update(est: Option<(f64, f64)>, x: f64) -> (f64, f64) {
    match est {
        // the first sample: that much, give or take half of it
        None => (x, x / 2.0),
        Some((mean, dev)) => {
            let mean = mean + LEARN * (x - mean);
            (mean, dev + LEARN * ((x - mean).abs() - dev))
        }
    }
}

/// How early to wake with the estimate `est`: mean plus one mean deviation, within `spin`; the
/// whole spin before anything was learnt.
fn early_of(est: Option<(f64, f64)>, spin: Duration) -> Duration {
    let spin = spin.as_nanos() as f64;
    Duration::from_nanos(est.map_or(spin, |(mean, dev)| (mean + dev).clamp(0.0, spin)) as u64)
}

/// A sleep that ends later than this was a stall (the vCPU descheduled, a page fault), not the
/// wake-up latency: it teaches only this much, so one stall does not keep the pacer spinning for
/// the next hundred sleeps.
const STALL: Duration = Duration::from_micros(200);

fn learn(lateness: Duration) {
    use std::sync::atomic::Ordering::Relaxed;
    let (mean, dev) = update(learnt(), lateness.min(STALL).as_nanos() as f64);
    LATE[0].store(mean.to_bits(), Relaxed);
    LATE[1].store(dev.to_bits(), Relaxed);
}

impl Pacer {
    /// A pacer that wakes at most `spin` before each deadline and busy-waits the rest. Call from
    /// the thread that will wait: it tightens that thread's timer slack.
    pub fn new(spin: Duration) -> Self {
        tighten_timer_slack();
        Pacer { spin }
    }

    /// A pacer for a schedule of `interval`: spins [`DEFAULT_SPIN`] at most, but never more than
    /// 30 % of the interval, so that a 100 µs schedule stays within a third of a core.
    pub fn for_interval(interval: Duration) -> Self {
        Pacer::new(DEFAULT_SPIN.min(interval * 3 / 10))
    }

    /// How early it asks to wake now: the learnt lateness (mean plus one mean deviation), within
    /// the configured spin; the whole spin until something was learnt.
    pub fn early(&self) -> Duration {
        early_of(learnt(), self.spin)
    }

    /// Waits until `fd` is readable or `deadline` (None: up to one second) has passed.
    pub fn wait(&self, fd: &impl AsFd, deadline: Option<Instant>) -> Wake {
        self.wait_for(Some(fd.as_fd()), deadline)
    }

    /// Waits until `deadline` (None: up to one second) has passed, whatever arrives meanwhile.
    pub fn sleep(&self, deadline: Option<Instant>) {
        self.wait_for(None, deadline);
    }

    fn wait_for(&self, fd: Option<std::os::fd::BorrowedFd<'_>>, deadline: Option<Instant>) -> Wake {
        let deadline = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Wake::Deadline;
            }
            let left = deadline - now;
            let early = self.early();
            let sleep = left.saturating_sub(early);
            let mut one = fd.map(|fd| PollFd::new(fd, PollFlags::POLLIN));
            let fds = one.as_mut().map_or(&mut [][..], std::slice::from_mut);
            match ppoll(fds, Some(TimeSpec::from_duration(sleep)), None) {
                Ok(n) if n > 0 => return Wake::Readable,
                // a timed sleep that ran out: how late it woke teaches the next one
                Ok(_) if !sleep.is_zero() => learn(Instant::now().saturating_duration_since(now + sleep)),
                _ => std::hint::spin_loop(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakes_at_the_deadline_not_before() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = Pacer::new(Duration::from_micros(50));
        for _ in 0..20 {
            let d = Instant::now() + Duration::from_micros(700);
            assert_eq!(p.wait(&s, Some(d)), Wake::Deadline);
            assert!(Instant::now() >= d);
        }
    }

    #[test]
    fn learns_how_late_it_wakes_within_the_spin() {
        let spin = Duration::from_micros(50);
        assert_eq!(early_of(None, spin), spin, "before any sleep: the whole spin");
        // the first sample counts whole: 10 µs, give or take 5
        let mut est = update(None, 10_000.0);
        assert_eq!(early_of(Some(est), spin), Duration::from_micros(15));
        // a machine that wakes 10 µs late every time: the deviation fades, the mean stays
        for _ in 0..400 {
            est = update(Some(est), 10_000.0);
        }
        assert_eq!(early_of(Some(est), spin).as_micros(), 10);
        // one that wakes 200 µs late: never more than the configured spin
        for _ in 0..400 {
            est = update(Some(est), 200_000.0);
        }
        assert_eq!(early_of(Some(est), spin), spin);
        // lateness alternating 0 and 20 µs: mean 10, deviation 10, so it wakes 20 µs early
        for i in 0..4000 {
            est = update(Some(est), if i % 2 == 0 { 0.0 } else { 20_000.0 });
        }
        assert!((19..=20).contains(&early_of(Some(est), spin).as_micros()), "{est:?}");
    }

    #[test]
    fn a_sleep_ignores_data() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap().send_to(b"x", s.local_addr().unwrap()).unwrap();
        let p = Pacer::new(Duration::from_micros(50));
        let d = Instant::now() + Duration::from_millis(3);
        p.sleep(Some(d));
        assert!(Instant::now() >= d);
        assert_eq!(p.wait(&s, Some(d + Duration::from_secs(5))), Wake::Readable, "the datagram is still there");
    }

    #[test]
    fn wakes_early_for_data() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = s.local_addr().unwrap();
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap().send_to(b"x", to).unwrap();
        let p = Pacer::new(Duration::from_micros(50));
        let d = Instant::now() + Duration::from_secs(5);
        assert_eq!(p.wait(&s, Some(d)), Wake::Readable);
        assert!(Instant::now() < d);
    }
}
