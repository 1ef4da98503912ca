//! STAMP TLVs (RFC 8972 §4): `Flags(1) Type(1) Length(2) Value(Length)`, one after another from
//! the end of the base packet to the end of the datagram.
//!
//! - [`Tlv`]: a zero-copy view of one TLV; [`TlvReader`]: a cursor over an area, yielding each
//!   TLV with its offset and stopping at the first framing error.
//! - [`TlvRepr`]: one TLV parsed by type ([`TlvValue`]); types this crate does not decode
//!   (9–11, private use, unassigned) are kept as raw bytes so a reflector can return them.
//! - [`TlvWriter`]: a cursor that appends TLVs and, last, the HMAC TLV.
//! - [`mark_reply`], [`set_integrity_failed`], [`check_hmac`]: the reflector's and sender's flag
//!   and integrity rules (RFC 8972 §4, §4.8).
//!
//! Class of Service (type 4): RFC 8972 §4.4 has `DSCP1(6) DSCP2(6) ECN(2) RP(2) Reserved(16)`;
//! stamp-suite 1.0.0 and teaparty send erratum 8199 / draft-ietf-ippm-stamp-cos-ecn's
//! `… EC1(2) RPE(2) Reserved(12)` (observed `bae03000`). The first 16 bits are read as in the
//! RFC and the next 4 as EC1/RPE; an RFC-format TLV has zeros there, so both parse to the same
//! fields and `emit` writes back what was read.

use crate::time::NtpTimestamp;
use crate::{Error, FieldValue, Result, be16, be32, open_enum, put16, put32};
use core::fmt;

/// TLV header length.
pub const HEADER_LEN: usize = 4;
/// The HMAC TLV's value length (RFC 8972 §4.8).
pub const HMAC_LEN: usize = 16;

/// The Flags octet (RFC 8972 §4). Reserved bits are kept.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TlvFlags(pub u8);

impl TlvFlags {
    /// U: unrecognized. Senders set it; a reflector clears it on TLVs it understood.
    pub const U: TlvFlags = TlvFlags(0x80);
    /// M: malformed, set by the reflector on the TLV where parsing stopped.
    pub const M: TlvFlags = TlvFlags(0x40);
    /// I: integrity check failed, set by the reflector on every TLV.
    pub const I: TlvFlags = TlvFlags(0x20);

    /// True when every bit of `f` is set.
    pub fn contains(self, f: TlvFlags) -> bool {
        self.0 & f.0 == f.0
    }
    /// A copy with the bits of `f` set or cleared.
    pub fn with(self, f: TlvFlags, on: bool) -> TlvFlags {
        TlvFlags(if on { self.0 | f.0 } else { self.0 & !f.0 })
    }
}

impl fmt::Debug for TlvFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TlvFlags({:#04x}", self.0)?;
        for (flag, name) in [(Self::U, " U"), (Self::M, " M"), (Self::I, " I")] {
            if self.contains(flag) {
                f.write_str(name)?;
            }
        }
        f.write_str(")")
    }
}

open_enum! {
    /// STAMP TLV types (RFC 8972 §4 and its §5 registry; 9–10 RFC 9503, 11 RFC 9534).
    pub enum TlvType(u8) {
        /// 1: Extra Padding (RFC 8972 §4.1).
        ExtraPadding = 1,
        /// 2: Location (RFC 8972 §4.2).
        Location = 2,
        /// 3: Timestamp Information (RFC 8972 §4.3).
        TimestampInformation = 3,
        /// 4: Class of Service (RFC 8972 §4.4).
        ClassOfService = 4,
        /// 5: Direct Measurement (RFC 8972 §4.5).
        DirectMeasurement = 5,
        /// 6: Access Report (RFC 8972 §4.6).
        AccessReport = 6,
        /// 7: Follow-Up Telemetry (RFC 8972 §4.7).
        FollowUpTelemetry = 7,
        /// 8: HMAC (RFC 8972 §4.8).
        Hmac = 8,
        /// 9: Destination Node Address (RFC 9503); kept raw.
        DestinationNodeAddress = 9,
        /// 10: Return Path (RFC 9503); kept raw.
        ReturnPath = 10,
        /// 11: Micro-session ID (RFC 9534); kept raw.
        MicroSessionId = 11,
    }
}

impl TlvType {
    /// Types 252–254: Private Use, whose value starts with a 4-octet enterprise number.
    pub fn is_private_use(self) -> bool {
        (252..=254).contains(&u8::from(self))
    }
}

open_enum! {
    /// Synchronization source of a timestamp (RFC 8972 §4.3).
    pub enum SyncSource(u8) {
        /// NTP.
        Ntp = 1,
        /// PTP.
        Ptp = 2,
        /// SSU/BITS.
        SsuBits = 3,
        /// GPS/GNSS.
        Gnss = 4,
        /// Local free-running clock.
        LocalFreeRunning = 5,
    }
}

open_enum! {
    /// How a timestamp was taken (RFC 8972 §4.3); also the Follow-Up Telemetry Timestamp Mode
    /// (§4.7).
    pub enum TimestampMethod(u8) {
        /// Hardware assist.
        HardwareAssist = 1,
        /// Software local.
        SoftwareLocal = 2,
        /// Control plane.
        ControlPlane = 3,
    }
}

