use super::*;
use ipsla_wire::twamp::crypto::SessionKeys;

const SENDER: &str = "192.0.2.10:50000";
const T2: Duration = Duration::new(1_700_000_000, 250_000_000);
const T3: Duration = Duration::new(1_700_000_000, 260_000_000);

fn info(src: &str, ttl: Option<u8>) -> Received {
    Received {
        rx: RxTime { wall: T2, kernel: true },
        src: src.parse().unwrap(),
        ttl,
        error_estimate: ErrorEstimate(0x8105),
    }
}

fn params(mode: SecurityMode) -> SessionParams {
    let keys = matches!(mode, SecurityMode::Authenticated | SecurityMode::Encrypted)
        .then(|| TestKeys::derive(&SessionKeys { aes: [1; 16], hmac: [2; 32] }, &Sid([3; 16])));
    SessionParams {
        sid: Sid([3; 16]),
        mode,
        keys,
        sender: SENDER.parse().unwrap(),
        reflect_len: 0,
        symmetrical: false,
        timeout: Duration::from_secs(2),
        refwait: Duration::from_secs(900),
        dscp: 46,
    }
}

/// A sender packet: sequence, a recognisable timestamp, Error Estimate 0x0001, padding 0xa0, 0xa1, …
fn sender(layout: TestLayout, seq: u32, padding: usize) -> Vec<u8> {
    let mut b = vec![0u8; layout.sender_len() + padding];
    SenderRepr {
        layout,
        sequence: seq,
        timestamp: NtpTimestamp(0x1122_3344_5566_7788),
        error_estimate: ErrorEstimate(1),
        padding_len: padding,
    }
    .emit(&mut b);
    for (i, x) in b[layout.sender_len()..].iter_mut().enumerate() {
        *x = 0xa0u8.wrapping_add(i as u8);
    }
    b
}

fn reflect(r: &mut SessionReflector, now: Instant, src: &str, pkt: &[u8]) -> Result<Vec<u8>, Drop> {
    let mut out = vec![0u8; 4096];
    let rep = r.handle(now, &info(src, Some(64)), pkt, &mut out)?;
    r.transmit(&rep, &mut out, T3);
    out.truncate(rep.len);
    Ok(out)
}

#[test]
fn open_session_own_sequence_and_fields() {
    let t0 = Instant::now();
    let mut r = SessionReflector::new(t0, params(SecurityMode::Unauthenticated));
    assert_eq!(reflect(&mut r, t0, SENDER, &sender(TestLayout::Unauthenticated, 7, 27)), Err(Drop::NotStarted));
    r.start(t0);
    for (i, seq) in [7u32, 8, 100].into_iter().enumerate() {
        let out = reflect(&mut r, t0, SENDER, &sender(TestLayout::Unauthenticated, seq, 27)).unwrap();
        assert_eq!(out.len(), 41, "41 in, 41 out");
        let p = ReflectorPacket::new_checked(&out[..], TestLayout::Unauthenticated).unwrap();
        let rr = ReflectorRepr::parse(&p).unwrap();
        assert_eq!(rr.sequence, i as u32, "own counter from 0");
        assert_eq!(rr.sender_sequence, seq);
        assert_eq!(rr.sender_timestamp, NtpTimestamp(0x1122_3344_5566_7788));
        assert_eq!(rr.sender_error_estimate, ErrorEstimate(1));
        assert_eq!(rr.error_estimate, ErrorEstimate(0x8105));
        assert_eq!(rr.receive_timestamp, NtpTimestamp::from_unix(T2));
        assert_eq!(rr.timestamp, NtpTimestamp::from_unix(T3));
        assert_eq!(rr.sender_ttl, Some(64));
    }
    let s = r.take_stats();
    assert_eq!((s.received, s.reflected, s.drop_not_started), (4, 3, 1));
    assert_eq!(r.stats().received, 0, "taken");
}

