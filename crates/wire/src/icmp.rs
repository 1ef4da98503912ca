//! ICMP messages the ICMP operations use: Echo (RFC 792 types 8/0, RFC 4443 types 128/129),
//! Timestamp (RFC 792 types 13/14), and the errors path discovery reads: Time Exceeded and
//! Destination Unreachable (RFC 792 types 11/3, RFC 4443 types 3/1) with the datagram they quote
//! ([`IcmpErrorRepr`]).
//!
//! Timestamps are ms since midnight UTC. IOS sets the most significant bit of the originate time
//! (RFC 792's "non-standard time" flag, IOS icmp_jitter capture: `829f4ec9`); a Linux target answers
//! with the bit clear, so readers mask it ([`TIMESTAMP_MASK`]).

use crate::{Error, Result, be16, be32, put16, put32};

/// The 8-byte ICMP header (type, code, checksum, identifier, sequence).
pub const HEADER_LEN: usize = 8;
/// A timestamp message: header + originate, receive, transmit.
pub const TIMESTAMP_LEN: usize = 20;
/// Clears RFC 792's non-standard-time flag.
pub const TIMESTAMP_MASK: u32 = 0x7fff_ffff;

/// ICMPv4 Echo Request.
pub const ECHO_REQUEST_V4: u8 = 8;
/// ICMPv4 Echo Reply.
pub const ECHO_REPLY_V4: u8 = 0;
/// ICMPv6 Echo Request.
pub const ECHO_REQUEST_V6: u8 = 128;
/// ICMPv6 Echo Reply.
pub const ECHO_REPLY_V6: u8 = 129;
/// ICMPv4 Timestamp Request.
pub const TIMESTAMP_REQUEST: u8 = 13;
/// ICMPv4 Timestamp Reply.
pub const TIMESTAMP_REPLY: u8 = 14;

/// ICMPv4 Destination Unreachable (RFC 792).
pub const DEST_UNREACHABLE_V4: u8 = 3;
/// ICMPv4 Time Exceeded (RFC 792).
pub const TIME_EXCEEDED_V4: u8 = 11;
/// ICMPv6 Destination Unreachable (RFC 4443 §3.1).
pub const DEST_UNREACHABLE_V6: u8 = 1;
/// ICMPv6 Time Exceeded (RFC 4443 §3.3).
pub const TIME_EXCEEDED_V6: u8 = 3;
/// ICMPv4 Destination Unreachable code "port unreachable" (RFC 792): the target itself answered.
pub const PORT_UNREACHABLE_V4: u8 = 3;
/// ICMPv6 Destination Unreachable code "port unreachable" (RFC 4443 §3.1).
pub const PORT_UNREACHABLE_V6: u8 = 4;
/// IP protocol number of UDP (the quoted datagram of a path probe).
pub const PROTO_UDP: u8 = 17;

/// What an ICMP error says happened to the datagram it quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Its hop limit ran out at the sender of the error (RFC 792 type 11, RFC 4443 type 3).
    TimeExceeded,
    /// It could not be delivered; `code` as the error carried it (port unreachable: the
    /// destination itself answered).
    Unreachable {
        /// The ICMP code (v4: RFC 792, v6: RFC 4443 §3.1).
        code: u8,
    },
}

/// The start of the datagram an ICMP error quotes: its addresses, protocol and the first four
/// bytes of its transport header (source and destination port for UDP and TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quote {
    /// Quoted source address.
    pub src: core::net::IpAddr,
    /// Quoted destination address.
    pub dst: core::net::IpAddr,
    /// Quoted protocol (IPv4 protocol, IPv6 next header).
    pub protocol: u8,
    /// Quoted transport source port.
    pub src_port: u16,
    /// Quoted transport destination port.
    pub dst_port: u16,
}

/// A Time Exceeded or Destination Unreachable message, parsed: RFC 792 requires the quote to hold
/// the IP header and at least 8 bytes of the datagram, RFC 4443 as much as fits; anything shorter
/// is [`Error::Truncated`], a quoted header of the wrong version or length [`Error::Malformed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IcmpErrorRepr {
    /// What happened.
    pub kind: ErrorKind,
    /// The datagram it is about.
    pub quote: Quote,
}

