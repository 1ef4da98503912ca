//! The sans-IO responder driven by a sequence of control messages, probes, TCP accepts and
//! timeouts on a fake clock. After every step: the session counter agrees with the session
//! list, and the ports the sessions use are exactly the ports the binder holds open.
#![no_main]
#![forbid(unsafe_code)]

use arbitrary::{Arbitrary, Unstructured};
use ipsla_core::io::{FakeBinder, PortKey, Proto, RxTime};
use ipsla_core::responder::{
    ControlResult, ProbeResult, Responder, ResponderConfig, stamp_transmit,
};
use ipsla_wire::cisco::control_v1::ControlV1;
use ipsla_wire::cisco::control_v2::ControlV2;
use libfuzzer_sys::fuzz_target;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Input layout (arbitrary 1.x, so seeds can be written by hand): per operation a byte whose low
/// bit says "one more", a little-endian u32 whose top two bits pick the variant, then the fields in
/// order, integers little-endian, and `bytes` as a little-endian u16 length (clamped to what is
/// left) followed by the bytes themselves, kept contiguous so that libFuzzer's mutations and
/// comparison hints act on the datagram directly.
#[derive(Arbitrary, Debug)]
enum Op {
    /// A control datagram. `v1` picks the version; the version octet and the length field are
    /// set to match so that the fuzzer spends its time past the framing checks.
    Control {
        dt_ms: u16,
        v1: bool,
        src: u8,
        #[arbitrary(with = datagram)]
        bytes: Vec<u8>,
    },
    /// A probe on a port: `port_idx` < 128 picks one of the open UDP ports, else a port of the
    /// range whether open or not; `src` < 128 picks the peer of an active session.
    Probe {
        dt_ms: u16,
        port_idx: u8,
        src: u8,
        #[arbitrary(with = datagram)]
        bytes: Vec<u8>,
    },
    /// A TCP connection accepted on a port, chosen like a probe's.
    Tcp { dt_ms: u16, port_idx: u8, src: u8 },
    /// Time passes and expired sessions are closed.
    Timeout { dt_ms: u16 },
}

const PORTS: std::ops::RangeInclusive<u16> = 5000..=5003;
/// The IOS capture's sender (two of its source ports), another IPv4 sender and an IPv6 one.
const SOURCES: [(IpAddr, u16); 4] = [
    (IpAddr::V4(Ipv4Addr::new(192, 168, 12, 1)), 50300),
    (IpAddr::V4(Ipv4Addr::new(192, 168, 12, 1)), 60038),
    (IpAddr::V4(Ipv4Addr::new(10, 1, 1, 1)), 50000),
    (IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)), 50000),
];
/// The responder's address in the captures.
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 12, 2));
/// Wall clock at the start of a run (2026-05-29), moved along with the fake `Instant`.
const WALL0: Duration = Duration::from_secs(1_780_000_000);
/// Key id 1 of the v2 configuration; the seed corpus signs with it.
const KEY_ID: u16 = 1;
const KEY: &[u8] = b"ipsla-fuzz-secret";

