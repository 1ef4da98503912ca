//! Hostile traffic against one running `ipsla responder` while legitimate operations measure
//! through it (loopback only, bounded in count and time).
//!
//! 1,000,000 random, truncated, mutated, oversized and replayed datagrams (templates: the real
//! packets of the fuzz corpora) go from 16 source addresses to the v1 and v2 control ports, the
//! STAMP reflector and the TWAMP-Light reflector, while 64 TCP connections from 8 addresses hold
//! the TWAMP-Control port half-open or dribble a byte at a time. Meanwhile a udp-jitter operation
//! (v1 control) and a TWAMP session from 127.0.0.1 must lose nothing, the responder must stay up
//! with bounded memory, and every datagram it read must be counted once, by reason.

use crate::common::{
    Killed, PATIENCE, alone, free_tcp, free_udp, ipsla, n, responder_status, wait_for, wait_tcp, wait_udp,
};
use ipsla_wire::cisco::control_v1::{ControlV1Repr, MeasurementRepr, Operation};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

const FLOOD: u64 = 1_000_000;
/// Ceiling on the flood's rate: above what one responder thread parses, so its sockets overflow
/// now and then, below what would starve the legitimate operations of CPU on a 2-core machine.
const FLOOD_PPS: f64 = 100_000.0;
const FLOOD_SOURCES: u8 = 16;
const PER_SOURCE_SESSIONS: u64 = 5;
const TCP_SOURCES: u8 = 8;
const TCP_PER_SOURCE: usize = 8;
const TCP_CAP_PER_SOURCE: usize = 4;
const SETUP_TIMEOUT: Duration = Duration::from_secs(3);

/// The four flooded UDP listeners.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    V1,
    V2,
    Stamp,
    Light,
}
const TARGETS: [Target; 4] = [Target::V1, Target::V2, Target::Stamp, Target::Light];

#[derive(Clone, Copy)]
struct Ports {
    v1: u16,
    v2: u16,
    stamp: u16,
    light: u16,
    twamp: u16,
}

impl Ports {
    fn of(&self, t: Target) -> u16 {
        match t {
            Target::V1 => self.v1,
            Target::V2 => self.v2,
            Target::Stamp => self.stamp,
            Target::Light => self.light,
        }
    }
}

/// Every `seed-*` file of a fuzz corpus: packets from real peers and captures.
fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(name);
    let mut v: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("seed-"))
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no seeds in {}", dir.display());
    v
}

/// A well-formed v1 request for a port of 127.0.0.1: opens a session unless a limit refuses it.
fn v1_request(rng: &mut StdRng) -> Vec<u8> {
    let operation = [Operation::UdpJitter, Operation::UdpEcho, Operation::TcpConnect][rng.random_range(0..3)];
    let r = ControlV1Repr::request(
        rng.random(),
        MeasurementRepr {
            operation,
            reserved: 0,
            target: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: rng.random_range(40_000..41_000),
            duration_ms: rng.random_range(500..3000),
        },
    );
    let mut b = vec![0u8; r.buffer_len()];
    r.emit(&mut b);
    b
}

/// One hostile datagram for `t`.
fn hostile(rng: &mut StdRng, t: Target, templates: &[Vec<u8>]) -> Vec<u8> {
    let template = if t == Target::V1 && rng.random_bool(0.5) {
        v1_request(rng)
    } else {
        templates[rng.random_range(0..templates.len())].clone()
    };
    match rng.random_range(0..100) {
        // random bytes
        0..30 => {
            let mut b = vec![0u8; rng.random_range(0..=256)];
            rng.fill_bytes(&mut b);
            b
        }
        // truncated
        30..50 => template[..rng.random_range(0..template.len().max(1))].to_vec(),
        // mutated: a few octets changed
        50..75 => {
            let mut b = template;
            for _ in 0..rng.random_range(1..=8) {
                if !b.is_empty() {
                    let i = rng.random_range(0..b.len());
                    b[i] = rng.random();
                }
            }
            b
        }
        // oversized: far beyond any message, now and then the largest UDP payload
        75..80 => {
            let len = if rng.random_ratio(1, 2000) { 65_507 } else { rng.random_range(1500..=9000) };
            let mut b = template;
            b.resize(len, 0);
            rng.fill_bytes(&mut b[len / 2..]);
            b
        }
        // replayed as is
        _ => template,
    }
}

