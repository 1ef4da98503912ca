//! TWAMP-Test Session-Reflector (RFC 5357 §4.2), sans-IO, in two flavours:
//!
//! - [`SessionReflector`]: one session negotiated by TWAMP-Control ([`super::server`]): its own
//!   Sequence Number counter, the session's security mode (test packets opened and sealed with
//!   [`TestCrypto`] in authenticated and encrypted mode), only the negotiated sender is answered,
//!   and a lifecycle: nothing is reflected before Start-Sessions, packets are reflected for the
//!   session's Timeout after Stop-Sessions and ignored afterwards (RFC 5357 §4.2), and REFWAIT ends
//!   a session that receives no test packets (RFC 5357 §4.2, reference §2.9).
//! - [`LightReflector`]: TWAMP-Light (RFC 5357 Appendix I), open mode, no control: stateless
//!   (the reply's Sequence Number is the sender's, as Appendix I requires of a reflector without
//!   session state) or stateful (a counter per sender address and port, in a bounded table whose
//!   idle entries expire, like the STAMP reflector).
//!
//! The driver receives a datagram with its receive stamp (T2, the kernel's when it has one), the
//! TTL/Hop Limit it arrived with and the host clock's Error Estimate, and calls `handle`, which
//! validates the packet and writes the reply into a buffer. Right before the send call it calls
//! `transmit`, which writes T3 and, in authenticated/encrypted mode, the HMAC, then encrypts
//! (the HMAC covers T3, RFC 5357 §4.2.1).
//!
//! Fields of the reply (RFC 5357 §4.2.1, reference §4.2):
//! - Error Estimate: the host clock's (S only when synchronised), for both T2 and T3.
//! - Sender TTL: from IP_RECVTTL / IPV6_RECVHOPLIMIT; 255 when the driver could not read it.
//! - Size: the request's size, by dropping the highest-numbered octets of the sender's padding,
//!   but never below the reflector's own fields (41 / 112) plus the RFC 6038 octets to reflect.
//!   The reply's padding is the start of the sender's padding, which is also what RFC 6038 Reflect
//!   Octets asks for (the first "Length of padding to reflect" octets come back after the Sender
//!   TTL). With RFC 6038 Symmetrical Size the sender's first 27 (open) or 64 (authenticated)
//!   padding octets are its MBZ block, so the reply's padding starts after them and the two
//!   packets carry the same padding octets at the same offsets.
//! - A sender Error Estimate with Multiplier 0 makes the packet corrupt (RFC 4656 §4.1.2 SHOULD):
//!   it is dropped.

use crate::io::RxTime;
use ipsla_wire::time::{ErrorEstimate, NtpTimestamp};
use ipsla_wire::twamp::crypto::{TestCrypto, TestKeys};
use ipsla_wire::twamp::test::{self, ReflectorPacket, ReflectorRepr, SenderPacket, SenderRepr, TestLayout};
use ipsla_wire::twamp::{SecurityMode, Sid};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What the driver knows about a received test packet.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Receive time (T2) and whether the kernel stamped it.
    pub rx: RxTime,
    /// The sender's address and port.
    pub src: SocketAddr,
    /// IP TTL / Hop Limit of the packet, when the kernel reported it.
    pub ttl: Option<u8>,
    /// Error Estimate of this host's clock (RFC 4656 §4.1.2: S only when synchronised).
    pub error_estimate: ErrorEstimate,
}

/// Reflector counters. Every packet handed to `handle` counts in `received` and in exactly one
/// of `reflected` or a `drop_*` counter.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ReflectorStats {
    /// Test packets received.
    pub received: u64,
    /// Replies built.
    pub reflected: u64,
    /// Dropped: shorter than the sender's fields (14 open, 48 authenticated/encrypted).
    pub drop_short: u64,
    /// Dropped: the reply would not fit the output buffer.
    pub drop_too_long: u64,
    /// Dropped: the sender packet's HMAC did not verify (authenticated/encrypted mode).
    pub drop_bad_hmac: u64,
    /// Dropped: Error Estimate Multiplier 0 (RFC 4656 §4.1.2).
    pub drop_bad_error_estimate: u64,
    /// Dropped: not from the session's Sender Address and Port.
    pub drop_wrong_sender: u64,
    /// Dropped: the session has not been started yet.
    pub drop_not_started: u64,
    /// Dropped: later than Timeout after Stop-Sessions (RFC 5357 §4.2 MUST).
    pub drop_after_stop: u64,
    /// Requests shorter than the reply's fields (answered with 41 / 112 octets).
    pub short_requests: u64,
    /// TWAMP-Light stateful senders forgotten to make room for new ones.
    pub peers_evicted: u64,
    /// Sessions ended by REFWAIT (no test packets for that long).
    pub refwait_expired: u64,
}

