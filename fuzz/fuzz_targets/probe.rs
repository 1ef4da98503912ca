//! Measurement probes: type detection, type-2 and type-3 views and reprs, and round trips
//! (parse → emit into a buffer of the same length → parse).
#![no_main]
#![forbid(unsafe_code)]

use ipsla_wire::cisco::probe::{ProbeType, Type2, Type2Repr, Type3, Type3Layout, Type3Repr, probe_type};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ty = probe_type(data);
    assert_eq!(ty.is_some(), data.len() >= 2);

    match Type2::new_checked(data) {
        Ok(p) => {
            assert_eq!(ty, Some(ProbeType::JitterMs));
            let repr = Type2Repr::parse(&p);
            let mut buf = vec![0u8; data.len()];
            repr.emit(&mut buf);
            let again = Type2::new_checked(&buf[..]).expect("emitted type 2 must re-check");
            assert_eq!(Type2Repr::parse(&again), repr);
            // Only the 16-byte header is the repr's: with the data copied over, the bytes match.
            buf[16..].copy_from_slice(&data[16..]);
            assert_eq!(&buf[..], data);
        }
        Err(_) => assert!(data.len() < 16 || ty != Some(ProbeType::JitterMs)),
    }

    let layout = Type3Layout::detect(data);
    match Type3::new_checked(data, layout) {
        Ok(p) => {
            assert_eq!(ty, Some(ProbeType::JitterUs));
            assert_eq!(p.layout(), layout);
            let repr = Type3Repr::parse(&p);
            assert_eq!(repr.layout, layout);
            let mut buf = vec![0u8; data.len()];
            repr.emit(&mut buf);
            let again = Type3::new_checked(&buf[..], layout).expect("emitted type 3 must re-check");
            assert_eq!(Type3Repr::parse(&again), repr);
        }
        Err(_) => assert!(data.len() < layout.header_len() || ty != Some(ProbeType::JitterUs)),
    }
    // The other layout must not panic either (the responder forces RFC for v2 sessions).
    for l in [Type3Layout::Rfc, Type3Layout::Legacy] {
        if let Ok(p) = Type3::new_checked(data, l) {
            let _ = Type3Repr::parse(&p);
        }
    }
});
