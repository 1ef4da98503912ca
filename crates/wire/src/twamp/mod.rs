//! TWAMP (RFC 5357) with its extensions: individual session control (RFC 5938), reflect octets
//! and symmetrical size (RFC 6038), mixed mode (RFC 5618); OWAMP's security (RFC 4656 §3.1, §4.1.2).
//!
//! - [`control`]: every TWAMP-Control message (TCP 862) as a zero-copy view and a `Repr`.
//! - [`test`](mod@test): TWAMP-Test Session-Sender and Session-Reflector packets (UDP), both layouts.
//! - [`crypto`]: key derivation, the Token, the encrypted control stream and its HMAC, the
//!   per-session test keys and the test-packet encryption.
//!
//! Shared codes live here: the [`Modes`] bitmap and mode negotiation, [`Accept`], [`Command`],
//! the [`Sid`] and the [`TypeP`] descriptor.
//!
//! Decisions where the RFC text, the reference (`shared/reference/twamp-stamp.md`) and real peers
//! disagree:
//! - Authenticated/encrypted reflector packets are **112** octets (the figure of RFC 5357 §4.2.1
//!   adds up to 112; its text says 104). Senders pad 64 octets in those modes for equal sizes,
//!   27 in open mode ([`test::SYMMETRIC_PADDING_AUTH`], [`test::SYMMETRIC_PADDING_OPEN`]).
//! - The server's first control HMAC covers Server-Start octets 32–47 only (not the clear part),
//!   as twampd does (reference §2.3, §3.2).
//! - In authenticated mode the test HMAC covers only the first 16-octet block, in both
//!   directions, as verified against twampd (reference §3.3).
//! - Parsing is liberal (reference §8): unknown Accept values are kept (use
//!   [`Accept::normalized`] to read them as 1), Stop-Sessions with Number of Sessions 0 parses,
//!   zero addresses parse, short 38-octet TWAMP-Light replies parse with no Sender TTL. Emitting
//!   is strict: MBZ octets are zero and every field is written.

pub mod control;
pub mod crypto;
pub mod test;

use crate::{FieldValue, be32, open_enum, put32};
use core::fmt;
use core::ops::{BitAnd, BitOr};

pub use crate::time::ErrorEstimate;

/// TCP port of TWAMP-Control (RFC 5357 §3.1, IANA "twamp-control").
pub const CONTROL_PORT: u16 = 862;
/// UDP port RFC 8545 assigns to TWAMP-Test receivers (also STAMP's default, RFC 8762 §4).
pub const TEST_PORT: u16 = 862;

/// The 32-bit Modes field (RFC 4656 §3.1; IANA "TWAMP-Modes"). A bitmap, so unknown bits are
/// kept as they are.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Modes(pub u32);

impl Modes {
    /// Bit 0: unauthenticated (RFC 4656 §3.1).
    pub const UNAUTHENTICATED: Modes = Modes(1);
    /// Bit 1: authenticated (RFC 4656 §3.1).
    pub const AUTHENTICATED: Modes = Modes(2);
    /// Bit 2: encrypted (RFC 4656 §3.1).
    pub const ENCRYPTED: Modes = Modes(4);
    /// Bit 3: mixed, encrypted control with unauthenticated test (RFC 5618 §3.1).
    pub const MIXED: Modes = Modes(8);
    /// Bit 4: individual session control (RFC 5938 §3.1).
    pub const INDIVIDUAL_SESSION_CONTROL: Modes = Modes(16);
    /// Bit 5: reflect octets (RFC 6038 §3.1).
    pub const REFLECT_OCTETS: Modes = Modes(32);
    /// Bit 6: symmetrical size sender test packet format (RFC 6038 §3.1).
    pub const SYMMETRICAL_SIZE: Modes = Modes(64);
    /// Bit 7: IKEv2-derived shared key (RFC 7717 §5).
    pub const IKEV2_DERIVED: Modes = Modes(128);
    /// Bit 8: DSCP and ECN monitoring (RFC 7750 §2).
    pub const DSCP_ECN_MONITORING: Modes = Modes(256);
    /// Bit 9: PTPv2 timestamp capability (RFC 8186 §2).
    pub const PTP_TIMESTAMP: Modes = Modes(512);
    /// The four security bits; a Set-Up-Response selects exactly one (RFC 4656 §3.1, RFC 6038 §3.1).
    pub const SECURITY: Modes = Modes(0xf);

