//! One operation, fully specified and validated ([`OperationSpec`]), and how to run it once
//! ([`run`]): sockets from `ipsla-net`, state machine from `ipsla-core`. `ipsla probe` builds a
//! spec from its flags, the agent from its configuration file.

use ipsla_core::ops::control::{ControlMode, ControlOp, ControlRequest};
use ipsla_core::ops::echo::{EchoConfig, EchoFormat, EchoOp};
use ipsla_core::ops::jitter::{JitterConfig, JitterFormat, JitterOp};
use ipsla_core::ops::stamp::{SenderFormat, StampConfig, StampFormat, StampOp, TlvRequest, TwampFormat};
use ipsla_core::ops::tcp::{TcpConfig, TcpConnectOp};
use ipsla_core::ops::{OperationResult, Precision, VoiceConfig};
use ipsla_core::twamp::client::{DEFAULT_SESSION_TIMEOUT, Secret};
use ipsla_net::clock::kernel_clock_state;
use ipsla_net::pacer::{DEFAULT_SPIN, Pacer};
use ipsla_net::probe::{IcmpSocket, SocketOptions, run_icmp, run_tcp, run_udp, udp_socket};
use ipsla_net::twamp::client::{TwampOptions, run_twamp, sender_socket};
use ipsla_wire::time::ErrorEstimate;
use ipsla_wire::twamp::SecurityMode;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// What an operation sends.
#[derive(Debug, Clone, PartialEq)]
pub enum OpKind {
    /// udp-jitter (types 2/3), optionally with a codec.
    UdpJitter {
        /// Probes per run.
        packets: u32,
        /// Interval between probes.
        interval: Duration,
        /// Probe size.
        size: usize,
        /// ms or µs.
        precision: Precision,
        /// Codec and score model.
        voice: Option<VoiceConfig>,
        /// Data pattern.
        pattern: Vec<u8>,
    },
    /// udp-echo (type 1).
    UdpEcho {
        /// Probe size.
        size: usize,
        /// Data pattern.
        pattern: Vec<u8>,
    },
    /// tcp-connect.
    TcpConnect,
    /// icmp-echo.
    IcmpEcho {
        /// Data bytes after the 8-byte timestamp.
        size: usize,
        /// Data pattern.
        pattern: Vec<u8>,
    },
    /// STAMP Session-Sender (RFC 8762 / RFC 8972) towards a STAMP reflector.
    Stamp {
        /// Packets per run.
        packets: u32,
        /// Interval.
        interval: Duration,
        /// SSID (RFC 8972), non-zero.
        ssid: u16,
        /// Authenticated mode with this HMAC key.
        key: Option<Vec<u8>>,
        /// TLVs in every packet.
        tlvs: Vec<TlvRequest>,
    },
    /// TWAMP (RFC 5357): TWAMP-Control to the server at the operation's port, then one
    /// TWAMP-Test session from a Session-Sender with udp-jitter's statistics.
    Twamp {
        /// Test packets per run.
        packets: u32,
        /// Interval.
        interval: Duration,
        /// The one security mode asked for.
        mode: SecurityMode,
        /// Identity and passphrase for the authenticated, encrypted and mixed modes.
        secret: Option<Secret>,
        /// Padding Length; `None` = symmetric (27 open/mixed, 64 authenticated/encrypted).
        padding: Option<u32>,
    },
    /// TWAMP-Light (RFC 5357 Appendix I): TWAMP-Test packets to a reflector port, no control.
    TwampLight {
        /// Test packets per run.
        packets: u32,
        /// Interval.
        interval: Duration,
        /// Octets of padding (27 = 41-octet packets both ways).
        padding: u32,
        /// The reflector numbers its replies itself (loss splits SD/DS from the first reply).
        stateful: bool,
    },
    /// icmp-jitter (ICMP Timestamp).
    IcmpJitter {
        /// Requests per run.
        packets: u32,
        /// Interval.
        interval: Duration,
    },
}