impl ReflectorStats {
    /// Adds every counter of `o` to `self`.
    pub fn merge(&mut self, o: &ReflectorStats) {
        self.received += o.received;
        self.reflected += o.reflected;
        self.drop_short += o.drop_short;
        self.drop_too_long += o.drop_too_long;
        self.drop_bad_hmac += o.drop_bad_hmac;
        self.drop_bad_error_estimate += o.drop_bad_error_estimate;
        self.drop_wrong_sender += o.drop_wrong_sender;
        self.drop_not_started += o.drop_not_started;
        self.drop_after_stop += o.drop_after_stop;
        self.short_requests += o.short_requests;
        self.peers_evicted += o.peers_evicted;
        self.refwait_expired += o.refwait_expired;
    }

    /// All drops together.
    pub fn dropped(&self) -> u64 {
        self.drop_short
            + self.drop_too_long
            + self.drop_bad_hmac
            + self.drop_bad_error_estimate
            + self.drop_wrong_sender
            + self.drop_not_started
            + self.drop_after_stop
    }
}

/// Why a test packet got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Shorter than the sender's fields.
    Short,
    /// The reply would not fit the output buffer.
    TooLong,
    /// The HMAC did not verify.
    BadHmac,
    /// Error Estimate Multiplier 0.
    BadErrorEstimate,
    /// Not from the session's sender.
    WrongSender,
    /// Before Start-Sessions.
    NotStarted,
    /// After Stop-Sessions + Timeout.
    AfterStop,
}

/// A reply ready for `transmit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Length of the reply at the start of the output buffer.
    pub len: usize,
    /// The reply's Sequence Number.
    pub sequence: u32,
}

/// Everything a session's reflector needs from its negotiation (RFC 5357 §3.5, RFC 6038 §4).
#[derive(Debug, Clone)]
pub struct SessionParams {
    /// The session's SID.
    pub sid: Sid,
    /// Security mode of the control connection; decides the test layout and crypto.
    pub mode: SecurityMode,
    /// Test keys (authenticated and encrypted mode; `None` in open and mixed mode).
    pub keys: Option<TestKeys>,
    /// The Session-Sender's address and port (RFC 5357 §3.5 Sender Address/Port); port 0
    /// accepts any port of that address.
    pub sender: SocketAddr,
    /// RFC 6038 Length of padding to reflect (0 without Reflect Octets).
    pub reflect_len: u16,
    /// RFC 6038 Symmetrical Size was negotiated.
    pub symmetrical: bool,
    /// How long packets are still reflected after Stop-Sessions (the request's Timeout).
    pub timeout: Duration,
    /// REFWAIT: the session ends after this long without a test packet.
    pub refwait: Duration,
    /// DSCP of the replies, from the Type-P Descriptor (RFC 5357 §3.5: the reflector MUST use it).
    pub dscp: u8,
}

impl SessionParams {
    /// The test-packet layout of the session's mode.
    pub fn layout(&self) -> TestLayout {
        self.mode.test_layout()
    }
}

/// Where a control-negotiated session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Accepted, waiting for Start-Sessions.
    Accepted,
    /// Reflecting.
    Started,
    /// Stopped: still reflecting until the instant given.
    Stopped(Instant),
    /// Over: nothing more is reflected.
    Ended,
}

/// Why a session ended on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// Timeout after Stop-Sessions elapsed.
    Stopped,
    /// REFWAIT: no test packet for that long.
    Refwait,
}

