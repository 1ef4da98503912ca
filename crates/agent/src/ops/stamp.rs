//! stamp: a STAMP Session-Sender (RFC 8762, RFC 8972 TLVs) towards a STAMP reflector; no
//! control phase.

use super::common::{CLOCK, ClockSync, TRAIN, train};
use super::configuration::train_line;
use super::{Base, Fields, Flag, Key, Kind, Operation, Ty};
use crate::config::{ConfigError, Result};
use crate::runner::{OperationSpec, RunContext, RunError, RunOutcome, host_error_estimate, sock};
use ipsla_core::ops::stamp::{SenderFormat, StampConfig, StampFormat, StampOp, TlvRequest};
use ipsla_net::pacer::Pacer;
use ipsla_net::probe::{run_udp, udp_socket};
use std::time::{Duration, Instant};

/// `port`: what listens there depends on the kind, so each kind says it (`--port` help).
const PORT: &[Key] = &[Key::new("port", Ty::Int, "UDP port of the STAMP Session-Reflector (default 862, RFC 8762)")];

pub(super) static KIND: StampKind = StampKind;

const KEYS: &[Key] = &[
    Key::new("ssid", Ty::Int, "Session identifier (RFC 8972), 1-65535 (default 1)"),
    Key::new(
        "stamp_key_file",
        Ty::Path,
        "Authenticated mode (HMAC-SHA-256) with the key in this file (hex digits, as stamp-suite's --hmac-key-file, or text)",
    )
    .flag(Flag::Named("auth-key-file")),
    Key::new(
        "tlvs",
        Ty::List,
        "TLVs to add (comma-separated or repeated): extra-padding=N, timestamp-info, cos (asks for the dscp back), location, direct-measurement",
    )
    .flag(Flag::Named("tlv")),
];

pub(super) struct StampKind;

/// A validated stamp operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamp {
    /// Packets per run.
    pub packets: u32,
    /// Interval.
    pub interval: Duration,
    /// SSID (RFC 8972), non-zero.
    pub ssid: u16,
    /// Authenticated mode with this HMAC key.
    pub key: Option<Vec<u8>>,
    /// TLVs in every packet.
    pub tlvs: Vec<TlvRequest>,
    /// Clock synchronisation.
    pub clock: ClockSync,
}

/// One `tlvs` entry: `extra-padding=N`, `timestamp-info`, `cos` (asks for the operation's `dscp`
/// back), `location`, `direct-measurement`.
fn stamp_tlv(key: &str, s: &str, dscp: u8) -> Result<TlvRequest> {
    Ok(match s.split_once('=') {
        Some(("extra-padding", n)) => TlvRequest::ExtraPadding(
            n.trim()
                .parse()
                .map_err(|_| ConfigError(format!("{key}: extra-padding={n}: expected a number of octets, 0-65535")))?,
        ),
        None if s == "timestamp-info" => TlvRequest::TimestampInfo,
        None if s == "cos" => TlvRequest::ClassOfService(dscp),
        None if s == "location" => TlvRequest::Location,
        None if s == "direct-measurement" => TlvRequest::DirectMeasurement,
        _ => {
            return Err(ConfigError(format!(
                "{key}: \"{s}\" is not a STAMP TLV; allowed: extra-padding=N, timestamp-info, cos, location, direct-measurement"
            )));
        }
    })
}

/// The Session-Sender's configuration shared by stamp, twamp and twamp-light.
pub(super) fn sender(
    spec: &OperationSpec,
    (packets, interval): (u32, Duration),
    format: SenderFormat,
    stateful: bool,
    clock_sync: bool,
) -> StampConfig {
    StampConfig {
        packets,
        interval,
        timeout: spec.timeout,
        threshold: spec.threshold,
        clock_sync,
        format,
        error_estimate: host_error_estimate(),
        stateful,
    }
}

