//! Responder echo capacity on one core, beside a plain recvfrom/sendto echo measured in the same
//! run under the same load: type-2 (ms) and type-3 (µs) jitter probes on a session port, the
//! STAMP and the TWAMP-Light reflector, each with kernel stamps on and off, and the plain echo
//! batched with recvmmsg/sendmmsg as an upper anchor, also with one UDP_SEGMENT send per sender's
//! run, with kernel receive stamps on and off (what the stamps cost the kernel alone). The servers take turns, round after round
//! (A B C … A B C …), so that a change in the machine's load hits every row alike; the summary
//! gives each row's ratio to the plain echo of the same round, median and spread.
//!
//! The server under test runs pinned to CPU 1; the load generator runs pinned to CPU 0 and keeps
//! a fixed window of probes in flight on connected, non-blocking sockets. For each server it
//! reports replies per second, how busy CPU 1 was (from /proc/stat), CPU-1 microseconds per
//! reply, and the server thread's own CPU time per reply (schedstat; it includes the softirq
//! work of delivering its replies, which runs on its time). The last figure depends neither on
//! whether the load generator or the server saturates first nor on other processes sharing CPU 1,
//! so it is the one to compare; "capacity vs plain echo" is the plain echo's figure divided by the
//! server's, in the same round (above 1: more replies per second of one core than the echo).
//!
//! Usage: cargo run --release -p ipsla-bench --bin echo_capacity -- [SECONDS] [WINDOW] [ROUNDS] [SENDERS]
//! (defaults 4 s per server and round, 256 in flight, 3 rounds, 1 sender socket; with several
//! senders the probes go round-robin over them, so that consecutive probes come from different
//! sources and a batch holds no run of one sender's)
#![forbid(unsafe_code)]

use ipsla_net::responder::{ResponderOptions, spawn_responder};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use ipsla_bench::{pin, test_packet, type2_probe, v1_control};

struct Result {
    name: &'static str,
    replies: u64,
    secs: f64,
    busy: f64,
    /// CPU time of the server's thread over the run, ns.
    thread_ns: u64,
}

fn load(
    name: &'static str,
    target: SocketAddr,
    secs: f64,
    window: u64,
    probe: &[u8],
    tid: i32,
    senders: usize,
) -> Result {
    pin(0);
    let socks: Vec<UdpSocket> = (0..senders.max(1))
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.connect(target).unwrap();
            s
        })
        .collect();
    let mut buf = [0u8; 2048];
    // warm-up: one exchange per sender so that the session exists and caches are warm
    for s in &socks {
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        s.send(probe).unwrap();
        s.recv(&mut buf).expect("server answers");
        s.set_nonblocking(true).unwrap();
    }
    let (b0, t0) = ipsla_bench::busy_jiffies(Some(1));
    let n0 = ipsla_bench::own_thread_ns(tid);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let (mut sent, mut got) = (0u64, 0u64);
    let mut last_progress = Instant::now();
    let mut next = 0;
    while Instant::now() < end {
        // round-robin over the senders: with several, consecutive probes come from different
        // sources, as from several routers
        while sent - got < window {
            if socks[next].send(probe).is_err() {
                break;
            }
            next = (next + 1) % socks.len();
            sent += 1;
        }
        let mut any = false;
        for s in &socks {
            while s.recv(&mut buf).is_ok() {
                got += 1;
                any = true;
            }
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
    let (b1, t1) = ipsla_bench::busy_jiffies(Some(1));
    let thread_ns = ipsla_bench::own_thread_ns(tid) - n0;
    Result { name, replies: got, secs, busy: (b1 - b0) as f64 / (t1 - t0).max(1) as f64, thread_ns }
}

fn plain_echo() -> SocketAddr {
    pin(1);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = s.local_addr().unwrap();
    std::thread::Builder::new()
        .name("plain-echo".into())
        .spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..n], from);
            }
        })
        .unwrap();
    addr
}

