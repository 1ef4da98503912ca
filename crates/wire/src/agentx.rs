//! AgentX (RFC 2741): the PDUs a subagent exchanges with its master agent (net-snmp `snmpd` with
//! `master agentx`), parsed with strict length checks and emitted in network byte order.
//!
//! - [`Header::parse`] reads the fixed 20-octet header (§6.1); its `payload_len` frames the rest.
//! - [`parse`] reads one whole PDU (header and exactly `payload_len` octets after it) into a
//!   [`Message`]: the requests a master sends (Get, GetNext, GetBulk, the Set phases, Close) and
//!   the Response it returns to ours. A PDU type a subagent never receives is kept as
//!   [`Pdu::Other`], not refused, so the session can answer it with an error.
//! - [`Emit`] builds the PDUs a subagent sends: Open, Close, Register, Notify, Ping and Response.
//!
//! Unlike the other formats of this crate, object identifiers, octet strings and variable lists
//! have any length, so the parse allocates (`Vec`s): a subagent answers a few hundred requests a
//! second at most, and a flat cursor is simpler to check than nested zero-copy views. Every read
//! goes through [`Reader`], which refuses to read past the PDU, so no input can panic.
//!
//! The `agentx` crate (crates.io 0.1.1) was not used: its octet strings are Rust `String`s, so an
//! `IpAddress` or `RttMonTargetAddress` with an octet above 0x7f (192.168.0.1) cannot be carried,
//! and its Response parser multiplies the uptime without overflow checks.
//!
//! ```
//! use ipsla_wire::agentx::{self, Emit, Oid, Pdu};
//! let open = Emit::new(0, 0, 1).open(5, &Oid::parse("1.3.6.1.4.1.9.9.42").unwrap(), b"ipsla");
//! let m = agentx::parse(&open).unwrap();
//! assert_eq!(m.header.ty, agentx::ty::OPEN);
//! assert!(matches!(m.pdu, Pdu::Other));
//! ```

use crate::{Error, Result};
use core::fmt;

/// The fixed header's length (RFC 2741 §6.1).
pub const HEADER_LEN: usize = 20;
/// The largest payload accepted: a master never sends more than a few kB; a larger length is
/// a framing error, not a reason to allocate.
pub const MAX_PAYLOAD: u32 = 1 << 20;
/// The protocol version (RFC 2741 §6.1).
pub const VERSION: u8 = 1;

/// PDU types (RFC 2741 §6.1, h.type).
pub mod ty {
    #![allow(missing_docs)]
    pub const OPEN: u8 = 1;
    pub const CLOSE: u8 = 2;
    pub const REGISTER: u8 = 3;
    pub const UNREGISTER: u8 = 4;
    pub const GET: u8 = 5;
    pub const GET_NEXT: u8 = 6;
    pub const GET_BULK: u8 = 7;
    pub const TEST_SET: u8 = 8;
    pub const COMMIT_SET: u8 = 9;
    pub const UNDO_SET: u8 = 10;
    pub const CLEANUP_SET: u8 = 11;
    pub const NOTIFY: u8 = 12;
    pub const PING: u8 = 13;
    pub const RESPONSE: u8 = 18;
}

/// Header flags (RFC 2741 §6.1, h.flags).
pub mod flags {
    #![allow(missing_docs)]
    pub const INSTANCE_REGISTRATION: u8 = 0x01;
    pub const NON_DEFAULT_CONTEXT: u8 = 0x08;
    pub const NETWORK_BYTE_ORDER: u8 = 0x10;
}

/// `res.error` values (RFC 2741 §6.2.16) and the SNMP error statuses a subagent returns
/// (RFC 3416 §3).
pub mod error {
    #![allow(missing_docs)]
    pub const NO_ERROR: u16 = 0;
    pub const GEN_ERR: u16 = 5;
    pub const NOT_WRITABLE: u16 = 17;
    pub const OPEN_FAILED: u16 = 256;
    pub const NOT_OPEN: u16 = 257;
    pub const UNSUPPORTED_CONTEXT: u16 = 262;
    pub const DUPLICATE_REGISTRATION: u16 = 263;
    pub const PARSE_ERROR: u16 = 266;
    pub const REQUEST_DENIED: u16 = 267;
    pub const PROCESSING_ERROR: u16 = 268;
}

