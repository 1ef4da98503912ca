//! ICMP errors as path discovery reads them (time exceeded, destination unreachable, v4 and v6)
//! with the datagram they quote: never a panic, and a parsed quote really lies inside the message.
#![no_main]
#![forbid(unsafe_code)]

use ipsla_wire::icmp::{self, Icmp, IcmpErrorRepr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = icmp::strip_ipv4_header(data).unwrap_or(data);
    if let Ok(p) = Icmp::new_checked(body) {
        for v6 in [false, true] {
            if let Ok(r) = IcmpErrorRepr::parse(&p, v6) {
                // the shortest quote that parses: 20-byte IPv4 / 40-byte IPv6 header + 4 port bytes
                let min = if v6 { 40 } else { 20 } + 4;
                assert!(p.payload().len() >= min);
                assert_eq!(r.quote.src.is_ipv6(), v6);
                assert_eq!(r.quote.dst.is_ipv6(), v6);
            }
        }
    }
});
