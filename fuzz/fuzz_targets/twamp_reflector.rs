//! The TWAMP-Test Session-Reflector on arbitrary datagrams: control sessions in the four security
//! modes and TWAMP-Light (stateless and stateful). The first octet chooses the reflector (bits
//! 0–2), RFC 6038 Symmetrical Size (bit 3) and Reflect Octets (bit 4, 12 octets), and in
//! authenticated/encrypted mode whether the harness seals the datagram as a sender would (bit 5,
//! so the HMAC passes). Invariants: no panic; every datagram is reflected or counted as one
//! drop; a reply is at least the reflector's fields (41 / 112) plus the octets to reflect and as
//! long as the request; it carries the sender's sequence number, and its HMAC verifies in the
//! authenticated and encrypted modes.
#![no_main]
#![forbid(unsafe_code)]

use ipsla_core::io::RxTime;
use ipsla_core::twamp::reflector::{
    LightConfig, LightReflector, Received, ReflectorStats, SessionParams, SessionReflector,
};
use ipsla_wire::time::ErrorEstimate;
use ipsla_wire::twamp::crypto::{SessionKeys, TestCrypto, TestKeys};
use ipsla_wire::twamp::test::{ReflectorPacket, SenderPacket};
use ipsla_wire::twamp::{SecurityMode, Sid};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

enum Refl {
    Session(SessionReflector),
    Light(LightReflector),
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, pkt)) = data.split_first() else { return };
    let now = Instant::now();
    let sid = Sid([7; 16]);
    let keys = TestKeys::derive(&SessionKeys { aes: [1; 16], hmac: [2; 32] }, &sid);
    let modes =
        [SecurityMode::Unauthenticated, SecurityMode::Authenticated, SecurityMode::Encrypted, SecurityMode::Mixed];
    let kind = flags & 7;
    let reflect_len: u16 = if flags & 0x10 != 0 { 12 } else { 0 };
    let (mut refl, mode) = if kind < 4 {
        let mode = modes[usize::from(kind)];
        let params = SessionParams {
            sid,
            mode,
            keys: Some(keys.clone()),
            sender: "127.0.0.1:5000".parse().unwrap(),
            reflect_len,
            symmetrical: flags & 8 != 0,
            timeout: Duration::from_secs(2),
            refwait: Duration::from_secs(900),
            dscp: 0,
        };
        let mut r = SessionReflector::new(now, params);
        r.start(now);
        (Refl::Session(r), mode)
    } else {
        let stateful = kind & 1 == 1;
        (
            Refl::Light(LightReflector::new(LightConfig { stateful, max_peers: 2, ..LightConfig::default() })),
            SecurityMode::Unauthenticated,
        )
    };
    let layout = mode.test_layout();
    let crypto = TestCrypto::new(mode, &keys);
    let mut pkt = pkt.to_vec();
    if let (Some(c), true) = (&crypto, flags & 0x20 != 0) {
        let _ = c.seal_sender(&mut pkt);
    }
    let sender_seq = {
        let mut head = pkt.clone();
        match &crypto {
            Some(c) => c.open_sender(&mut head).ok().map(|()| head),
            None => Some(head),
        }
        .and_then(|h| SenderPacket::new_checked(&h[..], layout).ok().map(|p| p.sequence()))
    };
    let info = Received {
        rx: RxTime { wall: Duration::new(1_700_000_000, 0), kernel: true },
        src: "127.0.0.1:5000".parse().unwrap(),
        ttl: Some(64),
        error_estimate: ErrorEstimate::UNSYNCED_DEFAULT,
    };
    let mut out = vec![0u8; 4096];
    for _ in 0..2 {
        let res = match &mut refl {
            Refl::Session(r) => r.handle(now, &info, &pkt, &mut out),
            Refl::Light(r) => r.handle(now, &info, &pkt, &mut out),
        };
        let Ok(rep) = res else { continue };
        match &refl {
            Refl::Session(r) => r.transmit(&rep, &mut out, Duration::new(1_700_000_000, 1)),
            Refl::Light(r) => r.transmit(&rep, &mut out, Duration::new(1_700_000_000, 1)),
        }
        let reflect = if matches!(refl, Refl::Session(_)) { usize::from(reflect_len) } else { 0 };
        assert!(rep.len >= layout.reflector_len() + reflect && rep.len >= pkt.len(), "reply size");
        let reply = &mut out[..rep.len];
        if let Some(c) = &crypto {
            c.open_reflector(reply).expect("the reply's HMAC verifies");
        }
        let p = ReflectorPacket::new_checked(&reply[..], layout).expect("reply parses");
        assert_eq!(Some(p.sender_sequence()), sender_seq, "the sender's sequence number comes back");
        assert_eq!(p.sender_ttl(), Some(64));
    }
    let s: ReflectorStats = match &refl {
        Refl::Session(r) => r.stats().clone(),
        Refl::Light(r) => r.stats().clone(),
    };
    assert_eq!(s.received, 2);
    assert_eq!(s.reflected + s.dropped(), 2);
});
