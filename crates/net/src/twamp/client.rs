//! TWAMP client driver: one measurement with TWAMP-Control (RFC 5357 §3) and its TWAMP-Test
//! session (§4).
//!
//! [`run_twamp`] binds the Session-Sender's UDP socket first (kernel timestamps, TTL 255 as
//! RFC 5357 §4.1.2 asks, the DSCP), connects to the server's control port, drives
//! [`ControlClient`] (every read and write bounded by the control timeout), requests one session
//! for that socket, starts it, runs the Session-Sender ([`StampOp`] in the TWAMP-Test format the
//! session negotiated) with the probe loop every UDP operation uses ([`run_udp`]), then sends
//! Stop-Sessions (Accept 0, Number of Sessions 1) and closes the connection.
//!
//! A control phase that fails ends the run with a Cisco return code and a reason
//! (`result.cause`, [`Cause::Control`]): no TCP connection or no answer ⇒ `NoConnection`; the server
//! refusing our authentication (Server-Start Accept ≠ 0 in a protected mode, a server HMAC that
//! does not verify) ⇒ `AuthFailure`; anything else (no common mode, a refused session) ⇒
//! `Error`.

use crate::pacer::Pacer;
use crate::probe::{Hooks, SocketOptions, connect, run_udp, udp_socket};
use ipsla_core::ops::stamp::{SenderFormat, StampConfig, StampOp, StampReplyInfo, TwampFormat};
use ipsla_core::ops::{Cause, OperationResult, Precision, ReturnCode};
use ipsla_core::stats::JitterStats;
use ipsla_core::twamp::client::{
    AcceptedSession, ClientConfig, ControlClient, Event, Failure, ReflectOctets, Secret, SessionRequest,
};
use ipsla_wire::twamp::{Accept, Modes, SecurityMode};
use socket2::SockRef;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Default time allowed for the TCP connection and for each control message.
pub const DEFAULT_CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// How one TWAMP measurement is made.
#[derive(Debug, Clone)]
pub struct TwampOptions {
    /// Security modes we accept (the strongest the server also offers wins).
    pub allowed: Modes,
    /// Identity and passphrase for the authenticated, encrypted and mixed modes.
    pub secret: Option<Secret>,
    /// Padding Length; `None` = symmetric (27 open/mixed, 64 authenticated/encrypted).
    pub padding: Option<u32>,
    /// DSCP the reflector must use (Type-P Descriptor); our own packets carry the socket's ToS.
    pub dscp: u8,
    /// RFC 6038 reflect octets.
    pub reflect: Option<ReflectOctets>,
    /// The session's Timeout: how long the reflector keeps reflecting after Stop-Sessions.
    pub session_timeout: Duration,
    /// Time allowed for the TCP connection and for each control message.
    pub control_timeout: Duration,
    /// The Session-Sender socket (and, source port aside, the control connection).
    pub sockets: SocketOptions,
    /// Session-Sender settings; the driver sets the format the session negotiated and marks the
    /// reflector stateful (RFC 5357 §4.2.1).
    pub sender: StampConfig,
}

/// What one run gave.
#[derive(Debug, Clone)]
pub struct TwampOutcome {
    /// The statistics, or the return code and cause of a failed control phase.
    pub result: OperationResult,
    /// The security mode the connection used.
    pub mode: Option<SecurityMode>,
    /// The session the server accepted.
    pub session: Option<AcceptedSession>,
    /// Reply details (Sender TTL, short replies, bad HMACs).
    pub reply_info: StampReplyInfo,
    /// The caller cancelled the test session ([`Hooks::cancelled`]): `result` is meaningless.
    pub cancelled: bool,
}

impl TwampOutcome {
    fn failed(code: ReturnCode, why: String, mode: Option<SecurityMode>) -> Self {
        tracing::debug!(return_code = ?code, reason = %why, "TWAMP control phase failed");
        TwampOutcome {
            result: OperationResult {
                cause: Some(Cause::Control { reason: why }),
                ..OperationResult::new(code, JitterStats::default(), Precision::Us)
            },
            mode,
            session: None,
            reply_info: StampReplyInfo::default(),
            cancelled: false,
        }
    }
}

