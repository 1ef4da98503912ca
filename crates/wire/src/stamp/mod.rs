//! STAMP, the Simple Two-way Active Measurement Protocol (RFC 8762), with the SSID and TLVs of
//! RFC 8972.
//!
//! - [`packet`]: Session-Sender and Session-Reflector packets, unauthenticated (44-octet base) and
//!   authenticated (112-octet base, HMAC-SHA-256/128 over octets 0–95).
//! - [`tlv`]: the TLVs after the base packet: a cursor reader, typed values, a writer, and the
//!   flag (U/M/I) and HMAC-TLV rules.
//!
//! STAMP has no control protocol: sessions are configured out of band, and a reflector tells
//! them apart by SSID plus the 4-tuple (RFC 8972 §3). Test packets go to UDP 862 by default
//! ([`crate::twamp::TEST_PORT`]).
//!
//! Decisions where the RFCs and real peers disagree (reference `twamp-stamp.md` §5, §8):
//! - Parsing is liberal: a 14-octet TWAMP-Light sender packet parses (the reply is the 44-octet
//!   base), a 38-octet twampy reply parses with no Sender TTL, an SSID of 0 is kept as 0 (the
//!   reflector does not support RFC 8972; what to do about it is the sender's policy).
//! - The Class-of-Service TLV is read in the RFC layout with the erratum's EC1/RPE bits after
//!   it, which covers stamp-suite 1.0.0 and teaparty as well as RFC senders ([`tlv`]).
//! - Unknown TLVs are kept byte for byte; [`tlv::mark_reply`] returns them with U set.
//! - Timestamps are NTP unless the Error Estimate's Z bit says PTPv2 truncated
//!   ([`crate::time::ErrorEstimate::decode_timestamp`]); a reflector answering a TWAMP-Light
//!   sender must use NTP.

pub mod packet;
pub mod tlv;
