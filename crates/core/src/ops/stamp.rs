//! Session-Sender (STAMP, RFC 8762 §4.2 with RFC 8972 TLVs; TWAMP-Test, RFC 5357 §4.1, in a
//! TWAMP-Control session or as TWAMP-Light): N test packets at a fixed interval, then the same
//! statistics as udp-jitter. The packet format is a parameter ([`SenderFormat`]); timing, matching
//! and statistics are one path for every format.
//!
//! T1 is the kernel's transmit stamp when the driver has one (the wire carries the userspace
//! reading just before the send call), T2 and T3 come from the reply (Receive Timestamp and
//! Timestamp), T4 is the receive stamp: RTT = (T4 − T1) − (T3 − T2), SD = T2 − T1, DS = T4 − T3.
//!
//! Loss direction: a stateful reflector numbers its replies itself (from 0), so the reply's
//! Sequence Number + 1 is a receive counter like the Cisco responder's and losses split into SD
//! and DS. A stateless reflector copies our Sequence Number: every loss is MIA. The operation
//! treats the reflector as stateful once a reply's Sequence Number differs from ours, or when
//! configured so (the reflector of a TWAMP-Control session keeps its own counter, RFC 5357
//! §4.2.1).
//!
//! Replies are matched on the Sender Sequence Number and the Sender Timestamp; anything else
//! (unknown sequence, another T1, too short, a failed HMAC) is counted and dropped (reference
//! §4.3, "Session-Sender"). TWAMP-Light replies of 38 octets without a Sender TTL (twampy) are
//! used and counted in [`StampReplyInfo::short_replies`].

use super::{
    Events, LostProbe, Operation, OperationResult, Peer, Precision, ProbeEvent, ReturnCode, StampSources, Transmit,
    earliest,
};
use crate::io::RxTime;
use crate::stats::{self, Sample, StatsConfig};
use crate::twamp::client::AcceptedSession;
use ipsla_wire::stamp::packet::{ReflectorPacket, ReflectorRepr, SenderPacket, SenderRepr, StampMode};
use ipsla_wire::stamp::tlv::{
    self, ClassOfService, DirectMeasurement, Location, TimestampInformation, TlvFlags, TlvHmacCheck, TlvRepr, TlvValue,
    TlvWriter,
};
use ipsla_wire::time::{ErrorEstimate, NtpTimestamp};
use ipsla_wire::twamp::crypto::{TestCrypto, TestKeys};
use ipsla_wire::twamp::test::{self as twamp_test, REFLECTOR_LEN_AUTH, TestLayout};
use std::time::{Duration, Instant};

/// Most packets per run (as udp-jitter).
pub const MAX_PACKETS: u32 = super::jitter::MAX_PACKETS;

/// An RFC 8972 TLV the sender adds to every packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlvRequest {
    /// Extra Padding of this many octets (zeros).
    ExtraPadding(u16),
    /// Timestamp Information (the reflector fills it).
    TimestampInfo,
    /// Class of Service asking for this DSCP back.
    ClassOfService(u8),
    /// Location with destination and source IP address requests.
    Location,
    /// Direct Measurement (our transmit counter; the reflector adds its counters).
    DirectMeasurement,
}

/// STAMP packets (RFC 8762 §4.2, RFC 8972).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StampFormat {
    /// SSID (RFC 8972 §3), non-zero.
    pub ssid: u16,
    /// Authenticated mode with this key.
    pub key: Option<Vec<u8>>,
    /// TLVs in each packet.
    pub tlvs: Vec<TlvRequest>,
}

impl StampFormat {
    fn mode(&self) -> StampMode {
        if self.key.is_some() { StampMode::Authenticated } else { StampMode::Unauthenticated }
    }
}

/// TWAMP-Test packets (RFC 5357 §4.1.2; RFC 4656 §4.1.2 for the crypto; RFC 6038 server octets).
#[derive(Debug, Clone)]
pub struct TwampFormat {
    /// Open (unauthenticated, mixed) or authenticated (authenticated, encrypted) layout.
    pub layout: TestLayout,
    /// The session's test crypto in the authenticated and encrypted modes.
    pub crypto: Option<TestCrypto>,
    /// Octets of padding after the sender fields (zeros, which RFC 4656 §4.1.2 requires
    /// implementations to offer).
    pub padding: usize,
    /// RFC 6038 Server octets, written first in the padding when non-zero.
    pub server_octets: u16,
}

impl TwampFormat {
    /// TWAMP-Light (RFC 5357 Appendix I): open layout, `padding` octets (27 makes both
    /// directions 41 octets).
    pub fn light(padding: usize) -> Self {
        TwampFormat { layout: TestLayout::Unauthenticated, crypto: None, padding, server_octets: 0 }
    }

    /// The format of a session a TWAMP-Control server accepted: its mode's layout and test keys,
    /// the Padding Length requested, the Server octets.
    pub fn for_session(s: &AcceptedSession) -> Self {
        let crypto = s.test_keys.as_ref().and_then(|k: &TestKeys| TestCrypto::new(s.mode, k));
        TwampFormat {
            layout: s.mode.test_layout(),
            crypto,
            padding: s.padding as usize,
            server_octets: s.server_octets,
        }
    }
}

/// The packet format of a Session-Sender.
#[derive(Debug, Clone)]
pub enum SenderFormat {
    /// STAMP (RFC 8762), with RFC 8972 SSID and TLVs.
    Stamp(StampFormat),
    /// TWAMP-Test (RFC 5357 §4.1), with or without TWAMP-Control (boxed: the test crypto's key
    /// schedules are large).
    Twamp(Box<TwampFormat>),
}

