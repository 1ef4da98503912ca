//! TWAMP-Test packets (UDP): Session-Sender (RFC 4656 §4.1.2, RFC 5357 §4.1.2) and
//! Session-Reflector (RFC 5357 §4.2.1), in the two layouts of [`TestLayout`].
//!
//! ```text
//! sender, open (14+):    seq(4) ts(8) err(2) | padding
//! sender, auth (48+):    seq(4) mbz(12) | ts(8) err(2) mbz(6) | HMAC(16) | padding
//! reflector, open (41+): seq(4) ts(8) err(2) mbz(2) rx-ts(8) s-seq(4) s-ts(8) s-err(2) mbz(2) ttl(1) | padding
//! reflector, auth (112+): seq(4) mbz(12) | ts(8) err(2) mbz(6) | rx-ts(8) mbz(8) | s-seq(4) mbz(12)
//!                         | s-ts(8) s-err(2) mbz(6) | ttl(1) mbz(15) | HMAC(16) | padding
//! ```
//!
//! In authenticated/encrypted mode the HMAC and encryption are applied by
//! [`super::crypto::TestCrypto`] after `emit`; padding is never encrypted or covered.
//!
//! Liberal parsing (reference §8): a reflector reply in the open layout may be as short as 38
//! octets (twampy sends no MBZ and no Sender TTL); [`ReflectorPacket::sender_ttl`] is then
//! `None`. Timestamps are kept as the raw 64-bit value in an [`NtpTimestamp`]; when the Error
//! Estimate's Z bit is set (RFC 8186) they are PTP-truncated, see
//! [`ErrorEstimate::decode_timestamp`].

use crate::time::{ErrorEstimate, NtpTimestamp};
use crate::{Error, Result, layout_fields};
use core::ops::Range;

/// Session-Sender length without padding, open mode (RFC 4656 §4.1.2).
pub const SENDER_LEN_OPEN: usize = 14;
/// Session-Sender length without padding, authenticated/encrypted (RFC 4656 §4.1.2).
pub const SENDER_LEN_AUTH: usize = 48;
/// Session-Reflector length without padding, open mode (RFC 5357 §4.2.1).
pub const REFLECTOR_LEN_OPEN: usize = 41;
/// Session-Reflector length without padding, authenticated/encrypted: 112 as the figure of
/// RFC 5357 §4.2.1 adds up and twampd sends (the text's "104" is wrong, reference §0.3).
pub const REFLECTOR_LEN_AUTH: usize = 112;
/// Shortest open-mode reply accepted: 38 octets, the twampy TWAMP-Light reflector (reference §4.2).
pub const REFLECTOR_LEN_LIGHT_MIN: usize = 38;
/// Sender padding that makes open-mode packets the same size both ways (41 octets).
pub const SYMMETRIC_PADDING_OPEN: usize = REFLECTOR_LEN_OPEN - SENDER_LEN_OPEN;
/// Sender padding that makes authenticated/encrypted packets the same size both ways (112
/// octets; RFC 5357 says 56, which is wrong against its figure, reference §4.1).
pub const SYMMETRIC_PADDING_AUTH: usize = REFLECTOR_LEN_AUTH - SENDER_LEN_AUTH;
/// The largest packet accepted or built: a UDP payload cannot be longer.
pub const MAX_PACKET_LEN: usize = 65_535;

/// Which layout the test packets of a session use (RFC 5357 §4.1.2, §4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TestLayout {
    /// Unauthenticated and mixed mode (RFC 5618).
    Unauthenticated,
    /// Authenticated and encrypted mode.
    Authenticated,
}

