//! udp-jitter: control, then N probes at a fixed interval from one socket, then the statistics.
//!
//! Type-2 probes (`precision ms`, IOS capture) carry ms-since-midnight timestamps; every delay is
//! computed in whole ms modulo one day, as IOS does: RTT = (T4 − T1) − P, SD = T2 − T1,
//! DS = T4 − (T2 + P), with P the responder's processing time. Type-3 probes (`precision us`)
//! carry NTP T1..T3; RTT = (T4 − T1) − (T3 − T2), SD = T2 − T1, DS = T4 − T3, to the nanosecond.
//! T1 is our wall clock when the probe is written (just before the send call); T4 is the receive
//! stamp the driver passes in (the kernel's when it has one).
//!
//! icmp-jitter is the same machine with ICMP Timestamp messages (RFC 792 types 13/14) instead of
//! IP SLA probes and no control phase: the target's kernel answers with its receive and transmit
//! times in ms since midnight, so P = transmit − receive; it keeps no receive counter, so every
//! loss is MIA.

use super::control::{ControlMode, ControlPhase, ControlRequest};
use super::{
    Cause, Events, LostProbe, Operation, OperationResult, Peer, Precision, ProbeEvent, ReturnCode, StampSources,
    Transmit, VoiceConfig, earliest,
};
use crate::io::RxTime;
use crate::stats::{self, Sample, StatsConfig};
use crate::voice;
use ipsla_wire::cisco::probe::{self, Type2, Type2Repr, Type3, Type3Layout, Type3Repr};
use ipsla_wire::icmp;
use ipsla_wire::time::{NtpTimestamp, ms_diff, ms_since_midnight};
use std::time::{Duration, Instant};

/// IOS caps num-packets at 60000; type-2 sequence numbers are 16 bits.
pub const MAX_PACKETS: u32 = 60_000;

/// A udp-jitter operation's parameters.
#[derive(Debug, Clone)]
pub struct JitterConfig {
    /// Control mode.
    pub control: ControlMode,
    /// What the control message asks for (operation udp-jitter).
    pub request: ControlRequest,
    /// Control message sequence.
    pub sequence: u32,
    /// Probes to send (IOS `num-packets`, default 10).
    pub packets: u32,
    /// Interval between probes (IOS `interval`, default 20 ms).
    pub interval: Duration,
    /// Probe size in bytes (IOS `request-data-size`, default 32), at least the header.
    pub size: usize,
    /// Probe format: IP SLA type 2 (ms) or 3 (µs), or ICMP Timestamp.
    pub format: JitterFormat,
    /// Operation timeout (IOS default 5000 ms): also how long after the last probe replies count.
    pub timeout: Duration,
    /// RTT threshold (IOS default 5000 ms).
    pub threshold: Duration,
    /// Clocks synchronised within tolerance: report one-way delays.
    pub clock_sync: bool,
    /// Codec emulation and scores.
    pub voice: Option<VoiceConfig>,
    /// Data pattern after the header (IOS default `ABCD`).
    pub pattern: Vec<u8>,
}

/// What the probes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JitterFormat {
    /// IP SLA probes: type 2 for ms precision, type 3 for µs.
    Udp(Precision),
    /// ICMP Timestamp requests (icmp-jitter) with this identifier.
    IcmpTimestamp {
        /// ICMP identifier of the operation.
        ident: u16,
    },
}

impl JitterFormat {
    /// Precision of the timestamps.
    pub fn precision(self) -> Precision {
        match self {
            JitterFormat::Udp(p) => p,
            JitterFormat::IcmpTimestamp { .. } => Precision::Ms,
        }
    }
}

impl JitterConfig {
    /// Control duration as IOS builds it: timeout + packets × interval (reference §2.2).
    pub fn control_duration(timeout: Duration, packets: u32, interval: Duration) -> Duration {
        timeout + interval * packets
    }
    fn header_len(&self) -> usize {
        match self.format {
            JitterFormat::Udp(Precision::Ms) => probe::TYPE2_HEADER_LEN,
            JitterFormat::Udp(Precision::Us) => probe::TYPE3_HEADER_LEN,
            JitterFormat::IcmpTimestamp { .. } => icmp::TIMESTAMP_LEN,
        }
    }
    fn layout(&self) -> Type3Layout {
        // RFC layout with RFC control; IOS-style (legacy u16) otherwise.
        if matches!(self.control, ControlMode::V2(_)) { Type3Layout::Rfc } else { Type3Layout::Legacy }
    }
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    at: Instant,
    /// T1 as written on the wire: ms since midnight (type 2) or NTP (type 3).
    t1_wire: u64,
    /// T1 as our wall clock read it, ns since the epoch.
    t1_wall: Duration,
    /// T1 as the kernel stamped the datagram leaving, when the driver got it.
    t1_kernel: Option<Duration>,
    answered: bool,
}

