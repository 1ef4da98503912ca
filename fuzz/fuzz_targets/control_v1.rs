//! v1 control: checked view, repr parse, IOS-style reply, and parse → emit → parse round trip.
#![no_main]
#![forbid(unsafe_code)]

use ipsla_wire::cisco::control_v1::{ControlV1, ControlV1Repr, emit_reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(view) = ControlV1::new_checked(data) else {
        return;
    };
    // Every accessor is safe on a checked view.
    let _ = (view.version(), view.sequence(), view.total_length(), view.status());
    for t in view.tlvs() {
        t.expect("a checked view has well-framed TLVs");
    }

    let mut out = [0u8; 600];
    if let Some(n) = emit_reply(&view, &mut out) {
        // The reply is itself a well-formed v1 message: header + the first measurement TLV.
        let reply = ControlV1::new_checked(&out[..n]).expect("reply must re-check");
        assert_eq!(reply.sequence(), view.sequence());
        assert_eq!(reply.status(), view.status());
        assert!(n <= data.len());
    }

    let Ok(repr) = ControlV1Repr::parse(&view) else {
        return;
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(&mut buf);
    let again = ControlV1::new_checked(&buf[..]).expect("emitted message must re-check");
    let repr2 = ControlV1Repr::parse(&again).expect("emitted message must re-parse");
    assert_eq!(repr, repr2);
});
