//! Responder behaviour on a fake timeline and a fake binder. Captured bytes come from reference
//! §(b) with the target 192.168.12.2 rewritten to 127.0.0.1.

use super::*;
use crate::io::FakeBinder;
use ipsla_wire::cisco::control_v2::{AuthRepr, UdpMeasurementRepr};
use proptest::prelude::*;

const LO: [u8; 4] = [127, 0, 0, 1];

fn v1_request(seq: u8, op: u8, port: u16, dur: u16) -> Vec<u8> {
    let mut r = vec![1, seq, 0, 52, 0, 0, 0, 0, 0, op, 0, 16, 0, 0, 0, 0];
    r.extend_from_slice(&LO);
    r.extend_from_slice(&port.to_be_bytes());
    r.extend_from_slice(&dur.to_be_bytes());
    r.extend_from_slice(&[0, 1, 0, 28]);
    r.resize(52, 0);
    r
}

fn src() -> SocketAddr {
    "127.0.0.1:62973".parse().unwrap()
}

fn wall() -> Duration {
    // 12:08:08.033 UTC on some day: T1 of the first g729a probe.
    Duration::from_secs(20_000 * 86_400 + 43_688) + Duration::from_millis(33)
}

struct World {
    r: Responder,
    b: FakeBinder,
    t0: Instant,
    out: [u8; 1024],
}

impl World {
    fn new(config: ResponderConfig) -> Self {
        World { r: Responder::new(config), b: FakeBinder::default(), t0: Instant::now(), out: [0; 1024] }
    }
    fn control(&mut self, at_ms: u64, from: SocketAddr, bytes: &[u8]) -> ControlResult {
        let now = self.t0 + Duration::from_millis(at_ms);
        self.r.handle_control(now, wall() + Duration::from_millis(at_ms), from, bytes, &mut self.out, &mut self.b)
    }
    fn reply(&self, len: usize) -> &[u8] {
        &self.out[..len]
    }
    fn probe(&mut self, at_ms: u64, key: PortKey, from: SocketAddr, pkt: &mut [u8]) -> ProbeResult {
        let now = self.t0 + Duration::from_millis(at_ms);
        self.r.handle_timeout(now, &mut self.b);
        let rx = RxTime { wall: wall() + Duration::from_millis(at_ms), kernel: true };
        self.r.handle_probe(now, &key, from, rx, pkt, &mut self.b)
    }
}

fn udp(port: u16) -> PortKey {
    PortKey { proto: Proto::Udp, addr: IpAddr::from(LO), port }
}

#[test]
fn v1_replies_are_byte_identical_to_ios() {
    // (seq, op, port, duration) of the five captured exchanges.
    for (seq, op, port, dur) in [
        (0x69, 2, 42518, 5000),
        (0x74, 3, 42518, 5000),
        (0x6e, 4, 16384, 5400),
        (0x70, 4, 16384, 5400),
        (0x72, 4, 16384, 5400),
    ] {
        let mut w = World::new(ResponderConfig::default());
        let req = v1_request(seq, op, port, dur);
        let res = w.control(0, src(), &req);
        assert_eq!(res, ControlResult::Reply { len: 24, accepted: true });
        let mut want = req[..24].to_vec();
        want[3] = 0x18;
        assert_eq!(w.reply(24), &want[..]);
        let proto = if op == 3 { Proto::Tcp } else { Proto::Udp };
        assert!(w.b.open.contains(&PortKey { proto, addr: IpAddr::from(LO), port }), "port opened before the reply");
    }
}

fn g729a_probe(seq: u16, t1: u32) -> Vec<u8> {
    let mut p = vec![0u8; 32];
    Type2Repr { processing_ms: 0, t1, t2: 0, sender_seq: seq, responder_seq: 0 }.emit(&mut p);
    probe::fill_pattern(&mut p[16..], &[0xab, 0xcd]);
    p
}
use ipsla_wire::cisco::probe::Type2Repr;

