//! What every operation has whatever its kind: the common keys ([`COMMON`]: target, timeout,
//! sockets, schedule, reactions, history), the key groups several kinds share ([`TRAIN`],
//! [`CLOCK`], [`IPSLA_CONTROL`]), and [`validate`], which turns one `[[operation]]` table into an
//! [`OperationDef`] with the kind's help.

use super::fields::{Fields, Flag, Key, Namer, Ty};
use super::{Base, Kind, REGISTRY, all_keys, and_list, find, names, takers};
use crate::config::{ConfigError, Result, parse_duration};
use crate::runner::{ClockCheck, ClockSyncMode, OperationSpec, Target, Tolerance};
use crate::store::{HistoryConfig, MAX_HISTORY_HOURS};
use ipsla_core::ops::OperationResult;
use ipsla_core::ops::control::{ControlMode, ControlOp, ControlRequest, V2Auth};
use ipsla_core::ops::jitter::MAX_PACKETS;
use ipsla_core::reaction::{ALL_ELEMENTS, Action, Element, ReactionConfig, ThresholdType};
use ipsla_core::schedule::{ScheduleConfig, StartTime};
use ipsla_net::probe::SocketOptions;
use ipsla_wire::cisco::control_v2::AuthMode;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

const START_HELP: &str =
    "now | pending | \"after DURATION\" | \"random DURATION\" (up to 10s) | \"at HH:MM[:SS]\" (UTC); default now";

/// The keys every operation takes (`port` only the kinds that have one).
pub const COMMON: &[Key] = &[
    Key::new("id", Ty::Int, "Operation number (IOS ip sla N); default: its position, from 1").config_only(),
    Key::new("type", Ty::Text, "The operation kind").config_only(),
    Key::new("target", Ty::Text, "Target host (name or address)").config_only(),
    Key::new("tag", Ty::Text, "Free text shown with the operation").config_only(),
    Key::new("source_ip", Ty::Addr, "Source address"),
    Key::new("source_port", Ty::Int, "Source port (0 = any)"),
    Key::new("tos", Ty::Int, "IPv4 ToS / IPv6 traffic class byte, 0-255"),
    Key::new("dscp", Ty::Int, "DSCP, 0-63 (sets ToS = DSCP << 2)"),
    Key::new("vrf", Ty::Text, "VRF (or any device) to send through: SO_BINDTODEVICE"),
    Key::new(
        "kernel_timestamps",
        Ty::Bool,
        "Kernel receive timestamps (default true; false or --no-kernel-timestamps: the userspace clock)",
    )
    .flag(Flag::Negated("no-kernel-timestamps")),
    Key::new("timeout", Ty::Duration, "Operation timeout (IOS default 5000 ms)"),
    Key::new(
        "threshold",
        Ty::Duration,
        "RTT threshold for the over-threshold count and return code (IOS default 5000 ms)",
    ),
    Key::new(
        "frequency",
        Ty::Duration,
        "Time between the starts of two runs, 1s-7d (a bare number is seconds, as IOS), not shorter than timeout + packets × interval (agent default 60s; probe default 1s or one train)",
    ),
    Key::new("life", Ty::Duration, "How long the operation runs, or \"forever\" (default)").config_only(),
    Key::new("start", Ty::Text, START_HELP).config_only(),
    Key::new("ageout", Ty::Duration, "How long a finished operation stays configured").config_only(),
    Key::new("recurring", Ty::Bool, "Start again at the same time every day (life under one day)").config_only(),
    Key::new(
        "history_hours",
        Ty::Int,
        "Hours of hourly aggregates kept, 0-25 (IOS hours-of-statistics-kept, default 2)",
    )
    .config_only(),
    Key::new(
        "distributions",
        Ty::Int,
        "Distribution buckets per hour, 1-20 (IOS distributions-of-statistics-kept, default 1)",
    )
    .config_only(),
    Key::new(
        "distribution_interval",
        Ty::Int,
        "Width of a distribution bucket, ms, 1-100 (IOS statistics-distribution-interval, default 20)",
    )
    .config_only(),
    Key::new("reaction", Ty::Tables, "[[operation.reaction]] tables (IOS reaction-configuration)").config_only(),
    Key::new("trigger", Ty::IntList, "Operations this one's trigger reactions start (IOS reaction-trigger)")
        .config_only(),
];

