//! The operation registry: every operation kind in one module behind [`Kind`], listed once in
//! [`REGISTRY`]. The configuration loader, `ipsla probe`'s flags, the runner, the reports and
//! `/metrics` all read it; adding a kind is one module here plus its line in [`REGISTRY`]
//! (docs/architecture.md).
//!
//! A kind declares its keys ([`Key`]) and builds, from one validated `[[operation]]` table, an
//! [`Operation`]: the kind-specific part of an [`OperationSpec`], which knows how to run once.

pub mod common;
pub mod configuration;
mod dns;
pub mod fields;
mod http;
mod icmp_echo;
mod icmp_jitter;
mod path;
pub mod reference;
mod stamp;
mod tcp_connect;
mod twamp;
mod twamp_light;
mod udp_echo;
mod udp_jitter;

pub use common::{ClockSync, IpSlaControl, OperationDef, check_recurring, start_time, tolerance};
pub use fields::{Fields, Flag, Key, Namer, Ty};
pub use http::{Http, HttpDetail};
pub use icmp_echo::IcmpEcho;
pub use icmp_jitter::IcmpJitter;
pub use path::{IcmpPath, PathDetail};
pub use stamp::Stamp;
pub use tcp_connect::TcpConnect;
pub use twamp::Twamp;
pub use twamp_light::TwampLight;
pub use udp_echo::UdpEcho;
pub use udp_jitter::UdpJitter;

use crate::config::Result;
use crate::runner::{OperationSpec, RunContext, RunError, RunOutcome};
use ipsla_core::ops::VoiceConfig;
use std::any::Any;
use std::time::Duration;

/// Every operation kind, in the order help and documentation list them.
pub static REGISTRY: &[&dyn Kind] = &[
    &udp_jitter::KIND,
    &udp_echo::KIND,
    &tcp_connect::KIND,
    &icmp_echo::KIND,
    &icmp_jitter::KIND,
    &path::ECHO,
    &path::JITTER,
    &stamp::KIND,
    &twamp::KIND,
    &twamp_light::KIND,
    &dns::KIND,
    &http::KIND,
];

/// The kind named `name` (the `type` key, `ipsla probe NAME`).
pub fn find(name: &str) -> Option<&'static dyn Kind> {
    REGISTRY.iter().copied().find(|k| k.name() == name)
}

/// The names of every kind, for error messages.
pub fn names() -> String {
    REGISTRY.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
}

/// A kind's own part of a run's report (http's phases, a path's hops): top-level keys of the JSON
/// document beside the common ones, written by its run ([`RunOutcome::detail`]) and read back by
/// its [`Kind::text`] and [`Kind::gauge_values`], from a fresh run or from the store alike. Empty
/// for the kinds that have none.
pub type Detail = serde_json::Map<String, serde_json::Value>;

/// One family of a kind's own latest-value gauges in `/metrics` (`ipsla_{name}`), labelled by the
/// operation and the labels its values carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GaugeDef {
    /// Name after `ipsla_`, unit suffix included (`http_phase_seconds`).
    pub name: &'static str,
    /// The `# HELP` line.
    pub help: &'static str,
}

/// One value of a kind's gauge: a run that has no value for a series gives none, and the series
/// is gone from `/metrics` until a run has one again.
#[derive(Debug, Clone, PartialEq)]
pub struct GaugeValue {
    /// The family's [`GaugeDef::name`].
    pub family: &'static str,
    /// Labels after `op`.
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: f64,
}

