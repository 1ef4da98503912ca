//! `ipsla responder --workers N`: the hot UDP ports have a socket per worker thread
//! (`SO_REUSEPORT`; a flow's datagrams go to one worker, or with `--steer-by-cpu` to the worker
//! of the CPU they arrived on), and the state the workers share gives the same answers whichever
//! worker a probe lands on. On loopback a datagram is received on the CPU of the thread that sent
//! it, so with `--steer-by-cpu` one sender socket pinned alternately to two CPUs of different
//! parity puts its probes on worker 0 and worker 1 in turn; by default they all reach one.

use crate::common::{Killed, PATIENCE, free_udp, ipsla, responder_status, wait_for, wait_udp};
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;
use std::net::{SocketAddr, UdpSocket};
use std::process::Stdio;
use std::time::Duration;

/// Probes per protocol.
const N: usize = 20;

/// Two CPUs this process may run on whose numbers differ in parity (CPU c steers to worker
/// c mod 2), or None.
fn two_cpus() -> Option<(usize, usize)> {
    let set = sched_getaffinity(Pid::from_raw(0)).ok()?;
    let allowed: Vec<usize> = (0..CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).collect();
    let even = allowed.iter().find(|c| *c % 2 == 0)?;
    let odd = allowed.iter().find(|c| *c % 2 == 1)?;
    Some((*even, *odd))
}

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) {
    let mut set = CpuSet::new();
    set.set(cpu).unwrap();
    sched_setaffinity(Pid::from_raw(0), &set).unwrap_or_else(|e| panic!("pinning the test thread to CPU {cpu}: {e}"));
}

/// Sends `N` datagrams from `sock` to `to`, probe i from CPU `cpus.0` when i is even and from
/// `cpus.1` when odd, each after the reply to the one before; returns the replies.
fn alternate(sock: &UdpSocket, to: SocketAddr, cpus: (usize, usize), probe: impl Fn(usize) -> Vec<u8>) -> Vec<Vec<u8>> {
    let mut replies = Vec::new();
    for i in 0..N {
        pin(if i % 2 == 0 { cpus.0 } else { cpus.1 });
        sock.send_to(&probe(i), to).unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = sock.recv_from(&mut buf).unwrap_or_else(|e| panic!("no reply from {to} to probe {i}: {e}"));
        assert_eq!(from, to);
        replies.push(buf[..n].to_vec());
    }
    replies
}

/// A type-2 (udp-jitter, ms) probe with sender sequence `seq`.
fn jitter_probe(seq: u16) -> Vec<u8> {
    let mut p = vec![0u8; 32];
    p[1] = 2;
    p[12..14].copy_from_slice(&seq.to_be_bytes());
    p
}

/// A v1 control request opening a udp-jitter session on 127.0.0.1:`port` for 5 s.
fn v1_jitter_request(port: u16) -> Vec<u8> {
    // version 1, sequence 1, length 52 | type 4 (udp-jitter), length 16 | 127.0.0.1, port, 5000 ms
    let mut r = hex::decode(["01010034", "00000000", "00040010", "00000000", "7f000001"].concat()).unwrap();
    r.extend_from_slice(&port.to_be_bytes());
    r.extend_from_slice(&5000u16.to_be_bytes());
    r.extend_from_slice(&hex::decode("0001001c").unwrap());
    r.resize(52, 0);
    r
}

