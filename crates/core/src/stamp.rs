//! STAMP Session-Reflector (RFC 8762 §4.3) with the SSID and TLVs of RFC 8972, sans-IO.
//!
//! The driver receives a datagram with its receive stamp (T2), the TTL and ToS the kernel saw,
//! and calls [`StampReflector::handle`], which validates it and writes the reply into a buffer.
//! Right before the send call the driver writes T3 with [`StampReflector::transmit`], which also
//! signs the reply in authenticated mode (the base HMAC covers T3).
//!
//! - Sequence Number: stateless mode copies the sender's; stateful mode keeps a counter per
//!   session, keyed by the sender's address, port and SSID, in a bounded table whose idle entries
//!   expire (RFC 8762 §4.3.1).
//! - Error Estimate: whatever the driver says about the host clock (the S bit only when it is
//!   synchronised).
//! - Sender TTL: the TTL/Hop Limit of the received packet; 255 when the driver could not read it
//!   (the TWAMP convention, reference §8).
//! - TLVs (RFC 8972 §4): copied back; U cleared on the types this reflector handles, set on the
//!   others; M set on the first malformed one (processing stops there). Filled in: Location,
//!   Timestamp Information, Class of Service (received DSCP/ECN, RP = 1 because replies keep the
//!   socket's DSCP), Direct Measurement and Follow-Up Telemetry (stateful mode), HMAC (recomputed
//!   in authenticated mode; I set on every TLV when the sender's does not verify).
//! - The reply is as long as the request, at least the base packet (RFC 8762 §4.2.1).

use crate::io::RxTime;
use ipsla_wire::stamp::packet::{ReflectorPacket, ReflectorRepr, SenderPacket, SenderRepr, StampMode};
use ipsla_wire::stamp::tlv::{
    self, LocationSubType, SyncSource, TimestampMethod, Tlv, TlvFlags, TlvHmacCheck, TlvReader, TlvType,
};
use ipsla_wire::time::{ErrorEstimate, NtpTimestamp};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Default STAMP port (RFC 8762 §4.1, RFC 8545).
pub const DEFAULT_PORT: u16 = 862;

/// Reflector settings.
#[derive(Debug, Clone)]
pub struct ReflectorConfig {
    /// Stateful mode: the reflector numbers its own replies per session.
    pub stateful: bool,
    /// Authenticated mode with this pre-shared HMAC key; unauthenticated when `None`.
    pub key: Option<Vec<u8>>,
    /// Largest number of sessions kept (stateful mode); the least recently seen goes first.
    pub max_sessions: usize,
    /// A session not heard from for this long is forgotten.
    pub session_idle: Duration,
}

impl Default for ReflectorConfig {
    fn default() -> Self {
        ReflectorConfig { stateful: false, key: None, max_sessions: 4096, session_idle: Duration::from_secs(300) }
    }
}

impl ReflectorConfig {
    /// The mode the key selects.
    pub fn mode(&self) -> StampMode {
        if self.key.is_some() { StampMode::Authenticated } else { StampMode::Unauthenticated }
    }
}

/// What the driver knows about a received datagram.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Receive time (T2) and its source.
    pub rx: RxTime,
    /// The sender.
    pub src: SocketAddr,
    /// The local address and port it arrived on.
    pub dst: SocketAddr,
    /// IP TTL / Hop Limit, when the kernel reported it.
    pub ttl: Option<u8>,
    /// IPv4 ToS / IPv6 Traffic Class octet, when the kernel reported it.
    pub tos: Option<u8>,
    /// Error Estimate of this host's clock (S bit when synchronised).
    pub error_estimate: ErrorEstimate,
    /// Synchronisation source of this host's clock, for the Timestamp Information TLV.
    pub sync_source: SyncSource,
}