/// The plain echo batched: poll, then up to 32 datagrams in one recvmmsg and their echoes in one
/// sendmmsg (the responder's own batch helper, without any responder logic): the upper anchor.
/// `segmented`: the echoes of one sender leave in one UDP_SEGMENT send instead, as the
/// responder's do. `stamps`: the socket takes kernel receive stamps, as the responder's do (the
/// batch helper reads them and nothing uses them): what stamps cost the kernel alone.
fn plain_batched_echo(segmented: bool, stamps: bool) -> SocketAddr {
    pin(1);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    if stamps {
        ipsla_net::socket::enable_rx_timestamps(&s);
    }
    let addr = s.local_addr().unwrap();
    let name = match (segmented, stamps) {
        (false, _) => "plain-batched",
        (true, false) => "plain-segmented",
        (true, true) => "plain-seg-stamp",
    };
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut b = ipsla_net::batch::Batch::new();
            let fd = s.as_raw_fd();
            loop {
                let mut pfd = [PollFd::new(s.as_fd(), PollFlags::POLLIN)];
                if poll(&mut pfd, PollTimeout::NONE).is_err() {
                    continue;
                }
                let Ok(n) = b.recv(fd) else { continue };
                let echo: Vec<_> = (0..n).map(|i| ipsla_net::batch::Reply::in_place(i, b.received(i).len)).collect();
                let mut sent = 0;
                while segmented && sent < n {
                    let run = ipsla_net::batch::segment_run(&b, &echo[sent..]);
                    if run < 2 || b.send_segmented(fd, &echo[sent..sent + run]).is_err() {
                        break;
                    }
                    sent += run;
                }
                while sent < n {
                    match b.send(fd, &echo[sent..]) {
                        Ok(k) if k > 0 => sent += k,
                        _ => break,
                    }
                }
            }
        })
        .unwrap();
    addr
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Plain,
    PlainBatched,
    PlainSegmented,
    Type2,
    Type3,
    Stamp,
    TwampLight,
}

