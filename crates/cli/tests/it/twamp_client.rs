//! `ipsla probe twamp` and `ipsla probe twamp-light` on loopback.
//!
//! The TWAMP server here is written in the test with std sockets and the wire API (greeting,
//! Token check, encrypted control stream, one session, a stateful reflector), so the client is
//! checked against the RFC layouts and crypto rather than against our own server. It records
//! what it saw: control HMACs that verified, test packets whose HMAC verified, the request and
//! Stop-Sessions fields. TWAMP-Light runs against `ipsla responder --stamp` (a STAMP reflector
//! answers TWAMP-Light senders, reference §5.2) and against a reflector that sends twampy's
//! 38-octet replies.

use crate::common::{Killed, free_udp, ipsla, wait_udp, wall_ntp as wall};
use ipsla_wire::time::ErrorEstimate;
use ipsla_wire::twamp::control::{
    AcceptSessionRepr, RequestTwSession, RequestTwSessionRepr, SERVER_START_ENCRYPTED, ServerGreetingRepr,
    ServerStartRepr, SetUpResponse, SetUpResponseRepr, StartAckRepr, StartSessions, StopSessions, StopSessionsRepr,
};
use ipsla_wire::twamp::crypto::{
    ControlOpener, ControlSealer, SessionKeys, TestCrypto, TestKeys, derive_key, open_token,
};
use ipsla_wire::twamp::test::{ReflectorRepr, SenderPacket, SenderRepr, TestLayout};
use ipsla_wire::twamp::{Accept, Modes, Sid};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const PASSPHRASE: &[u8] = b"testsecret";
const CHALLENGE: [u8; 16] = [0x7a; 16];
const SALT: [u8; 16] = [0x2f; 16];

/// What the in-test server saw.
#[derive(Debug, Default)]
struct Seen {
    /// The Mode of the Set-Up-Response (0 = the client gave up).
    mode: u32,
    key_id: String,
    /// Client control messages whose HMAC verified (protected modes) or that parsed (open).
    control_ok: u32,
    request: Option<RequestTwSessionRepr>,
    /// The source of the test packets.
    sender: Option<SocketAddr>,
    test_packets: u32,
    test_sizes: Vec<usize>,
    /// Test packets whose HMAC verified (authenticated/encrypted).
    test_hmac_ok: u32,
    test_hmac_bad: u32,
    stop: Option<StopSessionsRepr>,
}

struct Server {
    port: u16,
    handle: JoinHandle<Seen>,
}

impl Server {
    fn join(self) -> Seen {
        self.handle.join().expect("server thread")
    }
}

fn read_msg(s: &mut TcpStream, n: usize) -> Option<Vec<u8>> {
    let mut b = vec![0u8; n];
    s.read_exact(&mut b).ok()?;
    Some(b)
}

/// A TWAMP server offering `modes` for one connection, knowing `alice` with `passphrase`.
fn server(modes: Modes, passphrase: &'static [u8]) -> Server {
    server_answering(modes, passphrase, Accept::Ok)
}

