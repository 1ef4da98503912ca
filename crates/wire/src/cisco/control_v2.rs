//! RFC 6812 version-2 control messages (UDP 1167).
//!
//! A message is a 20-byte Command-Header followed by CSLDs (Command, Status, Length, Data):
//! normally an Authentication CSLD (command 1) and a UDP-Measurement CSLD (command 2). The
//! response has the same format and reflects both CSLDs with their status filled in (RFC 6812
//! §3.1, §3.2). The RFC does not say whether Command-Length counts the 8-byte CSLD header; we
//! emit lengths that include it (as v1 does) and accept either convention on input, answering in
//! the convention the sender used.
//!
//! Authentication (RFC 6812 §3.2.1): mode 1 = SHA-256 over (secret ∥ message), mode 2 =
//! HMAC-SHA-256 keyed with the secret over the message, the digest field zeroed while hashing,
//! full 256-bit digest (the field is 256 bits wide; see reference discrepancy D16).

use crate::time::NtpTimestamp;
use crate::{Error, Result, be16, be32, be64, open_enum, put16, put32, put64};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

mod field {
    pub const VERSION: usize = 0;
    pub const STATUS: usize = 2;
    pub const SEQUENCE: usize = 4;
    pub const LENGTH: usize = 8;
    pub const TIMESTAMP: usize = 12;
    // within a CSLD
    pub const C_COMMAND: usize = 0;
    pub const C_STATUS: usize = 2;
    pub const C_LENGTH: usize = 4;
    pub const C_DATA: usize = 8;
    // auth CSLD data
    pub const A_MODE: usize = 0;
    pub const A_KEY_ID: usize = 2;
    pub const A_RANDOM: usize = 4;
    pub const A_DIGEST: usize = 20;
    // UDP-Measurement CSLD data
    pub const U_ADDR_TYPE: usize = 0;
    pub const U_ROLE: usize = 1;
    pub const U_SESSION: usize = 4;
    pub const U_CTRL_SRC: usize = 8;
    pub const U_CTRL_DST: usize = 24;
    pub const U_MEAS_SRC: usize = 40;
    pub const U_MEAS_DST: usize = 56;
    pub const U_CTRL_SRC_PORT: usize = 72;
    pub const U_MEAS_SRC_PORT: usize = 76;
    pub const U_MEAS_DST_PORT: usize = 78;
    pub const U_DURATION: usize = 80;
}

/// Command-Header size (RFC 6812 §3.1).
pub const HEADER_LEN: usize = 20;
/// CSLD header size: command, status, length.
pub const CSLD_HEADER_LEN: usize = 8;
/// Authentication data with random number and digest (RFC 6812 §3.2.1).
pub const AUTH_DATA_LEN: usize = 52;
/// Authentication data without random and digest (mode 0 may omit them).
pub const AUTH_SHORT_DATA_LEN: usize = 4;
/// UDP-Measurement data (RFC 6812 §3.2.2).
pub const UDP_DATA_LEN: usize = 84;
/// Largest control message we accept (a full request is 172 bytes).
pub const MAX_LEN: usize = 1024;
/// Size of the digest field.
pub const DIGEST_LEN: usize = 32;

open_enum! {
    /// Status codes (RFC 6812 §5, "Status Codes" registry).
    pub enum Status(u16) {
        /// Success.
        Success = 0,
        /// Catch-all failure.
        Failure = 1,
        /// Authentication failure.
        AuthFailure = 2,
        /// Unknown CSLD or unrecognised value.
        FormatError = 3,
        /// The requested port cannot be reserved.
        PortInUse = 4,
    }
}

open_enum! {
    /// CSLD command codes (RFC 6812 §5).
    pub enum Command(u16) {
        /// Authentication CSLD; always present.
        Authentication = 1,
        /// UDP-Measurement CSLD.
        UdpMeasurement = 2,
    }
}

