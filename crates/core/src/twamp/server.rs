//! TWAMP-Control server (RFC 5357 §3; RFC 4656 §3 for the shared parts; RFC 5618 mixed mode,
//! RFC 5938 individual session control, RFC 6038 reflect octets and symmetrical size), sans-IO:
//! one [`ControlServer`] per TCP connection.
//!
//! Like quinn-proto, the machine consumes whole messages and produces bytes to write and events:
//!
//! ```text
//! loop {
//!     for ev in server.poll_event()  -> act on it (start/stop reflectors, close)   ← first
//!     for b in server.poll_transmit() -> write b                                    ← then
//!     let Some(n) = server.expected_len() else { close the socket };
//!     read exactly n octets before server.poll_timeout() (else handle_timeout) ;
//!     server.handle_bytes(now, wall, &bytes, &mut binder, &mut rng)
//! }
//! ```
//!
//! Events come before the bytes that answer them: a driver that handles every event before it
//! writes starts a session's reflector before the Start-Ack goes out, so the sender's first
//! packet finds it running.
//!
//! The UDP port of a session is bound through [`PortBinder`] *while* its Request-TW-Session is
//! handled, before the Accept-Session is written (as the Cisco responder core does): the port in
//! the Accept-Session is one that already receives. The machine releases it through the same
//! binder when the session ends, when the connection closes, or when the driver reports the end
//! of the reflector ([`ControlServer::session_ended`]).
//!
//! Decisions, with their sources:
//! - **Set-Up-Response with a Mode this server cannot provide** (no security bit, several, one
//!   not offered, or a feature bit not offered): Server-Start with **Accept = 3**, "some aspect of
//!   the request is not supported" (RFC 4656 §3.3), then close. RFC 4656 §3.1 only requires a
//!   non-zero Accept; 3 is the code that says why (owamp sends 1). A client that sends Mode 0 has
//!   given up (RFC 4656 §3.1): the server closes without a Server-Start.
//! - **Authentication failure** (unknown KeyID or a Token that does not carry the Challenge):
//!   Server-Start with **Accept = 1** (RFC 4656 §3.1, as twampd), in clear text, then close. An
//!   unknown KeyID still runs the key derivation, so both failures take the same time.
//! - **Request-TW-Session** problems answer an Accept-Session with Port 0 and SID 0 and keep the
//!   connection open (RFC 5357 §3.5, reference §2.5): 3 for a non-zero Conf-Sender/Receiver, a
//!   non-zero SID, an IPVN other than 4/6, a Type-P that is not a DSCP, too much padding or padding
//!   too short for the octets to reflect (RFC 6038 §4.2); 4 when the connection holds its maximum
//!   of sessions; 5 when no port of the test range can be bound; 1 when the Receiver Address is
//!   not one of this host's; 2 for any other local failure.
//! - **Receiver Port**: used when it is inside the test port range and free, else a port of the
//!   range is chosen (twampd ignores it altogether, reference §2.5; clients must use the port of
//!   the Accept-Session).
//! - **Zero Sender/Receiver Address**: the control connection's addresses (RFC 5357 §3.5).
//! - **Stop-Sessions** Number of Sessions must equal the started, unstopped sessions (RFC 5357
//!   §3.8). twampy sends 0 (reference §2.7): read as "all" and counted. Any other mismatch closes
//!   the connection (as twampd) and ends every session.
//! - **Unknown command numbers** are answered with an Accept-Session carrying Accept = 3 (RFC
//!   5357 §3.5, reference §2.8). Their length is unknown, so the connection closes after that
//!   reply. Start-N/Stop-N-Sessions without mode bit 16 get their Ack with Accept = 3 and the
//!   connection stays open.
//! - **RFC 5938**: unknown SIDs in Start-N/Stop-N get Accept = 1; the acks are grouped by Accept
//!   code, lowest first.
//! - **Timeout** of a session (how long it reflects after stop) is capped at
//!   [`ServerConfig::max_stop_timeout`]; a larger request is clamped and counted.
//! - **Timers** (reference §2.9): the Set-Up-Response must arrive within
//!   [`ServerConfig::setup_timeout`]; afterwards SERVWAIT closes a connection without control
//!   traffic, except while a session is started and not stopped.