#[test]
fn type2_probes_get_t2_counter_and_processing_time() {
    let mut w = World::new(ResponderConfig::default());
    w.control(0, src(), &v1_request(0x72, 4, 16384, 5400));
    for i in 1..=20u16 {
        let at = u64::from(i) * 20;
        let t1 = ms_since_midnight(wall()) + at as u32;
        let mut pkt = g729a_probe(i, t1);
        let req = pkt.clone();
        let res = w.probe(at, udp(16384), src(), &mut pkt);
        let ProbeResult::Reply { len: 32, stamp: TxStamp::Type2 { t2_ms } } = res else { panic!("{res:?}") };
        assert_eq!(t2_ms, t1, "T2 is the receive time in ms since midnight");
        // The responder writes T3 3 ms later: processing time 3.
        stamp_transmit(&mut pkt, TxStamp::Type2 { t2_ms }, wall() + Duration::from_millis(at + 3));
        let r = Type2::new_checked(&pkt[..]).unwrap();
        assert_eq!(r.processing_ms(), 3);
        assert_eq!(r.responder_seq(), i);
        assert_eq!(r.t2(), t1);
        // Everything else is the request, byte for byte (capture check of reference §(b)).
        let mut masked = pkt.clone();
        masked[2..4].copy_from_slice(&req[2..4]);
        masked[8..12].copy_from_slice(&req[8..12]);
        masked[14..16].copy_from_slice(&req[14..16]);
        assert_eq!(masked, req);
    }
    assert_eq!(w.r.stats().probes_answered, 20);
    assert_eq!(w.r.stats().rx_stamps_kernel, 20);
}

#[test]
fn responder_sequence_counts_received_probes_not_sender_sequence() {
    let mut w = World::new(ResponderConfig::default());
    w.control(0, src(), &v1_request(1, 4, 16384, 5400));
    // sender sequence 1, 2, (3 lost), 4: the responder counts 1, 2, 3
    for (sseq, want) in [(1u16, 1u16), (2, 2), (4, 3)] {
        let mut p = g729a_probe(sseq, 0);
        w.probe(10, udp(16384), src(), &mut p);
        assert_eq!(Type2::new_checked(&p[..]).unwrap().responder_seq(), want);
    }
}

#[test]
fn processing_time_crosses_midnight() {
    let mut p = g729a_probe(1, 0);
    let day = Duration::from_secs(86_400 * 20_001);
    stamp_transmit(&mut p, TxStamp::Type2 { t2_ms: MS_LAST }, day + Duration::from_millis(1));
    assert_eq!(Type2::new_checked(&p[..]).unwrap().processing_ms(), 2);
}
const MS_LAST: u32 = ipsla_wire::time::MS_PER_DAY - 1;

#[test]
fn echo_is_answered_verbatim_once_then_port_closes() {
    let mut w = World::new(ResponderConfig::default());
    w.control(0, "127.0.0.1:50300".parse().unwrap(), &v1_request(0x69, 2, 42518, 5000));
    // IOS capture: the echo probe left from another port (60038) than the control (50300).
    let probe_src: SocketAddr = "127.0.0.1:60038".parse().unwrap();
    let mut p = hex::decode("00010000abcdabcdabcdabcdabcdabcd").unwrap();
    let req = p.clone();
    assert_eq!(w.probe(1, udp(42518), probe_src, &mut p), ProbeResult::Reply { len: 16, stamp: TxStamp::None });
    assert_eq!(p, req);
    assert!(!w.b.open.contains(&udp(42518)), "echo port closed after the answer");
    assert_eq!(w.probe(2, udp(42518), probe_src, &mut p), ProbeResult::Dropped(ProbeReject::NoSession));
    assert_eq!(w.r.session_count(), 0);
}

#[test]
fn session_expiry_closes_port_and_refresh_resets_sequence() {
    let mut w = World::new(ResponderConfig::default());
    let req = v1_request(1, 4, 16384, 1000);
    w.control(0, src(), &req);
    let mut p = g729a_probe(1, 0);
    w.probe(100, udp(16384), src(), &mut p);
    let mut p = g729a_probe(2, 0);
    w.probe(200, udp(16384), src(), &mut p);
    assert_eq!(Type2::new_checked(&p[..]).unwrap().responder_seq(), 2);
    // refresh at 900 ms: the counter restarts, the port stays past the first expiry
    w.control(900, src(), &req);
    let mut p = g729a_probe(1, 0);
    w.probe(1500, udp(16384), src(), &mut p);
    assert_eq!(Type2::new_checked(&p[..]).unwrap().responder_seq(), 1);
    assert!(w.b.open.contains(&udp(16384)));
    // the first timer (1000 ms) fired without effect at the 1500 ms probe; the refreshed one is next
    assert_eq!(w.r.poll_timeout(), Some(w.t0 + Duration::from_millis(1900)));
    w.r.handle_timeout(w.t0 + Duration::from_millis(1899), &mut w.b);
    assert!(w.b.open.contains(&udp(16384)));
    w.r.handle_timeout(w.t0 + Duration::from_millis(1900), &mut w.b);
    assert!(!w.b.open.contains(&udp(16384)));
    let mut p = g729a_probe(3, 0);
    assert_eq!(w.probe(1950, udp(16384), src(), &mut p), ProbeResult::Dropped(ProbeReject::NoSession));
    assert_eq!(w.r.stats().sessions_opened, 1);
    assert_eq!(w.r.stats().sessions_closed, 1);
}