/// The Cisco return code of a control failure.
pub fn failure_code(f: &Failure) -> ReturnCode {
    match f {
        Failure::SetUpRejected { protected: true, .. } | Failure::Integrity(_) => ReturnCode::AuthFailure,
        Failure::Timeout(_) => ReturnCode::NoConnection,
        Failure::ServerRefused
        | Failure::NoCommonMode { .. }
        | Failure::BadCount(_)
        | Failure::SetUpRejected { .. }
        | Failure::SessionsRejected(_)
        | Failure::StartRejected(_)
        | Failure::Protocol { .. } => ReturnCode::Error,
    }
}

/// A TWAMP-Test Session-Sender socket towards `target`: bound, kernel stamps as configured,
/// TTL / Hop Limit 255 (RFC 5357 §4.1.2 SHOULD; the reflector reports what arrived). Returns it
/// and its local address.
pub fn sender_socket(target: IpAddr, o: &SocketOptions) -> io::Result<(std::net::UdpSocket, SocketAddr)> {
    let (s, local, _) = udp_socket(target, o)?;
    let r = SockRef::from(&s);
    if target.is_ipv6() {
        r.set_unicast_hops_v6(255)?
    } else {
        r.set_ttl_v4(255)?
    }
    Ok((s, local))
}

enum Step {
    Started(Box<AcceptedSession>),
    Failed(ReturnCode, String),
}

/// Writes what the client has queued, each message within the control timeout.
async fn flush(client: &mut ControlClient, stream: &mut TcpStream, limit: Duration) -> Result<(), String> {
    while let Some(m) = client.poll_transmit() {
        match tokio::time::timeout(limit, stream.write_all(&m)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("writing to the control connection: {e}")),
            Err(_) => return Err("writing to the control connection timed out".into()),
        }
    }
    Ok(())
}

/// Drives the control phase to Start-Ack or to a failure.
async fn control_phase(client: &mut ControlClient, stream: &mut TcpStream, limit: Duration) -> Step {
    let mut buf = vec![0u8; 256];
    let mut accepted = None;
    let mut rng = rand::rng();
    // Bounded: each turn reads one message or ends; a connection has at most
    // 3 + 1 session + 1 messages before Start-Ack.
    for _ in 0..16 {
        if let Err(e) = flush(client, stream, limit).await {
            return Step::Failed(ReturnCode::NoConnection, e);
        }
        while let Some(ev) = client.poll_event() {
            match ev {
                Event::Accepted(a) => accepted = Some(a),
                Event::Rejected { accept, .. } => {
                    tracing::debug!(?accept, "TWAMP session refused");
                }
                Event::Started => {
                    return match accepted.take() {
                        Some(a) => Step::Started(Box::new(a)),
                        None => Step::Failed(ReturnCode::Error, "started without an accepted session".into()),
                    };
                }
                Event::Failed(f) => {
                    // Mode 0 / the last words of a client that gives up go out before closing.
                    let _ = flush(client, stream, limit).await;
                    return Step::Failed(failure_code(&f), f.to_string());
                }
            }
        }
        let n = client.expected_len();
        if n == 0 || n > buf.len() {
            return Step::Failed(ReturnCode::Error, "the control client expects nothing more".into());
        }
        let deadline = client.poll_timeout().unwrap_or_else(|| Instant::now() + limit);
        match tokio::time::timeout_at(deadline.into(), stream.read_exact(&mut buf[..n])).await {
            Ok(Ok(_)) => {
                client.handle_bytes(Instant::now(), crate::clock::wall_now(), &buf[..n], &mut rng);
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Step::Failed(ReturnCode::NoConnection, "the server closed the control connection".into());
            }
            Ok(Err(e)) => {
                return Step::Failed(ReturnCode::NoConnection, format!("reading the control connection: {e}"));
            }
            Err(_) => client.handle_timeout(Instant::now().max(deadline)),
        }
    }
    Step::Failed(ReturnCode::Error, "the control phase did not end".into())
}