impl OpKind {
    /// The IOS operation name.
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::UdpJitter { .. } => "udp-jitter",
            OpKind::UdpEcho { .. } => "udp-echo",
            OpKind::TcpConnect => "tcp-connect",
            OpKind::IcmpEcho { .. } => "icmp-echo",
            OpKind::IcmpJitter { .. } => "icmp-jitter",
            OpKind::Stamp { .. } => "stamp",
            OpKind::Twamp { .. } => "twamp",
            OpKind::TwampLight { .. } => "twamp-light",
        }
    }
    /// Probes one run sends and the schedule it takes, for the jitter operations.
    pub fn schedule(&self) -> Option<(u32, Duration)> {
        match self {
            OpKind::UdpJitter { packets, interval, .. }
            | OpKind::IcmpJitter { packets, interval }
            | OpKind::Stamp { packets, interval, .. }
            | OpKind::Twamp { packets, interval, .. }
            | OpKind::TwampLight { packets, interval, .. } => Some((*packets, *interval * *packets)),
            _ => None,
        }
    }
    /// True for the operations with jitter statistics (udp-jitter, icmp-jitter, stamp, twamp,
    /// twamp-light): the reactions and stored columns that need them apply.
    pub fn is_jitter(&self) -> bool {
        self.schedule().is_some()
    }
}

/// How one-way delays may be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockSyncMode {
    /// Not synchronised: one-way delay unavailable.
    None,
    /// Kernel NTP discipline state within the tolerance.
    Ntp,
    /// Same check for a PTP-disciplined clock.
    Ptp,
    /// Declared synchronised.
    Assume,
}

/// Clock tolerance (IOS `clock-tolerance ntp oneway absolute|percent`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tolerance {
    /// Absolute, µs.
    AbsUs(i64),
    /// Percent of the measured one-way delay.
    Percent(f64),
}

/// The result of the clock check of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ClockCheck {
    /// none | ntp | ptp | assume
    #[serde(deserialize_with = "crate::report::word")]
    pub mode: crate::report::Word,
    /// sync | out_of_sync | not_checked
    #[serde(deserialize_with = "crate::report::word")]
    pub state: crate::report::Word,
    /// Kernel's estimated error, µs.
    pub est_error_us: Option<i64>,
}

/// A validated operation.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationSpec {
    /// What it sends.
    pub kind: OpKind,
    /// Target address.
    pub target: IpAddr,
    /// Measurement port (UDP/TCP operations).
    pub port: u16,
    /// Socket options.
    pub sockets: SocketOptions,
    /// Timeout.
    pub timeout: Duration,
    /// RTT threshold.
    pub threshold: Duration,
    /// Control mode.
    pub control: ControlMode,
    /// Responder control port.
    pub control_port: u16,
    /// Clock synchronisation mode and tolerance.
    pub clock_sync: (ClockSyncMode, Tolerance),
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A socket could not be opened or configured.
    #[error("{what}: {source}")]
    Socket {
        /// Which socket.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// One finished run.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The operation's result.
    pub result: OperationResult,
    /// The clock check made before it.
    pub clock: ClockCheck,
    /// Why a control phase failed, in words (TWAMP: refused mode, wrong secret, ...), for the
    /// operator; the return code says it to programs.
    pub failure: Option<String>,
}

impl OperationSpec {
    /// `target:port` for UDP/TCP operations, the address for ICMP ones.
    pub fn target_label(&self) -> String {
        match self.kind {
            OpKind::IcmpEcho { .. } | OpKind::IcmpJitter { .. } => self.target.to_string(),
            _ => SocketAddr::new(self.target, self.port).to_string(),
        }
    }

    /// `v1`, `v2`, `twamp` (TWAMP-Control) or `none`.
    pub fn control_label(&self) -> &'static str {
        if matches!(self.kind, OpKind::Twamp { .. }) {
            return "twamp";
        }
        match self.control {
            ControlMode::None => "none",
            ControlMode::V1 => "v1",
            ControlMode::V2(_) => "v2",
        }
    }

    fn request(&self, op: ControlOp, duration: Duration, local: SocketAddr) -> ControlRequest {
        ControlRequest {
            operation: op,
            target: self.target,
            port: self.port,
            duration,
            control_local: local,
            measurement_local: local,
            control_remote: SocketAddr::new(self.target, self.control_port),
            nonce: rand::random(),
        }
    }
}

