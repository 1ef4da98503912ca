//! ICMP replies as the ICMP operations read them: optional IPv4 header strip, the checked view,
//! timestamps; and the echo/timestamp request builders round-trip through the view.
#![no_main]
#![forbid(unsafe_code)]

use ipsla_wire::icmp::{self, Icmp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = icmp::strip_ipv4_header(data).unwrap_or(data);
    if let Ok(p) = Icmp::new_checked(body) {
        let _ = (p.msg_type(), p.code(), p.checksum(), p.ident(), p.sequence(), p.checksum_ok());
        assert_eq!(p.payload().len(), body.len() - icmp::HEADER_LEN);
        if let Ok(ts) = p.timestamps() {
            assert!(body.len() >= icmp::TIMESTAMP_LEN);
            let _ = ts.map(|t| t & icmp::TIMESTAMP_MASK);
        }
    }
    // builders: any payload, any ids
    if data.len() >= 8 {
        let ident = u16::from_be_bytes([data[0], data[1]]);
        let seq = u16::from_be_bytes([data[2], data[3]]);
        let payload = &data[8..data.len().min(8 + 1024)];
        let mut buf = vec![0u8; icmp::HEADER_LEN + payload.len()];
        let n = icmp::emit_echo_request(&mut buf, false, ident, seq, payload);
        let p = Icmp::new_checked(&buf[..n]).expect("emitted echo checks");
        assert!(p.checksum_ok());
        assert_eq!((p.ident(), p.sequence(), p.payload()), (ident, seq, payload));
        let orig = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
        let mut t = [0u8; icmp::TIMESTAMP_LEN];
        icmp::emit_timestamp_request(&mut t, ident, seq, orig);
        let p = Icmp::new_checked(&t[..]).unwrap();
        assert!(p.checksum_ok());
        assert_eq!(p.timestamps().unwrap()[0], orig);
    }
});
