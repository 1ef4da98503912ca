//! The SNMP subagent: CISCO-RTTMON-MIB over AgentX (RFC 2741), served through the host's SNMP
//! master agent (net-snmp `snmpd` with `master agentx`), so that pollers that read IP SLA from
//! Cisco routers (LibreNMS, Observium, Zabbix, Nagios `check_cisco_ip_sla`) read the agent
//! unchanged. docs/snmp.md lists the objects and how each maps to the run document.
//!
//! - `[snmp]` ([`SnmpFile`] → [`SnmpConfig`]): where the master listens; off without the section.
//! - [`mib`]: the objects, built from the operations and their latest stored runs into one
//!   ordered [`mib::View`] (pure: tested on exact OIDs and values).
//! - [`session`]: the AgentX session, a task on the agent's runtime stopped by its cancellation:
//!   open, register `1.3.6.1.4.1.9.9.42`, answer Get/GetNext/GetBulk, refuse Sets, reconnect with
//!   backoff when the master goes away. It reads the agent through [`Source`] on the blocking
//!   pool and holds no lock across an await, so a slow or absent master never delays a run.

pub mod mib;
pub mod session;

use crate::config::{ConfigError, Result};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The default master socket (net-snmp's `agentXSocket` default).
pub const DEFAULT_MASTER: &str = "unix:/var/agentx/master";

/// `[snmp]` as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SnmpFile {
    /// `unix:/PATH` or `tcp:ADDR:PORT` (default `unix:/var/agentx/master`).
    pub agentx: Option<String>,
}

/// Where the master agent listens for subagents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Master {
    /// A Unix stream socket.
    Unix(PathBuf),
    /// TCP.
    Tcp(SocketAddr),
}

impl std::fmt::Display for Master {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Master::Unix(p) => write!(f, "unix:{}", p.display()),
            Master::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// `[snmp]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnmpConfig {
    /// The master agent.
    pub master: Master,
}

impl SnmpFile {
    /// Validates the section; errors name `snmp.agentx` and the accepted forms.
    pub fn validate(&self) -> Result<SnmpConfig> {
        let text = self.agentx.as_deref().unwrap_or(DEFAULT_MASTER);
        let bad = |why: &str| {
            ConfigError(format!(
                "snmp.agentx: \"{text}\" {why}; write unix:/PATH (as snmpd's agentXSocket, default {DEFAULT_MASTER}) or tcp:ADDRESS:PORT (e.g. tcp:127.0.0.1:705)"
            ))
        };
        let master = if let Some(path) = text.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(bad("is not an absolute socket path"));
            }
            Master::Unix(PathBuf::from(path))
        } else if let Some(addr) = text.strip_prefix("tcp:") {
            Master::Tcp(addr.parse().map_err(|_| bad("is not an address:port"))?)
        } else if text.starts_with('/') {
            Master::Unix(PathBuf::from(text))
        } else {
            return Err(bad("is not a master address"));
        };
        Ok(SnmpConfig { master })
    }
}

/// What the subagent reads from the agent. Called on the blocking pool: it may take the
/// agent's locks and read the store, never while a session awaits.
pub trait Source: Send + Sync + 'static {
    /// The operations and their latest stored runs; `None` when the state cannot be read.
    fn rows(&self) -> Option<Vec<mib::Row>>;
    /// Changes whenever a run is stored or the configuration is reloaded: the view is rebuilt
    /// only then (or once a second, for the life counters).
    fn generation(&self) -> u64;
    /// Whether the agent runs the responder.
    fn responder(&self) -> bool;
}

/// One reaction transition whose action is `trap` or `trap-and-trigger`, sent to the master as
/// rttMonNotificationV2 (`1.3.6.1.4.1.9.9.42.2.0.8`).
#[derive(Debug, Clone, PartialEq)]
pub struct Trap {
    /// Operation id (rttMonCtrlAdminIndex).
    pub op: u32,
    /// The reaction's place in the operation's list, from 1 (rttMonReactConfigIndex).
    pub config: u32,
    /// `tag` (rttMonCtrlAdminLongTag).
    pub tag: String,
    /// What crossed (rttMonReactVar).
    pub element: ipsla_core::reaction::Element,
    /// Occurred or cleared (rttMonReactOccurred).
    pub occurred: bool,
    /// The value that crossed, in the element's unit (rttMonReactValue).
    pub value: f64,
    /// Thresholds (rttMonReactThresholdRising, rttMonReactThresholdFalling).
    pub rising: f64,
    /// See `rising`.
    pub falling: f64,
}