use super::KeyFile;
use super::reflector::SessionParams;
use crate::io::{BindError, PortBinder, PortKey, Proto};
use ipsla_wire::time::NtpTimestamp;
use ipsla_wire::twamp::control::{
    self, AcceptSessionRepr, BLOCK_LEN, HMAC_LEN, RequestTwSession, RequestTwSessionRepr, ServerGreetingRepr,
    ServerStartRepr, SessionList, SessionListRepr, SetUpResponse, SetUpResponseRepr, SidList, StartAckRepr,
    StopSessions, StopSessionsRepr,
};
use ipsla_wire::twamp::crypto::{
    self, ControlOpener, ControlSealer, MAX_PBKDF2_COUNT, MIN_PBKDF2_COUNT, SessionKeys, TestKeys,
};
use ipsla_wire::twamp::{Accept, Command, Modes, SecurityMode, Sid};
use rand::RngCore;
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default UDP ports of test sessions (twampd's `testports` style).
pub const DEFAULT_TEST_PORTS: RangeInclusive<u16> = 18760..=19960;

/// Server policy and limits. [`ServerConfig::validate`] checks it; every error names the field.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Security modes allowed: a subset of [`Modes::SECURITY`] (1 open, 2 authenticated,
    /// 4 encrypted, 8 mixed). Default: open only.
    pub modes: Modes,
    /// Shared secrets by identity (required when 2, 4 or 8 is allowed).
    pub keys: KeyFile,
    /// PBKDF2 Count of the greeting: a power of 2, at least 1024 (RFC 4656 §3.1); twampd uses 2048.
    pub pbkdf2_count: u32,
    /// Offer RFC 5938 individual session control (mode bit 16).
    pub individual_session_control: bool,
    /// Offer RFC 6038 Reflect Octets (mode bit 32).
    pub reflect_octets: bool,
    /// Offer RFC 6038 Symmetrical Size (mode bit 64).
    pub symmetrical_size: bool,
    /// Most sessions one control connection may hold (Accept = 4 beyond).
    pub max_sessions: usize,
    /// Largest Padding Length accepted, octets (Accept = 3 beyond).
    pub max_padding: u32,
    /// Longest Timeout (reflecting after Stop-Sessions) granted; larger requests are clamped.
    pub max_stop_timeout: Duration,
    /// The Set-Up-Response must arrive within this time of the connection.
    pub setup_timeout: Duration,
    /// SERVWAIT: a connection without control traffic (outside a started test) is closed after
    /// this long (RFC 5357 §3.8, default 900 s).
    pub servwait: Duration,
    /// REFWAIT: a session that receives no test packet for this long ends (RFC 5357 §4.2,
    /// default 900 s).
    pub refwait: Duration,
    /// UDP ports of test sessions.
    pub test_ports: RangeInclusive<u16>,
    /// When the server started (wall clock since the Unix epoch): the Start-Time of every
    /// Server-Start (RFC 4656 §3.1). The driver sets it.
    pub start_time: Duration,
    /// Most control connections at once (the driver greets others with Modes 0 and closes).
    pub max_connections: usize,
    /// Most control connections at once from one address (same treatment).
    pub max_connections_per_source: usize,
    /// New control connections per second from one address (a token bucket with a burst of
    /// twice this): every authenticated set-up costs a PBKDF2 derivation on the responder
    /// thread, so a client may not reconnect without bound. Over it: greeting with Modes 0.
    pub connection_rate: f64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            modes: Modes::UNAUTHENTICATED,
            keys: KeyFile::default(),
            pbkdf2_count: 2048,
            individual_session_control: true,
            reflect_octets: true,
            symmetrical_size: true,
            max_sessions: 16,
            max_padding: 4096,
            max_stop_timeout: Duration::from_secs(60),
            setup_timeout: Duration::from_secs(30),
            servwait: Duration::from_secs(900),
            refwait: Duration::from_secs(900),
            test_ports: DEFAULT_TEST_PORTS,
            start_time: Duration::ZERO,
            max_connections: 64,
            max_connections_per_source: 8,
            connection_rate: 20.0,
        }
    }
}

/// A [`ServerConfig`] field with a value it does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    /// The field.
    pub field: &'static str,
    /// What is wrong and what is allowed.
    pub reason: String,
}

impl ServerConfig {
    /// The Modes field of the greeting: the allowed security modes plus the offered features.
    pub fn offered_modes(&self) -> Modes {
        let mut m = self.modes & Modes::SECURITY;
        for (on, bit) in [
            (self.individual_session_control, Modes::INDIVIDUAL_SESSION_CONTROL),
            (self.reflect_octets, Modes::REFLECT_OCTETS),
            (self.symmetrical_size, Modes::SYMMETRICAL_SIZE),
        ] {
            if on {
                m = m | bit;
            }
        }
        m
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: String| Err(ConfigError { field, reason });
        if self.modes.is_empty() || !Modes::SECURITY.contains(self.modes) {
            return bad("modes", format!("{:?} is not a non-empty subset of open, auth, encrypted, mixed", self.modes));
        }
        if (self.modes & Modes(0xe)).0 != 0 && self.keys.is_empty() {
            return bad("keys", "authenticated, encrypted and mixed modes need a key file with identities".into());
        }
        let c = self.pbkdf2_count;
        if !c.is_power_of_two() || !(MIN_PBKDF2_COUNT..=MAX_PBKDF2_COUNT).contains(&c) {
            return bad(
                "pbkdf2_count",
                format!("{c}: must be a power of 2 from {MIN_PBKDF2_COUNT} to {MAX_PBKDF2_COUNT}"),
            );
        }
        if self.max_sessions == 0 || self.max_sessions > 4096 {
            return bad("max_sessions", format!("{}: allowed 1 to 4096", self.max_sessions));
        }
        if !(0.0..=1e6).contains(&self.connection_rate) {
            return bad("connection_rate", format!("{}: allowed 0 (unlimited) to 1000000", self.connection_rate));
        }
        if self.max_padding > 65_000 {
            return bad("max_padding", format!("{}: allowed 0 to 65000", self.max_padding));
        }
        if self.test_ports.is_empty() || *self.test_ports.start() == 0 {
            return bad("test_ports", format!("{:?}: expected FIRST-LAST with 1 <= FIRST <= LAST", self.test_ports));
        }
        for (field, d) in [
            ("setup_timeout", self.setup_timeout),
            ("servwait", self.servwait),
            ("refwait", self.refwait),
            ("max_stop_timeout", self.max_stop_timeout),
        ] {
            if d.is_zero() || d > Duration::from_secs(86_400) {
                return bad(field, format!("{d:?}: allowed 1 ns to 1 day"));
            }
        }
        if self.max_connections == 0 || self.max_connections_per_source == 0 {
            return bad("max_connections", "allowed 1 or more".into());
        }
        Ok(())
    }
}