open_enum! {
    /// Location sub-TLV types (RFC 8972 §4.2).
    pub enum LocationSubType(u8) {
        /// Source MAC address request (length 8, MBZ).
        SourceMacRequest = 1,
        /// Source EUI-48 address (length 8: 6 octets + 2 MBZ).
        SourceEui48 = 2,
        /// Source EUI-64 address (length 8).
        SourceEui64 = 3,
        /// Destination IP address request (length 16, MBZ).
        DestinationIpRequest = 4,
        /// Destination IPv4 address (length 16: 4 octets + 12 MBZ).
        DestinationIpv4 = 5,
        /// Destination IPv6 address (length 16).
        DestinationIpv6 = 6,
        /// Source IP address request (length 16, MBZ).
        SourceIpRequest = 7,
        /// Source IPv4 address (length 16).
        SourceIpv4 = 8,
        /// Source IPv6 address (length 16).
        SourceIpv6 = 9,
    }
}

impl LocationSubType {
    /// The value length RFC 8972 §4.2 gives this sub-TLV, `None` for unknown types.
    pub fn value_len(self) -> Option<usize> {
        match u8::from(self) {
            1..=3 => Some(8),
            4..=9 => Some(16),
            _ => None,
        }
    }
}

open_enum! {
    /// Access Report ID (RFC 8972 §4.6): the access network the report is about.
    pub enum AccessId(u8) {
        /// 3GPP access.
        ThreeGpp = 1,
        /// Non-3GPP access.
        NonThreeGpp = 2,
    }
}

open_enum! {
    /// Access Report Return Code (RFC 8972 §4.6).
    pub enum ReturnCode(u8) {
        /// The network is available.
        Available = 1,
        /// The network is not available.
        Unavailable = 2,
    }
}

// ---------------------------------------------------------------------------------------------

mod field {
    use core::ops::Range;
    pub const FLAGS: usize = 0;
    pub const TYPE: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const VALUE: usize = 4;
}

/// A zero-copy view of one TLV at the start of `buffer` (which may continue past it).
#[derive(Debug, Clone)]
pub struct Tlv<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Tlv<T> {
    /// Checks that the header fits (`Truncated`) and that the Length stays inside the buffer
    /// (`BadLength`).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if HEADER_LEN + usize::from(be16(b, field::LENGTH.start)) > b.len() {
            return Err(Error::BadLength);
        }
        Ok(Tlv { buffer })
    }
    /// Wraps bytes without checks.
    pub fn new_unchecked(buffer: T) -> Self {
        Tlv { buffer }
    }
    /// Flags (RFC 8972 §4).
    pub fn flags(&self) -> TlvFlags {
        TlvFlags(self.buffer.as_ref()[field::FLAGS])
    }
    /// Type (RFC 8972 §4).
    pub fn tlv_type(&self) -> TlvType {
        self.buffer.as_ref()[field::TYPE].into()
    }
    /// Length of the value (RFC 8972 §4).
    pub fn length(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH.start)
    }
    /// Header plus value.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.length())
    }
    /// The value.
    pub fn value(&self) -> &[u8] {
        &self.buffer.as_ref()[field::VALUE..self.total_len()]
    }
}

