//! The TWAMP server of `ipsla responder` on loopback, driven by a minimal control client written
//! here with the wire API only (std sockets, no code from the client side of the project): open,
//! authenticated and encrypted sessions with their test packets, the Server-Start Accept of
//! every negotiation failure, the connection limit, TWAMP-Light, the status output, and a tshark
//! capture that must decode every message (skipped, saying so, when tshark is absent).

use crate::common::{Killed, PATIENCE, free_tcp, free_udp, ipsla, wall};
use ipsla_core::twamp::KeyFile;
use ipsla_core::twamp::server::ServerConfig;
use ipsla_net::responder::{ResponderOptions, RunningResponder, spawn_responder};
use ipsla_wire::time::{ErrorEstimate, NtpTimestamp};
use ipsla_wire::twamp::control::{
    AcceptSession, AcceptSessionRepr, KeyId, RequestTwSessionRepr, ServerGreeting, ServerGreetingRepr, ServerStart,
    SetUpResponseRepr, StartAck, StartSessionsRepr, StopSessionsRepr,
};
use ipsla_wire::twamp::crypto::{
    ControlOpener, ControlSealer, SessionKeys, TestCrypto, TestKeys, derive_key, encrypt_token,
};
use ipsla_wire::twamp::test::{ReflectorPacket, ReflectorRepr, SenderRepr, TestLayout};
use ipsla_wire::twamp::{Accept, Modes, SecurityMode, Sid, TypeP};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

const SECRET: &[u8] = b"testsecret";

fn responder(cfg: ServerConfig, light: bool, light_stateful: bool) -> RunningResponder {
    let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
    spawn_responder(ResponderOptions {
        v1_enabled: false,
        v2_enabled: false,
        twamp: vec![lo],
        twamp_config: cfg,
        twamp_light: if light { vec![lo] } else { vec![] },
        twamp_light_stateful: light_stateful,
        ..ResponderOptions::default()
    })
    .unwrap()
}

fn secure_config(modes: Modes) -> ServerConfig {
    ServerConfig { modes, keys: KeyFile::single("alice", SECRET), ..ServerConfig::default() }
}

/// What the connection attempt ended with.
enum Setup {
    /// Server-Start Accept 0.
    Up(Box<Ctl>),
    /// Server-Start with this Accept.
    Rejected(Accept),
    /// Greeting with Modes 0.
    Refused,
}

/// A TWAMP-Control client: the wire API over a blocking TcpStream.
struct Ctl {
    s: TcpStream,
    mode: SecurityMode,
    keys: Option<SessionKeys>,
    sealer: Option<ControlSealer>,
    opener: Option<ControlOpener>,
}

impl Ctl {
    fn connect(addr: SocketAddr, mode: Modes, id: &str, secret: &[u8]) -> Setup {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut g = [0u8; 64];
        s.read_exact(&mut g).unwrap();
        let greeting = ServerGreetingRepr::parse(&ServerGreeting::new_checked(&g[..]).unwrap()).unwrap();
        if greeting.modes.is_empty() {
            let mut rest = Vec::new();
            assert_eq!(s.read_to_end(&mut rest).unwrap(), 0, "closed after a Modes 0 greeting");
            return Setup::Refused;
        }
        assert_eq!(greeting.count, 2048);
        let keys = SessionKeys { aes: rand::random(), hmac: rand::random() };
        let client_iv: [u8; 16] = rand::random();
        let sec = mode.security_mode().unwrap();
        let token = if sec.protects_control() {
            encrypt_token(&derive_key(secret, &greeting.salt, greeting.count).unwrap(), &greeting.challenge, &keys)
        } else {
            [0; 64]
        };
        let mut m = vec![0u8; 164];
        SetUpResponseRepr { mode, key_id: KeyId::new(id.as_bytes()).unwrap(), token, client_iv }.emit(&mut m);
        s.write_all(&m).unwrap();
        let mut ss = [0u8; 48];
        s.read_exact(&mut ss).unwrap();
        let accept = ServerStart::new_checked(&ss[..]).unwrap().accept();
        if !accept.is_ok() {
            let mut rest = Vec::new();
            assert_eq!(s.read_to_end(&mut rest).unwrap(), 0, "closed after the rejection");
            return Setup::Rejected(accept);
        }
        let mut ctl = Ctl { s, mode: sec, keys: None, sealer: None, opener: None };
        if sec.protects_control() {
            let mut opener = ControlOpener::new(&keys, ss[16..32].try_into().unwrap());
            opener.decrypt_blocks(&mut ss[32..48]).unwrap();
            ctl.sealer = Some(ControlSealer::new(&keys, &client_iv));
            ctl.opener = Some(opener);
            ctl.keys = Some(keys);
        }
        let start = ServerStart::new_checked(&ss[..]).unwrap().start_time();
        let started = start.to_unix().unwrap();
        assert!(started <= wall() && wall() - started < Duration::from_secs(600), "Start-Time: {start:?}");
        Setup::Up(Box::new(ctl))
    }

