//! icmp-jitter: a train of ICMP Timestamp requests (RFC 792) to any IPv4 host: RTT, one-way
//! delay and jitter without a responder (raw socket).

use super::common::{CLOCK, ClockSync, TRAIN, train};
use super::configuration::train_line;
use super::icmp_echo::{ident, no_control};
use super::{Base, Fields, Key, Kind, Operation};
use crate::config::Result;
use crate::runner::{OperationSpec, RunContext, RunError, RunOutcome, sock};
use ipsla_core::ops::control::{ControlMode, ControlOp};
use ipsla_core::ops::jitter::{JitterConfig, JitterFormat, JitterOp};
use ipsla_net::pacer::Pacer;
use ipsla_net::probe::{IcmpSocket, run_icmp};
use std::time::{Duration, Instant};

pub(super) static KIND: IcmpJitterKind = IcmpJitterKind;

pub(super) struct IcmpJitterKind;

/// A validated icmp-jitter operation.
#[derive(Debug, Clone, PartialEq)]
pub struct IcmpJitter {
    /// Requests per run.
    pub packets: u32,
    /// Interval.
    pub interval: Duration,
    /// Clock synchronisation.
    pub clock: ClockSync,
}

impl Kind for IcmpJitterKind {
    fn name(&self) -> &'static str {
        "icmp-jitter"
    }
    fn about(&self) -> &'static str {
        "ICMP Timestamp stream: RTT, one-way and jitter without a responder (raw socket)"
    }
    fn example(&self) -> &'static str {
        "ipsla probe icmp-jitter 192.0.2.10 --packets 50 --interval 20ms      (any host that answers ICMP Timestamp; needs CAP_NET_RAW)"
    }
    fn keys(&self) -> &'static [&'static [Key]] {
        &[TRAIN, CLOCK]
    }
    fn default_port(&self) -> Option<u16> {
        None
    }
    fn jitter(&self) -> bool {
        true
    }
    fn build(&self, f: &Fields, base: &Base) -> Result<Box<dyn Operation>> {
        if base.target.ip().is_some_and(|a| a.is_ipv6()) {
            return Err(f.error("target", "icmp-jitter uses ICMP Timestamp, which exists for IPv4 only"));
        }
        let (packets, interval) = train(f, 10, Duration::from_millis(20))?;
        Ok(Box::new(IcmpJitter { packets, interval, clock: ClockSync::from_fields(f)? }))
    }
}

impl Operation for IcmpJitter {
    fn kind(&self) -> &'static dyn Kind {
        &KIND
    }
    fn describe(&self, out: &mut Vec<(&'static str, String)>) {
        out.push(train_line(self.interval, self.packets));
        self.clock.describe(out);
    }
    fn train(&self) -> Option<(u32, Duration)> {
        Some((self.packets, self.interval * self.packets))
    }
    fn icmp(&self) -> bool {
        true
    }
    fn run(&self, spec: &OperationSpec, ctx: &RunContext<'_>) -> std::result::Result<RunOutcome, RunError> {
        let (sync, mut clock) = self.clock.check();
        let t = spec.addr();
        let ident = ident(ctx.sequence);
        let s = sock("opening the ICMP socket", IcmpSocket::open(t, &spec.sockets, true))?;
        let cfg = JitterConfig {
            control: ControlMode::None,
            request: no_control(spec, ControlOp::UdpJitter),
            sequence: ctx.sequence,
            packets: self.packets,
            interval: self.interval,
            size: 0,
            format: JitterFormat::IcmpTimestamp { ident },
            timeout: spec.timeout,
            threshold: spec.threshold,
            clock_sync: sync,
            voice: None,
            pattern: Vec::new(),
        };
        let pacer = Pacer::for_interval(self.interval);
        let mut result = run_icmp(&mut JitterOp::new(Instant::now(), cfg), &s, t, ident, &pacer, ctx.hooks)?;
        self.clock.apply(&mut result, &mut clock);
        Ok(RunOutcome { result, clock, detail: Default::default() })
    }
}
