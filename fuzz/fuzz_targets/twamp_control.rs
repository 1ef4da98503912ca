//! TWAMP-Control: every message view and Repr on the raw bytes (parse → emit → parse), the
//! length a reader derives from a first block against what the views accept, and the encrypted
//! control stream (seal → open gives the plaintext back; opening garbage never panics).
#![no_main]
#![forbid(unsafe_code)]

use ipsla_wire::twamp::control::*;
use ipsla_wire::twamp::crypto::{ControlOpener, ControlSealer, SessionKeys, open_token};
use ipsla_wire::twamp::{Command, control};
use libfuzzer_sys::fuzz_target;

/// View → Repr → emit → view → Repr must give the same Repr and the same length.
macro_rules! roundtrip {
    ($view:ident, $repr:ident, $data:expr) => {
        if let Ok(v) = $view::new_checked($data) {
            if let Ok(r) = $repr::parse(&v) {
                let mut buf = vec![0u8; r.buffer_len()];
                r.emit(&mut buf);
                assert_eq!(buf.len(), $data.len(), concat!(stringify!($repr), " length"));
                let again = $view::new_checked(&buf[..]).expect("emitted message must re-check");
                assert_eq!($repr::parse(&again).expect("emitted message must re-parse"), r);
            }
        }
    };
}

fn keys() -> SessionKeys {
    SessionKeys { aes: [0x11; 16], hmac: [0x22; 32] }
}

fuzz_target!(|data: &[u8]| {
    roundtrip!(ServerGreeting, ServerGreetingRepr, data);
    roundtrip!(SetUpResponse, SetUpResponseRepr, data);
    roundtrip!(ServerStart, ServerStartRepr, data);
    roundtrip!(RequestTwSession, RequestTwSessionRepr, data);
    roundtrip!(AcceptSession, AcceptSessionRepr, data);
    roundtrip!(StartSessions, StartSessionsRepr, data);
    roundtrip!(StartAck, StartAckRepr, data);
    roundtrip!(StopSessions, StopSessionsRepr, data);

    if let Ok(v) = SessionList::new_checked(data) {
        let r = SessionListRepr::parse(&v).expect("a checked session list parses");
        assert_eq!(r.sids.len() as u32, v.number_of_sessions());
        let mut buf = vec![0u8; r.buffer_len()];
        r.emit(&mut buf);
        assert_eq!(buf.len(), data.len());
        let again = SessionList::new_checked(&buf[..]).expect("emitted list must re-check");
        assert_eq!(SessionListRepr::parse(&again).unwrap(), r);
    }

    // A reader that trusts message_len gets exactly what the views accept.
    if let Some(first) = data.get(..16) {
        let first: &[u8; 16] = first.try_into().unwrap();
        if let Ok(n) = message_len(first) {
            assert!(n <= 32 + 16 * MAX_SESSIONS_PER_MESSAGE as usize);
            if n == data.len() {
                let ok = match Command::from(data[0]) {
                    Command::StartSessions => StartSessions::new_checked(data).is_ok(),
                    Command::StopSessions => StopSessions::new_checked(data).is_ok(),
                    Command::RequestTwSession => RequestTwSession::new_checked(data).is_ok(),
                    _ => SessionList::new_checked(data).is_ok(),
                };
                assert!(ok, "message_len said {n} but the view refused it");
            }
        }
    }

    if data.len() == control::TOKEN_LEN {
        let _ = open_token(&[0x33; 16], data.try_into().unwrap(), &[0x44; 16]);
    }

    // Encrypted stream: seal → open round trip on whole-block messages; garbage never panics.
    let mut raw = data.to_vec();
    let _ = ControlOpener::new(&keys(), &[0x55; 16]).open(&mut raw);
    if data.len() >= 32 && data.len() % 16 == 0 {
        let mut msg = data.to_vec();
        let mut sealer = ControlSealer::new(&keys(), &[0x55; 16]);
        sealer.seal(&mut msg).expect("whole blocks seal");
        let mut opener = ControlOpener::new(&keys(), &[0x55; 16]);
        opener.open(&mut msg).expect("a sealed message opens");
        let body = data.len() - HMAC_LEN;
        assert_eq!(&msg[..body], &data[..body]);
        // the stream continues: a second copy chains and still opens
        let mut second = data.to_vec();
        sealer.seal(&mut second).unwrap();
        opener.open(&mut second).expect("the second message opens on the same stream");
    }
});