    fn up(addr: SocketAddr, mode: Modes, id: &str, secret: &[u8]) -> Ctl {
        match Self::connect(addr, mode, id, secret) {
            Setup::Up(c) => *c,
            Setup::Rejected(a) => panic!("set-up rejected with {a:?}"),
            Setup::Refused => panic!("refused"),
        }
    }

    fn send(&mut self, mut m: Vec<u8>) {
        if let Some(s) = &mut self.sealer {
            s.seal(&mut m).unwrap();
        }
        self.s.write_all(&m).unwrap();
    }

    fn recv(&mut self, n: usize) -> Vec<u8> {
        let mut m = vec![0u8; n];
        self.s.read_exact(&mut m).unwrap();
        if let Some(o) = &mut self.opener {
            o.open(&mut m).expect("the server's control HMAC verifies");
        }
        m
    }

    fn request(&mut self, sender_port: u16, padding: u32) -> AcceptSessionRepr {
        self.request_with_timeout(sender_port, padding, Duration::from_secs(2))
    }

    fn request_with_timeout(&mut self, sender_port: u16, padding: u32, timeout: Duration) -> AcceptSessionRepr {
        let r = RequestTwSessionRepr {
            sender_address: "127.0.0.1".parse().unwrap(),
            receiver_address: "0.0.0.0".parse().unwrap(),
            conf_sender: 0,
            conf_receiver: 0,
            schedule_slots: 0,
            packets: 0,
            sender_port,
            receiver_port: 0,
            sid: Sid::default(),
            padding_length: padding,
            start_time: NtpTimestamp::from_unix(wall()),
            timeout: NtpTimestamp::from_interval(timeout),
            type_p: TypeP::from_dscp(0),
            octets_to_reflect: 0,
            padding_to_reflect: 0,
        };
        let mut m = vec![0u8; 112];
        r.emit(&mut m);
        self.send(m);
        let a = self.recv(48);
        AcceptSessionRepr::parse(&AcceptSession::new_checked(&a[..]).unwrap()).unwrap()
    }

    fn start(&mut self) -> Accept {
        let mut m = vec![0u8; 32];
        StartSessionsRepr.emit(&mut m);
        self.send(m);
        StartAck::new_checked(&self.recv(32)[..]).unwrap().accept()
    }

    fn stop(&mut self, n: u32) {
        let mut m = vec![0u8; 32];
        StopSessionsRepr { accept: Accept::Ok, number_of_sessions: n }.emit(&mut m);
        self.send(m);
    }

    fn test_crypto(&self, sid: &Sid) -> Option<TestCrypto> {
        self.keys.as_ref().and_then(|k| TestCrypto::new(self.mode, &TestKeys::derive(k, sid)))
    }
}