/// Control-server counters. Each machine counts its own; the driver adds them up with
/// [`ServerStats::merge`] after taking them with [`ControlServer::take_stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ServerStats {
    /// Connections greeted with the offered modes.
    pub connections: u64,
    /// Connections greeted with Modes 0 (connection limits) and closed.
    pub refused: u64,
    /// Set-Up-Responses with Mode 0: the client had no mode in common and gave up.
    pub client_gave_up: u64,
    /// Set-Up-Response Mode not offered (Server-Start Accept = 3).
    pub rejected_mode: u64,
    /// Unknown KeyID (Server-Start Accept = 1).
    pub rejected_unknown_key_id: u64,
    /// Token without the Challenge: wrong shared secret (Server-Start Accept = 1).
    pub rejected_bad_token: u64,
    /// Connections accepted (Server-Start Accept = 0), open mode.
    pub established_open: u64,
    /// … authenticated mode.
    pub established_authenticated: u64,
    /// … encrypted mode.
    pub established_encrypted: u64,
    /// … mixed mode.
    pub established_mixed: u64,
    /// Control messages whose HMAC did not verify (connection closed).
    pub bad_hmac: u64,
    /// Set-Up-Response not received within the setup timeout.
    pub setup_timeouts: u64,
    /// Connections closed by SERVWAIT.
    pub servwait_timeouts: u64,
    /// Unknown command numbers (Accept = 3, connection closed).
    pub unknown_commands: u64,
    /// Known commands that are not allowed here (Accept = 3, connection kept).
    pub unexpected_commands: u64,
    /// Request-TW-Session messages.
    pub session_requests: u64,
    /// Sessions accepted.
    pub sessions_accepted: u64,
    /// Requests refused with Accept = 3: Conf-Sender/Receiver, SID, IPVN, Type-P, RFC 6038 padding.
    pub session_rejected_unsupported: u64,
    /// Requests refused with Accept = 3: Padding Length above the limit.
    pub session_rejected_padding: u64,
    /// Requests refused with Accept = 4: the connection holds its maximum of sessions.
    pub session_rejected_limit: u64,
    /// Requests refused because no port could be bound (Accept = 5, 1 or 2).
    pub session_rejected_bind: u64,
    /// Requests whose Timeout was above the limit and was clamped.
    pub timeout_clamped: u64,
    /// Sessions started (Start-Sessions or Start-N-Sessions).
    pub sessions_started: u64,
    /// Sessions stopped (Stop-Sessions or Stop-N-Sessions).
    pub sessions_stopped: u64,
    /// Sessions ended and their ports released.
    pub sessions_ended: u64,
    /// Stop-Sessions with Number of Sessions 0 taken as "all" (twampy, reference §2.7).
    pub stop_zero_sessions: u64,
    /// Stop-Sessions whose Number of Sessions did not match (connection closed).
    pub stop_mismatch: u64,
    /// Stop-Sessions with a non-zero Accept: the client considers the results invalid.
    pub stop_results_invalid: u64,
    /// Start-N-Sessions / Stop-N-Sessions messages (RFC 5938).
    pub individual_commands: u64,
    /// SIDs in Start-N/Stop-N-Sessions this connection does not know.
    pub unknown_sids: u64,
    /// Connections the client closed.
    pub client_closed: u64,
}

impl ServerStats {
    /// Adds every counter of `o` to `self`.
    pub fn merge(&mut self, o: &ServerStats) {
        macro_rules! add {
            ($($f:ident),*) => { $(self.$f += o.$f;)* };
        }
        add!(
            connections,
            refused,
            client_gave_up,
            rejected_mode,
            rejected_unknown_key_id,
            rejected_bad_token,
            established_open,
            established_authenticated,
            established_encrypted,
            established_mixed,
            bad_hmac,
            setup_timeouts,
            servwait_timeouts,
            unknown_commands,
            unexpected_commands,
            session_requests,
            sessions_accepted,
            session_rejected_unsupported,
            session_rejected_padding,
            session_rejected_limit,
            session_rejected_bind,
            timeout_clamped,
            sessions_started,
            sessions_stopped,
            sessions_ended,
            stop_zero_sessions,
            stop_mismatch,
            stop_results_invalid,
            individual_commands,
            unknown_sids,
            client_closed
        );
    }
}

/// Why a control connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    /// Greeted with Modes 0 (connection limits).
    #[error("refused by the connection limits")]
    Refused,
    /// The client sent Mode 0.
    #[error("the client has no mode in common")]
    ClientGaveUp,
    /// Server-Start carried this non-zero Accept.
    #[error("set-up rejected with Accept {0:?}")]
    SetupRejected(Accept),
    /// No Set-Up-Response in time.
    #[error("no Set-Up-Response in time")]
    SetupTimeout,
    /// SERVWAIT elapsed.
    #[error("idle for SERVWAIT")]
    Servwait,
    /// A control message's HMAC did not verify.
    #[error("control message HMAC failed")]
    BadHmac,
    /// A command number whose length is unknown.
    #[error("unknown command {0}")]
    UnknownCommand(u8),
    /// Stop-Sessions' Number of Sessions did not match.
    #[error("Stop-Sessions counted {got} sessions, {active} active")]
    StopMismatch {
        /// Sessions started and not stopped.
        active: u32,
        /// Number of Sessions in the message.
        got: u32,
    },
    /// The client closed the connection.
    #[error("closed by the client")]
    ClientClosed,
    /// A local failure.
    #[error("internal error")]
    Internal,
}