#[test]
fn reply_truncates_the_padding_and_keeps_its_start() {
    let t0 = Instant::now();
    let mut r = SessionReflector::new(t0, params(SecurityMode::Unauthenticated));
    r.start(t0);
    // 14 octets (twampy) → 41; 14 + 40 → 54 with the first 13 padding octets
    let out = reflect(&mut r, t0, SENDER, &sender(TestLayout::Unauthenticated, 0, 0)).unwrap();
    assert_eq!(out.len(), 41);
    assert_eq!(r.stats().short_requests, 1);
    let out = reflect(&mut r, t0, SENDER, &sender(TestLayout::Unauthenticated, 1, 40)).unwrap();
    assert_eq!(out.len(), 54);
    assert_eq!(&out[41..], &(0xa0..0xa0 + 13).collect::<Vec<u8>>()[..]);
    // TTL unknown → 255 (RFC 5357 §4.2.1)
    let mut buf = vec![0u8; 100];
    let rep = r.handle(t0, &info(SENDER, None), &sender(TestLayout::Unauthenticated, 2, 27), &mut buf).unwrap();
    assert_eq!(buf[40], 255);
    assert_eq!(rep.sequence, 2);
}

#[test]
fn reflect_octets_and_symmetrical_size() {
    let t0 = Instant::now();
    let mut p = params(SecurityMode::Unauthenticated);
    p.reflect_len = 10;
    let mut r = SessionReflector::new(t0, p.clone());
    r.start(t0);
    // RFC 6038 §4.2: padding 27 + 10; the 10 octets come back after the Sender TTL
    let out = reflect(&mut r, t0, SENDER, &sender(TestLayout::Unauthenticated, 0, 37)).unwrap();
    assert_eq!(out.len(), 51);
    assert_eq!(&out[41..], &(0xa0..0xaa).collect::<Vec<u8>>()[..]);
    // a sender that pads too little still gets room for the octets to reflect
    let out = reflect(&mut r, t0, SENDER, &sender(TestLayout::Unauthenticated, 1, 5)).unwrap();
    assert_eq!(out.len(), 51);
    assert_eq!(&out[41..46], &[0xa0, 0xa1, 0xa2, 0xa3, 0xa4]);
    assert_eq!(&out[46..], &[0; 5]);

    // Symmetrical Size: the sender's 27 MBZ octets are skipped, its padding comes back in place
    p.reflect_len = 0;
    p.symmetrical = true;
    let mut r = SessionReflector::new(t0, p);
    r.start(t0);
    let mut pkt = sender(TestLayout::Unauthenticated, 0, 27 + 8);
    pkt[14..41].fill(0);
    let out = reflect(&mut r, t0, SENDER, &pkt).unwrap();
    assert_eq!(out.len(), 49);
    assert_eq!(&out[41..], &pkt[41..], "same padding at the same offsets");
}

#[test]
fn only_the_sender_and_only_while_running() {
    let t0 = Instant::now();
    let mut r = SessionReflector::new(t0, params(SecurityMode::Unauthenticated));
    r.start(t0);
    let pkt = sender(TestLayout::Unauthenticated, 0, 27);
    assert_eq!(reflect(&mut r, t0, "192.0.2.10:50001", &pkt), Err(Drop::WrongSender));
    assert_eq!(reflect(&mut r, t0, "192.0.2.11:50000", &pkt), Err(Drop::WrongSender));
    assert!(reflect(&mut r, t0, "[::ffff:192.0.2.10]:50000", &pkt).is_ok(), "v4-mapped is the same sender");
    r.stop(t0 + Duration::from_secs(10));
    assert_eq!(r.state(), SessionState::Stopped(t0 + Duration::from_secs(12)));
    assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(12)));
    assert!(reflect(&mut r, t0 + Duration::from_secs(12), SENDER, &pkt).is_ok(), "within Timeout after stop");
    assert_eq!(reflect(&mut r, t0 + Duration::from_millis(12_001), SENDER, &pkt), Err(Drop::AfterStop));
    assert_eq!(r.handle_timeout(t0 + Duration::from_secs(11)), None);
    assert_eq!(r.handle_timeout(t0 + Duration::from_secs(12)), Some(SessionEnd::Stopped));
    assert_eq!(r.state(), SessionState::Ended);
    assert_eq!(r.poll_timeout(), None);
    let s = r.stats();
    assert_eq!((s.drop_wrong_sender, s.drop_after_stop, s.reflected), (2, 1, 2));

    // stopping a session that never started ends it at once
    let mut r = SessionReflector::new(t0, params(SecurityMode::Unauthenticated));
    r.stop(t0);
    assert_eq!(r.poll_timeout(), Some(t0));
    assert_eq!(r.handle_timeout(t0), Some(SessionEnd::Stopped));

    // port 0 in the request: any port of the sender's address
    let mut p = params(SecurityMode::Unauthenticated);
    p.sender.set_port(0);
    let mut r = SessionReflector::new(t0, p);
    r.start(t0);
    assert!(reflect(&mut r, t0, "192.0.2.10:1234", &pkt).is_ok());
}