impl TestLayout {
    /// Session-Sender length without padding: 14 or 48.
    pub const fn sender_len(self) -> usize {
        match self {
            TestLayout::Unauthenticated => SENDER_LEN_OPEN,
            TestLayout::Authenticated => SENDER_LEN_AUTH,
        }
    }
    /// Session-Reflector length without padding: 41 or 112.
    pub const fn reflector_len(self) -> usize {
        match self {
            TestLayout::Unauthenticated => REFLECTOR_LEN_OPEN,
            TestLayout::Authenticated => REFLECTOR_LEN_AUTH,
        }
    }
    /// Sender padding for equal sizes both ways: 27 or 64.
    pub const fn symmetric_padding(self) -> usize {
        self.reflector_len() - self.sender_len()
    }
    const fn reflector_min_len(self) -> usize {
        match self {
            TestLayout::Unauthenticated => REFLECTOR_LEN_LIGHT_MIN,
            TestLayout::Authenticated => REFLECTOR_LEN_AUTH,
        }
    }
}

/// The length of a reflector's reply to a sender packet of `sender_len` octets: the same size,
/// by truncating the sender's padding (RFC 5357 §4.2.1), but never below the reflector's own
/// fields plus `reflect_len` octets of RFC 6038 reflected padding.
pub fn reply_len(layout: TestLayout, sender_len: usize, reflect_len: u16) -> usize {
    sender_len.max(layout.reflector_len() + usize::from(reflect_len)).min(MAX_PACKET_LEN)
}

/// The smallest Padding Length RFC 6038 §4.2 allows for `reflect_len` octets of padding to
/// reflect: 27 + len in open mode, 56 + len in authenticated/encrypted mode. The 56 is the RFC's
/// figure (112 − 56 = 56 ≠ 48); it is what RFC-following clients send, so a server accepts it,
/// and [`reply_len`] grows such a reply by the missing 8 octets.
pub fn min_padding_for_reflect(layout: TestLayout, reflect_len: u16) -> u32 {
    let truncation = match layout {
        TestLayout::Unauthenticated => 27,
        TestLayout::Authenticated => 56,
    };
    truncation + u32::from(reflect_len)
}

/// RFC 6038 §4.2 reflect octets: copies the first `len` octets of the sender's padding (which
/// begin with the Server octets when those are non-zero) to the start of the reply's padding, as
/// many as both hold. Returns how many were copied.
pub fn copy_reflected_padding(sender_padding: &[u8], reply_padding: &mut [u8], len: u16) -> usize {
    let n = usize::from(len).min(sender_padding.len()).min(reply_padding.len());
    reply_padding[..n].copy_from_slice(&sender_padding[..n]);
    n
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
    }
    pub const SENDER_OPEN: Sender = Sender { sequence: 0..4, timestamp: 4..12, error_estimate: 12..14 };
    pub const SENDER_AUTH: Sender = Sender { sequence: 0..4, timestamp: 16..24, error_estimate: 24..26 };
    pub const SENDER_HMAC: Field = 32..48;

    pub struct Reflector {
        pub sequence: Field,
        pub timestamp: Field,
        pub error_estimate: Field,
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
        receive_timestamp: 32..40,
        sender_sequence: 48..52,
        sender_timestamp: 64..72,
        sender_error_estimate: 72..74,
        sender_ttl: 80,
    };
    pub const REFLECTOR_HMAC: Field = 96..112;
}

/// Octets of a Session-Sender packet holding its HMAC in the authenticated layout (RFC 4656 §4.1.2).
pub const SENDER_HMAC: Range<usize> = field::SENDER_HMAC;
/// Octets of a Session-Reflector packet holding its HMAC in the authenticated layout (RFC 5357 §4.2.1).
pub const REFLECTOR_HMAC: Range<usize> = field::REFLECTOR_HMAC;

// ---------------------------------------------------------------------------------------------

/// A zero-copy view of a Session-Sender packet.
#[derive(Debug, Clone)]
pub struct SenderPacket<T: AsRef<[u8]>> {
    buffer: T,
    layout: TestLayout,
}

