//! tcp-connect: control (v1 operation tcp-connect) or none, then one TCP handshake; RTT is the
//! time the handshake took, from the connect call to its completion (IP SLA's definition).

use super::control::{ControlMode, ControlPhase, ControlRequest};
use super::{Events, Operation, OperationResult, Peer, Precision, ProbeEvent, ReturnCode, StampSources, Transmit};
use crate::io::RxTime;
use crate::stats::Sample;
use std::time::{Duration, Instant};

/// A tcp-connect operation's parameters.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// Control mode (IOS `control enable|disable`).
    pub control: ControlMode,
    /// What the control message asks for (operation tcp-connect, duration = timeout).
    pub request: ControlRequest,
    /// Control message sequence.
    pub sequence: u32,
    /// Timeout (IOS default 5000 ms... for the whole operation).
    pub timeout: Duration,
    /// RTT threshold.
    pub threshold: Duration,
}

#[derive(Debug, Clone)]
enum Phase {
    Control(Box<ControlPhase>),
    Connect,
    Wait { deadline: Instant, t1: Duration },
    Done,
}

/// The tcp-connect state machine.
#[derive(Debug, Clone)]
pub struct TcpConnectOp {
    cfg: TcpConfig,
    phase: Phase,
    port: u16,
    /// When the connect was asked for (T1).
    sent: Option<Duration>,
    sample: Option<Sample>,
    failure: Option<ReturnCode>,
    cause: Option<super::Cause>,
    stamps: StampSources,
    result: Option<OperationResult>,
    events: Events,
}

impl TcpConnectOp {
    /// Starts at `now`.
    pub fn new(now: Instant, cfg: TcpConfig) -> Self {
        let control = ControlPhase::new(now, cfg.control.clone(), cfg.request.clone(), cfg.sequence, cfg.timeout);
        TcpConnectOp {
            port: cfg.request.port,
            cfg,
            phase: Phase::Control(Box::new(control)),
            sent: None,
            sample: None,
            failure: None,
            cause: None,
            stamps: StampSources::default(),
            result: None,
            events: Events::default(),
        }
    }

    fn advance_control(&mut self) {
        if let Phase::Control(c) = &self.phase {
            match c.outcome() {
                Some(Ok(port)) => {
                    self.port = port;
                    self.phase = Phase::Connect;
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

    fn finish(&mut self) {
        self.events.expire_all();
        let mut r =
            OperationResult::single(self.failure, self.sent, self.sample, 0, self.cfg.threshold, self.stamps, 0);
        r.cause = self.cause.clone();
        self.result = Some(r);
        self.phase = Phase::Done;
    }
}

impl Operation for TcpConnectOp {
    fn handle_refused(&mut self, _now: Instant, to: std::net::SocketAddr) {
        match &mut self.phase {
            Phase::Control(c) => {
                c.handle_refused(to);
                self.advance_control();
            }
            // the handshake was answered with a reset; handle_connected(false) follows
            Phase::Wait { .. } => self.cause = Some(super::Cause::ConnectRefused { to }),
            Phase::Connect | Phase::Done => {}
        }
    }

    fn poll_transmit(&mut self, now: Instant, wall: Duration, buf: &mut [u8]) -> Option<Transmit> {
        self.advance_control();
        match &mut self.phase {
            Phase::Control(c) => {
                c.poll_transmit(now, wall, buf).map(|len| Transmit { peer: Peer::Control, len, seq: 0 })
            }
            Phase::Connect => {
                self.sent = Some(wall);
                self.phase = Phase::Wait { deadline: now + self.cfg.timeout, t1: wall };
                self.events.sent(1, wall, now + self.cfg.timeout);
                Some(Transmit { peer: Peer::Connect, len: 0, seq: 0 })
            }
            Phase::Wait { .. } | Phase::Done => None,
        }
    }

    fn handle_datagram(&mut self, _now: Instant, from: Peer, _rx: RxTime, bytes: &[u8]) {
        if let (Peer::Control, Phase::Control(c)) = (from, &mut self.phase) {
            c.handle_reply(bytes);
            self.advance_control();
        }
    }

    fn handle_connected(&mut self, _now: Instant, rx: RxTime, ok: bool) {
        let Phase::Wait { t1, .. } = self.phase else { return };
        if ok {
            let rtt = rx.wall.as_nanos() as i64 - t1.as_nanos() as i64;
            self.stamps.note_rx(false);
            let sample =
                Sample { seq: 1, rtt, t1: t1.as_nanos() as i64, t4: rx.wall.as_nanos() as i64, ..Sample::default() };
            self.sample = Some(sample);
            self.events.reply(sample, false);
        } else {
            // Refused or unreachable: IOS reports "No connection".
            self.failure = Some(ReturnCode::NoConnection);
        }
        self.finish();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Control(c) => c.poll_timeout(),
            Phase::Wait { deadline, .. } => Some(*deadline),
            Phase::Connect | Phase::Done => None,
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
        self.port
    }

    fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    fn result(&self) -> OperationResult {
        self.result.clone().unwrap_or_else(|| OperationResult::pending(Precision::Us, self.stamps, 0))
    }

    fn poll_event(&mut self) -> Option<ProbeEvent> {
        self.events.poll()
    }
}
