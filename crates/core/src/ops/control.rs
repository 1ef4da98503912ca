//! The control phase a source runs before probing: v1 (what IOS sends to 1967), RFC 6812 v2
//! (1167, optionally authenticated), or none.
//!
//! v1 (reference §6): a 52-byte request, the one-byte sequence increasing per control message and
//! kept on retries; a reply is accepted when version, sequence and bytes 4–7 (= 0) match.
//! v2: header sequence kept on retries, the reply's digest is checked when authenticating, and the
//! header / CSLD status codes map to return codes.

use super::{Cause, ReturnCode};
use ipsla_wire::cisco::control_v1::{self, ControlV1, ControlV1Repr, MeasurementRepr};
use ipsla_wire::cisco::control_v2::{AuthMode, AuthRepr, ControlV2, ControlV2Repr, Status, UdpMeasurementRepr};
use ipsla_wire::time::NtpTimestamp;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

pub use control_v1::Operation as ControlOp;

/// RFC 6812 authentication settings of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Auth {
    /// Mode 1 (SHA-256) or 2 (HMAC-SHA-256).
    pub mode: AuthMode,
    /// Key id.
    pub key_id: u16,
    /// Shared secret.
    pub secret: Vec<u8>,
}

/// How the control phase is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlMode {
    /// No control: the target answers on a permanent port (IOS `control disable`).
    None,
    /// Legacy v1 (IOS, UDP 1967).
    V1,
    /// RFC 6812 v2 (UDP 1167), with optional authentication.
    V2(Option<V2Auth>),
}

/// What the control message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlRequest {
    /// Operation (udp-echo, tcp-connect, udp-jitter).
    pub operation: ControlOp,
    /// The responder's address for the measurement.
    pub target: IpAddr,
    /// Port to open (v2: 0 lets the responder choose).
    pub port: u16,
    /// How long the responder keeps it open.
    pub duration: Duration,
    /// Our control socket address (v2 control source).
    pub control_local: SocketAddr,
    /// Our measurement socket address (v2 measurement source).
    pub measurement_local: SocketAddr,
    /// The responder's control address (v2 control destination).
    pub control_remote: SocketAddr,
    /// Random number for the v2 authentication CSLD (the driver supplies it).
    pub nonce: [u8; 16],
}

/// Control retries: IOS's count is not documented (reference open question 11).
pub const CONTROL_ATTEMPTS: u32 = 3;

/// The control phase state machine.
#[derive(Debug, Clone)]
pub struct ControlPhase {
    mode: ControlMode,
    req: ControlRequest,
    sequence: u32,
    attempts: u32,
    retry: Duration,
    next_send: Instant,
    deadline: Instant,
    timeout: Duration,
    outcome: Option<Result<u16, ReturnCode>>,
    cause: Option<Cause>,
    /// v2 send timestamp, fixed at the first attempt: a retry must be the same message so that
    /// the responder can tell it from a replay.
    timestamp: Option<NtpTimestamp>,
}

impl ControlPhase {
    /// Starts a control phase at `now` that gives up after `timeout`. `sequence` is the message
    /// sequence (v1 uses its low byte).
    pub fn new(now: Instant, mode: ControlMode, req: ControlRequest, sequence: u32, timeout: Duration) -> Self {
        let outcome = (mode == ControlMode::None).then_some(Ok(req.port));
        let retry = (timeout / CONTROL_ATTEMPTS).max(Duration::from_millis(1));
        ControlPhase {
            mode,
            req,
            sequence,
            attempts: 0,
            retry,
            next_send: now,
            deadline: now + timeout,
            timeout,
            outcome,
            cause: None,
            timestamp: None,
        }
    }

    /// `Some(Ok(port))` once the responder accepted (the port it opened), `Some(Err(code))` on
    /// failure, `None` while pending.
    pub fn outcome(&self) -> Option<Result<u16, ReturnCode>> {
        self.outcome
    }

    /// Why the phase failed, once it has.
    pub fn cause(&self) -> Option<Cause> {
        self.cause.clone()
    }

    fn fail(&mut self, code: ReturnCode, cause: Cause) {
        self.outcome = Some(Err(code));
        self.cause = Some(cause);
    }

    /// The kernel reported a control message to `to` refused (ICMP port unreachable): nothing listens on
    /// the control port, so no retry can succeed; "No connection" now rather than at the deadline.
    pub fn handle_refused(&mut self, to: SocketAddr) {
        if self.outcome.is_none() && self.attempts > 0 {
            self.fail(ReturnCode::NoConnection, Cause::Refused { to });
        }
    }

