//! Loopback tests of the real responder (`spawn_responder` on ephemeral control ports).
//! Captured exchanges come from reference §(b), with the target 192.168.12.2 rewritten to
//! 127.0.0.1 and the port rewritten to one this test owns; only time-dependent fields are masked.

use ipsla_core::responder::{PermanentKind, Reject, ResponderConfig};
use ipsla_net::responder::{ResponderOptions, RunningResponder, spawn_responder};
use ipsla_wire::cisco::control_v2::{AuthMode, AuthRepr, ControlV2, ControlV2Repr, Status, UdpMeasurementRepr};
use ipsla_wire::time::{NtpTimestamp, ms_diff, ms_since_midnight};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn start(core: ResponderConfig) -> RunningResponder {
    start_with(ResponderOptions { listen: vec![LO], v1_port: 0, v2_port: 0, core, ..ResponderOptions::default() })
}

fn start_with(opts: ResponderOptions) -> RunningResponder {
    spawn_responder(opts).expect("responder starts")
}

fn v1_addr(r: &RunningResponder) -> SocketAddr {
    r.control_v1_addrs()[0]
}

fn client(ip: [u8; 4]) -> UdpSocket {
    let s = UdpSocket::bind(SocketAddr::from((ip, 0))).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    s
}

fn v1_request(seq: u8, op: u8, port: u16, dur: u16) -> Vec<u8> {
    let mut r = hex::decode(
        format!("01{seq:02x}003400000000 00{op:02x}0010 00000000 7f000001 {port:04x}{dur:04x} 0001001c")
            .replace(' ', ""),
    )
    .unwrap();
    r.resize(52, 0);
    r
}