/// Sends `n` test packets with the layout's symmetric padding and checks every reply.
fn exchange(udp: &UdpSocket, to: SocketAddr, layout: TestLayout, crypto: Option<&TestCrypto>, n: u32) {
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let size = layout.reflector_len();
    for seq in 0..n {
        let mut pkt = vec![0u8; size];
        let t1 = NtpTimestamp::from_unix(wall());
        SenderRepr {
            layout,
            sequence: seq + 100,
            timestamp: t1,
            error_estimate: ErrorEstimate::UNSYNCED_DEFAULT,
            padding_len: size - layout.sender_len(),
        }
        .emit(&mut pkt);
        if let Some(c) = crypto {
            c.seal_sender(&mut pkt).unwrap();
        }
        udp.send_to(&pkt, to).unwrap();
        let mut buf = [0u8; 2048];
        let (len, from) = udp.recv_from(&mut buf).expect("a reply within 5 s");
        assert_eq!(from, to);
        assert_eq!(len, size, "the reply is as long as the request");
        let reply = &mut buf[..len];
        if let Some(c) = crypto {
            c.open_reflector(reply).expect("the reply's HMAC verifies");
        }
        let r = ReflectorRepr::parse(&ReflectorPacket::new_checked(&reply[..], layout).unwrap()).unwrap();
        assert_eq!(r.sequence, seq, "the reflector's own counter");
        assert_eq!(r.sender_sequence, seq + 100);
        assert_eq!(r.sender_timestamp, t1);
        assert_eq!(r.sender_ttl, Some(64), "Linux sends with TTL 64 on loopback");
        assert!(r.receive_timestamp <= r.timestamp, "T2 {:?} after T3 {:?}", r.receive_timestamp, r.timestamp);
        assert!(t1 <= r.receive_timestamp, "T1 after T2");
        assert!(r.error_estimate.is_valid());
    }
}

fn wait_for(what: &str, ok: impl FnMut() -> bool) {
    crate::common::wait_for(what, PATIENCE, ok)
}

fn session(addr: SocketAddr, mode: Modes, n: u32) -> StoppedSession {
    let mut c = Ctl::up(addr, mode, "alice", SECRET);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let layout = c.mode.test_layout();
    let a = c.request(udp.local_addr().unwrap().port(), layout.symmetric_padding() as u32);
    assert_eq!(a.accept, Accept::Ok);
    assert!((18760..=19960).contains(&a.port), "port {} from the default test range", a.port);
    assert_eq!(&a.sid.0[..4], &[127, 0, 0, 1]);
    assert_eq!(c.start(), Accept::Ok);
    let to: SocketAddr = ("127.0.0.1".parse::<std::net::IpAddr>().unwrap(), a.port).into();
    exchange(&udp, to, layout, c.test_crypto(&a.sid).as_ref(), n);
    c.stop(1);
    StoppedSession { port: a.port, _ctl: c }
}

struct StoppedSession {
    port: u16,
    _ctl: Ctl,
}

#[test]
fn open_mode_session_on_loopback() {
    let _machine = crate::common::shared();
    let r = responder(ServerConfig::default(), false, false);
    let addr = r.twamp_addrs()[0];
    let s = session(addr, Modes::UNAUTHENTICATED, 5);
    // the session ends 2 s (its Timeout) after Stop-Sessions and its socket closes
    wait_for("the session to end", || r.status().unwrap().twamp_stats.sessions == 0);
    wait_for("the test port to be free", || UdpSocket::bind(("127.0.0.1", s.port)).is_ok());
    let st = r.status().unwrap();
    let t = &st.twamp_stats;
    assert_eq!(st.twamp, vec![addr]);
    assert_eq!((t.server.established_open, t.server.sessions_accepted, t.server.sessions_ended), (1, 1, 1));
    assert_eq!((t.reflector.received, t.reflector.reflected, t.reflector.dropped()), (5, 5, 0));
    drop(s);
    wait_for("the connection to close", || r.status().unwrap().twamp_stats.connections == 0);
    r.stop();
}

