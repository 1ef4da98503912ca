//! The legacy version-1 control message (what real IOS sends to UDP 1967).
//!
//! Layout (IOS capture, reference §2): an 8-byte header, then TLVs whose length counts their own
//! 4-byte header. A request carries a measurement TLV (first) and an authentication TLV (type 1,
//! 28 bytes, all zero without a key chain). The responder's reply is the header plus the first
//! TLV, with the total length rewritten: see [`emit_reply`].
//!
//! ```text
//!  0       1       2               4                               8
//! +-------+-------+---------------+-------------------------------+
//! | ver=1 |  seq  | total length  |   status (0 in every capture)  |
//! +-------+-------+---------------+-------------------------------+
//! | TLV type      | TLV length (incl. this 4-byte header) | body ...
//! ```

use crate::{Error, Result, be16, be32, open_enum, put16, put32};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

mod field {
    use core::ops::Range;
    pub const VERSION: usize = 0;
    pub const SEQUENCE: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const STATUS: Range<usize> = 4..8;
    pub const TLVS: usize = 8;
}

/// Size of the fixed header.
pub const HEADER_LEN: usize = 8;
/// Size of the TLV header (type + length).
pub const TLV_HEADER_LEN: usize = 4;
/// Length of the IPv4 measurement TLV (IOS capture).
pub const MEASUREMENT_V4_LEN: usize = 16;
/// Length of the IPv6 measurement TLV (frame quoted by cmouse/ip-sla-responder).
pub const MEASUREMENT_V6_LEN: usize = 32;
/// Length of the authentication TLV (IOS capture).
pub const AUTH_LEN: usize = 28;
/// Size of the authentication data in the auth TLV.
pub const AUTH_DATA_LEN: usize = 24;
/// Largest control message we accept. IOS sends 52 (IPv4) or 68 (IPv6) bytes.
pub const MAX_LEN: usize = 512;

open_enum! {
    /// TLV type codes of the v1 control message.
    pub enum TlvType(u16) {
        /// Authentication data (IOS capture: 24 zero bytes without a key chain).
        Auth = 1,
        /// Measurement request, udp-echo, IPv4 (IOS capture).
        UdpEcho = 2,
        /// Measurement request, tcp-connect, IPv4 (IOS capture).
        TcpConnect = 3,
        /// Measurement request, udp-jitter incl. voice codecs, IPv4 (IOS capture).
        UdpJitter = 4,
        /// udp-echo, IPv6: inferred as IPv4 code + 4, not yet seen on the wire.
        UdpEchoV6 = 6,
        /// tcp-connect, IPv6: inferred as IPv4 code + 4, not yet seen on the wire.
        TcpConnectV6 = 7,
        /// udp-jitter, IPv6 (one frame quoted by cmouse; its 7000 ms duration fits 5000 + 100 × 20).
        UdpJitterV6 = 8,
    }
}

/// The operation a measurement TLV asks the responder to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// One UDP echo (probe type 1); Cisco closes the port after answering it.
    UdpEcho,
    /// A TCP listener that accepts and closes.
    TcpConnect,
    /// UDP jitter probes (types 2 and 3).
    UdpJitter,
}

impl Operation {
    /// The TLV type for this operation and address family.
    pub fn tlv_type(self, ipv6: bool) -> TlvType {
        match (self, ipv6) {
            (Operation::UdpEcho, false) => TlvType::UdpEcho,
            (Operation::TcpConnect, false) => TlvType::TcpConnect,
            (Operation::UdpJitter, false) => TlvType::UdpJitter,
            (Operation::UdpEcho, true) => TlvType::UdpEchoV6,
            (Operation::TcpConnect, true) => TlvType::TcpConnectV6,
            (Operation::UdpJitter, true) => TlvType::UdpJitterV6,
        }
    }

    fn from_tlv_type(t: TlvType) -> Option<Operation> {
        Some(match t {
            TlvType::UdpEcho | TlvType::UdpEchoV6 => Operation::UdpEcho,
            TlvType::TcpConnect | TlvType::TcpConnectV6 => Operation::TcpConnect,
            TlvType::UdpJitter | TlvType::UdpJitterV6 => Operation::UdpJitter,
            _ => return None,
        })
    }
}