/// A Session-Sender's parameters.
#[derive(Debug, Clone)]
pub struct StampConfig {
    /// Packets per run.
    pub packets: u32,
    /// Interval between packets.
    pub interval: Duration,
    /// How long after the last packet replies count.
    pub timeout: Duration,
    /// RTT threshold.
    pub threshold: Duration,
    /// Clocks synchronised: report one-way delays.
    pub clock_sync: bool,
    /// What the packets look like.
    pub format: SenderFormat,
    /// Our clock's Error Estimate.
    pub error_estimate: ErrorEstimate,
    /// The reflector is known to be stateful (else detected from its sequence numbers).
    pub stateful: bool,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    at: Instant,
    t1_wire: NtpTimestamp,
    t1_wall: Duration,
    t1_kernel: Option<Duration>,
    answered: bool,
}

/// What replies said that the statistics do not hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StampReplyInfo {
    /// Replies whose HMAC (base or TLV) did not verify: dropped.
    pub bad_hmac: u32,
    /// Replies with the SSID zeroed (a reflector without RFC 8972).
    pub zero_ssid: u32,
    /// TLVs the reflector returned with U (unrecognised).
    pub tlv_unrecognized: u32,
    /// TLVs returned with M or I.
    pub tlv_errors: u32,
    /// The last Sender TTL seen.
    pub sender_ttl: Option<u8>,
    /// TWAMP replies shorter than the 41-octet reflector packet (TWAMP-Light peers that send
    /// no Sender TTL, reference §4.2): used, counted here.
    pub short_replies: u32,
}

/// The fields of a reply the sender uses, whatever its format.
#[derive(Debug, Clone, Copy)]
struct Reply {
    sequence: u32,
    sender_sequence: u32,
    sender_timestamp: NtpTimestamp,
    t2: NtpTimestamp,
    t3: NtpTimestamp,
    sender_ttl: Option<u8>,
    /// Noted only once the reply matched a packet we sent.
    note: ReplyNote,
}

#[derive(Debug, Clone, Copy, Default)]
struct ReplyNote {
    zero_ssid: bool,
    tlv_unrecognized: u32,
    tlv_errors: u32,
    short: bool,
}

/// Why a datagram was not a usable reply.
enum Reject {
    /// Too short, unreadable.
    Malformed,
    /// HMAC failed.
    Integrity,
}

/// The Session-Sender state machine (STAMP or TWAMP-Test).
#[derive(Debug, Clone)]
pub struct StampOp {
    cfg: StampConfig,
    start: Instant,
    drain_until: Option<Instant>,
    done: bool,
    sent: Vec<Sent>,
    arrivals: Vec<Sample>,
    /// Reflector sequence of each arrival (responder_seq is filled at the end).
    reflector_seqs: Vec<u32>,
    stateful_seen: bool,
    unexpected: u32,
    stamps: StampSources,
    info: StampReplyInfo,
    result: Option<OperationResult>,
    port: u16,
    events: Events,
    /// Where the kernel reported a test packet refused (ICMP port unreachable).
    refused: Option<std::net::SocketAddr>,
}

impl StampOp {
    /// Starts at `now`, sending to `port`.
    pub fn new(now: Instant, mut cfg: StampConfig, port: u16) -> Self {
        cfg.packets = cfg.packets.clamp(1, MAX_PACKETS);
        if let SenderFormat::Twamp(t) = &mut cfg.format {
            t.padding = t.padding.min(twamp_test::MAX_PACKET_LEN - t.layout.sender_len());
        }
        StampOp {
            sent: Vec::with_capacity(cfg.packets as usize),
            cfg,
            start: now,
            drain_until: None,
            done: false,
            arrivals: Vec::new(),
            reflector_seqs: Vec::new(),
            stateful_seen: false,
            unexpected: 0,
            stamps: StampSources::default(),
            info: StampReplyInfo::default(),
            result: None,
            port,
            events: Events::default(),
            refused: None,
        }
    }

    /// Reply details beyond the statistics.
    pub fn reply_info(&self) -> StampReplyInfo {
        self.info
    }

    fn write_packet(&self, seq: u32, t1: NtpTimestamp, buf: &mut [u8]) -> Option<usize> {
        match &self.cfg.format {
            SenderFormat::Stamp(f) => write_stamp(f, self.cfg.error_estimate, seq, t1, buf),
            SenderFormat::Twamp(f) => write_twamp(f, self.cfg.error_estimate, seq, t1, buf),
        }
    }

    fn handle_reply(&mut self, now: Instant, rx: RxTime, bytes: &[u8]) {
        let parsed = match &self.cfg.format {
            SenderFormat::Stamp(f) => stamp_reply(f, bytes),
            SenderFormat::Twamp(f) => twamp_reply(f, bytes),
        };
        let r = match parsed {
            Ok(r) => r,
            Err(Reject::Malformed) => {
                tracing::debug!(len = bytes.len(), "session-sender: unreadable reply dropped");
                self.unexpected += 1;
                return;
            }
            Err(Reject::Integrity) => {
                tracing::debug!(len = bytes.len(), "session-sender: reply with a bad HMAC dropped");
                self.info.bad_hmac += 1;
                return;
            }
        };
        let cap = 2 * self.sent.len();
        let Some(sent) = self.sent.get_mut(r.sender_sequence as usize) else {
            tracing::debug!(seq = r.sender_sequence, "session-sender: reply to a sequence never sent");
            self.unexpected += 1;
            return;
        };
        if sent.t1_wire != r.sender_timestamp {
            tracing::debug!(seq = r.sender_sequence, "session-sender: reply carries another T1");
            self.unexpected += 1;
            return;
        }
        self.info.zero_ssid += u32::from(r.note.zero_ssid);
        self.info.tlv_unrecognized += r.note.tlv_unrecognized;
        self.info.tlv_errors += r.note.tlv_errors;
        self.info.short_replies += u32::from(r.note.short);
        if r.sender_ttl.is_some() {
            self.info.sender_ttl = r.sender_ttl;
        }
        let duplicate = sent.answered;
        sent.answered = true;
        if duplicate && self.arrivals.len() >= cap {
            return;
        }
        self.stamps.note_rx(rx.kernel);
        if !duplicate {
            self.stamps.note_tx(sent.t1_kernel.is_some());
        }
        if r.sequence != r.sender_sequence {
            self.stateful_seen = true;
        }
        let late = now.saturating_duration_since(sent.at) > self.cfg.timeout;
        let t1 = NtpTimestamp::from_unix(sent.t1_kernel.unwrap_or(sent.t1_wall));
        let (t2, t3) = (r.t2, r.t3);
        let t4 = NtpTimestamp::from_unix(rx.wall);
        let rtt = t4.diff_nanos(t1) - t3.diff_nanos(t2);
        let t1_ns = sent.t1_kernel.unwrap_or(sent.t1_wall).as_nanos() as i64;
        let sample = Sample {
            seq: r.sender_sequence + 1,
            responder_seq: 0,
            rtt,
            sd: t2.diff_nanos(t1),
            ds: t4.diff_nanos(t3),
            late,
            duplicate,
            t1: t1_ns,
            t2: Some(t1_ns + t2.diff_nanos(t1)),
            t3: Some(t1_ns + t3.diff_nanos(t1)),
            t4: rx.wall.as_nanos() as i64,
        };
        self.arrivals.push(sample);
        self.events.reply(sample, self.cfg.clock_sync);
        self.reflector_seqs.push(r.sequence);
    }

