//! Source operations as sans-IO state machines.
//!
//! Every operation speaks the same small protocol with its driver (quinn-proto style):
//! - [`Operation::poll_transmit`]`(now, wall, buf)` → what to send now, if anything; the
//!   operation writes the packet (and its T1 from `wall`) into `buf`;
//! - [`Operation::handle_datagram`]`(now, from, rx, bytes)` → a datagram arrived from the control
//!   or probe peer, with its receive time;
//! - [`Operation::poll_timeout`] / [`Operation::handle_timeout`] → timers;
//! - [`Operation::result`] once [`Operation::is_done`];
//! - [`Operation::poll_event`] → what happened to each probe as it happened ([`ProbeEvent`]:
//!   sent, answered, lost), for a driver that shows a run live; the statistics never need them.
//!
//! The driver (`ipsla-net`) owns the sockets and clocks; tests drive the same machines on a fake
//! timeline with scripted loss, delay, reordering and duplication.

pub mod control;
pub mod dns;
pub mod echo;
pub mod jitter;
pub mod path;
pub mod stamp;
pub mod tcp;

use crate::io::RxTime;
use crate::stats::{JitterStats, Sample};
use crate::voice::{Codec, MosModel, VoiceScore};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// What happened to one probe, at the moment it happened (ping's and irtt's per-reply lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeEvent {
    /// Probe `seq` was handed to the driver to send, at `t1` (wall clock, since the epoch).
    Sent {
        /// Sender sequence, from 1.
        seq: u32,
        /// Our clock when the probe was written.
        t1: Duration,
    },
    /// A reply to probe `sample.seq` (late and duplicate replies are flagged in the sample).
    Reply {
        /// The reply as the statistics see it.
        sample: Sample,
        /// The clocks were declared synchronised: `sample.sd` and `sample.ds` are one-way delays
        /// (otherwise they include the offset between the clocks).
        one_way: bool,
    },
    /// No reply to probe `seq` within the timeout (a reply after it is a late `Reply`).
    Lost {
        /// Sender sequence.
        seq: u32,
    },
}

/// The per-probe events of one run, queued until the driver polls them, and the deadline of
/// every probe still waiting for its reply. Probes are sent in sequence order with rising
/// deadlines, so the waiting ones are a queue from `front_seq`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Events {
    queue: VecDeque<ProbeEvent>,
    /// (reply deadline, answered) of each probe from `front_seq` on.
    waiting: VecDeque<(Instant, bool)>,
    front_seq: u32,
}

impl Events {
    /// Probe `seq` (one more than the last) left at `t1` and waits for its reply until `deadline`.
    pub(crate) fn sent(&mut self, seq: u32, t1: Duration, deadline: Instant) {
        if self.waiting.is_empty() {
            self.front_seq = seq;
        }
        self.waiting.push_back((deadline, false));
        self.queue.push_back(ProbeEvent::Sent { seq, t1 });
    }

    /// A reply arrived.
    pub(crate) fn reply(&mut self, sample: Sample, one_way: bool) {
        if let Some(i) = sample.seq.checked_sub(self.front_seq)
            && let Some(w) = self.waiting.get_mut(i as usize)
        {
            w.1 = true;
        }
        while self.waiting.front().is_some_and(|w| w.1) {
            self.waiting.pop_front();
            self.front_seq += 1;
        }
        self.queue.push_back(ProbeEvent::Reply { sample, one_way });
    }

    /// Every probe whose deadline has passed by `now` without a reply is lost.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, answered)) = self.waiting.front() {
            if !answered && deadline > now {
                break;
            }
            if !answered {
                self.queue.push_back(ProbeEvent::Lost { seq: self.front_seq });
            }
            self.waiting.pop_front();
            self.front_seq += 1;
        }
    }

    /// The run is over: every probe still waiting is lost.
    pub(crate) fn expire_all(&mut self) {
        while let Some((_, answered)) = self.waiting.pop_front() {
            if !answered {
                self.queue.push_back(ProbeEvent::Lost { seq: self.front_seq });
            }
            self.front_seq += 1;
        }
    }

    /// When the next waiting probe is lost, if nothing answers it.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.waiting.iter().find(|w| !w.1).map(|w| w.0)
    }

    pub(crate) fn poll(&mut self) -> Option<ProbeEvent> {
        self.queue.pop_front()
    }
}