/// Counters, by outcome (every datagram lands in exactly one of `replied` or a drop reason).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReflectorStats {
    /// Datagrams received.
    pub received: u64,
    /// Replies built.
    pub replied: u64,
    /// Dropped: shorter than the mode's minimum (14 unauthenticated, 112 authenticated).
    pub drop_short: u64,
    /// Dropped: longer than the reply buffer.
    pub drop_too_long: u64,
    /// Dropped: the base HMAC did not verify (authenticated mode).
    pub drop_bad_hmac: u64,
    /// Replied with I set on every TLV: the HMAC TLV was missing, misplaced or wrong.
    pub tlv_integrity_failed: u64,
    /// Replied with M set on a malformed TLV.
    pub tlv_malformed: u64,
    /// TLVs returned with U set (types this reflector does not handle).
    pub tlv_unrecognized: u64,
    /// Requests shorter than the 44-octet base (TWAMP-Light senders), answered with 44.
    pub short_requests: u64,
    /// Sessions forgotten to make room for new ones.
    pub sessions_evicted: u64,
}

/// Identifies a stateful session: the sender's address and port and the SSID (RFC 8972 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// Sender address and port.
    pub peer: SocketAddr,
    /// SSID (0 when the sender has none).
    pub ssid: u16,
}

#[derive(Debug, Clone, Copy)]
struct Session {
    next_seq: u32,
    rx: u32,
    tx: u32,
    last_seen: Instant,
    /// The previous reply's sequence number and T3 (Follow-Up Telemetry).
    last_reply: Option<(u32, NtpTimestamp)>,
}

/// A reply ready for [`StampReflector::transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Reply length in the output buffer.
    pub len: usize,
    /// The session (stateful mode).
    pub session: Option<SessionKey>,
    /// The reply's Sequence Number.
    pub sequence: u32,
}

/// Why a datagram got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Too short for the mode.
    Short,
    /// Larger than the output buffer.
    TooLong,
    /// The base HMAC did not verify.
    BadHmac,
}

/// The STAMP Session-Reflector.
#[derive(Debug, Clone)]
pub struct StampReflector {
    cfg: ReflectorConfig,
    sessions: HashMap<SessionKey, Session>,
    stats: ReflectorStats,
}

impl StampReflector {
    /// A reflector with these settings.
    pub fn new(cfg: ReflectorConfig) -> Self {
        StampReflector { cfg, sessions: HashMap::new(), stats: ReflectorStats::default() }
    }

    /// Counters.
    pub fn stats(&self) -> &ReflectorStats {
        &self.stats
    }

    /// Sessions held (stateful mode).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The mode.
    pub fn mode(&self) -> StampMode {
        self.cfg.mode()
    }

    /// Forgets sessions idle for longer than the configured time.
    pub fn expire(&mut self, now: Instant) {
        let idle = self.cfg.session_idle;
        self.sessions.retain(|_, s| now.saturating_duration_since(s.last_seen) < idle);
    }

    /// Validates `pkt` and writes the reply into `out` (T3 and the base HMAC still to be written
    /// by [`StampReflector::transmit`]). Never panics; every drop is counted.
    pub fn handle(&mut self, now: Instant, info: &Received, pkt: &[u8], out: &mut [u8]) -> Result<Reply, Drop> {
        self.stats.received += 1;
        let mode = self.cfg.mode();
        let base = mode.base_len();
        let Ok(sp) = SenderPacket::new_checked(pkt, mode) else {
            self.stats.drop_short += 1;
            return Err(Drop::Short);
        };
        let len = pkt.len().max(base);
        if len > out.len() {
            self.stats.drop_too_long += 1;
            return Err(Drop::TooLong);
        }
        if let Some(key) = &self.cfg.key
            && !sp.verify_hmac(key)
        {
            self.stats.drop_bad_hmac += 1;
            return Err(Drop::BadHmac);
        }
        if sp.is_short() {
            self.stats.short_requests += 1;
        }
        let Ok(s) = SenderRepr::parse(&sp) else {
            self.stats.drop_short += 1;
            return Err(Drop::Short);
        };
        // Session state (stateful mode).
        let (sequence, session) = if self.cfg.stateful {
            let key = SessionKey { peer: info.src, ssid: s.ssid };
            let sess = self.session(now, key);
            let seq = sess.next_seq;
            sess.next_seq = sess.next_seq.wrapping_add(1);
            sess.rx = sess.rx.wrapping_add(1);
            sess.tx = sess.tx.wrapping_add(1);
            (seq, Some(key))
        } else {
            (s.sequence, None)
        };
        let session_state = session.and_then(|k| self.sessions.get(&k).copied());
        let out = &mut out[..len];
        ReflectorRepr {
            mode,
            sequence,
            timestamp: NtpTimestamp(0),
            error_estimate: info.error_estimate,
            ssid: s.ssid,
            receive_timestamp: NtpTimestamp::from_unix(info.rx.wall),
            sender_sequence: s.sequence,
            sender_timestamp: s.timestamp,
            sender_error_estimate: s.error_estimate,
            sender_ttl: Some(info.ttl.unwrap_or(255)),
        }
        .emit(out);
        let area_in = sp.tlv_area();
        out[base..base + area_in.len()].copy_from_slice(area_in);
        self.reflect_tlvs(info, s.sequence, sequence, session_state, &mut out[base..]);
        self.stats.replied += 1;
        Ok(Reply { len, session, sequence })
    }

