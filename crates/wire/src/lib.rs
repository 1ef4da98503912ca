//! `ipsla-wire`: the bytes of Cisco IP SLA, parsed and emitted without I/O, clocks or allocation.
//!
//! Formats (one module each, see `../shared/reference/cisco-ipsla-wire.md` for the evidence):
//! - [`agentx`]: AgentX (RFC 2741) PDUs, for the agent's SNMP subagent (this one allocates).
//! - [`cisco::control_v1`]: the legacy version-1 control message real IOS sends to UDP 1967.
//! - [`cisco::control_v2`]: RFC 6812 version-2 control (UDP 1167) with its authentication.
//! - [`cisco::probe`]: measurement packets of type 1 (udp-echo), 2 (ms jitter) and 3 (µs jitter).
//! - [`icmp`]: ICMP Echo and Timestamp messages for the ICMP operations.
//! - [`stamp`]: STAMP test packets (RFC 8762) and their TLVs (RFC 8972).
//! - [`twamp`]: TWAMP-Control (RFC 5357, 5938, 6038), TWAMP-Test and the TWAMP crypto (RFC 4656).
//! - [`time`]: NTP 64-bit timestamps, milliseconds since midnight UTC, the PTP-truncated form,
//!   the OWAMP/TWAMP/STAMP Error Estimate.
//!
//! Invariants: a view built with `new_checked` has had every length checked once, so no accessor
//! can panic afterwards; every `Repr::emit` writes exactly `buffer_len()` bytes.
//!
//! ```
//! use ipsla_wire::cisco::control_v1::{ControlV1, ControlV1Repr};
//! // The udp-echo control request a real IOS router sent (reference §(b)).
//! let mut req = [0u8; 52];
//! req[..24].copy_from_slice(&[0x01, 0x69, 0x00, 0x34, 0, 0, 0, 0, 0x00, 0x02, 0x00, 0x10,
//!     0, 0, 0, 0, 192, 168, 12, 2, 0xa6, 0x16, 0x13, 0x88]);
//! req[24..28].copy_from_slice(&[0x00, 0x01, 0x00, 0x1c]);
//! let repr = ControlV1Repr::parse(&ControlV1::new_checked(&req[..]).unwrap()).unwrap();
//! assert_eq!(repr.measurement.port, 42518);
//! assert_eq!(repr.measurement.duration_ms, 5000);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod agentx;
pub mod cisco;
pub mod icmp;
pub mod stamp;
pub mod time;
pub mod twamp;

/// What was wrong with a packet. Small and `Copy`: callers count it and drop the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// Fewer bytes than the fixed part of the format needs.
    #[error("truncated packet")]
    Truncated,
    /// A length field disagrees with the datagram or with its container.
    #[error("length field does not match the data")]
    BadLength,
    /// The version octet is not one this parser handles.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// A type / command code that is not known.
    #[error("unknown type {0}")]
    UnknownType(u16),
    /// A required element is missing or a field holds a value the format forbids.
    #[error("malformed packet")]
    Malformed,
    /// An HMAC, or the challenge inside a TWAMP Token, did not verify: wrong key or altered data.
    #[error("integrity check failed")]
    Integrity,
}

/// Result alias for this crate.
pub type Result<T> = core::result::Result<T, Error>;

pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
pub(crate) fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// A value stored big-endian in a fixed byte range of a packet. `read` and `write` get a slice of
/// exactly the field's length (the accessor macros below slice with the field's range).
pub(crate) trait FieldValue: Sized {
    fn read(b: &[u8]) -> Self;
    fn write(self, b: &mut [u8]);
}

