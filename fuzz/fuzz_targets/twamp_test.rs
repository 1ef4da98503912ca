//! TWAMP-Test: sender and reflector views and Reprs in both layouts (parse → emit → parse),
//! the reply-length helper, and the authenticated/encrypted packet crypto (seal → open gives the
//! packet back; opening garbage never panics).
#![no_main]
#![forbid(unsafe_code)]

use ipsla_wire::twamp::crypto::{SessionKeys, TestCrypto, TestKeys};
use ipsla_wire::twamp::test::*;
use ipsla_wire::twamp::{SecurityMode, Sid};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for layout in [TestLayout::Unauthenticated, TestLayout::Authenticated] {
        if let Ok(p) = SenderPacket::new_checked(data, layout) {
            let r = SenderRepr::parse(&p).expect("a checked sender packet parses");
            assert_eq!(r.buffer_len(), data.len());
            let mut buf = vec![0u8; r.buffer_len()];
            r.emit(&mut buf);
            let again = SenderPacket::new_checked(&buf[..], layout).expect("emitted sender must re-check");
            assert_eq!(SenderRepr::parse(&again).unwrap(), r);
            assert_eq!(p.padding().len(), r.padding_len);
            let n = reply_len(layout, data.len(), 0);
            assert!(n >= layout.reflector_len() && n >= data.len());
        }
        if let Ok(p) = ReflectorPacket::new_checked(data, layout) {
            let r = ReflectorRepr::parse(&p).expect("a checked reflector packet parses");
            assert_eq!(r.sender_ttl.is_none(), p.is_short());
            let mut buf = vec![0u8; r.buffer_len()];
            r.emit(&mut buf);
            assert_eq!(buf.len(), data.len().max(layout.reflector_len()));
            let again = ReflectorPacket::new_checked(&buf[..], layout).expect("emitted reflector must re-check");
            let want = ReflectorRepr { sender_ttl: Some(r.sender_ttl.unwrap_or(255)), ..r };
            assert_eq!(ReflectorRepr::parse(&again).unwrap(), want);
        }
    }

    let keys = TestKeys::derive(&SessionKeys { aes: [1; 16], hmac: [2; 32] }, &Sid([3; 16]));
    for mode in [SecurityMode::Authenticated, SecurityMode::Encrypted] {
        let t = TestCrypto::new(mode, &keys).expect("modes 2 and 4 have test crypto");
        let mut s = data.to_vec();
        if t.seal_sender(&mut s).is_ok() {
            t.open_sender(&mut s).expect("a sealed sender packet opens");
            assert_eq!(&s[..32], &data[..32]);
            assert_eq!(&s[48..], &data[48..]);
        } else {
            assert!(data.len() < SENDER_LEN_AUTH);
        }
        let mut r = data.to_vec();
        if t.seal_reflector(&mut r).is_ok() {
            t.open_reflector(&mut r).expect("a sealed reflector packet opens");
            assert_eq!(&r[..96], &data[..96]);
            assert_eq!(&r[112..], &data[112..]);
        }
        let _ = t.open_sender(&mut data.to_vec());
        let _ = t.open_reflector(&mut data.to_vec());
    }
});