/// The Session-Reflector of one TWAMP-Control session.
#[derive(Debug, Clone)]
pub struct SessionReflector {
    params: SessionParams,
    crypto: Option<TestCrypto>,
    state: SessionState,
    next_seq: u32,
    last_activity: Instant,
    stats: ReflectorStats,
}

impl SessionReflector {
    /// A reflector for an accepted session, waiting for [`SessionReflector::start`].
    pub fn new(now: Instant, params: SessionParams) -> Self {
        let crypto = params.keys.as_ref().and_then(|k| TestCrypto::new(params.mode, k));
        SessionReflector {
            params,
            crypto,
            state: SessionState::Accepted,
            next_seq: 0,
            last_activity: now,
            stats: ReflectorStats::default(),
        }
    }

    /// The negotiated parameters.
    pub fn params(&self) -> &SessionParams {
        &self.params
    }

    /// Where the session is.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// Start-Sessions / Start-N-Sessions: reflect from now on (RFC 5357 §3.7: the reflector
    /// starts at once; the request's Start Time is not waited for, so the first packets of a
    /// sender that starts right after Start-Ack are never lost). REFWAIT counts from here.
    pub fn start(&mut self, now: Instant) {
        if self.state == SessionState::Accepted {
            self.state = SessionState::Started;
            self.last_activity = now;
        }
    }

    /// Stop-Sessions / Stop-N-Sessions: keep reflecting for the session's Timeout (RFC 5357 §3.8,
    /// §4.2), then end. A session that never started ends at once; stopping a stopped or ended
    /// session changes nothing.
    pub fn stop(&mut self, now: Instant) {
        match self.state {
            SessionState::Started => self.state = SessionState::Stopped(now + self.params.timeout),
            SessionState::Accepted => self.state = SessionState::Stopped(now),
            SessionState::Stopped(_) | SessionState::Ended => {}
        }
    }

    /// When [`SessionReflector::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            SessionState::Accepted | SessionState::Started => Some(self.last_activity + self.params.refwait),
            SessionState::Stopped(until) => Some(until.min(self.last_activity + self.params.refwait)),
            SessionState::Ended => None,
        }
    }

    /// Ends the session when its Timeout after stop or REFWAIT has elapsed; says why.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<SessionEnd> {
        let end = match self.state {
            SessionState::Stopped(until) if now >= until => SessionEnd::Stopped,
            SessionState::Ended => return None,
            _ if now >= self.last_activity + self.params.refwait => {
                self.stats.refwait_expired += 1;
                SessionEnd::Refwait
            }
            _ => return None,
        };
        self.state = SessionState::Ended;
        Some(end)
    }

    /// Counters since the last [`SessionReflector::take_stats`].
    pub fn stats(&self) -> &ReflectorStats {
        &self.stats
    }

    /// Returns the counters and starts them again from zero (the driver adds them to its totals).
    pub fn take_stats(&mut self) -> ReflectorStats {
        std::mem::take(&mut self.stats)
    }

    /// Validates a test packet and writes the reply into `out` (T3, HMAC and encryption still to
    /// be done by [`SessionReflector::transmit`]). Never panics; every drop is counted.
    pub fn handle(&mut self, now: Instant, info: &Received, pkt: &[u8], out: &mut [u8]) -> Result<Reply, Drop> {
        self.stats.received += 1;
        let r = self.check(now, info.src);
        let r = r.and_then(|()| {
            let seq = self.next_seq;
            let symmetrical = self.params.symmetrical;
            build_reply(
                self.params.layout(),
                self.crypto.as_ref(),
                info,
                pkt,
                out,
                self.params.reflect_len,
                symmetrical,
                |_| seq,
            )
        });
        match r {
            Ok((reply, short)) => {
                self.next_seq = self.next_seq.wrapping_add(1);
                self.last_activity = now;
                self.stats.reflected += 1;
                self.stats.short_requests += u64::from(short);
                Ok(reply)
            }
            Err(d) => {
                count_drop(&mut self.stats, d);
                Err(d)
            }
        }
    }

    fn check(&self, now: Instant, src: SocketAddr) -> Result<(), Drop> {
        match self.state {
            SessionState::Accepted => return Err(Drop::NotStarted),
            SessionState::Stopped(until) if now > until => return Err(Drop::AfterStop),
            SessionState::Ended => return Err(Drop::AfterStop),
            _ => {}
        }
        let want = self.params.sender;
        if src.ip().to_canonical() != want.ip().to_canonical() || (want.port() != 0 && src.port() != want.port()) {
            return Err(Drop::WrongSender);
        }
        Ok(())
    }

    /// Writes T3 into the reply built by [`SessionReflector::handle`], then the HMAC and the
    /// encryption in authenticated/encrypted mode; call right before sending.
    pub fn transmit(&self, reply: &Reply, out: &mut [u8], t3: Duration) {
        transmit(self.params.layout(), self.crypto.as_ref(), reply, out, t3);
    }
}