    fn finish(&mut self) {
        self.events.expire_all();
        let counts = self.cfg.stateful || self.stateful_seen;
        let mut arrivals = self.arrivals.clone();
        if counts {
            for (a, &rs) in arrivals.iter_mut().zip(&self.reflector_seqs) {
                a.responder_seq = rs.wrapping_add(1);
            }
        }
        let cfg = StatsConfig {
            threshold: self.cfg.threshold.as_nanos() as i64,
            clock_sync: self.cfg.clock_sync,
            responder_counts: counts,
        };
        let st = stats::compute(self.sent.len() as u32, &arrivals, cfg);
        let return_code = if st.received == 0 {
            ReturnCode::Timeout
        } else if st.rtt.avg() > cfg.threshold as f64 {
            ReturnCode::OverThreshold
        } else {
            ReturnCode::Ok
        };
        let cause = self.refused.filter(|_| st.received == 0).map(|to| super::Cause::Refused { to });
        self.result = Some(OperationResult {
            return_code,
            stats: st,
            voice: None,
            precision: Precision::Us,
            stamps: self.stamps,
            unexpected: self.unexpected + self.info.bad_hmac,
            samples: arrivals,
            send_span_ns: match (self.sent.first(), self.sent.last()) {
                (Some(a), Some(b)) => (b.at - a.at).as_nanos() as u64,
                _ => 0,
            },
            lost: self
                .sent
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.answered)
                .map(|(i, s)| LostProbe { seq: i as u32 + 1, t1: s.t1_kernel.unwrap_or(s.t1_wall).as_nanos() as i64 })
                .collect(),
            cause,
            path_changed: None,
        });
        self.done = true;
    }
}

fn write_stamp(f: &StampFormat, ee: ErrorEstimate, seq: u32, t1: NtpTimestamp, buf: &mut [u8]) -> Option<usize> {
    let mode = f.mode();
    let base = mode.base_len();
    SenderRepr { mode, sequence: seq, timestamp: t1, error_estimate: ee, ssid: f.ssid }.emit(buf.get_mut(..base)?);
    let u = TlvFlags::U;
    let loc_sub = {
        let mut s = [0u8; 40];
        s[1] = 4; // Destination IP address request
        s[3] = 16;
        s[21] = 7; // Source IP address request
        s[23] = 16;
        s
    };
    let mut w = TlvWriter::new(&mut buf[base..]);
    let mut non_padding = false;
    for t in &f.tlvs {
        let value = match *t {
            TlvRequest::ExtraPadding(_) => continue,
            TlvRequest::TimestampInfo => TlvValue::TimestampInformation(TimestampInformation {
                sync_in: 0.into(),
                method_in: 0.into(),
                sync_out: 0.into(),
                method_out: 0.into(),
                sub_tlvs: &[],
            }),
            TlvRequest::ClassOfService(dscp) => {
                TlvValue::ClassOfService(ClassOfService { dscp1: dscp & 0x3f, ..ClassOfService::default() })
            }
            TlvRequest::Location => {
                TlvValue::Location(Location { destination_port: 0, source_port: 0, sub_tlvs: &loc_sub })
            }
            TlvRequest::DirectMeasurement => {
                TlvValue::DirectMeasurement(DirectMeasurement { sender_tx: seq + 1, ..DirectMeasurement::default() })
            }
        };
        w.push(&TlvRepr { flags: u, value }).ok()?;
        non_padding = true;
    }
    if let (Some(key), true) = (&f.key, non_padding) {
        w.push_hmac(u, key, seq).ok()?;
    }
    let zeros = [0u8; 65_535];
    for t in &f.tlvs {
        if let TlvRequest::ExtraPadding(n) = *t {
            w.push(&TlvRepr { flags: u, value: TlvValue::ExtraPadding(&zeros[..usize::from(n)]) }).ok()?;
        }
    }
    let len = base + w.written();
    if let Some(key) = &f.key {
        SenderPacket::new_unchecked(&mut buf[..len], mode).sign(key);
    }
    Some(len)
}