open_enum! {
    /// Authentication modes (RFC 6812 §3.2.1).
    pub enum AuthMode(u8) {
        /// No authentication.
        None = 0,
        /// SHA-256 over secret ∥ message.
        Sha256 = 1,
        /// HMAC-SHA-256 keyed with the secret.
        HmacSha256 = 2,
    }
}

/// A zero-copy view of a v2 control message, with the CSLD positions found by `new_checked`.
#[derive(Debug, Clone)]
pub struct ControlV2<T: AsRef<[u8]>> {
    buffer: T,
    index: Index,
}

/// Where the CSLDs sit in a checked message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Index {
    /// Offset of the Authentication CSLD, if present.
    pub auth: Option<usize>,
    /// Offset of the UDP-Measurement CSLD, if present.
    pub udp: Option<usize>,
    /// Offset and code of the first CSLD with an unknown command, or a duplicate known one.
    pub unknown: Option<(usize, u16)>,
    /// True when the sender's Command-Length values exclude the 8-byte CSLD header.
    pub lengths_exclude_header: bool,
}

impl<T: AsRef<[u8]>> ControlV2<T> {
    /// Wraps untrusted bytes: version 2, length field = buffer length, CSLDs tile the rest.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[field::VERSION] != 2 {
            return Err(Error::UnsupportedVersion(b[field::VERSION]));
        }
        if b.len() > MAX_LEN || be32(b, field::LENGTH) as usize != b.len() {
            return Err(Error::BadLength);
        }
        let index = scan(b, false).or_else(|e| scan(b, true).map_err(|_| e))?;
        Ok(ControlV2 { buffer, index })
    }

    /// The CSLD positions.
    pub fn index(&self) -> Index {
        self.index
    }
    /// Header status (ignored in requests).
    pub fn status(&self) -> u16 {
        be16(self.buffer.as_ref(), field::STATUS)
    }
    /// Sequence number; a retry keeps it (RFC 6812 §3.1).
    pub fn sequence(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQUENCE)
    }
    /// Send timestamp, NTP format, or zero when unused.
    pub fn timestamp(&self) -> NtpTimestamp {
        NtpTimestamp(be64(self.buffer.as_ref(), field::TIMESTAMP))
    }
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    /// Authentication mode and key id, if an Authentication CSLD is present.
    pub fn auth_mode(&self) -> Option<(AuthMode, u16)> {
        let at = self.index.auth? + field::C_DATA;
        let b = self.buffer.as_ref();
        Some((AuthMode::from(b[at + field::A_MODE]), be16(b, at + field::A_KEY_ID)))
    }
    fn digest_offset(&self) -> Option<usize> {
        let at = self.index.auth?;
        let len = csld_data_len(self.buffer.as_ref(), at, self.index.lengths_exclude_header);
        (len == AUTH_DATA_LEN).then_some(at + field::C_DATA + field::A_DIGEST)
    }
    /// The digest carried in the message (`None` for the short auth form).
    pub fn digest(&self) -> Option<[u8; DIGEST_LEN]> {
        let at = self.digest_offset()?;
        let mut d = [0u8; DIGEST_LEN];
        d.copy_from_slice(&self.buffer.as_ref()[at..at + DIGEST_LEN]);
        Some(d)
    }
    /// Computes the digest of this message for `mode` and `secret`, with the digest field taken
    /// as zero. `None` for mode 0, unknown modes, or when the message has no digest field.
    pub fn compute_digest(&self, mode: AuthMode, secret: &[u8]) -> Option<[u8; DIGEST_LEN]> {
        let at = self.digest_offset()?;
        let b = self.buffer.as_ref();
        let parts = [&b[..at], &[0u8; DIGEST_LEN][..], &b[at + DIGEST_LEN..]];
        match mode {
            AuthMode::Sha256 => {
                let mut h = Sha256::new();
                h.update(secret);
                parts.iter().for_each(|p| h.update(p));
                Some(h.finalize().into())
            }
            AuthMode::HmacSha256 => {
                let mut h = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret).ok()?;
                parts.iter().for_each(|p| h.update(p));
                Some(h.finalize().into_bytes().into())
            }
            _ => None,
        }
    }
    /// Checks the carried digest against `secret` in constant time.
    pub fn verify(&self, mode: AuthMode, secret: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        match (self.compute_digest(mode, secret), self.digest()) {
            (Some(want), Some(got)) => want.ct_eq(&got).into(),
            _ => false,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ControlV2<T> {
    /// Sets the header status.
    pub fn set_status(&mut self, s: Status) {
        put16(self.buffer.as_mut(), field::STATUS, s.into());
    }
    /// Sets the send timestamp.
    pub fn set_timestamp(&mut self, t: NtpTimestamp) {
        put64(self.buffer.as_mut(), field::TIMESTAMP, t.0);
    }
    /// Sets the status of the Authentication CSLD, if present.
    pub fn set_auth_status(&mut self, s: Status) {
        if let Some(at) = self.index.auth {
            put16(self.buffer.as_mut(), at + field::C_STATUS, s.into());
        }
    }
    /// Sets the status of the UDP-Measurement CSLD, if present.
    pub fn set_udp_status(&mut self, s: Status) {
        if let Some(at) = self.index.udp {
            put16(self.buffer.as_mut(), at + field::C_STATUS, s.into());
        }
    }
    /// Sets the status of the first unknown CSLD, if any.
    pub fn set_unknown_status(&mut self, s: Status) {
        if let Some((at, _)) = self.index.unknown {
            put16(self.buffer.as_mut(), at + field::C_STATUS, s.into());
        }
    }
    /// Sets the measurement destination port (the responder's choice for port 0).
    pub fn set_udp_meas_dst_port(&mut self, port: u16) {
        if let Some(at) = self.index.udp {
            put16(self.buffer.as_mut(), at + field::C_DATA + field::U_MEAS_DST_PORT, port);
        }
    }
    /// Sets the session identifier (the responder may substitute its own).
    pub fn set_udp_session_id(&mut self, id: u32) {
        if let Some(at) = self.index.udp {
            put32(self.buffer.as_mut(), at + field::C_DATA + field::U_SESSION, id);
        }
    }
    /// Writes `digest` into the digest field, if the message has one.
    pub fn set_digest(&mut self, digest: &[u8; DIGEST_LEN]) {
        if let Some(at) = self.digest_offset() {
            self.buffer.as_mut()[at..at + DIGEST_LEN].copy_from_slice(digest);
        }
    }
    /// Recomputes and writes the digest for `mode`/`secret` (no-op for mode 0).
    pub fn sign(&mut self, mode: AuthMode, secret: &[u8]) {
        if let Some(d) = self.compute_digest(mode, secret) {
            self.set_digest(&d);
        }
    }
}

fn csld_data_len(b: &[u8], at: usize, exclusive: bool) -> usize {
    let len = be32(b, at + field::C_LENGTH) as usize;
    if exclusive { len } else { len - CSLD_HEADER_LEN }
}

fn scan(b: &[u8], exclusive: bool) -> Result<Index> {
    let mut index = Index { lengths_exclude_header: exclusive, ..Index::default() };
    let mut at = HEADER_LEN;
    while at < b.len() {
        if b.len() - at < CSLD_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let raw = be32(b, at + field::C_LENGTH) as usize;
        let total = if exclusive { raw.checked_add(CSLD_HEADER_LEN) } else { Some(raw) };
        let total = total.filter(|t| *t >= CSLD_HEADER_LEN && *t <= b.len() - at).ok_or(Error::BadLength)?;
        let data = total - CSLD_HEADER_LEN;
        let code = be16(b, at + field::C_COMMAND);
        match Command::from(code) {
            Command::Authentication if index.auth.is_none() => {
                if data != AUTH_DATA_LEN && data != AUTH_SHORT_DATA_LEN {
                    return Err(Error::BadLength);
                }
                index.auth = Some(at);
            }
            Command::UdpMeasurement if index.udp.is_none() => {
                if data != UDP_DATA_LEN {
                    return Err(Error::BadLength);
                }
                index.udp = Some(at);
            }
            _ => {
                if index.unknown.is_none() {
                    index.unknown = Some((at, code));
                }
            }
        }
        at += total;
    }
    Ok(index)
}

/// The Authentication CSLD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuthRepr {
    /// CSLD status.
    pub status: Status,
    /// Mode.
    pub mode: AuthMode,
    /// Selects the shared secret.
    pub key_id: u16,
    /// Random number and digest; `None` for the 4-byte form mode 0 may use.
    pub long: Option<([u8; 16], [u8; DIGEST_LEN])>,
}

/// The UDP-Measurement CSLD (RFC 6812 §3.2.2). Addresses are all of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpMeasurementRepr {
    /// CSLD status.
    pub status: Status,
    /// Role octet. RFC 6812 is inconsistent about its values (reference D15); carried as is.
    pub role: u8,
    /// Session identifier (0 if unused).
    pub session_id: u32,
    /// Control source address (sender).
    pub control_src: IpAddr,
    /// Control destination address (responder).
    pub control_dst: IpAddr,
    /// Measurement source address (sender).
    pub meas_src: IpAddr,
    /// Measurement destination address (responder ingress).
    pub meas_dst: IpAddr,
    /// Control source port; 0 means "take it from the packet".
    pub control_src_port: u16,
    /// Measurement source port (sender).
    pub meas_src_port: u16,
    /// Measurement destination port; 0 lets the responder choose.
    pub meas_dst_port: u16,
    /// How long the responder keeps the port, in ms.
    pub duration_ms: u32,
}

