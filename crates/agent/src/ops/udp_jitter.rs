//! udp-jitter (IP SLA probe types 2 and 3): a train of probes to an IP SLA responder after a
//! control phase, optionally emulating a voice codec (ICPIF and MOS).

use super::common::{CLOCK, ClockSync, IPSLA_CONTROL, IpSlaControl, TRAIN, pattern, train};
use super::configuration::train_line;
use super::{Base, Fields, Key, Kind, Operation, Ty};
use crate::config::Result;
use crate::runner::{OperationSpec, RunContext, RunError, RunOutcome, sock};
use ipsla_core::ops::control::ControlOp;
use ipsla_core::ops::jitter::{JitterConfig, JitterFormat, JitterOp};
use ipsla_core::ops::{Precision, VoiceConfig};
use ipsla_core::voice::{Codec, MosModel};
use ipsla_net::pacer::Pacer;
use ipsla_net::probe::{run_udp, udp_socket};
use std::time::{Duration, Instant};

/// `port`: what listens there depends on the kind, so each kind says it (`--port` help).
const PORT: &[Key] = &[Key::new(
    "port",
    Ty::Int,
    "Responder port the probes go to: the control message asks an IP SLA responder to open it for the run (default 16384, as IOS); with --control none, a permanent udp-jitter port (IOS ip sla responder udp-jitter)",
)];

pub(super) static KIND: UdpJitterKind = UdpJitterKind;

const KEYS: &[Key] = &[
    Key::new("request_data_size", Ty::Int, "Probe size in bytes (IOS request-data-size, default 32; 0-16384)"),
    Key::new("precision", Ty::Choice(&["ms", "us"]), "Timestamp precision: ms (probe type 2, default) or us (type 3)"),
    Key::new(
        "codec",
        Ty::Choice(&["g711alaw", "g711ulaw", "g729a"]),
        "Emulate a codec: sets size, interval and packet count to the codec's (172/20 ms/1000 for G.711, 32/20 ms/1000 for G.729A) and computes ICPIF and MOS",
    ),
    Key::new("advantage_factor", Ty::Int, "ICPIF advantage factor, 0-20 (IOS advantage-factor, default 0)"),
    Key::new("mos_model", Ty::Choice(&["e-model", "cisco-compat"]), "How MOS and ICPIF are computed (default e-model)"),
    Key::new("data_pattern", Ty::Text, "Data pattern after the header, hex (IOS default abcd)"),
];

pub(super) struct UdpJitterKind;

/// A validated udp-jitter operation.
#[derive(Debug, Clone, PartialEq)]
pub struct UdpJitter {
    /// Probes per run.
    pub packets: u32,
    /// Interval between probes.
    pub interval: Duration,
    /// Probe size.
    pub size: usize,
    /// ms (type 2) or µs (type 3).
    pub precision: Precision,
    /// Codec and score model.
    pub voice: Option<VoiceConfig>,
    /// Data pattern.
    pub pattern: Vec<u8>,
    /// The control phase.
    pub control: IpSlaControl,
    /// Clock synchronisation.
    pub clock: ClockSync,
}