    const NAMES: [(u32, &'static str); 10] = [
        (1, "unauthenticated"),
        (2, "authenticated"),
        (4, "encrypted"),
        (8, "mixed"),
        (16, "individual-session-control"),
        (32, "reflect-octets"),
        (64, "symmetrical-size"),
        (128, "ikev2-derived"),
        (256, "dscp-ecn-monitoring"),
        (512, "ptp-timestamp"),
    ];

    /// True when every bit of `other` is set in `self`.
    pub fn contains(self, other: Modes) -> bool {
        self.0 & other.0 == other.0
    }
    /// True when no bit is set (a greeting with Modes 0 means the server refuses, RFC 4656 §3.1).
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// The bits outside [`Modes::SECURITY`].
    pub fn features(self) -> Modes {
        Modes(self.0 & !Self::SECURITY.0)
    }
    /// The selected security mode when exactly one security bit is set (what a valid
    /// Set-Up-Response carries), else `None`.
    pub fn security_mode(self) -> Option<SecurityMode> {
        match self.0 & Self::SECURITY.0 {
            1 => Some(SecurityMode::Unauthenticated),
            2 => Some(SecurityMode::Authenticated),
            4 => Some(SecurityMode::Encrypted),
            8 => Some(SecurityMode::Mixed),
            _ => None,
        }
    }
}

impl BitOr for Modes {
    type Output = Modes;
    fn bitor(self, rhs: Modes) -> Modes {
        Modes(self.0 | rhs.0)
    }
}

impl BitAnd for Modes {
    type Output = Modes;
    fn bitand(self, rhs: Modes) -> Modes {
        Modes(self.0 & rhs.0)
    }
}

impl fmt::Debug for Modes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Modes({:#x}", self.0)?;
        let mut sep = ": ";
        for (bit, name) in Self::NAMES {
            if self.0 & bit != 0 {
                write!(f, "{sep}{name}")?;
                sep = "|";
            }
        }
        let unknown = self.0 & !0x3ff;
        if unknown != 0 {
            write!(f, "{sep}unknown {unknown:#x}")?;
        }
        f.write_str(")")
    }
}

impl FieldValue for Modes {
    fn read(b: &[u8]) -> Self {
        Modes(be32(b, 0))
    }
    fn write(self, b: &mut [u8]) {
        put32(b, 0, self.0)
    }
}

/// The one security mode a session runs in (RFC 4656 §3.1, RFC 5618 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityMode {
    /// No crypto anywhere; HMAC fields are zero.
    Unauthenticated,
    /// Encrypted control; test packets carry an HMAC and their first block is encrypted (ECB).
    Authenticated,
    /// Encrypted control; test packets carry an HMAC and are encrypted (CBC).
    Encrypted,
    /// Encrypted control, unauthenticated test packets (RFC 5618).
    Mixed,
}

impl SecurityMode {
    /// Strongest first: the order [`choose_mode`] tries. Encrypted protects control and the
    /// whole test header, authenticated the control and the test sequence number, mixed only the
    /// control.
    pub const STRONGEST_FIRST: [SecurityMode; 4] =
        [SecurityMode::Encrypted, SecurityMode::Authenticated, SecurityMode::Mixed, SecurityMode::Unauthenticated];

    /// The mode's bit in the Modes field.
    pub fn bit(self) -> Modes {
        match self {
            SecurityMode::Unauthenticated => Modes::UNAUTHENTICATED,
            SecurityMode::Authenticated => Modes::AUTHENTICATED,
            SecurityMode::Encrypted => Modes::ENCRYPTED,
            SecurityMode::Mixed => Modes::MIXED,
        }
    }
    /// True when the control connection is encrypted and carries HMACs after Server-Start
    /// (RFC 4656 §3.4, RFC 5618 §3.2).
    pub fn protects_control(self) -> bool {
        self != SecurityMode::Unauthenticated
    }
    /// The TWAMP-Test layout this mode uses (RFC 5357 §4.1.2, §4.2.1; RFC 5618 §3.3).
    pub fn test_layout(self) -> test::TestLayout {
        match self {
            SecurityMode::Unauthenticated | SecurityMode::Mixed => test::TestLayout::Unauthenticated,
            SecurityMode::Authenticated | SecurityMode::Encrypted => test::TestLayout::Authenticated,
        }
    }
}

/// The Mode a client puts in its Set-Up-Response: the strongest security mode that the server
/// offers and `allowed` contains (order [`SecurityMode::STRONGEST_FIRST`]), plus every feature bit
/// (RFC 5938, RFC 6038, …) that both sides have. `None` when there is no common security mode,
/// in which case the client sends Mode 0 and closes (RFC 4656 §3.1).
pub fn choose_mode(offered: Modes, allowed: Modes) -> Option<Modes> {
    choose_mode_in_order(offered, allowed, &SecurityMode::STRONGEST_FIRST)
}