/// `RttMonReactVar` (CISCO-RTTMON-TC-MIB) of a reaction element; `None` for `pathChange`, which
/// the textual convention does not list.
pub fn react_var(e: ipsla_core::reaction::Element) -> Option<i32> {
    use ipsla_core::reaction::Element as E;
    Some(match e {
        E::Rtt => 1,
        E::JitterSdAvg => 2,
        E::JitterDsAvg => 3,
        E::PacketLossSd => 4,
        E::PacketLossDs => 5,
        E::Mos => 6,
        E::Timeout => 7,
        E::ConnectionLoss => 8,
        E::VerifyError => 9,
        E::JitterAvg => 10,
        E::Icpif => 11,
        E::PacketMia => 12,
        E::PacketLateArrival => 13,
        E::PacketOutOfSequence => 14,
        E::LatencyDsAvg => 27,
        E::LatencySdAvg => 28,
        E::PacketLossPercent => 29,
        E::PathChange => return None,
    })
}

impl Trap {
    /// The Notify varbinds: snmpTrapOID.0, then the notification's objects with this
    /// reaction's instance (rttMonHistoryCollectionAddress and rttMonEchoAdminLSPSelector, null
    /// for these types, are left out).
    pub fn varbinds(&self) -> Vec<ipsla_wire::agentx::VarBind> {
        use ipsla_wire::agentx::{Oid, Value, VarBind};
        let react = |col: u32| Oid([mib::RTTMON, &[1, 2, 19, 1, col, self.op, self.config]].concat());
        let int = |v: f64| Value::Integer(v.round().clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32);
        let mut v = vec![
            VarBind {
                name: Oid(vec![1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0]),
                value: Value::ObjectIdentifier(Oid([mib::RTTMON, &[2, 0, 8]].concat())),
            },
            VarBind {
                name: Oid([mib::RTTMON, &[1, 2, 1, 1, 12, self.op]].concat()),
                value: Value::OctetString(self.tag.chars().take(128).collect::<String>().into_bytes()),
            },
        ];
        // pathChange has no RttMonReactVar: the notification goes without that object
        if let Some(var) = react_var(self.element) {
            v.push(VarBind { name: react(2), value: Value::Integer(var) });
        }
        v.extend([
            VarBind { name: react(10), value: Value::Integer(if self.occurred { 1 } else { 2 }) },
            VarBind { name: react(9), value: int(self.value) },
            VarBind { name: react(5), value: int(self.rising) },
            VarBind { name: react(6), value: int(self.falling) },
        ]);
        v
    }
}

