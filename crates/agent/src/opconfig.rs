//! `[[operation]]` tables (and `ipsla probe`'s flags, which map onto the same fields): parsed,
//! validated into an [`OperationSpec`] and a [`ScheduleConfig`]. Every error names the key
//! (`operation[3].interval: ...`) and what it accepts.

use crate::config::{ConfigError, Result, check_range, parse_duration};
use crate::runner::{ClockSyncMode, OpKind, OperationSpec, Tolerance};
use crate::store::{HistoryConfig, MAX_HISTORY_HOURS};
use ipsla_core::ops::control::{ControlMode, V2Auth};
use ipsla_core::ops::jitter::MAX_PACKETS;
use ipsla_core::ops::{Precision, VoiceConfig};
use ipsla_core::reaction::{ALL_ELEMENTS, Action, Element, ReactionConfig, ThresholdType};
use ipsla_core::schedule::{ScheduleConfig, StartTime};
use ipsla_core::twamp::KeyFile;
use ipsla_core::twamp::client::{ConfigError as ClientConfigError, MAX_PADDING, Secret};
use ipsla_core::voice::{Codec, MosModel};
use ipsla_net::probe::SocketOptions;
use ipsla_wire::cisco::control_v2::AuthMode;
use ipsla_wire::twamp::SecurityMode;
use ipsla_wire::twamp::test::SYMMETRIC_PADDING_OPEN;
use serde::Deserialize;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// One operation as written in the file (every field but `type` and `target` optional).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct OperationFile {
    pub id: Option<u32>,
    #[serde(rename = "type")]
    pub kind: String,
    pub target: String,
    pub port: Option<u16>,
    pub tag: Option<String>,
    // schedule
    pub frequency: Option<String>,
    pub life: Option<String>,
    pub start: Option<String>,
    pub ageout: Option<String>,
    pub recurring: Option<bool>,
    // common
    pub timeout: Option<String>,
    pub threshold: Option<String>,
    pub source_ip: Option<IpAddr>,
    pub source_port: Option<u16>,
    pub tos: Option<u8>,
    pub dscp: Option<u8>,
    pub vrf: Option<String>,
    pub kernel_timestamps: Option<bool>,
    // control
    pub control: Option<String>,
    pub control_port: Option<u16>,
    pub auth: Option<String>,
    pub key_id: Option<u16>,
    pub secret_file: Option<PathBuf>,
    // jitter
    pub packets: Option<u32>,
    pub interval: Option<String>,
    pub request_data_size: Option<usize>,
    pub precision: Option<String>,
    pub codec: Option<String>,
    pub advantage_factor: Option<u8>,
    pub mos_model: Option<String>,
    pub clock_sync: Option<String>,
    pub clock_tolerance: Option<String>,
    pub data_pattern: Option<String>,
    // stamp
    pub ssid: Option<u16>,
    pub stamp_key_file: Option<PathBuf>,
    pub tlvs: Option<Vec<String>>,
    // twamp, twamp-light
    /// open | auth | encrypted | mixed
    pub mode: Option<String>,
    /// TWAMP identity in `secret_file` (a string; `key_id` is the Cisco v2 key number).
    pub twamp_key_id: Option<String>,
    pub padding: Option<u32>,
    pub stateful: Option<bool>,
    // hourly aggregates (IOS `history hours-of-statistics-kept`, `distributions-of-statistics-kept`,
    // `statistics-distribution-interval`)
    pub history_hours: Option<u8>,
    pub distributions: Option<u8>,
    pub distribution_interval: Option<u32>,
    // reactions and triggers
    #[serde(default)]
    pub reaction: Vec<ReactionFile>,
    /// Operations this one's trigger actions start (IOS `ip sla reaction-trigger`).
    #[serde(default)]
    pub trigger: Vec<u32>,
}

/// One `[[operation.reaction]]` (IOS `ip sla reaction-configuration N react ELEMENT ...`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ReactionFile {
    pub element: String,
    /// never | immediate | "consecutive N" | "xofy X Y" | "average N" (default never, as IOS)
    pub threshold_type: Option<String>,
    /// [rising, falling]
    pub threshold: Option<[f64; 2]>,
    /// none | alert | trigger | alert-and-trigger (default alert)
    pub action: Option<String>,
}

/// A validated operation with its schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationDef {
    /// Operation number (IOS `ip sla N`).
    pub id: u32,
    /// Free text.
    pub tag: String,
    /// What to run.
    pub spec: OperationSpec,
    /// When.
    pub schedule: ScheduleConfig,
    /// Threshold reactions.
    pub reactions: Vec<ReactionConfig>,
    /// Operations started by this one's trigger actions.
    pub triggers: Vec<u32>,
    /// Hourly aggregates kept.
    pub history: HistoryConfig,
}

