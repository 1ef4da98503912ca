//! Source operations against the core responder on a fake timeline, over a scripted network.
//! Every expected number is worked out by hand from the scenario in the test's comment.

use super::control::{ControlMode, ControlOp, ControlRequest, V2Auth};
use super::echo::{EchoConfig, EchoFormat, EchoOp};
use super::jitter::{JitterConfig, JitterFormat, JitterOp};
use super::*;
use crate::io::{FakeBinder, PortKey, Proto, RxTime};
use crate::responder::{self as resp, Responder, ResponderConfig};
use ipsla_wire::cisco::control_v2::AuthMode;
use ipsla_wire::icmp;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

const MS: Duration = Duration::from_millis(1);
const TARGET: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));

/// Direction of a datagram on the scripted network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Out,
    Back,
}

/// What the network does to one datagram: the delays of each copy delivered (empty = lost). The
/// `u32` is the probe's sender sequence (0 for control messages).
type Script = Box<dyn FnMut(Dir, Peer, u32) -> Vec<Duration>>;

fn probe_seq(b: &[u8]) -> u32 {
    use ipsla_wire::cisco::probe::{Type2, Type3, Type3Layout};
    if matches!(b.first(), Some(&icmp::TIMESTAMP_REQUEST | &icmp::ECHO_REQUEST_V4)) {
        return u32::from(u16::from_be_bytes([b[6], b[7]]));
    }
    match b.get(1) {
        Some(2) => Type2::new_checked(b).map_or(0, |p| u32::from(p.sender_seq())),
        Some(3) => Type3::new_checked(b, Type3Layout::detect(b)).map_or(0, |p| p.sender_seq()),
        _ => 0,
    }
}

