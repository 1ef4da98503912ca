//! TWAMP-Control messages (TCP 862), in the order they flow (RFC 5357 §3, reference §2):
//!
//! ```text
//! server: ServerGreeting(64)                     client: SetUpResponse(164)
//! server: ServerStart(48)
//! client: RequestTwSession(112)  → server: AcceptSession(48)      (repeated per session)
//! client: StartSessions(32)      → server: StartAck(32)
//! client: StopSessions(32)
//! RFC 5938 (mode bit 16): StartNSessions / StartNAck / StopNSessions / StopNAck ([`SessionList`])
//! ```
//!
//! Every message after Server-Start is a whole number of 16-octet blocks ending in a 16-octet
//! HMAC. `emit` writes the HMAC field as zeros (what open mode sends); in the other modes
//! [`super::crypto::ControlSealer`] fills it in and encrypts the message, and
//! [`super::crypto::ControlOpener`] decrypts and checks it before a view is taken.
//!
//! Each fixed-size view's `new_checked` requires the exact message length: a reader of the TCP
//! stream knows it from the protocol state, or from the first block with [`message_len`].

use super::{Accept, Command, Modes, Sid, TypeP};
use crate::time::NtpTimestamp;
use crate::{Error, Result, fixed_fields};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Server Greeting length (RFC 4656 §3.1).
pub const SERVER_GREETING_LEN: usize = 64;
/// Set-Up-Response length (RFC 4656 §3.1).
pub const SET_UP_RESPONSE_LEN: usize = 164;
/// Server-Start length (RFC 4656 §3.1).
pub const SERVER_START_LEN: usize = 48;
/// Request-TW-Session length (RFC 5357 §3.5).
pub const REQUEST_TW_SESSION_LEN: usize = 112;
/// Accept-Session length (RFC 4656 §3.5).
pub const ACCEPT_SESSION_LEN: usize = 48;
/// Start-Sessions length (RFC 4656 §3.7).
pub const START_SESSIONS_LEN: usize = 32;
/// Start-Ack length (RFC 4656 §3.7).
pub const START_ACK_LEN: usize = 32;
/// Stop-Sessions length in TWAMP (RFC 5357 §3.8).
pub const STOP_SESSIONS_LEN: usize = 32;
/// Length of the HMAC field that ends every message after Server-Start (RFC 4656 §3.2).
pub const HMAC_LEN: usize = 16;
/// The control stream's block size (AES, RFC 4656 §3.4).
pub const BLOCK_LEN: usize = 16;
/// Largest Number of Sessions accepted in an RFC 5938 message. The RFC sets no limit; this one
/// keeps a reader's buffer bounded (16 + 16 × 1024 + 16 octets).
pub const MAX_SESSIONS_PER_MESSAGE: u32 = 1024;
/// Largest KeyID (RFC 4656 §3.1: 80 octets, UTF-8, zero-padded).
pub const KEY_ID_LEN: usize = 80;
/// Token length (RFC 4656 §3.1).
pub const TOKEN_LEN: usize = 64;
/// Server-Start octets that are the first block of the server's encrypted stream and the first
/// input of its HMAC (RFC 4656 §3.1, reference §2.3).
pub const SERVER_START_ENCRYPTED: core::ops::Range<usize> = 32..48;

fn exact_len(len: usize, want: usize) -> Result<()> {
    match len.cmp(&want) {
        core::cmp::Ordering::Less => Err(Error::Truncated),
        core::cmp::Ordering::Greater => Err(Error::BadLength),
        core::cmp::Ordering::Equal => Ok(()),
    }
}

/// The total length of the message whose first 16-octet block (decrypted) is `first_block`, for
/// the messages that begin with a command number: Start-Sessions, Stop-Sessions,
/// Request-TW-Session and the four RFC 5938 messages. Server replies without a command octet
/// (Accept-Session, Start-Ack) have lengths known from the protocol state. Errors:
/// `UnknownType` for any other command (the server answers Accept=3, RFC 5357 §3.5),
/// `BadLength` for an RFC 5938 Number of Sessions of 0 or above [`MAX_SESSIONS_PER_MESSAGE`].
pub fn message_len(first_block: &[u8; 16]) -> Result<usize> {
    match Command::from(first_block[0]) {
        Command::StartSessions => Ok(START_SESSIONS_LEN),
        Command::StopSessions => Ok(STOP_SESSIONS_LEN),
        Command::RequestTwSession => Ok(REQUEST_TW_SESSION_LEN),
        Command::StartNSessions | Command::StartNAck | Command::StopNSessions | Command::StopNAck => {
            session_list_len(crate::be32(first_block, 12))
        }
        other => Err(Error::UnknownType(u8::from(other).into())),
    }
}

fn session_list_len(n: u32) -> Result<usize> {
    if n == 0 || n > MAX_SESSIONS_PER_MESSAGE {
        return Err(Error::BadLength);
    }
    Ok(BLOCK_LEN + BLOCK_LEN * n as usize + HMAC_LEN)
}