/// The earlier of two optional instants.
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Which peer a datagram goes to or came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// The responder's control port (1967 or 1167).
    Control,
    /// The measurement port.
    Probe,
    /// Open a TCP connection to the measurement port (tcp-connect); the driver reports the outcome
    /// with [`Operation::handle_connected`].
    Connect,
}

/// A datagram the operation wants sent: `buf[..len]` to `peer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub peer: Peer,
    /// Length written into the buffer.
    pub len: usize,
    /// The probe's sequence number (0 for control messages): the driver hands the kernel's
    /// transmit stamp of this datagram back with [`Operation::handle_tx_stamp`].
    pub seq: u32,
}

impl StampSources {
    /// Counts a reply's receive stamp.
    pub fn note_rx(&mut self, kernel: bool) {
        if kernel { self.rx_kernel += 1 } else { self.rx_user += 1 }
    }
    /// Counts a sample's send stamp.
    pub fn note_tx(&mut self, kernel: bool) {
        if kernel { self.tx_kernel += 1 } else { self.tx_user += 1 }
    }
}

/// Distribution of the difference between a userspace clock reading and the kernel's stamp of the
/// same packet: how much the kernel stamps correct (a self-diagnostic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaStats {
    /// Packets with both readings.
    pub count: u64,
    /// Sum of the differences, ns.
    pub sum_ns: i64,
    /// Largest difference, ns.
    pub max_ns: i64,
}

impl DeltaStats {
    /// Adds one difference.
    pub fn add(&mut self, ns: i64) {
        self.count += 1;
        self.sum_ns += ns;
        self.max_ns = if self.count == 1 { ns } else { self.max_ns.max(ns) };
    }
    /// Mean, ns.
    pub fn avg_ns(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.sum_ns as f64 / self.count as f64 }
    }
}

/// Cisco return codes (CISCO-RTTMON-MIB `RttResponseSense`, with the CLI's wording).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReturnCode {
    /// ok(1).
    Ok,
    /// overThreshold(3).
    OverThreshold,
    /// timeout(4): no reply.
    Timeout,
    /// busy(5): the previous run was still going.
    Busy,
    /// notConnected(6) / enableNoConnect: the control phase got no answer.
    NoConnection,
    /// sequenceError(8).
    SequenceError,
    /// verifyError(9): a reply did not carry what was sent.
    VerifyError,
    /// enableAuthFail: the responder refused our authentication.
    AuthFailure,
    /// enableFormatError.
    FormatError,
    /// enablePortInUse.
    PortInUse,
    /// enableFail / error: any other failure (local socket error, refused control).
    Error,
    /// dnsServerTimeout(11): the name server did not answer.
    DnsServerTimeout,
    /// tcpConnectTimeout(12): the TCP handshake did not finish within the timeout.
    TcpConnectTimeout,
    /// httpTransactionTimeout(13): the HTTP transaction did not finish within the timeout.
    HttpTransactionTimeout,
    /// dnsQueryError(14): the name server answered with an error or not what was expected.
    DnsQueryError,
    /// httpError(15): the HTTP transaction failed (refused, TLS, status or body not as expected).
    HttpError,
}

impl ReturnCode {
    /// Every return code, in `RttResponseSense` order.
    pub const ALL: [ReturnCode; 16] = [
        ReturnCode::Ok,
        ReturnCode::OverThreshold,
        ReturnCode::Timeout,
        ReturnCode::Busy,
        ReturnCode::NoConnection,
        ReturnCode::SequenceError,
        ReturnCode::VerifyError,
        ReturnCode::AuthFailure,
        ReturnCode::FormatError,
        ReturnCode::PortInUse,
        ReturnCode::Error,
        ReturnCode::DnsServerTimeout,
        ReturnCode::TcpConnectTimeout,
        ReturnCode::HttpTransactionTimeout,
        ReturnCode::DnsQueryError,
        ReturnCode::HttpError,
    ];