#[test]
fn stopped_session_outlives_its_connection() {
    let _machine = crate::common::shared();
    // twping closes the control connection right after Stop-Sessions; packets still in flight
    // are reflected for the session's Timeout (30 s here), a session never stopped ends at once.
    let r = responder(ServerConfig::default(), false, false);
    let mut c = Ctl::up(r.twamp_addrs()[0], Modes::UNAUTHENTICATED, "", b"");
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let a = c.request_with_timeout(udp.local_addr().unwrap().port(), 27, Duration::from_secs(30));
    assert_eq!(c.start(), Accept::Ok);
    c.stop(1);
    let idle = c.request(udp.local_addr().unwrap().port(), 27);
    drop(c);
    wait_for("the connection to close", || r.status().unwrap().twamp_stats.connections == 0);
    wait_for("the idle session to end", || r.status().unwrap().twamp_stats.sessions == 1);
    let to: SocketAddr = ("127.0.0.1".parse::<std::net::IpAddr>().unwrap(), a.port).into();
    exchange(&udp, to, TestLayout::Unauthenticated, None, 2);
    assert!(UdpSocket::bind(("127.0.0.1", idle.port)).is_ok(), "the idle session's port is closed");
    r.stop();
}

#[test]
fn authenticated_and_encrypted_sessions() {
    let _machine = crate::common::shared();
    let r = responder(secure_config(Modes(0xf)), false, false);
    let addr = r.twamp_addrs()[0];
    let a = session(addr, Modes::AUTHENTICATED, 4);
    let e = session(addr, Modes::ENCRYPTED, 4);
    let m = session(addr, Modes::MIXED, 4);
    let t = r.status().unwrap().twamp_stats;
    assert_eq!(
        (t.server.established_authenticated, t.server.established_encrypted, t.server.established_mixed),
        (1, 1, 1)
    );
    assert_eq!((t.reflector.reflected, t.reflector.drop_bad_hmac), (12, 0));
    drop((a, e, m));
    r.stop();
}

#[test]
fn forged_test_packets_in_protected_sessions_are_dropped() {
    let _machine = crate::common::shared();
    for mode in [Modes::AUTHENTICATED, Modes::ENCRYPTED] {
        let r = responder(secure_config(mode), false, false);
        let mut c = Ctl::up(r.twamp_addrs()[0], mode, "alice", SECRET);
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = c.request(udp.local_addr().unwrap().port(), 64);
        assert_eq!(c.start(), Accept::Ok);
        let crypto = c.test_crypto(&a.sid).unwrap();
        let to: SocketAddr = ("127.0.0.1".parse::<std::net::IpAddr>().unwrap(), a.port).into();
        let packet = |sequence| {
            let mut pkt = vec![0u8; 112];
            SenderRepr {
                layout: TestLayout::Authenticated,
                sequence,
                timestamp: NtpTimestamp::from_unix(wall()),
                error_estimate: ErrorEstimate::UNSYNCED_DEFAULT,
                padding_len: 64,
            }
            .emit(&mut pkt);
            pkt
        };
        // no HMAC at all, then sealed packets with one bit flipped in what the HMAC covers and
        // in the HMAC itself (at octet 32). Authenticated mode covers block 0 only (sequence
        // number and MBZ, reference §3.3), encrypted mode blocks 0-1 (timestamp and error
        // estimate too).
        udp.send_to(&packet(1), to).unwrap();
        let covered: &[usize] = if mode == Modes::AUTHENTICATED {
            &[0, 7 * 8 + 3, 15 * 8 + 7]
        } else {
            &[0, 20 * 8 + 1, 24 * 8, 31 * 8 + 7]
        };
        let bits: Vec<usize> = covered.iter().copied().chain([32 * 8, 47 * 8 + 7]).collect();
        for (i, bit) in bits.iter().enumerate() {
            let mut p = packet(10 + i as u32);
            crypto.seal_sender(&mut p).unwrap();
            p[bit / 8] ^= 1 << (bit % 8);
            udp.send_to(&p, to).unwrap();
        }
        let forged = 1 + bits.len() as u64;
        wait_for("the drops to be counted", || r.status().unwrap().twamp_stats.reflector.drop_bad_hmac == forged);
        udp.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        assert!(udp.recv_from(&mut [0u8; 256]).is_err(), "{mode:?}: no reply to a packet whose HMAC fails");
        // the session goes on: a correctly sealed packet is reflected (the reflector's count at 0)
        exchange(&udp, to, c.mode.test_layout(), Some(&crypto), 1);
        let t = r.status().unwrap().twamp_stats.reflector;
        assert_eq!((t.received, t.reflected, t.drop_bad_hmac), (forged + 1, 1, forged), "{mode:?}");
        r.stop();
    }
}