fn constant(out: Duration, back: Duration) -> Script {
    Box::new(move |d, _, _| vec![if d == Dir::Out { out } else { back }])
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Delivery {
    at: Instant,
    order: u64,
    dir_back: bool,
    peer_probe: bool,
    bytes: Vec<u8>,
}

struct Sim {
    t0: Instant,
    wall0: Duration,
    /// Responder clock minus source clock.
    offset: i64,
    /// Responder processing time between receive and transmit stamp.
    processing: Duration,
    responder: Responder,
    binder: FakeBinder,
    script: Script,
    queue: BinaryHeap<Reverse<Delivery>>,
    order: u64,
    /// Every control message the source sent.
    control_sent: Vec<Vec<u8>>,
}

impl Sim {
    fn new(script: Script) -> Self {
        Sim {
            t0: Instant::now(),
            // 2024-09-01 10:00:00.000 UTC: on a whole millisecond
            wall0: Duration::from_secs(1_725_184_800),
            offset: 0,
            processing: MS,
            responder: Responder::new(ResponderConfig::default()),
            binder: FakeBinder::default(),
            script,
            queue: BinaryHeap::new(),
            order: 0,
            control_sent: Vec::new(),
        }
    }

    fn wall(&self, now: Instant) -> Duration {
        self.wall0 + (now - self.t0)
    }

    fn responder_wall(&self, now: Instant) -> Duration {
        let w = self.wall(now).as_nanos() as i64 + self.offset;
        Duration::from_nanos(w as u64)
    }

    fn push(&mut self, at: Instant, back: bool, probe: bool, bytes: Vec<u8>) {
        self.order += 1;
        self.queue.push(Reverse(Delivery { at, order: self.order, dir_back: back, peer_probe: probe, bytes }));
    }

    fn send(&mut self, now: Instant, dir: Dir, peer: Peer, bytes: &[u8]) {
        let n = if peer == Peer::Probe { probe_seq(bytes) } else { 0 };
        for d in (self.script)(dir, peer, n) {
            self.push(now + d, dir == Dir::Back, peer == Peer::Probe, bytes.to_vec());
        }
    }

    /// Runs `op` to completion; `probe_key` is the responder port the probes land on.
    fn run(&mut self, op: &mut dyn Operation) -> OperationResult {
        let mut now = self.t0;
        let mut buf = vec![0u8; 2048];
        let src: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        for _ in 0..1_000_000 {
            while let Some(t) = op.poll_transmit(now, self.wall(now), &mut buf) {
                let bytes = buf[..t.len].to_vec();
                if t.peer == Peer::Control {
                    self.control_sent.push(bytes.clone());
                }
                self.send(now, Dir::Out, t.peer, &bytes);
            }
            if op.is_done() {
                return op.result();
            }
            // next event
            let next_delivery = self.queue.peek().map(|Reverse(d)| d.at);
            let next = [op.poll_timeout(), next_delivery].into_iter().flatten().min().expect("something pending");
            now = now.max(next);
            op.handle_timeout(now);
            while self.queue.peek().is_some_and(|Reverse(d)| d.at <= now) {
                let Reverse(d) = self.queue.pop().unwrap();
                let peer = if d.peer_probe { Peer::Probe } else { Peer::Control };
                if d.dir_back {
                    op.handle_datagram(now, peer, RxTime { wall: self.wall(now), kernel: true }, &d.bytes);
                    continue;
                }
                // at the responder
                let rwall = self.responder_wall(now);
                let mut out = vec![0u8; 1024];
                if peer == Peer::Control {
                    if let resp::ControlResult::Reply { len, .. } =
                        self.responder.handle_control(now, rwall, src, &d.bytes, &mut out, &mut self.binder)
                    {
                        let reply = out[..len].to_vec();
                        self.send(now, Dir::Back, Peer::Control, &reply);
                    }
                } else if d.bytes.first() == Some(&icmp::TIMESTAMP_REQUEST)
                    || d.bytes.first() == Some(&icmp::ECHO_REQUEST_V4)
                {
                    // a Linux-like ICMP target: receive and transmit time with the MSB clear
                    let mut pkt = d.bytes.clone();
                    let at = now + self.processing;
                    if pkt[0] == icmp::TIMESTAMP_REQUEST {
                        pkt[0] = icmp::TIMESTAMP_REPLY;
                        let rx = ipsla_wire::time::ms_since_midnight(rwall);
                        let tx = ipsla_wire::time::ms_since_midnight(rwall + self.processing);
                        pkt[12..16].copy_from_slice(&rx.to_be_bytes());
                        pkt[16..20].copy_from_slice(&tx.to_be_bytes());
                    } else {
                        pkt[0] = icmp::ECHO_REPLY_V4;
                    }
                    pkt[2..4].fill(0);
                    let c = icmp::internet_checksum(&pkt);
                    pkt[2..4].copy_from_slice(&c.to_be_bytes());
                    let n = u32::from(u16::from_be_bytes([pkt[6], pkt[7]]));
                    for dl in (self.script)(Dir::Back, Peer::Probe, n) {
                        self.push(at + dl, true, true, pkt.clone());
                    }
                } else {
                    let key = PortKey { proto: Proto::Udp, addr: TARGET, port: op.probe_port() };
                    let mut pkt = d.bytes.clone();
                    let rx = RxTime { wall: rwall, kernel: true };
                    self.responder.handle_timeout(now, &mut self.binder);
                    if let resp::ProbeResult::Reply { len, stamp } =
                        self.responder.handle_probe(now, &key, src, rx, &mut pkt, &mut self.binder)
                    {
                        resp::stamp_transmit(&mut pkt[..len], stamp, rwall + self.processing);
                        let at = now + self.processing;
                        let n = probe_seq(&pkt[..len]);
                        for dl in (self.script)(Dir::Back, Peer::Probe, n) {
                            self.push(at + dl, true, true, pkt[..len].to_vec());
                        }
                    }
                }
            }
        }
        panic!("simulation did not finish");
    }
}

fn request(op: ControlOp, port: u16, duration: Duration) -> ControlRequest {
    ControlRequest {
        operation: op,
        target: TARGET,
        port,
        duration,
        control_local: "127.0.0.1:50000".parse().unwrap(),
        measurement_local: "127.0.0.1:50000".parse().unwrap(),
        control_remote: "127.0.0.1:1967".parse().unwrap(),
        nonce: [7; 16],
    }
}

fn jitter_cfg(packets: u32, precision: Precision, clock_sync: bool) -> JitterConfig {
    let timeout = 5000 * MS;
    JitterConfig {
        control: ControlMode::V1,
        request: request(ControlOp::UdpJitter, 16384, JitterConfig::control_duration(timeout, packets, 20 * MS)),
        sequence: 0x6e,
        packets,
        interval: 20 * MS,
        size: 32,
        format: JitterFormat::Udp(precision),
        timeout,
        threshold: 5000 * MS,
        clock_sync,
        voice: None,
        pattern: vec![0xab, 0xcd],
    }
}

/// Scenario A (ms precision): control out 10 ms / back 15 ms, so probes start at t = 25 ms,
/// 20 ms apart. Probe out delays 10, 10, 30, lost, 10 ms; back 15 ms; responder processing 1 ms.
fn scenario_a() -> Script {
    Box::new(|dir, peer, n| match (dir, peer) {
        (Dir::Out, Peer::Control) => vec![10 * MS],
        (Dir::Back, Peer::Control) => vec![15 * MS],
        (Dir::Out, Peer::Probe) => match n {
            3 => vec![30 * MS],
            4 => vec![],
            _ => vec![10 * MS],
        },
        (_, Peer::Probe | Peer::Connect) => vec![15 * MS],
    })
}

#[test]
fn ms_jitter_hand_computed() {
    let mut sim = Sim::new(scenario_a());
    let mut op = JitterOp::new(sim.t0, jitter_cfg(5, Precision::Ms, true));
    let r = sim.run(&mut op);
    let st = &r.stats;
    assert_eq!(r.return_code, ReturnCode::Ok);
    assert_eq!((st.sent, st.received), (5, 4));
    // RTT = out + back with the 1 ms processing removed: 25, 25, 45, 25
    assert_eq!((st.rtt.min, st.rtt.max), (25_000_000, 45_000_000));
    assert_eq!(st.rtt.sum, 120_000_000);
    let sd = st.one_way_sd.unwrap();
    assert_eq!((sd.min, sd.max, sd.sum), (10_000_000, 30_000_000, 60_000_000));
    let ds = st.one_way_ds.unwrap();
    assert_eq!((ds.min, ds.max, ds.sum), (15_000_000, 15_000_000, 60_000_000));
    // SD jitter 0, +20, −20; DS all 0
    assert_eq!((st.jitter_sd.positive.count, st.jitter_sd.positive.max), (2, 20_000_000));
    assert_eq!((st.jitter_sd.negative.count, st.jitter_sd.negative.max), (1, 20_000_000));
    assert_eq!((st.jitter_ds.positive.count, st.jitter_ds.positive.max, st.jitter_ds.negative.count), (3, 0, 0));
    // probe 4 never reached the responder: its counter says so
    assert_eq!((st.loss_sd, st.loss_ds, st.loss_mia), (1, 0, 0));
    assert_eq!(r.stamps.rx_kernel, 4);
    // the control message is the one IOS sends for this operation (g711alaw capture, seq 0x6e,
    // 16384, 5000 + 5 × 20 ms), target rewritten to 127.0.0.1
    let mut want = hex::decode("016e0034000000000004001000000000 7f000001 4000 1388".replace(' ', "")).unwrap();
    want[22..24].copy_from_slice(&5100u16.to_be_bytes());
    want.extend_from_slice(&[0, 1, 0, 28]);
    want.resize(52, 0);
    assert_eq!(sim.control_sent, vec![want]);
}

/// Scenario A's events, in the order a live display gets them: each probe sent, each reply as it
/// arrives with its four times (T2 on the responder's clock, T3 = T2 + its 1 ms processing), and
/// probe 4 lost once its 5 s timeout has passed, after the others' replies.
#[test]
fn events_follow_each_probe_as_it_happens() {
    let mut sim = Sim::new(scenario_a());
    let mut op = JitterOp::new(sim.t0, jitter_cfg(5, Precision::Ms, true));
    sim.run(&mut op);
    let events: Vec<ProbeEvent> = std::iter::from_fn(|| op.poll_event()).collect();
    let words: Vec<String> = events
        .iter()
        .map(|e| match e {
            ProbeEvent::Sent { seq, .. } => format!("S{seq}"),
            ProbeEvent::Reply { sample, one_way: true } => format!("R{}", sample.seq),
            ProbeEvent::Reply { sample, one_way: false } => format!("R{}?", sample.seq),
            ProbeEvent::Lost { seq } => format!("L{seq}"),
        })
        .collect();
    assert_eq!(words.join(" "), "S1 S2 R1 S3 R2 S4 S5 R3 R5 L4");
    let at = |ms: i64| sim.wall0.as_nanos() as i64 + ms * 1_000_000;
    let ProbeEvent::Reply { sample: r1, .. } = events[2] else { panic!("{:?}", events[2]) };
    assert_eq!((r1.t1, r1.t2, r1.t3, r1.t4), (at(25), Some(at(35)), Some(at(36)), at(51)));
    assert_eq!(events[0], ProbeEvent::Sent { seq: 1, t1: sim.wall0 + 25 * MS });
    // the result's samples carry the same times
    let ProbeEvent::Reply { sample: r3, .. } = events[7] else { panic!("{:?}", events[7]) };
    assert_eq!((r3.t1, r3.t2, r3.t3, r3.t4), (at(65), Some(at(95)), Some(at(96)), at(111)));
    assert_eq!(op.result().samples[2], r3);
    // and the probe no reply answered keeps its send time
    assert_eq!(op.result().lost, vec![LostProbe { seq: 4, t1: at(85) }]);
}

#[test]
fn ms_jitter_across_midnight() {
    // Same scenario, starting 50 ms before midnight: T1..T4 wrap, the statistics do not.
    let mut sim = Sim::new(scenario_a());
    sim.wall0 = Duration::from_secs(1_725_235_200) - 50 * MS;
    let mut op = JitterOp::new(sim.t0, jitter_cfg(5, Precision::Ms, true));
    let st = sim.run(&mut op).stats;
    assert_eq!((st.rtt.min, st.rtt.max, st.rtt.sum), (25_000_000, 45_000_000, 120_000_000));
    assert_eq!(st.one_way_sd.unwrap().sum, 60_000_000);
    assert_eq!(st.loss_sd, 1);
}

#[test]
fn processing_time_is_removed() {
    for processing in [0, 7, 40] {
        let mut sim = Sim::new(constant(10 * MS, 15 * MS));
        sim.processing = processing * MS;
        let mut op = JitterOp::new(sim.t0, jitter_cfg(3, Precision::Ms, true));
        let st = sim.run(&mut op).stats;
        assert_eq!((st.rtt.min, st.rtt.max), (25_000_000, 25_000_000), "processing {processing} ms");
        assert_eq!(st.one_way_ds.unwrap().max, 15_000_000);
    }
}

#[test]
fn us_jitter_with_unsynchronised_clocks() {
    // out 1.234567 ms, back 0.5 ms, processing 37 µs; responder clock 3 s ahead.
    let mut sim = Sim::new(constant(Duration::from_nanos(1_234_567), Duration::from_micros(500)));
    sim.processing = Duration::from_micros(37);
    sim.offset = 3_000_000_000;
    let mut op = JitterOp::new(sim.t0, jitter_cfg(10, Precision::Us, false));
    let r = sim.run(&mut op);
    let st = &r.stats;
    assert_eq!(r.precision, Precision::Us);
    assert_eq!(st.received, 10);
    // RTT exact to the NTP resolution (2^-32 s): 1.734567 ms
    assert!((st.rtt.min - 1_734_567).abs() <= 2 && (st.rtt.max - 1_734_567).abs() <= 2, "{:?}", st.rtt);
    assert_eq!(st.one_way_sd, None, "unsynchronised: one-way unavailable");
    // the 3 s offset cancels in jitter
    assert!(st.jitter_sd.positive.max <= 2 && st.jitter_sd.negative.max <= 2, "{:?}", st.jitter_sd);
    // responder counter via the type-3 legacy layout
    assert_eq!((st.loss_sd, st.loss_ds, st.loss_mia), (0, 0, 0));
}

#[test]
fn reorder_duplicate_late_and_tail() {
    // 6 probes 20 ms apart from t = 10 ms, 5 ms each way, timeout 100 ms. Probe 2 out 50 ms
    // (overtaken by 3 and 4 at the responder); reply 1 duplicated; reply 4 back 120 ms (arrives at
    // 196 ms, 126 ms after it left: late, but before the operation ends at 110 + 100 ms); reply 6
    // lost on the way back (the tail: direction unknown).
    let script: Script = Box::new(|dir, peer, n| match (dir, peer, n) {
        (Dir::Out, Peer::Probe, 2) => vec![50 * MS],
        (Dir::Back, Peer::Probe, 1) => vec![5 * MS, 6 * MS],
        (Dir::Back, Peer::Probe, 4) => vec![120 * MS],
        (Dir::Back, Peer::Probe, 6) => vec![],
        _ => vec![5 * MS],
    });
    let mut sim = Sim::new(script);
    let mut cfg = jitter_cfg(6, Precision::Ms, false);
    cfg.timeout = 100 * MS;
    let mut op = JitterOp::new(sim.t0, cfg);
    let st = sim.run(&mut op).stats;
    // arrivals at the source: p1, p1 again, p3, p2, p5, p4 (late)
    assert_eq!(st.duplicates, 1);
    assert_eq!(st.out_of_sequence, 2, "p2 after p3, p4 after p5");
    assert_eq!(st.late, 1, "p4's reply after the 100 ms timeout");
    assert_eq!(st.received, 4);
    assert_eq!((st.loss_sd, st.loss_ds, st.loss_mia, st.tail_drop), (0, 0, 1, 1));
    assert_eq!(st.loss_sd + st.loss_ds + st.loss_mia, st.sent - st.received - st.late);
}

#[test]
fn control_unanswered_is_no_connection_with_same_sequence() {
    let script: Script =
        Box::new(|dir, peer, _| if (dir, peer) == (Dir::Out, Peer::Control) { vec![] } else { vec![MS] });
    let mut sim = Sim::new(script);
    let mut op = JitterOp::new(sim.t0, jitter_cfg(5, Precision::Ms, false));
    let r = sim.run(&mut op);
    assert_eq!(r.return_code, ReturnCode::NoConnection);
    assert_eq!(sim.control_sent.len(), 3);
    assert!(sim.control_sent.iter().all(|m| m == &sim.control_sent[0]), "a retry keeps the sequence");
    assert_eq!(r.stats.sent, 0);
    let to: SocketAddr = "127.0.0.1:1967".parse().unwrap();
    assert_eq!(r.cause, Some(Cause::ControlUnanswered { to, requests: 3, waited_ms: 5000 }));
    assert_eq!(
        r.cause.unwrap().to_string(),
        "no answer from 127.0.0.1:1967 to 3 control requests in 5 s: is a responder running there and allowed through?"
    );
}

#[test]
fn a_refused_control_message_ends_the_run_with_its_cause() {
    let t0 = Instant::now();
    let mut op = JitterOp::new(t0, jitter_cfg(5, Precision::Ms, false));
    let mut buf = [0u8; 256];
    let wall = Duration::from_secs(1_700_000_000);
    assert_eq!(op.poll_transmit(t0, wall, &mut buf).map(|t| t.peer), Some(Peer::Control));
    let to: SocketAddr = "127.0.0.1:1967".parse().unwrap();
    op.handle_refused(t0 + MS, to);
    assert!(op.is_done(), "no retry can be answered: nothing listens");
    let r = op.result();
    assert_eq!((r.return_code, r.cause), (ReturnCode::NoConnection, Some(Cause::Refused { to })));
    assert_eq!(op.poll_transmit(t0 + 2 * MS, wall, &mut buf), None);
}

#[test]
fn a_rejected_control_request_names_the_responder() {
    let mut sim = Sim::new(constant(MS, MS));
    sim.binder.busy.insert(16384);
    let mut cfg = jitter_cfg(4, Precision::Us, false);
    cfg.control = ControlMode::V2(None);
    let mut op = JitterOp::new(sim.t0, cfg);
    let r = sim.run(&mut op);
    assert_eq!(r.return_code, ReturnCode::PortInUse);
    assert_eq!(r.cause, Some(Cause::ControlRejected { to: "127.0.0.1:1967".parse().unwrap() }));
}

#[test]
fn v2_control_auth_and_port_selection() {
    let mut sim = Sim::new(constant(MS, MS));
    sim.responder = Responder::new(ResponderConfig {
        keys: [(3, b"k".to_vec())].into_iter().collect(),
        port_range: 40000..=40000,
        ..ResponderConfig::default()
    });
    let mut cfg = jitter_cfg(4, Precision::Us, false);
    cfg.control = ControlMode::V2(Some(V2Auth { mode: AuthMode::HmacSha256, key_id: 3, secret: b"k".to_vec() }));
    cfg.request.port = 0;
    let mut op = JitterOp::new(sim.t0, cfg.clone());
    let r = sim.run(&mut op);
    assert_eq!(r.return_code, ReturnCode::Ok);
    assert_eq!(op.probe_port(), 40000, "the port the responder chose");
    assert_eq!(r.stats.received, 4);
    // RFC layout: u32 responder counter at 56
    assert_eq!((r.stats.loss_sd, r.stats.loss_ds), (0, 0));

    // wrong secret: the responder answers auth failure
    let mut sim = Sim::new(constant(MS, MS));
    sim.responder = Responder::new(ResponderConfig {
        keys: [(3, b"other".to_vec())].into_iter().collect(),
        ..ResponderConfig::default()
    });
    let mut op = JitterOp::new(sim.t0, cfg);
    assert_eq!(sim.run(&mut op).return_code, ReturnCode::AuthFailure);
}

#[test]
fn v2_port_in_use() {
    let mut sim = Sim::new(constant(MS, MS));
    sim.binder.busy.insert(16384);
    let mut cfg = jitter_cfg(4, Precision::Us, false);
    cfg.control = ControlMode::V2(None);
    let mut op = JitterOp::new(sim.t0, cfg);
    assert_eq!(sim.run(&mut op).return_code, ReturnCode::PortInUse);
}

#[test]
fn voice_scores_fall_with_loss() {
    let mut mos = Vec::new();
    for lost_every in [0u32, 20, 8, 4] {
        let script: Script = Box::new(move |dir, peer, n| {
            if dir == Dir::Out && peer == Peer::Probe && lost_every > 0 && n % lost_every == 0 {
                vec![]
            } else {
                vec![20 * MS]
            }
        });
        let mut sim = Sim::new(script);
        let mut cfg = jitter_cfg(100, Precision::Ms, false);
        cfg.voice = Some(VoiceConfig {
            codec: crate::voice::Codec::G711alaw,
            model: crate::voice::MosModel::EModel,
            advantage: 0,
        });
        cfg.size = 172;
        let mut op = JitterOp::new(sim.t0, cfg);
        let r = sim.run(&mut op);
        mos.push((r.voice.unwrap().mos, r.voice.unwrap().icpif));
    }
    // 0 %, 5 %, 12 % (≥ 10 %: the MIB floor), 25 %
    assert_eq!(mos[2], (1.0, 93));
    assert_eq!(mos[3], (1.0, 93));
    assert!(mos[0].0 > mos[1].0, "{mos:?}");
    assert!(mos[0].1 < mos[1].1, "{mos:?}");
}

#[test]
fn udp_echo_and_verify_error() {
    let mut sim = Sim::new(constant(3 * MS, 4 * MS));
    let cfg = EchoConfig {
        format: EchoFormat::Udp,
        control: ControlMode::V1,
        request: request(ControlOp::UdpEcho, 42518, 5000 * MS),
        sequence: 0x69,
        size: 16,
        pattern: vec![0xab, 0xcd],
        timeout: 5000 * MS,
        threshold: 5000 * MS,
    };
    let mut op = EchoOp::new(sim.t0, cfg.clone());
    let r = sim.run(&mut op);
    assert_eq!(r.return_code, ReturnCode::Ok);
    // no responder timestamps in type 1: RTT includes the 1 ms the responder took
    assert_eq!(r.stats.rtt.max, 8_000_000);
    // the v1 request is the udp_echo capture's, target rewritten
    let mut want = hex::decode("016900340000000000020010000000007f000001a6161388").unwrap();
    want.extend_from_slice(&[0, 1, 0, 28]);
    want.resize(52, 0);
    assert_eq!(sim.control_sent, vec![want]);

    // a reply that differs from the probe is a verify error
    let mut sim = Sim::new(constant(MS, MS));
    sim.processing = MS;
    let mut op = EchoOp::new(sim.t0, cfg);
    let mut buf = vec![0u8; 256];
    let now = sim.t0;
    let t = op.poll_transmit(now, sim.wall(now), &mut buf).unwrap();
    assert_eq!(t.peer, Peer::Control);
    let mut ok = buf[..24].to_vec();
    ok[3] = 24;
    op.handle_datagram(now, Peer::Control, RxTime { wall: sim.wall(now), kernel: false }, &ok);
    let t = op.poll_transmit(now, sim.wall(now), &mut buf).unwrap();
    assert_eq!(t.peer, Peer::Probe);
    buf[5] ^= 0xff;
    op.handle_datagram(now + MS, Peer::Probe, RxTime { wall: sim.wall(now + MS), kernel: false }, &buf[..t.len]);
    op.handle_timeout(now + 6000 * MS);
    assert_eq!(op.result().return_code, ReturnCode::VerifyError);
}

#[test]
fn icmp_jitter_hand_computed() {
    // 10 timestamp requests 20 ms apart, no control. Out 4 ms, back 6 ms, the target takes 1 ms
    // between its receive and transmit stamps; request 5 is lost, reply 8 is lost.
    let script: Script = Box::new(|dir, _, n| match (dir, n) {
        (Dir::Out, 5) | (Dir::Back, 8) => vec![],
        (Dir::Out, _) => vec![4 * MS],
        (Dir::Back, _) => vec![6 * MS],
    });
    let mut sim = Sim::new(script);
    let mut cfg = jitter_cfg(10, Precision::Ms, true);
    cfg.control = ControlMode::None;
    cfg.format = JitterFormat::IcmpTimestamp { ident: 0x4242 };
    let mut op = JitterOp::new(sim.t0, cfg);
    let r = sim.run(&mut op);
    let st = &r.stats;
    assert_eq!(r.return_code, ReturnCode::Ok);
    assert_eq!((st.sent, st.received), (10, 8));
    // RTT = 4 + 6 with the 1 ms at the target removed
    assert_eq!((st.rtt.min, st.rtt.max), (10_000_000, 10_000_000));
    assert_eq!(st.one_way_sd.unwrap().max, 4_000_000);
    assert_eq!(st.one_way_ds.unwrap().max, 6_000_000);
    // no receive counter in ICMP: the direction of a loss is unknown
    assert_eq!((st.loss_sd, st.loss_ds, st.loss_mia), (0, 0, 2));
    assert_eq!(st.jitter_sd.count(), 7);
}

#[test]
fn icmp_echo_rtt() {
    let mut sim = Sim::new(constant(2 * MS, 3 * MS));
    let cfg = EchoConfig {
        format: EchoFormat::Icmp { v6: false, ident: 13, seq: 1 },
        control: ControlMode::None,
        request: request(ControlOp::UdpEcho, 0, 5000 * MS),
        sequence: 0,
        size: 28,
        pattern: vec![0xab, 0xcd],
        timeout: 5000 * MS,
        threshold: 4 * MS,
    };
    let mut op = EchoOp::new(sim.t0, cfg);
    let r = sim.run(&mut op);
    // 2 + 1 (target) + 3 ms, over the 4 ms threshold
    assert_eq!(r.stats.rtt.max, 6_000_000);
    assert_eq!(r.return_code, ReturnCode::OverThreshold);
    assert_eq!(r.stats.over_threshold, 1);
}

#[test]
fn tcp_connect_after_v1_control() {
    use super::tcp::{TcpConfig, TcpConnectOp};
    let cfg = TcpConfig {
        control: ControlMode::V1,
        request: request(ControlOp::TcpConnect, 42518, 5000 * MS),
        sequence: 0x74,
        timeout: 5000 * MS,
        threshold: 5000 * MS,
    };
    let t0 = Instant::now();
    let wall = Duration::from_secs(1_725_184_800);
    let mut op = TcpConnectOp::new(t0, cfg.clone());
    let mut buf = [0u8; 256];
    let t = op.poll_transmit(t0, wall, &mut buf).unwrap();
    // the tcp_connect capture's request, target rewritten
    let mut want = hex::decode("017400340000000000030010000000007f000001a6161388").unwrap();
    want.extend_from_slice(&[0, 1, 0, 28]);
    want.resize(52, 0);
    assert_eq!(&buf[..t.len], &want[..]);
    let mut reply = want[..24].to_vec();
    reply[3] = 24;
    op.handle_datagram(t0 + MS, Peer::Control, RxTime { wall: wall + MS, kernel: true }, &reply);
    let t = op.poll_transmit(t0 + MS, wall + MS, &mut buf).unwrap();
    assert_eq!((t.peer, op.probe_port()), (Peer::Connect, 42518));
    op.handle_connected(t0 + 3 * MS, RxTime { wall: wall + 3 * MS, kernel: false }, true);
    let r = op.result();
    assert_eq!((r.return_code, r.stats.rtt.max), (ReturnCode::Ok, 2_000_000));

    // refused → no connection; nothing at all → timeout
    let mut op = TcpConnectOp::new(t0, TcpConfig { control: ControlMode::None, ..cfg.clone() });
    op.poll_transmit(t0, wall, &mut buf).unwrap();
    op.handle_connected(t0 + MS, RxTime { wall, kernel: false }, false);
    assert_eq!(op.result().return_code, ReturnCode::NoConnection);
    let mut op = TcpConnectOp::new(t0, TcpConfig { control: ControlMode::None, ..cfg });
    op.poll_transmit(t0, wall, &mut buf).unwrap();
    op.handle_timeout(t0 + 5000 * MS);
    assert_eq!(op.result().return_code, ReturnCode::Timeout);
}

#[test]
fn v2_authenticated_retry_after_a_lost_reply_is_accepted() {
    // Found in review: a retry carried a fresh timestamp, so the responder saw a replay.
    let lost_first = std::rc::Rc::new(std::cell::Cell::new(false));
    let flag = lost_first.clone();
    let script: Script = Box::new(move |dir, peer, _| {
        if (dir, peer) == (Dir::Back, Peer::Control) && !flag.get() {
            flag.set(true);
            return vec![];
        }
        vec![MS]
    });
    let mut sim = Sim::new(script);
    sim.responder = Responder::new(ResponderConfig {
        keys: [(3, b"k".to_vec())].into_iter().collect(),
        ..ResponderConfig::default()
    });
    let mut cfg = jitter_cfg(3, Precision::Us, false);
    cfg.control = ControlMode::V2(Some(V2Auth { mode: AuthMode::HmacSha256, key_id: 3, secret: b"k".to_vec() }));
    let mut op = JitterOp::new(sim.t0, cfg);
    let r = sim.run(&mut op);
    assert!(lost_first.get());
    assert_eq!(sim.control_sent.len(), 2);
    assert_eq!(sim.control_sent[0], sim.control_sent[1], "the retry is the same message");
    assert_eq!(r.return_code, ReturnCode::Ok);
}

#[test]
fn a_flood_of_duplicate_replies_is_counted_not_stored() {
    // Found in review: every copy was stored and walked once per gap.
    let t0 = Instant::now();
    let wall = Duration::from_secs(1_725_184_800);
    let mut cfg = jitter_cfg(3, Precision::Ms, false);
    cfg.control = ControlMode::None;
    let mut op = JitterOp::new(t0, cfg);
    let mut buf = [0u8; 64];
    let t = op.poll_transmit(t0, wall, &mut buf).unwrap();
    let mut reply = buf[..t.len].to_vec();
    reply[15] = 1;
    for k in 1..3u32 {
        assert!(op.poll_transmit(t0 + 20 * MS * k, wall + 20 * MS * k, &mut buf).is_some());
    }
    for _ in 0..10_000 {
        op.handle_datagram(t0 + MS, Peer::Probe, RxTime { wall: wall + MS, kernel: true }, &reply);
    }
    op.handle_timeout(t0 + 10_000 * MS);
    let r = op.result();
    assert_eq!(r.stats.duplicates, 9_999);
    assert!(r.samples.len() <= 2 * 3, "originals plus at most one stored copy per probe sent: {}", r.samples.len());
}

#[test]
fn icmp_processing_time_saturates() {
    // Found in review: a target claiming 70 s between receive and transmit wrapped modulo 65536.
    let t0 = Instant::now();
    let wall = Duration::from_secs(1_725_184_800);
    let mut cfg = jitter_cfg(1, Precision::Ms, true);
    cfg.control = ControlMode::None;
    cfg.format = JitterFormat::IcmpTimestamp { ident: 9 };
    let mut op = JitterOp::new(t0, cfg);
    let mut buf = [0u8; 64];
    let t = op.poll_transmit(t0, wall, &mut buf).unwrap();
    let mut reply = buf[..t.len].to_vec();
    reply[0] = icmp::TIMESTAMP_REPLY;
    reply[2..4].fill(0);
    let rx = ipsla_wire::time::ms_since_midnight(wall);
    reply[12..16].copy_from_slice(&rx.to_be_bytes());
    reply[16..20].copy_from_slice(&(rx + 70_000).to_be_bytes());
    op.handle_datagram(t0 + 2 * MS, Peer::Probe, RxTime { wall: wall + 2 * MS, kernel: true }, &reply);
    op.handle_timeout(t0 + 10_000 * MS);
    let st = op.result().stats;
    assert_eq!(st.rtt.max, (2 - 65_535) * 1_000_000, "clamped at 65535 ms, not wrapped to +65538");
}