impl Kind for UdpJitterKind {
    fn name(&self) -> &'static str {
        "udp-jitter"
    }
    fn about(&self) -> &'static str {
        "UDP jitter (IP SLA probe type 2, or 3 with --precision us), optionally emulating a codec"
    }
    fn example(&self) -> &'static str {
        "ipsla probe udp-jitter 192.0.2.10 --codec g711ulaw --count 5      (an IOS or ipsla responder; G.711 call quality, five runs a second apart)"
    }
    fn keys(&self) -> &'static [&'static [Key]] {
        &[PORT, IPSLA_CONTROL, TRAIN, CLOCK, KEYS]
    }
    fn default_port(&self) -> Option<u16> {
        Some(16384)
    }
    fn jitter(&self) -> bool {
        true
    }
    fn build(&self, f: &Fields, _base: &Base) -> Result<Box<dyn Operation>> {
        let codec = f.choose(
            "codec",
            None,
            &[("g711alaw", Some(Codec::G711alaw)), ("g711ulaw", Some(Codec::G711ulaw)), ("g729a", Some(Codec::G729a))],
        )?;
        let (packets, interval) = train(
            f,
            codec.map_or(10, Codec::default_packets),
            Duration::from_millis(codec.map_or(20, |c| u64::from(c.default_interval_ms()))),
        )?;
        let size = f.range("request_data_size", codec.map_or(32, Codec::default_size), 0, 16_384)?;
        let precision = f.choose("precision", Precision::Ms, &[("ms", Precision::Ms), ("us", Precision::Us)])?;
        let model = f.choose(
            "mos_model",
            MosModel::EModel,
            &[("e-model", MosModel::EModel), ("cisco-compat", MosModel::CiscoCompat)],
        )?;
        let advantage = f.range("advantage_factor", 0, 0, 20)?;
        Ok(Box::new(UdpJitter {
            packets,
            interval,
            size,
            precision,
            voice: codec.map(|codec| VoiceConfig { codec, model, advantage }),
            pattern: pattern(f, "data_pattern")?,
            control: IpSlaControl::from_fields(f)?,
            clock: ClockSync::from_fields(f)?,
        }))
    }
}

impl Operation for UdpJitter {
    fn kind(&self) -> &'static dyn Kind {
        &KIND
    }
    fn describe(&self, out: &mut Vec<(&'static str, String)>) {
        out.push(("Request size (ARR data portion)", self.size.to_string()));
        out.push(train_line(self.interval, self.packets));
        let precision = match self.precision {
            Precision::Ms => "milliseconds",
            Precision::Us => "microseconds",
        };
        out.push(("Operation Stats Precision", precision.into()));
        out.push(("Data pattern", hex::encode(&self.pattern)));
        if let Some(v) = &self.voice {
            let codec = match v.codec {
                Codec::G711alaw => "g711alaw",
                Codec::G711ulaw => "g711ulaw",
                Codec::G729a => "g729a",
            };
            out.push(("Codec Type", codec.into()));
            out.push(("Advantage Factor", v.advantage.to_string()));
            let model = match v.model {
                MosModel::EModel => "e-model",
                MosModel::CiscoCompat => "cisco-compat",
            };
            out.push(("MOS model", model.into()));
        }
        self.clock.describe(out);
        self.control.describe(out);
    }
    fn train(&self) -> Option<(u32, Duration)> {
        Some((self.packets, self.interval * self.packets))
    }
    fn voice(&self) -> Option<VoiceConfig> {
        self.voice
    }
    fn control_label(&self) -> &'static str {
        self.control.label()
    }
    fn run(&self, spec: &OperationSpec, ctx: &RunContext<'_>) -> std::result::Result<RunOutcome, RunError> {
        let (sync, mut clock) = self.clock.check();
        let t = spec.addr();
        let (s, local, _) = sock("opening the probe socket", udp_socket(t, &spec.sockets))?;
        let duration = JitterConfig::control_duration(spec.timeout, self.packets, self.interval);
        let cfg = JitterConfig {
            control: self.control.mode.clone(),
            request: self.control.request(spec, ControlOp::UdpJitter, duration, local),
            sequence: ctx.sequence,
            packets: self.packets,
            interval: self.interval,
            size: self.size,
            format: JitterFormat::Udp(self.precision),
            timeout: spec.timeout,
            threshold: spec.threshold,
            clock_sync: sync,
            voice: self.voice,
            pattern: self.pattern.clone(),
        };
        let pacer = Pacer::for_interval(self.interval);
        let mut op = JitterOp::new(Instant::now(), cfg);
        let mut result = run_udp(&mut op, &s, t, self.control.port, &pacer, ctx.hooks)?;
        self.clock.apply(&mut result, &mut clock);
        Ok(RunOutcome { result, clock, detail: Default::default() })
    }
}