/// Errors of [`ControlServer::handle_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The connection is closed (now or before), for this reason.
    #[error("connection closed: {0}")]
    Closed(CloseReason),
    /// The driver passed a different number of octets than [`ControlServer::expected_len`].
    #[error("expected {expected:?} octets, got {got}")]
    WrongLength {
        /// What `expected_len` said.
        expected: Option<usize>,
        /// What was passed.
        got: usize,
    },
}

/// What the driver must act on.
#[derive(Debug, Clone)]
pub enum ServerEvent {
    /// A session was accepted; its UDP port is bound (through the [`PortBinder`]) on `local`.
    /// The driver creates its reflector with
    /// [`super::reflector::SessionReflector::new`]`(now, params)`, sets the reply DSCP
    /// (`params.dscp`) and TTL 255 on the socket, and keeps it idle until started.
    SessionAccepted {
        /// Where the reflector receives.
        local: SocketAddr,
        /// The negotiated session.
        params: SessionParams,
    },
    /// These sessions start reflecting now (before the Start-Ack / Start-N-Ack is written).
    SessionsStarted(Vec<Sid>),
    /// These sessions stop: they keep reflecting for their Timeout, then end.
    SessionsStopped(Vec<Sid>),
    /// The connection is over: write what is queued and close the socket. Sessions that were
    /// not stopped have ended (their ports are released through the binder); stopped ones finish
    /// their Timeout, and the driver still reports their end with
    /// [`ControlServer::session_ended`] ([`ControlServer::session_count`] says how many are left).
    Closed(CloseReason),
}

/// Timers of a control connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Waiting for the Set-Up-Response.
    Setup,
    /// SERVWAIT.
    Servwait,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitSetup,
    /// Waiting for the first block of a command.
    AwaitCommand,
    /// The first block (decrypted) is in hand; waiting for the rest of a message this long.
    AwaitRest([u8; BLOCK_LEN], usize),
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessState {
    Accepted,
    Started,
    Stopped,
}

#[derive(Debug, Clone, Copy)]
struct Session {
    key: PortKey,
    state: SessState,
}

/// A passphrase for the key derivation when the KeyID is unknown, so that an unknown identity
/// takes as long to refuse as a wrong secret.
const DUMMY_PASSPHRASE: &[u8] = b"ipsla-twamp-unknown-identity";

/// The server side of one TWAMP-Control connection.
pub struct ControlServer {
    cfg: Arc<ServerConfig>,
    peer: SocketAddr,
    local: SocketAddr,
    phase: Phase,
    challenge: [u8; 16],
    salt: [u8; 16],
    mode: Modes,
    security: SecurityMode,
    keys: Option<SessionKeys>,
    sealer: Option<ControlSealer>,
    opener: Option<ControlOpener>,
    sessions: BTreeMap<Sid, Session>,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<ServerEvent>,
    created: Instant,
    last_activity: Instant,
    stats: ServerStats,
}