/// Decides, before a run, whether one-way delays may be reported, as IOS does with its NTP state.
pub fn clock_check(mode: ClockSyncMode, tol: Tolerance) -> (bool, ClockCheck) {
    match mode {
        ClockSyncMode::None => (false, ClockCheck { mode: "none", state: "not_checked", est_error_us: None }),
        ClockSyncMode::Assume => (true, ClockCheck { mode: "assume", state: "sync", est_error_us: None }),
        ClockSyncMode::Ntp | ClockSyncMode::Ptp => {
            let name = if mode == ClockSyncMode::Ntp { "ntp" } else { "ptp" };
            let k = kernel_clock_state();
            let ok = match (k, tol) {
                // Our own estimated error counts twice: we cannot see the responder's, and IOS
                // compares the sum of both ends' offsets with the tolerance.
                (Some(k), Tolerance::AbsUs(t)) => k.synchronised && 2 * k.est_error_us <= t,
                (Some(k), Tolerance::Percent(_)) => k.synchronised,
                (None, _) => false,
            };
            (
                ok,
                ClockCheck {
                    mode: name,
                    state: if ok { "sync" } else { "out_of_sync" },
                    est_error_us: k.map(|k| k.est_error_us),
                },
            )
        }
    }
}

/// Drops one-way delays that fail a percentage tolerance (known only after the run).
fn apply_percent_tolerance(r: &mut OperationResult, tol: Tolerance, cs: &mut ClockCheck) {
    let (Tolerance::Percent(pct), Some(est)) = (tol, cs.est_error_us) else { return };
    let Some(sd) = r.stats.one_way_sd else { return };
    if (2 * est) as f64 > sd.avg() / 1000.0 * pct / 100.0 {
        r.stats.one_way_sd = None;
        r.stats.one_way_ds = None;
        r.stats.one_way_pct = None;
        cs.state = "out_of_sync";
    }
}

fn sock<T>(what: &'static str, r: std::io::Result<T>) -> Result<T, RunError> {
    r.map_err(|source| RunError::Socket { what, source })
}

