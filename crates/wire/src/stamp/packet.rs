//! STAMP Session-Sender and Session-Reflector packets (RFC 8762 §4.2, §4.3) with the SSID of
//! RFC 8972 §3; TLVs follow the base packet ([`super::tlv`]).
//!
//! ```text
//! sender, open (44):     seq(4) ts(8) err(2) ssid(2) mbz(28) | TLVs
//! sender, auth (112):    seq(4) mbz(12) ts(8) err(2) ssid(2) mbz(68) HMAC(16, at 96) | TLVs
//! reflector, open (44):  seq(4) ts(8) err(2) ssid(2) rx-ts(8) s-seq(4) s-ts(8) s-err(2) mbz(2) ttl(1) mbz(3) | TLVs
//! reflector, auth (112): TWAMP's authenticated reflector layout with SSID at 26–27, HMAC at 96 | TLVs
//! ```
//!
//! The HMAC is HMAC-SHA-256 truncated to 16 octets over octets 0–95, keyed with the raw
//! pre-shared key (RFC 8762 §4.4; verified on stamp-suite packets, reference §5.2). STAMP has no
//! encryption.
//!
//! Liberal parsing (reference §5.2, §8): an unauthenticated Session-Sender packet may be as short
//! as 14 octets (a TWAMP-Light sender; the reflector answers with the 44-octet base, and SSID
//! reads 0 when the packet has none); an unauthenticated reflector reply as short as 38 (twampy),
//! with no Sender TTL. `emit` always writes the full base packet.

use crate::time::{ErrorEstimate, NtpTimestamp};
use crate::{Error, Result, be16, layout_fields, put16};
use core::ops::Range;
use hmac::{KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Base packet length, unauthenticated mode (RFC 8762 §4.2.1, §4.3.1).
pub const BASE_LEN_OPEN: usize = 44;
/// Base packet length, authenticated mode (RFC 8762 §4.2.2, §4.3.2).
pub const BASE_LEN_AUTH: usize = 112;
/// Shortest unauthenticated Session-Sender packet accepted: a TWAMP-Light sender's 14 octets.
pub const SENDER_MIN_LEN_LIGHT: usize = 14;
/// Shortest unauthenticated Session-Reflector packet accepted: twampy's 38 octets.
pub const REFLECTOR_MIN_LEN_LIGHT: usize = 38;
/// Octets holding the HMAC in authenticated mode (RFC 8762 §4.2.2, §4.3.2).
pub const HMAC_RANGE: Range<usize> = 96..112;
/// The HMAC covers octets 0–95 (RFC 8762 §4.4).
pub const HMAC_COVERS: Range<usize> = 0..96;
/// The largest packet accepted or built.
pub const MAX_PACKET_LEN: usize = 65_535;

/// STAMP's two modes (RFC 8762 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StampMode {
    /// Unauthenticated: 44-octet base packets.
    Unauthenticated,
    /// Authenticated: 112-octet base packets with an HMAC-SHA-256/128.
    Authenticated,
}

impl StampMode {
    /// The base packet length: 44 or 112 (the same for sender and reflector).
    pub const fn base_len(self) -> usize {
        match self {
            StampMode::Unauthenticated => BASE_LEN_OPEN,
            StampMode::Authenticated => BASE_LEN_AUTH,
        }
    }
}

/// HMAC-SHA-256 of octets 0–95 truncated to 16 (RFC 8762 §4.4); `None` when `packet` is shorter
/// than 96 octets.
pub fn compute_hmac(key: &[u8], packet: &[u8]) -> Option<[u8; 16]> {
    let covered = packet.get(HMAC_COVERS)?;
    Some(hmac_sha256_128(key, &[covered]))
}