/// Sends the flood; returns how many datagrams each target was sent (send errors not counted).
fn flood(ports: &Ports) -> [u64; 4] {
    let mut rng = StdRng::seed_from_u64(0x1967_1167);
    let templates = [corpus("control_v1"), corpus("control_v2"), corpus("stamp"), corpus("twamp_test")];
    let socks: Vec<UdpSocket> = (0..FLOOD_SOURCES)
        .map(|i| {
            let s = UdpSocket::bind((Ipv4Addr::new(127, 0, 0, 2 + i), 0)).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let mut sent = [0u64; 4];
    let start = Instant::now();
    let mut buf = [0u8; 2048];
    for n in 0..FLOOD {
        let ti = (n % 4) as usize;
        let t = TARGETS[ti];
        let pkt = hostile(&mut rng, t, &templates[ti]);
        let sock = &socks[rng.random_range(0..socks.len())];
        if sock.send_to(&pkt, (Ipv4Addr::LOCALHOST, ports.of(t))).is_ok() {
            sent[ti] += 1;
        }
        if n % 1000 == 999 {
            // the replies to our sources are not wanted; reading them keeps their buffers small
            for s in &socks {
                while s.recv_from(&mut buf).is_ok() {}
            }
            let due = Duration::from_secs_f64((n + 1) as f64 / FLOOD_PPS);
            let elapsed = start.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
    }
    eprintln!("flood: {FLOOD} datagrams in {:?} (sent {sent:?})", start.elapsed());
    sent
}

/// The kernel's drop counters of the UDP sockets bound to 127.0.0.1:`port` (/proc/net/udp), summed.
fn kernel_drops(port: u16) -> u64 {
    let want = format!("0100007F:{port:04X}");
    let table = std::fs::read_to_string("/proc/net/udp").unwrap();
    // one socket per responder worker on a shared port (SO_REUSEPORT): the drops of all of them
    let drops: Vec<u64> = table
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
        .map(|l| l.split_whitespace().last().unwrap().parse().unwrap())
        .collect();
    assert!(!drops.is_empty(), "no socket on 127.0.0.1:{port} in /proc/net/udp");
    drops.iter().sum()
}

/// A memory field of /proc/PID/status (VmHWM: peak resident, VmRSS: resident now), KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let l = s.lines().find(|l| l.starts_with(field)).unwrap();
    l.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A TCP connection to the TWAMP port from `src`, with the greeting's Modes (0 = refused).
fn twamp_connection(src: Ipv4Addr, port: u16) -> (TcpStream, u32) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((src, 0)).into()).unwrap();
    s.connect(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into()).unwrap();
    let mut t: TcpStream = s.into();
    t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut greeting = [0u8; 64];
    t.read_exact(&mut greeting).unwrap();
    (t, u32::from_be_bytes(greeting[12..16].try_into().unwrap()))
}

/// Whether the server has closed `t` (a read sees the end or a reset) within `limit`.
fn closed_by_server(t: &mut TcpStream, limit: Duration) -> bool {
    t.set_read_timeout(Some(limit)).unwrap();
    let mut b = [0u8; 64];
    match t.read(&mut b) {
        Ok(0) => true,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        Ok(_) => false,
    }
}

fn json(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().next().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: stdout {text} stderr {}", String::from_utf8_lossy(&out.stderr)))
}

fn assert_lossless(d: &Value, sent: u64) {
    assert_eq!(d["return_code"], "ok", "{d}");
    assert_eq!((n(&d["sent"]), n(&d["received"])), (sent, sent), "{d}");
    let l = &d["loss"];
    assert_eq!((n(&l["sd"]), n(&l["ds"]), n(&l["mia"])), (0, 0, 0), "{d}");
}

fn start_responder(dir: &Path, p: &Ports) -> (Killed, PathBuf) {
    let sock = dir.join("status.sock");
    let cfg = dir.join("responder.toml");
    std::fs::write(
        &cfg,
        format!(
            "[responder]\ntwamp_max_connections_per_source = {TCP_CAP_PER_SOURCE}\n\
             twamp_setup_timeout = \"{}s\"\n",
            SETUP_TIMEOUT.as_secs()
        ),
    )
    .unwrap();
    let child = ipsla()
        .args(["responder", "--config"])
        .arg(&cfg)
        .args(["--listen", "127.0.0.1", "--v1-port", &p.v1.to_string(), "--v2-port", &p.v2.to_string()])
        .args(["--max-sessions-per-source", &PER_SOURCE_SESSIONS.to_string()])
        .args(["--stamp", &format!("127.0.0.1:{}", p.stamp), "--twamp-light", &format!("127.0.0.1:{}", p.light)])
        .args(["--twamp", &format!("127.0.0.1:{}", p.twamp)])
        .arg("--status-socket")
        .arg(&sock)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let k = Killed(child);
    for port in [p.v1, p.v2, p.stamp, p.light] {
        wait_udp(port);
    }
    wait_tcp(p.twamp);
    (k, sock)
}

#[test]
fn responder_measures_through_a_flood() {
    let _machine = alone();
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports { v1: free_udp(), v2: free_udp(), stamp: free_udp(), light: free_udp(), twamp: free_tcp() };
    let (mut responder, sock) = start_responder(dir.path(), &ports);
    let pid = responder.0.id();
    let base = responder_status(&sock);
    let base_accepted = n(&base["twamp_stats"]["server"]["connections"]); // wait_tcp's probe connection

    // half-open and slow TWAMP-Control connections: each source gets its cap, the rest Modes 0
    let mut held = Vec::new();
    let mut refused = 0;
    for s in 0..TCP_SOURCES {
        for _ in 0..TCP_PER_SOURCE {
            let (mut t, modes) = twamp_connection(Ipv4Addr::new(127, 0, 1, 2 + s), ports.twamp);
            if modes == 0 {
                refused += 1;
                assert!(closed_by_server(&mut t, PATIENCE), "a refused connection stays open");
            } else {
                held.push(t);
            }
        }
    }
    assert_eq!((held.len(), refused), (TCP_SOURCES as usize * TCP_CAP_PER_SOURCE, 32));
    // half of them dribble a Set-Up-Response, one octet every 300 ms, the others stay silent;
    // each thread reports whether the server hung up
    let hangups: Vec<_> = held
        .into_iter()
        .enumerate()
        .map(|(i, mut t)| {
            std::thread::spawn(move || {
                let end = Instant::now() + SETUP_TIMEOUT + Duration::from_secs(60);
                t.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
                let mut b = [0u8; 64];
                while Instant::now() < end {
                    if i % 2 == 0 && t.write_all(&[0]).is_err() {
                        return true;
                    }
                    match t.read(&mut b) {
                        Ok(0) => return true,
                        Err(e)
                            if !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                        {
                            return true;
                        }
                        _ => {}
                    }
                }
                false
            })
        })
        .collect();

    let flooding = std::thread::spawn(move || flood(&ports));
    std::thread::sleep(Duration::from_millis(500));

    // the legitimate operations, from 127.0.0.1 while the flood goes on
    let jitter = ipsla()
        .args(["probe", "udp-jitter", "127.0.0.1", "--port", &free_udp().to_string()])
        .args(["--control-port", &ports.v1.to_string(), "--packets", "400", "--interval", "10ms", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let twamp = ipsla()
        .args(["probe", "twamp", "127.0.0.1", "--port", &ports.twamp.to_string()])
        .args(["--packets", "200", "--interval", "10ms", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let jitter = jitter.wait_with_output().unwrap();
    let twamp = twamp.wait_with_output().unwrap();
    let sent = flooding.join().unwrap();
    assert!(responder.0.try_wait().unwrap().is_none(), "the responder died under the flood");
    assert_lossless(&json(&jitter), 400);
    assert_lossless(&json(&twamp), 200);

    // the server hung up on every held connection (by its setup timeout: counted below)
    let hung_up = hangups.into_iter().map(|h| h.join().unwrap()).filter(|&closed| closed).count();
    assert_eq!(hung_up, TCP_SOURCES as usize * TCP_CAP_PER_SOURCE, "half-open or slow connections left open");

    // drained: every datagram sent is either read (and counted once, by reason) or a kernel drop
    let drained = |st: &Value| {
        let s = &st["stats"];
        let r = |k: &str| n(&s["rejects"][k]);
        let read =
            n(&s["control_v1"]) + n(&s["control_v2"]) + r("not_allowed") + r("rate_limited") + r("unknown_version");
        read + kernel_drops(ports.v1) + kernel_drops(ports.v2) > sent[0] + sent[1]
            && n(&st["stamp_stats"]["received"]) + kernel_drops(ports.stamp) >= sent[2]
            && n(&st["twamp_stats"]["light"]["received"]) + kernel_drops(ports.light) >= sent[3]
    };
    wait_for("the responder to read what was sent", PATIENCE, || drained(&responder_status(&sock)));
    let st = responder_status(&sock);
    let peak = status_kib(pid, "VmHWM:");
    eprintln!("responder peak RSS {peak} KiB; status {st}");
    assert!(peak < 256 * 1024, "responder peak RSS {peak} KiB");
    let s = &st["stats"];
    let rejects: u64 = s["rejects"].as_object().unwrap().values().map(n).sum();
    let r = |k: &str| n(&s["rejects"][k]);
    let read = n(&s["control_v1"]) + n(&s["control_v2"]) + r("not_allowed") + r("rate_limited") + r("unknown_version");
    assert_eq!(read, n(&s["control_accepted"]) + rejects, "each control datagram counted once: {s}");
    let control_drops = kernel_drops(ports.v1) + kernel_drops(ports.v2);
    let legit_control = (read + control_drops).checked_sub(sent[0] + sent[1]).expect("more read than sent");
    assert!((1..=3).contains(&legit_control), "control datagrams from the operation: {legit_control}");
    for reason in ["rate_limited", "malformed", "unknown_version", "too_many_sessions_per_source", "not_local"] {
        assert!(r(reason) > 0, "no {reason} rejections: {s}");
    }
    assert!(n(&s["control_accepted"]) > 1, "the flood's well-formed requests open sessions up to the cap");

    let stamp = &st["stamp_stats"];
    assert_eq!(n(&stamp["received"]) + kernel_drops(ports.stamp), sent[2], "{stamp}");
    let stamp_dropped = n(&stamp["drop_short"]) + n(&stamp["drop_too_long"]) + n(&stamp["drop_bad_hmac"]);
    assert_eq!(n(&stamp["received"]), n(&stamp["replied"]) + stamp_dropped, "{stamp}");
    assert!(n(&stamp["drop_short"]) > 0 && n(&stamp["tlv_malformed"]) > 0, "{stamp}");

    let light = &st["twamp_stats"]["light"];
    assert_eq!(n(&light["received"]) + kernel_drops(ports.light), sent[3], "{light}");
    let light_dropped: u64 =
        light.as_object().unwrap().iter().filter(|(k, _)| k.starts_with("drop_")).map(|(_, v)| n(v)).sum();
    assert_eq!(n(&light["received"]), n(&light["reflected"]) + light_dropped, "{light}");
    assert!(n(&light["drop_short"]) > 0, "{light}");

    let server = &st["twamp_stats"]["server"];
    assert_eq!(n(&server["refused"]), 32, "{server}");
    assert_eq!(n(&server["setup_timeouts"]), 32, "{server}");
    // the 32 held, the operation's and the wait_tcp probe's
    assert_eq!(n(&server["connections"]), base_accepted + 32 + 1, "{server}");
    assert_eq!(n(&server["established_open"]), 1, "{server}");
}

/// 2000 sessions opened by one source's control messages, each sent a 60 000-octet datagram:
/// the responder's memory does not grow by a receive buffer per session (64 KiB each would be
/// 125 MiB here; the sockets share one per thread).
#[test]
fn sessions_do_not_cost_a_receive_buffer_each() {
    let _machine = alone();
    const SESSIONS: u16 = 2000;
    let dir = tempfile::tempdir().unwrap();
    let (v1, sock) = (free_udp(), dir.path().join("status.sock"));
    let child = ipsla()
        .args(["responder", "--listen", "127.0.0.1", "--v1-port", &v1.to_string(), "--no-v2"])
        .args(["--port-range", "21000-23999", "--control-rate", "0", "--status-socket"])
        .arg(&sock)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let _k = Killed(child);
    wait_udp(v1);
    let ctl = UdpSocket::bind("127.0.0.1:0").unwrap();
    ctl.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut reply = [0u8; 512];
    // a port something else holds is refused (v1 has no error reply): count what was opened
    let mut opened = Vec::new();
    for i in 0..SESSIONS {
        let r = ControlV1Repr::request(
            (i % 256) as u8,
            MeasurementRepr {
                operation: Operation::UdpJitter,
                reserved: 0,
                target: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port: 21000 + i,
                duration_ms: 60_000,
            },
        );
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut b);
        ctl.send_to(&b, ("127.0.0.1", v1)).unwrap();
        if ctl.recv(&mut reply).is_ok() {
            opened.push(21000 + i);
        }
    }
    assert!(opened.len() >= usize::from(SESSIONS) * 9 / 10, "{} of {SESSIONS} sessions opened", opened.len());
    let before = status_kib(pid, "VmRSS:");
    let big = vec![0x5au8; 60_000];
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    for port in &opened {
        probe.send_to(&big, ("127.0.0.1", *port)).unwrap();
    }
    // every datagram handled (dropped as no jitter probe of this session: counted)
    let handled = || {
        let s = &responder_status(&sock)["stats"];
        n(&s["probes_answered"]) + s["probe_drops"].as_object().unwrap().values().map(n).sum::<u64>()
    };
    let sessions = opened.len() as u64;
    wait_for("every datagram handled", PATIENCE, || handled() >= sessions);
    assert_eq!(handled(), sessions);
    let after = status_kib(pid, "VmRSS:");
    eprintln!("responder RSS with {sessions} sessions: {before} KiB; after a 60 kB datagram to each: {after} KiB");
    assert!(after < before + 32 * 1024, "grew from {before} to {after} KiB");
}