/// Close reasons (RFC 2741 §6.2.2).
pub mod close {
    #![allow(missing_docs)]
    pub const OTHER: u8 = 1;
    pub const PARSE_ERROR: u8 = 2;
    pub const PROTOCOL_ERROR: u8 = 3;
    pub const TIMEOUTS: u8 = 4;
    pub const SHUTDOWN: u8 = 5;
    pub const BY_MANAGER: u8 = 6;
}

/// The header (RFC 2741 §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// h.version: 1.
    pub version: u8,
    /// h.type ([`ty`]).
    pub ty: u8,
    /// h.flags ([`flags`]).
    pub flags: u8,
    /// h.sessionID.
    pub session_id: u32,
    /// h.transactionID.
    pub transaction_id: u32,
    /// h.packetID.
    pub packet_id: u32,
    /// h.payload_length: octets after the header, a multiple of 4.
    pub payload_len: u32,
}

impl Header {
    /// Reads the header from the first [`HEADER_LEN`] octets of `b`. Refuses another version, a
    /// payload length that is not a multiple of 4 (§6.1) or larger than [`MAX_PAYLOAD`].
    pub fn parse(b: &[u8]) -> Result<Header> {
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[0] != VERSION {
            return Err(Error::UnsupportedVersion(b[0]));
        }
        let big = b[2] & flags::NETWORK_BYTE_ORDER != 0;
        let u32_at = |at: usize| {
            let a = [b[at], b[at + 1], b[at + 2], b[at + 3]];
            if big { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) }
        };
        let h = Header {
            version: b[0],
            ty: b[1],
            flags: b[2],
            session_id: u32_at(4),
            transaction_id: u32_at(8),
            packet_id: u32_at(12),
            payload_len: u32_at(16),
        };
        if !h.payload_len.is_multiple_of(4) || h.payload_len > MAX_PAYLOAD {
            return Err(Error::BadLength);
        }
        Ok(h)
    }

    /// True when the multi-octet fields are big-endian (NETWORK_BYTE_ORDER set).
    pub fn big_endian(&self) -> bool {
        self.flags & flags::NETWORK_BYTE_ORDER != 0
    }
}

/// An object identifier. Ordered as SNMP orders them (RFC 2741 §5.1: sub-identifier by
/// sub-identifier, a prefix before what extends it), which is `Vec`'s ordering.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Oid(pub Vec<u32>);

impl Oid {
    /// Reads dotted decimal (`1.3.6.1`); `None` when a part is not a number or there are more
    /// than 128 parts (RFC 2741 §5.1).
    pub fn parse(s: &str) -> Option<Oid> {
        let s = s.strip_prefix('.').unwrap_or(s);
        let v: Option<Vec<u32>> = s.split('.').map(|p| p.parse().ok()).collect();
        v.filter(|v| !v.is_empty() && v.len() <= 128).map(Oid)
    }

    /// True when `self` lies under `prefix` (or is it).
    pub fn starts_with(&self, prefix: &[u32]) -> bool {
        self.0.starts_with(prefix)
    }