    /// Its JSON name (`over_threshold`), also the `code` label of the metrics.
    pub fn name(self) -> &'static str {
        match self {
            ReturnCode::Ok => "ok",
            ReturnCode::OverThreshold => "over_threshold",
            ReturnCode::Timeout => "timeout",
            ReturnCode::Busy => "busy",
            ReturnCode::NoConnection => "no_connection",
            ReturnCode::SequenceError => "sequence_error",
            ReturnCode::VerifyError => "verify_error",
            ReturnCode::AuthFailure => "auth_failure",
            ReturnCode::FormatError => "format_error",
            ReturnCode::PortInUse => "port_in_use",
            ReturnCode::Error => "error",
            ReturnCode::DnsServerTimeout => "dns_server_timeout",
            ReturnCode::TcpConnectTimeout => "tcp_connect_timeout",
            ReturnCode::HttpTransactionTimeout => "http_transaction_timeout",
            ReturnCode::DnsQueryError => "dns_query_error",
            ReturnCode::HttpError => "http_error",
        }
    }

    /// How IOS prints it in `show ip sla statistics`.
    pub fn cisco_text(self) -> &'static str {
        match self {
            ReturnCode::Ok => "OK",
            ReturnCode::OverThreshold => "Over threshold",
            ReturnCode::Timeout => "Timeout",
            ReturnCode::Busy => "Busy",
            ReturnCode::NoConnection => "No connection",
            ReturnCode::SequenceError => "Sequence error",
            ReturnCode::VerifyError => "Verify error",
            ReturnCode::AuthFailure => "Authentication failure",
            ReturnCode::FormatError => "Format error",
            ReturnCode::PortInUse => "Port in use",
            ReturnCode::Error => "Error",
            ReturnCode::DnsServerTimeout => "DNS server timeout",
            ReturnCode::TcpConnectTimeout => "TCP connect timeout",
            ReturnCode::HttpTransactionTimeout => "HTTP transaction timeout",
            ReturnCode::DnsQueryError => "DNS query error",
            ReturnCode::HttpError => "HTTP error",
        }
    }
}

/// Why a run failed, as the machine and its driver saw it: data that travels with the result to
/// the report, the store and the operator (`Display` words it, naming the address and what to
/// check). The return code says *that* it failed, in Cisco's vocabulary; this says *why*.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum Cause {
    /// The control phase sent `requests` messages to `to` and no answer came within `waited_ms`.
    ControlUnanswered {
        /// The responder's control address.
        to: SocketAddr,
        /// Control messages sent.
        requests: u32,
        /// How long the phase waited, ms.
        waited_ms: u64,
    },
    /// The kernel reported what we sent to `to` refused (ICMP port unreachable, `ECONNREFUSED`).
    Refused {
        /// Where the refused datagram went.
        to: SocketAddr,
    },
    /// The TCP handshake to `to` was refused (a reset): nothing listens on that port.
    ConnectRefused {
        /// Where the connection went.
        to: SocketAddr,
    },
    /// The responder at `to` answered the control request with a refusal (its code).
    ControlRejected {
        /// The responder's control address.
        to: SocketAddr,
    },
    /// Path discovery ended without an answer from the target: `hops` TTLs were tried and `last`
    /// is the farthest hop that answered.
    Unreached {
        /// The target.
        target: IpAddr,
        /// The highest TTL tried.
        hops: u8,
        /// The farthest hop that answered, and its TTL.
        last: Option<(u8, IpAddr)>,
    },
    /// A router on the path answered Destination Unreachable (not port unreachable) for the target.
    PathUnreachable {
        /// The target.
        target: IpAddr,
        /// The router's hop.
        hop: u8,
        /// The router.
        router: IpAddr,
        /// The ICMP code (v4: RFC 792, v6: RFC 4443).
        code: u8,
    },
    /// A control protocol failed in its own words (TWAMP-Control: no common mode, a refused
    /// session, a key that does not verify, ...).
    Control {
        /// What failed.
        reason: String,
    },
    /// A service operation (dns, http) found its server silent or its answer wrong, in its own
    /// words naming the server and what to check.
    Service {
        /// What failed.
        reason: String,
    },
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::ControlUnanswered { to, requests, waited_ms } => {
                let waited =
                    if waited_ms % 1000 == 0 { format!("{} s", waited_ms / 1000) } else { format!("{waited_ms} ms") };
                write!(
                    f,
                    "no answer from {to} to {requests} control request{} in {waited}: is a responder running there and allowed through?",
                    if *requests == 1 { "" } else { "s" }
                )
            }
            Cause::Refused { to } => {
                write!(f, "connection refused (ICMP port unreachable) from {to}: no responder listens there")
            }
            Cause::ConnectRefused { to } => {
                write!(f, "connection refused (TCP reset) by {to}: nothing listens on that port")
            }
            Cause::ControlRejected { to } => write!(
                f,
                "the responder at {to} refused the control request: check its allowed sources, port range and authentication"
            ),
            Cause::Unreached { target, hops, last } => {
                write!(f, "path discovery did not reach {target} within {hops} hops")?;
                match last {
                    Some((hop, a)) => write!(f, " (the farthest answer came from {a} at hop {hop})")?,
                    None => write!(f, " (no hop answered)")?,
                }
                write!(f, ": is UDP to ports 33434 and up filtered on the way, or is max_hops too small?")
            }
            Cause::PathUnreachable { target, hop, router, code } => write!(
                f,
                "{router} at hop {hop} answered destination unreachable (code {code}) for {target}: check that router's route to it"
            ),
            Cause::Control { reason } | Cause::Service { reason } => f.write_str(reason),
        }
    }
}

