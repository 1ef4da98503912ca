//! The source side: udp-jitter (ms and µs), icmp-jitter, udp-echo and icmp-echo operations, under
//! v1, v2 or no control, fed what a hostile or broken responder could send, on a fake clock.
//!
//! The first octet picks the operation; the rest is a list of steps `[kind][len][len octets]`:
//! a raw datagram from the control or the measurement port, a correct v1 control reply, the last
//! probe sent echoed back with octets XORed with the step's bytes (so replies reach the
//! statistics), a kernel transmit stamp, or time passing. Invariants: no panic; once the clock
//! passes every deadline the operation is done; it never counts more replies than probes sent.
#![no_main]
#![forbid(unsafe_code)]

use ipsla_core::ops::control::{ControlMode, ControlOp, ControlRequest, V2Auth};
use ipsla_core::ops::echo::{EchoConfig, EchoFormat, EchoOp};
use ipsla_core::ops::jitter::{JitterConfig, JitterFormat, JitterOp};
use ipsla_core::io::RxTime;
use ipsla_core::ops::{Operation, Peer, Precision};
use ipsla_wire::cisco::control_v1::{ControlV1, emit_reply};
use ipsla_wire::cisco::control_v2::AuthMode;
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

const MS: Duration = Duration::from_millis(1);
const TIMEOUT: Duration = Duration::from_millis(200);
const PACKETS: u32 = 5;

fn request(operation: ControlOp, duration: Duration) -> ControlRequest {
    ControlRequest {
        operation,
        target: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 16384,
        duration,
        control_local: "127.0.0.1:50000".parse().unwrap(),
        measurement_local: "127.0.0.1:50001".parse().unwrap(),
        control_remote: "127.0.0.1:1967".parse().unwrap(),
        nonce: [7; 16],
    }
}

fn operation(sel: u8, now: Instant) -> Box<dyn Operation> {
    let control = match (sel >> 4) % 3 {
        0 => ControlMode::V1,
        1 => ControlMode::None,
        _ => ControlMode::V2(Some(V2Auth { mode: AuthMode::HmacSha256, key_id: 7, secret: b"s3cret".to_vec() })),
    };
    let jitter = |format, control| {
        Box::new(JitterOp::new(
            now,
            JitterConfig {
                control,
                request: request(ControlOp::UdpJitter, JitterConfig::control_duration(TIMEOUT, PACKETS, 10 * MS)),
                sequence: 1,
                packets: PACKETS,
                interval: 10 * MS,
                size: 32,
                format,
                timeout: TIMEOUT,
                threshold: 50 * MS,
                clock_sync: sel & 0x80 != 0,
                voice: None,
                pattern: vec![0xab, 0xcd],
            },
        )) as Box<dyn Operation>
    };
    let echo = |format, control| {
        Box::new(EchoOp::new(
            now,
            EchoConfig {
                format,
                control,
                request: request(ControlOp::UdpEcho, TIMEOUT),
                sequence: 1,
                size: 16,
                pattern: b"ABCD".to_vec(),
                timeout: TIMEOUT,
                threshold: 50 * MS,
            },
        )) as Box<dyn Operation>
    };
    match sel % 5 {
        0 => jitter(JitterFormat::Udp(Precision::Ms), control),
        1 => jitter(JitterFormat::Udp(Precision::Us), control),
        2 => jitter(JitterFormat::IcmpTimestamp { ident: 0x1234 }, ControlMode::None),
        3 => echo(EchoFormat::Udp, control),
        _ => echo(EchoFormat::Icmp { v6: sel & 0x40 != 0, ident: 0x1234, seq: 1 }, ControlMode::None),
    }
}

struct Driver {
    op: Box<dyn Operation>,
    now: Instant,
    wall0: Duration,
    t0: Instant,
    last_control: Vec<u8>,
    last_probe: Vec<u8>,
    sent_probes: u32,
    buf: Vec<u8>,
}

impl Driver {
    fn wall(&self) -> Duration {
        self.wall0 + (self.now - self.t0)
    }

    fn rx(&self) -> RxTime {
        RxTime { wall: self.wall(), kernel: true }
    }

    /// Everything the operation wants to send now.
    fn drain(&mut self) {
        for _ in 0..64 {
            let wall = self.wall();
            let Some(t) = self.op.poll_transmit(self.now, wall, &mut self.buf) else { break };
            let bytes = self.buf[..t.len].to_vec();
            match t.peer {
                Peer::Control => self.last_control = bytes,
                Peer::Probe => {
                    self.sent_probes += 1;
                    self.last_probe = bytes;
                }
                Peer::Connect => {}
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        if self.op.poll_timeout().is_some_and(|t| t <= self.now) {
            self.op.handle_timeout(self.now);
        }
        self.drain();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, mut rest)) = data.split_first() else { return };
    let t0 = Instant::now();
    let mut d = Driver {
        op: operation(sel, t0),
        now: t0,
        wall0: Duration::from_secs(20_000 * 86_400 + 43_688),
        t0,
        last_control: Vec::new(),
        last_probe: Vec::new(),
        sent_probes: 0,
        buf: vec![0u8; 2048],
    };
    d.drain();
    while let [kind, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        match kind % 6 {
            0 => {
                let rx = d.rx();
                d.op.handle_datagram(d.now, Peer::Control, rx, bytes);
            }
            1 => {
                let rx = d.rx();
                d.op.handle_datagram(d.now, Peer::Probe, rx, bytes);
            }
            2 => {
                // a correct v1 reply to the last control message (when it was v1)
                if let Ok(v) = ControlV1::new_checked(&d.last_control[..]) {
                    let mut out = [0u8; 512];
                    if let Some(l) = emit_reply(&v, &mut out) {
                        let rx = d.rx();
                        d.op.handle_datagram(d.now, Peer::Control, rx, &out[..l]);
                    }
                }
            }
            3 => {
                // the last probe back, octets XORed with the step's bytes (type, sequence and
                // timestamps survive where the bytes are zero)
                let mut p = d.last_probe.clone();
                for (i, b) in bytes.iter().enumerate() {
                    if let Some(x) = p.get_mut(i) {
                        *x ^= b;
                    }
                }
                let rx = d.rx();
                d.op.handle_datagram(d.now, Peer::Probe, rx, &p);
            }
            4 => {
                let seq = bytes.first().copied().unwrap_or(0);
                let wall = d.wall();
                d.op.handle_tx_stamp(u32::from(seq), wall);
            }
            _ => d.advance(Duration::from_micros(u64::from(*len) * 250)),
        }
        d.drain();
    }
    // every deadline passes: the operation must end
    for _ in 0..10_000 {
        if d.op.is_done() {
            break;
        }
        let step = d.op.poll_timeout().map_or(MS, |t| t.saturating_duration_since(d.now).max(MS));
        d.advance(step.min(Duration::from_secs(1)));
    }
    assert!(d.op.is_done(), "the operation outlived every deadline");
    let r = d.op.result();
    assert!(r.stats.received <= r.stats.sent, "received {} of {} sent", r.stats.received, r.stats.sent);
    assert!(r.stats.sent <= d.sent_probes.max(PACKETS), "sent {} probes, counted {}", d.sent_probes, r.stats.sent);
});