fn write_twamp(f: &TwampFormat, ee: ErrorEstimate, seq: u32, t1: NtpTimestamp, buf: &mut [u8]) -> Option<usize> {
    let r = twamp_test::SenderRepr {
        layout: f.layout,
        sequence: seq,
        timestamp: t1,
        error_estimate: ee,
        padding_len: f.padding,
    };
    let len = r.buffer_len();
    let b = buf.get_mut(..len)?;
    r.emit(b);
    if f.server_octets != 0
        && let Some(p) = b.get_mut(f.layout.sender_len()..f.layout.sender_len() + 2)
    {
        p.copy_from_slice(&f.server_octets.to_be_bytes());
    }
    if let Some(c) = &f.crypto {
        c.seal_sender(b).ok()?;
    }
    Some(len)
}

fn stamp_reply(f: &StampFormat, bytes: &[u8]) -> Result<Reply, Reject> {
    let mode = f.mode();
    let p = ReflectorPacket::new_checked(bytes, mode).map_err(|_| Reject::Malformed)?;
    let r = ReflectorRepr::parse(&p).map_err(|_| Reject::Malformed)?;
    if let Some(key) = &f.key {
        let tlv_ok =
            matches!(tlv::check_hmac(key, r.sequence, p.tlv_area()), TlvHmacCheck::Valid | TlvHmacCheck::Absent);
        if !p.verify_hmac(key) || !tlv_ok {
            return Err(Reject::Integrity);
        }
    }
    let mut note = ReplyNote { zero_ssid: r.ssid == 0 && f.ssid != 0, ..ReplyNote::default() };
    for t in tlv::TlvReader::new(p.tlv_area()).flatten() {
        let flags = t.1.flags();
        if flags.contains(TlvFlags::U) {
            note.tlv_unrecognized += 1;
        }
        if flags.contains(TlvFlags::M) || flags.contains(TlvFlags::I) {
            note.tlv_errors += 1;
        }
    }
    Ok(Reply {
        sequence: r.sequence,
        sender_sequence: r.sender_sequence,
        sender_timestamp: r.sender_timestamp,
        t2: r.receive_timestamp,
        t3: r.timestamp,
        sender_ttl: r.sender_ttl,
        note,
    })
}

fn twamp_reply(f: &TwampFormat, bytes: &[u8]) -> Result<Reply, Reject> {
    // The authenticated layout's fields, HMAC and encryption are in the first 112 octets; the
    // padding is never covered (RFC 4656 §4.1.2), so only those are copied and opened.
    let mut head = [0u8; REFLECTOR_LEN_AUTH];
    let fields: &[u8] = match f.layout {
        TestLayout::Unauthenticated => bytes,
        TestLayout::Authenticated => {
            let src = bytes.get(..REFLECTOR_LEN_AUTH).ok_or(Reject::Malformed)?;
            head.copy_from_slice(src);
            if let Some(c) = &f.crypto {
                c.open_reflector(&mut head).map_err(|_| Reject::Integrity)?;
            }
            &head
        }
    };
    let p = twamp_test::ReflectorPacket::new_checked(fields, f.layout).map_err(|_| Reject::Malformed)?;
    let r = twamp_test::ReflectorRepr::parse(&p).map_err(|_| Reject::Malformed)?;
    Ok(Reply {
        sequence: r.sequence,
        sender_sequence: r.sender_sequence,
        sender_timestamp: r.sender_timestamp,
        t2: r.receive_timestamp,
        t3: r.timestamp,
        sender_ttl: r.sender_ttl,
        note: ReplyNote { short: p.is_short(), ..ReplyNote::default() },
    })
}

impl Operation for StampOp {
    fn handle_refused(&mut self, _now: Instant, to: std::net::SocketAddr) {
        self.refused.get_or_insert(to);
    }

    fn poll_transmit(&mut self, now: Instant, wall: Duration, buf: &mut [u8]) -> Option<Transmit> {
        self.events.expire(now);
        if self.done || self.drain_until.is_some() {
            return None;
        }
        let i = self.sent.len() as u32;
        if now < self.start + self.cfg.interval * i {
            return None;
        }
        let t1 = NtpTimestamp::from_unix(wall);
        let len = self.write_packet(i, t1, buf)?;
        self.sent.push(Sent { at: now, t1_wire: t1, t1_wall: wall, t1_kernel: None, answered: false });
        self.events.sent(i + 1, wall, now + self.cfg.timeout);
        if self.sent.len() as u32 == self.cfg.packets {
            self.drain_until = Some(now + self.cfg.timeout);
        }
        Some(Transmit { peer: Peer::Probe, len, seq: i + 1 })
    }

    fn handle_datagram(&mut self, now: Instant, from: Peer, rx: RxTime, bytes: &[u8]) {
        if self.done || from != Peer::Probe {
            return;
        }
        self.handle_reply(now, rx, bytes);
        if self.drain_until.is_some() && self.sent.iter().all(|s| s.answered) {
            self.finish();
        }
    }

    fn handle_tx_stamp(&mut self, seq: u32, wall: Duration) {
        if let Some(s) = seq.checked_sub(1).and_then(|i| self.sent.get_mut(i as usize)) {
            s.t1_kernel = Some(wall);
        }
    }

    fn next_send(&self) -> Option<Instant> {
        (!self.done && self.drain_until.is_none() && self.cfg.timeout > self.cfg.interval * 2)
            .then(|| self.start + self.cfg.interval * self.sent.len() as u32)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.done {
            return None;
        }
        earliest(
            Some(self.drain_until.unwrap_or(self.start + self.cfg.interval * self.sent.len() as u32)),
            self.events.next_deadline(),
        )
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.events.expire(now);
        if self.drain_until.is_some_and(|u| now >= u) && !self.done {
            self.finish();
        }
    }

    fn probe_port(&self) -> u16 {
        self.port
    }

    fn is_done(&self) -> bool {
        self.done
    }

    fn result(&self) -> OperationResult {
        self.result.clone().unwrap_or_else(|| OperationResult::pending(Precision::Us, self.stamps, self.unexpected))
    }