#[test]
fn negotiation_failures_have_their_accept_values() {
    let _machine = crate::common::shared();
    // server open only, client asks for authenticated mode
    let open = responder(ServerConfig::default(), false, false);
    assert!(matches!(
        Ctl::connect(open.twamp_addrs()[0], Modes::AUTHENTICATED, "alice", SECRET),
        Setup::Rejected(Accept::NotSupported)
    ));
    let secure = responder(secure_config(Modes::AUTHENTICATED | Modes::ENCRYPTED), false, false);
    let addr = secure.twamp_addrs()[0];
    assert!(matches!(Ctl::connect(addr, Modes::AUTHENTICATED, "alice", b"wrong"), Setup::Rejected(Accept::Failure)));
    assert!(matches!(Ctl::connect(addr, Modes::ENCRYPTED, "bob", SECRET), Setup::Rejected(Accept::Failure)));
    assert!(matches!(Ctl::connect(addr, Modes::UNAUTHENTICATED, "", b""), Setup::Rejected(Accept::NotSupported)));
    let s = secure.status().unwrap().twamp_stats.server;
    assert_eq!((s.rejected_bad_token, s.rejected_unknown_key_id, s.rejected_mode), (1, 1, 1));
    assert_eq!(open.status().unwrap().twamp_stats.server.rejected_mode, 1);
}

#[test]
fn connection_limit_greets_with_modes_zero() {
    let _machine = crate::common::shared();
    let r = responder(ServerConfig { max_connections: 1, ..ServerConfig::default() }, false, false);
    let addr = r.twamp_addrs()[0];
    let first = Ctl::up(addr, Modes::UNAUTHENTICATED, "", b"");
    assert!(matches!(Ctl::connect(addr, Modes::UNAUTHENTICATED, "", b""), Setup::Refused));
    assert_eq!(r.status().unwrap().twamp_stats.server.refused, 1);
    drop(first);
    wait_for("the slot to be free", || r.status().unwrap().twamp_stats.connections == 0);
    assert!(matches!(Ctl::connect(addr, Modes::UNAUTHENTICATED, "", b""), Setup::Up(_)));
    r.stop();
}

fn light_exchange(to: SocketAddr, seqs: &[u32], len: usize) -> Vec<(usize, u32, u32)> {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    seqs.iter()
        .map(|&seq| {
            let mut pkt = vec![0u8; len];
            SenderRepr {
                layout: TestLayout::Unauthenticated,
                sequence: seq,
                timestamp: NtpTimestamp::from_unix(wall()),
                error_estimate: ErrorEstimate(0x3fff), // twampy's
                padding_len: len - 14,
            }
            .emit(&mut pkt);
            udp.send_to(&pkt, to).unwrap();
            let mut buf = [0u8; 2048];
            let (n, _) = udp.recv_from(&mut buf).expect("a TWAMP-Light reply");
            let p = ReflectorPacket::new_checked(&buf[..n], TestLayout::Unauthenticated).unwrap();
            assert_eq!(p.sender_ttl(), Some(64));
            assert!(p.receive_timestamp() <= p.timestamp());
            (n, p.sequence(), p.sender_sequence())
        })
        .collect()
}

#[test]
fn twamp_light_reflectors() {
    let _machine = crate::common::shared();
    let stateless = responder(ServerConfig::default(), true, false);
    let to = stateless.twamp_light_addrs()[0];
    // twampy sends 14 octets: answered with 41; the sequence is the sender's
    assert_eq!(light_exchange(to, &[7, 9], 14), vec![(41, 7, 7), (41, 9, 9)]);
    assert_eq!(light_exchange(to, &[3], 100), vec![(100, 3, 3)]);
    let st = stateless.status().unwrap();
    assert_eq!(st.twamp_light, vec![to]);
    assert_eq!((st.twamp_stats.light.reflected, st.twamp_stats.light.short_requests), (3, 2));

    let stateful = responder(ServerConfig::default(), true, true);
    let to = stateful.twamp_light_addrs()[0];
    assert_eq!(light_exchange(to, &[7, 9, 11], 41), vec![(41, 0, 7), (41, 1, 9), (41, 2, 11)]);
}

