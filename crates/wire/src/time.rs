//! Timestamp formats written into IP SLA packets.
//!
//! - NTP 64-bit (RFC 5905 §6): u32 seconds since 1900-01-01 + u32 binary fraction. Used by type-3
//!   probes and the v2 control header.
//! - Milliseconds since 00:00 UTC as a u32 (IOS capture, type-2 probes), which wraps at midnight:
//!   differences are taken modulo 86 400 000.
//! - The PTP-truncated form RFC 6812 allows for type 3: u32 seconds + u32 nanoseconds.
//!
//! Everything here converts from and to a [`Duration`] since the Unix epoch; reading the clock is
//! the caller's business.

use core::time::Duration;

/// Seconds from 1900-01-01 (NTP era 0) to 1970-01-01.
pub const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// Milliseconds in a day: the modulus of the ms-since-midnight timestamps.
pub const MS_PER_DAY: u32 = 86_400_000;

/// A 64-bit NTP timestamp (RFC 5905 §6), kept as the raw wire value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NtpTimestamp(pub u64);

impl NtpTimestamp {
    /// Converts a time since the Unix epoch. Seconds wrap into NTP era 1 after 2036, as the
    /// format requires.
    pub fn from_unix(since_epoch: Duration) -> Self {
        let secs = (since_epoch.as_secs() + NTP_UNIX_OFFSET) as u32;
        // fraction = nanos * 2^32 / 1e9, rounded to nearest
        let frac = ((u64::from(since_epoch.subsec_nanos()) << 32) + 500_000_000) / 1_000_000_000;
        NtpTimestamp((u64::from(secs) << 32) | frac.min(u64::from(u32::MAX)))
    }

    /// Converts back to a time since the Unix epoch, using the RFC 4330 §3 era rule: a seconds
    /// value with its top bit clear belongs to era 1 (2036–2104). `None` for values before 1970.
    pub fn to_unix(self) -> Option<Duration> {
        let secs = self.seconds() as u64;
        let secs = if secs & 0x8000_0000 == 0 { secs + (1 << 32) } else { secs };
        let unix = secs.checked_sub(NTP_UNIX_OFFSET)?;
        let nanos = ((u64::from(self.fraction()) * 1_000_000_000) + (1 << 31)) >> 32;
        Some(Duration::from_secs(unix) + Duration::from_nanos(nanos))
    }

    /// Whole seconds since 1900 (mod 2^32).
    pub fn seconds(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// Binary fraction of a second (units of 2^-32 s).
    pub fn fraction(self) -> u32 {
        self.0 as u32
    }

    /// `self − earlier` in nanoseconds, taken on the 64-bit fixed-point value modulo 2^64 so
    /// that an era rollover between the two does not matter. Valid for |difference| < 68 years.
    pub fn diff_nanos(self, earlier: NtpTimestamp) -> i64 {
        let d = self.0.wrapping_sub(earlier.0) as i64; // units of 2^-32 s
        ((i128::from(d) * 1_000_000_000) >> 32) as i64
    }
}

/// Milliseconds since 00:00 UTC for a time since the Unix epoch (IOS capture, type-2 probes).
pub fn ms_since_midnight(since_epoch: Duration) -> u32 {
    ((since_epoch.as_secs() % 86_400) * 1000 + u64::from(since_epoch.subsec_millis())) as u32
}

/// `later − earlier` for two ms-since-midnight values, handling the midnight wrap: the result is
/// the representative in (−43 200 000, 43 200 000] of the difference modulo one day.
pub fn ms_diff(later: u32, earlier: u32) -> i32 {
    let l = i64::from(later % MS_PER_DAY);
    let e = i64::from(earlier % MS_PER_DAY);
    let day = i64::from(MS_PER_DAY);
    let mut d = (l - e).rem_euclid(day);
    if d > day / 2 {
        d -= day;
    }
    d as i32
}

/// The low 64 bits of an IEEE 1588 timestamp (RFC 6812 §4.2 alternative for type 3):
/// u32 seconds since the PTP epoch (1970, TAI in PTP; we carry the caller's epoch) + u32 ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PtpTruncated {
    /// Seconds, modulo 2^32.
    pub seconds: u32,
    /// Nanoseconds, 0..1e9.
    pub nanoseconds: u32,
}