fn datagram(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<u8>> {
    let n = usize::from(u16::arbitrary(u)?).min(u.len());
    Ok(u.bytes(n)?.to_vec())
}

fn source(idx: u8) -> SocketAddr {
    let (a, p) = SOURCES[usize::from(idx) % SOURCES.len()];
    SocketAddr::new(a, p)
}

fn pick_port(binder: &FakeBinder, proto: Proto, idx: u8) -> PortKey {
    let open: Vec<&PortKey> = binder.open.iter().filter(|k| k.proto == proto).collect();
    if idx < 128 && !open.is_empty() {
        *open[usize::from(idx) % open.len()]
    } else {
        let n = PORTS.end() - PORTS.start() + 1;
        PortKey { proto, addr: LOCAL, port: PORTS.start() + u16::from(idx) % n }
    }
}

fn pick_source(r: &Responder, now: Instant, key: &PortKey, idx: u8) -> SocketAddr {
    if idx < 128 {
        let peers: Vec<_> = r.sessions(now).into_iter().filter(|s| s.port == *key).collect();
        if !peers.is_empty() {
            let p = peers[usize::from(idx) % peers.len()].peer;
            // Port 0 is a v1 session: any port of the sender matches.
            let port = if p.port == 0 { 60038 } else { p.port };
            return SocketAddr::new(p.addr, port);
        }
    }
    source(idx)
}

fn check(r: &Responder, binder: &FakeBinder, now: Instant) {
    let sessions = r.sessions(now);
    assert_eq!(r.session_count(), sessions.len(), "session counter disagrees with the list");
    let ports: BTreeSet<PortKey> = sessions.iter().map(|s| s.port).collect();
    assert_eq!(ports, binder.open, "ports of the sessions differ from the ports held open");
    assert!(r.poll_timeout().is_some() || sessions.is_empty(), "a session without a timer");
}

fuzz_target!(|ops: Vec<Op>| {
    let config = ResponderConfig {
        control_rate: 0.0,
        port_range: PORTS,
        keys: HashMap::from([(KEY_ID, KEY.to_vec())]),
        ..ResponderConfig::default()
    };
    let mut r = Responder::new(config);
    let mut binder = FakeBinder::default();
    let start = Instant::now();
    let mut elapsed = Duration::ZERO;
    let mut out = [0u8; 1024];
    let mut pkt = [0u8; 1024];

    for op in ops {
        let dt = match &op {
            Op::Control { dt_ms, .. } | Op::Probe { dt_ms, .. } | Op::Tcp { dt_ms, .. } | Op::Timeout { dt_ms } => {
                *dt_ms
            }
        };
        elapsed += Duration::from_millis(u64::from(dt));
        let now = start + elapsed;
        let wall = WALL0 + elapsed;
        match op {
            Op::Control { v1, src, mut bytes, .. } => {
                let src = source(src);
                if v1 {
                    if let Some(b) = bytes.first_mut() {
                        *b = 1;
                    }
                    if bytes.len() >= 4 {
                        let n = bytes.len() as u16;
                        bytes[2..4].copy_from_slice(&n.to_be_bytes());
                    }
                } else {
                    if let Some(b) = bytes.first_mut() {
                        *b = 2;
                    }
                    if bytes.len() >= 12 {
                        let n = bytes.len() as u32;
                        bytes[8..12].copy_from_slice(&n.to_be_bytes());
                    }
                }
                out.fill(0);
                match r.handle_control(now, wall, src, &bytes, &mut out, &mut binder) {
                    ControlResult::Reply { len, accepted } => {
                        assert!(len <= out.len());
                        if v1 {
                            assert!(accepted, "v1 has no error reply");
                            ControlV1::new_checked(&out[..len]).expect("v1 reply must re-check");
                        } else {
                            ControlV2::new_checked(&out[..len]).expect("v2 reply must re-check");
                        }
                        if accepted {
                            assert!(r.session_count() > 0, "accepted without a session");
                        }
                    }
                    ControlResult::Dropped(_) => {}
                }
            }
            Op::Probe { port_idx, src, bytes, .. } => {
                let key = pick_port(&binder, Proto::Udp, port_idx);
                let src = pick_source(&r, now, &key, src);
                let n = bytes.len().min(pkt.len());
                pkt[..n].copy_from_slice(&bytes[..n]);
                let rx = RxTime { wall, kernel: dt % 2 == 0 };
                match r.handle_probe(now, &key, src, rx, &mut pkt[..n], &mut binder) {
                    ProbeResult::Reply { len, stamp } => {
                        assert_eq!(len, n, "a probe reply has the request's length");
                        stamp_transmit(&mut pkt[..len], stamp, wall + Duration::from_micros(30));
                    }
                    ProbeResult::Dropped(_) => {}
                }
            }
            Op::Tcp { port_idx, src, .. } => {
                let key = pick_port(&binder, Proto::Tcp, port_idx);
                let src = pick_source(&r, now, &key, src);
                let _ = r.handle_tcp_accept(now, &key, src);
            }
            Op::Timeout { .. } => {
                r.handle_timeout(now, &mut binder);
                for s in r.sessions(now) {
                    assert!(s.remaining_ms > 0, "expired session survived handle_timeout: {s:?}");
                }
            }
        }
        check(&r, &binder, now);
    }
});