/// One TWAMP measurement against the server at `target` (its control address, TCP 862 by
/// default). `Err` only for a local failure (the UDP socket cannot be opened); everything the
/// network or the server does ends in the outcome's return code.
/// `hooks` watch and may cancel the test session (the control phase is bounded by its timeout).
pub async fn run_twamp(target: SocketAddr, opts: &TwampOptions, hooks: Hooks<'_>) -> io::Result<TwampOutcome> {
    let (udp, local) = sender_socket(target.ip(), &opts.sockets)?;
    let tcp_opts = SocketOptions { source_port: 0, kernel_timestamps: false, ..opts.sockets.clone() };
    let mut stream = match tokio::time::timeout(opts.control_timeout, connect(target, &tcp_opts)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Ok(TwampOutcome::failed(ReturnCode::NoConnection, format!("connecting to {target}: {e}"), None));
        }
        Err(_) => {
            return Ok(TwampOutcome::failed(
                ReturnCode::NoConnection,
                format!("connecting to {target}: no answer within {:?}", opts.control_timeout),
                None,
            ));
        }
    };
    let _ = stream.set_nodelay(true);
    let mut session = SessionRequest::new(local);
    session.receiver = SocketAddr::new(target.ip(), 0);
    session.padding = opts.padding;
    session.timeout = opts.session_timeout;
    session.dscp = opts.dscp;
    session.reflect = opts.reflect;
    let cfg = ClientConfig {
        allowed: opts.allowed,
        secret: opts.secret.clone(),
        sessions: vec![session],
        io_timeout: opts.control_timeout,
    };
    let mut client = match ControlClient::new(Instant::now(), cfg) {
        Ok(c) => c,
        Err(e) => return Ok(TwampOutcome::failed(ReturnCode::Error, e.to_string(), None)),
    };
    let accepted = match control_phase(&mut client, &mut stream, opts.control_timeout).await {
        Step::Started(a) => *a,
        Step::Failed(code, why) => return Ok(TwampOutcome::failed(code, why, client.mode())),
    };
    tracing::debug!(port = accepted.port, mode = ?accepted.mode, "TWAMP session started");
    let mut sender = opts.sender.clone();
    sender.format = SenderFormat::Twamp(Box::new(TwampFormat::for_session(&accepted)));
    sender.stateful = true;
    let interval = sender.interval;
    let mut op = StampOp::new(Instant::now(), sender, accepted.port);
    // No UDP control peer: port 0 never matches a reply's source, so every reply from the
    // target is a test reply.
    let run = run_udp(&mut op, &udp, target.ip(), 0, &Pacer::for_interval(interval), hooks);
    client.stop(Accept::Ok);
    if let Err(e) = flush(&mut client, &mut stream, opts.control_timeout).await {
        tracing::debug!(error = %e, "Stop-Sessions not delivered");
    }
    let _ = tokio::time::timeout(opts.control_timeout, stream.shutdown()).await;
    Ok(TwampOutcome {
        cancelled: run.is_err(),
        result: run.unwrap_or_else(|_| ipsla_core::ops::Operation::result(&op)),
        mode: Some(accepted.mode),
        reply_info: op.reply_info(),
        session: Some(accepted),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipsla_core::twamp::client::Stage;

    #[test]
    fn sender_socket_sends_with_ttl_255() {
        let (s, local) = sender_socket("127.0.0.1".parse().unwrap(), &SocketOptions::default()).unwrap();
        assert_eq!(SockRef::from(&s).ttl_v4().unwrap(), 255);
        assert_eq!(local.ip(), "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_ne!(local.port(), 0, "bound before the request names it");
    }

    #[test]
    fn failures_map_to_return_codes() {
        let refused = Failure::SetUpRejected { accept: Accept::Failure, protected: true };
        assert_eq!(failure_code(&refused), ReturnCode::AuthFailure);
        let open_refused = Failure::SetUpRejected { accept: Accept::Failure, protected: false };
        assert_eq!(failure_code(&open_refused), ReturnCode::Error);
        assert_eq!(failure_code(&Failure::Integrity(Stage::StartAck)), ReturnCode::AuthFailure);
        assert_eq!(failure_code(&Failure::Timeout(Stage::Greeting)), ReturnCode::NoConnection);
        assert_eq!(failure_code(&Failure::SessionsRejected(Accept::NotSupported)), ReturnCode::Error);
        assert_eq!(failure_code(&Failure::ServerRefused), ReturnCode::Error);
    }
}
