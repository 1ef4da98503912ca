//! Responder workers, 1 → 2: the same responder with `workers: 1` and `workers: 2` (in this
//! process, unpinned, with `steer_by_cpu`), under the same load, in interleaved rounds (1, 2, 1,
//! 2, …). The default steering, the flows' hash, spreads many senders evenly but two flows only
//! by chance: the load here is two flows.
//!
//! The load generator is two threads, one pinned to CPU 0 and one to CPU 1, each with its own
//! connected non-blocking socket and a fixed window of probes in flight, waiting in `poll` when
//! no reply is queued (it does not spin, so its CPU time is what its datagrams cost it and the
//! rest of its core is free for the responder): on loopback a datagram
//! is received on the CPU of the thread that sent it, so with two workers the CPU steering gives
//! each worker the probes of one generator thread. The generator shares the two cores with the
//! responder, so each row reports where the CPU went: the responder's threads and the
//! generator's threads (schedstat, which includes the softirq work each does delivering its
//! datagrams to the other side), and the whole machine's busy share (/proc/stat).
//!
//! Rows: type-2 probes on two udp-jitter sessions, one per generator thread (the core
//! responder's lock per probe; a session port has one socket, answered by worker port mod N), and a
//! stateless STAMP reflector (the STAMP lock per datagram). Also measured: an uncontended
//! `std::sync::Mutex` lock and unlock, the least the shared state costs per datagram, and how
//! long `Responder::handle_probe` takes (what a worker does while holding the lock).
//!
//! Usage: cargo run --release -p ipsla-bench --bin workers -- [SECONDS] [WINDOW] [ROUNDS]
//! (defaults 3 s per row and round, 128 in flight per generator thread, 4 rounds)
#![forbid(unsafe_code)]

use ipsla_net::responder::{ResponderOptions, RunningResponder, spawn_responder};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use ipsla_bench::{pin, test_packet, type2_probe, v1_control};

