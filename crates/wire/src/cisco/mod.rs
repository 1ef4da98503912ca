//! Cisco IP SLA: control messages (v1 and RFC 6812 v2) and measurement probes.

pub mod control_v1;
pub mod control_v2;
pub mod probe;

/// UDP port real IOS sends v1 control messages to (IOS capture; not IANA-registered).
pub const CONTROL_V1_PORT: u16 = 1967;
/// UDP port RFC 6812 assigns to v2 control ("cisco-ipsla", IANA).
pub const CONTROL_V2_PORT: u16 = 1167;