/// HMAC-SHA-256 over the concatenation of `parts`, truncated to 16 octets.
pub(crate) fn hmac_sha256_128(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    parts.iter().for_each(|p| mac.update(p));
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

fn check_len(len: usize, min: usize) -> Result<()> {
    if len < min {
        Err(Error::Truncated)
    } else if len > MAX_PACKET_LEN {
        Err(Error::BadLength)
    } else {
        Ok(())
    }
}

mod field {
    use core::ops::Range;
    type Field = Range<usize>;

    pub struct Sender {
        pub sequence: Field,
        pub timestamp: Field,
        pub error_estimate: Field,
        pub ssid: Field,
    }
    pub const SENDER_OPEN: Sender = Sender { sequence: 0..4, timestamp: 4..12, error_estimate: 12..14, ssid: 14..16 };
    pub const SENDER_AUTH: Sender = Sender { sequence: 0..4, timestamp: 16..24, error_estimate: 24..26, ssid: 26..28 };

    pub struct Reflector {
        pub sequence: Field,
        pub timestamp: Field,
        pub error_estimate: Field,
        pub ssid: Field,
        pub receive_timestamp: Field,
        pub sender_sequence: Field,
        pub sender_timestamp: Field,
        pub sender_error_estimate: Field,
        pub sender_ttl: usize,
    }
    pub const REFLECTOR_OPEN: Reflector = Reflector {
        sequence: 0..4,
        timestamp: 4..12,
        error_estimate: 12..14,
        ssid: 14..16,
        receive_timestamp: 16..24,
        sender_sequence: 24..28,
        sender_timestamp: 28..36,
        sender_error_estimate: 36..38,
        sender_ttl: 40,
    };
    pub const REFLECTOR_AUTH: Reflector = Reflector {
        sequence: 0..4,
        timestamp: 16..24,
        error_estimate: 24..26,
        ssid: 26..28,
        receive_timestamp: 32..40,
        sender_sequence: 48..52,
        sender_timestamp: 64..72,
        sender_error_estimate: 72..74,
        sender_ttl: 80,
    };
}

// ---------------------------------------------------------------------------------------------

/// A zero-copy view of a STAMP Session-Sender packet.
#[derive(Debug, Clone)]
pub struct SenderPacket<T: AsRef<[u8]>> {
    buffer: T,
    mode: StampMode,
}

impl<T: AsRef<[u8]>> SenderPacket<T> {
    /// Wraps untrusted bytes: at least 14 octets unauthenticated (a TWAMP-Light sender) or 112
    /// authenticated (`Truncated`), at most [`MAX_PACKET_LEN`] (`BadLength`).
    pub fn new_checked(buffer: T, mode: StampMode) -> Result<Self> {
        let min = match mode {
            StampMode::Unauthenticated => SENDER_MIN_LEN_LIGHT,
            StampMode::Authenticated => BASE_LEN_AUTH,
        };
        check_len(buffer.as_ref().len(), min)?;
        Ok(SenderPacket { buffer, mode })
    }
    /// Wraps bytes without checks.
    pub fn new_unchecked(buffer: T, mode: StampMode) -> Self {
        SenderPacket { buffer, mode }
    }
    fn fields(&self) -> &'static field::Sender {
        match self.mode {
            StampMode::Unauthenticated => &field::SENDER_OPEN,
            StampMode::Authenticated => &field::SENDER_AUTH,
        }
    }
    /// The mode.
    pub fn mode(&self) -> StampMode {
        self.mode
    }
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    /// True for an unauthenticated packet shorter than the 44-octet base (a TWAMP-Light sender).
    pub fn is_short(&self) -> bool {
        self.buffer.as_ref().len() < self.mode.base_len()
    }
    /// SSID (RFC 8972 §3); 0 when the packet is too short to carry one.
    pub fn ssid(&self) -> u16 {
        self.buffer.as_ref().get(self.fields().ssid.clone()).map_or(0, |b| be16(b, 0))
    }
    /// The HMAC (authenticated mode; RFC 8762 §4.2.2).
    pub fn hmac(&self) -> Option<[u8; 16]> {
        (self.mode == StampMode::Authenticated).then(|| crate::FieldValue::read(&self.buffer.as_ref()[HMAC_RANGE]))
    }
    /// True when the HMAC matches `key` (constant-time); false in unauthenticated mode.
    pub fn verify_hmac(&self, key: &[u8]) -> bool {
        match (self.hmac(), compute_hmac(key, self.buffer.as_ref())) {
            (Some(got), Some(want)) => want.ct_eq(&got).into(),
            _ => false,
        }
    }
    /// The TLV area after the base packet (RFC 8972 §4); empty when there is none.
    pub fn tlv_area(&self) -> &[u8] {
        self.buffer.as_ref().get(self.mode.base_len()..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> SenderPacket<T> {
    /// Writes the SSID (no-op when the packet is too short).
    pub fn set_ssid(&mut self, ssid: u16) {
        let r = self.fields().ssid.clone();
        if let Some(b) = self.buffer.as_mut().get_mut(r) {
            put16(b, 0, ssid);
        }
    }
    /// Computes and writes the HMAC (authenticated mode; no-op otherwise).
    pub fn sign(&mut self, key: &[u8]) {
        if self.mode == StampMode::Authenticated
            && let Some(h) = compute_hmac(key, self.buffer.as_ref())
        {
            self.buffer.as_mut()[HMAC_RANGE].copy_from_slice(&h);
        }
    }
    /// The TLV area, to write with [`super::tlv::TlvWriter`].
    pub fn tlv_area_mut(&mut self) -> &mut [u8] {
        let at = self.mode.base_len();
        self.buffer.as_mut().get_mut(at..).unwrap_or(&mut [])
    }
}

layout_fields! { SenderPacket {
    /// Sequence Number (RFC 8762 §4.2.1).
    sequence, set_sequence: u32 = sequence;
    /// Timestamp: NTP, or PTPv2 truncated when the Error Estimate's Z bit is set (RFC 8762 §4.2.1).
    timestamp, set_timestamp: NtpTimestamp = timestamp;
    /// Error Estimate (RFC 8762 §4.2.1; RFC 4656 §4.1.2).
    error_estimate, set_error_estimate: ErrorEstimate = error_estimate;
}}

/// A STAMP Session-Sender packet's base fields (TLVs are read and written with [`super::tlv`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SenderRepr {
    /// Mode.
    pub mode: StampMode,
    /// Sequence Number.
    pub sequence: u32,
    /// Timestamp.
    pub timestamp: NtpTimestamp,
    /// Error Estimate.
    pub error_estimate: ErrorEstimate,
    /// SSID (0 = none; RFC 8972 §3 asks senders for a non-zero one).
    pub ssid: u16,
}

impl SenderRepr {
    /// Reads the base fields; MBZ octets are ignored, the HMAC is checked separately.
    pub fn parse<T: AsRef<[u8]>>(p: &SenderPacket<T>) -> Result<Self> {
        Ok(SenderRepr {
            mode: p.mode(),
            sequence: p.sequence(),
            timestamp: p.timestamp(),
            error_estimate: p.error_estimate(),
            ssid: p.ssid(),
        })
    }
    /// The base length, 44 or 112.
    pub fn buffer_len(&self) -> usize {
        self.mode.base_len()
    }
    /// Writes the base packet into `buf[..buffer_len()]` (MBZ and HMAC zero; sign afterwards).
    pub fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..self.mode.base_len()];
        b.fill(0);
        let mut p = SenderPacket::new_unchecked(b, self.mode);
        p.set_sequence(self.sequence);
        p.set_timestamp(self.timestamp);
        p.set_error_estimate(self.error_estimate);
        p.set_ssid(self.ssid);
    }
}