/// TWAMP-Light reflector settings.
#[derive(Debug, Clone)]
pub struct LightConfig {
    /// Number the replies per sender (address and port) instead of copying the sender's.
    pub stateful: bool,
    /// Most senders remembered in stateful mode; the least recently seen goes first.
    pub max_peers: usize,
    /// A sender not heard from for this long is forgotten.
    pub peer_idle: Duration,
}

impl Default for LightConfig {
    fn default() -> Self {
        LightConfig { stateful: false, max_peers: 4096, peer_idle: Duration::from_secs(300) }
    }
}

#[derive(Debug, Clone, Copy)]
struct Peer {
    next_seq: u32,
    last_seen: Instant,
}

/// The TWAMP-Light Session-Reflector (RFC 5357 Appendix I), open mode.
#[derive(Debug, Clone)]
pub struct LightReflector {
    cfg: LightConfig,
    peers: HashMap<SocketAddr, Peer>,
    stats: ReflectorStats,
}

impl LightReflector {
    /// A reflector with these settings.
    pub fn new(cfg: LightConfig) -> Self {
        LightReflector { cfg, peers: HashMap::new(), stats: ReflectorStats::default() }
    }

    /// Counters.
    pub fn stats(&self) -> &ReflectorStats {
        &self.stats
    }

    /// Returns the counters and starts them again from zero (the driver adds them to its totals).
    pub fn take_stats(&mut self) -> ReflectorStats {
        std::mem::take(&mut self.stats)
    }

    /// Senders remembered (stateful mode).
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Forgets senders idle for longer than the configured time.
    pub fn expire(&mut self, now: Instant) {
        let idle = self.cfg.peer_idle;
        self.peers.retain(|_, p| now.saturating_duration_since(p.last_seen) < idle);
    }

    /// Validates a test packet and writes the reply into `out` (T3 still to be written by
    /// [`LightReflector::transmit`]). Never panics; every drop is counted.
    pub fn handle(&mut self, now: Instant, info: &Received, pkt: &[u8], out: &mut [u8]) -> Result<Reply, Drop> {
        self.stats.received += 1;
        let stateful = self.cfg.stateful;
        let own = stateful.then(|| self.peers.get(&info.src).map_or(0, |p| p.next_seq));
        let r = build_reply(TestLayout::Unauthenticated, None, info, pkt, out, 0, false, |sender_seq| {
            own.unwrap_or(sender_seq)
        });
        match r {
            Ok((reply, short)) => {
                if stateful {
                    self.peer(now, info.src).next_seq = reply.sequence.wrapping_add(1);
                }
                self.stats.reflected += 1;
                self.stats.short_requests += u64::from(short);
                Ok(reply)
            }
            Err(d) => {
                count_drop(&mut self.stats, d);
                Err(d)
            }
        }
    }

    fn peer(&mut self, now: Instant, src: SocketAddr) -> &mut Peer {
        let max = self.cfg.max_peers.max(1);
        if !self.peers.contains_key(&src) && self.peers.len() >= max {
            self.expire(now);
            if self.peers.len() >= max
                && let Some(oldest) = self.peers.iter().min_by_key(|(_, p)| p.last_seen).map(|(k, _)| *k)
            {
                self.peers.remove(&oldest);
                self.stats.peers_evicted += 1;
            }
        }
        let p = self.peers.entry(src).or_insert(Peer { next_seq: 0, last_seen: now });
        p.last_seen = now;
        p
    }

