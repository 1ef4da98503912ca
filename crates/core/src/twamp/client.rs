//! TWAMP-Control client, sans-IO (RFC 5357 §3; RFC 4656 §3.1 for the greeting, the Token and the
//! encrypted control stream; RFC 5618 mixed mode; RFC 6038 reflect octets).
//!
//! The driver connects to the server (TCP 862), then loops: write what [`ControlClient::poll_transmit`]
//! gives, read exactly [`ControlClient::expected_len`] octets (at most until
//! [`ControlClient::poll_timeout`], else [`ControlClient::handle_timeout`]), hand them to
//! [`ControlClient::handle_bytes`], and act on [`ControlClient::poll_event`]:
//!
//! ```text
//! Greeting(64) → Set-Up-Response(164) → Server-Start(48)
//!   → [Request-TW-Session(112) → Accept-Session(48)] per session → Start-Sessions(32) → Start-Ack(32)
//!   → Event::Started … test traffic … stop() → Stop-Sessions(32)
//! ```
//!
//! Checks made before anything is acted on (reference §4.3, "Control client"):
//! - a greeting with Modes 0 means the server refuses ([`Failure::ServerRefused`]);
//! - no security mode in common: a Set-Up-Response with Mode 0, then
//!   [`Failure::NoCommonMode`] naming both sides' modes;
//! - in the authenticated, encrypted and mixed modes the PBKDF2 Count must be a power of 2 in
//!   `MIN_PBKDF2_COUNT..=MAX_PBKDF2_COUNT` (a huge count is a cheap way to burn our CPU);
//! - Server-Start's Accept must be 0;
//! - every server message after Server-Start is decrypted and its HMAC checked before any field
//!   is read; the first HMAC also covers Server-Start octets 32–47 (reference §3.2);
//! - Accept values other than 0–6 read as 1 ([`Accept::normalized`]);
//! - the Accept-Session Port and SID are used as returned (twampd picks its own port,
//!   reference §2.5).
//!
//! Sessions are requested one at a time (each request waits for its Accept-Session). Session keys
//! and the Client-IV come from the caller's random number generator. Stop-Sessions carries the
//! number of sessions actually accepted and started (twampd aborts on anything else,
//! reference §2.7).

use super::KeyFile;
use ipsla_wire::time::NtpTimestamp;
use ipsla_wire::twamp::control::{
    ACCEPT_SESSION_LEN, AcceptSession, AcceptSessionRepr, KeyId, RequestTwSessionRepr, SERVER_GREETING_LEN,
    SERVER_START_ENCRYPTED, SERVER_START_LEN, START_ACK_LEN, START_SESSIONS_LEN, STOP_SESSIONS_LEN, ServerGreeting,
    ServerGreetingRepr, ServerStart, ServerStartRepr, SetUpResponseRepr, StartAck, StartAckRepr, StartSessionsRepr,
    StopSessionsRepr,
};
use ipsla_wire::twamp::crypto::{
    ControlOpener, ControlSealer, MAX_PBKDF2_COUNT, MIN_PBKDF2_COUNT, SessionKeys, TestKeys, derive_key, encrypt_token,
};
use ipsla_wire::twamp::test::{TestLayout, min_padding_for_reflect};
use ipsla_wire::twamp::{Accept, Modes, SecurityMode, Sid, TypeP, choose_mode};
use rand::RngCore;
use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The Timeout of a session request when none is given: how long the reflector keeps reflecting
/// after Stop-Sessions (RFC 5357 §3.5). twping sends 2 s (reference §2.4).
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(2);

/// Most sessions one client requests on one connection (a bound on the state it keeps).
pub const MAX_SESSIONS: usize = 64;

/// Largest Padding Length requested: a sender packet must fit a UDP datagram.
pub const MAX_PADDING: u32 = 65_000;

/// The identity and shared secret of the authenticated, encrypted and mixed modes
/// (RFC 4656 §3.1: KeyID and the passphrase behind `dk`). `Debug` prints the identity only.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key_id: KeyId,
    passphrase: Vec<u8>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({:?})", String::from_utf8_lossy(self.key_id.as_bytes()))
    }
}

impl Secret {
    /// An identity (at most 80 octets, no zero octet, RFC 4656 §3.1) and its passphrase (not
    /// empty, no CR or LF, RFC 5357 §3.1).
    pub fn new(id: &str, passphrase: &[u8]) -> Result<Self, ConfigError> {
        let key_id = KeyId::new(id.as_bytes()).ok_or_else(|| ConfigError::BadKeyId(id.to_string()))?;
        if passphrase.is_empty() || passphrase.iter().any(|&b| b == b'\r' || b == b'\n') {
            return Err(ConfigError::BadPassphrase);
        }
        Ok(Secret { key_id, passphrase: passphrase.to_vec() })
    }

    /// The identity `id` of a twampd-format key file (twping `-k FILE -u ID`).
    pub fn from_key_file(file: &KeyFile, id: &str) -> Result<Self, ConfigError> {
        let pass = file.get(id).ok_or_else(|| ConfigError::UnknownIdentity(id.to_string()))?;
        Secret::new(id, pass)
    }

    /// The identity.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }
}

/// RFC 6038 §4.1 reflect octets of a session request (mode bit 32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReflectOctets {
    /// Octets to be reflected: 2 octets the server copies into Accept-Session.
    pub octets: u16,
    /// Length of padding to reflect: how many octets of our padding the reflector copies back.
    pub padding_len: u16,
}

/// One Request-TW-Session (RFC 5357 §3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRequest {
    /// Where our test packets come from (the Session-Sender's bound UDP address). An unspecified
    /// address asks the server to use the control connection's (RFC 5357 §3.5).
    pub sender: SocketAddr,
    /// Where the reflector should receive: the address (unspecified = the control connection's)
    /// and the port we would like (0 lets the server choose, as twping does; the server may
    /// choose another anyway).
    pub receiver: SocketAddr,
    /// Padding Length; `None` = the size that makes both directions equal: 27 octets in open and
    /// mixed mode, 64 in authenticated and encrypted mode (reference §4.1).
    pub padding: Option<u32>,
    /// Start Time; `None` = the wall time at which the request is written.
    pub start_time: Option<NtpTimestamp>,
    /// Timeout: how long the reflector keeps reflecting after Stop-Sessions.
    pub timeout: Duration,
    /// DSCP the reflector must use (Type-P Descriptor, RFC 5357 §3.5).
    pub dscp: u8,
    /// RFC 6038 reflect octets; asked for only when the server offers mode bit 32.
    pub reflect: Option<ReflectOctets>,
}