/// An unauthenticated STAMP / TWAMP-Light test packet (44 octets) with sender sequence `seq`.
fn test_packet(seq: u32) -> Vec<u8> {
    let mut p = vec![0u8; 44];
    p[0..4].copy_from_slice(&seq.to_be_bytes());
    // Error Estimate: multiplier 1 (a multiplier of 0 is invalid, RFC 4656 §4.1.2)
    p[12..14].copy_from_slice(&1u16.to_be_bytes());
    p
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// Two workers steered by CPU, one sender socket steered to both by its CPU: every probe answered,
/// the responder's sequence numbers consecutive across the workers (a permanent udp-jitter port, a
/// stateful STAMP session and a stateful TWAMP-Light sender: each worker sends half their
/// replies), and a udp-jitter session opened by v1 control answered by the one worker its port
/// picks (a session port has one socket).
#[test]
fn two_workers_share_sequences_and_split_the_replies() {
    let _machine = crate::common::shared();
    let Some(cpus) = two_cpus() else {
        eprintln!(
            "SKIPPED: two_workers_share_sequences_and_split_the_replies needs two CPUs of different parity \
             to steer probes to two workers; this process may run on {:?}",
            sched_getaffinity(Pid::from_raw(0))
                .ok()
                .map(|s| (0..CpuSet::count()).filter(|&c| s.is_set(c).unwrap_or(false)).collect::<Vec<_>>())
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let status = dir.path().join("status.sock");
    let (v1, jitter, stamp, light) = (free_udp(), free_udp(), free_udp(), free_udp());
    let at = |p: u16| format!("127.0.0.1:{p}");
    let _responder = Killed(
        ipsla()
            .args(["responder", "--workers", "2", "--steer-by-cpu", "--listen", "127.0.0.1", "--no-v2"])
            .args(["--v1-port", &v1.to_string()])
            .args(["--udp-jitter", &at(jitter), "--stamp", &at(stamp), "--stamp-stateful"])
            .args(["--twamp-light", &at(light), "--twamp-light-stateful", "--status-socket"])
            .arg(&status)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_udp(light);
    wait_for("the status socket", PATIENCE, || status.exists());
    let st = responder_status(&status);
    assert_eq!((st["workers"].as_u64(), st["steering"].as_str()), (Some(2), Some("cpu")), "{st}");

    // pinning moves this test thread only; it runs on a thread of its own
    let (replies, session_port) = std::thread::spawn(move || {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let to = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let permanent = alternate(&sock, to(jitter), cpus, |i| jitter_probe(i as u16 + 1));
        let session = free_udp();
        sock.send_to(&v1_jitter_request(session), to(v1)).unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = sock.recv_from(&mut buf).expect("a control reply");
        assert_eq!((n, buf[3]), (24, 0x18), "the session is accepted: {:02x?}", &buf[..n]);
        let session_replies = alternate(&sock, to(session), cpus, |i| jitter_probe(i as u16 + 1));
        let stamp_replies = alternate(&sock, to(stamp), cpus, |i| test_packet(1000 + i as u32));
        let light_replies = alternate(&sock, to(light), cpus, |i| test_packet(2000 + i as u32));
        ((permanent, session_replies, stamp_replies, light_replies), session)
    })
    .join()
    .unwrap();
    let (permanent, session, stamp_r, light_r) = replies;
    let rseq = |v: &[Vec<u8>]| v.iter().map(|r| u16::from_be_bytes([r[14], r[15]]) as u32).collect::<Vec<_>>();
    let one_to_n: Vec<u32> = (1..=N as u32).collect();
    assert_eq!(rseq(&permanent), one_to_n, "permanent udp-jitter port: responder sequence across both workers");
    assert_eq!(rseq(&session), one_to_n, "udp-jitter session on port {session_port}: responder sequence");
    let from_zero: Vec<u32> = (0..N as u32).collect();
    let refl = |v: &[Vec<u8>]| v.iter().map(|r| u32_at(r, 0)).collect::<Vec<_>>();
    let sender = |v: &[Vec<u8>]| v.iter().map(|r| u32_at(r, 24)).collect::<Vec<_>>();
    assert_eq!(sender(&stamp_r), (1000..1000 + N as u32).collect::<Vec<_>>(), "STAMP replies in order");
    assert_eq!(refl(&stamp_r), from_zero, "STAMP stateful: the reflector's own sequence across both workers");
    assert_eq!(sender(&light_r), (2000..2000 + N as u32).collect::<Vec<_>>(), "TWAMP-Light replies in order");
    assert_eq!(refl(&light_r), from_zero, "TWAMP-Light stateful: the reflector's sequence across both workers");

    let st = responder_status(&status);
    let per_worker: Vec<u64> =
        st["worker_stats"].as_array().unwrap().iter().map(|w| w["replies"].as_u64().unwrap()).collect();
    // half of the permanent port's, STAMP's and TWAMP-Light's each; the session's all on worker
    // port mod 2
    let half = 3 * N as u64 / 2;
    let expected: Vec<u64> =
        (0..2).map(|w| half + if w == usize::from(session_port) % 2 { N as u64 } else { 0 }).collect();
    assert_eq!(per_worker, expected, "each worker sent the replies of its CPU's probes and of its session: {st}");
    assert_eq!(st["stats"]["probes_answered"], 2 * N as u64, "{st}");
    assert_eq!(st["stamp_stats"]["replied"], N as u64, "{st}");
    assert_eq!(st["twamp_stats"]["light"]["reflected"], N as u64, "{st}");
    // each worker learnt its own T3 lead from its own replies' stamps (every reply's until 64);
    // the top level merges the diagnostics and gives the smaller lead
    let workers = st["worker_stats"].as_array().unwrap();
    let stamps: Vec<u64> = workers.iter().map(|w| w["tx_kernel_minus_user"]["count"].as_u64().unwrap()).collect();
    assert_eq!(stamps, expected, "{st}");
    assert_eq!(st["tx_kernel_minus_user"]["count"], 4 * N as u64, "{st}");
    let leads: Vec<i64> = workers.iter().map(|w| w["t3_lead_ns"].as_i64().unwrap()).collect();
    assert_eq!(st["t3_lead_ns"].as_i64(), leads.iter().copied().min(), "{st}");
}

/// By default a flow stays on one worker wherever its datagrams arrive (the kernel's hash of
/// source and destination picks the socket), so its replies keep its probes' order: the same
/// sender pinned alternately to two CPUs is answered by one worker only.
#[test]
fn by_default_one_senders_flow_stays_on_one_worker() {
    let _machine = crate::common::shared();
    let Some(cpus) = two_cpus() else {
        eprintln!("SKIPPED: by_default_one_senders_flow_stays_on_one_worker needs two CPUs of different parity");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let status = dir.path().join("status.sock");
    let (v1, jitter) = (free_udp(), free_udp());
    let _responder = Killed(
        ipsla()
            .args(["responder", "--workers", "2", "--listen", "127.0.0.1", "--no-v2", "--v1-port", &v1.to_string()])
            .args(["--udp-jitter", &format!("127.0.0.1:{jitter}"), "--status-socket"])
            .arg(&status)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_udp(jitter);
    wait_for("the status socket", PATIENCE, || status.exists());
    let st = responder_status(&status);
    assert_eq!((st["workers"].as_u64(), st["steering"].as_str()), (Some(2), Some("hash")), "{st}");
    let replies = std::thread::spawn(move || {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        alternate(&sock, SocketAddr::from(([127, 0, 0, 1], jitter)), cpus, |i| jitter_probe(i as u16 + 1))
    })
    .join()
    .unwrap();
    let rseq: Vec<u32> = replies.iter().map(|r| u16::from_be_bytes([r[14], r[15]]) as u32).collect();
    assert_eq!(rseq, (1..=N as u32).collect::<Vec<_>>());
    let st = responder_status(&status);
    let mut per_worker: Vec<u64> =
        st["worker_stats"].as_array().unwrap().iter().map(|w| w["replies"].as_u64().unwrap()).collect();
    per_worker.sort_unstable();
    assert_eq!(per_worker, vec![0, N as u64], "one worker answered the whole flow: {st}");
}

/// With workers a shared port is still refused when anything else holds it: a plain socket, and
/// another responder with workers of the same user (whose `SO_REUSEPORT` group Linux would let a
/// second one join, splitting the port's datagrams between them). Start-up fails with the
/// address and the flag, as with one worker.
#[test]
fn a_taken_port_is_refused_with_workers() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let responder = |port: u16, status: &str| {
        let mut c = ipsla();
        c.args([
            "responder",
            "--workers",
            "2",
            "--listen",
            "127.0.0.1",
            "--no-v2",
            "--v1-port",
            &free_udp().to_string(),
        ])
        .args(["--udp-jitter", &format!("127.0.0.1:{port}"), "--status-socket"])
        .arg(dir.path().join(status));
        c
    };
    let refused = |port: u16| {
        let mut second = Killed(responder(port, "second.sock").stderr(Stdio::piped()).spawn().unwrap());
        let code = crate::common::wait_some("the second responder to stop", PATIENCE, || {
            second.0.try_wait().unwrap().map(|s| s.code())
        });
        let mut err = String::new();
        std::io::Read::read_to_string(second.0.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert_eq!(code, Some(2), "{err}");
        assert_eq!(
            err,
            format!(
                "ipsla: starting the responder: cannot bind the permanent udp-jitter port 127.0.0.1:{port} (--udp-jitter): \
                 Address already in use (os error 98); another responder or the agent listens there\n"
            )
        );
    };
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    refused(taken.local_addr().unwrap().port());

    let port = free_udp();
    let _first = Killed(responder(port, "first.sock").stderr(Stdio::null()).spawn().unwrap());
    wait_for("the first responder", PATIENCE, || dir.path().join("first.sock").exists());
    refused(port);
}
