use super::*;
use ipsla_wire::stamp::tlv::{ClassOfService, DirectMeasurement, TlvRepr, TlvValue, TlvWriter};

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

fn info() -> Received {
    Received {
        rx: RxTime { wall: Duration::new(1_700_000_000, 500_000_000), kernel: true },
        src: "127.0.0.1:40000".parse().unwrap(),
        dst: "127.0.0.2:862".parse().unwrap(),
        ttl: Some(64),
        tos: Some(0xb9), // EF, ECN 01
        error_estimate: ErrorEstimate::UNSYNCED_DEFAULT,
        sync_source: SyncSource::LocalFreeRunning,
    }
}

fn sender(mode: StampMode, seq: u32, ssid: u16, tlvs: &[TlvRepr<'_>], key: Option<&[u8]>) -> Vec<u8> {
    let base = mode.base_len();
    let mut b = vec![
        0u8;
        base + tlvs.iter().map(|t| t.buffer_len()).sum::<usize>()
            + if key.is_some() && !tlvs.is_empty() { 20 } else { 0 }
    ];
    SenderRepr {
        mode,
        sequence: seq,
        timestamp: NtpTimestamp(0x1122_3344_5566_7788),
        error_estimate: ErrorEstimate(0x0001),
        ssid,
    }
    .emit(&mut b);
    let mut w = TlvWriter::new(&mut b[base..]);
    for t in tlvs {
        w.push(t).unwrap();
    }
    if let (Some(k), false) = (key, tlvs.is_empty()) {
        w.push_hmac(TlvFlags::U, k, seq).unwrap();
    }
    if let Some(k) = key {
        SenderPacket::new_unchecked(&mut b[..], mode).sign(k);
    }
    b
}

fn reflect(r: &mut StampReflector, pkt: &[u8]) -> Result<Vec<u8>, Drop> {
    let mut out = vec![0u8; 2048];
    let rep = r.handle(Instant::now(), &info(), pkt, &mut out)?;
    r.transmit(&rep, &mut out, Duration::new(1_700_000_000, 600_000_000));
    out.truncate(rep.len);
    Ok(out)
}

#[test]
fn stateless_copies_fields() {
    let mut r = StampReflector::new(ReflectorConfig::default());
    let out = reflect(&mut r, &sender(StampMode::Unauthenticated, 7, 0x1234, &[], None)).unwrap();
    assert_eq!(out.len(), 44);
    let p = ReflectorPacket::new_checked(&out[..], StampMode::Unauthenticated).unwrap();
    let rr = ReflectorRepr::parse(&p).unwrap();
    assert_eq!(rr.sequence, 7, "stateless: the sender's sequence");
    assert_eq!(rr.sender_sequence, 7);
    assert_eq!(rr.ssid, 0x1234);
    assert_eq!(rr.sender_timestamp, NtpTimestamp(0x1122_3344_5566_7788));
    assert_eq!(rr.sender_error_estimate, ErrorEstimate(1));
    assert_eq!(rr.sender_ttl, Some(64));
    assert_eq!(rr.receive_timestamp, NtpTimestamp::from_unix(Duration::new(1_700_000_000, 500_000_000)));
    assert_eq!(rr.timestamp, NtpTimestamp::from_unix(Duration::new(1_700_000_000, 600_000_000)));
    assert_eq!(rr.error_estimate, ErrorEstimate::UNSYNCED_DEFAULT);
    assert_eq!(r.stats().replied, 1);
}

#[test]
fn stateful_numbers_per_session() {
    let mut r = StampReflector::new(ReflectorConfig { stateful: true, ..ReflectorConfig::default() });
    let seqs: Vec<u32> = [10u32, 11, 15]
        .iter()
        .map(|&s| {
            let out = reflect(&mut r, &sender(StampMode::Unauthenticated, s, 1, &[], None)).unwrap();
            ReflectorPacket::new_unchecked(&out[..], StampMode::Unauthenticated).sequence()
        })
        .collect();
    assert_eq!(seqs, vec![0, 1, 2], "the reflector's own counter");
    // another SSID from the same peer is another session
    let out = reflect(&mut r, &sender(StampMode::Unauthenticated, 99, 2, &[], None)).unwrap();
    assert_eq!(ReflectorPacket::new_unchecked(&out[..], StampMode::Unauthenticated).sequence(), 0);
    assert_eq!(r.session_count(), 2);
}

#[test]
fn session_table_is_bounded() {
    let mut r = StampReflector::new(ReflectorConfig { stateful: true, max_sessions: 3, ..ReflectorConfig::default() });
    for ssid in 1..=10 {
        reflect(&mut r, &sender(StampMode::Unauthenticated, 0, ssid, &[], None)).unwrap();
    }
    assert_eq!(r.session_count(), 3);
    assert_eq!(r.stats().sessions_evicted, 7);
    r.expire(Instant::now() + Duration::from_secs(301));
    assert_eq!(r.session_count(), 0);
}

#[test]
fn short_light_sender_gets_base_reply() {
    let mut r = StampReflector::new(ReflectorConfig::default());
    let pkt = &sender(StampMode::Unauthenticated, 3, 0, &[], None)[..14];
    let out = reflect(&mut r, pkt).unwrap();
    assert_eq!(out.len(), 44);
    assert_eq!(r.stats().short_requests, 1);
}

#[test]
fn garbage_is_counted_not_panicking() {
    let mut r = StampReflector::new(ReflectorConfig::default());
    for n in 0..14 {
        assert_eq!(reflect(&mut r, &vec![0xff; n]), Err(Drop::Short));
    }
    assert_eq!(r.stats().drop_short, 14);
    // garbage TLV area: M set on the first TLV, nothing else touched
    let mut pkt = sender(StampMode::Unauthenticated, 0, 0, &[], None);
    pkt.extend_from_slice(&[0x80, 0x05, 0x00, 0x20, 1, 2]);
    let out = reflect(&mut r, &pkt).unwrap();
    assert_eq!(out.len(), pkt.len());
    assert_eq!(out[44], 0x80 | 0x40, "M set");
    assert_eq!(&out[45..], &pkt[45..]);
    assert_eq!(r.stats().tlv_malformed, 1);
    let mut small = [0u8; 40];
    assert_eq!(r.handle(Instant::now(), &info(), &pkt, &mut small), Err(Drop::TooLong));
    assert_eq!(r.stats().drop_too_long, 1);
}

#[test]
fn tlvs_reflected_and_filled() {
    let mut r = StampReflector::new(ReflectorConfig { stateful: true, ..ReflectorConfig::default() });
    let pad = [0xaau8; 10];
    let loc_sub = {
        let mut s = vec![0u8; 40];
        s[0] = 0x80;
        s[1] = 4; // destination IP request
        s[3] = 16;
        s[20] = 0x80;
        s[21] = 7; // source IP request
        s[23] = 16;
        s
    };
    let u = TlvFlags::U;
    let tlvs = [
        TlvRepr { flags: u, value: TlvValue::ExtraPadding(&pad) },
        TlvRepr {
            flags: u,
            value: TlvValue::Location(ipsla_wire::stamp::tlv::Location {
                destination_port: 0,
                source_port: 0,
                sub_tlvs: &loc_sub,
            }),
        },
        TlvRepr {
            flags: u,
            value: TlvValue::TimestampInformation(ipsla_wire::stamp::tlv::TimestampInformation {
                sync_in: 0.into(),
                method_in: 0.into(),
                sync_out: 0.into(),
                method_out: 0.into(),
                sub_tlvs: &[],
            }),
        },
        TlvRepr { flags: u, value: TlvValue::ClassOfService(ClassOfService { dscp1: 46, ..Default::default() }) },
        TlvRepr {
            flags: u,
            value: TlvValue::DirectMeasurement(DirectMeasurement { sender_tx: 5, ..Default::default() }),
        },
        TlvRepr { flags: u, value: TlvValue::Other { tlv_type: 200.into(), value: &[1, 2, 3] } },
    ];
    let pkt = sender(StampMode::Unauthenticated, 4, 9, &tlvs, None);
    reflect(&mut r, &pkt).unwrap();
    let out = reflect(&mut r, &pkt).unwrap();
    assert_eq!(out.len(), pkt.len(), "symmetric");
    let got: Vec<TlvRepr<'_>> = TlvReader::new(&out[44..]).map(|t| TlvRepr::parse(&t.unwrap().1).unwrap()).collect();
    assert_eq!(got.len(), 6);
    for g in &got[..5] {
        assert!(!g.flags.contains(TlvFlags::U), "{g:?}");
    }
    assert!(got[5].flags.contains(TlvFlags::U), "unknown type keeps U");
    assert_eq!(got[0].value, TlvValue::ExtraPadding(&pad));
    let TlvValue::Location(l) = got[1].value else { panic!() };
    assert_eq!((l.destination_port, l.source_port), (862, 40000));
    assert_eq!(&l.sub_tlvs[..8], &[0, 5, 0, 16, 127, 0, 0, 2], "destination IPv4");
    assert_eq!(&l.sub_tlvs[20..28], &[0, 8, 0, 16, 127, 0, 0, 1], "source IPv4");
    let TlvValue::TimestampInformation(t) = got[2].value else { panic!() };
    assert_eq!((u8::from(t.sync_in), u8::from(t.method_in)), (5, 2));
    let TlvValue::ClassOfService(c) = got[3].value else { panic!() };
    assert_eq!((c.dscp1, c.dscp2, c.ecn, c.rp), (46, 46, 1, 1));
    let TlvValue::DirectMeasurement(d) = got[4].value else { panic!() };
    assert_eq!((d.sender_tx, d.reflector_rx, d.reflector_tx), (5, 2, 2), "second packet of the session");
}

#[test]
fn authenticated_verifies_and_signs() {
    let mut r = StampReflector::new(ReflectorConfig { key: Some(KEY.to_vec()), ..ReflectorConfig::default() });
    let cos = [TlvRepr { flags: TlvFlags::U, value: TlvValue::ClassOfService(ClassOfService::default()) }];
    let pkt = sender(StampMode::Authenticated, 21, 5, &cos, Some(KEY));
    let out = reflect(&mut r, &pkt).unwrap();
    assert_eq!(out.len(), pkt.len());
    let p = ReflectorPacket::new_checked(&out[..], StampMode::Authenticated).unwrap();
    assert!(p.verify_hmac(KEY), "reply signed after T3 was written");
    assert_eq!(p.sequence(), 21);
    assert_eq!(tlv::check_hmac(KEY, 21, p.tlv_area()), TlvHmacCheck::Valid, "HMAC TLV recomputed");
    assert!(TlvReader::new(p.tlv_area()).all(|t| !t.unwrap().1.flags().contains(TlvFlags::I)));

    // a bad base HMAC: dropped and counted
    let mut bad = pkt.clone();
    bad[100] ^= 1;
    assert_eq!(reflect(&mut r, &bad), Err(Drop::BadHmac));
    assert_eq!(r.stats().drop_bad_hmac, 1);
    // a 44-octet packet in authenticated mode is too short
    assert_eq!(reflect(&mut r, &pkt[..44]), Err(Drop::Short));

    // a bad HMAC TLV: replied with I on every TLV
    let mut bad_tlv = pkt.clone();
    let n = bad_tlv.len();
    bad_tlv[n - 1] ^= 1;
    SenderPacket::new_unchecked(&mut bad_tlv[..], StampMode::Authenticated).sign(KEY);
    let out = reflect(&mut r, &bad_tlv).unwrap();
    assert!(TlvReader::new(&out[112..]).all(|t| t.unwrap().1.flags().contains(TlvFlags::I)));
    assert_eq!(r.stats().tlv_integrity_failed, 1);
}
