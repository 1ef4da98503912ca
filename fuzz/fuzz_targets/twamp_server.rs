//! The TWAMP-Control server machine on arbitrary input, as the octets of a control connection.
//!
//! The first octet chooses how: bit 0 clear, the rest is the raw stream from the Set-Up-Response
//! on (open mode is reachable, the crypto modes stop at the Token); bit 0 set, the harness sends
//! a valid Set-Up-Response for the mode in bits 1–2 (open, authenticated, encrypted, mixed) with
//! the feature bits in bits 3–5, then treats the rest as plaintext messages that it seals as a
//! client would (bit 6 set: fed raw, so the HMAC checks fail). Invariants: no panic; reads are
//! exactly `expected_len`; every server message after Server-Start opens with the client's key
//! and its HMAC verifies; the binder holds one port per session; once closed, only stopped
//! sessions remain, and reporting their end releases every port.
#![no_main]
#![forbid(unsafe_code)]

use ipsla_core::io::{BindError, FakeBinder, PortBinder, PortKey};
use ipsla_core::twamp::KeyFile;
use ipsla_core::twamp::server::{ControlServer, ServerConfig, ServerEvent};
use ipsla_wire::twamp::control::{self, KeyId, ServerGreeting, SetUpResponseRepr};
use ipsla_wire::twamp::crypto::{ControlOpener, ControlSealer, SessionKeys, derive_key, encrypt_token};
use ipsla_wire::twamp::{Modes, Sid};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::ops::RangeInclusive;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The fake binder, plus a kernel's rule that a bound port is in use.
#[derive(Default)]
struct Binder(FakeBinder);

impl PortBinder for Binder {
    fn open(&mut self, key: PortKey, range: &RangeInclusive<u16>) -> Result<u16, BindError> {
        if key.port != 0 && self.0.open.iter().any(|k| k.port == key.port) {
            return Err(BindError::InUse);
        }
        self.0.open(key, range)
    }
    fn close(&mut self, key: PortKey) {
        self.0.close(key)
    }
}

fn config() -> Arc<ServerConfig> {
    static CFG: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    CFG.get_or_init(|| {
        Arc::new(ServerConfig {
            modes: Modes(0xf),
            keys: KeyFile::single("alice", b"fuzz-secret"),
            pbkdf2_count: 1024,
            max_sessions: 4,
            test_ports: 20000..=20007,
            ..ServerConfig::default()
        })
    })
    .clone()
}

struct Conn {
    server: ControlServer,
    binder: Binder,
    rng: StdRng,
    opener: Option<ControlOpener>,
    now: Instant,
    sids: Vec<Sid>,
}

impl Conn {
    fn feed(&mut self, bytes: &[u8]) -> bool {
        let Some(n) = self.server.expected_len() else { return false };
        assert_eq!(n, bytes.len());
        let _ =
            self.server.handle_bytes(self.now, Duration::new(1_700_000_000, 0), bytes, &mut self.binder, &mut self.rng);
        self.drain();
        true
    }

    /// Reads what the server wrote and checks the invariants.
    fn drain(&mut self) {
        while let Some(ev) = self.server.poll_event() {
            if let ServerEvent::SessionAccepted { params, .. } = ev {
                self.sids.push(params.sid);
            }
        }
        while let Some(mut m) = self.server.poll_transmit() {
            assert!(m.len() % 16 == 0, "whole blocks");
            if let Some(o) = &mut self.opener {
                o.open(&mut m).expect("every server message opens with the session keys");
            }
        }
        assert_eq!(self.binder.0.open.len(), self.server.session_count(), "one port per session");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else { return };
    let mut rng = StdRng::seed_from_u64(u64::from(flags));
    let now = Instant::now();
    let server = ControlServer::new(
        config(),
        now,
        "127.0.0.1:40000".parse().unwrap(),
        "127.0.0.1:862".parse().unwrap(),
        &mut rng,
    );
    let mut c = Conn { server, binder: Binder::default(), rng, opener: None, now, sids: Vec::new() };
    let greeting = c.server.poll_transmit().expect("greeting");
    let greeting = ServerGreeting::new_checked(&greeting[..]).expect("64 octets");
    let mut sealer = None;
    if flags & 1 == 1 {
        let security = [Modes::UNAUTHENTICATED, Modes::AUTHENTICATED, Modes::ENCRYPTED, Modes::MIXED]
            [usize::from((flags >> 1) & 3)];
        let mode = security | Modes(u32::from((flags >> 3) & 7) << 4);
        let keys = SessionKeys { aes: [0x5a; 16], hmac: [0xa5; 32] };
        let client_iv = [0x3c; 16];
        let protected = security != Modes::UNAUTHENTICATED;
        let token = if protected {
            let dk = derive_key(b"fuzz-secret", &greeting.salt(), greeting.count()).unwrap();
            encrypt_token(&dk, &greeting.challenge(), &keys)
        } else {
            [0; 64]
        };
        let mut setup = [0u8; 164];
        SetUpResponseRepr { mode, key_id: KeyId::new(b"alice").unwrap(), token, client_iv }.emit(&mut setup);
        let _ = c.server.handle_bytes(now, Duration::ZERO, &setup, &mut c.binder, &mut c.rng);
        let mut start = c.server.poll_transmit().expect("Server-Start");
        assert_eq!(start.len(), 48);
        assert_eq!(start[15], 0, "a valid set-up is accepted");
        if protected {
            let mut o = ControlOpener::new(&keys, start[16..32].try_into().unwrap());
            o.decrypt_blocks(&mut start[32..48]).unwrap();
            c.opener = Some(o);
            if flags & 0x40 == 0 {
                sealer = Some(ControlSealer::new(&keys, &client_iv));
            }
        }
    }
    // bounded: every round consumes at least one octet or stops
    while !rest.is_empty() {
        let Some(n) = c.server.expected_len() else { break };
        if let (Some(s), 16) = (&mut sealer, n) {
            // a whole message, sealed as the client would
            if rest.len() < 16 {
                break;
            }
            let first: [u8; 16] = rest[..16].try_into().unwrap();
            let total = control::message_len(&first).unwrap_or(32).max(32);
            if rest.len() < total {
                break;
            }
            let mut msg = rest[..total].to_vec();
            rest = &rest[total..];
            s.seal(&mut msg).unwrap();
            if !c.feed(&msg[..16]) {
                break;
            }
            if c.server.expected_len() == Some(total - 16) && !c.feed(&msg[16..]) {
                break;
            }
            continue;
        }
        if rest.len() < n {
            break;
        }
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        if !c.feed(piece) {
            break;
        }
    }
    // far in the future every timer has fired: the connection is closed and its ports released
    let later = now + Duration::from_secs(100_000);
    c.server.handle_timeout(later, &mut c.binder);
    if c.server.poll_timeout().is_none() && !c.server.is_closed() {
        // a started session suspends SERVWAIT; the client going away ends it
        c.server.handle_eof(&mut c.binder);
    }
    c.drain();
    assert!(c.server.is_closed());
    // only stopped sessions finishing their Timeout are left; their end releases the ports
    for sid in c.sids.clone() {
        c.server.session_ended(later, sid, &mut c.binder);
    }
    assert_eq!(c.server.session_count(), 0);
    assert!(c.binder.0.open.is_empty(), "every port released");
});