impl<T: AsRef<[u8]>> SenderPacket<T> {
    /// Wraps untrusted bytes: at least the layout's sender length (`Truncated`), at most
    /// [`MAX_PACKET_LEN`] (`BadLength`). Anything after the fields is padding.
    pub fn new_checked(buffer: T, layout: TestLayout) -> Result<Self> {
        check_len(buffer.as_ref().len(), layout.sender_len())?;
        Ok(SenderPacket { buffer, layout })
    }
    /// Wraps bytes without checks.
    pub fn new_unchecked(buffer: T, layout: TestLayout) -> Self {
        SenderPacket { buffer, layout }
    }
    fn fields(&self) -> &'static field::Sender {
        match self.layout {
            TestLayout::Unauthenticated => &field::SENDER_OPEN,
            TestLayout::Authenticated => &field::SENDER_AUTH,
        }
    }
    /// The layout.
    pub fn layout(&self) -> TestLayout {
        self.layout
    }
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    /// The HMAC (authenticated/encrypted layout only; RFC 5357 §4.1.2).
    pub fn hmac(&self) -> Option<[u8; 16]> {
        (self.layout == TestLayout::Authenticated)
            .then(|| crate::FieldValue::read(&self.buffer.as_ref()[field::SENDER_HMAC]))
    }
    /// Packet Padding: everything after the fields (RFC 4656 §4.1.2).
    pub fn padding(&self) -> &[u8] {
        &self.buffer.as_ref()[self.layout.sender_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> SenderPacket<T> {
    /// Writes the HMAC (no-op in the open layout).
    pub fn set_hmac(&mut self, v: [u8; 16]) {
        if self.layout == TestLayout::Authenticated {
            crate::FieldValue::write(v, &mut self.buffer.as_mut()[field::SENDER_HMAC]);
        }
    }
    /// Packet Padding, to fill (pseudo-random or zero, RFC 4656 §4.1.2).
    pub fn padding_mut(&mut self) -> &mut [u8] {
        let at = self.layout.sender_len();
        &mut self.buffer.as_mut()[at..]
    }
}

layout_fields! { SenderPacket {
    /// Sequence Number: from 0, +1 per packet (RFC 4656 §4.1.2).
    sequence, set_sequence: u32 = sequence;
    /// Timestamp: send time (RFC 4656 §4.1.2).
    timestamp, set_timestamp: NtpTimestamp = timestamp;
    /// Error Estimate (RFC 4656 §4.1.2).
    error_estimate, set_error_estimate: ErrorEstimate = error_estimate;
}}

/// A Session-Sender packet's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SenderRepr {
    /// Layout.
    pub layout: TestLayout,
    /// Sequence Number.
    pub sequence: u32,
    /// Timestamp.
    pub timestamp: NtpTimestamp,
    /// Error Estimate.
    pub error_estimate: ErrorEstimate,
    /// Octets of padding after the fields.
    pub padding_len: usize,
}

impl SenderRepr {
    /// Reads the fields (decrypt first in authenticated/encrypted mode). MBZ octets are ignored.
    pub fn parse<T: AsRef<[u8]>>(p: &SenderPacket<T>) -> Result<Self> {
        Ok(SenderRepr {
            layout: p.layout(),
            sequence: p.sequence(),
            timestamp: p.timestamp(),
            error_estimate: p.error_estimate(),
            padding_len: p.padding().len(),
        })
    }
    /// Fields plus padding.
    pub fn buffer_len(&self) -> usize {
        self.layout.sender_len() + self.padding_len
    }
    /// Writes the packet into `buf[..buffer_len()]` with MBZ, HMAC and padding zero.
    pub fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..self.buffer_len()];
        b.fill(0);
        let mut p = SenderPacket::new_unchecked(b, self.layout);
        p.set_sequence(self.sequence);
        p.set_timestamp(self.timestamp);
        p.set_error_estimate(self.error_estimate);
    }
}

// ---------------------------------------------------------------------------------------------

/// A zero-copy view of a Session-Reflector packet.
#[derive(Debug, Clone)]
pub struct ReflectorPacket<T: AsRef<[u8]>> {
    buffer: T,
    layout: TestLayout,
}