/// Timestamp precision of a udp-jitter operation (IOS `precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Type-2 probes, ms since midnight.
    #[default]
    Ms,
    /// Type-3 probes, NTP timestamps.
    Us,
}

/// Voice settings of a udp-jitter operation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VoiceConfig {
    /// Emulated codec.
    pub codec: Codec,
    /// Score model.
    pub model: MosModel,
    /// Advantage factor 0..=20.
    pub advantage: u8,
}

/// Where the timestamps came from, counted over the operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StampSources {
    /// Replies stamped by the kernel on receive.
    pub rx_kernel: u32,
    /// Replies stamped by userspace on receive.
    pub rx_user: u32,
    /// Samples whose send time (T1) is the kernel's transmit stamp.
    pub tx_kernel: u32,
    /// Samples whose send time is the userspace reading before the send call.
    pub tx_user: u32,
    /// Userspace read after `recvmsg` − kernel receive stamp (filled by the driver).
    pub rx_delta: DeltaStats,
    /// Kernel transmit stamp − userspace reading before the send call (filled by the driver).
    pub tx_delta: DeltaStats,
}

/// The outcome of one operation run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationResult {
    /// Return code.
    pub return_code: ReturnCode,
    /// Statistics (a single-probe operation has one sample).
    pub stats: JitterStats,
    /// Voice scores, when a codec is configured and the operation got replies.
    pub voice: Option<VoiceScore>,
    /// Timestamp precision of the probes.
    pub precision: Precision,
    /// Timestamp sources.
    pub stamps: StampSources,
    /// Replies that matched no probe we sent (wrong T1, unknown sequence, wrong type).
    pub unexpected: u32,
    /// Every reply, in arrival order (late ones and duplicates flagged).
    pub samples: Vec<Sample>,
    /// Time from the first probe sent to the last, ns (what a schedule actually took).
    pub send_span_ns: u64,
    /// Why the run failed, when the machine or its driver knows (`None` on success, and on a
    /// failure with no more to say than its return code).
    #[serde(default)]
    pub cause: Option<Cause>,
    /// Every probe sent that no reply answered, in sequence order, with its send time: with
    /// `samples`, the whole timeline of a run.
    #[serde(default)]
    pub lost: Vec<LostProbe>,
    /// For the path operations: whether the path differs from the previous run's (`None` for the
    /// other kinds, and for a path operation's first run, which has nothing to compare with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_changed: Option<bool>,
}

/// A probe no reply answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostProbe {
    /// Sender sequence.
    pub seq: u32,
    /// T1, ns since the Unix epoch, as [`Sample::t1`].
    pub t1: i64,
}

impl OperationResult {
    /// A result of `return_code`, `stats` and `precision` and nothing more: no voice score, no
    /// samples or lost probes listed, no cause, nothing unexpected. Callers set what they know
    /// on top (`OperationResult { cause, ..OperationResult::new(...) }`).
    pub fn new(return_code: ReturnCode, stats: JitterStats, precision: Precision) -> Self {
        OperationResult {
            return_code,
            stats,
            voice: None,
            precision,
            stamps: StampSources::default(),
            unexpected: 0,
            samples: Vec::new(),
            send_span_ns: 0,
            lost: Vec::new(),
            cause: None,
            path_changed: None,
        }
    }