impl SessionRequest {
    /// A request from `sender` to the control connection's address, with the defaults: symmetric
    /// padding, start at once, 2 s timeout, DSCP 0.
    pub fn new(sender: SocketAddr) -> Self {
        let any = if sender.is_ipv6() { SocketAddr::from(([0u16; 8], 0)) } else { SocketAddr::from(([0u8; 4], 0)) };
        SessionRequest {
            sender,
            receiver: any,
            padding: None,
            start_time: None,
            timeout: DEFAULT_SESSION_TIMEOUT,
            dscp: 0,
            reflect: None,
        }
    }

    /// The Padding Length sent in `layout`: the configured or symmetric one, grown to what
    /// RFC 6038 §4.2 needs when padding is reflected, at most [`MAX_PADDING`].
    pub fn padding_for(&self, layout: TestLayout, reflect: bool) -> u32 {
        let base = self.padding.unwrap_or(layout.symmetric_padding() as u32);
        let need = match (self.reflect, reflect) {
            (Some(r), true) => min_padding_for_reflect(layout, r.padding_len),
            _ => 0,
        };
        base.max(need).min(MAX_PADDING)
    }
}

/// What the client does.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Security modes we accept (any of the four security bits, RFC 4656 §3.1 / RFC 5618); the
    /// strongest one the server also offers is chosen. Other bits are ignored.
    pub allowed: Modes,
    /// Identity and passphrase, needed when `allowed` has a mode other than unauthenticated.
    pub secret: Option<Secret>,
    /// The sessions, requested in order (1..=[`MAX_SESSIONS`]).
    pub sessions: Vec<SessionRequest>,
    /// How long each expected server message may take to arrive.
    pub io_timeout: Duration,
}

/// Why a [`ClientConfig`] or [`Secret`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `allowed` holds no security mode.
    #[error("no security mode allowed (choose from open, auth, encrypted, mixed)")]
    NoMode,
    /// A protected mode is allowed but no secret was given.
    #[error("the authenticated, encrypted and mixed modes need a key id and a secret")]
    NeedSecret,
    /// No session, or more than [`MAX_SESSIONS`].
    #[error("between 1 and {MAX_SESSIONS} sessions, not {0}")]
    Sessions(usize),
    /// The identity is longer than 80 octets or holds a zero octet.
    #[error("key id \"{0}\" is not usable: at most 80 octets, no NUL (RFC 4656 §3.1)")]
    BadKeyId(String),
    /// The passphrase is empty or holds CR/LF.
    #[error("the passphrase is empty or contains CR or LF (RFC 5357 §3.1)")]
    BadPassphrase,
    /// The key file has no such identity.
    #[error("the key file has no identity \"{0}\"")]
    UnknownIdentity(String),
}

impl ClientConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let sec = self.allowed & Modes::SECURITY;
        if sec.is_empty() {
            return Err(ConfigError::NoMode);
        }
        // Only the open mode works without a secret.
        if sec.0 & !Modes::UNAUTHENTICATED.0 != 0 && self.secret.is_none() {
            return Err(ConfigError::NeedSecret);
        }
        if self.sessions.is_empty() || self.sessions.len() > MAX_SESSIONS {
            return Err(ConfigError::Sessions(self.sessions.len()));
        }
        Ok(())
    }
}

/// Which server message the client was waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Server Greeting.
    Greeting,
    /// Server-Start.
    ServerStart,
    /// Accept-Session.
    AcceptSession,
    /// Start-Ack.
    StartAck,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Greeting => "Server Greeting",
            Stage::ServerStart => "Server-Start",
            Stage::AcceptSession => "Accept-Session",
            Stage::StartAck => "Start-Ack",
        })
    }
}

/// Readable names of the security bits of a Modes value.
pub fn mode_names(m: Modes) -> String {
    let names: Vec<&str> =
        SecurityMode::STRONGEST_FIRST.iter().rev().filter(|s| m.contains(s.bit())).map(|s| security_name(*s)).collect();
    if names.is_empty() { "none".into() } else { names.join(", ") }
}

/// `open`, `auth`, `encrypted` or `mixed`: the words of the probe's `--mode` flag.
pub fn security_name(s: SecurityMode) -> &'static str {
    match s {
        SecurityMode::Unauthenticated => "open",
        SecurityMode::Authenticated => "auth",
        SecurityMode::Encrypted => "encrypted",
        SecurityMode::Mixed => "mixed",
    }
}

/// Why the control connection failed. The driver closes the connection after any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The greeting's Modes is 0: the server does not want to talk to us (RFC 4656 §3.1).
    #[error("the server refuses the connection (its greeting offers no mode)")]
    ServerRefused,
    /// No security mode in common; the client answered with Mode 0.
    #[error("no common security mode: the server offers {}, we allow {}", mode_names(*.offered), mode_names(*.allowed))]
    NoCommonMode {
        /// Modes in the greeting.
        offered: Modes,
        /// Modes we allow.
        allowed: Modes,
    },
    /// The PBKDF2 Count is not a power of 2 in the range we accept.
    #[error("the greeting's PBKDF2 count {0} is not a power of 2 between {MIN_PBKDF2_COUNT} and {MAX_PBKDF2_COUNT}")]
    BadCount(u32),
    /// Server-Start Accept ≠ 0: in a protected mode, most likely an unknown key id or a wrong
    /// passphrase (the Token did not decrypt to the challenge).
    #[error("the server refused the set-up ({}){}", accept_text(*.accept), if *.protected { "; wrong key id or secret?" } else { "" })]
    SetUpRejected {
        /// The Accept value (normalized).
        accept: Accept,
        /// The mode we chose was authenticated, encrypted or mixed.
        protected: bool,
    },
    /// A server message failed its HMAC check (altered, or the stream is out of step).
    #[error("the server's {0} failed its HMAC check")]
    Integrity(Stage),
    /// Every requested session was refused; the first refusal's Accept value.
    #[error("the server refused the session ({})", accept_text(*.0))]
    SessionsRejected(Accept),
    /// Start-Ack Accept ≠ 0.
    #[error("the server refused to start the sessions ({})", accept_text(*.0))]
    StartRejected(Accept),
    /// A message that cannot be right in this state.
    #[error("protocol error in {stage}: {what}")]
    Protocol {
        /// Where.
        stage: Stage,
        /// What.
        what: &'static str,
    },
    /// The expected message did not arrive in time.
    #[error("no {0} from the server within the timeout")]
    Timeout(Stage),
}

/// The words of RFC 4656 §3.3 for an Accept value.
pub fn accept_text(a: Accept) -> String {
    let text = match a.normalized() {
        Accept::Ok => "OK",
        Accept::Failure => "failure, reason unspecified",
        Accept::InternalError => "internal error",
        Accept::NotSupported => "some aspect of the request is not supported",
        Accept::PermanentResourceLimitation => "permanent resource limitation",
        Accept::TemporaryResourceLimitation => "temporary resource limitation",
        Accept::IkeSaNotFound => "IKEv2 SA not found",
        Accept::Unknown(_) => "failure",
    };
    format!("Accept {}: {text}", u8::from(a))
}