/// A train of probes (the jitter family).
pub const TRAIN: &[Key] = &[
    Key::new("packets", Ty::Int, "Probes per operation (IOS num-packets, default 10; max 60000)")
        .aliases(&["num-packets"]),
    Key::new("interval", Ty::Duration, "Interval between probes (IOS default 20 ms)"),
];

/// Clock synchronisation, for one-way delays.
pub const CLOCK: &[Key] = &[
    Key::new(
        "clock_sync",
        Ty::Choice(&["none", "ntp", "ptp", "assume"]),
        "Whether the two clocks are synchronised (one-way delay is reported only then; default none)",
    ),
    Key::new(
        "clock_tolerance",
        Ty::Text,
        "Clock tolerance for clock_sync ntp|ptp: an absolute error (\"500us\", default \"1ms\") or a percentage of the measured one-way delay (\"10%\"), as IOS clock-tolerance ntp oneway",
    ),
];

/// The IP SLA control phase (udp-jitter, udp-echo, tcp-connect).
pub const IPSLA_CONTROL: &[Key] = &[
    Key::new("control", Ty::Choice(&["v1", "v2", "none"]), "Control protocol: v1 (UDP 1967, what IOS sends; default), v2 (RFC 6812, UDP 1167) or none (a permanent port, IOS control disable)")
        .shortcut("no-control", "none"),
    Key::new("control_port", Ty::Int, "Responder control port (default 1967 for v1, 1167 for v2)"),
    Key::new("auth", Ty::Choice(&["sha256", "hmac-sha256"]), "v2 authentication mode (needs key_id and secret_file)"),
    Key::new("key_id", Ty::Int, "v2 key id"),
    Key::new("secret_file", Ty::Path, "File holding the v2 shared secret (its bytes, trailing newline removed)"),
];

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
    /// The schedule keys written on the operation (a group refuses them on its members).
    pub schedule_keys: Vec<&'static str>,
    /// Threshold reactions.
    pub reactions: Vec<ReactionConfig>,
    /// Operations started by this one's trigger actions.
    pub triggers: Vec<u32>,
    /// Hourly aggregates kept.
    pub history: HistoryConfig,
    /// The mesh test and sites this operation measures, when a mesh file made it.
    pub mesh: Option<crate::mesh::MeshPair>,
}