    /// What an operation reports before it has finished (or if it never does).
    pub(crate) fn pending(precision: Precision, stamps: StampSources, unexpected: u32) -> Self {
        OperationResult { stamps, unexpected, ..Self::new(ReturnCode::Timeout, JitterStats::default(), precision) }
    }

    /// The result of a single-probe operation (udp-echo, icmp-echo, tcp-connect): its one sample
    /// (plus `duplicates` further copies), over-threshold when that sample is, timeout without it.
    pub fn single(
        failure: Option<ReturnCode>,
        sent: Option<Duration>,
        sample: Option<Sample>,
        duplicates: u32,
        threshold: Duration,
        stamps: StampSources,
        unexpected: u32,
    ) -> Self {
        let cfg = crate::stats::StatsConfig {
            threshold: threshold.as_nanos() as i64,
            clock_sync: false,
            responder_counts: false,
        };
        let mut arrivals: Vec<Sample> = sample.into_iter().collect();
        arrivals.extend(sample.map(|s| Sample { duplicate: true, ..s }).into_iter().cycle().take(duplicates as usize));
        let stats = crate::stats::compute(u32::from(sent.is_some()), &arrivals, cfg);
        let return_code = match failure {
            Some(c) => c,
            None if stats.received == 0 => ReturnCode::Timeout,
            None if stats.over_threshold > 0 => ReturnCode::OverThreshold,
            None => ReturnCode::Ok,
        };
        OperationResult {
            return_code,
            stats,
            voice: None,
            precision: Precision::Us,
            stamps,
            unexpected,
            samples: arrivals,
            send_span_ns: 0,
            lost: match (sent, sample) {
                (Some(t1), None) => vec![LostProbe { seq: 1, t1: t1.as_nanos() as i64 }],
                _ => Vec::new(),
            },
            cause: None,
            path_changed: None,
        }
    }
}

/// The driver-facing interface of every operation.
pub trait Operation {
    /// What to send now, if anything.
    fn poll_transmit(&mut self, now: Instant, wall: Duration, buf: &mut [u8]) -> Option<Transmit>;
    /// A datagram arrived.
    fn handle_datagram(&mut self, now: Instant, from: Peer, rx: RxTime, bytes: &[u8]);
    /// The kernel's transmit stamp of the probe with sequence `seq`.
    fn handle_tx_stamp(&mut self, _seq: u32, _wall: Duration) {}
    /// The kernel reported the datagram we sent to `to` refused (ICMP port unreachable): during a
    /// control phase the run ends with "No connection" at once, since nothing listens to answer.
    fn handle_refused(&mut self, _now: Instant, _to: SocketAddr) {}
    /// The TCP connection asked for with [`Peer::Connect`] completed (`ok`) or failed, at `rx`.
    fn handle_connected(&mut self, _now: Instant, _rx: RxTime, _ok: bool) {}
    /// When the operation next needs [`Operation::handle_timeout`] or a transmit poll.
    fn poll_timeout(&self) -> Option<Instant>;
    /// When the next probe of a train is due, while one is and no reply can time out before it
    /// (the timeout is over twice the interval): a driver may then leave replies queued until it
    /// has sent that probe, handing each over with the time its kernel stamp says it arrived.
    /// `None` (the default): replies are wanted as they come.
    fn next_send(&self) -> Option<Instant> {
        None
    }
    /// Timers due at `now`.
    fn handle_timeout(&mut self, now: Instant);
    /// The measurement port probes go to (a v2 responder may have picked it).
    fn probe_port(&self) -> u16;
    /// True once the result is final.
    fn is_done(&self) -> bool;
    /// The result (meaningful once done).
    fn result(&self) -> OperationResult;
    /// The next per-probe event, oldest first. A driver polls them after every call above; one
    /// that does not leaves at most three per probe queued.
    fn poll_event(&mut self) -> Option<ProbeEvent> {
        None
    }
}

#[cfg(test)]
mod tests;
