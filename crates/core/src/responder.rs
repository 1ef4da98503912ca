//! The IP SLA responder: control messages open measurement ports for a duration, probes on those
//! ports are answered with the responder's timestamps and sequence.
//!
//! Data flow: `net` receives a control datagram and calls [`Responder::handle_control`], which
//! validates it, asks the [`PortBinder`] to open the port *before* the reply is built (IOS sends its
//! first probe 0.1–0.4 ms after the reply), records the session and writes the reply. Probes that
//! arrive on an open port go through [`Responder::handle_probe`]; the caller writes T3 as late as
//! possible with [`stamp_transmit`] and sends. [`Responder::handle_timeout`] closes expired
//! sessions and releases ports nobody uses any more.
//!
//! Sessions on one port are told apart by the sender: v1 control does not carry the sender's probe
//! port (the IOS udp-echo probe left from another port than its control message), so a v1 session
//! matches any port of the sender's address; a v2 session carries the measurement source port and
//! matches it exactly when it is non-zero.

use crate::io::{BindError, PortBinder, PortKey, Proto, RxTime};
use crate::ratelimit::{KeyedLimiter, RejectLog};
use ipnet::IpNet;
use ipsla_wire::Error as WireError;
use ipsla_wire::cisco::control_v1::{self, ControlV1, ControlV1Repr, Operation};
use ipsla_wire::cisco::control_v2::{self, AuthMode, ControlV2, ControlV2Repr, Status};
use ipsla_wire::cisco::probe::{self, ProbeType, Type2, Type3, Type3Layout};
use ipsla_wire::time::{NtpTimestamp, ms_diff, ms_since_midnight};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

/// Who a session answers: the sender address, and its port when known (v2), 0 otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Peer {
    /// Sender address.
    pub addr: IpAddr,
    /// Sender measurement port, 0 = any.
    pub port: u16,
}

/// Limits and policy of a responder.
#[derive(Debug, Clone)]
pub struct ResponderConfig {
    /// Ports a control message may open. Default 1024–65535: never a privileged port.
    pub port_range: RangeInclusive<u16>,
    /// Ports never handed out (our own control ports, permanent ports).
    pub reserved_ports: Vec<u16>,
    /// Sessions at once, all sources.
    pub max_sessions: usize,
    /// Sessions at once from one source address.
    pub max_sessions_per_source: usize,
    /// Longest duration a control message may ask for.
    pub max_duration: Duration,
    /// Control sources allowed (empty = everyone).
    pub allow: Vec<IpNet>,
    /// Control messages per second per source (0 = unlimited).
    pub control_rate: f64,
    /// Burst of control messages per source.
    pub control_burst: u32,
    /// v2 shared secrets by key id.
    pub keys: HashMap<u16, Vec<u8>>,
    /// Refuse v2 requests in mode 0 (no authentication).
    pub require_auth: bool,
    /// Accepted distance between a v2 send timestamp and our clock (authenticated requests).
    pub timestamp_window: Duration,
}

impl Default for ResponderConfig {
    fn default() -> Self {
        ResponderConfig {
            port_range: 1024..=65535,
            reserved_ports: vec![control_v1_port(), control_v2_port()],
            max_sessions: 10_000,
            max_sessions_per_source: 2_000,
            max_duration: Duration::from_secs(600),
            allow: Vec::new(),
            control_rate: 200.0,
            control_burst: 400,
            keys: HashMap::new(),
            require_auth: false,
            timestamp_window: Duration::from_secs(60),
        }
    }
}

fn control_v1_port() -> u16 {
    ipsla_wire::cisco::CONTROL_V1_PORT
}
fn control_v2_port() -> u16 {
    ipsla_wire::cisco::CONTROL_V2_PORT
}

/// Why a control message was not accepted. Every value is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reject {
    /// Source not in the allow-list.
    NotAllowed,
    /// Source over its control-message rate.
    RateLimited,
    /// Not version 1 or 2.
    UnknownVersion,
    /// Framing or length error.
    Malformed,
    /// Unknown operation / CSLD / value.
    FormatError,
    /// v1 authentication TLV not all zero: the IOS MD5 key-chain layout is unknown, so it cannot be
    /// verified, and accepting it unverified would mislead the operator.
    AuthUnsupported,
    /// v2 authentication failed: unknown key, wrong digest, or mode 0 where auth is required.
    AuthFailed,
    /// v2 replay: sequence not newer, or timestamp outside the window.
    Replay,
    /// Port 0 (v1), privileged, reserved or outside the allowed range.
    PortNotAllowed,
    /// Port held by something else.
    PortInUse,
    /// Target address is not this host's.
    NotLocal,
    /// Duration 0 or above the maximum.
    BadDuration,
    /// Total session cap reached.
    TooManySessions,
    /// Per-source session cap reached.
    TooManySessionsPerSource,
    /// Socket could not be opened for another reason.
    BindFailed,
}

