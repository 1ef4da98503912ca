//! The dns operation fed what a hostile or broken name server could send, on a fake clock: the
//! input is a list of steps `[kind][len][len octets]`, each a UDP datagram, the same datagram
//! with the query's id and question patched in (so that it reaches the answer's verdict), a TCP
//! answer, or time passing. Invariants: no panic; once the clock passes the deadline the run is
//! done; it never has more than one RTT sample.
#![no_main]
#![forbid(unsafe_code)]

use ipsla_core::io::RxTime;
use ipsla_core::ops::dns::{DnsConfig, DnsOp, Question};
use ipsla_core::ops::{Operation, Peer};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_millis(200);

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let cfg = DnsConfig {
        question: Question::new("host.test.example", "A").unwrap(),
        recursion_desired: true,
        expect: (data.first().is_some_and(|b| b & 1 == 1)).then(|| "192.0.2.7".to_string()),
        server: "127.0.0.1:53".parse().unwrap(),
        id: 0x1234,
        timeout: TIMEOUT,
        threshold: Duration::from_millis(50),
    };
    let mut op = DnsOp::new(t0, cfg);
    let mut buf = [0u8; 1024];
    let query = match op.poll_transmit(t0, Duration::from_secs(1), &mut buf) {
        Some(t) => buf[..t.len].to_vec(),
        None => return,
    };
    let mut now = t0;
    let mut rest = data.get(1..).unwrap_or_default();
    while let [kind, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        let rx = RxTime { wall: Duration::from_secs(1) + (now - t0), kernel: false };
        match kind % 4 {
            0 => op.handle_datagram(now, Peer::Probe, rx, bytes),
            1 => {
                // the query's header and question, then the fuzzer's octets as the answer
                let mut m = query.clone();
                m[2] |= 0x80;
                if let Some(b) = bytes.first() {
                    m[3] = *b; // rcode, RA
                    m[2] = 0x80 | (m[2] & 0x7f & b.rotate_left(1)); // QR kept, TC and AA from the input
                }
                if let Some(c) = bytes.get(1..3) {
                    m[6..8].copy_from_slice(c); // ANCOUNT
                }
                m.extend_from_slice(bytes.get(3..).unwrap_or_default());
                op.handle_datagram(now, Peer::Probe, rx, &m);
            }
            2 => op.handle_tcp(now, Ok((bytes, rx))),
            _ => now += Duration::from_millis(u64::from(bytes.first().copied().unwrap_or(1))),
        }
        op.handle_timeout(now);
    }
    op.handle_timeout(t0 + TIMEOUT);
    if op.tcp_query().is_some() {
        op.handle_tcp(t0 + TIMEOUT, Err((true, "timed out".into())));
    }
    assert!(op.is_done(), "not done after the deadline");
    assert!(op.result().stats.rtt.count <= 1);
});