#[test]
fn refwait_ends_a_silent_session() {
    let t0 = Instant::now();
    let mut p = params(SecurityMode::Unauthenticated);
    p.refwait = Duration::from_secs(100);
    let mut r = SessionReflector::new(t0, p);
    r.start(t0 + Duration::from_secs(5));
    assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(105)));
    reflect(&mut r, t0 + Duration::from_secs(50), SENDER, &sender(TestLayout::Unauthenticated, 0, 27)).unwrap();
    assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(150)), "a packet restarts REFWAIT");
    assert_eq!(r.handle_timeout(t0 + Duration::from_secs(149)), None);
    assert_eq!(r.handle_timeout(t0 + Duration::from_secs(150)), Some(SessionEnd::Refwait));
    assert_eq!(r.stats().refwait_expired, 1);
}

#[test]
fn multiplier_zero_and_short_packets_are_dropped() {
    let t0 = Instant::now();
    let mut r = SessionReflector::new(t0, params(SecurityMode::Unauthenticated));
    r.start(t0);
    let mut pkt = sender(TestLayout::Unauthenticated, 0, 27);
    pkt[12..14].copy_from_slice(&[0x3f, 0x00]);
    assert_eq!(reflect(&mut r, t0, SENDER, &pkt), Err(Drop::BadErrorEstimate));
    assert_eq!(reflect(&mut r, t0, SENDER, &pkt[..13]), Err(Drop::Short));
    let mut small = [0u8; 40];
    assert_eq!(
        r.handle(t0, &info(SENDER, None), &sender(TestLayout::Unauthenticated, 0, 27), &mut small),
        Err(Drop::TooLong)
    );
    let s = r.stats();
    assert_eq!((s.drop_bad_error_estimate, s.drop_short, s.drop_too_long, s.reflected), (1, 1, 1, 0));
    assert_eq!(s.received, s.reflected + s.dropped());
}

fn secure(mode: SecurityMode) {
    let t0 = Instant::now();
    let p = params(mode);
    let tc = TestCrypto::new(mode, p.keys.as_ref().unwrap()).unwrap();
    let mut r = SessionReflector::new(t0, p);
    r.start(t0);
    for seq in 0..3u32 {
        let mut pkt = sender(TestLayout::Authenticated, seq + 10, 64);
        tc.seal_sender(&mut pkt).unwrap();
        let mut out = reflect(&mut r, t0, SENDER, &pkt).unwrap();
        assert_eq!(out.len(), 112, "112 in, 112 out");
        assert_eq!(&out[112..], &[] as &[u8]);
        tc.open_reflector(&mut out).expect("the reply's HMAC verifies with the session's test keys");
        let rr =
            ReflectorRepr::parse(&ReflectorPacket::new_checked(&out[..], TestLayout::Authenticated).unwrap()).unwrap();
        assert_eq!((rr.sequence, rr.sender_sequence, rr.sender_ttl), (seq, seq + 10, Some(64)));
        assert_eq!(rr.timestamp, NtpTimestamp::from_unix(T3), "T3 is covered by the HMAC");
        assert_eq!(rr.receive_timestamp, NtpTimestamp::from_unix(T2));
    }
    let mut pkt = sender(TestLayout::Authenticated, 1, 64);
    tc.seal_sender(&mut pkt).unwrap();
    pkt[33] ^= 1;
    assert_eq!(reflect(&mut r, t0, SENDER, &pkt), Err(Drop::BadHmac));
    // an open-mode packet is too short for this session
    assert_eq!(reflect(&mut r, t0, SENDER, &sender(TestLayout::Unauthenticated, 0, 27)), Err(Drop::Short));
    // a 48-octet request still gets the 112-octet reply
    let mut pkt = sender(TestLayout::Authenticated, 1, 0);
    tc.seal_sender(&mut pkt).unwrap();
    assert_eq!(reflect(&mut r, t0, SENDER, &pkt).unwrap().len(), 112);
    assert_eq!(r.stats().drop_bad_hmac, 1);
}