/// One generator thread: pinned to `cpu`, `window` probes in flight to `target` for `secs`.
/// Returns (replies, its own CPU ns).
fn generator(cpu: usize, target: SocketAddr, secs: f64, window: u64, probe: Vec<u8>, go: Arc<Barrier>) -> (u64, u64) {
    pin(cpu);
    let me = nix::unistd::gettid().as_raw();
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(target).unwrap();
    let mut buf = [0u8; 2048];
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    s.send(&probe).unwrap();
    s.recv(&mut buf).expect("the responder answers");
    s.set_nonblocking(true).unwrap();
    go.wait();
    let n0 = ipsla_bench::own_thread_ns(me);
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let (mut sent, mut got) = (0u64, 0u64);
    let mut last_progress = Instant::now();
    while Instant::now() < end {
        while sent - got < window {
            if s.send(&probe).is_err() {
                break;
            }
            sent += 1;
        }
        let mut any = false;
        while s.recv(&mut buf).is_ok() {
            got += 1;
            any = true;
        }
        if !any {
            // wait for a reply instead of spinning: the generator's CPU is then what its
            // datagrams cost, and the rest of its core is the responder's to take
            let mut pfd = [PollFd::new(s.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut pfd, PollTimeout::from(20u8));
        }
        if any {
            last_progress = Instant::now();
        } else if last_progress.elapsed() > Duration::from_millis(20) {
            // replies were lost: reopen the window instead of stalling
            sent = got;
            last_progress = Instant::now();
        }
    }
    (got, ipsla_bench::own_thread_ns(me) - n0)
}

struct Row {
    replies: u64,
    secs: f64,
    /// Responder threads' CPU, ns.
    responder_ns: u64,
    /// Generator threads' CPU, ns.
    generator_ns: u64,
    /// Machine busy share, 0..1.
    busy: f64,
}

/// Both generator threads at once, the one on CPU i sending to `targets[i]`.
fn measure(targets: [SocketAddr; 2], responder_tids: &[i32], secs: f64, window: u64, probe: &[u8]) -> Row {
    let go = Arc::new(Barrier::new(3));
    let gens: Vec<_> = (0..2)
        .map(|cpu| {
            let (probe, go, target) = (probe.to_vec(), go.clone(), targets[cpu]);
            std::thread::spawn(move || generator(cpu, target, secs, window, probe, go))
        })
        .collect();
    go.wait();
    let r0: u64 = responder_tids.iter().map(|t| ipsla_bench::own_thread_ns(*t)).sum();
    let (b0, t0) = ipsla_bench::busy_jiffies(None);
    let start = Instant::now();
    let done: Vec<(u64, u64)> = gens.into_iter().map(|g| g.join().unwrap()).collect();
    let secs = start.elapsed().as_secs_f64();
    let (b1, t1) = ipsla_bench::busy_jiffies(None);
    let r1: u64 = responder_tids.iter().map(|t| ipsla_bench::own_thread_ns(*t)).sum();
    Row {
        replies: done.iter().map(|d| d.0).sum(),
        secs,
        responder_ns: r1 - r0,
        generator_ns: done.iter().map(|d| d.1).sum(),
        busy: (b1 - b0) as f64 / (t1 - t0).max(1) as f64,
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n.is_multiple_of(2) { (v[n / 2 - 1] + v[n / 2]) / 2.0 } else { v[n / 2] }
}

fn range(v: &[f64]) -> (f64, f64) {
    (v.iter().copied().fold(f64::INFINITY, f64::min), v.iter().copied().fold(f64::NEG_INFINITY, f64::max))
}

/// ns per uncontended lock + unlock of a `std::sync::Mutex`.
fn mutex_ns() -> f64 {
    let m = Mutex::new(0u64);
    let n = 20_000_000u64;
    let start = Instant::now();
    for i in 0..n {
        *std::hint::black_box(&m).lock().unwrap() += i;
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// ns per `Responder::handle_probe` of a type-2 probe on a permanent udp-jitter port: how long
/// a worker holds the shared responder's lock per probe.
fn handle_probe_ns() -> f64 {
    use ipsla_core::io::{BindError, PortBinder, PortKey, Proto, RxTime};
    use ipsla_core::responder::{PermanentKind, ProbeResult, Responder, ResponderConfig};
    struct NoPorts;
    impl PortBinder for NoPorts {
        fn open(&mut self, _: PortKey, _: &std::ops::RangeInclusive<u16>) -> Result<u16, BindError> {
            Err(BindError::Other)
        }
        fn close(&mut self, _: PortKey) {}
    }
    let mut r = Responder::new(ResponderConfig::default());
    let key = PortKey { proto: Proto::Udp, addr: "127.0.0.1".parse().unwrap(), port: 7000 };
    r.add_permanent(key, PermanentKind::UdpJitter);
    let src: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut pkt = [0u8; 32];
    let n = 2_000_000u32;
    let start = Instant::now();
    for i in 0..n {
        pkt.fill(0);
        pkt[1] = 2;
        pkt[12..14].copy_from_slice(&((i % 60_000) as u16 + 1).to_be_bytes());
        let rx = RxTime { wall: Duration::from_secs(1_700_000_000), kernel: true };
        let res = r.handle_probe(Instant::now(), &key, src, rx, std::hint::black_box(&mut pkt), &mut NoPorts);
        assert!(matches!(res, ProbeResult::Reply { .. }), "probe {i} answered");
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let window: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(128);
    let rounds: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(4);
    let type2 = type2_probe();
    let test44 = test_packet();

    // spawned before any pinning: the responders' threads run wherever the scheduler puts them
    let responders: Vec<(usize, RunningResponder, Vec<i32>)> = [1usize, 2]
        .into_iter()
        .map(|workers| {
            let before: Vec<i32> = ipsla_bench::own_threads(|n| n.starts_with("ipsla-"));
            let r = spawn_responder(ResponderOptions {
                listen: vec!["127.0.0.1".parse().unwrap()],
                v1_port: 0,
                v2_port: 0,
                stamp: vec!["127.0.0.1:0".parse().unwrap()],
                workers,
                // two generator flows: by the default hash they may land on one worker (the
                // 4-tuples decide); by CPU each generator thread's probes reach its own worker
                steer_by_cpu: true,
                ..ResponderOptions::default()
            })
            .expect("responder");
            let mine: Vec<i32> = ipsla_bench::own_threads(|n| n.starts_with("ipsla-"))
                .into_iter()
                .filter(|t| !before.contains(t))
                .collect();
            assert_eq!(mine.len(), workers, "one thread per worker");
            (workers, r, mine)
        })
        .collect();
    let steering = responders[1].1.status().map(|s| s.steering);
    eprintln!("two workers steer by {steering:?}");

    let kinds = ["type-2 session", "STAMP"];
    // [kind][workers - 1] → rows over the rounds
    let mut rows: Vec<Vec<Vec<Row>>> = (0..kinds.len()).map(|_| vec![Vec::new(), Vec::new()]).collect();
    let mut port = 41000u16;
    println!(
        "| round | probes | workers | replies/s | machine busy | responder cores | generator cores | responder µs per reply | generator µs per reply |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for round in 1..=rounds {
        for (k, kind) in kinds.iter().enumerate() {
            for (workers, r, responder_tids) in &responders {
                let (targets, probe) = if k == 0 {
                    // a session per generator thread, as two routers would have: consecutive
                    // ports, so with two workers each is answered by its own (port mod 2)
                    let mut session = || {
                        port += 1;
                        v1_control(r.control_v1_addrs()[0], port);
                        SocketAddr::from(([127, 0, 0, 1], port))
                    };
                    ([session(), session()], &type2)
                } else {
                    ([r.stamp_addrs()[0]; 2], &test44)
                };
                let row = measure(targets, responder_tids, secs, window, probe);
                let per = |ns: u64| ns as f64 / 1e3 / row.replies.max(1) as f64;
                println!(
                    "| {round} | {kind} | {workers} | {:.0} | {:.0} % | {:.2} | {:.2} | {:.2} | {:.2} |",
                    row.replies as f64 / row.secs,
                    row.busy * 100.0,
                    row.responder_ns as f64 / 1e9 / row.secs,
                    row.generator_ns as f64 / 1e9 / row.secs,
                    per(row.responder_ns),
                    per(row.generator_ns)
                );
                rows[k][workers - 1].push(row);
            }
        }
    }
    for (workers, r, _) in &responders {
        if let Some(st) = r.status() {
            let split: Vec<u64> = st.worker_stats.iter().map(|w| w.replies).collect();
            eprintln!("workers {workers}: replies per worker {split:?}, steering {:?}", st.steering);
        }
    }

    println!();
    println!(
        "| probes | replies/s, 1 worker | replies/s, 2 workers | 2 ÷ 1, median [min–max] | responder µs per reply, 1 → 2 | generator µs per reply, 1 → 2 | responder cores, 1 → 2 |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (k, kind) in kinds.iter().enumerate() {
        let rate = |w: usize| rows[k][w].iter().map(|r| r.replies as f64 / r.secs).collect::<Vec<_>>();
        let per = |w: usize, f: fn(&Row) -> u64| {
            rows[k][w].iter().map(|r| f(r) as f64 / 1e3 / r.replies as f64).collect::<Vec<_>>()
        };
        let cores = |w: usize| rows[k][w].iter().map(|r| r.responder_ns as f64 / 1e9 / r.secs).collect::<Vec<_>>();
        let ratio: Vec<f64> = (0..rounds).map(|i| rate(1)[i] / rate(0)[i]).collect();
        let (lo, hi) = range(&ratio);
        println!(
            "| {kind} | {:.0} | {:.0} | {:.2}× [{:.2}–{:.2}] | {:.2} → {:.2} | {:.2} → {:.2} | {:.2} → {:.2} |",
            median(&rate(0)),
            median(&rate(1)),
            median(&ratio),
            lo,
            hi,
            median(&per(0, |r| r.responder_ns)),
            median(&per(1, |r| r.responder_ns)),
            median(&per(0, |r| r.generator_ns)),
            median(&per(1, |r| r.generator_ns)),
            median(&cores(0)),
            median(&cores(1)),
        );
    }
    println!();
    println!("uncontended std::sync::Mutex lock + unlock: {:.1} ns", mutex_ns());
    println!(
        "Responder::handle_probe (type-2, permanent jitter port; the lock's hold time): {:.1} ns",
        handle_probe_ns()
    );
}