#[test]
fn two_senders_share_a_port_with_separate_counters() {
    let mut w = World::new(ResponderConfig::default());
    let a: SocketAddr = "127.0.0.2:4000".parse().unwrap();
    let b: SocketAddr = "127.0.0.3:4000".parse().unwrap();
    w.control(0, a, &v1_request(1, 4, 16384, 2000));
    w.control(500, b, &v1_request(1, 4, 16384, 2000));
    for _ in 0..3 {
        let mut p = g729a_probe(1, 0);
        w.probe(600, udp(16384), a, &mut p);
    }
    let mut p = g729a_probe(1, 0);
    w.probe(600, udp(16384), b, &mut p);
    assert_eq!(Type2::new_checked(&p[..]).unwrap().responder_seq(), 1);
    // a's session ends at 2000, the port stays for b until 2500
    w.r.handle_timeout(w.t0 + Duration::from_millis(2000), &mut w.b);
    assert!(w.b.open.contains(&udp(16384)));
    w.r.handle_timeout(w.t0 + Duration::from_millis(2500), &mut w.b);
    assert!(!w.b.open.contains(&udp(16384)));
}

#[test]
fn type3_layouts_legacy_and_rfc() {
    let mut w = World::new(ResponderConfig::default());
    w.control(0, src(), &v1_request(1, 4, 17000, 2000));
    // legacy: u16 sequence at 52
    let mut p = vec![0u8; 64];
    p[1] = 3;
    p[53] = 1;
    let res = w.probe(5, udp(17000), src(), &mut p);
    assert_eq!(res, ProbeResult::Reply { len: 64, stamp: TxStamp::Type3 { layout: Type3Layout::Legacy } });
    assert_eq!(&p[52..56], &[0, 1, 0, 1]);
    let t2 = NtpTimestamp(u64::from_be_bytes(p[12..20].try_into().unwrap()));
    assert_eq!(t2, NtpTimestamp::from_unix(wall() + Duration::from_millis(5)));
    stamp_transmit(&mut p, TxStamp::Type3 { layout: Type3Layout::Legacy }, wall() + Duration::from_millis(6));
    let t3 = NtpTimestamp(u64::from_be_bytes(p[20..28].try_into().unwrap()));
    assert_eq!(t3.diff_nanos(t2), 1_000_000);
    // RFC layout: u32 sequence 2 at 52 → responder u32 at 56 = 2
    let mut p = vec![0u8; 64];
    p[1] = 3;
    p[55] = 2;
    w.probe(6, udp(17000), src(), &mut p);
    assert_eq!(&p[52..60], &[0, 0, 0, 2, 0, 0, 0, 2]);
    // too short for either layout
    let mut p = vec![0u8; 40];
    p[1] = 3;
    assert_eq!(w.probe(7, udp(17000), src(), &mut p), ProbeResult::Dropped(ProbeReject::Truncated));
}

#[test]
fn v1_rejections_are_counted_and_dropped() {
    let mut cfg = ResponderConfig { port_range: 2000..=60000, ..ResponderConfig::default() };
    cfg.max_duration = Duration::from_secs(10);
    let mut w = World::new(cfg);
    w.b.busy.insert(5001);
    w.b.foreign.insert(IpAddr::from([127, 9, 9, 9]));
    let cases: Vec<(Vec<u8>, Reject)> = vec![
        (v1_request(1, 4, 80, 5000), Reject::PortNotAllowed),
        (v1_request(1, 4, 1967, 5000), Reject::PortNotAllowed),
        (v1_request(1, 4, 0, 5000), Reject::PortNotAllowed),
        (v1_request(1, 4, 5001, 5000), Reject::PortInUse),
        (v1_request(1, 4, 5002, 0), Reject::BadDuration),
        (v1_request(1, 9, 5002, 5000), Reject::FormatError),
        (v1_request(1, 4, 5002, 5000)[..40].to_vec(), Reject::Malformed),
        (
            {
                let mut r = v1_request(1, 4, 5002, 5000);
                r[30] = 7;
                r
            },
            Reject::AuthUnsupported,
        ),
        (
            {
                let mut r = v1_request(1, 4, 5002, 5000);
                r[16..20].copy_from_slice(&[127, 9, 9, 9]);
                r
            },
            Reject::NotLocal,
        ),
        (
            {
                let mut r = v1_request(1, 4, 5002, 5000);
                r[0] = 7;
                r
            },
            Reject::UnknownVersion,
        ),
    ];
    for (req, why) in cases {
        let before = w.r.stats().rejects.get(&why).copied().unwrap_or(0);
        assert_eq!(w.control(0, src(), &req), ControlResult::Dropped(why), "{why:?}");
        assert_eq!(w.r.stats().rejects[&why], before + 1);
        assert_eq!(w.r.stats().recent_sources.back().unwrap().2, Some(why));
    }
    // a 65 s duration is over the 10 s maximum
    let mut w = World::new(ResponderConfig { max_duration: Duration::from_secs(10), ..ResponderConfig::default() });
    assert_eq!(w.control(0, src(), &v1_request(1, 4, 5002, 65000)), ControlResult::Dropped(Reject::BadDuration));
    assert!(w.b.open.is_empty());
}