#[derive(Debug, Clone)]
enum Phase {
    Control(Box<ControlPhase>),
    Probing { start: Instant },
    Draining { until: Instant },
    Done,
}

/// The udp-jitter state machine.
#[derive(Debug, Clone)]
pub struct JitterOp {
    cfg: JitterConfig,
    phase: Phase,
    sent: Vec<Sent>,
    arrivals: Vec<Sample>,
    stored_duplicates: u32,
    extra_duplicates: u32,
    unexpected: u32,
    stamps: StampSources,
    failure: Option<ReturnCode>,
    cause: Option<Cause>,
    result: Option<OperationResult>,
    port: u16,
    events: Events,
}

impl JitterOp {
    /// Starts the operation at `now`.
    pub fn new(now: Instant, mut cfg: JitterConfig) -> Self {
        cfg.packets = cfg.packets.clamp(1, MAX_PACKETS);
        cfg.size = match cfg.format {
            JitterFormat::IcmpTimestamp { .. } => icmp::TIMESTAMP_LEN,
            JitterFormat::Udp(_) => cfg.size.max(cfg.header_len()),
        };
        let control = ControlPhase::new(now, cfg.control.clone(), cfg.request.clone(), cfg.sequence, cfg.timeout);
        let cfg_port = cfg.request.port;
        JitterOp {
            sent: Vec::with_capacity(cfg.packets as usize),
            cfg,
            phase: Phase::Control(Box::new(control)),
            arrivals: Vec::new(),
            stored_duplicates: 0,
            extra_duplicates: 0,
            unexpected: 0,
            stamps: StampSources::default(),
            failure: None,
            cause: None,
            result: None,
            port: cfg_port,
            events: Events::default(),
        }
    }

    fn advance_control(&mut self, now: Instant) {
        if let Phase::Control(c) = &self.phase {
            match c.outcome() {
                Some(Ok(port)) => {
                    self.port = port;
                    self.phase = Phase::Probing { start: now };
                }
                Some(Err(code)) => {
                    self.failure = Some(code);
                    self.cause = c.cause();
                    self.finish();
                }
                None => {}
            }
        }
    }

    fn write_probe(&mut self, now: Instant, wall: Duration, buf: &mut [u8]) -> usize {
        let seq = self.sent.len() as u32 + 1;
        let len = self.cfg.size;
        let hl = self.cfg.header_len();
        probe::fill_pattern(&mut buf[hl..len], &self.cfg.pattern);
        let t1_wire = match self.cfg.format {
            JitterFormat::IcmpTimestamp { ident } => {
                // IOS sets RFC 792's non-standard-time bit (icmp_jitter capture).
                let t1 = ms_since_midnight(wall) | !icmp::TIMESTAMP_MASK;
                icmp::emit_timestamp_request(buf, ident, seq as u16, t1);
                return self.record(now, wall, u64::from(t1 & icmp::TIMESTAMP_MASK), icmp::TIMESTAMP_LEN);
            }
            JitterFormat::Udp(Precision::Ms) => {
                let t1 = ms_since_midnight(wall);
                Type2Repr { processing_ms: 0, t1, t2: 0, sender_seq: seq as u16, responder_seq: 0 }
                    .emit(&mut buf[..len]);
                u64::from(t1)
            }
            JitterFormat::Udp(Precision::Us) => {
                let t1 = NtpTimestamp::from_unix(wall).0;
                let layout = self.cfg.layout();
                Type3Repr {
                    layout,
                    reserved: 0,
                    t: [t1, 0, 0, 0],
                    clock_offsets: [0, 0],
                    sender_seq: seq,
                    responder_seq: 0,
                }
                .emit(&mut buf[..len]);
                t1
            }
        };
        self.record(now, wall, t1_wire, len)
    }

    fn record(&mut self, now: Instant, wall: Duration, t1_wire: u64, len: usize) -> usize {
        self.sent.push(Sent { at: now, t1_wire, t1_wall: wall, t1_kernel: None, answered: false });
        self.events.sent(self.sent.len() as u32, wall, now + self.cfg.timeout);
        len
    }

