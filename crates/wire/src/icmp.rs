//! ICMP messages the ICMP operations use: Echo (RFC 792 types 8/0, RFC 4443 types 128/129) and
//! Timestamp (RFC 792 types 13/14).
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
