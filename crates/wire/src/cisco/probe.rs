//! Measurement (probe) packets: type 1 udp-echo, type 2 ms jitter, type 3 µs jitter.
//!
//! The reply has the request's length; the responder changes only its own fields (IOS capture,
//! RFC 6812 §4).
//!
//! Type 2 (IOS capture, 16-byte header):
//! ```text
//! 0 type=2 | 2 processing ms (responder) | 4 T1 ms-since-midnight | 8 T2 (responder)
//! 12 sender seq u16 | 14 responder seq u16 (responder) | 16 data pattern
//! ```
//! Type 3 (RFC 6812 §4, 60-byte header): T1..T4 as NTP at 4/12/20/28, clock offsets at 36/44,
//! sequence numbers u32 at 52/56. Legacy senders put u16 sequence numbers at 52/54 (cmouse and the
//! out-of-tree dissector); [`Type3Layout::detect`] tells the two apart.

use crate::{Error, Result, be16, be32, be64, open_enum, put16, put32, put64};

open_enum! {
    /// The probe type in bytes 0–1.
    pub enum ProbeType(u16) {
        /// udp-echo: echoed unchanged (IOS capture).
        Echo = 1,
        /// udp-jitter, millisecond timestamps (IOS capture).
        JitterMs = 2,
        /// udp-jitter, NTP timestamps: RFC 6812 UDP-Measurement / IOS "precision microseconds".
        JitterUs = 3,
    }
}

/// Header length of a type-2 probe.
pub const TYPE2_HEADER_LEN: usize = 16;
/// Header length of a type-3 probe, RFC layout.
pub const TYPE3_HEADER_LEN: usize = 60;
/// Header length of a type-3 probe, legacy layout (u16 sequence numbers at 52/54).
pub const TYPE3_LEGACY_HEADER_LEN: usize = 56;
/// Header length of a type-1 probe (type + zero).
pub const TYPE1_HEADER_LEN: usize = 4;

/// The probe type of a datagram, if it has at least the 2-byte type field.
pub fn probe_type(b: &[u8]) -> Option<ProbeType> {
    (b.len() >= 2).then(|| ProbeType::from(be16(b, 0)))
}

/// Fills `buf` with the repeating data pattern, phase-aligned to `offset` (IOS: `ABCD` from the
/// first data byte).
pub fn fill_pattern(buf: &mut [u8], pattern: &[u8]) {
    if pattern.is_empty() {
        return;
    }
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern[i % pattern.len()];
    }
}

mod t2 {
    pub const PROC: usize = 2;
    pub const T1: usize = 4;
    pub const T2: usize = 8;
    pub const SEQ: usize = 12;
    pub const RSEQ: usize = 14;
}

/// A zero-copy view of a type-2 probe.
#[derive(Debug)]
pub struct Type2<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Type2<T> {
    /// Checks length (≥ 16) and type (2).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < TYPE2_HEADER_LEN {
            return Err(Error::Truncated);
        }
        match ProbeType::from(be16(b, 0)) {
            ProbeType::JitterMs => Ok(Type2 { buffer }),
            other => Err(Error::UnknownType(other.into())),
        }
    }
    /// Wraps without checks.
    pub fn new_unchecked(buffer: T) -> Self {
        Type2 { buffer }
    }
    /// Responder processing time in ms (T3 − T2), 0 in requests.
    pub fn processing_ms(&self) -> u16 {
        be16(self.buffer.as_ref(), t2::PROC)
    }
    /// T1: sender send time, ms since midnight UTC.
    pub fn t1(&self) -> u32 {
        be32(self.buffer.as_ref(), t2::T1)
    }
    /// T2: responder receive time, ms since midnight UTC.
    pub fn t2(&self) -> u32 {
        be32(self.buffer.as_ref(), t2::T2)
    }
    /// Sender sequence number, from 1.
    pub fn sender_seq(&self) -> u16 {
        be16(self.buffer.as_ref(), t2::SEQ)
    }
    /// Responder sequence number (receive counter).
    pub fn responder_seq(&self) -> u16 {
        be16(self.buffer.as_ref(), t2::RSEQ)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Type2<T> {
    /// Sets the processing time.
    pub fn set_processing_ms(&mut self, v: u16) {
        put16(self.buffer.as_mut(), t2::PROC, v);
    }
    /// Sets T1.
    pub fn set_t1(&mut self, v: u32) {
        put32(self.buffer.as_mut(), t2::T1, v);
    }
    /// Sets T2.
    pub fn set_t2(&mut self, v: u32) {
        put32(self.buffer.as_mut(), t2::T2, v);
    }
    /// Sets the sender sequence.
    pub fn set_sender_seq(&mut self, v: u16) {
        put16(self.buffer.as_mut(), t2::SEQ, v);
    }
    /// Sets the responder sequence.
    pub fn set_responder_seq(&mut self, v: u16) {
        put16(self.buffer.as_mut(), t2::RSEQ, v);
    }
}

/// The header fields of a type-2 probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Type2Repr {
    /// Processing time, ms.
    pub processing_ms: u16,
    /// T1, ms since midnight.
    pub t1: u32,
    /// T2, ms since midnight.
    pub t2: u32,
    /// Sender sequence.
    pub sender_seq: u16,
    /// Responder sequence.
    pub responder_seq: u16,
}