/// The same, answering the session request with `session`.
fn server_answering(modes: Modes, passphrase: &'static [u8], session: Accept) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let mut seen = Seen::default();
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut g = [0u8; 64];
        ServerGreetingRepr { modes, challenge: CHALLENGE, salt: SALT, count: 1024 }.emit(&mut g);
        s.write_all(&g).unwrap();
        let Some(setup) = read_msg(&mut s, 164) else { return seen };
        let setup = SetUpResponseRepr::parse(&SetUpResponse::new_checked(&setup[..]).unwrap()).unwrap();
        seen.mode = setup.mode.0;
        seen.key_id = String::from_utf8_lossy(setup.key_id.as_bytes()).into_owned();
        let Some(sec) = setup.mode.security_mode() else { return seen };
        let server_iv = [0x55u8; 16];
        let mut keys: Option<SessionKeys> = None;
        let mut accept = Accept::Ok;
        if sec.protects_control() {
            let dk = derive_key(passphrase, &SALT, 1024).unwrap();
            match open_token(&dk, &setup.token, &CHALLENGE) {
                Ok(k) if seen.key_id == "alice" => keys = Some(k),
                _ => accept = Accept::Failure, // twampd: "Invalid challenge encryption"
            }
        }
        let mut opener = keys.as_ref().map(|k| ControlOpener::new(k, &setup.client_iv));
        let mut sealer = keys.as_ref().map(|k| ControlSealer::new(k, &server_iv));
        let mut ss = [0u8; 48];
        ServerStartRepr { accept, server_iv, start_time: wall() }.emit(&mut ss);
        if let Some(sl) = &mut sealer {
            sl.encrypt_blocks(&mut ss[SERVER_START_ENCRYPTED]).unwrap();
        }
        s.write_all(&ss).unwrap();
        if !accept.is_ok() {
            return seen;
        }
        let mut open = |m: &mut Vec<u8>, seen: &mut Seen| match &mut opener {
            Some(o) => {
                if o.open(m).is_ok() {
                    seen.control_ok += 1;
                }
            }
            None => seen.control_ok += 1,
        };
        let mut seal = |mut m: Vec<u8>| {
            if let Some(sl) = &mut sealer {
                sl.seal(&mut m).unwrap();
            }
            m
        };
        let Some(mut req) = read_msg(&mut s, 112) else { return seen };
        open(&mut req, &mut seen);
        let request = RequestTwSessionRepr::parse(&RequestTwSession::new_checked(&req[..]).unwrap()).unwrap();
        seen.request = Some(request);
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp_port = udp.local_addr().unwrap().port();
        let sid = Sid::from_parts([127, 0, 0, 1], wall(), [1, 2, 3, 4]);
        let mut acc = vec![0u8; 48];
        let port = if session.is_ok() { udp_port } else { 0 };
        AcceptSessionRepr { accept: session, port, sid, reflected_octets: 0, server_octets: 0 }.emit(&mut acc);
        s.write_all(&seal(acc)).unwrap();
        if !session.is_ok() {
            // the client closes without Start-Sessions
            seen.stop =
                read_msg(&mut s, 32).map(|_| StopSessionsRepr { accept: Accept::Failure, number_of_sessions: 99 });
            return seen;
        }
        let Some(mut start) = read_msg(&mut s, 32) else { return seen };
        open(&mut start, &mut seen);
        assert!(StartSessions::new_checked(&start[..]).is_ok(), "Start-Sessions");
        let mut ack = vec![0u8; 32];
        StartAckRepr { accept: Accept::Ok }.emit(&mut ack);
        s.write_all(&seal(ack)).unwrap();

        // the Session-Reflector, until Stop-Sessions
        let crypto = keys.as_ref().and_then(|k| TestCrypto::new(sec, &TestKeys::derive(k, &sid)));
        let stop_flag = Arc::new(AtomicBool::new(false));
        let refl = {
            let stop_flag = stop_flag.clone();
            std::thread::spawn(move || reflect(udp, sec.test_layout(), crypto, &stop_flag))
        };
        let stop = read_msg(&mut s, 32);
        stop_flag.store(true, Ordering::SeqCst);
        let r = refl.join().unwrap();
        (seen.sender, seen.test_packets, seen.test_sizes, seen.test_hmac_ok, seen.test_hmac_bad) = r;
        if let Some(mut stop) = stop {
            open(&mut stop, &mut seen);
            seen.stop = StopSessions::new_checked(&stop[..]).ok().and_then(|p| StopSessionsRepr::parse(&p).ok());
        }
        seen
    });
    Server { port, handle }
}

type Reflected = (Option<SocketAddr>, u32, Vec<usize>, u32, u32);

/// A stateful Session-Reflector (RFC 5357 §4.2.1): own counter, reply as long as the request.
fn reflect(udp: UdpSocket, layout: TestLayout, crypto: Option<TestCrypto>, stop: &AtomicBool) -> Reflected {
    udp.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let (mut from, mut n, mut sizes, mut ok, mut bad) = (None, 0u32, Vec::new(), 0u32, 0u32);
    let mut buf = vec![0u8; 65_536];
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let Ok((len, src)) = udp.recv_from(&mut buf) else { continue };
        let t2 = wall();
        from = Some(src);
        sizes.push(len);
        let pkt = &mut buf[..len];
        if let Some(c) = &crypto {
            if c.open_sender(pkt).is_err() {
                bad += 1;
                continue;
            }
            ok += 1;
        }
        let Ok(s) = SenderPacket::new_checked(&*pkt, layout).and_then(|p| SenderRepr::parse(&p)) else { continue };
        let out_len = len.max(layout.reflector_len());
        let mut out = vec![0u8; out_len];
        ReflectorRepr {
            layout,
            sequence: n,
            timestamp: wall(),
            error_estimate: ErrorEstimate::UNSYNCED_DEFAULT,
            receive_timestamp: t2,
            sender_sequence: s.sequence,
            sender_timestamp: s.timestamp,
            sender_error_estimate: s.error_estimate,
            sender_ttl: None,
            padding_len: out_len - layout.reflector_len(),
        }
        .emit(&mut out);
        if let Some(c) = &crypto {
            c.seal_reflector(&mut out).unwrap();
        }
        n += 1;
        let _ = udp.send_to(&out, src);
    }
    (from, n, sizes, ok, bad)
}

