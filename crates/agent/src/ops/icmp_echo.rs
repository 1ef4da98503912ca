//! icmp-echo: one ICMP echo (datagram ICMP socket, raw-socket fallback) to any host.

use super::common::pattern;
use super::{Base, Fields, Key, Kind, Operation, Ty};
use crate::config::Result;
use crate::runner::{OperationSpec, RunContext, RunError, RunOutcome, sock};
use ipsla_core::ops::control::{ControlMode, ControlOp, ControlRequest};
use ipsla_core::ops::echo::{EchoConfig, EchoFormat, EchoOp};
use ipsla_net::pacer::{DEFAULT_SPIN, Pacer};
use ipsla_net::probe::{IcmpSocket, run_icmp};
use std::net::SocketAddr;
use std::time::Instant;

pub(super) static KIND: IcmpEchoKind = IcmpEchoKind;

const KEYS: &[Key] = &[
    Key::new("request_data_size", Ty::Int, "Data bytes after the 8-byte timestamp (IOS request-data-size, default 28)"),
    Key::new("data_pattern", Ty::Text, "Data pattern, hex (IOS default abcd)"),
];

pub(super) struct IcmpEchoKind;

/// A validated icmp-echo operation.
#[derive(Debug, Clone, PartialEq)]
pub struct IcmpEcho {
    /// Data bytes after the 8-byte timestamp.
    pub size: usize,
    /// Data pattern.
    pub pattern: Vec<u8>,
}

/// The ICMP identifier of a run: the process and the run's sequence, so that two runs (or two
/// agents) on one host tell their replies apart.
pub(super) fn ident(sequence: u32) -> u16 {
    (std::process::id() as u16) ^ (sequence as u16).rotate_left(8)
}

/// The control request an ICMP operation carries: none is sent, the core takes the target from it.
pub(super) fn no_control(spec: &OperationSpec, op: ControlOp) -> ControlRequest {
    let t = SocketAddr::new(spec.addr(), 0);
    ControlRequest {
        operation: op,
        target: spec.addr(),
        port: 0,
        duration: spec.timeout,
        control_local: t,
        measurement_local: t,
        control_remote: t,
        nonce: [0; 16],
    }
}

impl Kind for IcmpEchoKind {
    fn name(&self) -> &'static str {
        "icmp-echo"
    }
    fn about(&self) -> &'static str {
        "One ICMP echo (datagram ICMP socket, raw socket fallback)"
    }
    fn example(&self) -> &'static str {
        "ipsla probe icmp-echo 192.0.2.10 --count 5 --json      (any host; one JSON document per run)"
    }
    fn keys(&self) -> &'static [&'static [Key]] {
        &[KEYS]
    }
    fn default_port(&self) -> Option<u16> {
        None
    }
    fn build(&self, f: &Fields, _base: &Base) -> Result<Box<dyn Operation>> {
        Ok(Box::new(IcmpEcho {
            size: f.range("request_data_size", 28, 0, 16_384)?,
            pattern: pattern(f, "data_pattern")?,
        }))
    }
}

impl Operation for IcmpEcho {
    fn kind(&self) -> &'static dyn Kind {
        &KIND
    }
    fn describe(&self, out: &mut Vec<(&'static str, String)>) {
        out.push(("Request size (ARR data portion)", self.size.to_string()));
        out.push(("Data pattern", hex::encode(&self.pattern)));
    }
    fn icmp(&self) -> bool {
        true
    }
    fn run(&self, spec: &OperationSpec, ctx: &RunContext<'_>) -> std::result::Result<RunOutcome, RunError> {
        let t = spec.addr();
        let sequence = ctx.sequence;
        let ident = ident(sequence);
        let s = sock("opening the ICMP socket", IcmpSocket::open(t, &spec.sockets, false))?;
        let cfg = EchoConfig {
            format: EchoFormat::Icmp { v6: t.is_ipv6(), ident, seq: sequence as u16 },
            control: ControlMode::None,
            request: no_control(spec, ControlOp::UdpEcho),
            sequence,
            size: self.size,
            pattern: self.pattern.clone(),
            timeout: spec.timeout,
            threshold: spec.threshold,
        };
        let mut op = EchoOp::new(Instant::now(), cfg);
        let result = run_icmp(&mut op, &s, t, ident, &Pacer::new(DEFAULT_SPIN), ctx.hooks)?;
        Ok(RunOutcome::without_clock(result))
    }
}
