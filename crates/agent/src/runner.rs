//! One operation, fully specified and validated ([`OperationSpec`]), and how to run it once
//! ([`run`]). The kind-specific part and its run live in the kind's module under
//! [`crate::ops`]; `ipsla probe` builds a spec from its flags, the agent from its configuration
//! file, both through [`crate::ops::common::validate`].

use crate::ops::Operation;
use ipsla_core::ops::OperationResult;
use ipsla_net::clock::kernel_clock_state;
use ipsla_net::probe::{Cancelled, Hooks, SocketOptions};
use ipsla_wire::time::ErrorEstimate;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// How one-way delays may be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockSyncMode {
    /// Not synchronised: one-way delay unavailable.
    None,
    /// Kernel NTP discipline state within the tolerance.
    Ntp,
    /// Same check for a PTP-disciplined clock.
    Ptp,
    /// Declared synchronised.
    Assume,
}

/// Clock tolerance (IOS `clock-tolerance ntp oneway absolute|percent`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tolerance {
    /// Absolute, µs.
    AbsUs(i64),
    /// Percent of the measured one-way delay.
    Percent(f64),
}

/// The result of the clock check of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ClockCheck {
    /// none | ntp | ptp | assume
    #[serde(deserialize_with = "crate::report::word")]
    pub mode: crate::report::Word,
    /// sync | out_of_sync | not_checked
    #[serde(deserialize_with = "crate::report::word")]
    pub state: crate::report::Word,
    /// Kernel's estimated error, µs.
    pub est_error_us: Option<i64>,
}

/// A validated operation: the common keys, and the kind-specific part ([`Operation`]).
#[derive(Debug, Clone)]
pub struct OperationSpec {
    /// What it sends and how it runs.
    pub op: Arc<dyn Operation>,
    /// What it measures: an address, or the name or URL of the kinds that resolve it themselves.
    pub target: Target,
    /// Measurement port (0 for the kinds without one).
    pub port: u16,
    /// Socket options.
    pub sockets: SocketOptions,
    /// Timeout.
    pub timeout: Duration,
    /// RTT threshold.
    pub threshold: Duration,
}

/// What an operation measures: an address (resolved once, when the configuration is read), or,
/// for the kinds whose measurement includes the name lookup ([`crate::ops::Kind::resolves_target`]
/// false: http's URL, dns's name), the text as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An address.
    Ip(IpAddr),
    /// A name or URL, validated by its kind.
    Name(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Ip(a) => a.fmt(f),
            Target::Name(n) => f.write_str(n),
        }
    }
}

impl Target {
    /// The address, when the target is one.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Target::Ip(a) => Some(*a),
            Target::Name(_) => None,
        }
    }
}

/// Why a run has no result: it could not start, or its caller cancelled it.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Cancelled before it finished ([`Hooks::cancelled`]): a stopping agent, Ctrl-C.
    #[error("cancelled before it finished")]
    Cancelled,
    /// A socket could not be opened or configured.
    #[error("{what}")]
    Socket {
        /// Which socket.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

impl From<Cancelled> for RunError {
    fn from(_: Cancelled) -> Self {
        RunError::Cancelled
    }
}

/// What one run gets besides its operation.
#[derive(Debug, Clone, Copy)]
pub struct RunContext<'a> {
    /// The control sequence of this run.
    pub sequence: u32,
    /// Drives TCP (tcp-connect, TWAMP-Control) while the run blocks its thread.
    pub rt: &'a tokio::runtime::Handle,
    /// Live per-probe events and cancellation.
    pub hooks: Hooks<'a>,
}

/// One finished run.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The operation's result.
    pub result: OperationResult,
    /// The clock check made before it. (Why a run failed travels in `result.cause`.)
    pub clock: ClockCheck,
    /// The kind's own part of the report ([`crate::ops::Detail`]); empty for most kinds.
    pub detail: crate::ops::Detail,
}

impl PartialEq for OperationSpec {
    fn eq(&self, o: &OperationSpec) -> bool {
        (*self.op).dyn_eq((*o.op).as_any())
            && (&self.target, self.port, &self.sockets, self.timeout, self.threshold)
                == (&o.target, o.port, &o.sockets, o.timeout, o.threshold)
    }
}

impl RunOutcome {
    /// The outcome of a kind without one-way delays (no clock check).
    pub fn without_clock(result: OperationResult) -> RunOutcome {
        RunOutcome {
            result,
            clock: clock_check(ClockSyncMode::None, Tolerance::AbsUs(0)).1,
            detail: Default::default(),
        }
    }