    fn session(&mut self, now: Instant, key: SessionKey) -> &mut Session {
        if !self.sessions.contains_key(&key) && self.sessions.len() >= self.cfg.max_sessions.max(1) {
            self.expire(now);
            if self.sessions.len() >= self.cfg.max_sessions.max(1)
                && let Some(oldest) = self.sessions.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| *k)
            {
                self.sessions.remove(&oldest);
                self.stats.sessions_evicted += 1;
            }
        }
        let s =
            self.sessions.entry(key).or_insert(Session { next_seq: 0, rx: 0, tx: 0, last_seen: now, last_reply: None });
        s.last_seen = now;
        s
    }

    fn supports(&self, t: TlvType) -> bool {
        matches!(
            t,
            TlvType::ExtraPadding
                | TlvType::Location
                | TlvType::TimestampInformation
                | TlvType::ClassOfService
                | TlvType::DirectMeasurement
                | TlvType::AccessReport
                | TlvType::FollowUpTelemetry
        ) || (t == TlvType::Hmac && self.cfg.key.is_some())
    }

    fn reflect_tlvs(
        &mut self,
        info: &Received,
        sender_seq: u32,
        reply_seq: u32,
        session: Option<Session>,
        area: &mut [u8],
    ) {
        if area.is_empty() {
            return;
        }
        // The sender's HMAC TLV, checked on its TLVs as received (authenticated mode).
        let integrity_ok = match &self.cfg.key {
            Some(key) => match tlv::check_hmac(key, sender_seq, area) {
                TlvHmacCheck::Valid | TlvHmacCheck::Malformed => true,
                TlvHmacCheck::Absent => {
                    TlvReader::new(area).all(|t| t.map(|(_, t)| t.tlv_type() == TlvType::ExtraPadding).unwrap_or(true))
                }
                TlvHmacCheck::Invalid | TlvHmacCheck::Misplaced => false,
            },
            None => true,
        };
        let summary = tlv::mark_reply(area, |t| self.supports(t));
        self.stats.tlv_unrecognized += summary.unrecognized as u64;
        if summary.malformed_at.is_some() {
            self.stats.tlv_malformed += 1;
        }
        let end = summary.malformed_at.unwrap_or(area.len());
        let mut at = 0;
        let mut hmac_at = None;
        while at < end {
            let Ok(t) = Tlv::new_checked(&area[at..end]) else { break };
            let (ty, total, flags) = (t.tlv_type(), t.total_len(), t.flags());
            if !flags.contains(TlvFlags::U) {
                let v = &mut area[at + tlv::HEADER_LEN..at + total];
                match ty {
                    TlvType::Location => fill_location(info, v),
                    TlvType::TimestampInformation if v.len() >= 4 => {
                        let method =
                            if info.rx.kernel { TimestampMethod::SoftwareLocal } else { TimestampMethod::ControlPlane };
                        v[0] = info.sync_source.into();
                        v[1] = method.into();
                        v[2] = info.sync_source.into();
                        v[3] = TimestampMethod::SoftwareLocal.into();
                    }
                    TlvType::ClassOfService if v.len() == 4 => {
                        if let Some(tos) = info.tos {
                            // DSCP2 and ECN from what arrived; RP = 1: the reply keeps the
                            // socket's DSCP, DSCP1 is not applied.
                            v[0] = (v[0] & 0xfc) | (tos >> 6);
                            v[1] = ((tos & 0x3c) << 2) | ((tos & 3) << 2) | 1;
                        } else {
                            v[1] = (v[1] & 0xfc) | 1;
                        }
                    }
                    TlvType::DirectMeasurement if v.len() == 12 => {
                        let (rx, tx) = session.map_or((0, 0), |s| (s.rx, s.tx));
                        v[4..8].copy_from_slice(&rx.to_be_bytes());
                        v[8..12].copy_from_slice(&tx.to_be_bytes());
                    }
                    TlvType::FollowUpTelemetry if v.len() == 16 => {
                        v.fill(0);
                        if let Some((seq, ts)) = session.and_then(|s| s.last_reply) {
                            v[..4].copy_from_slice(&seq.to_be_bytes());
                            v[4..12].copy_from_slice(&ts.0.to_be_bytes());
                            v[12] = TimestampMethod::SoftwareLocal.into();
                        }
                    }
                    TlvType::Hmac if hmac_at.is_none() => hmac_at = Some(at),
                    _ => {}
                }
            }
            at += total;
        }
        if !integrity_ok {
            self.stats.tlv_integrity_failed += 1;
            tlv::set_integrity_failed(area);
        }
        if let (Some(key), Some(h)) = (&self.cfg.key, hmac_at) {
            let mac = tlv::compute_hmac(key, reply_seq, &area[..h]);
            area[h + tlv::HEADER_LEN..h + tlv::HEADER_LEN + tlv::HMAC_LEN].copy_from_slice(&mac);
        }
    }

    /// Writes T3 into the reply built by [`StampReflector::handle`] and signs it (authenticated
    /// mode); call right before sending. Remembers T3 for Follow-Up Telemetry.
    pub fn transmit(&mut self, reply: &Reply, out: &mut [u8], t3: Duration) {
        let Some(buf) = out.get_mut(..reply.len) else { return };
        let ts = NtpTimestamp::from_unix(t3);
        let mode = self.cfg.mode();
        let mut p = ReflectorPacket::new_unchecked(buf, mode);
        p.set_timestamp(ts);
        if let Some(key) = &self.cfg.key {
            p.sign(key);
        }
        if let Some(s) = reply.session.and_then(|k| self.sessions.get_mut(&k)) {
            s.last_reply = Some((reply.sequence, ts));
        }
    }
}