/// One run of a Session-Sender without a control phase (stamp, twamp-light) on `socket`.
pub(super) fn run_sender(
    spec: &OperationSpec,
    socket: &std::net::UdpSocket,
    train: (u32, Duration),
    format: SenderFormat,
    stateful: bool,
    clock_sync: &ClockSync,
    ctx: &RunContext<'_>,
) -> std::result::Result<RunOutcome, RunError> {
    let (sync, mut clock) = clock_sync.check();
    let cfg = sender(spec, train, format, stateful, sync);
    // No control phase: port 0 never matches a reply's source, so every reply is a probe reply.
    let pacer = Pacer::for_interval(train.1);
    let mut op = StampOp::new(Instant::now(), cfg, spec.port);
    let mut result = run_udp(&mut op, socket, spec.addr(), 0, &pacer, ctx.hooks)?;
    clock_sync.apply(&mut result, &mut clock);
    Ok(RunOutcome { result, clock, detail: Default::default() })
}

impl Kind for StampKind {
    fn name(&self) -> &'static str {
        "stamp"
    }
    fn about(&self) -> &'static str {
        "STAMP Session-Sender (RFC 8762, RFC 8972 TLVs) to a STAMP reflector (default port 862)"
    }
    fn example(&self) -> &'static str {
        "ipsla probe stamp 192.0.2.10 --packets 100 --interval 10ms      (a STAMP reflector on UDP 862)"
    }
    fn keys(&self) -> &'static [&'static [Key]] {
        &[PORT, TRAIN, CLOCK, KEYS]
    }
    fn default_port(&self) -> Option<u16> {
        Some(ipsla_core::stamp::DEFAULT_PORT)
    }
    fn jitter(&self) -> bool {
        true
    }
    fn build(&self, f: &Fields, base: &Base) -> Result<Box<dyn Operation>> {
        let (packets, interval) = train(f, 10, Duration::from_millis(20))?;
        let key = match f.path("stamp_key_file")? {
            Some(p) => Some(crate::config::load_stamp_key(&f.key("stamp_key_file"), &p)?),
            None => None,
        };
        let tlvs = f
            .list("tlvs")?
            .iter()
            .flat_map(|s| s.split(','))
            .filter(|s| !s.trim().is_empty())
            .map(|s| stamp_tlv(&f.key("tlvs"), s.trim(), base.dscp.unwrap_or(0)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Box::new(Stamp {
            packets,
            interval,
            ssid: f.range("ssid", 1, 1, u16::MAX)?,
            key,
            tlvs,
            clock: ClockSync::from_fields(f)?,
        }))
    }
}

impl Operation for Stamp {
    fn kind(&self) -> &'static dyn Kind {
        &KIND
    }
    fn describe(&self, out: &mut Vec<(&'static str, String)>) {
        out.push(train_line(self.interval, self.packets));
        out.push(("Session-Sender Identifier (SSID)", self.ssid.to_string()));
        out.push(("Authentication", if self.key.is_some() { "HMAC-SHA-256" } else { "none" }.into()));
        let tlvs: Vec<String> = self.tlvs.iter().map(|t| format!("{t:?}")).collect();
        out.push(("TLVs", if tlvs.is_empty() { "none".into() } else { tlvs.join(", ") }));
        self.clock.describe(out);
    }
    fn train(&self) -> Option<(u32, Duration)> {
        Some((self.packets, self.interval * self.packets))
    }
    fn run(&self, spec: &OperationSpec, ctx: &RunContext<'_>) -> std::result::Result<RunOutcome, RunError> {
        let (s, _, _) = sock("opening the probe socket", udp_socket(spec.addr(), &spec.sockets))?;
        let format =
            SenderFormat::Stamp(StampFormat { ssid: self.ssid, key: self.key.clone(), tlvs: self.tlvs.clone() });
        run_sender(spec, &s, (self.packets, self.interval), format, false, &self.clock, ctx)
    }
}