    /// The null OID (no sub-identifiers).
    pub fn is_null(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<&[u32]> for Oid {
    fn from(v: &[u32]) -> Oid {
        Oid(v.to_vec())
    }
}

/// A search range (RFC 2741 §5.2): from `start` (included when `include`) up to, not including,
/// `end`; a null `end` is no upper bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRange {
    /// The starting OID.
    pub start: Oid,
    /// The start's `include` field.
    pub include: bool,
    /// The end (exclusive); null for none.
    pub end: Oid,
}

/// A value (RFC 2741 §5.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// INTEGER / Integer32 (type 2).
    Integer(i32),
    /// OCTET STRING (4): any octets.
    OctetString(Vec<u8>),
    /// NULL (5).
    Null,
    /// OBJECT IDENTIFIER (6).
    ObjectIdentifier(Oid),
    /// IpAddress (64).
    IpAddress([u8; 4]),
    /// Counter32 (65).
    Counter32(u32),
    /// Gauge32 / Unsigned32 (66).
    Gauge32(u32),
    /// TimeTicks (67), hundredths of a second.
    TimeTicks(u32),
    /// Opaque (68).
    Opaque(Vec<u8>),
    /// Counter64 (70).
    Counter64(u64),
    /// noSuchObject (128).
    NoSuchObject,
    /// noSuchInstance (129).
    NoSuchInstance,
    /// endOfMibView (130).
    EndOfMibView,
}

impl Value {
    fn type_code(&self) -> u16 {
        match self {
            Value::Integer(_) => 2,
            Value::OctetString(_) => 4,
            Value::Null => 5,
            Value::ObjectIdentifier(_) => 6,
            Value::IpAddress(_) => 64,
            Value::Counter32(_) => 65,
            Value::Gauge32(_) => 66,
            Value::TimeTicks(_) => 67,
            Value::Opaque(_) => 68,
            Value::Counter64(_) => 70,
            Value::NoSuchObject => 128,
            Value::NoSuchInstance => 129,
            Value::EndOfMibView => 130,
        }
    }
}

/// A name and its value (RFC 2741 §5.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarBind {
    /// The object instance.
    pub name: Oid,
    /// Its value.
    pub value: Value,
}

/// The body of a PDU a subagent receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pdu {
    /// agentx-Get-PDU (§6.2.5).
    Get(Vec<SearchRange>),
    /// agentx-GetNext-PDU (§6.2.6).
    GetNext(Vec<SearchRange>),
    /// agentx-GetBulk-PDU (§6.2.7).
    GetBulk {
        /// Leading ranges answered once.
        non_repeaters: u16,
        /// Repetitions of the others.
        max_repetitions: u16,
        /// The ranges.
        ranges: Vec<SearchRange>,
    },
    /// agentx-TestSet-PDU (§6.2.8); its varbinds.
    TestSet(Vec<VarBind>),
    /// agentx-CommitSet, -UndoSet, -CleanupSet-PDU (§6.2.9-11): the header says which.
    SetPhase,
    /// agentx-Close-PDU (§6.2.2) with its reason ([`close`]).
    Close(u8),
    /// agentx-Response-PDU (§6.2.16).
    Response {
        /// sysUpTime.0 of the master, hundredths of a second.
        sys_uptime: u32,
        /// res.error ([`error`]).
        error: u16,
        /// res.index.
        index: u16,
        /// The varbinds, when any.
        varbinds: Vec<VarBind>,
    },
    /// Any other type (Open, Register, Notify, Ping, ...: what a master does not send a
    /// subagent).
    Other,
}

/// One parsed PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The header.
    pub header: Header,
    /// The non-default context, when NON_DEFAULT_CONTEXT is set.
    pub context: Option<Vec<u8>>,
    /// The body.
    pub pdu: Pdu,
}