macro_rules! fixed_view {
    ($(#[$m:meta])* $view:ident, $len:expr, command: $cmd:expr) => {
        fixed_view!($(#[$m])* $view, $len, check: |b: &[u8]| match Command::from(b[0]) {
            c if c == $cmd => Ok(()),
            other => Err(Error::UnknownType(u8::from(other).into())),
        });
    };
    ($(#[$m:meta])* $view:ident, $len:expr) => {
        fixed_view!($(#[$m])* $view, $len, check: |_: &[u8]| Ok(()));
    };
    ($(#[$m:meta])* $view:ident, $len:expr, check: $check:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone)]
        pub struct $view<T: AsRef<[u8]>> {
            buffer: T,
        }
        impl<T: AsRef<[u8]>> $view<T> {
            #[doc = concat!("Wraps untrusted bytes: exactly ", stringify!($len), " octets (`Truncated` / `BadLength`).")]
            pub fn new_checked(buffer: T) -> Result<Self> {
                exact_len(buffer.as_ref().len(), $len)?;
                let check: fn(&[u8]) -> Result<()> = $check;
                check(buffer.as_ref())?;
                Ok($view { buffer })
            }
            /// Wraps bytes without checks (for building a message); accessors panic if the
            /// buffer is shorter than the message.
            pub fn new_unchecked(buffer: T) -> Self {
                $view { buffer }
            }
            /// The bytes.
            pub fn as_bytes(&self) -> &[u8] {
                self.buffer.as_ref()
            }
            /// Unwraps the buffer.
            pub fn into_inner(self) -> T {
                self.buffer
            }
        }
    };
}

mod field {
    use core::ops::Range;
    type Field = Range<usize>;

    pub mod greeting {
        use super::Field;
        pub const MODES: Field = 12..16;
        pub const CHALLENGE: Field = 16..32;
        pub const SALT: Field = 32..48;
        pub const COUNT: Field = 48..52;
    }
    pub mod setup {
        use super::Field;
        pub const MODE: Field = 0..4;
        pub const KEY_ID: Field = 4..84;
        pub const TOKEN: Field = 84..148;
        pub const CLIENT_IV: Field = 148..164;
    }
    pub mod start {
        use super::Field;
        pub const ACCEPT: Field = 15..16;
        pub const SERVER_IV: Field = 16..32;
        pub const START_TIME: Field = 32..40;
    }
    pub mod request {
        use super::Field;
        pub const COMMAND: Field = 0..1;
        pub const IPVN: usize = 1;
        pub const CONF_SENDER: Field = 2..3;
        pub const CONF_RECEIVER: Field = 3..4;
        pub const SCHEDULE_SLOTS: Field = 4..8;
        pub const PACKETS: Field = 8..12;
        pub const SENDER_PORT: Field = 12..14;
        pub const RECEIVER_PORT: Field = 14..16;
        pub const SENDER_ADDRESS: Field = 16..32;
        pub const RECEIVER_ADDRESS: Field = 32..48;
        pub const SID: Field = 48..64;
        pub const PADDING_LENGTH: Field = 64..68;
        pub const START_TIME: Field = 68..76;
        pub const TIMEOUT: Field = 76..84;
        pub const TYPE_P: Field = 84..88;
        pub const OCTETS_TO_REFLECT: Field = 88..90;
        pub const PADDING_TO_REFLECT: Field = 90..92;
        pub const HMAC: Field = 96..112;
    }
    pub mod accept {
        use super::Field;
        pub const ACCEPT: Field = 0..1;
        pub const PORT: Field = 2..4;
        pub const SID: Field = 4..20;
        pub const REFLECTED_OCTETS: Field = 20..22;
        pub const SERVER_OCTETS: Field = 22..24;
        pub const HMAC: Field = 32..48;
    }
    /// Start-Sessions, Start-Ack and Stop-Sessions share their shape.
    pub mod short {
        use super::Field;
        pub const FIRST: Field = 0..1;
        pub const STOP_ACCEPT: Field = 1..2;
        pub const NUMBER_OF_SESSIONS: Field = 4..8;
        pub const HMAC: Field = 16..32;
    }
    pub mod list {
        use super::Field;
        pub const COMMAND: Field = 0..1;
        pub const ACCEPT: Field = 1..2;
        pub const NUMBER_OF_SESSIONS: Field = 12..16;
        pub const SIDS: usize = 16;
    }
}

/// KeyID (RFC 4656 §3.1): the identity whose shared secret the client uses, UTF-8, zero-padded
/// to 80 octets. Unused (zero) in unauthenticated mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl Default for KeyId {
    fn default() -> Self {
        KeyId([0; KEY_ID_LEN])
    }
}

impl KeyId {
    /// Pads `id`; `None` if it is longer than 80 octets or contains a zero octet (which the
    /// padding could not tell apart).
    pub fn new(id: &[u8]) -> Option<Self> {
        if id.len() > KEY_ID_LEN || id.contains(&0) {
            return None;
        }
        let mut k = [0u8; KEY_ID_LEN];
        k[..id.len()].copy_from_slice(id);
        Some(KeyId(k))
    }
    /// The identity without its zero padding (up to the first zero octet).
    pub fn as_bytes(&self) -> &[u8] {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(KEY_ID_LEN);
        &self.0[..end]
    }
}

impl crate::FieldValue for KeyId {
    fn read(b: &[u8]) -> Self {
        KeyId(<[u8; KEY_ID_LEN]>::read(b))
    }
    fn write(self, b: &mut [u8]) {
        self.0.write(b)
    }
}

// ---------------------------------------------------------------------------------------------
// Server Greeting

fixed_view! {
    /// Server Greeting, 64 octets, in the clear (RFC 4656 §3.1; RFC 5357 §3.1).
    ServerGreeting, SERVER_GREETING_LEN
}

fixed_fields! { ServerGreeting {
    /// Modes the server offers (RFC 4656 §3.1); 0 = the server refuses.
    modes, set_modes: Modes = field::greeting::MODES;
    /// Random challenge the client returns inside the Token (RFC 4656 §3.1).
    challenge, set_challenge: [u8; 16] = field::greeting::CHALLENGE;
    /// PBKDF2 salt (RFC 4656 §3.1).
    salt, set_salt: [u8; 16] = field::greeting::SALT;
    /// PBKDF2 iteration count: a power of 2, at least 1024 (RFC 4656 §3.1).
    count, set_count: u32 = field::greeting::COUNT;
}}

/// The Server Greeting's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerGreetingRepr {
    /// Offered modes.
    pub modes: Modes,
    /// Challenge.
    pub challenge: [u8; 16],
    /// Salt.
    pub salt: [u8; 16],
    /// Iteration count.
    pub count: u32,
}

impl ServerGreetingRepr {
    /// Reads the fields; Unused and MBZ octets are ignored.
    pub fn parse<T: AsRef<[u8]>>(p: &ServerGreeting<T>) -> Result<Self> {
        Ok(ServerGreetingRepr { modes: p.modes(), challenge: p.challenge(), salt: p.salt(), count: p.count() })
    }
    /// 64.
    pub fn buffer_len(&self) -> usize {
        SERVER_GREETING_LEN
    }
    /// Writes the message into `buf[..64]` (Unused and MBZ zero).
    pub fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..SERVER_GREETING_LEN];
        b.fill(0);
        let mut p = ServerGreeting::new_unchecked(b);
        p.set_modes(self.modes);
        p.set_challenge(self.challenge);
        p.set_salt(self.salt);
        p.set_count(self.count);
    }
    /// RFC 4656 §3.1: Count is a power of 2 and at least 1024. A client should also refuse
    /// counts above its own limit (see [`super::crypto::MAX_PBKDF2_COUNT`]).
    pub fn count_is_valid(&self) -> bool {
        self.count >= 1024 && self.count.is_power_of_two()
    }
}

// ---------------------------------------------------------------------------------------------
// Set-Up-Response

fixed_view! {
    /// Set-Up-Response, 164 octets, in the clear (RFC 4656 §3.1; RFC 5357 §3.1).
    SetUpResponse, SET_UP_RESPONSE_LEN
}

fixed_fields! { SetUpResponse {
    /// Chosen mode: one security bit plus feature bits (RFC 4656 §3.1, RFC 6038 §3.1); 0 = the
    /// client gives up.
    mode, set_mode: Modes = field::setup::MODE;
    /// KeyID (RFC 4656 §3.1).
    key_id, set_key_id: KeyId = field::setup::KEY_ID;
    /// Token: AES-CBC(dk, IV 0) of Challenge ‖ AES key ‖ HMAC key (RFC 4656 §3.1); zero in open mode.
    token, set_token: [u8; TOKEN_LEN] = field::setup::TOKEN;
    /// Client-IV, the IV of the client→server stream (RFC 4656 §3.1); zero in open mode.
    client_iv, set_client_iv: [u8; 16] = field::setup::CLIENT_IV;
}}

/// The Set-Up-Response's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SetUpResponseRepr {
    /// Chosen mode.
    pub mode: Modes,
    /// Identity.
    pub key_id: KeyId,
    /// Encrypted Token.
    pub token: [u8; TOKEN_LEN],
    /// Client-IV.
    pub client_iv: [u8; 16],
}