// ---------------------------------------------------------------------------------------------

/// A zero-copy view of a STAMP Session-Reflector packet.
#[derive(Debug, Clone)]
pub struct ReflectorPacket<T: AsRef<[u8]>> {
    buffer: T,
    mode: StampMode,
}

impl<T: AsRef<[u8]>> ReflectorPacket<T> {
    /// Wraps untrusted bytes: at least 38 octets unauthenticated (TWAMP-Light reflectors) or 112
    /// authenticated (`Truncated`), at most [`MAX_PACKET_LEN`] (`BadLength`).
    pub fn new_checked(buffer: T, mode: StampMode) -> Result<Self> {
        let min = match mode {
            StampMode::Unauthenticated => REFLECTOR_MIN_LEN_LIGHT,
            StampMode::Authenticated => BASE_LEN_AUTH,
        };
        check_len(buffer.as_ref().len(), min)?;
        Ok(ReflectorPacket { buffer, mode })
    }
    /// Wraps bytes without checks.
    pub fn new_unchecked(buffer: T, mode: StampMode) -> Self {
        ReflectorPacket { buffer, mode }
    }
    fn fields(&self) -> &'static field::Reflector {
        match self.mode {
            StampMode::Unauthenticated => &field::REFLECTOR_OPEN,
            StampMode::Authenticated => &field::REFLECTOR_AUTH,
        }
    }
    /// The mode.
    pub fn mode(&self) -> StampMode {
        self.mode
    }
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    /// Session-Sender TTL (RFC 8762 §4.3.1); `None` in a reply too short to carry it.
    pub fn sender_ttl(&self) -> Option<u8> {
        self.buffer.as_ref().get(self.fields().sender_ttl).copied()
    }
    /// The HMAC (authenticated mode; RFC 8762 §4.3.2).
    pub fn hmac(&self) -> Option<[u8; 16]> {
        (self.mode == StampMode::Authenticated).then(|| crate::FieldValue::read(&self.buffer.as_ref()[HMAC_RANGE]))
    }
    /// True when the HMAC matches `key` (constant-time); false in unauthenticated mode.
    pub fn verify_hmac(&self, key: &[u8]) -> bool {
        match (self.hmac(), compute_hmac(key, self.buffer.as_ref())) {
            (Some(got), Some(want)) => want.ct_eq(&got).into(),
            _ => false,
        }
    }
    /// The TLV area after the base packet (RFC 8972 §4); empty when there is none.
    pub fn tlv_area(&self) -> &[u8] {
        self.buffer.as_ref().get(self.mode.base_len()..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ReflectorPacket<T> {
    /// Writes the Session-Sender TTL (no-op in a short reply).
    pub fn set_sender_ttl(&mut self, ttl: u8) {
        let at = self.fields().sender_ttl;
        if let Some(b) = self.buffer.as_mut().get_mut(at) {
            *b = ttl;
        }
    }
    /// Computes and writes the HMAC (authenticated mode; no-op otherwise).
    pub fn sign(&mut self, key: &[u8]) {
        if self.mode == StampMode::Authenticated
            && let Some(h) = compute_hmac(key, self.buffer.as_ref())
        {
            self.buffer.as_mut()[HMAC_RANGE].copy_from_slice(&h);
        }
    }
    /// The TLV area, to fill (a reflector copies the sender's TLVs here, then marks them with
    /// [`super::tlv::mark_reply`]).
    pub fn tlv_area_mut(&mut self) -> &mut [u8] {
        let at = self.mode.base_len();
        self.buffer.as_mut().get_mut(at..).unwrap_or(&mut [])
    }
}

layout_fields! { ReflectorPacket {
    /// Sequence Number: the sender's (stateless) or the reflector's own counter (stateful)
    /// (RFC 8762 §4.3.1).
    sequence, set_sequence: u32 = sequence;
    /// Timestamp: T3 (RFC 8762 §4.3.1).
    timestamp, set_timestamp: NtpTimestamp = timestamp;
    /// Error Estimate (RFC 8762 §4.3.1).
    error_estimate, set_error_estimate: ErrorEstimate = error_estimate;
    /// SSID, copied from the sender; 0 from reflectors without RFC 8972 (RFC 8972 §3).
    ssid, set_ssid: u16 = ssid;
    /// Receive Timestamp: T2 (RFC 8762 §4.3.1).
    receive_timestamp, set_receive_timestamp: NtpTimestamp = receive_timestamp;
    /// Session-Sender Sequence Number (RFC 8762 §4.3.1).
    sender_sequence, set_sender_sequence: u32 = sender_sequence;
    /// Session-Sender Timestamp: T1 (RFC 8762 §4.3.1).
    sender_timestamp, set_sender_timestamp: NtpTimestamp = sender_timestamp;
    /// Session-Sender Error Estimate (RFC 8762 §4.3.1).
    sender_error_estimate, set_sender_error_estimate: ErrorEstimate = sender_error_estimate;
}}

/// A STAMP Session-Reflector packet's base fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReflectorRepr {
    /// Mode.
    pub mode: StampMode,
    /// Sequence Number.
    pub sequence: u32,
    /// Timestamp (T3).
    pub timestamp: NtpTimestamp,
    /// Error Estimate.
    pub error_estimate: ErrorEstimate,
    /// SSID.
    pub ssid: u16,
    /// Receive Timestamp (T2).
    pub receive_timestamp: NtpTimestamp,
    /// Session-Sender Sequence Number.
    pub sender_sequence: u32,
    /// Session-Sender Timestamp (T1).
    pub sender_timestamp: NtpTimestamp,
    /// Session-Sender Error Estimate.
    pub sender_error_estimate: ErrorEstimate,
    /// Session-Sender TTL; `None` only when parsed from a short TWAMP-Light reply. `emit`
    /// writes `None` as 255 (RFC 8762 §4.3.1: 255 when the TTL cannot be read).
    pub sender_ttl: Option<u8>,
}

impl ReflectorRepr {
    /// Reads the base fields; MBZ octets are ignored, the HMAC is checked separately.
    pub fn parse<T: AsRef<[u8]>>(p: &ReflectorPacket<T>) -> Result<Self> {
        Ok(ReflectorRepr {
            mode: p.mode(),
            sequence: p.sequence(),
            timestamp: p.timestamp(),
            error_estimate: p.error_estimate(),
            ssid: p.ssid(),
            receive_timestamp: p.receive_timestamp(),
            sender_sequence: p.sender_sequence(),
            sender_timestamp: p.sender_timestamp(),
            sender_error_estimate: p.sender_error_estimate(),
            sender_ttl: p.sender_ttl(),
        })
    }
    /// The base length, 44 or 112.
    pub fn buffer_len(&self) -> usize {
        self.mode.base_len()
    }
    /// Writes the base packet into `buf[..buffer_len()]` (MBZ and HMAC zero; sign afterwards).
    pub fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..self.mode.base_len()];
        b.fill(0);
        let mut p = ReflectorPacket::new_unchecked(b, self.mode);
        p.set_sequence(self.sequence);
        p.set_timestamp(self.timestamp);
        p.set_error_estimate(self.error_estimate);
        p.set_ssid(self.ssid);
        p.set_receive_timestamp(self.receive_timestamp);
        p.set_sender_sequence(self.sender_sequence);
        p.set_sender_timestamp(self.sender_timestamp);
        p.set_sender_error_estimate(self.sender_error_estimate);
        p.set_sender_ttl(self.sender_ttl.unwrap_or(255));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '\n'], "")).unwrap()
    }

    #[test]
    fn open_sender_with_ssid() {
        // stamp-suite-like sender: seq 0, error estimate 0x0001, SSID 4660 (reference §5.3).
        let b = hex("00000000 eeacd05d612d8599 0001 1234").into_iter().chain([0u8; 28]).collect::<Vec<_>>();
        let p = SenderPacket::new_checked(&b[..], StampMode::Unauthenticated).unwrap();
        let r = SenderRepr::parse(&p).unwrap();
        assert_eq!(r.ssid, 4660);
        assert_eq!(r.timestamp, NtpTimestamp(0xeeac_d05d_612d_8599));
        assert!(p.tlv_area().is_empty());
        assert!(!p.is_short());
        assert!(!p.verify_hmac(b"k"));
        let mut out = [0xffu8; 44];
        r.emit(&mut out);
        assert_eq!(&out[..], &b[..]);
    }

    #[test]
    fn twamp_light_sender_is_accepted() {
        // twampy's 14-octet probe: no SSID, answered with a 44-octet base (reference §5.2).
        let b = hex("00000009 eeacd05d612d8599 3fff");
        let p = SenderPacket::new_checked(&b[..], StampMode::Unauthenticated).unwrap();
        assert!(p.is_short());
        let r = SenderRepr::parse(&p).unwrap();
        assert_eq!((r.sequence, r.ssid, r.error_estimate), (9, 0, ErrorEstimate(0x3fff)));
        assert_eq!(r.buffer_len(), 44);
        assert_eq!(SenderPacket::new_checked(&b[..13], StampMode::Unauthenticated).unwrap_err(), Error::Truncated);
        let mut c = b.clone();
        SenderPacket::new_unchecked(&mut c[..], StampMode::Unauthenticated).set_ssid(7); // no room: no-op
        assert_eq!(c, b);
    }

    #[test]
    fn authenticated_sender_hmac() {
        let r = SenderRepr {
            mode: StampMode::Authenticated,
            sequence: 1,
            timestamp: NtpTimestamp(0x0102_0304_0506_0708),
            error_estimate: ErrorEstimate(1),
            ssid: 0xbeef,
        };
        let mut b = [0u8; 112];
        r.emit(&mut b);
        assert_eq!(&b[..4], &[0, 0, 0, 1]);
        assert_eq!(&b[4..16], &[0; 12]);
        assert_eq!(&b[16..24], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&b[24..28], &[0, 1, 0xbe, 0xef]);
        assert_eq!(&b[28..], &[0; 84][..]);
        let key = [0x42u8; 32];
        let mut p = SenderPacket::new_checked(&mut b[..], StampMode::Authenticated).unwrap();
        p.sign(&key);
        assert!(p.verify_hmac(&key));
        assert!(!p.verify_hmac(&[0x43; 32]));
        // hmac.new(key, pkt[:96], sha256).digest()[:16] == pkt[96:112]
        use hmac::Mac;
        let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
        m.update(&b[..96]);
        assert_eq!(&b[96..112], &m.finalize().into_bytes()[..16]);
        b[50] ^= 1;
        assert!(!SenderPacket::new_checked(&b[..], StampMode::Authenticated).unwrap().verify_hmac(&key));
        assert_eq!(SenderPacket::new_checked(&b[..111], StampMode::Authenticated).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn reflector_layouts() {
        let r = ReflectorRepr {
            mode: StampMode::Unauthenticated,
            sequence: 1,
            timestamp: NtpTimestamp(2),
            error_estimate: ErrorEstimate(3),
            ssid: 4,
            receive_timestamp: NtpTimestamp(5),
            sender_sequence: 6,
            sender_timestamp: NtpTimestamp(7),
            sender_error_estimate: ErrorEstimate(8),
            sender_ttl: Some(9),
        };
        let mut b = [0xffu8; 44];
        r.emit(&mut b);
        let mut want = [0u8; 44];
        for (at, v) in [(3, 1), (11, 2), (13, 3), (15, 4), (23, 5), (27, 6), (35, 7), (37, 8), (40, 9)] {
            want[at] = v;
        }
        assert_eq!(b, want);
        assert_eq!(
            ReflectorRepr::parse(&ReflectorPacket::new_checked(&b[..], StampMode::Unauthenticated).unwrap()).unwrap(),
            r
        );

        let ra = ReflectorRepr { mode: StampMode::Authenticated, ..r };
        let mut b = [0xffu8; 112];
        ra.emit(&mut b);
        let mut want = [0u8; 112];
        for (at, v) in [(3, 1), (23, 2), (25, 3), (27, 4), (39, 5), (51, 6), (71, 7), (73, 8), (80, 9)] {
            want[at] = v;
        }
        assert_eq!(b, want);
    }

    #[test]
    fn short_and_zero_ssid_replies() {
        // A TWAMP-Light reflector's 41-octet reply: SSID 0 (twampy, reference §5.3), TTL present.
        let mut b = [0u8; 41];
        b[40] = 64;
        let p = ReflectorPacket::new_checked(&b[..], StampMode::Unauthenticated).unwrap();
        assert_eq!((p.ssid(), p.sender_ttl()), (0, Some(64)));
        let p = ReflectorPacket::new_checked(&b[..38], StampMode::Unauthenticated).unwrap();
        assert_eq!(p.sender_ttl(), None);
        assert!(p.tlv_area().is_empty());
        assert_eq!(ReflectorPacket::new_checked(&b[..37], StampMode::Unauthenticated).unwrap_err(), Error::Truncated);
        let big = vec![0u8; MAX_PACKET_LEN + 1];
        assert_eq!(ReflectorPacket::new_checked(&big[..], StampMode::Unauthenticated).unwrap_err(), Error::BadLength);
    }

    fn mode() -> impl Strategy<Value = StampMode> {
        prop_oneof![Just(StampMode::Unauthenticated), Just(StampMode::Authenticated)]
    }

    proptest! {
        #[test]
        fn sender_roundtrip(mode in mode(), v in any::<(u32, u64, u16, u16)>()) {
            let r = SenderRepr { mode, sequence: v.0, timestamp: NtpTimestamp(v.1), error_estimate: ErrorEstimate(v.2), ssid: v.3 };
            let mut b = vec![0u8; r.buffer_len()];
            r.emit(&mut b);
            prop_assert_eq!(SenderRepr::parse(&SenderPacket::new_checked(&b[..], mode).unwrap()).unwrap(), r);
        }

        #[test]
        fn reflector_roundtrip(mode in mode(), v in any::<(u32, u64, u16, u16, u64, u32, u64, u16)>(), ttl in any::<u8>()) {
            let r = ReflectorRepr {
                mode,
                sequence: v.0,
                timestamp: NtpTimestamp(v.1),
                error_estimate: ErrorEstimate(v.2),
                ssid: v.3,
                receive_timestamp: NtpTimestamp(v.4),
                sender_sequence: v.5,
                sender_timestamp: NtpTimestamp(v.6),
                sender_error_estimate: ErrorEstimate(v.7),
                sender_ttl: Some(ttl),
            };
            let mut b = vec![0u8; r.buffer_len()];
            r.emit(&mut b);
            prop_assert_eq!(ReflectorRepr::parse(&ReflectorPacket::new_checked(&b[..], mode).unwrap()).unwrap(), r);
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..200), mode in mode()) {
            let mut d = data.clone();
            if let Ok(mut p) = SenderPacket::new_checked(&mut d[..], mode) {
                let _ = SenderRepr::parse(&p).unwrap();
                let _ = p.verify_hmac(b"k");
                p.set_ssid(1);
                p.tlv_area_mut().fill(0);
                p.sign(b"k");
                prop_assert!(mode == StampMode::Unauthenticated || p.verify_hmac(b"k"));
            }
            let mut d = data;
            if let Ok(mut p) = ReflectorPacket::new_checked(&mut d[..], mode) {
                let _ = ReflectorRepr::parse(&p).unwrap();
                p.set_sender_ttl(1);
                p.sign(b"k");
                p.tlv_area_mut().fill(0);
            }
        }
    }
}