impl<T: AsRef<[u8]>> ReflectorPacket<T> {
    /// Wraps untrusted bytes: at least 38 octets in the open layout (twampy's short replies) or
    /// 112 in the authenticated one (`Truncated`), at most [`MAX_PACKET_LEN`] (`BadLength`).
    pub fn new_checked(buffer: T, layout: TestLayout) -> Result<Self> {
        check_len(buffer.as_ref().len(), layout.reflector_min_len())?;
        Ok(ReflectorPacket { buffer, layout })
    }
    /// Wraps bytes without checks.
    pub fn new_unchecked(buffer: T, layout: TestLayout) -> Self {
        ReflectorPacket { buffer, layout }
    }
    fn fields(&self) -> &'static field::Reflector {
        match self.layout {
            TestLayout::Unauthenticated => &field::REFLECTOR_OPEN,
            TestLayout::Authenticated => &field::REFLECTOR_AUTH,
        }
    }
    /// The layout.
    pub fn layout(&self) -> TestLayout {
        self.layout
    }
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    /// True for an open-layout reply shorter than 41 octets (TWAMP-Light peers, reference §4.2).
    pub fn is_short(&self) -> bool {
        self.buffer.as_ref().len() < self.layout.reflector_len()
    }
    /// Sender TTL: the TTL / Hop Limit the reflector saw (RFC 5357 §4.2.1); `None` in a short reply.
    pub fn sender_ttl(&self) -> Option<u8> {
        self.buffer.as_ref().get(self.fields().sender_ttl).copied()
    }
    /// The HMAC (authenticated/encrypted layout only; RFC 5357 §4.2.1).
    pub fn hmac(&self) -> Option<[u8; 16]> {
        (self.layout == TestLayout::Authenticated)
            .then(|| crate::FieldValue::read(&self.buffer.as_ref()[field::REFLECTOR_HMAC]))
    }
    /// Packet Padding after the fields; empty in a short reply (RFC 5357 §4.2.1).
    pub fn padding(&self) -> &[u8] {
        self.buffer.as_ref().get(self.layout.reflector_len()..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ReflectorPacket<T> {
    /// Writes the Sender TTL (no-op in a short reply).
    pub fn set_sender_ttl(&mut self, ttl: u8) {
        let at = self.fields().sender_ttl;
        if let Some(b) = self.buffer.as_mut().get_mut(at) {
            *b = ttl;
        }
    }
    /// Writes the HMAC (no-op in the open layout).
    pub fn set_hmac(&mut self, v: [u8; 16]) {
        if self.layout == TestLayout::Authenticated {
            crate::FieldValue::write(v, &mut self.buffer.as_mut()[field::REFLECTOR_HMAC]);
        }
    }
    /// Packet Padding, to fill.
    pub fn padding_mut(&mut self) -> &mut [u8] {
        let at = self.layout.reflector_len();
        self.buffer.as_mut().get_mut(at..).unwrap_or(&mut [])
    }
}

layout_fields! { ReflectorPacket {
    /// Sequence Number: the reflector's own counter; a stateless TWAMP-Light reflector copies the
    /// sender's (RFC 5357 §4.2.1, Appendix I).
    sequence, set_sequence: u32 = sequence;
    /// Timestamp: T3, when the reply is sent (RFC 5357 §4.2.1).
    timestamp, set_timestamp: NtpTimestamp = timestamp;
    /// Error Estimate of both reflector timestamps (RFC 5357 §4.2.1).
    error_estimate, set_error_estimate: ErrorEstimate = error_estimate;
    /// Receive Timestamp: T2 (RFC 5357 §4.2.1).
    receive_timestamp, set_receive_timestamp: NtpTimestamp = receive_timestamp;
    /// Sender Sequence Number, copied (RFC 5357 §4.2.1).
    sender_sequence, set_sender_sequence: u32 = sender_sequence;
    /// Sender Timestamp, T1, copied (RFC 5357 §4.2.1).
    sender_timestamp, set_sender_timestamp: NtpTimestamp = sender_timestamp;
    /// Sender Error Estimate, copied (RFC 5357 §4.2.1).
    sender_error_estimate, set_sender_error_estimate: ErrorEstimate = sender_error_estimate;
}}

/// A Session-Reflector packet's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReflectorRepr {
    /// Layout.
    pub layout: TestLayout,
    /// Sequence Number.
    pub sequence: u32,
    /// Timestamp (T3).
    pub timestamp: NtpTimestamp,
    /// Error Estimate.
    pub error_estimate: ErrorEstimate,
    /// Receive Timestamp (T2).
    pub receive_timestamp: NtpTimestamp,
    /// Sender Sequence Number.
    pub sender_sequence: u32,
    /// Sender Timestamp (T1).
    pub sender_timestamp: NtpTimestamp,
    /// Sender Error Estimate.
    pub sender_error_estimate: ErrorEstimate,
    /// Sender TTL; `None` only when parsed from a short TWAMP-Light reply. `emit` writes `None`
    /// as 255, the value RFC 5357 §4.2.1 asks for when the TTL cannot be read.
    pub sender_ttl: Option<u8>,
    /// Octets of padding after the fields.
    pub padding_len: usize,
}

impl ReflectorRepr {
    /// Reads the fields (decrypt first in authenticated/encrypted mode). MBZ octets are ignored.
    pub fn parse<T: AsRef<[u8]>>(p: &ReflectorPacket<T>) -> Result<Self> {
        Ok(ReflectorRepr {
            layout: p.layout(),
            sequence: p.sequence(),
            timestamp: p.timestamp(),
            error_estimate: p.error_estimate(),
            receive_timestamp: p.receive_timestamp(),
            sender_sequence: p.sender_sequence(),
            sender_timestamp: p.sender_timestamp(),
            sender_error_estimate: p.sender_error_estimate(),
            sender_ttl: p.sender_ttl(),
            padding_len: p.padding().len(),
        })
    }
    /// Fields plus padding (always the full 41 or 112 octets of fields).
    pub fn buffer_len(&self) -> usize {
        self.layout.reflector_len() + self.padding_len
    }
    /// Writes the packet into `buf[..buffer_len()]` with MBZ, HMAC and padding zero.
    pub fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..self.buffer_len()];
        b.fill(0);
        let mut p = ReflectorPacket::new_unchecked(b, self.layout);
        p.set_sequence(self.sequence);
        p.set_timestamp(self.timestamp);
        p.set_error_estimate(self.error_estimate);
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
    fn sizes() {
        assert_eq!(SYMMETRIC_PADDING_OPEN, 27);
        assert_eq!(SYMMETRIC_PADDING_AUTH, 64);
        assert_eq!(TestLayout::Authenticated.symmetric_padding(), 64);
        assert_eq!(reply_len(TestLayout::Unauthenticated, 14, 0), 41); // twampy → twampd
        assert_eq!(reply_len(TestLayout::Unauthenticated, 41, 0), 41);
        assert_eq!(reply_len(TestLayout::Authenticated, 112, 0), 112);
        assert_eq!(reply_len(TestLayout::Unauthenticated, 1000, 0), 1000);
        // RFC 6038 client padding 56 + 20 in auth mode: reply grows to hold the 20 octets.
        assert_eq!(min_padding_for_reflect(TestLayout::Authenticated, 20), 76);
        assert_eq!(reply_len(TestLayout::Authenticated, 48 + 76, 20), 132);
        assert_eq!(min_padding_for_reflect(TestLayout::Unauthenticated, 20), 47);
        assert_eq!(reply_len(TestLayout::Unauthenticated, 14 + 47, 20), 61);
    }

    #[test]
    fn open_sender_fields() {
        // seq 7, timestamp, error estimate 0x0001, 27 octets of padding (twping default).
        let mut b = hex("00000007 eeacd05d612d8599 0001");
        b.extend_from_slice(&[0xa5; 27]);
        let p = SenderPacket::new_checked(&b[..], TestLayout::Unauthenticated).unwrap();
        let r = SenderRepr::parse(&p).unwrap();
        assert_eq!(r.sequence, 7);
        assert_eq!(r.timestamp, NtpTimestamp(0xeeac_d05d_612d_8599));
        assert_eq!(r.error_estimate, ErrorEstimate(1));
        assert_eq!(r.padding_len, 27);
        assert_eq!(p.hmac(), None);
        let mut out = vec![0xffu8; 41];
        r.emit(&mut out);
        assert_eq!(&out[..14], &b[..14]);
        assert_eq!(&out[14..], &[0; 27]);
        assert_eq!(SenderPacket::new_checked(&b[..13], TestLayout::Unauthenticated).unwrap_err(), Error::Truncated);
        assert_eq!(SenderPacket::new_checked(&b[..41], TestLayout::Authenticated).unwrap_err(), Error::Truncated);
        let huge = vec![0u8; MAX_PACKET_LEN + 1];
        assert_eq!(SenderPacket::new_checked(&huge[..], TestLayout::Unauthenticated).unwrap_err(), Error::BadLength);
    }

    #[test]
    fn auth_sender_offsets() {
        let r = SenderRepr {
            layout: TestLayout::Authenticated,
            sequence: 0x0102_0304,
            timestamp: NtpTimestamp(0x1112_1314_1516_1718),
            error_estimate: ErrorEstimate(0x8001),
            padding_len: 64,
        };
        let mut b = vec![0xffu8; 112];
        r.emit(&mut b);
        assert_eq!(&b[..4], &[1, 2, 3, 4]);
        assert_eq!(&b[4..16], &[0; 12]);
        assert_eq!(&b[16..24], &[0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]);
        assert_eq!(&b[24..26], &[0x80, 0x01]);
        assert_eq!(&b[26..], &[0; 86][..]);
        let mut p = SenderPacket::new_checked(&mut b[..], TestLayout::Authenticated).unwrap();
        p.set_hmac([0xcc; 16]);
        assert_eq!(p.hmac(), Some([0xcc; 16]));
        assert_eq!(p.padding().len(), 64);
        assert_eq!(&b[32..48], &[0xcc; 16]);
    }

    #[test]
    fn open_reflector_fields() {
        let b = hex("00000003 eeacd05e00000000 8001 0000 eeacd05d80000000 00000007 eeacd05d612d8599 0001 0000 fe");
        assert_eq!(b.len(), 41);
        let p = ReflectorPacket::new_checked(&b[..], TestLayout::Unauthenticated).unwrap();
        let r = ReflectorRepr::parse(&p).unwrap();
        assert_eq!(r.sequence, 3);
        assert_eq!(r.timestamp, NtpTimestamp(0xeeac_d05e_0000_0000));
        assert_eq!(r.error_estimate, ErrorEstimate(0x8001));
        assert_eq!(r.receive_timestamp, NtpTimestamp(0xeeac_d05d_8000_0000));
        assert_eq!(r.sender_sequence, 7);
        assert_eq!(r.sender_timestamp, NtpTimestamp(0xeeac_d05d_612d_8599));
        assert_eq!(r.sender_error_estimate, ErrorEstimate(1));
        assert_eq!(r.sender_ttl, Some(254));
        assert_eq!(r.padding_len, 0);
        assert!(!p.is_short());
        let mut out = [0u8; 41];
        r.emit(&mut out);
        assert_eq!(&out[..], &b[..]);
    }

    #[test]
    fn twampy_short_reply() {
        // twampy: 38 octets, no MBZ and no Sender TTL (reference §4.2).
        let b = hex("00000003 eeacd05e00000000 3fff 0000 eeacd05e00000000 00000003 eeacd05d612d8599 3fff");
        assert_eq!(b.len(), 38);
        let p = ReflectorPacket::new_checked(&b[..], TestLayout::Unauthenticated).unwrap();
        assert!(p.is_short());
        assert_eq!(p.sender_ttl(), None);
        assert_eq!(p.padding(), &[] as &[u8]);
        let r = ReflectorRepr::parse(&p).unwrap();
        assert_eq!((r.sender_sequence, r.sender_ttl), (3, None));
        assert_eq!(r.buffer_len(), 41);
        let mut out = [0u8; 41];
        r.emit(&mut out);
        assert_eq!(out[40], 255);
        assert_eq!(ReflectorPacket::new_checked(&b[..37], TestLayout::Unauthenticated).unwrap_err(), Error::Truncated);
        let mut v = b.clone();
        let mut q = ReflectorPacket::new_checked(&mut v[..], TestLayout::Unauthenticated).unwrap();
        q.set_sender_ttl(1); // no room: ignored, no panic
        assert!(q.padding_mut().is_empty());
    }

    #[test]
    fn auth_reflector_offsets() {
        let r = ReflectorRepr {
            layout: TestLayout::Authenticated,
            sequence: 1,
            timestamp: NtpTimestamp(2),
            error_estimate: ErrorEstimate(3),
            receive_timestamp: NtpTimestamp(4),
            sender_sequence: 5,
            sender_timestamp: NtpTimestamp(6),
            sender_error_estimate: ErrorEstimate(7),
            sender_ttl: Some(8),
            padding_len: 0,
        };
        let mut b = [0xffu8; 112];
        r.emit(&mut b);
        let mut want = [0u8; 112];
        want[3] = 1;
        want[23] = 2;
        want[25] = 3;
        want[39] = 4;
        want[51] = 5;
        want[71] = 6;
        want[73] = 7;
        want[80] = 8;
        assert_eq!(b, want);
        assert_eq!(ReflectorPacket::new_checked(&b[..111], TestLayout::Authenticated).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn reflect_octets_copy() {
        let sender = [1u8, 2, 3, 4, 5];
        let mut reply = [0u8; 3];
        assert_eq!(copy_reflected_padding(&sender, &mut reply, 4), 3);
        assert_eq!(reply, [1, 2, 3]);
        let mut reply = [0u8; 8];
        assert_eq!(copy_reflected_padding(&sender, &mut reply, 9), 5);
    }

    fn layout() -> impl Strategy<Value = TestLayout> {
        prop_oneof![Just(TestLayout::Unauthenticated), Just(TestLayout::Authenticated)]
    }

    proptest! {
        #[test]
        fn sender_roundtrip(layout in layout(), s in any::<u32>(), t in any::<u64>(), e in any::<u16>(), pad in 0usize..300) {
            let r = SenderRepr { layout, sequence: s, timestamp: NtpTimestamp(t), error_estimate: ErrorEstimate(e), padding_len: pad };
            let mut b = vec![0u8; r.buffer_len()];
            r.emit(&mut b);
            prop_assert_eq!(SenderRepr::parse(&SenderPacket::new_checked(&b[..], layout).unwrap()).unwrap(), r);
        }

        #[test]
        fn reflector_roundtrip(layout in layout(), v in any::<(u32, u64, u16, u64, u32, u64, u16, u8)>(), pad in 0usize..300) {
            let r = ReflectorRepr {
                layout,
                sequence: v.0,
                timestamp: NtpTimestamp(v.1),
                error_estimate: ErrorEstimate(v.2),
                receive_timestamp: NtpTimestamp(v.3),
                sender_sequence: v.4,
                sender_timestamp: NtpTimestamp(v.5),
                sender_error_estimate: ErrorEstimate(v.6),
                sender_ttl: Some(v.7),
                padding_len: pad,
            };
            let mut b = vec![0u8; r.buffer_len()];
            r.emit(&mut b);
            prop_assert_eq!(ReflectorRepr::parse(&ReflectorPacket::new_checked(&b[..], layout).unwrap()).unwrap(), r);
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..200), layout in layout()) {
            let mut d = data.clone();
            if let Ok(mut p) = SenderPacket::new_checked(&mut d[..], layout) {
                let r = SenderRepr::parse(&p).unwrap();
                prop_assert_eq!(r.buffer_len(), data.len());
                p.set_hmac([1; 16]);
                p.padding_mut().fill(0);
            }
            let mut d = data.clone();
            if let Ok(mut p) = ReflectorPacket::new_checked(&mut d[..], layout) {
                let r = ReflectorRepr::parse(&p).unwrap();
                prop_assert_eq!(r.sender_ttl.is_none(), data.len() < layout.reflector_len());
                p.set_sender_ttl(9);
                p.set_hmac([1; 16]);
                p.padding_mut().fill(0);
            }
        }
    }
}
