//! STAMP: sender and reflector views and Reprs in both modes (parse → emit → parse), the base
//! HMAC (sign → verify), and the TLV area: every TLV's Repr round trip, re-writing the TLVs with
//! the writer, the HMAC-TLV check, and the reflector's flag pass (it changes flag octets only).
#![no_main]
#![forbid(unsafe_code)]

use ipsla_wire::stamp::packet::*;
use ipsla_wire::stamp::tlv::*;
use libfuzzer_sys::fuzz_target;

const KEY: &[u8] = b"ipsla-fuzz-stamp-key";

fn tlv_area(area: &[u8], sequence: u32) {
    let mut rewritten = vec![0u8; area.len()];
    let mut w = TlvWriter::new(&mut rewritten);
    let mut flag_offsets = Vec::new();
    for item in TlvReader::new(area) {
        let Ok((at, t)) = item else { break };
        flag_offsets.push(at);
        let Ok(r) = TlvRepr::parse(&t) else { continue };
        let mut buf = vec![0u8; r.buffer_len()];
        assert_eq!(buf.len(), t.total_len());
        r.emit(&mut buf);
        let again = Tlv::new_checked(&buf[..]).expect("emitted TLV must re-check");
        assert_eq!(TlvRepr::parse(&again).expect("emitted TLV must re-parse"), r);
        w.push(&r).expect("a TLV parsed from the area fits an area of the same size");
    }
    let _ = check_hmac(KEY, sequence, area);

    // Processing stops either at a TLV that frames but does not parse, or where framing fails
    // (the end of the last TLV that framed), where a header that fits gets the M flag too.
    let framed_end = TlvReader::new(area).map_while(Result::ok).last().map_or(0, |(o, t)| o + t.total_len());
    let mut marked = area.to_vec();
    let s = mark_reply(&mut marked, |t| u8::from(t) <= 8);
    for (i, (a, b)) in area.iter().zip(&marked).enumerate() {
        if a != b {
            assert!(flag_offsets.contains(&i) || i == framed_end, "mark_reply changed octet {i}, not a flags octet");
        }
    }
    if let Some(at) = s.malformed_at {
        assert!(flag_offsets.contains(&at) || at == framed_end, "malformed_at {at}");
    } else {
        assert_eq!(framed_end, area.len(), "a clean pass must cover the whole area");
    }
    set_integrity_failed(&mut marked);
}

fuzz_target!(|data: &[u8]| {
    for mode in [StampMode::Unauthenticated, StampMode::Authenticated] {
        if let Ok(p) = SenderPacket::new_checked(data, mode) {
            let r = SenderRepr::parse(&p).expect("a checked sender packet parses");
            let mut buf = vec![0u8; r.buffer_len()];
            r.emit(&mut buf);
            let again = SenderPacket::new_checked(&buf[..], mode).expect("emitted sender must re-check");
            assert_eq!(SenderRepr::parse(&again).unwrap(), r);
            let _ = p.verify_hmac(KEY);
            tlv_area(p.tlv_area(), p.sequence());
            let mut copy = data.to_vec();
            let mut q = SenderPacket::new_checked(&mut copy[..], mode).unwrap();
            q.sign(KEY);
            assert_eq!(q.verify_hmac(KEY), mode == StampMode::Authenticated);
        }
        if let Ok(p) = ReflectorPacket::new_checked(data, mode) {
            let r = ReflectorRepr::parse(&p).expect("a checked reflector packet parses");
            let mut buf = vec![0u8; r.buffer_len()];
            r.emit(&mut buf);
            let again = ReflectorPacket::new_checked(&buf[..], mode).expect("emitted reflector must re-check");
            let want = ReflectorRepr { sender_ttl: Some(r.sender_ttl.unwrap_or(255)), ..r };
            assert_eq!(ReflectorRepr::parse(&again).unwrap(), want);
            tlv_area(p.tlv_area(), p.sequence());
            let mut copy = data.to_vec();
            let mut q = ReflectorPacket::new_checked(&mut copy[..], mode).unwrap();
            q.sign(KEY);
            assert_eq!(q.verify_hmac(KEY), mode == StampMode::Authenticated);
        }
    }
    // The bytes as a bare TLV area too (what follows the base packet).
    tlv_area(data, 0);
});