#[test]
fn acl_and_rate_limit() {
    let cfg = ResponderConfig {
        allow: vec!["127.0.0.0/24".parse().unwrap()],
        control_rate: 10.0,
        control_burst: 3,
        ..ResponderConfig::default()
    };
    let mut w = World::new(cfg);
    let outsider: SocketAddr = "127.0.1.1:1000".parse().unwrap();
    assert_eq!(w.control(0, outsider, &v1_request(1, 4, 5000, 1000)), ControlResult::Dropped(Reject::NotAllowed));
    let got: Vec<_> = (0..5).map(|i| w.control(0, src(), &v1_request(i, 4, 5000, 1000))).collect();
    assert!(matches!(got[2], ControlResult::Reply { accepted: true, .. }));
    assert_eq!(got[3], ControlResult::Dropped(Reject::RateLimited));
    assert_eq!(got[4], ControlResult::Dropped(Reject::RateLimited));
    // 100 ms later one token is back
    assert!(matches!(w.control(100, src(), &v1_request(9, 4, 5000, 1000)), ControlResult::Reply { .. }));
    assert_eq!(w.r.stats().rejects[&Reject::RateLimited], 2);
}

#[test]
fn session_caps_total_and_per_source() {
    let cfg = ResponderConfig { max_sessions: 3, max_sessions_per_source: 2, ..ResponderConfig::default() };
    let mut w = World::new(cfg);
    let a: SocketAddr = "127.0.0.2:1".parse().unwrap();
    let b: SocketAddr = "127.0.0.3:1".parse().unwrap();
    let c: SocketAddr = "127.0.0.4:1".parse().unwrap();
    assert!(matches!(w.control(0, a, &v1_request(1, 4, 5000, 1000)), ControlResult::Reply { .. }));
    assert!(matches!(w.control(0, a, &v1_request(2, 4, 5001, 1000)), ControlResult::Reply { .. }));
    assert_eq!(
        w.control(0, a, &v1_request(3, 4, 5002, 1000)),
        ControlResult::Dropped(Reject::TooManySessionsPerSource)
    );
    // a refresh of an existing session is not a new one
    assert!(matches!(w.control(0, a, &v1_request(4, 4, 5001, 1000)), ControlResult::Reply { .. }));
    assert!(matches!(w.control(0, b, &v1_request(1, 4, 5003, 1000)), ControlResult::Reply { .. }));
    assert_eq!(w.control(0, c, &v1_request(1, 4, 5004, 1000)), ControlResult::Dropped(Reject::TooManySessions));
    assert_eq!(w.r.session_count(), 3);
}

#[test]
fn tcp_accepts_counted_only_with_session() {
    let mut w = World::new(ResponderConfig::default());
    w.control(0, src(), &v1_request(0x74, 3, 42518, 5000));
    let key = PortKey { proto: Proto::Tcp, addr: IpAddr::from(LO), port: 42518 };
    assert!(w.r.handle_tcp_accept(w.t0, &key, "127.0.0.1:27293".parse().unwrap()));
    assert!(!w.r.handle_tcp_accept(w.t0, &key, "127.0.0.5:27293".parse().unwrap()));
    assert_eq!(w.r.stats().tcp_accepts, 1);
}

#[test]
fn permanent_jitter_port_counts_per_sender_and_restarts_at_one() {
    let mut w = World::new(ResponderConfig::default());
    w.r.add_permanent(udp(7000), PermanentKind::UdpJitter);
    for (seq, want) in [(1u16, 1u16), (2, 2), (4, 3), (1, 1)] {
        let mut p = g729a_probe(seq, 0);
        w.probe(0, udp(7000), src(), &mut p);
        assert_eq!(Type2::new_checked(&p[..]).unwrap().responder_seq(), want);
    }
    // a control message may not take over a permanent port
    assert_eq!(w.control(0, src(), &v1_request(1, 4, 7000, 1000)), ControlResult::Dropped(Reject::PortNotAllowed));
}

