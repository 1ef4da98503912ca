//! Responder echo capacity on one core, type-2 (ms jitter) probes, beside a plain
//! recvfrom/sendto echo measured in the same run under the same load.
//!
//! The server under test runs pinned to CPU 1; the load generator runs pinned to CPU 0 and keeps
//! a fixed window of probes in flight on a connected, non-blocking socket. For each server it
//! reports replies per second, how busy CPU 1 was (from /proc/stat), and CPU-1 microseconds per
//! reply. The last figure does not depend on whether the load generator or the server saturates
//! first, so it is the one to compare.
//!
//! Usage: cargo run --release -p ipsla-bench --bin echo_capacity -- [SECONDS] [WINDOW]
#![forbid(unsafe_code)]

use ipsla_net::responder::{ResponderOptions, spawn_responder};
use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

fn pin(cpu: usize) {
    let mut set = CpuSet::new();
    set.set(cpu).expect("cpu index");
    if let Err(e) = sched_setaffinity(Pid::from_raw(0), &set) {
        eprintln!("warning: cannot pin to CPU {cpu}: {e}");
    }
}

/// (busy, total) jiffies of one CPU.
fn cpu_times(cpu: usize) -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let name = format!("cpu{cpu} ");
    let line = stat.lines().find(|l| l.starts_with(&name)).unwrap_or("");
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    if v.len() < 5 {
        return (0, 1);
    }
    let idle = v[3] + v[4];
    let total: u64 = v.iter().take(8).sum();
    (total - idle, total)
}

struct Result {
    name: &'static str,
    replies: u64,
    secs: f64,
    busy: f64,
}

fn load(name: &'static str, target: SocketAddr, secs: u64, window: u64, probe: &[u8]) -> Result {
    pin(0);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(target).unwrap();
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    // warm-up: one exchange so that the session exists and caches are warm
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    s.send(probe).unwrap();
    s.recv(&mut buf).expect("server answers");
    s.set_nonblocking(true).unwrap();
    let (b0, t0) = cpu_times(1);
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let (mut sent, mut got) = (0u64, 0u64);
    let mut last_progress = Instant::now();
    while Instant::now() < end {
        while sent - got < window {
            if s.send(probe).is_err() {
                break;
            }
            sent += 1;
        }
        let mut any = false;
        while s.recv(&mut buf).is_ok() {
            got += 1;
            any = true;
        }
        if any {
            last_progress = Instant::now();
        } else if last_progress.elapsed() > Duration::from_millis(20) {
            // replies were lost: reopen the window instead of stalling
            sent = got;
            last_progress = Instant::now();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let (b1, t1) = cpu_times(1);
    Result { name, replies: got, secs, busy: (b1 - b0) as f64 / (t1 - t0).max(1) as f64 }
}

fn plain_echo() -> SocketAddr {
    pin(1);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = s.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
    addr
}

fn v1_control(v1: SocketAddr, port: u16) {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut req = vec![1, 1, 0, 52, 0, 0, 0, 0, 0, 4, 0, 16, 0, 0, 0, 0, 127, 0, 0, 1];
    req.extend_from_slice(&port.to_be_bytes());
    req.extend_from_slice(&65_000u16.to_be_bytes());
    req.extend_from_slice(&[0, 1, 0, 28]);
    req.resize(52, 0);
    c.send_to(&req, v1).unwrap();
    let mut b = [0u8; 64];
    c.recv_from(&mut b).expect("control reply");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let window: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(256);
    let mut probe = vec![0u8; 32];
    probe[1] = 2;
    probe[13] = 1;
    let mut results = Vec::new();

    let echo = plain_echo();
    results.push(load("plain recvfrom/sendto echo", echo, secs, window, &probe));

    for (name, kernel_timestamps, port) in
        [("ipsla responder, kernel stamps on", true, 39001u16), ("ipsla responder, kernel stamps off", false, 39002)]
    {
        pin(1); // the responder thread inherits this affinity
        let opts = ResponderOptions {
            listen: vec!["127.0.0.1".parse().unwrap()],
            v1_port: 0,
            v2_port: 0,
            kernel_timestamps,
            ..ResponderOptions::default()
        };
        let r = spawn_responder(opts).expect("responder");
        pin(0);
        v1_control(r.control_v1_addrs()[0], port);
        results.push(load(name, SocketAddr::from(([127, 0, 0, 1], port)), secs, window, &probe));
        let st = r.status().unwrap();
        eprintln!("  {name}: kernel stamps {} user stamps {}", st.stats.rx_stamps_kernel, st.stats.rx_stamps_user);
        r.stop();
    }

    println!("| server (CPU 1) | replies/s | CPU 1 busy | CPU-1 µs per reply | vs plain echo (µs/reply) |");
    println!("|---|---|---|---|---|");
    let base = results[0].busy * results[0].secs * 1e6 / results[0].replies.max(1) as f64;
    for r in &results {
        let us = r.busy * r.secs * 1e6 / r.replies.max(1) as f64;
        println!(
            "| {} | {:.0} | {:.0} % | {:.2} | {:.2}× |",
            r.name,
            r.replies as f64 / r.secs,
            r.busy * 100.0,
            us,
            us / base
        );
    }
}