/// One `[[operation.reaction]]` (IOS `ip sla reaction-configuration N react ELEMENT ...`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct ReactionFile {
    element: String,
    /// never | immediate | "consecutive N" | "xofy X Y" | "average N" (default never, as IOS)
    threshold_type: Option<String>,
    /// [rising, falling]
    threshold: Option<[f64; 2]>,
    /// none | alert | trigger | alert-and-trigger | trap | trap-and-trigger (default alert)
    action: Option<String>,
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
    fn validate(&self, key: &str, jitter: bool, voice: bool, path: bool) -> Result<ReactionConfig> {
        let element = Element::from_keyword(&self.element).ok_or_else(|| {
            ConfigError(format!(
                "{key}.element: \"{}\" is not a reaction element; allowed: {}",
                self.element,
                ALL_ELEMENTS.iter().map(|e| e.keyword()).collect::<Vec<_>>().join(", ")
            ))
        })?;
        if !element.applies(jitter, voice, path) {
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
        let actions = [
            ("none", Action::None),
            ("alert", Action::Alert),
            ("trigger", Action::Trigger),
            ("alert-and-trigger", Action::AlertAndTrigger),
            ("trap", Action::Trap),
            ("trap-and-trigger", Action::TrapAndTrigger),
        ];
        let action = match self.action.as_deref() {
            None => Action::Alert,
            Some(a) => actions.iter().find(|(n, _)| *n == a).map(|(_, x)| *x).ok_or_else(|| {
                ConfigError(format!(
                    "{key}.action: \"{a}\" is not allowed; allowed: none, alert, trigger, alert-and-trigger, trap, trap-and-trigger"
                ))
            })?,
        };
        Ok(ReactionConfig { element, threshold_type, rising, falling, action })
    }
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

/// A data pattern key (hex).
pub fn pattern(f: &Fields, name: &str) -> Result<Vec<u8>> {
    let s = f.text(name)?.unwrap_or("abcd");
    let p = hex::decode(s.trim_start_matches("0x"))
        .map_err(|_| f.error(name, format!("\"{s}\" is not hex (e.g. abcd)")))?;
    if p.is_empty() {
        return Err(f.error(name, "the pattern is empty"));
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

/// Clock synchronisation keys ([`CLOCK`]), validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockSync {
    /// How one-way delays may be trusted.
    pub mode: ClockSyncMode,
    /// Within what.
    pub tolerance: Tolerance,
}

impl ClockSync {
    /// Not synchronised (the kinds without one-way delay).
    pub const NONE: ClockSync = ClockSync { mode: ClockSyncMode::None, tolerance: Tolerance::AbsUs(1000) };

    /// Reads [`CLOCK`].
    pub fn from_fields(f: &Fields) -> Result<ClockSync> {
        Ok(ClockSync {
            mode: f.choose(
                "clock_sync",
                ClockSyncMode::None,
                &[
                    ("none", ClockSyncMode::None),
                    ("ntp", ClockSyncMode::Ntp),
                    ("ptp", ClockSyncMode::Ptp),
                    ("assume", ClockSyncMode::Assume),
                ],
            )?,
            tolerance: tolerance(&f.key("clock_tolerance"), f.text("clock_tolerance")?.unwrap_or("1ms"))?,
        })
    }

    /// Before a run: may one-way delays be reported.
    pub fn check(&self) -> (bool, ClockCheck) {
        crate::runner::clock_check(self.mode, self.tolerance)
    }

    /// After a run: drops one-way delays that fail a percentage tolerance.
    pub fn apply(&self, r: &mut OperationResult, cs: &mut ClockCheck) {
        crate::runner::apply_percent_tolerance(r, self.tolerance, cs)
    }
}

/// A train's keys ([`TRAIN`]) with the default interval.
pub fn train(f: &Fields, default_packets: u32, default_interval: Duration) -> Result<(u32, Duration)> {
    let packets = f.range("packets", default_packets, 1, MAX_PACKETS)?;
    let interval = f.duration("interval", default_interval, Duration::ZERO, Duration::from_secs(60))?;
    Ok((packets, interval))
}

/// The IP SLA control phase ([`IPSLA_CONTROL`]), validated.
#[derive(Debug, Clone, PartialEq)]
pub struct IpSlaControl {
    /// v1, v2 (with its authentication) or none.
    pub mode: ControlMode,
    /// The responder's control port.
    pub port: u16,
}

impl IpSlaControl {
    /// Reads [`IPSLA_CONTROL`].
    pub fn from_fields(f: &Fields) -> Result<IpSlaControl> {
        let ctl = f.choose("control", "v1", &[("v1", "v1"), ("v2", "v2"), ("none", "none")])?;
        let auth = match (f.text("auth")?, f.int::<u16>("key_id")?, f.path("secret_file")?) {
            (None, None, None) => None,
            (Some(_), Some(id), Some(file)) => {
                if ctl != "v2" {
                    return Err(f.error(
                        "auth",
                        "authentication is defined for control v2 only (the IOS v1 key-chain format is unknown)",
                    ));
                }
                let mode = f.choose(
                    "auth",
                    AuthMode::HmacSha256,
                    &[("sha256", AuthMode::Sha256), ("hmac-sha256", AuthMode::HmacSha256)],
                )?;
                let key = f.key("secret_file");
                let mut secret = crate::config::read_limited(&key, &file, crate::config::MAX_KEY_FILE_LEN)?;
                while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    secret.pop();
                }
                if secret.is_empty() {
                    return Err(f.error("secret_file", format!("{} is empty", file.display())));
                }
                Some(V2Auth { mode, key_id: id, secret })
            }
            _ => {
                return Err(f.error(
                    "auth",
                    format!("{}, {} and {} go together", f.short("auth"), f.short("key_id"), f.short("secret_file")),
                ));
            }
        };
        Ok(match ctl {
            "v2" => IpSlaControl { mode: ControlMode::V2(auth), port: f.int("control_port")?.unwrap_or(1167) },
            "none" => IpSlaControl { mode: ControlMode::None, port: 0 },
            _ => IpSlaControl { mode: ControlMode::V1, port: f.int("control_port")?.unwrap_or(1967) },
        })
    }

    /// `v1`, `v2` or `none`.
    pub fn label(&self) -> &'static str {
        match self.mode {
            ControlMode::None => "none",
            ControlMode::V1 => "v1",
            ControlMode::V2(_) => "v2",
        }
    }

    /// The control request for one run.
    pub fn request(
        &self,
        spec: &OperationSpec,
        op: ControlOp,
        duration: Duration,
        local: SocketAddr,
    ) -> ControlRequest {
        ControlRequest {
            operation: op,
            target: spec.addr(),
            port: spec.port,
            duration,
            control_local: local,
            measurement_local: local,
            control_remote: SocketAddr::new(spec.addr(), self.port),
            nonce: rand::random(),
        }
    }
}