    fn poll_event(&mut self) -> Option<ProbeEvent> {
        self.events.poll()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stamp::{ReflectorConfig, StampReflector};
    use ipsla_wire::stamp::tlv::SyncSource;

    fn cfg(key: Option<Vec<u8>>, tlvs: Vec<TlvRequest>) -> StampConfig {
        StampConfig {
            packets: 5,
            interval: Duration::from_millis(10),
            timeout: Duration::from_secs(1),
            threshold: Duration::from_secs(5),
            clock_sync: true,
            format: SenderFormat::Stamp(StampFormat { ssid: 77, key, tlvs }),
            error_estimate: ErrorEstimate::UNSYNCED_DEFAULT,
            stateful: false,
        }
    }

    /// Runs the sender against the core reflector on a fake timeline; `drop_fwd` / `drop_back`
    /// lose packets by sender sequence.
    fn run(c: StampConfig, refl: ReflectorConfig, drop_fwd: &[u32], drop_back: &[u32]) -> OperationResult {
        let t0 = Instant::now();
        let wall0 = Duration::from_secs(1_700_000_000);
        let mut op = StampOp::new(t0, c, 862);
        let mut r = StampReflector::new(refl);
        let mut buf = vec![0u8; 4096];
        let mut out = vec![0u8; 4096];
        for step in 0..200u32 {
            let now = t0 + Duration::from_millis(u64::from(step));
            let wall = wall0 + Duration::from_millis(u64::from(step));
            while let Some(tx) = op.poll_transmit(now, wall, &mut buf) {
                let seq = tx.seq - 1;
                if drop_fwd.contains(&seq) {
                    continue;
                }
                let info = crate::stamp::Received {
                    rx: RxTime { wall: wall + Duration::from_micros(300), kernel: true },
                    src: "127.0.0.1:5000".parse().unwrap(),
                    dst: "127.0.0.1:862".parse().unwrap(),
                    ttl: Some(64),
                    tos: None,
                    error_estimate: ErrorEstimate::UNSYNCED_DEFAULT,
                    sync_source: SyncSource::LocalFreeRunning,
                };
                let rep = r.handle(now, &info, &buf[..tx.len], &mut out).expect("reflected");
                r.transmit(&rep, &mut out, wall + Duration::from_micros(400));
                if drop_back.contains(&seq) {
                    continue;
                }
                let rx = RxTime { wall: wall + Duration::from_micros(700), kernel: true };
                op.handle_datagram(now, Peer::Probe, rx, &out[..rep.len]);
            }
            if op.poll_timeout().is_some_and(|d| d <= now) {
                op.handle_timeout(now);
            }
            if op.is_done() {
                break;
            }
        }
        if !op.is_done() {
            op.handle_timeout(t0 + Duration::from_secs(10));
        }
        op.result()
    }

    #[test]
    fn clean_run_has_timings() {
        let r = run(cfg(None, vec![]), ReflectorConfig::default(), &[], &[]);
        assert_eq!(r.return_code, ReturnCode::Ok);
        assert_eq!((r.stats.sent, r.stats.received), (5, 5));
        // (T4 − T1) − (T3 − T2) = 700 − 100 µs, to the NTP rounding (2^-32 s)
        assert!((r.stats.rtt.min - 600_000).abs() <= 2, "{:?}", r.stats.rtt);
        assert!((r.stats.rtt.max - 600_000).abs() <= 2, "{:?}", r.stats.rtt);
    }

    #[test]
    fn stateful_reflector_splits_loss() {
        let refl = ReflectorConfig { stateful: true, ..ReflectorConfig::default() };
        let r = run(cfg(None, vec![]), refl, &[1], &[3]);
        assert_eq!(r.stats.received, 3);
        assert_eq!((r.stats.loss_sd, r.stats.loss_ds, r.stats.loss_mia), (1, 1, 0));
    }

    #[test]
    fn stateless_reflector_loss_is_mia() {
        let r = run(cfg(None, vec![]), ReflectorConfig::default(), &[1], &[3]);
        assert_eq!((r.stats.loss_sd, r.stats.loss_ds, r.stats.loss_mia), (0, 0, 2));
    }

    #[test]
    fn sender_behind_schedule_bursts_reordered_on_the_way_out_split_loss() {
        // A loaded sender (the lab's `stress-ng --cpu 2` case): it runs only at 0, 35, 42, 150,
        // 156 and 400 ms, so probes 1-3 (due 10, 20, 30 ms) leave together at 35 ms and probes
        // 5-9 (due 50-90 ms) together at 150 ms. Out delays of 2.9-3.3 ms reorder each burst, and
        // the stateful reflector numbers probes as they arrive: 0, 2, 3, 1, 4, 8, 6, 9, 5 get
        // counters 0-8; probe 7 is lost on the way out, the replies of 2 and 6 on the way back.
        // Replies take 2 ms and wait in the socket for the sender's next turn: 4's reply is
        // handled at 150 ms, 108 ms after it was sent (late, timeout 100 ms).
        let us = Duration::from_micros;
        let out_delay = |seq: u32| match seq {
            1 => Some(us(3300)),
            2 | 6 => Some(us(3000)),
            3 | 9 => Some(us(3100)),
            5 => Some(us(3200)),
            7 => None,
            8 => Some(us(2900)),
            _ => Some(us(3000)),
        };
        let reply_lost = |seq: u32| seq == 2 || seq == 6;
        let t0 = Instant::now();
        let wall0 = Duration::from_secs(1_700_000_000);
        let mut c = cfg(None, vec![]);
        (c.packets, c.timeout) = (10, Duration::from_millis(100));
        let mut op = StampOp::new(t0, c, 862);
        let mut refl = StampReflector::new(ReflectorConfig { stateful: true, ..ReflectorConfig::default() });
        let mut buf = vec![0u8; 4096];
        let mut at_reflector: Vec<(Duration, u32, Vec<u8>)> = Vec::new();
        let mut replies: Vec<(Duration, Vec<u8>)> = Vec::new();
        for wake_ms in [0, 35, 42, 150, 156, 400] {
            let since = Duration::from_millis(wake_ms);
            let now = t0 + since;
            // the reflector's work up to now, in the order probes reached it
            at_reflector.sort_by_key(|p| p.0);
            let (due, later): (Vec<_>, Vec<_>) = at_reflector.drain(..).partition(|p| p.0 <= since);
            at_reflector = later;
            for (arrival, seq, pkt) in due {
                let info = crate::stamp::Received {
                    rx: RxTime { wall: wall0 + arrival, kernel: true },
                    src: "127.0.0.1:5000".parse().unwrap(),
                    dst: "127.0.0.1:862".parse().unwrap(),
                    ttl: Some(64),
                    tos: None,
                    error_estimate: ErrorEstimate::UNSYNCED_DEFAULT,
                    sync_source: SyncSource::LocalFreeRunning,
                };
                let mut out = vec![0u8; 4096];
                let rep = refl.handle(t0 + arrival, &info, &pkt, &mut out).expect("reflected");
                refl.transmit(&rep, &mut out, wall0 + arrival + us(50));
                if !reply_lost(seq) {
                    replies.push((arrival + us(2050), out[..rep.len].to_vec()));
                }
            }
            // the replies waiting in the socket, in the order they arrived, with their kernel stamps
            replies.sort_by_key(|r| r.0);
            let (due, later): (Vec<_>, Vec<_>) = replies.drain(..).partition(|r| r.0 <= since);
            replies = later;
            for (arrival, bytes) in due {
                op.handle_datagram(now, Peer::Probe, RxTime { wall: wall0 + arrival, kernel: true }, &bytes);
            }
            while let Some(tx) = op.poll_transmit(now, wall0 + since, &mut buf) {
                if let Some(d) = out_delay(tx.seq - 1) {
                    at_reflector.push((since + d, tx.seq - 1, buf[..tx.len].to_vec()));
                }
            }
            if op.poll_timeout().is_some_and(|d| d <= now) {
                op.handle_timeout(now);
            }
        }
        assert!(op.is_done());
        let st = op.result().stats;
        assert_eq!((st.sent, st.received, st.late), (10, 6, 1));
        assert_eq!(st.out_of_sequence, 2, "1 after 3, 5 after 9: as the reflector sent them");
        assert_eq!((st.loss_sd, st.loss_ds, st.loss_mia), (1, 2, 0), "7 out; 2 and 6 back");
    }

    #[test]
    fn authenticated_with_tlvs() {
        let key = b"k3y".to_vec();
        let tlvs = vec![
            TlvRequest::TimestampInfo,
            TlvRequest::ClassOfService(46),
            TlvRequest::Location,
            TlvRequest::DirectMeasurement,
            TlvRequest::ExtraPadding(30),
        ];
        let refl = ReflectorConfig { key: Some(key.clone()), ..ReflectorConfig::default() };
        let r = run(cfg(Some(key.clone()), tlvs.clone()), refl, &[], &[]);
        assert_eq!((r.stats.received, r.unexpected), (5, 0));
        // a reflector with another key: the sender's packets are dropped there
        let refl = ReflectorConfig { key: Some(b"other".to_vec()), ..ReflectorConfig::default() };
        let t0 = Instant::now();
        let mut op = StampOp::new(t0, cfg(Some(key), tlvs), 862);
        let mut buf = vec![0u8; 4096];
        let tx = op.poll_transmit(t0, Duration::from_secs(1_700_000_000), &mut buf).unwrap();
        assert_eq!(tx.len, 112 + 8 + 8 + 48 + 16 + 20 + 34, "base, TLVs, HMAC TLV, then padding");
        let mut r = StampReflector::new(refl);
        let info = crate::stamp::Received {
            rx: RxTime { wall: Duration::from_secs(1_700_000_000), kernel: false },
            src: "127.0.0.1:5000".parse().unwrap(),
            dst: "127.0.0.1:862".parse().unwrap(),
            ttl: None,
            tos: None,
            error_estimate: ErrorEstimate::UNSYNCED_DEFAULT,
            sync_source: SyncSource::LocalFreeRunning,
        };
        assert_eq!(r.handle(t0, &info, &buf[..tx.len], &mut vec![0u8; 4096]), Err(crate::stamp::Drop::BadHmac));
    }

    // ---- TWAMP-Test, against a reflector scripted with the wire API ----

    use crate::twamp::client::AcceptedSession;
    use ipsla_wire::twamp::crypto::SessionKeys;
    use ipsla_wire::twamp::{SecurityMode, Sid};

    fn twamp_cfg(format: TwampFormat, stateful: bool) -> StampConfig {
        StampConfig { format: SenderFormat::Twamp(Box::new(format)), stateful, ..cfg(None, vec![]) }
    }

    fn test_keys(seed: u8) -> TestKeys {
        let keys = SessionKeys { aes: [seed; 16], hmac: [seed ^ 0x5a; 32] };
        TestKeys::derive(&keys, &Sid([7; 16]))
    }

    fn crypto(mode: SecurityMode, seed: u8) -> Option<TestCrypto> {
        TestCrypto::new(mode, &test_keys(seed))
    }

    /// What the scripted reflector does.
    struct Script<'a> {
        layout: TestLayout,
        crypto: Option<TestCrypto>,
        /// Own counter (RFC 5357 §4.2.1) or a copy of the sender's (TWAMP-Light, stateless).
        stateful: bool,
        drop_fwd: &'a [u32],
        drop_back: &'a [u32],
        /// Last chance to alter a reply (by sender sequence) before the sender sees it.
        mangle: &'a dyn Fn(u32, &mut Vec<u8>),
        /// Extra datagrams delivered with the reply of a sender sequence.
        extra: &'a dyn Fn(u32) -> Vec<Vec<u8>>,
    }