impl Reject {
    /// All reasons, for status output.
    pub const ALL: [Reject; 15] = [
        Reject::NotAllowed,
        Reject::RateLimited,
        Reject::UnknownVersion,
        Reject::Malformed,
        Reject::FormatError,
        Reject::AuthUnsupported,
        Reject::AuthFailed,
        Reject::Replay,
        Reject::PortNotAllowed,
        Reject::PortInUse,
        Reject::NotLocal,
        Reject::BadDuration,
        Reject::TooManySessions,
        Reject::TooManySessionsPerSource,
        Reject::BindFailed,
    ];

    /// Stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Reject::NotAllowed => "not_allowed",
            Reject::RateLimited => "rate_limited",
            Reject::UnknownVersion => "unknown_version",
            Reject::Malformed => "malformed",
            Reject::FormatError => "format_error",
            Reject::AuthUnsupported => "auth_unsupported",
            Reject::AuthFailed => "auth_failed",
            Reject::Replay => "replay",
            Reject::PortNotAllowed => "port_not_allowed",
            Reject::PortInUse => "port_in_use",
            Reject::NotLocal => "not_local",
            Reject::BadDuration => "bad_duration",
            Reject::TooManySessions => "too_many_sessions",
            Reject::TooManySessionsPerSource => "too_many_sessions_per_source",
            Reject::BindFailed => "bind_failed",
        }
    }

    fn v2_status(self) -> Status {
        match self {
            Reject::AuthFailed | Reject::Replay => Status::AuthFailure,
            Reject::FormatError | Reject::Malformed => Status::FormatError,
            Reject::PortInUse => Status::PortInUse,
            _ => Status::Failure,
        }
    }
}

/// Why a probe was not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeReject {
    /// No session for this sender on this port (or it expired).
    NoSession,
    /// Too short for its type.
    Truncated,
    /// A probe type this session does not answer.
    UnknownType,
}

impl ProbeReject {
    /// All reasons.
    pub const ALL: [ProbeReject; 3] = [ProbeReject::NoSession, ProbeReject::Truncated, ProbeReject::UnknownType];
    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            ProbeReject::NoSession => "no_session",
            ProbeReject::Truncated => "truncated",
            ProbeReject::UnknownType => "unknown_type",
        }
    }
}

/// Outcome of a control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlResult {
    /// Send `out[..len]` back to the source. `accepted` is false for a v2 error reply.
    Reply {
        /// Reply length.
        len: usize,
        /// Whether the session was opened or refreshed.
        accepted: bool,
    },
    /// Dropped without reply (counted).
    Dropped(Reject),
}

/// What the caller must write just before sending a probe reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStamp {
    /// Nothing (echo).
    None,
    /// Type 2: processing time in ms = ms(T3) − T2, at offset 2.
    Type2 {
        /// T2 as written at offset 8.
        t2_ms: u32,
    },
    /// Type 3: NTP T3 at offset 20.
    Type3 {
        /// Sequence layout of the packet.
        layout: Type3Layout,
    },
}

/// Outcome of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    /// Send `buf[..len]` back to the probe's source after applying `stamp`.
    Reply {
        /// Reply length (= request length).
        len: usize,
        /// Transmit-time fields to fill.
        stamp: TxStamp,
    },
    /// Not answered (counted).
    Dropped(ProbeReject),
}

/// Kinds of session a control message opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionKind {
    /// udp-echo: one echo, then closed.
    UdpEcho,
    /// udp-jitter by v1 control: type-3 layout decided per packet.
    UdpJitter,
    /// UDP-Measurement by v2 control: RFC layout.
    UdpMeasurement,
    /// tcp-connect.
    TcpConnect,
}

#[derive(Debug, Clone)]
struct Session {
    source: IpAddr,
    kind: SessionKind,
    expires: Instant,
    responder_seq: u32,
    probes: u64,
}

/// A permanent port (IOS `ip sla responder udp-echo|tcp-connect ipaddress A port P`): answers
/// without control. Jitter counters are kept per sender address and port, reset when the sender's
/// sequence restarts at 1 (there is no control message to reset them, and Cisco skips sequence
/// checks on permanent ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PermanentKind {
    /// Echo everything.
    UdpEcho,
    /// Answer type 2 and 3 (and echo type 1).
    UdpJitter,
    /// Accept and close.
    TcpConnect,
}

const PERMANENT_PEERS_MAX: usize = 4096;
const PERMANENT_PEER_IDLE: Duration = Duration::from_secs(120);

#[derive(Debug, Default)]
struct PortEntry {
    sessions: HashMap<Peer, Session>,
    permanent: Option<PermanentKind>,
    permanent_peers: HashMap<SocketAddr, (u32, Instant)>,
}

#[derive(Debug, Clone, Copy)]
struct ReplayState {
    sequence: u32,
    digest: [u8; 32],
    timestamp: NtpTimestamp,
}