/// Runs `spec` once with control sequence `sequence`, on the calling thread (tcp-connect and
/// twamp use `rt` for their TCP connections).
pub fn run(spec: &OperationSpec, sequence: u32, rt: &tokio::runtime::Runtime) -> Result<RunOutcome, RunError> {
    let (sync, mut clock) = clock_check(spec.clock_sync.0, spec.clock_sync.1);
    let now = Instant::now();
    let t = spec.target;
    let ident = (std::process::id() as u16) ^ (sequence as u16).rotate_left(8);
    let mut failure = None;
    let sender = |packets: u32, interval: Duration, format: SenderFormat, stateful: bool| StampConfig {
        packets,
        interval,
        timeout: spec.timeout,
        threshold: spec.threshold,
        clock_sync: sync,
        format,
        error_estimate: host_error_estimate(),
        stateful,
    };
    let mut result = match &spec.kind {
        OpKind::UdpJitter { packets, interval, size, precision, voice, pattern } => {
            let (s, local, _) = sock("opening the probe socket", udp_socket(t, &spec.sockets))?;
            let duration = JitterConfig::control_duration(spec.timeout, *packets, *interval);
            let cfg = JitterConfig {
                control: spec.control.clone(),
                request: spec.request(ControlOp::UdpJitter, duration, local),
                sequence,
                packets: *packets,
                interval: *interval,
                size: *size,
                format: JitterFormat::Udp(*precision),
                timeout: spec.timeout,
                threshold: spec.threshold,
                clock_sync: sync,
                voice: *voice,
                pattern: pattern.clone(),
            };
            run_udp(&mut JitterOp::new(now, cfg), &s, t, spec.control_port, &Pacer::for_interval(*interval))
        }
        OpKind::UdpEcho { size, pattern } => {
            let (s, local, _) = sock("opening the probe socket", udp_socket(t, &spec.sockets))?;
            let cfg = EchoConfig {
                format: EchoFormat::Udp,
                control: spec.control.clone(),
                request: spec.request(ControlOp::UdpEcho, spec.timeout, local),
                sequence,
                size: *size,
                pattern: pattern.clone(),
                timeout: spec.timeout,
                threshold: spec.threshold,
            };
            run_udp(&mut EchoOp::new(now, cfg), &s, t, spec.control_port, &Pacer::new(DEFAULT_SPIN))
        }
        OpKind::TcpConnect => {
            let ctl_opts = SocketOptions { source_port: 0, ..spec.sockets.clone() };
            let (s, local, _) = sock("opening the control socket", udp_socket(t, &ctl_opts))?;
            let cfg = TcpConfig {
                control: spec.control.clone(),
                request: spec.request(ControlOp::TcpConnect, spec.timeout, local),
                sequence,
                timeout: spec.timeout,
                threshold: spec.threshold,
            };
            let mut op = TcpConnectOp::new(now, cfg);
            rt.block_on(run_tcp(&mut op, s, t, spec.control_port, &spec.sockets))
        }
        OpKind::IcmpEcho { size, pattern } => {
            let s = sock("opening the ICMP socket", IcmpSocket::open(t, &spec.sockets, false))?;
            let cfg = EchoConfig {
                format: EchoFormat::Icmp { v6: t.is_ipv6(), ident, seq: sequence as u16 },
                control: ControlMode::None,
                request: spec.request(ControlOp::UdpEcho, spec.timeout, SocketAddr::new(t, 0)),
                sequence,
                size: *size,
                pattern: pattern.clone(),
                timeout: spec.timeout,
                threshold: spec.threshold,
            };
            run_icmp(&mut EchoOp::new(now, cfg), &s, t, ident, &Pacer::new(DEFAULT_SPIN))
        }
        OpKind::Stamp { packets, interval, ssid, key, tlvs } => {
            let (s, _, _) = sock("opening the probe socket", udp_socket(t, &spec.sockets))?;
            let format = SenderFormat::Stamp(StampFormat { ssid: *ssid, key: key.clone(), tlvs: tlvs.clone() });
            let cfg = sender(*packets, *interval, format, false);
            // No control phase: port 0 never matches a reply's source, so every reply is a probe reply.
            run_udp(&mut StampOp::new(now, cfg, spec.port), &s, t, 0, &Pacer::for_interval(*interval))
        }
        OpKind::TwampLight { packets, interval, padding, stateful } => {
            let (s, _) = sock("opening the probe socket", sender_socket(t, &spec.sockets))?;
            let format = SenderFormat::Twamp(Box::new(TwampFormat::light(*padding as usize)));
            let cfg = sender(*packets, *interval, format, *stateful);
            run_udp(&mut StampOp::new(now, cfg, spec.port), &s, t, 0, &Pacer::for_interval(*interval))
        }
        OpKind::Twamp { packets, interval, mode, secret, padding } => {
            let opts = TwampOptions {
                allowed: mode.bit(),
                secret: secret.clone(),
                padding: *padding,
                dscp: spec.sockets.tos.map_or(0, |tos| tos >> 2),
                reflect: None,
                session_timeout: DEFAULT_SESSION_TIMEOUT,
                control_timeout: spec.timeout,
                sockets: spec.sockets.clone(),
                // the driver sets the format the session negotiates
                sender: sender(*packets, *interval, SenderFormat::Twamp(Box::new(TwampFormat::light(0))), true),
            };
            let out = sock(
                "opening the Session-Sender socket",
                rt.block_on(run_twamp(SocketAddr::new(t, spec.port), &opts)),
            )?;
            failure = out.failure;
            out.result
        }
        OpKind::IcmpJitter { packets, interval } => {
            let s = sock("opening the ICMP socket", IcmpSocket::open(t, &spec.sockets, true))?;
            let cfg = JitterConfig {
                control: ControlMode::None,
                request: spec.request(ControlOp::UdpJitter, spec.timeout, SocketAddr::new(t, 0)),
                sequence,
                packets: *packets,
                interval: *interval,
                size: 0,
                format: JitterFormat::IcmpTimestamp { ident },
                timeout: spec.timeout,
                threshold: spec.threshold,
                clock_sync: sync,
                voice: None,
                pattern: Vec::new(),
            };
            run_icmp(&mut JitterOp::new(now, cfg), &s, t, ident, &Pacer::for_interval(*interval))
        }
    };
    apply_percent_tolerance(&mut result, spec.clock_sync.1, &mut clock);
    Ok(RunOutcome { result, clock, failure })
}

/// This host's clock as an Error Estimate (RFC 4656 §4.1.2): the kernel's estimated error when
/// it says it is synchronised (S bit set), its maximum error otherwise.
fn host_error_estimate() -> ErrorEstimate {
    match ipsla_net::clock::kernel_clock_state() {
        Some(c) if c.synchronised => ErrorEstimate::from_precision_ns(c.est_error_us.max(1) as u64 * 1000, true),
        Some(c) => ErrorEstimate::from_precision_ns(c.max_error_us.max(1) as u64 * 1000, false),
        None => ErrorEstimate::UNSYNCED_DEFAULT,
    }
}