impl IcmpErrorRepr {
    /// Parses an ICMPv4 (`v6` false) or ICMPv6 error message (no outer IP header). Other message
    /// types are [`Error::UnknownType`].
    pub fn parse(icmp: &Icmp<&[u8]>, v6: bool) -> Result<IcmpErrorRepr> {
        let kind = match (v6, icmp.msg_type()) {
            (false, TIME_EXCEEDED_V4) | (true, TIME_EXCEEDED_V6) => ErrorKind::TimeExceeded,
            (false, DEST_UNREACHABLE_V4) | (true, DEST_UNREACHABLE_V6) => ErrorKind::Unreachable { code: icmp.code() },
            (_, t) => return Err(Error::UnknownType(u16::from(t))),
        };
        let q = icmp.payload();
        let quote = if v6 { quote_v6(q)? } else { quote_v4(q)? };
        Ok(IcmpErrorRepr { kind, quote })
    }
}

fn quote_v4(q: &[u8]) -> Result<Quote> {
    let first = *q.first().ok_or(Error::Truncated)?;
    if first >> 4 != 4 {
        return Err(Error::Malformed);
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 {
        return Err(Error::Malformed);
    }
    let l4 = q.get(ihl..ihl + 4).ok_or(Error::Truncated)?;
    let addr = |at: usize| core::net::Ipv4Addr::new(q[at], q[at + 1], q[at + 2], q[at + 3]);
    Ok(Quote {
        src: addr(12).into(),
        dst: addr(16).into(),
        protocol: q[9],
        src_port: be16(l4, 0),
        dst_port: be16(l4, 2),
    })
}

fn quote_v6(q: &[u8]) -> Result<Quote> {
    const V6_HEADER: usize = 40;
    let first = *q.first().ok_or(Error::Truncated)?;
    if first >> 4 != 6 {
        return Err(Error::Malformed);
    }
    let l4 = q.get(V6_HEADER..V6_HEADER + 4).ok_or(Error::Truncated)?;
    let addr = |at: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&q[at..at + 16]);
        core::net::Ipv6Addr::from(a)
    };
    Ok(Quote {
        src: addr(8).into(),
        dst: addr(24).into(),
        protocol: q[6],
        src_port: be16(l4, 0),
        dst_port: be16(l4, 2),
    })
}

/// A zero-copy view of an ICMP message (no IP header).
#[derive(Debug)]
pub struct Icmp<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmp<T> {
    /// At least the 8-byte header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Icmp { buffer })
    }
    /// Type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }
    /// Code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[1]
    }
    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }
    /// Identifier.
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }
    /// Sequence number.
    pub fn sequence(&self) -> u16 {
        be16(self.buffer.as_ref(), 6)
    }
    /// Data after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
    /// Originate, receive and transmit timestamps of a timestamp message (raw, unmasked).
    pub fn timestamps(&self) -> Result<[u32; 3]> {
        let b = self.buffer.as_ref();
        if b.len() < TIMESTAMP_LEN {
            return Err(Error::Truncated);
        }
        Ok([be32(b, 8), be32(b, 12), be32(b, 16)])
    }
    /// True when the Internet checksum over the message verifies (ICMPv4).
    pub fn checksum_ok(&self) -> bool {
        internet_checksum(self.buffer.as_ref()) == 0
    }
}

/// RFC 1071 Internet checksum.
pub fn internet_checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = b.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Writes an echo request (`v6` selects the ICMPv6 type) with `payload` into `buf`; returns its
/// length. The ICMPv4 checksum is filled in; for ICMPv6 the kernel computes it.
pub fn emit_echo_request(buf: &mut [u8], v6: bool, ident: u16, seq: u16, payload: &[u8]) -> usize {
    let len = HEADER_LEN + payload.len();
    let b = &mut buf[..len];
    b[0] = if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 };
    b[1] = 0;
    put16(b, 2, 0);
    put16(b, 4, ident);
    put16(b, 6, seq);
    b[HEADER_LEN..].copy_from_slice(payload);
    if !v6 {
        let c = internet_checksum(b);
        put16(b, 2, c);
    }
    len
}