fn key_file(dir: &Path) -> PathBuf {
    let p = dir.join("twamp.pfs");
    std::fs::write(&p, format!("# twampd pass-phrase file\nalice\t{}\n", hex::encode(PASSPHRASE))).unwrap();
    p
}

fn run_probe(op: &str, port: u16, extra: &[&str]) -> Output {
    ipsla()
        .args(["probe", op, "127.0.0.1", "--port", &port.to_string(), "--json"])
        .args(["--packets", "5", "--interval", "20ms", "--timeout", "3s"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn json(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().next().unwrap_or("")).unwrap_or_else(|e| {
        panic!("{e}: stdout {text} stderr {}", String::from_utf8_lossy(&out.stderr));
    })
}

fn assert_clean(d: &Value, op: &str) {
    assert_eq!(d["operation"], op);
    assert_eq!(d["return_code"], "ok", "{d}");
    assert_eq!((d["sent"].as_u64(), d["received"].as_u64()), (Some(5), Some(5)), "{d}");
    assert_eq!(d["unexpected"], 0);
    let loss = &d["loss"];
    assert_eq!((loss["sd"].as_u64(), loss["ds"].as_u64(), loss["mia"].as_u64()), (Some(0), Some(0), Some(0)));
    assert_eq!(d["rtt_us"]["count"], 5);
    let (min, max) = (d["rtt_us"]["min"].as_f64().unwrap(), d["rtt_us"]["max"].as_f64().unwrap());
    assert!(min > 0.0 && max < 1_000_000.0, "loopback RTT {min}..{max} µs");
    assert_eq!(d["jitter_us"]["sd"]["count"], 4);
}

#[test]
fn open_mode_session() {
    let _machine = crate::common::shared();
    let srv = server(Modes(0x0f), PASSPHRASE);
    let out = run_probe("twamp", srv.port, &[]);
    let d = json(&out);
    assert_clean(&d, "twamp");
    assert_eq!(d["control"], "twamp");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen = srv.join();
    assert_eq!(seen.mode, 1, "open mode asked for");
    assert_eq!(seen.control_ok, 3, "request, Start-Sessions, Stop-Sessions");
    let req = seen.request.unwrap();
    assert_eq!(req.padding_length, 27);
    assert_eq!(req.timeout.to_interval(), Duration::from_secs(2));
    assert_eq!(Some(req.sender_port), seen.sender.map(|s| s.port()), "the request names the socket that sends");
    assert_eq!((seen.test_packets, seen.test_sizes), (5, vec![41; 5]));
    let stop = seen.stop.expect("Stop-Sessions");
    assert_eq!((stop.accept, stop.number_of_sessions), (Accept::Ok, 1));
}

#[test]
fn protected_modes_verify_at_the_server() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let kf = key_file(dir.path());
    for (mode, bit, size, test_hmacs) in [("auth", 2, 112, 5), ("encrypted", 4, 112, 5), ("mixed", 8, 41, 0)] {
        let srv = server(Modes(0x0f), PASSPHRASE);
        let kf = kf.to_str().unwrap();
        let out = run_probe("twamp", srv.port, &["--mode", mode, "--key-id", "alice", "--secret-file", kf]);
        let d = json(&out);
        assert_clean(&d, "twamp");
        let seen = srv.join();
        assert_eq!((seen.mode, seen.key_id.as_str()), (bit, "alice"), "{mode}");
        assert_eq!(seen.control_ok, 3, "{mode}: every client HMAC verified");
        assert_eq!(seen.test_sizes, vec![size; 5], "{mode}");
        assert_eq!((seen.test_hmac_ok, seen.test_hmac_bad), (test_hmacs, 0), "{mode}");
        assert_eq!(seen.stop.map(|s| s.number_of_sessions), Some(1));
    }
}

#[test]
fn open_only_server_refuses_auth() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let kf = key_file(dir.path());
    let srv = server(Modes::UNAUTHENTICATED, PASSPHRASE);
    let out = ipsla()
        .args(["probe", "twamp", "127.0.0.1", "--port", &srv.port.to_string(), "--json", "--mode", "auth"])
        .args(["--key-id", "alice", "--secret-file"])
        .arg(&kf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ipsla probe twamp: no common security mode: the server offers open, we allow auth"),
        "{stderr}"
    );
    assert_eq!(json(&out)["return_code"], "error");
    assert_eq!(srv.join().mode, 0, "the client said so with Mode 0");
}