impl SetUpResponseRepr {
    /// Reads the fields.
    pub fn parse<T: AsRef<[u8]>>(p: &SetUpResponse<T>) -> Result<Self> {
        Ok(SetUpResponseRepr { mode: p.mode(), key_id: p.key_id(), token: p.token(), client_iv: p.client_iv() })
    }
    /// 164.
    pub fn buffer_len(&self) -> usize {
        SET_UP_RESPONSE_LEN
    }
    /// Writes the message into `buf[..164]`.
    pub fn emit(&self, buf: &mut [u8]) {
        let mut p = SetUpResponse::new_unchecked(&mut buf[..SET_UP_RESPONSE_LEN]);
        p.set_mode(self.mode);
        p.set_key_id(self.key_id);
        p.set_token(self.token);
        p.set_client_iv(self.client_iv);
    }
}

// ---------------------------------------------------------------------------------------------
// Server-Start

fixed_view! {
    /// Server-Start, 48 octets (RFC 4656 §3.1; RFC 5357 §3.1). Octets 0–31 are in the clear;
    /// octets 32–47 ([`SERVER_START_ENCRYPTED`]) are encrypted in modes 2/4/8 and carry no HMAC of
    /// their own.
    ServerStart, SERVER_START_LEN
}

fixed_fields! { ServerStart {
    /// Accept (RFC 4656 §3.1); non-zero ⇒ the client should close.
    accept, set_accept: Accept = field::start::ACCEPT;
    /// Server-IV, the IV of the server→client stream (RFC 4656 §3.1).
    server_iv, set_server_iv: [u8; 16] = field::start::SERVER_IV;
    /// Start-Time: when the server process started (RFC 4656 §3.1); zero on rejection.
    start_time, set_start_time: NtpTimestamp = field::start::START_TIME;
}}

/// The Server-Start's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerStartRepr {
    /// Accept.
    pub accept: Accept,
    /// Server-IV.
    pub server_iv: [u8; 16],
    /// Start-Time.
    pub start_time: NtpTimestamp,
}

impl ServerStartRepr {
    /// Reads the fields (decrypt octets 32–47 first in modes 2/4/8).
    pub fn parse<T: AsRef<[u8]>>(p: &ServerStart<T>) -> Result<Self> {
        Ok(ServerStartRepr { accept: p.accept(), server_iv: p.server_iv(), start_time: p.start_time() })
    }
    /// 48.
    pub fn buffer_len(&self) -> usize {
        SERVER_START_LEN
    }
    /// Writes the plaintext message into `buf[..48]` (MBZ zero).
    pub fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..SERVER_START_LEN];
        b.fill(0);
        let mut p = ServerStart::new_unchecked(b);
        p.set_accept(self.accept);
        p.set_server_iv(self.server_iv);
        p.set_start_time(self.start_time);
    }
}

// ---------------------------------------------------------------------------------------------
// Request-TW-Session

fixed_view! {
    /// Request-TW-Session, 112 octets, command 5 (RFC 5357 §3.5; reflect fields RFC 6038 §4.1).
    /// `new_checked` also requires command 5 (else `UnknownType`).
    RequestTwSession, REQUEST_TW_SESSION_LEN, command: Command::RequestTwSession
}

fixed_fields! { RequestTwSession {
    /// Command: 5 (RFC 5357 §3.5).
    command, set_command: Command = field::request::COMMAND;
    /// Conf-Sender: MUST be 0 in TWAMP, else Accept=3 (RFC 5357 §3.5).
    conf_sender, set_conf_sender: u8 = field::request::CONF_SENDER;
    /// Conf-Receiver: MUST be 0 in TWAMP, else Accept=3 (RFC 5357 §3.5).
    conf_receiver, set_conf_receiver: u8 = field::request::CONF_RECEIVER;
    /// Number of Schedule Slots: MUST be 0 in TWAMP (RFC 5357 §3.5).
    schedule_slots, set_schedule_slots: u32 = field::request::SCHEDULE_SLOTS;
    /// Number of Packets: MUST be 0 in TWAMP (RFC 5357 §3.5).
    packets, set_packets: u32 = field::request::PACKETS;
    /// Sender Port: the UDP port the Session-Sender sends from (RFC 5357 §3.5).
    sender_port, set_sender_port: u16 = field::request::SENDER_PORT;
    /// Receiver Port: the reflector port the client would like (RFC 5357 §3.5); servers may
    /// choose another (reference §2.5, twampd).
    receiver_port, set_receiver_port: u16 = field::request::RECEIVER_PORT;
    /// Sender Address, raw 16 octets (RFC 4656 §3.5): IPv4 in the first 4; 0 = the control
    /// connection's address.
    sender_address_octets, set_sender_address_octets: [u8; 16] = field::request::SENDER_ADDRESS;
    /// Receiver Address, raw 16 octets (RFC 4656 §3.5).
    receiver_address_octets, set_receiver_address_octets: [u8; 16] = field::request::RECEIVER_ADDRESS;
    /// SID: MUST be 0 in the request, the server assigns it (RFC 5357 §3.5).
    sid, set_sid: Sid = field::request::SID;
    /// Padding Length: octets of padding after each test packet's fields (RFC 4656 §3.5).
    padding_length, set_padding_length: u32 = field::request::PADDING_LENGTH;
    /// Start Time (RFC 4656 §3.5).
    start_time, set_start_time: NtpTimestamp = field::request::START_TIME;
    /// Timeout: an interval in timestamp format (RFC 5357 §3.5); see [`NtpTimestamp::to_interval`].
    timeout, set_timeout: NtpTimestamp = field::request::TIMEOUT;
    /// Type-P Descriptor (RFC 5357 §3.5).
    type_p, set_type_p: TypeP = field::request::TYPE_P;
    /// Octets to be reflected (RFC 6038 §4.1; MBZ without mode bit 32).
    octets_to_reflect, set_octets_to_reflect: u16 = field::request::OCTETS_TO_REFLECT;
    /// Length of padding to reflect (RFC 6038 §4.1; MBZ without mode bit 32).
    padding_to_reflect, set_padding_to_reflect: u16 = field::request::PADDING_TO_REFLECT;
    /// HMAC over octets 0–95 (RFC 4656 §3.2); zero in open mode.
    hmac, set_hmac: [u8; 16] = field::request::HMAC;
}}

impl<T: AsRef<[u8]>> RequestTwSession<T> {
    /// IP version, the low nibble of octet 1 (RFC 4656 §3.5): 4 or 6.
    pub fn ipvn(&self) -> u8 {
        self.buffer.as_ref()[field::request::IPVN] & 0x0f
    }
    /// The Sender Address in the family IPVN names; `None` for another IPVN.
    pub fn sender_address(&self) -> Option<IpAddr> {
        read_addr(self.ipvn(), self.sender_address_octets())
    }
    /// The Receiver Address in the family IPVN names; `None` for another IPVN.
    pub fn receiver_address(&self) -> Option<IpAddr> {
        read_addr(self.ipvn(), self.receiver_address_octets())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> RequestTwSession<T> {
    /// Sets IPVN (the high nibble is MBZ).
    pub fn set_ipvn(&mut self, v: u8) {
        self.buffer.as_mut()[field::request::IPVN] = v & 0x0f;
    }
}

fn read_addr(ipvn: u8, o: [u8; 16]) -> Option<IpAddr> {
    match ipvn {
        4 => Some(IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3]))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(o))),
        _ => None,
    }
}