    fn finish(&mut self) {
        self.events.expire_all();
        let cfg = StatsConfig {
            threshold: self.cfg.threshold.as_nanos() as i64,
            clock_sync: self.cfg.clock_sync,
            responder_counts: matches!(self.cfg.format, JitterFormat::Udp(_)),
        };
        let mut st = stats::compute(self.sent.len() as u32, &self.arrivals, cfg);
        st.duplicates += self.extra_duplicates;
        let return_code = match self.failure {
            Some(c) => c,
            None if st.received == 0 => ReturnCode::Timeout,
            None if st.rtt.avg() > cfg.threshold as f64 => ReturnCode::OverThreshold,
            None => ReturnCode::Ok,
        };
        let voice = match (self.cfg.voice, st.received) {
            (Some(v), n) if n > 0 => Some(voice::score(
                v.codec,
                v.model,
                st.rtt.avg() / 1e6,
                st.loss_ratio() * 100.0,
                f64::from(v.advantage),
            )),
            _ => None,
        };
        self.result = Some(OperationResult {
            return_code,
            stats: st,
            voice,
            precision: self.cfg.format.precision(),
            stamps: self.stamps,
            unexpected: self.unexpected,
            samples: self.arrivals.clone(),
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
            // a refusal during probing explains a run with no reply, not one that got replies
            cause: if matches!(return_code, ReturnCode::Ok | ReturnCode::OverThreshold) {
                None
            } else {
                self.cause.clone()
            },
            path_changed: None,
        });
        self.phase = Phase::Done;
    }

    fn handle_probe_reply(&mut self, now: Instant, rx: RxTime, bytes: &[u8]) {
        let parsed = match self.cfg.format {
            JitterFormat::IcmpTimestamp { ident } => icmp::Icmp::new_checked(bytes).ok().and_then(|p| {
                let [o, r, t] = p.timestamps().ok()?;
                let m = icmp::TIMESTAMP_MASK;
                (p.msg_type() == icmp::TIMESTAMP_REPLY && p.ident() == ident).then(|| {
                    let (r, t) = (r & m, t & m);
                    let processing = ms_diff(t, r).clamp(0, i32::from(u16::MAX)) as u16;
                    let reply = Type2Repr {
                        processing_ms: processing,
                        t1: o & m,
                        t2: r,
                        sender_seq: p.sequence(),
                        responder_seq: 0,
                    };
                    (u32::from(p.sequence()), u64::from(o & m), 0, Reply::Ms(reply))
                })
            }),
            JitterFormat::Udp(Precision::Ms) => Type2::new_checked(bytes).ok().map(|p| {
                let r = Type2Repr::parse(&p);
                (u32::from(r.sender_seq), u64::from(r.t1), r.responder_seq.into(), Reply::Ms(r))
            }),
            JitterFormat::Udp(Precision::Us) => {
                let layout = self.cfg.layout();
                Type3::new_checked(bytes, layout).ok().map(|p| {
                    let r = Type3Repr::parse(&p);
                    (r.sender_seq, r.t[0], r.responder_seq, Reply::Us(r))
                })
            }
        };
        let Some((seq, t1_wire, responder_seq, reply)) = parsed else {
            self.unexpected += 1;
            return;
        };
        let sent_count = self.sent.len() as u32;
        let Some(sent) = seq.checked_sub(1).and_then(|i| self.sent.get_mut(i as usize)) else {
            self.unexpected += 1;
            return;
        };
        if sent.t1_wire != t1_wire {
            // Not a reply to what we sent (stale operation, spoofed, or mangled): verify-data.
            self.unexpected += 1;
            return;
        }
        let duplicate = sent.answered;
        sent.answered = true;
        if duplicate && self.stored_duplicates >= sent_count {
            // beyond one stored copy per probe sent, only count: a flood of copies must cost
            // neither memory nor time in the statistics
            self.extra_duplicates += 1;
            return;
        }
        if duplicate {
            self.stored_duplicates += 1;
        }
        self.stamps.note_rx(rx.kernel);
        if !duplicate {
            self.stamps.note_tx(sent.t1_kernel.is_some());
        }
        let late = now.saturating_duration_since(sent.at) > self.cfg.timeout;
        let t1_ns = sent.t1_kernel.unwrap_or(sent.t1_wall).as_nanos() as i64;
        let t4_ns = rx.wall.as_nanos() as i64;
        let (rtt, sd, ds, t2_ns, t3_ns) = match reply {
            Reply::Ms(r) => {
                // Whole ms, as IOS computes. T1 is the kernel's transmit stamp when we have it:
                // the value written on the wire was read before the send call, and a thread
                // stalled between the two would inflate SD and RTT by the stall.
                let t1 = sent.t1_kernel.map_or(t1_wire as u32, ms_since_midnight);
                let t4 = ms_since_midnight(rx.wall);
                let p = i64::from(r.processing_ms);
                let ms = 1_000_000i64;
                // T2 on the epoch: the whole ms of T1 plus the wrapped difference, so that a
                // responder past midnight lands on the next day
                let t2_ns = t1_ns - t1_ns.rem_euclid(ms) + i64::from(ms_diff(r.t2, t1)) * ms;
                (
                    (i64::from(ms_diff(t4, t1)) - p) * ms,
                    i64::from(ms_diff(r.t2, t1)) * ms,
                    (i64::from(ms_diff(t4, r.t2)) - p) * ms,
                    t2_ns,
                    t2_ns + p * ms,
                )
            }
            Reply::Us(r) => {
                let (t2, t3) = (NtpTimestamp(r.t[1]), NtpTimestamp(r.t[2]));
                let t4 = NtpTimestamp::from_unix(rx.wall);
                // T1 from our own clock: the kernel's transmit stamp when we have it (the wire
                // copy is the earlier userspace reading, rounded to 2^-32 s).
                let t1 = NtpTimestamp::from_unix(sent.t1_kernel.unwrap_or(sent.t1_wall));
                (
                    t4.diff_nanos(t1) - t3.diff_nanos(t2),
                    t2.diff_nanos(t1),
                    t4.diff_nanos(t3),
                    t1_ns + t2.diff_nanos(t1),
                    t1_ns + t3.diff_nanos(t1),
                )
            }
        };
        let sample = Sample {
            seq,
            responder_seq,
            rtt,
            sd,
            ds,
            late,
            duplicate,
            t1: t1_ns,
            t2: Some(t2_ns),
            t3: Some(t3_ns),
            t4: t4_ns,
        };
        self.arrivals.push(sample);
        self.events.reply(sample, self.cfg.clock_sync);
    }
}