/// Writes a timestamp request with the given originate time into `buf` (20 bytes).
pub fn emit_timestamp_request(buf: &mut [u8], ident: u16, seq: u16, originate: u32) -> usize {
    let b = &mut buf[..TIMESTAMP_LEN];
    b.fill(0);
    b[0] = TIMESTAMP_REQUEST;
    put16(b, 4, ident);
    put16(b, 6, seq);
    put32(b, 8, originate);
    let c = internet_checksum(b);
    put16(b, 2, c);
    TIMESTAMP_LEN
}

/// Strips an IPv4 header (as raw IPv4 sockets deliver it) and returns the ICMP part.
pub fn strip_ipv4_header(b: &[u8]) -> Result<&[u8]> {
    let first = *b.first().ok_or(Error::Truncated)?;
    if first >> 4 != 4 {
        return Err(Error::UnsupportedVersion(first >> 4));
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 {
        return Err(Error::Malformed);
    }
    b.get(ihl..).ok_or(Error::Truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ios_icmp_jitter_capture() {
        // icmp_jitter F1 (request) and F2 (reply from the Cisco target), reference §(b).
        let req = hex::decode("0d0021950001000182 9f4ec90000000000000000".replace(' ', "")).unwrap();
        let rep = hex::decode("0e007dc300010001829f4ec9829f4ec9829f4ec9").unwrap();
        let q = Icmp::new_checked(&req[..]).unwrap();
        assert_eq!((q.msg_type(), q.ident(), q.sequence()), (TIMESTAMP_REQUEST, 1, 1));
        assert!(q.checksum_ok());
        assert_eq!(q.timestamps().unwrap()[0] & TIMESTAMP_MASK, 0x029f_4ec9, "12:13:14.825 UTC");
        let r = Icmp::new_checked(&rep[..]).unwrap();
        assert!(r.checksum_ok());
        assert_eq!(r.msg_type(), TIMESTAMP_REPLY);
        // building the same request gives the captured bytes, checksum included
        let mut b = [0u8; 20];
        emit_timestamp_request(&mut b, 1, 1, 0x829f_4ec9);
        assert_eq!(&b[..], &req[..]);
    }

    #[test]
    fn echo_request_checksum() {
        let mut b = [0u8; 64];
        let n = emit_echo_request(&mut b, false, 13, 0, &[0xab, 0xcd, 0xab, 0xcd]);
        let p = Icmp::new_checked(&b[..n]).unwrap();
        assert!(p.checksum_ok());
        assert_eq!((p.msg_type(), p.ident(), p.payload()), (8, 13, &[0xab, 0xcd, 0xab, 0xcd][..]));
        // odd length
        let n = emit_echo_request(&mut b, false, 1, 2, &[1, 2, 3]);
        assert!(Icmp::new_checked(&b[..n]).unwrap().checksum_ok());
    }

    /// A time exceeded from 10.0.12.2 about a UDP probe 10.0.1.1:40000 → 10.0.3.2:33434 (built as
    /// a Linux router sends it: the quoted IP header and the whole UDP datagram).
    fn time_exceeded_v4() -> Vec<u8> {
        let mut m = vec![TIME_EXCEEDED_V4, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&hex::decode("4500002c1234000001117e3c0a0001010a000302").unwrap());
        m.extend_from_slice(&hex::decode("9c40829a0018abcd").unwrap());
        m.extend_from_slice(&[0xab; 16]);
        let c = internet_checksum(&m);
        put16(&mut m, 2, c);
        m
    }

    #[test]
    fn time_exceeded_quote() {
        let m = time_exceeded_v4();
        let p = Icmp::new_checked(&m[..]).unwrap();
        assert!(p.checksum_ok());
        let r = IcmpErrorRepr::parse(&p, false).unwrap();
        assert_eq!(r.kind, ErrorKind::TimeExceeded);
        assert_eq!(
            r.quote,
            Quote {
                src: "10.0.1.1".parse().unwrap(),
                dst: "10.0.3.2".parse().unwrap(),
                protocol: PROTO_UDP,
                src_port: 40000,
                dst_port: 33434,
            }
        );
        // port unreachable: same quote, the kind says the destination answered
        let mut u = m.clone();
        u[0] = DEST_UNREACHABLE_V4;
        u[1] = PORT_UNREACHABLE_V4;
        let r = IcmpErrorRepr::parse(&Icmp::new_checked(&u[..]).unwrap(), false).unwrap();
        assert_eq!(r.kind, ErrorKind::Unreachable { code: 3 });
    }

    #[test]
    fn error_quotes_are_checked() {
        let m = time_exceeded_v4();
        let parse = |b: &[u8], v6| IcmpErrorRepr::parse(&Icmp::new_checked(b).unwrap(), v6);
        // RFC 792: IP header + 8 bytes; the ports need the first 4 of them, one short is truncated
        assert_eq!(parse(&m[..8 + 20 + 4], false).unwrap().quote.dst_port, 33434);
        assert_eq!(parse(&m[..8 + 20 + 3], false).unwrap_err(), Error::Truncated);
        assert_eq!(parse(&m[..8], false).unwrap_err(), Error::Truncated);
        // a quoted header claiming options that are not there
        let mut o = m.clone();
        o[8] = 0x4f;
        assert_eq!(parse(&o[..8 + 24], false).unwrap_err(), Error::Truncated);
        // an IHL below 5, or a v6 header under a v4 error
        o[8] = 0x44;
        assert_eq!(parse(&o, false).unwrap_err(), Error::Malformed);
        o[8] = 0x60;
        assert_eq!(parse(&o, false).unwrap_err(), Error::Malformed);
        // echo replies and other types are not errors
        let mut e = m.clone();
        e[0] = ECHO_REPLY_V4;
        assert_eq!(parse(&e, false).unwrap_err(), Error::UnknownType(0));
        // v4 type numbers mean something else in ICMPv6 (3 is time exceeded, 11 unknown)
        assert_eq!(parse(&m, true).unwrap_err(), Error::UnknownType(11));
    }

    #[test]
    fn icmpv6_time_exceeded_quote() {
        // RFC 4443 §3.3: type 3, code 0, 4 unused bytes, then as much of the packet as fits
        let mut m = vec![TIME_EXCEEDED_V6, 0, 0, 0, 0, 0, 0, 0];
        let src: core::net::Ipv6Addr = "fd00:1::1".parse().unwrap();
        let dst: core::net::Ipv6Addr = "fd00:3::2".parse().unwrap();
        m.extend_from_slice(&[0x60, 0, 0, 0, 0, 12, PROTO_UDP, 1]);
        m.extend_from_slice(&src.octets());
        m.extend_from_slice(&dst.octets());
        m.extend_from_slice(&[0x9c, 0x40, 0x82, 0x9b, 0, 12, 0, 0, 1, 2, 3, 4]);
        let r = IcmpErrorRepr::parse(&Icmp::new_checked(&m[..]).unwrap(), true).unwrap();
        assert_eq!(r.kind, ErrorKind::TimeExceeded);
        assert_eq!((r.quote.src, r.quote.dst), (src.into(), dst.into()));
        assert_eq!((r.quote.protocol, r.quote.src_port, r.quote.dst_port), (PROTO_UDP, 40000, 33435));
        assert_eq!(
            IcmpErrorRepr::parse(&Icmp::new_checked(&m[..8 + 43]).unwrap(), true).unwrap_err(),
            Error::Truncated
        );
        m[0] = DEST_UNREACHABLE_V6;
        m[1] = PORT_UNREACHABLE_V6;
        let r = IcmpErrorRepr::parse(&Icmp::new_checked(&m[..]).unwrap(), true).unwrap();
        assert_eq!(r.kind, ErrorKind::Unreachable { code: PORT_UNREACHABLE_V6 });
    }

    #[test]
    fn ipv4_header_strip() {
        let mut pkt = vec![0x45u8; 1];
        pkt.resize(20, 0);
        pkt.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 1]);
        assert_eq!(strip_ipv4_header(&pkt).unwrap().len(), 8);
        assert_eq!(strip_ipv4_header(&[0x46, 0, 0]).unwrap_err(), Error::Truncated);
        assert_eq!(strip_ipv4_header(&[0x41]).unwrap_err(), Error::Malformed);
        assert_eq!(strip_ipv4_header(&[0x60]).unwrap_err(), Error::UnsupportedVersion(6));
        assert!(Icmp::new_checked(&[0u8; 7][..]).is_err());
        assert!(Icmp::new_checked(&[0u8; 8][..]).unwrap().timestamps().is_err());
    }
}
