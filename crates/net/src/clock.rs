//! The two clocks: a monotonic [`std::time::Instant`] for scheduling and expiry, and the wall
//! clock (time since the Unix epoch) for timestamps that go on the wire.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock time since the Unix epoch (CLOCK_REALTIME). A clock set before 1970 reads as zero.
pub fn wall_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// What the kernel says about the synchronisation of the system clock (adjtimex(2), read-only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelClockState {
    /// False when the kernel flags the clock unsynchronised (STA_UNSYNC, or TIME_ERROR).
    pub synchronised: bool,
    /// Estimated error, µs, as the NTP/PTP daemon last reported it.
    pub est_error_us: i64,
    /// Maximum error, µs.
    pub max_error_us: i64,
}

/// Reads the kernel's clock discipline state without changing anything.
pub fn kernel_clock_state() -> Option<KernelClockState> {
    // SAFETY: adjtimex with modes = 0 only reads; the struct is zero-initialised and owned here.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    tx.modes = 0;
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return None;
    }
    let unsync = tx.status & libc::STA_UNSYNC != 0 || state == libc::TIME_ERROR;
    Some(KernelClockState { synchronised: !unsync, est_error_us: tx.esterror as i64, max_error_us: tx.maxerror as i64 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjtimex_reads() {
        let s = kernel_clock_state().expect("adjtimex works on Linux");
        assert!(s.max_error_us >= 0 && s.est_error_us >= 0, "{s:?}");
    }

    #[test]
    fn wall_clock_is_after_2020() {
        assert!(wall_now().as_secs() > 1_577_836_800);
    }
}