#[test]
fn authenticated_session() {
    secure(SecurityMode::Authenticated);
}

#[test]
fn encrypted_session() {
    secure(SecurityMode::Encrypted);
}

#[test]
fn mixed_session_is_open_on_the_wire() {
    let t0 = Instant::now();
    let mut r = SessionReflector::new(t0, params(SecurityMode::Mixed));
    r.start(t0);
    let out = reflect(&mut r, t0, SENDER, &sender(TestLayout::Unauthenticated, 4, 27)).unwrap();
    assert_eq!(out.len(), 41);
    assert_eq!(ReflectorPacket::new_checked(&out[..], TestLayout::Unauthenticated).unwrap().sender_sequence(), 4);
}

fn light(r: &mut LightReflector, now: Instant, src: &str, pkt: &[u8]) -> Result<Vec<u8>, Drop> {
    let mut out = vec![0u8; 4096];
    let rep = r.handle(now, &info(src, Some(64)), pkt, &mut out)?;
    r.transmit(&rep, &mut out, T3);
    out.truncate(rep.len);
    Ok(out)
}

#[test]
fn light_stateless_copies_the_sequence() {
    let t0 = Instant::now();
    let mut r = LightReflector::new(LightConfig::default());
    for seq in [5u32, 9, 5] {
        let out = light(&mut r, t0, SENDER, &sender(TestLayout::Unauthenticated, seq, 0)).unwrap();
        assert_eq!(out.len(), 41, "a 14-octet request gets 41");
        let p = ReflectorPacket::new_checked(&out[..], TestLayout::Unauthenticated).unwrap();
        assert_eq!((p.sequence(), p.sender_sequence(), p.sender_ttl()), (seq, seq, Some(64)));
        assert_eq!(p.timestamp(), NtpTimestamp::from_unix(T3));
    }
    assert_eq!(r.peer_count(), 0);
    assert_eq!(r.stats().short_requests, 3);
}

#[test]
fn light_stateful_counts_per_sender() {
    let t0 = Instant::now();
    let mut r = LightReflector::new(LightConfig { stateful: true, max_peers: 2, peer_idle: Duration::from_secs(60) });
    let seq = |out: Vec<u8>| ReflectorPacket::new_checked(&out[..], TestLayout::Unauthenticated).unwrap().sequence();
    let pkt = sender(TestLayout::Unauthenticated, 77, 27);
    assert_eq!(seq(light(&mut r, t0, "192.0.2.1:1", &pkt).unwrap()), 0);
    assert_eq!(seq(light(&mut r, t0, "192.0.2.1:1", &pkt).unwrap()), 1);
    assert_eq!(seq(light(&mut r, t0, "192.0.2.2:1", &pkt).unwrap()), 0);
    // a drop does not advance the counter
    let th = t0 + Duration::from_millis(500);
    assert_eq!(light(&mut r, th, "192.0.2.1:1", &pkt[..10]), Err(Drop::Short));
    assert_eq!(seq(light(&mut r, th, "192.0.2.1:1", &pkt).unwrap()), 2);
    // a third sender evicts the least recently seen (192.0.2.2)
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(seq(light(&mut r, t1, "192.0.2.3:1", &pkt).unwrap()), 0);
    assert_eq!(r.stats().peers_evicted, 1);
    assert_eq!(seq(light(&mut r, t1, "192.0.2.1:1", &pkt).unwrap()), 3);
    r.expire(t1 + Duration::from_secs(60));
    assert_eq!(r.peer_count(), 0);
}