    impl<'a> Script<'a> {
        fn new(layout: TestLayout, crypto: Option<TestCrypto>) -> Self {
            Script {
                layout,
                crypto,
                stateful: true,
                drop_fwd: &[],
                drop_back: &[],
                mangle: &|_, _| {},
                extra: &|_| Vec::new(),
            }
        }
    }

    /// Runs a TWAMP sender on a fake timeline: T2 = T1 + 300 µs, T3 = T1 + 400 µs, T4 = T1 + 700 µs.
    fn run_twamp(c: StampConfig, script: Script<'_>) -> (OperationResult, StampReplyInfo, Vec<usize>) {
        let t0 = Instant::now();
        let wall0 = Duration::from_secs(1_700_000_000);
        let mut op = StampOp::new(t0, c, 862);
        let mut buf = vec![0u8; 4096];
        let mut counter = 0u32;
        let mut sizes = Vec::new();
        for step in 0..200u32 {
            let now = t0 + Duration::from_millis(u64::from(step));
            let wall = wall0 + Duration::from_millis(u64::from(step));
            while let Some(tx) = op.poll_transmit(now, wall, &mut buf) {
                let seq = tx.seq - 1;
                sizes.push(tx.len);
                if script.drop_fwd.contains(&seq) {
                    continue;
                }
                let mut pkt = buf[..tx.len].to_vec();
                if let Some(c) = &script.crypto
                    && c.open_sender(&mut pkt).is_err()
                {
                    continue; // the reflector drops what fails its HMAC
                }
                let sp = twamp_test::SenderPacket::new_checked(&pkt[..], script.layout).expect("sender packet");
                let s = twamp_test::SenderRepr::parse(&sp).unwrap();
                assert_eq!(s.sequence, seq);
                let len = twamp_test::reply_len(script.layout, pkt.len(), 0);
                let rep = twamp_test::ReflectorRepr {
                    layout: script.layout,
                    sequence: if script.stateful { counter } else { s.sequence },
                    timestamp: NtpTimestamp::from_unix(wall + Duration::from_micros(400)),
                    error_estimate: ErrorEstimate::UNSYNCED_DEFAULT,
                    receive_timestamp: NtpTimestamp::from_unix(wall + Duration::from_micros(300)),
                    sender_sequence: s.sequence,
                    sender_timestamp: s.timestamp,
                    sender_error_estimate: s.error_estimate,
                    sender_ttl: Some(64),
                    padding_len: len - script.layout.reflector_len(),
                };
                counter += 1;
                let mut out = vec![0u8; len];
                rep.emit(&mut out);
                if let Some(c) = &script.crypto {
                    c.seal_reflector(&mut out).unwrap();
                }
                (script.mangle)(seq, &mut out);
                let rx = RxTime { wall: wall + Duration::from_micros(700), kernel: true };
                for e in (script.extra)(seq) {
                    op.handle_datagram(now, Peer::Probe, rx, &e);
                }
                if !script.drop_back.contains(&seq) {
                    op.handle_datagram(now, Peer::Probe, rx, &out);
                }
            }
            if op.poll_timeout().is_some_and(|d| d <= now) {
                op.handle_timeout(now);
            }
            if op.is_done() {
                break;
            }
        }
        if !op.is_done() {
            op.handle_timeout(t0 + Duration::from_secs(10));
        }
        (op.result(), op.reply_info(), sizes)
    }