fn threshold_type(key: &str, s: &str) -> Result<ThresholdType> {
    let bad = || {
        ConfigError(format!(
            "{key}: \"{s}\" is not a threshold type; allowed: never, immediate, \"consecutive N\", \"xofy X Y\", \"average N\" (N, X, Y 1-16)"
        ))
    };
    let n = |v: &str| v.parse::<u8>().ok().filter(|n| (1..=16).contains(n)).ok_or_else(bad);
    match s.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["never"] => Ok(ThresholdType::Never),
        ["immediate"] => Ok(ThresholdType::Immediate),
        ["consecutive"] => Ok(ThresholdType::Consecutive(5)),
        ["consecutive", c] => Ok(ThresholdType::Consecutive(n(c)?)),
        ["xofy"] => Ok(ThresholdType::XOfY(5, 5)),
        ["xofy", x, y] => Ok(ThresholdType::XOfY(n(x)?, n(y)?)),
        ["average"] => Ok(ThresholdType::Average(5)),
        ["average", c] => Ok(ThresholdType::Average(n(c)?)),
        _ => Err(bad()),
    }
}

impl ReactionFile {
    fn validate(&self, key: &str, jitter: bool, voice: bool) -> Result<ReactionConfig> {
        let element = Element::from_keyword(&self.element).ok_or_else(|| {
            ConfigError(format!(
                "{key}.element: \"{}\" is not a reaction element; allowed: {}",
                self.element,
                ALL_ELEMENTS.iter().map(|e| e.keyword()).collect::<Vec<_>>().join(", ")
            ))
        })?;
        if !element.applies(jitter, voice) {
            return Err(ConfigError(format!(
                "{key}.element: {} does not apply to this operation (Invalid react option for the Probe type configured)",
                element.keyword()
            )));
        }
        let threshold_type =
            threshold_type(&format!("{key}.threshold_type"), self.threshold_type.as_deref().unwrap_or("never"))?;
        if element.is_boolean() {
            if self.threshold.is_some() {
                return Err(ConfigError(format!("{key}.threshold: {} takes no threshold values", element.keyword())));
            }
            if matches!(threshold_type, ThresholdType::Average(_)) {
                return Err(ConfigError(format!("{key}.threshold_type: {} cannot use average", element.keyword())));
            }
        }
        let (rising, falling) = match self.threshold {
            Some([r, f]) if r < f => {
                return Err(ConfigError(format!("{key}.threshold: rising {r} is below falling {f}")));
            }
            Some([r, f]) => (r, f),
            None => element.default_thresholds(),
        };
        let action = choose(
            &format!("{key}.action"),
            self.action.as_deref(),
            Action::Alert,
            &[
                ("none", Action::None),
                ("alert", Action::Alert),
                ("trigger", Action::Trigger),
                ("alert-and-trigger", Action::AlertAndTrigger),
            ],
        )?;
        Ok(ReactionConfig { element, threshold_type, rising, falling, action })
    }
}

fn choose<T: Copy>(key: &str, v: Option<&str>, default: T, allowed: &[(&str, T)]) -> Result<T> {
    let Some(v) = v else { return Ok(default) };
    allowed.iter().find(|(n, _)| *n == v).map(|(_, t)| *t).ok_or_else(|| {
        ConfigError(format!(
            "{key}: \"{v}\" is not allowed; allowed: {}",
            allowed.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        ))
    })
}

fn resolve(key: &str, host: &str) -> Result<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    if crate::config::offline() {
        return Err(ConfigError(format!("{key}: cannot resolve \"{host}\" (name resolution is off)")));
    }
    (host, 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .map(|a| a.ip())
        .ok_or_else(|| ConfigError(format!("{key}: cannot resolve \"{host}\"")))
}

/// Parses a clock tolerance: an absolute duration or a percentage.
pub fn tolerance(key: &str, s: &str) -> Result<Tolerance> {
    if let Some(p) = s.strip_suffix('%') {
        let v: f64 = p.trim().parse().map_err(|_| ConfigError(format!("{key}: \"{s}\" is not a percentage")))?;
        if !(0.0..=100.0).contains(&v) {
            return Err(ConfigError(format!("{key}: {s} is out of range; allowed 0% to 100%")));
        }
        return Ok(Tolerance::Percent(v));
    }
    Ok(Tolerance::AbsUs(parse_duration(key, s, Duration::ZERO, Duration::from_secs(1))?.as_micros() as i64))
}

fn pattern(key: &str, s: &str) -> Result<Vec<u8>> {
    let p = hex::decode(s.trim_start_matches("0x"))
        .map_err(|_| ConfigError(format!("{key}: \"{s}\" is not hex (e.g. abcd)")))?;
    if p.is_empty() {
        return Err(ConfigError(format!("{key}: the pattern is empty")));
    }
    Ok(p)
}

/// `HH:MM[:SS]` as time since midnight.
fn time_of_day(s: &str) -> Option<Duration> {
    let parts: Vec<u64> = s.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let (h, m, sec) = match parts.as_slice() {
        [h, m] => (*h, *m, 0),
        [h, m, sec] => (*h, *m, *sec),
        _ => return None,
    };
    (h < 24 && m < 60 && sec < 60).then(|| Duration::from_secs(h * 3600 + m * 60 + sec))
}

