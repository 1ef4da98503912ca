//! The TWAMP client side on hostile input: the TWAMP-Control client fed arbitrary server bytes
//! (open and protected modes, raw or as bit flips of a correct server's messages, so the fuzzer
//! reaches every state), and the TWAMP-Test Session-Sender fed arbitrary replies (open and
//! authenticated layouts, with replies patched to match a sent packet and sealed with the
//! session keys so that they reach the statistics). Nothing may panic; the client must end
//! started, failed or waiting, and a sender's counts must add up.
#![no_main]
#![forbid(unsafe_code)]

use ipsla_core::ops::stamp::{SenderFormat, StampConfig, StampOp, TwampFormat};
use ipsla_core::io::RxTime;
use ipsla_core::ops::{Operation, Peer};
use ipsla_core::twamp::client::{ClientConfig, ControlClient, Event, Secret, SessionRequest};
use ipsla_wire::time::{ErrorEstimate, NtpTimestamp};
use ipsla_wire::twamp::control::{
    AcceptSessionRepr, SERVER_START_ENCRYPTED, ServerGreetingRepr, ServerStartRepr, SetUpResponse,
    SetUpResponseRepr, StartAckRepr,
};
use ipsla_wire::twamp::crypto::{ControlSealer, SessionKeys, TestCrypto, TestKeys, derive_key, open_token};
use ipsla_wire::twamp::test::TestLayout;
use ipsla_wire::twamp::{Accept, Modes, SecurityMode, Sid};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

const PASS: &[u8] = b"fuzz";
const SALT: [u8; 16] = [3; 16];
const CHALLENGE: [u8; 16] = [4; 16];

/// Deterministic "random" bytes: the fuzzer's input must decide everything.
struct Counter(u8);
impl rand::RngCore for Counter {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for b in dst {
            self.0 = self.0.wrapping_add(37);
            *b = self.0;
        }
    }
}

const MODES: [SecurityMode; 4] =
    [SecurityMode::Unauthenticated, SecurityMode::Authenticated, SecurityMode::Encrypted, SecurityMode::Mixed];

fn client(mode: SecurityMode) -> ControlClient {
    let cfg = ClientConfig {
        allowed: mode.bit(),
        secret: Some(Secret::new("alice", PASS).unwrap()),
        sessions: vec![SessionRequest::new("127.0.0.1:5000".parse().unwrap())],
        io_timeout: Duration::from_secs(5),
    };
    ControlClient::new(Instant::now(), cfg).unwrap()
}

fn drain(c: &mut ControlClient) -> Vec<Event> {
    while c.poll_transmit().is_some() {}
    std::iter::from_fn(|| c.poll_event()).collect()
}

/// Raw server bytes, cut into the lengths the client asks for. The greeting's count is kept only
/// when it is invalid (to reach the refusal); a valid one is replaced with 1024, or every input
/// could cost a second of PBKDF2.
fn raw(mode: SecurityMode, data: &[u8]) {
    let mut c = client(mode);
    let mut rest = data;
    let t0 = Instant::now();
    for _ in 0..8 {
        let n = c.expected_len();
        if n == 0 || rest.len() < n {
            break;
        }
        let mut msg = rest[..n].to_vec();
        rest = &rest[n..];
        if n == 64 {
            let count = u32::from_be_bytes(msg[48..52].try_into().unwrap());
            if count.is_power_of_two() && count >= 1024 {
                msg[48..52].copy_from_slice(&1024u32.to_be_bytes());
            }
        }
        c.handle_bytes(t0, Duration::from_secs(1_700_000_000), &msg, &mut Counter(0));
        for ev in drain(&mut c) {
            if let Event::Failed(f) = ev {
                let _ = f.to_string();
                assert!(c.is_closed() && c.expected_len() == 0);
            }
        }
    }
    c.handle_timeout(t0 + Duration::from_secs(6));
    let _ = drain(&mut c);
}

/// A correct server whose messages are XORed with the fuzzer's bytes: every state is reachable,
/// and in the protected modes every flip must end in a failure, never in acting on the message.
fn flipped(mode: SecurityMode, data: &[u8]) {
    let t0 = Instant::now();
    let wall = Duration::from_secs(1_700_000_000);
    let mut c = client(mode);
    let mut flips = data.iter().copied().chain(std::iter::repeat(0));
    let mut flip = |m: &mut [u8]| {
        for b in m.iter_mut() {
            *b ^= flips.next().unwrap_or(0);
        }
    };
    let mut g = [0u8; 64];
    ServerGreetingRepr { modes: Modes(0x0f), challenge: CHALLENGE, salt: SALT, count: 1024 }.emit(&mut g);
    c.handle_bytes(t0, wall, &g, &mut Counter(0));
    let Some(setup) = c.poll_transmit() else { return };
    let Ok(setup) = SetUpResponse::new_checked(&setup[..]).and_then(|p| SetUpResponseRepr::parse(&p)) else {
        panic!("the client's Set-Up-Response must parse")
    };
    let keys: Option<SessionKeys> = mode
        .protects_control()
        .then(|| open_token(&derive_key(PASS, &SALT, 1024).unwrap(), &setup.token, &CHALLENGE).unwrap());
    let server_iv = [9u8; 16];
    let mut sealer = keys.as_ref().map(|k| ControlSealer::new(k, &server_iv));
    let mut ss = [0u8; 48];
    ServerStartRepr { accept: Accept::Ok, server_iv, start_time: NtpTimestamp(1) }.emit(&mut ss);
    if let Some(s) = &mut sealer {
        s.encrypt_blocks(&mut ss[SERVER_START_ENCRYPTED]).unwrap();
    }
    let mut flipped_any = false;
    let mut send = |c: &mut ControlClient, m: &mut [u8], flip: &mut dyn FnMut(&mut [u8])| {
        let before = m.to_vec();
        flip(m);
        flipped_any |= before != m;
        c.handle_bytes(t0, wall, m, &mut Counter(0));
    };
    send(&mut c, &mut ss, &mut flip);
    let _ = drain(&mut c);
    let mut seal = |m: &mut Vec<u8>| {
        if let Some(s) = &mut sealer {
            s.seal(m).unwrap();
        }
    };
    let mut acc = vec![0u8; 48];
    AcceptSessionRepr { accept: Accept::Ok, port: 862, sid: Sid([5; 16]), reflected_octets: 0, server_octets: 0 }
        .emit(&mut acc);
    seal(&mut acc);
    send(&mut c, &mut acc, &mut flip);
    let events = drain(&mut c);
    let mut ack = vec![0u8; 32];
    StartAckRepr { accept: Accept::Ok }.emit(&mut ack);
    seal(&mut ack);
    send(&mut c, &mut ack, &mut flip);
    let events: Vec<Event> = events.into_iter().chain(drain(&mut c)).collect();
    let started = events.contains(&Event::Started);
    if mode.protects_control() && flipped_any && started {
        // Server-Start's MBZ octets 0–14 are the only ones no check covers: a flip of its
        // Accept fails the set-up, of its Server-IV or encrypted tail the first HMAC, of
        // Accept-Session or Start-Ack their own HMAC.
        assert!(data.iter().skip(15).take(48 - 15 + 48 + 32).all(|&b| b == 0), "a flip was acted on");
    }
    assert!(started || flipped_any, "a correct server must get the sessions started: {events:?}");
    if started {
        assert!(c.stop(Accept::Ok));
        assert!(c.poll_transmit().is_some_and(|m| m.len() == 32));
    }
}