    fn assert_600us(r: &OperationResult) {
        assert!((r.stats.rtt.min - 600_000).abs() <= 2, "{:?}", r.stats.rtt);
        assert!((r.stats.rtt.max - 600_000).abs() <= 2, "{:?}", r.stats.rtt);
    }

    #[test]
    fn twamp_open_clean_run() {
        let (r, info, sizes) =
            run_twamp(twamp_cfg(TwampFormat::light(27), true), Script::new(TestLayout::Unauthenticated, None));
        assert_eq!(r.return_code, ReturnCode::Ok);
        assert_eq!((r.stats.sent, r.stats.received, r.unexpected), (5, 5, 0));
        assert_600us(&r);
        // SD = T2 − T1 = 300 µs, DS = T4 − T3 = 300 µs (clocks declared synchronised)
        let sd = r.stats.one_way_sd.unwrap();
        assert!((sd.min - 300_000).abs() <= 2 && (sd.max - 300_000).abs() <= 2, "{sd:?}");
        assert_eq!(sizes, vec![41; 5], "14 + 27: the symmetric open size");
        assert_eq!((info.sender_ttl, info.short_replies), (Some(64), 0));
    }

    #[test]
    fn twamp_session_reflector_is_stateful_loss_splits() {
        let mut s = Script::new(TestLayout::Unauthenticated, None);
        s.drop_fwd = &[1];
        s.drop_back = &[3];
        let (r, _, _) = run_twamp(twamp_cfg(TwampFormat::light(27), true), s);
        assert_eq!(r.stats.received, 3);
        assert_eq!((r.stats.loss_sd, r.stats.loss_ds, r.stats.loss_mia), (1, 1, 0));
        // the same losses from a stateless TWAMP-Light reflector: direction unknown
        let mut s = Script::new(TestLayout::Unauthenticated, None);
        (s.stateful, s.drop_fwd, s.drop_back) = (false, &[1], &[3]);
        let (r, _, _) = run_twamp(twamp_cfg(TwampFormat::light(27), false), s);
        assert_eq!((r.stats.loss_sd, r.stats.loss_ds, r.stats.loss_mia), (0, 0, 2));
    }

