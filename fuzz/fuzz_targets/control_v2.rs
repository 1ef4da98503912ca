//! RFC 6812 v2 control: checked view, repr parse, authentication (verify/sign) and the
//! responder's in-place edits on a mutable copy, and parse → emit → parse round trip.
#![no_main]
#![forbid(unsafe_code)]

use ipsla_wire::cisco::control_v2::{AuthMode, ControlV2, ControlV2Repr, Status};
use libfuzzer_sys::fuzz_target;

const KEY: &[u8] = b"ipsla-fuzz-secret";

fuzz_target!(|data: &[u8]| {
    let Ok(view) = ControlV2::new_checked(data) else {
        return;
    };
    let index = view.index();
    let _ = (view.status(), view.sequence(), view.timestamp(), view.auth_mode());
    let digest = view.digest();
    let parsed = ControlV2Repr::parse(&view);
    for mode in [AuthMode::None, AuthMode::Sha256, AuthMode::HmacSha256] {
        let _ = view.verify(mode, KEY);
    }

    // What the responder does to its reply: a copy edited in place.
    let mut copy = data.to_vec();
    {
        let mut reply = ControlV2::new_checked(&mut copy[..]).expect("same bytes as a checked view");
        for mode in [AuthMode::HmacSha256, AuthMode::Sha256] {
            reply.sign(mode, KEY);
            if digest.is_some() {
                assert!(reply.verify(mode, KEY), "a freshly signed message must verify ({mode:?})");
                assert!(!reply.verify(mode, b"another key"));
            } else {
                assert!(!reply.verify(mode, KEY), "no digest field: nothing can verify");
            }
        }
        reply.set_udp_meas_dst_port(0xbeef);
        reply.set_udp_session_id(0x1234_5678);
        reply.set_unknown_status(Status::FormatError);
        reply.set_auth_status(Status::AuthFailure);
        reply.set_udp_status(Status::PortInUse);
        reply.set_status(Status::Failure);
    }
    // The edits touch no framing: the copy checks with the same index and parses the same way.
    let edited = ControlV2::new_checked(&copy[..]).expect("edited reply must re-check");
    assert_eq!(edited.index(), index);
    match (&parsed, ControlV2Repr::parse(&edited)) {
        (Ok(_), Ok(e)) => {
            assert_eq!(e.status, Status::Failure);
            assert_eq!(e.auth.status, Status::AuthFailure);
            if let Some(m) = e.measurement {
                assert_eq!(m.meas_dst_port, 0xbeef);
                assert_eq!(m.session_id, 0x1234_5678);
                assert_eq!(m.status, Status::PortInUse);
            }
        }
        (Err(a), Err(b)) => assert_eq!(*a, b),
        (a, b) => panic!("editing changed the parse outcome: {a:?} vs {b:?}"),
    }

    let Ok(repr) = parsed else {
        return;
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(&mut buf);
    let again = ControlV2::new_checked(&buf[..]).expect("emitted message must re-check");
    assert!(!again.index().lengths_exclude_header);
    let repr2 = ControlV2Repr::parse(&again).expect("emitted message must re-parse");
    assert_eq!(repr, repr2);
});