#[test]
fn wrong_secret_is_an_auth_failure() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let kf = key_file(dir.path());
    let srv = server(Modes(0x07), b"another secret");
    let out = ipsla()
        .args(["probe", "twamp", "127.0.0.1", "--port", &srv.port.to_string(), "--json", "--mode", "encrypted"])
        .args(["--key-id", "alice", "--secret-file"])
        .arg(&kf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out)["return_code"], "auth_failure");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the server refused the set-up (Accept 1") && stderr.contains("wrong key id or secret"));
    assert_eq!(srv.join().mode, 4);
}

#[test]
fn refused_session_is_an_error() {
    let _machine = crate::common::shared();
    let srv = server_answering(Modes(0x01), PASSPHRASE, Accept::TemporaryResourceLimitation);
    let out = run_probe("twamp", srv.port, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out)["return_code"], "error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the server refused the session (Accept 5: temporary resource limitation)"), "{stderr}");
    let seen = srv.join();
    assert!(seen.request.is_some());
    assert!(seen.stop.is_none(), "nothing more after a refusal: no Start-Sessions, no Stop-Sessions");
}

#[test]
fn no_server_is_no_connection() {
    let _machine = crate::common::shared();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port(); // closed again
    let out = run_probe("twamp", port, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out)["return_code"], "no_connection");
    assert!(String::from_utf8_lossy(&out.stderr).contains("connecting to 127.0.0.1"));
}

#[test]
fn light_against_the_stamp_reflector() {
    let _machine = crate::common::shared();
    for (stateful_refl, stateful_probe) in [(false, false), (true, true)] {
        let port = free_udp();
        let mut cmd = ipsla();
        cmd.args(["responder", "--no-v1", "--no-v2", "--stamp", &format!("127.0.0.1:{port}")]);
        if stateful_refl {
            cmd.arg("--stamp-stateful");
        }
        let _r = Killed(cmd.stderr(Stdio::null()).spawn().unwrap());
        wait_udp(port);
        let extra: &[&str] = if stateful_probe { &["--stateful"] } else { &[] };
        let d = json(&run_probe("twamp-light", port, extra));
        assert_clean(&d, "twamp-light");
        assert_eq!(d["control"], "none");
    }
}

#[test]
fn light_with_short_replies() {
    let _machine = crate::common::shared();
    // twampy's reflector: 38-octet replies, no MBZ and no Sender TTL, its Seq a copy of ours
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let t = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            udp.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let mut buf = [0u8; 2048];
            let mut sizes = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                let Ok((len, src)) = udp.recv_from(&mut buf) else { continue };
                sizes.push(len);
                let s =
                    SenderRepr::parse(&SenderPacket::new_checked(&buf[..len], TestLayout::Unauthenticated).unwrap())
                        .unwrap();
                let mut out = [0u8; 41];
                let ts = wall();
                ReflectorRepr {
                    layout: TestLayout::Unauthenticated,
                    sequence: s.sequence,
                    timestamp: ts,
                    error_estimate: ErrorEstimate(0x3fff),
                    receive_timestamp: ts,
                    sender_sequence: s.sequence,
                    sender_timestamp: s.timestamp,
                    sender_error_estimate: s.error_estimate,
                    sender_ttl: None,
                    padding_len: 0,
                }
                .emit(&mut out);
                let _ = udp.send_to(&out[..38], src);
            }
            sizes
        })
    };
    let out = run_probe("twamp-light", port, &["--padding", "0"]);
    stop.store(true, Ordering::SeqCst);
    let sizes = t.join().unwrap();
    assert_clean(&json(&out), "twamp-light");
    assert_eq!(sizes, vec![14; 5], "unpadded TWAMP-Light packets");
}

#[test]
fn usage_errors() {
    let _machine = crate::common::shared();
    let out = ipsla().args(["probe", "twamp", "127.0.0.1", "--mode", "auth"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--key-id: mode auth needs --key-id (an identity of --secret-file)")
    );
    let out = ipsla().args(["probe", "twamp-light", "127.0.0.1", "--padding", "70000"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--padding: 70000 is out of range"));
}