#[test]
fn binary_flags_and_status() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("twamp.pfs");
    std::fs::write(&keys, format!("alice {}\n", hex::encode(SECRET))).unwrap();
    let sock = dir.path().join("status.sock");
    let port = free_tcp();
    let light = free_udp();
    let _child = Killed(
        ipsla()
            .args(["responder", "--no-v1", "--no-v2", "--twamp", &format!("127.0.0.1:{port}")])
            .args(["--twamp-modes", "open,auth", "--twamp-keys", keys.to_str().unwrap()])
            .args(["--twamp-test-ports", "31000-31099", "--twamp-light", &format!("127.0.0.1:{light}")])
            .arg("--status-socket")
            .arg(&sock)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr: SocketAddr = ("127.0.0.1".parse::<std::net::IpAddr>().unwrap(), port).into();
    wait_for("the listener", || TcpStream::connect(addr).is_ok());
    let mut c = Ctl::up(addr, Modes::AUTHENTICATED, "alice", SECRET);
    let a = c.request(40000, 64);
    assert!((31000..=31099).contains(&a.port), "--twamp-test-ports: {}", a.port);
    drop(c);
    let out = ipsla().args(["responder", "--status", "--status-socket"]).arg(&sock).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("TWAMP server: 127.0.0.1:{port}")), "{text}");
    assert!(text.contains(&format!("TWAMP-Light reflector: 127.0.0.1:{light}")), "{text}");
    assert!(text.contains("established: open 0 auth 1 encrypted 0 mixed 0"), "{text}");
    let bad = ipsla().args(["responder", "--twamp-modes", "fast"]).output().unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("--twamp-modes") && err.contains("open, auth, encrypted, mixed"),
        "{err}"
    );
}