/// A cursor over a PDU's payload in the sender's byte order: every read checks the length left.
struct Reader<'a> {
    b: &'a [u8],
    big: bool,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.b.len() < n {
            return Err(Error::Truncated);
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let a: [u8; 2] = self.take(2)?.try_into().map_err(|_| Error::Truncated)?;
        Ok(if self.big { u16::from_be_bytes(a) } else { u16::from_le_bytes(a) })
    }
    fn u32(&mut self) -> Result<u32> {
        let a: [u8; 4] = self.take(4)?.try_into().map_err(|_| Error::Truncated)?;
        Ok(if self.big { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) })
    }
    fn u64(&mut self) -> Result<u64> {
        let a: [u8; 8] = self.take(8)?.try_into().map_err(|_| Error::Truncated)?;
        Ok(if self.big { u64::from_be_bytes(a) } else { u64::from_le_bytes(a) })
    }
    /// An OID (§5.1) and its `include` field. A non-zero `prefix` stands for 1.3.6.1.prefix.
    fn oid(&mut self) -> Result<(Oid, bool)> {
        let n = self.u8()? as usize;
        let prefix = self.u8()?;
        let include = self.u8()?;
        self.u8()?;
        if n > 128 {
            return Err(Error::Malformed);
        }
        let mut v = Vec::with_capacity(n + 5);
        if prefix != 0 {
            v.extend_from_slice(&[1, 3, 6, 1, u32::from(prefix)]);
        }
        for _ in 0..n {
            v.push(self.u32()?);
        }
        if include > 1 {
            return Err(Error::Malformed);
        }
        Ok((Oid(v), include == 1))
    }
    /// An octet string (§5.3): its length, the octets, padding to a multiple of 4.
    fn octets(&mut self) -> Result<Vec<u8>> {
        let n = self.u32()? as usize;
        if n > self.b.len() {
            return Err(Error::BadLength);
        }
        let v = self.take(n)?.to_vec();
        self.take((4 - n % 4) % 4)?;
        Ok(v)
    }
    fn ranges(&mut self) -> Result<Vec<SearchRange>> {
        let mut v = Vec::new();
        while !self.b.is_empty() {
            let (start, include) = self.oid()?;
            let (end, end_include) = self.oid()?;
            if end_include {
                return Err(Error::Malformed);
            }
            v.push(SearchRange { start, include, end });
        }
        Ok(v)
    }
    fn varbinds(&mut self) -> Result<Vec<VarBind>> {
        let mut v = Vec::new();
        while !self.b.is_empty() {
            let code = self.u16()?;
            self.u16()?;
            let (name, _) = self.oid()?;
            let value = match code {
                2 => Value::Integer(self.u32()? as i32),
                4 => Value::OctetString(self.octets()?),
                5 => Value::Null,
                6 => Value::ObjectIdentifier(self.oid()?.0),
                64 => {
                    let o = self.octets()?;
                    Value::IpAddress(o.as_slice().try_into().map_err(|_| Error::BadLength)?)
                }
                65 => Value::Counter32(self.u32()?),
                66 => Value::Gauge32(self.u32()?),
                67 => Value::TimeTicks(self.u32()?),
                68 => Value::Opaque(self.octets()?),
                70 => Value::Counter64(self.u64()?),
                128 => Value::NoSuchObject,
                129 => Value::NoSuchInstance,
                130 => Value::EndOfMibView,
                other => return Err(Error::UnknownType(other)),
            };
            v.push(VarBind { name, value });
        }
        Ok(v)
    }
}

/// Parses one PDU: `b` is the header and exactly `payload_len` octets (frame with
/// [`Header::parse`] first). Trailing or missing octets are [`Error::BadLength`].
pub fn parse(b: &[u8]) -> Result<Message> {
    let header = Header::parse(b)?;
    if b.len() - HEADER_LEN != header.payload_len as usize {
        return Err(Error::BadLength);
    }
    let mut r = Reader { b: &b[HEADER_LEN..], big: header.big_endian() };
    let has_context = header.flags & flags::NON_DEFAULT_CONTEXT != 0;
    let takes_context = matches!(header.ty, ty::GET | ty::GET_NEXT | ty::GET_BULK | ty::TEST_SET);
    let context = if has_context && takes_context { Some(r.octets()?) } else { None };
    let pdu = match header.ty {
        ty::GET => Pdu::Get(r.ranges()?),
        ty::GET_NEXT => Pdu::GetNext(r.ranges()?),
        ty::GET_BULK => {
            let non_repeaters = r.u16()?;
            let max_repetitions = r.u16()?;
            Pdu::GetBulk { non_repeaters, max_repetitions, ranges: r.ranges()? }
        }
        ty::TEST_SET => Pdu::TestSet(r.varbinds()?),
        ty::COMMIT_SET | ty::UNDO_SET | ty::CLEANUP_SET => Pdu::SetPhase,
        ty::CLOSE => {
            let reason = r.u8()?;
            r.take(3)?;
            Pdu::Close(reason)
        }
        ty::RESPONSE => {
            let sys_uptime = r.u32()?;
            let error = r.u16()?;
            let index = r.u16()?;
            Pdu::Response { sys_uptime, error, index, varbinds: r.varbinds()? }
        }
        1..=17 => {
            r.b = &[];
            Pdu::Other
        }
        other => return Err(Error::UnknownType(u16::from(other))),
    };
    if !r.b.is_empty() {
        return Err(Error::BadLength);
    }
    Ok(Message { header, context, pdu })
}