// ---------------------------------------------------------------------------------------------
// v2 (RFC 6812)

fn v2_request(seq: u32, mode: AuthMode, key_id: u16, port: u16, ts: NtpTimestamp) -> Vec<u8> {
    let r = ControlV2Repr {
        status: Status::Success,
        sequence: seq,
        timestamp: ts,
        auth: AuthRepr { status: Status::Success, mode, key_id, long: Some(([0x5a; 16], [0; 32])) },
        measurement: Some(UdpMeasurementRepr {
            status: Status::Success,
            role: 1,
            session_id: 0,
            control_src: IpAddr::from(LO),
            control_dst: IpAddr::from(LO),
            meas_src: IpAddr::from(LO),
            meas_dst: IpAddr::from(LO),
            control_src_port: 0,
            meas_src_port: 40000,
            meas_dst_port: port,
            duration_ms: 3000,
        }),
    };
    let mut b = vec![0u8; r.buffer_len()];
    r.emit(&mut b);
    b
}

fn sign(mut b: Vec<u8>, mode: AuthMode, secret: &[u8]) -> Vec<u8> {
    ControlV2::new_checked(&mut b[..]).unwrap().sign(mode, secret);
    b
}

fn keyed() -> ResponderConfig {
    let mut c = ResponderConfig::default();
    c.keys.insert(7, b"s3cret".to_vec());
    c
}

fn v2_reply(w: &World, len: usize) -> ControlV2Repr {
    ControlV2Repr::parse(&ControlV2::new_checked(w.reply(len)).unwrap()).unwrap()
}

#[test]
fn v2_success_reflects_csld_and_signs() {
    for mode in [AuthMode::Sha256, AuthMode::HmacSha256] {
        let mut w = World::new(keyed());
        let req = sign(v2_request(10, mode, 7, 18000, NtpTimestamp::from_unix(wall())), mode, b"s3cret");
        let ControlResult::Reply { len, accepted: true } = w.control(0, src(), &req) else { panic!() };
        assert_eq!(len, 172);
        let rep = v2_reply(&w, len);
        assert_eq!(rep.status, Status::Success);
        assert_eq!(rep.auth.status, Status::Success);
        assert_eq!(rep.auth.long.unwrap().0, [0x5a; 16], "nonce reflected");
        let m = rep.measurement.unwrap();
        assert_eq!(m.status, Status::Success);
        assert_eq!(m.meas_dst_port, 18000);
        assert_ne!(m.session_id, 0, "responder assigned its own session id");
        assert_eq!(rep.timestamp, NtpTimestamp::from_unix(wall()));
        // digest recomputed over the response
        assert!(ControlV2::new_checked(w.reply(len)).unwrap().verify(mode, b"s3cret"));
        assert!(w.b.open.contains(&udp(18000)));
        // the session is keyed by the measurement source port
        let mut p = vec![0u8; 64];
        p[1] = 3;
        p[55] = 1;
        assert!(matches!(
            w.probe(1, udp(18000), "127.0.0.1:40000".parse().unwrap(), &mut p),
            ProbeResult::Reply { .. }
        ));
        assert_eq!(&p[56..60], &[0, 0, 0, 1]);
    }
}

#[test]
fn v2_wrong_key_unknown_key_and_mode0_when_required() {
    let mut cfg = keyed();
    cfg.require_auth = true;
    let mut w = World::new(cfg);
    let ts = NtpTimestamp::from_unix(wall());
    let cases = [
        sign(v2_request(1, AuthMode::HmacSha256, 7, 18000, ts), AuthMode::HmacSha256, b"wrong"),
        sign(v2_request(2, AuthMode::HmacSha256, 8, 18000, ts), AuthMode::HmacSha256, b"s3cret"),
        v2_request(3, AuthMode::None, 0, 18000, ts),
        v2_request(4, AuthMode::Unknown(9), 7, 18000, ts),
    ];
    for req in cases {
        let ControlResult::Reply { len, accepted: false } = w.control(0, src(), &req) else { panic!() };
        let rep = v2_reply(&w, len);
        assert_eq!(rep.status, Status::AuthFailure);
        assert_eq!(rep.auth.status, Status::AuthFailure);
    }
    assert_eq!(w.r.stats().rejects[&Reject::AuthFailed], 4);
    assert!(w.b.open.is_empty());
}