/// A zero-copy view of a v1 control message.
#[derive(Debug, Clone)]
pub struct ControlV1<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ControlV1<T> {
    /// Wraps a buffer without checks. Accessors may panic on short buffers; use for emitting.
    pub fn new_unchecked(buffer: T) -> Self {
        ControlV1 { buffer }
    }

    /// Wraps untrusted bytes: checks the version, that the length field equals the buffer length
    /// and that the TLVs tile the rest exactly. After this no accessor can panic.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check()?;
        Ok(p)
    }

    fn check(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[field::VERSION] != 1 {
            return Err(Error::UnsupportedVersion(b[field::VERSION]));
        }
        if b.len() > MAX_LEN || usize::from(self.total_length()) != b.len() {
            return Err(Error::BadLength);
        }
        let mut it = self.tlvs();
        for t in &mut it {
            t?;
        }
        Ok(())
    }

    /// Header version (1 for this format).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }
    /// Per-sender message sequence, echoed in the reply; kept on retries (IOS capture).
    pub fn sequence(&self) -> u8 {
        self.buffer.as_ref()[field::SEQUENCE]
    }
    /// Total length of the message in octets (IOS capture: 52 request, 24 reply).
    pub fn total_length(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH.start)
    }
    /// Bytes 4–7: zero in every capture; probably a status code (reference open question 1).
    pub fn status(&self) -> u32 {
        be32(self.buffer.as_ref(), field::STATUS.start)
    }
    /// Iterates over the TLVs. Each item is `(type, whole TLV bytes)` or the framing error.
    pub fn tlvs(&self) -> TlvIter<'_> {
        let b = self.buffer.as_ref();
        TlvIter { rest: b.get(field::TLVS..).unwrap_or(&[]), failed: false }
    }
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ControlV1<T> {
    /// Sets the version octet.
    pub fn set_version(&mut self, v: u8) {
        self.buffer.as_mut()[field::VERSION] = v;
    }
    /// Sets the sequence octet.
    pub fn set_sequence(&mut self, v: u8) {
        self.buffer.as_mut()[field::SEQUENCE] = v;
    }
    /// Sets the total length.
    pub fn set_total_length(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH.start, v);
    }
    /// Sets the status word.
    pub fn set_status(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::STATUS.start, v);
    }
}

/// Iterator over v1 TLVs; stops after the first framing error.
#[derive(Debug)]
pub struct TlvIter<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Iterator for TlvIter<'a> {
    type Item = Result<(TlvType, &'a [u8])>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        if self.rest.len() < TLV_HEADER_LEN {
            self.failed = true;
            return Some(Err(Error::Truncated));
        }
        let len = usize::from(be16(self.rest, 2));
        if len < TLV_HEADER_LEN || len > self.rest.len() {
            self.failed = true;
            return Some(Err(Error::BadLength));
        }
        let (tlv, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(Ok((TlvType::from(be16(tlv, 0)), tlv)))
    }
}

/// The body of a measurement TLV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MeasurementRepr {
    /// What to serve.
    pub operation: Operation,
    /// Bytes 4–7 of the TLV: zero in every capture, meaning unknown; carried through unchanged.
    pub reserved: u32,
    /// The responder address the sender wants enabled.
    pub target: IpAddr,
    /// UDP or TCP port to open.
    pub port: u16,
    /// How long to keep it open, in ms. IPv4 carries a u16; IPv6 is read as a u32 (both readings
    /// of the one known IPv6 frame agree).
    pub duration_ms: u32,
}

impl MeasurementRepr {
    /// Parses a whole measurement TLV (header included).
    pub fn parse(tlv_type: TlvType, tlv: &[u8]) -> Result<Self> {
        let operation = Operation::from_tlv_type(tlv_type).ok_or(Error::UnknownType(tlv_type.into()))?;
        match tlv.len() {
            MEASUREMENT_V4_LEN => Ok(MeasurementRepr {
                operation,
                reserved: be32(tlv, 4),
                target: IpAddr::V4(Ipv4Addr::new(tlv[8], tlv[9], tlv[10], tlv[11])),
                port: be16(tlv, 12),
                duration_ms: u32::from(be16(tlv, 14)),
            }),
            MEASUREMENT_V6_LEN => {
                let mut a = [0u8; 16];
                a.copy_from_slice(&tlv[8..24]);
                Ok(MeasurementRepr {
                    operation,
                    reserved: be32(tlv, 4),
                    target: IpAddr::V6(Ipv6Addr::from(a)),
                    port: be16(tlv, 24),
                    duration_ms: be32(tlv, 28),
                })
            }
            _ => Err(Error::BadLength),
        }
    }

