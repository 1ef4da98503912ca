//! udp-echo (IP SLA probe type 1): one UDP echo to an IP SLA responder after a control phase,
//! or to a standard echo service with `control = "none"`.

use super::common::{IPSLA_CONTROL, IpSlaControl, pattern};
use super::{Base, Fields, Key, Kind, Operation, Ty};
use crate::config::Result;
use crate::runner::{OperationSpec, RunContext, RunError, RunOutcome, sock};
use ipsla_core::ops::control::ControlOp;
use ipsla_core::ops::echo::{EchoConfig, EchoFormat, EchoOp};
use ipsla_net::pacer::{DEFAULT_SPIN, Pacer};
use ipsla_net::probe::{run_udp, udp_socket};
use std::time::Instant;

/// `port`: what listens there depends on the kind, so each kind says it (`--port` help).
const PORT: &[Key] = &[Key::new(
    "port",
    Ty::Int,
    "Port the probe goes to: the control message asks an IP SLA responder to open it (default 16384); with --control none, a permanent udp-echo port or any UDP echo service (7)",
)];

pub(super) static KIND: UdpEchoKind = UdpEchoKind;

const KEYS: &[Key] = &[
    Key::new("request_data_size", Ty::Int, "Probe size in bytes (IOS default 16; 4-16384)"),
    Key::new("data_pattern", Ty::Text, "Data pattern, hex (IOS default abcd)"),
];

pub(super) struct UdpEchoKind;

/// A validated udp-echo operation.
#[derive(Debug, Clone, PartialEq)]
pub struct UdpEcho {
    /// Probe size.
    pub size: usize,
    /// Data pattern.
    pub pattern: Vec<u8>,
    /// The control phase.
    pub control: IpSlaControl,
}

impl Kind for UdpEchoKind {
    fn name(&self) -> &'static str {
        "udp-echo"
    }
    fn about(&self) -> &'static str {
        "One UDP echo (IP SLA probe type 1)"
    }
    fn example(&self) -> &'static str {
        "ipsla probe udp-echo 192.0.2.10 --no-control --port 7      (any UDP echo service)"
    }
    fn keys(&self) -> &'static [&'static [Key]] {
        &[PORT, IPSLA_CONTROL, KEYS]
    }
    fn default_port(&self) -> Option<u16> {
        Some(16384)
    }
    fn build(&self, f: &Fields, _base: &Base) -> Result<Box<dyn Operation>> {
        Ok(Box::new(UdpEcho {
            size: f.range("request_data_size", 16, 4, 16_384)?,
            pattern: pattern(f, "data_pattern")?,
            control: IpSlaControl::from_fields(f)?,
        }))
    }
}

impl Operation for UdpEcho {
    fn kind(&self) -> &'static dyn Kind {
        &KIND
    }
    fn describe(&self, out: &mut Vec<(&'static str, String)>) {
        out.push(("Request size (ARR data portion)", self.size.to_string()));
        out.push(("Data pattern", hex::encode(&self.pattern)));
        self.control.describe(out);
    }
    fn control_label(&self) -> &'static str {
        self.control.label()
    }
    fn run(&self, spec: &OperationSpec, ctx: &RunContext<'_>) -> std::result::Result<RunOutcome, RunError> {
        let t = spec.addr();
        let (s, local, _) = sock("opening the probe socket", udp_socket(t, &spec.sockets))?;
        let cfg = EchoConfig {
            format: EchoFormat::Udp,
            control: self.control.mode.clone(),
            request: self.control.request(spec, ControlOp::UdpEcho, spec.timeout, local),
            sequence: ctx.sequence,
            size: self.size,
            pattern: self.pattern.clone(),
            timeout: spec.timeout,
            threshold: spec.threshold,
        };
        let mut op = EchoOp::new(Instant::now(), cfg);
        let result = run_udp(&mut op, &s, t, self.control.port, &Pacer::new(DEFAULT_SPIN), ctx.hooks)?;
        Ok(RunOutcome::without_clock(result))
    }
}