    #[test]
    fn twamp_authenticated_and_encrypted() {
        for mode in [SecurityMode::Authenticated, SecurityMode::Encrypted] {
            let session = AcceptedSession {
                index: 0,
                port: 18760,
                sid: Sid([7; 16]),
                mode,
                test_keys: Some(test_keys(1)),
                padding: 64,
                reflected_octets: 0,
                server_octets: 0,
            };
            let f = TwampFormat::for_session(&session);
            assert!(f.crypto.is_some());
            let script = Script::new(TestLayout::Authenticated, crypto(mode, 1));
            let (r, info, sizes) = run_twamp(twamp_cfg(f.clone(), true), script);
            assert_eq!((r.stats.received, r.unexpected, info.bad_hmac), (5, 0, 0), "{mode:?}");
            assert_600us(&r);
            assert_eq!(sizes, vec![112; 5], "48 + 64: the symmetric authenticated size");

            // replies sealed with other keys: every one dropped and counted
            let mut script = Script::new(TestLayout::Authenticated, crypto(mode, 1));
            let other = crypto(mode, 2).unwrap();
            let reseal = move |_: u32, out: &mut Vec<u8>| {
                let mut plain = out.clone();
                crypto(mode, 1).unwrap().open_reflector(&mut plain).unwrap();
                other.seal_reflector(&mut plain).unwrap();
                *out = plain;
            };
            script.mangle = &reseal;
            let (r, info, _) = run_twamp(twamp_cfg(f, true), script);
            assert_eq!((r.return_code, r.stats.received, info.bad_hmac, r.unexpected), (ReturnCode::Timeout, 0, 5, 5));
        }
    }

    #[test]
    fn twamp_light_short_replies_are_used() {
        // twampy's 38-octet replies: no MBZ, no Sender TTL (reference §4.2)
        let mut s = Script::new(TestLayout::Unauthenticated, None);
        s.stateful = false;
        s.mangle = &|_, out: &mut Vec<u8>| out.truncate(38);
        let (r, info, _) = run_twamp(twamp_cfg(TwampFormat::light(0), false), s);
        assert_eq!((r.stats.received, r.unexpected), (5, 0));
        assert_600us(&r);
        assert_eq!((info.short_replies, info.sender_ttl), (5, None));
        // 37 octets is too short to hold the sender's timestamp copy: dropped, counted
        let mut s = Script::new(TestLayout::Unauthenticated, None);
        s.mangle = &|_, out: &mut Vec<u8>| out.truncate(37);
        let (r, _, _) = run_twamp(twamp_cfg(TwampFormat::light(0), false), s);
        assert_eq!((r.stats.received, r.unexpected), (0, 5));
    }

    #[test]
    fn twamp_unknown_sequence_duplicates_and_wrong_t1() {
        let mut s = Script::new(TestLayout::Unauthenticated, None);
        s.extra = &|seq| {
            let mut unknown = vec![0u8; 41];
            unknown[24..28].copy_from_slice(&99u32.to_be_bytes()); // never sent
            let mut wrong_t1 = vec![0u8; 41];
            wrong_t1[24..28].copy_from_slice(&seq.to_be_bytes()); // our sequence, T1 zero
            vec![unknown, wrong_t1, vec![1, 2, 3]]
        };
        let (r, _, _) = run_twamp(twamp_cfg(TwampFormat::light(27), true), s);
        assert_eq!((r.stats.received, r.unexpected), (5, 15));
        assert_600us(&r);
    }

    #[test]
    fn twamp_duplicates_are_counted_once() {
        let t0 = Instant::now();
        let wall0 = Duration::from_secs(1_700_000_000);
        let mut c = twamp_cfg(TwampFormat::light(27), true);
        c.packets = 2;
        let mut op = StampOp::new(t0, c, 862);
        let mut buf = vec![0u8; 128];
        for i in 0..2u32 {
            let (now, wall) = (t0 + Duration::from_millis(10) * i, wall0 + Duration::from_millis(10) * i);
            let tx = op.poll_transmit(now, wall, &mut buf).unwrap();
            let s = twamp_test::SenderRepr::parse(
                &twamp_test::SenderPacket::new_checked(&buf[..tx.len], TestLayout::Unauthenticated).unwrap(),
            )
            .unwrap();
            let rep = twamp_test::ReflectorRepr {
                layout: TestLayout::Unauthenticated,
                sequence: i,
                timestamp: s.timestamp,
                error_estimate: ErrorEstimate::UNSYNCED_DEFAULT,
                receive_timestamp: s.timestamp,
                sender_sequence: i,
                sender_timestamp: s.timestamp,
                sender_error_estimate: s.error_estimate,
                sender_ttl: None,
                padding_len: 0,
            };
            let mut out = vec![0u8; 41];
            rep.emit(&mut out);
            assert_eq!(out[40], 255, "an unread TTL is written as 255");
            let rx = RxTime { wall: wall + Duration::from_micros(50), kernel: false };
            op.handle_datagram(now, Peer::Probe, rx, &out);
            if i == 0 {
                op.handle_datagram(now, Peer::Probe, rx, &out);
            }
        }
        assert!(op.is_done(), "every packet answered");
        let r = op.result();
        assert_eq!((r.stats.received, r.stats.duplicates, r.unexpected), (2, 1, 0));
        assert!((r.stats.rtt.min - 50_000).abs() <= 2, "{:?}", r.stats.rtt);
    }

    #[test]
    fn twamp_server_octets_lead_the_padding() {
        let mut f = TwampFormat::light(27);
        f.server_octets = 0xbeef;
        let mut op = StampOp::new(Instant::now(), twamp_cfg(f, true), 862);
        let mut buf = vec![0u8; 128];
        let tx = op.poll_transmit(Instant::now(), Duration::from_secs(1_700_000_000), &mut buf).unwrap();
        assert_eq!(tx.len, 41);
        assert_eq!(&buf[14..16], &[0xbe, 0xef]);
        assert_eq!(&buf[16..41], &[0u8; 25][..]);
    }
}