    /// Writes the next control message into `buf` when one is due.
    pub fn poll_transmit(&mut self, now: Instant, wall: Duration, buf: &mut [u8]) -> Option<usize> {
        if self.outcome.is_some() || now < self.next_send || self.attempts >= CONTROL_ATTEMPTS || now >= self.deadline {
            return None;
        }
        self.attempts += 1;
        self.next_send = now + self.retry;
        match &self.mode {
            ControlMode::None => None,
            ControlMode::V1 => {
                let r = ControlV1Repr::request(
                    self.sequence as u8,
                    MeasurementRepr {
                        operation: self.req.operation,
                        reserved: 0,
                        target: self.req.target,
                        port: self.req.port,
                        duration_ms: self.req.duration.as_millis().min(u128::from(u32::MAX)) as u32,
                    },
                );
                let len = r.buffer_len();
                r.emit(&mut buf[..len]);
                Some(len)
            }
            ControlMode::V2(auth) => {
                let (mode, key_id) = auth.as_ref().map_or((AuthMode::None, 0), |a| (a.mode, a.key_id));
                let timestamp = *self.timestamp.get_or_insert(NtpTimestamp::from_unix(wall));
                let r = ControlV2Repr {
                    status: Status::Success,
                    sequence: self.sequence,
                    timestamp,
                    auth: AuthRepr { status: Status::Success, mode, key_id, long: Some((self.req.nonce, [0; 32])) },
                    measurement: Some(UdpMeasurementRepr {
                        status: Status::Success,
                        // RFC 6812's Roles registry: 1 = sender (its CSLD table is inconsistent, D15).
                        role: 1,
                        session_id: 0,
                        control_src: self.req.control_local.ip(),
                        control_dst: self.req.control_remote.ip(),
                        meas_src: self.req.measurement_local.ip(),
                        meas_dst: self.req.target,
                        control_src_port: self.req.control_local.port(),
                        meas_src_port: self.req.measurement_local.port(),
                        meas_dst_port: self.req.port,
                        duration_ms: self.req.duration.as_millis().min(u128::from(u32::MAX)) as u32,
                    }),
                };
                let len = r.buffer_len();
                r.emit(&mut buf[..len]);
                if let (Some(a), Ok(mut v)) = (auth, ControlV2::new_checked(&mut buf[..len])) {
                    v.sign(a.mode, &a.secret);
                }
                Some(len)
            }
        }
    }

    /// A datagram from the control peer. Replies that do not match are ignored.
    pub fn handle_reply(&mut self, bytes: &[u8]) {
        if self.outcome.is_some() {
            return;
        }
        match &self.mode {
            ControlMode::None => {}
            ControlMode::V1 => {
                let Ok(v) = ControlV1::new_checked(bytes) else {
                    return;
                };
                if v.sequence() != self.sequence as u8 {
                    return;
                }
                // Bytes 4–7 are 0 in every captured reply; a non-zero value is the only error
                // signal v1 could carry.
                if v.status() == 0 {
                    self.outcome = Some(Ok(self.req.port));
                } else {
                    self.fail(ReturnCode::Error, Cause::ControlRejected { to: self.req.control_remote });
                }
            }
            ControlMode::V2(auth) => {
                let Ok(v) = ControlV2::new_checked(bytes) else {
                    return;
                };
                if v.sequence() != self.sequence {
                    return;
                }
                let repr = ControlV2Repr::parse(&v);
                if let Some(a) = auth {
                    // Our nonce must come back (a recorded reply to an earlier request with the same
                    // sequence does not count), and the digest must verify.
                    let nonce_ok = repr.as_ref().is_ok_and(|r| r.auth.long.is_some_and(|(n, _)| n == self.req.nonce));
                    if !nonce_ok {
                        return;
                    }
                    if !v.verify(a.mode, &a.secret) {
                        // The responder refused our key (it does not sign then) or a forger answered.
                        self.fail(ReturnCode::AuthFailure, Cause::ControlRejected { to: self.req.control_remote });
                        return;
                    }
                }
                let udp_status = repr.as_ref().ok().and_then(|r| r.measurement).map(|m| m.status);
                let outcome = match (Status::from(v.status()), udp_status) {
                    (Status::Success, Some(Status::Success)) => {
                        let port = repr.ok().and_then(|r| r.measurement).map_or(self.req.port, |m| m.meas_dst_port);
                        if port == 0 { Err(ReturnCode::FormatError) } else { Ok(port) }
                    }
                    (_, Some(Status::PortInUse)) => Err(ReturnCode::PortInUse),
                    (Status::AuthFailure, _) => Err(ReturnCode::AuthFailure),
                    (Status::FormatError, _) => Err(ReturnCode::FormatError),
                    _ => Err(ReturnCode::Error),
                };
                if outcome.is_err() {
                    self.cause = Some(Cause::ControlRejected { to: self.req.control_remote });
                }
                self.outcome = Some(outcome);
            }
        }
    }

    /// Next time something is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.outcome.is_some() {
            return None;
        }
        if self.attempts < CONTROL_ATTEMPTS { Some(self.next_send.min(self.deadline)) } else { Some(self.deadline) }
    }

    /// Gives up at the deadline: "No connection", as IOS reports an unanswered control phase.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.outcome.is_none() && now >= self.deadline {
            let waited_ms = self.timeout.as_millis().min(u128::from(u64::MAX)) as u64;
            let cause = Cause::ControlUnanswered { to: self.req.control_remote, requests: self.attempts, waited_ms };
            self.fail(ReturnCode::NoConnection, cause);
        }
    }
}
