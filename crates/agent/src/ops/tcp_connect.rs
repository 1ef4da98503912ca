//! tcp-connect: the time of a TCP handshake, after an IP SLA control phase (or none, towards any
//! listening port).

use super::common::{IPSLA_CONTROL, IpSlaControl};
use super::{Base, Fields, Key, Kind, Operation, Ty};
use crate::config::Result;
use crate::runner::{OperationSpec, RunContext, RunError, RunOutcome, sock};
use ipsla_core::ops::control::ControlOp;
use ipsla_core::ops::tcp::{TcpConfig, TcpConnectOp};
use ipsla_net::probe::{SocketOptions, run_tcp, udp_socket};
use std::time::Instant;

/// `port`: what listens there depends on the kind, so each kind says it (`--port` help).
const PORT: &[Key] = &[Key::new(
    "port",
    Ty::Int,
    "TCP port to connect to: the control message asks an IP SLA responder to listen on it (default 16384); with --control none, any listening service (e.g. 22, 443)",
)];

pub(super) static KIND: TcpConnectKind = TcpConnectKind;

pub(super) struct TcpConnectKind;

/// A validated tcp-connect operation.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpConnect {
    /// The control phase.
    pub control: IpSlaControl,
}

impl Kind for TcpConnectKind {
    fn name(&self) -> &'static str {
        "tcp-connect"
    }
    fn about(&self) -> &'static str {
        "TCP handshake time"
    }
    fn example(&self) -> &'static str {
        "ipsla probe tcp-connect 192.0.2.10 --no-control --port 443      (any TCP service: the handshake time)"
    }
    fn keys(&self) -> &'static [&'static [Key]] {
        &[PORT, IPSLA_CONTROL]
    }
    fn default_port(&self) -> Option<u16> {
        Some(16384)
    }
    fn build(&self, f: &Fields, _base: &Base) -> Result<Box<dyn Operation>> {
        Ok(Box::new(TcpConnect { control: IpSlaControl::from_fields(f)? }))
    }
}

impl Operation for TcpConnect {
    fn kind(&self) -> &'static dyn Kind {
        &KIND
    }
    fn describe(&self, out: &mut Vec<(&'static str, String)>) {
        self.control.describe(out);
    }
    fn control_label(&self) -> &'static str {
        self.control.label()
    }
    fn run(&self, spec: &OperationSpec, ctx: &RunContext<'_>) -> std::result::Result<RunOutcome, RunError> {
        let t = spec.addr();
        // the control socket never takes the measurement's source port
        let ctl_opts = SocketOptions { source_port: 0, ..spec.sockets.clone() };
        let (s, local, _) = sock("opening the control socket", udp_socket(t, &ctl_opts))?;
        let cfg = TcpConfig {
            control: self.control.mode.clone(),
            request: self.control.request(spec, ControlOp::TcpConnect, spec.timeout, local),
            sequence: ctx.sequence,
            timeout: spec.timeout,
            threshold: spec.threshold,
        };
        let mut op = TcpConnectOp::new(Instant::now(), cfg);
        let result = ctx.rt.block_on(run_tcp(&mut op, s, t, self.control.port, &spec.sockets, ctx.hooks))?;
        Ok(RunOutcome::without_clock(result))
    }
}