/// Like [`choose_mode`] with the client's own order of preference (twping's `-A` string).
pub fn choose_mode_in_order(offered: Modes, allowed: Modes, preference: &[SecurityMode]) -> Option<Modes> {
    let common = offered & allowed;
    let sec = preference.iter().copied().find(|m| common.contains(m.bit()))?;
    Some(sec.bit() | common.features())
}

open_enum! {
    /// The Accept field (RFC 4656 §3.3; value 6 from RFC 7717 §5.3). A receiver reads any other
    /// value as 1 ([`Accept::normalized`]).
    pub enum Accept(u8) {
        /// OK.
        Ok = 0,
        /// Failure, reason unspecified (catch-all).
        Failure = 1,
        /// Internal error.
        InternalError = 2,
        /// Some aspect of the request is not supported (also: unknown command, RFC 5357 §3.5).
        NotSupported = 3,
        /// Cannot perform the request due to permanent resource limitations.
        PermanentResourceLimitation = 4,
        /// Cannot perform the request due to temporary resource limitations.
        TemporaryResourceLimitation = 5,
        /// IKEv2 SA not found for the IKEv2-derived key mode (RFC 7717 §5.3).
        IkeSaNotFound = 6,
    }
}

impl Accept {
    /// True for 0.
    pub fn is_ok(self) -> bool {
        self == Accept::Ok
    }
    /// Unknown values read as 1, as RFC 4656 §3.3 requires of a receiver.
    pub fn normalized(self) -> Accept {
        match self {
            Accept::Unknown(_) => Accept::Failure,
            a => a,
        }
    }
}

open_enum! {
    /// TWAMP-Control command numbers (RFC 5357 §8.3 registry, RFC 5938 §6, RFC 9533).
    pub enum Command(u8) {
        /// 0: reserved.
        Reserved = 0,
        /// 1: forbidden in TWAMP (OWAMP Request-Session).
        Forbidden = 1,
        /// 2: Start-Sessions (RFC 4656 §3.7).
        StartSessions = 2,
        /// 3: Stop-Sessions (RFC 4656 §3.8, RFC 5357 §3.8).
        StopSessions = 3,
        /// 4: reserved (OWAMP Fetch-Session).
        Fetch = 4,
        /// 5: Request-TW-Session (RFC 5357 §3.5).
        RequestTwSession = 5,
        /// 6: experimentation.
        Experimentation = 6,
        /// 7: Start-N-Sessions (RFC 5938 §3.2).
        StartNSessions = 7,
        /// 8: Start-N-Ack (RFC 5938 §3.3).
        StartNAck = 8,
        /// 9: Stop-N-Sessions (RFC 5938 §3.4).
        StopNSessions = 9,
        /// 10: Stop-N-Ack (RFC 5938 §3.5).
        StopNAck = 10,
        /// 11: Request-TW-Micro-Sessions (RFC 9533 §4.1); not implemented here.
        RequestTwMicroSessions = 11,
    }
}

/// Session Identifier (RFC 4656 §3.5): 16 octets the server assigns in Accept-Session. The
/// recommended form is 4 octets of the receiver's IPv4 address, an 8-octet timestamp and
/// 4 random octets; peers treat it as opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Sid(pub [u8; 16]);