/// A start time: now, pending, `after DURATION`, `random DURATION` or `at HH:MM[:SS]` (UTC).
pub fn start_time(key: &str, s: &str) -> Result<StartTime> {
    let bad = || {
        ConfigError(format!(
            "{key}: \"{s}\" is not a start time; expected now, pending, \"after DURATION\", \"random DURATION\" (up to 10s) or \"at HH:MM[:SS]\" (UTC)"
        ))
    };
    match s.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["now"] => Ok(StartTime::Now),
        ["pending"] => Ok(StartTime::Pending),
        ["after", d] => Ok(StartTime::After(
            parse_duration(key, d, Duration::ZERO, Duration::from_secs(86_400 * 365)).map_err(|_| bad())?,
        )),
        ["random", d] => {
            Ok(StartTime::Random(parse_duration(key, d, Duration::ZERO, Duration::from_secs(10)).map_err(|_| bad())?))
        }
        ["at", t] => time_of_day(t).map(StartTime::At).ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// IOS `recurring`: allowed only with a life under one day and an ageout of 0 or longer than the
/// rest of the day.
pub fn check_recurring(key: &str, life: Option<Duration>, ageout: Option<Duration>) -> Result<()> {
    let day = ipsla_core::schedule::DAY;
    match life {
        Some(l) if l < day => {}
        _ => return Err(ConfigError(format!("{key}: recurring needs a life shorter than one day (86400s)"))),
    }
    if let (Some(l), Some(a)) = (life, ageout)
        && !a.is_zero()
        && l + a <= day
    {
        return Err(ConfigError(format!("{key}: recurring needs ageout 0 or life + ageout longer than one day")));
    }
    Ok(())
}

impl OperationFile {
    /// Validates into an operation. `key` prefixes error messages (`operation[2]`).
    pub fn validate(&self, key: &str, default_id: u32) -> Result<OperationDef> {
        let k = |f: &str| format!("{key}.{f}");
        let dur = |f: &str, v: &Option<String>, d: Duration, min: Duration, max: Duration| match v {
            Some(s) => parse_duration(&k(f), s, min, max),
            None => Ok(d),
        };
        let id = self.id.unwrap_or(default_id);
        let timeout = dur(
            "timeout",
            &self.timeout,
            Duration::from_secs(5),
            Duration::from_millis(1),
            Duration::from_secs(604_800),
        )?;
        let threshold =
            dur("threshold", &self.threshold, Duration::from_secs(5), Duration::ZERO, Duration::from_secs(60))?;
        let ctl =
            choose(&k("control"), self.control.as_deref(), "v1", &[("v1", "v1"), ("v2", "v2"), ("none", "none")])?;
        let twamp = matches!(self.kind.as_str(), "twamp" | "twamp-light");
        if twamp {
            twamp_refuses_ip_sla_keys(self, &k)?;
        } else if let Some((f, _)) = [
            ("mode", self.mode.is_some()),
            ("twamp_key_id", self.twamp_key_id.is_some()),
            ("padding", self.padding.is_some()),
            ("stateful", self.stateful.is_some()),
        ]
        .iter()
        .find(|(_, set)| *set)
        {
            return Err(ConfigError(format!("{}: only twamp and twamp-light take {f}", k(f))));
        }
        let auth = match (&self.auth, self.key_id, &self.secret_file) {
            _ if twamp => None,
            (None, None, None) => None,
            (Some(m), Some(id), Some(f)) => {
                if ctl != "v2" {
                    return Err(ConfigError(format!(
                        "{}: authentication is defined for control v2 only (the IOS v1 key-chain format is unknown)",
                        k("auth")
                    )));
                }
                let mode = choose(
                    &k("auth"),
                    Some(m),
                    AuthMode::HmacSha256,
                    &[("sha256", AuthMode::Sha256), ("hmac-sha256", AuthMode::HmacSha256)],
                )?;
                let mut secret = crate::config::read_limited(&k("secret_file"), f, crate::config::MAX_KEY_FILE_LEN)?;
                while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    secret.pop();
                }
                if secret.is_empty() {
                    return Err(ConfigError(format!("{}: {} is empty", k("secret_file"), f.display())));
                }
                Some(V2Auth { mode, key_id: id, secret })
            }
            _ => return Err(ConfigError(format!("{}: auth, key_id and secret_file go together", k("auth")))),
        };
        let (control, control_port) = match ctl {
            "v2" => (ControlMode::V2(auth), self.control_port.unwrap_or(1167)),
            "none" => (ControlMode::None, 0),
            _ => (ControlMode::V1, self.control_port.unwrap_or(1967)),
        };
        if let Some(d) = self.dscp {
            check_range(&k("dscp"), d, 0, 63)?;
        }
        let target = resolve(&k("target"), &self.target)?;
        let codec = match &self.codec {
            None => None,
            Some(c) => Some(choose(
                &k("codec"),
                Some(c),
                Codec::G711alaw,
                &[("g711alaw", Codec::G711alaw), ("g711ulaw", Codec::G711ulaw), ("g729a", Codec::G729a)],
            )?),
        };
        let clock_sync = (
            choose(
                &k("clock_sync"),
                self.clock_sync.as_deref(),
                ClockSyncMode::None,
                &[
                    ("none", ClockSyncMode::None),
                    ("ntp", ClockSyncMode::Ntp),
                    ("ptp", ClockSyncMode::Ptp),
                    ("assume", ClockSyncMode::Assume),
                ],
            )?,
            tolerance(&k("clock_tolerance"), self.clock_tolerance.as_deref().unwrap_or("1ms"))?,
        );
        let pat = || pattern(&k("data_pattern"), self.data_pattern.as_deref().unwrap_or("abcd"));
        let jitter_only = [
            ("packets", self.packets.is_some()),
            ("interval", self.interval.is_some()),
            ("codec", codec.is_some()),
            ("precision", self.precision.is_some()),
        ];
        let kind = match self.kind.as_str() {
            "udp-jitter" => {
                let packets = self.packets.or(codec.map(Codec::default_packets)).unwrap_or(10);
                check_range(&k("packets"), packets, 1, MAX_PACKETS)?;
                let interval = dur(
                    "interval",
                    &self.interval,
                    Duration::from_millis(codec.map_or(20, |c| u64::from(c.default_interval_ms()))),
                    Duration::ZERO,
                    Duration::from_secs(60),
                )?;
                let size = check_range(
                    &k("request_data_size"),
                    self.request_data_size.or(codec.map(Codec::default_size)).unwrap_or(32),
                    0,
                    16_384,
                )?;
                let precision = choose(
                    &k("precision"),
                    self.precision.as_deref(),
                    Precision::Ms,
                    &[("ms", Precision::Ms), ("us", Precision::Us)],
                )?;
                let model = choose(
                    &k("mos_model"),
                    self.mos_model.as_deref(),
                    MosModel::EModel,
                    &[("e-model", MosModel::EModel), ("cisco-compat", MosModel::CiscoCompat)],
                )?;
                let advantage = check_range(&k("advantage_factor"), self.advantage_factor.unwrap_or(0), 0, 20)?;
                let voice = codec.map(|codec| VoiceConfig { codec, model, advantage });
                OpKind::UdpJitter { packets, interval, size, precision, voice, pattern: pat()? }
            }
            "stamp" => {
                let packets = check_range(&k("packets"), self.packets.unwrap_or(10), 1, MAX_PACKETS)?;
                let interval = dur(
                    "interval",
                    &self.interval,
                    Duration::from_millis(20),
                    Duration::ZERO,
                    Duration::from_secs(60),
                )?;
                let ssid = check_range(&k("ssid"), self.ssid.unwrap_or(1), 1, u16::MAX)?;
                let key = match &self.stamp_key_file {
                    Some(p) => Some(crate::config::load_stamp_key(&k("stamp_key_file"), p)?),
                    None => None,
                };
                let tlvs = self
                    .tlvs
                    .iter()
                    .flatten()
                    .flat_map(|s| s.split(','))
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| stamp_tlv(&k("tlvs"), s.trim(), self.dscp.unwrap_or(0)))
                    .collect::<Result<Vec<_>>>()?;
                OpKind::Stamp { packets, interval, ssid, key, tlvs }
            }
            "twamp" | "twamp-light" => self.twamp_kind(&k, dur)?,
            "icmp-jitter" => {
                if target.is_ipv6() {
                    return Err(ConfigError(format!(
                        "{}: icmp-jitter uses ICMP Timestamp, which exists for IPv4 only",
                        k("target")
                    )));
                }
                let packets = check_range(&k("packets"), self.packets.unwrap_or(10), 1, MAX_PACKETS)?;
                let interval = dur(
                    "interval",
                    &self.interval,
                    Duration::from_millis(20),
                    Duration::ZERO,
                    Duration::from_secs(60),
                )?;
                OpKind::IcmpJitter { packets, interval }
            }
            other => {
                if let Some((f, _)) = jitter_only.iter().find(|(_, set)| *set) {
                    return Err(ConfigError(format!(
                        "{}: only udp-jitter, icmp-jitter, stamp, twamp and twamp-light take {f}",
                        k(f)
                    )));
                }
                match other {
                    "udp-echo" => {
                        OpKind::UdpEcho { size: self.request_data_size.unwrap_or(16).clamp(4, 16_384), pattern: pat()? }
                    }
                    "tcp-connect" => OpKind::TcpConnect,
                    "icmp-echo" => {
                        OpKind::IcmpEcho { size: self.request_data_size.unwrap_or(28).min(16_384), pattern: pat()? }
                    }
                    _ => {
                        return Err(ConfigError(format!(
                            "{}: \"{other}\" is not an operation; allowed: udp-jitter, udp-echo, tcp-connect, icmp-echo, icmp-jitter, stamp, twamp, twamp-light",
                            k("type")
                        )));
                    }
                }
            }
        };
        let spec = OperationSpec {
            kind,
            target,
            port: self.port.unwrap_or(match self.kind.as_str() {
                "stamp" => ipsla_core::stamp::DEFAULT_PORT,
                "twamp" => ipsla_wire::twamp::CONTROL_PORT,
                "twamp-light" => ipsla_wire::twamp::TEST_PORT,
                _ => 16384,
            }),
            sockets: SocketOptions {
                source_ip: self.source_ip,
                source_port: self.source_port.unwrap_or(0),
                tos: self.tos.or(self.dscp.map(|d| d << 2)),
                vrf: self.vrf.clone(),
                kernel_timestamps: self.kernel_timestamps.unwrap_or(true),
            },
            timeout,
            threshold,
            control: if matches!(self.kind.as_str(), "icmp-echo" | "icmp-jitter" | "stamp" | "twamp" | "twamp-light") {
                ControlMode::None
            } else {
                control
            },
            control_port,
            clock_sync,
        };
        let frequency = dur(
            "frequency",
            &self.frequency,
            Duration::from_secs(60),
            Duration::from_secs(1),
            Duration::from_secs(604_800),
        )?;
        let min_frequency = spec.timeout + spec.kind.schedule().map_or(Duration::ZERO, |(_, d)| d);
        if self.frequency.is_some() && frequency < min_frequency {
            return Err(ConfigError(format!(
                "{}: {} is shorter than one run (timeout + packets × interval = {}); IOS refuses that too",
                k("frequency"),
                humantime::format_duration(frequency),
                humantime::format_duration(min_frequency)
            )));
        }
        let life = match self.life.as_deref() {
            None => None,
            Some("forever") => None,
            Some(s) => Some(parse_duration(&k("life"), s, Duration::from_secs(1), Duration::from_secs(2_147_483_647))?),
        };
        let schedule = ScheduleConfig {
            frequency,
            random_frequency: None,
            life,
            start: start_time(&k("start"), self.start.as_deref().unwrap_or("now"))?,
            ageout: match &self.ageout {
                Some(s) => Some(parse_duration(&k("ageout"), s, Duration::ZERO, Duration::from_secs(2_073_600))?),
                None => None,
            },
            recurring: self.recurring.unwrap_or(false),
        };
        if schedule.recurring {
            check_recurring(&k("recurring"), schedule.life, schedule.ageout)?;
        }
        let jitter = spec.kind.is_jitter();
        let voice = matches!(spec.kind, OpKind::UdpJitter { voice: Some(_), .. });
        let reactions = self
            .reaction
            .iter()
            .enumerate()
            .map(|(i, r)| r.validate(&format!("{key}.reaction[{i}]"), jitter, voice))
            .collect::<Result<Vec<_>>>()?;
        Ok(OperationDef {
            id,
            tag: self.tag.clone().unwrap_or_default(),
            spec,
            schedule,
            reactions,
            triggers: self.trigger.clone(),
            history: HistoryConfig {
                hours: check_range(&k("history_hours"), self.history_hours.unwrap_or(2), 0, MAX_HISTORY_HOURS)?,
                distributions: check_range(&k("distributions"), self.distributions.unwrap_or(1), 1, 20)?,
                interval_ms: check_range(
                    &k("distribution_interval"),
                    self.distribution_interval.unwrap_or(20),
                    1,
                    100,
                )?,
            },
        })
    }
}