impl FieldValue for u8 {
    fn read(b: &[u8]) -> Self {
        b[0]
    }
    fn write(self, b: &mut [u8]) {
        b[0] = self;
    }
}
impl FieldValue for u16 {
    fn read(b: &[u8]) -> Self {
        be16(b, 0)
    }
    fn write(self, b: &mut [u8]) {
        put16(b, 0, self)
    }
}
impl FieldValue for u32 {
    fn read(b: &[u8]) -> Self {
        be32(b, 0)
    }
    fn write(self, b: &mut [u8]) {
        put32(b, 0, self)
    }
}
impl FieldValue for u64 {
    fn read(b: &[u8]) -> Self {
        be64(b, 0)
    }
    fn write(self, b: &mut [u8]) {
        put64(b, 0, self)
    }
}
impl<const N: usize> FieldValue for [u8; N] {
    fn read(b: &[u8]) -> Self {
        let mut a = [0u8; N];
        a.copy_from_slice(&b[..N]);
        a
    }
    fn write(self, b: &mut [u8]) {
        b[..N].copy_from_slice(&self);
    }
}
impl FieldValue for time::NtpTimestamp {
    fn read(b: &[u8]) -> Self {
        time::NtpTimestamp(be64(b, 0))
    }
    fn write(self, b: &mut [u8]) {
        put64(b, 0, self.0)
    }
}
impl FieldValue for time::ErrorEstimate {
    fn read(b: &[u8]) -> Self {
        time::ErrorEstimate(be16(b, 0))
    }
    fn write(self, b: &mut [u8]) {
        put16(b, 0, self.0)
    }
}

/// Getters and `set_*` setters for fields at fixed byte ranges of a view `$view<T>` whose bytes
/// are in `self.buffer`. The view's `new_checked` must have checked that every range is in bounds.
macro_rules! fixed_fields {
    ($view:ident { $($(#[$doc:meta])* $get:ident, $set:ident: $ty:ty = $range:expr;)+ }) => {
        impl<T: AsRef<[u8]>> $view<T> {
            $(
                $(#[$doc])*
                pub fn $get(&self) -> $ty {
                    $crate::FieldValue::read(&self.buffer.as_ref()[$range])
                }
            )+
        }
        impl<T: AsRef<[u8]> + AsMut<[u8]>> $view<T> {
            $(
                #[doc = concat!("Writes the field read by [`", stringify!($get), "`](Self::", stringify!($get), ").")]
                pub fn $set(&mut self, value: $ty) {
                    $crate::FieldValue::write(value, &mut self.buffer.as_mut()[$range])
                }
            )+
        }
    };
}
pub(crate) use fixed_fields;

/// Like [`fixed_fields`] for views whose layout varies: `self.fields()` returns the layout's
/// table of ranges and `$f` names the range in it.
macro_rules! layout_fields {
    ($view:ident { $($(#[$doc:meta])* $get:ident, $set:ident: $ty:ty = $f:ident;)+ }) => {
        impl<T: AsRef<[u8]>> $view<T> {
            $(
                $(#[$doc])*
                pub fn $get(&self) -> $ty {
                    $crate::FieldValue::read(&self.buffer.as_ref()[self.fields().$f.clone()])
                }
            )+
        }
        impl<T: AsRef<[u8]> + AsMut<[u8]>> $view<T> {
            $(
                #[doc = concat!("Writes the field read by [`", stringify!($get), "`](Self::", stringify!($get), ").")]
                pub fn $set(&mut self, value: $ty) {
                    let r = self.fields().$f.clone();
                    $crate::FieldValue::write(value, &mut self.buffer.as_mut()[r])
                }
            )+
        }
    };
}
pub(crate) use layout_fields;

/// Defines an open enum over a wire code: known values get a variant, anything else is kept in
/// `Unknown` so that it can be counted and reported, never a panic.
macro_rules! open_enum {
    ($(#[$m:meta])* pub enum $name:ident($ty:ty) { $($(#[$vm:meta])* $var:ident = $val:expr),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $var,)+
            /// A value this implementation does not know.
            Unknown($ty),
        }
        impl From<$ty> for $name {
            fn from(v: $ty) -> Self {
                match v { $($val => $name::$var,)+ other => $name::Unknown(other) }
            }
        }
        impl From<$name> for $ty {
            fn from(v: $name) -> $ty {
                match v { $($name::$var => $val,)+ $name::Unknown(other) => other }
            }
        }
        impl $crate::FieldValue for $name {
            fn read(b: &[u8]) -> Self {
                <$ty as $crate::FieldValue>::read(b).into()
            }
            fn write(self, b: &mut [u8]) {
                <$ty as $crate::FieldValue>::write(self.into(), b)
            }
        }
    };
}
pub(crate) use open_enum;