impl<'a> Tlv<&'a [u8]> {
    /// The value, borrowed for the buffer's lifetime.
    pub fn value_ref(&self) -> &'a [u8] {
        &self.buffer[field::VALUE..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Tlv<T> {
    /// Writes the flags.
    pub fn set_flags(&mut self, f: TlvFlags) {
        self.buffer.as_mut()[field::FLAGS] = f.0;
    }
    /// Writes the type.
    pub fn set_tlv_type(&mut self, t: TlvType) {
        self.buffer.as_mut()[field::TYPE] = t.into();
    }
    /// Writes the length.
    pub fn set_length(&mut self, len: u16) {
        put16(self.buffer.as_mut(), field::LENGTH.start, len);
    }
    /// The value, to fill.
    pub fn value_mut(&mut self) -> &mut [u8] {
        let end = self.total_len();
        &mut self.buffer.as_mut()[field::VALUE..end]
    }
}

/// A cursor over a TLV area: yields `(offset, tlv)` for each TLV, or the framing error at the
/// first TLV that does not fit, after which it stops.
#[derive(Debug, Clone)]
pub struct TlvReader<'a> {
    area: &'a [u8],
    at: usize,
    done: bool,
}

impl<'a> TlvReader<'a> {
    /// A reader over `area` (everything after the base packet, or a sub-TLV area).
    pub fn new(area: &'a [u8]) -> Self {
        TlvReader { area, at: 0, done: false }
    }
    /// Offset of the next TLV.
    pub fn offset(&self) -> usize {
        self.at
    }
}

impl<'a> Iterator for TlvReader<'a> {
    type Item = Result<(usize, Tlv<&'a [u8]>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.at >= self.area.len() {
            return None;
        }
        let at = self.at;
        match Tlv::new_checked(&self.area[at..]) {
            Ok(t) => {
                self.at += t.total_len();
                Some(Ok((at, t)))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

fn check_framing(area: &[u8]) -> Result<()> {
    TlvReader::new(area).try_for_each(|r| r.map(|_| ()))
}

/// Location TLV value (RFC 8972 §4.2): the ports the reflector saw, then sub-TLVs asking for or
/// carrying addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Location<'a> {
    /// Destination Port of the received packet.
    pub destination_port: u16,
    /// Source Port of the received packet.
    pub source_port: u16,
    /// The sub-TLVs, as on the wire (iterate with [`TlvReader`]).
    pub sub_tlvs: &'a [u8],
}

/// Timestamp Information TLV value (RFC 8972 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimestampInformation<'a> {
    /// Synchronization source of the receive timestamp.
    pub sync_in: SyncSource,
    /// How the receive timestamp was taken.
    pub method_in: TimestampMethod,
    /// Synchronization source of the transmit timestamp.
    pub sync_out: SyncSource,
    /// How the transmit timestamp was taken.
    pub method_out: TimestampMethod,
    /// Optional sub-TLVs, as on the wire.
    pub sub_tlvs: &'a [u8],
}

/// Class of Service TLV value (RFC 8972 §4.4 plus the EC1/RPE bits of erratum 8199; see the
/// module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ClassOfService {
    /// DSCP1: the DSCP the sender asks the reflector to use (6 bits).
    pub dscp1: u8,
    /// DSCP2: the DSCP the reflector received (6 bits).
    pub dscp2: u8,
    /// ECN the reflector received (2 bits; "EC2" in the erratum layout).
    pub ecn: u8,
    /// RP: reverse-path DSCP policy, 1 = DSCP1 not used (2 bits; "RPD" in the erratum layout).
    pub rp: u8,
    /// EC1: the ECN the sender asks for (2 bits, erratum layout; 0 in the RFC layout).
    pub ecn1: u8,
    /// RPE: reverse-path ECN policy (2 bits, erratum layout; 0 in the RFC layout).
    pub rpe: u8,
}

impl ClassOfService {
    fn from_bits(v: u32) -> Self {
        ClassOfService {
            dscp1: (v >> 26) as u8 & 0x3f,
            dscp2: (v >> 20) as u8 & 0x3f,
            ecn: (v >> 18) as u8 & 3,
            rp: (v >> 16) as u8 & 3,
            ecn1: (v >> 14) as u8 & 3,
            rpe: (v >> 12) as u8 & 3,
        }
    }
    fn to_bits(self) -> u32 {
        (u32::from(self.dscp1 & 0x3f) << 26)
            | (u32::from(self.dscp2 & 0x3f) << 20)
            | (u32::from(self.ecn & 3) << 18)
            | (u32::from(self.rp & 3) << 16)
            | (u32::from(self.ecn1 & 3) << 14)
            | (u32::from(self.rpe & 3) << 12)
    }
}

/// Direct Measurement TLV value (RFC 8972 §4.5): packet counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DirectMeasurement {
    /// S_TxC: packets the sender has transmitted.
    pub sender_tx: u32,
    /// R_RxC: packets the reflector has received.
    pub reflector_rx: u32,
    /// R_TxC: packets the reflector has transmitted.
    pub reflector_tx: u32,
}

/// Access Report TLV value (RFC 8972 §4.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AccessReport {
    /// ID (4 bits).
    pub id: AccessId,
    /// Return Code.
    pub return_code: ReturnCode,
}

/// Follow-Up Telemetry TLV value (RFC 8972 §4.7): the previous reply's sequence number and
/// actual send time (a stateless reflector sends zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FollowUpTelemetry {
    /// Sequence Number of the previous reply.
    pub sequence: u32,
    /// When it was actually sent.
    pub timestamp: NtpTimestamp,
    /// How that timestamp was taken.
    pub mode: TimestampMethod,
}