    /// Length of the TLV this repr emits.
    pub fn buffer_len(&self) -> usize {
        match self.target {
            IpAddr::V4(_) => MEASUREMENT_V4_LEN,
            IpAddr::V6(_) => MEASUREMENT_V6_LEN,
        }
    }

    /// Emits the whole TLV into `buf[..buffer_len()]`. An IPv4 duration above 65 535 ms is
    /// clamped, since the field is 16 bits.
    pub fn emit(&self, buf: &mut [u8]) {
        let len = self.buffer_len();
        let buf = &mut buf[..len];
        buf.fill(0);
        let v6 = self.target.is_ipv6();
        put16(buf, 0, self.operation.tlv_type(v6).into());
        put16(buf, 2, len as u16);
        put32(buf, 4, self.reserved);
        match self.target {
            IpAddr::V4(a) => {
                buf[8..12].copy_from_slice(&a.octets());
                put16(buf, 12, self.port);
                put16(buf, 14, self.duration_ms.min(u32::from(u16::MAX)) as u16);
            }
            IpAddr::V6(a) => {
                buf[8..24].copy_from_slice(&a.octets());
                put16(buf, 24, self.port);
                put32(buf, 28, self.duration_ms);
            }
        }
    }
}

/// A whole v1 control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ControlV1Repr {
    /// Message sequence octet.
    pub sequence: u8,
    /// Bytes 4–7 (0 in every capture).
    pub status: u32,
    /// The measurement TLV.
    pub measurement: MeasurementRepr,
    /// The 24 bytes of the authentication TLV when present (all zero without a key chain).
    pub auth: Option<[u8; AUTH_DATA_LEN]>,
}

impl ControlV1Repr {
    /// Parses a checked view: exactly one measurement TLV, at most one auth TLV, nothing else.
    pub fn parse<T: AsRef<[u8]>>(p: &ControlV1<T>) -> Result<Self> {
        let mut measurement = None;
        let mut auth = None;
        for t in p.tlvs() {
            let (ty, tlv) = t?;
            match ty {
                TlvType::Auth => {
                    if auth.is_some() || tlv.len() != AUTH_LEN {
                        return Err(Error::Malformed);
                    }
                    let mut a = [0u8; AUTH_DATA_LEN];
                    a.copy_from_slice(&tlv[TLV_HEADER_LEN..]);
                    auth = Some(a);
                }
                other => {
                    if measurement.is_some() {
                        return Err(Error::Malformed);
                    }
                    measurement = Some(MeasurementRepr::parse(other, tlv)?);
                }
            }
        }
        Ok(ControlV1Repr {
            sequence: p.sequence(),
            status: p.status(),
            measurement: measurement.ok_or(Error::Malformed)?,
            auth,
        })
    }

    /// Total length of the emitted message.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.measurement.buffer_len() + if self.auth.is_some() { AUTH_LEN } else { 0 }
    }

    /// Emits header, measurement TLV and (if any) auth TLV, in the order IOS sends them.
    pub fn emit(&self, buf: &mut [u8]) {
        let len = self.buffer_len();
        let buf = &mut buf[..len];
        let mut p = ControlV1::new_unchecked(&mut *buf);
        p.set_version(1);
        p.set_sequence(self.sequence);
        p.set_total_length(len as u16);
        p.set_status(self.status);
        let m = self.measurement.buffer_len();
        self.measurement.emit(&mut buf[HEADER_LEN..HEADER_LEN + m]);
        if let Some(a) = &self.auth {
            let at = HEADER_LEN + m;
            put16(buf, at, TlvType::Auth.into());
            put16(buf, at + 2, AUTH_LEN as u16);
            buf[at + TLV_HEADER_LEN..at + AUTH_LEN].copy_from_slice(a);
        }
    }

    /// The request a source sends: measurement TLV plus a zero auth TLV (IOS capture, 52 bytes
    /// for IPv4).
    pub fn request(sequence: u8, measurement: MeasurementRepr) -> Self {
        ControlV1Repr { sequence, status: 0, measurement, auth: Some([0; AUTH_DATA_LEN]) }
    }
}