#[test]
fn v2_replay_protection() {
    let mut w = World::new(keyed());
    let m = AuthMode::HmacSha256;
    let ts = NtpTimestamp::from_unix(wall());
    let first = sign(v2_request(100, m, 7, 18000, ts), m, b"s3cret");
    assert!(matches!(w.control(0, src(), &first), ControlResult::Reply { accepted: true, .. }));
    // a retry (same sequence, same bytes) is accepted
    assert!(matches!(w.control(10, src(), &first), ControlResult::Reply { accepted: true, .. }));
    // an older sequence is a replay
    let old = sign(v2_request(99, m, 7, 18000, ts), m, b"s3cret");
    assert!(matches!(w.control(20, src(), &old), ControlResult::Reply { accepted: false, .. }));
    // the same sequence with a different body is a replay
    let other = sign(v2_request(100, m, 7, 18001, ts), m, b"s3cret");
    assert!(matches!(w.control(30, src(), &other), ControlResult::Reply { accepted: false, .. }));
    assert_eq!(v2_reply(&w, 172).status, Status::AuthFailure);
    // a stale timestamp (2 min old) is a replay even with a new sequence
    let stale_ts = NtpTimestamp::from_unix(wall() - Duration::from_secs(120));
    let stale = sign(v2_request(101, m, 7, 18000, stale_ts), m, b"s3cret");
    assert!(matches!(w.control(40, src(), &stale), ControlResult::Reply { accepted: false, .. }));
    assert_eq!(w.r.stats().rejects[&Reject::Replay], 3);
    // a newer sequence goes through
    let next = sign(v2_request(101, m, 7, 18000, ts), m, b"s3cret");
    assert!(matches!(w.control(50, src(), &next), ControlResult::Reply { accepted: true, .. }));
}

#[test]
fn v2_port_zero_port_in_use_and_unknown_csld() {
    let mut w = World::new(ResponderConfig { port_range: 30000..=30010, ..ResponderConfig::default() });
    w.b.busy.insert(30000);
    let ts = NtpTimestamp(0);
    let ControlResult::Reply { len, accepted: true } = w.control(0, src(), &v2_request(1, AuthMode::None, 0, 0, ts))
    else {
        panic!()
    };
    assert_eq!(v2_reply(&w, len).measurement.unwrap().meas_dst_port, 30001, "responder picked a free port");
    let ControlResult::Reply { len, accepted: false } =
        w.control(0, src(), &v2_request(2, AuthMode::None, 0, 30000, ts))
    else {
        panic!()
    };
    let rep = v2_reply(&w, len);
    assert_eq!(rep.measurement.unwrap().status, Status::PortInUse);
    assert_eq!(rep.status, Status::Failure, "header uses only 0-3");
    // append an unknown CSLD (command 0x2800)
    let mut req = v2_request(3, AuthMode::None, 0, 30002, ts);
    req.extend_from_slice(&[0x28, 0, 0, 0, 0, 0, 0, 12, 1, 2, 3, 4]);
    let l = req.len() as u32;
    req[8..12].copy_from_slice(&l.to_be_bytes());
    let ControlResult::Reply { len, accepted: false } = w.control(0, src(), &req) else { panic!() };
    let out = w.reply(len);
    assert_eq!(&out[2..4], &[0, 3], "header: format error");
    assert_eq!(&out[172 + 2..172 + 4], &[0, 3], "the unknown CSLD carries the status");
    // broken framing: header-only format error
    let mut bad = v2_request(4, AuthMode::None, 0, 30002, ts);
    bad[8..12].copy_from_slice(&100u32.to_be_bytes());
    bad.truncate(100);
    let ControlResult::Reply { len: 20, accepted: false } = w.control(0, src(), &bad) else { panic!() };
    assert_eq!(&w.reply(20)[2..4], &[0, 3]);
    assert_eq!(&w.reply(20)[8..12], &[0, 0, 0, 20]);
}

#[test]
fn v2_failed_auth_gets_no_signature_and_replies_are_not_requests() {
    // Found in review: a reply signed after a failed check could be sent back as a request.
    let mut w = World::new(ResponderConfig { require_auth: true, ..keyed() });
    let m = AuthMode::HmacSha256;
    let ts = NtpTimestamp::from_unix(wall());
    let forged = sign(v2_request(50, m, 7, 18000, ts), m, b"guess");
    let ControlResult::Reply { len, accepted: false } = w.control(0, src(), &forged) else { panic!() };
    let reply = w.reply(len).to_vec();
    assert_eq!(ControlV2::new_checked(&reply[..]).unwrap().digest(), Some([0; 32]), "not signed");
    assert!(!ControlV2::new_checked(&reply[..]).unwrap().verify(m, b"s3cret"));
    // a correctly signed success reply sent back as a request: non-zero statuses are refused,
    // and its digest is not the request's either
    let good = sign(v2_request(51, m, 7, 18000, ts), m, b"s3cret");
    let ControlResult::Reply { len, accepted: true } = w.control(0, src(), &good) else { panic!() };
    let mut reflected = w.reply(len).to_vec();
    assert_eq!(w.control(10, src(), &reflected), ControlResult::Reply { len, accepted: false });
    // even with its statuses zeroed (which breaks the signature) it is refused
    reflected[2..4].fill(0);
    assert!(matches!(w.control(20, src(), &reflected), ControlResult::Reply { accepted: false, .. }));
    assert!(!w.b.open.contains(&udp(18001)));
}