impl Sid {
    /// The recommended form: address ‖ timestamp ‖ random (RFC 4656 §3.5). For IPv6 receivers the
    /// RFC leaves the 4 address octets to the implementation (e.g. a hash).
    pub fn from_parts(address: [u8; 4], timestamp: crate::time::NtpTimestamp, random: [u8; 4]) -> Self {
        let mut s = [0u8; 16];
        s[..4].copy_from_slice(&address);
        s[4..12].copy_from_slice(&timestamp.0.to_be_bytes());
        s[12..].copy_from_slice(&random);
        Sid(s)
    }
    /// The 16 octets.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
    /// True for the all-zero SID a request carries (RFC 5357 §3.5).
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl FieldValue for Sid {
    fn read(b: &[u8]) -> Self {
        Sid(<[u8; 16]>::read(b))
    }
    fn write(self, b: &mut [u8]) {
        self.0.write(b)
    }
}

/// Type-P Descriptor (RFC 4656 §3.5, RFC 5357 §3.5): the first two bits say what follows. `00`:
/// the next 6 bits are the DSCP the reflector must use; `01`: the next 16 bits are a PHB ID
/// (RFC 3140). Kept raw so other values survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TypeP(pub u32);

impl TypeP {
    /// A descriptor asking for `dscp` (masked to 6 bits).
    pub fn from_dscp(dscp: u8) -> Self {
        TypeP(u32::from(dscp & 0x3f) << 24)
    }
    /// A descriptor carrying a 16-bit PHB ID.
    pub fn from_phb_id(phb: u16) -> Self {
        TypeP((1 << 30) | (u32::from(phb) << 14))
    }
    /// The DSCP when the first two bits are `00`.
    pub fn dscp(self) -> Option<u8> {
        (self.0 >> 30 == 0).then_some(((self.0 >> 24) & 0x3f) as u8)
    }
    /// The PHB ID when the first two bits are `01`.
    pub fn phb_id(self) -> Option<u16> {
        (self.0 >> 30 == 1).then_some((self.0 >> 14) as u16)
    }
}

impl FieldValue for TypeP {
    fn read(b: &[u8]) -> Self {
        TypeP(be32(b, 0))
    }
    fn write(self, b: &mut [u8]) {
        put32(b, 0, self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::NtpTimestamp;

    #[test]
    fn twampd_greeting_modes() {
        // twampd with `authmode AEMO` greets with 0x0f (reference §1.4).
        let m = Modes(0x0f);
        assert_eq!(choose_mode(m, Modes(0xf)), Some(Modes::ENCRYPTED));
        assert_eq!(choose_mode(m, Modes::AUTHENTICATED | Modes::UNAUTHENTICATED), Some(Modes::AUTHENTICATED));
        assert_eq!(choose_mode(m, Modes::MIXED | Modes::UNAUTHENTICATED), Some(Modes::MIXED));
        assert_eq!(choose_mode(Modes(0x07), Modes::MIXED), None);
        assert_eq!(choose_mode(Modes(0), Modes(0xffff_ffff)), None);
        assert_eq!(format!("{m:?}"), "Modes(0xf: unauthenticated|authenticated|encrypted|mixed)");
    }

    #[test]
    fn features_are_the_common_ones() {
        let offered = Modes::UNAUTHENTICATED | Modes::INDIVIDUAL_SESSION_CONTROL | Modes::REFLECT_OCTETS;
        let allowed = Modes::UNAUTHENTICATED | Modes::AUTHENTICATED | Modes::REFLECT_OCTETS | Modes::SYMMETRICAL_SIZE;
        let m = choose_mode(offered, allowed).unwrap();
        assert_eq!(m, Modes(1 | 32));
        assert_eq!(m.security_mode(), Some(SecurityMode::Unauthenticated));
        assert_eq!(m.features(), Modes::REFLECT_OCTETS);
        let pref = [SecurityMode::Unauthenticated, SecurityMode::Encrypted];
        assert_eq!(choose_mode_in_order(Modes(0x7), Modes(0x7), &pref), Some(Modes::UNAUTHENTICATED));
        assert_eq!(Modes(3).security_mode(), None);
        assert_eq!(
            format!("{:?}", Modes(0x8000_0010)),
            "Modes(0x80000010: individual-session-control|unknown 0x80000000)"
        );
    }

    #[test]
    fn accept_is_open() {
        assert_eq!(Accept::from(6), Accept::IkeSaNotFound);
        assert_eq!(Accept::from(9), Accept::Unknown(9));
        assert_eq!(Accept::from(9).normalized(), Accept::Failure);
        assert_eq!(u8::from(Accept::Unknown(200)), 200);
        assert!(Accept::from(0).is_ok());
        assert_eq!(Command::from(12), Command::Unknown(12));
    }

    #[test]
    fn type_p_and_sid() {
        assert_eq!(TypeP::from_dscp(46).0, 0x2e00_0000);
        assert_eq!(TypeP(0x2e00_0000).dscp(), Some(46));
        assert_eq!(TypeP(0x2e00_0000).phb_id(), None);
        assert_eq!(TypeP::from_phb_id(0xabcd).phb_id(), Some(0xabcd));
        assert_eq!(TypeP::from_phb_id(0xabcd).dscp(), None);
        assert_eq!(TypeP(0x8000_0000).dscp(), None);
        // twampd on loopback (reference §2.5): 7f000001 eeacce39 4b3dd11b 10fbc297
        let sid = Sid::from_parts([127, 0, 0, 1], NtpTimestamp(0xeeac_ce39_4b3d_d11b), [0x10, 0xfb, 0xc2, 0x97]);
        assert_eq!(hex::encode(sid.0), "7f000001eeacce394b3dd11b10fbc297");
        assert!(!sid.is_zero() && Sid::default().is_zero());
    }
}