/// Counters like IOS `show ip sla responder`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ResponderStats {
    /// v1 control messages received.
    pub control_v1: u64,
    /// v2 control messages received.
    pub control_v2: u64,
    /// Control messages that opened or refreshed a session.
    pub control_accepted: u64,
    /// Rejections by reason.
    pub rejects: HashMap<Reject, u64>,
    /// Probes answered.
    pub probes_answered: u64,
    /// Probes dropped by reason.
    pub probe_drops: HashMap<ProbeReject, u64>,
    /// TCP connections accepted and closed.
    pub tcp_accepts: u64,
    /// Sessions opened.
    pub sessions_opened: u64,
    /// Sessions ended by their duration (or after a udp-echo answer).
    pub sessions_closed: u64,
    /// Probes whose T2 came from the kernel.
    pub rx_stamps_kernel: u64,
    /// Probes whose T2 came from a userspace reading.
    pub rx_stamps_user: u64,
    /// Last control sources, newest last: (address, wall time since the Unix epoch, accepted or
    /// the reject reason). The time is an RFC 3339 string in JSON, as every time the API serves.
    #[serde(with = "recent_rfc3339")]
    pub recent_sources: VecDeque<(IpAddr, Duration, Option<Reject>)>,
}

/// `recent_sources` with each time as RFC 3339 UTC (µs), not serde's `{"secs","nanos"}`.
mod recent_rfc3339 {
    use super::Reject;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::collections::VecDeque;
    use std::net::IpAddr;
    use std::time::{Duration, UNIX_EPOCH};

    type Entry = (IpAddr, Duration, Option<Reject>);