/// Builds the reply the way IOS does (IOS capture, verified on all five exchanges): the request's
/// header and its measurement TLV, byte for byte, with the total length rewritten. Returns the
/// reply length, or `None` when `out` is too small or the request has no measurement TLV.
pub fn emit_reply<T: AsRef<[u8]>>(request: &ControlV1<T>, out: &mut [u8]) -> Option<usize> {
    let b = request.as_bytes();
    let tlv = request.tlvs().filter_map(|t| t.ok()).find(|(ty, _)| *ty != TlvType::Auth).map(|(_, tlv)| tlv)?;
    let len = HEADER_LEN + tlv.len();
    let out = out.get_mut(..len)?;
    out[..HEADER_LEN].copy_from_slice(&b[..HEADER_LEN]);
    out[HEADER_LEN..].copy_from_slice(tlv);
    put16(out, field::LENGTH.start, len as u16);
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn capture(seq: u8, op: u8, port: u16, dur: u16) -> (Vec<u8>, Vec<u8>) {
        // Reference §(b), "Control exchanges": request 52 B, reply 24 B.
        let mut req = hex::decode(
            format!("01{seq:02x}003400000000 00{op:02x}0010 00000000 c0a80c02 {port:04x}{dur:04x} 0001001c")
                .replace(' ', ""),
        )
        .unwrap();
        req.extend_from_slice(&[0u8; 24]);
        let rep = hex::decode(
            format!("01{seq:02x}001800000000 00{op:02x}0010 00000000 c0a80c02 {port:04x}{dur:04x}").replace(' ', ""),
        )
        .unwrap();
        (req, rep)
    }

    type Capture = (Vec<u8>, Vec<u8>, Operation, u16, u32);

    fn all_captures() -> Vec<Capture> {
        vec![
            // udp_echo (74884f75), tcp_connect (9e4566ec), g711alaw, g711ulaw, g729a
            {
                let (a, b) = capture(0x69, 2, 0xa616, 0x1388);
                (a, b, Operation::UdpEcho, 42518, 5000)
            },
            {
                let (a, b) = capture(0x74, 3, 0xa616, 0x1388);
                (a, b, Operation::TcpConnect, 42518, 5000)
            },
            {
                let (a, b) = capture(0x6e, 4, 0x4000, 0x1518);
                (a, b, Operation::UdpJitter, 16384, 5400)
            },
            {
                let (a, b) = capture(0x70, 4, 0x4000, 0x1518);
                (a, b, Operation::UdpJitter, 16384, 5400)
            },
            {
                let (a, b) = capture(0x72, 4, 0x4000, 0x1518);
                (a, b, Operation::UdpJitter, 16384, 5400)
            },
        ]
    }

    #[test]
    fn parses_every_captured_request() {
        for (req, _, op, port, dur) in all_captures() {
            let p = ControlV1::new_checked(&req[..]).unwrap();
            let r = ControlV1Repr::parse(&p).unwrap();
            assert_eq!(r.measurement.operation, op);
            assert_eq!(r.measurement.port, port);
            assert_eq!(r.measurement.duration_ms, dur);
            assert_eq!(r.measurement.target, IpAddr::V4(Ipv4Addr::new(192, 168, 12, 2)));
            assert_eq!(r.auth, Some([0; 24]));
            // The source side builds exactly the bytes IOS sent.
            let mut out = [0u8; 64];
            let again = ControlV1Repr::request(r.sequence, r.measurement);
            again.emit(&mut out);
            assert_eq!(&out[..again.buffer_len()], &req[..]);
        }
    }

    #[test]
    fn reply_is_byte_identical_to_ios() {
        for (req, rep, ..) in all_captures() {
            let p = ControlV1::new_checked(&req[..]).unwrap();
            let mut out = [0u8; 64];
            let n = emit_reply(&p, &mut out).unwrap();
            assert_eq!(&out[..n], &rep[..]);
        }
    }

    #[test]
    fn ipv6_frame_from_cmouse() {
        // 68-byte request: type 8, length 32, target 2001:6e8:280::1:342d, port 50505, 7000 ms.
        let mut req = hex::decode(concat!(
            "013c004400000000",
            "0008002000000000",
            "200106e802800000000000000001342d",
            "c549000000001b58",
            "0001001c"
        ))
        .unwrap();
        req.extend_from_slice(&[0u8; 24]);
        assert_eq!(req.len(), 68);
        let r = ControlV1Repr::parse(&ControlV1::new_checked(&req[..]).unwrap()).unwrap();
        assert_eq!(r.measurement.operation, Operation::UdpJitter);
        assert_eq!(r.measurement.target, "2001:6e8:280::1:342d".parse::<IpAddr>().unwrap());
        assert_eq!(r.measurement.port, 50505);
        assert_eq!(r.measurement.duration_ms, 7000);
        let mut out = [0u8; 80];
        r.emit(&mut out);
        assert_eq!(&out[..68], &req[..]);
    }

    #[test]
    fn rejects_bad_framing() {
        let (req, ..) = capture(1, 4, 5000, 5200);
        assert_eq!(ControlV1::new_checked(&req[..7]).unwrap_err(), Error::Truncated);
        assert_eq!(ControlV1::new_checked(&req[..51]).unwrap_err(), Error::BadLength);
        let mut v2 = req.clone();
        v2[0] = 2;
        assert_eq!(ControlV1::new_checked(&v2[..]).unwrap_err(), Error::UnsupportedVersion(2));
        let mut bad_tlv = req.clone();
        bad_tlv[11] = 0x30; // measurement TLV claims 48 bytes
        assert_eq!(ControlV1::new_checked(&bad_tlv[..]).unwrap_err(), Error::BadLength);
        let mut tiny_tlv = req.clone();
        tiny_tlv[11] = 2; // shorter than its own header
        assert_eq!(ControlV1::new_checked(&tiny_tlv[..]).unwrap_err(), Error::BadLength);
        let mut unknown = req.clone();
        unknown[9] = 9;
        let p = ControlV1::new_checked(&unknown[..]).unwrap();
        assert_eq!(ControlV1Repr::parse(&p).unwrap_err(), Error::UnknownType(9));
        // no measurement TLV at all
        let mut only_auth = req[..8].to_vec();
        only_auth.extend_from_slice(&req[24..]);
        only_auth[3] = 36;
        let p = ControlV1::new_checked(&only_auth[..]).unwrap();
        assert_eq!(ControlV1Repr::parse(&p).unwrap_err(), Error::Malformed);
        assert_eq!(emit_reply(&p, &mut [0u8; 64]), None);
    }

    fn arb_repr() -> impl Strategy<Value = ControlV1Repr> {
        let op = prop_oneof![Just(Operation::UdpEcho), Just(Operation::TcpConnect), Just(Operation::UdpJitter)];
        let v4 = (any::<u32>(), any::<u16>()).prop_map(|(a, d)| (IpAddr::V4(Ipv4Addr::from(a)), u32::from(d)));
        let v6 = (any::<u128>(), any::<u32>()).prop_map(|(a, d)| (IpAddr::V6(Ipv6Addr::from(a)), d));
        (
            any::<u8>(),
            any::<u32>(),
            op,
            any::<u32>(),
            prop_oneof![v4, v6],
            any::<u16>(),
            proptest::option::of(any::<[u8; 24]>()),
        )
            .prop_map(|(sequence, status, operation, reserved, (target, duration_ms), port, auth)| {
                ControlV1Repr {
                    sequence,
                    status,
                    measurement: MeasurementRepr { operation, reserved, target, port, duration_ms },
                    auth,
                }
            })
    }

    proptest! {
        #[test]
        fn roundtrip(r in arb_repr()) {
            let mut buf = vec![0u8; r.buffer_len()];
            r.emit(&mut buf);
            let p = ControlV1::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(ControlV1Repr::parse(&p).unwrap(), r);
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(p) = ControlV1::new_checked(&data[..]) {
                let _ = ControlV1Repr::parse(&p);
                let _ = emit_reply(&p, &mut [0u8; 600]);
            }
        }
    }
}