fn fill_location(info: &Received, v: &mut [u8]) {
    if v.len() < 4 {
        return;
    }
    v[..2].copy_from_slice(&info.dst.port().to_be_bytes());
    v[2..4].copy_from_slice(&info.src.port().to_be_bytes());
    let sub = &mut v[4..];
    let mut at = 0;
    while let Ok(t) = Tlv::new_checked(&sub[at..]) {
        let total = t.total_len();
        let ty = LocationSubType::from(u8::from(t.tlv_type()));
        let addr = match ty {
            LocationSubType::DestinationIpRequest => Some(info.dst.ip()),
            LocationSubType::SourceIpRequest => Some(info.src.ip()),
            _ => None,
        };
        if let Some(ip) = addr
            && total == tlv::HEADER_LEN + 16
        {
            let dest = ty == LocationSubType::DestinationIpRequest;
            let (new_ty, octets): (LocationSubType, Vec<u8>) = match ip.to_canonical() {
                IpAddr::V4(a) => (
                    if dest { LocationSubType::DestinationIpv4 } else { LocationSubType::SourceIpv4 },
                    a.octets().into(),
                ),
                IpAddr::V6(a) => (
                    if dest { LocationSubType::DestinationIpv6 } else { LocationSubType::SourceIpv6 },
                    a.octets().into(),
                ),
            };
            sub[at] &= !TlvFlags::U.0;
            sub[at + 1] = new_ty.into();
            let val = &mut sub[at + tlv::HEADER_LEN..at + total];
            val.fill(0);
            val[..octets.len()].copy_from_slice(&octets);
        }
        at += total;
    }
}

#[cfg(test)]
mod tests;