#[test]
fn v2_replay_rules_timestamp_required_restart_and_spoofed_source() {
    let mut w = World::new(keyed());
    let m = AuthMode::HmacSha256;
    // authenticated requests must carry a send timestamp
    let no_ts = sign(v2_request(1, m, 7, 18000, NtpTimestamp(0)), m, b"s3cret");
    assert!(matches!(w.control(0, src(), &no_ts), ControlResult::Reply { accepted: false, .. }));
    let t = |ms: u64| NtpTimestamp::from_unix(wall() + Duration::from_millis(ms));
    let first = sign(v2_request(200, m, 7, 18000, t(0)), m, b"s3cret");
    assert!(matches!(w.control(0, src(), &first), ControlResult::Reply { accepted: true, .. }));
    // the same message from another address is still a replay of that sender's
    let other: SocketAddr = "127.0.0.9:1234".parse().unwrap();
    let old = sign(v2_request(199, m, 7, 18000, t(0)), m, b"s3cret");
    assert!(matches!(w.control(5, other, &old), ControlResult::Reply { accepted: false, .. }));
    // the sender restarted: sequence 3, but a newer timestamp
    let restarted = sign(v2_request(3, m, 7, 18000, t(1000)), m, b"s3cret");
    assert!(matches!(w.control(1000, src(), &restarted), ControlResult::Reply { accepted: true, .. }));
    assert_eq!(w.r.stats().rejects[&Reject::Replay], 2);
}

#[test]
fn v2_port_zero_retry_refreshes_the_same_port() {
    // Found by the responder fuzz target: a retried port-0 request opened a second port.
    let mut w = World::new(ResponderConfig { port_range: 30000..=30010, ..ResponderConfig::default() });
    let req = v2_request(1, AuthMode::None, 0, 0, NtpTimestamp(0));
    let ControlResult::Reply { len, accepted: true } = w.control(0, src(), &req) else { panic!() };
    let first = v2_reply(&w, len).measurement.unwrap().meas_dst_port;
    let ControlResult::Reply { len, accepted: true } = w.control(500, src(), &req) else { panic!() };
    assert_eq!(v2_reply(&w, len).measurement.unwrap().meas_dst_port, first);
    assert_eq!(w.r.session_count(), 1);
    assert_eq!(w.b.open.len(), 1);
    // the refresh moved the expiry: still open at 3000 + 400 ms
    w.r.handle_timeout(w.t0 + Duration::from_millis(3400), &mut w.b);
    assert_eq!(w.b.open.len(), 1);
}

proptest! {
    /// Arbitrary control datagrams and probes never panic, and the session bookkeeping stays
    /// consistent with the ports the binder holds open.
    #[test]
    fn hostile_sequences_keep_invariants(
        msgs in proptest::collection::vec((0u64..3000, proptest::collection::vec(any::<u8>(), 0..200), any::<bool>()), 1..60)
    ) {
        let mut w = World::new(ResponderConfig { port_range: 5000..=5003, control_rate: 0.0, ..ResponderConfig::default() });
        let mut t = 0;
        for (dt, mut bytes, is_v1) in msgs {
            t += dt;
            if bytes.len() >= 24 && is_v1 {
                // steer some inputs into well-formed v1 so sessions do get created
                let port = 5000 + u16::from(bytes[5] % 4);
                bytes = v1_request(bytes[1], 2 + bytes[2] % 3, port, u16::from(bytes[3]) * 20);
            }
            w.control(t, src(), &bytes);
            let mut p = bytes.clone();
            w.probe(t, udp(5000 + (t % 4) as u16), src(), &mut p);
            prop_assert_eq!(w.r.session_count(), w.r.sessions(w.t0 + Duration::from_millis(t)).len());
            let open_ports: std::collections::BTreeSet<_> = w.r.sessions(w.t0).iter().map(|s| s.port).collect();
            let binder_ports: std::collections::BTreeSet<_> = w.b.open.iter().copied().collect();
            prop_assert_eq!(open_ports, binder_ports);
        }
    }
}

