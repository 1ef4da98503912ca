//! The two clocks: a monotonic [`Instant`] for scheduling and expiry, and the wall clock (time
//! since the Unix epoch) for timestamps that go on the wire.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock time since the Unix epoch (CLOCK_REALTIME). A clock set before 1970 reads as zero.
pub fn wall_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}