fn exchange(s: &UdpSocket, to: SocketAddr, msg: &[u8]) -> Option<Vec<u8>> {
    s.send_to(msg, to).unwrap();
    let mut buf = [0u8; 2048];
    match s.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

fn wall_ms() -> u32 {
    ms_since_midnight(SystemTime::now().duration_since(UNIX_EPOCH).unwrap())
}

#[test]
fn voice_jitter_exchange_matches_ios_capture() {
    // g711alaw: control seq 0x6e, type 4, port 16384 → here 11384, 5400 ms; then 20 pairs of
    // 172-byte type-2 probes from the control's source port.
    let r = start(ResponderConfig::default());
    let c = client([127, 0, 0, 1]);
    let req = v1_request(0x6e, 4, 11384, 5400);
    let rep = exchange(&c, v1_addr(&r), &req).expect("control reply");
    let mut want = req[..24].to_vec();
    want[3] = 0x18;
    assert_eq!(rep, want, "reply = request[0..24] with length 24");
    for i in 1..=20u16 {
        let t1 = wall_ms();
        let mut p = vec![0u8; 172];
        p[1] = 2;
        p[4..8].copy_from_slice(&t1.to_be_bytes());
        p[12..14].copy_from_slice(&i.to_be_bytes());
        for (j, b) in p[16..].iter_mut().enumerate() {
            *b = [0xab, 0xcd][j % 2];
        }
        let got = exchange(&c, SocketAddr::new(LO, 11384), &p).expect("probe reply");
        let t4 = wall_ms();
        assert_eq!(got.len(), 172);
        let rseq = u16::from_be_bytes([got[14], got[15]]);
        assert_eq!(rseq, i, "responder counter 1..20");
        let t2 = u32::from_be_bytes(got[8..12].try_into().unwrap());
        assert!(ms_diff(t2, t1) >= 0 && ms_diff(t4, t2) >= 0, "T1 {t1} <= T2 {t2} <= T4 {t4}");
        let proc_ms = u16::from_be_bytes([got[2], got[3]]);
        assert!(u32::from(proc_ms) <= ms_diff(t4, t1) as u32, "processing {proc_ms} ms within the RTT");
        let mut masked = got.clone();
        masked[2..4].fill(0);
        masked[8..12].fill(0);
        masked[14..16].fill(0);
        assert_eq!(masked, p, "only the responder fields change");
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = r.status().unwrap();
    assert_eq!(st.stats.probes_answered, 20);
    assert_eq!(st.stats.rx_stamps_kernel, 20, "kernel receive stamps in use");
    // self-diagnostics: both stamps of every reply, kernel after userspace on the send side,
    // userspace after kernel on the receive side
    assert_eq!((st.rx_user_minus_kernel.count, st.tx_kernel_minus_user.count), (20, 20));
    assert!(st.rx_user_minus_kernel.sum_ns > 0 && st.tx_kernel_minus_user.sum_ns > 0, "{st:?}");
}

#[test]
fn udp_echo_capture_then_port_closes() {
    let r = start(ResponderConfig::default());
    let control = client([127, 0, 0, 1]);
    // IOS capture: control from 50300, probe from 60038: different source ports.
    let req = v1_request(0x69, 2, 11518, 5000);
    let mut want = req[..24].to_vec();
    want[3] = 0x18;
    assert_eq!(exchange(&control, v1_addr(&r), &req).unwrap(), want);
    let prober = client([127, 0, 0, 1]);
    let probe = hex::decode("00010000abcdabcdabcdabcdabcdabcd").unwrap();
    assert_eq!(exchange(&prober, SocketAddr::new(LO, 11518), &probe).unwrap(), probe, "echoed byte-identical");
    // Cisco closes the echo port after the answer: a second probe gets nothing.
    assert_eq!(exchange(&prober, SocketAddr::new(LO, 11518), &probe), None);
    // and the port is free again on this host
    std::thread::sleep(Duration::from_millis(50));
    assert!(UdpSocket::bind((LO, 11518)).is_ok());
}

#[test]
fn session_expiry_closes_port_and_refresh_resets_sequence() {
    let r = start(ResponderConfig::default());
    let c = client([127, 0, 0, 1]);
    let port = 11600;
    let probe = |seq: u16| {
        let mut p = vec![0u8; 32];
        p[1] = 2;
        p[12..14].copy_from_slice(&seq.to_be_bytes());
        p
    };
    assert!(exchange(&c, v1_addr(&r), &v1_request(1, 4, port, 400)).is_some());
    let a = exchange(&c, SocketAddr::new(LO, port), &probe(1)).unwrap();
    let b = exchange(&c, SocketAddr::new(LO, port), &probe(2)).unwrap();
    assert_eq!((a[15], b[15]), (1, 2));
    // repeat the request: the counter restarts at 1
    assert!(exchange(&c, v1_addr(&r), &v1_request(2, 4, port, 400)).is_some());
    let a = exchange(&c, SocketAddr::new(LO, port), &probe(3)).unwrap();
    assert_eq!(a[15], 1);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(exchange(&c, SocketAddr::new(LO, port), &probe(4)), None, "closed after its duration");
    assert!(r.status().unwrap().sessions.is_empty());
    assert!(UdpSocket::bind((LO, port)).is_ok(), "port released");
}

#[test]
fn tcp_connect_responder_sends_fin_first() {
    let r = start(ResponderConfig::default());
    let c = client([127, 0, 0, 1]);
    assert!(exchange(&c, v1_addr(&r), &v1_request(0x74, 3, 11700, 2000)).is_some());
    for _ in 0..2 {
        let mut s = TcpStream::connect((LO, 11700)).expect("handshake");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut b = [0u8; 8];
        // We send nothing; the read ends with EOF because the responder closed first.
        assert_eq!(s.read(&mut b).unwrap(), 0, "FIN from the responder");
    }
    assert_eq!(r.status().unwrap().stats.tcp_accepts, 2);
}

fn v2_request(seq: u32, mode: AuthMode, key: u16, meas_src_port: u16, port: u16, ts: NtpTimestamp) -> Vec<u8> {
    let r = ControlV2Repr {
        status: Status::Success,
        sequence: seq,
        timestamp: ts,
        auth: AuthRepr { status: Status::Success, mode, key_id: key, long: Some(([9; 16], [0; 32])) },
        measurement: Some(UdpMeasurementRepr {
            status: Status::Success,
            role: 1,
            session_id: 0,
            control_src: LO,
            control_dst: LO,
            meas_src: LO,
            meas_dst: LO,
            control_src_port: 0,
            meas_src_port,
            meas_dst_port: port,
            duration_ms: 2000,
        }),
    };
    let mut b = vec![0u8; r.buffer_len()];
    r.emit(&mut b);
    ControlV2::new_checked(&mut b[..]).unwrap().sign(mode, b"k1-secret");
    b
}

#[test]
fn v2_authenticated_session_with_type3_probes() {
    let mut core = ResponderConfig::default();
    core.keys.insert(1, b"k1-secret".to_vec());
    core.require_auth = true;
    let r = start(core);
    let v2 = r.control_v2_addrs()[0];
    let c = client([127, 0, 0, 1]);
    let meas = client([127, 0, 0, 1]);
    let meas_port = meas.local_addr().unwrap().port();
    let now = NtpTimestamp::from_unix(SystemTime::now().duration_since(UNIX_EPOCH).unwrap());
    let req = v2_request(5, AuthMode::HmacSha256, 1, meas_port, 0, now);
    let rep = exchange(&c, v2, &req).unwrap();
    let view = ControlV2::new_checked(&rep[..]).unwrap();
    assert!(view.verify(AuthMode::HmacSha256, b"k1-secret"), "reply signed with the same key");
    let parsed = ControlV2Repr::parse(&view).unwrap();
    assert_eq!(parsed.status, Status::Success);
    let port = parsed.measurement.unwrap().meas_dst_port;
    assert!(port >= 1024, "responder chose a port for port 0: {port}");
    // type 3, RFC layout, from the declared measurement port
    let mut p = vec![0u8; 124];
    p[1] = 3;
    let t1 = NtpTimestamp::from_unix(SystemTime::now().duration_since(UNIX_EPOCH).unwrap());
    p[4..12].copy_from_slice(&t1.0.to_be_bytes());
    p[52..56].copy_from_slice(&1u32.to_be_bytes());
    let got = exchange(&meas, SocketAddr::new(LO, port), &p).unwrap();
    let t4 = NtpTimestamp::from_unix(SystemTime::now().duration_since(UNIX_EPOCH).unwrap());
    let t2 = NtpTimestamp(u64::from_be_bytes(got[12..20].try_into().unwrap()));
    let t3 = NtpTimestamp(u64::from_be_bytes(got[20..28].try_into().unwrap()));
    assert!(t2.diff_nanos(t1) >= 0 && t3.diff_nanos(t2) >= 0 && t4.diff_nanos(t3) >= 0, "T1 <= T2 <= T3 <= T4");
    assert_eq!(&got[56..60], &[0, 0, 0, 1]);
    // the session is bound to the declared measurement source port: another port gets nothing
    let other = client([127, 0, 0, 1]);
    assert_eq!(exchange(&other, SocketAddr::new(LO, port), &p), None);

    // wrong key → auth failure status, no port
    let mut bad = v2_request(6, AuthMode::HmacSha256, 1, meas_port, 11800, now);
    ControlV2::new_checked(&mut bad[..]).unwrap().sign(AuthMode::HmacSha256, b"not-it");
    let rep = exchange(&c, v2, &bad).unwrap();
    assert_eq!(ControlV2Repr::parse(&ControlV2::new_checked(&rep[..]).unwrap()).unwrap().status, Status::AuthFailure);
    // a correctly signed request with an older sequence than the accepted 5 is a replay
    let old = v2_request(4, AuthMode::HmacSha256, 1, meas_port, 11801, now);
    let rep = exchange(&c, v2, &old).unwrap();
    assert_eq!(ControlV2Repr::parse(&ControlV2::new_checked(&rep[..]).unwrap()).unwrap().status, Status::AuthFailure);
    let st = r.status().unwrap();
    assert_eq!(st.stats.rejects.get(&Reject::AuthFailed), Some(&1));
    assert_eq!(st.stats.rejects.get(&Reject::Replay), Some(&1));
    assert!(UdpSocket::bind((LO, 11800)).is_ok() && UdpSocket::bind((LO, 11801)).is_ok(), "no port opened on failure");
}

#[test]
fn acl_and_rate_limit_reject_without_reply() {
    let core = ResponderConfig {
        allow: vec!["127.0.0.0/30".parse().unwrap()],
        control_rate: 1.0,
        control_burst: 2,
        ..ResponderConfig::default()
    };
    let r = start(core);
    let outsider = client([127, 0, 0, 9]);
    assert_eq!(exchange(&outsider, v1_addr(&r), &v1_request(1, 4, 11900, 1000)), None);
    let c = client([127, 0, 0, 2]);
    assert!(exchange(&c, v1_addr(&r), &v1_request(1, 4, 11900, 1000)).is_some());
    assert!(exchange(&c, v1_addr(&r), &v1_request(2, 4, 11900, 1000)).is_some());
    assert_eq!(
        exchange(&c, v1_addr(&r), &v1_request(3, 4, 11900, 1000)),
        None,
        "third within a second is over the burst"
    );
    let st = r.status().unwrap();
    assert_eq!(st.stats.rejects.get(&Reject::NotAllowed), Some(&1));
    assert_eq!(st.stats.rejects.get(&Reject::RateLimited), Some(&1));
}

#[test]
fn port_in_use_by_another_program_is_refused() {
    let r = start(ResponderConfig::default());
    let _squatter = UdpSocket::bind((LO, 11950)).unwrap();
    let c = client([127, 0, 0, 1]);
    assert_eq!(exchange(&c, v1_addr(&r), &v1_request(1, 4, 11950, 1000)), None);
    assert_eq!(r.status().unwrap().stats.rejects.get(&Reject::PortInUse), Some(&1));
}

#[test]
fn permanent_ports_answer_without_control() {
    let opts = ResponderOptions {
        listen: vec![LO],
        v1_port: 0,
        v2_port: 0,
        permanent: vec![
            (PermanentKind::UdpEcho, SocketAddr::new(LO, 12007)),
            (PermanentKind::UdpJitter, SocketAddr::new(LO, 12008)),
            (PermanentKind::TcpConnect, SocketAddr::new(LO, 12009)),
        ],
        ..ResponderOptions::default()
    };
    let r = start_with(opts);
    let c = client([127, 0, 0, 1]);
    // service_udp_echo capture: 100-byte type-1 probe with the aabbccdd pattern, echoed verbatim
    let mut echo = vec![0, 1, 0, 0];
    echo.extend(std::iter::repeat_n([0xaa, 0xbb, 0xcc, 0xdd], 24).flatten());
    for _ in 0..3 {
        assert_eq!(exchange(&c, SocketAddr::new(LO, 12007), &echo).unwrap(), echo, "stays open");
    }
    let mut p = vec![0u8; 32];
    p[1] = 2;
    p[13] = 1;
    assert_eq!(exchange(&c, SocketAddr::new(LO, 12008), &p).unwrap()[15], 1);
    p[13] = 2;
    assert_eq!(exchange(&c, SocketAddr::new(LO, 12008), &p).unwrap()[15], 2);
    let mut s = TcpStream::connect((LO, 12009)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(s.read(&mut [0u8; 4]).unwrap(), 0);
    // a control message cannot take a permanent port
    assert_eq!(exchange(&c, v1_addr(&r), &v1_request(1, 4, 12008, 1000)), None);
}

#[test]
fn five_thousand_concurrent_sessions_all_answered() {
    // 50 source addresses × 100 sessions, each on its own port: the scale IOS users reach
    // (cmouse/ip-sla-responder#10).
    let core = ResponderConfig { port_range: 20000..=24999, ..ResponderConfig::default() };
    let r = start(core);
    let clients: Vec<UdpSocket> = (1..=50u8).map(|i| client([127, 0, 1, i])).collect();
    let port = |ci: usize, j: usize| 20000 + (ci * 100 + j) as u16;
    let mut buf = [0u8; 256];
    // control phase, one client at a time so that no socket buffer overflows
    for (ci, c) in clients.iter().enumerate() {
        for j in 0..100 {
            c.send_to(&v1_request(j as u8, 4, port(ci, j), 30_000), v1_addr(&r)).unwrap();
        }
        for _ in 0..100 {
            let (n, _) = c.recv_from(&mut buf).expect("control reply");
            assert_eq!(n, 24);
        }
    }
    let st = r.status().unwrap();
    assert_eq!(st.sessions.len(), 5000, "all sessions active at once");
    // probe phase: one type-2 probe to each of the 5000 ports
    let started = Instant::now();
    let mut answered = 0;
    for (ci, c) in clients.iter().enumerate() {
        let mut p = vec![0u8; 32];
        p[1] = 2;
        p[13] = 1;
        for j in 0..100 {
            c.send_to(&p, SocketAddr::new(LO, port(ci, j))).unwrap();
        }
        for _ in 0..100 {
            let (n, from) = c.recv_from(&mut buf).expect("probe reply");
            assert_eq!((n, buf[15]), (32, 1));
            assert!((20000..25000).contains(&from.port()));
            answered += 1;
        }
    }
    assert_eq!(answered, 5000);
    let st = r.status().unwrap();
    assert_eq!(st.stats.probes_answered, 5000);
    eprintln!("5000 probes answered in {:?}", started.elapsed());
}

#[test]
fn ipv6_v1_jitter_session() {
    // The one known IPv6 v1 frame: TLV type 8, length 32, u32 duration at TLV offset 28.
    let Ok(c) = UdpSocket::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    };
    c.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let r = start_with(ResponderOptions {
        listen: vec!["::1".parse().unwrap()],
        v1_port: 0,
        v2_port: 0,
        ..ResponderOptions::default()
    });
    let mut req = hex::decode(concat!(
        "013c004400000000",
        "0008002000000000",
        "00000000000000000000000000000001",
        "3138000000001b58",
        "0001001c"
    ))
    .unwrap();
    req.resize(68, 0);
    let rep = exchange(&c, v1_addr(&r), &req).expect("reply");
    assert_eq!(rep.len(), 40);
    assert_eq!(&rep[..2], &req[..2]);
    assert_eq!(&rep[2..4], &[0, 40]);
    assert_eq!(&rep[4..], &req[4..40]);
    let mut p = vec![0u8; 32];
    p[1] = 2;
    p[13] = 1;
    let got = exchange(&c, "[::1]:12600".parse().unwrap(), &p).expect("probe reply over IPv6");
    assert_eq!(got[15], 1);
}