#[test]
fn refreshes_do_not_grow_the_timer_heap() {
    // Found in review: every refresh pushed another timer.
    let mut w = World::new(ResponderConfig { control_rate: 0.0, ..ResponderConfig::default() });
    for i in 0..1000u64 {
        w.control(i, src(), &v1_request(1, 4, 16384, 5000));
    }
    assert_eq!(w.r.timers.len(), 1);
    // and the session still ends 5 s after the last refresh, not the first
    w.r.handle_timeout(w.t0 + Duration::from_millis(5000), &mut w.b);
    assert!(w.b.open.contains(&udp(16384)));
    w.r.handle_timeout(w.t0 + Duration::from_millis(5999), &mut w.b);
    assert_eq!(w.r.session_count(), 0);
    assert!(w.r.timers.is_empty());
}

#[test]
fn a_refresh_that_shortens_the_duration_ends_the_session_sooner() {
    // Found by the responder fuzz target after the timer change: the timer stayed at the old,
    // later expiry.
    let mut w = World::new(ResponderConfig { control_rate: 0.0, ..ResponderConfig::default() });
    w.control(0, src(), &v1_request(1, 4, 16384, 5400));
    w.control(100, src(), &v1_request(2, 4, 16384, 1000));
    assert_eq!(w.r.poll_timeout(), Some(w.t0 + Duration::from_millis(1100)));
    w.r.handle_timeout(w.t0 + Duration::from_millis(1100), &mut w.b);
    assert_eq!(w.r.session_count(), 0);
    assert!(w.b.open.is_empty());
}

#[test]
fn v2_sessions_count_against_the_control_source() {
    // Found in review: the cap counted the measurement source named in the message.
    let mut w =
        World::new(ResponderConfig { max_sessions_per_source: 2, control_rate: 0.0, ..ResponderConfig::default() });
    let mut accepted = 0;
    for i in 0..10u8 {
        let mut r = ControlV2Repr::parse(
            &ControlV2::new_checked(
                &v2_request(u32::from(i), AuthMode::None, 0, 30000 + u16::from(i), NtpTimestamp(0))[..],
            )
            .unwrap(),
        )
        .unwrap();
        let m = r.measurement.as_mut().unwrap();
        m.meas_src = IpAddr::from([10, 0, 0, i]);
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut b);
        if matches!(w.control(0, src(), &b), ControlResult::Reply { accepted: true, .. }) {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 2);
}

#[test]
fn v1_jitter_sessions_are_told_apart_by_control_port() {
    // Two operations from one router to the same port keep separate counters.
    let mut w = World::new(ResponderConfig::default());
    let a: SocketAddr = "127.0.0.1:40001".parse().unwrap();
    let b: SocketAddr = "127.0.0.1:40002".parse().unwrap();
    w.control(0, a, &v1_request(1, 4, 16384, 5000));
    w.control(0, b, &v1_request(2, 4, 16384, 5000));
    for _ in 0..3 {
        let mut p = g729a_probe(1, 0);
        w.probe(1, udp(16384), a, &mut p);
    }
    let mut p = g729a_probe(1, 0);
    w.probe(1, udp(16384), b, &mut p);
    assert_eq!(Type2::new_checked(&p[..]).unwrap().responder_seq(), 1, "b's own counter");
    // a probe from a third port of that address is ambiguous: not answered
    let mut p = g729a_probe(1, 0);
    assert_eq!(
        w.probe(1, udp(16384), "127.0.0.1:40003".parse().unwrap(), &mut p),
        ProbeResult::Dropped(ProbeReject::NoSession)
    );
    // with one session only, probes from another port are still answered
    let mut w = World::new(ResponderConfig::default());
    w.control(0, a, &v1_request(1, 4, 16384, 5000));
    let mut p = g729a_probe(1, 0);
    assert!(matches!(w.probe(1, udp(16384), "127.0.0.1:40009".parse().unwrap(), &mut p), ProbeResult::Reply { .. }));
}

#[test]
fn recent_sources_carry_rfc3339_times() {
    let mut stats = ResponderStats::default();
    let at = Duration::from_micros(1_800_000_000_000_042);
    stats.recent_sources.push_back(("192.0.2.7".parse().unwrap(), at, Some(Reject::NotAllowed)));
    let v = serde_json::to_value(&stats).unwrap();
    assert_eq!(v["recent_sources"], serde_json::json!([["192.0.2.7", "2027-01-15T08:00:00.000042Z", "not_allowed"]]));
    let back: ResponderStats = serde_json::from_value(v).unwrap();
    assert_eq!(back.recent_sources, stats.recent_sources);
}