impl Type2Repr {
    /// Reads the header.
    pub fn parse<T: AsRef<[u8]>>(p: &Type2<T>) -> Self {
        Type2Repr {
            processing_ms: p.processing_ms(),
            t1: p.t1(),
            t2: p.t2(),
            sender_seq: p.sender_seq(),
            responder_seq: p.responder_seq(),
        }
    }
    /// Writes the 16-byte header into `buf` (which must hold at least 16 bytes); the data after
    /// it is left alone.
    pub fn emit(&self, buf: &mut [u8]) {
        put16(buf, 0, ProbeType::JitterMs.into());
        let mut p = Type2::new_unchecked(buf);
        p.set_processing_ms(self.processing_ms);
        p.set_t1(self.t1);
        p.set_t2(self.t2);
        p.set_sender_seq(self.sender_seq);
        p.set_responder_seq(self.responder_seq);
    }
}

/// Where a type-3 probe keeps its sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Type3Layout {
    /// RFC 6812 §4: u32 sender sequence at 52, u32 responder sequence at 56.
    Rfc,
    /// Legacy IOS (cmouse, out-of-tree dissector): u16 at 52 and u16 at 54.
    Legacy,
}

impl Type3Layout {
    /// Decides per packet (reference §4.3): if bytes 52–53 are zero and 54–55 are not, the sender
    /// wrote a u32 sequence (RFC); otherwise the legacy u16 layout. A packet shorter than the RFC
    /// header can only be legacy. IOS caps num-packets at 60000, so legacy sequences fit in 16 bits.
    pub fn detect(b: &[u8]) -> Self {
        if b.len() >= TYPE3_HEADER_LEN && be16(b, 52) == 0 && be16(b, 54) != 0 {
            Type3Layout::Rfc
        } else {
            Type3Layout::Legacy
        }
    }
    /// Header length of this layout.
    pub fn header_len(self) -> usize {
        match self {
            Type3Layout::Rfc => TYPE3_HEADER_LEN,
            Type3Layout::Legacy => TYPE3_LEGACY_HEADER_LEN,
        }
    }
}

mod t3 {
    pub const T1: usize = 4;
    pub const T2: usize = 12;
    pub const T3: usize = 20;
    pub const T4: usize = 28;
    pub const S_OFF: usize = 36;
    pub const R_OFF: usize = 44;
    pub const SEQ: usize = 52;
}

/// A zero-copy view of a type-3 probe in a given layout.
#[derive(Debug)]
pub struct Type3<T: AsRef<[u8]>> {
    buffer: T,
    layout: Type3Layout,
}