    /// The outcome of a kind that has its own part of the report, without one-way delays.
    pub fn with_detail(result: OperationResult, detail: crate::ops::Detail) -> RunOutcome {
        RunOutcome { detail, ..RunOutcome::without_clock(result) }
    }
}

impl OperationSpec {
    /// `target:port`, or the target alone for the kinds without a port (ICMP) and for names.
    pub fn target_label(&self) -> String {
        match (self.op.kind().default_port(), &self.target) {
            (Some(_), Target::Ip(a)) => SocketAddr::new(*a, self.port).to_string(),
            _ => self.target.to_string(),
        }
    }

    /// The target address of a kind that resolves its target when the configuration is read
    /// (every kind but those with [`crate::ops::Kind::resolves_target`] false, which never call
    /// this): validation makes it an address for them.
    pub fn addr(&self) -> IpAddr {
        match &self.target {
            Target::Ip(a) => *a,
            Target::Name(n) => unreachable!("{} resolves its target \"{n}\" itself", self.op.kind().name()),
        }
    }

    /// The kind-specific part as its own type (`spec.op_as::<ops::UdpJitter>()`).
    pub fn op_as<T: 'static>(&self) -> Option<&T> {
        (*self.op).as_any().downcast_ref()
    }

    /// `v1`, `v2`, `twamp` (TWAMP-Control) or `none`.
    pub fn control_label(&self) -> &'static str {
        self.op.control_label()
    }

    /// The shortest frequency: one run's timeout plus the time its probes take to send.
    pub fn min_frequency(&self) -> Duration {
        self.timeout + self.op.train().map_or(Duration::ZERO, |(_, d)| d)
    }
}

/// Decides, before a run, whether one-way delays may be reported, as IOS does with its NTP state.
pub fn clock_check(mode: ClockSyncMode, tol: Tolerance) -> (bool, ClockCheck) {
    match mode {
        ClockSyncMode::None => (false, ClockCheck { mode: "none", state: "not_checked", est_error_us: None }),
        ClockSyncMode::Assume => (true, ClockCheck { mode: "assume", state: "sync", est_error_us: None }),
        ClockSyncMode::Ntp | ClockSyncMode::Ptp => {
            let name = if mode == ClockSyncMode::Ntp { "ntp" } else { "ptp" };
            let k = kernel_clock_state();
            let ok = match (k, tol) {
                // Our own estimated error counts twice: we cannot see the responder's, and IOS
                // compares the sum of both ends' offsets with the tolerance.
                (Some(k), Tolerance::AbsUs(t)) => k.synchronised && 2 * k.est_error_us <= t,
                (Some(k), Tolerance::Percent(_)) => k.synchronised,
                (None, _) => false,
            };
            (
                ok,
                ClockCheck {
                    mode: name,
                    state: if ok { "sync" } else { "out_of_sync" },
                    est_error_us: k.map(|k| k.est_error_us),
                },
            )
        }
    }
}

/// Drops one-way delays that fail a percentage tolerance (known only after the run).
pub(crate) fn apply_percent_tolerance(r: &mut OperationResult, tol: Tolerance, cs: &mut ClockCheck) {
    let (Tolerance::Percent(pct), Some(est)) = (tol, cs.est_error_us) else { return };
    let Some(sd) = r.stats.one_way_sd else { return };
    if (2 * est) as f64 > sd.avg() / 1000.0 * pct / 100.0 {
        r.stats.one_way_sd = None;
        r.stats.one_way_ds = None;
        r.stats.one_way_pct = None;
        cs.state = "out_of_sync";
    }
}

pub(crate) fn sock<T>(what: &'static str, r: std::io::Result<T>) -> Result<T, RunError> {
    r.map_err(|source| RunError::Socket { what, source })
}

/// Runs `spec` once on the calling thread (see [`RunContext`]).
pub fn run(spec: &OperationSpec, ctx: &RunContext<'_>) -> Result<RunOutcome, RunError> {
    spec.op.run(spec, ctx)
}

/// This host's clock as an Error Estimate (RFC 4656 §4.1.2): the kernel's estimated error when
/// it says it is synchronised (S bit set), its maximum error otherwise.
pub(crate) fn host_error_estimate() -> ErrorEstimate {
    match ipsla_net::clock::kernel_clock_state() {
        Some(c) if c.synchronised => ErrorEstimate::from_precision_ns(c.est_error_us.max(1) as u64 * 1000, true),
        Some(c) => ErrorEstimate::from_precision_ns(c.max_error_us.max(1) as u64 * 1000, false),
        None => ErrorEstimate::UNSYNCED_DEFAULT,
    }
}