/// Rejects keys the kind does not take, naming who does take them.
fn check_keys(f: &Fields, table: &toml::Table, kind: &dyn Kind) -> Result<()> {
    let mine = all_keys(kind);
    for key in table.keys() {
        if mine.iter().any(|k| k.name == key) {
            continue;
        }
        let who = takers(key);
        if who.is_empty() {
            let every: Vec<&str> = COMMON
                .iter()
                .chain(REGISTRY.iter().flat_map(|k| k.keys().iter().flat_map(|g| g.iter())))
                .map(|k| k.name)
                .collect();
            let near =
                every.iter().filter(|c| strsim::levenshtein(c, key) <= 2).min_by_key(|c| strsim::levenshtein(c, key));
            return Err(f.error(
                key,
                match near {
                    Some(n) => format!("not an operation key; did you mean {n}?"),
                    None => "not an operation key (examples/agent.toml lists every key)".to_string(),
                },
            ));
        }
        let name = kind.name();
        return Err(f.error(
            key,
            match kind.refuses(key) {
                Some(why) => format!("{name} does not take {key}: {why}"),
                None => format!("{name} does not take {key} (only {} do)", and_list(&who)),
            },
        ));
    }
    Ok(())
}

/// Validates one `[[operation]]` table (or `ipsla probe`'s flags, gathered into one); errors name
/// keys with `namer`. `default_id` is used when `id` is not set.
pub fn validate(table: &toml::Table, namer: Namer, default_id: u32) -> Result<OperationDef> {
    let f = Fields::new(table, namer);
    let kind_name = f.text("type")?.ok_or_else(|| f.error("type", format!("missing; allowed: {}", names())))?;
    let kind = find(kind_name)
        .ok_or_else(|| f.error("type", format!("\"{kind_name}\" is not an operation; allowed: {}", names())))?;
    check_keys(&f, table, kind)?;
    let target = f.text("target")?.ok_or_else(|| f.error("target", "missing: the host to measure"))?;
    let target = match kind.resolves_target() {
        true => Target::Ip(resolve(&f.key("target"), target)?),
        false => Target::Name(target.to_string()),
    };
    let id = f.int::<u32>("id")?.unwrap_or(default_id);
    let timeout =
        f.duration("timeout", Duration::from_secs(5), Duration::from_millis(1), Duration::from_secs(604_800))?;
    let threshold = f.duration("threshold", Duration::from_secs(5), Duration::ZERO, Duration::from_secs(60))?;
    let dscp = f.int::<u8>("dscp")?;
    if let Some(d) = dscp {
        crate::config::check_range(&f.key("dscp"), d, 0, 63)?;
    }
    let tos = f.int::<u8>("tos")?;
    if tos.is_some() && dscp.is_some() {
        return Err(
            f.error("tos", format!("{} and {} set the same byte; set one of them", f.short("tos"), f.short("dscp")))
        );
    }
    let source_ip = f.addr("source_ip")?;
    if let (Some(src), Some(target)) = (source_ip, target.ip())
        && src.is_ipv6() != target.is_ipv6()
    {
        let family = |a: IpAddr| if a.is_ipv6() { "IPv6" } else { "IPv4" };
        return Err(f.error(
            "source_ip",
            format!(
                "{src} is {} but the target {target} is {}; give an {} source address or leave it out",
                family(src),
                family(target),
                family(target)
            ),
        ));
    }
    let base = Base { target: target.clone(), timeout, dscp };
    let op = kind.build(&f, &base)?;
    let spec = OperationSpec {
        op: Arc::from(op),
        target,
        port: match kind.default_port() {
            Some(d) => f.int("port")?.unwrap_or(d),
            None => 0,
        },
        sockets: SocketOptions {
            source_ip,
            source_port: f.int("source_port")?.unwrap_or(0),
            tos: tos.or(dscp.map(|d| d << 2)),
            vrf: f.text("vrf")?.map(str::to_string),
            kernel_timestamps: f.bool("kernel_timestamps")?.unwrap_or(true),
        },
        timeout,
        threshold,
    };
    let frequency = frequency(&f, &spec)?;
    let life = match f.duration_text("life")? {
        None | Some("forever") => None,
        Some(s) => Some(parse_duration(&f.key("life"), s, Duration::from_secs(1), Duration::from_secs(2_147_483_647))?),
    };
    let schedule = ScheduleConfig {
        frequency: frequency.unwrap_or(Duration::from_secs(60)),
        random_frequency: None,
        life,
        start: start_time(&f.key("start"), f.text("start")?.unwrap_or("now"))?,
        ageout: f
            .duration_text("ageout")?
            .map(|s| parse_duration(&f.key("ageout"), s, Duration::ZERO, Duration::from_secs(2_073_600)))
            .transpose()?,
        recurring: f.bool("recurring")?.unwrap_or(false),
    };
    if schedule.recurring {
        check_recurring(&f.key("recurring"), schedule.life, schedule.ageout)?;
    }
    let jitter = kind.jitter();
    let voice = spec.op.voice().is_some();
    let reactions = f
        .deserialize::<Vec<ReactionFile>>("reaction")?
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, r)| r.validate(&format!("{}[{i}]", f.key("reaction")), jitter, voice, kind.paths()))
        .collect::<Result<Vec<_>>>()?;
    Ok(OperationDef {
        id,
        tag: f.text("tag")?.unwrap_or_default().to_string(),
        spec,
        schedule,
        schedule_keys: ["frequency", "start", "life", "ageout", "recurring"]
            .into_iter()
            .filter(|k| f.is_set(k))
            .collect(),
        reactions,
        triggers: f.deserialize::<Vec<u32>>("trigger")?.unwrap_or_default(),
        history: HistoryConfig {
            hours: f.range("history_hours", 2, 0, MAX_HISTORY_HOURS)?,
            distributions: f.range("distributions", 1, 1, 20)?,
            interval_ms: f.range("distribution_interval", 20, 1, 100)?,
        },
        mesh: None,
    })
}

/// The `frequency` key when set: 1 s to 7 days and, as IOS insists, not shorter than one run
/// (timeout + packets × interval).
pub fn frequency(f: &Fields, spec: &OperationSpec) -> Result<Option<Duration>> {
    if !f.is_set("frequency") {
        return Ok(None);
    }
    let frequency = f.seconds_or_duration(
        "frequency",
        Duration::from_secs(60),
        Duration::from_secs(1),
        Duration::from_secs(604_800),
    )?;
    let min = spec.min_frequency();
    if frequency < min {
        return Err(f.error(
            "frequency",
            format!(
                "{} is shorter than one run (timeout + packets × interval = {}); IOS refuses that too",
                humantime::format_duration(frequency),
                humantime::format_duration(min)
            ),
        ));
    }
    Ok(Some(frequency))
}