/// Builds the PDUs a subagent sends, in network byte order, each with the given session,
/// transaction and packet ids.
#[derive(Debug, Clone, Copy)]
pub struct Emit {
    session_id: u32,
    transaction_id: u32,
    packet_id: u32,
}

impl Emit {
    /// PDUs of session `session_id`, transaction `transaction_id`, packet `packet_id`.
    pub fn new(session_id: u32, transaction_id: u32, packet_id: u32) -> Emit {
        Emit { session_id, transaction_id, packet_id }
    }

    /// The reply to `h`: its session, transaction and packet ids.
    pub fn reply_to(h: &Header) -> Emit {
        Emit::new(h.session_id, h.transaction_id, h.packet_id)
    }

    fn pdu(&self, ty: u8, extra_flags: u8, payload: Vec<u8>) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        out.extend_from_slice(&[VERSION, ty, flags::NETWORK_BYTE_ORDER | extra_flags, 0]);
        for v in [self.session_id, self.transaction_id, self.packet_id, payload.len() as u32] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&payload);
        out
    }

    /// agentx-Open-PDU (§6.2.1): `timeout` s (0: the master's default), the subagent's id, its
    /// description.
    pub fn open(&self, timeout: u8, id: &Oid, descr: &[u8]) -> Vec<u8> {
        let mut p = vec![timeout, 0, 0, 0];
        put_oid(&mut p, id, false);
        put_octets(&mut p, descr);
        self.pdu(ty::OPEN, 0, p)
    }

    /// agentx-Close-PDU (§6.2.2) with a [`close`] reason.
    pub fn close(&self, reason: u8) -> Vec<u8> {
        self.pdu(ty::CLOSE, 0, vec![reason, 0, 0, 0])
    }

    /// agentx-Register-PDU (§6.2.3) of the subtree `subtree` (no range), `timeout` s (0: the
    /// session's), `priority` (127 is the default; lower wins).
    pub fn register(&self, timeout: u8, priority: u8, subtree: &Oid) -> Vec<u8> {
        let mut p = vec![timeout, priority, 0, 0];
        put_oid(&mut p, subtree, false);
        self.pdu(ty::REGISTER, 0, p)
    }

    /// agentx-Notify-PDU (§6.2.10): sysUpTime.0 (optional), snmpTrapOID.0 and the objects.
    pub fn notify(&self, varbinds: &[VarBind]) -> Vec<u8> {
        let mut p = Vec::new();
        for vb in varbinds {
            put_varbind(&mut p, vb);
        }
        self.pdu(ty::NOTIFY, 0, p)
    }

    /// agentx-Ping-PDU (§6.2.13).
    pub fn ping(&self) -> Vec<u8> {
        self.pdu(ty::PING, 0, Vec::new())
    }

    /// agentx-Response-PDU (§6.2.16): `error` ([`error`]), `index` (1-based varbind at fault, 0
    /// for none) and the varbinds. The subagent's sysUpTime is ignored by the master: 0.
    pub fn response(&self, error: u16, index: u16, varbinds: &[VarBind]) -> Vec<u8> {
        let mut p = vec![0, 0, 0, 0];
        p.extend_from_slice(&error.to_be_bytes());
        p.extend_from_slice(&index.to_be_bytes());
        for vb in varbinds {
            put_varbind(&mut p, vb);
        }
        self.pdu(ty::RESPONSE, 0, p)
    }
}