fn addr_octets(a: IpAddr, v6: bool) -> [u8; 16] {
    let mut o = [0u8; 16];
    match a {
        IpAddr::V4(a) if v6 => o = a.to_ipv6_mapped().octets(),
        IpAddr::V4(a) => o[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => o = a.octets(),
    }
    o
}

/// The Request-TW-Session's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestTwSessionRepr {
    /// Sender Address; unspecified (0.0.0.0 / ::) = the control connection's address.
    pub sender_address: IpAddr,
    /// Receiver Address; unspecified = the control connection's address.
    pub receiver_address: IpAddr,
    /// Conf-Sender (must be 0).
    pub conf_sender: u8,
    /// Conf-Receiver (must be 0).
    pub conf_receiver: u8,
    /// Number of Schedule Slots (must be 0).
    pub schedule_slots: u32,
    /// Number of Packets (must be 0).
    pub packets: u32,
    /// Sender Port.
    pub sender_port: u16,
    /// Receiver Port.
    pub receiver_port: u16,
    /// SID (0 in a request).
    pub sid: Sid,
    /// Padding Length.
    pub padding_length: u32,
    /// Start Time.
    pub start_time: NtpTimestamp,
    /// Timeout interval.
    pub timeout: NtpTimestamp,
    /// Type-P Descriptor.
    pub type_p: TypeP,
    /// RFC 6038 Octets to be reflected.
    pub octets_to_reflect: u16,
    /// RFC 6038 Length of padding to reflect.
    pub padding_to_reflect: u16,
}

impl RequestTwSessionRepr {
    /// Reads the fields. `Malformed` when IPVN is neither 4 nor 6 (the server answers Accept=3,
    /// reference §4.3); MBZ octets are ignored; the HMAC is the crypto layer's business.
    pub fn parse<T: AsRef<[u8]>>(p: &RequestTwSession<T>) -> Result<Self> {
        Ok(RequestTwSessionRepr {
            sender_address: p.sender_address().ok_or(Error::Malformed)?,
            receiver_address: p.receiver_address().ok_or(Error::Malformed)?,
            conf_sender: p.conf_sender(),
            conf_receiver: p.conf_receiver(),
            schedule_slots: p.schedule_slots(),
            packets: p.packets(),
            sender_port: p.sender_port(),
            receiver_port: p.receiver_port(),
            sid: p.sid(),
            padding_length: p.padding_length(),
            start_time: p.start_time(),
            timeout: p.timeout(),
            type_p: p.type_p(),
            octets_to_reflect: p.octets_to_reflect(),
            padding_to_reflect: p.padding_to_reflect(),
        })
    }
    /// 112.
    pub fn buffer_len(&self) -> usize {
        REQUEST_TW_SESSION_LEN
    }
    /// Writes the plaintext message into `buf[..112]` with a zero HMAC. IPVN is 6 when either
    /// address is IPv6 (an IPv4 address is then written IPv4-mapped), else 4.
    pub fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..REQUEST_TW_SESSION_LEN];
        b.fill(0);
        let v6 = self.sender_address.is_ipv6() || self.receiver_address.is_ipv6();
        let mut p = RequestTwSession::new_unchecked(b);
        p.set_command(Command::RequestTwSession);
        p.set_ipvn(if v6 { 6 } else { 4 });
        p.set_conf_sender(self.conf_sender);
        p.set_conf_receiver(self.conf_receiver);
        p.set_schedule_slots(self.schedule_slots);
        p.set_packets(self.packets);
        p.set_sender_port(self.sender_port);
        p.set_receiver_port(self.receiver_port);
        p.set_sender_address_octets(addr_octets(self.sender_address, v6));
        p.set_receiver_address_octets(addr_octets(self.receiver_address, v6));
        p.set_sid(self.sid);
        p.set_padding_length(self.padding_length);
        p.set_start_time(self.start_time);
        p.set_timeout(self.timeout);
        p.set_type_p(self.type_p);
        p.set_octets_to_reflect(self.octets_to_reflect);
        p.set_padding_to_reflect(self.padding_to_reflect);
    }
    /// The Accept value the RFCs require for this request, before any local policy:
    /// `NotSupported` for a non-zero Conf-Sender/Conf-Receiver (RFC 5357 §3.5), or when
    /// Padding Length cannot hold the octets to reflect after the reflector's truncation
    /// (RFC 6038 §4.2, see [`super::test::min_padding_for_reflect`]); otherwise `Ok`.
    pub fn conformance(&self, layout: super::test::TestLayout) -> Accept {
        if self.conf_sender != 0 || self.conf_receiver != 0 {
            return Accept::NotSupported;
        }
        if self.padding_to_reflect != 0
            && self.padding_length < super::test::min_padding_for_reflect(layout, self.padding_to_reflect)
        {
            return Accept::NotSupported;
        }
        Accept::Ok
    }
}

// ---------------------------------------------------------------------------------------------
// Accept-Session

fixed_view! {
    /// Accept-Session, 48 octets (RFC 4656 §3.5, RFC 5357 §3.5; RFC 6038 §4.1 fields).
    AcceptSession, ACCEPT_SESSION_LEN
}

fixed_fields! { AcceptSession {
    /// Accept (RFC 4656 §3.5).
    accept, set_accept: Accept = field::accept::ACCEPT;
    /// Port the reflector receives on (RFC 5357 §3.5); 0 on rejection (erratum 1587, RFC 8545).
    /// Senders must use it even when it differs from the one requested (reference §2.5).
    port, set_port: u16 = field::accept::PORT;
    /// SID the server assigned (RFC 4656 §3.5).
    sid, set_sid: Sid = field::accept::SID;
    /// Reflected octets: a copy of the request's Octets to be reflected (RFC 6038 §4.1).
    reflected_octets, set_reflected_octets: u16 = field::accept::REFLECTED_OCTETS;
    /// Server octets: 0, or 2 octets the sender puts first in the padding to reflect (RFC 6038 §4.1).
    server_octets, set_server_octets: u16 = field::accept::SERVER_OCTETS;
    /// HMAC (RFC 4656 §3.2); the server's first also covers Server-Start octets 32–47.
    hmac, set_hmac: [u8; 16] = field::accept::HMAC;
}}

/// The Accept-Session's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AcceptSessionRepr {
    /// Accept.
    pub accept: Accept,
    /// Reflector port.
    pub port: u16,
    /// SID.
    pub sid: Sid,
    /// RFC 6038 Reflected octets.
    pub reflected_octets: u16,
    /// RFC 6038 Server octets.
    pub server_octets: u16,
}

