//! Timestamp formats written into IP SLA packets.
//!
//! - NTP 64-bit (RFC 5905 §6): u32 seconds since 1900-01-01 + u32 binary fraction. Used by type-3
//!   probes and the v2 control header.
//! - Milliseconds since 00:00 UTC as a u32 (IOS capture, type-2 probes), which wraps at midnight:
//!   differences are taken modulo 86 400 000.
//! - The PTP-truncated form RFC 6812 allows for type 3: u32 seconds + u32 nanoseconds.
//! - The 2-octet Error Estimate of OWAMP/TWAMP/STAMP test packets (RFC 4656 §4.1.2), whose Z bit
//!   says which of the two 64-bit formats a TWAMP/STAMP timestamp uses (RFC 8186 §2.3, RFC 8762 §4.1.1).
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

    /// An interval in timestamp format (RFC 4656 §3.5 "Timeout"): whole seconds in the high 32 bits,
    /// no epoch. Saturates at 2^32 s.
    pub fn from_interval(d: Duration) -> Self {
        if d.as_secs() > u64::from(u32::MAX) {
            return NtpTimestamp(u64::MAX);
        }
        let frac = ((u64::from(d.subsec_nanos()) << 32) + 500_000_000) / 1_000_000_000;
        NtpTimestamp((d.as_secs() << 32) + frac)
    }

    /// Reads the value as an interval (see [`NtpTimestamp::from_interval`]).
    pub fn to_interval(self) -> Duration {
        let nanos = ((u64::from(self.fraction()) * 1_000_000_000) + (1 << 31)) >> 32;
        Duration::from_secs(u64::from(self.seconds())) + Duration::from_nanos(nanos)
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

/// The Error Estimate of OWAMP/TWAMP/STAMP test packets (RFC 4656 §4.1.2; Z bit RFC 8186 §2.3 and
/// RFC 8762 §4.1.1): S (1 bit), Z (1 bit), Scale (6 bits), Multiplier (8 bits). The error is
/// Multiplier × 2^(Scale − 32) seconds. Kept as the raw wire value so nothing is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ErrorEstimate(pub u16);

impl ErrorEstimate {
    const S: u16 = 0x8000;
    const Z: u16 = 0x4000;

    /// What twping/twampd and stamp-suite send with an unsynchronised clock: S=0, scale 0,
    /// multiplier 1, i.e. 2^-32 s (reference twamp-stamp.md §1.2).
    pub const UNSYNCED_DEFAULT: ErrorEstimate = ErrorEstimate(0x0001);

    /// Builds the field from its parts; `scale` is masked to 6 bits.
    pub fn new(synchronized: bool, ptp: bool, scale: u8, multiplier: u8) -> Self {
        let mut v = (u16::from(scale & 0x3f) << 8) | u16::from(multiplier);
        if synchronized {
            v |= Self::S;
        }
        if ptp {
            v |= Self::Z;
        }
        ErrorEstimate(v)
    }

    /// The smallest estimate that is at least `precision_ns` nanoseconds: the lowest scale whose
    /// multiplier (rounded up) fits in 8 bits. Z = 0 (NTP format). A precision of 0 gives the
    /// smallest legal value, 2^-32 s (the multiplier must not be 0, RFC 4656 §4.1.2).
    pub fn from_precision_ns(precision_ns: u64, synchronized: bool) -> Self {
        // units of 2^-32 s, rounded up
        let units = (u128::from(precision_ns) << 32).div_ceil(1_000_000_000).max(1);
        for scale in 0u8..64 {
            let m = units.div_ceil(1u128 << scale);
            if m <= 255 {
                return ErrorEstimate::new(synchronized, false, scale, m as u8);
            }
        }
        ErrorEstimate::new(synchronized, false, 63, 255)
    }

    /// S: the clock is synchronised to UTC by an external source.
    pub fn synchronized(self) -> bool {
        self.0 & Self::S != 0
    }
    /// Z: 1 = the timestamps are PTPv2 truncated (RFC 8186 §2.3, RFC 8762 §4.1.1), 0 = NTP.
    /// RFC 4656/5357 call this bit MBZ.
    pub fn ptp(self) -> bool {
        self.0 & Self::Z != 0
    }
    /// Scale, 6 bits.
    pub fn scale(self) -> u8 {
        ((self.0 >> 8) & 0x3f) as u8
    }
    /// Multiplier, 8 bits.
    pub fn multiplier(self) -> u8 {
        self.0 as u8
    }
    /// False when the multiplier is 0: RFC 4656 §4.1.2 says such a packet SHOULD be treated as
    /// corrupt and discarded.
    pub fn is_valid(self) -> bool {
        self.multiplier() != 0
    }
    /// Returns a copy with the Z bit set or cleared.
    pub fn with_ptp(self, ptp: bool) -> Self {
        ErrorEstimate(if ptp { self.0 | Self::Z } else { self.0 & !Self::Z })
    }
    /// The error bound, Multiplier × 2^(Scale − 32) s, with the sub-second part rounded up to a
    /// whole nanosecond.
    pub fn error(self) -> Duration {
        let units = u128::from(self.multiplier()) << self.scale();
        let secs = (units >> 32) as u64;
        let nanos = ((units & 0xffff_ffff) * 1_000_000_000).div_ceil(1 << 32) as u32;
        Duration::new(secs, nanos)
    }
    /// Converts a 64-bit test-packet timestamp to a time since the Unix epoch, in the format this
    /// estimate's Z bit names: NTP (era rule of [`NtpTimestamp::to_unix`]) or PTP truncated
    /// (seconds taken as given: TAI if the peer runs PTP). `None` for an impossible value.
    pub fn decode_timestamp(self, raw: u64) -> Option<Duration> {
        if self.ptp() {
            PtpTruncated::from_bits(raw).map(|p| Duration::new(u64::from(p.seconds), p.nanoseconds))
        } else {
            NtpTimestamp(raw).to_unix()
        }
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

    #[test]
    fn error_estimate_values_seen_on_the_wire() {
        // Reference twamp-stamp.md §1.2: twping/twampd unsynced 0x0001, twampy 0x3fff.
        let e = ErrorEstimate(0x0001);
        assert!(!e.synchronized() && !e.ptp() && e.is_valid());
        assert_eq!((e.scale(), e.multiplier()), (0, 1));
        assert_eq!(e.error(), Duration::from_nanos(1)); // 2^-32 s rounded up
        let t = ErrorEstimate(0x3fff);
        assert_eq!((t.scale(), t.multiplier()), (63, 255));
        assert_eq!(t.error(), Duration::from_secs(255 << 31));
        assert!(!ErrorEstimate(0x8000).is_valid());
        assert_eq!(ErrorEstimate::new(true, true, 0x41, 7).0, 0xc107);
        assert_eq!(ErrorEstimate(0x0001).with_ptp(true).0, 0x4001);
    }

    #[test]
    fn error_estimate_from_precision() {
        // 1 µs = 4294.97 units of 2^-32 s: scale 5 gives ceil(4295/32) = 135.
        let e = ErrorEstimate::from_precision_ns(1_000, true);
        assert_eq!((e.synchronized(), e.scale(), e.multiplier()), (true, 5, 135));
        assert_eq!(e.0, 0x8587);
        // 1 ns = 4.29 units → multiplier 5 at scale 0.
        assert_eq!(ErrorEstimate::from_precision_ns(1, false).0, 0x0005);
        assert_eq!(ErrorEstimate::from_precision_ns(0, false), ErrorEstimate::UNSYNCED_DEFAULT);
        // 1 ms: 4 294 968 units; scale 15 → 131.07 → 132.
        assert_eq!(ErrorEstimate::from_precision_ns(1_000_000, false).0, 0x0f84);
        // u64::MAX ns ≈ 584 years: 2^96 / 1e9 / 2^59 = 137.4 → 138 at scale 59.
        assert_eq!(ErrorEstimate::from_precision_ns(u64::MAX, false).0, 0x3b8a);
    }

    #[test]
    fn decode_timestamp_follows_the_z_bit() {
        let ntp = NtpTimestamp::from_unix(Duration::from_millis(1500)).0;
        assert_eq!(ErrorEstimate(1).decode_timestamp(ntp), Some(Duration::from_millis(1500)));
        let ptp = PtpTruncated { seconds: 3, nanoseconds: 5 }.to_bits();
        assert_eq!(ErrorEstimate(0x4001).decode_timestamp(ptp), Some(Duration::new(3, 5)));
        assert_eq!(ErrorEstimate(0x4001).decode_timestamp(u64::from(u32::MAX)), None);
    }

    #[test]
    fn intervals() {
        // twping's Timeout of 2 s is 00000002 00000000 on the wire (reference §3.4).
        assert_eq!(NtpTimestamp::from_interval(Duration::from_secs(2)).0, 0x0000_0002_0000_0000);
        assert_eq!(NtpTimestamp(0x0000_0002_8000_0000).to_interval(), Duration::from_millis(2500));
        assert_eq!(NtpTimestamp::from_interval(Duration::from_secs(1 << 40)).0, u64::MAX);
    }

    proptest! {
        #[test]
        fn error_estimate_bounds_the_precision(ns in 0u64..1_000_000_000_000_000) {
            let e = ErrorEstimate::from_precision_ns(ns, false);
            prop_assert!(e.is_valid());
            prop_assert!(e.error() >= Duration::from_nanos(ns));
            // not more than one multiplier step (and one rounding nanosecond) above it
            if e.scale() > 0 {
                let step = ErrorEstimate::new(false, false, e.scale(), 1).error();
                prop_assert!(e.error() <= Duration::from_nanos(ns) + step + Duration::from_nanos(1));
            }
        }

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