/// The IP SLA control keys a TWAMP operation has no use for; `key_id` is the Cisco v2 key
/// number, which a TWAMP identity (a string) is easily confused with.
fn twamp_refuses_ip_sla_keys(f: &OperationFile, k: &dyn Fn(&str) -> String) -> Result<()> {
    let why = [
        ("control", f.control.is_some(), "twamp runs TWAMP-Control on `port`, twamp-light no control at all"),
        ("control_port", f.control_port.is_some(), "the TWAMP-Control port is `port`"),
        ("auth", f.auth.is_some(), "the TWAMP security mode is `mode`"),
        ("key_id", f.key_id.is_some(), "key_id is the Cisco v2 key number; a TWAMP identity goes in twamp_key_id"),
    ];
    match why.iter().find(|(_, set, _)| *set) {
        Some((key, _, why)) => Err(ConfigError(format!("{}: {} does not take {key}: {why}", k(key), f.kind))),
        None => Ok(()),
    }
}

/// The identity `id` of a twampd-format key file (`identity hex(passphrase)` lines, reference §3.1).
fn twamp_secret(k: &dyn Fn(&str) -> String, id: &str, path: &std::path::Path) -> Result<Secret> {
    let text = crate::config::read_text(&k("secret_file"), path, crate::config::MAX_KEY_FILE_LEN)?;
    let file = KeyFile::parse(&text).map_err(|e| {
        ConfigError(format!(
            "{}: {}: {e} (expected twampd's `identity hex-passphrase` lines)",
            k("secret_file"),
            path.display()
        ))
    })?;
    Secret::from_key_file(&file, id).map_err(|e| match e {
        ClientConfigError::UnknownIdentity(_) => {
            ConfigError(format!("{}: \"{id}\" is not an identity of {}", k("twamp_key_id"), path.display()))
        }
        ClientConfigError::BadKeyId(_) => {
            ConfigError(format!("{}: \"{id}\" is not usable: at most 80 octets, no NUL", k("twamp_key_id")))
        }
        e => ConfigError(format!("{}: {}: {e}", k("secret_file"), path.display())),
    })
}