/// The Session-Sender on arbitrary replies. Each reply is `[flags][len][bytes]`: flag 1 patches
/// in the Sender Sequence Number and Timestamp of a packet we sent (so the reply matches), flag 2
/// seals it with the session's test crypto (so its HMAC verifies).
fn sender(layout: TestLayout, mode: SecurityMode, data: &[u8]) {
    let keys = TestKeys::derive(&SessionKeys { aes: [1; 16], hmac: [2; 32] }, &Sid([5; 16]));
    let crypto = TestCrypto::new(mode, &keys);
    let format = TwampFormat { layout, crypto: crypto.clone(), padding: 27, server_octets: 0 };
    let cfg = StampConfig {
        packets: 4,
        interval: Duration::from_millis(10),
        timeout: Duration::from_secs(1),
        threshold: Duration::from_secs(1),
        clock_sync: data.first().is_some_and(|b| b & 1 != 0),
        format: SenderFormat::Twamp(Box::new(format)),
        error_estimate: ErrorEstimate::UNSYNCED_DEFAULT,
        stateful: data.first().is_some_and(|b| b & 2 != 0),
    };
    let t0 = Instant::now();
    let wall0 = Duration::from_secs(1_700_000_000);
    let mut op = StampOp::new(t0, cfg, 862);
    let mut buf = vec![0u8; 2048];
    let mut t1s = Vec::new();
    for i in 0..4u32 {
        let (now, wall) = (t0 + Duration::from_millis(10) * i, wall0 + Duration::from_millis(10) * i);
        let tx = op.poll_transmit(now, wall, &mut buf).expect("a packet is due");
        assert_eq!(tx.len, layout.sender_len() + 27);
        t1s.push(NtpTimestamp::from_unix(wall));
    }
    let (fields, len) = match layout {
        TestLayout::Unauthenticated => ((24, 28), 41),
        TestLayout::Authenticated => ((48, 64), 112),
    };
    let mut rest = data.get(1..).unwrap_or(&[]);
    let mut delivered = 0u32;
    while rest.len() >= 2 && delivered < 64 {
        let (flags, n) = (rest[0], usize::from(rest[1]));
        rest = &rest[2..];
        let take = n.min(rest.len());
        let mut reply = rest[..take].to_vec();
        rest = &rest[take..];
        if flags & 1 != 0 && reply.len() >= len {
            let seq = u32::from(flags >> 4) % 4;
            reply[fields.0..fields.0 + 4].copy_from_slice(&seq.to_be_bytes());
            reply[fields.1..fields.1 + 8].copy_from_slice(&t1s[seq as usize].0.to_be_bytes());
            if flags & 2 != 0
                && let Some(c) = &crypto
            {
                c.seal_reflector(&mut reply).unwrap();
            }
        }
        let rx = RxTime { wall: wall0 + Duration::from_millis(u64::from(flags)), kernel: flags & 8 != 0 };
        op.handle_datagram(t0 + Duration::from_millis(40), Peer::Probe, rx, &reply);
        delivered += 1;
    }
    op.handle_timeout(t0 + Duration::from_secs(5));
    assert!(op.is_done());
    let r = op.result();
    let st = &r.stats;
    assert_eq!(st.sent, 4);
    assert!(st.received <= 4);
    assert_eq!(st.loss_sd + st.loss_ds + st.loss_mia + st.received, 4, "{st:?}");
    assert!(r.unexpected + st.received + st.duplicates + st.late <= delivered);
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let mode = MODES[usize::from(sel & 3)];
    match (sel >> 2) % 4 {
        0 => raw(mode, rest),
        1 => flipped(mode, rest),
        2 => sender(TestLayout::Unauthenticated, SecurityMode::Unauthenticated, rest),
        _ => {
            let m = if sel & 1 != 0 { SecurityMode::Encrypted } else { SecurityMode::Authenticated };
            sender(TestLayout::Authenticated, m, rest)
        }
    }
});