impl PtpTruncated {
    /// From a time since the epoch.
    pub fn from_unix(since_epoch: Duration) -> Self {
        PtpTruncated { seconds: since_epoch.as_secs() as u32, nanoseconds: since_epoch.subsec_nanos() }
    }
    /// The 64-bit wire value.
    pub fn to_bits(self) -> u64 {
        (u64::from(self.seconds) << 32) | u64::from(self.nanoseconds)
    }
    /// From the 64-bit wire value; `None` when the nanoseconds are out of range.
    pub fn from_bits(v: u64) -> Option<Self> {
        let ns = v as u32;
        (ns < 1_000_000_000).then_some(PtpTruncated { seconds: (v >> 32) as u32, nanoseconds: ns })
    }
    /// `self − earlier` in nanoseconds, seconds taken modulo 2^32.
    pub fn diff_nanos(self, earlier: PtpTruncated) -> i64 {
        let ds = i64::from(self.seconds.wrapping_sub(earlier.seconds) as i32);
        ds * 1_000_000_000 + i64::from(self.nanoseconds) - i64::from(earlier.nanoseconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ms_since_midnight_matches_capture() {
        // IOS capture g729a pair 1: T1 = 0x029aa061 = 43 688 033 ms = 12:08:08.033 UTC.
        let t = Duration::from_secs(19_000 * 86_400 + 12 * 3600 + 8 * 60 + 8) + Duration::from_millis(33);
        assert_eq!(ms_since_midnight(t), 0x029a_a061);
    }

    #[test]
    fn ms_diff_wraps_at_midnight() {
        assert_eq!(ms_diff(5, MS_PER_DAY - 3), 8);
        assert_eq!(ms_diff(MS_PER_DAY - 3, 5), -8);
        assert_eq!(ms_diff(1000, 400), 600);
        assert_eq!(ms_diff(400, 1000), -600);
    }

    #[test]
    fn ntp_known_value() {
        // 1970-01-01T00:00:00.5Z
        let n = NtpTimestamp::from_unix(Duration::from_millis(500));
        assert_eq!(n.seconds(), 2_208_988_800);
        assert_eq!(n.fraction(), 0x8000_0000);
        assert_eq!(n.to_unix(), Some(Duration::from_millis(500)));
    }

    #[test]
    fn ntp_era_one() {
        // 2040-01-01 is past the 2036 rollover: seconds wrap, to_unix restores it.
        let t = Duration::from_secs(2_208_988_800);
        let n = NtpTimestamp::from_unix(t);
        assert!(n.seconds() < 0x8000_0000);
        assert_eq!(n.to_unix(), Some(t));
    }

    #[test]
    fn ptp_bits_roundtrip_and_reject() {
        let p = PtpTruncated { seconds: 7, nanoseconds: 999_999_999 };
        assert_eq!(PtpTruncated::from_bits(p.to_bits()), Some(p));
        assert_eq!(PtpTruncated::from_bits(1_000_000_000), None);
        let q = PtpTruncated { seconds: 8, nanoseconds: 1 };
        assert_eq!(q.diff_nanos(p), 2);
    }

    proptest! {
        #[test]
        fn ntp_roundtrip_within_a_nanosecond(secs in 0u64..4_000_000_000, nanos in 0u32..1_000_000_000) {
            let t = Duration::new(secs, nanos);
            let back = NtpTimestamp::from_unix(t).to_unix().unwrap();
            let err = back.as_nanos() as i128 - t.as_nanos() as i128;
            prop_assert!(err.abs() <= 1, "err {err}");
        }

        #[test]
        fn ntp_diff_is_exact_to_a_nanosecond(a in 0u64..3_000_000_000_000_000_000, d in 0u64..10_000_000_000) {
            let t0 = Duration::from_nanos(a);
            let t1 = t0 + Duration::from_nanos(d);
            let got = NtpTimestamp::from_unix(t1).diff_nanos(NtpTimestamp::from_unix(t0));
            prop_assert!((got - d as i64).abs() <= 2);
        }

        #[test]
        fn ms_diff_inverts_addition(base in 0u32..MS_PER_DAY, d in -40_000_000i32..40_000_000) {
            let later = (i64::from(base) + i64::from(d)).rem_euclid(i64::from(MS_PER_DAY)) as u32;
            prop_assert_eq!(ms_diff(later, base), d);
        }
    }
}