impl OperationFile {
    /// The kind of a `twamp` or `twamp-light` operation.
    fn twamp_kind(
        &self,
        k: &dyn Fn(&str) -> String,
        dur: impl Fn(&str, &Option<String>, Duration, Duration, Duration) -> Result<Duration>,
    ) -> Result<OpKind> {
        let light = self.kind == "twamp-light";
        let packets = check_range(&k("packets"), self.packets.unwrap_or(10), 1, MAX_PACKETS)?;
        let interval =
            dur("interval", &self.interval, Duration::from_millis(20), Duration::ZERO, Duration::from_secs(60))?;
        let mode = choose(
            &k("mode"),
            self.mode.as_deref(),
            SecurityMode::Unauthenticated,
            &[
                ("open", SecurityMode::Unauthenticated),
                ("auth", SecurityMode::Authenticated),
                ("encrypted", SecurityMode::Encrypted),
                ("mixed", SecurityMode::Mixed),
            ],
        )?;
        if let Some(p) = self.padding {
            check_range(&k("padding"), p, 0, MAX_PADDING)?;
        }
        let open = mode == SecurityMode::Unauthenticated;
        if light {
            if !open {
                return Err(ConfigError(format!(
                    "{}: twamp-light runs in open mode only (its keys would have to be provisioned outside TWAMP, RFC 5357 Appendix I); allowed: open",
                    k("mode")
                )));
            }
            if let Some((f, _)) =
                [("twamp_key_id", self.twamp_key_id.is_some()), ("secret_file", self.secret_file.is_some())]
                    .iter()
                    .find(|(_, set)| *set)
            {
                return Err(ConfigError(format!("{}: twamp-light has no key (open mode only)", k(f))));
            }
            return Ok(OpKind::TwampLight {
                packets,
                interval,
                padding: self.padding.unwrap_or(SYMMETRIC_PADDING_OPEN as u32),
                stateful: self.stateful.unwrap_or(false),
            });
        }
        if self.stateful.is_some() {
            return Err(ConfigError(format!(
                "{}: the reflector of a TWAMP-Control session is always stateful; stateful is a twamp-light key",
                k("stateful")
            )));
        }
        let name = ipsla_core::twamp::client::security_name(mode);
        let secret = match (&self.twamp_key_id, &self.secret_file) {
            (None, None) if open => None,
            (id, _) if open => {
                let key = if id.is_some() { "twamp_key_id" } else { "secret_file" };
                return Err(ConfigError(format!(
                    "{}: the open mode uses no key; set mode = auth, encrypted or mixed, or remove twamp_key_id and secret_file",
                    k(key)
                )));
            }
            (Some(id), Some(f)) => Some(twamp_secret(k, id, f)?),
            (None, _) => {
                return Err(ConfigError(format!(
                    "{}: mode {name} needs twamp_key_id (an identity of secret_file)",
                    k("twamp_key_id")
                )));
            }
            (_, None) => {
                return Err(ConfigError(format!(
                    "{}: mode {name} needs secret_file (twampd format: `identity hex-passphrase` lines)",
                    k("secret_file")
                )));
            }
        };
        Ok(OpKind::Twamp { packets, interval, mode, secret, padding: self.padding })
    }
}