/// A TLV's value, by type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlvValue<'a> {
    /// Type 1: padding octets (pseudo-random or zero).
    ExtraPadding(&'a [u8]),
    /// Type 2.
    Location(Location<'a>),
    /// Type 3.
    TimestampInformation(TimestampInformation<'a>),
    /// Type 4.
    ClassOfService(ClassOfService),
    /// Type 5.
    DirectMeasurement(DirectMeasurement),
    /// Type 6.
    AccessReport(AccessReport),
    /// Type 7.
    FollowUpTelemetry(FollowUpTelemetry),
    /// Type 8: the 16-octet HMAC (check it with [`check_hmac`]).
    Hmac([u8; HMAC_LEN]),
    /// Any other type, kept as raw value octets.
    Other {
        /// The type.
        tlv_type: TlvType,
        /// The value.
        value: &'a [u8],
    },
}

/// One TLV: flags and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TlvRepr<'a> {
    /// Flags.
    pub flags: TlvFlags,
    /// Type and value.
    pub value: TlvValue<'a>,
}

fn fixed<const N: usize>(v: &[u8]) -> Result<[u8; N]> {
    if v.len() == N { Ok(<[u8; N]>::read(v)) } else { Err(Error::Malformed) }
}

impl<'a> TlvRepr<'a> {
    /// Decodes a TLV by type. `Malformed` when a known type has the wrong length or badly framed
    /// sub-TLVs, or a Private Use TLV is shorter than its enterprise number (RFC 8972 §4): the
    /// reflector then sets M ([`mark_reply`]).
    pub fn parse(t: &Tlv<&'a [u8]>) -> Result<Self> {
        let v = t.value_ref();
        let value = match t.tlv_type() {
            TlvType::ExtraPadding => TlvValue::ExtraPadding(v),
            TlvType::Location => {
                if v.len() < 4 {
                    return Err(Error::Malformed);
                }
                let sub = &v[4..];
                for s in TlvReader::new(sub) {
                    let (_, s) = s.map_err(|_| Error::Malformed)?;
                    let want = LocationSubType::from(u8::from(s.tlv_type())).value_len();
                    if want.is_some_and(|w| w != usize::from(s.length())) {
                        return Err(Error::Malformed);
                    }
                }
                TlvValue::Location(Location { destination_port: be16(v, 0), source_port: be16(v, 2), sub_tlvs: sub })
            }
            TlvType::TimestampInformation => {
                if v.len() < 4 {
                    return Err(Error::Malformed);
                }
                check_framing(&v[4..]).map_err(|_| Error::Malformed)?;
                TlvValue::TimestampInformation(TimestampInformation {
                    sync_in: v[0].into(),
                    method_in: v[1].into(),
                    sync_out: v[2].into(),
                    method_out: v[3].into(),
                    sub_tlvs: &v[4..],
                })
            }
            TlvType::ClassOfService => {
                TlvValue::ClassOfService(ClassOfService::from_bits(u32::from_be_bytes(fixed::<4>(v)?)))
            }
            TlvType::DirectMeasurement => {
                let v = fixed::<12>(v)?;
                TlvValue::DirectMeasurement(DirectMeasurement {
                    sender_tx: be32(&v, 0),
                    reflector_rx: be32(&v, 4),
                    reflector_tx: be32(&v, 8),
                })
            }
            TlvType::AccessReport => {
                let v = fixed::<4>(v)?;
                TlvValue::AccessReport(AccessReport { id: (v[0] >> 4).into(), return_code: v[1].into() })
            }
            TlvType::FollowUpTelemetry => {
                let v = fixed::<16>(v)?;
                TlvValue::FollowUpTelemetry(FollowUpTelemetry {
                    sequence: be32(&v, 0),
                    timestamp: NtpTimestamp::read(&v[4..12]),
                    mode: v[12].into(),
                })
            }
            TlvType::Hmac => TlvValue::Hmac(fixed::<HMAC_LEN>(v)?),
            other if other.is_private_use() && v.len() < 4 => return Err(Error::Malformed),
            other => TlvValue::Other { tlv_type: other, value: v },
        };
        Ok(TlvRepr { flags: t.flags(), value })
    }

    /// The type.
    pub fn tlv_type(&self) -> TlvType {
        match self.value {
            TlvValue::ExtraPadding(_) => TlvType::ExtraPadding,
            TlvValue::Location(_) => TlvType::Location,
            TlvValue::TimestampInformation(_) => TlvType::TimestampInformation,
            TlvValue::ClassOfService(_) => TlvType::ClassOfService,
            TlvValue::DirectMeasurement(_) => TlvType::DirectMeasurement,
            TlvValue::AccessReport(_) => TlvType::AccessReport,
            TlvValue::FollowUpTelemetry(_) => TlvType::FollowUpTelemetry,
            TlvValue::Hmac(_) => TlvType::Hmac,
            TlvValue::Other { tlv_type, .. } => tlv_type,
        }
    }

    fn value_len(&self) -> usize {
        match self.value {
            TlvValue::ExtraPadding(p) => p.len(),
            TlvValue::Location(l) => 4 + l.sub_tlvs.len(),
            TlvValue::TimestampInformation(t) => 4 + t.sub_tlvs.len(),
            TlvValue::ClassOfService(_) | TlvValue::AccessReport(_) => 4,
            TlvValue::DirectMeasurement(_) => 12,
            TlvValue::FollowUpTelemetry(_) | TlvValue::Hmac(_) => 16,
            TlvValue::Other { value, .. } => value.len(),
        }
    }

    /// Header plus value. A value longer than 65 535 octets cannot be framed: [`TlvWriter`]
    /// refuses it.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.value_len()
    }

    /// Writes the TLV into `buf[..buffer_len()]` (reserved bits zero). The value must fit the
    /// 16-bit Length; use [`TlvWriter::push`] for a checked write.
    pub fn emit(&self, buf: &mut [u8]) {
        let len = self.value_len();
        let b = &mut buf[..HEADER_LEN + len];
        b.fill(0);
        let mut t = Tlv::new_unchecked(&mut *b);
        t.set_flags(self.flags);
        t.set_tlv_type(self.tlv_type());
        t.set_length(len as u16);
        let v = &mut b[HEADER_LEN..];
        match self.value {
            TlvValue::ExtraPadding(p) => v.copy_from_slice(p),
            TlvValue::Location(l) => {
                put16(v, 0, l.destination_port);
                put16(v, 2, l.source_port);
                v[4..].copy_from_slice(l.sub_tlvs);
            }
            TlvValue::TimestampInformation(t) => {
                v[..4].copy_from_slice(&[t.sync_in.into(), t.method_in.into(), t.sync_out.into(), t.method_out.into()]);
                v[4..].copy_from_slice(t.sub_tlvs);
            }
            TlvValue::ClassOfService(c) => put32(v, 0, c.to_bits()),
            TlvValue::DirectMeasurement(d) => {
                put32(v, 0, d.sender_tx);
                put32(v, 4, d.reflector_rx);
                put32(v, 8, d.reflector_tx);
            }
            TlvValue::AccessReport(a) => {
                v[0] = (u8::from(a.id) & 0x0f) << 4;
                v[1] = a.return_code.into();
            }
            TlvValue::FollowUpTelemetry(f) => {
                put32(v, 0, f.sequence);
                f.timestamp.write(&mut v[4..12]);
                v[12] = f.mode.into();
            }
            TlvValue::Hmac(h) => v.copy_from_slice(&h),
            TlvValue::Other { value, .. } => v.copy_from_slice(value),
        }
    }
}