fn put_oid(p: &mut Vec<u8>, oid: &Oid, include: bool) {
    // no prefix compression: the full form is always valid (§5.1)
    p.extend_from_slice(&[oid.0.len().min(128) as u8, 0, u8::from(include), 0]);
    for s in oid.0.iter().take(128) {
        p.extend_from_slice(&s.to_be_bytes());
    }
}

fn put_octets(p: &mut Vec<u8>, o: &[u8]) {
    p.extend_from_slice(&(o.len() as u32).to_be_bytes());
    p.extend_from_slice(o);
    p.resize(p.len() + (4 - o.len() % 4) % 4, 0);
}

fn put_varbind(p: &mut Vec<u8>, vb: &VarBind) {
    p.extend_from_slice(&vb.value.type_code().to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    put_oid(p, &vb.name, false);
    match &vb.value {
        Value::Integer(v) => p.extend_from_slice(&v.to_be_bytes()),
        Value::OctetString(o) | Value::Opaque(o) => put_octets(p, o),
        Value::ObjectIdentifier(o) => put_oid(p, o, false),
        Value::IpAddress(a) => put_octets(p, a),
        Value::Counter32(v) | Value::Gauge32(v) | Value::TimeTicks(v) => p.extend_from_slice(&v.to_be_bytes()),
        Value::Counter64(v) => p.extend_from_slice(&v.to_be_bytes()),
        Value::Null | Value::NoSuchObject | Value::NoSuchInstance | Value::EndOfMibView => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(s: &str) -> Oid {
        Oid::parse(s).unwrap()
    }

    #[test]
    fn open_is_laid_out_as_rfc_2741_section_6_2_1() {
        let b = Emit::new(0, 0, 7).open(5, &oid("1.3.6.1.4.1.9"), b"ipsla");
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &[1, 1, 0x10, 0][..], &[0, 0, 0, 0], &[0, 0, 0, 0], &[0, 0, 0, 7], &[0, 0, 0, 48],
            &[5, 0, 0, 0],
            &[7, 0, 0, 0], &[0, 0, 0, 1], &[0, 0, 0, 3], &[0, 0, 0, 6], &[0, 0, 0, 1], &[0, 0, 0, 4], &[0, 0, 0, 1], &[0, 0, 0, 9],
            &[0, 0, 0, 5], b"ipsl", &[b'a', 0, 0, 0],
        ].concat();
        assert_eq!(b, want);
    }

    /// A GetNext as net-snmp 5.9 sends it (little-endian, prefix-compressed start, null end).
    #[test]
    fn a_little_endian_getnext_with_a_compressed_prefix_parses() {
        #[rustfmt::skip]
        let b: Vec<u8> = [
            &[1, 6, 0, 0][..], &[9, 0, 0, 0], &[2, 0, 0, 0], &[3, 0, 0, 0], &[20, 0, 0, 0],
            &[3, 4, 1, 0], &[1, 0, 0, 0], &[9, 0, 0, 0], &[9, 0, 0, 0],
            &[0, 0, 0, 0],
        ].concat();
        let m = parse(&b).unwrap();
        assert_eq!((m.header.session_id, m.header.transaction_id, m.header.packet_id), (9, 2, 3));
        assert_eq!(
            m.pdu,
            Pdu::GetNext(vec![SearchRange { start: oid("1.3.6.1.4.1.9.9"), include: true, end: Oid::default() }])
        );
    }

    #[test]
    fn a_response_round_trips_every_value_type() {
        let vbs = vec![
            VarBind { name: oid("1.3.6.1.4.1.9.9.42.1.2.10.1.1.5"), value: Value::Gauge32(12) },
            VarBind { name: oid("1.2"), value: Value::Integer(-3) },
            VarBind { name: oid("1.3"), value: Value::OctetString(vec![192, 168, 0, 1, 0xff]) },
            VarBind { name: oid("1.4"), value: Value::IpAddress([192, 168, 1, 200]) },
            VarBind { name: oid("1.5"), value: Value::Counter64(u64::MAX) },
            VarBind { name: oid("1.6"), value: Value::TimeTicks(100) },
            VarBind { name: oid("1.7"), value: Value::ObjectIdentifier(oid("1.3.6")) },
            VarBind { name: oid("1.8"), value: Value::NoSuchInstance },
            VarBind { name: oid("1.9"), value: Value::EndOfMibView },
            VarBind { name: oid("1.10"), value: Value::Counter32(4) },
            VarBind { name: oid("1.11"), value: Value::Null },
        ];
        let b = Emit::new(1, 2, 3).response(error::NO_ERROR, 0, &vbs);
        let m = parse(&b).unwrap();
        assert_eq!(m.pdu, Pdu::Response { sys_uptime: 0, error: 0, index: 0, varbinds: vbs });
    }

    #[test]
    fn lengths_that_disagree_are_refused() {
        let mut b = Emit::new(1, 2, 3).close(close::SHUTDOWN);
        assert_eq!(parse(&b[..HEADER_LEN + 2]), Err(Error::BadLength));
        b.extend_from_slice(&[0; 4]);
        assert_eq!(parse(&b), Err(Error::BadLength));
        b[19] = 6; // payload length not a multiple of 4
        assert_eq!(Header::parse(&b), Err(Error::BadLength));
        b[0] = 2;
        assert_eq!(Header::parse(&b), Err(Error::UnsupportedVersion(2)));
        assert_eq!(Header::parse(&b[..19]), Err(Error::Truncated));
        // an octet string longer than what is left
        let mut r = Reader { b: &[0, 0, 0, 9, 1, 2, 3, 4], big: true };
        assert_eq!(r.octets(), Err(Error::BadLength));
        // more than 128 sub-identifiers
        let mut r = Reader { b: &[129, 0, 0, 0], big: true };
        assert_eq!(r.oid(), Err(Error::Malformed));
    }

    fn value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        prop_oneof![
            any::<i32>().prop_map(Value::Integer),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::OctetString),
            any::<[u8; 4]>().prop_map(Value::IpAddress),
            any::<u32>().prop_map(Value::Gauge32),
            any::<u32>().prop_map(Value::Counter32),
            any::<u32>().prop_map(Value::TimeTicks),
            any::<u64>().prop_map(Value::Counter64),
            proptest::collection::vec(any::<u32>(), 0..20).prop_map(|v| Value::ObjectIdentifier(Oid(v))),
            Just(Value::NoSuchInstance),
        ]
    }

    proptest::proptest! {
        #[test]
        fn parse_of_an_emitted_response_gives_its_varbinds_back(
            vbs in proptest::collection::vec(
                (proptest::collection::vec(proptest::prelude::any::<u32>(), 0..128), value()), 0..8),
            error in proptest::prelude::any::<u16>(),
        ) {
            let vbs: Vec<VarBind> = vbs.into_iter().map(|(n, value)| VarBind { name: Oid(n), value }).collect();
            let b = Emit::new(1, 2, 3).response(error, 1, &vbs);
            let m = parse(&b).unwrap();
            proptest::prop_assert_eq!(m.pdu, Pdu::Response { sys_uptime: 0, error, index: 1, varbinds: vbs });
        }
    }

    #[test]
    fn oids_order_as_snmp_orders_them() {
        let mut v = vec![oid("1.3.6.1.10"), oid("1.3.6.1.9.1"), oid("1.3.6.1.9"), oid("1.3.6.1.2.100")];
        v.sort();
        assert_eq!(v, vec![oid("1.3.6.1.2.100"), oid("1.3.6.1.9"), oid("1.3.6.1.9.1"), oid("1.3.6.1.10")]);
        assert_eq!(oid(".1.3.6").to_string(), "1.3.6");
        assert_eq!(Oid::parse("1.x"), None);
    }
}
