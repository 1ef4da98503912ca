//! Authentication attacks on one running `ipsla responder`: wrong and unknown keys and replays on
//! RFC 6812 v2 control, STAMP packets with one bit flipped, TWAMP-Control with a wrong secret, an
//! unknown KeyID and a mode the server does not offer. Each is refused with its protocol's own
//! status, counted exactly, and logged at a bounded rate (a few lines per reason per window,
//! however many arrive).

use crate::common::{
    Killed, PATIENCE, free_tcp, free_udp, ipsla, n, responder_status, wait_for, wait_tcp, wait_udp, wall_ntp as wall,
};
use ipsla_wire::cisco::control_v2::{AuthMode, AuthRepr, ControlV2, ControlV2Repr, Status, UdpMeasurementRepr};
use ipsla_wire::stamp::packet::{ReflectorPacket, ReflectorRepr, SenderPacket, StampMode};
use ipsla_wire::time::NtpTimestamp;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const V2_KEY_ID: u16 = 7;
const V2_SECRET: &[u8] = b"s3cret";
const STAMP_KEY_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// `alice` / "testsecret", the identity of reference §3.4.
const TWAMP_KEYS: &str = "alice 74657374736563726574\n";
/// Lines per reason per 10 s window (ipsla_core::ratelimit::RejectLog).
const LOG_PER_WINDOW: usize = 5;

struct Responder {
    _child: Killed,
    v2: u16,
    stamp: u16,
    twamp: u16,
    status: PathBuf,
    log: PathBuf,
    started: Instant,
}

fn start(dir: &Path) -> Responder {
    let keys = dir.join("keys.toml");
    std::fs::write(&keys, format!("[[key]]\nid = {V2_KEY_ID}\nsecret = \"s3cret\"\n")).unwrap();
    let stamp_key = dir.join("stamp.key");
    std::fs::write(&stamp_key, STAMP_KEY_HEX).unwrap();
    let twamp_keys = dir.join("twamp.pfs");
    std::fs::write(&twamp_keys, TWAMP_KEYS).unwrap();
    let (v2, stamp, twamp) = (free_udp(), free_udp(), free_tcp());
    let status = dir.join("status.sock");
    let log = dir.join("responder.log");
    let child = ipsla()
        .args(["responder", "--listen", "127.0.0.1", "--no-v1", "--v2-port", &v2.to_string(), "--keys"])
        .arg(&keys)
        .args(["--stamp", &format!("127.0.0.1:{stamp}"), "--stamp-key-file"])
        .arg(&stamp_key)
        .args(["--twamp", &format!("127.0.0.1:{twamp}"), "--twamp-modes", "auth,encrypted", "--twamp-keys"])
        .arg(&twamp_keys)
        .arg("--status-socket")
        .arg(&status)
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let child = Killed(child);
    wait_udp(v2);
    wait_udp(stamp);
    wait_tcp(twamp);
    Responder { _child: child, v2, stamp, twamp, status, log, started: Instant::now() }
}

fn v2_request(seq: u32, key_id: u16, port: u16, ts: NtpTimestamp, secret: &[u8]) -> Vec<u8> {
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let r = ControlV2Repr {
        status: Status::Success,
        sequence: seq,
        timestamp: ts,
        auth: AuthRepr {
            status: Status::Success,
            mode: AuthMode::HmacSha256,
            key_id,
            long: Some(([0x5a; 16], [0; 32])),
        },
        measurement: Some(UdpMeasurementRepr {
            status: Status::Success,
            role: 1,
            session_id: 0,
            control_src: lo,
            control_dst: lo,
            meas_src: lo,
            meas_dst: lo,
            control_src_port: 0,
            meas_src_port: 40000,
            meas_dst_port: port,
            duration_ms: 3000,
        }),
    };
    let mut b = vec![0u8; r.buffer_len()];
    r.emit(&mut b);
    ControlV2::new_checked(&mut b[..]).unwrap().sign(AuthMode::HmacSha256, secret);
    b
}

/// Sends a v2 request and returns the reply's status (every request here gets a reply).
fn v2_exchange(sock: &UdpSocket, port: u16, req: &[u8]) -> Status {
    sock.send_to(req, ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 2048];
    let len = sock.recv(&mut buf).expect("a v2 reply within 5 s");
    ControlV2Repr::parse(&ControlV2::new_checked(&buf[..len]).unwrap()).unwrap().status
}