struct Server {
    name: &'static str,
    kind: Kind,
    /// Kernel stamps (responder rows); the on/off pairs are adjacent.
    stamps: bool,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n.is_multiple_of(2) { (v[n / 2 - 1] + v[n / 2]) / 2.0 } else { v[n / 2] }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(4.0);
    let window: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(256);
    let rounds: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let senders: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1);
    let type2 = type2_probe();
    // RFC 6812 layout: u32 sender sequence 1 at 52..56
    let mut type3 = vec![0u8; 64];
    type3[1] = 3;
    type3[55] = 1;
    let test44 = test_packet();

    let servers = [
        Server { name: "plain recvfrom/sendto echo", kind: Kind::Plain, stamps: false },
        Server { name: "plain echo batched (recvmmsg/sendmmsg)", kind: Kind::PlainBatched, stamps: false },
        Server {
            name: "plain echo batched, one UDP_SEGMENT send per batch, kernel receive stamps on",
            kind: Kind::PlainSegmented,
            stamps: true,
        },
        Server {
            name: "plain echo batched, one UDP_SEGMENT send per batch",
            kind: Kind::PlainSegmented,
            stamps: false,
        },
        Server { name: "responder type-2, kernel stamps on", kind: Kind::Type2, stamps: true },
        Server { name: "responder type-2, kernel stamps off", kind: Kind::Type2, stamps: false },
        Server { name: "responder type-3, kernel stamps on", kind: Kind::Type3, stamps: true },
        Server { name: "responder type-3, kernel stamps off", kind: Kind::Type3, stamps: false },
        Server { name: "STAMP reflector, kernel stamps on", kind: Kind::Stamp, stamps: true },
        Server { name: "STAMP reflector, kernel stamps off", kind: Kind::Stamp, stamps: false },
        Server { name: "TWAMP-Light reflector, kernel stamps on", kind: Kind::TwampLight, stamps: true },
        Server { name: "TWAMP-Light reflector, kernel stamps off", kind: Kind::TwampLight, stamps: false },
    ];

    let plain = plain_echo();
    let batched = plain_batched_echo(false, false);
    let segmented = [plain_batched_echo(true, true), plain_batched_echo(true, false)];
    let responders: Vec<_> = [true, false]
        .into_iter()
        .map(|kernel_timestamps| {
            pin(1); // the responder thread inherits this affinity
            let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
            let opts = ResponderOptions {
                listen: vec!["127.0.0.1".parse().unwrap()],
                v1_port: 0,
                v2_port: 0,
                kernel_timestamps,
                stamp: vec![lo],
                twamp_light: vec![lo],
                // one core: the rows compare one thread's cost per reply (bin/workers: 1 → 2)
                workers: 1,
                ..ResponderOptions::default()
            };
            let before = ipsla_bench::own_threads(|n| n == "ipsla-responder");
            let r = spawn_responder(opts).expect("responder");
            let tid = ipsla_bench::own_threads(|n| n == "ipsla-responder")
                .into_iter()
                .find(|t| !before.contains(t))
                .expect("its thread");
            (r, tid)
        })
        .collect();
    pin(0);
    std::thread::sleep(Duration::from_millis(50));
    let plain_tid = ipsla_bench::own_threads(|n| n == "plain-echo")[0];
    let batched_tid = ipsla_bench::own_threads(|n| n == "plain-batched")[0];
    let segmented_tid = [
        ipsla_bench::own_threads(|n| n == "plain-seg-stamp")[0],
        ipsla_bench::own_threads(|n| n == "plain-segmented")[0],
    ];

    // µs of CPU 1 per reply, per server, per round
    let mut us = vec![Vec::new(); servers.len()];
    let mut rate = vec![Vec::new(); servers.len()];
    let mut port = 39000u16;
    println!(
        "| round | server (CPU 1) | replies/s | CPU 1 busy | CPU-1 µs per reply | server thread µs per reply | capacity vs plain echo |"
    );
    println!("|---|---|---|---|---|---|---|");
    for round in 1..=rounds {
        let mut base = f64::NAN;
        for (i, s) in servers.iter().enumerate() {
            let (r, rtid) = &responders[usize::from(!s.stamps)];
            let tid = match s.kind {
                Kind::Plain => plain_tid,
                Kind::PlainBatched => batched_tid,
                Kind::PlainSegmented => segmented_tid[usize::from(!s.stamps)],
                _ => *rtid,
            };
            let (target, probe) = match s.kind {
                Kind::Plain => (plain, &type2),
                Kind::PlainBatched => (batched, &type2),
                Kind::PlainSegmented => (segmented[usize::from(!s.stamps)], &type2),
                Kind::Type2 | Kind::Type3 => {
                    port += 1;
                    v1_control(r.control_v1_addrs()[0], port);
                    let probe = if s.kind == Kind::Type2 { &type2 } else { &type3 };
                    (SocketAddr::from(([127, 0, 0, 1], port)), probe)
                }
                Kind::Stamp => (r.stamp_addrs()[0], &test44),
                Kind::TwampLight => (r.twamp_light_addrs()[0], &test44),
            };
            let res = load(s.name, target, secs, window, probe, tid, senders);
            let per = res.thread_ns as f64 / 1e3 / res.replies.max(1) as f64;
            let cpu1 = res.busy * res.secs * 1e6 / res.replies.max(1) as f64;
            if i == 0 {
                base = per;
            }
            us[i].push(per);
            rate[i].push(res.replies as f64 / res.secs);
            println!(
                "| {round} | {} | {:.0} | {:.0} % | {:.2} | {:.2} | {:.2}× |",
                res.name,
                res.replies as f64 / res.secs,
                res.busy * 100.0,
                cpu1,
                per,
                base / per
            );
        }
    }
    for (r, _) in &responders {
        let st = r.status().unwrap();
        eprintln!(
            "responder (kernel stamps {}): RX stamps kernel {} user {}; TX stamps learnt {}; T3 lead {} ns",
            st.rx_timestamps == ipsla_net::socket::RxStampMode::Timestamping,
            st.stats.rx_stamps_kernel,
            st.stats.rx_stamps_user,
            st.tx_kernel_minus_user.count,
            st.t3_lead_ns
        );
    }

    println!();
    println!(
        "| server (CPU 1) | replies/s, median | server thread µs per reply, median | capacity vs plain echo (its µs ÷ the server's, same round), median [min–max] over {rounds} rounds | cost of kernel stamps (µs on ÷ µs off − 1, same round), median [min–max] |"
    );
    println!("|---|---|---|---|---|");
    for (i, s) in servers.iter().enumerate() {
        let mut ratio: Vec<f64> = (0..rounds).map(|k| us[0][k] / us[i][k]).collect();
        let (lo, hi) = (ratio.iter().copied().fold(f64::INFINITY, f64::min), ratio.iter().copied().fold(0.0, f64::max));
        let cost = if !s.stamps && i + 1 < servers.len() && servers[i + 1].kind == s.kind {
            String::new()
        } else if s.stamps {
            let mut c: Vec<f64> = (0..rounds).map(|k| us[i][k] / us[i + 1][k] - 1.0).collect();
            let (clo, chi) =
                (c.iter().copied().fold(f64::INFINITY, f64::min), c.iter().copied().fold(f64::NEG_INFINITY, f64::max));
            format!("{:+.1} % [{:+.1} – {:+.1} %]", median(&mut c) * 100.0, clo * 100.0, chi * 100.0)
        } else {
            String::new()
        };
        println!(
            "| {} | {:.0} | {:.2} | {:.2}× [{:.2}–{:.2}] | {} |",
            s.name,
            median(&mut rate[i].clone()),
            median(&mut us[i].clone()),
            median(&mut ratio),
            lo,
            hi,
            cost
        );
    }
}