#[test]
fn tshark_decodes_our_client_and_server() {
    let _machine = crate::common::shared();
    let tshark = std::path::Path::new("/usr/bin/tshark");
    if !tshark.exists() {
        eprintln!("SKIPPED: /usr/bin/tshark is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("twamp.pcapng");
    let r = responder(ServerConfig::default(), false, false);
    let addr = r.twamp_addrs()[0];
    // -a duration stops the capture cleanly (killing tshark can leave a truncated file, reference §7)
    let mut cap = Killed(
        Command::new(tshark)
            .args(["-i", "lo", "-a", "duration:8", "-q", "-w"])
            .arg(&pcap)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // wait until it captures ("Capturing on 'Loopback: lo'")
    let mut stderr = cap.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        let mut b = [0u8; 256];
        while let Ok(n) = stderr.read(&mut b) {
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&b[..n]));
            if seen.contains("Capturing on") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(20)).is_err() {
        eprintln!("SKIPPED: tshark cannot capture on lo here");
        return;
    }
    // dumpcap says "Capturing on" a moment before its capture runs
    std::thread::sleep(Duration::from_secs(2));
    // our control-client and Session-Sender against our server
    let probe = ipsla()
        .args(["probe", "twamp", "127.0.0.1", "--port", &addr.port().to_string(), "--packets", "3"])
        .args(["--interval", "10ms", "--timeout", "2s", "--json"])
        .output()
        .unwrap();
    let d: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap_or_default();
    assert_eq!(d["received"], 3, "{d} {}", String::from_utf8_lossy(&probe.stderr));
    crate::common::wait_exit(&mut cap.0);
    let decode = |extra: &[&str]| {
        let out = Command::new(tshark)
            .arg("-r")
            .arg(&pcap)
            .args(["-d", &format!("tcp.port=={},twamp.control", addr.port())])
            .args(["-Y", &format!("tcp.port=={} or twamp.test", addr.port())])
            .args(extra)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The message names are in the summary lines (tshark 4.0 names in parentheses).
    let summary = decode(&[]);
    for name in [
        "Server Greeting",
        "Setup Response",     // Set-Up-Response
        "Server Start, (OK)", // Server-Start
        "Request Session",    // Request-TW-Session
        "Accept Session, (OK)",
        "Start Sessions",
        "Start Sessions ACK, (OK)", // Start-Ack
        "Stop Session",
    ] {
        assert!(summary.contains(name), "tshark did not decode {name}:\n{summary}");
    }
    assert_eq!(summary.matches("TWAMP-Test").count(), 6, "3 test packets each way:\n{summary}");
    let text = decode(&["-V"]);
    assert!(text.contains("Control Command: Request-TW-Session (5)"), "{text}");
    assert!(text.contains("Control Command: Stop-Sessions (3)"), "{text}");
    assert!(text.contains("TwoWay Active Measurement Test Protocol"), "test packets not decoded:\n{text}");
    // the Session-Sender sends with TTL 255 (RFC 5357 §4.1.2) and the reflector reports it
    assert!(text.contains("Sender TTL: 255"), "{text}");
    assert!(!text.contains("Malformed") && !text.contains("Expert Info (Error"), "tshark found errors:\n{text}");
}

/// With a TWAMP server, IP SLA control may not open its test-session ports (nor the reflector
/// ports): otherwise one v1 source, which has no key to show, could hold every TWAMP test port.
#[test]
fn ip_sla_control_cannot_take_the_twamp_test_ports() {
    let _machine = crate::common::shared();
    use ipsla_wire::cisco::control_v1::{ControlV1Repr, MeasurementRepr, Operation};
    let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let r = spawn_responder(ResponderOptions {
        listen: vec!["127.0.0.1".parse().unwrap()],
        v1_port: 0,
        v2_enabled: false,
        twamp: vec![lo],
        twamp_config: ServerConfig { test_ports: 30100..=30109, ..ServerConfig::default() },
        ..ResponderOptions::default()
    })
    .unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let ask = |port: u16| {
        let m = MeasurementRepr {
            operation: Operation::UdpJitter,
            reserved: 0,
            target: "127.0.0.1".parse().unwrap(),
            port,
            duration_ms: 2000,
        };
        let req = ControlV1Repr::request(1, m);
        let mut b = vec![0u8; req.buffer_len()];
        req.emit(&mut b);
        udp.send_to(&b, r.control_v1_addrs()[0]).unwrap();
        udp.recv_from(&mut [0u8; 512]).is_ok()
    };
    for port in [30100, 30105, 30109] {
        assert!(!ask(port), "port {port} of the TWAMP test range was opened");
    }
    let free = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    assert!(ask(free), "a port outside the range is opened");
    let st = r.status().unwrap();
    assert_eq!(st.stats.rejects.get(&ipsla_core::responder::Reject::PortNotAllowed), Some(&3));
    r.stop();
}

/// A source that reconnects faster than `connection_rate` (burst twice that) is greeted with
/// Modes 0: every authenticated set-up costs a key derivation on the responder thread.
#[test]
fn reconnecting_too_fast_is_refused() {
    let _machine = crate::common::shared();
    let r = responder(ServerConfig { connection_rate: 1.0, ..ServerConfig::default() }, false, false);
    let addr = r.twamp_addrs()[0];
    let mut held = Vec::new();
    let modes: Vec<u32> = (0..3)
        .map(|_| {
            let mut t = TcpStream::connect(addr).unwrap();
            t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut g = [0u8; 64];
            t.read_exact(&mut g).unwrap();
            held.push(t);
            u32::from_be_bytes(g[12..16].try_into().unwrap()) & 0xf
        })
        .collect();
    assert_eq!(modes, vec![1, 1, 0], "a burst of 2, then Modes 0");
    assert_eq!(r.status().unwrap().twamp_stats.server.refused, 1);
    r.stop();
}