/// A session the server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedSession {
    /// Index of the request in [`ClientConfig::sessions`].
    pub index: usize,
    /// The port the reflector receives on: send there, whatever was requested.
    pub port: u16,
    /// The SID the server assigned.
    pub sid: Sid,
    /// The security mode of the connection (and of the test packets).
    pub mode: SecurityMode,
    /// The session's test keys in the authenticated and encrypted modes (RFC 4656 §4.1.2).
    pub test_keys: Option<TestKeys>,
    /// The Padding Length requested.
    pub padding: u32,
    /// RFC 6038: the server's copy of our Octets to be reflected (0 without mode bit 32).
    pub reflected_octets: u16,
    /// RFC 6038: 2 octets to put first in our padding when non-zero.
    pub server_octets: u16,
}

/// What happened on the control connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A session was accepted.
    Accepted(AcceptedSession),
    /// A session was refused (normalized Accept). The other sessions go on.
    Rejected {
        /// Index of the request.
        index: usize,
        /// Why.
        accept: Accept,
    },
    /// Start-Ack with Accept 0: send test packets now.
    Started,
    /// The connection failed; nothing more will happen on it.
    Failed(Failure),
}

/// What the client counted (for logs and the agent's status).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Server messages handled.
    pub messages: u32,
    /// Server messages whose HMAC did not verify.
    pub bad_hmac: u32,
    /// Server messages refused for their content or length.
    pub malformed: u32,
    /// Sessions the server refused.
    pub rejected_sessions: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Greeting,
    ServerStart,
    AcceptSession(usize),
    StartAck,
    Started,
    Stopped,
    Failed,
}

/// The TWAMP-Control client state machine.
pub struct ControlClient {
    cfg: ClientConfig,
    state: State,
    mode: Option<Modes>,
    keys: Option<SessionKeys>,
    sealer: Option<ControlSealer>,
    opener: Option<ControlOpener>,
    outgoing: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    accepted: u32,
    first_rejection: Option<Accept>,
    deadline: Option<Instant>,
    stats: ClientStats,
}