/// HMAC-SHA-256/128 of the HMAC TLV (RFC 8972 §4.8): over the packet's own 4-octet Sequence
/// Number followed by every TLV before the HMAC TLV, headers included (verified on stamp-suite
/// packets, reference §5.3).
pub fn compute_hmac(key: &[u8], sequence: u32, preceding_tlvs: &[u8]) -> [u8; HMAC_LEN] {
    super::packet::hmac_sha256_128(key, &[&sequence.to_be_bytes(), preceding_tlvs])
}

/// What [`check_hmac`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlvHmacCheck {
    /// No HMAC TLV. In authenticated mode that is a failure unless the only TLVs are Extra
    /// Padding (RFC 8972 §4.8).
    Absent,
    /// The HMAC TLV verifies.
    Valid,
    /// The HMAC TLV does not verify.
    Invalid,
    /// An HMAC TLV followed by anything but Extra Padding, or more than one: counts as an
    /// integrity failure (RFC 8972 §4.8).
    Misplaced,
    /// The TLV framing is broken before the HMAC TLV was found or checked.
    Malformed,
}

/// Checks the HMAC TLV of a TLV area against `key`, with the packet's Sequence Number
/// (constant-time comparison).
pub fn check_hmac(key: &[u8], sequence: u32, area: &[u8]) -> TlvHmacCheck {
    let mut found: Option<(usize, [u8; HMAC_LEN])> = None;
    for r in TlvReader::new(area) {
        let Ok((at, t)) = r else { return TlvHmacCheck::Malformed };
        match (t.tlv_type(), found) {
            (TlvType::Hmac, None) => match fixed::<HMAC_LEN>(t.value()) {
                Ok(h) => found = Some((at, h)),
                Err(_) => return TlvHmacCheck::Malformed,
            },
            (TlvType::ExtraPadding, _) | (_, None) => {}
            (_, Some(_)) => return TlvHmacCheck::Misplaced,
        }
    }
    match found {
        None => TlvHmacCheck::Absent,
        Some((at, got)) => {
            use subtle::ConstantTimeEq;
            if bool::from(compute_hmac(key, sequence, &area[..at]).ct_eq(&got)) {
                TlvHmacCheck::Valid
            } else {
                TlvHmacCheck::Invalid
            }
        }
    }
}

/// A cursor that appends TLVs to an area.
#[derive(Debug)]
pub struct TlvWriter<'a> {
    area: &'a mut [u8],
    len: usize,
}

impl<'a> TlvWriter<'a> {
    /// A writer at the start of `area`.
    pub fn new(area: &'a mut [u8]) -> Self {
        TlvWriter { area, len: 0 }
    }
    /// Octets written so far.
    pub fn written(&self) -> usize {
        self.len
    }
    /// Appends a TLV. `Truncated` when it does not fit, `BadLength` when its value is longer
    /// than 65 535 octets; nothing is written then.
    pub fn push(&mut self, tlv: &TlvRepr<'_>) -> Result<()> {
        let n = tlv.buffer_len();
        if n - HEADER_LEN > usize::from(u16::MAX) {
            return Err(Error::BadLength);
        }
        let room = self.area.get_mut(self.len..self.len + n).ok_or(Error::Truncated)?;
        tlv.emit(room);
        self.len += n;
        Ok(())
    }
    /// Appends the HMAC TLV over `sequence` and everything written so far (RFC 8972 §4.8). Only
    /// Extra Padding may follow it.
    pub fn push_hmac(&mut self, flags: TlvFlags, key: &[u8], sequence: u32) -> Result<()> {
        let h = compute_hmac(key, sequence, &self.area[..self.len]);
        self.push(&TlvRepr { flags, value: TlvValue::Hmac(h) })
    }
}

/// What [`mark_reply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MarkSummary {
    /// TLVs with U cleared.
    pub recognized: usize,
    /// TLVs left or set with U.
    pub unrecognized: usize,
    /// Offset of the TLV marked M, where processing stopped (RFC 8972 §4).
    pub malformed_at: Option<usize>,
}

