//! Waiting for a deadline precisely without burning a core.
//!
//! A send schedule of 1 ms (or 100 µs) needs wake-ups accurate to a few µs. Linux pads every
//! sleep of a normal thread with its *timer slack* (50 µs by default), so the pacer first sets the
//! calling thread's slack to 1 ns. It then sleeps with `ppoll` on the socket (a reply wakes it
//! early) until `spin` before the deadline, and busy-waits the rest, still reading the socket.
//! The spin absorbs the wake-up latency (tens of µs on a VM); its cost is `spin / interval` of a
//! core. bench/RESULTS.md has the measurements behind the default.

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
    spin: Duration,
}

impl Pacer {
    /// A pacer that busy-waits the last `spin` before each deadline. Call from the thread that
    /// will wait: it tightens that thread's timer slack.
    pub fn new(spin: Duration) -> Self {
        tighten_timer_slack();
        Pacer { spin }
    }

    /// A pacer for a schedule of `interval`: spins [`DEFAULT_SPIN`], but never more than 30 % of
    /// the interval, so that a 100 µs schedule stays within a third of a core.
    pub fn for_interval(interval: Duration) -> Self {
        Pacer::new(DEFAULT_SPIN.min(interval * 3 / 10))
    }

    /// Waits until `fd` is readable or `deadline` (None: up to one second) has passed.
    pub fn wait(&self, fd: &impl AsFd, deadline: Option<Instant>) -> Wake {
        let deadline = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Wake::Deadline;
            }
            let left = deadline - now;
            let (timeout, spinning) = if left > self.spin { (left - self.spin, false) } else { (Duration::ZERO, true) };
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            let ts = TimeSpec::from_duration(timeout);
            match ppoll(&mut fds, Some(ts), None) {
                Ok(n) if n > 0 => return Wake::Readable,
                _ => {}
            }
            if spinning {
                std::hint::spin_loop();
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
