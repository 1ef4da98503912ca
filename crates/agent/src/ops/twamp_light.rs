//! twamp-light: a TWAMP-Light Session-Sender (RFC 5357 Appendix I): TWAMP-Test packets to a
//! reflector port, no control; STAMP reflectors answer it too.

use super::common::{CLOCK, ClockSync, TRAIN, train};
use super::configuration::train_line;
use super::twamp::MODE;
use super::{Base, Fields, Key, Kind, Operation, Ty};
use crate::config::Result;
use crate::runner::{OperationSpec, RunContext, RunError, RunOutcome, sock};
use ipsla_core::ops::stamp::{SenderFormat, TwampFormat};
use ipsla_core::twamp::client::MAX_PADDING;
use ipsla_net::twamp::client::sender_socket;
use ipsla_wire::twamp::test::SYMMETRIC_PADDING_OPEN;
use std::time::Duration;

/// `port`: what listens there depends on the kind, so each kind says it (`--port` help).
const PORT: &[Key] =
    &[Key::new("port", Ty::Int, "UDP port of the TWAMP-Light reflector (default 862, RFC 5357 Appendix I)")];

pub(super) static KIND: TwampLightKind = TwampLightKind;

const KEYS: &[Key] = &[
    MODE,
    Key::new("padding", Ty::Int, "Padding octets per test packet (default 27: 41-octet packets both ways)"),
    Key::new(
        "stateful",
        Ty::Bool,
        "The reflector numbers its replies itself: loss splits into SD and DS from the start",
    ),
];

pub(super) struct TwampLightKind;

/// A validated twamp-light operation.
#[derive(Debug, Clone, PartialEq)]
pub struct TwampLight {
    /// Test packets per run.
    pub packets: u32,
    /// Interval.
    pub interval: Duration,
    /// Octets of padding (27 = 41-octet packets both ways).
    pub padding: u32,
    /// The reflector numbers its replies itself (loss splits SD/DS from the first reply).
    pub stateful: bool,
    /// Clock synchronisation.
    pub clock: ClockSync,
}

impl Kind for TwampLightKind {
    fn name(&self) -> &'static str {
        "twamp-light"
    }
    fn about(&self) -> &'static str {
        "TWAMP-Light Session-Sender (RFC 5357 Appendix I): TWAMP-Test packets to a reflector (UDP, default port 862), no control; STAMP reflectors answer it too"
    }
    fn example(&self) -> &'static str {
        "ipsla probe twamp-light 192.0.2.10 --packets 100 --interval 10ms      (a TWAMP-Light or STAMP reflector on UDP 862)"
    }
    fn keys(&self) -> &'static [&'static [Key]] {
        &[PORT, TRAIN, CLOCK, KEYS]
    }
    fn default_port(&self) -> Option<u16> {
        Some(ipsla_wire::twamp::TEST_PORT)
    }
    fn jitter(&self) -> bool {
        true
    }
    fn refuses(&self, key: &str) -> Option<&'static str> {
        match key {
            "twamp_key_id" | "secret_file" => Some("twamp-light has no key (open mode only)"),
            _ => super::twamp::refuses_ip_sla_key(key),
        }
    }
    fn build(&self, f: &Fields, _base: &Base) -> Result<Box<dyn Operation>> {
        let (packets, interval) = train(f, 10, Duration::from_millis(20))?;
        if f.choose("mode", "open", &[("open", "open"), ("auth", "x"), ("encrypted", "x"), ("mixed", "x")])? != "open" {
            return Err(f.error(
                "mode",
                "twamp-light runs in open mode only (its keys would have to be provisioned outside TWAMP, RFC 5357 Appendix I); allowed: open",
            ));
        }
        Ok(Box::new(TwampLight {
            packets,
            interval,
            padding: f.range("padding", SYMMETRIC_PADDING_OPEN as u32, 0, MAX_PADDING)?,
            stateful: f.bool("stateful")?.unwrap_or(false),
            clock: ClockSync::from_fields(f)?,
        }))
    }
}

impl Operation for TwampLight {
    fn kind(&self) -> &'static dyn Kind {
        &KIND
    }
    fn describe(&self, out: &mut Vec<(&'static str, String)>) {
        out.push(train_line(self.interval, self.packets));
        out.push(("Padding (octets)", self.padding.to_string()));
        out.push(("Reflector", if self.stateful { "stateful" } else { "stateless" }.into()));
        self.clock.describe(out);
    }
    fn train(&self) -> Option<(u32, Duration)> {
        Some((self.packets, self.interval * self.packets))
    }
    fn run(&self, spec: &OperationSpec, ctx: &RunContext<'_>) -> std::result::Result<RunOutcome, RunError> {
        let (s, _) = sock("opening the probe socket", sender_socket(spec.addr(), &spec.sockets))?;
        let format = SenderFormat::Twamp(Box::new(TwampFormat::light(self.padding as usize)));
        super::stamp::run_sender(spec, &s, (self.packets, self.interval), format, self.stateful, &self.clock, ctx)
    }
}
