//! An operation's configuration as IOS `show ip sla configuration` words it: the common lines
//! here, each kind's own lines from [`super::Operation::describe`]. Served as JSON at
//! `/api/v1/operations/{id}/configuration` and printed by `ipsla show configuration`.

use super::common::{ClockSync, IpSlaControl, OperationDef};
use crate::api::{ConfigLine, OperationConfiguration};
use crate::runner::{ClockSyncMode, Tolerance};
use ipsla_core::ops::control::ControlMode;
use ipsla_core::reaction::{Action, ThresholdType};
use ipsla_core::schedule::StartTime;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// Whole milliseconds, as IOS prints its ms settings.
pub fn ms(d: Duration) -> String {
    d.as_millis().to_string()
}

/// Seconds, whole when they are (IOS settings are whole seconds; ours may be finer).
fn secs(d: Duration) -> String {
    if d.subsec_nanos() == 0 { d.as_secs().to_string() } else { format!("{}", d.as_secs_f64()) }
}

/// `20/10`: IOS "Packet Interval (milliseconds)/Number of packets".
pub fn train_line(interval: Duration, packets: u32) -> (&'static str, String) {
    ("Packet Interval (milliseconds)/Number of packets", format!("{}/{packets}", ms(interval)))
}

impl ClockSync {
    /// The clock lines of a kind with one-way delays.
    pub fn describe(&self, out: &mut Vec<(&'static str, String)>) {
        let mode = match self.mode {
            ClockSyncMode::None => "none (no one-way delays)",
            ClockSyncMode::Ntp => "ntp",
            ClockSyncMode::Ptp => "ptp",
            ClockSyncMode::Assume => "assumed",
        };
        out.push(("Clock synchronisation", mode.into()));
        if self.mode != ClockSyncMode::None {
            let t = match self.tolerance {
                Tolerance::AbsUs(us) => format!("{us} microseconds"),
                Tolerance::Percent(p) => format!("{p} percent"),
            };
            out.push(("NTP Sync Tolerance", t));
        }
    }
}

impl IpSlaControl {
    /// IOS's "Control Packets" line and the protocol that carries them.
    pub fn describe(&self, out: &mut Vec<(&'static str, String)>) {
        let (on, proto) = match &self.mode {
            ControlMode::None => ("disabled", None),
            ControlMode::V1 => ("enabled", Some("v1".to_string())),
            ControlMode::V2(None) => ("enabled", Some("v2".to_string())),
            ControlMode::V2(Some(a)) => ("enabled", Some(format!("v2, authenticated (key id {})", a.key_id))),
        };
        out.push(("Control Packets", on.into()));
        if let Some(p) = proto {
            out.push(("Control protocol/port", format!("{p}/{}", self.port)));
        }
    }
}

fn start_text(s: &StartTime) -> String {
    match s {
        StartTime::Now => "Start Time already passed".into(),
        StartTime::Pending => "Pending trigger".into(),
        StartTime::After(d) => format!("After {} seconds", d.as_secs()),
        StartTime::Random(d) => format!("Random, within {} seconds", d.as_secs()),
        StartTime::At(t) => {
            let s = t.as_secs();
            format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
        }
    }
}

fn threshold_type(t: ThresholdType) -> String {
    match t {
        ThresholdType::Never => "never".into(),
        ThresholdType::Immediate => "immediate".into(),
        ThresholdType::Consecutive(n) => format!("consecutive {n}"),
        ThresholdType::XOfY(x, y) => format!("xofy {x} {y}"),
        ThresholdType::Average(n) => format!("average {n}"),
    }
}

fn action(a: Action) -> &'static str {
    match a {
        Action::None => "none",
        Action::Alert => "trapOnly",
        Action::Trigger => "triggerOnly",
        Action::AlertAndTrigger => "trapAndTrigger",
        Action::Trap => "trapOnly (SNMP)",
        Action::TrapAndTrigger => "trapAndTrigger (SNMP)",
    }
}

/// The lines of one configuration as they are added.
#[derive(Default)]
struct Lines(Vec<ConfigLine>);

impl Lines {
    /// `label: value` at the top level.
    fn top(&mut self, label: impl Into<String>, value: String) {
        self.0.push(ConfigLine { label: label.into(), value: Some(value), level: 0 });
    }
    /// A heading and its `label: value` lines one level deeper.
    fn heading<L: Into<String>>(&mut self, label: &str, items: impl IntoIterator<Item = (L, String)>) {
        self.0.push(ConfigLine { label: label.into(), value: None, level: 0 });
        self.0.extend(items.into_iter().map(|(l, v)| ConfigLine { label: l.into(), value: Some(v), level: 1 }));
    }
}

impl OperationDef {
    /// This operation's configuration, defaults included.
    pub fn configuration(&self) -> OperationConfiguration {
        let spec = &self.spec;
        let kind = spec.op.kind();
        let mut lines = Lines::default();
        lines.top("Entry number", self.id.to_string());
        lines.top("Owner", String::new());
        lines.top("Tag", self.tag.clone());
        lines.top("Operation timeout (milliseconds)", ms(spec.timeout));
        lines.top("Type of operation to perform", kind.name().into());
        // a name or URL is the kind's own line (IOS: "URL", "Target Host Name")
        if let Some(target) = spec.target.ip() {
            let any: IpAddr =
                if target.is_ipv6() { Ipv6Addr::UNSPECIFIED.into() } else { Ipv4Addr::UNSPECIFIED.into() };
            let source = spec.sockets.source_ip.unwrap_or(any);
            lines.top("Target address/Source address", format!("{target}/{source}"));
        }
        if kind.default_port().is_some() {
            lines.top("Target port/Source port", format!("{}/{}", spec.port, spec.sockets.source_port));
        }
        lines.top("Type Of Service parameter", format!("0x{:X}", spec.sockets.tos.unwrap_or(0)));
        let mut own = Vec::new();
        spec.op.describe(&mut own);
        for (label, value) in own {
            lines.top(label, value);
        }
        lines.top("Kernel receive timestamps", if spec.sockets.kernel_timestamps { "yes" } else { "no" }.into());
        lines.top("Vrf Name", spec.sockets.vrf.clone().unwrap_or_default());
        let s = &self.schedule;
        let frequency = match s.random_frequency {
            Some((lo, hi)) => format!("random {} to {}", secs(lo), secs(hi)),
            None => secs(s.frequency),
        };
        lines.heading(
            "Schedule",
            [
                ("Operation frequency (seconds)", frequency),
                ("Next Scheduled Start Time", start_text(&s.start)),
                ("Randomly Scheduled", if s.random_frequency.is_some() { "TRUE" } else { "FALSE" }.into()),
                ("Life (seconds)", s.life.map_or("Forever".into(), secs)),
                ("Entry Ageout (seconds)", s.ageout.map_or("never".into(), secs)),
                ("Recurring (Starting Everyday)", if s.recurring { "TRUE" } else { "FALSE" }.into()),
            ],
        );
        lines.top("Threshold (milliseconds)", ms(spec.threshold));
        let h = &self.history;
        lines.heading(
            "Distribution Statistics",
            [
                ("Number of statistic hours kept", h.hours.to_string()),
                ("Number of statistic distribution buckets kept", h.distributions.to_string()),
                ("Statistic distribution interval (milliseconds)", h.interval_ms.to_string()),
            ],
        );
        if !self.reactions.is_empty() {
            lines.heading(
                "Reaction Configuration",
                self.reactions.iter().map(|r| {
                    (
                        format!("react {}", r.element.keyword()),
                        format!(
                            "threshold-type {} threshold-value {} {} action-type {}",
                            threshold_type(r.threshold_type),
                            r.rising,
                            r.falling,
                            action(r.action)
                        ),
                    )
                }),
            );
        }
        if !self.triggers.is_empty() {
            let ids: Vec<String> = self.triggers.iter().map(u32::to_string).collect();
            lines.top("Triggers operations", ids.join(", "));
        }
        OperationConfiguration { id: self.id, r#type: kind.name().into(), lines: lines.0 }
    }
}

/// `label: value` lines, headings with their lines indented by three spaces, as IOS prints them.
pub fn text(c: &OperationConfiguration) -> String {
    let mut t = String::new();
    for l in &c.lines {
        let pad = "   ".repeat(usize::from(l.level));
        match &l.value {
            Some(v) => t += &format!("{pad}{}: {v}\n", l.label),
            None => t += &format!("{pad}{}:\n", l.label),
        }
    }
    t
}