impl std::fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlServer")
            .field("peer", &self.peer)
            .field("phase", &self.phase)
            .field("mode", &self.mode)
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl ControlServer {
    /// A connection from `peer` to `local`: queues the Server Greeting with the offered modes, a
    /// random Challenge and Salt, and the configured Count (RFC 4656 §3.1).
    pub fn new(
        cfg: Arc<ServerConfig>,
        now: Instant,
        peer: SocketAddr,
        local: SocketAddr,
        rng: &mut impl RngCore,
    ) -> Self {
        let modes = cfg.offered_modes();
        let mut s = Self::greet(cfg, now, peer, local, rng, modes);
        s.stats.connections += 1;
        s
    }

    /// A connection refused by the driver's limits: the greeting carries Modes 0 (RFC 4656 §3.1:
    /// the server does not wish to communicate), then the connection closes.
    pub fn refuse(
        cfg: Arc<ServerConfig>,
        now: Instant,
        peer: SocketAddr,
        local: SocketAddr,
        rng: &mut impl RngCore,
    ) -> Self {
        let mut s = Self::greet(cfg, now, peer, local, rng, Modes(0));
        s.stats.refused += 1;
        s.close(CloseReason::Refused);
        s
    }

    fn greet(
        cfg: Arc<ServerConfig>,
        now: Instant,
        peer: SocketAddr,
        local: SocketAddr,
        rng: &mut impl RngCore,
        modes: Modes,
    ) -> Self {
        let mut challenge = [0u8; 16];
        let mut salt = [0u8; 16];
        rng.fill_bytes(&mut challenge);
        rng.fill_bytes(&mut salt);
        let mut g = vec![0u8; control::SERVER_GREETING_LEN];
        ServerGreetingRepr { modes, challenge, salt, count: cfg.pbkdf2_count }.emit(&mut g);
        ControlServer {
            cfg,
            peer,
            local,
            phase: Phase::AwaitSetup,
            challenge,
            salt,
            mode: Modes(0),
            security: SecurityMode::Unauthenticated,
            keys: None,
            sealer: None,
            opener: None,
            sessions: BTreeMap::new(),
            transmit: VecDeque::from([g]),
            events: VecDeque::new(),
            created: now,
            last_activity: now,
            stats: ServerStats::default(),
        }
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The Mode the client chose (0 before the Set-Up-Response, or when it was refused).
    pub fn mode(&self) -> Modes {
        self.mode
    }

    /// True once the connection is over.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Sessions this connection holds (accepted, started or stopped and still reflecting; after
    /// the close, the stopped ones finishing their Timeout).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Counters since the last [`ControlServer::take_stats`].
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// Returns the counters and starts them again from zero.
    pub fn take_stats(&mut self) -> ServerStats {
        std::mem::take(&mut self.stats)
    }

    /// How many octets to read next: 164 for the Set-Up-Response, 16 for a command's first
    /// block, then the rest of that message; `None` once the connection is closed.
    pub fn expected_len(&self) -> Option<usize> {
        match self.phase {
            Phase::AwaitSetup => Some(control::SET_UP_RESPONSE_LEN),
            Phase::AwaitCommand => Some(BLOCK_LEN),
            Phase::AwaitRest(_, total) => Some(total - BLOCK_LEN),
            Phase::Closed => None,
        }
    }

    /// The next bytes to write, in order.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// The next event; handle every event before writing what [`ControlServer::poll_transmit`]
    /// returns.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// The timer that runs and when it fires.
    pub fn poll_timer(&self) -> Option<(Timer, Instant)> {
        match self.phase {
            Phase::Closed => None,
            Phase::AwaitSetup => Some((Timer::Setup, self.created + self.cfg.setup_timeout)),
            _ if self.sessions.values().any(|s| s.state == SessState::Started) => None,
            _ => Some((Timer::Servwait, self.last_activity + self.cfg.servwait)),
        }
    }

    /// When [`ControlServer::handle_timeout`] should be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.poll_timer().map(|(_, t)| t)
    }

    /// Closes the connection when its timer has fired.
    pub fn handle_timeout(&mut self, now: Instant, binder: &mut impl PortBinder) {
        match self.poll_timer() {
            Some((Timer::Setup, t)) if now >= t => {
                self.stats.setup_timeouts += 1;
                tracing::debug!(peer = %self.peer, "TWAMP-Control: no Set-Up-Response in time");
                self.close_all(binder, CloseReason::SetupTimeout);
            }
            Some((Timer::Servwait, t)) if now >= t => {
                self.stats.servwait_timeouts += 1;
                tracing::debug!(peer = %self.peer, "TWAMP-Control: SERVWAIT elapsed");
                self.close_all(binder, CloseReason::Servwait);
            }
            _ => {}
        }
    }

    /// The client closed the connection (EOF or a socket error): every session that was not
    /// stopped ends.
    pub fn handle_eof(&mut self, binder: &mut impl PortBinder) {
        if self.phase != Phase::Closed {
            self.stats.client_closed += 1;
            self.close_all(binder, CloseReason::ClientClosed);
        }
    }

    /// The driver's reflector of `sid` ended on its own (Timeout after stop, REFWAIT): releases
    /// its port. Unknown SIDs are ignored.
    pub fn session_ended(&mut self, now: Instant, sid: Sid, binder: &mut impl PortBinder) {
        if let Some(s) = self.sessions.remove(&sid) {
            binder.close(s.key);
            self.stats.sessions_ended += 1;
            // SERVWAIT counts again from the end of the last started session.
            if s.state == SessState::Started {
                self.last_activity = self.last_activity.max(now);
            }
        }
    }

    /// Consumes exactly [`ControlServer::expected_len`] octets. Errors: `Closed` when this (or an
    /// earlier) input closed the connection (write what is queued, then close), `WrongLength` for
    /// a driver that read the wrong amount.
    pub fn handle_bytes(
        &mut self,
        now: Instant,
        wall: Duration,
        bytes: &[u8],
        binder: &mut impl PortBinder,
        rng: &mut impl RngCore,
    ) -> Result<(), ControlError> {
        let expected = self.expected_len();
        if expected != Some(bytes.len()) {
            if self.phase == Phase::Closed {
                return Err(ControlError::Closed(CloseReason::Internal));
            }
            return Err(ControlError::WrongLength { expected, got: bytes.len() });
        }
        self.last_activity = now;
        match self.phase {
            Phase::AwaitSetup => self.handle_setup(bytes, rng),
            Phase::AwaitCommand => {
                let mut first = [0u8; BLOCK_LEN];
                first.copy_from_slice(bytes);
                if let Some(o) = &mut self.opener {
                    let _ = o.decrypt_blocks(&mut first);
                }
                match control::message_len(&first) {
                    Ok(total) => self.phase = Phase::AwaitRest(first, total),
                    Err(_) => self.unknown_command(binder, first[0]),
                }
            }
            Phase::AwaitRest(first, total) => {
                self.phase = Phase::AwaitCommand;
                let mut msg = Vec::with_capacity(total);
                msg.extend_from_slice(&first);
                msg.extend_from_slice(bytes);
                if let Some(o) = &mut self.opener {
                    let (body, tail) = msg[BLOCK_LEN..].split_at_mut(total - 2 * BLOCK_LEN);
                    let mut field = [0u8; HMAC_LEN];
                    field.copy_from_slice(tail);
                    if o.decrypt_blocks(body).is_err() || o.check_hmac(&mut field).is_err() {
                        self.stats.bad_hmac += 1;
                        tracing::debug!(peer = %self.peer, "TWAMP-Control: message HMAC failed, closing");
                        self.close_all(binder, CloseReason::BadHmac);
                    } else {
                        tail.copy_from_slice(&field);
                        self.dispatch(wall, &msg, binder, rng);
                    }
                } else {
                    self.dispatch(wall, &msg, binder, rng);
                }
            }
            Phase::Closed => {}
        }
        match self.phase {
            Phase::Closed => Err(ControlError::Closed(self.close_reason())),
            _ => Ok(()),
        }
    }

    fn close_reason(&self) -> CloseReason {
        self.events
            .iter()
            .rev()
            .find_map(|e| if let ServerEvent::Closed(r) = e { Some(*r) } else { None })
            .unwrap_or(CloseReason::Internal)
    }

    fn close(&mut self, reason: CloseReason) {
        if self.phase != Phase::Closed {
            self.phase = Phase::Closed;
            self.events.push_back(ServerEvent::Closed(reason));
        }
    }

    /// Closes the connection. Stopped sessions keep reflecting for their Timeout (RFC 5357
    /// §4.2; twping closes the connection right after Stop-Sessions): they stay until the driver
    /// reports their end. Every other session ends now and its port is released.
    fn close_all(&mut self, binder: &mut impl PortBinder, reason: CloseReason) {
        let sessions = std::mem::take(&mut self.sessions);
        for (sid, s) in sessions {
            if s.state == SessState::Stopped {
                self.sessions.insert(sid, s);
            } else {
                binder.close(s.key);
                self.stats.sessions_ended += 1;
            }
        }
        self.close(reason);
    }

    /// Queues a message, sealed in modes 2/4/8.
    fn queue(&mut self, mut msg: Vec<u8>) {
        if let Some(s) = &mut self.sealer {
            // Cannot fail: every message here is whole blocks with an HMAC field.
            let _ = s.seal(&mut msg);
        }
        self.transmit.push_back(msg);
    }

    fn handle_setup(&mut self, bytes: &[u8], rng: &mut impl RngCore) {
        let Ok(r) = SetUpResponse::new_checked(bytes).and_then(|p| SetUpResponseRepr::parse(&p)) else {
            self.close(CloseReason::Internal);
            return;
        };
        if r.mode.is_empty() {
            self.stats.client_gave_up += 1;
            tracing::debug!(peer = %self.peer, "TWAMP-Control: the client gave up (Mode 0)");
            self.close(CloseReason::ClientGaveUp);
            return;
        }
        let offered = self.cfg.offered_modes();
        let Some(security) = r.mode.security_mode().filter(|_| offered.contains(r.mode)) else {
            self.stats.rejected_mode += 1;
            tracing::debug!(peer = %self.peer, mode = ?r.mode, ?offered, "TWAMP-Control: mode not offered");
            self.reject_setup(Accept::NotSupported);
            return;
        };
        if security.protects_control() {
            let pass = self.cfg.keys.get_key_id(&r.key_id);
            let dk = match crypto::derive_key(pass.unwrap_or(DUMMY_PASSPHRASE), &self.salt, self.cfg.pbkdf2_count) {
                Ok(dk) => dk,
                Err(_) => {
                    self.reject_setup(Accept::InternalError);
                    return;
                }
            };
            let opened = crypto::open_token(&dk, &r.token, &self.challenge);
            let keys = match (pass, opened) {
                (Some(_), Ok(keys)) => keys,
                (None, _) => {
                    self.stats.rejected_unknown_key_id += 1;
                    tracing::debug!(peer = %self.peer, key_id = %String::from_utf8_lossy(r.key_id.as_bytes()),
                        "TWAMP-Control: unknown KeyID");
                    self.reject_setup(Accept::Failure);
                    return;
                }
                (Some(_), Err(_)) => {
                    self.stats.rejected_bad_token += 1;
                    tracing::debug!(peer = %self.peer, key_id = %String::from_utf8_lossy(r.key_id.as_bytes()),
                        "TWAMP-Control: Token does not carry the Challenge (wrong secret)");
                    self.reject_setup(Accept::Failure);
                    return;
                }
            };
            let mut server_iv = [0u8; 16];
            rng.fill_bytes(&mut server_iv);
            self.sealer = Some(ControlSealer::new(&keys, &server_iv));
            self.opener = Some(ControlOpener::new(&keys, &r.client_iv));
            self.keys = Some(keys);
            self.accept_setup(server_iv);
        } else {
            let mut server_iv = [0u8; 16];
            rng.fill_bytes(&mut server_iv);
            self.accept_setup(server_iv);
        }
        self.mode = r.mode;
        self.security = security;
        let c = match security {
            SecurityMode::Unauthenticated => &mut self.stats.established_open,
            SecurityMode::Authenticated => &mut self.stats.established_authenticated,
            SecurityMode::Encrypted => &mut self.stats.established_encrypted,
            SecurityMode::Mixed => &mut self.stats.established_mixed,
        };
        *c += 1;
        self.phase = Phase::AwaitCommand;
    }

    /// Server-Start with a non-zero Accept, Start-Time zero, in the clear (RFC 4656 §3.1), then close.
    fn reject_setup(&mut self, accept: Accept) {
        let mut m = vec![0u8; control::SERVER_START_LEN];
        ServerStartRepr { accept, server_iv: [0; 16], start_time: NtpTimestamp(0) }.emit(&mut m);
        self.transmit.push_back(m);
        self.close(CloseReason::SetupRejected(accept));
    }

    fn accept_setup(&mut self, server_iv: [u8; 16]) {
        let mut m = vec![0u8; control::SERVER_START_LEN];
        ServerStartRepr { accept: Accept::Ok, server_iv, start_time: NtpTimestamp::from_unix(self.cfg.start_time) }
            .emit(&mut m);
        if let Some(s) = &mut self.sealer {
            // Octets 32–47 open the server's CBC stream and its first HMAC (reference §2.3).
            let _ = s.encrypt_blocks(&mut m[control::SERVER_START_ENCRYPTED]);
        }
        self.transmit.push_back(m);
    }

    fn unknown_command(&mut self, binder: &mut impl PortBinder, cmd: u8) {
        self.stats.unknown_commands += 1;
        tracing::debug!(peer = %self.peer, cmd, "TWAMP-Control: unknown command, closing");
        self.queue_accept_session(Accept::NotSupported, 0, Sid::default(), 0);
        self.close_all(binder, CloseReason::UnknownCommand(cmd));
    }

    fn queue_accept_session(&mut self, accept: Accept, port: u16, sid: Sid, reflected: u16) {
        let mut m = vec![0u8; control::ACCEPT_SESSION_LEN];
        AcceptSessionRepr { accept, port, sid, reflected_octets: reflected, server_octets: 0 }.emit(&mut m);
        self.queue(m);
    }

    fn queue_short(&mut self, accept: Accept) {
        let mut m = vec![0u8; control::START_ACK_LEN];
        StartAckRepr { accept }.emit(&mut m);
        self.queue(m);
    }

    fn dispatch(&mut self, wall: Duration, msg: &[u8], binder: &mut impl PortBinder, rng: &mut impl RngCore) {
        match Command::from(msg[0]) {
            Command::RequestTwSession => self.handle_request(wall, msg, binder, rng),
            Command::StartSessions => self.handle_start(),
            Command::StopSessions => self.handle_stop(msg, binder),
            c @ (Command::StartNSessions | Command::StopNSessions) => self.handle_individual(c, msg),
            other => {
                // Start-N-Ack / Stop-N-Ack from a client: known length, so the stream stays framed.
                self.stats.unexpected_commands += 1;
                tracing::debug!(peer = %self.peer, cmd = ?other, "TWAMP-Control: unexpected command");
                self.queue_accept_session(Accept::NotSupported, 0, Sid::default(), 0);
            }
        }
    }

    fn reject_request(&mut self, accept: Accept, why: &str) {
        tracing::debug!(peer = %self.peer, ?accept, why, "TWAMP-Control: Request-TW-Session refused");
        self.queue_accept_session(accept, 0, Sid::default(), 0);
    }

    fn handle_request(&mut self, wall: Duration, msg: &[u8], binder: &mut impl PortBinder, rng: &mut impl RngCore) {
        self.stats.session_requests += 1;
        let Ok(r) = RequestTwSession::new_checked(msg).and_then(|p| RequestTwSessionRepr::parse(&p)) else {
            self.stats.session_rejected_unsupported += 1;
            return self.reject_request(Accept::NotSupported, "IPVN is neither 4 nor 6");
        };
        if !r.sid.is_zero() {
            self.stats.session_rejected_unsupported += 1;
            return self.reject_request(Accept::NotSupported, "non-zero SID");
        }
        let reflect = self.mode.contains(Modes::REFLECT_OCTETS);
        let mut checked = r;
        if !reflect {
            // MBZ without mode bit 32 (RFC 6038 §4.1)
            checked.octets_to_reflect = 0;
            checked.padding_to_reflect = 0;
        }
        let layout = self.security.test_layout();
        let conf = checked.conformance(layout);
        if !conf.is_ok() {
            self.stats.session_rejected_unsupported += 1;
            return self.reject_request(conf, "Conf-Sender/Receiver or RFC 6038 padding");
        }
        let Some(dscp) = r.type_p.dscp() else {
            self.stats.session_rejected_unsupported += 1;
            return self.reject_request(Accept::NotSupported, "Type-P is not a DSCP");
        };
        if r.padding_length > self.cfg.max_padding {
            self.stats.session_rejected_padding += 1;
            return self.reject_request(Accept::NotSupported, "Padding Length above the limit");
        }
        if self.sessions.len() >= self.cfg.max_sessions {
            self.stats.session_rejected_limit += 1;
            return self.reject_request(Accept::PermanentResourceLimitation, "session limit of the connection");
        }
        let sender_ip = match r.sender_address.to_canonical() {
            a if a.is_unspecified() => self.peer.ip().to_canonical(),
            a => a,
        };
        let receiver_ip = match r.receiver_address.to_canonical() {
            a if a.is_unspecified() => self.local.ip().to_canonical(),
            a => a,
        };
        let range = self.cfg.test_ports.clone();
        let key = PortKey { proto: Proto::Udp, addr: receiver_ip, port: 0 };
        let requested = r.receiver_port;
        let mut bound = Err(BindError::InUse);
        if requested != 0 && range.contains(&requested) {
            bound = binder.open(PortKey { port: requested, ..key }, &range);
        }
        if bound == Err(BindError::InUse) {
            bound = binder.open(key, &range);
        }
        let port = match bound {
            Ok(p) => p,
            Err(e) => {
                self.stats.session_rejected_bind += 1;
                let accept = match e {
                    BindError::InUse => Accept::TemporaryResourceLimitation,
                    BindError::NotLocal => Accept::Failure,
                    BindError::Other => Accept::InternalError,
                };
                return self.reject_request(accept, "no test port");
            }
        };
        let sid = self.new_sid(receiver_ip, wall, rng);
        let mut timeout = r.timeout.to_interval();
        if timeout > self.cfg.max_stop_timeout {
            self.stats.timeout_clamped += 1;
            timeout = self.cfg.max_stop_timeout;
        }
        let keys = match (self.security, &self.keys) {
            (SecurityMode::Authenticated | SecurityMode::Encrypted, Some(k)) => Some(TestKeys::derive(k, &sid)),
            _ => None,
        };
        let params = SessionParams {
            sid,
            mode: self.security,
            keys,
            sender: SocketAddr::new(sender_ip, r.sender_port),
            reflect_len: checked.padding_to_reflect,
            symmetrical: self.mode.contains(Modes::SYMMETRICAL_SIZE),
            timeout,
            refwait: self.cfg.refwait,
            dscp,
        };
        self.sessions.insert(sid, Session { key: PortKey { port, ..key }, state: SessState::Accepted });
        self.events.push_back(ServerEvent::SessionAccepted { local: SocketAddr::new(receiver_ip, port), params });
        self.stats.sessions_accepted += 1;
        tracing::debug!(peer = %self.peer, port, sid = %hex::encode(sid.0), "TWAMP-Control: session accepted");
        self.queue_accept_session(Accept::Ok, port, sid, checked.octets_to_reflect);
    }

    /// Address ‖ NTP timestamp ‖ random (RFC 4656 §3.5); for IPv6 receivers the address octets
    /// are a 32-bit FNV-1a hash of the address. Unique within the connection.
    fn new_sid(&self, receiver: IpAddr, wall: Duration, rng: &mut impl RngCore) -> Sid {
        let addr = match receiver {
            IpAddr::V4(a) => a.octets(),
            IpAddr::V6(a) => {
                let h = a.octets().iter().fold(0x811c_9dc5u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
                h.to_be_bytes()
            }
        };
        let ts = NtpTimestamp::from_unix(wall);
        // bounded: a collision needs the same 32 random bits within one connection's sessions
        let mut sid = Sid::default();
        for _ in 0..16 {
            let mut r = [0u8; 4];
            rng.fill_bytes(&mut r);
            sid = Sid::from_parts(addr, ts, r);
            if !self.sessions.contains_key(&sid) {
                break;
            }
        }
        sid
    }

    fn handle_start(&mut self) {
        let mut started = Vec::new();
        for (sid, s) in self.sessions.iter_mut() {
            if s.state == SessState::Accepted {
                s.state = SessState::Started;
                started.push(*sid);
            }
        }
        self.stats.sessions_started += started.len() as u64;
        if !started.is_empty() {
            self.events.push_back(ServerEvent::SessionsStarted(started));
        }
        self.queue_short(Accept::Ok);
    }

    fn handle_stop(&mut self, msg: &[u8], binder: &mut impl PortBinder) {
        let Ok(r) = StopSessions::new_checked(msg).and_then(|p| StopSessionsRepr::parse(&p)) else {
            return self.close_all(binder, CloseReason::Internal);
        };
        let active = self.sessions.values().filter(|s| s.state == SessState::Started).count() as u32;
        if r.number_of_sessions != active {
            if r.number_of_sessions == 0 {
                // twampy (reference §2.7): 0 means all
                self.stats.stop_zero_sessions += 1;
            } else {
                self.stats.stop_mismatch += 1;
                tracing::debug!(peer = %self.peer, got = r.number_of_sessions, active,
                    "TWAMP-Control: Stop-Sessions does not account for the sessions, closing");
                return self.close_all(binder, CloseReason::StopMismatch { active, got: r.number_of_sessions });
            }
        }
        if !r.accept.is_ok() {
            self.stats.stop_results_invalid += 1;
            tracing::debug!(peer = %self.peer, accept = ?r.accept, "TWAMP-Control: the client ends with an error");
        }
        let mut stopped = Vec::new();
        for (sid, s) in self.sessions.iter_mut() {
            if s.state == SessState::Started {
                s.state = SessState::Stopped;
                stopped.push(*sid);
            }
        }
        self.stats.sessions_stopped += stopped.len() as u64;
        if !stopped.is_empty() {
            self.events.push_back(ServerEvent::SessionsStopped(stopped));
        }
    }

    /// RFC 5938 Start-N-Sessions (7) / Stop-N-Sessions (9).
    fn handle_individual(&mut self, cmd: Command, msg: &[u8]) {
        let start = cmd == Command::StartNSessions;
        let ack = if start { Command::StartNAck } else { Command::StopNAck };
        let Ok(list) = SessionList::new_checked(msg) else {
            return self.queue_short(Accept::NotSupported);
        };
        let sids: Vec<Sid> = list.sids().iter().collect();
        if !self.mode.contains(Modes::INDIVIDUAL_SESSION_CONTROL) {
            self.stats.unexpected_commands += 1;
            return self.queue_list(ack, Accept::NotSupported, &sids);
        }
        self.stats.individual_commands += 1;
        let mut by_accept: BTreeMap<u8, Vec<Sid>> = BTreeMap::new();
        let mut changed = Vec::new();
        for sid in sids {
            let accept = match self.sessions.get_mut(&sid) {
                None => {
                    self.stats.unknown_sids += 1;
                    Accept::Failure
                }
                Some(s) if start => match s.state {
                    SessState::Accepted => {
                        s.state = SessState::Started;
                        changed.push(sid);
                        Accept::Ok
                    }
                    SessState::Started => Accept::Ok,
                    // a stopped session cannot run again
                    SessState::Stopped => Accept::Failure,
                },
                Some(s) => {
                    if s.state != SessState::Stopped {
                        s.state = SessState::Stopped;
                        changed.push(sid);
                    }
                    Accept::Ok
                }
            };
            by_accept.entry(u8::from(accept)).or_default().push(sid);
        }
        if start {
            self.stats.sessions_started += changed.len() as u64;
            if !changed.is_empty() {
                self.events.push_back(ServerEvent::SessionsStarted(changed));
            }
        } else {
            self.stats.sessions_stopped += changed.len() as u64;
            if !changed.is_empty() {
                self.events.push_back(ServerEvent::SessionsStopped(changed));
            }
        }
        for (accept, sids) in by_accept {
            self.queue_list(ack, Accept::from(accept), &sids);
        }
    }

    fn queue_list(&mut self, command: Command, accept: Accept, sids: &[Sid]) {
        let r = SessionListRepr { command, accept, sids: SidList::Sids(sids) };
        let mut m = vec![0u8; r.buffer_len()];
        r.emit(&mut m);
        self.queue(m);
    }
}

#[cfg(test)]
mod tests;