/// A whole v2 control message with the two defined CSLDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ControlV2Repr {
    /// Header status.
    pub status: Status,
    /// Sequence number.
    pub sequence: u32,
    /// Send timestamp.
    pub timestamp: NtpTimestamp,
    /// The Authentication CSLD (mandatory).
    pub auth: AuthRepr,
    /// The UDP-Measurement CSLD.
    pub measurement: Option<UdpMeasurementRepr>,
}

fn read_addr(b: &[u8], at: usize, v6: bool) -> IpAddr {
    if v6 {
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[at..at + 16]);
        IpAddr::V6(Ipv6Addr::from(a))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]))
    }
}

fn write_addr(b: &mut [u8], at: usize, a: IpAddr) {
    b[at..at + 16].fill(0);
    match a {
        IpAddr::V4(a) => b[at..at + 4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => b[at..at + 16].copy_from_slice(&a.octets()),
    }
}

impl ControlV2Repr {
    /// Parses a checked view. Errors: `UnknownType` for an unknown or duplicated CSLD,
    /// `Malformed` without an Authentication CSLD or with an unknown address type.
    pub fn parse<T: AsRef<[u8]>>(p: &ControlV2<T>) -> Result<Self> {
        let b = p.as_bytes();
        let ix = p.index();
        if let Some((_, code)) = ix.unknown {
            return Err(Error::UnknownType(code));
        }
        let at = ix.auth.ok_or(Error::Malformed)?;
        let d = at + field::C_DATA;
        let long = (csld_data_len(b, at, ix.lengths_exclude_header) == AUTH_DATA_LEN).then(|| {
            let mut r = [0u8; 16];
            r.copy_from_slice(&b[d + field::A_RANDOM..d + field::A_RANDOM + 16]);
            let mut g = [0u8; DIGEST_LEN];
            g.copy_from_slice(&b[d + field::A_DIGEST..d + field::A_DIGEST + DIGEST_LEN]);
            (r, g)
        });
        let auth = AuthRepr {
            status: Status::from(be16(b, at + field::C_STATUS)),
            mode: AuthMode::from(b[d + field::A_MODE]),
            key_id: be16(b, d + field::A_KEY_ID),
            long,
        };
        let measurement = match ix.udp {
            None => None,
            Some(at) => {
                let d = at + field::C_DATA;
                let v6 = match b[d + field::U_ADDR_TYPE] {
                    2 => false,
                    3 => true,
                    _ => return Err(Error::Malformed),
                };
                Some(UdpMeasurementRepr {
                    status: Status::from(be16(b, at + field::C_STATUS)),
                    role: b[d + field::U_ROLE],
                    session_id: be32(b, d + field::U_SESSION),
                    control_src: read_addr(b, d + field::U_CTRL_SRC, v6),
                    control_dst: read_addr(b, d + field::U_CTRL_DST, v6),
                    meas_src: read_addr(b, d + field::U_MEAS_SRC, v6),
                    meas_dst: read_addr(b, d + field::U_MEAS_DST, v6),
                    control_src_port: be16(b, d + field::U_CTRL_SRC_PORT),
                    meas_src_port: be16(b, d + field::U_MEAS_SRC_PORT),
                    meas_dst_port: be16(b, d + field::U_MEAS_DST_PORT),
                    duration_ms: be32(b, d + field::U_DURATION),
                })
            }
        };
        Ok(ControlV2Repr {
            status: Status::from(p.status()),
            sequence: p.sequence(),
            timestamp: p.timestamp(),
            auth,
            measurement,
        })
    }

    /// Total length of the emitted message.
    pub fn buffer_len(&self) -> usize {
        let auth = if self.auth.long.is_some() { AUTH_DATA_LEN } else { AUTH_SHORT_DATA_LEN };
        HEADER_LEN + CSLD_HEADER_LEN + auth + self.measurement.map_or(0, |_| CSLD_HEADER_LEN + UDP_DATA_LEN)
    }

    /// Emits header, Authentication CSLD, UDP-Measurement CSLD, with lengths that include the
    /// CSLD header. The digest is written as carried; call [`ControlV2::sign`] afterwards to
    /// compute it.
    pub fn emit(&self, buf: &mut [u8]) {
        let len = self.buffer_len();
        let b = &mut buf[..len];
        b.fill(0);
        b[field::VERSION] = 2;
        put16(b, field::STATUS, self.status.into());
        put32(b, field::SEQUENCE, self.sequence);
        put32(b, field::LENGTH, len as u32);
        put64(b, field::TIMESTAMP, self.timestamp.0);
        let mut at = HEADER_LEN;
        let auth_len = if self.auth.long.is_some() { AUTH_DATA_LEN } else { AUTH_SHORT_DATA_LEN };
        put16(b, at + field::C_COMMAND, Command::Authentication.into());
        put16(b, at + field::C_STATUS, self.auth.status.into());
        put32(b, at + field::C_LENGTH, (CSLD_HEADER_LEN + auth_len) as u32);
        let d = at + field::C_DATA;
        b[d + field::A_MODE] = self.auth.mode.into();
        put16(b, d + field::A_KEY_ID, self.auth.key_id);
        if let Some((r, g)) = &self.auth.long {
            b[d + field::A_RANDOM..d + field::A_RANDOM + 16].copy_from_slice(r);
            b[d + field::A_DIGEST..d + field::A_DIGEST + DIGEST_LEN].copy_from_slice(g);
        }
        at += CSLD_HEADER_LEN + auth_len;
        if let Some(m) = &self.measurement {
            put16(b, at + field::C_COMMAND, Command::UdpMeasurement.into());
            put16(b, at + field::C_STATUS, m.status.into());
            put32(b, at + field::C_LENGTH, (CSLD_HEADER_LEN + UDP_DATA_LEN) as u32);
            let d = at + field::C_DATA;
            b[d + field::U_ADDR_TYPE] = if m.control_src.is_ipv6() { 3 } else { 2 };
            b[d + field::U_ROLE] = m.role;
            put32(b, d + field::U_SESSION, m.session_id);
            write_addr(b, d + field::U_CTRL_SRC, m.control_src);
            write_addr(b, d + field::U_CTRL_DST, m.control_dst);
            write_addr(b, d + field::U_MEAS_SRC, m.meas_src);
            write_addr(b, d + field::U_MEAS_DST, m.meas_dst);
            put16(b, d + field::U_CTRL_SRC_PORT, m.control_src_port);
            put16(b, d + field::U_MEAS_SRC_PORT, m.meas_src_port);
            put16(b, d + field::U_MEAS_DST_PORT, m.meas_dst_port);
            put32(b, d + field::U_DURATION, m.duration_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(mode: AuthMode) -> ControlV2Repr {
        ControlV2Repr {
            status: Status::Success,
            sequence: 7,
            timestamp: NtpTimestamp(0xe8f0_0000_8000_0000),
            auth: AuthRepr { status: Status::Success, mode, key_id: 3, long: Some(([0x11; 16], [0; 32])) },
            measurement: Some(UdpMeasurementRepr {
                status: Status::Success,
                role: 1,
                session_id: 0,
                control_src: "192.0.2.1".parse().unwrap(),
                control_dst: "192.0.2.2".parse().unwrap(),
                meas_src: "192.0.2.1".parse().unwrap(),
                meas_dst: "192.0.2.2".parse().unwrap(),
                control_src_port: 0,
                meas_src_port: 50000,
                meas_dst_port: 16384,
                duration_ms: 5400,
            }),
        }
    }

    #[test]
    fn full_request_is_172_bytes_with_rfc_offsets() {
        // Reference §3.4: 20 + 60 + 92; mode at 28, key id at 30, random at 32, digest 48..80,
        // UDP CSLD at 80: address type 88, session 92, addresses 96/112/128/144, ports
        // 160/164/166, duration 168.
        let r = sample(AuthMode::HmacSha256);
        let mut b = [0u8; 172];
        assert_eq!(r.buffer_len(), 172);
        r.emit(&mut b);
        assert_eq!(&b[0..4], &[2, 0, 0, 0]);
        assert_eq!(be32(&b, 8), 172);
        assert_eq!(b[28], 2);
        assert_eq!(be16(&b, 30), 3);
        assert_eq!(&b[32..48], &[0x11; 16]);
        assert_eq!(be16(&b, 80), 2);
        assert_eq!(be32(&b, 84), 92);
        assert_eq!(b[88], 2);
        assert_eq!(&b[96..100], &[192, 0, 2, 1]);
        assert_eq!(&b[112..116], &[192, 0, 2, 2]);
        assert_eq!(be16(&b, 164), 50000);
        assert_eq!(be16(&b, 166), 16384);
        assert_eq!(be32(&b, 168), 5400);
    }

    #[test]
    fn hmac_and_sha_sign_and_verify() {
        for mode in [AuthMode::Sha256, AuthMode::HmacSha256] {
            let mut b = [0u8; 172];
            sample(mode).emit(&mut b);
            let mut p = ControlV2::new_checked(&mut b[..]).unwrap();
            p.sign(mode, b"secret");
            assert!(p.verify(mode, b"secret"));
            assert!(!p.verify(mode, b"Secret"));
            let d = p.digest().unwrap();
            assert_ne!(d, [0; 32]);
            // flipping any covered byte breaks it
            b[167] ^= 1;
            let p = ControlV2::new_checked(&b[..]).unwrap();
            assert!(!p.verify(mode, b"secret"));
        }
    }

    #[test]
    fn sha256_digest_is_secret_prefix_hash() {
        // Mode 1 is SHA-256(secret ∥ message with zero digest): check against a direct hash.
        let mut b = [0u8; 172];
        sample(AuthMode::Sha256).emit(&mut b);
        let p = ControlV2::new_checked(&b[..]).unwrap();
        let mut h = Sha256::new();
        h.update(b"k");
        h.update(b);
        let want: [u8; 32] = h.finalize().into();
        assert_eq!(p.compute_digest(AuthMode::Sha256, b"k"), Some(want));
    }

    #[test]
    fn accepts_lengths_excluding_csld_header() {
        let mut b = [0u8; 172];
        sample(AuthMode::None).emit(&mut b);
        put32(&mut b, 20 + 4, 52);
        put32(&mut b, 80 + 4, 84);
        let p = ControlV2::new_checked(&b[..]).unwrap();
        assert!(p.index().lengths_exclude_header);
        assert_eq!(ControlV2Repr::parse(&p).unwrap(), sample(AuthMode::None));
    }

    #[test]
    fn unknown_csld_is_reported() {
        let r = sample(AuthMode::None);
        let mut b = vec![0u8; 172 + 12];
        r.emit(&mut b);
        put32(&mut b, 8, 184);
        put16(&mut b, 172, 0x2800);
        put32(&mut b, 176, 12);
        let p = ControlV2::new_checked(&b[..]).unwrap();
        assert_eq!(p.index().unknown, Some((172, 0x2800)));
        assert_eq!(ControlV2Repr::parse(&p).unwrap_err(), Error::UnknownType(0x2800));
    }

    #[test]
    fn rejects_bad_framing() {
        let mut b = [0u8; 172];
        sample(AuthMode::None).emit(&mut b);
        assert_eq!(ControlV2::new_checked(&b[..19]).unwrap_err(), Error::Truncated);
        assert_eq!(ControlV2::new_checked(&b[..100]).unwrap_err(), Error::BadLength);
        let mut c = b;
        put32(&mut c, 84, 1000);
        assert_eq!(ControlV2::new_checked(&c[..]).unwrap_err(), Error::BadLength);
        let mut c = b;
        put32(&mut c, 84, 0);
        assert!(ControlV2::new_checked(&c[..]).is_err());
        let mut c = b;
        c[88] = 9;
        assert_eq!(ControlV2Repr::parse(&ControlV2::new_checked(&c[..]).unwrap()).unwrap_err(), Error::Malformed);
    }

    fn arb_ip(v6: bool) -> BoxedStrategy<IpAddr> {
        if v6 {
            any::<u128>().prop_map(|a| IpAddr::V6(a.into())).boxed()
        } else {
            any::<u32>().prop_map(|a| IpAddr::V4(a.into())).boxed()
        }
    }

    fn arb_repr() -> impl Strategy<Value = ControlV2Repr> {
        let meas = any::<bool>().prop_flat_map(|v6| {
            (
                any::<u16>(),
                any::<u8>(),
                any::<u32>(),
                arb_ip(v6),
                arb_ip(v6),
                arb_ip(v6),
                arb_ip(v6),
                any::<(u16, u16, u16, u32)>(),
            )
                .prop_map(|(st, role, session_id, a, b, c, d, (p1, p2, p3, dur))| UdpMeasurementRepr {
                    status: Status::from(st),
                    role,
                    session_id,
                    control_src: a,
                    control_dst: b,
                    meas_src: c,
                    meas_dst: d,
                    control_src_port: p1,
                    meas_src_port: p2,
                    meas_dst_port: p3,
                    duration_ms: dur,
                })
        });
        (
            any::<(u16, u32, u64, u16, u8, u16)>(),
            proptest::option::of(any::<([u8; 16], [u8; 32])>()),
            proptest::option::of(meas),
        )
            .prop_map(|((st, seq, ts, ast, mode, key), long, m)| ControlV2Repr {
                status: Status::from(st),
                sequence: seq,
                timestamp: NtpTimestamp(ts),
                auth: AuthRepr { status: Status::from(ast), mode: AuthMode::from(mode), key_id: key, long },
                measurement: m,
            })
    }

    proptest! {
        #[test]
        fn roundtrip(r in arb_repr()) {
            let mut buf = vec![0u8; r.buffer_len()];
            r.emit(&mut buf);
            let p = ControlV2::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(ControlV2Repr::parse(&p).unwrap(), r);
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut data = data;
            if data.len() >= 12 { data[0] = 2; let l = data.len() as u32; put32(&mut data, 8, l); }
            if let Ok(mut p) = ControlV2::new_checked(&mut data[..]) {
                let _ = ControlV2Repr::parse(&p);
                let _ = p.verify(AuthMode::HmacSha256, b"k");
                p.sign(AuthMode::Sha256, b"k");
                p.set_udp_meas_dst_port(1);
                p.set_unknown_status(Status::FormatError);
            }
        }
    }
}