/// The reflector's flag pass over the TLV area it copied from the sender (RFC 8972 §4): U
/// cleared on TLVs that parse and whose type `supports`, U set on the others; at the first
/// malformed TLV (bad framing, or a known type with a bad value) M is set and processing stops,
/// leaving the rest as received.
pub fn mark_reply(area: &mut [u8], supports: impl Fn(TlvType) -> bool) -> MarkSummary {
    let mut s = MarkSummary::default();
    let mut at = 0;
    while at < area.len() {
        let step = match Tlv::new_checked(&area[at..]) {
            Ok(t) => match TlvRepr::parse(&t) {
                Ok(r) => Ok((t.total_len(), supports(r.tlv_type()))),
                Err(_) => Err(()),
            },
            Err(_) => Err(()),
        };
        match step {
            Ok((len, known)) => {
                let f = TlvFlags(area[at]).with(TlvFlags::U, !known);
                area[at] = f.0;
                if known {
                    s.recognized += 1;
                } else {
                    s.unrecognized += 1;
                }
                at += len;
            }
            Err(()) => {
                if area.len() - at >= HEADER_LEN {
                    area[at] |= TlvFlags::M.0;
                }
                s.malformed_at = Some(at);
                break;
            }
        }
    }
    s
}

/// Sets I on every TLV of the area (the reflector's answer to a failed TLV HMAC, RFC 8972 §4.8),
/// stopping at the first framing error. Returns how many TLVs were marked.
pub fn set_integrity_failed(area: &mut [u8]) -> usize {
    let mut at = 0;
    let mut n = 0;
    while let Ok(t) = Tlv::new_checked(&area[at..]) {
        let len = t.total_len();
        area[at] |= TlvFlags::I.0;
        n += 1;
        at += len;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stamp::packet::{SenderPacket, SenderRepr, StampMode};
    use crate::time::ErrorEstimate;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '\n'], "")).unwrap()
    }

    fn one(b: &[u8]) -> TlvRepr<'_> {
        TlvRepr::parse(&Tlv::new_checked(b).unwrap()).unwrap()
    }

    #[test]
    fn stamp_suite_cos_reply() {
        // stamp-suite 1.0.0 reply value bae03000: DSCP1 = DSCP2 = 46, RPE = 3 (reference §5.3).
        let b = hex("00 04 0004 bae03000");
        let r = one(&b);
        assert_eq!(r.flags, TlvFlags(0));
        assert_eq!(
            r.value,
            TlvValue::ClassOfService(ClassOfService { dscp1: 46, dscp2: 46, ecn: 0, rp: 0, ecn1: 0, rpe: 3 })
        );
        let mut out = vec![0u8; r.buffer_len()];
        r.emit(&mut out);
        assert_eq!(out, b);
        // RFC layout: DSCP1 46 requested, DSCP2 10 and ECN 2 received, RP 1, reserved bits set
        // (ignored on parse, zero on emit)
        // 101110 001010 10 01 | 0000 1111 1111 1111
        let b = hex("80 04 0004 b8a90fff");
        assert_eq!(
            one(&b).value,
            TlvValue::ClassOfService(ClassOfService { dscp1: 46, dscp2: 10, ecn: 2, rp: 1, ecn1: 0, rpe: 0 })
        );
        assert_eq!(TlvRepr::parse(&Tlv::new_checked(&hex("80 04 0003 b8aa0f")[..]).unwrap()), Err(Error::Malformed));
    }

    #[test]
    fn fixed_tlvs() {
        let dm = hex("80 05 000c 00000001 00000002 00000003");
        assert_eq!(
            one(&dm).value,
            TlvValue::DirectMeasurement(DirectMeasurement { sender_tx: 1, reflector_rx: 2, reflector_tx: 3 })
        );
        let ar = hex("80 06 0004 1f 02 0000");
        assert_eq!(
            one(&ar).value,
            TlvValue::AccessReport(AccessReport { id: AccessId::ThreeGpp, return_code: ReturnCode::Unavailable })
        );
        let fu = hex("80 07 0010 00000005 eeacd05d612d8599 01 000000");
        assert_eq!(
            one(&fu).value,
            TlvValue::FollowUpTelemetry(FollowUpTelemetry {
                sequence: 5,
                timestamp: NtpTimestamp(0xeeac_d05d_612d_8599),
                mode: TimestampMethod::HardwareAssist
            })
        );
        // stamp-suite's Timestamp Information reply value 05020502 (reference §5.3)
        let ti = hex("00 03 0004 05020502");
        let TlvValue::TimestampInformation(t) = one(&ti).value else { panic!() };
        assert_eq!((t.sync_in, t.method_in), (SyncSource::LocalFreeRunning, TimestampMethod::SoftwareLocal));
        assert_eq!((t.sync_out, t.method_out), (SyncSource::LocalFreeRunning, TimestampMethod::SoftwareLocal));
        for (b, what) in [(&dm, "dm"), (&ar, "ar"), (&fu, "fu")] {
            let mut short = b.clone();
            short.pop();
            short[3] -= 1;
            assert_eq!(TlvRepr::parse(&Tlv::new_checked(&short[..]).unwrap()), Err(Error::Malformed), "{what}");
        }
    }

    #[test]
    fn location_with_sub_tlvs() {
        // ports 862/50000, a destination-IP request (16 MBZ) and a source IPv4 sub-TLV
        let mut b = hex("80 02 002c 035e c350");
        b.extend(hex("80 04 0010"));
        b.extend([0u8; 16]);
        b.extend(hex("00 08 0010 c0000201"));
        b.extend([0u8; 12]);
        assert_eq!(b.len(), 4 + 44);
        let TlvValue::Location(l) = one(&b).value else { panic!() };
        assert_eq!((l.destination_port, l.source_port), (862, 50000));
        let subs: Vec<_> = TlvReader::new(l.sub_tlvs).map(|r| r.unwrap()).collect();
        assert_eq!(subs.len(), 2);
        assert_eq!(LocationSubType::from(u8::from(subs[1].1.tlv_type())), LocationSubType::SourceIpv4);
        assert_eq!(&subs[1].1.value()[..4], &[192, 0, 2, 1]);
        // a sub-TLV with the wrong length for its type, or broken framing, is malformed
        let mut bad = b.clone();
        bad[11] = 0x0f;
        assert!(TlvRepr::parse(&Tlv::new_checked(&bad[..]).unwrap()).is_err());
    }

    #[test]
    fn unknown_and_private_tlvs() {
        let b = hex("80 f2 0002 abcd"); // 242: experimental, the stamp-suite/teaparty collision
        assert_eq!(one(&b).value, TlvValue::Other { tlv_type: TlvType::Unknown(242), value: &[0xab, 0xcd] });
        let b = hex("80 0b 0002 0001"); // 11: Micro-session ID, named but kept raw
        assert_eq!(one(&b).tlv_type(), TlvType::MicroSessionId);
        let b = hex("80 fc 0003 000001");
        assert_eq!(TlvRepr::parse(&Tlv::new_checked(&b[..]).unwrap()), Err(Error::Malformed));
        let b = hex("80 fc 0006 0000abcd 0102");
        assert!(matches!(one(&b).value, TlvValue::Other { .. }));
    }

    #[test]
    fn reader_stops_at_framing_errors() {
        let b = hex("80 01 0002 0000 80 04 0004 00000000 80 05");
        let items: Vec<_> = TlvReader::new(&b).collect();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].as_ref().unwrap().0, 0);
        assert_eq!(items[1].as_ref().unwrap().0, 6);
        assert_eq!(items[2].as_ref().unwrap_err(), &Error::Truncated);
        let b = hex("80 01 00ff 00");
        assert_eq!(TlvReader::new(&b).next().unwrap().unwrap_err(), Error::BadLength);
        assert!(TlvReader::new(&[]).next().is_none());
    }

    #[test]
    fn reflector_marks_flags() {
        // CoS (supported), unknown 242, DM (not supported here), then a CoS with length 3
        let mut b =
            hex("80 04 0004 b8000000  80 f2 0001 00  80 05 000c 000000000000000000000000  80 04 0003 000000 ff");
        let s = mark_reply(&mut b, |t| t == TlvType::ClassOfService);
        assert_eq!(s, MarkSummary { recognized: 1, unrecognized: 2, malformed_at: Some(29) });
        assert_eq!(b[0], 0x00);
        assert_eq!(b[8], 0x80);
        assert_eq!(b[13], 0x80);
        assert_eq!(b[29], 0xc0);
        // a truncated header at the end: too short to flag, processing stops
        let mut c = hex("80 04 0004 b8000000 80 01");
        assert_eq!(mark_reply(&mut c, |_| true), MarkSummary { recognized: 1, unrecognized: 0, malformed_at: Some(8) });
        assert_eq!(&c[8..], &[0x80, 0x01]);
        // I on every TLV
        let mut d = hex("80 04 0004 b8000000 00 01 0000");
        assert_eq!(set_integrity_failed(&mut d), 2);
        assert_eq!((d[0], d[8]), (0xa0, 0x20));
    }

    #[test]
    fn hmac_tlv_rules() {
        let key = b"0123456789abcdef0123456789abcdef";
        let mut area = [0u8; 64];
        let mut w = TlvWriter::new(&mut area);
        let cos = TlvRepr {
            flags: TlvFlags::U,
            value: TlvValue::ClassOfService(ClassOfService { dscp1: 46, ..Default::default() }),
        };
        w.push(&cos).unwrap();
        w.push_hmac(TlvFlags::U, key, 7).unwrap();
        w.push(&TlvRepr { flags: TlvFlags::U, value: TlvValue::ExtraPadding(&[0; 4]) }).unwrap();
        let n = w.written();
        assert_eq!(n, 8 + 20 + 8);
        let area = &area[..n];
        // HMAC-SHA256(key, seq ‖ preceding TLVs)[:16], TLV headers included
        use hmac::{KeyInit, Mac};
        let mut m = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).unwrap();
        m.update(&[0, 0, 0, 7]);
        m.update(&area[..8]);
        assert_eq!(&area[12..28], &m.finalize().into_bytes()[..16]);
        assert_eq!(check_hmac(key, 7, area), TlvHmacCheck::Valid);
        assert_eq!(check_hmac(key, 8, area), TlvHmacCheck::Invalid);
        assert_eq!(check_hmac(b"other", 7, area), TlvHmacCheck::Invalid);
        assert_eq!(check_hmac(key, 7, &area[..8]), TlvHmacCheck::Absent);
        assert_eq!(check_hmac(key, 7, &area[..30]), TlvHmacCheck::Malformed);
        // anything but Extra Padding after the HMAC: misplaced
        let mut moved = area.to_vec();
        moved[29] = 4;
        assert_eq!(check_hmac(key, 7, &moved), TlvHmacCheck::Misplaced);
    }

    #[test]
    fn writer_bounds() {
        let mut area = [0u8; 10];
        let mut w = TlvWriter::new(&mut area);
        let pad = [0u8; 7];
        assert_eq!(w.push(&TlvRepr { flags: TlvFlags::U, value: TlvValue::ExtraPadding(&pad) }), Err(Error::Truncated));
        assert_eq!(w.written(), 0);
        let big = vec![0u8; 70_000];
        let mut area = vec![0u8; 70_010];
        let mut w = TlvWriter::new(&mut area);
        assert_eq!(w.push(&TlvRepr { flags: TlvFlags::U, value: TlvValue::ExtraPadding(&big) }), Err(Error::BadLength));
    }

    #[test]
    fn sender_packet_with_tlvs() {
        // A whole authenticated sender packet with CoS and HMAC TLVs, as stamp-suite sends.
        let key = [7u8; 32];
        let r = SenderRepr {
            mode: StampMode::Authenticated,
            sequence: 3,
            timestamp: NtpTimestamp(1),
            error_estimate: ErrorEstimate(1),
            ssid: 4660,
        };
        let mut b = vec![0u8; 112 + 8 + 20];
        r.emit(&mut b);
        let mut p = SenderPacket::new_checked(&mut b[..], StampMode::Authenticated).unwrap();
        let mut w = TlvWriter::new(p.tlv_area_mut());
        w.push(&TlvRepr {
            flags: TlvFlags::U,
            value: TlvValue::ClassOfService(ClassOfService { dscp1: 46, ..Default::default() }),
        })
        .unwrap();
        w.push_hmac(TlvFlags::U, &key, 3).unwrap();
        p.sign(&key);
        let p = SenderPacket::new_checked(&b[..], StampMode::Authenticated).unwrap();
        assert!(p.verify_hmac(&key));
        assert_eq!(check_hmac(&key, p.sequence(), p.tlv_area()), TlvHmacCheck::Valid);
        assert_eq!(p.tlv_area()[..4], [0x80, 4, 0, 4]);
    }

    fn arb_value() -> impl Strategy<Value = (u8, Vec<u8>)> {
        // (type, value) pairs that parse
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|v| (1u8, v)),
            (any::<[u8; 4]>(), 0usize..3).prop_map(|(h, n)| {
                let mut v = h.to_vec();
                for i in 0..n {
                    v.extend([0x80, 5 + i as u8 % 2, 0, 16]);
                    v.extend([i as u8; 16]);
                }
                (2u8, v)
            }),
            any::<[u8; 4]>().prop_map(|v| (3u8, v.to_vec())),
            any::<u32>().prop_map(|v| (4u8, (v & 0xffff_f000).to_be_bytes().to_vec())),
            any::<[u8; 12]>().prop_map(|v| (5u8, v.to_vec())),
            (0u8..16, any::<u8>()).prop_map(|(id, rc)| (6u8, vec![id << 4, rc, 0, 0])),
            (any::<[u8; 13]>()).prop_map(|v| {
                let mut x = v.to_vec();
                x.extend([0, 0, 0]);
                (7u8, x)
            }),
            any::<[u8; 16]>().prop_map(|v| (8u8, v.to_vec())),
            (9u8..=251, proptest::collection::vec(any::<u8>(), 0..20)),
            (252u8..=254, proptest::collection::vec(any::<u8>(), 4..20)),
        ]
    }

    proptest! {
        #[test]
        fn tlv_roundtrip(flags in any::<u8>(), (ty, value) in arb_value()) {
            let mut wire = vec![flags, ty];
            wire.extend((value.len() as u16).to_be_bytes());
            wire.extend(&value);
            let r = one(&wire);
            let mut out = vec![0u8; r.buffer_len()];
            r.emit(&mut out);
            prop_assert_eq!(&out, &wire);
            prop_assert_eq!(one(&out), r);
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..120), seq in any::<u32>()) {
            for (_, t) in TlvReader::new(&data).flatten() {
                if let Ok(r) = TlvRepr::parse(&t) {
                    let mut out = vec![0u8; r.buffer_len()];
                    r.emit(&mut out);
                    prop_assert_eq!(TlvRepr::parse(&Tlv::new_checked(&out[..]).unwrap()).unwrap(), r);
                }
            }
            let _ = check_hmac(b"k", seq, &data);
            let mut d = data.clone();
            let s = mark_reply(&mut d, |_| true);
            prop_assert!(s.recognized + s.unrecognized <= data.len() / HEADER_LEN);
            let mut d = data;
            set_integrity_failed(&mut d);
        }
    }
}
