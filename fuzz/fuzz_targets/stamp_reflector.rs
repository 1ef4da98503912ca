//! The STAMP Session-Reflector state machine on arbitrary datagrams, in every mode: it never
//! panics, every datagram is either replied to or counted as a drop, a reply is at least the base
//! packet and as long as the request, and it carries the request's SSID and sender sequence.
#![no_main]
#![forbid(unsafe_code)]

use ipsla_core::io::RxTime;
use ipsla_core::stamp::{Received, ReflectorConfig, StampReflector};
use ipsla_wire::stamp::packet::{ReflectorPacket, SenderPacket, StampMode};
use ipsla_wire::stamp::tlv::SyncSource;
use ipsla_wire::time::ErrorEstimate;
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, pkt)) = data.split_first() else { return };
    let cfg = ReflectorConfig {
        stateful: flags & 1 != 0,
        key: (flags & 2 != 0).then(|| b"ipsla-fuzz-stamp-key".to_vec()),
        max_sessions: 4,
        ..ReflectorConfig::default()
    };
    let mode = cfg.mode();
    let mut r = StampReflector::new(cfg);
    let info = Received {
        rx: RxTime { wall: Duration::new(1_700_000_000, 0), kernel: true },
        src: "127.0.0.1:5000".parse().unwrap(),
        dst: "127.0.0.1:862".parse().unwrap(),
        ttl: (flags & 4 != 0).then_some(64),
        tos: (flags & 8 != 0).then_some(flags),
        error_estimate: ErrorEstimate::UNSYNCED_DEFAULT,
        sync_source: SyncSource::Ntp,
    };
    let mut out = vec![0u8; 4096];
    let now = Instant::now();
    for _ in 0..2 {
        match r.handle(now, &info, pkt, &mut out) {
            Ok(rep) => {
                assert!(rep.len >= mode.base_len() && rep.len >= pkt.len());
                r.transmit(&rep, &mut out, Duration::new(1_700_000_000, 1));
                let reply = ReflectorPacket::new_checked(&out[..rep.len], mode).expect("reply parses");
                let req = SenderPacket::new_unchecked(pkt, mode);
                assert_eq!(reply.ssid(), req.ssid());
                if pkt.len() >= 4 {
                    assert_eq!(reply.sender_sequence(), req.sequence());
                }
                if let Some(k) = (mode == StampMode::Authenticated).then_some(b"ipsla-fuzz-stamp-key") {
                    assert!(reply.verify_hmac(k));
                }
            }
            Err(_) => {}
        }
    }
    let s = r.stats();
    assert_eq!(s.received, 2);
    assert_eq!(s.replied + s.drop_short + s.drop_too_long + s.drop_bad_hmac, 2);
});