/// One `tlvs` entry of a stamp operation: `extra-padding=N`, `timestamp-info`, `cos` (asks for
/// the operation's `dscp` back), `location`, `direct-measurement`.
fn stamp_tlv(key: &str, s: &str, dscp: u8) -> Result<ipsla_core::ops::stamp::TlvRequest> {
    use ipsla_core::ops::stamp::TlvRequest;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn op(extra: &str) -> Result<OperationDef> {
        let f: OperationFile =
            toml::from_str(&format!("type = \"udp-jitter\"\ntarget = \"127.0.0.1\"\n{extra}")).unwrap();
        f.validate("operation[1]", 1)
    }

    #[test]
    fn defaults_are_ios_defaults() {
        let d = op("").unwrap();
        match d.spec.kind {
            OpKind::UdpJitter { packets, interval, size, precision, .. } => {
                assert_eq!((packets, interval, size, precision), (10, Duration::from_millis(20), 32, Precision::Ms))
            }
            k => panic!("{k:?}"),
        }
        assert_eq!(d.spec.timeout, Duration::from_secs(5));
        assert_eq!(d.schedule.frequency, Duration::from_secs(60));
        assert_eq!(d.schedule.life, None, "the agent runs forever unless told");
        assert_eq!(d.spec.control_port, 1967);
        let c = op("codec = \"g711ulaw\"").unwrap();
        assert!(matches!(c.spec.kind, OpKind::UdpJitter { packets: 1000, size: 172, .. }));
    }

    #[test]
    fn errors_name_the_key_and_the_choices() {
        let e = op("precision = \"ns\"").unwrap_err().to_string();
        assert_eq!(e, "operation[1].precision: \"ns\" is not allowed; allowed: ms, us");
        let e = op("packets = 0").unwrap_err().to_string();
        assert!(e.starts_with("operation[1].packets: 0 is out of range"), "{e}");
        let e = op("frequency = \"2s\"").unwrap_err().to_string();
        assert!(e.contains("operation[1].frequency") && e.contains("shorter than one run"), "{e}");
        let e = op("start = \"tomorrow\"").unwrap_err().to_string();
        assert!(e.contains("operation[1].start") && e.contains("pending"), "{e}");
        let f: OperationFile = toml::from_str("type = \"udp-echo\"\ntarget = \"127.0.0.1\"\npackets = 5").unwrap();
        assert!(
            f.validate("operation[2]", 2).unwrap_err().to_string().contains("operation[2].packets: only udp-jitter")
        );
        let f: OperationFile = toml::from_str("type = \"http\"\ntarget = \"127.0.0.1\"").unwrap();
        assert!(f.validate("operation[3]", 3).unwrap_err().to_string().contains("allowed: udp-jitter, udp-echo"));
        assert!(toml::from_str::<OperationFile>("type = \"udp-echo\"\ntarget = \"x\"\nfrequncy = \"1s\"").is_err());
    }

    #[test]
    fn reactions() {
        let d = op("codec = \"g729a\"\n[[reaction]]\nelement = \"mos\"\nthreshold_type = \"consecutive 3\"\nthreshold = [400, 320]\naction = \"alert-and-trigger\"\n[[reaction]]\nelement = \"timeout\"\nthreshold_type = \"immediate\"").unwrap();
        assert_eq!(d.reactions.len(), 2);
        assert_eq!(d.reactions[0].threshold_type, ThresholdType::Consecutive(3));
        assert_eq!(
            (d.reactions[0].rising, d.reactions[0].falling, d.reactions[0].action),
            (400.0, 320.0, Action::AlertAndTrigger)
        );
        let e = op("[[reaction]]\nelement = \"mos\"").unwrap_err().to_string();
        assert!(e.contains("operation[1].reaction[0].element: mos does not apply"), "{e}");
        let e = op("[[reaction]]\nelement = \"rtt\"\nthreshold_type = \"xofy 5\"").unwrap_err().to_string();
        assert!(e.contains("operation[1].reaction[0].threshold_type") && e.contains("xofy X Y"), "{e}");
        let e = op("[[reaction]]\nelement = \"timeout\"\nthreshold = [1, 0]").unwrap_err().to_string();
        assert!(e.contains("takes no threshold values"), "{e}");
        let e = op("[[reaction]]\nelement = \"rtt\"\nthreshold = [10, 50]").unwrap_err().to_string();
        assert!(e.contains("rising 10 is below falling 50"), "{e}");
        let e = op("[[reaction]]\nelement = \"latency\"").unwrap_err().to_string();
        assert!(e.contains("allowed: rtt, jitterAvg"), "{e}");
    }

    #[test]
    fn history_keys() {
        assert_eq!(op("").unwrap().history, HistoryConfig { hours: 2, distributions: 1, interval_ms: 20 });
        let d = op("history_hours = 0\ndistributions = 5\ndistribution_interval = 10").unwrap();
        assert_eq!(d.history, HistoryConfig { hours: 0, distributions: 5, interval_ms: 10 });
        let e = op("history_hours = 26").unwrap_err().to_string();
        assert_eq!(e, "operation[1].history_hours: 26 is out of range; allowed 0 to 25");
        let e = op("distributions = 0").unwrap_err().to_string();
        assert_eq!(e, "operation[1].distributions: 0 is out of range; allowed 1 to 20");
        let e = op("distribution_interval = 101").unwrap_err().to_string();
        assert_eq!(e, "operation[1].distribution_interval: 101 is out of range; allowed 1 to 100");
    }

    #[test]
    fn schedule_fields() {
        let d = op("start = \"at 23:30\"\nlife = \"1h\"\nrecurring = true").unwrap();
        assert_eq!((d.schedule.start, d.schedule.recurring), (StartTime::At(Duration::from_secs(84_600)), true));
        let e = op("start = \"at 24:00\"").unwrap_err().to_string();
        assert!(e.contains("operation[1].start") && e.contains("at HH:MM[:SS]"), "{e}");
        let e = op("recurring = true").unwrap_err().to_string();
        assert!(e.contains("operation[1].recurring") && e.contains("shorter than one day"), "{e}");
        let e = op("recurring = true\nlife = \"1h\"\nageout = \"2h\"").unwrap_err().to_string();
        assert!(e.contains("life + ageout"), "{e}");
        let d = op("start = \"after 30s\"\nlife = \"3600s\"\nageout = \"1h\"").unwrap();
        assert_eq!(d.schedule.start, StartTime::After(Duration::from_secs(30)));
        assert_eq!(d.schedule.life, Some(Duration::from_secs(3600)));
        assert_eq!(d.schedule.ageout, Some(Duration::from_secs(3600)));
    }

    #[test]
    fn stamp_operation_keys() {
        let f: OperationFile = toml::from_str(
            "type = \"stamp\"\ntarget = \"127.0.0.1\"\nssid = 9\ntlvs = [\"extra-padding=8,cos\", \"location\"]\ndscp = 46",
        )
        .unwrap();
        let d = f.validate("operation[0]", 1).unwrap();
        assert_eq!(d.spec.port, 862, "STAMP's port by default");
        use ipsla_core::ops::stamp::TlvRequest as T;
        assert_eq!(
            d.spec.kind,
            OpKind::Stamp {
                packets: 10,
                interval: Duration::from_millis(20),
                ssid: 9,
                key: None,
                tlvs: vec![T::ExtraPadding(8), T::ClassOfService(46), T::Location],
            }
        );
        let bad: OperationFile = toml::from_str("type = \"stamp\"\ntarget = \"127.0.0.1\"\ntlvs = [\"hmac\"]").unwrap();
        let e = bad.validate("operation[0]", 1).unwrap_err().to_string();
        assert!(e.contains("operation[0].tlvs") && e.contains("allowed: extra-padding=N"), "{e}");
    }

    fn twamp(extra: &str) -> Result<OperationDef> {
        let f: OperationFile = toml::from_str(&format!("type = \"twamp\"\ntarget = \"127.0.0.1\"\n{extra}")).unwrap();
        f.validate("operation[4]", 4)
    }

    #[test]
    fn twamp_operation_keys() {
        let d = twamp("").unwrap();
        assert_eq!(d.spec.port, 862, "the TWAMP-Control port by default");
        assert_eq!(d.spec.control_label(), "twamp");
        assert_eq!(
            d.spec.kind,
            OpKind::Twamp {
                packets: 10,
                interval: Duration::from_millis(20),
                mode: SecurityMode::Unauthenticated,
                secret: None,
                padding: None
            }
        );
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("twamp.keys");
        std::fs::write(&keys, "# twampd pfs\nalice 74657374736563726574\n").unwrap();
        let kf = keys.display().to_string();
        let d = twamp(&format!(
            "mode = \"encrypted\"\ntwamp_key_id = \"alice\"\nsecret_file = \"{kf}\"\npadding = 100\nport = 8620\npackets = 50\n[[reaction]]\nelement = \"rtt\"\nthreshold_type = \"immediate\"\nthreshold = [50, 10]\n[[reaction]]\nelement = \"packetLossSD\"\nthreshold_type = \"consecutive 2\""
        ))
        .unwrap();
        assert_eq!(d.spec.port, 8620);
        let OpKind::Twamp { packets, mode, secret, padding, .. } = &d.spec.kind else { panic!("{:?}", d.spec.kind) };
        assert_eq!((*packets, *mode, *padding), (50, SecurityMode::Encrypted, Some(100)));
        assert_eq!(secret.as_ref(), Some(&Secret::new("alice", b"testsecret").unwrap()));
        // reactions work on the common result, jitter elements included
        assert_eq!(d.reactions.len(), 2);
        assert_eq!(d.reactions[0].element, Element::Rtt);
        assert_eq!((d.reactions[0].rising, d.reactions[0].falling), (50.0, 10.0));
        assert_eq!(d.reactions[1].element, Element::from_keyword("packetLossSD").unwrap());
        assert_eq!(d.reactions[1].threshold_type, ThresholdType::Consecutive(2));
        assert!(d.spec.kind.is_jitter());

        let e = twamp("mode = \"strong\"").unwrap_err().to_string();
        assert_eq!(e, "operation[4].mode: \"strong\" is not allowed; allowed: open, auth, encrypted, mixed");
        let e = twamp("mode = \"auth\"").unwrap_err().to_string();
        assert_eq!(e, "operation[4].twamp_key_id: mode auth needs twamp_key_id (an identity of secret_file)");
        let e = twamp("mode = \"mixed\"\ntwamp_key_id = \"alice\"").unwrap_err().to_string();
        assert!(e.starts_with("operation[4].secret_file: mode mixed needs secret_file"), "{e}");
        let e =
            twamp(&format!("mode = \"auth\"\ntwamp_key_id = \"bob\"\nsecret_file = \"{kf}\"")).unwrap_err().to_string();
        assert_eq!(e, format!("operation[4].twamp_key_id: \"bob\" is not an identity of {kf}"));
        let e = twamp("twamp_key_id = \"alice\"").unwrap_err().to_string();
        assert!(e.starts_with("operation[4].twamp_key_id: the open mode uses no key"), "{e}");
        let e = twamp("key_id = 3").unwrap_err().to_string();
        assert!(e.contains("operation[4].key_id") && e.contains("twamp_key_id"), "{e}");
        let e = twamp("control = \"v2\"").unwrap_err().to_string();
        assert!(e.starts_with("operation[4].control: twamp does not take control"), "{e}");
        let e = twamp("stateful = true").unwrap_err().to_string();
        assert!(
            e.starts_with("operation[4].stateful: the reflector of a TWAMP-Control session is always stateful"),
            "{e}"
        );
        let e = twamp("padding = 70000").unwrap_err().to_string();
        assert_eq!(e, "operation[4].padding: 70000 is out of range; allowed 0 to 65000");
        let bad = dir.path().join("bad.keys");
        std::fs::write(&bad, "alice zz\n").unwrap();
        let e = twamp(&format!("mode = \"auth\"\ntwamp_key_id = \"alice\"\nsecret_file = \"{}\"", bad.display()))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("operation[4].secret_file:") && e.contains("line 1"), "{e}");
        // the TWAMP keys on another operation
        let e = op("mode = \"auth\"").unwrap_err().to_string();
        assert_eq!(e, "operation[1].mode: only twamp and twamp-light take mode");
    }

    #[test]
    fn twamp_light_operation_keys() {
        let f: OperationFile =
            toml::from_str("type = \"twamp-light\"\ntarget = \"127.0.0.1\"\nstateful = true\ninterval = \"10ms\"")
                .unwrap();
        let d = f.validate("operation[5]", 5).unwrap();
        assert_eq!(d.spec.port, 862);
        assert_eq!(d.spec.control_label(), "none");
        assert_eq!(
            d.spec.kind,
            OpKind::TwampLight { packets: 10, interval: Duration::from_millis(10), padding: 27, stateful: true }
        );
        let f: OperationFile =
            toml::from_str("type = \"twamp-light\"\ntarget = \"127.0.0.1\"\nmode = \"auth\"").unwrap();
        let e = f.validate("operation[5]", 5).unwrap_err().to_string();
        assert!(
            e.starts_with("operation[5].mode: twamp-light runs in open mode only") && e.ends_with("allowed: open"),
            "{e}"
        );
    }
}