impl fmt::Debug for ControlClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlClient")
            .field("state", &self.state)
            .field("mode", &self.mode)
            .field("accepted", &self.accepted)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl ControlClient {
    /// A client that has just connected at `now` and waits for the greeting.
    pub fn new(now: Instant, cfg: ClientConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let deadline = Some(now + cfg.io_timeout);
        Ok(ControlClient {
            cfg,
            state: State::Greeting,
            mode: None,
            keys: None,
            sealer: None,
            opener: None,
            outgoing: VecDeque::new(),
            events: VecDeque::new(),
            accepted: 0,
            first_rejection: None,
            deadline,
            stats: ClientStats::default(),
        })
    }

    /// Octets the next server message has; 0 when no message is expected (started, stopped or
    /// failed).
    pub fn expected_len(&self) -> usize {
        match self.state {
            State::Greeting => SERVER_GREETING_LEN,
            State::ServerStart => SERVER_START_LEN,
            State::AcceptSession(_) => ACCEPT_SESSION_LEN,
            State::StartAck => START_ACK_LEN,
            State::Started | State::Stopped | State::Failed => 0,
        }
    }

    /// The chosen security mode, once the greeting has been answered.
    pub fn mode(&self) -> Option<SecurityMode> {
        self.mode.and_then(Modes::security_mode)
    }

    /// True after Start-Ack with Accept 0 (until [`ControlClient::stop`]).
    pub fn is_started(&self) -> bool {
        self.state == State::Started
    }

    /// True once nothing more will happen: failed or stopped.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Failed | State::Stopped)
    }

    /// Sessions accepted so far.
    pub fn accepted(&self) -> u32 {
        self.accepted
    }

    /// Counters.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// The next message to write to the connection.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.outgoing.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When the expected server message is overdue.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.expected_len() == 0 { None } else { self.deadline }
    }

    /// The expected message did not arrive by the deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let (Some(d), Some(stage)) = (self.poll_timeout(), self.stage())
            && now >= d
        {
            self.fail(Failure::Timeout(stage));
        }
    }

    fn stage(&self) -> Option<Stage> {
        match self.state {
            State::Greeting => Some(Stage::Greeting),
            State::ServerStart => Some(Stage::ServerStart),
            State::AcceptSession(_) => Some(Stage::AcceptSession),
            State::StartAck => Some(Stage::StartAck),
            _ => None,
        }
    }

    fn fail(&mut self, f: Failure) {
        tracing::debug!(failure = %f, "TWAMP control client gives up");
        self.state = State::Failed;
        self.deadline = None;
        self.events.push_back(Event::Failed(f));
    }

    fn protocol(&mut self, stage: Stage, what: &'static str) {
        self.stats.malformed += 1;
        tracing::debug!(%stage, what, "TWAMP control: malformed server message");
        self.fail(Failure::Protocol { stage, what });
    }

    /// One whole server message of [`ControlClient::expected_len`] octets, received at `now`
    /// (`wall` since the Unix epoch). `rng` supplies the session keys and the Client-IV.
    pub fn handle_bytes(&mut self, now: Instant, wall: Duration, bytes: &[u8], rng: &mut impl RngCore) {
        let Some(stage) = self.stage() else {
            // Nothing is expected: TWAMP servers send nothing after Start-Ack.
            self.stats.malformed += 1;
            tracing::debug!(len = bytes.len(), "TWAMP control: unexpected server bytes ignored");
            return;
        };
        if bytes.len() != self.expected_len() {
            return self.protocol(stage, "wrong message length");
        }
        self.stats.messages += 1;
        self.deadline = Some(now + self.cfg.io_timeout);
        match self.state {
            State::Greeting => self.on_greeting(bytes, rng),
            State::ServerStart => self.on_server_start(bytes, wall),
            State::AcceptSession(i) => self.on_accept_session(i, bytes, wall),
            State::StartAck => self.on_start_ack(bytes),
            State::Started | State::Stopped | State::Failed => {}
        }
    }

    fn on_greeting(&mut self, bytes: &[u8], rng: &mut impl RngCore) {
        let Ok(g) = ServerGreeting::new_checked(bytes).and_then(|p| ServerGreetingRepr::parse(&p)) else {
            return self.protocol(Stage::Greeting, "unreadable greeting");
        };
        if g.modes.is_empty() {
            return self.fail(Failure::ServerRefused);
        }
        let allowed = self.cfg.allowed & Modes::SECURITY;
        let want = if self.cfg.sessions.iter().any(|s| s.reflect.is_some()) {
            allowed | Modes::REFLECT_OCTETS
        } else {
            allowed
        };
        let Some(mode) = choose_mode(g.modes, want) else {
            self.give_up();
            return self.fail(Failure::NoCommonMode { offered: g.modes, allowed });
        };
        let Some(sec) = mode.security_mode() else {
            return self.protocol(Stage::Greeting, "no single security mode chosen");
        };
        let mut setup = SetUpResponseRepr { mode, key_id: KeyId::default(), token: [0; 64], client_iv: [0; 16] };
        if sec.protects_control() {
            if !(MIN_PBKDF2_COUNT..=MAX_PBKDF2_COUNT).contains(&g.count) || !g.count.is_power_of_two() {
                self.stats.malformed += 1;
                self.give_up();
                return self.fail(Failure::BadCount(g.count));
            }
            let Some(secret) = &self.cfg.secret else {
                self.give_up();
                return self.fail(Failure::Protocol { stage: Stage::Greeting, what: "no secret for a protected mode" });
            };
            let Ok(dk) = derive_key(&secret.passphrase, &g.salt, g.count) else {
                self.give_up();
                return self.fail(Failure::BadCount(g.count));
            };
            let mut keys = SessionKeys { aes: [0; 16], hmac: [0; 32] };
            rng.fill_bytes(&mut keys.aes);
            rng.fill_bytes(&mut keys.hmac);
            rng.fill_bytes(&mut setup.client_iv);
            setup.key_id = secret.key_id;
            setup.token = encrypt_token(&dk, &g.challenge, &keys);
            self.sealer = Some(ControlSealer::new(&keys, &setup.client_iv));
            self.keys = Some(keys);
        }
        let mut b = vec![0u8; setup.buffer_len()];
        setup.emit(&mut b);
        self.outgoing.push_back(b);
        self.mode = Some(mode);
        self.state = State::ServerStart;
        tracing::debug!(offered = ?g.modes, chosen = ?mode, "TWAMP control: mode chosen");
    }

    /// The Set-Up-Response with Mode 0: the client gives up (RFC 4656 §3.1).
    fn give_up(&mut self) {
        let setup = SetUpResponseRepr { mode: Modes(0), key_id: KeyId::default(), token: [0; 64], client_iv: [0; 16] };
        let mut b = vec![0u8; setup.buffer_len()];
        setup.emit(&mut b);
        self.outgoing.push_back(b);
    }

    fn protected(&self) -> bool {
        self.mode().is_some_and(SecurityMode::protects_control)
    }

    fn on_server_start(&mut self, bytes: &[u8], wall: Duration) {
        let mut b = [0u8; SERVER_START_LEN];
        b.copy_from_slice(bytes);
        let Ok(p) = ServerStart::new_checked(&b[..]) else {
            return self.protocol(Stage::ServerStart, "unreadable Server-Start");
        };
        let accept = p.accept();
        if !accept.is_ok() {
            let protected = self.protected();
            return self.fail(Failure::SetUpRejected { accept: accept.normalized(), protected });
        }
        if let Some(keys) = &self.keys {
            let Ok(start) = ServerStartRepr::parse(&p) else {
                return self.protocol(Stage::ServerStart, "unreadable Server-Start");
            };
            // Octets 32–47 open the server's CBC stream; their plaintext is the first input of
            // the HMAC checked in the first Accept-Session (reference §3.2).
            let mut opener = ControlOpener::new(keys, &start.server_iv);
            if opener.decrypt_blocks(&mut b[SERVER_START_ENCRYPTED]).is_err() {
                return self.protocol(Stage::ServerStart, "Server-Start is not whole blocks");
            }
            self.opener = Some(opener);
        }
        self.request(0, wall);
    }

    fn request(&mut self, i: usize, wall: Duration) {
        let Some(mode) = self.mode else { return };
        let Some(sec) = mode.security_mode() else { return };
        let Some(s) = self.cfg.sessions.get(i) else { return };
        let reflect = mode.contains(Modes::REFLECT_OCTETS);
        let (octets_to_reflect, padding_to_reflect) = match (s.reflect, reflect) {
            (Some(r), true) => (r.octets, r.padding_len),
            _ => (0, 0),
        };
        let r = RequestTwSessionRepr {
            sender_address: s.sender.ip(),
            receiver_address: s.receiver.ip(),
            conf_sender: 0,
            conf_receiver: 0,
            schedule_slots: 0,
            packets: 0,
            sender_port: s.sender.port(),
            receiver_port: s.receiver.port(),
            sid: Sid::default(),
            padding_length: s.padding_for(sec.test_layout(), reflect),
            start_time: s.start_time.unwrap_or_else(|| NtpTimestamp::from_unix(wall)),
            timeout: NtpTimestamp::from_interval(s.timeout),
            type_p: TypeP::from_dscp(s.dscp),
            octets_to_reflect,
            padding_to_reflect,
        };
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut b);
        if !self.seal(&mut b) {
            return;
        }
        self.outgoing.push_back(b);
        self.state = State::AcceptSession(i);
    }

    /// Seals a whole message in the protected modes (the HMAC field is zero in open mode).
    fn seal(&mut self, msg: &mut [u8]) -> bool {
        match self.sealer.as_mut().map(|s| s.seal(msg)) {
            Some(Err(_)) => {
                self.fail(Failure::Protocol {
                    stage: Stage::AcceptSession,
                    what: "a message to seal is not whole blocks",
                });
                false
            }
            _ => true,
        }
    }

    /// Decrypts a whole server message and checks its HMAC (protected modes).
    fn open(&mut self, stage: Stage, msg: &mut [u8]) -> bool {
        match self.opener.as_mut().map(|o| o.open(msg)) {
            Some(Err(_)) => {
                self.stats.bad_hmac += 1;
                self.fail(Failure::Integrity(stage));
                false
            }
            _ => true,
        }
    }

    fn on_accept_session(&mut self, i: usize, bytes: &[u8], wall: Duration) {
        let mut b = [0u8; ACCEPT_SESSION_LEN];
        b.copy_from_slice(bytes);
        if !self.open(Stage::AcceptSession, &mut b) {
            return;
        }
        let Ok(a) = AcceptSession::new_checked(&b[..]).and_then(|p| AcceptSessionRepr::parse(&p)) else {
            return self.protocol(Stage::AcceptSession, "unreadable Accept-Session");
        };
        let (Some(mode), Some(req)) = (self.mode(), self.cfg.sessions.get(i)) else { return };
        let accept = a.accept.normalized();
        if accept.is_ok() && a.port == 0 {
            return self.protocol(Stage::AcceptSession, "session accepted on port 0");
        }
        if accept.is_ok() {
            let reflect = self.mode.is_some_and(|m| m.contains(Modes::REFLECT_OCTETS));
            let test_keys = match (mode.test_layout(), &self.keys) {
                (TestLayout::Authenticated, Some(keys)) => Some(TestKeys::derive(keys, &a.sid)),
                _ => None,
            };
            self.accepted += 1;
            self.events.push_back(Event::Accepted(AcceptedSession {
                index: i,
                port: a.port,
                sid: a.sid,
                mode,
                test_keys,
                padding: req.padding_for(mode.test_layout(), reflect),
                reflected_octets: if reflect { a.reflected_octets } else { 0 },
                server_octets: if reflect { a.server_octets } else { 0 },
            }));
        } else {
            self.stats.rejected_sessions += 1;
            tracing::debug!(index = i, accept = %accept_text(a.accept), "TWAMP control: session refused");
            self.first_rejection.get_or_insert(accept);
            self.events.push_back(Event::Rejected { index: i, accept });
        }
        if i + 1 < self.cfg.sessions.len() {
            return self.request(i + 1, wall);
        }
        if self.accepted == 0 {
            return self.fail(Failure::SessionsRejected(self.first_rejection.unwrap_or(Accept::Failure)));
        }
        let mut m = vec![0u8; START_SESSIONS_LEN];
        StartSessionsRepr.emit(&mut m);
        if self.seal(&mut m) {
            self.outgoing.push_back(m);
            self.state = State::StartAck;
        }
    }

    fn on_start_ack(&mut self, bytes: &[u8]) {
        let mut b = [0u8; START_ACK_LEN];
        b.copy_from_slice(bytes);
        if !self.open(Stage::StartAck, &mut b) {
            return;
        }
        let Ok(a) = StartAck::new_checked(&b[..]).and_then(|p| StartAckRepr::parse(&p)) else {
            return self.protocol(Stage::StartAck, "unreadable Start-Ack");
        };
        if !a.accept.is_ok() {
            return self.fail(Failure::StartRejected(a.accept.normalized()));
        }
        self.state = State::Started;
        self.deadline = None;
        self.events.push_back(Event::Started);
    }

    /// Queues Stop-Sessions (RFC 5357 §3.8) with `accept` (0 = normal end; non-zero says the
    /// results are invalid) and Number of Sessions = the sessions started. False when the
    /// sessions are not running.
    pub fn stop(&mut self, accept: Accept) -> bool {
        if self.state != State::Started {
            return false;
        }
        let mut m = vec![0u8; STOP_SESSIONS_LEN];
        StopSessionsRepr { accept, number_of_sessions: self.accepted }.emit(&mut m);
        if self.seal(&mut m) {
            self.outgoing.push_back(m);
            self.state = State::Stopped;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipsla_wire::twamp::control::{
        RequestTwSession, SET_UP_RESPONSE_LEN, SetUpResponse, StartSessions, StopSessions, StopSessionsRepr,
    };
    use ipsla_wire::twamp::crypto::open_token;

    /// An RNG that hands out scripted bytes in order (then zeros).
    struct Scripted(VecDeque<u8>);
    impl RngCore for Scripted {
        fn next_u32(&mut self) -> u32 {
            let mut b = [0; 4];
            self.fill_bytes(&mut b);
            u32::from_be_bytes(b)
        }
        fn next_u64(&mut self) -> u64 {
            let mut b = [0; 8];
            self.fill_bytes(&mut b);
            u64::from_be_bytes(b)
        }
        fn fill_bytes(&mut self, dst: &mut [u8]) {
            dst.iter_mut().for_each(|b| *b = self.0.pop_front().unwrap_or(0));
        }
    }

    fn h<const N: usize>(s: &str) -> [u8; N] {
        hex::decode(s.replace(' ', "")).unwrap().try_into().unwrap()
    }

    // Reference §3.4: a real twping → twampd session in mode 2.
    const SALT: &str = "2f95a3562e228bb63925c19af56e7af8";
    const CHALLENGE: &str = "7a8f5da43ac5e213e28aeaab4099f903";
    const TOKEN: &str = "1a984d3b1b8a7ee0e304905f73509cb1b2af3f858d16d64035db9be90b70b236\
                         83d71806bb9043e66c8873e2c88ead2b3c7cca2ffa03daa38f3d83bd23667821";
    const SID: &str = "7f000001eeacd05d47993d537e2859e7";

    /// The reference's client-chosen AES key 00..0f, HMAC key 20..3f and Client-IV 40..4f, in
    /// the order the client draws them.
    fn reference_rng() -> Scripted {
        Scripted((0x00..0x10).chain(0x20..0x40).chain(0x40..0x50).collect())
    }

    fn reference_keys() -> SessionKeys {
        SessionKeys { aes: core::array::from_fn(|i| i as u8), hmac: core::array::from_fn(|i| 0x20 + i as u8) }
    }

    fn wall() -> Duration {
        Duration::from_secs(1_700_000_000)
    }

    fn cfg(allowed: Modes, secret: Option<Secret>) -> ClientConfig {
        let mut s = SessionRequest::new("127.0.0.1:51912".parse().unwrap());
        s.receiver = "127.0.0.1:0".parse().unwrap();
        s.start_time = Some(NtpTimestamp(0xeeac_d05d_612d_8599));
        ClientConfig { allowed, secret, sessions: vec![s], io_timeout: Duration::from_secs(5) }
    }

    fn alice() -> Option<Secret> {
        Some(Secret::new("alice", b"testsecret").unwrap())
    }

    fn greeting(modes: Modes, count: u32) -> [u8; 64] {
        let mut b = [0u8; 64];
        ServerGreetingRepr { modes, challenge: h(CHALLENGE), salt: h(SALT), count }.emit(&mut b);
        b
    }

    /// The server side of one connection, built from the wire API: opens what the client sends
    /// and seals what it answers.
    struct Server {
        keys: Option<SessionKeys>,
        opener: Option<ControlOpener>,
        sealer: Option<ControlSealer>,
        server_iv: [u8; 16],
    }

    impl Server {
        /// Reads the Set-Up-Response (checks the Token when `dk` is given).
        fn setup(setup: &[u8], dk: Option<[u8; 16]>) -> (Server, SetUpResponseRepr) {
            let r = SetUpResponseRepr::parse(&SetUpResponse::new_checked(setup).unwrap()).unwrap();
            let keys = dk.map(|dk| open_token(&dk, &r.token, &h(CHALLENGE)).unwrap());
            let opener = keys.as_ref().map(|k| ControlOpener::new(k, &r.client_iv));
            let server_iv = [0x55; 16];
            let sealer = keys.as_ref().map(|k| ControlSealer::new(k, &server_iv));
            (Server { keys, opener, sealer, server_iv }, r)
        }
        fn server_start(&mut self, accept: Accept) -> [u8; 48] {
            let mut b = [0u8; 48];
            ServerStartRepr { accept, server_iv: self.server_iv, start_time: NtpTimestamp(0xeeac_0000_0000_0001) }
                .emit(&mut b);
            if let Some(s) = &mut self.sealer {
                s.encrypt_blocks(&mut b[SERVER_START_ENCRYPTED]).unwrap();
            }
            b
        }
        fn open(&mut self, msg: &[u8]) -> Vec<u8> {
            let mut m = msg.to_vec();
            if let Some(o) = &mut self.opener {
                o.open(&mut m).unwrap();
            }
            m
        }
        fn seal(&mut self, mut m: Vec<u8>) -> Vec<u8> {
            if let Some(s) = &mut self.sealer {
                s.seal(&mut m).unwrap();
            }
            m
        }
        fn accept_session(&mut self, accept: Accept, port: u16) -> Vec<u8> {
            let mut b = vec![0u8; 48];
            AcceptSessionRepr { accept, port, sid: Sid(h(SID)), reflected_octets: 0, server_octets: 0 }.emit(&mut b);
            self.seal(b)
        }
        fn start_ack(&mut self, accept: Accept) -> Vec<u8> {
            let mut b = vec![0u8; 32];
            StartAckRepr { accept }.emit(&mut b);
            self.seal(b)
        }
    }

    fn events(c: &mut ControlClient) -> Vec<Event> {
        std::iter::from_fn(|| c.poll_event()).collect()
    }

    /// A whole session in `allowed` mode against a server offering `offered`; returns the
    /// client, the Accepted event and the server's view of the request.
    fn full_session(offered: Modes, allowed: Modes) -> (ControlClient, AcceptedSession, RequestTwSessionRepr, Server) {
        let t0 = Instant::now();
        let mut c = ControlClient::new(t0, cfg(allowed, alice())).unwrap();
        let mut rng = reference_rng();
        assert_eq!(c.expected_len(), 64);
        c.handle_bytes(t0, wall(), &greeting(offered, 2048), &mut rng);
        let setup = c.poll_transmit().unwrap();
        assert_eq!(setup.len(), SET_UP_RESPONSE_LEN);
        let protected = c.mode().unwrap().protects_control();
        let dk = protected.then(|| derive_key(b"testsecret", &h(SALT), 2048).unwrap());
        let (mut srv, _) = Server::setup(&setup, dk);
        assert_eq!(c.expected_len(), 48);
        let ss = srv.server_start(Accept::Ok);
        c.handle_bytes(t0, wall(), &ss, &mut rng);
        let req = srv.open(&c.poll_transmit().unwrap());
        let req = RequestTwSessionRepr::parse(&RequestTwSession::new_checked(&req[..]).unwrap()).unwrap();
        c.handle_bytes(t0, wall(), &srv.accept_session(Accept::Ok, 18760), &mut rng);
        let ev = events(&mut c);
        let Some(Event::Accepted(a)) = ev.first().cloned() else { panic!("{ev:?}") };
        let start = srv.open(&c.poll_transmit().unwrap());
        assert!(StartSessions::new_checked(&start[..]).is_ok());
        c.handle_bytes(t0, wall(), &srv.start_ack(Accept::Ok), &mut rng);
        assert_eq!(events(&mut c), vec![Event::Started]);
        assert!(c.is_started());
        assert_eq!(c.expected_len(), 0);
        (c, a, req, srv)
    }

    #[test]
    fn reference_worked_example_token_and_first_hmac() {
        let t0 = Instant::now();
        let mut c = ControlClient::new(t0, cfg(Modes::AUTHENTICATED, alice())).unwrap();
        let mut rng = reference_rng();
        c.handle_bytes(t0, wall(), &greeting(Modes(0x07), 2048), &mut rng);
        assert_eq!(c.mode(), Some(SecurityMode::Authenticated));
        let setup = c.poll_transmit().unwrap();
        let r = SetUpResponseRepr::parse(&SetUpResponse::new_checked(&setup[..]).unwrap()).unwrap();
        assert_eq!(r.mode, Modes::AUTHENTICATED);
        assert_eq!(r.key_id.as_bytes(), b"alice");
        assert_eq!(hex::encode(r.token), TOKEN.replace(' ', ""));
        assert_eq!(r.client_iv, core::array::from_fn(|i| 0x40 + i as u8));

        // Server-Start from a server holding the same keys; the client's request must decrypt
        // to the twping plaintext of the reference with HMAC 8aa9c372…
        let keys = reference_keys();
        let mut srv = Server {
            keys: Some(keys.clone()),
            opener: Some(ControlOpener::new(&keys, &r.client_iv)),
            sealer: Some(ControlSealer::new(&keys, &[0x55; 16])),
            server_iv: [0x55; 16],
        };
        c.handle_bytes(t0, wall(), &srv.server_start(Accept::Ok), &mut rng);
        let wire = c.poll_transmit().unwrap();
        let plain = srv.open(&wire);
        assert_eq!(
            hex::encode(&plain[..96]),
            "050400000000000000000000cac80000".to_string()
                + "7f000001000000000000000000000000"
                + "7f000001000000000000000000000000"
                + "00000000000000000000000000000000"
                + "00000040eeacd05d612d85990000000200000000000000000000000000000000"
        );
        assert_eq!(hex::encode(&plain[96..]), "8aa9c3726c5d8a64d126c8ca2fb36a3f");
        assert_ne!(&wire[..96], &plain[..96], "sent encrypted");

        // The SID of that run gives the reference's test keys.
        c.handle_bytes(t0, wall(), &srv.accept_session(Accept::Ok, 18760), &mut rng);
        let Some(Event::Accepted(a)) = c.poll_event() else { panic!() };
        assert_eq!(a.sid, Sid(h(SID)));
        assert_eq!(a.port, 18760);
        assert_eq!(a.padding, 64);
        let tk = a.test_keys.unwrap();
        assert_eq!(hex::encode(tk.aes), "64cebf0952f0a082875ca8b0c6449092");
        assert_eq!(hex::encode(tk.hmac), "16c9c84511519afa7824d4a4c0b57387e2f99f9aee4f692f0e9bdf33e3c8b166");
        assert!(srv.keys.is_some());
    }

    #[test]
    fn open_mode_session() {
        let (mut c, a, req, mut srv) = full_session(Modes(0x0f), Modes::UNAUTHENTICATED);
        assert_eq!(a.mode, SecurityMode::Unauthenticated);
        assert_eq!((a.port, a.padding, a.test_keys.is_none()), (18760, 27, true));
        assert_eq!(req.sender_port, 51912);
        assert_eq!(req.padding_length, 27);
        assert_eq!(req.timeout.to_interval(), Duration::from_secs(2));
        // Stop-Sessions: Accept 0, Number of Sessions 1, HMAC zero in open mode
        assert!(c.stop(Accept::Ok));
        let stop = srv.open(&c.poll_transmit().unwrap());
        assert_eq!(hex::encode(&stop), "03000000000000010000000000000000".to_string() + &"00".repeat(16));
        assert!(c.is_closed());
        assert!(!c.stop(Accept::Ok), "once");
    }

    #[test]
    fn every_protected_mode() {
        for (allowed, want, keys) in [
            (Modes::AUTHENTICATED, SecurityMode::Authenticated, true),
            (Modes::ENCRYPTED, SecurityMode::Encrypted, true),
            (Modes::MIXED, SecurityMode::Mixed, false),
            (Modes(0x0f), SecurityMode::Encrypted, true),
        ] {
            let (mut c, a, req, mut srv) = full_session(Modes(0x0f), allowed);
            assert_eq!(a.mode, want);
            assert_eq!(a.test_keys.is_some(), keys, "{want:?}");
            let pad = if want == SecurityMode::Mixed { 27 } else { 64 };
            assert_eq!((a.padding, req.padding_length), (pad, pad));
            c.stop(Accept::Ok);
            let stop = srv.open(&c.poll_transmit().unwrap());
            let s = StopSessionsRepr::parse(&StopSessions::new_checked(&stop[..]).unwrap()).unwrap();
            assert_eq!((s.accept, s.number_of_sessions), (Accept::Ok, 1));
        }
    }

    #[test]
    fn modes_zero_and_no_common_mode() {
        let t0 = Instant::now();
        let mut c = ControlClient::new(t0, cfg(Modes::AUTHENTICATED, alice())).unwrap();
        c.handle_bytes(t0, wall(), &greeting(Modes(0), 2048), &mut reference_rng());
        assert_eq!(events(&mut c), vec![Event::Failed(Failure::ServerRefused)]);
        assert!(c.poll_transmit().is_none());
        assert_eq!(c.expected_len(), 0);

        let mut c = ControlClient::new(t0, cfg(Modes::AUTHENTICATED, alice())).unwrap();
        c.handle_bytes(t0, wall(), &greeting(Modes::UNAUTHENTICATED, 2048), &mut reference_rng());
        let ev = events(&mut c);
        assert_eq!(
            ev,
            vec![Event::Failed(Failure::NoCommonMode {
                offered: Modes::UNAUTHENTICATED,
                allowed: Modes::AUTHENTICATED
            })]
        );
        let Event::Failed(f) = &ev[0] else { unreachable!() };
        assert_eq!(f.to_string(), "no common security mode: the server offers open, we allow auth");
        // the client says so with Mode 0
        let setup = c.poll_transmit().unwrap();
        assert_eq!(&setup[..4], &[0, 0, 0, 0]);
        assert_eq!(setup.len(), 164);
    }

    #[test]
    fn bad_counts() {
        let t0 = Instant::now();
        for count in [0, 1000, 512, 3000, 1 << 21, u32::MAX] {
            let mut c = ControlClient::new(t0, cfg(Modes::AUTHENTICATED, alice())).unwrap();
            c.handle_bytes(t0, wall(), &greeting(Modes(0x7), count), &mut reference_rng());
            assert_eq!(events(&mut c), vec![Event::Failed(Failure::BadCount(count))], "{count}");
            assert_eq!(&c.poll_transmit().unwrap()[..4], &[0; 4], "Mode 0");
        }
        // open mode does not care about the count
        let mut c = ControlClient::new(t0, cfg(Modes::UNAUTHENTICATED, None)).unwrap();
        c.handle_bytes(t0, wall(), &greeting(Modes(0x1), 0), &mut reference_rng());
        assert!(events(&mut c).is_empty());
        assert_eq!(c.expected_len(), 48);
    }

    #[test]
    fn server_start_refusal() {
        let t0 = Instant::now();
        let mut c = ControlClient::new(t0, cfg(Modes::AUTHENTICATED, alice())).unwrap();
        let mut rng = reference_rng();
        c.handle_bytes(t0, wall(), &greeting(Modes(0x7), 2048), &mut rng);
        let _ = c.poll_transmit();
        let mut ss = [0u8; 48];
        ServerStartRepr { accept: Accept::Unknown(9), server_iv: [0; 16], start_time: NtpTimestamp(0) }.emit(&mut ss);
        c.handle_bytes(t0, wall(), &ss, &mut rng);
        let ev = events(&mut c);
        assert_eq!(ev, vec![Event::Failed(Failure::SetUpRejected { accept: Accept::Failure, protected: true })]);
        let Event::Failed(f) = &ev[0] else { unreachable!() };
        assert!(f.to_string().contains("wrong key id or secret"), "{f}");
        assert!(c.poll_transmit().is_none());
    }

    #[test]
    fn bad_hmac_is_caught_before_use() {
        let t0 = Instant::now();
        let mut c = ControlClient::new(t0, cfg(Modes::AUTHENTICATED, alice())).unwrap();
        let mut rng = reference_rng();
        c.handle_bytes(t0, wall(), &greeting(Modes(0x7), 2048), &mut rng);
        let dk = derive_key(b"testsecret", &h(SALT), 2048).unwrap();
        let (mut srv, _) = Server::setup(&c.poll_transmit().unwrap(), Some(dk));
        // Server-Start's encrypted tail altered on the way: no HMAC of its own, but the first
        // Accept-Session's HMAC covers it
        let mut ss = srv.server_start(Accept::Ok);
        ss[40] ^= 1;
        c.handle_bytes(t0, wall(), &ss, &mut rng);
        let _ = c.poll_transmit();
        c.handle_bytes(t0, wall(), &srv.accept_session(Accept::Ok, 18760), &mut rng);
        let ev = events(&mut c);
        assert_eq!(ev, vec![Event::Failed(Failure::Integrity(Stage::AcceptSession))], "no Accepted first");
        assert_eq!(c.stats().bad_hmac, 1);
        assert!(c.poll_transmit().is_none(), "no Start-Sessions");
    }

    #[test]
    fn rejected_session_and_start() {
        let t0 = Instant::now();
        let mut c = ControlClient::new(t0, cfg(Modes::UNAUTHENTICATED, None)).unwrap();
        let mut rng = reference_rng();
        c.handle_bytes(t0, wall(), &greeting(Modes(0x1), 0), &mut rng);
        let (mut srv, _) = Server::setup(&c.poll_transmit().unwrap(), None);
        c.handle_bytes(t0, wall(), &srv.server_start(Accept::Ok), &mut rng);
        let _ = c.poll_transmit();
        c.handle_bytes(t0, wall(), &srv.accept_session(Accept::from(42), 0), &mut rng);
        let ev = events(&mut c);
        assert_eq!(
            ev,
            vec![
                Event::Rejected { index: 0, accept: Accept::Failure },
                Event::Failed(Failure::SessionsRejected(Accept::Failure))
            ]
        );
        assert!(c.poll_transmit().is_none());

        let mut c = ControlClient::new(t0, cfg(Modes::UNAUTHENTICATED, None)).unwrap();
        c.handle_bytes(t0, wall(), &greeting(Modes(0x1), 0), &mut rng);
        let _ = c.poll_transmit();
        c.handle_bytes(t0, wall(), &srv.server_start(Accept::Ok), &mut rng);
        let _ = c.poll_transmit();
        c.handle_bytes(t0, wall(), &srv.accept_session(Accept::Ok, 5000), &mut rng);
        let _ = c.poll_transmit();
        c.handle_bytes(t0, wall(), &srv.start_ack(Accept::TemporaryResourceLimitation), &mut rng);
        let ev = events(&mut c);
        assert!(matches!(ev[0], Event::Accepted(_)));
        assert_eq!(ev[1], Event::Failed(Failure::StartRejected(Accept::TemporaryResourceLimitation)));
        assert!(!c.stop(Accept::Ok), "nothing started, nothing to stop");
    }

    #[test]
    fn two_sessions_one_refused_stop_counts_one() {
        let t0 = Instant::now();
        let mut conf = cfg(Modes::UNAUTHENTICATED, None);
        conf.sessions.push(SessionRequest { padding: Some(100), dscp: 46, ..conf.sessions[0].clone() });
        let mut c = ControlClient::new(t0, conf).unwrap();
        let mut rng = reference_rng();
        c.handle_bytes(t0, wall(), &greeting(Modes(0x1), 0), &mut rng);
        let (mut srv, _) = Server::setup(&c.poll_transmit().unwrap(), None);
        c.handle_bytes(t0, wall(), &srv.server_start(Accept::Ok), &mut rng);
        let _ = c.poll_transmit();
        c.handle_bytes(t0, wall(), &srv.accept_session(Accept::NotSupported, 0), &mut rng);
        let req = srv.open(&c.poll_transmit().unwrap());
        let req = RequestTwSessionRepr::parse(&RequestTwSession::new_checked(&req[..]).unwrap()).unwrap();
        assert_eq!((req.padding_length, req.type_p.dscp()), (100, Some(46)));
        c.handle_bytes(t0, wall(), &srv.accept_session(Accept::Ok, 6000), &mut rng);
        let _ = c.poll_transmit();
        c.handle_bytes(t0, wall(), &srv.start_ack(Accept::Ok), &mut rng);
        let ev = events(&mut c);
        assert_eq!(ev.len(), 3, "{ev:?}");
        assert!(matches!(&ev[1], Event::Accepted(a) if a.index == 1 && a.port == 6000));
        c.stop(Accept::Ok);
        let stop = srv.open(&c.poll_transmit().unwrap());
        assert_eq!(StopSessions::new_checked(&stop[..]).unwrap().number_of_sessions(), 1);
    }

    #[test]
    fn timeouts_and_lengths() {
        let t0 = Instant::now();
        let mut c = ControlClient::new(t0, cfg(Modes::UNAUTHENTICATED, None)).unwrap();
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(5)));
        c.handle_timeout(t0 + Duration::from_secs(4));
        assert!(events(&mut c).is_empty());
        c.handle_timeout(t0 + Duration::from_secs(5));
        assert_eq!(events(&mut c), vec![Event::Failed(Failure::Timeout(Stage::Greeting))]);
        assert_eq!(c.poll_timeout(), None);

        let mut c = ControlClient::new(t0, cfg(Modes::UNAUTHENTICATED, None)).unwrap();
        c.handle_bytes(t0, wall(), &[0u8; 63], &mut reference_rng());
        assert!(matches!(events(&mut c)[..], [Event::Failed(Failure::Protocol { stage: Stage::Greeting, .. })]));
    }

    #[test]
    fn config_checks() {
        let t0 = Instant::now();
        assert_eq!(ControlClient::new(t0, cfg(Modes(0), None)).unwrap_err(), ConfigError::NoMode);
        assert_eq!(ControlClient::new(t0, cfg(Modes::AUTHENTICATED, None)).unwrap_err(), ConfigError::NeedSecret);
        assert_eq!(ControlClient::new(t0, cfg(Modes(0x3), None)).unwrap_err(), ConfigError::NeedSecret);
        assert!(ControlClient::new(t0, cfg(Modes::UNAUTHENTICATED | Modes::REFLECT_OCTETS, None)).is_ok());
        let mut none = cfg(Modes::UNAUTHENTICATED, None);
        none.sessions.clear();
        assert_eq!(ControlClient::new(t0, none).unwrap_err(), ConfigError::Sessions(0));
        assert!(matches!(Secret::new(&"x".repeat(81), b"p"), Err(ConfigError::BadKeyId(_))));
        assert_eq!(Secret::new("a", b"p\n").unwrap_err(), ConfigError::BadPassphrase);
        let kf = KeyFile::single("alice", b"testsecret");
        assert_eq!(Secret::from_key_file(&kf, "alice").unwrap(), alice().unwrap());
        assert_eq!(Secret::from_key_file(&kf, "bob").unwrap_err(), ConfigError::UnknownIdentity("bob".into()));
        assert_eq!(format!("{:?}", alice().unwrap()), "Secret(\"alice\")");
    }

    #[test]
    fn reflect_octets_only_when_offered() {
        let t0 = Instant::now();
        let mut conf = cfg(Modes::UNAUTHENTICATED, None);
        conf.sessions[0].reflect = Some(ReflectOctets { octets: 0xabcd, padding_len: 10 });
        for (offered, want_mode, want_pad, want_oct) in
            [(Modes(0x1 | 0x20), Modes(0x21), 37, 0xabcd), (Modes(0x1), Modes(0x1), 27, 0)]
        {
            let mut c = ControlClient::new(t0, conf.clone()).unwrap();
            let mut rng = reference_rng();
            c.handle_bytes(t0, wall(), &greeting(offered, 0), &mut rng);
            let (mut srv, setup) = Server::setup(&c.poll_transmit().unwrap(), None);
            assert_eq!(setup.mode, want_mode);
            c.handle_bytes(t0, wall(), &srv.server_start(Accept::Ok), &mut rng);
            let req = srv.open(&c.poll_transmit().unwrap());
            let req = RequestTwSessionRepr::parse(&RequestTwSession::new_checked(&req[..]).unwrap()).unwrap();
            assert_eq!((req.padding_length, req.octets_to_reflect), (want_pad, want_oct));
        }
    }

    #[test]
    fn arbitrary_server_bytes_never_panic() {
        // a deterministic sweep of garbage in every state, open and authenticated
        let t0 = Instant::now();
        for allowed in [Modes::UNAUTHENTICATED, Modes::AUTHENTICATED] {
            for seed in 0u32..64 {
                let mut c = ControlClient::new(t0, cfg(allowed, alice())).unwrap();
                let mut rng = reference_rng();
                let mut x = seed.wrapping_mul(2_654_435_761) | 1;
                for _ in 0..8 {
                    let n = c.expected_len().max(1);
                    let mut b = vec![0u8; n];
                    for v in &mut b {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        *v = x as u8;
                    }
                    if n == 64 {
                        b[15] = (seed & 0xf) as u8; // some greetings offer a mode
                        b[48..52].copy_from_slice(&1024u32.to_be_bytes());
                    }
                    c.handle_bytes(t0, wall(), &b, &mut rng);
                    while c.poll_transmit().is_some() {}
                }
                let _ = events(&mut c);
            }
        }
    }
}