    pub(super) fn serialize<S: Serializer>(v: &VecDeque<Entry>, s: S) -> Result<S::Ok, S::Error> {
        let text = |t: &Duration| humantime::format_rfc3339_micros(UNIX_EPOCH + *t).to_string();
        s.collect_seq(v.iter().map(|(ip, t, why)| (ip, text(t), why)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<VecDeque<Entry>, D::Error> {
        let raw: Vec<(IpAddr, String, Option<Reject>)> = Vec::deserialize(d)?;
        raw.into_iter()
            .map(|(ip, t, why)| {
                let at = humantime::parse_rfc3339(&t).map_err(serde::de::Error::custom)?;
                let since = at.duration_since(UNIX_EPOCH).map_err(serde::de::Error::custom)?;
                Ok((ip, since, why))
            })
            .collect()
    }
}

const RECENT_SOURCES: usize = 10;

/// A snapshot of one active session, for status output.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SessionInfo {
    /// Port.
    pub port: PortKey,
    /// Sender.
    pub peer: Peer,
    /// Kind.
    pub kind: SessionKind,
    /// Time left.
    pub remaining_ms: u64,
    /// Probes answered in this session.
    pub probes: u64,
}

/// The responder state machine.
#[derive(Debug)]
pub struct Responder {
    config: ResponderConfig,
    ports: HashMap<PortKey, PortEntry>,
    per_source: HashMap<IpAddr, usize>,
    sessions: usize,
    /// Exactly one entry per session, at its expiry (a refresh moves it).
    timers: BTreeSet<(Instant, PortKey, Peer)>,
    limiter: KeyedLimiter<IpAddr>,
    log: RejectLog,
    replay: HashMap<(IpAddr, u16), ReplayState>,
    next_session_id: u32,
    stats: ResponderStats,
    last_reject: Option<Reject>,
}

impl Responder {
    /// A responder with no sessions.
    pub fn new(config: ResponderConfig) -> Self {
        Responder {
            limiter: KeyedLimiter::new(config.control_rate, config.control_burst, 65_536),
            log: RejectLog::default(),
            config,
            ports: HashMap::new(),
            per_source: HashMap::new(),
            sessions: 0,
            timers: BTreeSet::new(),
            replay: HashMap::new(),
            next_session_id: 1,
            stats: ResponderStats::default(),
            last_reject: None,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &ResponderConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &ResponderStats {
        &self.stats
    }

    /// Number of active control sessions.
    pub fn session_count(&self) -> usize {
        self.sessions
    }

    /// Active sessions, sorted by port.
    pub fn sessions(&self, now: Instant) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = self
            .ports
            .iter()
            .flat_map(|(k, e)| {
                e.sessions.iter().map(move |(p, s)| SessionInfo {
                    port: *k,
                    peer: *p,
                    kind: s.kind,
                    remaining_ms: s.expires.saturating_duration_since(now).as_millis() as u64,
                    probes: s.probes,
                })
            })
            .collect();
        v.sort_by_key(|s| (s.port, s.peer));
        v
    }

    /// Permanent ports.
    pub fn permanent_ports(&self) -> Vec<(PortKey, PermanentKind)> {
        let mut v: Vec<_> = self.ports.iter().filter_map(|(k, e)| e.permanent.map(|p| (*k, p))).collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    /// Registers a permanent port the caller has already bound.
    pub fn add_permanent(&mut self, key: PortKey, kind: PermanentKind) {
        self.ports.entry(key).or_default().permanent = Some(kind);
        if !self.config.reserved_ports.contains(&key.port) {
            self.config.reserved_ports.push(key.port);
        }
    }

    fn reject(&mut self, now: Instant, src: SocketAddr, why: Reject) -> Reject {
        *self.stats.rejects.entry(why).or_insert(0) += 1;
        self.last_reject = Some(why);
        self.log.warn(now, why.name(), src, "control message rejected");
        why
    }

    fn note_source(&mut self, wall: Duration, src: IpAddr, r: Option<Reject>) {
        if self.stats.recent_sources.len() == RECENT_SOURCES {
            self.stats.recent_sources.pop_front();
        }
        self.stats.recent_sources.push_back((src, wall, r));
    }

    /// Handles one control datagram from `src`. `wall` is the current wall-clock time (for the v2
    /// timestamp window and reply timestamp). The reply, if any, is written to `out`, which must
    /// hold [`control_v2::MAX_LEN`] bytes.
    pub fn handle_control(
        &mut self,
        now: Instant,
        wall: Duration,
        src: SocketAddr,
        bytes: &[u8],
        out: &mut [u8],
        binder: &mut impl PortBinder,
    ) -> ControlResult {
        self.last_reject = None;
        let r = self.control_inner(now, wall, src, bytes, out, binder);
        let reason = self.last_reject.take();
        self.note_source(wall, src.ip(), reason);
        r
    }

    fn control_inner(
        &mut self,
        now: Instant,
        wall: Duration,
        src: SocketAddr,
        bytes: &[u8],
        out: &mut [u8],
        binder: &mut impl PortBinder,
    ) -> ControlResult {
        if !self.config.allow.is_empty() && !self.config.allow.iter().any(|n| n.contains(&src.ip())) {
            return ControlResult::Dropped(self.reject(now, src, Reject::NotAllowed));
        }
        if !self.limiter.check(now, src.ip()) {
            return ControlResult::Dropped(self.reject(now, src, Reject::RateLimited));
        }
        match bytes.first() {
            Some(1) => {
                self.stats.control_v1 += 1;
                self.control_v1(now, src, bytes, out, binder)
            }
            Some(2) => {
                self.stats.control_v2 += 1;
                self.control_v2(now, wall, src, bytes, out, binder)
            }
            _ => ControlResult::Dropped(self.reject(now, src, Reject::UnknownVersion)),
        }
    }

    fn control_v1(
        &mut self,
        now: Instant,
        src: SocketAddr,
        bytes: &[u8],
        out: &mut [u8],
        binder: &mut impl PortBinder,
    ) -> ControlResult {
        // v1 has no known error encoding (reference open question 1): every failure is dropped,
        // so the IOS source reports "No connection", exactly as if no responder were there.
        let view = match ControlV1::new_checked(bytes) {
            Ok(v) => v,
            Err(_) => return ControlResult::Dropped(self.reject(now, src, Reject::Malformed)),
        };
        let repr = match ControlV1Repr::parse(&view) {
            Ok(r) => r,
            Err(WireError::UnknownType(_)) => {
                return ControlResult::Dropped(self.reject(now, src, Reject::FormatError));
            }
            Err(_) => return ControlResult::Dropped(self.reject(now, src, Reject::Malformed)),
        };
        if repr.auth.is_some_and(|a| a != [0; control_v1::AUTH_DATA_LEN]) {
            return ControlResult::Dropped(self.reject(now, src, Reject::AuthUnsupported));
        }
        let m = repr.measurement;
        let (proto, kind) = match m.operation {
            Operation::UdpEcho => (Proto::Udp, SessionKind::UdpEcho),
            Operation::UdpJitter => (Proto::Udp, SessionKind::UdpJitter),
            Operation::TcpConnect => (Proto::Tcp, SessionKind::TcpConnect),
        };
        // IOS sends jitter probes from the control message's port (all three captures) but the
        // udp-echo probe from another one: jitter sessions are told apart by that port, so that
        // two operations from one router (or two hosts behind one NAT) keep separate counters.
        let peer_port = if m.operation == Operation::UdpJitter { src.port() } else { 0 };
        let request = SessionRequest {
            key: PortKey { proto, addr: m.target, port: m.port },
            peer: Peer { addr: src.ip(), port: peer_port },
            kind,
            duration: Duration::from_millis(u64::from(m.duration_ms)),
            source: src.ip(),
        };
        if let Err(why) = self.open_session(now, request, binder) {
            return ControlResult::Dropped(self.reject(now, src, why));
        }
        match control_v1::emit_reply(&view, out) {
            Some(len) => {
                self.stats.control_accepted += 1;
                ControlResult::Reply { len, accepted: true }
            }
            None => ControlResult::Dropped(self.reject(now, src, Reject::Malformed)),
        }
    }

    fn control_v2(
        &mut self,
        now: Instant,
        wall: Duration,
        src: SocketAddr,
        bytes: &[u8],
        out: &mut [u8],
        binder: &mut impl PortBinder,
    ) -> ControlResult {
        let view = match ControlV2::new_checked(bytes) {
            Ok(v) => v,
            Err(_) if bytes.len() >= control_v2::HEADER_LEN => {
                // Framing is broken: answer with the header alone, status "format error".
                let why = self.reject(now, src, Reject::Malformed);
                let out = &mut out[..control_v2::HEADER_LEN];
                out.copy_from_slice(&bytes[..control_v2::HEADER_LEN]);
                out[2..4].copy_from_slice(&u16::from(why.v2_status()).to_be_bytes());
                out[8..12].copy_from_slice(&(control_v2::HEADER_LEN as u32).to_be_bytes());
                out[12..20].copy_from_slice(&NtpTimestamp::from_unix(wall).0.to_be_bytes());
                return ControlResult::Reply { len: control_v2::HEADER_LEN, accepted: false };
            }
            Err(_) => return ControlResult::Dropped(self.reject(now, src, Reject::Malformed)),
        };
        let len = bytes.len();
        out[..len].copy_from_slice(bytes);
        let mut reply = ControlV2::new_checked(&mut out[..len]).expect("same bytes as a checked view");
        let parsed = ControlV2Repr::parse(&view);
        let (mode, key_id) = view.auth_mode().unwrap_or((AuthMode::None, 0));
        let secret = self.config.keys.get(&key_id).cloned();

        let mut authenticated = false;
        let outcome = self.v2_decide(now, wall, src, &view, parsed, binder, &mut authenticated);
        let (auth_status, udp_status, header) = match outcome {
            Ok((port, session_id)) => {
                reply.set_udp_meas_dst_port(port);
                reply.set_udp_session_id(session_id);
                (Status::Success, Status::Success, Status::Success)
            }
            Err(why) => {
                let st = why.v2_status();
                // The header uses only 0–3 (RFC 6812 §3.1): port-in-use shows as failure there.
                let header = if st == Status::PortInUse { Status::Failure } else { st };
                match why {
                    Reject::AuthFailed | Reject::Replay => (Status::AuthFailure, Status::Success, header),
                    Reject::FormatError if view.index().unknown.is_some() => {
                        reply.set_unknown_status(Status::FormatError);
                        (Status::Success, Status::Success, header)
                    }
                    _ => (Status::Success, st, header),
                }
            }
        };
        reply.set_auth_status(auth_status);
        reply.set_udp_status(udp_status);
        reply.set_status(header);
        reply.set_timestamp(NtpTimestamp::from_unix(wall));
        // Only a request that proved it knows the key gets a signed reply: signing anything else
        // would hand an attacker a validly signed message (a reply has a request's format).
        match secret.filter(|_| authenticated && matches!(mode, AuthMode::Sha256 | AuthMode::HmacSha256)) {
            Some(secret) => reply.sign(mode, &secret),
            None => reply.set_digest(&[0; 32]),
        }
        let accepted = header == Status::Success;
        if accepted {
            self.stats.control_accepted += 1;
        }
        ControlResult::Reply { len, accepted }
    }

    /// Validates and applies a v2 request; returns the measurement port and session id.
    /// `authenticated` is set once the request's digest has been verified.
    #[allow(clippy::too_many_arguments)]
    fn v2_decide(
        &mut self,
        now: Instant,
        wall: Duration,
        src: SocketAddr,
        view: &ControlV2<&[u8]>,
        parsed: ipsla_wire::Result<ControlV2Repr>,
        binder: &mut impl PortBinder,
        authenticated: &mut bool,
    ) -> Result<(u16, u32), Reject> {
        let repr = match parsed {
            Ok(r) => r,
            Err(WireError::UnknownType(_)) => {
                return Err(self.reject(now, src, Reject::FormatError));
            }
            Err(_) => return Err(self.reject(now, src, Reject::FormatError)),
        };
        // A request carries status 0 everywhere; anything else is a reply (or garbage) sent back.
        if repr.status != Status::Success
            || repr.auth.status != Status::Success
            || repr.measurement.is_some_and(|m| m.status != Status::Success)
        {
            return Err(self.reject(now, src, Reject::FormatError));
        }
        self.v2_authenticate(now, wall, src, view, &repr)?;
        *authenticated = matches!(repr.auth.mode, AuthMode::Sha256 | AuthMode::HmacSha256);
        let Some(m) = repr.measurement else {
            return Err(self.reject(now, src, Reject::FormatError));
        };
        let peer_addr = if m.meas_src.is_unspecified() { src.ip() } else { m.meas_src };
        let request = SessionRequest {
            key: PortKey { proto: Proto::Udp, addr: m.meas_dst, port: m.meas_dst_port },
            peer: Peer { addr: peer_addr, port: m.meas_src_port },
            kind: SessionKind::UdpMeasurement,
            duration: Duration::from_millis(u64::from(m.duration_ms)),
            source: src.ip(),
        };
        let port = match self.open_session(now, request, binder) {
            Ok(p) => p,
            Err(why) => return Err(self.reject(now, src, why)),
        };
        let session_id = if m.session_id != 0 {
            m.session_id
        } else {
            let id = self.next_session_id;
            self.next_session_id = self.next_session_id.wrapping_add(1).max(1);
            id
        };
        Ok((port, session_id))
    }

    fn v2_authenticate(
        &mut self,
        now: Instant,
        wall: Duration,
        src: SocketAddr,
        view: &ControlV2<&[u8]>,
        repr: &ControlV2Repr,
    ) -> Result<(), Reject> {
        let mode = repr.auth.mode;
        match mode {
            AuthMode::None if !self.config.require_auth => return Ok(()),
            AuthMode::Sha256 | AuthMode::HmacSha256 => {}
            AuthMode::None | AuthMode::Unknown(_) => {
                return Err(self.reject(now, src, Reject::AuthFailed));
            }
        }
        let key_id = repr.auth.key_id;
        let ok = match self.config.keys.get(&key_id) {
            Some(secret) => view.verify(mode, secret),
            None => false,
        };
        if !ok {
            return Err(self.reject(now, src, Reject::AuthFailed));
        }
        // Replay protection applies to authenticated requests only: without a key anyone can
        // forge a fresh one anyway. The send timestamp is required and must be within the window.
        let ours = NtpTimestamp::from_unix(wall);
        if repr.timestamp.0 == 0
            || ours.diff_nanos(repr.timestamp).unsigned_abs() > self.config.timestamp_window.as_nanos() as u64
        {
            return Err(self.reject(now, src, Reject::Replay));
        }
        // State per (key, control source named in the signed message): a replayed message maps to
        // its original sender's entry whatever address it is sent from, and a spoofer without the
        // key cannot create entries.
        let named = repr
            .measurement
            .map_or(src.ip(), |m| if m.control_src.is_unspecified() { src.ip() } else { m.control_src });
        let digest = view.digest().unwrap_or([0; 32]);
        let k = (named, key_id);
        if let Some(last) = self.replay.get(&k) {
            let newer_seq = (repr.sequence.wrapping_sub(last.sequence) as i32) > 0;
            // a newer timestamp also admits a lower sequence: a sender that restarted its
            // sequence (RFC 6812 allows it after a reboot)
            let age = repr.timestamp.diff_nanos(last.timestamp);
            let fresh = age > 0 || (age == 0 && newer_seq);
            let retry = repr.sequence == last.sequence && digest == last.digest;
            if !(fresh || retry) {
                return Err(self.reject(now, src, Reject::Replay));
            }
        }
        if self.replay.len() >= 65_536 && !self.replay.contains_key(&k) {
            // entries older than the window can no longer be replayed: forget them
            let window = self.config.timestamp_window.as_nanos() as i64;
            self.replay.retain(|_, r| ours.diff_nanos(r.timestamp) <= window);
            if self.replay.len() >= 65_536 {
                return Err(self.reject(now, src, Reject::Replay));
            }
        }
        self.replay.insert(k, ReplayState { sequence: repr.sequence, digest, timestamp: repr.timestamp });
        Ok(())
    }

    fn open_session(&mut self, now: Instant, req: SessionRequest, binder: &mut impl PortBinder) -> Result<u16, Reject> {
        if req.duration.is_zero() || req.duration > self.config.max_duration {
            return Err(Reject::BadDuration);
        }
        if req.key.addr.is_unspecified() || req.key.addr.is_multicast() {
            return Err(Reject::NotLocal);
        }
        let port_ok = req.key.port == 0 && req.kind == SessionKind::UdpMeasurement
            || self.config.port_range.contains(&req.key.port)
                && !self.config.reserved_ports.contains(&req.key.port)
                && req.key.port != 0;
        if !port_ok {
            return Err(Reject::PortNotAllowed);
        }
        let mut req = req;
        if req.key.port == 0 {
            // A repeated port-0 request (a retry, or the next cycle) refreshes the session this
            // sender already has instead of opening a second port.
            let same = |k: &PortKey, e: &PortEntry| {
                k.proto == req.key.proto
                    && k.addr == req.key.addr
                    && e.sessions.get(&req.peer).is_some_and(|s| s.kind == req.kind)
            };
            if let Some(k) = self.ports.iter().find(|(k, e)| same(k, e)).map(|(k, _)| *k) {
                req.key = k;
            }
        }
        let existing = self.ports.get(&req.key).and_then(|e| e.sessions.get(&req.peer)).is_some();
        if !existing {
            if self.sessions >= self.config.max_sessions {
                return Err(Reject::TooManySessions);
            }
            if self.per_source.get(&req.source).copied().unwrap_or(0) >= self.config.max_sessions_per_source {
                return Err(Reject::TooManySessionsPerSource);
            }
        }
        let mut key = req.key;
        match self.ports.get(&key) {
            Some(e) if e.permanent.is_some() => return Err(Reject::PortInUse),
            Some(_) => {}
            None => {
                key.port = binder.open(key, &self.config.port_range).map_err(|e| match e {
                    BindError::InUse => Reject::PortInUse,
                    BindError::NotLocal => Reject::NotLocal,
                    BindError::Other => Reject::BindFailed,
                })?;
            }
        }
        let expires = now + req.duration;
        let entry = self.ports.entry(key).or_default();
        match entry.sessions.get_mut(&req.peer) {
            Some(s) => {
                // A repeated request refreshes the duration and resets the responder sequence
                // (RFC 6812 §3.1 "Control-Request" rules; IOS re-sends control every cycle).
                self.timers.remove(&(s.expires, key, req.peer));
                self.timers.insert((expires, key, req.peer));
                s.expires = expires;
                s.responder_seq = 0;
                s.kind = req.kind;
            }
            None => {
                entry.sessions.insert(
                    req.peer,
                    Session { source: req.source, kind: req.kind, expires, responder_seq: 0, probes: 0 },
                );
                self.sessions += 1;
                *self.per_source.entry(req.source).or_insert(0) += 1;
                self.stats.sessions_opened += 1;
                self.timers.insert((expires, key, req.peer));
            }
        }
        Ok(key.port)
    }

    fn remove_session(&mut self, key: PortKey, peer: Peer, binder: &mut impl PortBinder) {
        let Some(entry) = self.ports.get_mut(&key) else {
            return;
        };
        let Some(session) = entry.sessions.remove(&peer) else {
            return;
        };
        self.timers.remove(&(session.expires, key, peer));
        self.sessions -= 1;
        self.stats.sessions_closed += 1;
        if let Some(n) = self.per_source.get_mut(&session.source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&session.source);
            }
        }
        if entry.sessions.is_empty() && entry.permanent.is_none() {
            self.ports.remove(&key);
            binder.close(key);
        }
    }

    /// When the next session expires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, ..)| *t)
    }

    /// Ends every session whose time is up and releases ports nobody uses.
    pub fn handle_timeout(&mut self, now: Instant, binder: &mut impl PortBinder) {
        while let Some((t, key, peer)) = self.timers.first().copied() {
            if t > now {
                break;
            }
            self.timers.remove(&(t, key, peer));
            self.remove_session(key, peer, binder);
        }
        self.ports.values_mut().for_each(|e| {
            if e.permanent.is_some() && !e.permanent_peers.is_empty() {
                e.permanent_peers.retain(|_, (_, last)| now.saturating_duration_since(*last) < PERMANENT_PEER_IDLE);
            }
        });
    }

    fn find_session(&mut self, key: &PortKey, src: SocketAddr) -> Option<(Peer, &mut Session)> {
        let e = self.ports.get_mut(key)?;
        let exact = Peer { addr: src.ip(), port: src.port() };
        let any = Peer { addr: src.ip(), port: 0 };
        let peer = if e.sessions.contains_key(&exact) {
            exact
        } else if e.sessions.contains_key(&any) {
            any
        } else {
            // a v1 sender whose jitter probes leave from another port than its control message:
            // accept when it has exactly one such session here (a v2 session names its port)
            let mut mine = e
                .sessions
                .iter()
                .filter(|(p, s)| p.addr == src.ip() && s.kind == SessionKind::UdpJitter)
                .map(|(p, _)| p);
            match (mine.next(), mine.next()) {
                (Some(p), None) => *p,
                _ => return None,
            }
        };
        e.sessions.get_mut(&peer).map(|s| (peer, s))
    }

    fn drop_probe(&mut self, why: ProbeReject) -> ProbeResult {
        *self.stats.probe_drops.entry(why).or_insert(0) += 1;
        ProbeResult::Dropped(why)
    }

    /// Handles a probe that arrived on `key` from `src` at `rx`; rewrites `pkt` into the
    /// reply in place (same length). The caller applies [`stamp_transmit`] just before sending.
    pub fn handle_probe(
        &mut self,
        now: Instant,
        key: &PortKey,
        src: SocketAddr,
        rx: RxTime,
        pkt: &mut [u8],
        binder: &mut impl PortBinder,
    ) -> ProbeResult {
        let (kind, rseq, close) = match self.find_session(key, src) {
            Some((peer, s)) if s.expires > now => {
                if s.kind == SessionKind::UdpEcho {
                    (SessionKind::UdpEcho, 0, Some(peer))
                } else {
                    s.responder_seq = s.responder_seq.wrapping_add(1);
                    s.probes += 1;
                    (s.kind, s.responder_seq, None)
                }
            }
            _ => match self.ports.get_mut(key).and_then(|e| e.permanent.map(|k| (k, e))) {
                Some((PermanentKind::UdpEcho, _)) => (SessionKind::UdpEcho, 0, None),
                Some((PermanentKind::UdpJitter, e)) => {
                    let rseq = permanent_seq(e, now, src, pkt);
                    (SessionKind::UdpJitter, rseq, None)
                }
                _ => return self.drop_probe(ProbeReject::NoSession),
            },
        };
        if rx.kernel {
            self.stats.rx_stamps_kernel += 1;
        } else {
            self.stats.rx_stamps_user += 1;
        }
        let r = fill_probe(kind, rseq, rx, pkt);
        match r {
            ProbeResult::Reply { .. } => {
                self.stats.probes_answered += 1;
                if let Some(peer) = close {
                    // Cisco closes the udp-echo port once it has answered (IP SLA config guide).
                    if let Some(s) = self.ports.get_mut(key).and_then(|e| e.sessions.get_mut(&peer)) {
                        s.probes += 1;
                    }
                    self.remove_session(*key, peer, binder);
                }
                r
            }
            ProbeResult::Dropped(why) => self.drop_probe(why),
        }
    }

    /// Counts a TCP connection accepted on `key` from `src`; true when a session or permanent port
    /// covers it. The caller closes the connection at once either way (the responder sends FIN
    /// first, IOS capture).
    pub fn handle_tcp_accept(&mut self, now: Instant, key: &PortKey, src: SocketAddr) -> bool {
        let ok = match self.find_session(key, src) {
            Some((_, s)) if s.expires > now => {
                s.probes += 1;
                true
            }
            _ => self.ports.get(key).is_some_and(|e| e.permanent == Some(PermanentKind::TcpConnect)),
        };
        if ok {
            self.stats.tcp_accepts += 1;
        } else {
            *self.stats.probe_drops.entry(ProbeReject::NoSession).or_insert(0) += 1;
        }
        ok
    }
}

struct SessionRequest {
    key: PortKey,
    peer: Peer,
    kind: SessionKind,
    duration: Duration,
    /// Source address of the control message: what the per-source cap counts.
    source: IpAddr,
}

fn permanent_seq(e: &mut PortEntry, now: Instant, src: SocketAddr, pkt: &[u8]) -> u32 {
    let sender_seq = match probe::probe_type(pkt) {
        Some(ProbeType::JitterMs) if pkt.len() >= probe::TYPE2_HEADER_LEN => {
            u32::from(Type2::new_unchecked(pkt).sender_seq())
        }
        Some(ProbeType::JitterUs) => {
            let l = Type3Layout::detect(pkt);
            if pkt.len() < l.header_len() {
                return 0;
            }
            Type3::new_unchecked(pkt, l).sender_seq()
        }
        _ => return 0,
    };
    if !e.permanent_peers.contains_key(&src) && e.permanent_peers.len() >= PERMANENT_PEERS_MAX {
        // Too many senders to count for: copy the sender's sequence (no loss direction).
        return sender_seq;
    }
    let c = e.permanent_peers.entry(src).or_insert((0, now));
    if sender_seq == 1 {
        c.0 = 0;
    }
    c.0 = c.0.wrapping_add(1);
    c.1 = now;
    c.0
}

/// Writes the responder's receive-side fields into a probe (T2, responder sequence).
fn fill_probe(kind: SessionKind, rseq: u32, rx: RxTime, pkt: &mut [u8]) -> ProbeResult {
    let len = pkt.len();
    if kind == SessionKind::UdpEcho {
        return ProbeResult::Reply { len, stamp: TxStamp::None };
    }
    match probe::probe_type(pkt) {
        Some(ProbeType::Echo) => ProbeResult::Reply { len, stamp: TxStamp::None },
        Some(ProbeType::JitterMs) => {
            let Ok(mut p) = Type2::new_checked(&mut *pkt) else {
                return ProbeResult::Dropped(ProbeReject::Truncated);
            };
            let t2 = ms_since_midnight(rx.wall);
            p.set_t2(t2);
            p.set_processing_ms(0);
            p.set_responder_seq(rseq as u16);
            ProbeResult::Reply { len, stamp: TxStamp::Type2 { t2_ms: t2 } }
        }
        Some(ProbeType::JitterUs) => {
            let layout = if kind == SessionKind::UdpMeasurement { Type3Layout::Rfc } else { Type3Layout::detect(pkt) };
            let Ok(mut p) = Type3::new_checked(&mut *pkt, layout) else {
                return ProbeResult::Dropped(ProbeReject::Truncated);
            };
            p.set_t2(NtpTimestamp::from_unix(rx.wall).0);
            p.set_responder_seq(rseq);
            ProbeResult::Reply { len, stamp: TxStamp::Type3 { layout } }
        }
        None => ProbeResult::Dropped(ProbeReject::Truncated),
        Some(_) => ProbeResult::Dropped(ProbeReject::UnknownType),
    }
}

/// Writes the transmit-time fields of a reply, as late as the caller can: type 2 gets the
/// processing time ms(T3) − T2 (saturating to 0..=65535), type 3 gets the NTP T3.
pub fn stamp_transmit(pkt: &mut [u8], stamp: TxStamp, wall_now: Duration) {
    match stamp {
        TxStamp::None => {}
        TxStamp::Type2 { t2_ms } => {
            let d = ms_diff(ms_since_midnight(wall_now), t2_ms).clamp(0, i32::from(u16::MAX));
            Type2::new_unchecked(pkt).set_processing_ms(d as u16);
        }
        TxStamp::Type3 { layout } => {
            Type3::new_unchecked(pkt, layout).set_t3(NtpTimestamp::from_unix(wall_now).0);
        }
    }
}

#[cfg(test)]
mod tests;