    /// Writes T3 into the reply built by [`LightReflector::handle`]; call right before sending.
    pub fn transmit(&self, reply: &Reply, out: &mut [u8], t3: Duration) {
        transmit(TestLayout::Unauthenticated, None, reply, out, t3);
    }
}

fn count_drop(s: &mut ReflectorStats, d: Drop) {
    let c = match d {
        Drop::Short => &mut s.drop_short,
        Drop::TooLong => &mut s.drop_too_long,
        Drop::BadHmac => &mut s.drop_bad_hmac,
        Drop::BadErrorEstimate => &mut s.drop_bad_error_estimate,
        Drop::WrongSender => &mut s.drop_wrong_sender,
        Drop::NotStarted => &mut s.drop_not_started,
        Drop::AfterStop => &mut s.drop_after_stop,
    };
    *c += 1;
}

/// Checks the sender packet and writes the reply's fields and padding; the Sequence Number comes
/// from `sequence(sender's sequence)`. Returns the reply and whether the request was shorter than
/// the reply's fields.
#[allow(clippy::too_many_arguments)]
fn build_reply(
    layout: TestLayout,
    crypto: Option<&TestCrypto>,
    info: &Received,
    pkt: &[u8],
    out: &mut [u8],
    reflect_len: u16,
    symmetrical: bool,
    sequence: impl FnOnce(u32) -> u32,
) -> Result<(Reply, bool), Drop> {
    let sender_len = layout.sender_len();
    if pkt.len() < sender_len {
        return Err(Drop::Short);
    }
    if pkt.len() > test::MAX_PACKET_LEN {
        return Err(Drop::TooLong);
    }
    // The sender's fields, decrypted apart from the packet (the padding is never encrypted).
    let mut head = [0u8; test::SENDER_LEN_AUTH];
    let head = &mut head[..sender_len];
    head.copy_from_slice(&pkt[..sender_len]);
    if let Some(c) = crypto
        && c.open_sender(head).is_err()
    {
        return Err(Drop::BadHmac);
    }
    let Ok(s) = SenderPacket::new_checked(&head[..], layout).and_then(|p| SenderRepr::parse(&p)) else {
        return Err(Drop::Short);
    };
    if !s.error_estimate.is_valid() {
        return Err(Drop::BadErrorEstimate);
    }
    let len = test::reply_len(layout, pkt.len(), reflect_len);
    if len > out.len() {
        return Err(Drop::TooLong);
    }
    let reflector_len = layout.reflector_len();
    let reply = Reply { len, sequence: sequence(s.sequence) };
    let out = &mut out[..len];
    ReflectorRepr {
        layout,
        sequence: reply.sequence,
        timestamp: NtpTimestamp(0),
        error_estimate: info.error_estimate,
        receive_timestamp: NtpTimestamp::from_unix(info.rx.wall),
        sender_sequence: s.sequence,
        sender_timestamp: s.timestamp,
        sender_error_estimate: s.error_estimate,
        sender_ttl: Some(info.ttl.unwrap_or(255)),
        padding_len: len - reflector_len,
    }
    .emit(out);
    let skip = if symmetrical { layout.symmetric_padding() } else { 0 };
    let padding = pkt.get(sender_len + skip..).unwrap_or(&[]);
    let n = padding.len().min(len - reflector_len);
    out[reflector_len..reflector_len + n].copy_from_slice(&padding[..n]);
    Ok((reply, pkt.len() < reflector_len))
}

fn transmit(layout: TestLayout, crypto: Option<&TestCrypto>, reply: &Reply, out: &mut [u8], t3: Duration) {
    let Some(buf) = out.get_mut(..reply.len) else { return };
    ReflectorPacket::new_unchecked(&mut *buf, layout).set_timestamp(NtpTimestamp::from_unix(t3));
    if let Some(c) = crypto {
        // Cannot fail: the reply is at least the 112-octet authenticated layout.
        let _ = c.seal_reflector(buf);
    }
}

#[cfg(test)]
mod tests;
