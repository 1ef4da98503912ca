//! udp-echo and icmp-echo: one probe, RTT from our own clock (T4 − T1).
//!
//! udp-echo: control (v1 operation udp-echo), then one type-1 probe echoed unchanged; the reply
//! must equal what we sent (IOS `verify-data`): a mismatch is a verify error.
//! icmp-echo: one ICMP Echo Request whose payload is 8 bytes of sender time (IOS: an "internal
//! timestamp", reference §4.5) and `request-data-size` bytes of pattern (IOS default 28); the reply
//! must carry the same sequence and payload.

use super::control::{ControlMode, ControlPhase, ControlRequest};
use super::{
    Cause, Events, Operation, OperationResult, Peer, Precision, ProbeEvent, ReturnCode, StampSources, Transmit,
};
use crate::io::RxTime;
use crate::stats::Sample;
use ipsla_wire::cisco::probe::{self, ProbeType};
use ipsla_wire::icmp;
use std::time::{Duration, Instant};

/// What the probe is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchoFormat {
    /// IP SLA type-1 probe over UDP.
    Udp,
    /// ICMP Echo Request.
    Icmp {
        /// ICMPv6 instead of ICMPv4.
        v6: bool,
        /// Identifier (raw sockets; a datagram ICMP socket lets the kernel choose).
        ident: u16,
        /// Sequence number.
        seq: u16,
    },
}

/// An echo operation's parameters.
#[derive(Debug, Clone)]
pub struct EchoConfig {
    /// UDP or ICMP.
    pub format: EchoFormat,
    /// Control mode (IOS `control enable|disable`).
    pub control: ControlMode,
    /// What the control message asks for (operation udp-echo, duration = timeout).
    pub request: ControlRequest,
    /// Control message sequence.
    pub sequence: u32,
    /// udp-echo: probe size (IOS default 16), at least the 4-byte header. icmp-echo: data bytes
    /// after the 8-byte timestamp (IOS request-data-size, default 28).
    pub size: usize,
    /// Data pattern (IOS default `ABCD`).
    pub pattern: Vec<u8>,
    /// Timeout (IOS default 5000 ms).
    pub timeout: Duration,
    /// RTT threshold.
    pub threshold: Duration,
}

#[derive(Debug, Clone)]
enum Phase {
    Control(Box<ControlPhase>),
    Send { port: u16 },
    Wait { port: u16, deadline: Instant },
    Done,
}

/// The udp-echo state machine.
#[derive(Debug, Clone)]
pub struct EchoOp {
    cfg: EchoConfig,
    phase: Phase,
    probe: Vec<u8>,
    t1: Duration,
    t1_kernel: Option<Duration>,
    sent_at: Option<Instant>,
    sample: Option<Sample>,
    failure: Option<ReturnCode>,
    cause: Option<super::Cause>,
    unexpected: u32,
    duplicates: u32,
    stamps: StampSources,
    result: Option<OperationResult>,
    events: Events,
}

impl EchoOp {
    /// Starts at `now`.
    pub fn new(now: Instant, mut cfg: EchoConfig) -> Self {
        let p = match cfg.format {
            EchoFormat::Udp => {
                cfg.size = cfg.size.max(probe::TYPE1_HEADER_LEN);
                let mut p = vec![0u8; cfg.size];
                p[..2].copy_from_slice(&u16::from(ProbeType::Echo).to_be_bytes());
                probe::fill_pattern(&mut p[probe::TYPE1_HEADER_LEN..], &cfg.pattern);
                p
            }
            EchoFormat::Icmp { .. } => {
                // 8 bytes of timestamp are written at send time, then the pattern.
                let mut p = vec![0u8; 8 + cfg.size];
                probe::fill_pattern(&mut p[8..], &cfg.pattern);
                p
            }
        };
        let control = ControlPhase::new(now, cfg.control.clone(), cfg.request.clone(), cfg.sequence, cfg.timeout);
        EchoOp {
            cfg,
            phase: Phase::Control(Box::new(control)),
            probe: p,
            t1: Duration::ZERO,
            t1_kernel: None,
            sent_at: None,
            sample: None,
            failure: None,
            cause: None,
            unexpected: 0,
            duplicates: 0,
            stamps: StampSources::default(),
            result: None,
            events: Events::default(),
        }
    }

    fn advance_control(&mut self) {
        if let Phase::Control(c) = &self.phase {
            match c.outcome() {
                Some(Ok(port)) => self.phase = Phase::Send { port },
                Some(Err(code)) => {
                    self.failure = Some(code);
                    self.cause = c.cause();
                    self.finish();
                }
                None => {}
            }
        }
    }

    fn finish(&mut self) {
        self.events.expire_all();
        let mut r = OperationResult::single(
            self.failure,
            self.sent_at.map(|_| self.t1_kernel.unwrap_or(self.t1)),
            self.sample,
            self.duplicates,
            self.cfg.threshold,
            self.stamps,
            self.unexpected,
        );
        if self.sample.is_none() {
            r.cause = self.cause.clone();
        }
        self.result = Some(r);
        self.phase = Phase::Done;
    }
}