/// One operation kind: its name, its keys, and how a validated table becomes an [`Operation`].
pub trait Kind: Sync {
    /// The IOS operation name (`udp-jitter`), the `type` key's value.
    fn name(&self) -> &'static str;
    /// One line for `ipsla probe --help`.
    fn about(&self) -> &'static str;
    /// An `ipsla probe` command line for this kind's `--help`, with what it measures in
    /// parentheses after it.
    fn example(&self) -> &'static str;
    /// Its keys beyond [`common::COMMON`], in groups ([`common::TRAIN`], ...).
    fn keys(&self) -> &'static [&'static [Key]];
    /// The measurement port when `port` is not set; `None`: the kind has no port (ICMP).
    fn default_port(&self) -> Option<u16>;
    /// True when its runs have jitter statistics (a train of probes: jitter, one-way delay,
    /// loss per direction); the reactions, stored columns and metrics that need them apply.
    fn jitter(&self) -> bool {
        false
    }
    /// False for the kinds whose measurement includes the lookup of their target (http's URL,
    /// dns's name): their `target` stays text ([`crate::runner::Target::Name`]) for `build` to
    /// validate. True for the others, whose target is resolved once when the configuration is read.
    fn resolves_target(&self) -> bool {
        true
    }
    /// True when its runs discover a path (the `pathChange` reaction applies).
    fn paths(&self) -> bool {
        false
    }
    /// Why this kind refuses a key other kinds take, when a plain "does not take" is not enough.
    fn refuses(&self, _key: &str) -> Option<&'static str> {
        None
    }
    /// Builds the operation from its table; `base` holds the common keys, already validated.
    fn build(&self, f: &Fields, base: &Base) -> Result<Box<dyn Operation>>;
    /// Its lines of the text report (`show ip sla statistics`), after the common ones, from its
    /// part of the report.
    fn text(&self, _detail: &Detail, _w: &mut String) {}
    /// The families of its own gauges in `/metrics`.
    fn gauges(&self) -> &'static [GaugeDef] {
        &[]
    }
    /// Its own plots on the operation's page beyond RTT (a path operation's hops), with their
    /// captions, from its part of the latest run's report.
    fn plots(&self, _detail: &Detail) -> Vec<(crate::store::PlotSeries, String)> {
        Vec::new()
    }
    /// The values of its gauges for one run, from its part of the report.
    fn gauge_values(&self, _detail: &Detail) -> Vec<GaugeValue> {
        Vec::new()
    }
}

/// The common keys of an operation, validated, as a kind's `build` sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct Base {
    /// Target: an address, or the text of the kinds that resolve it themselves.
    pub target: crate::runner::Target,
    /// Timeout.
    pub timeout: Duration,
    /// The `dscp` key, for STAMP's class-of-service TLV.
    pub dscp: Option<u8>,
}

/// Equality of operations behind `dyn` (a reload keeps an operation whose definition is equal).
pub trait DynEq {
    /// As `Any`, for downcasting.
    fn as_any(&self) -> &dyn Any;
    /// Equal to `other` (same type and value).
    fn dyn_eq(&self, other: &dyn Any) -> bool;
}

impl<T: PartialEq + Any> DynEq for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn dyn_eq(&self, other: &dyn Any) -> bool {
        other.downcast_ref::<T>() == Some(self)
    }
}

/// The kind-specific part of a validated operation: what it sends, and how to run it once.
pub trait Operation: DynEq + std::fmt::Debug + Send + Sync {
    /// Its kind.
    fn kind(&self) -> &'static dyn Kind;
    /// Probes one run sends and how long sending them takes (the jitter family).
    fn train(&self) -> Option<(u32, Duration)> {
        None
    }
    /// The codec and score model when it computes voice scores.
    fn voice(&self) -> Option<VoiceConfig> {
        None
    }
    /// `v1`, `v2`, `twamp` (TWAMP-Control) or `none`.
    fn control_label(&self) -> &'static str {
        "none"
    }
    /// It opens ICMP sockets (`CAP_NET_RAW` for the raw-socket fallback).
    fn icmp(&self) -> bool {
        false
    }
    /// Its own lines of `show ip sla configuration`, after the common ones (IOS's words where
    /// IOS has the setting): see [`configuration`].
    fn describe(&self, _out: &mut Vec<(&'static str, String)>) {}
    /// Runs once on the calling thread with the control sequence, runtime (TCP and TWAMP) and
    /// hooks (live events, cancellation) of `ctx`.
    fn run(&self, spec: &OperationSpec, ctx: &RunContext<'_>) -> std::result::Result<RunOutcome, RunError>;
}

/// Every key some kind takes, with the kinds that take it (for "only X and Y take Z").
pub fn takers(key: &str) -> Vec<&'static str> {
    REGISTRY.iter().filter(|k| k.keys().iter().any(|g| g.iter().any(|x| x.name == key))).map(|k| k.name()).collect()
}

/// `a`, `a and b`, `a, b and c`.
pub fn and_list(v: &[&str]) -> String {
    match v {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// All keys of `kind`: the common ones, then its own.
pub fn all_keys(kind: &dyn Kind) -> Vec<&'static Key> {
    let own = kind.keys().iter().flat_map(|g| g.iter());
    common::COMMON.iter().chain(own).collect()
}

#[cfg(test)]
mod tests;