impl AcceptSessionRepr {
    /// Reads the fields.
    pub fn parse<T: AsRef<[u8]>>(p: &AcceptSession<T>) -> Result<Self> {
        Ok(AcceptSessionRepr {
            accept: p.accept(),
            port: p.port(),
            sid: p.sid(),
            reflected_octets: p.reflected_octets(),
            server_octets: p.server_octets(),
        })
    }
    /// 48.
    pub fn buffer_len(&self) -> usize {
        ACCEPT_SESSION_LEN
    }
    /// Writes the plaintext message into `buf[..48]` with a zero HMAC.
    pub fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..ACCEPT_SESSION_LEN];
        b.fill(0);
        let mut p = AcceptSession::new_unchecked(b);
        p.set_accept(self.accept);
        p.set_port(self.port);
        p.set_sid(self.sid);
        p.set_reflected_octets(self.reflected_octets);
        p.set_server_octets(self.server_octets);
    }
}

// ---------------------------------------------------------------------------------------------
// Start-Sessions, Start-Ack, Stop-Sessions

fixed_view! {
    /// Start-Sessions, 32 octets, command 2 (RFC 4656 §3.7, RFC 5357 §3.7).
    StartSessions, START_SESSIONS_LEN, command: Command::StartSessions
}

fixed_fields! { StartSessions {
    /// Command: 2 (RFC 4656 §3.7).
    command, set_command: Command = field::short::FIRST;
    /// HMAC over octets 0–15 (RFC 4656 §3.7).
    hmac, set_hmac: [u8; 16] = field::short::HMAC;
}}

/// Start-Sessions has no fields besides its command and HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StartSessionsRepr;

impl StartSessionsRepr {
    /// Nothing to read: the view has checked the command.
    pub fn parse<T: AsRef<[u8]>>(_: &StartSessions<T>) -> Result<Self> {
        Ok(StartSessionsRepr)
    }
    /// 32.
    pub fn buffer_len(&self) -> usize {
        START_SESSIONS_LEN
    }
    /// Writes command 2, zeros and a zero HMAC into `buf[..32]`.
    pub fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..START_SESSIONS_LEN];
        b.fill(0);
        StartSessions::new_unchecked(b).set_command(Command::StartSessions);
    }
}

fixed_view! {
    /// Start-Ack, 32 octets (RFC 4656 §3.7).
    StartAck, START_ACK_LEN
}

fixed_fields! { StartAck {
    /// Accept (RFC 4656 §3.7).
    accept, set_accept: Accept = field::short::FIRST;
    /// HMAC over octets 0–15 (RFC 4656 §3.7).
    hmac, set_hmac: [u8; 16] = field::short::HMAC;
}}

/// The Start-Ack's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StartAckRepr {
    /// Accept.
    pub accept: Accept,
}

impl StartAckRepr {
    /// Reads the fields.
    pub fn parse<T: AsRef<[u8]>>(p: &StartAck<T>) -> Result<Self> {
        Ok(StartAckRepr { accept: p.accept() })
    }
    /// 32.
    pub fn buffer_len(&self) -> usize {
        START_ACK_LEN
    }
    /// Writes the plaintext message into `buf[..32]` with a zero HMAC.
    pub fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..START_ACK_LEN];
        b.fill(0);
        StartAck::new_unchecked(b).set_accept(self.accept);
    }
}

fixed_view! {
    /// Stop-Sessions, 32 octets, command 3, client → server (RFC 5357 §3.8). Stops every session.
    StopSessions, STOP_SESSIONS_LEN, command: Command::StopSessions
}

fixed_fields! { StopSessions {
    /// Command: 3 (RFC 5357 §3.8).
    command, set_command: Command = field::short::FIRST;
    /// Accept: 0 = normal end; non-zero = the results SHOULD be considered invalid (RFC 4656 §3.8).
    accept, set_accept: Accept = field::short::STOP_ACCEPT;
    /// Number of Sessions: the started, unstopped sessions (RFC 5357 §3.8). twampy sends 0
    /// (reference §2.7); this parser accepts it and leaves the policy to the server.
    number_of_sessions, set_number_of_sessions: u32 = field::short::NUMBER_OF_SESSIONS;
    /// HMAC over octets 0–15 (RFC 4656 §3.8).
    hmac, set_hmac: [u8; 16] = field::short::HMAC;
}}

/// The Stop-Sessions' fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StopSessionsRepr {
    /// Accept.
    pub accept: Accept,
    /// Number of Sessions.
    pub number_of_sessions: u32,
}

impl StopSessionsRepr {
    /// Reads the fields.
    pub fn parse<T: AsRef<[u8]>>(p: &StopSessions<T>) -> Result<Self> {
        Ok(StopSessionsRepr { accept: p.accept(), number_of_sessions: p.number_of_sessions() })
    }
    /// 32.
    pub fn buffer_len(&self) -> usize {
        STOP_SESSIONS_LEN
    }
    /// Writes the plaintext message into `buf[..32]` with a zero HMAC.
    pub fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..STOP_SESSIONS_LEN];
        b.fill(0);
        let mut p = StopSessions::new_unchecked(b);
        p.set_command(Command::StopSessions);
        p.set_accept(self.accept);
        p.set_number_of_sessions(self.number_of_sessions);
    }
}

// ---------------------------------------------------------------------------------------------
// RFC 5938 Start-N-Sessions / Start-N-Ack / Stop-N-Sessions / Stop-N-Ack