impl Operation for EchoOp {
    fn poll_transmit(&mut self, now: Instant, wall: Duration, buf: &mut [u8]) -> Option<Transmit> {
        self.advance_control();
        match &mut self.phase {
            Phase::Control(c) => {
                c.poll_transmit(now, wall, buf).map(|len| Transmit { peer: Peer::Control, len, seq: 0 })
            }
            Phase::Send { port } => {
                let port = *port;
                let len = match self.cfg.format {
                    EchoFormat::Udp => {
                        buf[..self.probe.len()].copy_from_slice(&self.probe);
                        self.probe.len()
                    }
                    EchoFormat::Icmp { v6, ident, seq } => {
                        self.probe[..8].copy_from_slice(&(wall.as_millis() as u64).to_be_bytes());
                        icmp::emit_echo_request(buf, v6, ident, seq, &self.probe)
                    }
                };
                self.t1 = wall;
                self.sent_at = Some(now);
                self.events.sent(1, wall, now + self.cfg.timeout);
                self.phase = Phase::Wait { port, deadline: now + self.cfg.timeout };
                Some(Transmit { peer: Peer::Probe, len, seq: 1 })
            }
            Phase::Wait { .. } | Phase::Done => None,
        }
    }

    fn handle_datagram(&mut self, _now: Instant, from: Peer, rx: RxTime, bytes: &[u8]) {
        match (from, &mut self.phase) {
            (Peer::Control, Phase::Control(c)) => {
                c.handle_reply(bytes);
                self.advance_control();
            }
            (Peer::Probe, Phase::Wait { .. }) => {
                if let Some(s) = self.sample {
                    self.duplicates += 1;
                    self.events.reply(Sample { duplicate: true, t4: rx.wall.as_nanos() as i64, ..s }, false);
                    return;
                }
                let matches = match self.cfg.format {
                    EchoFormat::Udp => bytes == self.probe.as_slice(),
                    EchoFormat::Icmp { seq, .. } => match icmp::Icmp::new_checked(bytes) {
                        Ok(p) if matches!(p.msg_type(), icmp::ECHO_REPLY_V4 | icmp::ECHO_REPLY_V6) => {
                            if p.sequence() != seq {
                                // another operation's reply (datagram sockets share nothing, raw
                                // sockets see everything): not ours
                                return;
                            }
                            p.payload() == self.probe.as_slice()
                        }
                        _ => return,
                    },
                };
                if !matches {
                    self.unexpected += 1;
                    self.failure = Some(ReturnCode::VerifyError);
                    return;
                }
                self.stamps.note_rx(rx.kernel);
                self.stamps.note_tx(self.t1_kernel.is_some());
                let t1 = self.t1_kernel.unwrap_or(self.t1);
                let rtt = rx.wall.as_nanos() as i64 - t1.as_nanos() as i64;
                self.failure = None;
                let sample = Sample {
                    seq: 1,
                    rtt,
                    t1: t1.as_nanos() as i64,
                    t4: rx.wall.as_nanos() as i64,
                    ..Sample::default()
                };
                self.sample = Some(sample);
                self.events.reply(sample, false);
                self.finish();
            }
            _ => {}
        }
    }

    fn handle_refused(&mut self, _now: Instant, to: std::net::SocketAddr) {
        match &mut self.phase {
            Phase::Control(c) => {
                c.handle_refused(to);
                self.advance_control();
            }
            // one probe, refused: no reply can come
            Phase::Wait { .. } => {
                self.cause = Some(Cause::Refused { to });
                self.finish();
            }
            Phase::Send { .. } | Phase::Done => {}
        }
    }

    fn handle_tx_stamp(&mut self, seq: u32, wall: Duration) {
        if seq == 1 {
            self.t1_kernel = Some(wall);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Control(c) => c.poll_timeout(),
            Phase::Send { .. } => None,
            Phase::Wait { deadline, .. } => Some(*deadline),
            Phase::Done => None,
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        match &mut self.phase {
            Phase::Control(c) => {
                c.handle_timeout(now);
                self.advance_control();
            }
            Phase::Wait { deadline, .. } if now >= *deadline => self.finish(),
            _ => {}
        }
    }

    fn probe_port(&self) -> u16 {
        match &self.phase {
            Phase::Send { port } | Phase::Wait { port, .. } => *port,
            _ => self.cfg.request.port,
        }
    }

    fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    fn result(&self) -> OperationResult {
        self.result.clone().unwrap_or_else(|| OperationResult::pending(Precision::Us, self.stamps, self.unexpected))
    }

    fn poll_event(&mut self) -> Option<ProbeEvent> {
        self.events.poll()
    }
}