/// One operation as the tables need it (its latest run is added from the store).
pub(crate) fn snmp_row(o: &crate::engine::OpState, now: std::time::Instant) -> mib::Row {
    let spec = &o.def.spec;
    let kind = spec.op.kind();
    let ms = |d: std::time::Duration| d.as_millis().min(u128::from(u64::MAX)) as u64;
    // the kind's own configuration lines (`show ip sla configuration`): the URL, the name
    let mut described = Vec::new();
    spec.op.describe(&mut described);
    mib::Row {
        id: o.def.id,
        kind: kind.name(),
        tag: o.def.tag.clone(),
        target: spec.target.ip(),
        port: kind.default_port().map(|_| spec.port),
        source: spec.sockets.source_ip,
        source_port: spec.sockets.source_port,
        tos: spec.sockets.tos.unwrap_or(0),
        vrf: spec.sockets.vrf.clone(),
        threshold_ms: ms(spec.threshold),
        timeout_ms: ms(spec.timeout),
        frequency_s: o.def.schedule.frequency.as_secs(),
        control: spec.op.control_label() != "none",
        train: spec.op.train().map(|(n, span)| (n, ms(span / n.max(1)) as u32)),
        voice: spec.op.voice().map(|v| (v.codec, v.advantage)),
        precision: spec.op_as::<crate::ops::UdpJitter>().map(|j| j.precision),
        state: o.schedule.state(),
        runs: o.schedule.runs,
        life_left_s: o.schedule.time_to_live(now).map(|d| d.as_secs()),
        schedule: o.def.schedule,
        life_start_ns: o.schedule.life_started().map(|t| {
            // the Instant on the wall clock: now, moved by how far the start is from now
            let wall = ipsla_net::clock::wall_now().as_nanos() as i64;
            match t.checked_duration_since(now) {
                Some(ahead) => wall.saturating_add(ahead.as_nanos() as i64),
                None => wall.saturating_sub(now.duration_since(t).as_nanos() as i64),
            }
        }),
        url: described.iter().find(|(k, _)| *k == "URL").map(|(_, url)| {
            let version = described.iter().find(|(k, _)| *k == "HTTP Server Version");
            (url.clone(), version.map_or_else(String::new, |(_, v)| v.clone()))
        }),
        lookup: (kind.name() == "dns").then(|| {
            let name = described.iter().find(|(k, _)| *k == "Target host name").map(|(_, v)| v.clone());
            let server = described.iter().find(|(k, _)| *k == "Name server").and_then(|(_, v)| v.parse().ok());
            (name.unwrap_or_default(), server)
        }),
        latest: None,
        history: Vec::new(),
        hours: Vec::new(),
        reactions: {
            let active = o.active_reactions();
            o.def.reactions.iter().map(|r| (*r, active.contains(&r.element.keyword()))).collect()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: Option<&str>) -> std::result::Result<Master, String> {
        SnmpFile { agentx: s.map(String::from) }.validate().map(|c| c.master).map_err(|e| e.0)
    }

    #[test]
    fn the_master_address_is_validated_naming_the_key() {
        assert_eq!(v(None), Ok(Master::Unix("/var/agentx/master".into())));
        assert_eq!(v(Some("tcp:127.0.0.1:705")), Ok(Master::Tcp("127.0.0.1:705".parse().unwrap())));
        assert_eq!(v(Some("/run/agentx")), Ok(Master::Unix("/run/agentx".into())));
        assert_eq!(
            v(Some("tcp:localhost")).unwrap_err(),
            "snmp.agentx: \"tcp:localhost\" is not an address:port; write unix:/PATH (as snmpd's agentXSocket, default unix:/var/agentx/master) or tcp:ADDRESS:PORT (e.g. tcp:127.0.0.1:705)"
        );
        assert!(
            v(Some("unix:relative"))
                .unwrap_err()
                .starts_with("snmp.agentx: \"unix:relative\" is not an absolute socket path;")
        );
        assert!(
            v(Some("udp:1.2.3.4:705"))
                .unwrap_err()
                .starts_with("snmp.agentx: \"udp:1.2.3.4:705\" is not a master address;")
        );
        let e = crate::daemon::AgentFile::parse("[snmp]\nagentx = \"tcp:127.0.0.1:705\"\nport = 1\n").unwrap_err().0;
        assert!(e.contains("unknown field `port`"), "{e}");
    }

    #[test]
    fn a_trap_is_rttmonnotificationv2_with_the_reactions_instance() {
        use ipsla_core::reaction::Element;
        use ipsla_wire::agentx::{Oid, Value};
        let t = Trap {
            op: 4,
            config: 2,
            tag: "edge".into(),
            element: Element::Rtt,
            occurred: false,
            value: 162.6,
            rising: 150.0,
            falling: 100.0,
        };
        let got: Vec<(String, Value)> = t.varbinds().into_iter().map(|v| (v.name.to_string(), v.value)).collect();
        let oid = |s: &str| Oid::parse(s).unwrap();
        assert_eq!(
            got,
            vec![
                ("1.3.6.1.6.3.1.1.4.1.0".into(), Value::ObjectIdentifier(oid("1.3.6.1.4.1.9.9.42.2.0.8"))),
                ("1.3.6.1.4.1.9.9.42.1.2.1.1.12.4".into(), Value::OctetString(b"edge".to_vec())),
                ("1.3.6.1.4.1.9.9.42.1.2.19.1.2.4.2".into(), Value::Integer(1)),
                ("1.3.6.1.4.1.9.9.42.1.2.19.1.10.4.2".into(), Value::Integer(2)),
                ("1.3.6.1.4.1.9.9.42.1.2.19.1.9.4.2".into(), Value::Integer(163)),
                ("1.3.6.1.4.1.9.9.42.1.2.19.1.5.4.2".into(), Value::Integer(150)),
                ("1.3.6.1.4.1.9.9.42.1.2.19.1.6.4.2".into(), Value::Integer(100)),
            ]
        );
    }

    #[test]
    fn a_trap_action_needs_the_snmp_section() {
        let op = "[[operation]]\ntype = \"udp-echo\"\ntarget = \"127.0.0.1\"\n\
                  [[operation.reaction]]\nelement = \"rtt\"\n\
                  [[operation.reaction]]\nelement = \"timeout\"\nthreshold_type = \"immediate\"\naction = \"trap\"\n";
        let e = crate::daemon::AgentFile::parse(op).unwrap().validate().unwrap_err().0;
        assert_eq!(
            e,
            "operation[0].reaction[1].action: a trap is sent through the SNMP subagent; add an [snmp] section (docs/snmp.md) or use action = \"alert\""
        );
        let cfg = crate::daemon::AgentFile::parse(&format!("[snmp]\n{op}")).unwrap().validate().unwrap();
        assert_eq!(cfg.operations[0].reactions[1].action, ipsla_core::reaction::Action::Trap);
    }

    #[test]
    fn the_commented_example_is_valid() {
        let example = include_str!("../../../../examples/agent.toml");
        let start = example.find("\n# [snmp]").expect("examples/agent.toml has an [snmp] example");
        let text: String =
            example[start + 1..].lines().take(2).map(|l| l.trim_start_matches("# ")).collect::<Vec<_>>().join("\n");
        let cfg = crate::daemon::AgentFile::parse(&text).unwrap().validate().unwrap();
        assert_eq!(cfg.snmp, Some(SnmpConfig { master: Master::Unix("/var/agentx/master".into()) }));
    }
}