/// One of the four RFC 5938 messages (commands 7–10):
/// `[command][Accept or MBZ][MBZ 10][Number of Sessions 4] ‖ SID × N ‖ HMAC(16)`
/// (RFC 5938 §3.2–3.5). `new_checked` checks the command, that N is in
/// 1..=[`MAX_SESSIONS_PER_MESSAGE`] and that the buffer is exactly `32 + 16 N` octets.
#[derive(Debug, Clone)]
pub struct SessionList<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> SessionList<T> {
    /// Wraps untrusted bytes.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < BLOCK_LEN {
            return Err(Error::Truncated);
        }
        match Command::from(b[0]) {
            Command::StartNSessions | Command::StartNAck | Command::StopNSessions | Command::StopNAck => {}
            other => return Err(Error::UnknownType(u8::from(other).into())),
        }
        exact_len(b.len(), session_list_len(crate::be32(b, field::list::NUMBER_OF_SESSIONS.start))?)?;
        Ok(SessionList { buffer })
    }
    /// Wraps bytes without checks.
    pub fn new_unchecked(buffer: T) -> Self {
        SessionList { buffer }
    }
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    /// The SIDs (RFC 5938 §3.2).
    pub fn sids(&self) -> SidList<'_> {
        let b = self.buffer.as_ref();
        SidList::Wire(&b[field::list::SIDS..b.len() - HMAC_LEN])
    }
    /// The HMAC, the last 16 octets (RFC 5938 §3.2).
    pub fn hmac(&self) -> [u8; 16] {
        let b = self.buffer.as_ref();
        <[u8; 16] as crate::FieldValue>::read(&b[b.len() - HMAC_LEN..])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> SessionList<T> {
    /// Writes the HMAC field.
    pub fn set_hmac(&mut self, v: [u8; 16]) {
        let b = self.buffer.as_mut();
        let at = b.len() - HMAC_LEN;
        crate::FieldValue::write(v, &mut b[at..]);
    }
}

fixed_fields! { SessionList {
    /// Command 7, 8, 9 or 10 (RFC 5938 §3).
    command, set_command: Command = field::list::COMMAND;
    /// Accept in Start-N-Ack / Stop-N-Ack (RFC 5938 §3.3, §3.5); MBZ in the commands.
    accept, set_accept: Accept = field::list::ACCEPT;
    /// Number of Sessions: at least 1 and the number of SIDs that follow (RFC 5938 §3.2).
    number_of_sessions, set_number_of_sessions: u32 = field::list::NUMBER_OF_SESSIONS;
}}

/// A list of SIDs: borrowed from a message, or from the caller's slice when building one.
/// Two lists are equal when they hold the same SIDs in the same order.
#[derive(Debug, Clone, Copy)]
pub enum SidList<'a> {
    /// 16 octets per SID, as on the wire (length a multiple of 16).
    Wire(&'a [u8]),
    /// SIDs to send.
    Sids(&'a [Sid]),
}

impl<'a> SidList<'a> {
    /// Number of SIDs.
    pub fn len(&self) -> usize {
        match self {
            SidList::Wire(b) => b.len() / 16,
            SidList::Sids(s) => s.len(),
        }
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The SIDs in order.
    pub fn iter(&self) -> impl Iterator<Item = Sid> + 'a {
        let (wire, sids): (&'a [u8], &'a [Sid]) = match *self {
            SidList::Wire(b) => (b, &[]),
            SidList::Sids(s) => (&[], s),
        };
        wire.chunks_exact(16).map(<Sid as crate::FieldValue>::read).chain(sids.iter().copied())
    }
}

impl PartialEq for SidList<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for SidList<'_> {}

/// An RFC 5938 message's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionListRepr<'a> {
    /// Command 7–10.
    pub command: Command,
    /// Accept for the two acks; `Ok` (written as MBZ) for the two commands.
    pub accept: Accept,
    /// The SIDs (1..=[`MAX_SESSIONS_PER_MESSAGE`]).
    pub sids: SidList<'a>,
}

impl<'a> SessionListRepr<'a> {
    /// Reads the fields. The Accept octet of Start-N-Sessions / Stop-N-Sessions is MBZ and read
    /// as `Ok`.
    pub fn parse<T: AsRef<[u8]>>(p: &'a SessionList<T>) -> Result<Self> {
        let command = p.command();
        let accept = if has_accept(command) { p.accept() } else { Accept::Ok };
        Ok(SessionListRepr { command, accept, sids: p.sids() })
    }
    /// `32 + 16 × N`.
    pub fn buffer_len(&self) -> usize {
        BLOCK_LEN + BLOCK_LEN * self.sids.len() + HMAC_LEN
    }
    /// Writes the plaintext message into `buf[..buffer_len()]` with a zero HMAC; Number of
    /// Sessions is the number of SIDs.
    pub fn emit(&self, buf: &mut [u8]) {
        let len = self.buffer_len();
        let b = &mut buf[..len];
        b.fill(0);
        let mut p = SessionList::new_unchecked(&mut *b);
        p.set_command(self.command);
        if has_accept(self.command) {
            p.set_accept(self.accept);
        }
        p.set_number_of_sessions(self.sids.len() as u32);
        for (i, sid) in self.sids.iter().enumerate() {
            let at = field::list::SIDS + 16 * i;
            crate::FieldValue::write(sid, &mut b[at..at + 16]);
        }
    }
}

fn has_accept(c: Command) -> bool {
    matches!(c, Command::StartNAck | Command::StopNAck)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '\n'], "")).unwrap()
    }

    /// Request-TW-Session plaintext from the twampd session of reference §3.4 (twping client).
    pub(crate) fn reference_request() -> Vec<u8> {
        let mut b = hex("05040000 00000000 00000000 cac80000
             7f000001 00000000 00000000 00000000
             7f000001 00000000 00000000 00000000
             00000000 00000000 00000000 00000000
             00000040 eeacd05d 612d8599 00000002 00000000 00000000 00000000 00000000");
        b.extend_from_slice(&[0; 16]);
        b
    }

    #[test]
    fn twping_request_fields() {
        let b = reference_request();
        assert_eq!(b.len(), 112);
        let p = RequestTwSession::new_checked(&b[..]).unwrap();
        let r = RequestTwSessionRepr::parse(&p).unwrap();
        assert_eq!(p.ipvn(), 4);
        assert_eq!(r.sender_port, 0xcac8);
        assert_eq!(r.receiver_port, 0);
        assert_eq!(r.sender_address, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(r.receiver_address, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(r.sid.is_zero());
        assert_eq!(r.padding_length, 64);
        assert_eq!(r.start_time, NtpTimestamp(0xeeac_d05d_612d_8599));
        assert_eq!(r.timeout.to_interval(), core::time::Duration::from_secs(2));
        assert_eq!(r.type_p.dscp(), Some(0));
        assert_eq!(r.conformance(super::super::test::TestLayout::Authenticated), Accept::Ok);
        let mut out = [0xffu8; 112];
        r.emit(&mut out);
        assert_eq!(&out[..], &b[..]);
    }

    #[test]
    fn request_checks() {
        let mut b = reference_request();
        assert_eq!(RequestTwSession::new_checked(&b[..111]).unwrap_err(), Error::Truncated);
        let mut long = b.clone();
        long.push(0);
        assert_eq!(RequestTwSession::new_checked(&long[..]).unwrap_err(), Error::BadLength);
        b[1] = 0xf5; // high nibble MBZ ignored, IPVN 5 rejected by the Repr
        let p = RequestTwSession::new_checked(&b[..]).unwrap();
        assert_eq!(p.ipvn(), 5);
        assert_eq!(RequestTwSessionRepr::parse(&p).unwrap_err(), Error::Malformed);
        b[0] = 1;
        assert_eq!(RequestTwSession::new_checked(&b[..]).unwrap_err(), Error::UnknownType(1));
    }

    #[test]
    fn request_conformance() {
        let b = reference_request();
        let mut r = RequestTwSessionRepr::parse(&RequestTwSession::new_checked(&b[..]).unwrap()).unwrap();
        use super::super::test::TestLayout::{Authenticated, Unauthenticated};
        r.conf_receiver = 1;
        assert_eq!(r.conformance(Unauthenticated), Accept::NotSupported);
        r.conf_receiver = 0;
        // RFC 6038 §4.2: 27 + 10 octets needed in open mode.
        r.padding_to_reflect = 10;
        r.padding_length = 36;
        assert_eq!(r.conformance(Unauthenticated), Accept::NotSupported);
        r.padding_length = 37;
        assert_eq!(r.conformance(Unauthenticated), Accept::Ok);
        assert_eq!(r.conformance(Authenticated), Accept::NotSupported);
    }

    #[test]
    fn ipv6_request_and_mapped_v4() {
        let r = RequestTwSessionRepr {
            sender_address: "2001:db8::1".parse().unwrap(),
            receiver_address: "192.0.2.7".parse().unwrap(),
            conf_sender: 0,
            conf_receiver: 0,
            schedule_slots: 0,
            packets: 0,
            sender_port: 5000,
            receiver_port: 862,
            sid: Sid::default(),
            padding_length: 27,
            start_time: NtpTimestamp(0),
            timeout: NtpTimestamp(0),
            type_p: TypeP::from_dscp(46),
            octets_to_reflect: 0,
            padding_to_reflect: 0,
        };
        let mut b = [0u8; 112];
        r.emit(&mut b);
        assert_eq!(b[1], 6);
        assert_eq!(&b[16..18], &[0x20, 0x01]);
        assert_eq!(&b[32..48], &hex("00000000000000000000ffffc0000207")[..]);
        assert_eq!(&b[84..88], &[0x2e, 0, 0, 0]);
        let back = RequestTwSessionRepr::parse(&RequestTwSession::new_checked(&b[..]).unwrap()).unwrap();
        assert_eq!(back.receiver_address, "::ffff:192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn greeting_byte_layout() {
        // twampd AEMO greeting shape (reference §2.1): modes 0x0f, count 2048.
        let r = ServerGreetingRepr { modes: Modes(0x0f), challenge: [0x7a; 16], salt: [0x2f; 16], count: 2048 };
        let mut b = [0xeeu8; 64];
        r.emit(&mut b);
        assert_eq!(&b[..12], &[0; 12]);
        assert_eq!(&b[12..16], &[0, 0, 0, 0x0f]);
        assert_eq!(&b[16..32], &[0x7a; 16]);
        assert_eq!(&b[32..48], &[0x2f; 16]);
        assert_eq!(&b[48..52], &[0, 0, 0x08, 0]);
        assert_eq!(&b[52..], &[0; 12]);
        assert!(r.count_is_valid());
        assert!(!ServerGreetingRepr { count: 1000, ..r }.count_is_valid());
        assert!(!ServerGreetingRepr { count: 512, ..r }.count_is_valid());
        let mut unused = b;
        unused[3] = 9; // Unused and MBZ are never a reason to reject
        unused[60] = 9;
        assert_eq!(ServerGreetingRepr::parse(&ServerGreeting::new_checked(&unused[..]).unwrap()).unwrap(), r);
    }

    #[test]
    fn setup_key_id() {
        let k = KeyId::new(b"alice").unwrap();
        assert_eq!(k.as_bytes(), b"alice");
        assert_eq!(&k.0[5..], &[0u8; 75][..]);
        assert!(KeyId::new(&[b'a'; 81]).is_none());
        assert!(KeyId::new(b"a\0b").is_none());
        assert_eq!(KeyId::new(&[b'z'; 80]).unwrap().as_bytes().len(), 80);
        let r = SetUpResponseRepr { mode: Modes::AUTHENTICATED, key_id: k, token: [1; 64], client_iv: [2; 16] };
        let mut b = [0u8; 164];
        r.emit(&mut b);
        assert_eq!(&b[..4], &[0, 0, 0, 2]);
        assert_eq!(&b[4..9], b"alice");
        assert_eq!(&b[84..148], &[1; 64]);
        assert_eq!(&b[148..], &[2; 16]);
    }

    #[test]
    fn server_start_and_accept_layout() {
        let r =
            ServerStartRepr { accept: Accept::Ok, server_iv: [9; 16], start_time: NtpTimestamp(0x0102_0304_0506_0708) };
        let mut b = [0xffu8; 48];
        r.emit(&mut b);
        assert_eq!(&b[..16], &[0; 16]);
        assert_eq!(&b[16..32], &[9; 16]);
        assert_eq!(&b[32..40], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&b[40..], &[0; 8]);
        b[15] = 7;
        assert_eq!(ServerStart::new_checked(&b[..]).unwrap().accept(), Accept::Unknown(7));

        // twampd's SID on loopback (reference §2.5), port 18760 from its testports range.
        let sid = Sid(hex("7f000001eeacce394b3dd11b10fbc297").try_into().unwrap());
        let a =
            AcceptSessionRepr { accept: Accept::Ok, port: 18760, sid, reflected_octets: 0xabcd, server_octets: 0x1234 };
        let mut b = [0xffu8; 48];
        a.emit(&mut b);
        assert_eq!(
            hex::encode(b),
            "00004948".to_owned() + "7f000001eeacce394b3dd11b10fbc297" + "abcd1234" + &"00".repeat(24)
        );
    }

    #[test]
    fn short_messages() {
        let mut b = [0xffu8; 32];
        StartSessionsRepr.emit(&mut b);
        assert_eq!(b[0], 2);
        assert_eq!(&b[1..], &[0; 31]);
        assert!(StartSessions::new_checked(&b[..]).is_ok());
        assert_eq!(StopSessions::new_checked(&b[..]).unwrap_err(), Error::UnknownType(2));

        StopSessionsRepr { accept: Accept::Ok, number_of_sessions: 1 }.emit(&mut b);
        assert_eq!(hex::encode(&b[..8]), "0300000000000001");
        // twampy's Number of Sessions = 0 parses (reference §2.7).
        b[7] = 0;
        let s = StopSessionsRepr::parse(&StopSessions::new_checked(&b[..]).unwrap()).unwrap();
        assert_eq!(s.number_of_sessions, 0);

        StartAckRepr { accept: Accept::TemporaryResourceLimitation }.emit(&mut b);
        assert_eq!(b[0], 5);
        assert_eq!(StartAck::new_checked(&b[..31]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn session_list_layout_and_len() {
        let sids = [Sid([1; 16]), Sid([2; 16])];
        let r =
            SessionListRepr { command: Command::StartNAck, accept: Accept::NotSupported, sids: SidList::Sids(&sids) };
        assert_eq!(r.buffer_len(), 64);
        let mut b = vec![0xffu8; 64];
        r.emit(&mut b);
        assert_eq!(hex::encode(&b[..16]), "08030000000000000000000000000002");
        assert_eq!(&b[16..32], &[1; 16]);
        assert_eq!(&b[32..48], &[2; 16]);
        assert_eq!(&b[48..], &[0; 16]);
        assert_eq!(message_len(b[..16].try_into().unwrap()), Ok(64));
        let p = SessionList::new_checked(&b[..]).unwrap();
        assert_eq!(SessionListRepr::parse(&p).unwrap(), r);
        // N disagreeing with the length, N = 0, N huge, wrong command
        assert_eq!(SessionList::new_checked(&b[..48]).unwrap_err(), Error::Truncated);
        let mut c = b.clone();
        c[15] = 0;
        assert_eq!(SessionList::new_checked(&c[..]).unwrap_err(), Error::BadLength);
        c[12] = 0xff;
        assert_eq!(message_len(c[..16].try_into().unwrap()), Err(Error::BadLength));
        c[0] = 5;
        assert_eq!(SessionList::new_checked(&c[..]).unwrap_err(), Error::UnknownType(5));
        // Start-N-Sessions: the Accept octet is MBZ
        b[0] = 7;
        let p = SessionList::new_checked(&b[..]).unwrap();
        assert_eq!(SessionListRepr::parse(&p).unwrap().accept, Accept::Ok);
    }

    #[test]
    fn message_len_by_command() {
        let mut blk = [0u8; 16];
        for (cmd, len) in [
            (2u8, Ok(32)),
            (3, Ok(32)),
            (5, Ok(112)),
            (1, Err(Error::UnknownType(1))),
            (6, Err(Error::UnknownType(6))),
            (11, Err(Error::UnknownType(11))),
        ] {
            blk[0] = cmd;
            assert_eq!(message_len(&blk), len, "command {cmd}");
        }
    }

    fn arb_sid() -> impl Strategy<Value = Sid> {
        any::<[u8; 16]>().prop_map(Sid)
    }

    fn arb_addr_pair() -> impl Strategy<Value = (IpAddr, IpAddr)> {
        prop_oneof![
            any::<(u32, u32)>().prop_map(|(a, b)| (IpAddr::V4(a.into()), IpAddr::V4(b.into()))),
            any::<(u128, u128)>().prop_map(|(a, b)| (IpAddr::V6(a.into()), IpAddr::V6(b.into()))),
        ]
    }

    fn arb_request() -> impl Strategy<Value = RequestTwSessionRepr> {
        (arb_addr_pair(), any::<(u8, u8, u32, u32, u16, u16)>(), arb_sid(), any::<(u32, u64, u64, u32, u16, u16)>())
            .prop_map(|((s, r), (cs, cr, slots, packets, sp, rp), sid, (pad, st, to, tp, oct, ptr))| {
                RequestTwSessionRepr {
                    sender_address: s,
                    receiver_address: r,
                    conf_sender: cs,
                    conf_receiver: cr,
                    schedule_slots: slots,
                    packets,
                    sender_port: sp,
                    receiver_port: rp,
                    sid,
                    padding_length: pad,
                    start_time: NtpTimestamp(st),
                    timeout: NtpTimestamp(to),
                    type_p: TypeP(tp),
                    octets_to_reflect: oct,
                    padding_to_reflect: ptr,
                }
            })
    }

    proptest! {
        #[test]
        fn greeting_roundtrip(m in any::<u32>(), c in any::<[u8; 16]>(), s in any::<[u8; 16]>(), n in any::<u32>()) {
            let r = ServerGreetingRepr { modes: Modes(m), challenge: c, salt: s, count: n };
            let mut b = vec![0u8; r.buffer_len()];
            r.emit(&mut b);
            prop_assert_eq!(ServerGreetingRepr::parse(&ServerGreeting::new_checked(&b[..]).unwrap()).unwrap(), r);
        }

        #[test]
        fn setup_roundtrip(m in any::<u32>(), k in proptest::collection::vec(1u8.., 0..=80), t in any::<[u8; 32]>(), iv in any::<[u8; 16]>()) {
            let mut token = [0u8; 64];
            token[..32].copy_from_slice(&t);
            token[32..].copy_from_slice(&t);
            let r = SetUpResponseRepr { mode: Modes(m), key_id: KeyId::new(&k).unwrap(), token, client_iv: iv };
            let mut b = vec![0u8; r.buffer_len()];
            r.emit(&mut b);
            let back = SetUpResponseRepr::parse(&SetUpResponse::new_checked(&b[..]).unwrap()).unwrap();
            prop_assert_eq!(back.key_id.as_bytes(), &k[..]);
            prop_assert_eq!(back, r);
        }

        #[test]
        fn server_start_roundtrip(a in any::<u8>(), iv in any::<[u8; 16]>(), t in any::<u64>()) {
            let r = ServerStartRepr { accept: Accept::from(a), server_iv: iv, start_time: NtpTimestamp(t) };
            let mut b = vec![0u8; r.buffer_len()];
            r.emit(&mut b);
            prop_assert_eq!(ServerStartRepr::parse(&ServerStart::new_checked(&b[..]).unwrap()).unwrap(), r);
        }

        #[test]
        fn request_roundtrip(r in arb_request()) {
            let mut b = vec![0u8; r.buffer_len()];
            r.emit(&mut b);
            prop_assert_eq!(RequestTwSessionRepr::parse(&RequestTwSession::new_checked(&b[..]).unwrap()).unwrap(), r);
        }

        #[test]
        fn accept_session_roundtrip(a in any::<u8>(), port in any::<u16>(), sid in arb_sid(), ro in any::<u16>(), so in any::<u16>()) {
            let r = AcceptSessionRepr { accept: Accept::from(a), port, sid, reflected_octets: ro, server_octets: so };
            let mut b = vec![0u8; r.buffer_len()];
            r.emit(&mut b);
            prop_assert_eq!(AcceptSessionRepr::parse(&AcceptSession::new_checked(&b[..]).unwrap()).unwrap(), r);
        }

        #[test]
        fn short_roundtrips(a in any::<u8>(), n in any::<u32>()) {
            let mut b = [0u8; 32];
            StartSessionsRepr.emit(&mut b);
            prop_assert_eq!(StartSessionsRepr::parse(&StartSessions::new_checked(&b[..]).unwrap()).unwrap(), StartSessionsRepr);
            let r = StartAckRepr { accept: Accept::from(a) };
            r.emit(&mut b);
            prop_assert_eq!(StartAckRepr::parse(&StartAck::new_checked(&b[..]).unwrap()).unwrap(), r);
            let r = StopSessionsRepr { accept: Accept::from(a), number_of_sessions: n };
            r.emit(&mut b);
            prop_assert_eq!(StopSessionsRepr::parse(&StopSessions::new_checked(&b[..]).unwrap()).unwrap(), r);
        }

        #[test]
        fn session_list_roundtrip(cmd in 7u8..=10, a in any::<u8>(), sids in proptest::collection::vec(arb_sid(), 1..40)) {
            let command = Command::from(cmd);
            let accept = if has_accept(command) { Accept::from(a) } else { Accept::Ok };
            let r = SessionListRepr { command, accept, sids: SidList::Sids(&sids) };
            let mut b = vec![0u8; r.buffer_len()];
            r.emit(&mut b);
            prop_assert_eq!(message_len(b[..16].try_into().unwrap()), Ok(b.len()));
            let p = SessionList::new_checked(&b[..]).unwrap();
            prop_assert_eq!(SessionListRepr::parse(&p).unwrap(), r);
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let d = &data[..];
            let _ = ServerGreeting::new_checked(d).map(|p| ServerGreetingRepr::parse(&p));
            let _ = SetUpResponse::new_checked(d).map(|p| SetUpResponseRepr::parse(&p));
            let _ = ServerStart::new_checked(d).map(|p| ServerStartRepr::parse(&p));
            let _ = RequestTwSession::new_checked(d).map(|p| RequestTwSessionRepr::parse(&p));
            let _ = AcceptSession::new_checked(d).map(|p| AcceptSessionRepr::parse(&p));
            let _ = StartSessions::new_checked(d).map(|p| StartSessionsRepr::parse(&p));
            let _ = StartAck::new_checked(d).map(|p| StartAckRepr::parse(&p));
            let _ = StopSessions::new_checked(d).map(|p| StopSessionsRepr::parse(&p));
            if let Ok(p) = SessionList::new_checked(d) {
                let r = SessionListRepr::parse(&p).unwrap();
                prop_assert_eq!(r.sids.len() as u32, p.number_of_sessions());
            }
            if d.len() >= 16 {
                let _ = message_len(d[..16].try_into().unwrap());
            }
        }
    }
}