impl<T: AsRef<[u8]>> Type3<T> {
    /// Checks type (3) and the header length of `layout`.
    pub fn new_checked(buffer: T, layout: Type3Layout) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < layout.header_len() {
            return Err(Error::Truncated);
        }
        match ProbeType::from(be16(b, 0)) {
            ProbeType::JitterUs => Ok(Type3 { buffer, layout }),
            other => Err(Error::UnknownType(other.into())),
        }
    }
    /// Wraps without checks.
    pub fn new_unchecked(buffer: T, layout: Type3Layout) -> Self {
        Type3 { buffer, layout }
    }
    /// The layout in use.
    pub fn layout(&self) -> Type3Layout {
        self.layout
    }
    /// Bytes 2–3: reserved in RFC 6812 (the dissector calls it "priority").
    pub fn reserved(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }
    /// T1 (sender send), raw 64-bit NTP or PTP value.
    pub fn t1(&self) -> u64 {
        be64(self.buffer.as_ref(), t3::T1)
    }
    /// T2 (responder receive).
    pub fn t2(&self) -> u64 {
        be64(self.buffer.as_ref(), t3::T2)
    }
    /// T3 (responder send).
    pub fn t3(&self) -> u64 {
        be64(self.buffer.as_ref(), t3::T3)
    }
    /// T4 (sender receive; zero on the wire).
    pub fn t4(&self) -> u64 {
        be64(self.buffer.as_ref(), t3::T4)
    }
    /// Sender clock offset estimate.
    pub fn sender_clock_offset(&self) -> u64 {
        be64(self.buffer.as_ref(), t3::S_OFF)
    }
    /// Responder clock offset estimate.
    pub fn responder_clock_offset(&self) -> u64 {
        be64(self.buffer.as_ref(), t3::R_OFF)
    }
    /// Sender sequence number.
    pub fn sender_seq(&self) -> u32 {
        let b = self.buffer.as_ref();
        match self.layout {
            Type3Layout::Rfc => be32(b, t3::SEQ),
            Type3Layout::Legacy => u32::from(be16(b, t3::SEQ)),
        }
    }
    /// Responder sequence number.
    pub fn responder_seq(&self) -> u32 {
        let b = self.buffer.as_ref();
        match self.layout {
            Type3Layout::Rfc => be32(b, t3::SEQ + 4),
            Type3Layout::Legacy => u32::from(be16(b, t3::SEQ + 2)),
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Type3<T> {
    /// Sets T1.
    pub fn set_t1(&mut self, v: u64) {
        put64(self.buffer.as_mut(), t3::T1, v);
    }
    /// Sets T2.
    pub fn set_t2(&mut self, v: u64) {
        put64(self.buffer.as_mut(), t3::T2, v);
    }
    /// Sets T3.
    pub fn set_t3(&mut self, v: u64) {
        put64(self.buffer.as_mut(), t3::T3, v);
    }
    /// Sets T4.
    pub fn set_t4(&mut self, v: u64) {
        put64(self.buffer.as_mut(), t3::T4, v);
    }
    /// Sets the responder clock offset estimate.
    pub fn set_responder_clock_offset(&mut self, v: u64) {
        put64(self.buffer.as_mut(), t3::R_OFF, v);
    }
    /// Sets the sender sequence (truncated to 16 bits in the legacy layout).
    pub fn set_sender_seq(&mut self, v: u32) {
        match self.layout {
            Type3Layout::Rfc => put32(self.buffer.as_mut(), t3::SEQ, v),
            Type3Layout::Legacy => put16(self.buffer.as_mut(), t3::SEQ, v as u16),
        }
    }
    /// Sets the responder sequence (truncated to 16 bits in the legacy layout).
    pub fn set_responder_seq(&mut self, v: u32) {
        match self.layout {
            Type3Layout::Rfc => put32(self.buffer.as_mut(), t3::SEQ + 4, v),
            Type3Layout::Legacy => put16(self.buffer.as_mut(), t3::SEQ + 2, v as u16),
        }
    }
}

/// The header fields of a type-3 probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Type3Repr {
    /// Sequence-number layout.
    pub layout: Type3Layout,
    /// Bytes 2–3.
    pub reserved: u16,
    /// T1..T4, raw 64-bit values.
    pub t: [u64; 4],
    /// Sender and responder clock offsets.
    pub clock_offsets: [u64; 2],
    /// Sender sequence.
    pub sender_seq: u32,
    /// Responder sequence.
    pub responder_seq: u32,
}

impl Type3Repr {
    /// Reads the header.
    pub fn parse<T: AsRef<[u8]>>(p: &Type3<T>) -> Self {
        Type3Repr {
            layout: p.layout(),
            reserved: p.reserved(),
            t: [p.t1(), p.t2(), p.t3(), p.t4()],
            clock_offsets: [p.sender_clock_offset(), p.responder_clock_offset()],
            sender_seq: p.sender_seq(),
            responder_seq: p.responder_seq(),
        }
    }
    /// Writes the header of its layout into `buf` (at least `layout.header_len()` bytes). In the
    /// RFC layout a sender sequence of 0 would be read back as legacy; senders start at 1.
    pub fn emit(&self, buf: &mut [u8]) {
        buf[..self.layout.header_len()].fill(0);
        put16(buf, 0, ProbeType::JitterUs.into());
        put16(buf, 2, self.reserved);
        let mut p = Type3::new_unchecked(&mut *buf, self.layout);
        p.set_t1(self.t[0]);
        p.set_t2(self.t[1]);
        p.set_t3(self.t[2]);
        p.set_t4(self.t[3]);
        put64(buf, t3::S_OFF, self.clock_offsets[0]);
        let mut p = Type3::new_unchecked(&mut *buf, self.layout);
        p.set_responder_clock_offset(self.clock_offsets[1]);
        p.set_sender_seq(self.sender_seq);
        p.set_responder_seq(self.responder_seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn type2_capture_pair() {
        // IOS capture g729a F3/F4 (reference §(b)).
        let req =
            hex::decode("00020000029aa061000000000001000 0abcdabcdabcdabcdabcdabcdabcdabcd".replace(' ', "")).unwrap();
        let rep = hex::decode("00020000029aa061029aa06100010001abcdabcdabcdabcdabcdabcdabcdabcd").unwrap();
        assert_eq!(req.len(), 32);
        let q = Type2::new_checked(&req[..]).unwrap();
        assert_eq!(
            Type2Repr::parse(&q),
            Type2Repr { processing_ms: 0, t1: 0x029a_a061, t2: 0, sender_seq: 1, responder_seq: 0 }
        );
        let r = Type2::new_checked(&rep[..]).unwrap();
        assert_eq!(r.t2(), 0x029a_a061);
        assert_eq!(r.responder_seq(), 1);
        // Building the reply from the request with the responder's fields gives the capture.
        let mut built = req.clone();
        let mut p = Type2::new_unchecked(&mut built[..]);
        p.set_t2(0x029a_a061);
        p.set_responder_seq(1);
        assert_eq!(built, rep);
    }

    #[test]
    fn type2_rejects() {
        assert_eq!(Type2::new_checked(&[0u8, 2, 0][..]).unwrap_err(), Error::Truncated);
        assert_eq!(Type2::new_checked(&[0u8; 16][..]).unwrap_err(), Error::UnknownType(0));
    }

    #[test]
    fn echo_capture_pattern() {
        // IOS capture udp_echo F3: 00010000 abcd×6; service capture: 00010000 aabbccdd×24.
        let mut b = [0u8; 16];
        b[1] = 1;
        fill_pattern(&mut b[4..], &[0xab, 0xcd]);
        assert_eq!(hex::encode(b), "00010000abcdabcdabcdabcdabcdabcd");
        assert_eq!(probe_type(&b), Some(ProbeType::Echo));
        assert_eq!(probe_type(&b[..1]), None);
    }

    #[test]
    fn type3_layout_detection() {
        let mut b = [0u8; 64];
        b[1] = 3;
        // RFC: u32 seq 5 at 52 → bytes 52..56 = 00 00 00 05
        put32(&mut b, 52, 5);
        assert_eq!(Type3Layout::detect(&b), Type3Layout::Rfc);
        let p = Type3::new_checked(&b[..], Type3Layout::Rfc).unwrap();
        assert_eq!(p.sender_seq(), 5);
        // legacy: u16 seq 5 at 52
        let mut c = [0u8; 64];
        c[1] = 3;
        put16(&mut c, 52, 5);
        assert_eq!(Type3Layout::detect(&c), Type3Layout::Legacy);
        assert_eq!(Type3::new_checked(&c[..], Type3Layout::Legacy).unwrap().sender_seq(), 5);
        // a 56-byte packet can only be legacy
        assert_eq!(Type3Layout::detect(&b[..56]), Type3Layout::Legacy);
        assert_eq!(Type3::new_checked(&b[..56], Type3Layout::Rfc).unwrap_err(), Error::Truncated);
    }

    proptest! {
        #[test]
        fn type2_roundtrip(r in any::<(u16, u32, u32, u16, u16)>(), extra in 0usize..64) {
            let r = Type2Repr { processing_ms: r.0, t1: r.1, t2: r.2, sender_seq: r.3, responder_seq: r.4 };
            let mut b = vec![0u8; 16 + extra];
            r.emit(&mut b);
            prop_assert_eq!(Type2Repr::parse(&Type2::new_checked(&b[..]).unwrap()), r);
        }

        #[test]
        fn type3_roundtrip(t in any::<[u64; 4]>(), off in any::<[u64; 2]>(), res in any::<u16>(), s in 1u32.., rs in any::<u32>(), rfc in any::<bool>()) {
            let layout = if rfc { Type3Layout::Rfc } else { Type3Layout::Legacy };
            let (s, rs) = if rfc { (s, rs) } else { (s & 0xffff, rs & 0xffff) };
            let r = Type3Repr { layout, reserved: res, t, clock_offsets: off, sender_seq: s, responder_seq: rs };
            let mut b = vec![0u8; 60];
            r.emit(&mut b);
            prop_assert_eq!(Type3Repr::parse(&Type3::new_checked(&b[..], layout).unwrap()), r);
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = Type2::new_checked(&data[..]).map(|p| Type2Repr::parse(&p));
            let l = Type3Layout::detect(&data);
            let _ = Type3::new_checked(&data[..], l).map(|p| Type3Repr::parse(&p));
        }
    }
}