#[derive(Debug, Clone, Copy)]
enum Reply {
    Ms(Type2Repr),
    Us(Type3Repr),
}

impl Operation for JitterOp {
    fn poll_transmit(&mut self, now: Instant, wall: Duration, buf: &mut [u8]) -> Option<Transmit> {
        self.advance_control(now);
        self.events.expire(now);
        match &mut self.phase {
            Phase::Control(c) => {
                c.poll_transmit(now, wall, buf).map(|len| Transmit { peer: Peer::Control, len, seq: 0 })
            }
            Phase::Probing { start } => {
                let start = *start;
                let i = self.sent.len() as u32;
                if now < start + self.cfg.interval * i {
                    return None;
                }
                let len = self.write_probe(now, wall, buf);
                if self.sent.len() as u32 == self.cfg.packets {
                    self.phase = Phase::Draining { until: now + self.cfg.timeout };
                }
                Some(Transmit { peer: Peer::Probe, len, seq: self.sent.len() as u32 })
            }
            Phase::Draining { .. } | Phase::Done => None,
        }
    }

    fn handle_datagram(&mut self, now: Instant, from: Peer, rx: RxTime, bytes: &[u8]) {
        match (from, &mut self.phase) {
            (Peer::Control, Phase::Control(c)) => {
                c.handle_reply(bytes);
                self.advance_control(now);
            }
            (Peer::Probe, Phase::Probing { .. } | Phase::Draining { .. }) => {
                self.handle_probe_reply(now, rx, bytes);
                // Every probe answered: nothing else can arrive but duplicates, so stop waiting.
                if matches!(self.phase, Phase::Draining { .. }) && self.sent.iter().all(|s| s.answered) {
                    self.finish();
                }
            }
            _ => {}
        }
    }

    fn handle_refused(&mut self, now: Instant, to: std::net::SocketAddr) {
        match &mut self.phase {
            Phase::Control(c) => {
                c.handle_refused(to);
                self.advance_control(now);
            }
            Phase::Probing { .. } | Phase::Draining { .. } => {
                self.cause.get_or_insert(Cause::Refused { to });
            }
            Phase::Done => {}
        }
    }

    fn handle_tx_stamp(&mut self, seq: u32, wall: Duration) {
        if let Some(s) = seq.checked_sub(1).and_then(|i| self.sent.get_mut(i as usize)) {
            s.t1_kernel = Some(wall);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Control(c) => c.poll_timeout(),
            Phase::Probing { start, .. } => {
                earliest(Some(*start + self.cfg.interval * self.sent.len() as u32), self.events.next_deadline())
            }
            Phase::Draining { until } => earliest(Some(*until), self.events.next_deadline()),
            Phase::Done => None,
        }
    }

    fn next_send(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Probing { start } if self.cfg.timeout > self.cfg.interval * 2 => {
                Some(*start + self.cfg.interval * self.sent.len() as u32)
            }
            _ => None,
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.events.expire(now);
        match &mut self.phase {
            Phase::Control(c) => {
                c.handle_timeout(now);
                self.advance_control(now);
            }
            Phase::Draining { until } if now >= *until => self.finish(),
            _ => {}
        }
    }

    fn probe_port(&self) -> u16 {
        self.port
    }

    fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    fn result(&self) -> OperationResult {
        self.result
            .clone()
            .unwrap_or_else(|| OperationResult::pending(self.cfg.format.precision(), self.stamps, self.unexpected))
    }

    fn poll_event(&mut self) -> Option<ProbeEvent> {
        self.events.poll()
    }
}