fn stamp_packet(seq: u32, key: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 112];
    b[..4].copy_from_slice(&seq.to_be_bytes());
    let mut p = SenderPacket::new_unchecked(&mut b[..], StampMode::Authenticated);
    p.set_ssid(4660);
    p.sign(key);
    b
}

/// A TWAMP-Control connection answering the greeting with `mode`: the Server-Start's Accept.
fn twamp_setup_accept(port: u16, mode: u32) -> u8 {
    let mut t = TcpStream::connect(("127.0.0.1", port)).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut greeting = [0u8; 64];
    t.read_exact(&mut greeting).unwrap();
    let offered = u32::from_be_bytes(greeting[12..16].try_into().unwrap());
    assert_eq!(offered & 0xf, 2 | 4, "the greeting offers authenticated and encrypted only");
    // Set-Up-Response (RFC 4656 §3.1): Mode, KeyID (80), Token (64), Client-IV (16)
    let mut setup = [0u8; 164];
    setup[..4].copy_from_slice(&mode.to_be_bytes());
    t.write_all(&setup).unwrap();
    let mut start = [0u8; 48];
    t.read_exact(&mut start).unwrap();
    start[15]
}

/// `ipsla probe twamp` in authenticated mode as `key_id` with `secret`: its return code.
fn twamp_probe(dir: &Path, port: u16, key_id: &str, secret: &str) -> String {
    let f = dir.join(format!("{key_id}-{secret}.pfs"));
    std::fs::write(&f, format!("{key_id} {}\n", hex::encode(secret))).unwrap();
    let out = ipsla()
        .args(["probe", "twamp", "127.0.0.1", "--port", &port.to_string(), "--mode", "auth", "--key-id", key_id])
        .arg("--secret-file")
        .arg(&f)
        .args(["--packets", "1", "--timeout", "2s", "--json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let d: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("null")).unwrap();
    d["return_code"].as_str().unwrap_or_default().to_string()
}

/// Log lines that carry every one of `needles`.
fn log_lines(log: &Path, needles: &[&str]) -> usize {
    std::fs::read_to_string(log).unwrap().lines().filter(|l| needles.iter().all(|n| l.contains(n))).count()
}

#[test]
fn authentication_attacks_are_refused_counted_and_logged_at_a_bounded_rate() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path());

    // RFC 6812 v2 control: each refusal is a reply with Status 2 (authentication failure)
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let port = free_udp();
    for seq in 1..=40 {
        assert_eq!(v2_exchange(&sock, r.v2, &v2_request(seq, V2_KEY_ID, port, wall(), b"wrong")), Status::AuthFailure);
        assert_eq!(v2_exchange(&sock, r.v2, &v2_request(seq, 8, port, wall(), V2_SECRET)), Status::AuthFailure);
    }
    // replays: every signed message a listener captured, sent again after newer ones
    let captured: Vec<Vec<u8>> = (0..20).map(|i| v2_request(1000 + i, V2_KEY_ID, port, wall(), V2_SECRET)).collect();
    for m in &captured {
        assert_eq!(v2_exchange(&sock, r.v2, m), Status::Success);
    }
    for m in &captured[..19] {
        assert_eq!(v2_exchange(&sock, r.v2, m), Status::AuthFailure, "a replayed older message");
    }
    // the newest one again is the sender's own retry (a lost reply): it refreshes the same session
    assert_eq!(v2_exchange(&sock, r.v2, &captured[19]), Status::Success);
    // signed long ago (outside the 60 s window), whatever its sequence
    let long_ago = crate::common::wall() - Duration::from_secs(120);
    for i in 0..20 {
        let stale = v2_request(2000 + i, V2_KEY_ID, port, NtpTimestamp::from_unix(long_ago), V2_SECRET);
        assert_eq!(v2_exchange(&sock, r.v2, &stale), Status::AuthFailure, "a stale timestamp");
    }
    // the same sequence and timestamp as the newest accepted message with another body
    let ts = wall();
    assert_eq!(v2_exchange(&sock, r.v2, &v2_request(3000, V2_KEY_ID, port, ts, V2_SECRET)), Status::Success);
    let other = v2_request(3000, V2_KEY_ID, port + 1, ts, V2_SECRET);
    assert_eq!(v2_exchange(&sock, r.v2, &other), Status::AuthFailure, "same sequence, other body");

    // STAMP authenticated mode: one flipped bit anywhere in the packet, and no reply
    let key = hex::decode(STAMP_KEY_HEX).unwrap();
    let stamp = UdpSocket::bind("127.0.0.1:0").unwrap();
    stamp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reply = [0u8; 256];
    stamp.send_to(&stamp_packet(0, &key), ("127.0.0.1", r.stamp)).unwrap();
    assert_eq!(stamp.recv(&mut reply).expect("a reply to a well-signed packet"), 112);
    let mut rng = rand::rngs::StdRng::seed_from_u64(8762);
    for seq in 1..=50 {
        let mut p = stamp_packet(seq, &key);
        let bit = rng.random_range(0..112 * 8);
        p[bit / 8] ^= 1 << (bit % 8);
        stamp.send_to(&p, ("127.0.0.1", r.stamp)).unwrap();
    }
    stamp.send_to(&stamp_packet(51, &key), ("127.0.0.1", r.stamp)).unwrap();
    let len = stamp.recv(&mut reply).expect("the next well-signed packet is answered");
    let answered =
        ReflectorRepr::parse(&ReflectorPacket::new_checked(&reply[..len], StampMode::Authenticated).unwrap());
    assert_eq!(answered.unwrap().sender_sequence, 51, "only that one");

    // TWAMP-Control: a mode the server forbids gets Accept 3; a wrong secret and an unknown
    // KeyID get Accept 1, which the client reports as an authentication failure
    for _ in 0..30 {
        assert_eq!(twamp_setup_accept(r.twamp, 1), 3, "open mode is not offered: Accept 3 (not supported)");
    }
    for _ in 0..3 {
        assert_eq!(twamp_probe(dir.path(), r.twamp, "alice", "not-the-secret"), "auth_failure");
    }
    for _ in 0..2 {
        assert_eq!(twamp_probe(dir.path(), r.twamp, "mallory", "testsecret"), "auth_failure");
    }

    // counted exactly (once the last refusal is counted: the client may see it first)
    wait_for("the TWAMP refusals to be counted", PATIENCE, || {
        let t = &responder_status(&r.status)["twamp_stats"]["server"];
        n(&t["rejected_mode"]) + n(&t["rejected_bad_token"]) + n(&t["rejected_unknown_key_id"]) >= 35
    });
    let st = responder_status(&r.status);
    let rej = &st["stats"]["rejects"];
    assert_eq!((n(&rej["auth_failed"]), n(&rej["replay"])), (80, 40), "{rej}");
    assert_eq!(n(&st["stats"]["control_accepted"]), 22);
    let s = &st["stamp_stats"];
    assert_eq!((n(&s["received"]), n(&s["replied"]), n(&s["drop_bad_hmac"])), (52, 2, 50), "{s}");
    let t = &st["twamp_stats"]["server"];
    assert_eq!(
        (n(&t["rejected_mode"]), n(&t["rejected_bad_token"]), n(&t["rejected_unknown_key_id"])),
        (30, 3, 2),
        "{t}"
    );
    assert_eq!(n(&t["sessions_accepted"]), 0, "{t}");

    // logged, but at most a few lines per reason per 10 s window however many arrived
    let windows = (r.started.elapsed().as_secs() / 10 + 1) as usize;
    let bound = windows * (LOG_PER_WINDOW + 1);
    for (needles, events) in [
        (&["control message rejected", "auth_failed"][..], 80),
        (&["control message rejected", "replay"][..], 40),
        (&["STAMP packet HMAC failed"][..], 50),
        (&["mode not offered"][..], 30),
        (&["wrong shared secret"][..], 3),
        (&["unknown KeyID"][..], 2),
    ] {
        let lines = log_lines(&r.log, needles);
        let want = events.min(LOG_PER_WINDOW);
        eprintln!("{needles:?}: {lines} log lines for {events} events");
        assert!(lines >= want && lines <= bound.min(events), "{needles:?}: {lines} lines for {events} events");
    }
}
